//! Structured numbers: phone numbers (E.164 and NANP), payment cards (issuer prefix, length and
//! Luhn), US social security numbers and IBANs (country length and mod-97). All but E.164 are
//! anchored on the digit runs found by the profile.

use super::{
    Finding, Kind, RunStarts, at, before, is_alnum, is_digit, is_word, push, run_upto, run_while,
};

// ---------------------------------------------------------------------------------------------
// Number boundaries, shared by the grouped formats (phone, card, SSN).

/// Whether the number ending at `end` really ends there: no word byte follows, nor a decimal
/// point or dash that continues with a digit. A comma ends it: the grouped formats (phone, SSN,
/// card) never continue as a thousands group, so a comma is a field separator (CSV).
fn number_ends(s: &[u8], end: usize) -> bool {
    let next = at(s, end);
    if is_word(next) {
        return false;
    }
    match next {
        b'.' | b'-' => !is_digit(at(s, end + 1)),
        // Formats with separators never continue as `1,234`: a comma ends them (CSV).
        b',' => true,
        _ => true,
    }
}

/// Whether exactly three digits start at `i` (a thousands group after a comma).
fn is_thousands_group(s: &[u8], i: usize) -> bool {
    run_while(s, i, is_digit) == 3
}

/// Whether a separated number (phone, SSN) may start at `start`: not glued to a word, a decimal
/// point, a sign or the tail of a dashed code. A `/` may precede it (`card/ssn`, paths).
fn grouped_number_starts(s: &[u8], start: usize) -> bool {
    !is_word(before(s, start)) && !matches!(before(s, start), b'.' | b'-' | b'+')
}

// ---------------------------------------------------------------------------------------------
// Phone

/// E.164 numbers (anchored on `+`), then NANP numbers (anchored on digit runs) that are not
/// part of an E.164 number already reported.
pub(super) fn scan_phone(
    input: &[u8],
    e164: bool,
    nanp: Option<RunStarts<'_>>,
    out: &mut Vec<Finding>,
) {
    let first = out.len();
    if e164 {
        let mut resume = 0;
        for p in memchr::memchr_iter(b'+', input) {
            if p < resume {
                continue;
            }
            if let Some(e) = e164_at(input, p) {
                push(out, Kind::Phone, p, e);
                resume = e;
            }
        }
    }
    let Some(starts) = nanp else {
        return;
    };
    // `out[first..e164_end]` are the E.164 numbers, in order; `k` walks them.
    let (e164_end, mut k, mut resume) = (out.len(), first, 0usize);
    let e164_span = |out: &Vec<Finding>, k: usize| {
        out.get(k)
            .filter(|_| k < e164_end)
            .map(|f| (f.start, f.end))
    };
    for s in starts {
        while e164_span(out, k).is_some_and(|(_, e)| e <= s) {
            k += 1;
        }
        if s < resume || e164_span(out, k).is_some_and(|(a, _)| a <= s) {
            continue;
        }
        if let Some((a, e)) = nanp_at(input, s) {
            push(out, Kind::Phone, a, e);
            resume = e;
        }
    }
}

/// End of an E.164 number whose `+` is at `p`: 8–15 digits with single separators.
fn e164_at(input: &[u8], p: usize) -> Option<usize> {
    let prev = before(input, p);
    if is_alnum(prev) || matches!(prev, b'+' | b'/' | b'.') {
        return None;
    }
    if !matches!(at(input, p + 1), b'1'..=b'9') {
        return None;
    }
    let (mut i, mut end) = (p + 1, p + 1);
    let (mut digits, mut dots, mut open) = (0usize, 0usize, false);
    // The last place a space split two groups: a run of digits past 15 after it is another
    // number (`+44 20 7946 0958 378282246310005`), so the phone ends there.
    let mut last_space: Option<(usize, usize, usize)> = None;
    loop {
        let b = at(input, i);
        let next = at(input, i + 1);
        if is_digit(b) {
            digits += 1;
            i += 1;
            end = i;
        } else if matches!(b, b' ' | b'-' | b'.') && (is_digit(next) || (next == b'(' && !open)) {
            if b == b' ' && !open {
                last_space = Some((end, digits, dots));
            }
            dots += usize::from(b == b'.');
            i += 1;
        } else if b == b'(' && !open && is_digit(next) {
            open = true;
            i += 1;
        } else if b == b')' && open && is_digit(before(input, i)) {
            open = false;
            i += 1;
            if !(is_digit(next) || matches!(next, b' ' | b'-' | b'.')) {
                break;
            }
        } else {
            break;
        }
        if digits > 15 {
            let (e, d, t) = last_space?;
            (end, digits, dots) = (e, d, t);
            break;
        }
    }
    // An open parenthesis, a signed decimal (`+12345678.90`) or a glued word: not a phone.
    let tail = at(input, end);
    if open || dots == 1 || !(8..=15).contains(&digits) || is_alnum(tail) || tail == b'+' {
        return None;
    }
    Some(end)
}

