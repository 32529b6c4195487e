//! OIDC tokens at the gateway, against a real OpenID provider (`common::oidc`) and the machine's
//! PostgreSQL: a machine client's token as the PostgreSQL password and as the API bearer, groups
//! mapped to access, roles on the API, the negative suite (each refused with a short reason and
//! recorded in detail), sessions bound to the token's life, revocation, key rotation, and the
//! key cache while the provider is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::oidc::*;
use common::*;
use futures_util::future::join_all;
use serde_json::{Value, json};

/// A machine client whose (mapped) group is an auditor group.
const AUDITOR_CLIENT: &str = "audit-bot";
const AUDITOR_SECRET: &str = "audit-bot-secret";
/// A machine client whose (mapped) group is an admin group.
const ADMIN_CLIENT: &str = "admin-bot";
const ADMIN_SECRET: &str = "admin-bot-secret";

/// The provider with the agent, an auditor and an administrator machine client. The auditor is
/// also in the agents' group: its role, not its groups, keeps it off the connections.
fn provider(options: OidcOptions) -> OidcProvider {
    OidcProvider::start(
        options
            .machine_client(MachineClient::new(
                AUDITOR_CLIENT,
                AUDITOR_SECRET,
                &["idp-auditors", "ai-agents"],
            ))
            .machine_client(MachineClient::new(
                ADMIN_CLIENT,
                ADMIN_SECRET,
                &["idp-platform"],
            )),
    )
}

/// `[[oidc.issuers]]` for the provider (provider groups mapped onto Tollgate groups, refetch
/// at most once per 2 s, plus `extra` keys) and `[roles]`.
fn oidc_config(idp: &OidcProvider, extra: &str) -> String {
    oidc_config_window(idp, 2, extra)
}

/// `oidc_config` with another refetch window.
fn oidc_config_window(idp: &OidcProvider, refresh_min_secs: u64, extra: &str) -> String {
    format!(
        "[[oidc.issuers]]\nissuer = \"{}\"\naudiences = [\"{AUDIENCE}\"]\n\
         group_map = {{ \"ai-agents\" = [\"agents\"], \"idp-auditors\" = [\"audit\"], \"idp-platform\" = [\"platform\"] }}\n\
         jwks_refresh_min_secs = {refresh_min_secs}\n{extra}\n\
         [roles]\nadmin_groups = [\"platform\"]\nauditor_groups = [\"audit\"]\n\n",
        idp.issuer()
    )
}

/// A connection nobody can reach (refusals happen before the target is contacted).
fn unreachable_connection(name: &str, groups: &str) -> String {
    format!(
        "[[connections]]\nname = \"{name}\"\nkind = \"postgres\"\nurl = \"postgres://nobody@127.0.0.1:{}/x?sslmode=disable\"\ngroups = [{groups}]\n\n",
        free_port()
    )
}

fn agent_token(idp: &OidcProvider) -> String {
    idp.client_credentials_token(AGENT_CLIENT, AGENT_SECRET, None)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A blocking API call with a bearer (on a runtime of its own, so it works inside and outside
/// tokio tests); returns the status and the JSON body.
fn api(gw: &Gateway, method: &str, path: &str, bearer: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{path}", gw.url());
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let bearer = bearer.to_string();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut req = client.request(method, &url).bearer_auth(&bearer);
                if let Some(b) = body {
                    req = req.json(&b);
                }
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(json!({ "raw": text })),
                )
            })
    })
    .join()
    .unwrap()
}

/// The events of a session.
fn events(gw: &Gateway, id: &str) -> Vec<Value> {
    gw.session(id)["events"].as_array().unwrap().clone()
}

/// The `detail` of every refusal event of every refused session.
fn refusal_details(gw: &Gateway) -> Vec<String> {
    let mut out = Vec::new();
    for s in gw.sessions() {
        if s["refusals"].as_i64().unwrap_or(0) == 0 {
            continue;
        }
        for e in events(gw, s["id"].as_str().unwrap()) {
            if e["kind"]["type"] == "refusal" {
                out.push(e["kind"]["detail"].as_str().unwrap_or("").to_string());
            }
        }
    }
    out
}

/// Refusal events of the gateway's own stream (API refusals), via the API.
fn gateway_refusals(gw: &Gateway) -> Vec<Value> {
    let (status, body) = api(gw, "GET", "/api/audit/gateway", ADMIN_KEY, None);
    assert_eq!(status, 200, "{body}");
    body["streams"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["events"].as_array().unwrap().clone())
        .filter(|e| e["kind"]["type"] == "refusal")
        .map(|e| e["kind"].clone())
        .collect()
}

