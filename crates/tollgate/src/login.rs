//! `tollgate login` and `tollgate logout`: OpenID Connect login for people, and the bearer the
//! other client commands send when `TOLLGATE_TOKEN` is not set.
//!
//! Two flows: the authorization code with PKCE (S256) through a loopback redirect (RFC 8252),
//! and the device authorization grant (RFC 8628) for machines without a browser. The tokens are
//! cached in `$XDG_CONFIG_HOME/tollgate/tokens.json` (default `~/.config/tollgate/`), mode 0600,
//! and refreshed with the refresh token when the bearer expires within 60 seconds.
//!
//! Issuer and client id: `--issuer` / `--client-id`, else `TOLLGATE_OIDC_ISSUER` /
//! `TOLLGATE_OIDC_CLIENT_ID`, else `issuer` / `client_id` in `login.toml` next to the cache.
//! Nothing here verifies signatures: the gateway does. Claims are only decoded for display and
//! for the expiry.

mod cache;
mod flow;
mod loopback;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;

pub use cache::Cache;

/// The default scopes of a login.
pub const DEFAULT_SCOPE: &str = "openid profile email groups offline_access";
/// A bearer that expires within this many seconds is refreshed before use.
pub const REFRESH_MARGIN_SECS: i64 = 60;

/// Which of the provider's tokens the CLI sends to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UseToken {
    /// The ID token: its audience is the client id, which the gateway's issuer lists in
    /// `client_ids`. Works with any OpenID provider.
    IdToken,
    /// The access token: only when the provider issues it as a JWT whose audience is the
    /// gateway (listed in the issuer's `audiences`).
    AccessToken,
}

impl UseToken {
    fn describe(self) -> &'static str {
        match self {
            UseToken::IdToken => "ID token",
            UseToken::AccessToken => "access token",
        }
    }
}

/// `tollgate login`.
#[derive(clap::Args)]
pub struct LoginArgs {
    /// The identity provider's issuer URL (its discovery document is under
    /// `/.well-known/openid-configuration`). Else `issuer` in login.toml.
    #[arg(long, env = "TOLLGATE_OIDC_ISSUER")]
    issuer: Option<String>,
    /// The OAuth client id of the CLI at the provider (a public client). Else `client_id` in
    /// login.toml.
    #[arg(long, env = "TOLLGATE_OIDC_CLIENT_ID")]
    client_id: Option<String>,
    /// Scopes to ask for; else `scope` in login.toml, else
    /// `openid profile email groups offline_access`.
    #[arg(long)]
    scope: Option<String>,
    /// Use the device authorization grant: print a code to enter on another device.
    #[arg(long)]
    device: bool,
    /// Open the authorization URL in a browser (also done when `BROWSER` is set).
    #[arg(long, conflicts_with = "device")]
    open: bool,
    /// How long to wait for the person: the browser's redirect [default: 5m], or the device
    /// approval [default: until the device code expires].
    #[arg(long)]
    timeout: Option<String>,
    /// The token sent as the bearer; else `use` in login.toml, else `id-token`.
    #[arg(long = "use", value_enum, value_name = "TOKEN")]
    use_token: Option<UseToken>,
    /// Show who is logged in and until when (the cached token's claims, not verified).
    #[arg(long, conflicts_with_all = ["device", "open", "print_token"])]
    status: bool,
    /// Print the login's bearer (refreshed first when it expires within 60 s), e.g. for
    /// PGPASSWORD.
    #[arg(long, conflicts_with_all = ["device", "open"])]
    print_token: bool,
}

/// `tollgate logout`.
#[derive(clap::Args)]
pub struct LogoutArgs {
    /// Only remove the cache; do not ask the provider to revoke the tokens.
    #[arg(long)]
    no_revoke: bool,
}

/// `login.toml`: defaults for `tollgate login`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginFile {
    issuer: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    #[serde(rename = "use")]
    use_token: Option<UseToken>,
}

