//! The core's error type: one variant per distinct outcome a client must be told about.
//! `api::error` maps each to its OCI error code and HTTP status.

use crate::blobs::BlobError;
use crate::meta::MetaError;
use crate::oci::Digest;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry")]
    BlobUnknown(Digest),
    /// Linked in the repository, but its stored bytes failed an integrity check (and were
    /// removed) or lost their pin: answered like an unknown blob (404), so clients push it
    /// again.
    #[error("blob unknown to registry: its stored bytes are quarantined (damaged, or no longer kept by the blob store); push it again")]
    BlobQuarantined(Digest),
    /// No stored content has this CID (gateway requests).
    #[error("content {0} is not stored in this registry")]
    ContentUnknown(cid::Cid),
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    /// A chunk did not start where the upload stands (416, with the current range).
    #[error("chunk out of order: upload holds {received} bytes")]
    ChunkOutOfOrder { received: u64 },
    #[error("provided digest did not match uploaded content: {0}")]
    DigestInvalid(String),
    #[error("manifest references unknown blobs or manifests")]
    ManifestBlobUnknown(Vec<Digest>),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    #[error("repository name not known to registry")]
    NameUnknown,
    /// The manifest is not published as an image layout (not tagged, private, or its
    /// publishing failed): 404 with MANIFEST_UNKNOWN.
    #[error("manifest not published as an image layout in IPFS")]
    LayoutUnknown,
    /// An image layout to import is not one, or its content does not match its CIDs and
    /// digests, or lacks something: 400 with LAYOUT_INVALID.
    #[error("image layout invalid: {0}")]
    LayoutInvalid(String),
    #[error("provided length did not match content length: {0}")]
    SizeInvalid(String),
    /// The body is over a configured limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// A Range request past the end of the blob (416).
    #[error("requested range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// Too many uploads at once (429).
    #[error("too many concurrent uploads; retry later")]
    TooManyRequests,
    /// The push or delete would move or remove a tag an `[[immutable]]` rule covers; the
    /// message names the tag and the rule.
    #[error("{0}")]
    TagImmutable(String),
    #[error("the operation is unsupported: {0}")]
    Unsupported(String),
    /// A backing service (database, IPFS node) is unreachable or timed out (503).
    #[error("{0}")]
    Unavailable(String),
    /// A mirror's upstream is unreachable, rate-limits or fails, and nothing stored can
    /// stand in (503, with the upstream's `Retry-After` when it gave one).
    #[error("{message}")]
    UpstreamUnavailable {
        message: String,
        retry_after: Option<u64>,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<MetaError> for RegistryError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::Unavailable(m) => RegistryError::Unavailable(format!("metadata store: {m}")),
            MetaError::MissingReferences(missing) => RegistryError::ManifestBlobUnknown(missing),
            MetaError::TagImmutable(tag) => {
                RegistryError::TagImmutable(format!("tag {tag} is immutable"))
            }
            MetaError::Corrupt(m) | MetaError::Backend(m) => {
                RegistryError::Internal(format!("metadata store: {m}"))
            }
        }
    }
}

impl From<BlobError> for RegistryError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Unavailable(m) => RegistryError::Unavailable(format!("blob store: {m}")),
            BlobError::NotFound(cid) => {
                RegistryError::Unavailable(format!("blob store: content {cid} not retrievable"))
            }
            BlobError::Input(m) => RegistryError::BlobUploadInvalid(m),
            BlobError::Busy(m) => RegistryError::Unavailable(format!("blob store: {m}")),
            BlobError::Backend(m) => RegistryError::Internal(format!("blob store: {m}")),
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
