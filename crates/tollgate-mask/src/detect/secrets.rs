//! Secrets and tokens: JWTs, PEM private keys, AWS, GitHub, GitLab, Slack, Stripe and Google
//! credentials, and the values of secret assignments (`password=…`). Each family is anchored on
//! a cheap search: `=` / `:` for assignments, `secret` for AWS secrets, `_` / `-` / `A` for
//! token prefixes, `eyJ`, `hooks.slack.com`.

use std::sync::LazyLock;

use memchr::memmem;

use super::{
    COLON, DASH, EQUALS, Finding, Kind, KindSet, LOWER, NON_HEX, Passes, Profile, SLASH,
    UNDERSCORE, UPPER, at, before, is_alnum, is_digit, is_word, push, run_upto, run_while,
};

/// Runs the secret and token detector passes in `passes` (their prerequisites were checked by
/// the caller).
pub(super) fn scan_secrets(input: &[u8], passes: Passes, kinds: KindSet, out: &mut Vec<Finding>) {
    if passes.has(Passes::ASSIGN) {
        scan_assignments(input, out);
    }
    if passes.has(Passes::AWS_SECRET) {
        scan_aws_secrets(input, out);
    }
    if passes.has(Passes::PUNCT) {
        let mut punctuated = KindSet::none();
        for kind in [
            Kind::GithubToken,
            Kind::GitlabToken,
            Kind::SlackToken,
            Kind::StripeKey,
        ] {
            if kinds.contains(kind) {
                punctuated = punctuated.with(kind);
            }
        }
        if passes.has(Passes::PEM) {
            punctuated = punctuated.with(Kind::PrivateKey);
        }
        scan_punctuated_tokens(input, punctuated, out);
    } else if passes.has(Passes::PEM) {
        scan_private_keys(input, out);
    }
    if passes.has(Passes::CAPITAL_A) {
        scan_capital_a_tokens(input, kinds, out);
    }
    if passes.has(Passes::JWT) {
        let mut resume = 0;
        for s in JWT_FINDER.find_iter(input) {
            if s >= resume
                && let Some(e) = jwt_at(input, s)
            {
                push(out, Kind::Jwt, s, e);
                resume = e;
            }
        }
    }
    if passes.has(Passes::SLACK_HOOK) {
        for ks in SLACK_HOOK_FINDER.find_iter(input) {
            if let Some((s, e)) = slack_webhook(input, ks, ks + SLACK_HOOK.len()) {
                push(out, Kind::SlackToken, s, e);
            }
        }
    }
}

/// The secret passes the prerequisites of a whole input allow (`p` its profile, `len` its
/// length). Every keyword and token prefix holds a letter outside `a`–`f`, so hex, numbers and
/// dates never reach the secret detectors. (The one gap: an `ACCA…` AWS key id whose 16 other
/// characters are all hex digits, alone in a value without any other letter `g`–`z`.)
#[inline]
pub(super) fn secret_passes(p: &Profile, len: usize, kinds: KindSet) -> Passes {
    let mut passes = Passes::NONE;
    if !p.has(NON_HEX) {
        return passes;
    }
    if kinds.contains(Kind::SecretAssignment) && p.has(EQUALS | COLON) {
        passes = passes.with(Passes::ASSIGN);
    }
    if kinds.contains(Kind::AwsSecretKey) && len >= 46 {
        passes = passes.with(Passes::AWS_SECRET);
    }
    // Lowercase prefixes: `xoxb-` + 10 (15 bytes), `sk_live_` + 16 (24); `-----BEGIN ` is
    // uppercase and a whole BEGIN line takes 27.
    let lower_token =
        p.has(LOWER) && ((len >= 15 && p.has(DASH)) || (len >= 24 && p.has(UNDERSCORE)));
    let pem = len >= 27 && p.has(UPPER) && p.has(DASH);
    if lower_token || pem {
        let others = [
            Kind::GithubToken,
            Kind::GitlabToken,
            Kind::SlackToken,
            Kind::StripeKey,
        ];
        if others.iter().any(|&k| kinds.contains(k)) {
            passes = passes.with(Passes::PUNCT);
        }
        if kinds.contains(Kind::PrivateKey) {
            passes = passes.with(Passes::PEM);
        }
    }
    let aws_or_google = kinds.contains(Kind::AwsAccessKey) || kinds.contains(Kind::GoogleApiKey);
    if len >= 20 && p.has(UPPER) && aws_or_google {
        passes = passes.with(Passes::CAPITAL_A);
    }
    if kinds.contains(Kind::Jwt) && len >= 30 && p.dots >= 2 {
        passes = passes.with(Passes::JWT);
    }
    if kinds.contains(Kind::SlackToken) && len >= 40 && p.has(SLASH) {
        passes = passes.with(Passes::SLACK_HOOK);
    }
    passes
}

