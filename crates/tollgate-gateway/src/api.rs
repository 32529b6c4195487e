//! The REST API (JSON, bearer key). Its OpenAPI document is served at `/api/openapi.json`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_core::{Gatekeeper, Identity, format_rfc3339, parse_duration};
use tollgate_pg::{PgError, PgFront, exec_simple};
use tollgate_store::{KeyRecord, SessionFilter, SessionRecord, Store};

use crate::approvals::{ACCESS_RULE, ApprovalBook, DecideError};
use crate::keys::Keys;

/// Most rows `exec` returns; the rest is counted as truncated, not buffered.
const MAX_EXEC_ROWS: usize = 100_000;

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Shared state of the API handlers.
pub struct ApiState {
    /// Keys and access.
    pub keys: Arc<Keys>,
    /// Approval requests.
    pub approvals: Arc<ApprovalBook>,
    /// Store, for reads.
    pub store: Store,
    /// PostgreSQL front, for `exec`.
    pub pg: Arc<PgFront>,
    /// Where the PostgreSQL front listens.
    pub postgres_addr: SocketAddr,
    /// The gateway's own audit stream (administrative acts).
    pub audit: tollgate_core::SessionLog,
}

impl ApiState {
    fn admin_event(&self, action: &str, by: &Identity, target: &str, detail: String) {
        self.audit.append(tollgate_core::EventKind::Admin {
            action: action.into(),
            by: Some(by.subject.clone()),
            target: Some(target.into()),
            detail,
        });
    }
}

type Shared = State<Arc<ApiState>>;

/// The router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/openapi.json", get(openapi))
        .route("/api/info", get(info))
        .route("/api/whoami", get(whoami))
        .route("/api/connections", get(connections))
        .route("/api/keys", get(list_keys).post(create_key))
        .route("/api/keys/{id}", delete(revoke_key))
        .route("/api/exec", post(exec))
        .route("/api/access", get(list_access).post(request_access))
        .route("/api/approvals", get(list_approvals))
        .route("/api/approvals/{id}", get(show_approval))
        .route("/api/approvals/{id}/approve", post(approve))
        .route("/api/approvals/{id}/deny", post(deny))
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{id}", get(show_session))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(4 * 1024 * 1024))
        .with_state(state)
}

/// A JSON error body: `{"error": {"code": …, "message": …}}`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    sqlstate: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            sqlstate: None,
        }
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "api internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let Some(s) = self.sqlstate {
            body["error"]["sqlstate"] = json!(s);
        }
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn caller(state: &ApiState, headers: &HeaderMap) -> ApiResult<Identity> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "missing bearer key: send Authorization: Bearer <key> (TOLLGATE_TOKEN for the CLI)",
            )
        })?;
    state.keys.authenticate(token).map_err(|r| {
        tracing::info!(code = ?r.code, "api authentication refused");
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", r.message)
    })
}

fn admin(state: &ApiState, headers: &HeaderMap) -> ApiResult<Identity> {
    let id = caller(state, headers)?;
    if !id.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_required",
            "this operation needs an administrator key",
        ));
    }
    Ok(id)
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (see /api/openapi.json)",
    )
}

async fn info(State(s): Shared) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "listeners": {"postgres": s.postgres_addr.to_string()},
    }))
}

async fn whoami(State(s): Shared, headers: HeaderMap) -> ApiResult<Json<Identity>> {
    Ok(Json(caller(&s, &headers)?))
}

async fn connections(State(s): Shared, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let id = caller(&s, &headers)?;
    let list: Vec<Value> = s
        .keys
        .usable_connections(&id)
        .iter()
        .map(|c| json!({"name": c.name, "kind": "postgres", "groups": c.groups}))
        .collect();
    Ok(Json(json!({ "connections": list })))
}

fn key_json(k: &KeyRecord) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "groups": k.groups,
        "admin": k.admin,
        "created_at": format_rfc3339(k.created_at),
        "expires_at": k.expires_at.map(format_rfc3339),
        "revoked_at": k.revoked_at.map(format_rfc3339),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
    ttl: Option<String>,
    #[serde(default)]
    admin: bool,
}

