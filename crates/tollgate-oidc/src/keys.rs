//! One issuer's key set: discovery, fetch, cache, refetch rate limit, grace period.
//!
//! - A fetched set is *fresh* for its time to live (`Cache-Control: max-age` within 60 s–24 h,
//!   else `jwks_ttl_secs`), and *usable* until `max(ttl, grace_secs)` after the fetch.
//! - Fetches (discovery, then the JWKS) happen when a token names a `kid` the set does not
//!   know, when nothing usable is cached, or when the set is stale. At most one fetch starts
//!   per `jwks_refresh_min_secs`, successful or not; tokens that miss while a fetch is running
//!   wait for it rather than starting their own (single flight).
//! - A stale set whose key the token names is used at once when a fetch is running or the rate
//!   limit forbids one; otherwise the task refreshes the set first.
//! - A failed fetch keeps the old set. So does a document without one usable key: an empty
//!   answer from a broken proxy must not lock everyone out before the grace period ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use reqwest::header::{ACCEPT, CACHE_CONTROL};
use serde_json::Value;
use tracing::{info, warn};
use url::Url;

use crate::clock::Clock;
use crate::config::{MAX_JWKS_TTL_SECS, MIN_JWKS_TTL_SECS, secure_url};
use crate::error::{OidcError, quote};
use crate::json;
use crate::jwk::JwkSet;
use crate::jws::Algorithm;

/// The largest discovery or JWKS document read, in bytes.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

const MICROS: i64 = 1_000_000;

/// What the cache holds.
#[derive(Debug, Default)]
struct CacheState {
    keys: Option<Arc<JwkSet>>,
    /// When the held set was fetched.
    fetched_at: i64,
    /// Its time to live, microseconds.
    ttl: i64,
    /// When the last fetch started, successful or not.
    last_attempt: Option<i64>,
    /// Finished fetches, counted (a fetch that finished while a task waited is seen by it).
    attempts: u64,
    last_error: Option<String>,
}

/// What a task sees of the cache at one moment.
struct Snapshot {
    keys: Option<Arc<JwkSet>>,
    usable: bool,
    fresh: bool,
    may_fetch: bool,
    attempts: u64,
}