/// The secret passes that can find something inside one line of length `len` and profile `p`:
/// necessary conditions only (unlike [`secret_passes`], whose length limits are rounded up and
/// which leaves the all-hex `ACCA…` key out). Private keys span lines and are not included.
pub(super) fn line_secret_passes(p: &Profile, len: usize) -> Passes {
    let mut passes = Passes::NONE;
    // `AKIA` / `AIza` and 16 or 35 more: no letter `g`–`z` needed.
    if len >= 20 && p.has(UPPER) {
        passes = passes.with(Passes::CAPITAL_A);
    }
    if !p.has(NON_HEX) {
        return passes;
    }
    if p.has(EQUALS | COLON) {
        passes = passes.with(Passes::ASSIGN);
    }
    // `aws_secret` / `secret_access_key` and 40 characters.
    if len >= 46 {
        passes = passes.with(Passes::AWS_SECRET);
    }
    if p.has(LOWER) && ((len >= 15 && p.has(DASH)) || (len >= 24 && p.has(UNDERSCORE))) {
        passes = passes.with(Passes::PUNCT);
    }
    // Header and payload of 10 or more, two dots, the signature may be empty.
    if len >= 22 && p.dots >= 2 {
        passes = passes.with(Passes::JWT);
    }
    // `hooks.slack.com/services/T0/B0/` and a key of 8.
    if len >= 39 && p.has(SLASH) {
        passes = passes.with(Passes::SLACK_HOOK);
    }
    passes
}

const SLACK_HOOK: &[u8] = b"hooks.slack.com/services/";
const PEM_BEGIN: &[u8] = b"-----BEGIN ";
static PEM_BEGIN_FINDER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(PEM_BEGIN));
static JWT_FINDER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"eyJ"));
static SLACK_HOOK_FINDER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(SLACK_HOOK));
static SECRET_LOWER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"ecret"));
static SECRET_UPPER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"ECRET"));

/// Whether `input[i..]` starts with `word` (lowercase), ignoring ASCII case.
fn starts_with_ci(input: &[u8], i: usize, word: &[u8]) -> bool {
    input
        .get(i..)
        .and_then(|rest| rest.get(..word.len()))
        .is_some_and(|t| t.eq_ignore_ascii_case(word))
}

/// Whether `input[i..]` starts with `word` exactly.
fn starts_with(input: &[u8], i: usize, word: &[u8]) -> bool {
    input.get(i..).is_some_and(|rest| rest.starts_with(word))
}

/// Whether a keyword may start at `ks`: a whole word, the tail of `db_password`, or a camel-case
/// tail (`dbPassword`); never inside a word (`bypass`).
fn keyword_starts(input: &[u8], ks: usize) -> bool {
    let prev = before(input, ks);
    !is_alnum(prev)
        || (at(input, ks).is_ascii_uppercase() && (prev.is_ascii_lowercase() || is_digit(prev)))
}

// --- Secret assignments

/// Keywords whose assigned value is a secret (lowercase; matched ignoring ASCII case).
const SECRET_KEYWORDS: [&[u8]; 16] = [
    b"password",
    b"passwd",
    b"passphrase",
    b"pass",
    b"pwd",
    b"secret",
    b"secret_key",
    b"secretkey",
    b"secret_access_key",
    b"secretaccesskey",
    b"private_key",
    b"privatekey",
    b"api_key",
    b"apikey",
    b"api-key",
    b"token",
];

/// `keyword = value` / `"keyword": "value"`, anchored on every `=` and `:`.
fn scan_assignments(input: &[u8], out: &mut Vec<Finding>) {
    // Separators inside a reported value (`pwd=a=b`) are part of it.
    let mut resume = 0;
    for q in memchr::memchr2_iter(b'=', b':', input) {
        if q >= resume
            && let Some(keyword) = keyword_before(input, q)
            && let Some((s, e)) = assigned_value(input, q + 1, keyword == b"pwd")
        {
            push(out, Kind::SecretAssignment, s, e);
            resume = e;
        }
    }
}

