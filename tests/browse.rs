//! Browsing layers by CID: the extension API (`/v2/_ext/<name>/manifests/<ref>/layers`) and
//! the web UI, the latter driven in headless Chromium the way a person clicks through it:
//! repositories → tags → image → a layer's gateway link, which must give the layer's bytes.

mod common;

use common::browser::{links, rendered, screenshot};
use common::oci::{assert_error, header, header_or_empty, Blob, Image, Oci};
use common::StorePair;
use serde_json::Value;

/// The CID the registry announces for a blob (`X-Ipfs-Path` of its pull).
async fn announced_cid(oci: &Oci, repo: &str, digest: &str) -> String {
    let response = oci.head(&format!("/v2/{repo}/blobs/{digest}")).await;
    header(&response, "x-ipfs-path")
        .strip_prefix("/ipfs/")
        .expect("X-Ipfs-Path is /ipfs/<cid>")
        .to_owned()
}

async fn assert_layers(oci: &Oci, repo: &str, listed: &Value, image: &Image) {
    let layers = listed["layers"].as_array().expect("layers");
    let blobs: Vec<&Blob> = std::iter::once(&image.config)
        .chain(image.layers.iter())
        .collect();
    assert_eq!(layers.len(), blobs.len(), "{listed}");
    assert_eq!(layers[0]["role"], "config");
    for (layer, blob) in layers.iter().zip(&blobs) {
        assert_eq!(layer["digest"], blob.digest.as_str());
        assert_eq!(layer["size"], blob.data.len());
        let cid = layer["cid"].as_str().expect("a CID");
        assert_eq!(cid, announced_cid(oci, repo, &blob.digest).await);
        let url = layer["gatewayUrl"].as_str().expect("a gateway URL");
        assert_eq!(url, format!("/ipfs/{cid}"));
        let fetched = oci.get(url).await;
        assert_eq!(fetched.status(), 200);
        assert_eq!(fetched.bytes().await.unwrap(), blob.data, "{url}");
    }
}

common::on_each_store_pair!(
    extension_api_lists_every_layer_with_its_cid,
    flavor = "current_thread"
);
async fn extension_api_lists_every_layer_with_its_cid(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let repo = "browse/api";
    let (amd64, arm64, index) = oci.push_platform_index(repo).await;

    let response = oci
        .get(&format!("/v2/_ext/{repo}/manifests/amd64/layers"))
        .await;
    assert_eq!(response.status(), 200);
    let listed: Value = response.json().await.unwrap();
    assert_eq!(listed["name"], repo);
    assert_eq!(listed["digest"], amd64.manifest.digest.as_str());
    assert_layers(&oci, repo, &listed, &amd64).await;

    // An index: every child with its platform and its layers.
    let listed: Value = oci
        .get(&format!(
            "/v2/_ext/{repo}/manifests/{}/layers",
            index.digest
        ))
        .await
        .json()
        .await
        .unwrap();
    let children = listed["manifests"].as_array().expect("children");
    assert_eq!(children.len(), 2);
    assert_eq!(children[1]["platform"]["architecture"], "arm64");
    assert_layers(&oci, repo, &children[0], &amd64).await;
    assert_layers(&oci, repo, &children[1], &arm64).await;

    assert_error(
        oci.get(&format!("/v2/_ext/{repo}/manifests/nope/layers"))
            .await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        oci.get("/v2/_ext/Not_Valid/manifests/x/layers").await,
        400,
        "NAME_INVALID",
    )
    .await;
}

common::on_each_store_pair!(
    gateway_links_follow_the_configured_gateway,
    flavor = "current_thread"
);
/// Layer links point at a configured public gateway instead of the registry's own.
async fn gateway_links_follow_the_configured_gateway(stores: StorePair) {
    let registry = stores
        .start_registry_with(|config| {
            config.gateway.url = Some("https://ipfs.example.org/".parse().unwrap());
        })
        .await;
    let oci = Oci::new(&registry.base);
    let image = oci.push_image("browse/gw", Some("1"), 1).await;
    let listed: Value = oci
        .get("/v2/_ext/browse/gw/manifests/1/layers")
        .await
        .json()
        .await
        .unwrap();
    let cid = announced_cid(&oci, "browse/gw", &image.layers[0].digest).await;
    assert_eq!(
        listed["layers"][1]["gatewayUrl"],
        format!("https://ipfs.example.org/ipfs/{cid}")
    );
}

