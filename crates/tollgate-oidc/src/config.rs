//! The `[oidc]` configuration section and its validation.
//!
//! ```toml
//! [oidc]
//! http_timeout_secs = 10
//!
//! [[oidc.issuers]]
//! issuer = "https://idp.example.com/realms/main"
//! audiences = ["tollgate"]
//! client_ids = ["tollgate-cli"]            # in aud (ID tokens), or as azp / client_id
//! groups_claim = "realm_access.roles"      # or ["resource_access", "my.client", "roles"]
//! group_map = { "db-admins" = ["dba"], "staff" = [] }
//! unmapped_groups = "keep"                 # or "drop"
//! kind = "auto"                            # "human" | "service" | "claim"
//!
//! [[oidc.issuers]]
//! issuer = "https://token.actions.githubusercontent.com"
//! audiences = ["https://tollgate.example.com"]
//! kind = "service"
//! subject_prefix = "gha:"
//! groups_claim = "repository_owner"
//!
//! [[oidc.issuers]]
//! issuer = "ci-signer"
//! audiences = ["tollgate"]
//! hs_secret_env = "CI_SIGNER_SECRET"       # HS256/384/512 only, never with a JWKS
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;

use ring::hmac;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::OidcError;
use crate::jws::Algorithm;

const DEFAULT_HTTP_TIMEOUT_SECS: u64 = 10;
const DEFAULT_LEEWAY_SECS: u64 = 60;
const MAX_LEEWAY_SECS: u64 = 600;
const DEFAULT_JWKS_TTL_SECS: u64 = 600;
/// Bounds of a key set's time to live, whether from the configuration or `Cache-Control`.
pub(crate) const MIN_JWKS_TTL_SECS: u64 = 60;
pub(crate) const MAX_JWKS_TTL_SECS: u64 = 86_400;
const DEFAULT_REFRESH_MIN_SECS: u64 = 30;
const MAX_REFRESH_MIN_SECS: u64 = 3_600;
const DEFAULT_GRACE_SECS: u64 = 86_400;
const MAX_GRACE_SECS: u64 = 30 * 86_400;
/// The shortest shared secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
const MIN_SECRET_BYTES: usize = 32;

/// The `[oidc]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuers whose tokens are accepted.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Timeout of one discovery or JWKS request, seconds (1–60, default 10).
    #[serde(default = "default_http_timeout_secs")]
    pub http_timeout_secs: u64,
    /// The gateway's web login (`[oidc.web]`), validated by the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebLoginConfig>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            http_timeout_secs: DEFAULT_HTTP_TIMEOUT_SECS,
            web: None,
        }
    }
}

/// `[oidc.web]`: a browser login (authorization code with PKCE) at one of the issuers, giving a
/// session cookie for the gateway's API. Only the shape is read here; the gateway validates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebLoginConfig {
    /// One of the `[[oidc.issuers]]`.
    pub issuer: String,
    /// The gateway's client at that issuer.
    pub client_id: String,
    /// The environment variable holding the client's secret (a confidential client); without
    /// it the client is public and PKCE alone protects the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// Where the provider sends the browser back: the gateway's `/api/auth/callback` as the
    /// browser reaches it. Default: `http://<API listener>/api/auth/callback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    /// Scopes asked for (default `openid profile email groups`; `openid` is always asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// How long a session lasts, seconds. Default: the ID token's life, at most 8 hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_ttl_secs: Option<u64>,
    /// Whether cookies are `Secure` (and the session cookie `__Host-` prefixed). Default true;
    /// false only for development on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_secure: Option<bool>,
}