/// The secret keyword that ends just before the `=` / `:` at `q`, past optional spaces and a
/// closing quote.
fn keyword_before(input: &[u8], q: usize) -> Option<&'static [u8]> {
    let mut j = q;
    while j > 0 && matches!(before(input, j), b' ' | b'\t') {
        j -= 1;
    }
    if matches!(before(input, j), b'"' | b'\'') {
        j -= 1;
    }
    // Every keyword ends in one of these letters.
    if !matches!(
        before(input, j).to_ascii_lowercase(),
        b'd' | b'e' | b'n' | b's' | b't' | b'y'
    ) {
        return None;
    }
    SECRET_KEYWORDS.into_iter().find(|kw| {
        j.checked_sub(kw.len())
            .is_some_and(|ks| starts_with_ci(input, ks, kw) && keyword_starts(input, ks))
    })
}

/// The value after an `=` / `:` ending at `i`: quoted (span inside the quotes) or up to
/// whitespace, `,`, `;`, `&`, `}` or `)`. Empty values and placeholders are not secrets.
fn assigned_value(input: &[u8], mut i: usize, is_pwd: bool) -> Option<(usize, usize)> {
    if matches!(at(input, i), b'>' | b'=') {
        i += 1;
    }
    i += run_while(input, i, |b| b == b' ' || b == b'\t');
    let quote = at(input, i);
    let (vs, ve) = if matches!(quote, b'"' | b'\'') {
        (i + 1, quoted_end(input, i + 1, quote))
    } else if matches!(quote, b'{' | b'[') {
        return None;
    } else {
        let stop = |b: u8| b.is_ascii_whitespace() || matches!(b, b',' | b';' | b'&' | b'}' | b')');
        (i, i + run_while(input, i, |b| !stop(b)))
    };
    let value = input.get(vs..ve)?;
    // `PWD=/home/alice` is a working directory.
    let path = is_pwd && matches!(value.first(), Some(b'/' | b'~'));
    (!value.is_empty() && !placeholder(value) && !path).then_some((vs, ve))
}

// --- AWS secret access keys

/// 40-character AWS secrets after an AWS secret keyword, anchored on `secret` / `SECRET`.
fn scan_aws_secrets(input: &[u8], out: &mut Vec<Finding>) {
    let mut lower = SECRET_LOWER.find_iter(input).peekable();
    let mut upper = SECRET_UPPER.find_iter(input).peekable();
    let mut last = (0, 0);
    // Both searches report in order; merge them so duplicates are adjacent.
    loop {
        let hit = match (lower.peek(), upper.peek()) {
            (Some(a), Some(b)) if a < b => lower.next(),
            (_, Some(_)) => upper.next(),
            (Some(_), None) => lower.next(),
            (None, None) => break,
        };
        if let Some(ke) = hit.and_then(|h| aws_keyword_end(input, h.checked_sub(1)?))
            && let Some(span) = aws_secret_after(input, ke)
            && span != last
        {
            push(out, Kind::AwsSecretKey, span.0, span.1);
            last = span;
        }
    }
}

/// End of the AWS secret keyword around the `secret` at `s`: `aws_secret`, `aws secret`,
/// `secret_access_key`, `SecretAccessKey`, `aws_secret_access_key`.
fn aws_keyword_end(input: &[u8], s: usize) -> Option<usize> {
    if !starts_with_ci(input, s, b"secret") {
        return None;
    }
    let mut ke = s + 6;
    let access = if starts_with_ci(input, ke, b"_access_key") {
        11
    } else if starts_with_ci(input, ke, b"accesskey") {
        9
    } else {
        0
    };
    ke += access;
    let aws = s >= 4
        && starts_with_ci(input, s - 4, b"aws")
        && matches!(before(input, s), b'_' | b' ' | b'-');
    let ks = if aws { s - 4 } else { s };
    ((aws || access > 0) && keyword_starts(input, ks)).then_some(ke)
}

// --- Token prefixes

/// Tokens whose prefix holds `_` or `-`: GitHub, Stripe, GitLab, Slack, PEM private keys.
fn scan_punctuated_tokens(input: &[u8], kinds: KindSet, out: &mut Vec<Finding>) {
    let mut resume = Resume::default();
    let mut bodies = BodyRuns::default();
    for i in memchr::memchr2_iter(b'_', b'-', input) {
        let Some((kind, s)) = punctuated_prefix(input, i) else {
            continue;
        };
        if kinds.contains(kind)
            && resume.admits(kind, s)
            && let Some(e) = punctuated_token_end(input, kind, s, i, &mut bodies)
        {
            push(out, kind, s, e);
            resume.set(kind, e);
        }
    }
}

