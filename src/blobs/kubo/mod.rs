//! The production [`BlobStore`]: an IPFS node (Kubo, an IPFS Cluster proxy, or js-ipfs in
//! tests) driven over its Kubo RPC API.
//!
//! **Why our own client.** The design named the `ipfs-api-backend-hyper` crate. We write
//! this small client on `reqwest` 0.12 instead: the crate's latest release depends (through
//! multiaddr/multihash 0.17) on `core2 0.4`, every version of which is yanked, so a fresh
//! dependency resolution fails; it brings a second HTTP/TLS stack (hyper 0.14, rustls 0.20,
//! ring 0.16) beside ours; and its typed `add` response expects `Size` as a string, which
//! breaks on js-ipfs (a number there). The ten calls we need (`add`, `cat`, `pin/add`,
//! `pin/rm`, `pin/ls`, `block/get`, `block/put`, `block/stat`, `dag/export`, `version`)
//! take this module and `rpc.rs` (requests, errors) and `stream.rs` (streaming bodies).
//!
//! **Node behaviour relied upon** (observed on js-ipfs 0.66.1, known for Kubo): every RPC
//! is POST; the multipart file part needs a Content-Type; `add` answers only after the whole
//! body has been received; the node's `timeout=` parameter is a *total* deadline on the
//! command (an expired one cuts a running `cat` and reports it only in an `X-Stream-Error`
//! trailer); a missing block makes `cat`/`block/stat` wait until that deadline, then
//! answers 500 "request timed out" (Kubo: "context deadline exceeded"); `pin/ls` and
//! `pin/rm` of something not pinned answer 500 "... is not pinned" (js-ipfs `pin/rm`
//! takes seconds to say so, see `unpin`).
//!
//! **Timeouts** (`IpfsConfig::timeout` = T). There is no client-wide request timeout, since
//! adds and cats stream arbitrarily large bodies. Instead:
//! - control calls (`block/stat`, `block/get`, `block/put`, `pin/ls`, `pin/rm`, `version`)
//!   send `timeout=T` to the node and give up client-side after T plus a grace period, so
//!   the node's own "timed out" answer (which tells a missing block from a dead node)
//!   normally arrives first;
//! - `pin/add` walks the whole DAG, so it fails only when the node stops making progress
//!   for T (see `KuboStore::pin_with_progress`);
//! - `add` must not have a total timeout (a 10 GiB layer from a slow client takes as long as
//!   it takes), and no response exists until the last body byte is sent. So a watchdog
//!   tracks whose turn it is: while the HTTP client waits for the next chunk of *our input*,
//!   no clock runs (the caller bounds its own input); when a chunk has been handed over and
//!   the client does not come back for the next one within T (the node stopped reading), or
//!   the body is complete and the answer has not arrived within T, the add fails as
//!   `Unavailable` (the same watchdog covers reading the answer, since a node may send its
//!   headers before it has read the whole body);
//! - `cat` first checks the root with `block/stat` (a control call, so a missing CID is
//!   `NotFound` after T, not a hang), then streams with a node deadline of
//!   [`CAT_NODE_DEADLINE`] (the node's deadline is total, so T would cut large reads; this
//!   one only stops a forgotten fetch), response headers within T + grace, and a T idle
//!   timeout on the body. With a `length`, a body that ends early is an error.

mod raw_cid;
mod rpc;
pub(crate) mod stream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures::{StreamExt, TryStreamExt};
use reqwest::multipart::{Form, Part};
use reqwest::{Body, Client, RequestBuilder, Response};
use url::Url;

use crate::blobs::unixfs::{self, Block};
use crate::blobs::{BlobError, BlobStore, ByteStream, ImportProfile, Joined, StoredBytes};
use crate::config::IpfsConfig;

pub use self::raw_cid::{raw_cid_v1_from_sha256, DAG_PB_CODEC, RAW_CODEC, SHA2_256};
use self::rpc::{transport_error, CallError, NodeError, PinEvent};
use self::stream::{ExactLength, IdleTimeout, UploadTracker};

/// The node-side deadline sent with `cat`. Both js-ipfs and Kubo apply `timeout=` to the
/// whole command, so this bounds the longest possible read; liveness is checked client-side.
pub const CAT_NODE_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// Pooled connections idle longer than this are closed by us first: js-ipfs closes idle
/// keep-alive connections after 5 s, and reusing one it is closing fails the request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// Calls in flight at once when joining chunks (reading their nodes, writing new ones).
const PARALLEL_CALLS: usize = 8;
/// Blocks removed per `block/rm` call (js-ipfs reads at most 16 KiB of request head).
const EVICT_BATCH: usize = 100;
/// CIDs asked about in one `pin/ls`: about 4 KiB of URL (js-ipfs reads at most 16 KiB).
const PIN_LS_BATCH: usize = 64;
/// Largest control-call or `add` answer we read.
const MAX_ANSWER: usize = 1024 * 1024;
/// Largest `pin/ls` answer we read: it names every pin (about 100 bytes each), so a node
/// with the blobs and image layouts of a large registry answers far more than
/// [`MAX_ANSWER`]; this is some 2.5 million pins.
const MAX_PIN_LIST: usize = 256 * 1024 * 1024;

