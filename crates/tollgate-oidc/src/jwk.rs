//! JSON Web Key sets (RFC 7517) and signature verification with `ring`.
//!
//! Every key of a set is kept, usable or not, so that a token naming an unusable key (an
//! encryption key, a 1024-bit RSA key, a symmetric key) is refused for that reason rather than
//! as an unknown key that would trigger a refetch.

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

use crate::json;
use crate::jws::{Algorithm, decode_part};

/// The most keys read from one set.
const MAX_KEYS: usize = 100;
/// RSA modulus bounds, in bits.
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// An elliptic curve for ECDSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

/// A public key ready for `ring`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { curve: Curve, point: Vec<u8> },
    Ed25519(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    alg: Option<String>,
    key: Result<PublicKey, &'static str>,
}

/// A parsed JWKS document.
#[derive(Debug, Clone, Default)]
pub struct JwkSet {
    keys: Vec<Jwk>,
}

/// Why no key of a set fits a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selection {
    /// No key has the token's `kid` (or, for a token without `kid`, no key fits its algorithm).
    NotFound,
    /// Keys with the `kid` exist, none can verify the algorithm; the reason of the first.
    Mismatch(&'static str),
}

impl JwkSet {
    /// Parses a JWKS document: a JSON object whose `keys` member is an array of JWK objects.
    /// Keys that cannot be used are kept with the reason (see the module documentation); the
    /// document itself must be well formed.
    pub fn from_json(bytes: &[u8]) -> Result<Self, &'static str> {
        let doc = json::parse_object(bytes).map_err(|_| "not a JSON object")?;
        let Some(Value::Array(items)) = doc.get("keys") else {
            return Err("no keys array");
        };
        if items.len() > MAX_KEYS {
            return Err("more than 100 keys");
        }
        let keys = items
            .iter()
            .map(|item| match item {
                Value::Object(obj) => parse_jwk(obj),
                _ => Jwk {
                    kid: None,
                    alg: None,
                    key: Err("not a JSON object"),
                },
            })
            .collect();
        Ok(Self { keys })
    }

    /// How many keys the set holds, usable or not.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys can verify some algorithm.
    pub fn usable_len(&self) -> usize {
        self.keys.iter().filter(|k| k.key.is_ok()).count()
    }

    /// The ids of the usable keys, in document order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .filter(|k| k.key.is_ok())
            .filter_map(|k| k.kid.as_deref())
    }

    /// Whether the set answers for this `kid` (some key has it, usable or not), or, for a
    /// token without `kid`, has a key for the algorithm.
    pub(crate) fn knows(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        match kid {
            Some(kid) => self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
            None => self.keys.iter().any(|k| k.fits(alg).is_ok()),
        }
    }

    /// Whether any key verifies `signature` over `message` for the token's `kid` and `alg`.
    ///
    /// With a `kid`, only the keys with that id are tried. Without one, every key that fits
    /// the algorithm is tried, but only when exactly one does (an issuer with several keys
    /// must name them).
    pub(crate) fn verify(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, Selection> {
        let mut candidates = Vec::new();
        let mut mismatch = None;
        for k in &self.keys {
            if let Some(kid) = kid {
                if k.kid.as_deref() != Some(kid) {
                    continue;
                }
                match k.fits(alg) {
                    Ok(key) => candidates.push(key),
                    Err(reason) => {
                        mismatch.get_or_insert(reason);
                    }
                }
            } else if let Ok(key) = k.fits(alg) {
                candidates.push(key);
            }
        }
        if candidates.is_empty() {
            return Err(mismatch.map_or(Selection::NotFound, Selection::Mismatch));
        }
        if kid.is_none() && candidates.len() > 1 {
            return Err(Selection::Mismatch(
                "the token has no kid and several keys fit its algorithm",
            ));
        }
        Ok(candidates
            .into_iter()
            .any(|key| verify_signature(alg, key, message, signature)))
    }
}

impl Jwk {
    /// The key, when it can verify `alg`.
    fn fits(&self, alg: Algorithm) -> Result<&PublicKey, &'static str> {
        let key = self.key.as_ref().map_err(|reason| *reason)?;
        if let Some(own) = &self.alg
            && own != alg.name()
        {
            return Err("the key's alg is not the token's alg");
        }
        let ok = match (alg, key) {
            (
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512,
                PublicKey::Rsa { .. },
            )
            | (Algorithm::EdDSA, PublicKey::Ed25519(_)) => true,
            (Algorithm::ES256, PublicKey::Ec { curve, .. }) => {
                if *curve != Curve::P256 {
                    return Err("the key's curve is not the algorithm's");
                }
                true
            }
            (Algorithm::ES384, PublicKey::Ec { curve, .. }) => {
                if *curve != Curve::P384 {
                    return Err("the key's curve is not the algorithm's");
                }
                true
            }
            _ => false,
        };
        if ok {
            Ok(key)
        } else {
            Err("the key's type does not match the algorithm")
        }
    }
}

fn parse_jwk(obj: &Map<String, Value>) -> Jwk {
    let kid = obj.get("kid").and_then(Value::as_str).map(str::to_owned);
    let alg = obj.get("alg").and_then(Value::as_str).map(str::to_owned);
    Jwk {
        kid,
        alg,
        key: parse_key(obj),
    }
}

