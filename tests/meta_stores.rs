//! The metadata stores: PostgreSQL against a real server (one fresh database per test), and
//! the embedded SQLite store. Every test of behaviour through the `MetadataStore` trait runs
//! on both; the tests that look inside PostgreSQL (migrations, collation, query plans,
//! timeouts, locks) run on it alone.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use ipfs_registry::config::DatabaseConfig;
use ipfs_registry::meta::postgres::PostgresStore;
use ipfs_registry::meta::sqlite::SqliteStore;
use ipfs_registry::meta::{BlobRecord, MetaError, MetadataStore, NewManifest, Page, UploadChunk};
use ipfs_registry::oci::{Digest, Reference, ReferenceKind, RepoName, Tag};
use multihash_codetable::{Code, MultihashDigest};
use serde_json::{json, Value};
use uuid::Uuid;

const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";

// ---------- helpers ----------

fn config(url: &str) -> DatabaseConfig {
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

/// A migrated store on a fresh database, and that database's URL.
async fn store() -> (PostgresStore, String) {
    let url = common::fresh_database_url().await;
    let store = PostgresStore::connect(&config(&url))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    (store, url)
}

/// Both stores, empty: PostgreSQL on a fresh database and SQLite in a fresh file.
async fn stores() -> Vec<Arc<dyn MetadataStore>> {
    let (postgres, _) = store().await;
    let dir = std::env::temp_dir().join("ipfs-registry-tests");
    std::fs::create_dir_all(&dir).expect("test directory");
    let file = dir.join(format!("meta-{}.sqlite", Uuid::new_v4()));
    let sqlite = SqliteStore::open(&file).expect("open SQLite store");
    vec![Arc::new(postgres), Arc::new(sqlite)]
}

/// A plain connection to the test database, for poking at it from outside the store.
/// A test that runs `$body` on every store (`stores()`), one after the other.
macro_rules! on_every_store {
    ($name:ident, $body:ident) => {
        #[tokio::test]
        async fn $name() {
            for store in stores().await {
                $body(store).await;
            }
        }
    };
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("raw connect");
    tokio::spawn(conn);
    client
}

fn repo(name: &str) -> RepoName {
    name.parse().expect("repo name")
}

fn tag(name: &str) -> Tag {
    name.parse().expect("tag")
}

fn cid_of(data: &[u8]) -> Cid {
    Cid::new_v1(0x55, Code::Sha2_256.digest(data))
}

fn blob(data: &[u8]) -> BlobRecord {
    BlobRecord {
        digest: Digest::sha256_of(data),
        cid: cid_of(data),
        size: data.len() as u64,
        import_profile: "v1-raw-sha256-chunk262144".to_owned(),
    }
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Value {
    json!({ "mediaType": media_type, "digest": digest.to_string(), "size": size })
}

/// An image manifest over the given config and layers, pretty-printed so the exact bytes
/// differ from any re-serialization.
fn image(config: &BlobRecord, layers: &[&BlobRecord]) -> NewManifest {
    image_with(config, layers, None, None, None)
}

fn image_with(
    config: &BlobRecord,
    layers: &[&BlobRecord],
    subject: Option<&Digest>,
    artifact_type: Option<&str>,
    annotations: Option<Value>,
) -> NewManifest {
    let mut doc = json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config.digest, config.size),
        "layers": layers
            .iter()
            .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", &l.digest, l.size))
            .collect::<Vec<_>>(),
    });
    if let Some(subject) = subject {
        doc["subject"] = descriptor(IMAGE_MANIFEST, subject, 123);
    }
    if let Some(at) = artifact_type {
        doc["artifactType"] = json!(at);
    }
    if let Some(a) = annotations {
        doc["annotations"] = a;
    }
    let content = Bytes::from(serde_json::to_vec_pretty(&doc).expect("json"));
    let mut references = vec![(config.digest.clone(), ReferenceKind::Blob)];
    references.extend(
        layers
            .iter()
            .map(|l| (l.digest.clone(), ReferenceKind::Blob)),
    );
    NewManifest {
        digest: Digest::sha256_of(&content),
        media_type: IMAGE_MANIFEST.to_owned(),
        content,
        json: doc,
        artifact_type: artifact_type.map(str::to_owned),
        subject: subject.cloned(),
        references,
    }
}

fn index(children: &[&NewManifest]) -> NewManifest {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_INDEX,
        "manifests": children
            .iter()
            .map(|m| descriptor(IMAGE_MANIFEST, &m.digest, m.content.len() as u64))
            .collect::<Vec<_>>(),
    });
    let content = Bytes::from(serde_json::to_vec_pretty(&doc).expect("json"));
    NewManifest {
        digest: Digest::sha256_of(&content),
        media_type: IMAGE_INDEX.to_owned(),
        content,
        json: doc,
        artifact_type: None,
        subject: None,
        references: children
            .iter()
            .map(|m| (m.digest.clone(), ReferenceKind::Manifest))
            .collect(),
    }
}

/// Commits a config and one layer into `r` and returns an image manifest over them.
async fn pushed_image(store: &dyn MetadataStore, r: &RepoName, seed: &str) -> NewManifest {
    let config = blob(format!("config {seed}").as_bytes());
    let layer = blob(format!("layer {seed}").as_bytes());
    store.commit_blob(r, config.clone()).await.expect("config");
    store.commit_blob(r, layer.clone()).await.expect("layer");
    image(&config, &[&layer])
}

async fn by_tag(store: &dyn MetadataStore, r: &RepoName, t: &str) -> Option<Digest> {
    store
        .manifest(r, &Reference::Tag(tag(t)))
        .await
        .expect("manifest by tag")
        .map(|m| m.digest)
}

async fn by_digest(store: &dyn MetadataStore, r: &RepoName, d: &Digest) -> Option<Bytes> {
    store
        .manifest(r, &Reference::Digest(d.clone()))
        .await
        .expect("manifest by digest")
        .map(|m| m.content)
}

async fn all_tags(store: &dyn MetadataStore, r: &RepoName) -> Option<Vec<String>> {
    store.tags(r, &Page::default()).await.expect("tags")
}

fn page(n: Option<u32>, last: Option<&str>) -> Page {
    Page {
        n,
        last: last.map(str::to_owned),
    }
}

// ---------- connection, migrations ----------

