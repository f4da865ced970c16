//! What only PostgreSQL shows of its metadata store: migrations, connection failures and
//! timeouts, collations, query plans, and the row locks a manifest put and a GC sweep take,
//! seen from a second session. The behaviour every store shares is in contract_meta.rs and
//! contract_gc.rs.

mod common;

use std::time::{Duration, Instant};

use common::backends::{postgres_config as config, postgres_store as store};
use common::meta::*;
use common::oci::{expect_status, image_manifest, Oci};
use ipfs_registry::config::DatabaseConfig;
use ipfs_registry::meta::gc::{GcStore, SweepPolicy};
use ipfs_registry::meta::postgres::PostgresStore;
use ipfs_registry::meta::{MetaError, MetadataStore, Page};
use ipfs_registry::oci::Digest;

/// A plain connection to the test database, for poking at it from outside the store.
async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("raw connect");
    tokio::spawn(conn);
    client
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

/// The schema itself refuses a tag pointing at a missing manifest (the stores' deletes
/// rely on the foreign key to take a manifest's tags with it).
#[tokio::test]
async fn a_tag_never_points_at_a_missing_manifest() {
    let (store, url) = store().await;
    let r = repo("deleting");
    let one = pushed_image(&store, &r, "one").await;
    store
        .put_manifest(&r, one.clone(), Some(&tag("a")))
        .await
        .expect("put");
    assert!(store
        .delete_manifest(&r, &one.digest)
        .await
        .expect("delete"));
    let db = raw(&url).await;
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

// ---------- GC sweeps and pushes, through a registry ----------

const REPO: &str = "gc/app";

/// A manifest put holds what it references (`FOR KEY SHARE`) until it commits; a sweep
/// meanwhile skips those rows instead of waiting or deleting them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_skips_rows_a_push_holds() {
    let registry = common::StorePair::PostgresIpfsNode.start_registry().await;
    let oci = Oci::new(&registry.base);
    let orphan = oci.push_image(REPO, None, 1).await;
    let loose = oci.push_random_blob(REPO, 777).await;
    let store = PostgresStore::connect(&registry.config.database)
        .await
        .unwrap();
    let everything = SweepPolicy {
        grace_period: Duration::ZERO,
        untagged_retention: Some(Duration::ZERO),
        upload_expiry: Duration::from_secs(24 * 3600),
        ..SweepPolicy::default()
    };

    let mut push = raw(&registry.database_url).await;
    let tx = push.transaction().await.unwrap();
    let held = tx
        .query(
            "SELECT 1 FROM repository_blobs WHERE digest = $1 FOR KEY SHARE",
            &[&loose.digest],
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    tx.query(
        "SELECT 1 FROM manifests WHERE digest = $1 FOR KEY SHARE",
        &[&orphan.manifest.digest],
    )
    .await
    .unwrap();

    let swept = tokio::time::timeout(Duration::from_secs(5), store.sweep(&everything, false))
        .await
        .expect("a sweep does not wait for pushes")
        .unwrap();
    assert!(swept.manifests.is_empty(), "{:?}", swept.manifests);
    assert!(
        swept
            .blobs
            .iter()
            .all(|b| b.digest.to_string() != loose.digest),
        "a held blob link was swept"
    );
    let response = oci.get(&format!("/v2/{REPO}/blobs/{}", loose.digest)).await;
    let response = expect_status(response, 200).await;
    assert!(response.bytes().await.unwrap() == loose.data);
    let kept = oci
        .head(&format!("/v2/{REPO}/manifests/{}", orphan.manifest.digest))
        .await;
    assert_eq!(kept.status(), 200, "a held manifest was swept");

    tx.rollback().await.unwrap();
    let swept = store.sweep(&everything, false).await.unwrap();
    assert_eq!(swept.manifests.len(), 1);
    assert!(swept
        .blobs
        .iter()
        .any(|b| b.digest.to_string() == loose.digest));
    let head = oci
        .head(&format!("/v2/{REPO}/blobs/{}", loose.digest))
        .await;
    assert_eq!(head.status(), 404);
    registry.server.stop().await;
}

/// When a sweep holds a blob link first, a manifest put referencing it waits, then finds it
/// gone and is refused: it never succeeds referencing what the sweep deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_waiting_on_a_sweep_is_refused() {
    let registry = common::StorePair::PostgresIpfsNode.start_registry().await;
    let oci = Oci::new(&registry.base);
    let config = oci
        .push_blob(REPO, br#"{"architecture":"amd64","os":"linux","n":1}"#)
        .await;
    let layer = oci.push_random_blob(REPO, 999).await;

    // What a sweep's transaction does to the link: lock it, then delete it.
    let mut sweep = raw(&registry.database_url).await;
    let tx = sweep.transaction().await.unwrap();
    tx.query(
        "SELECT 1 FROM repository_blobs WHERE digest = $1 FOR UPDATE SKIP LOCKED",
        &[&layer.digest],
    )
    .await
    .unwrap();
    tx.execute(
        "DELETE FROM repository_blobs WHERE digest = $1",
        &[&layer.digest],
    )
    .await
    .unwrap();

    let manifest = image_manifest(&config, std::slice::from_ref(&layer), None);
    let put = tokio::spawn({
        let oci = oci.clone();
        let manifest = manifest.clone();
        async move {
            oci.put_manifest(REPO, "v1", &manifest.media_type, &manifest.content)
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!put.is_finished(), "the push must wait for the sweep");
    tx.commit().await.unwrap();
    let response = put.await.unwrap();
    let body = common::oci::assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert!(body.to_string().contains(&layer.digest), "{body}");
    let refused = oci
        .head(&format!("/v2/{REPO}/manifests/{}", manifest.digest))
        .await;
    assert_eq!(refused.status(), 404);
    registry.server.stop().await;
}