fn parse_key(obj: &Map<String, Value>) -> Result<PublicKey, &'static str> {
    match obj.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Err("the key's use is not sig"),
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("the key's key_ops do not include verify");
        }
    }
    if let Some(alg) = obj.get("alg") {
        let Some(alg) = alg.as_str() else {
            return Err("the key's alg is not a string");
        };
        match Algorithm::from_name(alg) {
            Some(a) if a.is_hmac() => return Err("symmetric keys are never taken from a key set"),
            Some(_) => {}
            None => return Err("the key's alg is not supported"),
        }
    }
    let field = |name: &str| -> Result<Vec<u8>, &'static str> {
        obj.get(name)
            .and_then(Value::as_str)
            .and_then(decode_part)
            .ok_or("a key parameter is missing or not base64url")
    };
    match obj.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            let n = strip_zeros(field("n")?);
            let e = strip_zeros(field("e")?);
            let bits = bit_len(&n);
            if bits < RSA_MIN_BITS {
                return Err("the RSA key is smaller than 2048 bits");
            }
            if bits > RSA_MAX_BITS {
                return Err("the RSA key is larger than 8192 bits");
            }
            if e.is_empty() || e.len() > 8 {
                return Err("the RSA exponent is out of range");
            }
            Ok(PublicKey::Rsa { n, e })
        }
        Some("EC") => {
            let (curve, len) = match obj.get("crv").and_then(Value::as_str) {
                Some("P-256") => (Curve::P256, 32),
                Some("P-384") => (Curve::P384, 48),
                _ => return Err("the EC curve is not supported"),
            };
            let x = field("x")?;
            let y = field("y")?;
            if x.len() != len || y.len() != len {
                return Err("the EC coordinates have the wrong length");
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Ok(PublicKey::Ec { curve, point })
        }
        Some("OKP") => {
            if obj.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                return Err("the OKP curve is not supported");
            }
            let x = field("x")?;
            if x.len() != signature::ED25519_PUBLIC_KEY_LEN {
                return Err("the Ed25519 key has the wrong length");
            }
            Ok(PublicKey::Ed25519(x))
        }
        Some("oct") => Err("symmetric keys are never taken from a key set"),
        Some(_) => Err("the key type is not supported"),
        None => Err("the key has no kty"),
    }
}

fn strip_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}

fn bit_len(be: &[u8]) -> usize {
    match be.first() {
        Some(first) => (be.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

fn verify_signature(alg: Algorithm, key: &PublicKey, message: &[u8], sig: &[u8]) -> bool {
    match key {
        PublicKey::Rsa { n, e } => {
            let params: &signature::RsaParameters = match alg {
                Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
                _ => return false,
            };
            RsaPublicKeyComponents { n, e }
                .verify(params, message, sig)
                .is_ok()
        }
        PublicKey::Ec { curve, point } => {
            let params: &signature::EcdsaVerificationAlgorithm = match (alg, curve) {
                (Algorithm::ES256, Curve::P256) => &signature::ECDSA_P256_SHA256_FIXED,
                (Algorithm::ES384, Curve::P384) => &signature::ECDSA_P384_SHA384_FIXED,
                _ => return false,
            };
            UnparsedPublicKey::new(params, point)
                .verify(message, sig)
                .is_ok()
        }
        PublicKey::Ed25519(x) => {
            alg == Algorithm::EdDSA
                && UnparsedPublicKey::new(&signature::ED25519, x)
                    .verify(message, sig)
                    .is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unusable_keys_with_a_reason() {
        let n = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            [0x80u8; 128],
        );
        let doc = format!(
            r#"{{"keys":[
                {{"kty":"RSA","kid":"small","n":"{n}","e":"AQAB"}},
                {{"kty":"oct","kid":"sym","k":"AAAA"}},
                {{"kty":"OKP","crv":"X25519","kid":"x","x":"AAAA"}},
                {{"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"AAAA","y":"AAAA"}},
                {{"kty":"EC","crv":"P-256","kid":"short","x":"AAAA","y":"AAAA"}},
                "not an object"
            ]}}"#
        );
        let set = JwkSet::from_json(doc.as_bytes()).unwrap();
        assert_eq!(set.len(), 6);
        assert_eq!(set.usable_len(), 0);
        let check = |kid| set.verify(Some(kid), Algorithm::RS256, b"m", b"s");
        assert_eq!(
            check("small"),
            Err(Selection::Mismatch("the RSA key is smaller than 2048 bits"))
        );
        assert_eq!(
            check("sym"),
            Err(Selection::Mismatch(
                "symmetric keys are never taken from a key set"
            ))
        );
        assert_eq!(
            check("enc"),
            Err(Selection::Mismatch("the key's use is not sig"))
        );
        assert_eq!(check("nope"), Err(Selection::NotFound));
        assert!(set.knows(Some("enc"), Algorithm::ES256));
        assert!(!set.knows(Some("nope"), Algorithm::ES256));
    }

    #[test]
    fn refuses_malformed_documents() {
        assert!(JwkSet::from_json(b"[]").is_err());
        assert!(JwkSet::from_json(br#"{"keys":{}}"#).is_err());
        assert!(JwkSet::from_json(br#"{"keys":[],"keys":[]}"#).is_err());
        assert!(JwkSet::from_json(br#"{"keys":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_len(&[]), 0);
        assert_eq!(bit_len(&[1]), 1);
        assert_eq!(bit_len(&[0x80, 0]), 16);
        assert_eq!(strip_zeros(vec![0, 0, 1, 0]), vec![1, 0]);
    }
}
