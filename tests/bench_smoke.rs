//! The benchmark tool's workloads, measurements and report, run with tiny sizes against
//! real registries (so the tool cannot rot): one in-process on PostgreSQL and the IPFS
//! node, one started from the binary on its embedded stores as the bench starts it, and
//! CNCF distribution when installed (`apt-get install -y docker-registry`).

mod common;

#[allow(dead_code)]
#[path = "../src/bin/bench/data.rs"]
mod data;
#[allow(dead_code)]
#[path = "../src/bin/bench/ipfs.rs"]
mod ipfs;
#[allow(dead_code)]
#[path = "../src/bin/bench/phases.rs"]
mod phases;
#[allow(dead_code)]
#[path = "../src/bin/bench/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "../src/bin/bench/servers.rs"]
mod servers;
#[allow(dead_code)]
#[path = "../src/bin/bench/stats.rs"]
mod stats;
#[allow(dead_code)]
#[path = "../src/bin/bench/workload.rs"]
mod workload;

use std::path::Path;
use std::time::{Duration, Instant};

use phases::{Deadline, Plan};
use report::{Report, DISTRIBUTION, EMBEDDED, KUBO, NODE};

fn tiny_plan() -> Plan {
    Plan {
        layers_mib: vec![2],
        iterations: 2,
        chunk_mib: 1,
        get_duration: Duration::from_millis(200),
        concurrencies: vec![1, 16],
        tags: 30,
        list_samples: 5,
        memory_layer_mib: 4,
    }
}

fn assert_measured(report: &Report, metric: &str, system: &str) {
    let value = report.value(metric, system);
    assert!(
        value.is_some_and(|v| v > 0.0),
        "{metric} of {system}: {value:?}\n{}",
        report.markdown()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phase_measures_every_registry() {
    let kubo = common::StorePair::PostgresIpfsNode.start_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let mut servers = vec![
        servers::start_registry(
            EMBEDDED,
            Path::new(env!("CARGO_BIN_EXE_ipfs-registry")),
            dir.path(),
            None,
            None,
        )
        .await
        .unwrap(),
        servers::Server::in_process(KUBO, kubo.base.clone()),
    ];
    let distribution = servers::find_binary(Path::new("docker-registry"));
    if let Some(binary) = &distribution {
        servers.push(
            servers::start_distribution(binary, dir.path())
                .await
                .unwrap(),
        );
    }
    let node = ipfs::Node::new(common::ipfs_url().as_str()).unwrap();
    let http = workload::client(Duration::from_secs(60)).unwrap();
    let plan = tiny_plan();
    let deadline = Deadline(Instant::now() + Duration::from_secs(120));
    let mut report = Report::default();

    phases::push_pull(
        &http,
        &servers,
        Some(&node),
        &plan,
        deadline.phase(0.5),
        &mut report,
    )
    .await
    .unwrap();
    phases::manifest_get(&http, &servers, &plan, &mut report)
        .await
        .unwrap();
    phases::tags_list(&http, &servers, &plan, deadline.phase(0.5), &mut report)
        .await
        .unwrap();
    phases::memory(&http, &servers, Some(&node), &plan, &mut report)
        .await
        .unwrap();
    phases::targets(&mut report, &plan);

    let systems: Vec<&str> = servers.iter().map(|s| s.name).collect();
    for system in &systems {
        for metric in [
            "push monolithic 2 MiB",
            "push chunked 2 MiB (1 MiB chunks)",
            "push chunked 2 MiB (1 MiB chunks): PUT after the last PATCH",
            "pull 2 MiB",
            "manifest GET c=16",
            "manifest GET c=16 p99",
            "tags/list, 30 tags, p99",
            "tags/list, 10 tags, p99",
            "peak RSS, push + pull of one 4 MiB layer",
        ] {
            assert_measured(&report, metric, system);
        }
        let samples = &report.rows[0].samples[*system];
        assert_eq!(samples.len(), 2, "one sample per iteration");
    }
    for system in [EMBEDDED, KUBO] {
        assert_measured(&report, "tags/list, 30 tags, page n=100, p99", system);
    }
    assert_measured(&report, "push monolithic 2 MiB", NODE);
    assert_measured(&report, "pull 2 MiB", NODE);
    // Every target is evaluated from a number; ratios to distribution need it installed.
    let unmeasured: Vec<_> = report
        .targets
        .iter()
        .filter(|t| t.met.is_none())
        .map(|t| t.target.as_str())
        .collect();
    let expected_unmeasured = |t: &&str| {
        t.starts_with(DISTRIBUTION) && t.contains("page")
            || (distribution.is_none() && t.contains("distribution"))
    };
    assert!(unmeasured.iter().all(expected_unmeasured), "{unmeasured:?}");
    let table = report.markdown();
    assert!(table.contains("| manifest GET c=16 | req/s ↑ |"), "{table}");
    serde_json::to_string(&report).unwrap();

    for server in servers {
        server.stop().await;
    }
    kubo.server.stop().await;
}
