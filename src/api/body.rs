//! Request bodies. actix payloads are tied to their worker thread, while the blob store
//! sends bytes from any thread; a small bounded channel bridges the two, so memory stays
//! bounded and back-pressure reaches the client.

use std::io;

use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::registry::{ByteStream, RegistryError};

/// Pieces in flight between the connection and the blob store.
const BRIDGE_DEPTH: usize = 8;

pub fn stream(mut payload: web::Payload) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(BRIDGE_DEPTH);
    actix_web::rt::spawn(async move {
        while let Some(item) = payload.next().await {
            let item = item.map_err(|e| io::Error::other(format!("request body: {e}")));
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Reads a whole small body (a manifest), refusing more than `limit` bytes.
pub async fn read_limited(mut payload: web::Payload, limit: usize) -> Result<Bytes, RegistryError> {
    let mut body = BytesMut::new();
    while let Some(piece) = payload.next().await {
        let piece =
            piece.map_err(|e| RegistryError::ManifestInvalid(format!("request body: {e}")))?;
        if body.len() + piece.len() > limit {
            return Err(RegistryError::TooLarge(format!(
                "manifest exceeds the limit of {limit} bytes"
            )));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body.freeze())
}
