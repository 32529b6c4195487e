//! Envelope encryption at rest (AES-256-GCM, `ring`).
//!
//! A [`MasterKey`] (from the environment or a file, never stored by Tollgate) wraps
//! [`DataKey`]s; a data key seals the data. Only wrapped data keys ([`WrappedKey`]) are ever
//! persisted, so rotating the master key re-wraps data keys and never re-encrypts data.
//!
//! A [`Sealer`] holds one fresh data key and numbers its nonces from 0, so a (key, nonce) pair
//! never repeats without a random draw or a system call per message; it refuses to seal more than
//! [`MAX_MESSAGES`] messages. An [`Opener`] holds any number of data keys and opens envelopes:
//!
//! `TGS1 ‖ data key id (16 bytes) ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`
//!
//! The associated data is not stored: whoever seals binds the envelope to its context with it,
//! and whoever opens must give the same.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::digest::{Context, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use crate::AuditError;

/// The result of this module's operations.
pub type Result<T, E = AuditError> = std::result::Result<T, E>;

/// Magic and version of an envelope.
pub const MAGIC: &[u8; 4] = b"TGS1";
/// Bytes of a data key id.
pub const KEY_ID_LEN: usize = 16;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of an authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes of an envelope's header: magic, data key id, nonce.
pub const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;
/// Bytes an envelope adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The most messages one data key seals.
pub const MAX_MESSAGES: u64 = 1 << 32;

/// Bytes of a key (AES-256).
const KEY_LEN: usize = 32;
/// Bytes of a wrapped data key: nonce, encrypted key, tag.
const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;
/// Hashed before a master key to make its id.
const MASTER_ID_LABEL: &[u8] = b"tollgate master key id v1\0";
/// Associated data of a wrapped data key, followed by the data key's id.
const WRAP_LABEL: &[u8] = b"tollgate data key v1\0";

/// Errors of sealing and opening.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A master key could not be read; the message never holds the value.
    #[error("{0}")]
    MasterKey(String),
    /// A wrapped data key names a master key that was not given.
    #[error(
        "data key {data_key} is wrapped by master key {kek_id}, which is not among the master keys given ({known})"
    )]
    UnknownMasterKey {
        /// The data key's id.
        data_key: String,
        /// The id of the master key that wrapped it.
        kek_id: String,
        /// The ids of the master keys given, comma-separated.
        known: String,
    },
    /// An envelope names a data key the opener does not hold.
    #[error("unknown data key {0}")]
    UnknownDataKey(String),
    /// The tag does not match: wrong key, wrong associated data, or altered bytes.
    #[error("authentication failed: wrong key, wrong associated data, or altered bytes")]
    Authentication,
    /// Bytes that are not an envelope or a wrapped key.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The sealer's data key has sealed [`MAX_MESSAGES`] messages.
    #[error(
        "this data key has sealed 2^32 messages, the most it may: start a new data key (a new Sealer)"
    )]
    Exhausted,
    /// The system's random generator failed.
    #[error("the system random generator failed")]
    Random,
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| SealError::Random)?;
    Ok(out)
}

fn aead_key(bytes: &[u8; KEY_LEN]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Malformed("not an AES-256 key".into()).into())
}

