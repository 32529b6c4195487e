//! Claim checks on a token whose signature verified, and what comes out of them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tollgate_core::{AuthMethod, Identity};

use crate::config::{ClaimPath, IssuerSettings, ResolvedKind};
use crate::error::{OidcError, quote};
use crate::jws::Algorithm;

/// Longest `sub` accepted, in bytes.
const MAX_SUBJECT_BYTES: usize = 1024;
/// Longest `jti`, `azp` / `client_id` accepted, in bytes.
const MAX_ID_BYTES: usize = 256;
/// Provider groups read from one token, at most; more are ignored.
const MAX_GROUPS: usize = 1024;
/// Longest group name kept, in bytes; longer ones are ignored.
const MAX_GROUP_BYTES: usize = 256;
/// The latest NumericDate accepted (9999-12-31T23:59:59Z), seconds.
const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// Whether the caller is a person or a machine (the gateway's own type).
pub use tollgate_core::IdentityKind;

/// A token that verified: who it names and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedToken {
    /// The issuer (the configured identifier, equal to the token's `iss`).
    pub issuer: String,
    /// The token's `sub`, as it is.
    pub subject: String,
    /// The Tollgate subject: the issuer's `subject_prefix` followed by `sub`.
    pub principal: String,
    /// Person or service.
    pub kind: IdentityKind,
    /// Tollgate groups, after the issuer's `group_map`; sorted, without repeats.
    pub groups: Vec<String>,
    /// `exp`, microseconds since the Unix epoch.
    pub expires_at: i64,
    /// `iat`, when present, microseconds since the Unix epoch.
    pub issued_at: Option<i64>,
    /// The client the token was issued to (`azp`, else `client_id`), when present.
    pub client_id: Option<String>,
    /// `jti`, when present.
    pub token_id: Option<String>,
    /// The signature algorithm.
    pub algorithm: Algorithm,
    /// The key that verified it (`None` for a shared secret or a token without `kid`).
    pub key_id: Option<String>,
}

impl VerifiedToken {
    /// The gateway's identity for this token: the principal as subject, the mapped groups,
    /// the expiry, the kind, issuer, client, token id and issue time; no admin right (roles are
    /// the gateway's decision), no key id.
    pub fn to_identity(&self) -> Identity {
        Identity {
            subject: self.principal.clone(),
            via: AuthMethod::Oidc,
            key_id: None,
            groups: self.groups.clone(),
            admin: false,
            expires_at: Some(self.expires_at),
            kind: Some(self.kind),
            issuer: Some(self.issuer.clone()),
            client_id: self.client_id.clone(),
            token_id: self.token_id.clone(),
            issued_at: self.issued_at,
        }
    }
}