#[tokio::test]
async fn migrate_is_idempotent_and_reports_current() {
    let url = common::fresh_database_url().await;
    let store = PostgresStore::connect(&config(&url))
        .await
        .expect("connect");
    assert!(!store.applied_migrations_current().await.expect("check"));
    store.migrate().await.expect("first migrate");
    assert!(store.applied_migrations_current().await.expect("check"));
    store.migrate().await.expect("second migrate");
    assert!(store.applied_migrations_current().await.expect("check"));
    store.ping().await.expect("ping");

    let db = raw(&url).await;
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT version) FROM refinery_schema_history",
            &[],
        )
        .await
        .expect("history");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations directory")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".sql"))
        })
        .count() as i64;
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (files, files),
        "every migration recorded once"
    );

    // A stale checksum (someone edited an applied migration) is not "current".
    db.execute("UPDATE refinery_schema_history SET checksum = '1'", &[])
        .await
        .expect("tamper");
    assert!(!store.applied_migrations_current().await.expect("check"));
}

#[tokio::test]
async fn concurrent_migrations_on_a_fresh_database_both_succeed() {
    let url = common::fresh_database_url().await;
    let a = PostgresStore::connect(&config(&url))
        .await
        .expect("connect a");
    let b = PostgresStore::connect(&config(&url))
        .await
        .expect("connect b");
    let c = PostgresStore::connect(&config(&url))
        .await
        .expect("connect c");
    let (ra, rb, rc) = tokio::join!(a.migrate(), b.migrate(), c.migrate());
    ra.expect("migrate a");
    rb.expect("migrate b");
    rc.expect("migrate c");
    assert!(a.applied_migrations_current().await.expect("check"));
    // The schema works for all of them.
    b.commit_blob(&repo("x"), blob(b"x")).await.expect("commit");
    assert!(c
        .blob(&Digest::sha256_of(b"x"))
        .await
        .expect("blob")
        .is_some());
}

#[tokio::test]
async fn unreachable_database_is_unavailable_within_the_timeout() {
    // A server that accepts connections and then never says a word: without timeouts,
    // connecting would hang forever.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    for url in [
        // Connection refused at once.
        "postgres://postgres@127.0.0.1:1/nothing".to_owned(),
        format!("postgres://postgres@127.0.0.1:{silent_port}/nothing"),
    ] {
        let cfg = DatabaseConfig {
            url: Some(url.clone()),
            ca_file: None,
            pool_size: 2,
            timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(10),
            gc_operation_timeout: Duration::from_secs(60),
        };
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(10), PostgresStore::connect(&cfg))
            .await
            .unwrap_or_else(|_| panic!("connect to {url} hung"));
        let elapsed = started.elapsed();
        match result {
            Err(MetaError::Unavailable(_)) => {}
            other => panic!("{url}: expected Unavailable, got {other:?}"),
        }
        assert!(
            elapsed < Duration::from_secs(3),
            "{url}: took {elapsed:?} with a 1s timeout"
        );
    }
}

#[tokio::test]
async fn names_tags_and_digests_use_the_c_collation() {
    let (_store, url) = store().await;
    let db = raw(&url).await;
    let rows = db
        .query(
            "SELECT c.relname || '.' || a.attname, co.collname \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_collation co ON co.oid = a.attcollation \
             WHERE n.nspname = current_schema() AND c.relkind = 'r' AND a.attnum > 0 \
               AND (c.relname, a.attname) IN (('repositories', 'name'), ('tags', 'name'), \
                 ('tags', 'manifest_digest'), ('manifests', 'digest'), \
                 ('manifests', 'subject_digest'), ('blobs', 'digest'), \
                 ('repository_blobs', 'digest'), ('manifest_references', 'referenced_digest'))",
            &[],
        )
        .await
        .expect("collations");
    assert_eq!(rows.len(), 8);
    for row in rows {
        let column: String = row.get(0);
        let collation: String = row.get(1);
        assert_eq!(collation, "C", "{column}");
    }
}

#[tokio::test]
async fn missing_url_is_an_error() {
    let cfg = DatabaseConfig {
        url: None,
        ca_file: None,
        pool_size: 1,
        timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(1),
        operation_timeout: Duration::from_secs(10),
        gc_operation_timeout: Duration::from_secs(60),
    };
    assert!(PostgresStore::connect(&cfg).await.is_err());
}