/// Waits until `pred` holds over the gateway stream's refusals.
fn wait_gateway_refusals(gw: &Gateway, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = gateway_refusals(gw);
        if pred(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {r:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A psql that must be refused; returns its stderr.
fn psql_refused(gw: &Gateway, connection: &str, token: &str) -> String {
    let o = gw.psql(connection, token, "disable", &["-c", "SELECT 1"]);
    assert!(
        !o.status.success(),
        "psql with this token should have been refused: {}",
        stdout(&o)
    );
    stderr(&o)
}

/// The PEM of an RSA public key given as a JWK (through Node's crypto, already needed by the
/// provider).
fn public_pem(jwk: &Value) -> String {
    let out = Command::new("node")
        .arg("-e")
        .arg(
            "const c = require('crypto'); process.stdout.write(c.createPublicKey({key: JSON.parse(process.argv[1]), format: 'jwk'}).export({type: 'spki', format: 'pem'}))",
        )
        .arg(jwk.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_opens_psql_and_driver_sessions_on_connections_of_its_mapped_groups() {
    let idp = provider(OidcOptions::default());
    let db = TestDb::create("tg_oidc");
    db.direct("CREATE TABLE t (v int); INSERT INTO t VALUES (41)");
    let config = format!(
        "{}{}{}",
        db.connection("agents-db", &["agents"], "disable"),
        unreachable_connection("ops-db", "\"ops\""),
        oidc_config(&idp, "")
    );
    let gw = Gateway::start(&config);
    let token = agent_token(&idp);
    let (_, claims) = decode_jwt(&token);
    let jti = claims["jti"].as_str().unwrap().to_string();

    // psql, the token as the password.
    let o = gw.psql(
        "agents-db",
        &token,
        "disable",
        &["-c", "SELECT v + 1 FROM t", "-c", "SELECT current_user"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), ["42", &db.role]);
    // A driver, the extended protocol.
    let client = driver(&gw, "agents-db", &token).await.unwrap();
    let row = client
        .query_one("SELECT v * $1::int FROM t", &[&2i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 82);
    drop(client);

    // A connection it shares no group with.
    let err = psql_refused(&gw, "ops-db", &token);
    assert!(
        err.contains("access to connection \"ops-db\" denied") && err.contains("no group"),
        "{err}"
    );
    let e = match driver(&gw, "ops-db", &token).await {
        Ok(_) => panic!("ops-db should be refused"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&e), "42501", "{e}");

    // The API with the token as bearer.
    let (status, me) = api(&gw, "GET", "/api/whoami", &token, None);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["subject"], AGENT_CLIENT);
    assert_eq!(me["via"], "oidc");
    assert_eq!(me["kind"], "service");
    assert_eq!(me["role"], "user");
    assert_eq!(me["groups"], json!(["agents"]));
    let (status, body) = api(&gw, "GET", "/api/connections", &token, None);
    assert_eq!(status, 200);
    assert_eq!(body["connections"][0]["name"], "agents-db");
    assert_eq!(body["connections"].as_array().unwrap().len(), 1);

    // The session start says who: issuer, subject, kind, client, token id.
    let sessions = gw.wait_sessions("the agent's sessions", |s| {
        s.iter()
            .filter(|x| x["subject"] == AGENT_CLIENT && !x["ended_at"].is_null())
            .count()
            >= 4
    });
    let ok: Vec<_> = sessions
        .iter()
        .filter(|x| x["connection"] == "agents-db")
        .collect();
    assert_eq!(ok.len(), 2, "{sessions:#?}");
    for s in &ok {
        assert_eq!(s["refusals"], 0);
        let ev = events(&gw, s["id"].as_str().unwrap());
        let start = &ev[0]["kind"];
        assert_eq!(start["type"], "session_start");
        let id = &start["identity"];
        assert_eq!(id["subject"], AGENT_CLIENT);
        assert_eq!(id["via"], "oidc");
        assert_eq!(id["kind"], "service");
        assert_eq!(id["issuer"], idp.issuer());
        assert_eq!(id["client_id"], AGENT_CLIENT);
        assert_eq!(id["token_id"], jti.as_str());
        assert_eq!(id["groups"], json!(["agents"]));
        assert!(id["key_id"].is_null());
        assert!(ev.iter().any(|e| e["kind"]["type"] == "command"), "{ev:#?}");
    }
    let refused: Vec<_> = sessions
        .iter()
        .filter(|x| x["connection"] == "ops-db")
        .collect();
    assert_eq!(refused.len(), 2);
    for s in refused {
        assert_eq!(s["refusals"], 1);
        let ev = events(&gw, s["id"].as_str().unwrap());
        assert_eq!(ev[0]["kind"]["identity"]["kind"], "service");
        assert_eq!(ev[1]["kind"]["type"], "refusal");
        assert_eq!(ev[1]["kind"]["code"], "access_denied");
    }

    // Neither the token nor its signature is logged or stored.
    let signature = token.rsplit('.').next().unwrap();
    let persisted = gw.all_persisted_text();
    assert!(!contains(&persisted, &token));
    assert!(!contains(&persisted, signature));
}

#[test]
fn roles_decide_every_api_route() {
    let idp = provider(OidcOptions::default());
    let db = TestDb::create("tg_roles");
    let config = format!(
        "{}{}",
        db.connection("agents-db", &["agents"], "disable"),
        oidc_config(&idp, "")
    );
    let gw = Gateway::start(&config);
    let user = agent_token(&idp);
    let auditor = idp.client_credentials_token(AUDITOR_CLIENT, AUDITOR_SECRET, None);
    let admin = idp.client_credentials_token(ADMIN_CLIENT, ADMIN_SECRET, None);
    // An API key in an auditor group is an auditor too.
    let auditor_key = gw.create_key("audit-key", "audit", None);
    // An API key in an admin group is an administrator.
    let admin_key = gw.create_key("platform-key", "platform", None);

    for (token, role) in [
        (&user, "user"),
        (&auditor, "auditor"),
        (&admin, "admin"),
        (&auditor_key, "auditor"),
        (&admin_key, "admin"),
    ] {
        let (status, me) = api(&gw, "GET", "/api/whoami", token, None);
        assert_eq!((status, me["role"].as_str()), (200, Some(role)), "{me}");
    }

    // The user's own session, and another one of the admin key.
    let o = gw.psql("agents-db", &user, "disable", &["-c", "SELECT 1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = gw.psql("agents-db", ADMIN_KEY, "disable", &["-c", "SELECT 1"]);
    assert!(!o.status.success(), "the bootstrap key shares no group");
    let sessions = gw.wait_sessions("two sessions", |s| {
        s.iter().filter(|x| !x["ended_at"].is_null()).count() >= 2
    });
    let user_session = sessions
        .iter()
        .find(|x| x["subject"] == AGENT_CLIENT)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other_session = sessions
        .iter()
        .find(|x| x["subject"] != AGENT_CLIENT)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // sessions list through the CLI, the token as TOLLGATE_TOKEN: users see their own,
    // auditors and admins every session.
    let list = |token: &str| -> Vec<Value> {
        serde_json::from_str::<Value>(&gw.cli_ok(token, &["sessions", "list", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let mine = list(&user);
    assert!(
        !mine.is_empty() && mine.iter().all(|s| s["subject"] == AGENT_CLIENT),
        "{mine:#?}"
    );
    for token in [&auditor, &admin, &auditor_key] {
        let all = list(token);
        assert!(all.iter().any(|s| s["id"] == user_session.as_str()));
        assert!(all.iter().any(|s| s["id"] == other_session.as_str()));
    }
    let show = |token: &str, id: &str| api(&gw, "GET", &format!("/api/sessions/{id}"), token, None);
    assert_eq!(show(&user, &user_session).0, 200);
    assert_eq!(show(&user, &other_session).0, 404);
    assert_eq!(show(&auditor, &other_session).0, 200);
    assert_eq!(show(&admin, &user_session).0, 200);

    // Route classes: (method, path, body, allowed roles).
    let exec = json!({"connection": "agents-db", "input": "SELECT 1"});
    let revoke = json!({"jti": "nothing-in-particular"});
    let key = json!({"name": "k", "groups": ["x"]});
    let access = json!({"connection": "agents-db", "duration": "1h", "reason": "r"});
    let routes: Vec<(&str, &str, Option<Value>, &[&str])> = vec![
        ("GET", "/api/keys", None, &["admin"]),
        ("POST", "/api/keys", Some(key), &["admin"]),
        ("DELETE", "/api/keys/nope", None, &["admin"]),
        ("POST", "/api/tokens/revoke", Some(revoke), &["admin"]),
        ("GET", "/api/tokens/revoked", None, &["admin"]),
        ("GET", "/api/connections", None, &["admin", "user"]),
        ("POST", "/api/exec", Some(exec), &["admin", "user"]),
        ("GET", "/api/access", None, &["admin", "user"]),
        ("POST", "/api/access", Some(access), &["admin", "user"]),
        ("GET", "/api/approvals", None, &["admin", "user"]),
        ("GET", "/api/approvals/nope", None, &["admin", "user"]),
        (
            "POST",
            "/api/approvals/nope/approve",
            None,
            &["admin", "user"],
        ),
        ("POST", "/api/approvals/nope/deny", None, &["admin", "user"]),
        ("GET", "/api/sessions", None, &["admin", "auditor", "user"]),
        ("GET", "/api/audit/gateway", None, &["admin", "auditor"]),
        ("GET", "/api/audit/verify", None, &["admin", "auditor"]),
        ("GET", "/api/audit/export", None, &["admin", "auditor"]),
    ];
    for (method, path, body, allowed) in &routes {
        for (token, role) in [(&user, "user"), (&auditor, "auditor"), (&admin, "admin")] {
            let (status, answer) = api(&gw, method, path, token, body.clone());
            if allowed.contains(&role) {
                // Let through by its role (what follows may still refuse, e.g. no shared group).
                assert_ne!(status, 401, "{role} {method} {path}: {answer}");
                let code = answer["error"]["code"].as_str().unwrap_or("");
                assert!(
                    code != "forbidden" && code != "admin_required",
                    "{role} {method} {path}: {answer}"
                );
            } else {
                assert_eq!(status, 403, "{role} {method} {path}: {answer}");
                let msg = answer["error"]["message"].as_str().unwrap();
                let code = answer["error"]["code"].as_str().unwrap();
                if allowed == &["admin"] {
                    assert_eq!(code, "admin_required", "{answer}");
                    assert!(msg.contains("needs an administrator"), "{msg}");
                } else if role == "auditor" {
                    assert_eq!(code, "forbidden");
                    assert!(msg.contains("is an auditor"), "{msg}");
                } else {
                    assert_eq!(code, "forbidden");
                    assert!(msg.contains("auditor or admin role"), "{msg}");
                }
            }
        }
    }
    // Every route is described in the OpenAPI document.
    let (_, doc) = api(&gw, "GET", "/api/openapi.json", &user, None);
    for (method, path, _, _) in &routes {
        let path = path.replace("nope", "{id}");
        assert!(
            doc["paths"][&path][method.to_ascii_lowercase()].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
    }

    // The auditor key answers like the auditor token.
    assert_eq!(
        api(
            &gw,
            "POST",
            "/api/exec",
            &auditor_key,
            Some(json!({"connection": "agents-db", "input": "SELECT 1"}))
        )
        .0,
        403
    );
    assert_eq!(
        api(&gw, "GET", "/api/audit/verify", &auditor_key, None).0,
        200
    );

    // What the readers get: a verification, a bundle, the gateway's stream.
    let (_, v) = api(&gw, "GET", "/api/audit/verify", &auditor, None);
    assert_eq!(v["ok"], true, "{v}");
    let (status, bundle) = api(
        &gw,
        "GET",
        &format!("/api/audit/export?session={user_session}"),
        &auditor,
        None,
    );
    assert_eq!(status, 200, "{bundle}");
    assert!(
        bundle["records"].as_array().is_some_and(|r| !r.is_empty()),
        "{bundle}"
    );

    // An auditor opens no sessions, even to a connection of its groups.
    let err = psql_refused(&gw, "agents-db", &auditor);
    assert!(err.contains("is an auditor"), "{err}");

    // Auditors never see target credentials: nothing they can read holds the password.
    for (method, path) in [
        ("GET", "/api/sessions".to_string()),
        ("GET", format!("/api/sessions/{user_session}")),
        ("GET", "/api/audit/gateway".to_string()),
        ("GET", format!("/api/audit/export?session={user_session}")),
        ("GET", "/api/whoami".to_string()),
    ] {
        let (_, body) = api(&gw, method, &path, &auditor, None);
        assert!(
            !body.to_string().contains(&db.password),
            "{path} leaks the password"
        );
    }

    // Each refused role is a refusal event of the gateway's stream, naming route and caller.
    let refusals = wait_gateway_refusals(&gw, "role refusals", |r| {
        r.iter().any(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("POST /api/exec") && d.contains(AUDITOR_CLIENT))
        })
    });
    let exec_refusal = refusals
        .iter()
        .find(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("POST /api/exec") && d.contains(AUDITOR_CLIENT))
        })
        .unwrap();
    assert_eq!(exec_refusal["code"], "forbidden");
    let detail = exec_refusal["detail"].as_str().unwrap();
    assert!(
        detail.contains("service audit-bot")
            && detail.contains(&idp.issuer())
            && detail.contains("(auditor)"),
        "{detail}"
    );
}

#[test]
fn approvals_are_requested_and_decided_by_oidc_identities() {
    let idp = provider(OidcOptions::default().machine_client(MachineClient::new(
        "dba-bot",
        "dba-secret",
        &["dba"],
    )));
    let db = TestDb::create("tg_oidc_apr");
    db.direct("CREATE TABLE orders (id int primary key); INSERT INTO orders VALUES (1), (2)");
    let config = format!(
        "[[rules]]\nname = \"orders-writes\"\naction = \"approve\"\nobjects = [\"orders\"]\nkinds = [\"write\"]\napprovers = [\"dba\"]\nmode = \"ticket\"\n\n{}{}",
        db.connection("agents-db", &["agents"], "disable"),
        oidc_config(&idp, "")
    );
    let gw = Gateway::start(&config);
    let agent = agent_token(&idp);
    let dba = idp.client_credentials_token("dba-bot", "dba-secret", None);
    let auditor = idp.client_credentials_token(AUDITOR_CLIENT, AUDITOR_SECRET, None);

    let sql = "DELETE FROM orders WHERE id = 1";
    let o = gw.psql("agents-db", &agent, "disable", &["-c", sql]);
    assert!(!o.status.success());
    let err = stderr(&o);
    let at = err.find("apr_").unwrap_or_else(|| panic!("{err}"));
    let id: String = err[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();

    // The requester sees its request and may not approve it; an auditor may not decide; a
    // member of the rule's approver group may.
    let mine: Value =
        serde_json::from_str(&gw.cli_ok(&agent, &["approvals", "list", "--json"])).unwrap();
    assert_eq!(mine[0]["id"], id.as_str());
    assert_eq!(mine[0]["requester"], AGENT_CLIENT);
    let o = gw.cli(&agent, &["approvals", "approve", &id]);
    assert!(!o.status.success(), "self-approval");
    let o = gw.cli(&auditor, &["approvals", "approve", &id]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is an auditor"), "{}", stderr(&o));
    let decided = gw.cli_ok(&dba, &["approvals", "approve", &id, "--reason", "ok"]);
    assert!(decided.contains("approved"), "{decided}");

    let o = gw.psql("agents-db", &agent, "disable", &["-c", sql]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(db.direct("SELECT count(*) FROM orders"), "1");
    // The decision is on record with the approver's subject.
    let (_, body) = api(&gw, "GET", "/api/audit/gateway", ADMIN_KEY, None);
    let decision = body["streams"][0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"]["action"] == "approval_decided")
        .cloned()
        .unwrap_or_else(|| panic!("{body:#}"));
    assert_eq!(decision["kind"]["by"], "dba-bot");
    assert_eq!(decision["kind"]["target"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_a_short_reason_and_recorded_in_detail() {
    let idp = provider(OidcOptions::default());
    let db = TestDb::create("tg_oidc_neg");
    let config = format!(
        "{}{}",
        db.connection("agents-db", &["agents"], "disable"),
        oidc_config(&idp, "")
    );
    let gw = Gateway::start(&config);
    let good = agent_token(&idp);
    let (header, payload) = decode_jwt(&good);
    let parts: Vec<&str> = good.split('.').collect();
    let groups = AGENT_GROUPS;
    let claims = |ttl: i64| idp.machine_claims(AGENT_CLIENT, groups, ttl);

    let mut not_yet = claims(600);
    not_yet["nbf"] = json!(now_secs() + 600);
    let mut elsewhere = claims(300);
    elsewhere["iss"] = json!("http://127.0.0.1:9/elsewhere");
    let jwk = idp.jwks()["keys"][0].clone();
    let pem = public_pem(&jwk);
    let mut escalated = payload.clone();
    escalated["groups"] = json!(["idp-platform"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(serde_json::to_string(&escalated).unwrap().as_bytes()),
        parts[2]
    );
    // An ID token: issued to the CLI client, not to this gateway.
    let id_token = idp.login_cli("alice", "alice-pass").id_token.unwrap();
    assert_eq!(decode_jwt(&id_token).1["aud"], CLI_CLIENT);
    assert_eq!(header["alg"], "RS256");

    // (what, token, what the client is told, what the record says)
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "expired",
            idp.sign(json!({"payload": claims(-600)})),
            "token expired",
            "token expired at",
        ),
        (
            "not yet valid",
            idp.sign(json!({"payload": not_yet})),
            "token not yet valid",
            "not valid before",
        ),
        (
            "wrong issuer",
            idp.sign(json!({"payload": elsewhere})),
            "token not accepted here",
            "token issuer \"http://127.0.0.1:9/elsewhere\" is not configured",
        ),
        (
            "wrong audience",
            idp.client_credentials_token(AGENT_CLIENT, AGENT_SECRET, Some(OTHER_RESOURCE)),
            "token not accepted here",
            "aud=\"other-service\"",
        ),
        (
            "alg none",
            idp.sign(json!({"payload": claims(300), "alg": "none"})),
            "invalid token",
            "unsigned (alg=none)",
        ),
        (
            "RS256 to HS256 with the public key",
            idp.sign(json!({
                "payload": claims(300),
                "alg": "HS256",
                "hmac_key_b64url": b64url(pem.as_bytes()),
            })),
            "invalid token",
            "HS256 is not allowed",
        ),
        (
            "stripped signature",
            format!("{}.{}.", parts[0], parts[1]),
            "invalid token",
            "token has no signature",
        ),
        (
            "unknown kid",
            idp.sign(json!({"payload": claims(300), "header": {"kid": "no-such-key"}})),
            "invalid token",
            "has no key \"no-such-key\"",
        ),
        (
            "tampered payload",
            tampered,
            "invalid token",
            "signature does not verify",
        ),
        (
            "issued to another client",
            id_token,
            "token not accepted here",
            "aud=\"tollgate-cli\"",
        ),
    ];
    for (what, token, public, _) in &cases {
        assert!(token.starts_with("eyJ"), "{what}: {token}");
        let err = psql_refused(&gw, "agents-db", token);
        assert!(
            err.contains(&format!("FATAL:  authentication failed: {public}")),
            "{what}: {err}"
        );
        // Nothing more than the user needs: no issuer, key, claim or algorithm detail.
        for leak in [
            idp.issuer().as_str(),
            "kid",
            "alg",
            "claimed",
            "signature",
            "aud",
        ] {
            assert!(!err.contains(leak), "{what} tells {leak:?}: {err}");
        }
    }
    // The driver sees the SQLSTATE of bad credentials.
    let e = match driver(&gw, "agents-db", &cases[0].1).await {
        Ok(_) => panic!("an expired token was accepted"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&e), "28P01");

    // Each refusal is a session with a refusal event whose detail says why, and whose token
    // it claimed to be.
    gw.wait_sessions("every refusal", |s| {
        s.iter()
            .filter(|x| x["refusals"] == 1 && !x["ended_at"].is_null())
            .count()
            > cases.len()
    });
    let details = refusal_details(&gw);
    for (what, _, _, detail) in &cases {
        assert!(
            details.iter().any(|d| d.contains(detail)),
            "{what}: no refusal detail contains {detail:?}: {details:#?}"
        );
    }
    let expired = details
        .iter()
        .find(|d| d.contains("token expired at"))
        .unwrap();
    assert!(
        expired.contains("claimed (unverified)")
            && expired.contains(&format!("iss \"{}\"", idp.issuer()))
            && expired.contains("sub \"ai-agent\"")
            && expired.contains("client \"ai-agent\"")
            && expired.contains("jti \""),
        "{expired}"
    );
    // The good token still works after all that.
    let o = gw.psql("agents-db", &good, "disable", &["-c", "SELECT 1"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // At the API: the same short reasons, recorded in the gateway's stream.
    let (status, body) = api(&gw, "GET", "/api/whoami", &cases[0].1, None);
    assert_eq!(status, 401);
    assert_eq!(
        body["error"]["message"], "authentication failed: token expired",
        "{body}"
    );
    let (status, body) = api(&gw, "GET", "/api/sessions", &cases[4].1, None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    assert_eq!(
        body["error"]["message"],
        "authentication failed: invalid token"
    );
    let refusals = wait_gateway_refusals(&gw, "API auth refusals", |r| {
        r.iter()
            .any(|e| e["detail"].as_str().is_some_and(|d| d.contains("alg=none")))
    });
    let expired = refusals
        .iter()
        .find(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("GET /api/whoami") && d.contains("expired at"))
        })
        .unwrap_or_else(|| panic!("{refusals:#?}"));
    assert_eq!(expired["code"], "expired");
    assert_eq!(expired["message"], "authentication failed: token expired");
    assert!(
        expired["detail"]
            .as_str()
            .unwrap()
            .contains("from 127.0.0.1:"),
        "{expired}"
    );

    // No token reached the log or the store.
    let persisted = gw.all_persisted_text();
    for (what, token, _, _) in &cases {
        if let Some(sig) = token.rsplit('.').next().filter(|s| s.len() > 20) {
            assert!(
                !contains(&persisted, sig),
                "{what}: the signature was persisted"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_are_refused_at_the_next_statement_and_on_replay() {
    let idp = provider(OidcOptions::default());
    let db = TestDb::create("tg_oidc_rev");
    let config = format!(
        "{}{}",
        db.connection("agents-db", &["agents"], "disable"),
        oidc_config(&idp, "")
    );
    let gw = Gateway::start(&config);
    let token = agent_token(&idp);
    let jti = decode_jwt(&token).1["jti"].as_str().unwrap().to_string();
    let bystander = idp.client_credentials_token(AUDITOR_CLIENT, AUDITOR_SECRET, None);
    let live = driver(&gw, "agents-db", &token).await.unwrap();
    assert_eq!(
        live.query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );

    // Only administrators revoke.
    let o = gw.cli(&token, &["tokens", "revoke", "--jti", &jti]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("needs an administrator"),
        "{}",
        stderr(&o)
    );

    let out = gw.cli_ok(
        ADMIN_KEY,
        &[
            "tokens",
            "revoke",
            "--jti",
            &jti,
            "--reason",
            "leaked in a CI log",
        ],
    );
    assert!(out.contains(&format!("revoked token {jti}")), "{out}");

    // The live session is refused at its next statement, with an event.
    let e = live.simple_query("SELECT 2").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    let msg = e.as_db_error().unwrap().message();
    assert_eq!(msg, "authentication failed: token revoked");
    // Replaying the token is refused, at the PostgreSQL front and at the API.
    let err = psql_refused(&gw, "agents-db", &token);
    assert!(
        err.contains("authentication failed: token revoked"),
        "{err}"
    );
    let (status, body) = api(&gw, "GET", "/api/whoami", &token, None);
    assert_eq!(status, 401);
    assert_eq!(
        body["error"]["message"],
        "authentication failed: token revoked"
    );
    // Another token of the same client is unaffected by a jti revocation.
    let fresh = agent_token(&idp);
    let o = gw.psql("agents-db", &fresh, "disable", &["-c", "SELECT 1"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The ended session says why.
    let sessions = gw.wait_sessions("the revoked session ended", |s| {
        s.iter().any(|x| {
            x["subject"] == AGENT_CLIENT
                && x["end_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("token revoked"))
                && x["commands"].as_i64() == Some(1)
        })
    });
    let s = sessions
        .iter()
        .find(|x| {
            x["end_reason"]
                .as_str()
                .is_some_and(|r| r.contains("token revoked"))
                && x["commands"].as_i64() == Some(1)
        })
        .unwrap();
    let ev = events(&gw, s["id"].as_str().unwrap());
    let refusal = ev.iter().find(|e| e["kind"]["type"] == "refusal").unwrap();
    assert_eq!(refusal["kind"]["code"], "revoked");
    let detail = refusal["kind"]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("jti {jti} revoked at"))
            && detail.contains("leaked in a CI log")
            && detail.contains("service ai-agent"),
        "{detail}"
    );
    assert!(
        !ev.iter()
            .any(|e| e["kind"]["command"]["text"] == "SELECT 2"),
        "the refused statement ran"
    );

    // Revoking the subject: every token of it issued until now, not later ones.
    let before = agent_token(&idp);
    let live = driver(&gw, "agents-db", &before).await.unwrap();
    let out = gw.cli_ok(ADMIN_KEY, &["tokens", "revoke", "--subject", AGENT_CLIENT]);
    assert!(
        out.contains("revoked every token of subject ai-agent"),
        "{out}"
    );
    let e = live.simple_query("SELECT 3").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    psql_refused(&gw, "agents-db", &before);
    psql_refused(&gw, "agents-db", &fresh);
    std::thread::sleep(Duration::from_millis(1200));
    let after = agent_token(&idp);
    let o = gw.psql("agents-db", &after, "disable", &["-c", "SELECT 1"]);
    assert!(
        o.status.success(),
        "a token issued after the revocation: {}",
        stderr(&o)
    );
    // Other subjects are unaffected.
    let (status, _) = api(&gw, "GET", "/api/whoami", &bystander, None);
    assert_eq!(status, 200);

    // The list, and the admin events.
    let list: Value = gw
        .cli_ok(ADMIN_KEY, &["tokens", "list", "--json"])
        .parse()
        .unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:#?}");
    assert!(list.iter().any(|r| r["kind"] == "jti"
        && r["value"] == jti.as_str()
        && r["reason"] == "leaked in a CI log"
        && r["revoked_by"] == "admin"));
    assert!(
        list.iter()
            .any(|r| r["kind"] == "subject" && r["value"] == AGENT_CLIENT)
    );
    let (_, body) = api(&gw, "GET", "/api/audit/gateway", ADMIN_KEY, None);
    let admin_events: Vec<&Value> = body["streams"][0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"]["action"] == "token_revoked")
        .collect();
    assert_eq!(admin_events.len(), 2, "{body:#}");
    assert_eq!(admin_events[0]["kind"]["target"], format!("jti:{jti}"));
    assert_eq!(admin_events[0]["kind"]["by"], "admin");
    assert_eq!(
        admin_events[1]["kind"]["target"],
        format!("subject:{AGENT_CLIENT}")
    );

    // Revocations survive a restart.
    let mut gw = gw;
    gw.restart(&config);
    psql_refused(&gw, "agents-db", &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_refused_at_its_next_statement_once_its_token_expires() {
    let idp = provider(OidcOptions::default().access_token_ttl(3));
    let db = TestDb::create("tg_oidc_exp");
    let config = format!(
        "{}{}",
        db.connection("agents-db", &["agents"], "disable"),
        oidc_config(&idp, "leeway_secs = 0")
    );
    let gw = Gateway::start(&config);
    let token = agent_token(&idp);
    let exp = decode_jwt(&token).1["exp"].as_i64().unwrap();
    let client = driver(&gw, "agents-db", &token).await.unwrap();
    assert_eq!(
        client
            .query_one("SELECT 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
    while now_secs() <= exp {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = client.simple_query("SELECT 8").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    let msg = e.as_db_error().unwrap().message();
    assert_eq!(
        msg,
        "token expired: the session ends; connect again with a fresh token"
    );
    // A new session with it is refused too.
    let err = psql_refused(&gw, "agents-db", &token);
    assert!(
        err.contains("authentication failed: token expired"),
        "{err}"
    );

    let sessions = gw.wait_sessions("the expired session ended", |s| {
        s.iter().any(|x| {
            x["end_reason"]
                .as_str()
                .is_some_and(|r| r.contains("token expired: the session ends"))
        })
    });
    let s = sessions
        .iter()
        .find(|x| {
            x["end_reason"]
                .as_str()
                .is_some_and(|r| r.contains("token expired: the session ends"))
        })
        .unwrap();
    assert_eq!(s["refusals"], 1);
    assert_eq!(s["commands"], 1);
    let ev = events(&gw, s["id"].as_str().unwrap());
    let refusal = ev.iter().find(|e| e["kind"]["type"] == "refusal").unwrap();
    assert_eq!(refusal["kind"]["code"], "expired");
    assert!(
        refusal["kind"]["detail"]
            .as_str()
            .unwrap()
            .contains("the token of service ai-agent"),
        "{refusal}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_verify_new_tokens_and_the_old_kid_is_gone_after_the_refetch() {
    let mut idp = provider(OidcOptions::default());
    let db = TestDb::create("tg_oidc_rot");
    let config = format!(
        "{}{}",
        db.connection("agents-db", &["agents"], "disable"),
        oidc_config(&idp, "")
    );
    let gw = Gateway::start(&config);
    let old = agent_token(&idp);
    let old_kid = decode_jwt(&old).0["kid"].as_str().unwrap().to_string();
    let o = gw.psql("agents-db", &old, "disable", &["-c", "SELECT 1"]);
    assert!(o.status.success(), "{}", stderr(&o));

    idp.rotate_keys(None);
    let new = agent_token(&idp);
    let new_kid = decode_jwt(&new).0["kid"].as_str().unwrap().to_string();
    assert_ne!(old_kid, new_kid);
    // Past the refetch window, the unknown kid makes the gateway fetch the new set.
    std::thread::sleep(Duration::from_millis(2200));
    let o = gw.psql("agents-db", &new, "disable", &["-c", "SELECT 1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The old key is no longer in the set: its token is refused, though not expired.
    std::thread::sleep(Duration::from_millis(2200));
    let err = psql_refused(&gw, "agents-db", &old);
    assert!(
        err.contains("authentication failed: invalid token"),
        "{err}"
    );
    gw.wait_sessions("the old token's refusal", |s| {
        s.iter()
            .any(|x| x["refusals"] == 1 && !x["ended_at"].is_null())
    });
    let details = refusal_details(&gw);
    assert!(
        details
            .iter()
            .any(|d| d.contains(&format!("has no key \"{old_kid}\""))),
        "{details:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_ride_out_the_provider_being_down_and_a_kid_storm_costs_one_fetch_per_window() {
    let mut idp = provider(OidcOptions::default());
    let db = TestDb::create("tg_oidc_down");
    // One fetch per 5 s at most: the whole storm falls in one window.
    const WINDOW: Duration = Duration::from_secs(5);
    let config = format!(
        "{}{}",
        db.connection("agents-db", &["agents"], "disable"),
        oidc_config_window(&idp, WINDOW.as_secs(), "")
    );
    let gw = Gateway::start(&config);
    let token = agent_token(&idp);
    let o = gw.psql("agents-db", &token, "disable", &["-c", "SELECT 1"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A storm of tokens naming random kids, past the refetch window: one fetch, not one each.
    std::thread::sleep(WINDOW + Duration::from_millis(200));
    let storm: Vec<String> = (0..40)
        .map(|i| {
            idp.sign(json!({
                "payload": idp.machine_claims(AGENT_CLIENT, AGENT_GROUPS, 300),
                "header": {"kid": format!("storm-{i}-{}", now_secs())},
            }))
        })
        .collect();
    let before = idp.jwks_fetches();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let answers = join_all(storm.iter().map(|t| {
        let req = http
            .get(format!("{}/api/whoami", gw.url()))
            .bearer_auth(t)
            .send();
        async move { req.await.unwrap().status().as_u16() }
    }))
    .await;
    assert!(answers.iter().all(|s| *s == 401), "{answers:?}");
    // And through the PostgreSQL front, concurrently too.
    let pg = join_all(storm.iter().take(10).map(|t| driver(&gw, "agents-db", t))).await;
    assert!(pg.iter().all(|r| r.is_err()));
    let fetched = idp.jwks_fetches() - before;
    assert!(fetched <= 1, "{fetched} JWKS fetches for one storm");
    assert_eq!(fetched, 1, "the window was open: one fetch was due");
    // The real token still works.
    let (status, _) = api(&gw, "GET", "/api/whoami", &token, None);
    assert_eq!(status, 200);

    // The provider goes down: the cached keys keep verifying.
    idp.stop();
    let o = gw.psql("agents-db", &token, "disable", &["-c", "SELECT 2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let client = driver(&gw, "agents-db", &token).await.unwrap();
    client.simple_query("SELECT 3").await.unwrap();
    let (status, _) = api(&gw, "GET", "/api/whoami", &token, None);
    assert_eq!(status, 200);
    // An unknown kid is still just an invalid token.
    let err = psql_refused(&gw, "agents-db", &storm[0]);
    assert!(
        err.contains("authentication failed: invalid token"),
        "{err}"
    );

    // A gateway that starts while the provider is down starts anyway, and refuses its tokens
    // as "identity provider unavailable" until the provider answers.
    let gw2 = Gateway::start(&config);
    assert!(
        gw2.stderr().contains("OIDC provider unavailable at start"),
        "{}",
        gw2.stderr()
    );
    let err = psql_refused(&gw2, "agents-db", &token);
    assert!(
        err.contains("authentication failed: identity provider unavailable"),
        "{err}"
    );
    let e = match driver(&gw2, "agents-db", &token).await {
        Ok(_) => panic!("no keys, yet accepted"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&e), "57P03", "{e}");
    let (status, body) = api(&gw2, "GET", "/api/whoami", &token, None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("identity_unavailable"))
    );
    // API keys are unaffected.
    let (status, _) = api(&gw2, "GET", "/api/whoami", ADMIN_KEY, None);
    assert_eq!(status, 200);
    idp.restart();
    std::thread::sleep(WINDOW + Duration::from_millis(200));
    let o = gw2.psql("agents-db", &token, "disable", &["-c", "SELECT 4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    drop(client);
}
