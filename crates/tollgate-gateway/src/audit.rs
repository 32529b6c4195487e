//! Offline verification of the audit log (`tollgate audit verify`): reads the store without a
//! running gateway, with the public keys pinned from a file or, failing that, the stored ones.

use std::collections::HashMap;
use std::path::Path;

use tollgate_audit::Report;

use crate::GatewayError;

/// What `verify` found, and whether the keys were pinned.
pub struct Verification {
    /// The verification report.
    pub report: Report,
    /// Whether the keys came from a pinned key file rather than the store itself.
    pub pinned: bool,
}

/// Verifies the audit log in `data_dir`; `key_file` pins the public keys (a `signing.pub` file:
/// lines of `key_id hex_public_key`, or 32 raw bytes).
pub fn verify(data_dir: &Path, key_file: Option<&Path>) -> Result<Verification, GatewayError> {
    let db = data_dir.join("tollgate.db");
    let material = tollgate_store::read_audit(&db)?;
    let pinned = match key_file {
        Some(path) => Some(read_keys(path)?),
        None => None,
    };
    Ok(Verification {
        report: material.verify(pinned.as_ref()),
        pinned: pinned.is_some(),
    })
}

/// Reads a key file: `key_id hex` lines (`#` comments), or one raw 32-byte key.
pub fn read_keys(path: &Path) -> Result<HashMap<String, Vec<u8>>, GatewayError> {
    let bytes = std::fs::read(path)
        .map_err(|e| GatewayError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() == 32 && std::str::from_utf8(&bytes).is_err() {
        return Ok(HashMap::from([(tollgate_audit::key_id_of(&bytes), bytes)]));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        GatewayError::Invalid(format!(
            "{}: expected `key_id hex_public_key` lines or 32 raw bytes",
            path.display()
        ))
    })?;
    let mut keys = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            GatewayError::Invalid(format!(
                "{} line {}: expected `key_id hex_public_key`",
                path.display(),
                n + 1
            ))
        };
        let (id, hex_key) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
        let key = hex::decode(hex_key.trim()).map_err(|_| bad())?;
        if key.len() != 32 || tollgate_audit::key_id_of(&key) != id {
            return Err(GatewayError::Invalid(format!(
                "{} line {}: not a 32-byte Ed25519 key with id {id}",
                path.display(),
                n + 1
            )));
        }
        keys.insert(id.to_string(), key);
    }
    if keys.is_empty() {
        return Err(GatewayError::Invalid(format!(
            "{}: no key in the file",
            path.display()
        )));
    }
    Ok(keys)
}
