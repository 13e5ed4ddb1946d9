//! A global and a per-client-address limit on open client connections.
//!
//! A connection takes its [`Slot`] as soon as it is accepted, before the client has sent
//! a byte, and gives it back when it closes (the slot is dropped with the session): an
//! unauthenticated client counts as much as a live session, and one that never sends
//! anything holds its slot at most `login_timeout`. Clients of other addresses are
//! unaffected by one address reaching its limit.
//!
//! The per-address limit counts an [`IpGroup`]: an IPv4 address alone, but an IPv6
//! address together with its whole network of `client_limits.ipv6_prefix_len` bits
//! (default /64), since one client is routinely given a /64 and could otherwise open
//! unlimited connections from addresses of its own. An IPv4-mapped IPv6 address
//! (`::ffff:a.b.c.d`, what a dual-stack listener sees of an IPv4 client) counts as its
//! IPv4 address.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::settings::ClientLimits;

/// Which limit a connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// `client_limits.max_connections` (all clients together).
    Total(usize),
    /// `client_limits.max_connections_per_ip` (this client's address or IPv6 network).
    PerIp(usize, IpGroup),
}

/// The addresses one per-address limit counts together (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpGroup {
    /// One IPv4 address (also when it arrived IPv4-mapped).
    V4(Ipv4Addr),
    /// An IPv6 network: the address with all but its first `len` bits zero.
    V6 { net: Ipv6Addr, len: u8 },
}

impl IpGroup {
    /// The group of `ip` when IPv6 addresses are grouped by their first `v6_prefix_len`
    /// bits (clamped to 0..=128).
    pub fn of(ip: IpAddr, v6_prefix_len: u8) -> IpGroup {
        match ip {
            IpAddr::V4(v4) => IpGroup::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpGroup::V4(v4),
                None => {
                    let len = v6_prefix_len.min(128);
                    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                    IpGroup::V6 {
                        net: Ipv6Addr::from(u128::from(v6) & mask),
                        len,
                    }
                }
            },
        }
    }

    /// What the group is, for messages: "address" or "network".
    pub fn unit(&self) -> &'static str {
        match self {
            IpGroup::V6 { len, .. } if *len < 128 => "network",
            _ => "address",
        }
    }
}

impl fmt::Display for IpGroup {
    /// `192.0.2.1`, `2001:db8:1:2::/64`, or a single IPv6 address when the prefix is 128.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpGroup::V4(a) => write!(f, "{a}"),
            IpGroup::V6 { net, len: 128 } => write!(f, "{net}"),
            IpGroup::V6 { net, len } => write!(f, "{net}/{len}"),
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpGroup, usize>,
}

/// Open client connections, in total and per address group.
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    ipv6_prefix_len: u8,
    counts: Mutex<Counts>,
}

/// One open connection's place; given back on drop.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    group: IpGroup,
}

impl ConnectionLimits {
    pub fn new(settings: &ClientLimits) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_total: settings.max_connections,
            max_per_ip: settings.max_connections_per_ip,
            ipv6_prefix_len: settings.ipv6_prefix_len,
            counts: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Counts are updated in single steps; a poisoned lock still holds valid ones.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The group the per-address limit counts `ip` in.
    pub fn group(&self, ip: IpAddr) -> IpGroup {
        IpGroup::of(ip, self.ipv6_prefix_len)
    }

