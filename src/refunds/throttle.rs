//! Failed authentications, counted per login and per client address, so that guessing keys is
//! slow: after [`LOGIN_LIMIT`] failures for one login, or [`ADDRESS_LIMIT`] from one address,
//! within a [`WINDOW`], every attempt for that login or from that address is refused at once
//! (a clear fault, never a wait) until the window ends. Successes are not counted and do not
//! reset anything, so an attacker cannot launder failures with a valid key of its own.
//!
//! Unknown logins are counted like known ones: a throttle that only applied to existing logins
//! would tell which exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Failures of one login within a window before it is refused.
pub const LOGIN_LIMIT: u32 = 10;
/// Failures from one client address within a window before it is refused (higher than a
/// login's: many clients can share an address behind NAT).
pub const ADDRESS_LIMIT: u32 = 100;
/// How long failures are counted.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The most logins and addresses followed at once; when full, expired windows are dropped,
/// and if none has expired the oldest half of the memory goes.
const CAPACITY: usize = 65_536;

/// The connection a request came on, as the service sees it: the client's address, and a
/// hook the server sets to hear when a caller on it first authenticates (it caps connections
/// per address that have not).
pub struct ClientConnection {
    pub address: IpAddr,
    authenticated: std::sync::atomic::AtomicBool,
    on_first_authentication: Box<dyn Fn() + Send + Sync>,
}

impl ClientConnection {
    pub fn new(
        address: IpAddr,
        on_first_authentication: Box<dyn Fn() + Send + Sync>,
    ) -> ClientConnection {
        ClientConnection {
            address,
            authenticated: std::sync::atomic::AtomicBool::new(false),
            on_first_authentication,
        }
    }

    /// Whether a caller on this connection has authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    fn note_authenticated(&self) {
        if !self.authenticated.load(Ordering::Acquire)
            && !self.authenticated.swap(true, Ordering::AcqRel)
        {
            (self.on_first_authentication)();
        }
    }
}

tokio::task_local! {
    /// The connection of the request being served, set by the server around each request so
    /// that the service can count failed authentications per address (and report successes)
    /// without every face carrying it.
    pub static CLIENT_CONNECTION: std::sync::Arc<ClientConnection>;
}

/// The client address of the request being served, if the server set one.
pub fn client_address() -> Option<IpAddr> {
    CLIENT_CONNECTION
        .try_with(|connection| connection.address)
        .ok()
}

/// Tells the connection of the request being served that its caller authenticated.
pub fn note_authenticated() {
    let _ = CLIENT_CONNECTION.try_with(|connection| connection.note_authenticated());
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl Window {
    /// How long it still refuses, if it has reached `limit`.
    fn refusing(&self, limit: u32, length: Duration, now: Instant) -> Option<Duration> {
        if self.failures < limit {
            return None;
        }
        (self.started + length).checked_duration_since(now)
    }

    fn count(&mut self, length: Duration, now: Instant) {
        if now.duration_since(self.started) >= length {
            *self = Window {
                started: now,
                failures: 0,
            };
        }
        self.failures = self.failures.saturating_add(1);
    }
}

#[derive(Default)]
struct Windows {
    logins: HashMap<String, Window>,
    addresses: HashMap<IpAddr, Window>,
}

pub(super) struct FailedAuthentications {
    window: Duration,
    windows: Mutex<Windows>,
    /// Whether any failure was ever counted: until then, checks take no lock.
    any: AtomicBool,
}

impl FailedAuthentications {
    pub(super) fn new(window: Duration) -> FailedAuthentications {
        FailedAuthentications {
            window,
            windows: Mutex::new(Windows::default()),
            any: AtomicBool::new(false),
        }
    }

    /// `Some(seconds until it lifts)` when `login` or `address` has failed too often.
    pub(super) fn refused(&self, login: Option<&str>, address: Option<IpAddr>) -> Option<u64> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let windows = self.windows.lock().ok()?;
        let now = Instant::now();
        let login = login
            .and_then(|login| windows.logins.get(login))
            .and_then(|window| window.refusing(LOGIN_LIMIT, self.window, now));
        let address = address
            .and_then(|address| windows.addresses.get(&address))
            .and_then(|window| window.refusing(ADDRESS_LIMIT, self.window, now));
        login
            .into_iter()
            .chain(address)
            .max()
            .map(|left| left.as_secs().max(1))
    }

    /// Counts one failed authentication of `login` (if it was a legacy login) from `address`.
    pub(super) fn record_failure(&self, login: Option<&str>, address: Option<IpAddr>) {
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        self.any.store(true, Ordering::Relaxed);
        let now = Instant::now();
        let length = self.window;
        let fresh = Window {
            started: now,
            failures: 0,
        };
        if let Some(login) = login {
            bound(&mut windows.logins, length, now);
            match windows.logins.get_mut(login) {
                Some(window) => window.count(length, now),
                None => {
                    let mut window = fresh;
                    window.count(length, now);
                    windows.logins.insert(login.to_owned(), window);
                }
            }
        }
        if let Some(address) = address {
            bound(&mut windows.addresses, length, now);
            windows
                .addresses
                .entry(address)
                .or_insert(fresh)
                .count(length, now);
        }
    }
}

/// Keeps `windows` under [`CAPACITY`]: expired windows go first, then the older half.
fn bound<K: std::hash::Hash + Eq>(
    windows: &mut HashMap<K, Window>,
    length: Duration,
    now: Instant,
) {
    if windows.len() < CAPACITY {
        return;
    }
    windows.retain(|_, window| now.duration_since(window.started) < length);
    if windows.len() >= CAPACITY {
        let mut starts: Vec<Instant> = windows.values().map(|window| window.started).collect();
        starts.sort_unstable();
        let median = starts[starts.len() / 2];
        windows.retain(|_, window| window.started > median);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_login_after_its_limit_until_the_window_ends() {
        let failures = FailedAuthentications::new(Duration::from_millis(200));
        let address: IpAddr = "127.0.0.9".parse().expect("address");
        for _ in 0..LOGIN_LIMIT {
            assert_eq!(failures.refused(Some("a"), Some(address)), None);
            failures.record_failure(Some("a"), Some(address));
        }
        assert!(failures.refused(Some("a"), None).is_some());
        assert_eq!(
            failures.refused(Some("b"), Some(address)),
            None,
            "other logins"
        );
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(failures.refused(Some("a"), None), None, "lifted");
    }

    #[test]
    fn refuses_an_address_after_its_limit_whatever_the_login() {
        let failures = FailedAuthentications::new(WINDOW);
        let address: IpAddr = "127.0.0.9".parse().expect("address");
        for attempt in 0..ADDRESS_LIMIT {
            failures.record_failure(Some(&attempt.to_string()), Some(address));
        }
        assert!(failures.refused(Some("fresh"), Some(address)).is_some());
        assert!(
            failures.refused(None, Some(address)).is_some(),
            "API keys too"
        );
        let other: IpAddr = "127.0.0.10".parse().expect("address");
        assert_eq!(failures.refused(Some("fresh"), Some(other)), None);
    }

    #[test]
    fn stays_bounded() {
        let failures = FailedAuthentications::new(WINDOW);
        for attempt in 0..CAPACITY + 10 {
            failures.record_failure(Some(&attempt.to_string()), None);
        }
        assert!(failures.windows.lock().expect("lock").logins.len() <= CAPACITY);
    }
}
