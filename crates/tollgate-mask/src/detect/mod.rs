//! Built-in detectors: each finds spans of one kind of sensitive value in raw bytes, checked
//! with checksums and context so ordinary data is left alone.
//!
//! [`find`] first profiles the input in one cheap pass (which byte classes occur, how many
//! digits, how long the digit runs are) and then runs only the detectors whose prerequisites
//! hold. Structured values (cards, phones, IBANs, addresses) are matched by hand-written
//! scanners anchored on cheap `memchr` / `memmem` searches (`@`, `+`, `:`, `=`, `_`, `-`, `A`,
//! `eyJ`, `secret`) or on the digit runs found by the profile.
//!
//! This module holds the public API, the byte-class profile that gates the detectors and the
//! byte helpers they share. The detectors live in one submodule per family: `email`,
//! `numbers` (phone, card, SSN, IBAN), `network` (IPv4, IPv6) and `secrets` (keys, tokens and
//! secret assignments).

mod email;
mod hashes;
mod network;
mod numbers;
mod secrets;

use email::scan_email;
use hashes::{MIN_HASH, scan_password_hashes};
use network::{ipv4_at, scan_ipv6};
use numbers::{card_at, scan_iban, scan_phone, ssn_at};
use secrets::scan_secrets;

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// E-mail address.
    Email,
    /// Phone number: E.164 (`+` and 8–15 digits, separators allowed) or common national formats.
    Phone,
    /// Payment card number (13–19 digits, known issuer prefix, Luhn-valid; spaces or dashes).
    Card,
    /// US social security number (`123-45-6789`, valid area/group/serial).
    Ssn,
    /// IBAN (country length and mod-97 checked; spaces allowed in groups of four).
    Iban,
    /// IPv4 address.
    Ipv4,
    /// IPv6 address.
    Ipv6,
    /// JSON Web Token.
    Jwt,
    /// PEM private key block.
    PrivateKey,
    /// AWS access key id (`AKIA…`, `ASIA…`).
    AwsAccessKey,
    /// AWS secret access key (40 characters next to an AWS secret keyword).
    AwsSecretKey,
    /// GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// GitLab personal access token (`glpat-`).
    GitlabToken,
    /// Slack token (`xoxb-`, `xoxp-`, …) or webhook URL.
    SlackToken,
    /// Stripe secret or restricted key (`sk_live_`, `rk_test_`, …).
    StripeKey,
    /// Google API key (`AIza…`).
    GoogleApiKey,
    /// The value of a `password=…`, `secret: …`, `api_key="…"` assignment.
    SecretAssignment,
    /// A stored password hash: modular crypt (`$2b$…`, `$6$…`, `$argon2id$…`), Django-style
    /// (`pbkdf2_sha256$…`), PostgreSQL (`SCRAM-SHA-256$…`, `md5` and 32 hex digits) or LDAP
    /// (`{SSHA}…`).
    PasswordHash,
}

impl Kind {
    /// Every built-in detector.
    pub const ALL: [Kind; 18] = [
        Kind::Email,
        Kind::Phone,
        Kind::Card,
        Kind::Ssn,
        Kind::Iban,
        Kind::Ipv4,
        Kind::Ipv6,
        Kind::Jwt,
        Kind::PrivateKey,
        Kind::AwsAccessKey,
        Kind::AwsSecretKey,
        Kind::GithubToken,
        Kind::GitlabToken,
        Kind::SlackToken,
        Kind::StripeKey,
        Kind::GoogleApiKey,
        Kind::SecretAssignment,
        Kind::PasswordHash,
    ];

    /// The detector's name in config and records.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Card => "card",
            Kind::Ssn => "ssn",
            Kind::Iban => "iban",
            Kind::Ipv4 => "ipv4",
            Kind::Ipv6 => "ipv6",
            Kind::Jwt => "jwt",
            Kind::PrivateKey => "private-key",
            Kind::AwsAccessKey => "aws-access-key",
            Kind::AwsSecretKey => "aws-secret-key",
            Kind::GithubToken => "github-token",
            Kind::GitlabToken => "gitlab-token",
            Kind::SlackToken => "slack-token",
            Kind::StripeKey => "stripe-key",
            Kind::GoogleApiKey => "google-api-key",
            Kind::SecretAssignment => "secret-assignment",
            Kind::PasswordHash => "password-hash",
        }
    }

    /// The detector called `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of built-in detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindSet(u32);

