//! Command classification and rules for Tollgate.
//!
//! [`classify`] reads SQL with a real parser and reports, statement by statement, what it does.
//! [`shell`] reads shell lines (SSH exec commands, typed lines) the same way: command by command.
//! [`rules`] turns that, plus who is asking and where, into a [`tollgate_core::Verdict`].
//! [`Engine`] puts both behind the [`tollgate_core::Policy`] trait the protocol crates call.
//! Everything here is pure: no I/O, no runtime.

pub mod classify;
pub mod rules;
pub mod shell;

use std::sync::Arc;

pub use classify::{Classification, ClassifierCache, Kind, SqlDialect, StatementClass, classify};
pub use rules::{PolicySpec, Rule, RuleProtocol, RuleSpec, compile_rules, default_rules};
pub use shell::{ShellAnalysis, ShellCommand, classify_shell};
use tollgate_core::{FileOp, Policy, PolicyContext, Protocol, Verdict};

/// Errors in policy configuration.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A rule is invalid.
    #[error("rules[{index}] ({name:?}): {message}", index = DisplayIndex(*index))]
    Rule {
        /// Position in `[[rules]]` (or the default pack).
        index: usize,
        /// The rule's name.
        name: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The `[policy]` section is invalid.
    #[error("{0}")]
    Config(String),
}

/// Shows `default` for rules of the default pack.
struct DisplayIndex(usize);

impl std::fmt::Display for DisplayIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == usize::MAX {
            f.write_str("default")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Text with comments removed and whitespace collapsed, for regex rules.
pub fn normalize(sql: &str, dialect: SqlDialect) -> String {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let d: Box<dyn sqlparser::dialect::Dialect> = match dialect {
        SqlDialect::Postgres => Box::new(sqlparser::dialect::PostgreSqlDialect {}),
        SqlDialect::MySql => Box::new(sqlparser::dialect::MySqlDialect {}),
    };
    match Tokenizer::new(d.as_ref(), sql).tokenize() {
        Ok(tokens) => {
            let mut out = String::with_capacity(sql.len());
            let mut space = false;
            for t in tokens {
                match t {
                    Token::Whitespace(_) => space = true,
                    Token::EOF => {}
                    other => {
                        if space && !out.is_empty() {
                            out.push(' ');
                        }
                        space = false;
                        out.push_str(&other.to_string());
                    }
                }
            }
            out
        }
        Err(_) => sql.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Classifier plus rules, shared by every session.
pub struct Engine {
    rules: Vec<Rule>,
    postgres: ClassifierCache,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field(
                "rules",
                &self
                    .rules
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Engine {
    /// Builds the engine from validated rules.
    pub fn new(rules: Vec<Rule>) -> Arc<Self> {
        Arc::new(Self {
            rules,
            postgres: ClassifierCache::new(SqlDialect::Postgres, 10_000),
        })
    }

    /// Rules in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

impl Policy for Engine {
    fn check(&self, ctx: &PolicyContext<'_>, command: &str) -> Verdict {
        if self.rules.is_empty() {
            return Verdict::Allow { rule: None };
        }
        let (class, dialect) = match ctx.protocol {
            Protocol::Postgres => (self.postgres.classify(command), SqlDialect::Postgres),
            Protocol::Ssh => return self.check_shell(ctx, command),
        };
        rules::evaluate(&self.rules, ctx, command, &class, dialect)
    }

    fn check_opaque(&self, ctx: &PolicyContext<'_>, description: &str) -> Verdict {
        let class = Classification {
            statements: vec![StatementClass::unparsed()],
        };
        rules::evaluate(&self.rules, ctx, description, &class, SqlDialect::Postgres)
    }

    fn check_shell(&self, ctx: &PolicyContext<'_>, line: &str) -> Verdict {
        if self.rules.is_empty() {
            return Verdict::Allow { rule: None };
        }
        rules::evaluate_shell(&self.rules, ctx, line, &classify_shell(line))
    }

    fn check_file(&self, ctx: &PolicyContext<'_>, op: FileOp, path: &str) -> Verdict {
        rules::evaluate_file(&self.rules, ctx, op, &[path])
    }

    fn check_forward(&self, ctx: &PolicyContext<'_>, host: &str, port: u32) -> Verdict {
        rules::evaluate_forward(&self.rules, ctx, host, port)
    }
}
