//! A real OpenID Connect provider for the tests: `scripts/oidc-provider/provider.mjs` (the npm
//! `oidc-provider` package under Node.js) in a child process, and the HTTP that a machine client,
//! a CLI or a person's browser sends it.
//!
//! Every helper is blocking (its HTTP runs on a runtime of its own in a helper thread), so it can
//! be called from plain tests and from `#[tokio::test(flavor = "multi_thread")]` tests alike.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Url;
use serde_json::{Value, json};

/// The provider's npm project.
pub const PROVIDER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/oidc-provider");

/// The machine client of the default configuration (client-credentials grant).
pub const AGENT_CLIENT: &str = "ai-agent";
pub const AGENT_SECRET: &str = "ai-agent-secret";
pub const AGENT_GROUPS: &[&str] = &["ai-agents"];
/// The public client of people (code + PKCE with a loopback redirect, device flow, refresh).
pub const CLI_CLIENT: &str = "tollgate-cli";
/// Registered redirect URI of the CLI client; any port on it is accepted.
pub const CLI_REDIRECT: &str = "http://127.0.0.1/callback";
/// The confidential client of the gateway's web login.
pub const WEB_CLIENT: &str = "tollgate-web";
pub const WEB_SECRET: &str = "tollgate-web-secret";
/// The default resource indicator and the audience of the access tokens issued for it.
pub const DEFAULT_RESOURCE: &str = "urn:tollgate";
pub const AUDIENCE: &str = "tollgate";
/// A second resource of the default configuration, for wrong-audience tokens.
pub const OTHER_RESOURCE: &str = "urn:other-service";
pub const OTHER_AUDIENCE: &str = "other-service";
/// The scopes a person's login asks for.
pub const PERSON_SCOPES: &str = "openid profile email groups offline_access";

/// A person who can sign in at the provider.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub username: String,
    pub password: String,
    pub groups: Vec<String>,
    /// Extra claims (a JSON object) for the person's ID and access tokens.
    pub claims: Value,
}

impl TestUser {
    pub fn new(username: &str, password: &str, groups: &[&str]) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            claims: json!({}),
        }
    }
}

/// A client of the client-credentials grant.
#[derive(Clone, Debug)]
pub struct MachineClient {
    pub client_id: String,
    pub client_secret: String,
    pub groups: Vec<String>,
    /// Extra claims (a JSON object) for its access tokens.
    pub claims: Value,
}

impl MachineClient {
    pub fn new(client_id: &str, client_secret: &str, groups: &[&str]) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            claims: json!({}),
        }
    }
}

/// How the provider is configured. `Default` gives alice (`alice-pass`, groups `eng`,
/// `db-admins`), bob (`bob-pass`, `sales`), the `ai-agent` machine client (`ai-agents`), RS256
/// keys generated at the first start and 300 s token lifetimes.
#[derive(Clone, Debug)]
pub struct OidcOptions {
    /// Algorithms of the keys generated when `jwks` is `None` (RS256, PS256, ES256, EdDSA); the
    /// first key signs.
    pub signing_algs: Vec<String>,
    /// A private JWKS (`{"keys": [...]}`) to serve instead of generated keys; the first signs.
    pub jwks: Option<Value>,
    pub access_token_ttl: u64,
    /// Lifetime of client-credentials tokens; `None` is `access_token_ttl`.
    pub client_credentials_ttl: Option<u64>,
    pub id_token_ttl: u64,
    pub refresh_token_ttl: u64,
    /// Claim name or dotted path (`realm_access.roles`) of the groups in ID and access tokens.
    pub groups_claim: String,
    pub users: Vec<TestUser>,
    pub machine_clients: Vec<MachineClient>,
    /// Redirect URIs of the `tollgate-web` client (loopback URIs match any port).
    pub web_redirect_uris: Vec<String>,
    /// Resource indicator -> audience.
    pub resources: Vec<(String, String)>,
    pub default_resource: String,
    /// Merged over the generated JSON configuration (see `provider.mjs`), for anything else.
    pub extra: Value,
}