/// The token kind and start whose prefix has its first `_` / `-` at `i`: `ghp_`, `github_pat_`,
/// `sk_live_`, `rk_test_`, `glpat-`, `xoxb-`, `-----BEGIN `.
fn punctuated_prefix(input: &[u8], i: usize) -> Option<(Kind, usize)> {
    let back = |n: usize, word: &[u8]| i.checked_sub(n).filter(|&s| starts_with(input, s, word));
    if at(input, i) == b'_' {
        if let Some(s) = back(2, b"sk").or_else(|| back(2, b"rk"))
            && (starts_with(input, i, b"_live_") || starts_with(input, i, b"_test_"))
        {
            return Some((Kind::StripeKey, s));
        }
        if let Some(s) = back(3, b"gh")
            && matches!(at(input, s + 2), b'p' | b'o' | b'u' | b's' | b'r')
        {
            return Some((Kind::GithubToken, s));
        }
        return back(6, b"github")
            .filter(|_| starts_with(input, i, b"_pat_"))
            .map(|s| (Kind::GithubToken, s));
    }
    if starts_with(input, i, PEM_BEGIN) {
        return Some((Kind::PrivateKey, i));
    }
    if let Some(s) = back(5, b"glpat") {
        return Some((Kind::GitlabToken, s));
    }
    back(4, b"xox")
        .filter(|&s| matches!(at(input, s + 3), b'a' | b'b' | b'p' | b'o' | b's' | b'r'))
        .map(|s| (Kind::SlackToken, s))
}

/// End of the `kind` token starting at `s` whose prefix has its first `_` / `-` at `i`.
fn punctuated_token_end(
    input: &[u8],
    kind: Kind,
    s: usize,
    i: usize,
    bodies: &mut BodyRuns,
) -> Option<usize> {
    let (body_start, lens, body) = match kind {
        Kind::StripeKey => (i + 6, 16..=MAX_TOKEN, Body::Alnum),
        // `github_pat_`: the first `_` is six bytes in.
        Kind::GithubToken if s + 6 == i => (i + 5, 22..=MAX_TOKEN, Body::Word),
        Kind::GithubToken => (i + 1, 36..=36, Body::Alnum),
        Kind::GitlabToken => (i + 1, 20..=64, Body::WordDash),
        Kind::SlackToken => (i + 1, 10..=MAX_TOKEN, Body::AlnumDash),
        Kind::PrivateKey => return private_key_at(input, i + 11),
        _ => return None,
    };
    if is_alnum(before(input, s)) {
        return None;
    }
    let e = bodies.end(body, input, body_start);
    (lens.contains(&(e - body_start)) && !is_alnum(at(input, e))).then_some(e)
}

/// PEM private key blocks alone, anchored on `-----BEGIN `: the same blocks
/// [`scan_punctuated_tokens`] reports for [`Kind::PrivateKey`].
fn scan_private_keys(input: &[u8], out: &mut Vec<Finding>) {
    let mut resume = 0;
    for s in PEM_BEGIN_FINDER.find_iter(input) {
        if s >= resume
            && let Some(e) = private_key_at(input, s + PEM_BEGIN.len())
        {
            push(out, Kind::PrivateKey, s, e);
            resume = e;
        }
    }
}

/// The characters a token body is made of.
#[derive(Clone, Copy)]
enum Body {
    /// `[A-Za-z0-9]`
    Alnum,
    /// `[A-Za-z0-9_]`
    Word,
    /// `[A-Za-z0-9_-]`
    WordDash,
    /// `[A-Za-z0-9-]`
    AlnumDash,
}

impl Body {
    fn accepts(self, b: u8) -> bool {
        match self {
            Body::Alnum => is_alnum(b),
            Body::Word => is_word(b),
            Body::WordDash => is_word(b) || b == b'-',
            Body::AlnumDash => is_alnum(b) || b == b'-',
        }
    }
}

/// Where the last run of each body charset ended, so the anchors inside one long run
/// (`xoxb-xoxb-…`) do not each rescan it.
#[derive(Default)]
struct BodyRuns([(usize, usize); 4]);

impl BodyRuns {
    /// End of the maximal run of `body` bytes from `from`.
    fn end(&mut self, body: Body, input: &[u8], from: usize) -> usize {
        let scan = || from + run_while(input, from, |b| body.accepts(b));
        let Some(last) = self.0.get_mut(body as usize) else {
            return scan();
        };
        // Every byte of `last.0..last.1` is a body byte, so a run from inside it ends there too.
        if last.0 <= from && from <= last.1 && last.1 > 0 {
            return last.1;
        }
        let end = scan();
        *last = (from, end);
        end
    }
}

