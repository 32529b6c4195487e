#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The key cache against a local identity provider: refetch on unknown `kid` within a rate
//! limit, single flight, grace period while the provider is down, rotation, discovery checks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tollgate_oidc::OidcError;

const INVALID: &str = "invalid token";
const UNAVAILABLE: &str = "identity provider unavailable";

/// Claims valid for three days from the test clock's start.
fn long_claims(issuer: &str) -> Value {
    let mut c = claims(issuer);
    c["exp"] = json!(NOW_SECS + 3 * 86_400);
    c
}

#[tokio::test]
async fn unknown_kid_refetches_once_then_the_rate_limit_holds() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("k1")]}));
    let clk = clock();
    let v = verifier(vec![idp.config()], clk.clone());
    v.verify(&sign(&key, "RS256", Some("k1"), &claims(&idp.url)))
        .await
        .unwrap();
    assert_eq!(idp.jwks_hits(), 1);
    // Within 30 s of that fetch, even a first unknown kid does not fetch again.
    let token = sign(&key, "RS256", Some("early"), &claims(&idp.url));
    assert_refused!(
        v.verify(&token).await,
        OidcError::UnknownKey { .. },
        INVALID
    );
    assert_eq!(idp.jwks_hits(), 1);
    clk.advance_secs(30);

    // First unknown kid after the window: one refetch, then refused.
    let token = sign(&key, "RS256", Some("random-0"), &claims(&idp.url));
    let e = assert_refused!(
        v.verify(&token).await,
        OidcError::UnknownKey { .. },
        INVALID
    );
    assert!(e.to_string().contains("random-0"), "{e}");
    assert_eq!(idp.jwks_hits(), 2);

    // A flood of other unknown kids within the window: no more fetches.
    for i in 1..200 {
        let token = sign(
            &key,
            "RS256",
            Some(&format!("random-{i}")),
            &claims(&idp.url),
        );
        assert_refused!(
            v.verify(&token).await,
            OidcError::UnknownKey { .. },
            INVALID
        );
    }
    assert_eq!(idp.jwks_hits(), 2);
    // The cache-only path never fetches.
    assert_refused!(
        v.verify_cached(&token),
        OidcError::UnknownKey { .. },
        INVALID
    );
    assert_eq!(idp.jwks_hits(), 2);

    // After the window, the next unknown kid may refetch once more.
    clk.advance_secs(29);
    let token = sign(&key, "RS256", Some("random-x"), &claims(&idp.url));
    assert_refused!(
        v.verify(&token).await,
        OidcError::UnknownKey { .. },
        INVALID
    );
    assert_eq!(idp.jwks_hits(), 2);
    clk.advance_secs(1);
    assert_refused!(
        v.verify(&token).await,
        OidcError::UnknownKey { .. },
        INVALID
    );
    assert_eq!(idp.jwks_hits(), 3);
    // Known keys kept working throughout, without fetches.
    v.verify(&sign(&key, "RS256", Some("k1"), &claims(&idp.url)))
        .await
        .unwrap();
    assert_eq!(idp.jwks_hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_fetch() {
    let key = Signer::ec256();
    let idp = Idp::start(json!({"keys": [key.jwk("k1")]}));
    idp.state.lock().unwrap().jwks_delay = Duration::from_millis(300);
    let clk = clock();
    let v = Arc::new(verifier(vec![idp.config()], clk.clone()));

    // Cold cache: 16 tokens at once, one discovery and one JWKS request.
    let token = sign(&key, "ES256", Some("k1"), &claims(&idp.url));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let v = v.clone();
            let token = token.clone();
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1));

    // 16 different unknown kids at once: one refetch between them.
    clk.advance_secs(31);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let v = v.clone();
            let token = sign(&key, "ES256", Some(&format!("nope-{i}")), &claims(&idp.url));
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for t in tasks {
        assert_refused!(t.await.unwrap(), OidcError::UnknownKey { .. }, INVALID);
    }
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn provider_down_cached_keys_work_within_grace_then_fail_closed() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("k1")]}));
    let clk = clock();
    let v = verifier(vec![idp.config()], clk.clone());
    let token = sign(&key, "RS256", Some("k1"), &long_claims(&idp.url));
    v.verify(&token).await.unwrap();
    assert_eq!(v.key_status()[0].fetches, 1);

    idp.set_down(true);
    // Stale (past the 10 min TTL): a refresh is tried, fails, the cached key still verifies.
    clk.advance_secs(11 * 60);
    v.verify(&token).await.unwrap();
    let status = &v.key_status()[0];
    assert_eq!(status.fetches, 2);
    assert!(
        status.last_error.as_deref().unwrap().contains("503"),
        "{status:?}"
    );
    // Within the rate limit, no further attempt.
    v.verify(&token).await.unwrap();
    assert_eq!(v.key_status()[0].fetches, 2);
    v.verify_cached(&token).unwrap();

    // Just before 24 h after the last successful fetch: still accepted.
    clk.set((NOW_SECS + 86_400 - 1) * 1_000_000);
    v.verify(&token).await.unwrap();
    v.verify_cached(&token).unwrap();
    // After: refused, fail closed, with a transient error.
    clk.set((NOW_SECS + 86_400) * 1_000_000);
    let e = assert_refused!(
        v.verify(&token).await,
        OidcError::KeysUnavailable { .. },
        UNAVAILABLE
    );
    assert!(e.is_transient());
    assert!(e.to_string().contains("grace"), "{e}");
    assert_refused!(
        v.verify_cached(&token),
        OidcError::KeysUnavailable { .. },
        UNAVAILABLE
    );

    // The provider comes back: the next allowed fetch restores service.
    idp.set_down(false);
    clk.advance_secs(30);
    v.verify(&token).await.unwrap();
}

