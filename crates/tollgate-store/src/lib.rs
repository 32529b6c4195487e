//! Persistence for Tollgate on SQLite: API keys, sessions and each session's ordered event stream.
//!
//! Events go through [`EventWriter`]: chained as they are recorded, made durable in an
//! append-only journal, and copied into SQLite by a dedicated thread in batches. Everything else
//! (keys, reads for the API) uses a separate connection behind a mutex; SQLite's WAL mode lets
//! both work at once.
//!
//! With master keys ([`Sealing`], [`Store::open_sealed`]) the audit payloads are kept sealed
//! (`sealing.rs`): the writer seals every new payload, readers open them, and verification
//! ([`read_audit`]) never needs a key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection as Db, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tollgate_audit::{Checkpoint, Hash, Signer, Tombstone};
use tollgate_core::{Event, EventKind};

mod journal;
mod sealing;
mod writer;
pub use sealing::{MASTER_KEY_SETTING, Sealing};
pub use writer::{EventWriter, journal_dir};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A stored value could not be decoded.
    #[error("store: corrupt {what}: {detail}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The audit journal could not be read or written.
    #[error("audit journal {path}: {detail}")]
    Journal {
        /// The journal directory.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The writer thread is gone.
    #[error("store: event writer stopped")]
    WriterStopped,
    /// The store mutex was poisoned by a panic elsewhere.
    #[error("store: connection lock poisoned")]
    Poisoned,
    /// Encryption at rest of the audit log: a data key cannot be made, stored, unwrapped or
    /// re-wrapped, or the store holds sealed payloads and no master key is given. The message
    /// names the data key and master key and, when a key is missing, the setting to set.
    #[error("audit log encryption: {0}")]
    Encryption(String),
    /// A sealed audit payload cannot be opened: no master key, not the right one, or altered
    /// bytes. The message names the data key and, when a key is missing, the setting to set.
    #[error("audit record {gseq} (session {session}, seq {seq}): {detail}")]
    Sealed {
        /// The record's gseq.
        gseq: u64,
        /// Its session.
        session: String,
        /// Its position in the session.
        seq: u64,
        /// Why it does not open.
        detail: String,
    },
}

/// Ordered list of schema migrations; index + 1 is the `user_version` after applying it.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    admin       INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    subject     TEXT,
    key_id      TEXT,
    connection  TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    client_addr TEXT NOT NULL,
    tls         INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    end_reason  TEXT,
    commands    INTEGER NOT NULL DEFAULT 0,
    refused     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_started ON sessions(started_at);
-- A session's events, stored as consecutive runs (one row per run written in one batch):
-- body is a JSON array of {"seq", "at", "kind"} objects in order.
CREATE TABLE approvals (
    id         TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    body       TEXT NOT NULL
);
CREATE TABLE event_runs (
    session   TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (session, first_seq)
) WITHOUT ROWID;
"#,
    r#"
