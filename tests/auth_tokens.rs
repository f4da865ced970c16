//! The token flow of an auth-enabled registry: challenges, the `/token` responses against
//! the Docker token specification's field list (GET and the OAuth2 POST), refresh tokens,
//! and every kind of bad token the `/v2` guard must refuse.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::auth::*;
use common::oci::*;
use common::StorePair;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn registry_with_alice(stores: StorePair) -> AuthRegistry {
    let registry = start_auth_registry(stores).await;
    registry.add_user("alice", PASSWORD, false).await;
    registry.grant("alice", "team/*", "pull,push").await;
    registry
}

/// Parses `Bearer k="v",k="v"` into pairs.
fn challenge(response: &reqwest::Response) -> Vec<(String, String)> {
    let value = header(response, "www-authenticate");
    let params = value.strip_prefix("Bearer ").expect("a Bearer challenge");
    params
        .split("\",")
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

fn get_param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

common::on_each_store_pair!(requests_without_a_token_get_a_challenge_naming_the_scope);
async fn requests_without_a_token_get_a_challenge_naming_the_scope(stores: StorePair) {
    let registry = registry_with_alice(stores).await;
    let anonymous = Oci::new(registry.base());
    let realm = format!("{}/token", registry.base());
    let cases = [
        (reqwest::Method::GET, "/v2/".to_owned(), None),
        (
            reqwest::Method::GET,
            "/v2/team/app/manifests/latest".to_owned(),
            Some("repository:team/app:pull"),
        ),
        (
            reqwest::Method::HEAD,
            format!("/v2/team/app/blobs/{}", unknown_digest()),
            Some("repository:team/app:pull"),
        ),
        (
            reqwest::Method::POST,
            "/v2/team/app/blobs/uploads/".to_owned(),
            Some("repository:team/app:pull,push"),
        ),
        (
            reqwest::Method::DELETE,
            "/v2/team/app/manifests/latest".to_owned(),
            Some("repository:team/app:delete"),
        ),
        (
            reqwest::Method::GET,
            "/v2/_catalog".to_owned(),
            Some("registry:catalog:*"),
        ),
    ];
    for (method, path, scope) in cases {
        let response = anonymous
            .request(method.clone(), &path)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
        assert_eq!(
            header(&response, "docker-distribution-api-version"),
            "registry/2.0"
        );
        let params = challenge(&response);
        assert_eq!(get_param(&params, "realm"), Some(realm.as_str()));
        assert_eq!(get_param(&params, "service"), Some("ipfs-registry"));
        assert_eq!(get_param(&params, "scope"), scope, "{method} {path}");
        assert_eq!(get_param(&params, "error"), None);
        if method != reqwest::Method::HEAD {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
        }
    }
    // With a token, the base endpoint answers.
    let client = registry.client(Some(("alice", PASSWORD)), &[]).await;
    expect_status(client.get("/v2/").await, 200).await;
    registry.registry.server.stop().await;
}

fn assert_issued_at(body: &Value) {
    let issued_at = body["issued_at"].as_str().expect("issued_at is a string");
    let parsed = humantime::parse_rfc3339(issued_at)
        .unwrap_or_else(|e| panic!("issued_at {issued_at:?} is not RFC 3339: {e}"));
    let age = SystemTime::now()
        .duration_since(parsed)
        .unwrap_or(Duration::ZERO);
    assert!(
        age < Duration::from_secs(60),
        "issued_at {issued_at} is not now"
    );
}

common::on_each_store_pair!(get_token_responses_follow_the_specification);
async fn get_token_responses_follow_the_specification(stores: StorePair) {
    let registry = registry_with_alice(stores).await;
    let response = registry
        .token_response(
            Some(("alice", PASSWORD)),
            &["repository:team/app:pull,push", "repository:other:pull"],
            &[("offline_token", "true"), ("client_id", "test-suite")],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "cache-control"), "no-store");
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().expect("token");
    assert_eq!(body["access_token"].as_str(), Some(token));
    assert_eq!(body["expires_in"].as_u64(), Some(300));
    assert_issued_at(&body);
    assert!(
        body["refresh_token"].is_string(),
        "offline_token=true: {body}"
    );

    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert!(header.kid.is_some());
    let issued = claims(token);
    let claims = &issued;
    assert_eq!(claims["iss"], "ipfs-registry");
    assert_eq!(claims["aud"], "ipfs-registry");
    assert_eq!(claims["sub"], "alice");
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["nbf"].as_u64(), Some(iat));
    assert_eq!(claims["exp"].as_u64(), Some(iat + 300));
    // The intersection: push and pull on team/app; nothing on `other`.
    assert_eq!(
        claims["access"],
        json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}])
    );

    // Without offline_token there is no refresh token; anonymous gets a token with no access.
    let body: Value = registry
        .token_response(Some(("alice", PASSWORD)), &[], &[])
        .await
        .json()
        .await
        .unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    let anonymous = registry.token(None, &["repository:team/app:pull"]).await;
    assert_eq!(common::auth::claims(&anonymous)["sub"], "");
    assert_eq!(common::auth::claims(&anonymous)["access"], json!([]));

    // Wrong password, unknown user, other service, malformed scope.
    for (credentials, extra, status) in [
        (Some(("alice", "wrong password")), vec![], 401),
        (Some(("nobody", PASSWORD)), vec![], 401),
        (
            Some(("alice", PASSWORD)),
            vec![("service", "elsewhere")],
            400,
        ),
        (
            Some(("alice", PASSWORD)),
            vec![("scope", "repository")],
            400,
        ),
    ] {
        let mut url = url::Url::parse(&registry.registry.url("/token")).unwrap();
        url.query_pairs_mut().extend_pairs(extra.iter().copied());
        let mut request = reqwest::Client::new().get(url);
        if let Some((user, password)) = credentials {
            request = request.header("Authorization", basic(user, password));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{credentials:?} {extra:?}");
        let body: Value = response.json().await.unwrap();
        assert!(body.get("token").is_none());
    }
    registry.registry.server.stop().await;
}

