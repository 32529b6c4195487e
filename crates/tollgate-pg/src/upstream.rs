//! The gateway's own connection to the target: TCP or TLS, startup, and authentication with the
//! credential the gateway holds (SCRAM-SHA-256, MD5, cleartext or trust).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_core::Secret;

use crate::PgError;
use crate::codec::{self, Reader};
use crate::scram::{ScramClient, md5_password};
use crate::stream::{PgStream, read_message};

/// TLS toward the target, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the target offers it.
    Prefer,
    /// TLS or fail. Like libpq's `require`, the certificate is not verified.
    Require,
}

/// A PostgreSQL target parsed from a connection URL.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Role the gateway logs in as.
    pub user: String,
    /// Database.
    pub database: String,
    /// TLS mode.
    pub sslmode: SslMode,
    /// Password held by the gateway.
    pub password: Option<Secret>,
}

impl PgTarget {
    /// Parses `postgres://user@host:port/db?sslmode=…`. A password in the URL is refused: it must
    /// come by reference (`password_env`, `password_file`).
    pub fn from_url(url: &str, password: Option<Secret>) -> Result<Self, PgError> {
        // The URL itself is not echoed: a mistyped one might carry a password.
        let bad = |why: &str| PgError::Config(why.to_string());
        let u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if u.scheme() != "postgres" && u.scheme() != "postgresql" {
            return Err(bad("expected a postgres:// URL"));
        }
        if u.password().is_some() {
            return Err(PgError::Config(
                "connection url must not contain a password; use password_env or password_file"
                    .into(),
            ));
        }
        let host = match u.host().ok_or_else(|| bad("no host"))? {
            url::Host::Domain(d) => d.to_string(),
            url::Host::Ipv4(a) => a.to_string(),
            url::Host::Ipv6(a) => a.to_string(),
        };
        let user = u.username();
        if user.is_empty() {
            return Err(bad("no user (postgres://USER@host/db)"));
        }
        let user = percent_decode(user);
        let database = u.path().trim_start_matches('/');
        let database = if database.is_empty() {
            user.clone()
        } else {
            percent_decode(database)
        };
        let mut sslmode = SslMode::Prefer;
        for (k, v) in u.query_pairs() {
            match k.as_ref() {
                "sslmode" => {
                    sslmode = match v.as_ref() {
                        "disable" => SslMode::Disable,
                        "prefer" | "allow" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        other => {
                            return Err(bad(&format!(
                                "sslmode {other:?} is not supported (use disable, prefer or require)"
                            )));
                        }
                    }
                }
                other => {
                    return Err(bad(&format!(
                        "unknown parameter {other:?} (supported: sslmode)"
                    )));
                }
            }
        }
        Ok(Self {
            host,
            port: u.port().unwrap_or(5432),
            user,
            database,
            sslmode,
            password,
        })
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| hex::decode(h).ok());
        match escaped {
            Some(v) => {
                out.extend_from_slice(&v);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Client startup parameters passed through to the target. Anything else (role, replication,
/// options) could change who the gateway acts as, so it is not forwarded.
const FORWARDED_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "extra_float_digits",
    "intervalstyle",
    "search_path",
    "lc_messages",
];

/// An authenticated connection to the target, ready for queries.
pub struct Upstream {
    /// The transport.
    pub stream: PgStream,
    /// Where it goes (for cancel requests).
    pub addr: SocketAddr,
    /// Whether it uses TLS.
    pub tls: bool,
    /// The target's process id and secret key, for cancel requests.
    pub key: (i32, i32),
    /// Raw ParameterStatus and NoticeResponse messages to replay to the client.
    pub greeting: BytesMut,
    /// Raw ReadyForQuery message.
    pub ready: BytesMut,
}

/// Opens an authenticated connection to the target.
pub async fn connect(
    target: &PgTarget,
    client_params: &[(String, String)],
    timeout: Duration,
    cap: usize,
) -> Result<Upstream, PgError> {
    tokio::time::timeout(timeout, connect_inner(target, client_params, cap))
        .await
        .map_err(|_| {
            PgError::UpstreamUnavailable(format!(
                "no answer from {} within {}s",
                target.address(),
                timeout.as_secs()
            ))
        })?
}

async fn connect_inner(
    target: &PgTarget,
    client_params: &[(String, String)],
    cap: usize,
) -> Result<Upstream, PgError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| {
            PgError::UpstreamUnavailable(format!("cannot reach {}: {e}", target.address()))
        })?;
    let _ = tcp.set_nodelay(true);
    let addr = tcp
        .peer_addr()
        .map_err(|e| PgError::UpstreamUnavailable(format!("{}: {e}", target.address())))?;
    let (mut stream, tls) = negotiate_tls(tcp, target).await?;

    let mut params: Vec<(&str, &str)> = vec![
        ("user", target.user.as_str()),
        ("database", target.database.as_str()),
    ];
    for (k, v) in client_params {
        if FORWARDED_PARAMS.contains(&k.to_ascii_lowercase().as_str()) {
            params.push((k.as_str(), v.as_str()));
        }
    }
    let mut out = BytesMut::new();
    codec::startup_message(&mut out, &params);
    stream.write_all(&out).await.map_err(PgError::Io)?;

    let mut buf = BytesMut::with_capacity(8192);
    authenticate(&mut stream, &mut buf, target, cap).await?;

    let mut greeting = BytesMut::new();
    let mut key = (0, 0);
    loop {
        let (tag, body) = read_message(&mut stream, &mut buf, cap)
            .await?
            .ok_or_else(|| {
                PgError::UpstreamUnavailable("target closed the connection during startup".into())
            })?;
        match tag {
            b'S' | b'N' => codec::put_message(&mut greeting, tag, |b| b.put_slice(&body)),
            b'K' => key = (codec::read_i32(&body, 0)?, codec::read_i32(&body, 4)?),
            b'Z' => {
                let mut ready = BytesMut::new();
                codec::put_message(&mut ready, tag, |b| b.put_slice(&body));
                if !buf.is_empty() {
                    return Err(PgError::protocol("target sent data before the first query"));
                }
                return Ok(Upstream {
                    stream,
                    addr,
                    tls,
                    key,
                    greeting,
                    ready,
                });
            }
            b'E' => return Err(target_error(&body)),
            other => {
                return Err(PgError::protocol(format!(
                    "unexpected message {:?} from target during startup",
                    other as char
                )));
            }
        }
    }
}

fn target_error(body: &[u8]) -> PgError {
    let f = codec::parse_error_fields(body);
    PgError::Target {
        code: f.code,
        message: f.message,
    }
}

async fn negotiate_tls(mut tcp: TcpStream, target: &PgTarget) -> Result<(PgStream, bool), PgError> {
    if target.sslmode == SslMode::Disable {
        return Ok((PgStream::Plain(tcp), false));
    }
    let mut req = BytesMut::new();
    req.put_i32(8);
    req.put_i32(codec::SSL_REQUEST);
    tcp.write_all(&req).await.map_err(PgError::Io)?;
    let answer = tcp.read_u8().await.map_err(PgError::Io)?;
    match answer {
        b'S' => {
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::UpstreamUnavailable(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify))
            .with_no_client_auth();
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| PgError::Config(format!("host {:?}: {e}", target.host)))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    PgError::UpstreamUnavailable(format!("TLS with {}: {e}", target.address()))
                })?;
            Ok((PgStream::ClientTls(Box::new(tls)), true))
        }
        b'N' if target.sslmode == SslMode::Prefer => Ok((PgStream::Plain(tcp), false)),
        b'N' => Err(PgError::UpstreamUnavailable(format!(
            "{} does not offer TLS and the connection requires it (sslmode=require)",
            target.address()
        ))),
        _ => Err(PgError::UpstreamUnavailable(format!(
            "{} answered the TLS request with garbage; is it PostgreSQL?",
            target.address()
        ))),
    }
}

