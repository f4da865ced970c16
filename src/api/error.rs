//! The one place where failures become OCI error responses.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

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
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Registry(e) => match e {
                RegistryError::BlobUnknown(_) => "BLOB_UNKNOWN",
                RegistryError::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
                RegistryError::BlobUploadInvalid(_) | RegistryError::ChunkOutOfOrder { .. } => {
                    "BLOB_UPLOAD_INVALID"
                }
                RegistryError::DigestInvalid(_) => "DIGEST_INVALID",
                RegistryError::ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
                RegistryError::ManifestInvalid(_) => "MANIFEST_INVALID",
                RegistryError::ManifestUnknown => "MANIFEST_UNKNOWN",
                RegistryError::NameUnknown => "NAME_UNKNOWN",
                RegistryError::SizeInvalid(_)
                | RegistryError::TooLarge(_)
                | RegistryError::RangeNotSatisfiable { .. } => "SIZE_INVALID",
                RegistryError::Unsupported(_) => "UNSUPPORTED",
                RegistryError::TooManyRequests => "TOOMANYREQUESTS",
                RegistryError::Unavailable(_) => "UNAVAILABLE",
                RegistryError::Internal(_) => "UNKNOWN",
            },
            ApiError::NameInvalid(_) => "NAME_INVALID",
            ApiError::DigestInvalid(_) => "DIGEST_INVALID",
            ApiError::ReferenceInvalid(_) => "MANIFEST_INVALID",
            ApiError::UploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ApiError::PaginationInvalid(_) => "PAGINATION_NUMBER_INVALID",
            ApiError::HeaderInvalid(_) => "BLOB_UPLOAD_INVALID",
            ApiError::NotFound => "NOT_FOUND",
            ApiError::MethodNotAllowed => "UNSUPPORTED",
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            ApiError::Registry(RegistryError::BlobUnknown(d)) => json!({ "digest": d }),
            ApiError::Registry(RegistryError::ManifestBlobUnknown(missing)) => {
                json!({ "missing": missing })
            }
            ApiError::Registry(RegistryError::ChunkOutOfOrder { received }) => {
                json!({ "received": received })
            }
            ApiError::NameInvalid(name) => json!({ "name": name }),
            _ => serde_json::Value::Null,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Registry(e) => match e {
                RegistryError::BlobUnknown(_)
                | RegistryError::BlobUploadUnknown
                | RegistryError::ManifestUnknown
                | RegistryError::NameUnknown => StatusCode::NOT_FOUND,
                RegistryError::ChunkOutOfOrder { .. }
                | RegistryError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
                RegistryError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                RegistryError::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
                RegistryError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
                RegistryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                RegistryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                RegistryError::BlobUploadInvalid(_)
                | RegistryError::DigestInvalid(_)
                | RegistryError::ManifestBlobUnknown(_)
                | RegistryError::ManifestInvalid(_)
                | RegistryError::SizeInvalid(_) => StatusCode::BAD_REQUEST,
            },
            ApiError::UploadUnknown | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NameInvalid(_)
            | ApiError::DigestInvalid(_)
            | ApiError::ReferenceInvalid(_)
            | ApiError::PaginationInvalid(_)
            | ApiError::HeaderInvalid(_) => StatusCode::BAD_REQUEST,
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
            ApiError::Registry(RegistryError::Unavailable(_) | RegistryError::TooManyRequests) => {
                response.insert_header((header::RETRY_AFTER, "1"));
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
