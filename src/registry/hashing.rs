//! Hashing and metering of byte streams as they pass, and the persisted sha256 state
//! that lets any replica continue an upload begun elsewhere.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::StreamExt;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256, Sha512};
use tokio::sync::mpsc;

use super::{RegistryError, Result};
use crate::blobs::unixfs::{Dag, DagBuilder};
use crate::blobs::{ByteStream, ImportProfile};
use crate::oci::{Algorithm, Digest};

/// Restores a sha256 state saved by [`save_sha256`].
pub fn restore_sha256(state: &[u8]) -> Option<Sha256> {
    let state = SerializedState::<Sha256>::try_from(state).ok()?;
    Sha256::deserialize(&state).ok()
}

pub fn save_sha256(hasher: &Sha256) -> Vec<u8> {
    hasher.serialize().to_vec()
}

/// A hasher for either supported algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::from_hash(Algorithm::Sha256, &h.finalize()),
            Hasher::Sha512(h) => Digest::from_hash(Algorithm::Sha512, &h.finalize()),
        }
    }
}

/// What a [`Meter`] saw once its stream ended.
#[derive(Default)]
struct MeterState {
    hasher: Option<Hasher>,
    bytes: u64,
    /// Set when the meter itself cut the stream (limit exceeded).
    overflow: bool,
}

/// Hashes and counts the bytes of a stream as they pass, and cuts the stream with an error
/// once it exceeds `limit` bytes. The stream goes to the blob store; the meter stays here.
#[derive(Clone)]
pub struct Meter {
    state: Arc<Mutex<MeterState>>,
}

impl Meter {
    /// Wraps `input`. `limit` = None means unlimited.
    pub fn wrap(
        input: ByteStream,
        hasher: Option<Hasher>,
        limit: Option<u64>,
    ) -> (Meter, ByteStream) {
        let meter = Meter {
            state: Arc::new(Mutex::new(MeterState {
                hasher,
                ..MeterState::default()
            })),
        };
        let state = meter.state.clone();
        let stream = input.map(move |item: io::Result<Bytes>| {
            let chunk = item?;
            let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
            s.bytes += chunk.len() as u64;
            if limit.is_some_and(|limit| s.bytes > limit) {
                s.overflow = true;
                return Err(io::Error::other("upload exceeds the allowed size"));
            }
            if let Some(h) = s.hasher.as_mut() {
                h.update(&chunk);
            }
            Ok(chunk)
        });
        (meter, Box::pin(stream))
    }

    pub fn bytes(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    pub fn overflowed(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .overflow
    }

    /// Takes the hasher out (after the stream has ended).
    pub fn take_hasher(&self) -> Option<Hasher> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hasher
            .take()
    }
}

/// Bytes gathered into one batch for the hashing thread: large enough that a thread hop
/// per batch costs nothing measurable, whatever size the pieces come in.
const HASH_BATCH: usize = 512 * 1024;
/// Bytes a pull may have sent but not yet hashed: how far sending may run ahead of the
/// hash, and what a pull holds in memory for it.
const HASH_BACKLOG: u32 = 4 * HASH_BATCH as u32;

/// Passes a stream through while checking it hashes to `expected` and has `size` bytes.
/// The latest piece is held back until the next arrives, and the last one until the digest
/// is checked: on a mismatch the stream ends with an error before the final bytes, so the
/// response falls short of its Content-Length, the connection is aborted, and no client
/// takes a corrupt blob for a complete one.
///
/// Sending and hashing overlap: pieces are hashed in batches on the blocking pool while the
/// stream goes on sending, up to [`HASH_BACKLOG`] ahead. The hashing task ends whenever it
/// has caught up, so no thread waits on a slow client.
pub fn verified(inner: ByteStream, expected: Digest, size: u64) -> ByteStream {
    let check = Check {
        inner,
        hashing: BackgroundHash::new(Hasher::new(expected.algorithm())),
        batch: Vec::new(),
        batch_len: 0,
        held: None,
        expected,
        size,
        seen: 0,
        ended: false,
    };
    Box::pin(futures::stream::unfold(check, |mut check| async move {
        let item = check.next().await?;
        Some((item, check))
    }))
}

/// A hasher fed from a queue by a blocking task that runs only while there is work.
struct BackgroundHash {
    queue: Arc<Mutex<HashQueue>>,
    backlog: Arc<tokio::sync::Semaphore>,
}

struct HashQueue {
    /// Each batch with the backlog it holds, given back once it is hashed.
    batches: std::collections::VecDeque<(Vec<Bytes>, tokio::sync::OwnedSemaphorePermit)>,
    /// Out only while the task hashes a batch.
    hasher: Option<Box<Hasher>>,
    task_running: bool,
}

impl BackgroundHash {
    fn new(hasher: Hasher) -> BackgroundHash {
        BackgroundHash {
            queue: Arc::new(Mutex::new(HashQueue {
                batches: Default::default(),
                hasher: Some(Box::new(hasher)),
                task_running: false,
            })),
            backlog: Arc::new(tokio::sync::Semaphore::new(HASH_BACKLOG as usize)),
        }
    }