/// One `[[oidc.issuers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer identifier; a token's `iss` must equal it exactly. Without `discovery_url`,
    /// `jwks_url` or `hs_secret_env` it must be an `https` URL (or `http` on loopback), and
    /// discovery reads `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// Accepted `aud` values: a token whose `aud` (string or array) holds one is accepted.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted clients: a token whose `azp` (or, without `azp`, `client_id`) is one of these
    /// is accepted whatever its `aud`; so is a token without `azp` / `client_id` whose `aud`
    /// holds one of these (an ID token issued to that client). At least one of `audiences` and
    /// `client_ids` is needed.
    #[serde(default)]
    pub client_ids: Vec<String>,
    /// Accepted algorithms (JOSE names). Default: every asymmetric one (RS*, PS*, ES256,
    /// ES384, EdDSA) for a key-set issuer; HS256, and HS384/HS512 when the secret is long
    /// enough, for a shared-secret issuer. `none` is never accepted, HS* never with a key set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// Where the discovery document is, when not under the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_url: Option<String>,
    /// The JWKS URL, skipping discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// The environment variable holding a shared secret (its bytes as they are, at least 32).
    /// With it the issuer accepts HMAC tokens only and fetches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs_secret_env: Option<String>,
    /// Clock skew allowed for `exp`, `nbf` and `iat`, seconds (at most 600, default 60).
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// How long a fetched key set is fresh when the response has no `Cache-Control: max-age`,
    /// seconds (60–86400, default 600). A `max-age` is honoured within the same bounds.
    #[serde(default = "default_jwks_ttl_secs")]
    pub jwks_ttl_secs: u64,
    /// At most one fetch per this many seconds, whatever triggers it (unknown `kid`, stale
    /// keys, failures) (1–3600, default 30).
    #[serde(default = "default_refresh_min_secs")]
    pub jwks_refresh_min_secs: u64,
    /// How long the last fetched keys keep verifying while the provider cannot be reached,
    /// counted from that fetch, seconds (at most 30 days, default 86400). After that, tokens
    /// of this issuer are refused until a fetch succeeds.
    #[serde(default = "default_grace_secs")]
    pub grace_secs: u64,
    /// Put before `sub` to form the Tollgate subject (e.g. `gha:`), so that subjects of
    /// different issuers cannot collide. When several issuers are configured, their prefixes
    /// must differ.
    #[serde(default)]
    pub subject_prefix: String,
    /// Where the groups are: a claim name, a dotted path (`realm_access.roles`), or an array
    /// of path segments for names holding dots (`["resource_access", "my.client", "roles"]`).
    /// A dotted string is first looked up as one claim name. The value is a string or an
    /// array of strings.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: ClaimPath,
    /// Provider group → Tollgate groups (an empty list drops the group).
    #[serde(default)]
    pub group_map: BTreeMap<String, Vec<String>>,
    /// What happens to a provider group `group_map` does not name.
    #[serde(default)]
    pub unmapped_groups: UnmappedGroups,
    /// How a token is judged a person or a service (see [`KindRule`]).
    #[serde(default)]
    pub kind: KindRule,
    /// With `kind = "claim"`: the claim that marks a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_claim: Option<ClaimPath>,
    /// With `kind = "claim"`: the values of `service_claim` that mean a service (a string
    /// claim equal to one, or an array claim holding one; `true`/`false` match booleans).
    #[serde(default)]
    pub service_values: Vec<String>,
}

impl IssuerConfig {
    /// An issuer with every other key at its default (`audiences` still has to be set).
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: Vec::new(),
            client_ids: Vec::new(),
            algorithms: None,
            discovery_url: None,
            jwks_url: None,
            hs_secret_env: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            jwks_ttl_secs: DEFAULT_JWKS_TTL_SECS,
            jwks_refresh_min_secs: DEFAULT_REFRESH_MIN_SECS,
            grace_secs: DEFAULT_GRACE_SECS,
            subject_prefix: String::new(),
            groups_claim: default_groups_claim(),
            group_map: BTreeMap::new(),
            unmapped_groups: UnmappedGroups::default(),
            kind: KindRule::default(),
            service_claim: None,
            service_values: Vec::new(),
        }
    }
}

/// A claim name or path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClaimPath {
    /// `groups`, `realm_access.roles`: looked up as one name first, then split on dots.
    Dotted(String),
    /// Explicit segments.
    Segments(Vec<String>),
}

/// What happens to provider groups the map does not name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnmappedGroups {
    /// They pass through under their own name (default).
    #[default]
    Keep,
    /// They are dropped: only mapped groups count.
    Drop,
}

/// How a token is judged a person or a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindRule {
    /// A service when any of: `gty` is `client-credentials`; `grant_type` is
    /// `client_credentials`; `idtyp` is `app`; `azp` or `client_id` equals `sub`;
    /// `preferred_username` starts with `service-account-`; there is no `email` claim.
    /// A person otherwise. Because of the last rule, set `kind = "human"` or `"claim"` for a
    /// provider whose people's tokens carry no `email`.
    #[default]
    Auto,
    /// Every token of this issuer is a person.
    Human,
    /// Every token of this issuer is a service (e.g. a CI provider).
    Service,
    /// A service when `service_claim` has one of `service_values`; a person otherwise.
    Claim,
}

