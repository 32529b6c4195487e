//! Stored password hashes, recognised by their published formats: modular crypt strings
//! (`$2b$12$…`, `$6$salt$…`, `$argon2id$v=19$…`, `$scrypt$…`, `$pbkdf2-sha256$…`), Django's
//! (`pbkdf2_sha256$…`, `argon2$…`, `bcrypt_sha256$…`), PostgreSQL's own (`SCRAM-SHA-256$…`,
//! `md5` and 32 hex digits) and LDAP's (`{SSHA}…`). Anchored on `$`, `{` and `md5`.

use memchr::{memchr_iter, memchr2_iter};

use super::{Finding, Kind, at, before, is_alnum, push};

/// The shortest hash reported (`{SHA}` and a 28-character SHA-1 in base64 is longer).
pub(super) const MIN_HASH: usize = 20;

/// Modular crypt identifiers between the first two `$`.
const CRYPT_IDS: &[&[u8]] = &[
    b"1",
    b"2a",
    b"2b",
    b"2x",
    b"2y",
    b"5",
    b"6",
    b"7",
    b"y",
    b"gy",
    b"argon2i",
    b"argon2d",
    b"argon2id",
    b"scrypt",
    b"pbkdf2",
    b"pbkdf2-sha1",
    b"pbkdf2-sha256",
    b"pbkdf2-sha512",
    b"bcrypt-sha256",
    b"sha1",
];

/// Algorithm names that prefix a `$`-separated hash (Django, PostgreSQL SCRAM).
const PREFIXED: &[&[u8]] = &[
    b"pbkdf2_sha256",
    b"pbkdf2_sha1",
    b"argon2",
    b"bcrypt_sha256",
    b"scrypt",
    b"SCRAM-SHA-256",
];

/// LDAP scheme labels between braces.
const LDAP_SCHEMES: &[&[u8]] = &[
    b"SSHA", b"SHA", b"SSHA256", b"SHA256", b"SSHA512", b"SHA512", b"SMD5", b"MD5", b"CRYPT",
    b"ARGON2", b"BCRYPT",
];

/// Shortest hash body after its label.
const MIN_BODY: usize = 16;

/// Finds every password hash in `input`.
pub(super) fn scan_password_hashes(input: &[u8], out: &mut Vec<Finding>) {
    let mut resume = 0;
    for i in memchr2_iter(b'$', b'{', input) {
        if i < resume {
            continue;
        }
        let found = if input[i] == b'$' {
            crypt_at(input, i).or_else(|| prefixed_at(input, i))
        } else {
            ldap_at(input, i)
        };
        if let Some((s, e)) = found {
            push(out, Kind::PasswordHash, s, e);
            resume = e;
        }
    }
    for i in memchr_iter(b'm', input) {
        if i >= resume
            && let Some(e) = postgres_md5_at(input, i)
        {
            push(out, Kind::PasswordHash, i, e);
        }
    }
}

/// The characters a hash format writes after its label.
#[derive(Clone, Copy)]
enum Alphabet {
    /// Classic crypt: its base64 (`./`), `$` and `rounds=N`.
    Crypt,
    /// PHC strings and Django: standard base64 and parameters (`m=65536,t=3,p=4`).
    Phc,
    /// PostgreSQL SCRAM: `iterations:salt$StoredKey:ServerKey`, base64.
    Scram,
    /// LDAP: base64.
    Ldap,
}

impl Alphabet {
    fn admits(self, b: u8) -> bool {
        is_alnum(b)
            || match self {
                Alphabet::Crypt => matches!(b, b'.' | b'/' | b'$' | b'='),
                Alphabet::Phc => matches!(b, b'.' | b'/' | b'+' | b'=' | b',' | b'$' | b'-' | b'_'),
                Alphabet::Scram => matches!(b, b'/' | b'+' | b'=' | b'$' | b':'),
                Alphabet::Ldap => matches!(b, b'/' | b'+' | b'=' | b'.'),
            }
    }
}

/// End of the hash body starting at `from`. Parameters only come before the last `$`: a comma
/// in the final segment belongs to what follows (CSV).
fn body_end(input: &[u8], from: usize, alphabet: Alphabet) -> usize {
    let mut e = from;
    while e < input.len() && alphabet.admits(input[e]) {
        e += 1;
    }
    let body = input.get(from..e).unwrap_or_default();
    if let Some(last) = body.iter().rposition(|&b| b == b'$')
        && let Some(comma) = body[last..].iter().position(|&b| b == b',')
    {
        return from + last + comma;
    }
    e
}