async fn post_token(registry: &AuthRegistry, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(registry.registry.url("/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

common::on_each_store_pair!(oauth2_post_with_password_and_refresh_token);
async fn oauth2_post_with_password_and_refresh_token(stores: StorePair) {
    let registry = registry_with_alice(stores).await;
    let (status, body) = post_token(
        &registry,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
            ("service", "ipfs-registry"),
            ("client_id", "containerd"),
            ("access_type", "offline"),
            ("scope", "repository:team/app:pull repository:team/lib:push"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().expect("access_token");
    assert_eq!(body["token"].as_str(), Some(access));
    assert_eq!(body["expires_in"].as_u64(), Some(300));
    assert_issued_at(&body);
    assert_eq!(
        body["scope"],
        "repository:team/app:pull repository:team/lib:push"
    );
    let refresh = body["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    // A refresh token is not a registry token.
    let misuse = bearer_client(registry.base(), &refresh);
    assert_eq!(misuse.get("/v2/").await.status(), 401);

    let (status, body) = post_token(
        &registry,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", "ipfs-registry"),
            ("client_id", "containerd"),
            ("scope", "repository:team/other:pull"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(claims(token)["sub"], "alice");
    assert_eq!(
        claims(token)["access"],
        json!([{"type": "repository", "name": "team/other", "actions": ["pull"]}])
    );

    // A password change retires refresh tokens issued before it (second resolution).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ipfs_registry::auth::admin::set_password(registry.store.as_ref(), "alice", "a new password")
        .await
        .unwrap();
    let (status, _) = post_token(
        &registry,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 401, "refresh token from before the password change");
    let (status, body) = post_token(
        &registry,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "a new password"),
            ("access_type", "offline"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let (status, _) = post_token(
        &registry,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 200, "a refresh token from after the change works");

    // Wrong password, unsupported grant, and a refresh token of a removed user.
    let (status, _) = post_token(
        &registry,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "nope nope"),
        ],
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post_token(&registry, &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 400);
    ipfs_registry::auth::admin::remove_user(registry.store.as_ref(), "alice")
        .await
        .unwrap();
    let (status, _) = post_token(
        &registry,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 401, "the refresh token died with its user");
    // Re-creating the name does not revive it.
    registry.add_user("alice", PASSWORD, false).await;
    let (status, _) = post_token(
        &registry,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 401);
    registry.registry.server.stop().await;
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

common::on_each_store_pair!(bad_tokens_are_refused);
async fn bad_tokens_are_refused(stores: StorePair) {
    let registry = registry_with_alice(stores).await;
    let image = registry
        .client(
            Some(("alice", PASSWORD)),
            &["repository:team/app:pull,push"],
        )
        .await
        .push_image("team/app", Some("v1"), 1)
        .await;
    let path = format!("/v2/team/app/manifests/{}", image.manifest.digest);
    let good = registry
        .token(Some(("alice", PASSWORD)), &["repository:team/app:pull"])
        .await;
    expect_status(bearer_client(registry.base(), &good).get(&path).await, 200).await;

    let kid = jsonwebtoken::decode_header(&good).unwrap().kid.unwrap();
    let valid_claims = claims(&good);
    let real_key = EncodingKey::from_ec_pem(registry.key_pem.as_bytes()).unwrap();
    let sign = |claims: &Value, key: &EncodingKey, alg: Algorithm| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    };
    let with = |key: &str, value: Value| {
        let mut claims = valid_claims.clone();
        claims[key] = value;
        claims
    };
    // The registry's public key, as an attacker would fetch or derive it.
    let public_pem = {
        use p256::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
        p256::SecretKey::from_pkcs8_pem(&registry.key_pem)
            .unwrap()
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    };
    let [header_b64, payload_b64, signature_b64]: [&str; 3] =
        good.split('.').collect::<Vec<_>>().try_into().unwrap();

    let mut tampered_claims = valid_claims.clone();
    tampered_claims["access"][0]["name"] = json!("team/secret");
    let tampered = format!(
        "{header_b64}.{}.{signature_b64}",
        b64(&serde_json::to_vec(&tampered_claims).unwrap())
    );
    let alg_none = format!(
        "{}.{payload_b64}.",
        b64(json!({"alg": "none", "typ": "JWT", "kid": kid})
            .to_string()
            .as_bytes())
    );
    let other_key = EncodingKey::from_ec_pem(new_key_pem().as_bytes()).unwrap();
    let t = now();
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(&with("exp", json!(t - 3600)), &real_key, Algorithm::ES256),
        ),
        (
            "not yet valid",
            sign(&with("nbf", json!(t + 3600)), &real_key, Algorithm::ES256),
        ),
        (
            "wrong audience",
            sign(
                &with("aud", json!("elsewhere")),
                &real_key,
                Algorithm::ES256,
            ),
        ),
        (
            "wrong issuer",
            sign(&with("iss", json!("mallory")), &real_key, Algorithm::ES256),
        ),
        ("tampered payload", tampered),
        ("alg none", alg_none),
        (
            "HMAC keyed with the public key",
            sign(
                &valid_claims,
                &EncodingKey::from_secret(public_pem.as_bytes()),
                Algorithm::HS256,
            ),
        ),
        (
            "another key under our kid",
            sign(&valid_claims, &other_key, Algorithm::ES256),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    // The forging itself is sound: the same claims signed with the real key pass.
    let control = sign(&valid_claims, &real_key, Algorithm::ES256);
    expect_status(
        bearer_client(registry.base(), &control).get(&path).await,
        200,
    )
    .await;
    for (what, token) in cases {
        let response = bearer_client(registry.base(), &token).get(&path).await;
        assert_eq!(response.status(), 401, "{what} token must be refused");
        let params = challenge(&response);
        assert_eq!(get_param(&params, "error"), Some("invalid_token"), "{what}");
    }
    registry.registry.server.stop().await;
}

common::on_each_store_pair!(repeated_failed_logins_are_throttled);
async fn repeated_failed_logins_are_throttled(stores: StorePair) {
    let registry = registry_with_alice(stores).await;
    for _ in 0..5 {
        let response = registry
            .token_response(Some(("alice", "not the password")), &[], &[])
            .await;
        assert_eq!(response.status(), 401);
    }
    // The sixth failure starts a lockout: even the right password waits now.
    let response = registry
        .token_response(Some(("alice", "not the password")), &[], &[])
        .await;
    assert_eq!(response.status(), 401);
    let response = registry
        .token_response(Some(("alice", PASSWORD)), &[], &[])
        .await;
    assert_eq!(response.status(), 429);
    assert!(header(&response, "retry-after").parse::<u64>().unwrap() >= 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    // Anonymous tokens are not logins and are not throttled.
    registry.token(None, &[]).await;
    // After the lockout the right password works again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    registry.token(Some(("alice", PASSWORD)), &[]).await;

    // Six refused passwords and one throttled attempt failed; one login succeeded.
    let metrics = registry.registry.server.registry.metrics().encode();
    let count = |outcome: &str| {
        let series = format!("ipfs_registry_auth_total{{outcome=\"{outcome}\"}}");
        common::metric_sample(&metrics, &series)
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert_eq!(count("failure"), 7.0);
    assert_eq!(count("success"), 1.0);
    registry.registry.server.stop().await;
}

common::on_each_store_pair!(percent_encoded_paths_are_not_interpreted);
async fn percent_encoded_paths_are_not_interpreted(stores: StorePair) {
    let registry = registry_with_alice(stores).await;
    let client = registry
        .client(
            Some(("alice", PASSWORD)),
            &["repository:team/app:pull,push"],
        )
        .await;
    client.push_image("team/app", Some("v1"), 1).await;
    // `te%61m` would route as `team`; the guard refuses instead of checking another name.
    let response = client.get("/v2/te%61m/app/manifests/v1").await;
    assert_eq!(response.status(), 404);
    registry.registry.server.stop().await;
}

common::on_each_store_pair!(a_generated_key_is_kept_and_shared_by_replicas_on_one_data_dir);
async fn a_generated_key_is_kept_and_shared_by_replicas_on_one_data_dir(stores: StorePair) {
    let data_dir = tempfile::tempdir().unwrap();
    let dir = data_dir.path().to_owned();
    let first = stores
        .start_registry_with(|config| {
            config.auth.enabled = true;
            config.data_dir = dir.clone();
        })
        .await;
    let key_file = data_dir.path().join("auth/signing-key.pem");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the generated key is private");
    }
    let key = std::fs::read(&key_file).unwrap();
    // A second replica on the same database and data directory.
    let second = common::start_registry_from(first.config.clone()).await;
    assert_eq!(std::fs::read(&key_file).unwrap(), key, "not regenerated");

    let response = reqwest::get(format!("{}/token?scope=repository:x:pull", first.base))
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    expect_status(bearer_client(&second.base, token).get("/v2/").await, 200).await;
    first.server.stop().await;
    second.server.stop().await;
}

async fn login_from(registry: &AuthRegistry, user: &str, password: &str, forwarded: &str) -> u16 {
    reqwest::Client::new()
        .get(registry.registry.url("/token"))
        .header("Authorization", basic(user, password))
        .header("X-Forwarded-For", forwarded)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

common::on_each_store_pair!(client_addresses_come_from_trusted_proxies_only);
async fn client_addresses_come_from_trusted_proxies_only(stores: StorePair) {
    // Not behind a trusted proxy: X-Forwarded-For is ignored, every guess counts against
    // the one peer address whatever it claims.
    let registry = registry_with_alice(stores).await;
    for i in 0..6 {
        let status = login_from(&registry, "alice", "wrong-password", &format!("10.0.0.{i}")).await;
        assert_eq!(status, 401);
    }
    let status = login_from(&registry, "alice", PASSWORD, "10.9.9.9").await;
    assert_eq!(
        status, 429,
        "a spoofed X-Forwarded-For must not escape the lockout"
    );
    registry.registry.server.stop().await;

    // Behind a trusted proxy (the test client's loopback address): clients are told apart by
    // the address the proxy appends.
    let registry = start_auth_registry_with(stores, |config| {
        config.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    registry.add_user("alice", PASSWORD, false).await;
    for _ in 0..6 {
        let status = login_from(&registry, "alice", "wrong-password", "10.0.0.1").await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        login_from(&registry, "alice", PASSWORD, "10.0.0.1").await,
        429,
        "the guessing client is locked out"
    );
    // Another client behind the same proxy is not; a client-supplied first hop is not
    // believed either (the proxy appends the real address last).
    assert_eq!(
        login_from(&registry, "alice", PASSWORD, "10.0.0.2").await,
        200
    );
    assert_eq!(
        login_from(&registry, "alice", PASSWORD, "10.0.0.2, 10.0.0.1").await,
        429
    );
    registry.registry.server.stop().await;

    // Trusted proxies as ranges: the peer is in 127.0.0.0/8, and a hop in 10.100.0.0/16 (a
    // second proxy, say a CDN in front of the ingress) is skipped too, so the client is the
    // hop before it, whichever proxy address it came through.
    let registry = start_auth_registry_with(stores, |config| {
        config.auth.trusted_proxies = vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.100.0.0/16".parse().unwrap(),
        ];
    })
    .await;
    registry.add_user("alice", PASSWORD, false).await;
    for i in 0..6 {
        let hops = format!("10.0.0.1, 10.100.{i}.9");
        let status = login_from(&registry, "alice", "wrong-password", &hops).await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        login_from(&registry, "alice", PASSWORD, "10.0.0.1, 10.100.200.1").await,
        429,
        "the guessing client is locked out through any proxy in the range"
    );
    assert_eq!(
        login_from(&registry, "alice", PASSWORD, "10.0.0.2, 10.100.0.1").await,
        200,
        "another client behind the same proxies is not"
    );
    assert_eq!(
        login_from(&registry, "alice", PASSWORD, "10.0.0.1, 10.101.0.1").await,
        200,
        "a hop outside the ranges is the client"
    );
    registry.registry.server.stop().await;
}
