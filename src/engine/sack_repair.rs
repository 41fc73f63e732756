//! Exact SACK offset learning, and the repair of displaced SACK blocks.
//!
//! A sequence-randomizing middlebox shifts the server's sequence space by a constant
//! offset on the way to the client and shifts the client's ACKs back, but leaves the
//! SACK blocks in the client's space. The tracker bounds the offset to a range
//! ([`crate::engine::tracker::SackOffset`]); this module pins it exactly, so that the
//! blocks can be written back into the server's space.
//!
//! Exactness comes from segment boundaries: every SACK block starts where one of the
//! data sender's segments started and ends where one ended. Once a flow shows
//! displaced SACK, the engine remembers the boundaries of the data it sees from the
//! other side (a ring of the latest [`RING`] new segments). An offset is a candidate
//! if and only if it maps each block's left edge onto a segment start and its right
//! edge onto a segment end, inside the tracker's range; it is exact when one
//! candidate remains and two packets agreed. Repair uses only an exact offset and
//! only writes blocks that land on seen boundaries inside the window, so it never
//! claims data the client does not hold.

use crate::engine::flow::FlowKey;
use crate::engine::seq::SeqNumber;
use crate::wire::tcp_options::SackBlock;
use core::sync::atomic::{AtomicUsize, Ordering};
use dashmap::DashMap;
use std::collections::VecDeque;

/// Segments remembered per repaired flow: a window of 1024 full-sized segments.
pub const RING: usize = 1024;

/// Packets that must agree on a single candidate before the offset is exact.
const CONFIRMATIONS: u8 = 2;

/// Boundaries of the data one side sent, oldest first, in sequence order.
#[derive(Debug, Default)]
struct Boundaries {
    segments: VecDeque<(SeqNumber, SeqNumber)>,
}

impl Boundaries {
    /// Records a segment `[start, end)` if it carries new data (retransmissions repeat
    /// boundaries already held; keeping the ring in sequence order allows search).
    fn push(&mut self, start: SeqNumber, end: SeqNumber) {
        if end <= start {
            return;
        }
        if let Some(&(_, last_end)) = self.segments.back() {
            if start < last_end {
                return;
            }
        }
        if self.segments.len() == RING {
            self.segments.pop_front();
        }
        self.segments.push_back((start, end));
    }

    /// Index of the segment starting exactly at `seq`.
    fn find_start(&self, seq: SeqNumber) -> Option<usize> {
        let base = self.segments.front()?.0;
        let target = seq.distance_from(base);
        self.segments
            .binary_search_by_key(&target, |(s, _)| s.distance_from(base))
            .ok()
    }

    /// Returns true if and only if a segment ends exactly at `seq`.
    fn has_end(&self, seq: SeqNumber) -> bool {
        let Some(&(base, _)) = self.segments.front() else {
            return false;
        };
        let target = seq.distance_from(base);
        self.segments
            .binary_search_by_key(&target, |(_, e)| e.distance_from(base))
            .is_ok()
    }

    /// Starts within `[low, high]` (inclusive, serial order).
    fn starts_between(
        &self,
        low: SeqNumber,
        high: SeqNumber,
    ) -> impl Iterator<Item = SeqNumber> + '_ {
        self.segments
            .iter()
            .map(|(s, _)| *s)
            .filter(move |s| s.distance_from(low) <= high.distance_from(low))
    }
}

/// Offset learning for one flow.
#[derive(Debug)]
struct Learner {
    /// Side (0: the flow's first sender) whose data the SACK blocks describe.
    data_side: u8,
    boundaries: Boundaries,
    /// The single candidate of the latest packets, and how many agreed on it.
    candidate: Option<(u32, u8)>,
    /// The ACK of the latest loss episode (a new cumulative ACK with SACK starts one).
    episode_ack: Option<SeqNumber>,
    /// Offsets estimated from the first SACK of recent loss episodes.
    estimates: [Option<u32>; EPISODES],
    exact: Option<u32>,
    last_s: u32,
}