    /// Queues a batch, waiting while the backlog is full.
    async fn push(&self, batch: Vec<Bytes>, len: usize) -> Result<(), String> {
        let permits = u32::try_from(len)
            .unwrap_or(u32::MAX)
            .clamp(1, HASH_BACKLOG);
        let permit = self
            .backlog
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|e| format!("unknown: hashing stopped: {e}"))?;
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.batches.push_back((batch, permit));
        if !queue.task_running {
            queue.task_running = true;
            let shared = self.queue.clone();
            tokio::task::spawn_blocking(move || hash_queued(&shared));
        }
        Ok(())
    }

    /// The digest, once every queued batch is hashed.
    async fn finish(&self) -> Result<Digest, String> {
        let _all = self
            .backlog
            .acquire_many(HASH_BACKLOG)
            .await
            .map_err(|e| format!("unknown: hashing stopped: {e}"))?;
        let hasher = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hasher
            .take();
        hasher
            .map(|hasher| hasher.finish())
            .ok_or_else(|| "unknown: hashing failed".to_owned())
    }
}

/// The hashing task: hashes queued batches until there are none.
fn hash_queued(shared: &Mutex<HashQueue>) {
    loop {
        let (batch, permit, mut hasher) = {
            let mut queue = shared.lock().unwrap_or_else(PoisonError::into_inner);
            let Some((batch, permit)) = queue.batches.pop_front() else {
                queue.task_running = false;
                return;
            };
            let Some(hasher) = queue.hasher.take() else {
                queue.task_running = false;
                return;
            };
            (batch, permit, hasher)
        };
        for piece in &batch {
            hasher.update(piece);
        }
        shared.lock().unwrap_or_else(PoisonError::into_inner).hasher = Some(hasher);
        // Only now: `finish` takes every permit to know the hasher is back.
        drop(permit);
    }
}

struct Check {
    inner: ByteStream,
    hashing: BackgroundHash,
    /// Pieces sent but not yet queued for hashing.
    batch: Vec<Bytes>,
    batch_len: usize,
    held: Option<Bytes>,
    expected: Digest,
    size: u64,
    seen: u64,
    ended: bool,
}

impl Check {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if self.ended {
                return None;
            }
            match self.inner.next().await {
                Some(Ok(piece)) => {
                    if piece.is_empty() {
                        continue;
                    }
                    self.seen += piece.len() as u64;
                    if self.seen > self.size {
                        return Some(self.fail("longer than its recorded size"));
                    }
                    let Some(previous) = self.held.replace(piece) else {
                        continue;
                    };
                    self.batch_len += previous.len();
                    self.batch.push(previous.clone());
                    if self.batch_len >= HASH_BATCH {
                        if let Err(e) = self.queue_batch().await {
                            return Some(self.fail(&e));
                        }
                    }
                    return Some(Ok(previous));
                }
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(e));
                }
                None => {
                    self.ended = true;
                    self.batch.extend(self.held.clone());
                    self.batch_len += self.held.as_ref().map_or(0, Bytes::len);
                    return match self.digest().await {
                        Ok(actual) if actual == self.expected && self.seen == self.size => {
                            self.held.take().map(Ok)
                        }
                        Ok(actual) => Some(self.fail(&actual.to_string())),
                        Err(e) => Some(self.fail(&e)),
                    };
                }
            }
        }
    }

    async fn queue_batch(&mut self) -> Result<(), String> {
        let batch = std::mem::take(&mut self.batch);
        let len = std::mem::take(&mut self.batch_len);
        self.hashing.push(batch, len).await
    }

    async fn digest(&mut self) -> Result<Digest, String> {
        self.queue_batch().await?;
        self.hashing.finish().await
    }

    /// Ends the stream with an error (and logs why).
    fn fail(&mut self, actual: &str) -> io::Result<Bytes> {
        self.ended = true;
        self.held = None;
        self.batch.clear();
        tracing::error!(
            event = "blob_corrupt",
            digest = %self.expected,
            actual,
            size = self.size,
            received = self.seen,
            "stored blob does not match its digest; aborting the response"
        );
        Err(io::Error::other(format!(
            "stored content does not match {}",
            self.expected
        )))
    }
}

/// Bytes handed to a [`Rebuild`]'s hashing threads at a time.
const REBUILD_BATCH: usize = 1024 * 1024;
/// Batches queued per [`Rebuild`] hashing thread: what one holds in memory.
const REBUILD_QUEUE: usize = 4;

/// The digest and the DAG of a byte stream, each computed on its own blocking thread while
/// the stream is read, so reading and both hashes overlap.
pub(super) struct Rebuild {
    digest_tx: mpsc::Sender<Vec<Bytes>>,
    dag_tx: Option<mpsc::Sender<Vec<Bytes>>>,
    digest: tokio::task::JoinHandle<Digest>,
    dag: Option<tokio::task::JoinHandle<Dag>>,
    batch: Vec<Bytes>,
    batch_len: usize,
}

