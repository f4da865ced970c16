//! Publishing tagged images off the request path. A tagged push of a public repository
//! queues its (tag, manifest) in the metadata store before it answers
//! ([`Registry::publish_after_push`]); every `serve` runs one publisher that claims due
//! entries, publishes their layouts ([`Registry::publish_layout`]'s work) and drops them.
//! The queue is durable and shared: an acknowledged push is published even if its process
//! dies first (another replica, or this one restarted, claims the entry once its lease
//! runs out), and replicas never publish the same entry at once.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;

use super::Registry;
use crate::meta::QueuedLayout;

/// Entries claimed at once.
const BATCH: u32 = 32;
/// Entries published at once: a layout's work is mostly waiting on the blob store, but a
/// burst of pushes should not take the CPU from the pushes themselves.
const PARALLEL: usize = 2;
/// How long a claim keeps other replicas off an entry: far longer than a publish usually
/// takes (a few small blocks and a pin), short enough that a dead process's entries are
/// soon taken over (by its own restart too). A publish that outlasts it may run twice,
/// which only repeats the same work: a layout is deterministic.
const LEASE: Duration = Duration::from_secs(30);
/// How often an idle publisher looks for entries other replicas queued (this process's
/// pushes wake it at once).
const POLL: Duration = Duration::from_secs(2);
/// The first retry's delay after a failed attempt, doubled per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Attempts before an entry is given up on (logged; `ipfs-registry publish` retries it).
const MAX_ATTEMPTS: u32 = 10;
/// How often an idle publisher counts the queue for the `layouts_queued` gauge (a busy
/// one counts after every round).
const RECOUNT: Duration = Duration::from_secs(10);

/// Wakes this process's publisher after a push queued an image.
#[derive(Default)]
pub struct Wake(Notify);

impl Wake {
    pub fn wake(&self) {
        // A permit is kept when the publisher is busy, so a push during a round is seen.
        self.0.notify_one();
    }
}

impl Registry {
    /// The publisher loop, until aborted (see the module's documentation).
    pub fn spawn_publisher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        tokio::spawn(async move { registry.run_publisher().await })
    }

    async fn run_publisher(&self) {
        let mut recounted: Option<tokio::time::Instant> = None;
        let mut worked = false;
        loop {
            if worked || recounted.is_none_or(|at| at.elapsed() >= RECOUNT) {
                match self.meta.queued_layouts().await {
                    Ok(queued) => {
                        self.metrics.layouts_queued.set(queued as i64);
                    }
                    Err(e) => tracing::warn!(event = "layout_queue_count_failed", error = %e),
                }
                recounted = Some(tokio::time::Instant::now());
            }
            let claimed = match self.meta.claim_layouts(BATCH, LEASE).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(event = "layout_claim_failed", error = %e);
                    Vec::new()
                }
            };
            worked = !claimed.is_empty();
            if claimed.is_empty() {
                let _ = tokio::time::timeout(POLL, self.publisher.0.notified()).await;
                continue;
            }
            futures::stream::iter(claimed)
                .for_each_concurrent(PARALLEL, |entry| async move {
                    self.publish_entry(&entry).await;
                })
                .await;
        }
    }

    async fn publish_entry(&self, entry: &QueuedLayout) {
        let outcome = self
            .publish_queued_layout(&entry.repo, &entry.tag, &entry.manifest)
            .await;
        let settled = match outcome {
            Ok(published) => {
                // `None`: the tag moved, and its new push queued its own entry.
                let label = if published.is_some() { "ok" } else { "moved" };
                self.metrics.record_layout_published(label);
                if published.is_some() {
                    self.index.wake();
                }
                self.meta.dequeue_layout(entry).await
            }
            Err(e) if entry.attempts + 1 >= MAX_ATTEMPTS => {
                self.metrics.record_layout_published("failed");
                tracing::warn!(
                    event = "layout_publish_failed",
                    repository = %entry.repo,
                    tag = %entry.tag,
                    digest = %entry.manifest,
                    attempts = entry.attempts + 1,
                    error = %e,
                    "given up; `ipfs-registry publish` retries",
                );
                self.meta.dequeue_layout(entry).await
            }
            Err(e) => {
                self.metrics.record_layout_published("retried");
                let backoff = backoff(entry.attempts);
                tracing::info!(
                    event = "layout_publish_retry",
                    repository = %entry.repo,
                    tag = %entry.tag,
                    digest = %entry.manifest,
                    attempts = entry.attempts + 1,
                    retry_in_ms = backoff.as_millis() as u64,
                    error = %e,
                );
                self.meta.retry_layout(entry, backoff).await
            }
        };
        if let Err(e) = settled {
            // The claim runs out and the entry is tried again.
            tracing::warn!(event = "layout_queue_update_failed", repository = %entry.repo, tag = %entry.tag, error = %e);
        }
    }
}

/// The delay before the attempt after `attempts` failed ones (and the one just failed).
fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32.checked_shl(attempts).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(0), Duration::from_secs(2));
        assert_eq!(backoff(1), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(64));
        assert_eq!(backoff(9), MAX_BACKOFF);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
