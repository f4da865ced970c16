//! The OCI Distribution HTTP API: parse the request, call the registry core, map the result.

mod body;
mod error;
mod handlers;
pub mod headers;
mod path;

use std::sync::Arc;

use actix_web::middleware::DefaultHeaders;
use actix_web::web;
use url::Url;

pub use error::ApiError;

use crate::registry::Registry;

/// Everything the handlers share.
pub struct AppState {
    pub registry: Arc<Registry>,
    /// Base for absolute `Location`/`Link` URLs; relative paths when `None`.
    pub public_url: Option<Url>,
    /// Advertised as `OCI-Chunk-Min-Length` (0 = not advertised).
    pub chunk_min_length: u64,
}

impl AppState {
    /// A location for `path` (which starts with `/v2/`).
    pub fn location(&self, path: &str) -> String {
        match &self.public_url {
            Some(base) => format!("{}{}", base.as_str().trim_end_matches('/'), path),
            None => path.to_owned(),
        }
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v2")
            .wrap(DefaultHeaders::new().add(headers::API_VERSION))
            .route("", web::get().to(handlers::base))
            .route("", web::head().to(handlers::base))
            .route("/", web::get().to(handlers::base))
            .route("/", web::head().to(handlers::base))
            .route("/_catalog", web::get().to(handlers::listing::catalog))
            .route("/{tail:.*}", web::route().to(handlers::dispatch)),
    );
}