/// A 32-byte key-encryption key. It wraps data keys and is never stored by Tollgate; its id
/// ([`MasterKey::id`]) is, beside what it wrapped.
#[derive(Clone)]
pub struct MasterKey {
    key: LessSafeKey,
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    /// A master key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<Self> {
        let mut ctx = Context::new(&SHA256);
        ctx.update(MASTER_ID_LABEL);
        ctx.update(&bytes);
        let id = hex::encode(&ctx.finish().as_ref()[..8]);
        Ok(Self {
            key: aead_key(&bytes)?,
            id,
        })
    }

    /// A new random master key.
    pub fn generate() -> Result<Self> {
        Self::from_bytes(random()?)
    }

    /// Parses a master key written as 64 hex characters or as standard (padded) base64 of 32
    /// bytes; surrounding whitespace is ignored. The error says what was expected, never the
    /// value.
    pub fn parse(text: &str) -> Result<Self> {
        Self::from_bytes(parse_key_text(text).map_err(SealError::MasterKey)?)
    }

    /// Reads a master key from the environment variable `var` (see [`MasterKey::parse`]).
    pub fn from_env(var: &str) -> Result<Self> {
        let text = std::env::var(var).map_err(|e| {
            SealError::MasterKey(match e {
                std::env::VarError::NotPresent => format!("environment variable {var} is not set"),
                std::env::VarError::NotUnicode(_) => {
                    format!("environment variable {var} is not valid UTF-8")
                }
            })
        })?;
        let bytes = parse_key_text(&text).map_err(|why| {
            SealError::MasterKey(format!(
                "environment variable {var} does not hold a master key: {why}"
            ))
        })?;
        Self::from_bytes(bytes)
    }

    /// Reads a master key from a file (see [`MasterKey::parse`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| SealError::MasterKey(format!("cannot read {}: {e}", path.display())))?;
        let bytes = parse_key_text(&text).map_err(|why| {
            SealError::MasterKey(format!(
                "{} does not hold a master key: {why}",
                path.display()
            ))
        })?;
        Self::from_bytes(bytes)
    }

    /// A short stable id: hex of the first 8 bytes of SHA-256 over a fixed label and the key.
    pub fn id(&self) -> String {
        self.id.clone()
    }
}

/// The 32 bytes of a key written as hex or base64; the error never holds the text.
fn parse_key_text(text: &str) -> std::result::Result<[u8; KEY_LEN], String> {
    const EXPECTED: &str = "expected 64 hex characters or standard base64 of 32 bytes";
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("the value is empty ({EXPECTED})"));
    }
    let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| format!("{EXPECTED}: the hex does not decode"))?
    } else {
        B64.decode(text).map_err(|_| {
            format!(
                "{EXPECTED}, got {} characters that are neither",
                text.chars().count()
            )
        })?
    };
    <[u8; KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{EXPECTED}, got base64 of {} bytes", bytes.len()))
}

/// A random AES-256 key with a random 16-byte id. It is only ever stored wrapped
/// ([`DataKey::wrap`]).
#[derive(Clone)]
pub struct DataKey {
    id: [u8; KEY_ID_LEN],
    id_hex: String,
    bytes: [u8; KEY_LEN],
    key: LessSafeKey,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey").field("id", &self.id_hex).finish()
    }
}

impl DataKey {
    /// A new random data key with a new random id.
    pub fn generate() -> Result<Self> {
        Self::from_parts(random()?, random()?)
    }

    fn from_parts(id: [u8; KEY_ID_LEN], bytes: [u8; KEY_LEN]) -> Result<Self> {
        Ok(Self {
            id,
            id_hex: hex::encode(id),
            key: aead_key(&bytes)?,
            bytes,
        })
    }

    /// The id (32 hex characters), as envelopes and wrapped keys name it.
    pub fn id(&self) -> &str {
        &self.id_hex
    }

    /// The key encrypted under `master` (random nonce, AES-256-GCM, the data key's id as
    /// associated data).
    pub fn wrap(&self, master: &MasterKey) -> Result<WrappedKey> {
        let nonce: [u8; NONCE_LEN] = random()?;
        let mut bytes = Vec::with_capacity(WRAPPED_LEN);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&self.bytes);
        let tag = master
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(wrap_aad(&self.id)),
                &mut bytes[NONCE_LEN..],
            )
            .map_err(|_| SealError::Authentication)?;
        bytes.extend_from_slice(tag.as_ref());
        Ok(WrappedKey {
            id: self.id_hex.clone(),
            kek_id: master.id(),
            bytes,
        })
    }
}