common::on_each_store_pair!(
    web_ui_leads_from_the_repository_list_to_the_layer_bytes,
    flavor = "current_thread"
);
async fn web_ui_leads_from_the_repository_list_to_the_layer_bytes(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let repo = "browse/ui";
    let (amd64, _, _) = oci.push_platform_index(repo).await;
    let profile = tempfile::tempdir().unwrap();
    let page = |path: &str| {
        let (url, profile) = (registry.url(path), profile.path().to_owned());
        async move { rendered(&url, &profile).await }
    };

    let home = page("/ui/").await;
    let to_repo = links(&home, repo);
    assert_eq!(to_repo, vec![format!("/ui/repo/{repo}")], "{home}");

    let tags = page(&to_repo[0]).await;
    let to_image = links(&tags, "amd64");
    assert_eq!(to_image, vec![format!("/ui/image/{repo}@amd64")], "{tags}");
    assert!(!links(&tags, "multi").is_empty(), "{tags}");

    let image = page(&to_image[0]).await;
    assert!(image.contains(&amd64.manifest.digest), "{image}");
    let gateway =
        regex::Regex::new(r#"<a class="gateway" href="([^"]+)" data-digest="([^"]+)""#).unwrap();
    let downloads: Vec<(String, String)> = gateway
        .captures_iter(&image)
        .map(|c| (c[1].to_owned(), c[2].to_owned()))
        .collect();
    assert_eq!(downloads.len(), 3, "config and two layers: {image}");
    for ((href, digest), blob) in downloads
        .iter()
        .zip(std::iter::once(&amd64.config).chain(amd64.layers.iter()))
    {
        assert_eq!(digest, &blob.digest);
        let cid = announced_cid(&oci, repo, digest).await;
        assert!(image.contains(&cid), "the CID is shown: {cid}");
        let fetched = oci.get(href).await;
        assert_eq!(fetched.status(), 200, "{href}");
        assert_eq!(fetched.bytes().await.unwrap(), blob.data, "{href}");
    }

    // The index page lists its platforms, each leading to that image.
    let index = page(&format!("/ui/image/{repo}@multi")).await;
    assert!(
        index.contains("linux/amd64") && index.contains("linux/arm64"),
        "{index}"
    );
    assert_eq!(links(&index, "/ui/image/").len(), 2, "{index}");

    // Phone-sized screenshots of each page, for a person to look at.
    let pair = format!("{stores:?}").to_lowercase();
    for (path, name) in [
        ("/ui/".to_owned(), "repositories"),
        (to_repo[0].clone(), "repository"),
        (to_image[0].clone(), "image"),
        (format!("/ui/image/{repo}@multi"), "index"),
    ] {
        screenshot(
            &registry.url(&path),
            profile.path(),
            &format!("{name}-{pair}"),
        )
        .await;
    }

    // Unknown things are errors a person can read, not panics.
    let missing = oci.get(&format!("/ui/image/{repo}@nope")).await;
    assert_eq!(missing.status(), 404);
    let bad = oci.get("/ui/repo/NOT..valid").await;
    assert_eq!(bad.status(), 400);
}

common::on_each_store_pair!(
    with_access_control_pages_and_links_follow_pull_rights,
    flavor = "current_thread"
);
/// With access control on, the UI and the gateway show a person what they may pull:
/// anonymously the public repositories, with Basic credentials (as a script sends them)
/// their own (tests/ui.rs logs in through the form); the extension
/// API needs a token like the rest of /v2.
async fn with_access_control_pages_and_links_follow_pull_rights(stores: StorePair) {
    let registry = common::auth::start_auth_registry(stores).await;
    let (private, public) = registry
        .alice_with_private_and_public_images("pull,push")
        .await;
    let alice = Some(("alice", "alice-password"));
    let reader = registry
        .client(
            alice,
            &["repository:team/app:pull", "repository:pub/app:pull"],
        )
        .await;
    let private_cid = announced_cid(&reader, "team/app", &private.layers[0].digest).await;
    let public_cid = announced_cid(&reader, "pub/app", &public.layers[0].digest).await;

    let http = reqwest::Client::new();
    let get = |path: &str, who: Option<(&str, &str)>| {
        let mut request = http.get(registry.registry.url(path));
        if let Some((user, password)) = who {
            request = request.header("Authorization", common::auth::basic(user, password));
        }
        request.send()
    };

    // Anonymous: the public repository only, and a login prompt for the private one.
    let home = get("/ui/", None).await.unwrap().text().await.unwrap();
    assert!(
        home.contains("pub/app") && !home.contains("team/app"),
        "{home}"
    );
    // The page offers the login form rather than a Basic challenge (a browser's dialog
    // would hide the page).
    for private_page in ["/ui/repo/team/app", "/ui/image/team/app@1"] {
        let prompt = get(private_page, None).await.unwrap();
        assert_eq!(prompt.status(), 401, "{private_page}");
        assert_eq!(header_or_empty(&prompt, "www-authenticate"), "");
        assert!(header_or_empty(&prompt, "content-type").starts_with("text/html"));
        let text = prompt.text().await.unwrap();
        assert!(
            text.contains("href=\"/ui/login?next=%2Fui%2F"),
            "{private_page}: {text}"
        );
        assert!(
            !text.contains(&private_cid),
            "{private_page} shows the private layer's CID"
        );
    }
    assert_eq!(
        get("/ui/image/pub/app@1", None).await.unwrap().status(),
        200
    );
    assert_eq!(
        get(&format!("/ipfs/{private_cid}"), None)
            .await
            .unwrap()
            .status(),
        401
    );
    let open = get(&format!("/ipfs/{public_cid}"), None).await.unwrap();
    assert_eq!(open.status(), 200);
    // What anyone may fetch, any cache may keep.
    assert_eq!(
        header_or_empty(&open, "cache-control"),
        "public, max-age=29030400, immutable"
    );
    assert_eq!(open.bytes().await.unwrap(), public.layers[0].data);

    // Alice sees both, and downloads the private layer by its CID.
    let home = get("/ui/", alice).await.unwrap().text().await.unwrap();
    assert!(
        home.contains("pub/app") && home.contains("team/app"),
        "{home}"
    );
    assert_eq!(
        get("/ui/image/team/app@1", alice).await.unwrap().status(),
        200
    );
    let layer = get(&format!("/ipfs/{private_cid}?format=raw"), alice)
        .await
        .unwrap();
    assert_eq!(layer.status(), 200);
    // A shared cache must not hand it to the next caller: private, and varying on who asks.
    for private_answer in [
        layer,
        get(&format!("/ipfs/{private_cid}"), alice).await.unwrap(),
    ] {
        assert!(
            header_or_empty(&private_answer, "cache-control").starts_with("private"),
            "{:?}",
            private_answer.headers()
        );
        assert!(header_or_empty(&private_answer, "vary").contains("Authorization"));
        assert_eq!(
            private_answer.bytes().await.unwrap(),
            private.layers[0].data
        );
    }

    // Bob is known but may not pull team/app; a wrong password is asked again.
    let bob = Some(("bob", "bob-password"));
    assert_eq!(get("/ui/repo/team/app", bob).await.unwrap().status(), 403);
    assert_eq!(
        get("/ui/image/team/app@1", bob).await.unwrap().status(),
        403
    );
    // The gateway tells a private layer from an unknown CID to no one who may not pull it:
    // both ask an anonymous caller to log in, both are "not found" for Bob.
    let unknown_cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    for (who, status) in [(None, 401), (bob, 404)] {
        let hidden = get(&format!("/ipfs/{private_cid}"), who).await.unwrap();
        let unknown = get(&format!("/ipfs/{unknown_cid}"), who).await.unwrap();
        assert_eq!(
            (hidden.status().as_u16(), unknown.status().as_u16()),
            (status, status)
        );
        let shape = |text: String, cid: &str| text.replace(cid, "<cid>");
        assert_eq!(
            shape(hidden.text().await.unwrap(), &private_cid),
            shape(unknown.text().await.unwrap(), unknown_cid)
        );
    }
    let home = get("/ui/", bob).await.unwrap().text().await.unwrap();
    assert!(!home.contains("team/app"), "{home}");
    let wrong = get("/ui/", Some(("alice", "nope"))).await.unwrap();
    assert_eq!(wrong.status(), 401);

    // The extension API is under /v2: a token is needed, as for manifests.
    let ext = "/v2/_ext/team/app/manifests/1/layers";
    assert_eq!(get(ext, None).await.unwrap().status(), 401);
    let listed = reader.get(ext).await;
    assert_eq!(listed.status(), 200);
}

common::on_each_store_pair!(ui_listings_page_through_long_lists);
/// Long listings come in pages of 100 with a link to the next; the last page has none.
async fn ui_listings_page_through_long_lists(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let image = oci.push_image("paged/app", None, 1).await;
    for i in 0..101 {
        let response = oci
            .put_manifest(
                "paged/app",
                &format!("t{i:03}"),
                &image.manifest.media_type,
                &image.manifest.content,
            )
            .await;
        assert_eq!(response.status(), 201);
    }
    let page = |path: String| {
        let oci = oci.clone();
        async move { oci.get(&path).await.text().await.unwrap() }
    };
    let first = page("/ui/repo/paged/app".to_owned()).await;
    assert!(
        first.contains(">t000<") && first.contains(">t099<"),
        "{first}"
    );
    assert!(!first.contains(">t100<"), "{first}");
    assert!(
        first.contains("href=\"/ui/repo/paged/app?last=t099\""),
        "{first}"
    );
    let second = page("/ui/repo/paged/app?last=t099".to_owned()).await;
    assert!(
        second.contains(">t100<") && !second.contains(">t099<"),
        "{second}"
    );
    assert!(!second.contains("Next page"), "{second}");
    registry.server.stop().await;
}