/// The state of an issuer's keys, for health checks and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// The issuer.
    pub issuer: String,
    /// Usable keys held (0 for a shared-secret issuer).
    pub keys: usize,
    /// Their ids.
    pub kids: Vec<String>,
    /// When they were fetched, microseconds since the epoch.
    pub fetched_at: Option<i64>,
    /// Until when they verify tokens if no fetch succeeds.
    pub usable_until: Option<i64>,
    /// Fetches attempted so far.
    pub fetches: u64,
    /// The last fetch's error, when it failed.
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct RemoteKeys {
    issuer: String,
    discovery: Option<Url>,
    jwks: Option<Url>,
    default_ttl: i64,
    refresh_min: i64,
    grace: i64,
    state: Mutex<CacheState>,
    fetch_lock: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

impl RemoteKeys {
    pub(crate) fn new(
        issuer: String,
        discovery: Option<Url>,
        jwks: Option<Url>,
        ttl_secs: u64,
        refresh_min_secs: u64,
        grace_secs: u64,
    ) -> Self {
        let micros = |secs: u64| i64::try_from(secs).unwrap_or(i64::MAX / MICROS) * MICROS;
        Self {
            issuer,
            discovery,
            jwks,
            default_ttl: micros(ttl_secs),
            refresh_min: micros(refresh_min_secs),
            grace: micros(grace_secs),
            state: Mutex::new(CacheState::default()),
            fetch_lock: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self, now: i64) -> Snapshot {
        let st = self.lock();
        let held = st.keys.is_some();
        let usable_until = st.fetched_at.saturating_add(st.ttl.max(self.grace));
        Snapshot {
            keys: st.keys.clone(),
            usable: held && now < usable_until,
            fresh: held && now < st.fetched_at.saturating_add(st.ttl),
            may_fetch: st
                .last_attempt
                .is_none_or(|t| now >= t.saturating_add(self.refresh_min)),
            attempts: st.attempts,
        }
    }

    fn unavailable(&self, snap: &Snapshot) -> OidcError {
        let st = self.lock();
        let reason = if snap.keys.is_some() {
            let age = st.fetched_at;
            format!(
                "the keys fetched at {} are past the grace period{}",
                tollgate_core::format_rfc3339(age),
                st.last_error
                    .as_deref()
                    .map(|e| format!("; last fetch: {e}"))
                    .unwrap_or_default()
            )
        } else {
            st.last_error
                .clone()
                .unwrap_or_else(|| "no key set fetched yet".into())
        };
        OidcError::KeysUnavailable {
            issuer: self.issuer.clone(),
            reason,
        }
    }

    /// The usable key set, from the cache only.
    pub(crate) fn cached(&self, now: i64) -> Result<Arc<JwkSet>, OidcError> {
        let snap = self.snapshot(now);
        match &snap.keys {
            Some(set) if snap.usable => Ok(set.clone()),
            _ => Err(self.unavailable(&snap)),
        }
    }

    /// The key set to verify a token with `kid` and `alg`, fetching when needed and allowed.
    pub(crate) async fn get(
        &self,
        http: &reqwest::Client,
        clock: &dyn Clock,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<JwkSet>, OidcError> {
        let snap = self.snapshot(clock.now_micros());
        if let Some(set) = &snap.keys
            && snap.usable
            && set.knows(kid, alg)
        {
            if snap.fresh || !snap.may_fetch {
                return Ok(set.clone());
            }
            // Stale: refresh unless someone already is.
            let Ok(_guard) = self.fetch_lock.try_lock() else {
                return Ok(set.clone());
            };
            let now = clock.now_micros();
            let again = self.snapshot(now);
            if again.attempts == snap.attempts && again.may_fetch {
                // A failure is recorded and logged; the stale set still serves within grace.
                let _ = self.fetch(http, now).await;
            }
            let after = self.snapshot(clock.now_micros());
            return match after.keys {
                Some(set) if after.usable => Ok(set),
                _ => Err(self.unavailable(&after)),
            };
        }
        // The kid is unknown or nothing usable is cached: wait for a running fetch, or run one
        // if none ran since this task looked and the rate limit allows.
        let _guard = self.fetch_lock.lock().await;
        let now = clock.now_micros();
        let again = self.snapshot(now);
        if again.attempts == snap.attempts && again.may_fetch {
            // A failure is recorded and reported through `unavailable` below.
            let _ = self.fetch(http, now).await;
        }
        let after = self.snapshot(clock.now_micros());
        match after.keys {
            Some(set) if after.usable => Ok(set),
            _ => Err(self.unavailable(&after)),
        }
    }

    /// Fetches now if the rate limit allows (waiting for a running fetch first). Returns the
    /// fetch's error, if one ran and failed.
    pub(crate) async fn refresh(
        &self,
        http: &reqwest::Client,
        clock: &dyn Clock,
        only_if_stale: bool,
    ) -> Option<OidcError> {
        let _guard = self.fetch_lock.lock().await;
        let now = clock.now_micros();
        let snap = self.snapshot(now);
        if !snap.may_fetch || (only_if_stale && snap.fresh) {
            return None;
        }
        self.fetch(http, now).await.err()
    }

    pub(crate) fn status(&self) -> KeyStatus {
        let st = self.lock();
        KeyStatus {
            issuer: self.issuer.clone(),
            keys: st.keys.as_ref().map_or(0, |k| k.usable_len()),
            kids: st
                .keys
                .as_ref()
                .map(|k| k.kids().map(str::to_owned).collect())
                .unwrap_or_default(),
            fetched_at: st.keys.as_ref().map(|_| st.fetched_at),
            usable_until: st
                .keys
                .as_ref()
                .map(|_| st.fetched_at.saturating_add(st.ttl.max(self.grace))),
            fetches: self.fetches.load(Ordering::Relaxed),
            last_error: st.last_error.clone(),
        }
    }

    /// One fetch; the caller holds `fetch_lock`. The outcome is recorded in the cache.
    async fn fetch(&self, http: &reqwest::Client, now: i64) -> Result<(), OidcError> {
        self.lock().last_attempt = Some(now);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = self.download(http).await;
        let mut st = self.lock();
        st.attempts += 1;
        match result {
            Ok((set, ttl)) => {
                info!(
                    issuer = %self.issuer,
                    keys = set.usable_len(),
                    ttl_secs = ttl / MICROS,
                    "OIDC key set fetched"
                );
                st.keys = Some(Arc::new(set));
                st.fetched_at = now;
                st.ttl = ttl;
                st.last_error = None;
                Ok(())
            }
            Err(e) => {
                warn!(issuer = %self.issuer, error = %e, "OIDC key set fetch failed");
                st.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    async fn download(&self, http: &reqwest::Client) -> Result<(JwkSet, i64), OidcError> {
        let jwks_url = match (&self.jwks, &self.discovery) {
            (Some(url), _) => url.clone(),
            (None, Some(discovery)) => self.discover(http, discovery).await?,
            (None, None) => {
                return Err(OidcError::KeysUnavailable {
                    issuer: self.issuer.clone(),
                    reason: "no discovery or JWKS URL".into(),
                });
            }
        };
        let (body, cache_control) = get(http, &jwks_url)
            .await
            .map_err(|reason| self.fetch_error(&jwks_url, reason))?;
        let set = JwkSet::from_json(&body)
            .map_err(|reason| self.fetch_error(&jwks_url, format!("bad JWKS: {reason}")))?;
        if set.usable_len() == 0 {
            return Err(self.fetch_error(&jwks_url, "the JWKS has no usable signing key".into()));
        }
        let ttl = ttl_micros(cache_control.as_deref(), self.default_ttl);
        Ok((set, ttl))
    }

    async fn discover(&self, http: &reqwest::Client, url: &Url) -> Result<Url, OidcError> {
        let (body, _) = get(http, url)
            .await
            .map_err(|reason| self.fetch_error(url, reason))?;
        let doc = json::parse_object(&body).map_err(|_| {
            self.fetch_error(url, "the discovery document is not a JSON object".into())
        })?;
        match doc.get("issuer") {
            Some(Value::String(found)) if *found == self.issuer => {}
            Some(Value::String(found)) => {
                return Err(OidcError::DiscoveryIssuerMismatch {
                    expected: self.issuer.clone(),
                    found: quote(found),
                });
            }
            _ => {
                return Err(self.fetch_error(url, "the discovery document has no issuer".into()));
            }
        }
        let Some(Value::String(jwks_uri)) = doc.get("jwks_uri") else {
            return Err(self.fetch_error(url, "the discovery document has no jwks_uri".into()));
        };
        let jwks = Url::parse(jwks_uri).map_err(|_| {
            self.fetch_error(url, format!("jwks_uri {} is not a URL", quote(jwks_uri)))
        })?;
        if !secure_url(&jwks) {
            return Err(self.fetch_error(
                url,
                format!(
                    "jwks_uri {} is not https (http only on loopback)",
                    quote(jwks_uri)
                ),
            ));
        }
        Ok(jwks)
    }

    fn fetch_error(&self, url: &Url, reason: String) -> OidcError {
        OidcError::Fetch {
            issuer: self.issuer.clone(),
            url: url.to_string(),
            reason,
        }
    }
}

/// GET with a size cap; only 200 is success.
async fn get(http: &reqwest::Client, url: &Url) -> Result<(Vec<u8>, Option<String>), String> {
    let mut resp = http
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(describe)?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("HTTP status {}", resp.status().as_u16()));
    }
    let cache_control = resp
        .headers()
        .get(CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if resp
        .content_length()
        .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
    {
        return Err("the document is larger than 512 KiB".into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err("the document is larger than 512 KiB".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, cache_control))
}

fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The time to live from `Cache-Control`: `max-age` within the bounds, `no-cache`/`no-store`
/// as the lower bound, the default otherwise.
fn ttl_micros(cache_control: Option<&str>, default: i64) -> i64 {
    let min = MIN_JWKS_TTL_SECS as i64 * MICROS;
    let max = MAX_JWKS_TTL_SECS as i64 * MICROS;
    let Some(value) = cache_control else {
        return default;
    };
    let mut ttl = None;
    for directive in value.split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-cache" || directive == "no-store" {
            return min;
        }
        if let Some(secs) = directive.strip_prefix("max-age=")
            && let Ok(secs) = secs.trim_matches('"').parse::<u64>()
        {
            let secs = i64::try_from(secs.min(MAX_JWKS_TTL_SECS)).unwrap_or(0);
            ttl = Some((secs * MICROS).clamp(min, max));
        }
    }
    ttl.unwrap_or(default)
}

/// The HTTP client for discovery and key sets: a timeout per request, redirects only to
/// `https` (or loopback `http`), at most three.
pub(crate) fn http_client(timeout_secs: u64) -> Result<reqwest::Client, OidcError> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 3 {
            attempt.error("more than 3 redirects")
        } else if secure_url(attempt.url()) {
            attempt.follow()
        } else {
            attempt.error("redirect to a URL that is not https")
        }
    });
    reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout_secs))
        .connect_timeout(Duration::from_secs(timeout_secs))
        .redirect(policy)
        .user_agent(concat!("tollgate-oidc/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| OidcError::config("oidc", format!("cannot build the HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control() {
        let d = 600 * MICROS;
        assert_eq!(ttl_micros(None, d), d);
        assert_eq!(ttl_micros(Some("public"), d), d);
        assert_eq!(ttl_micros(Some("public, max-age=3600"), d), 3600 * MICROS);
        assert_eq!(ttl_micros(Some("Max-Age=5"), d), 60 * MICROS);
        assert_eq!(
            ttl_micros(Some("max-age=99999999999999"), d),
            86_400 * MICROS
        );
        assert_eq!(ttl_micros(Some("max-age=3600, no-cache"), d), 60 * MICROS);
        assert_eq!(ttl_micros(Some("max-age=x"), d), d);
    }
}
