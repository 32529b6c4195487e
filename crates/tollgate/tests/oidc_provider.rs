//! The OIDC test provider itself (`scripts/oidc-provider`, driven by `common::oidc`): the tokens,
//! flows and key changes the gateway's OIDC tests rely on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::oidc::*;
use serde_json::json;

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn client_credentials_tokens_are_jwts_with_issuer_audience_and_groups() {
    let idp = OidcProvider::start(OidcOptions::default());
    let token = idp.client_credentials_token(AGENT_CLIENT, AGENT_SECRET, None);
    let (header, claims) = decode_jwt(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"].as_str().unwrap(), idp.kids()[0]);
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["sub"], AGENT_CLIENT);
    assert_eq!(claims["client_id"], AGENT_CLIENT);
    assert_eq!(strings(&claims["groups"]), AGENT_GROUPS);
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!((iat - now_secs()).abs() < 30, "iat {iat}");
    assert_eq!(exp - iat, 300);

    // Another resource gives another audience; an unknown one and a wrong secret are refused.
    let other = idp.client_credentials_token(AGENT_CLIENT, AGENT_SECRET, Some(OTHER_RESOURCE));
    assert_eq!(decode_jwt(&other).1["aud"], OTHER_AUDIENCE);
    let (status, body) = idp
        .try_client_credentials(AGENT_CLIENT, AGENT_SECRET, Some("urn:nowhere"))
        .unwrap_err();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target"))
    );
    let (status, body) = idp
        .try_client_credentials(AGENT_CLIENT, "wrong", None)
        .unwrap_err();
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
}

#[test]
fn machine_clients_lifetimes_and_group_claim_paths_are_configurable() {
    let idp = OidcProvider::start(
        OidcOptions::default()
            .access_token_ttl(2)
            .groups_claim("realm_access.roles")
            .machine_client(MachineClient::new("ci-job", "ci-secret", &["ci", "deploy"])),
    );
    let tokens = idp
        .try_client_credentials("ci-job", "ci-secret", None)
        .unwrap();
    assert_eq!(tokens.expires_in, Some(2));
    let (_, claims) = decode_jwt(&tokens.access_token);
    assert_eq!(claims["sub"], "ci-job");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        2
    );
    assert_eq!(strings(&claims["realm_access"]["roles"]), ["ci", "deploy"]);
    assert!(claims.get("groups").is_none());
}

