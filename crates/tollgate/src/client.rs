//! The CLI side of the REST API: keys, exec, sessions.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::table::print_table;
use crate::{AccessCmd, ApiArgs, ApprovalsCmd, KeysCmd, SessionsCmd};

/// A configured API client. The bearer is `--token` / `TOLLGATE_TOKEN` when set, else the
/// `tollgate login` cache's token, refreshed as needed.
#[derive(Clone)]
pub struct Api {
    url: String,
    token: Option<String>,
    http: reqwest::Client,
    login: std::sync::Arc<crate::login::LoginBearer>,
}

impl From<ApiArgs> for Api {
    fn from(a: ApiArgs) -> Self {
        Self {
            url: a.url.trim_end_matches('/').to_string(),
            token: a.token.filter(|t| !t.is_empty()),
            http: reqwest::Client::new(),
            login: Default::default(),
        }
    }
}

/// An error the API answered with.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub message: String,
}

impl Api {
    /// The bearer this client sends: `TOLLGATE_TOKEN` first, else the login cache's.
    pub async fn token(&self) -> Result<String> {
        match &self.token {
            Some(t) => Ok(t.clone()),
            None => self.login.get().await,
        }
    }

    /// Sends a request; `Err(Ok(failure))` when the API refused, `Err(Err(e))` when it could not be reached.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Result<Value, ApiFailure>> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(self.token().await?);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.url))?;
        let status = resp.status();
        let text = resp.text().await.context("reading the gateway's answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
        if status.is_success() {
            return Ok(Ok(value));
        }
        let mut message = value["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}: {text}"));
        if status == reqwest::StatusCode::UNAUTHORIZED && self.token.is_none() {
            message.push_str(
                " (the token from `tollgate login`: the gateway must trust its issuer and client id; `tollgate login --status` shows them)",
            );
        }
        Ok(Err(ApiFailure {
            status: status.as_u16(),
            message,
        }))
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        match self.call(method, path, body).await? {
            Ok(v) => Ok(v),
            Err(f) => bail!("{} (HTTP {})", f.message, f.status),
        }
    }

    /// GET that must succeed.
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.ok(reqwest::Method::GET, path, None).await
    }
}

/// Prints a JSON array of objects as a table, one column per (header, field).
fn print_fields(items: &Value, columns: &[(&str, &str)]) {
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> = items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| columns.iter().map(|(_, k)| s(&x[*k])).collect())
                .collect()
        })
        .unwrap_or_default();
    print_table(&headers, &rows);
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

