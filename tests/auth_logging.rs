//! Secrets never reach the logs: passwords (right or wrong), Basic credentials, registry and
//! refresh tokens, robot tokens. Everything the registry logs at debug level is captured
//! while they are used, then searched.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::auth::*;
use common::StorePair;
use serde_json::Value;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process's one global subscriber, capturing everything at debug level.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        capture
    })
}

/// The store pairs' tests share the capture, so they take turns: each reads only its own
/// registry's logs.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

common::on_each_store_pair!(no_secret_appears_in_the_logs);
async fn no_secret_appears_in_the_logs(stores: StorePair) {
    let _turn = TURN.lock().await;
    let capture = capture();
    capture.0.lock().unwrap().clear();

    let password = "Pa55word-in-the-logs?";
    let wrong = "Wrong-pa55word-guess";
    let registry = start_auth_registry(stores).await;
    registry.add_user("alice", password, false).await;
    registry.grant("alice", "team/*", "pull,push").await;

    let mut secrets = vec![
        password.to_owned(),
        wrong.to_owned(),
        basic("alice", password),
        basic("alice", wrong),
    ];
    let response = registry
        .token_response(Some(("alice", wrong)), &[], &[])
        .await;
    assert_eq!(response.status(), 401);
    let body: Value = registry
        .token_response(
            Some(("alice", password)),
            &["repository:team/app:pull,push"],
            &[("offline_token", "true")],
        )
        .await
        .json()
        .await
        .unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    secrets.push(token.clone());
    secrets.push(body["refresh_token"].as_str().unwrap().to_owned());
    let form: Value = reqwest::Client::new()
        .post(registry.registry.url("/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", password),
            ("scope", "repository:team/app:pull"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    secrets.push(form["access_token"].as_str().unwrap().to_owned());
    let robot = registry
        .robot_token(
            "alice",
            &["repository:team/app:pull"],
            std::time::Duration::from_secs(60),
        )
        .await;
    secrets.push(robot.clone());
    registry.token(Some(("alice", &robot)), &[]).await;

    let client = bearer_client(registry.base(), &token);
    client.push_image("team/app", Some("v1"), 1).await;
    let forged = format!("{token}x");
    let response = bearer_client(registry.base(), &forged).get("/v2/").await;
    assert_eq!(response.status(), 401);
    secrets.push(forged);
    registry.registry.server.stop().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The capture works: the events around the secrets are there.
    for event in [
        "login_failed",
        "token_issued",
        "token_rejected",
        "event=\"request\"",
    ] {
        assert!(logs.contains(event), "no {event} in the logs:\n{logs}");
    }
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret appears in the logs: {secret}"
        );
    }
    // No part of a JWT either (its header is the same for every token of this key).
    let jwt_header = token.split('.').next().unwrap();
    assert!(!logs.contains(jwt_header), "a JWT appears in the logs");
}
