//! The REST API (JSON; an API key or an OIDC token as bearer). Its OpenAPI document is served
//! at `/api/openapi.json`.
//!
//! Every route but `health`, `openapi.json` and `info` authenticates the caller and checks its
//! role (`roles.rs`):
//!
//! | route | admin | auditor | user |
//! |---|---|---|---|
//! | `GET /api/auth/login`, `GET /api/auth/callback` | no token needed | | |
//! | `GET /api/whoami`, `GET /api/auth/me`, `POST /api/auth/logout` | yes | yes | yes |
//! | `GET /api/connections` | yes | no | yes |
//! | `GET/POST /api/keys`, `DELETE /api/keys/{id}` | yes | no | no |
//! | `POST /api/tokens/revoke`, `GET /api/tokens/revoked` | yes | no | no |
//! | `POST /api/exec` | yes | no | yes |
//! | `GET/POST /api/access` | yes | no | own |
//! | `GET /api/approvals[/{id}]`, `POST …/approve`, `…/deny` | yes | no | own and those their groups may decide |
//! | `GET /api/sessions[/{id}]` | all | all | own |
//! | `GET /api/audit/gateway`, `/api/audit/verify`, `/api/audit/export` | yes | yes | no |
//!
//! A refused authentication or role is recorded as a `refusal` event in the gateway's own
//! audit stream, with the route, the client address and the caller.
//!
//! With `[oidc.web]`, `/api/auth/login`, `/api/auth/callback`, `/api/auth/logout` and
//! `/api/auth/me` give browsers a session cookie (`weblogin.rs`). Every route that takes a
//! bearer takes the cookie too, with the same roles; without `Authorization`, the cookie is
//! used, and a cookie request that changes state (not GET, HEAD or OPTIONS) must carry
//! `X-Tollgate-CSRF` with the session's token (403 `csrf_required` otherwise).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_core::{
    EventKind, Gatekeeper, Identity, Protocol, Refusal, RefusalCode, format_rfc3339,
    parse_duration, parse_rfc3339,
};
use tollgate_pg::{PgError, PgFront, exec_simple};
use tollgate_ssh::{SshError, SshExecLimits, SshFront, exec_command};
use tollgate_store::{
    KeyRecord, RevocationKind, SessionFilter, SessionRecord, SshKeyOwner, SshKeyRecord, Store,
    TokenRevocation,
};

use crate::approvals::{ACCESS_RULE, ApprovalBook, DecideError};
use crate::keys::{Keys, SshKeyError, describe};
use crate::roles::Role;
use crate::weblogin::{self, WebLogin};

/// Most rows `exec` returns; the rest is counted as truncated, not buffered.
const MAX_EXEC_ROWS: usize = 100_000;

/// Most bytes of stdout, and of stderr, `exec` returns for an SSH command by default, and at
/// most; the rest is read and dropped (`truncated`).
const SSH_EXEC_OUTPUT: usize = 1024 * 1024;
const MAX_SSH_EXEC_OUTPUT: usize = 16 * 1024 * 1024;

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
    /// SSH front, for `exec` on SSH connections (running when an SSH connection exists).
    pub ssh: Option<Arc<SshFront>>,
    /// Where the PostgreSQL front listens.
    pub postgres_addr: SocketAddr,
    /// The gateway's own audit stream (administrative acts, API refusals).
    pub audit: tollgate_core::SessionLog,
    /// The data dir, for audit verification and exports.
    pub data_dir: PathBuf,
    /// The web login, when `[oidc.web]` is configured.
    pub web: Option<Arc<WebLogin>>,
}

impl ApiState {
    fn admin_event(&self, action: &str, by: &Identity, target: &str, detail: String) {
        self.audit.append(EventKind::Admin {
            action: action.into(),
            by: Some(by.subject.clone()),
            target: Some(target.into()),
            detail,
        });
    }

