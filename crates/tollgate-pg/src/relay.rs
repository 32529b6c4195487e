//! The message relay between an authenticated client and its target.
//!
//! Each direction reads whatever the socket has, walks the message headers in the buffer,
//! decodes only the messages a decision or the record needs, and forwards the whole scanned
//! chunk with one write. Large DataRow/CopyData messages are forwarded piece by piece as they
//! arrive, so memory per session stays bounded by the read buffer and the message cap.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Notify;
use tollgate_core::{
    ApprovalMode, ApprovalRequest, ApprovalState, ApprovalTerms, Command, CommandError,
    CommandStatus, EventKind, Identity, Outcome, PolicyContext, Protocol, ProtocolStep, Refusal,
    RefusalCode, SessionLog, SessionMask, Verdict,
};

use crate::codec::{self, typed_header};
use crate::front::PgFront;
use crate::masking::{DescribeTarget, ExecuteFormats, Masking, put_raw, scrub};
use crate::stream::PgStream;
use crate::{PgError, sqlstate_for};

const READ_CHUNK: usize = 64 * 1024;
/// Messages of these types above this size are streamed rather than buffered whole.
const STREAM_THRESHOLD: usize = 32 * 1024;
/// Upper bound of named statements/portals remembered per session for the record.
const MAX_NAMED: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingKind {
    Simple,
    Execute,
    Function,
    Sync,
    /// The client ended a COPY FROM STDIN (CopyDone or CopyFail).
    CopyEnd,
    /// An answer the gateway writes itself (a refused command), in its place in the stream.
    Injected,
    /// A Describe whose RowDescription masking needs to attribute (only while masking).
    Describe,
}

struct Pending {
    kind: PendingKind,
    command: Option<Command>,
    started: Instant,
    outcome: Outcome,
    /// For `Injected`: the ErrorResponse to write, and whether a ReadyForQuery follows.
    injection: Option<(BytesMut, bool)>,
    /// For an Execute the gateway replaced (approval missing): the ErrorResponse that takes the
    /// place of the target's answer to the substitute.
    rewrite: Option<BytesMut>,
    /// For a `Describe`: what it describes.
    describe: Option<DescribeTarget>,
    /// For an Execute while masking: which portal and result formats its rows come in.
    execute: Option<ExecuteFormats>,
}

impl Pending {
    fn new(kind: PendingKind, command: Option<Command>) -> Self {
        Self {
            kind,
            command,
            started: Instant::now(),
            outcome: Outcome::default(),
            injection: None,
            rewrite: None,
            describe: None,
            execute: None,
        }
    }
}

type Queue = Mutex<VecDeque<Pending>>;

/// Why the relay stopped.
enum End {
    ClientTerminated,
    ClientGone,
    TargetGone {
        fatal_seen: bool,
    },
    Refused(Refusal),
    Shutdown,
    Failed(PgError),
    /// Strict audit: a command's event could not be made durable, so it was not forwarded.
    AuditFailed(String),
}

/// Who a relayed session is for and how it is treated.
pub(crate) struct SessionTerms<'a> {
    /// The caller.
    pub identity: &'a Identity,
    /// The connection name.
    pub connection: &'a str,
    /// Masking of results, when the caller's results are masked.
    pub masking: Option<Masking>,
    /// Strict audit: each command's event is durable before it is forwarded.
    pub strict_audit: bool,
}

/// Relays until one side ends; returns the reason recorded as the session's end.
pub(crate) async fn run(
    front: &PgFront,
    client: PgStream,
    target: PgStream,
    terms: SessionTerms<'_>,
    log: &mut SessionLog,
) -> String {
    let SessionTerms {
        identity,
        connection,
        mut masking,
        strict_audit,
    } = terms;
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut target_rd, mut target_wr) = tokio::io::split(target);
    let queue: Queue = Mutex::new(VecDeque::new());
    let injected = Notify::new();
    let ctx = PolicyContext {
        identity,
        connection,
        protocol: Protocol::Postgres,
    };
    let mut shutdown = front.shutdown.clone();
    let cap = front.config.max_message_bytes;

    let end = {
        let session_id = log.session().to_string();
        let upstream_fut = client_to_target(
            front,
            &ctx,
            &session_id,
            &mut client_rd,
            &mut target_wr,
            &queue,
            &injected,
            cap,
            masking.as_ref().map(|m| Arc::clone(m.mask())),
            strict_audit.then(|| log.clone()),
        );
        let downstream_fut = target_to_client(
            &mut target_rd,
            &mut client_wr,
            &queue,
            &injected,
            log,
            cap,
            masking.as_mut(),
        );
        tokio::select! {
            e = upstream_fut => e,
            e = downstream_fut => e,
            _ = wait_true(&mut shutdown) => End::Shutdown,
        }
    };

    // Anything still pending never got an answer.
    let leftovers: Vec<Pending> = queue
        .lock()
        .map(|mut q| q.drain(..).collect())
        .unwrap_or_default();
    for p in leftovers {
        if let Some(mut command) = p.command {
            scrub_for_record(&mut command, masking.as_ref());
            let mut outcome = p.outcome;
            if p.kind != PendingKind::Injected {
                outcome.status = CommandStatus::Interrupted;
            }
            outcome.duration_us = p.started.elapsed().as_micros() as u64;
            log.append(EventKind::Command { command, outcome });
        }
    }

    let fatal = |code: &str, msg: &str| {
        let mut out = BytesMut::new();
        codec::error_response(&mut out, "FATAL", code, msg);
        out
    };
    let (reason, farewell) = match end {
        End::ClientTerminated => ("client terminated".to_string(), None),
        End::ClientGone => ("client disconnected".to_string(), None),
        End::TargetGone { fatal_seen: true } => ("target ended the session".to_string(), None),
        End::TargetGone { fatal_seen: false } => (
            "target closed the connection".to_string(),
            Some(fatal(
                "08006",
                "the target closed the connection unexpectedly",
            )),
        ),
        End::Refused(refusal) => {
            let out = fatal(sqlstate_for(refusal.code), &refusal.message);
            let reason = format!("refused: {}", refusal.message);
            log.append(EventKind::Refusal(refusal));
            (reason, Some(out))
        }
        End::Shutdown => (
            "gateway shutting down".to_string(),
            Some(fatal(
                "57P01",
                "terminating connection because the gateway is shutting down",
            )),
        ),
        End::Failed(PgError::Protocol(m)) => {
            let refusal = Refusal::new(
                RefusalCode::ProtocolViolation,
                format!("protocol violation: {m}"),
            );
            let out = fatal("08P01", &refusal.message);
            log.append(EventKind::Refusal(refusal));
            (format!("protocol violation: {m}"), Some(out))
        }
        End::Failed(e) => (format!("connection error: {e}"), None),
        End::AuditFailed(why) => {
            let message = format!(
                "the audit log cannot record this statement, so it was not run; the session ends: {why}"
            );
            let out = fatal("58030", &message);
            log.append(EventKind::Refusal(Refusal::new(
                RefusalCode::ProtocolViolation,
                message.clone(),
            )));
            (format!("audit unavailable: {why}"), Some(out))
        }
    };
    if let Some(out) = farewell {
        let _ = client_wr.write_all(&out).await;
        let _ = client_wr.flush().await;
    }
    let _ = client_wr.shutdown().await;
    let _ = target_wr.shutdown().await;
    reason
}

