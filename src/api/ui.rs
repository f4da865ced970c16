//! A small web UI, rendered on the server (maud templates, no scripts): repositories →
//! tags → manifest → layers, each layer with its size, digest, CID and a gateway link.
//! Readable on a phone: one column, long digests wrap.
//!
//! With access control on, a person sees what they may pull: anonymously the public
//! repositories, after logging in (HTTP Basic, which the browser asks for when a page needs
//! it) their own.
//!
//! Pages: `/ui/` (repositories), `/ui/repo/<name>` (its tags), `/ui/image/<name>@<reference>`
//! (a manifest; an index lists its platforms). `@` appears in no name, tag or digest.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::error::ApiError;
use super::handlers::listing::paginate;
use super::handlers::{parse_reference, query, query_param, repo_name};
use super::viewer::Viewer;
use super::AppState;

use crate::oci::RepoName;
use crate::registry::{ImageLayout, LayerView, ManifestView, Page, Role};

/// Entries per listing page.
const PAGE: u32 = 100;

const STYLE: &str = r#"
:root { color-scheme: light dark; --muted: #6b7280; --line: #d1d5db; --accent: #2563eb; }
* { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; }
header { padding: .75rem 1rem; border-bottom: 1px solid var(--line); }
header a { font-weight: 600; text-decoration: none; color: inherit; }
main { max-width: 60rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.35rem; overflow-wrap: anywhere; margin: .5rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
a { color: var(--accent); }
ul.list { list-style: none; padding: 0; margin: 0; }
ul.list li { border-bottom: 1px solid var(--line); }
ul.list li a { display: block; padding: .75rem .25rem; overflow-wrap: anywhere; }
.card { border: 1px solid var(--line); border-radius: .5rem; padding: .75rem 1rem; margin: .75rem 0; }
.card h3 { font-size: 1rem; margin: 0 0 .5rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem .75rem; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; min-width: 0; }
code { font: .9em ui-monospace, SFMono-Regular, Menlo, monospace; overflow-wrap: anywhere; }
.muted { color: var(--muted); }
nav.pages { margin: 1rem 0; }
@media (max-width: 30rem) { dl { grid-template-columns: 1fr; } dt { margin-top: .35rem; } }
"#;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(redirect_home))
        .route("/ui/", web::get().to(repositories))
        .route("/ui/repo/{name:.+}", web::get().to(tags))
        .route("/ui/image/{spec:.+}", web::get().to(image));
}

fn page(title: &str, body: Markup) -> HttpResponse {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ipfs-registry" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { a href="/ui/" { "ipfs-registry" } }
                main { (body) }
            }
        }
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'",
        ))
        .body(markup.into_string())
}

/// The page the `last` query parameter asks for.
fn listing_page(req: &HttpRequest) -> Page {
    let params = query(req);
    Page {
        n: Some(PAGE),
        last: query_param(&params, "last").map(str::to_owned),
    }
}

fn next_link(path: &str, last: &Option<String>) -> Markup {
    html! {
        @if let Some(last) = last {
            @let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("last", last)
                .finish();
            nav.pages { a href={ (path) "?" (query) } { "Next page →" } }
        }
    }
}

async fn redirect_home() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

async fn repositories(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let viewer = Viewer::of(&state, &req).await?;
    let (viewer, state) = (&viewer, &state);
    let (names, next) = paginate(listing_page(&req), |page| async move {
        viewer.catalog(state, &page).await
    })
    .await?;
    let last = next.and_then(|next| next.last);
    Ok(page(
        "Repositories",
        html! {
            h1 { "Repositories" }
            @if names.is_empty() {
                p.muted { "Nothing pushed yet." }
            } @else {
                ul.list {
                    @for name in &names {
                        li { a href={ "/ui/repo/" (name) } { (name) } }
                    }
                }
            }
            (next_link("/ui/", &last))
        },
    ))
}

async fn tags(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let repo = repo_name(path.trim_end_matches('/'))?;
    Viewer::of(&state, &req)
        .await?
        .require_pull(repo.as_str())?;
    let (registry, repo_ref) = (&state.registry, &repo);
    let (tags, next) = paginate(listing_page(&req), |page| async move {
        Ok(registry.tags(repo_ref, &page).await?)
    })
    .await?;
    let last = next.and_then(|next| next.last);
    Ok(page(
        repo.as_str(),
        html! {
            h1 { (repo.as_str()) }
            h2 { "Tags" }
            @if tags.is_empty() {
                p.muted { "No tags." }
            } @else {
                ul.list {
                    @for tag in &tags {
                        li { a href={ "/ui/image/" (repo.as_str()) "@" (tag) } { (tag) } }
                    }
                }
            }
            (next_link(&format!("/ui/repo/{repo}"), &last))
        },
    ))
}

