//! Key material kept in the data dir: the Ed25519 signing key, the TLS certificate and the
//! masking pseudonym key, generated on first start with mode 0600.
//!
//! With a master key configured (`[encryption]`), the private files (`signing.key`, retired
//! signing keys, `tls.key`, `masking.key`) are kept sealed: each in its own envelope under a
//! fresh data key, wrapped by the master key and stored in the same file:
//!
//! ```text
//! tollgate-sealed v1
//! master-key <id of the master key that wraps the data key>
//! data-key <id of the data key, 32 hex characters>
//! wrapped <base64 of the wrapped data key: nonce ‖ AES-256-GCM ciphertext ‖ tag>
//! envelope <base64 of the TGS1 envelope of the file's plain content>
//! ```
//!
//! The envelope's associated data is the first line, `tollgate-sealed v1`. A plain file is sealed
//! in place the first time it is read with a master key (a new file renamed over the old one),
//! and a file sealed under the previous master key is sealed again under the current one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::Ed25519KeyPair;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tollgate_audit::seal::{DataKey, MasterKey, Opener, SealError, Sealer, WrappedKey};

use crate::GatewayError;
use crate::config::{Encryption, TlsSection};

fn io_err(path: &Path, e: std::io::Error) -> GatewayError {
    GatewayError::DataDir(format!("{}: {e}", path.display()))
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), GatewayError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    f.write_all(bytes).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

/// Replaces a file atomically with one readable only by its owner: writes `.<name>.tmp` beside
/// it, syncs it, renames it over the file and syncs the directory.
fn replace_private(path: &Path, bytes: &[u8]) -> Result<(), GatewayError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp, e)),
    }
    write_private(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// First line of a sealed file; also the associated data of its envelope.
pub const SEALED_HEADER: &str = "tollgate-sealed v1";

/// Whether these bytes are a sealed file.
pub fn is_sealed_file(bytes: &[u8]) -> bool {
    bytes.starts_with(SEALED_HEADER.as_bytes()) && bytes.get(SEALED_HEADER.len()) == Some(&b'\n')
}

/// A sealed file: the wrapped data key and the envelope of the content.
struct SealedFile {
    wrapped: WrappedKey,
    envelope: Vec<u8>,
}

impl SealedFile {
    /// Seals `plain` under a fresh data key wrapped by `master`.
    fn seal(plain: &[u8], master: &MasterKey) -> Result<Self, GatewayError> {
        let crypto = |e: tollgate_audit::AuditError| GatewayError::Crypto(e.to_string());
        let mut sealer = Sealer::new(DataKey::generate().map_err(crypto)?);
        let mut envelope = Vec::new();
        sealer
            .seal(plain, SEALED_HEADER.as_bytes(), &mut envelope)
            .map_err(crypto)?;
        Ok(Self {
            wrapped: sealer.data_key().wrap(master).map_err(crypto)?,
            envelope,
        })
    }

    fn encode(&self) -> Vec<u8> {
        format!(
            "{SEALED_HEADER}\nmaster-key {}\ndata-key {}\nwrapped {}\nenvelope {}\n",
            self.wrapped.kek_id,
            self.wrapped.id,
            B64.encode(&self.wrapped.bytes),
            B64.encode(&self.envelope)
        )
        .into_bytes()
    }

    /// Reads the format; the error says what is wrong, for a message naming the file.
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some(SEALED_HEADER) {
            return Err(format!("the first line is not {SEALED_HEADER:?}"));
        }
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::trim)
                .ok_or_else(|| format!("expected a {name:?} line"))
        };
        let kek_id = field("master-key")?.to_string();
        let id = field("data-key")?.to_string();
        let wrapped = B64
            .decode(field("wrapped")?)
            .map_err(|_| "the wrapped key is not base64".to_string())?;
        let envelope = B64
            .decode(field("envelope")?)
            .map_err(|_| "the envelope is not base64".to_string())?;
        match tollgate_audit::seal::envelope_key_id(&envelope) {
            Ok(named) if named == id => {}
            Ok(_) => return Err("the envelope names another data key".into()),
            Err(e) => return Err(e.to_string()),
        }
        Ok(Self {
            wrapped: WrappedKey {
                id,
                kek_id,
                bytes: wrapped,
            },
            envelope,
        })
    }

    /// The plain content, with the data key unwrapped by one of `keys`.
    fn open(&self, keys: &[MasterKey]) -> Result<Vec<u8>, tollgate_audit::AuditError> {
        let key = self.wrapped.unwrap(keys)?;
        Opener::with_keys([key]).open(&self.envelope, SEALED_HEADER.as_bytes())
    }
}

