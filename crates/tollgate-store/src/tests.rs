use super::*;
use tollgate_core::Recorder;
use tollgate_core::{Channel, Command, Identity, Outcome, Protocol, ProtocolStep, SessionInfo};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).unwrap();
    (dir, store)
}

#[test]
fn keys_round_trip_and_revoke() {
    let (_d, store) = store();
    let key = KeyRecord {
        id: "k1".into(),
        name: "ci".into(),
        groups: vec!["eng".into()],
        hash: "ab".into(),
        admin: false,
        created_at: 1,
        expires_at: Some(5),
        revoked_at: None,
    };
    store.insert_key(&key).unwrap();
    assert_eq!(store.keys().unwrap(), vec![key.clone()]);
    assert!(store.revoke_key("k1", 9).unwrap());
    assert!(!store.revoke_key("nope", 9).unwrap());
    assert_eq!(store.keys().unwrap()[0].revoked_at, Some(9));
    // A second revocation keeps the first time.
    store.revoke_key("k1", 11).unwrap();
    assert_eq!(store.keys().unwrap()[0].revoked_at, Some(9));
}

#[test]
fn token_revocations_round_trip() {
    let (dir, store) = store();
    let r = |kind, value: &str, at| TokenRevocation {
        kind,
        value: value.into(),
        revoked_at: at,
        revoked_by: Some("admin".into()),
        reason: format!("at {at}"),
    };
    store
        .revoke_token(&r(RevocationKind::Jti, "j1", 10))
        .unwrap();
    store
        .revoke_token(&r(RevocationKind::Subject, "ci:job", 20))
        .unwrap();
    // A token id revoked again keeps its first record; a subject moves forward, never back.
    store
        .revoke_token(&r(RevocationKind::Jti, "j1", 30))
        .unwrap();
    store
        .revoke_token(&r(RevocationKind::Subject, "ci:job", 40))
        .unwrap();
    store
        .revoke_token(&r(RevocationKind::Subject, "ci:job", 35))
        .unwrap();
    let all = store.token_revocations().unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0], r(RevocationKind::Jti, "j1", 10));
    assert_eq!(all[1].kind, RevocationKind::Subject);
    assert_eq!(all[1].revoked_at, 40);
    // They survive a reopen (the migration is not applied twice).
    drop(store);
    let again = Store::open(&dir.path().join("t.db")).unwrap();
    assert_eq!(again.token_revocations().unwrap(), all);
}

#[test]
fn web_sessions_are_kept_hashed_and_expired_ones_forgotten() {
    let (_d, store) = store();
    let mut identity = Identity::new("alice", tollgate_core::AuthMethod::Oidc, vec!["eng".into()]);
    identity.token_id = Some("j1".into());
    let session = |hash: &str, expires_at: i64| WebSession {
        id_hash: hash.into(),
        identity: identity.clone(),
        created_at: 1,
        expires_at,
    };
    store.insert_web_session(&session("old", 5), 1).unwrap();
    store.insert_web_session(&session("h1", 100), 2).unwrap();
    assert_eq!(store.web_session("h1").unwrap(), Some(session("h1", 100)));
    assert_eq!(store.web_session("old").unwrap().unwrap().expires_at, 5);
    // The next login forgets sessions expired by then.
    store.insert_web_session(&session("h2", 200), 50).unwrap();
    assert_eq!(store.web_session("old").unwrap(), None);
    // A hash is stored once.
    assert!(store.insert_web_session(&session("h2", 300), 50).is_err());
    assert!(store.delete_web_session("h1").unwrap());
    assert!(!store.delete_web_session("h1").unwrap());
    assert_eq!(store.web_session("h1").unwrap(), None);
    assert!(store.web_session("h2").unwrap().is_some());
}

