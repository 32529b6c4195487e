//! The login cache: `tokens.json` in the config directory (mode 0600, directory 0700), replaced
//! atomically (a new file renamed over the old one), and a lock file that serialises refreshes.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::UseToken;
use super::flow::TokenResponse;

/// The cache's file name in the config directory.
pub const FILE: &str = "tokens.json";
const LOCK: &str = "tokens.lock";
const VERSION: u32 = 1;

/// What a login leaves behind.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cache {
    /// Format version (1).
    pub version: u32,
    /// The issuer, as its discovery document spells it.
    pub issuer: String,
    pub client_id: String,
    /// The scopes asked for.
    pub scope: String,
    /// Which token is the bearer.
    #[serde(rename = "use")]
    pub use_token: UseToken,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix seconds), from `expires_in`.
    #[serde(default)]
    pub access_token_expires_at: Option<i64>,
    /// When the bearer (the token `use` names) expires (Unix seconds); informative, the token's
    /// own `exp` decides.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// When these tokens were obtained (Unix seconds).
    pub obtained_at: i64,
}

impl Cache {
    /// A cache from a token endpoint answer. Refuses an answer without the token `use` names.
    pub fn from_tokens(
        issuer: &str,
        client_id: &str,
        scope: &str,
        use_token: UseToken,
        t: TokenResponse,
    ) -> Result<Self> {
        let now = super::now_secs();
        let mut c = Self {
            version: VERSION,
            issuer: issuer.to_string(),
            client_id: client_id.to_string(),
            scope: scope.to_string(),
            use_token,
            id_token: t.id_token,
            access_token: Some(t.access_token).filter(|a| !a.is_empty()),
            refresh_token: t.refresh_token,
            access_token_expires_at: t.expires_in.map(|s| now + s as i64),
            expires_at: None,
            obtained_at: now,
        };
        let (_, exp) = c.bearer()?;
        c.expires_at = Some(exp);
        Ok(c)
    }

    /// These tokens renewed by a refresh answer: what the answer lacks (a refresh token that the
    /// provider did not rotate, an ID token) is kept.
    pub fn refreshed(&self, t: TokenResponse) -> Result<Self> {
        let now = super::now_secs();
        let mut c = self.clone();
        if t.id_token.is_some() {
            c.id_token = t.id_token;
        } else if self.use_token == UseToken::IdToken {
            bail!(
                "the provider's refresh answer has no ID token (`openid` must be among the scopes)"
            );
        }
        c.access_token = Some(t.access_token).filter(|a| !a.is_empty());
        c.access_token_expires_at = t.expires_in.map(|s| now + s as i64);
        if t.refresh_token.is_some() {
            c.refresh_token = t.refresh_token;
        }
        c.obtained_at = now;
        let (_, exp) = c.bearer()?;
        c.expires_at = Some(exp);
        Ok(c)
    }

    /// The bearer and when it expires (Unix seconds).
    pub fn bearer(&self) -> Result<(String, i64)> {
        match self.use_token {
            UseToken::IdToken => {
                let t = self.id_token.as_deref().ok_or_else(|| {
                    anyhow!("the provider returned no ID token (is `openid` among the scopes?)")
                })?;
                let exp = decode_claims(t)
                    .and_then(|c| c.get("exp").and_then(Value::as_i64))
                    .ok_or_else(|| anyhow!("the ID token has no readable `exp` claim"))?;
                Ok((t.to_string(), exp))
            }
            UseToken::AccessToken => {
                let t = self
                    .access_token
                    .as_deref()
                    .ok_or_else(|| anyhow!("the provider returned no access token"))?;
                let claims = decode_claims(t).ok_or_else(|| {
                    anyhow!(
                        "the provider's access token is not a JWT, so the gateway cannot verify it; log in with --use id-token"
                    )
                })?;
                let exp = claims
                    .get("exp")
                    .and_then(Value::as_i64)
                    .or(self.access_token_expires_at)
                    .ok_or_else(|| anyhow!("the access token has no `exp` claim"))?;
                Ok((t.to_string(), exp))
            }
        }
    }

    /// The claims shown to the person: the bearer's, completed by the other token's (an access
    /// token often lacks the e-mail address). Not verified.
    pub fn claims(&self) -> Value {
        let of = |t: &Option<String>| t.as_deref().and_then(decode_claims);
        let (first, second) = match self.use_token {
            UseToken::IdToken => (of(&self.id_token), of(&self.access_token)),
            UseToken::AccessToken => (of(&self.access_token), of(&self.id_token)),
        };
        match (first, second) {
            (Some(Value::Object(mut a)), Some(Value::Object(b))) => {
                for (k, v) in b {
                    a.entry(k).or_insert(v);
                }
                Value::Object(a)
            }
            (first, second) => first.or(second).unwrap_or(Value::Null),
        }
    }
}

/// The payload of a compact JWS, decoded without verifying anything; `None` when it is not a
/// JWT whose payload is a JSON object.
pub fn decode_claims(token: &str) -> Option<Value> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.is_object().then_some(v)
}

/// Creates the config directory (mode 0700), or tightens an existing one to 0700.
fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))?;
    }
    Ok(())
}

