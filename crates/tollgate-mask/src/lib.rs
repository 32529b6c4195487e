//! Sensitive-data masking for Tollgate: built-in detectors, custom regex detectors, column
//! rules and masking strategies. Pure functions over bytes: no sockets, no runtime.
//!
//! A [`Mask`] is compiled once from a [`MaskSpec`] and shared by every session it applies to.
//! It implements [`tollgate_core::SessionMask`], the seam the protocol crates call.

pub mod detect;
mod strategy;

use std::borrow::Cow;

use ring::hmac;
use tollgate_core::{ColumnMask, MaskTally, SessionMask, TableColumn};

pub use detect::{Finding, Kind, KindSet, find};
pub use strategy::Strategy;
use strategy::{Shape, apply};

/// Errors building a [`Mask`].
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// A custom detector's pattern does not compile.
    #[error("custom detector {name:?}: invalid pattern: {reason}")]
    BadPattern {
        /// Detector name.
        name: String,
        /// What the regex compiler said.
        reason: String,
    },
    /// A custom detector's pattern matches the empty string.
    #[error("custom detector {0:?}: the pattern matches the empty string")]
    EmptyMatch(String),
    /// Two detectors or rules share a name.
    #[error("the name {0:?} is used by more than one masking detector or rule")]
    DuplicateName(String),
}

/// A detector defined in config by a regular expression.
#[derive(Debug, Clone)]
pub struct CustomDetector {
    /// Name in records and redactions.
    pub name: String,
    /// Regular expression (Rust `regex` syntax); every match is masked.
    pub pattern: String,
    /// How matches are replaced.
    pub strategy: Strategy,
}

/// Masks whole columns, whatever their content.
#[derive(Debug, Clone)]
pub struct ColumnRule {
    /// Name in records and redactions.
    pub name: String,
    /// Column-name patterns, case-insensitive, `*` matching any run (`password`, `*_token`).
    pub columns: Vec<String>,
    /// Source columns by `[schema.]table.column`.
    pub tables: Vec<TableColumn>,
    /// How values are replaced.
    pub strategy: Strategy,
}

/// Everything a [`Mask`] is built from.
#[derive(Debug, Clone)]
pub struct MaskSpec {
    /// Enabled built-in detectors and their strategies.
    pub detectors: Vec<(Kind, Strategy)>,
    /// Custom regex detectors.
    pub custom: Vec<CustomDetector>,
    /// Column rules, checked in order; the first that names a column decides it.
    pub column_rules: Vec<ColumnRule>,
    /// Key of the HMAC behind pseudonyms.
    pub pseudonym_key: Vec<u8>,
}

struct CompiledCustom {
    name: String,
    regex: regex::bytes::Regex,
    strategy: Strategy,
}

struct CompiledRule {
    name: String,
    /// Lower-cased patterns split at `*`.
    patterns: Vec<Vec<String>>,
    strategy: Strategy,
}

/// A compiled masking configuration.
pub struct Mask {
    kinds: KindSet,
    strategies: [Strategy; Kind::ALL.len()],
    custom: Vec<CompiledCustom>,
    rules: Vec<CompiledRule>,
    tables: Vec<TableColumn>,
    /// For each entry of `tables`, the rule that named it.
    table_rule: Vec<u32>,
    key: hmac::Key,
    counters: Vec<String>,
}

