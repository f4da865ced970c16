//! The workload, as any OCI client performs it, against one registry's base URL. Nothing
//! here knows which registry it talks to.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use futures::{stream, Stream, StreamExt, TryStreamExt};
use reqwest::{header, Client, Response, StatusCode};

use crate::data;
use crate::stats::Latencies;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// What clients send when pulling a manifest by tag.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// One HTTP client for every phase: keep-alive connections, as clients use them.
pub fn client(request_timeout: Duration) -> Result<Client> {
    client_from(request_timeout, None)
}

/// A client whose connections come from `local` (a loopback address of its own stands for
/// another machine: registries share their limits out per client address).
pub fn client_from(request_timeout: Duration, local: Option<std::net::IpAddr>) -> Result<Client> {
    Ok(Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(request_timeout)
        .tcp_nodelay(true)
        .local_address(local)
        .build()?)
}

/// A location header resolved against the registry's base URL (it may be relative).
fn location(base: &str, response: &Response) -> Result<String> {
    let value = response
        .headers()
        .get(header::LOCATION)
        .context("no Location header")?
        .to_str()?;
    Ok(reqwest::Url::parse(base)?.join(value)?.to_string())
}

fn with_digest(location: &str, digest: &str) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!("{location}{separator}digest={digest}")
}

pub async fn expect(response: Response, status: StatusCode, what: &str) -> Result<Response> {
    if response.status() != status {
        let got = response.status();
        let body = response.text().await.unwrap_or_default();
        bail!("{what}: expected {status}, got {got}: {body:.300}");
    }
    Ok(response)
}

async fn start_upload(http: &Client, base: &str, repo: &str) -> Result<String> {
    let response = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await?;
    let response = expect(response, StatusCode::ACCEPTED, "POST upload").await?;
    location(base, &response)
}

/// Monolithic push: POST a session, then one PUT with the whole body. Returns its time.
pub async fn push_monolithic(
    http: &Client,
    base: &str,
    repo: &str,
    blob: &Bytes,
    digest: &str,
) -> Result<Duration> {
    let started = Instant::now();
    let session = start_upload(http, base, repo).await?;
    let response = http
        .put(with_digest(&session, digest))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(blob.clone())
        .send()
        .await?;
    expect(response, StatusCode::CREATED, "PUT blob").await?;
    Ok(started.elapsed())
}

/// Monolithic push of a body streamed from `body` (never held whole by the client).
pub async fn push_streamed<S>(
    http: &Client,
    base: &str,
    repo: &str,
    body: S,
    length: u64,
    digest: &str,
) -> Result<Duration>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
{
    let started = Instant::now();
    let session = start_upload(http, base, repo).await?;
    let response = http
        .put(with_digest(&session, digest))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, length)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    expect(response, StatusCode::CREATED, "PUT streamed blob").await?;
    Ok(started.elapsed())
}

/// A chunked push: its whole time, and the time of its last request alone (the `PUT` after
/// the last `PATCH`, which the registry answers only once the blob is assembled and
/// stored: what a client, or an ingress with a response timeout, waits for at the end).
pub struct ChunkedPush {
    pub elapsed: Duration,
    pub completion: Duration,
    /// When the `PUT` was answered.
    pub answered: Instant,
}

/// Chunked push: POST, PATCH chunks of `chunk` bytes with Content-Range, PUT the digest.
pub async fn push_chunked(
    http: &Client,
    base: &str,
    repo: &str,
    blob: &Bytes,
    digest: &str,
    chunk: usize,
) -> Result<ChunkedPush> {
    let started = Instant::now();
    let mut session = start_upload(http, base, repo).await?;
    for offset in (0..blob.len()).step_by(chunk) {
        let end = (offset + chunk).min(blob.len());
        let response = http
            .patch(&session)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_RANGE, format!("{}-{}", offset, end - 1))
            .body(blob.slice(offset..end))
            .send()
            .await?;
        let response = expect(response, StatusCode::ACCEPTED, "PATCH chunk").await?;
        session = location(base, &response)?;
    }
    let completing = Instant::now();
    let response = http.put(with_digest(&session, digest)).send().await?;
    expect(response, StatusCode::CREATED, "PUT to complete").await?;
    Ok(ChunkedPush {
        elapsed: started.elapsed(),
        completion: completing.elapsed(),
        answered: Instant::now(),
    })
}

/// A pulled blob: the time to read it whole.
pub struct Pulled {
    pub elapsed: Duration,
}

