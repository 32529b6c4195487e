//! The provider side of a login: discovery, the authorization code with PKCE, the device
//! authorization grant, refresh and revocation.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use url::Url;

use super::cache::{Cache, decode_claims};
use super::loopback;

/// The endpoints a login uses, from the discovery document.
#[derive(Debug)]
pub struct Provider {
    pub issuer: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: String,
    pub device_authorization_endpoint: Option<String>,
    pub revocation_endpoint: Option<String>,
}

/// A successful token endpoint answer.
#[derive(Debug)]
pub struct TokenResponse {
    pub access_token: String,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    fn from_json(v: &Value) -> Result<Self> {
        let s = |k: &str| v[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
        Ok(Self {
            access_token: s("access_token")
                .ok_or_else(|| anyhow!("the token endpoint's answer has no access_token"))?,
            id_token: s("id_token"),
            refresh_token: s("refresh_token"),
            expires_in: v["expires_in"].as_u64(),
        })
    }
}

/// An OAuth error answer (`{"error": "...", "error_description": "..."}`).
#[derive(Debug)]
pub struct OauthError {
    pub status: u16,
    pub error: String,
    pub description: Option<String>,
}

impl std::fmt::Display for OauthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        if let Some(d) = &self.description {
            write!(f, ": {d}")?;
        }
        write!(f, " (HTTP {})", self.status)
    }
}

/// The HTTP client of the login: bounded time, no redirects (an endpoint that redirects is
/// refused rather than followed).
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build the HTTP client")
}

/// An endpoint must be HTTPS, or HTTP on a loopback address (a provider on this machine).
fn check_url(what: &str, url: &str) -> Result<()> {
    let u = Url::parse(url).with_context(|| format!("{what} {url:?} is not a URL"))?;
    let loopback = match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => bail!("{what} {url} must use https (plain http only on a loopback address)"),
    }
}

/// Reads `<issuer>/.well-known/openid-configuration`; its `issuer` must be the one asked for.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Provider> {
    let issuer = issuer.trim_end_matches('/');
    check_url("the issuer", issuer)?;
    let url = format!("{issuer}/.well-known/openid-configuration");
    let resp = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach the identity provider at {url}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .with_context(|| format!("reading {url}"))?;
    if !status.is_success() {
        bail!("{url} answered HTTP {status}; is {issuer} the issuer URL?");
    }
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("{url} is not a JSON discovery document"))?;
    let s = |k: &str| doc[k].as_str().map(str::to_string);
    let found = s("issuer").unwrap_or_default();
    if found.trim_end_matches('/') != issuer {
        bail!(
            "the discovery document at {url} names the issuer {found:?}, not {issuer:?}; pass the issuer exactly"
        );
    }
    if let Some(methods) = doc["code_challenge_methods_supported"].as_array()
        && !methods.iter().any(|m| m == "S256")
    {
        bail!("the identity provider does not support PKCE with S256");
    }
    let token_endpoint =
        s("token_endpoint").ok_or_else(|| anyhow!("{url} names no token_endpoint"))?;
    check_url("the token endpoint", &token_endpoint)?;
    let p = Provider {
        issuer: found,
        authorization_endpoint: s("authorization_endpoint"),
        token_endpoint,
        device_authorization_endpoint: s("device_authorization_endpoint"),
        revocation_endpoint: s("revocation_endpoint"),
    };
    for (what, u) in [
        ("the authorization endpoint", &p.authorization_endpoint),
        (
            "the device authorization endpoint",
            &p.device_authorization_endpoint,
        ),
        ("the revocation endpoint", &p.revocation_endpoint),
    ] {
        if let Some(u) = u {
            check_url(what, u)?;
        }
    }
    Ok(p)
}