impl Learner {
    /// The loss-episode estimate. The first SACK after a loss names one segment
    /// received past the hole; in a bulk transfer the lost segment has the same size,
    /// so the hole is the block's length and `offset = left - ack - (right - left)`.
    /// One episode proves nothing (the lost segment may have been shorter); two
    /// episodes that agree to the byte pin the offset. Needs no view of the data.
    fn learn_from_episode(
        &mut self,
        ack: SeqNumber,
        blocks: &[SackBlock],
        low: u32,
        high: u32,
    ) -> Option<u32> {
        let [only] = blocks else {
            return None;
        };
        if self.episode_ack == Some(ack) {
            return None;
        }
        self.episode_ack = Some(ack);
        let len = only.right.distance_from(only.left);
        let estimate = only.left.distance_from(ack).wrapping_sub(len);
        let in_range = estimate.wrapping_sub(low) <= high.wrapping_sub(low);
        if !in_range || len == 0 || len > MAX_SEGMENT {
            return None;
        }
        if self.estimates.contains(&Some(estimate)) {
            return Some(estimate);
        }
        self.estimates.rotate_right(1);
        self.estimates[0] = Some(estimate);
        None
    }

    /// The boundary method: one candidate, agreed by two packets in a row.
    fn learn_from_boundaries(&mut self, blocks: &[SackBlock], low: u32, high: u32) -> Option<u32> {
        let Some(found) = single_candidate(&self.boundaries, blocks, low, high) else {
            self.candidate = None;
            return None;
        };
        let agreed = match self.candidate {
            Some((c, n)) if c == found => n.saturating_add(1),
            _ => 1,
        };
        self.candidate = Some((found, agreed));
        (agreed >= CONFIRMATIONS).then_some(found)
    }
}

/// Loss episodes whose estimates are remembered.
const EPISODES: usize = 8;

/// Largest plausible segment (a jumbo frame's payload).
const MAX_SEGMENT: u32 = 65_535;

/// Returns true if and only if every block, moved back by `off`, lies within `room`
/// of `ack` (above it, or below it for a D-SACK) and is not empty.
fn plausible(ack: SeqNumber, blocks: &[SackBlock], off: u32, room: u32) -> bool {
    blocks.iter().all(|b| {
        let (l, r) = (b.left - off, b.right - off);
        r > l && l.in_range(ack - room, ack + room) && r.in_range(ack - room, ack + room + 1)
    })
}

/// The offsets learned, per flow, for the flows that showed displaced SACK.
pub struct RepairTable {
    map: DashMap<FlowKey, Learner, foldhash::fast::RandomState>,
    len: AtomicUsize,
    max: usize,
}

/// What learning from one packet concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// Not yet exact: more packets needed (or boundaries not seen).
    Unknown,
    /// The offset is exact, and this packet's blocks land on seen boundaries with it:
    /// safe to repair.
    Exact(u32),
    /// The offset is exact, but this packet's blocks cannot be checked against seen
    /// boundaries (older than the ring): report it, do not repair.
    Unverified(u32),
}

impl RepairTable {
    /// A table for at most `max` flows.
    pub fn new(max: usize) -> RepairTable {
        RepairTable {
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            len: AtomicUsize::new(0),
            max,
        }
    }

    /// Flows being learned.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Returns true if and only if no flow is being learned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a data segment of a flow that is being learned (no-op otherwise).
    pub fn note_data(&self, key: &FlowKey, side: usize, start: SeqNumber, len: u32, now_s: u32) {
        if len == 0 {
            return;
        }
        if let Some(mut l) = self.map.get_mut(key) {
            if usize::from(l.data_side) == side {
                l.boundaries.push(start, start + len);
                l.last_s = now_s;
            }
        }
    }

    /// The exact offset of a flow, if learned.
    pub fn exact(&self, key: &FlowKey) -> Option<u32> {
        self.map.get(key).and_then(|l| l.exact)
    }

