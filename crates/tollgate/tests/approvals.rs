//! Approvals end to end: ticket and hold modes, self-approval refused, approvers' groups, a
//! changed statement after approval refused, one use per approval, denial, expiry, minimum
//! approvals, `approvals wait`, and the record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn rules() -> &'static str {
    r#"
[[rules]]
name = "orders-writes"
action = "approve"
objects = ["orders"]
kinds = ["write"]
approvers = ["dba"]
mode = "ticket"

[[rules]]
name = "users-writes"
action = "approve"
objects = ["users"]
kinds = ["write"]
approvers = ["dba"]
mode = "hold"
min_approvals = 2
hold_timeout = "4s"

[[rules]]
name = "audit-writes"
action = "approve"
objects = ["audit_log"]
kinds = ["write"]
approvers = ["dba"]
expires = "1s"

"#
}

struct Setup {
    db: TestDb,
    gw: Gateway,
    agent: String,
    dba1: String,
    dba2: String,
    other: String,
}

fn setup(prefix: &str) -> Setup {
    let db = TestDb::create(prefix);
    db.direct(
        "CREATE TABLE orders (id int primary key, amount int);
         CREATE TABLE users (id int primary key, name text);
         CREATE TABLE audit_log (id int, note text);
         INSERT INTO orders VALUES (1, 10), (2, 20), (999, 1);
         INSERT INTO users VALUES (1, 'ann');",
    );
    let gw = Gateway::start(&format!(
        "{}{}",
        rules(),
        db.connection("prod", &["eng"], "disable")
    ));
    let agent = gw.create_key("agent", "eng", None);
    let dba1 = gw.create_key("dba1", "dba", None);
    let dba2 = gw.create_key("dba2", "dba", None);
    let other = gw.create_key("other", "eng", None);
    Setup {
        db,
        gw,
        agent,
        dba1,
        dba2,
        other,
    }
}

