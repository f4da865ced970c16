//! Metadata: repositories, blobs (digest → CID), manifests, tags, referrers, uploads.
//! `postgres` is the production store; `sqlite` the embedded one. [`open`] gives the one
//! the configuration names.

pub mod gc;
pub mod metered;
mod open;
pub mod outbox;
pub mod postgres;
mod sql_common;
pub mod sqlite;
pub mod status;
pub mod users;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use uuid::Uuid;

use crate::oci::{Descriptor, Digest, Reference, ReferenceKind, RepoName, Tag, TagPattern};

use outbox::Notice;

pub use open::{open, MetadataStores, OpenError};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The database could not be reached or did not answer in time.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// A manifest references blobs or manifests that are not in its repository.
    #[error("manifest references content not in the repository: {0:?}")]
    MissingReferences(Vec<Digest>),
    /// The write would move or remove this tag, which [`ProtectedTags`] covers.
    #[error("tag {0} is immutable")]
    TagImmutable(String),
    /// Stored data that cannot be read back into domain types.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    #[error("metadata store error: {0}")]
    Backend(String),
}

/// A stored blob: its digest, where its bytes are, and how they were imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub digest: Digest,
    pub cid: Cid,
    pub size: u64,
    /// `ImportProfile::id()` at the time of import.
    pub import_profile: String,
}

/// A blob whose stored bytes failed a scrub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub digest: Digest,
    /// What the scrub found (size, digest or CID mismatch, or the bytes gone).
    pub reason: String,
    pub since: SystemTime,
}

#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    /// The exact bytes pushed.
    pub content: Bytes,
    pub subject: Option<Digest>,
}

/// An image published as an OCI Image Layout in IPFS: its tag, the manifest the tag
/// pointed at, and the layout's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayout {
    pub tag: String,
    pub manifest: Digest,
    pub cid: Cid,
}

/// A published image as the public index names it: `<repository>:<tag>` → its layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedImage {
    pub repo: RepoName,
    pub tag: Tag,
    pub cid: Cid,
}

/// The public index as last recorded, and the IPNS name it was last published under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationIndex {
    pub cid: Cid,
    pub built_at: SystemTime,
    pub ipns: Option<IpnsRecord>,
}

/// An IPNS publication of the index: the name, the root it named, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpnsRecord {
    pub name: String,
    pub cid: Cid,
    pub published_at: SystemTime,
}

/// A tagged image waiting to be published as a layout: the manifest its push tagged, and
/// how many attempts at publishing it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedLayout {
    pub repo: RepoName,
    pub tag: Tag,
    pub manifest: Digest,
    pub attempts: u32,
}

/// A follow rule's state (`[[federation.follow]]`, keyed by the rule's name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowState {
    /// The index root the last complete pass left the rule in sync with, and when.
    pub last_root: Option<Cid>,
    pub last_success: Option<SystemTime>,
    /// The last failure (a source that could not be read, tags that failed), and when; a
    /// later success clears it.
    pub last_error: Option<String>,
    pub error_at: Option<SystemTime>,
    /// Local tags the rule imported and holds.
    pub tags: u64,
}

/// A local tag a follow rule imported: from which layout, giving which manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedTag {
    pub repo: RepoName,
    pub tag: Tag,
    pub layout: Cid,
    pub manifest: Digest,
}

/// A manifest ready to be stored: verified digest, parsed references.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub digest: Digest,
    pub media_type: String,
    pub content: Bytes,
    pub json: serde_json::Value,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// Must all be present in the repository, or the whole put is refused.
    pub references: Vec<(Digest, ReferenceKind)>,
}

/// Where a repository's content comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoOrigin {
    /// No such repository.
    Absent,
    /// Pushed here (or created by an upload or mount).
    Pushed,
    /// Fetched from a mirror's upstream (`MetadataStore::put_mirrored_manifest`).
    Mirrored,
}

/// A repository as a listing for people shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySummary {
    pub name: String,
    pub tags: u64,
    /// Bytes of the blobs linked to the repository, each counted once.
    pub size: u64,
    /// When a manifest was last pushed or a tag last moved; `None` when neither happened.
    pub last_push: Option<SystemTime>,
}

