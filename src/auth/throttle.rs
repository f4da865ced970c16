//! Slowing down password guessing: failed logins are counted per (user name, client
//! address) and per client address; after a few free failures each further one locks the key
//! out for twice as long as the previous (capped). There is no count per user name alone: it
//! would let anyone lock a user out everywhere by guessing from elsewhere.
//!
//! An attempt is reserved before its password is checked, and a key admits only as many
//! checks at once as it has free failures left, so a concurrent burst gets no more checks
//! than the same attempts one after another would. Kept in memory: each replica counts on
//! its own, which bounds a guesser to (free failures + doublings) × replicas attempts per
//! window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// One user name (its sha256) as tried from one address.
    UserClient([u8; 32], IpAddr),
    /// Everything tried from one address.
    Client(IpAddr),
}

impl Key {
    /// The key of `user` tried from `client`. The name is kept as a digest: a name is
    /// whatever a client sends (up to a whole form), and up to `max_keys` of them are kept.
    pub fn user_client(user: &str, client: IpAddr) -> Key {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&Sha256::digest(user.as_bytes()));
        Key::UserClient(digest, client)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures allowed for a user from one address before any lockout.
    pub free_failures: u32,
    /// Failures allowed from one address, whatever the user names, before any lockout.
    /// Higher, so that people sharing an address (NAT, an untrusted proxy) are not locked
    /// out by one of them mistyping.
    pub client_free_failures: u32,
    /// The first lockout; each further failure doubles it.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A key with no failure for this long starts over.
    pub forget_after: Duration,
    /// Keys tracked at most. Beyond it (a spray over many names and addresses), keys not
    /// locked out right now are dropped first, so memory stays bounded.
    pub max_keys: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            free_failures: 5,
            client_free_failures: 20,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(60 * 60),
            max_keys: 100_000,
        }
    }
}

