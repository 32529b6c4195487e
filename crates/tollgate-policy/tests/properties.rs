//! Properties of the classifier and the default pack, on statements built from the guardrail
//! corpus (corpus.tsv): a blocked statement stays blocked whatever allowed statements it is
//! batched with and however its keywords are cased, numbers never change a verdict, and no
//! printable ASCII string makes the classifier panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, LazyLock};

use proptest::prelude::*;
use proptest::sample::Index;
use tollgate_core::{AuthMethod, Identity, Policy, PolicyContext, Protocol, Verdict};
use tollgate_policy::{
    ClassifierCache, Engine, PolicySpec, Rule, SqlDialect, classify, compile_rules, rules,
};

/// `(expect, statement)` pairs from corpus.tsv (`\n` in a statement is a newline).
static CORPUS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    include_str!("corpus.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (expect, sql) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("bad corpus line {l:?}"));
            (expect.to_string(), sql.replace("\\n", "\n"))
        })
        .collect()
});

fn statements(expect: &str) -> Vec<&'static str> {
    CORPUS
        .iter()
        .filter(|(e, _)| e == expect)
        .map(|(_, s)| s.as_str())
        .collect()
}

static BLOCKED: LazyLock<Vec<&'static str>> = LazyLock::new(|| statements("block"));

/// Allowed statements to batch with, `COPY ... FROM STDIN` included: what follows it on the
/// next line is SQL too (see `copy_from_stdin_does_not_hide_the_lines_after_it`).
static PASSING: LazyLock<Vec<&'static str>> = LazyLock::new(|| statements("pass"));

/// Corpus statements with no quotes and no `$` and at least one integer to change, with their
/// expected verdict.
static NUMBERED: LazyLock<Vec<(&'static str, &'static str)>> = LazyLock::new(|| {
    CORPUS
        .iter()
        .filter(|(_, s)| !s.contains(['\'', '"', '$']) && !integer_spans(s).is_empty())
        .map(|(e, s)| (e.as_str(), s.as_str()))
        .collect()
});

/// The default pack, for verdicts computed without the engine's shape cache.
static RULES: LazyLock<Vec<Rule>> =
    LazyLock::new(|| compile_rules(&PolicySpec::default(), &[]).unwrap());

/// An engine shared by every case, so its shape cache fills up as it would in a gateway.
static ENGINE: LazyLock<Arc<Engine>> =
    LazyLock::new(|| Engine::new(compile_rules(&PolicySpec::default(), &[]).unwrap()));

static IDENTITY: LazyLock<Identity> = LazyLock::new(|| Identity {
    subject: "agent".into(),
    via: AuthMethod::ApiKey,
    key_id: Some("k".into()),
    groups: vec!["eng".into()],
    admin: false,
    expires_at: None,
    kind: None,
    issuer: None,
    client_id: None,
    token_id: None,
    issued_at: None,
});

fn ctx() -> PolicyContext<'static> {
    PolicyContext {
        identity: &IDENTITY,
        connection: "prod",
        protocol: Protocol::Postgres,
    }
}

/// The verdict from a fresh classification (no cache).
fn fresh_verdict(sql: &str) -> Verdict {
    let class = classify(sql, SqlDialect::Postgres);
    rules::evaluate(&RULES, &ctx(), sql, &class, SqlDialect::Postgres)
}

/// The verdict from the shared engine (through its shape cache).
fn engine_verdict(sql: &str) -> Verdict {
    ENGINE.check(&ctx(), sql)
}

fn verdict_name(v: &Verdict) -> &'static str {
    match v {
        Verdict::Allow { .. } => "pass",
        Verdict::Deny { .. } => "block",
        Verdict::Approve { .. } => "hold",
    }
}

/// What may come between two statements of a batch.
const SEPARATORS: &[&str] = &[
    ";",
    "; ",
    ";\n",
    "; /* x */ ",
    ";-- c\n",
    " ;\t",
    ";\r\n",
    "/* a */;/* b */",
    ";;",
    "; ;\n",
    ";\n-- only a comment\n",
    "; /* nested /* x */ y */ ",
];

/// What may come before the first or after the last statement.
const ENDS: &[&str] = &["", " ", "\n", "/* lead */ ", "-- lead\n", ";", " ;"];

/// Joins statements with the given separators. A statement whose last line holds `--` gets a
/// newline first, so the separator is not swallowed by its comment.
fn join(parts: &[&str], seps: &[&str], lead: &str, tail: &str) -> String {
    let mut out = String::from(lead);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            if out.rsplit('\n').next().is_some_and(|l| l.contains("--")) {
                out.push('\n');
            }
            out.push_str(seps[(i - 1) % seps.len()]);
        }
        out.push_str(part);
    }
    if out.rsplit('\n').next().is_some_and(|l| l.contains("--")) {
        out.push('\n');
    }
    out.push_str(tail);
    out
}