/// The settings that name a master key, for messages.
const MASTER_KEY_SETTING: &str = "encryption.master_key_env or encryption.master_key_file";

/// Opens a sealed file's bytes with `keys`; errors name the file and the setting to set.
fn unseal(path: &Path, bytes: &[u8], keys: Option<&[MasterKey]>) -> Result<Vec<u8>, GatewayError> {
    let file = SealedFile::parse(bytes).map_err(|why| {
        GatewayError::Crypto(format!(
            "{} is not a readable sealed file: {why}",
            path.display()
        ))
    })?;
    let Some(keys) = keys else {
        return Err(GatewayError::Crypto(format!(
            "{} is sealed under master key {}, but no master key is configured: set {MASTER_KEY_SETTING} in the config's [encryption] section",
            path.display(),
            file.wrapped.kek_id
        )));
    };
    file.open(keys).map_err(|e| match e {
        tollgate_audit::AuditError::Seal(SealError::UnknownMasterKey { kek_id, known, .. }) => {
            GatewayError::Crypto(format!(
                "{} is sealed under master key {kek_id}, which is not the configured one ({known}): set {MASTER_KEY_SETTING} to the key it was sealed with (or, during a rotation, encryption.previous_master_key_env or encryption.previous_master_key_file)",
                path.display()
            ))
        }
        e => GatewayError::Crypto(format!("{}: cannot unseal: {e}", path.display())),
    })
}

/// Reads a private file of the data dir. With a master key, a sealed file is unsealed (and
/// sealed again under the current key if an older one wrapped it) and a plain file is sealed in
/// place; without one, a sealed file is an error naming the file and the setting to set.
pub fn read_private(path: &Path, encryption: Option<&Encryption>) -> Result<Vec<u8>, GatewayError> {
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    if !is_sealed_file(&bytes) {
        if let Some(enc) = encryption {
            replace_private(path, &SealedFile::seal(&bytes, enc.current())?.encode())?;
            tracing::info!(file = %path.display(), master_key = %enc.current().id(), "sealed a plain file under the master key");
        }
        return Ok(bytes);
    }
    let plain = unseal(path, &bytes, encryption.map(Encryption::all))?;
    if let Some(enc) = encryption
        && SealedFile::parse(&bytes)
            .map(|f| f.wrapped.kek_id != enc.current().id())
            .unwrap_or(false)
    {
        replace_private(path, &SealedFile::seal(&plain, enc.current())?.encode())?;
        tracing::info!(file = %path.display(), master_key = %enc.current().id(), "sealed a file again under the current master key");
    }
    Ok(plain)
}

/// Creates a private file of the data dir (0600): sealed under the current master key when
/// there is one.
pub fn create_private(
    path: &Path,
    plain: &[u8],
    encryption: Option<&Encryption>,
) -> Result<(), GatewayError> {
    match encryption {
        Some(enc) => write_private(path, &SealedFile::seal(plain, enc.current())?.encode()),
        None => write_private(path, plain),
    }
}

/// Creates the data dir (0700) if needed.
pub fn ensure_data_dir(dir: &Path) -> Result<(), GatewayError> {
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io_err(dir, e))
}

