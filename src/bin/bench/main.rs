#![forbid(unsafe_code)]
//! `bench`: ipfs-registry (embedded, and on PostgreSQL + an IPFS node) side by side with
//! CNCF distribution and nginx (the same bytes as static files) on this machine, in one
//! bounded run. See docs/performance.md.

mod charts;
mod data;
mod ipfs;
mod phases;
mod report;
mod scale;
mod seed;
mod servers;
mod stats;
mod targets;
mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::phases::{Deadline, Plan};
use crate::report::Report;
use crate::servers::Server;

#[derive(Parser, Debug)]
#[command(about = "Benchmark ipfs-registry against CNCF distribution and nginx on this machine")]
struct Args {
    /// A smoke run with small sizes (under a minute).
    #[arg(long)]
    quick: bool,
    /// The whole run stops by then (phases share what is left).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15m")]
    deadline: Duration,
    /// The registry binary (build it first: cargo build --release --bins).
    #[arg(long, default_value = "target/release/ipfs-registry")]
    registry_bin: PathBuf,
    /// CNCF distribution (Debian: apt-get install -y docker-registry).
    #[arg(long, default_value = "docker-registry")]
    distribution_bin: PathBuf,
    /// Measure without distribution (no ratios).
    #[arg(long)]
    skip_distribution: bool,
    /// PostgreSQL admin URL; the Kubo-mode registry gets a fresh database on it.
    #[arg(
        long,
        env = "IPFS_REGISTRY_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Kubo RPC API of the IPFS node.
    #[arg(
        long,
        env = "IPFS_REGISTRY_BENCH_IPFS_URL",
        default_value = "http://127.0.0.1:45001"
    )]
    ipfs_url: String,
    /// Measure without the PostgreSQL + IPFS node registry.
    #[arg(long)]
    skip_kubo: bool,
    /// nginx, serving the same bytes as files (Debian: apt-get install -y nginx-light).
    #[arg(long, default_value = "nginx")]
    nginx_bin: PathBuf,
    /// Measure without nginx (no ratios to it).
    #[arg(long)]
    skip_nginx: bool,
    /// Pushes at once in the concurrent-push row, 0 for none [default: 64; quick: 8].
    #[arg(long)]
    concurrent_pushes: Option<usize>,
    /// Also push concurrently through the Kubo mode (the shared test node struggles).
    #[arg(long)]
    concurrent_kubo: bool,
    /// Exit non-zero when a target is missed or could not be measured.
    #[arg(long)]
    check_targets: bool,
    /// Layer sizes in MiB [default: 32,256; quick: 4,16].
    #[arg(long, value_delimiter = ',')]
    layers_mib: Option<Vec<u64>>,
    /// Pushes and pulls per layer size and system (median reported) [default: 5; quick: 2].
    #[arg(long)]
    iterations: Option<usize>,
    /// Chunk size of chunked pushes in MiB [default: 8; quick: 2].
    #[arg(long)]
    chunk_mib: Option<u64>,
    /// Seconds of manifest GETs per concurrency and system [default: 5; quick: 1].
    #[arg(long)]
    get_seconds: Option<f64>,
    /// Tags of the large tags/list repository [default: 10000; quick: 500].
    #[arg(long)]
    tags: Option<usize>,
    /// Size in MiB of the layer of the memory phase [default: 1024; quick: 64].
    #[arg(long)]
    memory_layer_mib: Option<u64>,
    /// Where the JSON results go (the table goes to the same path with .md, and stdout).
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// Scale mode instead: registries seeded with these numbers of blob rows, measured
    /// against an empty one (docs/performance.md, "Scale").
    #[arg(long, value_delimiter = ',')]
    scale_rows: Option<Vec<u64>>,
    /// Where scale mode's JSON goes (its table: the same path with .md).
    #[arg(long, default_value = "target/bench/scale.json")]
    scale_results: PathBuf,
}

