//! Web login for the API (`[oidc.web]`): the authorization code flow with PKCE (S256) at one of
//! the configured issuers, then a gateway session held server-side and named by a cookie.
//!
//! - `GET /api/auth/login` keeps the login's `state`, `nonce` and PKCE verifier in memory
//!   ([`PendingLogins`]: at most [`MAX_PENDING`], each for [`PENDING_TTL_SECS`]) and binds the
//!   `state` to the browser with a short cookie (`Path=/api/auth`), so a callback URL made by
//!   someone else's login cannot log this browser in.
//! - `GET /api/auth/callback` takes the `state` once, redeems the code (with the client secret
//!   when configured, and the verifier), verifies the ID token with the gateway's verifier (its
//!   `nonce` must be the login's, its `aud` the client), and stores a session: a random 256-bit
//!   id in the cookie, its SHA-256 in the store.
//! - A request authenticated by the cookie that changes state (anything but GET, HEAD and
//!   OPTIONS) must carry `X-Tollgate-CSRF` equal to the session's [`csrf_token`], which
//!   `GET /api/auth/me` returns. A bearer request is not concerned.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use tollgate_core::Secret;
use tollgate_oidc::{OidcConfig, WebLoginConfig};
use url::Url;

/// Logins started and not yet finished, at most.
pub const MAX_PENDING: usize = 10_000;
/// How long a started login may take, seconds.
pub const PENDING_TTL_SECS: i64 = 600;
/// The longest default session (the ID token's life, capped), seconds.
pub const DEFAULT_MAX_SESSION_SECS: i64 = 8 * 3600;
/// The longest configurable session, seconds.
const MAX_SESSION_TTL_SECS: u64 = 7 * 86_400;
/// The header a cookie-authenticated request that changes state must carry.
pub const CSRF_HEADER: &str = "x-tollgate-csrf";
/// The callback's path under the API.
pub const CALLBACK_PATH: &str = "/api/auth/callback";
/// How long discovered endpoints are used before discovery is read again, seconds.
const ENDPOINTS_TTL_SECS: i64 = 600;

/// A validated `[oidc.web]`.
#[derive(Debug, Clone)]
pub struct WebLoginSettings {
    /// The issuer (one of `[[oidc.issuers]]`).
    pub issuer: String,
    /// Its discovery document.
    pub discovery_url: String,
    /// The gateway's client.
    pub client_id: String,
    /// The client's secret (confidential client), if any.
    pub client_secret: Option<Secret>,
    /// The callback URL; `None`: derived from the API listener at start.
    pub redirect_url: Option<String>,
    /// Space-separated scopes.
    pub scopes: String,
    /// Session length, when configured.
    pub session_ttl_secs: Option<u64>,
    /// `Secure` cookies, `__Host-` session cookie.
    pub cookie_secure: bool,
    /// Timeout of one request to the provider.
    pub http_timeout_secs: u64,
}

