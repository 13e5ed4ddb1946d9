//! Proxy-issued cancel keys ↔ upstream BackendKeyData.
//!
//! A client is told the upstream's process id (so `pg_backend_pid()` and NOTIFY sender
//! pids match what its driver saw) together with a fresh random secret issued here. A
//! CancelRequest is forwarded upstream only when that (pid, secret) pair belongs to a live
//! session; the upstream's real secret never leaves the proxy. Cancel attempts are
//! rate-limited per client IP so the key space cannot be brute-forced.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::settings::UpstreamTls;

/// Where and how to deliver a cancel for one session.
#[derive(Clone, Debug)]
pub struct CancelTarget {
    pub host: String,
    pub port: u16,
    pub tls: UpstreamTls,
    /// The upstream's own BackendKeyData.
    pub upstream_pid: i32,
    pub upstream_secret: i32,
}

/// Cancel attempts allowed per client IP in one [`RATE_WINDOW`].
pub const RATE_LIMIT: u32 = 20;
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Inner {
    keys: HashMap<(i32, i32), CancelTarget>,
    attempts: HashMap<IpAddr, (Instant, u32)>,
}

/// The live cancel keys of this proxy.
#[derive(Default)]
pub struct CancelMap {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CancelMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelMap")
            .field("keys", &self.lock().keys.len())
            .finish()
    }
}

impl CancelMap {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Issues a proxy secret for `target.upstream_pid`, unique among live keys; the key
    /// is removed when the returned guard drops.
    pub fn register(self: &Arc<Self>, target: CancelTarget) -> CancelKey {
        let pid = target.upstream_pid;
        let mut inner = self.lock();
        let mut secret: i32 = rand::random();
        while inner.keys.contains_key(&(pid, secret)) {
            secret = rand::random();
        }
        inner.keys.insert((pid, secret), target);
        CancelKey {
            map: Arc::clone(self),
            pid,
            secret,
        }
    }

    /// Looks up a client's cancel key, counting the attempt against `peer`'s rate limit.
    /// `None` when the key is unknown or the peer is over its limit.
    pub fn lookup(&self, peer: IpAddr, pid: i32, secret: i32) -> Option<CancelTarget> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.attempts.len() > 10_000 {
            inner
                .attempts
                .retain(|_, (start, _)| now.duration_since(*start) < RATE_WINDOW);
        }
        let entry = inner.attempts.entry(peer).or_insert((now, 0));
        if now.duration_since(entry.0) >= RATE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 > RATE_LIMIT {
            return None;
        }
        inner.keys.get(&(pid, secret)).cloned()
    }

    fn remove(&self, pid: i32, secret: i32) {
        self.lock().keys.remove(&(pid, secret));
    }
}

/// A registered cancel key; dropping it forgets the key.
#[derive(Debug)]
pub struct CancelKey {
    map: Arc<CancelMap>,
    pub pid: i32,
    pub secret: i32,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.map.remove(self.pid, self.secret);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pid: i32) -> CancelTarget {
        CancelTarget {
            host: "127.0.0.1".into(),
            port: 5432,
            tls: UpstreamTls::Disable,
            upstream_pid: pid,
            upstream_secret: 7,
        }
    }

    #[test]
    fn keys_are_found_only_while_live_and_with_the_proxy_secret() {
        let map = CancelMap::new();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let key = map.register(target(100));
        assert_eq!(key.pid, 100);
        let found = map.lookup(ip, 100, key.secret).unwrap();
        assert_eq!(found.upstream_secret, 7);
        assert!(map.lookup(ip, 100, key.secret.wrapping_add(1)).is_none());
        let secret = key.secret;
        drop(key);
        assert!(map.lookup(ip, 100, secret).is_none());
    }

    #[test]
    fn attempts_are_rate_limited_per_peer() {
        let map = CancelMap::new();
        let key = map.register(target(5));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..RATE_LIMIT {
            let _ = map.lookup(a, 1, 1);
        }
        assert!(map.lookup(a, 5, key.secret).is_none(), "over the limit");
        assert!(
            map.lookup(b, 5, key.secret).is_some(),
            "other peers unaffected"
        );
    }
}