/// A tag as a listing for people shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSummary {
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    /// Bytes of the distinct blobs the manifest uses, through its child manifests too (an
    /// index's images): what a pull of every platform fetches, less the manifests.
    pub size: u64,
    /// When the tag was last pushed (set or moved).
    pub pushed_at: SystemTime,
}

/// The tags of one repository that a write may create, or point again at the manifest they
/// point at, but neither move nor delete (the configuration's `[[immutable]]` rules).
/// Checked by the store under the lock its write takes, so two writes cannot both pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtectedTags(pub Vec<TagPattern>);

impl ProtectedTags {
    pub fn none() -> ProtectedTags {
        ProtectedTags::default()
    }

    pub fn covers(&self, tag: &str) -> bool {
        self.0.iter().any(|p| p.matches(tag))
    }

    /// The first of `tags` covered, for the error.
    pub(crate) fn first_covered<'a>(
        &self,
        tags: impl IntoIterator<Item = &'a str>,
    ) -> Option<&'a str> {
        tags.into_iter().find(|t| self.covers(t))
    }
}

/// Keyset pagination: up to `n` entries strictly after `last`, in lexical order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub n: Option<u32>,
    pub last: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Upload {
    pub id: Uuid,
    pub repository: RepoName,
    pub bytes_received: u64,
    /// The serialized running sha256 state over all bytes received.
    pub hash_state: Vec<u8>,
    pub chunk_count: u32,
    pub started_at: SystemTime,
}

/// Bytes of an upload that were stored in the blob store (pinned) as they arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadChunk {
    pub offset: u64,
    pub size: u64,
    pub cid: Cid,
}

/// A blob joined from an upload's chunks whose recursive pin is still to be made: its
/// root and the `direct` nodes are pinned only directly, and its leaves are the chunks'
/// blocks, held by the chunks' own pins until the root's recursive pin replaces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPin {
    pub root: Cid,
    pub direct: Vec<Cid>,
}

