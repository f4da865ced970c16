//! Robot tokens: long-lived credentials for CI, `ipfs-registry-robot.<id>.<secret>`, used as
//! the password at `/token`. Only the secret's sha256 is stored (the secret has 256 random
//! bits, so a slow hash adds nothing).

use rand_core::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const PREFIX: &str = "ipfs-registry-robot.";

/// A new token: (id, the text to hand out, sha256 of its secret).
pub fn generate() -> (Uuid, String, Vec<u8>) {
    let id = Uuid::new_v4();
    let mut secret = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut secret);
    let secret = hex::encode(secret);
    let digest = Sha256::digest(secret.as_bytes()).to_vec();
    (id, format!("{PREFIX}{id}.{secret}"), digest)
}

/// The id and the secret's sha256, when `password` has the shape of a robot token.
pub fn parse(password: &str) -> Option<(Uuid, Vec<u8>)> {
    let rest = password.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    let id = id.parse().ok()?;
    Some((id, Sha256::digest(secret.as_bytes()).to_vec()))
}

/// Constant-time comparison of two digests.
pub fn same_digest(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back() {
        let (id, token, digest) = generate();
        let (parsed_id, parsed_digest) = parse(&token).unwrap();
        assert_eq!(parsed_id, id);
        assert!(same_digest(&parsed_digest, &digest));
        let (_, other, _) = generate();
        assert!(!same_digest(&parse(&other).unwrap().1, &digest));
        assert!(parse("hunter2").is_none());
        assert!(parse("ipfs-registry-robot.not-a-uuid.x").is_none());
    }
}
