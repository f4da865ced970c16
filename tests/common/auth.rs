//! An auth-enabled test registry: its signing key (so tests can forge tokens with it),
//! users and permissions created through the real user store, tokens from `/token`.

use base64::Engine as _;
use ipfs_registry::auth::admin;
use std::sync::Arc;

use ipfs_registry::meta::users::UserStore;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::Value;

use super::oci::Oci;
use super::{StorePair, TestRegistry};

pub struct AuthRegistry {
    pub registry: TestRegistry,
    /// The registry's own user store (PostgreSQL or the embedded SQLite file).
    pub store: Arc<dyn UserStore>,
    /// The PKCS#8 PEM private key the registry signs with.
    pub key_pem: String,
}

/// A fresh EC P-256 private key as PKCS#8 PEM.
pub fn new_key_pem() -> String {
    let secret = p256::SecretKey::random(&mut rand_core::OsRng);
    secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
}

/// `Authorization: Basic` for `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// The claims of a JWT, read without verification.
pub fn claims(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .expect("a JWT")
        .claims
}

/// An OCI client that sends `Authorization: Bearer <token>` on every request.
pub fn bearer_client(base: &str, token: &str) -> Oci {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    Oci::with_headers(base, headers)
}

pub async fn start_auth_registry(stores: StorePair) -> AuthRegistry {
    start_auth_registry_with(stores, |_| {}).await
}

pub async fn start_auth_registry_with(
    stores: StorePair,
    adjust: impl FnOnce(&mut ipfs_registry::config::Config),
) -> AuthRegistry {
    let key_pem = new_key_pem();
    let pem = key_pem.clone();
    let registry = stores
        .start_registry_with(move |config| {
            config.auth.enabled = true;
            config.auth.signing_key = Some(pem);
            adjust(config);
        })
        .await;
    let store = ipfs_registry::server::metadata_stores(&registry.config)
        .await
        .unwrap()
        .users;
    AuthRegistry {
        registry,
        store,
        key_pem,
    }
}

impl AuthRegistry {
    pub fn base(&self) -> &str {
        &self.registry.base
    }

    pub async fn add_user(&self, name: &str, password: &str, is_admin: bool) {
        admin::add_user(self.store.as_ref(), name, password, is_admin)
            .await
            .unwrap();
    }

    pub async fn grant(&self, user: &str, repositories: &str, actions: &str) {
        admin::grant(self.store.as_ref(), user, repositories, actions)
            .await
            .unwrap();
    }

    /// A robot token of `user`, limited to `scopes` (`repository:<name>:<actions>`).
    pub async fn robot_token(
        &self,
        user: &str,
        scopes: &[&str],
        lifetime: std::time::Duration,
    ) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        admin::create_robot_token(self.store.as_ref(), user, &scopes, lifetime)
            .await
            .unwrap()
    }

    pub async fn make_public(&self, repositories: &str) {
        admin::set_public(self.store.as_ref(), repositories, true)
            .await
            .unwrap();
    }

    /// `GET /token` with optional Basic credentials and the scopes; the raw response.
    pub async fn token_response(
        &self,
        credentials: Option<(&str, &str)>,
        scopes: &[&str],
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut url = url::Url::parse(&self.registry.url("/token")).unwrap();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("service", "ipfs-registry");
            for scope in scopes {
                query.append_pair("scope", scope);
            }
            for (k, v) in extra {
                query.append_pair(k, v);
            }
        }
        let mut request = reqwest::Client::new().get(url);
        if let Some((user, password)) = credentials {
            request = request.header("Authorization", basic(user, password));
        }
        request.send().await.unwrap()
    }

    /// A registry token from `GET /token`, asserting 200.
    pub async fn token(&self, credentials: Option<(&str, &str)>, scopes: &[&str]) -> String {
        let response = self.token_response(credentials, scopes, &[]).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "GET /token: {body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// A client for `user` (or anonymous) holding a token for `scopes`.
    /// The setting of the UI suites: users alice and bob; alice may do `team_actions` in
    /// `team/*` and pull and push in `pub/*`, which anyone may pull; alice has pushed an
    /// image tagged `1` to `team/app` (private) and to `pub/app` (public), returned in that
    /// order.
    pub async fn alice_with_private_and_public_images(
        &self,
        team_actions: &str,
    ) -> (super::oci::Image, super::oci::Image) {
        self.add_user("alice", "alice-password", false).await;
        self.add_user("bob", "bob-password", false).await;
        self.grant("alice", "team/*", team_actions).await;
        self.grant("alice", "pub/*", "pull,push").await;
        self.make_public("pub/*").await;
        let alice = Some(("alice", "alice-password"));
        let mut pushed = Vec::new();
        for repo in ["team/app", "pub/app"] {
            let scope = format!("repository:{repo}:pull,push");
            let image = self
                .client(alice, &[scope.as_str()])
                .await
                .push_image(repo, Some("1"), 1)
                .await;
            pushed.push(image);
        }
        let public = pushed.pop().expect("two images");
        let private = pushed.pop().expect("two images");
        (private, public)
    }

    pub async fn client(&self, credentials: Option<(&str, &str)>, scopes: &[&str]) -> Oci {
        let token = self.token(credentials, scopes).await;
        bearer_client(self.base(), &token)
    }
}