impl Rebuild {
    pub(super) fn new(hasher: Hasher, profile: Option<&ImportProfile>) -> Rebuild {
        let (digest_tx, mut digest_rx) = mpsc::channel::<Vec<Bytes>>(REBUILD_QUEUE);
        let digest = tokio::task::spawn_blocking(move || {
            let mut hasher = hasher;
            while let Some(batch) = digest_rx.blocking_recv() {
                for piece in &batch {
                    hasher.update(piece);
                }
            }
            hasher.finish()
        });
        let (dag_tx, dag) = match profile {
            Some(profile) => {
                let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(REBUILD_QUEUE);
                let mut builder = DagBuilder::new(profile.chunk_size);
                let task = tokio::task::spawn_blocking(move || {
                    // Only the root is wanted.
                    let mut blocks = Vec::new();
                    while let Some(batch) = rx.blocking_recv() {
                        for piece in &batch {
                            builder.push(piece, &mut blocks);
                            blocks.clear();
                        }
                    }
                    builder.finish(&mut blocks)
                });
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        Rebuild {
            digest_tx,
            dag_tx,
            digest,
            dag,
            batch: Vec::new(),
            batch_len: 0,
        }
    }

    pub(super) async fn push(&mut self, piece: Bytes) -> Result<()> {
        self.batch_len += piece.len();
        self.batch.push(piece);
        if self.batch_len >= REBUILD_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_len = 0;
        if batch.is_empty() {
            return Ok(());
        }
        let stopped = || RegistryError::Internal("a hashing thread stopped".into());
        if let Some(tx) = &self.dag_tx {
            tx.send(batch.clone()).await.map_err(|_| stopped())?;
        }
        self.digest_tx.send(batch).await.map_err(|_| stopped())
    }

    pub(super) async fn finish(mut self) -> Result<(Digest, Option<Dag>)> {
        self.flush().await?;
        let Rebuild {
            digest_tx,
            dag_tx,
            digest,
            dag,
            ..
        } = self;
        drop((digest_tx, dag_tx));
        let failed =
            |e: tokio::task::JoinError| RegistryError::Internal(format!("hashing thread: {e}"));
        let digest = digest.await.map_err(failed)?;
        let dag = match dag {
            Some(dag) => Some(dag.await.map_err(failed)?),
            None => None,
        };
        Ok((digest, dag))
    }

    /// As [`Rebuild::finish`], for a rebuild made with an import profile.
    pub(super) async fn finish_with_dag(self) -> Result<(Digest, Dag)> {
        match self.finish().await? {
            (digest, Some(dag)) => Ok((digest, dag)),
            (_, None) => Err(RegistryError::Internal("no DAG was rebuilt".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures::stream::iter(items))
    }

    async fn collect(mut stream: ByteStream) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => return (out, true),
            }
        }
        (out, false)
    }

    #[tokio::test]
    async fn verified_passes_matching_content() {
        let digest = Digest::sha256_of(b"hello world");
        let (out, failed) =
            collect(verified(pieces(&[b"hello", b" ", b"world"]), digest, 11)).await;
        assert_eq!(out, b"hello world");
        assert!(!failed);
    }

    #[tokio::test]
    async fn verified_withholds_the_end_of_corrupt_content() {
        let digest = Digest::sha256_of(b"hello world");
        let (out, failed) =
            collect(verified(pieces(&[b"hello", b" ", b"wOrld"]), digest, 11)).await;
        assert!(failed);
        assert!(out.len() < 11, "the final piece must not be sent");
    }

    #[tokio::test]
    async fn verified_rejects_wrong_lengths() {
        let digest = Digest::sha256_of(b"hello");
        let (_, failed) = collect(verified(pieces(&[b"hello", b"!"]), digest.clone(), 5)).await;
        assert!(failed);
        let (out, failed) = collect(verified(pieces(&[b"hel"]), digest, 5)).await;
        assert!(failed && out.is_empty());
    }

    /// Many small pieces: hashed in batches on the blocking pool, still checked whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verified_checks_content_hashed_in_batches() {
        let data: Vec<u8> = (0..(5 * HASH_BATCH + 123))
            .map(|i| (i % 253) as u8)
            .collect();
        let digest = Digest::sha256_of(&data);
        let split = |data: &[u8]| -> ByteStream {
            let items: Vec<io::Result<Bytes>> = data
                .chunks(8 * 1024)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            Box::pin(futures::stream::iter(items))
        };
        let (out, failed) =
            collect(verified(split(&data), digest.clone(), data.len() as u64)).await;
        assert!(!failed);
        assert!(out == data);

        let mut corrupt = data.clone();
        corrupt[10] ^= 1;
        let (out, failed) = collect(verified(split(&corrupt), digest, data.len() as u64)).await;
        assert!(failed);
        assert!(out.len() < data.len(), "the final piece must not be sent");
    }

    #[test]
    fn hash_state_round_trips() {
        let mut hasher = Sha256::new();
        hasher.update(b"hello ");
        let mut restored = restore_sha256(&save_sha256(&hasher)).unwrap();
        restored.update(b"world");
        assert_eq!(
            Hasher::Sha256(restored).finish(),
            Digest::sha256_of(b"hello world")
        );
        assert!(restore_sha256(b"short").is_none());
    }
}
