//! Per-peer aggregates of retransmission patterns and doubtful packets: the answer
//! to "which peer has trouble, and what kind".

use crate::engine::patterns::Pattern;
use core::net::IpAddr;
use core::sync::atomic::{AtomicUsize, Ordering};
use dashmap::DashMap;

/// What one peer has shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Count per pattern, indexed like [`Pattern::ALL`].
    pub patterns: [u32; Pattern::ALL.len()],
    /// Doubtful packets accepted as benign.
    pub benign: u32,
    /// Hostile packets (dropped in enforce mode).
    pub hostile: u32,
    /// Flows on which a SACK-displacing middlebox was suspected.
    pub sack_displaced: u32,
    /// Flows on which the middlebox offset was proven exact: the peer is behind a
    /// sequence-randomizing middlebox, which is evidence for its displaced SACKs.
    pub offsets_proven: u32,
    /// First time seen, ns.
    pub first_ns: u64,
    /// Last time seen, ns.
    pub last_ns: u64,
}

impl PeerStats {
    /// Packets that carried any of the contract patterns except window updates etc.
    pub fn trouble(&self) -> u64 {
        Pattern::CONTRACT
            .iter()
            .map(|p| u64::from(self.patterns[*p as usize]))
            .sum::<u64>()
            + u64::from(self.benign)
            + u64::from(self.hostile)
    }
}

/// A bounded table of peers. When full, new peers are counted as untracked.
pub struct PeerTable {
    map: DashMap<IpAddr, PeerStats, foldhash::fast::RandomState>,
    len: AtomicUsize,
    max: usize,
    untracked: AtomicUsize,
}

impl PeerTable {
    /// An empty table for at most `max` peers.
    pub fn new(max: usize) -> PeerTable {
        PeerTable {
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            len: AtomicUsize::new(0),
            max,
            untracked: AtomicUsize::new(0),
        }
    }

    /// Applies `f` to the peer's stats, creating them if there is room.
    pub fn update(&self, peer: IpAddr, now_ns: u64, f: impl FnOnce(&mut PeerStats)) {
        if let Some(mut s) = self.map.get_mut(&peer) {
            s.last_ns = now_ns;
            f(&mut s);
            return;
        }
        if self.len.load(Ordering::Relaxed) >= self.max {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut s = self.map.entry(peer).or_insert_with(|| {
            self.len.fetch_add(1, Ordering::Relaxed);
            PeerStats {
                first_ns: now_ns,
                ..PeerStats::default()
            }
        });
        s.last_ns = now_ns;
        f(&mut s);
    }

    /// Returns true if and only if a flow of `peer` had its middlebox offset proven.
    pub fn middlebox_proven(&self, peer: IpAddr) -> bool {
        self.map.get(&peer).is_some_and(|s| s.offsets_proven > 0)
    }

    /// Peers tracked.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Returns true if and only if no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Updates refused because the table was full.
    pub fn untracked(&self) -> usize {
        self.untracked.load(Ordering::Relaxed)
    }

    /// A copy of every peer's stats, most trouble first (ties by address).
    pub fn snapshot(&self) -> Vec<(IpAddr, PeerStats)> {
        let mut v: Vec<_> = self.map.iter().map(|e| (*e.key(), *e.value())).collect();
        v.sort_by(|a, b| b.1.trouble().cmp(&a.1.trouble()).then(a.0.cmp(&b.0)));
        v
    }
}
