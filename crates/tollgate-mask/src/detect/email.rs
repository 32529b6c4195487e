//! E-mail addresses, anchored on `@`: a local part, then a domain ending in an alphabetic TLD.

use super::{Finding, Kind, at, push, run_while};

const EMAIL_LOCAL: u8 = 1;
const EMAIL_DOMAIN: u8 = 2;

/// Which bytes may appear in an address's local part (`[A-Za-z0-9._%+-]`) and domain
/// (`[A-Za-z0-9.-]`). UTF-8 bytes are allowed in both (`josé@exämple.com`): stopping at them
/// would leave the start of an internationalized address unmasked.
static EMAIL_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' => EMAIL_LOCAL | EMAIL_DOMAIN,
            b'_' | b'%' | b'+' => EMAIL_LOCAL,
            0x80..=0xff => EMAIL_LOCAL | EMAIL_DOMAIN,
            _ => 0,
        };
        i += 1;
    }
    t
};

fn is_email_local(b: u8) -> bool {
    EMAIL_BYTES[usize::from(b)] & EMAIL_LOCAL != 0
}

fn is_domain_byte(b: u8) -> bool {
    EMAIL_BYTES[usize::from(b)] & EMAIL_DOMAIN != 0
}

pub(super) fn scan_email(input: &[u8], out: &mut Vec<Finding>) {
    let mut resume = 0;
    for a in memchr::memchr_iter(b'@', input) {
        if a < resume {
            continue;
        }
        if let Some((s, e)) = email_at(input, a) {
            push(out, Kind::Email, s, e);
            resume = e;
        }
    }
}

/// The address around the `@` at `a`.
fn email_at(input: &[u8], a: usize) -> Option<(usize, usize)> {
    let local = input.get(..a)?;
    let mut s = a - local
        .iter()
        .rev()
        .take_while(|&&b| is_email_local(b))
        .count();
    while s < a && at(input, s) == b'.' {
        s += 1;
    }
    if s == a {
        return None;
    }
    let domain_start = a + 1;
    let run = run_while(input, domain_start, is_domain_byte);
    let end = domain_end(input.get(domain_start..domain_start + run)?)?;
    Some((s, domain_start + end))
}

/// Length of the longest prefix of `d` that is a domain ending in an alphabetic TLD.
fn domain_end(d: &[u8]) -> Option<usize> {
    let (mut labels, mut start, mut best) = (0usize, 0usize, None);
    for label in d.split(|&b| b == b'.') {
        if label.is_empty() || label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            break;
        }
        labels += 1;
        start += label.len() + 1;
        if labels >= 2 && is_tld(label) {
            best = Some(start - 1);
        }
    }
    best
}

/// Whether `label` can be a top-level domain: two or more letters, and not an asset file
/// extension (`logo@2x.png` is a retina image name, not an address).
fn is_tld(label: &[u8]) -> bool {
    const EXTENSIONS: [&[u8]; 9] = [
        b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"ico", b"css", b"js",
    ];
    label.len() >= 2
        && label.iter().all(u8::is_ascii_alphabetic)
        && !EXTENSIONS.iter().any(|e| label.eq_ignore_ascii_case(e))
}

#[cfg(test)]
mod tests {
    use crate::detect::Kind;
    use crate::detect::tests::{check, found, missed};

    #[test]
    fn email() {
        found(
            Kind::Email,
            &[
                ("contact: john.doe@example.com", "john.doe@example.com"),
                ("JOHN.DOE+TAG@EXAMPLE.CO.UK", "JOHN.DOE+TAG@EXAMPLE.CO.UK"),
                (
                    "<a.b-c_d%e@mail-server.example.org>",
                    "a.b-c_d%e@mail-server.example.org",
                ),
                ("...lead@dots.com", "lead@dots.com"),
                ("mailto:x@y.io.", "x@y.io"),
                (
                    "{\"email\":\"Jane_Roe99@Sub.Example.travel\"}",
                    "Jane_Roe99@Sub.Example.travel",
                ),
                ("a@b.com.123", "a@b.com"),
                ("José.García@example.com", "José.García@example.com"),
                ("from 用户@exämple.de today", "用户@exämple.de"),
            ],
        );
        check(
            Kind::Email,
            "x@y.io, second@z.com;",
            &["x@y.io", "second@z.com"],
        );
        missed(
            Kind::Email,
            &[
                "user@localhost",
                "@handle says hi",
                "a@b.c",
                "user@host.123",
                "foo@-bar.com",
                "x@.com",
                "a@@b.com x",
                "2024@10.0.1",
                "icon@2x.png",
                "sprite@3X.SVG",
                "x@例子.广告",
            ],
        );
    }
}
