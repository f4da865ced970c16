use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use super::Response;
use crate::api::headers::{self, DOCKER_CONTENT_DIGEST, X_IPFS_PATH};
use crate::api::AppState;
use crate::oci::{Digest, RepoName};
use crate::registry::{BlobContent, BlobRecord, MirroredBlob, Route};

/// Headers of a blob's bytes, wherever they are served from: its digest, and its path in
/// IPFS (the header IPFS gateways send), so anyone can fetch it by CID elsewhere.
pub(super) fn blob_headers(record: &BlobRecord) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header((DOCKER_CONTENT_DIGEST, record.digest.to_string()))
        .insert_header((X_IPFS_PATH, format!("/ipfs/{}", record.cid)))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::ETAG, format!("\"{}\"", record.digest)))
        .insert_header((header::CACHE_CONTROL, "max-age=31536000"));
    response
}

/// A full (200) or ranged (206) body of blob content.
pub(super) fn content_response(content: BlobContent) -> HttpResponse {
    let mut response = blob_headers(&content.record);
    let length = match content.range {
        Some((start, end)) => {
            response
                .status(actix_web::http::StatusCode::PARTIAL_CONTENT)
                .insert_header((
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{end}/{}", content.record.size),
                ));
            end - start + 1
        }
        None => content.record.size,
    };
    response.body(SizedStream::new(length, content.body))
}

pub async fn head(
    state: &AppState,
    req: &HttpRequest,
    repo: &RepoName,
    digest: &Digest,
) -> Response {
    let name = match state.registry.route(repo, super::ns(req)).await? {
        Route::Local => {
            let record = state.registry.stat_blob(repo, digest).await?;
            return Ok(super::head_response(blob_headers(&record), record.size));
        }
        Route::Mirrored(name) => name,
    };
    let head = state.registry.stat_mirrored_blob(&name, digest).await?;
    let response = match &head.record {
        Some(record) => blob_headers(record),
        None => upstream_headers(&head.digest),
    };
    Ok(super::head_response(response, head.size))
}

/// Headers of a blob a mirror streams from its upstream: no CID yet.
fn upstream_headers(digest: &Digest) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header((DOCKER_CONTENT_DIGEST, digest.to_string()))
        .insert_header((header::ETAG, format!("\"{digest}\"")));
    response
}

pub async fn get(
    state: &AppState,
    req: &HttpRequest,
    repo: &RepoName,
    digest: &Digest,
) -> Response {
    let range = headers::blob_range(req.headers())?;
    let content = match state.registry.route(repo, super::ns(req)).await? {
        Route::Local => state.registry.get_blob(repo, digest, range).await?,
        Route::Mirrored(name) => {
            let origin = AppState::origin(req);
            match state
                .registry
                .get_mirrored_blob(&name, digest, range, &origin)
                .await?
            {
                MirroredBlob::Stored(content) => content,
                MirroredBlob::Streaming {
                    digest,
                    length,
                    body,
                } => {
                    let mut response = upstream_headers(&digest);
                    return Ok(match length {
                        Some(length) => response.body(SizedStream::new(length, body)),
                        None => response.streaming(body),
                    });
                }
            }
        }
    };
    state
        .registry
        .note_blob_pull(repo, &content.record, || AppState::origin(req))
        .await;
    Ok(content_response(content))
}

pub async fn delete(
    state: &AppState,
    req: &HttpRequest,
    repo: &RepoName,
    digest: &Digest,
) -> Response {
    state
        .registry
        .delete_blob(repo, digest, &AppState::origin(req))
        .await?;
    Ok(HttpResponse::Accepted().finish())
}