impl Args {
    fn plan(&self) -> Plan {
        let q = self.quick;
        Plan {
            layers_mib: self.layers_mib.clone().unwrap_or(if q {
                vec![4, 16]
            } else {
                vec![32, 256]
            }),
            iterations: self.iterations.unwrap_or(if q { 2 } else { 5 }).max(1),
            chunk_mib: self.chunk_mib.unwrap_or(if q { 2 } else { 8 }).max(1),
            get_duration: Duration::from_secs_f64(self.get_seconds.unwrap_or(if q {
                1.0
            } else {
                5.0
            })),
            concurrencies: vec![1, 16, 64],
            tags: self.tags.unwrap_or(if q { 500 } else { 10_000 }).max(11),
            list_samples: if q { 50 } else { 200 },
            memory_layer_mib: self.memory_layer_mib.unwrap_or(if q { 64 } else { 1024 }),
            concurrent_pushes: self.concurrent_pushes.unwrap_or(if q { 8 } else { 64 }),
            concurrent_layer_mib: if q { 4 } else { 32 },
            concurrent_kubo: self.concurrent_kubo,
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Two workers, like the machine the reference numbers come from: the client shares the
    // cores with the servers, for every server alike.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(rows) = args.scale_rows {
        let options = scale::Options {
            rows,
            results: args.scale_results,
            registry_bin: args.registry_bin,
            database_url: args.database_url,
        };
        return runtime.block_on(scale::run(&options)).map(drop);
    }
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> Result<()> {
    let registry_bin = servers::find_binary(&args.registry_bin).with_context(|| {
        format!(
            "{} not found: build it first (cargo build --release --bins)",
            args.registry_bin.display()
        )
    })?;
    let distribution_bin = if args.skip_distribution {
        None
    } else {
        Some(servers::find_binary(&args.distribution_bin).with_context(|| {
            format!(
                "CNCF distribution ({}) not found: install it with `apt-get install -y docker-registry` \
                 (Debian), pass --distribution-bin PATH, or run with --skip-distribution",
                args.distribution_bin.display()
            )
        })?)
    };
    let nginx_bin = if args.skip_nginx {
        None
    } else {
        // Debian installs it in /usr/sbin, which is not on every user's PATH.
        let found = servers::find_binary(&args.nginx_bin).or_else(|| {
            (args.nginx_bin == std::path::Path::new("nginx"))
                .then(|| servers::find_binary(std::path::Path::new("/usr/sbin/nginx")))
                .flatten()
        });
        Some(found.with_context(|| {
            format!(
                "nginx ({}) not found: install it with `apt-get install -y nginx-light` \
                 (Debian), pass --nginx-bin PATH, or run with --skip-nginx",
                args.nginx_bin.display()
            )
        })?)
    };
    let dir = std::env::temp_dir().join(format!("ipfs-registry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let database = if args.skip_kubo {
        None
    } else {
        Some(servers::create_database(&args.database_url).await?)
    };

    let started = Instant::now();
    let deadline = Deadline(started + args.deadline);
    let run = run(
        &args,
        &registry_bin,
        distribution_bin.as_deref(),
        nginx_bin.as_deref(),
        &dir,
        database.as_ref().map(|d| d.1.as_str()),
        &deadline,
    );
    // Servers live inside `run`: leaving it by any way kills them (kill_on_drop).
    let outcome = tokio::select! {
        outcome = run => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = tokio::time::sleep_until((deadline.0 + Duration::from_secs(60)).into()) => {
            Err(anyhow::anyhow!("the run overran its deadline of {:?}", args.deadline))
        }
    };
    if let Some((name, _)) = &database {
        if let Err(e) = servers::drop_database(&args.database_url, name).await {
            eprintln!("could not drop the bench database {name}: {e:#}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = outcome?;
    report.duration_s = started.elapsed().as_secs_f64();
    for (skipped, system, flag) in [
        (
            args.skip_distribution,
            report::DISTRIBUTION,
            "--skip-distribution",
        ),
        (args.skip_kubo, report::KUBO, "--skip-kubo"),
        (args.skip_kubo, report::NODE, "--skip-kubo"),
        (args.skip_nginx, report::NGINX, "--skip-nginx"),
    ] {
        if skipped {
            report.skipped.insert(system.to_owned(), flag.to_owned());
        }
    }
    let plan = args.plan();
    report.targets = targets::evaluate(&report, &targets::definitions(&plan));
    let table = report.markdown();
    let out_dir = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(out_dir)?;
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(args.out.with_extension("md"), &table)?;
    let charts = charts::write(&report, &plan, out_dir)?;
    println!("{table}");
    println!(
        "results: {} and {}; charts: {}",
        args.out.display(),
        args.out.with_extension("md").display(),
        charts
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if args.check_targets {
        targets::check(&report.targets)?;
    }
    Ok(())
}

async fn run(
    args: &Args,
    registry_bin: &std::path::Path,
    distribution_bin: Option<&std::path::Path>,
    nginx_bin: Option<&std::path::Path>,
    dir: &std::path::Path,
    database_url: Option<&str>,
    deadline: &Deadline,
) -> Result<Report> {
    let plan = args.plan();
    let http = workload::client(Duration::from_secs(600))?;
    let mut report = Report::default();
    describe(&mut report, args, &plan);

    let node = match database_url {
        Some(_) => {
            let node = ipfs::Node::new(&args.ipfs_url)?;
            node.check(&http).await?;
            Some(node)
        }
        None => None,
    };
    let mut servers: Vec<Server> = Vec::new();
    servers.push(servers::start_registry(report::EMBEDDED, registry_bin, dir, None, None).await?);
    if let Some(url) = database_url {
        servers.push(
            servers::start_registry(
                report::KUBO,
                registry_bin,
                dir,
                Some(url),
                Some(&args.ipfs_url),
            )
            .await?,
        );
    }
    if let Some(binary) = distribution_bin {
        servers.push(servers::start_distribution(binary, dir).await?);
    }
    if let Some(binary) = nginx_bin {
        servers.push(servers::start_nginx(binary, dir).await?);
    }
    if servers.is_empty() {
        bail!("nothing to measure");
    }

    eprintln!("push and pull ({:?} MiB layers)…", plan.layers_mib);
    let end = deadline.phase(0.45);
    phases::push_pull(&http, &servers, node.as_ref(), &plan, end, &mut report).await?;
    eprintln!(
        "{} concurrent pushes of {} MiB…",
        plan.concurrent_pushes, plan.concurrent_layer_mib
    );
    let end = deadline.phase(0.3);
    let fresh = |name: &'static str, i: usize| async move {
        // Each turn on empty stores of its own, removed after it, so that the row's
        // layers do not stay on disk until the run ends.
        let own = dir.join(format!("concurrent-{name}-{i}"));
        std::fs::create_dir_all(&own)?;
        let server = match (name, distribution_bin) {
            (report::EMBEDDED, _) => {
                servers::start_registry(name, registry_bin, &own, None, None).await?
            }
            (report::DISTRIBUTION, Some(binary)) => {
                servers::start_distribution(binary, &own).await?
            }
            _ => return Ok(None),
        };
        Ok(Some((server, own)))
    };
    phases::concurrent_pushes(
        &http,
        &servers,
        node.as_ref(),
        &plan,
        end,
        &mut report,
        fresh,
    )
    .await?;
    eprintln!("manifest GET…");
    phases::manifest_get(&http, &servers, &plan, &mut report).await?;
    eprintln!("tags/list ({} tags)…", plan.tags);
    let end = deadline.phase(0.5);
    phases::tags_list(&http, &servers, &plan, end, &mut report).await?;
    eprintln!("memory ({} MiB layer)…", plan.memory_layer_mib);
    phases::memory(&http, &servers, node.as_ref(), &plan, &mut report).await?;
    for server in servers {
        server.stop().await;
    }
    Ok(report)
}

fn describe(report: &mut Report, args: &Args, plan: &Plan) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    report.machine.insert("cpu".into(), cpu);
    report.machine.insert("cores".into(), cores.to_string());
    report
        .machine
        .insert("loadavg at start".into(), load.trim().to_owned());
    report
        .settings
        .insert("quick".into(), args.quick.to_string());
    report
        .settings
        .insert("layers_mib".into(), format!("{:?}", plan.layers_mib));
    report
        .settings
        .insert("iterations".into(), plan.iterations.to_string());
    report
        .settings
        .insert("chunk_mib".into(), plan.chunk_mib.to_string());
    report.settings.insert(
        "get_seconds".into(),
        plan.get_duration.as_secs_f64().to_string(),
    );
    report.settings.insert("tags".into(), plan.tags.to_string());
    report
        .settings
        .insert("memory_layer_mib".into(), plan.memory_layer_mib.to_string());
    report
        .settings
        .insert("ipfs_url".into(), args.ipfs_url.clone());
    report.settings.insert(
        "concurrent_pushes".into(),
        format!(
            "{} × {} MiB{}",
            plan.concurrent_pushes,
            plan.concurrent_layer_mib,
            if plan.concurrent_kubo {
                ", kubo too"
            } else {
                ""
            }
        ),
    );
}
