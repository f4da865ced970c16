#![forbid(unsafe_code)]
//! The `ipfs-registry` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ipfs_registry::auth::admin;
use ipfs_registry::config::Config;
use ipfs_registry::meta::users::UserStore;

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
    /// Apply the metadata store's migrations (PostgreSQL, or the embedded SQLite file) and
    /// exit.
    Migrate,
    /// Load and validate the configuration (file and IPFS_REGISTRY_* variables), then print
    /// the effective settings as TOML with secrets redacted. Exits non-zero, naming the
    /// setting, when the configuration is invalid.
    Config,
    /// Copy every blob of the embedded store (under data_dir) into the IPFS node at
    /// ipfs.url, checking each comes out under the same CID; then set ipfs.url for serve.
    /// A CID that differs stops it, and what it added is unpinned again.
    MigrateBlobs,
    /// Collect garbage once: apply the `[[retention]]` rules, expire abandoned uploads,
    /// delete what nothing references (per the `gc.*` settings), unpin it in IPFS, and
    /// print a report.
    Gc {
        /// Report what would be collected without changing anything, and list it: one line
        /// per tag (`would-remove tag REPOSITORY TAG DIGEST`), manifest (`would-delete
        /// manifest REPOSITORY DIGEST SIZE`) and blob (`would-delete blob DIGEST CID SIZE`).
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare the blob store with the metadata: records whose content is not pinned (their
    /// pulls fail) and pinned content no record knows (pushes cut short by a crash, or
    /// metadata that lost writes); then scrub: read every blob back and check its size,
    /// digest and CID, quarantining what fails. Exits non-zero when anything disagrees or
    /// is corrupt. Run it while no pushes are in flight: a push between adding and
    /// recording its bytes shows as unrecorded.
    Verify {
        /// Read each unrecorded root back, check it against its CID, and record it as a
        /// blob linked into REPOSITORY (kept for gc.grace_period unless a manifest pushed
        /// again references it). An unrecorded image layout is unpinned instead: pushing
        /// its image again (or `publish`) rebuilds it; so is a direct pin no record holds
        /// (left by a chunked upload's join that was never completed).
        #[arg(long, value_name = "REPOSITORY")]
        reindex: Option<ipfs_registry::oci::RepoName>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Skip the scrub: reading every blob back and checking its size, digest and CID.
        #[arg(long)]
        no_scrub: bool,
        /// The scrub's read limit in bytes per second (0 = unlimited); default
        /// integrity.scrub_rate.
        #[arg(long, value_name = "BYTES_PER_SECOND")]
        rate: Option<u64>,
    },
    /// Publish tagged images without an image CID as OCI Image Layouts in IPFS (pushed
    /// before publishing existed, or whose publishing failed): every tag of REPOSITORY, or
    /// of every repository. With auth on, only repositories anonymous users may pull are
    /// published. Prints `<repository>:<tag> <image cid>` per image published; exits
    /// non-zero when any failed.
    Publish {
        repository: Option<ipfs_registry::oci::RepoName>,
    },
    /// Import an image by the CID of its OCI Image Layout (docs/federation.md): through the
    /// IPFS node (ipfs.url), or from the trustless gateways of federation.gateways. Every
    /// block is checked against its CID and every blob against its digest; the manifests
    /// are put children first and the tag last, so a refused import tags nothing. What is
    /// already in the repository is skipped: importing again is a no-op, an interrupted
    /// import resumes. The tag defaults to the layout's org.opencontainers.image.ref.name.
    /// Prints `<repository>:<tag> <digest>`.
    Import {
        /// The image CID (the root of the layout).
        cid: cid::Cid,
        /// REPOSITORY or REPOSITORY:TAG.
        target: String,
    },
    /// The notifications outbox: events waiting for delivery, and those given up on after
    /// their last attempt (docs/notifications.md).
    #[command(subcommand)]
    Notifications(NotificationsCommand),
    #[command(flatten)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum NotificationsCommand {
    /// List events not yet delivered, oldest first: `<id> <endpoint> pending|failed
    /// attempts=<n> <action> <repository> <digest or tag>`, and the last error.
    List {
        /// Only the events given up on.
        #[arg(long)]
        failed: bool,
        /// One JSON object per line, with the event itself.
        #[arg(long)]
        json: bool,
    },
    /// Send events given up on again, with their attempts counted afresh: every one, those
    /// of one endpoint, or the given ids.
    Replay {
        #[arg(long)]
        endpoint: Option<String>,
        ids: Vec<i64>,
    },
    /// Delete events given up on: every one, those of one endpoint, or the given ids. An
    /// endpoint no longer in the configuration loses its pending events too (nothing
    /// would deliver them).
    Purge {
        #[arg(long)]
        endpoint: Option<String>,
        ids: Vec<i64>,
    },
}

/// Access control administration (on the configured metadata store).
#[derive(Subcommand)]
enum AdminCommand {
    /// Manage users (passwords are read from standard input, never from arguments).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Give a user permissions on repositories: a name, `<namespace>/*` or `*`.
    Grant {
        user: String,
        repositories: String,
        /// Comma-separated: pull, push, delete, admin.
        actions: String,
    },
    /// Take permissions away (all of them on the pattern when no actions are given).
    Revoke {
        user: String,
        repositories: String,
        actions: Option<String>,
    },
    /// Repositories anyone may pull without credentials.
    Public {
        #[command(subcommand)]
        command: PublicCommand,
    },
    /// Robot tokens for CI.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input (prompted without echo on a
    /// terminal).
    Add {
        name: String,
        /// The user may do everything, everywhere.
        #[arg(long)]
        admin: bool,
    },
    /// Remove a user, with their permissions and robot tokens.
    Remove { name: String },
    /// Set a user's password (read from standard input).
    Passwd { name: String },
    /// List users.
    List,
}

#[derive(Subcommand)]
enum PublicCommand {
    /// Let anyone pull the repositories matching the pattern.
    Add {
        repositories: String,
    },
    /// Make them private again.
    Remove {
        repositories: String,
    },
    List,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new robot token: the user's password substitute, limited to the scopes.
    Create {
        #[arg(long)]
        user: String,
        /// `repository:<name or namespace/*>:<actions>`; repeatable.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime (`30d`, `12h`).
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        expires: std::time::Duration,
    },
}

/// A password from standard input: prompted twice without echo on a terminal, else the
/// first line (its line ending stripped). Never an argument, so never in shell history.
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Repeat password: ")?;
        anyhow::ensure!(first == second, "the passwords differ");
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    Ok(password.to_owned())
}