#[test]
fn events_are_ordered_and_sessions_summarised() {
    let (_d, store) = store();
    let writer = store.event_writer(test_signer()).unwrap();
    let ident = Identity {
        subject: "alice".into(),
        via: tollgate_core::AuthMethod::ApiKey,
        key_id: Some("k1".into()),
        groups: vec![],
        admin: false,
        expires_at: None,
        kind: None,
        issuer: None,
        client_id: None,
        token_id: None,
        issued_at: None,
    };
    let events = [
        EventKind::SessionStart(SessionInfo {
            identity: Some(ident),
            connection: "db".into(),
            protocol: Protocol::Postgres,
            channel: Channel::Native,
            client_addr: "127.0.0.1:1".into(),
            tls: true,
            client_user: None,
            application: None,
            masking: None,
        }),
        EventKind::Command {
            command: Command {
                step: ProtocolStep::SimpleQuery,
                text: "select 1".into(),
                params: vec![],
                statement: None,
            },
            outcome: Outcome::default(),
        },
        EventKind::SessionEnd {
            reason: "client terminated".into(),
        },
    ];
    for (seq, kind) in events.into_iter().enumerate() {
        writer.record(Event {
            session: "s1".into(),
            seq: seq as u64,
            at: 100 + seq as i64,
            kind,
        });
    }
    writer.flush().unwrap();
    let got = store.events("s1").unwrap();
    assert_eq!(got.len(), 3);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    let s = store.session("s1").unwrap().unwrap();
    assert_eq!(s.subject.as_deref(), Some("alice"));
    assert_eq!(s.commands, 1);
    assert_eq!(s.ended_at, Some(102));
    assert_eq!(s.end_reason.as_deref(), Some("client terminated"));
    assert!(store.contains_text("select 1").unwrap());
    assert!(!store.contains_text("never-stored").unwrap());
    writer.close();
    // Chained and signed: the session end and the close each sign the head.
    let audit = store.audit_material().unwrap();
    let report = audit.verify(None);
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, 3);
    assert_eq!(report.last_checkpoint, Some(2));
    assert_eq!(report.unsigned_tail, 0);
}

#[test]
fn runs_written_in_several_batches_read_back_in_order() {
    let (_d, store) = store();
    let writer = store.event_writer(test_signer()).unwrap();
    let command = |n: u32| EventKind::Command {
        command: Command {
            step: ProtocolStep::Execute,
            text: format!("select {n}").into(),
            params: vec![Some(n.to_string()), None],
            statement: Some("s1".into()),
        },
        outcome: Outcome::default(),
    };
    let start = EventKind::SessionStart(SessionInfo {
        identity: None,
        connection: "db".into(),
        protocol: Protocol::Postgres,
        channel: Channel::Api,
        client_addr: "x".into(),
        tls: false,
        client_user: None,
        application: None,
        masking: None,
    });
    let mut seq = 0;
    let mut emit = |kind| {
        writer.record(Event {
            session: "s2".into(),
            seq,
            at: seq as i64,
            kind,
        });
        seq += 1;
    };
    emit(start);
    emit(command(1));
    writer.flush().unwrap();
    emit(command(2));
    emit(EventKind::Refusal(tollgate_core::Refusal::new(
        tollgate_core::RefusalCode::Revoked,
        "key revoked",
    )));
    writer.flush().unwrap();
    let events = store.events("s2").unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert!(
        matches!(&events[2].kind, EventKind::Command { command, .. } if &*command.text == "select 2")
    );
    let s = store.session("s2").unwrap().unwrap();
    assert_eq!((s.commands, s.refused), (2, 1));
    assert!(store.events("other").unwrap().is_empty());
    writer.close();
}

