//! Extension API: `GET /v2/_ext/federation`, what this registry publishes for others to
//! follow, and (for admins) the state of its own `[[federation.follow]]` rules
//! (docs/federation.md).

use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use super::Response;
use crate::api::{access, AppState};

pub async fn federation(state: &AppState, req: &HttpRequest) -> Response {
    let mut body = json!({"root": null, "ipns": null, "updated_at": null});
    // The rules name their sources and errors: an admin's business, everyone's with auth
    // off. `*` is a name only a grant on every repository covers.
    if access::may_administer(state, req, "*").await? {
        body["follow"] = serde_json::to_value(state.registry.follow_status().await?)
            .map_err(|e| crate::registry::RegistryError::Internal(e.to_string()))?;
    }
    Ok(HttpResponse::Ok().json(body))
}
