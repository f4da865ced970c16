//! The access check on `/v2`: every request needs a valid registry token carrying the scope
//! its endpoint needs. Without one: 401 and a Bearer challenge naming that scope; with a
//! token that lacks it: 401 `insufficient_scope` when the caller could get it (a new token
//! would do), 403 DENIED when the caller may not do it at all.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::uri::Authority;
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, ResponseError};

use super::endpoints::Access;
use super::error::ApiError;
use super::path;
use super::AppState;
use crate::auth::scope::{self, Scope};
use crate::auth::token::Claims;
use crate::auth::Auth;
use crate::config::IpRange;

/// The verified token of the request, for handlers that refine access (catalog, mount).
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

/// A `WWW-Authenticate: Bearer` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub service: String,
    pub scope: Option<String>,
    /// `invalid_token` or `insufficient_scope`.
    pub error: Option<&'static str>,
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Bearer realm={},service={}",
            Quoted(&self.realm),
            Quoted(&self.service)
        )?;
        if let Some(scope) = &self.scope {
            write!(f, ",scope={}", Quoted(scope))?;
        }
        if let Some(error) = self.error {
            write!(f, ",error=\"{error}\"")?;
        }
        Ok(())
    }
}

/// An RFC 9110 quoted-string: whatever a value holds, it cannot end the parameter early and
/// start another (a second `realm=`), nor break the header line.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars().filter(|c| !c.is_control()) {
            if c == '"' || c == '\\' {
                f.write_char('\\')?;
            }
            f.write_char(c)?;
        }
        f.write_char('"')
    }
}

/// What a request under `/v2` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Need {
    /// Nothing: a token, when sent, is checked all the same.
    Public,
    /// Any valid token (the base endpoint, unknown paths, the catalog which is filtered).
    Token { catalog: bool },
    /// `action` on repository `name`.
    Repository { name: String, action: &'static str },
}

impl Need {
    fn of(method: &Method, tail: &str) -> Need {
        let Some((endpoint, segments)) = path::parse(tail) else {
            return Need::Token { catalog: false };
        };
        match endpoint.access(method) {
            Access::Public => Need::Public,
            Access::Token => Need::Token { catalog: false },
            Access::Catalog => Need::Token { catalog: true },
            Access::Repository(action) => Need::Repository {
                name: segments.name.to_owned(),
                action,
            },
        }
    }

    /// The scope a client should ask for; pushes ask for pull too, as docker does.
    fn scope(&self) -> Option<String> {
        match self {
            Need::Token { catalog: true } => Some(Scope::catalog().to_string()),
            Need::Token { catalog: false } | Need::Public => None,
            Need::Repository { name, action } => {
                let actions: &[&str] = if *action == scope::PUSH {
                    &[scope::PULL, scope::PUSH]
                } else {
                    &[action]
                };
                Some(Scope::repository(name, actions).to_string())
            }
        }
    }
}

/// The token endpoint clients are sent to.
pub fn realm(auth: &Auth, state: &AppState, req: &HttpRequest) -> String {
    if let Some(realm) = &auth.realm {
        return realm.to_string();
    }
    if let Some(base) = &state.public_url {
        return format!("{}/token", base.as_str().trim_end_matches('/'));
    }
    // `Forwarded`/`X-Forwarded-*` name the public address only when a trusted proxy set
    // them; from anyone else they would let a request point the challenge, and the
    // credentials a client then sends, at a host of the sender's choosing.
    if from_trusted_proxy(auth, req) {
        let info = req.connection_info();
        if let Ok(host) = info.host().parse::<Authority>() {
            return format!("{}://{host}/token", info.scheme());
        }
    }
    let scheme = if req.app_config().secure() {
        "https"
    } else {
        "http"
    };
    let host = req
        .uri()
        .authority()
        .cloned()
        .or_else(|| {
            let host = req.headers().get(header::HOST)?.to_str().ok()?;
            host.parse::<Authority>().ok()
        })
        .map_or_else(
            || req.app_config().local_addr().to_string(),
            |a| a.to_string(),
        );
    format!("{scheme}://{host}/token")
}

/// Whether the peer is one of `auth.trusted_proxies`, whose forwarding headers count.
fn from_trusted_proxy(auth: &Auth, req: &HttpRequest) -> bool {
    req.peer_addr()
        .is_some_and(|peer| is_trusted(&auth.trusted_proxies, peer.ip().to_canonical()))
}

