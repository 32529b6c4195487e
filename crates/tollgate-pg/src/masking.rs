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
    /// rewritten body, or None when nothing changed. A field without its terminator is dropped
    /// rather than relayed unread.
    pub fn fields(&mut self, body: &[u8]) -> Option<BytesMut> {
        let mut out = BytesMut::with_capacity(body.len() + 32);
        let mut changed = false;
        let mut rest = body;
        while let Some((&tag, after)) = rest.split_first() {
            if tag == 0 {
                break;
            }
            let Some(end) = after.iter().position(|&b| b == 0) else {
                changed = true;
                break;
            };
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

    /// Masks a FunctionCallResponse value. Returns the rewritten body, if changed. The result
    /// format is the caller's choice and not known here: a UTF-8 value is rewritten as text,
    /// anything else with a finding is withheld (NULL).
    pub fn function_result(&mut self, body: &[u8]) -> Option<BytesMut> {
        let len = codec::read_i32(body, 0).ok()?;
        let value = body.get(4..)?;
        if len < 0 {
            return None;
        }
        self.value.clear();
        if !self
            .mask
            .mask(ColumnMask::Scan, value, &mut self.value, &mut self.tally)
        {
            return None;
        }
        let mut out = BytesMut::with_capacity(self.value.len() + 4);
        if std::str::from_utf8(value).is_ok() {
            out.put_i32(self.value.len() as i32);
            out.put_slice(&self.value);
        } else {
            out.put_i32(-1);
        }
        Some(out)
    }

    /// Masks a NotificationResponse payload. Returns the rewritten body, if changed.
    pub fn notification(&mut self, body: &[u8]) -> Option<BytesMut> {
        let mut r = Reader::new(body);
        let pid = r.i32().unwrap_or(0);
        let parsed = r
            .cstr()
            .ok()
            .and_then(|channel| Some((channel, r.rest().strip_suffix(&[0])?)));
        let Some((channel, payload)) = parsed else {
            // Unreadable: relay an empty notification rather than bytes nobody checked.
            let mut out = BytesMut::new();
            out.put_i32(pid);
            out.put_slice(b"\0\0");
            return Some(out);
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::TableColumn;

    /// Masks the word `alice` wherever it appears; column `pw` is under rule 0.
    struct Alice;

    impl SessionMask for Alice {
        fn table_columns(&self) -> &[TableColumn] {
            &[]
        }
        fn column(&self, name: &str, _: Option<usize>) -> ColumnMask {
            if name == "pw" {
                ColumnMask::Rule(0)
            } else {
                ColumnMask::Scan
            }
        }
        fn mask(
            &self,
            how: ColumnMask,
            value: &[u8],
            out: &mut Vec<u8>,
            tally: &mut MaskTally,
        ) -> bool {
            let text = String::from_utf8_lossy(value);
            match how {
                ColumnMask::Rule(_) => {
                    out.extend_from_slice(b"[R]");
                    tally.bump(1);
                    true
                }
                ColumnMask::Scan if text.contains("alice") => {
                    out.extend_from_slice(text.replace("alice", "*****").as_bytes());
                    tally.bump(0);
                    true
                }
                ColumnMask::Scan => false,
            }
        }
        fn counter_names(&self) -> &[String] {
            static NAMES: std::sync::LazyLock<Vec<String>> =
                std::sync::LazyLock::new(|| vec!["alice".into(), "rule".into()]);
            &NAMES
        }
    }

    fn row_description(cols: &[(&str, u32, i16)]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i16(cols.len() as i16);
        for (name, type_oid, format) in cols {
            codec::put_cstr(&mut b, name);
            b.put_i32(0);
            b.put_i16(0);
            b.put_i32(*type_oid as i32);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(*format);
        }
        b
    }

    fn data_row(values: &[Option<&[u8]>]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        b
    }

    fn masking() -> Masking {
        Masking::new(Arc::new(Alice), HashMap::new())
    }

    #[test]
    fn rows_are_rewritten_by_column_treatment() {
        let mut m = masking();
        // text, int4, binary text, binary int8 under a rule, binary array, text under a rule
        let desc = row_description(&[
            ("note", 25, 0),
            ("n", 23, 0),
            ("name", 1043, 1),
            ("pw", 20, 1),
            ("tags", 1009, 1),
            ("pw", 25, 0),
        ]);
        m.row_description(&desc, None).unwrap();
        let row = data_row(&[
            Some(b"hi alice"),
            Some(b"12"),
            Some(b"alice"),
            Some(&7i64.to_be_bytes()),
            Some(b"\x00\x00\x00\x01alice"),
            None,
        ]);
        let mut out = BytesMut::new();
        m.data_row(&row, None, &mut out).unwrap();
        let expected = data_row(&[
            Some(b"hi *****"),
            Some(b"12"),
            Some(b"*****"),
            None,
            None,
            None,
        ]);
        assert_eq!(&out[5..], &expected[..]);
        assert_eq!(out[0], b'D');
        assert_eq!(
            i32::from_be_bytes(out[1..5].try_into().unwrap()) as usize,
            out.len() - 1
        );
        let tally = m.take_tally();
        assert_eq!(tally.get("alice"), Some(&3));
        assert_eq!(tally.get("rule"), Some(&1));
        // An untouched row goes out byte for byte.
        let clean = data_row(&[Some(b"bob"), Some(b"1"), Some(b"x"), None, None, None]);
        let mut out = BytesMut::new();
        m.data_row(&clean, None, &mut out).unwrap();
        assert_eq!(&out[5..], &clean[..]);
    }

    #[test]
    fn rows_without_a_description_are_scanned_and_withheld_when_unsure() {
        let mut m = masking();
        let row = data_row(&[Some(b"alice"), Some(b"bob")]);
        let mut out = BytesMut::new();
        m.data_row(&row, None, &mut out).unwrap();
        assert_eq!(&out[5..], &data_row(&[None, Some(b"bob")])[..]);
        // A truncated row is a protocol error, not a panic.
        let mut bad = data_row(&[Some(b"alice")]);
        bad.truncate(bad.len() - 2);
        m.end_result();
        assert!(m.data_row(&bad, None, &mut BytesMut::new()).is_err());
    }

    #[test]
    fn statement_descriptions_follow_bind_formats_and_generations() {
        let mut m = masking();
        let desc = row_description(&[("name", 25, 0), ("n", 23, 0)]);
        m.row_description(&desc, Some(&DescribeTarget::Statement("s1".into(), 4)))
            .unwrap();
        let exec = |generation| ExecuteFormats {
            portal: (String::new(), 9),
            statement: ("s1".into(), generation),
            formats: Arc::from([1i16]),
        };
        let row = data_row(&[Some(b"alice"), Some(&5i32.to_be_bytes())]);
        let mut out = BytesMut::new();
        m.data_row(&row, Some(&exec(4)), &mut out).unwrap();
        assert_eq!(
            &out[5..],
            &data_row(&[Some(b"*****"), Some(&5i32.to_be_bytes())])[..]
        );
        // A statement re-parsed under the same name (another generation) lends no plan.
        m.end_result();
        let mut out = BytesMut::new();
        m.data_row(&row, Some(&exec(5)), &mut out).unwrap();
        assert_eq!(&out[5..], &data_row(&[None, Some(&5i32.to_be_bytes())])[..]);
    }

    #[test]
    fn errors_notices_notifications_and_function_results() {
        let mut m = masking();
        let mut e = BytesMut::new();
        for (tag, value) in [
            (b'S', "ERROR"),
            (b'C', "23505"),
            (b'M', "duplicate key"),
            (b'D', "Key (email)=(alice) already exists."),
        ] {
            e.put_u8(tag);
            codec::put_cstr(&mut e, value);
        }
        e.put_u8(0);
        let masked = m.fields(&e).unwrap();
        let fields = codec::parse_error_fields(&masked);
        assert_eq!(fields.code, "23505");
        assert!(!masked.windows(5).any(|w| w == b"alice"));
        // A field without its terminator is dropped, not relayed unread.
        assert_eq!(
            &m.fields(b"C23505\0Mhello alice").unwrap()[..],
            b"C23505\0\0"
        );
        assert_eq!(
            &m.notification(b"\0\0\0\x07chan\0to alice").unwrap()[..],
            b"\0\0\0\x07\0\0"
        );

        let mut n = BytesMut::new();
        n.put_i32(42);
        codec::put_cstr(&mut n, "chan");
        codec::put_cstr(&mut n, "to alice");
        let masked = m.notification(&n).unwrap();
        assert_eq!(&masked[4..], b"chan\0to *****\0");

        let mut v = BytesMut::new();
        v.put_i32(5);
        v.put_slice(b"alice");
        let masked = m.function_result(&v).unwrap();
        assert_eq!(&masked[..], b"\x00\x00\x00\x05*****");
        let mut bin = BytesMut::new();
        bin.put_i32(6);
        bin.put_slice(b"\xffalice");
        assert_eq!(
            &m.function_result(&bin).unwrap()[..],
            &(-1i32).to_be_bytes()
        );
        let mut null = BytesMut::new();
        null.put_i32(-1);
        assert!(m.function_result(&null).is_none());
    }
}
