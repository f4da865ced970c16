//! The access-control CLI: `user add|passwd|list|remove` (password on standard input, line
//! ending stripped), `grant`, `revoke`, `public`, `token create`, checked against the
//! store they write (PostgreSQL, or the embedded SQLite file), on each store pair.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use ipfs_registry::auth::password;
use ipfs_registry::config::Config;

fn registry(config: &Config, args: &[&str], stdin: &str) -> Output {
    let mut command = common::cli::registry_command();
    command
        .args(args)
        .envs(common::cli::stores_env(config))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run ipfs-registry");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

use common::cli::succeeded as ok;
use common::StorePair;

fn fails(out: &Output, mentions: &str) {
    assert!(!out.status.success(), "must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(mentions), "{stderr}");
}

common::on_each_store_pair!(users_grants_public_and_robot_tokens);
async fn users_grants_public_and_robot_tokens(stores: StorePair) {
    let config = stores.test_config().await;
    let out = registry(
        &config,
        &["user", "add", "admin", "--admin"],
        "first-admin-pw\n",
    );
    assert!(ok(&out).contains("user admin created"));
    let store = ipfs_registry::server::metadata_stores(&config)
        .await
        .unwrap()
        .users;
    let admin = store.user("admin").await.unwrap().expect("created");
    assert!(admin.admin);
    assert!(admin.password_hash.starts_with("$argon2id$"));
    assert!(
        password::verify("first-admin-pw", &admin.password_hash),
        "the line ending is not part of the password"
    );

    fails(
        &registry(&config, &["user", "add", "admin"], "another-password\n"),
        "already exists",
    );
    fails(
        &registry(&config, &["user", "add", "short"], "abc\n"),
        "at least 8",
    );
    fails(
        &registry(&config, &["user", "add", "a:b"], "long-enough\n"),
        "invalid user name",
    );

    ok(&registry(
        &config,
        &["user", "add", "alice"],
        "alice-password\r\n",
    ));
    let alice = store.user("alice").await.unwrap().unwrap();
    assert!(!alice.admin);
    assert!(password::verify("alice-password", &alice.password_hash));

    ok(&registry(
        &config,
        &["grant", "alice", "team/*", "pull,push"],
        "",
    ));
    ok(&registry(
        &config,
        &["grant", "alice", "team/*", "delete"],
        "",
    ));
    fails(
        &registry(&config, &["grant", "alice", "Team/*", "pull"], ""),
        "pattern",
    );
    fails(
        &registry(&config, &["grant", "alice", "team/*", "write"], ""),
        "write",
    );
    fails(
        &registry(&config, &["grant", "nobody", "team/*", "pull"], ""),
        "no user",
    );
    let grants = store.grants(alice.id).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].pattern, "team/*");
    assert_eq!(grants[0].permissions, vec!["delete", "pull", "push"]);
    ok(&registry(
        &config,
        &["revoke", "alice", "team/*", "push,delete"],
        "",
    ));
    assert_eq!(
        store.grants(alice.id).await.unwrap()[0].permissions,
        vec!["pull"]
    );

    ok(&registry(&config, &["public", "add", "pub/*"], ""));
    assert_eq!(
        ok(&registry(&config, &["public", "list"], "")).trim(),
        "pub/*"
    );

    let token = ok(&registry(
        &config,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--scope",
            "repository:team/app:pull,push",
            "--expires",
            "1h",
        ],
        "",
    ));
    let token = token.trim();
    let (id, _) = ipfs_registry::auth::robot::parse(token).expect("a robot token");
    let stored = store.robot_token(id).await.unwrap().expect("stored");
    assert_eq!(stored.user_id, alice.id);
    assert_eq!(stored.scopes, "repository:team/app:pull,push");
    fails(
        &registry(
            &config,
            &[
                "token",
                "create",
                "--user",
                "alice",
                "--scope",
                "registry:catalog:*",
            ],
            "",
        ),
        "repository scopes",
    );

    ok(&registry(
        &config,
        &["user", "passwd", "alice"],
        "changed-password\n",
    ));
    let alice_after = store.user("alice").await.unwrap().unwrap();
    assert!(password::verify(
        "changed-password",
        &alice_after.password_hash
    ));
    assert!(!password::verify(
        "alice-password",
        &alice_after.password_hash
    ));

    assert_eq!(
        ok(&registry(&config, &["user", "list"], "")),
        "admin (admin)\nalice\n"
    );
    ok(&registry(&config, &["user", "remove", "alice"], ""));
    assert!(store.user("alice").await.unwrap().is_none());
    assert!(
        store.robot_token(id).await.unwrap().is_none(),
        "robot tokens go with their user"
    );
    fails(
        &registry(&config, &["user", "remove", "alice"], ""),
        "no user",
    );
}

common::on_each_store_pair!(scripts_capture_the_token_and_the_configuration_alone);
/// What scripts do: `TOKEN=$(ipfs-registry token create ...)` and
/// `ipfs-registry config > effective.toml` capture the result alone, at any log level (logs
/// go to standard error, which this discards).
async fn scripts_capture_the_token_and_the_configuration_alone(stores: StorePair) {
    let config = stores.test_config().await;
    ok(&registry(
        &config,
        &["user", "add", "ci"],
        "ci-password-1\n",
    ));
    for level in [None, Some("debug")] {
        let run = |args: &[&str]| {
            let mut command = common::cli::registry_command();
            match level {
                Some(level) => command.env("IPFS_REGISTRY_LOG", level),
                None => command.env_remove("IPFS_REGISTRY_LOG"),
            };
            let out = command
                .envs(common::cli::stores_env(&config))
                .args(args)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .expect("run ipfs-registry");
            assert!(out.status.success(), "{args:?} at level {level:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        let stdout = run(&[
            "token",
            "create",
            "--user",
            "ci",
            "--scope",
            "repository:team/app:pull,push",
            "--expires",
            "1h",
        ]);
        let token = stdout
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("level {level:?}: not one line: {stdout:?}"));
        assert!(!token.contains('\n'), "level {level:?}: {stdout:?}");
        assert!(
            ipfs_registry::auth::robot::parse(token).is_some(),
            "level {level:?}: not a robot token: {stdout:?}"
        );

        let text = run(&["config"]);
        text.parse::<toml::Table>()
            .unwrap_or_else(|e| panic!("level {level:?}: not TOML ({e}):\n{text}"));
    }
}
