//! Guardrails on session channels: an `exec` command, and each line typed or fed to a shell,
//! is checked by the policy before it reaches the target.
//!
//! A refused exec command never reaches the target: the client gets a one-line message on
//! stderr and exit status [`REFUSED_STATUS`]. A command a rule holds for approval waits (hold
//! mode) or is refused with the approval's id (ticket mode). In a shell the line is rebuilt from
//! what the client types (best effort, see [`LineEditor`]) and checked at Enter; a refused line's
//! Enter is not forwarded and the target's line is cleared instead.

use tollgate_core::{
    ApprovalMode, ApprovalRequest, ApprovalState, CommandError, CommandStatus, Outcome,
    PolicyContext, Protocol, Verdict,
};

use crate::relay::Terms;

/// The exit status of a command the gateway refused (as a shell reports a command it found but
/// could not run).
pub(crate) const REFUSED_STATUS: u32 = 126;

/// The longest line kept; a longer one is checked as it stands (the policy reads a line longer
/// than its own limit as one it cannot read).
const MAX_KEPT: usize = 256 * 1024 + 1;

/// A command the gateway will not forward.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    /// What the client is told: one line, without a line end.
    pub(crate) told: String,
    pub(crate) status: CommandStatus,
    pub(crate) rule: String,
    pub(crate) approval: Option<String>,
}

impl Refused {
    /// The outcome recorded for it.
    pub(crate) fn outcome(&self) -> Outcome {
        Outcome {
            status: self.status,
            rule: Some(self.rule.clone()),
            approval: self.approval.clone(),
            error: Some(CommandError {
                code: match self.status {
                    CommandStatus::Denied => "denied".into(),
                    _ => "approval_required".into(),
                },
                message: self.told.clone(),
            }),
            ..Outcome::default()
        }
    }
}

/// What the policy made of a line.
pub(crate) enum Decision {
    /// Forward it.
    Run {
        rule: Option<String>,
        approval: Option<String>,
    },
    /// Do not forward it.
    Refuse(Refused),
    /// Wait for approval `id` (hold mode), at most `hold_secs`.
    Wait(Waiting),
}

/// A command held for an approval.
pub(crate) struct Waiting {
    pub(crate) id: String,
    pub(crate) rule: String,
    pub(crate) message: String,
    pub(crate) hold_secs: u64,
}

impl Waiting {
    /// What the client is told while it waits.
    pub(crate) fn notice(&self) -> String {
        format!(
            "tollgate: {}. Waiting for approval {id}: an approver runs `tollgate approvals approve {id}`",
            self.message,
            id = self.id
        )
    }

    /// Where the approval stands now: `None` while pending and within the hold time.
    pub(crate) fn poll(&self, terms: &Terms, expired: bool) -> Option<Decision> {
        let refuse = |why: String| {
            Some(Decision::Refuse(Refused {
                told: format!("tollgate: {}. {why}", one_line(&self.message)),
                status: CommandStatus::ApprovalRequired,
                rule: self.rule.clone(),
                approval: Some(self.id.clone()),
            }))
        };
        match terms.approvals.poll(&self.id) {
            ApprovalState::Approved { id } => Some(Decision::Run {
                rule: Some(self.rule.clone()),
                approval: Some(id),
            }),
            ApprovalState::Denied { id, reason } => refuse(format!(
                "Approval {id} was denied: {}. The command was not run.",
                one_line(&reason)
            )),
            ApprovalState::Expired { id } => {
                refuse(format!("Approval {id} expired. The command was not run."))
            }
            ApprovalState::Pending { id } if expired => refuse(format!(
                "No decision on approval {id} within {}s; the command was not run (the request stays open: once approved, run it again).",
                self.hold_secs
            )),
            ApprovalState::Pending { .. } => None,
        }
    }
}

