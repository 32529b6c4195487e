//! The tamper-evident audit log: the versioned record encoding, the SHA-256 hash chain, signed
//! checkpoints and offline verification. Pure functions over bytes; `docs/audit-format.md` is
//! the format's specification, and an independent verifier implements it from that page alone.

use std::collections::{BTreeMap, HashMap};

use ring::digest::{Context, SHA256, digest};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A field does not fit its encoding.
    #[error("{0} is too long to encode")]
    TooLong(&'static str),
    /// Bytes that are not a record.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// The signing key cannot be used.
    #[error("signing key: {0}")]
    Key(String),
    /// Encryption at rest: a master key, a wrapped data key or an envelope cannot be used.
    #[error(transparent)]
    Seal(#[from] seal::SealError),
}

/// Magic and version of a record.
pub const RECORD_MAGIC: &[u8; 4] = b"TGE1";
/// Magic and version of a purged record (retention removed its payload).
pub const PURGED_MAGIC: &[u8; 4] = b"TGP1";
/// Magic and version of a tombstone message.
pub const TOMBSTONE_MAGIC: &[u8; 4] = b"TGT1";
/// Magic and version of a checkpoint message.
pub const CHECKPOINT_MAGIC: &[u8; 4] = b"TGC1";
/// A SHA-256 hash.
pub type Hash = [u8; 32];
/// The previous hash of the first record.
pub const GENESIS: Hash = [0; 32];

/// One event as the log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Position in the global order.
    pub gseq: u64,
    /// Microseconds since the Unix epoch.
    pub at: i64,
    /// Session id.
    pub session: &'a str,
    /// Position in the session's order.
    pub seq: u64,
    /// The event as JSON, exactly as hashed.
    pub payload: &'a [u8],
}

/// Appends the header every record shares: magic, gseq, time, session and seq.
fn encode_header(magic: &[u8; 4], r: &Record<'_>, out: &mut Vec<u8>) -> Result<(), AuditError> {
    let session_len =
        u16::try_from(r.session.len()).map_err(|_| AuditError::TooLong("session id"))?;
    out.reserve(4 + 8 + 8 + 2 + r.session.len() + 8 + 4 + r.payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&r.gseq.to_be_bytes());
    out.extend_from_slice(&r.at.to_be_bytes());
    out.extend_from_slice(&session_len.to_be_bytes());
    out.extend_from_slice(r.session.as_bytes());
    out.extend_from_slice(&r.seq.to_be_bytes());
    Ok(())
}

/// Appends the record's canonical bytes to `out`.
pub fn encode_record(r: &Record<'_>, out: &mut Vec<u8>) -> Result<(), AuditError> {
    let payload_len =
        u32::try_from(r.payload.len()).map_err(|_| AuditError::TooLong("event payload"))?;
    encode_header(RECORD_MAGIC, r, out)?;
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(r.payload);
    Ok(())
}

/// Appends the associated data that binds a sealed payload (a `TGS1` envelope) to its record:
/// the record's header exactly as encoded before its payload length, `TGE1 ‖ gseq ‖ at ‖
/// session (str16) ‖ seq`. An envelope moved to another record, or a record whose header was
/// changed, no longer opens.
pub fn payload_aad(
    gseq: u64,
    at: i64,
    session: &str,
    seq: u64,
    out: &mut Vec<u8>,
) -> Result<(), AuditError> {
    encode_header(
        RECORD_MAGIC,
        &Record {
            gseq,
            at,
            session,
            seq,
            payload: &[],
        },
        out,
    )
}

/// `SHA-256(prev ‖ record)`.
pub fn chain(prev: &Hash, record: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(prev);
    ctx.update(record);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], AuditError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| AuditError::Malformed(format!("truncated {what}")))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], AuditError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
}

