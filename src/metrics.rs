//! Prometheus metrics. One [`Metrics`] is built per server and handed to whatever records
//! into it (no process-wide registry), so tests can run several servers side by side.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// A `[[federation.follow]]` rule, by its name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleOutcomeLabels {
    pub rule: String,
    pub outcome: &'static str,
}

/// A gauge of seconds (timestamps, lags), with their fractions.
pub type Seconds = Gauge<f64, std::sync::atomic::AtomicU64>;

/// What a pull-through mirror did: `kind` is `manifest` or `blob`; `outcome` is `fetched`
/// (stored from the upstream), `failed` (an upstream or store failure answered to the
/// client), or for manifests `stale` (served without the upstream's confirmation).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 1 ms to about 65 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_duration: HistogramFamily<RouteLabels>,
    pub http_in_flight: Gauge,
    pub blob_bytes_in: Counter,
    pub blob_bytes_out: Counter,
    pub ipfs_calls: Family<OperationLabels, Counter>,
    pub ipfs_errors: Family<OperationLabels, Counter>,
    pub ipfs_duration: HistogramFamily<OperationLabels>,
    pub db_queries: Family<OperationLabels, Counter>,
    pub db_errors: Family<OperationLabels, Counter>,
    pub db_duration: HistogramFamily<OperationLabels>,
    pub db_pool_max: Gauge,
    pub db_pool_size: Gauge,
    pub db_pool_available: Gauge,
    pub db_pool_waiting: Gauge,
    pub uploads_in_progress: Gauge,
    pub gc_runs: Family<OutcomeLabels, Counter>,
    /// Image layouts published on tagged pushes (and by `publish`), by outcome.
    pub layouts_published: Family<OutcomeLabels, Counter>,
    /// Tagged images waiting to be published (every replica's), as last counted.
    pub layouts_queued: Gauge,
    /// Pull-through mirror fetches, by kind and outcome.
    pub mirror_fetches: Family<MirrorLabels, Counter>,
    pub images_imported: Family<OutcomeLabels, Counter>,
    /// `[[federation.follow]]`: tags handled by each rule's passes, by outcome.
    pub follow_imports: Family<RuleOutcomeLabels, Counter>,
    /// When each rule last completed a pass that left it in sync with its source.
    pub follow_last_success: Family<RuleLabels, Seconds>,
    /// Seconds since then, as of the rule's last poll.
    pub follow_lag: Family<RuleLabels, Seconds>,
    /// Polls or passes that failed (the source unreachable, tags that failed).
    pub follow_errors: Family<RuleLabels, Counter>,
    /// Public index rebuilds (built, unchanged, failed) and IPNS publications.
    pub index_builds: Family<OutcomeLabels, Counter>,
    pub index_images: Gauge,
    pub index_omitted: Gauge,
    pub ipns_publishes: Family<OutcomeLabels, Counter>,
    pub gc_freed_bytes: Counter,
    pub gc_freed_blobs: Counter,
    pub gc_deleted_manifests: Counter,
    pub gc_removed_tags: Counter,
    pub gc_expired_uploads: Counter,
    pub auth: Family<OutcomeLabels, Counter>,
    pub blobs_quarantined: Gauge,
    pub scrub_bytes: Counter,
    pub scrub_blobs: Counter,
    pub scrub_corrupt: Counter,
    pub notifications_delivered: Family<EndpointLabels, Counter>,
    pub notifications_failed: Family<EndpointLabels, Counter>,
    pub notifications_given_up: Family<EndpointLabels, Counter>,
    pub notifications_pending: Family<EndpointLabels, Gauge>,
    pub notifications_failed_kept: Family<EndpointLabels, Gauge>,
    pub notification_duration: HistogramFamily<EndpointLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ipfs_registry");
        let m = Metrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency),
            http_in_flight: Gauge::default(),
            blob_bytes_in: Counter::default(),
            blob_bytes_out: Counter::default(),
            ipfs_calls: Family::default(),
            ipfs_errors: Family::default(),
            ipfs_duration: Family::new_with_constructor(latency),
            db_queries: Family::default(),
            db_errors: Family::default(),
            db_duration: Family::new_with_constructor(latency),
            db_pool_max: Gauge::default(),
            db_pool_size: Gauge::default(),
            db_pool_available: Gauge::default(),
            db_pool_waiting: Gauge::default(),
            uploads_in_progress: Gauge::default(),
            gc_runs: Family::default(),
            layouts_published: Family::default(),
            layouts_queued: Gauge::default(),
            mirror_fetches: Family::default(),
            images_imported: Family::default(),
            follow_imports: Family::default(),
            follow_last_success: Family::default(),
            follow_lag: Family::default(),
            follow_errors: Family::default(),
            index_builds: Family::default(),
            index_images: Gauge::default(),
            index_omitted: Gauge::default(),
            ipns_publishes: Family::default(),
            gc_freed_bytes: Counter::default(),
            gc_freed_blobs: Counter::default(),
            gc_deleted_manifests: Counter::default(),
            gc_removed_tags: Counter::default(),
            gc_expired_uploads: Counter::default(),
            auth: Family::default(),
            blobs_quarantined: Gauge::default(),
            scrub_bytes: Counter::default(),
            scrub_blobs: Counter::default(),
            scrub_corrupt: Counter::default(),
            notifications_delivered: Family::default(),
            notifications_failed: Family::default(),
            notifications_given_up: Family::default(),
            notifications_pending: Family::default(),
            notifications_failed_kept: Family::default(),
            notification_duration: Family::new_with_constructor(latency),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests by method, route and status",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency until the response head, by method and route",
            m.http_duration.clone(),
        );
        r.register(
            "http_requests_in_flight",
            "HTTP requests being handled",
            m.http_in_flight.clone(),
        );
        r.register(
            "blob_bytes_received",
            "Blob bytes received from clients and stored",
            m.blob_bytes_in.clone(),
        );
        r.register(
            "blob_bytes_sent",
            "Blob bytes sent to clients",
            m.blob_bytes_out.clone(),
        );
        r.register(
            "ipfs_calls",
            "IPFS RPC calls by operation",
            m.ipfs_calls.clone(),
        );
        r.register(
            "ipfs_errors",
            "IPFS RPC calls that failed, by operation",
            m.ipfs_errors.clone(),
        );
        r.register(
            "ipfs_call_duration_seconds",
            "IPFS RPC call latency by operation (for add and cat: until the call returns)",
            m.ipfs_duration.clone(),
        );
        r.register(
            "db_queries",
            "Metadata store operations",
            m.db_queries.clone(),
        );
        r.register(
            "db_errors",
            "Metadata store operations that failed",
            m.db_errors.clone(),
        );
        r.register(
            "db_query_duration_seconds",
            "Metadata store operation latency (including the wait for a connection)",
            m.db_duration.clone(),
        );
        r.register(
            "db_pool_max_connections",
            "Configured size of the database connection pool",
            m.db_pool_max.clone(),
        );
        r.register(
            "db_pool_connections",
            "Open database connections",
            m.db_pool_size.clone(),
        );
        r.register(
            "db_pool_idle_connections",
            "Open database connections not in use",
            m.db_pool_available.clone(),
        );
        r.register(
            "db_pool_waiting",
            "Requests waiting for a database connection",
            m.db_pool_waiting.clone(),
        );
        r.register(
            "notifications_delivered",
            "Events delivered, by endpoint",
            m.notifications_delivered.clone(),
        );
        r.register(
            "notifications_failed",
            "Events whose delivery attempt failed (each attempt), by endpoint",
            m.notifications_failed.clone(),
        );
        r.register(
            "notifications_given_up",
            "Events kept as failed after their last attempt, by endpoint",
            m.notifications_given_up.clone(),
        );
        r.register(
            "notifications_pending",
            "Events waiting for delivery, by endpoint (as last counted)",
            m.notifications_pending.clone(),
        );
        r.register(
            "notifications_failed_events",
            "Events kept as failed until replayed, by endpoint (as last counted)",
            m.notifications_failed_kept.clone(),
        );
        r.register(
            "notification_delivery_duration_seconds",
            "Latency of one delivery POST, by endpoint",
            m.notification_duration.clone(),
        );
        r.register(
            "uploads_in_progress",
            "Upload requests streaming into the blob store",
            m.uploads_in_progress.clone(),
        );
        r.register(
            "layouts_published",
            "Image layouts published in IPFS, by outcome",
            m.layouts_published.clone(),
        );
        r.register(
            "layouts_queued",
            "Tagged images waiting to be published as image layouts",
            m.layouts_queued.clone(),
        );
        r.register(
            "mirror_fetches",
            "Pull-through mirror fetches from upstreams, by kind and outcome",
            m.mirror_fetches.clone(),
        );
        r.register(
            "images_imported",
            "Imports of images by CID, by outcome",
            m.images_imported.clone(),
        );
        r.register(
            "federation_index_builds",
            "Rebuilds of the public index, by outcome (built, unchanged, failed)",
            m.index_builds.clone(),
        );
        r.register(
            "federation_index_images",
            "Images the public index lists",
            m.index_images.clone(),
        );
        r.register(
            "federation_index_omitted",
            "Images left out of the public index because their directory was full",
            m.index_omitted.clone(),
        );
        r.register(
            "federation_ipns_publishes",
            "Publications of the public index under the registry's IPNS name, by outcome",
            m.ipns_publishes.clone(),
        );
        r.register(
            "federation_follow_imports",
            "Tags handled by follow rules' passes, by rule and outcome",
            m.follow_imports.clone(),
        );
        r.register(
            "federation_follow_last_success_timestamp_seconds",
            "When each follow rule last completed a pass in sync with its source",
            m.follow_last_success.clone(),
        );
        r.register(
            "federation_follow_lag_seconds",
            "Seconds since each follow rule was last in sync with its source, as of its last poll",
            m.follow_lag.clone(),
        );
        r.register(
            "federation_follow_errors",
            "Follow rules' failed polls and passes, by rule",
            m.follow_errors.clone(),
        );
        r.register(
            "gc_runs",
            "Garbage collection runs by outcome",
            m.gc_runs.clone(),
        );
        r.register(
            "gc_freed_bytes",
            "Blob bytes freed by garbage collection",
            m.gc_freed_bytes.clone(),
        );
        r.register(
            "gc_freed_blobs",
            "Blobs deleted by garbage collection",
            m.gc_freed_blobs.clone(),
        );
        r.register(
            "gc_deleted_manifests",
            "Manifests deleted by garbage collection",
            m.gc_deleted_manifests.clone(),
        );
        r.register(
            "gc_removed_tags",
            "Tags removed by retention rules during garbage collection",
            m.gc_removed_tags.clone(),
        );
        r.register(
            "gc_expired_uploads",
            "Upload sessions expired by garbage collection",
            m.gc_expired_uploads.clone(),
        );
        r.register("auth", "Authentication attempts by outcome", m.auth.clone());
        r.register(
            "blobs_quarantined",
            "Blobs quarantined because their stored bytes failed a scrub (as last seen here)",
            m.blobs_quarantined.clone(),
        );
        r.register(
            "scrub_bytes",
            "Blob bytes read back and checked by scrubs",
            m.scrub_bytes.clone(),
        );
        r.register(
            "scrub_blobs",
            "Blobs checked by scrubs",
            m.scrub_blobs.clone(),
        );
        r.register(
            "scrub_corrupt",
            "Blobs scrubs found corrupt or missing (and quarantined)",
            m.scrub_corrupt.clone(),
        );
        // Series that exist from the start, so dashboards and alerts see zeros, not gaps.
        for outcome in ["success", "failure"] {
            let _ = m.auth.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["ok", "failed", "busy", "dry_run"] {
            let _ = m.gc_runs.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["ok", "failed", "private"] {
            let _ = m
                .layouts_published
                .get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["imported", "unchanged", "refused", "failed"] {
            let _ = m.images_imported.get_or_create(&OutcomeLabels { outcome });
        }
        Metrics { registry, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn record_http(&self, method: &str, route: &'static str, status: u16, took: Duration) {
        self.http_requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route,
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route,
            })
            .observe(took.as_secs_f64());
    }

    pub fn record_mirror(&self, kind: &'static str, outcome: &'static str) {
        self.mirror_fetches
            .get_or_create(&MirrorLabels { kind, outcome })
            .inc();
    }

    pub fn record_ipfs(&self, operation: &'static str, ok: bool, took: Duration) {
        let labels = OperationLabels { operation };
        self.ipfs_calls.get_or_create(&labels).inc();
        if !ok {
            self.ipfs_errors.get_or_create(&labels).inc();
        }
        self.ipfs_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn record_db(&self, operation: &'static str, ok: bool, took: Duration) {
        let labels = OperationLabels { operation };
        self.db_queries.get_or_create(&labels).inc();
        if !ok {
            self.db_errors.get_or_create(&labels).inc();
        }
        self.db_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// For the authentication layer: one call per credential or token checked.
    pub fn record_auth(&self, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.auth.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn record_layout_published(&self, outcome: &'static str) {
        self.layouts_published
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn record_index_build(&self, outcome: &'static str) {
        self.index_builds
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn record_ipns_publish(&self, outcome: &'static str) {
        self.ipns_publishes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn record_image_imported(&self, outcome: &'static str) {
        self.images_imported
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// One tag of a follow rule's pass: imported, unchanged, failed or deleted.
    pub fn record_follow_import(&self, rule: &str, outcome: &'static str) {
        self.follow_imports
            .get_or_create(&RuleOutcomeLabels {
                rule: rule.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Makes a follow rule's series exist from its start (at zero), so that dashboards and
    /// alerts see the rule before its first pass.
    pub fn register_follow_rule(&self, rule: &str) {
        for outcome in ["imported", "unchanged", "failed", "deleted"] {
            let _ = self.follow_imports.get_or_create(&RuleOutcomeLabels {
                rule: rule.to_owned(),
                outcome,
            });
        }
        let _ = self.follow_errors.get_or_create(&RuleLabels {
            rule: rule.to_owned(),
        });
    }

    pub fn record_gc_run(&self, outcome: &'static str) {
        self.gc_runs.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// Counts one more in-flight request until dropped.
pub struct InFlight(Gauge);

impl InFlight {
    pub fn new(gauge: &Gauge) -> InFlight {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
