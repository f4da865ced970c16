//! Logins in a hostile world (issue 13): bursts of password checks stay bounded in number
//! and memory, nobody can lock a user out from another address or lock out their robot
//! tokens by guessing the password, and a user name cannot forge log lines. Client
//! addresses are real peers: requests are sent from other 127.0.0.0/8 source addresses.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::auth::*;
use common::cli::{serve_command, stores_env, Served};
use common::StorePair;
use ipfs_registry::auth::admin;

/// An HTTP client whose connections come from `address`.
fn client_from(address: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(address))
        .build()
        .unwrap()
}

/// `GET /token` with Basic credentials: the status, and for a 429 its error code and
/// `Retry-After`, which every 429 must carry.
async fn login(client: &reqwest::Client, base: &str, user: &str, password: &str) -> u16 {
    let response = client
        .get(format!("{base}/token?service=ipfs-registry"))
        .header("Authorization", basic(user, password))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 429 {
        assert!(
            response.headers().contains_key("retry-after"),
            "a 429 without Retry-After"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS", "{body}");
    }
    status
}

/// A served registry binary with access control on and the user `alice`, on `stores`.
async fn serve_with_alice(stores: StorePair, log: &str, extra: &[(&str, &str)]) -> Served {
    let config = stores.test_config().await;
    let users = ipfs_registry::server::metadata_stores(&config)
        .await
        .unwrap()
        .users;
    admin::add_user(users.as_ref(), "alice", "alice-password", false)
        .await
        .unwrap();
    drop(users);
    Served::start(
        serve_command()
            .envs(stores_env(&config))
            .env("IPFS_REGISTRY_AUTH__ENABLED", "true")
            .env("IPFS_REGISTRY_LOG", log)
            .envs(extra.iter().copied()),
    )
    .await
}

common::on_each_store_pair!(concurrent_logins_stay_within_bounded_memory);
/// 200 logins at once, half with the right password and half with a wrong one from 100
/// addresses (so that the throttle lets each through): each argon2 check holds 19 MiB, and
/// unbounded they took the server to gigabytes. On a bounded number of slots (two here,
/// as on a two-core machine) the server's peak memory barely moves.
async fn concurrent_logins_stay_within_bounded_memory(stores: StorePair) {
    let served = serve_with_alice(
        stores,
        common::cli::SERVE_QUIET_LOG,
        &[("IPFS_REGISTRY_AUTH__MAX_CONCURRENT_PASSWORD_CHECKS", "2")],
    )
    .await;
    let base = served.base.clone();
    // The server is warm (one password check has run) but has not seen alice's password.
    let local = reqwest::Client::new();
    assert_eq!(login(&local, &base, "alice", "not-her-password").await, 401);
    let before = common::peak_rss_kib(served.pid());

    let valid = (0..100).map(|_| login(&local, &base, "alice", "alice-password"));
    let guessers: Vec<reqwest::Client> = (1..=100)
        .map(|i| client_from(Ipv4Addr::new(127, 0, 1, i)))
        .collect();
    let wrong = guessers.iter().enumerate().map(|(i, client)| {
        let base = &base;
        async move { login(client, base, "alice", &format!("guess-{i}")).await }
    });
    let (valid, wrong) = tokio::join!(
        futures::future::join_all(valid),
        futures::future::join_all(wrong)
    );
    let after = common::peak_rss_kib(served.pid());
    assert!(
        after.saturating_sub(before) < 200 * 1024,
        "peak RSS {} MiB before, {} MiB after 200 concurrent logins",
        before / 1024,
        after / 1024
    );
    // Some may have waited too long for a slot (429) or a database connection (503).
    assert!(
        valid.iter().all(|s| [200, 429, 503].contains(s)),
        "right password: {valid:?}"
    );
    assert!(
        wrong.iter().all(|s| [401, 429, 503].contains(s)) && wrong.contains(&401),
        "wrong password: {wrong:?}"
    );
    assert_eq!(login(&local, &base, "alice", "alice-password").await, 200);
}

common::on_each_store_pair!(a_burst_of_wrong_passwords_gets_only_the_allowed_checks);
/// A concurrent burst of wrong passwords for one user from one address gets the checks the
/// same attempts one after another would (5 free failures and the one that locks, plus one
/// per lockout that runs out while the burst still arrives), not one per request.
async fn a_burst_of_wrong_passwords_gets_only_the_allowed_checks(stores: StorePair) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("alice", "alice-password", false).await;
    let client = reqwest::Client::new();
    let base = registry.base().to_owned();
    let (client, base) = (&client, &base);
    let attempts =
        (0..200).map(|i| async move { login(client, base, "alice", &format!("guess-{i}")).await });
    let statuses = futures::future::join_all(attempts).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    assert!(
        (6..=10).contains(&checked),
        "{checked} of 200 concurrent wrong passwords were checked"
    );
}

