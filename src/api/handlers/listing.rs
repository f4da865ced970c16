//! Tag listing, catalog and referrers.

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde_json::json;

use super::{query, query_param, Response};
use crate::api::access::Caller;
use crate::api::error::ApiError;
use crate::api::headers::OCI_FILTERS_APPLIED;
use crate::api::AppState;
use crate::oci::{media, Digest, RepoName};
use crate::registry::Page;

/// The most entries one page returns, whatever `n` asks for; a `Link` leads on.
const MAX_PAGE: u32 = 10_000;

/// The requested page, and whether the client asked for a bounded one.
fn page(params: &[(String, String)]) -> Result<Page, ApiError> {
    let n = query_param(params, "n")
        .map(|n| {
            n.parse::<u32>()
                .map_err(|_| ApiError::PaginationInvalid(format!("n={n}")))
        })
        .transpose()?;
    Ok(Page {
        n: n.map(|n| n.min(MAX_PAGE)),
        last: query_param(params, "last").map(str::to_owned),
    })
}

/// Fetches one entry more than asked, to know whether a next page exists.
pub(in crate::api) async fn paginate<F, Fut>(
    page: Page,
    fetch: F,
) -> Result<(Vec<String>, Option<Page>), ApiError>
where
    F: FnOnce(Page) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, ApiError>>,
{
    if page.n == Some(0) {
        return Ok((Vec::new(), None));
    }
    let probe = Page {
        n: page.n.map(|n| n + 1),
        last: page.last.clone(),
    };
    let mut entries = fetch(probe).await?;
    let next = match page.n {
        Some(n) if entries.len() > n as usize => {
            entries.truncate(n as usize);
            entries.last().map(|last| Page {
                n: Some(n),
                last: Some(last.clone()),
            })
        }
        _ => None,
    };
    Ok((entries, next))
}

fn link(state: &AppState, path: &str, next: &Page) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(n) = next.n {
        query.append_pair("n", &n.to_string());
    }
    if let Some(last) = &next.last {
        query.append_pair("last", last);
    }
    format!(
        "<{}?{}>; rel=\"next\"",
        state.location(path),
        query.finish()
    )
}

pub async fn tags(state: &AppState, req: &HttpRequest, repo: &RepoName) -> Response {
    let page = page(&query(req))?;
    let (tags, next) = paginate(
        page,
        |p| async move { Ok(state.registry.tags(repo, &p).await?) },
    )
    .await?;
    let mut response = HttpResponse::Ok();
    if let Some(next) = next {
        response.insert_header((
            header::LINK,
            link(state, &format!("/v2/{repo}/tags/list"), &next),
        ));
    }
    Ok(response.json(json!({ "name": repo.as_str(), "tags": tags })))
}

pub async fn catalog(req: HttpRequest, state: web::Data<AppState>) -> Response {
    let page = page(&query(&req))?;
    let registry = &state.registry;
    let caller = req.extensions().get::<Caller>().cloned();
    let (repositories, next) = match (&state.auth, caller) {
        // Filtered in the query, so a page of `n` is n names the caller may pull.
        (Some(auth), Some(Caller(claims))) => {
            paginate(
                page,
                |p| async move { Ok(auth.catalog(&claims, &p).await?) },
            )
            .await?
        }
        // The access check always records the caller; without one, show nothing rather than all.
        (Some(_), None) => return Err(ApiError::Denied),
        (None, _) => paginate(page, |p| async move { Ok(registry.catalog(&p).await?) }).await?,
    };
    let mut response = HttpResponse::Ok();
    if let Some(next) = next {
        response.insert_header((header::LINK, link(&state, "/v2/_catalog", &next)));
    }
    Ok(response.json(json!({ "repositories": repositories })))
}

pub async fn referrers(
    state: &AppState,
    req: &HttpRequest,
    repo: &RepoName,
    subject: &Digest,
) -> Response {
    let params = query(req);
    let artifact_type = query_param(&params, "artifactType");
    let manifests = state
        .registry
        .referrers(repo, subject, artifact_type)
        .await?;
    let mut response = HttpResponse::Ok();
    response.content_type(media::OCI_INDEX);
    if artifact_type.is_some() {
        response.insert_header((OCI_FILTERS_APPLIED, "artifactType"));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    Ok(response.body(index.to_string()))
}
