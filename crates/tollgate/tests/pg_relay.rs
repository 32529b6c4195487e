//! PostgreSQL through the gateway with real clients: psql, pgbench and tokio-postgres.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt, pin_mut};

fn out_text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn psql_simple_queries_meta_commands_copy_notice_in_every_sslmode() {
    let db = TestDb::create("tg_psql");
    let gw = Gateway::start(&db.connection("app", &["eng"], "disable"));
    let key = gw.create_key("alice", "eng", None);
    db.direct("CREATE TABLE items (id int primary key, name text)");

    for sslmode in ["disable", "prefer", "require"] {
        let o = gw.psql("app", &key, sslmode, &["-c", "SELECT 40 + 2 AS answer"]);
        assert!(o.status.success(), "{sslmode}: {}", out_text(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "42");
    }

    // Meta-commands, COPY both ways, NOTICE, NOTIFY, SET (ParameterStatus).
    let csv = gw.dir.path().join("items.csv");
    std::fs::write(&csv, "1,one\n2,two\n3,three\n").unwrap();
    let out_csv = gw.dir.path().join("out.csv");
    let o = gw.psql(
        "app",
        &key,
        "require",
        &[
            "-c",
            "\\d items",
            "-c",
            &format!("\\copy items FROM '{}' csv", csv.display()),
            "-c",
            &format!(
                "\\copy (SELECT * FROM items ORDER BY id) TO '{}' csv",
                out_csv.display()
            ),
            "-c",
            "DO $$ BEGIN RAISE NOTICE 'hello from the target'; END $$",
            "-c",
            "LISTEN chan",
            "-c",
            "NOTIFY chan, 'payload'",
            "-c",
            "SET application_name = 'renamed'",
            "-c",
            "SHOW application_name",
            "-c",
            "SET client_encoding TO 'LATIN1'",
            "-c",
            "\\encoding",
        ],
    );
    assert!(o.status.success(), "{}", out_text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stdout.contains("name|text") || stdout.contains("name"),
        "{stdout}"
    );
    assert!(stdout.contains("renamed"), "{stdout}");
    // psql learns the new encoding only from the ParameterStatus message the target sent.
    assert!(stdout.lines().any(|l| l.trim() == "LATIN1"), "{stdout}");
    assert!(stderr.contains("hello from the target"), "{stderr}");
    assert!(
        stdout.contains("Asynchronous notification \"chan\" with payload \"payload\""),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(&out_csv).unwrap(),
        "1,one\n2,two\n3,three\n"
    );
    assert_eq!(db.direct("SELECT count(*) FROM items"), "3");

    // An error leaves the session usable and is recorded with its SQLSTATE.
    let o = gw.psql(
        "app",
        &key,
        "disable",
        &[
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "SELECT * FROM missing_table",
            "-c",
            "SELECT 'still here'",
        ],
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("still here"),
        "{}",
        out_text(&o)
    );

    let sessions = gw.wait_sessions("ended psql sessions", |s| {
        s.iter().filter(|x| !x["ended_at"].is_null()).count() >= 5
    });
    let s = &sessions[0];
    assert_eq!(s["subject"], "alice");
    assert_eq!(s["connection"], "app");
    let commands = gw.commands();
    let failed = commands
        .iter()
        .find(|c| c["command"]["text"] == "SELECT * FROM missing_table")
        .expect("failed statement recorded");
    assert_eq!(failed["outcome"]["status"], "error");
    assert_eq!(failed["outcome"]["error"]["code"], "42P01");
    let copy_in = commands
        .iter()
        .find(|c| {
            c["command"]["text"]
                .as_str()
                .unwrap()
                .contains("FROM STDIN")
        })
        .expect("COPY FROM recorded");
    assert_eq!(copy_in["outcome"]["tags"][0], "COPY 3");
    assert_eq!(copy_in["outcome"]["rows"], 3);
    // TLS is recorded per session.
    assert!(sessions.iter().any(|s| s["tls"] == true));
    assert!(sessions.iter().any(|s| s["tls"] == false));
}

#[test]
fn pgbench_runs_unchanged_in_every_query_mode() {
    let db = TestDb::create("tg_bench");
    // `pgbench -i` drops and truncates its tables: leave those two default rules out here.
    let gw = Gateway::start(&format!(
        "[policy]\ndisable = [\"deny-drop\", \"deny-truncate\"]\n\n{}",
        db.connection("bench", &["eng"], "disable")
    ));
    let key = gw.create_key("ci", "eng", None);
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", &gw.dsn("bench", &key, "disable")])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", out_text(&init));
    for mode in ["simple", "extended", "prepared"] {
        let o = Command::new("pgbench")
            .args([
                "-n",
                "-M",
                mode,
                "-c",
                "2",
                "-j",
                "2",
                "-t",
                "50",
                &gw.dsn("bench", &key, "disable"),
            ])
            .output()
            .unwrap();
        let text = out_text(&o);
        assert!(o.status.success(), "{mode}: {text}");
        assert!(
            text.contains("number of transactions actually processed: 100/100"),
            "{mode}: {text}"
        );
        assert!(
            text.contains("number of failed transactions: 0"),
            "{mode}: {text}"
        );
    }
    // Extended-protocol statements are recorded with their Bind parameters.
    gw.wait_sessions("pgbench sessions ended", |s| {
        s.iter().filter(|x| !x["ended_at"].is_null()).count() >= 7
    });
    let commands = gw.commands();
    let bound = commands
        .iter()
        .find(|c| {
            c["command"]["step"] == "execute"
                && c["command"]["text"]
                    .as_str()
                    .unwrap()
                    .contains("UPDATE pgbench_accounts")
        })
        .expect("extended UPDATE recorded");
    let params = bound["command"]["params"].as_array().unwrap();
    assert_eq!(params.len(), 2, "{bound}");
    assert!(
        params
            .iter()
            .all(|p| p.as_str().unwrap().parse::<i64>().is_ok()),
        "{bound}"
    );
    assert_eq!(bound["outcome"]["tags"][0], "UPDATE 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_driver_extended_protocol_pipelining_copy_and_large_values() {
    let db = TestDb::create("tg_drv");
    let gw = Gateway::start(&db.connection("drv", &["eng"], "disable"));
    let key = gw.create_key("driver", "eng", None);
    let client = driver(&gw, "drv", &key).await.unwrap();

    client
        .batch_execute("CREATE TABLE kv (k int primary key, v text, b bytea)")
        .await
        .unwrap();
    // Parameters of several types, text and binary.
    let stmt = client
        .prepare("INSERT INTO kv (k, v, b) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    client
        .execute(&stmt, &[&1i32, &"one", &vec![0xdeu8, 0xad]])
        .await
        .unwrap();
    client
        .execute(&stmt, &[&2i32, &Option::<&str>::None, &vec![1u8]])
        .await
        .unwrap();

    // Pipelining: many queries in flight on one connection.
    let select = client
        .prepare("SELECT v FROM kv WHERE k = $1")
        .await
        .unwrap();
    let keys: Vec<i32> = (0..50).map(|i| i % 3).collect();
    let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
        keys.iter().map(|k| [k as _]).collect();
    let futures: Vec<_> = params
        .iter()
        .map(|p| client.query_opt(&select, p))
        .collect();
    let results = futures_util::future::join_all(futures).await;
    for (i, r) in results.into_iter().enumerate() {
        let row = r.unwrap();
        match i % 3 {
            1 => assert_eq!(
                row.unwrap().get::<_, Option<String>>(0).as_deref(),
                Some("one")
            ),
            2 => assert_eq!(row.unwrap().get::<_, Option<String>>(0), None),
            _ => assert!(row.is_none()),
        }
    }

    // A failing statement in a pipeline does not poison the session.
    let err = client.query("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "22012");
    assert_eq!(
        client
            .query_one("SELECT 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );

    // COPY FROM STDIN / TO STDOUT.
    let sink = client.copy_in("COPY kv (k, v) FROM STDIN").await.unwrap();
    pin_mut!(sink);
    let mut data = String::new();
    for k in 100..1100 {
        data.push_str(&format!("{k}\tvalue {k}\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1000);
    let stream = client
        .copy_out("COPY (SELECT k FROM kv ORDER BY k) TO STDOUT")
        .await
        .unwrap();
    pin_mut!(stream);
    let mut copied = Vec::new();
    while let Some(chunk) = stream.next().await {
        copied.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(String::from_utf8(copied).unwrap().lines().count(), 1002);

    // A 20 MB value both ways.
    let big = "x".repeat(20 * 1024 * 1024);
    client
        .execute("INSERT INTO kv (k, v) VALUES (5, $1)", &[&big])
        .await
        .unwrap();
    let back: String = client
        .query_one("SELECT v FROM kv WHERE k = 5", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(back.len(), big.len());

    // A large result streamed row by row.
    let rows = client
        .query_raw(
            "SELECT g, md5(g::text) FROM generate_series(1, 200000) g",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    pin_mut!(rows);
    let mut n = 0;
    while let Some(r) = rows.next().await {
        r.unwrap();
        n += 1;
    }
    assert_eq!(n, 200_000);
    drop(client);

    // The record keeps text, step and rendered parameters (NULL as null, binary as hex).
    gw.wait_sessions("driver session ended", |s| {
        s.iter().any(|x| !x["ended_at"].is_null())
    });
    let commands = gw.commands();
    let insert = commands
        .iter()
        .find(|c| {
            c["command"]["text"] == "INSERT INTO kv (k, v, b) VALUES ($1, $2, $3)"
                && c["command"]["params"][1].is_null()
        })
        .expect("insert with NULL recorded");
    assert_eq!(insert["command"]["step"], "execute");
    assert_eq!(insert["command"]["params"][2], "\\x01");
    let streamed = commands
        .iter()
        .find(|c| {
            c["command"]["text"]
                .as_str()
                .unwrap()
                .contains("generate_series(1, 200000)")
        })
        .unwrap();
    assert_eq!(
        streamed["outcome"]["rows"], 200_000,
        "{streamed} {commands:#?}"
    );
    let div = commands
        .iter()
        .find(|c| c["command"]["text"] == "SELECT 1/0")
        .unwrap();
    assert_eq!(div["outcome"]["error"]["code"], "22012");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_only_the_session_whose_key_it_carries() {
    let db = TestDb::create("tg_cancel");
    let gw = Gateway::start(&db.connection("c", &["eng"], "disable"));
    let key = gw.create_key("canceller", "eng", None);

    // The right key cancels the running query.
    let client = driver(&gw, "c", &key).await.unwrap();
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper =
        tokio::spawn(async move { client.simple_query("SELECT pg_sleep(20)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    assert!(started.elapsed() < Duration::from_secs(10));

    // A forged key (another session's query) cancels nothing.
    let victim = driver(&gw, "c", &key).await.unwrap();
    let run = tokio::spawn(async move {
        victim
            .simple_query("SELECT pg_sleep(1.5)")
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    use tokio::io::AsyncWriteExt;
    for guess in 1..20i32 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.pg_port))
            .await
            .unwrap();
        let mut req = Vec::new();
        req.extend_from_slice(&16i32.to_be_bytes());
        req.extend_from_slice(&80877102i32.to_be_bytes());
        req.extend_from_slice(&guess.to_be_bytes());
        req.extend_from_slice(&guess.to_be_bytes());
        s.write_all(&req).await.unwrap();
    }
    run.await
        .unwrap()
        .expect("query with a forged cancel must complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forwarder_needs_no_password() {
    let db = TestDb::create("tg_fwd");
    let gw = Gateway::start(&db.connection("fwd", &["eng"], "disable"));
    let key = gw.create_key("bob", "eng", None);
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["connect", "fwd", "--port", &port.to_string()])
        .env("TOLLGATE_URL", gw.url())
        .env("TOLLGATE_TOKEN", &key)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut ok = None;
    while Instant::now() < deadline {
        let o = Command::new("psql")
            .args(["-X", "-A", "-t", "-c", "SELECT current_user"])
            .arg(format!(
                "host=127.0.0.1 port={port} dbname=whatever user=bob sslmode=prefer"
            ))
            .env_remove("PGPASSWORD")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        if o.status.success() {
            ok = Some(String::from_utf8_lossy(&o.stdout).trim().to_string());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        ok.as_deref(),
        Some(db.role.as_str()),
        "psql through `tollgate connect` failed"
    );
    let sessions = gw.wait_sessions("forwarded session", |s| {
        s.iter().any(|x| x["subject"] == "bob")
    });
    assert_eq!(sessions[0]["connection"], "fwd");
}
