//! The benchmark's phases, each run against every server in turn (interleaved per
//! iteration, the order rotating, so drift on a shared machine hits all alike), each within
//! its own share of the time left.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use reqwest::Client;

use crate::data;
use crate::ipfs::Node;
use crate::report::{Better, Report, EMBEDDED, KUBO, NODE};
use crate::servers::Server;
use crate::stats::megabytes_per_second;
use crate::workload;

const MIB: u64 = 1024 * 1024;

/// What the phases need besides the servers.
pub struct Plan {
    pub layers_mib: Vec<u64>,
    pub iterations: usize,
    pub chunk_mib: u64,
    pub get_duration: Duration,
    pub concurrencies: Vec<usize>,
    pub tags: usize,
    pub list_samples: usize,
    pub memory_layer_mib: u64,
    /// Pushes in flight at once in the concurrent-push row, and their layers' size.
    pub concurrent_pushes: usize,
    pub concurrent_layer_mib: u64,
    /// Whether the Kubo-mode registry takes part in the concurrent-push row.
    pub concurrent_kubo: bool,
}

/// The end of the whole run, and the share of what is left that a phase may take.
pub struct Deadline(pub Instant);

impl Deadline {
    pub fn phase(&self, share: f64) -> Instant {
        let left = self.0.saturating_duration_since(Instant::now());
        Instant::now() + left.mul_f64(share)
    }
}

/// `servers` in an order rotated by `i`.
fn rotated(servers: &[Server], i: usize) -> impl Iterator<Item = &Server> {
    let n = servers.len().max(1);
    (0..servers.len()).map(move |k| &servers[(k + i) % n])
}

/// The registries among `servers` (not the static file server).
fn registries(servers: &[Server]) -> Vec<&Server> {
    servers.iter().filter(|s| s.is_registry()).collect()
}

/// Writes `bytes` where a static file server serves `/v2/<path>`.
fn write_served(root: &std::path::Path, path: &str, bytes: &[u8]) -> Result<std::path::PathBuf> {
    let file = root.join("v2").join(path);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&file, bytes)?;
    Ok(file)
}