/// Upper- or lower-cases each ASCII letter by `mask` (cycled). Only for text without string
/// literals or quoted identifiers, where case does not matter to PostgreSQL.
fn recase(sql: &str, mask: &[bool]) -> String {
    let mut k = 0;
    sql.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                let upper = mask[k % mask.len()];
                k += 1;
                if upper {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            } else {
                c
            }
        })
        .collect()
}

/// Byte ranges of the standalone integers of `sql` (digit runs not touching a name, a dot or
/// another digit). Only used on text without quotes or `$`.
fn integer_spans(sql: &str) -> Vec<(usize, usize)> {
    let b = sql.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'.';
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !word(b[i - 1])) {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == b.len() || !word(b[i]) {
                spans.push((start, i));
            }
        } else {
            i += 1;
        }
    }
    spans
}

/// `sql` with its k-th standalone integer replaced by `numbers[k]` (cycled).
fn renumber(sql: &str, numbers: &[String]) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut at = 0;
    for (k, (start, end)) in integer_spans(sql).into_iter().enumerate() {
        out.push_str(&sql[at..start]);
        out.push_str(&numbers[k % numbers.len()]);
        at = end;
    }
    out.push_str(&sql[at..]);
    out
}

fn integer() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..10).prop_map(|n| n.to_string()),
        (0u64..1_000_000).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        // Leading zeros and values past 64 bits.
        "[0-9]{1,40}",
    ]
}

/// Fragments that steer random text into the classifier's interesting paths: statement
/// keywords, quotes of every kind, comments, DO bodies, numbers.
const FRAGMENTS: &[&str] = &[
    "SELECT",
    "DROP",
    "TABLE",
    "TRUNCATE",
    "DELETE",
    "UPDATE",
    "SET",
    "FROM",
    "WHERE",
    "WITH",
    "AS",
    "DO",
    "BEGIN",
    "END",
    "EXECUTE",
    "PERFORM",
    "COPY",
    "PROGRAM",
    "STDIN",
    "VACUUM",
    "ANALYZE",
    "GRANT",
    "orders",
    "t",
    "pg_read_file",
    "(",
    ")",
    ",",
    ".",
    ";",
    "::",
    "=",
    "$$",
    "$x$",
    "$1",
    "'",
    "''",
    "E'",
    "\\",
    "\"",
    "`",
    "--",
    "/*",
    "*/",
    "/*!",
    "#",
    "1",
    "1e-",
    "1.5",
    "0x1F",
    " ",
    "\n",
];

fn fragment_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..32).prop_map(|parts| parts.join(" "))
}

/// 256 cases per property, or `PROPTEST_CASES` for a longer hunt.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 256;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    /// A blocked statement batched with allowed ones, before or after them, with any
    /// separators and (when it has no literals) any casing, is still denied.
    #[test]
    fn a_blocked_statement_stays_blocked_in_any_batch(
        blocked in any::<Index>(),
        passing in prop::collection::vec(any::<Index>(), 1..4),
        at in any::<Index>(),
        seps in prop::collection::vec(prop::sample::select(SEPARATORS), 3),
        lead in prop::sample::select(ENDS),
        tail in prop::sample::select(ENDS),
        mask in prop::collection::vec(any::<bool>(), 1..32),
    ) {
        let b = *blocked.get(BLOCKED.as_slice());
        let b = if b.contains(['\'', '"', '$']) { b.to_string() } else { recase(b, &mask) };
        let mut parts: Vec<&str> = passing.iter().map(|i| *i.get(PASSING.as_slice())).collect();
        parts.insert(at.index(parts.len() + 1), &b);
        let sql = join(&parts, &seps, lead, tail);
        let fresh = fresh_verdict(&sql);
        prop_assert!(matches!(fresh, Verdict::Deny { .. }), "{sql:?} gave {fresh:?}");
        let cached = engine_verdict(&sql);
        prop_assert!(matches!(cached, Verdict::Deny { .. }), "{sql:?} gave {cached:?} from the engine");
    }

    /// Replacing the integers of a statement by other non-negative integers changes neither
    /// its classification (both dialects) nor its verdict, fresh or through the shape cache.
    #[test]
    fn numbers_never_change_a_verdict(
        pick in any::<Index>(),
        numbers in prop::collection::vec(integer(), 1..8),
    ) {
        let (expect, sql) = *pick.get(NUMBERED.as_slice());
        let changed = renumber(sql, &numbers);
        for dialect in [SqlDialect::Postgres, SqlDialect::MySql] {
            prop_assert_eq!(
                classify(&changed, dialect),
                classify(sql, dialect),
                "{:?}: {:?} and {:?}", dialect, changed, sql
            );
        }
        let fresh = fresh_verdict(&changed);
        prop_assert_eq!(verdict_name(&fresh), expect, "{:?} gave {:?}", changed, fresh);
        let cached = engine_verdict(&changed);
        prop_assert_eq!(verdict_name(&cached), expect, "{:?} gave {:?} from the engine", changed, cached);
    }

    /// Printable ASCII never makes the classifier, a cache or the engine panic, and always
    /// gives at least one statement.
    #[test]
    fn printable_ascii_never_panics(sql in prop_oneof!["[ -~]{0,200}", fragment_soup()]) {
        for dialect in [SqlDialect::Postgres, SqlDialect::MySql] {
            let fresh = classify(&sql, dialect);
            prop_assert!(!fresh.statements.is_empty(), "{dialect:?}: no statement for {sql:?}");
            let cache = ClassifierCache::new(dialect, 4);
            prop_assert_eq!(&*cache.classify(&sql), &fresh, "{:?}: {:?}", dialect, sql);
        }
        let _ = engine_verdict(&sql);
    }
}

