//! Extension API: `POST /v2/_ext/<name>/import?cid=<image cid>[&tag=<tag>]`, importing an
//! image by the CID of its OCI Image Layout (docs/federation.md). Synchronous: it answers
//! when the image is imported (201) or refused. The import runs as a task of its own, so a
//! client that goes away (or the request timeout) does not cut it short; asking again
//! answers at once when it finished, and resumes it where it stopped when it did not.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use super::Response;
use crate::api::error::ApiError;
use crate::api::headers::DOCKER_CONTENT_DIGEST;
use crate::api::AppState;
use crate::oci::{RepoName, Tag};
use crate::registry::RegistryError;

pub async fn import(state: &AppState, req: &HttpRequest, repo: &RepoName) -> Response {
    let params = super::query(req);
    let cid: cid::Cid = super::query_param(&params, "cid")
        .ok_or_else(|| ApiError::QueryInvalid("cid is required: the image CID to import".into()))?
        .parse()
        .map_err(|e| ApiError::CidInvalid(format!("{e}")))?;
    let tag: Option<Tag> = super::query_param(&params, "tag")
        .map(|tag| {
            tag.parse()
                .map_err(|e| ApiError::ReferenceInvalid(format!("tag: {e}")))
        })
        .transpose()?;
    let registry = state.registry.clone();
    let source = state.import_source.clone();
    let origin = AppState::origin(req);
    let task_repo = repo.clone();
    let task = tokio::spawn(async move {
        registry
            .import_image(&source, &cid, &task_repo, tag, &origin, &|_| {})
            .await
    });
    let imported = task
        .await
        .map_err(|e| RegistryError::Internal(format!("import task: {e}")))??;
    if !imported.unchanged {
        let public = state.anonymous_may_pull(repo).await;
        state
            .registry
            .publish_after_push(repo, &imported.tag, &imported.digest, public)
            .await;
    }
    let status = if imported.unchanged {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(HttpResponse::build(status)
        .insert_header((
            header::LOCATION,
            state.location(&format!("/v2/{repo}/manifests/{}", imported.digest)),
        ))
        .insert_header((DOCKER_CONTENT_DIGEST, imported.digest.to_string()))
        .json(json!({
            "repository": repo.as_str(),
            "tag": imported.tag.as_str(),
            "digest": imported.digest.to_string(),
            "mediaType": imported.media_type,
            "cid": imported.root.to_string(),
            "manifests": imported.manifests,
            "manifestsPresent": imported.manifests_present,
            "blobs": imported.blobs,
            "blobsPresent": imported.blobs_present,
            "bytesFetched": imported.bytes_fetched,
            "unchanged": imported.unchanged,
        })))
}