async fn administer(config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    let stores = ipfs_registry::server::metadata_stores(config).await?;
    let store: &dyn UserStore = stores.users.as_ref();
    match command {
        AdminCommand::User { command } => match command {
            UserCommand::Add { name, admin } => {
                let password = read_password()?;
                admin::add_user(store, &name, &password, admin).await?;
                println!("user {name} created");
            }
            UserCommand::Remove { name } => {
                admin::remove_user(store, &name).await?;
                println!("user {name} removed");
            }
            UserCommand::Passwd { name } => {
                let password = read_password()?;
                admin::set_password(store, &name, &password).await?;
                println!("password of {name} changed");
            }
            UserCommand::List => {
                for (name, is_admin) in store.users().await? {
                    println!("{name}{}", if is_admin { " (admin)" } else { "" });
                }
            }
        },
        AdminCommand::Grant {
            user,
            repositories,
            actions,
        } => {
            admin::grant(store, &user, &repositories, &actions).await?;
            println!("granted {actions} on {repositories} to {user}");
        }
        AdminCommand::Revoke {
            user,
            repositories,
            actions,
        } => {
            admin::revoke(store, &user, &repositories, actions.as_deref()).await?;
            println!("revoked from {user} on {repositories}");
        }
        AdminCommand::Public { command } => match command {
            PublicCommand::Add { repositories } => {
                admin::set_public(store, &repositories, true).await?;
                println!("{repositories} is public");
            }
            PublicCommand::Remove { repositories } => {
                admin::set_public(store, &repositories, false).await?;
                println!("{repositories} is private");
            }
            PublicCommand::List => {
                for pattern in store.public_patterns().await? {
                    println!("{pattern}");
                }
            }
        },
        AdminCommand::Token {
            command:
                TokenCommand::Create {
                    user,
                    scopes,
                    expires,
                },
        } => {
            let token = admin::create_robot_token(store, &user, &scopes, expires).await?;
            println!("{token}");
        }
    }
    Ok(())
}

