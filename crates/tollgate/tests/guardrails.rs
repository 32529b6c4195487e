//! Guardrails on the live path: the whole corpus through psql and through `tollgate exec`
//! against the real PostgreSQL, with the default rule pack.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};

use common::*;

fn corpus() -> Vec<(String, String)> {
    include_str!("../../tollgate-policy/tests/corpus.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (expect, sql) = l.split_once('\t').unwrap();
            (expect.to_string(), sql.replace("\\n", "\n"))
        })
        .collect()
}

fn setup(db: &TestDb) {
    db.direct(
        "CREATE TABLE users (id int primary key, email text, name text);
         CREATE TABLE orders (id int primary key, customer_id int, amount int, status text);
         CREATE TABLE audit_log (id serial primary key, note text);
         INSERT INTO users VALUES (1, 'a@example.com', 'Ann'), (2, 'b@example.com', 'Bo');
         INSERT INTO orders VALUES (1, 1, 10, 'new'), (2, 2, 20, 'new'), (3, 1, 30, 'new');",
    );
}

/// What must still hold on the target after every must-block and must-hold statement was tried.
fn assert_target_untouched(db: &TestDb) {
    assert_eq!(
        db.direct("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('orders', 'users', 'audit_log')"),
        "3",
        "a table was dropped"
    );
    assert_eq!(
        db.direct("SELECT count(*) FROM orders WHERE id IN (1, 2, 3)"),
        "3",
        "orders were deleted or truncated"
    );
    assert_eq!(
        db.direct("SELECT count(*) FROM users"),
        "2",
        "users were deleted or truncated"
    );
    assert_eq!(
        db.direct("SELECT count(*) FROM orders WHERE amount = 0 OR status = 'void'"),
        "0",
        "an unbounded UPDATE ran"
    );
    assert_eq!(
        pg_admin("SELECT count(*) FROM pg_roles WHERE rolname = 'intruder'"),
        "0",
        "a role was created"
    );
    assert_eq!(
        db.direct("SELECT count(*) FROM information_schema.table_privileges WHERE grantee = 'PUBLIC' AND table_name = 'orders'"),
        "0",
        "a GRANT ran"
    );
}

