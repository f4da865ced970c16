//! Readiness and the gauges that are read rather than counted.

use std::time::Duration;

use super::Registry;

/// Each check's failure, `None` when it passed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    pub database: Option<String>,
    pub ipfs: Option<String>,
    pub migrations: Option<String>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.database.is_none() && self.ipfs.is_none() && self.migrations.is_none()
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