/// A progress line on stderr, redrawn at most a few times a second (only on a terminal).
struct ScrubBar {
    total: u64,
    started: std::time::Instant,
    state: std::sync::Mutex<(u64, u64, std::time::Instant)>,
}

impl ScrubBar {
    fn draw(&self, read: u64, blobs: u64) {
        let percent = if self.total > 0 {
            read as f64 * 100.0 / self.total as f64
        } else {
            100.0
        };
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\rscrub: {blobs} blobs, {:.2} / {:.2} GB ({percent:.0}%), {:.2} GB/s   ",
            read as f64 / 1e9,
            self.total as f64 / 1e9,
            read as f64 / seconds / 1e9
        );
    }
}

impl ipfs_registry::registry::ScrubObserver for ScrubBar {
    fn read(&self, bytes: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 += bytes;
        if state.2.elapsed() >= std::time::Duration::from_millis(200) {
            state.2 = std::time::Instant::now();
            self.draw(state.0, state.1);
        }
    }

    fn checked(&self, _record: &ipfs_registry::meta::BlobRecord) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
    }
}

async fn notifications(config: &Config, command: NotificationsCommand) -> anyhow::Result<()> {
    let stores = ipfs_registry::server::metadata_stores(config).await?;
    match command {
        NotificationsCommand::List { failed, json } => {
            let mut after = None;
            loop {
                let page = stores.outbox.notices(failed, after, 1000).await?;
                for entry in &page {
                    print_notice(entry, json);
                }
                match page.last() {
                    Some(last) if page.len() == 1000 => after = Some(last.id),
                    _ => return Ok(()),
                }
            }
        }
        NotificationsCommand::Replay { endpoint, ids } => {
            let replayed = stores
                .outbox
                .replay_notices(endpoint.as_deref(), &ids)
                .await?;
            println!("{replayed} events replayed");
            Ok(())
        }
        NotificationsCommand::Purge { endpoint, ids } => {
            let configured =
                |name: &str| config.notifications.endpoint.iter().any(|e| e.name == name);
            let pending = endpoint.as_deref().is_some_and(|name| !configured(name));
            let purged = stores
                .outbox
                .purge_notices(endpoint.as_deref(), &ids, pending)
                .await?;
            println!("{purged} events purged");
            Ok(())
        }
    }
}