/// The gateway's Ed25519 signing key (PKCS#8 in `signing.key`), which signs the audit log's
/// checkpoints; generated on first start (sealed when a master key is configured).
pub fn signing_key(
    dir: &Path,
    encryption: Option<&Encryption>,
) -> Result<tollgate_audit::Signer, GatewayError> {
    let path = dir.join("signing.key");
    if !path.exists() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| GatewayError::Crypto("cannot generate the signing key".into()))?;
        create_private(&path, pkcs8.as_ref(), encryption)?;
    }
    let bytes = read_private(&path, encryption)?;
    tollgate_audit::Signer::from_pkcs8(&bytes).map_err(|_| {
        GatewayError::Crypto(format!("{} is not an Ed25519 PKCS#8 key", path.display()))
    })
}

/// Writes `signing.pub`: one `key_id hex_public_key` line per key that ever signed this log
/// (the current one last), for auditors to pin.
pub fn write_public_keys(dir: &Path, keys: &[(String, Vec<u8>)]) -> Result<(), GatewayError> {
    let public = dir.join("signing.pub");
    let text: String = keys
        .iter()
        .map(|(id, key)| format!("{id} {}\n", hex::encode(key)))
        .collect();
    if fs::read_to_string(&public).ok().as_deref() != Some(text.as_str()) {
        fs::write(&public, &text).map_err(|e| io_err(&public, e))?;
    }
    Ok(())
}

/// Retires the signing key (kept as `signing-<key id>.retired.key`) and generates a new one,
/// which the gateway uses from its next start. Returns (old id, new id). A sealed key needs the
/// master key.
pub fn rotate_signing_key(
    dir: &Path,
    encryption: Option<&Encryption>,
) -> Result<(String, String), GatewayError> {
    let path = dir.join("signing.key");
    if !path.exists() {
        return Err(GatewayError::Invalid(format!(
            "{} does not exist: there is no key to rotate",
            path.display()
        )));
    }
    let old = signing_key(dir, encryption)?;
    let retired = dir.join(format!("signing-{}.retired.key", old.key_id()));
    fs::rename(&path, &retired).map_err(|e| io_err(&retired, e))?;
    let new = signing_key(dir, encryption)?;
    Ok((old.key_id().to_string(), new.key_id().to_string()))
}

/// The masking pseudonym key kept in the data dir (`masking.key`, 32 random bytes), generated
/// on first start; used when `[masking]` names no key of its own.
pub fn pseudonym_key(dir: &Path, encryption: Option<&Encryption>) -> Result<Vec<u8>, GatewayError> {
    let path = dir.join("masking.key");
    if !path.exists() {
        let mut raw = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| GatewayError::Crypto("cannot generate the pseudonym key".into()))?;
        create_private(&path, &raw, encryption)?;
    }
    read_private(&path, encryption)
}

/// The SSH front's host key file in the data dir.
pub const SSH_HOST_KEY: &str = "ssh_host_ed25519.key";

/// The SSH front's Ed25519 host key (OpenSSH format in `ssh_host_ed25519.key`), generated on
/// first start (sealed when a master key is configured); `ssh_host_ed25519.pub` holds its public
/// half for clients to pin.
pub fn ssh_host_key(
    dir: &Path,
    encryption: Option<&Encryption>,
) -> Result<tollgate_ssh::HostKey, GatewayError> {
    let path = dir.join(SSH_HOST_KEY);
    if !path.exists() {
        let key =
            tollgate_ssh::generate_host_key().map_err(|e| GatewayError::Crypto(e.to_string()))?;
        create_private(&path, &key, encryption)?;
    }
    let bytes = read_private(&path, encryption)?;
    let key = tollgate_ssh::parse_host_key(&bytes)
        .map_err(|e| GatewayError::Crypto(format!("{}: {e}", path.display())))?;
    let public = dir.join("ssh_host_ed25519.pub");
    let line = format!("{}\n", tollgate_ssh::public_line(&key));
    if fs::read_to_string(&public).ok().as_deref() != Some(line.as_str()) {
        fs::write(&public, &line).map_err(|e| io_err(&public, e))?;
    }
    Ok(key)
}

