#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Tokens that must be accepted, and what comes out of them.

mod common;

use common::*;
use serde_json::json;
use tollgate_core::AuthMethod;
use tollgate_oidc::{
    Algorithm, ClaimPath, IdentityKind, KindRule, OidcConfig, UnmappedGroups, Verifier,
};

#[tokio::test]
async fn rs256_token_verifies_and_maps_to_an_identity() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("rsa-1")]}));
    let v = verifier(vec![idp.config()], clock());
    let token = sign(&key, "RS256", Some("rsa-1"), &claims(&idp.url));

    let ok = v.verify(&token).await.unwrap();
    assert_eq!(ok.issuer, idp.url);
    assert_eq!(ok.subject, "alice");
    assert_eq!(ok.principal, "alice");
    assert_eq!(ok.kind, IdentityKind::Human);
    assert_eq!(ok.groups, vec!["engineers"]);
    assert_eq!(ok.expires_at, (NOW_SECS + 3600) * 1_000_000);
    assert_eq!(ok.issued_at, Some((NOW_SECS - 10) * 1_000_000));
    assert_eq!(ok.token_id.as_deref(), Some("token-1"));
    assert_eq!(ok.client_id, None);
    assert_eq!(ok.algorithm, Algorithm::RS256);
    assert_eq!(ok.key_id.as_deref(), Some("rsa-1"));

    let identity = ok.to_identity();
    assert_eq!(identity.subject, "alice");
    assert_eq!(identity.via, AuthMethod::Oidc);
    assert_eq!(identity.groups, vec!["engineers"]);
    assert_eq!(identity.expires_at, Some(ok.expires_at));
    assert!(!identity.admin);
    assert_eq!(identity.key_id, None);

    // One discovery and one JWKS fetch; the second token is served from the cache.
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1));
    v.verify(&token).await.unwrap();
    v.verify_cached(&token).unwrap();
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1));
}

#[tokio::test]
async fn every_rsa_variant() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("rsa-1")]}));
    let v = verifier(vec![idp.config()], clock());
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        let token = sign(&key, alg, Some("rsa-1"), &claims(&idp.url));
        let ok = v
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(ok.algorithm.name(), alg);
    }
}

#[tokio::test]
async fn es256_es384_and_eddsa() {
    let ec = Signer::ec256();
    let ec384 = Signer::ec384();
    let ed = Signer::ed25519();
    let idp = Idp::start(json!({"keys": [ec.jwk("ec"), ec384.jwk("ec384"), ed.jwk("ed")]}));
    let clk = clock();
    let v = verifier(vec![idp.config()], clk.clone());
    for (signer, alg, kid) in [
        (&ec, "ES256", "ec"),
        (&ec384, "ES384", "ec384"),
        (&ed, "EdDSA", "ed"),
    ] {
        let token = sign(signer, alg, Some(kid), &claims(&idp.url));
        let ok = v
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(ok.algorithm.name(), alg);
        assert_eq!(ok.key_id.as_deref(), Some(kid));
    }
    // A JWK that declares its alg is used for exactly that alg.
    let mut jwk = ec.jwk("ec-declared");
    jwk["alg"] = json!("ES256");
    idp.set_jwks(json!({"keys": [jwk]}));
    clk.advance_secs(31); // past the refetch rate limit
    let token = sign(&ec, "ES256", Some("ec-declared"), &claims(&idp.url));
    v.verify(&token).await.unwrap();
}

#[tokio::test]
async fn hs256_with_a_configured_secret() {
    let iss = "ci-signer";
    let v = verifier(vec![hs_issuer_config(iss, "HS_SECRET")], clock());
    let key = Signer::Hmac(HS_SECRET.as_bytes().to_vec());
    let token = sign(&key, "HS256", None, &claims(iss));
    let ok = v.verify(&token).await.unwrap();
    assert_eq!(ok.algorithm, Algorithm::HS256);
    assert_eq!(ok.key_id, None);
    // No network involved: the cache-only path accepts it too.
    v.verify_cached(&token).unwrap();

    // HS384/HS512 need a longer secret; with one, all three are accepted.
    let v = verifier(vec![hs_issuer_config(iss, "HS_SECRET_LONG")], clock());
    let key = Signer::Hmac(HS_SECRET_LONG.as_bytes().to_vec());
    for alg in ["HS256", "HS384", "HS512"] {
        let token = sign(&key, alg, Some("any-kid"), &claims(iss));
        v.verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
    }
}

