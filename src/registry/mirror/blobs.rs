//! Blobs through a mirror. One upstream fetch per repository and digest at a time: the
//! first request starts it and receives the bytes as they arrive while they are added to
//! the blob store (the last piece held back until the digest is checked, so a client never
//! takes wrong bytes for a whole blob); requests for the same blob meanwhile wait for it to
//! be stored and are then served from the store. Bytes that do not hash to the digest are
//! not stored, and the first client's stream ends with an error. Memory is bounded by the
//! channels' few pieces whatever the blob's size.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

use super::upstream::{FetchedBlob, UpstreamError};
use super::{upstream_error, Mirrored};
use crate::blobs::{ByteStream, StoredBytes};
use crate::meta::BlobRecord;
use crate::oci::{Digest, RepoName};
use crate::registry::hashing::Hasher;
use crate::registry::notify::{Action, Origin};
use crate::registry::{BlobContent, BlobRange, Registry, RegistryError, Result};

/// Pieces in flight to the client and to the blob store, each.
const PIECES: usize = 8;

/// A blob pulled through a mirror.
pub enum MirroredBlob {
    /// Held here: served from the blob store as any blob.
    Stored(BlobContent),
    /// Streaming from the upstream while it is stored (the whole blob: a range asked of a
    /// blob not yet held is answered with all of it).
    Streaming {
        digest: Digest,
        /// As the upstream announced it.
        length: Option<u64>,
        body: ByteStream,
    },
}

/// What a HEAD through a mirror learns.
pub struct MirroredBlobHead {
    pub digest: Digest,
    pub size: u64,
    /// The stored blob, when it is held here.
    pub record: Option<BlobRecord>,
}

/// A fetch in flight: its outcome, once known.
#[derive(Clone)]
pub(super) struct Flight {
    done: watch::Receiver<Option<Outcome>>,
}

#[derive(Clone, Debug)]
enum Outcome {
    Stored,
    NotFound,
    Failed(String),
}

impl Registry {
    pub async fn get_mirrored_blob(
        self: &Arc<Self>,
        name: &Mirrored,
        digest: &Digest,
        range: Option<BlobRange>,
        origin: &Origin,
    ) -> Result<MirroredBlob> {
        name.serves()?;
        if let Some(content) = self.stored_blob(&name.local, digest, range).await? {
            return Ok(MirroredBlob::Stored(content));
        }
        let key = (name.local.clone(), digest.clone());
        let joined = {
            let mut flights = self
                .mirrors
                .flights
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match flights.get(&key) {
                Some(flight) => Err(flight.done.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    flights.insert(key.clone(), Flight { done: rx });
                    Ok(FlightGuard {
                        registry: self.clone(),
                        key,
                        done: tx,
                    })
                }
            }
        };
        let guard = match joined {
            Ok(guard) => guard,
            Err(mut done) => {
                let outcome = done
                    .wait_for(Option::is_some)
                    .await
                    .map(|o| o.clone())
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| Outcome::Failed("the fetch was abandoned".into()));
                return match outcome {
                    Outcome::Stored => match self.stored_blob(&name.local, digest, range).await? {
                        Some(content) => Ok(MirroredBlob::Stored(content)),
                        None => Err(RegistryError::BlobUnknown(digest.clone())),
                    },
                    Outcome::NotFound => Err(RegistryError::BlobUnknown(digest.clone())),
                    Outcome::Failed(message) => Err(RegistryError::UpstreamUnavailable {
                        message,
                        retry_after: None,
                    }),
                };
            }
        };
        // A fetch that ended between our look and our flight has stored it.
        if let Some(content) = self.stored_blob(&name.local, digest, range).await? {
            guard.finish(Outcome::Stored);
            return Ok(MirroredBlob::Stored(content));
        }
        // The fetch runs in a task of its own from the start, so that the first client going
        // away (its request dropped) abandons nothing: the blob is still stored for those
        // waiting and the next pulls.
        let (started, start) = oneshot::channel();
        let registry = self.clone();
        let (name, digest) = (name.clone(), digest.clone());
        let task_digest = digest.clone();
        let origin = origin.clone();
        tokio::spawn(
            async move {
                let outcome = registry
                    .fetch_blob(&name, &task_digest, &origin, started)
                    .await;
                guard.finish(outcome);
            }
            .instrument(tracing::Span::current()),
        );
        match start.await {
            Ok(Ok((length, body))) => Ok(MirroredBlob::Streaming {
                digest,
                length,
                body: Box::pin(body),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RegistryError::Internal(
                "the mirror's fetch ended before it started".into(),
            )),
        }
    }