async fn image(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (name, reference) = path.rsplit_once('@').ok_or(ApiError::NotFound)?;
    let repo = repo_name(name)?;
    Viewer::of(&state, &req)
        .await?
        .require_pull(repo.as_str())?;
    let reference = parse_reference(reference)?;
    let view = state.registry.browse_manifest(&repo, &reference).await?;
    // Only a nicety on this page: an image without a layout (or a failed lookup) shows none.
    let layout = state.registry.image_layout(&repo, &reference).await.ok();
    let title = format!("{repo}@{reference}");
    Ok(page(
        &title,
        html! {
            p { a href={ "/ui/repo/" (repo.as_str()) } { "← " (repo.as_str()) } }
            h1 { (title) }
            (manifest_summary(&view))
            @if let Some(layout) = &layout {
                (layout_card(&state, &repo, layout))
            }
            @if !view.manifests.is_empty() {
                h2 { "Platforms" }
                ul.list {
                    @for child in &view.manifests {
                        li {
                            a href={ "/ui/image/" (repo.as_str()) "@" (child.digest) } {
                                (platform_name(child)) " "
                                span.muted { code { (short(&child.digest.to_string())) } }
                            }
                        }
                    }
                    @if view.more_manifests > 0 {
                        li.muted { "… and " (view.more_manifests) " more" }
                    }
                }
            }
            @if !view.layers.is_empty() {
                h2 { "Layers" }
                @for (index, layer) in view.layers.iter().enumerate() {
                    (layer_card(&state, index, layer))
                }
            }
            @if view.more_layers > 0 {
                p.muted { "… and " (view.more_layers) " more layers" }
            }
        },
    ))
}

/// The image CID of the image's OCI Image Layout in IPFS, with commands to copy it out.
fn layout_card(state: &AppState, repo: &RepoName, layout: &ImageLayout) -> Markup {
    let dir = repo.as_str().rsplit('/').next().unwrap_or("image");
    let cid = layout.cid.to_string();
    let ipfs = format!(
        "ipfs get /ipfs/{cid} -o {dir}\nskopeo copy oci:{dir}:{tag} docker://<registry>/{repo}:{tag}",
        tag = layout.tag,
        repo = repo.as_str()
    );
    let car = format!(
        "curl -o {dir}.car '{}?format=car'",
        state.gateway_link(&layout.cid)
    );
    html! {
        section.card.layout {
            h2 { "In IPFS" }
            dl {
                dt { "Image CID" } dd { code.cid { (cid) } }
                dt { "Tag" } dd { code { (layout.tag) } }
            }
            p.muted { "An OCI Image Layout: anyone holding the blocks can serve it, and every byte is checked against the CID." }
            pre { code { (ipfs) } }
            pre { code { (car) } }
        }
    }
}

fn manifest_summary(view: &ManifestView) -> Markup {
    html! {
        dl {
            dt { "Digest" } dd { code { (view.digest) } }
            dt { "Media type" } dd { code { (view.media_type) } }
            @if let Some(artifact_type) = view.artifact_type.as_deref().filter(|t| !is_image_config(t)) {
                dt { "Artifact type" } dd { code { (artifact_type) } }
            }
            dt { "Manifest size" } dd { (human_size(view.size)) }
            @if !view.layers.is_empty() {
                @let total: i64 = view.layers.iter().map(|l| l.descriptor.size).sum();
                dt { "Total size" } dd { (human_size(total.max(0) as u64)) }
            }
        }
    }
}

fn layer_card(state: &AppState, index: usize, layer: &LayerView) -> Markup {
    let d = &layer.descriptor;
    let heading = match layer.role {
        Role::Config => "Config".to_owned(),
        Role::Layer => format!("Layer {index}"),
    };
    html! {
        section.card.layer {
            h3 { (heading) " " span.muted { (human_size(d.size.max(0) as u64)) } }
            dl {
                dt { "Media type" } dd { code { (d.media_type) } }
                dt { "Size" } dd { (d.size) " bytes" }
                dt { "Digest" } dd { code { (d.digest) } }
                @if let Some(cid) = &layer.cid {
                    dt { "CID" } dd { code.cid { (cid) } }
                    dt { "Gateway" } dd {
                        a.gateway href=(state.gateway_link(cid)) data-digest=(d.digest) {
                            "/ipfs/" (short(&cid.to_string()))
                        }
                    }
                } @else {
                    dt { "CID" } dd.muted { "not stored here (non-distributable layer)" }
                }
            }
        }
    }
}

/// A plain container image's "artifact type" is only its config's media type: not worth a
/// line.
fn is_image_config(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    )
}

fn platform_name(view: &ManifestView) -> String {
    let Some(platform) = &view.platform else {
        return view.media_type.clone();
    };
    let field = |key: &str| platform.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let mut name = format!("{}/{}", field("os"), field("architecture"));
    if !field("variant").is_empty() {
        name = format!("{name}/{}", field("variant"));
    }
    name
}

fn short(text: &str) -> String {
    if text.len() <= 24 {
        return text.to_owned();
    }
    format!("{}…{}", &text[..14], &text[text.len() - 8..])
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(10 * 1024 * 1024), "10.0 MiB");
    }

    #[test]
    fn long_identifiers_are_shortened_in_the_middle() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let shown = short(&digest);
        assert!(shown.starts_with("sha256:ababab"));
        assert!(shown.ends_with("abababab"));
        assert!(shown.chars().count() < digest.len());
        assert_eq!(short("latest"), "latest");
    }
}