-- The tamper-evident log (docs/audit-format.md): runs of one session's records, each record
-- followed by its chain hash; signed checkpoints; the public keys that signed them.
CREATE TABLE audit_runs (
    first_gseq INTEGER PRIMARY KEY,
    last_gseq  INTEGER NOT NULL,
    session    TEXT NOT NULL,
    body       BLOB NOT NULL
);
CREATE INDEX audit_runs_session ON audit_runs(session, first_gseq);
CREATE TABLE audit_checkpoints (
    gseq      INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    head      BLOB NOT NULL,
    key_id    TEXT NOT NULL,
    signature BLOB NOT NULL
);
CREATE TABLE audit_keys (
    key_id     TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
"#,
    r#"
-- Where each export sink stands: the last gseq it delivered.
CREATE TABLE audit_cursors (
    sink TEXT PRIMARY KEY,
    gseq INTEGER NOT NULL
);
"#,
    r#"
-- Signed statements vouching for records whose payloads retention removed.
CREATE TABLE audit_tombstones (
    id         INTEGER PRIMARY KEY,
    first_gseq INTEGER NOT NULL,
    last_gseq  INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    digest     BLOB NOT NULL,
    at         INTEGER NOT NULL,
    key_id     TEXT NOT NULL,
    signature  BLOB NOT NULL
);
"#,
    r#"
-- The data keys that sealed audit payloads (TGS1 envelopes), each wrapped by a master key
-- (kek_id names it; the master key itself is never stored).
CREATE TABLE audit_data_keys (
    id         TEXT PRIMARY KEY,
    kek_id     TEXT NOT NULL,
    wrapped    BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
"#,
    r#"
-- Revoked OIDC tokens: by token id (jti), or every token of a subject issued up to revoked_at.
CREATE TABLE token_revocations (
    kind       TEXT NOT NULL CHECK (kind IN ('jti', 'subject')),
    value      TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    revoked_by TEXT,
    reason     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
"#,
    r#"
-- Web login sessions: the SHA-256 of the cookie's random id (never the id itself), who (the
-- identity as JSON) and until when.
CREATE TABLE web_sessions (
    id_hash    TEXT PRIMARY KEY,
    subject    TEXT NOT NULL,
    identity   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
"#,
    r#"
-- SSH public keys registered for sign-in, by SHA-256 fingerprint. Whose: an API key (key_id;
-- its revocation or expiry disables the SSH key, its groups apply at each sign-in) or an OIDC
-- identity's snapshot (identity, as JSON), which must expire.
CREATE TABLE ssh_keys (
    fingerprint TEXT PRIMARY KEY,
    public_key  TEXT NOT NULL,
    name        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    key_id      TEXT REFERENCES api_keys (id),
    identity    TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    CHECK ((key_id IS NOT NULL AND identity IS NULL)
        OR (key_id IS NULL AND identity IS NOT NULL AND expires_at IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX ssh_keys_key ON ssh_keys (key_id);
CREATE INDEX ssh_keys_subject ON ssh_keys (subject);
"#,
];

fn open(path: &Path) -> Result<Db, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let db = Db::open(path).map_err(err)?;
    db.execute_batch(
        "PRAGMA page_size=4096; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;",
    )
    .map_err(err)?;
    Ok(db)
}

fn migrate(db: &mut Db, path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = db.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

/// A stored API key (never the key itself, only its hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    /// Public id, shown in listings.
    pub id: String,
    /// Human name of the key's holder.
    pub name: String,
    /// Groups granted.
    pub groups: Vec<String>,
    /// Hex SHA-256 of the full key.
    #[serde(skip_serializing)]
    pub hash: String,
    /// Administrator key.
    pub admin: bool,
    /// Creation time, µs since epoch.
    pub created_at: i64,
    /// Expiry, µs since epoch.
    pub expires_at: Option<i64>,
    /// Revocation time, µs since epoch.
    pub revoked_at: Option<i64>,
}

/// What a token revocation names.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// One token, by its `jti`.
    Jti,
    /// Every token of a subject (the Tollgate principal) issued up to the revocation.
    Subject,
}

impl RevocationKind {
    /// `jti` or `subject`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jti => "jti",
            Self::Subject => "subject",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "jti" => Some(Self::Jti),
            "subject" => Some(Self::Subject),
            _ => None,
        }
    }
}

/// A stored token revocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRevocation {
    /// By token id or by subject.
    pub kind: RevocationKind,
    /// The `jti`, or the subject.
    pub value: String,
    /// When, µs since epoch. For a subject, tokens issued at or before this are refused.
    pub revoked_at: i64,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// Why, in the revoker's words.
    pub reason: String,
}

/// A web login session (the cookie's id is kept only as its hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebSession {
    /// Hex SHA-256 of the cookie's id.
    pub id_hash: String,
    /// Who logged in.
    pub identity: tollgate_core::Identity,
    /// When, µs since epoch.
    pub created_at: i64,
    /// Until when, µs since epoch.
    pub expires_at: i64,
}

/// Whose a registered SSH key is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum SshKeyOwner {
    /// An API key, by id: sign-in takes the key's groups and fails once it is revoked or
    /// expired.
    ApiKey(String),
    /// An OIDC identity as it was when the key was registered.
    Identity(tollgate_core::Identity),
}

/// An SSH public key registered for sign-in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshKeyRecord {
    /// `SHA256:…`.
    pub fingerprint: String,
    /// The OpenSSH public key line, without comment.
    pub public_key: String,
    /// A name for listings (the line's comment, or given).
    pub name: String,
    /// Whose, by name: the API key's name or the identity's subject.
    pub subject: String,
    /// Whose, to sign in as.
    pub owner: SshKeyOwner,
    /// When registered, µs since epoch.
    pub created_at: i64,
    /// When it stops signing in, µs since epoch.
    pub expires_at: Option<i64>,
}

type SshKeyRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
);

const SSH_KEY_COLUMNS: &str =
    "fingerprint, public_key, name, subject, key_id, identity, created_at, expires_at";

fn ssh_key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SshKeyRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn ssh_key_record(row: SshKeyRow) -> Result<SshKeyRecord, StoreError> {
    let (fingerprint, public_key, name, subject, key_id, identity, created_at, expires_at) = row;
    let owner = match (key_id, identity) {
        (Some(id), _) => SshKeyOwner::ApiKey(id),
        (None, Some(json)) => {
            SshKeyOwner::Identity(
                serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    what: "ssh key identity",
                    detail: e.to_string(),
                })?,
            )
        }
        (None, None) => {
            return Err(StoreError::Corrupt {
                what: "ssh key owner",
                detail: format!("{fingerprint} has no owner"),
            });
        }
    };
    Ok(SshKeyRecord {
        fingerprint,
        public_key,
        name,
        subject,
        owner,
        created_at,
        expires_at,
    })
}

/// A session row, kept up to date from its events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id.
    pub id: String,
    /// Who, when known.
    pub subject: Option<String>,
    /// Which key.
    pub key_id: Option<String>,
    /// Connection asked for.
    pub connection: String,
    /// Protocol.
    pub protocol: String,
    /// native or api.
    pub channel: String,
    /// Client address.
    pub client_addr: String,
    /// Client TLS.
    pub tls: bool,
    /// Start, µs since epoch.
    pub started_at: i64,
    /// End, µs since epoch.
    pub ended_at: Option<i64>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// Commands recorded.
    pub commands: i64,
    /// Refusals recorded.
    pub refused: i64,
}

