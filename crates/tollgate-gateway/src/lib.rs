//! The gateway: reads the configuration, opens the store and key material, binds the
//! listeners, and wires identity, access, protocol fronts, recording and the REST API together.

pub mod api;
pub mod approvals;
pub mod audit;
pub mod config;
pub mod export;
pub mod keys;
pub mod masking;
pub mod material;
pub mod notify;
pub mod roles;
pub mod weblogin;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tollgate_core::Recorder;
use tollgate_pg::{PgFront, PgFrontConfig};
use tollgate_store::{EventWriter, Store};

pub use config::Config;
pub use keys::Keys;

/// Errors of the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is wrong.
    #[error("config {file}: {message}")]
    Config {
        /// The file.
        file: String,
        /// Key and what was expected.
        message: String,
    },
    /// The data dir cannot be used.
    #[error("data dir: {0}")]
    DataDir(String),
    /// Key material problem.
    #[error("crypto: {0}")]
    Crypto(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] tollgate_store::StoreError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A request was invalid.
    #[error("{0}")]
    Invalid(String),
    /// A lock was poisoned.
    #[error("internal state poisoned")]
    Poisoned,
}

/// Options of `tollgate up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Config file, if any.
    pub config: Option<PathBuf>,
    /// Data dir override.
    pub data_dir: Option<PathBuf>,
    /// Bootstrap admin key (`TOLLGATE_ADMIN_KEY`).
    pub admin_key: Option<String>,
}

