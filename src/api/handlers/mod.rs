//! Request dispatch: which endpoint, which method, with validated names and references.

mod blobs;
mod browse;
pub mod gateway;
pub mod listing;
mod manifests;
mod uploads;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::error::ApiError;
use super::path::{self, Endpoint};
use super::AppState;
use crate::oci::{Digest, Reference, RepoName};

type Response = Result<HttpResponse, ApiError>;

/// The response to a HEAD request for content of `len` bytes. actix-http writes
/// `Content-Length` from the body's size (dropping one set by hand, so `no_chunking(len)`
/// with an empty body announces 0); a sized body that is never sent for HEAD announces `len`.
fn head_response(mut response: actix_web::HttpResponseBuilder, len: u64) -> HttpResponse {
    let nothing = futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>();
    response.body(actix_web::body::SizedStream::new(len, nothing))
}

pub async fn base() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({}))
}

pub async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Response {
    let tail = req.match_info().get("tail").unwrap_or_default();
    let endpoint = path::parse(tail).ok_or(ApiError::NotFound)?;
    let method = req.method().clone();
    match endpoint {
        Endpoint::Manifest { name, reference } => {
            let repo = repo_name(name)?;
            match method {
                Method::GET | Method::HEAD => {
                    let reference = lookup_reference(reference)?;
                    manifests::get(&state, &repo, &reference, method == Method::HEAD).await
                }
                Method::PUT => {
                    let reference = parse_reference(reference)?;
                    manifests::put(&state, &req, payload, &repo, &reference).await
                }
                Method::DELETE => {
                    let reference = parse_reference(reference)?;
                    manifests::delete(&state, &repo, &reference).await
                }
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
        Endpoint::Blob { name, digest } => {
            let repo = repo_name(name)?;
            let digest = parse_digest(digest)?;
            match method {
                Method::GET => blobs::get(&state, &req, &repo, &digest).await,
                Method::HEAD => blobs::head(&state, &repo, &digest).await,
                Method::DELETE => blobs::delete(&state, &repo, &digest).await,
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
        Endpoint::UploadStart { name } => {
            let repo = repo_name(name)?;
            match method {
                Method::POST => uploads::start(&state, &req, payload, &repo).await,
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
        Endpoint::Upload { name, id } => {
            let repo = repo_name(name)?;
            let id: Uuid = id.parse().map_err(|_| ApiError::UploadUnknown)?;
            match method {
                Method::GET => uploads::status(&state, &repo, id).await,
                Method::PATCH => uploads::append(&state, &req, payload, &repo, id).await,
                Method::PUT => uploads::complete(&state, &req, payload, &repo, id).await,
                Method::DELETE => uploads::cancel(&state, &repo, id).await,
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
        Endpoint::Tags { name } => {
            let repo = repo_name(name)?;
            match method {
                Method::GET => listing::tags(&state, &req, &repo).await,
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
        Endpoint::ExtLayers { name, reference } => {
            let repo = repo_name(name)?;
            let reference = lookup_reference(reference)?;
            match method {
                Method::GET => browse::layers(&state, &repo, &reference).await,
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
        Endpoint::Referrers { name, digest } => {
            let repo = repo_name(name)?;
            let digest = parse_digest(digest)?;
            match method {
                Method::GET => listing::referrers(&state, &req, &repo, &digest).await,
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
    }
}

pub(super) fn repo_name(name: &str) -> Result<RepoName, ApiError> {
    name.parse()
        .map_err(|_| ApiError::NameInvalid(name.to_owned()))
}

pub(super) fn parse_reference(reference: &str) -> Result<Reference, ApiError> {
    reference.parse().map_err(|e| match e {
        crate::oci::InvalidReference::Digest(e) => ApiError::DigestInvalid(e.to_string()),
        crate::oci::InvalidReference::Tag(e) => ApiError::ReferenceInvalid(e.to_string()),
    })
}

/// A reference to look a manifest up by. One that is neither a tag nor a digest names no
/// manifest: 404 `MANIFEST_UNKNOWN`, as for a well-formed one that is absent (what the OCI
/// conformance suite expects); only a push with it is a malformed request.
pub(super) fn lookup_reference(reference: &str) -> Result<Reference, ApiError> {
    reference
        .parse()
        .map_err(|_| ApiError::Registry(crate::registry::RegistryError::ManifestUnknown))
}

fn parse_digest(digest: &str) -> Result<Digest, ApiError> {
    digest
        .parse()
        .map_err(|e: crate::oci::DigestError| ApiError::DigestInvalid(e.to_string()))
}

/// The request's query parameters, decoded, in order (repeats kept).
pub(super) fn query(req: &HttpRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(super) fn query_param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}