/// Filter for session listings.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Only sessions of this subject.
    pub subject: Option<String>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// The store: one control connection plus the event writer.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: Arc<Mutex<Db>>,
    /// Master keys: the event writer seals payloads under them, readers open them.
    sealing: Option<Sealing>,
    /// Data keys unwrapped so far, for reading. Locked after `db`, never before.
    keyring: Arc<Mutex<sealing::Keyring>>,
}

impl Store {
    /// Opens (creating and migrating) the database at `path`, without master keys: payloads are
    /// written plain, and sealed ones cannot be read.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_sealed(path, None)
    }

    /// Opens (creating and migrating) the database at `path`. With `sealing`, the event writer
    /// seals every new payload under a data key wrapped by the current master key, and reads
    /// open sealed payloads with any of the master keys; plain payloads read as they are.
    pub fn open_sealed(path: &Path, sealing: Option<Sealing>) -> Result<Self, StoreError> {
        let mut db = open(path)?;
        migrate(&mut db, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            db: Arc::new(Mutex::new(db)),
            keyring: Arc::new(Mutex::new(sealing::Keyring::new(sealing.as_ref()))),
            sealing,
        })
    }

    /// Runs `f` with the connection and the keyring that opens sealed payloads.
    fn reading<T>(
        &self,
        f: impl FnOnce(&Db, &mut sealing::Keyring) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.db.lock().map_err(|_| StoreError::Poisoned)?;
        let mut keyring = self.keyring.lock().map_err(|_| StoreError::Poisoned)?;
        f(&db, &mut keyring)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Db) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let db = self.db.lock().map_err(|_| StoreError::Poisoned)?;
        f(&db).map_err(|e| self.err(e))
    }

    /// Starts the event writer thread on its own connection. Events go into the hash-chained
    /// audit log; `signer` signs its checkpoints and its public key is registered. When the
    /// store was opened with master keys ([`Self::open_sealed`]), every new payload is sealed
    /// (and a store holding sealed payloads refuses to start a writer without them).
    pub fn event_writer(&self, signer: Signer) -> Result<EventWriter, StoreError> {
        self.event_writer_with_limit(signer, writer::QUEUE_LIMIT)
    }

    /// [`Self::event_writer`] with at most `limit` best-effort events waiting to be written;
    /// beyond it, command events are dropped and the drop is itself recorded.
    pub fn event_writer_with_limit(
        &self,
        signer: Signer,
        limit: usize,
    ) -> Result<EventWriter, StoreError> {
        EventWriter::start(
            &self.path,
            signer,
            limit,
            self.sealing.clone(),
            sealing::KEY_MESSAGES,
        )
    }

    /// The wrapped data keys that sealed audit payloads, oldest first.
    pub fn data_keys(&self) -> Result<Vec<tollgate_audit::seal::WrappedKey>, StoreError> {
        self.with(sealing::data_keys)
    }

    /// Inserts a key record.
    pub fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let groups = serde_json::to_string(&key.groups).map_err(|e| StoreError::Corrupt {
            what: "groups",
            detail: e.to_string(),
        })?;
        self.with(|db| {
            db.execute(
                "INSERT INTO api_keys (id, name, groups_json, hash, admin, created_at, expires_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![key.id, key.name, groups, key.hash, key.admin, key.created_at, key.expires_at, key.revoked_at],
            )
            .map(|_| ())
        })
    }

    /// All keys, oldest first.
    pub fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = self.with(|db| {
            let mut stmt = db.prepare(
                "SELECT id, name, groups_json, hash, admin, created_at, expires_at, revoked_at
                 FROM api_keys ORDER BY created_at, id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(
                |(id, name, groups, hash, admin, created_at, expires_at, revoked_at)| {
                    let groups =
                        serde_json::from_str(&groups).map_err(|e| StoreError::Corrupt {
                            what: "groups",
                            detail: e.to_string(),
                        })?;
                    Ok(KeyRecord {
                        id,
                        name,
                        groups,
                        hash,
                        admin,
                        created_at,
                        expires_at,
                        revoked_at,
                    })
                },
            )
            .collect()
    }

    /// Marks a key revoked; returns false when no such key exists.
    pub fn revoke_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        self.with(|db| {
            db.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, at],
            )
            .map(|n| n > 0)
        })
    }

    /// Records a token revocation. Revoking a subject again moves its time forward (tokens
    /// issued since are refused too); revoking a token id again keeps the first record.
    pub fn revoke_token(&self, r: &TokenRevocation) -> Result<(), StoreError> {
        let sql = match r.kind {
            RevocationKind::Jti => {
                "INSERT INTO token_revocations (kind, value, revoked_at, revoked_by, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(kind, value) DO NOTHING"
            }
            RevocationKind::Subject => {
                "INSERT INTO token_revocations (kind, value, revoked_at, revoked_by, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(kind, value) DO UPDATE SET
                 revoked_at = MAX(revoked_at, excluded.revoked_at),
                 revoked_by = excluded.revoked_by, reason = excluded.reason"
            }
        };
        self.with(|db| {
            db.execute(
                sql,
                params![
                    r.kind.as_str(),
                    r.value,
                    r.revoked_at,
                    r.revoked_by,
                    r.reason
                ],
            )
            .map(|_| ())
        })
    }

    /// Every token revocation, oldest first.
    pub fn token_revocations(&self) -> Result<Vec<TokenRevocation>, StoreError> {
        let rows = self.with(|db| {
            let mut stmt = db.prepare(
                "SELECT kind, value, revoked_at, revoked_by, reason FROM token_revocations
                 ORDER BY revoked_at, kind, value",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(kind, value, revoked_at, revoked_by, reason)| {
                let kind = RevocationKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
                    what: "token revocation kind",
                    detail: kind.clone(),
                })?;
                Ok(TokenRevocation {
                    kind,
                    value,
                    revoked_at,
                    revoked_by,
                    reason,
                })
            })
            .collect()
    }

    /// Stores a web login session, and forgets those expired before `now`.
    pub fn insert_web_session(&self, session: &WebSession, now: i64) -> Result<(), StoreError> {
        let identity =
            serde_json::to_string(&session.identity).map_err(|e| StoreError::Corrupt {
                what: "web session identity",
                detail: e.to_string(),
            })?;
        self.with(|db| {
            db.execute(
                "DELETE FROM web_sessions WHERE expires_at <= ?1",
                params![now],
            )?;
            db.execute(
                "INSERT INTO web_sessions (id_hash, subject, identity, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    session.id_hash,
                    session.identity.subject,
                    identity,
                    session.created_at,
                    session.expires_at
                ],
            )
            .map(|_| ())
        })
    }

    /// The web login session with this id hash, expired or not.
    pub fn web_session(&self, id_hash: &str) -> Result<Option<WebSession>, StoreError> {
        let row = self.with(|db| {
            db.query_row(
                "SELECT identity, created_at, expires_at FROM web_sessions WHERE id_hash = ?1",
                params![id_hash],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
        })?;
        row.map(|(identity, created_at, expires_at)| {
            let identity = serde_json::from_str(&identity).map_err(|e| StoreError::Corrupt {
                what: "web session identity",
                detail: e.to_string(),
            })?;
            Ok(WebSession {
                id_hash: id_hash.to_string(),
                identity,
                created_at,
                expires_at,
            })
        })
        .transpose()
    }

    /// Deletes a web login session; false when there was none.
    pub fn delete_web_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        self.with(|db| {
            db.execute(
                "DELETE FROM web_sessions WHERE id_hash = ?1",
                params![id_hash],
            )
            .map(|n| n > 0)
        })
    }

    /// Registers an SSH key; false (and nothing stored) when its fingerprint is registered
    /// already.
    pub fn insert_ssh_key(&self, key: &SshKeyRecord) -> Result<bool, StoreError> {
        let (key_id, identity) = match &key.owner {
            SshKeyOwner::ApiKey(id) => (Some(id.as_str()), None),
            SshKeyOwner::Identity(i) => (
                None,
                Some(serde_json::to_string(i).map_err(|e| StoreError::Corrupt {
                    what: "ssh key identity",
                    detail: e.to_string(),
                })?),
            ),
        };
        self.with(|db| {
            db.execute(
                "INSERT INTO ssh_keys (fingerprint, public_key, name, subject, key_id, identity, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (fingerprint) DO NOTHING",
                params![
                    key.fingerprint,
                    key.public_key,
                    key.name,
                    key.subject,
                    key_id,
                    identity,
                    key.created_at,
                    key.expires_at
                ],
            )
            .map(|n| n > 0)
        })
    }

    /// The SSH key with this fingerprint.
    pub fn ssh_key(&self, fingerprint: &str) -> Result<Option<SshKeyRecord>, StoreError> {
        let row = self.with(|db| {
            db.query_row(
                &format!("SELECT {SSH_KEY_COLUMNS} FROM ssh_keys WHERE fingerprint = ?1"),
                params![fingerprint],
                ssh_key_row,
            )
            .optional()
        })?;
        row.map(ssh_key_record).transpose()
    }

    /// Every registered SSH key, oldest first.
    pub fn ssh_keys(&self) -> Result<Vec<SshKeyRecord>, StoreError> {
        let rows = self.with(|db| {
            let mut stmt = db.prepare(&format!(
                "SELECT {SSH_KEY_COLUMNS} FROM ssh_keys ORDER BY created_at, fingerprint"
            ))?;
            let rows = stmt.query_map([], ssh_key_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter().map(ssh_key_record).collect()
    }

    /// Removes an SSH key; false when there was none.
    pub fn delete_ssh_key(&self, fingerprint: &str) -> Result<bool, StoreError> {
        self.with(|db| {
            db.execute(
                "DELETE FROM ssh_keys WHERE fingerprint = ?1",
                params![fingerprint],
            )
            .map(|n| n > 0)
        })
    }

    /// The ids of the gateway's own audit streams (`gateway-…`: administrative acts and API
    /// refusals), newest first.
    pub fn gateway_streams(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        let limit = if limit == 0 { 100 } else { limit };
        self.with(|db| {
            let mut stmt = db.prepare(
                "SELECT session FROM audit_runs WHERE session LIKE 'gateway-%'
                 GROUP BY session ORDER BY MIN(first_gseq) DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit], |r| r.get::<_, String>(0))?;
            rows.collect()
        })
    }

    /// Sessions, newest first.
    pub fn sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionRecord>, StoreError> {
        let limit = if filter.limit == 0 { 100 } else { filter.limit };
        self.with(|db| {
            let mut stmt = db.prepare(
                "SELECT id, subject, key_id, connection, protocol, channel, client_addr, tls, started_at, ended_at, end_reason,
                        commands, refused
                 FROM sessions s WHERE (?1 IS NULL OR subject = ?1)
                 ORDER BY started_at DESC, id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![filter.subject, limit], session_row)?;
            rows.collect()
        })
    }

    /// One session.
    pub fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.with(|db| {
            db.query_row(
                "SELECT id, subject, key_id, connection, protocol, channel, client_addr, tls, started_at, ended_at, end_reason,
                        commands, refused
                 FROM sessions s WHERE id = ?1",
                params![id],
                session_row,
            )
            .optional()
        })
    }

    /// A session's events in order. Sealed payloads are opened with the master keys; one that
    /// does not open is an error ([`StoreError::Sealed`]).
    pub fn events(&self, session: &str) -> Result<Vec<Event>, StoreError> {
        let mut events = self.legacy_events(session)?;
        let corrupt = |detail: String| StoreError::Corrupt {
            what: "audit run",
            detail,
        };
        self.reading(|db, keyring| {
            let chained = (|| {
                let mut stmt = db.prepare_cached(
                    "SELECT body FROM audit_runs WHERE session = ?1 ORDER BY first_gseq",
                )?;
                let rows = stmt.query_map(params![session], |r| r.get::<_, Vec<u8>>(0))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })()
            .map_err(|e| self.err(e))?;
            for body in chained {
                for stored in
                    tollgate_audit::split_run(&body).map_err(|e| corrupt(e.to_string()))?
                {
                    if stored.purged.is_some() {
                        continue; // retention removed it
                    }
                    let r = stored.record;
                    let json = keyring.payload(db, &r)?;
                    let kind: EventKind = serde_json::from_slice(&json)
                        .map_err(|e| corrupt(format!("record {}: {e}", r.gseq)))?;
                    events.push(Event {
                        session: session.to_string(),
                        seq: r.seq,
                        at: r.at,
                        kind,
                    });
                }
            }
            Ok(())
        })?;
        Ok(events)
    }

    /// The last gseq the export sink `sink` delivered, if any.
    pub fn cursor(&self, sink: &str) -> Result<Option<u64>, StoreError> {
        self.with(|db| {
            db.query_row(
                "SELECT gseq FROM audit_cursors WHERE sink = ?1",
                params![sink],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|g| g.map(|g| g as u64))
        })
    }

    /// Records that `sink` delivered everything up to `gseq`.
    pub fn set_cursor(&self, sink: &str, gseq: u64) -> Result<(), StoreError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO audit_cursors (sink, gseq) VALUES (?1, ?2)
                 ON CONFLICT(sink) DO UPDATE SET gseq = excluded.gseq",
                params![sink, gseq as i64],
            )
            .map(|_| ())
        })
    }

    /// Up to `limit` committed records after gseq `after` (all when `None`), in gseq order,
    /// without gaps. Sealed payloads are opened: each record carries its event's JSON.
    pub fn records_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ExportRecord>, StoreError> {
        let from = after.map_or(0, |g| g.saturating_add(1));
        let until = from.saturating_add(limit as u64);
        let mut out = Vec::new();
        self.reading(|db, keyring| {
            let bodies = (|| {
                let mut stmt = db.prepare_cached(
                    "SELECT body FROM audit_runs
                     WHERE first_gseq >= ?3 AND first_gseq < ?2 AND last_gseq >= ?1
                     ORDER BY first_gseq",
                )?;
                // A run holds one batch at most, so it starts no more than a batch before `from`.
                let lowest = from.saturating_sub(writer::BATCH as u64);
                let rows = stmt
                    .query_map(params![from as i64, until as i64, lowest as i64], |r| {
                        r.get::<_, Vec<u8>>(0)
                    })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })()
            .map_err(|e| self.err(e))?;
            for body in &bodies {
                let stored = tollgate_audit::split_run(body).map_err(|e| StoreError::Corrupt {
                    what: "audit run",
                    detail: e.to_string(),
                })?;
                for s in stored {
                    let r = s.record;
                    if r.gseq >= from && r.gseq < until {
                        out.push(ExportRecord {
                            purged: s.purged.is_some(),
                            gseq: r.gseq,
                            at: r.at,
                            session: r.session.to_string(),
                            seq: r.seq,
                            payload: keyring.payload(db, &r)?.into_owned(),
                            hash: s.hash,
                        });
                    }
                }
            }
            Ok(())
        })?;
        out.sort_by_key(|r| r.gseq);
        // A batch commits whole, so committed records always run from 0 without a gap.
        let contiguous = out
            .iter()
            .zip(from..)
            .take_while(|(r, g)| r.gseq == *g)
            .count();
        out.truncate(contiguous);
        Ok(out)
    }

    /// The public keys that signed this log, oldest first: `(key id, raw key)`.
    pub fn audit_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with(|db| {
            let mut stmt = db
                .prepare("SELECT key_id, public_key FROM audit_keys ORDER BY created_at, key_id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Everything `tollgate audit verify` reads: runs, checkpoints, keys.
    pub fn audit_material(&self) -> Result<AuditMaterial, StoreError> {
        self.with(read_audit_material)
    }

    /// Events written before the audit log existed (unchained).
    fn legacy_events(&self, session: &str) -> Result<Vec<Event>, StoreError> {
        let runs = self.with(|db| {
            let mut stmt =
                db.prepare("SELECT body FROM event_runs WHERE session = ?1 ORDER BY first_seq")?;
            let rows = stmt.query_map(params![session], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut events = Vec::new();
        for body in runs {
            let run: Vec<StoredEvent> =
                serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                    what: "event run",
                    detail: e.to_string(),
                })?;
            events.extend(run.into_iter().map(|e| Event {
                session: session.to_string(),
                seq: e.seq,
                at: e.at,
                kind: e.kind,
            }));
        }
        Ok(events)
    }

    /// Inserts or replaces an approval request (its JSON form).
    pub fn save_approval(&self, id: &str, created_at: i64, body: &str) -> Result<(), StoreError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO approvals (id, created_at, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                params![id, created_at, body],
            )
            .map(|_| ())
        })
    }

    /// Every approval request (JSON), oldest first.
    pub fn approvals(&self) -> Result<Vec<String>, StoreError> {
        self.with(|db| {
            let mut stmt = db.prepare("SELECT body FROM approvals ORDER BY created_at, id")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect()
        })
    }

    /// Searches every stored text column for `needle` (used by tests that prove secrets never
    /// land), sealed payloads included: they are opened and searched too.
    pub fn contains_text(&self, needle: &str) -> Result<bool, StoreError> {
        let pattern = format!("%{needle}%");
        let found = self.with(|db| {
            let n: i64 = db.query_row(
                "SELECT (SELECT COUNT(*) FROM event_runs WHERE body LIKE ?1)
                      + (SELECT COUNT(*) FROM audit_runs WHERE instr(body, ?2) > 0)
                      + (SELECT COUNT(*) FROM sessions WHERE subject LIKE ?1 OR connection LIKE ?1 OR end_reason LIKE ?1)
                      + (SELECT COUNT(*) FROM api_keys WHERE name LIKE ?1 OR hash LIKE ?1)",
                params![pattern, needle.as_bytes()],
                |r| r.get(0),
            )?;
            Ok(n > 0)
        })?;
        if found || needle.is_empty() {
            return Ok(found);
        }
        self.reading(|db, keyring| {
            let bodies = (|| {
                let mut stmt =
                    db.prepare("SELECT body FROM audit_runs WHERE instr(body, ?1) > 0")?;
                let rows = stmt
                    .query_map(params![tollgate_audit::seal::MAGIC.as_slice()], |r| {
                        r.get::<_, Vec<u8>>(0)
                    })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })()
            .map_err(|e| self.err(e))?;
            for body in &bodies {
                let stored = tollgate_audit::split_run(body).map_err(|e| StoreError::Corrupt {
                    what: "audit run",
                    detail: e.to_string(),
                })?;
                for s in stored {
                    if tollgate_audit::seal::is_sealed(s.record.payload) {
                        let json = keyring.payload(db, &s.record)?;
                        if json.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                            return Ok(true);
                        }
                    }
                }
            }
            Ok(false)
        })
    }
}