fn test_signer() -> tollgate_audit::Signer {
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    tollgate_audit::Signer::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn command(i: u64) -> EventKind {
    EventKind::Command {
        command: Command {
            step: ProtocolStep::SimpleQuery,
            text: format!("select {i}").into(),
            params: vec![],
            statement: None,
        },
        outcome: Outcome::default(),
    }
}

#[test]
fn a_store_that_cannot_keep_up_drops_best_effort_commands_and_says_so() {
    let (dir, store) = store();
    let writer = store.event_writer_with_limit(test_signer(), 5).unwrap();
    // Another process holds the database: nothing can be written for a while.
    let blocker = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for seq in 0..20u64 {
        writer.record(Event {
            session: "busy".into(),
            seq,
            at: 100 + seq as i64,
            kind: command(seq),
        });
    }
    // A session end is never dropped.
    writer.record(Event {
        session: "busy".into(),
        seq: 20,
        at: 200,
        kind: EventKind::SessionEnd {
            reason: "done".into(),
        },
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    writer.flush().unwrap();
    writer.close();

    let kept = store.events("busy").unwrap();
    assert_eq!(
        kept.len(),
        6,
        "five commands within the limit and the end: {kept:?}"
    );
    assert!(matches!(kept[5].kind, EventKind::SessionEnd { .. }));
    let audit = store.audit_material().unwrap();
    let mut dropped_notes = Vec::new();
    for (session, _, _, body) in &audit.runs {
        for s in tollgate_audit::split_run(body).unwrap() {
            let text = String::from_utf8_lossy(s.record.payload).to_string();
            if text.contains("events_dropped") {
                assert!(session.starts_with("recorder-"), "{session}");
                dropped_notes.push(text);
            }
        }
    }
    assert_eq!(dropped_notes.len(), 1, "{dropped_notes:?}");
    assert!(dropped_notes[0].contains("15 best-effort command events were dropped"));
    assert!(audit.verify(None).intact());
}

/// Records `kinds` as session `session` through `writer`, each durable, and checks each was
/// acknowledged.
fn record_durably(writer: &EventWriter, session: &str, first_seq: u64, kinds: Vec<EventKind>) {
    for (i, kind) in kinds.into_iter().enumerate() {
        let (tx, rx) = std::sync::mpsc::channel();
        writer.record_durable(
            Event {
                session: session.into(),
                seq: first_seq + i as u64,
                at: 1_000 + i as i64,
                kind,
            },
            Box::new(move |r| tx.send(r).unwrap()),
        );
        rx.recv().unwrap().unwrap();
    }
}

/// Writes a journal segment continuing the store's chain with `count` command records of
/// `session`, as a gateway killed before its writer thread committed them would leave it.
fn leave_in_journal(store: &Store, path: &Path, session: &str, count: u64) -> Vec<u8> {
    let material = store.audit_material().unwrap();
    let last = material.runs.last().map(|(_, _, _, body)| {
        let s = tollgate_audit::split_run(body).unwrap();
        let l = s.last().unwrap();
        (l.record.gseq, l.hash)
    });
    let mut chain = tollgate_audit::ChainState::resume(last);
    let mut bytes = Vec::new();
    for seq in 0..count {
        let payload = serde_json::to_vec(&command(seq)).unwrap();
        chain
            .append(5_000 + seq as i64, session, seq, &payload, &mut bytes)
            .unwrap();
    }
    let dir = journal_dir(path);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0000000000000007.tgj"), &bytes).unwrap();
    bytes
}

#[test]
fn durable_events_are_acknowledged_while_the_database_is_locked_and_committed_after() {
    let (dir, store) = store();
    let writer = store.event_writer(test_signer()).unwrap();
    let blocker = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = std::time::Instant::now();
    record_durably(&writer, "locked", 0, (0..5).map(command).collect());
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "durable events must not wait for the database: {:?}",
        started.elapsed()
    );
    // They are in the journal already.
    let journal = journal_dir(&dir.path().join("t.db"));
    let held: u64 = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(held > 0, "the journal holds the records");
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    writer.flush().unwrap();
    assert_eq!(store.events("locked").unwrap().len(), 5);
    writer.close();
    assert!(!journal.exists(), "a clean close leaves no journal");
    assert!(store.audit_material().unwrap().verify(None).intact());
}

#[test]
fn records_only_the_journal_holds_are_recovered_at_start() {
    let (dir, store) = store();
    let path = dir.path().join("t.db");
    let writer = store.event_writer(test_signer()).unwrap();
    record_durably(&writer, "before", 0, (0..3).map(command).collect());
    writer.close();
    let mut segment = leave_in_journal(&store, &path, "killed", 4);
    // A torn last write: half of one more record.
    let torn = segment[..segment.len() / 8].to_vec();
    segment.extend_from_slice(&torn);
    std::fs::write(journal_dir(&path).join("0000000000000007.tgj"), &segment).unwrap();

    let writer = store.event_writer(test_signer()).unwrap();
    writer.flush().unwrap();
    let recovered = store.events("killed").unwrap();
    assert_eq!(
        recovered.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    // The chain continues after them.
    record_durably(&writer, "after", 0, vec![command(9)]);
    writer.close();
    let report = store.audit_material().unwrap().verify(None);
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, 3 + 4 + 1);
    assert!(!journal_dir(&path).exists());
}

#[test]
fn a_journal_that_does_not_continue_the_chain_is_set_aside_not_copied() {
    let (dir, store) = store();
    let path = dir.path().join("t.db");
    let writer = store.event_writer(test_signer()).unwrap();
    record_durably(&writer, "before", 0, (0..2).map(command).collect());
    writer.close();
    let mut segment = leave_in_journal(&store, &path, "forged", 3);
    // Change one byte of the second record's payload: its hash no longer matches.
    let (_, first_len) = tollgate_audit::decode_record(&segment).unwrap();
    let at = first_len + 32 + 40;
    segment[at] ^= 0x01;
    std::fs::write(journal_dir(&path).join("0000000000000007.tgj"), &segment).unwrap();

    let writer = store.event_writer(test_signer()).unwrap();
    writer.flush().unwrap();
    // The record before the bad one continued the chain and is in; nothing after it.
    assert_eq!(store.events("forged").unwrap().len(), 1);
    writer.close();
    assert!(store.audit_material().unwrap().verify(None).intact());
    let kept: Vec<String> = std::fs::read_dir(journal_dir(&path))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept, vec!["0000000000000007.tgj.broken".to_string()]);
}

// --- Sealed payloads (encryption at rest) ---

use tollgate_audit::seal::{MasterKey, is_sealed};

const MARKER: &str = "marker-5e41d2";

fn marked(i: u64) -> EventKind {
    EventKind::Command {
        command: Command {
            step: ProtocolStep::SimpleQuery,
            text: format!("SELECT '{MARKER}', {i}").into(),
            params: vec![],
            statement: None,
        },
        outcome: Outcome::default(),
    }
}

fn start_of(session_connection: &str) -> EventKind {
    EventKind::SessionStart(SessionInfo {
        identity: None,
        connection: session_connection.into(),
        protocol: Protocol::Postgres,
        channel: Channel::Native,
        client_addr: "127.0.0.1:1".into(),
        tls: false,
        client_user: None,
        application: None,
        masking: None,
    })
}

fn sealed_store(dir: &Path, keys: &[&MasterKey]) -> Store {
    let sealing = keys.split_first().map(|(current, previous)| {
        Sealing::new((*current).clone(), previous.iter().map(|k| (*k).clone()))
    });
    Store::open_sealed(&dir.join("t.db"), sealing).unwrap()
}

/// Every byte of every file under `dir` (database, write-ahead log, journal).
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                all.extend(std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    all
}

fn has(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every stored record's payload, in gseq order, with its gseq.
fn payloads(store: &Store) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for (_, _, _, body) in &store.audit_material().unwrap().runs {
        for s in tollgate_audit::split_run(body).unwrap() {
            out.push((s.record.gseq, s.record.payload.to_vec()));
        }
    }
    out.sort();
    out
}

fn sealed_err(e: StoreError) -> String {
    match e {
        StoreError::Sealed { .. } => e.to_string(),
        other => panic!("not a sealed-payload error: {other}"),
    }
}

#[test]
fn sealed_payloads_round_trip_and_never_land_in_the_clear() {
    let (dir, _) = store();
    let master = MasterKey::generate().unwrap();
    let store = sealed_store(dir.path(), &[&master]);
    let writer = store.event_writer(test_signer()).unwrap();
    writer.record(Event {
        session: "s1".into(),
        seq: 0,
        at: 10,
        kind: start_of("db"),
    });
    record_durably(&writer, "s1", 1, (0..3).map(marked).collect());
    writer.record(Event {
        session: "s1".into(),
        seq: 4,
        at: 20,
        kind: EventKind::SessionEnd {
            reason: format!("bye {MARKER}"),
        },
    });
    writer.flush().unwrap();

    let events = store.events("s1").unwrap();
    assert_eq!(events.len(), 5);
    assert!(
        matches!(&events[2].kind, EventKind::Command { command, .. } if command.text.contains(MARKER))
    );
    let s = store.session("s1").unwrap().unwrap();
    assert_eq!((s.commands, s.ended_at), (3, Some(20)));
    assert!(store.contains_text(MARKER).unwrap());
    assert!(!store.contains_text("never-stored").unwrap());
    let exported = store.records_after(None, 100).unwrap();
    assert_eq!(exported.len(), 5);
    assert!(exported.iter().all(|r| r.payload.starts_with(b"{")));
    assert!(has(&exported[1].payload, MARKER));
    writer.close();

    // One data key, wrapped by the master key; every payload is an envelope under it.
    let keys = store.data_keys().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kek_id, master.id());
    for (gseq, p) in payloads(&store) {
        assert!(is_sealed(&p), "record {gseq} is plain");
        assert_eq!(
            tollgate_audit::seal::envelope_key_id(&p).unwrap(),
            keys[0].id
        );
    }
    // Not in the database, its write-ahead log or the journal; not in the session summary
    // either, except the end reason, which the summary table keeps by design.
    let disk = all_bytes(dir.path());
    assert!(
        !has(&disk, "SELECT '"),
        "a statement is on disk in the clear"
    );
    assert!(!has(&disk, &format!("'{MARKER}'")));
    // Verification needs no key: it reads the sealed bytes.
    let report = read_audit(&dir.path().join("t.db")).unwrap().verify(None);
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, 5);
}

