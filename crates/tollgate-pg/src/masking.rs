//! Masking on the PostgreSQL path: which result columns a session's rules cover, and the
//! rewriting of DataRow, CopyData, ErrorResponse, NoticeResponse and NotificationResponse
//! values before they reach the client. RowDescription is relayed unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tollgate_core::{ColumnMask, Command, MaskTally, SessionMask};

use crate::PgError;
use crate::codec::{self, Reader};

/// Scratch buffers larger than this are released after use.
const SCRATCH_KEEP: usize = 256 * 1024;

/// Upper bound of described statements and portals remembered per session.
const MAX_REMEMBERED: usize = 10_000;

/// What happens to one column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treat {
    /// Relayed as is (types that cannot hold text: numbers, times, booleans, uuids).
    Keep,
    /// Text (or text-equivalent binary): detectors run and findings are rewritten.
    Scan,
    /// A binary value of a structured type (array, composite, unknown): it cannot be rewritten
    /// in place, so a value in which a detector finds something goes out as NULL.
    ScanOrNull,
    /// Masked whole by a column rule, as text.
    Rule(u32),
    /// Masked whole by a column rule, but binary and not text: sent as NULL.
    Null(u32),
}

/// A column as a RowDescription names it.
#[derive(Debug, Clone, Copy)]
struct Described {
    how: ColumnMask,
    type_oid: u32,
}

/// Text-like types whose binary form is their text (jsonb: a version byte, then text).
fn binary_is_text(type_oid: u32) -> bool {
    matches!(
        type_oid,
        25 | 1043 | 1042 | 19 | 18 | 114 | 142 | 705 | 3802 | 17
    )
}

/// Types whose values cannot carry personal data or secrets.
fn cannot_hold_text(type_oid: u32) -> bool {
    matches!(
        type_oid,
        16 | 21 | 23 | 26 | 28 | 29 | 700 | 701 | 1082 | 1083 | 1114 | 1184 | 1186 | 1266 | 2950
    )
}

fn treat(d: Described, binary: bool) -> Treat {
    match (d.how, binary) {
        (ColumnMask::Rule(r), false) => Treat::Rule(r),
        (ColumnMask::Rule(r), true) if binary_is_text(d.type_oid) => Treat::Rule(r),
        (ColumnMask::Rule(r), true) => Treat::Null(r),
        (ColumnMask::Scan, _) if cannot_hold_text(d.type_oid) => Treat::Keep,
        (ColumnMask::Scan, true) if !binary_is_text(d.type_oid) => Treat::ScanOrNull,
        (ColumnMask::Scan, _) => Treat::Scan,
    }
}

/// How the client asked for an Execute's results.
#[derive(Debug, Clone)]
pub(crate) struct ExecuteFormats {
    /// The portal, with the generation of the Bind that created it.
    pub portal: (String, u64),
    /// The portal's statement, with the generation of the Parse that created it.
    pub statement: (String, u64),
    pub formats: Arc<[i16]>,
}

/// Which object a Describe asked about.
#[derive(Debug, Clone)]
pub(crate) enum DescribeTarget {
    /// A statement name and the generation of the Parse that created it.
    Statement(String, u64),
    /// A portal name and the generation of the Bind that created it.
    Portal(String, u64),
}

/// The session's masking state.
pub(crate) struct Masking {
    mask: Arc<dyn SessionMask>,
    /// (table oid, column number) → entry of `mask.table_columns()`; column 0 = whole table.
    sources: HashMap<(u32, i16), usize>,
    /// Columns of described statements by name, with the Parse generation they belong to
    /// (formats are chosen later, at Bind).
    statements: HashMap<String, (u64, Arc<[Described]>)>,
    /// Plans of described portals by name, with the Bind generation they belong to.
    portals: HashMap<String, (u64, Arc<[Treat]>)>,
    /// What each distinct RowDescription body works out to: repeated statements skip the
    /// column rules.
    described: HashMap<Box<[u8]>, DescribedResult>,
    /// The plan for the DataRows now arriving.
    current: Option<Arc<[Treat]>>,
    /// In COPY TO: whether its data is text (true) or binary (false).
    copy_out: Option<bool>,
    tally: MaskTally,
    scratch: Vec<u8>,
    value: Vec<u8>,
}

