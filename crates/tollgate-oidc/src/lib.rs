//! OIDC / JWT bearer token verification for Tollgate.
//!
//! A [`Verifier`] holds any number of issuers (`[[oidc.issuers]]`, see [`OidcConfig`]). For a
//! token it:
//!
//! 1. parses the compact JWS strictly ([`parse_unverified`]): three unpadded base64url parts,
//!    JSON-object header and payload without duplicate member names, at most
//!    [`MAX_TOKEN_BYTES`]; `alg=none`, `crit`, JWE and nested tokens are refused;
//! 2. picks the issuer by the unverified `iss` (exact match), and from then on checks the
//!    token against that issuer's settings only;
//! 3. checks the algorithm against the issuer: an issuer with a key set accepts RS256/384/512,
//!    PS256/384/512, ES256, ES384 and EdDSA (Ed25519), never HMAC; an issuer with a shared
//!    secret accepts HS256/384/512 only. This rules out the RS256→HS256 confusion where a
//!    public key is used as an HMAC secret;
//! 4. verifies the signature with `ring`, using the key named by `kid` from the issuer's
//!    JWKS (found by discovery, cached, refetched on an unknown `kid` at most once per
//!    `jwks_refresh_min_secs`, usable for `grace_secs` while the provider is down; see the
//!    `keys` module); the key's type, curve, `alg` and `use` must fit;
//! 5. checks the claims: `iss`, `aud` (or `azp` / `client_id` against `client_ids`), `exp`
//!    (required), `nbf` and `iat` with a leeway, `sub`; reads the groups from a claim path and
//!    maps them; decides person or service ([`KindRule`]).
//!
//! The result is a [`VerifiedToken`]; [`VerifiedToken::to_identity`] gives the gateway's
//! `tollgate_core::Identity`. Every refusal is an [`OidcError`], whose `Display` is for the
//! log and whose [`OidcError::public_message`] is what a client may see.

mod claims;
mod clock;
mod config;
mod error;
mod json;
mod jwk;
mod jws;
mod keys;
mod verifier;

pub use claims::{IdentityKind, VerifiedToken};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ClaimPath, IssuerConfig, KindRule, OidcConfig, UnmappedGroups, WebLoginConfig};
pub use error::OidcError;
pub use jwk::JwkSet;
pub use jws::{
    Algorithm, Header, MAX_TOKEN_BYTES, UnverifiedToken, looks_like_jwt, parse_unverified,
};
pub use keys::KeyStatus;
pub use verifier::Verifier;