#[tokio::test]
async fn provider_down_from_the_start() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("k1")]}));
    idp.set_down(true);
    let clk = clock();
    let v = verifier(vec![idp.config()], clk.clone());
    let token = sign(&key, "RS256", Some("k1"), &claims(&idp.url));
    let e = assert_refused!(
        v.verify(&token).await,
        OidcError::KeysUnavailable { .. },
        UNAVAILABLE
    );
    assert!(e.to_string().contains("503"), "{e}");
    // Failures are rate limited too: no storm against a provider that is down.
    for _ in 0..50 {
        assert_refused!(
            v.verify(&token).await,
            OidcError::KeysUnavailable { .. },
            UNAVAILABLE
        );
    }
    assert_eq!(v.key_status()[0].fetches, 1);
    let errors = v.refresh().await;
    assert!(
        errors.is_empty(),
        "rate limited, so nothing ran: {errors:?}"
    );

    idp.set_down(false);
    clk.advance_secs(30);
    v.verify(&token).await.unwrap();
    assert_eq!(v.key_status()[0].fetches, 2);
}

#[tokio::test]
async fn key_rotation() {
    let old = Signer::rsa_a();
    let new = Signer::ec256();
    let idp = Idp::start(json!({"keys": [old.jwk("old")]}));
    let clk = clock();
    let v = verifier(vec![idp.config()], clk.clone());
    let old_token = sign(&old, "RS256", Some("old"), &long_claims(&idp.url));
    let new_token = sign(&new, "ES256", Some("new"), &long_claims(&idp.url));
    v.verify(&old_token).await.unwrap();

    // Overlap: the provider publishes both; the new kid triggers a refetch.
    idp.set_jwks(json!({"keys": [old.jwk("old"), new.jwk("new")]}));
    clk.advance_secs(31);
    v.verify(&new_token).await.unwrap();
    v.verify(&old_token).await.unwrap();
    assert_eq!(idp.jwks_hits(), 2);

    // The old key is withdrawn: once the set is stale and refetched, it stops verifying.
    idp.set_jwks(json!({"keys": [new.jwk("new")]}));
    clk.advance_secs(5 * 60);
    v.verify(&old_token).await.unwrap(); // still fresh: cached set
    clk.advance_secs(6 * 60);
    let e = assert_refused!(
        v.verify(&old_token).await,
        OidcError::UnknownKey { .. },
        INVALID
    );
    assert!(e.to_string().contains("old"), "{e}");
    assert_eq!(idp.jwks_hits(), 3);
    v.verify(&new_token).await.unwrap();
    v.verify_cached(&new_token).unwrap();
    assert_refused!(
        v.verify_cached(&old_token),
        OidcError::UnknownKey { .. },
        INVALID
    );

    // Withdrawn and replaced at once (no overlap): the unknown new kid fetches the new set,
    // after which the old key is gone.
    let newer = Signer::ed25519();
    idp.set_jwks(json!({"keys": [newer.jwk("newer")]}));
    clk.advance_secs(31);
    let newer_token = sign(&newer, "EdDSA", Some("newer"), &long_claims(&idp.url));
    v.verify(&newer_token).await.unwrap();
    assert_refused!(
        v.verify(&new_token).await,
        OidcError::UnknownKey { .. },
        INVALID
    );
}