async fn create_key(
    State(s): Shared,
    headers: HeaderMap,
    body: Result<Json<CreateKey>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = admin(&s, &headers)?;
    let Json(req) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let ttl = req
        .ttl
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let created = s
        .keys
        .create(&req.name, req.groups, ttl, req.admin)
        .map_err(|e| match e {
            crate::GatewayError::Invalid(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m)
            }
            other => ApiError::internal(other),
        })?;
    let r = &created.record;
    s.admin_event(
        "key_created",
        &who,
        &r.id,
        format!(
            "name {}, groups [{}], admin {}, expires {}",
            r.name,
            r.groups.join(", "),
            r.admin,
            r.expires_at
                .map(tollgate_core::format_rfc3339)
                .unwrap_or_else(|| "never".into())
        ),
    );
    let mut body = key_json(&created.record);
    body["key"] = json!(created.token);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list_keys(State(s): Shared, headers: HeaderMap) -> ApiResult<Json<Value>> {
    admin(&s, &headers)?;
    let keys = s.keys.records().map_err(ApiError::internal)?;
    Ok(Json(
        json!({"keys": keys.iter().map(key_json).collect::<Vec<_>>()}),
    ))
}

async fn revoke_key(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let who = admin(&s, &headers)?;
    if !s.keys.revoke(&id).map_err(ApiError::internal)? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key with id {id}"),
        ));
    }
    s.admin_event("key_revoked", &who, &id, String::new());
    Ok(Json(json!({"id": id, "revoked": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecRequest {
    connection: String,
    input: String,
    max_rows: Option<usize>,
}

async fn exec(
    State(s): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<ExecRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let id = caller(&s, &headers)?;
    let Json(req) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    if req.input.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "input is empty",
        ));
    }
    if req.input.contains('\0') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "input contains a NUL byte",
        ));
    }
    let max_rows = req.max_rows.unwrap_or(10_000).min(MAX_EXEC_ROWS);
    let result = exec_simple(
        Arc::clone(&s.pg),
        id,
        &req.connection,
        &req.input,
        format!("api:{peer}"),
        max_rows,
    )
    .await;
    match result {
        Ok(r) => Ok(Json(json!({
            "columns": r.columns,
            "rows": r.rows,
            "tags": r.tags,
            "notices": r.notices,
            "truncated": r.truncated,
            "error": r.error.map(|(code, message)| json!({"sqlstate": code, "message": message})),
        }))),
        Err(PgError::Target { code, message }) => {
            let (status, kind) = match code.as_str() {
                "3D000" => (StatusCode::NOT_FOUND, "unknown_connection"),
                "42501" => (StatusCode::FORBIDDEN, "access_denied"),
                "28P01" | "28000" => (StatusCode::UNAUTHORIZED, "unauthenticated"),
                c if c.starts_with("08") => (StatusCode::BAD_GATEWAY, "target_unavailable"),
                _ => (StatusCode::BAD_GATEWAY, "refused"),
            };
            let mut e = ApiError::new(status, kind, message);
            e.sqlstate = Some(code);
            Err(e)
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

fn session_json(r: &SessionRecord) -> Value {
    json!({
        "id": r.id,
        "subject": r.subject,
        "key_id": r.key_id,
        "connection": r.connection,
        "protocol": r.protocol,
        "channel": r.channel,
        "client_addr": r.client_addr,
        "tls": r.tls,
        "started_at": format_rfc3339(r.started_at),
        "ended_at": r.ended_at.map(format_rfc3339),
        "end_reason": r.end_reason,
        "commands": r.commands,
        "refusals": r.refused,
    })
}

#[derive(Deserialize)]
struct SessionQuery {
    limit: Option<u32>,
}

async fn list_sessions(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Query<SessionQuery>,
) -> ApiResult<Json<Value>> {
    let id = caller(&s, &headers)?;
    let filter = SessionFilter {
        subject: (!id.admin).then(|| id.subject.clone()),
        limit: q.limit.unwrap_or(100).min(10_000),
    };
    let list = s.store.sessions(&filter).map_err(ApiError::internal)?;
    Ok(Json(
        json!({"sessions": list.iter().map(session_json).collect::<Vec<_>>()}),
    ))
}

async fn show_session(
    State(s): Shared,
    headers: HeaderMap,
    Path(sid): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = caller(&s, &headers)?;
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no session {sid}"),
        )
    };
    let record = s
        .store
        .session(&sid)
        .map_err(ApiError::internal)?
        .ok_or_else(missing)?;
    if !id.admin && record.subject.as_deref() != Some(id.subject.as_str()) {
        return Err(missing());
    }
    let events = s.store.events(&sid).map_err(ApiError::internal)?;
    let mut body = session_json(&record);
    body["events"] = serde_json::to_value(&events).map_err(ApiError::internal)?;
    Ok(Json(body))
}

