//! Encryption at rest of the audit log's payloads (docs/audit-format.md, "Sealed payloads").
//!
//! With master keys ([`Sealing`]), the event writer seals each record's JSON payload into a
//! `TGS1` envelope under a data key of its own, before the record is chained: the hash chain
//! covers the sealed bytes, so verification never needs a key. Data keys are stored only wrapped
//! by the current master key, in `audit_data_keys`, and each is committed there before any
//! record sealed with it can reach the journal. The associated data of a payload's envelope is
//! the record's header ([`tollgate_audit::payload_aad`]: `TGE1 ‖ gseq ‖ at ‖ session ‖ seq`),
//! so an envelope opens only in the record it was sealed for.
//!
//! Readers open sealed payloads with a [`Keyring`]: data keys are unwrapped from
//! `audit_data_keys` by the configured master keys (the current one and, during a rotation, the
//! previous one) the first time a payload needs them. Plain payloads (JSON, written before a
//! master key was configured) read as they are.

use std::borrow::Cow;

use rusqlite::{Connection as Db, OptionalExtension, params};
use tollgate_audit::AuditError;
use tollgate_audit::seal::{self, DataKey, MasterKey, Opener, SealError, Sealer, WrappedKey};

use crate::StoreError;

/// The settings that name a master key, for messages.
pub const MASTER_KEY_SETTING: &str = "encryption.master_key_env or encryption.master_key_file";
/// The settings that name the previous master key during a rotation, for messages.
const PREVIOUS_KEY_SETTING: &str =
    "encryption.previous_master_key_env or encryption.previous_master_key_file";

/// A data key seals at most this many payloads before the writer moves to a new one (well
/// before the envelope's limit of 2^32, so the writer thread has ample time to prepare and
/// store the next one).
pub(crate) const KEY_MESSAGES: u64 = seal::MAX_MESSAGES - (1 << 28);

/// The master keys the store seals audit payloads with (the current one) and opens them with
/// (the current one and, during a rotation, the previous ones).
#[derive(Clone)]
pub struct Sealing {
    current: MasterKey,
    /// The current key first, then the previous ones.
    all: Vec<MasterKey>,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing")
            .field("current", &self.current.id())
            .field("keys", &self.all.len())
            .finish()
    }
}

impl Sealing {
    /// Seals under `current`; opens with it and with `previous` (keys of an earlier rotation).
    pub fn new(current: MasterKey, previous: impl IntoIterator<Item = MasterKey>) -> Self {
        let all = std::iter::once(current.clone()).chain(previous).collect();
        Self { current, all }
    }

    /// The master key that wraps new data keys.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// Every master key that may unwrap a data key: the current one first.
    pub fn keys(&self) -> &[MasterKey] {
        &self.all
    }
}

