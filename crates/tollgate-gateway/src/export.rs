//! Streaming export of the audit log to a SIEM: JSON lines to a file (or stdout), HTTP
//! batches (JSON lines, or the Splunk HEC shape) and syslog (RFC 5424 messages in
//! octet-counted frames, over TCP as in RFC 6587 or over TLS as in RFC 5425). Each sink keeps a
//! durable cursor in the store and advances it only after a batch is delivered: at-least-once,
//! in order, no gaps, resumed after a restart. A duplicate carries the same `gseq`, so
//! receivers can drop it.
//!
//! Syslog over TLS (`tls = true`) trusts only the CA certificates of the sink's `ca_file` (no
//! system roots) and checks the receiver's certificate against `server_name` (default: the host
//! of `address`). A failed handshake or a refused certificate is a failed delivery like a
//! refused connection: nothing is written, the cursor stays, the error is logged and the batch
//! is retried with backoff.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tollgate_core::Secret;
use tollgate_store::{ExportRecord, Store};

/// `[[exports]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    /// Name; also the key of the sink's cursor (renaming a sink starts it from the beginning).
    pub name: String,
    /// `file`, `http` or `syslog`.
    pub kind: String,
    /// For `syslog`: the receiver's `host:port` (TCP, or TLS with `tls = true`).
    pub address: Option<String>,
    /// For `syslog`: speak TLS (RFC 5425) instead of plain TCP (default false).
    pub tls: Option<bool>,
    /// For `syslog` with `tls = true` (required there): a PEM file with the CA certificate(s)
    /// trusted to vouch for the receiver. System roots are never used.
    pub ca_file: Option<PathBuf>,
    /// For `syslog` with `tls = true`: the name the receiver's certificate must carry (a DNS
    /// name or an IP address); default: the host part of `address`.
    pub server_name: Option<String>,
    /// For `file`: the file to append to, or `-` for standard output.
    pub path: Option<PathBuf>,
    /// For `http`: where to POST batches.
    pub url: Option<String>,
    /// For `http`: `jsonl` (default) or `hec` (Splunk HTTP Event Collector).
    pub format: Option<String>,
    /// For `http`: environment variable holding the token sent as `Authorization: Splunk <token>`
    /// (`hec`) or `Bearer <token>` (`jsonl`).
    pub token_env: Option<String>,
    /// Most records per batch (default 500).
    pub batch: Option<usize>,
}

/// Where a sink delivers.
#[derive(Debug, Clone)]
enum Target {
    File(PathBuf),
    Stdout,
    Http {
        url: String,
        hec: bool,
        token: Option<Secret>,
    },
    Syslog {
        /// `host:port`.
        address: String,
        /// TLS settings when the sink speaks RFC 5425.
        tls: Option<SyslogTls>,
    },
}

/// How a syslog sink speaks TLS: whom it trusts and which name it checks.
#[derive(Debug, Clone)]
struct SyslogTls {
    config: Arc<rustls::ClientConfig>,
    server_name: rustls::pki_types::ServerName<'static>,
    /// As configured, for messages.
    name: String,
    ca_file: PathBuf,
}

/// A validated sink.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Name and cursor key.
    pub name: String,
    target: Target,
    batch: usize,
}

