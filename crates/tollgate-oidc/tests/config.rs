#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Configuration validation: every error names the offending key.

mod common;

use common::*;
use tollgate_oidc::{ClaimPath, IssuerConfig, KindRule, OidcConfig, OidcError};

fn key_of(issuers: Vec<IssuerConfig>) -> String {
    match try_verifier(issuers, clock()) {
        Ok(_) => panic!("accepted"),
        Err(OidcError::Config { key, reason }) => {
            assert!(!reason.is_empty());
            key
        }
        Err(e) => panic!("not a config error: {e:?}"),
    }
}

fn with(edit: impl FnOnce(&mut IssuerConfig)) -> Vec<IssuerConfig> {
    let mut cfg = issuer_config("https://idp.example.com");
    edit(&mut cfg);
    vec![cfg]
}

#[test]
fn each_error_names_its_key() {
    let cases: Vec<(Vec<IssuerConfig>, &str)> = vec![
        (with(|c| c.issuer = String::new()), "oidc.issuers[0].issuer"),
        (
            with(|c| c.issuer = "https://idp .example".into()),
            "oidc.issuers[0].issuer",
        ),
        (
            with(|c| c.issuer = "http://idp.example.com".into()),
            "oidc.issuers[0].issuer",
        ),
        (
            with(|c| c.issuer = "not a url".into()),
            "oidc.issuers[0].issuer",
        ),
        (with(|c| c.audiences.clear()), "oidc.issuers[0].audiences"),
        (
            with(|c| c.audiences = vec![String::new()]),
            "oidc.issuers[0].audiences",
        ),
        (
            with(|c| c.client_ids = vec!["a\nb".into()]),
            "oidc.issuers[0].client_ids",
        ),
        (with(|c| c.leeway_secs = 601), "oidc.issuers[0].leeway_secs"),
        (
            with(|c| c.jwks_ttl_secs = 59),
            "oidc.issuers[0].jwks_ttl_secs",
        ),
        (
            with(|c| c.jwks_ttl_secs = 86_401),
            "oidc.issuers[0].jwks_ttl_secs",
        ),
        (
            with(|c| c.jwks_refresh_min_secs = 0),
            "oidc.issuers[0].jwks_refresh_min_secs",
        ),
        (
            with(|c| c.grace_secs = 31 * 86_400),
            "oidc.issuers[0].grace_secs",
        ),
        (
            with(|c| c.subject_prefix = "x\n".into()),
            "oidc.issuers[0].subject_prefix",
        ),
        (
            with(|c| {
                c.discovery_url =
                    Some("http://idp.example.com/.well-known/openid-configuration".into())
            }),
            "oidc.issuers[0].discovery_url",
        ),
        (
            with(|c| c.discovery_url = Some("https://user:pw@idp.example.com/x".into())),
            "oidc.issuers[0].discovery_url",
        ),
        (
            with(|c| c.jwks_url = Some("ftp://idp.example.com/jwks".into())),
            "oidc.issuers[0].jwks_url",
        ),
        (
            with(|c| {
                c.jwks_url = Some("https://idp.example.com/jwks".into());
                c.discovery_url = Some("https://idp.example.com/d".into());
            }),
            "oidc.issuers[0].jwks_url",
        ),
        (
            with(|c| c.hs_secret_env = Some("UNSET".into())),
            "oidc.issuers[0].hs_secret_env",
        ),
        (
            with(|c| c.hs_secret_env = Some("HS_SHORT".into())),
            "oidc.issuers[0].hs_secret_env",
        ),
        (
            with(|c| {
                c.hs_secret_env = Some("HS_SECRET".into());
                c.jwks_url = Some("https://idp.example.com/jwks".into());
            }),
            "oidc.issuers[0].jwks_url",
        ),
        (
            with(|c| {
                c.hs_secret_env = Some("HS_SECRET".into());
                c.discovery_url = Some("https://idp.example.com/d".into());
            }),
            "oidc.issuers[0].discovery_url",
        ),
        (
            with(|c| c.algorithms = Some(vec!["HS256".into()])),
            "oidc.issuers[0].algorithms",
        ),
        (
            with(|c| c.algorithms = Some(vec!["none".into()])),
            "oidc.issuers[0].algorithms",
        ),
        (
            with(|c| c.algorithms = Some(vec![])),
            "oidc.issuers[0].algorithms",
        ),
        (
            with(|c| {
                c.hs_secret_env = Some("HS_SECRET".into());
                c.algorithms = Some(vec!["RS256".into()]);
            }),
            "oidc.issuers[0].algorithms",
        ),
        (
            with(|c| {
                c.hs_secret_env = Some("HS_SECRET".into());
                c.algorithms = Some(vec!["HS512".into()]);
            }),
            "oidc.issuers[0].algorithms",
        ),
        (
            with(|c| c.kind = KindRule::Claim),
            "oidc.issuers[0].service_claim",
        ),
        (
            with(|c| {
                c.kind = KindRule::Claim;
                c.service_claim = Some(ClaimPath::Dotted("x".into()));
            }),
            "oidc.issuers[0].service_values",
        ),
        (
            with(|c| c.service_claim = Some(ClaimPath::Dotted("x".into()))),
            "oidc.issuers[0].service_claim",
        ),
        (
            with(|c| c.service_values = vec!["x".into()]),
            "oidc.issuers[0].service_values",
        ),
        (
            with(|c| c.groups_claim = ClaimPath::Dotted("a..b".into())),
            "oidc.issuers[0].groups_claim",
        ),
        (
            with(|c| c.groups_claim = ClaimPath::Segments(vec![])),
            "oidc.issuers[0].groups_claim",
        ),
        (
            with(|c| {
                c.group_map.insert("a".into(), vec![String::new()]);
            }),
            "oidc.issuers[0].group_map",
        ),
        (
            vec![
                issuer_config("https://a.example"),
                issuer_config("https://a.example"),
            ],
            "oidc.issuers[1].issuer",
        ),
        (
            vec![
                issuer_config("https://a.example"),
                issuer_config("https://b.example"),
            ],
            "oidc.issuers[1].subject_prefix",
        ),
    ];
    for (issuers, want) in cases {
        let got = key_of(issuers.clone());
        assert_eq!(got, want, "{issuers:?}");
    }
}

