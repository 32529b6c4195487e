//! The verifier: several issuers, chosen by the token's `iss`.

use std::collections::HashMap;
use std::sync::Arc;

use ring::hmac;

use crate::claims::{self, VerifiedToken};
use crate::clock::{Clock, SystemClock};
use crate::config::{IssuerSettings, KeySettings, OidcConfig};
use crate::error::{OidcError, quote};
use crate::jwk::{JwkSet, Selection};
use crate::jws::{UnverifiedToken, parse_unverified};
use crate::keys::{KeyStatus, RemoteKeys, http_client};

/// Verifies bearer tokens against the configured issuers.
///
/// The unverified `iss` picks the issuer; from there on everything is checked against that
/// issuer's settings only: its algorithms, its keys, its audiences. Order of checks: form
/// and header, issuer, algorithm, signature, then claims, so a claim is only ever reported
/// for a token whose signature verified.
#[derive(Debug)]
pub struct Verifier {
    issuers: HashMap<String, Issuer>,
    order: Vec<String>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

#[derive(Debug)]
struct Issuer {
    settings: IssuerSettings,
    keys: Keys,
}

#[derive(Debug)]
enum Keys {
    Remote(Box<RemoteKeys>),
    Secret(Vec<(crate::Algorithm, hmac::Key)>),
}

impl Verifier {
    /// A verifier for `config`, reading shared secrets from the process environment, on the
    /// system clock. Nothing is fetched yet: see [`Verifier::refresh`].
    pub fn new(config: &OidcConfig) -> Result<Self, OidcError> {
        Self::with_env(
            config,
            &|name| std::env::var(name).ok(),
            Arc::new(SystemClock),
        )
    }

    /// A verifier for `config` reading secrets through `env`, on `clock`.
    pub fn with_env(
        config: &OidcConfig,
        env: &dyn Fn(&str) -> Option<String>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OidcError> {
        let settings = config.resolve(env)?;
        let http = http_client(config.http_timeout_secs)?;
        let mut issuers = HashMap::with_capacity(settings.len());
        let mut order = Vec::with_capacity(settings.len());
        for mut s in settings {
            let keys = match std::mem::replace(
                &mut s.keys,
                KeySettings::Remote {
                    discovery: None,
                    jwks: None,
                },
            ) {
                KeySettings::Remote { discovery, jwks } => Keys::Remote(Box::new(RemoteKeys::new(
                    s.issuer.clone(),
                    discovery,
                    jwks,
                    s.ttl_secs,
                    s.refresh_min_secs,
                    s.grace_secs,
                ))),
                KeySettings::Secret(keys) => Keys::Secret(keys),
            };
            order.push(s.issuer.clone());
            issuers.insert(s.issuer.clone(), Issuer { settings: s, keys });
        }
        Ok(Self {
            issuers,
            order,
            http,
            clock,
        })
    }

    /// The configured issuers, in configuration order.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    /// Whether no issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Verifies `token`, fetching the issuer's keys when needed (first use, unknown `kid`,
    /// stale set) within the refetch rate limit.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, OidcError> {
        let (parsed, issuer) = self.prepare(token)?;
        match &issuer.keys {
            Keys::Secret(keys) => self.finish_hmac(&parsed, issuer, keys),
            Keys::Remote(remote) => {
                let set = remote
                    .get(
                        &self.http,
                        self.clock.as_ref(),
                        parsed.header.kid.as_deref(),
                        parsed.header.alg,
                    )
                    .await?;
                self.finish_jwks(&parsed, issuer, &set)
            }
        }
    }

    /// Verifies `token` with the keys already cached, never fetching: an unknown `kid` is
    /// refused at once. For callers that cannot wait; keep the cache warm with
    /// [`Verifier::refresh_stale`].
    pub fn verify_cached(&self, token: &str) -> Result<VerifiedToken, OidcError> {
        let (parsed, issuer) = self.prepare(token)?;
        match &issuer.keys {
            Keys::Secret(keys) => self.finish_hmac(&parsed, issuer, keys),
            Keys::Remote(remote) => {
                let set = remote.cached(self.clock.now_micros())?;
                self.finish_jwks(&parsed, issuer, &set)
            }
        }
    }

    /// Fetches the key set of every key-set issuer now (within each one's rate limit), e.g.
    /// at start. Returns the failures; the verifier works without them and fetches again on
    /// use.
    pub async fn refresh(&self) -> Vec<OidcError> {
        self.refresh_where(false).await
    }

