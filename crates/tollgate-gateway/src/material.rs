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
/// checkpoints. Its public key is also written to `signing.pub` as `key_id hex` for auditors to
/// pin.
pub fn signing_key(dir: &Path) -> Result<tollgate_audit::Signer, GatewayError> {
    let path = dir.join("signing.key");
    if !path.exists() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| GatewayError::Crypto("cannot generate the signing key".into()))?;
        write_private(&path, pkcs8.as_ref())?;
    }
    let bytes = fs::read(&path).map_err(|e| io_err(&path, e))?;
    let signer = tollgate_audit::Signer::from_pkcs8(&bytes).map_err(|_| {
        GatewayError::Crypto(format!("{} is not an Ed25519 PKCS#8 key", path.display()))
    })?;
    let public = dir.join("signing.pub");
    let line = format!("{} {}\n", signer.key_id(), hex::encode(signer.public_key()));
    if fs::read_to_string(&public).ok().as_deref() != Some(line.as_str()) {
        fs::write(&public, &line).map_err(|e| io_err(&public, e))?;
    }
    Ok(signer)
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
