//! The registries under test, each a child process on a free loopback port, killed when
//! dropped (also when the bench fails or is interrupted).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

/// How long a server may take to answer `/v2/`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Server {
    /// Short name in reports: `embedded`, `kubo`, `distribution`.
    pub name: &'static str,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// `None`: served inside this process (the smoke test), whose own memory is measured.
    child: Option<Child>,
}

impl Server {
    /// A registry this process serves itself at `base`.
    #[allow(dead_code)] // used by the smoke test only
    pub fn in_process(name: &'static str, base: String) -> Server {
        Server {
            name,
            base,
            child: None,
        }
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

    /// CPU time (user + system) the server process has used so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let pid = self.pid().context("server exited")?;
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

    /// Resets the peak (VmHWM) to the current resident size, so a following phase's
    /// peak is its own.
    pub fn reset_peak_rss(&self) -> Result<()> {
        let pid = self.pid().context("server exited")?;
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
            .context("resetting the peak resident size (/proc/<pid>/clear_refs)")
    }

    pub async fn stop(mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill().await;
        }
    }
}

/// A free loopback port (bound, then released for the child): for distribution, which
/// logs its address only at a level that would also log every request.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

async fn wait_ready(
    name: &'static str,
    mut child: Child,
    base: String,
    log: &Path,
) -> Result<Server> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{name} exited at start ({status}):\n{log:.2000}");
        }
        if let Ok(response) = http.get(format!("{base}/v2/")).send().await {
            if response.status().is_success() {
                return Ok(Server {
                    name,
                    base,
                    child: Some(child),
                });
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
    wait_ready(name, child, format!("http://{address}"), &log).await
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
    wait_ready(
        "distribution",
        child,
        format!("http://127.0.0.1:{port}"),
        &log,
    )
    .await
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
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {admin_url} (--database-url)"))?;
    tokio::spawn(connection);
    let name = format!(
        "ipfs_registry_bench_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let mut url = reqwest::Url::parse(admin_url)?;
    url.set_path(&format!("/{name}"));
    Ok((name, url.to_string()))
}

pub async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}