async fn wait_true(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            // The sender is gone: the gateway is going away.
            return;
        }
    }
}

/// What the scanner should do after a message.
enum Step {
    Continue,
    /// Forward up to and including this message, then stop.
    StopAfter(End),
    /// Forward what came before this message, then stop.
    StopBefore(End),
    /// Forward what came before this message and drop this one.
    Drop,
    /// Forward up to and including this message, then let the caller write injected answers.
    Pause,
    /// Forward what came before this message, let the caller write injected answers, then
    /// scan this message again.
    PauseBefore,
    /// Forward what came before this message, then hold this one for an approval.
    Hold(Box<Held>),
    /// Forward what came before this message, then these bytes instead of it.
    Replace(BytesMut),
}

/// Why a scan stopped early.
enum Stop {
    End(End),
    /// Skip this many bytes (a dropped message), then scan on.
    Drop(usize),
    /// Write what is queued for injection, then scan on.
    Pause,
    /// This many bytes are a statement waiting for an approval.
    Hold(usize, Box<Held>),
    /// Write these bytes in place of the next `usize` bytes.
    Replace(usize, BytesMut),
}

/// Walks complete messages at the front of `buf`. Returns how many bytes may be forwarded and
/// whether to stop. `partial` carries the unread remainder of a streamed message across reads.
fn scan(
    buf: &[u8],
    partial: &mut usize,
    cap: usize,
    streamable: impl Fn(u8) -> bool,
    mut on_message: impl FnMut(u8, &[u8]) -> Result<Step, PgError>,
) -> Result<(usize, Option<Stop>), PgError> {
    let mut pos = 0;
    if *partial > 0 {
        let take = (*partial).min(buf.len());
        *partial -= take;
        pos = take;
    }
    while *partial == 0 {
        let rest = &buf[pos..];
        let (tag, len) = match typed_header(
            rest,
            if streamable(rest.first().copied().unwrap_or(0)) {
                usize::MAX >> 1
            } else {
                cap
            },
        )? {
            Some(h) => h,
            None => break,
        };
        if rest.len() < len {
            if streamable(tag) && len > STREAM_THRESHOLD {
                *partial = len - rest.len();
                pos = buf.len();
            }
            break;
        }
        match on_message(tag, &rest[5..len])? {
            Step::Continue => pos += len,
            Step::StopAfter(end) => return Ok((pos + len, Some(Stop::End(end)))),
            Step::StopBefore(end) => return Ok((pos, Some(Stop::End(end)))),
            Step::Drop => return Ok((pos, Some(Stop::Drop(len)))),
            Step::Pause => return Ok((pos + len, Some(Stop::Pause))),
            Step::PauseBefore => return Ok((pos, Some(Stop::Pause))),
            Step::Hold(held) => return Ok((pos, Some(Stop::Hold(len, held)))),
            Step::Replace(bytes) => return Ok((pos, Some(Stop::Replace(len, bytes)))),
        }
    }
    Ok((pos, None))
}

async fn fill<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    rd.read_buf(buf).await
}

struct Portal {
    statement: String,
    /// Generation of the Bind that made it and of its statement's Parse.
    generation: u64,
    statement_generation: u64,
    result_formats: Arc<[i16]>,
    text: Arc<str>,
    params: Vec<Option<String>>,
    rule: Option<String>,
    needs: Option<Arc<Need>>,
}

/// A rule's demand that a statement be approved before it runs.
struct Need {
    rule: String,
    message: String,
    terms: ApprovalTerms,
}

/// A prepared statement: its text and the allow rule that let it through, if any.
struct Prepared {
    text: Arc<str>,
    /// Generation of the Parse that made it.
    generation: u64,
    rule: Option<String>,
    needs: Option<Arc<Need>>,
}

/// The ErrorResponse a refused command gets, and how it is recorded.
fn refusal_answer(verdict: &Verdict) -> Option<(BytesMut, CommandStatus, String)> {
    let (rule, message, status) = match verdict {
        Verdict::Allow { .. } => return None,
        Verdict::Deny { rule, message } => (rule, message.clone(), CommandStatus::Denied),
        Verdict::Approve { rule, message, .. } => (
            rule,
            format!("{message}. Fast-path function calls cannot be approved; it was not run"),
            CommandStatus::ApprovalRequired,
        ),
    };
    Some((error_bytes(&message), status, rule.clone()))
}

fn error_bytes(message: &str) -> BytesMut {
    let mut out = BytesMut::new();
    codec::error_response(&mut out, "ERROR", "42501", message);
    out
}

/// A statement waiting in the session for an approver (hold mode).
struct Held {
    id: String,
    hold_secs: u64,
    command: Command,
    rule: String,
    message: String,
    /// Held at an extended-protocol Execute rather than a simple Query.
    extended: bool,
}

/// What the client is told about a pending approval.
fn pending_message(message: &str, id: &str, hold: bool) -> String {
    if hold {
        format!(
            "{message}. Waiting for approval {id}: an approver runs `tollgate approvals approve {id}`"
        )
    } else {
        format!(
            "{message}. Approval request {id} is pending: an approver runs `tollgate approvals approve {id}`, then send the identical statement again (it runs once)"
        )
    }
}

