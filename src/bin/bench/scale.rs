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
    /// From the start of the process to the end of the metadata sweep (the rest is
    /// unpinning what the sweep released).
    pub sweep_seconds: f64,
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
        let mut registries = Vec::new();
        let outcome = run_store(
            options,
            &registry_bin,
            store,
            &sizes,
            &root,
            &mut registries,
        )
        .await;
        for registry in registries {
            registry.remove(&options.database_url).await;
        }
        match outcome {
            Ok(runs) => report.runs.extend(runs),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(e);
            }
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

/// One seeded registry: its files, its database, and the environment its processes get
/// (as `servers::start_registry` sets it).
struct Registry<'a> {
    bin: &'a Path,
    store: &'static str,
    rows: u64,
    shape: Shape,
    /// The directory `servers::start_registry` is given.
    dir: PathBuf,
    data_dir: PathBuf,
    /// Name and URL.
    database: Option<(String, String)>,
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
        if let Some((_, url)) = &self.database {
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

    async fn remove(self, admin_url: &str) {
        if let Some((name, _)) = &self.database {
            if let Err(e) = servers::drop_database(admin_url, name).await {
                eprintln!("could not drop the scale database {name}: {e:#}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    async fn seed(&self) -> Result<(Counts, f64)> {
        let shape = self.shape;
        eprintln!(
            "scale: {}, {} rows: seeding {} blobs, {} manifests, {} repositories…",
            self.store, self.rows, shape.blobs, shape.manifests, shape.repositories
        );
        self.command("migrate").await?;
        let started = Instant::now();
        let seeded = match &self.database {
            Some((_, url)) => seed::postgres(url, &shape).await?,
            None => {
                let path = self.data_dir.join("metadata.sqlite");
                tokio::task::spawn_blocking(move || seed::sqlite(&path, &shape)).await??
            }
        };
        ensure!(
            seeded == shape.expected(),
            "seeded {seeded:?}, the shape says {:?}",
            shape.expected()
        );
        seed::garbage_files(&self.data_dir.join("blobs"), &shape)?;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!("scale: seeded in {seconds:.1}s: {seeded:?}");
        Ok((seeded, seconds))
    }

    /// One pass of the operator's GC: the online GC is off by default (gc.interval = 0),
    /// so it is the `gc` command, run beside the serving registry.
    async fn gc(&self) -> Result<GcPass> {
        use tokio::io::AsyncBufReadExt;
        let mut command = tokio::process::Command::new(self.bin);
        command
            .arg("gc")
            .env_clear()
            .env("IPFS_REGISTRY_DATA_DIR", &self.data_dir)
            .env("IPFS_REGISTRY_LOG", "warn")
            .env("IPFS_REGISTRY_GC__UNTAGGED_RETENTION", UNTAGGED_RETENTION)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some((_, url)) = &self.database {
            command.env("IPFS_REGISTRY_DATABASE__URL", url);
        }
        let started = Instant::now();
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().context("gc stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut output = String::new();
        // The command prints each phase as it starts: the sweep ends at "gc: metadata:".
        let mut sweep_seconds = f64::NAN;
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("gc: metadata:") {
                sweep_seconds = started.elapsed().as_secs_f64();
            }
            output.push_str(&line);
            output.push('\n');
        }
        let finished = child.wait_with_output().await?;
        let seconds = started.elapsed().as_secs_f64();
        ensure!(
            finished.status.success(),
            "ipfs-registry gc failed ({}): {output}{}",
            finished.status,
            String::from_utf8_lossy(&finished.stderr)
        );
        let mut gc = parse_gc(&output, seconds)?;
        gc.sweep_seconds = sweep_seconds;
        eprintln!(
            "scale: {} {} rows: GC {seconds:.2}s: {:?}",
            self.store, self.rows, gc.removed
        );
        // Anything else means the seeded graph is not what GC sees in pushed data.
        ensure!(
            gc.removed == self.shape.garbage(),
            "GC removed {:?}, the seeded garbage is {:?}:\n{output}",
            gc.removed,
            self.shape.garbage()
        );
        Ok(gc)
    }
}

/// Seeds one registry of `store` per size, serves them all at once, measures them
/// interleaved (so that whatever else the machine does falls on every size alike), then
/// runs one GC pass on each.
async fn run_store<'a>(
    options: &Options,
    bin: &'a Path,
    store: &'static str,
    sizes: &[u64],
    root: &Path,
    registries: &mut Vec<Registry<'a>>,
) -> Result<Vec<Run>> {
    let mut seeded = Vec::new();
    for &rows in sizes {
        let dir = root.join(format!("{store}-{rows}"));
        std::fs::create_dir_all(&dir)?;
        let database = match store {
            POSTGRES => Some(create_database(&options.database_url, rows).await?),
            _ => None,
        };
        registries.push(Registry {
            bin,
            store,
            rows,
            shape: Shape::for_rows(rows),
            data_dir: dir.join(format!("{store}-data")),
            dir,
            database,
        });
        let registry = registries.last().context("just pushed")?;
        seeded.push(registry.seed().await?);
    }
    let mut servers = Vec::new();
    for registry in registries.iter() {
        servers.push(
            servers::start_registry(
                store,
                bin,
                &registry.dir,
                registry.database.as_ref().map(|d| d.1.as_str()),
                None,
            )
            .await?,
        );
    }
    let http = Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()?;
    let mut p50_ms = vec![BTreeMap::new(); registries.len()];
    let mut p99_ms = vec![BTreeMap::new(); registries.len()];
    for (k, kind) in REQUEST_KINDS.iter().enumerate() {
        let bases: Vec<&str> = servers.iter().map(|s| s.base.as_str()).collect();
        let shapes: Vec<Shape> = registries.iter().map(|r| r.shape).collect();
        let latencies = interleaved(&http, &bases, &shapes, k).await?;
        for (i, latencies) in latencies.iter().enumerate() {
            p50_ms[i].insert(kind.to_string(), latencies.percentile_ms(50.0));
            p99_ms[i].insert(kind.to_string(), latencies.percentile_ms(99.0));
        }
        eprintln!(
            "scale: {store} {kind} p99: {:?}",
            p99_ms.iter().map(|p| p[*kind]).collect::<Vec<_>>()
        );
    }
    let mut runs = Vec::new();
    for (i, registry) in registries.iter().enumerate() {
        let gc = registry.gc().await?;
        runs.push(Run {
            store,
            rows: registry.rows,
            shape: registry.shape,
            seeded: seeded[i].0,
            seed_seconds: seeded[i].1,
            p50_ms: p50_ms[i].clone(),
            p99_ms: p99_ms[i].clone(),
            gc,
        });
    }
    for server in servers {
        server.stop().await;
    }
    Ok(runs)
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
        sweep_seconds: f64::NAN,
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
    let name = format!("bench_scale_{}_{rows}", std::process::id());
    let url = servers::create_named_database(admin_url, &name).await?;
    Ok((name, url))
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

/// Rounds the requests of one kind are split into, each registry taking its share of a
/// round in turn (the order rotating).
const ROUNDS: usize = 20;

/// [`WARM_UP`] requests to each registry, then [`REQUESTS`] to each in [`ROUNDS`]
/// interleaved rounds, [`CONCURRENCY`] at a time; any answer but 200 fails the run.
async fn interleaved(
    http: &Client,
    bases: &[&str],
    shapes: &[Shape],
    kind: usize,
) -> Result<Vec<Latencies>> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); bases.len()];
    let mut walls = vec![Duration::ZERO; bases.len()];
    for (i, base) in bases.iter().enumerate() {
        batch(http, base, &shapes[i], kind, WARM_UP, i as u64).await?;
    }
    for round in 0..ROUNDS {
        for offset in 0..bases.len() {
            let i = (round + offset) % bases.len();
            let started = Instant::now();
            let seed = ((round + 1) * 1000 + i) as u64;
            samples[i]
                .extend(batch(http, bases[i], &shapes[i], kind, REQUESTS / ROUNDS, seed).await?);
            walls[i] += started.elapsed();
        }
    }
    Ok(samples
        .into_iter()
        .zip(walls)
        .map(|(s, wall)| Latencies::new(s, wall))
        .collect())
}

/// `count` requests of one kind, [`CONCURRENCY`] at a time: their latencies.
async fn batch(
    http: &Client,
    base: &str,
    shape: &Shape,
    kind: usize,
    count: usize,
    seed: u64,
) -> Result<Vec<Duration>> {
    let shape = Arc::new(*shape);
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let (http, base, shape) = (http.clone(), base.to_owned(), shape.clone());
        let mut picks = Picks(
            seed.wrapping_mul(0x5ca1e)
                .wrapping_add(w as u64 * 7919 + kind as u64),
        );
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
                    bail!("{path}: {status}: {:.300}", String::from_utf8_lossy(&body));
                }
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::with_capacity(count);
    for worker in workers {
        samples.extend(worker.await??);
    }
    Ok(samples)
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
            "p99 of {} requests per kind and registry at concurrency {} (after {} warm-up requests), \
             the registries of one store served at once and measured interleaved in {ROUNDS} rounds; \
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
            out.push_str("| … of which metadata sweep (s) |");
            for run in &runs {
                out.push_str(&format!(" {:.2} |", run.gc.sweep_seconds));
            }
            out.push_str(&format!(
                " {:.2}× |\n",
                last.gc.sweep_seconds / first.gc.sweep_seconds
            ));
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