    /// Records a refused API call in the gateway's stream.
    fn refusal_event(&self, refusal: Refusal) {
        self.audit.append(EventKind::Refusal(refusal));
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
        .route("/api/auth/login", get(web_login))
        .route("/api/auth/callback", get(web_callback))
        .route("/api/auth/logout", post(web_logout))
        .route("/api/auth/me", get(web_me))
        .route("/api/connections", get(connections))
        .route("/api/keys", get(list_keys).post(create_key))
        .route("/api/keys/{id}", delete(revoke_key))
        .route("/api/ssh-keys", get(list_ssh_keys).post(add_ssh_key))
        .route("/api/ssh-keys/{fingerprint}", delete(remove_ssh_key))
        .route("/api/tokens/revoke", post(revoke_token))
        .route("/api/tokens/revoked", get(list_revoked_tokens))
        .route("/api/exec", post(exec))
        .route("/api/access", get(list_access).post(request_access))
        .route("/api/approvals", get(list_approvals))
        .route("/api/approvals/{id}", get(show_approval))
        .route("/api/approvals/{id}/approve", post(approve))
        .route("/api/approvals/{id}/deny", post(deny))
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{id}", get(show_session))
        .route("/api/audit/gateway", get(gateway_audit))
        .route("/api/audit/verify", get(audit_verify))
        .route("/api/audit/export", get(audit_export))
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

/// An authenticated caller, its role, and where the call came from (for the record).
pub struct Caller {
    /// Who.
    pub id: Identity,
    /// Its role.
    pub role: Role,
    /// `METHOD /path`.
    route: String,
    /// The client's address.
    peer: String,
    /// The web session, when the cookie authenticated the call.
    session: Option<SessionRef>,
}

/// The web session behind a call.
struct SessionRef {
    /// The cookie's id (for the CSRF token; never stored).
    id: String,
    /// What the store keeps.
    id_hash: String,
    /// Its end, µs.
    expires_at: i64,
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let route = format!("{} {}", parts.method, parts.uri.path());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_else(|| "unknown".into());
        caller(state, &parts.method, &parts.headers, route, peer).await
    }
}

/// Authenticates the bearer token (an API key or an OIDC token). A refusal tells the client the
/// public reason only, and is recorded with its detail in the gateway's stream.
async fn caller(
    state: &ApiState,
    method: &Method,
    headers: &HeaderMap,
    route: String,
    peer: String,
) -> ApiResult<Caller> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if token.is_none()
        && let Some(web) = &state.web
        && let Some(id) = weblogin::read_cookie(headers, web.cookies.session_name())
    {
        return session_caller(state, method, headers, id, route, peer);
    }
    let Some(token) = token else {
        let message = "missing bearer token: send Authorization: Bearer <API key or OIDC token> (TOLLGATE_TOKEN for the CLI)";
        state.refusal_event(
            Refusal::new(RefusalCode::BadCredentials, message)
                .with_detail(format!("API {route} from {peer}: no bearer token")),
        );
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            message,
        ));
    };
    match state.keys.authenticate(token).await {
        Ok(id) => {
            let role = state.keys.role(&id);
            Ok(Caller {
                id,
                role,
                route,
                peer,
                session: None,
            })
        }
        Err(r) => {
            tracing::info!(code = ?r.code, route = %route, "api authentication refused");
            let (status, code) = if r.code == RefusalCode::IdentityUnavailable {
                (StatusCode::SERVICE_UNAVAILABLE, "identity_unavailable")
            } else {
                (StatusCode::UNAUTHORIZED, "unauthenticated")
            };
            let error = ApiError::new(status, code, r.message.clone());
            let detail = format!(
                "API {route} from {peer}: {}",
                r.detail.as_deref().unwrap_or(r.message.as_str())
            );
            state.refusal_event(r.with_detail(detail));
            Err(error)
        }
    }
}