common::on_each_store_pair!(another_address_cannot_lock_a_user_out);
/// Wrong passwords for `ci` from one address lock out that address, for `ci` and, after
/// many names, for everyone: never `ci` nor anyone else from another address.
async fn another_address_cannot_lock_a_user_out(stores: StorePair) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("ci", "ci-password", false).await;
    registry.add_user("dev", "dev-password", false).await;
    let base = registry.base().to_owned();
    let guesser = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let elsewhere = client_from(Ipv4Addr::new(127, 0, 0, 3));

    let mut statuses = Vec::new();
    for i in 0..25 {
        statuses.push(login(&guesser, &base, "ci", &format!("guess-{i}")).await);
    }
    assert!(
        statuses[..6].iter().all(|s| *s == 401) && statuses[24] == 429,
        "{statuses:?}"
    );
    assert_eq!(
        login(&guesser, &base, "ci", "ci-password").await,
        429,
        "the guessing address itself is locked out"
    );
    assert_eq!(login(&elsewhere, &base, "ci", "ci-password").await, 200);

    let mut statuses = Vec::new();
    for i in 0..25 {
        statuses.push(login(&guesser, &base, &format!("user{i}"), "guess").await);
    }
    assert_eq!(
        statuses[24], 429,
        "after so many names, the address is locked out: {statuses:?}"
    );
    assert_eq!(login(&elsewhere, &base, "dev", "dev-password").await, 200);
}

common::on_each_store_pair!(robot_tokens_work_while_the_password_is_guessed);
/// Guessing a user's password never locks out the user's robot tokens, not even from the
/// guessing address (behind a proxy that is not in `auth.trusted_proxies`, that is every
/// client's).
async fn robot_tokens_work_while_the_password_is_guessed(stores: StorePair) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("ci", "ci-password", false).await;
    registry.grant("ci", "team/*", "pull,push").await;
    let robot = registry
        .robot_token(
            "ci",
            &["repository:team/app:pull"],
            std::time::Duration::from_secs(3600),
        )
        .await;
    let base = registry.base().to_owned();
    let guesser = client_from(Ipv4Addr::new(127, 0, 0, 4));
    let mut last = 0;
    for i in 0..25 {
        last = login(&guesser, &base, "ci", &format!("guess-{i}")).await;
    }
    assert_eq!(last, 429, "the guesser is locked out");

    assert_eq!(login(&guesser, &base, "ci", &robot).await, 200);
    let elsewhere = client_from(Ipv4Addr::new(127, 0, 0, 5));
    assert_eq!(login(&elsewhere, &base, "ci", &robot).await, 200);
}

common::on_each_store_pair!(a_user_name_cannot_forge_log_lines);
/// The user name of a failed login reaches the log escaped: a name with a line break and
/// a terminal escape cannot start a forged line nor drive the terminal of whoever reads it.
async fn a_user_name_cannot_forge_log_lines(stores: StorePair) {
    let served = serve_with_alice(
        stores,
        "warn,ipfs_registry::server=info,ipfs_registry::auth=info",
        &[],
    )
    .await;
    let name = "ghost\nFORGED event=\"login_ok\" user=\"admin\"\u{1b}[2K\r";
    let client = reqwest::Client::new();
    assert_eq!(login(&client, &served.base, name, "a-guess").await, 401);
    let form = client
        .post(format!("{}/token", served.base))
        .form(&[
            ("grant_type", "password"),
            ("username", name),
            ("password", "another-guess"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 401);

    let (_, _, log) = served.stop();
    assert_eq!(
        log.matches("login_failed").count(),
        2,
        "both failures are logged:\n{log}"
    );
    assert!(
        !log.lines().any(|line| line.starts_with("FORGED")),
        "a forged line:\n{log}"
    );
    assert!(
        !log.contains(['\u{1b}', '\r']),
        "a raw control character:\n{log}"
    );
    assert!(log.contains(r"ghost\nFORGED"), "the name, escaped:\n{log}");
}
