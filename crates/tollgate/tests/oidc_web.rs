//! The web login of the API against the real OpenID provider (`common::oidc`) and the machine's
//! PostgreSQL: a person logs in through `/api/auth/login` as a browser would, and the session
//! cookie then stands for a bearer on the API, with a CSRF header on requests that change
//! state. Forged and replayed states, a code of another client, logout, expiry and revocation
//! are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::oidc::*;
use common::*;
use serde_json::{Value, json};

const SECRET_ENV: &str = "TOLLGATE_TEST_WEB_SECRET";
const CALLBACK: &str = "http://127.0.0.1/api/auth/callback";

fn provider(options: OidcOptions) -> OidcProvider {
    // SAFETY of the process environment: every test sets the same value.
    unsafe { std::env::set_var(SECRET_ENV, WEB_SECRET) };
    OidcProvider::start(options.web_redirect_uri(CALLBACK))
}

/// The issuer (the web client's ID tokens accepted through `client_ids`), `[oidc.web]` with
/// `web_extra`, and `[roles]` (`db-admins` → `platform`: administrators).
fn web_config(idp: &OidcProvider, web_extra: &str) -> String {
    format!(
        "[[oidc.issuers]]\nissuer = \"{iss}\"\naudiences = [\"{AUDIENCE}\"]\nclient_ids = [\"{WEB_CLIENT}\"]\n\
         group_map = {{ \"db-admins\" = [\"platform\"] }}\n\n\
         [oidc.web]\nissuer = \"{iss}\"\nclient_id = \"{WEB_CLIENT}\"\nclient_secret_env = \"{SECRET_ENV}\"\n{web_extra}\n\
         [roles]\nadmin_groups = [\"platform\"]\n\n",
        iss = idp.issuer()
    )
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

/// One plain HTTP request (no redirects followed, no cookie jar: cookies are sent by hand).
fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<Value>) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let url = url.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut req = client.request(method, &url);
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                if let Some(b) = body {
                    req = req.json(&b);
                }
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let headers = resp
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let text = resp.text().await.unwrap();
                Resp {
                    status,
                    headers,
                    body: serde_json::from_str(&text).unwrap_or(json!({ "raw": text })),
                }
            })
    })
    .join()
    .unwrap()
}

/// `name=value` of a `Set-Cookie`, and its attributes.
fn cookie_parts(set_cookie: &str) -> (String, String, Vec<String>) {
    let mut parts = set_cookie.split(';').map(str::trim);
    let (name, value) = parts.next().unwrap().split_once('=').unwrap();
    (
        name.to_string(),
        value.to_string(),
        parts.map(str::to_string).collect(),
    )
}

/// The cookies a response sets, by name (value, attributes).
fn cookies(r: &Resp) -> BTreeMap<String, (String, Vec<String>)> {
    r.set_cookies()
        .iter()
        .map(|c| {
            let (n, v, a) = cookie_parts(c);
            (n, (v, a))
        })
        .collect()
}

/// A started login: the provider's authorization URL and the login cookie (`name=value`).
fn start_login(gw: &Gateway, return_to: Option<&str>) -> (String, String) {
    let url = match return_to {
        Some(r) => format!("{}/api/auth/login?return_to={r}", gw.url()),
        None => format!("{}/api/auth/login", gw.url()),
    };
    let r = http("GET", &url, &[], None);
    assert_eq!(r.status, 302, "{}", r.body);
    let location = r.header("location").unwrap().to_string();
    let set = r.set_cookies();
    assert_eq!(set.len(), 1, "{set:?}");
    let (name, value, _) = cookie_parts(&set[0]);
    (location, format!("{name}={value}"))
}

