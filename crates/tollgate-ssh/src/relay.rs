//! One session channel relayed between the client and the target.
//!
//! Each direction runs on its own, so a full window on one side never stalls the other. Writes
//! wait for the receiving side's window (russh's channel writers), and reads stop when the
//! bounded channel queues fill, which stops reading the socket: nothing is buffered without
//! bound. The client's requests are answered when they arrive (by the handler); a command the
//! target refuses to start is reported on the channel's stderr.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use russh::server::{self, Msg as ServerMsg};
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig, client};
use tokio::sync::oneshot;
use tollgate_core::{
    Approvals, Command, CommandError, CommandStatus, EventKind, Identity, Outcome, Policy,
    ProtocolStep, SessionLog,
};

use crate::guard::{self, Decision, LineEditor, REFUSED_STATUS, Refused, Waiting};

/// What a relayed channel needs to know of its session.
pub(crate) struct Terms {
    pub(crate) log: SessionLog,
    pub(crate) strict_audit: bool,
    pub(crate) policy: Arc<dyn Policy>,
    pub(crate) approvals: Arc<dyn Approvals>,
    pub(crate) identity: Identity,
    pub(crate) connection: String,
}

/// A request forwarded to the target whose reply the client waits for.
enum Pending {
    /// The command that starts the channel (exec, shell, subsystem).
    Start,
    /// Anything else (pty-req, …).
    Other,
}

/// How the target's command ended.
enum Exit {
    Status(u32),
    Signal(String),
}