/// Reads the header every record shares, after checking its magic; the payload is empty.
fn decode_header<'a>(
    c: &mut Cursor<'a>,
    magic: &[u8; 4],
    kind: &str,
) -> Result<Record<'a>, AuditError> {
    if c.take(4, "magic")? != magic {
        return Err(AuditError::Malformed(format!("not a version 1 {kind}")));
    }
    let gseq = u64::from_be_bytes(c.array("gseq")?);
    let at = i64::from_be_bytes(c.array("time")?);
    let session_len = u16::from_be_bytes(c.array("session length")?) as usize;
    let session = std::str::from_utf8(c.take(session_len, "session")?)
        .map_err(|_| AuditError::Malformed("session id is not UTF-8".into()))?;
    let seq = u64::from_be_bytes(c.array("seq")?);
    Ok(Record {
        gseq,
        at,
        session,
        seq,
        payload: &[],
    })
}

/// Decodes the record at the start of `bytes`; returns it and its length.
pub fn decode_record(bytes: &[u8]) -> Result<(Record<'_>, usize), AuditError> {
    let mut c = Cursor { buf: bytes, pos: 0 };
    let mut record = decode_header(&mut c, RECORD_MAGIC, "record")?;
    let payload_len = u32::from_be_bytes(c.array("payload length")?) as usize;
    record.payload = c.take(payload_len, "payload")?;
    Ok((record, c.pos))
}

/// One record of a stored run: the record, its canonical bytes and the hash stored after it.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// The decoded record (no payload when purged).
    pub record: Record<'a>,
    /// Its canonical bytes.
    pub bytes: &'a [u8],
    /// The hash stored after it.
    pub hash: Hash,
    /// For a purged record: the id of the tombstone that vouches for it.
    pub purged: Option<u64>,
    /// For a purged record: the hash of the record before it, as it was when purged.
    pub prev: Option<Hash>,
}

impl Stored<'_> {
    /// The record's entry as stored: its bytes followed by its hash.
    pub fn entry(&self) -> Vec<u8> {
        let mut e = Vec::with_capacity(self.bytes.len() + 32);
        e.extend_from_slice(self.bytes);
        e.extend_from_slice(&self.hash);
        e
    }
}

/// Appends a purged record: the header of `r` (no payload), the tombstone that vouches for it
/// and `prev`, the hash of the record before it.
pub fn encode_purged(
    r: &Record<'_>,
    tombstone: u64,
    prev: &Hash,
    out: &mut Vec<u8>,
) -> Result<(), AuditError> {
    encode_header(PURGED_MAGIC, r, out)?;
    out.extend_from_slice(&tombstone.to_be_bytes());
    out.extend_from_slice(prev);
    Ok(())
}

/// Decodes a purged record at the start of `bytes`: the record (empty payload), its tombstone,
/// the hash before it and its length.
fn decode_purged(bytes: &[u8]) -> Result<(Record<'_>, u64, Hash, usize), AuditError> {
    let mut c = Cursor { buf: bytes, pos: 0 };
    let record = decode_header(&mut c, PURGED_MAGIC, "purged record")?;
    let tombstone = u64::from_be_bytes(c.array("tombstone")?);
    let prev: Hash = c.array("prev")?;
    Ok((record, tombstone, prev, c.pos))
}

/// Splits a run body (`record ‖ hash ‖ record ‖ hash …`).
pub fn split_run(body: &[u8]) -> Result<Vec<Stored<'_>>, AuditError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let (record, purged, prev, len) = if body[pos..].starts_with(PURGED_MAGIC) {
            let (r, t, prev, len) = decode_purged(&body[pos..])?;
            (r, Some(t), Some(prev), len)
        } else {
            let (r, len) = decode_record(&body[pos..])?;
            (r, None, None, len)
        };
        let bytes = &body[pos..pos + len];
        let hash: Hash = body
            .get(pos + len..pos + len + 32)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| AuditError::Malformed("record without its hash".into()))?;
        out.push(Stored {
            record,
            bytes,
            hash,
            purged,
            prev,
        });
        pos += len + 32;
    }
    Ok(out)
}

