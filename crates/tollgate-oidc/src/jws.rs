//! Compact JWS parsing (RFC 7515 §7.1), strict: exactly three base64url parts without padding
//! or whitespace, a JSON-object header and payload without duplicate member names, a size
//! limit. Nothing here verifies anything; [`crate::Verifier`] does.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use serde_json::{Map, Value};

use crate::error::{OidcError, quote};
use crate::json::{self, JsonError};

/// The largest token accepted, in bytes. Real ID and access tokens are a few KiB at most.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The longest `kid` accepted, in bytes.
const MAX_KID_BYTES: usize = 256;

/// A JWS signature algorithm this crate implements (RFC 7518 §3.1, RFC 8037).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(clippy::upper_case_acronyms)]
pub enum Algorithm {
    /// HMAC with SHA-256 (shared-secret issuers only).
    HS256,
    /// HMAC with SHA-384 (shared-secret issuers only).
    HS384,
    /// HMAC with SHA-512 (shared-secret issuers only).
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256, signature `r ‖ s` (64 bytes).
    ES256,
    /// ECDSA on P-384 with SHA-384, signature `r ‖ s` (96 bytes).
    ES384,
    /// Ed25519 (the only `EdDSA` curve accepted).
    EdDSA,
}

impl Algorithm {
    /// Every algorithm, HMAC first.
    pub const ALL: [Algorithm; 12] = [
        Self::HS256,
        Self::HS384,
        Self::HS512,
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
    ];

    /// The JOSE name (`RS256`).
    pub fn name(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    /// The algorithm with this JOSE name (exact, case-sensitive as RFC 7515 says).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether it is an HMAC algorithm (a shared secret, not a public key).
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

impl Serialize for Algorithm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::from_name(&name)
            .ok_or_else(|| de::Error::custom(format!("unsupported algorithm {name:?}")))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The members of a JOSE header this crate reads. `jku`, `jwk`, `x5u`, `x5c` and `x5t` are
/// ignored: keys only ever come from the issuer's configured key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `alg`.
    pub alg: Algorithm,
    /// `kid`, when present.
    pub kid: Option<String>,
    /// `typ`, when present (informational; not checked).
    pub typ: Option<String>,
}

/// A token cut into its parts and decoded, signature not yet checked.
#[derive(Debug, Clone)]
pub struct UnverifiedToken<'a> {
    /// The decoded header.
    pub header: Header,
    /// The decoded payload (claims), unverified.
    pub claims: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl UnverifiedToken<'_> {
    /// `base64url(header) . base64url(payload)`: the bytes the signature covers.
    pub fn signing_input(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    /// The decoded signature (empty when the third part is empty).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The unverified `iss` claim, when it is a string.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Whether `token` has the shape of a compact JWS (three non-empty-ish base64url parts whose
/// header starts with `{`): a cheap test to tell a JWT from an API key before verifying.
pub fn looks_like_jwt(token: &str) -> bool {
    token.len() <= MAX_TOKEN_BYTES
        && token.starts_with("eyJ")
        && token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Cuts a compact JWS into header, claims and signature and checks its form. The header is
/// checked before the payload is decoded: `alg` must be a supported algorithm (`none` is
/// refused), `crit`, `enc` and `zip` must be absent, `cty` must not be `JWT`.
pub fn parse_unverified(token: &str) -> Result<UnverifiedToken<'_>, OidcError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(OidcError::TooLarge {
            len: token.len(),
            max: MAX_TOKEN_BYTES,
        });
    }
    if token.is_empty() {
        return Err(OidcError::Malformed("empty token"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(OidcError::Malformed("not three dot-separated parts"));
    };
    if parts.next().is_some() {
        return Err(OidcError::Malformed(
            "more than three dot-separated parts (a JWE or extra dots)",
        ));
    }
    if h.is_empty() {
        return Err(OidcError::Malformed("empty header"));
    }
    if p.is_empty() {
        return Err(OidcError::Malformed("empty payload"));
    }
    let header_bytes =
        decode_part(h).ok_or(OidcError::Malformed("header is not unpadded base64url"))?;
    let header = match json::parse_object(&header_bytes) {
        Ok(map) => parse_header(&map)?,
        Err(JsonError::DuplicateKey) => return Err(OidcError::DuplicateKey("header")),
        Err(JsonError::Invalid) => return Err(OidcError::Malformed("header is not a JSON object")),
    };
    let payload_bytes =
        decode_part(p).ok_or(OidcError::Malformed("payload is not unpadded base64url"))?;
    let claims = match json::parse_object(&payload_bytes) {
        Ok(map) => map,
        Err(JsonError::DuplicateKey) => return Err(OidcError::DuplicateKey("payload")),
        Err(JsonError::Invalid) => {
            return Err(OidcError::Malformed("payload is not a JSON object"));
        }
    };
    let signature =
        decode_part(s).ok_or(OidcError::Malformed("signature is not unpadded base64url"))?;
    let signing_input = token
        .get(..h.len() + 1 + p.len())
        .ok_or(OidcError::Malformed("not three dot-separated parts"))?;
    Ok(UnverifiedToken {
        header,
        claims,
        signing_input,
        signature,
    })
}

/// Strict base64url: the URL-safe alphabet only, no padding, no whitespace, canonical trailing
/// bits.
pub(crate) fn decode_part(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part).ok()
}

