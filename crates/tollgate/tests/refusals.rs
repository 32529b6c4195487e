//! Every refusal path of the PostgreSQL front: the client gets its protocol's own error, nothing
//! reaches the target, the refusal is recorded, and other sessions carry on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener standing in for a target that must never be contacted.
struct Tripwire {
    port: u16,
    hits: Arc<AtomicUsize>,
}

async fn tripwire() -> Tripwire {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((_s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    Tripwire { port, hits }
}

fn tripwire_connection(name: &str, port: u16, groups: &str) -> String {
    format!(
        "[[connections]]\nname = \"{name}\"\nkind = \"postgres\"\nurl = \"postgres://nobody@127.0.0.1:{port}/x?sslmode=disable\"\ngroups = [{groups}]\n\n"
    )
}

async fn connect_err(gw: &Gateway, connection: &str, key: &str) -> tokio_postgres::Error {
    match driver(gw, connection, key).await {
        Ok(_) => panic!("connection to {connection} should have been refused"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_access_are_refused_before_the_target_is_contacted() {
    let wire = tripwire().await;
    let db = TestDb::create("tg_ref");
    let config = format!(
        "{}{}",
        tripwire_connection("guarded", wire.port, "\"ops\""),
        db.connection("real", &["eng"], "disable")
    );
    let gw = Gateway::start(&config);
    let eng = gw.create_key("eve", "eng", None);

    // Wrong key.
    let e = connect_err(&gw, "guarded", "tg_not_a_real_key").await;
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    // No shared group: an access error naming the connection.
    let e = connect_err(&gw, "guarded", &eng).await;
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        e.as_db_error().unwrap().message().contains("\"guarded\""),
        "{e}"
    );
    // Unknown connection.
    let e = connect_err(&gw, "no-such-thing", &eng).await;
    assert_eq!(sqlstate(&e), "3D000");
    // Expired key.
    let short = gw.create_key("brief", "ops", Some("1s"));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let e = connect_err(&gw, "guarded", &short).await;
    assert_eq!(sqlstate(&e), "28P01");
    assert!(
        e.as_db_error().unwrap().message().contains("expired"),
        "{e}"
    );
    // Revoked key.
    let doomed = gw.create_key("doomed", "ops", None);
    let id = gw
        .cli_ok(ADMIN_KEY, &["keys", "list", "--json"])
        .parse::<serde_json::Value>()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "doomed")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    gw.cli_ok(ADMIN_KEY, &["keys", "revoke", &id]);
    let e = connect_err(&gw, "guarded", &doomed).await;
    assert_eq!(sqlstate(&e), "28P01");
    assert!(
        e.as_db_error().unwrap().message().contains("revoked"),
        "{e}"
    );

    assert_eq!(
        wire.hits.load(Ordering::SeqCst),
        0,
        "a refused client reached the target"
    );

    // Each refusal is recorded.
    let sessions = gw.wait_sessions("five refusals", |s| {
        s.iter()
            .filter(|x| x["refusals"].as_i64() == Some(1))
            .count()
            >= 5
    });
    let refused: Vec<_> = sessions.iter().filter(|x| x["refusals"] == 1).collect();
    assert!(
        refused
            .iter()
            .all(|s| s["end_reason"].as_str().unwrap().starts_with("refused"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_stops_its_live_session_at_the_next_statement() {
    let db = TestDb::create("tg_rev");
    let gw = Gateway::start(&db.connection("app", &["eng"], "disable"));
    let key = gw.create_key("mallory", "eng", None);
    let other = gw.create_key("olivia", "eng", None);
    let live = driver(&gw, "app", &key).await.unwrap();
    let bystander = driver(&gw, "app", &other).await.unwrap();
    assert_eq!(
        live.query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );

    let keys: serde_json::Value = gw
        .cli_ok(ADMIN_KEY, &["keys", "list", "--json"])
        .parse()
        .unwrap();
    let id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "mallory")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    gw.cli_ok(ADMIN_KEY, &["keys", "revoke", &id]);

    let e = live.simple_query("SELECT 2").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    assert!(live.is_closed() || live.simple_query("SELECT 3").await.is_err());
    // Others are unaffected.
    assert_eq!(
        bystander
            .query_one("SELECT 5", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        5
    );
    let sessions = gw.wait_sessions("revoked session ended", |s| {
        s.iter().any(|x| {
            x["subject"] == "mallory"
                && x["end_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("revoked"))
        })
    });
    let s = sessions.iter().find(|x| x["subject"] == "mallory").unwrap();
    assert_eq!(s["refusals"], 1);
    // The refused statement never ran.
    let detail = gw.session(s["id"].as_str().unwrap());
    assert!(
        !detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"]["command"]["text"] == "SELECT 2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_target_gives_a_clear_connection_error() {
    let port = free_port();
    let gw = Gateway::start(&tripwire_connection("dead", port, "\"eng\""));
    let key = gw.create_key("d", "eng", None);
    let e = connect_err(&gw, "dead", &key).await;
    let state = sqlstate(&e);
    assert!(state.starts_with("08"), "{state}: {e}");
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(
        msg.contains("\"dead\"") && msg.contains(&format!("127.0.0.1:{port}")),
        "{msg}"
    );
    gw.wait_sessions("refusal recorded", |s| s.iter().any(|x| x["refusals"] == 1));
}

/// Reads what the gateway answers until it closes the connection (bounded).
async fn answer(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    out
}

fn startup(db: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes());
    for (k, v) in [("user", "x"), ("database", db)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut m = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    m.extend(body);
    m
}

fn password(key: &str) -> Vec<u8> {
    let mut m = vec![b'p'];
    m.extend_from_slice(&((key.len() + 5) as i32).to_be_bytes());
    m.extend_from_slice(key.as_bytes());
    m.push(0);
    m
}

/// Opens a session through the raw socket and reads up to ReadyForQuery.
async fn raw_session(gw: &Gateway, conn: &str, key: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", gw.pg_port)).await.unwrap();
    s.write_all(&startup(conn)).await.unwrap();
    let mut auth = [0u8; 9];
    s.read_exact(&mut auth).await.unwrap();
    assert_eq!(auth[0], b'R');
    s.write_all(&password(key)).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen
        .windows(6)
        .any(|w| w[0] == b'Z' && w[1..5] == 5i32.to_be_bytes())
    {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before ReadyForQuery: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    s
}

fn is_error_response(bytes: &[u8], code: &str) -> bool {
    bytes.first() == Some(&b'E') && contains(bytes, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frontend_messages_close_only_their_connection() {
    let db = TestDb::create("tg_bad");
    let gw = Gateway::start(&db.connection("app", &["eng"], "disable"));
    let key = gw.create_key("fuzz", "eng", None);
    let survivor = driver(&gw, "app", &key).await.unwrap();

    // Startup phase: zero, negative and huge lengths, truncated packets, unknown codes.
    let startup_cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero length", 0i32.to_be_bytes().to_vec()),
        ("negative length", (-8i32).to_be_bytes().to_vec()),
        ("huge length", 0x7fff_ffffi32.to_be_bytes().to_vec()),
        ("short length", 7i32.to_be_bytes().to_vec()),
        (
            "unknown request code",
            [8i32.to_be_bytes(), 1234i32.to_be_bytes()].concat(),
        ),
        (
            "protocol 2",
            [
                9i32.to_be_bytes().to_vec(),
                131072i32.to_be_bytes().to_vec(),
                vec![0],
            ]
            .concat(),
        ),
        (
            "unterminated parameters",
            [
                12i32.to_be_bytes().to_vec(),
                196608i32.to_be_bytes().to_vec(),
                b"user".to_vec(),
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in startup_cases {
        let mut s = TcpStream::connect(("127.0.0.1", gw.pg_port)).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let got = answer(&mut s).await;
        assert!(is_error_response(&got, "08P01"), "{what}: {got:?}");
    }

    // SSLRequest, then garbage instead of a TLS ClientHello.
    let mut s = TcpStream::connect(("127.0.0.1", gw.pg_port)).await.unwrap();
    s.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await.unwrap();
    let mut yes = [0u8; 1];
    s.read_exact(&mut yes).await.unwrap();
    assert_eq!(&yes, b"S");
    s.write_all(b"this is not TLS at all, not even close\r\n")
        .await
        .unwrap();
    let _ = answer(&mut s).await; // closed; the gateway may or may not manage an alert

    // Truncated startup: the client goes away mid-packet.
    let mut s = TcpStream::connect(("127.0.0.1", gw.pg_port)).await.unwrap();
    s.write_all(&[0, 0, 0, 40, 0, 3, 0]).await.unwrap();
    drop(s);

    // After authentication: bad lengths and unknown types in the relay.
    let session_cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "negative message length",
            [vec![b'Q'], (-1i32).to_be_bytes().to_vec()].concat(),
        ),
        (
            "message length under 4",
            [vec![b'Q'], 2i32.to_be_bytes().to_vec()].concat(),
        ),
        (
            "message over the cap",
            [
                vec![b'Q'],
                0x7fff_fff0i32.to_be_bytes().to_vec(),
                b"SELECT".to_vec(),
            ]
            .concat(),
        ),
        (
            "unknown type",
            [vec![b'!'], 4i32.to_be_bytes().to_vec()].concat(),
        ),
        (
            "query without terminator",
            [vec![b'Q'], 7i32.to_be_bytes().to_vec(), b"SEL".to_vec()].concat(),
        ),
        (
            "bind with absurd parameter count",
            [
                vec![b'B'],
                12i32.to_be_bytes().to_vec(),
                vec![0, 0, 0, 0],
                0x7fffi16.to_be_bytes().to_vec(),
                vec![0, 0],
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in session_cases {
        let mut s = raw_session(&gw, "app", &key).await;
        s.write_all(&bytes).await.unwrap();
        let got = answer(&mut s).await;
        assert!(is_error_response(&got, "08P01"), "{what}: {got:?}");
    }

    // The gateway and the other session are fine.
    assert_eq!(
        survivor
            .query_one("SELECT 11", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        11
    );
    let fresh = driver(&gw, "app", &key).await.unwrap();
    assert_eq!(
        fresh
            .query_one("SELECT 12", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        12
    );
    // Protocol violations are recorded as refusals.
    gw.wait_sessions("protocol refusals", |s| {
        s.iter()
            .filter(|x| {
                x["end_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("protocol violation"))
            })
            .count()
            >= 12
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_can_be_required() {
    let db = TestDb::create("tg_tls");
    let gw = Gateway::start(&format!(
        "[postgres]\nrequire_tls = true\n\n{}",
        db.connection("app", &["eng"], "disable")
    ));
    let key = gw.create_key("t", "eng", None);
    let o = gw.psql("app", &key, "disable", &["-c", "SELECT 1"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("requires TLS"),
        "{o:?}"
    );
    let o = gw.psql("app", &key, "require", &["-c", "SELECT 1"]);
    assert!(o.status.success(), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_target_password_is_logged_or_stored() {
    let db = TestDb::create("tg_secret");
    let gw = Gateway::start(&db.connection("app", &["eng"], "disable"));
    let key = gw.create_key("s", "eng", None);
    let c = driver(&gw, "app", &key).await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);
    let _ = driver(&gw, "app", "tg_wrong_key_that_should_not_be_logged").await;
    let out = gw.cli(&key, &["exec", "app", "-i", "SELECT 2"]);
    assert!(out.status.success());
    gw.wait_sessions("sessions recorded", |s| s.len() >= 3);
    let mut gw = gw;
    assert!(gw.stop());
    let everything = gw.all_persisted_text();
    for secret in [
        key.as_str(),
        ADMIN_KEY,
        db.password.as_str(),
        "tg_wrong_key_that_should_not_be_logged",
    ] {
        assert!(
            !contains(&everything, secret),
            "secret {secret} found in logs or store"
        );
    }
    // The CLI's own output never echoes the key either.
    let listing =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!listing.contains(&key));
}
