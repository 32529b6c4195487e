//! Domain types shared by every Tollgate crate.
//!
//! Nothing here touches sockets, a runtime or a database: protocol crates turn bytes into
//! [`Command`]s and [`Event`]s, the gateway decides with an [`Gatekeeper`], and a [`Recorder`]
//! persists the ordered event stream of each session.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod live;
mod mask;
mod time_fmt;
pub use live::{LiveSession, LiveSessions};
pub use mask::{ColumnMask, MaskDecision, MaskTally, Masker, NoMasking, SessionMask, TableColumn};
pub use time_fmt::{format_rfc3339, now_micros, parse_duration, parse_rfc3339};

/// Errors raised by the helpers of this crate.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A duration such as `8h` or `30m` could not be read.
    #[error("invalid duration {0:?}: expected a number followed by s, m, h or d (e.g. 8h)")]
    InvalidDuration(String),
    /// A time could not be read.
    #[error("invalid time {0:?}: expected RFC 3339, e.g. 2026-11-27T07:30:00Z")]
    InvalidTime(String),
}

/// A secret value (password, token) that never prints itself.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret string.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is sent to its one destination.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Who is calling.
///
/// The fields after `expires_at` describe an OIDC token (issuer, client, token id, issue time)
/// and are absent for API keys; records written before they existed read with them empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// Stable name of the caller: the API key's name, or the OIDC principal (the issuer's
    /// subject prefix followed by `sub`).
    pub subject: String,
    /// How the caller proved who they are.
    pub via: AuthMethod,
    /// The API key id, when the caller used a key.
    pub key_id: Option<String>,
    /// Groups that grant access to connections.
    pub groups: Vec<String>,
    /// Whether the caller may administer the gateway (keys, all sessions).
    pub admin: bool,
    /// When the credential stops being valid, in microseconds since the Unix epoch.
    pub expires_at: Option<i64>,
    /// A person or a machine, when the credential says (OIDC tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<IdentityKind>,
    /// The token's issuer (OIDC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The client the token was issued to (`azp` / `client_id`), when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The token's id (`jti`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// When the token was issued (`iat`), microseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<i64>,
}

impl Identity {
    /// An identity with the given subject, method and groups; every other field empty (no key
    /// id, not an administrator, no expiry, no token details).
    pub fn new(subject: impl Into<String>, via: AuthMethod, groups: Vec<String>) -> Self {
        Self {
            subject: subject.into(),
            via,
            key_id: None,
            groups,
            admin: false,
            expires_at: None,
            kind: None,
            issuer: None,
            client_id: None,
            token_id: None,
            issued_at: None,
        }
    }
}

/// Whether the caller is a person or a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// A person.
    Human,
    /// A service, CI job or agent.
    Service,
}

impl IdentityKind {
    /// `human` or `service`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Human => "human",
            Self::Service => "service",
        }
    }
}

/// How an identity was established.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A Tollgate API key.
    ApiKey,
    /// An OIDC / JWT bearer token verified against a configured issuer.
    Oidc,
}

/// The wire protocol a session speaks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// PostgreSQL frontend/backend protocol 3.0.
    Postgres,
    /// SSH 2 (shells, exec, subsystems).
    Ssh,
}

/// How a client reached the gateway.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The protocol's own listener (psql, drivers).
    Native,
    /// `tollgate exec` through the REST API.
    Api,
}

/// A declared target.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The name clients ask for.
    pub name: String,
    /// Which protocol the target speaks.
    pub protocol: Protocol,
    /// Upstream address in URL form, without the password.
    pub url: String,
    /// The credential the gateway holds for the target.
    pub password: Option<Secret>,
    /// Groups whose members may use the connection.
    pub groups: Vec<String>,
    /// Just-in-time access: sessions need an approved, unexpired grant.
    pub grant: Option<GrantPolicy>,
    /// Strict audit: a command's event is durable before the command is forwarded (the
    /// default); false is best-effort.
    pub strict_audit: bool,
    /// What only an SSH target has: its key and its pinned host keys.
    pub ssh: Option<SshSettings>,
}

