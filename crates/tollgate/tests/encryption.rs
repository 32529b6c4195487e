#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Encryption at rest of the data dir's private files: sealed under a master key from the
//! environment or a file, sealed in place when a master key is first configured, refused without
//! the right key, and moved to a new key by `tollgate audit rotate-master-key`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{ADMIN_KEY, BIN, Gateway, TestDb, free_port};
use tollgate_audit::seal::MasterKey;

/// 32 key bytes, different per process and seed (test keys: not meant to be unguessable).
fn key_bytes(seed: u8) -> [u8; 32] {
    let salt = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    std::array::from_fn(|i| {
        (salt.rotate_left((i as u32 * 7) % 64) as u8)
            .wrapping_mul(31)
            .wrapping_add(seed.wrapping_mul(101))
            .wrapping_add(i as u8)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sets a variable for the gateway processes spawned afterwards; returns its name.
fn set_env(name: &str, value: &str) -> String {
    let name = format!("{name}_{}", std::process::id());
    // SAFETY of the process environment: each test uses distinct variable names, and the value
    // is only read by child processes spawned afterwards.
    unsafe { std::env::set_var(&name, value) };
    name
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The master key id named by a sealed file's header.
fn sealed_under(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("tollgate-sealed v1"),
        "{} is not sealed",
        path.display()
    );
    lines
        .next()
        .and_then(|l| l.strip_prefix("master-key "))
        .unwrap()
        .to_string()
}

fn tollgate(args: &[&str], dir_args: &[&Path]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(dir_args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn verify_ok(data: &Path) {
    let out = tollgate(&["audit", "verify", "--data-dir"], &[data]);
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn statement_works(gw: &Gateway, key: &str, sql: &str) {
    let out = gw.psql("pg", key, "disable", &["-c", sql]);
    assert!(
        out.status.success(),
        "{sql}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.stderr()
    );
}

/// Writes a config with fresh listener ports beside the gateway's own.
fn write_config(gw: &Gateway, name: &str, extra: &str) -> PathBuf {
    let path = gw.dir.path().join(name);
    std::fs::write(
        &path,
        format!(
            "[listen]\napi = \"127.0.0.1:{}\"\npostgres = \"127.0.0.1:{}\"\n\n{extra}",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    path
}

/// Starts `tollgate up` on the gateway's data dir, which must fail; returns its stderr.
fn start_fails(gw: &Gateway, extra: &str) -> String {
    let config = write_config(gw, "failing.toml", extra);
    let mut child = Command::new(BIN)
        .args(["up", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(gw.data_dir())
        .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway started, or hung, where it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn encryption(current_env: &str, previous_env: Option<&str>) -> String {
    let mut s = format!("[encryption]\nmaster_key_env = \"{current_env}\"\n");
    if let Some(p) = previous_env {
        s.push_str(&format!("previous_master_key_env = \"{p}\"\n"));
    }
    s.push('\n');
    s
}

const PRIVATE_FILES: [&str; 4] = [
    "signing.key",
    "tls.key",
    "masking.key",
    "ssh_host_ed25519.key",
];

#[test]
fn a_gateway_started_with_a_master_key_keeps_its_private_files_sealed() {
    let db = TestDb::create("tg_seal_new");
    let bytes = key_bytes(1);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    std::fs::write(
        &key_file,
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    )
    .unwrap();
    let master_id = MasterKey::from_file(&key_file).unwrap().id();
    let config = format!(
        "[encryption]\nmaster_key_file = {:?}\n\n{}",
        key_file.display().to_string(),
        db.connection("pg", &["eng"], "disable")
    );
    let mut gw = Gateway::start_in(dir, &config);
    let key = gw.create_key("agent", "eng", None);
    statement_works(&gw, &key, "SELECT 1");
    assert!(gw.stop());

    let data = gw.data_dir();
    for name in PRIVATE_FILES {
        assert_eq!(sealed_under(&data.join(name)), master_id, "{name}");
    }
    // No plain private key anywhere: no PEM key, no PKCS#8 Ed25519 key (its algorithm id).
    let disk = gw.all_persisted_text();
    assert!(!contains_bytes(&disk, b"PRIVATE KEY"));
    assert!(!contains_bytes(&disk, &[0x06, 0x03, 0x2b, 0x65, 0x70]));
    assert!(!contains_bytes(&disk, hex(&bytes).as_bytes()));
    verify_ok(&data);

    gw.restart(&config);
    statement_works(&gw, &key, "SELECT 2");
    assert!(gw.stop());
    verify_ok(&data);
}

#[test]
fn plain_files_are_sealed_in_place_refused_without_the_key_and_rotated_to_a_new_one() {
    let db = TestDb::create("tg_seal_rotate");
    let connection = db.connection("pg", &["eng"], "disable");
    let key_a = hex(&key_bytes(2));
    let key_b = base64::engine::general_purpose::STANDARD.encode(key_bytes(3));
    let id_a = MasterKey::parse(&key_a).unwrap().id();
    let id_b = MasterKey::parse(&key_b).unwrap().id();
    assert_ne!(id_a, id_b);
    let env_a = set_env("TG_TEST_MASTER_A", &key_a);
    let env_b = set_env("TG_TEST_MASTER_B", &key_b);

    // A gateway without encryption: plain files, as before.
    let mut gw = Gateway::start(&connection);
    let key = gw.create_key("agent", "eng", None);
    statement_works(&gw, &key, "SELECT 1");
    assert!(gw.stop());
    let data = gw.data_dir();
    let plain: Vec<(&str, Vec<u8>)> = PRIVATE_FILES
        .iter()
        .map(|name| (*name, std::fs::read(data.join(name)).unwrap()))
        .collect();
    let public_keys = std::fs::read_to_string(data.join("signing.pub")).unwrap();

    // With master key A: the files are sealed in place, the same keys go on working.
    let with_a = format!("{}{connection}", encryption(&env_a, None));
    gw.restart(&with_a);
    statement_works(&gw, &key, "SELECT 2");
    assert!(gw.stop());
    let disk = gw.all_persisted_text();
    for (name, bytes) in &plain {
        assert_eq!(sealed_under(&data.join(name)), id_a, "{name}");
        assert!(
            !contains_bytes(&disk, bytes),
            "the plain {name} is still on disk"
        );
    }
    assert!(!contains_bytes(&disk, b"PRIVATE KEY"));
    assert_eq!(
        std::fs::read_to_string(data.join("signing.pub")).unwrap(),
        public_keys,
        "the same signing key signs on"
    );
    verify_ok(&data);

    // Without a master key, or with the wrong one: a clear startup error.
    let m = start_fails(&gw, &connection);
    assert!(
        m.contains("signing.key")
            && m.contains(&id_a)
            && m.contains("no master key is configured")
            && m.contains("encryption.master_key_env"),
        "{m}"
    );
    let m = start_fails(&gw, &format!("{}{connection}", encryption(&env_b, None)));
    assert!(
        m.contains("signing.key")
            && m.contains(&id_a)
            && m.contains(&id_b)
            && m.contains("encryption.master_key_env"),
        "{m}"
    );
    // Offline verification needs no master key.
    verify_ok(&data);

    // Rotation to B, with A as the previous key.
    let rotate_config = write_config(
        &gw,
        "rotate.toml",
        &format!("{}{connection}", encryption(&env_b, Some(&env_a))),
    );
    let out = tollgate(
        &["audit", "rotate-master-key", "--config"],
        &[&rotate_config, Path::new("--data-dir"), &data],
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("re-sealed 4 files under master key {id_b}")),
        "{said}"
    );
    for name in PRIVATE_FILES {
        assert_eq!(sealed_under(&data.join(name)), id_b, "{name}");
    }
    // A rotation without the old key cannot open the files; nothing is changed.
    let b_only = write_config(
        &gw,
        "b-only.toml",
        &format!("{}{connection}", encryption(&env_b, None)),
    );
    let a_only = write_config(&gw, "a-only.toml", &encryption(&env_a, None));
    let out = tollgate(
        &["audit", "rotate-master-key", "--config"],
        &[&a_only, Path::new("--data-dir"), &data],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&id_b),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Only the new key: it works, with the same signing key.
    let with_b = format!("{}{connection}", encryption(&env_b, None));
    gw.restart(&with_b);
    statement_works(&gw, &key, "SELECT 3");
    assert!(gw.stop());
    assert_eq!(
        std::fs::read_to_string(data.join("signing.pub")).unwrap(),
        public_keys
    );
    verify_ok(&data);

    // The old key alone is refused.
    let m = start_fails(&gw, &with_a);
    assert!(
        m.contains("signing.key") && m.contains(&id_b) && m.contains(&id_a),
        "{m}"
    );

    // Rotating the signing key of a sealed data dir needs the master key too.
    let out = tollgate(&["audit", "rotate-key", "--data-dir"], &[&data]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("encryption.master_key_env"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tollgate(
        &["audit", "rotate-key", "--config"],
        &[&b_only, Path::new("--data-dir"), &data],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let retired: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".retired.key"))
        .collect();
    assert_eq!(retired.len(), 1);
    assert_eq!(sealed_under(&retired[0]), id_b);
    assert_eq!(sealed_under(&data.join("signing.key")), id_b);
    gw.restart(&with_b);
    statement_works(&gw, &key, "SELECT 4");
    assert!(gw.stop());
    assert_eq!(
        std::fs::read_to_string(data.join("signing.pub"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    verify_ok(&data);
}

/// The marker the recorded statements carry.
const MARKER: &str = "marker-7f3a9c";

/// Every file under `dir`, with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

/// Asserts that no file of the data dir (database, write-ahead log, journal, key files) holds
/// the marker; returns how many files were scanned.
fn marker_nowhere_in(data: &Path) -> usize {
    let files = files_under(data);
    for (path, bytes) in &files {
        assert!(
            !contains_bytes(bytes, MARKER.as_bytes()),
            "{} holds the marker in the clear",
            path.display()
        );
    }
    files.len()
}

fn python_verify_ok(data: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/verify_audit.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("--json")
        .arg("--db")
        .arg(data.join("tollgate.db"))
        .arg("--key")
        .arg(data.join("signing.pub"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "verify_audit.py: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&said).unwrap();
    assert_eq!(v["ok"], true, "{v}");
}

/// The ids of the sessions that ran commands.
fn command_sessions(gw: &Gateway) -> Vec<String> {
    gw.sessions()
        .iter()
        .filter(|s| s["commands"].as_i64().unwrap_or(0) > 0)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// `(id, kek_id)` of every audit data key, from the database directly.
fn data_keys(data: &Path) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open_with_flags(
        data.join("tollgate.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db
        .prepare("SELECT id, kek_id FROM audit_data_keys ORDER BY created_at")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every run of the audit log as stored: `(first_gseq, body)`.
fn audit_runs(data: &Path) -> Vec<(i64, Vec<u8>)> {
    let db = rusqlite::Connection::open_with_flags(
        data.join("tollgate.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db
        .prepare("SELECT first_gseq, body FROM audit_runs ORDER BY first_gseq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn recordings_are_sealed_read_with_the_key_verified_without_it_and_kept_across_rotation() {
    let db = TestDb::create("tg_seal_rec");
    let connection = db.connection("pg", &["eng"], "disable");
    let key_a = hex(&key_bytes(4));
    let key_b = base64::engine::general_purpose::STANDARD.encode(key_bytes(5));
    let id_a = MasterKey::parse(&key_a).unwrap().id();
    let id_b = MasterKey::parse(&key_b).unwrap().id();
    let env_a = set_env("TG_TEST_REC_MASTER_A", &key_a);
    let env_b = set_env("TG_TEST_REC_MASTER_B", &key_b);
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.jsonl");
    let sink = format!(
        "[[exports]]\nname = \"archive\"\nkind = \"file\"\npath = {:?}\n\n",
        export.display().to_string()
    );
    let with_a = format!("{}{sink}{connection}", encryption(&env_a, None));

    let mut gw = Gateway::start_in(dir, &with_a);
    let data = gw.data_dir();
    let key = gw.create_key("agent", "eng", None);
    statement_works(&gw, &key, &format!("SELECT '{MARKER}' AS seen"));
    statement_works(&gw, &key, &format!("SELECT length('{MARKER}-second') AS n"));
    let sessions = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = command_sessions(&gw);
            if s.len() == 2 || Instant::now() > deadline {
                break s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(sessions.len(), 2, "{:#?}", gw.sessions());
    // Read through the API: opened with the master key.
    let shown = gw.cli_ok(ADMIN_KEY, &["sessions", "show", &sessions[1], "--json"]);
    assert!(shown.contains(MARKER), "{shown}");
    let replay = gw.cli_ok(ADMIN_KEY, &["sessions", "replay", &sessions[1]]);
    assert!(replay.contains(MARKER), "{replay}");
    // The export sink gets the events opened.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&export).is_ok_and(|t| t.contains(&format!("{MARKER}-second"))) {
        assert!(
            Instant::now() < deadline,
            "the export sink never delivered the marker: {}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let exported = std::fs::read_to_string(&export).unwrap();
    // Strict audit: the statement's command_started, then its command with the outcome.
    let kinds: Vec<String> = exported
        .lines()
        .filter(|l| l.contains(&format!("'{MARKER}' AS seen")))
        .map(|l| {
            let record: serde_json::Value = serde_json::from_str(l).unwrap();
            record["event"]["type"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(kinds, ["command_started", "command"], "{exported}");
    // Nothing on disk in the clear while it runs (journal included) nor after it stopped.
    assert!(marker_nowhere_in(&data) >= 4);
    assert!(gw.stop());
    assert!(marker_nowhere_in(&data) >= 4);
    let keys = data_keys(&data);
    assert_eq!(keys.len(), 1, "one data key per start: {keys:?}");
    assert_eq!(keys[0].1, id_a);

    // Verification needs no key: the Rust verifier, the independent one, and a bundle.
    verify_ok(&data);
    python_verify_ok(&data);
    let bundle = gw.dir.path().join("bundle.json");
    let out = tollgate(
        &["audit", "export", "--session", &sessions[1], "--data-dir"],
        &[&data, Path::new("--out"), &bundle],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!contains_bytes(
        &std::fs::read(&bundle).unwrap(),
        MARKER.as_bytes()
    ));
    let out = tollgate(&["audit", "verify", "--bundle"], &[&bundle]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Rotation to B: the data key is re-wrapped, the records stay as they are.
    let db_before = data_keys(&data);
    let runs_before = audit_runs(&data);
    let rotate_config = write_config(
        &gw,
        "rotate.toml",
        &format!("{}{connection}", encryption(&env_b, Some(&env_a))),
    );
    let out = tollgate(
        &["audit", "rotate-master-key", "--config"],
        &[&rotate_config, Path::new("--data-dir"), &data],
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!(
            "re-wrapped 1 audit data key under master key {id_b}"
        )),
        "{said}"
    );
    let keys = data_keys(&data);
    assert_eq!(
        keys.iter().map(|k| &k.0).collect::<Vec<_>>(),
        db_before.iter().map(|k| &k.0).collect::<Vec<_>>()
    );
    assert!(keys.iter().all(|k| k.1 == id_b), "{keys:?}");
    assert_eq!(audit_runs(&data), runs_before, "records untouched");
    verify_ok(&data);
    python_verify_ok(&data);

    // Only the new key: the old recording replays, new ones are sealed under B.
    let with_b = format!("{}{sink}{connection}", encryption(&env_b, None));
    gw.restart(&with_b);
    let replay = gw.cli_ok(ADMIN_KEY, &["sessions", "replay", &sessions[1]]);
    assert!(replay.contains(MARKER), "{replay}");
    let shown = gw.cli_ok(ADMIN_KEY, &["sessions", "show", &sessions[0], "--json"]);
    assert!(shown.contains(&format!("{MARKER}-second")), "{shown}");
    statement_works(&gw, &key, &format!("SELECT '{MARKER}-third'"));
    assert!(gw.stop());
    marker_nowhere_in(&data);
    let keys = data_keys(&data);
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.1 == id_b), "{keys:?}");
    verify_ok(&data);
    python_verify_ok(&data);

    // Neither key: the gateway refuses to start, naming the setting (the sealed signing key is
    // found first; a store holding sealed payloads is refused the same way).
    let m = start_fails(&gw, &connection);
    assert!(
        m.contains(&id_b)
            && m.contains("no master key is configured")
            && m.contains("encryption.master_key_env"),
        "{m}"
    );
    // The old key alone cannot start it either.
    let m = start_fails(&gw, &format!("{}{connection}", encryption(&env_a, None)));
    assert!(m.contains(&id_b) && m.contains(&id_a), "{m}");
    // And the log still verifies without any key.
    verify_ok(&data);
    python_verify_ok(&data);
}