impl Default for OidcOptions {
    fn default() -> Self {
        Self {
            signing_algs: vec!["RS256".into()],
            jwks: None,
            access_token_ttl: 300,
            client_credentials_ttl: None,
            id_token_ttl: 300,
            refresh_token_ttl: 3600,
            groups_claim: "groups".into(),
            users: vec![
                TestUser::new("alice", "alice-pass", &["eng", "db-admins"]),
                TestUser::new("bob", "bob-pass", &["sales"]),
            ],
            machine_clients: vec![MachineClient::new(AGENT_CLIENT, AGENT_SECRET, AGENT_GROUPS)],
            web_redirect_uris: vec!["http://127.0.0.1/oidc/callback".into()],
            resources: vec![
                (DEFAULT_RESOURCE.into(), AUDIENCE.into()),
                (OTHER_RESOURCE.into(), OTHER_AUDIENCE.into()),
            ],
            default_resource: DEFAULT_RESOURCE.into(),
            extra: json!({}),
        }
    }
}

impl OidcOptions {
    /// Generated keys of these algorithms (the first signs).
    pub fn algs(mut self, algs: &[&str]) -> Self {
        self.signing_algs = algs.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Serve this private JWKS.
    pub fn jwks(mut self, jwks: Value) -> Self {
        self.jwks = Some(jwks);
        self
    }

    /// Lifetime of access tokens (people's and machines'), in seconds.
    pub fn access_token_ttl(mut self, seconds: u64) -> Self {
        self.access_token_ttl = seconds;
        self.client_credentials_ttl = None;
        self
    }

    pub fn id_token_ttl(mut self, seconds: u64) -> Self {
        self.id_token_ttl = seconds;
        self
    }

    pub fn groups_claim(mut self, path: &str) -> Self {
        self.groups_claim = path.into();
        self
    }

    pub fn user(mut self, user: TestUser) -> Self {
        self.users.retain(|u| u.username != user.username);
        self.users.push(user);
        self
    }

    pub fn machine_client(mut self, client: MachineClient) -> Self {
        self.machine_clients
            .retain(|c| c.client_id != client.client_id);
        self.machine_clients.push(client);
        self
    }

    pub fn web_redirect_uri(mut self, uri: &str) -> Self {
        self.web_redirect_uris = vec![uri.into()];
        self
    }

    fn config(&self, port: u16, jwks_file: &Path) -> Value {
        let mut cfg = json!({
            "host": "127.0.0.1",
            "port": port,
            "signing_algs": self.signing_algs,
            "jwks_file": jwks_file,
            "access_token_ttl": self.access_token_ttl,
            "client_credentials_ttl": self.client_credentials_ttl,
            "id_token_ttl": self.id_token_ttl,
            "refresh_token_ttl": self.refresh_token_ttl,
            "groups_claim": self.groups_claim,
            "users": self.users.iter().map(|u| json!({
                "username": u.username,
                "password": u.password,
                "groups": u.groups,
                "claims": u.claims,
            })).collect::<Vec<_>>(),
            "machine_clients": self.machine_clients.iter().map(|c| json!({
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "groups": c.groups,
                "claims": c.claims,
            })).collect::<Vec<_>>(),
            "web_client": { "redirect_uris": self.web_redirect_uris },
            "resources": self.resources.iter().cloned().collect::<BTreeMap<_, _>>(),
            "default_resource": self.default_resource,
        });
        if let (Some(cfg), Some(extra)) = (cfg.as_object_mut(), self.extra.as_object()) {
            for (k, v) in extra {
                cfg.insert(k.clone(), v.clone());
            }
        }
        cfg
    }
}

/// A token endpoint answer.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub access_token: String,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
    /// The whole JSON answer.
    pub raw: Value,
}

impl Tokens {
    fn from_json(raw: Value) -> Self {
        let s = |k: &str| raw[k].as_str().map(str::to_string);
        Self {
            access_token: s("access_token").unwrap_or_default(),
            id_token: s("id_token"),
            refresh_token: s("refresh_token"),
            expires_in: raw["expires_in"].as_u64(),
            raw,
        }
    }
}

/// A device authorization answer (RFC 8628).
#[derive(Clone, Debug)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub interval: u64,
    pub expires_in: u64,
}

/// A PKCE verifier and its S256 challenge.
#[derive(Clone, Debug)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let verifier = random_token(32);
        let challenge = URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// A running provider. Dropping it kills the process.