/// A started gateway.
pub struct Gateway {
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Where PostgreSQL clients connect.
    pub postgres_addr: SocketAddr,
    /// Where SSH clients connect, when the SSH listener runs.
    pub ssh_addr: Option<SocketAddr>,
    /// The data dir in use.
    pub data_dir: PathBuf,
    /// The admin key generated on this start, to print once.
    pub generated_admin_key: Option<String>,
    shutdown_tx: watch::Sender<bool>,
    pg: Arc<PgFront>,
    ssh: Option<Arc<tollgate_ssh::SshFront>>,
    writer: Arc<EventWriter>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Loads everything and binds the listeners; serving starts at once in background tasks.
    pub async fn start(opts: UpOptions) -> Result<Self, GatewayError> {
        let config = Config::load(opts.config.as_deref())?;
        let data_dir = opts
            .data_dir
            .or_else(|| config.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(".tollgate"));
        material::ensure_data_dir(&data_dir)?;
        let encryption = config.encryption.as_ref();
        let signer = material::signing_key(&data_dir, encryption)?;
        let tls = material::tls_config(&data_dir, &config.tls, encryption)?;
        // With master keys, the writer seals every new audit payload and the readers (API,
        // export sinks) open sealed ones; without, a store holding sealed payloads is refused.
        let sealing = encryption
            .map(|e| tollgate_store::Sealing::new(e.current().clone(), e.previous().cloned()));
        let store = Store::open_sealed(&data_dir.join("tollgate.db"), sealing)?;
        let writer = Arc::new(store.event_writer(signer)?);
        // Every key that ever signed this log, for auditors to pin (the writer registered the
        // current one).
        material::write_public_keys(&data_dir, &store.audit_keys()?)?;
        let notifier = notify::Notifier::spawn(config.webhooks.clone());
        let approvals = Arc::new(approvals::ApprovalBook::load(store.clone(), notifier)?);
        let verifier = oidc_verifier(&config).await?;
        let keys = Arc::new(
            Keys::load(store.clone(), &config.connections, approvals.clone())?.with_identity(
                verifier.clone(),
                &config.oidc,
                roles::Roles::new(&config.roles),
            ),
        );
        let generated_admin_key = keys.bootstrap_admin(opts.admin_key.as_deref())?;

        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind { what, addr, source })
        };
        let pg_listener = bind("postgres", config.postgres_addr).await?;
        let api_listener = bind("api", config.api_addr).await?;
        let postgres_addr = local(&pg_listener, config.postgres_addr);
        let ssh_listener = match config.ssh_addr {
            Some(addr) => Some((
                bind("ssh", addr).await?,
                material::ssh_host_key(&data_dir, encryption)?,
            )),
            None => None,
        };
        let api_addr = local(&api_listener, config.api_addr);

        let masker = Arc::new(masking::MaskPolicy::new(
            config.masking.clone(),
            config.connection_masking.clone(),
            &data_dir,
            config.encryption.as_ref(),
        )?);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let recorder: Arc<dyn Recorder> = writer.clone();
        // The gateway's own stream: administrative acts, starting with this start.
        let admin_log = tollgate_core::SessionLog::new(
            format!("gateway-{}", tollgate_core::new_session_id(random_u64())),
            Arc::clone(&recorder),
        );
        let config_detail = match &config.source {
            Some(path) => {
                let digest = std::fs::read(path)
                    .map(|b| hex::encode(ring::digest::digest(&ring::digest::SHA256, &b)))
                    .unwrap_or_else(|_| "unreadable".into());
                format!("config {} (sha256 {digest})", path.display())
            }
            None => "embedded default config".into(),
        };
        admin_log.append(tollgate_core::EventKind::Admin {
            action: "gateway_started".into(),
            by: None,
            target: None,
            detail: format!(
                "tollgate {}; {config_detail}; {} connections; {} OIDC issuers; bootstrap admin key {}",
                env!("CARGO_PKG_VERSION"),
                config.connections.len(),
                config.oidc.issuers.len(),
                if generated_admin_key.is_some() {
                    "generated"
                } else {
                    "given or kept"
                }
            ),
        });
        let pg = PgFront::new(
            tollgate_pg::Services {
                gatekeeper: keys.clone(),
                recorder: Arc::clone(&recorder),
                policy: config.policy.clone(),
                approvals: approvals.clone(),
                masker: masker.clone(),
            },
            Some(tokio_rustls::TlsAcceptor::from(tls)),
            PgFrontConfig {
                require_tls: config.pg_require_tls,
                max_message_bytes: config.pg_max_message_bytes,
                connect_timeout: config.connect_timeout,
                ..PgFrontConfig::default()
            },
            shutdown_rx.clone(),
        );
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(Arc::clone(&pg).serve(pg_listener)));
        let mut ssh_addr = None;
        let ssh = match ssh_listener {
            Some((listener, host_key)) => {
                ssh_addr = listener.local_addr().ok();
                let front = tollgate_ssh::SshFront::new(
                    tollgate_ssh::Services {
                        gatekeeper: keys.clone(),
                        recorder: Arc::clone(&recorder),
                        policy: config.policy.clone(),
                        approvals: approvals.clone(),
                        masker: masker.clone(),
                    },
                    host_key,
                    tollgate_ssh::SshFrontConfig {
                        connect_timeout: config.connect_timeout,
                        ..tollgate_ssh::SshFrontConfig::default()
                    },
                    shutdown_rx.clone(),
                );
                tasks.push(tokio::spawn(Arc::clone(&front).serve(listener)));
                Some(front)
            }
            None => None,
        };
        for (connection, period) in config.retention.clone() {
            tasks.push(tokio::spawn(retention(
                Arc::clone(&writer),
                connection,
                period,
                shutdown_rx.clone(),
            )));
        }
        if let Some(v) = &verifier {
            tasks.push(tokio::spawn(refresh_keys(
                Arc::clone(v),
                shutdown_rx.clone(),
            )));
        }
        for sink in config.exports.clone() {
            tasks.push(tokio::spawn(export::run(
                sink,
                store.clone(),
                shutdown_rx.clone(),
            )));
        }
        let web = match config.web_login.clone() {
            None => None,
            Some(settings) => {
                let web = weblogin::WebLogin::new(settings, api_addr).map_err(|m| {
                    GatewayError::Config {
                        file: config
                            .source
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "<defaults>".into()),
                        message: format!("oidc.web: {m}"),
                    }
                })?;
                tracing::info!(
                    issuer = %web.settings.issuer,
                    client_id = %web.settings.client_id,
                    redirect_url = %web.redirect_url,
                    cookie = web.cookies.session_name(),
                    "web login enabled"
                );
                Some(Arc::new(web))
            }
        };
        let state = Arc::new(api::ApiState {
            keys,
            approvals,
            store,
            pg: Arc::clone(&pg),
            ssh: ssh.clone(),
            postgres_addr,
            audit: admin_log,
            data_dir: data_dir.clone(),
            web,
        });
        let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
        let mut api_shutdown = shutdown_rx;
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(api_listener, app)
                .with_graceful_shutdown(async move {
                    let _ = api_shutdown.wait_for(|v| *v).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "api server stopped");
            }
        }));
        Ok(Self {
            api_addr,
            postgres_addr,
            ssh_addr,
            data_dir,
            generated_admin_key,
            shutdown_tx,
            pg,
            ssh,
            writer,
            tasks,
        })
    }

    /// Ends every session with a clean protocol error, records their end, flushes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        if !self.pg.wait_idle(Duration::from_secs(10)).await {
            tracing::warn!(
                sessions = self.pg.active_sessions(),
                "sessions still open at shutdown"
            );
        }
        if let Some(ssh) = &self.ssh
            && !ssh.wait_idle(Duration::from_secs(10)).await
        {
            tracing::warn!(
                sessions = ssh.active_sessions(),
                "ssh sessions still open at shutdown"
            );
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = writer.flush() {
                tracing::error!(error = %e, "final flush of the event store failed");
            }
            writer.close();
        })
        .await;
    }
}