/// Push (monolithic and chunked) and pull throughput per layer size, and the IPFS node's
/// own add and cat throughput on layers of the same size. A static file server takes the
/// pulls only: the same bytes, written as a file at the blob's URL path beforehand.
pub async fn push_pull(
    http: &Client,
    servers: &[Server],
    node: Option<&Node>,
    plan: &Plan,
    end: Instant,
    report: &mut Report,
) -> Result<()> {
    let chunk = (plan.chunk_mib * MIB) as usize;
    for (s, &mib) in plan.layers_mib.iter().enumerate() {
        let size = mib * MIB;
        let mono = format!("push monolithic {mib} MiB");
        let chunked = format!("push chunked {mib} MiB ({} MiB chunks)", plan.chunk_mib);
        let pull = format!("pull {mib} MiB");
        let completed = format!(
            "push chunked {mib} MiB ({} MiB chunks): PUT after the last PATCH",
            plan.chunk_mib
        );
        let pinned_after = format!(
            "push chunked {mib} MiB ({} MiB chunks): recursive pin after the answer",
            plan.chunk_mib
        );
        let mut samples: Vec<[Vec<f64>; 3]> = vec![Default::default(); servers.len()];
        // Seconds of each chunked push's completing PUT.
        let mut completions: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
        // Seconds from the answer of a Kubo-mode chunked push to its blob's recursive pin.
        let mut pins_after = Vec::new();
        // CPU seconds each server spent per operation kind, over all iterations.
        let mut cpu = vec![[0.0f64; 3]; servers.len()];
        let (mut adds, mut cats) = (Vec::new(), Vec::new());
        // Earlier sizes must not eat the later ones' time.
        let size_end = Instant::now()
            + end
                .saturating_duration_since(Instant::now())
                .div_f64((plan.layers_mib.len() - s) as f64);
        for i in 0..plan.iterations {
            if i > 0 && Instant::now() > size_end {
                report.notes.push(format!(
                    "{mib} MiB layers: {i} of {} iterations within the phase's time",
                    plan.iterations
                ));
                break;
            }
            // Fresh bytes each time: every registry (rightly) skips storing a digest it has.
            let seed = mib * 1000 + i as u64 * 10;
            let whole = data::random_bytes(seed, size as usize);
            let whole_digest = data::sha256_digest(&whole);
            let parts = data::random_bytes(seed + 1, size as usize);
            let parts_digest = data::sha256_digest(&parts);
            for server in rotated(servers, i) {
                let k = servers
                    .iter()
                    .position(|x| x.name == server.name)
                    .unwrap_or(0);
                let repo = format!("bench/layers-{mib}");
                if let Some(root) = &server.files {
                    let file = write_served(root, &format!("{repo}/blobs/{whole_digest}"), &whole)?;
                    let cpu_start = server.cpu_seconds()?;
                    let pulled = workload::pull(http, &server.base, &repo, &whole_digest, size)
                        .await
                        .with_context(|| format!("{}: {pull}", server.name))?;
                    samples[k][2].push(megabytes_per_second(size, pulled.elapsed));
                    cpu[k][2] += server.cpu_seconds()? - cpu_start;
                    std::fs::remove_file(file)?;
                    continue;
                }
                let cpu_start = server.cpu_seconds()?;
                let t = workload::push_monolithic(http, &server.base, &repo, &whole, &whole_digest)
                    .await
                    .with_context(|| format!("{}: {mono}", server.name))?;
                samples[k][0].push(megabytes_per_second(size, t));
                let cpu_mono = server.cpu_seconds()?;
                cpu[k][0] += cpu_mono - cpu_start;
                let pushed =
                    workload::push_chunked(http, &server.base, &repo, &parts, &parts_digest, chunk)
                        .await
                        .with_context(|| format!("{}: {chunked}", server.name))?;
                samples[k][1].push(megabytes_per_second(size, pushed.elapsed));
                completions[k].push(pushed.completion.as_secs_f64());
                let cpu_chunked = server.cpu_seconds()?;
                cpu[k][1] += cpu_chunked - cpu_mono;
                if let (KUBO, Some(node)) = (server.name, node) {
                    // The node's walk of the joined blob runs after the answer: waited
                    // for (and reported), so the pull below is measured alone.
                    let path = workload::ipfs_path(http, &server.base, &repo, &parts_digest)
                        .await?
                        .context("the Kubo-mode registry names no IPFS path")?;
                    let cid = path.trim_start_matches("/ipfs/");
                    node.wait_pinned(http, cid).await?;
                    pins_after.push(pushed.answered.elapsed().as_secs_f64());
                }
                let pulled = workload::pull(http, &server.base, &repo, &whole_digest, size)
                    .await
                    .with_context(|| format!("{}: {pull}", server.name))?;
                samples[k][2].push(megabytes_per_second(size, pulled.elapsed));
                cpu[k][2] += server.cpu_seconds()? - cpu_chunked;
                if server.name == KUBO {
                    if let Some(node) = node {
                        unpin_through(http, node, server, &repo, &[&whole_digest, &parts_digest])
                            .await;
                    }
                }
            }
            if let Some(node) = node {
                // Bytes of their own: the node would otherwise find every block present.
                let own = data::random_bytes(seed + 2, size as usize);
                let (t, cid) = node.add(http, &own).await.context("IPFS node add")?;
                adds.push(megabytes_per_second(size, t));
                let t = node.cat(http, &cid, size).await.context("IPFS node cat")?;
                cats.push(megabytes_per_second(size, t));
                node.unpin(http, &cid).await;
            }
        }
        for ((server, [m, c, p]), cpu) in servers.iter().zip(samples).zip(cpu) {
            // Per GB moved, so sizes and iteration counts compare.
            let gigabytes = size as f64 / 1e9 * p.len().max(1) as f64;
            let pushes = server.is_registry();
            if pushes {
                report.set_samples(&mono, "MB/s", server.name, m);
                report.set_samples(&chunked, "MB/s", server.name, c);
            } else {
                // The rows in their usual order, before the pull's.
                report.declare(&mono, "MB/s", Better::Higher);
                report.declare(&chunked, "MB/s", Better::Higher);
            }
            report.set_samples(&pull, "MB/s", server.name, p);
            for (metric, seconds) in [(&mono, cpu[0]), (&chunked, cpu[1]), (&pull, cpu[2])] {
                if !pushes && metric != &pull {
                    continue;
                }
                report.set(
                    &format!("{metric}: server CPU"),
                    "s/GB",
                    Better::Lower,
                    server.name,
                    seconds / gigabytes,
                );
            }
        }
        // After the throughput rows, which come first in the table.
        for (server, seconds) in servers.iter().zip(&completions) {
            if !seconds.is_empty() {
                let median = crate::stats::median(seconds);
                report.set(&completed, "s", Better::Lower, server.name, median);
            }
        }
        if !pins_after.is_empty() {
            let median = crate::stats::median(&pins_after);
            report.set(&pinned_after, "s", Better::Lower, KUBO, median);
        }
        if node.is_some() {
            report.set_samples(&mono, "MB/s", NODE, adds.clone());
            report.set_samples(&chunked, "MB/s", NODE, adds);
            report.set_samples(&pull, "MB/s", NODE, cats);
        }
    }
    Ok(())
}