impl std::fmt::Debug for Mask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mask")
            .field("kinds", &self.kinds)
            .field("custom", &self.custom.len())
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl Mask {
    /// Compiles a spec.
    pub fn new(spec: &MaskSpec) -> Result<Self, MaskError> {
        let mut kinds = KindSet::none();
        let mut strategies = Kind::ALL.map(Strategy::default_for);
        for &(kind, strategy) in &spec.detectors {
            kinds = kinds.with(kind);
            strategies[kind as usize] = strategy;
        }
        let mut counters: Vec<String> = Kind::ALL.iter().map(|k| k.name().to_string()).collect();
        let claim = |name: &str, counters: &mut Vec<String>| {
            if counters.iter().any(|c| c == name) {
                return Err(MaskError::DuplicateName(name.to_string()));
            }
            counters.push(name.to_string());
            Ok(())
        };
        let mut custom = Vec::new();
        for c in &spec.custom {
            claim(&c.name, &mut counters)?;
            let regex = regex::bytes::RegexBuilder::new(&c.pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| MaskError::BadPattern {
                    name: c.name.clone(),
                    reason: e.to_string(),
                })?;
            if regex.is_match(b"") {
                return Err(MaskError::EmptyMatch(c.name.clone()));
            }
            custom.push(CompiledCustom {
                name: c.name.clone(),
                regex,
                strategy: c.strategy,
            });
        }
        let mut rules = Vec::new();
        let mut tables = Vec::new();
        let mut table_rule = Vec::new();
        for (i, r) in spec.column_rules.iter().enumerate() {
            claim(&r.name, &mut counters)?;
            rules.push(CompiledRule {
                name: r.name.clone(),
                patterns: r
                    .columns
                    .iter()
                    .map(|p| p.to_lowercase().split('*').map(str::to_string).collect())
                    .collect(),
                strategy: r.strategy,
            });
            for t in &r.tables {
                tables.push(t.clone());
                table_rule.push(i as u32);
            }
        }
        Ok(Self {
            kinds,
            strategies,
            custom,
            rules,
            tables,
            table_rule,
            key: hmac::Key::new(hmac::HMAC_SHA256, &spec.pseudonym_key),
            counters,
        })
    }

    /// Masks what the detectors find in a text (errors, notices, recorded statements).
    pub fn mask_text<'a>(&self, text: &'a str, tally: &mut MaskTally) -> Cow<'a, str> {
        let mut out = Vec::new();
        if !self.scan(text.as_bytes(), &mut out, tally) {
            return Cow::Borrowed(text);
        }
        Cow::Owned(String::from_utf8_lossy(&out).into_owned())
    }

    /// Detector pass: masks every finding; false when nothing was found.
    fn scan(&self, value: &[u8], out: &mut Vec<u8>, tally: &mut MaskTally) -> bool {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.scan_with(value, out, tally, &mut scratch, find),
            Err(_) => self.scan_with(value, out, tally, &mut Scratch::default(), find),
        })
    }

    fn scan_with(
        &self,
        value: &[u8],
        out: &mut Vec<u8>,
        tally: &mut MaskTally,
        scratch: &mut Scratch,
        find: FindFn,
    ) -> bool {
        let Scratch {
            found,
            spans,
            decoded,
            inner,
        } = scratch;
        found.clear();
        spans.clear();
        if !self.kinds.is_empty() {
            find(value, self.kinds, found);
            let plain = found.len();
            encoded_findings(value, self.kinds, found, decoded, inner);
            // (start, end, source): a kind's index, a custom detector's past the kinds, an
            // encoded finding's past ENCODED_BASE.
            for (i, f) in found.iter().enumerate() {
                if f.start < f.end && f.end <= value.len() {
                    let base = if i < plain { 0 } else { ENCODED_BASE };
                    spans.push((f.start, f.end, base + f.kind as usize));
                }
            }
        }
        for (i, c) in self.custom.iter().enumerate() {
            for m in c.regex.find_iter(value) {
                if m.end() > m.start() {
                    spans.push((m.start(), m.end(), Kind::ALL.len() + i));
                }
            }
        }
        if spans.is_empty() {
            return false;
        }
        // By start, longest first; a tie between two sources on one span goes to the detector
        // that reports first (`detect::find`'s order), then encoded findings, then custom ones.
        // A stable sort merges the sorted runs `find` reports (line by line, then each
        // detector over stretches of lines) instead of sorting from scratch; no two spans
        // have the same key.
        spans.sort_by_key(|&(start, end, source)| {
            (start, std::cmp::Reverse(end), source_rank(source))
        });
        let mut pos = 0;
        let mut any = false;
        for &(start, end, source) in spans.iter() {
            if start < pos {
                continue; // overlaps a span already masked
            }
            out.extend_from_slice(&value[pos..start]);
            let piece = &value[start..end];
            if source >= ENCODED_BASE {
                // An encoded value hiding a finding: redacted whole, counted under its kind.
                let kind_index = source - ENCODED_BASE;
                let name = Kind::ALL
                    .get(kind_index)
                    .map(|k| k.name())
                    .unwrap_or("encoded");
                apply(Strategy::Redact, Shape::Other, name, piece, &self.key, out);
                tally.bump(kind_index);
                pos = end;
                any = true;
                continue;
            }
            match Kind::ALL.get(source) {
                Some(&kind) => apply(
                    self.strategies[source],
                    Shape::Known(kind),
                    kind.name(),
                    piece,
                    &self.key,
                    out,
                ),
                None => {
                    let Some(c) = self.custom.get(source - Kind::ALL.len()) else {
                        continue;
                    };
                    apply(c.strategy, Shape::Other, &c.name, piece, &self.key, out);
                }
            }
            tally.bump(source);
            pos = end;
            any = true;
        }
        out.extend_from_slice(&value[pos..]);
        any
    }

    /// Masks a whole value under column rule `index`.
    fn whole(&self, index: usize, value: &[u8], out: &mut Vec<u8>, tally: &mut MaskTally) -> bool {
        let Some(rule) = self.rules.get(index) else {
            return false;
        };
        // A value that is entirely one recognised kind keeps that kind's shape.
        let trimmed = value.trim_ascii();
        let mut found = Vec::new();
        // The first finding's kind counts, in the order of the whole-input pass.
        detect::find_whole(trimmed, KindSet::all(), &mut found);
        let shape = found
            .iter()
            .find(|f| f.start == 0 && f.end == trimmed.len())
            .map(|f| Shape::Known(f.kind))
            .unwrap_or(Shape::Other);
        apply(rule.strategy, shape, &rule.name, value, &self.key, out);
        tally.bump(Kind::ALL.len() + self.custom.len() + index);
        true
    }
}

