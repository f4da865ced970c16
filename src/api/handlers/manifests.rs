use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::Response;
use crate::api::error::ApiError;
use crate::api::headers::{self, DOCKER_CONTENT_DIGEST, OCI_SUBJECT};
use crate::api::{access, body, AppState};
use crate::oci::{Reference, RepoName};
use crate::registry::{ManifestPush, Route};

pub async fn get(
    state: &AppState,
    req: &HttpRequest,
    repo: &RepoName,
    reference: &Reference,
    head: bool,
) -> Response {
    let (manifest, stale) = match state.registry.route(repo, super::ns(req)).await? {
        Route::Local => (state.registry.get_manifest(repo, reference).await?, None),
        Route::Mirrored(name) => {
            let got = state
                .registry
                .get_mirrored_manifest(&name, reference, &AppState::origin(req))
                .await?;
            (got.manifest, got.stale)
        }
    };
    if !head {
        state
            .registry
            .note_manifest_pull(repo, reference, &manifest, || AppState::origin(req))
            .await;
    }
    let mut response = HttpResponse::Ok();
    if stale.is_some() {
        // RFC 9111's stale warning: the upstream could not confirm the tag.
        response.insert_header((header::WARNING, "110 - \"Response is Stale\""));
    }
    response
        .insert_header((header::CONTENT_TYPE, manifest.media_type.as_str()))
        .insert_header((DOCKER_CONTENT_DIGEST, manifest.digest.to_string()))
        .insert_header((header::ETAG, format!("\"{}\"", manifest.digest)));
    if head {
        return Ok(super::head_response(
            response,
            manifest.content.len() as u64,
        ));
    }
    Ok(response.body(manifest.content))
}

pub async fn put(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    repo: &RepoName,
    reference: &Reference,
) -> Response {
    let limit = state.registry.settings().max_manifest_size;
    if headers::content_length(req.headers())?.is_some_and(|len| len > limit as u64) {
        return Err(crate::registry::RegistryError::TooLarge(format!(
            "manifest exceeds the limit of {limit} bytes"
        ))
        .into());
    }
    let content = body::read_limited(payload, limit).await?;
    let push = ManifestPush {
        content,
        content_type: headers::content_type(req.headers()),
    };
    let pushed = state
        .registry
        .put_manifest(repo, reference, push, &AppState::origin(req))
        .await?;
    if let Reference::Tag(tag) = reference {
        let public = state.anonymous_may_pull(repo).await;
        state
            .registry
            .publish_after_push(repo, tag, &pushed.digest, public)
            .await;
    }
    let mut response = HttpResponse::build(StatusCode::CREATED);
    response
        .insert_header((
            header::LOCATION,
            state.location(&format!("/v2/{repo}/manifests/{}", pushed.digest)),
        ))
        .insert_header((DOCKER_CONTENT_DIGEST, pushed.digest.to_string()));
    if let Some(subject) = pushed.subject {
        response.insert_header((OCI_SUBJECT, subject.to_string()));
    }
    Ok(response.finish())
}

/// `?override_immutable=true` deletes an immutable tag (or a manifest one points at); it is
/// honoured only for an admin of the repository (or anyone, with auth off), and refused
/// with DENIED for anyone else rather than ignored.
pub async fn delete(
    state: &AppState,
    req: &HttpRequest,
    repo: &RepoName,
    reference: &Reference,
) -> Response {
    let override_immutable = query_flag(req, "override_immutable")?;
    if override_immutable && !access::may_administer(state, req, repo.as_str()).await? {
        return Err(ApiError::Denied);
    }
    state
        .registry
        .delete_manifest(repo, reference, override_immutable, &AppState::origin(req))
        .await?;
    Ok(HttpResponse::Accepted().finish())
}

/// A boolean query parameter: absent is false; present, it must be `true` or `false`.
fn query_flag(req: &HttpRequest, name: &str) -> Result<bool, ApiError> {
    let params = super::query(req);
    match super::query_param(&params, name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::QueryInvalid(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}