#[test]
fn the_generators_have_material() {
    assert!(BLOCKED.len() >= 30, "{} blocked statements", BLOCKED.len());
    assert!(PASSING.len() >= 60, "{} passing statements", PASSING.len());
    assert!(
        NUMBERED.len() >= 15,
        "{} numbered statements",
        NUMBERED.len()
    );
    assert!(NUMBERED.iter().any(|(e, _)| *e == "block"));
    assert!(NUMBERED.iter().any(|(e, _)| *e == "hold"));
    assert!(NUMBERED.iter().any(|(e, _)| *e == "pass"));
    assert_eq!(
        renumber(
            "DELETE FROM t1 WHERE id = 10 AND 1=1 OR x.2 = 3",
            &["7".into(), "8".into()]
        ),
        "DELETE FROM t1 WHERE id = 7 AND 8=7 OR x.2 = 8"
    );
    assert_eq!(
        join(&["SELECT 1 -- c", "DROP TABLE t"], &[";"], "", ""),
        "SELECT 1 -- c\n;DROP TABLE t"
    );
    assert_eq!(recase("drop table T", &[true, false]), "DrOp TaBlE t");
}

/// PostgreSQL parses a whole Query string as SQL (COPY data only ever arrives in CopyData
/// messages), so a statement on the line after `COPY ... FROM STDIN;` runs once the copy ends.
#[test]
fn copy_from_stdin_does_not_hide_the_lines_after_it() {
    for sql in [
        "COPY orders FROM STDIN;\nDROP TABLE orders",
        "copy orders from stdin with (format csv);\nTRUNCATE orders",
    ] {
        let fresh = fresh_verdict(sql);
        assert!(
            matches!(fresh, Verdict::Deny { .. }),
            "{sql:?} gave {fresh:?}"
        );
    }
    let sql = "COPY orders FROM STDIN;\nDELETE FROM orders";
    let fresh = fresh_verdict(sql);
    assert!(
        matches!(fresh, Verdict::Approve { .. }),
        "{sql:?} gave {fresh:?}"
    );
}

/// Strings that differ from a cached one only where a loose number lexer would see a number,
/// but that the tokenizer reads differently: `1e--` is the number 1, the name `e` and a line
/// comment (a lexer taking `1e-` as a number sees a minus); `1.2.3`, `2.5.` and `1e-` do not
/// parse. Each must get its own classification, not the cached one.
#[test]
fn the_shape_cache_never_answers_for_a_string_that_tokenizes_differently() {
    let harmless = "SELECT 1- 0 /*\n; DROP TABLE t -- */";
    let dropping = "SELECT 1e-- 0 /*\n; DROP TABLE t -- */";
    assert!(matches!(fresh_verdict(harmless), Verdict::Allow { .. }));
    assert!(matches!(fresh_verdict(dropping), Verdict::Deny { .. }));
    let engine = Engine::new(compile_rules(&PolicySpec::default(), &[]).unwrap());
    let _ = engine.check(&ctx(), harmless);
    let v = engine.check(&ctx(), dropping);
    assert!(matches!(v, Verdict::Deny { .. }), "{dropping:?} gave {v:?}");

    for dialect in [SqlDialect::Postgres, SqlDialect::MySql] {
        for (first, then) in [
            ("SELECT 1", "SELECT 1.2.3"),
            ("SELECT 1", "SELECT 2.5."),
            ("SELECT 1", "SELECT 1e-"),
            ("SELECT 1e-", "SELECT 1"),
            ("SELECT 1 + 2", "SELECT 1..2"),
            (harmless, dropping),
        ] {
            let cache = ClassifierCache::new(dialect, 16);
            let _ = cache.classify(first);
            assert_eq!(
                *cache.classify(then),
                classify(then, dialect),
                "{dialect:?}: {then:?} after {first:?}"
            );
        }
    }
}

/// In MySQL `@` is part of a name: `t@2` is a table and `@1` a user variable, so the digits
/// after `@` are not a number.
#[test]
fn the_mysql_shape_cache_keeps_names_with_at() {
    for (first, then) in [
        ("SELECT * FROM t@1", "SELECT * FROM t@2"),
        ("SELECT @1", "SELECT @2.5"),
    ] {
        let cache = ClassifierCache::new(SqlDialect::MySql, 16);
        let _ = cache.classify(first);
        assert_eq!(
            *cache.classify(then),
            classify(then, SqlDialect::MySql),
            "{then:?} after {first:?}"
        );
    }
}