/// Master key rotation of the store at `path`: re-wraps every data key of `audit_data_keys`
/// under `new` (each unwrapped with the key among `old`, or `new`, that wrapped it), in one
/// transaction: all or nothing. The records and their hashes are untouched. Returns how many
/// data keys were re-wrapped.
pub fn rewrap_data_keys(
    path: &Path,
    old: &[tollgate_audit::seal::MasterKey],
    new: &tollgate_audit::seal::MasterKey,
) -> Result<usize, StoreError> {
    let mut db = open(path)?;
    migrate(&mut db, path)?;
    sealing::rewrap(&mut db, path, old, new, true)
}

/// One record of the audit log, as export sinks send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRecord {
    /// Global position.
    pub gseq: u64,
    /// Microseconds since the epoch.
    pub at: i64,
    /// Session id.
    pub session: String,
    /// Position in the session.
    pub seq: u64,
    /// The event as JSON (opened, when the record holds a sealed payload; empty when purged).
    pub payload: Vec<u8>,
    /// Its chain hash.
    pub hash: [u8; 32],
    /// Whether retention removed its payload.
    pub purged: bool,
}

/// The audit log as stored: what verification needs.
#[derive(Debug, Default)]
pub struct AuditMaterial {
    /// `(session, first_gseq, last_gseq, body)` per run.
    pub runs: Vec<(String, u64, u64, Vec<u8>)>,
    /// Signed checkpoints.
    pub checkpoints: Vec<Checkpoint>,
    /// Public keys by key id.
    pub keys: std::collections::HashMap<String, Vec<u8>>,
    /// Tombstones of purged records.
    pub tombstones: Vec<Tombstone>,
}