/// A [`BlobStore`] on a Kubo RPC endpoint. Cheap to share (`Arc`); one pooled HTTP client.
#[derive(Debug, Clone)]
pub struct KuboStore {
    client: Client,
    /// `<url>/api/v0/`, so `join("add")` is the add endpoint.
    api: Url,
    timeout: Duration,
    profile: ImportProfile,
}

impl KuboStore {
    /// `url` is the RPC base URL (e.g. `http://127.0.0.1:5001`); the connect timeout and the
    /// control/idle timeout come from `config`.
    pub fn new(
        config: &IpfsConfig,
        url: Url,
        profile: ImportProfile,
    ) -> Result<KuboStore, BlobError> {
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(BlobError::Backend(format!(
                "IPFS RPC URL must be http(s)://host:port, got {url}"
            )));
        }
        if config.timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(BlobError::Backend("IPFS timeouts must be > 0".into()));
        }
        let mut api = url;
        let base_path = api.path().trim_end_matches('/').to_owned();
        api.set_path(&format!("{base_path}/api/v0/"));
        api.set_query(None);
        api.set_fragment(None);
        // An https:// URL is verified against the system's roots plus `ipfs.ca_file`
        // (crate::tls); the RPC API speaks HTTP/1.1.
        let roots = crate::tls::root_store(config.ca_file.as_deref())
            .map_err(|e| BlobError::Backend(format!("ipfs.ca_file: {e}")))?;
        let mut tls = crate::tls::verifying_client(roots).map_err(BlobError::Backend)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(config.connect_timeout)
            .tcp_keepalive(TCP_KEEPALIVE)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // The RPC API is an internal endpoint: never route it through HTTP(S)_PROXY.
            .no_proxy()
            .build()
            .map_err(|e| {
                BlobError::Backend(format!(
                    "HTTP client: {}",
                    crate::error_chain::with_sources(&e)
                ))
            })?;
        Ok(KuboStore {
            client,
            api,
            timeout: config.timeout,
            profile,
        })
    }

    fn endpoint(&self, command: &str) -> Result<Url, BlobError> {
        self.api
            .join(command)
            .map_err(|e| BlobError::Backend(format!("IPFS endpoint {command}: {e}")))
    }

    /// Client-side limit for a call that carries `timeout=T`: a little more than T, so the
    /// node's own timeout answer wins the race.
    fn control_deadline(&self) -> Duration {
        self.timeout + (self.timeout / 10).max(Duration::from_secs(1))
    }

    /// A control call: `timeout=T` for the node, T + grace for us; returns the 2xx body.
    async fn control(&self, command: &str, query: &[(&str, String)]) -> Result<Bytes, CallError> {
        self.control_capped(command, query, MAX_ANSWER).await
    }

    /// [`KuboStore::control`] whose answer may be up to `cap` bytes.
    async fn control_capped(
        &self,
        command: &str,
        query: &[(&str, String)],
        cap: usize,
    ) -> Result<Bytes, CallError> {
        let url = self.endpoint(command)?;
        let call = async {
            let response = self
                .client
                .post(url)
                .query(query)
                .query(&[("timeout", millis(self.timeout))])
                .send()
                .await
                .map_err(|e| transport_error(command, &e))?;
            let status = response.status();
            let body = read_answer(response, command, Some(self.timeout), cap).await?;
            if status.is_success() {
                Ok(body)
            } else {
                Err(CallError::Node(NodeError::from_body(status, &body)))
            }
        };
        match tokio::time::timeout(self.control_deadline(), call).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Blob(BlobError::Unavailable(format!(
                "IPFS node {command}: no answer within {:?}",
                self.control_deadline()
            )))),
        }
    }

    /// A call whose answer is a byte stream of any length (`cat`, `dag/export`): the node's
    /// deadline is [`CAT_NODE_DEADLINE`], the answer must start within T + grace, and the
    /// body may pause for at most T.
    async fn stream(
        &self,
        command: &str,
        cid: &Cid,
        mut query: Vec<(&str, String)>,
    ) -> Result<ByteStream, BlobError> {
        query.push(("timeout", millis(CAT_NODE_DEADLINE)));
        let request = self
            .client
            .post(self.endpoint(command)?)
            .query(&query)
            .send();
        let response = match tokio::time::timeout(self.control_deadline(), request).await {
            Ok(sent) => sent.map_err(|e| transport_error(command, &e))?,
            Err(_) => {
                return Err(BlobError::Unavailable(format!(
                    "IPFS node {command} {cid}: no answer within {:?}",
                    self.control_deadline()
                )))
            }
        };
        let status = response.status();
        if !status.is_success() {
            let body = read_answer(response, command, Some(self.timeout), MAX_ANSWER).await?;
            return Err(NodeError::from_body(status, &body).into_blob_error(command, Some(cid)));
        }
        Ok(Box::pin(IdleTimeout::new(
            response.bytes_stream().map_err(std::io::Error::other),
            self.timeout,
        )))
    }

    /// The first of `cids` not pinned recursively, if any: one `pin/ls` per batch (the node
    /// fails the call when any is not pinned; only then is each asked alone).
    async fn first_unpinned(&self, cids: &[Cid]) -> Result<Option<Cid>, BlobError> {
        for batch in cids.chunks(PIN_LS_BATCH) {
            let mut query: Vec<(&str, String)> =
                batch.iter().map(|cid| ("arg", cid.to_string())).collect();
            query.push(("type", "recursive".to_owned()));
            let all_listed = match self.control("pin/ls", &query).await {
                Ok(body) => batch.iter().try_fold(true, |all, cid| {
                    Ok::<_, BlobError>(all && rpc::pin_ls_contains(&body, cid)?)
                })?,
                Err(CallError::Node(e)) if e.is_not_pinned() => false,
                Err(e) => return Err(e.into_blob_error("pin/ls", None)),
            };
            if all_listed {
                continue;
            }
            for cid in batch {
                if !self.is_pinned(cid).await? {
                    return Ok(Some(*cid));
                }
            }
        }
        Ok(None)
    }

    /// Pins `cid` alone (its block must be held); a recursive pin of it already there is
    /// left as it is.
    async fn pin_directly(&self, cid: &Cid) -> Result<(), BlobError> {
        let query = [("arg", cid.to_string()), ("recursive", "false".to_owned())];
        match self.control("pin/add", &query).await {
            Ok(_) => Ok(()),
            // The node of a subtree that is also a blob of its own (the blob's content is a
            // prefix of this one's): its recursive pin holds it already.
            Err(CallError::Node(e)) if e.message.contains("pinned recursively") => Ok(()),
            Err(e) => Err(e.into_blob_error("pin/add", Some(cid))),
        }
    }

    /// Every pin of `kind` (`recursive`, `direct`) the node lists.
    async fn pins_of_type(&self, kind: &str) -> Result<Vec<Cid>, BlobError> {
        let query = [("type", kind.to_owned())];
        let body = self
            .control_capped("pin/ls", &query, MAX_PIN_LIST)
            .await
            .map_err(|e| e.into_blob_error("pin/ls", None))?;
        rpc::pin_ls_roots(&body)
    }

    /// Drops a direct pin of `cid`, if there is one.
    async fn unpin_direct(&self, cid: &Cid) -> Result<(), BlobError> {
        let listed = [("arg", cid.to_string()), ("type", "direct".to_owned())];
        let direct = match self.control("pin/ls", &listed).await {
            Ok(body) => rpc::pin_ls_contains(&body, cid)?,
            Err(CallError::Node(e)) if e.is_not_pinned() => false,
            Err(e) => return Err(e.into_blob_error("pin/ls", Some(cid))),
        };
        if !direct {
            return Ok(());
        }
        let query = [("arg", cid.to_string()), ("recursive", "false".to_owned())];
        match self.control("pin/rm", &query).await {
            Ok(_) => Ok(()),
            Err(CallError::Node(e)) if e.is_not_pinned() => Ok(()),
            Err(e) => Err(e.into_blob_error("pin/rm", Some(cid))),
        }
    }

    /// `block/put`s `blocks`, a few at a time.
    async fn put_blocks(&self, blocks: Vec<(Cid, Bytes)>) -> Result<(), BlobError> {
        let writes: Vec<_> = blocks
            .into_iter()
            .map(|(cid, bytes)| async move { self.put_block(&cid, bytes).await })
            .collect();
        futures::stream::iter(writes)
            .buffer_unordered(PARALLEL_CALLS)
            .try_collect::<()>()
            .await
    }

    /// Creates the keystore key `name` (ed25519) unless the node has it.
    async fn ensure_key(&self, name: &str) -> Result<(), BlobError> {
        let has_key = |answer: Bytes| -> Result<bool, BlobError> {
            let keys: rpc::KeyList = serde_json::from_slice(&answer).map_err(|e| {
                BlobError::Backend(format!("IPFS node key/list: unexpected answer: {e}"))
            })?;
            Ok(keys.keys.iter().any(|key| key.name == name))
        };
        let list = || async {
            self.control("key/list", &[])
                .await
                .map_err(|e| e.into_blob_error("key/list", None))
        };
        if has_key(list().await?)? {
            return Ok(());
        }
        let query = [("arg", name.to_owned()), ("type", "ed25519".to_owned())];
        match self.control("key/gen", &query).await {
            Ok(_) => Ok(()),
            // Another replica created it meanwhile.
            Err(CallError::Node(_)) if has_key(list().await?)? => Ok(()),
            Err(e) => Err(e.into_blob_error("key/gen", None)),
        }
    }

    /// `pin/add` with a progress-based deadline: a pin walks every block of the DAG, which
    /// takes as long as the DAG is large (and on Kubo waits for the repo GC's lock), so it
    /// has no total deadline of T. Kubo reports the blocks walked so far every 500 ms
    /// (`progress=true`); the pin fails when that count has not grown for T — a missing
    /// block, which Kubo would look for on the network for ever, or a stuck node. js-ipfs
    /// reports nothing until it is done, so there the whole pin must finish within T.
    async fn pin_with_progress(&self, cid: &Cid) -> Result<(), BlobError> {
        let query = [
            ("arg", cid.to_string()),
            ("recursive", "true".to_owned()),
            ("progress", "true".to_owned()),
            // Only a backstop for a walk nobody waits for: progress is checked here.
            ("timeout", millis(CAT_NODE_DEADLINE)),
        ];
        let request = self.client.post(self.endpoint("pin/add")?).query(&query);
        let started = Instant::now();
        // Milliseconds after `started` of the last progress report, and the blocks walked.
        let last_progress = AtomicU64::new(0);
        let walked = AtomicU64::new(0);
        let exchange = async {
            let response = request
                .send()
                .await
                .map_err(|e| transport_error("pin/add", &e))?;
            let status = response.status();
            if !status.is_success() {
                let body = read_answer(response, "pin/add", Some(self.timeout), MAX_ANSWER).await?;
                return Err(
                    NodeError::from_body(status, &body).into_blob_error("pin/add", Some(cid))
                );
            }
            let mut body = response.bytes_stream();
            let mut pending = BytesMut::new();
            let mut finished = false;
            while !finished {
                let line = match body.next().await {
                    Some(chunk) => {
                        let chunk = chunk.map_err(|e| transport_error("pin/add", &e))?;
                        pending.extend_from_slice(&chunk);
                        if pending.len() > MAX_ANSWER {
                            return Err(BlobError::Backend(format!(
                                "IPFS node pin/add: answer line longer than {MAX_ANSWER} bytes"
                            )));
                        }
                        match pending.iter().position(|b| *b == b'\n') {
                            Some(end) => pending.split_to(end + 1),
                            None => continue,
                        }
                    }
                    // js-ipfs may end its one object without a newline.
                    None => {
                        finished = true;
                        pending.split()
                    }
                };
                let mut lines = vec![line];
                // Several objects may arrive in one read.
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    lines.push(pending.split_to(end + 1));
                }
                for line in lines {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match rpc::parse_pin_line(&line)? {
                        PinEvent::Progress(n) => {
                            if n > walked.load(Ordering::Relaxed) {
                                walked.store(n, Ordering::Relaxed);
                                last_progress
                                    .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                            }
                        }
                        PinEvent::Pinned(pins) => {
                            return if pins
                                .iter()
                                .any(|p| p.codec() == cid.codec() && p.hash() == cid.hash())
                            {
                                Ok(())
                            } else {
                                Err(BlobError::Backend(format!(
                                    "IPFS node pin/add {cid} answered other pins: {pins:?}"
                                )))
                            };
                        }
                        PinEvent::Failed(message) => {
                            let error = NodeError {
                                status,
                                message,
                                from_rpc: true,
                            };
                            return Err(error.into_blob_error("pin/add", Some(cid)));
                        }
                    }
                }
            }
            // Kubo reports an error after the first progress line only in a trailer.
            Err(BlobError::Unavailable(format!(
                "IPFS node pin/add {cid}: the answer ended without confirming the pin after {} blocks",
                walked.load(Ordering::Relaxed)
            )))
        };
        let watchdog = async {
            loop {
                let last = Duration::from_millis(last_progress.load(Ordering::Relaxed));
                let due = started + last + self.timeout;
                if Instant::now() >= due {
                    return;
                }
                tokio::time::sleep_until(due.into()).await;
            }
        };
        tokio::select! {
            result = exchange => result,
            () = watchdog => Err(BlobError::Unavailable(format!(
                "IPFS node pin/add {cid}: no progress for {:?} after {} blocks (a block missing \
                 on the node, or the node busy, e.g. in repo GC)",
                self.timeout,
                walked.load(Ordering::Relaxed)
            ))),
        }
    }

    /// The leaves (CID, length) of a stored file DAG, left to right, read from the node's
    /// own blocks (offline: a part's blocks are local, held by its pin); `None` when the DAG
    /// is not of the layout this registry's profile builds.
    async fn leaves(&self, root: &Cid) -> Result<Option<Vec<(Cid, u64)>>, BlobError> {
        if root.codec() == RAW_CODEC {
            let body = self
                .control("block/stat", &[("arg", root.to_string())])
                .await
                .map_err(|e| e.into_blob_error("block/stat", Some(root)))?;
            return Ok(Some(vec![(*root, rpc::parse_block_size(&body)?)]));
        }
        let mut leaves = Vec::new();
        // Depth first, left to right: the next node to read is on top.
        let mut stack = vec![*root];
        while let Some(cid) = stack.pop() {
            let node = self.block(&cid).await?;
            let links = unixfs::file_links(&node).map_err(|e| {
                BlobError::Backend(format!("IPFS block {cid} is not a UnixFS file node: {e}"))
            })?;
            // The balanced layout: a node's children are all leaves or all nodes.
            if links.iter().all(|(child, _)| child.codec() == RAW_CODEC) {
                leaves.extend(links);
            } else if links.iter().all(|(child, _)| child.codec() == DAG_PB_CODEC) {
                stack.extend(links.into_iter().rev().map(|(child, _)| child));
            } else {
                return Ok(None);
            }
        }
        Ok(Some(leaves))
    }

    /// Stores one block (dag-pb or raw) with `block/put` (a control call) and checks the
    /// block's key.
    async fn put_block(&self, cid: &Cid, bytes: Bytes) -> Result<(), BlobError> {
        let part = Part::bytes(bytes.to_vec())
            .file_name("block")
            .mime_str("application/octet-stream")
            .map_err(|e| BlobError::Backend(format!("multipart part: {e}")))?;
        // `cid-codec` is current Kubo's flag (its default is raw); js-ipfs 0.66 reads only
        // the older `format`, whose default is dag-pb. Kubo refuses both at once, so a
        // dag-pb node is sent with `cid-codec` only (js-ipfs's default covers it), a raw
        // block with `format=raw`, which both read as a raw CIDv1 (Kubo still maps the
        // deprecated flag onto the codec). The answer's key is checked either way.
        let codec = if cid.codec() == RAW_CODEC {
            ("format", "raw".to_owned())
        } else {
            ("cid-codec", "dag-pb".to_owned())
        };
        let query = [
            codec,
            ("mhtype", "sha2-256".to_owned()),
            ("pin", "false".to_owned()),
            ("timeout", millis(self.timeout)),
        ];
        let request = self
            .client
            .post(self.endpoint("block/put")?)
            .query(&query)
            .multipart(Form::new().part("file", part));
        let call = async {
            let response = request
                .send()
                .await
                .map_err(|e| transport_error("block/put", &e))?;
            let status = response.status();
            let body = read_answer(response, "block/put", Some(self.timeout), MAX_ANSWER).await?;
            if !status.is_success() {
                return Err(NodeError::from_body(status, &body).into_blob_error("block/put", None));
            }
            if !rpc::block_put_names(&body, cid)? {
                return Err(BlobError::Backend(format!(
                    "IPFS node block/put stored the block of {cid} under another CID: {:.200}",
                    String::from_utf8_lossy(&body)
                )));
            }
            Ok(())
        };
        match tokio::time::timeout(self.control_deadline(), call).await {
            Ok(result) => result,
            Err(_) => Err(BlobError::Unavailable(format!(
                "IPFS node block/put: no answer within {:?}",
                self.control_deadline()
            ))),
        }
    }

    /// `block/get`, checked against the CID; `offline` keeps the node from asking peers.
    async fn block_get(&self, cid: &Cid, offline: bool) -> Result<Bytes, BlobError> {
        let query = [("arg", cid.to_string()), ("offline", offline.to_string())];
        let bytes = self
            .control("block/get", &query)
            .await
            .map_err(|e| e.into_blob_error("block/get", Some(cid)))?;
        if crate::blobs::unixfs::names_block(cid, &bytes) != Some(true) {
            return Err(BlobError::Backend(format!(
                "IPFS node block/get {cid}: the bytes do not match the CID"
            )));
        }
        Ok(bytes)
    }

    /// The add request: profile parameters, pin, and the input as a streamed file part.
    fn add_request(
        &self,
        tracker: &UploadTracker,
        data: ByteStream,
    ) -> Result<RequestBuilder, BlobError> {
        let part = Part::stream(Body::wrap_stream(tracker.watch(data)))
            .file_name("blob")
            .mime_str("application/octet-stream")
            .map_err(|e| BlobError::Backend(format!("multipart part: {e}")))?;
        let mut query = self.profile.add_params();
        query.extend([
            ("pin", "true".to_owned()),
            ("progress", "false".to_owned()),
            ("quieter", "true".to_owned()),
        ]);
        Ok(self
            .client
            .post(self.endpoint("add")?)
            .query(&query)
            .multipart(Form::new().part("file", part)))
    }
}

