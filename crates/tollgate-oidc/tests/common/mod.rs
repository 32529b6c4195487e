//! Test support: keys, token signing, a tiny identity provider on loopback.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};
use tollgate_oidc::{IssuerConfig, ManualClock, OidcConfig, OidcError, Verifier};

/// The test clock's start: 2027-01-15T08:00:00Z.
pub const NOW_SECS: i64 = 1_800_000_000;
pub const AUDIENCE: &str = "tollgate";
pub const HS_SECRET: &str = "a-shared-secret-of-at-least-32-bytes-for-hs256-tests!!";
pub const HS_SECRET_LONG: &str =
    "a-shared-secret-long-enough-for-hs512-which-needs-at-least-64-bytes-of-key-material";

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A signing key of any supported type.
pub enum Signer {
    Rsa(RsaKeyPair),
    Ec256(EcdsaKeyPair),
    Ec384(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Hmac(Vec<u8>),
}

impl Signer {
    pub fn rsa(fixture_name: &str) -> Self {
        Self::Rsa(RsaKeyPair::from_pkcs8(&fixture(fixture_name)).unwrap())
    }

    pub fn rsa_a() -> Self {
        Self::rsa("rsa-a.pk8.der")
    }

    pub fn rsa_b() -> Self {
        Self::rsa("rsa-b.pk8.der")
    }

    pub fn ec256() -> Self {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Self::Ec256(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
    }

    pub fn ec384() -> Self {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P384_SHA384_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Self::Ec384(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
    }

    pub fn ed25519() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Self::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    /// The public JWK with this `kid`.
    pub fn jwk(&self, kid: &str) -> Value {
        match self {
            Self::Rsa(kp) => {
                let c: signature::RsaPublicKeyComponents<Vec<u8>> = kp.public().into();
                json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Self::Ec256(kp) | Self::Ec384(kp) => {
                let point = kp.public_key().as_ref();
                let len = (point.len() - 1) / 2;
                let crv = if len == 32 { "P-256" } else { "P-384" };
                json!({"kty": "EC", "kid": kid, "crv": crv,
                       "x": b64(&point[1..1 + len]), "y": b64(&point[1 + len..])})
            }
            Self::Ed(kp) => {
                json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(kp.public_key().as_ref())})
            }
            Self::Hmac(_) => panic!("no public JWK for an HMAC key"),
        }
    }

    /// Signs `input` for `alg` (the JOSE name; the key must fit).
    pub fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Self::Rsa(kp) => {
                let enc: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    // Any other name: sign RS256 anyway (the token lies about its alg).
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; kp.public().modulus_len()];
                kp.sign(enc, &rng, input, &mut sig).unwrap();
                sig
            }
            Self::Ec256(kp) | Self::Ec384(kp) => kp.sign(&rng, input).unwrap().as_ref().to_vec(),
            Self::Ed(kp) => kp.sign(input).as_ref().to_vec(),
            Self::Hmac(secret) => {
                let alg = match alg {
                    "HS384" => ring::hmac::HMAC_SHA384,
                    "HS512" => ring::hmac::HMAC_SHA512,
                    _ => ring::hmac::HMAC_SHA256,
                };
                ring::hmac::sign(&ring::hmac::Key::new(alg, secret), input)
                    .as_ref()
                    .to_vec()
            }
        }
    }
}

/// `b64(header).b64(claims)`, without the signature.
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64(header.to_string()), b64(claims.to_string()))
}

/// A compact JWS with raw header and claims text (for duplicate keys and other oddities).
pub fn sign_raw(signer: &Signer, alg: &str, header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = signer.sign(alg, input.as_bytes());
    format!("{input}.{}", b64(sig))
}

/// A compact JWS: header `{"alg": alg, "kid": kid, "typ": "JWT"}`.
pub fn sign(signer: &Signer, alg: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    sign_header(signer, &header, claims)
}

pub fn sign_header(signer: &Signer, header: &Value, claims: &Value) -> String {
    let alg = header["alg"].as_str().unwrap_or("RS256").to_owned();
    let input = unsigned(header, claims);
    let sig = signer.sign(&alg, input.as_bytes());
    format!("{input}.{}", b64(sig))
}

/// Standard claims for `issuer`: a person, valid for an hour from the test clock's start.
pub fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer,
        "sub": "alice",
        "aud": AUDIENCE,
        "exp": NOW_SECS + 3600,
        "iat": NOW_SECS - 10,
        "nbf": NOW_SECS - 10,
        "email": "alice@example.com",
        "jti": "token-1",
        "groups": ["engineers"],
    })
}

pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(NOW_SECS * 1_000_000))
}