#[tokio::test]
async fn statement_timeout_applies_and_is_unavailable() {
    let url = common::fresh_database_url().await;
    let cfg = DatabaseConfig {
        statement_timeout: Duration::from_millis(300),
        ..config(&url)
    };
    let store = PostgresStore::connect(&cfg).await.expect("connect");
    store.migrate().await.expect("migrate");
    let r = repo("locked");
    store.commit_blob(&r, blob(b"b")).await.expect("commit");

    // Another session holds a lock the store's query must wait for.
    let mut db = raw(&url).await;
    let tx = db.transaction().await.expect("begin");
    tx.batch_execute("LOCK TABLE tags IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), store.tags(&r, &Page::default()))
        .await
        .expect("tags hung despite statement_timeout");
    assert!(
        matches!(result, Err(MetaError::Unavailable(_))),
        "expected Unavailable, got {result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    tx.rollback().await.expect("rollback");
    // The store is fine afterwards.
    assert_eq!(all_tags(&store, &r).await, Some(vec![]));
}

// ---------- blobs ----------

on_every_store!(
    commit_blob_links_and_deduplicates,
    commit_blob_links_and_deduplicates_on
);

/// Whether the catalog lists `repo`.
async fn listed(store: &dyn MetadataStore, repo: &RepoName) -> bool {
    let all = store.catalog(&Page::default()).await.expect("catalog");
    all.iter().any(|name| name == repo.as_str())
}

async fn commit_blob_links_and_deduplicates_on(store: Arc<dyn MetadataStore>) {
    let a = repo("team/a");
    let b = repo("team/b");
    let record = blob(b"layer bytes");

    assert!(!listed(&*store, &a).await);
    assert_eq!(store.blob(&record.digest).await.expect("blob"), None);

    let stored = store.commit_blob(&a, record.clone()).await.expect("commit");
    assert_eq!(stored, record);
    assert!(listed(&*store, &a).await);
    assert_eq!(
        store.blob(&record.digest).await.expect("blob"),
        Some(record.clone())
    );
    assert_eq!(
        store.repository_blob(&a, &record.digest).await.expect("rb"),
        Some(record.clone())
    );
    // Knowing the digest is not access.
    assert_eq!(
        store.repository_blob(&b, &record.digest).await.expect("rb"),
        None
    );

    // Same digest again with another CID/profile: the earlier record wins and is returned.
    let mut other = record.clone();
    other.cid = cid_of(b"something else");
    other.import_profile = "other-profile".into();
    let stored = store.commit_blob(&b, other).await.expect("commit again");
    assert_eq!(stored, record);
    assert_eq!(
        store.blob(&record.digest).await.expect("blob"),
        Some(record.clone())
    );
    assert_eq!(
        store.repository_blob(&b, &record.digest).await.expect("rb"),
        Some(record.clone())
    );
    // Committing twice into the same repository is fine.
    store
        .commit_blob(&a, record.clone())
        .await
        .expect("commit twice");

    // CIDs round-trip in their canonical (base32, v1) form.
    assert!(stored.cid.to_string().starts_with('b'));
}

on_every_store!(
    large_and_empty_blob_sizes_round_trip,
    large_and_empty_blob_sizes_round_trip_on
);

async fn large_and_empty_blob_sizes_round_trip_on(store: Arc<dyn MetadataStore>) {
    let r = repo("sizes");
    let mut big = blob(b"big");
    big.size = 5 * 1024 * 1024 * 1024 * 1024; // 5 TiB
    assert_eq!(store.commit_blob(&r, big.clone()).await.expect("big"), big);
    let empty = blob(b"");
    assert_eq!(
        store.commit_blob(&r, empty.clone()).await.expect("empty"),
        empty
    );
    assert_eq!(store.blob(&big.digest).await.expect("blob"), Some(big));
    let mut huge = blob(b"huge");
    huge.size = u64::MAX;
    assert!(store.commit_blob(&r, huge).await.is_err());
}

on_every_store!(
    mount_blob_requires_a_link_in_the_source,
    mount_blob_requires_a_link_in_the_source_on
);

async fn mount_blob_requires_a_link_in_the_source_on(store: Arc<dyn MetadataStore>) {
    let from = repo("from");
    let to = repo("to");
    let elsewhere = repo("elsewhere");
    let record = blob(b"mountable");
    store
        .commit_blob(&elsewhere, record.clone())
        .await
        .expect("commit");

    // Stored, but not linked in `from`: no mount, and `to` is neither created nor linked.
    assert_eq!(
        store
            .mount_blob(&from, &to, &record.digest)
            .await
            .expect("mount"),
        None
    );
    assert_eq!(
        store
            .repository_blob(&to, &record.digest)
            .await
            .expect("rb"),
        None
    );
    assert!(!listed(&*store, &to).await);

    store
        .commit_blob(&from, record.clone())
        .await
        .expect("commit");
    assert_eq!(
        store
            .mount_blob(&from, &to, &record.digest)
            .await
            .expect("mount"),
        Some(record.clone())
    );
    assert_eq!(
        store
            .repository_blob(&to, &record.digest)
            .await
            .expect("rb"),
        Some(record.clone())
    );
    // Mounting again is harmless.
    assert_eq!(
        store
            .mount_blob(&from, &to, &record.digest)
            .await
            .expect("mount"),
        Some(record.clone())
    );
    // Unknown digest.
    let unknown = Digest::sha256_of(b"unknown");
    assert_eq!(
        store.mount_blob(&from, &to, &unknown).await.expect("mount"),
        None
    );
}

on_every_store!(
    unlink_blob_removes_only_the_link,
    unlink_blob_removes_only_the_link_on
);

async fn unlink_blob_removes_only_the_link_on(store: Arc<dyn MetadataStore>) {
    let a = repo("a");
    let b = repo("b");
    let record = blob(b"linked twice");
    store.commit_blob(&a, record.clone()).await.expect("commit");
    store.commit_blob(&b, record.clone()).await.expect("commit");

    assert!(store.unlink_blob(&a, &record.digest).await.expect("unlink"));
    assert!(!store
        .unlink_blob(&a, &record.digest)
        .await
        .expect("unlink again"));
    assert!(!store
        .unlink_blob(&repo("nope"), &record.digest)
        .await
        .expect("unlink"));
    assert_eq!(
        store.repository_blob(&a, &record.digest).await.expect("rb"),
        None
    );
    assert_eq!(
        store.repository_blob(&b, &record.digest).await.expect("rb"),
        Some(record.clone())
    );
    assert_eq!(
        store.blob(&record.digest).await.expect("blob"),
        Some(record)
    );
}

// ---------- manifests and tags ----------

on_every_store!(
    put_manifest_stores_exact_bytes_and_tag,
    put_manifest_stores_exact_bytes_and_tag_on
);

async fn put_manifest_stores_exact_bytes_and_tag_on(store: Arc<dyn MetadataStore>) {
    let r = repo("library/app");
    let m = pushed_image(&*store, &r, "1").await;
    store
        .put_manifest(&r, m.clone(), Some(&tag("v1")))
        .await
        .expect("put");

    let got = store
        .manifest(&r, &Reference::Digest(m.digest.clone()))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.content, m.content, "exact bytes");
    assert_eq!(got.digest, m.digest);
    assert_eq!(got.media_type, IMAGE_MANIFEST);
    assert_eq!(got.subject, None);
    let got = store
        .manifest(&r, &Reference::Tag(tag("v1")))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.content, m.content);
    assert_eq!(got.digest, m.digest);

    // Not visible from another repository, and unknown tags are absent.
    assert_eq!(by_digest(&*store, &repo("other"), &m.digest).await, None);
    assert_eq!(by_tag(&*store, &r, "v2").await, None);

    // Re-pushing identical bytes (with and without a tag) is fine.
    store
        .put_manifest(&r, m.clone(), None)
        .await
        .expect("re-put");
    store
        .put_manifest(&r, m.clone(), Some(&tag("v1")))
        .await
        .expect("re-put tag");
    store
        .put_manifest(&r, m.clone(), Some(&tag("also")))
        .await
        .expect("re-put other tag");
    assert_eq!(
        all_tags(&*store, &r).await,
        Some(vec!["also".into(), "v1".into()])
    );
}

