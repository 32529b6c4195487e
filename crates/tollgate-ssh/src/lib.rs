//! The SSH front of Tollgate.
//!
//! Clients run `ssh -p 2222 <connection>@<gateway>` and sign in with a Tollgate token (an API
//! key or an OIDC token) as the password or at the keyboard-interactive prompt. The gateway
//! checks the token and the caller's access to the connection, opens its own SSH session to the
//! target (with a key or password the caller never sees, against the target's pinned host key),
//! and relays session channels: `exec`, `shell` with a PTY, and subsystems such as `sftp`. Port
//! forwarding and agent forwarding are refused and recorded. Exec commands and the lines typed
//! in shells are checked by the policy first: refused (exit status 126) or held for approval.
//! Every session start, end, refusal and exec command goes to the audit trail.
//! `exec_command` runs one command for the REST API through the same front and relay.

mod exec;
mod forward;
mod front;
mod guard;
mod hostkey;
mod relay;
mod scp;
mod sftp;
mod terminal;
mod upstream;
mod userkey;

pub use exec::{SshExecLimits, SshExecResult, exec_command};
pub use front::{SshFront, SshFrontConfig};
pub use hostkey::{generate_host_key, parse_host_key, public_line};
#[doc(hidden)]
pub use sftp::fuzz_sftp;
#[doc(hidden)]
pub use terminal::fuzz_terminal;
pub use tollgate_core::Services;
pub use upstream::{SshTarget, TargetKey};
pub use userkey::{UserKey, parse_user_key};

/// The ciphers the listener offers: AES-GCM only. A client picks the first of its own list
/// that the server offers, and OpenSSH lists ChaCha20-Poly1305 and AES-CTR before AES-GCM; with
/// AES-NI, AES-GCM costs the gateway a fraction of either, and the gateway decrypts and
/// encrypts every byte twice (client side and target side).
static LISTENER_CIPHERS: std::sync::LazyLock<russh::Preferred> =
    std::sync::LazyLock::new(|| russh::Preferred {
        cipher: std::borrow::Cow::Borrowed(&[
            russh::cipher::AES_128_GCM,
            russh::cipher::AES_256_GCM,
        ]),
        ..russh::Preferred::default()
    });

/// The ciphers the gateway asks targets for, in order (the client's order decides): AES-GCM
/// first, then what OpenSSH servers without it offer.
static TARGET_CIPHERS: std::sync::LazyLock<russh::Preferred> =
    std::sync::LazyLock::new(|| russh::Preferred {
        cipher: std::borrow::Cow::Borrowed(&[
            russh::cipher::AES_128_GCM,
            russh::cipher::AES_256_GCM,
            russh::cipher::CHACHA20_POLY1305,
            russh::cipher::AES_256_CTR,
            russh::cipher::AES_128_CTR,
        ]),
        ..russh::Preferred::default()
    });

/// The gateway's SSH host key.
pub type HostKey = russh::keys::ssh_key::PrivateKey;

/// Errors of the SSH front.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// A connection's settings are wrong.
    #[error("{0}")]
    Config(String),
    /// The target could not be reached or the SSH handshake with it failed.
    #[error("{0}")]
    Upstream(String),
    /// The target's host key is not the pinned one.
    #[error("{0}")]
    HostKey(String),
    /// The target did not accept the gateway's credential.
    #[error("{0}")]
    UpstreamAuth(String),
    /// Key material problem.
    #[error("{0}")]
    Key(String),
    /// The session of an API command was refused before it started (no access, unknown
    /// connection, target unavailable); the refusal is recorded.
    #[error("{}", .0.message)]
    Refused(tollgate_core::Refusal),
    /// The in-process session of an API command failed.
    #[error("{0}")]
    Exec(String),
}