#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Cheap reachability check.
    async fn ping(&self) -> Result<(), MetaError>;

    // --- blobs ---

    /// A blob by digest, whichever repository it is in (for deduplication, never for access).
    async fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, MetaError>;

    /// The blob stored as the DAG under `cid`, for the IPFS gateway (whose content is
    /// public by CID, as on the IPFS network).
    async fn blob_by_cid(&self, cid: &Cid) -> Result<Option<BlobRecord>, MetaError>;

    /// The repositories that hold the blob stored as the DAG under `cid`, or an image layout
    /// recorded under it (for deciding who may fetch it through the gateway when access
    /// control is on).
    async fn repositories_with_cid(&self, cid: &Cid) -> Result<Vec<String>, MetaError>;

    /// A blob as seen from a repository: only when linked there and not quarantined.
    async fn repository_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>, MetaError>;

    // Each change a client can be notified of has a form that records notices in the
    // change's own transaction, and only when the change happened (`…_with_notices`; for
    // manifests and tags `…_with`, which also takes the `[[immutable]]` tags); the plain
    // form records none and protects no tag.

    /// Records a verified blob (unless the digest is stored already) and links it into the
    /// repository, creating the repository if needed. Returns the record now stored, which is
    /// the earlier one when the digest existed.
    async fn commit_blob(
        &self,
        repo: &RepoName,
        blob: BlobRecord,
    ) -> Result<BlobRecord, MetaError> {
        self.commit_blob_with_notices(repo, blob, &[]).await
    }

    async fn commit_blob_with_notices(
        &self,
        repo: &RepoName,
        blob: BlobRecord,
        notices: &[Notice],
    ) -> Result<BlobRecord, MetaError>;

    /// Links a blob linked in `from` into `to`. `None` when `from` has no such blob, or it
    /// is quarantined.
    async fn mount_blob(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>, MetaError> {
        self.mount_blob_with_notices(from, to, digest, &[]).await
    }

    async fn mount_blob_with_notices(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
        notices: &[Notice],
    ) -> Result<Option<BlobRecord>, MetaError>;

    /// Removes the blob's link from the repository. False when it was not linked.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        self.unlink_blob_with_notices(repo, digest, &[]).await
    }

    async fn unlink_blob_with_notices(
        &self,
        repo: &RepoName,
        digest: &Digest,
        notices: &[Notice],
    ) -> Result<bool, MetaError>;

    // --- integrity ---

    /// Marks a recorded blob's stored bytes as bad: from now on no repository sees it
    /// (`repository_blob` and `mount_blob` answer `None`) until it is released. True when it
    /// was quarantined now; false when it already was, or the digest is not recorded.
    async fn quarantine_blob(&self, digest: &Digest, reason: &str) -> Result<bool, MetaError>;

    /// Lifts the quarantine (its bytes were stored again, verified, or found sound). False
    /// when it was not quarantined.
    async fn release_blob(&self, digest: &Digest) -> Result<bool, MetaError>;

    async fn is_quarantined(&self, digest: &Digest) -> Result<bool, MetaError>;

    /// Every quarantined blob, in digest order.
    async fn quarantined_blobs(&self) -> Result<Vec<Quarantined>, MetaError>;

    /// Takes the lease `name` for `holder` until `ttl` from now, or renews it when `holder`
    /// has it already. False while another holder's lease has not expired.
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, MetaError>;

    /// Gives the lease up, if `holder` has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MetaError>;

    // --- manifests, tags, referrers ---

    async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<StoredManifest>, MetaError>;

    /// Stores the manifest, its references and (optionally) points `tag` at it, in one
    /// transaction. Fails with `MissingReferences` when a referenced blob or child manifest
    /// is not in the repository, or the blob is quarantined; then nothing changes.
    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: NewManifest,
        tag: Option<&Tag>,
    ) -> Result<(), MetaError> {
        self.put_manifest_with(repo, manifest, tag, &ProtectedTags::none(), &[])
            .await
    }

    /// [`MetadataStore::put_manifest`], failing with `TagImmutable` (changing nothing) when
    /// `protected` covers `tag` and it exists pointing at another manifest, and recording
    /// `notices` with the change.
    async fn put_manifest_with(
        &self,
        repo: &RepoName,
        manifest: NewManifest,
        tag: Option<&Tag>,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<(), MetaError>;

    /// Deletes the manifest and every tag pointing at it. False when it did not exist.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        self.delete_manifest_with(repo, digest, &ProtectedTags::none(), &[])
            .await
    }

    /// [`MetadataStore::delete_manifest`], failing with `TagImmutable` (changing nothing)
    /// when a tag `protected` covers points at the manifest, and recording `notices` when
    /// it deleted it.
    async fn delete_manifest_with(
        &self,
        repo: &RepoName,
        digest: &Digest,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<bool, MetaError>;

    /// Deletes only the tag. False when it did not exist.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, MetaError> {
        self.delete_tag_with(repo, tag, &ProtectedTags::none(), &[])
            .await
    }

    /// [`MetadataStore::delete_tag`], failing with `TagImmutable` when `protected` covers
    /// the tag and it exists, and recording `notices` when it deleted it.
    async fn delete_tag_with(
        &self,
        repo: &RepoName,
        tag: &Tag,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<bool, MetaError>;

    /// [`MetadataStore::delete_tag_with`] only while the tag points at `manifest`: false,
    /// and nothing changed, when it points elsewhere (a push moved it meanwhile).
    async fn delete_tag_pointing_at(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Digest,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<bool, MetaError>;

    // --- pull-through mirrors ---

    async fn repository_origin(&self, repo: &RepoName) -> Result<RepoOrigin, MetaError>;

    /// Stores a manifest fetched (and verified) from a mirror's upstream, in one
    /// transaction: marks the repository mirrored from `upstream` (creating it if needed),
    /// stores the manifest and its references WITHOUT requiring them in the repository
    /// (a mirror fetches blobs when clients ask for them), points `tag` at it and records
    /// the tag as checked now, recording `notices` with it. No `[[immutable]]` rule
    /// applies: the upstream decides.
    async fn put_mirrored_manifest(
        &self,
        repo: &RepoName,
        upstream: &str,
        manifest: NewManifest,
        tag: Option<&Tag>,
        notices: &[Notice],
    ) -> Result<(), MetaError>;

    /// When the mirrored `tag` was last fetched or confirmed by the upstream; `None` when
    /// it never was (not mirrored, or no such tag).
    async fn mirrored_tag_checked(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<SystemTime>, MetaError>;

    /// Records that the upstream confirmed `tag` still points at `digest`, when it does here
    /// too. False when it does not (moved meanwhile, or gone): nothing changes.
    async fn confirm_mirrored_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool, MetaError>;

    // --- image layouts ---

    /// Records `cid` as the image layout of `tag` in `repo`, when the tag still points at
    /// `manifest`; a layout recorded before for the tag is replaced (its CID queued for
    /// unpinning). Records the CID as a blob commit does (no unpin of it runs until the
    /// record is visible). False when the tag points elsewhere or is gone: nothing changes.
    async fn record_layout(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Digest,
        cid: &Cid,
    ) -> Result<bool, MetaError>;

    /// The layout recorded for `reference`: a tag's, or for a digest the one of the first
    /// tag (in lexical order) pointing at it that has one. A tag moved or deleted takes
    /// its layout along (its CID is queued for unpinning).
    async fn image_layout(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ImageLayout>, MetaError>;

    /// Tags of `repo` with no layout recorded (pushed before publishing, or whose
    /// publishing failed), in lexical order, at most `limit`, strictly after `after`.
    async fn unpublished_tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Tag>, MetaError>;

    /// Queues `tag` of `repo` for publishing while it points at `manifest` (a queued entry
    /// of the tag is replaced, due at once with no failed attempt). Nothing when the tag
    /// points elsewhere or is gone: whoever moved it decides. Deleting the tag drops it.
    async fn queue_layout(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Digest,
    ) -> Result<(), MetaError>;

    /// Claims up to `limit` due queue entries, oldest due first: each is not due again
    /// for `lease`, so other replicas leave it alone while this one publishes it, and
    /// take it over if this one dies.
    async fn claim_layouts(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<QueuedLayout>, MetaError>;

    /// Counts a failed attempt at `entry` and makes it due again after `backoff`; nothing
    /// when the tag was pushed again meanwhile (the new entry is due at once).
    async fn retry_layout(&self, entry: &QueuedLayout, backoff: Duration) -> Result<(), MetaError>;

    /// Drops `entry` (published, or given up on); nothing when the tag was pushed again
    /// meanwhile.
    async fn dequeue_layout(&self, entry: &QueuedLayout) -> Result<(), MetaError>;

    /// Queue entries, due or not.
    async fn queued_layouts(&self) -> Result<u64, MetaError>;

    // --- the public index (src/registry/federation.rs) ---

    /// Every recorded image layout, by repository then tag (bytewise).
    async fn published_images(&self) -> Result<Vec<PublishedImage>, MetaError>;

    /// A value that changes whenever the recorded image layouts do (a layout recorded,
    /// replaced or dropped): the index is rebuilt only then.
    async fn published_images_version(&self) -> Result<(u64, i64), MetaError>;

    /// The index as last recorded.
    async fn federation_index(&self) -> Result<Option<FederationIndex>, MetaError>;

    /// Records `cid` as the index (a recording write: no unpin of it runs until the record
    /// is visible); the root it replaces is queued for unpinning.
    async fn record_federation_index(&self, cid: &Cid) -> Result<(), MetaError>;

    /// Records that `name` was published naming `cid` (nothing when no index is recorded).
    async fn record_ipns(&self, name: &str, cid: &Cid) -> Result<(), MetaError>;

    // --- follow rules ---

    /// The state of follow rule `rule` (all empty for a rule never run).
    async fn follow_state(&self, rule: &str) -> Result<FollowState, MetaError>;

    /// A pass of `rule` left it in sync with the index `root`: records it, now, and clears
    /// the last error.
    async fn record_follow_success(&self, rule: &str, root: &Cid) -> Result<(), MetaError>;

    /// A poll or pass of `rule` failed: records why, now (the last success stays).
    async fn record_follow_error(&self, rule: &str, error: &str) -> Result<(), MetaError>;

    /// The tags `rule` imported, by repository and tag.
    async fn followed_tags(&self, rule: &str) -> Result<Vec<FollowedTag>, MetaError>;

    /// Records (or replaces) what `rule` imported a tag from.
    async fn record_followed_tag(&self, rule: &str, tag: &FollowedTag) -> Result<(), MetaError>;

    /// Forgets that `rule` imported the tag (the local tag itself is not touched).
    async fn forget_followed_tag(
        &self,
        rule: &str,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(), MetaError>;

    /// Tags in lexical order. `None` when the repository does not exist.
    async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>, MetaError>;

    /// Repository names in lexical order.
    async fn catalog(&self, page: &Page) -> Result<Vec<String>, MetaError>;

    /// A page of the repositories `filter` allows whose names contain `search` (every one
    /// when it is empty), in lexical order, with their tag counts, sizes and last pushes.
    async fn repository_summaries(
        &self,
        page: &Page,
        filter: &users::RepoFilter,
        search: &str,
    ) -> Result<Vec<RepositorySummary>, MetaError>;

    /// A page of `repo`'s tags with what each points at. `None` when the repository does
    /// not exist.
    async fn tag_summaries(
        &self,
        repo: &RepoName,
        page: &Page,
    ) -> Result<Option<Vec<TagSummary>>, MetaError>;

    /// Descriptors of the manifests in `repo` whose subject is `subject`, optionally only
    /// those with the given artifact type, ordered by digest.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, MetaError>;

    // --- upload sessions ---

    /// Starts an upload session, creating the repository if needed.
    async fn create_upload(
        &self,
        repo: &RepoName,
        hash_state: Vec<u8>,
    ) -> Result<Upload, MetaError>;

    async fn upload(&self, repo: &RepoName, id: Uuid) -> Result<Option<Upload>, MetaError>;

    /// Records a chunk if the session still holds exactly `chunk.offset` bytes. False when it
    /// does not (another request appended first, or the session is gone).
    async fn append_upload_chunk(
        &self,
        id: Uuid,
        chunk: UploadChunk,
        hash_state: Vec<u8>,
    ) -> Result<bool, MetaError>;

    /// Counts `size` more bytes (and the new hash state) if the session still holds exactly
    /// `offset` bytes, recording no chunk: for a blob store that keeps the session's bytes
    /// itself (`BlobStore::upload_file`). False when it does not hold `offset` bytes (or is
    /// gone).
    async fn advance_upload(
        &self,
        id: Uuid,
        offset: u64,
        size: u64,
        hash_state: Vec<u8>,
    ) -> Result<bool, MetaError>;

    async fn upload_chunks(&self, id: Uuid) -> Result<Vec<UploadChunk>, MetaError>;

    /// Commits the blob assembled from the session and ends the session, in one transaction
    /// that also queues the chunks' CIDs (but the blob's own) for unpinning, so a crash
    /// before the caller releases them leaves them to GC, not pinned with no record.
    /// Returns the stored record and the session's chunks (whose pins may now be released).
    async fn complete_upload(
        &self,
        id: Uuid,
        repo: &RepoName,
        blob: BlobRecord,
    ) -> Result<(BlobRecord, Vec<UploadChunk>), MetaError> {
        self.complete_upload_with_notices(id, repo, blob, None, &[])
            .await
    }

    /// [`MetadataStore::complete_upload`], recording `notices` in the same transaction.
    /// With `pending` (the blob's root pinned only directly), the chunks and the directly
    /// pinned nodes are held instead of queued, until [`GcStore::finish_pending_pin`]; when
    /// the digest was stored meanwhile under another CID, they are queued with the root.
    async fn complete_upload_with_notices(
        &self,
        id: Uuid,
        repo: &RepoName,
        blob: BlobRecord,
        pending: Option<&PendingPin>,
        notices: &[Notice],
    ) -> Result<(BlobRecord, Vec<UploadChunk>), MetaError>;

    /// Ends the session, queuing its chunks' CIDs for unpinning in the same transaction;
    /// returns its chunks so their pins can be released. Empty when the session did not
    /// exist.
    async fn delete_upload(&self, id: Uuid) -> Result<Vec<UploadChunk>, MetaError>;
}