#[derive(Default)]
struct Shared {
    pending: VecDeque<Pending>,
    /// The command this channel runs, and since when.
    command: Option<(Command, Instant)>,
    exit: Option<Exit>,
    /// The target refused to start the command.
    refused: bool,
    /// The command's event is written.
    recorded: bool,
    /// The rule that allowed the command, and the approval it used.
    rule: Option<String>,
    approval: Option<String>,
    /// The SFTP inspector of an `sftp` subsystem channel.
    sftp: Option<Arc<crate::sftp::SftpChannel>>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    match shared.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Relays one session channel until both sides are done, then records its command.
pub(crate) async fn run(
    down: Channel<ServerMsg>,
    up: Channel<client::Msg>,
    handle: server::Handle,
    terms: Terms,
) {
    let id = down.id();
    let (down_r, down_w) = down.split();
    let (up_r, up_w) = up.split();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let to_target = tokio::spawn(client_to_target(
        down_r,
        up_w,
        handle.clone(),
        id,
        Arc::clone(&shared),
        Terms {
            log: terms.log.clone(),
            strict_audit: terms.strict_audit,
            policy: Arc::clone(&terms.policy),
            approvals: Arc::clone(&terms.approvals),
            identity: terms.identity.clone(),
            connection: terms.connection.clone(),
        },
    ));
    target_to_client(up_r, &down_w, &handle, id, &shared).await;
    record_outcome(&terms.log, &shared);
    // The target is done with the channel; the client's side ends with its close, or soon.
    let aborter = to_target.abort_handle();
    if tokio::time::timeout(std::time::Duration::from_secs(5), to_target)
        .await
        .is_err()
    {
        aborter.abort();
    }
    let sftp = lock(&shared).sftp.take();
    if let Some(f) = sftp {
        f.finish();
    }
}

fn record_outcome(log: &SessionLog, shared: &Mutex<Shared>) {
    let mut s = lock(shared);
    if s.recorded {
        return;
    }
    let Some((command, started)) = s.command.take() else {
        return;
    };
    s.recorded = true;
    let mut outcome = Outcome {
        duration_us: started.elapsed().as_micros() as u64,
        rule: s.rule.take(),
        approval: s.approval.take(),
        ..Outcome::default()
    };
    match (&s.exit, s.refused) {
        (_, true) => {
            outcome.status = CommandStatus::Error;
            outcome.error = Some(CommandError {
                code: "refused".into(),
                message: "the target refused the request".into(),
            });
        }
        (Some(Exit::Status(0)), _) => outcome.tags = vec!["exit 0".into()],
        (Some(Exit::Status(code)), _) => {
            outcome.tags = vec![format!("exit {code}")];
            outcome.status = CommandStatus::Error;
            outcome.error = Some(CommandError {
                code: code.to_string(),
                message: format!("exited with status {code}"),
            });
        }
        (Some(Exit::Signal(sig)), _) => {
            outcome.tags = vec![format!("signal {sig}")];
            outcome.status = CommandStatus::Error;
            outcome.error = Some(CommandError {
                code: format!("SIG{sig}"),
                message: format!("killed by signal {sig}"),
            });
        }
        (None, false) => outcome.status = CommandStatus::Interrupted,
    }
    log.append(EventKind::Command { command, outcome });
}

/// Client to target: data, EOF, requests and signals; exec commands and shell lines checked
/// by the policy first.
async fn client_to_target(
    mut down_r: ChannelReadHalf,
    up_w: ChannelWriteHalf<client::Msg>,
    handle: server::Handle,
    id: ChannelId,
    shared: Arc<Mutex<Shared>>,
    terms: Terms,
) {
    let mut pty = false;
    // The shell's line, rebuilt from what the client sends, once a shell runs.
    let mut editor: Option<LineEditor> = None;
    // What the client sent while an exec command waited for its approval.
    let mut backlog: VecDeque<ChannelMsg> = VecDeque::new();
    loop {
        let msg = match backlog.pop_front() {
            Some(m) => m,
            None => match down_r.wait().await {
                Some(m) => m,
                None => break,
            },
        };
        let sent = match msg {
            ChannelMsg::Data { data } => match editor.as_mut() {
                Some(ed) => {
                    if shell_data(&terms, &up_w, &handle, id, ed, &data)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    Ok(())
                }
                None => {
                    let sftp = lock(&shared).sftp.clone();
                    match sftp {
                        Some(f) => f.on_client(data, &up_w, &handle, id).await,
                        None => up_w.data_bytes(data).await,
                    }
                }
            },
            ChannelMsg::ExtendedData { data, ext } => up_w.extended_data_bytes(ext, data).await,
            ChannelMsg::Eof => up_w.eof().await,
            ChannelMsg::Close => {
                let _ = up_w.close().await;
                return;
            }
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                pty = true;
                lock(&shared).pending.push_back(Pending::Other);
                up_w.request_pty(
                    true,
                    &term,
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                    &terminal_modes,
                )
                .await
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                up_w.window_change(col_width, row_height, pix_width, pix_height)
                    .await
            }
            ChannelMsg::Signal { signal } => up_w.signal(signal).await,
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => up_w.set_env(false, variable_name, variable_value).await,
            ChannelMsg::Exec { command, .. } => {
                let text = String::from_utf8_lossy(&command).into_owned();
                let mut decision = guard::decide(&terms, &text, false);
                if let Decision::Wait(waiting) = decision {
                    decision = wait(&terms, &handle, id, &waiting, &mut down_r, &mut backlog).await;
                }
                let (rule, approval) = match decision {
                    Decision::Run { rule, approval } => (rule, approval),
                    Decision::Refuse(refused) => {
                        refuse_exec(&terms, &shared, &up_w, &handle, id, text, refused).await;
                        return;
                    }
                    // `wait` never answers Wait.
                    Decision::Wait(_) => return,
                };
                // Legacy scp: its paths are checked by the file rules.
                if let Some(refused) = crate::sftp::check_scp(&terms, &text) {
                    refuse_exec(&terms, &shared, &up_w, &handle, id, text, refused).await;
                    return;
                }
                if !start(
                    &terms,
                    &shared,
                    &up_w,
                    &handle,
                    id,
                    ProtocolStep::Exec,
                    text,
                    (rule, approval),
                )
                .await
                {
                    return;
                }
                up_w.exec(true, command).await
            }
            ChannelMsg::RequestShell { .. } => {
                if !start(
                    &terms,
                    &shared,
                    &up_w,
                    &handle,
                    id,
                    ProtocolStep::Shell,
                    String::new(),
                    (None, None),
                )
                .await
                {
                    return;
                }
                editor = Some(LineEditor::new(pty));
                up_w.request_shell(true).await
            }
            ChannelMsg::RequestSubsystem { name, .. } => {
                if !start(
                    &terms,
                    &shared,
                    &up_w,
                    &handle,
                    id,
                    ProtocolStep::Subsystem,
                    name.clone(),
                    (None, None),
                )
                .await
                {
                    return;
                }
                if name == "sftp" {
                    lock(&shared).sftp = Some(crate::sftp::SftpChannel::new(&terms));
                }
                up_w.request_subsystem(true, name).await
            }
            // Agent forwarding and X11 were refused by the handler.
            _ => Ok(()),
        };
        if sent.is_err() {
            return;
        }
    }
    let _ = up_w.close().await;
}

/// Most bytes of client data kept while an exec command waits for its approval; past it the
/// channel is not read until the decision (its window then stops the client).
const MAX_BACKLOG: usize = 1024 * 1024;