impl Policy {
    fn free(&self, key: &Key) -> u32 {
        match key {
            Key::UserClient(..) => self.free_failures,
            Key::Client(_) => self.client_free_failures,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
    /// Attempts reserved whose outcome is not known yet.
    pending: u32,
}

/// Why an attempt may not be made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A key is locked out for this long.
    LockedOut(Duration),
    /// As many attempts as a key may still fail are being checked; one may go once they
    /// are done.
    Busy,
}

#[derive(Debug, Default)]
pub struct LoginThrottle {
    policy: Policy,
    entries: Mutex<HashMap<Key, Entry>>,
    /// Woken whenever a reserved attempt ends.
    released: Notify,
}

impl LoginThrottle {
    pub fn new(policy: Policy) -> LoginThrottle {
        LoginThrottle {
            policy,
            entries: Mutex::new(HashMap::new()),
            released: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // The map holds only counters: after a panic elsewhere it is still usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long until any of `keys` may try again; `None` when all may now.
    pub fn retry_after(&self, keys: &[Key], now: Instant) -> Option<Duration> {
        let entries = self.lock();
        keys.iter()
            .filter_map(|k| entries.get(k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// Resolves when a reserved attempt ends. Take it before [`LoginThrottle::reserve`]
    /// answers `Busy`, so that an end in between is not missed.
    pub fn released(&self) -> Notified<'_> {
        self.released.notified()
    }

    /// Reserves an attempt on all of `keys` at once, or says why not. The attempt counts
    /// as a failure unless [`Attempt::succeeded`] is called; dropped unfinished (the check
    /// never ran) it counts as nothing.
    pub fn reserve(self: &Arc<Self>, keys: &[Key], now: Instant) -> Result<Attempt, Refusal> {
        let policy = self.policy;
        let mut entries = self.lock();
        let mut busy = false;
        let mut locked = None::<Duration>;
        for key in keys {
            let Some(entry) = entries.get(key) else {
                continue;
            };
            if let Some(until) = entry.locked_until.filter(|until| *until > now) {
                locked = locked.max(Some(until - now));
                continue;
            }
            let failures =
                if now.saturating_duration_since(entry.last_failure) >= policy.forget_after {
                    0
                } else {
                    entry.failures
                };
            // Each pending check may fail: admit no more than the failures left before a
            // lockout (the one that locks included), and one at a time after that.
            let room = (policy.free(key) + 1).saturating_sub(failures).max(1);
            busy |= entry.pending >= room;
        }
        if let Some(wait) = locked {
            return Err(Refusal::LockedOut(wait));
        }
        if busy {
            return Err(Refusal::Busy);
        }
        Self::make_room(&policy, &mut entries, now);
        for key in keys {
            Self::entry(&mut entries, key, now).pending += 1;
        }
        Ok(Attempt {
            throttle: Arc::clone(self),
            keys: keys.to_vec(),
            finished: false,
        })
    }

    fn make_room(policy: &Policy, entries: &mut HashMap<Key, Entry>, now: Instant) {
        if entries.len() >= policy.max_keys {
            entries.retain(|_, e| {
                e.pending > 0 || now.saturating_duration_since(e.last_failure) < policy.forget_after
            });
        }
        if entries.len() >= policy.max_keys {
            entries.retain(|_, e| e.pending > 0 || e.locked_until.is_some_and(|until| until > now));
        }
    }

    pub fn record_failure(&self, keys: &[Key], now: Instant) {
        let policy = self.policy;
        let mut entries = self.lock();
        Self::make_room(&policy, &mut entries, now);
        for key in keys {
            Self::fail(&policy, key, Self::entry(&mut entries, key, now), now);
        }
    }

    fn entry<'a>(entries: &'a mut HashMap<Key, Entry>, key: &Key, now: Instant) -> &'a mut Entry {
        entries.entry(key.clone()).or_insert(Entry {
            failures: 0,
            last_failure: now,
            locked_until: None,
            pending: 0,
        })
    }

    fn fail(policy: &Policy, key: &Key, entry: &mut Entry, now: Instant) {
        if now.saturating_duration_since(entry.last_failure) >= policy.forget_after {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        let free = policy.free(key);
        if entry.failures > free {
            let doublings = (entry.failures - free - 1).min(20);
            let delay = policy
                .base_delay
                .saturating_mul(1 << doublings)
                .min(policy.max_delay);
            entry.locked_until = Some(now + delay);
        }
    }

    /// Ends a reserved attempt on `keys`. A success clears the user's count from that
    /// address (not the address's: one known password must not reset a client that is
    /// guessing others).
    fn finish(&self, keys: &[Key], outcome: Option<bool>, now: Instant) {
        let policy = self.policy;
        {
            let mut entries = self.lock();
            for key in keys {
                let Some(entry) = entries.get_mut(key) else {
                    continue;
                };
                entry.pending = entry.pending.saturating_sub(1);
                match outcome {
                    Some(false) => Self::fail(&policy, key, entry, now),
                    Some(true) if matches!(key, Key::UserClient(..)) => {
                        entry.failures = 0;
                        entry.locked_until = None;
                    }
                    _ => {}
                }
                if entry.pending == 0 && entry.failures == 0 {
                    entries.remove(key);
                }
            }
        }
        self.released.notify_waiters();
    }
}

/// A reserved login attempt (see [`LoginThrottle::reserve`]).
#[derive(Debug)]
pub struct Attempt {
    throttle: Arc<LoginThrottle>,
    keys: Vec<Key>,
    finished: bool,
}

impl Attempt {
    pub fn succeeded(mut self) {
        self.finished = true;
        self.throttle.finish(&self.keys, Some(true), Instant::now());
    }

    pub fn failed(mut self) {
        self.finished = true;
        self.throttle
            .finish(&self.keys, Some(false), Instant::now());
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.finished {
            self.throttle.finish(&self.keys, None, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn keys_of(user: &str, client: &str) -> Vec<Key> {
        vec![Key::user_client(user, ip(client)), Key::Client(ip(client))]
    }

    fn keys() -> Vec<Key> {
        keys_of("alice", "10.0.0.1")
    }

    #[test]
    fn locks_out_after_free_failures_with_doubling_delay() {
        let throttle = LoginThrottle::new(Policy::default());
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(throttle.retry_after(&keys(), t0), None);
            throttle.record_failure(&keys(), t0);
        }
        assert_eq!(throttle.retry_after(&keys(), t0), None, "five are free");
        throttle.record_failure(&keys(), t0);
        assert_eq!(
            throttle.retry_after(&keys(), t0),
            Some(Duration::from_secs(1))
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(throttle.retry_after(&keys(), t1), None);
        throttle.record_failure(&keys(), t1);
        assert_eq!(
            throttle.retry_after(&keys(), t1),
            Some(Duration::from_secs(2))
        );

        // The lockout is of this user from this address only: another user from the same
        // address, and the same user from another address, may go on.
        assert_eq!(throttle.retry_after(&keys_of("bob", "10.0.0.1"), t1), None);
        assert_eq!(
            throttle.retry_after(&keys_of("alice", "10.0.0.2"), t1),
            None
        );
    }

    #[test]
    fn an_address_trying_many_users_is_locked_out_as_a_whole() {
        let policy = Policy::default();
        let throttle = LoginThrottle::new(policy);
        let t0 = Instant::now();
        for i in 0..=policy.client_free_failures {
            let keys = keys_of(&format!("user{i}"), "10.0.0.1");
            assert_eq!(throttle.retry_after(&keys, t0), None);
            throttle.record_failure(&keys, t0);
        }
        assert!(throttle
            .retry_after(&keys_of("anyone", "10.0.0.1"), t0)
            .is_some());
        assert_eq!(
            throttle.retry_after(&keys_of("anyone", "10.0.0.2"), t0),
            None
        );
    }

    #[test]
    fn concurrent_attempts_get_no_more_checks_than_serial_ones() {
        let throttle = Arc::new(LoginThrottle::new(Policy::default()));
        let t0 = Instant::now();
        let attempts: Vec<Attempt> = (0..6)
            .map(|_| throttle.reserve(&keys(), t0).unwrap())
            .collect();
        assert_eq!(throttle.reserve(&keys(), t0).unwrap_err(), Refusal::Busy);
        // Other users from the address are not held up by these.
        drop(throttle.reserve(&keys_of("bob", "10.0.0.1"), t0).unwrap());
        for attempt in attempts {
            attempt.failed();
        }
        assert!(matches!(
            throttle.reserve(&keys(), Instant::now()),
            Err(Refusal::LockedOut(_))
        ));
        // Once the lockout has passed: one check at a time.
        let later = Instant::now() + Duration::from_secs(2);
        let one = throttle.reserve(&keys(), later).unwrap();
        assert_eq!(throttle.reserve(&keys(), later).unwrap_err(), Refusal::Busy);
        drop(one);
        let again = throttle.reserve(&keys(), later).unwrap();
        again.succeeded();
        assert_eq!(throttle.retry_after(&keys()[..1], later), None);
    }

    #[test]
    fn an_abandoned_attempt_counts_as_nothing() {
        let throttle = Arc::new(LoginThrottle::new(Policy::default()));
        let t0 = Instant::now();
        for _ in 0..20 {
            drop(throttle.reserve(&keys(), t0).unwrap());
        }
        assert!(throttle.lock().is_empty());
    }

    #[test]
    fn delay_is_capped_and_forgotten() {
        let policy = Policy::default();
        let throttle = LoginThrottle::new(policy);
        let t0 = Instant::now();
        for _ in 0..40 {
            throttle.record_failure(&keys(), t0);
        }
        assert_eq!(throttle.retry_after(&keys(), t0), Some(policy.max_delay));
        let later = t0 + policy.forget_after + policy.max_delay;
        assert_eq!(throttle.retry_after(&keys(), later), None);
        throttle.record_failure(&keys(), later);
        assert_eq!(
            throttle.retry_after(&keys(), later),
            None,
            "count started over"
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let policy = Policy {
            max_keys: 100,
            ..Policy::default()
        };
        let throttle = LoginThrottle::new(policy);
        let t0 = Instant::now();
        for _ in 0..6 {
            throttle.record_failure(&keys(), t0);
        }
        for i in 0..1000 {
            throttle.record_failure(
                &[Key::Client(ip(&format!("10.1.{}.{}", i / 200, i % 200)))],
                t0,
            );
            assert!(throttle.lock().len() <= 100);
        }
        assert!(
            throttle.retry_after(&keys(), t0).is_some(),
            "locked-out keys are kept"
        );
    }

    #[test]
    fn success_clears_the_user_from_that_address_only() {
        let throttle = Arc::new(LoginThrottle::new(Policy::default()));
        let t0 = Instant::now();
        for _ in 0..4 {
            throttle.record_failure(&keys(), t0);
        }
        throttle.reserve(&keys(), t0).unwrap().succeeded();
        let entries = throttle.lock();
        assert!(!entries.contains_key(&keys()[0]));
        assert_eq!(entries[&keys()[1]].failures, 4);
    }
}
