//! Reading a DAG this registry does not hold (an image layout to import, docs/federation.md)
//! from outside: through the configured IPFS node, which fetches blocks from the IPFS
//! network ([`NodeSource`]), or from trustless HTTP gateways ([`Gateways`]). Whatever the
//! source, every block is checked against its CID before its bytes are used, and a file is
//! streamed block by block, never held whole.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures::{StreamExt, TryStreamExt};
use reqwest::{Client, StatusCode};
use url::Url;

use super::kubo::stream::IdleTimeout;
use super::kubo::{DAG_PB_CODEC, RAW_CODEC};
use super::unixfs::{as_v1, file_links, names_block};
use super::verified_car::{self, varint, MAX_SECTION};
use super::{BlobError, BlobStore, ByteStream};

/// The largest block a source may send (Kubo accepts blocks up to 2 MiB).
const MAX_BLOCK: usize = 2 * 1024 * 1024;

/// Where a DAG to import is read from. Errors: `NotFound` when the source does not have a
/// block, `Input` when it sent something that is not what was asked for (a block that does
/// not match its CID, a CAR that ends early), `Unavailable` when it cannot be reached.
#[async_trait]
pub trait DagSource: Send + Sync + 'static {
    /// One block, checked against its CID.
    async fn block(&self, cid: &Cid) -> Result<Bytes, BlobError>;

    /// The bytes of the UnixFS file under `cid` (raw leaves), every block checked against
    /// its CID as it arrives; the stream fails when a block is missing or wrong.
    async fn file(&self, cid: &Cid) -> Result<ByteStream, BlobError>;
}

/// The configured IPFS node (Kubo mode). Single blocks (the layout's directories, its small
/// files) are fetched one by one ([`BlobStore::fetch_block`]), so a CID that is no layout
/// costs a block, not its whole DAG. Before reading files, the caller pins the root, which
/// makes the node fetch every block from whoever has it at once (bitswap asks for many
/// blocks in parallel; a `dag/export` or `cat` of content not yet local walks the DAG about
/// one round trip per block); then files are read locally.
pub struct NodeSource {
    blobs: Arc<dyn BlobStore>,
}

impl NodeSource {
    pub fn new(blobs: Arc<dyn BlobStore>) -> NodeSource {
        NodeSource { blobs }
    }
}

#[async_trait]
impl DagSource for NodeSource {
    async fn block(&self, cid: &Cid) -> Result<Bytes, BlobError> {
        // Checked against its CID by the store.
        self.blobs.fetch_block(cid).await
    }

    async fn file(&self, cid: &Cid) -> Result<ByteStream, BlobError> {
        // The node checks every block it fetches against its CID (bitswap does), and the
        // importer checks the bytes against the blob's digest.
        self.blobs.cat(cid, 0, None).await
    }
}

/// Trustless gateways (`federation.gateways`), tried in order for each request until one
/// has the content: `GET <gateway>/ipfs/<cid>?format=raw` for one block, `?format=car` for
/// a file's whole DAG.
#[derive(Clone)]
pub struct Gateways {
    client: Client,
    urls: Arc<Vec<Url>>,
    timeout: Duration,
}

