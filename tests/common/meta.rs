//! Records, manifests and queries for the metadata suites (contract_meta, contract_users,
//! contract_gc, postgres_internals): blob records with raw CIDs, image manifests and
//! indexes over them.

use bytes::Bytes;
use cid::Cid;
use ipfs_registry::meta::{BlobRecord, MetadataStore, NewManifest, Page};
use ipfs_registry::oci::{Digest, Reference, ReferenceKind, RepoName, Tag};
use multihash_codetable::{Code, MultihashDigest};
use serde_json::{json, Value};

pub const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub fn repo(name: &str) -> RepoName {
    name.parse().expect("repo name")
}

pub fn tag(name: &str) -> Tag {
    name.parse().expect("tag")
}

pub fn cid_of(data: &[u8]) -> Cid {
    Cid::new_v1(0x55, Code::Sha2_256.digest(data))
}

pub fn blob(data: &[u8]) -> BlobRecord {
    BlobRecord {
        digest: Digest::sha256_of(data),
        cid: cid_of(data),
        size: data.len() as u64,
        import_profile: "v1-raw-sha256-chunk262144".to_owned(),
    }
}

pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Value {
    json!({ "mediaType": media_type, "digest": digest.to_string(), "size": size })
}

/// An image manifest over the given config and layers, pretty-printed so the exact bytes
/// differ from any re-serialization.
pub fn image(config: &BlobRecord, layers: &[&BlobRecord]) -> NewManifest {
    image_with(config, layers, None, None, None)
}

pub fn image_with(
    config: &BlobRecord,
    layers: &[&BlobRecord],
    subject: Option<&Digest>,
    artifact_type: Option<&str>,
    annotations: Option<Value>,
) -> NewManifest {
    let mut doc = json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config.digest, config.size),
        "layers": layers
            .iter()
            .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", &l.digest, l.size))
            .collect::<Vec<_>>(),
    });
    if let Some(subject) = subject {
        doc["subject"] = descriptor(IMAGE_MANIFEST, subject, 123);
    }
    if let Some(at) = artifact_type {
        doc["artifactType"] = json!(at);
    }
    if let Some(a) = annotations {
        doc["annotations"] = a;
    }
    let content = Bytes::from(serde_json::to_vec_pretty(&doc).expect("json"));
    let mut references = vec![(config.digest.clone(), ReferenceKind::Blob)];
    references.extend(
        layers
            .iter()
            .map(|l| (l.digest.clone(), ReferenceKind::Blob)),
    );
    NewManifest {
        digest: Digest::sha256_of(&content),
        media_type: IMAGE_MANIFEST.to_owned(),
        content,
        json: doc,
        artifact_type: artifact_type.map(str::to_owned),
        subject: subject.cloned(),
        references,
    }
}

pub fn index(children: &[&NewManifest]) -> NewManifest {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_INDEX,
        "manifests": children
            .iter()
            .map(|m| descriptor(IMAGE_MANIFEST, &m.digest, m.content.len() as u64))
            .collect::<Vec<_>>(),
    });
    let content = Bytes::from(serde_json::to_vec_pretty(&doc).expect("json"));
    NewManifest {
        digest: Digest::sha256_of(&content),
        media_type: IMAGE_INDEX.to_owned(),
        content,
        json: doc,
        artifact_type: None,
        subject: None,
        references: children
            .iter()
            .map(|m| (m.digest.clone(), ReferenceKind::Manifest))
            .collect(),
    }
}

/// Commits a config and one layer into `r` and returns an image manifest over them.
pub async fn pushed_image(store: &dyn MetadataStore, r: &RepoName, seed: &str) -> NewManifest {
    let config = blob(format!("config {seed}").as_bytes());
    let layer = blob(format!("layer {seed}").as_bytes());
    store.commit_blob(r, config.clone()).await.expect("config");
    store.commit_blob(r, layer.clone()).await.expect("layer");
    image(&config, &[&layer])
}

pub async fn by_tag(store: &dyn MetadataStore, r: &RepoName, t: &str) -> Option<Digest> {
    store
        .manifest(r, &Reference::Tag(tag(t)))
        .await
        .expect("manifest by tag")
        .map(|m| m.digest)
}

pub async fn by_digest(store: &dyn MetadataStore, r: &RepoName, d: &Digest) -> Option<Bytes> {
    store
        .manifest(r, &Reference::Digest(d.clone()))
        .await
        .expect("manifest by digest")
        .map(|m| m.content)
}

pub async fn all_tags(store: &dyn MetadataStore, r: &RepoName) -> Option<Vec<String>> {
    store.tags(r, &Page::default()).await.expect("tags")
}

pub fn page(n: Option<u32>, last: Option<&str>) -> Page {
    Page {
        n,
        last: last.map(str::to_owned),
    }
}

/// Whether the catalog lists `repo`.
pub async fn listed(store: &dyn MetadataStore, repo: &RepoName) -> bool {
    let all = store.catalog(&Page::default()).await.expect("catalog");
    all.iter().any(|name| name == repo.as_str())
}
