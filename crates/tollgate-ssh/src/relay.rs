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
    Approvals, Command, CommandError, CommandStatus, EventKind, FileOp, Identity, MaskTally,
    Outcome, Policy, ProtocolStep, SessionLog, SessionMask, TerminalHeader,
};

use crate::guard::{self, Decision, LineEditor, REFUSED_STATUS, Refused, Waiting};
use crate::scp::ScpReader;
use crate::terminal::{Echo, Recording, StreamMask};

/// What a relayed channel needs to know of its session.
pub(crate) struct Terms {
    pub(crate) log: SessionLog,
    pub(crate) strict_audit: bool,
    pub(crate) policy: Arc<dyn Policy>,
    pub(crate) approvals: Arc<dyn Approvals>,
    pub(crate) identity: Identity,
    pub(crate) connection: String,
    /// Masking of the target's output, when it applies to this caller.
    pub(crate) mask: Option<Arc<dyn SessionMask>>,
    /// Most output bytes of one channel recorded in the audit trail.
    pub(crate) record_limit: u64,
}

impl Terms {
    fn clone_terms(&self) -> Terms {
        Terms {
            log: self.log.clone(),
            strict_audit: self.strict_audit,
            policy: Arc::clone(&self.policy),
            approvals: Arc::clone(&self.approvals),
            identity: self.identity.clone(),
            connection: self.connection.clone(),
            mask: self.mask.clone(),
            record_limit: self.record_limit,
        }
    }
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
    /// The terminal the client asked for: (TERM, columns, rows).
    pty: Option<(String, u32, u32)>,
    /// The channel's asciicast recording (exec commands and shells).
    recording: Option<Recording>,
    /// Keystrokes not yet echoed (PTY shells).
    echo: Echo,
    /// What masking changed in the channel's output.
    masked: MaskTally,
    /// The SFTP inspector of an `sftp` subsystem channel.
    sftp: Option<Arc<crate::sftp::SftpChannel>>,
    /// The reader of a legacy scp transfer (`scp -t`/`-f`), whose bytes are files: recorded
    /// file by file, never masked.
    scp: Option<ScpReader>,
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
        terms.clone_terms(),
    ));
    target_to_client(up_r, &down_w, &handle, id, &shared, &terms).await;
    record_outcome(&terms, &shared);
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
    if let Some(mut scp) = lock(&shared).scp.take() {
        scp.close();
    }
}

