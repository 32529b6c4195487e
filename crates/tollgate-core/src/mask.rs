//! The masking seam: protocol crates ask a [`Masker`] how to treat a caller's results and pass
//! each value through the [`SessionMask`] it returns. The detectors live in `tollgate-mask`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Identity;

/// How the values of one result column are masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnMask {
    /// Values are scanned by the detectors; only what they find is masked.
    Scan,
    /// Every value is masked whole by the column rule with this index.
    Rule(u32),
}

/// A `[schema.]table.column` named by a column rule, for the protocol to resolve to its own ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableColumn {
    /// Schema, when the rule names one (otherwise the target's search path decides).
    pub schema: Option<String>,
    /// Table (or view) name.
    pub table: String,
    /// Column name; `*` means every column of the table.
    pub column: String,
}

/// Counts of what masking changed during one command, indexed like
/// [`SessionMask::counter_names`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskTally(Vec<u64>);

impl MaskTally {
    /// Adds one to counter `index`.
    pub fn bump(&mut self, index: usize) {
        if self.0.len() <= index {
            self.0.resize(index + 1, 0);
        }
        self.0[index] += 1;
    }
    /// Adds another tally's counts to this one, leaving the other empty.
    pub fn add(&mut self, other: &mut MaskTally) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (i, n) in other.0.drain(..).enumerate() {
            self.0[i] += n;
        }
    }
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&n| n == 0)
    }
    /// Moves the counts out, named, leaving the tally empty.
    pub fn take_named(&mut self, names: &[String]) -> BTreeMap<String, u64> {
        let mut named = BTreeMap::new();
        for (i, n) in self.0.drain(..).enumerate() {
            if n > 0 {
                let name = names.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
                *named.entry(name).or_insert(0) += n;
            }
        }
        named
    }
}

/// The masking that applies to one session.
pub trait SessionMask: Send + Sync {
    /// Columns named by `table.column` rules, for the protocol to resolve.
    fn table_columns(&self) -> &[TableColumn];
    /// How to treat a result column called `name`; `table_column` is the index in
    /// [`Self::table_columns`] of the rule entry naming its source column, when it has one.
    fn column(&self, name: &str, table_column: Option<usize>) -> ColumnMask;
    /// Masks one value. When something changes, the masked value is appended to `out` and the
    /// call returns true; otherwise `out` is left alone and the value goes out as it is.
    fn mask(&self, how: ColumnMask, value: &[u8], out: &mut Vec<u8>, tally: &mut MaskTally)
    -> bool;
    /// Names of the counters in a [`MaskTally`] (rule and detector names).
    fn counter_names(&self) -> &[String];
}

/// What a caller gets on a connection.
#[derive(Clone)]
pub enum MaskDecision {
    /// Results are masked.
    Masked(Arc<dyn SessionMask>),
    /// The caller sees clear values, for this recorded reason.
    Clear(String),
}

/// Decides the masking for each session. Implemented by the gateway.
pub trait Masker: Send + Sync {
    /// The masking for `identity` on `connection`.
    fn session(&self, identity: &Identity, connection: &str) -> MaskDecision;
}

/// A masker that never masks (masking off).
pub struct NoMasking;

impl Masker for NoMasking {
    fn session(&self, _: &Identity, _: &str) -> MaskDecision {
        MaskDecision::Clear("masking is off".into())
    }
}