    /// Learns from one packet whose SACK blocks are displaced, sent by the side
    /// opposite `data_side` with cumulative ACK `ack`, given the tracker's offset
    /// range `[low, high]` and `room`: how far from the ACK a repaired block may lie
    /// (the window the data sender could have had in flight).
    #[allow(clippy::too_many_arguments)]
    pub fn learn(
        &self,
        key: &FlowKey,
        data_side: usize,
        ack: SeqNumber,
        blocks: &[SackBlock],
        (low, high): (u32, u32),
        room: u32,
        now_s: u32,
    ) -> Learned {
        if !self.map.contains_key(key) {
            if self.len() >= self.max {
                return Learned::Unknown;
            }
            self.map.entry(*key).or_insert_with(|| {
                self.len.fetch_add(1, Ordering::Relaxed);
                Learner {
                    data_side: data_side as u8,
                    boundaries: Boundaries::default(),
                    candidate: None,
                    episode_ack: None,
                    estimates: [None; EPISODES],
                    exact: None,
                    last_s: now_s,
                }
            });
        }
        let Some(mut l) = self.map.get_mut(key) else {
            return Learned::Unknown;
        };
        l.last_s = now_s;
        if l.exact.is_none() {
            l.exact = l
                .learn_from_episode(ack, blocks, low, high)
                .or_else(|| l.learn_from_boundaries(blocks, low, high));
        }
        match l.exact {
            None => Learned::Unknown,
            Some(off) if fits(&l.boundaries, blocks, off) || plausible(ack, blocks, off, room) => {
                Learned::Exact(off)
            }
            Some(off) => Learned::Unverified(off),
        }
    }

    /// Forgets flows idle for more than `idle_s` seconds.
    pub fn expire(&self, now_s: u32, idle_s: u32) -> usize {
        let mut removed = 0;
        self.map.retain(|_, l| {
            let keep = now_s.saturating_sub(l.last_s) <= idle_s;
            removed += usize::from(!keep);
            keep
        });
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }
}

/// Returns true if and only if `off` maps every block onto a seen segment start and
/// a seen segment end.
fn fits(b: &Boundaries, blocks: &[SackBlock], off: u32) -> bool {
    blocks
        .iter()
        .all(|blk| b.find_start(blk.left - off).is_some() && b.has_end(blk.right - off))
}

/// The one offset that maps every block onto seen boundaries within `[low, high]`.
fn single_candidate(b: &Boundaries, blocks: &[SackBlock], low: u32, high: u32) -> Option<u32> {
    let first = blocks.first()?;
    let mut found = None;
    // Starts s with left - s in [low, high], i.e. s in [left - high, left - low].
    for start in b.starts_between(first.left - high, first.left - low) {
        let off = first.left.distance_from(start);
        if fits(b, blocks, off) {
            if found.is_some_and(|f| f != off) {
                return None;
            }
            found = Some(off);
        }
    }
    found
}

/// Rewrites the SACK blocks of the TCP segment in `packet` (starting at its IP
/// header) by subtracting `offset`, fixing the TCP checksum incrementally
/// (RFC 1624). Returns the number of blocks rewritten (0: packet unchanged).
pub fn rewrite_sack_blocks(packet: &mut [u8], offset: u32) -> usize {
    let Some((tcp_at, header_len)) = tcp_header_at(packet) else {
        return 0;
    };
    let opts = tcp_at + 20..tcp_at + header_len;
    let Some(sack_at) = find_sack_option(&packet[opts.clone()]).map(|o| o + opts.start) else {
        return 0;
    };
    let len = usize::from(packet[sack_at + 1]);
    let mut checksum = u16::from_be_bytes([packet[tcp_at + 16], packet[tcp_at + 17]]);
    let mut n = 0;
    let mut at = sack_at + 2;
    while at + 4 <= sack_at + len {
        let old = u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]]);
        let new = old.wrapping_sub(offset);
        packet[at..at + 4].copy_from_slice(&new.to_be_bytes());
        checksum = checksum_replace(checksum, (old >> 16) as u16, (new >> 16) as u16);
        checksum = checksum_replace(checksum, old as u16, new as u16);
        at += 4;
        n += 1;
    }
    packet[tcp_at + 16..tcp_at + 18].copy_from_slice(&checksum.to_be_bytes());
    n / 2
}