#[async_trait]
impl BlobStore for KuboStore {
    fn profile(&self) -> &ImportProfile {
        &self.profile
    }

    async fn ping(&self) -> Result<(), BlobError> {
        self.control("version", &[])
            .await
            .map(drop)
            .map_err(|e| e.into_blob_error("version", None))
    }

    async fn add(&self, data: ByteStream) -> Result<StoredBytes, BlobError> {
        let tracker = UploadTracker::new();
        let request = self.add_request(&tracker, data)?;
        let exchange = async {
            let response = request
                .send()
                .await
                .map_err(|e| transport_error("add", &e))?;
            let status = response.status();
            // No idle timeout of its own: a node may send headers before it has read the
            // whole body, and then the answer legitimately waits on our input. The watchdog
            // below covers the answer too (it is the node's turn once the body is sent).
            let body = read_answer(response, "add", None, MAX_ANSWER).await?;
            Ok::<_, BlobError>((status, body))
        };
        let (status, body) = tokio::select! {
            // When the input failed, that error aborted the request body: the node sees a
            // cut connection and pins nothing.
            done = exchange => done.map_err(|e| match tracker.input_error() {
                Some(input) => BlobError::Input(input),
                None => e,
            })?,
            () = tracker.stalled(self.timeout) => {
                return Err(BlobError::Unavailable(format!(
                    "IPFS node add: no progress for {:?} after {} bytes sent",
                    self.timeout,
                    tracker.bytes()
                )))
            }
        };
        if !status.is_success() {
            return Err(NodeError::from_body(status, &body).into_blob_error("add", None));
        }
        let added = rpc::parse_add_response(&body)?;
        let size = tracker.bytes();
        // The node's Size is the DAG size: at least the file size (equal for one raw block).
        if added.dag_size.is_some_and(|dag| dag < size) {
            return Err(BlobError::Backend(format!(
                "IPFS add of {size} bytes answered {} with Size {:?}: bytes were lost",
                added.cid, added.dag_size
            )));
        }
        Ok(StoredBytes {
            cid: added.cid,
            size,
        })
    }

