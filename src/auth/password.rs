//! Password hashing: argon2id with the crate's default (OWASP-recommended) parameters,
//! stored as a PHC string that records them, so stronger parameters later still verify
//! old hashes.

use std::sync::LazyLock;

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use super::AuthError;

pub fn hash(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("hashing a password: {e}")))
}

/// Whether `password` matches the stored hash. An unreadable hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The working memory of one argon2 check (19 MiB with the default parameters), kept and
/// reused: a process that checks on a fixed set of these holds that much and no more,
/// whatever its allocator would do with areas freed on many threads.
#[derive(Default)]
pub struct Memory(Vec<Block>);

/// [`verify`] in `memory`.
pub fn verify_in(password: &str, stored: &str, memory: &mut Memory) -> bool {
    PasswordHash::new(stored)
        .ok()
        .and_then(|parsed| verify_parsed(password, &parsed, memory))
        .unwrap_or(false)
}

/// What `PasswordVerifier::verify_password` does, but in memory of our own (it allocates).
fn verify_parsed(password: &str, parsed: &PasswordHash, memory: &mut Memory) -> Option<bool> {
    let expected = parsed.hash?;
    let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .ok()?
        .unwrap_or_default();
    let params = Params::try_from(parsed).ok()?;
    let mut salt = [0u8; 64];
    let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
    let argon2 = Argon2::new(algorithm, version, params);
    let blocks = argon2.params().block_count();
    if memory.0.len() < blocks {
        memory.0.resize(blocks, Block::default());
    }
    let computed = Output::init_with(expected.len(), |out| {
        argon2
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory.0[..])
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .ok()?;
    // `Output` compares in constant time.
    Some(computed == expected)
}

/// A hash no password is known for: verifying against it when the user does not exist
/// costs what a real check costs, so response times do not reveal which names exist.
static DUMMY: LazyLock<String> =
    LazyLock::new(|| hash("no user has this password").unwrap_or_default());

pub fn verify_dummy_in(password: &str, memory: &mut Memory) {
    let _ = verify_in(password, &DUMMY, memory);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip() {
        let stored = hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        assert!(verify("correct horse", &stored));
        assert!(!verify("correct horse ", &stored));
        assert!(!verify("correct horse", "not a hash"));
        assert_ne!(hash("correct horse").unwrap(), stored, "salted");

        let mut memory = Memory::default();
        assert!(verify_in("correct horse", &stored, &mut memory));
        assert!(!verify_in("correct horse ", &stored, &mut memory));
        assert!(verify_in("correct horse", &stored, &mut memory), "reused");
        assert!(!verify_in("correct horse", "not a hash", &mut memory));
    }
}
