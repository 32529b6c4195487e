//! Approvals: a request for one exact command (bound to the SHA-256 of its text and
//! parameters), decided by members of the rule's approver groups — never by the requester —
//! with an optional minimum number of approvals and an expiry. A granted approval releases the
//! identical command once.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use ring::digest;
use serde::{Deserialize, Serialize};
use tollgate_core::{
    ApprovalMode, ApprovalRequest, ApprovalState, Approvals, Connection, Identity, format_rfc3339,
    now_micros,
};
use tollgate_store::Store;

use crate::GatewayError;
use crate::notify::Notifier;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for approvers.
    Pending,
    /// Granted, not used yet.
    Approved,
    /// Refused.
    Denied,
    /// Nobody decided in time, or the approval was not used in time.
    Expired,
    /// Granted and used once.
    Used,
}

/// One approver's decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    /// Who decided.
    pub by: String,
    /// Approve or deny.
    pub approve: bool,
    /// Why.
    pub reason: String,
    /// When, µs since epoch.
    pub at: i64,
}

/// A stored approval request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    /// Id given to the client.
    pub id: String,
    /// Who asked.
    pub requester: String,
    /// Their key.
    pub requester_key: Option<String>,
    /// The session that asked.
    pub session: String,
    /// Connection.
    pub connection: String,
    /// Rule that requires it.
    pub rule: String,
    /// Exact statement.
    pub text: String,
    /// Its parameters.
    pub params: Vec<Option<String>>,
    /// Hex SHA-256 binding text and parameters.
    pub hash: String,
    /// Groups that may approve (empty: administrators).
    pub approvers: Vec<String>,
    /// Approvals needed.
    pub min_approvals: u32,
    /// ticket or hold.
    pub mode: ApprovalMode,
    /// Created, µs since epoch.
    pub created_at: i64,
    /// Valid until, µs since epoch.
    pub expires_at: i64,
    /// Current status.
    pub status: Status,
    /// Decisions so far.
    pub decisions: Vec<Decision>,
    /// When the approval was used.
    pub used_at: Option<i64>,
    /// For a just-in-time access request: the grant's length in seconds.
    #[serde(default)]
    pub access_secs: Option<u64>,
    /// For an approved access request: when the grant ends, µs since epoch.
    #[serde(default)]
    pub grant_until: Option<i64>,
}

impl Approval {
    /// JSON for the API.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "status": self.status,
            "requester": self.requester,
            "connection": self.connection,
            "rule": self.rule,
            "statement": self.text,
            "params": self.params,
            "sha256": self.hash,
            "approvers": self.approvers,
            "min_approvals": self.min_approvals,
            "approvals": self.decisions.iter().filter(|d| d.approve).count(),
            "mode": self.mode,
            "session": self.session,
            "created_at": format_rfc3339(self.created_at),
            "expires_at": format_rfc3339(self.expires_at),
            "used_at": self.used_at.map(format_rfc3339),
            "kind": if self.access_secs.is_some() { "access" } else { "statement" },
            "access_seconds": self.access_secs,
            "grant_until": self.grant_until.map(format_rfc3339),
            "decisions": self.decisions.iter().map(|d| serde_json::json!({
                "by": d.by, "approve": d.approve, "reason": d.reason, "at": format_rfc3339(d.at),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// No such request.
    #[error("no approval request {0}")]
    NotFound(String),
    /// The caller may not decide it.
    #[error("{0}")]
    Forbidden(String),
    /// It is no longer pending.
    #[error("{0}")]
    Conflict(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] GatewayError),
}

/// SHA-256 over the statement and its parameters, with lengths so that no two different
/// (text, params) pairs hash alike.
pub fn statement_hash(text: &str, params: &[Option<String>]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&(text.len() as u64).to_be_bytes());
    ctx.update(text.as_bytes());
    ctx.update(&(params.len() as u64).to_be_bytes());
    for p in params {
        match p {
            None => ctx.update(&[0]),
            Some(v) => {
                ctx.update(&[1]);
                ctx.update(&(v.len() as u64).to_be_bytes());
                ctx.update(v.as_bytes());
            }
        }
    }
    hex::encode(ctx.finish().as_ref())
}

/// The approvals book, in memory and in the store.
pub struct ApprovalBook {
    store: Store,
    items: Mutex<HashMap<String, Approval>>,
    notifier: Notifier,
    /// (subject, connection) → end of the latest approved access grant, µs since epoch.
    grants: RwLock<HashMap<(String, String), i64>>,
}

/// Name recorded as the rule of access requests.
pub const ACCESS_RULE: &str = "access-grant";

impl ApprovalBook {
    /// Loads stored requests.
    pub fn load(store: Store, notifier: Notifier) -> Result<Self, GatewayError> {
        let mut items = HashMap::new();
        let mut grants = HashMap::new();
        for body in store.approvals()? {
            let a: Approval = serde_json::from_str(&body)
                .map_err(|e| GatewayError::Invalid(format!("stored approval is corrupt: {e}")))?;
            if let Some(until) = a.grant_until {
                let e = grants
                    .entry((a.requester.clone(), a.connection.clone()))
                    .or_insert(until);
                *e = (*e).max(until);
            }
            items.insert(a.id.clone(), a);
        }
        Ok(Self {
            store,
            items: Mutex::new(items),
            notifier,
            grants: RwLock::new(grants),
        })
    }

