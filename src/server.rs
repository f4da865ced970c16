//! Builds the registry from configuration and runs the HTTP server. In the library so that
//! tests start real servers in-process.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use anyhow::{anyhow, Context};

use crate::api::{self, middleware, AppState};
use crate::auth::Auth;
use crate::blobs;
use crate::config::{BlobsKind, Config};
use crate::meta::{self, MetadataStores};
use crate::metrics::Metrics;
use crate::registry::{Notifier, Registry, Settings, Stores};

/// Opens the metadata and blob stores the configuration names, applying migrations.
pub async fn build_registry(config: &Config) -> anyhow::Result<Registry> {
    let metrics = Arc::new(Metrics::new());
    let stores = meta::open(config, metrics.clone()).await?;
    registry_on(config, &stores, metrics)
}

/// The registry over `stores` and the blob store the configuration names, recording into
/// `metrics` (which `stores` were opened with).
fn registry_on(
    config: &Config,
    stores: &MetadataStores,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Registry> {
    let stores = Stores {
        meta: stores.meta.clone(),
        gc: stores.gc.clone(),
        status: stores.status.clone(),
        outbox: stores.outbox.clone(),
        blobs: blobs::open(config, metrics.clone())?,
    };
    let notifier = Notifier::new(&config.notifications.endpoint, config.public_url.as_ref());
    let mirrors =
        crate::registry::mirror::Mirrors::new(&config.mirror, config.limits.max_manifest_size)
            .map_err(|e| anyhow!(e))?;
    Ok(Registry::new(stores, settings(config), metrics, notifier)
        .with_mirrors(mirrors)
        .with_follow_rules(&config.federation.follow))
}

/// Where imports read image layouts from: the configured gateways, else the IPFS node
/// (Kubo mode).
pub fn import_source(config: &Config) -> anyhow::Result<crate::registry::ImportSource> {
    use crate::registry::ImportSource;
    let federation = &config.federation;
    if !federation.gateways.is_empty() {
        let gateways =
            blobs::remote::Gateways::new(federation.gateways.clone(), federation.timeout)?;
        return Ok(ImportSource::Gateways(gateways));
    }
    Ok(match config.blobs_kind() {
        BlobsKind::Kubo => ImportSource::Node,
        BlobsKind::Embedded => ImportSource::Unconfigured,
    })
}

/// The `[[federation.follow]]` rules as their tasks run them. Blocks come through the IPFS
/// node in Kubo mode with no `federation.gateways`; otherwise from the gateways, and for a
/// registry source also from that registry's own `/ipfs/` gateway.
fn follow_tasks(config: &Config) -> anyhow::Result<Vec<crate::registry::FollowTask>> {
    use crate::config::FollowSource;
    use crate::registry::{FollowTask, ImportSource};
    let federation = &config.federation;
    let roots = crate::tls::root_store(None).map_err(|e| anyhow!(e))?;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(crate::tls::verifying_client(roots).map_err(|e| anyhow!(e))?)
        .connect_timeout(federation.timeout)
        .build()
        .context("the follow rules' HTTP client")?;
    let mut tasks = Vec::new();
    for rule in &federation.follow {
        let source = FollowSource::parse(&rule.source).map_err(|e| anyhow!(e))?;
        let import = if config.blobs_kind() == BlobsKind::Kubo && federation.gateways.is_empty() {
            ImportSource::Node
        } else {
            let mut urls = federation.gateways.clone();
            if let FollowSource::Registry(url) = &source {
                urls.push(url.clone());
            }
            if urls.is_empty() {
                ImportSource::Unconfigured
            } else {
                ImportSource::Gateways(blobs::remote::Gateways::new(urls, federation.timeout)?)
            }
        };
        tasks.push(FollowTask {
            rule: rule.clone(),
            source,
            import,
            http: http.clone(),
            timeout: federation.timeout,
        });
    }
    Ok(tasks)
}

/// The metadata store the configuration names, migrated, for a command that needs no
/// registry (the admin commands, `migrate`); its metrics go nowhere.
pub async fn metadata_stores(config: &Config) -> anyhow::Result<MetadataStores> {
    Ok(meta::open(config, Arc::new(Metrics::new())).await?)
}

fn settings(config: &Config) -> Settings {
    Settings {
        max_manifest_size: config.limits.max_manifest_size,
        max_blob_size: config.limits.max_blob_size,
        delete_enabled: config.delete_enabled,
        max_concurrent_uploads: config.limits.max_concurrent_uploads,
        verify_on_pull: config.integrity.verify_on_pull,
        rules: config.rules(),
        publish_index: config.federation.publish,
    }
}

/// A server running in the background of the current actix/tokio runtime.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub registry: Arc<Registry>,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Online GC and the periodic scrub, when configured.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting connections and waits for in-flight requests to finish (at most
    /// `shutdown_timeout`).
    pub async fn stop(self) {
        for task in &self.background {
            task.abort();
        }
        self.handle.stop(true).await;
        let _ = self.task.await;
    }

    /// Waits until the server stops (by signal).
    pub async fn wait(self) -> std::io::Result<()> {
        let result = self
            .task
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        for task in &self.background {
            task.abort();
        }
        result
    }
}

