//! One forwarded TCP connection (`ssh -L`, `-W`, `-D`): the client's `direct-tcpip` channel is
//! relayed to a `direct-tcpip` channel the gateway opens on its own session to the target, so
//! the target resolves and connects to the destination, as with `ssh -L` run on the target.
//!
//! Each direction runs on its own; writes wait for the receiving side's window and reads stop
//! when the bounded channel queues fill, as for session channels. One `forward` event is
//! written when both sides are done: bytes each way, duration, the rule that allowed it.

use std::time::{Duration, Instant};

use russh::server::{ChannelOpenHandle, Msg as ServerMsg};
use russh::{
    Channel, ChannelId, ChannelMsg, ChannelOpenFailure, ChannelReadHalf, ChannelWriteHalf,
};
use tokio::sync::oneshot;
use tollgate_core::{
    Command, CommandError, CommandStatus, EventKind, Outcome, ProtocolStep, SessionLog,
};

use crate::upstream::Upstream;

/// How long the second direction may take to finish once the first has closed.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The SSH reason code for "administratively prohibited".
const PROHIBITED: u32 = 1;

/// An allowed forward: where to, from where, and under which rule.
pub(crate) struct Forward {
    pub(crate) log: SessionLog,
    pub(crate) strict_audit: bool,
    pub(crate) host: String,
    pub(crate) port: u32,
    pub(crate) origin_address: String,
    pub(crate) origin_port: u32,
    pub(crate) rule: Option<String>,
}

impl Forward {
    fn origin(&self) -> String {
        if self.origin_address.is_empty() {
            return String::new();
        }
        format!("{}:{}", self.origin_address, self.origin_port)
    }

    fn record(&self, bytes_out: u64, bytes_in: u64, outcome: Outcome) {
        self.log.append(EventKind::Forward {
            host: self.host.clone(),
            port: self.port,
            origin: self.origin(),
            bytes_out,
            bytes_in,
            outcome,
        });
    }

    fn failed(&self, status: CommandStatus, code: &str, message: &str) {
        self.record(
            0,
            0,
            Outcome {
                status,
                rule: self.rule.clone(),
                error: Some(CommandError {
                    code: code.into(),
                    message: message.into(),
                }),
                ..Outcome::default()
            },
        );
    }
}

/// Records the start (durably under strict audit), opens the target's side, answers the
/// client's channel open and relays until both sides are done.
pub(crate) async fn run(
    down: Channel<ServerMsg>,
    reply: ChannelOpenHandle,
    upstream: Upstream,
    fwd: Forward,
) {
    let destination = format!("{}:{}", fwd.host, fwd.port);
    if fwd.strict_audit {
        let (tx, rx) = oneshot::channel();
        fwd.log.append_durable(
            EventKind::CommandStarted {
                command: Command {
                    step: ProtocolStep::Forward,
                    text: destination.as_str().into(),
                    params: Vec::new(),
                    statement: None,
                },
                rule: fwd.rule.clone(),
                approval: None,
            },
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let durable = rx
            .await
            .unwrap_or_else(|_| Err("the audit log stopped".into()));
        if let Err(reason) = durable {
            tracing::error!(error = %reason, destination = %destination, "forward not recorded; refused");
            let message = format!("the audit log cannot record it: {reason}");
            fwd.failed(CommandStatus::Denied, "audit", &message);
            reply
                .reject(ChannelOpenFailure::Other {
                    code: PROHIBITED,
                    reason: format!(
                        "tollgate: the audit log cannot record this forward to {destination}, so it was not opened: {reason}"
                    ),
                })
                .await;
            return;
        }
    }
    let started = Instant::now();
    let opened = upstream
        .handle
        .channel_open_direct_tcpip(
            fwd.host.clone(),
            fwd.port,
            fwd.origin_address.clone(),
            fwd.origin_port,
        )
        .await;
    let up = match opened {
        Ok(c) => c,
        Err(e) => {
            let (code, why) = match &e {
                russh::Error::ChannelOpenFailure(f) => (f.code(), f.description().to_lowercase()),
                other => (2, other.to_string()),
            };
            let message = format!("the target could not open a connection to {destination}: {why}");
            tracing::info!(destination = %destination, reason = %why, "target refused a forward");
            fwd.failed(CommandStatus::Error, "open_failed", &message);
            reply
                .reject(ChannelOpenFailure::Other {
                    code,
                    reason: format!("tollgate: {message}"),
                })
                .await;
            return;
        }
    };
    reply.accept().await;
    let (down_r, down_w) = down.split();
    let (up_r, up_w) = up.split();
    let mut outbound = tokio::spawn(pump(down_r, up_w));
    let mut inbound = tokio::spawn(pump(up_r, down_w));
    let (out, inn) = tokio::select! {
        first = &mut outbound => (finished(first), within_grace(inbound).await),
        first = &mut inbound => (within_grace(outbound).await, finished(first)),
    };
    let status = if out.ended && inn.ended {
        CommandStatus::Ok
    } else {
        CommandStatus::Interrupted
    };
    fwd.record(
        out.bytes,
        inn.bytes,
        Outcome {
            status,
            rule: fwd.rule.clone(),
            duration_us: started.elapsed().as_micros() as u64,
            ..Outcome::default()
        },
    );
}

/// What one direction carried.
#[derive(Default)]
struct Pumped {
    bytes: u64,
    /// The sending side ended its stream itself (EOF or close), rather than the session
    /// going away under it.
    ended: bool,
}

fn finished(joined: Result<Pumped, tokio::task::JoinError>) -> Pumped {
    joined.unwrap_or_default()
}

/// The other direction's result, once the first has finished: it gets [`CLOSE_GRACE`] to close.
async fn within_grace(task: tokio::task::JoinHandle<Pumped>) -> Pumped {
    let aborter = task.abort_handle();
    match tokio::time::timeout(CLOSE_GRACE, task).await {
        Ok(joined) => finished(joined),
        Err(_) => {
            aborter.abort();
            Pumped::default()
        }
    }
}

/// Copies one direction: data (waiting for the receiver's window), EOF, and close.
async fn pump<S>(mut from: ChannelReadHalf, to: ChannelWriteHalf<S>) -> Pumped
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    let mut pumped = Pumped::default();
    while let Some(msg) = from.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                pumped.bytes += data.len() as u64;
                to.data_bytes(data).await
            }
            ChannelMsg::Eof => {
                pumped.ended = true;
                to.eof().await
            }
            ChannelMsg::Close => {
                pumped.ended = true;
                break;
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = to.close().await;
    pumped
}