/// A whole login as `user`: returns the callback's answer and the session cookie
/// (`name=value`).
fn login(gw: &Gateway, idp: &OidcProvider, user: &str, password: &str) -> (Resp, String) {
    let (authorize, login_cookie) = start_login(gw, Some("/app?x=1"));
    assert!(authorize.starts_with(&idp.url("/auth")), "{authorize}");
    for (k, v) in [
        ("response_type", "code"),
        ("client_id", WEB_CLIENT),
        ("code_challenge_method", "S256"),
    ] {
        assert_eq!(
            query_param(&authorize, k).as_deref(),
            Some(v),
            "{authorize}"
        );
    }
    assert!(query_param(&authorize, "nonce").is_some_and(|n| n.len() >= 43));
    assert_eq!(
        query_param(&authorize, "redirect_uri").unwrap(),
        format!("{}/api/auth/callback", gw.url())
    );
    let back = idp.browser_login(&authorize, user, password);
    assert!(
        back.starts_with(&format!("{}/api/auth/callback?", gw.url())),
        "{back}"
    );
    let r = http("GET", &back, &[("cookie", &login_cookie)], None);
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(r.header("location"), Some("/app?x=1"));
    let session = r
        .set_cookies()
        .into_iter()
        .find(|c| c.contains("tollgate_session="))
        .unwrap();
    let (name, value, _) = cookie_parts(&session);
    assert_eq!(value.len(), 43, "256 random bits, base64url");
    (r, format!("{name}={value}"))
}

fn me(gw: &Gateway, cookie: &str) -> Resp {
    http(
        "GET",
        &format!("{}/api/auth/me", gw.url()),
        &[("cookie", cookie)],
        None,
    )
}

