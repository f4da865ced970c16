//! The command line: migrations, and configuration errors that name the setting.

mod common;

use std::process::{Command, Output};

fn registry(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ipfs-registry"));
    command.args(args).env("IPFS_REGISTRY_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("IPFS_REGISTRY_") && !key.starts_with("IPFS_REGISTRY_TEST_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("run ipfs-registry")
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
fn serve_requires_the_database_and_ipfs_urls() {
    let out = registry(&["serve"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("database.url"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry.toml");
    std::fs::write(
        &file,
        "[database]\nurl = \"postgres://nobody@127.0.0.1:1/none\"\n",
    )
    .unwrap();
    let out = registry(&["--config", file.to_str().unwrap(), "serve"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ipfs.url"));

    let out = registry(&["--config", "/nonexistent/registry.toml", "serve"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}
