//! The IPFS node measured on its own: `add` and `cat` of the same bytes the registries
//! get, under the registry's import profile, so the registry's overhead is a number.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use ipfs_registry::blobs::ImportProfile;
use reqwest::Client;

pub struct Node {
    /// `<url>/api/v0/`.
    api: reqwest::Url,
}

impl Node {
    pub fn new(url: &str) -> Result<Node> {
        let mut api = reqwest::Url::parse(url)?;
        api.set_path("/api/v0/");
        Ok(Node { api })
    }

    pub async fn check(&self, http: &Client) -> Result<()> {
        let response = http
            .post(self.api.join("version")?)
            .send()
            .await
            .with_context(|| {
                format!("the IPFS node at {} does not answer (--ipfs-url)", self.api)
            })?;
        ensure!(
            response.status().is_success(),
            "IPFS node: version answered {}",
            response.status()
        );
        Ok(())
    }

    /// Adds (and pins) `data` as the registry does; returns the time and the root CID.
    pub async fn add(&self, http: &Client, data: &Bytes) -> Result<(Duration, String)> {
        let mut query = ImportProfile::default().add_params();
        query.extend([("pin", "true".to_owned()), ("quieter", "true".to_owned())]);
        let part = reqwest::multipart::Part::stream(data.clone())
            .file_name("blob")
            .mime_str("application/octet-stream")?;
        let started = Instant::now();
        let response = http
            .post(self.api.join("add")?)
            .query(&query)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        let elapsed = started.elapsed();
        if !status.is_success() {
            bail!("IPFS add answered {status}: {text:.300}");
        }
        let answer: serde_json::Value =
            serde_json::from_str(text.lines().last().context("IPFS add: empty answer")?)?;
        let cid = answer["Hash"].as_str().context("IPFS add: no Hash")?;
        Ok((elapsed, cid.to_owned()))
    }

    /// Reads `cid` whole; its length must be `size`.
    pub async fn cat(&self, http: &Client, cid: &str, size: u64) -> Result<Duration> {
        let started = Instant::now();
        let response = http
            .post(self.api.join("cat")?)
            .query(&[("arg", cid)])
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "IPFS cat answered {}",
            response.status()
        );
        let received = response
            .bytes_stream()
            .try_fold(0u64, |n, piece| async move { Ok(n + piece.len() as u64) })
            .await?;
        ensure!(
            received == size,
            "IPFS cat: {received} bytes, expected {size}"
        );
        Ok(started.elapsed())
    }

    /// Waits until the node holds a recursive pin of `cid` (a joined blob's, which the
    /// registry makes after answering the push).
    pub async fn wait_pinned(&self, http: &Client, cid: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            let response = http
                .post(self.api.join("pin/ls")?)
                .query(&[("arg", cid), ("type", "recursive")])
                .send()
                .await?;
            if response.status().is_success() {
                return Ok(());
            }
            ensure!(
                started.elapsed() < Duration::from_secs(300),
                "{cid} was not pinned recursively within 300 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Drops a pin the bench made (directly, or through the registry), so repeated runs do
    /// not keep their layers on the node. Errors are ignored: the pin may already be gone.
    pub async fn unpin(&self, http: &Client, cid: &str) {
        if let Ok(url) = self.api.join("pin/rm") {
            let _ = http.post(url).query(&[("arg", cid)]).send().await;
        }
    }
}
