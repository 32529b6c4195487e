//! Identities and the access decision. A presented token is an API key or, when it has the
//! shape of a JWT, an OIDC token verified against the configured issuers; either becomes an
//! [`Identity`] whose groups decide which connections it may use (a shared group) and whose
//! role (`roles.rs`) what it may do on the API. Keys are stored hashed; caches in memory answer
//! the per-statement validity check (key revoked or expired, token expired or revoked).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use tollgate_core::{
    AuthMethod, Authentication, Connection, Gatekeeper, Identity, Protocol, Refusal, RefusalCode,
    format_rfc3339, now_micros,
};
use tollgate_oidc::{OidcConfig, OidcError, Verifier};
use tollgate_store::{KeyRecord, RevocationKind, Store, TokenRevocation};

use crate::GatewayError;
use crate::approvals::ApprovalBook;

mod sshkeys;
use crate::roles::{Role, Roles};
pub use sshkeys::{MAX_SNAPSHOT, SshKeyError};

/// Prefix of every generated key, so scanners and people recognize them.
pub const KEY_PREFIX: &str = "tg_";
/// Id of the bootstrap administrator key.
pub const BOOTSTRAP_ID: &str = "admin";

/// Hex SHA-256 of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

fn random_hex(bytes: usize) -> Result<String, GatewayError> {
    let mut raw = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| GatewayError::Crypto("no randomness available".into()))?;
    Ok(hex::encode(raw))
}

#[derive(Default)]
struct Cache {
    by_hash: HashMap<String, Arc<KeyRecord>>,
    by_id: HashMap<String, Arc<KeyRecord>>,
}

/// A freshly created key: the record and the secret, shown once.
pub struct NewKey {
    /// The stored record.
    pub record: KeyRecord,
    /// The key itself.
    pub token: String,
}

/// Revoked tokens, in memory: token id → when, subject → tokens issued up to when.
#[derive(Default)]
struct Revoked {
    jti: HashMap<String, TokenRevocation>,
    subject: HashMap<String, TokenRevocation>,
}

/// OIDC tokens: the verifier and each issuer's leeway (for the expiry check at each command).
struct Oidc {
    verifier: Arc<Verifier>,
    leeway_micros: HashMap<String, i64>,
}

/// Keys, OIDC tokens, connections and the decisions between them.
pub struct Keys {
    store: Store,
    grants: Arc<ApprovalBook>,
    cache: RwLock<Cache>,
    connections: HashMap<String, Arc<Connection>>,
    oidc: Option<Oidc>,
    roles: Roles,
    revoked: RwLock<Revoked>,
}

impl Keys {
    /// Loads every key from the store.
    pub fn load(
        store: Store,
        connections: &[Arc<Connection>],
        grants: Arc<ApprovalBook>,
    ) -> Result<Self, GatewayError> {
        let keys = Self {
            store,
            grants,
            cache: RwLock::new(Cache::default()),
            connections: connections
                .iter()
                .map(|c| (c.name.clone(), Arc::clone(c)))
                .collect(),
            oidc: None,
            roles: Roles::default(),
            revoked: RwLock::new(Revoked::default()),
        };
        keys.reload()?;
        keys.reload_revocations()?;
        Ok(keys)
    }

    /// Accepts OIDC tokens through `verifier` (issuers of `config`) and gives roles by group.
    /// Without a verifier, or with one without issuers, a JWT is refused as not accepted here.
    pub fn with_identity(
        mut self,
        verifier: Option<Arc<Verifier>>,
        config: &OidcConfig,
        roles: Roles,
    ) -> Self {
        self.oidc = verifier.filter(|v| !v.is_empty()).map(|verifier| Oidc {
            verifier,
            leeway_micros: config
                .issuers
                .iter()
                .map(|i| {
                    let secs = i64::try_from(i.leeway_secs).unwrap_or(0);
                    (i.issuer.clone(), secs.saturating_mul(1_000_000))
                })
                .collect(),
        });
        self.roles = roles;
        self
    }

