//! Sends what the outbox holds: one loop per endpoint, in every replica. A loop claims a
//! batch of its endpoint's due events for this process (a claim lasts a little longer than
//! one delivery attempt, so a process killed mid-delivery leaves them to the next claim),
//! POSTs them as one envelope, and deletes them on a 2xx. Any other outcome counts a failed
//! attempt on each and makes it due again after the endpoint's backoff, doubled per
//! attempt, until `max_attempts`; then it is kept as failed for `notifications replay`.
//! Delivery is at least once: a receiver may see an event twice (a claim that ran out while
//! the receiver was answering), and should deduplicate by the event's `id`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use tokio::sync::Notify;

use crate::config::NotificationEndpoint;
use crate::meta::outbox::{OutboxEntry, OutboxStore, Retry};
use crate::metrics::{EndpointLabels, Metrics};

/// distribution's envelope media type, which existing receivers check.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// `sha256=<hex>` of the HMAC-SHA256 of the body under the endpoint's `secret`.
pub const SIGNATURE_HEADER: &str = "x-registry-signature-256";
/// Events per envelope.
const BATCH: u32 = 50;
/// How often an idle loop looks for events recorded by other replicas (events this process
/// records wake it at once).
const POLL: Duration = Duration::from_secs(1);
/// How often the pending and failed gauges are recounted.
const RECOUNT: Duration = Duration::from_secs(10);

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Wakes the delivery loops of this process after it recorded events.
#[derive(Default)]
pub struct Wake(Notify);

impl Wake {
    pub fn wake(&self) {
        self.0.notify_waiters();
    }
}

/// The delivery loops of every configured endpoint, plus the gauges' recount, until
/// aborted. `holder` names this process in claims.
pub fn spawn(
    endpoints: &[NotificationEndpoint],
    outbox: Arc<dyn OutboxStore>,
    metrics: Arc<Metrics>,
    wake: Arc<Wake>,
    holder: &str,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    if endpoints.is_empty() {
        return Ok(Vec::new());
    }
    let roots = crate::tls::root_store(None)?;
    let tls = crate::tls::verifying_client(roots)?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| format!("notifications HTTP client: {e}"))?;
    let mut tasks = Vec::new();
    for endpoint in endpoints {
        let delivery = Delivery {
            endpoint: endpoint.clone(),
            headers: headers(endpoint)?,
            client: client.clone(),
            outbox: outbox.clone(),
            metrics: metrics.clone(),
            labels: EndpointLabels {
                endpoint: endpoint.name.clone(),
            },
            holder: holder.to_owned(),
        };
        let wake = wake.clone();
        tasks.push(tokio::spawn(async move { delivery.run(&wake).await }));
    }
    let names = endpoints.iter().map(|e| e.name.clone()).collect();
    tasks.push(tokio::spawn(recount(outbox, metrics, names)));
    Ok(tasks)
}

fn headers(endpoint: &NotificationEndpoint) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in &endpoint.headers {
        let name = HeaderName::try_from(name.as_str()).map_err(|e| format!("{name}: {e}"))?;
        let value = HeaderValue::try_from(value.as_str()).map_err(|e| format!("{name}: {e}"))?;
        headers.insert(name, value);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(ENVELOPE_MEDIA_TYPE));
    Ok(headers)
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The envelope of `entries` (each holds one event object as JSON text).
pub fn envelope(entries: &[OutboxEntry]) -> String {
    let events: Vec<&str> = entries.iter().map(|e| e.event.as_str()).collect();
    format!("{{\"events\":[{}]}}", events.join(","))
}

struct Delivery {
    endpoint: NotificationEndpoint,
    headers: HeaderMap,
    client: reqwest::Client,
    outbox: Arc<dyn OutboxStore>,
    metrics: Arc<Metrics>,
    labels: EndpointLabels,
    holder: String,
}

impl Delivery {
    /// A claim outlives one attempt (its timeout) with room for the database round trips.
    fn lease(&self) -> Duration {
        self.endpoint.timeout * 2 + Duration::from_secs(5)
    }

