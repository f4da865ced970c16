//! The command line: migrations, configuration errors that name the setting, `serve` on its
//! own, and output that scripts can use (logs on stderr, no colour in files, clients' faults
//! not logged as errors).

mod common;

use std::process::Output;

use common::cli::Served;

fn registry(args: &[&str], env: &[(&str, &str)]) -> Output {
    common::cli::registry_command()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run ipfs-registry")
}

/// What `ipfs-registry <args…>` (ending in `config`) prints, which must succeed: the text
/// and its TOML.
fn printed_config(args: &[&str], env: &[(&str, &str)]) -> (String, toml::Table) {
    let out = registry(args, env);
    assert!(
        out.status.success(),
        "{env:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let printed = toml::from_str(&text).unwrap();
    (text, printed)
}

#[tokio::test]
async fn migrate_applies_the_schema_once() {
    let url = common::fresh_database_url().await;
    for _ in 0..2 {
        let out = registry(&["migrate"], &[("IPFS_REGISTRY_DATABASE__URL", &url)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for table in [
        "repositories",
        "blobs",
        "manifests",
        "tags",
        "upload_sessions",
    ] {
        let row = client
            .query_one("SELECT to_regclass($1)::text", &[&table])
            .await
            .unwrap();
        assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some(table));
    }
}

#[test]
fn invalid_configuration_fails_naming_the_setting() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("IPFS_REGISTRY_DATABASE__POOL_SIZE", "0")],
            "database.pool_size",
        ),
        (
            &[("IPFS_REGISTRY_IMPORT_PROFILE__CHUNK_SIZE", "5")],
            "import_profile.chunk_size",
        ),
        (&[("IPFS_REGISTRY_LISTEN", "not-an-address")], "listen"),
        (
            &[(
                "IPFS_REGISTRY_DATABASE__URL",
                "postgres://h/db?sslmode=bogus",
            )],
            "database.url",
        ),
    ];
    for (env, setting) in cases {
        let out = registry(&["serve"], env);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(stderr.contains(setting), "{setting}: {stderr}");
    }
}