/// Waits for a held exec command's approval, telling the client which approval it waits for.
/// The client's messages meanwhile are kept in `backlog`, up to [`MAX_BACKLOG`] bytes of data.
async fn wait(
    terms: &Terms,
    handle: &server::Handle,
    id: ChannelId,
    waiting: &Waiting,
    down_r: &mut ChannelReadHalf,
    backlog: &mut VecDeque<ChannelMsg>,
) -> Decision {
    let notice = format!("{}\r\n", waiting.notice());
    let _ = handle
        .extended_data(id, 1, bytes::Bytes::from(notice.into_bytes()))
        .await;
    let deadline = Instant::now() + std::time::Duration::from_secs(waiting.hold_secs);
    let mut kept = 0usize;
    let mut reading = true;
    loop {
        if let Some(decision) = waiting.poll(terms, Instant::now() >= deadline) {
            return decision;
        }
        let tick = tokio::time::sleep(std::time::Duration::from_millis(200));
        tokio::select! {
            () = tick => {}
            msg = down_r.wait(), if reading => match msg {
                Some(ChannelMsg::Close) | None => {
                    return Decision::Refuse(Refused {
                        told: format!(
                            "tollgate: the client closed the channel while approval {} was pending; the command was not run.",
                            waiting.id
                        ),
                        status: CommandStatus::ApprovalRequired,
                        rule: waiting.rule.clone(),
                        approval: Some(waiting.id.clone()),
                    });
                }
                Some(m) => {
                    if let ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } = &m {
                        kept += data.len();
                    }
                    backlog.push_back(m);
                    reading = kept < MAX_BACKLOG;
                }
            },
        }
    }
}

/// An exec command the gateway will not run: the client is told on stderr and gets exit
/// status 126; the command is recorded with the rule, and the target's channel closed.
async fn refuse_exec(
    terms: &Terms,
    shared: &Mutex<Shared>,
    up_w: &ChannelWriteHalf<client::Msg>,
    handle: &server::Handle,
    id: ChannelId,
    text: String,
    refused: Refused,
) {
    tracing::info!(connection = %terms.connection, rule = %refused.rule, "ssh command refused");
    {
        let mut s = lock(shared);
        if s.command.is_none() {
            s.recorded = true;
        }
    }
    terms.log.append(EventKind::Command {
        command: Command {
            step: ProtocolStep::Exec,
            text: text.into(),
            params: Vec::new(),
            statement: None,
        },
        outcome: refused.outcome(),
    });
    let message = format!("{}\r\n", refused.told);
    let _ = handle
        .extended_data(id, 1, bytes::Bytes::from(message.into_bytes()))
        .await;
    let _ = handle.exit_status_request(id, REFUSED_STATUS).await;
    let _ = handle.eof(id).await;
    let _ = handle.close(id).await;
    let _ = up_w.close().await;
}

/// Client data for a shell: each line is checked at its end before the line end is forwarded.
/// With a PTY the keystrokes go on at once (the target echoes them) and a refused line is
/// cleared with Ctrl-U instead of entered; without one a line is held until it is complete and
/// a refused one is dropped. The client is told on the terminal (stderr without a PTY).
async fn shell_data(
    terms: &Terms,
    up_w: &ChannelWriteHalf<client::Msg>,
    handle: &server::Handle,
    id: ChannelId,
    editor: &mut LineEditor,
    data: &[u8],
) -> Result<(), russh::Error> {
    let pty = editor.pty();
    let mut rest = data;
    while let Some(line) = editor.feed(rest) {
        let next = line.next();
        if pty && line.upto > 0 {
            up_w.data(&rest[..line.upto]).await?;
        }
        match guard::decide(terms, &line.text, true) {
            Decision::Refuse(refused) => {
                tracing::info!(connection = %terms.connection, rule = %refused.rule, "ssh shell line refused");
                terms.log.append(EventKind::Command {
                    command: Command {
                        step: ProtocolStep::Shell,
                        text: line.text.clone().into(),
                        params: Vec::new(),
                        statement: None,
                    },
                    outcome: refused.outcome(),
                });
                if pty {
                    up_w.data(&b"\x15"[..]).await?;
                    let told = format!("\r\n{}\r\n", refused.told);
                    let _ = handle.data(id, bytes::Bytes::from(told.into_bytes())).await;
                } else {
                    let told = format!("{}\n", refused.told);
                    let _ = handle
                        .extended_data(id, 1, bytes::Bytes::from(told.into_bytes()))
                        .await;
                }
            }
            // Approvals are not offered in shells (`decide` refuses instead of waiting).
            Decision::Run { .. } | Decision::Wait(_) => {
                if pty {
                    if line.enter {
                        up_w.data(&rest[line.upto..next]).await?;
                    }
                } else {
                    let mut whole = line.raw;
                    if line.enter {
                        whole.push(b'\n');
                    }
                    up_w.data(&whole[..]).await?;
                }
            }
        }
        rest = &rest[next..];
    }
    if pty && !rest.is_empty() {
        up_w.data(rest).await?;
    }
    Ok(())
}