    fn save(&self, a: &Approval) -> Result<(), GatewayError> {
        let body = serde_json::to_string(a).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        self.store.save_approval(&a.id, a.created_at, &body)?;
        Ok(())
    }

    fn expire(a: &mut Approval, now: i64) -> bool {
        if matches!(a.status, Status::Pending | Status::Approved) && a.expires_at <= now {
            a.status = Status::Expired;
            return true;
        }
        false
    }

    /// Requests visible to `viewer`: all for administrators; otherwise their own and those they
    /// may approve.
    pub fn list(&self, viewer: &Identity) -> Vec<Approval> {
        let now = now_micros();
        let Ok(mut items) = self.items.lock() else {
            return Vec::new();
        };
        let mut out: Vec<Approval> = items
            .values_mut()
            .map(|a| {
                if Self::expire(a, now) {
                    let _ = self.save(a);
                }
                a.clone()
            })
            .filter(|a| viewer.admin || a.requester == viewer.subject || may_approve(viewer, a))
            .collect();
        out.sort_by_key(|a| std::cmp::Reverse(a.created_at));
        out
    }

    /// One request, if the viewer may see it.
    pub fn get(&self, viewer: &Identity, id: &str) -> Option<Approval> {
        self.list(viewer).into_iter().find(|a| a.id == id)
    }