impl WebLoginSettings {
    /// Validates `[oidc.web]` against the issuers and the API listener. Errors are
    /// `(key, message)`.
    pub fn from_config(
        web: &WebLoginConfig,
        oidc: &OidcConfig,
        api_addr: SocketAddr,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, (String, String)> {
        let err = |key: &str, m: String| (format!("oidc.web.{key}"), m);
        let issuer = oidc
            .issuers
            .iter()
            .find(|i| i.issuer == web.issuer)
            .ok_or_else(|| {
                err(
                    "issuer",
                    format!(
                        "{:?} is not one of the [[oidc.issuers]] ({})",
                        web.issuer,
                        oidc.issuers
                            .iter()
                            .map(|i| format!("{:?}", i.issuer))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
        if issuer.hs_secret_env.is_some() {
            return Err(err(
                "issuer",
                "a shared-secret issuer has no login endpoints; pick an issuer with discovery"
                    .into(),
            ));
        }
        let discovery_url = match &issuer.discovery_url {
            Some(u) => u.clone(),
            None => format!(
                "{}/.well-known/openid-configuration",
                issuer.issuer.trim_end_matches('/')
            ),
        };
        if web.client_id.is_empty()
            || web.client_id.len() > 256
            || web.client_id.chars().any(char::is_control)
        {
            return Err(err(
                "client_id",
                "expected 1 to 256 characters without control characters".into(),
            ));
        }
        if !issuer.client_ids.contains(&web.client_id) && !issuer.audiences.contains(&web.client_id)
        {
            return Err(err(
                "client_id",
                format!(
                    "{:?} must be listed in client_ids (or audiences) of the issuer {:?}, so that its ID tokens verify",
                    web.client_id, issuer.issuer
                ),
            ));
        }
        let client_secret = match &web.client_secret_env {
            None => None,
            Some(var) => match env(var) {
                Some(v) if !v.is_empty() => Some(Secret::new(v)),
                _ => {
                    return Err(err(
                        "client_secret_env",
                        format!("environment variable {var} is not set"),
                    ));
                }
            },
        };
        let cookie_secure = web.cookie_secure.unwrap_or(true);
        let redirect_url = match &web.redirect_url {
            None => None,
            Some(text) => {
                let url = Url::parse(text)
                    .map_err(|e| err("redirect_url", format!("{text:?} is not a URL: {e}")))?;
                let loopback = is_loopback(&url);
                if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                    return Err(err(
                        "redirect_url",
                        format!("{text:?} must be https (http only on loopback)"),
                    ));
                }
                if url.path() != CALLBACK_PATH || url.query().is_some() || url.fragment().is_some()
                {
                    return Err(err(
                        "redirect_url",
                        format!(
                            "{text:?} must be the gateway's {CALLBACK_PATH}, as the browser reaches it"
                        ),
                    ));
                }
                if !cookie_secure && !loopback {
                    return Err(err(
                        "cookie_secure",
                        format!(
                            "false only when the browser reaches the gateway on loopback; the redirect_url {text:?} is not"
                        ),
                    ));
                }
                Some(url.to_string())
            }
        };
        if !cookie_secure && !api_addr.ip().is_loopback() {
            return Err(err(
                "cookie_secure",
                format!(
                    "false only when the API listens on loopback (development); {api_addr} is not"
                ),
            ));
        }
        let scopes = match &web.scopes {
            None => vec![
                "openid".into(),
                "profile".into(),
                "email".into(),
                "groups".into(),
            ],
            Some(list) => {
                if let Some(bad) = list.iter().find(|s| {
                    s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control())
                }) {
                    return Err(err(
                        "scopes",
                        format!("{bad:?}: a scope is one word without spaces"),
                    ));
                }
                let mut v = list.clone();
                if !v.iter().any(|s| s == "openid") {
                    v.insert(0, "openid".into());
                }
                v
            }
        };
        if let Some(t) = web.session_ttl_secs
            && !(60..=MAX_SESSION_TTL_SECS).contains(&t)
        {
            return Err(err(
                "session_ttl_secs",
                format!("expected 60 to {MAX_SESSION_TTL_SECS} seconds, got {t}"),
            ));
        }
        Ok(Self {
            issuer: issuer.issuer.clone(),
            discovery_url,
            client_id: web.client_id.clone(),
            client_secret,
            redirect_url,
            scopes: scopes.join(" "),
            session_ttl_secs: web.session_ttl_secs,
            cookie_secure,
            http_timeout_secs: oidc.http_timeout_secs,
        })
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `count` random bytes, base64url without padding.
pub fn random_b64(count: usize) -> Option<String> {
    let mut raw = vec![0u8; count];
    SystemRandom::new().fill(&mut raw).ok()?;
    Some(URL_SAFE_NO_PAD.encode(raw))
}

/// The S256 code challenge of a PKCE verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

/// How a session id is stored: hex SHA-256.
pub fn session_hash(id: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, id.as_bytes()))
}

/// The session's CSRF token: derived from its (secret) id, so it needs no storage and cannot
/// be made without the cookie.
pub fn csrf_token(id: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"tollgate-csrf\0");
    ctx.update(id.as_bytes());
    URL_SAFE_NO_PAD.encode(ctx.finish())
}

/// Whether `given` is the session's CSRF token (compared as digests, so timing says nothing).
pub fn csrf_matches(id: &str, given: &str) -> bool {
    let d = |s: &str| {
        digest::digest(&digest::SHA256, s.as_bytes())
            .as_ref()
            .to_vec()
    };
    d(&csrf_token(id)) == d(given)
}

/// Where a login may send the browser at its end: a path on this origin (`/…`, not `//…`, no
/// backslash or control characters, at most 2048 bytes).
pub fn valid_return_to(target: &str) -> bool {
    target.starts_with('/')
        && !target.starts_with("//")
        && target.len() <= 2048
        && !target.chars().any(|c| c == '\\' || c.is_control())
}

/// The cookies of the web login.
#[derive(Debug, Clone, Copy)]
pub struct Cookies {
    /// `Secure`, and the `__Host-` / `__Secure-` prefixes.
    pub secure: bool,
}

impl Cookies {
    /// The session cookie's name.
    pub fn session_name(self) -> &'static str {
        if self.secure {
            "__Host-tollgate_session"
        } else {
            "tollgate_session"
        }
    }

    /// The login-state cookie's name.
    pub fn login_name(self) -> &'static str {
        if self.secure {
            "__Secure-tollgate_login"
        } else {
            "tollgate_login"
        }
    }