    /// The role of an identity.
    pub fn role(&self, identity: &Identity) -> Role {
        self.roles.of(identity)
    }

    fn reload_revocations(&self) -> Result<(), GatewayError> {
        let mut revoked = Revoked::default();
        for r in self.store.token_revocations()? {
            match r.kind {
                RevocationKind::Jti => revoked.jti.insert(r.value.clone(), r),
                RevocationKind::Subject => revoked.subject.insert(r.value.clone(), r),
            };
        }
        *self.revoked.write().map_err(|_| GatewayError::Poisoned)? = revoked;
        Ok(())
    }

    /// Revokes one OIDC token (by `jti`) or every token of a subject issued until now. Live
    /// sessions of those tokens are refused at their next command, and the tokens at their next
    /// authentication.
    pub fn revoke_token(
        &self,
        kind: RevocationKind,
        value: &str,
        by: &Identity,
        reason: &str,
    ) -> Result<TokenRevocation, GatewayError> {
        if value.trim().is_empty() || value.len() > 1024 || value.chars().any(char::is_control) {
            return Err(GatewayError::Invalid(format!(
                "the {} must be 1 to 1024 characters without control characters",
                kind.as_str()
            )));
        }
        if reason.len() > 2000 {
            return Err(GatewayError::Invalid(
                "reason is longer than 2000 characters".into(),
            ));
        }
        let record = TokenRevocation {
            kind,
            value: value.to_string(),
            revoked_at: now_micros(),
            revoked_by: Some(by.subject.clone()),
            reason: reason.to_string(),
        };
        self.store.revoke_token(&record)?;
        self.reload_revocations()?;
        let stored = {
            let revoked = self.revoked.read().map_err(|_| GatewayError::Poisoned)?;
            match kind {
                RevocationKind::Jti => revoked.jti.get(value).cloned(),
                RevocationKind::Subject => revoked.subject.get(value).cloned(),
            }
        };
        Ok(stored.unwrap_or(record))
    }

    /// Every token revocation, oldest first.
    pub fn token_revocations(&self) -> Result<Vec<TokenRevocation>, GatewayError> {
        Ok(self.store.token_revocations()?)
    }

    fn reload(&self) -> Result<(), GatewayError> {
        let mut cache = Cache::default();
        for k in self.store.keys()? {
            let k = Arc::new(k);
            cache.by_hash.insert(k.hash.clone(), Arc::clone(&k));
            cache.by_id.insert(k.id.clone(), k);
        }
        *self.cache.write().map_err(|_| GatewayError::Poisoned)? = cache;
        Ok(())
    }

    /// Makes sure an administrator key exists. With `given` (from `TOLLGATE_ADMIN_KEY`) that
    /// exact key becomes the bootstrap admin; otherwise one is generated when none exists and
    /// returned so the caller can print it once.
    pub fn bootstrap_admin(&self, given: Option<&str>) -> Result<Option<String>, GatewayError> {
        let now = now_micros();
        if let Some(token) = given {
            if token.len() < 16 {
                return Err(GatewayError::Invalid(
                    "TOLLGATE_ADMIN_KEY must be at least 16 characters".into(),
                ));
            }
            let hash = hash_token(token);
            let existing = self.records()?;
            if existing
                .iter()
                .any(|k| k.hash == hash && k.revoked_at.is_none())
            {
                return Ok(None);
            }
            // A different bootstrap key was used before: retire it.
            for k in existing
                .iter()
                .filter(|k| k.id.starts_with(BOOTSTRAP_ID) && k.revoked_at.is_none())
            {
                self.store.revoke_key(&k.id, now)?;
            }
            let record = KeyRecord {
                id: format!("{BOOTSTRAP_ID}-{}", &random_hex(4)?),
                name: "admin".into(),
                groups: vec!["admin".into()],
                hash,
                admin: true,
                created_at: now,
                expires_at: None,
                revoked_at: None,
            };
            self.store.insert_key(&record)?;
            self.reload()?;
            return Ok(None);
        }
        if self
            .records()?
            .iter()
            .any(|k| k.admin && k.revoked_at.is_none())
        {
            return Ok(None);
        }
        let token = format!("{KEY_PREFIX}{}", random_hex(24)?);
        let record = KeyRecord {
            id: format!("{BOOTSTRAP_ID}-{}", &random_hex(4)?),
            name: "admin".into(),
            groups: vec!["admin".into()],
            hash: hash_token(&token),
            admin: true,
            created_at: now,
            expires_at: None,
            revoked_at: None,
        };
        self.store.insert_key(&record)?;
        self.reload()?;
        Ok(Some(token))
    }

