//! Slowing down password guessing: failed logins are counted per user name and per client
//! address; after a few free failures each further one locks the key out for twice as long
//! as the previous (capped). Kept in memory: each replica counts on its own, which bounds a
//! guesser to (free failures + doublings) × replicas attempts per window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    User(String),
    Client(IpAddr),
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures allowed before any lockout.
    pub free_failures: u32,
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
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(60 * 60),
            max_keys: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct LoginThrottle {
    policy: Policy,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl LoginThrottle {
    pub fn new(policy: Policy) -> LoginThrottle {
        LoginThrottle {
            policy,
            entries: Mutex::new(HashMap::new()),
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

    pub fn record_failure(&self, keys: &[Key], now: Instant) {
        let policy = self.policy;
        let mut entries = self.lock();
        if entries.len() >= policy.max_keys {
            entries
                .retain(|_, e| now.saturating_duration_since(e.last_failure) < policy.forget_after);
        }
        if entries.len() >= policy.max_keys {
            entries.retain(|_, e| e.locked_until.is_some_and(|until| until > now));
        }
        for key in keys {
            let entry = entries.entry(key.clone()).or_insert(Entry {
                failures: 0,
                last_failure: now,
                locked_until: None,
            });
            if now.saturating_duration_since(entry.last_failure) >= policy.forget_after {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure = now;
            if entry.failures > policy.free_failures {
                let doublings = (entry.failures - policy.free_failures - 1).min(20);
                let delay = policy
                    .base_delay
                    .saturating_mul(1 << doublings)
                    .min(policy.max_delay);
                entry.locked_until = Some(now + delay);
            }
        }
    }

    /// A successful login clears the user's count (not the address's: one known password
    /// must not reset a client that is guessing others).
    pub fn record_success(&self, user: &str) {
        self.lock().remove(&Key::User(user.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<Key> {
        vec![
            Key::User("alice".into()),
            Key::Client("10.0.0.1".parse().unwrap()),
        ]
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

        // The lockout applies per key: another user from the same address is locked too,
        // the same user from another address as well.
        let same_client = [Key::User("bob".into()), keys()[1].clone()];
        assert!(throttle.retry_after(&same_client, t1).is_some());
        let same_user = [keys()[0].clone(), Key::Client("10.0.0.2".parse().unwrap())];
        assert!(throttle.retry_after(&same_user, t1).is_some());
        let unrelated = [
            Key::User("bob".into()),
            Key::Client("10.0.0.2".parse().unwrap()),
        ];
        assert_eq!(throttle.retry_after(&unrelated, t1), None);
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
            throttle.record_failure(&[Key::User(format!("spray{i}"))], t0);
            assert!(throttle.lock().len() <= 100);
        }
        assert!(
            throttle.retry_after(&keys(), t0).is_some(),
            "locked-out keys are kept"
        );
    }

    #[test]
    fn success_clears_the_user_only() {
        let throttle = LoginThrottle::new(Policy::default());
        let t0 = Instant::now();
        for _ in 0..6 {
            throttle.record_failure(&keys(), t0);
        }
        throttle.record_success("alice");
        assert_eq!(throttle.retry_after(&keys()[..1], t0), None);
        assert!(throttle.retry_after(&keys()[1..], t0).is_some());
    }
}
