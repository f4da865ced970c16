//! The benchmark's phases, each run against every server in turn (interleaved per
//! iteration, the order rotating, so drift on a shared machine hits all alike), each within
//! its own share of the time left.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use reqwest::Client;

use crate::data;
use crate::ipfs::Node;
use crate::report::{Better, Report, KUBO, NODE};
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

/// Push (monolithic and chunked) and pull throughput per layer size, and the IPFS node's
/// own add and cat throughput on layers of the same size.
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
        let mut samples: Vec<[Vec<f64>; 3]> = vec![Default::default(); servers.len()];
        // Seconds of each chunked push's completing PUT.
        let mut completions: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
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
            let gigabytes = size as f64 / 1e9 * m.len().max(1) as f64;
            report.set_samples(&mono, "MB/s", server.name, m);
            report.set_samples(&chunked, "MB/s", server.name, c);
            report.set_samples(&pull, "MB/s", server.name, p);
            for (metric, seconds) in [(&mono, cpu[0]), (&chunked, cpu[1]), (&pull, cpu[2])] {
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
    for server in servers {
        workload::push_small_image(http, &server.base, repo, "v1")
            .await
            .with_context(|| format!("{}: pushing the manifest image", server.name))?;
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
    for server in servers {
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
    for server in servers {
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
    for server in servers {
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

/// The targets of issue 7, checked against what was measured.
pub fn targets(report: &mut Report, plan: &Plan) {
    use crate::report::{DISTRIBUTION, EMBEDDED};
    for &mib in &plan.layers_mib {
        for metric in [
            format!("push monolithic {mib} MiB"),
            format!("push chunked {mib} MiB ({} MiB chunks)", plan.chunk_mib),
            format!("pull {mib} MiB"),
        ] {
            let ratio = report.ratio(&metric, EMBEDDED, &metric, DISTRIBUTION);
            report.target(
                format!("embedded {metric} ≥ 1.0x distribution"),
                ratio,
                1.0,
                true,
                "x",
            );
        }
    }
    let c16 = "manifest GET c=16";
    let ratio = report.ratio(c16, EMBEDDED, c16, DISTRIBUTION);
    report.target(
        format!("embedded {c16} req/s ≥ 2x distribution"),
        ratio,
        2.0,
        true,
        "x",
    );
    for &mib in &plan.layers_mib {
        for (metric, what) in [
            (format!("push monolithic {mib} MiB"), "node add"),
            (
                format!("push chunked {mib} MiB ({} MiB chunks)", plan.chunk_mib),
                "node add",
            ),
            (format!("pull {mib} MiB"), "node cat"),
        ] {
            let ratio = report.ratio(&metric, KUBO, &metric, NODE);
            report.target(
                format!("kubo {metric} ≥ 0.85x {what}"),
                ratio,
                0.85,
                true,
                "x",
            );
        }
    }
    for system in [EMBEDDED, KUBO, DISTRIBUTION] {
        for suffix in ["p99", "page n=100, p99"] {
            let many = format!("tags/list, {} tags, {suffix}", plan.tags);
            let few = format!("tags/list, 10 tags, {suffix}");
            let ratio = report.ratio(&many, system, &few, system);
            report.target(
                format!(
                    "{system} tags/list {suffix}: {} tags ≤ 2x 10 tags",
                    plan.tags
                ),
                ratio,
                2.0,
                false,
                "x",
            );
        }
    }
    let metric = format!(
        "peak RSS, push + pull of one {} MiB layer",
        plan.memory_layer_mib
    );
    for system in [EMBEDDED, KUBO] {
        let value = report.value(&metric, system);
        report.target(
            format!("{system} {metric} < 150 MiB"),
            value,
            150.0,
            false,
            " MiB",
        );
    }
}