    /// Creates a key.
    pub fn create(
        &self,
        name: &str,
        groups: Vec<String>,
        ttl: Option<std::time::Duration>,
        admin: bool,
    ) -> Result<NewKey, GatewayError> {
        if name.trim().is_empty() || name.len() > 128 {
            return Err(GatewayError::Invalid(
                "name must be 1 to 128 characters".into(),
            ));
        }
        if groups.iter().any(|g| g.trim().is_empty()) {
            return Err(GatewayError::Invalid(
                "group names must not be empty".into(),
            ));
        }
        let now = now_micros();
        let id = random_hex(6)?;
        let token = format!("{KEY_PREFIX}{}", random_hex(24)?);
        let record = KeyRecord {
            id,
            name: name.trim().to_string(),
            groups,
            hash: hash_token(&token),
            admin,
            created_at: now,
            expires_at: ttl.map(|t| now.saturating_add(t.as_micros() as i64)),
            revoked_at: None,
        };
        self.store.insert_key(&record)?;
        self.reload()?;
        Ok(NewKey { record, token })
    }

    /// Every key record.
    pub fn records(&self) -> Result<Vec<KeyRecord>, GatewayError> {
        Ok(self.store.keys()?)
    }

    /// Revokes a key; its live sessions are refused at their next statement.
    pub fn revoke(&self, id: &str) -> Result<bool, GatewayError> {
        let found = self.store.revoke_key(id, now_micros())?;
        self.reload()?;
        Ok(found)
    }

    /// The protocol of the connection of that name, if one is configured.
    pub fn protocol_of(&self, connection: &str) -> Option<Protocol> {
        self.connections.get(connection).map(|c| c.protocol)
    }

    /// Connections the identity may use.
    pub fn usable_connections(&self, identity: &Identity) -> Vec<Arc<Connection>> {
        let mut out: Vec<_> = self
            .connections
            .values()
            .filter(|c| shares_group(identity, c))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn check(record: &KeyRecord, now: i64) -> Result<(), Refusal> {
        if let Some(at) = record.revoked_at {
            return Err(Refusal::new(
                RefusalCode::Revoked,
                format!("key {} was revoked at {}", record.id, format_rfc3339(at)),
            ));
        }
        if let Some(at) = record.expires_at
            && at <= now
        {
            return Err(Refusal::new(
                RefusalCode::Expired,
                format!("key {} expired at {}", record.id, format_rfc3339(at)),
            ));
        }
        Ok(())
    }
}

fn shares_group(identity: &Identity, connection: &Connection) -> bool {
    connection
        .groups
        .iter()
        .any(|g| identity.groups.contains(g))
}

impl Gatekeeper for Keys {
    fn authenticate<'a>(&'a self, token: &'a str) -> Authentication<'a> {
        Box::pin(async move {
            if tollgate_oidc::looks_like_jwt(token) {
                self.authenticate_token(token).await
            } else {
                self.authenticate_key(token)
            }
        })
    }