    async fn concat(&self, parts: &[Cid]) -> Result<Option<Joined>, BlobError> {
        let chunk_size = self.profile.chunk_size;
        // Futures collected first: a closure in the stream would not be `Send` for any
        // lifetime, which `async_trait` requires.
        let reads: Vec<_> = parts.iter().map(|part| self.leaves(part)).collect();
        let listed: Vec<Option<Vec<(Cid, u64)>>> = futures::stream::iter(reads)
            .buffered(PARALLEL_CALLS)
            .try_collect()
            .await?;
        let Some(listed) = listed.into_iter().collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        let Some(leaves) = unixfs::aligned_leaves(listed, u64::from(chunk_size)) else {
            return Ok(None);
        };
        // The joined root is not walked (below): its leaves are kept only if every part's
        // recursive pin holds them, so a part that lost its pin fails the join.
        if let Some(unpinned) = self.first_unpinned(parts).await? {
            // Retryable for the client: pushing the blob again stores its bytes afresh.
            return Err(BlobError::Unavailable(format!(
                "IPFS node: part {unpinned} of the blob is no longer pinned, so its blocks may be gone"
            )));
        }
        let (dag, blocks) = unixfs::dag_over(chunk_size, &leaves);
        // Only the interior nodes are new: the leaves are the parts' own blocks, held by the
        // parts' pins until the new root's recursive pin covers them.
        let nodes: Vec<(Cid, Bytes)> = blocks
            .into_iter()
            .filter_map(|block| match block {
                Block::Node { cid, bytes } => Some((cid, bytes)),
                Block::Leaf { .. } => None,
            })
            .collect();
        let direct: Vec<Cid> = nodes.iter().map(|(cid, _)| *cid).collect();
        self.put_blocks(nodes).await?;
        // A recursive pin would read every leaf again (most of the push's time for a large
        // blob on js-ipfs); a direct pin reads one block. The leaves are all held (the
        // parts' pins), so every block of the root is now kept.
        let pins: Vec<_> = direct.iter().map(|cid| self.pin_directly(cid)).collect();
        futures::stream::iter(pins)
            .buffer_unordered(PARALLEL_CALLS)
            .try_collect::<()>()
            .await?;
        Ok(Some(Joined {
            stored: StoredBytes {
                cid: dag.root,
                size: dag.file_size,
            },
            direct: Some(direct.into_iter().filter(|cid| *cid != dag.root).collect()),
        }))
    }

