//! `GET /token` and `POST /token`: the Docker registry token endpoint. GET takes Basic
//! credentials (or none, for anonymous access) and `service`, `scope` (repeatable),
//! `offline_token`, `client_id`, `account`; POST takes the OAuth2 form with
//! `grant_type=password` or `grant_type=refresh_token`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde_json::json;

use super::access::client_ip;
use super::error::ApiError;
use super::handlers::query_param;
use super::AppState;
use crate::auth::scope::{self, Scope};
use crate::auth::{Auth, AuthError, TokenGrant};

/// A token request form is a few hundred bytes; anything far larger is not one.
pub const MAX_FORM: usize = 64 * 1024;

type Params = Vec<(String, String)>;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::Auth(AuthError::BadRequest(message.into()))
}

fn auth(state: &AppState) -> Result<&std::sync::Arc<Auth>, ApiError> {
    state.auth.as_ref().ok_or(ApiError::NotFound)
}

fn check_service(auth: &Auth, params: &Params) -> Result<(), ApiError> {
    match query_param(params, "service") {
        Some(service) if service != auth.issuer.service() => {
            Err(bad(format!("unknown service {service:?}")))
        }
        _ => Ok(()),
    }
}

fn scopes<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<Scope>, ApiError> {
    scope::parse_all(values).map_err(|e| bad(e.to_string()))
}

/// `Authorization: Basic` credentials, if any.
pub(super) fn basic_credentials(req: &HttpRequest) -> Result<Option<(String, String)>, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Auth(AuthError::InvalidCredentials))?;
    let Some((kind, encoded)) = value.split_once(' ') else {
        return Err(ApiError::Auth(AuthError::InvalidCredentials));
    };
    if !kind.eq_ignore_ascii_case("basic") {
        return Err(bad("the token endpoint takes Basic credentials"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or(ApiError::Auth(AuthError::InvalidCredentials))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or(ApiError::Auth(AuthError::InvalidCredentials))?;
    Ok(Some((user.to_owned(), password.to_owned())))
}

fn respond(grant: TokenGrant, with_scope: bool) -> HttpResponse {
    let mut body = json!({
        "token": grant.access.token,
        "access_token": grant.access.token,
        "expires_in": grant.access.expires_in.as_secs(),
        "issued_at": humantime::format_rfc3339_seconds(grant.access.issued_at).to_string(),
    });
    if let Some(refresh) = grant.refresh {
        body["refresh_token"] = json!(refresh.token);
    }
    if with_scope {
        let granted: Vec<String> = grant.granted.iter().map(Scope::to_string).collect();
        body["scope"] = json!(granted.join(" "));
    }
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let auth = auth(&state)?;
    let params = super::handlers::query(&req);
    check_service(auth, &params)?;
    let requested = scopes(
        params
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str()),
    )?;
    let offline = query_param(&params, "offline_token") == Some("true");
    let login = match basic_credentials(&req)? {
        Some((user, password)) => Some(counted(
            &state,
            auth.login(&user, &password, client_ip(auth, &req)).await,
        )?),
        None => None,
    };
    let grant = auth.grant(login.as_ref(), &requested, offline).await?;
    Ok(respond(grant, false))
}

/// Counts a login's outcome in the metrics: refused credentials and throttled attempts are
/// failures; an unavailable store is neither.
pub(super) fn counted<T>(
    state: &AppState,
    outcome: Result<T, crate::auth::AuthError>,
) -> Result<T, crate::auth::AuthError> {
    use crate::auth::AuthError;
    match &outcome {
        Ok(_) => state.registry.metrics().record_auth(true),
        Err(
            AuthError::InvalidCredentials | AuthError::InvalidToken(_) | AuthError::Throttled(_),
        ) => state.registry.metrics().record_auth(false),
        Err(_) => {}
    }
    outcome
}

pub async fn post(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let auth = auth(&state)?;
    let params: Params = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    check_service(auth, &params)?;
    let requested = scopes(query_param(&params, "scope"))?;
    let offline = query_param(&params, "access_type") == Some("offline");
    let client = client_ip(auth, &req);
    let login = match query_param(&params, "grant_type") {
        Some("password") => {
            let user =
                query_param(&params, "username").ok_or_else(|| bad("username is required"))?;
            let password =
                query_param(&params, "password").ok_or_else(|| bad("password is required"))?;
            counted(&state, auth.login(user, password, client).await)?
        }
        Some("refresh_token") => {
            let token = query_param(&params, "refresh_token")
                .ok_or_else(|| bad("refresh_token is required"))?;
            counted(&state, auth.refresh(token, client).await)?
        }
        other => {
            return Err(bad(format!(
                "unsupported grant_type {:?}: use password or refresh_token",
                other.unwrap_or("")
            )))
        }
    };
    let grant = auth.grant(Some(&login), &requested, offline).await?;
    Ok(respond(grant, true))
}