    /// Takes a slot for a connection from `ip`, or says which limit is reached.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, LimitHit> {
        let group = self.group(ip);
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            return Err(LimitHit::Total(self.max_total));
        }
        let of_group = counts.per_ip.entry(group).or_insert(0);
        if *of_group >= self.max_per_ip {
            return Err(LimitHit::PerIp(self.max_per_ip, group));
        }
        *of_group += 1;
        counts.total += 1;
        Ok(Slot {
            limits: Arc::clone(self),
            group,
        })
    }

    /// Open connections: in total, and from `ip`'s group.
    pub fn open(&self, ip: IpAddr) -> (usize, usize) {
        let group = self.group(ip);
        let counts = self.lock();
        (
            counts.total,
            counts.per_ip.get(&group).copied().unwrap_or(0),
        )
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limits.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.group) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.group);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize) -> Arc<ConnectionLimits> {
        limits_v6(total, per_ip, 64)
    }

    fn limits_v6(total: usize, per_ip: usize, ipv6_prefix_len: u8) -> Arc<ConnectionLimits> {
        ConnectionLimits::new(&ClientLimits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            ipv6_prefix_len,
            ..ClientLimits::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_then_total_and_slots_come_back() {
        let l = limits(3, 2);
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
        let a1 = l.acquire(a).unwrap();
        let _a2 = l.acquire(a).unwrap();
        assert_eq!(
            l.acquire(a).err(),
            Some(LimitHit::PerIp(2, IpGroup::V4("10.0.0.1".parse().unwrap())))
        );
        let _b1 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(b).err(), Some(LimitHit::Total(3)));
        drop(a1);
        assert_eq!(l.open(a), (2, 1));
        let _b2 = l.acquire(b).unwrap();
        assert_eq!(l.open(b), (3, 2));
    }

    #[test]
    fn ipv6_groups_by_prefix_and_displays_the_network() {
        let g = |s: &str, len: u8| IpGroup::of(ip(s), len);
        // /64: the interface identifier does not matter, the subnet does.
        assert_eq!(
            g("2001:db8:1:2::1", 64),
            g("2001:db8:1:2:ffff:ffff:ffff:ffff", 64)
        );
        assert_ne!(g("2001:db8:1:2::1", 64), g("2001:db8:1:3::1", 64));
        assert_eq!(
            g("2001:db8:1:2:abcd::9", 64).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(g("2001:db8:1:2:abcd::9", 64).unit(), "network");
        // Other lengths, including ones that cut inside a group of 16 bits.
        assert_eq!(g("2001:db8:1:2::1", 48).to_string(), "2001:db8:1::/48");
        assert_eq!(g("2001:db8:ffff::1", 36).to_string(), "2001:db8:f000::/36");
        assert_eq!(g("2001:db8:1:2:3:4:5:6", 32).to_string(), "2001:db8::/32");
        assert_eq!(g("2001:db8:1:2::7f", 121).to_string(), "2001:db8:1:2::/121");
        assert_eq!(
            g("2001:db8:1:2::80", 121).to_string(),
            "2001:db8:1:2::80/121"
        );
        // /128: every address alone, shown as itself.
        assert_ne!(g("2001:db8::1", 128), g("2001:db8::2", 128));
        assert_eq!(g("2001:db8::1", 128).to_string(), "2001:db8::1");
        assert_eq!(g("2001:db8::1", 128).unit(), "address");
        assert_eq!(g("::1", 64).to_string(), "::/64");
        // IPv4 and IPv4-mapped IPv6 are the same client: one IPv4 address each.
        assert_eq!(g("::ffff:192.0.2.7", 64), g("192.0.2.7", 64));
        assert_eq!(g("::ffff:192.0.2.7", 64).to_string(), "192.0.2.7");
        assert_ne!(g("192.0.2.7", 64), g("192.0.2.8", 64));
        assert_eq!(g("192.0.2.7", 64).unit(), "address");
    }

    #[test]
    fn one_ipv6_network_shares_one_limit() {
        let l = limits_v6(100, 2, 64);
        let _a = l.acquire(ip("2001:db8:1:2::1")).unwrap();
        let _b = l.acquire(ip("2001:db8:1:2::2")).unwrap();
        let hit = l.acquire(ip("2001:db8:1:2:dead:beef:0:1")).err().unwrap();
        assert_eq!(hit, LimitHit::PerIp(2, l.group(ip("2001:db8:1:2::"))));
        let LimitHit::PerIp(_, group) = hit else {
            unreachable!()
        };
        assert_eq!(group.to_string(), "2001:db8:1:2::/64");
        // The neighbouring /64 is another client.
        let _c = l.acquire(ip("2001:db8:1:3::1")).unwrap();
        assert_eq!(l.open(ip("2001:db8:1:2::99")), (3, 2));

        // An IPv4 client counts the same whether it arrives mapped or not.
        let _d = l.acquire(ip("192.0.2.1")).unwrap();
        let _e = l.acquire(ip("::ffff:192.0.2.1")).unwrap();
        assert!(matches!(
            l.acquire(ip("192.0.2.1")),
            Err(LimitHit::PerIp(2, IpGroup::V4(_)))
        ));

        // With /128 every address has its own count again.
        let l = limits_v6(100, 1, 128);
        let _a = l.acquire(ip("2001:db8:1:2::1")).unwrap();
        let _b = l.acquire(ip("2001:db8:1:2::2")).unwrap();
        assert!(l.acquire(ip("2001:db8:1:2::1")).is_err());
    }
}
