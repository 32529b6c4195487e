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