/// Buffers reused from one value to the next on each thread.
#[derive(Default)]
struct Scratch {
    found: Vec<Finding>,
    spans: Vec<(usize, usize, usize)>,
    decoded: Vec<u8>,
    inner: Vec<Finding>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// The order in which the whole-input detector pass reports the kinds, for ties.
const KIND_RANK: [usize; Kind::ALL.len()] = {
    let mut rank = [0; Kind::ALL.len()];
    let order: [Kind; Kind::ALL.len()] = [
        Kind::Email,
        Kind::Phone,
        Kind::Card,
        Kind::Ssn,
        Kind::Iban,
        Kind::Ipv4,
        Kind::Ipv6,
        Kind::SecretAssignment,
        Kind::AwsSecretKey,
        Kind::GithubToken,
        Kind::GitlabToken,
        Kind::SlackToken,
        Kind::StripeKey,
        Kind::PrivateKey,
        Kind::AwsAccessKey,
        Kind::GoogleApiKey,
        Kind::Jwt,
        Kind::PasswordHash,
    ];
    let mut i = 0;
    while i < order.len() {
        rank[order[i] as usize] = i;
        i += 1;
    }
    rank
};

/// Where spans of `source` go among spans of the same start and end: built-in detectors in
/// the order the detector pass reports them, then encoded findings, then custom detectors in
/// their order.
fn source_rank(source: usize) -> usize {
    match KIND_RANK.get(source) {
        Some(&rank) => rank,
        None if source >= ENCODED_BASE => Kind::ALL.len(),
        None => source + 1,
    }
}

/// The detector pass over a value: [`find`] (tests compare it with the whole-input
/// reference).
type FindFn = fn(&[u8], KindSet, &mut Vec<Finding>);

/// Span sources at or past this are encoded findings (offset by their kind).
const ENCODED_BASE: usize = 1 << 16;

/// Shortest hex or base64 run worth decoding (the shortest e-mail, `a@b.co`, is 8 in base64).
const MIN_ENCODED: usize = 8;

/// Finds hex (`\x…` bytea text, `encode(…, 'hex')`) and base64 runs that decode to something a
/// detector finds; each such run is reported whole, with the kind found inside it.
fn encoded_findings(
    value: &[u8],
    kinds: KindSet,
    out: &mut Vec<Finding>,
    decoded: &mut Vec<u8>,
    inner: &mut Vec<Finding>,
) {
    if value.len() < MIN_ENCODED {
        return;
    }
    let mut i = 0;
    while i < value.len() {
        // Skip to the next base64 byte.
        match value[i..].iter().position(|&b| B64[b as usize]) {
            Some(skip) => i += skip,
            None => return,
        }
        let start = i;
        // A run of base64 bytes; PostgreSQL's encode(…, 'base64') wraps lines at 76 with `\n`.
        let mut newlines = 0;
        while i < value.len() {
            if B64[value[i] as usize] {
                i += 1;
            } else if value[i] == b'\n' && value.get(i + 1).is_some_and(|&b| B64[b as usize]) {
                newlines += 1;
                i += 1;
            } else {
                break;
            }
        }
        let mut end = i;
        while end < value.len() && value[end] == b'=' && end - i < 2 {
            end += 1;
        }
        let run = &value[start..end];
        if run.len() - newlines < MIN_ENCODED {
            i = end;
            continue;
        }
        decoded.clear();
        let body = &value[start..i];
        // `\x` prefix of bytea text output: the run starts with the `x`.
        let hex_body = body
            .strip_prefix(b"x")
            .filter(|_| start > 0 && value[start - 1] == b'\\');
        let hex = hex_body.unwrap_or(body);
        if newlines == 0
            && hex.len() >= MIN_ENCODED
            && hex.len().is_multiple_of(2)
            && hex.iter().all(u8::is_ascii_hexdigit)
        {
            for pair in hex.chunks_exact(2) {
                decoded.push((hex_val(pair[0]) << 4) | hex_val(pair[1]));
            }
        } else if (run.len() - newlines).is_multiple_of(4)
            && body
                .iter()
                .any(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            base64_decode(run, decoded);
        }
        if !decoded.is_empty() {
            inner.clear();
            // The first finding names the kind, in the order of the whole-input pass (the line
            // by line pass reports the same findings in another order).
            detect::find_whole(decoded, kinds, inner);
            if let Some(f) = inner.first() {
                let span_start = if hex_body.is_some() { start - 1 } else { start };
                out.push(Finding {
                    start: span_start,
                    end,
                    kind: f.kind,
                });
            }
        }
        i = end;
    }
}

/// Bytes of standard base64 (without padding), which include every hex digit.
static B64: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
        b += 1;
    }
    t
};

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// The value of each standard base64 byte; 0xFF for the others.
static B64_VALUE: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => 0xFF,
        };
        b += 1;
    }
    t
};