/// The cache, or `None` when there is none.
pub fn load(dir: &Path) -> Result<Option<Cache>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if let Ok(meta) = std::fs::metadata(&path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} is readable by others (mode {:o}); run `chmod 600` on it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let cache: Cache = serde_json::from_str(&text).with_context(|| {
        format!(
            "cannot read {}; run `tollgate logout` and `tollgate login` again",
            path.display()
        )
    })?;
    if cache.version != VERSION {
        bail!(
            "{} has format version {}, this tollgate reads {VERSION}; run `tollgate login` again",
            path.display(),
            cache.version
        );
    }
    Ok(Some(cache))
}

/// Writes the cache atomically: a new file (mode 0600) beside it, synced, renamed over it.
pub fn save(dir: &Path, cache: &Cache) -> Result<()> {
    ensure_dir(dir)?;
    let path = dir.join(FILE);
    let mut suffix = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix)
        .map_err(|_| anyhow!("no random numbers from the system"))?;
    let tmp = dir.join(format!(".{FILE}.{}.{}", std::process::id(), hex(&suffix)));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut text = serde_json::to_vec_pretty(cache).map_err(std::io::Error::other)?;
        text.push(b'\n');
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The rename is durable once the directory is synced; best effort.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("cannot write {}: {e}", path.display())
    })
}

/// Removes the cache; `false` when there was none.
pub fn remove(dir: &Path) -> Result<bool> {
    let path = dir.join(FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// An exclusive lock on `tokens.lock`, held until the returned file is dropped.
pub async fn lock(dir: &Path) -> Result<std::fs::File> {
    ensure_dir(dir)?;
    let path = dir.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .context("the lock task failed")?
        .with_context(|| format!("cannot lock {}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    fn jwt(claims: Value) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    fn answer(id_exp: i64, at: &str) -> TokenResponse {
        TokenResponse {
            access_token: at.to_string(),
            id_token: Some(jwt(
                json!({"sub": "alice", "exp": id_exp, "groups": ["eng"]}),
            )),
            refresh_token: Some("r1".into()),
            expires_in: Some(300),
        }
    }

    #[test]
    fn claims_are_decoded_only_from_three_part_tokens_with_object_payloads() {
        assert_eq!(decode_claims(&jwt(json!({"a": 1}))).unwrap()["a"], 1);
        assert!(decode_claims("opaque-token").is_none());
        assert!(decode_claims("a.b").is_none());
        assert!(decode_claims("a.b.c.d").is_none());
        let array = format!("x.{}.y", URL_SAFE_NO_PAD.encode("[1]"));
        assert!(decode_claims(&array).is_none());
    }

    #[test]
    fn the_bearer_is_the_token_use_names() {
        let c = Cache::from_tokens(
            "https://i",
            "cli",
            "openid",
            UseToken::IdToken,
            answer(2000, "opaque"),
        )
        .unwrap();
        assert_eq!(c.bearer().unwrap().1, 2000);
        assert_eq!(c.expires_at, Some(2000));
        assert_eq!(c.claims()["sub"], "alice");
        // An opaque access token cannot be the bearer.
        let e = Cache::from_tokens(
            "https://i",
            "cli",
            "openid",
            UseToken::AccessToken,
            answer(2000, "opaque"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--use id-token"), "{e}");
        let at = jwt(json!({"sub": "alice", "aud": "tollgate", "exp": 3000}));
        let c = Cache::from_tokens(
            "https://i",
            "cli",
            "openid",
            UseToken::AccessToken,
            answer(2000, &at),
        )
        .unwrap();
        assert_eq!(c.bearer().unwrap(), (at, 3000));
    }

    #[test]
    fn a_refresh_keeps_what_the_answer_lacks() {
        let c = Cache::from_tokens(
            "https://i",
            "cli",
            "openid",
            UseToken::IdToken,
            answer(2000, "a1"),
        )
        .unwrap();
        let mut t = answer(4000, "a2");
        t.refresh_token = None;
        let r = c.refreshed(t).unwrap();
        assert_eq!(r.refresh_token.as_deref(), Some("r1"));
        assert_eq!(r.bearer().unwrap().1, 4000);
        assert_eq!(r.access_token.as_deref(), Some("a2"));
        let mut t = answer(4000, "a3");
        t.id_token = None;
        assert!(
            c.refreshed(t).is_err(),
            "an ID-token login needs a new ID token"
        );
    }

    #[test]
    fn saving_is_private_and_atomic() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cfg").join("tollgate");
        assert!(load(&dir).unwrap().is_none());
        let c = Cache::from_tokens(
            "https://i",
            "cli",
            "openid",
            UseToken::IdToken,
            answer(2000, "a1"),
        )
        .unwrap();
        save(&dir, &c).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE)), 0o600);
        save(&dir, &c).unwrap();
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [FILE], "no temporary file is left behind");
        assert_eq!(load(&dir).unwrap().unwrap().id_token, c.id_token);

        // An existing, too open directory is tightened.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        save(&dir, &c).unwrap();
        assert_eq!(mode(&dir), 0o700);

        assert!(remove(&dir).unwrap());
        assert!(!remove(&dir).unwrap());
    }

    #[tokio::test]
    async fn the_lock_is_exclusive() {
        let tmp = tempfile::tempdir().unwrap();
        let held = lock(tmp.path()).await.unwrap();
        let path = tmp.path().join(LOCK);
        let other = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(other.try_lock().is_err());
        drop(held);
        assert!(other.try_lock().is_ok());
    }
}
