//! The client-facing PostgreSQL listener: TLS negotiation, startup, token authentication,
//! authorization, the upstream connection, then the relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tollgate_core::{
    Approvals, Channel, EventKind, Gatekeeper, Identity, LiveSessions, MaskDecision, Masker,
    Policy, Protocol, Recorder, Refusal, RefusalCode, Services, SessionInfo, SessionLog,
    TableColumn, new_session_id,
};

use crate::cancel::{CancelRegistry, CancelTarget};
use crate::codec::{self, Startup};
use crate::stream::{PgStream, read_message};
use crate::upstream::{self, PgTarget};
use crate::{PgError, relay, sqlstate_for};

/// Settings of the PostgreSQL front.
#[derive(Debug, Clone)]
pub struct PgFrontConfig {
    /// Refuse clients that do not negotiate TLS.
    pub require_tls: bool,
    /// Largest frontend message accepted (CopyData is streamed and exempt).
    pub max_message_bytes: usize,
    /// How long to wait for the target to accept a connection.
    pub connect_timeout: Duration,
    /// How long a client may take to finish startup and authentication.
    pub handshake_timeout: Duration,
}

impl Default for PgFrontConfig {
    fn default() -> Self {
        Self {
            require_tls: false,
            max_message_bytes: 64 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

/// The PostgreSQL front: shared by every session of the listener.
pub struct PgFront {
    pub(crate) gatekeeper: Arc<dyn Gatekeeper>,
    pub(crate) recorder: Arc<dyn Recorder>,
    pub(crate) policy: Arc<dyn Policy>,
    pub(crate) approvals: Arc<dyn Approvals>,
    pub(crate) masker: Arc<dyn Masker>,
    tls: Option<TlsAcceptor>,
    pub(crate) config: PgFrontConfig,
    cancels: CancelRegistry,
    pub(crate) shutdown: watch::Receiver<bool>,
    live: LiveSessions,
}

/// How a session came to the front.
pub(crate) enum Entry {
    /// A client that must present a token.
    Token,
    /// A caller the gateway already authenticated (the REST API).
    Preauthenticated(Identity),
}

impl PgFront {
    /// Builds the front. `shutdown` turning true ends every session with a clean error.
    pub fn new(
        services: Services,
        tls: Option<TlsAcceptor>,
        config: PgFrontConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let Services {
            gatekeeper,
            recorder,
            policy,
            approvals,
            masker,
        } = services;
        Arc::new(Self {
            gatekeeper,
            recorder,
            policy,
            approvals,
            masker,
            tls,
            config,
            cancels: CancelRegistry::default(),
            shutdown,
            live: LiveSessions::default(),
        })
    }

    /// Sessions in progress.
    pub fn active_sessions(&self) -> usize {
        self.live.count()
    }

    /// Waits until no session is left, or the timeout passes.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        self.live.wait_idle(timeout).await
    }

    /// Accepts clients until shutdown.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let front = Arc::clone(&self);
                        tokio::spawn(async move { front.handle_tcp(tcp, peer).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "postgres accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn handle_tcp(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let _guard = self.live.enter();
        let _ = tcp.set_nodelay(true);
        let mut log = SessionLog::new(new_session_id(random_u64()), Arc::clone(&self.recorder));
        let mut info = SessionInfo {
            identity: None,
            connection: String::new(),
            protocol: Protocol::Postgres,
            channel: Channel::Native,
            client_addr: peer.to_string(),
            tls: false,
            client_user: None,
            application: None,
            masking: None,
        };
        let mut stream = PgStream::Plain(tcp);
        let handshake = tokio::time::timeout(
            self.config.handshake_timeout,
            self.negotiate(&mut stream, &mut info),
        )
        .await
        .unwrap_or_else(|_| {
            Err(PgError::Refused(Refusal::new(
                RefusalCode::ProtocolViolation,
                "startup not completed in time",
            )))
        });
        let startup = match handshake {
            Ok(Some(startup)) => startup,
            Ok(None) => return, // cancel request handled, or client left before saying anything
            Err(e) => {
                self.refuse(&mut stream, &mut log, info, &e).await;
                return;
            }
        };
        self.session(stream, startup, info, log, Entry::Token).await;
    }

    /// TLS negotiation and the startup packet. `Ok(None)` when the connection needs nothing more.
    async fn negotiate(
        &self,
        stream: &mut PgStream,
        info: &mut SessionInfo,
    ) -> Result<Option<Startup>, PgError> {
        for _ in 0..4 {
            let len = match stream.read_i32().await {
                Ok(len) => len,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(PgError::Io(e)),
            };
            if !(8..=codec::MAX_STARTUP_BYTES as i32).contains(&len) {
                return Err(PgError::protocol(format!(
                    "invalid startup packet length {len}"
                )));
            }
            let mut body = vec![0u8; len as usize - 4];
            stream.read_exact(&mut body).await.map_err(PgError::Io)?;
            let code = codec::read_i32(&body, 0)?;
            match code {
                codec::SSL_REQUEST if len == 8 => {
                    let PgStream::Plain(_) = stream else {
                        return Err(PgError::protocol("SSLRequest inside TLS"));
                    };
                    let Some(acceptor) = &self.tls else {
                        stream.write_all(b"N").await.map_err(PgError::Io)?;
                        continue;
                    };
                    stream.write_all(b"S").await.map_err(PgError::Io)?;
                    let PgStream::Plain(tcp) =
                        std::mem::replace(stream, PgStream::Duplex(tokio::io::duplex(1).0))
                    else {
                        return Err(PgError::protocol("SSLRequest inside TLS"));
                    };
                    let tls = acceptor
                        .accept(tcp)
                        .await
                        .map_err(|e| PgError::Protocol(format!("TLS handshake failed: {e}")))?;
                    *stream = PgStream::ServerTls(Box::new(tls));
                    info.tls = true;
                }
                codec::GSSENC_REQUEST if len == 8 => {
                    stream.write_all(b"N").await.map_err(PgError::Io)?;
                }
                codec::CANCEL_REQUEST if len == 16 => {
                    let key = (codec::read_i32(&body, 4)?, codec::read_i32(&body, 8)?);
                    self.cancel(key).await;
                    return Ok(None);
                }
                v if v >> 16 == 3 => {
                    let startup = codec::parse_startup(&body[4..])?;
                    let minor = v & 0xffff;
                    let unknown: Vec<&str> = startup
                        .params
                        .iter()
                        .filter(|(k, _)| k.starts_with("_pq_."))
                        .map(|(k, _)| k.as_str())
                        .collect();
                    if minor > 0 || !unknown.is_empty() {
                        let mut out = BytesMut::new();
                        codec::negotiate_protocol_version(&mut out, &unknown);
                        stream.write_all(&out).await.map_err(PgError::Io)?;
                    }
                    return Ok(Some(startup));
                }
                other => {
                    return Err(PgError::protocol(format!(
                        "unsupported protocol version or request code {other}"
                    )));
                }
            }
        }
        Err(PgError::protocol("too many negotiation requests"))
    }

    async fn cancel(&self, key: (i32, i32)) {
        match self.cancels.lookup(key) {
            Some(target) => {
                if let Err(e) = upstream::send_cancel(target.addr, target.key).await {
                    tracing::warn!(error = %e, "cancel request not delivered");
                }
            }
            None => tracing::info!("cancel request with an unknown key ignored"),
        }
    }

    /// Records and reports a refusal, then lets the connection close.
    async fn refuse(
        &self,
        stream: &mut PgStream,
        log: &mut SessionLog,
        info: SessionInfo,
        err: &PgError,
    ) {
        let refusal = refusal_of(err, &info.connection);
        let mut out = BytesMut::new();
        codec::error_response(
            &mut out,
            "FATAL",
            sqlstate_for(refusal.code),
            &refusal.message,
        );
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
        log.append(EventKind::SessionStart(info));
        log.append(EventKind::Refusal(refusal.clone()));
        log.append(EventKind::SessionEnd {
            reason: format!("refused: {}", refusal.message),
        });
    }

    /// Serves a session over an arbitrary stream (used by the REST API for `exec`).
    pub(crate) async fn serve_stream(
        self: Arc<Self>,
        mut stream: PgStream,
        peer: String,
        identity: Identity,
    ) {
        let _guard = self.live.enter();
        let mut log = SessionLog::new(new_session_id(random_u64()), Arc::clone(&self.recorder));
        let info = SessionInfo {
            identity: None,
            connection: String::new(),
            protocol: Protocol::Postgres,
            channel: Channel::Api,
            client_addr: peer,
            tls: false,
            client_user: None,
            application: None,
            masking: None,
        };
        let mut len = [0u8; 4];
        let startup = async {
            stream.read_exact(&mut len).await.map_err(PgError::Io)?;
            let len = i32::from_be_bytes(len);
            if !(8..=codec::MAX_STARTUP_BYTES as i32).contains(&len) {
                return Err(PgError::protocol("invalid startup packet"));
            }
            let mut body = vec![0u8; len as usize - 4];
            stream.read_exact(&mut body).await.map_err(PgError::Io)?;
            codec::parse_startup(&body[4..])
        }
        .await;
        match startup {
            Ok(startup) => {
                self.session(
                    stream,
                    startup,
                    info,
                    log,
                    Entry::Preauthenticated(identity),
                )
                .await
            }
            Err(e) => self.refuse(&mut stream, &mut log, info, &e).await,
        }
    }

    async fn session(
        &self,
        mut stream: PgStream,
        startup: Startup,
        mut info: SessionInfo,
        mut log: SessionLog,
        entry: Entry,
    ) {
        info.connection = startup
            .get("database")
            .or_else(|| startup.get("user"))
            .unwrap_or_default()
            .to_string();
        info.client_user = startup.get("user").map(str::to_string);
        info.application = startup.get("application_name").map(str::to_string);
        if self.config.require_tls && !info.tls && matches!(entry, Entry::Token) {
            let err = PgError::Refused(Refusal::new(
                RefusalCode::TlsRequired,
                "this listener requires TLS: connect with sslmode=require",
            ));
            self.refuse(&mut stream, &mut log, info, &err).await;
            return;
        }
        let identity = match entry {
            Entry::Preauthenticated(identity) => identity,
            Entry::Token => match self.authenticate(&mut stream).await {
                Ok(identity) => identity,
                Err(e) => {
                    self.refuse(&mut stream, &mut log, info, &e).await;
                    return;
                }
            },
        };
        info.identity = Some(identity.clone());
        let connection = match self.gatekeeper.authorize(&identity, &info.connection) {
            Ok(c) => c,
            Err(refusal) => {
                self.refuse(&mut stream, &mut log, info, &PgError::Refused(refusal))
                    .await;
                return;
            }
        };
        let upstream = async {
            let target = PgTarget::from_url(&connection.url, connection.password.clone())?;
            upstream::connect(
                &target,
                &startup.params,
                self.config.connect_timeout,
                self.config.max_message_bytes,
            )
            .await
        }
        .await;
        let mut up = match upstream {
            Ok(up) => up,
            Err(e) => {
                tracing::warn!(connection = %info.connection, error = %e, "target unavailable");
                self.refuse(&mut stream, &mut log, info, &e).await;
                return;
            }
        };
        let key = self.cancels.register(CancelTarget {
            addr: up.addr,
            key: up.key,
        });
        let mut hello = BytesMut::with_capacity(up.greeting.len() + 64);
        codec::auth_request(&mut hello, 0, &[]);
        hello.put_slice(&up.greeting);
        codec::backend_key_data(&mut hello, key.0, key.1);
        hello.put_slice(&up.ready);
        let masking = match self.masker.session(&identity, &info.connection) {
            MaskDecision::Clear(reason) => {
                info.masking = Some(format!("off: {reason}"));
                None
            }
            MaskDecision::Masked(mask) => {
                let sources = match resolve_columns(
                    &mut up.stream,
                    mask.table_columns(),
                    &self.config,
                )
                .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(connection = %info.connection, error = %e, "masking rules could not be resolved");
                        let err = PgError::Refused(Refusal::new(
                            RefusalCode::UpstreamUnavailable,
                            format!(
                                "connection \"{}\": the masking rules' table columns could not be resolved on the target: {e}",
                                info.connection
                            ),
                        ));
                        self.cancels.unregister(key);
                        self.refuse(&mut stream, &mut log, info, &err).await;
                        return;
                    }
                };
                info.masking = Some("on".into());
                Some(crate::masking::Masking::new(mask, sources))
            }
        };
        let connection_name = info.connection.clone();
        let strict_audit = connection.strict_audit;
        log.append(EventKind::SessionStart(info));
        let reason = match stream.write_all(&hello).await {
            Ok(()) => {
                relay::run(
                    self,
                    stream,
                    up.stream,
                    relay::SessionTerms {
                        identity: &identity,
                        connection: &connection_name,
                        masking,
                        strict_audit,
                    },
                    &mut log,
                )
                .await
            }
            Err(e) => format!("client disconnected: {e}"),
        };
        self.cancels.unregister(key);
        log.append(EventKind::SessionEnd { reason });
    }

    async fn authenticate(&self, stream: &mut PgStream) -> Result<Identity, PgError> {
        let mut out = BytesMut::new();
        codec::auth_request(&mut out, 3, &[]);
        stream.write_all(&out).await.map_err(PgError::Io)?;
        let mut buf = BytesMut::new();
        let (tag, body) = read_message(stream, &mut buf, codec::MAX_STARTUP_BYTES)
            .await?
            .ok_or_else(|| {
                PgError::protocol("client closed the connection before sending a password")
            })?;
        if tag != b'p' {
            return Err(PgError::protocol(format!(
                "expected a password message, got {:?}",
                tag as char
            )));
        }
        let token = codec::Reader::new(&body).cstr()?;
        self.gatekeeper
            .authenticate(token)
            .await
            .map_err(PgError::Refused)
    }
}

/// Resolves the `table.column` entries of masking rules to (table oid, column number) on the
/// session's own connection, before the client's first message. Column 0 stands for a whole
/// table (`table.*`). Tables that do not exist resolve to nothing.
async fn resolve_columns(
    stream: &mut PgStream,
    columns: &[TableColumn],
    config: &PgFrontConfig,
) -> Result<std::collections::HashMap<(u32, i16), usize>, PgError> {
    let mut sources = std::collections::HashMap::new();
    if columns.is_empty() {
        return Ok(sources);
    }
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut parts = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let relation = match &c.schema {
            Some(schema) => format!(
                "to_regclass(format('%I.%I', {}, {}))",
                literal(schema),
                literal(&c.table)
            ),
            None => format!("to_regclass(format('%I', {}))", literal(&c.table)),
        };
        parts.push(if c.column == "*" {
            format!("SELECT {i}, {relation}::oid, 0::int2 WHERE {relation} IS NOT NULL")
        } else {
            format!(
                "SELECT {i}, a.attrelid::oid, a.attnum FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = {relation} AND a.attname = {} AND NOT a.attisdropped",
                literal(&c.column)
            )
        });
    }
    let sql = parts.join(" UNION ALL ");
    let rows = tokio::time::timeout(
        config.connect_timeout,
        upstream::simple_query(stream, &sql, config.max_message_bytes),
    )
    .await
    .map_err(|_| PgError::UpstreamUnavailable("catalog lookup timed out".into()))??;
    for row in rows {
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let (Ok(index), Ok(oid), Ok(attnum)) = (
            field(0).parse::<usize>(),
            field(1).parse::<u32>(),
            field(2).parse::<i16>(),
        ) else {
            continue;
        };
        sources.insert((oid, attnum), index);
    }
    Ok(sources)
}