#[tokio::test]
async fn put_manifest_with_missing_references_changes_nothing() {
    let (store, url) = store().await;
    let r = repo("strict");
    let elsewhere = repo("elsewhere");

    // Layer present only in another repository: knowing the digest is not enough.
    let config = blob(b"cfg");
    let layer = blob(b"layer");
    let absent = blob(b"never pushed");
    store.commit_blob(&r, config.clone()).await.expect("config");
    store
        .commit_blob(&elsewhere, layer.clone())
        .await
        .expect("layer");
    let m = image(&config, &[&layer, &absent]);

    // A first good manifest under the tag, to check the tag does not move.
    let good = pushed_image(&store, &r, "good").await;
    store
        .put_manifest(&r, good.clone(), Some(&tag("latest")))
        .await
        .expect("put good");

    match store
        .put_manifest(&r, m.clone(), Some(&tag("latest")))
        .await
    {
        Err(MetaError::MissingReferences(missing)) => {
            assert_eq!(missing, vec![layer.digest.clone(), absent.digest.clone()]);
        }
        other => panic!("expected MissingReferences, got {other:?}"),
    }
    assert_eq!(by_digest(&store, &r, &m.digest).await, None);
    assert_eq!(
        by_tag(&store, &r, "latest").await,
        Some(good.digest.clone())
    );
    let db = raw(&url).await;
    let refs: i64 = db
        .query_one(
            "SELECT count(*) FROM manifest_references WHERE manifest_digest = $1",
            &[&m.digest.to_string()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(refs, 0);

    // A failed push into a new repository does not create it.
    let fresh = repo("fresh");
    let err = store.put_manifest(&fresh, m.clone(), Some(&tag("x"))).await;
    assert!(matches!(err, Err(MetaError::MissingReferences(ref d)) if d.len() == 3));
    assert!(!store
        .catalog(&Page::default())
        .await
        .expect("catalog")
        .contains(&"fresh".to_owned()));

    // Once everything is linked, the same push succeeds.
    store
        .mount_blob(&elsewhere, &r, &layer.digest)
        .await
        .expect("mount");
    store.commit_blob(&r, absent.clone()).await.expect("commit");
    store
        .put_manifest(&r, m.clone(), Some(&tag("latest")))
        .await
        .expect("put");
    assert_eq!(by_tag(&store, &r, "latest").await, Some(m.digest.clone()));
    let refs: i64 = db
        .query_one(
            "SELECT count(*) FROM manifest_references WHERE manifest_digest = $1 AND kind = 'blob'",
            &[&m.digest.to_string()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(refs, 3);
}

#[tokio::test]
async fn index_requires_child_manifests_in_the_repository() {
    let (store, url) = store().await;
    let r = repo("multi");
    let amd64 = pushed_image(&store, &r, "amd64").await;
    let arm64 = pushed_image(&store, &r, "arm64").await;
    let idx = index(&[&amd64, &arm64]);

    store
        .put_manifest(&r, amd64.clone(), None)
        .await
        .expect("amd64");
    match store
        .put_manifest(&r, idx.clone(), Some(&tag("multi")))
        .await
    {
        Err(MetaError::MissingReferences(missing)) => {
            assert_eq!(missing, vec![arm64.digest.clone()])
        }
        other => panic!("expected MissingReferences, got {other:?}"),
    }
    assert_eq!(by_tag(&store, &r, "multi").await, None);

    // A blob with the child's digest does not count as the child manifest.
    store
        .commit_blob(
            &r,
            BlobRecord {
                digest: arm64.digest.clone(),
                ..blob(&arm64.content)
            },
        )
        .await
        .expect("blob with manifest digest");
    assert!(matches!(
        store.put_manifest(&r, idx.clone(), None).await,
        Err(MetaError::MissingReferences(_))
    ));

    store
        .put_manifest(&r, arm64.clone(), None)
        .await
        .expect("arm64");
    store
        .put_manifest(&r, idx.clone(), Some(&tag("multi")))
        .await
        .expect("index");
    assert_eq!(
        by_digest(&store, &r, &idx.digest).await,
        Some(idx.content.clone())
    );
    let db = raw(&url).await;
    let refs: i64 = db
        .query_one(
            "SELECT count(*) FROM manifest_references WHERE manifest_digest = $1 AND kind = 'manifest'",
            &[&idx.digest.to_string()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(refs, 2);
}

on_every_store!(
    moving_a_tag_points_it_at_the_new_manifest,
    moving_a_tag_points_it_at_the_new_manifest_on
);

async fn moving_a_tag_points_it_at_the_new_manifest_on(store: Arc<dyn MetadataStore>) {
    let r = repo("moving");
    let one = pushed_image(&*store, &r, "one").await;
    let two = pushed_image(&*store, &r, "two").await;
    store
        .put_manifest(&r, one.clone(), Some(&tag("latest")))
        .await
        .expect("one");
    store
        .put_manifest(&r, one.clone(), Some(&tag("stable")))
        .await
        .expect("one");
    assert_eq!(
        by_tag(&*store, &r, "latest").await,
        Some(one.digest.clone())
    );

    store
        .put_manifest(&r, two.clone(), Some(&tag("latest")))
        .await
        .expect("two");
    assert_eq!(
        by_tag(&*store, &r, "latest").await,
        Some(two.digest.clone())
    );
    assert_eq!(
        by_tag(&*store, &r, "stable").await,
        Some(one.digest.clone())
    );
    // The old manifest is still there by digest.
    assert_eq!(
        by_digest(&*store, &r, &one.digest).await,
        Some(one.content.clone())
    );
    assert_eq!(
        all_tags(&*store, &r).await,
        Some(vec!["latest".into(), "stable".into()])
    );
}

#[tokio::test]
async fn delete_manifest_cascades_to_tags_and_delete_tag_keeps_the_manifest() {
    let (store, url) = store().await;
    let r = repo("deleting");
    let one = pushed_image(&store, &r, "one").await;
    let two = pushed_image(&store, &r, "two").await;
    store
        .put_manifest(&r, one.clone(), Some(&tag("a")))
        .await
        .expect("put");
    store
        .put_manifest(&r, one.clone(), Some(&tag("b")))
        .await
        .expect("put");
    store
        .put_manifest(&r, two.clone(), Some(&tag("c")))
        .await
        .expect("put");

    // delete_tag removes only the tag.
    assert!(store.delete_tag(&r, &tag("c")).await.expect("delete tag"));
    assert!(!store
        .delete_tag(&r, &tag("c"))
        .await
        .expect("delete tag again"));
    assert!(!store
        .delete_tag(&repo("nope"), &tag("a"))
        .await
        .expect("delete tag"));
    assert_eq!(by_tag(&store, &r, "c").await, None);
    assert_eq!(
        by_digest(&store, &r, &two.digest).await,
        Some(two.content.clone())
    );

    // delete_manifest removes the manifest, its tags and its references.
    assert!(store
        .delete_manifest(&r, &one.digest)
        .await
        .expect("delete"));
    assert!(!store
        .delete_manifest(&r, &one.digest)
        .await
        .expect("delete again"));
    assert!(!store
        .delete_manifest(&repo("nope"), &two.digest)
        .await
        .expect("delete"));
    assert_eq!(by_digest(&store, &r, &one.digest).await, None);
    assert_eq!(by_tag(&store, &r, "a").await, None);
    assert_eq!(by_tag(&store, &r, "b").await, None);
    assert_eq!(all_tags(&store, &r).await, Some(vec![]));
    let db = raw(&url).await;
    let refs: i64 = db
        .query_one(
            "SELECT count(*) FROM manifest_references WHERE manifest_digest = $1",
            &[&one.digest.to_string()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(refs, 0);
    // The blobs stay linked (GC decides about them later).
    assert!(store
        .repository_blob(&r, &one.references[0].0)
        .await
        .expect("rb")
        .is_some());
    // The repository still exists, with no tags.
    assert_eq!(all_tags(&store, &r).await, Some(vec![]));

    // The schema itself refuses a tag pointing at a missing manifest.
    let err = db
        .execute(
            "INSERT INTO tags (repository_id, name, manifest_digest) \
             SELECT id, 'dangling', $1 FROM repositories WHERE name = 'deleting'",
            &[&one.digest.to_string()],
        )
        .await;
    assert!(err.is_err(), "a tag must never point at a missing manifest");
}

#[tokio::test]
async fn put_manifest_holds_its_references_until_commit() {
    let (store, url) = store().await;
    let r = repo("race");
    let first = pushed_image(&store, &r, "first").await;
    store
        .put_manifest(&r, first.clone(), Some(&tag("latest")))
        .await
        .expect("first");
    let second = pushed_image(&store, &r, "second").await;
    let layer = second.references[1].0.clone();

    // Another session holds the tag row, so the push stops at its tag upsert: after it has
    // checked (and locked) its references, before it commits.
    let mut db = raw(&url).await;
    let tx = db.transaction().await.expect("begin");
    tx.execute(
        "UPDATE tags SET updated_at = now() WHERE name = 'latest'",
        &[],
    )
    .await
    .expect("hold tag");

    let pusher = {
        let store = store.clone();
        let r = r.clone();
        let second = second.clone();
        tokio::spawn(async move { store.put_manifest(&r, second, Some(&tag("latest"))).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pusher.is_finished(),
        "the push should be waiting for the tag row"
    );

    // Unlinking a referenced layer now must wait for the push, not slip in before its commit.
    let unlinker = {
        let store = store.clone();
        let r = r.clone();
        let layer = layer.clone();
        tokio::spawn(async move { store.unlink_blob(&r, &layer).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !unlinker.is_finished(),
        "unlink must wait while a push that checked the blob is in flight"
    );

    tx.rollback().await.expect("release");
    pusher.await.expect("join").expect("push succeeds");
    assert!(unlinker.await.expect("join").expect("unlink"));
    assert_eq!(
        by_tag(&store, &r, "latest").await,
        Some(second.digest.clone())
    );
}

#[tokio::test]
async fn put_manifest_sees_a_concurrently_deleted_reference_as_missing() {
    let (store, url) = store().await;
    let r = repo("race2");
    let m = pushed_image(&store, &r, "m").await;
    let layer = m.references[1].0.clone();

    // Another session deletes the layer's link but has not committed yet.
    let mut db = raw(&url).await;
    let tx = db.transaction().await.expect("begin");
    let n = tx
        .execute(
            "DELETE FROM repository_blobs WHERE digest = $1",
            &[&layer.to_string()],
        )
        .await
        .expect("delete link");
    assert_eq!(n, 1);
    let pusher = {
        let store = store.clone();
        let r = r.clone();
        let m = m.clone();
        tokio::spawn(async move { store.put_manifest(&r, m, None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pusher.is_finished(),
        "the check must wait for the pending delete"
    );
    tx.commit().await.expect("commit delete");
    match pusher.await.expect("join") {
        Err(MetaError::MissingReferences(missing)) => assert_eq!(missing, vec![layer]),
        other => panic!("expected MissingReferences, got {other:?}"),
    }
    assert_eq!(by_digest(&store, &r, &m.digest).await, None);
}

// ---------- listing ----------

on_every_store!(
    tags_paginate_in_bytewise_order,
    tags_paginate_in_bytewise_order_on
);

async fn tags_paginate_in_bytewise_order_on(store: Arc<dyn MetadataStore>) {
    let r = repo("paged");
    let m = pushed_image(&*store, &r, "m").await;
    // Bytewise: digits < uppercase < '_' < lowercase.
    let names = ["b", "a", "Z", "_x", "10", "2", "a-1", "a.1"];
    for name in names {
        store
            .put_manifest(&r, m.clone(), Some(&tag(name)))
            .await
            .expect("put");
    }
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort(); // Rust's String order is bytewise.
    assert_eq!(expected, ["10", "2", "Z", "_x", "a", "a-1", "a.1", "b"]);

    assert_eq!(all_tags(&*store, &r).await, Some(expected.clone()));

    // Walk in pages of 3.
    let mut seen = Vec::new();
    let mut last: Option<String> = None;
    let mut pages = 0;
    loop {
        let got = store
            .tags(&r, &page(Some(3), last.as_deref()))
            .await
            .expect("tags")
            .expect("repo exists");
        assert!(got.len() <= 3);
        pages += 1;
        if got.is_empty() {
            break;
        }
        last = got.last().cloned();
        seen.extend(got);
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 4, "3 + 3 + 2 + empty");

    // `last` need not be an existing tag: strictly after it.
    assert_eq!(
        store
            .tags(&r, &page(Some(2), Some("_")))
            .await
            .expect("tags"),
        Some(vec!["_x".into(), "a".into()])
    );
    assert_eq!(
        store.tags(&r, &page(None, Some("a"))).await.expect("tags"),
        Some(vec!["a-1".into(), "a.1".into(), "b".into()])
    );
    assert_eq!(
        store.tags(&r, &page(Some(0), None)).await.expect("tags"),
        Some(vec![])
    );
    assert_eq!(
        store
            .tags(&r, &page(Some(100), Some("b")))
            .await
            .expect("tags"),
        Some(vec![])
    );

    // No repository: None. A repository without tags: Some(empty).
    assert_eq!(
        store
            .tags(&repo("nope"), &Page::default())
            .await
            .expect("tags"),
        None
    );
    let bare = repo("bare");
    store.commit_blob(&bare, blob(b"x")).await.expect("commit");
    assert_eq!(all_tags(&*store, &bare).await, Some(vec![]));
}

on_every_store!(
    catalog_lists_existing_repositories_in_order,
    catalog_lists_existing_repositories_in_order_on
);

async fn catalog_lists_existing_repositories_in_order_on(store: Arc<dyn MetadataStore>) {
    assert_eq!(
        store.catalog(&Page::default()).await.expect("catalog"),
        Vec::<String>::new()
    );
    let names = [
        "zeta", "alpha/b", "alpha", "alpha-b", "alpha.b", "beta/x/y", "0",
    ];
    for name in names {
        store
            .commit_blob(&repo(name), blob(name.as_bytes()))
            .await
            .expect("commit");
    }
    // Looking at other repositories does not create them.
    assert_eq!(
        store
            .tags(&repo("ghost"), &Page::default())
            .await
            .expect("tags"),
        None
    );
    assert!(store
        .mount_blob(&repo("ghost"), &repo("ghost2"), &Digest::sha256_of(b"0"))
        .await
        .expect("mount")
        .is_none());
    assert!(store
        .upload(&repo("ghost"), Uuid::new_v4())
        .await
        .expect("upload")
        .is_none());

    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        expected,
        ["0", "alpha", "alpha-b", "alpha.b", "alpha/b", "beta/x/y", "zeta"]
    );
    assert_eq!(
        store.catalog(&Page::default()).await.expect("catalog"),
        expected
    );

    let first = store.catalog(&page(Some(3), None)).await.expect("catalog");
    assert_eq!(first, ["0", "alpha", "alpha-b"]);
    let second = store
        .catalog(&page(Some(3), Some("alpha-b")))
        .await
        .expect("catalog");
    assert_eq!(second, ["alpha.b", "alpha/b", "beta/x/y"]);
    let third = store
        .catalog(&page(Some(3), Some("beta/x/y")))
        .await
        .expect("catalog");
    assert_eq!(third, ["zeta"]);
    let done = store
        .catalog(&page(Some(3), Some("zeta")))
        .await
        .expect("catalog");
    assert!(done.is_empty());
    assert_eq!(
        store
            .catalog(&page(None, Some("alpha/a")))
            .await
            .expect("catalog"),
        ["alpha/b", "beta/x/y", "zeta"]
    );
}

#[tokio::test]
async fn listing_queries_are_index_range_scans() {
    let (store, url) = store().await;
    let r = repo("explain");
    store.commit_blob(&r, blob(b"x")).await.expect("commit");
    let db = raw(&url).await;
    // Tiny tables make sequential scans cheapest; forbid them to see what the indexes allow.
    db.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off; ANALYZE")
        .await
        .expect("settings");
    let plan = |sql: &'static str| {
        let db = &db;
        async move {
            let rows = db
                .query(&format!("EXPLAIN {sql}"), &[])
                .await
                .expect("explain");
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let catalog =
        plan("SELECT name FROM repositories WHERE name > 'a' ORDER BY name LIMIT 10").await;
    assert!(catalog.contains("using repositories_name_key"), "{catalog}");
    assert!(catalog.contains("Index Cond: (name > 'a'"), "{catalog}");
    assert!(!catalog.contains("Sort"), "no sort needed:\n{catalog}");

    let tags =
        plan("SELECT name FROM tags WHERE repository_id = 1 AND name > 'a' ORDER BY name LIMIT 10")
            .await;
    assert!(tags.contains("using tags_pkey"), "{tags}");
    assert!(tags.contains("name > 'a'"), "{tags}");
    assert!(!tags.contains("Sort"), "no sort needed:\n{tags}");

    let referrers = plan(
        "SELECT digest FROM manifests \
         WHERE repository_id = (SELECT id FROM repositories WHERE name = 'explain') \
           AND subject_digest = 'sha256:x' ORDER BY digest",
    )
    .await;
    assert!(referrers.contains("manifests_referrers_idx"), "{referrers}");
    assert!(!referrers.contains("Sort"), "no sort needed:\n{referrers}");

    let chunks = plan("SELECT 1 FROM upload_chunks WHERE cid = 'b'").await;
    assert!(chunks.contains("upload_chunks_cid_idx"), "{chunks}");
    let blobs = plan("SELECT 1 FROM blobs WHERE cid = 'b'").await;
    assert!(blobs.contains("blobs_cid_idx"), "{blobs}");
}

// ---------- referrers ----------

on_every_store!(
    referrers_by_subject_with_and_without_filter,
    referrers_by_subject_with_and_without_filter_on
);

async fn referrers_by_subject_with_and_without_filter_on(store: Arc<dyn MetadataStore>) {
    let r = repo("signed");
    let subject = pushed_image(&*store, &r, "subject").await;
    store
        .put_manifest(&r, subject.clone(), Some(&tag("v1")))
        .await
        .expect("subject");

    let sig_cfg = blob(b"sig config");
    let sbom_cfg = blob(b"sbom config");
    store.commit_blob(&r, sig_cfg.clone()).await.expect("cfg");
    store.commit_blob(&r, sbom_cfg.clone()).await.expect("cfg");
    let sig = image_with(
        &sig_cfg,
        &[],
        Some(&subject.digest),
        Some("application/vnd.dev.cosign.signature"),
        Some(json!({ "org.opencontainers.image.created": "2024-01-01T00:00:00Z", "k": "v" })),
    );
    let sbom = image_with(
        &sbom_cfg,
        &[],
        Some(&subject.digest),
        Some("application/spdx+json"),
        None,
    );
    let unrelated = image_with(
        &sbom_cfg,
        &[&sig_cfg],
        None,
        Some("application/spdx+json"),
        None,
    );
    for m in [&sig, &sbom, &unrelated] {
        store
            .put_manifest(&r, (*m).clone(), None)
            .await
            .expect("put");
    }
    // A referrer in another repository does not show up here.
    let other = repo("other");
    store
        .commit_blob(&other, sig_cfg.clone())
        .await
        .expect("cfg");
    let foreign = image_with(&sig_cfg, &[], Some(&subject.digest), Some("x/y"), None);
    store
        .put_manifest(&other, foreign, None)
        .await
        .expect("foreign");

    // The referrer is stored with its subject.
    let got = store
        .manifest(&r, &Reference::Digest(sig.digest.clone()))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.subject, Some(subject.digest.clone()));

    let all = store
        .referrers(&r, &subject.digest, None)
        .await
        .expect("referrers");
    let mut expected = vec![sig.digest.clone(), sbom.digest.clone()];
    expected.sort_by_key(|d| d.to_string());
    assert_eq!(
        all.iter().map(|d| d.digest.clone()).collect::<Vec<_>>(),
        expected
    );

    let sig_desc = all.iter().find(|d| d.digest == sig.digest).expect("sig");
    assert_eq!(sig_desc.media_type, IMAGE_MANIFEST);
    assert_eq!(sig_desc.size, sig.content.len() as i64);
    assert_eq!(
        sig_desc.artifact_type.as_deref(),
        Some("application/vnd.dev.cosign.signature")
    );
    let annotations = sig_desc.annotations.as_ref().expect("annotations");
    assert_eq!(annotations.get("k").map(String::as_str), Some("v"));
    assert_eq!(annotations.len(), 2);
    let sbom_desc = all.iter().find(|d| d.digest == sbom.digest).expect("sbom");
    assert_eq!(sbom_desc.annotations, None);

    let filtered = store
        .referrers(&r, &subject.digest, Some("application/spdx+json"))
        .await
        .expect("referrers");
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].digest, sbom.digest);
    assert!(store
        .referrers(&r, &subject.digest, Some("nothing/like-this"))
        .await
        .expect("referrers")
        .is_empty());
    // Unknown subject, unknown repository.
    assert!(store
        .referrers(&r, &Digest::sha256_of(b"?"), None)
        .await
        .expect("referrers")
        .is_empty());
    assert!(store
        .referrers(&repo("nope"), &subject.digest, None)
        .await
        .expect("referrers")
        .is_empty());

    // Deleting a referrer removes it from the index.
    store
        .delete_manifest(&r, &sig.digest)
        .await
        .expect("delete");
    let all = store
        .referrers(&r, &subject.digest, None)
        .await
        .expect("referrers");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].digest, sbom.digest);
}

// ---------- uploads ----------

on_every_store!(upload_session_lifecycle, upload_session_lifecycle_on);

async fn upload_session_lifecycle_on(store: Arc<dyn MetadataStore>) {
    let r = repo("uploads");
    let started = std::time::SystemTime::now() - Duration::from_secs(60);
    let upload = store
        .create_upload(&r, vec![1, 2, 3])
        .await
        .expect("create");
    assert_eq!(upload.repository, r);
    assert_eq!(upload.bytes_received, 0);
    assert_eq!(upload.chunk_count, 0);
    assert_eq!(upload.hash_state, vec![1, 2, 3]);
    assert!(upload.started_at > started);
    assert!(listed(&*store, &r).await, "created with the session");

    let got = store
        .upload(&r, upload.id)
        .await
        .expect("upload")
        .expect("present");
    assert_eq!(got.id, upload.id);
    assert_eq!(got.started_at, upload.started_at);
    // Only from its own repository.
    store
        .create_upload(&repo("other"), vec![])
        .await
        .expect("other");
    assert!(store
        .upload(&repo("other"), upload.id)
        .await
        .expect("upload")
        .is_none());
    assert!(store
        .upload(&r, Uuid::new_v4())
        .await
        .expect("upload")
        .is_none());

    let c1 = UploadChunk {
        offset: 0,
        size: 10,
        cid: cid_of(b"c1"),
    };
    let c2 = UploadChunk {
        offset: 10,
        size: 5,
        cid: cid_of(b"c2"),
    };
    let c3 = UploadChunk {
        offset: 15,
        size: 1,
        cid: cid_of(b"c3"),
    };
    assert!(store
        .append_upload_chunk(upload.id, c1.clone(), vec![4])
        .await
        .expect("c1"));
    // Stale offset (someone else appended first): rejected, nothing changes.
    let stale = UploadChunk {
        offset: 0,
        size: 7,
        cid: cid_of(b"stale"),
    };
    assert!(!store
        .append_upload_chunk(upload.id, stale, vec![9])
        .await
        .expect("stale"));
    // An offset beyond what was received: rejected too.
    let ahead = UploadChunk {
        offset: 11,
        size: 7,
        cid: cid_of(b"ahead"),
    };
    assert!(!store
        .append_upload_chunk(upload.id, ahead, vec![9])
        .await
        .expect("ahead"));
    let chunks = store.upload_chunks(upload.id).await.expect("chunks");
    assert!(chunks.iter().all(|c| c.cid != cid_of(b"stale")));
    let got = store
        .upload(&r, upload.id)
        .await
        .expect("upload")
        .expect("present");
    assert_eq!(
        (got.bytes_received, got.chunk_count, got.hash_state),
        (10, 1, vec![4])
    );

    assert!(store
        .append_upload_chunk(upload.id, c2.clone(), vec![5])
        .await
        .expect("c2"));
    // A chunk of no bytes only advances the hash state.
    let empty = UploadChunk {
        offset: 15,
        size: 0,
        cid: cid_of(b""),
    };
    assert!(store
        .append_upload_chunk(upload.id, empty, vec![6])
        .await
        .expect("empty"));
    assert!(store
        .append_upload_chunk(upload.id, c3.clone(), vec![7])
        .await
        .expect("c3"));
    let got = store
        .upload(&r, upload.id)
        .await
        .expect("upload")
        .expect("present");
    assert_eq!(
        (got.bytes_received, got.chunk_count, got.hash_state),
        (16, 3, vec![7])
    );
    assert_eq!(
        store.upload_chunks(upload.id).await.expect("chunks"),
        vec![c1.clone(), c2.clone(), c3.clone()]
    );
    // Unknown session.
    let ghost = Uuid::new_v4();
    let c = UploadChunk {
        offset: 0,
        size: 1,
        cid: cid_of(b"g"),
    };
    assert!(!store
        .append_upload_chunk(ghost, c, vec![])
        .await
        .expect("ghost"));
    assert!(store.upload_chunks(ghost).await.expect("chunks").is_empty());

    // Completing commits the blob and ends the session.
    let record = blob(b"the assembled blob");
    let (stored, chunks) = store
        .complete_upload(upload.id, &r, record.clone())
        .await
        .expect("complete");
    assert_eq!(stored, record);
    assert_eq!(chunks, vec![c1.clone(), c2.clone(), c3.clone()]);
    assert!(store.upload(&r, upload.id).await.expect("upload").is_none());
    assert!(store
        .upload_chunks(upload.id)
        .await
        .expect("chunks")
        .is_empty());
    assert_eq!(
        store.repository_blob(&r, &record.digest).await.expect("rb"),
        Some(record.clone())
    );
    // The ended session accepts nothing more.
    let late = UploadChunk {
        offset: 16,
        size: 1,
        cid: cid_of(b"late"),
    };
    assert!(!store
        .append_upload_chunk(upload.id, late, vec![])
        .await
        .expect("late"));
    assert!(store
        .delete_upload(upload.id)
        .await
        .expect("delete")
        .is_empty());
}

on_every_store!(
    concurrent_appends_at_the_same_offset_only_one_wins,
    concurrent_appends_at_the_same_offset_only_one_wins_on
);

async fn concurrent_appends_at_the_same_offset_only_one_wins_on(store: Arc<dyn MetadataStore>) {
    let r = repo("cas");
    let upload = store.create_upload(&r, vec![]).await.expect("create");
    let attempts = (0..8u8).map(|i| {
        let store = store.clone();
        let id = upload.id;
        tokio::spawn(async move {
            let chunk = UploadChunk {
                offset: 0,
                size: 4,
                cid: cid_of(&[i]),
            };
            store.append_upload_chunk(id, chunk, vec![i]).await
        })
    });
    let mut winners = 0;
    for attempt in attempts.collect::<Vec<_>>() {
        if attempt.await.expect("join").expect("append") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let got = store
        .upload(&r, upload.id)
        .await
        .expect("upload")
        .expect("present");
    assert_eq!((got.bytes_received, got.chunk_count), (4, 1));
    assert_eq!(
        store.upload_chunks(upload.id).await.expect("chunks").len(),
        1
    );
}

on_every_store!(
    complete_upload_returns_the_earlier_record_for_a_known_digest,
    complete_upload_returns_the_earlier_record_for_a_known_digest_on
);

async fn complete_upload_returns_the_earlier_record_for_a_known_digest_on(
    store: Arc<dyn MetadataStore>,
) {
    let a = repo("a");
    let b = repo("b");
    let record = blob(b"same bytes");
    store.commit_blob(&a, record.clone()).await.expect("commit");

    let upload = store.create_upload(&b, vec![]).await.expect("create");
    let chunk = UploadChunk {
        offset: 0,
        size: 10,
        cid: cid_of(b"chunk"),
    };
    assert!(store
        .append_upload_chunk(upload.id, chunk.clone(), vec![])
        .await
        .expect("append"));
    let mut again = record.clone();
    again.cid = cid_of(b"another cid");
    let (stored, chunks) = store
        .complete_upload(upload.id, &b, again)
        .await
        .expect("complete");
    assert_eq!(stored, record);
    assert_eq!(chunks, vec![chunk]);
    assert_eq!(
        store.repository_blob(&b, &record.digest).await.expect("rb"),
        Some(record)
    );
}

on_every_store!(
    complete_upload_from_another_repository_does_not_end_the_session,
    complete_upload_from_another_repository_does_not_end_the_session_on
);

async fn complete_upload_from_another_repository_does_not_end_the_session_on(
    store: Arc<dyn MetadataStore>,
) {
    let r = repo("mine");
    let upload = store.create_upload(&r, vec![]).await.expect("create");
    let chunk = UploadChunk {
        offset: 0,
        size: 3,
        cid: cid_of(b"abc"),
    };
    assert!(store
        .append_upload_chunk(upload.id, chunk.clone(), vec![])
        .await
        .expect("append"));
    let (_, chunks) = store
        .complete_upload(upload.id, &repo("theirs"), blob(b"abc"))
        .await
        .expect("complete");
    assert!(chunks.is_empty());
    assert!(store.upload(&r, upload.id).await.expect("upload").is_some());
    let kept = store.upload_chunks(upload.id).await.expect("chunks");
    assert!(kept.iter().any(|c| c.cid == chunk.cid));
}

on_every_store!(
    delete_upload_returns_chunks_and_ends_the_session,
    delete_upload_returns_chunks_and_ends_the_session_on
);

async fn delete_upload_returns_chunks_and_ends_the_session_on(store: Arc<dyn MetadataStore>) {
    let r = repo("cancel");
    let upload = store.create_upload(&r, vec![]).await.expect("create");
    let c1 = UploadChunk {
        offset: 0,
        size: 2,
        cid: cid_of(b"ab"),
    };
    let c2 = UploadChunk {
        offset: 2,
        size: 2,
        cid: cid_of(b"cd"),
    };
    assert!(store
        .append_upload_chunk(upload.id, c1.clone(), vec![])
        .await
        .expect("c1"));
    assert!(store
        .append_upload_chunk(upload.id, c2.clone(), vec![])
        .await
        .expect("c2"));
    assert_eq!(
        store.delete_upload(upload.id).await.expect("delete"),
        vec![c1, c2]
    );
    assert!(store.upload(&r, upload.id).await.expect("upload").is_none());
    assert!(store
        .delete_upload(upload.id)
        .await
        .expect("delete again")
        .is_empty());
    assert!(store
        .delete_upload(Uuid::new_v4())
        .await
        .expect("unknown")
        .is_empty());
    // An empty session deletes fine too.
    let empty = store.create_upload(&r, vec![]).await.expect("create");
    assert!(store
        .delete_upload(empty.id)
        .await
        .expect("delete")
        .is_empty());
    assert!(store.upload(&r, empty.id).await.expect("upload").is_none());
}