/// Authenticates a web session cookie: the session must exist, not have ended, and its token
/// not be revoked; a call that changes state must carry the CSRF header. Refusals are recorded.
fn session_caller(
    state: &ApiState,
    method: &Method,
    headers: &HeaderMap,
    id: &str,
    route: String,
    peer: String,
) -> ApiResult<Caller> {
    let refuse = |r: Refusal, status: StatusCode, code: &'static str| {
        tracing::info!(code = ?r.code, route = %route, "api session refused");
        let error = ApiError::new(status, code, r.message.clone());
        let detail = format!(
            "API {route} from {peer}: {}",
            r.detail.as_deref().unwrap_or(r.message.as_str())
        );
        state.refusal_event(r.with_detail(detail));
        error
    };
    let id_hash = weblogin::session_hash(id);
    let Some(session) = state
        .store
        .web_session(&id_hash)
        .map_err(ApiError::internal)?
    else {
        return Err(refuse(
            Refusal::new(
                RefusalCode::BadCredentials,
                "no such session (logged out or expired): log in again at /api/auth/login",
            )
            .with_detail("unknown web session cookie"),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ));
    };
    let now = tollgate_core::now_micros();
    let mut identity = session.identity.clone();
    identity.expires_at = Some(session.expires_at);
    let identity = match state.keys.session_identity(&identity, now) {
        Ok(i) => i,
        Err(r) => {
            if r.code == RefusalCode::Expired {
                let _ = state.store.delete_web_session(&id_hash);
            }
            return Err(refuse(r, StatusCode::UNAUTHORIZED, "unauthenticated"));
        }
    };
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let given = headers
            .get(weblogin::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !weblogin::csrf_matches(id, given) {
            return Err(refuse(
                Refusal::new(
                    RefusalCode::Forbidden,
                    "a request authenticated by the session cookie that changes state needs the X-Tollgate-CSRF header with the csrf_token of GET /api/auth/me",
                )
                .with_detail(format!(
                    "web session of {}: {} X-Tollgate-CSRF header",
                    describe(&identity),
                    if given.is_empty() { "no" } else { "a wrong" }
                )),
                StatusCode::FORBIDDEN,
                "csrf_required",
            ));
        }
    }
    let role = state.keys.role(&identity);
    Ok(Caller {
        id: identity,
        role,
        route,
        peer,
        session: Some(SessionRef {
            id: id.to_string(),
            id_hash,
            expires_at: session.expires_at,
        }),
    })
}

impl Caller {
    /// Lets the call through when the caller's role is one of `allowed`; otherwise answers 403
    /// and records the refusal. `what` says what the call does, for the message.
    fn allow(&self, state: &ApiState, allowed: &[Role], what: &str) -> ApiResult<()> {
        if allowed.contains(&self.role) {
            return Ok(());
        }
        let subject = &self.id.subject;
        let role = self.role.as_str();
        let (code, refusal_code, message) = if allowed == [Role::Admin] {
            (
                "admin_required",
                RefusalCode::AdminRequired,
                format!(
                    "{what} needs an administrator (an administrator key, or a member of a [roles] admin_groups group); {subject} is {}",
                    article(role)
                ),
            )
        } else if self.role == Role::Auditor {
            (
                "forbidden",
                RefusalCode::Forbidden,
                format!(
                    "{subject} is an auditor: auditors read sessions and the audit trail, and may not {what}"
                ),
            )
        } else {
            (
                "forbidden",
                RefusalCode::Forbidden,
                format!(
                    "{what} needs the auditor or admin role (a member of a [roles] auditor_groups or admin_groups group); {subject} is {}",
                    article(role)
                ),
            )
        };
        state.refusal_event(
            Refusal::new(refusal_code, message.clone()).with_detail(format!(
                "API {} from {}: {} ({role})",
                self.route,
                self.peer,
                describe(&self.id)
            )),
        );
        Err(ApiError::new(StatusCode::FORBIDDEN, code, message))
    }

    /// Whether the caller sees every session (admins and auditors) or only their own.
    fn sees_all_sessions(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Auditor)
    }
}

fn article(role: &str) -> String {
    match role {
        "admin" => "an administrator".into(),
        "auditor" => "an auditor".into(),
        _ => "a user".into(),
    }
}

const ADMIN: &[Role] = &[Role::Admin];
const USERS: &[Role] = &[Role::Admin, Role::User];
const READERS: &[Role] = &[Role::Admin, Role::Auditor];

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

async fn whoami(c: Caller) -> ApiResult<Json<Value>> {
    let mut body = serde_json::to_value(&c.id).map_err(ApiError::internal)?;
    body["role"] = json!(c.role.as_str());
    Ok(Json(body))
}

