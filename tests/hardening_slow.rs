//! Slow clients (issue 13): a client that sends or takes nothing is cut off after
//! `limits.idle_timeout`, downloads are capped and buffer little, and one client address
//! cannot hold every slot. Measured on the registry binary (embedded stores), with its peak
//! memory read from /proc. Client sockets are bound to 127.0.0.x to be told apart.
//!
//! Each slow reader's socket has a 4 KiB receive buffer and a 1 KiB segment size, so that
//! the kernel holds some 50 KB per stalled connection (not the megabytes of loopback's
//! defaults) and the server's own buffers are what fills up.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::cli::{serve_command, Served};
use common::oci::{expect_status, Oci};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The idle timeout the servers of these tests run with.
const IDLE: Duration = Duration::from_secs(2);
/// How long after the idle timeout a stalled connection may still be open: generous, the
/// machine is busy.
const SLACK: Duration = Duration::from_secs(40);

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

struct Server {
    served: Served,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Room for this process's thousand client sockets and, inherited, the server's thousand
/// connections and blob files: a soft limit of 1,024 (a common default) is raised towards
/// the hard limit.
fn enough_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    const WANTED: u64 = 8192;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < WANTED {
        setrlimit(Resource::RLIMIT_NOFILE, WANTED.min(hard), hard).unwrap();
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        soft >= 4096,
        "these tests need 4,096 open files; the hard limit is {hard}"
    );
}

/// The registry binary on embedded stores with `settings` (`IPFS_REGISTRY_*` names).
async fn serve(settings: &[(&str, String)]) -> Server {
    enough_open_files();
    let dir = tempfile::tempdir().unwrap();
    let mut command = serve_command();
    command.env("IPFS_REGISTRY_DATA_DIR", dir.path());
    for (key, value) in settings {
        command.env(key, value);
    }
    let served = Served::start(&mut command).await;
    let addr = served.host().parse().unwrap();
    Server {
        served,
        addr,
        _dir: dir,
    }
}

fn idle_setting(idle: Duration) -> (&'static str, String) {
    (
        "IPFS_REGISTRY_LIMITS__IDLE_TIMEOUT",
        format!("{}ms", idle.as_millis()),
    )
}

/// The idle timeout of tests that must see stalled requests held before they are dropped:
/// longer, so that a busy machine sends them all within it.
const HOLD: Duration = Duration::from_secs(6);

/// A connection from `from` with small socket buffers (see the module's comment).
async fn connect(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_tcp_mss(1024).unwrap();
    socket.set_nonblocking(true).unwrap();
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads a response head (status line and headers) at full speed; its status.
async fn read_head(stream: &mut TcpStream) -> Option<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split(' ').nth(1)?.parse().ok()
}

/// Reads until the server closes the connection (or resets it); whether it did within
/// `limit`, and what arrived.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| received)
}

