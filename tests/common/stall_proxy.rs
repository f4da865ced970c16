//! A TCP proxy the test can pause: a backend that keeps its connections open but stops
//! answering (a network partition, a frozen server), in front of a real one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default)]
struct Mode {
    /// Nothing is forwarded.
    paused: bool,
    /// Connections numbered below this forward nothing (cut by a partition the new ones
    /// do not see).
    frozen_below: u64,
}

impl Mode {
    fn forwards(&self, connection: u64) -> bool {
        !self.paused && connection >= self.frozen_below
    }
}

pub struct StallProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl StallProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::default());
        let accepted = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (state, count, live) = (mode.clone(), accepted.clone(), open.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = count.fetch_add(1, Ordering::SeqCst);
                let mode = state.subscribe();
                let live = live.clone();
                live.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    // Connecting forwards no bytes, so it happens paused or not.
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pump(id, client_read, server_write, mode.clone()),
                            pump(id, server_read, client_write, mode),
                        );
                    }
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        StallProxy {
            addr,
            mode,
            accepted,
            open,
            accept,
        }
    }

    /// Stops forwarding in both directions; connections stay open and new ones are
    /// accepted, but nothing reaches the other side.
    pub fn pause(&self) {
        self.mode.send_modify(|m| m.paused = true);
    }

    /// Stops forwarding on the connections open now, and only on those: a partition that
    /// healed for new connections while the old ones were silently lost.
    pub fn freeze_open_connections(&self) {
        let below = self.accepted.load(Ordering::SeqCst);
        self.mode.send_modify(|m| m.frozen_below = below);
    }

    /// Forwards again on every connection, what was held back first.
    pub fn resume(&self) {
        self.mode.send_replace(Mode::default());
    }

    /// Connections open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to` while connection `id` may forward. Ends (closing `to` for
/// writing) when `from` ends or either side fails.
async fn pump(
    id: u64,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if mode.wait_for(|m| m.forwards(id)).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Bytes read just before a pause are held back too.
        if mode.wait_for(|m| m.forwards(id)).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}