fn print_notice(entry: &ipfs_registry::meta::outbox::OutboxEntry, json: bool) {
    let event: serde_json::Value = serde_json::from_str(&entry.event).unwrap_or_default();
    let state = if entry.failed { "failed" } else { "pending" };
    if json {
        let line = serde_json::json!({
            "id": entry.id,
            "endpoint": entry.endpoint,
            "state": state,
            "attempts": entry.attempts,
            "created": humantime::format_rfc3339_millis(entry.created).to_string(),
            "last_error": entry.last_error,
            "event": event,
        });
        println!("{line}");
        return;
    }
    let target = &event["target"];
    let what = target["digest"]
        .as_str()
        .or_else(|| target["tag"].as_str())
        .unwrap_or("-");
    println!(
        "{} {} {state} attempts={} {} {} {what}{}",
        entry.id,
        entry.endpoint,
        entry.attempts,
        event["action"].as_str().unwrap_or("-"),
        target["repository"].as_str().unwrap_or("-"),
        entry
            .last_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
}

/// `verify`: the inventory, then the reindex if asked, then the scrub (unless `rate` is
/// `None`); an error when anything disagrees or is corrupt.
async fn verify(
    registry: &ipfs_registry::registry::Registry,
    reindex: Option<&ipfs_registry::oci::RepoName>,
    json: bool,
    scrub_rate: Option<u64>,
) -> anyhow::Result<()> {
    use ipfs_registry::registry::{Reindexed, ScrubOptions};
    use std::io::IsTerminal;
    // A joined upload whose recursive pin a stopped `serve` left to do is not missing.
    registry.finish_pending_pins().await;
    let inventory = registry.inventory().await?;
    let mut recorded = Vec::new();
    let mut mismatched = Vec::new();
    let mut dropped = Vec::new();
    let mut dropped_direct = Vec::new();
    let mut not_files = Vec::new();
    if let Some(repo) = reindex {
        for (done, root) in inventory.unrecorded.iter().enumerate() {
            eprintln!("[{}/{}] {root}", done + 1, inventory.unrecorded.len());
            match registry.reindex(repo, root).await? {
                Reindexed::Recorded(record) => recorded.push(record),
                Reindexed::Mismatch { cid, computed } => mismatched.push((cid, computed)),
                Reindexed::LayoutDropped(cid) => dropped.push(cid),
                Reindexed::NotAFile(cid) => not_files.push(cid),
            }
        }
        for cid in &inventory.unrecorded_direct {
            if registry.drop_unrecorded_direct(cid).await? {
                dropped_direct.push(*cid);
            }
        }
    }
    let scrub = match scrub_rate {
        None => None,
        Some(rate) => {
            let options = ScrubOptions {
                rate: (rate > 0).then_some(rate),
                lease: None,
            };
            let report = if std::io::stderr().is_terminal() {
                let (_, total) = registry.blob_totals().await?;
                let bar = ScrubBar {
                    total,
                    started: std::time::Instant::now(),
                    state: std::sync::Mutex::new((0, 0, std::time::Instant::now())),
                };
                let report = registry.scrub(&options, &bar).await;
                let (read, blobs, _) = *bar.state.lock().unwrap_or_else(|e| e.into_inner());
                bar.draw(read, blobs);
                eprintln!();
                report
            } else {
                registry.scrub(&options, &()).await
            };
            report?
        }
    };
    // What the scrub pinned again is no longer a record without content.
    let inventory = match &scrub {
        Some(scrub) if !scrub.repinned.is_empty() => registry.inventory().await?,
        _ => inventory,
    };
    let unresolved = if reindex.is_some() {
        mismatched.len() + not_files.len()
    } else {
        inventory.unrecorded.len() + inventory.unrecorded_direct.len()
    };
    if json {
        let blob = |r: &ipfs_registry::meta::BlobRecord| serde_json::json!({"digest": r.digest, "cid": r.cid.to_string(), "size": r.size});
        let report = serde_json::json!({
            "pinned": inventory.pinned,
            "records": inventory.records,
            "missing": inventory.missing.iter().map(blob).collect::<Vec<_>>(),
            "unrecorded": inventory.unrecorded.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "unrecorded_direct": inventory.unrecorded_direct.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "dropped_direct": dropped_direct.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "not_files": not_files.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "reindexed": recorded.iter().map(blob).collect::<Vec<_>>(),
            "dropped_layouts": dropped.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "mismatched": mismatched
                .iter()
                .map(|(cid, computed)| serde_json::json!({"cid": cid.to_string(), "computed": computed.to_string()}))
                .collect::<Vec<_>>(),
        });
        let mut report = report;
        if let Some(scrub) = &scrub {
            let finding = |f: &ipfs_registry::registry::Finding| serde_json::json!({"digest": f.digest, "cid": f.cid.to_string(), "size": f.size, "reason": f.reason});
            report["scrub"] = serde_json::json!({
                "checked": scrub.checked,
                "bytes": scrub.bytes,
                "corrupt": scrub.corrupt.iter().map(finding).collect::<Vec<_>>(),
                "missing": scrub.missing.iter().map(finding).collect::<Vec<_>>(),
                "released": scrub.released,
                "repinned": scrub.repinned,
                "seconds": scrub.elapsed.as_secs_f64(),
                "gb_per_second": scrub.gigabytes_per_second(),
            });
        }
        println!("{report}");
    } else {
        for record in &inventory.missing {
            println!("missing {} {} {}", record.digest, record.cid, record.size);
        }
        if reindex.is_none() {
            for root in &inventory.unrecorded {
                println!("unrecorded {root}");
            }
            for cid in &inventory.unrecorded_direct {
                println!("unrecorded-direct {cid}");
            }
        }
        for record in &recorded {
            println!("reindexed {} {} {}", record.digest, record.cid, record.size);
        }
        for (cid, computed) in &mismatched {
            println!("mismatch {cid} (its bytes hash to {computed})");
        }
        for cid in &dropped {
            println!("dropped {cid} (an image layout no record knows; publishing rebuilds it)");
        }
        for cid in &not_files {
            println!("not-a-file {cid} (pinned, but no blob's bytes: left alone)");
        }
        for cid in &dropped_direct {
            println!("dropped {cid} (a direct pin of a join no upload completed)");
        }
        if let Some(scrub) = &scrub {
            for f in &scrub.corrupt {
                println!("corrupt {} {} {}: {}", f.digest, f.cid, f.size, f.reason);
            }
            for f in &scrub.missing {
                println!("unreadable {} {} {}: {}", f.digest, f.cid, f.size, f.reason);
            }
            for digest in &scrub.released {
                println!("released {digest}");
            }
            for digest in &scrub.repinned {
                println!("repinned {digest}");
            }
            println!("scrub: {scrub}");
        }
        println!(
            "verify: {} blob records, {} pinned roots; {} records without content, {} roots and {} direct pins no record knows{}",
            inventory.records,
            inventory.pinned,
            inventory.missing.len(),
            inventory.unrecorded.len(),
            inventory.unrecorded_direct.len(),
            match reindex {
                Some(repo) => format!(
                    "; {} recorded into {repo}, {} left (bytes do not match their CID), {} not files",
                    recorded.len(),
                    mismatched.len(),
                    not_files.len()
                ),
                None => String::new(),
            }
        );
    }
    anyhow::ensure!(
        inventory.missing.is_empty() && unresolved == 0,
        "the blob store and the metadata disagree ({} records without content, {} roots or direct pins left unrecorded)",
        inventory.missing.len(),
        unresolved
    );
    if let Some(scrub) = &scrub {
        anyhow::ensure!(
            scrub.is_sound(),
            "the scrub found {} corrupt and {} unreadable blobs (quarantined)",
            scrub.corrupt.len(),
            scrub.missing.len()
        );
    }
    Ok(())
}

/// `publish`: every unpublished tag of the repositories asked, a page at a time.
async fn publish(
    config: &Config,
    repository: Option<ipfs_registry::oci::RepoName>,
) -> anyhow::Result<()> {
    use ipfs_registry::meta::Page;
    const PAGE: u32 = 500;
    let stores = ipfs_registry::server::metadata_stores(config).await?;
    let registry = ipfs_registry::server::build_registry(config).await?;
    // A layout is public by CID: with auth on, only what anonymous users may pull.
    let public: Option<Vec<ipfs_registry::auth::permission::Pattern>> = if config.auth.enabled {
        Some(
            stores
                .users
                .public_patterns()
                .await?
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect(),
        )
    } else {
        None
    };
    let mut repositories = Vec::new();
    match repository {
        Some(repository) => repositories.push(repository),
        None => {
            let mut last = None;
            loop {
                let page = Page {
                    n: Some(PAGE),
                    last: last.clone(),
                };
                let names = registry.catalog(&page).await?;
                last = names.last().cloned();
                for name in &names {
                    repositories.push(name.parse()?);
                }
                if names.len() < PAGE as usize {
                    break;
                }
            }
        }
    }
    let (mut published, mut failed, mut private) = (0, 0, 0);
    for repo in &repositories {
        if let Some(patterns) = &public {
            if !patterns.iter().any(|p| p.matches(repo.as_str())) {
                private += 1;
                continue;
            }
        }
        let mut after: Option<String> = None;
        loop {
            let tags = registry
                .unpublished_tags(repo, after.as_deref(), PAGE)
                .await?;
            for tag in &tags {
                match registry.publish_layout(repo, tag).await {
                    Ok(Some(cid)) => {
                        published += 1;
                        println!("{repo}:{tag} {cid}");
                    }
                    // The tag moved meanwhile: its new manifest is published by its push.
                    Ok(None) => {}
                    Err(e) => {
                        failed += 1;
                        eprintln!("ipfs-registry: publishing {repo}:{tag}: {e}");
                    }
                }
            }
            // A failed tag stays unpublished: the next page starts after it.
            after = tags.last().map(|t| t.as_str().to_owned());
            if tags.len() < PAGE as usize {
                break;
            }
        }
    }
    eprintln!(
        "publish: {published} images published, {failed} failed, {private} private repositories skipped"
    );
    anyhow::ensure!(failed == 0, "{failed} images could not be published");
    Ok(())
}

/// `import`: one image, with a progress line on stderr when it is a terminal.
async fn import(config: &Config, cid: &cid::Cid, target: &str) -> anyhow::Result<()> {
    use ipfs_registry::registry::{ImportProgress, Origin};
    use std::io::{IsTerminal, Write};
    // A `:` after the last `/` starts the tag (a registry host's port is not part of a
    // repository name).
    let (repo, tag) = match target.rfind(':') {
        Some(colon) if !target[colon..].contains('/') => {
            (&target[..colon], Some(&target[colon + 1..]))
        }
        _ => (target, None),
    };
    let repo: ipfs_registry::oci::RepoName = repo
        .parse()
        .with_context(|| format!("repository {repo:?}"))?;
    let tag: Option<ipfs_registry::oci::Tag> = tag
        .map(|t| t.parse().with_context(|| format!("tag {t:?}")))
        .transpose()?;
    let registry = ipfs_registry::server::build_registry(config).await?;
    let source = ipfs_registry::server::import_source(config)?;
    let origin = Origin {
        request_id: String::new(),
        addr: String::new(),
        host: String::new(),
        method: "IMPORT".into(),
        user_agent: format!("ipfs-registry/{}", env!("CARGO_PKG_VERSION")),
        actor: None,
    };
    let terminal = std::io::stderr().is_terminal();
    let planned = std::sync::atomic::AtomicUsize::new(0);
    let progress = |step: ImportProgress| {
        if !terminal {
            return;
        }
        let mut err = std::io::stderr();
        match step {
            ImportProgress::Planned {
                fetch,
                total,
                bytes,
            } => {
                planned.store(fetch, std::sync::atomic::Ordering::Relaxed);
                let _ = writeln!(
                    err,
                    "import: {total} blobs, {} already here, {fetch} to fetch ({bytes} bytes)",
                    total - fetch
                );
            }
            ImportProgress::Fetched { digest, size, done } => {
                let all = planned.load(std::sync::atomic::Ordering::Relaxed);
                let _ = write!(err, "\r\x1b[K[{done}/{all}] {digest} ({size} bytes)");
                if done == all {
                    let _ = writeln!(err);
                }
            }
        }
    };
    let imported = registry
        .import_image(&source, cid, &repo, tag, &origin, &progress)
        .await?;
    if !imported.unchanged {
        // Published as `publish` does, here and now (no background publisher runs in this
        // process); with auth on, only what anonymous users may pull.
        let public = if config.auth.enabled {
            let stores = ipfs_registry::server::metadata_stores(config).await?;
            stores
                .users
                .public_patterns()
                .await?
                .iter()
                .filter_map(|p| p.parse::<ipfs_registry::auth::permission::Pattern>().ok())
                .any(|p| p.matches(repo.as_str()))
        } else {
            true
        };
        if public {
            if let Err(e) = registry.publish_layout(&repo, &imported.tag).await {
                eprintln!(
                    "ipfs-registry: imported, but not published ({e}); `ipfs-registry publish {repo}` retries"
                );
            }
        }
    }
    eprintln!(
        "import: {}:{} {} ({} manifests, {} blobs: {} already here, {} bytes fetched){}",
        repo,
        imported.tag,
        imported.digest,
        imported.manifests,
        imported.blobs,
        imported.blobs_present,
        imported.bytes_fetched,
        if imported.unchanged {
            "; the tag already pointed at it"
        } else {
            ""
        }
    );
    println!("{repo}:{} {}", imported.tag, imported.digest);
    Ok(())
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
    let config = Config::load(cli.config.as_deref())?;
    ipfs_registry::logging::init(&config.logging);
    actix_web::rt::System::new().block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let server = ipfs_registry::server::start(config).await?;
                server.wait().await.context("server failed")
            }
            Command::Migrate => {
                ipfs_registry::server::metadata_stores(&config).await?;
                println!("migrations applied");
                Ok(())
            }
            Command::Gc { dry_run } => {
                let registry = ipfs_registry::server::build_registry(&config).await?;
                let progress = |message: &str| println!("gc: {message}");
                let report = registry
                    .collect_garbage(&config.gc.policy(), dry_run, &progress)
                    .await?
                    .context(
                        "another garbage collection is running (on this or another replica)",
                    )?;
                if dry_run {
                    // One line per item, whitespace-separated, for scripts.
                    let swept = &report.swept;
                    for t in &swept.tags {
                        let r = &t.record;
                        println!("would-remove tag {} {} {}", t.repository, r.tag, r.digest);
                    }
                    for m in &swept.manifests {
                        println!(
                            "would-delete manifest {} {} {}",
                            m.repository, m.digest, m.size
                        );
                    }
                    for b in &swept.blobs {
                        println!("would-delete blob {} {} {}", b.digest, b.cid, b.size);
                    }
                }
                println!("gc: {report}");
                Ok(())
            }
            Command::Verify {
                reindex,
                json,
                no_scrub,
                rate,
            } => {
                let registry = ipfs_registry::server::build_registry(&config).await?;
                let scrub_rate = (!no_scrub).then(|| rate.unwrap_or(config.integrity.scrub_rate));
                verify(&registry, reindex.as_ref(), json, scrub_rate).await
            }
            Command::Publish { repository } => publish(&config, repository).await,
            Command::Import { cid, target } => import(&config, &cid, &target).await,
            Command::MigrateBlobs => {
                let report = ipfs_registry::blobs::migrate::into_configured_node(
                    &config,
                    |cid, done, all| {
                        eprintln!("[{done}/{all}] {cid}");
                    },
                )
                .await?;
                println!(
                    "{} blobs copied ({} bytes), {} already in the node; every CID unchanged",
                    report.copied, report.bytes, report.present
                );
                Ok(())
            }
            Command::Config => {
                let text = config
                    .to_redacted_toml()
                    .context("printing the configuration")?;
                print!("{text}");
                Ok(())
            }
            Command::Notifications(command) => notifications(&config, command).await,
            Command::Admin(command) => administer(&config, command).await,
        }
    })
}