    fn attributes(self, path: &str, max_age: i64) -> String {
        format!(
            "Max-Age={}; Path={path}; HttpOnly; SameSite=Lax{}",
            max_age.max(0),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// `Set-Cookie` of a session for `max_age` seconds.
    pub fn session(self, id: &str, max_age: i64) -> String {
        format!(
            "{}={id}; {}",
            self.session_name(),
            self.attributes("/", max_age)
        )
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_session(self) -> String {
        format!("{}=; {}", self.session_name(), self.attributes("/", 0))
    }

    /// `Set-Cookie` binding a login's state to the browser.
    pub fn login(self, state: &str) -> String {
        format!(
            "{}={state}; {}",
            self.login_name(),
            self.attributes("/api/auth", PENDING_TTL_SECS)
        )
    }

    /// `Set-Cookie` that removes the login cookie.
    pub fn clear_login(self) -> String {
        format!(
            "{}=; {}",
            self.login_name(),
            self.attributes("/api/auth", 0)
        )
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (the first one).
pub fn read_cookie<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A login started and not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The PKCE verifier.
    pub verifier: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// Where to go at the end.
    pub return_to: String,
    /// When it started, µs.
    pub started_at: i64,
}

/// Started logins by `state`, in memory: bounded in number and in time, each taken once.
#[derive(Debug)]
pub struct PendingLogins {
    map: Mutex<HashMap<String, Pending>>,
    max: usize,
    ttl_micros: i64,
}

impl PendingLogins {
    /// At most `max` logins, each for `ttl_secs`.
    pub fn new(max: usize, ttl_secs: i64) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max,
            ttl_micros: ttl_secs.saturating_mul(1_000_000),
        }
    }

    /// Keeps a login; refused (false) when `max` unexpired logins are pending.
    pub fn insert(&self, state: String, pending: Pending, now: i64) -> bool {
        let Ok(mut map) = self.map.lock() else {
            return false;
        };
        if map.len() >= self.max {
            let ttl = self.ttl_micros;
            map.retain(|_, p| now.saturating_sub(p.started_at) < ttl);
        }
        if map.len() >= self.max {
            return false;
        }
        map.insert(state, pending);
        true
    }

    /// Takes the login of `state` (once), if it has not expired.
    pub fn take(&self, state: &str, now: i64) -> Option<Pending> {
        let mut map = self.map.lock().ok()?;
        let p = map.remove(state)?;
        (now.saturating_sub(p.started_at) < self.ttl_micros).then_some(p)
    }

    /// How many are kept (expired ones included until the next purge).
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The provider's endpoints, from discovery.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Where the browser goes.
    pub authorization: String,
    /// Where the code is redeemed.
    pub token: String,
}

/// Why a login failed: what the browser is told, and the detail for the record.
#[derive(Debug)]
pub struct LoginFailure {
    /// The provider could not be reached (503) rather than a bad login (400).
    pub unavailable: bool,
    /// Told to the client.
    pub message: String,
    /// For the log and the record.
    pub detail: String,
}

impl LoginFailure {
    /// A refused login.
    pub fn bad(message: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            unavailable: false,
            message: message.into(),
            detail: detail.into(),
        }
    }

    fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            unavailable: true,
            message: "login failed: the identity provider is unavailable; try again later".into(),
            detail: detail.into(),
        }
    }
}