    /// Records an approver's decision.
    pub fn decide(
        &self,
        approver: &Identity,
        id: &str,
        approve: bool,
        reason: &str,
    ) -> Result<Approval, DecideError> {
        let now = now_micros();
        let mut items = self
            .items
            .lock()
            .map_err(|_| DecideError::Store(GatewayError::Poisoned))?;
        let a = items
            .get_mut(id)
            .ok_or_else(|| DecideError::NotFound(id.to_string()))?;
        if !approver.admin && a.requester != approver.subject && !may_approve(approver, a) {
            return Err(DecideError::NotFound(id.to_string()));
        }
        if a.requester == approver.subject
            || (a.requester_key.is_some() && a.requester_key == approver.key_id)
        {
            return Err(DecideError::Forbidden(
                "you cannot approve or deny your own request".into(),
            ));
        }
        if !may_approve(approver, a) {
            return Err(DecideError::Forbidden(if a.approvers.is_empty() {
                "only administrators may decide this request".into()
            } else {
                format!(
                    "only members of {} may decide this request",
                    a.approvers.join(", ")
                )
            }));
        }
        if Self::expire(a, now) {
            self.save(a)?;
        }
        if a.status != Status::Pending {
            return Err(DecideError::Conflict(format!(
                "request {id} is {}, not pending",
                serde_json::to_value(a.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )));
        }
        if a.decisions.iter().any(|d| d.by == approver.subject) {
            return Err(DecideError::Conflict(format!(
                "{} already decided request {id}",
                approver.subject
            )));
        }
        a.decisions.push(Decision {
            by: approver.subject.clone(),
            approve,
            reason: reason.to_string(),
            at: now,
        });
        if !approve {
            a.status = Status::Denied;
        } else if a.decisions.iter().filter(|d| d.approve).count() as u32 >= a.min_approvals {
            a.status = Status::Approved;
            if let Some(secs) = a.access_secs {
                let until = now.saturating_add((secs as i64).saturating_mul(1_000_000));
                a.grant_until = Some(until);
                a.expires_at = until;
                if let Ok(mut g) = self.grants.write() {
                    let e = g
                        .entry((a.requester.clone(), a.connection.clone()))
                        .or_insert(until);
                    *e = (*e).max(until);
                }
            }
        }
        self.save(a)?;
        if a.status != Status::Pending {
            self.notifier.approval("approval_decided", a);
        }
        Ok(a.clone())
    }

    /// Asks for just-in-time access to a connection for `secs` seconds.
    pub fn request_access(
        &self,
        requester: &Identity,
        connection: &Connection,
        secs: u64,
        reason: &str,
    ) -> Result<Approval, String> {
        let Some(policy) = &connection.grant else {
            return Err(format!(
                "connection \"{}\" does not require access grants",
                connection.name
            ));
        };
        if secs == 0 || secs > policy.max_secs {
            return Err(format!(
                "grants to \"{}\" last at most {}s",
                connection.name, policy.max_secs
            ));
        }
        if reason.trim().is_empty() || reason.len() > 2000 {
            return Err("give a reason (up to 2000 characters)".into());
        }
        let now = now_micros();
        let text = format!("access to {} for {secs}s: {reason}", connection.name);
        let a = Approval {
            id: new_id(),
            requester: requester.subject.clone(),
            requester_key: requester.key_id.clone(),
            session: String::new(),
            connection: connection.name.clone(),
            rule: ACCESS_RULE.into(),
            hash: statement_hash(&text, &[]),
            text,
            params: Vec::new(),
            approvers: policy.approvers.clone(),
            min_approvals: 1,
            mode: ApprovalMode::Ticket,
            created_at: now,
            expires_at: now.saturating_add(3_600_000_000),
            status: Status::Pending,
            decisions: Vec::new(),
            used_at: None,
            access_secs: Some(secs),
            grant_until: None,
        };
        self.save(&a).map_err(|e| e.to_string())?;
        self.notifier.approval("approval_requested", &a);
        if let Ok(mut items) = self.items.lock() {
            items.insert(a.id.clone(), a.clone());
        }
        Ok(a)
    }

    /// When the subject's access grant to the connection ends, if they have one.
    pub fn grant_until(&self, subject: &str, connection: &str) -> Option<i64> {
        self.grants.read().ok().and_then(|g| {
            g.get(&(subject.to_string(), connection.to_string()))
                .copied()
        })
    }

    fn state(a: &Approval) -> ApprovalState {
        match a.status {
            Status::Pending => ApprovalState::Pending { id: a.id.clone() },
            Status::Approved | Status::Used => ApprovalState::Approved { id: a.id.clone() },
            Status::Denied => ApprovalState::Denied {
                id: a.id.clone(),
                reason: a
                    .decisions
                    .iter()
                    .rev()
                    .find(|d| !d.approve)
                    .map(|d| format!("{}: {}", d.by, d.reason))
                    .unwrap_or_default(),
            },
            Status::Expired => ApprovalState::Expired { id: a.id.clone() },
        }
    }

    fn consume(&self, a: &mut Approval, now: i64) -> ApprovalState {
        a.status = Status::Used;
        a.used_at = Some(now);
        if let Err(e) = self.save(a) {
            tracing::error!(error = %e, "approval use not stored");
        }
        ApprovalState::Approved { id: a.id.clone() }
    }
}

fn may_approve(who: &Identity, a: &Approval) -> bool {
    if a.approvers.is_empty() {
        who.admin
    } else {
        a.approvers.iter().any(|g| who.groups.contains(g))
    }
}

fn new_id() -> String {
    let mut raw = [0u8; 6];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
    format!("apr_{}", hex::encode(raw))
}

impl Approvals for ApprovalBook {
    fn request(&self, req: &ApprovalRequest<'_>) -> ApprovalState {
        let now = now_micros();
        let hash = statement_hash(req.text, req.params);
        let Ok(mut items) = self.items.lock() else {
            return ApprovalState::Expired { id: String::new() };
        };
        let mut pending = None;
        let mut denied = None;
        for a in items.values_mut().filter(|a| {
            a.requester == req.requester.subject
                && a.connection == req.connection
                && a.hash == hash
                && a.rule == req.rule
        }) {
            if Self::expire(a, now) {
                let _ = self.save(a);
            }
            match a.status {
                Status::Approved => return self.consume(a, now),
                Status::Pending => pending = Some(a.id.clone()),
                // A denial stands until the request would have expired.
                Status::Denied if a.expires_at > now => denied = Some(Self::state(a)),
                _ => {}
            }
        }
        if let Some(id) = pending {
            return ApprovalState::Pending { id };
        }
        if let Some(state) = denied {
            return state;
        }
        let a = Approval {
            id: new_id(),
            requester: req.requester.subject.clone(),
            requester_key: req.requester.key_id.clone(),
            session: req.session.to_string(),
            connection: req.connection.to_string(),
            rule: req.rule.to_string(),
            text: req.shown_text.to_string(),
            params: req.shown_params.to_vec(),
            hash,
            approvers: req.terms.approvers.clone(),
            min_approvals: req.terms.min_approvals,
            mode: req.terms.mode,
            created_at: now,
            expires_at: now.saturating_add((req.terms.ttl_secs as i64).saturating_mul(1_000_000)),
            status: Status::Pending,
            decisions: Vec::new(),
            used_at: None,
            access_secs: None,
            grant_until: None,
        };
        if let Err(e) = self.save(&a) {
            tracing::error!(error = %e, "approval request not stored; refusing");
            return ApprovalState::Expired { id: String::new() };
        }
        tracing::info!(id = %a.id, rule = %a.rule, connection = %a.connection, requester = %a.requester, "approval requested");
        self.notifier.approval("approval_requested", &a);
        let state = ApprovalState::Pending { id: a.id.clone() };
        items.insert(a.id.clone(), a);
        state
    }

    fn poll(&self, id: &str) -> ApprovalState {
        let now = now_micros();
        let Ok(mut items) = self.items.lock() else {
            return ApprovalState::Expired { id: id.to_string() };
        };
        let Some(a) = items.get_mut(id) else {
            return ApprovalState::Expired { id: id.to_string() };
        };
        if Self::expire(a, now) {
            let _ = self.save(a);
        }
        match a.status {
            Status::Approved => self.consume(a, now),
            Status::Used => ApprovalState::Denied {
                id: id.to_string(),
                reason: "the approval was already used".into(),
            },
            _ => Self::state(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_binds_text_and_each_parameter() {
        let a = statement_hash("DELETE FROM t WHERE id = $1", &[Some("1".into())]);
        assert_ne!(
            a,
            statement_hash("DELETE FROM t WHERE id = $1", &[Some("999".into())])
        );
        assert_ne!(a, statement_hash("DELETE FROM t WHERE id = $1", &[None]));
        assert_ne!(
            statement_hash("a", &[Some("bc".into())]),
            statement_hash("ab", &[Some("c".into())])
        );
        assert_eq!(
            a,
            statement_hash("DELETE FROM t WHERE id = $1", &[Some("1".into())])
        );
    }
}