fn allowed_rule(verdict: Verdict) -> Option<String> {
    match verdict {
        Verdict::Allow { rule } => rule,
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
async fn client_to_target(
    front: &PgFront,
    ctx: &PolicyContext<'_>,
    session: &str,
    rd: &mut ReadHalf<PgStream>,
    wr: &mut WriteHalf<PgStream>,
    queue: &Queue,
    injected: &Notify,
    cap: usize,
    session_mask: Option<Arc<dyn SessionMask>>,
    strict: Option<SessionLog>,
) -> End {
    let masking = session_mask.is_some();
    // Strict audit: the durability answers for the commands in the chunk being scanned; all
    // must be yes before the chunk is forwarded.
    let acks: std::cell::RefCell<Vec<tokio::sync::oneshot::Receiver<Result<(), String>>>> =
        std::cell::RefCell::new(Vec::new());
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut partial = 0usize;
    // Counts Parse and Bind messages, so a reused statement or portal name is told apart.
    let mut generation = 0u64;
    let mut statements: HashMap<String, Prepared> = HashMap::new();
    let mut portals: HashMap<String, Portal> = HashMap::new();
    // After a refused Parse, the extended protocol discards everything up to the next Sync.
    let mut skipping = false;
    loop {
        match fill(rd, &mut buf).await {
            Ok(0) => return End::ClientGone,
            Ok(_) => {}
            Err(_) => return End::ClientGone,
        }
        loop {
            let scanned = scan(
                &buf,
                &mut partial,
                cap,
                |t| t == b'd',
                |tag, body| {
                    let push = |p: Pending| {
                        if let Some(log) = &strict
                            && let Some(ack) = started(log, &p, session_mask.as_deref())
                        {
                            acks.borrow_mut().push(ack);
                        }
                        if let Ok(mut q) = queue.lock() {
                            q.push_back(p);
                        }
                    };
                    let inject = |command: Command, verdict: &Verdict, ready: bool| -> bool {
                        let Some((error, status, rule)) = refusal_answer(verdict) else {
                            return false;
                        };
                        let mut p = Pending::new(PendingKind::Injected, Some(command));
                        p.outcome.status = status;
                        p.outcome.rule = Some(rule);
                        p.injection = Some((error, ready));
                        push(p);
                        injected.notify_one();
                        true
                    };
                    if skipping {
                        if tag == b'S' {
                            skipping = false;
                            push(Pending::new(PendingKind::Sync, None));
                            return Ok(Step::Continue);
                        }
                        if tag == b'X' {
                            return Ok(Step::StopAfter(End::ClientTerminated));
                        }
                        return Ok(Step::Drop);
                    }
                    match tag {
                        b'Q' => {
                            if let Err(r) =
                                front.gatekeeper.still_valid(ctx.identity, ctx.connection)
                            {
                                return Ok(Step::StopBefore(End::Refused(r)));
                            }
                            let text = codec::Reader::new(body).cstr()?;
                            let verdict = front.policy.check(ctx, text);
                            let command = Command {
                                step: ProtocolStep::SimpleQuery,
                                text: Arc::from(text),
                                params: Vec::new(),
                                statement: None,
                            };
                            let mut approval = None;
                            if let Verdict::Approve {
                                rule,
                                message,
                                terms,
                            } = &verdict
                            {
                                let shown = shown_command(&command, session_mask.as_deref());
                                let state = front.approvals.request(&ApprovalRequest {
                                    requester: ctx.identity,
                                    session,
                                    connection: ctx.connection,
                                    rule,
                                    terms,
                                    text,
                                    params: &[],
                                    shown_text: &shown.text,
                                    shown_params: &shown.params,
                                });
                                let refuse = |msg: String, id: Option<String>| {
                                    let mut p =
                                        Pending::new(PendingKind::Injected, Some(command.clone()));
                                    p.outcome.status = CommandStatus::ApprovalRequired;
                                    p.outcome.rule = Some(rule.clone());
                                    p.outcome.approval = id;
                                    p.injection = Some((error_bytes(&msg), true));
                                    push(p);
                                    injected.notify_one();
                                };
                                match state {
                                    ApprovalState::Approved { id } => {
                                        approval = Some((rule.clone(), id))
                                    }
                                    ApprovalState::Pending { id }
                                        if terms.mode == ApprovalMode::Hold =>
                                    {
                                        return Ok(Step::Hold(Box::new(Held {
                                            id,
                                            hold_secs: terms.hold_secs,
                                            command,
                                            rule: rule.clone(),
                                            message: message.clone(),
                                            extended: false,
                                        })));
                                    }
                                    ApprovalState::Pending { id } => {
                                        refuse(pending_message(message, &id, false), Some(id));
                                        return Ok(Step::Drop);
                                    }
                                    ApprovalState::Denied { id, reason } => {
                                        refuse(
                                            format!(
                                                "{message}. Approval {id} was denied: {reason}"
                                            ),
                                            Some(id),
                                        );
                                        return Ok(Step::Drop);
                                    }
                                    ApprovalState::Expired { id } => {
                                        refuse(
                                            format!(
                                                "{message}. Approval {id} expired or could not be recorded"
                                            ),
                                            Some(id),
                                        );
                                        return Ok(Step::Drop);
                                    }
                                }
                            } else if inject(command.clone(), &verdict, true) {
                                return Ok(Step::Drop);
                            }
                            let mut p = Pending::new(PendingKind::Simple, Some(command));
                            match approval {
                                Some((rule, id)) => {
                                    p.outcome.rule = Some(rule);
                                    p.outcome.approval = Some(id);
                                }
                                None => p.outcome.rule = allowed_rule(verdict),
                            }
                            push(p);
                        }
                        b'P' => {
                            let parse = codec::parse_parse(body)?;
                            let verdict = front.policy.check(ctx, parse.query);
                            let needs = match &verdict {
                                Verdict::Approve {
                                    rule,
                                    message,
                                    terms,
                                } => Some(Arc::new(Need {
                                    rule: rule.clone(),
                                    message: message.clone(),
                                    terms: terms.clone(),
                                })),
                                _ => None,
                            };
                            if matches!(verdict, Verdict::Deny { .. }) {
                                let command = Command {
                                    step: ProtocolStep::Parse,
                                    text: Arc::from(parse.query),
                                    params: Vec::new(),
                                    statement: (!parse.name.is_empty())
                                        .then(|| parse.name.to_string()),
                                };
                                inject(command, &verdict, false);
                                skipping = true;
                                return Ok(Step::Drop);
                            }
                            if statements.len() >= MAX_NAMED && !statements.contains_key(parse.name)
                            {
                                statements.retain(|k, _| k.is_empty());
                            }
                            generation += 1;
                            statements.insert(
                                parse.name.to_string(),
                                Prepared {
                                    text: Arc::from(parse.query),
                                    generation,
                                    rule: allowed_rule(verdict),
                                    needs,
                                },
                            );
                        }
                        b'B' => {
                            let bind = codec::parse_bind(body)?;
                            let (text, rule, needs, statement_generation) = statements
                                .get(bind.statement)
                                .map(|p| {
                                    (
                                        Arc::clone(&p.text),
                                        p.rule.clone(),
                                        p.needs.clone(),
                                        p.generation,
                                    )
                                })
                                .unwrap_or_else(|| (Arc::from(""), None, None, 0));
                            generation += 1;
                            if portals.len() >= MAX_NAMED && !portals.contains_key(bind.portal) {
                                portals.retain(|k, _| k.is_empty());
                            }
                            portals.insert(
                                bind.portal.to_string(),
                                Portal {
                                    statement: bind.statement.to_string(),
                                    generation,
                                    statement_generation,
                                    result_formats: bind.result_formats.into(),
                                    text,
                                    params: bind.params,
                                    rule,
                                    needs,
                                },
                            );
                        }
                        b'E' => {
                            if let Err(r) =
                                front.gatekeeper.still_valid(ctx.identity, ctx.connection)
                            {
                                return Ok(Step::StopBefore(End::Refused(r)));
                            }
                            let (portal, _max_rows) = codec::parse_execute(body)?;
                            if let Some(p) = portals.get(portal)
                                && let Some(need) = &p.needs
                            {
                                let command = Command {
                                    step: ProtocolStep::Execute,
                                    text: Arc::clone(&p.text),
                                    params: p.params.clone(),
                                    statement: (!p.statement.is_empty())
                                        .then(|| p.statement.clone()),
                                };
                                let shown = shown_command(&command, session_mask.as_deref());
                                let state = front.approvals.request(&ApprovalRequest {
                                    requester: ctx.identity,
                                    session,
                                    connection: ctx.connection,
                                    rule: &need.rule,
                                    terms: &need.terms,
                                    text: &p.text,
                                    params: &p.params,
                                    shown_text: &shown.text,
                                    shown_params: &shown.params,
                                });
                                let told = match state {
                                    ApprovalState::Approved { id } => {
                                        let mut pending =
                                            Pending::new(PendingKind::Execute, Some(command));
                                        pending.outcome.rule = Some(need.rule.clone());
                                        pending.outcome.approval = Some(id);
                                        push(pending);
                                        return Ok(Step::Continue);
                                    }
                                    ApprovalState::Pending { id }
                                        if need.terms.mode == ApprovalMode::Hold =>
                                    {
                                        return Ok(Step::Hold(Box::new(Held {
                                            id,
                                            hold_secs: need.terms.hold_secs,
                                            command,
                                            rule: need.rule.clone(),
                                            message: need.message.clone(),
                                            extended: true,
                                        })));
                                    }
                                    ApprovalState::Pending { id } => {
                                        (pending_message(&need.message, &id, false), id)
                                    }
                                    ApprovalState::Denied { id, reason } => (
                                        format!(
                                            "{}. Approval {id} was denied: {reason}",
                                            need.message
                                        ),
                                        id,
                                    ),
                                    ApprovalState::Expired { id } => (
                                        format!(
                                            "{}. Approval {id} expired or could not be recorded",
                                            need.message
                                        ),
                                        id,
                                    ),
                                };
                                push(refused_execute(command, &need.rule, told.1, &told.0));
                                return Ok(Step::Replace(substitute_execute()));
                            }
                            let mut p = match portals.get(portal) {
                                Some(p) => {
                                    let mut pending = Pending::new(
                                        PendingKind::Execute,
                                        Some(Command {
                                            step: ProtocolStep::Execute,
                                            text: Arc::clone(&p.text),
                                            params: p.params.clone(),
                                            statement: (!p.statement.is_empty())
                                                .then(|| p.statement.clone()),
                                        }),
                                    );
                                    pending.outcome.rule = p.rule.clone();
                                    if masking {
                                        pending.execute = Some(ExecuteFormats {
                                            portal: (portal.to_string(), p.generation),
                                            statement: (
                                                p.statement.clone(),
                                                p.statement_generation,
                                            ),
                                            formats: Arc::clone(&p.result_formats),
                                        });
                                    }
                                    pending
                                }
                                None => Pending::new(
                                    PendingKind::Execute,
                                    Some(Command {
                                        step: ProtocolStep::Execute,
                                        text: Arc::from(""),
                                        params: Vec::new(),
                                        statement: None,
                                    }),
                                ),
                            };
                            p.started = Instant::now();
                            push(p);
                        }
                        b'S' => push(Pending::new(PendingKind::Sync, None)),
                        b'F' => {
                            if let Err(r) =
                                front.gatekeeper.still_valid(ctx.identity, ctx.connection)
                            {
                                return Ok(Step::StopBefore(End::Refused(r)));
                            }
                            let oid = codec::read_i32(body, 0)?;
                            let description = format!("function call (oid {oid})");
                            let verdict = front.policy.check_opaque(ctx, &description);
                            let command = Command {
                                step: ProtocolStep::FunctionCall,
                                text: Arc::from(description),
                                params: Vec::new(),
                                statement: None,
                            };
                            if inject(command.clone(), &verdict, true) {
                                return Ok(Step::Drop);
                            }
                            let mut p = Pending::new(PendingKind::Function, Some(command));
                            p.outcome.rule = allowed_rule(verdict);
                            push(p);
                        }
                        b'C' => {
                            let (kind, name) = codec::parse_close(body)?;
                            match kind {
                                b'S' => {
                                    statements.remove(name);
                                }
                                b'P' => {
                                    portals.remove(name);
                                }
                                _ => {
                                    return Err(PgError::protocol(
                                        "Close of an unknown object kind",
                                    ));
                                }
                            }
                        }
                        b'X' => return Ok(Step::StopAfter(End::ClientTerminated)),
                        b'c' | b'f' => push(Pending::new(PendingKind::CopyEnd, None)),
                        b'D' => {
                            if masking {
                                let mut r = codec::Reader::new(body);
                                let kind = r.bytes(1)?[0];
                                let name = r.cstr()?;
                                let target = match kind {
                                    b'S' => DescribeTarget::Statement(
                                        name.to_string(),
                                        statements.get(name).map(|p| p.generation).unwrap_or(0),
                                    ),
                                    b'P' => DescribeTarget::Portal(
                                        name.to_string(),
                                        portals.get(name).map(|p| p.generation).unwrap_or(0),
                                    ),
                                    _ => {
                                        return Err(PgError::protocol(
                                            "Describe of an unknown object kind",
                                        ));
                                    }
                                };
                                let mut p = Pending::new(PendingKind::Describe, None);
                                p.describe = Some(target);
                                push(p);
                            }
                        }
                        b'H' | b'd' | b'p' => {}
                        other => {
                            return Err(PgError::protocol(format!(
                                "unknown frontend message type {:?} (0x{other:02x})",
                                other as char
                            )));
                        }
                    }
                    Ok(Step::Continue)
                },
            );
            let (forward, stop) = match scanned {
                Ok(x) => x,
                Err(e) => return End::Failed(e),
            };
            // Strict audit: nothing is forwarded before its commands are on record.
            let waiting: Vec<_> = acks.borrow_mut().drain(..).collect();
            for ack in waiting {
                if let Err(why) = durable(ack).await {
                    return End::AuditFailed(why);
                }
            }
            if forward > 0 {
                if let Err(e) = wr.write_all(&buf[..forward]).await {
                    return End::Failed(PgError::Io(e));
                }
                buf.advance(forward);
            }
            match stop {
                None => break,
                Some(Stop::Drop(len)) => buf.advance(len),
                Some(Stop::Replace(len, bytes)) => {
                    if let Err(e) = wr.write_all(&bytes).await {
                        return End::Failed(PgError::Io(e));
                    }
                    buf.advance(len);
                }
                Some(Stop::Hold(len, held)) => {
                    let approved = hold(front, queue, injected, &held).await;
                    let Held {
                        id,
                        command,
                        rule,
                        message,
                        extended,
                        ..
                    } = *held;
                    match approved {
                        Err(why) if extended => {
                            let told = format!("{message}. {why}");
                            if let Ok(mut q) = queue.lock() {
                                q.push_back(refused_execute(command, &rule, id, &told));
                            }
                            if let Err(e) = wr.write_all(&substitute_execute()).await {
                                return End::Failed(PgError::Io(e));
                            }
                        }
                        Ok(()) => {
                            let kind = if extended {
                                PendingKind::Execute
                            } else {
                                PendingKind::Simple
                            };
                            let mut p = Pending::new(kind, Some(command));
                            p.outcome.rule = Some(rule);
                            p.outcome.approval = Some(id);
                            let ack = strict
                                .as_ref()
                                .and_then(|log| started(log, &p, session_mask.as_deref()));
                            if let Ok(mut q) = queue.lock() {
                                q.push_back(p);
                            }
                            if let Some(ack) = ack
                                && let Err(why) = durable(ack).await
                            {
                                return End::AuditFailed(why);
                            }
                            if let Err(e) = wr.write_all(&buf[..len]).await {
                                return End::Failed(PgError::Io(e));
                            }
                        }
                        Err(why) => {
                            let mut p = Pending::new(PendingKind::Injected, Some(command));
                            p.outcome.status = CommandStatus::ApprovalRequired;
                            p.outcome.rule = Some(rule);
                            p.outcome.approval = Some(id);
                            p.injection = Some((error_bytes(&format!("{message}. {why}")), true));
                            if let Ok(mut q) = queue.lock() {
                                q.push_back(p);
                            }
                            injected.notify_one();
                        }
                    }
                    buf.advance(len);
                }
                Some(Stop::Pause) => {}
                Some(Stop::End(end)) => {
                    if matches!(end, End::ClientTerminated) {
                        let _ = wr.flush().await;
                    }
                    return end;
                }
            }
        }
    }
}

/// The target ignores Sync messages received while it is in COPY FROM STDIN mode, so those the
/// client sent before ending the copy get no ReadyForQuery: forget them, and the end marker.
fn end_copy_in(q: &mut VecDeque<Pending>) {
    let end = q
        .iter()
        .skip(1)
        .position(|p| p.kind == PendingKind::CopyEnd)
        .map(|i| i + 1);
    let upto = end.unwrap_or(q.len());
    let mut i = 1;
    let mut limit = upto;
    while i < limit {
        if q.get(i).is_some_and(|p| p.kind == PendingKind::Sync) {
            q.remove(i);
            limit -= 1;
        } else {
            i += 1;
        }
    }
    if end.is_some() {
        q.remove(limit);
    }
}

/// The queue entry of an Execute refused for want of an approval: the target gets a substitute
/// Execute that fails in the same place, and its error is replaced by this one.
fn refused_execute(command: Command, rule: &str, approval: String, told: &str) -> Pending {
    let mut p = Pending::new(PendingKind::Execute, Some(command));
    p.outcome.status = CommandStatus::ApprovalRequired;
    p.outcome.rule = Some(rule.to_string());
    p.outcome.approval = Some(approval);
    p.outcome.error = Some(CommandError {
        code: "42501".into(),
        message: told.to_string(),
    });
    p.rewrite = Some(error_bytes(told));
    p
}

/// An Execute of a portal that cannot exist: the target answers it with an error at exactly
/// the refused Execute's place in the pipeline, then discards up to Sync as after any error.
fn substitute_execute() -> BytesMut {
    let mut out = BytesMut::new();
    codec::put_message(&mut out, b'E', |b| {
        codec::put_cstr(b, "tollgate: refused, not run");
        b.extend_from_slice(&0i32.to_be_bytes());
    });
    out
}

/// Waits for a held statement's approval, telling the client which approval it waits for.
async fn hold(
    front: &PgFront,
    queue: &Queue,
    injected: &Notify,
    held: &Held,
) -> Result<(), String> {
    let mut notice = BytesMut::new();
    codec::put_message(&mut notice, b'N', |b| {
        for (tag, value) in [
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', "01000"),
            (
                b'M',
                pending_message(&held.message, &held.id, true).as_str(),
            ),
        ] {
            b.extend_from_slice(&[tag]);
            codec::put_cstr(b, value);
        }
        b.extend_from_slice(&[0]);
    });
    let mut p = Pending::new(PendingKind::Injected, None);
    p.injection = Some((notice, false));
    if let Ok(mut q) = queue.lock() {
        q.push_back(p);
    }
    injected.notify_one();
    let deadline = Instant::now() + std::time::Duration::from_secs(held.hold_secs);
    loop {
        match front.approvals.poll(&held.id) {
            ApprovalState::Approved { .. } => return Ok(()),
            ApprovalState::Denied { id, reason } => {
                return Err(format!("Approval {id} was denied: {reason}"));
            }
            ApprovalState::Expired { id } => return Err(format!("Approval {id} expired")),
            ApprovalState::Pending { id } => {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "No decision on approval {id} within {}s; the statement was not run (the request stays open: once approved, send it again)",
                        held.hold_secs
                    ));
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Rows affected or returned, from a command tag (`SELECT 5`, `INSERT 0 3`, `COPY 10`).
fn tag_rows(tag: &str) -> u64 {
    let first = tag.split(' ').next().unwrap_or_default();
    let counted = matches!(
        first,
        "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "COPY" | "FETCH" | "MOVE" | "MERGE"
    );
    match tag.rsplit(' ').next() {
        Some(n) if counted => n.parse().unwrap_or(0),
        _ => 0,
    }
}

async fn target_to_client(
    rd: &mut ReadHalf<PgStream>,
    wr: &mut WriteHalf<PgStream>,
    queue: &Queue,
    injected: &Notify,
    log: &mut SessionLog,
    cap: usize,
    mut masking: Option<&mut Masking>,
) -> End {
    let masked = masking.is_some();
    // While masking, every forwarded message is copied (masked or not) into `out`.
    let mut out = BytesMut::new();
    // A binary COPY TO cannot be masked: its data is dropped and the client gets an error.
    let mut discard_copy = false;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut partial = 0usize;
    let mut done: Vec<Pending> = Vec::new();
    let mut fatal_seen = false;
    let mut copy_in = false;
    // Transaction status from the target's latest ReadyForQuery, for injected ones.
    let mut status = b'I';
    loop {
        // Answers the gateway owes the client and nothing from the target precedes.
        if let Err(e) = write_injected(queue, wr, status, &mut done).await {
            return End::Failed(e);
        }
        record(log, &mut done, masking.as_deref());
        tokio::select! {
            read = fill(rd, &mut buf) => match read {
                Ok(0) | Err(_) => return End::TargetGone { fatal_seen },
                Ok(_) => {}
            },
            _ = injected.notified() => continue,
        }
        loop {
            let scanned = {
                let mut q = match queue.lock() {
                    Ok(q) => q,
                    Err(_) => return End::Failed(PgError::protocol("session state poisoned")),
                };
                scan(
                    &buf,
                    &mut partial,
                    cap,
                    |t| !masked && (t == b'D' || t == b'd'),
                    |tag, raw_body| {
                        // An answer the gateway owes comes before anything the target sends
                        // after it was queued.
                        if q.front().is_some_and(|p| p.kind == PendingKind::Injected) {
                            return Ok(Step::PauseBefore);
                        }
                        let before = done.len();
                        let mut replaced: Option<BytesMut> = None;
                        let mut emitted = false;
                        if let Some(m) = masking.as_deref_mut() {
                            match tag {
                                b'T' => {
                                    let target = q
                                        .front()
                                        .filter(|p| p.kind == PendingKind::Describe)
                                        .and_then(|p| p.describe.clone());
                                    m.row_description(raw_body, target.as_ref())?;
                                    if target.is_some() {
                                        q.pop_front();
                                    }
                                }
                                b'n' if q
                                    .front()
                                    .is_some_and(|p| p.kind == PendingKind::Describe) =>
                                {
                                    q.pop_front();
                                }
                                b'D' => {
                                    let execute = q
                                        .front()
                                        .filter(|p| p.kind == PendingKind::Execute)
                                        .and_then(|p| p.execute.as_ref());
                                    m.data_row(raw_body, execute, &mut out)?;
                                    emitted = true;
                                }
                                b'H' if !m.copy_out(raw_body) => {
                                    discard_copy = true;
                                    emitted = true;
                                    let message = "binary COPY output cannot be masked: use COPY ... TO STDOUT in text or csv format";
                                    codec::error_response(&mut out, "ERROR", "0A000", message);
                                    if let Some(p) = q.front_mut() {
                                        p.outcome.status = CommandStatus::Error;
                                        p.outcome.error = Some(CommandError {
                                            code: "0A000".into(),
                                            message: message.into(),
                                        });
                                    }
                                }
                                b'd' | b'c' if discard_copy => emitted = true,
                                b'C' if discard_copy => {
                                    discard_copy = false;
                                    emitted = true;
                                }
                                b'd' if m.in_copy_out() => {
                                    m.copy_data(raw_body, &mut out);
                                    emitted = true;
                                }
                                b'E' | b'N' => {
                                    if tag == b'E' {
                                        // Describes still waiting will not be answered.
                                        while q
                                            .front()
                                            .is_some_and(|p| p.kind == PendingKind::Describe)
                                        {
                                            q.pop_front();
                                        }
                                    }
                                    replaced = m.fields(raw_body);
                                }
                                b'A' => replaced = m.notification(raw_body),
                                b'V' => replaced = m.function_result(raw_body),
                                _ => {}
                            }
                        }
                        let body: &[u8] = replaced.as_deref().unwrap_or(raw_body);
                        let step = (|| -> Result<Step, PgError> {
                            // A CopyEnd marker at the front belongs to no pending answer.
                            while q.front().is_some_and(|p| p.kind == PendingKind::CopyEnd) {
                                q.pop_front();
                            }
                            if copy_in && matches!(tag, b'C' | b'E') {
                                copy_in = false;
                                end_copy_in(&mut q);
                            }
                            match tag {
                                b'G' => copy_in = true,
                                b'C' => {
                                    let tag_text =
                                        codec::Reader::new(body).cstr().unwrap_or_default();
                                    if let Some(front) = q.front_mut() {
                                        match front.kind {
                                            PendingKind::Simple => {
                                                front.outcome.rows += tag_rows(tag_text);
                                                front.outcome.tags.push(tag_text.to_string());
                                            }
                                            PendingKind::Execute => {
                                                if let Some(mut p) = q.pop_front() {
                                                    p.outcome.rows += tag_rows(tag_text);
                                                    p.outcome.tags.push(tag_text.to_string());
                                                    done.push(p);
                                                }
                                            }
                                            _ => {}
                                        }
                                    }
                                }
                                b'I' | b's' => {
                                    if q.front().is_some_and(|p| p.kind == PendingKind::Execute)
                                        && let Some(mut p) = q.pop_front()
                                    {
                                        if tag == b's' {
                                            p.outcome.status = CommandStatus::Suspended;
                                        }
                                        done.push(p);
                                    }
                                }
                                b'E' if q.front().is_some_and(|p| {
                                    p.kind == PendingKind::Execute && p.rewrite.is_some()
                                }) =>
                                {
                                    // The target's answer to a substitute Execute: the client gets the
                                    // gateway's refusal in its place.
                                    if let Some(mut p) = q.pop_front() {
                                        let told = p.rewrite.take();
                                        done.push(p);
                                        if let Some(told) = told {
                                            let mut injected =
                                                Pending::new(PendingKind::Injected, None);
                                            injected.injection = Some((told, false));
                                            q.push_front(injected);
                                        }
                                    }
                                    return Ok(Step::Drop);
                                }
                                b'E' => {
                                    let fields = codec::parse_error_fields(body);
                                    if fields.severity == "FATAL" || fields.severity == "PANIC" {
                                        fatal_seen = true;
                                    }
                                    let error = CommandError {
                                        code: fields.code,
                                        message: fields.message,
                                    };
                                    match q.front().map(|p| p.kind) {
                                        Some(PendingKind::Simple | PendingKind::Function) => {
                                            if let Some(p) = q.front_mut() {
                                                p.outcome.status = CommandStatus::Error;
                                                p.outcome.error = Some(error);
                                            }
                                        }
                                        Some(PendingKind::Execute) => {
                                            if let Some(mut p) = q.pop_front() {
                                                p.outcome.status = CommandStatus::Error;
                                                p.outcome.error = Some(error);
                                                done.push(p);
                                            }
                                        }
                                        _ => {}
                                    }
                                }
                                b'Z' => {
                                    status = body.first().copied().unwrap_or(b'I');
                                    while q.front().is_some_and(|p| {
                                        matches!(
                                            p.kind,
                                            PendingKind::Execute | PendingKind::Describe
                                        )
                                    }) {
                                        if let Some(mut p) = q.pop_front() {
                                            p.outcome.status = CommandStatus::Skipped;
                                            done.push(p);
                                        }
                                    }
                                    if q.front().is_some_and(|p| p.kind != PendingKind::Injected)
                                        && let Some(p) = q.pop_front()
                                    {
                                        done.push(p);
                                    }
                                }
                                _ => {}
                            }
                            if q.front().is_some_and(|p| p.kind == PendingKind::Injected) {
                                return Ok(Step::Pause);
                            }
                            Ok(Step::Continue)
                        })()?;
                        if let Some(m) = masking.as_deref_mut() {
                            if matches!(tag, b'C' | b'E' | b's' | b'Z' | b'I') {
                                m.end_result();
                            }
                            if done.len() > before
                                && let Some(p) = done[before..]
                                    .iter_mut()
                                    .rev()
                                    .find(|p| p.command.is_some())
                            {
                                p.outcome.masked = m.take_tally();
                            }
                            let forwarded =
                                matches!(step, Step::Continue | Step::StopAfter(_) | Step::Pause);
                            if forwarded && !emitted {
                                put_raw(&mut out, tag, body);
                            }
                        }
                        Ok(step)
                    },
                )
            };
            let (forward, stop) = match scanned {
                Ok(x) => x,
                Err(e) => return End::Failed(e),
            };
            if masked {
                if !out.is_empty() {
                    if let Err(e) = wr.write_all(&out).await {
                        return End::Failed(PgError::Io(e));
                    }
                    out.clear();
                    if out.capacity() > 4 * READ_CHUNK {
                        // A huge row passed: give the memory back.
                        out = BytesMut::new();
                    }
                }
                buf.advance(forward);
            } else if forward > 0 {
                if let Err(e) = wr.write_all(&buf[..forward]).await {
                    return End::Failed(PgError::Io(e));
                }
                buf.advance(forward);
            }
            match stop {
                Some(Stop::Pause) => {
                    if let Err(e) = write_injected(queue, wr, status, &mut done).await {
                        return End::Failed(e);
                    }
                }
                Some(Stop::Drop(len)) => {
                    // A substitute's error was dropped: write the refusal queued in its place.
                    buf.advance(len);
                    if let Err(e) = write_injected(queue, wr, status, &mut done).await {
                        return End::Failed(e);
                    }
                }
                // The target's direction never holds or replaces messages.
                Some(Stop::Hold(len, _)) | Some(Stop::Replace(len, _)) => buf.advance(len),
                Some(Stop::End(end)) => return end,
                None => break,
            }
        }
        record(log, &mut done, masking.as_deref());
    }
}

/// Writes the gateway's own answers waiting at the front of the queue.
async fn write_injected(
    queue: &Queue,
    wr: &mut WriteHalf<PgStream>,
    status: u8,
    done: &mut Vec<Pending>,
) -> Result<(), PgError> {
    let mut out = BytesMut::new();
    if let Ok(mut q) = queue.lock() {
        while q.front().is_some_and(|p| p.kind == PendingKind::Injected) {
            let Some(mut p) = q.pop_front() else { break };
            if let Some((error, ready)) = p.injection.take() {
                // The record keeps what the client was told.
                if error.first() == Some(&b'E') && p.command.is_some() {
                    let fields = codec::parse_error_fields(error.get(5..).unwrap_or_default());
                    p.outcome.error = Some(CommandError {
                        code: fields.code,
                        message: fields.message,
                    });
                }
                out.extend_from_slice(&error);
                if ready {
                    codec::put_message(&mut out, b'Z', |b| b.extend_from_slice(&[status]));
                }
            }
            done.push(p);
        }
    }
    if !out.is_empty() {
        wr.write_all(&out).await.map_err(PgError::Io)?;
    }
    Ok(())
}

fn record(log: &mut SessionLog, done: &mut Vec<Pending>, masking: Option<&Masking>) {
    for p in done.drain(..) {
        if let Some(mut command) = p.command {
            scrub_for_record(&mut command, masking);
            let mut outcome = p.outcome;
            outcome.duration_us = p.started.elapsed().as_micros() as u64;
            log.append(EventKind::Command { command, outcome });
        }
    }
}

/// What a command's record may hold: role passwords in the text are always hidden, and in a
/// masked session whatever the detectors find in the text and parameters is masked.
fn scrub_for_record(command: &mut Command, masking: Option<&Masking>) {
    if let Some(hidden) = hide_role_passwords(&command.text) {
        command.text = Arc::from(hidden);
    }
    if let Some(m) = masking {
        scrub(m.mask().as_ref(), command);
    }
}

/// Strict audit: records that a forwarded command is about to run; the receiver answers once
/// the event is durable. Only commands that reach the target get one.
fn started(
    log: &SessionLog,
    p: &Pending,
    mask: Option<&dyn SessionMask>,
) -> Option<tokio::sync::oneshot::Receiver<Result<(), String>>> {
    let forwarded = matches!(
        p.kind,
        PendingKind::Simple | PendingKind::Execute | PendingKind::Function
    ) && p.rewrite.is_none();
    let command = p.command.as_ref().filter(|_| forwarded)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    log.append_durable(
        EventKind::CommandStarted {
            command: shown_command(command, mask),
            rule: p.outcome.rule.clone(),
            approval: p.outcome.approval.clone(),
        },
        Box::new(move |result| {
            let _ = tx.send(result);
        }),
    );
    Some(rx)
}

/// Waits for a strict command's event to be durable.
async fn durable(ack: tokio::sync::oneshot::Receiver<Result<(), String>>) -> Result<(), String> {
    match ack.await {
        Ok(result) => result,
        Err(_) => Err("the audit log writer stopped".into()),
    }
}

/// A command as approvers see it and the store keeps it.
fn shown_command(command: &Command, mask: Option<&dyn SessionMask>) -> Command {
    let mut shown = command.clone();
    if let Some(hidden) = hide_role_passwords(&shown.text) {
        shown.text = Arc::from(hidden);
    }
    if let Some(mask) = mask {
        scrub(mask, &mut shown);
    }
    shown
}

/// Replaces the string literal after a `PASSWORD` keyword (`CREATE ROLE … PASSWORD '…'`,
/// `ALTER USER … PASSWORD '…'`) with `'***'`. Returns None when there is none.
fn hide_role_passwords(text: &str) -> Option<String> {
    const WORD: &[u8] = b"password";
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i + WORD.len() <= bytes.len() {
        let at_word = bytes[i..i + WORD.len()].eq_ignore_ascii_case(WORD)
            && (i == 0 || !ident(bytes[i - 1]))
            && bytes.get(i + WORD.len()).is_none_or(|&b| !ident(b));
        if !at_word {
            i += 1;
            continue;
        }
        let mut j = i + WORD.len();
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        let escapes =
            j < bytes.len() && matches!(bytes[j], b'E' | b'e') && bytes.get(j + 1) == Some(&b'\'');
        if escapes {
            j += 1;
        }
        if bytes.get(j) != Some(&b'\'') {
            i = j.max(i + 1);
            continue;
        }
        // The literal runs to the next quote that is not doubled.
        let mut k = j + 1;
        loop {
            match bytes.get(k) {
                None => break,
                Some(b'\\') if escapes => k += 2,
                Some(b'\'') if bytes.get(k + 1) == Some(&b'\'') => k += 2,
                Some(b'\'') => break,
                Some(_) => k += 1,
            }
        }
        let o = out.get_or_insert_with(String::new);
        o.push_str(&text[copied..j]);
        o.push_str("'***'");
        copied = (k + 1).min(text.len());
        i = copied;
    }
    let mut o = out?;
    o.push_str(&text[copied..]);
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_passwords_are_hidden_from_the_record() {
        assert_eq!(
            hide_role_passwords("CREATE ROLE app LOGIN PASSWORD 'hunter''2' VALID UNTIL 'x'")
                .as_deref(),
            Some("CREATE ROLE app LOGIN PASSWORD '***' VALID UNTIL 'x'")
        );
        assert_eq!(
            hide_role_passwords("alter user a with password E'p\\'w'; alter user b password 'q'")
                .as_deref(),
            Some("alter user a with password E'***'; alter user b password '***'")
        );
        assert_eq!(hide_role_passwords("SELECT password_reset FROM t"), None);
        assert_eq!(hide_role_passwords("ALTER ROLE x PASSWORD NULL"), None);
        assert_eq!(
            hide_role_passwords("ALTER ROLE x PASSWORD 'unterminated").as_deref(),
            Some("ALTER ROLE x PASSWORD '***'")
        );
    }

    #[test]
    fn rows_from_tags() {
        assert_eq!(tag_rows("SELECT 5"), 5);
        assert_eq!(tag_rows("INSERT 0 3"), 3);
        assert_eq!(tag_rows("COPY 10"), 10);
        assert_eq!(tag_rows("CREATE TABLE"), 0);
        assert_eq!(tag_rows("BEGIN"), 0);
    }

    #[test]
    fn scan_streams_large_rows_and_keeps_small_ones_whole() {
        let mut big = BytesMut::new();
        codec::put_message(&mut big, b'D', |b| b.extend_from_slice(&vec![7u8; 100_000]));
        let mut partial = 0;
        let (fwd, end) = scan(
            &big[..50_000],
            &mut partial,
            1 << 20,
            |t| t == b'D',
            |_, _| Ok(Step::Continue),
        )
        .unwrap();
        assert!(end.is_none());
        assert_eq!(fwd, 50_000);
        assert_eq!(partial, big.len() - 50_000);
        let (fwd, _) = scan(
            &big[50_000..],
            &mut partial,
            1 << 20,
            |t| t == b'D',
            |_, _| Ok(Step::Continue),
        )
        .unwrap();
        assert_eq!(fwd, big.len() - 50_000);
        assert_eq!(partial, 0);

        let mut small = BytesMut::new();
        codec::put_message(&mut small, b'C', |b| b.extend_from_slice(b"SELECT 1\0"));
        let mut partial = 0;
        let (fwd, _) = scan(
            &small[..6],
            &mut partial,
            1 << 20,
            |t| t == b'D',
            |_, _| Ok(Step::Continue),
        )
        .unwrap();
        assert_eq!(fwd, 0);
    }

    #[test]
    fn scan_refuses_oversized_and_negative_lengths() {
        let mut partial = 0;
        assert!(
            scan(
                b"Q\x7f\xff\xff\xffxx",
                &mut partial,
                1024,
                |_| false,
                |_, _| Ok(Step::Continue)
            )
            .is_err()
        );
        assert!(
            scan(
                b"Q\xff\xff\xff\xf0xx",
                &mut partial,
                1024,
                |_| false,
                |_, _| Ok(Step::Continue)
            )
            .is_err()
        );
        assert!(
            scan(
                b"Q\x00\x00\x00\x00xx",
                &mut partial,
                1024,
                |_| false,
                |_, _| Ok(Step::Continue)
            )
            .is_err()
        );
    }
}