/// `count` random bytes, base64url without padding.
fn random_b64(count: usize) -> Result<String> {
    let mut buf = vec![0u8; count];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
        .map_err(|_| anyhow!("no random numbers from the system"))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// The S256 code challenge of a PKCE verifier (RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// A POST of a form to the token (or device, revocation) endpoint: the JSON answer, or the
/// OAuth error.
async fn post_form(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<std::result::Result<Value, OauthError>> {
    let resp = http
        .post(url)
        .header("accept", "application/json")
        .form(form)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .with_context(|| format!("reading {url}"))?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(Ok(v));
    }
    match v["error"].as_str() {
        Some(e) => Ok(Err(OauthError {
            status: status.as_u16(),
            error: e.to_string(),
            description: v["error_description"].as_str().map(str::to_string),
        })),
        None => bail!(
            "{url} answered HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        ),
    }
}

/// Checks what an ID token says about itself (not its signature: the gateway verifies that).
fn check_id_token(token: &str, issuer: &str, client_id: &str, nonce: Option<&str>) -> Result<()> {
    let c = decode_claims(token).ok_or_else(|| anyhow!("the ID token is not a readable JWT"))?;
    if c["iss"].as_str() != Some(issuer) {
        bail!(
            "the ID token was issued by {}, not {issuer}",
            c["iss"].as_str().unwrap_or("nobody")
        );
    }
    let aud_ok = match &c["aud"] {
        Value::String(a) => a == client_id,
        Value::Array(a) => a.iter().any(|x| x == client_id),
        _ => false,
    };
    if !aud_ok {
        bail!("the ID token is not for the client {client_id}");
    }
    if let Some(n) = nonce
        && c["nonce"].as_str() != Some(n)
    {
        bail!("the ID token's nonce is not the one this login sent; nothing was saved");
    }
    Ok(())
}

/// The authorization code with PKCE through a loopback redirect.
pub async fn code_flow(
    http: &reqwest::Client,
    p: &Provider,
    client_id: &str,
    scope: &str,
    open: bool,
    timeout: Duration,
) -> Result<TokenResponse> {
    let auth = p.authorization_endpoint.as_deref().ok_or_else(|| {
        anyhow!("the identity provider has no authorization endpoint; try --device")
    })?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot listen on 127.0.0.1 for the browser's redirect")?;
    let port = listener.local_addr()?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let verifier = random_b64(32)?;
    let state = random_b64(16)?;
    let nonce = random_b64(16)?;
    let mut url = Url::parse(auth).context("the authorization endpoint is not a URL")?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", scope)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &pkce_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    println!("Open this URL in a browser to log in:");
    println!();
    println!("  {url}");
    println!();
    println!(
        "Waiting up to {} for the browser to come back to {redirect_uri} ...",
        super::human(timeout.as_secs() as i64)
    );
    flush();
    open_browser(url.as_str(), open);
    let code = tokio::time::timeout(
        timeout,
        loopback::wait_for_code(listener, &state, &p.issuer),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "no login within {}: the browser did not come back to {redirect_uri}; run `tollgate login` again (or `tollgate login --device` on a machine without a browser)",
            super::human(timeout.as_secs() as i64)
        )
    })??;
    let answer = post_form(
        http,
        &p.token_endpoint,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", &verifier),
            ("client_id", client_id),
        ],
    )
    .await?
    .map_err(|e| anyhow!("the identity provider refused the authorization code: {e}"))?;
    let t = TokenResponse::from_json(&answer)?;
    if let Some(id) = &t.id_token {
        check_id_token(id, &p.issuer, client_id, Some(&nonce))?;
    }
    Ok(t)
}

/// The device authorization grant (RFC 8628).
pub async fn device_flow(
    http: &reqwest::Client,
    p: &Provider,
    client_id: &str,
    scope: &str,
    timeout: Option<Duration>,
) -> Result<TokenResponse> {
    let endpoint = p.device_authorization_endpoint.as_deref().ok_or_else(|| {
        anyhow!("the identity provider does not offer the device flow (no device_authorization_endpoint)")
    })?;
    let d = post_form(
        http,
        endpoint,
        &[("client_id", client_id), ("scope", scope)],
    )
    .await?
    .map_err(|e| anyhow!("the identity provider refused to start a device login: {e}"))?;
    let s = |k: &str| d[k].as_str().filter(|s| !s.is_empty());
    let (Some(device_code), Some(user_code), Some(uri)) = (
        s("device_code"),
        s("user_code"),
        s("verification_uri").or(s("verification_url")),
    ) else {
        bail!("the device authorization answer lacks device_code, user_code or verification_uri");
    };
    let expires_in = Duration::from_secs(d["expires_in"].as_u64().unwrap_or(600));
    let interval = Duration::from_secs(d["interval"].as_u64().unwrap_or(5).max(1));
    let wait = timeout.map_or(expires_in, |t| t.min(expires_in));
    println!("To log in, open {uri} on any device and enter the code {user_code}");
    if let Some(complete) = s("verification_uri_complete") {
        println!("(or open {complete})");
    }
    println!(
        "Waiting up to {} for the approval ...",
        super::human(wait.as_secs() as i64)
    );
    flush();
    let deadline = Instant::now() + wait;
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code),
        ("client_id", client_id),
    ];
    let answer = poll_device(interval, Duration::from_secs(5), deadline, || {
        post_form(http, &p.token_endpoint, &form)
    })
    .await
    .map_err(|e| match e {
        DeviceEnd::TimedOut if wait < expires_in => anyhow!(
            "no approval within {}; run `tollgate login --device` again",
            super::human(wait.as_secs() as i64)
        ),
        other => anyhow::Error::from(other),
    })?;
    let t = TokenResponse::from_json(&answer)?;
    if let Some(id) = &t.id_token {
        check_id_token(id, &p.issuer, client_id, None)?;
    }
    Ok(t)
}

