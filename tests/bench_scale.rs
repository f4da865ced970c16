//! The bench's scale mode at a tiny size, against the shared PostgreSQL server and the
//! embedded store: the seeded sets hold what their shape says, the requests all succeed,
//! one GC pass removes exactly the garbage seeded (so the graph is consistent), and the
//! growth table is produced. No timing is asserted.

#[allow(dead_code)]
#[path = "../src/bin/bench/data.rs"]
mod data;
#[allow(dead_code)]
#[path = "../src/bin/bench/scale.rs"]
mod scale;
#[allow(dead_code)]
#[path = "../src/bin/bench/seed.rs"]
mod seed;
#[allow(dead_code)]
#[path = "../src/bin/bench/servers.rs"]
mod servers;
#[allow(dead_code)]
#[path = "../src/bin/bench/stats.rs"]
mod stats;
#[allow(dead_code)]
#[path = "../src/bin/bench/workload.rs"]
mod workload;

use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_scale_run_seeds_consistent_sets_and_writes_the_table() {
    let database_url = std::env::var("IPFS_REGISTRY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("scale.json");
    let options = scale::Options {
        rows: vec![3_000],
        results: results.clone(),
        registry_bin: PathBuf::from(env!("CARGO_BIN_EXE_ipfs-registry")),
        database_url,
    };
    let report = scale::run(&options).await.unwrap();

    assert_eq!(report.runs.len(), 4, "two stores × (empty, 3000)");
    for run in &report.runs {
        let shape = seed::Shape::for_rows(run.rows);
        assert_eq!(run.shape, shape);
        assert_eq!(run.seeded, shape.expected(), "{} {}", run.store, run.rows);
        assert_eq!(run.gc.removed, shape.garbage(), "{}", run.gc.output);
        for kind in scale::REQUEST_KINDS {
            assert!(run.p99_ms[kind] > 0.0, "{kind}: {:?}", run.p99_ms);
        }
    }
    let big = seed::Shape::for_rows(3_000);
    assert_eq!(big.blobs, 3_000);
    assert_eq!(big.manifests, 300);
    assert_eq!(big.big_tags, 300);

    let table = std::fs::read_to_string(results.with_extension("md")).unwrap();
    for expected in [
        "PostgreSQL metadata",
        "Embedded metadata",
        "| manifest GET p99 (ms) |",
        "| tags/list n=100 p99 (ms) |",
        "| catalog n=100 p99 (ms) |",
        "| blob HEAD p99 (ms) |",
        "| GC pass (s) |",
        "3k",
    ] {
        assert!(table.contains(expected), "{expected:?} in\n{table}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    assert_eq!(json["runs"].as_array().map(Vec::len), Some(4));
}