fn sqlite(path: &std::path::Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

fn crypto(detail: String) -> StoreError {
    StoreError::Encryption(detail)
}

/// The ids of `keys`, comma-separated, or "none".
fn key_ids(keys: &[MasterKey]) -> String {
    if keys.is_empty() {
        return "none".into();
    }
    keys.iter()
        .map(MasterKey::id)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a wrapped data key does not unwrap with `keys`, as a message naming the setting to set.
fn unwrap_failure(wrapped: &WrappedKey, keys: &[MasterKey], e: AuditError) -> String {
    if keys.is_empty() {
        return format!(
            "data key {} is wrapped by master key {}, but no master key is configured: set {MASTER_KEY_SETTING} in the config's [encryption] section",
            wrapped.id, wrapped.kek_id
        );
    }
    match e {
        AuditError::Seal(SealError::UnknownMasterKey { .. }) => format!(
            "data key {} is wrapped by master key {}, which is not among the configured ones ({}): set {MASTER_KEY_SETTING} to that key (or, during a rotation, {PREVIOUS_KEY_SETTING})",
            wrapped.id,
            wrapped.kek_id,
            key_ids(keys)
        ),
        e => format!(
            "data key {} (wrapped by master key {}) does not unwrap: {e}",
            wrapped.id, wrapped.kek_id
        ),
    }
}

/// Every wrapped data key, oldest first.
pub(crate) fn data_keys(db: &Db) -> rusqlite::Result<Vec<WrappedKey>> {
    let mut stmt =
        db.prepare("SELECT id, kek_id, wrapped FROM audit_data_keys ORDER BY created_at, id")?;
    let rows = stmt.query_map([], |r| {
        Ok(WrappedKey {
            id: r.get(0)?,
            kek_id: r.get(1)?,
            bytes: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// A fresh data key for the writer: wrapped by the current master key and committed to
/// `audit_data_keys` (synchronously, so it is on disk before anything sealed with it is)
/// before the sealer is returned.
pub(crate) fn new_data_key(
    db: &Db,
    path: &std::path::Path,
    sealing: &Sealing,
) -> Result<Sealer, StoreError> {
    let key = DataKey::generate().map_err(|e| crypto(e.to_string()))?;
    let wrapped = key
        .wrap(sealing.current())
        .map_err(|e| crypto(e.to_string()))?;
    let err = sqlite(path);
    db.execute_batch("PRAGMA synchronous=FULL").map_err(&err)?;
    let inserted = db.execute(
        "INSERT INTO audit_data_keys (id, kek_id, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            wrapped.id,
            wrapped.kek_id,
            wrapped.bytes,
            tollgate_core::now_micros()
        ],
    );
    let restored = db.execute_batch("PRAGMA synchronous=NORMAL");
    inserted.map_err(&err)?;
    restored.map_err(&err)?;
    Ok(Sealer::new(key))
}

/// Re-wraps data keys under `new`, unwrapping each with the key among `old` (or `new`) that
/// wrapped it, in one transaction: every row when `every`, otherwise only those `new` does not
/// wrap yet. Nothing is written unless every one of them unwraps. Returns how many were
/// re-wrapped. What the data keys sealed is left as it is.
pub(crate) fn rewrap(
    db: &mut Db,
    path: &std::path::Path,
    old: &[MasterKey],
    new: &MasterKey,
    every: bool,
) -> Result<usize, StoreError> {
    let err = sqlite(path);
    let tx = db.transaction().map_err(&err)?;
    let rows = data_keys(&tx).map_err(&err)?;
    let known: Vec<MasterKey> = std::iter::once(new.clone())
        .chain(old.iter().cloned())
        .collect();
    let mut count = 0;
    for wrapped in rows {
        if !every && wrapped.kek_id == new.id() {
            continue;
        }
        let again = wrapped
            .rewrap(old, new)
            .map_err(|e| crypto(unwrap_failure(&wrapped, &known, e)))?;
        tx.execute(
            "UPDATE audit_data_keys SET kek_id = ?2, wrapped = ?3 WHERE id = ?1",
            params![again.id, again.kek_id, again.bytes],
        )
        .map_err(&err)?;
        count += 1;
    }
    tx.commit().map_err(&err)?;
    Ok(count)
}

/// What the event writer seals payloads with: the current data key's sealer, the next one once
/// the writer thread has prepared (and stored) it, and scratch buffers reused for every record.
pub(crate) struct PayloadSealer {
    current: Sealer,
    next: Option<Sealer>,
    /// Payloads one data key seals before the next one takes over.
    key_messages: u64,
    aad: Vec<u8>,
    /// The last envelope.
    pub envelope: Vec<u8>,
}

impl PayloadSealer {
    pub fn new(first: Sealer, key_messages: u64) -> Self {
        Self {
            current: first,
            next: None,
            key_messages: key_messages.clamp(1, seal::MAX_MESSAGES),
            aad: Vec::with_capacity(128),
            envelope: Vec::with_capacity(1024),
        }
    }

    /// Seals `plain` for the record (gseq, at, session, seq) into [`Self::envelope`]. Moves to
    /// the next data key when the current one has sealed its share and the next one is ready.
    pub fn seal(
        &mut self,
        gseq: u64,
        at: i64,
        session: &str,
        seq: u64,
        plain: &[u8],
    ) -> Result<(), String> {
        if self.current.sealed() >= self.key_messages
            && let Some(next) = self.next.take()
        {
            self.current = next;
        }
        self.aad.clear();
        tollgate_audit::payload_aad(gseq, at, session, seq, &mut self.aad)
            .map_err(|e| e.to_string())?;
        self.envelope.clear();
        self.current
            .seal(plain, &self.aad, &mut self.envelope)
            .map_err(|e| match e {
                AuditError::Seal(SealError::Exhausted) => {
                    "the audit data key has sealed all it may and the next one is not stored yet"
                        .to_string()
                }
                e => e.to_string(),
            })
    }

    /// Whether the writer thread should prepare the next data key.
    pub fn wants_key(&self) -> bool {
        self.next.is_none() && self.current.sealed() >= self.key_messages / 2
    }

    /// The next data key, already stored.
    pub fn give_key(&mut self, next: Sealer) {
        self.next = Some(next);
    }
}

/// Opens sealed payloads: data keys are unwrapped from `audit_data_keys` by the master keys the
/// first time a payload needs them, and kept.
pub(crate) struct Keyring {
    masters: Vec<MasterKey>,
    opener: Opener,
    aad: Vec<u8>,
}

impl Keyring {
    pub fn new(sealing: Option<&Sealing>) -> Self {
        Self {
            masters: sealing.map(|s| s.keys().to_vec()).unwrap_or_default(),
            opener: Opener::new(),
            aad: Vec::with_capacity(128),
        }
    }

    /// The JSON of a record's payload: as stored when plain, opened when it is an envelope. An
    /// envelope that does not open is an error naming the record, the data key and, when a
    /// master key is missing, the setting to set; never garbage.
    pub fn payload<'a>(
        &mut self,
        db: &Db,
        record: &tollgate_audit::Record<'a>,
    ) -> Result<Cow<'a, [u8]>, StoreError> {
        if !seal::is_sealed(record.payload) {
            return Ok(Cow::Borrowed(record.payload));
        }
        let fail = |detail: String| StoreError::Sealed {
            gseq: record.gseq,
            session: record.session.to_string(),
            seq: record.seq,
            detail,
        };
        let id = seal::envelope_key_id(record.payload)
            .map_err(|e| fail(format!("the sealed payload is unreadable: {e}")))?;
        if !self.opener.contains(&id) {
            let wrapped = db
                .query_row(
                    "SELECT kek_id, wrapped FROM audit_data_keys WHERE id = ?1",
                    params![id],
                    |r| {
                        Ok(WrappedKey {
                            id: id.clone(),
                            kek_id: r.get(0)?,
                            bytes: r.get(1)?,
                        })
                    },
                )
                .optional()
                .map_err(|e| fail(format!("cannot read data key {id}: {e}")))?
                .ok_or_else(|| {
                    fail(format!(
                        "the payload is sealed with data key {id}, which audit_data_keys does not hold"
                    ))
                })?;
            let key = wrapped.unwrap(&self.masters).map_err(|e| {
                fail(format!(
                    "the payload is sealed: {}",
                    unwrap_failure(&wrapped, &self.masters, e)
                ))
            })?;
            self.opener.insert(key);
        }
        self.aad.clear();
        tollgate_audit::payload_aad(
            record.gseq,
            record.at,
            record.session,
            record.seq,
            &mut self.aad,
        )
        .map_err(|e| fail(e.to_string()))?;
        self.opener
            .open(record.payload, &self.aad)
            .map(Cow::Owned)
            .map_err(|e| match e {
                AuditError::Seal(SealError::Authentication) => fail(format!(
                    "the sealed payload does not open under data key {id}: its bytes were altered, or it was moved from another record"
                )),
                e => fail(format!("the sealed payload does not open: {e}")),
            })
    }
}
