//! The benchmark tool's workloads, measurements and report, run with tiny sizes against
//! real registries (so the tool cannot rot): one in-process on PostgreSQL and the IPFS
//! node, one started from the binary on its embedded stores as the bench starts it, CNCF
//! distribution and nginx when installed (`apt-get install -y docker-registry
//! nginx-light`; scripts/ensure-tools.sh installs both); and the `bench` binary itself,
//! whose `--check-targets` fails a run that misses its targets.

mod common;

#[allow(dead_code)]
#[path = "../src/bin/bench/charts.rs"]
mod charts;
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
#[path = "../src/bin/bench/targets.rs"]
mod targets;
#[allow(dead_code)]
#[path = "../src/bin/bench/workload.rs"]
mod workload;

use std::path::Path;
use std::time::{Duration, Instant};

use phases::{Deadline, Plan};
use report::{Report, DISTRIBUTION, EMBEDDED, KUBO, NGINX, NODE};

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
        concurrent_pushes: 4,
        concurrent_layer_mib: 1,
        concurrent_kubo: true,
    }
}

/// nginx where the bench looks for it (Debian puts it in /usr/sbin).
fn nginx() -> Option<std::path::PathBuf> {
    servers::find_binary(Path::new("nginx"))
        .or_else(|| servers::find_binary(Path::new("/usr/sbin/nginx")))
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
    let nginx = nginx();
    if let Some(binary) = &nginx {
        servers.push(servers::start_nginx(binary, dir.path()).await.unwrap());
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
    phases::concurrent_pushes(
        &http,
        &servers,
        Some(&node),
        &plan,
        deadline.phase(0.3),
        &mut report,
        // A fresh embedded registry per turn, as the bench does; the others' own.
        |name, i| {
            let own = dir.path().join(format!("concurrent-{name}-{i}"));
            async move {
                if name != EMBEDDED {
                    return Ok(None);
                }
                std::fs::create_dir_all(&own)?;
                let binary = Path::new(env!("CARGO_BIN_EXE_ipfs-registry"));
                let server = servers::start_registry(name, binary, &own, None, None).await?;
                Ok(Some((server, own)))
            }
        },
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
    report.targets = targets::evaluate(&report, &targets::definitions(&plan));

    let systems: Vec<&str> = servers
        .iter()
        .filter(|s| s.is_registry())
        .map(|s| s.name)
        .collect();
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
            "push 4 × 1 MiB concurrently (aggregate)",
        ] {
            assert_measured(&report, metric, system);
        }
        let samples = &report.rows[0].samples[*system];
        assert_eq!(samples.len(), 2, "one sample per iteration");
    }
    for system in [EMBEDDED, KUBO] {
        assert_measured(&report, "tags/list, 30 tags, page n=100, p99", system);
        // The web UI is ours alone.
        assert_measured(&report, "UI repository page, 30 tags, p99", system);
        assert_measured(&report, "UI repository list, p99", system);
    }
    assert_eq!(report.value("UI repository list, p99", DISTRIBUTION), None);
    // The fresh registries of the concurrent pushes are gone, and their data with them.
    for i in 0..plan.iterations {
        assert!(!dir.path().join(format!("concurrent-embedded-{i}")).exists());
    }
    assert_measured(&report, "push monolithic 2 MiB", NODE);
    assert_measured(&report, "pull 2 MiB", NODE);
    if nginx.is_some() {
        // The same bytes as files: pulls and manifest GETs, no pushes.
        for metric in ["pull 2 MiB", "manifest GET c=16", "manifest GET c=16 p99"] {
            assert_measured(&report, metric, NGINX);
        }
        assert_eq!(report.value("push monolithic 2 MiB", NGINX), None);
    }
    // Every target is evaluated from a number, but for those of a system not installed.
    let unmeasured: Vec<_> = report
        .targets
        .iter()
        .filter(|t| t.met.is_none())
        .map(|t| t.target.as_str())
        .collect();
    let expected_unmeasured = |t: &&str| {
        (distribution.is_none() && t.contains(DISTRIBUTION))
            || (nginx.is_none() && t.contains(NGINX))
    };
    assert!(unmeasured.iter().all(expected_unmeasured), "{unmeasured:?}");
    let table = report.markdown();
    assert!(table.contains("| manifest GET c=16 | req/s ↑ |"), "{table}");
    assert!(table.contains("\n| target | measured | met |\n"), "{table}");
    for target in &report.targets {
        assert!(table.contains(&format!("| {} |", target.target)), "{table}");
    }
    // Tiny layers on a shared machine miss the targets: --check-targets fails such a run.
    assert!(targets::check(&report.targets).is_err(), "{table}");
    let written = charts::write(&report, &plan, dir.path()).unwrap();
    assert_eq!(written.len(), 3);
    for chart in written {
        let svg = std::fs::read_to_string(&chart).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("\nembedded\n</text>"),
            "{svg}"
        );
    }
    serde_json::to_string(&report).unwrap();

    for server in servers {
        server.stop().await;
    }
    kubo.server.stop().await;
}

/// The binary end to end, on its embedded registry alone: it prints and writes the target
/// table, and with `--check-targets` a run that misses (or cannot measure) a target exits
/// non-zero, naming it.
#[test]
fn check_targets_fails_a_run_that_misses() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "--quick",
            "--skip-kubo",
            "--skip-distribution",
            "--skip-nginx",
        ])
        .args(["--layers-mib", "1", "--iterations", "1", "--chunk-mib", "1"])
        .args([
            "--get-seconds",
            "0.2",
            "--tags",
            "11",
            "--memory-layer-mib",
            "2",
        ])
        .args([
            "--concurrent-pushes",
            "2",
            "--deadline",
            "3m",
            "--check-targets",
        ])
        .arg("--registry-bin")
        .arg(env!("CARGO_BIN_EXE_ipfs-registry"))
        .arg("--out")
        .arg(&out)
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("| target | measured | met |"), "{stdout}");
    assert!(
        stdout.contains("not measured: distribution skipped (--skip-distribution)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("targets missed or not measured (--check-targets)")
            && stderr.contains("embedded pull 1 MiB ≥ 0.9× nginx"),
        "{stderr}"
    );
    let table = std::fs::read_to_string(out.with_extension("md")).unwrap();
    assert!(table.contains("| target | measured | met |"), "{table}");
    assert!(dir.path().join("push.svg").is_file());
}