/// Checks one line: an exec command (`interactive` false) or a line typed in a shell.
pub(crate) fn decide(terms: &Terms, line: &str, interactive: bool) -> Decision {
    if interactive && line.trim().is_empty() {
        return Decision::Run {
            rule: None,
            approval: None,
        };
    }
    let ctx = PolicyContext {
        identity: &terms.identity,
        connection: &terms.connection,
        protocol: Protocol::Ssh,
    };
    match terms.policy.check_shell(&ctx, line) {
        Verdict::Allow { rule } => Decision::Run {
            rule,
            approval: None,
        },
        Verdict::Deny { rule, message } => Decision::Refuse(Refused {
            told: format!("tollgate: {}", one_line(&message)),
            status: CommandStatus::Denied,
            rule,
            approval: None,
        }),
        Verdict::Approve {
            rule,
            message,
            terms: approval,
        } => {
            let state = terms.approvals.request(&ApprovalRequest {
                requester: &terms.identity,
                session: terms.log.session(),
                connection: &terms.connection,
                rule: &rule,
                terms: &approval,
                text: line,
                params: &[],
                shown_text: line,
                shown_params: &[],
            });
            let message = one_line(&message);
            let refuse = |why: String, id: String| {
                Decision::Refuse(Refused {
                    told: format!("tollgate: {message}. {why}"),
                    status: CommandStatus::ApprovalRequired,
                    rule: rule.clone(),
                    approval: Some(id),
                })
            };
            match state {
                ApprovalState::Approved { id } => Decision::Run {
                    rule: Some(rule),
                    approval: Some(id),
                },
                ApprovalState::Pending { id } if approval.mode == ApprovalMode::Hold => {
                    Decision::Wait(Waiting {
                        id,
                        rule: rule.clone(),
                        message,
                        hold_secs: approval.hold_secs,
                    })
                }
                ApprovalState::Pending { id } => refuse(
                    format!(
                        "Approval request {id} is pending: an approver runs `tollgate approvals approve {id}`, then run the identical command again (it runs once). The command was not run."
                    ),
                    id,
                ),
                ApprovalState::Denied { id, reason } => refuse(
                    format!(
                        "Approval {id} was denied: {}. The command was not run.",
                        one_line(&reason)
                    ),
                    id,
                ),
                ApprovalState::Expired { id } => refuse(
                    format!(
                        "Approval {id} expired or could not be recorded. The command was not run."
                    ),
                    id,
                ),
            }
        }
    }
}

/// Text for a one-line message: control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Escape sequence state of the [`LineEditor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Start,
    /// Inside a CSI sequence (`ESC [` … final byte).
    Csi,
    /// After `ESC O` (one more byte).
    Ss3,
}

/// Rebuilds the line a client types into a shell, to check it at Enter.
///
/// With a PTY (`cooked` false) it follows what the client sends: printable bytes are appended,
/// backspace and DEL remove the last character, Ctrl-W the last word, Ctrl-U and Ctrl-C clear
/// the line; escape sequences (cursor keys, history, function keys) and other control bytes
/// are dropped. Without a PTY the bytes are what the shell reads, so the line is kept as sent.
/// `\r` and `\n` end a line (with a PTY; only `\n` without one).
#[derive(Debug)]
pub(crate) struct LineEditor {
    pty: bool,
    line: Vec<u8>,
    escape: Escape,
}

impl LineEditor {
    pub(crate) fn new(pty: bool) -> Self {
        Self {
            pty,
            line: Vec::new(),
            escape: Escape::None,
        }
    }

