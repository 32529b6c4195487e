//! Streaming export of the audit log to a SIEM: JSON lines to a file (or stdout) and HTTP
//! batches (JSON lines, or the Splunk HEC shape). Each sink keeps a durable cursor in the store
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
    /// `file` or `http`.
    pub kind: String,
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
            other => {
                return Err(format!(
                    "kind: expected \"file\" or \"http\", got {other:?}"
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
    json!({
        "gseq": r.gseq,
        "at": tollgate_core::format_rfc3339(r.at),
        "session": r.session,
        "seq": r.seq,
        "hash": hex::encode(r.hash),
        "event": event,
    })
}

/// Runs a sink until shutdown: deliver what follows the cursor, advance it, repeat.
pub async fn run(sink: Sink, store: Store, mut shutdown: watch::Receiver<bool>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok();
    let mut backoff = Duration::from_millis(200);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let delivered = deliver_once(&sink, &store, client.as_ref()).await;
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
) -> Result<usize, String> {
    let cursor = store.cursor(&sink.name).map_err(|e| e.to_string())?;
    let records = store
        .records_after(cursor, sink.batch)
        .map_err(|e| e.to_string())?;
    let Some(last) = records.last().map(|r| r.gseq) else {
        return Ok(0);
    };
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
