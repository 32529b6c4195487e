#![no_main]
//! Bearer token verification (`tollgate-oidc`): the input as a compact token
//! (`parse_unverified`, `looks_like_jwt`, and `Verifier::verify_cached` against a
//! shared-secret issuer), as the claims of a token correctly signed for that issuer (an
//! accepted token must name the issuer, a subject and an unexpired `exp`), and as a JWKS
//! document. Nothing may panic; no error text may carry the input's signature.

use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use tollgate_oidc::{
    IssuerConfig, JwkSet, MAX_TOKEN_BYTES, ManualClock, OidcConfig, Verifier, looks_like_jwt,
    parse_unverified,
};

const ISSUER: &str = "fuzz-issuer";
const SECRET: &str = "fuzzing-secret-fuzzing-secret-fuzzing-secret-fuzzing-secret-0123";
/// 2027-01-15T08:00:00Z.
const NOW: i64 = 1_800_000_000_000_000;

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    let mut issuer = IssuerConfig::new(ISSUER);
    issuer.audiences = vec!["tollgate".into()];
    issuer.client_ids = vec!["cli".into()];
    issuer.hs_secret_env = Some("SECRET".into());
    issuer.groups_claim = tollgate_oidc::ClaimPath::Dotted("realm_access.roles".into());
    issuer.group_map.insert("admins".into(), vec!["dba".into()]);
    let config = OidcConfig {
        issuers: vec![issuer],
        ..OidcConfig::default()
    };
    let env = |_: &str| Some(SECRET.to_owned());
    Verifier::with_env(&config, &env, Arc::new(ManualClock::new(NOW)))
        .expect("the fuzz configuration is valid")
});

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        if let Ok(parsed) = parse_unverified(token) {
            assert!(token.len() <= MAX_TOKEN_BYTES);
            let input = parsed.signing_input();
            assert!(token.as_bytes().starts_with(input));
            assert_eq!(token.as_bytes().get(input.len()), Some(&b'.'));
        }
        let _ = looks_like_jwt(token);
        if let Err(e) = VERIFIER.verify_cached(token) {
            let _ = e.public_message();
            let text = e.to_string();
            // A real signature is base64url; anything else could be a piece of a fixed message.
            if let Some(sig) = token.rsplit('.').next()
                && sig.len() >= 16
                && sig
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                assert!(
                    !text.contains(sig),
                    "error text carries the signature: {text}"
                );
            }
        }
    }

    // The input as the claims of a correctly signed token.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(data));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA512, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    if let Ok(ok) = VERIFIER.verify_cached(&token) {
        assert_eq!(ok.issuer, ISSUER);
        assert!(!ok.subject.is_empty() && !ok.subject.chars().any(char::is_control));
        assert!(
            ok.expires_at + 60_000_000 > NOW,
            "accepted an expired token"
        );
        assert!(ok.groups.windows(2).all(|w| w[0] < w[1]));
        let identity = ok.to_identity();
        assert_eq!(identity.subject, ok.principal);
    }

    if let Ok(set) = JwkSet::from_json(data) {
        assert!(set.usable_len() <= set.len());
        assert!(set.kids().count() <= set.usable_len());
    }
});