/// Drops the node's pins of blobs pushed through the Kubo-mode registry (their CIDs come
/// from the registry's `X-Ipfs-Path`).
async fn unpin_through(http: &Client, node: &Node, server: &Server, repo: &str, digests: &[&str]) {
    for digest in digests {
        if let Ok(Some(path)) = workload::ipfs_path(http, &server.base, repo, digest).await {
            if let Some(cid) = path.strip_prefix("/ipfs/") {
                node.unpin(http, cid).await;
            }
        }
    }
}

/// GET of a manifest by tag in a closed loop at each concurrency.
pub async fn manifest_get(
    http: &Client,
    servers: &[Server],
    plan: &Plan,
    report: &mut Report,
) -> Result<()> {
    let repo = "bench/manifest";
    let mut manifest = None;
    for server in registries(servers) {
        let pushed = workload::push_small_image(http, &server.base, repo, "v1")
            .await
            .with_context(|| format!("{}: pushing the manifest image", server.name))?;
        manifest = Some(pushed);
    }
    // The same bytes, as a file where a static file server serves the tag's URL.
    for server in servers {
        if let (Some(root), Some(manifest)) = (&server.files, &manifest) {
            write_served(root, &format!("{repo}/manifests/v1"), manifest)?;
        }
    }
    for (i, &c) in plan.concurrencies.iter().enumerate() {
        for server in rotated(servers, i) {
            let url = format!("{}/v2/{repo}/manifests/v1", server.base);
            let latencies =
                workload::get_loop(http, &url, workload::MANIFEST_ACCEPT, c, plan.get_duration)
                    .await
                    .with_context(|| format!("{}: manifest GET at concurrency {c}", server.name))?;
            let summary = latencies.summary();
            report.set(
                &format!("manifest GET c={c}"),
                "req/s",
                Better::Higher,
                server.name,
                summary.per_second,
            );
            report.set(
                &format!("manifest GET c={c} p50"),
                "ms",
                Better::Lower,
                server.name,
                summary.p50_ms,
            );
            report.set(
                &format!("manifest GET c={c} p99"),
                "ms",
                Better::Lower,
                server.name,
                summary.p99_ms,
            );
        }
    }
    Ok(())
}

/// tags/list on a repository with `plan.tags` tags and on one with 10: the whole list as
/// clients read it, and one page of 100 from the middle.
pub async fn tags_list(
    http: &Client,
    servers: &[Server],
    plan: &Plan,
    end: Instant,
    report: &mut Report,
) -> Result<()> {
    const FEW: usize = 10;
    const PAGE: usize = 100;
    let many_repo = "bench/tags-many";
    let few_repo = "bench/tags-few";
    let servers = registries(servers);
    for server in &servers {
        let started = Instant::now();
        for (repo, count) in [(many_repo, plan.tags), (few_repo, FEW)] {
            let manifest = workload::push_small_image(http, &server.base, repo, "base")
                .await
                .with_context(|| format!("{}: pushing the image to tag", server.name))?;
            workload::tag_many(http, &server.base, repo, &manifest, count, 16)
                .await
                .with_context(|| format!("{}: tagging {count} times", server.name))?;
        }
        report.set(
            &format!("PUT manifest ×{} tags (16 concurrent)", plan.tags),
            "s",
            Better::Lower,
            server.name,
            started.elapsed().as_secs_f64(),
        );
    }
    let each = end
        .saturating_duration_since(Instant::now())
        .div_f64((servers.len() * 4).max(1) as f64);
    for server in &servers {
        let base = &server.base;
        for (repo, count, label) in [
            (many_repo, plan.tags + 1, plan.tags),
            (few_repo, FEW + 1, FEW),
        ] {
            let whole = workload::timed(plan.list_samples, each, |_| async move {
                let seen = workload::list_tags(http, base, repo).await?;
                anyhow::ensure!(
                    seen == count,
                    "tags/list returned {seen} tags, expected {count}"
                );
                Ok(())
            })
            .await
            .with_context(|| format!("{}: tags/list of {label}", server.name))?;
            report.set(
                &format!("tags/list, {label} tags, p99"),
                "ms",
                Better::Lower,
                server.name,
                whole.percentile_ms(99.0),
            );
            let last = format!("t{:05}", label / 2);
            // After t<label/2>: the numbered tags above it ("base" sorts first).
            let expected = PAGE.min(label - label / 2 - 1);
            let probe = workload::list_tags_page(http, base, repo, PAGE, &last).await?;
            if probe != expected {
                // distribution 2.x ignores n and last on tags/list (paging came in 3.0).
                report.notes.push(format!(
                    "{}: a tags/list page of n={PAGE} after {last} returned {probe} tags, not {expected}: \
                     pagination not supported, no paged number",
                    server.name
                ));
                continue;
            }
            let paged = workload::timed(plan.list_samples, each, |_| {
                let last = last.clone();
                async move {
                    let seen = workload::list_tags_page(http, base, repo, PAGE, &last).await?;
                    anyhow::ensure!(
                        seen == expected,
                        "a page of tags/list returned {seen}, expected {expected}"
                    );
                    Ok(())
                }
            })
            .await
            .with_context(|| format!("{}: a page of tags/list of {label}", server.name))?;
            report.set(
                &format!("tags/list, {label} tags, page n={PAGE}, p99"),
                "ms",
                Better::Lower,
                server.name,
                paged.percentile_ms(99.0),
            );
        }
    }
    web_ui(http, &servers, many_repo, plan, each, report).await
}

