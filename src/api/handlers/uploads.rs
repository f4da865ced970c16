use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::{parse_digest, query, query_param, repo_name, Response};
use crate::api::error::ApiError;
use crate::api::headers::{self, DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, OCI_CHUNK_MIN_LENGTH};
use crate::api::{access, body, AppState};
use crate::oci::RepoName;
use crate::registry::{BlobRecord, UploadStatus};

/// POST: mount (`?mount=&from=`), single-request upload (`?digest=`) or a new session.
pub async fn start(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    repo: &RepoName,
) -> Response {
    let params = query(req);
    if let Some(mount) = query_param(&params, "mount") {
        let digest = parse_digest(mount)?;
        // Without `from` there is no repository to mount from that the client is known to
        // read; the spec then allows falling back to an upload session. The same fallback
        // when the caller may not pull `from`: the answer must not reveal what it holds.
        if let Some(from) = query_param(&params, "from") {
            let from = repo_name(from)?;
            let readable = access::may_pull(state, req, from.as_str());
            if !readable {
                tracing::debug!(event = "mount_refused", from = %from, to = %repo);
            } else if let Some(record) = state
                .registry
                .mount_blob(&from, repo, &digest, &AppState::origin(req))
                .await?
            {
                return Ok(created(state, repo, &record));
            }
        }
    } else if let Some(digest) = query_param(&params, "digest") {
        let digest = parse_digest(digest)?;
        let length = headers::content_length(req.headers())?;
        let record = state
            .registry
            .store_blob(
                repo,
                &digest,
                body::stream(payload),
                length,
                &AppState::origin(req),
            )
            .await?;
        return Ok(created(state, repo, &record));
    }
    let status = state.registry.start_upload(repo).await?;
    let mut response = session(state, repo, status, StatusCode::ACCEPTED);
    if state.chunk_min_length > 0 {
        response.insert_header((OCI_CHUNK_MIN_LENGTH, state.chunk_min_length.to_string()));
    }
    Ok(response.finish())
}

pub async fn status(state: &AppState, repo: &RepoName, id: Uuid) -> Response {
    let status = state.registry.upload_status(repo, id).await?;
    Ok(session(state, repo, status, StatusCode::NO_CONTENT).finish())
}

pub async fn append(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    repo: &RepoName,
    id: Uuid,
) -> Response {
    let range = headers::content_range(req.headers())?;
    let length = headers::content_length(req.headers())?;
    let status = state
        .registry
        .append_upload(repo, id, body::stream(payload), range, length)
        .await?;
    Ok(session(state, repo, status, StatusCode::ACCEPTED).finish())
}

pub async fn complete(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    repo: &RepoName,
    id: Uuid,
) -> Response {
    let params = query(req);
    let digest = query_param(&params, "digest")
        .ok_or_else(|| ApiError::DigestInvalid("the digest query parameter is required".into()))?;
    let digest = parse_digest(digest)?;
    let length = headers::content_length(req.headers())?;
    let record = state
        .registry
        .complete_upload(
            repo,
            id,
            &digest,
            body::stream(payload),
            length,
            &AppState::origin(req),
        )
        .await?;
    Ok(created(state, repo, &record))
}

pub async fn cancel(state: &AppState, repo: &RepoName, id: Uuid) -> Response {
    state.registry.cancel_upload(repo, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

fn created(state: &AppState, repo: &RepoName, record: &BlobRecord) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            state.location(&format!("/v2/{repo}/blobs/{}", record.digest)),
        ))
        .insert_header((DOCKER_CONTENT_DIGEST, record.digest.to_string()))
        .finish()
}

fn session(
    state: &AppState,
    repo: &RepoName,
    status: UploadStatus,
    code: StatusCode,
) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::build(code);
    response
        .insert_header((
            header::LOCATION,
            state.location(&format!("/v2/{repo}/blobs/uploads/{}", status.id)),
        ))
        .insert_header((header::RANGE, headers::upload_range(status.bytes_received)))
        .insert_header((DOCKER_UPLOAD_UUID, status.id.to_string()));
    response
}