/// GET a blob, streamed and discarded; its length must be `size`.
pub async fn pull(
    http: &Client,
    base: &str,
    repo: &str,
    digest: &str,
    size: u64,
) -> Result<Pulled> {
    let started = Instant::now();
    let response = http
        .get(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .await?;
    let response = expect(response, StatusCode::OK, "GET blob").await?;
    let received = response
        .bytes_stream()
        .try_fold(0u64, |n, piece| async move { Ok(n + piece.len() as u64) })
        .await?;
    ensure!(
        received == size,
        "GET blob: {received} bytes, expected {size}"
    );
    Ok(Pulled {
        elapsed: started.elapsed(),
    })
}

/// The IPFS path a registry announces for a blob (`X-Ipfs-Path` of a HEAD), if any.
pub async fn ipfs_path(
    http: &Client,
    base: &str,
    repo: &str,
    digest: &str,
) -> Result<Option<String>> {
    let response = http
        .head(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .await?;
    let response = expect(response, StatusCode::OK, "HEAD blob").await?;
    Ok(response
        .headers()
        .get("x-ipfs-path")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned))
}

/// Pushes a small image (config + one layer) and tags its manifest; returns the manifest.
pub async fn push_small_image(http: &Client, base: &str, repo: &str, tag: &str) -> Result<Bytes> {
    let config = Bytes::from_static(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let layer = data::random_bytes(0x5eed, 4096);
    let mut descriptors = Vec::new();
    for (blob, media_type) in [
        (&config, "application/vnd.oci.image.config.v1+json"),
        (&layer, "application/vnd.oci.image.layer.v1.tar"),
    ] {
        let digest = data::sha256_digest(blob);
        push_monolithic(http, base, repo, blob, &digest).await?;
        descriptors.push(serde_json::json!({
            "mediaType": media_type, "digest": digest, "size": blob.len()
        }));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptors[0],
        "layers": [descriptors[1]],
    }))?;
    let manifest = Bytes::from(manifest);
    put_manifest(http, base, repo, tag, &manifest).await?;
    Ok(manifest)
}

pub async fn put_manifest(
    http: &Client,
    base: &str,
    repo: &str,
    tag: &str,
    manifest: &Bytes,
) -> Result<()> {
    let response = http
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header(header::CONTENT_TYPE, OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await?;
    expect(response, StatusCode::CREATED, "PUT manifest").await?;
    Ok(())
}

/// Tags `manifest` as `t00000`.. in `repo`, `concurrency` PUTs at a time.
pub async fn tag_many(
    http: &Client,
    base: &str,
    repo: &str,
    manifest: &Bytes,
    count: usize,
    concurrency: usize,
) -> Result<()> {
    stream::iter(0..count)
        .map(|i| async move { put_manifest(http, base, repo, &format!("t{i:05}"), manifest).await })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

/// Closed loop: `concurrency` workers GET `url` back to back until `duration` is over.
pub async fn get_loop(
    http: &Client,
    url: &str,
    accept: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<Latencies> {
    let stop = Instant::now() + duration;
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| async move {
        let mut samples = Vec::new();
        while Instant::now() < stop {
            let sent = Instant::now();
            let response = http.get(url).header(header::ACCEPT, accept).send().await?;
            let response = expect(response, StatusCode::OK, "GET").await?;
            response.bytes().await?;
            samples.push(sent.elapsed());
        }
        anyhow::Ok(samples)
    });
    let per_worker = futures::future::try_join_all(workers).await?;
    Ok(Latencies::new(per_worker.concat(), started.elapsed()))
}

/// Reads a repository's whole tag list as clients do (following `Link` until the end),
/// returns how many tags it saw.
pub async fn list_tags(http: &Client, base: &str, repo: &str) -> Result<usize> {
    let mut url = format!("{base}/v2/{repo}/tags/list");
    let mut seen = 0;
    loop {
        let response = http.get(&url).send().await?;
        let response = expect(response, StatusCode::OK, "GET tags/list").await?;
        let next = response
            .headers()
            .get(header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        let body: serde_json::Value = response.json().await?;
        seen += body["tags"].as_array().map_or(0, Vec::len);
        match next {
            Some(link) => url = reqwest::Url::parse(base)?.join(&link)?.to_string(),
            None => return Ok(seen),
        }
    }
}

/// One page of `n` tags after `last`: what a client paging through a long list costs.
pub async fn list_tags_page(
    http: &Client,
    base: &str,
    repo: &str,
    n: usize,
    last: &str,
) -> Result<usize> {
    let response = http
        .get(format!("{base}/v2/{repo}/tags/list?n={n}&last={last}"))
        .send()
        .await?;
    let response = expect(response, StatusCode::OK, "GET tags/list page").await?;
    let body: serde_json::Value = response.json().await?;
    Ok(body["tags"].as_array().map_or(0, Vec::len))
}

/// `<url>; rel="next"` → url.
fn next_link(value: &str) -> Option<String> {
    value
        .split(',')
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| {
            let start = part.find('<')? + 1;
            let end = part.find('>')?;
            Some(part[start..end].to_owned())
        })
}

/// Repeats `call` until `samples` timings are taken or `budget` is spent.
pub async fn timed<F, Fut>(samples: usize, budget: Duration, mut call: F) -> Result<Latencies>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let started = Instant::now();
    let mut taken = Vec::with_capacity(samples);
    for i in 0..samples {
        if started.elapsed() > budget && taken.len() >= 5 {
            break;
        }
        let sent = Instant::now();
        call(i).await?;
        taken.push(sent.elapsed());
    }
    Ok(Latencies::new(taken, started.elapsed()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn next_links() {
        assert_eq!(
            super::next_link("</v2/a/tags/list?n=2&last=b>; rel=\"next\"").as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(super::next_link("<x>; rel=\"prev\""), None);
    }
}