/// Checks the claims of a token whose signature verified against `settings`.
pub(crate) fn check(
    settings: &IssuerSettings,
    claims: &Map<String, Value>,
    now: i64,
    algorithm: Algorithm,
    key_id: Option<&str>,
) -> Result<VerifiedToken, OidcError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == settings.issuer => {}
        Some(Value::String(iss)) => return Err(OidcError::UnknownIssuer(quote(iss))),
        Some(_) => {
            return Err(OidcError::InvalidClaim {
                claim: "iss",
                reason: "not a string",
            });
        }
        None => return Err(OidcError::MissingClaim("iss")),
    }

    let client_id = client(claims)?;
    let audiences = audiences(claims)?;
    let aud_ok = audiences
        .iter()
        .any(|a| settings.audiences.iter().any(|mine| mine == *a));
    let client_ok = client_id
        .as_ref()
        .is_some_and(|c| settings.client_ids.iter().any(|mine| mine == c));
    // An ID token names its client in `aud` (OpenID Connect Core 2): `aud` holding one of
    // `client_ids` is accepted too, unless the token names another client in `azp` /
    // `client_id`, which must then be one of them as well.
    let aud_client_ok = client_id.is_none()
        && audiences
            .iter()
            .any(|a| settings.client_ids.iter().any(|mine| mine == *a));
    if !aud_ok && !client_ok && !aud_client_ok {
        let mut found = format!(
            "aud={}",
            quote(
                &audiences
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        );
        if let Some(c) = &client_id {
            found.push_str(" client=");
            found.push_str(&quote(c));
        }
        return Err(OidcError::WrongAudience {
            issuer: settings.issuer.clone(),
            found,
        });
    }

    let leeway = i64::try_from(settings.leeway_secs)
        .unwrap_or(0)
        .saturating_mul(1_000_000);
    let exp = numeric_date(claims, "exp")?.ok_or(OidcError::MissingClaim("exp"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(OidcError::Expired {
            exp,
            now,
            leeway_secs: settings.leeway_secs,
        });
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && nbf.saturating_sub(leeway) > now
    {
        return Err(OidcError::NotYetValid {
            nbf,
            now,
            leeway_secs: settings.leeway_secs,
        });
    }
    let issued_at = numeric_date(claims, "iat")?;
    if let Some(iat) = issued_at {
        if iat.saturating_sub(leeway) > now {
            return Err(OidcError::IssuedInFuture {
                iat,
                now,
                leeway_secs: settings.leeway_secs,
            });
        }
        if exp < iat {
            return Err(OidcError::InvalidClaim {
                claim: "exp",
                reason: "before iat",
            });
        }
    }

    let subject = match claims.get("sub") {
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_SUBJECT_BYTES
                && !s.chars().any(char::is_control) =>
        {
            s.clone()
        }
        Some(_) => {
            return Err(OidcError::InvalidClaim {
                claim: "sub",
                reason: "not a string of 1 to 1024 bytes without control characters",
            });
        }
        None => return Err(OidcError::MissingClaim("sub")),
    };
    let token_id = optional_id(claims, "jti")?;
    let kind = kind(&settings.kind, claims, &subject, client_id.as_deref());
    let groups = groups(settings, claims);

    Ok(VerifiedToken {
        issuer: settings.issuer.clone(),
        principal: format!("{}{subject}", settings.subject_prefix),
        subject,
        kind,
        groups,
        expires_at: exp,
        issued_at,
        client_id,
        token_id,
        algorithm,
        key_id: key_id.map(str::to_owned),
    })
}

/// `aud` as a list: a string, an array of strings, or absent.
fn audiences(claims: &Map<String, Value>) -> Result<Vec<&String>, OidcError> {
    const BAD: OidcError = OidcError::InvalidClaim {
        claim: "aud",
        reason: "not a string or an array of strings",
    };
    match claims.get("aud") {
        None => Ok(Vec::new()),
        Some(Value::String(a)) => Ok(vec![a]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(a) => Ok(a),
                _ => Err(BAD),
            })
            .collect(),
        Some(_) => Err(BAD),
    }
}

/// The client: `azp`, else `client_id`; both present and different is refused.
fn client(claims: &Map<String, Value>) -> Result<Option<String>, OidcError> {
    let azp = optional_id(claims, "azp")?;
    let client_id = optional_id(claims, "client_id")?;
    match (azp, client_id) {
        (Some(a), Some(c)) if a != c => Err(OidcError::InvalidClaim {
            claim: "azp",
            reason: "differs from client_id",
        }),
        (Some(a), _) => Ok(Some(a)),
        (None, c) => Ok(c),
    }
}

fn optional_id(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, OidcError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= MAX_ID_BYTES && !s.chars().any(char::is_control) =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(OidcError::InvalidClaim {
            claim: name,
            reason: "not a string of 1 to 256 bytes without control characters",
        }),
    }
}

/// A NumericDate claim (seconds since the epoch, integer or not) in microseconds.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, OidcError> {
    let bad = OidcError::InvalidClaim {
        claim: name,
        reason: "not a number of seconds between 1970 and 9999",
    };
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(bad);
    };
    if let Some(secs) = n.as_i64() {
        if !(0..=MAX_NUMERIC_DATE as i64).contains(&secs) {
            return Err(bad);
        }
        return Ok(Some(secs * 1_000_000));
    }
    match n.as_f64() {
        Some(secs) if secs.is_finite() && (0.0..=MAX_NUMERIC_DATE).contains(&secs) => {
            Ok(Some((secs * 1_000_000.0).floor() as i64))
        }
        _ => Err(bad),
    }
}

/// Follows a claim path. A dotted string is first tried as one claim name.
fn lookup<'a>(claims: &'a Map<String, Value>, path: &ClaimPath) -> Option<&'a Value> {
    match path {
        ClaimPath::Dotted(name) => claims.get(name).or_else(|| walk(claims, name.split('.'))),
        ClaimPath::Segments(segs) => walk(claims, segs.iter().map(String::as_str)),
    }
}

fn walk<'a, 'p>(
    claims: &'a Map<String, Value>,
    mut segments: impl Iterator<Item = &'p str>,
) -> Option<&'a Value> {
    let mut current = claims.get(segments.next()?)?;
    for seg in segments {
        current = current.as_object()?.get(seg)?;
    }
    Some(current)
}