impl KindSet {
    /// Every built-in detector.
    pub fn all() -> Self {
        Kind::ALL.into_iter().fold(Self(0), |s, k| s.with(k))
    }
    /// No detector.
    pub fn none() -> Self {
        Self(0)
    }
    /// This set plus `kind`.
    pub fn with(self, kind: Kind) -> Self {
        Self(self.0 | kind.bit())
    }
    /// This set without `kind`.
    pub fn without(self, kind: Kind) -> Self {
        Self(self.0 & !kind.bit())
    }
    /// Whether `kind` is in the set.
    pub fn contains(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }
    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One sensitive value found in an input: `input[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// First byte of the value.
    pub start: usize,
    /// One past its last byte.
    pub end: usize,
    /// What it is.
    pub kind: Kind,
}

/// Appends to `out` every value of the `kinds` detectors found in `input` (any order; spans may
/// overlap). Never panics, whatever the bytes.
pub fn find(input: &[u8], kinds: KindSet, out: &mut Vec<Finding>) {
    // The shortest value any detector reports needs five bytes (`pwd=x`).
    if kinds.is_empty() || input.len() < 5 {
        return;
    }
    if input.len() >= LINES_MIN && memchr::memchr(b'\n', input).is_some() {
        find_lines(input, kinds, out);
    } else {
        find_whole(input, kinds, out);
    }
}

/// Inputs at least this long that hold a line end are gated line by line.
const LINES_MIN: usize = 256;

/// Profiles the whole input and runs the detectors its prerequisites allow over all of it.
#[inline]
pub(crate) fn find_whole(input: &[u8], kinds: KindSet, out: &mut Vec<Finding>) {
    if kinds.is_empty() || input.len() < 5 {
        return;
    }
    let p = Profile::of(input);
    let len = input.len();
    // Digit positions (short inputs) and run statistics, only when a digit detector may run.
    let digit_kinds = has_digit_kinds(kinds);
    let want_runs = p.digits >= 9 && digit_kinds;
    let digit_mask = (len <= 64 && p.digits >= 4 && (want_runs || p.dots >= 3 || p.has(UPPER)))
        .then(|| digit_mask(input));
    let stats = match digit_mask {
        _ if !want_runs => RunStats::default(),
        Some(mask) => RunStats::of_mask(mask),
        None => RunStats::of_bytes(input),
    };
    let digit_mask = digit_mask.map(DigitMask::Narrow);
    let passes = whole_passes(&p, &stats, len, kinds, || has_double_colon(input));
    run(input, passes, kinds, digit_mask, out);
}

/// Whether a detector that needs the digit run statistics is on.
#[inline]
fn has_digit_kinds(kinds: KindSet) -> bool {
    [Kind::Phone, Kind::Card, Kind::Ssn]
        .iter()
        .any(|&k| kinds.contains(k))
}

/// Large multi-line inputs (terminal output, logs): each line is profiled alone and only the
/// detectors whose prerequisites the line meets run on it, so one line's digits or letters do
/// not send every other line through every detector. The whole input's own prerequisites are
/// applied too (a detector [`find_whole`] would not run stays off), and a line's prerequisites
/// are necessary conditions for a value inside it, so the findings are exactly those of
/// [`find_whole`]. Every detector's values lie within a line except two: a PEM private key,
/// found over the whole input, and a quoted secret whose line ends with a backslash escaping
/// the line end, whose line is joined to the next.
#[inline(never)]
pub(crate) fn find_lines(input: &[u8], kinds: KindSet, out: &mut Vec<Finding>) {
    let digit_kinds = has_digit_kinds(kinds);
    let mut scan = LineScan {
        digit_kinds,
        whole: Profile::default(),
        whole_runs: RunStats::default(),
        lines: Vec::new(),
        wanted: Passes::NONE,
    };
    // One pass over the bytes: each line's profile is summed as for a whole input and looked
    // at when its line end is reached.
    let mut line = Profile::default();
    let mut start = 0;
    for (c, chunk) in input.chunks(CHUNK).enumerate() {
        let base = c * CHUNK;
        // This line's sums since the chunk or the line started, and the chunk's before it.
        let (mut or, mut sum) = (0u64, 0u64);
        let (mut chunk_or, mut chunk_sum) = (0u64, 0u64);
        for (k, &b) in chunk.iter().enumerate() {
            let t = BYTE_PROFILE[usize::from(b)];
            or |= t;
            sum = sum.wrapping_add(t);
            if b != b'\n' {
                continue;
            }
            let i = base + k;
            // A line ending in a backslash continues on the next one (a quoted secret may
            // escape the line end).
            if i > 0 && at(input, i - 1) == b'\\' && i + 1 < input.len() {
                continue;
            }
            line.fold(or, sum);
            chunk_or |= or;
            chunk_sum = chunk_sum.wrapping_add(sum);
            (or, sum) = (0, 0);
            scan.line(input, start, i + 1, &line);
            line = Profile::default();
            start = i + 1;
        }
        line.fold(or, sum);
        scan.whole.fold(chunk_or | or, chunk_sum.wrapping_add(sum));
    }
    if start < input.len() {
        scan.line(input, start, input.len(), &line);
    }
    let LineScan {
        whole,
        whole_runs,
        lines,
        wanted,
        ..
    } = scan;
    let len = input.len();
    let want_runs = whole.digits >= 9 && digit_kinds;
    let dcolon = || has_double_colon(input);
    let mut allowed = if want_runs {
        whole_passes(&whole, &whole_runs, len, kinds, dcolon)
    } else {
        whole_passes(&whole, &RunStats::default(), len, kinds, dcolon)
    };
    if want_runs && wanted.any(Passes::DIGIT_RUNS) && !allowed.has(wanted.only(Passes::DIGIT_RUNS))
    {
        // The lower bound was not enough to open a gate a line needs: count exactly.
        allowed = whole_passes(&whole, &RunStats::of_bytes(input), len, kinds, dcolon);
    }
    // Passes anchored on a digit run or `+` run line by line (with the line's digit mask);
    // the others, anchored on a byte search, over stretches of lines that want them (what lies
    // between holds nothing for them: the line gates are necessary conditions).
    let mut stretches = [(0usize, 0usize); STRETCH_PASSES.len()];
    for &(s, e, passes, digit_mask) in &lines {
        let passes = passes.only(allowed);
        let per_line = passes.only(Passes::PER_LINE);
        if per_line != Passes::NONE
            && let Some(line) = input.get(s..e)
        {
            let first = out.len();
            run(line, per_line, kinds, digit_mask, out);
            for f in out.iter_mut().skip(first) {
                f.start += s;
                f.end += s;
            }
            // In order of position, so the line-by-line findings are one sorted run (cheap
            // to merge with the others when the caller sorts them).
            if let Some(found) = out.get_mut(first..)
                && found.len() > 1
            {
                found.sort_unstable_by_key(|f| f.start);
            }
        }
        for (&pass, stretch) in STRETCH_PASSES.iter().zip(stretches.iter_mut()) {
            if !passes.has(pass) {
                continue;
            }
            if stretch.1 == 0 {
                *stretch = (s, e);
            } else if s - stretch.1 <= STRETCH_GAP {
                stretch.1 = e;
            } else {
                run_at(input, *stretch, pass, kinds, out);
                *stretch = (s, e);
            }
        }
    }
    for (&pass, &stretch) in STRETCH_PASSES.iter().zip(stretches.iter()) {
        if stretch.1 != 0 {
            run_at(input, stretch, pass, kinds, out);
        }
    }
    let spanning = allowed.only(Passes::PEM.with(Passes::HASH));
    if spanning != Passes::NONE {
        run(input, spanning, kinds, None, out);
    }
}

/// The passes [`find_lines`] runs over stretches of lines.
const STRETCH_PASSES: [Passes; 8] = [
    Passes::EMAIL,
    Passes::IPV6,
    Passes::ASSIGN,
    Passes::AWS_SECRET,
    Passes::PUNCT,
    Passes::CAPITAL_A,
    Passes::JWT,
    Passes::SLACK_HOOK,
];

/// Lines that do not want a pass but lie within this many bytes of the last one that does are
/// included in its stretch rather than starting a new one.
const STRETCH_GAP: usize = 512;

/// Runs `passes` over `input[start..end]`, reporting offsets into `input`.
fn run_at(
    input: &[u8],
    (start, end): (usize, usize),
    passes: Passes,
    kinds: KindSet,
    out: &mut Vec<Finding>,
) {
    let Some(part) = input.get(start..end) else {
        return;
    };
    let first = out.len();
    run(part, passes, kinds, None, out);
    for f in out.iter_mut().skip(first) {
        f.start += start;
        f.end += start;
    }
}

/// What [`find_lines`] learns from its pass over the lines.
struct LineScan {
    /// Whether a detector using digit run statistics is on.
    digit_kinds: bool,
    /// The whole input's profile.
    whole: Profile,
    /// A lower bound of the whole input's run statistics (from lines with 9 digits or more).
    whole_runs: RunStats,
    /// Lines with something to look for: start, end, passes and digit mask.
    lines: Vec<(usize, usize, Passes, Option<DigitMask>)>,
    /// Every pass some line wants.
    wanted: Passes,
}

impl LineScan {
    /// Takes in the line `input[start..end]` of profile `p` (the whole profile is summed by
    /// the caller).
    #[inline]
    fn line(&mut self, input: &[u8], start: usize, end: usize, p: &Profile) {
        // Digits alone, fewer than a phone number's: nothing to look for.
        if p.classes & !DIGIT == 0 && p.digits < 10 {
            return;
        }
        let Some(line) = input.get(start..end) else {
            return;
        };
        let mut passes = line_passes(line, p);
        if passes == Passes::NONE {
            return;
        }
        let mask = if passes.any(Passes::PER_LINE) {
            DigitMask::of(line)
        } else {
            None
        };
        if passes.any(Passes::DIGIT_RUNS) {
            let stats = if self.digit_kinds && p.digits >= 9 {
                let stats = match mask {
                    Some(mask) => mask.stats(),
                    None => RunStats::of_bytes(line),
                };
                self.whole_runs.merge(&stats);
                stats
            } else {
                RunStats::default()
            };
            passes = passes.without(line_run_passes_failing(p, &stats));
        }
        if passes != Passes::NONE {
            self.lines.push((start, end, passes, mask));
            self.wanted = self.wanted.with(passes);
        }
    }
}

/// The passes that can find something inside the line `line` of profile `p` (digit run
/// statistics aside): necessary conditions for a value within the line.
#[inline]
fn line_passes(line: &[u8], p: &Profile) -> Passes {
    let len = line.len();
    let mut passes = Passes::NONE;
    if p.has(AT) && p.has(DOT) {
        passes = passes.with(Passes::EMAIL);
    }
    if p.has(PLUS) && p.digits >= 8 {
        passes = passes.with(Passes::E164);
    }
    // NANP: 10 digits; cards 13; SSN 9 (refined by the run statistics).
    if p.digits >= 10 {
        passes = passes.with(Passes::NANP);
    }
    if p.digits >= 13 {
        passes = passes.with(Passes::CARD);
    }
    if p.digits >= 9 && p.has(DASH | SPACE) {
        passes = passes.with(Passes::SSN);
    }
    if p.has(UPPER) && p.digits >= 2 && len >= 15 {
        passes = passes.with(Passes::IBAN);
    }
    if p.dots >= 3 && p.digits >= 4 {
        passes = passes.with(Passes::IPV4);
    }
    if p.colons >= 3 && (p.colons >= 6 || has_double_colon(line)) {
        passes = passes.with(Passes::IPV6);
    }
    passes.with(secrets::line_secret_passes(p, len))
}

/// The digit run passes a line's run statistics rule out: a NANP number has runs of 3, 3 and 4
/// digits (`1-` aside), an SSN of 3, 2 and 4, a card number one run of 13 or more or at least
/// two of four or more (`3782 822463 10005`, `4222 222222 222`).
fn line_run_passes_failing(p: &Profile, stats: &RunStats) -> Passes {
    let mut failing = Passes::NONE;
    if !(stats.runs3 >= 3 && stats.runs4 >= 1) {
        failing = failing.with(Passes::NANP);
    }
    if !(p.digits >= 13 && (stats.run13 || stats.runs4 >= 2)) {
        failing = failing.with(Passes::CARD);
    }
    if !(stats.runs3 >= 2 && stats.runs4 >= 1) {
        failing = failing.with(Passes::SSN);
    }
    failing
}

/// The passes the prerequisites of a whole input allow: `p` its profile, `stats` its digit run
/// statistics (or the default when no digit detector is wanted or it has fewer than 9 digits),
/// `double_colon` whether it holds `::`.
#[inline]
fn whole_passes(
    p: &Profile,
    stats: &RunStats,
    len: usize,
    kinds: KindSet,
    double_colon: impl FnOnce() -> bool,
) -> Passes {
    let mut passes = Passes::NONE;
    if kinds.contains(Kind::Email) && p.has(AT) && p.has(DOT) {
        passes = passes.with(Passes::EMAIL);
    }
    if kinds.contains(Kind::Phone) {
        if p.has(PLUS) && p.digits >= 8 {
            passes = passes.with(Passes::E164);
        }
        if p.digits >= 10 && stats.runs3 >= 3 && stats.runs4 >= 1 {
            passes = passes.with(Passes::NANP);
        }
    }
    if kinds.contains(Kind::Card) && p.digits >= 13 && (stats.run13 || stats.runs4 >= 3) {
        passes = passes.with(Passes::CARD);
    }
    if kinds.contains(Kind::Ssn) && stats.runs3 >= 2 && stats.runs4 >= 1 && p.has(DASH | SPACE) {
        passes = passes.with(Passes::SSN);
    }
    if kinds.contains(Kind::Iban) && p.has(UPPER) && p.digits >= 2 && len >= 15 {
        passes = passes.with(Passes::IBAN);
    }
    if kinds.contains(Kind::Ipv4) && p.dots >= 3 && p.digits >= 4 {
        passes = passes.with(Passes::IPV4);
    }
    // Three groups take 3+ colons (`a:b::c`), or 6+ without `::`; a time has two.
    if kinds.contains(Kind::Ipv6) && p.colons >= 3 && (p.colons >= 6 || double_colon()) {
        passes = passes.with(Passes::IPV6);
    }
    passes = passes.with(secrets::secret_passes(p, len, kinds));
    if kinds.contains(Kind::PasswordHash) && len >= MIN_HASH {
        passes = passes.with(Passes::HASH);
    }
    passes
}

/// Runs the detector `passes` over `input` (their prerequisites already checked).
#[inline(always)]
/// `digit_mask` is the input's digit position mask when it has one (at most 128 bytes).
fn run(
    input: &[u8],
    passes: Passes,
    kinds: KindSet,
    digit_mask: Option<DigitMask>,
    out: &mut Vec<Finding>,
) {
    let runs = |lens| RunStarts::new(input, digit_mask, lens);
    if passes.has(Passes::EMAIL) {
        scan_email(input, out);
    }
    let e164 = passes.has(Passes::E164);
    let nanp = passes.has(Passes::NANP);
    if e164 || nanp {
        scan_phone(input, e164, nanp.then(|| runs(RunLens::Nanp)), out);
    }
    if passes.has(Passes::CARD) {
        scan_digit_runs(input, runs(RunLens::Card), Kind::Card, card_at, out);
    }
    if passes.has(Passes::SSN) {
        scan_digit_runs(input, runs(RunLens::Three), Kind::Ssn, ssn_at, out);
    }
    if passes.has(Passes::IBAN) {
        scan_iban(input, runs(RunLens::Iban), out);
    }
    if passes.has(Passes::IPV4) {
        scan_digit_runs(input, runs(RunLens::Octet), Kind::Ipv4, ipv4_at, out);
    }
    if passes.has(Passes::IPV6) {
        scan_ipv6(input, out);
    }
    if passes.any(Passes::SECRETS) {
        scan_secrets(input, passes, kinds, out);
    }
    if passes.has(Passes::HASH) {
        scan_password_hashes(input, out);
    }
}

/// A set of detector passes: a detector, or one of the two ways a detector finds values
/// (E.164 and NANP phones; Slack tokens and webhooks; PEM keys apart from the other
/// punctuated tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Passes(u32);

impl Passes {
    const NONE: Passes = Passes(0);
    const EMAIL: Passes = Passes(1);
    const E164: Passes = Passes(1 << 1);
    const NANP: Passes = Passes(1 << 2);
    const CARD: Passes = Passes(1 << 3);
    const SSN: Passes = Passes(1 << 4);
    const IBAN: Passes = Passes(1 << 5);
    const IPV4: Passes = Passes(1 << 6);
    const IPV6: Passes = Passes(1 << 7);
    const ASSIGN: Passes = Passes(1 << 8);
    const AWS_SECRET: Passes = Passes(1 << 9);
    /// GitHub, GitLab, Slack and Stripe tokens.
    const PUNCT: Passes = Passes(1 << 10);
    const PEM: Passes = Passes(1 << 11);
    /// AWS access key ids and Google API keys.
    const CAPITAL_A: Passes = Passes(1 << 12);
    const JWT: Passes = Passes(1 << 13);
    const SLACK_HOOK: Passes = Passes(1 << 14);
    const HASH: Passes = Passes(1 << 15);
    /// The passes [`find_lines`] runs line by line.
    const PER_LINE: Passes = Passes(
        Self::E164.0 | Self::NANP.0 | Self::CARD.0 | Self::SSN.0 | Self::IBAN.0 | Self::IPV4.0,
    );
    /// The passes gated by digit run statistics.
    const DIGIT_RUNS: Passes = Passes(Self::NANP.0 | Self::CARD.0 | Self::SSN.0);
    /// The passes of [`scan_secrets`].
    const SECRETS: Passes = Passes(
        Self::ASSIGN.0
            | Self::AWS_SECRET.0
            | Self::PUNCT.0
            | Self::PEM.0
            | Self::CAPITAL_A.0
            | Self::JWT.0
            | Self::SLACK_HOOK.0,
    );

    const fn with(self, other: Passes) -> Passes {
        Passes(self.0 | other.0)
    }
    const fn without(self, other: Passes) -> Passes {
        Passes(self.0 & !other.0)
    }
    const fn only(self, other: Passes) -> Passes {
        Passes(self.0 & other.0)
    }
    /// Whether every pass of `other` is in the set.
    const fn has(self, other: Passes) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether some pass of `other` is in the set.
    const fn any(self, other: Passes) -> bool {
        self.0 & other.0 != 0
    }
}

// ---------------------------------------------------------------------------------------------
// Byte helpers. Out-of-range reads yield 0, which every detector treats as a boundary.

/// The byte at `i`, or 0 past the end.
#[inline]
fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

/// The byte before `i`, or 0 at the start.
#[inline]
fn before(s: &[u8], i: usize) -> u8 {
    match i.checked_sub(1) {
        Some(j) => at(s, j),
        None => 0,
    }
}

/// How many bytes from `i` on satisfy `pred`.
#[inline]
fn run_while(s: &[u8], i: usize, pred: impl Fn(u8) -> bool) -> usize {
    s.get(i..)
        .map_or(0, |rest| rest.iter().take_while(|&&b| pred(b)).count())
}

/// Like [`run_while`] but stops counting at `max`.
#[inline]
fn run_upto(s: &[u8], i: usize, max: usize, pred: impl Fn(u8) -> bool) -> usize {
    s.get(i..).map_or(0, |rest| {
        rest.iter().take(max).take_while(|&&b| pred(b)).count()
    })
}

#[inline]
fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

#[inline]
fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Letter, digit or underscore (a regex `\w` byte).
#[inline]
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `i` starts a maximal run of ASCII digits.
#[cfg(test)]
fn starts_digit_run(s: &[u8], i: usize) -> bool {
    is_digit(at(s, i)) && !is_digit(before(s, i))
}

// ---------------------------------------------------------------------------------------------
// Profile: one pass over the bytes deciding which detectors can possibly match.
//
// Each byte maps to a `u64`: three 17-bit counting lanes (digits, dots, colons) that are summed,
// and class bits above them that are OR-ed. Sums stay exact because inputs are processed in
// chunks far below 2^17 bytes and carries only move upwards, into the ignored class bits.

const LANE_BITS: u32 = 17;
const LANE_MASK: u64 = (1 << LANE_BITS) - 1;
const DOTS_AT: u32 = LANE_BITS;
const COLONS_AT: u32 = 2 * LANE_BITS;
const CLASSES_AT: u32 = 3 * LANE_BITS;
/// Bytes summed before the lanes are flushed.
const CHUNK: usize = 1 << 16;

const DIGIT: u16 = 1;
const DOT: u16 = 1 << 1;
const COLON: u16 = 1 << 2;
const UPPER: u16 = 1 << 3;
const LOWER: u16 = 1 << 4;
const AT: u16 = 1 << 5;
const DASH: u16 = 1 << 6;
const PLUS: u16 = 1 << 7;
const SPACE: u16 = 1 << 8;
const EQUALS: u16 = 1 << 9;
const UNDERSCORE: u16 = 1 << 10;
const SLASH: u16 = 1 << 11;
/// A letter that is not a hex digit (`g`–`z`, `G`–`Z`): every keyword has one, hex has none.
const NON_HEX: u16 = 1 << 12;

/// Lane counts and class bits of every byte value.
static BYTE_PROFILE: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let class = match b {
            b'0'..=b'9' => DIGIT,
            b'.' => DOT,
            b':' => COLON,
            b'A'..=b'F' => UPPER,
            b'G'..=b'Z' => UPPER | NON_HEX,
            b'a'..=b'f' => LOWER,
            b'g'..=b'z' => LOWER | NON_HEX,
            b'@' => AT,
            b'-' => DASH,
            b'+' => PLUS,
            b' ' => SPACE,
            b'=' => EQUALS,
            b'_' => UNDERSCORE,
            b'/' => SLASH,
            _ => 0,
        };
        let lanes = match b {
            b'0'..=b'9' => 1,
            b'.' => 1 << DOTS_AT,
            b':' => 1 << COLONS_AT,
            _ => 0,
        };
        t[i] = lanes | ((class as u64) << CLASSES_AT);
        i += 1;
    }
    t
};

/// What kinds of bytes an input holds.
#[derive(Default)]
struct Profile {
    /// Union of the class bits of every byte.
    classes: u16,
    /// ASCII digits.
    digits: usize,
    /// `.` bytes.
    dots: usize,
    /// `:` bytes.
    colons: usize,
}

impl Profile {
    fn of(input: &[u8]) -> Self {
        let mut p = Profile {
            classes: 0,
            digits: 0,
            dots: 0,
            colons: 0,
        };
        if input.len() <= CHUNK {
            p.add_bytes(input);
        } else {
            input.chunks(CHUNK).for_each(|chunk| p.add_bytes(chunk));
        }
        p
    }

    /// Folds in the bytes of one chunk of at most [`CHUNK`] bytes.
    #[inline]
    fn add_bytes(&mut self, chunk: &[u8]) {
        let (mut or, mut sum) = (0u64, 0u64);
        for &b in chunk {
            let t = BYTE_PROFILE[usize::from(b)];
            or |= t;
            sum = sum.wrapping_add(t);
        }
        self.fold(or, sum);
    }

    /// Folds in the lane sums and class bits of at most [`CHUNK`] bytes.
    #[inline]
    fn fold(&mut self, or: u64, sum: u64) {
        self.classes |= (or >> CLASSES_AT) as u16;
        self.digits += (sum & LANE_MASK) as usize;
        self.dots += ((sum >> DOTS_AT) & LANE_MASK) as usize;
        self.colons += ((sum >> COLONS_AT) & LANE_MASK) as usize;
    }

    /// Whether some byte has one of the `bits` classes.
    fn has(&self, bits: u16) -> bool {
        self.classes & bits != 0
    }
}

/// How an input's digits are grouped into runs, as far as the card / SSN / phone gates care.
#[derive(Default)]
struct RunStats {
    /// Whether some run of digits is 13 or more long.
    run13: bool,
    /// Runs of at least three digits, counted up to 3.
    runs3: u8,
    /// Runs of at least four digits, counted up to 3.
    runs4: u8,
}

impl RunStats {
    /// From the digit position mask `d` of an input of at most 64 or 128 bytes.
    fn of_mask<M: Bits>(d: M) -> Self {
        // Bit i of `mN` is set when digits occupy positions i..i+N; a run of N+ digits is a
        // block of set bits in `mN`.
        let m2 = d & (d >> 1);
        let m3 = m2 & (d >> 2);
        let m4 = m2 & (m2 >> 2);
        let m8 = m4 & (m4 >> 4);
        let m13 = m8 & (m4 >> 8) & (d >> 12);
        RunStats {
            run13: m13 != M::ZERO,
            runs3: blocks_upto3(m3),
            runs4: blocks_upto3(m4),
        }
    }

    /// For inputs of any length: 64 bytes at a time through their digit masks.
    fn of_bytes(input: &[u8]) -> Self {
        let mut stats = RunStats::default();
        // Length of the digit run that reaches the end of the blocks seen so far.
        let mut carry = 0usize;
        for block in input.chunks(64) {
            let mut d = digit_mask(block);
            if block.len() == 64 && d == u64::MAX {
                carry += 64;
                continue;
            }
            // The run that starts in an earlier block (or at this one's start) ends here.
            let lead = d.trailing_ones() as usize;
            stats.count_run(carry + lead);
            d &= u64::MAX.checked_shl(lead as u32).unwrap_or(0);
            // The run that reaches the end of a full block may go on in the next one.
            carry = if block.len() == 64 {
                let trail = d.leading_ones() as usize;
                d &= u64::MAX.checked_shr(trail as u32).unwrap_or(0);
                trail
            } else {
                0
            };
            // Runs wholly inside the block.
            if d != 0 {
                stats.merge(&RunStats::of_mask(d));
            }
        }
        stats.count_run(carry);
        stats
    }

    /// Counts one maximal run of `len` digits.
    fn count_run(&mut self, len: usize) {
        self.runs3 = self.runs3.saturating_add(u8::from(len >= 3)).min(3);
        self.runs4 = self.runs4.saturating_add(u8::from(len >= 4)).min(3);
        self.run13 |= len >= 13;
    }
}

impl RunStats {
    /// Adds the statistics of bytes that follow after a non-digit.
    fn merge(&mut self, other: &RunStats) {
        self.run13 |= other.run13;
        self.runs3 = self.runs3.saturating_add(other.runs3).min(3);
        self.runs4 = self.runs4.saturating_add(other.runs4).min(3);
    }
}

/// The number of blocks of consecutive set bits in `m`, counted up to 3.
fn blocks_upto3<M: Bits>(m: M) -> u8 {
    let mut firsts = m & !(m << 1);
    let mut n = 0;
    while firsts != M::ZERO && n < 3 {
        firsts = firsts.clear_lowest();
        n += 1;
    }
    n
}

/// The bit masks digit positions are kept in: `u64` for inputs of at most 64 bytes, `u128`
/// for lines of at most 128.
trait Bits:
    Copy
    + PartialEq
    + std::ops::BitAnd<Output = Self>
    + std::ops::BitOr<Output = Self>
    + std::ops::Not<Output = Self>
    + std::ops::Shr<u32, Output = Self>
    + std::ops::Shl<u32, Output = Self>
{
    const ZERO: Self;
    /// Without its lowest set bit.
    fn clear_lowest(self) -> Self;
}

impl Bits for u64 {
    const ZERO: Self = 0;
    #[inline]
    fn clear_lowest(self) -> Self {
        self & self.wrapping_sub(1)
    }
}

impl Bits for u128 {
    const ZERO: Self = 0;
    #[inline]
    fn clear_lowest(self) -> Self {
        self & self.wrapping_sub(1)
    }
}

/// The digit position mask of an input, when it is short enough to have one.
#[derive(Clone, Copy)]
enum DigitMask {
    /// At most 64 bytes.
    Narrow(u64),
    /// At most 128 bytes.
    Wide(u128),
}

impl DigitMask {
    /// The mask of `input`, if it is at most 128 bytes long.
    fn of(input: &[u8]) -> Option<Self> {
        match input.len() {
            0..=64 => Some(DigitMask::Narrow(digit_mask(input))),
            65..=128 => {
                let (low, high) = input.split_at(64);
                Some(DigitMask::Wide(
                    u128::from(digit_mask(low)) | (u128::from(digit_mask(high)) << 64),
                ))
            }
            _ => None,
        }
    }

    fn stats(self) -> RunStats {
        match self {
            DigitMask::Narrow(d) => RunStats::of_mask(d),
            DigitMask::Wide(d) => RunStats::of_mask(d),
        }
    }
}

/// Bit `i` set when `input[i]` is an ASCII digit, for inputs of at most 64 bytes: eight bytes
/// at a time with SWAR arithmetic instead of a branch per byte.
fn digit_mask(input: &[u8]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Multiplying the per-byte flags (bit 0 of each byte) by this gathers them into the top byte.
    const GATHER: u64 = 0x0102_0408_1020_4080;
    let digits = |x: u64| -> u64 {
        // High bit of each byte set when 47 < byte < 58 (exact: no borrows across bytes).
        let low = x & (ONES * 127);
        let flags =
            (ONES * (127 + 58)).wrapping_sub(low) & !x & low.wrapping_add(ONES * (127 - 47)) & HIGH;
        (flags >> 7).wrapping_mul(GATHER) >> 56
    };
    let mut words = input.chunks_exact(8);
    let mut mask = 0u64;
    let mut shift = 0u32;
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        mask |= digits(u64::from_le_bytes(bytes)).wrapping_shl(shift);
        shift += 8;
    }
    let tail = words.remainder();
    if !tail.is_empty() && shift < 64 {
        // Assembled in a register: a copy into a buffer and an 8-byte reload stalls.
        let word = tail
            .iter()
            .rev()
            .fold(0u64, |w, &b| (w << 8) | u64::from(b));
        mask |= digits(word) << shift;
    }
    mask
}

/// Start offsets of the maximal digit runs of an input, in increasing order.
enum RunStarts<'a> {
    /// Remaining run starts as a bit mask (inputs of at most 64 bytes).
    Mask(u64),
    /// The same for lines of at most 128 bytes.
    Wide(u128),
    /// Byte-by-byte scan from `i` (long inputs).
    Scan {
        input: &'a [u8],
        /// Start of the next block of 64 bytes to read.
        next: usize,
        /// Run starts left in the block before `next`, as a bit mask.
        starts: u64,
    },
}

/// The digit run lengths a detector can start at; with a digit mask, other runs are skipped
/// without calling the detector.
#[derive(Clone, Copy)]
enum RunLens {
    /// Cards: a first group of 4, or 13+ digits ungrouped.
    Card,
    /// SSN area number: exactly 3.
    Three,
    /// NANP area code: exactly 3, or 1 for a leading `1-`.
    Nanp,
    /// IPv4 octet: at most 3.
    Octet,
    /// IBAN check digits: at least 2.
    Iban,
}

impl<'a> RunStarts<'a> {
    /// `digit_mask` is the input's digit position mask when it has one (short inputs).
    fn new(input: &'a [u8], digit_mask: Option<DigitMask>, lens: RunLens) -> Self {
        match digit_mask {
            Some(DigitMask::Narrow(d)) => RunStarts::Mask(run_starts(d, lens)),
            Some(DigitMask::Wide(d)) => RunStarts::Wide(run_starts(d, lens)),
            None => RunStarts::Scan {
                input,
                next: 0,
                starts: 0,
            },
        }
    }
}

/// The starts of the digit runs in the digit position mask `d` that `lens` admits.
#[inline]
fn run_starts<M: Bits>(d: M, lens: RunLens) -> M {
    {
        // Bit i of `mN` is set when digits occupy positions i..i+N.
        let m2 = d & (d >> 1);
        let m3 = m2 & (d >> 2);
        let m4 = m2 & (m2 >> 2);
        let m5 = m4 & (d >> 4);
        let m13 = m4 & (m4 >> 4) & (m4 >> 8) & (d >> 12);
        let keep = match lens {
            RunLens::Card => (m4 & !m5) | m13,
            RunLens::Three => m3 & !m4,
            RunLens::Nanp => (m3 & !m4) | (d & !m2),
            RunLens::Octet => !m4,
            RunLens::Iban => m2,
        };
        d & !(d << 1) & keep
    }
}

impl Iterator for RunStarts<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        match self {
            RunStarts::Mask(m) => {
                if *m == 0 {
                    return None;
                }
                let i = m.trailing_zeros() as usize;
                *m &= *m - 1;
                Some(i)
            }
            RunStarts::Wide(m) => {
                if *m == 0 {
                    return None;
                }
                let i = m.trailing_zeros() as usize;
                *m &= *m - 1;
                Some(i)
            }
            RunStarts::Scan {
                input,
                next,
                starts,
            } => loop {
                if *starts != 0 {
                    let i = *next - 64 + starts.trailing_zeros() as usize;
                    *starts &= *starts - 1;
                    return Some(i);
                }
                let block = input.get(*next..)?;
                if block.is_empty() {
                    return None;
                }
                let block = block.get(..64).unwrap_or(block);
                let d = digit_mask(block);
                let digit_before = is_digit(before(input, *next));
                *starts = d & !((d << 1) | u64::from(digit_before));
                *next += 64;
            },
        }
    }
}

/// Whether `input` holds `::`.
fn has_double_colon(input: &[u8]) -> bool {
    memchr::memchr_iter(b':', input).any(|i| at(input, i + 1) == b':')
}

fn push(out: &mut Vec<Finding>, kind: Kind, start: usize, end: usize) {
    out.push(Finding { start, end, kind });
}

/// Runs `detect` at the start of every maximal digit run (skipping runs inside a match) and
/// reports what it finds as `kind`.
fn scan_digit_runs(
    input: &[u8],
    starts: RunStarts<'_>,
    kind: Kind,
    detect: fn(&[u8], usize) -> Option<usize>,
    out: &mut Vec<Finding>,
) {
    let mut resume = 0;
    for s in starts {
        if s < resume {
            continue;
        }
        if let Some(e) = detect(input, s) {
            push(out, kind, s, e);
            resume = e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The spans `find` reports for `kind` alone, as text.
    fn spans(kind: Kind, input: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find(input.as_bytes(), KindSet::none().with(kind), &mut out);
        out.iter()
            .map(|f| {
                assert_eq!(f.kind, kind);
                &input[f.start..f.end]
            })
            .collect()
    }

    /// Asserts `kind` finds exactly `expected` in `input`, alone and with every kind on.
    pub(super) fn check(kind: Kind, input: &str, expected: &[&str]) {
        assert_eq!(spans(kind, input), expected, "{} in {input:?}", kind.name());
        let mut out = Vec::new();
        find(input.as_bytes(), KindSet::all(), &mut out);
        let got: Vec<&str> = out
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| &input[f.start..f.end])
            .collect();
        assert_eq!(got, expected, "{} (all kinds) in {input:?}", kind.name());
    }

    pub(super) fn found(kind: Kind, cases: &[(&str, &str)]) {
        for (input, span) in cases {
            check(kind, input, &[span]);
        }
    }

    pub(super) fn missed(kind: Kind, inputs: &[&str]) {
        for input in inputs {
            check(kind, input, &[]);
        }
    }

    #[test]
    fn kind_names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        assert!(KindSet::all().contains(Kind::SecretAssignment));
        assert!(!KindSet::all().without(Kind::Card).contains(Kind::Card));
    }

    #[test]
    fn disabled_kinds_find_nothing() {
        let mut out = Vec::new();
        let text = b"john@example.com 4111111111111111 password=x AKIAIOSFODNN7EXAMPLE";
        find(text, KindSet::none(), &mut out);
        assert!(out.is_empty());
        find(text, KindSet::all().without(Kind::Email), &mut out);
        assert!(out.iter().all(|f| f.kind != Kind::Email));
        assert!(!out.is_empty());
    }

    #[test]
    fn appends_to_existing_findings() {
        let mut out = vec![Finding {
            start: 0,
            end: 1,
            kind: Kind::Card,
        }];
        find(b"a@example.com", KindSet::all(), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[1],
            Finding {
                start: 0,
                end: 13,
                kind: Kind::Email
            }
        );
    }

    pub(super) const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    #[test]
    fn ordinary_values_are_not_matched() {
        for v in [
            "0",
            "42",
            "2024-01-15 10:00:00",
            "paid",
            "2024-06-01 12:30:45.123456+00",
            "1234.56",
            "SKU-10293-B",
            "1.2.3",
            "12:30:45",
            "550e8400-e29b-41d4-a716-446655440000",
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "db-01.prod.internal",
            "ORD-2024-000123",
            "37.7749,-122.4194",
            "{\"status\":\"paid\",\"amount\":12.5}",
        ] {
            let mut out = Vec::new();
            find(v.as_bytes(), KindSet::all(), &mut out);
            assert!(out.is_empty(), "{v:?}: {out:?}");
        }
    }

    #[test]
    fn mixed_text_finds_everything() {
        let text = format!(
            "user john@example.com paid with 4111 1111 1111 1111 from 10.0.0.1, ssn 123-45-6789, \
             iban DE89370400440532013000, call +1 415-555-2671, key AKIAIOSFODNN7EXAMPLE, \
             jwt {JWT}, password=hunter2"
        );
        let mut out = Vec::new();
        find(text.as_bytes(), KindSet::all(), &mut out);
        let mut kinds: Vec<Kind> = out.iter().map(|f| f.kind).collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [
                Kind::Email,
                Kind::Phone,
                Kind::Card,
                Kind::Ssn,
                Kind::Iban,
                Kind::Ipv4,
                Kind::Jwt,
                Kind::AwsAccessKey,
                Kind::SecretAssignment,
            ]
        );
    }

    #[test]
    fn adversarial_inputs_stay_linear() {
        // Each pattern repeated to ~256 KB: a quadratic path would take minutes here.
        let patterns: [&[u8]; 24] = [
            b"xoxb-",
            b"-----BEGIN PRIVATE KEY-----",
            b"-----BEGIN PRIVATE KEY-----\n-----END CERTIFICATE-----\n",
            b"pwd=",
            b"password='",
            b"a@",
            b"a.b@c",
            b"1 ",
            b"4111 ",
            b"+1 ",
            b"1:",
            b"::",
            b"a:",
            b"eyJ.",
            b"eyJaaaaaaaaaaaa.",
            b"aws_secret=",
            b"secret ",
            b"sk_live_",
            b"github_pat_",
            b"AKIA",
            b"DE89",
            b"1.",
            b"glpat-",
            b"hooks.slack.com/services/T0/",
        ];
        for pattern in patterns {
            let input = pattern.repeat((256 << 10) / pattern.len());
            let t0 = std::time::Instant::now();
            let mut out = Vec::new();
            find(&input, KindSet::all(), &mut out);
            let elapsed = t0.elapsed();
            assert!(
                elapsed < std::time::Duration::from_secs(5),
                "{:?}: {elapsed:?}",
                String::from_utf8_lossy(pattern)
            );
        }
        // Long runs followed by many short anchors.
        let mut input = b"sk_live_".to_vec();
        input.extend(std::iter::repeat_n(b'a', 200_000));
        input.extend(b"-a_".repeat(50_000));
        let mut out = Vec::new();
        find(&input, KindSet::all(), &mut out);
    }

    /// Byte soup built from fragments that exercise every detector's edge cases.
    fn fragments() -> impl Strategy<Value = Vec<u8>> {
        let pieces: Vec<&'static [u8]> = vec![
            b"4111",
            b"1111",
            b" ",
            b"-",
            b".",
            b":",
            b"::",
            b"@",
            b"+",
            b"(",
            b")",
            b"1",
            b"25",
            b"255",
            b"0",
            b"9",
            b"DE89",
            b"GB82",
            b"3704",
            b"eyJ",
            b"eyJhbGciOiJIUzI1NiJ9",
            b"password",
            b"pwd",
            b"Token",
            b"=",
            b"=>",
            b"\"",
            b"'",
            b"\\",
            b"token",
            b"AKIA",
            b"AIza",
            b"ghp_",
            b"gh",
            b"github",
            b"_pat_",
            b"glpat",
            b"glpat-",
            b"xox",
            b"xoxb-",
            b"sk",
            b"_live_",
            b"sk_live_",
            b"-----BEGIN ",
            b"PRIVATE KEY-----",
            b"-----END ",
            b"-----",
            b"hooks.slack.com/services/",
            b"https://",
            b"T0",
            b"/",
            b"B0",
            b"aws_secret",
            b"aws ",
            b"ecret",
            b"ECRET",
            b"secret",
            b"_access_key",
            b"AccessKey",
            b"wJalrXUtnFEMI",
            b"\n",
            b"\t",
            b"\xff",
            b"\xc3\xa9",
            b"example",
            b"com",
            b"fe80",
            b"ffff",
            b"ABCDEFGHIJKLMNOP",
            b"abcdefghij",
            b"0123456789",
            b"_",
            b"[",
            b"{",
            b"%",
        ];
        proptest::collection::vec(proptest::sample::select(pieces), 0..80).prop_map(|v| v.concat())
    }

    fn assert_sane(input: &[u8]) {
        let mut out = Vec::new();
        find(input, KindSet::all(), &mut out);
        for f in &out {
            assert!(
                f.start < f.end && f.end <= input.len(),
                "{f:?} in {} bytes",
                input.len()
            );
        }
        let mut again = Vec::new();
        find(input, KindSet::all(), &mut again);
        assert_eq!(out, again);
        for k in Kind::ALL {
            let mut alone = Vec::new();
            find(input, KindSet::none().with(k), &mut alone);
            let expected: Vec<Finding> = out.iter().copied().filter(|f| f.kind == k).collect();
            assert_eq!(alone, expected, "{}", k.name());
            for (i, f) in alone.iter().enumerate() {
                assert!(!alone[..i].contains(f), "duplicate {f:?}");
            }
        }
    }

    /// The line-by-line pass finds exactly what the whole-input pass finds.
    fn assert_lines_match_whole(input: &[u8], kinds: KindSet) {
        let sorted = |mut v: Vec<Finding>| {
            v.sort_unstable_by_key(|f| (f.start, f.end, f.kind));
            v
        };
        let mut lines = Vec::new();
        find_lines(input, kinds, &mut lines);
        let mut whole = Vec::new();
        find_whole(input, kinds, &mut whole);
        assert_eq!(
            sorted(lines),
            sorted(whole),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn lines_match_whole_on_values_spanning_lines() {
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA\n-----END RSA PRIVATE KEY-----";
        for input in [
            format!("a\n{rsa}\nb"),
            format!(
                "x\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n{}",
                "1\n".repeat(200)
            ),
            "password=\"first \\\nsecond\" 4111111111111111\n".repeat(20),
            "token: 'a \\\n b \\\n\nc'\n".repeat(30),
            "4222 222222 222\n".repeat(30),
            format!("{}\n4222 222222 222\n", "1 22 333 4444 55555".repeat(30)),
        ] {
            for kind in Kind::ALL {
                assert_lines_match_whole(input.as_bytes(), KindSet::none().with(kind));
            }
            assert_lines_match_whole(input.as_bytes(), KindSet::all());
        }
    }

    /// The byte-at-a-time run statistics `RunStats::of_bytes` replaced.
    fn run_stats_reference(input: &[u8]) -> (bool, u8, u8) {
        let (mut run13, mut runs3, mut runs4) = (false, 0u8, 0u8);
        let mut run = 0usize;
        for &b in input {
            run = if is_digit(b) { run + 1 } else { 0 };
            runs3 = runs3.saturating_add(u8::from(run == 3)).min(3);
            runs4 = runs4.saturating_add(u8::from(run == 4)).min(3);
            run13 |= run >= 13;
        }
        (run13, runs3, runs4)
    }

    #[test]
    fn past_property_failures() {
        // A 14-digit "octet" once overflowed the IPv4 parser.
        assert_sane(b"hooks.slack.com/services/41110123456789hooks.slack.com/services/");
        // An unterminated private key once hid a GitLab token from the all-kinds run only.
        assert_sane(b"-----BEGIN PRIVATE KEY-----glpat-aws_secret255-----BEGIN ");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics_on_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            assert_sane(&input);
        }

        #[test]
        fn never_panics_on_fragment_soup(input in fragments()) {
            assert_sane(&input);
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn lines_find_what_the_whole_input_finds(
            lines in proptest::collection::vec(fragments(), 1..12),
            kind in proptest::sample::select(Kind::ALL.to_vec()),
        ) {
            let input = lines.join(&b"\n"[..]);
            for kinds in [KindSet::all(), KindSet::none().with(kind)] {
                assert_lines_match_whole(&input, kinds);
            }
        }

        #[test]
        fn run_stats_count_as_byte_by_byte(
            input in proptest::collection::vec(
                prop_oneof![Just(b'1'), Just(b'1'), Just(b'1'), Just(b'x')],
                0..400,
            ),
        ) {
            let stats = RunStats::of_bytes(&input);
            prop_assert_eq!(
                (stats.run13, stats.runs3, stats.runs4),
                run_stats_reference(&input)
            );
        }

        #[test]
        fn run_starts_are_every_digit_run_start(
            input in proptest::collection::vec(
                prop_oneof![Just(b'1'), Just(b'1'), Just(b'x')],
                0..300,
            ),
        ) {
            let expected: Vec<usize> =
                (0..input.len()).filter(|&i| starts_digit_run(&input, i)).collect();
            let got: Vec<usize> = RunStarts::new(&input, None, RunLens::Card).collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn lines_find_what_the_whole_input_finds_in_bytes(
            input in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'\n'), Just(b'\\'), Just(b'-'), Just(b'4')],
                0..600,
            ),
        ) {
            assert_lines_match_whole(&input, KindSet::all());
        }
    }
}