/// Waits (polling the metrics) until `series` reaches `at_least`.
async fn metric_reaches(base: &str, series: &str, at_least: f64) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = common::metric_sample(&text, series).unwrap_or(0.0);
        if value >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed at {value}, below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server's established connections from the slow readers' addresses (127.0.0.2 to
/// 127.0.0.11), from the kernel's table: a connection the server cut is gone from it even
/// while its reader has not noticed.
fn connections_from_readers(server: SocketAddr) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let address = |field: &str| -> Option<(Ipv4Addr, u16)> {
        let (ip, port) = field.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?.to_le_bytes();
        Some((Ipv4Addr::from(ip), u16::from_str_radix(port, 16).ok()?))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = address(fields.get(1)?)?;
            let remote = address(fields.get(2)?)?;
            let established = *fields.get(3)? == "01";
            Some(
                established
                    && local.1 == server.port()
                    && (2..=11).contains(&remote.0.octets()[3])
                    && remote.0.octets()[..3] == [127, 0, 0],
            )
        })
        .filter(|&counted| counted)
        .count()
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// 1,000 clients pull a blob and then read one byte a second. The server cuts each off
/// after the idle timeout (the kernel does, quietly: a reader learns it when it next sends
/// something), serves at most `limits.max_concurrent_downloads` of them at once (429 for the
/// others), and buffers kilobytes per reader: its peak memory stays far below the 1.5 GB
/// that 1.5 MB of read-ahead per reader came to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_are_cut_off_and_cost_little_memory() {
    const READERS: usize = 1000;
    const DOWNLOADS: usize = 512;
    let server = serve(&[idle_setting(IDLE)]).await;
    let oci = Oci::new(&server.served.base);
    let blob = oci
        .push_blob("slow/app", &common::oci::random_bytes(8 * 1024 * 1024))
        .await;
    let pid = server.served.pid();
    let before = common::peak_rss_kib(pid);
    let files_before = open_files(pid);

    let request = format!(
        "GET /v2/slow/app/blobs/{} HTTP/1.1\r\nHost: registry\r\n\r\n",
        blob.digest
    );
    let (heads_tx, mut heads) = tokio::sync::mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut readers = Vec::new();
    for i in 0..READERS {
        // Ten addresses, each well within its share of the downloads.
        let from = ip(2 + (i % 10) as u8);
        let (request, addr) = (request.clone(), server.addr);
        let (heads_tx, stop) = (heads_tx.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut stream = connect(from, addr).await;
            stream.write_all(request.as_bytes()).await.unwrap();
            let status = read_head(&mut stream).await;
            let _ = heads_tx.send(());
            drop(heads_tx);
            if status != Some(200) {
                return (status, None);
            }
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            let mut byte = [0u8; 1];
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticks.tick() => match stream.read(&mut byte).await {
                        Ok(1) => {}
                        _ => break,
                    },
                }
            }
            // A request on a connection the server dropped is answered with a reset; on
            // one it still served, by the rest of the blob.
            let _ = stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
            (
                status,
                closed_within(&mut stream, SLACK).await.map(|b| b.len()),
            )
        }));
    }
    drop(heads_tx);
    let mut answered = 0;
    while heads.recv().await.is_some() {
        answered += 1;
    }
    assert_eq!(answered, READERS);
    let files_while_stalled = open_files(pid);

    // The server lets go of every reader's connection (and blob file). Each is cut when its
    // own stall has lasted the idle timeout, so some go later than others: wait for the
    // last, or a reader still being served would take the rest of the blob below.
    let deadline = Instant::now() + IDLE + SLACK;
    loop {
        let (files, connections) = (open_files(pid), connections_from_readers(server.addr));
        if files <= files_before + 10 && connections == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{files} files still open ({files_before} before the readers came), \
             {connections} reader connections established"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();

    let mut served = 0;
    for reader in readers {
        match reader.await.unwrap() {
            (Some(200), after) => {
                served += 1;
                let after = after.expect("the connection ended");
                assert!(
                    after < 64 * 1024,
                    "{after} bytes more came on a connection that was cut off"
                );
            }
            (Some(429), _) => {}
            other => panic!("a reader was answered {other:?}"),
        }
    }
    let after = common::peak_rss_kib(pid);
    eprintln!(
        "{served} slow readers served, {} refused; {files_while_stalled} open files while \
         stalled ({files_before} before); peak RSS {} MiB before, {} MiB after",
        READERS - served,
        before / 1024,
        after / 1024
    );
    assert!(
        served > 0 && served <= DOWNLOADS,
        "{served} downloads at once"
    );
    assert!(
        after < 300 * 1024,
        "peak RSS {} MiB with {served} slow readers (from {} MiB)",
        after / 1024,
        before / 1024
    );

    // Every slot was given back: the blob comes whole to a reader that reads.
    let pulled = oci
        .get(&format!("/v2/slow/app/blobs/{}", blob.digest))
        .await;
    let pulled = expect_status(pulled, 200).await.bytes().await.unwrap();
    assert!(pulled == blob.data);
}

/// More half-sent `POST /token` bodies than the server takes requests at once, from one
/// address: other clients are still served (not 429), and every half-sent request is
/// dropped after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_token_requests_do_not_lock_others_out() {
    const HALF_SENT: usize = 1030;
    let server = serve(&[idle_setting(HOLD)]).await;
    let half = b"POST /token HTTP/1.1\r\nHost: registry\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 64\r\n\r\n\
                 grant_type=pass";
    let mut stalled = Vec::new();
    for _ in 0..HALF_SENT {
        let mut stream = connect(ip(2), server.addr).await;
        stream.write_all(half).await.unwrap();
        stalled.push(stream);
    }
    // A quarter of the 1,024 request slots is one address's share.
    metric_reaches(
        &server.served.base,
        "ipfs_registry_http_requests_in_flight",
        256.0,
    )
    .await;

    let other = reqwest::Client::builder()
        .local_address(ip(3))
        .build()
        .unwrap();
    let answer = other
        .get(format!("{}/v2/", server.served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "another client is served");

    let started = Instant::now();
    for stream in &mut stalled {
        let limit = (HOLD + SLACK).saturating_sub(started.elapsed());
        assert!(
            closed_within(stream, limit).await.is_some(),
            "a half-sent request was still open {:?} after the others were sent",
            started.elapsed()
        );
    }
    let again = reqwest::Client::builder()
        .local_address(ip(2))
        .build()
        .unwrap();
    let answer = again
        .get(format!("{}/v2/", server.served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        200,
        "the stalled client's slots are free again"
    );
}

/// An upload session from POST; its location.
async fn upload_session(oci: &Oci, repo: &str) -> String {
    let started = oci
        .request(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let started = expect_status(started, 202).await;
    started.headers()["location"].to_str().unwrap().to_owned()
}

/// PATCH of `chunk` at `offset` to `location`; the response.
async fn patch(oci: &Oci, location: &str, offset: usize, chunk: &[u8]) -> reqwest::Response {
    oci.request(reqwest::Method::PATCH, location)
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{offset}-{}", offset + chunk.len() - 1),
        )
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap()
}

/// A PATCH of `chunk` at `offset` from `from` that sends only `sent` bytes of it and then
/// nothing.
async fn stalled_patch(
    from: IpAddr,
    to: SocketAddr,
    location: &str,
    offset: usize,
    chunk: &[u8],
    sent: usize,
) -> TcpStream {
    let path = url::Url::parse("http://registry")
        .unwrap()
        .join(location)
        .unwrap();
    let head = format!(
        "PATCH {}?{} HTTP/1.1\r\nHost: registry\r\nContent-Type: application/octet-stream\r\n\
         Content-Range: {offset}-{}\r\nContent-Length: {}\r\n\r\n",
        path.path(),
        path.query().unwrap_or_default(),
        offset + chunk.len() - 1,
        chunk.len()
    );
    let mut stream = connect(from, to).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&chunk[..sent]).await.unwrap();
    stream
}