/// A NANP number starting at the digit run at `s` (or at a `(` just before it).
fn nanp_at(input: &[u8], s: usize) -> Option<(usize, usize)> {
    let run = run_while(input, s, is_digit);
    if run == 1 && at(input, s) == b'1' && grouped_number_starts(input, s) {
        // Leading country code: `1-415-555-2671`, `1 (415) 555-2671`.
        let sep = at(input, s + 1);
        let body = s + 2;
        let end = match sep {
            b' ' | b'-' | b'.' if at(input, body) == b'(' => nanp_parenthesized(input, body),
            b'-' | b'.' => nanp_plain(input, body),
            _ => None,
        };
        return end.map(|e| (s, e));
    }
    if run != 3 {
        return None;
    }
    let start = if before(input, s) == b'(' { s - 1 } else { s };
    if !grouped_number_starts(input, start) {
        return None;
    }
    let end = if start < s {
        nanp_parenthesized(input, start)
    } else {
        nanp_plain(input, s)
    };
    end.map(|e| (start, e))
}

/// Whether exactly `n` digits start at `i` and the first one is 2–9 (NANP area / exchange).
fn nanp_group(input: &[u8], i: usize, n: usize) -> bool {
    run_while(input, i, is_digit) == n && matches!(at(input, i), b'2'..=b'9')
}

/// `415-555-2671` or `415.555.2671`.
fn nanp_plain(input: &[u8], s: usize) -> Option<usize> {
    let sep = at(input, s + 3);
    let ok = matches!(sep, b'-' | b'.')
        && nanp_group(input, s, 3)
        && nanp_group(input, s + 4, 3)
        && at(input, s + 7) == sep
        && run_while(input, s + 8, is_digit) == 4
        && number_ends(input, s + 12);
    ok.then_some(s + 12)
}

/// `(415) 555-2671`, `(415)555-2671`, `(415) 555.2671`.
fn nanp_parenthesized(input: &[u8], p: usize) -> Option<usize> {
    if at(input, p) != b'(' || !nanp_group(input, p + 1, 3) || at(input, p + 4) != b')' {
        return None;
    }
    let x = if at(input, p + 5) == b' ' {
        p + 6
    } else {
        p + 5
    };
    let ok = nanp_group(input, x, 3)
        && matches!(at(input, x + 3), b'-' | b'.' | b' ')
        && run_while(input, x + 4, is_digit) == 4
        && number_ends(input, x + 8);
    ok.then_some(x + 8)
}

// ---------------------------------------------------------------------------------------------
// Payment card

/// Whether a card number may start at `s`.
fn card_starts(input: &[u8], s: usize) -> bool {
    let prev = before(input, s);
    if is_word(prev) || matches!(prev, b'.' | b'+') {
        return false;
    }
    // The tail of `12-…` or `12/…` belongs to another number, and so does a thousands group
    // (`1,234`); after a comma, anything longer is the next field of a CSV line.
    let after_digit = s > 0 && is_digit(before(input, s - 1));
    !(after_digit
        && (matches!(prev, b'-' | b'/') || (prev == b',' && is_thousands_group(input, s))))
}

/// End of a card number starting at the digit run at `s`.
pub(super) fn card_at(input: &[u8], s: usize) -> Option<usize> {
    if !card_starts(input, s) {
        return None;
    }
    // Every card number starts with a 4-digit group or 13+ digits: the issuer prefix decides
    // the valid lengths before anything else is read.
    let lengths = card_lengths(input.get(s..s + 4)?);
    if lengths == 0 {
        return None;
    }
    let first = run_while(input, s, is_digit);
    if first >= 13 {
        let e = s + first;
        let valid = first <= 19
            && lengths & (1 << first) != 0
            && number_ends(input, e)
            && luhn_bytes(input.get(s..e)?.iter().copied());
        return valid.then_some(e);
    }
    let sep = at(input, s + 4);
    if first != 4 || !matches!(sep, b' ' | b'-') {
        return None;
    }
    // Read groups `4111 1111 1111 1111`; each group boundary with 13+ digits is a candidate.
    let mut candidates = [(0usize, 0usize); 6]; // (end, digits)
    let (mut ncand, mut n, mut i, mut groups) = (0usize, 0usize, s, 0usize);
    loop {
        let len = run_upto(input, i, 7, is_digit);
        if len == 0 || len > 6 || n + len > 19 {
            break;
        }
        n += len;
        i += len;
        groups += 1;
        let continues = at(input, i) == sep && is_digit(at(input, i + 1));
        // The last group must end the number; earlier ones may be followed by another group.
        if n >= 13
            && groups >= 2
            && lengths & (1 << n) != 0
            && (continues || number_ends(input, i))
            && let Some(c) = candidates.get_mut(ncand)
        {
            *c = (i, n);
            ncand += 1;
        }
        if !continues || len < 4 {
            break;
        }
        i += 1;
    }
    candidates
        .get(..ncand)?
        .iter()
        .rev()
        .map(|&(e, _)| e)
        .find(|&e| {
            input
                .get(s..e)
                .is_some_and(|span| luhn_bytes(span.iter().copied().filter(u8::is_ascii_digit)))
        })
}

