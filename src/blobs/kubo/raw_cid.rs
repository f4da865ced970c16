//! CIDs computable without the node.

use cid::Cid;
use multihash::Multihash;

/// Multicodec code of raw bytes (a single-block blob under our import profile).
pub const RAW_CODEC: u64 = 0x55;
/// Multicodec code of dag-pb (the UnixFS root of a multi-block blob).
pub const DAG_PB_CODEC: u64 = 0x70;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;

/// The raw-codec CIDv1 of content whose sha256 is `digest`. Under our import profile a blob
/// of at most one chunk gets exactly this CID from the node (its multihash *is* the OCI
/// sha256 digest). Fails only when `digest` is longer than 64 bytes.
pub fn raw_cid_v1_from_sha256(digest: &[u8]) -> Result<Cid, multihash::Error> {
    Ok(Cid::new_v1(RAW_CODEC, Multihash::wrap(SHA2_256, digest)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn hello_world_golden_cid() {
        let digest = Sha256::digest(b"hello world\n");
        let cid = raw_cid_v1_from_sha256(&digest).unwrap();
        assert_eq!(
            cid.to_string(),
            "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
        );
        assert_eq!(cid.codec(), RAW_CODEC);
        assert_eq!(cid.hash().digest(), digest.as_slice());
    }

    #[test]
    fn oversized_digest_is_refused() {
        assert!(raw_cid_v1_from_sha256(&[0u8; 65]).is_err());
    }
}
