#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Tokens that must be refused: each case asserts the specific error and the message a client
//! would see.

mod common;

use common::*;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use tollgate_oidc::{Algorithm, MAX_TOKEN_BYTES, OidcError, Verifier};

const INVALID: &str = "invalid token";
const NOT_ACCEPTED: &str = "token not accepted here";
const EXPIRED: &str = "token expired";
const NOT_YET: &str = "token not yet valid";

/// An identity provider with an RSA key (`rsa-1`), a P-256 key (`ec-1`), an Ed25519 key
/// (`ed-1`), and unusable keys: an encryption key (`enc-1`), a 1024-bit RSA key (`small-1`),
/// an RSA key declared for RS256 only (`rs256-only`), a symmetric key (`oct-1`).
struct Setup {
    rsa: Signer,
    ec: Signer,
    ed: Signer,
    idp: Idp,
    v: Verifier,
}

fn setup() -> Setup {
    let rsa = Signer::rsa_a();
    let ec = Signer::ec256();
    let ed = Signer::ed25519();
    let mut enc = ec.jwk("enc-1");
    enc["use"] = json!("enc");
    let mut rs256_only = rsa.jwk("rs256-only");
    rs256_only["alg"] = json!("RS256");
    let small = json!({"kty": "RSA", "kid": "small-1", "n": b64([0xc5u8; 128]), "e": "AQAB"});
    let oct = json!({"kty": "oct", "kid": "oct-1", "k": b64(HS_SECRET)});
    let idp = Idp::start(json!({"keys": [
        rsa.jwk("rsa-1"), ec.jwk("ec-1"), ed.jwk("ed-1"), enc, small, rs256_only, oct
    ]}));
    let mut cfg = idp.config();
    cfg.client_ids = vec!["tollgate-cli".into()];
    let v = verifier(vec![cfg], clock());
    Setup {
        rsa,
        ec,
        ed,
        idp,
        v,
    }
}

impl Setup {
    fn claims(&self) -> Value {
        claims(&self.idp.url)
    }

    fn rs256(&self, claims: &Value) -> String {
        sign(&self.rsa, "RS256", Some("rsa-1"), claims)
    }
}

fn cut(token: &str) -> (String, String, String) {
    let mut parts = token.split('.').map(str::to_owned);
    (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    )
}

#[tokio::test]
async fn expired() {
    let s = setup();
    let mut c = s.claims();
    c["exp"] = json!(NOW_SECS - 61);
    c["iat"] = json!(NOW_SECS - 3600);
    c["nbf"] = json!(NOW_SECS - 3600);
    let e = assert_refused!(
        s.v.verify(&s.rs256(&c)).await,
        OidcError::Expired {
            leeway_secs: 60,
            ..
        },
        EXPIRED
    );
    assert!(e.to_string().contains("token expired at"), "{e}");
}

#[tokio::test]
async fn missing_or_malformed_exp() {
    let s = setup();
    let mut c = s.claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_refused!(
        s.v.verify(&s.rs256(&c)).await,
        OidcError::MissingClaim("exp"),
        INVALID
    );
    for bad in [
        json!("1900000000"),
        json!(-5),
        json!(1e20),
        json!(null),
        json!([1]),
    ] {
        c["exp"] = bad;
        assert_refused!(
            s.v.verify(&s.rs256(&c)).await,
            OidcError::InvalidClaim { claim: "exp", .. },
            INVALID
        );
    }
}

#[tokio::test]
async fn not_yet_valid() {
    let s = setup();
    let mut c = s.claims();
    c["nbf"] = json!(NOW_SECS + 61);
    assert_refused!(
        s.v.verify(&s.rs256(&c)).await,
        OidcError::NotYetValid { .. },
        NOT_YET
    );
}

#[tokio::test]
async fn issued_in_the_future() {
    let s = setup();
    let mut c = s.claims();
    c["iat"] = json!(NOW_SECS + 61);
    c.as_object_mut().unwrap().remove("nbf");
    assert_refused!(
        s.v.verify(&s.rs256(&c)).await,
        OidcError::IssuedInFuture { .. },
        NOT_YET
    );
}

