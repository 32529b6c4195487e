//! Rules: a name, a match and an action. Validation at load, evaluation per command, and the
//! default pack.
//!
//! Precedence: `deny` beats `approve` beats `allow`; a command no rule matches is allowed. Within
//! one rule every given criterion must match (AND); within one criterion, any listed value
//! matches (OR), except `flags`, where every entry must be present. A command string with
//! several statements gets the strongest verdict of any of its statements; a shell line with
//! several commands, the strongest verdict of any of its commands.
//!
//! A rule is a SQL rule (`kinds`, `statements`, `objects`), a shell rule (`programs`, `flags`,
//! `operands`, `redirects`, `shell`) or, with only `regex`, both. SQL rules apply to SQL
//! protocols, shell rules to SSH.

use std::collections::HashSet;

use regex::Regex;
use serde::Deserialize;
use tollgate_core::{
    ApprovalMode, ApprovalTerms, FileOp, PolicyContext, Protocol, Verdict, parse_duration,
};

use crate::PolicyError;
use crate::classify::{Classification, Kind, STATEMENT_TAGS, StatementClass};
use crate::shell::{SHELL_CLASSES, ShellAnalysis, ShellCommand};

/// A rule as written in the configuration (`[[rules]]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name, shown to clients and recorded.
    pub name: String,
    /// `deny`, `approve` or `allow`.
    pub action: String,
    /// Connection-name globs (`prod-*`); empty = any.
    #[serde(default)]
    pub connections: Vec<String>,
    /// Identity groups; empty = anyone.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Identity subjects (key names); empty = anyone.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Protocols (`postgres`, `ssh`); empty = any the rule's criteria apply to.
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Statement kinds: read, write, ddl, dcl, transaction, session, utility, unparsed.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Statement classes such as `drop_table` or `delete_without_where`.
    #[serde(default)]
    pub statements: Vec<String>,
    /// Globs over touched objects (`public.orders`, `payments.*`, `*users*`).
    #[serde(default)]
    pub objects: Vec<String>,
    /// Shell: globs over program names, normalised (`/usr/bin/rm` → `rm`): `rm`, `mkfs*`.
    #[serde(default)]
    pub programs: Vec<String>,
    /// Shell: options that must all be present; each entry lists alternatives with `|`
    /// (`"-r|-R|--recursive"`). Short options match in any cluster (`-rf`, `-fr`, `-r -f`);
    /// long ones also by an unambiguous prefix (`--recur`).
    #[serde(default)]
    pub flags: Vec<String>,
    /// Shell: globs over non-option arguments, paths normalised (`//`, `/.` and `/*` are `/`):
    /// `/`, `of=/dev/sd*`, `reboot`.
    #[serde(default)]
    pub operands: Vec<String>,
    /// Shell: globs over files written by redirection (`> /dev/sda`).
    #[serde(default)]
    pub redirects: Vec<String>,
    /// Shell classes: `opaque`, `fork_bomb`, `download_to_shell`, `network_redirect`.
    #[serde(default)]
    pub shell: Vec<String>,
    /// Files (SFTP, scp): globs over the paths of file operations, as the client names them
    /// with `//` and `/./` collapsed (`/etc/shadow`, `*.pem`, `/srv/releases/*`).
    #[serde(default)]
    pub files: Vec<String>,
    /// Files (SFTP, scp): the operations the rule applies to: `read`, `write`, `remove`,
    /// `rename`, `mkdir`, `rmdir`, `list`, `setstat`, `link`; empty = any.
    #[serde(default)]
    pub file_ops: Vec<String>,
    /// Port forwarding: globs over `host:port` destinations (`127.0.0.1:5432`, `db-*:*`).
    /// Forwarding is refused unless an `allow` rule names the destination.
    #[serde(default)]
    pub forwards: Vec<String>,
    /// Last resort: a regular expression over the normalized text (SQL: comments removed,
    /// whitespace collapsed; shell: whitespace collapsed).
    pub regex: Option<String>,
    /// Extra text appended to the message the client gets.
    pub message: Option<String>,
    /// For `approve`: groups whose members may approve (default: administrators).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// For `approve`: approvals needed (default 1).
    pub min_approvals: Option<u32>,
    /// For `approve`: `ticket` (default) or `hold`.
    pub mode: Option<String>,
    /// For `approve`: how long a request and its approval stay valid (default "1h").
    pub expires: Option<String>,
    /// For `approve` in hold mode: how long the statement waits (default "120s").
    pub hold_timeout: Option<String>,
}

