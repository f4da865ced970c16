//! Readiness and the gauges that are read rather than counted.

use std::time::Duration;

use super::Registry;

/// Each check's failure, `None` when it passed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    pub database: Option<String>,
    pub ipfs: Option<String>,
    pub migrations: Option<String>,
    /// The metadata records no blob while the blob store holds content.
    pub metadata: Option<String>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.database.is_none()
            && self.ipfs.is_none()
            && self.migrations.is_none()
            && self.metadata.is_none()
    }
}

impl Registry {
    /// Pings the database and the IPFS node (concurrently, each within `limit`) and checks
    /// that the schema is current: three small requests, cheap enough to poll every second.
    pub async fn readiness(&self, limit: Duration) -> Readiness {
        let timed = |what: &'static str| move |_| format!("{what} did not answer within {limit:?}");
        let database = async {
            tokio::time::timeout(limit, self.meta.ping())
                .await
                .map_err(timed("database"))
                .and_then(|r| r.map_err(|e| e.to_string()))
        };
        let ipfs = async {
            tokio::time::timeout(limit, self.blobs.ping())
                .await
                .map_err(timed("IPFS node"))
                .and_then(|r| r.map_err(|e| e.to_string()))
        };
        let migrations = async {
            match tokio::time::timeout(limit, self.status.schema_current()).await {
                Err(e) => Err(timed("database")(e)),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(false)) => Err("database migrations are not all applied".to_owned()),
                Ok(Ok(true)) => Ok(()),
            }
        };
        let (database, ipfs, migrations) = tokio::join!(database, ipfs, migrations);
        Readiness {
            database: database.err(),
            ipfs: ipfs.err(),
            migrations: migrations.err(),
            metadata: self.metadata_loss(limit).await,
        }
    }

    /// Compares the blob store with the metadata, as `serve` does on an embedded data
    /// directory when it starts. Content no record knows is a warning with counts (a push
    /// cut short leaves some; many mean the metadata lost writes). When the metadata
    /// records no blob at all while content exists, it was lost or replaced: readiness
    /// stays false until blobs are recorded again (`ipfs-registry verify --reindex`).
    pub async fn check_stores_agree(&self) -> super::Result<()> {
        let unrecorded = self.unrecorded_content().await?;
        if unrecorded.is_empty() {
            return Ok(());
        }
        if self.records_any_blob().await? {
            tracing::warn!(
                event = "unrecorded_content",
                count = unrecorded.len(),
                "the blob store holds {} blobs that no metadata record knows (pushes cut short by a crash, or metadata that lost writes); `ipfs-registry verify` lists them and `--reindex <repository>` records them",
                unrecorded.len()
            );
            return Ok(());
        }
        let message = format!(
            "the metadata records no blobs, but the blob store holds {}: the metadata was lost or replaced. Not ready until they are recorded again: `ipfs-registry verify --reindex <repository>` (docs/operations.md, Durability)",
            unrecorded.len()
        );
        tracing::error!(
            event = "metadata_lost",
            count = unrecorded.len(),
            "{message}"
        );
        *self
            .metadata_lost
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message);
        Ok(())
    }

    /// The start-up finding, until the metadata records a blob again.
    async fn metadata_loss(&self, limit: Duration) -> Option<String> {
        let found = self
            .metadata_lost
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()?;
        match tokio::time::timeout(limit, self.records_any_blob()).await {
            Ok(Ok(true)) => {
                tracing::info!(
                    event = "metadata_recovered",
                    "the metadata records blobs again"
                );
                *self
                    .metadata_lost
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                None
            }
            _ => Some(found),
        }
    }

    /// Sets the gauges that are sampled rather than counted (before a scrape).
    pub fn sample_gauges(&self) {
        let m = &self.metrics;
        m.uploads_in_progress
            .set(i64::try_from(self.uploads_in_progress()).unwrap_or(i64::MAX));
        if let Some(pool) = self.status.pool_use() {
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            m.db_pool_max.set(gauge(pool.max));
            m.db_pool_size.set(gauge(pool.open));
            m.db_pool_available.set(gauge(pool.idle));
            m.db_pool_waiting.set(gauge(pool.waiting));
        }
    }
}
