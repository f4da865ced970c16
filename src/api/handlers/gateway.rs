//! `/ipfs/<cid>`: the built-in read-only IPFS gateway. Without a format it answers the
//! blob's bytes (with Range); `?format=raw` / `Accept: application/vnd.ipld.raw` answers one
//! block and `?format=car` / `Accept: application/vnd.ipld.car` the whole DAG, the
//! verifiable responses of the trustless-gateway specification.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use cid::Cid;

use super::{blobs, query, query_param, Response};
use crate::api::error::ApiError;
use crate::api::headers::{self, X_IPFS_PATH};
use crate::api::viewer::Viewer;
use crate::api::AppState;

const RAW: &str = "application/vnd.ipld.raw";
const CAR: &str = "application/vnd.ipld.car";
/// Gateways cache by CID forever: the bytes behind a CID cannot change.
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
/// The same for content not everyone may fetch: only the caller's own cache keeps it, so a
/// shared cache never hands a private layer to someone else.
const PRIVATE_IMMUTABLE: &str = "private, max-age=29030400, immutable";

/// Who may be given a cached copy of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// Anyone may fetch it (access control off, or a public repository holds it).
    Everyone,
    /// Only callers with the right credentials.
    Caller,
}

impl Audience {
    fn cache_control(self) -> &'static str {
        match self {
            Audience::Everyone => IMMUTABLE,
            Audience::Caller => PRIVATE_IMMUTABLE,
        }
    }

    /// `Vary`: the representation depends on `Accept`; a private one also on who asks.
    fn vary(self) -> &'static str {
        match self {
            Audience::Everyone => "Accept",
            Audience::Caller => "Accept, Authorization, Cookie",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    File,
    Raw,
    Car,
}

fn format(req: &HttpRequest) -> Result<Format, ApiError> {
    let params = query(req);
    if let Some(format) = query_param(&params, "format") {
        return match format {
            "raw" => Ok(Format::Raw),
            "car" => Ok(Format::Car),
            other => Err(ApiError::FormatUnsupported(other.to_owned())),
        };
    }
    let accept = req
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .collect::<Vec<_>>();
    Ok(if accept.iter().any(|a| a == RAW) {
        Format::Raw
    } else if accept.iter().any(|a| a == CAR) {
        Format::Car
    } else {
        Format::File
    })
}

fn parse_cid(text: &str) -> Result<Cid, ApiError> {
    Cid::try_from(text.trim_end_matches('/')).map_err(|e| ApiError::CidInvalid(e.to_string()))
}

fn verifiable(
    cid: &Cid,
    content_type: &str,
    suffix: &str,
    audience: Audience,
) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((X_IPFS_PATH, format!("/ipfs/{cid}")))
        .insert_header(("X-Ipfs-Roots", cid.to_string()))
        .insert_header((header::ETAG, format!("\"{cid}.{suffix}\"")))
        .insert_header((header::CACHE_CONTROL, audience.cache_control()))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{cid}.{suffix}\""),
        ))
        .insert_header((header::VARY, audience.vary()));
    response
}

pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Response {
    serve(&req, &path, &state, false).await
}

pub async fn head(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Response {
    serve(&req, &path, &state, true).await
}

/// With access control on, content is served only as the blob (or image layout) of a
/// repository the caller may pull, or as a block inside one (so a private image's layers
/// are not public by CID). Blocks inside DAGs are known only where the blob store can tell
/// which DAGs hold a block (the embedded store); on an IPFS node they are served only with
/// access control off. The public index's directories are anyone's.
/// Whom the answer may be cached for: a shared cache may keep only what an anonymous
/// caller may fetch too.
async fn authorize(
    req: &HttpRequest,
    state: &AppState,
    cid: &cid::Cid,
) -> Result<Audience, ApiError> {
    // The public index lists only public images: its directories are anyone's.
    if state.registry.is_index_block(cid) {
        return Ok(Audience::Everyone);
    }
    let viewer = Viewer::of(state, req).await?;
    let (Viewer::Restricted { .. }, Some(auth)) = (&viewer, &state.auth) else {
        return Ok(Audience::Everyone);
    };
    let repositories = state.registry.ipfs_repositories(cid).await?;
    if !repositories.iter().any(|repo| viewer.may_pull(repo)) {
        // Unknown and hidden content get the same answer, so that probing CIDs does not
        // tell which private layers exist: a login prompt for an anonymous caller (either
        // might be theirs to see), "not found" for one who is logged in.
        return Err(if viewer.anonymous() {
            ApiError::LoginRequired
        } else {
            crate::registry::RegistryError::ContentUnknown(*cid).into()
        });
    }
    let anonymous = auth.rights(None).await?;
    let public = repositories
        .iter()
        .any(|repo| anonymous.allows(repo, crate::auth::scope::PULL));
    Ok(if public {
        Audience::Everyone
    } else {
        Audience::Caller
    })
}

async fn serve(req: &HttpRequest, cid: &str, state: &AppState, head: bool) -> Response {
    let cid = parse_cid(cid)?;
    let format = format(req)?;
    let audience = authorize(req, state, &cid).await?;
    match format {
        Format::File if head => {
            let record = state.registry.ipfs_stat(&cid).await?;
            let mut response = blobs::blob_headers(&record);
            response.insert_header((header::CACHE_CONTROL, audience.cache_control()));
            response.insert_header((header::VARY, audience.vary()));
            Ok(super::head_response(response, record.size))
        }
        Format::File => {
            let range = headers::blob_range(req.headers())?;
            let content = state.registry.ipfs_file(&cid, range).await?;
            let mut response = blobs::content_response(content);
            let headers = response.headers_mut();
            headers.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static(audience.cache_control()),
            );
            headers.insert(
                header::VARY,
                header::HeaderValue::from_static(audience.vary()),
            );
            Ok(response)
        }
        Format::Raw => {
            let block = state.registry.ipfs_block(&cid).await?;
            let mut response = verifiable(&cid, RAW, "bin", audience);
            if head {
                return Ok(super::head_response(response, block.len() as u64));
            }
            Ok(response.body(block))
        }
        Format::Car => {
            let mut response =
                verifiable(&cid, "application/vnd.ipld.car; version=1", "car", audience);
            if head {
                // A CAR's length is known only once written: no Content-Length, as on GET.
                state.registry.car_root(&cid).await?;
                let nothing = futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>();
                return Ok(response.streaming(nothing));
            }
            let body = state.registry.ipfs_car(&cid).await?;
            Ok(response.streaming(body))
        }
    }
}
