//! The client-facing SSH listener: token authentication, authorization, the upstream session,
//! then one relay per session channel.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::ssh_key::PrivateKey;
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, Disconnect, MethodKind, MethodSet};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tollgate_core::{
    Approvals, Channel as Via, Connection, EventKind, Gatekeeper, Identity, Policy, PolicyContext,
    Protocol, Recorder, Refusal, RefusalCode, SessionInfo, SessionLog, SshSettings, Verdict,
    new_session_id,
};

use tollgate_core::{
    DEFAULT_SSH_RECORD_LIMIT, LiveSessions, MaskDecision, Masker, Services, SessionMask,
};

use crate::upstream::{SshTarget, Upstream};
use crate::{SshError, forward, relay};

/// How often a running session's key or token and access grant are checked again.
const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// Settings of the SSH front.
#[derive(Debug, Clone)]
pub struct SshFrontConfig {
    /// How long to wait for the target to accept a connection and the gateway's credential.
    pub connect_timeout: Duration,
    /// How long a client may take to sign in.
    pub handshake_timeout: Duration,
}

impl Default for SshFrontConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(60),
        }
    }
}

/// The SSH front: shared by every session of the listener.
pub struct SshFront {
    pub(crate) gatekeeper: Arc<dyn Gatekeeper>,
    pub(crate) recorder: Arc<dyn Recorder>,
    pub(crate) policy: Arc<dyn Policy>,
    pub(crate) approvals: Arc<dyn Approvals>,
    pub(crate) masker: Arc<dyn Masker>,
    server: Arc<server::Config>,
    /// The configuration of in-process sessions (`exec` through the API), whose caller is
    /// signed in already: `none` is their only method. Never used for a network client.
    inproc: Arc<server::Config>,
    config: SshFrontConfig,
    shutdown: watch::Receiver<bool>,
    live: LiveSessions,
}

/// What a connection has come to, shared by its handler and its task.
pub(crate) struct ConnState {
    pub(crate) log: SessionLog,
    pub(crate) info: SessionInfo,
    /// The last reason a sign-in was refused, recorded if none succeeds.
    refusal: Option<Refusal>,
    /// The session start is recorded (the caller is in and the target answered).
    started: bool,
    /// The refusal session is recorded already.
    refused: bool,
    /// The refusal recorded, if the session was refused before it started.
    told: Option<Refusal>,
    pub(crate) upstream: Option<Upstream>,
    /// The relays of the session's channels, awaited before the session's end is recorded.
    relays: Vec<tokio::task::JoinHandle<()>>,
}