/// The particulars of an SSH target.
#[derive(Debug, Clone, Default)]
pub struct SshSettings {
    /// The OpenSSH private key the gateway signs in with (when not a password).
    pub private_key: Option<Secret>,
    /// Pinned host keys, one OpenSSH public key line each (`ssh-ed25519 AAAA…`).
    pub host_keys: Vec<String>,
    /// A known_hosts file holding the target's host key.
    pub known_hosts: Option<std::path::PathBuf>,
    /// Most output bytes of one channel recorded in the audit trail (default 16 MiB).
    pub record_limit: Option<u64>,
}

/// Most output bytes of one SSH channel recorded when the connection does not say.
pub const DEFAULT_SSH_RECORD_LIMIT: u64 = 16 * 1024 * 1024;

/// How just-in-time grants to a connection work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantPolicy {
    /// Groups whose members approve grants (empty: administrators).
    pub approvers: Vec<String>,
    /// Longest grant that may be requested (seconds).
    pub max_secs: u64,
}

/// Why a caller or a command was turned away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Machine-readable reason.
    pub code: RefusalCode,
    /// A sentence a person can act on; what the client is told. Never contains a secret.
    pub message: String,
    /// The particulars, for the audit trail and the server log only (never sent to the
    /// client): e.g. why a token was refused and whose it claimed to be. Never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Refusal {
    /// Builds a refusal.
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// The same refusal with particulars for the record.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Machine-readable refusal reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The token matches no key.
    BadCredentials,
    /// The key was revoked.
    Revoked,
    /// The key has expired.
    Expired,
    /// No connection of that name.
    UnknownConnection,
    /// The identity shares no group with the connection.
    AccessDenied,
    /// The client broke the protocol.
    ProtocolViolation,
    /// TLS is required on this listener.
    TlsRequired,
    /// The target could not be reached or refused the gateway's credential.
    UpstreamUnavailable,
    /// The operation needs an administrator.
    AdminRequired,
    /// The identity provider that vouches for the token cannot be reached (its keys are not
    /// available); trying again later may succeed.
    IdentityUnavailable,
    /// The caller's role does not allow the operation.
    Forbidden,
}

/// What [`Gatekeeper::authenticate`] returns: it may wait (an OIDC token can need the
/// provider's keys fetched).
pub type Authentication<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Identity, Refusal>> + Send + 'a>>;

/// Decides who may do what. Implemented by the gateway; protocol crates only call it.
pub trait Gatekeeper: Send + Sync {
    /// Turns a presented token (an API key or an OIDC token) into an identity. The refusal's
    /// `message` is what the client may be told; its `detail` is for the record.
    fn authenticate<'a>(&'a self, token: &'a str) -> Authentication<'a>;
    /// Checks that the identity may use the named connection and returns it.
    fn authorize(&self, identity: &Identity, connection: &str) -> Result<Arc<Connection>, Refusal>;
    /// Re-checks, cheaply, that the identity may still use the connection (key or token not
    /// revoked or expired, access grant not expired).
    fn still_valid(&self, identity: &Identity, connection: &str) -> Result<(), Refusal>;
    /// The identity an SSH public key (by its `SHA256:…` fingerprint) is registered to, built
    /// as for its owner's key or token. Refused when unknown, expired, or its owner revoked.
    fn authenticate_ssh_key(&self, fingerprint: &str) -> Result<Identity, Refusal> {
        Err(Refusal::new(
            RefusalCode::BadCredentials,
            "authentication failed: public keys are not accepted here",
        )
        .with_detail(format!("SSH key {fingerprint}: no key registry")))
    }
}

/// The step of the wire protocol that carried a command.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolStep {
    /// PostgreSQL simple Query message.
    SimpleQuery,
    /// PostgreSQL extended protocol Execute (text from Parse, parameters from Bind).
    Execute,
    /// PostgreSQL extended protocol Parse (recorded when a rule refuses the statement).
    Parse,
    /// PostgreSQL FunctionCall message.
    FunctionCall,
    /// SSH `exec` request: one command line.
    Exec,
    /// SSH `shell` request: an interactive shell.
    Shell,
    /// SSH `subsystem` request (e.g. `sftp`).
    Subsystem,
    /// SSH `direct-tcpip` channel: a forwarded TCP connection (text `host:port`).
    Forward,
}

