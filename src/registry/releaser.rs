//! Work a push leaves for after its answer, done by one task per `serve`:
//! - unpinning a completed upload's chunks. The metadata queued them for unpinning in the
//!   transaction that completed the upload, so the unpins are durable work that only GC
//!   would otherwise do; on an IPFS node each costs a `pin/rm` (about 0.1 s for a 32 MiB
//!   layer pushed in 8 MiB chunks), which the client need not wait for.
//! - pinning a blob joined from chunks recursively (`Joined::direct`): the node reads every
//!   block for that (0.5 s for 256 MiB on js-ipfs). Until it is done the metadata holds the
//!   chunks (whose pins keep the leaves) and the directly pinned nodes; the task pins the
//!   root, then releases them. What a process left pending (it stopped, or the node failed)
//!   is picked up when the task starts and every [`RESCAN`].
//!
//! Where no task runs (commands, a full hand-off channel) the work is done inline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cid::Cid;
use tokio::sync::mpsc;

use super::Registry;

/// Jobs waiting for the task; past this the push does its job inline (backpressure,
/// bounded memory).
const BACKLOG: usize = 1024;
/// How often the task looks for joined blobs still waiting for their recursive pin.
const RESCAN: Duration = Duration::from_secs(60);
/// Pending pins finished per look.
const RESCAN_BATCH: u32 = 100;

enum Job {
    /// Unpin these (queued for unpinning) unless something records them.
    Release(Vec<Cid>),
    /// Pin this joined root recursively, then release what the metadata held for it.
    PinJoined(Cid),
}

pub struct Releaser {
    sender: mpsc::Sender<Job>,
    receiver: Mutex<Option<mpsc::Receiver<Job>>>,
    running: AtomicBool,
}

impl Default for Releaser {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(BACKLOG);
        Releaser {
            sender,
            receiver: Mutex::new(Some(receiver)),
            running: AtomicBool::new(false),
        }
    }
}

impl Registry {
    /// The task that does the jobs, until aborted (at most one per registry).
    pub fn spawn_releaser(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let mut receiver = self
            .releaser
            .receiver
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()?;
        self.releaser.running.store(true, Ordering::Release);
        let registry = self.clone();
        Some(tokio::spawn(async move {
            let mut rescan = tokio::time::interval(RESCAN);
            rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    job = receiver.recv() => match job {
                        Some(job) => registry.run_job(job).await,
                        None => break,
                    },
                    // The first tick is at once: what an earlier process left pending.
                    _ = rescan.tick() => registry.finish_pending_pins().await,
                }
            }
        }))
    }

    /// [`Registry::release_queued`] by the releaser task when it runs and keeps up, else
    /// now.
    pub(super) async fn release_queued_later(&self, cids: Vec<Cid>) {
        if cids.is_empty() {
            return;
        }
        self.later(Job::Release(cids)).await;
    }

    /// [`Registry::pin_joined`] by the releaser task when it runs and keeps up, else now.
    pub(super) async fn pin_joined_later(&self, root: Cid) {
        self.later(Job::PinJoined(root)).await;
    }

    async fn later(&self, job: Job) {
        let job = if self.releaser.running.load(Ordering::Acquire) {
            match self.releaser.sender.try_send(job) {
                Ok(()) => return,
                Err(
                    mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job),
                ) => job,
            }
        } else {
            job
        };
        self.run_job(job).await;
    }

    async fn run_job(&self, job: Job) {
        match job {
            Job::Release(cids) => self.release_queued(cids).await,
            Job::PinJoined(root) => {
                self.pin_joined(&root).await;
            }
        }
    }

    /// Pins a joined blob recursively if a record still holds it (GC may have deleted the
    /// blob meanwhile), then releases the chunks and nodes held for it. On failure they
    /// stay held, and the next rescan tries again. True when it is done.
    pub(super) async fn pin_joined(&self, root: &Cid) -> bool {
        let started = std::time::Instant::now();
        // Asked first: a node pins a root it already holds recursively by walking it again
        // (js-ipfs), and a rescan may meet a root whose job is still queued.
        let pinned = match self.blobs.is_pinned(root).await {
            Ok(true) => Ok(true),
            Ok(false) | Err(_) => self.pin_recorded(root).await,
        };
        let pinned = match pinned {
            Ok(pinned) => pinned,
            Err(e) => {
                tracing::warn!(event = "joined_pin_failed", ipfs_cid = %root, error = %e, "could not pin a joined blob recursively: its chunks stay pinned, tried again later");
                return false;
            }
        };
        match self.gc.finish_pending_pin(root).await {
            Ok(held) => {
                tracing::debug!(event = "joined_pinned", ipfs_cid = %root, pinned, held = held.len(), duration_ms = started.elapsed().as_millis() as u64);
                self.release_queued(held).await;
                true
            }
            Err(e) => {
                tracing::warn!(event = "joined_pin_release_failed", ipfs_cid = %root, error = %e, "pinned, but what was held for it stays held until the next try");
                false
            }
        }
    }

    /// Finishes the pending pins an earlier process, or a failed try, left: batch after
    /// batch while any of a batch succeeds.
    pub async fn finish_pending_pins(&self) {
        loop {
            let roots = match self.gc.pending_pin_roots(RESCAN_BATCH).await {
                Ok(roots) => roots,
                Err(e) => {
                    tracing::warn!(event = "pending_pins_unreadable", error = %e);
                    return;
                }
            };
            let mut done = 0;
            for root in &roots {
                if self.pin_joined(root).await {
                    done += 1;
                }
            }
            if done == 0 || roots.len() < RESCAN_BATCH as usize {
                return;
            }
        }
    }
}
