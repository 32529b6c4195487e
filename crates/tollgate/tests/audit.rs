//! The tamper-evident audit log on a real gateway: sessions through psql are chained and
//! signed; `tollgate audit verify` (offline, against the pinned key) and the independent Python
//! verifier agree that an untouched store is intact and that each kind of tampering is caught,
//! naming the first bad record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn verify(data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(data_dir)
        .arg("--key")
        .arg(data_dir.join("signing.pub"))
        .output()
        .unwrap()
}

fn python_verify(data_dir: &Path) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/verify_audit.py");
    Command::new("python3")
        .arg(script)
        .arg("--json")
        .arg("--db")
        .arg(data_dir.join("tollgate.db"))
        .arg("--key")
        .arg(data_dir.join("signing.pub"))
        .output()
        .unwrap()
}

/// Both verifiers' verdicts: (ok, first bad gseq).
fn verdicts(data_dir: &Path) -> [(bool, Option<u64>); 2] {
    [verify(data_dir), python_verify(data_dir)].map(|out| {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let ok = v["ok"].as_bool().unwrap();
        assert_eq!(out.status.code(), Some(if ok { 0 } else { 1 }), "{v}");
        (ok, v["first_bad"]["gseq"].as_u64())
    })
}

/// Both verifiers' verdicts on a bundle, against the gateway's pinned key.
fn bundle_verdicts(bundle: &Path, data_dir: &Path) -> [(bool, Option<u64>); 2] {
    let rust = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["audit", "verify", "--json", "--bundle"])
        .arg(bundle)
        .arg("--key")
        .arg(data_dir.join("signing.pub"))
        .output()
        .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/verify_audit.py");
    let python = Command::new("python3")
        .arg(script)
        .arg("--json")
        .arg("--bundle")
        .arg(bundle)
        .arg("--key")
        .arg(data_dir.join("signing.pub"))
        .output()
        .unwrap();
    [rust, python].map(|out| {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (
            v["ok"].as_bool().unwrap(),
            v["first_gseq_bad"]
                .as_u64()
                .or(v["first_bad"]["gseq"].as_u64()),
        )
    })
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A copy of the data dir to tamper with.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Every run: (first_gseq, body).
fn runs(db: &rusqlite::Connection) -> Vec<(i64, Vec<u8>)> {
    let mut stmt = db
        .prepare("SELECT first_gseq, body FROM audit_runs ORDER BY first_gseq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The run holding record `gseq` and the byte range of the record plus its hash.
fn locate(db: &rusqlite::Connection, gseq: u64) -> (i64, Vec<u8>, std::ops::Range<usize>) {
    for (first, body) in runs(db) {
        let mut pos = 0;
        for s in tollgate_audit::split_run(&body).unwrap() {
            let len = s.bytes.len() + 32;
            if s.record.gseq == gseq {
                return (first, body.clone(), pos..pos + len);
            }
            pos += len;
        }
    }
    panic!("no record {gseq}");
}

fn set_body(db: &rusqlite::Connection, first: i64, body: &[u8]) {
    db.execute(
        "UPDATE audit_runs SET body = ?2 WHERE first_gseq = ?1",
        rusqlite::params![first, body],
    )
    .unwrap();
}

struct Tamper {
    dir: PathBuf,
    db: rusqlite::Connection,
}

fn tamper(source: &Path, root: &Path, name: &str) -> Tamper {
    let dir = root.join(name);
    copy_dir(source, &dir);
    let db = rusqlite::Connection::open(dir.join("tollgate.db")).unwrap();
    Tamper { dir, db }
}

#[test]
fn the_log_verifies_and_every_kind_of_tampering_is_named() {
    let db = TestDb::create("tg_audit");
    let mut gw = Gateway::start(&db.connection("pg", &["eng"], "disable"));
    let key = gw.create_key("agent", "eng", None);
    for i in 0..6 {
        let out = gw.psql(
            "pg",
            &key,
            "disable",
            &["-c", &format!("SELECT {i}"), "-c", "SELECT 'x'"],
        );
        assert!(out.status.success());
    }
    let bad = gw.psql("pg", "wrong-key", "disable", &["-c", "SELECT 1"]);
    assert!(!bad.status.success());
    let session = gw.wait_sessions("every session to end", |s| {
        s.len() == 7 && s.iter().all(|s| !s["ended_at"].is_null())
    })[2]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(gw.stop());
    let data = gw.data_dir();

    // Untouched: both verifiers say intact; every record is signed after a clean stop.
    assert_eq!(verdicts(&data), [(true, None), (true, None)]);
    let out = verify(&data);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = v["records"].as_u64().unwrap();
    assert!(records >= 6 * 4 + 2, "{v}");
    assert_eq!(v["unsigned_tail"], 0, "{v}");
    assert_eq!(v["keys_pinned"], true);

    // Administrative acts are in the chain too: the start with its config, the key creation.
    let db_file = rusqlite::Connection::open(data.join("tollgate.db")).unwrap();
    let admin: Vec<serde_json::Value> = runs(&db_file)
        .iter()
        .flat_map(|(_, body)| {
            tollgate_audit::split_run(body)
                .unwrap()
                .into_iter()
                .map(|s| serde_json::from_slice::<serde_json::Value>(s.record.payload).unwrap())
                .collect::<Vec<_>>()
        })
        .filter(|p| p["type"] == "admin")
        .collect();
    drop(db_file);
    assert_eq!(admin[0]["action"], "gateway_started", "{admin:#?}");
    assert!(
        admin[0]["detail"].as_str().unwrap().contains("sha256"),
        "{admin:#?}"
    );
    let created = admin.iter().find(|a| a["action"] == "key_created").unwrap();
    assert_eq!(created["by"], "admin");
    assert!(created["detail"].as_str().unwrap().contains("name agent"));
    assert!(
        !serde_json::to_string(&admin).unwrap().contains(&key),
        "no key in the log"
    );

    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let middle = records / 2;

    // Bundles: the whole log and one session's span verify on their own, by both verifiers.
    for (name, args) in [
        ("all.json", vec![]),
        ("session.json", vec!["--session", session.as_str()]),
        (
            "range.json",
            vec![
                "--since",
                "2000-01-01T00:00:00Z",
                "--until",
                "2100-01-01T00:00:00Z",
            ],
        ),
    ] {
        let path = root.join(name);
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["audit", "export", "--data-dir"])
            .arg(&data)
            .args(&args)
            .arg("--out")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(bundle_verdicts(&path, &data), [(true, None); 2], "{name}");
    }
    // A bundle with one record altered fails in both.
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("session.json")).unwrap()).unwrap();
    let first = doc["first_gseq"].as_u64().unwrap();
    let rec = doc["records"][1].as_str().unwrap().to_string();
    let mut bytes = base64_decode(&rec);
    let n = bytes.len();
    bytes[n - 40] ^= 1;
    doc["records"][1] = serde_json::Value::String(base64_encode(&bytes));
    std::fs::write(root.join("bad.json"), doc.to_string()).unwrap();
    assert_eq!(
        bundle_verdicts(&root.join("bad.json"), &data),
        [(false, Some(first + 1)); 2]
    );
    // Nothing selected: a clear refusal.
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["audit", "export", "--data-dir"])
        .arg(&data)
        .args(["--session", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no record matches"));

    // A changed byte in the middle of a record's payload.
    let t = tamper(&data, root, "byte");
    let (first, mut body, range) = locate(&t.db, middle);
    body[range.end - 40] ^= 0x20;
    set_body(&t.db, first, &body);
    assert_eq!(verdicts(&t.dir), [(false, Some(middle)); 2]);

    // A deleted record.
    let t = tamper(&data, root, "deleted");
    let (first, mut body, range) = locate(&t.db, middle);
    body.drain(range);
    set_body(&t.db, first, &body);
    assert_eq!(verdicts(&t.dir), [(false, Some(middle)); 2]);

    // Two records swapped in the global order.
    let t = tamper(&data, root, "reordered");
    let places = [
        (locate(&t.db, middle), middle + 1),
        (locate(&t.db, middle + 1), middle),
    ];
    let mut bodies: std::collections::BTreeMap<i64, Vec<u8>> = std::collections::BTreeMap::new();
    for ((first, body, range), to) in places {
        let body = bodies.entry(first).or_insert(body);
        body[range.start + 4..range.start + 12].copy_from_slice(&to.to_be_bytes());
    }
    for (first, body) in bodies {
        set_body(&t.db, first, &body);
    }
    assert_eq!(verdicts(&t.dir), [(false, Some(middle)); 2]);

    // The tail cut off below the last signed checkpoint.
    let t = tamper(&data, root, "truncated");
    let cut = records - 3;
    let (first, mut body, range) = locate(&t.db, cut);
    body.truncate(range.start);
    if body.is_empty() {
        t.db.execute("DELETE FROM audit_runs WHERE first_gseq = ?1", [first])
            .unwrap();
    } else {
        set_body(&t.db, first, &body);
    }
    t.db.execute("DELETE FROM audit_runs WHERE first_gseq > ?1", [first])
        .unwrap();
    assert_eq!(verdicts(&t.dir), [(false, Some(cut)); 2]);

    // A forged record inserted, well formed and hashed onto its predecessor.
    let t = tamper(&data, root, "inserted");
    let (_, prev_body, prev_range) = locate(&t.db, middle - 1);
    let prev: tollgate_audit::Hash = prev_body[prev_range.end - 32..prev_range.end]
        .try_into()
        .unwrap();
    let mut forged = Vec::new();
    tollgate_audit::encode_record(
        &tollgate_audit::Record {
            gseq: middle,
            at: 1,
            session: "forged",
            seq: 0,
            payload: br#"{"type":"session_end","reason":"nothing to see"}"#,
        },
        &mut forged,
    )
    .unwrap();
    let h = tollgate_audit::chain(&prev, &forged);
    forged.extend_from_slice(&h);
    t.db.execute(
        "INSERT INTO audit_runs (first_gseq, last_gseq, session, body) VALUES (?1, ?1, 'forged', ?2)",
        rusqlite::params![-1i64, forged],
    )
    .unwrap();
    t.db.execute(
        "UPDATE audit_runs SET first_gseq = ?1, last_gseq = ?1 WHERE first_gseq = -1",
        [middle as i64 * 1000 + 7],
    )
    .unwrap();
    let [(ok, _), (py_ok, _)] = verdicts(&t.dir);
    assert!(!ok && !py_ok);

    // A re-hashed forgery: one payload changed and every later hash recomputed, so the chain is
    // self-consistent, but no longer reaches the signed head.
    let t = tamper(&data, root, "rehashed");
    let mut all: Vec<(u64, i64, String, u64, Vec<u8>)> = Vec::new();
    for (_, body) in runs(&t.db) {
        for s in tollgate_audit::split_run(&body).unwrap() {
            let r = s.record;
            all.push((
                r.gseq,
                r.at,
                r.session.to_string(),
                r.seq,
                r.payload.to_vec(),
            ));
        }
    }
    all.sort_by_key(|r| r.0);
    let victim = all.iter().position(|r| r.0 == middle).unwrap();
    all[victim].4 = br#"{"type":"session_end","reason":"rewritten"}"#.to_vec();
    let mut chain = tollgate_audit::ChainState::resume(None);
    let mut encoded = std::collections::HashMap::new();
    for (g, at, session, seq, payload) in &all {
        let mut out = Vec::new();
        chain.append(*at, session, *seq, payload, &mut out).unwrap();
        encoded.insert(*g, out);
    }
    for (first, body) in runs(&t.db) {
        let rebuilt: Vec<u8> = tollgate_audit::split_run(&body)
            .unwrap()
            .iter()
            .flat_map(|s| encoded[&s.record.gseq].clone())
            .collect();
        set_body(&t.db, first, &rebuilt);
    }
    let [(ok, rust_bad), (py_ok, py_bad)] = verdicts(&t.dir);
    assert!(!ok && !py_ok);
    assert_eq!(rust_bad, py_bad);
    assert!(rust_bad.unwrap() <= middle, "{rust_bad:?}");

    // A gateway restarted on the same data continues the chain.
    gw.restart(&db.connection("pg", &["eng"], "disable"));
    let out = gw.psql("pg", &key, "disable", &["-c", "SELECT 42"]);
    assert!(out.status.success());
    assert!(gw.stop());
    assert_eq!(verdicts(&gw.data_dir()), [(true, None), (true, None)]);

    // Refusals: a missing store and an unreadable key file are clear errors (exit 2).
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["audit", "verify", "--data-dir"])
        .arg(root.join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    std::fs::write(root.join("bad.pub"), "not a key\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["audit", "verify", "--data-dir"])
        .arg(gw.data_dir())
        .arg("--key")
        .arg(root.join("bad.pub"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key_id hex_public_key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_leaves_a_log_that_verifies_and_its_open_sessions_abandoned() {
    let db = TestDb::create("tg_crash");
    let config = db.connection("pg", &["eng"], "disable");
    let mut gw = Gateway::start(&config);
    let key = gw.create_key("agent", "eng", None);
    let script = gw.dir.path().join("load.sql");
    std::fs::write(&script, "SELECT 1;\n").unwrap();

    // Load: four pgbench clients through the gateway for longer than the gateway will live.
    let mut load = Command::new("pgbench")
        .args(["-n", "-c", "4", "-j", "2", "-T", "20", "-f"])
        .arg(&script)
        .arg(gw.dsn("pg", &key, "disable"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = driver(&gw, "pg", &key).await.unwrap();
    client
        .simple_query("SELECT 'recorded before the crash'")
        .await
        .unwrap();
    // A writer that counts what the gateway acknowledged, until the gateway dies under it.
    let writer = driver(&gw, "pg", &key).await.unwrap();
    writer
        .simple_query("CREATE TABLE acked (n int)")
        .await
        .unwrap();
    let acked = tokio::spawn(async move {
        let mut n = 0u32;
        while writer
            .simple_query(&format!("INSERT INTO acked VALUES ({})", n + 1))
            .await
            .is_ok()
        {
            n += 1;
        }
        n
    });
    gw.wait_sessions("the statement to be recorded", |_| {
        gw.commands()
            .iter()
            .any(|c| c["command"]["text"] == "SELECT 'recorded before the crash'")
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    gw.kill();
    let _ = load.kill();
    let _ = load.wait();
    drop(client);
    let acked = acked.await.unwrap();
    assert!(acked > 10, "the writer ran: {acked}");

    // Restarted on the same data: the open sessions are recorded as abandoned, and the log,
    // including the records written under load up to the kill, verifies.
    gw.restart(&config);
    let sessions = gw.wait_sessions("the restart", |s| !s.is_empty());
    let abandoned: Vec<_> = sessions
        .iter()
        .filter(|s| {
            s["end_reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("abandoned"))
        })
        .collect();
    assert!(
        abandoned.len() >= 5,
        "the driver's and pgbench's sessions: {sessions:#?}"
    );
    let detail = gw.session(abandoned[0]["id"].as_str().unwrap());
    let last = detail["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"]["type"], "session_abandoned", "{last:#}");
    assert!(
        gw.commands()
            .iter()
            .any(|c| c["command"]["text"] == "SELECT 'recorded before the crash'")
    );
    // Strict audit: every INSERT the client saw acknowledged was on record before it ran.
    let mut started = std::collections::HashSet::new();
    for s in gw.sessions() {
        for e in gw.session(s["id"].as_str().unwrap())["events"]
            .as_array()
            .unwrap()
        {
            if e["kind"]["type"] == "command_started" {
                started.insert(e["kind"]["command"]["text"].as_str().unwrap().to_string());
            }
        }
    }
    // (The one in flight at the kill may have run without its answer reaching the client; it
    // was on record before it ran too.)
    let ran = db
        .direct("SELECT count(*) FROM acked")
        .parse::<u32>()
        .unwrap();
    assert!(
        ran == acked || ran == acked + 1,
        "ran {ran}, acknowledged {acked}"
    );
    for n in 1..=ran {
        assert!(
            started.contains(&format!("INSERT INTO acked VALUES ({n})")),
            "INSERT {n} ran on the target ({acked} acknowledged) but is not in the log"
        );
    }
    assert!(gw.stop());
    let data = gw.data_dir();
    assert_eq!(verdicts(&data), [(true, None), (true, None)]);
    let v: serde_json::Value = serde_json::from_slice(&verify(&data).stdout).unwrap();
    assert!(
        v["records"].as_u64().unwrap() > 50,
        "the load was recorded: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_audit_refuses_what_it_cannot_record_and_best_effort_runs_it() {
    let db = TestDb::create("tg_strict");
    db.direct("CREATE TABLE t (n int)");
    let config = format!(
        "{}{}",
        db.connection("strict", &["eng"], "disable"),
        db.connection("loose", &["eng"], "disable").replace(
            "groups = [\"eng\"]",
            "groups = [\"eng\"]\naudit = \"best-effort\""
        )
    );
    let gw = Gateway::start(&config);
    let key = gw.create_key("agent", "eng", None);
    let strict = driver(&gw, "strict", &key).await.unwrap();
    let loose = driver(&gw, "loose", &key).await.unwrap();
    strict
        .simple_query("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    loose
        .simple_query("INSERT INTO t VALUES (2)")
        .await
        .unwrap();

    // The command's record comes before its outcome.
    let sessions = gw.wait_sessions("both sessions", |s| s.len() >= 2);
    let id = sessions
        .iter()
        .find(|s| s["connection"] == "strict")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let kinds: Vec<String> = gw.session(&id)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"]["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        ["session_start", "command_started", "command"],
        "{kinds:?}"
    );

    // The store becomes unwritable (no file of the gateway may grow any more, as on a full
    // disk): the strict session's next statement is refused and never reaches the target; the
    // best-effort one runs and is recorded once the store takes writes again.
    let pid = gw.pid().to_string();
    let limit = |size: &str| {
        let out = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={size}:")])
            .output()
            .unwrap();
        assert!(out.status.success(), "prlimit: {out:?}");
    };
    limit("0");
    let e = strict
        .simple_query("INSERT INTO t VALUES (3)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "58030", "{e}");
    let message = e.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains("audit log cannot record this statement"),
        "{message}"
    );
    assert!(
        strict.simple_query("SELECT 1").await.is_err(),
        "the session ended"
    );
    loose
        .simple_query("INSERT INTO t VALUES (4)")
        .await
        .unwrap();
    assert_eq!(
        db.direct("SELECT string_agg(n::text, ',' ORDER BY n) FROM t"),
        "1,2,4"
    );
    limit("unlimited");
    gw.wait_sessions("the best-effort insert to be recorded", |_| {
        gw.commands()
            .iter()
            .any(|c| c["command"]["text"] == "INSERT INTO t VALUES (4)")
    });
    // The refused statement is not on record as started: it never ran.
    let started: Vec<serde_json::Value> = gw.session(&id)["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"]["type"] == "command_started")
        .map(|e| e["kind"]["command"]["text"].clone())
        .collect();
    assert_eq!(started, ["INSERT INTO t VALUES (1)"], "{started:?}");
    // A new strict session works again.
    let again = driver(&gw, "strict", &key).await.unwrap();
    again
        .simple_query("INSERT INTO t VALUES (5)")
        .await
        .unwrap();
    assert_eq!(db.direct("SELECT count(*) FROM t"), "4");
}

/// Waits until something listens on `port`.
fn wait_listening(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the receiver did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A minimal HTTP receiver: appends every POST body to `out` and answers 200.
fn start_receiver(port: u16, out: &Path) -> std::process::Child {
    let script = r#"
import http.server, sys
out = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('content-length', 0)))
        with open(out, 'ab') as f:
            f.write(body)
        self.send_response(200)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"#;
    let child = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .arg(out)
        .spawn()
        .unwrap();
    wait_listening(port);
    child
}

/// The gseq of every JSON line in a file, in order.
fn gseqs(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["event"]["type"].is_string(), "{l}");
            assert_eq!(v["hash"].as_str().unwrap().len(), 64);
            v["gseq"].as_u64().unwrap()
        })
        .collect()
}

/// Records the live log holds (read-only, beside the running gateway).
fn log_records(data: &Path) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&verify(data).stdout).unwrap();
    v["records"].as_u64().unwrap()
}

/// Arrival order allows repeats (at-least-once) but no gap and no step back past a repeat.
fn assert_in_order_without_gaps(what: &str, seen: &[u64], total: u64) {
    let mut next = 0u64;
    for &g in seen {
        assert!(
            g <= next,
            "{what}: gseq {g} arrived before {next} (a gap): {seen:?}"
        );
        if g == next {
            next += 1;
        }
    }
    assert_eq!(next, total, "{what}: every record delivered");
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A syslog receiver (RFC 5424 over TCP, octet-counted frames, RFC 6587): writes the JSON
/// message of every frame to `out`, one per line, after checking its header.
fn start_syslog_receiver(port: u16, out: &Path) -> std::process::Child {
    start_syslog_receiver_with(port, out, None)
}

/// The same receiver speaking TLS (RFC 5425) with this certificate chain and key; a connection
/// whose handshake fails is dropped.
fn start_syslog_tls_receiver(port: u16, out: &Path, server: &ServerCert) -> std::process::Child {
    start_syslog_receiver_with(port, out, Some(server))
}

fn start_syslog_receiver_with(
    port: u16,
    out: &Path,
    tls: Option<&ServerCert>,
) -> std::process::Child {
    let script = r#"
import socketserver, ssl, sys, re
out = sys.argv[2]
ctx = None
if len(sys.argv) > 4:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
HEADER = re.compile(rb'^<110>1 \d{4}-\d\d-\d\dT[0-9:.]+Z tollgate tollgate - audit - ')
class H(socketserver.BaseRequestHandler):
    def handle(self):
        conn = self.request
        try:
            if ctx is not None:
                conn = ctx.wrap_socket(conn, server_side=True)
            self.frames(conn)
        except OSError:
            return
    def frames(self, conn):
        buf = b''
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk
            while b' ' in buf:
                size, rest = buf.split(b' ', 1)
                n = int(size)
                if len(rest) < n:
                    break
                msg, buf = rest[:n], rest[n:]
                m = HEADER.match(msg)
                if not m:
                    with open(out, 'ab') as f:
                        f.write(b'BAD HEADER\n')
                    return
                with open(out, 'ab') as f:
                    f.write(msg[m.end():] + b'\n')
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
S(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"#;
    let mut command = Command::new("python3");
    command.args(["-c", script, &port.to_string()]).arg(out);
    if let Some(server) = tls {
        command.arg(&server.cert).arg(&server.key);
    }
    let child = command.spawn().unwrap();
    wait_listening(port);
    child
}

/// A receiver process, killed when dropped (also when a test fails half-way).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `n` sessions are on record and all of them have ended, so that no record of
/// theirs is still to come.
fn wait_ended(gw: &Gateway, n: usize) {
    gw.wait_sessions(&format!("{n} sessions to end"), |s| {
        s.len() == n && s.iter().all(|s| !s["ended_at"].is_null())
    });
}

/// A receiver's certificate chain and key, as PEM files.
struct ServerCert {
    cert: PathBuf,
    key: PathBuf,
}

/// A test CA: its certificate as a PEM file, and what it signs with.
struct TestCa {
    pem: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn test_ca(dir: &Path, name: &str) -> TestCa {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("Tollgate test CA {name}"),
    );
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&pem, cert.pem()).unwrap();
    TestCa {
        pem,
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// A certificate for 127.0.0.1 and localhost signed by `ca`.
fn server_cert(dir: &Path, ca: &TestCa) -> ServerCert {
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let server = ServerCert {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&server.cert, cert.pem()).unwrap();
    std::fs::write(&server.key, key.serialize_pem()).unwrap();
    server
}

/// Whether the file's records reach the end of the log.
fn caught_up(path: &Path, total: u64) -> bool {
    gseqs(path).iter().max().is_some_and(|m| m + 1 == total)
}

#[test]
fn exports_deliver_every_record_in_order_across_a_receiver_restart() {
    let db = TestDb::create("tg_export");
    let port = free_port();
    let syslog_port = free_port();
    let scratch = tempfile::tempdir().unwrap();
    let received = scratch.path().join("received.jsonl");
    let logged = scratch.path().join("syslog.jsonl");
    let filed = scratch.path().join("audit.jsonl");
    let config = format!(
        "{}
[[exports]]
name = \"siem\"
kind = \"http\"
url = \"http://127.0.0.1:{port}/ingest\"
batch = 7

[[exports]]
name = \"syslog\"
kind = \"syslog\"
address = \"127.0.0.1:{syslog_port}\"

[[exports]]
name = \"archive\"
kind = \"file\"
path = \"{}\"
",
        db.connection("pg", &["eng"], "disable"),
        filed.display()
    );
    let mut receiver = start_receiver(port, &received);
    let mut syslog = start_syslog_receiver(syslog_port, &logged);
    let mut gw = Gateway::start(&config);
    let key = gw.create_key("agent", "eng", None);
    let run = |gw: &Gateway, n: usize| {
        for i in 0..n {
            let out = gw.psql("pg", &key, "disable", &["-c", &format!("SELECT {i}")]);
            assert!(out.status.success());
        }
    };
    run(&gw, 3);
    // Each session's end is on record before the count is taken: the sinks must catch up to it.
    wait_ended(&gw, 3);
    let data = gw.data_dir();
    wait_for("the first records to arrive", || {
        let total = log_records(&data);
        caught_up(&received, total) && caught_up(&logged, total)
    });

    // The receivers go away; records keep coming; they come back and get all of them.
    for child in [&mut receiver, &mut syslog] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    run(&gw, 4);
    wait_ended(&gw, 7);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let mut receiver = start_receiver(port, &received);
    let mut syslog = start_syslog_receiver(syslog_port, &logged);
    wait_for("the backlog to arrive", || {
        let total = log_records(&data);
        caught_up(&received, total) && caught_up(&logged, total)
    });

    // A gateway restart resumes from the cursor, not from the beginning.
    let before_restart = gseqs(&received).len();
    gw.restart(&config);
    run(&gw, 1);
    wait_ended(&gw, 8);
    wait_for("records after the restart", || {
        let total = log_records(&gw.data_dir());
        caught_up(&received, total) && caught_up(&logged, total) && caught_up(&filed, total)
    });
    assert!(gw.stop());
    for child in [&mut receiver, &mut syslog] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let total = log_records(&gw.data_dir());
    let seen = gseqs(&received);
    assert_in_order_without_gaps("http", &seen, total);
    assert!(
        !seen[before_restart..].contains(&0),
        "resumed from its cursor after the restart"
    );
    assert_in_order_without_gaps("syslog", &gseqs(&logged), total);
    assert_in_order_without_gaps("file", &gseqs(&filed), total);
}

#[test]
fn syslog_over_tls_delivers_every_record_in_order_across_a_receiver_restart() {
    let db = TestDb::create("tg_export_tls");
    let syslog_port = free_port();
    let scratch = tempfile::tempdir().unwrap();
    let ca = test_ca(scratch.path(), "trusted");
    let server = server_cert(scratch.path(), &ca);
    let logged = scratch.path().join("syslog-tls.jsonl");
    // The certificate is checked against the host of the address (an IP address here).
    let config = format!(
        "{}
[[exports]]
name = \"syslog-tls\"
kind = \"syslog\"
address = \"127.0.0.1:{syslog_port}\"
tls = true
ca_file = \"{}\"
",
        db.connection("pg", &["eng"], "disable"),
        ca.pem.display()
    );
    let syslog = Reaped(start_syslog_tls_receiver(syslog_port, &logged, &server));
    let mut gw = Gateway::start(&config);
    let key = gw.create_key("agent", "eng", None);
    let run = |gw: &Gateway, n: usize| {
        for i in 0..n {
            let out = gw.psql("pg", &key, "disable", &["-c", &format!("SELECT {i}")]);
            assert!(out.status.success());
        }
    };
    run(&gw, 3);
    wait_ended(&gw, 3);
    let data = gw.data_dir();
    wait_for("the first records to arrive over TLS", || {
        caught_up(&logged, log_records(&data))
    });

    // The receiver goes away; records keep coming; it comes back and gets all of them.
    drop(syslog);
    run(&gw, 4);
    wait_ended(&gw, 7);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let syslog = Reaped(start_syslog_tls_receiver(syslog_port, &logged, &server));
    wait_for("the backlog to arrive over TLS", || {
        caught_up(&logged, log_records(&data))
    });

    // A gateway restart resumes from the cursor. Waiting for the last session to end first
    // means every record is in the log before the last one is checked for.
    gw.restart(&config);
    run(&gw, 1);
    wait_ended(&gw, 8);
    wait_for("records after the restart", || {
        caught_up(&logged, log_records(&gw.data_dir()))
    });
    assert!(gw.stop());
    drop(syslog);
    let total = log_records(&gw.data_dir());
    assert_in_order_without_gaps("syslog over TLS", &gseqs(&logged), total);
    assert!(
        !gw.stderr().contains("TLS handshake"),
        "no handshake failed: {}",
        gw.stderr()
    );
}

#[test]
fn syslog_over_tls_delivers_nothing_to_a_receiver_it_cannot_verify() {
    let db = TestDb::create("tg_export_tls_refused");
    let scratch = tempfile::tempdir().unwrap();
    let trusted = test_ca(scratch.path(), "trusted");
    let stranger = test_ca(scratch.path(), "stranger");
    let server = server_cert(scratch.path(), &trusted);
    let [good_port, wrong_ca_port, wrong_name_port] = [free_port(), free_port(), free_port()];
    let good = scratch.path().join("good.jsonl");
    let wrong_ca = scratch.path().join("wrong-ca.jsonl");
    let wrong_name = scratch.path().join("wrong-name.jsonl");
    // One sink that works (checking the name "localhost"), one trusting another CA, one
    // checking a name the certificate does not carry; all three receivers hold the same
    // certificate.
    let config = format!(
        "{}
[[exports]]
name = \"good\"
kind = \"syslog\"
address = \"127.0.0.1:{good_port}\"
tls = true
ca_file = \"{trusted}\"
server_name = \"localhost\"

[[exports]]
name = \"wrong-ca\"
kind = \"syslog\"
address = \"127.0.0.1:{wrong_ca_port}\"
tls = true
ca_file = \"{stranger}\"

[[exports]]
name = \"wrong-name\"
kind = \"syslog\"
address = \"127.0.0.1:{wrong_name_port}\"
tls = true
ca_file = \"{trusted}\"
server_name = \"elsewhere.example\"
",
        db.connection("pg", &["eng"], "disable"),
        trusted = trusted.pem.display(),
        stranger = stranger.pem.display(),
    );
    let receivers = [
        Reaped(start_syslog_tls_receiver(good_port, &good, &server)),
        Reaped(start_syslog_tls_receiver(wrong_ca_port, &wrong_ca, &server)),
        Reaped(start_syslog_tls_receiver(
            wrong_name_port,
            &wrong_name,
            &server,
        )),
    ];
    let gw = Gateway::start(&config);
    let key = gw.create_key("agent", "eng", None);

    // The refused sinks log why, naming themselves, and keep retrying.
    let refusals = |sink: &str, port: u16| {
        gw.stderr()
            .lines()
            .filter(|l| {
                l.contains("audit export not delivered")
                    && l.contains(sink)
                    && l.contains(&format!("127.0.0.1:{port}: TLS handshake refused"))
                    && l.contains("invalid peer certificate")
            })
            .count()
    };
    wait_for("both refusals to be logged", || {
        refusals("wrong-ca", wrong_ca_port) >= 1 && refusals("wrong-name", wrong_name_port) >= 1
    });
    let log = gw.stderr();
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(log.contains("elsewhere.example"), "{log}");

    // The gateway keeps serving while the exports are refused.
    for i in 0..3 {
        let out = gw.psql("pg", &key, "disable", &["-c", &format!("SELECT {i}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_ended(&gw, 3);
    let data = gw.data_dir();
    wait_for("the good sink to catch up", || {
        caught_up(&good, log_records(&data))
    });
    let (ca_before, name_before) = (
        refusals("wrong-ca", wrong_ca_port),
        refusals("wrong-name", wrong_name_port),
    );
    wait_for("another attempt by each refused sink", || {
        refusals("wrong-ca", wrong_ca_port) > ca_before
            && refusals("wrong-name", wrong_name_port) > name_before
    });
    for (what, path) in [("wrong CA", &wrong_ca), ("wrong name", &wrong_name)] {
        let got = std::fs::read_to_string(path).unwrap_or_default();
        assert!(got.is_empty(), "{what}: the receiver got {got:?}");
    }
    assert_in_order_without_gaps("good", &gseqs(&good), log_records(&data));
    drop(receivers);
}

#[test]
fn a_rotated_key_signs_on_and_the_old_checkpoints_still_verify() {
    let db = TestDb::create("tg_rotate");
    let config = db.connection("pg", &["eng"], "disable");
    let mut gw = Gateway::start(&config);
    let key = gw.create_key("agent", "eng", None);
    assert!(
        gw.psql("pg", &key, "disable", &["-c", "SELECT 1"])
            .status
            .success()
    );
    assert!(gw.stop());
    let data = gw.data_dir();
    let first_key = std::fs::read_to_string(data.join("signing.pub")).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["audit", "rotate-key", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let old_id = first_key.split_whitespace().next().unwrap();
    assert!(said.contains(&format!("retired key {old_id}")), "{said}");
    assert!(data.join(format!("signing-{old_id}.retired.key")).exists());

    gw.restart(&config);
    assert!(
        gw.psql("pg", &key, "disable", &["-c", "SELECT 2"])
            .status
            .success()
    );
    assert!(gw.stop());
    let keys = std::fs::read_to_string(data.join("signing.pub")).unwrap();
    assert_eq!(keys.lines().count(), 2, "{keys}");
    assert!(keys.starts_with(first_key.trim_end()), "{keys}");
    assert_eq!(verdicts(&data), [(true, None), (true, None)]);
    // Pinned to the old key alone, the checkpoints the new key signed are not trusted.
    let old_only = data.join("old.pub");
    std::fs::write(&old_only, &first_key).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(&data)
        .arg("--key")
        .arg(&old_only)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["first_bad"]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown key"),
        "{v}"
    );
    // No key to rotate: a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["audit", "rotate-key", "--data-dir"])
        .arg(data.join("nowhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key to rotate"));
}

#[test]
fn retention_purges_payloads_behind_signed_tombstones_and_legal_hold_keeps_them() {
    let db = TestDb::create("tg_retain");
    let config = format!(
        "{}{}",
        db.connection("short", &["eng"], "disable").replace(
            "groups = [\"eng\"]",
            "groups = [\"eng\"]\nretention = \"1s\""
        ),
        db.connection("held", &["eng"], "disable").replace(
            "groups = [\"eng\"]",
            "groups = [\"eng\"]\nretention = \"1s\"\nlegal_hold = true"
        )
    );
    let mut gw = Gateway::start(&config);
    let key = gw.create_key("agent", "eng", None);
    let out = gw.psql(
        "short",
        &key,
        "disable",
        &["-c", "SELECT 'short-lived words'"],
    );
    assert!(out.status.success());
    let out = gw.psql(
        "held",
        &key,
        "disable",
        &["-c", "SELECT 'kept for the court'"],
    );
    assert!(out.status.success());
    wait_for("the short connection's session to be purged", || {
        !gw.commands()
            .iter()
            .any(|c| c["command"]["text"] == "SELECT 'short-lived words'")
    });
    assert!(
        gw.commands()
            .iter()
            .any(|c| c["command"]["text"] == "SELECT 'kept for the court'"),
        "legal hold keeps the held connection's records"
    );
    assert!(gw.stop());
    let data = gw.data_dir();

    // The chain and its checkpoints still verify, in both verifiers, through the tombstone.
    assert_eq!(verdicts(&data), [(true, None), (true, None)]);
    let v: serde_json::Value = serde_json::from_slice(&verify(&data).stdout).unwrap();
    let disk = gw.all_persisted_text();
    assert!(
        !contains(&disk, "short-lived words"),
        "the payload is gone from disk"
    );
    assert!(contains(&disk, "kept for the court"));
    assert!(contains(&disk, "audit_purged"), "the purge is on record");
    assert!(
        v["purged"].as_u64().unwrap() >= 4,
        "start, started, command and end of the short session: {v}"
    );

    // A purged record's hash changed: the tombstone no longer vouches for it.
    let scratch = tempfile::tempdir().unwrap();
    let t = tamper(&data, scratch.path(), "purged");
    let purged_body = runs(&t.db)
        .into_iter()
        .find(|(_, b)| b.windows(4).any(|w| w == b"TGP1"))
        .unwrap();
    let mut body = purged_body.1.clone();
    let n = body.len();
    body[n - 1] ^= 1;
    set_body(&t.db, purged_body.0, &body);
    let [(ok, _), (py_ok, _)] = verdicts(&t.dir);
    assert!(!ok && !py_ok);
}