/// A user's stalled PATCH bodies hold every upload slot only until the idle timeout: then
/// they are dropped, new uploads start, and each stalled upload resumes at the bytes that
/// were acknowledged, nothing of the stalled chunk half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upload_bodies_are_dropped_and_stay_resumable() {
    const UPLOADS: usize = 4;
    const CHUNK: usize = 100_000;
    let server = serve(&[
        idle_setting(HOLD),
        (
            "IPFS_REGISTRY_LIMITS__MAX_CONCURRENT_UPLOADS",
            UPLOADS.to_string(),
        ),
        ("IPFS_REGISTRY_LIMITS__PER_CLIENT_PERCENT", "100".to_owned()),
    ])
    .await;
    let oci = Oci::new(&server.served.base);
    let repo = "slow/upload";
    let data = common::oci::random_bytes(2 * CHUNK);
    let digest = common::oci::sha256(&data);

    let mut sessions = Vec::new();
    for _ in 0..UPLOADS {
        let location = upload_session(&oci, repo).await;
        let first = expect_status(patch(&oci, &location, 0, &data[..CHUNK]).await, 202).await;
        sessions.push(first.headers()["location"].to_str().unwrap().to_owned());
    }
    let mut stalled = Vec::new();
    for location in &sessions {
        stalled.push(
            stalled_patch(
                ip(2),
                server.addr,
                location,
                CHUNK,
                &data[CHUNK..],
                CHUNK / 2,
            )
            .await,
        );
    }
    metric_reaches(
        &server.served.base,
        "ipfs_registry_uploads_in_progress",
        UPLOADS as f64,
    )
    .await;

    let started = Instant::now();
    for stream in &mut stalled {
        let limit = (HOLD + SLACK).saturating_sub(started.elapsed());
        let answer = closed_within(stream, limit).await;
        assert!(
            answer.is_some(),
            "a stalled PATCH was still open after {:?}",
            started.elapsed()
        );
    }

    // The slots are free: a whole new upload goes through.
    let fresh = common::oci::random_bytes(1000);
    oci.push_blob(repo, &fresh).await;

    // Each stalled session is where its last acknowledged chunk left it.
    for location in &sessions {
        let status = oci.get(location).await;
        let status = expect_status(status, 204).await;
        assert_eq!(
            status.headers()["range"].to_str().unwrap(),
            format!("0-{}", CHUNK - 1)
        );
    }
    let resumed = expect_status(patch(&oci, &sessions[0], CHUNK, &data[CHUNK..]).await, 202).await;
    let location = resumed.headers()["location"].to_str().unwrap().to_owned();
    let done = oci
        .http
        .put(oci.with_query(&location, &[("digest", &digest)]))
        .send()
        .await
        .unwrap();
    expect_status(done, 201).await;
    let pulled = oci.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    let pulled = expect_status(pulled, 200).await.bytes().await.unwrap();
    assert!(pulled == data);
}

/// One address holds at most its share of the upload slots (here half of 4); another
/// address still gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_slot() {
    const CHUNK: usize = 10_000;
    let server = serve(&[
        ("IPFS_REGISTRY_LIMITS__IDLE_TIMEOUT", "10m".to_owned()),
        (
            "IPFS_REGISTRY_LIMITS__MAX_CONCURRENT_UPLOADS",
            "4".to_owned(),
        ),
        ("IPFS_REGISTRY_LIMITS__PER_CLIENT_PERCENT", "50".to_owned()),
    ])
    .await;
    let oci = Oci::new(&server.served.base);
    let repo = "slow/share";
    let data = common::oci::random_bytes(CHUNK);

    let mut held = Vec::new();
    for _ in 0..2 {
        let location = upload_session(&oci, repo).await;
        held.push(stalled_patch(ip(2), server.addr, &location, 0, &data, CHUNK / 2).await);
    }
    metric_reaches(
        &server.served.base,
        "ipfs_registry_uploads_in_progress",
        2.0,
    )
    .await;

    let location = upload_session(&oci, repo).await;
    let mut third = stalled_patch(ip(2), server.addr, &location, 0, &data, CHUNK).await;
    let status = read_head(&mut third).await;
    assert_eq!(status, Some(429), "a third upload from the same address");

    let mut other = stalled_patch(ip(3), server.addr, &location, 0, &data, CHUNK).await;
    let status = read_head(&mut other).await;
    assert_eq!(status, Some(202), "an upload from another address");
    drop(held);
}