fn default_http_timeout_secs() -> u64 {
    DEFAULT_HTTP_TIMEOUT_SECS
}
fn default_leeway_secs() -> u64 {
    DEFAULT_LEEWAY_SECS
}
fn default_jwks_ttl_secs() -> u64 {
    DEFAULT_JWKS_TTL_SECS
}
fn default_refresh_min_secs() -> u64 {
    DEFAULT_REFRESH_MIN_SECS
}
fn default_grace_secs() -> u64 {
    DEFAULT_GRACE_SECS
}
fn default_groups_claim() -> ClaimPath {
    ClaimPath::Dotted("groups".into())
}

/// An issuer's validated settings.
#[derive(Debug)]
pub(crate) struct IssuerSettings {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub client_ids: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySettings,
    pub leeway_secs: u64,
    pub ttl_secs: u64,
    pub refresh_min_secs: u64,
    pub grace_secs: u64,
    pub subject_prefix: String,
    pub groups_claim: ClaimPath,
    pub group_map: BTreeMap<String, Vec<String>>,
    pub keep_unmapped: bool,
    pub kind: ResolvedKind,
}

/// Where an issuer's keys come from.
#[derive(Debug)]
pub(crate) enum KeySettings {
    /// A JWKS, found by discovery or given.
    Remote {
        discovery: Option<Url>,
        jwks: Option<Url>,
    },
    /// A shared secret, one HMAC key per accepted algorithm.
    Secret(Vec<(Algorithm, hmac::Key)>),
}

#[derive(Debug, Clone)]
pub(crate) enum ResolvedKind {
    Auto,
    Human,
    Service,
    Claim {
        path: ClaimPath,
        values: Vec<String>,
    },
}

impl OidcConfig {
    /// Checks the configuration, reading shared secrets from the process environment.
    pub fn validate(&self) -> Result<(), OidcError> {
        self.resolve(&|name| std::env::var(name).ok()).map(|_| ())
    }

    pub(crate) fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<IssuerSettings>, OidcError> {
        if !(1..=60).contains(&self.http_timeout_secs) {
            return Err(OidcError::config(
                "oidc.http_timeout_secs",
                "must be between 1 and 60",
            ));
        }
        let mut out: Vec<IssuerSettings> = Vec::with_capacity(self.issuers.len());
        for (i, cfg) in self.issuers.iter().enumerate() {
            let key = |name: &str| format!("oidc.issuers[{i}].{name}");
            let settings = resolve_issuer(cfg, &key, env)?;
            for (j, other) in out.iter().enumerate() {
                if other.issuer == settings.issuer {
                    return Err(OidcError::config(
                        key("issuer"),
                        format!("the same issuer as oidc.issuers[{j}]"),
                    ));
                }
                if other.subject_prefix == settings.subject_prefix {
                    return Err(OidcError::config(
                        key("subject_prefix"),
                        format!(
                            "the same subject_prefix as oidc.issuers[{j}]: subjects of \
                             different issuers could collide"
                        ),
                    ));
                }
            }
            out.push(settings);
        }
        Ok(out)
    }
}