    fn authorize(&self, identity: &Identity, connection: &str) -> Result<Arc<Connection>, Refusal> {
        if self.role(identity) == Role::Auditor {
            return Err(Refusal::new(
                RefusalCode::Forbidden,
                format!(
                    "{} is an auditor: auditors read sessions and the audit trail, and open no sessions (connection \"{connection}\")",
                    identity.subject
                ),
            ));
        }
        let c = self.grantable(identity, connection)?;
        self.check_grant(identity, &c, now_micros())?;
        Ok(c)
    }

    fn authenticate_ssh_key(&self, fingerprint: &str) -> Result<Identity, Refusal> {
        let found = self.ssh_key_identity(fingerprint);
        if let Err(refusal) = &found {
            log_refusal(refusal);
        }
        found
    }

    fn still_valid(&self, identity: &Identity, connection: &str) -> Result<(), Refusal> {
        match identity.via {
            AuthMethod::ApiKey => self.key_still_valid(identity)?,
            AuthMethod::Oidc => self.token_still_valid(identity, now_micros())?,
        }
        match self.connections.get(connection) {
            Some(c) if c.grant.is_some() => self.check_grant(identity, c, now_micros()),
            _ => Ok(()),
        }
    }
}

impl Keys {
    fn authenticate_key(&self, token: &str) -> Result<Identity, Refusal> {
        let bad = || {
            Refusal::new(
                RefusalCode::BadCredentials,
                "authentication failed: the key is not valid",
            )
        };
        if token.is_empty() || token.len() > 512 {
            return Err(bad());
        }
        let hash = hash_token(token);
        let record = {
            let cache = self.cache.read().map_err(|_| bad())?;
            cache.by_hash.get(&hash).cloned()
        }
        .ok_or_else(bad)?;
        Self::check(&record, now_micros())?;
        let mut identity = Identity::new(
            record.name.clone(),
            AuthMethod::ApiKey,
            record.groups.clone(),
        );
        identity.key_id = Some(record.id.clone());
        identity.admin = record.admin || self.roles.admin_by_groups(&record.groups);
        identity.expires_at = record.expires_at;
        Ok(identity)
    }

    /// An OIDC token: verified against its issuer (fetching keys when needed), then checked
    /// against the revocations. The client is told the public message only; the detail (the
    /// verifier's reason, whose token it claimed to be) goes to the log and the record.
    async fn authenticate_token(&self, token: &str) -> Result<Identity, Refusal> {
        let Some(oidc) = &self.oidc else {
            let refusal = Refusal::new(
                RefusalCode::BadCredentials,
                "authentication failed: token not accepted here",
            )
            .with_detail(format!(
                "OIDC token refused: no [[oidc.issuers]] configured{}",
                claimed(token)
            ));
            log_refusal(&refusal);
            return Err(refusal);
        };
        let verified = match oidc.verifier.verify(token).await {
            Ok(v) => v,
            Err(e) => {
                let refusal = Refusal::new(
                    refusal_code(&e),
                    format!("authentication failed: {}", e.public_message()),
                )
                .with_detail(format!("OIDC token refused: {e}{}", claimed(token)));
                log_refusal(&refusal);
                return Err(refusal);
            }
        };
        let mut identity = verified.to_identity();
        identity.admin = self.roles.admin_by_groups(&identity.groups);
        if let Err(refusal) = self.check_revoked(&identity) {
            log_refusal(&refusal);
            return Err(refusal);
        }
        Ok(identity)
    }