/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`.
fn checksum_replace(checksum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Offset and length of the TCP header in a raw IP packet, if it is unfragmented TCP.
fn tcp_header_at(packet: &[u8]) -> Option<(usize, usize)> {
    let p = crate::wire::parse_ip(packet, packet.len()).ok()?;
    if p.fragment.is_some() {
        return None;
    }
    let crate::wire::Transport::Tcp(t) = p.transport else {
        return None;
    };
    let payload_at = t.payload.as_ptr() as usize - packet.as_ptr() as usize;
    let header_len = usize::from(t.header_len);
    Some((payload_at.checked_sub(header_len)?, header_len))
}

/// Position of a well-formed SACK option within the option bytes.
fn find_sack_option(opts: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at < opts.len() {
        match opts[at] {
            0 => return None,
            1 => at += 1,
            kind => {
                let len = usize::from(*opts.get(at + 1)?);
                if len < 2 || at + len > opts.len() {
                    return None;
                }
                if kind == 5 && len >= 10 && (len - 2) % 8 == 0 {
                    return Some(at);
                }
                at += len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(starts: &[u32], size: u32) -> Boundaries {
        let mut b = Boundaries::default();
        for s in starts {
            b.push(SeqNumber(*s), SeqNumber(s.wrapping_add(size)));
        }
        b
    }

    fn block(l: u32, r: u32) -> SackBlock {
        SackBlock {
            left: SeqNumber(l),
            right: SeqNumber(r),
        }
    }

    #[test]
    fn one_offset_maps_both_edges_onto_boundaries() {
        let starts: Vec<u32> = (0..50).map(|i| 1000 + i * 1448).collect();
        let b = ring(&starts, 1448);
        let off = 0x4000_0000u32;
        // Holds segments 7..=9 (segment 6 lost): edges in the shifted space. The
        // tracker's range is narrower than a segment (one segment lost), so only one
        // offset puts the edges on boundaries.
        let blk = block(
            (1000 + 7 * 1448u32).wrapping_add(off),
            (1000 + 10 * 1448u32).wrapping_add(off),
        );
        assert_eq!(
            single_candidate(&b, &[blk], off - 10, off + 1447),
            Some(off)
        );
        // A right edge in the middle of a segment fits no offset: no answer.
        let ragged = block(blk.left.0, (blk.right + 5).0);
        assert_eq!(single_candidate(&b, &[ragged], off - 10, off + 1447), None);
    }

    #[test]
    fn uniform_segments_leave_several_candidates_in_a_wide_range() {
        let starts: Vec<u32> = (0..50).map(|i| 1000 + i * 1448).collect();
        let b = ring(&starts, 1448);
        let off = 777_777u32;
        let blk = block(1000 + 7 * 1448 + off, 1000 + 10 * 1448 + off);
        // A range three segments wide admits three offsets: no answer.
        assert_eq!(single_candidate(&b, &[blk], off - 2 * 1448, off + 10), None);
    }

    #[test]
    fn learning_needs_two_agreeing_packets() {
        let t = RepairTable::new(8);
        let key = FlowKey::new(
            "192.0.2.1".parse().unwrap(),
            1,
            "192.0.2.2".parse().unwrap(),
            80,
            6,
        )
        .0;
        let off = 123_456u32;
        let blk = [block(1000 + 3 * 1000 + off, 1000 + 5 * 1000 + off)];
        assert_eq!(
            t.learn(&key, 1, SeqNumber(3000), &blk, (off - 100, off + 100), 0, 0),
            Learned::Unknown
        );
        for i in 0..10u32 {
            t.note_data(&key, 1, SeqNumber(1000 + i * 1000), 1000, 0);
        }
        // Data from the SACK sender's side is not the data the blocks describe.
        t.note_data(&key, 0, SeqNumber(5), 99_999, 0);
        assert_eq!(
            t.learn(&key, 1, SeqNumber(3000), &blk, (off - 100, off + 100), 0, 0),
            Learned::Unknown
        );
        assert_eq!(
            t.learn(&key, 1, SeqNumber(3000), &blk, (off - 100, off + 100), 0, 0),
            Learned::Exact(off)
        );
        assert_eq!(t.exact(&key), Some(off));
    }

    fn key() -> FlowKey {
        FlowKey::new(
            "192.0.2.1".parse().unwrap(),
            1,
            "192.0.2.2".parse().unwrap(),
            80,
            6,
        )
        .0
    }

    #[test]
    fn two_loss_episodes_that_agree_pin_the_offset_without_seeing_data() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 0xdead_0000u32;
        let range = (off - 5000, off + 5000);
        let room = 64 * 1024;
        // Episode 1: the segment at 10_000 (1448 bytes) is lost; the first SACK names
        // the next one, in the client's shifted space.
        let first = |hole: u32| [block(hole + 1448 + off, hole + 2896 + off)];
        assert_eq!(
            t.learn(&key, 1, SeqNumber(10_000), &first(10_000), range, room, 0),
            Learned::Unknown
        );
        // Later SACKs of the same episode (same ACK) add nothing.
        let grown = [block(11_448 + off, 14_344 + off)];
        assert_eq!(
            t.learn(&key, 1, SeqNumber(10_000), &grown, range, room, 0),
            Learned::Unknown
        );
        // Episode 2, the same shape elsewhere: the estimates agree.
        assert_eq!(
            t.learn(&key, 1, SeqNumber(50_000), &first(50_000), range, room, 0),
            Learned::Exact(off)
        );
        // From then on, plausible blocks are repairable; a block far outside is not.
        let far = [block(900_000 + off, 901_000 + off)];
        assert_eq!(
            t.learn(&key, 1, SeqNumber(60_000), &far, range, room, 0),
            Learned::Unverified(off)
        );
    }

    #[test]
    fn episodes_that_disagree_pin_nothing_until_two_agree() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 77_000u32;
        let range = (off - 5000, off + 5000);
        // The first lost segment was short (500 bytes): its estimate is off by 948.
        let ep1 = [block(10_500 + off, 11_948 + off)];
        assert_eq!(
            t.learn(&key, 1, SeqNumber(10_000), &ep1, range, 65535, 0),
            Learned::Unknown
        );
        let ep2 = [block(21_448 + off, 22_896 + off)];
        assert_eq!(
            t.learn(&key, 1, SeqNumber(20_000), &ep2, range, 65535, 0),
            Learned::Unknown
        );
        let ep3 = [block(31_448 + off, 32_896 + off)];
        assert_eq!(
            t.learn(&key, 1, SeqNumber(30_000), &ep3, range, 65535, 0),
            Learned::Exact(off)
        );
    }

    #[test]
    fn retransmissions_do_not_disturb_the_ring_order() {
        let mut b = ring(&[100, 200, 300], 100);
        b.push(SeqNumber(200), SeqNumber(300));
        assert_eq!(b.find_start(SeqNumber(300)), Some(2));
        assert!(b.has_end(SeqNumber(400)));
    }

    #[test]
    fn rewrite_fixes_blocks_and_checksum() {
        let sack = etherparse::TcpOptionElement::SelectiveAcknowledgement(
            (5000 + 1_000_000, 6000 + 1_000_000),
            [Some((7000 + 1_000_000, 8000 + 1_000_000)), None, None],
        );
        let mut pkt = Vec::new();
        etherparse::PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .tcp(40000, 80, 1, 100)
            .ack(4000)
            .options(&[
                etherparse::TcpOptionElement::Noop,
                etherparse::TcpOptionElement::Noop,
                sack,
            ])
            .unwrap()
            .write(&mut pkt, &[])
            .unwrap();
        assert_eq!(rewrite_sack_blocks(&mut pkt, 1_000_000), 2);
        let p = crate::wire::parse_ip(&pkt, pkt.len()).unwrap();
        let crate::wire::Transport::Tcp(t) = p.transport else {
            panic!()
        };
        let blocks = t.options.unwrap().sack;
        assert_eq!(blocks.as_slice(), &[block(5000, 6000), block(7000, 8000)]);
        // The incrementally fixed checksum equals a full recomputation.
        let tcp = etherparse::TcpSlice::from_slice(&pkt[20..]).unwrap();
        let want = tcp
            .calc_checksum_ipv4([192, 0, 2, 1], [192, 0, 2, 2])
            .unwrap();
        assert_eq!(tcp.checksum(), want);
    }

    #[test]
    fn packets_without_sack_are_untouched() {
        let mut pkt = Vec::new();
        etherparse::PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .tcp(40000, 80, 1, 100)
            .ack(4000)
            .write(&mut pkt, &[])
            .unwrap();
        let before = pkt.clone();
        assert_eq!(rewrite_sack_blocks(&mut pkt, 5), 0);
        assert_eq!(pkt, before);
        assert_eq!(rewrite_sack_blocks(&mut [0x45, 0], 5), 0);
    }
}