pub fn issuer_config(issuer: &str) -> IssuerConfig {
    let mut cfg = IssuerConfig::new(issuer);
    cfg.audiences = vec![AUDIENCE.into()];
    cfg
}

pub fn hs_issuer_config(issuer: &str, env_name: &str) -> IssuerConfig {
    let mut cfg = issuer_config(issuer);
    cfg.hs_secret_env = Some(env_name.into());
    cfg
}

pub fn verifier(issuers: Vec<IssuerConfig>, clock: Arc<ManualClock>) -> Verifier {
    try_verifier(issuers, clock).unwrap()
}

pub fn try_verifier(
    issuers: Vec<IssuerConfig>,
    clock: Arc<ManualClock>,
) -> Result<Verifier, OidcError> {
    let config = OidcConfig {
        issuers,
        http_timeout_secs: 5,
        web: None,
    };
    let env = |name: &str| match name {
        "HS_SECRET" => Some(HS_SECRET.to_owned()),
        "HS_SECRET_LONG" => Some(HS_SECRET_LONG.to_owned()),
        "HS_SHORT" => Some("too-short".to_owned()),
        _ => None,
    };
    Verifier::with_env(&config, &env, clock)
}

/// What the test identity provider serves.
#[derive(Debug)]
pub struct IdpState {
    /// The `issuer` in the discovery document (`None`: the provider's own URL).
    pub doc_issuer: Option<String>,
    /// The `jwks_uri` in the discovery document (`None`: `{url}/jwks`).
    pub jwks_uri: Option<String>,
    pub jwks: Value,
    /// A raw JWKS body, served instead of `jwks` when set.
    pub jwks_raw: Option<String>,
    pub cache_control: Option<String>,
    /// Answer 503 to everything.
    pub down: bool,
    pub discovery_hits: usize,
    pub jwks_hits: usize,
    /// Delay before answering the JWKS (to hold a fetch in flight).
    pub jwks_delay: Duration,
}

/// A minimal HTTP/1.1 identity provider on 127.0.0.1: discovery and JWKS.
pub struct Idp {
    pub url: String,
    pub state: Arc<Mutex<IdpState>>,
}

impl Idp {
    pub fn start(jwks: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(IdpState {
            doc_issuer: None,
            jwks_uri: None,
            jwks,
            jwks_raw: None,
            cache_control: None,
            down: false,
            discovery_hits: 0,
            jwks_hits: 0,
            jwks_delay: Duration::ZERO,
        }));
        let shared = state.clone();
        let base = url.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = shared.clone();
                let base = base.clone();
                std::thread::spawn(move || serve(stream, &shared, &base));
            }
        });
        Self { url, state }
    }

    pub fn set_jwks(&self, jwks: Value) {
        self.state.lock().unwrap().jwks = jwks;
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.lock().unwrap().jwks_hits
    }

    pub fn discovery_hits(&self) -> usize {
        self.state.lock().unwrap().discovery_hits
    }

    pub fn config(&self) -> IssuerConfig {
        issuer_config(&self.url)
    }
}

fn serve(mut stream: TcpStream, state: &Mutex<IdpState>, base: &str) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, body, cache_control, delay) = {
        let mut st = state.lock().unwrap();
        if st.down {
            (
                "503 Service Unavailable",
                "down".to_owned(),
                None,
                Duration::ZERO,
            )
        } else if path == "/.well-known/openid-configuration" {
            st.discovery_hits += 1;
            let doc = json!({
                "issuer": st.doc_issuer.clone().unwrap_or_else(|| base.to_owned()),
                "jwks_uri": st.jwks_uri.clone().unwrap_or_else(|| format!("{base}/jwks")),
                "authorization_endpoint": format!("{base}/auth"),
            });
            ("200 OK", doc.to_string(), None, Duration::ZERO)
        } else if path == "/jwks" {
            st.jwks_hits += 1;
            let body = st.jwks_raw.clone().unwrap_or_else(|| st.jwks.to_string());
            ("200 OK", body, st.cache_control.clone(), st.jwks_delay)
        } else {
            (
                "404 Not Found",
                "not found".to_owned(),
                None,
                Duration::ZERO,
            )
        }
    };
    std::thread::sleep(delay);
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(cc) = cache_control {
        response.push_str(&format!("Cache-Control: {cc}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&body);
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

/// Asserts the error matches `pattern` and has `public` as its public message.
#[macro_export]
macro_rules! assert_refused {
    ($result:expr, $pattern:pat, $public:expr) => {{
        match $result {
            Ok(v) => panic!("accepted: {v:?}"),
            Err(e) => {
                assert!(matches!(e, $pattern), "unexpected error: {e:?} ({e})");
                assert_eq!(e.public_message(), $public, "public message of {e:?}");
                e
            }
        }
    }};
}