/// Builds the registry and serves it on `config.listen` (port 0 picks a free port).
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    let metrics = Arc::new(Metrics::new());
    let stores = meta::open(&config, metrics.clone()).await?;
    let auth = Auth::from_config(&config, stores.users.clone())
        .context("setting up authentication (auth.*)")?;
    let registry = registry_on(&config, &stores, metrics)?;
    // A data directory is this registry's own; an IPFS node may hold others' pins too.
    if config.blobs_kind() == BlobsKind::Embedded {
        registry
            .check_stores_agree()
            .await
            .context("comparing the blob files with the metadata")?;
    }
    registry.count_quarantined().await;
    serve(config, Arc::new(registry), auth)
}

pub fn serve(
    config: Config,
    registry: Arc<Registry>,
    auth: Option<Arc<Auth>>,
) -> anyhow::Result<RunningServer> {
    let state = web::Data::new(AppState {
        registry: registry.clone(),
        public_url: config.public_url.clone(),
        chunk_min_length: config.limits.chunk_min_length,
        gateway_url: config.gateway.url.clone(),
        import_source: import_source(&config)?,
        auth,
    });
    let index_auth = state.auth.clone();
    let followers = follow_tasks(&config)?;
    let guard = Arc::new(middleware::Guard::new(
        &config.limits,
        config.auth.trusted_proxies.clone(),
        registry.metrics().clone(),
    ));
    let limits = &config.limits;
    let idle_timeout = limits.idle_timeout;
    let server = HttpServer::new(move || {
        let guard = guard.clone();
        App::new()
            .app_data(state.clone())
            .wrap_fn(move |req, srv| middleware::handle(&guard, req, srv))
            .configure(api::configure)
    })
    .on_connect(move |connection, _| cut_off_stalled_writes(connection, idle_timeout))
    .keep_alive(limits.keep_alive)
    .client_request_timeout(limits.header_timeout)
    .client_disconnect_timeout(limits.disconnect_timeout)
    .max_connections(limits.max_connections)
    .backlog(limits.backlog)
    .shutdown_timeout(config.shutdown_timeout.as_secs())
    .bind(config.listen)
    .with_context(|| format!("binding the listen address {}", config.listen))?;
    let local_addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| anyhow!("server bound no address"))?;
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    let mut background = Vec::new();
    if !config.gc.interval.is_zero() {
        background.push(spawn_online_gc(&config, registry.clone()));
    }
    if let Some(interval) = config.integrity.scrub_interval {
        background.push(spawn_scrub(&config, interval, registry.clone()));
    }
    background.push(registry.spawn_publisher());
    if config.federation.publish {
        background.extend(registry.spawn_index(
            visibility(index_auth.clone()),
            config.federation.ipns_key.clone(),
        ));
    }
    background.extend(registry.spawn_followers(followers, visibility(index_auth)));
    background.extend(registry.spawn_releaser());
    registry.bound_at(local_addr);
    let (outbox, wake) = registry.outbox();
    background.extend(
        crate::registry::notify::deliver::spawn(
            &config.notifications.endpoint,
            outbox.clone(),
            registry.metrics().clone(),
            wake.clone(),
            registry.instance_id(),
        )
        .map_err(|e| anyhow!("notifications: {e}"))?,
    );
    tracing::info!(event = "listening", address = %local_addr);
    Ok(RunningServer {
        local_addr,
        registry,
        handle,
        task,
        background,
    })
}

