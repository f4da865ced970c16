//! An IPFS node of a test's own, for tests that damage a node's content (`block/rm`, pins of
//! blocks the node does not have). On js-ipfs those leave pin walks behind that wait for the
//! missing blocks, holding the repository lock, and a later `block/rm` then waits on them
//! while every other test's `add` waits on it: on the shared node one such test would stall
//! the whole suite. Started and stopped with `scripts/ipfs-node.sh`, like the shared one.

use std::path::PathBuf;
use std::process::Command;

pub struct PrivateNode {
    pub url: url::Url,
    /// The TCP swarm port on 127.0.0.1, for nodes started to exchange blocks.
    pub swarm_port: Option<u16>,
    repo: tempfile::TempDir,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/ipfs-node.sh")
}

/// Ports nothing listens on right now (the node binds them a moment later).
fn free_ports() -> [u16; 4] {
    let listeners: Vec<std::net::TcpListener> = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    [ports[0], ports[1], ports[2], ports[3]]
}

impl PrivateNode {
    /// Initialises a repository in a temporary directory and starts its daemon (a few
    /// seconds).
    pub fn start() -> PrivateNode {
        PrivateNode::start_node(false)
    }

    /// [`PrivateNode::start`] with a TCP swarm address on 127.0.0.1, so that another such
    /// node can [`PrivateNode::connect`] to it and fetch its blocks.
    pub fn start_on_swarm() -> PrivateNode {
        PrivateNode::start_node(true)
    }

    /// [`PrivateNode::start_on_swarm`] as a DHT server (`Routing.Type = "dhtserver"`,
    /// online): IPNS names published on one such node resolve on another it is connected to.
    pub fn start_dht_server() -> PrivateNode {
        PrivateNode::start_with(true, "dhtserver")
    }

    fn start_node(swarm: bool) -> PrivateNode {
        PrivateNode::start_with(swarm, "none")
    }

    fn start_with(swarm: bool, routing: &str) -> PrivateNode {
        let repo = tempfile::Builder::new()
            .prefix("ipfs-node-")
            .tempdir()
            .expect("a repository directory");
        // The ports are free when chosen but released before the daemon binds them, so an
        // outgoing connection of a busy machine may take one meanwhile; the script tells
        // that apart from other failures, and new ports are tried.
        let mut stderr = String::new();
        for _ in 0..5 {
            let [api, gateway, grpc, swarm_port] = free_ports();
            let mut command = Command::new(script());
            command
                .arg("start")
                .arg(repo.path())
                .env("IPFS_NODE_API_PORT", api.to_string())
                .env("IPFS_NODE_GATEWAY_PORT", gateway.to_string())
                .env("IPFS_NODE_GRPC_PORT", grpc.to_string())
                .env("IPFS_NODE_ROUTING", routing);
            if swarm {
                command.env("IPFS_NODE_SWARM_PORT", swarm_port.to_string());
            }
            let output = command.output().expect("scripts/ipfs-node.sh runs");
            stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            if output.status.success() {
                let stdout = String::from_utf8_lossy(&output.stdout);
                let url = stdout
                    .lines()
                    .last()
                    .and_then(|line| line.trim().parse().ok())
                    .expect("ipfs-node.sh prints the RPC URL");
                return PrivateNode {
                    url,
                    swarm_port: swarm.then_some(swarm_port),
                    repo,
                };
            }
            if !(stderr.contains("a port was taken") || stderr.contains("already in use")) {
                break;
            }
        }
        panic!("starting a private IPFS node: {stderr}")
    }

    /// The node's peer ID.
    pub async fn peer_id(&self) -> String {
        let answer: serde_json::Value = reqwest::Client::new()
            .post(self.url.join("api/v0/id").unwrap())
            .send()
            .await
            .expect("id")
            .json()
            .await
            .expect("id answers JSON");
        answer["ID"].as_str().expect("an ID").to_owned()
    }

    /// Connects this node to `other` (started with [`PrivateNode::start_on_swarm`]).
    pub async fn connect(&self, other: &PrivateNode) {
        let port = other
            .swarm_port
            .expect("the other node has a swarm address");
        let address = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", other.peer_id().await);
        let answer = reqwest::Client::new()
            .post(self.url.join("api/v0/swarm/connect").unwrap())
            .query(&[("arg", address.as_str()), ("timeout", "30s")])
            .send()
            .await
            .expect("swarm/connect");
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        assert!(
            status.is_success() && body.contains("success"),
            "swarm/connect {address}: {status} {body}"
        );
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
