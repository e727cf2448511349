//! A short-lived memory of credentials that were checked against the ledger, so a batch job
//! calling thousands of times a minute does not pay a ledger read per call to prove who it is.
//!
//! Only successes are remembered, each for [`Policy::credentials_ttl`](super::Policy): a revoked
//! key, a removed user or a changed password stops working on a running service within that
//! time. A wrong key is always checked against the ledger.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::types::Scopes;

/// The most remembered credentials; when full, the memory starts over.
const CAPACITY: usize = 4096;

/// What identifies one presented credential: the API key's digest, or a legacy login with the
/// key it sent (the legacy key changes with the date, so a new day is a new entry).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Presented {
    ApiKey { digest: String },
    Legacy { login: String, key: String },
}

pub(super) struct CredentialsCache {
    ttl: Duration,
    entries: Mutex<HashMap<Presented, (Instant, String, Scopes)>>,
}

impl CredentialsCache {
    pub(super) fn new(ttl: Duration) -> CredentialsCache {
        CredentialsCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Who `presented` proved to be, if it was checked less than the time to live ago.
    pub(super) fn get(&self, presented: &Presented) -> Option<(String, Scopes)> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        let (checked_at, login, scopes) = entries.get(presented)?;
        (checked_at.elapsed() < self.ttl).then(|| (login.clone(), *scopes))
    }

    pub(super) fn remember(&self, presented: Presented, login: &str, scopes: Scopes) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            entries.insert(presented, (Instant::now(), login.to_owned(), scopes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(digest: &str) -> Presented {
        Presented::ApiKey {
            digest: digest.to_owned(),
        }
    }

    #[test]
    fn remembers_for_the_time_to_live_only() {
        let cache = CredentialsCache::new(Duration::from_millis(50));
        let scopes = Scopes::parse("read").expect("scopes");
        assert_eq!(cache.get(&key("a")), None);
        cache.remember(key("a"), "key:a", scopes);
        assert_eq!(cache.get(&key("a")), Some(("key:a".to_owned(), scopes)));
        assert_eq!(cache.get(&key("b")), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&key("a")), None, "expired");
    }

    #[test]
    fn a_zero_time_to_live_remembers_nothing() {
        let cache = CredentialsCache::new(Duration::ZERO);
        cache.remember(key("a"), "key:a", Scopes::parse("read").expect("scopes"));
        assert_eq!(cache.get(&key("a")), None);
    }

    #[test]
    fn stays_bounded() {
        let cache = CredentialsCache::new(Duration::from_secs(60));
        let scopes = Scopes::parse("read").expect("scopes");
        for index in 0..CAPACITY + 10 {
            cache.remember(key(&index.to_string()), "k", scopes);
        }
        assert!(cache.entries.lock().expect("lock").len() <= CAPACITY);
    }
}
