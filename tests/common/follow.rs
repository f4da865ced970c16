//! What the follow-rule suite (tests/follow.rs) uses: indexes built by hand in an IPFS
//! node's MFS (an index made independently of the registry's own code), a stand-in for a
//! registry's `GET /v2/_ext/federation`, and waiting on a rule's status.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::federation::client;
use super::TestRegistry;

/// An index directory in a node's MFS, under a path of the test's own.
pub struct MfsIndex {
    node: url::Url,
    path: String,
}

impl MfsIndex {
    pub fn new(node: url::Url) -> MfsIndex {
        MfsIndex {
            node,
            path: format!("/{}", super::unique_name()),
        }
    }

    async fn call(&self, command: &str, args: &[(&str, &str)]) -> Value {
        let url = self.node.join(&format!("api/v0/{command}")).unwrap();
        let answer = client()
            .post(url)
            .query(args)
            .query(&[("timeout", "60s")])
            .send()
            .await
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        assert!(status.is_success(), "{command} {args:?}: {status} {body}");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    /// Makes the index hold exactly `tags` (`repo:tag` → layout root) and returns its root.
    pub async fn set(&self, tags: &[(&str, &cid::Cid)]) -> cid::Cid {
        let _ = self
            .call_unchecked("files/rm", &[("arg", &self.path), ("recursive", "true")])
            .await;
        self.call(
            "files/mkdir",
            &[
                ("arg", &self.path),
                ("parents", "true"),
                ("cid-version", "1"),
            ],
        )
        .await;
        for (reference, layout) in tags {
            let (repo, tag) = reference.split_once(':').expect("repo:tag");
            let (dirs, last) = match repo.rsplit_once('/') {
                Some((dirs, last)) => (format!("{}/{dirs}", self.path), last),
                None => (self.path.clone(), repo),
            };
            self.call(
                "files/mkdir",
                &[("arg", &dirs), ("parents", "true"), ("cid-version", "1")],
            )
            .await;
            let from = format!("/ipfs/{layout}");
            let to = format!("{dirs}/{last}:{tag}");
            self.call("files/cp", &[("arg", &from), ("arg", &to)]).await;
        }
        let stat = self.call("files/stat", &[("arg", &self.path)]).await;
        stat["Hash"]
            .as_str()
            .expect("a Hash")
            .parse()
            .expect("a CID")
    }

    async fn call_unchecked(&self, command: &str, args: &[(&str, &str)]) -> Option<()> {
        let url = self.node.join(&format!("api/v0/{command}")).ok()?;
        client().post(url).query(args).send().await.ok()?;
        Some(())
    }

    pub async fn remove(&self) {
        let _ = self
            .call_unchecked("files/rm", &[("arg", &self.path), ("recursive", "true")])
            .await;
    }
}

/// A registry's `GET /v2/_ext/federation` standing in for one whose index this test builds
/// by hand: it answers `{"root": "/ipfs/<root>"}` with whatever root was set last.
pub struct FederationStandIn {
    pub url: String,
    root: Arc<Mutex<Option<cid::Cid>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FederationStandIn {
    pub async fn start() -> FederationStandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let root: Arc<Mutex<Option<cid::Cid>>> = Arc::default();
        let shared = root.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    continue;
                };
                let root = shared.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let root = *root.lock().unwrap();
                    let body = serde_json::json!({
                        "root": root.map(|cid| format!("/ipfs/{cid}")),
                        "ipns": null,
                        "updated_at": null,
                    })
                    .to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        FederationStandIn { url, root, task }
    }

    pub fn set_root(&self, root: cid::Cid) {
        *self.root.lock().unwrap() = Some(root);
    }
}