#[tokio::test]
async fn wrong_issuer() {
    let s = setup();
    for iss in [
        format!("{}/", s.idp.url),
        s.idp.url.to_uppercase(),
        "https://evil.example".to_owned(),
        String::new(),
    ] {
        let mut c = s.claims();
        c["iss"] = json!(iss);
        assert_refused!(
            s.v.verify(&s.rs256(&c)).await,
            OidcError::UnknownIssuer(_),
            NOT_ACCEPTED
        );
    }
    let mut c = s.claims();
    c["iss"] = json!(["x"]);
    assert_refused!(
        s.v.verify(&s.rs256(&c)).await,
        OidcError::InvalidClaim { claim: "iss", .. },
        INVALID
    );
    c.as_object_mut().unwrap().remove("iss");
    assert_refused!(
        s.v.verify(&s.rs256(&c)).await,
        OidcError::MissingClaim("iss"),
        INVALID
    );
    // An unknown issuer never makes the verifier fetch anything.
    assert_eq!(s.idp.jwks_hits() + s.idp.discovery_hits(), 0);
}

#[tokio::test]
async fn wrong_audience() {
    let s = setup();
    for aud in [
        json!("other"),
        json!(["other", "more"]),
        json!([]),
        json!("TOLLGATE"),
    ] {
        let mut c = s.claims();
        c["aud"] = aud;
        assert_refused!(
            s.v.verify(&s.rs256(&c)).await,
            OidcError::WrongAudience { .. },
            NOT_ACCEPTED
        );
    }
    let mut c = s.claims();
    c.as_object_mut().unwrap().remove("aud");
    assert_refused!(
        s.v.verify(&s.rs256(&c)).await,
        OidcError::WrongAudience { .. },
        NOT_ACCEPTED
    );
    c["aud"] = json!(7);
    assert_refused!(
        s.v.verify(&s.rs256(&c)).await,
        OidcError::InvalidClaim { claim: "aud", .. },
        INVALID
    );
}

#[tokio::test]
async fn token_issued_to_another_client() {
    let s = setup();
    let mut c = s.claims();
    c["aud"] = json!("other-app");
    c["azp"] = json!("other-app");
    assert_refused!(
        s.v.verify(&s.rs256(&c)).await,
        OidcError::WrongAudience { .. },
        NOT_ACCEPTED
    );
    let mut c = s.claims();
    c.as_object_mut().unwrap().remove("aud");
    c["client_id"] = json!("other-app");
    assert_refused!(
        s.v.verify(&s.rs256(&c)).await,
        OidcError::WrongAudience { .. },
        NOT_ACCEPTED
    );
    // azp says one client, client_id another: refused rather than guessed.
    let mut c = s.claims();
    c["azp"] = json!("tollgate-cli");
    c["client_id"] = json!("other-app");
    assert_refused!(
        s.v.verify(&s.rs256(&c)).await,
        OidcError::InvalidClaim { claim: "azp", .. },
        INVALID
    );
}

#[tokio::test]
async fn alg_none_with_and_without_signature_part() {
    let s = setup();
    let c = s.claims();
    let valid = s.rs256(&c);
    let (_, _, sig) = cut(&valid);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let unsigned = unsigned(&json!({"alg": alg, "kid": "rsa-1"}), &c);
        assert_refused!(
            s.v.verify(&format!("{unsigned}.")).await,
            OidcError::AlgNone,
            INVALID
        );
        assert_refused!(
            s.v.verify(&format!("{unsigned}.{sig}")).await,
            OidcError::AlgNone,
            INVALID
        );
        assert_refused!(
            s.v.verify(&unsigned).await,
            OidcError::Malformed(_),
            INVALID
        );
    }
    // Nothing was fetched for them.
    assert_eq!(s.idp.jwks_hits(), 0);
}

#[tokio::test]
async fn rs256_to_hs256_confusion_with_the_public_key_as_secret() {
    let s = setup();
    let Signer::Rsa(kp) = &s.rsa else {
        unreachable!()
    };
    let components: signature::RsaPublicKeyComponents<Vec<u8>> = kp.public().into();
    let pem = fixture("rsa-a.pub.pem");
    let pem_trimmed = String::from_utf8(pem.clone())
        .unwrap()
        .trim_end()
        .as_bytes()
        .to_vec();
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("SPKI DER", fixture("rsa-a.pub.der")),
        ("SPKI PEM", pem),
        ("SPKI PEM without the final newline", pem_trimmed),
        ("PKCS#1 DER", kp.public().as_ref().to_vec()),
        ("modulus bytes", components.n.clone()),
        ("modulus base64url", b64(&components.n).into_bytes()),
        ("JWK JSON", s.rsa.jwk("rsa-1").to_string().into_bytes()),
    ];
    for (what, secret) in secrets {
        let hmac = Signer::Hmac(secret);
        for alg in ["HS256", "HS384", "HS512"] {
            for kid in [Some("rsa-1"), None] {
                let token = sign(&hmac, alg, kid, &s.claims());
                let e = assert_refused!(
                    s.v.verify(&token).await,
                    OidcError::AlgorithmNotAllowed { .. },
                    INVALID
                );
                assert!(e.to_string().contains(alg), "{what}: {e}");
                assert!(s.v.verify_cached(&token).is_err());
            }
        }
    }
    // The algorithm is refused before any key is looked at.
    assert_eq!(s.idp.jwks_hits(), 0);
}

