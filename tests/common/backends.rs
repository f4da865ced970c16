//! The stores behind each trait, for the contract suites (tests/contract_*.rs): one list of
//! metadata stores and one of blob stores. Every contract test runs once per store, as a
//! test of its own named after it (`postgres::…`, `embedded::…`), so a failure names the
//! store. Adding a store is one line in the list of its macro.

use std::sync::Arc;
use std::time::Duration;

use ipfs_registry::blobs::embedded::EmbeddedStore;
use ipfs_registry::blobs::{BlobStore, ImportProfile};
use ipfs_registry::config::DatabaseConfig;
use ipfs_registry::meta::gc::GcStore;
use ipfs_registry::meta::outbox::OutboxStore;
use ipfs_registry::meta::postgres::PostgresStore;
use ipfs_registry::meta::sqlite::SqliteStore;
use ipfs_registry::meta::users::UserStore;
use ipfs_registry::meta::MetadataStore;

/// Everything a metadata store implements; every store implements all four traits.
pub trait MetaBackend: MetadataStore + UserStore + GcStore + OutboxStore {}
impl<T: MetadataStore + UserStore + GcStore + OutboxStore> MetaBackend for T {}

/// The configuration the PostgreSQL suites use for a database: a small pool, timeouts
/// long enough for a loaded machine.
pub fn postgres_config(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: Some(url.to_owned()),
        ca_file: None,
        pool_size: 4,
        timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(10),
        operation_timeout: Duration::from_secs(10),
        gc_operation_timeout: Duration::from_secs(60),
    }
}

/// A migrated PostgreSQL store on a fresh database, and that database's URL.
pub async fn postgres_store() -> (PostgresStore, String) {
    let url = super::fresh_database_url().await;
    let store = PostgresStore::connect(&postgres_config(&url))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    (store, url)
}

pub async fn postgres() -> Arc<dyn MetaBackend> {
    Arc::new(postgres_store().await.0)
}

/// An SQLite store in a fresh file.
pub async fn sqlite() -> Arc<dyn MetaBackend> {
    let dir = std::env::temp_dir().join("ipfs-registry-tests");
    std::fs::create_dir_all(&dir).expect("test directory");
    let file = dir.join(format!("meta-{}.sqlite", uuid::Uuid::new_v4()));
    Arc::new(SqliteStore::open(&file).expect("open SQLite store"))
}

/// `#[tokio::test]`s running each named `async fn(Arc<dyn MetaBackend>)` of the calling
/// suite on every metadata store, in a module per store.
#[allow(unused_macros)]
macro_rules! on_every_meta_store {
    ($($test:ident),* $(,)?) => {
        on_every_meta_store!(@store postgres, crate::common::backends::postgres; $($test),*);
        on_every_meta_store!(@store sqlite, crate::common::backends::sqlite; $($test),*);
    };
    (@store $store:ident, $open:path; $($test:ident),*) => {
        mod $store {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($open().await).await;
                }
            )*
        }
    };
}

/// A blob store for one test; the embedded store's directory lives as long as it.
pub struct BlobBackend {
    pub store: Arc<dyn BlobStore>,
    /// Whether the store is a node shared with other tests (and other test runs): its pin
    /// list holds their pins too, and it must not be damaged (see `private_node`).
    pub shared: bool,
    _dir: Option<tempfile::TempDir>,
}

/// The test IPFS node (Kubo RPC API).
pub fn kubo(profile: ImportProfile) -> BlobBackend {
    BlobBackend {
        store: Arc::new(super::kubo::store(Duration::from_secs(10), profile)),
        shared: true,
        _dir: None,
    }
}

/// An embedded store in a fresh directory.
pub fn embedded(profile: ImportProfile) -> BlobBackend {
    let dir = tempfile::tempdir().expect("a store directory");
    let store = EmbeddedStore::open(dir.path(), profile).expect("open the embedded store");
    BlobBackend {
        store: Arc::new(store),
        shared: false,
        _dir: Some(dir),
    }
}

/// `#[tokio::test]`s running each named `async fn(fn(ImportProfile) -> BlobBackend)` of
/// the calling suite on every blob store, in a module per store.
#[allow(unused_macros)]
macro_rules! on_every_blob_store {
    ($($test:ident),* $(,)?) => {
        on_every_blob_store!(@store kubo, crate::common::backends::kubo; $($test),*);
        on_every_blob_store!(@store embedded, crate::common::backends::embedded; $($test),*);
    };
    (@store $store:ident, $open:path; $($test:ident),*) => {
        mod $store {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($open).await;
                }
            )*
        }
    };
}