    /// HEAD through a mirror: the stored blob, or the upstream's answer (nothing fetched).
    pub async fn stat_mirrored_blob(
        &self,
        name: &Mirrored,
        digest: &Digest,
    ) -> Result<MirroredBlobHead> {
        name.serves()?;
        if let Some(record) = self.meta.repository_blob(&name.local, digest).await? {
            return Ok(MirroredBlobHead {
                digest: digest.clone(),
                size: record.size,
                record: Some(record),
            });
        }
        let size = name
            .mirror
            .upstream
            .blob_size(&name.upstream, digest)
            .await
            .map_err(|e| upstream_error(e, RegistryError::BlobUnknown(digest.clone())))?;
        Ok(MirroredBlobHead {
            digest: digest.clone(),
            size,
            record: None,
        })
    }

    /// The blob as any pull serves it, when `repo` holds it. A quarantined one (its stored
    /// bytes found damaged) is not held: it is fetched again, which heals it.
    async fn stored_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<BlobRange>,
    ) -> Result<Option<BlobContent>> {
        match self.get_blob(repo, digest, range).await {
            Ok(content) => Ok(Some(content)),
            Err(RegistryError::BlobUnknown(_) | RegistryError::BlobQuarantined(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Asks the upstream for the blob, tells the first client how that went (`started`),
    /// then streams the body to it and into the blob store, checks it and records the blob in
    /// the mirrored repository. The outcome is for those waiting.
    async fn fetch_blob(
        &self,
        name: &Mirrored,
        digest: &Digest,
        origin: &Origin,
        started: Start,
    ) -> Outcome {
        let fetched = match name.mirror.upstream.blob(&name.upstream, digest).await {
            Ok(fetched) => fetched,
            Err(e) => {
                let outcome = match &e {
                    UpstreamError::NotFound | UpstreamError::Denied(_) => Outcome::NotFound,
                    other => Outcome::Failed(other.to_string()),
                };
                if let Outcome::Failed(_) = outcome {
                    self.metrics.record_mirror("blob", "failed");
                }
                let _ = started.send(Err(upstream_error(
                    e,
                    RegistryError::BlobUnknown(digest.clone()),
                )));
                return outcome;
            }
        };
        if let (Some(length), Some(max)) = (fetched.length, self.max_blob_size()) {
            if length > max {
                let message =
                    format!("the upstream's blob has {length} bytes, over the limit of {max}");
                self.metrics.record_mirror("blob", "failed");
                let _ = started.send(Err(RegistryError::TooLarge(message.clone())));
                return Outcome::Failed(message);
            }
        }
        let (client, body) = mpsc::channel(PIECES);
        // A first client gone already is no reason to stop: the blob is stored all the same.
        let _ = started.send(Ok((fetched.length, body)));
        match self
            .store_fetched(name, digest, origin, fetched, client)
            .await
        {
            Ok(()) => {
                self.metrics.record_mirror("blob", "fetched");
                Outcome::Stored
            }
            Err(message) => {
                self.metrics.record_mirror("blob", "failed");
                tracing::warn!(event = "mirror_blob_failed", repository = %name.local, digest = %digest, error = %message);
                Outcome::Failed(message)
            }
        }
    }

    /// Streams the upstream's body to the client and into the blob store, checks it, and
    /// records the blob in the mirrored repository.
    async fn store_fetched(
        &self,
        name: &Mirrored,
        digest: &Digest,
        origin: &Origin,
        fetched: FetchedBlob,
        client: mpsc::Sender<io::Result<Bytes>>,
    ) -> std::result::Result<(), String> {
        let started = std::time::Instant::now();
        // A digest stored for another repository is not added again, but its bytes still
        // come from the upstream and are checked: knowing a digest is not access.
        // A quarantined one is stored afresh, which heals it as a push would.
        let (existing, healing) = match self.known_blob(digest).await {
            Ok(known) => known,
            Err(e) => {
                let message = e.to_string();
                let mut client = client;
                let _ = client.send(Err(io::Error::other(message.clone()))).await;
                return Err(message);
            }
        };
        let (store, stored) = mpsc::channel(PIECES);
        let store = existing.is_none().then_some(store);
        let add = async {
            match existing {
                Some(_) => None,
                None => Some(self.blobs.add(Box::pin(stored)).await),
            }
        };
        let limit = self.max_blob_size();
        let pump = pump(fetched, digest, limit, store, client);
        let (added, pumped) = tokio::join!(add, pump);
        let size = match pumped {
            Ok(size) => size,
            Err(message) => {
                if let Some(Ok(added)) = added {
                    self.release(&added.cid).await;
                }
                return Err(message);
            }
        };
        let record = match (existing, added) {
            (Some(existing), _) => {
                let notices =
                    self.blob_notices(Action::Mirror, &name.local, &existing, Some(origin));
                let stored = self
                    .meta
                    .commit_blob_with_notices(&name.local, existing, &notices)
                    .await
                    .map_err(|e| format!("metadata store: {e}"))?;
                self.woken(&notices);
                self.ensure_pinned(&stored)
                    .await
                    .map_err(|e| e.to_string())?;
                stored
            }
            (None, Some(Ok(StoredBytes { cid, .. }))) => {
                let record = BlobRecord {
                    digest: digest.clone(),
                    cid,
                    size,
                    import_profile: self.blobs.profile().id(),
                };
                let notices = self.blob_notices(Action::Mirror, &name.local, &record, Some(origin));
                let committed = self
                    .meta
                    .commit_blob_with_notices(&name.local, record, &notices)
                    .await;
                if committed.is_ok() {
                    self.woken(&notices);
                }
                let record = self
                    .settle(cid, committed)
                    .await
                    .map_err(|e| e.to_string())?;
                if healing {
                    self.heal(&record, cid).await;
                }
                record
            }
            (None, Some(Err(e))) => return Err(format!("blob store: {e}")),
            (None, None) => return Err("nothing was stored".into()),
        };
        self.metrics.blob_bytes_in.inc_by(size);
        tracing::info!(
            event = "mirror_blob_fetched",
            repository = %name.local,
            upstream = %name.mirror.upstream.repository_url(&name.upstream),
            digest = %record.digest,
            ipfs_cid = %record.cid,
            size = record.size,
            duration_ms = started.elapsed().as_millis() as u64,
        );
        Ok(())
    }
}

/// How the first client learns whether the fetch started: the announced length and the
/// body's receiving end, or the error to answer.
type Start = oneshot::Sender<Result<(Option<u64>, mpsc::Receiver<io::Result<Bytes>>)>>;

/// Moves the upstream's pieces to the blob store and the client, hashing them; the last
/// piece reaches the client only once the whole blob hashed to `digest`. On any failure
/// both get an error (the store then abandons its add, the client's response is cut).
/// Returns the blob's size.
async fn pump(
    fetched: FetchedBlob,
    digest: &Digest,
    limit: Option<u64>,
    mut store: Option<mpsc::Sender<io::Result<Bytes>>>,
    client: mpsc::Sender<io::Result<Bytes>>,
) -> std::result::Result<u64, String> {
    let mut client = Some(client);
    let mut body = fetched.body;
    let mut hasher = Hasher::new(digest.algorithm());
    let mut held: Option<Bytes> = None;
    let mut size: u64 = 0;
    let failure = loop {
        let piece = match body.next().await {
            None => break None,
            Some(Err(e)) => break Some(format!("the upstream's body failed: {e}")),
            Some(Ok(piece)) if piece.is_empty() => continue,
            Some(Ok(piece)) => piece,
        };
        size += piece.len() as u64;
        if let Some(over) = fetched
            .length
            .filter(|&n| size > n)
            .map(|n| format!("the upstream sent more than the {n} bytes it announced"))
            .or_else(|| {
                limit
                    .filter(|&n| size > n)
                    .map(|n| format!("the blob exceeds the limit of {n} bytes"))
            })
        {
            break Some(over);
        }
        hasher.update(&piece);
        if let Some(tx) = store.as_mut() {
            if tx.send(Ok(piece.clone())).await.is_err() {
                break Some("the blob store stopped reading".into());
            }
        }
        if let Some(previous) = held.replace(piece) {
            to_client(&mut client, Ok(previous)).await;
        }
    };
    let failure = failure.or_else(|| {
        if fetched.length.is_some_and(|n| n != size) {
            return Some(format!(
                "the upstream sent {size} bytes of the {} it announced",
                fetched.length.unwrap_or_default()
            ));
        }
        let actual = std::mem::replace(&mut hasher, Hasher::new(digest.algorithm())).finish();
        (actual != *digest).then(|| format!("the upstream's bytes hash to {actual}, not {digest}"))
    });
    if let Some(message) = failure {
        if let Some(tx) = store.as_mut() {
            let _ = tx.send(Err(io::Error::other(message.clone()))).await;
        }
        to_client(&mut client, Err(io::Error::other(message.clone()))).await;
        return Err(message);
    }
    // The store's stream ends here, so its add completes.
    drop(store);
    if let Some(last) = held {
        to_client(&mut client, Ok(last)).await;
    }
    Ok(size)
}

/// Sends to the client while it listens; one gone away stops being sent to, and the fetch
/// goes on for the store.
async fn to_client(client: &mut Option<mpsc::Sender<io::Result<Bytes>>>, item: io::Result<Bytes>) {
    if let Some(tx) = client.as_mut() {
        if tx.send(item).await.is_err() {
            *client = None;
        }
    }
}

/// Ends a flight: forgets it, then tells those waiting (so none waits for a fetch that
/// will never end, whatever ended it).
struct FlightGuard {
    registry: Arc<Registry>,
    key: (RepoName, Digest),
    done: watch::Sender<Option<Outcome>>,
}

impl FlightGuard {
    fn finish(self, outcome: Outcome) {
        self.done.send_replace(Some(outcome));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.registry
            .mirrors
            .flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        if self.done.borrow().is_none() {
            self.done
                .send_replace(Some(Outcome::Failed("the fetch was abandoned".into())));
        }
    }
}