fn psql_err(gw: &Gateway, key: &str, sql: &str) -> String {
    let o = gw.psql("prod", key, "disable", &["-c", sql]);
    assert!(!o.status.success(), "{sql:?} should have been held: {o:?}");
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn approval_id(text: &str) -> String {
    let at = text
        .find("apr_")
        .unwrap_or_else(|| panic!("no approval id in {text:?}"));
    text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn approvals_json(gw: &Gateway, key: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&gw.cli_ok(key, &["approvals", "list", "--json"])).unwrap()
}

#[test]
fn ticket_mode_binds_the_exact_statement_and_releases_it_once() {
    let Setup {
        db,
        gw,
        agent,
        dba1,
        other,
        ..
    } = setup("tg_apr_ticket");
    let err = psql_err(&gw, &agent, "DELETE FROM orders WHERE id = 1");
    assert!(
        err.contains("orders-writes") && err.contains("pending"),
        "{err}"
    );
    let id = approval_id(&err);
    assert_eq!(db.direct("SELECT count(*) FROM orders"), "3", "nothing ran");

    // Asking again before a decision gives the same request.
    assert_eq!(
        approval_id(&psql_err(&gw, &agent, "DELETE FROM orders WHERE id = 1")),
        id
    );

    // The requester sees it; a non-approver cannot decide it; nobody approves their own.
    let mine = approvals_json(&gw, &agent);
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["statement"], "DELETE FROM orders WHERE id = 1");
    assert_eq!(mine[0]["status"], "pending");
    let o = gw.cli(&agent, &["approvals", "approve", &id]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("your own request"),
        "{o:?}"
    );
    let o = gw.cli(&other, &["approvals", "approve", &id]);
    assert!(!o.status.success(), "{o:?}");
    let o = gw.cli(ADMIN_KEY, &["approvals", "approve", &id]);
    assert!(
        !o.status.success(),
        "admins are not in the approver group: {o:?}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("dba"), "{o:?}");

    let out = gw.cli_ok(
        &dba1,
        &["approvals", "approve", &id, "--reason", "ticket OPS-12"],
    );
    assert!(out.contains("approved"), "{out}");

    // A different statement (id = 999) is not released by that approval.
    let err = psql_err(&gw, &agent, "DELETE FROM orders WHERE id = 999");
    assert_ne!(approval_id(&err), id);
    assert_eq!(db.direct("SELECT count(*) FROM orders WHERE id = 999"), "1");
    // Another identity is not released by it either.
    let err = psql_err(&gw, &other, "DELETE FROM orders WHERE id = 1");
    assert_ne!(approval_id(&err), id);

    // The identical statement runs, once.
    let o = gw.psql(
        "prod",
        &agent,
        "disable",
        &["-c", "DELETE FROM orders WHERE id = 1"],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(db.direct("SELECT count(*) FROM orders WHERE id = 1"), "0");
    let err = psql_err(&gw, &agent, "DELETE FROM orders WHERE id = 1");
    assert_ne!(approval_id(&err), id, "an approval is used once");

    let shown: serde_json::Value =
        serde_json::from_str(&gw.cli_ok(&dba1, &["approvals", "show", &id, "--json"])).unwrap();
    assert_eq!(shown["status"], "used");
    assert_eq!(shown["decisions"][0]["by"], "dba1");
    assert_eq!(shown["decisions"][0]["reason"], "ticket OPS-12");
    assert_eq!(shown["sha256"].as_str().unwrap().len(), 64);

    // The record has both the refused attempts and the approved run.
    gw.wait_sessions("sessions", |s| {
        s.iter().filter(|x| !x["ended_at"].is_null()).count() >= 6
    });
    let commands = gw.commands();
    let ran = commands
        .iter()
        .find(|c| c["outcome"]["approval"] == id.as_str() && c["outcome"]["status"] == "ok")
        .expect("approved run recorded");
    assert_eq!(ran["outcome"]["rule"], "orders-writes");
    let asked = commands
        .iter()
        .find(|c| {
            c["outcome"]["approval"] == id.as_str() && c["outcome"]["status"] == "approval_required"
        })
        .expect("the request is recorded");
    let told = asked["outcome"]["error"]["message"].as_str().unwrap();
    assert!(told.contains("pending") && told.contains(&id), "{asked}");
}

#[test]
fn denial_expiry_and_exec() {
    let Setup {
        db,
        gw,
        agent,
        dba1,
        ..
    } = setup("tg_apr_deny");
    // Deny, with a reason the requester can read.
    let id = approval_id(&psql_err(&gw, &agent, "DELETE FROM orders WHERE id = 2"));
    gw.cli_ok(
        &dba1,
        &[
            "approvals",
            "deny",
            &id,
            "--reason",
            "not during the freeze",
        ],
    );
    let shown: serde_json::Value =
        serde_json::from_str(&gw.cli_ok(&agent, &["approvals", "show", &id, "--json"])).unwrap();
    assert_eq!(shown["status"], "denied");
    let o = gw.cli(&dba1, &["approvals", "approve", &id]);
    assert!(
        !o.status.success(),
        "a denied request cannot be approved later"
    );
    // Asking again while the denial stands gets the denial and its reason, in the session's record.
    let err = psql_err(&gw, &agent, "DELETE FROM orders WHERE id = 2");
    assert!(
        err.contains(&id) && err.contains("not during the freeze"),
        "{err}"
    );
    assert_eq!(db.direct("SELECT count(*) FROM orders WHERE id = 2"), "1");

    // Expiry (the audit-writes rule's requests live one second).
    let id = approval_id(&psql_err(
        &gw,
        &agent,
        "INSERT INTO audit_log VALUES (1, 'x')",
    ));
    std::thread::sleep(Duration::from_millis(1300));
    let o = gw.cli(&dba1, &["approvals", "approve", &id]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("expired"),
        "{o:?}"
    );

    // Through `tollgate exec`: refused with the id, then runs once approved; `wait` sees it.
    let o = gw.cli(
        &agent,
        &[
            "exec",
            "prod",
            "-i",
            "UPDATE orders SET amount = 5 WHERE id = 2",
        ],
    );
    assert_ne!(o.status.code(), Some(0));
    let id = approval_id(&String::from_utf8_lossy(&o.stderr));
    let waiter = std::process::Command::new(BIN)
        .args(["approvals", "wait", &id, "--timeout", "30s"])
        .env("TOLLGATE_URL", gw.url())
        .env("TOLLGATE_TOKEN", &agent)
        .spawn()
        .unwrap();
    gw.cli_ok(&dba1, &["approvals", "approve", &id]);
    let status = waiter.wait_with_output().unwrap().status;
    assert!(status.success());
    let o = gw.cli(
        &agent,
        &[
            "exec",
            "prod",
            "-i",
            "UPDATE orders SET amount = 5 WHERE id = 2",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(db.direct("SELECT amount FROM orders WHERE id = 2"), "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_mode_waits_in_session_for_enough_approvals() {
    let Setup {
        db,
        gw,
        agent,
        dba1,
        dba2,
        ..
    } = setup("tg_apr_hold");
    let gw = std::sync::Arc::new(gw);
    let client = driver(&gw, "prod", &agent).await.unwrap();

    // Nobody decides: the statement fails after the hold timeout, the session goes on.
    let started = Instant::now();
    let e = client
        .simple_query("UPDATE users SET name = 'bo' WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        e.as_db_error().unwrap().message().contains("No decision"),
        "{e}"
    );
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    let pending = approvals_json(&gw, &dba1);
    let id = pending
        .iter()
        .find(|a| a["rule"] == "users-writes")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Two approvals are needed; the held statement runs as soon as the second arrives.
    let held = tokio::spawn(async move {
        client
            .simple_query("UPDATE users SET name = 'cy' WHERE id = 1")
            .await
            .map(|_| ())
    });
    let g = std::sync::Arc::clone(&gw);
    let (d1, d2) = (dba1.clone(), dba2.clone());
    tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(300));
        let second = approval_id(
            &approvals_json(&g, &d1)
                .iter()
                .find(|a| {
                    a["status"] == "pending"
                        && a["statement"] == "UPDATE users SET name = 'cy' WHERE id = 1"
                })
                .unwrap()["id"]
                .to_string(),
        );
        let out = g.cli_ok(&d1, &["approvals", "approve", &second]);
        assert!(out.contains("pending") && out.contains("1/2"), "{out}");
        g.cli_ok(&d2, &["approvals", "approve", &second]);
    })
    .await
    .unwrap();
    held.await
        .unwrap()
        .expect("held statement runs after two approvals");
    assert_eq!(db.direct("SELECT name FROM users WHERE id = 1"), "cy");
    // The timed-out request is still open and can be decided later.
    let shown: serde_json::Value =
        serde_json::from_str(&gw.cli_ok(&dba1, &["approvals", "show", &id, "--json"])).unwrap();
    assert_eq!(shown["status"], "pending");
}

/// A tiny HTTP receiver: answers 500 to the first request, 200 to the rest, keeps the bodies.
/// Requests received: (path, JSON body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

fn webhook_receiver() -> (u16, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&got);
    std::thread::spawn(move || {
        let mut first = true;
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let mut s = stream;
            if first {
                first = false;
                let _ = s.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                continue;
            }
            let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
            seen.lock()
                .unwrap()
                .push((path, serde_json::from_slice(&body).unwrap_or_default()));
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, got)
}

#[test]
fn webhooks_announce_requests_and_decisions_with_retries() {
    let (port, got) = webhook_receiver();
    let db = TestDb::create("tg_apr_hook");
    db.direct(
        "CREATE TABLE orders (id int primary key, amount int); INSERT INTO orders VALUES (1, 1);",
    );
    let hooks = format!(
        "[[notifications]]\nname = \"generic\"\nurl = \"http://127.0.0.1:{port}/generic\"\n\n[[notifications]]\nname = \"slack\"\nformat = \"slack\"\nurl = \"http://127.0.0.1:{port}/slack\"\nevents = [\"approval_requested\"]\n\n"
    );
    let gw = Gateway::start(&format!(
        "{hooks}{}{}",
        rules(),
        db.connection("prod", &["eng"], "disable")
    ));
    let agent = gw.create_key("agent", "eng", None);
    let dba = gw.create_key("dba1", "dba", None);
    let id = approval_id(&psql_err(&gw, &agent, "DELETE FROM orders WHERE id = 1"));
    gw.cli_ok(&dba, &["approvals", "approve", &id, "--reason", "fine"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = got.lock().unwrap().len();
        if n >= 3 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = got.lock().unwrap().clone();
    let generic: Vec<&serde_json::Value> = got
        .iter()
        .filter(|(p, _)| p == "/generic")
        .map(|(_, b)| b)
        .collect();
    let slack: Vec<&serde_json::Value> = got
        .iter()
        .filter(|(p, _)| p == "/slack")
        .map(|(_, b)| b)
        .collect();
    assert!(
        generic.iter().any(|b| b["event"] == "approval_requested"
            && b["approval"]["id"] == id.as_str()
            && b["approval"]["statement"] == "DELETE FROM orders WHERE id = 1"),
        "{got:?}"
    );
    assert!(
        generic
            .iter()
            .any(|b| b["event"] == "approval_decided" && b["approval"]["status"] == "approved"),
        "{got:?}"
    );
    assert_eq!(slack.len(), 1, "{got:?}");
    assert!(slack[0]["text"].as_str().unwrap().contains(&id));
    // Webhook URLs are not logged.
    assert!(!gw.stderr().contains(&format!("127.0.0.1:{port}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn just_in_time_grant_opens_then_expires() {
    let db = TestDb::create("tg_jit");
    let conn = db.connection("prod", &["eng"], "disable");
    let conn = conn.replacen(
        "groups = [\"eng\"]",
        "groups = [\"eng\"]\nrequire_grant = true\ngrant_approvers = [\"dba\"]\nmax_grant = \"1h\"",
        1,
    );
    let gw = Gateway::start(&conn);
    let agent = gw.create_key("agent", "eng", None);
    let dba = gw.create_key("dba1", "dba", None);

    // No grant: refused at connection time, with what to do.
    let Err(e) = driver(&gw, "prod", &agent).await else {
        panic!("refused without a grant");
    };
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("tollgate access request prod"),
        "{e}"
    );

    // Bad requests are refused with a reason.
    let o = gw.cli(
        &agent,
        &[
            "access", "request", "prod", "--for", "2h", "--reason", "too long",
        ],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("at most"),
        "{o:?}"
    );

    let out = gw.cli_ok(
        &agent,
        &[
            "access",
            "request",
            "prod",
            "--for",
            "3s",
            "--reason",
            "incident 42",
        ],
    );
    let id = out.lines().last().unwrap().trim().to_string();
    assert!(id.starts_with("apr_"), "{out}");
    let o = gw.cli(&agent, &["approvals", "approve", &id]);
    assert!(!o.status.success(), "no self-approval of access");
    gw.cli_ok(&dba, &["approvals", "approve", &id, "--reason", "on call"]);

    // Granted: the session opens and works until the grant ends, then its next statement is refused.
    let client = driver(&gw, "prod", &agent).await.unwrap();
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&gw.cli_ok(&agent, &["access", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["status"], "approved");
    assert!(!listed[0]["grant_until"].is_null());
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let e = client.simple_query("SELECT 2").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    assert!(e.as_db_error().unwrap().message().contains("ended"), "{e}");
    let Err(e) = driver(&gw, "prod", &agent).await else {
        panic!("refused after the grant ended");
    };
    assert_eq!(sqlstate(&e), "42501");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_approvals_bind_the_parameters() {
    let Setup {
        db,
        gw,
        agent,
        dba1,
        ..
    } = setup("tg_apr_ext");
    let client = driver(&gw, "prod", &agent).await.unwrap();
    let delete = client
        .prepare("DELETE FROM orders WHERE id = $1")
        .await
        .unwrap();

    // Refused in place, with the request id; the session and pipeline carry on.
    let (before, refused, after) = tokio::join!(
        client.query_one("SELECT count(*)::int FROM orders", &[]),
        client.execute(&delete, &[&1i32]),
        client.query_one("SELECT 7", &[]),
    );
    assert_eq!(before.unwrap().get::<_, i32>(0), 3);
    let e = refused.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    let id = approval_id(e.as_db_error().unwrap().message());
    assert_eq!(after.unwrap().get::<_, i32>(0), 7);
    let shown: serde_json::Value =
        serde_json::from_str(&gw.cli_ok(&dba1, &["approvals", "show", &id, "--json"])).unwrap();
    // tokio-postgres binds integers in binary: recorded as hex.
    assert_eq!(shown["params"], serde_json::json!(["\\x00000001"]));
    gw.cli_ok(&dba1, &["approvals", "approve", &id]);

    // The approval holds for id = 1 only, and once.
    let e = client.execute(&delete, &[&999i32]).await.unwrap_err();
    assert_ne!(approval_id(e.as_db_error().unwrap().message()), id);
    assert_eq!(client.execute(&delete, &[&1i32]).await.unwrap(), 1);
    let e = client.execute(&delete, &[&1i32]).await.unwrap_err();
    assert_ne!(approval_id(e.as_db_error().unwrap().message()), id);
    assert_eq!(
        db.direct("SELECT count(*) FROM orders WHERE id IN (1, 999)"),
        "1"
    );
    assert_eq!(
        client
            .query_one("SELECT 8", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        8
    );
}