/// Why polling for a device code's tokens ended without them.
#[derive(Debug)]
pub enum DeviceEnd {
    Denied,
    Expired,
    TimedOut,
    Refused(OauthError),
    Failed(anyhow::Error),
}

impl std::fmt::Display for DeviceEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceEnd::Denied => write!(
                f,
                "the login was denied at the identity provider (access_denied); nothing was saved"
            ),
            DeviceEnd::Expired | DeviceEnd::TimedOut => write!(
                f,
                "the device code expired before it was approved; run `tollgate login --device` again"
            ),
            DeviceEnd::Refused(e) => {
                write!(f, "the identity provider refused the device login: {e}")
            }
            DeviceEnd::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for DeviceEnd {}

/// Polls every `interval` (the first poll after one interval), slower by `slow_down` at each
/// `slow_down` answer, until tokens come, the person denies, the code expires or `deadline`.
pub async fn poll_device<F, Fut>(
    mut interval: Duration,
    slow_down: Duration,
    deadline: Instant,
    mut poll: F,
) -> std::result::Result<Value, DeviceEnd>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<Value, OauthError>>>,
{
    loop {
        if Instant::now() + interval > deadline {
            tokio::time::sleep_until(deadline.into()).await;
            return Err(DeviceEnd::TimedOut);
        }
        tokio::time::sleep(interval).await;
        match poll().await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => match e.error.as_str() {
                "authorization_pending" => {}
                "slow_down" => interval += slow_down,
                "access_denied" => return Err(DeviceEnd::Denied),
                "expired_token" => return Err(DeviceEnd::Expired),
                _ => return Err(DeviceEnd::Refused(e)),
            },
            Err(e) => return Err(DeviceEnd::Failed(e)),
        }
    }
}

/// The refresh-token grant; the new tokens over the old.
pub async fn refresh(cache: &Cache) -> Result<Cache> {
    let refresh_token = cache
        .refresh_token
        .as_deref()
        .ok_or_else(|| anyhow!("no refresh token"))?;
    let http = http_client()?;
    let p = discover(&http, &cache.issuer).await?;
    let answer = post_form(
        &http,
        &p.token_endpoint,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &cache.client_id),
        ],
    )
    .await?
    .map_err(|e| anyhow!("the identity provider refused the refresh token: {e}"))?;
    let t = TokenResponse::from_json(&answer)?;
    if let Some(id) = &t.id_token {
        check_id_token(id, &p.issuer, &cache.client_id, None)?;
    }
    cache.refreshed(t)
}

/// Revokes the refresh and access tokens at the provider (RFC 7009); `None` when discovery
/// lists no revocation endpoint, else how many were revoked.
pub async fn revoke(cache: &Cache) -> Result<Option<usize>> {
    let http = http_client()?;
    let p = discover(&http, &cache.issuer).await?;
    let Some(endpoint) = p.revocation_endpoint else {
        return Ok(None);
    };
    let mut revoked = 0;
    for (token, hint) in [
        (&cache.refresh_token, "refresh_token"),
        (&cache.access_token, "access_token"),
    ] {
        let Some(token) = token else { continue };
        post_form(
            &http,
            &endpoint,
            &[
                ("token", token),
                ("token_type_hint", hint),
                ("client_id", &cache.client_id),
            ],
        )
        .await?
        .map_err(|e| anyhow!("the provider refused to revoke the {hint}: {e}"))?;
        revoked += 1;
    }
    Ok(Some(revoked))
}

