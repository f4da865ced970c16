#![forbid(unsafe_code)]
//! The `ipfs-registry` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ipfs_registry::config::Config;
use ipfs_registry::meta::postgres::PostgresStore;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    version,
    about = "An OCI registry with metadata in PostgreSQL and blobs in IPFS"
)]
struct Cli {
    /// TOML configuration file; settings are overridden by IPFS_REGISTRY_* variables.
    #[arg(long, short, global = true, env = "IPFS_REGISTRY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain; a configuration error names the setting.
            eprintln!("ipfs-registry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("IPFS_REGISTRY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = Config::load(cli.config.as_deref())?;
    actix_web::rt::System::new().block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let server = ipfs_registry::server::start(config).await?;
                server.wait().await.context("server failed")
            }
            Command::Migrate => {
                let url = config
                    .database
                    .url
                    .clone()
                    .context("configuration setting `database.url` is required")?;
                let mut database = config.database.clone();
                database.url = Some(url);
                let store = PostgresStore::connect(&database).await?;
                store.migrate().await?;
                println!("migrations applied");
                Ok(())
            }
        }
    })
}