/// The refusal a failed handshake amounts to.
fn refusal_of(err: &PgError, connection: &str) -> Refusal {
    match err {
        PgError::Refused(r) => r.clone(),
        PgError::Protocol(m) => Refusal::new(
            RefusalCode::ProtocolViolation,
            format!("protocol violation: {m}"),
        ),
        PgError::Io(e) => Refusal::new(
            RefusalCode::ProtocolViolation,
            format!("client i/o error: {e}"),
        ),
        PgError::Config(m) => Refusal::new(
            RefusalCode::UpstreamUnavailable,
            format!("connection \"{connection}\" is misconfigured: {m}"),
        ),
        PgError::UpstreamUnavailable(m) => Refusal::new(
            RefusalCode::UpstreamUnavailable,
            format!("connection \"{connection}\": target unavailable: {m}"),
        ),
        PgError::UpstreamAuth(m) => Refusal::new(
            RefusalCode::UpstreamUnavailable,
            format!(
                "connection \"{connection}\": the target did not accept the gateway's credential: {m}"
            ),
        ),
        PgError::Target { code, message } => Refusal::new(
            RefusalCode::UpstreamUnavailable,
            format!(
                "connection \"{connection}\": the target refused the session: {message} (SQLSTATE {code})"
            ),
        ),
    }
}

/// 64 random bits (session ids).
pub(crate) fn random_u64() -> u64 {
    let mut raw = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).is_err() {
        return tollgate_core::now_micros() as u64;
    }
    u64::from_be_bytes(raw)
}
