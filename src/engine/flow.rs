//! The flow table: one entry per connection, keyed so both directions meet,
//! bounded, and expired by idle time according to the TCP state.
//!
//! Not a `DashMap`: a map of 250-byte entries pays its load-factor slack and its
//! doubling in whole entries (about 560 bytes per flow at a million flows, measured);
//! here the hash index holds 4-byte slot numbers and the flows sit in fixed chunks.

use crate::engine::analysis::StreamAnalysis;
use crate::engine::patterns::Patterns;
pub use crate::engine::spec::Timeouts;
use crate::engine::tracker::{TcpState, TcpTracker};
use core::hash::BuildHasher;
use core::net::IpAddr;
use core::sync::atomic::{AtomicUsize, Ordering};
use hashbrown::HashTable;
use std::sync::{Mutex, MutexGuard};

/// An address as one 128-bit number (IPv4 mapped into IPv6, `::ffff:a.b.c.d`), so
/// keys have one fixed size and order as the addresses' bytes do.
#[inline]
pub fn addr_word(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => 0xffff_u128 << 32 | u128::from(v4.to_bits()),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// Turns a key's 128-bit address back into an address (mapped IPv4 becomes IPv4).
pub fn addr_from_word(w: u128) -> IpAddr {
    let v6 = core::net::Ipv6Addr::from_bits(w);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// A direction-free flow key: the lower (address, port) endpoint first.
///
/// Stored as bytes (38 of them, no padding to a 16-byte alignment) that hold each
/// address's [`addr_word`] in native byte order; compared and hashed as 128-bit
/// words, which is what a lookup per packet costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    low_addr: [u8; 16],
    high_addr: [u8; 16],
    low_port: u16,
    high_port: u16,
    proto: u8,
}

impl core::hash::Hash for FlowKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.low_addr));
        state.write_u128(u128::from_ne_bytes(self.high_addr));
        state.write_u64(
            u64::from(self.low_port)
                | u64::from(self.high_port) << 16
                | u64::from(self.proto) << 32,
        );
    }
}

