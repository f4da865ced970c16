//! Parsing pushed manifests: just enough structure to validate them and to know
//! what they reference. The exact bytes stay the source of truth.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::media::{self, ManifestKind};
use super::Digest;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported manifest schemaVersion {0:?} (only 2 is supported)")]
    SchemaVersion(Option<i64>),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("manifest mediaType {body:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("image manifest has no config descriptor")]
    MissingConfig,
    #[error("index has no manifests list")]
    MissingManifests,
    #[error("descriptor {0} has a negative size")]
    NegativeSize(Digest),
}

/// What a manifest references, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceKind {
    /// A blob (config or layer) that must be in the repository.
    Blob,
    /// A child manifest (of an index) that must be in the repository.
    Manifest,
}

#[derive(Debug, Clone)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    /// The referrers API's artifactType: the manifest's own, else its config's media type.
    pub artifact_type: Option<String>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<BTreeMap<String, String>>,
    /// Everything that must already exist in the repository for the push to be accepted.
    pub references: Vec<(Digest, ReferenceKind)>,
    /// Non-distributable layers: recorded, not required to exist.
    pub external_layers: Vec<Digest>,
    /// An image's config descriptor.
    pub config: Option<Descriptor>,
    /// An image's layer descriptors, in order.
    pub layers: Vec<Descriptor>,
    /// An index's child manifest descriptors, in order.
    pub manifests: Vec<Descriptor>,
    pub json: serde_json::Value,
}

/// Parses and validates a manifest. `content_type` is the Content-Type header of the push,
/// if any; it decides the media type and must agree with the body's `mediaType`.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    if !json.is_object() {
        return Err(ManifestError::Json("top level is not an object".into()));
    }
    let raw: RawManifest =
        serde_json::from_value(json.clone()).map_err(|e| ManifestError::Json(e.to_string()))?;
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion(raw.schema_version));
    }
    let header = content_type
        .map(media::essence)
        .filter(|h| !h.is_empty() && media::manifest_kind(h).is_some());
    let media_type = match (header, raw.media_type.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(ManifestError::MediaTypeMismatch {
                header: h.to_owned(),
                body: b.to_owned(),
            })
        }
        (Some(h), _) => h.to_owned(),
        (None, Some(b)) => b.to_owned(),
        (None, None) if raw.manifests.is_some() => media::OCI_INDEX.to_owned(),
        (None, None) => media::OCI_MANIFEST.to_owned(),
    };
    if header.is_none() {
        if let Some(ct) = content_type.map(media::essence).filter(|c| !c.is_empty()) {
            // A Content-Type that names something other than a manifest is a client error,
            // except the generic types some clients send.
            if ct != "application/json" && ct != "application/octet-stream" {
                return Err(ManifestError::UnsupportedMediaType(ct.to_owned()));
            }
        }
    }
    let kind = media::manifest_kind(&media_type)
        .ok_or_else(|| ManifestError::UnsupportedMediaType(media_type.clone()))?;

    let mut references = Vec::new();
    let mut external_layers = Vec::new();
    let artifact_type = match kind {
        ManifestKind::Image => {
            let config = raw.config.as_ref().ok_or(ManifestError::MissingConfig)?;
            check_size(config)?;
            references.push((config.digest.clone(), ReferenceKind::Blob));
            for layer in raw.layers.iter().flatten() {
                check_size(layer)?;
                if media::is_non_distributable(&layer.media_type) {
                    external_layers.push(layer.digest.clone());
                } else {
                    references.push((layer.digest.clone(), ReferenceKind::Blob));
                }
            }
            raw.artifact_type
                .clone()
                .or_else(|| Some(config.media_type.clone()))
        }
        ManifestKind::Index => {
            let children = raw
                .manifests
                .as_ref()
                .ok_or(ManifestError::MissingManifests)?;
            for child in children {
                check_size(child)?;
                references.push((child.digest.clone(), ReferenceKind::Manifest));
            }
            raw.artifact_type.clone()
        }
    };
    if let Some(subject) = &raw.subject {
        check_size(subject)?;
    }
    references.sort_by(|a, b| a.0.cmp(&b.0));
    references.dedup_by(|a, b| a.0 == b.0);

    Ok(ParsedManifest {
        media_type,
        kind,
        artifact_type,
        subject: raw.subject,
        annotations: raw.annotations,
        references,
        external_layers,
        config: raw.config,
        layers: raw.layers.unwrap_or_default(),
        manifests: raw.manifests.unwrap_or_default(),
        json,
    })
}

fn check_size(d: &Descriptor) -> Result<(), ManifestError> {
    if d.size < 0 {
        return Err(ManifestError::NegativeSize(d.digest.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_manifest_references_config_and_layers() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":3}}],"subject":{{"mediaType":"{}","digest":"{}","size":5}}}}"#,
            media::OCI_MANIFEST,
            d('a'),
            d('b'),
            media::OCI_MANIFEST,
            d('c')
        );
        let m = parse(body.as_bytes(), Some(media::OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.references.len(), 2);
        assert_eq!(m.subject.unwrap().digest.to_string(), d('c'));
        assert_eq!(m.artifact_type.as_deref(), Some(media::OCI_IMAGE_CONFIG));
    }

    #[test]
    fn index_references_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":7}}]}}"#,
            media::OCI_MANIFEST,
            d('a')
        );
        let m = parse(body.as_bytes(), Some(media::OCI_INDEX)).unwrap();
        assert_eq!(
            m.references,
            vec![(d('a').parse().unwrap(), ReferenceKind::Manifest)]
        );
    }

    #[test]
    fn rejects_invalid() {
        assert!(matches!(
            parse(b"not json", None),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(parse(b"[]", None), Err(ManifestError::Json(_))));
        assert!(matches!(
            parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::SchemaVersion(Some(1)))
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":2}"#, Some(media::OCI_MANIFEST)),
            Err(ManifestError::MissingConfig)
        ));
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#,
            media::OCI_INDEX
        );
        assert!(matches!(
            parse(body.as_bytes(), Some(media::OCI_MANIFEST)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let bad_digest =
            r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1}}"#;
        assert!(matches!(
            parse(bad_digest.as_bytes(), None),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn non_distributable_layers_are_not_required() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{}","size":1}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":1,"urls":["https://example.com/x"]}}]}}"#,
            d('a'),
            d('b')
        );
        let m = parse(body.as_bytes(), Some(media::DOCKER_MANIFEST)).unwrap();
        assert_eq!(m.references.len(), 1);
        assert_eq!(m.external_layers.len(), 1);
    }
}