/// Bit `n` set when an issuer with the 4-digit prefix `first4` (ASCII digits) issues
/// `n`-digit cards: Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro.
fn card_lengths(first4: &[u8]) -> u32 {
    const fn lengths(from: u32, to: u32) -> u32 {
        ((1 << (to + 1)) - 1) & !((1 << from) - 1)
    }
    if !first4.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    let p4 = first4
        .iter()
        .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'));
    let (p1, p2, p3) = (p4 / 1000, p4 / 100, p4 / 10);
    let mut bits = 0;
    if p1 == 4 {
        bits |= 1 << 13 | 1 << 16 | 1 << 19; // Visa
    }
    if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) {
        bits |= 1 << 16; // Mastercard
    }
    if matches!(p2, 34 | 37) {
        bits |= 1 << 15; // American Express
    }
    if p4 == 6011
        || (644..=649).contains(&p3)
        || p2 == 65
        || (3528..=3589).contains(&p4)
        || p2 == 62
    {
        bits |= lengths(16, 19); // Discover, JCB, UnionPay
    }
    if (300..=305).contains(&p3) || matches!(p2, 36 | 38) {
        bits |= lengths(14, 19); // Diners Club
    }
    if p2 == 50 || (56..=58).contains(&p2) || matches!(p4, 6304 | 6759 | 6761..=6763) {
        bits |= lengths(13, 19); // Maestro
    }
    bits
}

/// Luhn checksum over ASCII digits.
fn luhn_bytes(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    luhn_sum(digits.rev().map(|b| b.wrapping_sub(b'0'))).is_multiple_of(10)
}

