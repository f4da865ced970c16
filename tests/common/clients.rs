//! The container clients people use, as the tests' users: Docker's CLI with a dockerd of
//! its own, podman, and containerd's `ctr` with a containerd of its own, all kept apart from
//! the host's daemons, sockets, logins and configuration.
//!
//! dockerd and containerd start once per test binary, on first use, each in a directory of
//! its own under `<tmp>/ipfs-registry-clients/`. A static's destructor never runs, so a drop
//! guard cannot stop a daemon shared by a whole binary; instead a small bash supervisor runs
//! each daemon in a process group of its own and waits on a pipe whose only write end the
//! test process holds. When the test process ends, however it ends (the harness returns, a
//! test panics, SIGKILL), the pipe closes, and the supervisor stops the daemon's process
//! group (SIGTERM, SIGKILL after a deadline) and removes the directory.
//!
//! Each test gets client state of its own: a Docker config directory (its logins and its
//! `docker manifest` lists), a podman storage root and auth file, a containerd namespace.
//!
//! A client that is not installed, or a daemon that cannot start here, makes the test skip
//! with a loud message; when `CI` is set it fails instead, so CI never skips them.
//! `IPFS_REGISTRY_TEST_CLIENTS_DEBUG=1` prints every command with its output.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

/// A client command that takes longer has hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
/// Generous: a loaded 2-core CI machine, compiling something else, starts dockerd slowly.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether this is CI (`CI` set, and not to `false` or `0`), where client tests must run.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A client that cannot run here: the test skips with a message nobody can miss, or under
/// CI fails.
fn unavailable<T>(client: &str, why: &str) -> Option<T> {
    if in_ci() {
        panic!("{client} cannot run here, and CI must not skip client tests: {why}");
    }
    // Straight to stderr: the test harness captures `eprintln!` of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! SKIPPED: {client} cannot run here, so this test checked nothing.\n\
         !!!!!!!! {why}\n\
         !!!!!!!! (scripts/ensure-tools.sh installs it, as root; with CI set this fails.)\n"
    );
    None
}