async fn connections(State(s): Shared, c: Caller) -> ApiResult<Json<Value>> {
    c.allow(&s, USERS, "list connections")?;
    let list: Vec<Value> = s
        .keys
        .usable_connections(&c.id)
        .iter()
        .map(|c| json!({"name": c.name, "kind": c.protocol, "groups": c.groups}))
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
    c: Caller,
    body: Result<Json<CreateKey>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    c.allow(&s, ADMIN, "creating a key")?;
    let who = c.id;
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

async fn list_keys(State(s): Shared, c: Caller) -> ApiResult<Json<Value>> {
    c.allow(&s, ADMIN, "listing keys")?;
    let keys = s.keys.records().map_err(ApiError::internal)?;
    Ok(Json(
        json!({"keys": keys.iter().map(key_json).collect::<Vec<_>>()}),
    ))
}

async fn revoke_key(State(s): Shared, c: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    c.allow(&s, ADMIN, "revoking a key")?;
    let who = c.id;
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

fn ssh_key_json(k: &SshKeyRecord) -> Value {
    let (owner, key_id) = match &k.owner {
        SshKeyOwner::ApiKey(id) => ("api_key", Some(id.as_str())),
        SshKeyOwner::Identity(_) => ("identity", None),
    };
    json!({
        "fingerprint": k.fingerprint,
        "public_key": k.public_key,
        "name": k.name,
        "subject": k.subject,
        "owner": owner,
        "key_id": key_id,
        "created_at": format_rfc3339(k.created_at),
        "expires_at": k.expires_at.map(format_rfc3339),
    })
}

fn ssh_key_error(e: SshKeyError) -> ApiError {
    match e {
        SshKeyError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m),
        SshKeyError::Exists(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        SshKeyError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
        SshKeyError::Internal(e) => ApiError::internal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddSshKey {
    public_key: String,
    name: Option<String>,
    ttl: Option<String>,
    key_id: Option<String>,
}

async fn add_ssh_key(
    State(s): Shared,
    c: Caller,
    body: Result<Json<AddSshKey>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    c.allow(&s, USERS, "registering an SSH key")?;
    let Json(req) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    if req.key_id.is_some() {
        c.allow(&s, ADMIN, "registering an SSH key for another key")?;
    }
    let ttl = req
        .ttl
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let record = s
        .keys
        .register_ssh_key(
            &c.id,
            req.key_id.as_deref(),
            &req.public_key,
            req.name.as_deref(),
            ttl,
        )
        .map_err(ssh_key_error)?;
    s.admin_event(
        "ssh_key_registered",
        &c.id,
        &record.fingerprint,
        format!(
            "for {}, name {}, expires {}",
            record.subject,
            record.name,
            record
                .expires_at
                .map(format_rfc3339)
                .unwrap_or_else(|| "with its key".into())
        ),
    );
    Ok((StatusCode::CREATED, Json(ssh_key_json(&record))))
}

async fn list_ssh_keys(State(s): Shared, c: Caller) -> ApiResult<Json<Value>> {
    c.allow(&s, USERS, "listing SSH keys")?;
    let all = c.role == Role::Admin;
    let keys = s.keys.ssh_keys(&c.id, all).map_err(ApiError::internal)?;
    Ok(Json(
        json!({"ssh_keys": keys.iter().map(ssh_key_json).collect::<Vec<_>>()}),
    ))
}

async fn remove_ssh_key(
    State(s): Shared,
    c: Caller,
    Path(fingerprint): Path<String>,
) -> ApiResult<Json<Value>> {
    c.allow(&s, USERS, "removing an SSH key")?;
    let all = c.role == Role::Admin;
    let record = s
        .keys
        .remove_ssh_key(&c.id, all, &fingerprint)
        .map_err(ssh_key_error)?;
    s.admin_event(
        "ssh_key_removed",
        &c.id,
        &record.fingerprint,
        format!("of {}", record.subject),
    );
    Ok(Json(
        json!({"fingerprint": record.fingerprint, "removed": true}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeToken {
    jti: Option<String>,
    subject: Option<String>,
    #[serde(default)]
    reason: String,
}

fn revocation_json(r: &TokenRevocation) -> Value {
    json!({
        "kind": r.kind,
        "value": r.value,
        "revoked_at": format_rfc3339(r.revoked_at),
        "revoked_by": r.revoked_by,
        "reason": r.reason,
    })
}

async fn revoke_token(
    State(s): Shared,
    c: Caller,
    body: Result<Json<RevokeToken>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    c.allow(&s, ADMIN, "revoking tokens")?;
    let Json(req) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let (kind, value) = match (req.jti, req.subject) {
        (Some(jti), None) => (RevocationKind::Jti, jti),
        (None, Some(subject)) => (RevocationKind::Subject, subject),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give exactly one of jti (one token) or subject (every token of that subject issued until now)",
            ));
        }
    };
    let r = s
        .keys
        .revoke_token(kind, &value, &c.id, &req.reason)
        .map_err(|e| match e {
            crate::GatewayError::Invalid(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m)
            }
            other => ApiError::internal(other),
        })?;
    s.admin_event(
        "token_revoked",
        &c.id,
        &format!("{}:{}", r.kind.as_str(), r.value),
        format!(
            "{}{}",
            match r.kind {
                RevocationKind::Jti => "the token is refused from now on".to_string(),
                RevocationKind::Subject => format!(
                    "tokens of the subject issued up to {} are refused",
                    format_rfc3339(r.revoked_at)
                ),
            },
            if r.reason.is_empty() {
                String::new()
            } else {
                format!("; reason: {}", r.reason)
            }
        ),
    );
    Ok(Json(revocation_json(&r)))
}

async fn list_revoked_tokens(State(s): Shared, c: Caller) -> ApiResult<Json<Value>> {
    c.allow(&s, ADMIN, "listing token revocations")?;
    let list = s.keys.token_revocations().map_err(ApiError::internal)?;
    Ok(Json(
        json!({"revocations": list.iter().map(revocation_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecRequest {
    connection: String,
    input: String,
    max_rows: Option<usize>,
    max_output_bytes: Option<usize>,
}

async fn exec(
    State(s): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    c: Caller,
    body: Result<Json<ExecRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    c.allow(&s, USERS, "run commands")?;
    let id = c.id;
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
    if s.keys.protocol_of(&req.connection) == Some(Protocol::Ssh) {
        return exec_ssh(&s, id, &req, format!("api:{peer}")).await;
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

/// `exec` on an SSH connection: the command goes through the SSH front as an exec request.
async fn exec_ssh(
    s: &ApiState,
    id: Identity,
    req: &ExecRequest,
    peer: String,
) -> ApiResult<Json<Value>> {
    let Some(front) = s.ssh.as_ref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "target_unavailable",
            "the SSH front is not running",
        ));
    };
    let limits = SshExecLimits {
        max_output_bytes: req
            .max_output_bytes
            .unwrap_or(SSH_EXEC_OUTPUT)
            .min(MAX_SSH_EXEC_OUTPUT),
    };
    let result = exec_command(
        Arc::clone(front),
        id,
        &req.connection,
        &req.input,
        peer,
        limits,
    )
    .await;
    match result {
        Ok(r) => Ok(Json(json!({
            "kind": "ssh",
            "stdout": String::from_utf8_lossy(&r.stdout),
            "stderr": String::from_utf8_lossy(&r.stderr),
            "exit_status": r.exit_status,
            "exit_signal": r.exit_signal,
            "truncated": r.truncated,
        }))),
        Err(SshError::Refused(refusal)) => {
            let (status, kind) = match refusal.code {
                RefusalCode::UnknownConnection => (StatusCode::NOT_FOUND, "unknown_connection"),
                RefusalCode::AccessDenied | RefusalCode::Forbidden => {
                    (StatusCode::FORBIDDEN, "access_denied")
                }
                RefusalCode::BadCredentials | RefusalCode::Revoked | RefusalCode::Expired => {
                    (StatusCode::UNAUTHORIZED, "unauthenticated")
                }
                RefusalCode::UpstreamUnavailable => (StatusCode::BAD_GATEWAY, "target_unavailable"),
                _ => (StatusCode::BAD_GATEWAY, "refused"),
            };
            Err(ApiError::new(status, kind, refusal.message))
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
    c: Caller,
    Query(q): Query<SessionQuery>,
) -> ApiResult<Json<Value>> {
    let filter = SessionFilter {
        subject: (!c.sees_all_sessions()).then(|| c.id.subject.clone()),
        limit: q.limit.unwrap_or(100).min(10_000),
    };
    let list = s.store.sessions(&filter).map_err(ApiError::internal)?;
    Ok(Json(
        json!({"sessions": list.iter().map(session_json).collect::<Vec<_>>()}),
    ))
}

async fn show_session(
    State(s): Shared,
    c: Caller,
    Path(sid): Path<String>,
) -> ApiResult<Json<Value>> {
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
    if !c.sees_all_sessions() && record.subject.as_deref() != Some(c.id.subject.as_str()) {
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
    c: Caller,
    Query(q): Query<ApprovalQuery>,
) -> ApiResult<Json<Value>> {
    c.allow(&s, USERS, "read approval requests")?;
    let list: Vec<Value> = s
        .approvals
        .list(&c.id)
        .iter()
        .map(|a| a.to_json())
        .filter(|a| q.status.as_deref().is_none_or(|st| a["status"] == st))
        .collect();
    Ok(Json(json!({ "approvals": list })))
}

async fn show_approval(
    State(s): Shared,
    c: Caller,
    Path(aid): Path<String>,
) -> ApiResult<Json<Value>> {
    c.allow(&s, USERS, "read approval requests")?;
    s.approvals
        .get(&c.id, &aid)
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
    c: Caller,
    aid: &str,
    approve: bool,
    body: Option<Json<DecisionBody>>,
) -> ApiResult<Json<Value>> {
    c.allow(s, USERS, "decide approval requests")?;
    let id = c.id;
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
    c: Caller,
    Path(aid): Path<String>,
    body: Option<Json<DecisionBody>>,
) -> ApiResult<Json<Value>> {
    decide(&s, c, &aid, true, body).await
}

async fn deny(
    State(s): Shared,
    c: Caller,
    Path(aid): Path<String>,
    body: Option<Json<DecisionBody>>,
) -> ApiResult<Json<Value>> {
    decide(&s, c, &aid, false, body).await
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
    c: Caller,
    body: Result<Json<AccessRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    c.allow(&s, USERS, "request access")?;
    let id = c.id;
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

async fn list_access(State(s): Shared, c: Caller) -> ApiResult<Json<Value>> {
    c.allow(&s, USERS, "read access requests")?;
    let list: Vec<Value> = s
        .approvals
        .list(&c.id)
        .iter()
        .filter(|a| a.rule == ACCESS_RULE)
        .map(|a| a.to_json())
        .collect();
    Ok(Json(json!({ "access": list })))
}

#[derive(Deserialize)]
struct GatewayAuditQuery {
    limit: Option<u32>,
}

/// The gateway's own audit streams, newest run first: its starts, administrative acts and the
/// API calls it refused.
async fn gateway_audit(
    State(s): Shared,
    c: Caller,
    Query(q): Query<GatewayAuditQuery>,
) -> ApiResult<Json<Value>> {
    c.allow(&s, READERS, "reading the gateway's audit stream")?;
    let streams = s
        .store
        .gateway_streams(q.limit.unwrap_or(10).min(1000))
        .map_err(ApiError::internal)?;
    let mut out = Vec::with_capacity(streams.len());
    for id in streams {
        let events = s.store.events(&id).map_err(ApiError::internal)?;
        out.push(json!({
            "id": id,
            "events": serde_json::to_value(&events).map_err(ApiError::internal)?,
        }));
    }
    Ok(Json(json!({ "streams": out })))
}

/// Verifies the audit log as `tollgate audit verify` does (keys as stored).
async fn audit_verify(State(s): Shared, c: Caller) -> ApiResult<Json<Value>> {
    c.allow(&s, READERS, "verifying the audit log")?;
    let dir = s.data_dir.clone();
    let v = tokio::task::spawn_blocking(move || crate::audit::verify(&dir, None))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let r = &v.report;
    Ok(Json(json!({
        "ok": r.intact(),
        "records": r.records,
        "checkpoints": r.checkpoints,
        "last_checkpoint": r.last_checkpoint,
        "unsigned_tail": r.unsigned_tail,
        "purged": r.purged,
        "first_bad": r.first_bad.as_ref().map(|b| json!({
            "gseq": b.gseq, "session": b.session, "seq": b.seq, "reason": b.reason,
        })),
    })))
}

#[derive(Deserialize)]
struct ExportQuery {
    session: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// A verifiable bundle, as `tollgate audit export` writes it.
async fn audit_export(
    State(s): Shared,
    c: Caller,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    c.allow(&s, READERS, "exporting the audit log")?;
    let time = |t: Option<String>, name: &str| {
        t.map(|t| parse_rfc3339(&t)).transpose().map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{name}: {e}"),
            )
        })
    };
    let selection = crate::audit::Selection {
        session: q.session,
        since: time(q.since, "since")?,
        until: time(q.until, "until")?,
    };
    let dir = s.data_dir.clone();
    let bundle = tokio::task::spawn_blocking(move || crate::audit::export(&dir, &selection))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            crate::GatewayError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", m)
            }
            other => ApiError::internal(other),
        })?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        bundle.to_json(),
    )
        .into_response())
}

/// The client's address, for the record ("unknown" when not served with connect info).
struct Peer(String);

impl FromRequestParts<Arc<ApiState>> for Peer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.to_string())
                .unwrap_or_else(|| "unknown".into()),
        ))
    }
}

fn web_login_of(s: &ApiState) -> ApiResult<Arc<WebLogin>> {
    s.web.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "web login is not configured (see [oidc.web])",
        )
    })
}