impl AuditMaterial {
    /// Verifies the log; `pinned` keys, when given, replace the stored ones.
    pub fn verify(
        &self,
        pinned: Option<&std::collections::HashMap<String, Vec<u8>>>,
    ) -> tollgate_audit::Report {
        let runs: Vec<tollgate_audit::Run<'_>> = self
            .runs
            .iter()
            .map(|(session, first, last, body)| tollgate_audit::Run {
                session,
                first_gseq: *first,
                last_gseq: *last,
                body,
            })
            .collect();
        tollgate_audit::verify(
            &runs,
            &self.checkpoints,
            &self.tombstones,
            pinned.unwrap_or(&self.keys),
        )
    }
}

/// Reads the audit log of the database at `path` without writing to it (offline verification).
pub fn read_audit(path: &Path) -> Result<AuditMaterial, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        return Err(StoreError::Corrupt {
            what: "store",
            detail: format!("{} does not exist", path.display()),
        });
    }
    let db = Db::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
    read_audit_material(&db).map_err(err)
}

fn read_audit_material(db: &Db) -> rusqlite::Result<AuditMaterial> {
    let mut m = AuditMaterial::default();
    let mut stmt = db.prepare(
        "SELECT session, first_gseq, last_gseq, body FROM audit_runs ORDER BY first_gseq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, i64>(2)? as u64,
            r.get::<_, Vec<u8>>(3)?,
        ))
    })?;
    m.runs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = db
        .prepare("SELECT gseq, at, head, key_id, signature FROM audit_checkpoints ORDER BY gseq")?;
    let rows = stmt.query_map([], |r| {
        let head: Vec<u8> = r.get(2)?;
        Ok(Checkpoint {
            gseq: r.get::<_, i64>(0)? as u64,
            at: r.get(1)?,
            head: head.as_slice().try_into().unwrap_or([0; 32]),
            key_id: r.get(3)?,
            signature: r.get(4)?,
        })
    })?;
    m.checkpoints = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = db.prepare("SELECT key_id, public_key FROM audit_keys")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    m.keys = rows.collect::<rusqlite::Result<_>>()?;
    let mut stmt = db.prepare(
        "SELECT id, first_gseq, last_gseq, count, digest, at, key_id, signature FROM audit_tombstones ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        let digest: Vec<u8> = r.get(4)?;
        Ok(Tombstone {
            id: r.get::<_, i64>(0)? as u64,
            first: r.get::<_, i64>(1)? as u64,
            last: r.get::<_, i64>(2)? as u64,
            count: r.get::<_, i64>(3)? as u64,
            digest: digest.as_slice().try_into().unwrap_or([0; 32]),
            at: r.get(5)?,
            key_id: r.get(6)?,
            signature: r.get(7)?,
            covers: None,
        })
    })?;
    m.tombstones = rows.collect::<rusqlite::Result<_>>()?;
    Ok(m)
}

