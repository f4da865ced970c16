//! The web UI's logins and failure pages: a login form that opens a session (a cookie),
//! pages and the gateway that take it without checking the password again, logout, the
//! CSRF defence of every form, and sessions that end when the password changes or the user
//! is removed. Against a real registry on both store pairs; Chromium renders the pages and
//! keeps screenshots under target/ui-screenshots/.

mod common;

use std::time::Duration;

use common::browser::{links, rendered, screenshot};
use common::oci::{artifact_manifest, header_or_empty, image_manifest, Image, Manifest, Oci};
use common::StorePair;
use ipfs_registry::auth::admin;
use ipfs_registry::registry::rules::ImmutableRule;
use reqwest::redirect::Policy;
use reqwest::{Response, StatusCode};
use serde_json::json;

/// A client that follows no redirect (the tests look at them) and keeps no cookies (the
/// tests send them).
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The session cookie's `name=value` from a login's answer.
fn session_of(response: &Response) -> String {
    let set = header_or_empty(response, "set-cookie");
    let pair = set.split(';').next().unwrap_or_default();
    assert!(pair.starts_with("ipfs_registry_session="), "{set}");
    pair.to_owned()
}

/// The value of a counter series in `/metrics` (0 when absent).
async fn metric(base: &str, series: &str) -> f64 {
    let text = http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    common::metric_sample(&text, series).unwrap_or(0.0)
}

struct Browser<'a> {
    http: reqwest::Client,
    base: &'a str,
}

impl Browser<'_> {
    async fn get(&self, path: &str, cookie: Option<&str>) -> Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    /// An anonymous page, asserting 200.
    async fn text(&self, path: &str) -> String {
        let response = self.get(path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        response.text().await.unwrap()
    }

    /// A form post; `origin` is the `Origin` header the browser sends (none when `None`).
    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
        cookie: Option<&str>,
    ) -> Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            );
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    /// Logs `user` in through the form from the registry's own page; the session cookie.
    async fn login(&self, user: &str, password: &str) -> String {
        let response = self
            .post(
                "/ui/login",
                &[("username", user), ("password", password), ("next", "/ui/")],
                Some(self.base),
                None,
            )
            .await;
        assert_eq!(response.status(), 303, "login of {user}");
        session_of(&response)
    }
}