#[test]
fn loopback_http_is_allowed() {
    for issuer in [
        "http://127.0.0.1:8080",
        "http://localhost:9000/realms/x",
        "http://[::1]:1",
    ] {
        try_verifier(vec![issuer_config(issuer)], clock())
            .unwrap_or_else(|e| panic!("{issuer}: {e}"));
    }
}

#[test]
fn top_level_keys_and_unknown_fields() {
    let bad = OidcConfig {
        issuers: vec![],
        http_timeout_secs: 0,
        web: None,
    };
    let e = tollgate_oidc::Verifier::with_env(&bad, &|_| None, clock()).unwrap_err();
    assert!(
        matches!(&e, OidcError::Config { key, .. } if key == "oidc.http_timeout_secs"),
        "{e}"
    );
    assert_eq!(e.public_message(), "authentication misconfigured");
    assert!(bad.validate().is_err());
    assert!(OidcConfig::default().validate().is_ok());

    let e = toml::from_str::<OidcConfig>(
        "[[issuers]]\nissuer = \"https://a.example\"\naudiences = [\"x\"]\naudience = \"typo\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("audience"), "{e}");
    let e = toml::from_str::<OidcConfig>("refresh = 1\n").unwrap_err();
    assert!(e.to_string().contains("refresh"), "{e}");
    let e = toml::from_str::<OidcConfig>(
        "[[issuers]]\nissuer = \"https://a.example\"\naudiences = [\"x\"]\nkind = \"robot\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("robot"), "{e}");
}