/// The `[policy]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Whether the default rule pack applies (default true).
    #[serde(default = "yes")]
    pub default_rules: bool,
    /// Names of default rules to leave out.
    #[serde(default)]
    pub disable: Vec<String>,
}

impl Default for PolicySpec {
    fn default() -> Self {
        Self {
            default_rules: true,
            disable: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Let it through.
    Allow,
    /// Needs a human.
    Approve,
    /// Never.
    Deny,
}

/// The protocols a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleProtocol {
    /// PostgreSQL (SQL rules).
    Postgres,
    /// SSH exec commands and typed lines (shell rules).
    Ssh,
}

impl RuleProtocol {
    /// The rule protocol of a session protocol.
    pub fn of(protocol: Protocol) -> RuleProtocol {
        match protocol {
            Protocol::Postgres => RuleProtocol::Postgres,
            Protocol::Ssh => RuleProtocol::Ssh,
        }
    }
}

/// Which commands a rule's criteria can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Sql,
    Shell,
    Both,
    File,
    Forward,
}

/// A validated rule.
#[derive(Debug)]
pub struct Rule {
    /// Name.
    pub name: String,
    /// Action.
    pub action: Action,
    connections: Vec<Glob>,
    groups: Vec<String>,
    identities: Vec<String>,
    protocols: Vec<RuleProtocol>,
    family: Family,
    programs: Vec<Glob>,
    flags: Vec<Vec<String>>,
    operands: Vec<Glob>,
    redirects: Vec<Glob>,
    shell: Vec<&'static str>,
    files: Vec<Glob>,
    file_ops: Vec<FileOp>,
    forwards: Vec<Glob>,
    kinds: Vec<Kind>,
    statements: Vec<&'static str>,
    objects: Vec<Glob>,
    regex: Option<Regex>,
    message: Option<String>,
    terms: ApprovalTerms,
}

/// A `*`/`?` glob, matched case-insensitively.
#[derive(Debug, Clone)]
struct Glob(Vec<char>);

impl Glob {
    fn new(pattern: &str) -> Self {
        Glob(pattern.to_lowercase().chars().collect())
    }

    fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.to_lowercase().chars().collect();
        let (p, t) = (&self.0, &text);
        let (mut pi, mut ti) = (0, 0);
        let (mut star, mut mark) = (None, 0);
        while ti < t.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some(pi);
                mark = ti;
                pi += 1;
            } else if let Some(s) = star {
                pi = s + 1;
                mark += 1;
                ti = mark;
            } else {
                return false;
            }
        }
        while pi < p.len() && p[pi] == '*' {
            pi += 1;
        }
        pi == p.len()
    }
}