/// An abandonment event for every session that has a start and no end: the gateway that
/// served them stopped without ending them.
fn abandoned_sessions(db: &Db) -> rusqlite::Result<Vec<Event>> {
    let mut stmt =
        db.prepare("SELECT id FROM sessions WHERE ended_at IS NULL ORDER BY started_at")?;
    let ids = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let now = tollgate_core::now_micros();
    let mut events = Vec::with_capacity(ids.len());
    for id in ids {
        let chained: Option<Vec<u8>> = db
            .query_row(
                "SELECT body FROM audit_runs WHERE session = ?1 ORDER BY first_gseq DESC LIMIT 1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        let last_chained = chained.and_then(|b| {
            tollgate_audit::split_run(&b)
                .ok()
                .and_then(|s| s.iter().map(|s| s.record.seq).max())
        });
        let last_legacy: Option<i64> = db
            .query_row(
                "SELECT MAX(last_seq) FROM event_runs WHERE session = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let next = match (last_chained, last_legacy) {
            (Some(c), Some(l)) => c.max(l.max(0) as u64) + 1,
            (Some(c), None) => c + 1,
            (None, Some(l)) => l.max(0) as u64 + 1,
            (None, None) => 0,
        };
        events.push(Event {
            session: id,
            seq: next,
            at: now,
            kind: EventKind::SessionAbandoned {
                reason: "the gateway stopped without ending the session".into(),
            },
        });
    }
    Ok(events)
}