impl Sink {
    /// Validates a spec; errors name the key.
    pub fn from_spec(spec: &ExportSpec) -> Result<Self, String> {
        if spec.name.trim().is_empty() {
            return Err("name: must not be empty".into());
        }
        let batch = spec.batch.unwrap_or(500);
        if !(1..=10_000).contains(&batch) {
            return Err("batch: expected 1 to 10000 records".into());
        }
        let target = match spec.kind.as_str() {
            "file" => match &spec.path {
                Some(p) if p.as_os_str() == "-" => Target::Stdout,
                Some(p) => Target::File(p.clone()),
                None => return Err("path: a file sink needs a path (or \"-\" for stdout)".into()),
            },
            "http" => {
                let url = spec.url.clone().ok_or("url: an http sink needs a url")?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("url: expected http:// or https://, got {url:?}"));
                }
                let hec = match spec.format.as_deref() {
                    None | Some("jsonl") => false,
                    Some("hec") => true,
                    Some(other) => {
                        return Err(format!(
                            "format: expected \"jsonl\" or \"hec\", got {other:?}"
                        ));
                    }
                };
                let token = match &spec.token_env {
                    Some(var) => Some(Secret::new(std::env::var(var).map_err(|_| {
                        format!("token_env: environment variable {var} is not set")
                    })?)),
                    None => None,
                };
                Target::Http { url, hec, token }
            }
            "syslog" => {
                let address = match &spec.address {
                    Some(a) => a.clone(),
                    None => return Err("address: a syslog sink needs host:port".into()),
                };
                let host = match address.rsplit_once(':') {
                    Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => h,
                    _ => return Err(format!("address: expected host:port, got {address:?}")),
                };
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                let tls = if spec.tls == Some(true) {
                    Some(syslog_tls(
                        spec.ca_file.as_deref(),
                        spec.server_name.as_deref(),
                        host,
                    )?)
                } else {
                    if spec.ca_file.is_some() {
                        return Err(
                            "ca_file: only used with tls = true; set tls = true to speak TLS \
                             to the receiver, or remove ca_file"
                                .into(),
                        );
                    }
                    if spec.server_name.is_some() {
                        return Err(
                            "server_name: only used with tls = true; set tls = true to speak \
                             TLS to the receiver, or remove server_name"
                                .into(),
                        );
                    }
                    None
                };
                Target::Syslog { address, tls }
            }
            other => {
                return Err(format!(
                    "kind: expected \"file\", \"http\" or \"syslog\", got {other:?}"
                ));
            }
        };
        if !matches!(target, Target::Syslog { .. }) {
            let hint = if matches!(target, Target::Http { .. }) {
                " (an http sink speaks TLS with an https:// url)"
            } else {
                ""
            };
            for (key, set) in [
                ("tls", spec.tls.is_some()),
                ("ca_file", spec.ca_file.is_some()),
                ("server_name", spec.server_name.is_some()),
            ] {
                if set {
                    return Err(format!("{key}: only a syslog sink takes {key}{hint}"));
                }
            }
        }
        Ok(Self {
            name: spec.name.clone(),
            target,
            batch,
        })
    }
}

/// Reads the trusted CA certificates and settles the name to check, for a syslog sink with
/// `tls = true`; errors name the key.
fn syslog_tls(
    ca_file: Option<&Path>,
    server_name: Option<&str>,
    host: &str,
) -> Result<SyslogTls, String> {
    let path = ca_file.ok_or(
        "ca_file: a syslog sink with tls = true needs a PEM file with the CA certificate(s) \
         that vouch for the receiver (system roots are not used)",
    )?;
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("ca_file: cannot read {shown}: {e}"))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_file: expected PEM certificates in {shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "ca_file: expected PEM certificates (-----BEGIN CERTIFICATE-----), {shown} holds none"
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            format!("ca_file: a certificate in {shown} cannot be used as a trust anchor: {e}")
        })?;
    }
    let (key, name) = match server_name {
        Some(n) => ("server_name", n),
        None => ("address", host),
    };
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|_| {
        format!(
            "{key}: expected a DNS name or an IP address to check the receiver's certificate \
             against, got {name:?}"
        )
    })?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("tls: cannot set up TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(SyslogTls {
        config: Arc::new(config),
        server_name,
        name: name.to_string(),
        ca_file: path.to_path_buf(),
    })
}

/// One record as a JSON object: position, time, session, hash and the event itself.
pub fn record_json(r: &ExportRecord) -> Value {
    let event: Value = serde_json::from_slice(&r.payload).unwrap_or(Value::Null);
    let mut v = json!({
        "gseq": r.gseq,
        "at": tollgate_core::format_rfc3339(r.at),
        "session": r.session,
        "seq": r.seq,
        "hash": hex::encode(r.hash),
        "event": event,
    });
    if r.purged {
        v["purged"] = json!(true);
    }
    v
}

