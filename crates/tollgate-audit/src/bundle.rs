//! Exported bundles: a self-contained, verifiable segment of the log (records, the hash before
//! them, the checkpoints over them and the public keys), as one JSON document.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::{
    AuditError, Checkpoint, GENESIS, Hash, Report, Run, Tombstone, split_run, verify_from,
};

/// The `format` value of a bundle.
pub const BUNDLE_FORMAT: &str = "tollgate-audit-bundle";

/// A segment of the log: records `first..=last` in gseq order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// gseq of the first record.
    pub first: u64,
    /// Hash of the record before the first (zeros when the segment starts the log).
    pub prev_hash: Hash,
    /// Each record followed by its hash, in gseq order.
    pub records: Vec<Vec<u8>>,
    /// Checkpoints over the segment.
    pub checkpoints: Vec<Checkpoint>,
    /// Tombstones its purged records name, each with what it covers.
    pub tombstones: Vec<Tombstone>,
    /// Public keys by key id.
    pub keys: HashMap<String, Vec<u8>>,
}

impl Bundle {
    /// The bundle as a JSON document.
    pub fn to_json(&self) -> String {
        let checkpoints: Vec<Value> = self
            .checkpoints
            .iter()
            .map(|c| {
                json!({
                    "gseq": c.gseq,
                    "at": c.at,
                    "head": hex::encode(c.head),
                    "key_id": c.key_id,
                    "signature": hex::encode(&c.signature),
                })
            })
            .collect();
        let tombstones: Vec<Value> = self
            .tombstones
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "first_gseq": t.first,
                    "last_gseq": t.last,
                    "count": t.count,
                    "digest": hex::encode(t.digest),
                    "at": t.at,
                    "key_id": t.key_id,
                    "signature": hex::encode(&t.signature),
                    "covers": t.covers.as_deref().unwrap_or_default().iter()
                        .map(|(_, entry)| B64.encode(entry))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        let keys: serde_json::Map<String, Value> = self
            .keys
            .iter()
            .map(|(id, k)| (id.clone(), Value::String(hex::encode(k))))
            .collect();
        json!({
            "format": BUNDLE_FORMAT,
            "version": 1,
            "first_gseq": self.first,
            "prev_hash": hex::encode(self.prev_hash),
            "records": self.records.iter().map(|r| B64.encode(r)).collect::<Vec<_>>(),
            "checkpoints": checkpoints,
            "tombstones": tombstones,
            "keys": keys,
        })
        .to_string()
    }

