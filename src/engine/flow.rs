//! The flow table: one entry per connection, keyed so both directions meet,
//! bounded, and expired by idle time according to the TCP state.

use crate::engine::analysis::StreamAnalysis;
use crate::engine::patterns::Patterns;
use crate::engine::tracker::{TcpState, TcpTracker};
use core::net::IpAddr;
use core::sync::atomic::{AtomicUsize, Ordering};
use dashmap::DashMap;

/// An address as 16 bytes (IPv4 mapped into IPv6), so keys have one fixed size.
pub fn addr_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Turns 16 key bytes back into an address (mapped IPv4 becomes IPv4 again).
pub fn addr_from_bytes(b: [u8; 16]) -> IpAddr {
    let v6 = core::net::Ipv6Addr::from(b);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// A direction-free flow key: the lower (address, port) endpoint first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    low_addr: [u8; 16],
    high_addr: [u8; 16],
    low_port: u16,
    high_port: u16,
    proto: u8,
}

impl FlowKey {
    /// Builds the key for a packet and says whether its sender is the lower endpoint.
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: u8) -> (FlowKey, bool) {
        let a = (addr_bytes(src), sport);
        let b = (addr_bytes(dst), dport);
        let sender_is_low = a <= b;
        let (low, high) = if sender_is_low { (a, b) } else { (b, a) };
        (
            FlowKey {
                low_addr: low.0,
                high_addr: high.0,
                low_port: low.1,
                high_port: high.1,
                proto,
            },
            sender_is_low,
        )
    }

    /// The two endpoints, lower first.
    pub fn endpoints(&self) -> ((IpAddr, u16), (IpAddr, u16)) {
        (
            (addr_from_bytes(self.low_addr), self.low_port),
            (addr_from_bytes(self.high_addr), self.high_port),
        )
    }

    /// The IP protocol number.
    pub fn proto(&self) -> u8 {
        self.proto
    }
}

/// Everything tracked about one flow.
#[derive(Clone, Debug)]
pub struct Flow {
    /// Liberal TCP tracking (unused for other protocols).
    pub tcp: TcpTracker,
    /// Wireshark-compatible retransmission analysis (TCP only).
    pub analysis: StreamAnalysis,
    /// First packet time, ns.
    pub first_ns: u64,
    /// Latest packet time, ns.
    pub last_ns: u64,
    /// Packets seen.
    pub packets: u32,
    /// Packets that carried at least one retransmission pattern.
    pub troubled: u32,
    /// Packets with a doubtful-but-benign reason.
    pub benign: u16,
    /// Packets with a hostile reason.
    pub hostile: u16,
    /// Union of the patterns seen.
    pub patterns: Patterns,
    /// True if the flow's first packet came from the key's lower endpoint.
    pub first_is_low: bool,
    /// Packets seen from the second endpoint (UDP: a reply makes it established).
    pub replied: bool,
}

impl Flow {
    fn new(now_ns: u64, first_is_low: bool) -> Flow {
        Flow {
            tcp: TcpTracker::default(),
            analysis: StreamAnalysis::new(),
            first_ns: now_ns,
            last_ns: now_ns,
            packets: 0,
            troubled: 0,
            benign: 0,
            hostile: 0,
            patterns: Patterns::EMPTY,
            first_is_low,
            replied: false,
        }
    }

    /// Which side sent a packet: 0 for the flow's first sender.
    pub fn side(&self, sender_is_low: bool) -> usize {
        usize::from(sender_is_low != self.first_is_low)
    }
}

/// Idle timeouts by state, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Handshake in progress.
    pub syn_ns: u64,
    /// Established TCP.
    pub established_ns: u64,
    /// FIN seen.
    pub closing_ns: u64,
    /// Closed by FINs or RST (TIME_WAIT).
    pub closed_ns: u64,
    /// UDP.
    pub udp_ns: u64,
    /// Other protocols.
    pub other_ns: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        const S: u64 = 1_000_000_000;
        Timeouts {
            syn_ns: 120 * S,
            established_ns: 7200 * S,
            closing_ns: 60 * S,
            closed_ns: 10 * S,
            udp_ns: 30 * S,
            other_ns: 30 * S,
        }
    }
}

impl Timeouts {
    fn for_flow(&self, key: &FlowKey, flow: &Flow) -> u64 {
        match key.proto {
            crate::wire::proto::TCP => match flow.tcp.state() {
                TcpState::None | TcpState::SynSent | TcpState::SynRecv => self.syn_ns,
                TcpState::Established => self.established_ns,
                TcpState::FinWait | TcpState::Closing => self.closing_ns,
                TcpState::Closed => self.closed_ns,
            },
            crate::wire::proto::UDP => self.udp_ns,
            _ => self.other_ns,
        }
    }
}