fn resolve_issuer(
    cfg: &IssuerConfig,
    key: &dyn Fn(&str) -> String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<IssuerSettings, OidcError> {
    let issuer = cfg.issuer.clone();
    if issuer.is_empty() || issuer.len() > 512 {
        return Err(OidcError::config(key("issuer"), "must be 1 to 512 bytes"));
    }
    if issuer.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(OidcError::config(
            key("issuer"),
            "must not hold whitespace or control characters",
        ));
    }
    if cfg.audiences.is_empty() && cfg.client_ids.is_empty() {
        return Err(OidcError::config(
            key("audiences"),
            "set audiences or client_ids: a token must be meant for this gateway",
        ));
    }
    check_names(&cfg.audiences, &key("audiences"))?;
    check_names(&cfg.client_ids, &key("client_ids"))?;
    if cfg.leeway_secs > MAX_LEEWAY_SECS {
        return Err(OidcError::config(key("leeway_secs"), "must be at most 600"));
    }
    if !(MIN_JWKS_TTL_SECS..=MAX_JWKS_TTL_SECS).contains(&cfg.jwks_ttl_secs) {
        return Err(OidcError::config(
            key("jwks_ttl_secs"),
            "must be between 60 and 86400",
        ));
    }
    if !(1..=MAX_REFRESH_MIN_SECS).contains(&cfg.jwks_refresh_min_secs) {
        return Err(OidcError::config(
            key("jwks_refresh_min_secs"),
            "must be between 1 and 3600",
        ));
    }
    if cfg.grace_secs > MAX_GRACE_SECS {
        return Err(OidcError::config(
            key("grace_secs"),
            "must be at most 2592000 (30 days)",
        ));
    }
    if cfg.subject_prefix.len() > 64 || cfg.subject_prefix.chars().any(char::is_control) {
        return Err(OidcError::config(
            key("subject_prefix"),
            "must be at most 64 bytes without control characters",
        ));
    }
    check_path(&cfg.groups_claim, &key("groups_claim"))?;
    for (from, to) in &cfg.group_map {
        if from.is_empty() {
            return Err(OidcError::config(
                key("group_map"),
                "empty provider group name",
            ));
        }
        check_names(to, &key("group_map"))?;
    }
    let kind = match (cfg.kind, &cfg.service_claim) {
        (KindRule::Claim, Some(path)) => {
            check_path(path, &key("service_claim"))?;
            if cfg.service_values.is_empty() {
                return Err(OidcError::config(
                    key("service_values"),
                    "needed with kind = \"claim\"",
                ));
            }
            ResolvedKind::Claim {
                path: path.clone(),
                values: cfg.service_values.clone(),
            }
        }
        (KindRule::Claim, None) => {
            return Err(OidcError::config(
                key("service_claim"),
                "needed with kind = \"claim\"",
            ));
        }
        (_, Some(_)) => {
            return Err(OidcError::config(
                key("service_claim"),
                "only used with kind = \"claim\"",
            ));
        }
        (KindRule::Auto, None) => ResolvedKind::Auto,
        (KindRule::Human, None) => ResolvedKind::Human,
        (KindRule::Service, None) => ResolvedKind::Service,
    };
    if cfg.kind != KindRule::Claim && !cfg.service_values.is_empty() {
        return Err(OidcError::config(
            key("service_values"),
            "only used with kind = \"claim\"",
        ));
    }
    let listed = match &cfg.algorithms {
        None => None,
        Some(names) if names.is_empty() => {
            return Err(OidcError::config(key("algorithms"), "must not be empty"));
        }
        Some(names) => {
            let mut algs = Vec::with_capacity(names.len());
            for name in names {
                let alg = Algorithm::from_name(name).ok_or_else(|| {
                    OidcError::config(
                        key("algorithms"),
                        format!("{name:?} is not a supported algorithm"),
                    )
                })?;
                if !algs.contains(&alg) {
                    algs.push(alg);
                }
            }
            Some(algs)
        }
    };
    let (keys, algorithms) = match &cfg.hs_secret_env {
        Some(var) => {
            if cfg.discovery_url.is_some() {
                return Err(OidcError::config(
                    key("discovery_url"),
                    "not allowed with hs_secret_env: a shared-secret issuer has no key set",
                ));
            }
            if cfg.jwks_url.is_some() {
                return Err(OidcError::config(
                    key("jwks_url"),
                    "not allowed with hs_secret_env: a shared-secret issuer has no key set",
                ));
            }
            let secret = env(var).ok_or_else(|| {
                OidcError::config(
                    key("hs_secret_env"),
                    format!("environment variable {var} is not set"),
                )
            })?;
            let secret = secret.as_bytes();
            if secret.len() < MIN_SECRET_BYTES {
                return Err(OidcError::config(
                    key("hs_secret_env"),
                    format!("the secret in {var} is shorter than {MIN_SECRET_BYTES} bytes"),
                ));
            }
            let algorithms = match listed {
                Some(algs) => {
                    for alg in &algs {
                        if !alg.is_hmac() {
                            return Err(OidcError::config(
                                key("algorithms"),
                                format!("{alg} is not allowed with hs_secret_env (HS* only)"),
                            ));
                        }
                        if secret.len() < hmac_min_len(*alg) {
                            return Err(OidcError::config(
                                key("algorithms"),
                                format!(
                                    "{alg} needs a secret of at least {} bytes",
                                    hmac_min_len(*alg)
                                ),
                            ));
                        }
                    }
                    algs
                }
                None => [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
                    .into_iter()
                    .filter(|a| secret.len() >= hmac_min_len(*a))
                    .collect(),
            };
            let keys = algorithms
                .iter()
                .map(|alg| (*alg, hmac::Key::new(hmac_algorithm(*alg), secret)))
                .collect();
            (KeySettings::Secret(keys), algorithms)
        }
        None => {
            let algorithms = match listed {
                Some(algs) => {
                    if let Some(alg) = algs.iter().find(|a| a.is_hmac()) {
                        return Err(OidcError::config(
                            key("algorithms"),
                            format!("{alg} needs hs_secret_env; never with a key set"),
                        ));
                    }
                    algs
                }
                None => Algorithm::ALL
                    .into_iter()
                    .filter(|a| !a.is_hmac())
                    .collect(),
            };
            let jwks = match &cfg.jwks_url {
                Some(url) => Some(check_url(url, &key("jwks_url"))?),
                None => None,
            };
            let discovery = match (&cfg.discovery_url, &jwks) {
                (Some(_), Some(_)) => {
                    return Err(OidcError::config(
                        key("jwks_url"),
                        "set discovery_url or jwks_url, not both",
                    ));
                }
                (Some(url), None) => Some(check_url(url, &key("discovery_url"))?),
                (None, Some(_)) => None,
                (None, None) => {
                    let base = issuer.trim_end_matches('/');
                    let url = format!("{base}/.well-known/openid-configuration");
                    Some(check_url(&url, &key("issuer")).map_err(|_| {
                        OidcError::config(
                            key("issuer"),
                            "must be an https URL (http only on loopback) for discovery; \
                             or set discovery_url, jwks_url or hs_secret_env",
                        )
                    })?)
                }
            };
            (KeySettings::Remote { discovery, jwks }, algorithms)
        }
    };
    Ok(IssuerSettings {
        issuer,
        audiences: cfg.audiences.clone(),
        client_ids: cfg.client_ids.clone(),
        algorithms,
        keys,
        leeway_secs: cfg.leeway_secs,
        ttl_secs: cfg.jwks_ttl_secs,
        refresh_min_secs: cfg.jwks_refresh_min_secs,
        grace_secs: cfg.grace_secs,
        subject_prefix: cfg.subject_prefix.clone(),
        groups_claim: cfg.groups_claim.clone(),
        group_map: cfg.group_map.clone(),
        keep_unmapped: cfg.unmapped_groups == UnmappedGroups::Keep,
        kind,
    })
}

fn hmac_min_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => MIN_SECRET_BYTES,
    }
}