    /// Fetches the key sets that are past their time to live (within the rate limit): for a
    /// periodic background task, so that [`Verifier::verify_cached`] sees rotations.
    pub async fn refresh_stale(&self) -> Vec<OidcError> {
        self.refresh_where(true).await
    }

    async fn refresh_where(&self, only_if_stale: bool) -> Vec<OidcError> {
        let mut errors = Vec::new();
        for name in &self.order {
            if let Some(Issuer {
                keys: Keys::Remote(remote),
                ..
            }) = self.issuers.get(name)
                && let Some(e) = remote
                    .refresh(&self.http, self.clock.as_ref(), only_if_stale)
                    .await
            {
                errors.push(e);
            }
        }
        errors
    }

    /// The state of every issuer's keys.
    pub fn key_status(&self) -> Vec<KeyStatus> {
        self.order
            .iter()
            .filter_map(|name| self.issuers.get(name))
            .map(|issuer| match &issuer.keys {
                Keys::Remote(remote) => remote.status(),
                Keys::Secret(_) => KeyStatus {
                    issuer: issuer.settings.issuer.clone(),
                    keys: 0,
                    kids: Vec::new(),
                    fetched_at: None,
                    usable_until: None,
                    fetches: 0,
                    last_error: None,
                },
            })
            .collect()
    }

    /// Form, header, issuer, algorithm, presence of a signature.
    fn prepare<'t>(&self, token: &'t str) -> Result<(UnverifiedToken<'t>, &Issuer), OidcError> {
        let parsed = parse_unverified(token)?;
        let iss = match parsed.claims.get("iss") {
            Some(serde_json::Value::String(iss)) => iss,
            Some(_) => {
                return Err(OidcError::InvalidClaim {
                    claim: "iss",
                    reason: "not a string",
                });
            }
            None => return Err(OidcError::MissingClaim("iss")),
        };
        let issuer = self
            .issuers
            .get(iss.as_str())
            .ok_or_else(|| OidcError::UnknownIssuer(quote(iss)))?;
        let alg = parsed.header.alg;
        if !issuer.settings.algorithms.contains(&alg) {
            return Err(OidcError::AlgorithmNotAllowed {
                alg,
                issuer: issuer.settings.issuer.clone(),
            });
        }
        if parsed.signature().is_empty() {
            return Err(OidcError::MissingSignature);
        }
        Ok((parsed, issuer))
    }

    fn finish_hmac(
        &self,
        parsed: &UnverifiedToken<'_>,
        issuer: &Issuer,
        keys: &[(crate::Algorithm, hmac::Key)],
    ) -> Result<VerifiedToken, OidcError> {
        let alg = parsed.header.alg;
        let bad = || OidcError::BadSignature {
            issuer: issuer.settings.issuer.clone(),
            kid: "shared-secret".into(),
        };
        let key = keys
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, k)| k)
            .ok_or_else(bad)?;
        hmac::verify(key, parsed.signing_input(), parsed.signature()).map_err(|_| bad())?;
        claims::check(
            &issuer.settings,
            &parsed.claims,
            self.clock.now_micros(),
            alg,
            None,
        )
    }

    fn finish_jwks(
        &self,
        parsed: &UnverifiedToken<'_>,
        issuer: &Issuer,
        set: &JwkSet,
    ) -> Result<VerifiedToken, OidcError> {
        let alg = parsed.header.alg;
        let kid = parsed.header.kid.as_deref();
        let kid_text = || kid.map_or_else(|| "(none)".to_owned(), quote);
        match set.verify(kid, alg, parsed.signing_input(), parsed.signature()) {
            Ok(true) => {}
            Ok(false) => {
                return Err(OidcError::BadSignature {
                    issuer: issuer.settings.issuer.clone(),
                    kid: kid_text(),
                });
            }
            Err(Selection::NotFound) => {
                return Err(OidcError::UnknownKey {
                    issuer: issuer.settings.issuer.clone(),
                    kid: kid_text(),
                });
            }
            Err(Selection::Mismatch(reason)) => {
                return Err(OidcError::KeyMismatch {
                    issuer: issuer.settings.issuer.clone(),
                    kid: kid_text(),
                    alg,
                    reason,
                });
            }
        }
        claims::check(
            &issuer.settings,
            &parsed.claims,
            self.clock.now_micros(),
            alg,
            kid,
        )
    }
}