async fn authenticate(
    stream: &mut PgStream,
    buf: &mut BytesMut,
    target: &PgTarget,
    cap: usize,
) -> Result<(), PgError> {
    let password = || {
        target.password.as_ref().map(Secret::expose).ok_or_else(|| {
            PgError::UpstreamAuth(format!(
                "{} asks for a password and the connection has none configured",
                target.address()
            ))
        })
    };
    let mut scram: Option<ScramClient> = None;
    loop {
        let (tag, body) = read_message(stream, buf, cap).await?.ok_or_else(|| {
            PgError::UpstreamUnavailable(
                "target closed the connection during authentication".into(),
            )
        })?;
        if tag == b'E' {
            return Err(target_error(&body));
        }
        if tag != b'R' {
            return Err(PgError::protocol(format!(
                "unexpected message {:?} from target during authentication",
                tag as char
            )));
        }
        let code = codec::read_i32(&body, 0)?;
        let mut out = BytesMut::new();
        match code {
            0 => return Ok(()),
            3 => {
                let pw = password()?;
                codec::put_message(&mut out, b'p', |b| codec::put_cstr(b, pw));
            }
            5 => {
                let pw = password()?;
                let salt = body
                    .get(4..8)
                    .ok_or_else(|| PgError::protocol("short MD5 request"))?;
                let hashed = md5_password(&target.user, pw, salt);
                codec::put_message(&mut out, b'p', |b| codec::put_cstr(b, &hashed));
            }
            10 => {
                let mut r = Reader::new(&body[4..]);
                let mut mechanisms = Vec::new();
                loop {
                    let m = r.cstr()?;
                    if m.is_empty() {
                        break;
                    }
                    mechanisms.push(m.to_string());
                }
                if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
                    return Err(PgError::UpstreamAuth(format!(
                        "target offers only {mechanisms:?}; the gateway supports SCRAM-SHA-256"
                    )));
                }
                let mut nonce = [0u8; 18];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
                    .map_err(|_| PgError::UpstreamAuth("no randomness for SCRAM".into()))?;
                let client = ScramClient::new(
                    password()?,
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, nonce),
                );
                let first = client.client_first();
                codec::put_message(&mut out, b'p', |b| {
                    codec::put_cstr(b, "SCRAM-SHA-256");
                    b.put_i32(first.len() as i32);
                    b.put_slice(first.as_bytes());
                });
                scram = Some(client);
            }
            11 => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| PgError::protocol("SASL continue without SASL start"))?;
                let server_first = std::str::from_utf8(&body[4..])
                    .map_err(|_| PgError::protocol("SCRAM message is not UTF-8"))?;
                let fin = client.client_final(server_first)?;
                codec::put_message(&mut out, b'p', |b| b.put_slice(fin.as_bytes()));
            }
            12 => {
                let client = scram
                    .as_ref()
                    .ok_or_else(|| PgError::protocol("SASL final without SASL start"))?;
                let server_final = std::str::from_utf8(&body[4..])
                    .map_err(|_| PgError::protocol("SCRAM message is not UTF-8"))?;
                client.verify_server_final(server_final)?;
                continue;
            }
            other => {
                return Err(PgError::UpstreamAuth(format!(
                    "target asks for authentication method {other}, which the gateway does not support"
                )));
            }
        }
        stream.write_all(&out).await.map_err(PgError::Io)?;
    }
}

