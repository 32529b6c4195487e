//! The crate's one error type.

use thiserror::Error;

use crate::jws::Algorithm;

/// Why a token was refused, why an issuer's keys could not be loaded, or why the configuration
/// is invalid.
///
/// `Display` is the detailed text for the server log and the audit event; it never contains
/// the token, a signature or a secret, and strings taken from an unverified token are quoted,
/// escaped and cut short. What a client may see is [`OidcError::public_message`].
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OidcError {
    /// The token is longer than [`crate::MAX_TOKEN_BYTES`].
    #[error("token is {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a compact JWS: wrong number of parts, bad base64url, not a JSON object, bad header
    /// field types.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header or the payload repeats a JSON member name.
    #[error("malformed token: duplicate member name in the JSON {0}")]
    DuplicateKey(&'static str),
    /// `alg` is `none` (in any letter case).
    #[error("token is unsigned (alg=none)")]
    AlgNone,
    /// `alg` names an algorithm this crate does not implement.
    #[error("token algorithm {0} is not supported")]
    UnsupportedAlgorithm(String),
    /// The issuer does not accept this algorithm (HMAC for an issuer with a JWKS, an
    /// asymmetric algorithm for an issuer with a shared secret, or one left out of
    /// `algorithms`).
    #[error("token algorithm {alg} is not allowed for issuer {issuer}")]
    AlgorithmNotAllowed {
        /// The token's algorithm.
        alg: Algorithm,
        /// The issuer.
        issuer: String,
    },
    /// The header has a `crit` member: no extension is understood, so none may be critical.
    #[error("token header has a crit member; no JWS extension is understood")]
    CriticalHeader,
    /// The header has a member that makes it something other than a plain signed JWT
    /// (`enc`: a JWE; `zip`; `cty: JWT`: a nested token).
    #[error("token header member {0} is not supported")]
    UnsupportedHeader(&'static str),
    /// The signature part is empty.
    #[error("token has no signature")]
    MissingSignature,
    /// The signature does not verify with the selected key.
    #[error("token signature does not verify with key {kid} of issuer {issuer}")]
    BadSignature {
        /// The issuer.
        issuer: String,
        /// The key's id (`shared-secret` for an HMAC issuer).
        kid: String,
    },
    /// The issuer's key set has no key with the token's `kid` (after the refetch the rate
    /// limit allowed, if any).
    #[error("issuer {issuer} has no key {kid}")]
    UnknownKey {
        /// The issuer.
        issuer: String,
        /// The token's `kid` (quoted) or `(none)`.
        kid: String,
    },
    /// The key named by `kid` cannot verify the token's algorithm (another key type or curve,
    /// a different `alg`, `use` other than `sig`, too small, unparsable).
    #[error("key {kid} of issuer {issuer} cannot verify {alg}: {reason}")]
    KeyMismatch {
        /// The issuer.
        issuer: String,
        /// The key's id (quoted) or `(none)`.
        kid: String,
        /// The token's algorithm.
        alg: Algorithm,
        /// Why.
        reason: &'static str,
    },
    /// The token's `iss` is not a configured issuer.
    #[error("token issuer {0} is not configured")]
    UnknownIssuer(String),
    /// A required claim is missing.
    #[error("token has no {0} claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or an unacceptable value.
    #[error("token claim {claim} is invalid: {reason}")]
    InvalidClaim {
        /// The claim's name.
        claim: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// Neither `aud` nor the client (`azp`, `client_id`) is one the issuer is configured with.
    #[error(
        "token audience {found} matches no configured audience or client id of issuer {issuer}"
    )]
    WrongAudience {
        /// The issuer.
        issuer: String,
        /// The token's `aud` and client, quoted.
        found: String,
    },
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired at {} (now {}, leeway {leeway_secs} s)", fmt_time(*exp), fmt_time(*now))]
    Expired {
        /// `exp`, microseconds since the epoch.
        exp: i64,
        /// The time of the check.
        now: i64,
        /// The leeway in seconds.
        leeway_secs: u64,
    },
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid before {} (now {}, leeway {leeway_secs} s)", fmt_time(*nbf), fmt_time(*now))]
    NotYetValid {
        /// `nbf`, microseconds since the epoch.
        nbf: i64,
        /// The time of the check.
        now: i64,
        /// The leeway in seconds.
        leeway_secs: u64,
    },
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future at {} (now {}, leeway {leeway_secs} s)", fmt_time(*iat), fmt_time(*now))]
    IssuedInFuture {
        /// `iat`, microseconds since the epoch.
        iat: i64,
        /// The time of the check.
        now: i64,
        /// The leeway in seconds.
        leeway_secs: u64,
    },
    /// No usable keys: never fetched, the last successful fetch is older than the grace period,
    /// or the fetch failed and nothing is cached.
    #[error("keys of issuer {issuer} are unavailable: {reason}")]
    KeysUnavailable {
        /// The issuer.
        issuer: String,
        /// Why (the last fetch error, or the age of the keys).
        reason: String,
    },
    /// Fetching the discovery document or the JWKS failed.
    #[error("fetching {url} for issuer {issuer} failed: {reason}")]
    Fetch {
        /// The issuer.
        issuer: String,
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The discovery document names another issuer.
    #[error("discovery document of issuer {expected} names issuer {found}")]
    DiscoveryIssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The one in the document (quoted).
        found: String,
    },
    /// The configuration is invalid; `key` names the offending key
    /// (`oidc.issuers[0].audiences`).
    #[error("{key}: {reason}")]
    Config {
        /// The key, with its position.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl OidcError {
    /// The message a client may see: no more than a legitimate user needs to act on.
    ///
    /// - `invalid token`: anything wrong with the token's form, algorithm, key or signature, or
    ///   a malformed claim;
    /// - `token expired`;
    /// - `token not yet valid`: `nbf` or `iat` in the future;
    /// - `token not accepted here`: an issuer or an audience this gateway is not configured
    ///   for (a well-formed token meant for something else);
    /// - `identity provider unavailable`: the issuer's keys cannot be loaded;
    /// - `authentication misconfigured`: a configuration error (never reaches a client in
    ///   practice; the gateway refuses to start).
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::Expired { .. } => "token expired",
            Self::NotYetValid { .. } | Self::IssuedInFuture { .. } => "token not yet valid",
            Self::UnknownIssuer(_) | Self::WrongAudience { .. } => "token not accepted here",
            Self::KeysUnavailable { .. }
            | Self::Fetch { .. }
            | Self::DiscoveryIssuerMismatch { .. } => "identity provider unavailable",
            Self::Config { .. } => "authentication misconfigured",
            Self::TooLarge { .. }
            | Self::Malformed(_)
            | Self::DuplicateKey(_)
            | Self::AlgNone
            | Self::UnsupportedAlgorithm(_)
            | Self::AlgorithmNotAllowed { .. }
            | Self::CriticalHeader
            | Self::UnsupportedHeader(_)
            | Self::MissingSignature
            | Self::BadSignature { .. }
            | Self::UnknownKey { .. }
            | Self::KeyMismatch { .. }
            | Self::MissingClaim(_)
            | Self::InvalidClaim { .. } => "invalid token",
        }
    }

    /// Whether the refusal is about the identity provider rather than the token: trying again
    /// later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::KeysUnavailable { .. }
                | Self::Fetch { .. }
                | Self::DiscoveryIssuerMismatch { .. }
        )
    }

    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

fn fmt_time(micros: i64) -> String {
    tollgate_core::format_rfc3339(micros)
}

/// Quotes a string that came from an unverified token or a remote document for a log line:
/// escaped (no control characters reach the log) and cut to 96 characters.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 96;
    let mut out = String::with_capacity(s.len().min(MAX) + 8);
    out.push('"');
    for (n, c) in s.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}