#[test]
fn corpus_through_live_psql_sessions() {
    let db = TestDb::create("tg_guard");
    setup(&db);
    let gw = Gateway::start(&db.connection("prod", &["eng"], "disable"));
    let key = gw.create_key("agent", "eng", None);
    let mut wrong = Vec::new();
    let corpus = corpus();
    for (expect, sql) in &corpus {
        let o = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(format!(
                "host=127.0.0.1 port={} dbname=prod user=agent sslmode=disable",
                gw.pg_port
            ))
            .args(["-c", sql])
            .env("PGPASSWORD", &key)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        let refused = err.contains("42501") || err.contains("rule \"");
        let got = match (refused, err.contains("needs approval")) {
            (true, true) => "hold",
            (true, false) => "block",
            (false, _) => "pass",
        };
        if got != expect {
            wrong.push(format!("expected {expect}, got {got} for {sql:?}: {err}"));
        }
        if expect == "pass" {
            // The statement may fail on the target (e.g. outside a transaction), but never at the gateway.
            assert!(!err.contains("rule \""), "{sql:?}: {err}");
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_target_untouched(&db);

    // Every verdict is in the record, with the rule that decided it.
    gw.wait_sessions("corpus sessions", |s| {
        s.iter().filter(|x| !x["ended_at"].is_null()).count() >= corpus.len()
    });
    let commands = gw.commands();
    let denied = commands
        .iter()
        .filter(|c| c["outcome"]["status"] == "denied")
        .count();
    let held = commands
        .iter()
        .filter(|c| c["outcome"]["status"] == "approval_required")
        .count();
    assert_eq!(denied, corpus.iter().filter(|(e, _)| e == "block").count());
    assert_eq!(held, corpus.iter().filter(|(e, _)| e == "hold").count());
    let drop = commands
        .iter()
        .find(|c| c["command"]["text"] == "DROP TABLE orders")
        .unwrap();
    assert_eq!(drop["outcome"]["rule"], "deny-drop");
}

#[test]
fn corpus_through_exec() {
    let db = TestDb::create("tg_guard_exec");
    setup(&db);
    let gw = Gateway::start(&db.connection("prod", &["eng"], "disable"));
    let key = gw.create_key("agent", "eng", None);
    let mut wrong = Vec::new();
    for (expect, sql) in corpus() {
        if sql.trim().is_empty() {
            continue; // exec refuses empty input itself
        }
        let o = gw.cli(&key, &["exec", "prod", "-i", &sql]);
        let err = String::from_utf8_lossy(&o.stderr);
        let refused = err.contains("rule \"");
        let got = match (refused, err.contains("needs approval")) {
            (true, true) => "hold",
            (true, false) => "block",
            (false, _) => "pass",
        };
        if got != expect {
            wrong.push(format!("expected {expect}, got {got} for {sql:?}: {err}"));
        }
        if refused {
            assert_ne!(o.status.code(), Some(0), "{sql:?}");
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_target_untouched(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_statement_leaves_the_session_usable_in_every_protocol_mode() {
    let db = TestDb::create("tg_guard_drv");
    setup(&db);
    let gw = Gateway::start(&db.connection("prod", &["eng"], "disable"));
    let key = gw.create_key("agent", "eng", None);
    let client = driver(&gw, "prod", &key).await.unwrap();

    // Simple protocol.
    let e = client.simple_query("DROP TABLE orders").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(
        msg.contains("deny-drop") && msg.contains("administrator"),
        "{msg}"
    );
    // Extended protocol: refused at Parse; the pipeline around it behaves as after any error.
    let e = client.query("TRUNCATE orders", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(e.as_db_error().unwrap().message().contains("deny-truncate"));
    let e = client
        .execute("DELETE FROM orders WHERE $1::int = $1::int", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&e),
        "42501",
        "constant WHERE with a parameter is still unbounded"
    );
    // In a transaction: the refusal does not abort it, and the transaction status is kept.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute("INSERT INTO audit_log (note) VALUES ('in tx')", &[])
        .await
        .unwrap();
    assert!(client.simple_query("DELETE FROM orders").await.is_err());
    client.batch_execute("COMMIT").await.unwrap();
    // Pipelined: allowed statements around a refused one still run.
    let (a, b, c) = tokio::join!(
        client.query_one("SELECT count(*)::int FROM orders", &[]),
        client.query("DROP SCHEMA public CASCADE", &[]),
        client.query_one("SELECT count(*)::int FROM users", &[]),
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 3);
    assert_eq!(sqlstate(&b.unwrap_err()), "42501");
    assert_eq!(c.unwrap().get::<_, i32>(0), 2);
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    // A statement built to be too deep to parse safely is held as unparsed; the gateway lives on.
    let deep = format!("SELECT 1{}", " + 1".repeat(40_000));
    let e = client.simple_query(&deep).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("approve-unparsed"),
        "{e}"
    );
    // Extended protocol: the Parse reaches the target (nothing runs without an approved Execute),
    // which refuses the depth itself.
    let e = client.query(deep.as_str(), &[]).await.unwrap_err();
    assert!(["42501", "54001"].contains(&sqlstate(&e).as_str()), "{e}");
    assert_eq!(
        client
            .query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
    drop(client);
    assert_target_untouched(&db);
    assert_eq!(
        db.direct("SELECT count(*) FROM audit_log WHERE note = 'in tx'"),
        "1"
    );
}

#[test]
fn rules_from_config_apply_by_connection_and_group() {
    let db = TestDb::create("tg_guard_cfg");
    setup(&db);
    let config = format!(
        "[[rules]]\nname = \"agents-read-only\"\naction = \"deny\"\ngroups = [\"agents\"]\nconnections = [\"prod*\"]\nkinds = [\"write\", \"ddl\"]\nmessage = \"agents may only read production\"\n\n{}{}",
        db.connection("prod", &["eng", "agents"], "disable"),
        db.connection("dev", &["eng", "agents"], "disable")
    );
    let gw = Gateway::start(&config);
    let agent = gw.create_key("bot", "agents", None);
    let human = gw.create_key("hu", "eng", None);
    let o = gw.psql(
        "prod",
        &agent,
        "disable",
        &["-c", "INSERT INTO audit_log (note) VALUES ('bot')"],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("agents-read-only") && err.contains("agents may only read production"),
        "{err}"
    );
    for (conn, key, sql) in [
        ("dev", &agent, "INSERT INTO audit_log (note) VALUES ('bot')"),
        (
            "prod",
            &human,
            "INSERT INTO audit_log (note) VALUES ('human')",
        ),
        ("prod", &agent, "SELECT count(*) FROM orders"),
    ] {
        let o = gw.psql(conn, key, "disable", &["-c", sql]);
        assert!(o.status.success(), "{conn} {sql}: {o:?}");
    }
    assert_eq!(db.direct("SELECT count(*) FROM audit_log"), "2");
}