/// Whether `ip` is in one of the `auth.trusted_proxies` ranges.
fn is_trusted(trusted_proxies: &[IpRange], ip: IpAddr) -> bool {
    trusted_proxies.iter().any(|r| r.contains(ip))
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (kind, token) = value.split_once(' ')?;
    kind.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn authorize(
    auth: &Auth,
    state: &AppState,
    req: &HttpRequest,
) -> Result<Option<Claims>, ApiError> {
    let raw = req.path();
    // Percent-encoded paths would be decoded for routing but not here; no valid name,
    // reference or digest needs encoding, so they are refused rather than interpreted twice.
    if raw.contains('%') {
        return Err(ApiError::NotFound);
    }
    let tail = raw
        .strip_prefix("/v2")
        .unwrap_or(raw)
        .trim_start_matches('/');
    let need = Need::of(req.method(), tail);
    // Whether a name is valid is no secret: say what is wrong (400, as with auth off)
    // rather than refuse a name that no permission could ever cover.
    if let Need::Repository { name, .. } = &need {
        super::handlers::repo_name(name)?;
    }
    let challenge = |error| {
        ApiError::Unauthorized(Challenge {
            realm: realm(auth, state, req),
            service: auth.issuer.service().to_owned(),
            scope: need.scope(),
            error,
        })
    };
    let Some(token) = bearer(req) else {
        return match need {
            Need::Public => Ok(None),
            _ => Err(challenge(None)),
        };
    };
    let claims = match auth.issuer.verify_access(token) {
        Ok(claims) => claims,
        Err(e) => {
            tracing::info!(event = "token_rejected", reason = %e);
            return Err(challenge(Some("invalid_token")));
        }
    };
    let Need::Repository { name, action } = &need else {
        return Ok(Some(claims));
    };
    if claims.allows(name, action) {
        return Ok(Some(claims));
    }
    if !claims.anonymous() && !auth.rights_of(&claims).await?.allows(name, action) {
        return Err(ApiError::Denied);
    }
    Err(challenge(Some("insufficient_scope")))
}

/// Middleware on `/v2`. With auth disabled it lets everything through.
pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let auth = state.as_ref().and_then(|s| s.auth.clone());
    let (Some(state), Some(auth)) = (state, auth) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    match authorize(&auth, &state, req.request()).await {
        Ok(claims) => {
            if let Some(claims) = claims {
                req.extensions_mut().insert(Caller(claims));
            }
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(e) => {
            let response = e.error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// Whether the request may read repository `name` (always, with auth disabled).
pub fn may_pull(state: &AppState, req: &HttpRequest, name: &str) -> bool {
    state.auth.is_none()
        || req
            .extensions()
            .get::<Caller>()
            .is_some_and(|c| c.0.allows(name, scope::PULL))
}

/// Whether the request comes from an admin of repository `name`: a user (not a robot token)
/// whose current rights include the admin permission there. Everyone, with auth disabled.
pub async fn may_administer(
    state: &AppState,
    req: &HttpRequest,
    name: &str,
) -> Result<bool, ApiError> {
    let Some(auth) = &state.auth else {
        return Ok(true);
    };
    let Some(Caller(claims)) = req.extensions().get::<Caller>().cloned() else {
        return Ok(false);
    };
    if claims.anonymous() || claims.robot_scopes.is_some() {
        return Ok(false);
    }
    Ok(auth.rights_of(&claims).await?.allows(name, scope::ALL))
}

/// The client address that login throttling counts: the peer, or for a trusted proxy the
/// last `X-Forwarded-For` hop that is not a trusted proxy (an address in one of the
/// `auth.trusted_proxies` ranges). IPv4-mapped IPv6 addresses count as IPv4.
pub fn client_ip(auth: &Arc<Auth>, req: &HttpRequest) -> IpAddr {
    client_address(&auth.trusted_proxies, req.peer_addr(), req.headers())
}

/// [`client_ip`] from its parts, for the concurrency limits (which apply with auth off too).
pub fn client_address(
    trusted_proxies: &[IpRange],
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> IpAddr {
    let trusted = |ip: IpAddr| is_trusted(trusted_proxies, ip);
    let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip().to_canonical());
    if !trusted(peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted(*ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_per_endpoint() {
        let repo = |name: &str, action| Need::Repository {
            name: name.into(),
            action,
        };
        assert_eq!(Need::of(&Method::GET, ""), Need::Token { catalog: false });
        assert_eq!(
            Need::of(&Method::GET, "_catalog"),
            Need::Token { catalog: true }
        );
        assert_eq!(
            Need::of(&Method::GET, "a/b/manifests/v1"),
            repo("a/b", "pull")
        );
        assert_eq!(
            Need::of(&Method::HEAD, "a/blobs/sha256:x"),
            repo("a", "pull")
        );
        assert_eq!(Need::of(&Method::PUT, "a/manifests/v1"), repo("a", "push"));
        assert_eq!(
            Need::of(&Method::DELETE, "a/manifests/v1"),
            repo("a", "delete")
        );
        assert_eq!(
            Need::of(&Method::DELETE, "a/blobs/sha256:x"),
            repo("a", "delete")
        );
        assert_eq!(
            Need::of(&Method::POST, "a/blobs/uploads/"),
            repo("a", "push")
        );
        assert_eq!(
            Need::of(&Method::GET, "a/blobs/uploads/u"),
            repo("a", "push")
        );
        assert_eq!(
            Need::of(&Method::DELETE, "a/blobs/uploads/u"),
            repo("a", "push")
        );
        assert_eq!(Need::of(&Method::GET, "a/tags/list"), repo("a", "pull"));
        assert_eq!(
            Need::of(&Method::GET, "a/referrers/sha256:x"),
            repo("a", "pull")
        );
        assert_eq!(
            Need::of(&Method::PATCH, "a/blobs/uploads/u")
                .scope()
                .as_deref(),
            Some("repository:a:pull,push")
        );
        assert_eq!(
            Need::of(&Method::GET, "_catalog").scope().as_deref(),
            Some("registry:catalog:*")
        );
    }

    #[test]
    fn challenge_header() {
        let challenge = Challenge {
            realm: "http://r/token".into(),
            service: "svc".into(),
            scope: Some("repository:a:pull".into()),
            error: Some("insufficient_scope"),
        };
        assert_eq!(
            challenge.to_string(),
            "Bearer realm=\"http://r/token\",service=\"svc\",scope=\"repository:a:pull\",error=\"insufficient_scope\""
        );
        let hostile = Challenge {
            realm: "http://r\",realm=\"http://evil/token".into(),
            service: "s\\\r\nX-Injected: 1".into(),
            scope: None,
            error: None,
        };
        assert_eq!(
            hostile.to_string(),
            "Bearer realm=\"http://r\\\",realm=\\\"http://evil/token\",service=\"s\\\\X-Injected: 1\""
        );
    }
}
