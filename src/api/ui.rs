//! A small web UI, rendered on the server (maud templates, no scripts): repositories →
//! tags → manifest → layers, each layer with its size, digest, CID and a gateway link.
//! Readable on a phone: one column, long digests wrap.
//!
//! With access control on, a person sees what they may pull: anonymously the public
//! repositories, after logging in through the form at `/ui/login` (a session cookie; see
//! docs/security.md) their own. HTTP Basic credentials are taken too, for scripts.
//! Failures are pages too (404, 403, 401 with a way to log in), never JSON.
//!
//! Pages: `/ui/` (repositories), `/ui/repo/<name>` (its tags), `/ui/image/<name>@<reference>`
//! (a manifest; an index lists its platforms), `/ui/login`. `@` appears in no name, tag or
//! digest.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::access::client_ip;
use super::error::ApiError;
use super::handlers::{parse_reference, query, query_param, repo_name};
use super::viewer::{Viewer, SESSION_COOKIE};
use super::AppState;

use crate::auth::AuthError;
use crate::oci::{media, Reference, RepoName};
use crate::registry::{
    platform_name, ConfigSummary, ImageLayout, LayerView, ManifestView, Page, RegistryError, Role,
};

/// Entries per listing page.
const PAGE: u32 = 100;

/// A login form is a few hundred bytes.
const MAX_FORM: usize = 16 * 1024;

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
header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; }
header .who { margin-left: auto; display: flex; gap: .75rem; align-items: center; }
header .who form { margin: 0; }
button, input { font: inherit; }
button.link { background: none; border: 0; padding: 0; color: var(--accent); cursor: pointer; text-decoration: underline; }
form.login { display: grid; gap: .75rem; max-width: 22rem; }
form.login label { display: grid; gap: .25rem; }
form.login input { padding: .5rem; border: 1px solid var(--line); border-radius: .35rem; }
form.login button { padding: .5rem; border-radius: .35rem; border: 0; background: var(--accent); color: #fff; cursor: pointer; }
form.search { display: flex; gap: .5rem; margin: 0 0 1rem; }
form.search input { flex: 1; min-width: 0; padding: .4rem .5rem; border: 1px solid var(--line); border-radius: .35rem; }
ul.repos .name { font-weight: 600; }
.facts { display: inline-block; width: 100%; font-size: .9rem; }
.badge { display: inline-block; font-size: .75rem; padding: .05rem .4rem; border-radius: 1rem; border: 1px solid var(--line); vertical-align: middle; color: var(--muted); }
.badge.private { border-color: #d97706; color: #d97706; }
details.history { margin: .75rem 0; }
details.history ol { padding-left: 1.5rem; }
details.history li { margin: .25rem 0; }
ul.labels { list-style: none; padding: 0; margin: 0; }
code.pull { display: block; user-select: all; padding: .25rem .4rem; margin: 0 0 .25rem; border: 1px solid var(--line); border-radius: .25rem; }
form.delete { margin: .5rem 0 0; }
button.danger, form.delete button { color: #b91c1c; background: none; border: 1px solid #b91c1c; border-radius: .35rem; padding: .25rem .6rem; cursor: pointer; }
.error { border-left: 4px solid #dc2626; padding: .5rem .75rem; background: rgba(220, 38, 38, .08); }
@media (max-width: 30rem) { dl { grid-template-columns: 1fr; } dt { margin-top: .35rem; } }
"#;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(redirect_home))
        .route("/ui/", web::get().to(repositories))
        .route("/ui/repo/{name:.+}", web::get().to(tags))
        .route("/ui/image/{spec:.+}", web::get().to(image))
        .service(
            web::resource("/ui/login")
                .app_data(web::PayloadConfig::new(MAX_FORM))
                .route(web::get().to(login_form))
                .route(web::post().to(login)),
        )
        .service(
            web::resource("/ui/logout")
                .route(web::get().to(logout_form))
                .route(web::post().to(logout)),
        )
        .service(
            web::resource("/ui/delete")
                .app_data(web::PayloadConfig::new(MAX_FORM))
                .route(web::get().to(confirm_delete))
                .route(web::post().to(delete)),
        )
        .route("/ui/{tail:.*}", web::route().to(not_found));
}

/// What the header of every page shows: who is logged in, or a way to log in.
#[derive(Debug, Default)]
struct Chrome {
    /// Access control is on: there is something to log in to.
    auth: bool,
    user: Option<String>,
    /// The login is a session, which the page can end.
    session: bool,
}

impl Chrome {
    fn of(state: &AppState, viewer: &Viewer) -> Chrome {
        Chrome {
            auth: state.auth.is_some(),
            user: viewer.user().map(str::to_owned),
            session: viewer.in_session(),
        }
    }
}

fn page(chrome: &Chrome, title: &str, body: Markup) -> HttpResponse {
    page_with_status(StatusCode::OK, chrome, title, body)
}

fn page_with_status(
    status: StatusCode,
    chrome: &Chrome,
    title: &str,
    body: Markup,
) -> HttpResponse {
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
                header {
                    a href="/ui/" { "ipfs-registry" }
                    @if chrome.auth {
                        span.who {
                            @if let Some(user) = &chrome.user {
                                span.user { (user) }
                                @if chrome.session {
                                    form method="post" action="/ui/logout" {
                                        button.link type="submit" { "Log out" }
                                    }
                                }
                            } @else {
                                a.login href="/ui/login" { "Log in" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        // What a page shows depends on who asks.
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .insert_header((header::VARY, "Authorization, Cookie"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'",
        ))
        .body(markup.into_string())
}

/// A failure of a UI page, shown as a page: the status of the API's mapping
/// (src/api/error.rs), a message a person can act on, and for 401 a way to log in.
#[derive(Debug)]
pub struct UiError(Box<Failure>);

#[derive(Debug)]
struct Failure {
    error: ApiError,
    /// The page that failed, to come back to after logging in.
    path: String,
    /// Who was looking, when known.
    chrome: Chrome,
}

impl UiError {
    fn at(req: &HttpRequest, error: impl Into<ApiError>) -> UiError {
        UiError(Box::new(Failure {
            error: error.into(),
            path: req.uri().path().to_owned(),
            chrome: Chrome::default(),
        }))
    }

    /// A failure of a page `viewer` was looking at: its header still says who is logged in.
    fn seen(req: &HttpRequest, state: &AppState, viewer: &Viewer, error: ApiError) -> UiError {
        let mut failure = UiError::at(req, error);
        failure.0.chrome = Chrome::of(state, viewer);
        failure
    }
}

impl std::fmt::Display for UiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.error.fmt(f)
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        self.0.error.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(event = "request_failed", error = %self.0.error);
        }
        let title = match status {
            StatusCode::UNAUTHORIZED => "Log in to see this",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::CONFLICT => "Refused",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            s if s.is_server_error() => "The registry could not answer",
            _ => "Bad request",
        };
        let message = if status.is_server_error() {
            "Try again in a moment.".to_owned()
        } else {
            let text = self.0.error.to_string();
            let mut chars = text.chars();
            chars
                .next()
                .map_or(String::new(), |c| c.to_uppercase().chain(chars).collect())
                + "."
        };
        let login = login_link(&self.0.path);
        let body = html! {
            h1 { (title) }
            p.error { (message) }
            @if status == StatusCode::UNAUTHORIZED {
                p { a href=(login) { "Log in" } " to see this page." }
            }
            p { a href="/ui/" { "← Repositories" } }
        };
        let mut response = page_with_status(status, &self.0.chrome, title, body);
        if let Some(wait) = retry_after(&self.0.error) {
            if let Ok(value) = header::HeaderValue::from_str(&wait.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

fn retry_after(error: &ApiError) -> Option<u64> {
    match error {
        ApiError::Auth(AuthError::Throttled(wait)) => Some(wait.as_secs().max(1)),
        e if matches!(
            e.status_code(),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) =>
        {
            Some(1)
        }
        _ => None,
    }
}

fn login_link(next: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish();
    format!("/ui/login?{query}")
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, UiError> {
    Err(UiError::at(&req, ApiError::NotFound))
}

/// The page the `last` query parameter asks for.
fn listing_page(req: &HttpRequest) -> Page {
    let params = query(req);
    Page {
        n: Some(PAGE),
        last: query_param(&params, "last").map(str::to_owned),
    }
}

/// A link to the page after `last`, keeping the listing's other (non-empty) parameters.
fn next_link(path: &str, last: &Option<String>, keep: &[(&str, &str)]) -> Markup {
    html! {
        @if let Some(last) = last {
            @let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(keep.iter().filter(|(_, v)| !v.is_empty()))
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
) -> Result<HttpResponse, UiError> {
    let viewer = Viewer::of(&state, &req)
        .await
        .map_err(|e| UiError::at(&req, e))?;
    repositories_page(&req, &state, &viewer)
        .await
        .map_err(|e| UiError::seen(&req, &state, &viewer, e))
}

async fn repositories_page(
    req: &HttpRequest,
    state: &AppState,
    viewer: &Viewer,
) -> Result<HttpResponse, ApiError> {
    let params = query(req);
    // Repository names are lower case: so is what is searched for.
    let search = query_param(&params, "q")
        .unwrap_or("")
        .trim()
        .to_lowercase();
    let probe = Page {
        n: Some(PAGE + 1),
        last: query_param(&params, "last").map(str::to_owned),
    };
    let mut repos = viewer.summaries(state, &probe, &search).await?;
    let last = (repos.len() > PAGE as usize)
        .then(|| {
            repos.truncate(PAGE as usize);
            repos.last().map(|r| r.name.clone())
        })
        .flatten();
    // With access control on, each repository says whether anyone may pull it.
    let public = match &state.auth {
        Some(auth) => Some(auth.rights(None).await?),
        None => None,
    };
    Ok(page(
        &Chrome::of(state, viewer),
        "Repositories",
        html! {
            h1 { "Repositories" }
            form.search method="get" action="/ui/" role="search" {
                input type="search" name="q" value=(search) placeholder="Filter by name"
                    aria-label="Filter repositories by name";
                button type="submit" { "Filter" }
            }
            @if repos.is_empty() {
                @if !search.is_empty() {
                    p.muted { "No repository name contains " code { (search) } "." }
                } @else if viewer.anonymous() {
                    p.muted {
                        "No public repositories. "
                        a href="/ui/login" { "Log in" } " to see yours."
                    }
                } @else {
                    p.muted { "Nothing pushed yet." }
                }
            } @else {
                ul.list.repos {
                    @for repo in &repos {
                        li {
                            a href={ "/ui/repo/" (repo.name) } {
                                span.name { (repo.name) }
                                @if let Some(public) = &public {
                                    @if public.allows(&repo.name, crate::auth::scope::PULL) {
                                        " " span.badge.public { "public" }
                                    } @else {
                                        " " span.badge.private { "private" }
                                    }
                                }
                                span.facts.muted {
                                    (count(repo.tags, "tag", "tags")) " · "
                                    span.size data-bytes=(repo.size) { (human_size(repo.size)) }
                                    @if let Some(pushed) = repo.last_push {
                                        " · pushed " (when(pushed))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (next_link("/ui/", &last, &[("q", &search)]))
        },
    ))
}

async fn tags(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let viewer = Viewer::of(&state, &req)
        .await
        .map_err(|e| UiError::at(&req, e))?;
    tags_page(&req, &path, &state, &viewer)
        .await
        .map_err(|e| UiError::seen(&req, &state, &viewer, e))
}

async fn tags_page(
    req: &HttpRequest,
    path: &str,
    state: &AppState,
    viewer: &Viewer,
) -> Result<HttpResponse, ApiError> {
    let repo = repo_name(path.trim_end_matches('/'))?;
    viewer.require_pull(repo.as_str())?;
    let mut probe = listing_page(req);
    probe.n = probe.n.map(|n| n + 1);
    let mut tags = state.registry.tag_summaries(&repo, &probe).await?;
    let last = (tags.len() > PAGE as usize)
        .then(|| {
            tags.truncate(PAGE as usize);
            tags.last().map(|t| t.name.clone())
        })
        .flatten();
    let mut platforms = Vec::with_capacity(tags.len());
    for tag in &tags {
        let index = media::manifest_kind(&tag.media_type) == Some(media::ManifestKind::Index);
        platforms.push(if index {
            state.registry.platforms(&repo, &tag.digest).await?
        } else {
            Vec::new()
        });
    }
    let host = pull_host(state, req);
    let deletable = state.registry.deletes_enabled() && viewer.may_delete(repo.as_str());
    Ok(page(
        &Chrome::of(state, viewer),
        repo.as_str(),
        html! {
            h1 { (repo.as_str()) }
            h2 { "Tags" }
            @if tags.is_empty() {
                p.muted { "No tags." }
            } @else {
                @for (tag, platforms) in tags.iter().zip(&platforms) {
                    section.card.tag {
                        h3 {
                            a href={ "/ui/image/" (repo.as_str()) "@" (tag.name) } { (tag.name) }
                            " " span.muted.size data-bytes=(tag.size) { (human_size(tag.size)) }
                        }
                        dl {
                            dt { "Digest" }
                            dd {
                                a href={ "/ui/image/" (repo.as_str()) "@" (tag.digest) } {
                                    code { (short(&tag.digest.to_string())) }
                                }
                            }
                            @if !platforms.is_empty() {
                                dt { "Platforms" } dd { (platforms.join(", ")) }
                            }
                            dt { "Pushed" } dd { (when(tag.pushed_at)) }
                            dt { "Pull" }
                            dd {
                                code.pull { "docker pull " (host) "/" (repo.as_str()) ":" (tag.name) }
                                code.pull { "docker pull " (host) "/" (repo.as_str()) "@" (tag.digest) }
                            }
                        }
                        @if deletable {
                            form.delete method="get" action="/ui/delete" {
                                input type="hidden" name="repo" value=(repo.as_str());
                                input type="hidden" name="reference" value=(tag.name);
                                button type="submit" { "Delete tag…" }
                            }
                        }
                    }
                }
            }
            (next_link(&format!("/ui/repo/{repo}"), &last, &[]))
        },
    ))
}

/// The registry's host for `docker pull`: `public_url`'s, else the one the browser asked.
fn pull_host(state: &AppState, req: &HttpRequest) -> String {
    match &state.public_url {
        Some(url) => match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => req.connection_info().host().to_owned(),
        },
        None => req.connection_info().host().to_owned(),
    }
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A moment as a person reads it, in UTC to the minute: `2026-12-07 11:38 UTC`.
fn when(time: std::time::SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(time).to_string();
    match (text.get(..10), text.get(11..16)) {
        (Some(day), Some(minute)) => format!("{day} {minute} UTC"),
        _ => text,
    }
}

async fn image(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let viewer = Viewer::of(&state, &req)
        .await
        .map_err(|e| UiError::at(&req, e))?;
    image_page(&path, &state, &viewer)
        .await
        .map_err(|e| UiError::seen(&req, &state, &viewer, e))
}

async fn image_page(
    path: &str,
    state: &AppState,
    viewer: &Viewer,
) -> Result<HttpResponse, ApiError> {
    let (name, reference) = path.rsplit_once('@').ok_or(ApiError::NotFound)?;
    let repo = repo_name(name)?;
    viewer.require_pull(repo.as_str())?;
    let reference = parse_reference(reference)?;
    let registry = &state.registry;
    let view = registry.browse_manifest(&repo, &reference).await?;
    let config = match view.layers.iter().find(|l| l.role == Role::Config) {
        Some(config) if is_image_config(&config.descriptor.media_type) => {
            registry
                .config_summary(&repo, &config.descriptor.digest)
                .await?
        }
        _ => None,
    };
    // Only a nicety on this page: an image without a layout (or a failed lookup) shows none.
    let layout = registry.image_layout(&repo, &reference).await.ok();
    let referrers = registry.referrers(&repo, &view.digest, None).await?;
    let deletable = registry.deletes_enabled() && viewer.may_delete(repo.as_str());
    let title = format!("{repo}{}{reference}", separator(&reference));
    Ok(page(
        &Chrome::of(state, viewer),
        &title,
        html! {
            p { a href={ "/ui/repo/" (repo.as_str()) } { "← " (repo.as_str()) } }
            h1 { (title) }
            (manifest_summary(&view))
            @if let Some(layout) = &layout {
                (layout_card(state, &repo, layout))
            }
            @if let Some(config) = &config {
                h2 { "Configuration" }
                (config_summary(config))
            }
            @if !view.manifests.is_empty() {
                h2 { "Platforms" }
                ul.list {
                    @for child in &view.manifests {
                        li {
                            a href={ "/ui/image/" (repo.as_str()) "@" (child.digest) } {
                                (platform_of(child)) " "
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
                    (layer_card(state, index, layer))
                }
            }
            @if view.more_layers > 0 {
                p.muted { "… and " (view.more_layers) " more layers" }
            }
            @if !referrers.is_empty() {
                h2 { "Referrers" }
                p.muted { "Signatures, SBOMs, attestations and other artifacts about this manifest." }
                ul.list.referrers {
                    @for referrer in &referrers {
                        li {
                            a href={ "/ui/image/" (repo.as_str()) "@" (referrer.digest) } {
                                code.artifact-type {
                                    (referrer.artifact_type.as_deref().unwrap_or(&referrer.media_type))
                                }
                                span.facts.muted {
                                    code { (short(&referrer.digest.to_string())) }
                                    " · " (human_size(referrer.size.max(0) as u64))
                                }
                            }
                        }
                    }
                }
            }
            @if deletable {
                form.delete method="get" action="/ui/delete" {
                    input type="hidden" name="repo" value=(repo.as_str());
                    input type="hidden" name="reference" value=(view.digest.to_string());
                    button type="submit" { "Delete manifest…" }
                }
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

fn config_summary(config: &ConfigSummary) -> Markup {
    let command = |args: &[String]| args.join(" ");
    html! {
        dl.config {
            dt { "Platform" } dd { (config.platform) }
            @if let Some(created) = &config.created {
                dt { "Created" } dd { (created) }
            }
            @if !config.entrypoint.is_empty() {
                dt { "Entrypoint" } dd { code { (command(&config.entrypoint)) } }
            }
            @if !config.cmd.is_empty() {
                dt { "Command" } dd { code { (command(&config.cmd)) } }
            }
            @if !config.exposed_ports.is_empty() {
                dt { "Exposed ports" } dd { (config.exposed_ports.join(", ")) }
            }
            @if !config.labels.is_empty() {
                dt { "Labels" }
                dd {
                    ul.labels {
                        @for (key, value) in &config.labels {
                            li { code { (key) } " = " (value) }
                        }
                    }
                }
            }
        }
        @if !config.history.is_empty() {
            details.history {
                summary { "History (" (config.history.len()) " steps)" }
                ol {
                    @for (command, layer) in &config.history {
                        li {
                            code { (command) }
                            @if !layer { " " span.muted { "(no layer)" } }
                        }
                    }
                }
            }
        }
    }
}

/// What a delete form names: a repository and a tag or digest in it.
fn delete_target(params: &[(String, String)]) -> Result<(RepoName, Reference), ApiError> {
    let repo = repo_name(query_param(params, "repo").unwrap_or(""))?;
    let reference = parse_reference(query_param(params, "reference").unwrap_or(""))?;
    Ok((repo, reference))
}

/// What joins a repository and a reference in a pull: `:tag`, `@digest`.
fn separator(reference: &Reference) -> &'static str {
    match reference {
        Reference::Tag(_) => ":",
        Reference::Digest(_) => "@",
    }
}

/// Refuses a delete the viewer may not make, or that the registry does not allow.
fn check_delete(state: &AppState, viewer: &Viewer, repo: &RepoName) -> Result<(), ApiError> {
    viewer.require_pull(repo.as_str())?;
    if !viewer.may_delete(repo.as_str()) {
        return Err(ApiError::Denied);
    }
    if !state.registry.deletes_enabled() {
        return Err(
            RegistryError::Unsupported("deletes are disabled on this registry".into()).into(),
        );
    }
    Ok(())
}

/// The confirmation a delete button leads to (no scripts: a page, then a POST).
async fn confirm_delete(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let shown = async {
        let (repo, reference) = delete_target(&query(&req))?;
        let viewer = Viewer::of(&state, &req).await?;
        check_delete(&state, &viewer, &repo)?;
        // Shown only for what exists: a stale link says so instead.
        state.registry.get_manifest(&repo, &reference).await?;
        let what = match &reference {
            Reference::Tag(_) => {
                "the tag only: the image stays, by digest, unless garbage collection is set \
                 to remove untagged images"
            }
            Reference::Digest(_) => "the manifest and every tag pointing at it",
        };
        Ok::<_, ApiError>(page(
            &Chrome::of(&state, &viewer),
            "Delete?",
            html! {
                h1 { "Delete " code { (repo.as_str()) (separator(&reference)) (reference) } "?" }
                p { "This deletes " (what) ". It cannot be undone." }
                form.delete method="post" action="/ui/delete" {
                    input type="hidden" name="repo" value=(repo.as_str());
                    input type="hidden" name="reference" value=(reference.to_string());
                    button.danger type="submit" { "Delete" }
                    " "
                    a href={ "/ui/repo/" (repo.as_str()) } { "Cancel" }
                }
            },
        ))
    };
    shown.await.map_err(|e| UiError::at(&req, e))
}

async fn delete(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    if !same_origin(&state, &req) {
        return Err(cross_site(&req));
    }
    let done = async {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let (repo, reference) = delete_target(&form)?;
        let viewer = Viewer::of(&state, &req).await?;
        check_delete(&state, &viewer, &repo)?;
        // Immutable tags stay immutable here: their override is the API's, for admins.
        let mut origin = AppState::origin(&req);
        origin.actor = viewer.user().map(str::to_owned);
        state
            .registry
            .delete_manifest(&repo, &reference, false, &origin)
            .await?;
        tracing::info!(
            event = "ui_delete",
            user = viewer.user().unwrap_or(""),
            repository = %repo,
            reference = %reference,
        );
        Ok::<_, ApiError>(
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, format!("/ui/repo/{repo}")))
                .finish(),
        )
    };
    done.await.map_err(|e| UiError::at(&req, e))
}

/// Where a login goes back to: a UI page, never another site (`next` is the client's).
fn next_page(next: Option<&str>) -> &str {
    match next {
        Some(next) if next.starts_with("/ui/") && !next.contains('\\') => next,
        _ => "/ui/",
    }
}

async fn login_form(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    if state.auth.is_none() {
        return Err(UiError::at(&req, ApiError::NotFound));
    }
    let params = query(&req);
    let next = next_page(query_param(&params, "next")).to_owned();
    Ok(login_page(StatusCode::OK, &next, None, ""))
}

fn login_page(status: StatusCode, next: &str, error: Option<&str>, user: &str) -> HttpResponse {
    page_with_status(
        status,
        &Chrome::default(),
        "Log in",
        html! {
            h1 { "Log in" }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form.login method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                label {
                    "User name"
                    input name="username" autocomplete="username" required value=(user);
                }
                label {
                    "Password"
                    input type="password" name="password" autocomplete="current-password" required;
                }
                button type="submit" { "Log in" }
            }
        },
    )
}

/// Whether a form was posted by one of the registry's own pages. The session cookie is
/// `SameSite=Strict`, so another site's form cannot post with it; the origin check also
/// covers the login form (no cookie yet: another site could log a visitor in as someone
/// else) and browsers without SameSite. A post without `Origin` or `Referer` is refused.
fn same_origin(state: &AppState, req: &HttpRequest) -> bool {
    let expected = match &state.public_url {
        Some(url) => url.origin().ascii_serialization(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    };
    let sent = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let origin = sent(header::ORIGIN).or_else(|| {
        sent(header::REFERER)
            .and_then(|referer| url::Url::parse(&referer).ok())
            .map(|url| url.origin().ascii_serialization())
    });
    origin.is_some_and(|origin| origin == expected)
}

fn cross_site(req: &HttpRequest) -> UiError {
    UiError::at(req, ApiError::CrossSite)
}

/// `Set-Cookie` for the session `value` lasting `max_age` seconds (0: removes it).
fn session_cookie(value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    )
}

fn secure_cookies(state: &AppState) -> bool {
    state
        .public_url
        .as_ref()
        .is_some_and(|url| url.scheme() == "https")
}

async fn login(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let Some(auth) = &state.auth else {
        return Err(UiError::at(&req, ApiError::NotFound));
    };
    if !same_origin(&state, &req) {
        return Err(cross_site(&req));
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let next = next_page(query_param(&form, "next")).to_owned();
    let user = query_param(&form, "username").unwrap_or_default();
    let password = query_param(&form, "password").unwrap_or_default();
    if user.is_empty() || password.is_empty() {
        return Ok(login_page(
            StatusCode::BAD_REQUEST,
            &next,
            Some("Enter a user name and a password."),
            user,
        ));
    }
    // The same login as /token's: throttled, on a bounded number of argon2 slots, counted.
    let outcome = auth.login(user, password, client_ip(auth, &req)).await;
    let refused = |status, message: &str| Ok(login_page(status, &next, Some(message), user));
    let login = match super::token::counted(&state, outcome) {
        Ok(login) => login,
        Err(AuthError::InvalidCredentials) => {
            return refused(StatusCode::UNAUTHORIZED, "Invalid user name or password.")
        }
        Err(e) => return Err(UiError::at(&req, e)),
    };
    let session = match auth.open_session(&login) {
        Ok(session) => session,
        Err(AuthError::BadRequest(message)) => return refused(StatusCode::BAD_REQUEST, &message),
        Err(e) => return Err(UiError::at(&req, e)),
    };
    tracing::info!(event = "ui_login", user = %login.user.name);
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, next))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::SET_COOKIE,
            session_cookie(
                &session.token,
                session.expires_in.as_secs(),
                secure_cookies(&state),
            ),
        ))
        .finish())
}

/// A typed-in `/ui/logout`: logging out changes state, so it is a button, not a link.
async fn logout_form(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let viewer = Viewer::of(&state, &req)
        .await
        .map_err(|e| UiError::at(&req, e))?;
    Ok(page(
        &Chrome::of(&state, &viewer),
        "Log out",
        html! {
            h1 { "Log out" }
            form method="post" action="/ui/logout" {
                button type="submit" { "Log out" }
            }
        },
    ))
}

/// Ends the session in this browser: the cookie is removed. (A session is a signed token,
/// not a stored row: a copy taken earlier stays valid until it expires or the password
/// changes; docs/security.md.)
async fn logout(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    if !same_origin(&state, &req) {
        return Err(cross_site(&req));
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui/"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::SET_COOKIE,
            session_cookie("", 0, secure_cookies(&state)),
        ))
        .finish())
}

/// Facts about the manifest as a whole, one `dt`/`dd` pair each (the CID of the image's
/// published OCI layout belongs here too once images are published to IPFS, issue 17).
fn manifest_summary(view: &ManifestView) -> Markup {
    html! {
        dl.manifest {
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

/// A child of an index by its platform, or its media type when it has none.
fn platform_of(view: &ManifestView) -> String {
    view.platform
        .as_ref()
        .map_or_else(|| view.media_type.clone(), platform_name)
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
    fn session_cookies_are_http_only_strict_and_secure_over_https() {
        let plain = session_cookie("t", 60, false);
        assert_eq!(
            plain,
            "ipfs_registry_session=t; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"
        );
        assert!(session_cookie("t", 60, true).ends_with("; Secure"));
        assert!(session_cookie("", 0, false).contains("Max-Age=0"));
    }

    #[test]
    fn a_login_returns_only_to_a_ui_page() {
        assert_eq!(next_page(Some("/ui/repo/a")), "/ui/repo/a");
        for elsewhere in [
            None,
            Some("https://evil.example/"),
            Some("//evil.example/ui/"),
            Some("/ui/\\evil.example"),
            Some("/v2/_catalog"),
        ] {
            assert_eq!(next_page(elsewhere), "/ui/", "{elsewhere:?}");
        }
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