fn wrap_aad(id: &[u8; KEY_ID_LEN]) -> [u8; WRAP_LABEL.len() + KEY_ID_LEN] {
    let mut aad = [0u8; WRAP_LABEL.len() + KEY_ID_LEN];
    aad[..WRAP_LABEL.len()].copy_from_slice(WRAP_LABEL);
    aad[WRAP_LABEL.len()..].copy_from_slice(id);
    aad
}

/// A data key encrypted under a master key: plain data, as stored (in a table, a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The data key's id (32 hex characters).
    pub id: String,
    /// The id of the master key that wrapped it ([`MasterKey::id`]).
    pub kek_id: String,
    /// Nonce (12 bytes) ‖ AES-256-GCM ciphertext of the key (32 bytes) ‖ tag (16 bytes).
    pub bytes: Vec<u8>,
}

impl WrappedKey {
    /// The data key, decrypted with the master key among `keys` whose id is `kek_id`.
    pub fn unwrap(&self, keys: &[MasterKey]) -> Result<DataKey> {
        let master = keys.iter().find(|k| k.id == self.kek_id).ok_or_else(|| {
            SealError::UnknownMasterKey {
                data_key: self.id.clone(),
                kek_id: self.kek_id.clone(),
                known: if keys.is_empty() {
                    "none".into()
                } else {
                    keys.iter()
                        .map(|k| k.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            }
        })?;
        self.unwrap_with(master)
    }

    fn unwrap_with(&self, master: &MasterKey) -> Result<DataKey> {
        let id = <[u8; KEY_ID_LEN]>::try_from(
            hex::decode(&self.id)
                .map_err(|_| SealError::Malformed("a data key id is not hex".into()))?
                .as_slice(),
        )
        .map_err(|_| SealError::Malformed("a data key id is not 16 bytes".into()))?;
        if self.bytes.len() != WRAPPED_LEN {
            return Err(SealError::Malformed(format!(
                "a wrapped data key has {WRAPPED_LEN} bytes, not {}",
                self.bytes.len()
            ))
            .into());
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&self.bytes[..NONCE_LEN]);
        let mut sealed = [0u8; KEY_LEN + TAG_LEN];
        sealed.copy_from_slice(&self.bytes[NONCE_LEN..]);
        let plain = master
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(wrap_aad(&id)),
                &mut sealed,
            )
            .map_err(|_| SealError::Authentication)?;
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(plain);
        DataKey::from_parts(id, bytes)
    }

    /// The same data key wrapped under `new`, for master key rotation: it is unwrapped with the
    /// key among `old` (or `new` itself) whose id is `kek_id`. What the data key sealed is left
    /// as it is.
    pub fn rewrap(&self, old: &[MasterKey], new: &MasterKey) -> Result<WrappedKey> {
        let key = if self.kek_id == new.id {
            self.unwrap_with(new)?
        } else {
            self.unwrap(old)?
        };
        key.wrap(new)
    }
}

/// Seals messages under one data key, numbering nonces from 0.
///
/// Unique nonces without randomness: a data key is fresh for each sealer and never stored
/// unwrapped, so no other sealer ever uses it, and the counter never repeats a value.
pub struct Sealer {
    key: DataKey,
    next: u64,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("key", &self.key)
            .field("sealed", &self.next)
            .finish()
    }
}

impl Sealer {
    /// A sealer for `key`, which must be fresh (never given to another sealer): nonces start at
    /// 0.
    pub fn new(key: DataKey) -> Self {
        Self { key, next: 0 }
    }

    /// The data key (to wrap it, or to give an [`Opener`] a copy).
    pub fn data_key(&self) -> &DataKey {
        &self.key
    }

    /// How many messages this sealer has sealed.
    pub fn sealed(&self) -> u64 {
        self.next
    }