/// `$id$…` at `d`, with at least one more `$` and a long enough body.
fn crypt_at(input: &[u8], d: usize) -> Option<(usize, usize)> {
    let prev = before(input, d);
    if is_alnum(prev) || prev == b'$' {
        return None;
    }
    let id_end = input.get(d + 1..)?.iter().position(|&b| b == b'$')? + d + 1;
    let id = input.get(d + 1..id_end)?;
    if !CRYPT_IDS.contains(&id) {
        return None;
    }
    let alphabet = if id.len() <= 2 {
        Alphabet::Crypt
    } else {
        Alphabet::Phc
    };
    let e = body_end(input, id_end + 1, alphabet);
    let body = input.get(id_end + 1..e)?;
    (body.len() >= MIN_BODY && body.contains(&b'$')).then_some((d, e))
}

/// `name$…` where `name` ends just before the `$` at `d`.
fn prefixed_at(input: &[u8], d: usize) -> Option<(usize, usize)> {
    let name = PREFIXED
        .iter()
        .find(|n| d >= n.len() && input.get(d - n.len()..d) == Some(n))?;
    let s = d - name.len();
    if is_alnum(before(input, s)) || before(input, s) == b'_' {
        return None;
    }
    let alphabet = if name.starts_with(b"SCRAM") {
        Alphabet::Scram
    } else {
        Alphabet::Phc
    };
    let e = body_end(input, d + 1, alphabet);
    let body = input.get(d + 1..e)?;
    (body.len() >= MIN_BODY && body.contains(&b'$')).then_some((s, e))
}

/// `{SCHEME}base64` at `b`.
fn ldap_at(input: &[u8], b: usize) -> Option<(usize, usize)> {
    if is_alnum(before(input, b)) {
        return None;
    }
    let close = input
        .get(b + 1..(b + 16).min(input.len()))?
        .iter()
        .position(|&c| c == b'}')?
        + b
        + 1;
    let scheme = input.get(b + 1..close)?;
    let known = LDAP_SCHEMES.contains(&scheme) || scheme.starts_with(b"PBKDF2");
    if !known {
        return None;
    }
    let e = body_end(input, close + 1, Alphabet::Ldap);
    (e - (close + 1) >= MIN_BODY).then_some((b, e))
}

/// PostgreSQL's `md5` followed by 32 lowercase hex digits, as a whole word.
fn postgres_md5_at(input: &[u8], m: usize) -> Option<usize> {
    if input.get(m..m + 3) != Some(b"md5") || is_alnum(before(input, m)) {
        return None;
    }
    let hex = input.get(m + 3..m + 35)?;
    let all_hex = hex
        .iter()
        .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (all_hex && !is_alnum(at(input, m + 35))).then_some(m + 35)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{found, missed};
    use super::*;

    #[test]
    fn password_hashes() {
        let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        let sha512 = "$6$rounds=5000$saltsalt$ZfTy5tKmDsG.2m4Wzq0lG0KcNjOhvR8x3vd0z3hOUe2bdLbKx8O0XvGZQ0zvnGZ0BQm3b3pW3uKZ0n9q3rAqO0";
        let argon = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        let django = "pbkdf2_sha256$600000$mysalt$aWRqa3NkamZrbHNqZGZrbGpzZGZrbGpzZGY=";
        let scram = "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$dGVzdHN0b3JlZA==:dGVzdHNlcnZlcg==";
        let md5 = "md5c5e8b1a0f7c6b0b9e0f0a1b2c3d4e5f6";
        let ldap = "{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g6Z2g5";
        found(
            Kind::PasswordHash,
            &[
                (bcrypt, bcrypt),
                (&format!("hash={bcrypt};"), bcrypt),
                (&format!("\"{sha512}\""), sha512),
                (argon, argon),
                (django, django),
                (&format!("{scram} "), scram),
                (md5, md5),
                (&format!("{{\"pw\":\"{ldap}\"}}"), ldap),
            ],
        );
        missed(
            Kind::PasswordHash,
            &[
                "price $12.50 or US$ 1,234",
                "${HOME}/bin:$PATH:$2:$6",
                "$2b$12$short",
                "{SSHA}short",
                "md5sum of the file is d41d8cd98f00b204e9800998ecf8427e",
                "xmd5c5e8b1a0f7c6b0b9e0f0a1b2c3d4e5f6",
                "$unknown$abcdefghijklmnopqrstuvwxyz$abc",
                "{NOTASCHEME}W6ph5Mm5Pz8GgiULbPgzG37mj9g6Z2g5",
            ],
        );
    }
}
