use super::*;

/// A log of 30 records over three sessions, stored as runs of up to 4 records of one session,
/// with checkpoints at 9, 19 and 29.
struct Log {
    /// (session, first, last, body) per run.
    runs: Vec<(String, u64, u64, Vec<u8>)>,
    checkpoints: Vec<Checkpoint>,
    keys: HashMap<String, Vec<u8>>,
    signer: Signer,
}

fn signer() -> Signer {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    Signer::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn payload(gseq: u64) -> Vec<u8> {
    format!("{{\"type\":\"command\",\"n\":{gseq}}}").into_bytes()
}

fn build() -> Log {
    let signer = signer();
    let mut chain = ChainState::resume(None);
    let mut seqs = [0u64; 3];
    let mut runs: Vec<(String, u64, u64, Vec<u8>)> = Vec::new();
    let mut checkpoints = Vec::new();
    for gseq in 0..30u64 {
        // Sessions take turns in blocks of three records.
        let s = ((gseq / 3) % 3) as usize;
        let session = format!("session-{s}");
        let extend = runs
            .last()
            .is_some_and(|r| r.0 == session && r.2 + 1 == gseq && r.2 - r.1 < 3);
        if !extend {
            runs.push((session.clone(), gseq, gseq, Vec::new()));
        }
        let run = runs.last_mut().unwrap();
        let g = chain
            .append(
                1_000 + gseq as i64,
                &session,
                seqs[s],
                &payload(gseq),
                &mut run.3,
            )
            .unwrap();
        assert_eq!(g, gseq);
        run.2 = gseq;
        seqs[s] += 1;
        if gseq % 10 == 9 {
            checkpoints.push(signer.checkpoint(gseq, chain.head, 5_000 + gseq as i64));
        }
    }
    let keys = HashMap::from([(signer.key_id().to_string(), signer.public_key())]);
    Log {
        runs,
        checkpoints,
        keys,
        signer,
    }
}

impl Log {
    fn verify(&self) -> Report {
        self.verify_with(&[])
    }

    /// The run holding `gseq` and the byte range of that record and its hash.
    fn locate(&self, gseq: u64) -> (usize, std::ops::Range<usize>) {
        for (i, run) in self.runs.iter().enumerate() {
            let mut pos = 0;
            for s in split_run(&run.3).unwrap() {
                let len = s.bytes.len() + 32;
                if s.record.gseq == gseq {
                    return (i, pos..pos + len);
                }
                pos += len;
            }
        }
        panic!("no record {gseq}");
    }

    /// Re-encodes record `gseq` with `edit` applied and re-hashes it and everything after it,
    /// as a forger who cannot sign would.
    fn rehash_from(&mut self, gseq: u64, edit: impl Fn(&mut Vec<u8>)) {
        let mut all: Vec<(u64, i64, String, u64, Vec<u8>)> = Vec::new();
        for run in &self.runs {
            for s in split_run(&run.3).unwrap() {
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
        for r in all.iter_mut().filter(|r| r.0 == gseq) {
            edit(&mut r.4);
        }
        let mut chain = ChainState::resume(None);
        let mut hashed: HashMap<u64, Vec<u8>> = HashMap::new();
        for (g, at, session, seq, payload) in &all {
            let mut out = Vec::new();
            chain.append(*at, session, *seq, payload, &mut out).unwrap();
            hashed.insert(*g, out);
        }
        for run in &mut self.runs {
            run.3 = (run.1..=run.2).flat_map(|g| hashed[&g].clone()).collect();
        }
    }
}

fn first_bad(report: &Report) -> (u64, String) {
    let b = report.first_bad.as_ref().expect("tampering is detected");
    (b.gseq, b.reason.clone())
}

#[test]
fn an_untouched_log_verifies() {
    let log = build();
    let r = log.verify();
    assert!(r.intact(), "{r:?}");
    assert_eq!(r.records, 30);
    assert_eq!(r.checkpoints, 3);
    assert_eq!(r.last_checkpoint, Some(29));
    assert_eq!(r.unsigned_tail, 0);
}

#[test]
fn a_changed_byte_names_its_record() {
    let mut log = build();
    let (run, range) = log.locate(12);
    // The last payload byte of record 12 (just before its hash).
    let at = range.end - 33;
    log.runs[run].3[at] ^= 1;
    let (gseq, reason) = first_bad(&log.verify());
    assert_eq!(gseq, 12);
    assert!(reason.contains("hash does not match"), "{reason}");
    let b = log.verify().first_bad.unwrap();
    assert_eq!(b.session.as_deref(), Some("session-1"));
}

#[test]
fn a_deleted_record_is_missing() {
    let mut log = build();
    let (run, range) = log.locate(15);
    log.runs[run].3.drain(range);
    let (gseq, reason) = first_bad(&log.verify());
    assert_eq!(gseq, 15);
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn reordered_records_break_the_chain() {
    let mut log = build();
    // Swap the places of records 6 and 7 in the global order (their gseq fields).
    let places = [(log.locate(6), 7u64), (log.locate(7), 6u64)];
    for ((run, range), to) in places {
        let gseq_at = range.start + 4;
        log.runs[run].3[gseq_at..gseq_at + 8].copy_from_slice(&to.to_be_bytes());
    }
    let (gseq, _) = first_bad(&log.verify());
    assert_eq!(gseq, 6);
}

#[test]
fn a_truncated_tail_is_caught_by_the_checkpoint() {
    let mut log = build();
    for g in (25..30).rev() {
        let (run, range) = log.locate(g);
        log.runs[run].3.drain(range);
        if log.runs[run].3.is_empty() {
            log.runs.remove(run);
        }
    }
    let (gseq, reason) = first_bad(&log.verify());
    assert_eq!(gseq, 25);
    assert!(reason.contains("truncated"), "{reason}");
}

#[test]
fn an_inserted_forged_record_is_caught() {
    let mut log = build();
    // A well-formed record claiming gseq 14, hashed onto record 13.
    let (_, range13) = log.locate(13);
    let (run13, _) = log.locate(13);
    let prev: Hash = log.runs[run13].3[range13.end - 32..range13.end]
        .try_into()
        .unwrap();
    let mut forged = Vec::new();
    encode_record(
        &Record {
            gseq: 14,
            at: 1_014,
            session: "session-1",
            seq: 99,
            payload: b"{\"type\":\"command\",\"forged\":true}",
        },
        &mut forged,
    )
    .unwrap();
    let h = chain(&prev, &forged);
    forged.extend_from_slice(&h);
    let (run, range) = log.locate(14);
    log.runs[run].3.splice(range.start..range.start, forged);
    let (gseq, reason) = first_bad(&log.verify());
    assert_eq!(gseq, 14);
    assert!(reason.contains("more than once"), "{reason}");
}

#[test]
fn a_rehashed_forgery_fails_at_the_signed_head() {
    let mut log = build();
    log.rehash_from(12, |p| p.extend_from_slice(b" "));
    let (gseq, reason) = first_bad(&log.verify());
    assert_eq!(gseq, 10, "the first record after the last good checkpoint");
    assert!(reason.contains("rewritten"), "{reason}");
}

#[test]
fn signatures_and_keys_are_checked() {
    let mut log = build();
    log.checkpoints[1].signature[0] ^= 1;
    assert!(first_bad(&log.verify()).1.contains("signature"));

    let mut log = build();
    let other = signer();
    log.checkpoints[0] = other.checkpoint(9, log.checkpoints[0].head, 1);
    assert!(first_bad(&log.verify()).1.contains("unknown key"));

    // A checkpoint by a trusted key over a forged head fails too.
    let mut log = build();
    log.checkpoints[2] = log.signer.checkpoint(29, [7; 32], 1);
    assert!(first_bad(&log.verify()).1.contains("rewritten"));
}

#[test]
fn garbage_runs_are_reported_not_panicked_on() {
    let mut log = build();
    log.runs[3].3.truncate(10);
    let r = log.verify();
    assert!(!r.intact());
    // Positions at the end of the range do not overflow (a fuzzer found this).
    let mut chain = ChainState::resume(Some((u64::MAX - 3, GENESIS)));
    let mut body = Vec::new();
    chain.append(1, "s", 0, b"{}", &mut body).unwrap();
    chain.append(2, "s", 1, b"{}", &mut body).unwrap();
    assert!(chain.append(3, "s", 2, b"{}", &mut Vec::new()).is_err());
    let run = Run {
        session: "s",
        first_gseq: 0,
        last_gseq: u64::MAX,
        body: &body,
    };
    assert!(!verify(&[run], &[], &[], &HashMap::new()).intact());
    assert!(verify_from(u64::MAX - 2, GENESIS, &[run], &[], &[], &HashMap::new()).intact());
    assert!(!verify_from(u64::MAX, GENESIS, &[run], &[], &[], &HashMap::new()).intact());
    for junk in [&b""[..], b"TGE1", b"TGE1\0\0\0\0\0\0\0\x01", &[0xff; 100]] {
        let _ = split_run(junk);
        let _ = decode_record(junk);
    }
}

#[test]
fn records_round_trip_and_refuse_oversized_fields() {
    let mut out = Vec::new();
    let r = Record {
        gseq: 7,
        at: -3,
        session: "s",
        seq: 2,
        payload: b"{}",
    };
    encode_record(&r, &mut out).unwrap();
    assert_eq!(decode_record(&out).unwrap(), (r, out.len()));
    let long = "x".repeat(70_000);
    assert!(
        encode_record(
            &Record {
                session: &long,
                ..r
            },
            &mut Vec::new()
        )
        .is_err()
    );
}

fn all_records(log: &Log) -> Vec<Vec<u8>> {
    let mut all: Vec<(u64, Vec<u8>)> = Vec::new();
    for run in &log.runs {
        for s in split_run(&run.3).unwrap() {
            let mut r = s.bytes.to_vec();
            r.extend_from_slice(&s.hash);
            all.push((s.record.gseq, r));
        }
    }
    all.sort_by_key(|r| r.0);
    all.into_iter().map(|r| r.1).collect()
}

#[test]
fn a_bundle_verifies_on_its_own_and_catches_tampering() {
    let log = build();
    let records = all_records(&log);
    let bundle = Bundle::cut(&records, &log.checkpoints, &[], &log.keys, 10, 15);
    // Extended to the checkpoint at 19, which signs its end.
    assert_eq!(bundle.records.len(), 10);
    let text = bundle.to_json();
    let read = Bundle::from_json(&text).unwrap();
    assert_eq!(read, bundle);
    let r = read.verify(None);
    assert!(r.intact(), "{r:?}");
    assert_eq!((r.records, r.checkpoints, r.unsigned_tail), (10, 1, 0));

    let mut changed = bundle.clone();
    let n = changed.records[3].len();
    changed.records[3][n - 40] ^= 1;
    assert_eq!(changed.verify(None).first_bad.unwrap().gseq, 13);

    let mut dropped = bundle.clone();
    dropped.records.remove(4);
    assert_eq!(dropped.verify(None).first_bad.unwrap().gseq, 14);

    let mut unsigned = bundle.clone();
    unsigned.checkpoints.clear();
    assert!(
        unsigned
            .verify(None)
            .first_bad
            .unwrap()
            .reason
            .contains("no checkpoint")
    );

    let mut wrong_prev = bundle.clone();
    wrong_prev.prev_hash = [1; 32];
    assert!(!wrong_prev.verify(None).intact());

    // Pinned keys decide: a bundle's own keys are not trusted when a pin is given.
    let other = signer();
    let pinned = HashMap::from([(other.key_id().to_string(), other.public_key())]);
    assert!(
        bundle
            .verify(Some(&pinned))
            .first_bad
            .unwrap()
            .reason
            .contains("unknown key")
    );

    // The whole log as a bundle, and garbage documents.
    assert!(
        Bundle::cut(&records, &log.checkpoints, &[], &log.keys, 0, 29)
            .verify(None)
            .intact()
    );
    for bad in [
        "",
        "{}",
        r#"{"format":"tollgate-audit-bundle","version":2}"#,
        "[1,2]",
    ] {
        assert!(Bundle::from_json(bad).is_err(), "{bad}");
    }
}

impl Log {
    /// Purges the payloads of `gseqs` under tombstone `id`, as the gateway's retention does.
    fn purge(&mut self, gseqs: &[u64], id: u64) -> Tombstone {
        let hashes: HashMap<u64, Hash> = all_records(self)
            .iter()
            .enumerate()
            .map(|(g, r)| (g as u64, hash_of(r)))
            .collect();
        let mut vouched = Vec::new();
        for run in &mut self.runs {
            let mut body = Vec::new();
            for s in split_run(&run.3).unwrap() {
                if gseqs.contains(&s.record.gseq) && s.purged.is_none() {
                    let prev = s.record.gseq.checked_sub(1).map_or(GENESIS, |b| hashes[&b]);
                    let start = body.len();
                    encode_purged(&s.record, id, &prev, &mut body).unwrap();
                    let mut entry = body[start..].to_vec();
                    entry.extend_from_slice(&s.hash);
                    vouched.push((s.record.gseq, entry));
                } else {
                    body.extend_from_slice(s.bytes);
                }
                body.extend_from_slice(&s.hash);
            }
            run.3 = body;
        }
        vouched.sort_by_key(|v| v.0);
        self.signer.tombstone(id, &vouched, 7)
    }

    fn verify_with(&self, tombstones: &[Tombstone]) -> Report {
        let runs: Vec<Run<'_>> = self
            .runs
            .iter()
            .map(|(s, f, l, b)| Run {
                session: s,
                first_gseq: *f,
                last_gseq: *l,
                body: b,
            })
            .collect();
        verify(&runs, &self.checkpoints, tombstones, &self.keys)
    }
}

#[test]
fn purged_records_verify_through_their_tombstones_and_forgeries_do_not() {
    let mut log = build();
    let one = log.purge(&[3, 4, 12], 1);
    let two = log.purge(&[5, 13], 2);
    let r = log.verify_with(&[one.clone(), two.clone()]);
    assert!(r.intact(), "{r:?}");
    assert_eq!((r.purged, r.checkpoints), (5, 3));
    // Without the tombstones, the purged records are not vouched for.
    assert_eq!(
        log.verify_with(std::slice::from_ref(&one))
            .first_bad
            .unwrap()
            .gseq,
        5
    );
    // A tombstone with a bad signature, or whose records were changed.
    let mut forged = one.clone();
    forged.signature[0] ^= 1;
    assert!(
        log.verify_with(&[forged, two.clone()])
            .first_bad
            .unwrap()
            .reason
            .contains("signature")
    );
    let mut changed = build();
    let one_c = changed.purge(&[3, 4, 12], 1);
    let (run, range) = changed.locate(4);
    let hash_at = range.end - 1;
    changed.runs[run].3[hash_at] ^= 1;
    let bad = changed.verify_with(&[one_c]).first_bad.unwrap();
    assert_eq!(bad.gseq, 3, "{bad:?}");
    assert!(bad.reason.contains("count and digest"), "{bad:?}");
    // A record purged without a new tombstone: the old one no longer matches.
    let mut sneaky = build();
    let t = sneaky.purge(&[3, 4], 1);
    sneaky.purge(&[20], 1);
    assert!(!sneaky.verify_with(&[t]).intact());
    // In a bundle, a tombstone carries what it covers.
    let records = all_records(&log);
    let mut with_covers = one.clone();
    let covers = |gseqs: &[usize]| {
        Some(
            gseqs
                .iter()
                .map(|&g| (g as u64, records[g].clone()))
                .collect::<Vec<_>>(),
        )
    };
    with_covers.covers = covers(&[3, 4, 12]);
    let mut two_covers = two.clone();
    two_covers.covers = covers(&[5, 13]);
    let bundle = Bundle::cut(
        &records,
        &log.checkpoints,
        &[with_covers.clone(), two_covers],
        &log.keys,
        10,
        15,
    );
    assert_eq!(bundle.tombstones.len(), 2);
    let read = Bundle::from_json(&bundle.to_json()).unwrap();
    assert!(read.verify(None).intact(), "{:?}", read.verify(None));
    let mut short = read.clone();
    short.tombstones[0].covers = covers(&[3]);
    assert!(!short.verify(None).intact());
}

#[test]
fn the_record_before_a_purged_one_stays_bound_to_the_chain() {
    let mut log = build();
    let t = log.purge(&[5], 1);
    assert!(log.verify_with(std::slice::from_ref(&t)).intact());
    // Rewrite record 4 and give it the hash its new contents chain to: the purged record 5 no
    // longer follows it.
    let records = all_records(&log);
    let prev3 = hash_of(&records[3]);
    let (run, range) = log.locate(4);
    let mut rec4 = log.runs[run].3[range.start..range.end - 32].to_vec();
    let n = rec4.len();
    rec4[n - 2] ^= 1;
    let h = chain(&prev3, &rec4);
    rec4.extend_from_slice(&h);
    log.runs[run].3.splice(range, rec4);
    let bad = log.verify_with(&[t]).first_bad.unwrap();
    assert_eq!(bad.gseq, 5, "{bad:?}");
    assert!(bad.reason.contains("does not follow"), "{bad:?}");
}

fn hash_of(record_and_hash: &[u8]) -> Hash {
    record_and_hash[record_and_hash.len() - 32..]
        .try_into()
        .unwrap()
}

#[test]
fn the_payload_aad_is_the_record_header() {
    let mut record = Vec::new();
    let payload = b"TGS1 stands in for an envelope";
    ChainState::resume(Some((41, GENESIS)))
        .append(-7, "sess-\u{e9}", 3, payload, &mut record)
        .unwrap();
    let mut aad = Vec::new();
    payload_aad(42, -7, "sess-\u{e9}", 3, &mut aad).unwrap();
    // Everything before the payload length and the payload.
    assert_eq!(aad, record[..record.len() - 32 - payload.len() - 4]);
    assert_eq!(&aad[..4], b"TGE1");
    let mut other = Vec::new();
    payload_aad(43, -7, "sess-\u{e9}", 3, &mut other).unwrap();
    assert_ne!(aad, other);
    assert!(payload_aad(0, 0, &"x".repeat(70_000), 0, &mut other).is_err());
}