pub(crate) fn hmac_algorithm(alg: Algorithm) -> hmac::Algorithm {
    match alg {
        Algorithm::HS384 => hmac::HMAC_SHA384,
        Algorithm::HS512 => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    }
}

fn check_names(names: &[String], key: &str) -> Result<(), OidcError> {
    for name in names {
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(OidcError::config(
                key,
                format!("{name:?} must be 1 to 256 bytes without control characters"),
            ));
        }
    }
    Ok(())
}

fn check_path(path: &ClaimPath, key: &str) -> Result<(), OidcError> {
    let ok = match path {
        ClaimPath::Dotted(s) => !s.is_empty() && s.split('.').all(|seg| !seg.is_empty()),
        ClaimPath::Segments(segs) => !segs.is_empty() && segs.iter().all(|seg| !seg.is_empty()),
    };
    if ok {
        Ok(())
    } else {
        Err(OidcError::config(key, "empty claim name or path segment"))
    }
}

/// An `https` URL, or an `http` one whose host is a loopback address or `localhost`.
pub(crate) fn check_url(text: &str, key: &str) -> Result<Url, OidcError> {
    let url = Url::parse(text)
        .map_err(|e| OidcError::config(key, format!("{text:?} is not a URL: {e}")))?;
    if secure_url(&url) {
        Ok(url)
    } else {
        Err(OidcError::config(
            key,
            format!("{text:?} must be https (http only on loopback)"),
        ))
    }
}

pub(crate) fn secure_url(url: &Url) -> bool {
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    match url.scheme() {
        "https" => url.host_str().is_some(),
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => false,
        },
        _ => false,
    }
}
