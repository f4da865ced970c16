//! The registries under test, and nginx serving the same bytes as files, each a child
//! process on a free loopback port, killed when dropped (also when the bench fails or is
//! interrupted).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

/// How long a server may take to answer `/v2/`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Server {
    /// Short name in reports: `embedded`, `kubo`, `distribution`, `nginx`.
    pub name: &'static str,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// `None`: served inside this process (the smoke test), whose own memory is measured.
    child: Option<Child>,
    /// A static file server (nginx): it takes no pushes; what it serves is written under
    /// this root at the path of the registry URL (`<root>/v2/<repo>/blobs/<digest>`).
    pub files: Option<PathBuf>,
    /// Stops the server gracefully: nginx's master must take its workers with it (killed
    /// alone, it would leave them serving the port).
    shutdown: Option<std::process::Command>,
}

impl Server {
    /// A registry this process serves itself at `base`.
    #[allow(dead_code)] // used by the smoke test only
    pub fn in_process(name: &'static str, base: String) -> Server {
        Server {
            name,
            base,
            child: None,
            files: None,
            shutdown: None,
        }
    }

    /// A registry (it takes pushes), not a static file server.
    pub fn is_registry(&self) -> bool {
        self.files.is_none()
    }

    pub fn pid(&self) -> Option<u32> {
        match &self.child {
            Some(child) => child.id(),
            None => Some(std::process::id()),
        }
    }

    /// Peak resident set size (VmHWM) so far, in MiB.
    pub fn peak_rss_mib(&self) -> Result<f64> {
        let pid = self.pid().context("server exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/<pid>/status")?;
        Ok(kib / 1024.0)
    }

    /// CPU time (user + system) the server process and its children (nginx's workers)
    /// have used so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let pid = self.pid().context("server exited")?;
        let mut seconds = process_cpu_seconds(pid)?;
        if self.child.is_some() {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                seconds += process_cpu_seconds(child).unwrap_or(0.0);
            }
        }
        Ok(seconds)
    }

    /// Resets the peak (VmHWM) to the current resident size, so a following phase's
    /// peak is its own.
    pub fn reset_peak_rss(&self) -> Result<()> {
        let pid = self.pid().context("server exited")?;
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
            .context("resetting the peak resident size (/proc/<pid>/clear_refs)")
    }

    pub async fn stop(mut self) {
        self.shut_down();
        if let Some(child) = &mut self.child {
            let _ = child.kill().await;
        }
    }

    /// Runs the graceful shutdown, if the server has one, and waits a while for the
    /// process to end (blocking: also on drop, where nothing can be awaited).
    fn shut_down(&mut self) {
        let (Some(mut command), Some(child)) = (self.shutdown.take(), self.child.as_mut()) else {
            return;
        };
        let stopping = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while stopping && Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// CPU time (user + system) of one process so far, in seconds.
fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("unreadable /proc/<pid>/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/<pid>/stat")?
            .parse::<f64>()?)
    };
    // utime and stime (fields 14 and 15), in USER_HZ ticks: 100 per second on Linux.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// A free loopback port (bound, then released for the child): for distribution, which
/// logs its address only at a level that would also log every request.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A server started from `child`, once it answers `/v2/` (killed when it does not).
fn started(name: &'static str, child: Child, base: String) -> Server {
    Server {
        name,
        base,
        child: Some(child),
        files: None,
        shutdown: None,
    }
}

async fn wait_ready(mut server: Server, log: &Path) -> Result<Server> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    let (name, base) = (server.name, server.base.clone());
    loop {
        if let Some(child) = &mut server.child {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                bail!("{name} exited at start ({status}):\n{log:.2000}");
            }
        }
        if let Ok(response) = http.get(format!("{base}/v2/")).send().await {
            if response.status().is_success() {
                return Ok(server);
            }
        }
        if Instant::now() > deadline {
            bail!("{name} did not answer {base}/v2/ within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_file(dir: &Path, name: &str) -> Result<(PathBuf, std::fs::File)> {
    let path = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&path)?;
    Ok((path, file))
}

/// ipfs-registry from `binary`: embedded stores under `dir` when `database_url` and
/// `ipfs_url` are `None`.
pub async fn start_registry(
    name: &'static str,
    binary: &Path,
    dir: &Path,
    database_url: Option<&str>,
    ipfs_url: Option<&str>,
) -> Result<Server> {
    let (log, file) = log_file(dir, name)?;
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .env_clear()
        // The kernel picks the port and the log says which: a port chosen here could be
        // taken, by the time the child binds it, by another server that would then answer.
        .env("IPFS_REGISTRY_LISTEN", "127.0.0.1:0")
        .env("IPFS_REGISTRY_DATA_DIR", dir.join(format!("{name}-data")))
        // Request logs off in every server: they would cost both sides alike, but only
        // measure the terminal. The server's start-up events (its address) stay.
        .env("IPFS_REGISTRY_LOG", "warn,ipfs_registry::server=info")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true);
    if let Some(url) = database_url {
        command.env("IPFS_REGISTRY_DATABASE__URL", url);
    }
    if let Some(url) = ipfs_url {
        command.env("IPFS_REGISTRY_IPFS__URL", url);
    }
    let mut child = command.spawn().with_context(|| {
        format!(
            "starting {} (build it: cargo build --release --bins)",
            binary.display()
        )
    })?;
    let address = listening_address(name, &mut child, &log).await?;
    wait_ready(started(name, child, format!("http://{address}")), &log).await
}

