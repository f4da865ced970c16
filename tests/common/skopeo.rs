//! Running the real skopeo CLI against a test registry, isolated from the host's container
//! configuration: its own trust policy, an empty auth file, no registries.conf mirrors, its
//! own temporary directory and HOME. Every run has a timeout, so a hang fails the test.
//!
//! `IPFS_REGISTRY_TEST_SKOPEO_TIMEOUT` (seconds, default 120) changes the timeout;
//! `IPFS_REGISTRY_TEST_SKOPEO_DEBUG=1` passes `--debug` and prints skopeo's output.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A skopeo environment: configuration files in a temporary directory.
pub struct Skopeo {
    home: TempDir,
    timeout: Duration,
    debug: bool,
}

impl Skopeo {
    /// Panics (with how to install it) when skopeo is not on `PATH`.
    pub fn new() -> Skopeo {
        let version = std::process::Command::new("skopeo")
            .arg("--version")
            .output();
        match version {
            Ok(output) if output.status.success() => {}
            _ => panic!("skopeo is not installed: run scripts/ensure-tools.sh (as root)"),
        }
        let home = tempfile::Builder::new()
            .prefix("skopeo-home-")
            .tempdir()
            .unwrap();
        let root = home.path();
        std::fs::write(
            root.join("policy.json"),
            br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        std::fs::write(root.join("auth.json"), br#"{"auths":{}}"#).unwrap();
        // No search registries, mirrors or blocked registries from the host.
        std::fs::write(root.join("registries.conf"), b"").unwrap();
        std::fs::create_dir_all(root.join("registries.d")).unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::create_dir_all(root.join("run")).unwrap();
        let timeout = std::env::var("IPFS_REGISTRY_TEST_SKOPEO_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(120));
        let debug = std::env::var_os("IPFS_REGISTRY_TEST_SKOPEO_DEBUG").is_some();
        Skopeo {
            home,
            timeout,
            debug,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("skopeo");
        command
            .arg("--policy")
            .arg(self.path("policy.json"))
            .arg("--registries.d")
            .arg(self.path("registries.d"))
            .arg("--tmpdir")
            .arg(self.path("tmp"));
        if self.debug {
            command.arg("--debug");
        }
        command
            .args(args)
            .env("HOME", self.home.path())
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("REGISTRY_AUTH_FILE", self.path("auth.json"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .env("TMPDIR", self.path("tmp"))
            .env_remove("DOCKER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `skopeo <args>` and returns its output whatever the exit status; panics on a
    /// timeout (the process is killed).
    pub async fn run_unchecked(&self, args: &[&str]) -> Output {
        let started = Instant::now();
        let child = self
            .command(args)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn skopeo {args:?}: {e}"));
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(output) => output.unwrap_or_else(|e| panic!("skopeo {args:?}: {e}")),
            Err(_) => panic!(
                "skopeo {args:?} did not finish within {:?} (killed)",
                self.timeout
            ),
        };
        if self.debug {
            eprintln!(
                "skopeo {args:?} → {} in {:?}\n--- stderr ---\n{}",
                output.status,
                started.elapsed(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output
    }

    /// Runs `skopeo <args>`; panics with its output unless it succeeds. Returns stdout.
    pub async fn run(&self, args: &[&str]) -> Vec<u8> {
        let output = self.run_unchecked(args).await;
        if !output.status.success() {
            panic!(
                "skopeo {args:?} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output.stdout
    }

    /// `skopeo copy` between any two transports, over plain HTTP and without credentials.
    /// `extra` goes before the image names (e.g. `--all`, `--preserve-digests`).
    pub async fn copy(&self, source: &str, destination: &str, extra: &[&str]) {
        let authfile = self.path("auth.json");
        let authfile = authfile.to_str().unwrap();
        let mut args = vec![
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--src-authfile",
            authfile,
            "--dest-authfile",
            authfile,
            "--retry-times",
            "0",
        ];
        if source.starts_with("docker://") {
            args.push("--src-no-creds");
        }
        if destination.starts_with("docker://") {
            args.push("--dest-no-creds");
        }
        args.extend_from_slice(extra);
        args.push(source);
        args.push(destination);
        self.run(&args).await;
    }

    /// `skopeo copy --preserve-digests` with credentials (`user:password`) for a
    /// `docker://` side, or none (`None` means `--*-no-creds`). Returns the output whatever
    /// the exit status.
    pub async fn copy_with_creds(
        &self,
        source: &str,
        destination: &str,
        src_creds: Option<&str>,
        dest_creds: Option<&str>,
    ) -> Output {
        let authfile = self.path("auth.json");
        let authfile = authfile.to_str().unwrap();
        let mut args = vec![
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--src-authfile",
            authfile,
            "--dest-authfile",
            authfile,
            "--retry-times",
            "0",
            "--preserve-digests",
        ];
        if source.starts_with("docker://") {
            match src_creds {
                Some(creds) => args.extend(["--src-creds", creds]),
                None => args.push("--src-no-creds"),
            }
        }
        if destination.starts_with("docker://") {
            match dest_creds {
                Some(creds) => args.extend(["--dest-creds", creds]),
                None => args.push("--dest-no-creds"),
            }
        }
        args.push(source);
        args.push(destination);
        self.run_unchecked(&args).await
    }

    /// `skopeo inspect --raw` (the manifest's exact bytes), or with `--config` the config
    /// blob's bytes.
    pub async fn inspect_raw(&self, image: &str, config: bool) -> Vec<u8> {
        let authfile = self.path("auth.json");
        let mut args = vec![
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--no-creds",
            "--authfile",
            authfile.to_str().unwrap(),
        ];
        if config {
            args.push("--config");
        }
        args.push(image);
        self.run(&args).await
    }

    /// `skopeo list-tags docker://<host>/<repo>`: the repository and its tags.
    pub async fn list_tags(&self, host: &str, repo: &str) -> (String, Vec<String>) {
        let authfile = self.path("auth.json");
        let image = format!("docker://{host}/{repo}");
        let out = self
            .run(&[
                "list-tags",
                "--tls-verify=false",
                "--no-creds",
                "--authfile",
                authfile.to_str().unwrap(),
                &image,
            ])
            .await;
        let body: serde_json::Value = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("list-tags output is not JSON ({e}): {out:?}"));
        let tags = body["Tags"]
            .as_array()
            .unwrap_or_else(|| panic!("list-tags: no Tags array: {body}"))
            .iter()
            .map(|t| t.as_str().expect("tag is a string").to_owned())
            .collect();
        (
            body["Repository"].as_str().unwrap_or_default().to_owned(),
            tags,
        )
    }
}

impl Default for Skopeo {
    fn default() -> Self {
        Skopeo::new()
    }
}

/// `skopeo --version`'s output, e.g. `skopeo version 1.9.3`.
pub fn version() -> String {
    let output = std::process::Command::new("skopeo")
        .arg("--version")
        .output()
        .expect("run skopeo --version");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
