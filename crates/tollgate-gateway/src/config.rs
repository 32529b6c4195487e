//! The TOML configuration: shape, defaults, validation with errors that name the file, the key
//! and what was expected. Credentials are only referenced (`password_env`, `password_file`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tollgate_audit::seal::MasterKey;
use tollgate_core::{Connection, GrantPolicy, Protocol, Secret, parse_duration};
use tollgate_pg::PgTarget;
use tollgate_policy::{Engine, PolicySpec, RuleSpec, compile_rules};

use crate::GatewayError;
use crate::masking::{ConnectionMasking, MaskingSection, MaskingSettings};
use crate::notify::{NotificationSpec, Webhook};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Where the store, keys and certificates live (the `--data-dir` flag wins).
    pub data_dir: Option<PathBuf>,
    /// Listener addresses.
    #[serde(default)]
    pub listen: ListenSection,
    /// TLS material for the listeners; generated in the data dir when absent.
    #[serde(default)]
    pub tls: TlsSection,
    /// PostgreSQL front settings.
    #[serde(default)]
    pub postgres: PostgresSection,
    /// Declared targets.
    #[serde(default)]
    pub connections: Vec<ConnectionSection>,
    /// Guardrail settings (default pack on or off, default rules left out).
    #[serde(default)]
    pub policy: PolicySpec,
    /// Guardrail rules, evaluated with the default pack.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Webhooks told about approval requests and decisions.
    #[serde(default)]
    pub notifications: Vec<NotificationSpec>,
    /// Masking of results (default pack on).
    #[serde(default)]
    pub masking: MaskingSection,
    /// Streaming export of the audit log (SIEM sinks).
    #[serde(default)]
    pub exports: Vec<crate::export::ExportSpec>,
    /// Encryption at rest: the master key (and, during a rotation, the previous one).
    pub encryption: Option<EncryptionSection>,
    /// OIDC issuers whose tokens are accepted beside API keys (`[[oidc.issuers]]`).
    #[serde(default)]
    pub oidc: tollgate_oidc::OidcConfig,
    /// Groups that carry the administrator and auditor roles.
    #[serde(default)]
    pub roles: RolesSection,
}

/// `[roles]`: which groups make an identity an administrator or an auditor. Groups are matched
/// after an issuer's `group_map`, and apply to API keys and OIDC tokens alike.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RolesSection {
    /// Members administer the gateway: configuration, keys, token revocation, every session.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Members read sessions, replays and the audit trail, and nothing else.
    #[serde(default)]
    pub auditor_groups: Vec<String>,
}

/// `[encryption]`: where the master key comes from. The key itself is never in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSection {
    /// Environment variable holding the master key (64 hex characters or base64 of 32 bytes).
    pub master_key_env: Option<String>,
    /// File holding the master key.
    pub master_key_file: Option<PathBuf>,
    /// Environment variable holding the previous master key, used only to unwrap during a
    /// rotation.
    pub previous_master_key_env: Option<String>,
    /// File holding the previous master key.
    pub previous_master_key_file: Option<PathBuf>,
}

/// The master keys of a validated `[encryption]` section.
#[derive(Debug, Clone)]
pub struct Encryption {
    /// The current key first, then the previous one.
    keys: Vec<MasterKey>,
}

impl Encryption {
    /// The current master key and, during a rotation, the previous one.
    pub fn new(current: MasterKey, previous: Option<MasterKey>) -> Self {
        Self {
            keys: std::iter::once(current).chain(previous).collect(),
        }
    }

    /// The master key that wraps everything written from now on.
    pub fn current(&self) -> &MasterKey {
        &self.keys[0]
    }

    /// The previous master key, only for unwrapping what it wrapped.
    pub fn previous(&self) -> Option<&MasterKey> {
        self.keys.get(1)
    }

    /// Every master key that may unwrap: the current one first.
    pub fn all(&self) -> &[MasterKey] {
        &self.keys
    }

    /// Validates `[encryption]`: exactly one source for the master key, at most one for the
    /// previous key, each readable and holding a key. `None` when the section is absent.
    fn from_section(
        section: Option<&EncryptionSection>,
        err: &dyn Fn(&str, String) -> GatewayError,
    ) -> Result<Option<Self>, GatewayError> {
        let Some(s) = section else {
            return Ok(None);
        };
        let read = |env: &Option<String>,
                    file: &Option<PathBuf>,
                    name: &str|
         -> Result<Option<MasterKey>, GatewayError> {
            let env_key = format!("encryption.{name}_env");
            let file_key = format!("encryption.{name}_file");
            match (env, file) {
                (Some(_), Some(_)) => Err(err(
                    &env_key,
                    format!("set {name}_env or {name}_file, not both"),
                )),
                (Some(var), None) => MasterKey::from_env(var)
                    .map(Some)
                    .map_err(|e| err(&env_key, e.to_string())),
                (None, Some(path)) => MasterKey::from_file(path)
                    .map(Some)
                    .map_err(|e| err(&file_key, e.to_string())),
                (None, None) => Ok(None),
            }
        };
        let current = read(&s.master_key_env, &s.master_key_file, "master_key")?;
        let previous = read(
            &s.previous_master_key_env,
            &s.previous_master_key_file,
            "previous_master_key",
        )?;
        match current {
            Some(current) => Ok(Some(Self::new(current, previous))),
            None if previous.is_some() => Err(err(
                "encryption.master_key_env",
                "a previous master key needs the current one: set master_key_env or master_key_file"
                    .into(),
            )),
            None => Err(err(
                "encryption",
                "set master_key_env or master_key_file (or remove the section)".into(),
            )),
        }
    }
}

