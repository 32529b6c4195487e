//! Network addresses: IPv4 dotted quads (anchored on digit runs) and IPv6 addresses (anchored
//! on `:`).

use super::{Finding, Kind, at, before, is_alnum, is_digit, is_word, push, run_upto, run_while};

// ---------------------------------------------------------------------------------------------
// IPv4

/// End of a dotted quad starting at `s`.
pub(super) fn ipv4_at(input: &[u8], s: usize) -> Option<usize> {
    let prev = before(input, s);
    if is_word(prev) || prev == b'.' {
        return None;
    }
    let mut i = s;
    for part in 0..4 {
        if part > 0 {
            if at(input, i) != b'.' {
                return None;
            }
            i += 1;
        }
        let len = run_upto(input, i, 4, is_digit);
        let octet = input.get(i..i + len)?;
        if len == 0 || len > 3 || (len > 1 && octet.first() == Some(&b'0')) {
            return None;
        }
        if octet
            .iter()
            .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'))
            > 255
        {
            return None;
        }
        i += len;
    }
    // Not part of a longer dotted run (`1.2.3.4.5`, `1.2.3.4.example`).
    let next = at(input, i);
    if is_word(next) || (next == b'.' && is_word(at(input, i + 1))) {
        return None;
    }
    Some(i)
}

// ---------------------------------------------------------------------------------------------
// IPv6

fn is_ipv6_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

pub(super) fn scan_ipv6(input: &[u8], out: &mut Vec<Finding>) {
    let mut resume = 0;
    for c in memchr::memchr_iter(b':', input) {
        if c < resume {
            continue;
        }
        let mut s = c;
        while s > 0 && is_ipv6_byte(before(input, s)) {
            s -= 1;
        }
        let e = c + run_while(input, c, is_ipv6_byte);
        resume = e;
        if let Some((s, e)) = ipv6_in(input, s, e) {
            push(out, Kind::Ipv6, s, e);
        }
    }
}

/// The address in the run of hex digits, colons and dots `input[s..e]`, if it is one.
fn ipv6_in(input: &[u8], mut s: usize, mut e: usize) -> Option<(usize, usize)> {
    while s < e && at(input, s) == b'.' {
        s += 1;
    }
    if at(input, s) == b':' && at(input, s + 1) != b':' {
        s += 1;
    }
    while e > s && before(input, e) == b'.' {
        e -= 1;
    }
    if e > s + 1 && before(input, e) == b':' && before(input, e - 1) != b':' {
        e -= 1;
    }
    if e.saturating_sub(s) > 45 || is_alnum(before(input, s)) || is_alnum(at(input, e)) {
        return None;
    }
    let text = std::str::from_utf8(input.get(s..e)?).ok()?;
    text.parse::<std::net::Ipv6Addr>().ok()?;
    let (mut groups, mut all_pairs) = (0usize, true);
    for part in text.split(':').filter(|p| !p.is_empty()) {
        if part.contains('.') {
            groups += 2;
        } else {
            groups += 1;
            all_pairs &= part.len() == 2;
        }
    }
    // Eight two-digit groups without `::` is an EUI-64 / MAC-style identifier.
    if groups < 3 || (all_pairs && !text.contains("::")) {
        return None;
    }
    Some((s, e))
}

#[cfg(test)]
mod tests {
    use crate::detect::Kind;
    use crate::detect::tests::{found, missed};

    #[test]
    fn ipv4() {
        found(
            Kind::Ipv4,
            &[
                ("192.168.1.10", "192.168.1.10"),
                ("10.0.0.1:5432", "10.0.0.1"),
                ("ip=8.8.8.8, port", "8.8.8.8"),
                ("0.0.0.0", "0.0.0.0"),
                ("255.255.255.255.", "255.255.255.255"),
                ("(172.16.254.3)", "172.16.254.3"),
                ("10.0.0.0/8", "10.0.0.0"),
            ],
        );
        missed(
            Kind::Ipv4,
            &[
                "256.1.1.1",
                "1.2.3.256",
                "1.2.3.4.5",
                "10.2.3",
                "01.2.3.4",
                "1.2.03.4",
                "v1.2.3.4",
                "1.2.3.4a",
                "1.2.3.4.example",
                "1234.1.1.1",
            ],
        );
    }

    #[test]
    fn ipv6() {
        found(
            Kind::Ipv6,
            &[
                ("2001:db8::1", "2001:db8::1"),
                (
                    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
                    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
                ),
                ("[2001:db8::42]:443", "2001:db8::42"),
                ("fe80::1ff:fe23:4567:890a%eth0", "fe80::1ff:fe23:4567:890a"),
                ("::ffff:192.0.2.128", "::ffff:192.0.2.128"),
                (
                    "ip: 2001:DB8:0:0:8:800:200C:417A.",
                    "2001:DB8:0:0:8:800:200C:417A",
                ),
                ("addr=2001:db8:0:1::", "2001:db8:0:1::"),
            ],
        );
        missed(
            Kind::Ipv6,
            &[
                "12:30:45",
                "::",
                "::1",
                "fe80::1",
                "00:1a:2b:3c:4d:5e",
                "00:1a:2b:3c:4d:5e:6f:70",
                "a:b",
                "2024-06-01T12:30:45Z",
                "x2001:db8::1",
                "2001:db8::1g",
            ],
        );
    }
}