impl Rule {
    /// Validates a spec; `index` locates it in messages.
    pub fn compile(spec: &RuleSpec, index: usize) -> Result<Rule, PolicyError> {
        let at = |message: String| PolicyError::Rule {
            index,
            name: spec.name.clone(),
            message,
        };
        if spec.name.trim().is_empty() {
            return Err(at("name must not be empty".into()));
        }
        let action = match spec.action.as_str() {
            "deny" => Action::Deny,
            "approve" => Action::Approve,
            "allow" => Action::Allow,
            other => {
                return Err(at(format!(
                    "action {other:?}: expected \"deny\", \"approve\" or \"allow\""
                )));
            }
        };
        let kinds = spec
            .kinds
            .iter()
            .map(|k| {
                Kind::from_name(k).ok_or_else(|| {
                    at(format!(
                        "kinds: unknown kind {k:?} (expected read, write, ddl, dcl, transaction, session, utility or unparsed)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let statements = spec
            .statements
            .iter()
            .map(|s| {
                STATEMENT_TAGS
                    .iter()
                    .find(|t| **t == s.as_str())
                    .copied()
                    .ok_or_else(|| {
                        at(format!(
                            "statements: unknown class {s:?} (expected one of {})",
                            STATEMENT_TAGS.join(", ")
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let protocols = spec
            .protocols
            .iter()
            .map(|p| match p.as_str() {
                "postgres" => Ok(RuleProtocol::Postgres),
                "ssh" => Ok(RuleProtocol::Ssh),
                other => Err(at(format!(
                    "protocols: unknown protocol {other:?} (expected \"postgres\" or \"ssh\")"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shell = spec
            .shell
            .iter()
            .map(|s| {
                SHELL_CLASSES
                    .iter()
                    .find(|t| **t == s.as_str())
                    .copied()
                    .ok_or_else(|| {
                        at(format!(
                            "shell: unknown class {s:?} (expected one of {})",
                            SHELL_CLASSES.join(", ")
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let flags = spec
            .flags
            .iter()
            .map(|f| {
                let alts: Vec<String> = f.split('|').map(|a| a.trim().to_string()).collect();
                if alts.iter().any(|a| !a.starts_with('-') || a.len() < 2) {
                    return Err(at(format!(
                        "flags: {f:?}: each alternative must be an option such as \"-r\" or \"--recursive\""
                    )));
                }
                Ok(alts)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let file_ops = spec
            .file_ops
            .iter()
            .map(|o| {
                FileOp::from_name(o).ok_or_else(|| {
                    at(format!(
                        "file_ops: unknown operation {o:?} (expected one of {})",
                        FileOp::ALL.map(FileOp::name).join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(bad) = spec.forwards.iter().find(|f| !f.contains(':')) {
            return Err(at(format!(
                "forwards: {bad:?}: expected host:port (either may be a glob, e.g. \"127.0.0.1:5432\" or \"db-*:*\")"
            )));
        }
        let sql = !spec.kinds.is_empty() || !spec.statements.is_empty() || !spec.objects.is_empty();
        let shellish = !spec.programs.is_empty()
            || !flags.is_empty()
            || !spec.operands.is_empty()
            || !spec.redirects.is_empty()
            || !shell.is_empty();
        let fileish = !spec.files.is_empty() || !file_ops.is_empty();
        let forwardish = !spec.forwards.is_empty();
        let family = match (sql, shellish, fileish, forwardish) {
            (true, false, false, false) => Family::Sql,
            (false, true, false, false) => Family::Shell,
            (false, false, true, false) => Family::File,
            (false, false, false, true) => Family::Forward,
            (false, false, false, false) => Family::Both,
            _ => {
                return Err(at(
                    "mixes criteria of different kinds: SQL (kinds, statements, objects), shell (programs, flags, operands, redirects, shell), files (files, file_ops) and forwarding (forwards) each need their own rule".into(),
                ));
            }
        };
        if spec.regex.is_some() && matches!(family, Family::File | Family::Forward) {
            return Err(at(
                "regex applies to SQL statements and shell lines, not to file operations or forwards: use files or forwards globs".into(),
            ));
        }
        if matches!(family, Family::File | Family::Forward)
            && protocols.contains(&RuleProtocol::Postgres)
        {
            return Err(at(
                "protocols: \"postgres\" with file or forwarding criteria, which apply to SSH only"
                    .into(),
            ));
        }
        if family == Family::Forward && action == Action::Approve {
            return Err(at(
                "forwards: action \"approve\" is not offered for port forwarding; use \"allow\" or \"deny\"".into(),
            ));
        }
        if family == Family::Sql && protocols.contains(&RuleProtocol::Ssh) {
            return Err(at(
                "protocols: \"ssh\" with SQL criteria (kinds, statements, objects), which never match a shell line".into(),
            ));
        }
        if family == Family::Shell && protocols.contains(&RuleProtocol::Postgres) {
            return Err(at(
                "protocols: \"postgres\" with shell criteria (programs, flags, operands, redirects, shell), which never match SQL".into(),
            ));
        }
        let regex = spec
            .regex
            .as_deref()
            .map(|r| {
                regex::RegexBuilder::new(r)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| at(format!("regex: {e}")))
            })
            .transpose()?;
        let approval_keys = !spec.approvers.is_empty()
            || spec.min_approvals.is_some()
            || spec.mode.is_some()
            || spec.expires.is_some()
            || spec.hold_timeout.is_some();
        if approval_keys && action != Action::Approve {
            return Err(at(
                "approvers, min_approvals, mode, expires and hold_timeout apply only to action = \"approve\"".into(),
            ));
        }
        let secs = |key: &str, v: &Option<String>, default: u64| -> Result<u64, PolicyError> {
            match v {
                None => Ok(default),
                Some(t) => parse_duration(t)
                    .map(|d| d.as_secs())
                    .map_err(|e| at(format!("{key}: {e}"))),
            }
        };
        let terms = ApprovalTerms {
            approvers: spec.approvers.clone(),
            min_approvals: match spec.min_approvals {
                None => 1,
                Some(n) if (1..=10).contains(&n) => n,
                Some(n) => return Err(at(format!("min_approvals: expected 1 to 10, got {n}"))),
            },
            ttl_secs: secs("expires", &spec.expires, 3600)?,
            mode: match spec.mode.as_deref() {
                None | Some("ticket") => ApprovalMode::Ticket,
                Some("hold") => ApprovalMode::Hold,
                Some(other) => {
                    return Err(at(format!(
                        "mode {other:?}: expected \"ticket\" or \"hold\""
                    )));
                }
            },
            hold_secs: secs("hold_timeout", &spec.hold_timeout, 120)?,
        };
        let rule = Rule {
            name: spec.name.clone(),
            terms,
            action,
            connections: spec.connections.iter().map(|g| Glob::new(g)).collect(),
            groups: spec.groups.clone(),
            identities: spec.identities.clone(),
            protocols,
            family,
            programs: spec.programs.iter().map(|g| Glob::new(g)).collect(),
            flags,
            operands: spec.operands.iter().map(|g| Glob::new(g)).collect(),
            redirects: spec.redirects.iter().map(|g| Glob::new(g)).collect(),
            shell,
            files: spec
                .files
                .iter()
                .map(|g| Glob::new(&normalize_path(g)))
                .collect(),
            file_ops,
            forwards: spec.forwards.iter().map(|g| Glob::new(g)).collect(),
            kinds,
            statements,
            objects: spec.objects.iter().map(|g| Glob::new(g)).collect(),
            regex,
            message: spec.message.clone(),
        };
        if rule.kinds.is_empty()
            && rule.statements.is_empty()
            && rule.objects.is_empty()
            && rule.regex.is_none()
            && rule.family == Family::Both
        {
            return Err(at(
                "matches every command: give at least one of kinds, statements, objects, programs, flags, operands, redirects, shell, files, file_ops, forwards or regex"
                    .into(),
            ));
        }
        Ok(rule)
    }

    /// Whether the rule applies to this caller, connection and protocol, for a command of
    /// `family` (SQL statements or shell lines).
    fn applies_to(&self, ctx: &PolicyContext<'_>, protocol: RuleProtocol, family: Family) -> bool {
        (self.family == family
            || (self.family == Family::Both && matches!(family, Family::Sql | Family::Shell)))
            && (self.connections.is_empty()
                || self.connections.iter().any(|g| g.matches(ctx.connection)))
            && (self.groups.is_empty()
                || self.groups.iter().any(|g| ctx.identity.groups.contains(g)))
            && (self.identities.is_empty() || self.identities.contains(&ctx.identity.subject))
            && (self.protocols.is_empty() || self.protocols.contains(&protocol))
    }

    fn has_command_criteria(&self) -> bool {
        !self.programs.is_empty()
            || !self.flags.is_empty()
            || !self.operands.is_empty()
            || !self.redirects.is_empty()
    }

    fn matches_command(&self, c: &ShellCommand, line_classes: &[&str]) -> bool {
        (self.programs.is_empty() || self.programs.iter().any(|g| g.matches(&c.program)))
            && self
                .flags
                .iter()
                .all(|alts| alts.iter().any(|a| flag_present(a, &c.flags)))
            && (self.operands.is_empty()
                || c.operands
                    .iter()
                    .any(|o| self.operands.iter().any(|g| g.matches(o))))
            && (self.redirects.is_empty()
                || c.redirects
                    .iter()
                    .filter(|r| r.writes)
                    .any(|r| self.redirects.iter().any(|g| g.matches(&r.target))))
            && (self.shell.is_empty()
                || self
                    .shell
                    .iter()
                    .any(|s| c.classes.contains(s) || line_classes.contains(s)))
    }

    fn matches_statement(&self, st: &StatementClass, normalized: &dyn Fn() -> String) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&st.kind))
            && (self.statements.is_empty() || self.statements.iter().any(|t| st.tags.contains(t)))
            && (self.objects.is_empty()
                || st
                    .objects
                    .iter()
                    .any(|o| self.objects.iter().any(|g| g.matches(o))))
            && self
                .regex
                .as_ref()
                .is_none_or(|r| r.is_match(&normalized()))
    }
}

/// The default pack, in the order it is documented.
pub fn default_rules() -> Vec<RuleSpec> {
    let rule = |name: &str, action: &str, statements: &[&str], message: &str| RuleSpec {
        name: name.into(),
        action: action.into(),
        statements: statements.iter().map(|s| s.to_string()).collect(),
        message: Some(message.into()),
        ..RuleSpec::default()
    };
    vec![
        rule(
            "deny-drop",
            "deny",
            &["drop_database", "drop_schema", "drop_table"],
            "dropping databases, schemas and tables is not allowed through the gateway",
        ),
        rule(
            "deny-truncate",
            "deny",
            &["truncate"],
            "TRUNCATE is not allowed through the gateway",
        ),
        rule(
            "approve-unbounded-write",
            "approve",
            &["delete_without_where", "update_without_where"],
            "UPDATE or DELETE without a WHERE clause that filters rows",
        ),
        rule(
            "approve-privileges",
            "approve",
            &["grant", "revoke", "role_change"],
            "privilege and role changes",
        ),
        rule(
            "approve-server-access",
            "approve",
            &[
                "copy_program",
                "server_file_access",
                "dangerous_function",
                "dynamic_sql",
            ],
            "server programs, server files, other servers, other sessions or dynamic SQL",
        ),
        rule(
            "approve-unparsed",
            "approve",
            &["unparsed"],
            "the gateway could not parse this statement, so it cannot tell what it does",
        ),
    ]
    .into_iter()
    .chain(default_shell_rules())
    .collect()
}

/// Block devices and kernel memory: writing to them destroys a disk or the running system.
const DEVICES: &[&str] = &[
    "/dev/sd*",
    "/dev/hd*",
    "/dev/vd*",
    "/dev/xvd*",
    "/dev/nvme*",
    "/dev/mmcblk*",
    "/dev/md*",
    "/dev/dm-*",
    "/dev/mapper/*",
    "/dev/disk/*",
    "/dev/loop*",
    "/dev/root",
    "/dev/mem",
    "/dev/kmem",
    "/dev/port",
];

/// System directories whose recursive removal breaks the host.
const SYSTEM_DIRS: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/opt", "/proc", "/root",
    "/sbin", "/srv", "/sys", "/usr", "/var", "~", "~/", "$HOME", "$HOME/", "${HOME}", "${HOME}/",
    // A path the gateway cannot know: `rm -rf $(echo /)`, `rm -rf "$DIR"/`.
    "*$*", "*`*",
];

/// The default pack for shell lines (SSH).
fn default_shell_rules() -> Vec<RuleSpec> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let rule = |name: &str, action: &str, message: &str| RuleSpec {
        name: name.into(),
        action: action.into(),
        protocols: vec!["ssh".into()],
        message: Some(message.into()),
        mode: (action == "approve").then(|| "hold".into()),
        ..RuleSpec::default()
    };
    let recursive = strings(&["-r|-R|--recursive"]);
    vec![
        RuleSpec {
            programs: strings(&["rm"]),
            flags: recursive.clone(),
            operands: strings(&["/"]),
            ..rule(
                "deny-shell-rm-root",
                "deny",
                "removing the root directory recursively is not allowed through the gateway",
            )
        },
        RuleSpec {
            programs: strings(&["rm"]),
            flags: strings(&["--no-preserve-root"]),
            ..rule(
                "deny-shell-rm-no-preserve-root",
                "deny",
                "rm --no-preserve-root is not allowed through the gateway",
            )
        },
        RuleSpec {
            programs: strings(&["rm"]),
            flags: recursive,
            operands: strings(SYSTEM_DIRS),
            ..rule(
                "approve-shell-rm-system",
                "approve",
                "recursive removal of a system or home directory, or of a path only known when it runs",
            )
        },
        RuleSpec {
            programs: strings(&["mkfs*", "mke2fs", "mkswap", "mkdosfs", "mkntfs"]),
            ..rule(
                "deny-shell-mkfs",
                "deny",
                "creating file systems is not allowed through the gateway",
            )
        },
        RuleSpec {
            programs: strings(&["dd"]),
            operands: DEVICES.iter().map(|d| format!("of={d}")).collect(),
            ..rule(
                "deny-shell-dd-device",
                "deny",
                "writing to a disk device with dd is not allowed through the gateway",
            )
        },
        RuleSpec {
            redirects: strings(DEVICES),
            ..rule(
                "deny-shell-write-device",
                "deny",
                "redirecting output to a disk device is not allowed through the gateway",
            )
        },
        RuleSpec {
            programs: strings(&["wipefs", "shred", "blkdiscard", "tee", "cp"]),
            operands: strings(DEVICES),
            ..rule(
                "approve-shell-wipe-device",
                "approve",
                "wiping or writing a disk device",
            )
        },
        RuleSpec {
            programs: strings(&["shutdown", "reboot", "halt", "poweroff"]),
            ..rule(
                "approve-shell-shutdown",
                "approve",
                "shutting down or rebooting the host",
            )
        },
        RuleSpec {
            programs: strings(&["init", "telinit"]),
            operands: strings(&["0", "6"]),
            ..rule(
                "approve-shell-shutdown-init",
                "approve",
                "shutting down or rebooting the host",
            )
        },
        RuleSpec {
            programs: strings(&["systemctl"]),
            operands: strings(&[
                "reboot",
                "poweroff",
                "halt",
                "kexec",
                "soft-reboot",
                "rescue",
                "emergency",
            ]),
            ..rule(
                "approve-shell-shutdown-systemctl",
                "approve",
                "shutting down or rebooting the host",
            )
        },
        RuleSpec {
            programs: strings(&[
                "iptables",
                "ip6tables",
                "iptables-legacy",
                "ip6tables-legacy",
                "iptables-nft",
                "ip6tables-nft",
            ]),
            flags: strings(&["-F|--flush"]),
            ..rule(
                "approve-shell-firewall-flush",
                "approve",
                "flushing the firewall rules",
            )
        },
        RuleSpec {
            programs: strings(&["nft", "ufw"]),
            operands: strings(&["flush", "disable", "reset"]),
            ..rule(
                "approve-shell-firewall-off",
                "approve",
                "flushing or turning off the firewall",
            )
        },
        RuleSpec {
            shell: strings(&["download_to_shell"]),
            ..rule(
                "deny-shell-download-to-shell",
                "deny",
                "running a script straight from a download is not allowed through the gateway; download it, read it, then run the file",
            )
        },
        RuleSpec {
            shell: strings(&["fork_bomb"]),
            ..rule(
                "deny-shell-fork-bomb",
                "deny",
                "a fork bomb is not allowed through the gateway",
            )
        },
        RuleSpec {
            shell: strings(&["network_redirect"]),
            ..rule(
                "approve-shell-network-redirect",
                "approve",
                "a redirection to /dev/tcp or /dev/udp (a network connection from the shell)",
            )
        },
        RuleSpec {
            shell: strings(&["opaque"]),
            ..rule(
                "approve-shell-opaque",
                "approve",
                "the gateway could not read this line completely, so it cannot tell what it runs",
            )
        },
    ]
}

/// Compiles the configured rules plus the default pack (unless turned off).
pub fn compile_rules(policy: &PolicySpec, rules: &[RuleSpec]) -> Result<Vec<Rule>, PolicyError> {
    let defaults = default_rules();
    for d in &policy.disable {
        if !defaults.iter().any(|r| &r.name == d) {
            return Err(PolicyError::Config(format!(
                "policy.disable: {d:?} is not a default rule (they are: {})",
                defaults
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, spec) in rules.iter().enumerate() {
        let rule = Rule::compile(spec, i)?;
        if !names.insert(rule.name.clone()) {
            return Err(PolicyError::Rule {
                index: i,
                name: spec.name.clone(),
                message: "the name is used by another rule".into(),
            });
        }
        out.push(rule);
    }
    if policy.default_rules {
        for spec in defaults
            .iter()
            .filter(|r| !policy.disable.contains(&r.name))
        {
            if names.contains(&spec.name) {
                return Err(PolicyError::Config(format!(
                    "rule name {:?} is taken by the default pack; pick another or disable the default one",
                    spec.name
                )));
            }
            out.push(Rule::compile(spec, usize::MAX)?);
        }
    }
    Ok(out)
}

/// Evaluates rules against a classified command.
pub fn evaluate(
    rules: &[Rule],
    ctx: &PolicyContext<'_>,
    sql: &str,
    class: &Classification,
    dialect: crate::SqlDialect,
) -> Verdict {
    let normalized_cell = std::cell::OnceCell::new();
    let normalized = || {
        normalized_cell
            .get_or_init(|| crate::normalize(sql, dialect))
            .clone()
    };
    let mut best: Option<(&Rule, &StatementClass)> = None;
    let protocol = RuleProtocol::of(ctx.protocol);
    for rule in rules
        .iter()
        .filter(|r| r.applies_to(ctx, protocol, Family::Sql))
    {
        if best.is_some_and(|(b, _)| b.action >= rule.action) {
            continue;
        }
        if let Some(st) = class
            .statements
            .iter()
            .find(|st| rule.matches_statement(st, &normalized))
        {
            best = Some((rule, st));
            if rule.action == Action::Deny {
                break;
            }
        }
    }
    let Some((rule, st)) = best else {
        return Verdict::Allow { rule: None };
    };
    let what = describe(st);
    verdict(rule, &what, "statement")
}

/// Whether an option of a command satisfies one alternative of a rule's `flags` entry.
fn flag_present(alt: &str, flags: &[String]) -> bool {
    match alt.strip_prefix("--") {
        Some(long) => flags.iter().any(|f| {
            f.strip_prefix("--")
                .is_some_and(|g| !g.is_empty() && long.starts_with(g))
        }),
        None => flags.iter().any(|f| f == alt),
    }
}

/// What matched on a shell line, for the message.
enum ShellHit<'a> {
    Command(&'a ShellCommand),
    Line,
}

/// Evaluates rules against a classified shell line (SSH).
pub fn evaluate_shell(
    rules: &[Rule],
    ctx: &PolicyContext<'_>,
    line: &str,
    analysis: &ShellAnalysis,
) -> Verdict {
    let normalized_cell = std::cell::OnceCell::new();
    let normalized = || normalized_cell.get_or_init(|| crate::shell::normalize_shell(line));
    let line_classes = analysis.classes();
    let mut best: Option<(&Rule, ShellHit<'_>)> = None;
    for rule in rules
        .iter()
        .filter(|r| r.applies_to(ctx, RuleProtocol::Ssh, Family::Shell))
    {
        if best.as_ref().is_some_and(|(b, _)| b.action >= rule.action) {
            continue;
        }
        if rule
            .regex
            .as_ref()
            .is_some_and(|r| !r.is_match(normalized()))
        {
            continue;
        }
        let hit = if rule.has_command_criteria() {
            analysis
                .commands
                .iter()
                .find(|c| rule.matches_command(c, &line_classes))
                .map(ShellHit::Command)
        } else if rule.shell.is_empty() {
            // A regex-only rule: the regex matched above.
            Some(ShellHit::Line)
        } else if rule.shell.iter().any(|s| line_classes.contains(s)) {
            Some(ShellHit::Line)
        } else {
            analysis
                .commands
                .iter()
                .find(|c| rule.shell.iter().any(|s| c.classes.contains(s)))
                .map(ShellHit::Command)
        };
        if let Some(hit) = hit {
            let deny = rule.action == Action::Deny;
            best = Some((rule, hit));
            if deny {
                break;
            }
        }
    }
    let Some((rule, hit)) = best else {
        return Verdict::Allow { rule: None };
    };
    let what = match hit {
        ShellHit::Command(c) => describe_command(c),
        ShellHit::Line => describe_line(analysis, &rule.shell),
    };
    verdict(rule, &what, "command")
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() > max {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

fn describe_command(c: &ShellCommand) -> String {
    let mut s = if c.argv.is_empty() {
        let targets: Vec<&str> = c.redirects.iter().map(|r| r.target.as_str()).collect();
        format!("a redirection to {}", targets.join(", "))
    } else {
        c.argv.join(" ")
    };
    s = shorten(&s.replace(['\n', '\r'], " "), 100);
    if !c.via.is_empty() {
        s.push_str(" via ");
        s.push_str(&c.via.join(", "));
    }
    if !c.classes.is_empty() {
        s.push_str("; ");
        s.push_str(&c.classes.join(", "));
    }
    s
}

fn describe_line(analysis: &ShellAnalysis, classes: &[&str]) -> String {
    let mut parts = Vec::new();
    if analysis.fork_bomb && (classes.is_empty() || classes.contains(&"fork_bomb")) {
        parts.push("a fork bomb".to_string());
    }
    if analysis.is_opaque() && (classes.is_empty() || classes.contains(&"opaque")) {
        parts.push(format!(
            "opaque: {}",
            shorten(&analysis.opaque.join("; "), 200)
        ));
    }
    if parts.is_empty() {
        parts.push("the line".into());
    }
    parts.join("; ")
}

fn describe(st: &StatementClass) -> String {
    let mut parts: Vec<String> = vec![st.kind.name().to_string()];
    parts.extend(st.tags.iter().map(|t| t.to_string()));
    let mut s = parts.join(", ");
    if !st.objects.is_empty() {
        let objs: Vec<&str> = st.objects.iter().take(5).map(String::as_str).collect();
        s.push_str(" on ");
        s.push_str(&objs.join(", "));
    }
    s
}

/// Collapses `//` and `/./` in a path, so `/etc//shadow` and `/etc/./shadow` match `/etc/shadow`.
/// `..` is kept: the target resolves it, and a rule on `*` still sees the whole path.
pub fn normalize_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// The verdict for a file operation: the strongest rule whose `files` match one of `paths`
/// (a rename or link names two) and whose `file_ops` include `op`.
pub fn evaluate_file(
    rules: &[Rule],
    ctx: &PolicyContext<'_>,
    op: FileOp,
    paths: &[&str],
) -> Verdict {
    let normalized: Vec<String> = paths.iter().map(|p| normalize_path(p)).collect();
    let mut best: Option<(&Rule, &str)> = None;
    for rule in rules
        .iter()
        .filter(|r| r.applies_to(ctx, RuleProtocol::Ssh, Family::File))
    {
        if best.is_some_and(|(b, _)| b.action >= rule.action) {
            continue;
        }
        if !rule.file_ops.is_empty() && !rule.file_ops.contains(&op) {
            continue;
        }
        let hit = if rule.files.is_empty() {
            normalized.first().map(String::as_str)
        } else {
            normalized
                .iter()
                .find(|p| rule.files.iter().any(|g| g.matches(p)))
                .map(String::as_str)
        };
        if let Some(path) = hit {
            best = Some((rule, path));
            if rule.action == Action::Deny {
                break;
            }
        }
    }
    let Some((rule, path)) = best else {
        return Verdict::Allow { rule: None };
    };
    verdict(
        rule,
        &format!("{} {}", op.name(), shorten(path, 200)),
        "file operation",
    )
}

/// The verdict for a forward to `host:port`: refused unless an `allow` rule names it (and no
/// `deny` rule does).
pub fn evaluate_forward(rules: &[Rule], ctx: &PolicyContext<'_>, host: &str, port: u32) -> Verdict {
    let destination = format!("{host}:{port}");
    let mut allowed: Option<&Rule> = None;
    for rule in rules
        .iter()
        .filter(|r| r.applies_to(ctx, RuleProtocol::Ssh, Family::Forward))
        .filter(|r| r.forwards.iter().any(|g| g.matches(&destination)))
    {
        match rule.action {
            Action::Deny => {
                return verdict(rule, &format!("forwarding to {destination}"), "forward");
            }
            Action::Allow | Action::Approve => {
                if allowed.is_none() {
                    allowed = Some(rule);
                }
            }
        }
    }
    match allowed {
        Some(rule) => Verdict::Allow {
            rule: Some(rule.name.clone()),
        },
        None => Verdict::Deny {
            rule: tollgate_core::NO_FORWARD_RULE.into(),
            message: format!(
                "port forwarding to {destination} is not allowed: no rule allows it for you on this connection"
            ),
        },
    }
}

/// The verdict of the rule that decided, with the message the client sees: `what` describes
/// what matched, `noun` names what was not run ("statement", "command").
fn verdict(rule: &Rule, what: &str, noun: &str) -> Verdict {
    let extra = rule
        .message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    match rule.action {
        Action::Allow => Verdict::Allow {
            rule: Some(rule.name.clone()),
        },
        Action::Deny => Verdict::Deny {
            rule: rule.name.clone(),
            message: format!(
                "blocked by rule \"{}\" ({what}){extra}. The {noun} was not run; if it must be, ask a Tollgate administrator to change the rule",
                rule.name
            ),
        },
        Action::Approve => Verdict::Approve {
            rule: rule.name.clone(),
            message: format!(
                "needs approval under rule \"{}\" ({what}){extra}",
                rule.name
            ),
            terms: rule.terms.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(Glob::new("prod-*").matches("prod-eu"));
        assert!(Glob::new("PROD-*").matches("prod-eu"));
        assert!(!Glob::new("prod-*").matches("staging"));
        assert!(Glob::new("*users*").matches("public.users_archive"));
        assert!(Glob::new("a?c").matches("abc"));
        assert!(!Glob::new("a?c").matches("ac"));
        assert!(Glob::new("*").matches(""));
    }

    #[test]
    fn validation_points_at_the_rule() {
        let bad = |spec: RuleSpec| Rule::compile(&spec, 3).unwrap_err().to_string();
        let base = RuleSpec {
            name: "r".into(),
            action: "deny".into(),
            kinds: vec!["ddl".into()],
            ..RuleSpec::default()
        };
        let e = bad(RuleSpec {
            action: "block".into(),
            ..base.clone()
        });
        assert!(
            e.contains("rules[3]") && e.contains("\"r\"") && e.contains("action"),
            "{e}"
        );
        let e = bad(RuleSpec {
            kinds: vec!["writes".into()],
            ..base.clone()
        });
        assert!(e.contains("kinds") && e.contains("writes"), "{e}");
        let e = bad(RuleSpec {
            statements: vec!["drop_tabel".into()],
            ..base.clone()
        });
        assert!(e.contains("drop_tabel") && e.contains("drop_table"), "{e}");
        let e = bad(RuleSpec {
            regex: Some("(".into()),
            ..base.clone()
        });
        assert!(e.contains("regex"), "{e}");
        let e = bad(RuleSpec {
            kinds: vec![],
            ..base.clone()
        });
        assert!(e.contains("matches every command"), "{e}");
    }
}