    async fn put_dag_replacing(
        &self,
        previous: Option<&Cid>,
        root: &Cid,
        blocks: Vec<(Cid, Bytes)>,
    ) -> Result<(), BlobError> {
        let Some(previous) = previous.filter(|previous| *previous != root) else {
            return self.put_dag(root, blocks).await;
        };
        if !self.is_pinned(previous).await? {
            return self.put_dag(root, blocks).await;
        }
        crate::blobs::check_blocks(root, &blocks)?;
        self.put_blocks(blocks).await?;
        // `pin/update` walks only the parts of the new DAG the old one lacks (what it
        // links and the old one did not is pinned content, held here), where `pin/add`
        // would walk every linked DAG again. The old pin stays: the caller's unpin queue
        // releases it once no record holds it.
        let query = [
            ("arg", previous.to_string()),
            ("arg", root.to_string()),
            ("unpin", "false".to_owned()),
        ];
        match self.control("pin/update", &query).await {
            Ok(_) => Ok(()),
            // js-ipfs has no `pin/update`: an unknown route is a 404 (JSON "Not Found" on
            // js-ipfs, text on Kubo). Kubo's own failures are 500s: the old pin gone since
            // it was checked (unpinned meanwhile), say. Either way a whole pin still works.
            Err(CallError::Node(e)) => {
                if e.status != reqwest::StatusCode::NOT_FOUND {
                    tracing::info!(event = "pin_update_failed", from = %previous, ipfs_cid = %root, error = %e.message, "pinning the whole DAG instead");
                }
                self.pin_with_progress(root).await
            }
            Err(e) => Err(e.into_blob_error("pin/update", Some(root))),
        }
    }