impl Masking {
    pub fn new(mask: Arc<dyn SessionMask>, sources: HashMap<(u32, i16), usize>) -> Self {
        Self {
            mask,
            sources,
            statements: HashMap::new(),
            portals: HashMap::new(),
            described: HashMap::new(),
            current: None,
            copy_out: None,
            tally: MaskTally::default(),
            scratch: Vec::new(),
            value: Vec::new(),
        }
    }

    /// What was masked since the last call, by rule or detector name.
    pub fn take_tally(&mut self) -> std::collections::BTreeMap<String, u64> {
        self.tally.take_named(self.mask.counter_names())
    }

    fn describe_columns(&self, body: &[u8]) -> Result<(Vec<Described>, Vec<bool>), PgError> {
        let mut r = Reader::new(body);
        let n = r.i16()?;
        let mut cols = Vec::with_capacity(n.max(0) as usize);
        let mut binary = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n.max(0) {
            let name = r.cstr()?;
            let table = r.i32()? as u32;
            let attnum = r.i16()?;
            let type_oid = r.i32()? as u32;
            r.i16()?; // type size
            r.i32()?; // type modifier
            let format = r.i16()?;
            let source = if table == 0 {
                None
            } else {
                self.sources
                    .get(&(table, attnum))
                    .or_else(|| self.sources.get(&(table, 0)))
                    .copied()
            };
            cols.push(Described {
                how: self.mask.column(name, source),
                type_oid,
            });
            binary.push(format == 1);
        }
        Ok((cols, binary))
    }

    /// The columns and plan of a RowDescription body, from the cache when seen before.
    fn described(&mut self, body: &[u8]) -> Result<DescribedResult, PgError> {
        if let Some(d) = self.described.get(body) {
            return Ok(d.clone());
        }
        let (cols, binary) = self.describe_columns(body)?;
        let plan: Arc<[Treat]> = cols
            .iter()
            .zip(&binary)
            .map(|(&d, &b)| treat(d, b))
            .collect();
        let d = DescribedResult {
            columns: cols.into(),
            plan,
        };
        if self.described.len() >= MAX_DESCRIPTIONS {
            self.described.clear();
        }
        self.described.insert(body.into(), d.clone());
        Ok(d)
    }

    /// A RowDescription answering a Describe of `target`, or (None) starting a result.
    pub fn row_description(
        &mut self,
        body: &[u8],
        target: Option<&DescribeTarget>,
    ) -> Result<(), PgError> {
        let d = self.described(body)?;
        match target {
            Some(DescribeTarget::Statement(name, generation)) => {
                remember(&mut self.statements, name, (*generation, d.columns));
            }
            Some(DescribeTarget::Portal(name, generation)) => {
                remember(&mut self.portals, name, (*generation, Arc::clone(&d.plan)));
                self.current = Some(d.plan);
            }
            None => self.current = Some(d.plan),
        }
        Ok(())
    }

    /// A result ended (CommandComplete, error, suspension, ReadyForQuery).
    pub fn end_result(&mut self) {
        self.current = None;
        self.copy_out = None;
    }

    fn plan_for(&mut self, execute: Option<&ExecuteFormats>, columns: usize) -> Arc<[Treat]> {
        if let Some(plan) = &self.current {
            return Arc::clone(plan);
        }
        let portal = execute.and_then(|e| {
            self.portals
                .get(&e.portal.0)
                .filter(|(generation, _)| *generation == e.portal.1)
        });
        let statement = execute.and_then(|e| {
            self.statements
                .get(&e.statement.0)
                .filter(|(generation, _)| *generation == e.statement.1)
        });
        let plan: Arc<[Treat]> = match execute {
            Some(e) => match portal {
                Some((_, p)) => Arc::clone(p),
                None => match statement {
                    Some((_, cols)) => cols
                        .iter()
                        .enumerate()
                        .map(|(i, &d)| {
                            let f = match e.formats.len() {
                                0 => 0,
                                1 => e.formats[0],
                                _ => e.formats.get(i).copied().unwrap_or(0),
                            };
                            treat(d, f == 1)
                        })
                        .collect(),
                    // Never described: nothing is known of the columns, so every value is
                    // scanned and one that cannot be rewritten safely is withheld.
                    None => vec![Treat::ScanOrNull; columns].into(),
                },
            },
            None => vec![Treat::ScanOrNull; columns].into(),
        };
        self.current = Some(Arc::clone(&plan));
        plan
    }