impl Gateways {
    /// `timeout` bounds connecting, waiting for an answer and every pause in a body.
    pub fn new(urls: Vec<Url>, timeout: Duration) -> Result<Gateways, BlobError> {
        // https:// gateways are verified against the system's roots (crate::tls); the
        // HTTP client is built without roots of its own.
        let roots = crate::tls::root_store(None).map_err(BlobError::Backend)?;
        let tls = crate::tls::verifying_client(roots).map_err(BlobError::Backend)?;
        let client = Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| BlobError::Backend(format!("HTTP client: {e}")))?;
        Ok(Gateways {
            client,
            urls: Arc::new(urls),
            timeout,
        })
    }

    /// The first gateway's 200 answer for `cid` in `format`: `NotFound` when every gateway
    /// answered 404/410, `Unavailable` when any could not be asked.
    async fn get(
        &self,
        cid: &Cid,
        format: &str,
        accept: &str,
    ) -> Result<reqwest::Response, BlobError> {
        let mut unavailable = None;
        for base in self.urls.iter() {
            let url = format!("{}/ipfs/{cid}", base.as_str().trim_end_matches('/'));
            let request = self
                .client
                .get(&url)
                .query(&[("format", format)])
                .header(reqwest::header::ACCEPT, accept)
                .send();
            match tokio::time::timeout(self.timeout, request).await {
                Ok(Ok(response)) if response.status() == StatusCode::OK => return Ok(response),
                Ok(Ok(response))
                    if matches!(response.status(), StatusCode::NOT_FOUND | StatusCode::GONE) => {}
                Ok(Ok(response)) => {
                    unavailable = Some(format!("{url}: HTTP {}", response.status()));
                }
                Ok(Err(e)) => {
                    unavailable = Some(format!("{url}: {}", crate::error_chain::with_sources(&e)))
                }
                Err(_) => unavailable = Some(format!("{url}: no answer within {:?}", self.timeout)),
            }
        }
        match unavailable {
            Some(reason) => Err(BlobError::Unavailable(format!("gateway: {reason}"))),
            None => Err(BlobError::NotFound(*cid)),
        }
    }

    fn body(&self, response: reqwest::Response) -> ByteStream {
        Box::pin(IdleTimeout::new(
            response.bytes_stream().map_err(std::io::Error::other),
            self.timeout,
        ))
    }
}

#[async_trait]
impl DagSource for Gateways {
    async fn block(&self, cid: &Cid) -> Result<Bytes, BlobError> {
        let response = self.get(cid, "raw", "application/vnd.ipld.raw").await?;
        let mut body = self.body(response);
        let mut block = BytesMut::new();
        while let Some(piece) = body.next().await {
            let piece =
                piece.map_err(|e| BlobError::Unavailable(format!("gateway: block {cid}: {e}")))?;
            if block.len() + piece.len() > MAX_BLOCK {
                return Err(BlobError::Input(format!(
                    "gateway: block {cid} is larger than {MAX_BLOCK} bytes"
                )));
            }
            block.extend_from_slice(&piece);
        }
        let block = block.freeze();
        if names_block(cid, &block) != Some(true) {
            return Err(BlobError::Input(format!(
                "gateway: the block served for {cid} does not match its CID"
            )));
        }
        Ok(block)
    }

    async fn file(&self, cid: &Cid) -> Result<ByteStream, BlobError> {
        let car = match self.get(cid, "car", "application/vnd.ipld.car").await {
            Ok(response) => self.body(response),
            // A gateway may export only some DAGs as CARs (this registry's: blobs and image
            // layouts, not the manifests inside a layout): then block by block.
            Err(BlobError::NotFound(_)) => {
                return Ok(file_by_blocks(Arc::new(self.clone()), *cid));
            }
            Err(e) => return Err(e),
        };
        let walk = CarFile {
            sections: Sections::new(verified_car::verified(*cid, car)),
            pending: vec![as_v1(cid)],
            peeked: None,
            seen: HashSet::new(),
            source: Arc::new(self.clone()),
        };
        Ok(Box::pin(futures::stream::try_unfold(
            walk,
            |mut walk| async move { Ok(walk.next_chunk().await?.map(|chunk| (chunk, walk))) },
        )))
    }
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// The bytes of the file under `root`, read block by block from `source` (depth first).
pub fn file_by_blocks(source: Arc<dyn DagSource>, root: Cid) -> ByteStream {
    let state = (source, vec![root]);
    Box::pin(futures::stream::try_unfold(
        state,
        |(source, mut pending)| async move {
            while let Some(cid) = pending.pop() {
                let block = source
                    .block(&cid)
                    .await
                    .map_err(|e| invalid(e.to_string()))?;
                if let Some(bytes) = leaf_or_links(&cid, block, &mut pending)? {
                    return Ok(Some((bytes, (source, pending))));
                }
            }
            Ok(None)
        },
    ))
}

/// A raw block is file bytes; a file node's children are pushed onto `pending` so that the
/// first is popped next.
fn leaf_or_links(
    cid: &Cid,
    block: Bytes,
    pending: &mut Vec<Cid>,
) -> Result<Option<Bytes>, std::io::Error> {
    match cid.codec() {
        RAW_CODEC => Ok(Some(block)),
        DAG_PB_CODEC => {
            let links = file_links(&block)
                .map_err(|e| invalid(format!("{cid} is not a file of raw leaves: {e}")))?;
            pending.extend(links.into_iter().rev().map(|(child, _)| as_v1(&child)));
            Ok(None)
        }
        codec => Err(invalid(format!(
            "{cid}: codec {codec:#x} is not a file block"
        ))),
    }
}

/// The blocks of a CAR stream, header skipped.
struct Sections {
    inner: ByteStream,
    buffer: BytesMut,
    header_done: bool,
}

impl Sections {
    fn new(inner: ByteStream) -> Sections {
        Sections {
            inner,
            buffer: BytesMut::new(),
            header_done: false,
        }
    }

