//! Request dispatch: the endpoint from the table, its parameters validated, the operation for
//! the method.

pub(super) mod blobs;
pub(super) mod browse;
pub(super) mod federation;
pub mod gateway;
pub(super) mod import;
pub mod listing;
pub(super) mod manifests;
pub(super) mod uploads;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::endpoints::{find, Call, Methods, Operation};
use super::error::ApiError;
use super::path;
use super::AppState;
use crate::oci::{Digest, InvalidReference, Reference, RepoName};

pub(super) type Response = Result<HttpResponse, ApiError>;

/// The response to a HEAD request for content of `len` bytes. actix-http writes
/// `Content-Length` from the body's size (dropping one set by hand, so `no_chunking(len)`
/// with an empty body announces 0); a sized body that is never sent for HEAD announces `len`.
fn head_response(mut response: actix_web::HttpResponseBuilder, len: u64) -> HttpResponse {
    let nothing = futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>();
    response.body(actix_web::body::SizedStream::new(len, nothing))
}

pub(super) fn base() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({}))
}

/// Every `/v2` request but the fixed paths' own methods.
pub async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Response {
    let tail = req.match_info().get("tail").unwrap_or_default();
    let (endpoint, segments) = path::parse(tail).ok_or(ApiError::NotFound)?;
    let method = req.method().clone();
    let shared = state.clone();
    let call = |req| Call {
        state,
        req,
        payload,
    };
    match endpoint.methods {
        // actix routes the methods they serve; any other is no endpoint, as for an unknown path.
        Methods::Registry(_) => Err(ApiError::NotFound),
        Methods::Repository(operations) => {
            let repo = repo_name(segments.name)?;
            let handler = operation(operations, &method)?;
            writable(&shared, &method, &repo).await?;
            handler(call(req), repo).await
        }
        Methods::Digest(operations) => {
            let repo = repo_name(segments.name)?;
            let digest = parse_digest(segments.last)?;
            let handler = operation(operations, &method)?;
            writable(&shared, &method, &repo).await?;
            handler(call(req), repo, digest).await
        }
        Methods::Upload(operations) => {
            let repo = repo_name(segments.name)?;
            let id: Uuid = segments.last.parse().map_err(|_| ApiError::UploadUnknown)?;
            let handler = operation(operations, &method)?;
            writable(&shared, &method, &repo).await?;
            handler(call(req), repo, id).await
        }
        Methods::Lookup(operations) => {
            let repo = repo_name(segments.name)?;
            let reference = looked_up(segments.last.parse())?;
            let handler = operation(operations, &method)?;
            handler(call(req), repo, reference).await
        }
        Methods::Reference(operations) => {
            let repo = repo_name(segments.name)?;
            let reference = segments.last.parse();
            let handler = operation(operations, &method)?;
            writable(&shared, &method, &repo).await?;
            handler(call(req), repo, reference).await
        }
    }
}

/// The handler of the operation for `method`.
fn operation<H: Copy>(operations: &[Operation<H>], method: &Method) -> Result<H, ApiError> {
    find(operations, method)
        .map(|operation| operation.handler)
        .ok_or(ApiError::MethodNotAllowed)
}

pub(super) fn repo_name(name: &str) -> Result<RepoName, ApiError> {
    name.parse()
        .map_err(|_| ApiError::NameInvalid(name.to_owned()))
}

pub(super) fn parse_reference(reference: &str) -> Result<Reference, ApiError> {
    pushed(reference.parse())
}

/// A reference to push or delete by: a malformed one is a bad request.
pub(super) fn pushed(
    reference: Result<Reference, InvalidReference>,
) -> Result<Reference, ApiError> {
    reference.map_err(|e| match e {
        InvalidReference::Digest(e) => ApiError::DigestInvalid(e.to_string()),
        InvalidReference::Tag(e) => ApiError::ReferenceInvalid(e.to_string()),
    })
}

/// A reference to look a manifest up by. One that is neither a tag nor a digest names no
/// manifest: 404 `MANIFEST_UNKNOWN`, as for a well-formed one that is absent (what the OCI
/// conformance suite expects); only a push with it is a malformed request.
pub(super) fn looked_up(
    reference: Result<Reference, InvalidReference>,
) -> Result<Reference, ApiError> {
    reference.map_err(|_| ApiError::Registry(crate::registry::RegistryError::ManifestUnknown))
}

fn parse_digest(digest: &str) -> Result<Digest, ApiError> {
    digest
        .parse()
        .map_err(|e: crate::oci::DigestError| ApiError::DigestInvalid(e.to_string()))
}

/// containerd's `?ns=<registry host>` on a mirror request: which upstream it means.
pub(super) fn ns(req: &HttpRequest) -> Option<&str> {
    req.query_string()
        .split('&')
        .find_map(|pair| pair.strip_prefix("ns="))
        .filter(|host| !host.is_empty() && !host.contains('%'))
}

/// Refuses a push or delete (any method but GET and HEAD) to a mirrored repository.
async fn writable(state: &AppState, method: &Method, repo: &RepoName) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    Ok(state.registry.ensure_writable(repo).await?)
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