/// A syslog connection: plain TCP or TLS over TCP.
enum SyslogStream {
    Tcp(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl SyslogStream {
    /// Whether the receiver still holds the connection open, without waiting. Whatever it sent
    /// (syslog receivers send nothing) is discarded; over TLS the probe reads through the TLS
    /// layer, so its own records (session tickets, alerts) are handled, not lost.
    fn is_open(&mut self) -> bool {
        let mut probe = [0u8; 64];
        match self {
            Self::Tcp(s) => match s.try_read(&mut probe) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            },
            Self::Tls(s) => {
                use tokio::io::AsyncRead;
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                let mut buf = tokio::io::ReadBuf::new(&mut probe);
                match std::pin::Pin::new(&mut **s).poll_read(&mut cx, &mut buf) {
                    std::task::Poll::Pending => true,
                    std::task::Poll::Ready(Ok(())) => !buf.filled().is_empty(),
                    std::task::Poll::Ready(Err(_)) => false,
                }
            }
        }
    }

    /// Writes all of `bytes` and flushes them to the socket.
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            Self::Tcp(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Self::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }
}

/// A syslog sink's connection. Neither TCP nor TLS carries an acknowledgement, so a batch
/// counts as delivered once the connection is seen still open a while after it was written; a
/// batch written to a connection that then turns out closed is sent again on the next one
/// (at-least-once).
#[derive(Default)]
struct SyslogConn {
    stream: Option<SyslogStream>,
    /// Batches written on `stream` and not yet confirmed: last gseq and when.
    written: std::collections::VecDeque<(u64, std::time::Instant)>,
    /// The last gseq written on `stream` and not yet confirmed.
    unconfirmed: Option<u64>,
}

/// How long a batch must have been on an open connection to count as delivered.
const SYSLOG_CONFIRM_AFTER: Duration = Duration::from_secs(1);

impl SyslogConn {
    /// Confirms what was written long enough ago if the connection is still open; forgets
    /// everything unconfirmed otherwise.
    fn settle(&mut self) -> Option<u64> {
        let alive = self.stream.as_mut().is_some_and(SyslogStream::is_open);
        if !alive {
            self.stream = None;
            self.unconfirmed = None;
            self.written.clear();
            return None;
        }
        let mut confirmed = None;
        while let Some(&(gseq, at)) = self.written.front() {
            if at.elapsed() < SYSLOG_CONFIRM_AFTER {
                break;
            }
            confirmed = Some(gseq);
            self.written.pop_front();
        }
        if self.written.is_empty() {
            self.unconfirmed = None;
        }
        confirmed
    }
}

/// Runs a sink until shutdown: deliver what follows the cursor, advance it, repeat.
pub async fn run(sink: Sink, store: Store, mut shutdown: watch::Receiver<bool>) {
    let mut syslog = SyslogConn::default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok();
    let mut backoff = Duration::from_millis(200);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let delivered = deliver_once(&sink, &store, client.as_ref(), &mut syslog).await;
        let pause = match delivered {
            Ok(0) => Duration::from_millis(300),
            Ok(_) => {
                backoff = Duration::from_millis(200);
                Duration::ZERO
            }
            Err(e) => {
                tracing::warn!(sink = %sink.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "audit export not delivered; will retry from the same record");
                let b = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                b
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// Delivers one batch after the cursor; returns how many records went out.
async fn deliver_once(
    sink: &Sink,
    store: &Store,
    client: Option<&reqwest::Client>,
    syslog: &mut SyslogConn,
) -> Result<usize, String> {
    if let Some(confirmed) = syslog.settle() {
        store
            .set_cursor(&sink.name, confirmed)
            .map_err(|e| e.to_string())?;
    }
    let cursor = store.cursor(&sink.name).map_err(|e| e.to_string())?;
    // Records written to a live syslog connection wait there for confirmation.
    let cursor = match (cursor, syslog.unconfirmed) {
        (Some(c), Some(u)) => Some(c.max(u)),
        (c, u) => c.or(u),
    };
    let records = store
        .records_after(cursor, sink.batch)
        .map_err(|e| e.to_string())?;
    let Some(last) = records.last().map(|r| r.gseq) else {
        return Ok(0);
    };
    if let Target::Syslog { address, tls } = &sink.target {
        return send_syslog(address, tls.as_ref(), &records, syslog).await;
    }
    let mut body = Vec::with_capacity(records.len() * 512);
    for r in &records {
        let line = match &sink.target {
            Target::Http { hec: true, .. } => json!({
                "time": r.at as f64 / 1e6,
                "host": "tollgate",
                "source": "tollgate",
                "sourcetype": "tollgate:audit",
                "event": record_json(r),
            }),
            _ => record_json(r),
        };
        serde_json::to_writer(&mut body, &line).map_err(|e| e.to_string())?;
        body.push(b'\n');
    }
    match &sink.target {
        Target::Stdout => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&body)
                .and_then(|()| out.flush())
                .map_err(|e| format!("stdout: {e}"))?;
        }
        Target::File(path) => {
            let shown = path.display().to_string();
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                f.write_all(&body)?;
                f.sync_data()
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{shown}: {e}"))?;
        }
        Target::Syslog { .. } => {}
        Target::Http { url, hec, token } => {
            let client = client.ok_or("no HTTP client")?;
            let mut req = client
                .post(url)
                .header(
                    "content-type",
                    if *hec {
                        "application/json"
                    } else {
                        "application/x-ndjson"
                    },
                )
                .body(body);
            if let Some(t) = token {
                let scheme = if *hec { "Splunk" } else { "Bearer" };
                req = req.header("authorization", format!("{scheme} {}", t.expose()));
            }
            let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
            if !resp.status().is_success() {
                return Err(format!("the receiver answered {}", resp.status()));
            }
        }
    }
    store
        .set_cursor(&sink.name, last)
        .map_err(|e| e.to_string())?;
    Ok(records.len())
}

/// Opens a syslog connection: TCP, then the TLS handshake when the sink speaks TLS. Each step
/// has 5 s.
async fn connect_syslog(address: &str, tls: Option<&SyslogTls>) -> Result<SyslogStream, String> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .map_err(|_| format!("{address}: no answer"))?
    .map_err(|e| format!("{address}: {e}"))?;
    let Some(tls) = tls else {
        return Ok(SyslogStream::Tcp(tcp));
    };
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        connector.connect(tls.server_name.clone(), tcp),
    )
    .await
    .map_err(|_| format!("{address}: no TLS handshake within 5 s"))?
    .map_err(|e| {
        let refused = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|inner| matches!(inner, rustls::Error::InvalidCertificate(_)));
        if refused {
            format!(
                "{address}: TLS handshake refused: the receiver's certificate does not check out \
                 (name checked: {:?}, CA certificates trusted: ca_file {}): {e}",
                tls.name,
                tls.ca_file.display()
            )
        } else {
            format!("{address}: TLS handshake failed: {e}")
        }
    })?;
    Ok(SyslogStream::Tls(Box::new(stream)))
}