/// Records the command that starts the channel and, with strict audit, waits until its
/// `command_started` event is durable. `false` when it could not be recorded: the client is
/// told, and the channel ends without the command reaching the target.
#[allow(clippy::too_many_arguments)]
async fn start(
    terms: &Terms,
    shared: &Mutex<Shared>,
    up_w: &ChannelWriteHalf<client::Msg>,
    handle: &server::Handle,
    id: ChannelId,
    step: ProtocolStep,
    text: String,
    (rule, approval): (Option<String>, Option<String>),
) -> bool {
    let command = Command {
        step,
        text: text.into(),
        params: Vec::new(),
        statement: None,
    };
    {
        let mut s = lock(shared);
        if s.command.is_some() || s.recorded {
            // A second exec/shell on one channel is a protocol error; the target refuses it.
            s.pending.push_back(Pending::Other);
            return true;
        }
    }
    if terms.strict_audit {
        let (tx, rx) = oneshot::channel();
        terms.log.append_durable(
            EventKind::CommandStarted {
                command: command.clone(),
                rule: rule.clone(),
                approval: approval.clone(),
            },
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let durable = rx
            .await
            .unwrap_or_else(|_| Err("the audit log stopped".into()));
        if let Err(reason) = durable {
            tracing::error!(error = %reason, "command not recorded; refused");
            terms.log.append(EventKind::Command {
                command,
                outcome: Outcome {
                    status: CommandStatus::Denied,
                    rule: rule.clone(),
                    approval: approval.clone(),
                    error: Some(CommandError {
                        code: "audit".into(),
                        message: format!("the audit log cannot record it: {reason}"),
                    }),
                    ..Outcome::default()
                },
            });
            lock(shared).recorded = true;
            let message = format!(
                "tollgate: the audit log cannot record this command, so it was not run: {reason}\r\n"
            );
            let _ = handle
                .extended_data(id, 1, bytes::Bytes::from(message.into_bytes()))
                .await;
            let _ = handle.exit_status_request(id, 255).await;
            let _ = handle.eof(id).await;
            let _ = handle.close(id).await;
            let _ = up_w.close().await;
            return false;
        }
    }
    let mut s = lock(shared);
    s.command = Some((command, Instant::now()));
    s.rule = rule;
    s.approval = approval;
    s.pending.push_back(Pending::Start);
    true
}

/// Target to client: data, stderr, exit status or signal, EOF and close, and the replies to
/// forwarded requests.
async fn target_to_client(
    mut up_r: ChannelReadHalf,
    down_w: &ChannelWriteHalf<ServerMsg>,
    handle: &server::Handle,
    id: ChannelId,
    shared: &Mutex<Shared>,
) {
    while let Some(msg) = up_r.wait().await {
        let sent = match msg {
            // SFTP is framed, checked and recorded by crate::sftp, not masked.
            ChannelMsg::Data { data } if lock(shared).sftp.is_some() => {
                let sftp = lock(shared).sftp.clone();
                match sftp {
                    Some(f) => f.on_target(data, down_w).await.map_err(|_| ()),
                    None => Ok(()),
                }
            }
            ChannelMsg::Data { data } => down_w.data_bytes(data).await.map_err(|_| ()),
            ChannelMsg::ExtendedData { data, ext } => {
                down_w.extended_data_bytes(ext, data).await.map_err(|_| ())
            }
            ChannelMsg::Eof => down_w.eof().await.map_err(|_| ()),
            ChannelMsg::ExitStatus { exit_status } => {
                lock(shared).exit = Some(Exit::Status(exit_status));
                down_w.exit_status(exit_status).await.map_err(|_| ())
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                lock(shared).exit = Some(Exit::Signal(signal_text(&signal_name)));
                handle
                    .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                    .await
            }
            // The client's requests were answered when they arrived (see the handler); a
            // command the target will not start is reported on stderr, as OpenSSH does.
            ChannelMsg::Success => {
                lock(shared).pending.pop_front();
                Ok(())
            }
            ChannelMsg::Failure => {
                let refused = {
                    let mut s = lock(shared);
                    let start = matches!(s.pending.pop_front(), Some(Pending::Start));
                    s.refused |= start;
                    start
                };
                if refused {
                    let message = b"tollgate: the target refused to start the command\r\n".to_vec();
                    let _ = down_w
                        .extended_data_bytes(1, bytes::Bytes::from(message))
                        .await;
                    let _ = down_w.exit_status(255).await;
                    let _ = down_w.eof().await;
                    let _ = down_w.close().await;
                }
                Ok(())
            }
            ChannelMsg::Close => break,
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = down_w.close().await;
}

fn signal_text(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(name) => name.clone(),
    }
}
