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

/// Verifies an exported bundle file.
pub fn verify_bundle(bundle: &Path, key_file: Option<&Path>) -> Result<Verification, GatewayError> {
    let text = std::fs::read_to_string(bundle)
        .map_err(|e| GatewayError::Invalid(format!("cannot read {}: {e}", bundle.display())))?;
    let bundle = tollgate_audit::Bundle::from_json(&text)
        .map_err(|e| GatewayError::Invalid(format!("{}: {e}", bundle.display())))?;
    let pinned = match key_file {
        Some(path) => Some(read_keys(path)?),
        None => None,
    };
    Ok(Verification {
        report: bundle.verify(pinned.as_ref()),
        pinned: pinned.is_some(),
    })
}

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only the span of this session's records.
    pub session: Option<String>,
    /// Records at or after this time (microseconds since the epoch).
    pub since: Option<i64>,
    /// Records at or before this time.
    pub until: Option<i64>,
}

/// Cuts a verifiable bundle out of the log in `data_dir`: the records from the first to the
/// last selected one (records of other sessions in between included, as the chain needs them),
/// extended to the next checkpoint. Refuses a log that does not verify.
pub fn export(
    data_dir: &Path,
    selection: &Selection,
) -> Result<tollgate_audit::Bundle, GatewayError> {
    let material = tollgate_store::read_audit(&data_dir.join("tollgate.db"))?;
    let report = material.verify(None);
    if let Some(bad) = &report.first_bad {
        return Err(GatewayError::Invalid(format!(
            "the log does not verify (first bad record: gseq {}: {}); nothing exported",
            bad.gseq, bad.reason
        )));
    }
    let mut records: Vec<(u64, i64, String, Vec<u8>)> = Vec::new();
    let mut covers: std::collections::HashMap<u64, Vec<(u64, Vec<u8>)>> =
        std::collections::HashMap::new();
    for (_, _, _, body) in &material.runs {
        for s in tollgate_audit::split_run(body)
            .map_err(|e| GatewayError::Invalid(format!("unreadable run: {e}")))?
        {
            if let Some(t) = s.purged {
                covers
                    .entry(t)
                    .or_default()
                    .push((s.record.gseq, s.entry()));
            }
            let mut bytes = s.bytes.to_vec();
            bytes.extend_from_slice(&s.hash);
            records.push((
                s.record.gseq,
                s.record.at,
                s.record.session.to_string(),
                bytes,
            ));
        }
    }
    records.sort_by_key(|r| r.0);
    let chosen: Vec<u64> = records
        .iter()
        .filter(|(_, at, session, _)| {
            selection.session.as_ref().is_none_or(|s| s == session)
                && selection.since.is_none_or(|t| *at >= t)
                && selection.until.is_none_or(|t| *at <= t)
        })
        .map(|r| r.0)
        .collect();
    let (Some(&first), Some(&last)) = (chosen.first(), chosen.last()) else {
        return Err(GatewayError::Invalid(
            "no record matches the selection; nothing exported".into(),
        ));
    };
    let all: Vec<Vec<u8>> = records.into_iter().map(|r| r.3).collect();
    let tombstones: Vec<tollgate_audit::Tombstone> = material
        .tombstones
        .iter()
        .map(|t| {
            let mut t = t.clone();
            let mut c = covers.remove(&t.id).unwrap_or_default();
            c.sort_by_key(|e| e.0);
            t.covers = Some(c);
            t
        })
        .collect();
    Ok(tollgate_audit::Bundle::cut(
        &all,
        &material.checkpoints,
        &tombstones,
        &material.keys,
        first,
        last,
    ))
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
