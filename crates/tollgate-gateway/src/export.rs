//! Streaming export of the audit log to a SIEM: JSON lines to a file (or stdout), HTTP
//! batches (JSON lines, or the Splunk HEC shape) and syslog (RFC 5424 over TCP, octet-counted
//! frames). Each sink keeps a durable cursor in the store
//! and advances it only after a batch is delivered: at-least-once, in order, no gaps, resumed
//! after a restart. A duplicate carries the same `gseq`, so receivers can drop it.

use std::path::PathBuf;
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
    /// For `syslog`: the receiver's `host:port` (TCP).
    pub address: Option<String>,
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
    Syslog(String),
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
            "syslog" => match &spec.address {
                Some(a)
                    if a.rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
                {
                    Target::Syslog(a.clone())
                }
                Some(a) => return Err(format!("address: expected host:port, got {a:?}")),
                None => return Err("address: a syslog sink needs host:port".into()),
            },
            other => {
                return Err(format!(
                    "kind: expected \"file\", \"http\" or \"syslog\", got {other:?}"
                ));
            }
        };
        Ok(Self {
            name: spec.name.clone(),
            target,
            batch,
        })
    }
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

/// A syslog sink's connection. TCP carries no acknowledgement, so a batch counts as delivered
/// once the connection is seen still open a while after it was written; a batch written to a
/// connection that then turns out closed is sent again on the next one (at-least-once).
#[derive(Default)]
struct SyslogConn {
    stream: Option<tokio::net::TcpStream>,
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
        let alive = match &self.stream {
            Some(s) => {
                let mut probe = [0u8; 64];
                match s.try_read(&mut probe) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                }
            }
            None => false,
        };
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
    if let Target::Syslog(address) = &sink.target {
        return send_syslog(address, &records, syslog).await;
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
        Target::Syslog(_) => {}
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

/// Writes records as RFC 5424 messages with octet-counting framing (RFC 6587), facility
/// log audit (13), severity informational: `<110>1 TIME tollgate tollgate - audit - JSON`.
async fn send_syslog(
    address: &str,
    records: &[ExportRecord],
    conn: &mut SyslogConn,
) -> Result<usize, String> {
    use tokio::io::AsyncWriteExt;
    let Some(last) = records.last().map(|r| r.gseq) else {
        return Ok(0);
    };
    if conn.stream.is_none() {
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(address),
        )
        .await
        .map_err(|_| format!("{address}: no answer"))?
        .map_err(|e| format!("{address}: {e}"))?;
        conn.stream = Some(stream);
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
    let written = async {
        stream.write_all(&out).await?;
        stream.flush().await
    }
    .await;
    if let Err(e) = written {
        conn.stream = None;
        conn.unconfirmed = None;
        conn.written.clear();
        return Err(format!("{address}: {e}"));
    }
    conn.unconfirmed = Some(last);
    conn.written.push_back((last, std::time::Instant::now()));
    Ok(records.len())
}
