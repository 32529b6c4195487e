//! Key material kept in the data dir: the Ed25519 signing key and the TLS certificate, generated
//! on first start with mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use ring::signature::Ed25519KeyPair;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::GatewayError;
use crate::config::TlsSection;

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

/// Creates the data dir (0700) if needed.
pub fn ensure_data_dir(dir: &Path) -> Result<(), GatewayError> {
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io_err(dir, e))
}

/// The gateway's Ed25519 signing key (PKCS#8 in `signing.key`), which signs the audit log's
/// checkpoints; generated on first start.
pub fn signing_key(dir: &Path) -> Result<tollgate_audit::Signer, GatewayError> {
    let path = dir.join("signing.key");
    if !path.exists() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| GatewayError::Crypto("cannot generate the signing key".into()))?;
        write_private(&path, pkcs8.as_ref())?;
    }
    let bytes = fs::read(&path).map_err(|e| io_err(&path, e))?;
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
/// which the gateway uses from its next start. Returns (old id, new id).
pub fn rotate_signing_key(dir: &Path) -> Result<(String, String), GatewayError> {
    let path = dir.join("signing.key");
    if !path.exists() {
        return Err(GatewayError::Invalid(format!(
            "{} does not exist: there is no key to rotate",
            path.display()
        )));
    }
    let old = signing_key(dir)?;
    let retired = dir.join(format!("signing-{}.retired.key", old.key_id()));
    fs::rename(&path, &retired).map_err(|e| io_err(&retired, e))?;
    let new = signing_key(dir)?;
    Ok((old.key_id().to_string(), new.key_id().to_string()))
}

/// The TLS server configuration: from `[tls]` files, or a self-signed certificate generated in
/// the data dir (`tls.crt`, `tls.key`).
pub fn tls_config(dir: &Path, tls: &TlsSection) -> Result<Arc<rustls::ServerConfig>, GatewayError> {
    let (cert_path, key_path) = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
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
                write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())?;
                write_private(&cert_path, generated.cert.pem().as_bytes())?;
            }
            (cert_path, key_path)
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
        let pem = fs::read(&key_path).map_err(|e| io_err(&key_path, e))?;
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