pub async fn keys(api: &Api, cmd: KeysCmd) -> Result<ExitCode> {
    match cmd {
        KeysCmd::Create {
            name,
            groups,
            ttl,
            admin,
        } => {
            let v = api
                .ok(
                    reqwest::Method::POST,
                    "/api/keys",
                    Some(json!({"name": name, "groups": groups, "ttl": ttl, "admin": admin})),
                )
                .await?;
            println!("id:         {}", s(&v["id"]));
            println!("name:       {}", s(&v["name"]));
            println!("groups:     {}", s(&v["groups"]));
            if !v["expires_at"].is_null() {
                println!("expires at: {}", s(&v["expires_at"]));
            }
            println!("{}", s(&v["key"]));
        }
        KeysCmd::List { json } => {
            let v = api.get("/api/keys").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v["keys"])?);
            } else {
                let mut keys = v["keys"].clone();
                for k in keys.as_array_mut().into_iter().flatten() {
                    let state = if k["revoked_at"].is_null() {
                        "active"
                    } else {
                        "revoked"
                    };
                    let admin = if k["admin"] == json!(true) { "yes" } else { "" };
                    k["state"] = json!(state);
                    k["admin_mark"] = json!(admin);
                }
                print_fields(
                    &keys,
                    &[
                        ("id", "id"),
                        ("name", "name"),
                        ("groups", "groups"),
                        ("admin", "admin_mark"),
                        ("created", "created_at"),
                        ("expires", "expires_at"),
                        ("state", "state"),
                    ],
                );
            }
        }
        KeysCmd::Revoke { id } => {
            api.ok(reqwest::Method::DELETE, &format!("/api/keys/{id}"), None)
                .await?;
            println!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn exec(
    api: &Api,
    connection: &str,
    input: &str,
    as_json: bool,
    max_rows: usize,
) -> Result<ExitCode> {
    let call = api.call(
        reqwest::Method::POST,
        "/api/exec",
        Some(json!({"connection": connection, "input": input, "max_rows": max_rows})),
    );
    let answer = with_approval_notices(api, connection, input, call).await?;
    let v = match answer {
        Ok(v) => v,
        Err(f) => {
            eprintln!("refused: {}", f.message);
            return Ok(ExitCode::from(2));
        }
    };
    if v["kind"] == "ssh" {
        return ssh_exec_output(&v, as_json);
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let columns: Vec<String> = v["columns"]
            .as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default();
        if !columns.is_empty() {
            let rows: Vec<Vec<String>> = v["rows"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .map(|r| {
                            r.as_array()
                                .map(|c| c.iter().map(s).collect())
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let headers: Vec<&str> = columns.iter().map(String::as_str).collect();
            print_table(&headers, &rows);
            let n = rows.len();
            println!("({n} row{})", if n == 1 { "" } else { "s" });
        } else if let Some(tags) = v["tags"].as_array() {
            for t in tags {
                println!("{}", s(t));
            }
        }
        for n in v["notices"].as_array().into_iter().flatten() {
            eprintln!("NOTICE: {}", s(n));
        }
        if v["truncated"] == json!(true) {
            eprintln!("(result truncated to {max_rows} rows)");
        }
    }
    if !v["error"].is_null() {
        eprintln!(
            "ERROR: {} (SQLSTATE {})",
            s(&v["error"]["message"]),
            s(&v["error"]["sqlstate"])
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Awaits an exec call; meanwhile, once a second after the first, tells the caller (on stderr)
/// about a pending approval request for this input on this connection, once per request, as
/// `ssh` shows a held command's notice while it waits.
async fn with_approval_notices<T>(
    api: &Api,
    connection: &str,
    input: &str,
    call: impl std::future::Future<Output = T>,
) -> T {
    let mut told = std::collections::HashSet::new();
    tokio::pin!(call);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(1),
    );
    loop {
        tokio::select! {
            answer = &mut call => return answer,
            _ = tick.tick() => {
                let Ok(v) = api.get("/api/approvals?status=pending").await else {
                    continue;
                };
                for a in v["approvals"].as_array().into_iter().flatten() {
                    let id = s(&a["id"]);
                    if a["connection"] == connection
                        && a["statement"] == input
                        && told.insert(id.clone())
                    {
                        eprintln!(
                            "tollgate: held under rule \"{}\": waiting for approval {id} (an approver runs `tollgate approvals approve {id}`)",
                            s(&a["rule"])
                        );
                    }
                }
            }
        }
    }
}

/// Prints an SSH command's result as `ssh` would: stdout, stderr, and its exit status as ours
/// (255 when a signal ended it, as `ssh` does).
fn ssh_exec_output(v: &Value, as_json: bool) -> Result<ExitCode> {
    use std::io::Write;
    if as_json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(v["stdout"].as_str().unwrap_or_default().as_bytes())?;
        out.flush()?;
        let mut err = std::io::stderr().lock();
        err.write_all(v["stderr"].as_str().unwrap_or_default().as_bytes())?;
        if v["truncated"] == json!(true) {
            writeln!(err, "tollgate: output truncated")?;
        }
        if let Some(signal) = v["exit_signal"].as_str() {
            writeln!(err, "tollgate: the command was killed by signal {signal}")?;
        }
    }
    let code = match v["exit_status"].as_u64() {
        Some(status) => u8::try_from(status).unwrap_or(255),
        None => 255,
    };
    Ok(ExitCode::from(code))
}

/// A terminal recording piece after the channel's first: the timeline shows the first only.
fn terminal_piece_without_header(e: &Value) -> bool {
    e["kind"]["type"] == "terminal" && e["kind"]["header"].is_null()
}

/// One replayed step of a session.
fn replay_step(start: i64, e: &Value) -> Value {
    let at = e["at"].as_i64().unwrap_or(0);
    let kind = &e["kind"];
    let mut step = serde_json::json!({
        "seq": e["seq"],
        "offset_ms": (at - start) as f64 / 1000.0,
        "at": tollgate_core::format_rfc3339(at),
        "type": kind["type"],
    });
    match kind["type"].as_str().unwrap_or("") {
        "command" => {
            let o = &kind["outcome"];
            let verdict = match o["status"].as_str().unwrap_or("ok") {
                "denied" => "denied",
                "approval_required" => "held for approval",
                _ if !o["approval"].is_null() => "allowed after approval",
                _ => "allowed",
            };
            step["statement"] = match kind["command"]["text"].as_str() {
                Some("") => format!("({})", s(&kind["command"]["step"])).into(),
                _ => kind["command"]["text"].clone(),
            };
            step["params"] = kind["command"]["params"].clone();
            step["verdict"] = verdict.into();
            step["rule"] = o["rule"].clone();
            step["approval"] = o["approval"].clone();
            step["status"] = o["status"].clone();
            step["tags"] = o["tags"].clone();
            step["rows"] = o["rows"].clone();
            step["duration_us"] = o["duration_us"].clone();
            step["error"] = o["error"].clone();
            step["masked"] = o["masked"].clone();
        }
        "refusal" => {
            step["code"] = kind["code"].clone();
            step["message"] = kind["message"].clone();
        }
        "file_transfer" => {
            let o = &kind["outcome"];
            step["via"] = kind["via"].clone();
            step["op"] = kind["op"].clone();
            step["path"] = kind["path"].clone();
            step["to"] = kind["to"].clone();
            step["bytes"] = kind["bytes"].clone();
            step["status"] = o["status"].clone();
            step["rule"] = o["rule"].clone();
            step["error"] = o["error"].clone();
        }
        "forward" => {
            let o = &kind["outcome"];
            step["destination"] = format!("{}:{}", s(&kind["host"]), s(&kind["port"])).into();
            step["bytes_out"] = kind["bytes_out"].clone();
            step["bytes_in"] = kind["bytes_in"].clone();
            step["status"] = o["status"].clone();
            step["rule"] = o["rule"].clone();
            step["error"] = o["error"].clone();
        }
        "terminal" => {
            step["channel"] = kind["channel"].clone();
            step["command"] = kind["header"]["command"].clone();
            step["size"] = format!(
                "{}x{}",
                s(&kind["header"]["width"]),
                s(&kind["header"]["height"])
            )
            .into();
        }
        "session_start" => {
            step["who"] = kind["identity"]["subject"].clone();
            step["connection"] = kind["connection"].clone();
            step["channel"] = kind["channel"].clone();
            step["client_addr"] = kind["client_addr"].clone();
            step["masking"] = kind["masking"].clone();
        }
        _ => step["reason"] = kind["reason"].clone(),
    }
    // Keep the line short: drop what the event did not have.
    if let Some(map) = step.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    step
}

fn replay_line(step: &Value) -> String {
    let offset = format!(
        "+{:>9.3}s",
        step["offset_ms"].as_f64().unwrap_or(0.0) / 1000.0
    );
    let body = match step["type"].as_str().unwrap_or("") {
        "session_start" => format!(
            "{} opened {} ({}, from {}; masking {})",
            s(&step["who"]),
            s(&step["connection"]),
            s(&step["channel"]),
            s(&step["client_addr"]),
            s(&step["masking"])
        ),
        "command" => {
            let mut l = format!("{}  [{}", s(&step["statement"]), s(&step["verdict"]));
            if !step["rule"].is_null() {
                l.push_str(&format!(" by {}", s(&step["rule"])));
            }
            l.push(']');
            if let Some(p) = step["params"].as_array().filter(|p| !p.is_empty()) {
                l.push_str(&format!(" params={}", Value::Array(p.clone())));
            }
            match step["error"].as_object() {
                Some(_) => l.push_str(&format!(
                    " → ERROR {} {}",
                    s(&step["error"]["code"]),
                    s(&step["error"]["message"])
                )),
                None => l.push_str(&format!(
                    " → {} ({} rows, {} µs)",
                    s(&step["tags"]),
                    s(&step["rows"]),
                    s(&step["duration_us"])
                )),
            }
            if let Some(m) = step["masked"].as_object().filter(|m| !m.is_empty()) {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                l.push_str(&format!(" masked {}", parts.join(", ")));
            }
            l
        }
        "refusal" => format!("REFUSED {}: {}", s(&step["code"]), s(&step["message"])),
        "file_transfer" => {
            let mut l = format!(
                "{} {} {}",
                s(&step["via"]),
                s(&step["op"]),
                s(&step["path"])
            );
            if !step["to"].is_null() {
                l.push_str(&format!(" → {}", s(&step["to"])));
            }
            l.push_str(&format!("  [{}", s(&step["status"])));
            if !step["rule"].is_null() {
                l.push_str(&format!(" by {}", s(&step["rule"])));
            }
            l.push_str(&format!("] {} bytes", s(&step["bytes"])));
            if step["error"].is_object() {
                l.push_str(&format!(" → ERROR {}", s(&step["error"]["message"])));
            }
            l
        }
        "forward" => {
            let mut l = format!(
                "forward to {}  [{}",
                s(&step["destination"]),
                s(&step["status"])
            );
            if !step["rule"].is_null() {
                l.push_str(&format!(" by {}", s(&step["rule"])));
            }
            l.push_str(&format!(
                "] {} bytes out, {} bytes in",
                s(&step["bytes_out"]),
                s(&step["bytes_in"])
            ));
            if step["error"].is_object() {
                l.push_str(&format!(" → ERROR {}", s(&step["error"]["message"])));
            }
            l
        }
        "terminal" => {
            let what = match step["command"].as_str().filter(|c| !c.is_empty()) {
                Some(c) => format!("exec {c}"),
                None => "shell".into(),
            };
            format!(
                "terminal recording of channel {} ({what}, {}): tollgate sessions replay --channel {}",
                s(&step["channel"]),
                s(&step["size"]),
                s(&step["channel"])
            )
        }
        "session_end" => format!("ended: {}", s(&step["reason"])),
        "session_abandoned" => format!("abandoned: {}", s(&step["reason"])),
        other => other.to_string(),
    };
    format!("{offset}  {body}")
}

pub async fn sessions(api: &Api, cmd: SessionsCmd) -> Result<ExitCode> {
    match cmd {
        SessionsCmd::Replay {
            id,
            format,
            channel,
            output,
            speed,
            max_idle,
        } => {
            let v = api.get(&format!("/api/sessions/{id}")).await?;
            let events = v["events"].as_array().cloned().unwrap_or_default();
            let tracks = crate::replay::tracks(&events);
            match format.as_str() {
                "asciicast" => {
                    let mut picked = crate::replay::pick(tracks, channel, &id)?;
                    let track = match picked.len() {
                        0 => anyhow::bail!("session {id} has no terminal recording"),
                        1 => picked.remove(0),
                        _ => {
                            let list: Vec<String> =
                                picked.iter().map(crate::replay::describe).collect();
                            anyhow::bail!(
                                "session {id} has several terminal recordings; pick one with --channel:\n  {}",
                                list.join("\n  ")
                            )
                        }
                    };
                    match output {
                        Some(path) => {
                            let mut file = std::fs::File::create(&path)
                                .with_context(|| format!("cannot write {}", path.display()))?;
                            crate::replay::write_asciicast(&mut file, &track, &id)?;
                        }
                        None => crate::replay::write_asciicast(
                            &mut std::io::stdout().lock(),
                            &track,
                            &id,
                        )?,
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                "play" | "auto" if format == "play" || !tracks.is_empty() => {
                    let picked = crate::replay::pick(tracks, channel, &id)?;
                    if picked.is_empty() {
                        anyhow::bail!("session {id} has no terminal recording");
                    }
                    crate::replay::play(&picked, speed, max_idle).await?;
                    return Ok(ExitCode::SUCCESS);
                }
                _ => {}
            }
            let start = events.first().and_then(|e| e["at"].as_i64()).unwrap_or(0);
            // A strict command's `command_started` event is followed by its `command` event,
            // which carries the statement and its outcome: the replay shows that one.
            for e in events.iter().filter(|e| {
                e["kind"]["type"] != "command_started" && !terminal_piece_without_header(e)
            }) {
                let step = replay_step(start, e);
                if format == "json" {
                    println!("{}", serde_json::to_string(&step)?);
                } else {
                    println!("{}", replay_line(&step));
                }
            }
        }
        SessionsCmd::List { json, limit } => {
            let v = api.get(&format!("/api/sessions?limit={limit}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v["sessions"])?);
            } else {
                print_fields(
                    &v["sessions"],
                    &[
                        ("id", "id"),
                        ("who", "subject"),
                        ("connection", "connection"),
                        ("via", "channel"),
                        ("client", "client_addr"),
                        ("started", "started_at"),
                        ("ended", "ended_at"),
                        ("commands", "commands"),
                        ("end", "end_reason"),
                    ],
                );
            }
        }
        SessionsCmd::Show { id, json } => {
            let v = api.get(&format!("/api/sessions/{id}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for key in [
                    "id",
                    "subject",
                    "key_id",
                    "connection",
                    "channel",
                    "client_addr",
                    "tls",
                    "started_at",
                    "ended_at",
                    "end_reason",
                ] {
                    println!("{key:<12} {}", s(&v[key]));
                }
                println!();
                for e in v["events"].as_array().into_iter().flatten() {
                    let at = tollgate_core::format_rfc3339(e["at"].as_i64().unwrap_or(0));
                    let kind = &e["kind"];
                    let line = match kind["type"].as_str().unwrap_or("") {
                        "command" => {
                            let o = &kind["outcome"];
                            let mut l = format!(
                                "{} [{}] {}",
                                s(&o["status"]),
                                s(&kind["command"]["step"]),
                                s(&kind["command"]["text"])
                            );
                            if let Some(p) = kind["command"]["params"].as_array() {
                                l.push_str(&format!(" params={}", Value::Array(p.clone())));
                            }
                            l.push_str(&format!(
                                " → {} rows={} {}µs",
                                s(&o["tags"]),
                                s(&o["rows"]),
                                s(&o["duration_us"])
                            ));
                            if !o["error"].is_null() {
                                l.push_str(&format!(
                                    " error={} {}",
                                    s(&o["error"]["code"]),
                                    s(&o["error"]["message"])
                                ));
                            }
                            l
                        }
                        "refusal" => {
                            format!("REFUSED {}: {}", s(&kind["code"]), s(&kind["message"]))
                        }
                        "session_start" => format!(
                            "session start ({} via {})",
                            s(&kind["connection"]),
                            s(&kind["channel"])
                        ),
                        "session_end" => format!("session end: {}", s(&kind["reason"])),
                        "command_started" => format!(
                            "started [{}] {}",
                            s(&kind["command"]["step"]),
                            s(&kind["command"]["text"])
                        ),
                        "session_abandoned" => {
                            format!("session abandoned: {}", s(&kind["reason"]))
                        }
                        other => other.to_string(),
                    };
                    println!("{:>4} {at} {line}", s(&e["seq"]));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_approval(a: &Value) {
    for key in [
        "id",
        "status",
        "requester",
        "connection",
        "rule",
        "statement",
        "params",
        "sha256",
        "approvers",
        "min_approvals",
        "approvals",
        "mode",
        "created_at",
        "expires_at",
        "used_at",
    ] {
        if !a[key].is_null() {
            println!("{key:<14} {}", s(&a[key]));
        }
    }
    for d in a["decisions"].as_array().into_iter().flatten() {
        let verb = if d["approve"] == json!(true) {
            "approved"
        } else {
            "denied"
        };
        println!(
            "{:<14} {verb} by {} at {}: {}",
            "decision",
            s(&d["by"]),
            s(&d["at"]),
            s(&d["reason"])
        );
    }
}

pub async fn approvals(api: &Api, cmd: ApprovalsCmd) -> Result<ExitCode> {
    match cmd {
        ApprovalsCmd::List { json, status } => {
            let path = match &status {
                Some(st) => format!("/api/approvals?status={st}"),
                None => "/api/approvals".to_string(),
            };
            let v = api.get(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v["approvals"])?);
            } else {
                let mut list = v["approvals"].clone();
                for x in list.as_array_mut().into_iter().flatten() {
                    let mut stmt = s(&x["statement"]).replace('\n', " ");
                    if stmt.chars().count() > 60 {
                        stmt = stmt.chars().take(57).collect::<String>() + "...";
                    }
                    x["short"] = json!(stmt);
                    x["tally"] =
                        json!(format!("{}/{}", s(&x["approvals"]), s(&x["min_approvals"])));
                }
                print_fields(
                    &list,
                    &[
                        ("id", "id"),
                        ("status", "status"),
                        ("requester", "requester"),
                        ("connection", "connection"),
                        ("rule", "rule"),
                        ("approvals", "tally"),
                        ("expires", "expires_at"),
                        ("statement", "short"),
                    ],
                );
            }
        }
        ApprovalsCmd::Show { id, json } => {
            let v = api.get(&format!("/api/approvals/{id}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_approval(&v);
            }
        }
        ApprovalsCmd::Approve { id, reason } => {
            let v = api
                .ok(
                    reqwest::Method::POST,
                    &format!("/api/approvals/{id}/approve"),
                    Some(json!({ "reason": reason })),
                )
                .await?;
            println!(
                "{} is {} ({}/{} approvals)",
                s(&v["id"]),
                s(&v["status"]),
                s(&v["approvals"]),
                s(&v["min_approvals"])
            );
        }
        ApprovalsCmd::Deny { id, reason } => {
            let v = api
                .ok(
                    reqwest::Method::POST,
                    &format!("/api/approvals/{id}/deny"),
                    Some(json!({ "reason": reason })),
                )
                .await?;
            println!("{} is {}", s(&v["id"]), s(&v["status"]));
        }
        ApprovalsCmd::Wait { id, timeout } => {
            let limit = tollgate_core::parse_duration(&timeout)?;
            let deadline = std::time::Instant::now() + limit;
            loop {
                let v = api.get(&format!("/api/approvals/{id}")).await?;
                match v["status"].as_str().unwrap_or("") {
                    "approved" | "used" => {
                        println!("{id} is {}", s(&v["status"]));
                        return Ok(ExitCode::SUCCESS);
                    }
                    "denied" | "expired" => {
                        eprintln!("{id} is {}", s(&v["status"]));
                        return Ok(ExitCode::FAILURE);
                    }
                    _ => {}
                }
                if std::time::Instant::now() >= deadline {
                    eprintln!("{id} is still pending after {timeout}");
                    return Ok(ExitCode::FAILURE);
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn access(api: &Api, cmd: AccessCmd) -> Result<ExitCode> {
    match cmd {
        AccessCmd::Request {
            connection,
            duration,
            reason,
        } => {
            let v = api
                .ok(
                    reqwest::Method::POST,
                    "/api/access",
                    Some(json!({"connection": connection, "duration": duration, "reason": reason})),
                )
                .await?;
            println!(
                "requested access to {connection} for {duration}: {} (pending; an approver runs `tollgate approvals approve {}`)",
                s(&v["id"]),
                s(&v["id"])
            );
            println!("{}", s(&v["id"]));
        }
        AccessCmd::List { json } => {
            let v = api.get("/api/access").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v["access"])?);
            } else {
                print_fields(
                    &v["access"],
                    &[
                        ("id", "id"),
                        ("status", "status"),
                        ("requester", "requester"),
                        ("connection", "connection"),
                        ("seconds", "access_seconds"),
                        ("until", "grant_until"),
                    ],
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
