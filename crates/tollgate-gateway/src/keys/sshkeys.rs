//! SSH public keys registered to an identity for `publickey` sign-in. A key registered by an
//! API key's holder signs in as that key (its groups and validity at each sign-in); one
//! registered by an OIDC identity signs in as a snapshot of it, which must expire (at the
//! token's expiry or within 12 hours) and falls with a revocation of its token or subject.

use std::time::Duration;

use tollgate_core::{AuthMethod, Identity, Refusal, RefusalCode, format_rfc3339, now_micros};
use tollgate_ssh::parse_user_key;
use tollgate_store::{SshKeyOwner, SshKeyRecord};

use super::{Keys, describe};
use crate::GatewayError;

/// Longest life of a key registered by an OIDC identity (its group snapshot).
pub const MAX_SNAPSHOT: Duration = Duration::from_secs(12 * 3600);

/// Why a registration or removal was refused.
#[derive(Debug)]
pub enum SshKeyError {
    /// The request is wrong (a malformed key, an unsupported type, a bad owner).
    Invalid(String),
    /// The key is registered already.
    Exists(String),
    /// No such key (of the caller's).
    NotFound(String),
    /// The store or state failed.
    Internal(GatewayError),
}

impl From<GatewayError> for SshKeyError {
    fn from(e: GatewayError) -> Self {
        Self::Internal(e)
    }
}

impl From<tollgate_store::StoreError> for SshKeyError {
    fn from(e: tollgate_store::StoreError) -> Self {
        Self::Internal(e.into())
    }
}

/// Whether `caller` owns the key: its API key, or its own identity (same subject and issuer).
pub fn owned_by(record: &SshKeyRecord, caller: &Identity) -> bool {
    match &record.owner {
        SshKeyOwner::ApiKey(id) => caller.key_id.as_deref() == Some(id.as_str()),
        SshKeyOwner::Identity(i) => {
            caller.via == AuthMethod::Oidc
                && i.subject == caller.subject
                && i.issuer == caller.issuer
        }
    }
}