/// A redirect with cookies.
fn redirect(location: &str, cookies: &[String]) -> ApiResult<Response> {
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(location).map_err(ApiError::internal)?,
    );
    for c in cookies {
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_str(c).map_err(ApiError::internal)?,
        );
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
}

/// Starts a web login: to the provider's authorization endpoint, the state bound to this
/// browser by a short cookie.
async fn web_login(
    State(s): Shared,
    Peer(peer): Peer,
    Query(q): Query<LoginQuery>,
) -> ApiResult<Response> {
    let web = web_login_of(&s)?;
    match web
        .start(q.return_to.as_deref(), tollgate_core::now_micros())
        .await
    {
        Ok((location, state)) => redirect(&location, &[web.cookies.login(&state)]),
        Err(f) => Err(login_refused(&s, &peer, "GET /api/auth/login", f)),
    }
}

/// Records a refused login and answers it (400, or 503 when the provider is unavailable).
fn login_refused(s: &ApiState, peer: &str, route: &str, f: weblogin::LoginFailure) -> ApiError {
    tracing::info!(detail = %f.detail, "web login refused");
    s.refusal_event(
        Refusal::new(
            if f.unavailable {
                RefusalCode::IdentityUnavailable
            } else {
                RefusalCode::BadCredentials
            },
            f.message.clone(),
        )
        .with_detail(format!(
            "API {route} from {peer}: web login refused: {}",
            f.detail
        )),
    );
    if f.unavailable {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_unavailable",
            f.message,
        )
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "login_failed", f.message)
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

