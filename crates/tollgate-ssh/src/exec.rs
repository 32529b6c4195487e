//! One command for the REST API (`tollgate exec` on an SSH connection): an in-process SSH client
//! speaks to the same front and relay as `ssh host 'cmd'` does, over an in-memory pipe, so every
//! check (guardrails, approvals, access re-checks), record and strict-audit write applies.

use std::borrow::Cow;
use std::sync::Arc;

use russh::keys::PublicKeyOrCertificate;
use russh::{ChannelMsg, Disconnect, Sig, SshId, client};
use tokio::io::DuplexStream;
use tollgate_core::Identity;

use crate::SshError;
use crate::front::SshFront;

/// The SSH version the in-process client announces (recorded as the session's application).
const CLIENT_ID: &str = "SSH-2.0-tollgate-exec";

/// Bounds of one command's collected output.
#[derive(Debug, Clone, Copy)]
pub struct SshExecLimits {
    /// Most bytes kept of stdout, and of stderr; the rest is read and dropped.
    pub max_output_bytes: usize,
}

impl Default for SshExecLimits {
    fn default() -> Self {
        Self {
            max_output_bytes: 1024 * 1024,
        }
    }
}

/// What one command printed and how it ended.
#[derive(Debug, Clone, Default)]
pub struct SshExecResult {
    /// Standard output, up to the limit.
    pub stdout: Vec<u8>,
    /// Standard error, up to the limit: the command's, and the gateway's refusal or approval
    /// notices.
    pub stderr: Vec<u8>,
    /// The exit status, when the command exited (126 when a rule refused it).
    pub exit_status: Option<u32>,
    /// The signal that ended the command (`TERM`, `KILL`…), when it was killed.
    pub exit_signal: Option<String>,
    /// Whether stdout or stderr was cut at the limit.
    pub truncated: bool,
}

/// Runs `command` on the SSH connection `connection` for an already-authenticated identity,
/// as an exec request through the front. `peer` is recorded as the client address; the
/// session's channel is `api`. A session refused before it starts (no access, unknown
/// connection, target unavailable) comes back as [`SshError::Refused`], and is recorded.
pub async fn exec_command(
    front: Arc<SshFront>,
    identity: Identity,
    connection: &str,
    command: &str,
    peer: String,
    limits: SshExecLimits,
) -> Result<SshExecResult, SshError> {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let session = tokio::spawn(Arc::clone(&front).handle_stream(theirs, peer, Some(identity)));
    let result = talk(ours, connection, command, limits).await;
    // The client side is gone: the session ends and records its end (or its refusal).
    let refused = session.await.ok().flatten();
    match refused {
        Some(refusal) => Err(SshError::Refused(refusal)),
        None => result,
    }
}

async fn talk(
    stream: DuplexStream,
    connection: &str,
    command: &str,
    limits: SshExecLimits,
) -> Result<SshExecResult, SshError> {
    let config = Arc::new(client::Config {
        client_id: SshId::Standard(Cow::Borrowed(CLIENT_ID)),
        inactivity_timeout: None,
        ..client::Config::default()
    });
    let failed = |what: &str, e: russh::Error| SshError::Exec(format!("{what}: {e}"));
    let mut handle = client::connect_stream(config, stream, InProcess)
        .await
        .map_err(|e| failed("in-process SSH handshake", e))?;
    let auth = handle
        .authenticate_none(connection)
        .await
        .map_err(|e| failed("in-process sign-in", e))?;
    if !auth.success() {
        return Err(SshError::Exec("in-process sign-in was refused".into()));
    }
    let mut channel = handle
        .channel_open_session()
        .await
        .map_err(|e| failed("opening the session channel", e))?;
    channel
        .exec(true, command.as_bytes())
        .await
        .map_err(|e| failed("sending the command", e))?;
    // No stdin: the command reads EOF at once (as `ssh -n`).
    channel
        .eof()
        .await
        .map_err(|e| failed("closing the command's input", e))?;
    let cap = limits.max_output_bytes;
    let mut result = SshExecResult::default();
    while let Some(message) = channel.wait().await {
        match message {
            ChannelMsg::Data { data } => {
                keep(&mut result.stdout, &data, cap, &mut result.truncated)
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                keep(&mut result.stderr, &data, cap, &mut result.truncated)
            }
            ChannelMsg::ExitStatus { exit_status } => result.exit_status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                result.exit_signal = Some(signal_text(&signal_name));
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    let _ = handle
        .disconnect(Disconnect::ByApplication, "command done", "")
        .await;
    Ok(result)
}

/// Appends what fits under `cap`; notes the rest as dropped.
fn keep(into: &mut Vec<u8>, data: &[u8], cap: usize, truncated: &mut bool) {
    let room = cap.saturating_sub(into.len());
    if data.len() > room {
        *truncated = true;
    }
    into.extend_from_slice(&data[..data.len().min(room)]);
}

fn signal_text(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

/// The in-process client's handler.
struct InProcess;

impl client::Handler for InProcess {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // The other end of the in-memory pipe is the front this module started; nobody else
        // is on it.
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_at_the_limit() {
        let mut out = Vec::new();
        let mut truncated = false;
        keep(&mut out, b"hello", 8, &mut truncated);
        assert!(!truncated);
        keep(&mut out, b"world", 8, &mut truncated);
        assert_eq!(out, b"hellowor");
        assert!(truncated);
        keep(&mut out, b"more", 8, &mut truncated);
        assert_eq!(out, b"hellowor");
    }

    #[test]
    fn signals_are_named() {
        assert_eq!(signal_text(&Sig::TERM), "TERM");
        assert_eq!(signal_text(&Sig::Custom("XCPU".into())), "XCPU");
    }
}
