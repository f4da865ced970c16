//! Extension API: `GET /v2/_ext/<name>/manifests/<reference>/layers`, every descriptor of a
//! manifest (and of each child of an index) with the CID of its bytes and a gateway link;
//! `GET /v2/_ext/<name>/manifests/<reference>/layout`, the image CID of its OCI Image
//! Layout in IPFS.

use actix_web::HttpResponse;
use serde_json::{json, Value};

use super::Response;
use crate::api::AppState;
use crate::oci::{Reference, RepoName};
use crate::registry::{LayerView, ManifestView, Role};

pub async fn layers(state: &AppState, repo: &RepoName, reference: &Reference) -> Response {
    let view = state.registry.browse_manifest(repo, reference).await?;
    let mut body = manifest_json(state, &view);
    body["name"] = json!(repo.as_str());
    body["reference"] = json!(reference.to_string());
    Ok(HttpResponse::Ok().json(body))
}

pub async fn layout(state: &AppState, repo: &RepoName, reference: &Reference) -> Response {
    let layout = state.registry.image_layout(repo, reference).await?;
    Ok(HttpResponse::Ok().json(json!({
        "cid": layout.cid.to_string(),
        "path": format!("/ipfs/{}", layout.cid),
        "tag": layout.tag,
        "digest": layout.manifest.to_string(),
    })))
}

fn manifest_json(state: &AppState, view: &ManifestView) -> Value {
    let mut body = json!({
        "digest": view.digest.to_string(),
        "mediaType": view.media_type,
        "size": view.size,
        "layers": view.layers.iter().map(|layer| layer_json(state, layer)).collect::<Vec<_>>(),
    });
    if let Some(artifact_type) = &view.artifact_type {
        body["artifactType"] = json!(artifact_type);
    }
    if let Some(platform) = &view.platform {
        body["platform"] = platform.clone();
    }
    if !view.manifests.is_empty() {
        body["manifests"] = view
            .manifests
            .iter()
            .map(|child| manifest_json(state, child))
            .collect();
    }
    // What one answer leaves out (see registry::browse): said, never silently dropped.
    if view.repeated {
        body["repeated"] = json!(true);
    }
    if view.more_manifests > 0 {
        body["moreManifests"] = json!(view.more_manifests);
    }
    if view.more_layers > 0 {
        body["moreLayers"] = json!(view.more_layers);
    }
    body
}

fn layer_json(state: &AppState, layer: &LayerView) -> Value {
    let d = &layer.descriptor;
    let mut body = json!({
        "role": match layer.role {
            Role::Config => "config",
            Role::Layer => "layer",
        },
        "digest": d.digest.to_string(),
        "mediaType": d.media_type,
        "size": d.size,
    });
    if let Some(cid) = &layer.cid {
        body["cid"] = json!(cid.to_string());
        body["gatewayUrl"] = json!(state.gateway_link(cid));
    }
    if let Some(annotations) = &d.annotations {
        body["annotations"] = json!(annotations);
    }
    if layer.annotations_omitted {
        body["annotationsOmitted"] = json!(true);
    }
    body
}
