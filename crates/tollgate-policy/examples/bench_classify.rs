//! Classification plus rule evaluation per statement, over the guardrail corpus: median and p99
//! of a fresh classification (no cache) and of a cached one. Run through `bench/policy.sh`.

use std::time::Instant;

use tollgate_core::{AuthMethod, Identity, Policy, PolicyContext, Protocol};
use tollgate_policy::{ClassifierCache, Engine, PolicySpec, SqlDialect, classify, compile_rules};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus: Vec<String> = include_str!("../tests/corpus.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('\t').map(|(_, s)| s.replace("\\n", "\n")))
        .collect();
    let rules = compile_rules(&PolicySpec::default(), &[])?;
    let engine = Engine::new(rules);
    let identity = Identity {
        subject: "bench".into(),
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
    let rounds = 200;
    let mut fresh = Vec::new();
    let mut verdict = Vec::new();
    for _ in 0..rounds {
        for sql in &corpus {
            let t = Instant::now();
            let c = classify(sql, SqlDialect::Postgres);
            std::hint::black_box(&c);
            fresh.push(t.elapsed().as_secs_f64() * 1e6);
            // Engine::check: cache lookup (hit after the first round) plus rule evaluation.
            let t = Instant::now();
            std::hint::black_box(engine.check(&ctx, sql));
            verdict.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let cache = ClassifierCache::new(SqlDialect::Postgres, 10_000);
    let pgbench = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;";
    let _ = cache.classify(pgbench);
    let mut hits = Vec::new();
    for i in 0..100_000u32 {
        let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i};");
        let t = Instant::now();
        std::hint::black_box(cache.classify(&sql));
        hits.push(t.elapsed().as_secs_f64() * 1e6);
    }
    for v in [&mut fresh, &mut verdict, &mut hits] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    println!("statements in corpus: {}", corpus.len());
    println!(
        "classify, no cache (µs):          median {:.2}  p99 {:.2}",
        percentile(&fresh, 0.5),
        percentile(&fresh, 0.99)
    );
    println!(
        "engine.check, cache + rules (µs): median {:.2}  p99 {:.2}",
        percentile(&verdict, 0.5),
        percentile(&verdict, 0.99)
    );
    println!(
        "pgbench -S shape, cache hit (µs): median {:.2}  p99 {:.2}",
        percentile(&hits, 0.5),
        percentile(&hits, 0.99)
    );
    Ok(())
}