#[test]
fn code_and_pkce_login_gives_an_id_token_with_the_persons_groups() {
    let idp = OidcProvider::start(OidcOptions::default());
    let tokens = idp.login_cli("alice", "alice-pass");

    let (header, id) = decode_jwt(tokens.id_token.as_deref().expect("an ID token"));
    assert_eq!(header["kid"].as_str().unwrap(), idp.kids()[0]);
    assert_eq!(id["iss"], idp.issuer());
    assert_eq!(id["aud"], CLI_CLIENT);
    assert_eq!(id["sub"], "alice");
    assert_eq!(id["email"], "alice@example.test");
    assert_eq!(strings(&id["groups"]), ["eng", "db-admins"]);

    // The access token is a JWT for the gateway, with the same groups.
    let (_, at) = decode_jwt(&tokens.access_token);
    assert_eq!(at["aud"], AUDIENCE);
    assert_eq!(at["sub"], "alice");
    assert_eq!(at["client_id"], CLI_CLIENT);
    assert_eq!(strings(&at["groups"]), ["eng", "db-admins"]);

    // offline_access gives a refresh token, which works.
    let refresh = tokens.refresh_token.expect("a refresh token");
    let again = idp.refresh(CLI_CLIENT, None, &refresh).unwrap();
    assert_eq!(decode_jwt(&again.access_token).1["sub"], "alice");

    // A wrong password stays on the login form.
    let pkce = Pkce::new();
    let url = idp.authorize_url(
        CLI_CLIENT,
        "http://127.0.0.1:9/callback",
        PERSON_SCOPES,
        &pkce,
        "s1",
    );
    let err = idp.try_browser_login(&url, "alice", "nope").unwrap_err();
    assert!(err.contains("invalid login or password"), "{err}");

    // The code is bound to its verifier.
    let back = idp.browser_login(&url, "bob", "bob-pass");
    let code = query_param(&back, "code").unwrap();
    assert_eq!(query_param(&back, "iss").unwrap(), idp.issuer());
    let (status, body) = idp
        .try_exchange_code(
            CLI_CLIENT,
            None,
            &code,
            "http://127.0.0.1:9/callback",
            &Pkce::new().verifier,
        )
        .unwrap_err();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[test]
fn the_cli_client_needs_pkce_and_a_loopback_redirect() {
    let idp = OidcProvider::start(OidcOptions::default());
    // Without a code challenge the provider redirects back with an error.
    let url = format!(
        "{}?response_type=code&client_id={CLI_CLIENT}&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&scope=openid",
        idp.url("/auth")
    );
    let back = idp.try_browser_login(&url, "alice", "alice-pass").unwrap();
    assert_eq!(
        query_param(&back, "error").as_deref(),
        Some("invalid_request")
    );
    // A redirect URI that is not registered is refused on the provider's own page.
    let url = idp.authorize_url(
        CLI_CLIENT,
        "http://127.0.0.1:9/elsewhere",
        "openid",
        &Pkce::new(),
        "s",
    );
    let err = idp
        .try_browser_login(&url, "alice", "alice-pass")
        .unwrap_err();
    assert!(err.contains("redirect_uri"), "{err}");
}

#[test]
fn the_web_client_logs_in_with_its_secret() {
    let idp = OidcProvider::start(OidcOptions::default());
    let redirect = format!("http://127.0.0.1:{}/oidc/callback", common::free_port());
    let pkce = Pkce::new();
    let url = idp.authorize_url(WEB_CLIENT, &redirect, "openid groups", &pkce, "w");
    let back = idp.browser_login(&url, "bob", "bob-pass");
    assert!(back.starts_with(&redirect), "{back}");
    let code = query_param(&back, "code").unwrap();
    let tokens = idp.exchange_code(
        WEB_CLIENT,
        Some(WEB_SECRET),
        &code,
        &redirect,
        &pkce.verifier,
    );
    let (_, id) = decode_jwt(tokens.id_token.as_deref().unwrap());
    assert_eq!(id["aud"], WEB_CLIENT);
    assert_eq!(strings(&id["groups"]), ["sales"]);
}

#[test]
fn the_device_flow_completes_for_bob() {
    let idp = OidcProvider::start(OidcOptions::default());
    let device = idp.device_authorization(CLI_CLIENT, PERSON_SCOPES);
    assert!(device.verification_uri.starts_with(&idp.issuer()));
    assert!(!device.user_code.is_empty());
    assert_eq!(
        idp.poll_device_token(CLI_CLIENT, &device.device_code)
            .unwrap_err(),
        "authorization_pending"
    );

    idp.device_approve(
        &device.verification_uri,
        &device.user_code,
        "bob",
        "bob-pass",
    );
    let tokens = idp.device_token(CLI_CLIENT, &device.device_code);
    let (_, id) = decode_jwt(tokens.id_token.as_deref().unwrap());
    assert_eq!(id["sub"], "bob");
    assert_eq!(id["aud"], CLI_CLIENT);
    assert_eq!(strings(&id["groups"]), ["sales"]);
    let (_, at) = decode_jwt(&tokens.access_token);
    assert_eq!(at["aud"], AUDIENCE);
    assert_eq!(strings(&at["groups"]), ["sales"]);
    assert!(tokens.refresh_token.is_some());
}

#[test]
fn discovery_and_jwks_are_served() {
    let idp = OidcProvider::start(OidcOptions::default());
    let d = idp.discovery();
    assert_eq!(d["issuer"], idp.issuer());
    assert_eq!(d["jwks_uri"], idp.url("/jwks"));
    assert_eq!(d["token_endpoint"], idp.url("/token"));
    assert_eq!(d["device_authorization_endpoint"], idp.url("/device/auth"));
    let grants = strings(&d["grant_types_supported"]);
    for g in [
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:device_code",
    ] {
        assert!(grants.iter().any(|x| x == g), "{g} in {grants:?}");
    }
    assert_eq!(strings(&d["code_challenge_methods_supported"]), ["S256"]);
    assert!(strings(&d["scopes_supported"]).contains(&"groups".to_string()));

    let jwks = idp.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "RSA");
    assert_eq!(keys[0]["alg"], "RS256");
    assert!(keys[0].get("d").is_none(), "private parts published");
    assert_eq!(
        idp.private_jwks()["keys"][0]["kid"],
        keys[0]["kid"],
        "the key file is what is served"
    );
}