impl Keys {
    /// Registers an SSH public key (one OpenSSH line) to the caller's own identity, or, with
    /// `for_key` (administrators; the API checks the role), to that API key.
    pub fn register_ssh_key(
        &self,
        caller: &Identity,
        for_key: Option<&str>,
        line: &str,
        name: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<SshKeyRecord, SshKeyError> {
        let key = parse_user_key(line).map_err(SshKeyError::Invalid)?;
        let name = name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(&key.comment)
            .to_string();
        if name.len() > 128 || name.chars().any(char::is_control) {
            return Err(SshKeyError::Invalid(
                "name must be at most 128 characters, without control characters".into(),
            ));
        }
        let now = now_micros();
        let asked = ttl.map(|t| now.saturating_add(t.as_micros() as i64));
        let api_key = match for_key {
            Some(id) => Some(id.to_string()),
            None if caller.via == AuthMethod::ApiKey => caller.key_id.clone(),
            None => None,
        };
        let (owner, subject, expires_at) = match api_key {
            Some(id) => {
                let record = {
                    let cache = self.cache.read().map_err(|_| GatewayError::Poisoned)?;
                    cache.by_id.get(&id).cloned()
                }
                .ok_or_else(|| SshKeyError::Invalid(format!("no key with id {id}")))?;
                Self::check(&record, now).map_err(|r| SshKeyError::Invalid(r.message))?;
                (SshKeyOwner::ApiKey(id), record.name.clone(), asked)
            }
            None => {
                let cap = now.saturating_add(MAX_SNAPSHOT.as_micros() as i64);
                let cap = caller.expires_at.map_or(cap, |exp| exp.min(cap));
                let expires = asked.map_or(cap, |a| a.min(cap));
                if expires <= now {
                    return Err(SshKeyError::Invalid(
                        "the caller's token expires now: sign in again first".into(),
                    ));
                }
                let mut snapshot = caller.clone();
                snapshot.admin = false;
                snapshot.expires_at = Some(expires);
                (
                    SshKeyOwner::Identity(snapshot),
                    caller.subject.clone(),
                    Some(expires),
                )
            }
        };
        let record = SshKeyRecord {
            fingerprint: key.fingerprint.clone(),
            public_key: key.line,
            name,
            subject,
            owner,
            created_at: now,
            expires_at,
        };
        if !self.store.insert_ssh_key(&record)? {
            return Err(SshKeyError::Exists(format!(
                "the key {} is registered already",
                key.fingerprint
            )));
        }
        Ok(record)
    }

    /// The SSH keys the caller may see: its own, or every one for `all`.
    pub fn ssh_keys(
        &self,
        caller: &Identity,
        all: bool,
    ) -> Result<Vec<SshKeyRecord>, GatewayError> {
        Ok(self
            .store
            .ssh_keys()?
            .into_iter()
            .filter(|k| all || owned_by(k, caller))
            .collect())
    }

    /// Removes one of the caller's SSH keys (any, for `all`).
    pub fn remove_ssh_key(
        &self,
        caller: &Identity,
        all: bool,
        fingerprint: &str,
    ) -> Result<SshKeyRecord, SshKeyError> {
        let not_found = || SshKeyError::NotFound(format!("no SSH key {fingerprint} of yours"));
        let record = self.store.ssh_key(fingerprint)?.ok_or_else(not_found)?;
        if !all && !owned_by(&record, caller) {
            return Err(not_found());
        }
        if !self.store.delete_ssh_key(fingerprint)? {
            return Err(not_found());
        }
        Ok(record)
    }

    /// The identity an SSH key signs in as (see [`tollgate_core::Gatekeeper::authenticate_ssh_key`]).
    pub(super) fn ssh_key_identity(&self, fingerprint: &str) -> Result<Identity, Refusal> {
        let bad = |detail: String| {
            Refusal::new(
                RefusalCode::BadCredentials,
                "authentication failed: the public key is not registered",
            )
            .with_detail(detail)
        };
        let record = self
            .store
            .ssh_key(fingerprint)
            .map_err(|e| bad(format!("SSH key {fingerprint}: {e}")))?
            .ok_or_else(|| bad(format!("SSH key {fingerprint} is not registered")))?;
        let now = now_micros();
        if let Some(at) = record.expires_at
            && at <= now
        {
            return Err(Refusal::new(
                RefusalCode::Expired,
                format!(
                    "the SSH key {fingerprint} expired at {}; register it again",
                    format_rfc3339(at)
                ),
            )
            .with_detail(format!("SSH key {fingerprint} of {}", record.subject)));
        }
        let whose = |r: Refusal| {
            let detail = format!(
                "SSH key {fingerprint} of {}: {}",
                record.subject,
                r.detail.clone().unwrap_or_else(|| r.message.clone())
            );
            r.with_detail(detail)
        };
        match &record.owner {
            SshKeyOwner::ApiKey(id) => {
                let key = {
                    let cache = self
                        .cache
                        .read()
                        .map_err(|_| Refusal::new(RefusalCode::Revoked, "key state unavailable"))?;
                    cache.by_id.get(id).cloned()
                }
                .ok_or_else(|| {
                    Refusal::new(RefusalCode::Revoked, format!("key {id} no longer exists"))
                })
                .map_err(whose)?;
                Self::check(&key, now).map_err(whose)?;
                let mut identity =
                    Identity::new(key.name.clone(), AuthMethod::ApiKey, key.groups.clone());
                identity.key_id = Some(key.id.clone());
                identity.admin = key.admin || self.roles.admin_by_groups(&key.groups);
                identity.expires_at = match (key.expires_at, record.expires_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                Ok(identity)
            }
            SshKeyOwner::Identity(snapshot) => {
                let mut identity = snapshot.clone();
                identity.expires_at = record.expires_at;
                identity.admin = self.roles.admin_by_groups(&identity.groups);
                self.check_revoked(&identity).map_err(|r| {
                    let detail = format!(
                        "SSH key {fingerprint} of {}: {}",
                        describe(&identity),
                        r.detail.clone().unwrap_or_default()
                    );
                    Refusal::new(
                        RefusalCode::Revoked,
                        "authentication failed: the public key's owner was revoked",
                    )
                    .with_detail(detail)
                })?;
                Ok(identity)
            }
        }
    }
}