#[tokio::test]
async fn stripped_signature() {
    let s = setup();
    let token = s.rs256(&s.claims());
    let (h, p, _) = cut(&token);
    assert_refused!(
        s.v.verify(&format!("{h}.{p}.")).await,
        OidcError::MissingSignature,
        INVALID
    );
    assert_refused!(
        s.v.verify(&format!("{h}.{p}")).await,
        OidcError::Malformed(_),
        INVALID
    );
    // A truncated signature does not verify either.
    let (h, p, sig) = cut(&token);
    let sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
    let truncated = format!("{h}.{p}.{}", b64(&sig[..sig.len() - 1]));
    assert_refused!(
        s.v.verify(&truncated).await,
        OidcError::BadSignature { .. },
        INVALID
    );
    let one_byte = format!("{h}.{p}.{}", b64([0u8]));
    assert_refused!(
        s.v.verify(&one_byte).await,
        OidcError::BadSignature { .. },
        INVALID
    );
}

#[tokio::test]
async fn signature_from_another_key_with_the_same_kid() {
    let s = setup();
    let other_rsa = Signer::rsa_b();
    let token = sign(&other_rsa, "RS256", Some("rsa-1"), &s.claims());
    let e = assert_refused!(
        s.v.verify(&token).await,
        OidcError::BadSignature { .. },
        INVALID
    );
    assert!(e.to_string().contains("rsa-1"), "{e}");
    let other_ec = Signer::ec256();
    let token = sign(&other_ec, "ES256", Some("ec-1"), &s.claims());
    assert_refused!(
        s.v.verify(&token).await,
        OidcError::BadSignature { .. },
        INVALID
    );
    let other_ed = Signer::ed25519();
    let token = sign(&other_ed, "EdDSA", Some("ed-1"), &s.claims());
    assert_refused!(
        s.v.verify(&token).await,
        OidcError::BadSignature { .. },
        INVALID
    );
    // A known kid never triggers a refetch.
    assert_eq!(s.idp.jwks_hits(), 1);
}

#[tokio::test]
async fn key_embedded_in_the_header_is_ignored() {
    let s = setup();
    let attacker = Signer::rsa_b();
    for header in [
        json!({"alg": "RS256", "kid": "rsa-1", "jwk": attacker.jwk("rsa-1")}),
        json!({"alg": "RS256", "kid": "rsa-1", "jku": format!("{}/jwks", s.idp.url)}),
        json!({"alg": "RS256", "kid": "rsa-1", "x5u": "https://evil.example/cert.pem"}),
    ] {
        let token = sign_header(&attacker, &header, &s.claims());
        assert_refused!(
            s.v.verify(&token).await,
            OidcError::BadSignature { .. },
            INVALID
        );
    }
}

#[tokio::test]
async fn tampered_payload() {
    let s = setup();
    let token = s.rs256(&s.claims());
    let (h, _, sig) = cut(&token);
    let mut c = s.claims();
    c["sub"] = json!("admin");
    c["groups"] = json!(["admins"]);
    let forged = format!("{h}.{}.{sig}", b64(c.to_string()));
    assert_refused!(
        s.v.verify(&forged).await,
        OidcError::BadSignature { .. },
        INVALID
    );
    // One bit flipped in the payload's base64.
    let (h, p, sig) = cut(&token);
    let mut bytes = p.into_bytes();
    bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{h}.{}.{sig}", String::from_utf8(bytes).unwrap());
    assert!(s.v.verify(&flipped).await.is_err());
}