/// Which repositories the public index may list: those anonymous users may pull (all, with
/// auth off).
fn visibility(auth: Option<Arc<Auth>>) -> crate::registry::Visibility {
    Arc::new(move || {
        let auth = auth.clone();
        Box::pin(async move {
            let Some(auth) = auth else {
                return Some(Box::new(|_: &str| true) as Box<dyn Fn(&str) -> bool + Send>);
            };
            match auth.rights(None).await {
                Ok(rights) => {
                    Some(
                        Box::new(move |repo: &str| rights.allows(repo, crate::auth::scope::PULL))
                            as Box<dyn Fn(&str) -> bool + Send>,
                    )
                }
                Err(e) => {
                    tracing::warn!(event = "public_check_failed", error = %e);
                    None
                }
            }
        })
    })
}

/// A client that takes none of a response for `idle` is cut off by the kernel
/// (TCP_USER_TIMEOUT: data unacknowledged, or a zero window, for that long). actix has no
/// write timeout, and it polls a response body only while its write buffer has room, so
/// nothing above the socket gets to run while a client reads nothing.
fn cut_off_stalled_writes(connection: &dyn std::any::Any, idle: std::time::Duration) {
    #[cfg(target_os = "linux")]
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(idle)) {
            tracing::warn!(event = "socket_option_failed", option = "TCP_USER_TIMEOUT", error = %e);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (connection, idle);
}

/// Scrubs every `integrity.scrub_interval`. Replicas all run the loop; the scrub lease in
/// the metadata store lets one of them scrub at a time and the others skip that round.
fn spawn_scrub(
    config: &Config,
    interval: std::time::Duration,
    registry: Arc<Registry>,
) -> tokio::task::JoinHandle<()> {
    let rate = config.integrity.scrub_rate;
    // Renewed every third of this while the scrub runs; a replica that dies mid-scrub
    // holds the lease this long at most.
    let ttl = std::time::Duration::from_secs(5 * 60);
    let options = crate::registry::ScrubOptions {
        rate: (rate > 0).then_some(rate),
        lease: Some((uuid::Uuid::new_v4().to_string(), ttl)),
    };
    let options = Arc::new(options);
    every(interval, move || {
        let (registry, options) = (registry.clone(), options.clone());
        async move {
            match registry.scrub(&options, &()).await {
                Ok(Some(report)) => tracing::info!(event = "scrub_done", %report),
                Ok(None) => tracing::info!(event = "scrub_skipped", "another replica is scrubbing"),
                Err(e) => tracing::warn!(event = "scrub_failed", error = %e),
            }
        }
    })
}

/// Runs GC every `gc.interval`. Replicas all run the loop; the GC lock lets one of them
/// sweep at a time and the others skip that round.
fn spawn_online_gc(config: &Config, registry: Arc<Registry>) -> tokio::task::JoinHandle<()> {
    let interval = config.gc.interval;
    let policy = Arc::new(config.gc.policy());
    every(interval, move || {
        let (registry, policy) = (registry.clone(), policy.clone());
        async move {
            let progress = |message: &str| tracing::debug!(event = "gc_progress", message);
            match registry.collect_garbage(&policy, false, &progress).await {
                Ok(Some(report)) => tracing::info!(event = "gc_report", %report),
                Ok(None) => tracing::info!(event = "gc_skipped", "another replica is collecting"),
                Err(e) => tracing::warn!(event = "gc_failed", error = %e),
            }
        }
    })
}

/// Runs `task` every `interval`, the first time one whole interval after start-up; a run
/// that overruns delays the next instead of bunching them.
fn every<Task, Run>(interval: std::time::Duration, mut task: Task) -> tokio::task::JoinHandle<()>
where
    Task: FnMut() -> Run + Send + 'static,
    Run: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            task().await;
        }
    })
}
