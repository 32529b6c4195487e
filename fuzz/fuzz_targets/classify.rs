#![no_main]
//! SQL classification: `classify` for both dialects, `ClassifierCache` and `Engine::check` with
//! the default pack on the input as a string. None may panic, and a cache must answer what
//! `classify` answers, also when it already holds the entry of a string that differs from the
//! input only in its numbers (same shape key, so the cache answers from that entry).

use libfuzzer_sys::fuzz_target;
use tollgate_core::{AuthMethod, Identity, Policy, PolicyContext, Protocol};
use tollgate_policy::{ClassifierCache, Engine, PolicySpec, SqlDialect, classify, compile_rules};

/// What the numbers of the input are rewritten to before the rewritten string primes a cache:
/// a plain integer, and a number with a dangling exponent sign (`1e-`), which the shape key
/// also reads as one number.
const RENUMBER: [&str; 2] = ["1", "1e-"];

/// `sql` with every number the shape key replaces written as `with`: a run of digits and dots
/// with an optional exponent (`e`, a sign, digits) that does not continue a name or a number.
/// Only ASCII is replaced, so the result is valid UTF-8 again.
fn renumber(sql: &str, with: &str) -> String {
    let b = sql.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    let mut out = Vec::with_capacity(b.len() + 8);
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !(ident(b[i - 1]) || b[i - 1] == b'.')) {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && matches!(b[i], b'e' | b'E') {
                i += 1;
                if i < b.len() && matches!(b[i], b'+' | b'-') {
                    i += 1;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            out.extend_from_slice(with.as_bytes());
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    for dialect in [SqlDialect::Postgres, SqlDialect::MySql] {
        let fresh = classify(sql, dialect);
        assert!(!fresh.statements.is_empty(), "no statement for {sql:?}");

        // An empty cache computes the entry itself.
        let cache = ClassifierCache::new(dialect, 16);
        assert_eq!(
            *cache.classify(sql),
            fresh,
            "{dialect:?}: empty cache disagrees for {sql:?}"
        );
        // Asked again, it answers from the entry.
        assert_eq!(
            *cache.classify(sql),
            fresh,
            "{dialect:?}: cache hit disagrees for {sql:?}"
        );

        // Primed with the same text under other numbers: if the shape keys match, the answer
        // for `sql` comes from the entry of `primer`, and must still be the fresh one.
        for with in RENUMBER {
            let primer = renumber(sql, with);
            if primer == sql {
                continue;
            }
            let cache = ClassifierCache::new(dialect, 16);
            let _ = cache.classify(&primer);
            assert_eq!(
                *cache.classify(sql),
                fresh,
                "{dialect:?}: cache primed with {primer:?} disagrees for {sql:?}"
            );
        }
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
    let _ = engine.check(&ctx, sql);
    let _ = engine.check_opaque(&ctx, sql);
});