#[tokio::test]
async fn cache_control_max_age_is_honoured_within_bounds() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("k1")]}));
    idp.state.lock().unwrap().cache_control = Some("public, max-age=3600".into());
    let clk = clock();
    let v = verifier(vec![idp.config()], clk.clone());
    let token = sign(&key, "RS256", Some("k1"), &long_claims(&idp.url));
    v.verify(&token).await.unwrap();
    clk.advance_secs(59 * 60);
    v.verify(&token).await.unwrap();
    assert_eq!(idp.jwks_hits(), 1, "fresh for an hour");
    clk.advance_secs(60);
    v.verify(&token).await.unwrap();
    assert_eq!(idp.jwks_hits(), 2, "stale after an hour");

    // max-age=5 is raised to the 60 s floor.
    idp.state.lock().unwrap().cache_control = Some("max-age=5".into());
    clk.advance_secs(3600);
    v.verify(&token).await.unwrap();
    assert_eq!(idp.jwks_hits(), 3);
    clk.advance_secs(59);
    v.verify(&token).await.unwrap();
    assert_eq!(idp.jwks_hits(), 3);
    clk.advance_secs(1);
    v.verify(&token).await.unwrap();
    assert_eq!(idp.jwks_hits(), 4);

    // refresh_stale fetches only what is stale.
    assert!(v.refresh_stale().await.is_empty());
    assert_eq!(idp.jwks_hits(), 4);
    clk.advance_secs(61);
    assert!(v.refresh_stale().await.is_empty());
    assert_eq!(idp.jwks_hits(), 5);
}

#[tokio::test]
async fn a_key_set_without_usable_keys_does_not_replace_the_cache() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("k1")]}));
    let clk = clock();
    let v = verifier(vec![idp.config()], clk.clone());
    let token = sign(&key, "RS256", Some("k1"), &long_claims(&idp.url));
    v.verify(&token).await.unwrap();
    for body in [
        json!({"keys": []}),
        json!({"keys": [{"kty": "oct", "k": "AAAA"}]}),
        json!({"nokeys": 1}),
    ] {
        idp.set_jwks(body);
        clk.advance_secs(11 * 60);
        v.verify(&token).await.unwrap();
        let status = &v.key_status()[0];
        assert!(status.last_error.is_some(), "{status:?}");
        assert_eq!(status.kids, vec!["k1"]);
    }
    idp.state.lock().unwrap().jwks_raw = Some("{\"keys\":[".into());
    clk.advance_secs(11 * 60);
    v.verify(&token).await.unwrap();
    // Oversized documents are refused.
    idp.state.lock().unwrap().jwks_raw = Some(format!(
        "{{\"keys\":[],\"x\":\"{}\"}}",
        "a".repeat(600 * 1024)
    ));
    clk.advance_secs(11 * 60);
    v.verify(&token).await.unwrap();
    let status = &v.key_status()[0];
    assert!(
        status.last_error.as_deref().unwrap().contains("512 KiB"),
        "{status:?}"
    );
}

#[tokio::test]
async fn discovery_document_must_name_the_configured_issuer() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("k1")]}));
    idp.state.lock().unwrap().doc_issuer = Some("https://evil.example".into());
    let v = verifier(vec![idp.config()], clock());
    let errors = v.refresh().await;
    assert!(
        matches!(
            errors.as_slice(),
            [OidcError::DiscoveryIssuerMismatch { .. }]
        ),
        "{errors:?}"
    );
    assert_eq!(errors[0].public_message(), UNAVAILABLE);
    assert_eq!(
        idp.jwks_hits(),
        0,
        "the JWKS of a mismatched document is never read"
    );
    let token = sign(&key, "RS256", Some("k1"), &claims(&idp.url));
    let e = assert_refused!(
        v.verify(&token).await,
        OidcError::KeysUnavailable { .. },
        UNAVAILABLE
    );
    assert!(e.to_string().contains("evil.example"), "{e}");
}

#[tokio::test]
async fn discovered_jwks_uri_must_be_https_or_loopback() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("k1")]}));
    idp.state.lock().unwrap().jwks_uri = Some("http://keys.example.com/jwks".into());
    let v = verifier(vec![idp.config()], clock());
    let errors = v.refresh().await;
    assert!(
        matches!(&errors[..], [OidcError::Fetch { reason, .. }] if reason.contains("not https")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn jwks_url_and_discovery_url_overrides() {
    let key = Signer::rsa_a();
    let idp = Idp::start(json!({"keys": [key.jwk("k1")]}));
    let token = sign(&key, "RS256", Some("k1"), &claims(&idp.url));

    let mut cfg = idp.config();
    cfg.jwks_url = Some(format!("{}/jwks", idp.url));
    let v = verifier(vec![cfg], clock());
    v.verify(&token).await.unwrap();
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (0, 1));

    // The issuer identifier need not be a URL when discovery_url is given.
    let mut cfg = issuer_config("urn:example:issuer");
    cfg.discovery_url = Some(format!("{}/.well-known/openid-configuration", idp.url));
    idp.state.lock().unwrap().doc_issuer = Some("urn:example:issuer".into());
    let v = verifier(vec![cfg], clock());
    let token = sign(&key, "RS256", Some("k1"), &claims("urn:example:issuer"));
    v.verify(&token).await.unwrap();
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 2));
}