/// A signed statement that the chain's record `gseq` has hash `head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last record covered.
    pub gseq: u64,
    /// Its hash.
    pub head: Hash,
    /// When it was signed, microseconds since the Unix epoch.
    pub at: i64,
    /// Which key signed it.
    pub key_id: String,
    /// Ed25519 signature of [`checkpoint_message`].
    pub signature: Vec<u8>,
}

/// A signed statement that the purged records naming it had these hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// Its id, named by the purged records.
    pub id: u64,
    /// Lowest gseq it purged.
    pub first: u64,
    /// Highest gseq it purged.
    pub last: u64,
    /// How many records it purged.
    pub count: u64,
    /// SHA-256 over the entries (purged record ‖ hash) of each, in gseq order.
    pub digest: Hash,
    /// When it was signed.
    pub at: i64,
    /// Which key signed it.
    pub key_id: String,
    /// Ed25519 signature of [`tombstone_message`].
    pub signature: Vec<u8>,
    /// In a bundle: every entry it purged, `(gseq, purged record ‖ hash)`, in gseq order.
    pub covers: Option<Vec<(u64, Vec<u8>)>>,
}

/// SHA-256 over the entries (purged record ‖ hash) of purged records, in the order given
/// (gseq order).
pub fn tombstone_digest(entries: &[(u64, Vec<u8>)]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    for (_, entry) in entries {
        ctx.update(entry);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The bytes a tombstone signs.
pub fn tombstone_message(t: &Tombstone) -> Vec<u8> {
    let mut m = Vec::with_capacity(4 + 8 * 4 + 32 + 8 + 2 + t.key_id.len());
    m.extend_from_slice(TOMBSTONE_MAGIC);
    for n in [t.id, t.first, t.last, t.count] {
        m.extend_from_slice(&n.to_be_bytes());
    }
    m.extend_from_slice(&t.digest);
    m.extend_from_slice(&t.at.to_be_bytes());
    let len = u16::try_from(t.key_id.len()).unwrap_or(u16::MAX);
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(t.key_id.as_bytes().get(..len as usize).unwrap_or_default());
    m
}

/// The bytes a checkpoint signs.
pub fn checkpoint_message(gseq: u64, head: &Hash, at: i64, key_id: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(4 + 8 + 32 + 8 + 2 + key_id.len());
    m.extend_from_slice(CHECKPOINT_MAGIC);
    m.extend_from_slice(&gseq.to_be_bytes());
    m.extend_from_slice(head);
    m.extend_from_slice(&at.to_be_bytes());
    let len = u16::try_from(key_id.len()).unwrap_or(u16::MAX);
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(key_id.as_bytes().get(..len as usize).unwrap_or_default());
    m
}

/// The id of a public key: hex of the first 8 bytes of its SHA-256.
pub fn key_id_of(public_key: &[u8]) -> String {
    hex::encode(&digest(&SHA256, public_key).as_ref()[..8])
}

/// Signs checkpoints with the gateway's Ed25519 key.
pub struct Signer {
    key: Ed25519KeyPair,
    key_id: String,
}

impl Signer {
    /// A signer from a PKCS#8 Ed25519 key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, AuditError> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8))
            .map_err(|e| AuditError::Key(e.to_string()))?;
        let key_id = key_id_of(key.public_key().as_ref());
        Ok(Self { key, key_id })
    }
    /// The key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
    /// The raw 32-byte public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }
    /// Signs a tombstone over purged entries `(gseq, purged record ‖ hash)` (in gseq order, not
    /// empty).
    pub fn tombstone(&self, id: u64, purged: &[(u64, Vec<u8>)], at: i64) -> Tombstone {
        let mut t = Tombstone {
            id,
            first: purged.first().map_or(0, |p| p.0),
            last: purged.last().map_or(0, |p| p.0),
            count: purged.len() as u64,
            digest: tombstone_digest(purged),
            at,
            key_id: self.key_id.clone(),
            signature: Vec::new(),
            covers: None,
        };
        t.signature = self.key.sign(&tombstone_message(&t)).as_ref().to_vec();
        t
    }

    /// Signs a checkpoint of record `gseq` with hash `head`.
    pub fn checkpoint(&self, gseq: u64, head: Hash, at: i64) -> Checkpoint {
        let message = checkpoint_message(gseq, &head, at, &self.key_id);
        Checkpoint {
            gseq,
            head,
            at,
            key_id: self.key_id.clone(),
            signature: self.key.sign(&message).as_ref().to_vec(),
        }
    }
}

/// A stored run, as the verifier reads it.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// The session the run belongs to.
    pub session: &'a str,
    /// First record's gseq.
    pub first_gseq: u64,
    /// Last record's gseq.
    pub last_gseq: u64,
    /// `record ‖ hash …`.
    pub body: &'a [u8],
}

