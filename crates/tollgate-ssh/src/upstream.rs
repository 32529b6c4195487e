//! The gateway's own SSH session to a target: the pinned host key is checked before the
//! gateway's credential is offered.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::ssh_key::{HashAlg, PrivateKey, PublicKey};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tollgate_core::{Secret, SshSettings};

use crate::SshError;

/// How the gateway signs in to the target.
#[derive(Clone)]
enum Credential {
    Password(Secret),
    Key(Arc<PrivateKey>),
}

/// A validated SSH target: address, user, credential and pinned host keys.
#[derive(Clone)]
pub struct SshTarget {
    host: String,
    port: u16,
    user: String,
    credential: Credential,
    host_keys: Vec<PublicKey>,
    known_hosts: Option<PathBuf>,
}

impl std::fmt::Debug for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Which setting an error is about, for configuration messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKey {
    /// `url`.
    Url,
    /// `password_env` / `password_file` / `private_key_file`.
    Credential,
    /// `private_key_file`.
    PrivateKey,
    /// `host_key`.
    HostKey,
    /// `known_hosts`.
    KnownHosts,
}

impl SshTarget {
    /// Validates a target: `ssh://user@host[:port]`, exactly one credential (a password or an
    /// OpenSSH private key) and a pinned host key (a key line or a known_hosts file).
    pub fn new(
        url: &str,
        password: Option<Secret>,
        settings: &SshSettings,
    ) -> Result<Self, (TargetKey, String)> {
        let parsed = url::Url::parse(url).map_err(|e| {
            (
                TargetKey::Url,
                format!("expected ssh://user@host:port, got {url:?} ({e})"),
            )
        })?;
        if parsed.scheme() != "ssh" {
            return Err((
                TargetKey::Url,
                format!("expected an ssh:// URL, got scheme {:?}", parsed.scheme()),
            ));
        }
        if parsed.password().is_some() {
            return Err((
                TargetKey::Url,
                "must not contain a password: use password_env, password_file or private_key_file"
                    .into(),
            ));
        }
        let user = parsed.username().to_string();
        if user.is_empty() {
            return Err((
                TargetKey::Url,
                "expected a user name: ssh://user@host:port".into(),
            ));
        }
        let host = match parsed.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err((TargetKey::Url, "expected a host name".into())),
        };
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err((
                TargetKey::Url,
                "expected no path or query: ssh://user@host:port".into(),
            ));
        }
        let port = parsed.port().unwrap_or(22);
        let credential = match (password, &settings.private_key) {
            (Some(_), Some(_)) => {
                return Err((
                    TargetKey::Credential,
                    "set a password (password_env or password_file) or private_key_file, not both"
                        .into(),
                ));
            }
            (Some(p), None) => Credential::Password(p),
            (None, Some(k)) => {
                let key = russh::keys::decode_secret_key(k.expose(), None).map_err(|e| {
                    (
                        TargetKey::PrivateKey,
                        format!(
                            "expected an unencrypted OpenSSH private key (Ed25519 or ECDSA): {e}"
                        ),
                    )
                })?;
                Credential::Key(Arc::new(key))
            }
            (None, None) => {
                return Err((
                    TargetKey::Credential,
                    "an SSH connection needs a credential: set private_key_file, password_env or password_file"
                        .into(),
                ));
            }
        };
        let host_keys = settings
            .host_keys
            .iter()
            .map(|line| {
                PublicKey::from_openssh(line.trim()).map_err(|e| {
                    (
                        TargetKey::HostKey,
                        format!(
                            "expected an OpenSSH public key line like \"ssh-ed25519 AAAA…\": {e}"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        match (&host_keys.is_empty(), &settings.known_hosts) {
            (true, None) => {
                return Err((
                    TargetKey::HostKey,
                    "the target's host key must be pinned: set host_key = \"ssh-ed25519 AAAA…\" or known_hosts = \"path\""
                        .into(),
                ));
            }
            (false, Some(_)) => {
                return Err((
                    TargetKey::HostKey,
                    "set host_key or known_hosts, not both".into(),
                ));
            }
            (true, Some(path)) => {
                std::fs::metadata(path).map_err(|e| {
                    (
                        TargetKey::KnownHosts,
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
            }
            (false, None) => {}
        }
        Ok(Self {
            host,
            port,
            user,
            credential,
            host_keys,
            known_hosts: settings.known_hosts.clone(),
        })
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether a host key presented by the target is the pinned one. `Err` explains a mismatch.
    fn check_host_key(&self, key: &PublicKey) -> Result<(), String> {
        let shown = || {
            format!(
                "{} {}",
                key.algorithm().as_str(),
                key.fingerprint(HashAlg::Sha256)
            )
        };
        if let Some(path) = &self.known_hosts {
            return match russh::keys::check_known_hosts_path(&self.host, self.port, key, path) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!(
                    "the target's host key ({}) is not in {}",
                    shown(),
                    path.display()
                )),
                Err(e) => Err(format!(
                    "the target's host key ({}) does not match {}: {e}",
                    shown(),
                    path.display()
                )),
            };
        }
        if self
            .host_keys
            .iter()
            .any(|pinned| pinned.key_data() == key.key_data())
        {
            Ok(())
        } else {
            Err(format!(
                "the target's host key ({}) does not match the pinned host_key ({})",
                shown(),
                self.host_keys
                    .iter()
                    .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    /// Opens the gateway's session to the target and signs in.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<Upstream, SshError> {
        let mismatch = Arc::new(Mutex::new(None));
        let handler = Checker {
            target: self.clone(),
            mismatch: Arc::clone(&mismatch),
        };
        let config = Arc::new(client::Config {
            preferred: crate::TARGET_CIPHERS.clone(),
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            ..client::Config::default()
        });
        let address = self.address();
        let connected = tokio::time::timeout(timeout, async {
            let tcp = tokio::net::TcpStream::connect(&address)
                .await
                .map_err(|e| SshError::Upstream(format!("cannot reach {address}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            client::connect_stream(config, tcp, handler)
                .await
                .map_err(|e| {
                    let pinned = mismatch.lock().ok().and_then(|mut m| m.take());
                    match pinned {
                        Some(m) => SshError::HostKey(m),
                        None => {
                            SshError::Upstream(format!("SSH handshake with {address} failed: {e}"))
                        }
                    }
                })
        })
        .await
        .map_err(|_| SshError::Upstream(format!("{address} did not answer in time")))?;
        let mut handle = connected?;
        let auth = match &self.credential {
            Credential::Password(p) => {
                handle
                    .authenticate_password(self.user.clone(), p.expose())
                    .await
            }
            Credential::Key(k) => {
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .ok()
                    .flatten()
                    .flatten();
                handle
                    .authenticate_publickey(
                        self.user.clone(),
                        PrivateKeyWithHashAlg::new(Arc::clone(k), hash),
                    )
                    .await
            }
        }
        .map_err(|e| SshError::Upstream(format!("signing in to {address} failed: {e}")))?;
        if !auth.success() {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "", "")
                .await;
            return Err(SshError::UpstreamAuth(format!(
                "{address} did not accept the gateway's credential for user {:?}",
                self.user
            )));
        }
        Ok(Upstream {
            handle: Arc::new(handle),
        })
    }
}

/// The gateway's signed-in session to a target.
#[derive(Clone)]
pub(crate) struct Upstream {
    pub(crate) handle: Arc<client::Handle<Checker>>,
}

impl Upstream {
    /// Ends the session to the target.
    pub(crate) async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "session ended", "")
            .await;
    }
}

/// The client-side handler: checks the target's host key against the pin.
pub(crate) struct Checker {
    target: SshTarget,
    mismatch: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.target.check_host_key(key),
            PublicKeyOrCertificate::Certificate(_) => Err(
                "the target presented a host certificate; only pinned host keys are supported"
                    .to_string(),
            ),
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(m) => {
                if let Ok(mut slot) = self.mismatch.lock() {
                    *slot = Some(m);
                }
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (Secret, PublicKey) {
        let text = crate::generate_host_key().unwrap();
        let private = crate::parse_host_key(&text).unwrap();
        (
            Secret::new(String::from_utf8(text).unwrap()),
            private.public_key().clone(),
        )
    }

    #[test]
    fn the_pinned_host_key_is_required_and_checked() {
        let (credential, _) = key();
        let (_, pinned) = key();
        let (_, other) = key();
        let settings = SshSettings {
            private_key: Some(credential.clone()),
            host_keys: vec![pinned.to_openssh().unwrap()],
            known_hosts: None,
            record_limit: None,
        };
        let target = SshTarget::new("ssh://deploy@10.0.0.5:2200", None, &settings).unwrap();
        assert_eq!(target.address(), "10.0.0.5:2200");
        assert!(target.check_host_key(&pinned).is_ok());
        let m = target.check_host_key(&other).unwrap_err();
        assert!(m.contains("does not match the pinned host_key"), "{m}");
        assert!(m.contains("SHA256:"), "{m}");

        let unpinned = SshSettings {
            host_keys: Vec::new(),
            ..settings.clone()
        };
        let (which, m) = SshTarget::new("ssh://deploy@h", None, &unpinned).unwrap_err();
        assert_eq!(which, TargetKey::HostKey);
        assert!(m.contains("pinned"), "{m}");
        let (which, _) =
            SshTarget::new("ssh://deploy@h", Some(Secret::new("pw")), &settings).unwrap_err();
        assert_eq!(which, TargetKey::Credential);
        let (which, _) = SshTarget::new("postgres://deploy@h", None, &settings).unwrap_err();
        assert_eq!(which, TargetKey::Url);
        let v6 = SshTarget::new("ssh://deploy@[::1]", None, &settings).unwrap();
        assert_eq!(v6.address(), "[::1]:22");
    }
}