#[tokio::test]
async fn groups_from_a_nested_claim_path_with_mapping() {
    let key = Signer::ec256();
    let idp = Idp::start(json!({"keys": [key.jwk("k")]}));
    let mut cfg = idp.config();
    cfg.groups_claim = ClaimPath::Dotted("resource_access.tollgate.roles".into());
    cfg.group_map
        .insert("db-admin".into(), vec!["dba".into(), "on-call".into()]);
    cfg.group_map.insert("offline_access".into(), vec![]);
    let v = verifier(vec![cfg.clone()], clock());
    let mut c = claims(&idp.url);
    c["resource_access"] = json!({
        "tollgate": {"roles": ["db-admin", "offline_access", "readers"]},
        "other": {"roles": ["root"]},
    });
    let token = sign(&key, "ES256", Some("k"), &c);
    let ok = v.verify(&token).await.unwrap();
    assert_eq!(ok.groups, vec!["dba", "on-call", "readers"]);

    // Unmapped groups dropped.
    cfg.unmapped_groups = UnmappedGroups::Drop;
    let v = verifier(vec![cfg.clone()], clock());
    assert_eq!(
        v.verify(&token).await.unwrap().groups,
        vec!["dba", "on-call"]
    );

    // Segments for a client id holding dots; a single string value.
    cfg.groups_claim = ClaimPath::Segments(vec![
        "resource_access".into(),
        "my.client".into(),
        "roles".into(),
    ]);
    cfg.unmapped_groups = UnmappedGroups::Keep;
    let v = verifier(vec![cfg], clock());
    c["resource_access"] = json!({"my.client": {"roles": "db-admin"}});
    let token = sign(&key, "ES256", Some("k"), &c);
    assert_eq!(
        v.verify(&token).await.unwrap().groups,
        vec!["dba", "on-call"]
    );
}

#[tokio::test]
async fn two_issuers_at_once() {
    let company_key = Signer::rsa_a();
    let ci_key = Signer::ed25519();
    let company = Idp::start(json!({"keys": [company_key.jwk("c1")]}));
    let ci = Idp::start(json!({"keys": [ci_key.jwk("ci1")]}));
    let mut ci_cfg = ci.config();
    ci_cfg.kind = KindRule::Service;
    ci_cfg.subject_prefix = "ci:".into();
    ci_cfg.audiences = vec!["https://tollgate.example".into()];
    let shared = hs_issuer_config("internal-signer", "HS_SECRET");
    let mut shared = shared;
    shared.subject_prefix = "int:".into();
    let v = verifier(vec![company.config(), ci_cfg, shared], clock());
    assert_eq!(
        v.issuers().collect::<Vec<_>>(),
        vec![company.url.as_str(), ci.url.as_str(), "internal-signer"]
    );

    let person = v
        .verify(&sign(
            &company_key,
            "RS256",
            Some("c1"),
            &claims(&company.url),
        ))
        .await
        .unwrap();
    assert_eq!(
        (person.principal.as_str(), person.kind),
        ("alice", IdentityKind::Human)
    );

    let mut c = claims(&ci.url);
    c["sub"] = json!("repo:acme/app:ref:refs/heads/main");
    c["aud"] = json!("https://tollgate.example");
    let job = v
        .verify(&sign(&ci_key, "EdDSA", Some("ci1"), &c))
        .await
        .unwrap();
    assert_eq!(job.principal, "ci:repo:acme/app:ref:refs/heads/main");
    assert_eq!(job.kind, IdentityKind::Service);
    assert_eq!(job.issuer, ci.url);

    let hs = Signer::Hmac(HS_SECRET.as_bytes().to_vec());
    let internal = v
        .verify(&sign(&hs, "HS256", None, &claims("internal-signer")))
        .await
        .unwrap();
    assert_eq!(internal.principal, "int:alice");

    // Each issuer fetched its own keys once; the CI key does not verify company tokens.
    assert_eq!((company.jwks_hits(), ci.jwks_hits()), (1, 1));
    let forged = sign(&ci_key, "EdDSA", Some("ci1"), &claims(&company.url));
    assert!(v.verify(&forged).await.is_err());
}

#[tokio::test]
async fn client_id_or_azp_accepted_in_place_of_aud() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("k")]}));
    let mut cfg = idp.config();
    cfg.client_ids = vec!["tollgate-cli".into()];
    let v = verifier(vec![cfg], clock());
    let mut c = claims(&idp.url);
    c["aud"] = json!("account");
    c["azp"] = json!("tollgate-cli");
    let ok = v.verify(&sign(&key, "RS256", Some("k"), &c)).await.unwrap();
    assert_eq!(ok.client_id.as_deref(), Some("tollgate-cli"));

    let mut c = claims(&idp.url);
    c.as_object_mut().unwrap().remove("aud");
    c["client_id"] = json!("tollgate-cli");
    v.verify(&sign(&key, "RS256", Some("k"), &c)).await.unwrap();
}