    async fn publish_name(&self, key: &str, root: &Cid) -> Result<Option<String>, BlobError> {
        self.ensure_key(key).await?;
        let query = [
            ("arg", format!("/ipfs/{root}")),
            ("key", key.to_owned()),
            ("resolve", "false".to_owned()),
            // A node with no peers (a private network, a test) still signs and keeps the
            // record; peers that connect later resolve it.
            ("allow-offline", "true".to_owned()),
            ("lifetime", "48h".to_owned()),
            ("ttl", "1m".to_owned()),
        ];
        let answer = self
            .control("name/publish", &query)
            .await
            .map_err(|e| e.into_blob_error("name/publish", None))?;
        let published: rpc::NamePublished = serde_json::from_slice(&answer).map_err(|e| {
            BlobError::Backend(format!("IPFS node name/publish: unexpected answer: {e}"))
        })?;
        Ok(Some(published.name))
    }

    async fn put_dag(&self, root: &Cid, blocks: Vec<(Cid, Bytes)>) -> Result<(), BlobError> {
        crate::blobs::check_blocks(root, &blocks)?;
        // Checked first, so the pin never asks the node for a block it does not hold (it
        // would look for it on the network until the deadline).
        let checks: Vec<_> = crate::blobs::linked_roots(&blocks)?
            .into_iter()
            .map(|child| async move {
                match self.is_pinned(&child).await? {
                    true => Ok(()),
                    false => Err(BlobError::NotFound(child)),
                }
            })
            .collect();
        futures::stream::iter(checks)
            .buffer_unordered(PARALLEL_CALLS)
            .try_collect::<()>()
            .await?;
        self.put_blocks(blocks).await?;
        // The recursive pin walks the whole DAG, linked blobs included: it fails if any
        // block is missing, so a pinned root is one whose every block is held.
        self.pin_with_progress(root).await
    }