    /// Appends the DataRow to `out`, masked.
    pub fn data_row(
        &mut self,
        body: &[u8],
        execute: Option<&ExecuteFormats>,
        out: &mut BytesMut,
    ) -> Result<(), PgError> {
        let count = codec::read_i16(body, 0)?.max(0) as usize;
        let mut plan = self.plan_for(execute, count);
        if plan.len() != count {
            // The row does not match what was described: scan everything.
            plan = vec![Treat::ScanOrNull; count].into();
        }
        if plan.iter().all(|t| *t == Treat::Keep) {
            put_raw(out, b'D', body);
            return Ok(());
        }
        let mut pos = 2usize;
        let mut rewriting = false;
        self.scratch.clear();
        for treat in plan.iter() {
            let col_start = pos;
            let len = codec::read_i32(body, pos)?;
            pos += 4;
            let value = if len < 0 {
                None
            } else {
                let end = pos
                    .checked_add(len as usize)
                    .filter(|&e| e <= body.len())
                    .ok_or_else(|| PgError::protocol("DataRow value runs past its message"))?;
                let v = &body[pos..end];
                pos = end;
                Some(v)
            };
            let changed = match (value, *treat) {
                (None, _) | (_, Treat::Keep) => None,
                (Some(v), Treat::Null(r)) => {
                    // Masked for the count; the value itself is withheld.
                    self.value.clear();
                    self.mask
                        .mask(ColumnMask::Rule(r), v, &mut self.value, &mut self.tally);
                    Some(None)
                }
                (Some(v), Treat::Scan) => {
                    self.value.clear();
                    self.mask
                        .mask(ColumnMask::Scan, v, &mut self.value, &mut self.tally)
                        .then_some(Some(()))
                }
                (Some(v), Treat::ScanOrNull) => {
                    self.value.clear();
                    self.mask
                        .mask(ColumnMask::Scan, v, &mut self.value, &mut self.tally)
                        .then_some(None)
                }
                (Some(v), Treat::Rule(r)) => {
                    self.value.clear();
                    self.mask
                        .mask(ColumnMask::Rule(r), v, &mut self.value, &mut self.tally)
                        .then_some(Some(()))
                }
            };
            match changed {
                None if rewriting => self.scratch.extend_from_slice(&body[col_start..pos]),
                None => {}
                Some(replacement) => {
                    if !rewriting {
                        rewriting = true;
                        self.scratch.extend_from_slice(&body[..col_start]);
                    }
                    match replacement {
                        Some(()) => {
                            self.scratch
                                .extend_from_slice(&(self.value.len() as i32).to_be_bytes());
                            self.scratch.extend_from_slice(&self.value);
                        }
                        None => self.scratch.extend_from_slice(&(-1i32).to_be_bytes()),
                    }
                }
            }
        }
        if rewriting {
            put_raw(out, b'D', &self.scratch);
        } else {
            put_raw(out, b'D', body);
        }
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
        if self.value.capacity() > SCRATCH_KEEP {
            self.value = Vec::new();
        }
        Ok(())
    }

    /// A CopyOutResponse: returns false when the copy cannot be masked (binary format).
    pub fn copy_out(&mut self, body: &[u8]) -> bool {
        let text = body.first().copied().unwrap_or(0) == 0;
        self.copy_out = Some(text);
        text
    }