fn record_outcome(terms: &Terms, shared: &Mutex<Shared>) {
    let log = &terms.log;
    let mut s = lock(shared);
    if let Some(mut recording) = s.recording.take() {
        recording.finish();
    }
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
        masked: match &terms.mask {
            Some(mask) => s.masked.take_named(mask.counter_names()),
            None => Default::default(),
        },
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
        // Keys typed on a terminal (a shell, or a command run with `ssh -t`): their echo skips
        // the output hold, and they are recorded.
        if pty && let ChannelMsg::Data { data } = &msg {
            let mut s = lock(&shared);
            s.echo.typed(data);
            if let Some(r) = s.recording.as_mut() {
                r.input(data);
            }
        }
        let sent = match msg {
            ChannelMsg::Data { data } => match editor.as_mut() {
                Some(ed) => {
                    let mut client = Client {
                        down_r: &mut down_r,
                        backlog: &mut backlog,
                    };
                    if shell_data(&terms, &up_w, &handle, id, ed, &data, &mut client)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    Ok(())
                }
                None => {
                    let sftp = {
                        let mut s = lock(&shared);
                        if let Some(scp) = s.scp.as_mut().filter(|r| r.op() == FileOp::Write) {
                            scp.feed(&data);
                        }
                        s.sftp.clone()
                    };
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
                {
                    let mut s = lock(&shared);
                    s.pending.push_back(Pending::Other);
                    s.pty = Some((term.clone(), col_width, row_height));
                }
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
                if let Some(r) = lock(&shared).recording.as_mut() {
                    r.resize(col_width, row_height);
                }
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
                    decision = wait(
                        &terms,
                        &handle,
                        id,
                        &waiting,
                        &mut down_r,
                        &mut backlog,
                        false,
                    )
                    .await;
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
                if let crate::sftp::Scp::Paths(op, paths) = crate::sftp::scp_paths(&text) {
                    let into_dir = text
                        .split_whitespace()
                        .skip(1)
                        .take_while(|w| w.starts_with('-') && *w != "--")
                        .any(|w| w.contains('r') || w.contains('d'));
                    lock(&shared).scp =
                        Some(ScpReader::new(terms.log.clone(), op, paths, into_dir));
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
    terminal: bool,
) -> Decision {
    // On a terminal the notice goes between line ends on the terminal, and Ctrl-C withdraws
    // the line.
    if terminal {
        let notice = format!("\r\n{} (Ctrl-C withdraws the line)\r\n", waiting.notice());
        let _ = handle
            .data(id, bytes::Bytes::from(notice.into_bytes()))
            .await;
    } else {
        let notice = format!("{}\r\n", waiting.notice());
        let _ = handle
            .extended_data(id, 1, bytes::Bytes::from(notice.into_bytes()))
            .await;
    }
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
                Some(ChannelMsg::Data { data }) if terminal && data.contains(&0x03) => {
                    return Decision::Refuse(Refused {
                        told: format!(
                            "tollgate: withdrawn (Ctrl-C) while approval {} was pending; the line was not run.",
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
            text: recorded_text(terms, text).into(),
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

/// The client's side of a channel, read while a line waits for its approval.
struct Client<'a> {
    down_r: &'a mut ChannelReadHalf,
    backlog: &'a mut VecDeque<ChannelMsg>,
}

/// Client data for a shell: each line is checked at its end before the line end is forwarded.
/// With a PTY the keystrokes go on at once (the target echoes them) and a refused line is
/// cleared with Ctrl-U instead of entered; without one a line is held until it is complete and
/// a refused one is dropped. The client is told on the terminal (stderr without a PTY). A line
/// a rule holds waits for its approval with its line end held; what the client sends meanwhile
/// is kept for after the decision.
async fn shell_data(
    terms: &Terms,
    up_w: &ChannelWriteHalf<client::Msg>,
    handle: &server::Handle,
    id: ChannelId,
    editor: &mut LineEditor,
    data: &[u8],
    client: &mut Client<'_>,
) -> Result<(), russh::Error> {
    let pty = editor.pty();
    let mut rest = data;
    while let Some(line) = editor.feed(rest) {
        let next = line.next();
        if pty && line.upto > 0 {
            up_w.data(&rest[..line.upto]).await?;
        }
        let mut decision = guard::decide(terms, &line.text, true);
        if let Decision::Wait(waiting) = decision {
            decision = wait(
                terms,
                handle,
                id,
                &waiting,
                client.down_r,
                client.backlog,
                pty,
            )
            .await;
            if let Decision::Run { rule, approval } = &decision {
                // The line runs under its approval: on record with both.
                terms.log.append(EventKind::Command {
                    command: shell_line(terms, &line.text),
                    outcome: Outcome {
                        rule: rule.clone(),
                        approval: approval.clone(),
                        tags: vec!["approved".into()],
                        ..Outcome::default()
                    },
                });
            }
        }
        match decision {
            Decision::Refuse(refused) => {
                tracing::info!(connection = %terms.connection, rule = %refused.rule, "ssh shell line refused");
                terms.log.append(EventKind::Command {
                    command: shell_line(terms, &line.text),
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
            // `wait` never answers Wait.
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

/// A line typed in a shell, as recorded.
fn shell_line(terms: &Terms, text: &str) -> Command {
    Command {
        step: ProtocolStep::Shell,
        text: recorded_text(terms, text.to_string()).into(),
        params: Vec::new(),
        statement: None,
    }
}

/// A command line as recorded: what the masking detectors find in it is masked, so the
/// store never holds a value a client typed either.
pub(crate) fn recorded_text(terms: &Terms, text: String) -> String {
    match &terms.mask {
        Some(mask) => {
            let mut out = Vec::new();
            if mask.mask(
                tollgate_core::ColumnMask::Scan,
                text.as_bytes(),
                &mut out,
                &mut MaskTally::default(),
            ) {
                String::from_utf8_lossy(&out).into_owned()
            } else {
                text
            }
        }
        None => text,
    }
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
        text: recorded_text(terms, text).into(),
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
    // A legacy scp transfer is recorded as files, not as a terminal.
    if step != ProtocolStep::Subsystem && s.scp.is_none() {
        let (term, width, height) = match &s.pty {
            Some((term, w, h)) => (Some(term.clone()), *w, *h),
            None => (None, 80, 24),
        };
        let header = TerminalHeader {
            width,
            height,
            term,
            started: tollgate_core::now_micros(),
            command: command.text.to_string(),
        };
        s.recording = Some(Recording::new(
            terms.log.clone(),
            terms.mask.clone(),
            u32::from(id),
            header,
            terms.record_limit,
        ));
    }
    s.command = Some((command, Instant::now()));
    s.rule = rule;
    s.approval = approval;
    s.pending.push_back(Pending::Start);
    true
}

/// Target to client: data, stderr, exit status or signal, EOF and close, and the replies to
/// forwarded requests. Output is masked (an unfinished line held back until it is complete or
/// [`crate::terminal::HOLD`] passes) and recorded as the client receives it.
async fn target_to_client(
    mut up_r: ChannelReadHalf,
    down_w: &ChannelWriteHalf<ServerMsg>,
    handle: &server::Handle,
    id: ChannelId,
    shared: &Mutex<Shared>,
    terms: &Terms,
) {
    let mut out = Output {
        stdout: terms.mask.clone().map(StreamMask::new),
        stderr: terms.mask.clone().map(StreamMask::new),
    };
    loop {
        wait_for_the_store(terms, shared).await;
        let due = out.deadline(shared);
        let msg = tokio::select! {
            msg = up_r.wait() => msg,
            () = sleep_until(due), if due.is_some() => {
                if out.flush_due(down_w, shared).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let Some(msg) = msg else { break };
        // Held output goes before anything that is not more of the same stream.
        if !matches!(
            msg,
            ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. }
        ) && out.flush_all(down_w, shared).await.is_err()
        {
            break;
        }
        let sent = match msg {
            // SFTP is framed, checked and recorded by crate::sftp, not masked.
            ChannelMsg::Data { data } if lock(shared).sftp.is_some() => {
                let sftp = lock(shared).sftp.clone();
                match sftp {
                    Some(f) => f.on_target(data, down_w).await.map_err(|_| ()),
                    None => Ok(()),
                }
            }
            // Legacy scp: files, relayed as they are.
            ChannelMsg::Data { data } if lock(shared).scp.is_some() => {
                if let Some(scp) = lock(shared).scp.as_mut().filter(|r| r.op() == FileOp::Read) {
                    scp.feed(&data);
                }
                down_w.data_bytes(data).await.map_err(|_| ())
            }
            ChannelMsg::Data { data } => match out.stdout.as_mut() {
                None => {
                    record_output(shared, &data);
                    down_w.data_bytes(data).await.map_err(|_| ())
                }
                Some(mask) => {
                    let shown = masked(mask, shared, &data, true);
                    send(down_w, None, shown).await
                }
            },
            ChannelMsg::ExtendedData { data, ext } => match (ext, out.stderr.as_mut()) {
                (1, Some(mask)) => {
                    let shown = masked(mask, shared, &data, false);
                    send(down_w, Some(1), shown).await
                }
                _ => {
                    record_output(shared, &data);
                    down_w.extended_data_bytes(ext, data).await.map_err(|_| ())
                }
            },
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
    let _ = out.flush_all(down_w, shared).await;
    let _ = down_w.close().await;
}

/// Longest a channel waits for the audit store before reading more output it would record.
const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// While the channel's output is being recorded and the store holds too much not yet written,
/// reading from the target pauses (its window then slows it), up to [`STORE_WAIT`]: memory
/// stays bounded when output comes faster than the store takes it.
async fn wait_for_the_store(terms: &Terms, shared: &Mutex<Shared>) {
    let recording = lock(shared)
        .recording
        .as_ref()
        .is_some_and(Recording::takes_output);
    if !recording || !terms.log.pressure() {
        return;
    }
    let until = Instant::now() + STORE_WAIT;
    while terms.log.pressure() && Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The masks of a channel's two output streams.
struct Output {
    stdout: Option<StreamMask>,
    stderr: Option<StreamMask>,
}

impl Output {
    /// The next moment something held must go out: masked output or recorded events.
    fn deadline(&self, shared: &Mutex<Shared>) -> Option<Instant> {
        [
            self.stdout.as_ref().and_then(StreamMask::deadline),
            self.stderr.as_ref().and_then(StreamMask::deadline),
            lock(shared)
                .recording
                .as_ref()
                .and_then(Recording::deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Sends what is due.
    async fn flush_due(
        &mut self,
        down_w: &ChannelWriteHalf<ServerMsg>,
        shared: &Mutex<Shared>,
    ) -> Result<(), ()> {
        let now = Instant::now();
        {
            let mut s = lock(shared);
            if let Some(r) = s.recording.as_mut()
                && r.deadline().is_some_and(|d| d <= now)
            {
                r.write();
            }
        }
        for (ext, mask) in [
            (None, self.stdout.as_mut()),
            (Some(1), self.stderr.as_mut()),
        ] {
            if let Some(mask) = mask
                && mask.deadline().is_some_and(|d| d <= now)
            {
                let held = flushed(mask, shared);
                send(down_w, ext, held).await?;
            }
        }
        Ok(())
    }

    /// Sends everything held.
    async fn flush_all(
        &mut self,
        down_w: &ChannelWriteHalf<ServerMsg>,
        shared: &Mutex<Shared>,
    ) -> Result<(), ()> {
        for (ext, mask) in [
            (None, self.stdout.as_mut()),
            (Some(1), self.stderr.as_mut()),
        ] {
            if let Some(mask) = mask
                && !mask.is_clear()
            {
                let held = flushed(mask, shared);
                send(down_w, ext, held).await?;
            }
        }
        Ok(())
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
    }
}

/// A chunk of output through its stream's mask: what may go out now, recorded. The echo of
/// keys the client typed in a PTY shell goes out at once.
fn masked(mask: &mut StreamMask, shared: &Mutex<Shared>, data: &[u8], stdout: bool) -> Vec<u8> {
    let mut shown = Vec::with_capacity(data.len() + 64);
    let mut s = lock(shared);
    if stdout && s.pty.is_some() && s.echo.is_echo(data) {
        mask.flush(&mut shown);
        if let Some(r) = s.recording.as_mut() {
            r.output(&shown);
            r.echo(data);
        }
        shown.extend_from_slice(data);
    } else {
        mask.push(data, &mut shown);
        if let Some(r) = s.recording.as_mut() {
            r.output(&shown);
        }
    }
    merge_tally(&mut s.masked, &mut mask.tally);
    shown
}

/// What a stream's mask held, masked and recorded.
fn flushed(mask: &mut StreamMask, shared: &Mutex<Shared>) -> Vec<u8> {
    let mut held = Vec::new();
    mask.flush(&mut held);
    let mut s = lock(shared);
    merge_tally(&mut s.masked, &mut mask.tally);
    if let Some(r) = s.recording.as_mut() {
        r.output(&held);
    }
    held
}

fn merge_tally(total: &mut MaskTally, from: &mut MaskTally) {
    if from.is_empty() {
        return;
    }
    total.add(from);
}

fn record_output(shared: &Mutex<Shared>, data: &[u8]) {
    if let Some(r) = lock(shared).recording.as_mut() {
        r.output(data);
    }
}

async fn send(
    down_w: &ChannelWriteHalf<ServerMsg>,
    ext: Option<u32>,
    data: Vec<u8>,
) -> Result<(), ()> {
    if data.is_empty() {
        return Ok(());
    }
    let data = bytes::Bytes::from(data);
    match ext {
        None => down_w.data_bytes(data).await,
        Some(ext) => down_w.extended_data_bytes(ext, data).await,
    }
    .map_err(|_| ())
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