/// The private files of a data dir that are kept sealed under a master key: the signing key,
/// retired signing keys, the generated TLS key and the pseudonym key (those that exist).
pub fn private_files(dir: &Path) -> Result<Vec<PathBuf>, GatewayError> {
    let mut files: Vec<PathBuf> = ["signing.key", "tls.key", "masking.key", SSH_HOST_KEY]
        .iter()
        .map(|name| dir.join(name))
        .filter(|p| p.is_file())
        .collect();
    let mut retired = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("signing-") && name.ends_with(".retired.key") && entry.path().is_file()
        {
            retired.push(entry.path());
        }
    }
    retired.sort();
    files.extend(retired);
    Ok(files)
}

/// What a master key rotation did.
#[derive(Debug, Clone, Default)]
pub struct RotateReport {
    /// The id of the master key everything is now sealed under.
    pub master_key_id: String,
    /// Files that were sealed (under the old key or already under the new one) and are now
    /// sealed under the new key, each with a fresh data key.
    pub resealed: Vec<PathBuf>,
    /// Plain files sealed for the first time.
    pub sealed: Vec<PathBuf>,
    /// Data keys of the audit log (`audit_data_keys` in `tollgate.db`) re-wrapped under the new
    /// key; the records they sealed are untouched.
    pub rewrapped_data_keys: usize,
}

/// Master key rotation of a data dir, with the gateway stopped: every private file
/// ([`private_files`]) is opened with the old keys (or `new` itself) and sealed again under
/// `new` with a fresh data key; plain files are sealed. Every data key of the audit log is
/// re-wrapped under `new` in one transaction ([`tollgate_store::rewrap_data_keys`]): the
/// records, sealed or not, and their hashes are not touched.
///
/// The files are opened first, then the data keys are re-wrapped (all or nothing), then the
/// files are written, each replaced atomically: a file or a data key that no given key opens
/// leaves the data dir as it was. Should writing a file fail after that, running the rotation
/// again with the same keys finishes it.
pub fn rotate_master_key(
    dir: &Path,
    old: &[MasterKey],
    new: &MasterKey,
) -> Result<RotateReport, GatewayError> {
    if !dir.is_dir() {
        return Err(GatewayError::Invalid(format!(
            "{} is not a data dir",
            dir.display()
        )));
    }
    let keys: Vec<MasterKey> = std::iter::once(new.clone())
        .chain(old.iter().cloned())
        .collect();
    let mut opened = Vec::new();
    for path in private_files(dir)? {
        let bytes = fs::read(&path).map_err(|e| io_err(&path, e))?;
        let was_sealed = is_sealed_file(&bytes);
        let plain = if was_sealed {
            unseal(&path, &bytes, Some(&keys))?
        } else {
            bytes
        };
        opened.push((path, plain, was_sealed));
    }
    let db = dir.join("tollgate.db");
    let rewrapped_data_keys = if db.is_file() {
        tollgate_store::rewrap_data_keys(&db, old, new)?
    } else {
        0
    };
    let mut report = RotateReport {
        master_key_id: new.id(),
        rewrapped_data_keys,
        ..RotateReport::default()
    };
    for (path, plain, was_sealed) in opened {
        replace_private(&path, &SealedFile::seal(&plain, new)?.encode())?;
        if was_sealed {
            report.resealed.push(path);
        } else {
            report.sealed.push(path);
        }
    }
    Ok(report)
}

