//! Pure OCI domain types. Depends on nothing else in the crate.

mod digest;
pub mod manifest;
pub mod media;
mod name;
mod pattern;
mod reference;

pub use digest::{Algorithm, Digest, DigestError};
pub use manifest::{Descriptor, ManifestError, ParsedManifest, ReferenceKind};
pub use name::{InvalidName, InvalidTag, RepoName, Tag};
pub use pattern::{InvalidPattern, RepoPattern, TagPattern};
pub use reference::{InvalidReference, Reference};
