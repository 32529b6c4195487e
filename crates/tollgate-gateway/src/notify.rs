//! Webhook notifications for approvals: generic JSON or the Slack incoming-webhook shape,
//! delivered in the background with retries. Webhook URLs are secrets and never logged.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tollgate_core::Secret;

use crate::approvals::Approval;

/// Events a webhook can subscribe to.
pub const EVENTS: &[&str] = &["approval_requested", "approval_decided"];

/// `[[notifications]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSpec {
    /// Name, for logs.
    pub name: String,
    /// `json` (default) or `slack`.
    pub format: Option<String>,
    /// The webhook URL.
    pub url: Option<String>,
    /// Environment variable holding the URL (Slack URLs are secrets).
    pub url_env: Option<String>,
    /// Events to send (default: all).
    #[serde(default)]
    pub events: Vec<String>,
}

/// Body shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"event": …, "approval": {…}}`.
    Json,
    /// `{"text": …}` for Slack incoming webhooks.
    Slack,
}

/// A validated webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Name.
    pub name: String,
    /// Body shape.
    pub format: Format,
    url: Secret,
    events: Vec<String>,
}

impl Webhook {
    /// Validates a spec; errors say which key is wrong.
    pub fn from_spec(spec: &NotificationSpec) -> Result<Self, String> {
        if spec.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        let format = match spec.format.as_deref() {
            None | Some("json") => Format::Json,
            Some("slack") => Format::Slack,
            Some(other) => return Err(format!("format {other:?}: expected \"json\" or \"slack\"")),
        };
        let url = match (&spec.url, &spec.url_env) {
            (Some(u), None) => u.clone(),
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| format!("url_env: environment variable {var} is not set"))?,
            _ => return Err("set url or url_env (exactly one)".into()),
        };
        let parsed = url::Url::parse(&url).map_err(|e| format!("url: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("url: expected an http:// or https:// URL".into());
        }
        for e in &spec.events {
            if !EVENTS.contains(&e.as_str()) {
                return Err(format!(
                    "events: unknown event {e:?} (expected {})",
                    EVENTS.join(", ")
                ));
            }
        }
        Ok(Self {
            name: spec.name.clone(),
            format,
            url: Secret::new(url),
            events: spec.events.clone(),
        })
    }

    fn wants(&self, event: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event)
    }
}

struct Job {
    hook: Webhook,
    body: Value,
}

/// Queues notifications for the delivery task.
#[derive(Clone)]
pub struct Notifier {
    hooks: Vec<Webhook>,
    tx: Option<mpsc::UnboundedSender<Job>>,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn none() -> Self {
        Self {
            hooks: Vec::new(),
            tx: None,
        }
    }

    /// Starts the delivery task (on the current runtime).
    pub fn spawn(hooks: Vec<Webhook>) -> Self {
        if hooks.is_empty() {
            return Self::none();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(deliver(rx));
        Self {
            hooks,
            tx: Some(tx),
        }
    }

    /// Sends `event` about an approval to every subscribed webhook.
    pub fn approval(&self, event: &str, a: &Approval) {
        let Some(tx) = &self.tx else { return };
        for hook in self.hooks.iter().filter(|h| h.wants(event)) {
            let body = match hook.format {
                Format::Json => json!({ "event": event, "approval": a.to_json() }),
                Format::Slack => json!({ "text": slack_text(event, a) }),
            };
            let _ = tx.send(Job {
                hook: hook.clone(),
                body,
            });
        }
    }
}

fn slack_text(event: &str, a: &Approval) -> String {
    if event == "approval_requested" {
        format!(
            "*Approval needed* ({}) — {} on `{}` under rule `{}`:\n```{}```\nApprove: `tollgate approvals approve {}`",
            a.id, a.requester, a.connection, a.rule, a.text, a.id
        )
    } else {
        let last = a.decisions.last();
        format!(
            "Approval {} is *{}*{}",
            a.id,
            serde_json::to_value(a.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            last.map(|d| format!(" — {}: {}", d.by, d.reason))
                .unwrap_or_default()
        )
    }
}

const ATTEMPTS: u32 = 4;

async fn deliver(mut rx: mpsc::UnboundedReceiver<Job>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client unavailable; notifications are off");
            return;
        }
    };
    while let Some(job) = rx.recv().await {
        let client = client.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            for attempt in 1..=ATTEMPTS {
                let sent = client
                    .post(job.hook.url.expose())
                    .json(&job.body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => {
                        tracing::warn!(webhook = %job.hook.name, status = %r.status(), attempt, "webhook refused")
                    }
                    Err(e) => {
                        tracing::warn!(webhook = %job.hook.name, error = %e.without_url(), attempt, "webhook failed")
                    }
                }
                if attempt < ATTEMPTS {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
            tracing::error!(webhook = %job.hook.name, "webhook not delivered after {ATTEMPTS} attempts");
        });
    }
}