    /// An OIDC identity at a later command: its token must not have expired (with its issuer's
    /// leeway, as at authentication) nor been revoked since.
    fn token_still_valid(&self, identity: &Identity, now: i64) -> Result<(), Refusal> {
        let leeway = identity
            .issuer
            .as_ref()
            .and_then(|iss| self.oidc.as_ref()?.leeway_micros.get(iss).copied())
            .unwrap_or(0);
        match identity.expires_at {
            Some(exp) if now < exp.saturating_add(leeway) => {}
            Some(exp) => {
                return Err(Refusal::new(
                    RefusalCode::Expired,
                    "token expired: the session ends; connect again with a fresh token",
                )
                .with_detail(format!(
                    "the token of {} expired at {}",
                    describe(identity),
                    format_rfc3339(exp)
                )));
            }
            None => {
                return Err(Refusal::new(
                    RefusalCode::Expired,
                    "token expired: the session ends; connect again with a fresh token",
                )
                .with_detail(format!("the token of {} has no expiry", describe(identity))));
            }
        }
        self.check_revoked(identity)
    }

    /// The identity of a web session at a request: refused once the session's end
    /// (`expires_at`) has passed or its token (by `jti`, or its subject) was revoked; its admin
    /// right follows the current `[roles]`.
    pub fn session_identity(&self, identity: &Identity, now: i64) -> Result<Identity, Refusal> {
        if identity.expires_at.is_none_or(|exp| exp <= now) {
            return Err(Refusal::new(
                RefusalCode::Expired,
                "session expired: log in again at /api/auth/login",
            )
            .with_detail(format!(
                "the web session of {} ended at {}",
                describe(identity),
                identity
                    .expires_at
                    .map(format_rfc3339)
                    .unwrap_or_else(|| "(no end)".into())
            )));
        }
        self.check_revoked(identity).map_err(|r| {
            Refusal::new(
                RefusalCode::Revoked,
                "session revoked: log in again at /api/auth/login",
            )
            .with_detail(format!("web session: {}", r.detail.unwrap_or(r.message)))
        })?;
        let mut id = identity.clone();
        id.admin = self.roles.admin_by_groups(&id.groups);
        Ok(id)
    }

    /// Refuses an OIDC identity whose token id, or whose subject before this token was issued,
    /// was revoked.
    fn check_revoked(&self, identity: &Identity) -> Result<(), Refusal> {
        let refused = |r: &TokenRevocation| {
            Refusal::new(RefusalCode::Revoked, "authentication failed: token revoked").with_detail(
                format!(
                    "the token of {} is revoked: {} {} revoked at {}{}{}",
                    describe(identity),
                    r.kind.as_str(),
                    r.value,
                    format_rfc3339(r.revoked_at),
                    r.revoked_by
                        .as_deref()
                        .map(|b| format!(" by {b}"))
                        .unwrap_or_default(),
                    if r.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.reason)
                    }
                ),
            )
        };
        let revoked = self.revoked.read().map_err(|_| {
            Refusal::new(
                RefusalCode::Revoked,
                "authentication failed: revocation state unavailable",
            )
        })?;
        if let Some(jti) = &identity.token_id
            && let Some(r) = revoked.jti.get(jti)
        {
            return Err(refused(r));
        }
        if let Some(r) = revoked.subject.get(&identity.subject)
            && identity.issued_at.is_none_or(|iat| iat <= r.revoked_at)
        {
            return Err(refused(r));
        }
        Ok(())
    }
}

/// The refusal code of a verifier error.
fn refusal_code(e: &OidcError) -> RefusalCode {
    if e.is_transient() {
        RefusalCode::IdentityUnavailable
    } else if matches!(e, OidcError::Expired { .. }) {
        RefusalCode::Expired
    } else {
        RefusalCode::BadCredentials
    }
}

fn log_refusal(refusal: &Refusal) {
    tracing::info!(
        code = ?refusal.code,
        detail = refusal.detail.as_deref().unwrap_or(""),
        "authentication refused"
    );
}