/// The provider's redirect back: state (once, from this browser), code, ID token, session.
async fn web_callback(
    State(s): Shared,
    Peer(peer): Peer,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> ApiResult<Response> {
    let web = web_login_of(&s)?;
    let route = "GET /api/auth/callback";
    match finish_login(&s, &web, &headers, q).await {
        Ok((identity, return_to, id, expires_at)) => {
            let now = tollgate_core::now_micros();
            s.admin_event(
                "web_login",
                &identity,
                &format!("web-session:{}", &weblogin::session_hash(&id)[..16]),
                format!(
                    "{} logged in from {peer} ({}); session until {}",
                    describe(&identity),
                    s.keys.role(&identity).as_str(),
                    format_rfc3339(expires_at)
                ),
            );
            let max_age = (expires_at - now) / 1_000_000;
            redirect(
                &return_to,
                &[web.cookies.session(&id, max_age), web.cookies.clear_login()],
            )
        }
        Err(f) => Err(login_refused(&s, &peer, route, f)),
    }
}

async fn finish_login(
    s: &ApiState,
    web: &WebLogin,
    headers: &HeaderMap,
    q: CallbackQuery,
) -> Result<(Identity, String, String, i64), weblogin::LoginFailure> {
    use weblogin::LoginFailure;
    let now = tollgate_core::now_micros();
    let state = q.state.unwrap_or_default();
    let bound = weblogin::read_cookie(headers, web.cookies.login_name()).unwrap_or("");
    if state.is_empty() || bound != state {
        return Err(LoginFailure::bad(
            "login failed: this login was not started by this browser; start again at /api/auth/login",
            format!(
                "state {} the login cookie",
                if bound.is_empty() {
                    "without"
                } else {
                    "not matching"
                }
            ),
        ));
    }
    let Some(pending) = web.pending.take(&state, now) else {
        return Err(LoginFailure::bad(
            "login failed: unknown, used or expired login state; start again at /api/auth/login",
            "state unknown, already used or expired",
        ));
    };
    if let Some(e) = q.error {
        return Err(LoginFailure::bad(
            "login failed: the identity provider refused the login",
            format!("the provider answered error {e:?}"),
        ));
    }
    if let Some(iss) = q.iss
        && iss != web.settings.issuer
    {
        return Err(LoginFailure::bad(
            "login failed: the answer came from another identity provider",
            format!("iss {iss:?} is not {:?}", web.settings.issuer),
        ));
    }
    let Some(code) = q.code.filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return Err(LoginFailure::bad(
            "login failed: no authorization code",
            "callback without code",
        ));
    };
    let id_token = web.redeem(&code, &pending, now).await?;
    let identity = s
        .keys
        .authenticate(&id_token)
        .await
        .map_err(|r| LoginFailure {
            unavailable: r.code == RefusalCode::IdentityUnavailable,
            message: format!("login failed: {}", r.message),
            detail: format!(
                "ID token refused: {}",
                r.detail.as_deref().unwrap_or(r.message.as_str())
            ),
        })?;
    if identity.issuer.as_deref() != Some(web.settings.issuer.as_str()) {
        return Err(LoginFailure::bad(
            "login failed: the ID token is not this login's",
            format!("ID token of issuer {:?}", identity.issuer),
        ));
    }
    web.check_id_token(&id_token, &pending)?;
    let expires_at = web.session_expiry(identity.expires_at, now);
    if expires_at <= now {
        return Err(LoginFailure::bad(
            "login failed: the ID token has expired",
            "session would end before it starts",
        ));
    }
    let id = weblogin::random_b64(32).ok_or_else(|| {
        LoginFailure::bad("login failed: no randomness available", "no randomness")
    })?;
    let mut stored = identity.clone();
    stored.expires_at = Some(expires_at);
    s.store
        .insert_web_session(
            &tollgate_store::WebSession {
                id_hash: weblogin::session_hash(&id),
                identity: stored.clone(),
                created_at: now,
                expires_at,
            },
            now,
        )
        .map_err(|e| {
            LoginFailure::bad("login failed: the session cannot be stored", e.to_string())
        })?;
    Ok((stored, pending.return_to, id, expires_at))
}

