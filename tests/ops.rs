//! Operations: health and readiness, Prometheus metrics, request ids, the concurrency limit,
//! the request timeout and graceful shutdown, on real servers, on each store pair.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::oci::{assert_error, expect_status, random_bytes, Oci};
use common::StorePair;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

async fn db(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    client
}

async fn readyz(base: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

common::on_each_store_pair!(health_and_readiness);
async fn health_and_readiness(stores: StorePair) {
    let registry = stores.start_registry().await;
    let health = reqwest::get(registry.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let (status, body) = readyz(&registry.base).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["ipfs"], "ok");
    assert_eq!(body["checks"]["migrations"], "ok");
    assert_eq!(body["checks"]["metadata"], "ok");

    // Cheap enough to poll every second: ten probes well within a second each.
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(readyz(&registry.base).await.0, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A schema that does not match this build is not ready.
    common::sql::metadata(&registry)
        .await
        .execute(
            "UPDATE refinery_schema_history SET checksum = '1' WHERE version = 1",
            &[],
        )
        .await;
    let (status, body) = readyz(&registry.base).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    assert!(
        body["checks"]["migrations"]
            .as_str()
            .unwrap()
            .contains("migrations"),
        "{body}"
    );
    registry.server.stop().await;
}

common::on_each_store_pair!(readiness_names_an_unreachable_ipfs_node);
async fn readiness_names_an_unreachable_ipfs_node(stores: StorePair) {
    let registry = stores
        .start_registry_with(|c| {
            c.ipfs.url = Some("http://127.0.0.1:1".parse().unwrap());
            c.ipfs.connect_timeout = Duration::from_millis(500);
        })
        .await;
    let (status, body) = readyz(&registry.base).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    assert_ne!(body["checks"]["ipfs"], "ok", "{body}");
    assert_eq!(
        reqwest::get(registry.url("/healthz"))
            .await
            .unwrap()
            .status(),
        200,
        "liveness does not depend on the backends"
    );
    registry.server.stop().await;
}

// The IPFS node has no directory of the registry's to lose.
common::on_store_pairs!([embedded: Embedded] readiness_names_a_missing_blob_directory);
/// The embedded blob store is ready while its directory is there.
async fn readiness_names_a_missing_blob_directory(stores: StorePair) {
    let registry = stores.start_registry().await;
    assert_eq!(readyz(&registry.base).await.0, 200);
    let data = registry.config.data_dir.join("blobs/data");
    let aside = registry.config.data_dir.join("blobs/data-aside");
    std::fs::rename(&data, &aside).unwrap();
    let (status, body) = readyz(&registry.base).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    assert!(
        body["checks"]["ipfs"]
            .as_str()
            .unwrap()
            .contains("blobs/data"),
        "{body}"
    );
    std::fs::rename(&aside, &data).unwrap();
    assert_eq!(readyz(&registry.base).await.0, 200);
    registry.server.stop().await;
}

// It drops the PostgreSQL database; SQLite's file is opened, not connected to.
common::on_store_pairs!([postgres_ipfs_node: PostgresIpfsNode] readiness_names_a_lost_database);
async fn readiness_names_a_lost_database(stores: StorePair) {
    let registry = stores
        .start_registry_with(|c| c.database.timeout = Duration::from_secs(1))
        .await;
    assert_eq!(readyz(&registry.base).await.0, 200);

    // Drop the database from under the registry.
    let name = registry.database_url.rsplit('/').next().unwrap().to_owned();
    let admin = db(&common::admin_database_url()).await;
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
    let started = Instant::now();
    let (status, body) = readyz(&registry.base).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status, 503, "{body}");
    assert_ne!(body["checks"]["database"], "ok", "{body}");
    registry.server.stop().await;
}

common::on_each_store_pair!(metrics_count_requests_bytes_ipfs_and_database);
async fn metrics_count_requests_bytes_ipfs_and_database(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let image = oci.push_image("metrics/app", Some("v1"), 2).await;
    let layer = &image.layers[0];
    let pulled = oci
        .get(&format!("/v2/metrics/app/blobs/{}", layer.digest))
        .await;
    assert_eq!(pulled.bytes().await.unwrap(), layer.data);
    assert_eq!(
        oci.get("/v2/metrics/app/manifests/nope").await.status(),
        404
    );

    let response = reqwest::get(registry.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("openmetrics-text"));
    let text = response.text().await.unwrap();
    let get = |series: &str| {
        common::metric_sample(&text, series)
            .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
    };
    assert_eq!(
        get(r#"ipfs_registry_http_requests_total{method="PUT",route="manifest",status="201"}"#),
        1.0
    );
    assert_eq!(
        get(r#"ipfs_registry_http_requests_total{method="GET",route="manifest",status="404"}"#),
        1.0
    );
    assert!(
        get(r#"ipfs_registry_http_request_duration_seconds_count{method="GET",route="blob"}"#)
            >= 1.0
    );
    let pushed: usize =
        image.layers.iter().map(|l| l.data.len()).sum::<usize>() + image.config.data.len();
    assert_eq!(
        get("ipfs_registry_blob_bytes_received_total"),
        pushed as f64
    );
    assert_eq!(
        get("ipfs_registry_blob_bytes_sent_total"),
        layer.data.len() as f64
    );
    assert_eq!(
        get(r#"ipfs_registry_ipfs_calls_total{operation="add"}"#),
        3.0,
        "config and two layers"
    );
    assert!(get(r#"ipfs_registry_ipfs_call_duration_seconds_count{operation="cat"}"#) >= 1.0);
    assert!(get(r#"ipfs_registry_db_queries_total{operation="put_manifest"}"#) >= 1.0);
    assert!(
        get(r#"ipfs_registry_db_query_duration_seconds_count{operation="commit_blob"}"#) >= 3.0
    );
    // PostgreSQL's pool as configured; SQLite's writer and four readers.
    let connections = match stores {
        StorePair::PostgresIpfsNode => 8.0,
        StorePair::Embedded => 5.0,
    };
    assert_eq!(get("ipfs_registry_db_pool_max_connections"), connections);
    assert!(get("ipfs_registry_db_pool_connections") >= 1.0);
    assert_eq!(get("ipfs_registry_db_pool_waiting"), 0.0);
    assert_eq!(get("ipfs_registry_uploads_in_progress"), 0.0);
    // The scrape itself is in flight while it renders.
    assert_eq!(get("ipfs_registry_http_requests_in_flight"), 1.0);
    assert_eq!(get(r#"ipfs_registry_gc_runs_total{outcome="ok"}"#), 0.0);
    assert_eq!(get("ipfs_registry_gc_freed_bytes_total"), 0.0);
    assert_eq!(get(r#"ipfs_registry_auth_total{outcome="failure"}"#), 0.0);
    registry.server.stop().await;
}

common::on_each_store_pair!(request_ids_are_returned_and_kept_when_sane);
async fn request_ids_are_returned_and_kept_when_sane(stores: StorePair) {
    let registry = stores.start_registry().await;
    let http = reqwest::Client::new();
    let response = http
        .get(registry.url("/v2/"))
        .header("x-request-id", "trace-42.a:b_c")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42.a:b_c");
    let response = http
        .get(registry.url("/v2/"))
        .header("x-request-id", "not sane")
        .send()
        .await
        .unwrap();
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 32);
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
    // Errors carry it too.
    let response = http
        .get(registry.url("/v2/x/manifests/none"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("x-request-id"));
    registry.server.stop().await;
}

/// Holds the database so that the request `slow_request` names waits on it: an exclusive
/// lock on PostgreSQL's `tags` table (a tag listing waits), or SQLite's write lock (a
/// manifest put waits).
async fn block_database(registry: &common::TestRegistry) -> common::sql::Sql {
    let blocker = common::sql::metadata(registry).await;
    match blocker {
        common::sql::Sql::Postgres(_) => {
            blocker.execute("BEGIN", &[]).await;
            blocker
                .execute("LOCK TABLE tags IN ACCESS EXCLUSIVE MODE", &[])
                .await;
        }
        common::sql::Sql::Sqlite(_) => {
            blocker.execute("BEGIN IMMEDIATE", &[]).await;
        }
    }
    blocker
}

/// A request that waits while `block_database` holds the database.
async fn slow_request(
    stores: StorePair,
    oci: &Oci,
    image: &common::oci::Image,
) -> reqwest::Response {
    match stores {
        StorePair::PostgresIpfsNode => oci.get("/v2/limits/app/tags/list").await,
        StorePair::Embedded => {
            oci.put_manifest(
                "limits/app",
                "v2",
                &image.manifest.media_type,
                &image.manifest.content,
            )
            .await
        }
    }
}

common::on_each_store_pair!(requests_past_the_concurrency_limit_get_429_and_slow_ones_time_out);
async fn requests_past_the_concurrency_limit_get_429_and_slow_ones_time_out(stores: StorePair) {
    let registry = stores
        .start_registry_with(|c| {
            c.limits.max_concurrent_requests = 1;
            c.limits.request_timeout = Duration::from_secs(2);
        })
        .await;
    let oci = Oci::new(&registry.base);
    let image = oci.push_image("limits/app", Some("v1"), 1).await;
    let blocker = block_database(&registry).await;

    let slow = tokio::spawn({
        let oci = oci.clone();
        async move {
            let started = Instant::now();
            let response = slow_request(stores, &oci, &image).await;
            (response, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = oci.get("/v2/").await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_error(refused, 429, "TOOMANYREQUESTS").await;
    // Health, readiness and metrics are not counted against the limit.
    assert_eq!(
        reqwest::get(registry.url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = reqwest::get(registry.url("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);

    // The held request runs into the request timeout: 503, not a hang.
    let (response, took) = slow.await.unwrap();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        response.headers().contains_key("x-request-id"),
        "a timed-out request keeps its id"
    );
    assert_error(response, 503, "UNAVAILABLE").await;
    drop(blocker);
    // The slot is free again.
    expect_status(oci.get("/v2/").await, 200).await;
    registry.server.stop().await;
}

/// A PATCH whose body the test feeds piece by piece.
fn streaming_patch(
    http: &reqwest::Client,
    url: String,
) -> (
    mpsc::Sender<Result<Bytes, std::io::Error>>,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) });
    let request = http
        .patch(url)
        .body(reqwest::Body::wrap_stream(body.boxed()))
        .send();
    (tx, tokio::spawn(request))
}

common::on_each_store_pair!(graceful_shutdown_finishes_in_flight_uploads);
async fn graceful_shutdown_finishes_in_flight_uploads(stores: StorePair) {
    let registry = stores
        .start_registry_with(|c| c.shutdown_timeout = Duration::from_secs(20))
        .await;
    let oci = Oci::new(&registry.base);
    let location = oci.start_upload("shutdown/app").await;
    let http = reqwest::Client::new();
    let (tx, upload) = streaming_patch(&http, oci.url(&location).to_string());
    let first = random_bytes(64 * 1024);
    tx.send(Ok(Bytes::from(first.clone()))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let base = registry.base.clone();
    let stopping = tokio::spawn(registry.server.stop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stopping.is_finished(), "stop must wait for the upload");
    // New connections are no longer accepted.
    let fresh = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(
        fresh.is_err(),
        "a stopping server accepted a new connection"
    );

    let second = random_bytes(32 * 1024);
    tx.send(Ok(Bytes::from(second.clone()))).await.unwrap();
    drop(tx);
    let response = upload.await.unwrap().unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.headers()["range"],
        format!("0-{}", first.len() + second.len() - 1)
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stop returns once the upload is done")
        .unwrap();
}

common::on_each_store_pair!(shutdown_gives_up_on_requests_past_the_deadline);
async fn shutdown_gives_up_on_requests_past_the_deadline(stores: StorePair) {
    let registry = stores
        .start_registry_with(|c| c.shutdown_timeout = Duration::from_secs(1))
        .await;
    let oci = Oci::new(&registry.base);
    let location = oci.start_upload("shutdown/stuck").await;
    let http = reqwest::Client::new();
    let (tx, upload) = streaming_patch(&http, oci.url(&location).to_string());
    tx.send(Ok(Bytes::from(random_bytes(1024)))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), registry.server.stop())
        .await
        .expect("stop returns after the deadline");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The never-ending upload was cut.
    let outcome = tokio::time::timeout(Duration::from_secs(5), upload)
        .await
        .expect("the client sees the connection end")
        .unwrap();
    assert!(
        outcome.is_err() || !outcome.unwrap().status().is_success(),
        "an unfinished upload was reported as stored"
    );
    drop(tx);
}