/// `[listen]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// REST API address.
    #[serde(default = "default_api")]
    pub api: String,
    /// PostgreSQL front address.
    #[serde(default = "default_postgres")]
    pub postgres: String,
    /// SSH front address (default 127.0.0.1:2222). The SSH listener starts when this is set or
    /// a connection of kind `ssh` is declared.
    pub ssh: Option<String>,
}

impl Default for ListenSection {
    fn default() -> Self {
        Self {
            api: default_api(),
            postgres: default_postgres(),
            ssh: None,
        }
    }
}

fn default_api() -> String {
    "127.0.0.1:8009".into()
}
fn default_postgres() -> String {
    "127.0.0.1:15432".into()
}
fn default_ssh() -> String {
    "127.0.0.1:2222".into()
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
}

/// `[postgres]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// Refuse clients without TLS. Default: true unless the listener is on loopback.
    pub require_tls: Option<bool>,
    /// Largest frontend message accepted, in bytes (default 64 MiB; CopyData is streamed).
    pub max_message_bytes: Option<usize>,
    /// Time allowed to reach a target (default "10s").
    pub connect_timeout: Option<String>,
}

/// `[[connections]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSection {
    /// What clients ask for.
    pub name: String,
    /// Target kind: `postgres` or `ssh`.
    pub kind: String,
    /// Upstream URL, without password.
    pub url: String,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// SSH: file holding the OpenSSH private key the gateway signs in with.
    pub private_key_file: Option<PathBuf>,
    /// SSH: the target's pinned host key, an OpenSSH public key line (`ssh-ed25519 AAAA…`).
    pub host_key: Option<String>,
    /// SSH: a known_hosts file holding the target's host key.
    pub known_hosts: Option<PathBuf>,
    /// SSH: most output bytes of one channel recorded in the audit trail (default 16 MiB;
    /// what passes it is relayed and counted, not recorded).
    pub record_output_limit: Option<u64>,
    /// Groups allowed to use it.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Just-in-time access: sessions need an approved grant (`tollgate access request`).
    #[serde(default)]
    pub require_grant: bool,
    /// Groups whose members approve grants (default: administrators).
    #[serde(default)]
    pub grant_approvers: Vec<String>,
    /// Longest grant that may be requested (default "8h").
    pub max_grant: Option<String>,
    /// Mask results on this connection (default true; `[masking] enabled` must be on too).
    #[serde(default = "default_true")]
    pub masking: bool,
    /// Groups that see clear values on this connection.
    #[serde(default)]
    pub unmasked_groups: Vec<String>,
    /// `strict` (default): a command's audit event is durable before the command is forwarded,
    /// and a command that cannot be recorded is refused. `best-effort`: recorded after.
    pub audit: Option<String>,
    /// How long the events of this connection's ended sessions keep their payloads (e.g. "90d");
    /// after that a purge leaves only signed tombstones. Default: kept forever.
    pub retention: Option<String>,
    /// Legal hold: nothing of this connection is purged, whatever `retention` says.
    #[serde(default)]
    pub legal_hold: bool,
}

fn default_true() -> bool {
    true
}

/// Validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Source file, for messages.
    pub source: Option<PathBuf>,
    /// Data dir from the file.
    pub data_dir: Option<PathBuf>,
    /// API address.
    pub api_addr: SocketAddr,
    /// PostgreSQL front address.
    pub postgres_addr: SocketAddr,
    /// SSH front address, when the SSH listener runs.
    pub ssh_addr: Option<SocketAddr>,
    /// TLS files.
    pub tls: TlsSection,
    /// Whether the PostgreSQL front requires TLS.
    pub pg_require_tls: bool,
    /// PostgreSQL message cap.
    pub pg_max_message_bytes: usize,
    /// Target connect timeout.
    pub connect_timeout: Duration,
    /// Connections by declaration order.
    pub connections: Vec<Arc<Connection>>,
    /// The classifier and the compiled rules.
    pub policy: Arc<Engine>,
    /// Approval webhooks.
    pub webhooks: Vec<Webhook>,
    /// Masking settings.
    pub masking: MaskingSettings,
    /// Per-connection masking switches.
    pub connection_masking: std::collections::HashMap<String, ConnectionMasking>,
    /// Audit export sinks.
    pub exports: Vec<crate::export::Sink>,
    /// Retention periods of connections not under legal hold.
    pub retention: Vec<(String, Duration)>,
    /// Encryption at rest, when `[encryption]` is set: the master keys.
    pub encryption: Option<Encryption>,
    /// OIDC issuers (validated; shared secrets were readable).
    pub oidc: tollgate_oidc::OidcConfig,
    /// Role groups.
    pub roles: RolesSection,
    /// The web login (`[oidc.web]`), when configured.
    pub web_login: Option<crate::weblogin::WebLoginSettings>,
}