/// The first record found bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// Its gseq.
    pub gseq: u64,
    /// Its session, when known.
    pub session: Option<String>,
    /// Its position in the session, when known.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Checkpoints verified.
    pub checkpoints: usize,
    /// gseq of the last checkpoint.
    pub last_checkpoint: Option<u64>,
    /// Records after the last checkpoint (not yet signed).
    pub unsigned_tail: u64,
    /// Records whose payload retention removed (vouched for by tombstones).
    pub purged: u64,
    /// The first bad record; `None` when the log is intact.
    pub first_bad: Option<BadRecord>,
}

impl Report {
    /// Whether the log verified.
    pub fn intact(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Verifies runs and checkpoints against public keys (key id → raw 32-byte key).
pub fn verify(
    runs: &[Run<'_>],
    checkpoints: &[Checkpoint],
    tombstones: &[Tombstone],
    keys: &HashMap<String, Vec<u8>>,
) -> Report {
    verify_from(0, GENESIS, runs, checkpoints, tombstones, keys)
}

/// Verifies a segment of the log that starts at record `start`, whose predecessor has hash
/// `prev` (an exported bundle). Checkpoints before `start` are ignored.
pub fn verify_from(
    start: u64,
    prev: Hash,
    runs: &[Run<'_>],
    checkpoints: &[Checkpoint],
    tombstones: &[Tombstone],
    keys: &HashMap<String, Vec<u8>>,
) -> Report {
    let mut report = Report {
        records: 0,
        checkpoints: 0,
        last_checkpoint: None,
        unsigned_tail: 0,
        purged: 0,
        first_bad: None,
    };
    let bad = |gseq: u64, r: Option<&Record<'_>>, reason: String| BadRecord {
        gseq,
        session: r.map(|r| r.session.to_string()),
        seq: r.map(|r| r.seq),
        reason,
    };
    // 1. Runs into records.
    let mut records: BTreeMap<u64, Stored<'_>> = BTreeMap::new();
    let mut first_bad: Option<BadRecord> = None;
    let note = |b: BadRecord, first_bad: &mut Option<BadRecord>| {
        if first_bad.as_ref().is_none_or(|f| b.gseq < f.gseq) {
            *first_bad = Some(b);
        }
    };
    for run in runs {
        let stored = match split_run(run.body) {
            Ok(s) => s,
            Err(e) => {
                note(
                    bad(
                        run.first_gseq,
                        None,
                        format!(
                            "the run of session {} holding it is unreadable: {e}",
                            run.session
                        ),
                    ),
                    &mut first_bad,
                );
                continue;
            }
        };
        for s in stored {
            let r = s.record;
            if r.session != run.session || r.gseq < run.first_gseq || r.gseq > run.last_gseq {
                note(
                    bad(
                        r.gseq,
                        Some(&r),
                        format!(
                            "stored in the run of session {} for records {}..={}",
                            run.session, run.first_gseq, run.last_gseq
                        ),
                    ),
                    &mut first_bad,
                );
            }
            if records.insert(r.gseq, s).is_some() {
                note(
                    bad(r.gseq, Some(&r), "appears more than once".into()),
                    &mut first_bad,
                );
            }
        }
    }
    report.records = records.len() as u64;
    // 2. Continuity and 3. the chain.
    let mut prev = prev;
    let mut heads: HashMap<u64, Hash> = HashMap::new();
    let mut expected = Some(start);
    for (&gseq, s) in &records {
        let Some(want) = expected else {
            note(
                bad(
                    gseq,
                    Some(&s.record),
                    "past the last possible position".into(),
                ),
                &mut first_bad,
            );
            break;
        };
        let expected_gseq = want;
        if gseq != expected_gseq {
            note(
                bad(
                    expected_gseq,
                    None,
                    format!("missing (the next record present is {gseq})"),
                ),
                &mut first_bad,
            );
            break;
        }
        // A purged record's hash cannot be recomputed: it must follow the record before it, and
        // its tombstone vouches for its hash (below).
        if let Some(before) = s.prev
            && before != prev
        {
            note(
                bad(
                    gseq,
                    Some(&s.record),
                    "purged, and it does not follow the record before it".into(),
                ),
                &mut first_bad,
            );
            break;
        }
        let computed = if s.purged.is_some() {
            s.hash
        } else {
            chain(&prev, s.bytes)
        };
        if computed != s.hash {
            note(
                bad(
                    gseq,
                    Some(&s.record),
                    "its hash does not match its contents and the record before it".into(),
                ),
                &mut first_bad,
            );
            break;
        }
        heads.insert(gseq, computed);
        prev = computed;
        expected = want.checked_add(1);
    }
    let last_present = records.keys().next_back().copied();
    // Tombstones: each vouches for the purged records naming it.
    let by_id: HashMap<u64, &Tombstone> = tombstones.iter().map(|t| (t.id, t)).collect();
    let mut named: BTreeMap<u64, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for (&gseq, s) in &records {
        let Some(t) = s.purged else { continue };
        report.purged += 1;
        if !by_id.contains_key(&t) {
            note(
                bad(
                    gseq,
                    Some(&s.record),
                    format!("purged, but tombstone {t} that should vouch for it is not on record"),
                ),
                &mut first_bad,
            );
        }
        named.entry(t).or_default().push((gseq, s.entry()));
    }
    for t in tombstones {
        let fail = |why: String, first_bad: &mut Option<BadRecord>| {
            note(
                bad(t.first, None, format!("tombstone {}: {why}", t.id)),
                first_bad,
            )
        };
        let signed = keys.get(&t.key_id).is_some_and(|public| {
            UnparsedPublicKey::new(&ED25519, public)
                .verify(&tombstone_message(t), &t.signature)
                .is_ok()
        });
        if !signed {
            fail(
                format!("its signature does not verify with key {}", t.key_id),
                &mut first_bad,
            );
            continue;
        }
        let mine = named.get(&t.id).map(Vec::as_slice).unwrap_or_default();
        let in_range =
            |list: &[(u64, Vec<u8>)]| list.iter().all(|(g, _)| *g >= t.first && *g <= t.last);
        let matches = match &t.covers {
            None => {
                mine.len() as u64 == t.count && in_range(mine) && tombstone_digest(mine) == t.digest
            }
            Some(covers) => {
                covers.len() as u64 == t.count
                    && in_range(covers)
                    && covers.windows(2).all(|w| w[0].0 < w[1].0)
                    && tombstone_digest(covers) == t.digest
                    && mine.iter().all(|p| covers.contains(p))
            }
        };
        if !matches {
            fail(
                "the purged records do not give its count and digest".into(),
                &mut first_bad,
            );
        }
    }
    // 4. Checkpoints, in order.
    let mut ordered: Vec<&Checkpoint> = checkpoints.iter().filter(|c| c.gseq >= start).collect();
    ordered.sort_by_key(|c| c.gseq);
    let mut previous_cp: Option<u64> = None;
    for cp in ordered {
        let first_rewritten = previous_cp.map_or(start, |g| g.saturating_add(1));
        let Some(public) = keys.get(&cp.key_id) else {
            note(
                bad(
                    cp.gseq,
                    None,
                    format!("checkpoint signed by unknown key {}", cp.key_id),
                ),
                &mut first_bad,
            );
            break;
        };
        let message = checkpoint_message(cp.gseq, &cp.head, cp.at, &cp.key_id);
        if UnparsedPublicKey::new(&ED25519, public)
            .verify(&message, &cp.signature)
            .is_err()
        {
            note(
                bad(cp.gseq, None, "checkpoint signature does not verify".into()),
                &mut first_bad,
            );
            break;
        }
        if last_present.is_none_or(|l| cp.gseq > l) {
            note(
                bad(
                    last_present.map_or(start, |l| l.saturating_add(1)),
                    None,
                    format!(
                        "missing: a signed checkpoint covers it but the log ends at {} (truncated)",
                        last_present.map_or("nothing".to_string(), |l| l.to_string())
                    ),
                ),
                &mut first_bad,
            );
            break;
        }
        match heads.get(&cp.gseq) {
            Some(h) if *h == cp.head => {}
            Some(_) => {
                let r = records.get(&first_rewritten).map(|s| s.record);
                note(
                    bad(
                        first_rewritten,
                        r.as_ref(),
                        format!(
                            "records {first_rewritten}..={} were rewritten: the chain no longer reaches the head signed at checkpoint {}",
                            cp.gseq, cp.gseq
                        ),
                    ),
                    &mut first_bad,
                );
                break;
            }
            // Not reached: an earlier failure stopped the chain.
            None => break,
        }
        report.checkpoints += 1;
        report.last_checkpoint = Some(cp.gseq);
        previous_cp = Some(cp.gseq);
    }
    report.unsigned_tail = match (report.last_checkpoint, last_present) {
        (Some(cp), Some(last)) => last.saturating_sub(cp),
        (None, Some(last)) => last.saturating_add(1).saturating_sub(start),
        _ => 0,
    };
    report.first_bad = first_bad;
    report
}

/// Keeps the chain while records are appended: numbering, hashing, when to sign.
#[derive(Debug, Clone)]
pub struct ChainState {
    /// gseq of the next record.
    pub next_gseq: u64,
    /// Hash of the last record (GENESIS when none).
    pub head: Hash,
    /// Records since the last checkpoint.
    pub unsigned: u64,
}

impl ChainState {
    /// A chain that continues after `last` (gseq and hash of the last stored record).
    pub fn resume(last: Option<(u64, Hash)>) -> Self {
        match last {
            Some((gseq, head)) => Self {
                next_gseq: gseq.saturating_add(1),
                head,
                unsigned: 0,
            },
            None => Self {
                next_gseq: 0,
                head: GENESIS,
                unsigned: 0,
            },
        }
    }

    /// Appends one record (encoded into `out`, followed by its hash); returns its gseq.
    pub fn append(
        &mut self,
        at: i64,
        session: &str,
        seq: u64,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u64, AuditError> {
        let gseq = self.next_gseq;
        if gseq == u64::MAX {
            return Err(AuditError::TooLong("the log (every position is used)"));
        }
        let start = out.len();
        encode_record(
            &Record {
                gseq,
                at,
                session,
                seq,
                payload,
            },
            out,
        )?;
        let hash = chain(&self.head, &out[start..]);
        out.extend_from_slice(&hash);
        self.head = hash;
        self.next_gseq = gseq + 1;
        self.unsigned += 1;
        Ok(gseq)
    }

    /// The last record's gseq, if any.
    pub fn last_gseq(&self) -> Option<u64> {
        self.next_gseq.checked_sub(1)
    }
}

mod bundle;
pub use bundle::Bundle;

pub mod seal;

#[cfg(test)]
mod tests;