/// gseq and hash of the last record in the log.
fn last_record(db: &Db) -> rusqlite::Result<Option<(u64, Hash)>> {
    let body: Option<Vec<u8>> = db
        .query_row(
            "SELECT body FROM audit_runs ORDER BY last_gseq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let Some(body) = body else { return Ok(None) };
    let last = tollgate_audit::split_run(&body)
        .ok()
        .and_then(|s| s.into_iter().max_by_key(|s| s.record.gseq));
    Ok(last.map(|s| (s.record.gseq, s.hash)))
}

/// An event as stored inside a run (its session is the row's).
#[derive(Serialize, Deserialize)]
struct StoredEvent {
    seq: u64,
    at: i64,
    kind: EventKind,
}

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get(0)?,
        subject: r.get(1)?,
        key_id: r.get(2)?,
        connection: r.get(3)?,
        protocol: r.get(4)?,
        channel: r.get(5)?,
        client_addr: r.get(6)?,
        tls: r.get(7)?,
        started_at: r.get(8)?,
        ended_at: r.get(9)?,
        end_reason: r.get(10)?,
        commands: r.get(11)?,
        refused: r.get(12)?,
    })
}

/// Replaces the records of `connection`'s sessions that ended before `before` with purged
/// records and signs one tombstone over them, in one transaction. Returns how many it purged.
fn purge(db: &mut Db, signer: &Signer, connection: &str, before: i64) -> rusqlite::Result<u64> {
    let tx = db.transaction()?;
    let sessions: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT id FROM sessions WHERE connection = ?1 AND ended_at IS NOT NULL AND ended_at < ?2",
        )?;
        let rows = stmt.query_map(params![connection, before], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let id: i64 = tx.query_row(
        "SELECT COALESCE(MAX(id), 0) + 1 FROM audit_tombstones",
        [],
        |r| r.get(0),
    )?;
    let audit_err =
        |err: tollgate_audit::AuditError| rusqlite::Error::ToSqlConversionFailure(Box::new(err));
    let mut vouched: Vec<(u64, Vec<u8>)> = Vec::new();
    for session in &sessions {
        let runs: Vec<(i64, Vec<u8>)> = {
            let mut stmt =
                tx.prepare_cached("SELECT first_gseq, body FROM audit_runs WHERE session = ?1")?;
            let rows = stmt.query_map(params![session], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (first, body) in runs {
            let stored = tollgate_audit::split_run(&body).map_err(audit_err)?;
            if stored.iter().all(|s| s.purged.is_some()) {
                continue;
            }
            let mut rebuilt = Vec::with_capacity(body.len() / 2);
            for s in stored {
                match s.purged {
                    Some(_) => rebuilt.extend_from_slice(s.bytes),
                    None => {
                        let prev = match s.record.gseq.checked_sub(1) {
                            Some(before) => hash_at(&tx, before)?.ok_or_else(|| {
                                rusqlite::Error::ToSqlConversionFailure(
                                    format!("record {before} is missing; nothing purged").into(),
                                )
                            })?,
                            None => tollgate_audit::GENESIS,
                        };
                        let start = rebuilt.len();
                        tollgate_audit::encode_purged(&s.record, id as u64, &prev, &mut rebuilt)
                            .map_err(audit_err)?;
                        let mut entry = rebuilt[start..].to_vec();
                        entry.extend_from_slice(&s.hash);
                        vouched.push((s.record.gseq, entry));
                    }
                }
                rebuilt.extend_from_slice(&s.hash);
            }
            tx.execute(
                "UPDATE audit_runs SET body = ?2 WHERE first_gseq = ?1",
                params![first, rebuilt],
            )?;
        }
    }
    if vouched.is_empty() {
        return Ok(0);
    }
    vouched.sort_by_key(|v| v.0);
    let t = signer.tombstone(id as u64, &vouched, tollgate_core::now_micros());
    tx.execute(
        "INSERT INTO audit_tombstones (id, first_gseq, last_gseq, count, digest, at, key_id, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            t.id as i64,
            t.first as i64,
            t.last as i64,
            t.count as i64,
            &t.digest[..],
            t.at,
            t.key_id,
            t.signature
        ],
    )?;
    tx.commit()?;
    // Old versions of the rewritten pages also live in the write-ahead log until a checkpoint
    // copies the new ones over them; do it now and empty the log.
    let _ = db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    Ok(vouched.len() as u64)
}

/// The stored hash of record `gseq`.
fn hash_at(tx: &rusqlite::Transaction<'_>, gseq: u64) -> rusqlite::Result<Option<Hash>> {
    let mut stmt = tx.prepare_cached(
        "SELECT body FROM audit_runs WHERE first_gseq <= ?1 AND first_gseq >= ?2 AND last_gseq >= ?1",
    )?;
    let lowest = gseq.saturating_sub(writer::BATCH as u64);
    let bodies = stmt
        .query_map(params![gseq as i64, lowest as i64], |r| {
            r.get::<_, Vec<u8>>(0)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for body in bodies {
        if let Ok(stored) = tollgate_audit::split_run(&body)
            && let Some(s) = stored.iter().find(|s| s.record.gseq == gseq)
        {
            return Ok(Some(s.hash));
        }
    }
    Ok(None)
}

/// Serializes a unit enum to its serde name (`postgres`, `native`, …).
fn enum_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