#[test]
fn serve_requires_a_reachable_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry.toml");
    std::fs::write(
        &file,
        "[database]\nurl = \"postgres://nobody@127.0.0.1:1/none\"\n",
    )
    .unwrap();
    // Without ipfs.url the blobs would go to the embedded store; the database still decides.
    let out = registry(&["--config", file.to_str().unwrap(), "serve"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("database.url"));

    let out = registry(&["--config", "/nonexistent/registry.toml", "serve"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// `ipfs-registry serve` with nothing configured but a data directory, answering.
async fn serve_embedded(data_dir: &std::path::Path) -> Served {
    Served::start(common::cli::serve_command().env("IPFS_REGISTRY_DATA_DIR", data_dir)).await
}

/// With no database and no IPFS node configured, `serve` is a working registry on its
/// own data directory, and what it stored is there after a restart.
#[tokio::test]
async fn with_nothing_configured_serve_is_a_standalone_registry() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_embedded(dir.path()).await;
    let image = common::oci::Oci::new(&server.base)
        .push_image("standalone/app", Some("1.0"), 2)
        .await;
    common::oci::Oci::new(&server.base)
        .published_layout("standalone/app", "1.0")
        .await;
    let (clean_exit, _, log) = server.stop();
    assert!(clean_exit, "SIGTERM ends serve gracefully:\n{log}");

    assert!(dir.path().join("metadata.sqlite").exists());
    let blob_files = std::fs::read_dir(dir.path().join("blobs/data"))
        .unwrap()
        .count();
    assert_eq!(
        blob_files, 4,
        "a config and two layers, one file each, and the tagged image's layout (its marker)"
    );

    // A new process on a new port, and a new client: a connection pooled by the first
    // client would lead to the process that is gone.
    let server = serve_embedded(dir.path()).await;
    let oci = common::oci::Oci::new(&server.base);
    let pulled = oci.get("/v2/standalone/app/manifests/1.0").await;
    assert_eq!(pulled.status(), 200);
    assert_eq!(pulled.bytes().await.unwrap(), image.manifest.content);
    for layer in &image.layers {
        let blob = oci
            .get(&format!("/v2/standalone/app/blobs/{}", layer.digest))
            .await;
        assert_eq!(blob.status(), 200);
        assert_eq!(blob.bytes().await.unwrap(), layer.data);
    }
    drop(server);
}

#[test]
fn migrate_without_a_database_url_prepares_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let out = registry(
        &["migrate"],
        &[("IPFS_REGISTRY_DATA_DIR", data_dir.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data_dir.join("metadata.sqlite").exists());
}

/// libpq's multi-host URLs and passwords in the query string are no URL passwords to a URL
/// parser; `config` hides them all the same.
#[test]
fn config_redacts_multi_host_and_query_passwords() {
    for (url, shown) in [
        (
            "postgres://registry:s3cret-pw@db1:5432,db2:5432/registry",
            "postgres://registry:REDACTED@db1:5432,db2:5432/registry",
        ),
        (
            "postgres://db/registry?user=registry&password=s3cret-pw&sslmode=require",
            "postgres://db/registry?user=registry&password=REDACTED&sslmode=require",
        ),
    ] {
        let (text, printed) = printed_config(&["config"], &[("IPFS_REGISTRY_DATABASE__URL", url)]);
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert_eq!(printed["database"]["url"].as_str(), Some(shown));
    }
}

#[test]
fn config_prints_the_effective_settings_with_secrets_redacted() {
    let env = [
        (
            "IPFS_REGISTRY_DATABASE__URL",
            "postgres://registry:s3cret-pw@db:5432/registry",
        ),
        ("IPFS_REGISTRY_DATABASE__POOL_SIZE", "7"),
        ("IPFS_REGISTRY_IPFS__URL", "http://kubo:5001"),
        ("IPFS_REGISTRY_LISTEN", "0.0.0.0:5000"),
    ];
    let (text, printed) = printed_config(&["config"], &env);
    assert!(!text.contains("s3cret-pw"), "{text}");
    let database = printed["database"].as_table().unwrap();
    assert_eq!(
        database["url"].as_str(),
        Some("postgres://registry:REDACTED@db:5432/registry")
    );
    assert_eq!(database["pool_size"].as_integer(), Some(7));
    assert_eq!(printed["listen"].as_str(), Some("0.0.0.0:5000"));
    assert_eq!(
        printed["import_profile"]["chunk_size"].as_integer(),
        Some(262144),
        "defaults are part of the effective configuration"
    );

    // The output is a configuration file: loading it back gives the same settings.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("effective.toml");
    std::fs::write(&file, &text).unwrap();
    let again = registry(&["--config", file.to_str().unwrap(), "config"], &[]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
}

#[test]
fn config_refuses_unknown_and_invalid_settings_naming_them() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "IPFS_REGISTRY_DATABASE__POOL_SIZE",
            "0",
            "database.pool_size",
        ),
        ("IPFS_REGISTRY_IPFS__URL", "ftp://kubo", "ipfs.url"),
        // Settings are deny_unknown_fields: a misspelt variable is an error, not ignored.
        ("IPFS_REGISTRY_DATABASE__POOLSIZE", "8", "poolsize"),
        ("IPFS_REGISTRY_NO_SUCH_SECTION__KEY", "1", "no_such_section"),
    ];
    for (key, value, named) in cases {
        let out = registry(&["config"], &[(key, value)]);
        assert!(!out.status.success(), "{key}={value} was accepted");
        assert!(out.stdout.is_empty(), "{key}: printed a configuration");
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(stderr.contains(named), "{key}: {stderr}");
    }
}

/// Which stores run: `metadata.kind` and `blobs.kind` when set, else what `database.url` and
/// `ipfs.url` imply (the shorthand every earlier deployment relies on); `config` prints the
/// kinds resolved, and a kind its URL setting contradicts is refused naming both.
/// Environment variables, and the two names expected in what comes of them.
type KindCase<'a> = (&'a [(&'a str, &'a str)], [&'a str; 2]);

#[test]
fn store_kinds_resolved_from_urls_or_named_and_contradictions_refused() {
    let database = (
        "IPFS_REGISTRY_DATABASE__URL",
        "postgres://registry@db/registry",
    );
    let node = ("IPFS_REGISTRY_IPFS__URL", "http://kubo:5001");
    let metadata = |kind| ("IPFS_REGISTRY_METADATA__KIND", kind);
    let blobs = |kind| ("IPFS_REGISTRY_BLOBS__KIND", kind);
    let resolved: &[KindCase] = &[
        (&[], ["sqlite", "embedded"]),
        (&[database], ["postgres", "embedded"]),
        (&[node], ["sqlite", "kubo"]),
        (&[database, node], ["postgres", "kubo"]),
        (
            &[metadata("postgres"), database, blobs("kubo"), node],
            ["postgres", "kubo"],
        ),
        (
            &[metadata("sqlite"), blobs("embedded")],
            ["sqlite", "embedded"],
        ),
    ];
    for (env, [metadata_kind, blobs_kind]) in resolved {
        let (_, printed) = printed_config(&["config"], env);
        assert_eq!(
            printed["metadata"]["kind"].as_str(),
            Some(*metadata_kind),
            "{env:?}"
        );
        assert_eq!(
            printed["blobs"]["kind"].as_str(),
            Some(*blobs_kind),
            "{env:?}"
        );
    }

    // From a file as well, where an operator names them.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry.toml");
    std::fs::write(
        &file,
        "[metadata]\nkind = \"postgres\"\n[database]\nurl = \"postgres://registry@db/registry\"\n\
         [blobs]\nkind = \"embedded\"\n",
    )
    .unwrap();
    let (_, printed) = printed_config(&["--config", file.to_str().unwrap(), "config"], &[]);
    assert_eq!(printed["metadata"]["kind"].as_str(), Some("postgres"));
    assert_eq!(printed["blobs"]["kind"].as_str(), Some("embedded"));

    let refused: &[KindCase] = &[
        (&[metadata("postgres")], ["metadata.kind", "database.url"]),
        (
            &[metadata("sqlite"), database],
            ["metadata.kind", "database.url"],
        ),
        (&[blobs("kubo")], ["blobs.kind", "ipfs.url"]),
        (&[blobs("embedded"), node], ["blobs.kind", "ipfs.url"]),
        (&[metadata("mysql")], ["metadata.kind", "mysql"]),
        (&[blobs("s3")], ["blobs.kind", "s3"]),
    ];
    for (env, named) in refused {
        // `serve` is refused at startup, before opening anything, as `config` is.
        for command in ["config", "serve"] {
            let out = registry(&[command], env);
            assert!(!out.status.success(), "{command} {env:?} was accepted");
            assert!(
                out.stdout.is_empty(),
                "{command} {env:?}: printed something"
            );
            let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
            for setting in named {
                assert!(stderr.contains(setting), "{command} {env:?}: {stderr}");
            }
        }
    }
}

/// The README's first command, end to end: nothing configured, push with skopeo, pull back
/// byte-identical, open the web UI and download each layer through its gateway link.
#[tokio::test]
async fn standalone_registry_with_skopeo_ui_and_gateway() {
    use common::images::{make_image, write_oci_layout, LayerSpec, OciLayout, MIB};
    let dir = tempfile::tempdir().unwrap();
    let server = serve_embedded(dir.path()).await;
    let host = server.host().to_owned();

    let image = make_image(
        "amd64",
        "linux",
        &[LayerSpec::gzip(3 * MIB), LayerSpec::tar(MIB + 7)],
        false,
    );
    let source = tempfile::tempdir().unwrap();
    write_oci_layout(source.path(), "1.0", &image.manifest, image.blobs());
    let skopeo = common::skopeo::Skopeo::new();
    let remote = format!("docker://{host}/standalone/skopeo:1.0");
    skopeo
        .copy(
            &format!("oci:{}:1.0", source.path().display()),
            &remote,
            &["--preserve-digests"],
        )
        .await;
    let back = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &remote,
            &format!("oci:{}:1.0", back.path().display()),
            &["--preserve-digests"],
        )
        .await;
    let layout = OciLayout::open(back.path());
    assert_eq!(
        layout.tagged("1.0")["digest"],
        image.manifest.digest.as_str()
    );
    for blob in image.blobs() {
        assert!(
            layout.blob(&blob.digest) == blob.data,
            "{} differs",
            blob.digest
        );
    }

    let page = reqwest::get(format!("http://{host}/ui/image/standalone/skopeo@1.0"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let link =
        regex::Regex::new(r#"<a class="gateway" href="([^"]+)" data-digest="([^"]+)""#).unwrap();
    let links: Vec<(String, String)> = link
        .captures_iter(&page)
        .map(|c| (c[1].to_owned(), c[2].to_owned()))
        .collect();
    assert_eq!(links.len(), 3, "config and two layers: {page}");
    for (href, digest) in links {
        let blob = image
            .blobs()
            .into_iter()
            .find(|b| b.digest == digest)
            .expect("a pushed blob");
        let fetched = reqwest::get(format!("http://{host}{href}"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(fetched == blob.data, "{href} is not {digest}");
    }
}

/// Logs go to standard error, as plain text when that is a file: no colour escape codes
/// for a log file or a collector to carry. Standard output is the subcommand's alone.
#[test]
fn a_log_written_to_a_file_has_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("migrate.log");
    let out = common::cli::registry_command()
        .arg("migrate")
        .env("IPFS_REGISTRY_DATA_DIR", dir.path().join("data"))
        // The default level, and no NO_COLOR: the file alone must turn colour off.
        .env_remove("IPFS_REGISTRY_LOG")
        .env_remove("NO_COLOR")
        .stderr(std::fs::File::create(&log).unwrap())
        .output()
        .expect("run ipfs-registry migrate");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "migrations applied\n"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("event=\"metadata_store\""), "{log}");
    assert!(log.contains(" INFO "), "{log}");
    assert!(
        !log.contains('\x1b'),
        "escape codes in the log file:\n{log:?}"
    );
}

/// What a client that speaks TLS sends first: a TLS 1.2 ClientHello record. docker and
/// podman send one to a plain-HTTP registry on every operation before falling back to HTTP.
fn tls_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x03]; // client version TLS 1.2
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0xc0, 0x2f]); // two cipher suites
    hello.extend_from_slice(&[0x01, 0x00]); // compression: null
    hello.extend_from_slice(&[0x00, 0x00]); // no extensions
    let len = hello.len();
    let mut handshake = vec![0x01, 0, (len >> 8) as u8, len as u8]; // ClientHello
    handshake.extend(hello);
    let len = handshake.len();
    let mut record = vec![0x16, 0x03, 0x01, (len >> 8) as u8, len as u8]; // handshake record
    record.extend(handshake);
    record
}