/// The address ipfs-registry logged (`event="listening" address=...`) on start.
async fn listening_address(name: &'static str, child: &mut Child, log: &Path) -> Result<String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let address = text
            .lines()
            .filter_map(|line| {
                line.split_once("event=\"listening\" address=")?
                    .1
                    .split_whitespace()
                    .next()
            })
            .next();
        if let Some(address) = address {
            return Ok(address.to_owned());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited at start ({status}):\n{text:.2000}");
        }
        if Instant::now() > deadline {
            bail!("{name} logged no listening address within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CNCF distribution (`docker-registry serve`) on filesystem storage under `dir`.
pub async fn start_distribution(binary: &Path, dir: &Path) -> Result<Server> {
    let port = free_port()?;
    let root = dir.join("distribution-data");
    std::fs::create_dir_all(&root)?;
    let config = dir.join("distribution.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             cache:\n    blobdescriptor: inmemory\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            root.display()
        ),
    )?;
    let (log, file) = log_file(dir, "distribution")?;
    let child = Command::new(binary)
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting distribution ({}): install it with `apt-get install -y docker-registry` \
                 or pass --distribution-bin, or leave it out with --skip-distribution",
                binary.display()
            )
        })?;
    let server = started("distribution", child, format!("http://127.0.0.1:{port}"));
    wait_ready(server, &log).await
}

/// nginx serving files under `<dir>/nginx/root` as they are: the same manifest bytes (with
/// the manifest's media type) and the same blob bytes the registries serve, at the same
/// URL paths, with sendfile and keep-alive, as a static file server does best. Its own
/// master process and, like the registries, a worker per core; no access log.
pub async fn start_nginx(binary: &Path, dir: &Path) -> Result<Server> {
    let port = free_port()?;
    let prefix = dir.join("nginx");
    let root = prefix.join("root");
    std::fs::create_dir_all(root.join("v2"))?;
    std::fs::create_dir_all(prefix.join("temp"))?;
    let temp = |what: &str| format!("{what}_temp_path \"{}/temp/{what}\";", prefix.display());
    // Workers run as `nobody` when the master is root: they could not read the files in a
    // private temporary directory.
    let user = if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?) == 0 {
        "user root root;"
    } else {
        ""
    };
    let config = prefix.join("nginx.conf");
    // Beside the other servers' logs; also its start-up errors (`-e`).
    let log = dir.join("nginx.log");
    std::fs::write(
        &config,
        format!(
            "daemon off;\n\
             {user}\n\
             worker_processes auto;\n\
             pid \"{prefix}/nginx.pid\";\n\
             error_log \"{log}\" warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   sendfile on;\n\
             \x20   tcp_nopush on;\n\
             \x20   tcp_nodelay on;\n\
             \x20   keepalive_timeout 75s;\n\
             \x20   keepalive_requests 1000000;\n\
             \x20   {client_body} {proxy} {fastcgi} {uwsgi} {scgi}\n\
             \x20   types {{ }}\n\
             \x20   default_type application/octet-stream;\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       root \"{root}\";\n\
             \x20       location = /v2/ {{ default_type application/json; return 200 \"{{}}\"; }}\n\
             \x20       location ~ ^/v2/.+/manifests/[^/]+$ {{ default_type {manifest}; }}\n\
             \x20   }}\n\
             }}\n",
            prefix = prefix.display(),
            log = log.display(),
            root = root.display(),
            client_body = temp("client_body"),
            proxy = temp("proxy"),
            fastcgi = temp("fastcgi"),
            uwsgi = temp("uwsgi"),
            scgi = temp("scgi"),
            manifest = crate::workload::OCI_MANIFEST,
        ),
    )?;
    let command = |extra: &[&str]| {
        let mut command = std::process::Command::new(binary);
        command
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config)
            // The error log before the configuration is read (else the built-in path).
            .arg("-e")
            .arg(&log)
            .args(extra);
        command
    };
    let child = Command::from(command(&[]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting nginx ({}): install it with `apt-get install -y nginx-light` \
                 or pass --nginx-bin, or leave it out with --skip-nginx",
                binary.display()
            )
        })?;
    let mut server = started("nginx", child, format!("http://127.0.0.1:{port}"));
    server.files = Some(root);
    server.shutdown = Some(command(&["-s", "stop"]));
    wait_ready(server, &log).await
}

/// Finds `name` on PATH, or takes it as a path.
pub fn find_binary(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_owned());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// A fresh PostgreSQL database for the Kubo-mode registry, dropped by [`drop_database`].
pub async fn create_database(admin_url: &str) -> Result<(String, String)> {
    let name = format!(
        "ipfs_registry_bench_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let url = create_named_database(admin_url, &name).await?;
    Ok((name, url))
}

/// Creates the database `name` on the server of `admin_url` (replacing one of that name
/// an interrupted run left) and returns its URL.
pub async fn create_named_database(admin_url: &str, name: &str) -> Result<String> {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {admin_url} (--database-url)"))?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let mut url = reqwest::Url::parse(admin_url)?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

pub async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}
