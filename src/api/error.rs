//! The one place where failures become OCI error responses.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use super::access::Challenge;
use crate::auth::AuthError;
use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("invalid repository name")]
    NameInvalid(String),
    #[error("invalid digest: {0}")]
    DigestInvalid(String),
    #[error("invalid tag or reference: {0}")]
    ReferenceInvalid(String),
    #[error("invalid upload location")]
    UploadUnknown,
    #[error("invalid pagination parameter: {0}")]
    PaginationInvalid(String),
    #[error("invalid request header: {0}")]
    HeaderInvalid(String),
    #[error("invalid query parameter: {0}")]
    QueryInvalid(String),
    #[error("invalid CID: {0}")]
    CidInvalid(String),
    #[error("unsupported gateway response format: {0}")]
    FormatUnsupported(String),
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// No token, an invalid one, or one without the scope the request needs.
    #[error("authentication required")]
    Unauthorized(Challenge),
    /// A browser page (UI, gateway) the caller may see only after logging in: answered
    /// with a Basic challenge, so the browser asks for credentials.
    #[error("log in to see this")]
    LoginRequired,
    /// A form of the web UI posted from another site, or by a browser that says not where
    /// from (the UI's CSRF defence, docs/security.md).
    #[error("this form was not sent from the registry's own page")]
    CrossSite,
    /// Authenticated, but the caller may not do this.
    #[error("requested access to the resource is denied")]
    Denied,
    /// More requests than `limits.max_concurrent_requests` (429).
    #[error("too many concurrent requests; retry later")]
    TooManyRequests,
    /// The request ran past `limits.request_timeout` (503).
    #[error("the request did not finish within {0:?}")]
    Timeout(std::time::Duration),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Registry(e) => match e {
                RegistryError::BlobUnknown(_)
                | RegistryError::BlobQuarantined(_)
                | RegistryError::ContentUnknown(_) => "BLOB_UNKNOWN",
                RegistryError::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
                RegistryError::BlobUploadInvalid(_) | RegistryError::ChunkOutOfOrder { .. } => {
                    "BLOB_UPLOAD_INVALID"
                }
                RegistryError::DigestInvalid(_) => "DIGEST_INVALID",
                RegistryError::ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
                RegistryError::ManifestInvalid(_) => "MANIFEST_INVALID",
                // Not in the spec (no spec operation imports): the extension's own code.
                RegistryError::LayoutInvalid(_) => "LAYOUT_INVALID",
                RegistryError::ManifestUnknown | RegistryError::LayoutUnknown => "MANIFEST_UNKNOWN",
                RegistryError::NameUnknown => "NAME_UNKNOWN",
                RegistryError::SizeInvalid(_)
                | RegistryError::TooLarge(_)
                | RegistryError::RangeNotSatisfiable { .. } => "SIZE_INVALID",
                RegistryError::TagImmutable(_) => "TAG_INVALID",
                RegistryError::Unsupported(_) => "UNSUPPORTED",
                RegistryError::TooManyRequests => "TOOMANYREQUESTS",
                RegistryError::Unavailable(_) | RegistryError::UpstreamUnavailable { .. } => {
                    "UNAVAILABLE"
                }
                RegistryError::Internal(_) => "UNKNOWN",
            },
            ApiError::NameInvalid(_) => "NAME_INVALID",
            ApiError::DigestInvalid(_) => "DIGEST_INVALID",
            ApiError::ReferenceInvalid(_) => "MANIFEST_INVALID",
            ApiError::UploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ApiError::PaginationInvalid(_) => "PAGINATION_NUMBER_INVALID",
            ApiError::HeaderInvalid(_) => "BLOB_UPLOAD_INVALID",
            ApiError::QueryInvalid(_) => "UNSUPPORTED",
            ApiError::CidInvalid(_) => "CID_INVALID",
            ApiError::FormatUnsupported(_) => "UNSUPPORTED",
            ApiError::NotFound => "NOT_FOUND",
            ApiError::MethodNotAllowed => "UNSUPPORTED",
            ApiError::Auth(e) => match e {
                AuthError::InvalidCredentials | AuthError::InvalidToken(_) => "UNAUTHORIZED",
                AuthError::Throttled(_) | AuthError::Busy => "TOOMANYREQUESTS",
                AuthError::BadRequest(_) => "UNSUPPORTED",
                AuthError::Unavailable(_) => "UNAVAILABLE",
                AuthError::Internal(_) | AuthError::Key(_) => "UNKNOWN",
            },
            ApiError::Unauthorized(_) | ApiError::LoginRequired => "UNAUTHORIZED",
            ApiError::Denied | ApiError::CrossSite => "DENIED",
            ApiError::TooManyRequests => "TOOMANYREQUESTS",
            ApiError::Timeout(_) => "UNAVAILABLE",
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            ApiError::Registry(RegistryError::BlobUnknown(d)) => json!({ "digest": d }),
            ApiError::Registry(RegistryError::BlobQuarantined(d)) => {
                json!({ "digest": d, "quarantined": true })
            }
            ApiError::Registry(RegistryError::ContentUnknown(cid)) => {
                json!({ "cid": cid.to_string() })
            }
            ApiError::Registry(RegistryError::ManifestBlobUnknown(missing)) => {
                json!({ "missing": missing })
            }
            ApiError::Registry(RegistryError::ChunkOutOfOrder { received }) => {
                json!({ "received": received })
            }
            ApiError::NameInvalid(name) => json!({ "name": name }),
            // An object, never null: Docker 20.10 reads an error with a null detail as a bare
            // code and retries a refused upload five times with back-off (~50 s) before it
            // reports the DENIED it already had.
            _ => json!({}),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Registry(e) => match e {
                RegistryError::BlobUnknown(_)
                | RegistryError::BlobQuarantined(_)
                | RegistryError::ContentUnknown(_)
                | RegistryError::BlobUploadUnknown
                | RegistryError::ManifestUnknown
                | RegistryError::LayoutUnknown
                | RegistryError::NameUnknown => StatusCode::NOT_FOUND,
                RegistryError::ChunkOutOfOrder { .. }
                | RegistryError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
                RegistryError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                // The request is sound; the tag's state forbids it.
                RegistryError::TagImmutable(_) => StatusCode::CONFLICT,
                RegistryError::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
                RegistryError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
                RegistryError::Unavailable(_) | RegistryError::UpstreamUnavailable { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                RegistryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                RegistryError::BlobUploadInvalid(_)
                | RegistryError::DigestInvalid(_)
                | RegistryError::ManifestBlobUnknown(_)
                | RegistryError::ManifestInvalid(_)
                | RegistryError::LayoutInvalid(_)
                | RegistryError::SizeInvalid(_) => StatusCode::BAD_REQUEST,
            },
            ApiError::UploadUnknown | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Auth(e) => match e {
                AuthError::InvalidCredentials | AuthError::InvalidToken(_) => {
                    StatusCode::UNAUTHORIZED
                }
                AuthError::Throttled(_) | AuthError::Busy => StatusCode::TOO_MANY_REQUESTS,
                AuthError::BadRequest(_) => StatusCode::BAD_REQUEST,
                AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                AuthError::Internal(_) | AuthError::Key(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Unauthorized(_) | ApiError::LoginRequired => StatusCode::UNAUTHORIZED,
            ApiError::Denied | ApiError::CrossSite => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NameInvalid(_)
            | ApiError::CidInvalid(_)
            | ApiError::FormatUnsupported(_)
            | ApiError::DigestInvalid(_)
            | ApiError::ReferenceInvalid(_)
            | ApiError::PaginationInvalid(_)
            | ApiError::HeaderInvalid(_)
            | ApiError::QueryInvalid(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(event = "request_failed", code = self.code(), error = %self);
        }
        let mut response = HttpResponse::build(status);
        match self {
            ApiError::Registry(RegistryError::ChunkOutOfOrder { received }) => {
                response.insert_header((header::RANGE, super::headers::upload_range(*received)));
            }
            ApiError::Registry(RegistryError::RangeNotSatisfiable { size }) => {
                response.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
            }
            ApiError::Registry(RegistryError::Unavailable(_) | RegistryError::TooManyRequests)
            | ApiError::Auth(AuthError::Unavailable(_) | AuthError::Busy)
            | ApiError::TooManyRequests
            | ApiError::Timeout(_) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::Registry(RegistryError::UpstreamUnavailable {
                retry_after: Some(seconds),
                ..
            }) => {
                response.insert_header((header::RETRY_AFTER, seconds.to_string()));
            }
            ApiError::Auth(AuthError::Throttled(wait)) => {
                response.insert_header((header::RETRY_AFTER, wait.as_secs().max(1).to_string()));
            }
            ApiError::Unauthorized(challenge) => {
                response.insert_header((header::WWW_AUTHENTICATE, challenge.to_string()));
            }
            ApiError::LoginRequired => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"ipfs-registry\", charset=\"UTF-8\"",
                ));
            }
            _ => {}
        }
        response.json(json!({
            "errors": [{
                "code": self.code(),
                "message": self.to_string(),
                "detail": self.detail(),
            }]
        }))
    }
}
