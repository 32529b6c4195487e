//! File operations over SFTP and legacy scp: checked by the file rules and recorded.
//!
//! On an `sftp` subsystem channel both directions are framed as SFTP version 3 packets (what
//! OpenSSH speaks, with its `@openssh.com` extensions). Requests are tracked by id, handles are
//! mapped to the path they were opened with, READ and WRITE bytes are counted per handle, and
//! STATUS replies complete the operations: one `file_transfer` event per file when it is
//! closed, per directory listing, and per one-step operation (remove, rename, mkdir, rmdir,
//! setstat, links) when the target answers.
//!
//! A request the rules refuse is not forwarded: the client gets SSH_FX_PERMISSION_DENIED for
//! its id, injected between two of the target's packets. Forwarding is byte-exact and
//! streaming: at most one packet is held (only the header of WRITE and DATA packets, whose
//! payload passes through as it comes), and a packet larger than [`MAX_PACKET`] ends the
//! channel.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use russh::server::{self, Msg as ServerMsg};
use russh::{ChannelId, ChannelWriteHalf, client};
use tollgate_core::{
    CommandError, CommandStatus, EventKind, FileOp, Identity, Outcome, Policy, PolicyContext,
    Protocol, SessionLog, Verdict,
};

use crate::guard::Refused;
use crate::relay::Terms;

/// The largest SFTP packet (its length field) let through: OpenSSH's 256 KiB, plus room for
/// the headers of a full-size WRITE.
pub const MAX_PACKET: usize = 256 * 1024 + 1024;

/// Most requests tracked at once; past it new requests pass unrecorded.
const MAX_TRACKED: usize = 65_536;

const FXP_INIT: u8 = 1;
const FXP_VERSION: u8 = 2;
const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_FSETSTAT: u8 = 10;
const FXP_SETSTAT: u8 = 9;
const FXP_OPENDIR: u8 = 11;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_RENAME: u8 = 18;
const FXP_SYMLINK: u8 = 20;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;
const FXP_EXTENDED: u8 = 200;

const FX_OK: u32 = 0;
const FX_EOF: u32 = 1;
const FX_PERMISSION_DENIED: u32 = 3;
const FX_BAD_MESSAGE: u32 = 5;

const OPEN_READ: u32 = 0x01;
const OPEN_WRITE: u32 = 0x02;
const OPEN_APPEND: u32 = 0x04;
const OPEN_CREAT: u32 = 0x08;
const OPEN_TRUNC: u32 = 0x10;

/// A stream that is not SFTP as the gateway reads it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A packet's length is zero or over [`MAX_PACKET`].
    #[error("SFTP packet of {0} bytes refused (at most {MAX_PACKET})")]
    Length(usize),
    /// A request the gateway must check could not be read (no request id).
    #[error("malformed SFTP request of type {0}")]
    Malformed(u8),
}

/// Which way a stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Client,
    Target,
}

/// Where one direction stands between packets.
#[derive(Debug, Default)]
struct Framer {
    /// Bytes of the current packet held back until it is inspected.
    head: Vec<u8>,
    /// Bytes of the current packet still to pass through untouched.
    through: usize,
}

impl Framer {
    fn at_boundary(&self) -> bool {
        self.head.is_empty() && self.through == 0
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// How many bytes of a packet to hold before inspecting it, given what is held, and whether
/// that number is final. WRITE (from the client) and DATA (from the target) are inspected from
/// their headers; their payload streams. Everything else is held whole.
fn want(head: &[u8], streamed: u8) -> Result<(usize, bool), FrameError> {
    let Some(len) = be32(head, 0) else {
        return Ok((4, false));
    };
    let len = len as usize;
    if len == 0 || len > MAX_PACKET {
        return Err(FrameError::Length(len));
    }
    let total = 4 + len;
    let Some(&kind) = head.get(4) else {
        return Ok((5, false));
    };
    if kind != streamed {
        return Ok((total, true));
    }
    // length, type, id, then the handle (WRITE) or the data (DATA) as a string.
    if head.len() < 13 || kind == FXP_DATA {
        return Ok((total.min(13), kind == FXP_DATA || total <= 13));
    }
    let handle = be32(head, 9).unwrap_or(0) as usize;
    Ok((
        total.min(13usize.saturating_add(handle).saturating_add(12)),
        true,
    ))
}

/// A reader over a packet's fields.
struct Fields<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    /// The fields after the type byte.
    fn new(packet: &'a [u8]) -> Self {
        Self { b: packet, at: 5 }
    }
    fn u32(&mut self) -> Option<u32> {
        let v = be32(self.b, self.at)?;
        self.at += 4;
        Some(v)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.at.checked_add(n)?;
        if end > self.b.len() {
            return None;
        }
        self.at = end;
        Some(())
    }
    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        let start = self.at;
        self.skip(n)?;
        Some(&self.b[start..self.at])
    }
    fn text(&mut self) -> Option<String> {
        self.string()
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }
}

/// The pieces one call forwards: runs of the input chunk (sliced, not copied) and owned pieces
/// (held headers, injected replies), in order.
struct Out<'a> {
    src: &'a Bytes,
    run: Option<(usize, usize)>,
    pieces: Vec<Bytes>,
}

impl<'a> Out<'a> {
    fn new(src: &'a Bytes) -> Self {
        Self {
            src,
            run: None,
            pieces: Vec::new(),
        }
    }
    fn range(&mut self, start: usize, end: usize) {
        if start == end {
            return;
        }
        match self.run {
            Some((s, e)) if e == start => self.run = Some((s, end)),
            _ => {
                self.flush();
                self.run = Some((start, end));
            }
        }
    }
    fn owned(&mut self, piece: Bytes) {
        self.flush();
        if !piece.is_empty() {
            self.pieces.push(piece);
        }
    }
    fn flush(&mut self) {
        if let Some((s, e)) = self.run.take() {
            self.pieces.push(self.src.slice(s..e));
        }
    }
    fn finish(mut self) -> Vec<Bytes> {
        self.flush();
        self.pieces
    }
}

/// A forwarded request whose answer is awaited.
#[derive(Debug)]
enum Request {
    /// OPEN or OPENDIR: a HANDLE opens the file.
    Open {
        op: FileOp,
        path: String,
        rule: Option<String>,
    },
    Read {
        handle: Vec<u8>,
    },
    Write {
        handle: Vec<u8>,
    },
    Close {
        handle: Vec<u8>,
    },
    /// Remove, rename, mkdir, rmdir, setstat, links: recorded when answered.
    OneStep {
        op: FileOp,
        path: String,
        to: Option<String>,
        rule: Option<String>,
    },
}

/// A file or directory the target opened.
#[derive(Debug)]
struct Open {
    op: FileOp,
    path: String,
    rule: Option<String>,
    bytes: u64,
    started: Instant,
    /// The first error the target reported for a READ or WRITE on it.
    error: Option<CommandError>,
}

