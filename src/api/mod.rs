//! The OCI Distribution HTTP API: parse the request, call the registry core, map the result.

mod access;
mod body;
mod endpoints;
mod error;
mod handlers;
pub mod headers;
pub mod middleware;
mod ops;
mod path;
mod slots;
mod token;
mod ui;
mod viewer;

use std::sync::Arc;

use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, HttpRequest};
use url::Url;

use endpoints::{Call, Methods, ENDPOINTS};
pub use error::ApiError;

use crate::auth::Auth;
use crate::registry::Registry;

/// Everything the handlers share.
pub struct AppState {
    pub registry: Arc<Registry>,
    /// Base for absolute `Location`/`Link` URLs; relative paths when `None`.
    pub public_url: Option<Url>,
    /// Advertised as `OCI-Chunk-Min-Length` (0 = not advertised).
    pub chunk_min_length: u64,
    /// The IPFS gateway layer links point at; the registry's own when `None`.
    pub gateway_url: Option<Url>,
    /// Where `POST /v2/_ext/<name>/import` reads image layouts from.
    pub import_source: crate::registry::ImportSource,
    /// Token authentication; `None` when `auth.enabled` is false (everyone may do anything).
    pub auth: Option<Arc<Auth>>,
}

impl AppState {
    /// Whether anonymous callers may pull `repo` (always, with auth off): only then is an
    /// image published as a layout, which anyone can fetch by CID. Unknown when the user
    /// store fails, and then treated as private.
    pub async fn anonymous_may_pull(&self, repo: &crate::oci::RepoName) -> bool {
        let Some(auth) = &self.auth else {
            return true;
        };
        match auth.rights(None).await {
            Ok(rights) => rights.allows(repo.as_str(), crate::auth::scope::PULL),
            Err(e) => {
                tracing::warn!(event = "public_check_failed", repository = %repo, error = %e);
                false
            }
        }
    }

    /// A location for `path` (which starts with `/v2/`).
    pub fn location(&self, path: &str) -> String {
        match &self.public_url {
            Some(base) => format!("{}{}", base.as_str().trim_end_matches('/'), path),
            None => path.to_owned(),
        }
    }

    /// The request behind a change, for its notifications.
    pub fn origin(req: &HttpRequest) -> crate::registry::Origin {
        use actix_web::HttpMessage;
        let extensions = req.extensions();
        let tag = extensions.get::<middleware::RequestTag>();
        let header = |name: actix_web::http::header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        crate::registry::Origin {
            request_id: tag.map(|t| t.id.clone()).unwrap_or_default(),
            addr: tag.map(|t| t.client.to_string()).unwrap_or_default(),
            host: header(actix_web::http::header::HOST),
            method: req.method().to_string(),
            user_agent: header(actix_web::http::header::USER_AGENT),
            actor: extensions
                .get::<access::Caller>()
                .map(|caller| caller.0.sub.clone())
                .filter(|name| !name.is_empty()),
        }
    }

    /// Where a person fetches content by CID: the configured gateway, else ours.
    pub fn gateway_link(&self, cid: &cid::Cid) -> String {
        match &self.gateway_url {
            Some(base) => format!("{}/ipfs/{cid}", base.as_str().trim_end_matches('/')),
            None => self.location(&format!("/ipfs/{cid}")),
        }
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(ui::configure);
    cfg.route("/ipfs/{cid}", web::get().to(handlers::gateway::get))
        .route("/ipfs/{cid}", web::head().to(handlers::gateway::head))
        .route("/ipfs/{cid}/", web::get().to(handlers::gateway::get))
        .route("/ipfs/{cid}/", web::head().to(handlers::gateway::head));
    cfg.service(
        web::resource("/token")
            .app_data(web::PayloadConfig::new(token::MAX_FORM))
            .route(web::get().to(token::get))
            .route(web::post().to(token::post)),
    );
    cfg.route("/healthz", web::get().to(ops::healthz))
        .route("/healthz", web::head().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/readyz", web::head().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics));
    let mut v2 = web::scope("/v2")
        // Inside the version header, so challenges carry it too (docker reads it there).
        .wrap(from_fn(access::check))
        .wrap(DefaultHeaders::new().add(headers::API_VERSION));
    // The paths without a repository are routes of their own, one per method: a method they
    // do not serve goes on to `dispatch` like any other path.
    for endpoint in ENDPOINTS {
        let Methods::Registry(operations) = endpoint.methods else {
            continue;
        };
        for path in endpoint.paths {
            for operation in operations {
                let handler = operation.handler;
                let call =
                    move |req: HttpRequest, payload: web::Payload, state: web::Data<AppState>| {
                        handler(Call {
                            state,
                            req,
                            payload,
                        })
                    };
                v2 = v2.route(path, web::method(operation.method.clone()).to(call));
            }
        }
    }
    cfg.service(v2.route("/{tail:.*}", web::route().to(handlers::dispatch)));
}