fn groups(settings: &IssuerSettings, claims: &Map<String, Value>) -> Vec<String> {
    let raw: Vec<&str> = match lookup(claims, &settings.groups_claim) {
        Some(Value::String(g)) => vec![g.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut out = BTreeSet::new();
    for g in raw.into_iter().take(MAX_GROUPS) {
        if g.is_empty() || g.len() > MAX_GROUP_BYTES || g.chars().any(char::is_control) {
            continue;
        }
        match settings.group_map.get(g) {
            Some(mapped) => out.extend(mapped.iter().cloned()),
            None if settings.keep_unmapped => {
                out.insert(g.to_owned());
            }
            None => {}
        }
    }
    out.into_iter().collect()
}

fn kind(
    rule: &ResolvedKind,
    claims: &Map<String, Value>,
    subject: &str,
    client_id: Option<&str>,
) -> IdentityKind {
    let service = match rule {
        ResolvedKind::Human => false,
        ResolvedKind::Service => true,
        ResolvedKind::Claim { path, values } => match lookup(claims, path) {
            Some(Value::Array(items)) => items.iter().any(|v| value_in(v, values)),
            Some(v) => value_in(v, values),
            None => false,
        },
        ResolvedKind::Auto => {
            let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
            str_claim("gty") == Some("client-credentials")
                || str_claim("grant_type") == Some("client_credentials")
                || str_claim("idtyp") == Some("app")
                || client_id == Some(subject)
                || str_claim("preferred_username")
                    .is_some_and(|u| u.starts_with("service-account-"))
                || !claims.contains_key("email")
        }
    };
    if service {
        IdentityKind::Service
    } else {
        IdentityKind::Human
    }
}

fn value_in(value: &Value, values: &[String]) -> bool {
    match value {
        Value::String(s) => values.iter().any(|v| v == s),
        Value::Bool(b) => values
            .iter()
            .any(|v| v == if *b { "true" } else { "false" }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IssuerConfig, KindRule, OidcConfig, UnmappedGroups};

    fn settings(edit: impl FnOnce(&mut IssuerConfig)) -> IssuerSettings {
        let mut cfg = IssuerConfig::new("https://idp.test");
        cfg.audiences = vec!["tollgate".into()];
        edit(&mut cfg);
        let config = OidcConfig {
            issuers: vec![cfg],
            ..OidcConfig::default()
        };
        config.resolve(&|_| None).unwrap().pop().unwrap()
    }

    fn claims(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    const NOW: i64 = 1_800_000_000_000_000;

    #[test]
    fn groups_from_paths_with_mapping() {
        let s = settings(|c| {
            c.groups_claim = ClaimPath::Segments(vec![
                "resource_access".into(),
                "my.client".into(),
                "roles".into(),
            ]);
            c.group_map
                .insert("db-admin".into(), vec!["dba".into(), "ops".into()]);
            c.group_map.insert("noise".into(), vec![]);
        });
        let c = claims(
            r#"{"resource_access":{"my.client":{"roles":["db-admin","noise","dev","dev","", 7]}}}"#,
        );
        assert_eq!(groups(&s, &c), vec!["dba", "dev", "ops"]);

        let s = settings(|c| {
            c.groups_claim = ClaimPath::Dotted("realm_access.roles".into());
            c.group_map.insert("a".into(), vec!["x".into()]);
            c.unmapped_groups = UnmappedGroups::Drop;
        });
        let c = claims(r#"{"realm_access":{"roles":["a","b"]}}"#);
        assert_eq!(groups(&s, &c), vec!["x"]);
        // A claim whose name holds the dots wins over the path.
        let c = claims(r#"{"realm_access.roles":"a","realm_access":{"roles":["b"]}}"#);
        assert_eq!(groups(&s, &c), vec!["x"]);
        // Not a string or an array: no groups.
        let c = claims(r#"{"realm_access":{"roles":{"a":1}}}"#);
        assert!(groups(&s, &c).is_empty());
    }

    #[test]
    fn kind_rules() {
        let auto = ResolvedKind::Auto;
        let k = |rule: &ResolvedKind, json: &str, client: Option<&str>| {
            kind(rule, &claims(json), "sub-1", client)
        };
        assert_eq!(k(&auto, r#"{"email":"a@b"}"#, None), IdentityKind::Human);
        assert_eq!(k(&auto, r#"{}"#, None), IdentityKind::Service);
        assert_eq!(
            k(&auto, r#"{"email":"a@b","gty":"client-credentials"}"#, None),
            IdentityKind::Service
        );
        assert_eq!(
            k(&auto, r#"{"email":"a@b"}"#, Some("sub-1")),
            IdentityKind::Service
        );
        assert_eq!(
            k(
                &auto,
                r#"{"email":"a@b","preferred_username":"service-account-ci"}"#,
                None
            ),
            IdentityKind::Service
        );
        assert_eq!(k(&ResolvedKind::Human, "{}", None), IdentityKind::Human);
        let rule = ResolvedKind::Claim {
            path: ClaimPath::Dotted("token_use".into()),
            values: vec!["machine".into(), "true".into()],
        };
        assert_eq!(
            k(&rule, r#"{"token_use":"machine"}"#, None),
            IdentityKind::Service
        );
        assert_eq!(
            k(&rule, r#"{"token_use":["x","machine"]}"#, None),
            IdentityKind::Service
        );
        assert_eq!(
            k(&rule, r#"{"token_use":true}"#, None),
            IdentityKind::Service
        );
        assert_eq!(
            k(&rule, r#"{"token_use":"person"}"#, None),
            IdentityKind::Human
        );
        assert_eq!(k(&rule, r#"{}"#, None), IdentityKind::Human);
        let _ = KindRule::Auto;
    }

    #[test]
    fn numeric_dates() {
        let c = claims(r#"{"a":1.5,"b":-1,"c":"1","d":1e300,"e":253402300800,"f":0}"#);
        assert_eq!(numeric_date(&c, "a").unwrap(), Some(1_500_000));
        assert!(numeric_date(&c, "b").is_err());
        assert!(numeric_date(&c, "c").is_err());
        assert!(numeric_date(&c, "d").is_err());
        assert!(numeric_date(&c, "e").is_err());
        assert_eq!(numeric_date(&c, "f").unwrap(), Some(0));
        assert_eq!(numeric_date(&c, "z").unwrap(), None);
    }

    #[test]
    fn audience_and_client() {
        let s = settings(|c| c.client_ids = vec!["cli".into()]);
        let base = r#""iss":"https://idp.test","sub":"u","exp":1900000000"#;
        let ok = |extra: &str| {
            check(
                &s,
                &claims(&format!("{{{base},{extra}}}")),
                NOW,
                Algorithm::RS256,
                None,
            )
        };
        assert!(ok(r#""aud":"tollgate""#).is_ok());
        assert!(ok(r#""aud":["x","tollgate"]"#).is_ok());
        assert!(ok(r#""aud":"x","azp":"cli""#).is_ok());
        assert!(ok(r#""client_id":"cli""#).is_ok());
        assert!(matches!(
            ok(r#""aud":"x","azp":"other""#),
            Err(OidcError::WrongAudience { .. })
        ));
        assert!(matches!(
            ok(r#""aud":["x"]"#),
            Err(OidcError::WrongAudience { .. })
        ));
        // An ID token: its client id in `aud`, without `azp`.
        assert!(ok(r#""aud":"cli""#).is_ok());
        assert!(ok(r#""aud":["cli","x"]"#).is_ok());
        // With `azp`, it must be one of the clients too.
        assert!(ok(r#""aud":["cli","x"],"azp":"cli""#).is_ok());
        assert!(matches!(
            ok(r#""aud":["cli","x"],"azp":"x""#),
            Err(OidcError::WrongAudience { .. })
        ));
        assert!(matches!(
            ok(r#""aud":"cli","client_id":"other""#),
            Err(OidcError::WrongAudience { .. })
        ));
        // Without client_ids, a client's id in `aud` means nothing.
        let plain = settings(|_| {});
        assert!(matches!(
            check(
                &plain,
                &claims(&format!("{{{base},\"aud\":\"cli\"}}")),
                NOW,
                Algorithm::RS256,
                None
            ),
            Err(OidcError::WrongAudience { .. })
        ));
        assert!(matches!(
            ok(r#""aud":"tollgate","azp":"a","client_id":"b""#),
            Err(OidcError::InvalidClaim { claim: "azp", .. })
        ));
        assert!(matches!(
            ok(r#""aud":[1]"#),
            Err(OidcError::InvalidClaim { claim: "aud", .. })
        ));
        assert!(matches!(
            ok(r#""aud":{}"#),
            Err(OidcError::InvalidClaim { claim: "aud", .. })
        ));
    }
}