#[test]
fn a_sealed_payload_without_the_right_master_key_is_a_clear_error() {
    let (dir, _) = store();
    let master = MasterKey::generate().unwrap();
    let store = sealed_store(dir.path(), &[&master]);
    let writer = store.event_writer(test_signer()).unwrap();
    record_durably(&writer, "s", 0, vec![marked(0)]);
    writer.close();
    let data_key = store.data_keys().unwrap()[0].id.clone();

    let plain = Store::open(&dir.path().join("t.db")).unwrap();
    let m = sealed_err(plain.events("s").unwrap_err());
    assert!(
        m.contains(&data_key)
            && m.contains(&master.id())
            && m.contains("no master key is configured")
            && m.contains(MASTER_KEY_SETTING),
        "{m}"
    );
    let m = sealed_err(plain.records_after(None, 10).unwrap_err());
    assert!(m.contains(&data_key), "{m}");
    assert!(plain.contains_text(MARKER).is_err());
    // A writer without the key is refused: it could not read what is there.
    let m = match plain.event_writer(test_signer()) {
        Ok(_) => panic!("a writer started without the master key"),
        Err(e) => e.to_string(),
    };
    assert!(
        m.contains(&data_key) && m.contains(&master.id()) && m.contains(MASTER_KEY_SETTING),
        "{m}"
    );

    let other = MasterKey::generate().unwrap();
    let wrong = sealed_store(dir.path(), &[&other]);
    let m = sealed_err(wrong.events("s").unwrap_err());
    assert!(
        m.contains(&data_key)
            && m.contains(&master.id())
            && m.contains(&other.id())
            && m.contains("previous_master_key"),
        "{m}"
    );
    assert!(wrong.event_writer(test_signer()).is_err());
    // Nothing was changed by the failures: the right key reads it.
    assert_eq!(
        sealed_store(dir.path(), &[&master])
            .events("s")
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_tampered_envelope_is_reported_on_read() {
    let (dir, _) = store();
    let master = MasterKey::generate().unwrap();
    let store = sealed_store(dir.path(), &[&master]);
    let writer = store.event_writer(test_signer()).unwrap();
    record_durably(&writer, "t", 0, (0..3).map(marked).collect());
    writer.close();
    let (first, body) = {
        let material = store.audit_material().unwrap();
        let (_, first, _, body) = material.runs[0].clone();
        (first, body)
    };
    let stored = tollgate_audit::split_run(&body).unwrap();
    let second = &stored[1];
    // One flipped bit in the ciphertext of the second record.
    let offset = body.len() - stored[2].bytes.len() - 32 - 32 - 20;
    assert!(second.bytes.len() > 100);
    let mut bad = body.clone();
    bad[offset] ^= 0x01;
    let db = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    let update = |b: &[u8]| {
        db.execute(
            "UPDATE audit_runs SET body = ?2 WHERE first_gseq = ?1",
            params![first as i64, b],
        )
        .unwrap();
    };
    update(&bad);
    let m = sealed_err(store.events("t").unwrap_err());
    assert!(m.contains("audit record 1") && m.contains("altered"), "{m}");
    // The chain says the same without any key.
    let report = read_audit(&dir.path().join("t.db")).unwrap().verify(None);
    assert_eq!(report.first_bad.map(|b| b.gseq), Some(1));

    // An envelope moved to another record (same length, other header) does not open either.
    let envelope = stored[0].record.payload.to_vec();
    let mut moved = body.clone();
    let at = body.len() - stored[2].bytes.len() - 32 - 32 - envelope.len();
    moved[at..at + envelope.len()].copy_from_slice(&envelope);
    update(&moved);
    let m = sealed_err(store.events("t").unwrap_err());
    assert!(m.contains("audit record 1") && m.contains("moved"), "{m}");

    update(&body);
    assert_eq!(store.events("t").unwrap().len(), 3);
}

#[test]
fn plain_and_sealed_records_mix_in_one_log() {
    let (dir, plain) = store();
    let writer = plain.event_writer(test_signer()).unwrap();
    record_durably(&writer, "m", 0, (0..2).map(command).collect());
    writer.close();
    assert!(plain.data_keys().unwrap().is_empty());

    // A master key is configured later: new records are sealed, old ones stay as they are.
    let master = MasterKey::generate().unwrap();
    let store = sealed_store(dir.path(), &[&master]);
    let writer = store.event_writer(test_signer()).unwrap();
    record_durably(&writer, "m", 2, (2..4).map(marked).collect());
    writer.close();

    let kinds: Vec<bool> = payloads(&store).iter().map(|(_, p)| is_sealed(p)).collect();
    assert_eq!(kinds, [false, false, true, true]);
    let events = store.events("m").unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert!(
        matches!(&events[3].kind, EventKind::Command { command, .. } if command.text.contains(MARKER))
    );
    assert!(store.contains_text("select 1").unwrap());
    assert!(store.contains_text(MARKER).unwrap());
    let exported = store.records_after(Some(0), 10).unwrap();
    assert_eq!(exported.len(), 3);
    assert!(exported.iter().all(|r| r.payload.starts_with(b"{")));
    // Without the key the plain ones still read, the sealed ones are an error.
    assert_eq!(
        Store::open(&dir.path().join("t.db"))
            .unwrap()
            .records_after(None, 2)
            .unwrap()
            .len(),
        2
    );
    let report = store.audit_material().unwrap().verify(None);
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, 4);
}

#[test]
fn sealed_records_only_the_journal_holds_are_recovered() {
    let (dir, _) = store();
    let path = dir.path().join("t.db");
    let master = MasterKey::generate().unwrap();
    let sealing = Sealing::new(master.clone(), []);
    let store = sealed_store(dir.path(), &[&master]);
    let writer = store.event_writer(test_signer()).unwrap();
    record_durably(&writer, "before", 0, vec![marked(0)]);
    writer.close();

    // What a killed gateway leaves: a stored data key, and records sealed with it that only
    // the journal holds.
    let last = {
        let material = store.audit_material().unwrap();
        let s = tollgate_audit::split_run(&material.runs.last().unwrap().3).unwrap();
        let l = s.last().unwrap();
        (l.record.gseq, l.hash)
    };
    let db = crate::open(&path).unwrap();
    let mut sealer = sealing::PayloadSealer::new(
        sealing::new_data_key(&db, &path, &sealing).unwrap(),
        1 << 20,
    );
    drop(db);
    let mut chain = tollgate_audit::ChainState::resume(Some(last));
    let mut segment = Vec::new();
    let kinds = [start_of("db"), marked(1), marked(2)];
    for (seq, kind) in kinds.iter().enumerate() {
        let json = serde_json::to_vec(kind).unwrap();
        sealer
            .seal(
                chain.next_gseq,
                7_000 + seq as i64,
                "killed",
                seq as u64,
                &json,
            )
            .unwrap();
        chain
            .append(
                7_000 + seq as i64,
                "killed",
                seq as u64,
                &sealer.envelope,
                &mut segment,
            )
            .unwrap();
    }
    let journal = journal_dir(&path);
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(journal.join("0000000000000003.tgj"), &segment).unwrap();

    // Without the master key, nothing is recovered and nothing changes.
    assert!(
        Store::open(&path)
            .unwrap()
            .event_writer(test_signer())
            .is_err()
    );
    assert!(journal.join("0000000000000003.tgj").exists());

    let writer = store.event_writer(test_signer()).unwrap();
    writer.flush().unwrap();
    let recovered = store.events("killed").unwrap();
    // The three recovered, and the abandonment the new writer records for the open session.
    assert_eq!(recovered.len(), 4);
    assert!(matches!(
        recovered[3].kind,
        EventKind::SessionAbandoned { .. }
    ));
    assert!(
        matches!(&recovered[2].kind, EventKind::Command { command, .. } if command.text.contains(MARKER))
    );
    // The sessions table was kept from the opened payloads.
    let s = store.session("killed").unwrap().unwrap();
    assert_eq!((s.connection.as_str(), s.commands), ("db", 2));
    record_durably(&writer, "after", 0, vec![marked(9)]);
    writer.close();
    let report = store.audit_material().unwrap().verify(None);
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, 1 + 3 + 1 + 1);
    // Three data keys: two writer starts and the one the killed writer had stored.
    assert_eq!(store.data_keys().unwrap().len(), 3);
    assert!(!has(&all_bytes(dir.path()), &format!("'{MARKER}'")));
}