/// Longest token body accepted where the format sets no length: longer runs are not tokens.
const MAX_TOKEN: usize = 255;

/// Per-kind end of the last token reported, so a token's inner anchors are skipped without
/// one kind hiding another (each kind's findings do not depend on which others are on).
#[derive(Default)]
struct Resume([usize; Kind::ALL.len()]);

impl Resume {
    /// Whether a `kind` token may start at `s` (past the last one reported).
    fn admits(&self, kind: Kind, s: usize) -> bool {
        self.0.get(kind as usize).is_some_and(|&end| s >= end)
    }

    fn set(&mut self, kind: Kind, end: usize) {
        if let Some(e) = self.0.get_mut(kind as usize) {
            *e = end;
        }
    }
}

/// AWS access key ids (`AKIA…`, `ASIA…`, …) and Google API keys (`AIza…`), anchored on `A`.
fn scan_capital_a_tokens(input: &[u8], kinds: KindSet, out: &mut Vec<Finding>) {
    const AWS_PREFIXES: [&[u8]; 10] = [
        b"KIA", b"SIA", b"BIA", b"CCA", b"GPA", b"IDA", b"ROA", b"NPA", b"NVA", b"IPA",
    ];
    let mut resume = Resume::default();
    for s in memchr::memchr_iter(b'A', input) {
        let found = if AWS_PREFIXES.iter().any(|p| starts_with(input, s + 1, p)) {
            let body = |b: u8| b.is_ascii_uppercase() || is_digit(b);
            ranged_token(input, s, s + 4, 16..=16, body).map(|e| (Kind::AwsAccessKey, e))
        } else if starts_with(input, s + 1, b"Iza") {
            let body = |b: u8| is_word(b) || b == b'-';
            ranged_token(input, s, s + 4, 35..=35, body).map(|e| (Kind::GoogleApiKey, e))
        } else {
            None
        };
        if let Some((kind, e)) = found
            && kinds.contains(kind)
            && resume.admits(kind, s)
        {
            push(out, kind, s, e);
            resume.set(kind, e);
        }
    }
}

/// End of a token whose prefix is `input[ks..ke]` and whose body is a maximal run of `body`
/// bytes with a length in `lens`, not glued to other alphanumerics.
fn ranged_token(
    input: &[u8],
    ks: usize,
    ke: usize,
    lens: std::ops::RangeInclusive<usize>,
    body: impl Fn(u8) -> bool,
) -> Option<usize> {
    if is_alnum(before(input, ks)) {
        return None;
    }
    let cap = lens.end().saturating_add(1);
    let run = run_upto(input, ke, cap, &body);
    let e = ke + run;
    (lens.contains(&run) && !is_alnum(at(input, e)) && !body(at(input, e))).then_some(e)
}

/// End of a JWT starting at `s` (`eyJ…` header, `.eyJ…` payload, `.` signature).
fn jwt_at(input: &[u8], s: usize) -> Option<usize> {
    let b64url = |b: u8| is_word(b) || b == b'-';
    if b64url(before(input, s)) || before(input, s) == b'.' {
        return None;
    }
    let header = run_while(input, s, b64url);
    let p = s + header + 1;
    if header < 10 || at(input, p - 1) != b'.' || input.get(p..p + 3) != Some(b"eyJ".as_slice()) {
        return None;
    }
    let payload = run_while(input, p, b64url);
    let sig = p + payload + 1;
    if payload < 10 || at(input, sig - 1) != b'.' {
        return None;
    }
    Some(sig + run_while(input, sig, b64url))
}

