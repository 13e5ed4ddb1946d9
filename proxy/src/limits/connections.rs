//! A global and a per-client-IP limit on open client connections.
//!
//! A connection takes its [`Slot`] as soon as it is accepted, before the client has sent
//! a byte, and gives it back when it closes (the slot is dropped with the session): an
//! unauthenticated client counts as much as a live session, and one that never sends
//! anything holds its slot at most `login_timeout`. Clients of other addresses are
//! unaffected by one address reaching its limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::settings::ClientLimits;

/// Which limit a connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// `client_limits.max_connections` (all clients together).
    Total(usize),
    /// `client_limits.max_connections_per_ip` (this client address).
    PerIp(usize),
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Open client connections, in total and per address.
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

/// One open connection's place; given back on drop.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(settings: &ClientLimits) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_total: settings.max_connections,
            max_per_ip: settings.max_connections_per_ip,
            counts: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Counts are updated in single steps; a poisoned lock still holds valid ones.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for a connection from `ip`, or says which limit is reached.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, LimitHit> {
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            return Err(LimitHit::Total(self.max_total));
        }
        let of_ip = counts.per_ip.entry(ip).or_insert(0);
        if *of_ip >= self.max_per_ip {
            return Err(LimitHit::PerIp(self.max_per_ip));
        }
        *of_ip += 1;
        counts.total += 1;
        Ok(Slot {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Open connections: in total, and from `ip`.
    pub fn open(&self, ip: IpAddr) -> (usize, usize) {
        let counts = self.lock();
        (counts.total, counts.per_ip.get(&ip).copied().unwrap_or(0))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limits.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize) -> Arc<ConnectionLimits> {
        ConnectionLimits::new(&ClientLimits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            ..ClientLimits::default()
        })
    }

    #[test]
    fn per_ip_then_total_and_slots_come_back() {
        let l = limits(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = l.acquire(a).unwrap();
        let _a2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).err(), Some(LimitHit::PerIp(2)));
        let _b1 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(b).err(), Some(LimitHit::Total(3)));
        drop(a1);
        assert_eq!(l.open(a), (2, 1));
        let _b2 = l.acquire(b).unwrap();
        assert_eq!(l.open(b), (3, 2));
    }
}