#[tokio::test]
async fn tampered_header() {
    let s = setup();
    let token = s.rs256(&s.claims());
    let (_, p, sig) = cut(&token);
    for header in [
        json!({"alg": "RS256", "kid": "rsa-1", "typ": "at+jwt"}),
        json!({"alg": "RS512", "kid": "rsa-1", "typ": "JWT"}),
        json!({"alg": "PS256", "kid": "rsa-1", "typ": "JWT"}),
        json!({"kid": "rsa-1", "alg": "RS256", "typ": "JWT", "x": 1}),
    ] {
        let forged = format!("{}.{p}.{sig}", b64(header.to_string()));
        assert_refused!(
            s.v.verify(&forged).await,
            OidcError::BadSignature { .. },
            INVALID
        );
    }
    // Moving the signature to another key's kid.
    let forged = format!(
        "{}.{p}.{sig}",
        b64(json!({"alg": "RS256", "kid": "rs256-only"}).to_string())
    );
    assert_refused!(
        s.v.verify(&forged).await,
        OidcError::BadSignature { .. },
        INVALID
    );
}

#[tokio::test]
async fn kid_pointing_at_a_key_of_another_type() {
    let s = setup();
    let c = s.claims();
    let cases: Vec<(String, &str)> = vec![
        (sign(&s.ec, "ES256", Some("rsa-1"), &c), "type"),
        (sign(&s.ed, "EdDSA", Some("ec-1"), &c), "type"),
        (sign(&s.rsa, "RS256", Some("ed-1"), &c), "type"),
        (sign(&Signer::ec384(), "ES384", Some("ec-1"), &c), "curve"),
        (sign(&s.rsa, "RS512", Some("rs256-only"), &c), "alg"),
        (sign(&s.ec, "ES256", Some("enc-1"), &c), "use"),
        (sign(&s.rsa, "RS256", Some("small-1"), &c), "2048"),
        (sign(&s.rsa, "RS256", Some("oct-1"), &c), "symmetric"),
    ];
    for (token, why) in cases {
        let e = assert_refused!(
            s.v.verify(&token).await,
            OidcError::KeyMismatch { .. },
            INVALID
        );
        assert!(e.to_string().contains(why), "{why}: {e}");
    }
    // A kid the set knows (even an unusable one) does not trigger a refetch.
    assert_eq!(s.idp.jwks_hits(), 1);
}

#[tokio::test]
async fn ecdsa_signature_in_der_form_is_refused() {
    let s = setup();
    // A P-256 key that signs ASN.1 DER instead of JOSE's fixed-length r ‖ s.
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let der_signer = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let point = der_signer.public_key().as_ref().to_vec();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "ec-der",
                     "x": b64(&point[1..33]), "y": b64(&point[33..])});
    s.idp.set_jwks(json!({"keys": [jwk]}));
    let input = unsigned(&json!({"alg": "ES256", "kid": "ec-der"}), &s.claims());
    let der_sig = der_signer.sign(&rng, input.as_bytes()).unwrap();
    let token = format!("{input}.{}", b64(der_sig.as_ref()));
    assert_refused!(
        s.v.verify(&token).await,
        OidcError::BadSignature { .. },
        INVALID
    );
}

#[tokio::test]
async fn malformed_tokens() {
    let s = setup();
    let token = s.rs256(&s.claims());
    let (h, p, sig) = cut(&token);
    let cases = [
        String::new(),
        ".".to_owned(),
        "..".to_owned(),
        "...".to_owned(),
        format!("{h}.{p}.{sig}."),
        format!(".{h}.{p}.{sig}"),
        format!("{h}..{p}.{sig}"),
        format!("{h}.{p}.{sig}.{sig}.{sig}"),
        format!("{h}=.{p}.{sig}"),
        format!("{h}.{p}=.{sig}"),
        format!("{h}.{p}.{sig}="),
        format!(" {token}"),
        format!("{token}\n"),
        format!("{h}.{p}.{}", sig.replace('-', "+").replace('_', "/") + "+"),
        format!("{h}.{p}.{}!", &sig[..sig.len() - 1]),
        format!("{}.{p}.{sig}", b64("not json")),
        format!("{}.{p}.{sig}", b64("[\"alg\",\"RS256\"]")),
        format!("{h}.{}.{sig}", b64("\"a string\"")),
        format!("{h}.{}.{sig}", b64("{\"iss\":")),
        format!("{h}.{}.{sig}", b64([0xffu8, 0xfe, b'{', b'}'])),
        format!("Bearer {token}"),
    ];
    for bad in cases {
        assert_refused!(s.v.verify(&bad).await, OidcError::Malformed(_), INVALID);
    }
    // Huge: refused before any decoding.
    let mut c = s.claims();
    c["padding"] = json!("x".repeat(MAX_TOKEN_BYTES));
    let huge = s.rs256(&c);
    assert_refused!(s.v.verify(&huge).await, OidcError::TooLarge { .. }, INVALID);
    let huge = "a".repeat(10 * 1024 * 1024);
    assert_refused!(s.v.verify(&huge).await, OidcError::TooLarge { .. }, INVALID);
    assert_eq!(s.idp.jwks_hits(), 0);
}

