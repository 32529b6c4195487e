//! `tollgate login` / `logout` against a real OpenID provider (`common::oidc`): the code flow
//! with PKCE through the CLI's loopback listener, the device flow, the token cache, refresh, and
//! the bearer the other commands send.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::oidc::*;
use serde_json::Value;

/// A home directory of its own for the CLI.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config_dir(&self) -> PathBuf {
        self.path().join(".config").join("tollgate")
    }

    fn cache_path(&self) -> PathBuf {
        self.config_dir().join("tokens.json")
    }

    fn cache(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.cache_path()).unwrap()).unwrap()
    }

    /// The CLI with this home and nothing of the test's environment that would change it.
    fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(common::BIN);
        c.args(args)
            .env("HOME", self.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("TOLLGATE_TOKEN")
            .env_remove("TOLLGATE_URL")
            .env_remove("TOLLGATE_OIDC_ISSUER")
            .env_remove("TOLLGATE_OIDC_CLIENT_ID")
            .env_remove("BROWSER")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        Out::of(self.cli(args).output().unwrap())
    }
}

struct Out {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn of(o: std::process::Output) -> Self {
        Self {
            ok: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn assert_ok(&self, what: &str) -> &Self {
        assert!(self.ok, "{what} failed:\n{}\n{}", self.stdout, self.stderr);
        self
    }
}

/// A CLI process whose stdout is read line by line while it runs.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (out, all) = (child.stdout.take().unwrap(), stdout.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                all.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let (mut err, all) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            all.lock().unwrap().push_str(&s);
        });
        Self {
            child,
            lines,
            stdout,
            stderr,
        }
    }

    /// The first line of stdout that satisfies `pred`.
    fn line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => {}
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no {what} from the CLI:\n{}\n{}",
                        self.stdout.lock().unwrap(),
                        self.stderr.lock().unwrap()
                    );
                }
            }
        }
    }

    /// Waits for the exit; the status, stdout and stderr.
    fn finish(mut self, within: Duration) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the CLI did not exit within {within:?}:\n{}\n{}",
                    self.stdout.lock().unwrap(),
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader threads take the rest.
        std::thread::sleep(Duration::from_millis(100));
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (status, out, err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP/1.1 request; the status, the `Set-Cookie` values and the body.
fn http(
    method: &str,
    url: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> (u16, Vec<String>, String) {
    let u = reqwest::Url::parse(url).unwrap();
    let addr = format!(
        "{}:{}",
        u.host_str().unwrap(),
        u.port_or_known_default().unwrap()
    );
    let target = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        u.authority()
    );
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    let body = form.unwrap_or_default();
    if form.is_some() {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap_or("0").parse().unwrap();
    let mut cookies = Vec::new();
    let mut chunked = false;
    for line in head.lines().skip(1) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("set-cookie") {
            cookies.push(v.trim().split(';').next().unwrap().to_string());
        }
        if k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, cookies, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Denies a device login as a person would: opens the verification page, enters the code and
/// presses abort on the confirmation.
fn device_deny(verification_uri: &str, user_code: &str) {
    let (status, cookies, page) = http("GET", verification_uri, None, None);
    assert_eq!(status, 200, "{page}");
    let xsrf = page
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no xsrf field: {page}"));
    let form = reqwest::Url::parse_with_params(
        "http://x/",
        &[("xsrf", xsrf), ("user_code", user_code), ("abort", "yes")],
    )
    .unwrap()
    .query()
    .unwrap()
    .to_string();
    let (status, _, page) = http(
        "POST",
        verification_uri,
        Some(&cookies.join("; ")),
        Some(&form),
    );
    assert!(status < 500, "{status} {page}");
}

/// A tiny stand-in for the gateway's API: answers every request with empty lists and records
/// the `Authorization` headers it gets.
struct FakeApi {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let auth = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                record.lock().unwrap().push(auth);
                let body = r#"{"sessions": [], "approvals": [], "keys": [], "access": []}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { url, seen }
    }

    fn last_bearer(&self) -> String {
        let seen = self.seen.lock().unwrap();
        let auth = seen.last().expect("a request reached the API");
        auth.strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("not a bearer: {auth:?}"))
            .to_string()
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `tollgate login` (code + PKCE) with `extra` arguments, driven through the provider's pages
/// as `user`; returns the authorization URL the CLI printed.
fn code_login(idp: &OidcProvider, home: &Home, extra: &[&str], user: &str, pw: &str) -> String {
    let mut cmd = home.cli(&["login"]);
    cmd.args(extra);
    let mut run = Running::start(cmd);
    let url = run
        .line("authorization URL", |l| l.contains("code_challenge="))
        .trim()
        .to_string();
    let back = idp.browser_login(&url, user, pw);
    let (status, _, page) = http("GET", &back, None, None);
    assert_eq!(status, 200, "{page}");
    let (status, out, err) = run.finish(Duration::from_secs(30));
    assert!(status.success(), "login failed:\n{out}\n{err}");
    assert!(out.contains(&format!("logged in as {user}")), "{out}");
    url
}

#[test]
fn code_and_pkce_login_caches_alices_id_token_privately() {
    let idp = OidcProvider::start(OidcOptions::default());
    let home = Home::new();
    // A BROWSER command is started with the URL; this one only writes it down.
    let opened = home.path().join("opened.txt");
    let browser = home.path().join("browser.sh");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\nprintf '%s' \"$1\" > {}\n", opened.display()),
    )
    .unwrap();
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut cmd = home.cli(&[
        "login",
        "--issuer",
        &idp.issuer(),
        "--client-id",
        CLI_CLIENT,
    ]);
    cmd.env("BROWSER", &browser);
    let mut run = Running::start(cmd);
    let url = run
        .line("authorization URL", |l| l.contains("code_challenge="))
        .trim()
        .to_string();
    assert!(url.starts_with(&idp.url("/auth?")), "{url}");
    assert_eq!(
        query_param(&url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(query_param(&url, "client_id").as_deref(), Some(CLI_CLIENT));
    assert_eq!(query_param(&url, "scope").as_deref(), Some(PERSON_SCOPES));
    let redirect = query_param(&url, "redirect_uri").unwrap();
    assert!(
        redirect.starts_with("http://127.0.0.1:") && redirect.ends_with("/callback"),
        "{redirect}"
    );
    let nonce = query_param(&url, "nonce").unwrap();
    assert!(query_param(&url, "state").unwrap().len() >= 16);

    // The provider sends the browser back to the CLI's loopback listener.
    let back = idp.browser_login(&url, "alice", "alice-pass");
    assert!(back.starts_with(&redirect), "{back}");
    let (status, _, page) = http("GET", &back, None, None);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("close this tab"), "{page}");
    let (status, out, err) = run.finish(Duration::from_secs(30));
    assert!(status.success(), "login failed:\n{out}\n{err}");
    assert!(
        out.contains("logged in as alice (alice@example.test) (groups eng, db-admins)"),
        "{out}"
    );
    assert!(out.contains("the ID token expires at"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&opened).unwrap(),
        url,
        "the browser got the URL"
    );

    // The cache: private, with alice's ID token as the bearer and a refresh token.
    assert_eq!(mode(&home.cache_path()), 0o600);
    assert_eq!(mode(&home.config_dir()), 0o700);
    let cache = home.cache();
    assert_eq!(cache["version"], 1);
    assert_eq!(cache["issuer"], idp.issuer());
    assert_eq!(cache["client_id"], CLI_CLIENT);
    assert_eq!(cache["use"], "id-token");
    assert!(
        cache["refresh_token"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    let (_, id) = decode_jwt(cache["id_token"].as_str().unwrap());
    assert_eq!(id["sub"], "alice");
    assert_eq!(id["aud"], CLI_CLIENT);
    assert_eq!(id["nonce"], nonce.as_str());
    assert_eq!(strings(&id["groups"]), ["eng", "db-admins"]);
    assert_eq!(cache["expires_at"], id["exp"]);
    let (_, at) = decode_jwt(cache["access_token"].as_str().unwrap());
    assert_eq!(at["aud"], AUDIENCE);
}

#[test]
fn a_callback_with_a_forged_state_is_refused() {
    let idp = OidcProvider::start(OidcOptions::default());
    let home = Home::new();
    let mut run = Running::start(home.cli(&[
        "login",
        "--issuer",
        &idp.issuer(),
        "--client-id",
        CLI_CLIENT,
    ]));
    let url = run
        .line("authorization URL", |l| l.contains("code_challenge="))
        .trim()
        .to_string();
    let redirect = query_param(&url, "redirect_uri").unwrap();
    // A stray request first: ignored, the login goes on waiting.
    let (status, _, _) = http(
        "GET",
        &redirect.replace("/callback", "/favicon.ico"),
        None,
        None,
    );
    assert_eq!(status, 404);
    let (status, _, page) = http(
        "GET",
        &format!(
            "{redirect}?code=forged-code&state=forged-state&iss={}",
            idp.issuer()
        ),
        None,
        None,
    );
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("state does not match"), "{page}");
    let (status, out, err) = run.finish(Duration::from_secs(10));
    assert!(
        !status.success(),
        "a forged callback was accepted:\n{out}\n{err}"
    );
    assert!(
        err.contains("refused the login callback: its state does not match"),
        "{err}"
    );
    assert!(err.contains("nothing was exchanged"), "{err}");
    assert!(!home.cache_path().exists());
}

#[test]
fn device_flow_caches_bobs_token() {
    let idp = OidcProvider::start(OidcOptions::default());
    let home = Home::new();
    // Issuer and client id from the environment this time.
    let mut cmd = home.cli(&["login", "--device"]);
    cmd.env("TOLLGATE_OIDC_ISSUER", idp.issuer())
        .env("TOLLGATE_OIDC_CLIENT_ID", CLI_CLIENT);
    let mut run = Running::start(cmd);
    let line = run.line("user code", |l| l.contains("enter the code"));
    let uri = line
        .split("open ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_string();
    let code = line.split(' ').next_back().unwrap().to_string();
    assert!(uri.starts_with(&idp.issuer()), "{line}");
    idp.device_approve(&uri, &code, "bob", "bob-pass");
    let (status, out, err) = run.finish(Duration::from_secs(40));
    assert!(status.success(), "device login failed:\n{out}\n{err}");
    assert!(
        out.contains("logged in as bob (bob@example.test) (groups sales)"),
        "{out}"
    );
    let cache = home.cache();
    assert_eq!(mode(&home.cache_path()), 0o600);
    let (_, id) = decode_jwt(cache["id_token"].as_str().unwrap());
    assert_eq!(id["sub"], "bob");
    assert_eq!(strings(&id["groups"]), ["sales"]);
    assert!(cache["refresh_token"].is_string());
}

#[test]
fn a_denied_device_login_fails_clearly() {
    let idp = OidcProvider::start(OidcOptions::default());
    let home = Home::new();
    let mut run = Running::start(home.cli(&[
        "login",
        "--device",
        "--issuer",
        &idp.issuer(),
        "--client-id",
        CLI_CLIENT,
    ]));
    let line = run.line("user code", |l| l.contains("enter the code"));
    let uri = line
        .split("open ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap();
    let code = line.split(' ').next_back().unwrap();
    device_deny(uri, code);
    let (status, out, err) = run.finish(Duration::from_secs(40));
    assert!(!status.success(), "a denied login succeeded:\n{out}\n{err}");
    assert!(
        err.contains("the login was denied at the identity provider (access_denied)"),
        "{err}"
    );
    assert!(!home.cache_path().exists());
}

#[test]
fn an_expired_id_token_is_refreshed_before_a_command_uses_it() {
    let mut idp = OidcProvider::start(OidcOptions::default().id_token_ttl(2));
    let home = Home::new();
    code_login(
        &idp,
        &home,
        &["--issuer", &idp.issuer(), "--client-id", CLI_CLIENT],
        "alice",
        "alice-pass",
    );
    let first = home.cache();
    let first_id = first["id_token"].as_str().unwrap().to_string();
    let exp = decode_jwt(&first_id).1["exp"].as_i64().unwrap();
    while now_secs() <= exp {
        std::thread::sleep(Duration::from_millis(200));
    }

    // A command that talks to the API refreshes first and sends the new ID token.
    let api = FakeApi::start();
    home.run(&["sessions", "list", "--url", &api.url])
        .assert_ok("sessions list with an expired login");
    let second = home.cache();
    let second_id = second["id_token"].as_str().unwrap().to_string();
    assert_ne!(second_id, first_id, "the cache holds a refreshed ID token");
    let (_, claims) = decode_jwt(&second_id);
    assert_eq!(claims["sub"], "alice");
    assert!(claims["exp"].as_i64().unwrap() > exp);
    assert_eq!(api.last_bearer(), second_id);
    assert_eq!(mode(&home.cache_path()), 0o600);

    // TOLLGATE_TOKEN comes first, and the cache is left alone.
    let out = Out::of(
        home.cli(&["approvals", "list", "--url", &api.url])
            .env("TOLLGATE_TOKEN", "tg_static_key")
            .output()
            .unwrap(),
    );
    out.assert_ok("approvals list with TOLLGATE_TOKEN");
    assert_eq!(api.last_bearer(), "tg_static_key");
    assert_eq!(home.cache()["id_token"].as_str().unwrap(), second_id);

    // With the provider gone, an expired login cannot be refreshed: say what to do.
    idp.stop();
    let exp = claims["exp"].as_i64().unwrap();
    while now_secs() <= exp {
        std::thread::sleep(Duration::from_millis(200));
    }
    let requests = api.seen.lock().unwrap().len();
    let out = home.run(&["sessions", "list", "--url", &api.url]);
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stderr.contains("run `tollgate login` again"),
        "{}",
        out.stderr
    );
    assert_eq!(api.seen.lock().unwrap().len(), requests, "nothing was sent");
}

#[test]
fn status_print_token_and_logout() {
    let idp = OidcProvider::start(OidcOptions::default());
    let home = Home::new();
    let out = home.run(&["login", "--status"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.contains("not logged in"), "{}", out.stdout);

    // Settings from login.toml, with the access token as the bearer.
    std::fs::create_dir_all(home.config_dir()).unwrap();
    std::fs::write(
        home.config_dir().join("login.toml"),
        format!(
            "issuer = \"{}\"\nclient_id = \"{CLI_CLIENT}\"\nuse = \"access-token\"\n",
            idp.issuer()
        ),
    )
    .unwrap();
    code_login(&idp, &home, &[], "alice", "alice-pass");
    let cache = home.cache();
    assert_eq!(cache["use"], "access-token");

    let out = home.run(&["login", "--status"]);
    out.assert_ok("login --status");
    for want in [
        "logged in as alice (alice@example.test)",
        &format!("issuer:    {}", idp.issuer()),
        "client id: tollgate-cli",
        "groups:    eng, db-admins",
        "the access token (--use access-token), expires at",
        "without verifying its signature",
    ] {
        assert!(out.stdout.contains(want), "{want:?} in\n{}", out.stdout);
    }
    let out = home.run(&["login", "--print-token"]);
    out.assert_ok("login --print-token");
    let token = out.stdout.trim();
    assert_eq!(token, cache["access_token"].as_str().unwrap());
    assert_eq!(decode_jwt(token).1["aud"], AUDIENCE);

    // Logout removes the cache and revokes the refresh token at the provider.
    let refresh = cache["refresh_token"].as_str().unwrap().to_string();
    let out = home.run(&["logout"]);
    out.assert_ok("logout");
    assert!(out.stdout.contains("logged out alice"), "{}", out.stdout);
    assert!(
        out.stdout.contains("revoked 2 tokens at the provider"),
        "{}",
        out.stdout
    );
    assert!(!home.cache_path().exists());
    let (status, body) = idp.refresh(CLI_CLIENT, None, &refresh).unwrap_err();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let out = home.run(&["login", "--status"]);
    assert_eq!(out.code, Some(1));
    let out = home.run(&["logout"]);
    out.assert_ok("a second logout");
    assert!(out.stdout.contains("not logged in"), "{}", out.stdout);
}

#[test]
fn without_a_token_or_a_login_the_error_names_both_ways() {
    let home = Home::new();
    let api = FakeApi::start();
    let out = home.run(&["sessions", "list", "--url", &api.url]);
    assert!(!out.ok);
    assert!(out.stderr.contains("TOLLGATE_TOKEN"), "{}", out.stderr);
    assert!(out.stderr.contains("tollgate login"), "{}", out.stderr);
    assert!(api.seen.lock().unwrap().is_empty());

    let out = home.run(&["login"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("--issuer") && out.stderr.contains("TOLLGATE_OIDC_ISSUER"),
        "{}",
        out.stderr
    );
    // XDG_CONFIG_HOME moves the config directory.
    let xdg = home.path().join("xdg");
    let out = Out::of(
        home.cli(&["login", "--status"])
            .env("XDG_CONFIG_HOME", &xdg)
            .output()
            .unwrap(),
    );
    assert!(
        out.stdout.contains(
            &xdg.join("tollgate")
                .join("tokens.json")
                .display()
                .to_string()
        ),
        "{}",
        out.stdout
    );

    // A damaged cache is reported, and logout clears it.
    std::fs::create_dir_all(home.config_dir()).unwrap();
    std::fs::write(home.cache_path(), "{ not json").unwrap();
    let out = home.run(&["sessions", "list", "--url", &api.url]);
    assert!(!out.ok);
    assert!(out.stderr.contains("tollgate login"), "{}", out.stderr);
    home.run(&["logout"]).assert_ok("logout of a damaged cache");
    assert!(!home.cache_path().exists());
}

#[test]
fn exec_runs_a_statement_through_the_gateway_with_the_cached_login() {
    let idp = OidcProvider::start(OidcOptions::default());
    let db = common::TestDb::create("login");
    // The ID token's audience is the CLI's client id.
    let gw = common::Gateway::start(&format!(
        "[[oidc.issuers]]\nissuer = \"{}\"\naudiences = [\"{CLI_CLIENT}\"]\n\n{}",
        idp.issuer(),
        db.connection("logindb", &["eng"], "disable")
    ));
    let home = Home::new();
    code_login(
        &idp,
        &home,
        &["--issuer", &idp.issuer(), "--client-id", CLI_CLIENT],
        "alice",
        "alice-pass",
    );
    let out = home.run(&[
        "exec",
        "logindb",
        "-i",
        "SELECT 40 + 2 AS answer",
        "--url",
        &gw.url(),
    ]);
    assert!(
        out.ok,
        "exec with the login failed:\n{}\n{}\ngateway:\n{}",
        out.stdout,
        out.stderr,
        gw.stderr()
    );
    assert!(out.stdout.contains("42"), "{}", out.stdout);
    let sessions = gw.wait_sessions("alice's exec session", |s| {
        s.iter()
            .any(|x| x["subject"].as_str().is_some_and(|w| w.contains("alice")))
    });
    let session = sessions
        .iter()
        .find(|x| x["subject"].as_str().is_some_and(|w| w.contains("alice")))
        .unwrap();
    assert_eq!(session["connection"], "logindb");

    // `tollgate connect` answers the PostgreSQL password challenge with the same token.
    let mut cmd = home.cli(&["connect", "logindb", "--port", "0", "--url", &gw.url()]);
    cmd.env("TOLLGATE_URL", gw.url());
    let mut run = Running::start(cmd);
    let line = run.line("the local port", |l| l.starts_with("forwarding 127.0.0.1:"));
    assert!(line.contains("as alice"), "{line}");
    let port = line
        .trim_start_matches("forwarding 127.0.0.1:")
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let psql = Command::new("psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg(format!(
            "host=127.0.0.1 port={port} dbname=logindb sslmode=disable"
        ))
        .args(["-c", "SELECT 6 * 7"])
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    drop(run);
    assert!(
        psql.status.success(),
        "psql through connect: {}\n{}",
        String::from_utf8_lossy(&psql.stderr),
        gw.stderr()
    );
    assert_eq!(String::from_utf8_lossy(&psql.stdout).trim(), "42");
}