/// Luhn sum of digit values given from the last (check) digit backwards.
fn luhn_sum(from_last: impl Iterator<Item = u8>) -> u32 {
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    from_last
        .enumerate()
        .map(|(i, x)| {
            let x = usize::from(x);
            if i % 2 == 1 {
                DOUBLED.get(x).copied().unwrap_or(0)
            } else {
                x as u32
            }
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// US social security number

/// End of `123-45-6789` / `123 45 6789` starting at `s`.
pub(super) fn ssn_at(input: &[u8], s: usize) -> Option<usize> {
    let sep = at(input, s + 3);
    let shape = matches!(sep, b'-' | b' ')
        && run_while(input, s, is_digit) == 3
        && run_while(input, s + 4, is_digit) == 2
        && at(input, s + 6) == sep
        && run_while(input, s + 7, is_digit) == 4;
    let e = s + 11;
    if !shape || !grouped_number_starts(input, s) || !number_ends(input, e) {
        return None;
    }
    // Space-separated: not one group of a longer list of numbers.
    if sep == b' '
        && ((before(input, s) == b' ' && is_digit(before(input, s.saturating_sub(1))))
            || (at(input, e) == b' ' && is_digit(at(input, e + 1))))
    {
        return None;
    }
    let num = |from: usize, n: usize| -> u32 {
        input
            .get(from..from + n)
            .unwrap_or_default()
            .iter()
            .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'))
    };
    let (area, group, serial) = (num(s, 3), num(s + 4, 2), num(s + 7, 4));
    let valid = area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
    valid.then_some(e)
}

// ---------------------------------------------------------------------------------------------
// IBAN

/// IBANs, anchored on their check digits: a digit run starting two bytes after the start.
pub(super) fn scan_iban(input: &[u8], starts: RunStarts<'_>, out: &mut Vec<Finding>) {
    let mut resume = 0;
    for r in starts {
        let Some(s) = r.checked_sub(2) else {
            continue;
        };
        if s < resume {
            continue;
        }
        if let Some(e) = iban_at(input, s) {
            push(out, Kind::Iban, s, e);
            resume = e;
        }
    }
}

/// IBAN length per country (SEPA members and other registry countries).
const IBAN_LENGTHS: [(&[u8; 2], u8); 77] = [
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

/// [`IBAN_LENGTHS`] indexed by `26 * (first letter) + second letter`; 0 for unknown countries.
static IBAN_LENGTH_BY_CODE: [u8; 26 * 26] = {
    let mut t = [0u8; 26 * 26];
    let mut i = 0;
    while i < IBAN_LENGTHS.len() {
        let (code, len) = IBAN_LENGTHS[i];
        t[(code[0] - b'A') as usize * 26 + (code[1] - b'A') as usize] = len;
        i += 1;
    }
    t
};

/// IBAN length of the country `c0 c1` (two uppercase letters), if known.
fn iban_length(c0: u8, c1: u8) -> Option<usize> {
    if !c0.is_ascii_uppercase() || !c1.is_ascii_uppercase() {
        return None;
    }
    let code = usize::from(c0 - b'A') * 26 + usize::from(c1 - b'A');
    IBAN_LENGTH_BY_CODE
        .get(code)
        .filter(|&&len| len > 0)
        .map(|&len| usize::from(len))
}

fn is_iban_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

/// End of an IBAN starting at `s`, compact or in space-separated groups of four.
fn iban_at(input: &[u8], s: usize) -> Option<usize> {
    if !at(input, s).is_ascii_uppercase() || is_alnum(before(input, s)) {
        return None;
    }
    let len = iban_length(at(input, s), at(input, s + 1))?;
    let check = (at(input, s + 2), at(input, s + 3));
    if !is_digit(check.0)
        || !is_digit(check.1)
        || matches!(check, (b'0', b'0' | b'1') | (b'9', b'9'))
    {
        return None;
    }
    let e = if at(input, s + 4) == b' ' {
        // Groups of four separated by single spaces, the last one shorter.
        let (mut n, mut i) = (0usize, s);
        loop {
            let want = (len - n).min(4);
            if run_upto(input, i, 5, is_iban_char) != want {
                return None;
            }
            n += want;
            i += want;
            if n == len {
                break i;
            }
            if at(input, i) != b' ' {
                return None;
            }
            i += 1;
        }
    } else {
        if run_upto(input, s, len + 1, is_iban_char) != len {
            return None;
        }
        s + len
    };
    if is_alnum(at(input, e)) {
        return None;
    }
    (iban_mod97(input.get(s..e)?) == 1).then_some(e)
}

/// `10^k mod 97` for every digit position of an IBAN (34 characters, letters count twice).
static POW10_MOD97: [u32; 70] = {
    let mut t = [1u32; 70];
    let mut k = 1;
    while k < t.len() {
        t[k] = t[k - 1] * 10 % 97;
        k += 1;
    }
    t
};

/// The ISO 7064 mod-97 remainder of an IBAN (spaces ignored): its first four characters moved
/// to the end, letters read as two digits (`A` = 10). Computed as a weighted sum of the
/// characters (weight `10^k mod 97` for `k` digits to its right): no long dependency chain.
fn iban_mod97(iban: &[u8]) -> u32 {
    let (head, tail) = iban.split_at(iban.len().min(4));
    let (mut sum, mut k) = (0u32, 0usize);
    for &c in head
        .iter()
        .rev()
        .chain(tail.iter().rev())
        .filter(|&&c| c != b' ')
    {
        let (value, width) = if c.is_ascii_digit() {
            (c - b'0', 1)
        } else {
            (c.wrapping_sub(b'A').wrapping_add(10), 2)
        };
        sum += u32::from(value) * POW10_MOD97.get(k).copied().unwrap_or(0);
        k += width;
    }
    sum % 97
}

#[cfg(test)]
mod tests {
    use super::luhn_bytes;
    use crate::detect::Kind;
    use crate::detect::tests::{found, missed};

    /// `prefix` followed by its Luhn check digit.
    fn with_luhn(prefix: &str) -> String {
        (0..10)
            .map(|d| format!("{prefix}{d}"))
            .find(|s| luhn_bytes(s.bytes()))
            .unwrap()
    }

    #[test]
    fn phone() {
        found(
            Kind::Phone,
            &[
                ("+1 415-555-2671", "+1 415-555-2671"),
                ("tel: +44 20 7946 0958.", "+44 20 7946 0958"),
                ("+14155552671", "+14155552671"),
                ("phone=+33.1.23.45.67.89", "+33.1.23.45.67.89"),
                ("call (415) 555-2671 now", "(415) 555-2671"),
                ("(415)555-2671", "(415)555-2671"),
                ("415-555-2671", "415-555-2671"),
                ("415.555.2671", "415.555.2671"),
                ("1-800-555-0199", "1-800-555-0199"),
                ("+1 (415) 555-2671", "+1 (415) 555-2671"),
                ("+49 (0)30 901820", "+49 (0)30 901820"),
            ],
        );
        missed(
            Kind::Phone,
            &[
                "12345678901",
                "4155552671",
                "2024-01-15",
                "123-45-6789",
                "+1234567",
                "+12345678.90",
                "2024-06-01 12:30:45.123456+00",
                "UTC+05:30",
                "1e+10",
                "x+14155552671",
                "+14155552671abc",
                "015-555-2671",
                "415-155-2671",
                "415-555-26711",
                "415-555.2671",
                "ORD-415-555-2671",
                "+1234567890123456",
                "+1 (415 555 2671",
                "+0 415 555 2671",
            ],
        );
    }

    #[test]
    fn card() {
        found(
            Kind::Card,
            &[
                ("4111111111111111", "4111111111111111"),
                ("card 4111 1111 1111 1111 exp 12/25", "4111 1111 1111 1111"),
                ("4111-1111-1111-1111", "4111-1111-1111-1111"),
                ("378282246310005", "378282246310005"),
                ("3782 822463 10005", "3782 822463 10005"),
                ("5555555555554444", "5555555555554444"),
                ("2223003122003222", "2223003122003222"),
                ("6011111111111117", "6011111111111117"),
                ("3530111333300000", "3530111333300000"),
                ("30569309025904", "30569309025904"),
                ("6200000000000005", "6200000000000005"),
                ("4222222222222", "4222222222222"),
                ("{\"pan\":\"4012888888881881\"}", "4012888888881881"),
                ("4111 1111 1111 1111 123", "4111 1111 1111 1111"),
            ],
        );
        let mc19 = with_luhn("555555555555444400");
        let visa20 = with_luhn("4111111111111111111");
        missed(
            Kind::Card,
            &[
                "4111111111111112",
                "1234567890123452",
                &mc19,
                &visa20,
                "x4111111111111111",
                "4111111111111111x",
                "0.4111111111111111",
                "4111111111111111.25",
                "4111 1111-1111 1111",
                "4111  1111 1111 1111",
                "41 11 11 11 11 11 11 11",
                "12-4111111111111111",
                "+4111111111111111",
                "1717243845123",
                "9780306406157",
            ],
        );
    }

    #[test]
    fn ssn() {
        found(
            Kind::Ssn,
            &[
                ("123-45-6789", "123-45-6789"),
                ("SSN 078-05-1120.", "078-05-1120"),
                ("219 09 9999", "219 09 9999"),
                ("{\"ssn\":\"536-90-4399\"}", "536-90-4399"),
                ("899-99-9999", "899-99-9999"),
            ],
        );
        missed(
            Kind::Ssn,
            &[
                "000-12-3456",
                "666-12-3456",
                "900-12-3456",
                "999-12-3456",
                "123-00-4567",
                "123-45-0000",
                "123456789",
                "1234-45-6789",
                "123-45-67890",
                "0123-45-6789",
                "12 123 45 6789",
                "123 45 6789 1",
                "123-45 6789",
                "2024-01-15",
                "A123-45-6789",
            ],
        );
    }

    #[test]
    fn iban() {
        found(
            Kind::Iban,
            &[
                ("DE89370400440532013000", "DE89370400440532013000"),
                ("DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 00"),
                ("GB82WEST12345698765432", "GB82WEST12345698765432"),
                (
                    "iban: FR1420041010050500013M02606;",
                    "FR1420041010050500013M02606",
                ),
                ("NL91ABNA0417164300", "NL91ABNA0417164300"),
                ("BE68 5390 0754 7034", "BE68 5390 0754 7034"),
                ("NO9386011117947", "NO9386011117947"),
                (
                    "IBAN: CH93 0076 2011 6238 5295 7.",
                    "CH93 0076 2011 6238 5295 7",
                ),
            ],
        );
        missed(
            Kind::Iban,
            &[
                "DE89370400440532013001",
                "de89370400440532013000",
                "XX89370400440532013000",
                "DE8937040044053201300",
                "DE893704004405320130000",
                "DE89370400440532013000X",
                "xDE89370400440532013000",
                "DE89 3704 0044 0532 013 000",
                "DE00370400440532013000",
            ],
        );
    }
}
