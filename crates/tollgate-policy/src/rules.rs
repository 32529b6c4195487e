//! Rules: a name, a match and an action. Validation at load, evaluation per command, and the
//! default pack.
//!
//! Precedence: `deny` beats `approve` beats `allow`; a command no rule matches is allowed. Within
//! one rule every given criterion must match (AND); within one criterion, any listed value
//! matches (OR). A command string with several statements gets the strongest verdict of any of
//! its statements.

use std::collections::HashSet;

use regex::Regex;
use serde::Deserialize;
use tollgate_core::{
    ApprovalMode, ApprovalTerms, PolicyContext, Protocol, Verdict, parse_duration,
};

use crate::PolicyError;
use crate::classify::{Classification, Kind, STATEMENT_TAGS, StatementClass};

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
    /// Protocols (`postgres`); empty = any.
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
    /// Last resort: a regular expression over the normalized text (comments removed,
    /// whitespace collapsed).
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
    protocols: Vec<Protocol>,
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
                "postgres" => Ok(Protocol::Postgres),
                other => Err(at(format!(
                    "protocols: unknown protocol {other:?} (expected \"postgres\")"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
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
        {
            return Err(at(
                "matches every command: give at least one of kinds, statements, objects or regex"
                    .into(),
            ));
        }
        Ok(rule)
    }

    fn applies_to(&self, ctx: &PolicyContext<'_>) -> bool {
        (self.connections.is_empty() || self.connections.iter().any(|g| g.matches(ctx.connection)))
            && (self.groups.is_empty()
                || self.groups.iter().any(|g| ctx.identity.groups.contains(g)))
            && (self.identities.is_empty() || self.identities.contains(&ctx.identity.subject))
            && (self.protocols.is_empty() || self.protocols.contains(&ctx.protocol))
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
    for rule in rules.iter().filter(|r| r.applies_to(ctx)) {
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
                "blocked by rule \"{}\" ({what}){extra}. The statement was not run; if it must be, ask a Tollgate administrator to change the rule",
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