/// The web login: settings, the started logins, the provider's endpoints.
pub struct WebLogin {
    /// Validated settings.
    pub settings: WebLoginSettings,
    /// The callback URL in use.
    pub redirect_url: String,
    /// Cookie names and attributes.
    pub cookies: Cookies,
    /// Started logins.
    pub pending: PendingLogins,
    http: reqwest::Client,
    endpoints: tokio::sync::Mutex<Option<(Endpoints, i64)>>,
}

impl WebLogin {
    /// The web login of `settings`, its callback derived from `api_addr` when not configured.
    pub fn new(settings: WebLoginSettings, api_addr: SocketAddr) -> Result<Self, String> {
        let redirect_url = settings
            .redirect_url
            .clone()
            .unwrap_or_else(|| format!("http://{api_addr}{CALLBACK_PATH}"));
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(settings.http_timeout_secs))
            .build()
            .map_err(|e| format!("web login HTTP client: {e}"))?;
        Ok(Self {
            cookies: Cookies {
                secure: settings.cookie_secure,
            },
            settings,
            redirect_url,
            pending: PendingLogins::new(MAX_PENDING, PENDING_TTL_SECS),
            http,
            endpoints: tokio::sync::Mutex::new(None),
        })
    }

    /// The provider's endpoints, read by discovery (the document must name the issuer) and
    /// kept for a while.
    pub async fn endpoints(&self, now: i64) -> Result<Endpoints, LoginFailure> {
        let mut cached = self.endpoints.lock().await;
        if let Some((e, at)) = cached.as_ref()
            && now.saturating_sub(*at) < ENDPOINTS_TTL_SECS * 1_000_000
        {
            return Ok(e.clone());
        }
        let url = &self.settings.discovery_url;
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| LoginFailure::unavailable(format!("discovery {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(LoginFailure::unavailable(format!(
                "discovery {url}: HTTP {}",
                resp.status()
            )));
        }
        let doc: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| LoginFailure::unavailable(format!("discovery {url}: {e}")))?;
        let s = |k: &str| doc[k].as_str().map(str::to_string);
        if s("issuer").as_deref() != Some(self.settings.issuer.as_str()) {
            return Err(LoginFailure::unavailable(format!(
                "discovery {url} names the issuer {:?}, not {:?}",
                s("issuer"),
                self.settings.issuer
            )));
        }
        let endpoint = |k: &str| {
            let v = s(k).ok_or_else(|| {
                LoginFailure::unavailable(format!("discovery {url} names no {k}"))
            })?;
            match Url::parse(&v) {
                Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)) => {
                    Ok(v)
                }
                _ => Err(LoginFailure::unavailable(format!(
                    "discovery {url}: {k} {v:?} must be https (http only on loopback)"
                ))),
            }
        };
        let e = Endpoints {
            authorization: endpoint("authorization_endpoint")?,
            token: endpoint("token_endpoint")?,
        };
        *cached = Some((e.clone(), now));
        Ok(e)
    }

    /// Starts a login: the authorization URL to send the browser to, and the `state` (for the
    /// binding cookie).
    pub async fn start(
        &self,
        return_to: Option<&str>,
        now: i64,
    ) -> Result<(String, String), LoginFailure> {
        let return_to = match return_to {
            None => "/".to_string(),
            Some(t) if valid_return_to(t) => t.to_string(),
            Some(_) => {
                return Err(LoginFailure::bad(
                    "return_to must be a path on this gateway (starting with a single /)",
                    "login refused: return_to is not a same-origin path",
                ));
            }
        };
        let endpoints = self.endpoints(now).await?;
        let random =
            || random_b64(32).ok_or_else(|| LoginFailure::unavailable("no randomness available"));
        let (state, nonce, verifier) = (random()?, random()?, random()?);
        let mut url = Url::parse(&endpoints.authorization)
            .map_err(|e| LoginFailure::unavailable(format!("authorization endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", &self.redirect_url)
            .append_pair("scope", &self.settings.scopes)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &pkce_challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        let pending = Pending {
            verifier,
            nonce,
            return_to,
            started_at: now,
        };
        if !self.pending.insert(state.clone(), pending, now) {
            return Err(LoginFailure::unavailable(format!(
                "{MAX_PENDING} logins are in progress; login refused"
            )));
        }
        Ok((url.to_string(), state))
    }

    /// Redeems a code; returns the ID token.
    pub async fn redeem(
        &self,
        code: &str,
        pending: &Pending,
        now: i64,
    ) -> Result<String, LoginFailure> {
        let endpoints = self.endpoints(now).await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_url.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        let mut req = self
            .http
            .post(&endpoints.token)
            .header(axum::http::header::ACCEPT, "application/json");
        match &self.settings.client_secret {
            Some(secret) => {
                req = req.basic_auth(&self.settings.client_id, Some(secret.expose()));
            }
            None => form.push(("client_id", self.settings.client_id.as_str())),
        }
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| LoginFailure::unavailable(format!("token endpoint: {e}")))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let error = body["error"].as_str().unwrap_or("no error code");
            if status.is_server_error() {
                return Err(LoginFailure::unavailable(format!(
                    "token endpoint: HTTP {status} {error}"
                )));
            }
            return Err(LoginFailure::bad(
                "login failed: the identity provider did not accept the code; start again",
                format!(
                    "code exchange refused: HTTP {status} {error}: {}",
                    body["error_description"].as_str().unwrap_or("")
                ),
            ));
        }
        body["id_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                LoginFailure::bad(
                    "login failed: the identity provider returned no ID token",
                    "code exchange answered without id_token (is the openid scope allowed?)",
                )
            })
    }

    /// Checks what the verifier does not: the ID token's `nonce` is the login's, its `aud`
    /// names this client, and `azp`, when present, is this client.
    pub fn check_id_token(&self, id_token: &str, pending: &Pending) -> Result<(), LoginFailure> {
        let bad = |detail: String| {
            LoginFailure::bad("login failed: the ID token is not this login's", detail)
        };
        let parsed = tollgate_oidc::parse_unverified(id_token)
            .map_err(|e| bad(format!("ID token unreadable: {e}")))?;
        let claims = &parsed.claims;
        if claims.get("nonce").and_then(|v| v.as_str()) != Some(pending.nonce.as_str()) {
            return Err(bad("the ID token's nonce is not the login's".into()));
        }
        let me = self.settings.client_id.as_str();
        let aud_ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => a == me,
            Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(me)),
            _ => false,
        };
        if !aud_ok {
            return Err(bad(format!("the ID token's aud does not name {me}")));
        }
        if let Some(azp) = claims.get("azp")
            && azp.as_str() != Some(me)
        {
            return Err(bad(format!("the ID token's azp is not {me}")));
        }
        Ok(())
    }

    /// When a session of a token expiring at `token_exp` (µs) ends: `session_ttl_secs` from
    /// now when configured, else the token's expiry, at most [`DEFAULT_MAX_SESSION_SECS`].
    pub fn session_expiry(&self, token_exp: Option<i64>, now: i64) -> i64 {
        match self.settings.session_ttl_secs {
            Some(t) => now.saturating_add(i64::try_from(t).unwrap_or(0).saturating_mul(1_000_000)),
            None => {
                let cap = now.saturating_add(DEFAULT_MAX_SESSION_SECS * 1_000_000);
                token_exp.map_or(cap, |exp| exp.min(cap))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(at: i64) -> Pending {
        Pending {
            verifier: "v".into(),
            nonce: "n".into(),
            return_to: "/".into(),
            started_at: at,
        }
    }

    #[test]
    fn pending_logins_are_bounded_expire_and_are_taken_once() {
        let p = PendingLogins::new(2, 10);
        let s = 1_000_000;
        assert!(p.insert("a".into(), pending(0), 0));
        assert!(p.insert("b".into(), pending(5 * s), 5 * s));
        // Full, and nothing expired yet: refused.
        assert!(!p.insert("c".into(), pending(6 * s), 6 * s));
        assert_eq!(p.len(), 2);
        // Once "a" expired, a new login takes its place.
        assert!(p.insert("c".into(), pending(11 * s), 11 * s));
        assert_eq!(p.len(), 2);
        assert!(p.take("a", 11 * s).is_none());
        // Taken once.
        assert_eq!(p.take("b", 12 * s), Some(pending(5 * s)));
        assert!(p.take("b", 12 * s).is_none());
        // Taken too late.
        assert!(p.take("c", 21 * s).is_none());
        assert!(p.is_empty());
        assert!(p.take("forged", 0).is_none());
    }

    #[test]
    fn cookies_carry_the_attributes() {
        let secure = Cookies { secure: true };
        assert_eq!(
            secure.session("abc", 3600),
            "__Host-tollgate_session=abc; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        assert_eq!(
            secure.clear_session(),
            "__Host-tollgate_session=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        assert_eq!(
            secure.login("st"),
            "__Secure-tollgate_login=st; Max-Age=600; Path=/api/auth; HttpOnly; SameSite=Lax; Secure"
        );
        let plain = Cookies { secure: false };
        assert_eq!(
            plain.session("abc", -5),
            "tollgate_session=abc; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            plain.clear_login(),
            "tollgate_login=; Max-Age=0; Path=/api/auth; HttpOnly; SameSite=Lax"
        );

        let mut headers = axum::http::HeaderMap::new();
        headers.append(
            axum::http::header::COOKIE,
            "a=1; tollgate_session=xyz".parse().unwrap(),
        );
        headers.append(
            axum::http::header::COOKIE,
            "__Host-tollgate_session=h".parse().unwrap(),
        );
        assert_eq!(read_cookie(&headers, "tollgate_session"), Some("xyz"));
        assert_eq!(read_cookie(&headers, "__Host-tollgate_session"), Some("h"));
        assert_eq!(read_cookie(&headers, "a"), Some("1"));
        assert_eq!(read_cookie(&headers, "tollgate"), None);
    }

    #[test]
    fn csrf_tokens_and_return_paths() {
        let t = csrf_token("session-id");
        assert!(csrf_matches("session-id", &t));
        assert!(!csrf_matches("other-id", &t));
        assert!(!csrf_matches("session-id", ""));
        assert_ne!(t, session_hash("session-id"));
        assert_eq!(session_hash("x").len(), 64);
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        for ok in ["/", "/app?x=1#y", "/a/b"] {
            assert!(valid_return_to(ok), "{ok}");
        }
        for bad in [
            "",
            "//evil.example",
            "https://evil.example/",
            "/\\evil",
            "x",
            "/a\nb",
        ] {
            assert!(!valid_return_to(bad), "{bad}");
        }
    }

    fn web(extra: impl FnOnce(&mut WebLoginConfig)) -> WebLoginConfig {
        let mut w = WebLoginConfig {
            issuer: "https://idp.example".into(),
            client_id: "tollgate-web".into(),
            client_secret_env: None,
            redirect_url: None,
            scopes: None,
            session_ttl_secs: None,
            cookie_secure: None,
        };
        extra(&mut w);
        w
    }

    #[test]
    fn settings_are_validated_naming_the_key() {
        let mut issuer = tollgate_oidc::IssuerConfig::new("https://idp.example");
        issuer.audiences = vec!["tollgate".into()];
        issuer.client_ids = vec!["tollgate-web".into()];
        let oidc = OidcConfig {
            issuers: vec![issuer],
            ..OidcConfig::default()
        };
        let lo: SocketAddr = "127.0.0.1:8009".parse().unwrap();
        let env = |n: &str| (n == "WEB_SECRET").then(|| "s3cret".to_string());
        let check = |w: WebLoginConfig, addr: SocketAddr| {
            WebLoginSettings::from_config(&w, &oidc, addr, &env)
        };
        let s = check(web(|_| {}), lo).unwrap();
        assert!(s.cookie_secure);
        assert_eq!(s.scopes, "openid profile email groups");
        assert_eq!(
            s.discovery_url,
            "https://idp.example/.well-known/openid-configuration"
        );
        let login = WebLogin::new(s, lo).unwrap();
        assert_eq!(
            login.redirect_url,
            "http://127.0.0.1:8009/api/auth/callback"
        );
        let s = check(
            web(|w| {
                w.client_secret_env = Some("WEB_SECRET".into());
                w.scopes = Some(vec!["groups".into()]);
                w.redirect_url = Some("https://gateway.example/api/auth/callback".into());
            }),
            lo,
        )
        .unwrap();
        assert_eq!(s.client_secret.unwrap().expose(), "s3cret");
        assert_eq!(s.scopes, "openid groups");

        let key = |w: WebLoginConfig, addr: SocketAddr| check(w, addr).unwrap_err().0;
        assert_eq!(
            key(web(|w| w.issuer = "https://other".into()), lo),
            "oidc.web.issuer"
        );
        assert_eq!(
            key(web(|w| w.client_id = "unlisted".into()), lo),
            "oidc.web.client_id"
        );
        assert_eq!(
            key(web(|w| w.client_secret_env = Some("UNSET_VAR".into())), lo),
            "oidc.web.client_secret_env"
        );
        assert_eq!(
            key(
                web(|w| w.redirect_url = Some("http://gateway.example/api/auth/callback".into())),
                lo
            ),
            "oidc.web.redirect_url"
        );
        assert_eq!(
            key(
                web(|w| w.redirect_url = Some("https://gateway.example/elsewhere".into())),
                lo
            ),
            "oidc.web.redirect_url"
        );
        assert_eq!(
            key(web(|w| w.session_ttl_secs = Some(5)), lo),
            "oidc.web.session_ttl_secs"
        );
        assert_eq!(
            key(web(|w| w.scopes = Some(vec!["a b".into()])), lo),
            "oidc.web.scopes"
        );
        // Plain cookies only on loopback: the listener and the browser's URL.
        assert!(check(web(|w| w.cookie_secure = Some(false)), lo).is_ok());
        let (k, m) = check(
            web(|w| w.cookie_secure = Some(false)),
            "10.0.0.5:8009".parse().unwrap(),
        )
        .unwrap_err();
        assert_eq!(k, "oidc.web.cookie_secure");
        assert!(m.contains("loopback") && m.contains("10.0.0.5:8009"), "{m}");
        assert_eq!(
            key(
                web(|w| {
                    w.cookie_secure = Some(false);
                    w.redirect_url = Some("https://gateway.example/api/auth/callback".into());
                }),
                lo
            ),
            "oidc.web.cookie_secure"
        );
    }
}
