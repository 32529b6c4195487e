//! The CLI and REST API as a user meets them: keys, exec, sessions, the OpenAPI document,
//! startup errors, first-start material and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn keys_are_admin_only_listed_without_secrets_and_revocable() {
    let gw = Gateway::start("");
    let key = gw.create_key("carol", "eng,ops", Some("2h"));
    assert!(key.starts_with("tg_") && key.len() > 40, "{key}");

    // A non-admin key cannot manage keys.
    for args in [
        vec!["keys", "create", "--name", "x", "--groups", "eng"],
        vec!["keys", "list"],
        vec!["keys", "revoke", "whatever"],
    ] {
        let o = gw.cli(&key, &args);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            stderr(&o).contains("administrator"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // No key at all, or a wrong one.
    let o = Command::new(BIN)
        .args(["keys", "list"])
        .env("TOLLGATE_URL", gw.url())
        .env_remove("TOLLGATE_TOKEN")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("TOLLGATE_TOKEN"), "{}", stderr(&o));
    let o = gw.cli("tg_wrong", &["keys", "list"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not valid"), "{}", stderr(&o));

    let table = gw.cli_ok(ADMIN_KEY, &["keys", "list"]);
    assert!(
        table.contains("carol") && table.contains("eng,ops") && table.contains("active"),
        "{table}"
    );
    let list: serde_json::Value = gw
        .cli_ok(ADMIN_KEY, &["keys", "list", "--json"])
        .parse()
        .unwrap();
    let carol = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "carol")
        .unwrap()
        .clone();
    assert!(carol.get("hash").is_none() && carol.get("key").is_none());
    assert!(!carol["expires_at"].is_null());
    let id = carol["id"].as_str().unwrap();
    gw.cli_ok(ADMIN_KEY, &["keys", "revoke", id]);
    let table = gw.cli_ok(ADMIN_KEY, &["keys", "list"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains("carol") && l.contains("revoked")),
        "{table}"
    );
    let o = gw.cli(ADMIN_KEY, &["keys", "revoke", "no-such-id"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no key with id"), "{}", stderr(&o));
    // Bad input is refused with a reason.
    let o = gw.cli(
        ADMIN_KEY,
        &[
            "keys", "create", "--name", "y", "--groups", "eng", "--ttl", "forever",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid duration"), "{}", stderr(&o));
}

#[test]
fn exec_prints_tables_json_and_refusals() {
    let db = TestDb::create("tg_exec");
    let gw = Gateway::start(&format!(
        "{}{}",
        db.connection("app", &["eng"], "disable"),
        db.connection("secret", &["finance"], "disable")
    ));
    let key = gw.create_key("dave", "eng", None);
    db.direct(
        "CREATE TABLE people (id int, name text); INSERT INTO people VALUES (1, 'Ann'), (22, NULL)",
    );

    let table = gw.cli_ok(
        &key,
        &[
            "exec",
            "app",
            "-i",
            "SELECT id, name FROM people ORDER BY id",
        ],
    );
    assert_eq!(
        table,
        " id | name\n----+------\n 1  | Ann\n 22 |\n(2 rows)\n"
    );

    let json: serde_json::Value = gw
        .cli_ok(
            &key,
            &[
                "exec",
                "app",
                "-i",
                "SELECT id, name FROM people ORDER BY id",
                "--json",
            ],
        )
        .parse()
        .unwrap();
    assert_eq!(json["columns"], serde_json::json!(["id", "name"]));
    assert_eq!(
        json["rows"],
        serde_json::json!([["1", "Ann"], ["22", null]])
    );
    assert_eq!(json["tags"], serde_json::json!(["SELECT 2"]));

    let out = gw.cli_ok(
        &key,
        &[
            "exec",
            "app",
            "-i",
            "INSERT INTO people VALUES (3, 'Cy'); UPDATE people SET name = 'Al' WHERE id = 1",
        ],
    );
    assert_eq!(out, "INSERT 0 1\nUPDATE 1\n");

    // A statement error: exit 1, the target's message and SQLSTATE on stderr.
    let o = gw.cli(&key, &["exec", "app", "-i", "SELECT nope FROM people"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("column \"nope\" does not exist") && stderr(&o).contains("42703"),
        "{}",
        stderr(&o)
    );
    // Refusals: exit 2 with the reason.
    let o = gw.cli(&key, &["exec", "secret", "-i", "SELECT 1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("refused") && stderr(&o).contains("\"secret\""),
        "{}",
        stderr(&o)
    );
    let o = gw.cli(&key, &["exec", "nowhere", "-i", "SELECT 1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    let o = gw.cli("tg_bogus", &["exec", "app", "-i", "SELECT 1"]);
    assert_eq!(o.status.code(), Some(2));

    // exec goes through the same pipeline and is recorded as an API session.
    // Six API sessions: four ran, two were refused (the bogus key never got a session).
    let sessions = gw.wait_sessions("exec sessions", |s| {
        s.iter()
            .filter(|x| x["channel"] == "api" && !x["ended_at"].is_null())
            .count()
            >= 6
    });
    let refused = sessions
        .iter()
        .filter(|x| x["channel"] == "api" && x["refusals"] == 1)
        .count();
    assert_eq!(refused, 2);
    let commands = gw.commands();
    assert!(
        commands
            .iter()
            .any(|c| c["command"]["text"] == "SELECT nope FROM people"
                && c["outcome"]["error"]["code"] == "42703")
    );
    // Owners see their sessions; the human view shows the commands.
    let mine: serde_json::Value = gw
        .cli_ok(&key, &["sessions", "list", "--json"])
        .parse()
        .unwrap();
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .all(|s| s["subject"] == "dave")
    );
    let id = mine[0]["id"].as_str().unwrap();
    let shown = gw.cli_ok(&key, &["sessions", "show", id]);
    assert!(
        shown.contains("session start") && shown.contains("session end"),
        "{shown}"
    );
    let o = gw.cli(&key, &["sessions", "show", "does-not-exist"]);
    assert!(!o.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_speaks_json_and_publishes_openapi() {
    let gw = Gateway::start("");
    let http = reqwest::Client::new();
    let doc: serde_json::Value = http
        .get(format!("{}/api/openapi.json", gw.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/health",
        "/api/info",
        "/api/whoami",
        "/api/connections",
        "/api/keys",
        "/api/keys/{id}",
        "/api/exec",
        "/api/sessions",
        "/api/sessions/{id}",
        "/api/access",
        "/api/approvals",
        "/api/approvals/{id}",
        "/api/approvals/{id}/approve",
        "/api/approvals/{id}/deny",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    let r = http
        .get(format!("{}/api/sessions", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    let r = http
        .post(format!("{}/api/exec", gw.url()))
        .bearer_auth(ADMIN_KEY)
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{}/api/nothing-here", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let me: serde_json::Value = http
        .get(format!("{}/api/whoami", gw.url()))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["admin"], true);
}

#[test]
fn bad_config_is_reported_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[[connections]]\nname = \"x\"\nkind = \"postgres\"\nurl = \"postgres://u@h/d\"\ngroupz = [\"a\"]\n").unwrap();
    let o = Command::new(BIN)
        .args(["up", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("broken.toml") && err.contains("groupz") && err.contains("expected"),
        "{err}"
    );
}

#[test]
fn first_start_generates_material_and_prints_the_admin_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |data: &std::path::Path| {
        let api = free_port();
        let pg = free_port();
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            format!("[listen]\napi = \"127.0.0.1:{api}\"\npostgres = \"127.0.0.1:{pg}\"\n"),
        )
        .unwrap();
        let child = Command::new(BIN)
            .args(["up", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(data)
            .env_remove("TOLLGATE_ADMIN_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", api)).is_err() && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let first = run(&data);
    let line = first
        .lines()
        .find(|l| l.contains("admin key"))
        .expect("admin key printed on first start");
    let key = line.rsplit(' ').next().unwrap();
    assert!(key.starts_with("tg_"));
    for f in ["signing.key", "tls.key", "tls.crt", "tollgate.db"] {
        let meta = std::fs::metadata(data.join(f)).unwrap();
        if f != "tollgate.db" {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
        }
    }
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let second = run(&data);
    assert!(!second.contains("admin key"), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_sessions_cleanly_and_records_their_end() {
    let db = TestDb::create("tg_stop");
    let config = db.connection("app", &["eng"], "disable");
    let mut gw = Gateway::start(&config);
    let key = gw.create_key("erin", "eng", None);
    let client = driver(&gw, "app", &key).await.unwrap();
    let busy = driver(&gw, "app", &key).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let running =
        tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = tokio::task::spawn_blocking(move || {
        let ok = gw.stop();
        (ok, gw)
    });
    let err = running.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "57P01", "{err}");
    let (ok, gw) = stopped.await.unwrap();
    assert!(ok, "gateway exit status");
    let e = client.simple_query("SELECT 2").await.unwrap_err();
    assert!(e.is_closed() || sqlstate(&e) == "57P01", "{e}");

    // Restart on the same data: both sessions are recorded as ended by the shutdown, and the
    // interrupted statement is recorded too.
    let dir = std::mem::replace(&mut { gw }.dir, tempfile::tempdir().unwrap());
    let gw = Gateway::start_in(dir, &config);
    let sessions = gw.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:#?}");
    for s in &sessions {
        assert_eq!(s["end_reason"], "gateway shutting down", "{s}");
    }
    let commands = gw.commands();
    let sleep = commands
        .iter()
        .find(|c| c["command"]["text"] == "SELECT pg_sleep(30)")
        .unwrap();
    assert_eq!(sleep["outcome"]["status"], "interrupted");
}

#[test]
fn a_session_replays_in_order_with_verdicts_and_results() {
    let db = TestDb::create("tg_replay");
    db.direct("CREATE TABLE t (id int primary key, email text); INSERT INTO t VALUES (1, 'ann@example.com')");
    let gw = Gateway::start(&db.connection("pg", &["eng"], "disable"));
    let key = gw.create_key("agent", "eng", None);
    let out = gw.psql(
        "pg",
        &key,
        "disable",
        &[
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "SELECT id, email FROM t",
            "-c",
            "DROP TABLE t",
            "-c",
            "SELECT 1/0",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("deny-drop"));
    let sessions = gw.wait_sessions("the session to end", |s| {
        s.first().is_some_and(|s| !s["ended_at"].is_null())
    });
    let id = sessions[0]["id"].as_str().unwrap().to_string();

    let json = gw.cli_ok(ADMIN_KEY, &["sessions", "replay", &id, "--format", "json"]);
    let steps: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = steps.iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "session_start",
            "command",
            "command",
            "command",
            "session_end"
        ],
        "{json}"
    );
    assert_eq!(steps[0]["who"], "agent");
    assert_eq!(steps[0]["masking"], "on");
    assert_eq!(steps[1]["statement"], "SELECT id, email FROM t");
    assert_eq!(steps[1]["verdict"], "allowed");
    assert_eq!(steps[1]["rows"], 1);
    assert_eq!(steps[1]["masked"]["pii-columns"], 1);
    assert_eq!(steps[2]["verdict"], "denied");
    assert_eq!(steps[2]["rule"], "deny-drop");
    assert_eq!(steps[3]["error"]["code"], "22012");
    let offsets: Vec<f64> = steps
        .iter()
        .map(|s| s["offset_ms"].as_f64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    assert_eq!(offsets[0], 0.0);

    let text = gw.cli_ok(ADMIN_KEY, &["sessions", "replay", &id]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].contains("agent opened pg"), "{text}");
    assert!(
        lines[1].contains("SELECT id, email FROM t  [allowed]"),
        "{text}"
    );
    assert!(lines[1].contains("masked pii-columns: 1"), "{text}");
    assert!(lines[2].contains("[denied by deny-drop]"), "{text}");
    assert!(lines[3].contains("ERROR 22012"), "{text}");
    assert!(lines[4].contains("ended:"), "{text}");
    assert!(!text.contains("ann@example.com"), "{text}");

    let out = gw.cli(ADMIN_KEY, &["sessions", "replay", "no-such-session"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-session") || err.contains("not found"),
        "{err}"
    );
}