#[derive(Deserialize)]
struct ApprovalQuery {
    status: Option<String>,
}

async fn list_approvals(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Query<ApprovalQuery>,
) -> ApiResult<Json<Value>> {
    let id = caller(&s, &headers)?;
    let list: Vec<Value> = s
        .approvals
        .list(&id)
        .iter()
        .map(|a| a.to_json())
        .filter(|a| q.status.as_deref().is_none_or(|st| a["status"] == st))
        .collect();
    Ok(Json(json!({ "approvals": list })))
}

async fn show_approval(
    State(s): Shared,
    headers: HeaderMap,
    Path(aid): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = caller(&s, &headers)?;
    s.approvals
        .get(&id, &aid)
        .map(|a| Json(a.to_json()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no approval request {aid}"),
            )
        })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    reason: String,
}

async fn decide(
    s: &ApiState,
    headers: &HeaderMap,
    aid: &str,
    approve: bool,
    body: Option<Json<DecisionBody>>,
) -> ApiResult<Json<Value>> {
    let id = caller(s, headers)?;
    let reason = body.map(|Json(b)| b.reason).unwrap_or_default();
    if reason.len() > 2000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "reason is longer than 2000 characters",
        ));
    }
    match s.approvals.decide(&id, aid, approve, &reason) {
        Ok(a) => {
            s.admin_event(
                "approval_decided",
                &id,
                aid,
                format!(
                    "{}{}",
                    if approve { "approved" } else { "denied" },
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    }
                ),
            );
            Ok(Json(a.to_json()))
        }
        Err(DecideError::NotFound(m)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no approval request {m}"),
        )),
        Err(DecideError::Forbidden(m)) => Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", m)),
        Err(DecideError::Conflict(m)) => Err(ApiError::new(StatusCode::CONFLICT, "conflict", m)),
        Err(DecideError::Store(e)) => Err(ApiError::internal(e)),
    }
}

async fn approve(
    State(s): Shared,
    headers: HeaderMap,
    Path(aid): Path<String>,
    body: Option<Json<DecisionBody>>,
) -> ApiResult<Json<Value>> {
    decide(&s, &headers, &aid, true, body).await
}

async fn deny(
    State(s): Shared,
    headers: HeaderMap,
    Path(aid): Path<String>,
    body: Option<Json<DecisionBody>>,
) -> ApiResult<Json<Value>> {
    decide(&s, &headers, &aid, false, body).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessRequest {
    connection: String,
    duration: String,
    reason: String,
}

async fn request_access(
    State(s): Shared,
    headers: HeaderMap,
    body: Result<Json<AccessRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = caller(&s, &headers)?;
    let Json(req) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let secs = parse_duration(&req.duration)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?
        .as_secs();
    let connection = s.keys.grantable(&id, &req.connection).map_err(|r| {
        let status = if r.code == tollgate_core::RefusalCode::UnknownConnection {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::FORBIDDEN
        };
        ApiError::new(status, "refused", r.message)
    })?;
    let a = s
        .approvals
        .request_access(&id, &connection, secs, &req.reason)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m))?;
    Ok((StatusCode::CREATED, Json(a.to_json())))
}

async fn list_access(State(s): Shared, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let id = caller(&s, &headers)?;
    let list: Vec<Value> = s
        .approvals
        .list(&id)
        .iter()
        .filter(|a| a.rule == ACCESS_RULE)
        .map(|a| a.to_json())
        .collect();
    Ok(Json(json!({ "access": list })))
}
