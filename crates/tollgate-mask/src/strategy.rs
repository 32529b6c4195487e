//! How a found value is replaced: partial (format-preserving), full redaction, or a consistent
//! keyed pseudonym.

use ring::hmac;

use crate::detect::Kind;

/// How a sensitive value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Keeps the shape and a harmless part (`j***@*******.com`, `****-****-****-9012`).
    Partial,
    /// Replaces the value with `[REDACTED:<name>]`.
    Redact,
    /// Replaces the value with a keyed HMAC pseudonym: the same value always maps to the same
    /// pseudonym under the same key, so joins and group-bys still work.
    Pseudonym,
}

impl Strategy {
    /// Reads a strategy name: `partial`, `redact` or `pseudonym`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "partial" => Some(Self::Partial),
            "redact" => Some(Self::Redact),
            "pseudonym" => Some(Self::Pseudonym),
            _ => None,
        }
    }
    /// The strategy's name in config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Partial => "partial",
            Self::Redact => "redact",
            Self::Pseudonym => "pseudonym",
        }
    }
    /// The strategy a built-in detector uses unless configured otherwise.
    pub fn default_for(kind: Kind) -> Self {
        match kind {
            Kind::Email
            | Kind::Phone
            | Kind::Card
            | Kind::Ssn
            | Kind::Iban
            | Kind::Ipv4
            | Kind::Ipv6 => Self::Partial,
            _ => Self::Redact,
        }
    }
}

/// What a value is, for choosing its masked form.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// A value a built-in detector recognised.
    Known(Kind),
    /// Anything else (custom detectors, column rules).
    Other,
}

/// Appends the masked form of `value` to `out`. `name` labels redactions.
pub(crate) fn apply(
    strategy: Strategy,
    shape: Shape,
    name: &str,
    value: &[u8],
    key: &hmac::Key,
    out: &mut Vec<u8>,
) {
    match strategy {
        Strategy::Redact => {
            out.extend_from_slice(b"[REDACTED:");
            out.extend_from_slice(name.as_bytes());
            out.push(b']');
        }
        Strategy::Pseudonym => pseudonym(shape, name, value, key, out),
        Strategy::Partial => partial(shape, name, value, out),
    }
}

