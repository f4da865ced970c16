//! The `ipfs-registry` binary as a child process.

use std::process::{Command, Output};

use ipfs_registry::config::Config;

/// The binary, quiet (`warn`) and with none of the test run's own `IPFS_REGISTRY_*`
/// settings, so that only what a test sets reaches it.
pub fn registry_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ipfs-registry"));
    for (key, _) in std::env::vars() {
        if key.starts_with("IPFS_REGISTRY_") {
            command.env_remove(key);
        }
    }
    command.env("IPFS_REGISTRY_LOG", "warn");
    command
}

/// The environment that points a child process at the stores of `config`: PostgreSQL and
/// the IPFS node, or the embedded stores in its data directory.
pub fn stores_env(config: &Config) -> Vec<(&'static str, String)> {
    let mut env = vec![(
        "IPFS_REGISTRY_DATA_DIR",
        config.data_dir.display().to_string(),
    )];
    if let Some(url) = &config.database.url {
        env.push(("IPFS_REGISTRY_DATABASE__URL", url.clone()));
    }
    if let Some(url) = &config.ipfs.url {
        env.push(("IPFS_REGISTRY_IPFS__URL", url.to_string()));
    }
    env
}

/// `ipfs-registry gc` (no grace period) on the stores of a test registry, which may be
/// running.
pub fn gc_command(config: &Config, args: &[&str]) -> Output {
    registry_command()
        .envs(stores_env(config))
        .env("IPFS_REGISTRY_GC__GRACE_PERIOD", "0s")
        .arg("gc")
        .args(args)
        .output()
        .expect("run ipfs-registry gc")
}

/// `ipfs-registry verify` on the stores of a test registry. Node calls time out after 5 s:
/// a js-ipfs node asked for a block it lost waits forever otherwise.
pub fn verify_command(config: &Config, args: &[&str]) -> Output {
    registry_command()
        .envs(stores_env(config))
        .env("IPFS_REGISTRY_IPFS__TIMEOUT", "5s")
        .arg("verify")
        .args(args)
        .output()
        .expect("run ipfs-registry verify")
}

/// `ipfs-registry verify --json` (and `args`): whether it succeeded, and its report.
pub fn verify_json(config: &Config, args: &[&str]) -> (bool, serde_json::Value) {
    let out = verify_command(config, &[&["--json"], args].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// The standard output of a command that must have succeeded (else its output, both
/// streams, in the failure).
pub fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `ipfs-registry serve` as a child process, killed when dropped (also when a test fails).
///
/// It listens on `127.0.0.1:0` and the test learns the port from the server's own
/// `listening` log event: a port chosen by the test, released and then bound by the child
/// could meanwhile be taken by another test's server, which would then answer in its place.
pub struct Served {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// A log filter for `serve` that keeps it quiet but for the events of `ipfs_registry::server`,
/// among them `listening`, which [`Served::start`] needs.
pub const SERVE_QUIET_LOG: &str = "warn,ipfs_registry::server=info";

/// [`registry_command`] for [`Served::start`]: quiet, but for its address.
pub fn serve_command() -> Command {
    let mut command = registry_command();
    command.env("IPFS_REGISTRY_LOG", SERVE_QUIET_LOG);
    command
}

impl Served {
    /// Starts `command` (a [`serve_command`] with its settings, without the subcommand) as
    /// `serve` and waits until it answers `/healthz`. Its log filter must let the
    /// `listening` event (`ipfs_registry::server`, info) through.
    pub async fn start(command: &mut Command) -> Served {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = command
            .arg("serve")
            .env("IPFS_REGISTRY_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ipfs-registry serve");
        let (found, address) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        // Reads the whole log (so the child never blocks on a full pipe) and reports the
        // address it listens on.
        let reader = std::thread::spawn(move || {
            let listening = regex::Regex::new(r"listening\W.*?(127\.0\.0\.1:\d+)").unwrap();
            let mut log = String::new();
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = listening.captures(&line) {
                    let _ = found.send(address[1].to_owned());
                }
                log.push_str(&line);
                log.push('\n');
            }
            log
        });
        let mut served = Served {
            child,
            base: String::new(),
            stderr: Some(reader),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let address = loop {
            if let Ok(address) = address.try_recv() {
                break address;
            }
            if let Some(status) = served.child.try_wait().unwrap() {
                panic!("serve exited at start ({status}):\n{}", served.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "serve logged no address within 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        served.base = format!("http://{address}");
        // A client of its own: a pooled connection must not outlive this server.
        let http = reqwest::Client::new();
        loop {
            let answer = http.get(format!("{}/healthz", served.base)).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return served;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "serve did not answer within 30 s:\n{}",
                served.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port`.
    pub fn host(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// SIGTERM; then whether it exited successfully (within 30 s), its stdout and its log
    /// (stderr).
    pub fn stop(mut self) -> (bool, String, String) {
        use std::io::Read;
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "no exit after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout).unwrap();
        }
        (status.success(), stdout, self.log())
    }

    /// Its log, once it has exited (or been killed).
    fn log(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