impl SshFront {
    /// Builds the front with its host key. `shutdown` turning true ends every session.
    pub fn new(
        services: Services,
        host_key: PrivateKey,
        config: SshFrontConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let server = server::Config {
            methods: MethodSet::from(
                &[
                    MethodKind::PublicKey,
                    MethodKind::Password,
                    MethodKind::KeyboardInteractive,
                ][..],
            ),
            auth_rejection_time: Duration::from_millis(500),
            auth_rejection_time_initial: Some(Duration::from_millis(0)),
            keys: vec![host_key.clone()],
            preferred: crate::LISTENER_CIPHERS.clone(),
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            max_auth_attempts: 6,
            nodelay: true,
            ..server::Config::default()
        };
        let inproc = server::Config {
            methods: MethodSet::from(&[MethodKind::None][..]),
            auth_rejection_time: Duration::from_millis(0),
            auth_rejection_time_initial: Some(Duration::from_millis(0)),
            keys: vec![host_key],
            inactivity_timeout: None,
            keepalive_interval: None,
            max_auth_attempts: 1,
            ..server::Config::default()
        };
        Arc::new(Self {
            gatekeeper: services.gatekeeper,
            recorder: services.recorder,
            policy: services.policy,
            approvals: services.approvals,
            masker: services.masker,
            server: Arc::new(server),
            inproc: Arc::new(inproc),
            config,
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
                        tracing::warn!(error = %e, "ssh accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn handle_tcp(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        self.handle_stream(tcp, peer.to_string(), None).await;
    }

    /// Runs one client connection on `stream`. `preset` is the identity of an in-process
    /// session (`exec` through the API, `crate::exec`): it signs in with `none`, and its
    /// channel is recorded as `api`. Returns the refusal recorded if the session was refused
    /// before it started.
    pub(crate) async fn handle_stream<S>(
        self: Arc<Self>,
        stream: S,
        peer: String,
        preset: Option<Identity>,
    ) -> Option<Refusal>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let _guard = self.live.enter();
        let (config, via) = match preset {
            Some(_) => (Arc::clone(&self.inproc), Via::Api),
            None => (Arc::clone(&self.server), Via::Native),
        };
        let state = Arc::new(Mutex::new(ConnState {
            log: SessionLog::new(new_session_id(random_u64()), Arc::clone(&self.recorder)),
            info: SessionInfo {
                identity: None,
                connection: String::new(),
                protocol: Protocol::Ssh,
                channel: via,
                client_addr: peer.clone(),
                tls: false,
                client_user: None,
                application: None,
                masking: None,
            },
            refusal: None,
            started: false,
            refused: false,
            told: None,
            upstream: None,
            relays: Vec::new(),
        }));
        let handler = Conn {
            front: Arc::clone(&self),
            state: Arc::clone(&state),
            preset: preset.is_some(),
            identity: preset,
            connection: None,
            mask: None,
        };
        let running = tokio::time::timeout(
            self.config.handshake_timeout,
            server::run_stream(config, stream, handler),
        )
        .await;
        let running = match running {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "ssh handshake failed");
                return None;
            }
            Err(_) => return None,
        };
        let handle = running.handle();
        let mut shutdown = self.shutdown.clone();
        let deadline = tokio::time::sleep(self.config.handshake_timeout);
        tokio::pin!(running);
        tokio::pin!(deadline);
        let mut armed = true;
        // The key or token, and any access grant, are checked again while the session runs.
        let mut recheck = tokio::time::interval(RECHECK_EVERY);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reason = loop {
            tokio::select! {
                _ = recheck.tick() => {
                    let Some(refusal) = self.revoked(&state) else {
                        continue;
                    };
                    tracing::info!(reason = %refusal.message, "ssh session ended: access no longer valid");
                    let message = refusal.message.clone();
                    lock(&state).log.append(EventKind::Refusal(refusal));
                    let _ = handle
                        .disconnect(Disconnect::ByApplication, message.clone(), String::new())
                        .await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut running).await;
                    break format!("refused: {message}");
                }
                ended = &mut running => break match ended {
                    Ok(()) => "client disconnected".to_string(),
                    Err(e) => format!("connection ended: {e}"),
                },
                () = async { let _ = shutdown.wait_for(|v| *v).await; } => {
                    let _ = handle
                        .disconnect(Disconnect::ByApplication, "the gateway is shutting down".into(), String::new())
                        .await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut running).await;
                    break "gateway shutdown".to_string();
                }
                () = &mut deadline, if armed => {
                    armed = false;
                    if !signing_in(&state) {
                        continue;
                    }
                    let _ = handle
                        .disconnect(Disconnect::ByApplication, "sign-in not completed in time".into(), String::new())
                        .await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut running).await;
                    let mut s = lock(&state);
                    if s.refusal.is_none() {
                        s.refusal = Some(Refusal::new(RefusalCode::ProtocolViolation, "sign-in not completed in time"));
                    }
                    break "sign-in not completed in time".to_string();
                }
            }
        };
        // The client is gone: end the target's side too, so every relay finishes; each
        // channel's command event comes before the session's end.
        let (relays, upstream) = {
            let mut s = lock(&state);
            (std::mem::take(&mut s.relays), s.upstream.take())
        };
        if let Some(up) = upstream {
            up.close().await;
        }
        for relay in relays {
            let aborter = relay.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), relay)
                .await
                .is_err()
            {
                aborter.abort();
            }
        }
        let mut s = lock(&state);
        if s.started {
            s.log.append(EventKind::SessionEnd { reason });
        } else if !s.refused
            && let Some(refusal) = s.refusal.take()
        {
            record_refusal(&mut s, refusal);
        }
        s.told.clone()
    }

    /// Why a started session's caller may no longer use its connection, if so.
    fn revoked(&self, state: &Mutex<ConnState>) -> Option<Refusal> {
        let (identity, connection) = {
            let s = lock(state);
            if !s.started {
                return None;
            }
            (s.info.identity.clone()?, s.info.connection.clone())
        };
        self.gatekeeper.still_valid(&identity, &connection).err()
    }

    async fn open_upstream(&self, connection: &Connection) -> Result<Upstream, Refusal> {
        let default = SshSettings::default();
        let settings = connection.ssh.as_ref().unwrap_or(&default);
        let target = SshTarget::new(&connection.url, connection.password.clone(), settings)
            .map_err(|(_, m)| {
                Refusal::new(
                    RefusalCode::UpstreamUnavailable,
                    format!("connection \"{}\" is misconfigured: {m}", connection.name),
                )
            })?;
        target
            .connect(self.config.connect_timeout)
            .await
            .map_err(|e| {
                let name = &connection.name;
                let message = match &e {
                    SshError::HostKey(m) => format!(
                        "connection \"{name}\": {m}; the session was refused (the target may have been replaced or intercepted)"
                    ),
                    SshError::UpstreamAuth(m) => format!(
                        "connection \"{name}\": the target did not accept the gateway's credential: {m}"
                    ),
                    other => format!("connection \"{name}\": target unavailable: {other}"),
                };
                Refusal::new(RefusalCode::UpstreamUnavailable, message)
            })
    }
}

