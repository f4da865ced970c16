//! An IPFS node of a test's own, for tests that damage a node's content (`block/rm`, pins of
//! blocks the node does not have). On js-ipfs those leave pin walks behind that wait for the
//! missing blocks, holding the repository lock, and a later `block/rm` then waits on them
//! while every other test's `add` waits on it: on the shared node one such test would stall
//! the whole suite. Started and stopped with `scripts/ipfs-node.sh`, like the shared one.

use std::path::PathBuf;
use std::process::Command;

pub struct PrivateNode {
    pub url: url::Url,
    repo: tempfile::TempDir,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/ipfs-node.sh")
}

/// Ports nothing listens on right now (the node binds them a moment later).
fn free_ports() -> [u16; 3] {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    [ports[0], ports[1], ports[2]]
}

impl PrivateNode {
    /// Initialises a repository in a temporary directory and starts its daemon (a few
    /// seconds).
    pub fn start() -> PrivateNode {
        let repo = tempfile::Builder::new()
            .prefix("ipfs-node-")
            .tempdir()
            .expect("a repository directory");
        let [api, gateway, grpc] = free_ports();
        let output = Command::new(script())
            .arg("start")
            .arg(repo.path())
            .env("IPFS_NODE_API_PORT", api.to_string())
            .env("IPFS_NODE_GATEWAY_PORT", gateway.to_string())
            .env("IPFS_NODE_GRPC_PORT", grpc.to_string())
            .output()
            .expect("scripts/ipfs-node.sh runs");
        assert!(
            output.status.success(),
            "starting a private IPFS node: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let url = stdout
            .lines()
            .last()
            .and_then(|line| line.trim().parse().ok())
            .expect("ipfs-node.sh prints the RPC URL");
        PrivateNode { url, repo }
    }

    /// The node's repository (its blocks are under `blocks/`).
    pub fn repo(&self) -> &std::path::Path {
        self.repo.path()
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.repo.path())
            .output();
    }
}
