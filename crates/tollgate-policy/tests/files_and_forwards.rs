//! File-operation rules (SFTP, scp) and port-forwarding rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_core::{AuthMethod, FileOp, Identity, Policy, PolicyContext, Protocol, Verdict};
use tollgate_policy::{Engine, PolicySpec, RuleSpec, compile_rules};

fn identity(groups: &[&str]) -> Identity {
    Identity {
        subject: "agent".into(),
        via: AuthMethod::ApiKey,
        key_id: Some("k".into()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        admin: false,
        expires_at: None,
        kind: None,
        issuer: None,
        client_id: None,
        token_id: None,
        issued_at: None,
    }
}

fn engine(rules: Vec<RuleSpec>) -> std::sync::Arc<Engine> {
    Engine::new(compile_rules(&PolicySpec::default(), &rules).unwrap())
}

fn compile_error(rule: RuleSpec) -> String {
    compile_rules(&PolicySpec::default(), &[rule])
        .expect_err("the rule is refused")
        .to_string()
}

fn rule(name: &str, action: &str) -> RuleSpec {
    RuleSpec {
        name: name.into(),
        action: action.into(),
        ..RuleSpec::default()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn file_rules_match_paths_and_operations() {
    let e = engine(vec![
        RuleSpec {
            files: strings(&["/etc/shadow", "*.pem"]),
            ..rule("deny-secrets", "deny")
        },
        RuleSpec {
            files: strings(&["/srv/releases/*"]),
            file_ops: strings(&["write", "remove", "rename"]),
            ..rule("approve-release-changes", "approve")
        },
    ]);
    let id = identity(&["ops"]);
    let ctx = PolicyContext {
        identity: &id,
        connection: "web-1",
        protocol: Protocol::Ssh,
    };
    for path in [
        "/etc/shadow",
        "/etc//shadow",
        "/etc/./shadow",
        "/home/me/key.PEM",
    ] {
        match e.check_file(&ctx, FileOp::Read, path) {
            Verdict::Deny { rule, message } => {
                assert_eq!(rule, "deny-secrets");
                assert!(message.contains("read /"), "{message}");
                assert!(message.contains("file operation was not run"), "{message}");
            }
            v => panic!("{path}: {v:?}"),
        }
    }
    assert_eq!(
        e.check_file(&ctx, FileOp::Read, "/srv/releases/app.tar"),
        Verdict::Allow { rule: None }
    );
    assert!(matches!(
        e.check_file(&ctx, FileOp::Write, "/srv/releases/app.tar"),
        Verdict::Approve { rule, .. } if rule == "approve-release-changes"
    ));
    assert_eq!(
        e.check_file(&ctx, FileOp::Write, "/tmp/x"),
        Verdict::Allow { rule: None }
    );
    // The default pack has no file rules: everything is allowed.
    let defaults = engine(Vec::new());
    assert_eq!(
        defaults.check_file(&ctx, FileOp::Remove, "/etc/passwd"),
        Verdict::Allow { rule: None }
    );
}

#[test]
fn forwarding_is_refused_unless_a_rule_allows_it() {
    let e = engine(vec![
        RuleSpec {
            forwards: strings(&["127.0.0.1:5432", "db-*:*"]),
            groups: strings(&["dba"]),
            ..rule("allow-db-tunnels", "allow")
        },
        RuleSpec {
            forwards: strings(&["db-secret:*"]),
            ..rule("deny-secret-db", "deny")
        },
    ]);
    let dba = identity(&["dba"]);
    let other = identity(&["ops"]);
    let ctx = |id| PolicyContext {
        identity: id,
        connection: "bastion",
        protocol: Protocol::Ssh,
    };
    assert_eq!(
        e.check_forward(&ctx(&dba), "127.0.0.1", 5432),
        Verdict::Allow {
            rule: Some("allow-db-tunnels".into())
        }
    );
    assert_eq!(
        e.check_forward(&ctx(&dba), "db-eu", 6432),
        Verdict::Allow {
            rule: Some("allow-db-tunnels".into())
        }
    );
    match e.check_forward(&ctx(&dba), "db-secret", 5432) {
        Verdict::Deny { rule, .. } => assert_eq!(rule, "deny-secret-db"),
        v => panic!("{v:?}"),
    }
    for (id, host, port) in [(&dba, "127.0.0.1", 22), (&other, "127.0.0.1", 5432)] {
        match e.check_forward(&ctx(id), host, port) {
            Verdict::Deny { rule, message } => {
                assert_eq!(rule, tollgate_core::NO_FORWARD_RULE);
                assert!(message.contains(&format!("{host}:{port}")), "{message}");
            }
            v => panic!("{v:?}"),
        }
    }
    // No rules at all: still refused.
    assert!(matches!(
        engine(Vec::new()).check_forward(&ctx(&dba), "127.0.0.1", 5432),
        Verdict::Deny { .. }
    ));
}

#[test]
fn file_and_forward_rules_are_validated() {
    let e = compile_error(RuleSpec {
        file_ops: strings(&["download"]),
        ..rule("r", "deny")
    });
    assert!(e.contains("unknown operation \"download\""), "{e}");
    let e = compile_error(RuleSpec {
        forwards: strings(&["5432"]),
        ..rule("r", "allow")
    });
    assert!(e.contains("expected host:port"), "{e}");
    let e = compile_error(RuleSpec {
        forwards: strings(&["*:5432"]),
        ..rule("r", "approve")
    });
    assert!(e.contains("not offered for port forwarding"), "{e}");
    let e = compile_error(RuleSpec {
        files: strings(&["/etc/*"]),
        programs: strings(&["cat"]),
        ..rule("r", "deny")
    });
    assert!(e.contains("each need their own rule"), "{e}");
    let e = compile_error(RuleSpec {
        files: strings(&["/etc/*"]),
        protocols: strings(&["postgres"]),
        ..rule("r", "deny")
    });
    assert!(e.contains("apply to SSH only"), "{e}");
    let e = compile_error(RuleSpec {
        files: strings(&["/etc/*"]),
        regex: Some("x".into()),
        ..rule("r", "deny")
    });
    assert!(e.contains("not to file operations"), "{e}");
}
