//! Opening the metadata store the configuration names (`metadata.kind`).

use std::path::PathBuf;
use std::sync::Arc;

use super::gc::GcStore;
use super::metered::Metered;
use super::outbox::OutboxStore;
use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::status::StoreStatus;
use super::users::UserStore;
use super::{MetaError, MetadataStore};
use crate::config::{Config, MetadataKind};
use crate::metrics::Metrics;

/// One metadata store, through each trait it implements.
#[derive(Clone)]
pub struct MetadataStores {
    pub meta: Arc<dyn MetadataStore>,
    pub users: Arc<dyn UserStore>,
    pub gc: Arc<dyn GcStore>,
    pub status: Arc<dyn StoreStatus>,
    pub outbox: Arc<dyn OutboxStore>,
}

impl MetadataStores {
    fn of<S: MetadataStore + UserStore + GcStore + StoreStatus + OutboxStore>(
        store: S,
    ) -> MetadataStores {
        let store = Arc::new(store);
        MetadataStores {
            meta: store.clone(),
            users: store.clone(),
            gc: store.clone(),
            outbox: store.clone(),
            status: store,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("connecting to PostgreSQL (database.url)")]
    Connect(#[source] MetaError),
    #[error("applying database migrations")]
    Migrate(#[source] MetaError),
    #[error("creating the data directory {} (data_dir)", .0.display())]
    DataDir(PathBuf, #[source] std::io::Error),
    #[error("opening the embedded metadata store in {}", .0.display())]
    Embedded(PathBuf, #[source] MetaError),
}

/// The store `metadata.kind` names, migrated, every call timed into `metrics` and held to
/// `database.operation_timeout` (`gc_operation_timeout` for GC and inventory calls).
pub async fn open(config: &Config, metrics: Arc<Metrics>) -> Result<MetadataStores, OpenError> {
    Ok(match config.metadata_kind() {
        MetadataKind::Postgres => {
            let store = PostgresStore::connect(&config.database)
                .await
                .map_err(OpenError::Connect)?;
            store.migrate().await.map_err(OpenError::Migrate)?;
            MetadataStores::of(Metered::new(store, &config.database, metrics))
        }
        MetadataKind::Sqlite => {
            let dir = config.data_dir.clone();
            crate::durable::create_dir_all(&dir).map_err(|e| OpenError::DataDir(dir.clone(), e))?;
            let path = dir.join("metadata.sqlite");
            tracing::info!(event = "metadata_store", store = "embedded", file = %path.display());
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                .await
                .map_err(|e| OpenError::Embedded(dir.clone(), MetaError::Backend(e.to_string())))?
                .map_err(|e| OpenError::Embedded(dir, e))?;
            MetadataStores::of(Metered::new(store, &config.database, metrics))
        }
    })
}