/// Writes records as RFC 5424 messages with octet-counting framing (RFC 6587; the same framing
/// over TLS is RFC 5425), facility log audit (13), severity informational:
/// `<110>1 TIME tollgate tollgate - audit - JSON`.
async fn send_syslog(
    address: &str,
    tls: Option<&SyslogTls>,
    records: &[ExportRecord],
    conn: &mut SyslogConn,
) -> Result<usize, String> {
    let Some(last) = records.last().map(|r| r.gseq) else {
        return Ok(0);
    };
    if conn.stream.is_none() {
        conn.stream = Some(connect_syslog(address, tls).await?);
    }
    let mut out = Vec::with_capacity(records.len() * 512);
    for r in records {
        let json = serde_json::to_string(&record_json(r)).map_err(|e| e.to_string())?;
        let message = format!(
            "<110>1 {} tollgate tollgate - audit - {json}",
            tollgate_core::format_rfc3339(r.at)
        );
        out.extend_from_slice(format!("{} ", message.len()).as_bytes());
        out.extend_from_slice(message.as_bytes());
    }
    let Some(stream) = conn.stream.as_mut() else {
        return Err("no connection".into());
    };
    if let Err(e) = stream.send(&out).await {
        conn.stream = None;
        conn.unconfirmed = None;
        conn.written.clear();
        return Err(format!("{address}: {e}"));
    }
    conn.unconfirmed = Some(last);
    conn.written.push_back((last, std::time::Instant::now()));
    Ok(records.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own under the system's temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "tollgate-export-{tag}-{}-{:x}",
                std::process::id(),
                rand_suffix()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn rand_suffix() -> u64 {
        let mut b = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
        u64::from_le_bytes(b)
    }

    fn ca_pem() -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn spec(toml_text: &str) -> ExportSpec {
        toml::from_str(toml_text).unwrap()
    }

    fn error(toml_text: &str) -> String {
        match Sink::from_spec(&spec(toml_text)) {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(e) => e,
        }
    }

    fn tls_of(sink: &Sink) -> &SyslogTls {
        match &sink.target {
            Target::Syslog { tls: Some(tls), .. } => tls,
            other => panic!("not a TLS syslog sink: {other:?}"),
        }
    }

    #[test]
    fn syslog_over_tls_takes_a_ca_file_and_checks_the_host_or_server_name() {
        let dir = Scratch::new("ok");
        let ca = dir.write("ca.pem", &ca_pem());
        let ca = ca.display();
        let base =
            format!("name = \"s\"\nkind = \"syslog\"\ntls = true\nca_file = \"{ca}\"\naddress = ");

        let sink = Sink::from_spec(&spec(&format!("{base}\"127.0.0.1:6514\""))).unwrap();
        let tls = tls_of(&sink);
        assert_eq!(tls.name, "127.0.0.1");
        assert!(matches!(
            tls.server_name,
            rustls::pki_types::ServerName::IpAddress(_)
        ));
        let sink = Sink::from_spec(&spec(&format!("{base}\"[::1]:6514\""))).unwrap();
        assert_eq!(tls_of(&sink).name, "::1");
        let sink = Sink::from_spec(&spec(&format!(
            "{base}\"10.0.0.5:6514\"\nserver_name = \"syslog.example.net\""
        )))
        .unwrap();
        let tls = tls_of(&sink);
        assert_eq!(tls.name, "syslog.example.net");
        assert!(matches!(
            tls.server_name,
            rustls::pki_types::ServerName::DnsName(_)
        ));

        // Plain TCP stays the default, with or without an explicit tls = false.
        for extra in ["", "tls = false\n"] {
            let sink = Sink::from_spec(&spec(&format!(
                "name = \"s\"\nkind = \"syslog\"\n{extra}address = \"127.0.0.1:514\""
            )))
            .unwrap();
            assert!(matches!(sink.target, Target::Syslog { tls: None, .. }));
        }
    }

    #[test]
    fn syslog_tls_errors_name_the_key_and_what_was_expected() {
        let dir = Scratch::new("bad");
        let ca = dir.write("ca.pem", &ca_pem());
        let ca = ca.display().to_string();
        let key_only = dir.write(
            "key.pem",
            &rcgen::KeyPair::generate().unwrap().serialize_pem(),
        );
        let text = dir.write("notes.txt", "not a certificate\n");
        let broken = dir.write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let syslog = "name = \"s\"\nkind = \"syslog\"\naddress = \"127.0.0.1:6514\"\n";

        let m = error(&format!("{syslog}tls = true"));
        assert!(
            m.starts_with("ca_file: ") && m.contains("needs a PEM file"),
            "{m}"
        );
        let missing = dir.0.join("nowhere.pem");
        let m = error(&format!(
            "{syslog}tls = true\nca_file = \"{}\"",
            missing.display()
        ));
        assert!(
            m.starts_with("ca_file: cannot read ") && m.contains("nowhere.pem"),
            "{m}"
        );
        for empty in [&key_only, &text] {
            let m = error(&format!(
                "{syslog}tls = true\nca_file = \"{}\"",
                empty.display()
            ));
            assert!(
                m.starts_with("ca_file: expected PEM certificates") && m.contains("holds none"),
                "{m}"
            );
        }
        let m = error(&format!(
            "{syslog}tls = true\nca_file = \"{}\"",
            broken.display()
        ));
        assert!(
            m.starts_with("ca_file: ") && m.contains("broken.pem"),
            "{m}"
        );

        // ca_file and server_name mean nothing without tls = true.
        for tls in ["", "tls = false\n"] {
            let m = error(&format!("{syslog}{tls}ca_file = \"{ca}\""));
            assert!(m.starts_with("ca_file: only used with tls = true"), "{m}");
            let m = error(&format!("{syslog}{tls}server_name = \"localhost\""));
            assert!(
                m.starts_with("server_name: only used with tls = true"),
                "{m}"
            );
        }
        let m = error(&format!(
            "{syslog}tls = true\nca_file = \"{ca}\"\nserver_name = \"not a name!\""
        ));
        assert!(
            m.starts_with("server_name: expected a DNS name or an IP address")
                && m.contains("\"not a name!\""),
            "{m}"
        );

        // Only a syslog sink takes them.
        let m = error("name = \"h\"\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\ntls = true");
        assert!(
            m.starts_with("tls: only a syslog sink takes tls") && m.contains("https://"),
            "{m}"
        );
        let m = error(&format!(
            "name = \"f\"\nkind = \"file\"\npath = \"-\"\nca_file = \"{ca}\""
        ));
        assert!(
            m.starts_with("ca_file: only a syslog sink takes ca_file"),
            "{m}"
        );
    }

    #[test]
    fn config_errors_for_syslog_tls_name_the_file_and_the_sink() {
        let m = match crate::config::Config::from_text(
            "[[exports]]\nname = \"s\"\nkind = \"syslog\"\naddress = \"127.0.0.1:6514\"\ntls = true\n",
        ) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            m.contains("<inline>") && m.contains("exports[0]: ca_file: "),
            "{m}"
        );
        let m = match crate::config::Config::from_text(
            "[[exports]]\nname = \"s\"\nkind = \"syslog\"\naddress = \"127.0.0.1:6514\"\ntls = \"yes\"\n",
        ) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        assert!(m.contains("tls") && m.contains("bool"), "{m}");
    }
}
