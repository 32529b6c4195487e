//! API keys as identities, and the access decision (a key may use a connection when they share
//! a group). Keys are stored hashed; a cache in memory answers the per-statement validity check.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use tollgate_core::{
    AuthMethod, Connection, Gatekeeper, Identity, Refusal, RefusalCode, format_rfc3339, now_micros,
};
use tollgate_store::{KeyRecord, Store};

use crate::GatewayError;
use crate::approvals::ApprovalBook;

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

/// Keys, connections and the decisions between them.
pub struct Keys {
    store: Store,
    grants: Arc<ApprovalBook>,
    cache: RwLock<Cache>,
    connections: HashMap<String, Arc<Connection>>,
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
        };
        keys.reload()?;
        Ok(keys)
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
    fn authenticate(&self, token: &str) -> Result<Identity, Refusal> {
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
        Ok(Identity {
            subject: record.name.clone(),
            via: AuthMethod::ApiKey,
            key_id: Some(record.id.clone()),
            groups: record.groups.clone(),
            admin: record.admin,
            expires_at: record.expires_at,
        })
    }

    fn authorize(&self, identity: &Identity, connection: &str) -> Result<Arc<Connection>, Refusal> {
        let c = self.grantable(identity, connection)?;
        self.check_grant(identity, &c, now_micros())?;
        Ok(c)
    }

    fn still_valid(&self, identity: &Identity, connection: &str) -> Result<(), Refusal> {
        self.key_still_valid(identity)?;
        match self.connections.get(connection) {
            Some(c) if c.grant.is_some() => self.check_grant(identity, c, now_micros()),
            _ => Ok(()),
        }
    }
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
            return Ok(());
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