/// The directory of `tokens.json` and `login.toml`: `$XDG_CONFIG_HOME/tollgate` when that is an
/// absolute path, else `$HOME/.config/tollgate`.
pub fn config_dir() -> Result<PathBuf> {
    config_dir_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

fn config_dir_from(
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Result<PathBuf> {
    if let Some(x) = xdg.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Ok(x.join("tollgate"));
    }
    match home.map(PathBuf::from).filter(|p| p.is_absolute()) {
        Some(h) => Ok(h.join(".config").join("tollgate")),
        None => bail!("cannot find the config directory: set HOME or XDG_CONFIG_HOME"),
    }
}

fn load_login_file(dir: &Path) -> Result<LoginFile> {
    let path = dir.join("login.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str(&text).with_context(|| format!("cannot read {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LoginFile::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// What a login needs, after flags, environment and login.toml.
#[derive(Debug, PartialEq)]
struct Settings {
    issuer: String,
    client_id: String,
    scope: String,
    use_token: UseToken,
}

fn settings(args: &LoginArgs, file: LoginFile, dir: &Path) -> Result<Settings> {
    let where_ = dir.join("login.toml");
    let issuer = args.issuer.clone().or(file.issuer).filter(|s| !s.is_empty()).ok_or_else(|| {
        anyhow!(
            "no identity provider: pass --issuer URL, set TOLLGATE_OIDC_ISSUER, or put issuer = \"https://…\" in {}",
            where_.display()
        )
    })?;
    let client_id = args
        .client_id
        .clone()
        .or(file.client_id)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "no client id: pass --client-id ID, set TOLLGATE_OIDC_CLIENT_ID, or put client_id = \"…\" in {}",
                where_.display()
            )
        })?;
    Ok(Settings {
        issuer: issuer.trim_end_matches('/').to_string(),
        client_id,
        scope: args
            .scope
            .clone()
            .or(file.scope)
            .unwrap_or_else(|| DEFAULT_SCOPE.to_string()),
        use_token: args
            .use_token
            .or(file.use_token)
            .unwrap_or(UseToken::IdToken),
    })
}

pub async fn login(args: LoginArgs) -> Result<ExitCode> {
    let dir = config_dir()?;
    if args.status {
        return status(&dir);
    }
    if args.print_token {
        let bearer = LoginBearer::default();
        println!("{}", bearer.get().await?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = settings(&args, load_login_file(&dir)?, &dir)?;
    let timeout = args
        .timeout
        .as_deref()
        .map(|t| tollgate_core::parse_duration(t).map_err(anyhow::Error::from))
        .transpose()
        .context("--timeout")?;
    let http = flow::http_client()?;
    let provider = flow::discover(&http, &s.issuer).await?;
    let tokens = if args.device {
        flow::device_flow(&http, &provider, &s.client_id, &s.scope, timeout).await?
    } else {
        flow::code_flow(
            &http,
            &provider,
            &s.client_id,
            &s.scope,
            args.open,
            timeout.unwrap_or(Duration::from_secs(300)),
        )
        .await?
    };
    let cache = Cache::from_tokens(
        &provider.issuer,
        &s.client_id,
        &s.scope,
        s.use_token,
        tokens,
    )?;
    let (_, exp) = cache.bearer()?;
    let path = dir.join(cache::FILE);
    cache::save(&dir, &cache)?;
    let claims = cache.claims();
    println!(
        "logged in as {}{}; the {} expires at {}{}",
        who(&claims),
        groups_note(&claims),
        cache.use_token.describe(),
        when(exp),
        if cache.refresh_token.is_some() {
            " (refreshed automatically)"
        } else {
            ""
        }
    );
    println!("tokens cached in {}", path.display());
    if std::env::var_os("TOLLGATE_TOKEN").is_some_and(|t| !t.is_empty()) {
        eprintln!(
            "note: TOLLGATE_TOKEN is set, and the CLI sends it instead of this login; unset it to use the login"
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logout(args: LogoutArgs) -> Result<ExitCode> {
    let dir = config_dir()?;
    let cache = match cache::load(&dir) {
        Ok(Some(c)) => c,
        Ok(None) => {
            println!("not logged in (no {})", dir.join(cache::FILE).display());
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            // An unreadable cache is removed all the same; there is nothing to revoke with.
            cache::remove(&dir)?;
            println!(
                "removed {} ({e:#}); its tokens were not revoked",
                dir.join(cache::FILE).display()
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    cache::remove(&dir)?;
    println!(
        "logged out {} from {}; removed {}",
        who(&cache.claims()),
        cache.issuer,
        dir.join(cache::FILE).display()
    );
    if args.no_revoke {
        return Ok(ExitCode::SUCCESS);
    }
    match tokio::time::timeout(Duration::from_secs(15), flow::revoke(&cache)).await {
        Ok(Ok(Some(n))) => println!(
            "revoked {n} token{} at the provider",
            if n == 1 { "" } else { "s" }
        ),
        Ok(Ok(None)) => {
            println!("the provider lists no revocation endpoint; its tokens expire on their own")
        }
        Ok(Err(e)) => eprintln!("warning: could not revoke the tokens at the provider: {e:#}"),
        Err(_) => {
            eprintln!("warning: could not revoke the tokens at the provider: no answer in 15 s")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(dir: &Path) -> Result<ExitCode> {
    let Some(cache) = cache::load(dir)? else {
        println!(
            "not logged in (no {}); run `tollgate login`",
            dir.join(cache::FILE).display()
        );
        return Ok(ExitCode::FAILURE);
    };
    let claims = cache.claims();
    println!("logged in as {}", who(&claims));
    println!("  issuer:    {}", cache.issuer);
    println!("  client id: {}", cache.client_id);
    if let Some(g) = claims.get("groups").and_then(Value::as_array) {
        let g: Vec<&str> = g.iter().filter_map(Value::as_str).collect();
        println!("  groups:    {}", g.join(", "));
    }
    let now = now_secs();
    let usable = match cache.bearer() {
        Ok((_, exp)) => {
            let state = if exp > now { "expires" } else { "expired" };
            println!(
                "  bearer:    the {} (--use {}), {state} at {}",
                cache.use_token.describe(),
                use_name(cache.use_token),
                when(exp)
            );
            exp > now || cache.refresh_token.is_some()
        }
        Err(e) => {
            println!("  bearer:    {e}");
            false
        }
    };
    println!(
        "  refresh:   {}",
        if cache.refresh_token.is_some() {
            "yes, within 60 s of expiry, when a command needs the token"
        } else {
            "no refresh token; run `tollgate login` again when it expires"
        }
    );
    println!("  cache:     {}", dir.join(cache::FILE).display());
    println!(
        "(claims decoded from the cached token without verifying its signature; the gateway verifies it)"
    );
    if std::env::var_os("TOLLGATE_TOKEN").is_some_and(|t| !t.is_empty()) {
        println!("note: TOLLGATE_TOKEN is set, and the CLI sends it instead of this login");
    }
    if !usable {
        println!("the login has expired; run `tollgate login` again");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn use_name(u: UseToken) -> &'static str {
    match u {
        UseToken::IdToken => "id-token",
        UseToken::AccessToken => "access-token",
    }
}

/// `alice (alice@example.test)`, from the claims.
fn who(claims: &Value) -> String {
    let s = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let name = s("preferred_username").or(s("sub")).unwrap_or("?");
    match s("email").filter(|e| *e != name) {
        Some(e) => format!("{name} ({e})"),
        None => name.to_string(),
    }
}

fn groups_note(claims: &Value) -> String {
    match claims.get("groups").and_then(Value::as_array) {
        Some(g) if !g.is_empty() => {
            let g: Vec<&str> = g.iter().filter_map(Value::as_str).collect();
            format!(" (groups {})", g.join(", "))
        }
        _ => String::new(),
    }
}

/// An instant as RFC 3339 and how far it is from now.
fn when(secs: i64) -> String {
    let d = secs - now_secs();
    let rel = if d >= 0 {
        format!("in {}", human(d))
    } else {
        format!("{} ago", human(-d))
    };
    format!(
        "{} ({rel})",
        tollgate_core::format_rfc3339(secs.saturating_mul(1_000_000))
    )
}

fn human(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The message when a command needs a bearer and has none.
pub const NO_CREDENTIALS: &str = "not authenticated: set TOLLGATE_TOKEN (or pass --token) to an API key or token, or run `tollgate login`";

/// The bearer from the login cache, refreshed when it expires within 60 s. Kept in memory while
/// it is fresh, so a long-running command (`approvals wait`, `connect`) reads the file only when
/// the token is about to expire.
#[derive(Default)]
pub struct LoginBearer {
    current: Mutex<Option<(String, i64)>>,
}

impl LoginBearer {
    pub async fn get(&self) -> Result<String> {
        let mut current = self.current.lock().await;
        if let Some((token, exp)) = current.as_ref()
            && exp - now_secs() > REFRESH_MARGIN_SECS
        {
            return Ok(token.clone());
        }
        let dir = config_dir().context(NO_CREDENTIALS)?;
        let (token, exp) = fresh_bearer(&dir).await?;
        *current = Some((token.clone(), exp));
        Ok(token)
    }
}

/// The cached bearer and its expiry, refreshing it first when it expires within the margin.
async fn fresh_bearer(dir: &Path) -> Result<(String, i64)> {
    let Some(cache) = cache::load(dir)? else {
        bail!(NO_CREDENTIALS);
    };
    let (token, exp) = cache.bearer()?;
    if exp - now_secs() > REFRESH_MARGIN_SECS {
        return Ok((token, exp));
    }
    if cache.refresh_token.is_none() {
        if exp > now_secs() {
            return Ok((token, exp));
        }
        bail!(
            "the login of {} at {} expired at {}; run `tollgate login` again (or set TOLLGATE_TOKEN)",
            who(&cache.claims()),
            cache.issuer,
            when(exp)
        );
    }
    // One refresh at a time across processes: a provider that rotates refresh tokens would
    // refuse the second use of the same one.
    let lock = cache::lock(dir).await?;
    let result = refresh_locked(dir).await;
    drop(lock);
    match result {
        Ok(fresh) => Ok(fresh),
        Err(e) if exp > now_secs() => {
            eprintln!(
                "warning: cannot refresh the login ({e:#}); using the current token until it expires at {}; run `tollgate login` again",
                when(exp)
            );
            Ok((token, exp))
        }
        Err(e) => Err(e.context(format!(
            "the login of {} expired and could not be refreshed; run `tollgate login` again",
            who(&cache.claims())
        ))),
    }
}

/// Under the lock: reads the cache again (another process may have refreshed it), refreshes
/// when still needed, and saves the result.
async fn refresh_locked(dir: &Path) -> Result<(String, i64)> {
    let Some(cache) = cache::load(dir)? else {
        bail!(NO_CREDENTIALS);
    };
    if let Ok((token, exp)) = cache.bearer()
        && exp - now_secs() > REFRESH_MARGIN_SECS
    {
        return Ok((token, exp));
    }
    let fresh = flow::refresh(&cache).await?;
    let (token, exp) = fresh.bearer()?;
    cache::save(dir, &fresh)?;
    if exp - now_secs() <= 0 {
        bail!(
            "the provider's refreshed {} is already expired",
            fresh.use_token.describe()
        );
    }
    Ok((token, exp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        login: LoginArgs,
    }

    fn args(a: &[&str]) -> LoginArgs {
        let mut v = vec!["tollgate"];
        v.extend_from_slice(a);
        Cli::try_parse_from(v)
            .map(|c| c.login)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let dir = Path::new("/cfg/tollgate");
        let file = || LoginFile {
            issuer: Some("https://file.example/".into()),
            client_id: Some("file-client".into()),
            scope: None,
            use_token: Some(UseToken::AccessToken),
        };
        let s = settings(&args(&[]), file(), dir).unwrap();
        assert_eq!(
            s,
            Settings {
                issuer: "https://file.example".into(),
                client_id: "file-client".into(),
                scope: DEFAULT_SCOPE.into(),
                use_token: UseToken::AccessToken,
            }
        );
        let s = settings(
            &args(&[
                "--issuer",
                "https://flag.example",
                "--client-id",
                "c",
                "--scope",
                "openid",
                "--use",
                "id-token",
            ]),
            file(),
            dir,
        )
        .unwrap();
        assert_eq!(s.issuer, "https://flag.example");
        assert_eq!(s.client_id, "c");
        assert_eq!(s.scope, "openid");
        assert_eq!(s.use_token, UseToken::IdToken);

        let e = settings(&args(&[]), LoginFile::default(), dir).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("--issuer")
                && msg.contains("TOLLGATE_OIDC_ISSUER")
                && msg.contains("/cfg/tollgate/login.toml"),
            "{msg}"
        );
        let e = settings(&args(&["--issuer", "https://x"]), LoginFile::default(), dir).unwrap_err();
        assert!(e.to_string().contains("TOLLGATE_OIDC_CLIENT_ID"), "{e}");
    }

    #[test]
    fn the_login_file_refuses_unknown_keys() {
        let ok: LoginFile =
            toml::from_str("issuer = \"https://i\"\nuse = \"access-token\"\n").unwrap();
        assert_eq!(ok.use_token, Some(UseToken::AccessToken));
        assert!(toml::from_str::<LoginFile>("isuer = \"https://i\"\n").is_err());
        assert!(toml::from_str::<LoginFile>("use = \"both\"\n").is_err());
    }

    #[test]
    fn the_config_dir_follows_xdg_then_home() {
        let p = |x: Option<&str>, h: Option<&str>| {
            config_dir_from(x.map(Into::into), h.map(Into::into))
        };
        assert_eq!(p(Some("/x"), Some("/h")).unwrap(), Path::new("/x/tollgate"));
        assert_eq!(
            p(Some("relative"), Some("/h")).unwrap(),
            Path::new("/h/.config/tollgate")
        );
        assert_eq!(
            p(None, Some("/h")).unwrap(),
            Path::new("/h/.config/tollgate")
        );
        assert!(p(None, None).is_err());
    }

    #[test]
    fn who_prefers_the_username_and_adds_a_different_email() {
        assert_eq!(
            who(&serde_json::json!({"sub": "u1", "preferred_username": "alice", "email": "a@x"})),
            "alice (a@x)"
        );
        assert_eq!(who(&serde_json::json!({"sub": "u1"})), "u1");
        assert_eq!(who(&Value::Null), "?");
    }
}