/// One command a client asked the target to run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Command {
    /// Which protocol step carried it.
    pub step: ProtocolStep,
    /// The statement text.
    pub text: Arc<str>,
    /// Bound parameters, rendered as text (`\x…` hex for binary values), `None` for NULL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Option<String>>,
    /// Prepared statement name, when the extended protocol used a named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
}

/// What became of a command.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Outcome {
    /// Command tags in order (`SELECT 3`, `INSERT 0 1`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Rows sent back to the client.
    pub rows: u64,
    /// Time from forwarding to completion, in microseconds.
    pub duration_us: u64,
    /// The target's error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CommandError>,
    /// How the command ended.
    pub status: CommandStatus,
    /// The rule that decided it, when one matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The approval request it needed or used, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// Values masked in what the client received, counted per rule or detector (never the
    /// values themselves).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub masked: std::collections::BTreeMap<String, u64>,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// It completed.
    #[default]
    Ok,
    /// The target reported an error.
    Error,
    /// It was skipped because an earlier command of the same pipeline failed.
    Skipped,
    /// The session ended before the target answered.
    Interrupted,
    /// The portal was suspended (row limit reached); a later Execute continues it.
    Suspended,
    /// A rule denied it; it never reached the target.
    Denied,
    /// A rule requires a human's approval; it did not reach the target.
    ApprovalRequired,
}

/// An error reported by the target for a command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommandError {
    /// SQLSTATE or the protocol's own error code.
    pub code: String,
    /// The target's message.
    pub message: String,
}

/// What the policy decided for a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Verdict {
    /// Run it. `rule` names the allow rule that matched, if any.
    Allow {
        /// Matching allow rule.
        rule: Option<String>,
    },
    /// Never run it.
    Deny {
        /// The deciding rule.
        rule: String,
        /// What the client is told.
        message: String,
    },
    /// Run it only once a human approves.
    Approve {
        /// The deciding rule.
        rule: String,
        /// What the client is told.
        message: String,
        /// Who may approve, how many must, and how the client waits.
        terms: ApprovalTerms,
    },
}

/// How a rule's approvals work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalTerms {
    /// Groups whose members may approve; empty means administrators only.
    pub approvers: Vec<String>,
    /// Approvals needed.
    pub min_approvals: u32,
    /// How long a request, and then its approval, stays valid (seconds).
    pub ttl_secs: u64,
    /// Ticket or hold.
    pub mode: ApprovalMode,
    /// In hold mode, how long the statement waits in the session (seconds).
    pub hold_secs: u64,
}

/// How a client waits for an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// Fail at once with the approval id; the identical statement runs once after approval.
    Ticket,
    /// Wait in the session (the client is told the id) until approved, denied or timed out.
    Hold,
}

/// A request for a human's approval of one exact command.
#[derive(Debug, Clone)]
pub struct ApprovalRequest<'a> {
    /// Who asks.
    pub requester: &'a Identity,
    /// Session that asks.
    pub session: &'a str,
    /// Connection name.
    pub connection: &'a str,
    /// The rule that requires it.
    pub rule: &'a str,
    /// Its terms.
    pub terms: &'a ApprovalTerms,
    /// The exact statement.
    pub text: &'a str,
    /// Its parameters (extended protocol), rendered as recorded.
    pub params: &'a [Option<String>],
    /// The statement as approvers are shown it and the store keeps it (masked in a masked
    /// session); the approval is bound to `text` and `params`.
    pub shown_text: &'a str,
    /// The parameters as shown.
    pub shown_params: &'a [Option<String>],
}

/// Where an approval stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for approvers.
    Pending {
        /// Request id.
        id: String,
    },
    /// Approved; this use consumed it.
    Approved {
        /// Request id.
        id: String,
    },
    /// Denied by an approver.
    Denied {
        /// Request id.
        id: String,
        /// The approver's reason.
        reason: String,
    },
    /// Nobody decided in time.
    Expired {
        /// Request id.
        id: String,
    },
}