/// The TLS server configuration: from `[tls]` files, or a self-signed certificate generated in
/// the data dir (`tls.crt`, `tls.key`). The generated `tls.key` is sealed when a master key is configured; files named in `[tls]` are read as
/// they are.
pub fn tls_config(
    dir: &Path,
    tls: &TlsSection,
    encryption: Option<&Encryption>,
) -> Result<Arc<rustls::ServerConfig>, GatewayError> {
    let (cert_path, key_path, ours) = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), false),
        _ => {
            let cert_path = dir.join("tls.crt");
            let key_path = dir.join("tls.key");
            if !cert_path.exists() || !key_path.exists() {
                let generated = rcgen::generate_simple_self_signed(vec![
                    "localhost".to_string(),
                    "127.0.0.1".to_string(),
                    "::1".to_string(),
                ])
                .map_err(|e| {
                    GatewayError::Crypto(format!("cannot generate a TLS certificate: {e}"))
                })?;
                let _ = fs::remove_file(&cert_path);
                let _ = fs::remove_file(&key_path);
                create_private(
                    &key_path,
                    generated.signing_key.serialize_pem().as_bytes(),
                    encryption,
                )?;
                write_private(&cert_path, generated.cert.pem().as_bytes())?;
            }
            (cert_path, key_path, true)
        }
    };
    let certs: Vec<CertificateDer<'static>> = {
        let pem = fs::read(&cert_path).map_err(|e| io_err(&cert_path, e))?;
        rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| io_err(&cert_path, e))?
    };
    if certs.is_empty() {
        return Err(GatewayError::Crypto(format!(
            "{} holds no certificate",
            cert_path.display()
        )));
    }
    let key: PrivateKeyDer<'static> = {
        let pem = if ours {
            read_private(&key_path, encryption)?
        } else {
            fs::read(&key_path).map_err(|e| io_err(&key_path, e))?
        };
        rustls_pemfile::private_key(&mut pem.as_slice())
            .map_err(|e| io_err(&key_path, e))?
            .ok_or_else(|| {
                GatewayError::Crypto(format!("{} holds no private key", key_path.display()))
            })?
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| GatewayError::Crypto(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| GatewayError::Crypto(format!("{}: {e}", cert_path.display())))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "tollgate-material-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            ensure_data_dir(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn enc(current: &MasterKey, previous: Option<&MasterKey>) -> Encryption {
        Encryption::new(current.clone(), previous.cloned())
    }

    fn kek_of(path: &Path) -> String {
        let bytes = fs::read(path).unwrap();
        assert!(is_sealed_file(&bytes), "{} is not sealed", path.display());
        SealedFile::parse(&bytes).unwrap().wrapped.kek_id
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn err_of<T>(r: Result<T, GatewayError>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_plain_file_is_sealed_in_place_and_reads_back() {
        let dir = TempDir::new();
        let path = dir.0.join("masking.key");
        let secret = b"0123456789abcdef-secret-bytes-32".to_vec();
        write_private(&path, &secret).unwrap();
        // Without a master key: read as it is, left as it is.
        assert_eq!(read_private(&path, None).unwrap(), secret);
        assert_eq!(fs::read(&path).unwrap(), secret);

        let master = MasterKey::generate().unwrap();
        let e = enc(&master, None);
        assert_eq!(read_private(&path, Some(&e)).unwrap(), secret);
        let on_disk = fs::read(&path).unwrap();
        assert!(on_disk.starts_with(b"tollgate-sealed v1\nmaster-key "));
        assert!(!contains(&on_disk, &secret));
        assert_eq!(kek_of(&path), master.id());
        assert_eq!(mode(&path), 0o600);
        assert!(!dir.0.join(".masking.key.tmp").exists());
        // Read again: same content, the file is not rewritten.
        assert_eq!(read_private(&path, Some(&e)).unwrap(), secret);
        assert_eq!(fs::read(&path).unwrap(), on_disk);
    }

    #[test]
    fn a_sealed_file_without_or_with_the_wrong_master_key_is_a_clear_error() {
        let dir = TempDir::new();
        let master = MasterKey::generate().unwrap();
        let signer = signing_key(&dir.0, Some(&enc(&master, None))).unwrap();
        let path = dir.0.join("signing.key");
        assert_eq!(kek_of(&path), master.id());

        let m = err_of(signing_key(&dir.0, None));
        assert!(
            m.contains("signing.key")
                && m.contains(&master.id())
                && m.contains("no master key is configured")
                && m.contains("encryption.master_key_env"),
            "{m}"
        );
        let other = MasterKey::generate().unwrap();
        let m = err_of(signing_key(&dir.0, Some(&enc(&other, None))));
        assert!(
            m.contains("signing.key")
                && m.contains(&master.id())
                && m.contains(&other.id())
                && m.contains("encryption.master_key_env"),
            "{m}"
        );
        // Nothing was changed by the failures.
        let again = signing_key(&dir.0, Some(&enc(&master, None))).unwrap();
        assert_eq!(again.key_id(), signer.key_id());

        // An altered sealed file names the file.
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        fs::write(&path, &bytes).unwrap();
        let m = err_of(signing_key(&dir.0, Some(&enc(&master, None))));
        assert!(m.contains("signing.key"), "{m}");
        fs::write(&path, "tollgate-sealed v1\nnonsense\n").unwrap();
        let m = err_of(signing_key(&dir.0, Some(&enc(&master, None))));
        assert!(
            m.contains("signing.key") && m.contains("not a readable sealed file"),
            "{m}"
        );
    }

    #[test]
    fn generated_material_is_sealed_and_works() {
        let dir = TempDir::new();
        let master = MasterKey::generate().unwrap();
        let e = enc(&master, None);
        let signer = signing_key(&dir.0, Some(&e)).unwrap();
        tls_config(&dir.0, &TlsSection::default(), Some(&e)).unwrap();
        let pseudonym = pseudonym_key(&dir.0, Some(&e)).unwrap();
        assert_eq!(pseudonym.len(), 32);
        for name in ["signing.key", "tls.key", "masking.key"] {
            let path = dir.0.join(name);
            assert_eq!(kek_of(&path), master.id(), "{name}");
            assert_eq!(mode(&path), 0o600, "{name}");
        }
        let tls_key = fs::read(dir.0.join("tls.key")).unwrap();
        assert!(!contains(&tls_key, b"PRIVATE KEY"));
        let masking = fs::read(dir.0.join("masking.key")).unwrap();
        assert!(!contains(&masking, &pseudonym));
        // The certificate is public and stays plain.
        assert!(contains(
            &fs::read(dir.0.join("tls.crt")).unwrap(),
            b"CERTIFICATE"
        ));
        // Read back on the next start: same keys.
        assert_eq!(
            signing_key(&dir.0, Some(&e)).unwrap().key_id(),
            signer.key_id()
        );
        assert_eq!(pseudonym_key(&dir.0, Some(&e)).unwrap(), pseudonym);
        tls_config(&dir.0, &TlsSection::default(), Some(&e)).unwrap();
        assert!(tls_config(&dir.0, &TlsSection::default(), None).is_err());
        // Rotating the signing key keeps the retired one sealed and seals the new one.
        let (old, new) = rotate_signing_key(&dir.0, Some(&e)).unwrap();
        assert_eq!(old, signer.key_id());
        assert_ne!(old, new);
        assert_eq!(
            kek_of(&dir.0.join(format!("signing-{old}.retired.key"))),
            master.id()
        );
        assert_eq!(kek_of(&dir.0.join("signing.key")), master.id());
        assert!(rotate_signing_key(&dir.0, None).is_err());
    }

    #[test]
    fn the_previous_master_key_opens_and_the_file_moves_to_the_current_one() {
        let dir = TempDir::new();
        let old = MasterKey::generate().unwrap();
        let new = MasterKey::generate().unwrap();
        let pseudonym = pseudonym_key(&dir.0, Some(&enc(&old, None))).unwrap();
        let path = dir.0.join("masking.key");
        assert_eq!(kek_of(&path), old.id());
        assert_eq!(
            pseudonym_key(&dir.0, Some(&enc(&new, Some(&old)))).unwrap(),
            pseudonym
        );
        assert_eq!(kek_of(&path), new.id());
        assert_eq!(
            pseudonym_key(&dir.0, Some(&enc(&new, None))).unwrap(),
            pseudonym
        );
        assert!(pseudonym_key(&dir.0, Some(&enc(&old, None))).is_err());
    }

    #[test]
    fn rotation_reseals_every_private_file_under_the_new_key() {
        let dir = TempDir::new();
        let old = MasterKey::generate().unwrap();
        let new = MasterKey::generate().unwrap();
        let e = enc(&old, None);
        let signer = signing_key(&dir.0, Some(&e)).unwrap();
        tls_config(&dir.0, &TlsSection::default(), Some(&e)).unwrap();
        let (retired, current) = rotate_signing_key(&dir.0, Some(&e)).unwrap();
        assert_eq!(retired, signer.key_id());
        // A plain file among them (e.g. written before encryption was configured).
        let pseudonym = b"a pseudonym key of 32 bytes, ok!".to_vec();
        write_private(&dir.0.join("masking.key"), &pseudonym).unwrap();
        let before: Vec<(PathBuf, Vec<u8>)> = private_files(&dir.0)
            .unwrap()
            .into_iter()
            .map(|p| {
                let b = fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        assert_eq!(before.len(), 4);

        // Without the old key nothing opens, and nothing is written.
        let m = rotate_master_key(&dir.0, &[], &new)
            .unwrap_err()
            .to_string();
        assert!(m.contains(&old.id()), "{m}");
        for (p, b) in &before {
            assert_eq!(&fs::read(p).unwrap(), b, "{} changed", p.display());
        }

        let report = rotate_master_key(&dir.0, std::slice::from_ref(&old), &new).unwrap();
        assert_eq!(report.master_key_id, new.id());
        assert_eq!(report.resealed.len(), 3, "{report:?}");
        assert_eq!(report.sealed, [dir.0.join("masking.key")]);
        for (p, _) in &before {
            assert_eq!(kek_of(p), new.id(), "{}", p.display());
            assert_eq!(mode(p), 0o600);
        }
        let only_new = enc(&new, None);
        assert_eq!(
            signing_key(&dir.0, Some(&only_new)).unwrap().key_id(),
            current
        );
        assert_eq!(pseudonym_key(&dir.0, Some(&only_new)).unwrap(), pseudonym);
        tls_config(&dir.0, &TlsSection::default(), Some(&only_new)).unwrap();
        err_of(signing_key(&dir.0, Some(&enc(&old, None))));
        // Again, with the new key alone: everything is already under it.
        let report = rotate_master_key(&dir.0, &[], &new).unwrap();
        assert_eq!((report.resealed.len(), report.sealed.len()), (4, 0));
        assert!(rotate_master_key(&dir.0.join("nowhere"), &[], &new).is_err());
    }

    #[test]
    fn rotation_rewraps_the_audit_logs_data_keys_and_leaves_its_records_alone() {
        use tollgate_core::Recorder;
        let dir = TempDir::new();
        let old = MasterKey::generate().unwrap();
        let new = MasterKey::generate().unwrap();
        let signer = signing_key(&dir.0, Some(&enc(&old, None))).unwrap();
        let db = dir.0.join("tollgate.db");
        let sealed = |key: &MasterKey| {
            tollgate_store::Store::open_sealed(
                &db,
                Some(tollgate_store::Sealing::new(key.clone(), [])),
            )
            .unwrap()
        };
        let store = sealed(&old);
        let writer = store.event_writer(signer).unwrap();
        writer.record(tollgate_core::Event {
            session: "s".into(),
            seq: 0,
            at: 1,
            kind: tollgate_core::EventKind::SessionEnd {
                reason: "sealed-reason".into(),
            },
        });
        writer.flush().unwrap();
        writer.close();
        let runs = tollgate_store::read_audit(&db).unwrap().runs;
        assert!(!contains(&runs[0].3, b"sealed-reason"));

        let report = rotate_master_key(&dir.0, std::slice::from_ref(&old), &new).unwrap();
        assert_eq!(report.rewrapped_data_keys, 1);
        assert_eq!(report.resealed, [dir.0.join("signing.key")]);
        let keys = store.data_keys().unwrap();
        assert!(keys.iter().all(|k| k.kek_id == new.id()), "{keys:?}");
        assert_eq!(tollgate_store::read_audit(&db).unwrap().runs, runs);
        assert_eq!(sealed(&new).events("s").unwrap().len(), 1);
        assert!(sealed(&old).events("s").is_err());
        // A data dir without a database has no data keys to re-wrap.
        let empty = TempDir::new();
        let report = rotate_master_key(&empty.0, &[], &new).unwrap();
        assert_eq!(report.rewrapped_data_keys, 0);
        assert!(!empty.0.join("tollgate.db").exists());
    }
}