fn debug() -> bool {
    std::env::var_os("IPFS_REGISTRY_TEST_CLIENTS_DEBUG").is_some()
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| {
            path.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A directory of its own under `<tmp>/ipfs-registry-tests/`, which scripts/test.sh removes
/// however a run ends.
fn scratch_dir(prefix: &str) -> TempDir {
    scratch_dir_in("ipfs-registry-tests", prefix)
}

/// A daemon's directory, under `<tmp>/ipfs-registry-clients/`: its supervisor removes it,
/// and another test.sh run finishing meanwhile (its cleanup removes ipfs-registry-tests)
/// must not pull it from under a daemon that lives as long as the test binary. Short, for
/// the Unix sockets in it (at most 107 bytes of path).
fn daemon_dir(prefix: &str) -> PathBuf {
    scratch_dir_in("ipfs-registry-clients", prefix).keep()
}

fn scratch_dir_in(base: &str, prefix: &str) -> TempDir {
    let base = std::env::temp_dir().join(base);
    // A supervisor removes the base once it is empty; it may do so between these two steps.
    let mut attempts = 0;
    loop {
        std::fs::create_dir_all(&base).unwrap();
        match tempfile::Builder::new().prefix(prefix).tempdir_in(&base) {
            Ok(dir) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 5 => attempts += 1,
            Err(e) => panic!("a directory in {}: {e}", base.display()),
        }
    }
}

/// A TOML string holding `path`.
fn toml_path(path: &Path) -> String {
    toml::Value::String(path.to_str().expect("a UTF-8 path").to_owned()).to_string()
}

/// What a client command did.
pub struct Output {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Both streams: clients print the same message on either, depending on the version.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Whether either stream mentions any of `words` (ignoring case).
    pub fn mentions_any(&self, words: &[&str]) -> bool {
        let text = self.text().to_lowercase();
        words.iter().any(|w| text.contains(&w.to_lowercase()))
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} → {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to its end (killed after `COMMAND_TIMEOUT`), feeding it `stdin`; `what`
/// names it in messages (the tool and the test's arguments, not the isolation flags).
async fn run(mut command: tokio::process::Command, what: String, stdin: Option<&[u8]>) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let pipe = child.stdin.take();
    // Fed while its output is read, so neither side waits for the other's pipe to drain. A
    // client that exits without reading it all shows why in its output; that is the error.
    let feed = async move {
        if let (Some(mut pipe), Some(input)) = (pipe, stdin) {
            let _ = pipe.write_all(input).await;
        }
    };
    let finished = async { tokio::join!(feed, child.wait_with_output()).1 };
    let output = match tokio::time::timeout(COMMAND_TIMEOUT, finished).await {
        Ok(output) => output.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => panic!("{what} did not finish within {COMMAND_TIMEOUT:?} (killed)"),
    };
    let output = Output {
        command: what,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    if debug() {
        eprintln!("[{:?}] {output}", started.elapsed());
    }
    output
}

/// Runs a daemon as its arguments say (`dir`, then the command) and stops it when the test
/// process ends: stdin is a pipe only the test process can write to, so EOF there means
/// that process is gone, however it ended.
const SUPERVISOR: &str = r#"
set -u
dir=$1; shift
exec 3<&0 </dev/null
set -m  # every background job in a process group of its own
"$@" 3<&- >"$dir/daemon.log" 2>&1 &
daemon=$!
cat <&3 3<&- >/dev/null &
watcher=$!
exec 3<&-
wait -n -p ended
status=$?
# Each kill of the daemon's group right after it exits: later, its id could be another's.
if [[ $ended == "$daemon" ]]; then
  # It died while the tests run: they report it, with its log; clean up at the end.
  echo "$status" >"$dir/exited"
  kill -KILL -- "-$daemon" 2>/dev/null
  wait "$watcher"
else
  kill -TERM -- "-$daemon" 2>/dev/null
  ( sleep 20; kill -KILL -- "-$daemon" ) 2>/dev/null &
  killer=$!
  wait "$daemon"
  kill -KILL -- "-$killer" 2>/dev/null
  kill -KILL -- "-$daemon" 2>/dev/null  # whatever of its group outlived it
fi
# dockerd bind-mounts its data root onto itself, and undoes that only when it stops cleanly.
while read -r _ _ _ _ point _; do
  if [[ $point == "$dir"/* ]]; then umount -l -- "$point" 2>/dev/null; fi
done </proc/self/mountinfo
rm -rf -- "$dir"
rmdir -- "${dir%/*}" 2>/dev/null  # the base, unless another binary's daemon is in it
"#;

/// A daemon under the supervisor, in `dir`; stopped when the test process ends.
struct Daemon {
    name: &'static str,
    dir: PathBuf,
    /// The pipe's write end: closed only when the process ends (or this is dropped after a
    /// failed start), which tells the supervisor to stop the daemon.
    _lifeline: std::process::ChildStdin,
}

impl Daemon {
    fn start(
        name: &'static str,
        dir: PathBuf,
        program: &Path,
        args: &[OsString],
        envs: &[(&str, &Path)],
    ) -> Daemon {
        let mut supervisor = std::process::Command::new("bash")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("supervisor")
            .arg(&dir)
            .arg(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Out of the test's process group: a Ctrl-C there must let it clean up.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start bash to supervise {name}: {e}"));
        let lifeline = supervisor.stdin.take().unwrap();
        // It normally outlives this process (init reaps it); should it end sooner, this
        // reaps it.
        std::thread::spawn(move || supervisor.wait());
        Daemon {
            name,
            dir,
            _lifeline: lifeline,
        }
    }

    /// Polls `ready` until it holds; fails (with the daemon's log) when the daemon exits or
    /// the deadline passes.
    async fn wait_until<F, Fut>(&self, mut ready: F) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            if ready().await {
                return Ok(());
            }
            if let Ok(status) = std::fs::read_to_string(self.dir.join("exited")) {
                return Err(format!(
                    "{} exited (status {}) before it was ready; its log:\n{}",
                    self.name,
                    status.trim(),
                    self.log_tail(40)
                ));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "{} was not ready within {START_TIMEOUT:?}; its log:\n{}",
                    self.name,
                    self.log_tail(40)
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

// ----- containerd -----

pub struct Containerd {
    daemon: Daemon,
    pub socket: PathBuf,
    ctr: PathBuf,
}

async fn start_containerd() -> Result<Containerd, String> {
    let program = find_on_path("containerd").ok_or("containerd is not installed")?;
    let ctr = find_on_path("ctr").ok_or("ctr (containerd's CLI) is not installed")?;
    let dir = daemon_dir("containerd-");
    let socket = dir.join("containerd.sock");
    let config = format!(
        r#"version = 2
root = {root}
state = {state}
# No Kubernetes (CRI); no snapshotters that want a kernel module or a file system of their
# own (pulls unpack with the native one).
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

# Its default is /opt/containerd.
[plugins."io.containerd.internal.v1.opt"]
  path = {opt}
"#,
        root = toml_path(&dir.join("root")),
        state = toml_path(&dir.join("state")),
        socket = toml_path(&socket),
        ttrpc = toml_path(&dir.join("ttrpc.sock")),
        opt = toml_path(&dir.join("opt")),
    );
    let config_file = dir.join("config.toml");
    std::fs::write(&config_file, config).unwrap();
    // Unpacking mounts each snapshot on a temporary directory: under `dir`, not /tmp.
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let args = [OsString::from("--config"), config_file.into_os_string()];
    let daemon = Daemon::start("containerd", dir, &program, &args, &[("TMPDIR", &tmp)]);
    let containerd = Containerd {
        daemon,
        socket,
        ctr,
    };
    containerd
        .daemon
        .wait_until(|| async {
            let mut command = tokio::process::Command::new(&containerd.ctr);
            command
                .arg("--address")
                .arg(&containerd.socket)
                .arg("version");
            let what = "ctr version".to_owned();
            containerd.socket.exists() && run(command, what, None).await.success()
        })
        .await?;
    Ok(containerd)
}

/// `ctr` against this test binary's containerd, in a namespace of this test's own.
pub struct Ctr {
    containerd: &'static Containerd,
    pub namespace: String,
}

/// A `ctr` client, or `None` (after a loud message) when containerd cannot run here.
pub async fn containerd() -> Option<Ctr> {
    static DAEMON: OnceCell<Result<Containerd, String>> = OnceCell::const_new();
    match DAEMON.get_or_init(start_containerd).await {
        Ok(containerd) => Some(Ctr {
            containerd,
            namespace: super::unique_name(),
        }),
        Err(why) => unavailable("containerd", why),
    }
}

impl Ctr {
    fn what(args: &[&str]) -> String {
        format!("ctr {}", args.join(" "))
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.containerd.ctr);
        command
            .arg("--address")
            .arg(&self.containerd.socket)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            // Works on any file system and needs no overlay module.
            .env("CONTAINERD_SNAPSHOTTER", "native")
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE");
        command
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        run(self.command(args), Self::what(args), None).await
    }

    /// Runs `ctr <args>`; panics with its output (and containerd's log) unless it succeeds.
    pub async fn ok(&self, args: &[&str]) -> Output {
        let output = self.run(args).await;
        assert!(
            output.success(),
            "{output}\n--- containerd's log ---\n{}",
            self.containerd.daemon.log_tail(20)
        );
        output
    }
}

// ----- Docker -----

pub struct Dockerd {
    daemon: Daemon,
    /// Its own containerd, rather than the one dockerd would start itself: that one puts
    /// /opt/containerd on the host, and sits in a session of its own that a kill of
    /// dockerd's process group would miss.
    containerd: Containerd,
    socket: PathBuf,
    cli: PathBuf,
}

/// The docker CLI installed with `dockerd`: another one earlier on PATH (a newer static
/// build, say) wants the buildx plugin to build, and differs from what CI runs.
fn docker_cli(dockerd: &Path) -> Option<PathBuf> {
    let sbin = dockerd.parent()?;
    [sbin.join("docker"), sbin.parent()?.join("bin/docker")]
        .into_iter()
        .find(|path| path.is_file())
        .or_else(|| find_on_path("docker"))
}

async fn docker_ping(socket: &Path) -> bool {
    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    let request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200")
}

async fn start_dockerd() -> Result<Dockerd, String> {
    start_dockerd_with(serde_json::json!({})).await
}

/// A dockerd whose daemon.json also holds `settings` (an object).
async fn start_dockerd_with(settings: serde_json::Value) -> Result<Dockerd, String> {
    let program = find_on_path("dockerd").ok_or("dockerd (Debian's docker.io) is not installed")?;
    let cli = docker_cli(&program).ok_or("the docker CLI is not installed")?;
    find_on_path("busybox").ok_or("busybox (the images' rootfs) is not installed")?;
    let containerd = start_containerd().await?;
    let dir = daemon_dir("dockerd-");
    let socket = dir.join("docker.sock");
    // Instead of /etc/docker/daemon.json, whose settings could clash with these flags; and
    // the daemon's identity key in here, not in /etc/docker/key.json.
    let config = dir.join("daemon.json");
    let key = dir.join("key.json");
    let mut daemon_json = serde_json::json!({ "deprecated-key-path": key });
    if let (Some(all), Some(extra)) = (daemon_json.as_object_mut(), settings.as_object()) {
        all.extend(extra.clone());
    }
    std::fs::write(&config, daemon_json.to_string()).unwrap();
    let path = |name: &str| dir.join(name).into_os_string();
    let mut args: Vec<OsString> = vec!["--config-file".into(), config.into_os_string()];
    args.extend(["--containerd".into(), containerd.socket.clone().into()]);
    // No networking to set up (containers never run here), nothing in the host's firewall.
    args.extend(
        ["--iptables=false", "--ip6tables=false", "--bridge=none"]
            .into_iter()
            .map(OsString::from),
    );
    // Plain directories: no overlay mounts to leave behind.
    args.push("--storage-driver=vfs".into());
    args.extend(["--data-root".into(), path("data")]);
    args.extend(["--exec-root".into(), path("exec")]);
    args.extend(["--pidfile".into(), path("dockerd.pid")]);
    args.extend([
        "--host".into(),
        format!("unix://{}", socket.display()).into(),
    ]);
    let daemon = Daemon::start("dockerd", dir, &program, &args, &[]);
    daemon.wait_until(|| docker_ping(&socket)).await?;
    Ok(Dockerd {
        daemon,
        containerd,
        socket,
        cli,
    })
}

/// The docker CLI against this test binary's dockerd, with a config directory (logins,
/// manifest lists) of this test's own.
pub struct Docker {
    daemon: &'static Dockerd,
    config: TempDir,
}

/// A docker client, or `None` (after a loud message) when dockerd cannot run here.
pub async fn docker() -> Option<Docker> {
    static DAEMON: OnceCell<Result<Dockerd, String>> = OnceCell::const_new();
    match DAEMON.get_or_init(start_dockerd).await {
        Ok(daemon) => Some(Docker {
            daemon,
            // In the daemon's directory, so that a killed test binary leaves none behind.
            config: tempfile::Builder::new()
                .prefix("config-")
                .tempdir_in(&daemon.daemon.dir)
                .unwrap(),
        }),
        Err(why) => unavailable("Docker (dockerd)", why),
    }
}

/// A docker client of a dockerd of its own, whose daemon.json also holds `settings` (such
/// as `registry-mirrors`, which the shared daemon must not have); it runs until the test
/// process ends. `None` (after a loud message) when dockerd cannot run here.
pub async fn docker_with(settings: serde_json::Value) -> Option<Docker> {
    match start_dockerd_with(settings).await {
        Ok(daemon) => {
            let daemon: &'static Dockerd = Box::leak(Box::new(daemon));
            Some(Docker {
                daemon,
                config: tempfile::Builder::new()
                    .prefix("config-")
                    .tempdir_in(&daemon.daemon.dir)
                    .unwrap(),
            })
        }
        Err(why) => unavailable("Docker (dockerd)", &why),
    }
}

/// What `docker push` said about each layer (by short id), and the digest it pushed.
#[derive(Debug)]
pub struct Pushed {
    pub digest: String,
    /// The last status of each layer: `Pushed`, `Layer already exists`, `Mounted from <repo>`.
    pub layers: BTreeMap<String, String>,
    pub output: String,
}

impl Docker {
    fn what(args: &[&str]) -> String {
        format!("docker {}", args.join(" "))
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.daemon.cli);
        command
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.daemon.socket.display()),
            )
            .env("DOCKER_CONFIG", self.config.path())
            // The classic builder: what this daemon builds with when no buildx is installed.
            .env("DOCKER_BUILDKIT", "0")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        command
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        run(self.command(args), Self::what(args), None).await
    }

    pub async fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        run(self.command(args), Self::what(args), Some(input)).await
    }

    /// Panics with the command's output and dockerd's log unless it succeeded.
    pub fn check(&self, output: Output) -> Output {
        assert!(
            output.success(),
            "{output}\n--- dockerd's log ---\n{}\n--- containerd's log ---\n{}",
            self.daemon.daemon.log_tail(20),
            self.daemon.containerd.daemon.log_tail(10)
        );
        output
    }

    pub async fn ok(&self, args: &[&str]) -> Output {
        let output = self.run(args).await;
        self.check(output)
    }

    /// `docker build` (classic builder) of `FROM <base>` (a local image) or `FROM scratch`,
    /// and one `COPY` — so one layer — per file; returns the image id.
    pub async fn build(
        &self,
        tag: &str,
        base: Option<&str>,
        platform: Option<&str>,
        files: &[(&str, &[u8])],
    ) -> String {
        let context = tempfile::tempdir().unwrap();
        let mut dockerfile = format!("FROM {}\n", base.unwrap_or("scratch"));
        for (i, (path, data)) in files.iter().enumerate() {
            let name = format!("file-{i}");
            write_file(&context.path().join(&name), data);
            dockerfile.push_str(&format!("COPY {name} /{path}\n"));
        }
        dockerfile.push_str("CMD [\"/bin/busybox\", \"sh\"]\n");
        std::fs::write(context.path().join("Dockerfile"), dockerfile).unwrap();
        let context = context.path().to_str().unwrap();
        // No build cache: a cached step's image is the parent of another test's image, which
        // that test's `docker rmi` deletes while this build still stands on it.
        let mut args = vec!["build", "--quiet", "--no-cache", "--tag", tag];
        if let Some(platform) = platform {
            args.extend(["--platform", platform]);
        }
        args.push(context);
        self.ok(&args).await.stdout.trim().to_owned()
    }

    /// `docker import` of a root file system (a tar); returns the image id.
    pub async fn import(&self, tag: &str, rootfs: &[u8]) -> String {
        let output = self.run_with_stdin(&["import", "-", tag], rootfs).await;
        self.check(output).stdout.trim().to_owned()
    }

    /// The id of a local image, or `None` when there is none of that name.
    pub async fn image_id(&self, reference: &str) -> Option<String> {
        let output = self
            .run(&["image", "inspect", "--format", "{{.Id}}", reference])
            .await;
        output.success().then(|| output.stdout.trim().to_owned())
    }

    /// `docker image inspect` of a local image, as JSON.
    pub async fn inspect(&self, reference: &str) -> serde_json::Value {
        let output = self.ok(&["image", "inspect", reference]).await;
        let all: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
        all[0].clone()
    }

    /// `docker push`, which must succeed.
    pub async fn push(&self, reference: &str) -> Pushed {
        let output = self.ok(&["push", reference]).await;
        parse_push(&output.stdout)
            .unwrap_or_else(|| panic!("docker push {reference}: no digest in\n{output}"))
    }

    /// Removes local images (and their layers no other image holds).
    pub async fn rmi(&self, references: &[&str]) {
        let mut args = vec!["rmi"];
        args.extend(references);
        self.ok(&args).await;
    }

    /// `docker login <host> -u <user> --password-stdin`.
    pub async fn login(&self, host: &str, user: &str, password: &str) -> Output {
        self.run_with_stdin(
            &["login", host, "--username", user, "--password-stdin"],
            password.as_bytes(),
        )
        .await
    }

    /// The logins this client stores, from `config.json` (`auths`).
    pub fn logins(&self) -> serde_json::Value {
        std::fs::read(self.config.path().join("config.json"))
            .ok()
            .and_then(|data| serde_json::from_slice::<serde_json::Value>(&data).ok())
            .map(|config| config["auths"].clone())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Reads `docker push`'s (non-terminal) output: `<id>: <status>` lines, then
/// `<tag>: digest: sha256:… size: N`.
fn parse_push(output: &str) -> Option<Pushed> {
    let mut layers = BTreeMap::new();
    let mut digest = None;
    for line in output.lines() {
        let Some((head, status)) = line.split_once(": ") else {
            continue;
        };
        if let Some(rest) = status.strip_prefix("digest: ") {
            digest = rest.split_whitespace().next().map(str::to_owned);
        } else if head.len() == 12 && head.bytes().all(|b| b.is_ascii_hexdigit()) {
            layers.insert(head.to_owned(), status.trim().to_owned());
        }
    }
    Some(Pushed {
        digest: digest?,
        layers,
        output: output.to_owned(),
    })
}

// ----- podman -----

/// podman with storage, configuration and logins of its own in a temporary directory.
pub struct Podman {
    program: PathBuf,
    dir: TempDir,
    /// Apart from `dir`: podman refuses a run root longer than 50 characters, which a
    /// long TMPDIR would make it.
    runroot: TempDir,
}

/// A podman client, or `None` (after a loud message) when podman cannot run here.
pub async fn podman() -> Option<Podman> {
    let Some(program) = find_on_path("podman") else {
        return unavailable("podman", "podman is not installed");
    };
    if find_on_path("busybox").is_none() {
        return unavailable("podman", "busybox (the images' rootfs) is not installed");
    }
    let dir = scratch_dir("podman-");
    let runroot = tempfile::Builder::new()
        .prefix("irp-")
        .tempdir_in("/tmp")
        .expect("a short directory in /tmp for podman's run root");
    let path = |name: &str| toml_path(&dir.path().join(name));
    let containers_conf = format!(
        r#"[engine]
# File locks under tmp_dir, not the host-wide /dev/shm/libpod_lock.
lock_type = "file"
tmp_dir = {tmp}
static_dir = {libpod}
volume_path = {volumes}
events_logger = "file"
events_logfile_path = {events}
cgroup_manager = "cgroupfs"

[network]
network_config_dir = {networks}
"#,
        tmp = path("libpod-tmp"),
        libpod = path("libpod"),
        volumes = path("volumes"),
        events = path("events.log"),
        networks = path("networks"),
    );
    let storage_conf = format!(
        "[storage]\ndriver = \"vfs\"\ngraphroot = {}\nrunroot = {}\n",
        path("root"),
        toml_path(runroot.path())
    );
    let files: [(&str, &[u8]); 5] = [
        ("containers.conf", containers_conf.as_bytes()),
        ("storage.conf", storage_conf.as_bytes()),
        // No search registries, mirrors or blocked registries from the host.
        ("registries.conf", b""),
        ("auth.json", br#"{"auths":{}}"#),
        (
            "policy.json",
            br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        ),
    ];
    for (name, data) in files {
        std::fs::write(dir.path().join(name), data).unwrap();
    }
    for name in ["home", "run", "tmp"] {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
    }
    let podman = Podman {
        program,
        dir,
        runroot,
    };
    let probe = podman.run(&["images"]).await;
    if !probe.success() {
        return unavailable("podman", &format!("it does not start here:\n{probe}"));
    }
    Some(podman)
}

impl Podman {
    fn what(args: &[&str]) -> String {
        format!("podman {}", args.join(" "))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.runroot.path())
            .args(["--storage-driver", "vfs"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(args)
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("home"))
            .env("XDG_DATA_HOME", self.path("home"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("TMPDIR", self.path("tmp"))
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            // Its logins here; and with HOME and DOCKER_CONFIG elsewhere, not Docker's.
            .env("REGISTRY_AUTH_FILE", self.path("auth.json"))
            .env_remove("DOCKER_CONFIG")
            .env_remove("DOCKER_HOST")
            .env_remove("CONTAINER_HOST")
            .env_remove("CONTAINER_CONNECTION");
        command
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        run(self.command(args), Self::what(args), None).await
    }

    pub async fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        run(self.command(args), Self::what(args), Some(input)).await
    }

    pub async fn ok(&self, args: &[&str]) -> Output {
        let output = self.run(args).await;
        assert!(output.success(), "{output}");
        output
    }

    /// `podman push --tls-verify=false` (plain HTTP) with `extra` options.
    pub async fn push(&self, source: &str, destination: &str, extra: &[&str]) -> Output {
        let mut args = vec!["push", "--tls-verify=false"];
        args.extend(extra);
        args.extend([source, destination]);
        self.run(&args).await
    }

    /// `podman pull --tls-verify=false` under an accept-anything signature policy, whatever
    /// the host's.
    pub async fn pull(&self, reference: &str, extra: &[&str]) -> Output {
        let policy = self.path("policy.json");
        let mut args = vec![
            "pull",
            "--tls-verify=false",
            "--signature-policy",
            policy.to_str().unwrap(),
        ];
        args.extend(extra);
        args.push(reference);
        self.run(&args).await
    }

    /// `podman import` of a root file system (a tar) for `arch`; returns the image id (hex,
    /// as `image_id` gives it).
    pub async fn import(&self, reference: &str, arch: &str, rootfs: &[u8]) -> String {
        let output = self
            .run_with_stdin(
                &["import", "--quiet", "--arch", arch, "-", reference],
                rootfs,
            )
            .await;
        assert!(output.success(), "{output}");
        let id = output.stdout.trim();
        id.strip_prefix("sha256:").unwrap_or(id).to_owned()
    }

    /// The id of a local image, or `None` when there is none of that name.
    pub async fn image_id(&self, reference: &str) -> Option<String> {
        let output = self
            .run(&["image", "inspect", "--format", "{{.Id}}", reference])
            .await;
        output.success().then(|| output.stdout.trim().to_owned())
    }

    /// The logins podman stores (its auth file's `auths`).
    pub fn logins(&self) -> serde_json::Value {
        let data = std::fs::read(self.path("auth.json")).unwrap_or_default();
        serde_json::from_slice::<serde_json::Value>(&data)
            .map(|auth| auth["auths"].clone())
            .unwrap_or(serde_json::Value::Null)
    }
}

// ----- images -----

fn write_file(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The busybox binary: what a small real image ships as its whole userland.
pub fn busybox() -> Vec<u8> {
    let path = find_on_path("busybox").expect("busybox (scripts/ensure-tools.sh)");
    std::fs::read(path).unwrap()
}

/// A small root file system: busybox as /bin/busybox, and `marker` holding fresh random
/// bytes, so that no other test, nor an earlier run, pushed this very layer (a client that
/// remembers a layer skips or mounts it instead of moving it).
pub fn rootfs(marker: &str) -> Vec<(String, Vec<u8>)> {
    vec![
        ("bin/busybox".to_owned(), busybox()),
        (marker.to_owned(), super::images::random_bytes(64 * 1024)),
    ]
}

/// `files` as a tar (GNU tar), for `docker import` and `podman import`.
pub fn tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    for (path, data) in files {
        write_file(&dir.path().join(path), data);
    }
    let output = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .args(["--create", "--file", "-", "."])
        .output()
        .expect("run tar");
    assert!(
        output.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

// ----- what the registry holds -----

/// A manifest as the registry serves it.
pub struct Stored {
    pub content_type: String,
    pub digest: String,
    pub body: Vec<u8>,
}

impl Stored {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON manifest")
    }
}

/// `GET /v2/<repo>/manifests/<reference>` (no credentials), accepting every manifest type;
/// `None` on 404.
pub async fn stored_manifest(base: &str, repo: &str, reference: &str) -> Option<Stored> {
    let accept = [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
    .join(", ");
    let response = reqwest::Client::new()
        .get(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    if response.status() == 404 {
        return None;
    }
    assert_eq!(response.status(), 200, "GET manifest {repo}:{reference}");
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    let content_type = header("content-type");
    let digest = header("docker-content-digest");
    let body = response.bytes().await.unwrap().to_vec();
    Some(Stored {
        content_type,
        digest,
        body,
    })
}

/// `GET /v2/<repo>/blobs/<digest>` (no credentials): the blob's bytes.
pub async fn stored_blob(base: &str, repo: &str, digest: &str) -> Vec<u8> {
    let response = reqwest::get(format!("{base}/v2/{repo}/blobs/{digest}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET blob {repo}@{digest}");
    response.bytes().await.unwrap().to_vec()
}