#[test]
fn the_writer_moves_to_a_new_data_key_stored_before_its_use() {
    let (dir, _) = store();
    let path = dir.path().join("t.db");
    let master = MasterKey::generate().unwrap();
    let store = sealed_store(dir.path(), &[&master]);
    let writer = EventWriter::start(
        &path,
        test_signer(),
        writer::QUEUE_LIMIT,
        Some(Sealing::new(master.clone(), [])),
        4,
    )
    .unwrap();
    for round in 0..8u64 {
        record_durably(
            &writer,
            "k",
            round * 5,
            (0..5).map(|i| marked(round * 5 + i)).collect(),
        );
        writer.flush().unwrap();
    }
    writer.close();
    let stored: Vec<String> = store
        .data_keys()
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    let mut used: Vec<String> = payloads(&store)
        .iter()
        .map(|(_, p)| tollgate_audit::seal::envelope_key_id(p).unwrap())
        .collect();
    used.dedup();
    assert!(used.len() >= 3, "{used:?}");
    for id in &used {
        assert!(
            stored.contains(id),
            "data key {id} sealed records but is not stored"
        );
    }
    assert_eq!(store.events("k").unwrap().len(), 40);
    assert!(store.audit_material().unwrap().verify(None).intact());
}

#[test]
fn master_key_rotation_rewraps_data_keys_and_leaves_records_alone() {
    let (dir, _) = store();
    let path = dir.path().join("t.db");
    let old = MasterKey::generate().unwrap();
    let new = MasterKey::generate().unwrap();
    for _ in 0..2 {
        let store = sealed_store(dir.path(), &[&old]);
        let writer = store.event_writer(test_signer()).unwrap();
        let next = store.events("r").unwrap().len() as u64;
        record_durably(&writer, "r", next, vec![marked(next)]);
        writer.close();
    }
    let before = payloads(&Store::open(&path).unwrap());
    let hashes = |s: &Store| -> Vec<[u8; 32]> {
        s.audit_material()
            .unwrap()
            .runs
            .iter()
            .flat_map(|r| {
                tollgate_audit::split_run(&r.3)
                    .unwrap()
                    .into_iter()
                    .map(|s| s.hash)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let hashes_before = hashes(&Store::open(&path).unwrap());

    // Without the old key nothing is re-wrapped.
    let m = rewrap_data_keys(&path, &[], &new).unwrap_err().to_string();
    assert!(m.contains(&old.id()) && m.contains(&new.id()), "{m}");
    assert!(
        Store::open(&path)
            .unwrap()
            .data_keys()
            .unwrap()
            .iter()
            .all(|k| k.kek_id == old.id())
    );

    assert_eq!(
        rewrap_data_keys(&path, std::slice::from_ref(&old), &new).unwrap(),
        2
    );
    let plain = Store::open(&path).unwrap();
    assert!(
        plain
            .data_keys()
            .unwrap()
            .iter()
            .all(|k| k.kek_id == new.id())
    );
    assert_eq!(payloads(&plain), before, "records untouched");
    assert_eq!(hashes(&plain), hashes_before);
    assert!(plain.audit_material().unwrap().verify(None).intact());

    // The new key alone opens everything; the old one alone nothing.
    assert_eq!(
        sealed_store(dir.path(), &[&new]).events("r").unwrap().len(),
        2
    );
    let m = sealed_err(sealed_store(dir.path(), &[&old]).events("r").unwrap_err());
    assert!(m.contains(&new.id()), "{m}");
    // Again with the new key only: each is re-wrapped under it anew.
    assert_eq!(rewrap_data_keys(&path, &[], &new).unwrap(), 2);

    // A writer started with a newer key and this one as the previous re-wraps them itself.
    let newer = MasterKey::generate().unwrap();
    let store = sealed_store(dir.path(), &[&newer, &new]);
    let writer = store.event_writer(test_signer()).unwrap();
    record_durably(&writer, "r", 2, vec![marked(2)]);
    writer.close();
    let keys = store.data_keys().unwrap();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.kek_id == newer.id()));
    assert_eq!(
        sealed_store(dir.path(), &[&newer])
            .events("r")
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn a_store_behind_by_more_than_its_share_of_memory_asks_producers_to_wait() {
    use tollgate_core::Recorder;
    let (dir, store) = store();
    let writer = store.event_writer(test_signer()).unwrap();
    assert!(!writer.pressure());
    // The database is locked: what is recorded stays in memory until it is free again.
    let blocker = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let piece = "x".repeat(1024 * 1024);
    for seq in 0..40u64 {
        writer.record(Event {
            session: "bulk".into(),
            seq,
            at: 1_000 + seq as i64,
            kind: EventKind::Terminal {
                channel: 0,
                header: None,
                events: vec![(0.0, "o".into(), piece.clone())],
                unrecorded: 0,
            },
        });
    }
    assert!(
        writer.pressure(),
        "40 MiB held: producers are asked to wait"
    );
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    writer.flush().unwrap();
    assert!(!writer.pressure(), "written: no more pressure");
    assert_eq!(store.events("bulk").unwrap().len(), 40);
    writer.close();
}