#[tokio::test]
async fn duplicate_json_members() {
    let s = setup();
    let payload = s.claims().to_string();
    for header in [
        r#"{"alg":"RS256","kid":"rsa-1","alg":"none"}"#,
        r#"{"alg":"RS256","kid":"rsa-1","kid":"other"}"#,
        r#"{"alg":"RS256","kid":"rsa-1","x":{"y":1,"y":2}}"#,
    ] {
        let token = sign_raw(&s.rsa, "RS256", header, &payload);
        assert_refused!(
            s.v.verify(&token).await,
            OidcError::DuplicateKey("header"),
            INVALID
        );
    }
    let header = r#"{"alg":"RS256","kid":"rsa-1"}"#;
    let dup_sub = payload.replacen('{', r#"{"sub":"admin","#, 1);
    let token = sign_raw(&s.rsa, "RS256", header, &dup_sub);
    assert_refused!(
        s.v.verify(&token).await,
        OidcError::DuplicateKey("payload"),
        INVALID
    );
    let dup_aud = payload.replacen('{', r#"{"aud":"other","#, 1);
    let token = sign_raw(&s.rsa, "RS256", header, &dup_aud);
    assert_refused!(
        s.v.verify(&token).await,
        OidcError::DuplicateKey("payload"),
        INVALID
    );
}

#[tokio::test]
async fn critical_and_unsupported_headers() {
    let s = setup();
    let c = s.claims();
    let crit = json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1});
    assert_refused!(
        s.v.verify(&sign_header(&s.rsa, &crit, &c)).await,
        OidcError::CriticalHeader,
        INVALID
    );
    let crit_b64 = json!({"alg": "RS256", "kid": "rsa-1", "b64": false, "crit": ["b64"]});
    assert_refused!(
        s.v.verify(&sign_header(&s.rsa, &crit_b64, &c)).await,
        OidcError::CriticalHeader,
        INVALID
    );
    let empty_crit = json!({"alg": "RS256", "kid": "rsa-1", "crit": []});
    assert_refused!(
        s.v.verify(&sign_header(&s.rsa, &empty_crit, &c)).await,
        OidcError::CriticalHeader,
        INVALID
    );
    let nested = json!({"alg": "RS256", "kid": "rsa-1", "cty": "JWT"});
    assert_refused!(
        s.v.verify(&sign_header(&s.rsa, &nested, &c)).await,
        OidcError::UnsupportedHeader("cty"),
        INVALID
    );
    let jwe = json!({"alg": "RS256", "kid": "rsa-1", "enc": "A256GCM"});
    assert_refused!(
        s.v.verify(&sign_header(&s.rsa, &jwe, &c)).await,
        OidcError::UnsupportedHeader("enc"),
        INVALID
    );
    for (header, want) in [
        (json!({"alg": "ES512", "kid": "ec-1"}), "ES512"),
        (json!({"alg": "rs256", "kid": "rsa-1"}), "rs256"),
        (json!({"alg": "RSA-OAEP", "kid": "rsa-1"}), "RSA-OAEP"),
    ] {
        let e = assert_refused!(
            s.v.verify(&sign_header(&s.rsa, &header, &c)).await,
            OidcError::UnsupportedAlgorithm(_),
            INVALID
        );
        assert!(e.to_string().contains(want));
    }
    let no_alg = json!({"kid": "rsa-1"});
    assert_refused!(
        s.v.verify(&sign_header(&s.rsa, &no_alg, &c)).await,
        OidcError::Malformed(_),
        INVALID
    );
    let kid_number = json!({"alg": "RS256", "kid": 1});
    assert_refused!(
        s.v.verify(&sign_header(&s.rsa, &kid_number, &c)).await,
        OidcError::Malformed(_),
        INVALID
    );
}

