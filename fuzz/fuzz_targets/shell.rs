#![no_main]
//! Shell classification: `classify_shell` and `Engine::check_shell` with the default pack on the
//! input as a string. Neither may panic; the analysis stays within its limits; and a line the
//! default pack denies is still denied after an ordinary command on the line before it.

use libfuzzer_sys::fuzz_target;
use tollgate_core::{AuthMethod, Identity, Policy, PolicyContext, Protocol, Verdict};
use tollgate_policy::shell::MAX_COMMANDS;
use tollgate_policy::{Engine, PolicySpec, classify_shell, compile_rules};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let analysis = classify_shell(line);
    assert!(analysis.commands.len() <= MAX_COMMANDS);
    for c in &analysis.commands {
        // A command without a program is a bare redirection.
        assert!(!c.program.is_empty() || (c.argv.is_empty() && !c.redirects.is_empty()));
        assert!(!c.program.contains('/'), "program {:?} keeps a path", c.program);
    }

    let rules = compile_rules(&PolicySpec::default(), &[]).expect("the default pack compiles");
    let engine = Engine::new(rules);
    let identity = Identity {
        subject: "fuzz".into(),
        via: AuthMethod::ApiKey,
        key_id: None,
        groups: vec!["eng".into()],
        admin: false,
        expires_at: None,
        kind: None,
        issuer: None,
        client_id: None,
        token_id: None,
        issued_at: None,
    };
    let ctx = PolicyContext {
        identity: &identity,
        connection: "prod",
        protocol: Protocol::Postgres,
    };
    let verdict = engine.check_shell(&ctx, line);
    if matches!(verdict, Verdict::Deny { .. }) {
        let prefixed = format!("true\n{line}");
        let again = engine.check_shell(&ctx, &prefixed);
        assert!(
            matches!(again, Verdict::Deny { .. }),
            "{line:?} is denied ({verdict:?}) but {prefixed:?} is not ({again:?})"
        );
    }
});