fn flush() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// Opens `url` in a browser when asked (`--open`) or when `BROWSER` names one; never fails.
fn open_browser(url: &str, asked: bool) {
    let from_env = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty());
    if !asked && from_env.is_none() {
        return;
    }
    let candidates: Vec<String> = match from_env {
        // `BROWSER` may list several commands separated by `:`; `%s` stands for the URL.
        Some(b) => b.split(':').map(str::to_string).collect(),
        None if cfg!(target_os = "macos") => vec!["open".into()],
        None => vec!["xdg-open".into(), "open".into()],
    };
    for c in &candidates {
        let mut words = c.split_whitespace();
        let Some(program) = words.next() else {
            continue;
        };
        let mut args: Vec<String> = words.map(str::to_string).collect();
        if args.iter().any(|a| a.contains("%s")) {
            for a in &mut args {
                *a = a.replace("%s", url);
            }
        } else {
            args.push(url.to_string());
        }
        let spawned = std::process::Command::new(program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Ok(mut child) = spawned {
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            return;
        }
    }
    eprintln!("(could not start a browser; open the URL above yourself)");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn the_pkce_challenge_is_rfc_7636s() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let v = random_b64(32).unwrap();
        assert_eq!(v.len(), 43);
        assert_ne!(v, random_b64(32).unwrap());
    }

    #[test]
    fn endpoints_must_be_https_or_loopback() {
        assert!(check_url("x", "https://idp.example.com").is_ok());
        assert!(check_url("x", "http://127.0.0.1:8080").is_ok());
        assert!(check_url("x", "http://[::1]:8080/realms/a").is_ok());
        assert!(check_url("x", "http://localhost:8080").is_ok());
        assert!(check_url("x", "http://idp.example.com").is_err());
        assert!(check_url("x", "ftp://idp.example.com").is_err());
        assert!(check_url("x", "not a url").is_err());
    }

    #[test]
    fn id_tokens_are_checked_for_issuer_audience_and_nonce() {
        let t = |c: Value| format!("e30.{}.s", URL_SAFE_NO_PAD.encode(c.to_string()));
        let good = t(serde_json::json!({"iss": "https://i", "aud": ["cli", "x"], "nonce": "n"}));
        assert!(check_id_token(&good, "https://i", "cli", Some("n")).is_ok());
        assert!(check_id_token(&good, "https://i", "cli", None).is_ok());
        assert!(check_id_token(&good, "https://j", "cli", Some("n")).is_err());
        assert!(check_id_token(&good, "https://i", "web", Some("n")).is_err());
        assert!(check_id_token(&good, "https://i", "cli", Some("m")).is_err());
    }

    fn oauth(e: &str) -> Result<std::result::Result<Value, OauthError>> {
        Ok(Err(OauthError {
            status: 400,
            error: e.into(),
            description: None,
        }))
    }

    #[tokio::test]
    async fn device_polling_waits_slows_down_and_ends_clearly() {
        let ms = Duration::from_millis;
        let far = Instant::now() + Duration::from_secs(30);
        let answers = Mutex::new(vec![
            oauth("authorization_pending"),
            oauth("slow_down"),
            oauth("authorization_pending"),
            Ok(Ok(serde_json::json!({"access_token": "a"}))),
        ]);
        let times = Mutex::new(Vec::new());
        let start = Instant::now();
        let v = poll_device(ms(20), ms(60), far, || {
            times.lock().unwrap().push(start.elapsed());
            let next = answers.lock().unwrap().remove(0);
            async move { next }
        })
        .await
        .unwrap();
        assert_eq!(v["access_token"], "a");
        let t = times.lock().unwrap().clone();
        assert_eq!(t.len(), 4);
        assert!(t[0] >= ms(20), "the first poll waits an interval: {t:?}");
        assert!(t[1] - t[0] >= ms(20));
        // After slow_down the interval is 20 + 60 ms.
        assert!(t[2] - t[1] >= ms(80), "{t:?}");
        assert!(t[3] - t[2] >= ms(80), "{t:?}");

        for (code, want) in [
            ("access_denied", "denied"),
            ("expired_token", "expired"),
            ("invalid_client", "invalid_client"),
        ] {
            let e = poll_device(ms(1), ms(1), far, || async { oauth(code) })
                .await
                .unwrap_err();
            assert!(e.to_string().contains(want), "{code}: {e}");
        }
        // The deadline ends the wait even while the provider says pending.
        let e = poll_device(ms(5), ms(1), Instant::now() + ms(30), || async {
            oauth("authorization_pending")
        })
        .await
        .unwrap_err();
        assert!(matches!(e, DeviceEnd::TimedOut), "{e}");
        assert!(e.to_string().contains("expired"), "{e}");
    }
}