impl Config {
    /// Reads and validates a file; `None` gives the embedded defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, GatewayError> {
        let (file, source) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| GatewayError::Config {
                    file: p.display().to_string(),
                    message: format!("cannot read: {e}"),
                })?;
                (Self::parse_text(&text, p)?, Some(p.to_path_buf()))
            }
            None => (ConfigFile::default(), None),
        };
        Self::validate(file, source)
    }

    fn parse_text(text: &str, path: &Path) -> Result<ConfigFile, GatewayError> {
        toml::from_str(text).map_err(|e| GatewayError::Config {
            file: path.display().to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Reads only what offline tools need from a file: the `[encryption]` master keys (the whole
    /// file must parse, but connections and the rest are not validated, so their credentials
    /// need not be at hand).
    pub fn load_encryption(path: &Path) -> Result<Option<Encryption>, GatewayError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| GatewayError::Config {
            file: name.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let file = Self::parse_text(&text, path)?;
        Encryption::from_section(file.encryption.as_ref(), &|key: &str, message: String| {
            GatewayError::Config {
                file: name.clone(),
                message: format!("{key}: {message}"),
            }
        })
    }

    /// Parses config text (for tests and tooling).
    pub fn from_text(text: &str) -> Result<Self, GatewayError> {
        let file = Self::parse_text(text, Path::new("<inline>"))?;
        Self::validate(file, Some(PathBuf::from("<inline>")))
    }

    fn validate(file: ConfigFile, source: Option<PathBuf>) -> Result<Self, GatewayError> {
        let name = source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".into());
        let err = |key: &str, message: String| GatewayError::Config {
            file: name.clone(),
            message: format!("{key}: {message}"),
        };
        let addr = |key: &str, v: &str| {
            v.parse::<SocketAddr>().map_err(|_| {
                err(
                    key,
                    format!("expected an address like 127.0.0.1:8009, got {v:?}"),
                )
            })
        };
        let encryption = Encryption::from_section(file.encryption.as_ref(), &err)?;
        let api_addr = addr("listen.api", &file.listen.api)?;
        let postgres_addr = addr("listen.postgres", &file.listen.postgres)?;
        let ssh_addr = addr(
            "listen.ssh",
            file.listen.ssh.as_deref().unwrap_or(&default_ssh()),
        )?;
        let ssh_listen =
            file.listen.ssh.is_some() || file.connections.iter().any(|c| c.kind == "ssh");
        if file.tls.cert_file.is_some() != file.tls.key_file.is_some() {
            return Err(err(
                "tls",
                "set both cert_file and key_file, or neither".into(),
            ));
        }
        // Before the listener's own check, so that plain cookies off loopback name their key.
        let web_login = match &file.oidc.web {
            None => None,
            Some(web) => Some(
                crate::weblogin::WebLoginSettings::from_config(web, &file.oidc, api_addr, &|var| {
                    std::env::var(var).ok()
                })
                .map_err(|(key, message)| err(&key, message))?,
            ),
        };
        if !api_addr.ip().is_loopback() {
            return Err(err(
                "listen.api",
                format!(
                    "{api_addr} is not a loopback address; the REST API speaks plain HTTP and only listens on loopback (put a TLS-terminating proxy in front to expose it)"
                ),
            ));
        }
        let pg_max_message_bytes = file.postgres.max_message_bytes.unwrap_or(64 * 1024 * 1024);
        if !(1024..=1 << 30).contains(&pg_max_message_bytes) {
            return Err(err(
                "postgres.max_message_bytes",
                "expected a size between 1024 and 1073741824 bytes".into(),
            ));
        }
        let connect_timeout = match &file.postgres.connect_timeout {
            Some(t) => {
                parse_duration(t).map_err(|e| err("postgres.connect_timeout", e.to_string()))?
            }
            None => Duration::from_secs(10),
        };
        let mut seen = HashSet::new();
        let mut connections = Vec::new();
        let mut connection_masking = std::collections::HashMap::new();
        let mut retention = Vec::new();
        for (i, c) in file.connections.into_iter().enumerate() {
            let key = |k: &str| format!("connections[{i}].{k}");
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
            {
                return Err(err(
                    &key("name"),
                    format!(
                        "expected letters, digits, '-', '_' or '.', got {:?}",
                        c.name
                    ),
                ));
            }
            if !seen.insert(c.name.clone()) {
                return Err(err(&key("name"), format!("{:?} is declared twice", c.name)));
            }
            let protocol = match c.kind.as_str() {
                "postgres" => Protocol::Postgres,
                "ssh" => Protocol::Ssh,
                other => {
                    return Err(err(
                        &key("kind"),
                        format!("expected \"postgres\" or \"ssh\", got {other:?}"),
                    ));
                }
            };
            if protocol != Protocol::Ssh {
                for (set, name) in [
                    (c.private_key_file.is_some(), "private_key_file"),
                    (c.host_key.is_some(), "host_key"),
                    (c.known_hosts.is_some(), "known_hosts"),
                    (c.record_output_limit.is_some(), "record_output_limit"),
                ] {
                    if set {
                        return Err(err(
                            &key(name),
                            "is only for connections of kind \"ssh\"".into(),
                        ));
                    }
                }
            }
            let password = match (&c.password_env, &c.password_file) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        &key("password_env"),
                        "set password_env or password_file, not both".into(),
                    ));
                }
                (Some(var), None) => Some(Secret::new(std::env::var(var).map_err(|_| {
                    err(
                        &key("password_env"),
                        format!("environment variable {var} is not set"),
                    )
                })?)),
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        err(
                            &key("password_file"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                    Some(Secret::new(text.trim_end_matches(['\n', '\r']).to_string()))
                }
                (None, None) => None,
            };
            let ssh = match protocol {
                Protocol::Postgres => {
                    PgTarget::from_url(&c.url, password.clone())
                        .map_err(|e| err(&key("url"), e.to_string()))?;
                    None
                }
                Protocol::Ssh => {
                    let private_key = match &c.private_key_file {
                        Some(path) => {
                            Some(Secret::new(std::fs::read_to_string(path).map_err(|e| {
                                err(
                                    &key("private_key_file"),
                                    format!("cannot read {}: {e}", path.display()),
                                )
                            })?))
                        }
                        None => None,
                    };
                    let settings = tollgate_core::SshSettings {
                        private_key,
                        host_keys: c.host_key.iter().cloned().collect(),
                        known_hosts: c.known_hosts.clone(),
                        record_limit: c.record_output_limit,
                    };
                    tollgate_ssh::SshTarget::new(&c.url, password.clone(), &settings).map_err(
                        |(which, m)| {
                            use tollgate_ssh::TargetKey as K;
                            let name = match which {
                                K::Url => "url",
                                K::Credential if c.password_env.is_some() => "password_env",
                                K::Credential if c.password_file.is_some() => "password_file",
                                K::Credential | K::PrivateKey => "private_key_file",
                                K::HostKey => "host_key",
                                K::KnownHosts => "known_hosts",
                            };
                            err(&key(name), m)
                        },
                    )?;
                    Some(settings)
                }
            };
            if c.groups.iter().any(String::is_empty) {
                return Err(err(&key("groups"), "group names must not be empty".into()));
            }
            if !c.require_grant && (!c.grant_approvers.is_empty() || c.max_grant.is_some()) {
                return Err(err(
                    &key("grant_approvers"),
                    "grant_approvers and max_grant need require_grant = true".into(),
                ));
            }
            let grant = if c.require_grant {
                let max_secs = match &c.max_grant {
                    Some(t) => parse_duration(t)
                        .map_err(|e| err(&key("max_grant"), e.to_string()))?
                        .as_secs(),
                    None => 8 * 3600,
                };
                Some(GrantPolicy {
                    approvers: c.grant_approvers,
                    max_secs,
                })
            } else {
                None
            };
            let strict_audit = match c.audit.as_deref() {
                None | Some("strict") => true,
                Some("best-effort") => false,
                Some(other) => {
                    return Err(err(
                        &key("audit"),
                        format!("expected \"strict\" or \"best-effort\", got {other:?}"),
                    ));
                }
            };
            if let Some(r) = &c.retention {
                let period =
                    parse_duration(r).map_err(|e| err(&key("retention"), e.to_string()))?;
                if !c.legal_hold {
                    retention.push((c.name.clone(), period));
                }
            }
            connection_masking.insert(
                c.name.clone(),
                ConnectionMasking {
                    enabled: c.masking,
                    unmasked_groups: c.unmasked_groups,
                },
            );
            connections.push(Arc::new(Connection {
                name: c.name,
                protocol,
                url: c.url,
                password,
                groups: c.groups,
                grant,
                strict_audit,
                ssh,
            }));
        }
        let policy = Engine::new(compile_rules(&file.policy, &file.rules).map_err(|e| {
            GatewayError::Config {
                file: name.clone(),
                message: e.to_string(),
            }
        })?);
        let names: Vec<String> = connections.iter().map(|c| c.name.clone()).collect();
        let masking = MaskingSettings::from_section(file.masking, &names, &err)?;
        let mut sink_names = HashSet::new();
        let mut exports = Vec::new();
        for (i, spec) in file.exports.iter().enumerate() {
            let sink = crate::export::Sink::from_spec(spec)
                .map_err(|m| err(&format!("exports[{i}]"), m))?;
            if !sink_names.insert(sink.name.clone()) {
                return Err(err(
                    &format!("exports[{i}].name"),
                    format!("{:?} is declared twice", sink.name),
                ));
            }
            exports.push(sink);
        }
        file.oidc.validate().map_err(|e| GatewayError::Config {
            file: name.clone(),
            message: e.to_string(),
        })?;
        for (key, groups) in [
            ("roles.admin_groups", &file.roles.admin_groups),
            ("roles.auditor_groups", &file.roles.auditor_groups),
        ] {
            if let Some(g) = groups
                .iter()
                .find(|g| g.trim().is_empty() || g.len() > 256 || g.chars().any(char::is_control))
            {
                return Err(err(
                    key,
                    format!(
                        "{g:?}: group names must be 1 to 256 characters without control characters"
                    ),
                ));
            }
        }
        if let Some(g) = file
            .roles
            .auditor_groups
            .iter()
            .find(|g| file.roles.admin_groups.contains(g))
        {
            return Err(err(
                "roles.auditor_groups",
                format!("{g:?} is also in roles.admin_groups; a group carries one role"),
            ));
        }
        let webhooks = file
            .notifications
            .iter()
            .enumerate()
            .map(|(i, n)| Webhook::from_spec(n).map_err(|m| err(&format!("notifications[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            source,
            policy,
            webhooks,
            data_dir: file.data_dir,
            api_addr,
            postgres_addr,
            ssh_addr: ssh_listen.then_some(ssh_addr),
            pg_require_tls: file
                .postgres
                .require_tls
                .unwrap_or(!postgres_addr.ip().is_loopback()),
            tls: file.tls,
            pg_max_message_bytes,
            connect_timeout,
            connections,
            masking,
            connection_masking,
            exports,
            retention,
            encryption,
            oidc: file.oidc,
            roles: file.roles,
            web_login,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> String {
        match Config::from_text(text) {
            Ok(_) => String::from("ok"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_loopback() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.api_addr.to_string(), "127.0.0.1:8009");
        assert_eq!(c.postgres_addr.to_string(), "127.0.0.1:15432");
        assert!(!c.pg_require_tls);
        assert!(c.connections.is_empty());
    }

    #[test]
    fn errors_name_file_key_and_expectation() {
        let m = msg("[listen]\napi = \"nowhere\"\n");
        assert!(
            m.contains("<inline>") && m.contains("listen.api") && m.contains("expected an address"),
            "{m}"
        );
        let m = msg("[listen]\nbogus = 1\n");
        assert!(m.contains("unknown field") && m.contains("bogus"), "{m}");
        let m =
            msg("[[connections]]\nname = \"a\"\nkind = \"mongo\"\nurl = \"postgres://u@h/d\"\n");
        assert!(
            m.contains("connections[0].kind") && m.contains("postgres"),
            "{m}"
        );
        let m = msg(
            "[[connections]]\nname = \"a\"\nkind = \"postgres\"\nurl = \"postgres://u:pw@h/d\"\n",
        );
        assert!(
            m.contains("connections[0].url") && m.contains("must not contain a password"),
            "{m}"
        );
        assert!(!m.contains("pw@"), "{m}");
        let m = msg(
            "[[connections]]\nname = \"a\"\nkind = \"postgres\"\nurl = \"postgres://u@h/d\"\npassword_env = \"TOLLGATE_TEST_SURELY_UNSET\"\n",
        );
        assert!(
            m.contains("connections[0].password_env") && m.contains("is not set"),
            "{m}"
        );
        let m = msg(
            "[[connections]]\nname = \"a\"\nkind = \"postgres\"\nurl = \"postgres://u@h/d\"\n[[connections]]\nname = \"a\"\nkind = \"postgres\"\nurl = \"postgres://u@h/d\"\n",
        );
        assert!(
            m.contains("connections[1].name") && m.contains("twice"),
            "{m}"
        );
        let m = msg("[postgres]\nconnect_timeout = \"soon\"\n");
        assert!(m.contains("postgres.connect_timeout"), "{m}");
        let m = msg("[listen]\napi = \"0.0.0.0:8009\"\n");
        assert!(m.contains("listen.api") && m.contains("loopback"), "{m}");
        let m = msg(
            "[[connections]]\nname = \"a b\"\nkind = \"postgres\"\nurl = \"postgres://u@h/d\"\n",
        );
        assert!(m.contains("connections[0].name"), "{m}");
        let m = msg(
            "[[connections]]\nname = \"a\"\nkind = \"postgres\"\nurl = \"postgres://u@h/d?sslmode=verify-full\"\n",
        );
        assert!(m.contains("sslmode"), "{m}");
    }

    #[test]
    fn rules_are_validated_with_their_position() {
        let m = msg("[[rules]]\nname = \"x\"\naction = \"explode\"\nkinds = [\"ddl\"]\n");
        assert!(
            m.contains("<inline>")
                && m.contains("rules[0]")
                && m.contains("\"x\"")
                && m.contains("action"),
            "{m}"
        );
        let m = msg("[[rules]]\nname = \"x\"\naction = \"deny\"\nstatements = [\"drop_tables\"]\n");
        assert!(
            m.contains("drop_tables") && m.contains("drop_table,"),
            "{m}"
        );
        let m = msg("[[rules]]\nname = \"x\"\naction = \"deny\"\nkinds = [\"ddl\"]\ncolour = 1\n");
        assert!(m.contains("unknown field") && m.contains("colour"), "{m}");
        let m = msg("[policy]\ndisable = [\"nope\"]\n");
        assert!(
            m.contains("policy.disable") && m.contains("deny-drop"),
            "{m}"
        );
        assert_eq!(msg("[policy]\ndefault_rules = false\n"), "ok");
        let m = msg("[[notifications]]\nname = \"n\"\nformat = \"teams\"\nurl = \"http://x\"\n");
        assert!(
            m.contains("notifications[0]") && m.contains("format"),
            "{m}"
        );
        let m = msg("[[notifications]]\nname = \"n\"\nurl = \"ftp://x\"\n");
        assert!(m.contains("notifications[0]") && m.contains("http"), "{m}");
        let m = msg("[[notifications]]\nname = \"n\"\nurl_env = \"TOLLGATE_TEST_SURELY_UNSET\"\n");
        assert!(m.contains("url_env") && m.contains("not set"), "{m}");
        let m =
            msg("[[notifications]]\nname = \"n\"\nurl = \"http://x\"\nevents = [\"everything\"]\n");
        assert!(
            m.contains("events") && m.contains("approval_requested"),
            "{m}"
        );
    }

    #[test]
    fn encryption_takes_one_master_key_and_an_optional_previous_one() {
        let pid = std::process::id();
        let current = format!("TOLLGATE_TEST_MASTER_{pid}");
        let previous = format!("TOLLGATE_TEST_PREVIOUS_{pid}");
        let bad = format!("TOLLGATE_TEST_BAD_MASTER_{pid}");
        // SAFETY of the process environment: these variables are only used by this test.
        unsafe {
            std::env::set_var(&current, "11".repeat(32));
            std::env::set_var(&previous, "22".repeat(32));
            std::env::set_var(&bad, "hunter2-is-no-key");
        }
        let dir = std::env::temp_dir().join(format!("tollgate-config-enc-{pid}"));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("master.key");
        std::fs::write(&key_file, format!("{}\n", "33".repeat(32))).unwrap();
        let id = |hex: &str| MasterKey::parse(&hex.repeat(32)).unwrap().id();

        assert!(Config::load(None).unwrap().encryption.is_none());
        let c =
            Config::from_text(&format!("[encryption]\nmaster_key_env = \"{current}\"\n")).unwrap();
        let e = c.encryption.unwrap();
        assert_eq!(e.current().id(), id("11"));
        assert!(e.previous().is_none());
        assert_eq!(e.all().len(), 1);
        let c = Config::from_text(&format!(
            "[encryption]\nmaster_key_file = {:?}\nprevious_master_key_env = \"{previous}\"\n",
            key_file.display().to_string()
        ))
        .unwrap();
        let e = c.encryption.unwrap();
        assert_eq!(e.current().id(), id("33"));
        assert_eq!(e.previous().unwrap().id(), id("22"));
        assert_eq!(
            e.all().iter().map(MasterKey::id).collect::<Vec<_>>(),
            [id("33"), id("22")]
        );
        // The secret never shows in the config's Debug.
        assert!(!format!("{e:?}").contains(&"33".repeat(8)));

        let m = msg(&format!(
            "[encryption]\nmaster_key_env = \"{current}\"\nmaster_key_file = \"/x\"\n"
        ));
        assert!(
            m.contains("<inline>")
                && m.contains("encryption.master_key_env")
                && m.contains("not both"),
            "{m}"
        );
        let m = msg("[encryption]\nmaster_key_env = \"TOLLGATE_TEST_SURELY_UNSET\"\n");
        assert!(
            m.contains("encryption.master_key_env") && m.contains("is not set"),
            "{m}"
        );
        let m = msg("[encryption]\nmaster_key_file = \"/nonexistent/tollgate/master.key\"\n");
        assert!(
            m.contains("encryption.master_key_file") && m.contains("cannot read"),
            "{m}"
        );
        let m = msg(&format!("[encryption]\nmaster_key_env = \"{bad}\"\n"));
        assert!(
            m.contains("encryption.master_key_env")
                && m.contains("expected 64 hex characters")
                && !m.contains("hunter2"),
            "{m}"
        );
        let m = msg(&format!(
            "[encryption]\nmaster_key_env = \"{current}\"\nprevious_master_key_env = \"{previous}\"\nprevious_master_key_file = \"/x\"\n"
        ));
        assert!(
            m.contains("encryption.previous_master_key_env") && m.contains("not both"),
            "{m}"
        );
        let m = msg(&format!(
            "[encryption]\nprevious_master_key_env = \"{previous}\"\n"
        ));
        assert!(
            m.contains("encryption.master_key_env") && m.contains("needs the current one"),
            "{m}"
        );
        let m = msg("[encryption]\n");
        assert!(m.contains("encryption: set master_key_env"), "{m}");
        let m = msg("[encryption]\nmaster_key = \"abc\"\n");
        assert!(
            m.contains("unknown field") && m.contains("master_key"),
            "{m}"
        );

        // Offline tools read the section alone: a connection's unset password does not matter.
        let path = dir.join("tollgate.toml");
        std::fs::write(
            &path,
            format!(
                "[encryption]\nmaster_key_env = \"{current}\"\n[[connections]]\nname = \"a\"\nkind = \"postgres\"\nurl = \"postgres://u@h/d\"\npassword_env = \"TOLLGATE_TEST_SURELY_UNSET\"\n"
            ),
        )
        .unwrap();
        assert!(Config::load(Some(&path)).is_err());
        let e = Config::load_encryption(&path).unwrap().unwrap();
        assert_eq!(e.current().id(), id("11"));
        std::fs::write(
            &path,
            "[encryption]\nmaster_key_env = \"TOLLGATE_TEST_SURELY_UNSET\"\n",
        )
        .unwrap();
        let m = Config::load_encryption(&path).unwrap_err().to_string();
        assert!(
            m.contains("tollgate.toml") && m.contains("encryption.master_key_env"),
            "{m}"
        );
        std::fs::write(&path, "").unwrap();
        assert!(Config::load_encryption(&path).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn oidc_and_roles_are_validated_naming_the_key() {
        let c = Config::from_text(
            "[[oidc.issuers]]\nissuer = \"https://idp.example.com\"\naudiences = [\"tollgate\"]\ngroup_map = { \"db-admins\" = [\"dba\"] }\n[roles]\nadmin_groups = [\"platform\"]\nauditor_groups = [\"audit\"]\n",
        )
        .unwrap();
        assert_eq!(c.oidc.issuers.len(), 1);
        assert_eq!(c.roles.admin_groups, ["platform"]);
        assert_eq!(c.roles.auditor_groups, ["audit"]);
        assert!(Config::load(None).unwrap().oidc.issuers.is_empty());

        let m = msg("[[oidc.issuers]]\nissuer = \"https://idp.example.com\"\n");
        assert!(
            m.contains("<inline>") && m.contains("oidc.issuers[0].audiences"),
            "{m}"
        );
        let m = msg("[[oidc.issuers]]\nissuer = \"http://idp.example.com\"\naudiences = [\"t\"]\n");
        assert!(
            m.contains("oidc.issuers[0].issuer") && m.contains("https"),
            "{m}"
        );
        let m = msg(
            "[[oidc.issuers]]\nissuer = \"https://a.example.com\"\naudiences = [\"t\"]\nleeway_secs = 9999\n",
        );
        assert!(m.contains("oidc.issuers[0].leeway_secs"), "{m}");
        let m = msg(
            "[[oidc.issuers]]\nissuer = \"https://a.example.com\"\naudiences = [\"t\"]\ncolour = 1\n",
        );
        assert!(m.contains("unknown field") && m.contains("colour"), "{m}");
        let m = msg(
            "[[oidc.issuers]]\nissuer = \"ci\"\naudiences = [\"t\"]\nhs_secret_env = \"TOLLGATE_TEST_SURELY_UNSET\"\n",
        );
        assert!(
            m.contains("oidc.issuers[0].hs_secret_env") && m.contains("TOLLGATE_TEST_SURELY_UNSET"),
            "{m}"
        );
        let m = msg("[roles]\nadmin_groups = [\"\"]\n");
        assert!(m.contains("roles.admin_groups"), "{m}");
        let m = msg("[roles]\nadmin_groups = [\"x\"]\nauditor_groups = [\"x\"]\n");
        assert!(
            m.contains("roles.auditor_groups") && m.contains("one role"),
            "{m}"
        );
        let m = msg("[roles]\nusers = [\"x\"]\n");
        assert!(m.contains("unknown field") && m.contains("users"), "{m}");
    }

    #[test]
    fn web_login_is_validated_naming_the_key() {
        let issuer = "[[oidc.issuers]]\nissuer = \"https://idp.example.com\"\naudiences = [\"tollgate\"]\nclient_ids = [\"tollgate-web\"]\n";
        let c = Config::from_text(&format!(
            "{issuer}[oidc.web]\nissuer = \"https://idp.example.com\"\nclient_id = \"tollgate-web\"\n"
        ))
        .unwrap();
        let w = c.web_login.unwrap();
        assert!(w.cookie_secure);
        assert!(Config::load(None).unwrap().web_login.is_none());
        let m = msg(&format!(
            "{issuer}[oidc.web]\nissuer = \"https://elsewhere\"\nclient_id = \"tollgate-web\"\n"
        ));
        assert!(
            m.contains("<inline>") && m.contains("oidc.web.issuer"),
            "{m}"
        );
        let m = msg(&format!(
            "{issuer}[oidc.web]\nissuer = \"https://idp.example.com\"\nclient_id = \"tollgate-web\"\ncolour = 1\n"
        ));
        assert!(m.contains("unknown field") && m.contains("colour"), "{m}");
        // Plain cookies with an API listener off loopback.
        let m = msg(&format!(
            "[listen]\napi = \"0.0.0.0:8009\"\n{issuer}[oidc.web]\nissuer = \"https://idp.example.com\"\nclient_id = \"tollgate-web\"\ncookie_secure = false\n"
        ));
        assert!(
            m.contains("oidc.web.cookie_secure") && m.contains("loopback"),
            "{m}"
        );
    }

    #[test]
    fn ssh_connections_are_validated_naming_the_key() {
        let dir = std::env::temp_dir().join(format!("tollgate-config-ssh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("id_ed25519");
        std::fs::write(&key, tollgate_ssh::generate_host_key().unwrap()).unwrap();
        let public = tollgate_ssh::public_line(
            &tollgate_ssh::parse_host_key(&std::fs::read(&key).unwrap()).unwrap(),
        );
        let key = key.display().to_string();
        let ok = format!(
            "[[connections]]\nname = \"box\"\nkind = \"ssh\"\nurl = \"ssh://root@127.0.0.1:22\"\nprivate_key_file = \"{key}\"\nhost_key = \"{public}\"\n"
        );
        let c = Config::from_text(&ok).unwrap();
        assert_eq!(c.connections[0].protocol, Protocol::Ssh);
        assert_eq!(c.ssh_addr.unwrap().to_string(), "127.0.0.1:2222");
        assert!(Config::load(None).unwrap().ssh_addr.is_none());
        let c = Config::from_text("[listen]\nssh = \"127.0.0.1:2022\"\n").unwrap();
        assert_eq!(c.ssh_addr.unwrap().to_string(), "127.0.0.1:2022");
        let m = msg("[listen]\nssh = \"port 22\"\n");
        assert!(m.contains("listen.ssh"), "{m}");

        let cases: Vec<(String, &[&str])> = vec![
            (
                format!("[[connections]]\nname = \"a\"\nkind = \"ssh\"\nurl = \"ssh://root@h\"\nprivate_key_file = \"{key}\"\n"),
                &["connections[0].host_key", "pinned"],
            ),
            (
                format!("[[connections]]\nname = \"a\"\nkind = \"ssh\"\nurl = \"ssh://root@h\"\nhost_key = \"{public}\"\n"),
                &["connections[0].private_key_file", "credential"],
            ),
            (
                format!("[[connections]]\nname = \"a\"\nkind = \"ssh\"\nurl = \"ssh://h:22\"\nprivate_key_file = \"{key}\"\nhost_key = \"{public}\"\n"),
                &["connections[0].url", "user"],
            ),
            (
                format!("[[connections]]\nname = \"a\"\nkind = \"ssh\"\nurl = \"ssh://root:pw@h\"\nprivate_key_file = \"{key}\"\nhost_key = \"{public}\"\n"),
                &["connections[0].url", "must not contain a password"],
            ),
            (
                format!("[[connections]]\nname = \"a\"\nkind = \"ssh\"\nurl = \"ssh://root@h\"\nprivate_key_file = \"{key}\"\nhost_key = \"ssh-ed25519 !!!\"\n"),
                &["connections[0].host_key", "OpenSSH public key"],
            ),
            (
                format!("[[connections]]\nname = \"a\"\nkind = \"ssh\"\nurl = \"ssh://root@h\"\nprivate_key_file = \"{key}\"\nknown_hosts = \"/nonexistent/known_hosts\"\n"),
                &["connections[0].known_hosts", "cannot read"],
            ),
            (
                format!("[[connections]]\nname = \"a\"\nkind = \"ssh\"\nurl = \"ssh://root@h\"\nprivate_key_file = \"/nonexistent/key\"\nhost_key = \"{public}\"\n"),
                &["connections[0].private_key_file", "cannot read"],
            ),
            (
                format!("[[connections]]\nname = \"a\"\nkind = \"ssh\"\nurl = \"ssh://root@h\"\nprivate_key_file = \"{key}\"\nknown_hosts = \"{key}\"\nhost_key = \"{public}\"\n"),
                &["connections[0].host_key", "not both"],
            ),
            (
                "[[connections]]\nname = \"a\"\nkind = \"postgres\"\nurl = \"postgres://u@h/d\"\nhost_key = \"x\"\n".to_string(),
                &["connections[0].host_key", "only for connections of kind"],
            ),
        ];
        for (text, needles) in cases {
            let m = msg(&text);
            for n in needles {
                assert!(m.contains("<inline>") && m.contains(n), "{n:?} not in {m}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn non_loopback_postgres_requires_tls_by_default() {
        let c = Config::from_text("[listen]\npostgres = \"0.0.0.0:15432\"\n").unwrap();
        assert!(c.pg_require_tls);
        let c = Config::from_text(
            "[listen]\npostgres = \"0.0.0.0:15432\"\n[postgres]\nrequire_tls = false\n",
        )
        .unwrap();
        assert!(!c.pg_require_tls);
    }
}
