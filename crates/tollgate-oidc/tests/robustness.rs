#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Every one-character change to a valid token is refused; arbitrary input never panics.
//! (`fuzz/fuzz_targets/oidc_token.rs` explores the same properties with coverage guidance.)

mod common;

use common::*;
use serde_json::json;

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[tokio::test]
async fn every_one_character_change_is_refused() {
    let key = Signer::ec256();
    let idp = Idp::start(json!({"keys": [key.jwk("k1")]}));
    let v = verifier(vec![idp.config()], clock());
    let token = sign(&key, "ES256", Some("k1"), &claims(&idp.url));
    v.verify(&token).await.unwrap();
    let bytes = token.as_bytes();
    for i in 0..bytes.len() {
        let mut replaced = bytes.to_vec();
        replaced[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let mut deleted = bytes.to_vec();
        deleted.remove(i);
        let mut doubled = bytes.to_vec();
        doubled.insert(i, bytes[i]);
        for changed in [replaced, deleted, doubled] {
            let changed = String::from_utf8(changed).unwrap();
            if let Ok(ok) = v.verify_cached(&changed) {
                panic!("position {i}: {changed} accepted as {ok:?}");
            }
        }
    }
    assert_eq!(idp.jwks_hits(), 1);
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn arbitrary_input_never_panics() {
    let iss = "ci-signer";
    let v = verifier(vec![hs_issuer_config(iss, "HS_SECRET")], clock());
    let hmac = Signer::Hmac(HS_SECRET.as_bytes().to_vec());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let fragments: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "\"iss\"",
        "\"ci-signer\"",
        "\"sub\"",
        "\"aud\"",
        "\"tollgate\"",
        "\"exp\"",
        "\"nbf\"",
        "\"iat\"",
        "1800003600",
        "1799999990",
        "-1",
        "1e999",
        "null",
        "true",
        "\"groups\"",
        "\\u0000",
        "\"\\ud800\"",
        "0.5",
        "\"azp\"",
        "\"client_id\"",
    ];
    for round in 0..3000 {
        // Claims glued from JSON fragments, signed correctly.
        let n = rng.below(24);
        let text: String = (0..n)
            .map(|_| fragments[rng.below(fragments.len())])
            .collect();
        let token = sign_raw(&hmac, "HS256", r#"{"alg":"HS256"}"#, &text);
        if let Ok(ok) = v.verify_cached(&token) {
            assert_eq!(ok.issuer, iss, "round {round}: {text}");
            assert!(ok.expires_at + 60_000_000 > NOW_SECS * 1_000_000);
        }
        // Raw characters from the base64url alphabet and dots.
        let len = rng.below(120);
        let raw: String = (0..len)
            .map(|_| {
                if rng.below(20) == 0 {
                    '.'
                } else {
                    ALPHABET[rng.below(ALPHABET.len())] as char
                }
            })
            .collect();
        assert!(v.verify_cached(&raw).is_err());
        let with_header = format!("eyJhbGciOiJIUzI1NiJ9.{raw}");
        assert!(v.verify_cached(&with_header).is_err());
    }
    // The well-formed claims are accepted by the same path.
    let good = sign(&hmac, "HS256", None, &claims(iss));
    v.verify_cached(&good).unwrap();
}