fn parse_header(map: &Map<String, Value>) -> Result<Header, OidcError> {
    let alg = match map.get("alg") {
        Some(Value::String(name)) if name.eq_ignore_ascii_case("none") => {
            return Err(OidcError::AlgNone);
        }
        Some(Value::String(name)) => Algorithm::from_name(name)
            .ok_or_else(|| OidcError::UnsupportedAlgorithm(quote(name)))?,
        Some(_) => return Err(OidcError::Malformed("header alg is not a string")),
        None => return Err(OidcError::Malformed("header has no alg")),
    };
    if map.contains_key("crit") {
        return Err(OidcError::CriticalHeader);
    }
    if map.contains_key("enc") {
        return Err(OidcError::UnsupportedHeader("enc"));
    }
    if map.contains_key("zip") {
        return Err(OidcError::UnsupportedHeader("zip"));
    }
    match map.get("cty") {
        Some(Value::String(cty)) if cty.eq_ignore_ascii_case("JWT") => {
            return Err(OidcError::UnsupportedHeader("cty"));
        }
        Some(Value::String(_)) | None => {}
        Some(_) => return Err(OidcError::Malformed("header cty is not a string")),
    }
    let kid = match map.get("kid") {
        Some(Value::String(kid)) if kid.len() <= MAX_KID_BYTES => Some(kid.clone()),
        Some(Value::String(_)) => return Err(OidcError::Malformed("header kid is too long")),
        Some(_) => return Err(OidcError::Malformed("header kid is not a string")),
        None => None,
    };
    let typ = match map.get("typ") {
        Some(Value::String(typ)) => Some(typ.clone()),
        Some(_) => return Err(OidcError::Malformed("header typ is not a string")),
        None => None,
    };
    Ok(Header { alg, kid, typ })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str, sig: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), sig)
    }

    #[test]
    fn parses_a_well_formed_token() {
        let t = token(
            r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#,
            r#"{"iss":"x"}"#,
            "AAAA",
        );
        let parsed = parse_unverified(&t).unwrap();
        assert_eq!(parsed.header.alg, Algorithm::RS256);
        assert_eq!(parsed.header.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.issuer(), Some("x"));
        assert_eq!(parsed.signature(), &[0, 0, 0]);
        let dot = t.rfind('.').unwrap();
        assert_eq!(parsed.signing_input(), &t.as_bytes()[..dot]);
        assert!(looks_like_jwt(&t));
        assert!(!looks_like_jwt("tg_abcdef"));
    }

    #[test]
    fn refuses_bad_structure() {
        let h = b64(r#"{"alg":"RS256"}"#);
        let p = b64(r#"{"iss":"x"}"#);
        for bad in [
            String::new(),
            h.clone(),
            format!("{h}.{p}"),
            format!("{h}.{p}.AAAA.AAAA"),
            format!("{h}.{p}.AAAA."),
            format!("{h}..AAAA"),
            format!(".{p}.AAAA"),
            format!("{h}=.{p}.AAAA"),
            format!("{h}.{p}.AAAA="),
            format!("{h} .{p}.AAAA"),
            format!("{h}.{p}.AA AA"),
            format!("{h}.{p}.AA\nAA"),
            format!("{h}.{p}.AA+/"),
            format!("{h}.{p}.AAB"),
        ] {
            assert!(
                matches!(parse_unverified(&bad), Err(OidcError::Malformed(_))),
                "{bad:?}: {:?}",
                parse_unverified(&bad).err()
            );
        }
    }

    #[test]
    fn refuses_header_tricks() {
        let p = r#"{"iss":"x"}"#;
        let cases: [(&str, OidcError); 10] = [
            (r#"{"alg":"none"}"#, OidcError::AlgNone),
            (r#"{"alg":"nOnE"}"#, OidcError::AlgNone),
            (
                r#"{"alg":"RS256","crit":["exp"]}"#,
                OidcError::CriticalHeader,
            ),
            (
                r#"{"alg":"RS256","enc":"A128GCM"}"#,
                OidcError::UnsupportedHeader("enc"),
            ),
            (
                r#"{"alg":"RS256","zip":"DEF"}"#,
                OidcError::UnsupportedHeader("zip"),
            ),
            (
                r#"{"alg":"RS256","cty":"JWT"}"#,
                OidcError::UnsupportedHeader("cty"),
            ),
            (
                r#"{"alg":"RS256","alg":"none"}"#,
                OidcError::DuplicateKey("header"),
            ),
            (
                r#"{"alg":"ES512"}"#,
                OidcError::UnsupportedAlgorithm("\"ES512\"".into()),
            ),
            (
                r#"{"alg":"rs256"}"#,
                OidcError::UnsupportedAlgorithm("\"rs256\"".into()),
            ),
            (
                r#"{"alg":["RS256"]}"#,
                OidcError::Malformed("header alg is not a string"),
            ),
        ];
        for (header, want) in cases {
            assert_eq!(
                parse_unverified(&token(header, p, "AAAA")).err(),
                Some(want),
                "{header}"
            );
        }
        assert_eq!(
            parse_unverified(&token(r#"{"alg":"RS256"}"#, r#"{"a":1,"a":1}"#, "AAAA")).err(),
            Some(OidcError::DuplicateKey("payload"))
        );
        assert_eq!(
            parse_unverified(&token(r#"{"alg":"RS256"}"#, "[1]", "AAAA")).err(),
            Some(OidcError::Malformed("payload is not a JSON object"))
        );
        assert_eq!(
            parse_unverified(&token("[]", p, "AAAA")).err(),
            Some(OidcError::Malformed("header is not a JSON object"))
        );
    }

    #[test]
    fn size_limit() {
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            parse_unverified(&big),
            Err(OidcError::TooLarge { .. })
        ));
    }
}