/// What the gateway knows of one SFTP stream pair: the framers, the requests in flight, the
/// open handles, and the replies waiting to be sent to the client.
pub(crate) struct Inspector {
    policy: Arc<dyn Policy>,
    identity: Identity,
    connection: String,
    client: Framer,
    target: Framer,
    requests: HashMap<u32, (Request, Instant)>,
    handles: HashMap<Vec<u8>, Open>,
    /// Replies of the gateway's own, sent to the client at the next packet boundary.
    replies: VecDeque<Bytes>,
    /// The target-to-client side is writing (or the client side writes replies).
    writing: bool,
    /// Events to record.
    events: Vec<EventKind>,
    /// Operations allowed since the last call, to record as started before they are forwarded
    /// (strict audit): the operation, its paths and the rule.
    starts: Vec<(FileOp, String, Option<String>, Option<String>)>,
    broken: bool,
}

/// The strongest of two verdicts (deny, then approve, then allow; the first of equals).
fn stronger(a: Verdict, b: Verdict) -> Verdict {
    let rank = |v: &Verdict| match v {
        Verdict::Allow { .. } => 0,
        Verdict::Approve { .. } => 1,
        Verdict::Deny { .. } => 2,
    };
    if rank(&b) > rank(&a) { b } else { a }
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Checks a file operation on each of `paths`: the allow rule that matched, or the refusal.
pub(crate) fn check(
    policy: &dyn Policy,
    identity: &Identity,
    connection: &str,
    op: FileOp,
    paths: &[&str],
) -> Result<Option<String>, Refused> {
    let ctx = PolicyContext {
        identity,
        connection,
        protocol: Protocol::Ssh,
    };
    let verdict = paths
        .iter()
        .map(|p| policy.check_file(&ctx, op, p))
        .reduce(stronger)
        .unwrap_or(Verdict::Allow { rule: None });
    match verdict {
        Verdict::Allow { rule } => Ok(rule),
        Verdict::Deny { rule, message } => Err(Refused {
            told: format!("tollgate: {}", one_line(&message)),
            status: CommandStatus::Denied,
            rule,
            approval: None,
        }),
        Verdict::Approve { rule, message, .. } => Err(Refused {
            told: format!(
                "tollgate: {}. Approvals are not available for file operations, so it was not run.",
                one_line(&message)
            ),
            status: CommandStatus::ApprovalRequired,
            rule,
            approval: None,
        }),
    }
}

fn status_packet(id: u32, code: u32, message: &str) -> Bytes {
    let len = 1 + 4 + 4 + 4 + message.len() + 4;
    let mut p = Vec::with_capacity(4 + len);
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.push(FXP_STATUS);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&(message.len() as u32).to_be_bytes());
    p.extend_from_slice(message.as_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    Bytes::from(p)
}

fn status_name(code: u32) -> String {
    match code {
        0 => "ok".into(),
        1 => "eof".into(),
        2 => "no_such_file".into(),
        3 => "permission_denied".into(),
        4 => "failure".into(),
        5 => "bad_message".into(),
        6 => "no_connection".into(),
        7 => "connection_lost".into(),
        8 => "op_unsupported".into(),
        n => n.to_string(),
    }
}

fn transfer(
    op: FileOp,
    path: String,
    to: Option<String>,
    bytes: u64,
    outcome: Outcome,
) -> EventKind {
    EventKind::FileTransfer {
        via: "sftp".into(),
        op,
        path,
        to,
        bytes,
        outcome,
    }
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

impl Inspector {
    /// An inspector checking with `policy` for `identity` on `connection`.
    pub(crate) fn new(policy: Arc<dyn Policy>, identity: Identity, connection: String) -> Self {
        Self {
            policy,
            identity,
            connection,
            client: Framer::default(),
            target: Framer::default(),
            requests: HashMap::new(),
            handles: HashMap::new(),
            replies: VecDeque::new(),
            writing: false,
            events: Vec::new(),
            starts: Vec::new(),
            broken: false,
        }
    }

    /// Client data: what to forward to the target. Refused requests are left out and their
    /// replies queued (see [`Inspector::take_idle_replies`]).
    pub(crate) fn on_client(&mut self, data: Bytes) -> Result<Vec<Bytes>, FrameError> {
        self.feed(Dir::Client, data)
    }

    /// Target data: what to forward to the client, with queued replies between packets. The
    /// caller writes it and then calls [`Inspector::written`].
    pub(crate) fn on_target(&mut self, data: Bytes) -> Result<Vec<Bytes>, FrameError> {
        let out = self.feed(Dir::Target, data)?;
        self.writing = !out.is_empty();
        Ok(out)
    }

    /// The writer is done with what it was given: more queued replies to write now (the
    /// target's stream is between packets), or nothing (and the stream is free again).
    pub(crate) fn written(&mut self) -> Vec<Bytes> {
        if self.target.at_boundary() && !self.replies.is_empty() {
            self.writing = true;
            return self.replies.drain(..).collect();
        }
        self.writing = false;
        Vec::new()
    }

    /// Queued replies the client side may write itself: when the target's stream is between
    /// packets and nobody writes it. The caller writes them and then calls
    /// [`Inspector::written`].
    pub(crate) fn take_idle_replies(&mut self) -> Vec<Bytes> {
        if self.writing || !self.target.at_boundary() || self.replies.is_empty() {
            return Vec::new();
        }
        self.writing = true;
        self.replies.drain(..).collect()
    }

    /// The events to record since the last call.
    pub(crate) fn take_events(&mut self) -> Vec<EventKind> {
        std::mem::take(&mut self.events)
    }

    /// The operations allowed since the last call (path, second path, rule).
    pub(crate) fn take_starts(&mut self) -> Vec<(FileOp, String, Option<String>, Option<String>)> {
        std::mem::take(&mut self.starts)
    }

    /// The channel ended: files still open and operations not answered are recorded as
    /// interrupted.
    pub(crate) fn finish(&mut self) {
        let interrupted = |started: Instant, rule: Option<String>| Outcome {
            status: CommandStatus::Interrupted,
            duration_us: micros(started),
            rule,
            ..Outcome::default()
        };
        let mut requests: Vec<_> = self.requests.drain().collect();
        requests.sort_by_key(|(id, _)| *id);
        for (_, (request, started)) in requests {
            match request {
                Request::Open { op, path, rule } => {
                    self.events
                        .push(transfer(op, path, None, 0, interrupted(started, rule)))
                }
                Request::OneStep { op, path, to, rule } => {
                    self.events
                        .push(transfer(op, path, to, 0, interrupted(started, rule)))
                }
                _ => {}
            }
        }
        let mut open: Vec<Open> = self.handles.drain().map(|(_, o)| o).collect();
        open.sort_by_key(|o| o.started);
        for o in open {
            self.events.push(transfer(
                o.op,
                o.path,
                None,
                o.bytes,
                interrupted(o.started, o.rule),
            ));
        }
    }

    fn feed(&mut self, dir: Dir, data: Bytes) -> Result<Vec<Bytes>, FrameError> {
        if self.broken {
            return Err(FrameError::Length(0));
        }
        let mut framer = std::mem::take(match dir {
            Dir::Client => &mut self.client,
            Dir::Target => &mut self.target,
        });
        let result = self.frame(dir, &mut framer, &data);
        match dir {
            Dir::Client => self.client = framer,
            Dir::Target => self.target = framer,
        }
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn frame(&mut self, dir: Dir, fr: &mut Framer, data: &Bytes) -> Result<Vec<Bytes>, FrameError> {
        let streamed = match dir {
            Dir::Client => FXP_WRITE,
            Dir::Target => FXP_DATA,
        };
        let mut out = Out::new(data);
        if fr.at_boundary() {
            self.boundary(dir, &mut out);
        }
        let len = data.len();
        let mut pos = 0;
        'chunk: while pos < len {
            if fr.through > 0 {
                let n = fr.through.min(len - pos);
                out.range(pos, pos + n);
                pos += n;
                fr.through -= n;
                if fr.through == 0 {
                    self.boundary(dir, &mut out);
                }
                continue;
            }
            // Where the held bytes start in this chunk, if they all come from it.
            let here = fr.head.is_empty().then_some(pos);
            loop {
                let (w, done) = want(&fr.head, streamed)?;
                if fr.head.len() < w {
                    if pos == len {
                        break 'chunk;
                    }
                    let n = (w - fr.head.len()).min(len - pos);
                    fr.head.extend_from_slice(&data[pos..pos + n]);
                    pos += n;
                    continue;
                }
                if done {
                    break;
                }
            }
            let total = be32(&fr.head, 0).map_or(0, |l| l as usize + 4);
            let forward = match dir {
                Dir::Client => self.request(&fr.head)?,
                Dir::Target => {
                    self.reply(&fr.head);
                    true
                }
            };
            let held = std::mem::take(&mut fr.head);
            fr.through = total.saturating_sub(held.len());
            if forward {
                match here {
                    Some(start) => out.range(start, pos),
                    None => out.owned(Bytes::from(held)),
                }
            }
            if fr.through == 0 {
                self.boundary(dir, &mut out);
            }
        }
        Ok(out.finish())
    }

    /// Between two packets of the target's stream: the gateway's replies go out here.
    fn boundary(&mut self, dir: Dir, out: &mut Out<'_>) {
        if dir == Dir::Target {
            while let Some(reply) = self.replies.pop_front() {
                out.owned(reply);
            }
        }
    }

    fn track(&mut self, id: u32, request: Request) {
        if self.requests.len() < MAX_TRACKED || self.requests.contains_key(&id) {
            self.requests.insert(id, (request, Instant::now()));
        }
    }

    /// Checks an operation; a refused one is answered and recorded here.
    fn allowed(
        &mut self,
        id: u32,
        op: FileOp,
        path: &str,
        to: Option<&str>,
    ) -> Result<Option<String>, ()> {
        let mut paths = vec![path];
        paths.extend(to);
        let verdict = check(
            self.policy.as_ref(),
            &self.identity,
            &self.connection,
            op,
            &paths,
        );
        self.settle(id, op, path, to, verdict)
    }

    fn settle(
        &mut self,
        id: u32,
        op: FileOp,
        path: &str,
        to: Option<&str>,
        verdict: Result<Option<String>, Refused>,
    ) -> Result<Option<String>, ()> {
        match verdict {
            Ok(rule) => {
                self.starts
                    .push((op, path.to_string(), to.map(str::to_string), rule.clone()));
                Ok(rule)
            }
            Err(refused) => {
                tracing::info!(connection = %self.connection, rule = %refused.rule, op = op.name(), "sftp operation refused");
                self.replies
                    .push_back(status_packet(id, FX_PERMISSION_DENIED, &refused.told));
                self.events.push(transfer(
                    op,
                    path.to_string(),
                    to.map(str::to_string),
                    0,
                    refused.outcome(),
                ));
                Err(())
            }
        }
    }

    /// A client request: `true` to forward it.
    fn request(&mut self, p: &[u8]) -> Result<bool, FrameError> {
        let kind = p.get(4).copied().unwrap_or(0);
        if kind == FXP_INIT {
            return Ok(true);
        }
        let mut f = Fields::new(p);
        let Some(id) = f.u32() else {
            return match kind {
                FXP_OPEN | FXP_OPENDIR | FXP_REMOVE | FXP_MKDIR | FXP_RMDIR | FXP_SETSTAT
                | FXP_FSETSTAT | FXP_RENAME | FXP_SYMLINK | FXP_EXTENDED => {
                    Err(FrameError::Malformed(kind))
                }
                _ => Ok(true),
            };
        };
        // A request the gateway must check but cannot read is refused.
        let bad = |this: &mut Self| {
            this.replies.push_back(status_packet(
                id,
                FX_BAD_MESSAGE,
                "tollgate: malformed request",
            ));
            Ok(false)
        };
        match kind {
            FXP_OPEN => {
                let (Some(path), Some(flags)) = (f.text(), f.u32()) else {
                    return bad(self);
                };
                let writes = flags & (OPEN_WRITE | OPEN_APPEND | OPEN_CREAT | OPEN_TRUNC) != 0;
                let op = if writes { FileOp::Write } else { FileOp::Read };
                let mut verdict = check(
                    self.policy.as_ref(),
                    &self.identity,
                    &self.connection,
                    op,
                    &[&path],
                );
                if writes && flags & OPEN_READ != 0 && verdict.is_ok() {
                    // Opened for both: the read rules apply too.
                    if let Err(r) = check(
                        self.policy.as_ref(),
                        &self.identity,
                        &self.connection,
                        FileOp::Read,
                        &[&path],
                    ) {
                        verdict = Err(r);
                    }
                }
                let Ok(rule) = self.settle(id, op, &path, None, verdict) else {
                    return Ok(false);
                };
                self.track(id, Request::Open { op, path, rule });
            }
            FXP_OPENDIR => {
                let Some(path) = f.text() else {
                    return bad(self);
                };
                let Ok(rule) = self.allowed(id, FileOp::List, &path, None) else {
                    return Ok(false);
                };
                self.track(
                    id,
                    Request::Open {
                        op: FileOp::List,
                        path,
                        rule,
                    },
                );
            }
            FXP_READ | FXP_WRITE | FXP_CLOSE => {
                let Some(handle) = f.string() else {
                    return Ok(true);
                };
                let handle = handle.to_vec();
                if !self.handles.contains_key(&handle) {
                    return Ok(true);
                }
                let request = match kind {
                    FXP_READ => Request::Read { handle },
                    FXP_WRITE => {
                        if f.skip(8).is_some()
                            && let (Some(n), Some(open)) = (f.u32(), self.handles.get_mut(&handle))
                        {
                            open.bytes += u64::from(n);
                        }
                        Request::Write { handle }
                    }
                    _ => Request::Close { handle },
                };
                self.track(id, request);
            }
            FXP_REMOVE | FXP_MKDIR | FXP_RMDIR | FXP_SETSTAT => {
                let Some(path) = f.text() else {
                    return bad(self);
                };
                let op = match kind {
                    FXP_REMOVE => FileOp::Remove,
                    FXP_MKDIR => FileOp::Mkdir,
                    FXP_RMDIR => FileOp::Rmdir,
                    _ => FileOp::Setstat,
                };
                return Ok(self.one_step(id, op, path, None));
            }
            FXP_FSETSTAT => {
                let Some(handle) = f.string() else {
                    return bad(self);
                };
                let Some(path) = self.handles.get(handle).map(|o| o.path.clone()) else {
                    return Ok(true);
                };
                return Ok(self.one_step(id, FileOp::Setstat, path, None));
            }
            FXP_RENAME | FXP_SYMLINK => {
                let (Some(from), Some(to)) = (f.text(), f.text()) else {
                    return bad(self);
                };
                let op = if kind == FXP_RENAME {
                    FileOp::Rename
                } else {
                    FileOp::Link
                };
                return Ok(self.one_step(id, op, from, Some(to)));
            }
            FXP_EXTENDED => {
                let Some(name) = f.string() else {
                    return bad(self);
                };
                let op = match name {
                    b"posix-rename@openssh.com" => FileOp::Rename,
                    b"hardlink@openssh.com" => FileOp::Link,
                    b"lsetstat@openssh.com" => FileOp::Setstat,
                    // Others name no path the rules apply to, or only handles already checked.
                    _ => return Ok(true),
                };
                let Some(path) = f.text() else {
                    return bad(self);
                };
                let to = if op == FileOp::Setstat {
                    None
                } else {
                    match f.text() {
                        Some(t) => Some(t),
                        None => return bad(self),
                    }
                };
                return Ok(self.one_step(id, op, path, to));
            }
            _ => {}
        }
        Ok(true)
    }

    fn one_step(&mut self, id: u32, op: FileOp, path: String, to: Option<String>) -> bool {
        let Ok(rule) = self.allowed(id, op, &path, to.as_deref()) else {
            return false;
        };
        self.track(id, Request::OneStep { op, path, to, rule });
        true
    }

    /// A reply of the target.
    fn reply(&mut self, p: &[u8]) {
        let kind = p.get(4).copied().unwrap_or(0);
        if kind == FXP_VERSION {
            return;
        }
        let mut f = Fields::new(p);
        let Some(id) = f.u32() else {
            return;
        };
        let Some((request, started)) = self.requests.remove(&id) else {
            return;
        };
        let status = if kind == FXP_STATUS {
            f.u32().map(|code| {
                let message = f.text().unwrap_or_default();
                (code, message)
            })
        } else {
            None
        };
        let error = status.as_ref().and_then(|(code, message)| {
            (*code != FX_OK && *code != FX_EOF).then(|| CommandError {
                code: status_name(*code),
                message: one_line(message),
            })
        });
        match request {
            Request::Open { op, path, rule } => {
                let handle = (kind == FXP_HANDLE).then(|| f.string()).flatten();
                match handle {
                    Some(h) => {
                        if self.handles.len() < MAX_TRACKED {
                            self.handles.insert(
                                h.to_vec(),
                                Open {
                                    op,
                                    path,
                                    rule,
                                    bytes: 0,
                                    started,
                                    error: None,
                                },
                            );
                        }
                    }
                    None => self.events.push(transfer(
                        op,
                        path,
                        None,
                        0,
                        Outcome {
                            status: CommandStatus::Error,
                            duration_us: micros(started),
                            rule,
                            error: Some(error.unwrap_or_else(|| CommandError {
                                code: "unexpected_reply".into(),
                                message: format!("reply of type {kind} to an open"),
                            })),
                            ..Outcome::default()
                        },
                    )),
                }
            }
            Request::Read { handle } => {
                if let Some(open) = self.handles.get_mut(&handle) {
                    if kind == FXP_DATA {
                        open.bytes += u64::from(be32(p, 9).unwrap_or(0));
                    } else if open.error.is_none() {
                        open.error = error;
                    }
                }
            }
            Request::Write { handle } => {
                if let Some(open) = self.handles.get_mut(&handle)
                    && open.error.is_none()
                {
                    open.error = error;
                }
            }
            Request::Close { handle } => {
                if let Some(open) = self.handles.remove(&handle) {
                    let error = open.error.or(error);
                    self.events.push(transfer(
                        open.op,
                        open.path,
                        None,
                        open.bytes,
                        Outcome {
                            status: if error.is_some() {
                                CommandStatus::Error
                            } else {
                                CommandStatus::Ok
                            },
                            duration_us: micros(open.started),
                            rule: open.rule,
                            error,
                            ..Outcome::default()
                        },
                    ));
                }
            }
            Request::OneStep { op, path, to, rule } => self.events.push(transfer(
                op,
                path,
                to,
                0,
                Outcome {
                    status: if error.is_some() {
                        CommandStatus::Error
                    } else {
                        CommandStatus::Ok
                    },
                    duration_us: micros(started),
                    rule,
                    error,
                    ..Outcome::default()
                },
            )),
        }
    }
}

/// The inspector of one `sftp` channel, shared by the relay's two directions.
pub(crate) struct SftpChannel {
    inner: Mutex<Inspector>,
    /// Held by whoever writes to the client (the target's packets or the gateway's replies),
    /// so a reply never lands inside one of the target's packets.
    writer: tokio::sync::Mutex<()>,
    log: SessionLog,
    connection: String,
    /// Strict audit: each allowed operation is durable as started before it is forwarded.
    strict: bool,
}

impl SftpChannel {
    /// For a channel of the session `terms` describe.
    pub(crate) fn new(terms: &Terms) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inspector::new(
                Arc::clone(&terms.policy),
                terms.identity.clone(),
                terms.connection.clone(),
            )),
            writer: tokio::sync::Mutex::new(()),
            log: terms.log.clone(),
            connection: terms.connection.clone(),
            strict: terms.strict_audit,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inspector> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Makes each allowed operation durable as started (`command_started`, step `subsystem`,
    /// text `sftp <op> <path>`), in order; the first that cannot be recorded stops the rest.
    async fn record_starts(
        &self,
        starts: Vec<(FileOp, String, Option<String>, Option<String>)>,
    ) -> Result<(), String> {
        for (op, path, to, rule) in starts {
            let mut text = format!("sftp {} {path}", op.name());
            if let Some(to) = to {
                text.push_str(" -> ");
                text.push_str(&to);
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.log.append_durable(
                EventKind::CommandStarted {
                    command: tollgate_core::Command {
                        step: tollgate_core::ProtocolStep::Subsystem,
                        text: text.into(),
                        params: Vec::new(),
                        statement: None,
                    },
                    rule,
                    approval: None,
                },
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
            rx.await
                .unwrap_or_else(|_| Err("the audit log stopped".into()))?;
        }
        Ok(())
    }

    /// Records that the channel was closed because `from` did not speak SFTP as expected.
    fn refuse_stream(&self, from: &str, e: &FrameError) {
        self.log.append(EventKind::Refusal(
            tollgate_core::Refusal::new(
                tollgate_core::RefusalCode::ProtocolViolation,
                format!(
                    "the sftp channel was closed: what {from} sent is not SFTP the gateway can read"
                ),
            )
            .with_detail(e.to_string()),
        ));
    }

    fn record(&self, events: Vec<EventKind>) {
        for e in events {
            self.log.append(e);
        }
    }

    /// Forwards client data to the target, leaving out refused requests, whose replies go to
    /// the client. A stream that is not SFTP ends the channel.
    pub(crate) async fn on_client(
        &self,
        data: Bytes,
        up_w: &ChannelWriteHalf<client::Msg>,
        handle: &server::Handle,
        id: ChannelId,
    ) -> Result<(), russh::Error> {
        let (pieces, events, starts) = {
            let mut i = self.lock();
            let pieces = i.on_client(data);
            (pieces, i.take_events(), i.take_starts())
        };
        self.record(events);
        if self.strict
            && let Err(reason) = self.record_starts(starts).await
        {
            // Fail closed: nothing of this chunk reaches the target.
            tracing::error!(connection = %self.connection, error = %reason, "sftp operation not recorded; channel closed");
            self.log.append(EventKind::Refusal(
                tollgate_core::Refusal::new(
                    tollgate_core::RefusalCode::ProtocolViolation,
                    "the sftp channel was closed: the audit log cannot record its operations",
                )
                .with_detail(reason),
            ));
            let _ = up_w.close().await;
            let _ = handle.close(id).await;
            return Err(russh::Error::WrongChannel);
        }
        let pieces = match pieces {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(connection = %self.connection, error = %e, "sftp stream from the client refused; channel closed");
                self.refuse_stream("the client", &e);
                let _ = up_w.close().await;
                let _ = handle.close(id).await;
                return Err(russh::Error::PacketSize(MAX_PACKET));
            }
        };
        for piece in pieces {
            up_w.data_bytes(piece).await?;
        }
        if self.lock().replies.is_empty() {
            return Ok(());
        }
        let _writer = self.writer.lock().await;
        let mut replies = self.lock().take_idle_replies();
        while !replies.is_empty() {
            for reply in replies {
                if handle.data(id, reply).await.is_err() {
                    return Err(russh::Error::WrongChannel);
                }
            }
            replies = self.lock().written();
        }
        Ok(())
    }

    /// Forwards target data to the client, with the gateway's replies between packets.
    pub(crate) async fn on_target(
        &self,
        data: Bytes,
        down_w: &ChannelWriteHalf<ServerMsg>,
    ) -> Result<(), russh::Error> {
        let _writer = self.writer.lock().await;
        let (pieces, events) = {
            let mut i = self.lock();
            let pieces = i.on_target(data);
            (pieces, i.take_events())
        };
        self.record(events);
        let mut pieces = match pieces {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(connection = %self.connection, error = %e, "sftp stream from the target refused; channel closed");
                self.refuse_stream("the target", &e);
                let _ = down_w.close().await;
                return Err(russh::Error::PacketSize(MAX_PACKET));
            }
        };
        while !pieces.is_empty() {
            for piece in pieces {
                down_w.data_bytes(piece).await?;
            }
            pieces = self.lock().written();
        }
        Ok(())
    }

    /// The channel ended: records what was still open.
    pub(crate) fn finish(&self) {
        let events = {
            let mut i = self.lock();
            i.finish();
            i.take_events()
        };
        self.record(events);
    }
}

impl Drop for SftpChannel {
    /// A relay stopped without finishing (its task aborted) still records what was open.
    fn drop(&mut self) {
        self.finish();
    }
}

/// The rule name recorded for a legacy scp command whose paths the gateway cannot read.
pub(crate) const SCP_UNREADABLE_RULE: &str = "scp-paths-unreadable";

/// Legacy scp (`scp -O`) runs `scp -t DEST` or `scp -f SRC…` on the target: the paths are
/// checked as a write on DEST or a read of each SRC. A refusal is recorded as a
/// `file_transfer` event and returned for the relay to refuse the exec. A scp command whose
/// paths hold wildcards, expansions or shell operators is refused: what the target's shell
/// would make of them cannot be checked.
pub(crate) fn check_scp(terms: &Terms, line: &str) -> Option<Refused> {
    let (op, paths) = match scp_paths(line) {
        Scp::Not => return None,
        Scp::Paths(op, paths) => (op, paths),
        Scp::Unreadable(op) => {
            let refused = Refused {
                told: "tollgate: the paths of this scp command cannot be checked (wildcards, expansions or shell operators); name the files plainly, or use SFTP (scp without -O). It was not run.".into(),
                status: CommandStatus::Denied,
                rule: SCP_UNREADABLE_RULE.into(),
                approval: None,
            };
            terms.log.append(EventKind::FileTransfer {
                via: "scp".into(),
                op,
                path: line.to_string(),
                to: None,
                bytes: 0,
                outcome: refused.outcome(),
            });
            return Some(refused);
        }
    };
    for path in &paths {
        if let Err(refused) = check(
            terms.policy.as_ref(),
            &terms.identity,
            &terms.connection,
            op,
            &[path],
        ) {
            tracing::info!(connection = %terms.connection, rule = %refused.rule, "scp refused");
            terms.log.append(EventKind::FileTransfer {
                via: "scp".into(),
                op,
                path: path.clone(),
                to: None,
                bytes: 0,
                outcome: refused.outcome(),
            });
            return Some(refused);
        }
    }
    None
}

/// What a command line is to the scp check.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scp {
    /// Not a legacy scp transfer.
    Not,
    /// `scp -t` (write) or `scp -f` (read) and its paths.
    Paths(FileOp, Vec<String>),
    /// A scp transfer whose paths cannot be read plainly.
    Unreadable(FileOp),
}

/// The operation and paths of a remote scp command line, when it is one.
pub(crate) fn scp_paths(line: &str) -> Scp {
    let Some(words) = shell_words(line) else {
        // Not plain words: still a scp transfer, by its first word and options?
        let mut plain = line.split_whitespace();
        let first = plain.next().unwrap_or("").trim_matches(['\'', '"']);
        if first != "scp" && !first.ends_with("/scp") {
            return Scp::Not;
        }
        let op = plain
            .take_while(|w| w.starts_with('-') && *w != "--")
            .find_map(|w| {
                if w.contains('t') {
                    Some(FileOp::Write)
                } else if w.contains('f') {
                    Some(FileOp::Read)
                } else {
                    None
                }
            });
        return op.map_or(Scp::Not, Scp::Unreadable);
    };
    let Some(program) = words.first() else {
        return Scp::Not;
    };
    if program != "scp" && !program.ends_with("/scp") {
        return Scp::Not;
    }
    let mut op = None;
    let mut paths = Vec::new();
    let mut options = true;
    for w in &words[1..] {
        if options && w == "--" {
            options = false;
        } else if options && w.len() > 1 && w.starts_with('-') {
            for c in w.chars().skip(1) {
                match c {
                    't' => op = Some(FileOp::Write),
                    'f' => op = Some(FileOp::Read),
                    _ => {}
                }
            }
        } else {
            options = false;
            paths.push(w.clone());
        }
    }
    match op {
        None => Scp::Not,
        Some(op) if paths.is_empty() => Scp::Unreadable(op),
        Some(op) => Scp::Paths(op, paths),
    }
}

/// Splits a command line into words as a POSIX shell would for plain words, quotes and
/// backslashes; `None` when it holds anything else (operators, expansions), which the shell
/// rules see instead.
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => {
                            let n = chars.next()?;
                            if !matches!(n, '"' | '\\' | '$' | '`') {
                                w.push('\\');
                            }
                            w.push(n);
                        }
                        '$' | '`' => return None,
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            ';' | '&' | '|' | '<' | '>' | '(' | ')' | '$' | '`' | '\n' | '*' | '?' | '[' | '{' => {
                return None;
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Some(words)
}

/// Runs the SFTP inspector over `data` as the fuzz target does: the input is a sequence of
/// chunks (a byte: direction in bit 0, length − 1 in the others; then the chunk), with a
/// policy that refuses paths containing `secret`. Checks that what passes is byte-exact and
/// that the gateway's replies go out only between the target's packets.
#[doc(hidden)]
pub fn fuzz_sftp(data: &[u8]) -> Result<(), String> {
    struct Fuzz;
    impl Policy for Fuzz {
        fn check(&self, _: &PolicyContext<'_>, _: &str) -> Verdict {
            Verdict::Allow { rule: None }
        }
        fn check_opaque(&self, _: &PolicyContext<'_>, _: &str) -> Verdict {
            Verdict::Allow { rule: None }
        }
        fn check_file(&self, _: &PolicyContext<'_>, op: FileOp, path: &str) -> Verdict {
            if path.contains("secret") {
                Verdict::Deny {
                    rule: "fuzz".into(),
                    message: format!("no {}", op.name()),
                }
            } else {
                Verdict::Allow { rule: None }
            }
        }
    }
    let identity = Identity {
        subject: "fuzz".into(),
        via: tollgate_core::AuthMethod::ApiKey,
        key_id: None,
        groups: Vec::new(),
        admin: false,
        expires_at: None,
        kind: None,
        issuer: None,
        client_id: None,
        token_id: None,
        issued_at: None,
    };
    let mut ins = Inspector::new(Arc::new(Fuzz), identity, "fuzz".into());
    let mut client_in = Vec::new();
    let mut sent_target = Vec::new();
    let mut target_in = Vec::new();
    let mut to_client = Vec::new();
    // Every reply the gateway queued, in order.
    let mut queued: VecDeque<Vec<u8>> = VecDeque::new();
    let mut rest = data;
    let mut client_ok = true;
    let mut target_ok = true;
    while let Some((&b, tail)) = rest.split_first() {
        let n = (usize::from(b >> 1) + 1).min(tail.len());
        let chunk = Bytes::copy_from_slice(&tail[..n]);
        rest = &tail[n..];
        if b & 1 == 0 {
            if !client_ok {
                continue;
            }
            client_in.extend_from_slice(&chunk);
            let before = ins.replies.len();
            match ins.on_client(chunk) {
                Ok(pieces) => pieces.iter().for_each(|p| sent_target.extend_from_slice(p)),
                Err(_) => client_ok = false,
            }
            queued.extend(ins.replies.iter().skip(before).map(|r| r.to_vec()));
            let mut replies = ins.take_idle_replies();
            while !replies.is_empty() {
                replies.iter().for_each(|r| to_client.extend_from_slice(r));
                replies = ins.written();
            }
        } else {
            if !target_ok {
                continue;
            }
            target_in.extend_from_slice(&chunk);
            let mut pieces = match ins.on_target(chunk) {
                Ok(pieces) => pieces,
                Err(_) => {
                    target_ok = false;
                    Vec::new()
                }
            };
            while !pieces.is_empty() {
                pieces.iter().for_each(|p| to_client.extend_from_slice(p));
                pieces = ins.written();
            }
        }
        let _ = ins.take_events();
    }
    ins.finish();
    let _ = ins.take_events();
    if queued.is_empty() && !client_in.starts_with(&sent_target) {
        return Err("the client's bytes were not forwarded as they came".into());
    }
    if !target_ok {
        return Ok(());
    }
    // Walk what the client got packet by packet: without the gateway's replies it is exactly
    // what the target sent (a reply inside a target packet would break the walk).
    let mut stripped = Vec::new();
    let mut at = 0;
    while at < to_client.len() {
        let Some(len) = be32(&to_client, at) else {
            stripped.extend_from_slice(&to_client[at..]);
            break;
        };
        let end = (at + 4).saturating_add(len as usize).min(to_client.len());
        let packet = &to_client[at..end];
        if queued.front().is_some_and(|q| q == packet) {
            queued.pop_front();
        } else {
            stripped.extend_from_slice(packet);
        }
        at = end;
    }
    if stripped != target_in[..stripped.len().min(target_in.len())] {
        return Err("the target's bytes were not forwarded as they came".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DenySecret;
    impl Policy for DenySecret {
        fn check(&self, _: &PolicyContext<'_>, _: &str) -> Verdict {
            Verdict::Allow { rule: None }
        }
        fn check_opaque(&self, _: &PolicyContext<'_>, _: &str) -> Verdict {
            Verdict::Allow { rule: None }
        }
        fn check_file(&self, _: &PolicyContext<'_>, op: FileOp, path: &str) -> Verdict {
            if path.contains("secret") || (op == FileOp::Write && path.starts_with("/ro/")) {
                Verdict::Deny {
                    rule: "no-secrets".into(),
                    message: format!("blocked ({} {path})", op.name()),
                }
            } else if path.starts_with("/held/") {
                Verdict::Approve {
                    rule: "held".into(),
                    message: "needs approval".into(),
                    terms: tollgate_core::ApprovalTerms {
                        approvers: Vec::new(),
                        min_approvals: 1,
                        ttl_secs: 60,
                        mode: tollgate_core::ApprovalMode::Hold,
                        hold_secs: 10,
                    },
                }
            } else {
                Verdict::Allow { rule: None }
            }
        }
    }

    fn inspector() -> Inspector {
        let identity = Identity {
            subject: "t".into(),
            via: tollgate_core::AuthMethod::ApiKey,
            key_id: None,
            groups: Vec::new(),
            admin: false,
            expires_at: None,
            kind: None,
            issuer: None,
            client_id: None,
            token_id: None,
            issued_at: None,
        };
        Inspector::new(Arc::new(DenySecret), identity, "box".into())
    }

    fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut p = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        p.push(kind);
        p.extend_from_slice(body);
        p
    }

    fn s(v: &[u8]) -> Vec<u8> {
        let mut b = (v.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(v);
        b
    }

    fn req(kind: u8, id: u32, fields: &[&[u8]]) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        for f in fields {
            body.extend_from_slice(f);
        }
        packet(kind, &body)
    }

    fn open(id: u32, path: &str, flags: u32) -> Vec<u8> {
        req(
            FXP_OPEN,
            id,
            &[
                &s(path.as_bytes()),
                &flags.to_be_bytes(),
                &0u32.to_be_bytes(),
            ],
        )
    }

    fn write(id: u32, handle: &[u8], data: &[u8]) -> Vec<u8> {
        req(FXP_WRITE, id, &[&s(handle), &0u64.to_be_bytes(), &s(data)])
    }

    fn status(id: u32, code: u32) -> Vec<u8> {
        req(FXP_STATUS, id, &[&code.to_be_bytes(), &s(b"msg"), &s(b"")])
    }

    fn join(pieces: Vec<Bytes>) -> Vec<u8> {
        pieces.iter().flat_map(|p| p.iter().copied()).collect()
    }

    /// An upload: the client's open, the target's handle, the client's writes and close, the
    /// target's statuses.
    fn upload() -> [Vec<u8>; 4] {
        let mut c1 = packet(FXP_INIT, &3u32.to_be_bytes());
        c1.extend(open(1, "/tmp/up.bin", OPEN_WRITE | OPEN_CREAT | OPEN_TRUNC));
        let mut t1 = packet(FXP_VERSION, &3u32.to_be_bytes());
        t1.extend(req(FXP_HANDLE, 1, &[&s(b"h1")]));
        let mut c2 = write(2, b"h1", &[7u8; 1000]);
        c2.extend(write(3, b"h1", &[8u8; 500]));
        c2.extend(req(FXP_CLOSE, 4, &[&s(b"h1")]));
        let mut t2 = status(2, FX_OK);
        t2.extend(status(3, FX_OK));
        t2.extend(status(4, FX_OK));
        [c1, t1, c2, t2]
    }

    fn file_events(events: &[EventKind]) -> Vec<(FileOp, String, u64, CommandStatus)> {
        events
            .iter()
            .filter_map(|e| match e {
                EventKind::FileTransfer {
                    op,
                    path,
                    bytes,
                    outcome,
                    ..
                } => Some((*op, path.clone(), *bytes, outcome.status)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn packets_split_at_every_byte_pass_through_exactly() {
        let [c1, t1, c2, t2] = upload();
        let longest = c1.len().max(t1.len()).max(c2.len()).max(t2.len());
        for cut in 0..=longest {
            let mut i = inspector();
            for (from_client, bytes) in [(true, &c1), (false, &t1), (true, &c2), (false, &t2)] {
                let cut = cut.min(bytes.len());
                let mut got = Vec::new();
                for part in [&bytes[..cut], &bytes[cut..]] {
                    let part = Bytes::copy_from_slice(part);
                    got.extend(join(if from_client {
                        i.on_client(part).unwrap()
                    } else {
                        i.on_target(part).unwrap()
                    }));
                }
                assert_eq!(&got, bytes, "cut at {cut}");
            }
            assert_eq!(
                file_events(&i.take_events()),
                vec![(FileOp::Write, "/tmp/up.bin".into(), 1500, CommandStatus::Ok)],
                "cut at {cut}"
            );
        }
        // Byte by byte.
        let mut i = inspector();
        for (from_client, bytes) in [(true, &c1), (false, &t1), (true, &c2), (false, &t2)] {
            let mut got = Vec::new();
            for b in bytes.iter() {
                let part = Bytes::copy_from_slice(&[*b]);
                got.extend(join(if from_client {
                    i.on_client(part).unwrap()
                } else {
                    i.on_target(part).unwrap()
                }));
            }
            assert_eq!(&got, bytes);
        }
        assert_eq!(file_events(&i.take_events()).len(), 1);
    }

    #[test]
    fn several_packets_in_one_chunk_are_one_slice() {
        let [c1, t1, c2, _] = upload();
        let mut i = inspector();
        assert_eq!(join(i.on_client(Bytes::from(c1.clone())).unwrap()), c1);
        i.on_target(Bytes::from(t1)).unwrap();
        let pieces = i.on_client(Bytes::from(c2.clone())).unwrap();
        assert_eq!(pieces.len(), 1, "forwarded without copying");
        assert_eq!(join(pieces), c2);
    }

    #[test]
    fn downloads_count_data_bytes() {
        let mut i = inspector();
        let mut c = open(1, "/srv/a.txt", OPEN_READ);
        c.extend(req(
            FXP_READ,
            2,
            &[&s(b"h"), &0u64.to_be_bytes(), &4096u32.to_be_bytes()],
        ));
        c.extend(req(
            FXP_READ,
            3,
            &[&s(b"h"), &300u64.to_be_bytes(), &4096u32.to_be_bytes()],
        ));
        c.extend(req(FXP_CLOSE, 4, &[&s(b"h")]));
        let mut t = req(FXP_HANDLE, 1, &[&s(b"h")]);
        t.extend(req(FXP_DATA, 2, &[&s(&[1u8; 300])]));
        t.extend(status(3, FX_EOF));
        t.extend(status(4, FX_OK));
        // The requests go out one at a time, each answered before the next.
        let mut sent = Vec::new();
        sent.extend(join(i.on_client(Bytes::from(c.clone())).unwrap()));
        // The handle is known only once the target answered: send replies then reads again.
        let mut i = inspector();
        let mut at_c = 0;
        let mut at_t = 0;
        let next = |b: &[u8], at: &mut usize| {
            let len = be32(b, *at).unwrap() as usize + 4;
            let p = b[*at..*at + len].to_vec();
            *at += len;
            p
        };
        for _ in 0..4 {
            i.on_client(Bytes::from(next(&c, &mut at_c))).unwrap();
            i.on_target(Bytes::from(next(&t, &mut at_t))).unwrap();
        }
        assert_eq!(sent, c);
        assert_eq!(
            file_events(&i.take_events()),
            vec![(FileOp::Read, "/srv/a.txt".into(), 300, CommandStatus::Ok)]
        );
    }

    #[test]
    fn a_refused_open_is_answered_between_the_targets_packets() {
        let mut i = inspector();
        // The target is in the middle of a DATA packet for an earlier read.
        let data = req(FXP_DATA, 7, &[&s(&[5u8; 100])]);
        let first = i.on_target(Bytes::copy_from_slice(&data[..50])).unwrap();
        assert_eq!(join(first), data[..50].to_vec());
        assert!(i.written().is_empty());
        // The client opens a secret file: not forwarded; the reply waits for the boundary.
        let sent = i
            .on_client(Bytes::from(open(9, "/etc/secret.key", OPEN_READ)))
            .unwrap();
        assert!(sent.is_empty());
        assert!(i.take_idle_replies().is_empty(), "mid-packet: no injection");
        let rest = i.on_target(Bytes::copy_from_slice(&data[50..])).unwrap();
        let rest = join(rest);
        let tail = data.len() - 50;
        assert_eq!(&rest[..tail], &data[50..]);
        let reply = &rest[tail..];
        assert_eq!(reply[4], FXP_STATUS);
        assert_eq!(be32(reply, 5), Some(9));
        assert_eq!(be32(reply, 9), Some(FX_PERMISSION_DENIED));
        assert!(
            String::from_utf8_lossy(reply).contains("tollgate: blocked (read /etc/secret.key)")
        );
        assert!(i.written().is_empty());
        let events = i.take_events();
        assert_eq!(
            file_events(&events),
            vec![(
                FileOp::Read,
                "/etc/secret.key".into(),
                0,
                CommandStatus::Denied
            )]
        );
        match &events[0] {
            EventKind::FileTransfer { outcome, .. } => {
                assert_eq!(outcome.rule.as_deref(), Some("no-secrets"))
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn a_refusal_on_an_idle_stream_goes_out_at_once_and_not_while_written() {
        let mut i = inspector();
        let mut c = open(1, "/ro/x", OPEN_WRITE | OPEN_CREAT);
        c.extend(req(FXP_MKDIR, 2, &[&s(b"/tmp/ok"), &0u32.to_be_bytes()]));
        c.extend(req(FXP_RENAME, 3, &[&s(b"/tmp/a"), &s(b"/tmp/secret")]));
        c.extend(req(FXP_OPENDIR, 4, &[&s(b"/held/dir")]));
        let sent = join(i.on_client(Bytes::from(c)).unwrap());
        assert_eq!(
            sent,
            req(FXP_MKDIR, 2, &[&s(b"/tmp/ok"), &0u32.to_be_bytes()])
        );
        let replies = i.take_idle_replies();
        assert_eq!(replies.len(), 3);
        assert!(String::from_utf8_lossy(&replies[2]).contains("Approvals are not available"));
        assert!(i.take_idle_replies().is_empty(), "being written");
        assert!(i.written().is_empty());
        // While the target side writes, a refusal waits for it.
        i.on_target(Bytes::from(status(2, FX_OK))).unwrap();
        i.on_client(Bytes::from(open(5, "/secret", OPEN_READ)))
            .unwrap();
        assert!(i.take_idle_replies().is_empty());
        assert_eq!(i.written().len(), 1);
        assert!(i.written().is_empty());
        let events = file_events(&i.take_events());
        assert_eq!(events.len(), 5, "{events:?}");
        assert!(events.contains(&(FileOp::Mkdir, "/tmp/ok".into(), 0, CommandStatus::Ok)));
        assert!(events.contains(&(
            FileOp::List,
            "/held/dir".into(),
            0,
            CommandStatus::ApprovalRequired
        )));
    }

    #[test]
    fn oversized_and_empty_packets_are_refused() {
        let mut i = inspector();
        let mut p = ((MAX_PACKET + 1) as u32).to_be_bytes().to_vec();
        p.push(FXP_WRITE);
        assert_eq!(
            i.on_client(Bytes::from(p)),
            Err(FrameError::Length(MAX_PACKET + 1))
        );
        assert!(
            i.on_client(Bytes::from(upload()[0].clone())).is_err(),
            "stays closed"
        );
        let mut i = inspector();
        assert!(i.on_target(Bytes::from(vec![0, 0, 0, 0, 1])).is_err());
        // The largest packet passes.
        let mut i = inspector();
        let big = write(1, b"h", &vec![0u8; MAX_PACKET - 30]);
        assert!(be32(&big, 0).unwrap() as usize <= MAX_PACKET);
        assert_eq!(join(i.on_client(Bytes::from(big.clone())).unwrap()), big);
    }

    #[test]
    fn files_open_at_the_end_are_interrupted_and_errors_recorded() {
        let mut i = inspector();
        i.on_client(Bytes::from(open(1, "/tmp/a", OPEN_READ)))
            .unwrap();
        i.on_target(Bytes::from(req(FXP_HANDLE, 1, &[&s(b"h")])))
            .unwrap();
        i.on_client(Bytes::from(open(2, "/tmp/missing", OPEN_READ)))
            .unwrap();
        i.on_target(Bytes::from(status(2, 2))).unwrap();
        i.on_client(Bytes::from(req(FXP_REMOVE, 3, &[&s(b"/tmp/b")])))
            .unwrap();
        i.finish();
        let events = file_events(&i.take_events());
        assert_eq!(
            events,
            vec![
                (FileOp::Read, "/tmp/missing".into(), 0, CommandStatus::Error),
                (
                    FileOp::Remove,
                    "/tmp/b".into(),
                    0,
                    CommandStatus::Interrupted
                ),
                (FileOp::Read, "/tmp/a".into(), 0, CommandStatus::Interrupted),
            ]
        );
    }

    #[test]
    fn extensions_with_paths_are_checked_and_others_pass() {
        let mut i = inspector();
        let rename = req(
            FXP_EXTENDED,
            1,
            &[
                &s(b"posix-rename@openssh.com"),
                &s(b"/tmp/a"),
                &s(b"/tmp/secret"),
            ],
        );
        assert!(i.on_client(Bytes::from(rename)).unwrap().is_empty());
        let limits = req(FXP_EXTENDED, 2, &[&s(b"limits@openssh.com")]);
        assert_eq!(
            join(i.on_client(Bytes::from(limits.clone())).unwrap()),
            limits
        );
        let link = req(
            FXP_EXTENDED,
            3,
            &[&s(b"hardlink@openssh.com"), &s(b"/tmp/a"), &s(b"/tmp/b")],
        );
        assert_eq!(join(i.on_client(Bytes::from(link.clone())).unwrap()), link);
        i.on_target(Bytes::from(status(3, FX_OK))).unwrap();
        let events = file_events(&i.take_events());
        assert_eq!(
            events,
            vec![
                (FileOp::Rename, "/tmp/a".into(), 0, CommandStatus::Denied),
                (FileOp::Link, "/tmp/a".into(), 0, CommandStatus::Ok),
            ]
        );
    }

    #[test]
    fn scp_command_lines() {
        assert_eq!(
            scp_paths("scp -t -- /tmp/x"),
            Scp::Paths(FileOp::Write, vec!["/tmp/x".into()])
        );
        assert_eq!(
            scp_paths("scp -v -r -p -f 'a b' /c ~/d"),
            Scp::Paths(FileOp::Read, vec!["a b".into(), "/c".into(), "~/d".into()])
        );
        assert_eq!(
            scp_paths("/usr/bin/scp -pt \"/srv/x\""),
            Scp::Paths(FileOp::Write, vec!["/srv/x".into()])
        );
        assert_eq!(scp_paths("ls -t /tmp"), Scp::Not);
        assert_eq!(scp_paths("ls /tmp/*"), Scp::Not);
        assert_eq!(scp_paths("scp -V"), Scp::Not);
        assert_eq!(
            scp_paths("scp -t /tmp/x; rm y"),
            Scp::Unreadable(FileOp::Write)
        );
        assert_eq!(
            scp_paths("scp -f /tmp/secre?"),
            Scp::Unreadable(FileOp::Read)
        );
        assert_eq!(scp_paths("scp -t"), Scp::Unreadable(FileOp::Write));
    }

    #[test]
    fn fuzz_entry_accepts_what_it_builds() {
        let mut input = Vec::new();
        for (dir, bytes) in upload().into_iter().enumerate() {
            for chunk in bytes.chunks(37) {
                input.push((dir % 2) as u8 | (((chunk.len() - 1) as u8) << 1));
                input.extend_from_slice(chunk);
            }
        }
        assert_eq!(fuzz_sftp(&input), Ok(()));
        assert_eq!(fuzz_sftp(&[1, 0, 0]), Ok(()));
    }
}
