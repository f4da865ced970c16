//! What wraps every request: a request id (taken from `X-Request-Id` when sane, returned in
//! the response), a tracing span carrying it, the concurrency limits (each shared between
//! client addresses), the request timeout, the idle timeout of the request body, one log
//! event and the HTTP metrics.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpResponse, ResponseError};
use futures::future::LocalBoxFuture;
use tracing::Instrument;

use super::access::client_address;
use super::endpoints::Blob;
use super::error::ApiError;
use super::path::classify;
use super::slots::{self, Holding, Slots};
use crate::config::{IpRange, LimitsConfig};
use crate::metrics::{InFlight, Metrics};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the middleware learnt of a request, for handlers (notifications report it).
#[derive(Debug, Clone)]
pub struct RequestTag {
    pub id: String,
    /// The client's address, through trusted proxies.
    pub client: std::net::IpAddr,
}

/// Shared by every worker of one server.
pub struct Guard {
    requests: Arc<Slots>,
    /// Only the per-client share: the registry counts uploads themselves.
    uploads: Arc<Slots>,
    downloads: Arc<Slots>,
    request_timeout: Duration,
    idle_timeout: Duration,
    /// Whose `X-Forwarded-For` tells the client address (`auth.trusted_proxies`).
    trusted_proxies: Vec<IpRange>,
    metrics: Arc<Metrics>,
}

impl Guard {
    pub fn new(
        limits: &LimitsConfig,
        trusted_proxies: Vec<IpRange>,
        metrics: Arc<Metrics>,
    ) -> Guard {
        let share = limits.per_client_percent;
        Guard {
            requests: Slots::new(limits.max_concurrent_requests, share),
            uploads: Slots::per_client(limits.max_concurrent_uploads, share),
            downloads: Slots::new(limits.max_concurrent_downloads, share),
            request_timeout: limits.request_timeout,
            idle_timeout: limits.idle_timeout,
            trusted_proxies,
            metrics,
        }
    }
}

/// An incoming id is kept when it is short and plain (it goes into logs and a header);
/// otherwise a fresh one is made.
fn request_id(headers: &HeaderMap) -> String {
    let incoming = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok());
    match incoming {
        Some(id)
            if !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id.to_owned()
        }
        _ => uuid::Uuid::new_v4().simple().to_string(),
    }
}

pub fn handle<S, B>(
    guard: &Arc<Guard>,
    mut req: ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    let started = Instant::now();
    let id = request_id(req.headers());
    let method = req.method().clone();
    let path = req.path().to_owned();
    let (route, blob) = classify(&method, &path);
    let span = tracing::info_span!("request", request_id = %id);
    let operational = matches!(route, "healthz" | "readyz" | "metrics");
    let in_flight = InFlight::new(&guard.metrics.http_in_flight);
    let client = client_address(&guard.trusted_proxies, req.peer_addr(), req.headers());
    req.extensions_mut().insert(RequestTag {
        id: id.clone(),
        client,
    });
    let taken = if operational {
        Some(Taken::default())
    } else {
        take_slots(guard, blob, client)
    };
    let (call, download) = match taken {
        Some(taken) => {
            let payload = req.take_payload();
            req.set_payload(slots::idle_payload(payload, guard.idle_timeout));
            let _entered = span.enter();
            let permit = (taken.request, taken.upload);
            (Ok((srv.call(req), permit)), taken.download)
        }
        // Refused before routing, so the request is still ours to answer.
        None => (
            Err(req.into_response(ApiError::TooManyRequests.error_response())),
            None,
        ),
    };
    // A blob from the client is bounded by its pace and the IPFS timeouts instead.
    let timeout = (!operational && blob != Blob::Received).then_some(guard.request_timeout);
    let guard = guard.clone();
    let log_span = span.clone();
    Box::pin(
        async move {
            let result = match call {
                Err(refused) => Ok(refused),
                Ok((call, _permit)) => match timeout {
                    Some(limit) => match tokio::time::timeout(limit, call).await {
                        Ok(result) => result.map(ServiceResponse::map_into_boxed_body),
                        Err(_) => {
                            tracing::warn!(
                                event = "request_timeout",
                                limit_ms = limit.as_millis() as u64
                            );
                            // The request went down with the handler: actix renders the
                            // error (ApiError's OCI body); `Identified` below adds the id.
                            Err(ApiError::Timeout(limit).into())
                        }
                    },
                    None => call.await.map(ServiceResponse::map_into_boxed_body),
                },
            };
            // The download slot goes with the body, which is sent after this returns.
            let result = match (result, download) {
                (Ok(response), Some(slot)) => {
                    Ok(response.map_body(|_, body| BoxBody::new(Holding::new(body, slot))))
                }
                (result, _) => result,
            };
            drop(in_flight);
            let status = match &result {
                Ok(response) => response.status(),
                Err(e) => e.as_response_error().status_code(),
            };
            let took = started.elapsed();
            guard
                .metrics
                .record_http(method.as_str(), route, status.as_u16(), took);
            // Probes poll every few seconds: their lines would drown the rest at `info`.
            if operational {
                tracing::debug!(
                    event = "request",
                    method = %method,
                    path = %path,
                    route,
                    status = status.as_u16(),
                    duration_ms = took.as_millis() as u64,
                );
            } else {
                tracing::info!(
                    event = "request",
                    method = %method,
                    path = %path,
                    route,
                    status = status.as_u16(),
                    duration_ms = took.as_millis() as u64,
                );
            }
            let mut response = result.map_err(|error| Identified {
                error,
                id: id.clone(),
            })?;
            if let Ok(value) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            Ok(response)
        }
        .instrument(log_span),
    )
}

/// The slots a request holds.
#[derive(Default)]
struct Taken {
    request: Option<slots::Slot>,
    upload: Option<slots::Slot>,
    download: Option<slots::Slot>,
}

/// The request's slot, and its upload or download slot when it carries a blob; `None` when
/// any is refused.
fn take_slots(guard: &Guard, blob: Blob, client: IpAddr) -> Option<Taken> {
    let request = guard.requests.try_take(client)?;
    let upload = if blob == Blob::Received {
        Some(guard.uploads.try_take(client)?)
    } else {
        None
    };
    // Counted as a download until the response body is sent, well after the handler returned.
    let download = if blob == Blob::Sent {
        Some(guard.downloads.try_take(client)?)
    } else {
        None
    };
    Some(Taken {
        request: Some(request),
        upload,
        download,
    })
}

/// An error leaving the middleware (actix renders it, with no request left to attach
/// headers to) that still answers with the request id.
#[derive(Debug)]
struct Identified {
    error: actix_web::Error,
    id: String,
}

impl std::fmt::Display for Identified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for Identified {
    fn status_code(&self) -> StatusCode {
        self.error.as_response_error().status_code()
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let mut response = self.error.error_response();
        if let Ok(value) = HeaderValue::from_str(&self.id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_plain() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(request_id(&headers), "abc-123_x.y:z");
        headers.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        let generated = request_id(&headers);
        assert_eq!(generated.len(), 32, "{generated}");
        assert_ne!(request_id(&HeaderMap::new()), generated);
        headers.insert(REQUEST_ID, HeaderValue::from_str(&"a".repeat(129)).unwrap());
        assert_eq!(request_id(&headers).len(), 32);
    }
}