#[tokio::test]
async fn service_kinds() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("k")]}));
    let v = verifier(vec![idp.config()], clock());
    // Auto: a client-credentials token (Auth0 style), a token whose client is its subject,
    // a token without email.
    for (extra, kind) in [
        (json!({"gty": "client-credentials"}), IdentityKind::Service),
        (json!({"azp": "alice"}), IdentityKind::Service),
        (json!({"email": null}), IdentityKind::Service),
        (json!({}), IdentityKind::Human),
    ] {
        let mut c = claims(&idp.url);
        for (k, val) in extra.as_object().unwrap() {
            if val.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = val.clone();
            }
        }
        let ok = v.verify(&sign(&key, "RS256", Some("k"), &c)).await.unwrap();
        assert_eq!(ok.kind, kind, "{extra}");
    }

    // Claim rule.
    let mut cfg = idp.config();
    cfg.kind = KindRule::Claim;
    cfg.service_claim = Some(ClaimPath::Dotted("ext.machine".into()));
    cfg.service_values = vec!["true".into()];
    let v = verifier(vec![cfg], clock());
    let mut c = claims(&idp.url);
    c["ext"] = json!({"machine": true});
    assert_eq!(
        v.verify(&sign(&key, "RS256", Some("k"), &c))
            .await
            .unwrap()
            .kind,
        IdentityKind::Service
    );
    c["ext"] = json!({"machine": false});
    assert_eq!(
        v.verify(&sign(&key, "RS256", Some("k"), &c))
            .await
            .unwrap()
            .kind,
        IdentityKind::Human
    );
}

#[tokio::test]
async fn token_without_kid_uses_the_only_fitting_key() {
    let rsa = Signer::rsa_a();
    let ec = Signer::ec256();
    let idp = Idp::start(json!({"keys": [rsa.jwk("r"), ec.jwk("e")]}));
    let v = verifier(vec![idp.config()], clock());
    v.verify(&sign(&rsa, "RS256", None, &claims(&idp.url)))
        .await
        .unwrap();
    v.verify(&sign(&ec, "ES256", None, &claims(&idp.url)))
        .await
        .unwrap();
}

#[tokio::test]
async fn leeway_and_fractional_dates() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("k")]}));
    let v = verifier(vec![idp.config()], clock());
    // Expired 30 s ago: within the 60 s leeway.
    let mut c = claims(&idp.url);
    c["exp"] = json!(NOW_SECS - 30);
    c["iat"] = json!(NOW_SECS - 600);
    v.verify(&sign(&key, "RS256", Some("k"), &c)).await.unwrap();
    // Issued 30 s in the future, valid from 59.5 s from now (a fractional NumericDate).
    let mut c = claims(&idp.url);
    c["iat"] = json!(NOW_SECS + 30);
    c["nbf"] = json!(NOW_SECS as f64 + 59.5);
    v.verify(&sign(&key, "RS256", Some("k"), &c)).await.unwrap();
}

#[tokio::test]
async fn refresh_warms_the_cache_for_the_cache_only_path() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("k")]}));
    let v = verifier(vec![idp.config()], clock());
    let token = sign(&key, "RS256", Some("k"), &claims(&idp.url));
    assert!(v.verify_cached(&token).is_err());
    assert!(v.refresh().await.is_empty());
    v.verify_cached(&token).unwrap();
    let status = v.key_status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].kids, vec!["k"]);
    assert_eq!(status[0].fetches, 1);
    assert_eq!(status[0].fetched_at, Some(NOW_SECS * 1_000_000));
    assert_eq!(
        status[0].usable_until,
        Some((NOW_SECS + 86_400) * 1_000_000)
    );
}

#[test]
fn config_from_toml() {
    #[derive(serde::Deserialize)]
    struct Root {
        oidc: OidcConfig,
    }
    let text = r#"
        [oidc]
        http_timeout_secs = 5

        [[oidc.issuers]]
        issuer = "https://idp.example.com/realms/main"
        audiences = ["tollgate"]
        client_ids = ["tollgate-cli"]
        groups_claim = "realm_access.roles"
        group_map = { "db-admins" = ["dba"], "staff" = [] }
        unmapped_groups = "drop"
        leeway_secs = 30
        jwks_refresh_min_secs = 60
        grace_secs = 3600

        [[oidc.issuers]]
        issuer = "https://token.actions.githubusercontent.com"
        audiences = ["https://tollgate.example.com"]
        kind = "service"
        subject_prefix = "gha:"
        groups_claim = ["repository_owner"]
        algorithms = ["RS256"]

        [[oidc.issuers]]
        issuer = "ci-signer"
        audiences = ["tollgate"]
        hs_secret_env = "HS_SECRET"
        subject_prefix = "ci:"
        kind = "claim"
        service_claim = "machine"
        service_values = ["true"]
    "#;
    let root: Root = toml::from_str(text).unwrap();
    assert_eq!(root.oidc.issuers.len(), 3);
    assert_eq!(root.oidc.issuers[0].unmapped_groups, UnmappedGroups::Drop);
    assert_eq!(
        root.oidc.issuers[1].groups_claim,
        ClaimPath::Segments(vec!["repository_owner".into()])
    );
    let env = |name: &str| (name == "HS_SECRET").then(|| HS_SECRET.to_owned());
    let v = Verifier::with_env(&root.oidc, &env, clock()).unwrap();
    assert_eq!(v.issuers().count(), 3);
}
