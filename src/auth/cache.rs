//! Recently checked logins: a user name and password that passed the argon2 check are
//! taken as checked for a short while, so that docker's repeated `/token` calls and a
//! browser's every page do not each cost one. What is kept is a keyed hash of the
//! credentials (the key is random per process), never the password, along with the user's
//! id and a digest of their stored password hash: an entry counts only while the user
//! exists with that very hash, so a password change or the user's removal ends it at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand_core::RngCore;
use sha2::{Digest, Sha256};

use crate::meta::users::User;

/// Entries kept at most; beyond it new logins are simply not remembered.
const MAX_ENTRIES: usize = 10_000;

/// The identity of a pair of credentials in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialsKey([u8; 32]);

#[derive(Debug, Clone, Copy)]
struct Entry {
    user_id: i64,
    stored: [u8; 32],
    expires: Instant,
}

pub struct LoginCache {
    secret: [u8; 32],
    ttl: Duration,
    entries: Mutex<HashMap<CredentialsKey, Entry>>,
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&hasher.finalize());
    out
}

impl LoginCache {
    /// A cache remembering logins for `ttl` (zero: not at all).
    pub fn new(ttl: Duration) -> LoginCache {
        let mut secret = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut secret);
        LoginCache {
            secret,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CredentialsKey, Entry>> {
        // Only a cache: after a panic elsewhere it is still usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn key(&self, name: &str, password: &str) -> CredentialsKey {
        // The name's length first, so that no other split of the same bytes collides.
        let len = (name.len() as u64).to_be_bytes();
        CredentialsKey(sha256(&[
            &self.secret,
            &len,
            name.as_bytes(),
            password.as_bytes(),
        ]))
    }

    /// Whether a live entry exists (before the user is looked up to confirm it).
    pub fn holds(&self, key: &CredentialsKey, now: Instant) -> bool {
        self.lock().get(key).is_some_and(|e| e.expires > now)
    }

    /// Whether `key` was checked for `user` as stored now. An entry that no longer fits
    /// (expired, another user of that name, a changed password) is dropped.
    pub fn confirms(&self, key: &CredentialsKey, user: Option<&User>, now: Instant) -> bool {
        let mut entries = self.lock();
        let Some(entry) = entries.get(key) else {
            return false;
        };
        let fits = entry.expires > now
            && user.is_some_and(|user| {
                entry.user_id == user.id && entry.stored == sha256(&[user.password_hash.as_bytes()])
            });
        if !fits {
            entries.remove(key);
        }
        fits
    }

    /// Remembers that `key` passed the check against `user`'s stored hash.
    pub fn insert(&self, key: CredentialsKey, user: &User, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.expires > now);
        }
        if entries.len() >= MAX_ENTRIES {
            return;
        }
        entries.insert(
            key,
            Entry {
                user_id: user.id,
                stored: sha256(&[user.password_hash.as_bytes()]),
                expires: now + self.ttl,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn user(id: i64, hash: &str) -> User {
        User {
            id,
            name: "alice".into(),
            password_hash: hash.into(),
            admin: false,
            password_changed_at: SystemTime::now(),
        }
    }

    #[test]
    fn an_entry_holds_for_the_same_user_and_stored_hash_until_it_expires() {
        let cache = LoginCache::new(Duration::from_secs(60));
        let now = Instant::now();
        let alice = user(1, "$argon2id$first");
        let key = cache.key("alice", "secret");
        assert!(!cache.holds(&key, now));
        cache.insert(key, &alice, now);
        assert!(cache.holds(&key, now));
        assert!(cache.confirms(&key, Some(&alice), now));
        assert!(!cache.confirms(&cache.key("alice", "secreT"), Some(&alice), now));
        assert_ne!(cache.key("alice", "secret"), cache.key("alic", "esecret"));
        assert_ne!(
            key,
            LoginCache::new(Duration::from_secs(60)).key("alice", "secret"),
            "keyed per process"
        );

        let later = now + Duration::from_secs(61);
        assert!(!cache.holds(&key, later));
        assert!(!cache.confirms(&key, Some(&alice), later));

        cache.insert(key, &alice, now);
        assert!(
            !cache.confirms(&key, Some(&user(1, "$argon2id$changed")), now),
            "a new password ends it"
        );
        assert!(!cache.holds(&key, now), "and it is gone");
        cache.insert(key, &alice, now);
        assert!(!cache.confirms(&key, Some(&user(2, "$argon2id$first")), now));
        cache.insert(key, &alice, now);
        assert!(!cache.confirms(&key, None, now), "a removed user");
    }

    #[test]
    fn a_zero_ttl_remembers_nothing() {
        let cache = LoginCache::new(Duration::ZERO);
        let now = Instant::now();
        let key = cache.key("alice", "secret");
        cache.insert(key, &user(1, "h"), now);
        assert!(!cache.holds(&key, now));
    }
}
