//! Memory stays flat whatever the layer size: a layer far larger than the allowed growth is
//! pushed in chunks and pulled back, streaming both ways. The test of tests/memory.rs and
//! tests/memory_embedded.rs, one store pair each.

use std::io;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use super::StorePair;

const LAYER: u64 = 192 * 1024 * 1024;
const PIECE: usize = 1024 * 1024;
const ALLOWED_GROWTH_KIB: u64 = 96 * 1024;

/// Deterministic incompressible bytes, generated piece by piece (never held whole).
fn layer_stream(seed: u64, len: u64) -> impl futures::Stream<Item = io::Result<Bytes>> {
    let mut state = seed | 1;
    let pieces = len.div_ceil(PIECE as u64);
    futures::stream::iter(0..pieces).map(move |i| {
        let size = (len - i * PIECE as u64).min(PIECE as u64) as usize;
        let mut piece = Vec::with_capacity(size);
        while piece.len() < size {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            piece.extend_from_slice(&state.to_le_bytes());
        }
        piece.truncate(size);
        Ok(Bytes::from(piece))
    })
}

/// Pushes and pulls a layer far larger than `ALLOWED_GROWTH_KIB`, measuring this process's
/// peak resident size: its suite runs it alone in a binary.
pub async fn a_large_layer_streams_through_in_bounded_memory(stores: StorePair) {
    let registry = stores.start_registry().await;
    let http = reqwest::Client::new();

    let mut hasher = Sha256::new();
    let mut digest_pass = Box::pin(layer_stream(42, LAYER));
    while let Some(piece) = digest_pass.next().await {
        hasher.update(piece.unwrap());
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let baseline = super::peak_rss_kib(std::process::id());

    // Docker's way: POST, one streamed PATCH with everything, PUT with the digest.
    let started = http
        .post(registry.url("/v2/memory/big/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = registry.url(started.headers()["location"].to_str().unwrap());
    let patched = http
        .patch(&location)
        .body(reqwest::Body::wrap_stream(layer_stream(42, LAYER)))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 202);
    let location = registry.url(patched.headers()["location"].to_str().unwrap());
    let done = http
        .put(format!("{location}?digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 201);

    let pulled = http
        .get(registry.url(&format!("/v2/memory/big/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), 200);
    let mut body = pulled.bytes_stream();
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(piece) = body.next().await {
        let piece = piece.unwrap();
        received += piece.len() as u64;
        hasher.update(&piece);
    }
    assert_eq!(received, LAYER);
    assert_eq!(format!("sha256:{}", hex::encode(hasher.finalize())), digest);

    let growth = super::peak_rss_kib(std::process::id()).saturating_sub(baseline);
    assert!(
        growth < ALLOWED_GROWTH_KIB,
        "peak resident memory grew by {growth} KiB moving a {} MiB layer",
        LAYER >> 20
    );
    registry.server.stop().await;
}