/// Whether a PEM label (`RSA PRIVATE KEY`, `PGP PRIVATE KEY BLOCK`, …) names a private key.
fn private_key_label(label: &[u8]) -> bool {
    label
        .iter()
        .all(|&b| b.is_ascii_uppercase() || is_digit(b) || b == b' ')
        && (label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK"))
}

/// The PEM label starting at `i` and the index just past its closing `-----`.
fn pem_label(input: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let rest = input.get(i..)?;
    let len = rest
        .iter()
        .take(64)
        .position(|&b| !(b.is_ascii_uppercase() || is_digit(b) || b == b' '))?;
    let label = rest.get(..len)?;
    (rest.get(len..len + 5) == Some(b"-----".as_slice())).then_some((label, i + len + 5))
}

/// End of the private key block whose `-----BEGIN ` ends at `ke`: past the matching END
/// line, or the end of input when there is none (fail closed).
fn private_key_at(input: &[u8], ke: usize) -> Option<usize> {
    let (label, body) = pem_label(input, ke)?;
    if !private_key_label(label) {
        return None;
    }
    let rest = input.get(body..)?;
    for h in memmem::find_iter(rest, b"-----END ") {
        if let Some((end_label, end)) = pem_label(input, body + h + 9)
            && private_key_label(end_label)
        {
            return Some(end);
        }
    }
    Some(input.len())
}

/// `https://hooks.slack.com/services/T…/B…/…` around the host match `input[ks..ke]`.
fn slack_webhook(input: &[u8], ks: usize, ke: usize) -> Option<(usize, usize)> {
    let scheme_at = |scheme: &[u8]| {
        ks.checked_sub(scheme.len()).filter(|&s| {
            input
                .get(s..ks)
                .is_some_and(|t| t.eq_ignore_ascii_case(scheme))
        })
    };
    let start = scheme_at(b"https://")
        .or_else(|| scheme_at(b"http://"))
        .unwrap_or(ks);
    if start == ks && is_alnum(before(input, ks)) {
        return None;
    }
    let team = run_while(input, ke, is_alnum);
    let b = ke + team + 1;
    if at(input, ke) != b'T' || team < 2 || at(input, b - 1) != b'/' {
        return None;
    }
    let bot = run_while(input, b, is_alnum);
    let k = b + bot + 1;
    if at(input, b) != b'B' || bot < 2 || at(input, k - 1) != b'/' {
        return None;
    }
    let key = run_while(input, k, is_alnum);
    (key >= 8).then_some((start, k + key))
}

fn is_base64(b: u8) -> bool {
    is_alnum(b) || b == b'/' || b == b'+'
}

/// A 40-character AWS secret within a short window after the keyword ending at `ke`.
fn aws_secret_after(input: &[u8], ke: usize) -> Option<(usize, usize)> {
    const WINDOW: usize = 32;
    let limit = ke.saturating_add(WINDOW).min(input.len());
    let mut p = ke;
    while p < limit {
        let b = at(input, p);
        if b == b'\n' {
            return None;
        }
        if is_base64(b) && !is_base64(before(input, p)) {
            let run = run_upto(input, p, 41, is_base64);
            if run == 40 && at(input, p + 40) != b'=' {
                return Some((p, p + 40));
            }
            p += run.max(1);
        } else {
            p += 1;
        }
    }
    None
}

/// Index of the closing `quote` from `i` (backslash escapes honoured), or of the end of the
/// line / input when unterminated.
fn quoted_end(input: &[u8], mut i: usize, quote: u8) -> usize {
    while i < input.len() {
        match at(input, i) {
            b'\\' => i += 2,
            b'\n' => return i,
            b if b == quote => return i,
            _ => i += 1,
        }
    }
    input.len()
}

/// Values that are clearly not secrets: `null`, `true`, `***`, `<redacted>`, `[REDACTED]`, ….
fn placeholder(v: &[u8]) -> bool {
    const WORDS: [&[u8]; 7] = [
        b"null",
        b"true",
        b"false",
        b"none",
        b"nil",
        b"undefined",
        b"<redacted>",
    ];
    WORDS.iter().any(|w| v.eq_ignore_ascii_case(w))
        || v.iter().all(|&b| matches!(b, b'*' | b'=' | b'.' | b'-'))
        || (v.len() >= 9
            && v.first() == Some(&b'[')
            && v.last() == Some(&b']')
            && v.get(1..9)
                .is_some_and(|t| t.eq_ignore_ascii_case(b"redacted")))
}

#[cfg(test)]
mod tests {
    use crate::detect::Kind;
    use crate::detect::tests::{JWT, check, found, missed};

    #[test]
    fn jwt() {
        let bearer = format!("Authorization: Bearer {JWT}");
        let quoted = format!("{{\"id_token\":\"{JWT}\"}}");
        found(Kind::Jwt, &[(JWT, JWT), (&bearer, JWT), (&quoted, JWT)]);
        let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0In0.";
        found(Kind::Jwt, &[(none, none)]);
        missed(
            Kind::Jwt,
            &[
                "eyJhbGciOiJIUzI1NiJ9",
                "abc.def.ghi",
                "eyJhbGciOiJIUzI1NiJ9.abcdefghijkl.sig",
                "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig",
                "EYJhbGciOiJIUzI1NiJ9.EYJzdWIiOiIxMjM0In0.sig",
            ],
        );
    }

    #[test]
    fn private_key() {
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA\n-----END RSA PRIVATE KEY-----";
        found(
            Kind::PrivateKey,
            &[(rsa, rsa), (&format!("key:\n{rsa}\ntrailer"), rsa)],
        );
        let ssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n-----END OPENSSH PRIVATE KEY-----";
        let pgp =
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----";
        let pkcs8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\\nMIIF\\n-----END ENCRYPTED PRIVATE KEY-----";
        found(Kind::PrivateKey, &[(ssh, ssh), (pgp, pgp), (pkcs8, pkcs8)]);
        // No END line: the rest of the input is the key.
        let open = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE";
        found(Kind::PrivateKey, &[(&format!("x {open}"), open)]);
        // END of another block does not close a private key.
        let mixed = "-----BEGIN PRIVATE KEY-----\nAA\n-----END CERTIFICATE-----\nBB\n-----END PRIVATE KEY-----";
        found(Kind::PrivateKey, &[(mixed, mixed)]);
        let two = format!("{rsa}\n--\n{ssh}");
        check(Kind::PrivateKey, &two, &[rsa, ssh]);
        missed(
            Kind::PrivateKey,
            &[
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
                "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
                "-----begin rsa private key-----\nMIIB",
                "BEGIN RSA PRIVATE KEY",
            ],
        );
    }

    #[test]
    fn aws_access_key() {
        found(
            Kind::AwsAccessKey,
            &[
                ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
                (
                    "aws_access_key_id=ASIAY34FZKBOKMUTVV7A",
                    "ASIAY34FZKBOKMUTVV7A",
                ),
                ("{\"key\":\"AIDAJQABLZS4A3QDU576\"}", "AIDAJQABLZS4A3QDU576"),
                ("AROA1234567890ABCDEF ok", "AROA1234567890ABCDEF"),
            ],
        );
        missed(
            Kind::AwsAccessKey,
            &[
                "AKIAIOSFODNN7EXAMPL",
                "AKIAIOSFODNN7EXAMPLEX",
                "akiaiosfodnn7example",
                "XAKIAIOSFODNN7EXAMPLE",
                "AKIAIOSFODNN7eXAMPLE",
                "Asia is big",
            ],
        );
    }

    const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    #[test]
    fn aws_secret_key() {
        let cases = [
            format!("aws_secret_access_key = {AWS_SECRET}"),
            format!("{{\"AWS_SECRET_ACCESS_KEY\": \"{AWS_SECRET}\"}}"),
            format!("AWS_SECRET={AWS_SECRET}"),
            format!("SecretAccessKey: {AWS_SECRET}"),
            format!("aws secret key: '{AWS_SECRET}'"),
        ];
        for c in &cases {
            check(Kind::AwsSecretKey, c, &[AWS_SECRET]);
        }
        // `ecret` at offset 0 has no `s` before it.
        check(
            Kind::AwsSecretKey,
            &format!("ecret {AWS_SECRET} and more text"),
            &[],
        );
        missed(
            Kind::AwsSecretKey,
            &[
                AWS_SECRET,
                "da39a3ee5e6b4b0d3255bfef95601890afd80709",
                &format!("aws_secret_access_key={AWS_SECRET}X"),
                &format!("aws_secret_access_key = {}", &AWS_SECRET[1..]),
                &format!("aws_secret is stored somewhere far away from here: {AWS_SECRET}"),
                &format!("aws_secret=\n{AWS_SECRET}"),
            ],
        );
    }

    #[test]
    fn github_token() {
        let classic = format!("ghp_{}", "a1B2c3D4e5".repeat(3) + "F6g7H8");
        let pat = format!(
            "github_pat_11ABCDEFG0{}",
            "_abcdefghijklmnopqrstuvwxyz0123456789".repeat(2)
        );
        found(
            Kind::GithubToken,
            &[
                (&classic, &classic),
                (&format!("GITHUB_TOKEN={classic}\n"), &classic),
                (
                    &classic.replace("ghp_", "gho_"),
                    &classic.replace("ghp_", "gho_"),
                ),
                (
                    &classic.replace("ghp_", "ghs_"),
                    &classic.replace("ghp_", "ghs_"),
                ),
                (&format!("token {pat}."), &pat),
            ],
        );
        missed(
            Kind::GithubToken,
            &[
                &classic[..classic.len() - 1],
                &format!("{classic}x"),
                &format!("x{classic}"),
                &classic.replace("ghp_", "ghx_"),
                &classic.replace("ghp_", "GHP_"),
                "github_pat_short",
            ],
        );
    }

    #[test]
    fn github_classic_token_body_may_start_with_p() {
        let t = format!("ghp_p{}", "x".repeat(35));
        check(Kind::GithubToken, &format!("t={t}"), &[&t]);
    }

    #[test]
    fn github_classic_body_has_no_underscore_even_inside_a_rejected_pat() {
        // The too-long PAT's body run covers the `ghp_` whose alphanumeric body is only 16.
        let text = format!(
            "github_pat_{}_ghp_{}_{}",
            "a".repeat(300),
            "b".repeat(16),
            "c".repeat(19)
        );
        check(Kind::GithubToken, &text, &[]);
    }

    #[test]
    fn gitlab_token() {
        let t = "glpat-xY9_zAbC-12345678901";
        found(
            Kind::GitlabToken,
            &[(t, t), (&format!("PRIVATE-TOKEN: {t}"), t)],
        );
        missed(
            Kind::GitlabToken,
            &[
                "glpat-1234567890123456789",
                "glpat-",
                "xglpat-xY9_zAbC-12345678901",
            ],
        );
    }

    #[test]
    fn slack_token() {
        let bot = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx";
        let hook = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX";
        found(
            Kind::SlackToken,
            &[
                (bot, bot),
                (&format!("SLACK_TOKEN=\"{bot}\""), bot),
                ("xoxp-1234567890-abc", "xoxp-1234567890-abc"),
                (hook, hook),
                (&format!("post to {hook}?x=1"), hook),
            ],
        );
        missed(
            Kind::SlackToken,
            &[
                "xoxb-123",
                "xoxz-1234567890abc",
                "XOXB-1234567890abc",
                "https://hooks.slack.com/services/",
                "https://hooks.slack.com/services/T0/B0",
            ],
        );
    }

    #[test]
    fn stripe_key() {
        found(
            Kind::StripeKey,
            &[
                (
                    "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
                    "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
                ),
                (
                    "STRIPE=sk_live_51HxYzAbCdEfGhIjKlMn;",
                    "sk_live_51HxYzAbCdEfGhIjKlMn",
                ),
                ("rk_live_0123456789abcdefXYZ", "rk_live_0123456789abcdefXYZ"),
            ],
        );
        missed(
            Kind::StripeKey,
            &[
                "pk_live_51HxYzAbCdEfGhIjKlMn",
                "sk_live_short",
                "xsk_live_51HxYzAbCdEfGhIjKlMn",
                "SK_LIVE_51HxYzAbCdEfGhIjKlMn",
            ],
        );
    }

    #[test]
    fn google_api_key() {
        let key = "AIzaSyA-1234567890abcdefghijklmnopqrstu";
        found(
            Kind::GoogleApiKey,
            &[(key, key), (&format!("?key={key}&q=1"), key)],
        );
        missed(
            Kind::GoogleApiKey,
            &[
                &key[..key.len() - 1],
                &format!("{key}t"),
                "aizaSyA-1234567890abcdefghijklmnopqrstu",
            ],
        );
    }

    #[test]
    fn secret_assignment() {
        found(
            Kind::SecretAssignment,
            &[
                ("password=hunter2", "hunter2"),
                ("{\"password\":\"s3cr3t!\"}", "s3cr3t!"),
                ("db_password: 'abc def'", "abc def"),
                ("API_KEY=xyz123;", "xyz123"),
                ("Password = hunter2 and more", "hunter2"),
                ("?user=bob&pass=letmein&x=1", "letmein"),
                ("client_secret => \"q\\\"x\"", "q\\\"x"),
                ("dbPassword: abc", "abc"),
                ("X-Api-Key: k-123", "k-123"),
                ("secret_key='unterminated", "unterminated"),
                ("AWS_SECRET=abc", "abc"),
                ("auth_token: t0k3n", "t0k3n"),
                ("PWD=hunter2", "hunter2"),
                ("{\"privateKey\" : \"abc\"}", "abc"),
            ],
        );
        missed(
            Kind::SecretAssignment,
            &[
                "password reset requested",
                "the secret garden",
                "passwordless=true",
                "tokenizer=bpe",
                "password=",
                "password=\"\"",
                "password: null",
                "password=true",
                "password=FALSE",
                "password=***",
                "password=<redacted>",
                "password=\"[REDACTED]\"",
                "password: [REDACTED:12]",
                "secret: {\"a\": 1}",
                "compass: north",
                "PWD=/home/alice",
                "token_count=3",
                "bypass=1",
            ],
        );
    }

    #[test]
    fn secret_assignment_reports_one_finding_per_value() {
        check(
            Kind::SecretAssignment,
            "aws_secret_access_key=abc",
            &["abc"],
        );
        check(
            Kind::SecretAssignment,
            "a: password=x, token=y",
            &["x", "y"],
        );
    }
}