#[test]
fn restarts_keep_keys_and_rotation_changes_the_kid() {
    let mut idp = OidcProvider::start(OidcOptions::default());
    let issuer = idp.issuer();
    let first = idp.kids();

    // Down: nothing listens; back up: same issuer, same keys.
    idp.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", idp.port())).is_err());
    idp.restart();
    assert_eq!(idp.issuer(), issuer);
    assert_eq!(idp.kids(), first);

    // A new key set: another kid signs.
    idp.rotate_keys(None);
    assert_eq!(idp.issuer(), issuer);
    let second = idp.kids();
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    let token = idp.client_credentials_token(AGENT_CLIENT, AGENT_SECRET, None);
    assert_eq!(decode_jwt(&token).0["kid"].as_str().unwrap(), second[0]);

    // Two keys served (new first, old kept for verification); the first signs.
    let mut both = OidcProvider::generate_jwks(&["ES256"]);
    let old = idp.private_jwks()["keys"][0].clone();
    both["keys"].as_array_mut().unwrap().push(old);
    idp.rotate_keys(Some(both.clone()));
    let kids = idp.kids();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[0], both["keys"][0]["kid"].as_str().unwrap());
    assert_eq!(kids[1], second[0]);
    let token = idp.client_credentials_token(AGENT_CLIENT, AGENT_SECRET, None);
    let (header, _) = decode_jwt(&token);
    assert_eq!(header["kid"].as_str().unwrap(), kids[0]);
    assert_eq!(header["alg"], "ES256");
}

#[test]
fn es256_and_eddsa_keys_sign_id_and_access_tokens() {
    for alg in ["ES256", "EdDSA"] {
        let idp = OidcProvider::start(OidcOptions::default().algs(&[alg]));
        let token = idp.client_credentials_token(AGENT_CLIENT, AGENT_SECRET, None);
        assert_eq!(decode_jwt(&token).0["alg"], alg);
        let tokens = idp.login_cli("alice", "alice-pass");
        assert_eq!(
            decode_jwt(tokens.id_token.as_deref().unwrap()).0["alg"],
            alg
        );
        let kty = &idp.jwks()["keys"][0]["kty"];
        assert_eq!(kty, if alg == "ES256" { "EC" } else { "OKP" });
    }
}

#[test]
fn the_sign_endpoint_makes_tokens_no_flow_gives() {
    let idp = OidcProvider::start(OidcOptions::default());
    let kid = idp.kids()[0].clone();

    let expired =
        idp.sign(json!({ "payload": idp.machine_claims(AGENT_CLIENT, AGENT_GROUPS, -120) }));
    let (header, claims) = decode_jwt(&expired);
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("RS256"), Some(kid.as_str()))
    );
    assert!(claims["exp"].as_i64().unwrap() < now_secs());
    assert_eq!(claims["iss"], idp.issuer());

    let unknown_kid = idp.sign(json!({ "payload": {"sub": "x"}, "header": {"kid": "nobody"} }));
    assert_eq!(decode_jwt(&unknown_kid).0["kid"], "nobody");

    let hs = idp.sign(json!({
        "payload": {"sub": "x"},
        "alg": "HS256",
        "hmac_key_b64url": b64url(b"the public key bytes"),
    }));
    let (header, _) = decode_jwt(&hs);
    assert_eq!(header["alg"], "HS256");
    assert!(header.get("kid").is_none());
    assert_eq!(hs.split('.').nth(2).unwrap().len(), 43, "a 32-byte MAC");

    let none = idp.sign(json!({ "payload": {"sub": "x"}, "alg": "none" }));
    assert!(none.ends_with('.'));
}