    async fn cat(
        &self,
        cid: &Cid,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, BlobError> {
        // The root must be there (or fetchable) within T: NotFound rather than a hang.
        let stat = async {
            self.control("block/stat", &[("arg", cid.to_string())])
                .await
                .map(|_| ())
                .map_err(|e| e.into_blob_error("block/stat", Some(cid)))
        };
        if length == Some(0) {
            stat.await?;
            return Ok(Box::pin(futures::stream::empty()));
        }
        let mut query = vec![("arg", cid.to_string()), ("offset", offset.to_string())];
        if let Some(length) = length {
            query.push(("length", length.to_string()));
        }
        // Side by side, so a pull waits one round trip to the node, not two; a failed
        // `block/stat` drops the `cat` at once.
        let ((), body) = tokio::try_join!(stat, self.stream("cat", cid, query))?;
        Ok(match length {
            Some(length) => Box::pin(ExactLength::new(body, length)),
            None => body,
        })
    }

    async fn pin(&self, cid: &Cid) -> Result<(), BlobError> {
        self.pin_with_progress(cid).await
    }

    async fn unpin(&self, cid: &Cid) -> Result<(), BlobError> {
        // Ask first: on js-ipfs, `pin/rm` of something not pinned walks every pinned DAG
        // to rule out an indirect pin (seconds with a few hundred pins, growing with the
        // pinset), while `pin/ls ?type=recursive` is a lookup. A concurrent unpin between
        // the two calls is still fine: `pin/rm` then answers "not pinned".
        if !self.is_pinned(cid).await? {
            return self.unpin_direct(cid).await;
        }
        let query = [("arg", cid.to_string()), ("recursive", "true".to_owned())];
        match self.control("pin/rm", &query).await {
            Ok(_) => Ok(()),
            Err(CallError::Node(e)) if e.is_not_pinned() => Ok(()),
            // A pinned CID's blocks are local: a timeout here is the node being slow.
            Err(CallError::Node(e)) if e.is_not_found() => Err(BlobError::Unavailable(format!(
                "IPFS node pin/rm {cid}: {}",
                e.message
            ))),
            Err(e) => Err(e.into_blob_error("pin/rm", None)),
        }
    }

    async fn evict(&self, cid: &Cid) -> Result<(), BlobError> {
        self.unpin(cid).await?;
        // The DAG's blocks as far as the node can list them locally; a missing or corrupt
        // node ends the listing (the call is bounded by T), and the root is removed anyway.
        let query = [
            ("arg", cid.to_string()),
            ("recursive", "true".to_owned()),
            ("unique", "true".to_owned()),
            ("offline", "true".to_owned()),
        ];
        let mut blocks = match self.control("refs", &query).await {
            Ok(body) => rpc::refs_lines(&body),
            Err(e) => {
                let e = e.into_blob_error("refs", Some(cid));
                tracing::debug!(event = "evict_refs_failed", ipfs_cid = %cid, error = %e);
                Vec::new()
            }
        };
        blocks.push(*cid);
        // The node refuses to remove a block some pin still needs (a leaf shared with
        // another blob) and goes on with the others; a batch keeps the URL short.
        for batch in blocks.chunks(EVICT_BATCH) {
            let mut query: Vec<(&str, String)> = batch
                .iter()
                .map(|block| ("arg", block.to_string()))
                .collect();
            query.push(("force", "true".to_owned()));
            if let Err(e) = self.control("block/rm", &query).await {
                let e = e.into_blob_error("block/rm", None);
                tracing::debug!(event = "evict_blocks_kept", ipfs_cid = %cid, error = %e);
            }
        }
        Ok(())
    }

    async fn is_pinned(&self, cid: &Cid) -> Result<bool, BlobError> {
        let query = [("arg", cid.to_string()), ("type", "recursive".to_owned())];
        match self.control("pin/ls", &query).await {
            Ok(body) => rpc::pin_ls_contains(&body, cid),
            Err(CallError::Node(e)) if e.is_not_pinned() => Ok(false),
            Err(e) => Err(e.into_blob_error("pin/ls", Some(cid))),
        }
    }

    async fn pinned(&self) -> Result<Vec<Cid>, BlobError> {
        self.pins_of_type("recursive").await
    }

    async fn direct_pins(&self) -> Result<Vec<Cid>, BlobError> {
        self.pins_of_type("direct").await
    }

    async fn block(&self, cid: &Cid) -> Result<Bytes, BlobError> {
        // Offline: a block this node does not hold is NotFound, never fetched from peers.
        self.block_get(cid, true).await
    }

    async fn fetch_block(&self, cid: &Cid) -> Result<Bytes, BlobError> {
        // A missing block is looked for on the network until `timeout=T`, then NotFound.
        self.block_get(cid, false).await
    }

    async fn resolve_name(&self, name: &str) -> Result<Cid, BlobError> {
        // nocache: a follower polls for re-publishes, which a cached answer would hide. A
        // node offline (which has only its own records) refuses nocache: asked again without.
        let mut query = vec![
            ("arg", format!("/ipns/{name}")),
            ("recursive", "true".to_owned()),
            ("nocache", "true".to_owned()),
        ];
        let body = match self.control("name/resolve", &query).await {
            Err(CallError::Node(e)) if e.message.contains("nocache") => {
                query.pop();
                self.control("name/resolve", &query).await
            }
            answer => answer,
        };
        let body = body.map_err(|e| e.into_blob_error("name/resolve", None))?;
        rpc::resolved_path(&body)
    }

    async fn car(&self, root: &Cid) -> Result<ByteStream, BlobError> {
        self.control("block/stat", &[("arg", root.to_string())])
            .await
            .map_err(|e| e.into_blob_error("block/stat", Some(root)))?;
        let export = self
            .stream("dag/export", root, vec![("arg", root.to_string())])
            .await?;
        // The node reports a failure mid-export only in a trailer, which is not seen here.
        Ok(crate::blobs::verified_car::verified(*root, export))
    }
}

/// A duration as both js-ipfs (`parse-duration`) and Kubo (Go `time.ParseDuration`) read it.
fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Reads an answer body of at most `cap` bytes, with an idle timeout when given.
async fn read_answer(
    response: Response,
    call: &str,
    idle: Option<Duration>,
    cap: usize,
) -> Result<Bytes, BlobError> {
    let body = response.bytes_stream().map_err(std::io::Error::other);
    let mut body: ByteStream = match idle {
        Some(idle) => Box::pin(IdleTimeout::new(body, idle)),
        None => Box::pin(body),
    };
    let mut answer = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            BlobError::Unavailable(format!("IPFS node {call}: reading the answer: {e}"))
        })?;
        if answer.len() + chunk.len() > cap {
            return Err(BlobError::Backend(format!(
                "IPFS node {call}: answer larger than {cap} bytes"
            )));
        }
        answer.extend_from_slice(&chunk);
    }
    Ok(answer.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> IpfsConfig {
        IpfsConfig {
            url: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn endpoints_keep_a_base_path() {
        let store = KuboStore::new(
            &config(),
            "http://node:5001".parse().unwrap(),
            ImportProfile::default(),
        )
        .unwrap();
        assert_eq!(
            store.endpoint("pin/ls").unwrap().as_str(),
            "http://node:5001/api/v0/pin/ls"
        );
        let store = KuboStore::new(
            &config(),
            "https://proxy/ipfs/?x=1".parse().unwrap(),
            ImportProfile::default(),
        )
        .unwrap();
        assert_eq!(
            store.endpoint("add").unwrap().as_str(),
            "https://proxy/ipfs/api/v0/add"
        );
        assert!(KuboStore::new(
            &config(),
            "unix:/run/ipfs.sock".parse().unwrap(),
            ImportProfile::default()
        )
        .is_err());
    }

    #[test]
    fn durations_are_sent_in_milliseconds() {
        assert_eq!(millis(Duration::from_secs(30)), "30000ms");
        assert_eq!(millis(Duration::from_micros(10)), "1ms");
    }
}