impl Drop for FederationStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `GET /v2/_ext/federation` of `registry`.
pub async fn federation(registry: &TestRegistry) -> Value {
    let answer = client()
        .get(registry.url("/v2/_ext/federation"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

/// The status of `rule` in `registry`'s `GET /v2/_ext/federation`.
pub async fn rule_status(registry: &TestRegistry, rule: &str) -> Value {
    let body = federation(registry).await;
    body["follow"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["name"] == rule).cloned())
        .unwrap_or_else(|| panic!("no rule {rule} in {body}"))
}

/// Waits (polling, up to `limit`) until `rule` is in sync with `root`; returns its status.
pub async fn wait_in_sync(
    registry: &TestRegistry,
    rule: &str,
    root: &cid::Cid,
    limit: Duration,
) -> Value {
    let want = format!("/ipfs/{root}");
    let deadline = Instant::now() + limit;
    loop {
        let status = rule_status(registry, rule).await;
        // CIDv0 or v1, whichever the node gave: the same multihash and codec.
        let last: Option<cid::Cid> = status["last_root"]
            .as_str()
            .and_then(|path| path.strip_prefix("/ipfs/"))
            .and_then(|cid| cid.parse().ok());
        if last.is_some_and(|last| last.hash() == root.hash() && last.codec() == root.codec()) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "rule {rule} not in sync with {want} within {limit:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The digest `repo:tag` names in `registry`, or `None` when it is not there.
pub async fn tagged(registry: &TestRegistry, repo: &str, tag: &str) -> Option<String> {
    let answer = client()
        .head(registry.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .await
        .unwrap();
    match answer.status().as_u16() {
        200 => Some(
            answer.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_owned(),
        ),
        404 => None,
        status => panic!("HEAD {repo}:{tag}: {status}"),
    }
}

/// A TCP proxy in front of a node's swarm port that counts the bytes the node sends back
/// (js-ipfs 0.66's `bitswap/stat` does not count the blocks it moves): what a node
/// connected through it receives from that node.
pub struct CountingProxy {
    pub port: u16,
    served: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    pub async fn start(upstream_port: u16) -> CountingProxy {
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicU64::new(0));
        let counter = served.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(upstream) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                    else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut upstream_read, mut upstream_write) = upstream.into_split();
                    let up = tokio::io::copy(&mut client_read, &mut upstream_write);
                    let down = async {
                        let mut buffer = vec![0u8; 64 * 1024];
                        loop {
                            let n = match upstream_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            counter.fetch_add(n as u64, Ordering::Relaxed);
                            if client_write.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let _ = tokio::join!(up, down);
                });
            }
        });
        CountingProxy { port, served, task }
    }

    pub fn served(&self) -> u64 {
        self.served.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `swarm/connect` of `node` to the peer `peer` at 127.0.0.1:`port`.
pub async fn swarm_connect(node: &url::Url, port: u16, peer: &str) {
    let address = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}");
    let answer = client()
        .post(node.join("api/v0/swarm/connect").unwrap())
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

/// An HTTP proxy in front of a registry that, while told to, corrupts one block its
/// gateway serves raw (`/ipfs/<cid>?format=raw`): a source with one bad block.
pub struct CorruptingProxy {
    pub url: String,
    corrupt: Arc<Mutex<Option<cid::Cid>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CorruptingProxy {
    pub async fn start(upstream: String) -> CorruptingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let corrupt: Arc<Mutex<Option<cid::Cid>>> = Arc::default();
        let shared = corrupt.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    continue;
                };
                let corrupt = shared.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match socket.read(&mut byte).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => head.push(byte[0]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    let accept = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("accept:")
                                .map(|v| v.trim().to_owned())
                        })
                        .unwrap_or_default();
                    let answer = client()
                        .get(format!("{upstream}{target}"))
                        .header("Accept", accept)
                        .send()
                        .await;
                    let (status, mut body) = match answer {
                        Ok(answer) => (
                            answer.status().as_u16(),
                            answer.bytes().await.unwrap_or_default().to_vec(),
                        ),
                        Err(_) => (502, Vec::new()),
                    };
                    let bad = *corrupt.lock().unwrap();
                    if let Some(bad) = bad {
                        let raw = target.contains("format=raw");
                        let names = target
                            .strip_prefix("/ipfs/")
                            .and_then(|rest| rest.split('?').next())
                            .and_then(|cid| cid.parse::<cid::Cid>().ok())
                            .is_some_and(|cid| cid.hash() == bad.hash());
                        if raw && names && status == 200 && !body.is_empty() {
                            let last = body.len() - 1;
                            body[last] ^= 0xff;
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        CorruptingProxy { url, corrupt, task }
    }

    /// Corrupts `block` from now on (`None`: nothing).
    pub fn corrupt(&self, block: Option<cid::Cid>) {
        *self.corrupt.lock().unwrap() = block;
    }
}

impl Drop for CorruptingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
