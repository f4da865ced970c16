//! Extension API: `GET /v2/_ext/federation`, this registry's public index (its root and
//! IPNS name) for other registries to follow (docs/federation.md).

use actix_web::HttpResponse;

use super::Response;
use crate::api::AppState;

pub async fn status(state: &AppState) -> Response {
    let index = state.registry.index_status().await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-cache"))
        .json(index))
}
