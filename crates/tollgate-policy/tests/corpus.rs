//! The guardrail corpus against the default pack: every statement gets its expected verdict.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_core::{AuthMethod, Identity, Policy, PolicyContext, Protocol, Verdict};
use tollgate_policy::{Engine, PolicySpec, compile_rules};

/// `(expect, statement)` pairs from corpus.tsv.
pub fn corpus() -> Vec<(String, String)> {
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
}

fn identity() -> Identity {
    Identity {
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
    }
}

fn verdict_name(v: &Verdict) -> &'static str {
    match v {
        Verdict::Allow { .. } => "pass",
        Verdict::Deny { .. } => "block",
        Verdict::Approve { .. } => "hold",
    }
}

#[test]
fn default_pack_gives_every_corpus_statement_its_expected_verdict() {
    let engine = Engine::new(compile_rules(&PolicySpec::default(), &[]).unwrap());
    let id = identity();
    let ctx = PolicyContext {
        identity: &id,
        connection: "prod",
        protocol: Protocol::Postgres,
    };
    let corpus = corpus();
    assert!(
        corpus.len() >= 150,
        "corpus has {} statements",
        corpus.len()
    );
    let mut wrong = Vec::new();
    for (expect, sql) in &corpus {
        // Twice: the second answer comes from the shape cache and must agree.
        for _ in 0..2 {
            let v = engine.check(&ctx, sql);
            if verdict_name(&v) != expect {
                wrong.push(format!("expected {expect}, got {v:?} for {sql:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn a_blocked_statement_joined_with_allowed_ones_stays_blocked() {
    let engine = Engine::new(compile_rules(&PolicySpec::default(), &[]).unwrap());
    let id = identity();
    let ctx = PolicyContext {
        identity: &id,
        connection: "prod",
        protocol: Protocol::Postgres,
    };
    let corpus = corpus();
    let blocked: Vec<&String> = corpus
        .iter()
        .filter(|(e, s)| e == "block" && !s.contains("--"))
        .map(|(_, s)| s)
        .collect();
    let passing: Vec<&String> = corpus
        .iter()
        .filter(|(e, s)| e == "pass" && !s.trim().is_empty() && !s.contains("--"))
        .map(|(_, s)| s)
        .collect();
    for b in &blocked {
        for p in &passing {
            for joined in [format!("{p}; {b}"), format!("{b}; {p}")] {
                let v = engine.check(&ctx, &joined);
                assert!(matches!(v, Verdict::Deny { .. }), "{joined:?} gave {v:?}");
            }
        }
    }
}

#[test]
fn rules_scope_by_connection_group_identity_objects_and_regex() {
    use tollgate_policy::RuleSpec;
    let rules = vec![
        RuleSpec {
            name: "prod-no-writes-for-agents".into(),
            action: "deny".into(),
            connections: vec!["prod-*".into()],
            groups: vec!["agents".into()],
            kinds: vec!["write".into(), "ddl".into()],
            ..RuleSpec::default()
        },
        RuleSpec {
            name: "payments-need-approval".into(),
            action: "approve".into(),
            objects: vec!["payments.*".into()],
            ..RuleSpec::default()
        },
        RuleSpec {
            name: "no-sleeps".into(),
            action: "deny".into(),
            regex: Some("(?i)generate_series\\(1, *1000000000\\)".into()),
            ..RuleSpec::default()
        },
        RuleSpec {
            name: "ci-may-read-payments".into(),
            action: "allow".into(),
            identities: vec!["ci".into()],
            objects: vec!["payments.*".into()],
            kinds: vec!["read".into()],
            ..RuleSpec::default()
        },
    ];
    let engine = Engine::new(compile_rules(&PolicySpec::default(), &rules).unwrap());
    let mut agent = identity();
    agent.groups = vec!["agents".into()];
    let human = identity();
    let ctx = |id, conn| PolicyContext {
        identity: id,
        connection: conn,
        protocol: Protocol::Postgres,
    };
    let check = |id, conn, sql| verdict_name(&engine.check(&ctx(id, conn), sql));
    assert_eq!(
        check(&agent, "prod-eu", "INSERT INTO t VALUES (1)"),
        "block"
    );
    assert_eq!(check(&agent, "staging", "INSERT INTO t VALUES (1)"), "pass");
    assert_eq!(check(&human, "prod-eu", "INSERT INTO t VALUES (1)"), "pass");
    assert_eq!(
        check(&human, "prod-eu", "SELECT * FROM payments.cards"),
        "hold"
    );
    assert_eq!(
        check(
            &human,
            "x",
            "select * from   generate_series(1,  1000000000)"
        ),
        "block"
    );
    // Deny beats approve beats allow.
    let mut ci = identity();
    ci.subject = "ci".into();
    assert_eq!(check(&ci, "x", "SELECT * FROM payments.cards"), "hold");
    match engine.check(&ctx(&agent, "prod-1"), "DROP TABLE t") {
        Verdict::Deny { rule, message } => {
            assert_eq!(rule, "prod-no-writes-for-agents");
            assert!(message.contains("prod-no-writes-for-agents"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn default_pack_can_be_trimmed_or_turned_off() {
    let id = identity();
    let ctx = PolicyContext {
        identity: &id,
        connection: "dev",
        protocol: Protocol::Postgres,
    };
    let off = Engine::new(
        compile_rules(
            &PolicySpec {
                default_rules: false,
                disable: vec![],
            },
            &[],
        )
        .unwrap(),
    );
    assert!(matches!(
        off.check(&ctx, "DROP TABLE t"),
        Verdict::Allow { .. }
    ));
    let trimmed = Engine::new(
        compile_rules(
            &PolicySpec {
                default_rules: true,
                disable: vec!["deny-truncate".into()],
            },
            &[],
        )
        .unwrap(),
    );
    assert!(matches!(
        trimmed.check(&ctx, "TRUNCATE t"),
        Verdict::Allow { .. }
    ));
    assert!(matches!(
        trimmed.check(&ctx, "DROP TABLE t"),
        Verdict::Deny { .. }
    ));
    let e = compile_rules(
        &PolicySpec {
            default_rules: true,
            disable: vec!["deny-everything".into()],
        },
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("deny-everything") && e.contains("deny-drop"),
        "{e}"
    );
}
