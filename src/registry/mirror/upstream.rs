//! An upstream registry as a client of its OCI Distribution API: anonymous, Basic, or the
//! Docker token flow (a 401's `WWW-Authenticate: Bearer realm=…,service=…,scope=…` → GET the
//! realm, with Basic credentials when configured → a token cached per scope until it
//! expires).

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::blobs::ByteStream;
use crate::config::MirrorConfig;
use crate::oci::{Digest, RepoName};

/// Every manifest type a client may get, so the upstream never converts one (Docker Hub
/// answers a schema 1 manifest to a client that asks for none).
/// (`asks_for_every_manifest_type` checks it against `oci::media`.)
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// A token is not used in its last seconds: it could expire on the way.
const TOKEN_MARGIN: Duration = Duration::from_secs(5);
/// What a token endpoint's answer may hold.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// The lifetime the spec gives a token whose answer names none.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// 404: the upstream has no such repository, manifest or blob.
    #[error("not found upstream")]
    NotFound,
    /// Unreachable, timed out, rate-limited (429) or failing (5xx); `retry_after` is the
    /// upstream's `Retry-After` in seconds, when it sent one.
    #[error("upstream unavailable: {message}")]
    Unavailable {
        message: String,
        retry_after: Option<u64>,
    },
    /// The upstream refused our credentials (or has none for us).
    #[error("upstream refused access: {0}")]
    Denied(String),
    /// An answer that cannot be right (too large, not what was asked for).
    #[error("upstream answered wrongly: {0}")]
    Invalid(String),
}

type Result<T, E = UpstreamError> = std::result::Result<T, E>;

/// A manifest as the upstream sent it.
pub struct FetchedManifest {
    pub content: Bytes,
    pub content_type: Option<String>,
    /// The upstream's `Docker-Content-Digest`, when it sent one.
    pub digest: Option<Digest>,
}

/// A blob's body as it arrives, and its length when the upstream said.
pub struct FetchedBlob {
    pub length: Option<u64>,
    pub body: ByteStream,
}

#[derive(Clone)]
enum Authorization {
    Basic,
    Bearer(String),
}

pub struct Upstream {
    client: reqwest::Client,
    /// The base URL with a trailing slash, so that joining `v2/…` keeps its path.
    base: Url,
    credentials: Option<(String, String)>,
    timeout: Duration,
    max_manifest_size: usize,
    /// Per scope: a bearer token and when it stops being used.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// Set once the upstream asked for Basic: then credentials go with every request.
    basic: std::sync::atomic::AtomicBool,
}

