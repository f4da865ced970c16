//! The IPFS import profile: the parameters that decide a blob's CID. Always explicit and
//! recorded with each blob, so a later change of defaults cannot make stored CIDs lie.

use serde::{Deserialize, Serialize};

/// Kubo refuses chunks above 1 MiB.
pub const MAX_CHUNK_SIZE: u32 = 1024 * 1024;
pub const MIN_CHUNK_SIZE: u32 = 1024;
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportProfile {
    /// Fixed chunk size in bytes for the UnixFS balanced layout.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: u32,
}

fn default_chunk_size() -> u32 {
    DEFAULT_CHUNK_SIZE
}

impl Default for ImportProfile {
    fn default() -> Self {
        ImportProfile {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("import_profile.chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes, got {0}")]
pub struct ProfileError(pub u32);

impl ImportProfile {
    pub fn validate(&self) -> Result<(), ProfileError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(ProfileError(self.chunk_size));
        }
        Ok(())
    }

    /// The identifier stored with each blob: every parameter that affects the CID. Blobs
    /// recorded before `max-links` was part of it were built with 174 links per node too
    /// (every importer's default until Kubo 0.35 made it configurable).
    pub fn id(&self) -> String {
        format!(
            "unixfs-v1;cid-version=1;raw-leaves=true;chunker=size-{};hash=sha2-256;layout=balanced;max-links={}",
            self.chunk_size,
            crate::blobs::unixfs::MAX_LINKS
        )
    }

    /// The profile a recorded [`ImportProfile::id`] names, when it is one this registry can
    /// rebuild a CID under (`None` for anything else). An id without `max-links` was
    /// built with 174 links per node, as [`ImportProfile::id`] explains.
    pub fn from_id(id: &str) -> Option<ImportProfile> {
        let mut chunk_size = None;
        let mut max_links = None;
        let mut parts = id.split(';');
        if parts.next() != Some("unixfs-v1") {
            return None;
        }
        for part in parts {
            let (key, value) = part.split_once('=')?;
            match (key, value) {
                ("cid-version", "1")
                | ("raw-leaves", "true")
                | ("hash", "sha2-256")
                | ("layout", "balanced") => {}
                ("chunker", size) => {
                    chunk_size = Some(size.strip_prefix("size-")?.parse::<u32>().ok()?);
                }
                ("max-links", links) => max_links = Some(links.parse::<usize>().ok()?),
                _ => return None,
            }
        }
        if max_links.unwrap_or(174) != crate::blobs::unixfs::MAX_LINKS {
            return None;
        }
        let profile = ImportProfile {
            chunk_size: chunk_size?,
        };
        profile.validate().ok()?;
        Some(profile)
    }

    /// The Kubo `add` parameters that realise this profile.
    pub fn add_params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("cid-version", "1".into()),
            ("raw-leaves", "true".into()),
            ("chunker", format!("size-{}", self.chunk_size)),
            ("hash", "sha2-256".into()),
            ("trickle", "false".into()),
            // Kubo 0.35+ reads Import.UnixFSFileMaxLinks (1024 in its unixfs-v1-2025
            // profile) when this is absent, which changes the root CID of every blob over
            // 174 chunks. Nodes that predate the option ignore it (unknown options are).
            (
                "max-file-links",
                crate::blobs::unixfs::MAX_LINKS.to_string(),
            ),
            // Identity CIDs for small blocks: never, whatever a node's defaults become.
            ("inline", "false".into()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_back() {
        let profile = ImportProfile {
            chunk_size: 1 << 20,
        };
        assert_eq!(ImportProfile::from_id(&profile.id()), Some(profile));
        let old = "unixfs-v1;cid-version=1;raw-leaves=true;chunker=size-262144;hash=sha2-256;layout=balanced";
        assert_eq!(ImportProfile::from_id(old), Some(ImportProfile::default()));
        for other in [
            "",
            "unixfs-v1;cid-version=0;raw-leaves=true;chunker=size-262144;hash=sha2-256;layout=balanced",
            "unixfs-v1;cid-version=1;raw-leaves=true;chunker=rabin;hash=sha2-256;layout=balanced",
            "unixfs-v1;cid-version=1;raw-leaves=true;chunker=size-262144;hash=sha2-256;layout=trickle",
            "unixfs-v1;cid-version=1;raw-leaves=true;chunker=size-262144;hash=sha2-256;layout=balanced;max-links=1024",
        ] {
            assert_eq!(ImportProfile::from_id(other), None, "{other}");
        }
    }
}
