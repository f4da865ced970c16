//! Notifications end to end, on each store pair, with real HTTP receivers on loopback: every
//! action in distribution's envelope (and the CID), the HMAC signature, repository and
//! event filters; a receiver that is down for a while; events given up on and replayed with
//! the CLI; a registry SIGKILLed with events pending; two replicas on one store.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::cli::{registry_command, serve_command, stores_env, succeeded, Served};
use common::oci::{expect_status, Oci, OCI_MANIFEST};
use common::receiver::Receiver;
use common::{cid_of_blob, StorePair};
use ipfs_registry::config::{EventKind, NotificationEndpoint};
use ipfs_registry::registry::notify::deliver::{signature, ENVELOPE_MEDIA_TYPE, SIGNATURE_HEADER};
use reqwest::Method;
use serde_json::Value;

const SECRET: &str = "a shared secret";
const USER_AGENT: &str = "notify-test/1.0";

fn endpoint(name: &str, receiver: &Receiver, events: &[EventKind]) -> NotificationEndpoint {
    receiver.endpoint(name, events)
}

fn client(base: &str) -> Oci {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::USER_AGENT,
        reqwest::header::HeaderValue::from_static(USER_AGENT),
    );
    Oci::with_headers(base, headers)
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

fn target_digests(events: &[Value]) -> HashSet<String> {
    events
        .iter()
        .map(|e| e["target"]["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// The digests of an image's config, layers and manifest.
fn image_digests(image: &common::oci::Image) -> HashSet<String> {
    let blobs = std::iter::once(&image.config).chain(&image.layers);
    blobs
        .map(|b| b.digest.clone())
        .chain([image.manifest.digest.clone()])
        .collect()
}

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

common::on_each_store_pair!(every_action_is_reported_in_distributions_envelope);

async fn every_action_is_reported_in_distributions_envelope(stores: StorePair) {
    let all = Receiver::start();
    let deletes = Receiver::start();
    let registry = stores
        .start_registry_with(|config| {
            let mut everything = endpoint(
                "all",
                &all,
                &[EventKind::Push, EventKind::Delete, EventKind::Pull],
            );
            everything.secret = Some(SECRET.to_owned());
            let mut only_deletes = endpoint("deletes", &deletes, &[EventKind::Delete]);
            only_deletes.repositories = vec!["notify/*".to_owned()];
            only_deletes
                .headers
                .insert("Authorization".to_owned(), "Bearer hook-token".to_owned());
            config.notifications.endpoint = vec![everything, only_deletes];
        })
        .await;
    let oci = client(&registry.base);

    // Three blobs, the manifest under a tag, and the manifest read back by digest.
    let image = oci.push_image("notify/app", Some("1.0"), 2).await;
    let layer = &image.layers[0];
    expect_status(oci.get("/v2/notify/app/manifests/1.0").await, 200).await;
    expect_status(oci.head("/v2/notify/app/manifests/1.0").await, 200).await;
    let blob_path = format!("/v2/notify/app/blobs/{}", layer.digest);
    expect_status(oci.get(&blob_path).await, 200).await;
    let mount = oci
        .request(Method::POST, "/v2/notify/copy/blobs/uploads/")
        .query(&[("mount", layer.digest.as_str()), ("from", "notify/app")])
        .send()
        .await
        .unwrap();
    expect_status(mount, 201).await;
    // Outside the second endpoint's repositories: only the first hears of it.
    oci.push_blob("elsewhere/app", b"elsewhere").await;
    expect_status(oci.delete("/v2/notify/app/manifests/1.0").await, 202).await;
    let manifest_path = format!("/v2/notify/app/manifests/{}", image.manifest.digest);
    expect_status(oci.delete(&manifest_path).await, 202).await;
    let copy_path = format!("/v2/notify/copy/blobs/{}", layer.digest);
    expect_status(oci.delete(&copy_path).await, 202).await;
    // Deleting what is gone changes nothing and reports nothing.
    expect_status(oci.delete(&copy_path).await, 404).await;

    let events = all.wait_for(12).await;
    assert_eq!(
        actions(&events),
        [
            "push", "push", "push", "push", "pull", "pull", "pull", "mount", "push", "delete",
            "delete", "delete"
        ],
        "{events:#?}"
    );
    let unique: HashSet<String> = ids(&events).into_iter().collect();
    assert_eq!(unique.len(), events.len(), "every event has its own id");

    let layer_push = &events[1];
    assert_eq!(layer_push["target"]["digest"], image.layers[0].digest);
    assert_eq!(
        layer_push["target"]["mediaType"],
        "application/octet-stream"
    );
    assert_eq!(layer_push["target"]["size"], image.layers[0].data.len());
    assert_eq!(layer_push["target"]["length"], image.layers[0].data.len());
    assert_eq!(layer_push["target"]["repository"], "notify/app");
    assert_eq!(
        layer_push["target"]["cid"],
        cid_of_blob(&image.layers[0].data).to_string()
    );
    assert_eq!(
        layer_push["target"]["url"],
        registry.url(&format!("/v2/notify/app/blobs/{}", layer.digest))
    );
    assert_eq!(layer_push["request"]["method"], "PUT");
    assert_eq!(layer_push["request"]["useragent"], USER_AGENT);
    assert_eq!(layer_push["request"]["addr"], "127.0.0.1");
    assert_eq!(layer_push["request"]["host"], registry.host());
    assert!(!layer_push["request"]["id"].as_str().unwrap().is_empty());
    assert_eq!(layer_push["actor"], serde_json::json!({}), "anonymous");
    assert!(!layer_push["source"]["instanceID"]
        .as_str()
        .unwrap()
        .is_empty());
    assert_eq!(layer_push["source"]["addr"], registry.host());
    humantime::parse_rfc3339(layer_push["timestamp"].as_str().unwrap()).unwrap();

    let manifest_push = &events[3];
    assert_eq!(manifest_push["target"]["mediaType"], OCI_MANIFEST);
    assert_eq!(manifest_push["target"]["digest"], image.manifest.digest);
    assert_eq!(
        manifest_push["target"]["size"],
        image.manifest.content.len()
    );
    assert_eq!(manifest_push["target"]["tag"], "1.0");
    assert_eq!(
        manifest_push["target"]["url"],
        registry.url(&format!(
            "/v2/notify/app/manifests/{}",
            image.manifest.digest
        ))
    );
    assert_eq!(events[4]["target"].get("tag"), None, "pulled by digest");
    assert_eq!(events[5]["target"]["tag"], "1.0", "pulled by tag");
    assert_eq!(events[5]["request"]["method"], "GET");
    assert_eq!(events[6]["target"]["digest"], layer.digest);
    assert_eq!(events[7]["target"]["repository"], "notify/copy");
    assert_eq!(events[7]["target"]["fromRepository"], "notify/app");
    assert_eq!(events[8]["target"]["repository"], "elsewhere/app");
    assert_eq!(events[9]["target"]["tag"], "1.0");
    assert_eq!(events[9]["target"].get("digest"), None);
    assert_eq!(events[10]["target"]["digest"], image.manifest.digest);
    assert_eq!(events[11]["target"]["digest"], layer.digest);
    assert_eq!(events[11]["request"]["method"], "DELETE");

    for request in all.received() {
        assert_eq!(request.header("content-type"), Some(ENVELOPE_MEDIA_TYPE));
        assert_eq!(
            request.header(SIGNATURE_HEADER),
            Some(signature(SECRET, &request.body).as_str()),
            "signed over the exact body"
        );
    }

    let deleted = deletes.wait_for(3).await;
    assert_eq!(actions(&deleted), ["delete", "delete", "delete"]);
    for request in deletes.received() {
        assert_eq!(request.header("authorization"), Some("Bearer hook-token"));
        assert_eq!(
            request.header(SIGNATURE_HEADER),
            None,
            "no secret, no signature"
        );
    }
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(all.accepted_events().len(), 12);
    assert_eq!(deletes.accepted_events().len(), 3);
    let text = metrics(&registry.base).await;
    assert_eq!(
        common::metric_sample(
            &text,
            "ipfs_registry_notifications_delivered_total{endpoint=\"all\"}"
        ),
        Some(12.0),
        "{text}"
    );
    registry.server.stop().await;
    all.stop().await;
    deletes.stop().await;
}

common::on_each_store_pair!(events_wait_for_a_receiver_that_is_down_and_none_is_lost);

async fn events_wait_for_a_receiver_that_is_down_and_none_is_lost(stores: StorePair) {
    let receiver = Receiver::start();
    receiver.answer(503);
    let registry = stores
        .start_registry_with(|config| {
            config.notifications.endpoint = vec![endpoint("hook", &receiver, &[EventKind::Push])];
        })
        .await;
    let oci = client(&registry.base);
    let image = oci.push_image("notify/down", Some("1"), 2).await;
    // Retried while down...
    receiver.wait_for_requests(3).await;
    assert!(receiver.accepted_events().is_empty());
    // ...and all delivered once it is up.
    receiver.answer(200);
    let events = receiver.wait_for(4).await;
    assert_eq!(target_digests(&events), image_digests(&image));
    let text = metrics(&registry.base).await;
    let failed = common::metric_sample(
        &text,
        "ipfs_registry_notifications_failed_total{endpoint=\"hook\"}",
    );
    assert!(failed.is_some_and(|n| n >= 3.0), "{text}");
    registry.server.stop().await;
    receiver.stop().await;
}

common::on_each_store_pair!(events_given_up_on_are_listed_and_replayed_by_the_cli);

async fn events_given_up_on_are_listed_and_replayed_by_the_cli(stores: StorePair) {
    let receiver = Receiver::start();
    receiver.answer(500);
    let registry = stores
        .start_registry_with(|config| {
            let mut once = endpoint("once", &receiver, &[EventKind::Push]);
            once.max_attempts = 1;
            config.notifications.endpoint = vec![once];
        })
        .await;
    let blob = client(&registry.base)
        .push_blob("notify/cli", b"given up")
        .await;
    let cli = |args: &[&str]| {
        succeeded(
            &registry_command()
                .envs(stores_env(&registry.config))
                .arg("notifications")
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let out = cli(&["list", "--failed", "--json"]);
        if !out.is_empty() {
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "nothing given up on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let entries: Vec<Value> = listed
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["endpoint"], "once");
    assert_eq!(entries[0]["state"], "failed");
    assert_eq!(entries[0]["attempts"], 1);
    assert!(entries[0]["last_error"].as_str().unwrap().contains("500"));
    assert_eq!(entries[0]["event"]["target"]["digest"], blob.digest);
    let text = cli(&["list"]);
    assert!(
        text.contains(" once failed attempts=1 push notify/cli "),
        "{text}"
    );

    receiver.answer(200);
    assert_eq!(
        cli(&["replay", "--endpoint", "other"]).trim(),
        "0 events replayed"
    );
    assert_eq!(cli(&["replay"]).trim(), "1 events replayed");
    let events = receiver.wait_for(1).await;
    assert_eq!(events[0]["target"]["digest"], blob.digest);
    assert_eq!(cli(&["list"]), "");

    // Given up on again; purged. An endpoint no longer configured loses its pending too.
    receiver.answer(500);
    client(&registry.base)
        .push_blob("notify/cli", b"given up again")
        .await;
    receiver.wait_for_requests(3).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cli(&["list", "--failed"]).is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing given up on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        cli(&["purge", "--endpoint", "once"]).trim(),
        "1 events purged"
    );
    assert_eq!(cli(&["list"]), "");
    registry.server.stop().await;
    receiver.stop().await;
}

common::on_each_store_pair!(a_registry_killed_with_events_pending_delivers_them_after_restart);

async fn a_registry_killed_with_events_pending_delivers_them_after_restart(stores: StorePair) {
    let receiver = Receiver::start();
    receiver.answer(503);
    let config = stores.test_config().await;
    let file = config.data_dir.with_extension("toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        format!(
            "[[notifications.endpoint]]\nname = \"hook\"\nurl = \"{}\"\ntimeout = \"1s\"\n\
             backoff = \"100ms\"\nmax_backoff = \"200ms\"\n",
            receiver.url
        ),
    )
    .unwrap();
    let serve = || {
        let mut command = serve_command();
        command.envs(stores_env(&config)).arg("--config").arg(&file);
        command
    };
    let first = Served::start(&mut serve()).await;
    let image = client(&first.base)
        .push_image("notify/kill", Some("1"), 1)
        .await;
    receiver.wait_for_requests(1).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(first);

    receiver.answer(200);
    let second = Served::start(&mut serve()).await;
    let events = receiver.wait_for(3).await;
    assert_eq!(target_digests(&events), image_digests(&image));
    let (stopped, _, log) = second.stop();
    assert!(stopped, "{log}");
    receiver.stop().await;
}

common::on_each_store_pair!(two_replicas_deliver_every_event_once);

async fn two_replicas_deliver_every_event_once(stores: StorePair) {
    let receiver = Receiver::start();
    let first = stores
        .start_registry_with(|config| {
            config.notifications.endpoint = vec![endpoint("hook", &receiver, &[EventKind::Push])];
        })
        .await;
    let second = common::start_registry_from(first.config.clone()).await;
    let mut pushed = HashSet::new();
    for round in 0..3 {
        for registry in [&first, &second] {
            let image = client(&registry.base)
                .push_image(&format!("notify/replica{round}"), Some("1"), 1)
                .await;
            pushed.insert(image.manifest.digest);
        }
    }
    // Three events per image.
    let events = receiver.wait_for(18).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events_now = receiver.accepted_events();
    assert_eq!(
        events_now.len(),
        18,
        "no event delivered twice: {events:#?}"
    );
    let unique: HashSet<String> = ids(&events_now).into_iter().collect();
    assert_eq!(unique.len(), 18);
    let manifests: HashSet<String> = events_now
        .iter()
        .filter(|e| e["target"]["mediaType"] == OCI_MANIFEST)
        .map(|e| e["target"]["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(manifests, pushed);
    first.server.stop().await;
    second.server.stop().await;
    receiver.stop().await;
}

#[test]
fn an_invalid_endpoint_is_refused_at_load_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "[[notifications.endpoint]]\nname = \"hook\"\nurl = \"ftp://example.com/\"\n",
    )
    .unwrap();
    let out = registry_command()
        .arg("--config")
        .arg(&file)
        .arg("config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("notifications.endpoint"), "{stderr}");
    assert!(stderr.contains("http"), "{stderr}");

    std::fs::write(
        &file,
        "[[notifications.endpoint]]\nname = \"hook\"\nurl = \"https://example.com/\"\n\
         secret = \"s3cret\"\nheaders = { Authorization = \"Bearer t0ken\" }\n",
    )
    .unwrap();
    let printed = succeeded(
        &registry_command()
            .arg("--config")
            .arg(&file)
            .arg("config")
            .output()
            .unwrap(),
    );
    assert!(
        !printed.contains("s3cret") && !printed.contains("t0ken"),
        "{printed}"
    );
    assert!(printed.contains("[[notifications.endpoint]]"), "{printed}");
}

/// The configuration docs/notifications.md shows is one the registry accepts, as shown.
#[test]
fn the_documented_configuration_loads() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/notifications.md"),
    )
    .unwrap();
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a TOML example");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry.toml");
    std::fs::write(&file, example).unwrap();
    let printed = succeeded(
        &registry_command()
            .arg("--config")
            .arg(&file)
            .arg("config")
            .output()
            .unwrap(),
    );
    let config: toml::Table = printed.parse().unwrap();
    let endpoints = config["notifications"]["endpoint"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{printed}");
    assert_eq!(endpoints[0]["name"].as_str(), Some("ci"));
    assert_eq!(endpoints[0]["secret"].as_str(), Some("REDACTED"));
    assert_eq!(
        endpoints[0]["headers"]["Authorization"].as_str(),
        Some("REDACTED")
    );
    assert_eq!(endpoints[1]["events"].as_array().unwrap().len(), 3);
}