impl Upstream {
    pub fn new(config: &MirrorConfig, max_manifest_size: usize) -> Result<Upstream, String> {
        let roots = crate::tls::root_store(None)?;
        let tls = crate::tls::verifying_client(roots)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(config.timeout)
            .read_timeout(config.read_timeout)
            .user_agent(concat!(
                "ipfs-registry/",
                env!("CARGO_PKG_VERSION"),
                " (mirror)"
            ))
            .build()
            .map_err(|e| format!("mirror {}: HTTP client: {e}", config.upstream))?;
        let mut base = config.upstream.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Upstream {
            client,
            base,
            credentials: config
                .username
                .clone()
                .map(|user| (user, config.password.clone().unwrap_or_default())),
            timeout: config.timeout,
            max_manifest_size,
            tokens: Mutex::new(HashMap::new()),
            basic: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// `https://host/v2/<name>`, for people (logs, the mirrored repository's record).
    pub fn repository_url(&self, name: &RepoName) -> String {
        self.url(&format!("v2/{name}"))
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .map_err(|e| UpstreamError::Invalid(format!("URL for {path}: {e}")))
    }

    /// The digest the upstream's tag (or digest) points at now, from a HEAD; `None` when
    /// the upstream does not say (then a GET tells).
    pub async fn manifest_digest(
        &self,
        name: &RepoName,
        reference: &str,
    ) -> Result<Option<Digest>> {
        let path = format!("v2/{name}/manifests/{reference}");
        let response = self
            .send(Method::HEAD, &path, name, Some(MANIFEST_ACCEPT), true)
            .await?;
        Ok(content_digest(response.headers()))
    }

    /// The manifest's exact bytes, at most the registry's manifest size limit.
    pub async fn manifest(&self, name: &RepoName, reference: &str) -> Result<FetchedManifest> {
        let path = format!("v2/{name}/manifests/{reference}");
        let response = self
            .send(Method::GET, &path, name, Some(MANIFEST_ACCEPT), true)
            .await?;
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let digest = content_digest(response.headers());
        let content = read_limited(response, self.max_manifest_size, "manifest").await?;
        Ok(FetchedManifest {
            content,
            content_type,
            digest,
        })
    }

    /// A blob's size, from a HEAD.
    pub async fn blob_size(&self, name: &RepoName, digest: &Digest) -> Result<u64> {
        let path = format!("v2/{name}/blobs/{digest}");
        let response = self.send(Method::HEAD, &path, name, None, true).await?;
        response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| UpstreamError::Invalid("a blob HEAD without Content-Length".into()))
    }

    /// A blob's body as it streams (redirects followed: Docker Hub sends blobs from a CDN;
    /// reqwest drops our `Authorization` when the redirect leaves the host).
    pub async fn blob(&self, name: &RepoName, digest: &Digest) -> Result<FetchedBlob> {
        let path = format!("v2/{name}/blobs/{digest}");
        let response = self.send(Method::GET, &path, name, None, false).await?;
        let length = response.content_length();
        let body = response.bytes_stream().map_err(io::Error::other);
        Ok(FetchedBlob {
            length,
            body: Box::pin(body),
        })
    }

    /// One request, authorised as the upstream asks: with a cached token or Basic
    /// credentials when known, else anonymous first; a 401 is answered once (a token for
    /// the challenge's scope, or Basic) and the request repeated. `bounded` holds the
    /// whole exchange to the mirror's `timeout` (a blob's body has only `read_timeout`).
    async fn send(
        &self,
        method: Method,
        path: &str,
        name: &RepoName,
        accept: Option<&str>,
        bounded: bool,
    ) -> Result<reqwest::Response> {
        let url = self.url(path)?;
        let scope = format!("repository:{name}:pull");
        let mut authorization = self.known_authorization(&scope);
        for attempt in 0..2 {
            let mut request = self.client.request(method.clone(), url.clone());
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            if bounded {
                request = request.timeout(self.timeout);
            }
            request = self.authorize(request, authorization.as_ref());
            let response = request.send().await.map_err(unreachable)?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .unwrap_or_default();
                authorization = Some(self.answer(&challenge, &scope).await?);
                continue;
            }
            return check_status(response);
        }
        Err(UpstreamError::Denied(format!(
            "{method} {url}: still 401 after authenticating"
        )))
    }

    fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        authorization: Option<&Authorization>,
    ) -> reqwest::RequestBuilder {
        match authorization {
            Some(Authorization::Bearer(token)) => request.bearer_auth(token),
            Some(Authorization::Basic) => match &self.credentials {
                Some((user, password)) => request.basic_auth(user, Some(password)),
                None => request,
            },
            None => request,
        }
    }

    fn known_authorization(&self, scope: &str) -> Option<Authorization> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, until)) = tokens.get(scope) {
            if Instant::now() < *until {
                return Some(Authorization::Bearer(token.clone()));
            }
        }
        (self.basic.load(std::sync::atomic::Ordering::Relaxed) && self.credentials.is_some())
            .then_some(Authorization::Basic)
    }

    /// What answers the challenge: a token from the realm it names, or our Basic
    /// credentials.
    async fn answer(&self, challenge: &str, scope: &str) -> Result<Authorization> {
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            if self.credentials.is_none() {
                return Err(UpstreamError::Denied(
                    "the upstream asks for credentials and the mirror has none".into(),
                ));
            }
            self.basic.store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(Authorization::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(UpstreamError::Denied(format!(
                "the upstream answered 401 with the challenge {challenge:?}"
            )));
        }
        let realm = params
            .get("realm")
            .ok_or_else(|| UpstreamError::Invalid("Bearer challenge without a realm".into()))?;
        let mut url = Url::parse(realm)
            .map_err(|e| UpstreamError::Invalid(format!("token realm {realm:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UpstreamError::Invalid(format!(
                "token realm {realm:?} is not http(s)"
            )));
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = params.get("service") {
                query.append_pair("service", service);
            }
            query.append_pair("scope", params.get("scope").map_or(scope, String::as_str));
        }
        let mut request = self.client.get(url).timeout(self.timeout);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(unreachable)?;
        let response = match check_status(response) {
            Err(UpstreamError::NotFound) => {
                return Err(UpstreamError::Invalid(
                    "the token realm answered 404".into(),
                ))
            }
            other => other?,
        };
        let body = read_limited(response, MAX_TOKEN_RESPONSE, "token response").await?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::Invalid(format!("token response: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UpstreamError::Invalid("token response holds no token".into()))?;
        let lifetime = answer
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        let now = Instant::now();
        let until = now + lifetime.saturating_sub(TOKEN_MARGIN);
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        // One entry per repository pulled: expired ones go, so the cache stays bounded by
        // the repositories pulled within a token's lifetime.
        tokens.retain(|_, (_, until)| *until > now);
        tokens.insert(scope.to_owned(), (token.clone(), until));
        Ok(Authorization::Bearer(token))
    }
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

fn unreachable(e: reqwest::Error) -> UpstreamError {
    UpstreamError::Unavailable {
        message: crate::error_chain::with_sources(&e),
        retry_after: None,
    }
}

fn check_status(response: reqwest::Response) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let url = response.url().clone();
    match status {
        StatusCode::NOT_FOUND => Err(UpstreamError::NotFound),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Err(UpstreamError::Denied(format!("{url} answered {status}")))
        }
        s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => {
            Err(UpstreamError::Unavailable {
                message: format!("{url} answered {status}"),
                retry_after: retry_after(response.headers()),
            })
        }
        _ => Err(UpstreamError::Invalid(format!("{url} answered {status}"))),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from registries and read as none).
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn content_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get("docker-content-digest")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The body, refused once it passes `limit` bytes (never buffering more).
async fn read_limited(response: reqwest::Response, limit: usize, what: &str) -> Result<Bytes> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(UpstreamError::Invalid(format!(
            "the {what} is larger than {limit} bytes"
        )));
    }
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(unreachable)?;
        if body.len() + piece.len() > limit {
            return Err(UpstreamError::Invalid(format!(
                "the {what} is larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body.freeze())
}

/// `Bearer realm="…",service="…",scope="…"` → ("Bearer", {realm, service, scope}).
fn parse_challenge(challenge: &str) -> (String, HashMap<String, String>) {
    let challenge = challenge.trim();
    let (scheme, rest) = challenge
        .split_once(char::is_whitespace)
        .unwrap_or((challenge, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    (scheme.to_owned(), params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media;

    #[test]
    fn parses_docker_hub_challenges() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(params["realm"], "https://auth.docker.io/token");
        assert_eq!(params["service"], "registry.docker.io");
        assert_eq!(params["scope"], "repository:library/alpine:pull");
        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(scheme, "Basic");
        assert_eq!(params["realm"], "Registry Realm");
        let (_, params) = parse_challenge(r#"Bearer realm="a\"b", service=plain , error="x""#);
        assert_eq!(params["realm"], "a\"b");
        assert_eq!(params["service"], "plain");
        assert_eq!(params["error"], "x");
    }

    #[test]
    fn asks_for_every_manifest_type() {
        for media_type in [
            media::OCI_INDEX,
            media::OCI_MANIFEST,
            media::DOCKER_MANIFEST_LIST,
            media::DOCKER_MANIFEST,
        ] {
            assert!(MANIFEST_ACCEPT.contains(media_type));
        }
    }
}