impl FlowKey {
    /// Builds the key for a packet and says whether its sender is the lower endpoint.
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: u8) -> (FlowKey, bool) {
        let (s, d) = (addr_word(src), addr_word(dst));
        let sender_is_low = (s, sport) <= (d, dport);
        let ((low_addr, low_port), (high_addr, high_port)) = if sender_is_low {
            ((s, sport), (d, dport))
        } else {
            ((d, dport), (s, sport))
        };
        (
            FlowKey {
                low_addr: low_addr.to_ne_bytes(),
                high_addr: high_addr.to_ne_bytes(),
                low_port,
                high_port,
                proto,
            },
            sender_is_low,
        )
    }

    /// The two endpoints, lower first.
    pub fn endpoints(&self) -> ((IpAddr, u16), (IpAddr, u16)) {
        (
            (
                addr_from_word(u128::from_ne_bytes(self.low_addr)),
                self.low_port,
            ),
            (
                addr_from_word(u128::from_ne_bytes(self.high_addr)),
                self.high_port,
            ),
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
    /// First packet time, whole seconds since the epoch.
    pub first_s: u32,
    /// Latest packet time, whole seconds since the epoch (drives idle expiry).
    pub last_s: u32,
    /// Packets seen.
    pub packets: u32,
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
    /// True when the engine sees only part of the flow (live, or replay as deployed):
    /// its SYN and the packets conntrack doubted, not its established traffic.
    /// The shadow feed clears it ([`crate::engine::Engine::observe`]).
    pub partial: bool,
    /// The engine's feed epoch ([`crate::engine::Engine::feed_epoch`]) when the flow
    /// started (its SYN, or its first trusted packet): the flow is whole only while
    /// the feed has lost nothing since, so a loss makes every older flow partial.
    pub fed_epoch: u32,
    /// True once the engine asked its front end to hand the flow back to conntrack
    /// (per-connection liberal flag): asked once per flow.
    pub handback: bool,
    /// True when the SACK offset learner watches the flow from its SYN (a repairing
    /// service's): its data is recorded before any SACK.
    pub repair_watched: bool,
}

/// Whole seconds of a nanosecond timestamp, as flows store them.
pub fn secs(now_ns: u64) -> u32 {
    (now_ns / 1_000_000_000) as u32
}

impl Flow {
    /// A flow with nothing seen yet, first packet at `now_ns`.
    pub fn new(now_ns: u64, first_is_low: bool) -> Flow {
        Flow {
            tcp: TcpTracker::default(),
            analysis: StreamAnalysis::new(),
            first_s: secs(now_ns),
            last_s: secs(now_ns),
            packets: 0,
            benign: 0,
            hostile: 0,
            patterns: Patterns::EMPTY,
            first_is_low,
            replied: false,
            partial: false,
            fed_epoch: 0,
            handback: false,
            repair_watched: false,
        }
    }

    /// Which side sent a packet: 0 for the flow's first sender.
    pub fn side(&self, sender_is_low: bool) -> usize {
        usize::from(sender_is_low != self.first_is_low)
    }
}

/// Idle timeouts by flow state, from the config's `[engine] timeouts`.
trait IdleTimeouts {
    fn for_flow(&self, key: &FlowKey, flow: &Flow) -> u32;
    fn expired(&self, key: &FlowKey, flow: &Flow, now_s: u32) -> bool;
}

impl IdleTimeouts for Timeouts {
    fn for_flow(&self, key: &FlowKey, flow: &Flow) -> u32 {
        match key.proto {
            crate::wire::proto::TCP => match flow.tcp.state() {
                // A SYN the engine let through and that was not retried presumably
                // opened the connection: its later packets are simply not queued.
                // It lives as long as conntrack's own established entry would.
                TcpState::None | TcpState::SynSent | TcpState::SynRecv if flow.partial => {
                    self.established
                }
                TcpState::None | TcpState::SynSent | TcpState::SynRecv => self.syn,
                TcpState::Established => self.established,
                TcpState::FinWait | TcpState::Closing => self.closing,
                TcpState::Closed => self.closed,
            },
            crate::wire::proto::UDP => self.udp,
            _ => self.other,
        }
    }

    fn expired(&self, key: &FlowKey, flow: &Flow, now_s: u32) -> bool {
        now_s.saturating_sub(flow.last_s) > self.for_flow(key, flow)
    }
}

/// Lock shards: enough that two to sixteen verdict threads rarely meet.
const SHARDS: usize = 64;
/// Slots are allocated this many at a time per shard, never moved once allocated.
const CHUNK: usize = 64;
/// Protocol number marking a free slot (0 is never a tracked transport).
const FREE: u8 = 0;

/// A flow and its key, stored in place.
struct Slot {
    key: FlowKey,
    flow: Flow,
}

/// One lock's worth of flows: a hash index of slot numbers over chunked storage.
///
/// The index holds 4-byte slot numbers, not entries, so its load-factor slack and
/// doubling cost bytes per *bucket* rather than per flow-sized entry; the slots grow
/// by fixed chunks and are recycled through a free list. That keeps a tracked flow at
/// about its own size (see `cargo bench --bench flow_memory`).
#[derive(Default)]
struct Shard {
    index: HashTable<u32>,
    chunks: Vec<Vec<Slot>>,
    free: Vec<u32>,
}

impl Shard {
    fn slot(chunks: &[Vec<Slot>], i: u32) -> &Slot {
        &chunks[i as usize / CHUNK][i as usize % CHUNK]
    }

    fn slot_mut(chunks: &mut [Vec<Slot>], i: u32) -> &mut Slot {
        &mut chunks[i as usize / CHUNK][i as usize % CHUNK]
    }

    /// Stores a slot, reusing a free one if any; returns its number.
    fn store(&mut self, slot: Slot) -> u32 {
        if let Some(i) = self.free.pop() {
            *Self::slot_mut(&mut self.chunks, i) = slot;
            return i;
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let n = self.chunks.len() - 1;
        let chunk = &mut self.chunks[n];
        chunk.push(slot);
        (n * CHUNK + chunk.len() - 1) as u32
    }
}

/// A bounded concurrent flow table.
pub struct FlowTable {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::RandomState,
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
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            // foldhash with a per-process random seed: fast on 37-byte keys, and the
            // seed keeps attacker-chosen tuples from colliding on purpose.
            hasher: foldhash::fast::RandomState::default(),
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

    fn lock(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // hashbrown takes bucket positions from the low bits and tags from the top
        // seven: pick the shard from bits neither uses at these sizes.
        let shard = &self.shards[(hash >> 40) as usize % SHARDS];
        // A panic while a shard was held leaves plain data behind: keep going.
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the flow for `key` (creating it if there is room), under the
    /// shard's lock. Returns `None` when the flow is new and the table is full even
    /// after expiring idle flows.
    pub fn with_flow<R>(
        &self,
        key: FlowKey,
        sender_is_low: bool,
        now_ns: u64,
        f: impl FnOnce(&mut Flow, Lookup) -> R,
    ) -> Option<R> {
        let hash = self.hasher.hash_one(key);
        let now_s = secs(now_ns);
        {
            let mut guard = self.lock(hash);
            let Shard { index, chunks, .. } = &mut *guard;
            if let Some(&i) = index.find(hash, |&i| Shard::slot(chunks, i).key == key) {
                let slot = Shard::slot_mut(chunks, i);
                if self.timeouts.expired(&key, &slot.flow, now_s) {
                    // Expired but not yet swept: a new flow reusing the key.
                    slot.flow = Flow::new(now_ns, sender_is_low);
                    return Some(f(&mut slot.flow, Lookup::Created));
                }
                return Some(f(&mut slot.flow, Lookup::Existing));
            }
        }
        // A full table waits for the next expiry (the front end's, once a second):
        // the verdict path never walks the table.
        if self.len() >= self.max {
            return None;
        }
        let mut guard = self.lock(hash);
        let shard = &mut *guard;
        if let Some(&i) = shard
            .index
            .find(hash, |&i| Shard::slot(&shard.chunks, i).key == key)
        {
            // Another thread created it between the two locks.
            return Some(f(
                &mut Shard::slot_mut(&mut shard.chunks, i).flow,
                Lookup::Existing,
            ));
        }
        let i = shard.store(Slot {
            key,
            flow: Flow::new(now_ns, sender_is_low),
        });
        let Shard { index, chunks, .. } = shard;
        index.insert_unique(hash, i, |&j| {
            self.hasher.hash_one(Shard::slot(chunks, j).key)
        });
        self.len.fetch_add(1, Ordering::Relaxed);
        Some(f(&mut Shard::slot_mut(chunks, i).flow, Lookup::Created))
    }

    /// Runs `f` on the flow for `key` if it exists and has not expired; never creates
    /// one (packets that must not create state, such as INVALID ones, look up only).
    pub fn with_existing_flow<R>(
        &self,
        key: FlowKey,
        now_ns: u64,
        f: impl FnOnce(&mut Flow) -> R,
    ) -> Option<R> {
        let hash = self.hasher.hash_one(key);
        let mut guard = self.lock(hash);
        let Shard { index, chunks, .. } = &mut *guard;
        let &i = index.find(hash, |&i| Shard::slot(chunks, i).key == key)?;
        let slot = Shard::slot_mut(chunks, i);
        if self.timeouts.expired(&key, &slot.flow, secs(now_ns)) {
            return None;
        }
        Some(f(&mut slot.flow))
    }

    /// Returns true if and only if the table holds as many flows as it may.
    pub fn is_full(&self) -> bool {
        self.len() >= self.max
    }

    /// Removes flows idle longer than their state's timeout; returns how many.
    /// Takes one shard lock at a time.
    pub fn expire(&self, now_ns: u64) -> usize {
        let now_s = secs(now_ns);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut guard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let Shard {
                index,
                chunks,
                free,
            } = &mut *guard;
            for (c, chunk) in chunks.iter_mut().enumerate() {
                for (o, slot) in chunk.iter_mut().enumerate() {
                    if slot.key.proto == FREE
                        || !self.timeouts.expired(&slot.key, &slot.flow, now_s)
                    {
                        continue;
                    }
                    let i = (c * CHUNK + o) as u32;
                    let hash = self.hasher.hash_one(slot.key);
                    if let Ok(entry) = index.find_entry(hash, |&j| j == i) {
                        entry.remove();
                    }
                    slot.key.proto = FREE;
                    free.push(i);
                    removed += 1;
                }
            }
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Calls `f` for every flow (takes shard locks one at a time).
    pub fn for_each(&self, mut f: impl FnMut(&FlowKey, &Flow)) {
        for shard in self.shards.iter() {
            let guard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for slot in guard.chunks.iter().flatten() {
                if slot.key.proto != FREE {
                    f(&slot.key, &slot.flow);
                }
            }
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

    fn any_addr() -> impl proptest::strategy::Strategy<Value = IpAddr> {
        use proptest::prelude::*;
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
            // The v4-mapped range, where a v4 address and its mapped v6 meet.
            any::<[u8; 4]>()
                .prop_map(|b| IpAddr::V6(core::net::Ipv4Addr::from(b).to_ipv6_mapped())),
        ]
    }

    /// The mapped IPv6 form's bytes: the order and equality a key must keep.
    fn mapped_octets(a: IpAddr) -> [u8; 16] {
        match a {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    proptest::proptest! {
        #[test]
        fn keys_order_endpoints_as_their_mapped_bytes_do(
            a in any_addr(), pa: u16, b in any_addr(), pb: u16, proto: u8,
        ) {
            let (key, a_is_low) = FlowKey::new(a, pa, b, pb, proto);
            let want_low = (mapped_octets(a), pa) <= (mapped_octets(b), pb);
            proptest::prop_assert_eq!(a_is_low, want_low);
            let (back, b_is_low) = FlowKey::new(b, pb, a, pa, proto);
            proptest::prop_assert_eq!(key, back);
            proptest::prop_assert_eq!(b_is_low, !a_is_low || (mapped_octets(a), pa) == (mapped_octets(b), pb));
            let ((lo, lp), (hi, hp)) = key.endpoints();
            let (low, high) = if a_is_low { ((a, pa), (b, pb)) } else { ((b, pb), (a, pa)) };
            proptest::prop_assert_eq!((mapped_octets(lo), lp), (mapped_octets(low.0), low.1));
            proptest::prop_assert_eq!((mapped_octets(hi), hp), (mapped_octets(high.0), high.1));
        }
    }

    #[test]
    fn sides_follow_the_first_sender() {
        let table = FlowTable::new(10, crate::config::Config::builtin_default().engine.timeouts);
        let (key, low) = FlowKey::new(v4("198.51.100.2"), 80, v4("192.0.2.1"), 40000, 6);
        let side = table.with_flow(key, low, 0, |f, _| f.side(low)).unwrap();
        assert_eq!(side, 0);
        let side = table.with_flow(key, !low, 1, |f, _| f.side(!low)).unwrap();
        assert_eq!(side, 1);
    }

    #[test]
    fn full_table_refuses_new_flows_until_idle_ones_expire() {
        let table = FlowTable::new(2, crate::config::Config::builtin_default().engine.timeouts);
        for port in 1..=2 {
            let (k, low) = FlowKey::new(v4("192.0.2.1"), port, v4("192.0.2.2"), 53, 17);
            assert_eq!(table.with_flow(k, low, 0, |_, l| l), Some(Lookup::Created));
        }
        let (k3, low3) = FlowKey::new(v4("192.0.2.1"), 3, v4("192.0.2.2"), 53, 17);
        assert_eq!(table.with_flow(k3, low3, 1_000_000_000, |_, l| l), None);
        assert_eq!(table.len(), 2);
        // Idle past the UDP timeout, but only an expiry removes them: a lookup does not.
        let later = 32 * 1_000_000_000;
        assert_eq!(table.with_flow(k3, low3, later, |_, l| l), None);
        assert_eq!(table.expire(later), 2);
        assert_eq!(
            table.with_flow(k3, low3, later, |_, l| l),
            Some(Lookup::Created)
        );
        assert_eq!(table.len(), 1);
    }
}
