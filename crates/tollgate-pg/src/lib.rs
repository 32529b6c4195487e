//! PostgreSQL for Tollgate: the client-facing front (TLS, startup, token auth), the upstream
//! connection with the credential the gateway holds, and the message relay that decodes each
//! command into a [`tollgate_core::Command`] and records it with its outcome.

pub mod cancel;
pub mod codec;
pub mod exec;
pub mod front;
mod masking;
mod relay;
pub mod scram;
pub mod stream;
pub mod upstream;

pub use cancel::CancelRegistry;
pub use exec::{ExecResult, exec_simple};
pub use front::{PgFront, PgFrontConfig};
pub use tollgate_core::Services;
pub use upstream::PgTarget;

use tollgate_core::{Refusal, RefusalCode};

/// Errors of the PostgreSQL path.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[source] std::io::Error),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A connection is misconfigured.
    #[error("configuration: {0}")]
    Config(String),
    /// The target cannot be reached.
    #[error("{0}")]
    UpstreamUnavailable(String),
    /// The target did not accept the gateway's credential, or asked for an unsupported method.
    #[error("{0}")]
    UpstreamAuth(String),
    /// The target reported an error.
    #[error("{message} (SQLSTATE {code})")]
    Target {
        /// SQLSTATE.
        code: String,
        /// Message.
        message: String,
    },
    /// The gateway refused the caller.
    #[error("{0}")]
    Refused(Refusal),
}

impl PgError {
    /// A protocol violation.
    pub fn protocol(msg: impl Into<String>) -> Self {
        Self::Protocol(msg.into())
    }
}

/// SQLSTATE sent to the client for a refusal.
pub fn sqlstate_for(code: RefusalCode) -> &'static str {
    match code {
        RefusalCode::BadCredentials | RefusalCode::Revoked | RefusalCode::Expired => "28P01",
        RefusalCode::UnknownConnection => "3D000",
        RefusalCode::AccessDenied | RefusalCode::AdminRequired | RefusalCode::Forbidden => "42501",
        RefusalCode::ProtocolViolation => "08P01",
        RefusalCode::TlsRequired => "28000",
        RefusalCode::UpstreamUnavailable => "08001",
        // cannot_connect_now: the identity provider is down; retrying later may work.
        RefusalCode::IdentityUnavailable => "57P03",
    }
}