/// How often the OIDC key sets past their time to live are fetched again.
const KEY_REFRESH_EVERY: Duration = Duration::from_secs(30);

/// The OIDC verifier of `[[oidc.issuers]]`, its key sets fetched once. A provider that cannot
/// be reached now is a warning: its tokens are refused ("identity provider unavailable") until
/// a fetch succeeds, on use or by the periodic refresh.
async fn oidc_verifier(
    config: &Config,
) -> Result<Option<Arc<tollgate_oidc::Verifier>>, GatewayError> {
    if config.oidc.issuers.is_empty() {
        return Ok(None);
    }
    let verifier =
        tollgate_oidc::Verifier::new(&config.oidc).map_err(|e| GatewayError::Config {
            file: config
                .source
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<defaults>".into()),
            message: e.to_string(),
        })?;
    for e in verifier.refresh().await {
        tracing::warn!(
            error = %e,
            "OIDC provider unavailable at start; its tokens are refused until it answers"
        );
    }
    for status in verifier.key_status() {
        tracing::info!(
            issuer = %status.issuer,
            keys = status.keys,
            "OIDC issuer configured"
        );
    }
    Ok(Some(Arc::new(verifier)))
}

/// Keeps the OIDC key sets current: fetches the stale ones (within each issuer's rate limit)
/// every [`KEY_REFRESH_EVERY`], until shutdown.
async fn refresh_keys(verifier: Arc<tollgate_oidc::Verifier>, mut shutdown: watch::Receiver<bool>) {
    let refresh = async {
        loop {
            tokio::time::sleep(KEY_REFRESH_EVERY).await;
            // Failures are logged where they happen and keep the old keys.
            let failed = verifier.refresh_stale().await;
            if !failed.is_empty() {
                tracing::debug!(failures = failed.len(), "OIDC key refresh incomplete");
            }
        }
    };
    tokio::select! {
        _ = refresh => {}
        _ = shutdown.wait_for(|v| *v) => {}
    }
}

/// Purges, now and then, the payloads of a connection's sessions that ended longer than its
/// retention period ago.
async fn retention(
    writer: Arc<EventWriter>,
    connection: String,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = (period / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        let before = tollgate_core::now_micros() - period.as_micros() as i64;
        let w = Arc::clone(&writer);
        let name = connection.clone();
        match tokio::task::spawn_blocking(move || w.purge(&name, before)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::info!(connection = %connection, records = n, "retention purged payloads")
            }
            Ok(Err(e)) => {
                tracing::error!(connection = %connection, error = %e, "retention purge failed")
            }
            Err(e) => {
                tracing::error!(connection = %connection, error = %e, "retention purge stopped")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// 64 random bits.
fn random_u64() -> u64 {
    let mut raw = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).is_err() {
        return tollgate_core::now_micros() as u64;
    }
    u64::from_be_bytes(raw)
}

fn local(l: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
}