/// An identity for a record: `service ai-agent (issuer …, client …, jti …)`, or the key's.
pub fn describe(identity: &Identity) -> String {
    let mut out = String::new();
    if let Some(kind) = identity.kind {
        out.push_str(kind.as_str());
        out.push(' ');
    }
    out.push_str(&identity.subject);
    let mut parts = Vec::new();
    if let Some(k) = &identity.key_id {
        parts.push(format!("key {k}"));
    }
    if let Some(i) = &identity.issuer {
        parts.push(format!("issuer {i}"));
    }
    if let Some(c) = &identity.client_id {
        parts.push(format!("client {c}"));
    }
    if let Some(j) = &identity.token_id {
        parts.push(format!("jti {j}"));
    }
    if !parts.is_empty() {
        out.push_str(" (");
        out.push_str(&parts.join(", "));
        out.push(')');
    }
    out
}

/// What a refused token claimed to be, read without trusting it: `; claimed (unverified): iss
/// "…", sub "…", client "…", jti "…"`, each quoted, escaped and cut short. Empty when the
/// payload cannot be read.
pub fn claimed(token: &str) -> String {
    let Some(payload) = token.split('.').nth(1) else {
        return String::new();
    };
    if payload.len() > tollgate_oidc::MAX_TOKEN_BYTES {
        return String::new();
    }
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return String::new();
    };
    let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice(&bytes) else {
        return String::new();
    };
    let mut parts = Vec::new();
    for (label, names) in [
        ("iss", &["iss"][..]),
        ("sub", &["sub"][..]),
        ("client", &["azp", "client_id"][..]),
        ("jti", &["jti"][..]),
    ] {
        if let Some(v) = names
            .iter()
            .find_map(|n| claims.get(*n).and_then(|v| v.as_str()))
        {
            parts.push(format!("{label} {}", quote(v)));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; claimed (unverified): {}", parts.join(", "))
    }
}