common::on_each_store_pair!(
    a_login_opens_a_session_that_pages_and_the_gateway_take,
    flavor = "current_thread"
);
async fn a_login_opens_a_session_that_pages_and_the_gateway_take(stores: StorePair) {
    let registry = common::auth::start_auth_registry_with(stores, |config| {
        // Every Basic login would otherwise pass through the cache and still be counted:
        // the count below must show the session alone.
        config.auth.login_cache_ttl = Duration::ZERO;
    })
    .await;
    let (private, _) = registry
        .alice_with_private_and_public_images("pull,push,delete")
        .await;
    let alice = Some(("alice", "alice-password"));
    let private_cid = header_or_empty(
        &registry
            .client(alice, &["repository:team/app:pull"])
            .await
            .head(&format!("/v2/team/app/blobs/{}", private.layers[0].digest))
            .await,
        "x-ipfs-path",
    );
    let base = registry.base();
    let browser = Browser { http: http(), base };

    // Anonymous: the public repository and a way to log in.
    let home = browser.get("/ui/", None).await.text().await.unwrap();
    assert!(
        home.contains("pub/app") && !home.contains("team/app"),
        "{home}"
    );
    assert!(home.contains(r#"href="/ui/login""#), "{home}");
    assert!(!home.contains("Nothing pushed yet"), "{home}");
    let form = browser.get("/ui/login?next=/ui/repo/team/app", None).await;
    assert_eq!(form.status(), 200);
    let form = form.text().await.unwrap();
    assert!(
        form.contains(r#"name="next" value="/ui/repo/team/app""#),
        "{form}"
    );

    // Forms posted from elsewhere, or that say not where from, are refused.
    let credentials = [
        ("username", "alice"),
        ("password", "alice-password"),
        ("next", "/ui/repo/team/app"),
    ];
    for origin in [None, Some("http://evil.example"), Some("null")] {
        let refused = browser.post("/ui/login", &credentials, origin, None).await;
        assert_eq!(refused.status(), 403, "{origin:?}");
        assert_eq!(header_or_empty(&refused, "set-cookie"), "", "{origin:?}");
        assert!(header_or_empty(&refused, "content-type").starts_with("text/html"));
        assert!(refused.text().await.unwrap().contains("own page"));
    }
    let wrong = browser
        .post(
            "/ui/login",
            &[("username", "alice"), ("password", "nope")],
            Some(base),
            None,
        )
        .await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(header_or_empty(&wrong, "set-cookie"), "");
    assert!(wrong
        .text()
        .await
        .unwrap()
        .contains("Invalid user name or password."));

    // The login: one password check, then a cookie only this site's pages get.
    let logins = r#"ipfs_registry_auth_total{outcome="success"}"#;
    let before = metric(base, logins).await;
    let login = browser
        .post("/ui/login", &credentials, Some(base), None)
        .await;
    assert_eq!(login.status(), 303);
    assert_eq!(header_or_empty(&login, "location"), "/ui/repo/team/app");
    let set = header_or_empty(&login, "set-cookie");
    for attribute in [
        "; Path=/",
        "; HttpOnly",
        "; SameSite=Strict",
        "; Max-Age=43200",
    ] {
        assert!(set.contains(attribute), "{attribute}: {set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    let session = session_of(&login);
    let cookie = Some(session.as_str());

    let home = browser.get("/ui/", cookie).await.text().await.unwrap();
    assert!(
        home.contains("team/app") && home.contains("pub/app"),
        "{home}"
    );
    assert!(home.contains("alice") && home.contains("Log out"), "{home}");
    // Which repositories anyone may pull, and which only those allowed.
    let marker = |name: &str| {
        let row = regex::Regex::new(&format!(
            r#"{name}</span> <span class="badge (public|private)""#
        ))
        .unwrap();
        row.captures(&home).map(|c| c[1].to_owned())
    };
    assert_eq!(marker("pub/app").as_deref(), Some("public"), "{home}");
    assert_eq!(marker("team/app").as_deref(), Some("private"), "{home}");
    // Delete buttons where the user may delete, and only there.
    let team = browser
        .get("/ui/repo/team/app", cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(team.contains("Delete tag"), "{team}");
    let public = browser
        .get("/ui/repo/pub/app", cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(!public.contains("Delete tag"), "{public}");
    let refused = browser
        .post(
            "/ui/delete",
            &[("repo", "pub/app"), ("reference", "1")],
            Some(base),
            cookie,
        )
        .await;
    assert_eq!(refused.status(), 403);
    for page in ["/ui/repo/team/app", "/ui/image/team/app@1"] {
        assert_eq!(browser.get(page, cookie).await.status(), 200, "{page}");
    }
    let layer = browser.get(&private_cid, cookie).await;
    assert_eq!(layer.status(), 200);
    assert!(header_or_empty(&layer, "vary").contains("Cookie"));
    assert_eq!(layer.bytes().await.unwrap(), private.layers[0].data);
    assert_eq!(
        metric(base, logins).await,
        before + 1.0,
        "pages with a session check no password"
    );
    // A session is not a registry token.
    assert_eq!(
        browser.get("/v2/team/app/tags/list", cookie).await.status(),
        401
    );

    // Logout: a button (a typed-in URL changes nothing), refused from elsewhere, else the
    // cookie is removed.
    let typed = browser.get("/ui/logout", cookie).await;
    assert_eq!(typed.status(), 200);
    assert_eq!(header_or_empty(&typed, "set-cookie"), "");
    assert!(typed
        .text()
        .await
        .unwrap()
        .contains(r#"<form method="post" action="/ui/logout">"#));
    let refused = browser
        .post("/ui/logout", &[], Some("http://evil.example"), cookie)
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(header_or_empty(&refused, "set-cookie"), "");
    let logout = browser.post("/ui/logout", &[], Some(base), cookie).await;
    assert_eq!(logout.status(), 303);
    assert_eq!(header_or_empty(&logout, "location"), "/ui/");
    let cleared = header_or_empty(&logout, "set-cookie");
    assert!(
        cleared.starts_with("ipfs_registry_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    // A password change ends every session of the user at once.
    let session = browser.login("alice", "alice-password").await;
    let cookie = Some(session.as_str());
    assert_eq!(browser.get("/ui/repo/team/app", cookie).await.status(), 200);
    admin::set_password(registry.store.as_ref(), "alice", "a new password")
        .await
        .unwrap();
    let ended = browser.get("/ui/repo/team/app", cookie).await;
    assert_eq!(ended.status(), 401);
    assert!(ended.text().await.unwrap().contains("/ui/login?next="));
    let home = browser.get("/ui/", cookie).await.text().await.unwrap();
    assert!(
        !home.contains("team/app") && home.contains("Log in"),
        "{home}"
    );
    assert_eq!(browser.get(&private_cid, cookie).await.status(), 401);

    // So does the user's removal, even if a user of that name comes back.
    let session = browser.login("bob", "bob-password").await;
    admin::remove_user(registry.store.as_ref(), "bob")
        .await
        .unwrap();
    registry.add_user("bob", "bob-password", false).await;
    let home = browser
        .get("/ui/", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(!home.contains("Log out"), "{home}");

    // Logged in but not allowed: a page saying so.
    let session = browser.login("bob", "bob-password").await;
    let denied = browser.get("/ui/repo/team/app", Some(&session)).await;
    assert_eq!(denied.status(), 403);
    let denied = denied.text().await.unwrap();
    assert!(denied.contains("Not allowed"), "{denied}");
    assert!(
        denied.contains("bob") && denied.contains("Log out"),
        "the page still says who is logged in: {denied}"
    );

    // A robot token is for registry clients, not for a session.
    let robot = registry
        .robot_token(
            "alice",
            &["repository:team/app:pull"],
            Duration::from_secs(600),
        )
        .await;
    let refused = browser
        .post(
            "/ui/login",
            &[("username", "alice"), ("password", &robot)],
            Some(base),
            None,
        )
        .await;
    assert_eq!(refused.status(), 400);
    assert_eq!(header_or_empty(&refused, "set-cookie"), "");

    // As Chromium shows them: the anonymous list with its "Log in" link, the login form,
    // a page asking to log in.
    let profile = tempfile::tempdir().unwrap();
    let pair = format!("{stores:?}").to_lowercase();
    let home = rendered(&registry.registry.url("/ui/"), profile.path()).await;
    assert_eq!(links(&home, "Log in"), vec!["/ui/login"], "{home}");
    let login_page = rendered(&registry.registry.url("/ui/login"), profile.path()).await;
    assert!(login_page.contains(r#"type="password""#), "{login_page}");
    for (path, name) in [
        ("/ui/", "anonymous"),
        ("/ui/login", "login"),
        ("/ui/repo/team/app", "login-required"),
    ] {
        let url = registry.registry.url(path);
        screenshot(&url, profile.path(), &format!("{name}-{pair}")).await;
    }
}

common::on_each_store_pair!(secure_cookies_over_https, flavor = "current_thread");
/// Behind an https `public_url`, the cookie is `Secure` and forms must come from there.
async fn secure_cookies_over_https(stores: StorePair) {
    let registry = common::auth::start_auth_registry_with(stores, |config| {
        config.public_url = Some("https://registry.example.org".parse().unwrap());
    })
    .await;
    registry.add_user("alice", "alice-password", false).await;
    let browser = Browser {
        http: http(),
        base: registry.base(),
    };
    let form = [("username", "alice"), ("password", "alice-password")];
    let refused = browser
        .post("/ui/login", &form, Some(registry.base()), None)
        .await;
    assert_eq!(refused.status(), 403, "not the public origin");
    let login = browser
        .post(
            "/ui/login",
            &form,
            Some("https://registry.example.org"),
            None,
        )
        .await;
    assert_eq!(login.status(), 303);
    assert!(header_or_empty(&login, "set-cookie").ends_with("; Secure"));
}

common::on_each_store_pair!(failures_are_pages, flavor = "current_thread");
/// Under /ui, what fails is a page a person reads, with the status a script checks.
async fn failures_are_pages(stores: StorePair) {
    let registry = stores
        .start_registry_with(|config| {
            config.immutable = vec![ImmutableRule {
                repositories: "pages/*".parse().unwrap(),
                tags: vec!["v*".parse().unwrap()],
            }];
        })
        .await;
    let oci = common::oci::Oci::new(&registry.base);
    oci.push_image("pages/app", Some("1"), 1).await;
    oci.push_image("pages/app", Some("v1"), 1).await;
    let browser = Browser {
        http: http(),
        base: &registry.base,
    };
    for (path, status, says) in [
        ("/ui/image/pages/app@nope", 404, "Not found"),
        (
            "/ui/repo/pages/none",
            404,
            "Repository name not known to registry.",
        ),
        ("/ui/no/such/page", 404, "Not found"),
        ("/ui/repo/NOT..valid", 400, "Invalid repository name."),
        ("/ui/image/pages/app@sha256:zz", 400, "Invalid digest"),
        // Nothing to log in to with access control off.
        ("/ui/login", 404, "Not found"),
    ] {
        let response = browser.get(path, None).await;
        assert_eq!(
            response.status(),
            StatusCode::from_u16(status).unwrap(),
            "{path}"
        );
        assert!(
            header_or_empty(&response, "content-type").starts_with("text/html"),
            "{path}"
        );
        let text = response.text().await.unwrap();
        assert!(text.contains(says), "{path}: {text}");
        assert!(text.contains(r#"href="/ui/""#), "{path}: a way back");
        assert!(!text.contains("Log in"), "{path}: auth is off");
    }
    // An immutable tag stays, whatever the form says; the page says why.
    let refused = browser
        .post(
            "/ui/delete",
            &[("repo", "pages/app"), ("reference", "v1")],
            Some(&registry.base),
            None,
        )
        .await;
    assert_eq!(refused.status(), 409);
    let text = refused.text().await.unwrap();
    assert!(text.contains("Tag v1 of pages/app is immutable"), "{text}");
    assert_eq!(oci.get("/v2/pages/app/manifests/v1").await.status(), 200);

    let profile = tempfile::tempdir().unwrap();
    let pair = format!("{stores:?}").to_lowercase();
    screenshot(
        &registry.url("/ui/image/pages/app@nope"),
        profile.path(),
        &format!("not-found-{pair}"),
    )
    .await;
}

/// Two single-platform images in `repo`, the first tagged `amd64`, and an index over both
/// tagged `multi`; the bytes of every blob pushed, and of the first image's.
async fn push_platforms(oci: &Oci, repo: &str) -> (Image, Manifest, u64, u64) {
    let (amd64, arm64, index) = oci.push_platform_index(repo).await;
    let bytes = |image: &Image| -> u64 {
        std::iter::once(&image.config)
            .chain(&image.layers)
            .map(|b| b.data.len() as u64)
            .sum()
    };
    let (one, all) = (bytes(&amd64), bytes(&amd64) + bytes(&arm64));
    (amd64, index, one, all)
}

common::on_each_store_pair!(
    the_lists_show_sizes_platforms_pushes_and_pull_commands,
    flavor = "current_thread"
);
async fn the_lists_show_sizes_platforms_pushes_and_pull_commands(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let (amd64, index, amd64_bytes, all_bytes) = push_platforms(&oci, "list/alpha").await;
    let beta = oci.push_image("list/beta", Some("x"), 1).await;
    let browser = Browser {
        http: http(),
        base: &registry.base,
    };

    // The list: each repository with its tag count, size and last push; filtered by name.
    let home = browser.text("/ui/").await;
    assert!(
        home.contains("list/alpha") && home.contains("list/beta"),
        "{home}"
    );
    assert!(
        home.contains("2 tags") && home.contains("1 tag ·"),
        "{home}"
    );
    assert!(
        home.contains(&format!(r#"data-bytes="{all_bytes}""#)),
        "{home}"
    );
    let year = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    assert!(home.contains(&format!("pushed {}", &year[..4])), "{home}");
    assert!(!home.contains(r#"class="badge"#), "auth is off: {home}");
    let filtered = browser.text("/ui/?q=ALP").await;
    assert!(
        filtered.contains("/ui/repo/list/alpha") && !filtered.contains("/ui/repo/list/beta"),
        "{filtered}"
    );
    assert!(filtered.contains(r#"value="alp""#), "{filtered}");
    assert!(browser
        .text("/ui/?q=nothing")
        .await
        .contains("No repository name contains"));

    // The repository: each tag's digest, size, platforms, push time and pull commands.
    let page = browser.text("/ui/repo/list/alpha").await;
    let host = registry.host();
    for pull in [
        format!("docker pull {host}/list/alpha:amd64"),
        format!("docker pull {host}/list/alpha@{}", amd64.manifest.digest),
        format!("docker pull {host}/list/alpha:multi"),
        format!("docker pull {host}/list/alpha@{}", index.digest),
    ] {
        assert!(page.contains(&pull), "{pull}: {page}");
    }
    assert!(page.contains("linux/amd64, linux/arm64"), "{page}");
    assert!(
        page.contains(&format!(r#"data-bytes="{amd64_bytes}""#)),
        "{page}"
    );
    assert!(
        page.contains(&format!(r#"data-bytes="{all_bytes}""#)),
        "{page}"
    );
    assert!(page.contains(&format!("{} UTC", &year[..4])) || page.contains(" UTC"));

    // Deleting a tag: a confirmation page, then a POST from this site only.
    let confirm = browser.text("/ui/delete?repo=list/beta&reference=x").await;
    assert!(confirm.contains(r#"action="/ui/delete""#), "{confirm}");
    let form = [("repo", "list/beta"), ("reference", "x")];
    let refused = browser.post("/ui/delete", &form, None, None).await;
    assert_eq!(refused.status(), 403);
    let refused = browser
        .post("/ui/delete", &form, Some("http://evil.example"), None)
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        oci.get(&format!("/v2/list/beta/manifests/{}", beta.manifest.digest))
            .await
            .status(),
        200
    );
    let deleted = browser
        .post("/ui/delete", &form, Some(&registry.base), None)
        .await;
    assert_eq!(deleted.status(), 303);
    assert_eq!(header_or_empty(&deleted, "location"), "/ui/repo/list/beta");
    assert_eq!(oci.get("/v2/list/beta/manifests/x").await.status(), 404);
    let gone = browser
        .get("/ui/delete?repo=list/beta&reference=x", None)
        .await;
    assert_eq!(gone.status(), 404, "a stale link says so");

    let profile = tempfile::tempdir().unwrap();
    let pair = format!("{stores:?}").to_lowercase();
    for (path, name) in [
        ("/ui/", "list"),
        ("/ui/repo/list/alpha", "tags"),
        ("/ui/delete?repo=list/alpha&reference=amd64", "delete"),
    ] {
        let url = registry.url(path);
        screenshot(&url, profile.path(), &format!("{name}-{pair}")).await;
    }
}

common::on_each_store_pair!(
    the_image_page_summarises_config_layers_and_referrers,
    flavor = "current_thread"
);
async fn the_image_page_summarises_config_layers_and_referrers(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let repo = "image/app";
    let config = oci
        .push_blob(
            repo,
            &serde_json::to_vec(&json!({
                "architecture": "arm64",
                "variant": "v8",
                "os": "linux",
                "created": "2026-11-30T08:15:00Z",
                "config": {
                    "Entrypoint": ["/bin/server"],
                    "Cmd": ["--port", "8080"],
                    "ExposedPorts": { "8080/tcp": {} },
                    "Labels": { "org.opencontainers.image.source": "<script>alert(1)</script>" },
                },
                "history": [
                    { "created_by": "ADD rootfs.tar /" },
                    { "created_by": "ENV PORT=8080", "empty_layer": true },
                ],
                "rootfs": { "type": "layers", "diff_ids": [] },
            }))
            .unwrap(),
        )
        .await;
    let layer = oci.push_random_blob(repo, 3000).await;
    let image = image_manifest(&config, std::slice::from_ref(&layer), None);
    oci.push_manifest(repo, "v1", &image).await;
    oci.push_blob(repo, b"{}").await;
    let signature = artifact_manifest(
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        Some(&image),
        json!({}),
    );
    oci.push_manifest(repo, &signature.digest, &signature).await;

    let browser = Browser {
        http: http(),
        base: &registry.base,
    };
    let page = browser.text("/ui/image/image/app@v1").await;
    for shown in [
        "linux/arm64/v8",
        "2026-11-30T08:15:00Z",
        "<code>/bin/server</code>",
        "<code>--port 8080</code>",
        "8080/tcp",
        "org.opencontainers.image.source",
        // User-controlled text is escaped, never markup.
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "ADD rootfs.tar /",
        "ENV PORT=8080</code> <span class=\"muted\">(no layer)",
        "History (2 steps)",
        // Referrers, by their artifact type, each leading to its page.
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        &format!("/ui/image/{repo}@{}", signature.digest),
        // A layer with its CID and gateway link.
        &layer.digest,
        "/ipfs/",
        "Delete manifest",
    ] {
        assert!(page.contains(shown), "{shown}: {page}");
    }
    assert!(!page.contains("<script>"), "{page}");

    // The signature's own page: an artifact, no configuration to summarise.
    let artifact = browser
        .text(&format!("/ui/image/{repo}@{}", signature.digest))
        .await;
    assert!(artifact.contains("Artifact type"), "{artifact}");
    assert!(!artifact.contains("Configuration"), "{artifact}");

    let profile = tempfile::tempdir().unwrap();
    let pair = format!("{stores:?}").to_lowercase();
    screenshot(
        &registry.url("/ui/image/image/app@v1"),
        profile.path(),
        &format!("image-config-{pair}"),
    )
    .await;
}

common::on_each_store_pair!(
    chromium_logs_in_and_out_through_the_forms,
    flavor = "current_thread"
);
/// A person's visit in a real browser: the "Log in" link, the form, the pages with the
/// session, deleting a tag through its confirmation, logging out.
async fn chromium_logs_in_and_out_through_the_forms(stores: StorePair) {
    let registry = common::auth::start_auth_registry(stores).await;
    registry.add_user("alice", "alice-password", false).await;
    registry.grant("alice", "team/*", "pull,push,delete").await;
    registry.make_public("pub/*").await;
    registry.grant("alice", "pub/*", "pull,push").await;
    let alice = Some(("alice", "alice-password"));
    let client = registry
        .client(
            alice,
            &[
                "repository:team/app:pull,push",
                "repository:pub/app:pull,push",
            ],
        )
        .await;
    client.push_image("team/app", Some("1"), 1).await;
    client.push_image("team/app", Some("2"), 1).await;
    client.push_image("pub/app", Some("1"), 1).await;
    let pair = format!("{stores:?}").to_lowercase();
    let url = |path: &str| registry.registry.url(path);

    let mut tab = common::browser::Tab::open().await;
    tab.goto(&url("/ui/repo/team/app")).await;
    let (_, dom) = tab.page().await;
    assert!(dom.contains("Log in to see this"), "{dom}");
    tab.click("main a[href^='/ui/login']").await;
    let (path, dom) = tab.page().await;
    assert_eq!(path, "/ui/login?next=%2Fui%2Frepo%2Fteam%2Fapp", "{dom}");

    // A wrong password: the form again, saying so.
    tab.fill("username", "alice").await;
    tab.fill("password", "wrong").await;
    tab.click("form.login button").await;
    let (_, dom) = tab.page().await;
    assert!(dom.contains("Invalid user name or password."), "{dom}");

    tab.fill("password", "alice-password").await;
    tab.click("form.login button").await;
    let (path, dom) = tab.page().await;
    assert_eq!(
        path, "/ui/repo/team/app",
        "back where the login began: {dom}"
    );
    assert!(dom.contains("Delete tag"), "{dom}");
    let cookie = tab.eval("document.cookie").await;
    assert_eq!(cookie, "", "the session cookie is HttpOnly");
    tab.screenshot(&format!("repository-logged-in-{pair}"))
        .await;

    tab.goto(&url("/ui/")).await;
    let (_, dom) = tab.page().await;
    assert!(dom.contains("team/app") && dom.contains("alice"), "{dom}");
    tab.screenshot(&format!("repositories-logged-in-{pair}"))
        .await;

    // Deleting tag 2 through its confirmation page.
    tab.goto(&url("/ui/repo/team/app")).await;
    tab.click("form.delete:has(input[name=reference][value='2']) button")
        .await;
    let (path, dom) = tab.page().await;
    assert!(path.starts_with("/ui/delete?"), "{path}: {dom}");
    tab.screenshot(&format!("delete-logged-in-{pair}")).await;
    tab.click("form.delete button.danger").await;
    let (path, dom) = tab.page().await;
    assert_eq!(path, "/ui/repo/team/app", "{dom}");
    assert!(!dom.contains(">2</a>"), "tag 2 is gone: {dom}");
    assert!(dom.contains(">1</a>"), "{dom}");

    tab.click("header form button").await;
    let (path, dom) = tab.page().await;
    assert_eq!(path, "/ui/");
    assert!(!dom.contains("team/app") && dom.contains("Log in"), "{dom}");
}