    /// Appends the envelope of `plaintext` to `out`: `TGS1 ‖ data key id ‖ nonce ‖ ciphertext ‖
    /// tag`, with `aad` authenticated but not stored. Refuses once [`MAX_MESSAGES`] messages are
    /// sealed (start a new data key). Allocates nothing beyond the growth of `out`.
    pub fn seal(&mut self, plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.next >= MAX_MESSAGES {
            return Err(SealError::Exhausted.into());
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce[NONCE_LEN - 8..].copy_from_slice(&self.next.to_be_bytes());
        // Spent even if sealing fails below, so a nonce is never used twice.
        self.next += 1;
        let start = out.len();
        out.reserve(OVERHEAD + plaintext.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.key.id);
        out.extend_from_slice(&nonce);
        let body = out.len();
        out.extend_from_slice(plaintext);
        match self.key.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[body..],
        ) {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                Ok(())
            }
            Err(_) => {
                out.truncate(start);
                Err(SealError::Malformed("the message is too long to seal".into()).into())
            }
        }
    }
}

/// Whether `bytes` is an envelope (starts with `TGS1`; plain audit payloads are JSON and start
/// with `{`).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// The data key id an envelope names (to find which wrapped key to unwrap).
pub fn envelope_key_id(envelope: &[u8]) -> Result<String> {
    let (id, _, _) = split_envelope(envelope)?;
    Ok(hex::encode(id))
}

fn split_envelope(envelope: &[u8]) -> Result<([u8; KEY_ID_LEN], [u8; NONCE_LEN], &[u8])> {
    if !is_sealed(envelope) {
        return Err(SealError::Malformed("it does not start with TGS1".into()).into());
    }
    if envelope.len() < OVERHEAD {
        return Err(SealError::Malformed(format!(
            "{} bytes, fewer than the {OVERHEAD} of an empty message",
            envelope.len()
        ))
        .into());
    }
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&envelope[MAGIC.len()..MAGIC.len() + KEY_ID_LEN]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&envelope[MAGIC.len() + KEY_ID_LEN..HEADER_LEN]);
    Ok((id, nonce, &envelope[HEADER_LEN..]))
}

/// Opens envelopes sealed under any of the data keys it holds.
#[derive(Debug, Default, Clone)]
pub struct Opener {
    keys: HashMap<[u8; KEY_ID_LEN], DataKey>,
}

impl Opener {
    /// An opener with no keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// An opener holding `keys`.
    pub fn with_keys(keys: impl IntoIterator<Item = DataKey>) -> Self {
        let mut opener = Self::new();
        for key in keys {
            opener.insert(key);
        }
        opener
    }

    /// Adds a data key (replacing one with the same id).
    pub fn insert(&mut self, key: DataKey) {
        self.keys.insert(key.id, key);
    }

    /// Whether it holds the data key with this id (hex).
    pub fn contains(&self, id: &str) -> bool {
        self.keys.values().any(|k| k.id_hex == id)
    }

    /// How many data keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds no data key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The plaintext of `envelope`, checked against `aad`. Errors: an unknown data key (named),
    /// a failed authentication (wrong key or associated data, altered bytes), a malformed
    /// envelope.
    pub fn open(&self, envelope: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let (id, nonce, body) = split_envelope(envelope)?;
        let key = self
            .keys
            .get(&id)
            .ok_or_else(|| SealError::UnknownDataKey(hex::encode(id)))?;
        let mut buf = body.to_vec();
        let len = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| SealError::Authentication)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn seal_one(plain: &[u8], aad: &[u8]) -> (Sealer, Vec<u8>) {
        let mut sealer = Sealer::new(DataKey::generate().unwrap());
        let mut out = Vec::new();
        sealer.seal(plain, aad, &mut out).unwrap();
        (sealer, out)
    }