/// The web UI's pages for people (ours only): the repository list, and the page of the
/// repository with `plan.tags` tags (its first page of tags, with their sizes, platforms
/// and push times).
async fn web_ui(
    http: &Client,
    servers: &[&Server],
    many_repo: &str,
    plan: &Plan,
    each: std::time::Duration,
    report: &mut Report,
) -> Result<()> {
    for server in servers
        .iter()
        .filter(|s| s.name == EMBEDDED || s.name == KUBO)
    {
        for (label, path, expected) in [
            (
                format!("UI repository page, {} tags, p99", plan.tags),
                format!("/ui/repo/{many_repo}"),
                many_repo,
            ),
            (
                "UI repository list, p99".to_owned(),
                "/ui/".to_owned(),
                many_repo,
            ),
        ] {
            let url = format!("{}{path}", server.base);
            let latencies = workload::timed(plan.list_samples, each, |_| {
                let url = url.clone();
                async move {
                    let response = http.get(&url).send().await?;
                    let response =
                        workload::expect(response, reqwest::StatusCode::OK, "GET a UI page")
                            .await?;
                    let page = response.text().await?;
                    anyhow::ensure!(page.contains(expected), "{url} does not show {expected}");
                    Ok(())
                }
            })
            .await
            .with_context(|| format!("{}: {path}", server.name))?;
            report.set(
                &label,
                "ms",
                Better::Lower,
                server.name,
                latencies.percentile_ms(99.0),
            );
        }
    }
    Ok(())
}

/// Peak resident memory: over the run so far, then while one large layer is pushed
/// (streamed, monolithic) and pulled, each server alone.
pub async fn memory(
    http: &Client,
    servers: &[Server],
    node: Option<&Node>,
    plan: &Plan,
    report: &mut Report,
) -> Result<()> {
    let servers = registries(servers);
    for server in &servers {
        report.set(
            "peak RSS, whole run before this row",
            "MiB",
            Better::Lower,
            server.name,
            server.peak_rss_mib()?,
        );
    }
    let mib = plan.memory_layer_mib;
    let size = mib * MIB;
    let seed = 0xB16_B10B;
    let digest = data::sha256_of_stream(seed, size);
    let metric = format!("peak RSS, push + pull of one {mib} MiB layer");
    for server in servers {
        server.reset_peak_rss()?;
        let repo = "bench/memory";
        workload::push_streamed(
            http,
            &server.base,
            repo,
            data::random_stream(seed, size),
            size,
            &digest,
        )
        .await
        .with_context(|| format!("{}: pushing {mib} MiB", server.name))?;
        workload::pull(http, &server.base, repo, &digest, size)
            .await
            .with_context(|| format!("{}: pulling {mib} MiB", server.name))?;
        report.set(
            &metric,
            "MiB",
            Better::Lower,
            server.name,
            server.peak_rss_mib()?,
        );
        if server.name == KUBO {
            if let Some(node) = node {
                unpin_through(http, node, server, repo, &[&digest]).await;
            }
        }
    }
    Ok(())
}

/// The concurrent-push row's name.
pub fn concurrent_metric(plan: &Plan) -> String {
    format!(
        "push {} × {} MiB concurrently (aggregate)",
        plan.concurrent_pushes, plan.concurrent_layer_mib
    )
}