/// Ends the caller's web session and removes its cookie.
async fn web_logout(State(s): Shared, c: Caller) -> ApiResult<Response> {
    let web = web_login_of(&s)?;
    let Some(session) = &c.session else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "no web session: logout ends the session of the cookie (a bearer has none)",
        ));
    };
    s.store
        .delete_web_session(&session.id_hash)
        .map_err(ApiError::internal)?;
    s.admin_event(
        "web_logout",
        &c.id,
        &format!("web-session:{}", &session.id_hash[..16]),
        format!("{} logged out from {}", describe(&c.id), c.peer),
    );
    let mut response = Json(json!({"logged_out": true})).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&web.cookies.clear_session()).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// Who the session (or bearer) is: subject, kind, groups, role, expiry, and for a session its
/// CSRF token.
async fn web_me(c: Caller) -> ApiResult<Json<Value>> {
    let mut body = json!({
        "subject": c.id.subject,
        "kind": c.id.kind.map(|k| k.as_str()),
        "issuer": c.id.issuer,
        "groups": c.id.groups,
        "role": c.role.as_str(),
        "via": if c.session.is_some() { "session" } else { "bearer" },
        "expires_at": c.id.expires_at.map(format_rfc3339),
    });
    if let Some(session) = &c.session {
        body["expires_at"] = json!(format_rfc3339(session.expires_at));
        body["csrf_token"] = json!(weblogin::csrf_token(&session.id));
        body["csrf_header"] = json!("X-Tollgate-CSRF");
    }
    Ok(Json(body))
}
