//! Builds the registry from configuration and runs the HTTP server. In the library so that
//! tests start real servers in-process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::{ServerHandle, Service};
use actix_web::{web, App, HttpServer};
use anyhow::{anyhow, Context};

use crate::api::{self, AppState};
use crate::blobs::kubo::KuboStore;
use crate::blobs::BlobStore;
use crate::config::Config;
use crate::meta::postgres::PostgresStore;
use crate::meta::MetadataStore;
use crate::registry::{Registry, Settings};

/// Connects the metadata and blob stores named by the configuration, applying migrations.
pub async fn build_registry(config: &Config) -> anyhow::Result<Registry> {
    let database_url = config
        .database
        .url
        .as_ref()
        .ok_or_else(|| anyhow!("configuration setting `database.url` is required"))?;
    let ipfs_url = config
        .ipfs
        .url
        .clone()
        .ok_or_else(|| anyhow!("configuration setting `ipfs.url` is required"))?;
    let mut database = config.database.clone();
    database.url = Some(database_url.clone());
    let meta = PostgresStore::connect(&database)
        .await
        .context("connecting to PostgreSQL (database.url)")?;
    meta.migrate()
        .await
        .context("applying database migrations")?;
    let blobs = KuboStore::new(&config.ipfs, ipfs_url, config.import_profile.clone())
        .context("setting up the IPFS client (ipfs.url)")?;
    let meta: Arc<dyn MetadataStore> = Arc::new(meta);
    let blobs: Arc<dyn BlobStore> = Arc::new(blobs);
    Ok(Registry::new(meta, blobs, settings(config)))
}

fn settings(config: &Config) -> Settings {
    Settings {
        max_manifest_size: config.limits.max_manifest_size,
        max_blob_size: config.limits.max_blob_size,
        delete_enabled: config.delete_enabled,
        max_concurrent_uploads: config.limits.max_concurrent_uploads,
    }
}

/// A server running in the background of the current actix/tokio runtime.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting connections and waits for in-flight requests to finish.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }

    /// Waits until the server stops (by signal).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }
}

/// Builds the registry and serves it on `config.listen` (port 0 picks a free port).
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    let registry = Arc::new(build_registry(&config).await?);
    serve(config, registry)
}

pub fn serve(config: Config, registry: Arc<Registry>) -> anyhow::Result<RunningServer> {
    let state = web::Data::new(AppState {
        registry,
        public_url: config.public_url.clone(),
        chunk_min_length: config.limits.chunk_min_length,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap_fn(|req, srv| {
                let started = Instant::now();
                let method = req.method().clone();
                let path = req.path().to_owned();
                let call = srv.call(req);
                async move {
                    let response = call.await?;
                    tracing::info!(
                        event = "request",
                        method = %method,
                        path = %path,
                        status = response.status().as_u16(),
                        duration_ms = started.elapsed().as_millis() as u64,
                    );
                    Ok(response)
                }
            })
            .configure(api::configure)
    })
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
    tracing::info!(event = "listening", address = %local_addr);
    Ok(RunningServer {
        local_addr,
        handle,
        task,
    })
}