/// Standard base64 with padding, line breaks skipped; stops quietly at anything else.
fn base64_decode(run: &[u8], out: &mut Vec<u8>) {
    out.reserve(run.len() / 4 * 3 + 3);
    // The values of the group's bytes so far, one per byte of `quad` (in a register: a byte
    // array stored a byte at a time and read back whole stalls).
    let mut quad = 0u32;
    let mut filled = 0;
    for &b in run {
        if b == b'\n' {
            continue;
        }
        quad = (quad << 8) | u32::from(B64_VALUE[usize::from(b)]);
        filled += 1;
        if filled < 4 {
            continue;
        }
        filled = 0;
        // Every value below 64: a whole group.
        if quad & 0xC0C0_C0C0 == 0 {
            let acc = ((quad >> 6) & 0x00FC_0000)
                | ((quad >> 4) & 0x0003_F000)
                | ((quad >> 2) & 0x0000_0FC0)
                | (quad & 0x3F);
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            continue;
        }
        let [a, b, c, d] = quad.to_be_bytes().map(u32::from);
        // A padded or broken group ends the value: its valid leading bytes still count.
        let mut acc = 0u32;
        let mut n = 0;
        for v in [a, b, c, d] {
            if v >= 64 {
                break;
            }
            acc = (acc << 6) | v;
            n += 1;
        }
        match n {
            3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
            2 => out.push((acc >> 4) as u8),
            _ => {}
        }
        return;
    }
}

