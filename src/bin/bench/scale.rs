//! Scale mode (`bench --scale-rows 100000,1000000`, docs/performance.md "Scale"): the same
//! requests against registries holding growing metadata, each seeded by bulk SQL
//! (seed.rs), on PostgreSQL and on the embedded store, and one GC pass over each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use reqwest::{header, Client, Method};
use serde::Serialize;

use crate::seed::{self, Counts, Garbage, Shape};
use crate::servers;
use crate::stats::Latencies;

/// Requests per measurement, and how many run at once.
pub const REQUESTS: usize = 2_000;
pub const CONCURRENCY: usize = 8;
/// Requests before each measurement, not counted (connections, caches, page cache).
const WARM_UP: usize = 200;
/// Page size of the paged listings.
const PAGE: u64 = 100;
/// GC's untagged retention in the pass (the seeded untagged manifests are years old).
const UNTAGGED_RETENTION: &str = "1day";

pub const POSTGRES: &str = "postgres";
pub const EMBEDDED: &str = "embedded";

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json";

/// The measured requests, in table order.
pub const REQUEST_KINDS: [&str; 4] = [
    "manifest GET",
    "tags/list n=100",
    "catalog n=100",
    "blob HEAD",
];

pub struct Options {
    /// Blob rows of each seeded set, besides the "empty" one (0).
    pub rows: Vec<u64>,
    /// Where the JSON goes; the table goes to the same path with `.md`.
    pub results: PathBuf,
    pub registry_bin: PathBuf,
    /// PostgreSQL admin URL: each PostgreSQL run gets a database of its own on it.
    pub database_url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GcPass {
    /// Wall time of `ipfs-registry gc`, process start to exit.
    pub seconds: f64,
    /// The duration the command reports (the collection alone).
    pub reported_seconds: f64,
    pub removed: Garbage,
    pub output: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub store: &'static str,
    pub rows: u64,
    pub shape: Shape,
    pub seeded: Counts,
    pub seed_seconds: f64,
    /// Per request kind.
    pub p50_ms: BTreeMap<String, f64>,
    pub p99_ms: BTreeMap<String, f64>,
    pub gc: GcPass,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScaleReport {
    pub requests: usize,
    pub concurrency: usize,
    pub machine: BTreeMap<String, String>,
    pub runs: Vec<Run>,
}

/// Measures every store at every size and writes the report (JSON and the table).
pub async fn run(options: &Options) -> Result<ScaleReport> {
    let registry_bin = servers::find_binary(&options.registry_bin).with_context(|| {
        format!(
            "{} not found: build it first (cargo build --release --bins)",
            options.registry_bin.display()
        )
    })?;
    let mut sizes = vec![0];
    sizes.extend(options.rows.iter().copied().filter(|&n| n > 0));
    sizes.dedup();
    let root = std::env::temp_dir().join(format!("ipfs-registry-scale-{}", std::process::id()));
    let mut report = ScaleReport {
        requests: REQUESTS,
        concurrency: CONCURRENCY,
        ..ScaleReport::default()
    };
    report.machine.insert(
        "loadavg at start".into(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    );
    for store in [POSTGRES, EMBEDDED] {
        for &rows in &sizes {
            let dir = root.join(format!("{store}-{rows}"));
            std::fs::create_dir_all(&dir)?;
            let outcome = run_one(options, &registry_bin, store, rows, &dir).await;
            let _ = std::fs::remove_dir_all(&dir);
            report.runs.push(outcome?);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    let table = report.markdown();
    if let Some(parent) = options.results.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&options.results, serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(options.results.with_extension("md"), &table)?;
    println!("{table}");
    println!(
        "results: {} and {}",
        options.results.display(),
        options.results.with_extension("md").display()
    );
    Ok(report)
}

/// The environment of one registry process, as `servers::start_registry` sets it.
struct Registry<'a> {
    bin: &'a Path,
    data_dir: PathBuf,
    database_url: Option<String>,
}

impl Registry<'_> {
    async fn command(&self, subcommand: &str) -> Result<std::process::Output> {
        let mut command = tokio::process::Command::new(self.bin);
        command
            .arg(subcommand)
            .env_clear()
            .env("IPFS_REGISTRY_DATA_DIR", &self.data_dir)
            .env("IPFS_REGISTRY_LOG", "warn")
            .env("IPFS_REGISTRY_GC__UNTAGGED_RETENTION", UNTAGGED_RETENTION)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(url) = &self.database_url {
            command.env("IPFS_REGISTRY_DATABASE__URL", url);
        }
        let output = command.output().await?;
        ensure!(
            output.status.success(),
            "ipfs-registry {subcommand} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(output)
    }
}

async fn run_one(
    options: &Options,
    bin: &Path,
    store: &'static str,
    rows: u64,
    dir: &Path,
) -> Result<Run> {
    let shape = Shape::for_rows(rows);
    // The directory servers::start_registry gives a registry named `store`.
    let data_dir = dir.join(format!("{store}-data"));
    let database = match store {
        POSTGRES => Some(create_database(&options.database_url, rows).await?),
        _ => None,
    };
    let outcome = measure(
        bin,
        store,
        rows,
        &shape,
        dir,
        Registry {
            bin,
            data_dir,
            database_url: database.as_ref().map(|d| d.1.clone()),
        },
    )
    .await;
    if let Some((name, _)) = &database {
        if let Err(e) = servers::drop_database(&options.database_url, name).await {
            eprintln!("could not drop the scale database {name}: {e:#}");
        }
    }
    outcome
}

async fn measure(
    bin: &Path,
    store: &'static str,
    rows: u64,
    shape: &Shape,
    dir: &Path,
    registry: Registry<'_>,
) -> Result<Run> {
    eprintln!(
        "scale: {store}, {rows} rows: seeding {} blobs, {} manifests, {} repositories…",
        shape.blobs, shape.manifests, shape.repositories
    );
    registry.command("migrate").await?;
    let started = Instant::now();
    let seeded = match &registry.database_url {
        Some(url) => seed::postgres(url, shape).await?,
        None => {
            let path = registry.data_dir.join("metadata.sqlite");
            let shape = *shape;
            tokio::task::spawn_blocking(move || seed::sqlite(&path, &shape)).await??
        }
    };
    ensure!(
        seeded == shape.expected(),
        "seeded {seeded:?}, the shape says {:?}",
        shape.expected()
    );
    seed::garbage_files(&registry.data_dir.join("blobs"), shape)?;
    let seed_seconds = started.elapsed().as_secs_f64();
    eprintln!("scale: seeded in {seed_seconds:.1}s: {seeded:?}");

    let server = servers::start_registry(
        store,
        bin,
        dir,
        registry.database_url.as_deref(),
        None,
    )
    .await?;
    let http = Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()?;
    let mut p50_ms = BTreeMap::new();
    let mut p99_ms = BTreeMap::new();
    for (k, kind) in REQUEST_KINDS.iter().enumerate() {
        let latencies = requests(&http, &server.base, shape, k).await?;
        p50_ms.insert(kind.to_string(), latencies.percentile_ms(50.0));
        p99_ms.insert(kind.to_string(), latencies.percentile_ms(99.0));
    }
    eprintln!("scale: p99 {p99_ms:?}; GC…");
    // The operator's path: the online GC is off by default (gc.interval = 0), so a pass is
    // the `gc` command, run beside the serving registry.
    let started = Instant::now();
    let output = registry.command("gc").await?;
    let seconds = started.elapsed().as_secs_f64();
    server.stop().await;
    let output = String::from_utf8_lossy(&output.stdout).into_owned();
    let gc = parse_gc(&output, seconds)?;
    // Anything else means the seeded graph is not what GC sees in pushed data.
    ensure!(
        gc.removed == shape.garbage(),
        "GC removed {:?}, the seeded garbage is {:?}:\n{output}",
        gc.removed,
        shape.garbage()
    );
    eprintln!("scale: GC {seconds:.2}s: {:?}", gc.removed);
    Ok(Run {
        store,
        rows,
        shape: *shape,
        seeded,
        seed_seconds,
        p50_ms,
        p99_ms,
        gc,
    })
}

/// `gc: freed: 3 manifests (… bytes), 29 blobs (… bytes), 28 repository links, … in 1.2s`.
fn parse_gc(output: &str, seconds: f64) -> Result<GcPass> {
    let line = output
        .lines()
        .find(|l| l.starts_with("gc: freed:"))
        .with_context(|| format!("no report in the gc output: {output}"))?;
    let before = |marker: &str| -> Result<u64> {
        let head = line
            .split(marker)
            .next()
            .filter(|h| h.len() < line.len())
            .with_context(|| format!("no {marker:?} in {line:?}"))?;
        let number = head
            .rsplit([' ', ','])
            .find(|w| !w.is_empty())
            .unwrap_or_default();
        number
            .parse()
            .with_context(|| format!("{number:?} before {marker:?} in {line:?}"))
    };
    let reported_seconds = line
        .rsplit(" in ")
        .next()
        .and_then(|t| t.trim().strip_suffix('s'))
        .and_then(|t| t.parse().ok())
        .with_context(|| format!("no duration in {line:?}"))?;
    Ok(GcPass {
        seconds,
        reported_seconds,
        removed: Garbage {
            manifests: before(" manifests (")?,
            blobs: before(" blobs (")?,
            links: before(" repository links")?,
        },
        output: output.to_owned(),
    })
}

/// A fresh database `bench_scale_<pid>_<rows>` on the server of `admin_url`: its name and URL.
async fn create_database(admin_url: &str, rows: u64) -> Result<(String, String)> {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {admin_url} (--database-url)"))?;
    tokio::spawn(connection);
    let name = format!("bench_scale_{}_{rows}", std::process::id());
    // Left over by an interrupted run of a process that had this pid.
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let mut url = reqwest::Url::parse(admin_url)?;
    url.set_path(&format!("/{name}"));
    Ok((name, url.to_string()))
}

/// A small deterministic generator (splitmix64): the same picks in every run.
struct Picks(u64);

impl Picks {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The `n`th request of kind `kind`: method and URL path.
fn request(shape: &Shape, kind: usize, pick: u64) -> (Method, String) {
    match kind {
        0 => {
            let (repo, tag) = shape.tagged(pick);
            (Method::GET, format!("/v2/{repo}/manifests/{tag}"))
        }
        1 => {
            // From the middle of the big repository's tags.
            let last = seed::big_tag(shape.big_tags / 2 + pick % 50);
            (
                Method::GET,
                format!("/v2/{}/tags/list?n={PAGE}&last={last}", seed::repo_name(0)),
            )
        }
        2 => {
            let last = seed::repo_name(shape.repositories / 2 + pick % 50);
            (Method::GET, format!("/v2/_catalog?n={PAGE}&last={last}"))
        }
        _ => {
            let (repo, digest) = shape.linked_blob(pick);
            (Method::HEAD, format!("/v2/{repo}/blobs/{digest}"))
        }
    }
}

/// [`WARM_UP`] then [`REQUESTS`] requests of one kind, [`CONCURRENCY`] at a time; any
/// answer but 200 fails the run.
async fn requests(http: &Client, base: &str, shape: &Shape, kind: usize) -> Result<Latencies> {
    let shape = Arc::new(*shape);
    let mut seed = 0x5ca1e + kind as u64;
    for (count, measured) in [(WARM_UP, false), (REQUESTS, true)] {
        let started = Instant::now();
        let mut workers = Vec::new();
        for w in 0..CONCURRENCY {
            let (http, base, shape) = (http.clone(), base.to_owned(), shape.clone());
            let mut picks = Picks(seed.wrapping_mul(31).wrapping_add(w as u64));
            let share = count / CONCURRENCY + usize::from(w < count % CONCURRENCY);
            workers.push(tokio::spawn(async move {
                let mut samples = Vec::with_capacity(share);
                for _ in 0..share {
                    let (method, path) = request(&shape, kind, picks.next());
                    let started = Instant::now();
                    let response = http
                        .request(method, format!("{base}{path}"))
                        .header(header::ACCEPT, MANIFEST_ACCEPT)
                        .send()
                        .await?;
                    let status = response.status();
                    let body = response.bytes().await?;
                    samples.push(started.elapsed());
                    if !status.is_success() {
                        bail!(
                            "{path}: {status}: {:.300}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                }
                anyhow::Ok(samples)
            }));
        }
        let mut samples = Vec::with_capacity(count);
        for worker in workers {
            samples.extend(worker.await??);
        }
        if measured {
            return Ok(Latencies::new(samples, started.elapsed()));
        }
        seed += 1000;
    }
    unreachable!("the measured round returns")
}

fn store_title(store: &str) -> &'static str {
    match store {
        POSTGRES => "PostgreSQL metadata (embedded blob store)",
        _ => "Embedded metadata (SQLite, embedded blob store)",
    }
}

fn size_label(rows: u64) -> String {
    match rows {
        0 => format!("empty ({} blobs)", Shape::for_rows(0).blobs),
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

impl ScaleReport {
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "p99 of {} requests per kind at concurrency {} (after {} warm-up requests); \
             GC: one `ipfs-registry gc` pass (untagged retention {UNTAGGED_RETENTION}), wall time.\n",
            self.requests, self.concurrency, WARM_UP
        );
        for store in [POSTGRES, EMBEDDED] {
            let runs: Vec<&Run> = self.runs.iter().filter(|r| r.store == store).collect();
            let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
                continue;
            };
            out.push_str(&format!("\n#### {}\n\n| |", store_title(store)));
            for run in &runs {
                out.push_str(&format!(" {} |", size_label(run.rows)));
            }
            out.push_str(&format!(
                " ratio ({} / empty) |\n|---|{}---|\n",
                size_label(last.rows),
                "---:|".repeat(runs.len())
            ));
            for kind in REQUEST_KINDS {
                out.push_str(&format!("| {kind} p99 (ms) |"));
                for run in &runs {
                    out.push_str(&format!(" {:.2} |", run.p99_ms[kind]));
                }
                out.push_str(&format!(
                    " {:.2}× |\n",
                    last.p99_ms[kind] / first.p99_ms[kind]
                ));
            }
            out.push_str("| GC pass (s) |");
            for run in &runs {
                out.push_str(&format!(" {:.2} |", run.gc.seconds));
            }
            // Linearity: time grown over rows grown, between the two largest sets.
            match runs.len() {
                n if n >= 3 => {
                    let previous = runs[n - 2];
                    out.push_str(&format!(
                        " {:.2}× for {:.0}× rows |\n",
                        last.gc.seconds / previous.gc.seconds,
                        last.shape.blobs as f64 / previous.shape.blobs as f64
                    ));
                }
                _ => out.push_str(&format!(" {:.2}× |\n", last.gc.seconds / first.gc.seconds)),
            }
            out.push_str("| GC removed (manifests / blobs / links) |");
            for run in &runs {
                let g = run.gc.removed;
                out.push_str(&format!(" {} / {} / {} |", g.manifests, g.blobs, g.links));
            }
            out.push_str(" |\n| seeding (s) |");
            for run in &runs {
                out.push_str(&format!(" {:.1} |", run.seed_seconds));
            }
            out.push_str(" |\n");
        }
        out
    }
}
