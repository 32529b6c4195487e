//! Roles: what an identity may do on the REST API and whether it may open sessions.
//!
//! - **admin**: configuration, keys, token revocation, every session and the audit trail. An
//!   administrator key, or a member of a `[roles] admin_groups` group.
//! - **auditor**: reads sessions, their replays, the gateway's own audit stream, verification
//!   and exports; nothing else (no exec, no sessions to targets, no approvals, no keys). A
//!   member of a `[roles] auditor_groups` group (and not an administrator).
//! - **user**: everyone else: their own sessions, exec and connections through their groups,
//!   their access and approval requests. Approvers are users whose groups a rule names.
//!
//! Groups are matched after an issuer's `group_map`, so an IdP group can be mapped onto a role
//! group.

use serde::Serialize;
use tollgate_core::Identity;

use crate::config::RolesSection;

/// An identity's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Administers the gateway.
    Admin,
    /// Reads the record, nothing else.
    Auditor,
    /// Uses connections through their groups.
    User,
}

impl Role {
    /// `admin`, `auditor` or `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Auditor => "auditor",
            Self::User => "user",
        }
    }
}

/// The `[roles]` groups.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    admin_groups: Vec<String>,
    auditor_groups: Vec<String>,
}

impl Roles {
    /// From the validated configuration.
    pub fn new(section: &RolesSection) -> Self {
        Self {
            admin_groups: section.admin_groups.clone(),
            auditor_groups: section.auditor_groups.clone(),
        }
    }

    /// Whether these groups make an administrator.
    pub fn admin_by_groups(&self, groups: &[String]) -> bool {
        groups.iter().any(|g| self.admin_groups.contains(g))
    }

    /// The identity's role: admin when its key is an administrator key or a group says so
    /// (`identity.admin` is set at authentication), else auditor by group, else user.
    pub fn of(&self, identity: &Identity) -> Role {
        if identity.admin || self.admin_by_groups(&identity.groups) {
            Role::Admin
        } else if identity
            .groups
            .iter()
            .any(|g| self.auditor_groups.contains(g))
        {
            Role::Auditor
        } else {
            Role::User
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::AuthMethod;

    #[test]
    fn admin_wins_over_auditor_and_user_is_the_rest() {
        let roles = Roles::new(&RolesSection {
            admin_groups: vec!["platform".into()],
            auditor_groups: vec!["audit".into()],
        });
        let id = |groups: &[&str], admin| {
            let mut i = Identity::new(
                "x",
                AuthMethod::Oidc,
                groups.iter().map(|g| g.to_string()).collect(),
            );
            i.admin = admin;
            i
        };
        assert_eq!(roles.of(&id(&["eng"], false)), Role::User);
        assert_eq!(roles.of(&id(&[], false)), Role::User);
        assert_eq!(roles.of(&id(&["audit", "eng"], false)), Role::Auditor);
        assert_eq!(roles.of(&id(&["audit", "platform"], false)), Role::Admin);
        assert_eq!(roles.of(&id(&["audit"], true)), Role::Admin);
        assert!(roles.admin_by_groups(&["platform".into()]));
        assert!(!roles.admin_by_groups(&["audit".into()]));
        assert_eq!(Roles::default().of(&id(&["audit"], false)), Role::User);
    }
}