    fn seal_err(e: AuditError) -> SealError {
        match e {
            AuditError::Seal(s) => s,
            other => panic!("not a seal error: {other}"),
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let plain = br#"{"type":"command","text":"SELECT 1"}"#;
        let (sealer, env) = seal_one(plain, b"session-1/0");
        assert!(is_sealed(&env));
        assert!(!is_sealed(plain));
        assert_eq!(env.len(), plain.len() + OVERHEAD);
        assert_eq!(&env[..4], b"TGS1");
        assert_eq!(hex::encode(&env[4..20]), sealer.data_key().id());
        assert_eq!(&env[20..32], &[0u8; 12], "the first nonce is 0");
        assert!(!env.windows(plain.len()).any(|w| w == plain));
        assert_eq!(envelope_key_id(&env).unwrap(), sealer.data_key().id());
        let opener = Opener::with_keys([sealer.data_key().clone()]);
        assert_eq!(opener.open(&env, b"session-1/0").unwrap(), plain);
        // Empty plaintext, and appending after what `out` already holds.
        let mut sealer = sealer;
        let mut out = b"prefix".to_vec();
        sealer.seal(b"", b"", &mut out).unwrap();
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(opener.open(&out[6..], b"").unwrap(), b"");
        assert_eq!(&out[6 + 20..6 + 32], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(sealer.sealed(), 2);
    }

    #[test]
    fn wrong_aad_fails_authentication() {
        let (sealer, env) = seal_one(b"secret", b"session-1/0");
        let opener = Opener::with_keys([sealer.data_key().clone()]);
        let e = seal_err(opener.open(&env, b"session-1/1").unwrap_err());
        assert!(matches!(e, SealError::Authentication), "{e}");
    }

    #[test]
    fn a_flipped_byte_in_any_part_is_refused() {
        let plain = b"the quick brown fox";
        let (sealer, env) = seal_one(plain, b"aad");
        let opener = Opener::with_keys([sealer.data_key().clone()]);
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x01;
            let e = seal_err(opener.open(&bad, b"aad").unwrap_err());
            match i {
                0..4 => assert!(matches!(e, SealError::Malformed(_)), "magic {i}: {e}"),
                4..20 => assert!(
                    matches!(&e, SealError::UnknownDataKey(id) if *id == hex::encode(&bad[4..20])),
                    "key id {i}: {e}"
                ),
                _ => assert!(
                    matches!(e, SealError::Authentication),
                    "nonce, ciphertext or tag {i}: {e}"
                ),
            }
        }
        // Truncated: malformed below the overhead, otherwise an authentication failure.
        let e = seal_err(opener.open(&env[..OVERHEAD - 1], b"aad").unwrap_err());
        assert!(matches!(e, SealError::Malformed(_)), "{e}");
        let e = seal_err(opener.open(&env[..env.len() - 1], b"aad").unwrap_err());
        assert!(matches!(e, SealError::Authentication), "{e}");
    }

    #[test]
    fn an_unknown_data_key_is_named() {
        let (sealer, env) = seal_one(b"x", b"");
        let other = Opener::with_keys([DataKey::generate().unwrap()]);
        let e = seal_err(other.open(&env, b"").unwrap_err());
        assert!(matches!(e, SealError::UnknownDataKey(_)));
        assert!(e.to_string().contains(sealer.data_key().id()), "{e}");
        assert!(Opener::new().open(&env, b"").is_err());
    }

    #[test]
    fn wrap_and_unwrap_need_the_right_master_key() {
        let master = MasterKey::generate().unwrap();
        let other = MasterKey::generate().unwrap();
        assert_ne!(master.id(), other.id());
        assert_eq!(master.id().len(), 16);
        let key = DataKey::generate().unwrap();
        let wrapped = key.wrap(&master).unwrap();
        assert_eq!(wrapped.id, key.id());
        assert_eq!(wrapped.kek_id, master.id());
        assert_eq!(wrapped.bytes.len(), 60);

        let back = wrapped.unwrap(&[other.clone(), master.clone()]).unwrap();
        assert_eq!(back.id(), key.id());
        let mut sealer = Sealer::new(key);
        let mut env = Vec::new();
        sealer.seal(b"payload", b"a", &mut env).unwrap();
        assert_eq!(
            Opener::with_keys([back]).open(&env, b"a").unwrap(),
            b"payload"
        );

        // Not among the keys given: named, with the ids that were given.
        let e = seal_err(wrapped.unwrap(std::slice::from_ref(&other)).unwrap_err());
        let m = e.to_string();
        assert!(m.contains(&master.id()) && m.contains(&other.id()), "{m}");
        // A different key under the right id (forged kek_id), a flipped byte, a swapped id.
        let forged = WrappedKey {
            kek_id: other.id(),
            ..wrapped.clone()
        };
        let e = seal_err(forged.unwrap(std::slice::from_ref(&other)).unwrap_err());
        assert!(matches!(e, SealError::Authentication), "{e}");
        for i in 0..wrapped.bytes.len() {
            let mut bad = wrapped.clone();
            bad.bytes[i] ^= 0x80;
            assert!(bad.unwrap(std::slice::from_ref(&master)).is_err(), "{i}");
        }
        let swapped = WrappedKey {
            id: DataKey::generate().unwrap().id().to_string(),
            ..wrapped.clone()
        };
        let e = seal_err(swapped.unwrap(std::slice::from_ref(&master)).unwrap_err());
        assert!(matches!(e, SealError::Authentication), "{e}");
        let short = WrappedKey {
            bytes: wrapped.bytes[..59].to_vec(),
            ..wrapped
        };
        let e = seal_err(short.unwrap(std::slice::from_ref(&master)).unwrap_err());
        assert!(matches!(e, SealError::Malformed(_)), "{e}");
    }

    #[test]
    fn rewrap_then_unwrap_with_the_new_key_only() {
        let old = MasterKey::generate().unwrap();
        let new = MasterKey::generate().unwrap();
        let mut sealer = Sealer::new(DataKey::generate().unwrap());
        let mut env = Vec::new();
        sealer
            .seal(b"recorded before rotation", b"r", &mut env)
            .unwrap();
        let wrapped = sealer.data_key().wrap(&old).unwrap();

        let rewrapped = wrapped.rewrap(std::slice::from_ref(&old), &new).unwrap();
        assert_eq!(rewrapped.id, wrapped.id);
        assert_eq!(rewrapped.kek_id, new.id());
        assert_ne!(rewrapped.bytes, wrapped.bytes);
        let key = rewrapped.unwrap(std::slice::from_ref(&new)).unwrap();
        assert_eq!(
            Opener::with_keys([key]).open(&env, b"r").unwrap(),
            b"recorded before rotation"
        );
        assert!(rewrapped.unwrap(std::slice::from_ref(&old)).is_err());
        // Rewrapping what the new key already wraps needs no old key.
        let again = rewrapped.rewrap(&[], &new).unwrap();
        assert!(again.unwrap(std::slice::from_ref(&new)).is_ok());
        // Without the old key, nothing to rewrap with.
        let e = seal_err(wrapped.rewrap(&[], &new).unwrap_err());
        assert!(matches!(e, SealError::UnknownMasterKey { .. }), "{e}");
    }

    #[test]
    fn nonces_are_unique_across_many_seals() {
        let mut sealer = Sealer::new(DataKey::generate().unwrap());
        let opener = Opener::with_keys([sealer.data_key().clone()]);
        let mut nonces = HashSet::new();
        let mut out = Vec::new();
        for i in 0..100_000u32 {
            out.clear();
            sealer.seal(&i.to_be_bytes(), b"", &mut out).unwrap();
            assert!(nonces.insert(out[20..32].to_vec()), "nonce repeated at {i}");
            if i % 10_000 == 0 {
                assert_eq!(opener.open(&out, b"").unwrap(), i.to_be_bytes());
            }
        }
        // Two sealers: different data keys, so the same nonce values never meet the same key.
        let (a, _) = seal_one(b"", b"");
        let (b, _) = seal_one(b"", b"");
        assert_ne!(a.data_key().id(), b.data_key().id());
    }

    #[test]
    fn sealing_stops_at_the_message_limit() {
        let mut sealer = Sealer::new(DataKey::generate().unwrap());
        sealer.next = MAX_MESSAGES - 1;
        let mut out = Vec::new();
        sealer.seal(b"last", b"", &mut out).unwrap();
        let len = out.len();
        let e = seal_err(sealer.seal(b"one too many", b"", &mut out).unwrap_err());
        assert!(matches!(e, SealError::Exhausted));
        assert!(e.to_string().contains("new data key"), "{e}");
        assert_eq!(out.len(), len, "nothing appended");
    }

    #[test]
    fn master_keys_parse_from_hex_and_base64_and_errors_never_echo_them() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        let expected = MasterKey::from_bytes(bytes).unwrap().id();
        let hex_text = hex::encode(bytes);
        let b64_text = B64.encode(bytes);
        assert_eq!(MasterKey::parse(&hex_text).unwrap().id(), expected);
        assert_eq!(
            MasterKey::parse(&hex_text.to_uppercase()).unwrap().id(),
            expected
        );
        assert_eq!(
            MasterKey::parse(&format!("  {b64_text}\n")).unwrap().id(),
            expected
        );
        assert_eq!(
            MasterKey::parse(&format!("\t{hex_text}\r\n")).unwrap().id(),
            expected
        );
        // The id is stable and not the key's own hash prefix.
        assert_eq!(expected, MasterKey::from_bytes(bytes).unwrap().id());
        assert!(!hex_text.starts_with(&expected));

        let short_hex = &hex_text[..62];
        let b64_31 = B64.encode(&bytes[..31]);
        let b64_33 = B64.encode([bytes.as_slice(), &[1]].concat());
        let unpadded = b64_text.trim_end_matches('=').to_string();
        let garbage = "correct horse battery staple!!";
        for bad in [
            short_hex, &b64_31, &b64_33, &unpadded, garbage, "", "   ", "zz",
        ] {
            let m = match MasterKey::parse(bad) {
                Ok(_) => panic!("{bad:?} parsed"),
                Err(e) => e.to_string(),
            };
            assert!(m.contains("expected 64 hex characters"), "{m}");
            if !bad.trim().is_empty() {
                assert!(!m.contains(bad.trim()), "the value is echoed: {m}");
            }
        }
        // Debug shows the id only.
        let key = MasterKey::from_bytes(bytes).unwrap();
        let shown = format!("{key:?}");
        assert!(
            shown.contains(&expected) && !shown.contains(&hex_text[..16]),
            "{shown}"
        );
        let data = DataKey::generate().unwrap();
        assert_eq!(
            format!("{data:?}"),
            format!("DataKey {{ id: {:?} }}", data.id())
        );
    }