/// A server of its own for one turn of the concurrent-push row, and the directory to
/// remove once it is stopped; `None`: the turn goes to the server of the run.
pub type Fresh = Option<(Server, std::path::PathBuf)>;

/// Aggregate throughput of `plan.concurrent_pushes` monolithic pushes in flight at once,
/// each of its own layer to a repository of its own (as many clients pushing at once).
/// The Kubo-mode registry takes part only when `plan.concurrent_kubo` says so. Each turn
/// (system and iteration) may go to a fresh server from `fresh(name, iteration)`, removed
/// with its data after the turn: the row writes 2 GiB per turn by default.
pub async fn concurrent_pushes<F, Fut>(
    http: &Client,
    servers: &[Server],
    node: Option<&Node>,
    plan: &Plan,
    end: Instant,
    report: &mut Report,
    fresh: F,
) -> Result<()>
where
    F: Fn(&'static str, usize) -> Fut,
    Fut: std::future::Future<Output = Result<Fresh>>,
{
    let n = plan.concurrent_pushes;
    if n == 0 {
        return Ok(());
    }
    let size = plan.concurrent_layer_mib * MIB;
    let metric = concurrent_metric(plan);
    let taking: Vec<&Server> = registries(servers)
        .into_iter()
        .filter(|s| plan.concurrent_kubo || s.name != KUBO)
        .collect();
    if taking.len() < registries(servers).len() {
        report.notes.push(format!(
            "kubo: not in the row \"{metric}\" (--concurrent-kubo adds it)"
        ));
    }
    // 64 clients are 64 addresses (127.0.0.2 on), as 64 machines would be: the registry
    // gives one client address a share of its upload slots only.
    let first = u32::from(std::net::Ipv4Addr::new(127, 0, 0, 2));
    let clients = (0..n)
        .map(|j| {
            let local = std::net::Ipv4Addr::from(first + j as u32);
            workload::client_from(Duration::from_secs(600), Some(local.into()))
        })
        .collect::<Result<Vec<_>>>()?;
    // Every iteration holds all its layers at once; a few iterations are enough for a
    // number that is itself an aggregate of many pushes.
    let iterations = plan.iterations.min(2);
    let mut samples = vec![Vec::new(); taking.len()];
    let mut cpu = vec![0.0f64; taking.len()];
    for i in 0..iterations {
        if i > 0 && Instant::now() > end {
            report.notes.push(format!(
                "{metric}: {i} of {iterations} iterations within the phase's time"
            ));
            break;
        }
        let layers: Vec<(bytes::Bytes, String)> = (0..n)
            .map(|j| {
                let blob = data::random_bytes(0xC0C0 + (i * n + j) as u64, size as usize);
                let digest = data::sha256_digest(&blob);
                (blob, digest)
            })
            .collect();
        for r in 0..taking.len() {
            let k = (r + i) % taking.len();
            let own = fresh(taking[k].name, i).await?;
            let server = own.as_ref().map_or(taking[k], |(server, _)| server);
            // The previous system's 2 GiB may still be in the page cache, dirty
            // (distribution does not fsync): written back now, not during this turn.
            let _ = tokio::process::Command::new("sync").status().await;
            let cpu_start = server.cpu_seconds()?;
            let started = Instant::now();
            let pushes = layers.iter().zip(&clients).enumerate().map(
                |(j, ((blob, digest), client))| async move {
                    let repo = format!("bench/concurrent-{j}");
                    workload::push_monolithic(client, &server.base, &repo, blob, digest).await
                },
            );
            futures::future::try_join_all(pushes)
                .await
                .with_context(|| format!("{}: {metric}", server.name))?;
            samples[k].push(megabytes_per_second(size * n as u64, started.elapsed()));
            cpu[k] += server.cpu_seconds()? - cpu_start;
            if server.name == KUBO {
                if let Some(node) = node {
                    for (j, (_, digest)) in layers.iter().enumerate() {
                        let repo = format!("bench/concurrent-{j}");
                        unpin_through(http, node, server, &repo, &[digest]).await;
                    }
                }
            }
            if let Some((server, dir)) = own {
                server.stop().await;
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
        }
    }
    for ((server, samples), seconds) in taking.iter().zip(samples).zip(cpu) {
        let gigabytes = (size * n as u64) as f64 / 1e9 * samples.len().max(1) as f64;
        report.set_samples(&metric, "MB/s", server.name, samples);
        report.set(
            &format!("{metric}: server CPU"),
            "s/GB",
            Better::Lower,
            server.name,
            seconds / gigabytes,
        );
    }
    Ok(())
}