/// Whether the connection is still signing in (neither started nor refused).
fn signing_in(state: &Mutex<ConnState>) -> bool {
    let s = lock(state);
    !s.started && !s.refused
}

/// Records a refused connection: its start, the refusal and its end.
fn record_refusal(s: &mut ConnState, refusal: Refusal) {
    s.refused = true;
    s.told = Some(refusal.clone());
    s.log.append(EventKind::SessionStart(s.info.clone()));
    s.log.append(EventKind::Refusal(refusal.clone()));
    s.log.append(EventKind::SessionEnd {
        reason: format!("refused: {}", refusal.message),
    });
}

pub(crate) fn lock(state: &Mutex<ConnState>) -> std::sync::MutexGuard<'_, ConnState> {
    match state.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// One client connection's handler.
struct Conn {
    front: Arc<SshFront>,
    state: Arc<Mutex<ConnState>>,
    /// An in-process session: `identity` was established before the stream existed.
    preset: bool,
    identity: Option<Identity>,
    connection: Option<Arc<Connection>>,
    /// The masking of the caller's terminal output, once signed in.
    mask: Option<Arc<dyn SessionMask>>,
}

impl Conn {
    async fn check_token(&mut self, user: &str, token: &str) -> Auth {
        if self.preset {
            return Auth::reject();
        }
        {
            let mut s = lock(&self.state);
            s.info.connection = user.to_string();
            s.info.client_user = Some(user.to_string());
        }
        match self.front.gatekeeper.authenticate(token).await {
            Ok(identity) => {
                self.identity = Some(identity);
                Auth::Accept
            }
            Err(refusal) => {
                tracing::info!(connection = %user, reason = %refusal.message, "ssh sign-in refused");
                lock(&self.state).refusal = Some(refusal);
                Auth::reject()
            }
        }
    }

    /// The identity a public key is registered to; a refusal is kept for the record.
    fn check_key(
        &mut self,
        user: &str,
        key: &russh::keys::ssh_key::PublicKey,
    ) -> Result<Identity, ()> {
        let fingerprint = crate::userkey::fingerprint(key);
        let mut s = lock(&self.state);
        s.info.connection = user.to_string();
        s.info.client_user = Some(user.to_string());
        match self.front.gatekeeper.authenticate_ssh_key(&fingerprint) {
            Ok(identity) => Ok(identity),
            Err(refusal) => {
                tracing::info!(connection = %user, reason = %refusal.message, "ssh public key refused");
                s.refusal = Some(refusal);
                Err(())
            }
        }
    }

    /// Records a refusal of something inside a running session (forwarding, agent).
    fn refuse_in_session(&self, refusal: Refusal) {
        let s = lock(&self.state);
        tracing::info!(connection = %s.info.connection, reason = %refusal.message, "ssh request refused");
        if s.started {
            s.log.append(EventKind::Refusal(refusal));
        }
    }
}