/// The gateway's own stream, as the admin key reads it: every event.
fn gateway_events(gw: &Gateway) -> Vec<Value> {
    let r = http(
        "GET",
        &format!("{}/api/audit/gateway", gw.url()),
        &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["streams"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["events"].as_array().cloned().unwrap_or_default())
        .map(|e| e["kind"].clone())
        .collect()
}

fn wait_events(gw: &Gateway, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let events = gateway_events(gw);
        if pred(&events) {
            return events;
        }
        assert!(Instant::now() < deadline, "{what}: {events:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_browser_logs_in_and_uses_the_api_with_a_secure_session_cookie() {
    let idp = provider(OidcOptions::default());
    let db = TestDb::create("tg_web");
    let config = format!(
        "{}{}",
        db.connection("eng-db", &["eng"], "disable"),
        web_config(&idp, "")
    );
    let gw = Gateway::start(&config);

    // The login cookie binds the state to this browser, for the callback's path only.
    let (_, login_cookie) = start_login(&gw, None);
    assert!(login_cookie.starts_with("__Secure-tollgate_login="));

    let (callback, cookie) = login(&gw, &idp, "alice", "alice-pass");
    let set = cookies(&callback);
    let (_, attrs) = &set["__Host-tollgate_session"];
    for a in ["Path=/", "HttpOnly", "SameSite=Lax", "Secure"] {
        assert!(attrs.iter().any(|x| x == a), "{a} missing: {attrs:?}");
    }
    assert!(!attrs.iter().any(|x| x.starts_with("Domain")), "{attrs:?}");
    let max_age: i64 = attrs
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (200..=300).contains(&max_age),
        "the ID token's life: {max_age}"
    );
    // The login cookie is removed.
    let (v, attrs) = &set["__Secure-tollgate_login"];
    assert!(
        v.is_empty() && attrs.iter().any(|a| a == "Max-Age=0"),
        "{set:?}"
    );

    // Who the session is.
    let r = me(&gw, &cookie);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["subject"], "alice");
    assert_eq!(r.body["kind"], "human");
    assert_eq!(r.body["role"], "admin");
    assert_eq!(r.body["via"], "session");
    assert!(r.body["expires_at"].is_string());
    let groups = r.body["groups"].as_array().unwrap();
    assert!(groups.contains(&json!("eng")) && groups.contains(&json!("platform")));
    let csrf = r.body["csrf_token"].as_str().unwrap().to_string();
    let whoami = http(
        "GET",
        &format!("{}/api/whoami", gw.url()),
        &[("cookie", &cookie)],
        None,
    );
    assert_eq!(
        (whoami.status, whoami.body["subject"].as_str()),
        (200, Some("alice"))
    );

    // The cookie stands for a bearer on reads.
    let r = http(
        "GET",
        &format!("{}/api/sessions", gw.url()),
        &[("cookie", &cookie)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["sessions"].is_array());

    // A request that changes state needs the CSRF header.
    let exec = json!({"connection": "eng-db", "input": "SELECT 40 + 2"});
    let url = format!("{}/api/exec", gw.url());
    let r = http("POST", &url, &[("cookie", &cookie)], Some(exec.clone()));
    assert_eq!((r.status, r.code()), (403, "csrf_required"), "{}", r.body);
    assert!(r.message().contains("X-Tollgate-CSRF"), "{}", r.message());
    let r = http(
        "POST",
        &url,
        &[("cookie", &cookie), ("x-tollgate-csrf", "forged")],
        Some(exec.clone()),
    );
    assert_eq!((r.status, r.code()), (403, "csrf_required"));
    let r = http(
        "POST",
        &url,
        &[("cookie", &cookie), ("x-tollgate-csrf", &csrf)],
        Some(exec.clone()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["rows"][0][0], "42", "{}", r.body);
    // A bearer request needs no CSRF header (the cookie is ignored beside it).
    let r = http(
        "POST",
        &format!("{}/api/keys", gw.url()),
        &[
            ("authorization", &format!("Bearer {ADMIN_KEY}")),
            ("cookie", &cookie),
        ],
        Some(json!({"name": "k", "groups": ["x"]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // Forged state, a state not from this browser, a replayed callback.
    let cb = |query: &str, cookie: &str| {
        http(
            "GET",
            &format!("{}/api/auth/callback?{query}", gw.url()),
            &[("cookie", cookie)],
            None,
        )
    };
    let r = cb("state=forged&code=x", "__Secure-tollgate_login=forged");
    assert_eq!((r.status, r.code()), (400, "login_failed"), "{}", r.body);
    assert!(
        r.message().contains("unknown, used or expired"),
        "{}",
        r.message()
    );
    let (authorize, login_cookie) = start_login(&gw, None);
    let back = idp.browser_login(&authorize, "alice", "alice-pass");
    let query = back.split_once('?').unwrap().1.to_string();
    let r = cb(&query, "__Secure-tollgate_login=someone-else");
    assert_eq!((r.status, r.code()), (400, "login_failed"), "{}", r.body);
    assert!(
        r.message().contains("not started by this browser"),
        "{}",
        r.message()
    );
    let r = cb(&query, &login_cookie);
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(r.header("location"), Some("/"));
    let r = cb(&query, &login_cookie);
    assert_eq!(
        (r.status, r.code()),
        (400, "login_failed"),
        "replayed: {}",
        r.body
    );

    // A code issued to another client (the CLI's) is refused at the exchange.
    let (_, login_cookie) = start_login(&gw, None);
    let state = login_cookie.split_once('=').unwrap().1.to_string();
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    let pkce = Pkce::new();
    let other = idp.authorize_url(CLI_CLIENT, &redirect, PERSON_SCOPES, &pkce, "s");
    let other_code =
        query_param(&idp.browser_login(&other, "alice", "alice-pass"), "code").unwrap();
    let r = cb(&format!("state={state}&code={other_code}"), &login_cookie);
    assert_eq!((r.status, r.code()), (400, "login_failed"), "{}", r.body);
    assert!(
        r.message().contains("did not accept the code"),
        "{}",
        r.message()
    );

    // A return_to off this origin is refused.
    let r = http(
        "GET",
        &format!("{}/api/auth/login?return_to=//evil.example/", gw.url()),
        &[],
        None,
    );
    assert_eq!((r.status, r.code()), (400, "login_failed"), "{}", r.body);

    // Logout needs the CSRF header too, then ends the session and removes the cookie.
    let logout = format!("{}/api/auth/logout", gw.url());
    let r = http("POST", &logout, &[("cookie", &cookie)], None);
    assert_eq!((r.status, r.code()), (403, "csrf_required"));
    let r = http(
        "POST",
        &logout,
        &[("cookie", &cookie), ("x-tollgate-csrf", &csrf)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let (v, attrs) = &cookies(&r)["__Host-tollgate_session"];
    assert!(v.is_empty() && attrs.iter().any(|a| a == "Max-Age=0"));
    let r = me(&gw, &cookie);
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{}", r.body);
    assert!(r.message().contains("log in again"), "{}", r.message());

    // Logins, logouts and refusals are on record.
    // Events are written asynchronously: wait for the last ones of the flow (the logout and the
    // refusal of the cookie used after it).
    let events = wait_events(&gw, "login events", |e| {
        e.iter().any(|k| k["action"] == "web_logout")
            && e.iter().any(|k| {
                k["type"] == "refusal"
                    && k["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("unknown web session cookie"))
            })
    });
    let login_event = events.iter().find(|k| k["action"] == "web_login").unwrap();
    assert_eq!(login_event["by"], "alice");
    assert!(
        login_event["detail"]
            .as_str()
            .unwrap()
            .contains(&idp.issuer()),
        "{login_event}"
    );
    let refusals: Vec<&str> = events
        .iter()
        .filter(|k| k["type"] == "refusal")
        .filter_map(|k| k["detail"].as_str())
        .collect();
    for needle in [
        "X-Tollgate-CSRF",
        "state unknown, already used or expired",
        "not matching the login cookie",
        "code exchange refused",
        "unknown web session cookie",
    ] {
        assert!(
            refusals.iter().any(|d| d.contains(needle)),
            "{needle}: {refusals:#?}"
        );
    }
    // The store keeps the session id hashed only.
    let value = cookie.split_once('=').unwrap().1;
    assert!(!contains(&gw.all_persisted_text(), value));

    // The routes are described.
    let r = http("GET", &format!("{}/api/openapi.json", gw.url()), &[], None);
    for (method, path) in [
        ("get", "/api/auth/login"),
        ("get", "/api/auth/callback"),
        ("post", "/api/auth/logout"),
        ("get", "/api/auth/me"),
    ] {
        assert!(r.body["paths"][path][method].is_object(), "{method} {path}");
    }
}

#[test]
fn sessions_end_with_the_id_token_and_on_revocation() {
    let idp = provider(OidcOptions::default().id_token_ttl(4));
    let gw = Gateway::start(&web_config(&idp, ""));

    // The session lasts as long as the ID token.
    let (_, cookie) = login(&gw, &idp, "bob", "bob-pass");
    let r = me(&gw, &cookie);
    assert_eq!((r.status, r.body["role"].as_str()), (200, Some("user")));
    std::thread::sleep(Duration::from_secs(5));
    let r = me(&gw, &cookie);
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{}", r.body);
    assert!(r.message().contains("session expired"), "{}", r.message());

    // Revoking the subject refuses its live session.
    let (_, cookie) = login(&gw, &idp, "bob", "bob-pass");
    assert_eq!(me(&gw, &cookie).status, 200);
    let r = http(
        "POST",
        &format!("{}/api/tokens/revoke", gw.url()),
        &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
        Some(json!({"subject": "bob", "reason": "left"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = me(&gw, &cookie);
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{}", r.body);
    assert!(r.message().contains("session revoked"), "{}", r.message());
    let events = wait_events(&gw, "refusals", |e| {
        e.iter().any(|k| {
            k["detail"]
                .as_str()
                .is_some_and(|d| d.contains("web session:") && d.contains("revoked"))
        })
    });
    assert!(events.iter().any(|k| {
        k["detail"]
            .as_str()
            .is_some_and(|d| d.contains("the web session of") && d.contains("ended at"))
    }));
}

#[test]
fn plain_cookies_only_on_loopback() {
    let idp = provider(OidcOptions::default());
    let gw = Gateway::start(&web_config(&idp, "cookie_secure = false\n"));
    let (callback, cookie) = login(&gw, &idp, "alice", "alice-pass");
    assert!(cookie.starts_with("tollgate_session="), "{cookie}");
    let (_, attrs) = &cookies(&callback)["tollgate_session"];
    for a in ["Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(attrs.iter().any(|x| x == a), "{a} missing: {attrs:?}");
    }
    assert!(!attrs.iter().any(|a| a == "Secure"), "{attrs:?}");
    assert_eq!(me(&gw, &cookie).status, 200);
    // The secure name is not accepted in this mode.
    let value = cookie.split_once('=').unwrap().1;
    let r = me(&gw, &format!("__Host-tollgate_session={value}"));
    assert_eq!(r.status, 401);

    // Off loopback, plain cookies are a configuration error naming the key.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(
        &path,
        format!(
            "[listen]\napi = \"0.0.0.0:{}\"\npostgres = \"127.0.0.1:{}\"\n\n{}",
            free_port(),
            free_port(),
            web_config(&idp, "cookie_secure = false\n")
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["up", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("oidc.web.cookie_secure") && err.contains("loopback"),
        "{err}"
    );
}