#[tokio::test]
async fn algorithm_outside_the_issuers_list() {
    let rsa = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [rsa.jwk("rsa-1")]}));
    let mut cfg = idp.config();
    cfg.algorithms = Some(vec!["ES256".into(), "EdDSA".into()]);
    let v = verifier(vec![cfg], clock());
    let token = sign(&rsa, "RS256", Some("rsa-1"), &claims(&idp.url));
    let e = assert_refused!(
        v.verify(&token).await,
        OidcError::AlgorithmNotAllowed { .. },
        INVALID
    );
    assert!(matches!(
        e,
        OidcError::AlgorithmNotAllowed {
            alg: Algorithm::RS256,
            ..
        }
    ));
}

#[tokio::test]
async fn shared_secret_issuer_refuses_everything_else() {
    let iss = "ci-signer";
    let v = verifier(vec![hs_issuer_config(iss, "HS_SECRET")], clock());
    let c = claims(iss);
    // Wrong secret.
    let wrong = Signer::Hmac(b"another-secret-of-at-least-32-bytes-long!!".to_vec());
    assert_refused!(
        v.verify(&sign(&wrong, "HS256", None, &c)).await,
        OidcError::BadSignature { .. },
        INVALID
    );
    // The secret is too short for HS512, so HS512 is not accepted at all.
    let right = Signer::Hmac(HS_SECRET.as_bytes().to_vec());
    assert_refused!(
        v.verify(&sign(&right, "HS512", None, &c)).await,
        OidcError::AlgorithmNotAllowed { .. },
        INVALID
    );
    // Asymmetric algorithms are never accepted from a shared-secret issuer.
    let rsa = Signer::rsa_a();
    assert_refused!(
        v.verify(&sign(&rsa, "RS256", Some("k"), &c)).await,
        OidcError::AlgorithmNotAllowed { .. },
        INVALID
    );
    let ed = Signer::ed25519();
    assert_refused!(
        v.verify(&sign(&ed, "EdDSA", None, &c)).await,
        OidcError::AlgorithmNotAllowed { .. },
        INVALID
    );
    assert_refused!(
        v.verify(&format!("{}.", unsigned(&json!({"alg": "none"}), &c)))
            .await,
        OidcError::AlgNone,
        INVALID
    );
    // Stripped.
    let token = sign(&right, "HS256", None, &c);
    let (h, p, _) = cut(&token);
    assert_refused!(
        v.verify(&format!("{h}.{p}.")).await,
        OidcError::MissingSignature,
        INVALID
    );
}

#[tokio::test]
async fn subject_checks() {
    let s = setup();
    let mut c = s.claims();
    c.as_object_mut().unwrap().remove("sub");
    assert_refused!(
        s.v.verify(&s.rs256(&c)).await,
        OidcError::MissingClaim("sub"),
        INVALID
    );
    for bad in [
        json!(""),
        json!(42),
        json!("alice\nadmin"),
        json!("x".repeat(1025)),
    ] {
        c["sub"] = bad;
        assert_refused!(
            s.v.verify(&s.rs256(&c)).await,
            OidcError::InvalidClaim { claim: "sub", .. },
            INVALID
        );
    }
    let mut c = s.claims();
    c["jti"] = json!(5);
    assert_refused!(
        s.v.verify(&s.rs256(&c)).await,
        OidcError::InvalidClaim { claim: "jti", .. },
        INVALID
    );
}

#[tokio::test]
async fn log_text_never_carries_the_token() {
    let s = setup();
    let other = Signer::rsa_b();
    let token = sign(&other, "RS256", Some("rsa-1"), &s.claims());
    let (_, p, sig) = cut(&token);
    let e = s.v.verify(&token).await.unwrap_err();
    let text = e.to_string();
    assert!(!text.contains(&sig) && !text.contains(&p), "{text}");
    // Strings from an unverified token are quoted, escaped and cut short in the log text.
    let mut c = s.claims();
    c["iss"] = json!(format!("https://evil\n{}", "x".repeat(500)));
    let e = s.v.verify(&s.rs256(&c)).await.unwrap_err();
    let text = e.to_string();
    assert!(!text.contains('\n') && text.len() < 200, "{text}");
    assert_eq!(e.public_message(), NOT_ACCEPTED);
}
