//! A small OCI Distribution client for the conformance tests: pushing blobs and manifests
//! the way the spec describes, and asserting on spec-shaped responses.

use rand::RngCore;
use reqwest::{Method, Response};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256, Sha512};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The empty JSON blob `{}` and its well-known digest (image-spec "empty descriptor").
pub const EMPTY_JSON: &[u8] = b"{}";
pub const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// A digest nothing was ever pushed under.
pub fn unknown_digest() -> String {
    sha256(&random_bytes(32))
}

/// A descriptor (`mediaType`, `digest`, `size`) for content.
pub fn descriptor(media_type: &str, content: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": sha256(content),
        "size": content.len(),
    })
}

/// The header's value as text; panics with the header's name when it is missing.
pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| {
            panic!(
                "{} {}: missing header {name} (headers: {:?})",
                response.status(),
                response.url(),
                response.headers()
            )
        })
        .to_str()
        .expect("header is text")
        .to_owned()
}

pub fn opt_header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("header is text").to_owned())
}

/// The header's value, or "" when the response has none.
pub fn header_or_empty(response: &Response, name: &str) -> String {
    opt_header(response, name).unwrap_or_default()
}

/// Asserts the status, a JSON error body `{"errors":[{"code","message",..}]}` and that
/// its first error has `code`. Returns the body.
/// A 503 `UNAVAILABLE` that tells the client when to retry.
pub async fn assert_unavailable(response: Response) {
    assert!(
        response.headers().contains_key("retry-after"),
        "503 without Retry-After"
    );
    assert_error(response, 503, "UNAVAILABLE").await;
}

pub async fn assert_error(response: Response, status: u16, code: &str) -> Value {
    let url = response.url().clone();
    let actual = response.status();
    let content_type = opt_header(&response, "content-type");
    let text = response.text().await.expect("error body");
    assert_eq!(
        actual.as_u16(),
        status,
        "{url}: expected status {status} ({code}), got {actual}: {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{url}: error body is not JSON ({e}): {text:?}"));
    assert!(
        content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "{url}: error body Content-Type is {content_type:?}"
    );
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{url}: no errors array: {body}"));
    assert!(!errors.is_empty(), "{url}: empty errors array: {body}");
    for error in errors {
        assert!(
            error["code"].is_string(),
            "{url}: error without code: {body}"
        );
        assert!(
            error["message"].is_string(),
            "{url}: error without message: {body}"
        );
    }
    assert_eq!(errors[0]["code"], code, "{url}: wrong error code: {body}");
    body
}

/// Asserts a status; on a mismatch the panic shows the body.
pub async fn expect_status(response: Response, status: u16) -> Response {
    if response.status().as_u16() == status {
        return response;
    }
    let url = response.url().clone();
    let actual = response.status();
    let text = response.text().await.unwrap_or_default();
    panic!("{url}: expected status {status}, got {actual}: {text}");
}

/// A pushed blob.
#[derive(Debug, Clone)]
pub struct Blob {
    pub data: Vec<u8>,
    pub digest: String,
}

/// A pushed manifest: its exact bytes, media type and digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub content: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

impl Manifest {
    pub fn new(media_type: &str, json: &Value) -> Manifest {
        // Pretty-printed on purpose: a registry that re-serialises instead of keeping the
        // exact bytes changes the digest.
        let content = serde_json::to_vec_pretty(json).unwrap();
        Manifest {
            digest: sha256(&content),
            media_type: media_type.to_owned(),
            content,
        }
    }

    pub fn descriptor(&self) -> Value {
        descriptor(&self.media_type, &self.content)
    }
}

/// An image pushed by [`Oci::push_image`].
#[derive(Debug, Clone)]
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Manifest,
}

/// The HTTP client side: a base URL and helpers that follow the spec's flows.
#[derive(Clone)]
pub struct Oci {
    pub http: reqwest::Client,
    pub base: url::Url,
}

impl Oci {
    pub fn new(base: &str) -> Oci {
        Oci::with_headers(base, reqwest::header::HeaderMap::new())
    }