pub struct OidcProvider {
    dir: tempfile::TempDir,
    options: OidcOptions,
    port: u16,
    child: Option<Child>,
}

impl OidcProvider {
    /// Starts the provider on a free loopback port and waits until it serves.
    pub fn start(options: OidcOptions) -> Self {
        ensure_installed();
        let mut p = Self {
            dir: tempfile::tempdir().unwrap(),
            options,
            port: 0,
            child: None,
        };
        p.write_jwks();
        p.launch();
        p
    }

    /// `http://127.0.0.1:<port>`, the same across restarts.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// An endpoint of the provider, e.g. `url("/token")`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer())
    }

    pub fn options(&self) -> &OidcOptions {
        &self.options
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The provider's stderr so far (all starts).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Stops the process (SIGTERM, then SIGKILL): the IdP is down until `restart`.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts it again on the same port (same issuer) with the same keys. Tokens, sessions and
    /// grants of the previous run are forgotten.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Restarts with other options (same port); `options.jwks` replaces the keys when set.
    pub fn restart_with(&mut self, options: OidcOptions) {
        self.stop();
        self.options = options;
        self.write_jwks();
        self.launch();
    }

    /// Restarts with a new key set: `jwks` when given, else fresh keys of `signing_algs`.
    pub fn rotate_keys(&mut self, jwks: Option<Value>) {
        self.stop();
        self.options.jwks = jwks;
        if self.options.jwks.is_none() {
            let _ = std::fs::remove_file(self.jwks_path());
        }
        self.write_jwks();
        self.launch();
    }

    /// Generates a private JWKS with one key per algorithm (RS256, PS256, ES256, EdDSA).
    pub fn generate_jwks(algs: &[&str]) -> Value {
        ensure_installed();
        let out = Command::new("node")
            .arg(Path::new(PROVIDER_DIR).join("provider.mjs"))
            .arg("--generate-jwks")
            .arg(algs.join(","))
            .stdin(Stdio::null())
            .output()
            .expect("node runs");
        assert!(
            out.status.success(),
            "--generate-jwks failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The private keys being served (`{"keys": [...]}`).
    pub fn private_jwks(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.jwks_path()).unwrap()).unwrap()
    }

    /// The discovery document.
    pub fn discovery(&self) -> Value {
        let r = http(Req::get(&self.url("/.well-known/openid-configuration")));
        assert_eq!(r.status, 200, "discovery: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    /// The published (public) JWKS.
    pub fn jwks(&self) -> Value {
        let r = http(Req::get(&self.url("/jwks")));
        assert_eq!(r.status, 200, "jwks: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    /// The `kid`s of the published keys, in order (the first signs).
    pub fn kids(&self) -> Vec<String> {
        self.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    }

    /// A request to the token endpoint, authenticated with HTTP Basic when `basic` is given.
    /// Returns the status and the JSON body.
    pub fn token_request(
        &self,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (u16, Value) {
        let mut req = Req::post_form(&self.url("/token"), form);
        if let Some((id, secret)) = basic {
            req.basic = Some((id.into(), secret.into()));
        }
        let r = http(req);
        (
            r.status,
            serde_json::from_str(&r.body).unwrap_or(Value::Null),
        )
    }

    /// A client-credentials access token (a JWT) for `resource` (`None`: the default resource).
    pub fn client_credentials_token(
        &self,
        client: &str,
        secret: &str,
        resource: Option<&str>,
    ) -> String {
        match self.try_client_credentials(client, secret, resource) {
            Ok(t) => t.access_token,
            Err((status, body)) => panic!("client credentials for {client}: {status} {body}"),
        }
    }

    /// The client-credentials grant, with the error answer when it is refused.
    pub fn try_client_credentials(
        &self,
        client: &str,
        secret: &str,
        resource: Option<&str>,
    ) -> Result<Tokens, (u16, Value)> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        match self.token_request(&form, Some((client, secret))) {
            (200, body) => Ok(Tokens::from_json(body)),
            other => Err(other),
        }
    }

    /// The authorization endpoint URL for a code + PKCE (S256) login.
    pub fn authorize_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        scope: &str,
        pkce: &Pkce,
        state: &str,
    ) -> String {
        Url::parse_with_params(
            &self.url("/auth"),
            &[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("scope", scope),
                ("state", state),
                ("code_challenge", pkce.challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
        .unwrap()
        .to_string()
    }

    /// Signs in as a browser would, from the authorization URL through the login form and the
    /// consent form, and returns the URL the provider redirects to (with `code`, `state`, `iss`).
    pub fn browser_login(&self, authorize_url: &str, user: &str, password: &str) -> String {
        let url = self
            .try_browser_login(authorize_url, user, password)
            .unwrap_or_else(|e| panic!("browser login as {user}: {e}\n{}", self.stderr()));
        let code = query_param(&url, "code");
        assert!(code.is_some(), "no code in the redirect {url}");
        url
    }

    /// `browser_login` that returns why it did not end with a redirect away from the provider
    /// (a wrong password, an error page). A redirect carrying `error=` is returned as `Ok`.
    pub fn try_browser_login(
        &self,
        authorize_url: &str,
        user: &str,
        password: &str,
    ) -> Result<String, String> {
        let mut browser = Browser::new(&self.issuer());
        match browser.drive(Req::get(authorize_url), user, password, None)? {
            Ended::Redirect(url) => Ok(url),
            Ended::DeviceDone => Err("ended on the device success page".into()),
        }
    }

    /// Redeems an authorization code with its PKCE verifier. `secret` authenticates a
    /// confidential client (HTTP Basic); a public client sends `client_id` in the form.
    pub fn exchange_code(
        &self,
        client_id: &str,
        secret: Option<&str>,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Tokens {
        match self.try_exchange_code(client_id, secret, code, redirect_uri, verifier) {
            Ok(t) => t,
            Err((status, body)) => panic!("code exchange: {status} {body}\n{}", self.stderr()),
        }
    }

    pub fn try_exchange_code(
        &self,
        client_id: &str,
        secret: Option<&str>,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Tokens, (u16, Value)> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let basic = match secret {
            Some(s) => Some((client_id, s)),
            None => {
                form.push(("client_id", client_id));
                None
            }
        };
        match self.token_request(&form, basic) {
            (200, body) => Ok(Tokens::from_json(body)),
            other => Err(other),
        }
    }

    /// The whole code + PKCE login of a person with the CLI client on a loopback port.
    pub fn login_cli(&self, user: &str, password: &str) -> Tokens {
        let redirect = format!("http://127.0.0.1:{}/callback", super::free_port());
        let pkce = Pkce::new();
        let state = random_token(12);
        let auth = self.authorize_url(CLI_CLIENT, &redirect, PERSON_SCOPES, &pkce, &state);
        let back = self.browser_login(&auth, user, password);
        assert_eq!(query_param(&back, "state").as_deref(), Some(state.as_str()));
        let code = query_param(&back, "code").unwrap();
        self.exchange_code(CLI_CLIENT, None, &code, &redirect, &pkce.verifier)
    }

    /// The refresh-token grant.
    pub fn refresh(
        &self,
        client_id: &str,
        secret: Option<&str>,
        refresh_token: &str,
    ) -> Result<Tokens, (u16, Value)> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        let basic = match secret {
            Some(s) => Some((client_id, s)),
            None => {
                form.push(("client_id", client_id));
                None
            }
        };
        match self.token_request(&form, basic) {
            (200, body) => Ok(Tokens::from_json(body)),
            other => Err(other),
        }
    }

    /// Starts the device flow (public client, no secret).
    pub fn device_authorization(&self, client_id: &str, scope: &str) -> DeviceAuthorization {
        let r = http(Req::post_form(
            &self.url("/device/auth"),
            &[("client_id", client_id), ("scope", scope)],
        ));
        assert_eq!(r.status, 200, "device authorization: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        DeviceAuthorization {
            device_code: s("device_code"),
            user_code: s("user_code"),
            verification_uri: s("verification_uri"),
            verification_uri_complete: s("verification_uri_complete"),
            interval: v["interval"].as_u64().unwrap_or(5),
            expires_in: v["expires_in"].as_u64().unwrap_or(0),
        }
    }

    /// A person approves a device code: opens `verification_uri`, types the user code, confirms,
    /// signs in and consents, as a browser would.
    pub fn device_approve(
        &self,
        verification_uri: &str,
        user_code: &str,
        user: &str,
        password: &str,
    ) {
        let mut browser = Browser::new(&self.issuer());
        match browser.drive(Req::get(verification_uri), user, password, Some(user_code)) {
            Ok(Ended::DeviceDone) => {}
            Ok(Ended::Redirect(url)) => panic!("device approval ended at {url}"),
            Err(e) => panic!("device approval as {user}: {e}\n{}", self.stderr()),
        }
    }

    /// One poll of the token endpoint for a device code: the tokens, or the error code
    /// (`authorization_pending`, `slow_down`, `access_denied`, `expired_token`).
    pub fn poll_device_token(&self, client_id: &str, device_code: &str) -> Result<Tokens, String> {
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", client_id),
        ];
        match self.token_request(&form, None) {
            (200, body) => Ok(Tokens::from_json(body)),
            (_, body) => Err(body["error"]
                .as_str()
                .unwrap_or("no error code")
                .to_string()),
        }
    }

    /// Polls for a device code's tokens until they are issued (up to 30 s).
    pub fn device_token(&self, client_id: &str, device_code: &str) -> Tokens {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.poll_device_token(client_id, device_code) {
                Ok(t) => return t,
                Err(e) if e == "authorization_pending" || e == "slow_down" => {}
                Err(e) => panic!("device token: {e}"),
            }
            assert!(Instant::now() < deadline, "device token never issued");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Signs a JWT with the provider's current keys through its `/test/sign` endpoint, for
    /// tokens no real flow gives (expired, not yet valid, wrong issuer, another `kid` header…).
    /// `request` is `{"payload": {..}, "alg"?, "kid"?, "header"?: {..}, "hmac_key_b64url"?}`;
    /// `alg` defaults to the signing key's, `header` is merged over the computed header, and
    /// HS256/384/512 sign with `hmac_key_b64url`.
    pub fn sign(&self, request: Value) -> String {
        let r = http(Req::post_json(&self.url("/test/sign"), &request));
        assert_eq!(r.status, 200, "sign: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    /// How many requests each path received since the provider's last start (`/test/` paths
    /// excluded), e.g. `requests()["/jwks"]`.
    pub fn requests(&self) -> Value {
        let r = http(Req::get(&self.url("/test/requests")));
        assert_eq!(r.status, 200, "requests: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    /// How many times the key set (`jwks_uri` of the discovery document) was fetched since the
    /// provider's last start.
    pub fn jwks_fetches(&self) -> u64 {
        self.requests()["/jwks"].as_u64().unwrap_or(0)
    }

    /// Claims like those of a real client-credentials token of `client`, valid for `ttl` seconds
    /// from now (negative: already expired), to adjust before `sign`.
    pub fn machine_claims(&self, client: &str, groups: &[&str], ttl: i64) -> Value {
        let now = now_secs();
        json!({
            "iss": self.issuer(),
            "sub": client,
            "client_id": client,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + ttl,
            "jti": random_token(12),
            "groups": groups,
        })
    }

    fn jwks_path(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    fn write_jwks(&self) {
        if let Some(jwks) = &self.options.jwks {
            std::fs::write(self.jwks_path(), serde_json::to_vec_pretty(jwks).unwrap()).unwrap();
        }
    }

    fn launch(&mut self) {
        let config_path = self.dir.path().join("provider.json");
        let config = self.options.config(self.port, &self.jwks_path());
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let stdout_path = self.dir.path().join("stdout.log");
        let stdout = std::fs::File::create(&stdout_path).unwrap();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .unwrap();
        let child = Command::new("node")
            .arg(Path::new(PROVIDER_DIR).join("provider.mjs"))
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("node runs (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = std::fs::read_to_string(&stdout_path).unwrap_or_default();
            if let Some(issuer) = out
                .lines()
                .find_map(|l| l.strip_prefix("listening "))
                .map(str::trim)
            {
                let port = issuer.rsplit(':').next().unwrap().parse().unwrap();
                assert!(self.port == 0 || self.port == port, "port changed");
                self.port = port;
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the OIDC provider exited with {status}:\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "the OIDC provider did not start:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Installs the provider's npm packages when `node_modules` is missing or older than
/// `package-lock.json` (the same stamp `scripts/test.sh` keeps), once per test process.
fn ensure_installed() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let dir = Path::new(PROVIDER_DIR);
    let lock = std::fs::read(dir.join("package-lock.json")).expect("package-lock.json");
    let want = hex(&sha256(&lock));
    let stamp = dir.join("node_modules/.tollgate-lock-sha256");
    let have = std::fs::read_to_string(&stamp).unwrap_or_default();
    if have.trim() != want {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("npm runs (scripts/test.sh installs node and npm)");
        assert!(
            out.status.success(),
            "npm ci in scripts/oidc-provider failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&stamp, format!("{want}\n")).unwrap();
    }
    *done = true;
}

/// The value of a query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The header and payload of a compact JWT, not verified.
pub fn decode_jwt(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = || {
        let p = parts.next().expect("a JWT has three parts");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("JSON")
    };
    let header = part();
    let payload = part();
    (header, payload)
}

/// base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// SHA-256 (ring's, through rustls).
pub fn sha256(data: &[u8]) -> Vec<u8> {
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .unwrap()
        .common
        .hash_provider
        .hash(data)
        .as_ref()
        .to_vec()
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut buf)
        .unwrap();
    URL_SAFE_NO_PAD.encode(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- HTTP -------------------------------------------------------------------------------------

struct Req {
    method: &'static str,
    url: String,
    body: Option<(&'static str, Vec<u8>)>,
    basic: Option<(String, String)>,
    cookie: Option<String>,
}

impl Req {
    fn get(url: &str) -> Self {
        Self {
            method: "GET",
            url: url.into(),
            body: None,
            basic: None,
            cookie: None,
        }
    }

    fn post_form(url: &str, form: &[(&str, &str)]) -> Self {
        let body = reqwest::Url::parse_with_params("http://x/", form)
            .unwrap()
            .query()
            .unwrap_or_default()
            .as_bytes()
            .to_vec();
        Self {
            method: "POST",
            body: Some(("application/x-www-form-urlencoded", body)),
            ..Self::get(url)
        }
    }

    fn post_json(url: &str, v: &Value) -> Self {
        Self {
            method: "POST",
            body: Some(("application/json", serde_json::to_vec(v).unwrap())),
            ..Self::get(url)
        }
    }
}

struct Resp {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

/// Runs a future to completion on a runtime of its own, in a thread of its own, so that the
/// helpers work inside and outside a tokio runtime.
fn blocking<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fut)
    })
    .join()
    .unwrap()
}

/// One HTTP request, redirects not followed.
fn http(req: Req) -> Resp {
    blocking(async move {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
        let mut b = client.request(method, &req.url);
        if let Some((ct, body)) = req.body {
            b = b.header("content-type", ct).body(body);
        }
        if let Some((user, pass)) = req.basic {
            b = b.basic_auth(user, Some(pass));
        }
        if let Some(c) = req.cookie {
            b = b.header("cookie", c);
        }
        let resp = b
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.url));
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let set_cookies = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect();
        let body = resp.text().await.unwrap_or_default();
        Resp {
            status,
            location,
            set_cookies,
            body,
        }
    })
}

enum Ended {
    /// Redirected away from the provider (to a client's redirect URI).
    Redirect(String),
    /// The device flow's success page.
    DeviceDone,
}

/// A browser with a cookie jar that fills in the provider's forms.
struct Browser {
    origin: String,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new(issuer: &str) -> Self {
        Self {
            origin: Url::parse(issuer).unwrap().origin().ascii_serialization(),
            cookies: BTreeMap::new(),
        }
    }

    fn send(&mut self, mut req: Req) -> Resp {
        if !self.cookies.is_empty() {
            req.cookie = Some(
                self.cookies
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
        let resp = http(req);
        for c in &resp.set_cookies {
            let mut attrs = c.split(';');
            let Some((name, value)) = attrs.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim().to_string(), value.trim().to_string());
            let expired = attrs.any(|a| {
                let a = a.trim().to_ascii_lowercase();
                a == "max-age=0" || (a.starts_with("expires=") && a.contains("1970"))
            });
            if value.is_empty() || expired {
                self.cookies.remove(&name);
            } else {
                self.cookies.insert(name, value);
            }
        }
        resp
    }

    /// Follows redirects within the provider and submits the forms it shows (login with `user`
    /// and `password`, the user code, consent, confirmations) until the provider redirects
    /// elsewhere or shows the device success page.
    fn drive(
        &mut self,
        first: Req,
        user: &str,
        password: &str,
        user_code: Option<&str>,
    ) -> Result<Ended, String> {
        let mut req = first;
        for _ in 0..40 {
            let url = Url::parse(&req.url).map_err(|e| format!("{}: {e}", req.url))?;
            let resp = self.send(req);
            match resp.status {
                300..=399 => {
                    let loc = resp.location.ok_or("a redirect without Location")?;
                    let next = url.join(&loc).map_err(|e| format!("{loc}: {e}"))?;
                    if next.origin().ascii_serialization() != self.origin {
                        return Ok(Ended::Redirect(next.to_string()));
                    }
                    req = Req::get(next.as_str());
                }
                200 => {
                    if resp.body.contains("id=\"device-login-success\"") {
                        return Ok(Ended::DeviceDone);
                    }
                    if resp.body.contains("id=\"login-error\"") {
                        return Err(format!("login refused at {url}: {}", text_of(&resp.body)));
                    }
                    let (action, mut fields) = parse_form(&resp.body)
                        .ok_or_else(|| format!("no form at {url}: {}", text_of(&resp.body)))?;
                    for (name, value) in fields.iter_mut() {
                        match name.as_str() {
                            "login" => *value = user.to_string(),
                            "password" => *value = password.to_string(),
                            "user_code" if value.is_empty() => {
                                *value = user_code.ok_or("a user code is asked for")?.to_string()
                            }
                            _ => {}
                        }
                    }
                    let target = url.join(&action).map_err(|e| format!("{action}: {e}"))?;
                    let form: Vec<(&str, &str)> = fields
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    req = Req::post_form(target.as_str(), &form);
                }
                status => {
                    return Err(format!("{status} at {url}: {}", text_of(&resp.body)));
                }
            }
        }
        Err("too many steps".into())
    }
}

/// The first `<form>` of a page: its action and its inputs' names and values.
fn parse_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = html.find("<form")?;
    let end = html[start..]
        .find("</form>")
        .map(|e| start + e)
        .unwrap_or(html.len());
    let form = &html[start..end];
    let (form_attrs, _) = tag_attrs(&form[5..]);
    let action = form_attrs.get("action").cloned().unwrap_or_default();
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        let (attrs, used) = tag_attrs(&rest[i + 6..]);
        if let Some(name) = attrs.get("name") {
            fields.push((
                name.clone(),
                attrs.get("value").cloned().unwrap_or_default(),
            ));
        }
        rest = &rest[i + 6 + used..];
    }
    Some((action, fields))
}

/// The attributes of a tag, from just after its name, and the bytes up to its end.
fn tag_attrs(s: &str) -> (BTreeMap<String, String>, usize) {
    let b = s.as_bytes();
    let mut attrs = BTreeMap::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'>' => return (attrs, i + 1),
            c if c.is_ascii_whitespace() || c == b'/' => i += 1,
            _ => {
                let name_start = i;
                while i < b.len() && !b"= \t\r\n/>".contains(&b[i]) {
                    i += 1;
                }
                let name = s[name_start..i].to_ascii_lowercase();
                let mut value = String::new();
                if i < b.len() && b[i] == b'=' {
                    i += 1;
                    if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                        let q = b[i];
                        let v_start = i + 1;
                        i = v_start;
                        while i < b.len() && b[i] != q {
                            i += 1;
                        }
                        value = unescape(&s[v_start..i.min(b.len())]);
                        i += 1;
                    } else {
                        let v_start = i;
                        while i < b.len() && !b" \t\r\n>".contains(&b[i]) {
                            i += 1;
                        }
                        value = unescape(&s[v_start..i]);
                    }
                }
                attrs.insert(name, value);
            }
        }
    }
    (attrs, b.len())
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The text of a page without its tags, shortened, for error messages.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let text = out.split_whitespace().collect::<Vec<_>>().join(" ");
    text.chars().take(600).collect()
}