/// Runs one simple query on an idle connection and returns its rows as text (`None` for NULL).
/// The connection is idle again afterwards. Used by the gateway for its own catalog lookups.
pub async fn simple_query(
    stream: &mut PgStream,
    sql: &str,
    cap: usize,
) -> Result<Vec<Vec<Option<String>>>, PgError> {
    let mut out = BytesMut::new();
    codec::query(&mut out, sql);
    stream.write_all(&out).await.map_err(PgError::Io)?;
    let mut buf = BytesMut::new();
    let mut rows = Vec::new();
    let mut failure = None;
    loop {
        let (tag, body) = read_message(stream, &mut buf, cap)
            .await?
            .ok_or_else(|| PgError::UpstreamUnavailable("target closed the connection".into()))?;
        match tag {
            b'D' => {
                let mut r = codec::Reader::new(&body);
                let n = r.i16()?;
                let mut row = Vec::with_capacity(n.max(0) as usize);
                for _ in 0..n.max(0) {
                    let len = r.i32()?;
                    if len < 0 {
                        row.push(None);
                    } else {
                        let v = r.bytes(len as usize)?;
                        row.push(Some(String::from_utf8_lossy(v).into_owned()));
                    }
                }
                rows.push(row);
            }
            b'E' => {
                let f = codec::parse_error_fields(&body);
                failure = Some(PgError::Target {
                    code: f.code,
                    message: f.message,
                });
            }
            b'Z' => {
                if !buf.is_empty() {
                    return Err(PgError::protocol("target sent data after ReadyForQuery"));
                }
                return match failure {
                    Some(e) => Err(e),
                    None => Ok(rows),
                };
            }
            _ => {}
        }
    }
}

/// Sends a CancelRequest for the target's process.
pub async fn send_cancel(addr: SocketAddr, key: (i32, i32)) -> Result<(), PgError> {
    let mut tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| PgError::UpstreamUnavailable(format!("cancel: {addr} did not answer")))?
        .map_err(|e| PgError::UpstreamUnavailable(format!("cancel: {addr}: {e}")))?;
    let mut req = BytesMut::new();
    req.put_i32(16);
    req.put_i32(codec::CANCEL_REQUEST);
    req.put_i32(key.0);
    req.put_i32(key.1);
    tcp.write_all(&req).await.map_err(PgError::Io)?;
    // The server closes the connection once it has read the request.
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut sink)).await;
    Ok(())
}

/// Accepts any certificate: `sslmode=require` encrypts without authenticating the target, as
/// libpq does.
#[derive(Debug)]
struct NoVerify;

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_including_ipv6_and_defaults() {
        let t = PgTarget::from_url("postgres://app@[::1]:6543/db?sslmode=require", None).unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.port, 6543);
        assert_eq!(t.sslmode, SslMode::Require);
        let t = PgTarget::from_url("postgresql://a%40b@db.internal", None).unwrap();
        assert_eq!(
            (t.user.as_str(), t.database.as_str(), t.port),
            ("a@b", "a@b", 5432)
        );
        assert_eq!(t.sslmode, SslMode::Prefer);
        assert!(PgTarget::from_url("mysql://a@h/d", None).is_err());
        assert!(PgTarget::from_url("postgres://h/d", None).is_err());
        assert!(PgTarget::from_url("postgres://a@h/d?sslmode=verify-full", None).is_err());
        assert!(PgTarget::from_url("postgres://a@h/d?connect_timeout=3", None).is_err());
        for url in [
            "postgres://a:hunter2@h/d",
            "postgres://a:hunter2@h:port/d",
            "postgres://a:hunter2@/d",
        ] {
            let e = PgTarget::from_url(url, None).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
