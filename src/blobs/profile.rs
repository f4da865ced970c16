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
