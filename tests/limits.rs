//! Upload concurrency is bounded: past the limit a client is told TOOMANYREQUESTS.

mod common;

use common::StorePair;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

common::on_each_store_pair!(uploads_past_the_limit_get_429);
async fn uploads_past_the_limit_get_429(stores: StorePair) {
    let registry = stores
        .start_registry_with(|c| c.limits.max_concurrent_uploads = 1)
        .await;
    let http = reqwest::Client::new();
    let start = |http: reqwest::Client, url: String| async move {
        let r = http.post(url).send().await.unwrap();
        assert_eq!(r.status(), 202);
        r.headers()["location"].to_str().unwrap().to_owned()
    };
    let first = start(http.clone(), registry.url("/v2/limits/blobs/uploads/")).await;
    let second = start(http.clone(), registry.url("/v2/limits/blobs/uploads/")).await;

    // A chunk that keeps streaming holds the only upload slot.
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) });
    let slow = tokio::spawn(
        http.patch(registry.url(&first))
            .body(reqwest::Body::wrap_stream(body.boxed()))
            .send(),
    );
    tx.send(Ok(Bytes::from(vec![7u8; 64 * 1024])))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let refused = http
        .patch(registry.url(&second))
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");

    // Once the slow upload finishes, the slot is free again.
    drop(tx);
    assert_eq!(slow.await.unwrap().unwrap().status(), 202);
    let accepted = http
        .patch(registry.url(&second))
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    registry.server.stop().await;
}
