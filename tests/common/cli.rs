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