    /// A client that sends `headers` with every request.
    pub fn with_headers(base: &str, headers: reqwest::header::HeaderMap) -> Oci {
        Oci {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // Below the server's 5 s keep-alive: a test that pauses (a browser run, a
                // GC) must not reuse a connection the server is closing.
                .pool_idle_timeout(std::time::Duration::from_secs(2))
                .default_headers(headers)
                .build()
                .unwrap(),
            base: base.parse().expect("base URL"),
        }
    }

    /// Resolves a path or a `Location` as a client does (relative or absolute).
    pub fn url(&self, location: &str) -> url::Url {
        self.base.join(location).expect("resolvable location")
    }

    /// `location` (as given by the registry) with `key=value` added to its query.
    pub fn with_query(&self, location: &str, pairs: &[(&str, &str)]) -> url::Url {
        let mut url = self.url(location);
        {
            let mut query = url.query_pairs_mut();
            for (k, v) in pairs {
                query.append_pair(k, v);
            }
        }
        url
    }

    pub fn request(&self, method: Method, location: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(location))
    }

    pub async fn get(&self, location: &str) -> Response {
        self.request(Method::GET, location).send().await.unwrap()
    }

    pub async fn head(&self, location: &str) -> Response {
        self.request(Method::HEAD, location).send().await.unwrap()
    }

    pub async fn delete(&self, location: &str) -> Response {
        self.request(Method::DELETE, location).send().await.unwrap()
    }

    /// The image layout of `reference` (`GET /v2/_ext/<repo>/manifests/<reference>/layout`)
    /// once published: a tagged push queues its image and a background publisher
    /// publishes it soon after the push answers. Panics when it is not there within a
    /// minute, or on any answer but 200 or 404.
    pub async fn published_layout(&self, repo: &str, reference: &str) -> Value {
        let location = format!("/v2/_ext/{repo}/manifests/{reference}/layout");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let answer = self.get(&location).await;
            let status = answer.status().as_u16();
            if status == 200 {
                return answer.json().await.expect("a layout as JSON");
            }
            let body = answer.text().await.unwrap_or_default();
            assert!(
                status == 404 && std::time::Instant::now() < deadline,
                "{location}: {status} {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// `POST /v2/<repo>/blobs/uploads/` → 202; returns the session's Location as given.
    pub async fn start_upload(&self, repo: &str) -> String {
        let response = self
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        let response = expect_status(response, 202).await;
        header(&response, "location")
    }

    /// PUT to an upload session with `?digest=` and `body` as the (last) chunk.
    pub async fn put_upload(&self, location: &str, digest: &str, body: Vec<u8>) -> Response {
        self.http
            .put(self.with_query(location, &[("digest", digest)]))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", body.len())
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// PATCH a chunk with its Content-Range.
    pub async fn patch_chunk(&self, location: &str, offset: usize, chunk: &[u8]) -> Response {
        self.request(Method::PATCH, location)
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Range",
                format!("{}-{}", offset, offset + chunk.len() - 1),
            )
            .header("Content-Length", chunk.len())
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// POST then PUT (monolithic), under `digest`; returns the final response.
    pub async fn upload_as(&self, repo: &str, data: &[u8], digest: &str) -> Response {
        let location = self.start_upload(repo).await;
        self.put_upload(&location, digest, data.to_vec()).await
    }

    /// Pushes a blob (POST + PUT), asserting 201; returns its sha256 digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Blob {
        let digest = sha256(data);
        let response = self.upload_as(repo, data, &digest).await;
        let response = expect_status(response, 201).await;
        assert_eq!(header(&response, "docker-content-digest"), digest);
        Blob {
            data: data.to_vec(),
            digest,
        }
    }

    pub async fn push_random_blob(&self, repo: &str, len: usize) -> Blob {
        self.push_blob(repo, &random_bytes(len)).await
    }

    /// `POST ?digest=` with the whole blob.
    pub async fn post_blob(&self, repo: &str, data: &[u8], digest: &str) -> Response {
        self.http
            .post(self.with_query(&format!("/v2/{repo}/blobs/uploads/"), &[("digest", digest)]))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", data.len())
            .body(data.to_vec())
            .send()
            .await
            .unwrap()
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        content: &[u8],
    ) -> Response {
        self.request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Content-Type", media_type)
            .body(content.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a manifest under `reference` (a tag or its digest), asserting 201 with the
    /// right `Docker-Content-Digest` and a usable `Location`.
    pub async fn push_manifest(&self, repo: &str, reference: &str, manifest: &Manifest) {
        let response = self
            .put_manifest(repo, reference, &manifest.media_type, &manifest.content)
            .await;
        let response = expect_status(response, 201).await;
        assert_eq!(header(&response, "docker-content-digest"), manifest.digest);
        let location = header(&response, "location");
        let pulled = expect_status(self.get(&location).await, 200).await;
        assert_eq!(pulled.bytes().await.unwrap(), manifest.content);
    }

    /// Pushes a config blob, `layers` random layers and an OCI image manifest tagged `tag`
    /// (or by digest when `tag` is None).
    pub async fn push_image(&self, repo: &str, tag: Option<&str>, layers: usize) -> Image {
        let config = self
            .push_blob(
                repo,
                serde_json::to_vec(&json!({
                    "architecture": "amd64",
                    "os": "linux",
                    "nonce": hex::encode(random_bytes(8)),
                }))
                .unwrap()
                .as_slice(),
            )
            .await;
        let mut pushed = Vec::new();
        for i in 0..layers {
            pushed.push(self.push_random_blob(repo, 1000 + i * 13).await);
        }
        let manifest = image_manifest(&config, &pushed, None);
        let reference = tag.map_or_else(|| manifest.digest.clone(), str::to_owned);
        self.push_manifest(repo, &reference, &manifest).await;
        Image {
            config,
            layers: pushed,
            manifest,
        }
    }

    /// Two single-platform images (the first tagged `amd64`, the second untagged) and an
    /// index over them tagged `multi`.
    pub async fn push_platform_index(&self, repo: &str) -> (Image, Image, Manifest) {
        let amd64 = self.push_image(repo, Some("amd64"), 2).await;
        let arm64 = self.push_image(repo, None, 1).await;
        let platform = |os: &str, arch: &str, m: &Manifest| {
            let mut d = m.descriptor();
            d["platform"] = json!({ "os": os, "architecture": arch });
            d
        };
        let index = Manifest::new(
            OCI_INDEX,
            &json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    platform("linux", "amd64", &amd64.manifest),
                    platform("linux", "arm64", &arm64.manifest),
                ],
            }),
        );
        self.push_manifest(repo, "multi", &index).await;
        (amd64, arm64, index)
    }

    /// `GET /v2/<repo>/tags/list` (with a query), asserting 200; the tags and the Link.
    pub async fn tags(&self, location: &str) -> (Vec<String>, Option<String>) {
        let response = expect_status(self.get(location).await, 200).await;
        let link = opt_header(&response, "link");
        let body: Value = response.json().await.unwrap();
        let tags = body["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|t| t.as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        (tags, link)
    }
}

/// An OCI image manifest over a config and layers, optionally with a subject.
pub fn image_manifest(config: &Blob, layers: &[Blob], subject: Option<&Manifest>) -> Manifest {
    let mut json = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config.data),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER, &l.data)).collect::<Vec<_>>(),
    });
    if let Some(subject) = subject {
        json["subject"] = subject.descriptor();
    }
    Manifest::new(OCI_MANIFEST, &json)
}

/// An artifact manifest (image manifest with `artifactType`, the empty config and no
/// layers) pointing at `subject`, with an annotation. The empty blob must be in the repo.
pub fn artifact_manifest(
    artifact_type: &str,
    subject: Option<&Manifest>,
    annotations: Value,
) -> Manifest {
    let mut json = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": OCI_EMPTY,
            "digest": EMPTY_JSON_DIGEST,
            "size": 2,
            "data": "e30=",
        },
        "layers": [],
        "annotations": annotations,
    });
    if let Some(subject) = subject {
        json["subject"] = subject.descriptor();
    }
    Manifest::new(OCI_MANIFEST, &json)
}

/// Parses a `Link: <url>; rel="next"` header into its URL (as given).
pub fn next_link(link: &str) -> String {
    let (target, params) = link
        .split_once(';')
        .unwrap_or_else(|| panic!("Link header without parameters: {link:?}"));
    assert!(
        params.replace(' ', "").contains("rel=\"next\""),
        "Link header is not rel=\"next\": {link:?}"
    );
    target
        .trim()
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or_else(|| panic!("Link target not in <>: {link:?}"))
        .to_owned()
}