impl server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        let mut s = lock(&self.state);
        s.info.connection = user.to_string();
        // Only an in-process session (`handle_stream` with a preset identity, which no
        // listener calls) is signed in without a token.
        if self.preset && self.identity.is_some() {
            s.info.client_user = Some(user.to_string());
            return Ok(Auth::Accept);
        }
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self.check_token(user, password).await)
    }

    /// A key the client offers: accepted for a signature only when it is registered to an
    /// identity that may sign in now. A refused one is remembered like a wrong token (recorded
    /// if no other method succeeds); the client goes on to its next key or method.
    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.preset || !crate::userkey::supported(offer.algorithm) {
            return Ok(Auth::reject());
        }
        match self.check_key(user, offer.public_key) {
            Ok(_) => Ok(Auth::Accept),
            Err(()) => Ok(Auth::reject()),
        }
    }

    /// The client proved it holds the key: the identity it is registered to signs in (looked
    /// up again, so a revocation in between counts).
    async fn auth_publickey(
        &mut self,
        user: &str,
        key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.preset || !crate::userkey::supported(key.algorithm) {
            return Ok(Auth::reject());
        }
        match self.check_key(user, key.public_key) {
            Ok(identity) => {
                self.identity = Some(identity);
                Ok(Auth::Accept)
            }
            Err(()) => Ok(Auth::reject()),
        }
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let answer = response.and_then(|mut r| r.next());
        match answer {
            None => Ok(Auth::Partial {
                name: "Tollgate".into(),
                instructions: "Sign in with a Tollgate API key or OIDC token.".into(),
                prompts: vec![("Tollgate token: ".into(), false)].into(),
            }),
            Some(bytes) => {
                let token = String::from_utf8_lossy(&bytes).into_owned();
                Ok(self.check_token(user, token.trim()).await)
            }
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let Some(identity) = self.identity.clone() else {
            return Ok(());
        };
        let connection_name = {
            let mut s = lock(&self.state);
            s.info.identity = Some(identity.clone());
            s.info.application = Some(String::from_utf8_lossy(session.remote_sshid()).into_owned());
            s.refusal = None;
            s.info.connection.clone()
        };
        let opened = async {
            let connection = self
                .front
                .gatekeeper
                .authorize(&identity, &connection_name)?;
            if connection.protocol != Protocol::Ssh {
                return Err(Refusal::new(
                    RefusalCode::UnknownConnection,
                    format!("connection \"{connection_name}\" is not an SSH connection"),
                ));
            }
            let upstream = self.front.open_upstream(&connection).await?;
            Ok((connection, upstream))
        }
        .await;
        match opened {
            Ok((connection, upstream)) => {
                let mut s = lock(&self.state);
                match self.front.masker.session(&identity, &connection.name) {
                    MaskDecision::Masked(mask) => {
                        s.info.masking = Some("on".into());
                        self.mask = Some(mask);
                    }
                    MaskDecision::Clear(reason) => s.info.masking = Some(format!("off: {reason}")),
                }
                s.upstream = Some(upstream);
                s.started = true;
                s.log.append(EventKind::SessionStart(s.info.clone()));
                drop(s);
                self.connection = Some(connection);
            }
            Err(refusal) => {
                tracing::warn!(connection = %connection_name, reason = %refusal.message, "ssh session refused");
                let message = refusal.message.clone();
                record_refusal(&mut lock(&self.state), refusal);
                session.disconnect(Disconnect::ByApplication, &message, "")?;
            }
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (upstream, log, connection) = {
            let s = lock(&self.state);
            (s.upstream.clone(), s.log.clone(), s.info.connection.clone())
        };
        let (Some(upstream), Some(conn), Some(identity)) =
            (upstream, self.connection.clone(), self.identity.clone())
        else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        if let Some(refusal) = self.front.revoked(&self.state) {
            // The session itself ends at the next check.
            self.refuse_in_session(refusal);
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let up = match upstream.handle.channel_open_session().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(connection = %connection, error = %e, "target refused a session channel");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return Ok(());
            }
        };
        reply.accept().await;
        let handle = session.handle();
        let relay = tokio::spawn(relay::run(
            channel,
            up,
            handle,
            relay::Terms {
                log,
                strict_audit: conn.strict_audit,
                policy: Arc::clone(&self.front.policy),
                approvals: Arc::clone(&self.front.approvals),
                identity,
                connection: conn.name.clone(),
                mask: self.mask.clone(),
                record_limit: conn
                    .ssh
                    .as_ref()
                    .and_then(|s| s.record_limit)
                    .unwrap_or(DEFAULT_SSH_RECORD_LIMIT),
            },
        ));
        let mut s = lock(&self.state);
        s.relays.retain(|r| !r.is_finished());
        s.relays.push(relay);
        Ok(())
    }

    // Channel requests are answered as they arrive: russh keeps one "reply wanted" flag per
    // channel, so answers sent later, once the target has answered, could be lost when the
    // client sends several requests at once. What the target refuses is reported by the relay.
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    /// A local forward (`ssh -L`, `-W`, `-D`): checked by the forwarding rules; an allowed one
    /// is opened by the target and relayed in a task of its own (`forward`), so a slow
    /// destination never holds up the session's other channels.
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (upstream, log) = {
            let s = lock(&self.state);
            (s.upstream.clone(), s.log.clone())
        };
        let (Some(upstream), Some(conn), Some(identity)) =
            (upstream, self.connection.clone(), self.identity.clone())
        else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let detail = format!(
            "direct-tcpip to {host_to_connect}:{port_to_connect} from {originator_address}:{originator_port}"
        );
        if let Some(refusal) = self.front.revoked(&self.state) {
            // The session itself ends at the next check.
            let message = refusal.message.clone();
            self.refuse_in_session(refusal.with_detail(detail));
            reply.reject(prohibited(&message)).await;
            return Ok(());
        }
        let ctx = PolicyContext {
            identity: &identity,
            connection: &conn.name,
            protocol: Protocol::Ssh,
        };
        let rule = match self
            .front
            .policy
            .check_forward(&ctx, host_to_connect, port_to_connect)
        {
            Verdict::Allow { rule } => rule,
            Verdict::Deny { rule, message } | Verdict::Approve { rule, message, .. } => {
                self.refuse_in_session(
                    Refusal::new(RefusalCode::Forbidden, message.clone())
                        .with_detail(format!("{detail}; rule \"{rule}\"")),
                );
                reply.reject(prohibited(&message)).await;
                return Ok(());
            }
        };
        let relay = tokio::spawn(forward::run(
            channel,
            reply,
            upstream,
            forward::Forward {
                log,
                strict_audit: conn.strict_audit,
                host: host_to_connect.to_string(),
                port: port_to_connect,
                origin_address: originator_address.to_string(),
                origin_port: originator_port,
                rule,
            },
        ));
        let mut s = lock(&self.state);
        s.relays.retain(|r| !r.is_finished());
        s.relays.push(relay);
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_in_session(
            Refusal::new(
                RefusalCode::Forbidden,
                "socket forwarding is not allowed through this gateway",
            )
            .with_detail(format!("direct-streamlocal to {socket_path}")),
        );
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_in_session(
            Refusal::new(
                RefusalCode::Forbidden,
                "remote port forwarding is not allowed through this gateway",
            )
            .with_detail(format!("tcpip-forward {address}:{port}")),
        );
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_in_session(
            Refusal::new(
                RefusalCode::Forbidden,
                "remote socket forwarding is not allowed through this gateway",
            )
            .with_detail(format!("streamlocal-forward {socket_path}")),
        );
        Ok(false)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_in_session(Refusal::new(
            RefusalCode::Forbidden,
            "agent forwarding is not allowed through this gateway",
        ));
        Ok(false)
    }
}

/// A channel open failure "administratively prohibited" with the gateway's reason.
fn prohibited(message: &str) -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: 1,
        reason: format!("tollgate: {message}"),
    }
}

/// 64 random bits (session ids).
fn random_u64() -> u64 {
    let mut raw = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).is_err() {
        return tollgate_core::now_micros() as u64;
    }
    u64::from_be_bytes(raw)
}