    async fn next(&mut self) -> Result<Option<(Cid, Bytes)>, std::io::Error> {
        loop {
            if let Some(prefix) = varint(&self.buffer) {
                let (length, prefix_len) = prefix?;
                if length > MAX_SECTION {
                    return Err(invalid(format!("CAR: a section of {length} bytes")));
                }
                let end = prefix_len + length as usize;
                if self.buffer.len() >= end {
                    let section = self.buffer.split_to(end).freeze().slice(prefix_len..);
                    if !self.header_done {
                        self.header_done = true;
                        continue;
                    }
                    let mut reader = &section[..];
                    let cid = Cid::read_bytes(&mut reader)
                        .map_err(|e| invalid(format!("CAR: a block's CID: {e}")))?;
                    let block = section.slice(section.len() - reader.len()..);
                    return Ok(Some((as_v1(&cid), block)));
                }
            }
            match self.inner.next().await {
                Some(piece) => self.buffer.extend_from_slice(&piece?),
                // The verified stream has already failed an incomplete CAR.
                None => return Ok(None),
            }
        }
    }
}

/// A file read from the CAR of its DAG (root first, depth first, each block once). A
/// block the CAR sent earlier is not sent again (a layer's repeated chunk, e.g. zeros), so
/// its bytes, not kept, are asked for once more, as one block.
struct CarFile {
    sections: Sections,
    /// Blocks still to read, the next on top.
    pending: Vec<Cid>,
    peeked: Option<(Cid, Bytes)>,
    seen: HashSet<Cid>,
    source: Arc<Gateways>,
}

impl CarFile {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, std::io::Error> {
        while let Some(cid) = self.pending.pop() {
            if self.peeked.is_none() {
                self.peeked = self.sections.next().await?;
            }
            let block = match self.peeked.take() {
                Some((next, block)) if next == cid => block,
                other => {
                    self.peeked = other;
                    if !self.seen.contains(&cid) {
                        return Err(invalid(match &self.peeked {
                            Some((next, _)) => format!("CAR: block {next} where {cid} belongs"),
                            None => format!("CAR: ended without block {cid}"),
                        }));
                    }
                    self.source
                        .block(&cid)
                        .await
                        .map_err(|e| invalid(e.to_string()))?
                }
            };
            self.seen.insert(cid);
            if let Some(bytes) = leaf_or_links(&cid, block, &mut self.pending)? {
                return Ok(Some(bytes));
            }
        }
        // The CAR's end is where its completeness is checked.
        if self.peeked.is_none() && self.sections.next().await?.is_some() {
            return Err(invalid("CAR: blocks after the end of the file".into()));
        }
        Ok(None)
    }
}

/// Reads the whole file under `cid` from `source`, block by block, refusing it past `cap`
/// bytes.
pub async fn read_small(source: &dyn DagSource, cid: &Cid, cap: usize) -> Result<Bytes, BlobError> {
    let mut pending = vec![as_v1(cid)];
    let mut out = BytesMut::new();
    while let Some(next) = pending.pop() {
        let block = source.block(&next).await?;
        if let Some(bytes) = leaf_or_links(&next, block, &mut pending)
            .map_err(|e| BlobError::Input(e.to_string()))?
        {
            if out.len() + bytes.len() > cap {
                return Err(BlobError::Input(format!(
                    "file {cid} is larger than {cap} bytes"
                )));
            }
            out.extend_from_slice(&bytes);
        }
        if pending.len() > cap {
            return Err(BlobError::Input(format!("file {cid} has too many blocks")));
        }
    }
    Ok(out.freeze())
}