    /// Whether a COPY TO is in progress.
    pub fn in_copy_out(&self) -> bool {
        self.copy_out.is_some()
    }

    /// Appends a CopyData of a text COPY TO, masked.
    pub fn copy_data(&mut self, body: &[u8], out: &mut BytesMut) {
        self.value.clear();
        if self
            .mask
            .mask(ColumnMask::Scan, body, &mut self.value, &mut self.tally)
        {
            put_raw(out, b'd', &self.value);
        } else {
            put_raw(out, b'd', body);
        }
    }

    /// Masks the human-readable fields of an ErrorResponse or NoticeResponse. Returns the
    /// rewritten body, or None when nothing changed.
    pub fn fields(&mut self, body: &[u8]) -> Option<BytesMut> {
        let mut out = BytesMut::with_capacity(body.len() + 32);
        let mut changed = false;
        let mut rest = body;
        while let Some((&tag, after)) = rest.split_first() {
            if tag == 0 {
                break;
            }
            let end = after.iter().position(|&b| b == 0)?;
            let value = &after[..end];
            out.put_u8(tag);
            // Message, detail, hint, context, internal query: where values show up.
            if matches!(tag, b'M' | b'D' | b'H' | b'W' | b'q') {
                self.value.clear();
                if self
                    .mask
                    .mask(ColumnMask::Scan, value, &mut self.value, &mut self.tally)
                {
                    changed = true;
                    out.put_slice(&self.value);
                } else {
                    out.put_slice(value);
                }
            } else {
                out.put_slice(value);
            }
            out.put_u8(0);
            rest = after.get(end + 1..).unwrap_or_default();
        }
        out.put_u8(0);
        changed.then_some(out)
    }

    /// Masks a NotificationResponse payload. Returns the rewritten body, if changed.
    pub fn notification(&mut self, body: &[u8]) -> Option<BytesMut> {
        let mut r = Reader::new(body);
        let pid = r.i32().ok()?;
        let channel = r.cstr().ok()?;
        let payload = r.rest().strip_suffix(&[0])?;
        self.value.clear();
        if !self
            .mask
            .mask(ColumnMask::Scan, payload, &mut self.value, &mut self.tally)
        {
            return None;
        }
        let mut out = BytesMut::new();
        out.put_i32(pid);
        codec::put_cstr(&mut out, channel);
        out.put_slice(&self.value);
        out.put_u8(0);
        Some(out)
    }

    /// The session's mask, for the client direction.
    pub fn mask(&self) -> &Arc<dyn SessionMask> {
        &self.mask
    }
}

/// Masks what the detectors find in a command's text and parameters (for the record and for
/// approvers).
pub(crate) fn scrub(mask: &dyn SessionMask, command: &mut Command) {
    let mut tally = MaskTally::default();
    let mut out = Vec::new();
    if mask.mask(
        ColumnMask::Scan,
        command.text.as_bytes(),
        &mut out,
        &mut tally,
    ) {
        command.text = Arc::from(String::from_utf8_lossy(&out).as_ref());
    }
    for p in command.params.iter_mut().flatten() {
        out.clear();
        if mask.mask(ColumnMask::Scan, p.as_bytes(), &mut out, &mut tally) {
            *p = String::from_utf8_lossy(&out).into_owned();
        }
    }
}

/// A RowDescription worked out: its columns (for a statement) and its plan (as described).
#[derive(Clone)]
struct DescribedResult {
    columns: Arc<[Described]>,
    plan: Arc<[Treat]>,
}

/// Distinct RowDescriptions remembered per session.
const MAX_DESCRIPTIONS: usize = 1024;

/// Keeps the latest entry per name, within the per-session bound.
fn remember<V>(map: &mut HashMap<String, V>, name: &str, value: V) {
    if let Some(slot) = map.get_mut(name) {
        *slot = value;
        return;
    }
    if map.len() >= MAX_REMEMBERED {
        map.clear();
    }
    map.insert(name.to_string(), value);
}

/// Appends a message with this tag and body.
pub(crate) fn put_raw(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.reserve(body.len() + 5);
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}