/// A string from an unverified token, for a record: quoted, escaped, at most 96 characters.
fn quote(s: &str) -> String {
    let mut out = String::from('"');
    for (n, c) in s.chars().enumerate() {
        if n == 96 {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

impl Keys {
    /// The connection, if it exists and the identity shares a group with it (before any
    /// just-in-time grant is considered).
    pub fn grantable(
        &self,
        identity: &Identity,
        connection: &str,
    ) -> Result<Arc<Connection>, Refusal> {
        let c = self.connections.get(connection).ok_or_else(|| {
            Refusal::new(
                RefusalCode::UnknownConnection,
                format!("connection \"{connection}\" does not exist (connect with dbname=<connection name>)"),
            )
        })?;
        if !shares_group(identity, c) {
            return Err(Refusal::new(
                RefusalCode::AccessDenied,
                format!(
                    "access to connection \"{connection}\" denied: {} shares no group with it",
                    identity.subject
                ),
            ));
        }
        Ok(Arc::clone(c))
    }

    fn check_grant(&self, identity: &Identity, c: &Connection, now: i64) -> Result<(), Refusal> {
        if c.grant.is_none() {
            return Ok(());
        }
        match self.grants.grant_until(&identity.subject, &c.name) {
            Some(until) if until > now => Ok(()),
            Some(until) => Err(Refusal::new(
                RefusalCode::AccessDenied,
                format!(
                    "the access grant of {} to connection \"{}\" ended at {}; ask again with `tollgate access request {} --for 1h --reason …`",
                    identity.subject,
                    c.name,
                    format_rfc3339(until),
                    c.name
                ),
            )),
            None => Err(Refusal::new(
                RefusalCode::AccessDenied,
                format!(
                    "connection \"{}\" needs an approved access grant: `tollgate access request {} --for 1h --reason …`",
                    c.name, c.name
                ),
            )),
        }
    }

    fn key_still_valid(&self, identity: &Identity) -> Result<(), Refusal> {
        let Some(id) = identity.key_id.as_deref() else {
            return Err(Refusal::new(
                RefusalCode::Revoked,
                "the session's key is unknown; connect again",
            ));
        };
        let now = now_micros();
        if let Some(at) = identity.expires_at
            && at <= now
        {
            return Err(Refusal::new(
                RefusalCode::Expired,
                format!("key {id} expired at {}", format_rfc3339(at)),
            ));
        }
        let cache = self
            .cache
            .read()
            .map_err(|_| Refusal::new(RefusalCode::Revoked, "key state unavailable"))?;
        match cache.by_id.get(id) {
            Some(record) => Self::check(record, now),
            None => Err(Refusal::new(
                RefusalCode::Revoked,
                format!("key {id} no longer exists"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RolesSection;
    use crate::notify::Notifier;
    use serde_json::json;

    const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";

    struct Fixture {
        dir: std::path::PathBuf,
        keys: Keys,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Keys over a fresh store, with a shared-secret issuer `ci` (leeway 0, subjects `ci:…`,
    /// every token a service) when `oidc`, and `ops` as an admin group.
    fn fixture(name: &str, oidc: bool) -> Fixture {
        let dir = std::env::temp_dir().join(format!("tollgate-keys-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("t.db")).unwrap();
        let book = Arc::new(ApprovalBook::load(store.clone(), Notifier::none()).unwrap());
        let config: OidcConfig = toml::from_str(
            "[[issuers]]\nissuer = \"ci\"\naudiences = [\"tollgate\"]\nhs_secret_env = \"CI_SECRET\"\nleeway_secs = 0\nsubject_prefix = \"ci:\"\nkind = \"service\"\n",
        )
        .unwrap();
        let verifier = Verifier::with_env(
            &config,
            &|name| (name == "CI_SECRET").then(|| SECRET.to_string()),
            Arc::new(tollgate_oidc::SystemClock),
        )
        .unwrap();
        let roles = Roles::new(&RolesSection {
            admin_groups: vec!["ops".into()],
            auditor_groups: vec!["audit".into()],
        });
        let keys = Keys::load(store, &[], book).unwrap().with_identity(
            oidc.then(|| Arc::new(verifier)),
            &config,
            roles,
        );
        Fixture { dir, keys }
    }

    fn hs256(claims: serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let tag = ring::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", b64(tag.as_ref()))
    }

    fn claims(sub: &str, jti: &str, ttl_secs: i64) -> serde_json::Value {
        let now = now_micros() / 1_000_000;
        json!({
            "iss": "ci", "aud": "tollgate", "sub": sub, "jti": jti,
            "iat": now, "exp": now + ttl_secs, "groups": ["ops", "eng"],
        })
    }

    #[tokio::test]
    async fn oidc_tokens_become_identities_expire_and_are_revoked() {
        let f = fixture("oidc", true);
        let keys = &f.keys;
        let token = hs256(claims("job-1", "j1", 60));
        let id = keys.authenticate(&token).await.unwrap();
        assert_eq!(id.subject, "ci:job-1");
        assert_eq!(id.via, AuthMethod::Oidc);
        assert_eq!(id.kind, Some(tollgate_core::IdentityKind::Service));
        assert_eq!(id.issuer.as_deref(), Some("ci"));
        assert_eq!(id.token_id.as_deref(), Some("j1"));
        assert!(id.admin, "ops is an admin group");
        assert_eq!(keys.role(&id), Role::Admin);
        assert_eq!(
            describe(&id),
            "service ci:job-1 (issuer ci, jti j1)".to_string()
        );
        assert!(keys.still_valid(&id, "anything").is_ok());

        // Past its expiry (leeway 0 for this issuer), the next command is refused.
        let exp = id.expires_at.unwrap();
        assert!(keys.token_still_valid(&id, exp - 1).is_ok());
        let r = keys.token_still_valid(&id, exp).unwrap_err();
        assert_eq!(r.code, RefusalCode::Expired);
        assert!(r.detail.unwrap().contains("ci:job-1"));

        // Revoking the jti refuses the live identity and a replay of the token.
        let admin = Identity::new("root", AuthMethod::ApiKey, vec![]);
        keys.revoke_token(RevocationKind::Jti, "j1", &admin, "leaked")
            .unwrap();
        let r = keys.still_valid(&id, "anything").unwrap_err();
        assert_eq!(
            (r.code, r.message.as_str()),
            (RefusalCode::Revoked, "authentication failed: token revoked")
        );
        let r = keys.authenticate(&token).await.unwrap_err();
        let detail = r.detail.unwrap();
        assert!(
            detail.contains("jti j1 revoked at") && detail.contains("by root (leaked)"),
            "{detail}"
        );

        // Revoking the subject refuses its tokens issued until then, not those issued after.
        let other = keys
            .authenticate(&hs256(claims("job-1", "j2", 60)))
            .await
            .unwrap();
        let r = keys
            .revoke_token(RevocationKind::Subject, "ci:job-1", &admin, "")
            .unwrap();
        assert!(keys.still_valid(&other, "x").is_err());
        let mut later = other.clone();
        later.issued_at = Some(r.revoked_at + 1_000_000);
        assert!(keys.check_revoked(&later).is_ok());
        let mut undated = other.clone();
        undated.issued_at = None;
        assert!(keys.check_revoked(&undated).is_err());
        // Another subject is not concerned.
        assert!(
            keys.authenticate(&hs256(claims("job-2", "j3", 60)))
                .await
                .is_ok()
        );
        assert!(
            keys.revoke_token(RevocationKind::Jti, " ", &admin, "")
                .is_err()
        );
        assert_eq!(keys.token_revocations().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn bad_tokens_tell_the_client_little_and_the_record_more() {
        let f = fixture("bad", true);
        let expired = hs256(claims("job", "j", -10));
        let r = f.keys.authenticate(&expired).await.unwrap_err();
        assert_eq!(r.code, RefusalCode::Expired);
        assert_eq!(r.message, "authentication failed: token expired");
        let detail = r.detail.unwrap();
        assert!(
            detail.contains("token expired at")
                && detail.contains("claimed (unverified): iss \"ci\", sub \"job\", jti \"j\""),
            "{detail}"
        );
        let unsigned = format!(
            "eyJhbGciOiJub25lIn0.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(claims("job", "j", 60).to_string())
        );
        let r = f.keys.authenticate(&unsigned).await.unwrap_err();
        assert_eq!(
            (r.code, r.message.as_str()),
            (
                RefusalCode::BadCredentials,
                "authentication failed: invalid token"
            )
        );
        assert!(r.detail.unwrap().contains("alg=none"));

        // Without issuers, a JWT is not accepted here; API keys are looked up as before.
        let none = fixture("no-oidc", false);
        let r = none
            .keys
            .authenticate(&hs256(claims("job", "j", 60)))
            .await
            .unwrap_err();
        assert_eq!(r.message, "authentication failed: token not accepted here");
        let r = none.keys.authenticate("tg_nope").await.unwrap_err();
        assert_eq!(r.message, "authentication failed: the key is not valid");
        // An API-key identity without a key id is refused, not passed.
        let keyless = Identity::new("x", AuthMethod::ApiKey, vec![]);
        assert!(none.keys.still_valid(&keyless, "c").is_err());
    }

    #[test]
    fn claimed_reads_a_token_without_trusting_it() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let long = "x".repeat(200);
        let token = format!(
            "h.{}.s",
            b64(&json!({"iss": "evil\n\u{1b}[31m", "sub": long, "client_id": "c"}).to_string())
        );
        let c = claimed(&token);
        assert!(
            c.starts_with("; claimed (unverified): iss \"evil\\n\\u{1b}[31m\""),
            "{c}"
        );
        assert!(c.contains(&format!("sub \"{}…\"", "x".repeat(96))), "{c}");
        assert!(c.ends_with("client \"c\""), "{c}");
        assert_eq!(claimed("no-dots"), "");
        assert_eq!(claimed("a.!!!.c"), "");
        assert_eq!(claimed(&format!("a.{}.c", b64("[1]"))), "");
    }
}