    async fn run(self, wake: &Wake) {
        loop {
            // Registered before looking, so a wake between the claim and the wait counts.
            let woken = wake.0.notified();
            let claimed = self
                .outbox
                .claim_notices(&self.endpoint.name, &self.holder, self.lease(), BATCH)
                .await;
            match claimed {
                Ok(entries) if !entries.is_empty() => {
                    self.deliver(entries).await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(event = "notification_claim_failed", endpoint = %self.endpoint.name, error = %e);
                }
            }
            let _ = tokio::time::timeout(POLL, woken).await;
        }
    }

    async fn deliver(&self, entries: Vec<OutboxEntry>) {
        let body = envelope(&entries);
        let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
        let started = Instant::now();
        let outcome = self.post(body).await;
        self.metrics
            .notification_duration
            .get_or_create(&self.labels)
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(()) => {
                self.metrics
                    .notifications_delivered
                    .get_or_create(&self.labels)
                    .inc_by(ids.len() as u64);
                tracing::debug!(event = "notifications_delivered", endpoint = %self.endpoint.name, count = ids.len());
                if let Err(e) = self.outbox.notices_delivered(&self.holder, &ids).await {
                    // Their claim runs out and they are sent again: at least once.
                    tracing::warn!(event = "notification_ack_failed", endpoint = %self.endpoint.name, error = %e, "delivered events may be sent again");
                }
            }
            Err(error) => {
                let outcomes: Vec<(i64, Retry)> =
                    entries.iter().map(|e| (e.id, self.retry(e))).collect();
                let given_up = outcomes.iter().filter(|(_, r)| *r == Retry::GiveUp).count();
                self.metrics
                    .notifications_failed
                    .get_or_create(&self.labels)
                    .inc_by(ids.len() as u64);
                self.metrics
                    .notifications_given_up
                    .get_or_create(&self.labels)
                    .inc_by(given_up as u64);
                tracing::warn!(event = "notification_failed", endpoint = %self.endpoint.name, count = ids.len(), given_up, error = %error);
                if let Err(e) = self
                    .outbox
                    .notices_failed(&self.holder, &outcomes, &error)
                    .await
                {
                    tracing::warn!(event = "notification_release_failed", endpoint = %self.endpoint.name, error = %e, "retried when the claim runs out");
                }
            }
        }
    }

    /// After a failed attempt on `entry` (which had `attempts` before it).
    fn retry(&self, entry: &OutboxEntry) -> Retry {
        let attempts = entry.attempts + 1;
        if attempts >= self.endpoint.max_attempts {
            return Retry::GiveUp;
        }
        let doubled = self
            .endpoint
            .backoff
            .saturating_mul(1u32 << (attempts - 1).min(20));
        Retry::After(doubled.min(self.endpoint.max_backoff))
    }

    async fn post(&self, body: String) -> Result<(), String> {
        let mut request = self
            .client
            .post(self.endpoint.url.clone())
            .headers(self.headers.clone())
            .timeout(self.endpoint.timeout);
        if let Some(secret) = &self.endpoint.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, body.as_bytes()));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| crate::error_chain::with_sources(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the endpoint answered {status}"))
        }
    }
}

/// Sets the gauges of every configured endpoint (0 when it has nothing waiting).
async fn recount(outbox: Arc<dyn OutboxStore>, metrics: Arc<Metrics>, endpoints: Vec<String>) {
    loop {
        match outbox.notice_counts().await {
            Ok(counts) => {
                let counts: std::collections::HashMap<String, _> = counts.into_iter().collect();
                for endpoint in &endpoints {
                    let counts = counts.get(endpoint).copied().unwrap_or_default();
                    let labels = EndpointLabels {
                        endpoint: endpoint.clone(),
                    };
                    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                    metrics
                        .notifications_pending
                        .get_or_create(&labels)
                        .set(gauge(counts.pending));
                    metrics
                        .notifications_failed_kept
                        .get_or_create(&labels)
                        .set(gauge(counts.failed));
                }
            }
            Err(e) => tracing::warn!(event = "notification_count_failed", error = %e),
        }
        tokio::time::sleep(RECOUNT).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