/// A bounded concurrent flow table.
pub struct FlowTable {
    map: DashMap<FlowKey, Flow>,
    len: AtomicUsize,
    max: usize,
    timeouts: Timeouts,
}

/// What [`FlowTable::with_flow`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The flow existed.
    Existing,
    /// The flow was created by this packet.
    Created,
}

impl FlowTable {
    /// An empty table holding at most `max` flows.
    pub fn new(max: usize, timeouts: Timeouts) -> FlowTable {
        FlowTable {
            map: DashMap::new(),
            len: AtomicUsize::new(0),
            max: max.max(1),
            timeouts,
        }
    }

    /// Flows currently tracked.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Returns true if and only if no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The table's bound.
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Runs `f` on the flow for `key` (creating it if there is room), under the
    /// entry's shard lock. Returns `None` when the flow is new and the table is full
    /// even after expiring idle flows.
    pub fn with_flow<R>(
        &self,
        key: FlowKey,
        sender_is_low: bool,
        now_ns: u64,
        f: impl FnOnce(&mut Flow, Lookup) -> R,
    ) -> Option<R> {
        if let Some(mut flow) = self.map.get_mut(&key) {
            if now_ns.saturating_sub(flow.last_ns) > self.timeouts.for_flow(&key, &flow) {
                // Expired but not yet swept: a new flow reusing the key.
                *flow = Flow::new(now_ns, sender_is_low);
                return Some(f(&mut flow, Lookup::Created));
            }
            return Some(f(&mut flow, Lookup::Existing));
        }
        if self.len() >= self.max {
            self.expire(now_ns);
            if self.len() >= self.max {
                return None;
            }
        }
        let mut created = false;
        let mut entry = self.map.entry(key).or_insert_with(|| {
            created = true;
            Flow::new(now_ns, sender_is_low)
        });
        if created {
            self.len.fetch_add(1, Ordering::Relaxed);
            Some(f(&mut entry, Lookup::Created))
        } else {
            Some(f(&mut entry, Lookup::Existing))
        }
    }

    /// Removes flows idle longer than their state's timeout; returns how many.
    pub fn expire(&self, now_ns: u64) -> usize {
        let mut removed = 0;
        self.map.retain(|key, flow| {
            let keep = now_ns.saturating_sub(flow.last_ns) <= self.timeouts.for_flow(key, flow);
            removed += usize::from(!keep);
            keep
        });
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Calls `f` for every flow (takes shard read locks one at a time).
    pub fn for_each(&self, mut f: impl FnMut(&FlowKey, &Flow)) {
        for entry in self.map.iter() {
            f(entry.key(), entry.value());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn both_directions_share_a_key() {
        let (k1, low1) = FlowKey::new(v4("192.0.2.1"), 40000, v4("198.51.100.2"), 80, 6);
        let (k2, low2) = FlowKey::new(v4("198.51.100.2"), 80, v4("192.0.2.1"), 40000, 6);
        assert_eq!(k1, k2);
        assert_ne!(low1, low2);
        let ((a, pa), (b, pb)) = k1.endpoints();
        assert_eq!(
            (a, pa, b, pb),
            (v4("192.0.2.1"), 40000, v4("198.51.100.2"), 80)
        );
    }

    #[test]
    fn sides_follow_the_first_sender() {
        let table = FlowTable::new(10, Timeouts::default());
        let (key, low) = FlowKey::new(v4("198.51.100.2"), 80, v4("192.0.2.1"), 40000, 6);
        let side = table.with_flow(key, low, 0, |f, _| f.side(low)).unwrap();
        assert_eq!(side, 0);
        let side = table.with_flow(key, !low, 1, |f, _| f.side(!low)).unwrap();
        assert_eq!(side, 1);
    }

    #[test]
    fn full_table_refuses_new_flows_until_idle_ones_expire() {
        let table = FlowTable::new(2, Timeouts::default());
        for port in 1..=2 {
            let (k, low) = FlowKey::new(v4("192.0.2.1"), port, v4("192.0.2.2"), 53, 17);
            assert_eq!(table.with_flow(k, low, 0, |_, l| l), Some(Lookup::Created));
        }
        let (k3, low3) = FlowKey::new(v4("192.0.2.1"), 3, v4("192.0.2.2"), 53, 17);
        assert_eq!(table.with_flow(k3, low3, 1_000_000_000, |_, l| l), None);
        assert_eq!(table.len(), 2);
        let later = 31 * 1_000_000_000;
        assert_eq!(
            table.with_flow(k3, low3, later, |_, l| l),
            Some(Lookup::Created)
        );
        assert_eq!(table.len(), 1);
    }
}