    /// Reads a bundle document.
    pub fn from_json(text: &str) -> Result<Self, AuditError> {
        let bad = |what: &str| AuditError::Malformed(format!("bundle: {what}"));
        let v: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        if v["format"] != BUNDLE_FORMAT || v["version"] != 1 {
            return Err(bad("not a version 1 tollgate audit bundle"));
        }
        let hash = |v: &Value, what: &str| -> Result<Hash, AuditError> {
            v.as_str()
                .and_then(|s| hex::decode(s).ok())
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad(what))
        };
        let first = v["first_gseq"].as_u64().ok_or_else(|| bad("first_gseq"))?;
        let prev_hash = hash(&v["prev_hash"], "prev_hash")?;
        let records = v["records"]
            .as_array()
            .ok_or_else(|| bad("records"))?
            .iter()
            .map(|r| {
                r.as_str()
                    .and_then(|s| B64.decode(s).ok())
                    .ok_or_else(|| bad("a record is not base64"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let checkpoints = v["checkpoints"]
            .as_array()
            .ok_or_else(|| bad("checkpoints"))?
            .iter()
            .map(|c| {
                Ok(Checkpoint {
                    gseq: c["gseq"].as_u64().ok_or_else(|| bad("checkpoint gseq"))?,
                    at: c["at"].as_i64().ok_or_else(|| bad("checkpoint at"))?,
                    head: hash(&c["head"], "checkpoint head")?,
                    key_id: c["key_id"]
                        .as_str()
                        .ok_or_else(|| bad("checkpoint key_id"))?
                        .to_string(),
                    signature: c["signature"]
                        .as_str()
                        .and_then(|s| hex::decode(s).ok())
                        .ok_or_else(|| bad("checkpoint signature"))?,
                })
            })
            .collect::<Result<Vec<_>, AuditError>>()?;
        let empty = Vec::new();
        let tombstones = v["tombstones"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|t| {
                let covers = t["covers"]
                    .as_array()
                    .ok_or_else(|| bad("tombstone covers"))?
                    .iter()
                    .map(|c| {
                        let entry = c
                            .as_str()
                            .and_then(|s| B64.decode(s).ok())
                            .ok_or_else(|| bad("a covers entry is not base64"))?;
                        let gseq = split_run(&entry)
                            .ok()
                            .and_then(|s| {
                                s.first()
                                    .filter(|s| s.purged.is_some())
                                    .map(|s| s.record.gseq)
                            })
                            .ok_or_else(|| {
                                bad("a covers entry is not a purged record and its hash")
                            })?;
                        Ok((gseq, entry))
                    })
                    .collect::<Result<Vec<_>, AuditError>>()?;
                Ok(Tombstone {
                    id: t["id"].as_u64().ok_or_else(|| bad("tombstone id"))?,
                    first: t["first_gseq"]
                        .as_u64()
                        .ok_or_else(|| bad("tombstone first_gseq"))?,
                    last: t["last_gseq"]
                        .as_u64()
                        .ok_or_else(|| bad("tombstone last_gseq"))?,
                    count: t["count"].as_u64().ok_or_else(|| bad("tombstone count"))?,
                    digest: hash(&t["digest"], "tombstone digest")?,
                    at: t["at"].as_i64().ok_or_else(|| bad("tombstone at"))?,
                    key_id: t["key_id"]
                        .as_str()
                        .ok_or_else(|| bad("tombstone key_id"))?
                        .to_string(),
                    signature: t["signature"]
                        .as_str()
                        .and_then(|s| hex::decode(s).ok())
                        .ok_or_else(|| bad("tombstone signature"))?,
                    covers: Some(covers),
                })
            })
            .collect::<Result<Vec<_>, AuditError>>()?;
        let keys = v["keys"]
            .as_object()
            .ok_or_else(|| bad("keys"))?
            .iter()
            .map(|(id, k)| {
                k.as_str()
                    .and_then(|s| hex::decode(s).ok())
                    .map(|k| (id.clone(), k))
                    .ok_or_else(|| bad("a key is not hex"))
            })
            .collect::<Result<HashMap<_, _>, _>>()?;
        Ok(Self {
            first,
            prev_hash,
            records,
            checkpoints,
            tombstones,
            keys,
        })
    }

    /// Verifies the segment; `pinned` keys, when given, replace the bundle's own.
    pub fn verify(&self, pinned: Option<&HashMap<String, Vec<u8>>>) -> Report {
        // Each record is its own run: the session and range come from the record itself.
        let mut runs = Vec::with_capacity(self.records.len());
        let mut unreadable = Vec::new();
        for (i, r) in self.records.iter().enumerate() {
            match split_run(r).ok().and_then(|s| s.first().map(|s| s.record)) {
                Some(rec) => runs.push(Run {
                    session: rec.session,
                    first_gseq: rec.gseq,
                    last_gseq: rec.gseq,
                    body: r,
                }),
                None => unreadable.push(i),
            }
        }
        let mut report = verify_from(
            self.first,
            self.prev_hash,
            &runs,
            &self.checkpoints,
            &self.tombstones,
            pinned.unwrap_or(&self.keys),
        );
        if let Some(&i) = unreadable.first() {
            let gseq = self.first.saturating_add(i as u64);
            if report.first_bad.as_ref().is_none_or(|b| b.gseq >= gseq) {
                report.first_bad = Some(crate::BadRecord {
                    gseq,
                    session: None,
                    seq: None,
                    reason: "unreadable record in the bundle".into(),
                });
            }
        }
        if report.first_bad.is_none() && report.checkpoints == 0 {
            report.first_bad = Some(crate::BadRecord {
                gseq: self.first,
                session: None,
                seq: None,
                reason: "the bundle carries no checkpoint over its records".into(),
            });
        }
        report
    }

    /// A bundle of records `first..=last` from the whole log (`records[gseq]` = record ‖ hash),
    /// extended to the first checkpoint at or after `last` so that its end is signed.
    /// Tombstones are given with their `covers` filled; those the segment's purged records name
    /// travel with it.
    pub fn cut(
        records: &[Vec<u8>],
        checkpoints: &[Checkpoint],
        tombstones: &[Tombstone],
        keys: &HashMap<String, Vec<u8>>,
        first: u64,
        last: u64,
    ) -> Self {
        let end = checkpoints
            .iter()
            .map(|c| c.gseq)
            .filter(|&g| g >= last && (g as usize) < records.len())
            .min()
            .unwrap_or(last);
        let prev_hash = first
            .checked_sub(1)
            .and_then(|p| records.get(p as usize))
            .and_then(|r| r.get(r.len().saturating_sub(32)..))
            .and_then(|h| h.try_into().ok())
            .unwrap_or(GENESIS);
        let records: Vec<Vec<u8>> = records
            .get(first as usize..=(end as usize).min(records.len().saturating_sub(1)))
            .map(<[Vec<u8>]>::to_vec)
            .unwrap_or_default();
        let checkpoints = checkpoints
            .iter()
            .filter(|c| c.gseq >= first && c.gseq <= end)
            .cloned()
            .collect();
        let named: std::collections::HashSet<u64> = records
            .iter()
            .filter_map(|r| split_run(r).ok())
            .flatten()
            .filter_map(|s| s.purged)
            .collect();
        let tombstones = tombstones
            .iter()
            .filter(|t| named.contains(&t.id))
            .cloned()
            .collect();
        Self {
            first,
            prev_hash,
            records,
            checkpoints,
            tombstones,
            keys: keys.clone(),
        }
    }
}