fn pseudonym(shape: Shape, name: &str, value: &[u8], key: &hmac::Key, out: &mut Vec<u8>) {
    // Keyed by the value alone (case-folded for e-mail), so the same value found by a detector
    // or by a column rule maps to the same pseudonym.
    let tag = match shape {
        Shape::Known(Kind::Email) => hmac::sign(key, &value.to_ascii_lowercase()),
        _ => hmac::sign(key, value),
    };
    let digest = tag.as_ref();
    let hex = |out: &mut Vec<u8>, bytes: &[u8]| {
        for b in bytes {
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        }
    };
    let head = digest.get(..8).unwrap_or(digest);
    match shape {
        Shape::Known(Kind::Email) => {
            out.extend_from_slice(b"u");
            hex(out, head);
            out.extend_from_slice(b"@pseudonym.invalid");
        }
        Shape::Known(kind) => {
            out.extend_from_slice(kind.name().as_bytes());
            out.push(b'_');
            hex(out, head);
        }
        Shape::Other => {
            out.extend_from_slice(name.as_bytes());
            out.push(b'_');
            hex(out, head);
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn partial(shape: Shape, name: &str, value: &[u8], out: &mut Vec<u8>) {
    match shape {
        Shape::Known(Kind::Email) => partial_email(value, out),
        Shape::Known(Kind::Card | Kind::Ssn) => keep_last_digits(value, 4, out),
        Shape::Known(Kind::Phone) => keep_last_digits(value, 2, out),
        Shape::Known(Kind::Iban) => partial_iban(value, out),
        Shape::Known(Kind::Ipv4) => partial_ipv4(value, out),
        Shape::Known(Kind::Ipv6) => partial_ipv6(value, out),
        Shape::Known(Kind::PrivateKey) => {
            out.extend_from_slice(b"[REDACTED:private-key]");
        }
        Shape::Known(kind) => partial_token(kind, value, out),
        Shape::Other => {
            let _ = name;
            partial_generic(value, out)
        }
    }
}

/// `john.doe@example.com` → `j*******@*******.com`.
fn partial_email(value: &[u8], out: &mut Vec<u8>) {
    let Some(at) = value.iter().rposition(|&b| b == b'@') else {
        return partial_generic(value, out);
    };
    let (local, domain) = (&value[..at], &value[at + 1..]);
    match local.first() {
        Some(&first) if local.len() > 1 => {
            out.push(first);
            out.extend(std::iter::repeat_n(b'*', local.len() - 1));
        }
        _ => out.extend(std::iter::repeat_n(b'*', local.len().max(1))),
    }
    out.push(b'@');
    match domain.iter().rposition(|&b| b == b'.') {
        Some(dot) => {
            out.extend(std::iter::repeat_n(b'*', dot.max(1)));
            out.extend_from_slice(&domain[dot..]);
        }
        None => out.extend(std::iter::repeat_n(b'*', domain.len().max(1))),
    }
}

/// Digits become `*` except the last `keep`; separators stay.
fn keep_last_digits(value: &[u8], keep: usize, out: &mut Vec<u8>) {
    let digits = value.iter().filter(|b| b.is_ascii_digit()).count();
    let mut seen = 0;
    for &b in value {
        if b.is_ascii_digit() {
            seen += 1;
            out.push(if seen > digits.saturating_sub(keep) {
                b
            } else {
                b'*'
            });
        } else {
            out.push(b);
        }
    }
}

/// Country code and last two characters stay: `DE** **** **** **** **** 00`.
fn partial_iban(value: &[u8], out: &mut Vec<u8>) {
    let alnum = value.iter().filter(|b| b.is_ascii_alphanumeric()).count();
    let mut seen = 0;
    for &b in value {
        if b.is_ascii_alphanumeric() {
            seen += 1;
            out.push(if seen <= 2 || seen > alnum.saturating_sub(2) {
                b
            } else {
                b'*'
            });
        } else {
            out.push(b);
        }
    }
}

/// The network's first two octets stay: `10.20.*.*`.
fn partial_ipv4(value: &[u8], out: &mut Vec<u8>) {
    let mut dots = 0;
    for &b in value {
        if b == b'.' {
            dots += 1;
            out.push(b);
        } else if dots >= 2 {
            if out.last() != Some(&b'*') {
                out.push(b'*');
            }
        } else {
            out.push(b);
        }
    }
}

/// The first two groups stay: `2001:db8:*`.
fn partial_ipv6(value: &[u8], out: &mut Vec<u8>) {
    let mut groups = 0;
    for (i, &b) in value.iter().enumerate() {
        if b == b':' {
            groups += 1;
            if groups == 2 {
                out.extend_from_slice(&value[..=i]);
                out.push(b'*');
                return;
            }
        }
    }
    out.push(b'*');
}

/// A token keeps its public prefix (`ghp_`, `AKIA`, `eyJ`) and nothing else: `ghp_****`.
fn partial_token(kind: Kind, value: &[u8], out: &mut Vec<u8>) {
    let keep = match kind {
        Kind::AwsAccessKey | Kind::GoogleApiKey => 4,
        Kind::Jwt => 3,
        Kind::GithubToken | Kind::GitlabToken | Kind::SlackToken | Kind::StripeKey => value
            .iter()
            .rposition(|&b| b == b'_' || b == b'-')
            .map(|i| (i + 1).min(11))
            .unwrap_or(0),
        _ => 0,
    };
    out.extend_from_slice(value.get(..keep.min(value.len())).unwrap_or_default());
    out.extend_from_slice(b"********");
}

/// Every character becomes `*`, except the last four of a long value.
fn partial_generic(value: &[u8], out: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(value);
    let count = text.chars().count();
    let keep = if count >= 12 { 4 } else { 0 };
    for (i, c) in text.chars().enumerate() {
        if i + keep >= count && !c.is_whitespace() {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        } else {
            out.push(b'*');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(strategy: Strategy, shape: Shape, value: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"test key");
        let mut out = Vec::new();
        apply(strategy, shape, "rule", value.as_bytes(), &key, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn partial_forms() {
        let p = |k, v| run(Strategy::Partial, Shape::Known(k), v);
        assert_eq!(
            p(Kind::Email, "john.doe@example.com"),
            "j*******@*******.com"
        );
        assert_eq!(p(Kind::Email, "j@x.io"), "*@*.io");
        assert_eq!(p(Kind::Card, "4111-1111-1111-9012"), "****-****-****-9012");
        assert_eq!(p(Kind::Ssn, "123-45-6789"), "***-**-6789");
        assert_eq!(p(Kind::Phone, "+1 415-555-2671"), "+* ***-***-**71");
        assert_eq!(
            p(Kind::Iban, "DE89 3704 0044 0532 0130 00"),
            "DE** **** **** **** **** 00"
        );
        assert_eq!(p(Kind::Ipv4, "192.168.10.200"), "192.168.*.*");
        assert_eq!(p(Kind::Ipv6, "2001:db8::1"), "2001:db8:*");
        assert_eq!(
            p(
                Kind::GithubToken,
                "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
            ),
            "ghp_********"
        );
        assert_eq!(
            p(Kind::AwsAccessKey, "AKIAIOSFODNN7EXAMPLE"),
            "AKIA********"
        );
        assert_eq!(run(Strategy::Partial, Shape::Other, "hunter2"), "*******");
        assert_eq!(
            run(Strategy::Partial, Shape::Other, "1990-05-12 extra"),
            "************xtra"
        );
    }

    #[test]
    fn redaction_names_the_rule() {
        assert_eq!(
            run(Strategy::Redact, Shape::Known(Kind::Email), "a@b.co"),
            "[REDACTED:rule]"
        );
    }

    #[test]
    fn pseudonyms_are_stable_keyed_and_shaped() {
        let a = run(
            Strategy::Pseudonym,
            Shape::Known(Kind::Email),
            "Alice@Example.com",
        );
        let b = run(
            Strategy::Pseudonym,
            Shape::Known(Kind::Email),
            "alice@example.com",
        );
        assert_eq!(a, b);
        assert!(a.ends_with("@pseudonym.invalid"), "{a}");
        let c = run(
            Strategy::Pseudonym,
            Shape::Known(Kind::Email),
            "bob@example.com",
        );
        assert_ne!(a, c);
        let other_key = hmac::Key::new(hmac::HMAC_SHA256, b"other key");
        let mut out = Vec::new();
        apply(
            Strategy::Pseudonym,
            Shape::Known(Kind::Email),
            "rule",
            b"alice@example.com",
            &other_key,
            &mut out,
        );
        assert_ne!(String::from_utf8(out).unwrap(), a);
        assert!(
            run(
                Strategy::Pseudonym,
                Shape::Known(Kind::Card),
                "4111111111111111"
            )
            .starts_with("card_")
        );
    }
}
