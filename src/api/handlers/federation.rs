//! Extension API: `GET /v2/_ext/federation`, this registry's public index (its root and
//! IPNS name) for other registries to follow, and for admins the state of its own
//! `[[federation.follow]]` rules (docs/federation.md).

use actix_web::{HttpRequest, HttpResponse};

use super::Response;
use crate::api::{access, AppState};
use crate::registry::RegistryError;

pub async fn status(state: &AppState, req: &HttpRequest) -> Response {
    let index = state.registry.index_status().await?;
    let mut body =
        serde_json::to_value(index).map_err(|e| RegistryError::Internal(e.to_string()))?;
    // The rules name their sources and errors: an admin's business (everyone's with auth
    // off). `*` is a name only a grant on every repository covers.
    if access::may_administer(state, req, "*").await? {
        body["follow"] = serde_json::to_value(state.registry.follow_status().await?)
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
    }
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-cache"))
        .json(body))
}