    #[test]
    fn master_keys_from_env_and_file() {
        let bytes = [7u8; 32];
        let var = format!("TOLLGATE_SEAL_TEST_{}", std::process::id());
        // SAFETY of the process environment: this variable is only used by this test.
        unsafe { std::env::set_var(&var, hex::encode(bytes)) };
        let id = MasterKey::from_bytes(bytes).unwrap().id();
        assert_eq!(MasterKey::from_env(&var).unwrap().id(), id);
        unsafe { std::env::set_var(&var, "not-a-key-at-all") };
        let m = MasterKey::from_env(&var).unwrap_err().to_string();
        assert!(m.contains(&var) && !m.contains("not-a-key-at-all"), "{m}");
        unsafe { std::env::remove_var(&var) };
        let m = MasterKey::from_env(&var).unwrap_err().to_string();
        assert!(m.contains(&var) && m.contains("is not set"), "{m}");

        let dir = std::env::temp_dir().join(format!("tollgate-seal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        std::fs::write(&path, format!("{}\n", B64.encode(bytes))).unwrap();
        assert_eq!(MasterKey::from_file(&path).unwrap().id(), id);
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        let m = MasterKey::from_file(&path).unwrap_err().to_string();
        assert!(
            m.contains("master.key") && !m.contains("0123456789abcdef"),
            "{m}"
        );
        let m = MasterKey::from_file(dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(m.contains("cannot read") && m.contains("missing"), "{m}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