/// Whether `name` (lower-cased) matches a pattern split at `*`.
fn glob_match(parts: &[String], name: &str) -> bool {
    match parts {
        [] => name.is_empty(),
        [only] => only == name,
        [first, middle @ .., last] => {
            if name.len() < first.len() + last.len()
                || !name.starts_with(first.as_str())
                || !name.ends_with(last.as_str())
            {
                return false;
            }
            let mut rest = &name[first.len()..name.len() - last.len()];
            for part in middle {
                match rest.find(part.as_str()) {
                    Some(i) => rest = &rest[i + part.len()..],
                    None => return false,
                }
            }
            true
        }
    }
}

impl SessionMask for Mask {
    fn table_columns(&self) -> &[TableColumn] {
        &self.tables
    }

    fn column(&self, name: &str, table_column: Option<usize>) -> ColumnMask {
        if let Some(rule) = table_column.and_then(|i| self.table_rule.get(i)) {
            return ColumnMask::Rule(*rule);
        }
        let lower = name.to_lowercase();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.patterns.iter().any(|p| glob_match(p, &lower)) {
                return ColumnMask::Rule(i as u32);
            }
        }
        ColumnMask::Scan
    }

    fn mask(
        &self,
        how: ColumnMask,
        value: &[u8],
        out: &mut Vec<u8>,
        tally: &mut MaskTally,
    ) -> bool {
        match how {
            ColumnMask::Scan => self.scan(value, out, tally),
            ColumnMask::Rule(i) => self.whole(i as usize, value, out, tally),
        }
    }

    fn counter_names(&self) -> &[String] {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MaskSpec {
        MaskSpec {
            detectors: Kind::ALL
                .iter()
                .map(|&k| (k, Strategy::default_for(k)))
                .collect(),
            custom: vec![CustomDetector {
                name: "employee-id".into(),
                pattern: r"\bEMP-\d{6}\b".into(),
                strategy: Strategy::Redact,
            }],
            column_rules: vec![ColumnRule {
                name: "secrets".into(),
                columns: vec!["password".into(), "*_token".into(), "*secret*".into()],
                tables: vec![TableColumn {
                    schema: None,
                    table: "users".into(),
                    column: "dob".into(),
                }],
                strategy: Strategy::Redact,
            }],
            pseudonym_key: b"k".to_vec(),
        }
    }

    #[test]
    fn column_rules_match_names_and_tables() {
        let m = Mask::new(&spec()).unwrap();
        assert_eq!(m.column("Password", None), ColumnMask::Rule(0));
        assert_eq!(m.column("refresh_token", None), ColumnMask::Rule(0));
        assert_eq!(m.column("client_secret_hash", None), ColumnMask::Rule(0));
        assert_eq!(m.column("tokenizer", None), ColumnMask::Scan);
        assert_eq!(m.column("email", None), ColumnMask::Scan);
        assert_eq!(m.column("anything", Some(0)), ColumnMask::Rule(0));
        let mut out = Vec::new();
        let mut tally = MaskTally::default();
        assert!(m.mask(ColumnMask::Rule(0), b"hunter2", &mut out, &mut tally));
        assert_eq!(out, b"[REDACTED:secrets]");
        let named = tally.take_named(m.counter_names());
        assert_eq!(named.get("secrets"), Some(&1));
    }

    #[test]
    fn custom_detectors_mask_matches_and_count() {
        let m = Mask::new(&spec()).unwrap();
        let mut tally = MaskTally::default();
        let text = m.mask_text("badge EMP-123456 issued", &mut tally);
        assert_eq!(text, "badge [REDACTED:employee-id] issued");
        assert_eq!(
            tally.take_named(m.counter_names()).get("employee-id"),
            Some(&1)
        );
        assert!(matches!(
            m.mask_text("nothing here", &mut tally),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn encoded_values_are_decoded_and_scanned() {
        let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        let e = "alice.smith@example.com";
        assert_eq!(
            encoded(&format!("\\x{}", hex(e))),
            vec![(0, 2 + 2 * e.len())]
        );
        assert_eq!(
            encoded(&format!("v={}", hex(e))),
            vec![(2, 2 + 2 * e.len())]
        );
        // base64 of the address
        assert_eq!(encoded("YWxpY2Uuc21pdGhAZXhhbXBsZS5jb20="), vec![(0, 32)]);
        // Wrapped at 76 as PostgreSQL writes it: the address straddles the line break.
        let long = "c29tZSBwYWRkaW5nIHRleHQgdG8gcHVzaCB0aGUgYWRkcmVzcyBhY3Jvc3MgYSBsaW5lIGJyZWFr\nIGFsaWNlLnNtaXRoQGV4YW1wbGUuY29t";
        assert_eq!(encoded(long), vec![(0, long.len())]);
        // Hashes and random base64 decode to nothing sensitive.
        assert!(encoded("d41d8cd98f00b204e9800998ecf8427e").is_empty());
        assert!(encoded("q83vEjRWeJq8zd7/ASNFZw==").is_empty());
        assert!(encoded("internationalization").is_empty());
    }

    fn encoded(s: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        encoded_findings(
            s.as_bytes(),
            KindSet::all(),
            &mut out,
            &mut Vec::new(),
            &mut Vec::new(),
        );
        out.iter().map(|f| (f.start, f.end)).collect()
    }

    /// xorshift64*: deterministic corpora without a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        }
    }

    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// Lines of every sort: the test corpora's values (sensitive and ordinary), numbers, log
    /// lines, PEM blocks, base64 (wrapped at 76 like PostgreSQL's) and hex of sensitive
    /// values, secrets quoted across an escaped line end, binary noise.
    fn corpus_lines() -> Vec<String> {
        let sensitive: Vec<&str> = include_str!("../tests/sensitive_values.tsv")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split('\t').nth(1))
            .collect();
        let ordinary: Vec<&str> = include_str!("../tests/ordinary_values.txt")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let mut lines: Vec<String> = Vec::new();
        lines.extend(sensitive.iter().map(|s| s.to_string()));
        // The same values with their literal `\n` as real line ends (PEM blocks, wrapped text).
        lines.extend(sensitive.iter().map(|s| s.replace("\\n", "\n")));
        lines.extend(ordinary.iter().map(|s| s.to_string()));
        for n in [
            1u64,
            7,
            42,
            999,
            31337,
            4111111,
            12345678,
            123456789,
            4111111111111111,
        ] {
            lines.push(n.to_string());
        }
        lines.extend([
            "login alice@example.com from 10.1.2.3 card 4111 1111 1111 1111".to_string(),
            "-rw-r--r-- 1 alice staff  1048576 Nov 27 12:30 backup-2024-01-15.tar.gz".to_string(),
            "Nov 27 12:30:45 db-01 sshd[31337]: Accepted publickey for bob from 192.168.1.10 port 52144".to_string(),
            "2024-06-01T12:30:45Z INFO request id=550e8400-e29b-41d4-a716-446655440000 took 12ms".to_string(),
            "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
            "password=\"first line \\".to_string(),
            "second line of the same secret\"".to_string(),
            "token: 'ends with a backslash \\".to_string(),
            "-----BEGIN RSA PRIVATE KEY-----".to_string(),
            "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun".to_string(),
            "-----END RSA PRIVATE KEY-----".to_string(),
            "-----BEGIN CERTIFICATE-----".to_string(),
            "-----END CERTIFICATE-----".to_string(),
            "-----BEGIN EC PRIVATE KEY-----".to_string(),
            "call +1 415-555-2671 or (415) 555-2671, ssn 123-45-6789".to_string(),
            "4222 222222 222".to_string(),
            "eyJhbGciOi.eyJzdWIiOi.".to_string(),
            "hooks.slack.com/services/T0/B0/XXXXXXXX".to_string(),
            "$1$saltsalt$abcdefg".to_string(),
            "ACCA0123456789ABCDEF".to_string(),
            "fe80::1ff:fe23:4567:890a and 2001:db8::1".to_string(),
            "\\".to_string(),
            String::new(),
            "\r".to_string(),
            "\u{0}\u{1}\u{7f}\u{ff}é用".to_string(),
        ]);
        let secrets = [
            "alice.smith@example.com",
            "4111 1111 1111 1111",
            "call +1 415-555-2671",
            "password=hunter2",
            "AKIAIOSFODNN7EXAMPLE",
        ];
        let mut long = String::new();
        for s in secrets {
            let b64 = base64(s.as_bytes());
            lines.push(b64.clone());
            lines.push(format!("data: {b64} end"));
            lines.push(format!(
                "\\x{}",
                s.bytes().map(|b| format!("{b:02x}")).collect::<String>()
            ));
            long.push_str(&format!("padding text {s} more padding text "));
        }
        // Base64 of a multi-line text holding values of several kinds (decoded, it is looked
        // at line by line too).
        let text = format!(
            "card 4111 1111 1111 1111\n{}\nmail alice@example.com\n{}\nkey AKIAIOSFODNN7EXAMPLE\n",
            "plain words ".repeat(20),
            "more words ".repeat(20)
        );
        lines.push(base64(text.as_bytes()));
        // Wrapped base64 whose encoded secrets straddle the line ends.
        let wrapped = base64(long.as_bytes());
        let wrapped: Vec<String> = wrapped
            .as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        lines.push(wrapped.join("\n"));
        lines
    }

    /// A corpus of about `size` bytes: random lines of [`corpus_lines`] and numbers.
    fn corpus(rng: &mut Rng, lines: &[String], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < size {
            match rng.below(10) {
                0..=2 => out.extend_from_slice(rng.below(100_000_000).to_string().as_bytes()),
                _ => out.extend_from_slice(lines[rng.below(lines.len())].as_bytes()),
            }
            match rng.below(20) {
                0 => out.extend_from_slice(b"\r\n"),
                1 => out.extend_from_slice(b" "),
                2 => out.extend_from_slice(b"\t"),
                _ => out.push(b'\n'),
            }
        }
        out
    }

    fn sorted(mut found: Vec<Finding>) -> Vec<(usize, usize, Kind)> {
        found.sort_unstable_by_key(|f| (f.start, f.end, f.kind));
        found.iter().map(|f| (f.start, f.end, f.kind)).collect()
    }

    /// Masks `input` with the detector pass `find`.
    fn masked_with(m: &Mask, input: &[u8], find: FindFn) -> (bool, Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        let mut tally = MaskTally::default();
        let changed = m.scan_with(input, &mut out, &mut tally, &mut Scratch::default(), find);
        let named = tally.take_named(m.counter_names());
        let counts = m
            .counter_names()
            .iter()
            .map(|n| named.get(n).copied().unwrap_or(0))
            .collect();
        (changed, out, counts)
    }

    #[test]
    fn multi_line_inputs_mask_as_the_whole_input_reference() {
        let lines = corpus_lines();
        let masks: Vec<Mask> = [Strategy::Partial, Strategy::Redact, Strategy::Pseudonym]
            .into_iter()
            .map(|strategy| {
                let mut s = spec();
                s.detectors = Kind::ALL.iter().map(|&k| (k, strategy)).collect();
                Mask::new(&s).unwrap()
            })
            .chain([Mask::new(&spec()).unwrap()])
            .collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut total = 0;
        for round in 0..400 {
            let size = match round % 4 {
                0 => 300,
                1 => 2000,
                2 => 8000,
                _ => 40_000,
            };
            let input = corpus(&mut rng, &lines, size);
            total += input.len();
            let kinds = if round % 5 == 4 {
                KindSet::none().with(Kind::ALL[rng.below(Kind::ALL.len())])
            } else {
                KindSet::all()
            };
            let mut new = Vec::new();
            find(&input, kinds, &mut new);
            let mut lines_only = Vec::new();
            detect::find_lines(&input, kinds, &mut lines_only);
            let mut reference = Vec::new();
            detect::find_whole(&input, kinds, &mut reference);
            let reference = sorted(reference);
            assert_eq!(sorted(new), reference, "round {round}");
            assert_eq!(sorted(lines_only), reference, "round {round}");
            let m = &masks[round % masks.len()];
            let (got, want) = (
                masked_with(m, &input, find),
                masked_with(m, &input, detect::find_whole),
            );
            if got != want {
                let at = got.1.iter().zip(&want.1).position(|(a, b)| a != b);
                panic!(
                    "round {round}: changed {} / {}, counts {:?} / {:?}, output differs at {at:?}",
                    got.0, want.0, got.2, want.2
                );
            }
        }
        assert!(total > 4_000_000, "{total}");
    }

    /// The byte-at-a-time decoder `base64_decode` replaced, kept to compare with.
    fn base64_decode_reference(run: &[u8], out: &mut Vec<u8>) {
        let val = |b: u8| -> Option<u32> {
            Some(match b {
                b'A'..=b'Z' => b - b'A',
                b'a'..=b'z' => b - b'a' + 26,
                b'0'..=b'9' => b - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            } as u32)
        };
        let mut quad = [0u8; 4];
        let mut filled = 0;
        for &b in run {
            if b == b'\n' {
                continue;
            }
            quad[filled] = b;
            filled += 1;
            if filled < 4 {
                continue;
            }
            filled = 0;
            let mut acc = 0u32;
            let mut n = 0;
            for &b in &quad {
                match val(b) {
                    Some(v) => {
                        acc = (acc << 6) | v;
                        n += 1;
                    }
                    None => break,
                }
            }
            match n {
                4 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]),
                3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
                2 => out.push((acc >> 4) as u8),
                _ => {}
            }
            if n < 4 {
                return;
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn base64_decodes_as_the_reference(
            run in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(
                        b"ABCXYZabcxyz0189+/".to_vec()
                    ),
                    proptest::prelude::Just(b'\n'),
                    proptest::prelude::Just(b'='),
                    proptest::prelude::any::<u8>(),
                ],
                0..64,
            ),
        ) {
            let (mut got, mut want) = (Vec::new(), Vec::new());
            base64_decode(&run, &mut got);
            base64_decode_reference(&run, &mut want);
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec();
        s.custom[0].pattern = "(".into();
        assert!(matches!(Mask::new(&s), Err(MaskError::BadPattern { .. })));
        let mut s = spec();
        s.custom[0].pattern = "x*".into();
        assert!(matches!(Mask::new(&s), Err(MaskError::EmptyMatch(_))));
        let mut s = spec();
        s.custom[0].name = "email".into();
        assert!(matches!(Mask::new(&s), Err(MaskError::DuplicateName(_))));
    }

    #[test]
    fn globs() {
        let g =
            |p: &str, n: &str| glob_match(&p.split('*').map(str::to_string).collect::<Vec<_>>(), n);
        assert!(g("email", "email"));
        assert!(!g("email", "emails"));
        assert!(g("*email*", "work_email_2"));
        assert!(g("*_ssn", "user_ssn"));
        assert!(!g("*_ssn", "ssn"));
        assert!(g("a*b*c", "axxbyyc"));
        assert!(!g("ab*ba", "aba"));
    }
}