    /// Feeds bytes until the first line end, or `None` when `data` holds none (everything was
    /// taken in). Without a PTY, a line that grows past the kept limit ends there, without a
    /// line end.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Option<Line> {
        for (i, &b) in data.iter().enumerate() {
            if !self.pty {
                if b == b'\n' {
                    return Some(self.take(i, true));
                }
                self.line.push(b);
                if self.line.len() >= MAX_KEPT {
                    return Some(self.take(i + 1, false));
                }
                continue;
            }
            match self.escape {
                Escape::Start => {
                    self.escape = match b {
                        b'[' => Escape::Csi,
                        b'O' => Escape::Ss3,
                        _ => Escape::None,
                    };
                    continue;
                }
                Escape::Csi => {
                    if (0x40..=0x7e).contains(&b) {
                        self.escape = Escape::None;
                    }
                    continue;
                }
                Escape::Ss3 => {
                    self.escape = Escape::None;
                    continue;
                }
                Escape::None => {}
            }
            match b {
                b'\r' | b'\n' => return Some(self.take(i, true)),
                0x1b => self.escape = Escape::Start,
                0x7f | 0x08 => {
                    while self.line.last().is_some_and(|&c| (0x80..0xc0).contains(&c)) {
                        self.line.pop();
                    }
                    self.line.pop();
                }
                0x15 | 0x03 => self.line.clear(),
                0x17 => {
                    while self.line.last() == Some(&b' ') {
                        self.line.pop();
                    }
                    while self.line.last().is_some_and(|&c| c != b' ') {
                        self.line.pop();
                    }
                }
                b'\t' => self.line.push(b' '),
                c if c < 0x20 => {}
                c => {
                    if self.line.len() < MAX_KEPT {
                        self.line.push(c);
                    }
                }
            }
        }
        None
    }

    /// Whether the client has a PTY.
    pub(crate) fn pty(&self) -> bool {
        self.pty
    }

    fn take(&mut self, upto: usize, enter: bool) -> Line {
        let raw = std::mem::take(&mut self.line);
        self.escape = Escape::None;
        Line {
            text: String::from_utf8_lossy(&raw).into_owned(),
            raw,
            upto,
            enter,
        }
    }
}

/// A line ended by [`LineEditor::feed`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Line {
    /// The line to check.
    pub(crate) text: String,
    /// Its bytes as kept (what a shell without a PTY reads).
    pub(crate) raw: Vec<u8>,
    /// The fed bytes before the line end: `data[..upto]`.
    pub(crate) upto: usize,
    /// `data[upto]` is the line end (`\r` or `\n`); otherwise the line overflowed.
    pub(crate) enter: bool,
}

impl Line {
    /// Where feeding goes on.
    pub(crate) fn next(&self) -> usize {
        self.upto + usize::from(self.enter)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn typed_lines_are_rebuilt() {
        let mut e = LineEditor::new(true);
        fn entered(e: &mut LineEditor, data: &[u8]) -> (usize, String) {
            let l = e.feed(data).unwrap();
            assert!(l.enter);
            (l.upto, l.text)
        }
        let mut line = |data: &[u8]| entered(&mut e, data);
        assert_eq!(line(b"rm -rf /tmp\x7f\x7f\x7f\r"), (14, "rm -rf /".into()));
        assert_eq!(line(b"ls\x15echo hi\r"), (10, "echo hi".into()));
        assert_eq!(line(b"ls\x1b[A\x1bOB -l\r"), (11, "ls -l".into()));
        assert_eq!(line(b"a b c\x17\x17x\n"), (8, "a x".into()));
        assert_eq!(line("é\x7fe\r".as_bytes()), (4, "e".into()));
        assert_eq!(line(b"sleep 9\x03\r"), (8, String::new()));
        assert_eq!(e.feed(b"rm -rf"), None);
        assert_eq!(entered(&mut e, b" /\rnext"), (2, "rm -rf /".into()));
    }

    #[test]
    fn without_a_pty_lines_are_kept_as_sent() {
        let mut e = LineEditor::new(false);
        let l = e.feed(b"a\x7fb\rc\nd").unwrap();
        assert_eq!((l.upto, l.next(), l.text.as_str()), (5, 6, "a\x7fb\rc"));
        assert_eq!(e.feed(b"tail"), None);
        let long = vec![b'x'; MAX_KEPT + 10];
        let l = e.feed(&long).unwrap();
        assert!(!l.enter);
        assert_eq!((l.upto, l.next()), (MAX_KEPT - 4, MAX_KEPT - 4));
        assert_eq!(l.raw.len(), MAX_KEPT);
    }
}