/// Sends `bytes` on a connection of its own and returns what comes back until the server
/// closes it.
async fn send_raw(host: &str, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server closes a connection it cannot parse")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A TLS handshake on the plain-HTTP port, or any request that is not HTTP, is the
/// client's mistake: answered 400 and logged at debug, never as the registry's ERROR.
#[tokio::test]
async fn tls_and_garbage_from_clients_are_no_errors_of_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let server = Served::start(
        common::cli::serve_command()
            .env("IPFS_REGISTRY_DATA_DIR", dir.path())
            .env("IPFS_REGISTRY_LOGGING__FORMAT", "json")
            .env("IPFS_REGISTRY_LOG", "info,ipfs_registry=debug"),
    )
    .await;
    for probe in [tls_client_hello(), b"NOT HTTP AT ALL\r\n\r\n".to_vec()] {
        let answer = send_raw(server.host(), &probe).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    }
    // The server still serves.
    let base = reqwest::get(format!("{}/v2/", server.base)).await.unwrap();
    assert_eq!(base.status(), 200);

    let (clean_exit, stdout, log) = server.stop();
    assert!(clean_exit, "{log}");
    assert_eq!(stdout, "", "serve writes its log to stderr");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let loud: Vec<_> = lines
        .iter()
        .filter(|l| l["level"] == "ERROR" || l["level"] == "WARN")
        .collect();
    assert!(loud.is_empty(), "clients' faults logged as ours: {loud:#?}");
    let faults = lines
        .iter()
        .filter(|l| l["event"] == "client_connection_error")
        .inspect(|l| assert_eq!(l["level"], "DEBUG", "{l}"))
        .count();
    assert_eq!(faults, 2, "one debug event per bad connection:\n{log}");
}
