//! Unpinning a completed upload's chunks after the push answers. The metadata queued them
//! for unpinning in the transaction that completed the upload, so the unpins are durable
//! work that only GC would otherwise do; on an IPFS node each costs a `pin/rm` (about
//! 0.1 s for a 32 MiB layer pushed in 8 MiB chunks), which the client need not wait for.
//! One task per `serve` does them in order; where none runs (commands, a full hand-off
//! channel) they are done inline as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cid::Cid;
use tokio::sync::mpsc;

use super::Registry;

/// Completed uploads whose chunks wait for the task; past this the push unpins inline
/// (backpressure, bounded memory).
const BACKLOG: usize = 1024;

pub struct Releaser {
    sender: mpsc::Sender<Vec<Cid>>,
    receiver: Mutex<Option<mpsc::Receiver<Vec<Cid>>>>,
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
    /// The task that unpins released chunks, until aborted (at most one per registry).
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
            while let Some(cids) = receiver.recv().await {
                registry.release_queued(cids).await;
            }
        }))
    }

    /// [`Registry::release_queued`] by the releaser task when it runs and keeps up, else
    /// now.
    pub(super) async fn release_queued_later(&self, cids: Vec<Cid>) {
        if cids.is_empty() {
            return;
        }
        let cids = if self.releaser.running.load(Ordering::Acquire) {
            match self.releaser.sender.try_send(cids) {
                Ok(()) => return,
                Err(
                    mpsc::error::TrySendError::Full(cids) | mpsc::error::TrySendError::Closed(cids),
                ) => cids,
            }
        } else {
            cids
        };
        self.release_queued(cids).await;
    }
}