/// The approvals service. Implemented by the gateway; protocol crates call it.
pub trait Approvals: Send + Sync {
    /// For a command that needs approval: consumes a matching approval if one is granted and
    /// unused (returns `Approved`), otherwise returns the pending request for it, creating one.
    fn request(&self, req: &ApprovalRequest<'_>) -> ApprovalState;
    /// Where a request stands now; a granted one is consumed by this call (`Approved`).
    fn poll(&self, id: &str) -> ApprovalState;
}

/// Where a command comes from, for the policy.
#[derive(Debug, Clone, Copy)]
pub struct PolicyContext<'a> {
    /// The caller.
    pub identity: &'a Identity,
    /// The connection name.
    pub connection: &'a str,
    /// The protocol.
    pub protocol: Protocol,
}

/// The gateway's deciders a protocol front calls: who is calling, what may run, who approves,
/// what is masked, and where events go.
pub struct Services {
    /// Authentication and access.
    pub gatekeeper: std::sync::Arc<dyn Gatekeeper>,
    /// Event sink.
    pub recorder: std::sync::Arc<dyn Recorder>,
    /// Guardrails: statements, shell commands, file operations and forwards are checked.
    pub policy: std::sync::Arc<dyn Policy>,
    /// Approvals for what a rule holds.
    pub approvals: std::sync::Arc<dyn Approvals>,
    /// Decides whether a caller's results and terminal output are masked.
    pub masker: std::sync::Arc<dyn Masker>,
}

/// Decides what happens to each command. Implemented by the gateway; protocol crates call it.
pub trait Policy: Send + Sync {
    /// The verdict for one command string (which may hold several statements).
    fn check(&self, ctx: &PolicyContext<'_>, command: &str) -> Verdict;
    /// The verdict for a command the gateway cannot read (e.g. a fast-path function call by
    /// object id): rules see it as `unparsed`.
    fn check_opaque(&self, ctx: &PolicyContext<'_>, description: &str) -> Verdict;
    /// The verdict for one shell line: an SSH exec command or a line typed in an interactive
    /// shell (which may run several commands). A policy that cannot read shell lines treats
    /// the line as a command it cannot read.
    fn check_shell(&self, ctx: &PolicyContext<'_>, line: &str) -> Verdict {
        self.check_opaque(ctx, line)
    }
    /// The verdict for one file operation over SFTP or scp on `path` (as the client named it).
    /// Allowed unless a rule says otherwise.
    fn check_file(&self, ctx: &PolicyContext<'_>, op: FileOp, path: &str) -> Verdict {
        let _ = (ctx, op, path);
        Verdict::Allow { rule: None }
    }
    /// The verdict for a forwarded TCP connection to `host:port` (`ssh -L`, `-W`, `-D`).
    /// Denied unless a rule allows it.
    fn check_forward(&self, ctx: &PolicyContext<'_>, host: &str, port: u32) -> Verdict {
        let _ = ctx;
        Verdict::Deny {
            rule: NO_FORWARD_RULE.into(),
            message: format!(
                "port forwarding to {host}:{port} is not allowed: no rule allows forwarding on this connection"
            ),
        }
    }
}

/// The rule name recorded when a forward is refused because no rule allows it.
pub const NO_FORWARD_RULE: &str = "no-forwarding-rule";

/// A file operation over SFTP or scp, as rules name it (`file_ops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    /// Reading a file (a download).
    Read,
    /// Writing, creating or truncating a file (an upload).
    Write,
    /// Removing a file.
    Remove,
    /// Renaming or moving a file or directory (checked on both paths).
    Rename,
    /// Creating a directory.
    Mkdir,
    /// Removing a directory.
    Rmdir,
    /// Listing a directory.
    List,
    /// Changing attributes (mode, owner, times).
    Setstat,
    /// Creating a symbolic or hard link (checked on both paths).
    Link,
}

impl FileOp {
    /// Every operation.
    pub const ALL: [FileOp; 9] = [
        FileOp::Read,
        FileOp::Write,
        FileOp::Remove,
        FileOp::Rename,
        FileOp::Mkdir,
        FileOp::Rmdir,
        FileOp::List,
        FileOp::Setstat,
        FileOp::Link,
    ];
    /// The name in rules and records.
    pub fn name(self) -> &'static str {
        match self {
            FileOp::Read => "read",
            FileOp::Write => "write",
            FileOp::Remove => "remove",
            FileOp::Rename => "rename",
            FileOp::Mkdir => "mkdir",
            FileOp::Rmdir => "rmdir",
            FileOp::List => "list",
            FileOp::Setstat => "setstat",
            FileOp::Link => "link",
        }
    }
    /// The operation called `name`.
    pub fn from_name(name: &str) -> Option<FileOp> {
        FileOp::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// A policy that allows everything (rules off).
pub struct AllowAll;

impl Policy for AllowAll {
    fn check(&self, _: &PolicyContext<'_>, _: &str) -> Verdict {
        Verdict::Allow { rule: None }
    }
    fn check_opaque(&self, _: &PolicyContext<'_>, _: &str) -> Verdict {
        Verdict::Allow { rule: None }
    }
}

/// Session identifier, unique per gateway data dir.
pub type SessionId = String;

/// One entry of a session's ordered, append-only event stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// The session this event belongs to.
    pub session: SessionId,
    /// Position in the session's stream, starting at 0.
    pub seq: u64,
    /// When it happened, microseconds since the Unix epoch.
    pub at: i64,
    /// What happened.
    pub kind: EventKind,
}

/// What an event records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A client opened a session (recorded once it is authenticated and authorized, or refused).
    SessionStart(SessionInfo),
    /// A command and its outcome.
    Command {
        /// The command.
        command: Command,
        /// Its outcome.
        outcome: Outcome,
    },
    /// The gateway turned something away: a bad token, no access, a broken protocol.
    Refusal(Refusal),
    /// A command about to be forwarded (strict audit: durable before it reaches the target).
    /// Its outcome follows in a `command` event.
    CommandStarted {
        /// The command, as recorded.
        command: Command,
        /// The rule that allowed it, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        /// The approval it used, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval: Option<String>,
    },
    /// A file operation over SFTP or scp and its outcome (written when the file is closed,
    /// or at once for a refused or one-step operation).
    FileTransfer {
        /// `sftp` or `scp`.
        via: String,
        /// The operation.
        op: FileOp,
        /// The path as the client named it.
        path: String,
        /// The second path of a rename or link.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// Bytes read or written through the gateway.
        #[serde(default)]
        bytes: u64,
        /// How it ended (status, the rule that decided it, the target's error, duration).
        outcome: Outcome,
    },
    /// A forwarded TCP connection (`ssh -L`, `-W`, `-D`), written when it closes.
    Forward {
        /// The destination host the client asked for.
        host: String,
        /// The destination port.
        port: u32,
        /// Where the client says the connection came from (`address:port`).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        origin: String,
        /// Bytes sent to the destination.
        bytes_out: u64,
        /// Bytes received from the destination.
        bytes_in: u64,
        /// How it ended (status, the rule that allowed it, duration).
        outcome: Outcome,
    },
    /// A piece of a channel's terminal recording in asciicast v2 terms: output the client saw
    /// (masked), input it typed, and resizes, with times relative to the channel's start.
    Terminal {
        /// The SSH channel (a session may have several).
        channel: u32,
        /// The terminal, on the channel's first piece.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<TerminalHeader>,
        /// `[seconds since the channel's start, code, data]`; code `o` (output), `i` (input)
        /// or `r` (resize, data `COLSxROWS`).
        events: Vec<(f64, String, String)>,
        /// Output bytes not recorded because the channel passed its recording limit.
        #[serde(default, skip_serializing_if = "is_zero")]
        unrecorded: u64,
    },
    /// The session ended.
    SessionEnd {
        /// Why it ended.
        reason: String,
    },
    /// An administrative act, recorded in the gateway's own stream: the gateway started with a
    /// configuration, a key was created or revoked, an approval was decided.
    Admin {
        /// What happened: `gateway_started`, `key_created`, `key_revoked`, `approval_decided`.
        action: String,
        /// Who did it (a key's name), when someone did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// What it was done to (a key id, an approval id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        /// The particulars, in words (never a secret).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
    },
    /// The gateway stopped without ending the session (a crash or a kill); written when the
    /// gateway next starts.
    SessionAbandoned {
        /// What is known of why.
        reason: String,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The terminal of a recorded channel (the asciicast header).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TerminalHeader {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// `TERM` the client asked for (`xterm-256color`), when it asked for a PTY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    /// When the channel started, microseconds since the Unix epoch.
    pub started: i64,
    /// The exec command, or empty for a shell.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command: String,
}

/// Who opened a session, from where, to what.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionInfo {
    /// The caller, once known.
    pub identity: Option<Identity>,
    /// Connection name the client asked for.
    pub connection: String,
    /// The protocol spoken.
    pub protocol: Protocol,
    /// How the client reached the gateway.
    pub channel: Channel,
    /// Client socket address.
    pub client_addr: String,
    /// Whether the client side used TLS.
    pub tls: bool,
    /// The user name the client sent (informational; identity comes from the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_user: Option<String>,
    /// The client's application name, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// Whether results were masked: `on`, or why the caller saw clear values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masking: Option<String>,
}

/// Called once an event is durable (`Ok`) or cannot be stored (`Err` with the reason).
pub type Durable = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Persists events. Implementations must keep per-session order and must not lose events.
pub trait Recorder: Send + Sync {
    /// Appends one event. Never blocks on I/O.
    fn record(&self, event: Event);
    /// Appends one event and calls `done` once it is durable or has failed. Never waits for
    /// other work; it may append to a local file.
    fn record_durable(&self, event: Event, done: Durable) {
        self.record(event);
        done(Ok(()));
    }
    /// Whether the events handed over and not yet stored take so much memory that a producer
    /// which can wait (a relay recording bulk output) should, before it records more.
    fn pressure(&self) -> bool {
        false
    }
}

/// Writes a session's events in order, numbering them. Clones share the numbering, so both
/// directions of a session can append.
#[derive(Clone)]
pub struct SessionLog {
    session: SessionId,
    next_seq: Arc<std::sync::Mutex<u64>>,
    recorder: Arc<dyn Recorder>,
}

impl SessionLog {
    /// Starts a log for a new session.
    pub fn new(session: SessionId, recorder: Arc<dyn Recorder>) -> Self {
        Self {
            session,
            next_seq: Arc::new(std::sync::Mutex::new(0)),
            recorder,
        }
    }
    /// The session id.
    pub fn session(&self) -> &str {
        &self.session
    }
    /// Whether the recorder asks producers that can wait to slow down (see
    /// [`Recorder::pressure`]).
    pub fn pressure(&self) -> bool {
        self.recorder.pressure()
    }
    /// Appends an event stamped now.
    pub fn append(&self, kind: EventKind) {
        self.push(kind, None);
    }
    /// Appends an event stamped now; `done` learns when it is durable.
    pub fn append_durable(&self, kind: EventKind, done: Durable) {
        self.push(kind, Some(done));
    }
    fn push(&self, kind: EventKind, done: Option<Durable>) {
        // Numbering and handing over happen under one lock, so the recorder sees the session's
        // events in seq order whichever direction appends.
        let mut seq = match self.next_seq.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let event = Event {
            session: self.session.clone(),
            seq: *seq,
            at: now_micros(),
            kind,
        };
        *seq += 1;
        match done {
            Some(done) => self.recorder.record_durable(event, done),
            None => self.recorder.record(event),
        }
    }
}

/// A fresh random-looking session id: time-ordered prefix plus randomness from the caller.
pub fn new_session_id(random: u64) -> SessionId {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    format!("{micros:013x}{:08x}", random as u32)
}
