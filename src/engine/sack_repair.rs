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
//!
//! Live, the boundaries come from the shadow feed, a batch late: the newest segments
//! may be missing when a SACK naming them is judged, so a lone candidate proves
//! nothing there. Each loss episode bounds the offset instead:
//!
//! - from above, by its hole: the hole starts at the cumulative ACK, on a segment the
//!   feed showed, so the block's left edge less that segment's end is at least the
//!   offset (equal when the hole is that one segment);
//! - from below, by the fill: the first ACK without SACK past the hole is at or past
//!   everything the client holds, so the first block's right edge less it is at most
//!   the offset;
//! - from below, by what was sent: the feed's copy of a SACK-bearing ACK comes after
//!   every segment the server sent before the ACK arrived (one NFLOG group, in hook
//!   order), so a block's right edge less the newest segment's end is at most the
//!   offset. When the server's window is full and it stops sending, the client's last
//!   dupack makes this bound exact, before the hole is filled.
//!
//! Bounds that meet in one episode are the offset. Blocks are repaired only when both
//! edges land on fed boundaries.

use crate::engine::flow::FlowKey;
use crate::engine::seq::SeqNumber;
use crate::wire::tcp_options::SackBlock;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use dashmap::DashMap;
use std::collections::VecDeque;

/// Segments remembered per repaired flow: a window of 1024 full-sized segments.
pub const RING: usize = 1024;

/// Seconds a watched flow that never showed displaced SACK is kept while idle.
pub const WATCH_IDLE_S: u32 = 10;

/// Packets that must agree on a single candidate before the offset is exact.
const CONFIRMATIONS: u8 = 2;

/// Boundaries of the data one side sent, oldest first, in sequence order.
///
/// Seen at the sender's host (the shadow feed), TCP's segments are GSO packets: one
/// `[start, end)` holds several wire segments of `unit` bytes (the last may be
/// shorter), and a SACK block's edges fall on that grid. Without a unit every
/// recorded segment is one wire segment (a capture of the wire).
#[derive(Debug, Default)]
struct Boundaries {
    segments: VecDeque<(SeqNumber, SeqNumber)>,
    unit: Option<u32>,
    /// The first wire segment of the latest retransmission: the segment a loss
    /// episode's hole starts with, even when it was first sent before the ring began.
    resent: Option<(SeqNumber, SeqNumber)>,
}

impl Boundaries {
    /// Records a segment `[start, end)` if it carries new data (retransmissions repeat
    /// boundaries already held; keeping the ring in sequence order allows search).
    /// Returns true if and only if the segment was new data (it moved the top).
    fn push(&mut self, start: SeqNumber, end: SeqNumber) -> bool {
        if end <= start {
            return false;
        }
        if let Some(&(_, last_end)) = self.segments.back() {
            if start < last_end {
                let first = end.distance_from(start).min(self.unit.unwrap_or(u32::MAX));
                self.resent = Some((start, start + first));
                return false;
            }
        }
        if self.segments.len() == RING {
            self.segments.pop_front();
        }
        self.segments.push_back((start, end));
        true
    }

    /// The end of the newest data recorded: everything the data sender had sent when
    /// that segment was recorded.
    fn top(&self) -> Option<SeqNumber> {
        self.segments.back().map(|&(_, e)| e)
    }

    /// The recorded segment holding `seq` (`start <= seq < end`), or, with `at_end`,
    /// the one ending at or after it (`start < seq <= end`).
    fn holding(&self, seq: SeqNumber, at_end: bool) -> Option<(SeqNumber, SeqNumber)> {
        let base = self.segments.front()?.0;
        let target = seq.distance_from(base);
        let i = self.segments.partition_point(|(s, _)| {
            s.distance_from(base) < target.saturating_add(u32::from(!at_end))
        });
        let &(start, end) = self.segments.get(i.checked_sub(1)?)?;
        let (s, e) = (start.distance_from(base), end.distance_from(base));
        let inside = if at_end {
            s < target && target <= e
        } else {
            s <= target && target < e
        };
        inside.then_some((start, end))
    }

    /// The wire segment starting exactly at `seq`, as `[seq, end)`.
    fn wire_segment_at(&self, seq: SeqNumber) -> Option<(SeqNumber, SeqNumber)> {
        let resent = self.resent.filter(|&(s, _)| s == seq);
        let Some((start, end)) = self.holding(seq, false) else {
            return resent;
        };
        let into = seq.distance_from(start);
        match self.unit {
            None if into == 0 => Some((start, end)),
            Some(u) if u > 0 && into % u == 0 => {
                let rest = end.distance_from(seq);
                Some((seq, seq + rest.min(u)))
            }
            _ => resent,
        }
    }

    /// Returns true if and only if a wire segment ends exactly at `seq`.
    fn has_end(&self, seq: SeqNumber) -> bool {
        let Some((start, end)) = self.holding(seq, true) else {
            return false;
        };
        seq == end
            || self
                .unit
                .is_some_and(|u| u > 0 && seq.distance_from(start) % u == 0)
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
    /// The first block's left edge when the episode started.
    episode_left: Option<SeqNumber>,
    /// Whether this episode's gap was counted already.
    episode_counted: bool,
    /// The first block's right edge in the latest SACK of the episode.
    last_right: Option<SeqNumber>,
    /// Growths of that edge between two ACKs of an episode: segments arriving.
    growths: Tally,
    /// Episode gaps (`left - ack`): offset plus hole.
    gaps: Tally,
    /// Whether the boundaries come from the shadow feed, which delivers a batch late.
    lagging: bool,
    /// Episodes whose hole segment the feed had not shown yet when they were counted:
    /// with the offset range then, voted once it arrives.
    pending: [Option<(Episode, u32, u32)>; PENDING],
    /// The current episode's hole vote, once known: an upper bound on the offset.
    episode_hole: Option<u32>,
    /// The current episode's fill vote: the first block's right edge less the first
    /// cumulative ACK past the hole that carried no SACK (the client then held
    /// everything below it), a lower bound on the offset.
    episode_fill: Option<u32>,
    /// The feed's loss count when the ring's top was recorded: a ceiling needs the
    /// feed complete from there to the ACK.
    top_epoch: u32,
    /// The tightest sent-ceiling bound of the latest ACK judged from the feed, with
    /// that ACK: a lower bound on the offset (see [`Learner::note_ceiling`]).
    ceiling: Option<(SeqNumber, u32)>,
    /// Whether the flow showed displaced SACK (else it is only watched).
    displaced: bool,
    /// Whether `exact` came from segment boundaries or from an episode whose bounds
    /// met (then episodes do not revoke it).
    by_boundaries: bool,
    exact: Option<u32>,
    last_s: u32,
}

impl Learner {
    /// The loss-episode method, which needs no view of the data.
    ///
    /// A loss episode is a run of SACK-bearing ACKs with one cumulative ACK, the first
    /// block's left edge fixed at the end of the hole and its right edge growing as
    /// segments arrive. Its *gap* `left - ack` is the offset plus the hole; each growth
    /// of the right edge is a segment (or a few) that arrived. With rare, independent
    /// loss, most holes are one full segment and most growths are one full segment, so
    /// `offset = most common gap - most common growth`. Short segments (the tail of a
    /// write) and double losses produce other values; the offset is taken only when
    /// both modes dominate (seen at least [`MODE_MIN`] times and twice as often as
    /// the runner-up), because an offset wrong by a few bytes would make repaired
    /// blocks claim data the client lacks.
    fn learn_from_episode(&mut self, ack: SeqNumber, blocks: &[SackBlock], low: u32, high: u32) {
        let [first, ..] = blocks else {
            return;
        };
        if self.episode_ack != Some(ack) {
            let refilled = self.episode_counted
                && self.episode_left == Some(first.left)
                && self.episode_ack.is_some_and(|old| ack > old);
            if refilled {
                // Part of the hole was retransmitted: the ACK moved, the block did not.
                // The block is still above the ACK, so the rest of the hole is one
                // more episode, counted at once; its last part is one segment, where
                // the hole vote is the offset.
                self.episode_ack = Some(ack);
                self.last_right = match self.last_right {
                    Some(r) if r > first.right => Some(r),
                    _ => Some(first.right),
                };
                self.episode_hole = None;
                self.episode_fill = None;
                let episode = (ack, first.left, self.last_right.unwrap_or(first.right));
                self.vote_or_wait(episode, low, high);
                return;
            }
            // A new cumulative ACK: perhaps a new episode, perhaps a lone D-SACK (a
            // duplicate below the ACK, RFC 2883). Only a second ACK waiting at the
            // same hole, with the block's left edge unchanged and its right edge grown,
            // proves a hole at `left`: then the gap counts.
            self.episode_ack = Some(ack);
            self.episode_left = Some(first.left);
            self.episode_counted = false;
            self.last_right = Some(first.right);
            self.episode_hole = None;
            self.episode_fill = None;
            return;
        }
        let Some(prev) = self.last_right else {
            return;
        };
        let grown = first.right.distance_from(prev);
        if grown == 0 || grown > MAX_SEGMENT || self.episode_left != Some(first.left) {
            return;
        }
        self.last_right = Some(first.right);
        self.growths.add(grown);
        if !self.episode_counted {
            self.episode_counted = true;
            self.gaps.add(first.left.distance_from(ack));
            // The hole starts at the ACK, on a segment the data sender sent; the
            // server's segments in the ring say where that segment ends, so the hole
            // needs no guess at the segment size (under GRO or delayed ACKs the block
            // grows by several segments at a time, and a growth is no segment).
            self.vote_or_wait((ack, first.left, first.right), low, high);
        }
        if self.by_boundaries {
            return;
        }
        if self.lagging || !self.boundaries.segments.is_empty() {
            // The data sender's segments are in view: only bounds that meet prove
            // (votes would be a guess: with loss in bursts most holes are several
            // segments, and agreeing votes were one segment high in the lab).
            return;
        }
        self.exact = match (self.gaps.dominant(), self.growths.dominant()) {
            (Some(gap), Some(segment)) => {
                let off = gap.wrapping_sub(segment);
                (off.wrapping_sub(low) <= high.wrapping_sub(low)).then_some(off)
            }
            _ => None,
        };
    }

    fn vote_or_wait(&mut self, episode: Episode, low: u32, high: u32) {
        if !self.vote_hole(episode, low, high) {
            if let Some(slot) = self.pending.iter_mut().find(|p| p.is_none()) {
                *slot = Some((episode, low, high));
            }
        }
    }

    /// Votes for the offset that makes the hole at `ack` the one segment starting
    /// there, if the ring holds that segment; returns false if the ring has not
    /// reached it yet (the vote is worth waiting for).
    fn vote_hole(&mut self, (ack, left, right): Episode, low: u32, high: u32) -> bool {
        let Some(top) = self.boundaries.segments.back().map(|&(_, e)| e) else {
            return false;
        };
        if top <= ack {
            return false;
        }
        let Some((_, end)) = self.boundaries.wire_segment_at(ack) else {
            // Sent before the ring began, perhaps: its retransmission, while the
            // episode lasts, will show it.
            return self.episode_ack != Some(ack);
        };
        let off = left.distance_from(end);
        if off.wrapping_sub(low) > high.wrapping_sub(low) {
            return true;
        }
        // The block's right edge must land on a segment end too (a wrong unit or a
        // resegmenting path fails here); wait while the feed has not reached it.
        let r = right - off;
        if r > top {
            return false;
        }
        if self.boundaries.has_end(r) && self.episode_ack == Some(ack) {
            self.episode_hole = Some(off);
            self.bounds_meet();
        }
        true
    }

    /// The ACK `ack`, without SACK, from the side that sent the displaced blocks: the
    /// hole of the current episode is filled if it lies past it.
    ///
    /// With no SACK block the client holds everything below `ack`, so the first
    /// block's right edge, moved back by the offset, is at most `ack`:
    /// `offset >= right - ack`. The hole vote is at least the offset (the hole is the
    /// segment at the old ACK or more). When the two bounds meet, the offset is
    /// proven by this one episode, whatever the size of the hole or of the segments.
    fn note_fill(&mut self, ack: SeqNumber, low: u32, high: u32) {
        let (Some(old), Some(right)) = (self.episode_ack, self.last_right) else {
            return;
        };
        if !self.episode_counted || self.episode_fill.is_some() || ack <= old {
            return;
        }
        let fill = right.distance_from(ack);
        if fill.wrapping_sub(low) <= high.wrapping_sub(low) {
            self.episode_fill = Some(fill);
            self.bounds_meet();
        }
    }

    /// A SACK-bearing ACK `ack` from the side that sends the displaced blocks, seen in
    /// the shadow feed in its order with the data sender's segments, given the
    /// tracker's offset range and the feed's loss count `epoch`.
    ///
    /// The client can SACK only data the server sent before the ACK reached this
    /// host, and the feed showed every such segment before this ACK (one NFLOG group,
    /// logged in hook order, no loss since the ring's top was recorded). So each block
    /// moved back by the offset ends at or below the ring's top:
    /// `offset >= right - top`. In a loss episode the server stops sending once its
    /// window is full, and the client's last dupack SACKs the last segment sent: the
    /// bound is then the offset, and it meets the hole vote (an upper bound) before
    /// the hole is filled. That proves the offset without waiting for the fill.
    fn note_ceiling(
        &mut self,
        ack: SeqNumber,
        blocks: &[SackBlock],
        (low, high): (u32, u32),
        epoch: u32,
    ) {
        let Some(top) = self.boundaries.top() else {
            return;
        };
        if !self.lagging || self.top_epoch != epoch {
            return;
        }
        let bound = blocks
            .iter()
            .map(|b| b.right.distance_from(top))
            .filter(|off| off.wrapping_sub(low) <= high.wrapping_sub(low))
            .max_by_key(|off| off.wrapping_sub(low));
        let Some(bound) = bound else {
            return;
        };
        self.ceiling = match self.ceiling {
            Some((a, old)) if a == ack && old.wrapping_sub(low) >= bound.wrapping_sub(low) => {
                Some((a, old))
            }
            _ => Some((ack, bound)),
        };
        self.bounds_meet();
    }

    fn bounds_meet(&mut self) {
        let Some(hole) = self.episode_hole else {
            return;
        };
        let by_fill = self.episode_fill == Some(hole);
        let by_ceiling = self
            .ceiling
            .is_some_and(|(ack, c)| Some(ack) == self.episode_ack && c == hole);
        if (by_fill || by_ceiling) && !self.by_boundaries {
            self.exact = Some(hole);
            self.by_boundaries = true;
        }
    }

    /// Votes the pending episodes whose hole segment has arrived.
    fn vote_pending(&mut self) {
        for i in 0..PENDING {
            if let Some((episode, low, high)) = self.pending[i] {
                if self.vote_hole(episode, low, high) {
                    self.pending[i] = None;
                }
            }
        }
    }

    /// The boundary method: one candidate, agreed by two packets in a row.
    fn learn_from_boundaries(
        &mut self,
        ack: SeqNumber,
        blocks: &[SackBlock],
        low: u32,
        high: u32,
    ) -> Option<u32> {
        let Some(found) = single_candidate(&self.boundaries, ack, blocks, low, high) else {
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

/// A counted loss episode: its cumulative ACK and its first block's edges.
type Episode = (SeqNumber, SeqNumber, SeqNumber);

/// Loss episodes that can wait for the feed to show their hole.
const PENDING: usize = 4;

/// Times the most common value must have been seen before it is trusted.
const MODE_MIN: u16 = 3;

/// Counts of a few distinct values, to find the most common one. Fixed size: when
/// full, a new value replaces the rarest.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    values: [(u32, u16); 8],
}

impl Tally {
    fn add(&mut self, v: u32) {
        if let Some(slot) = self.values.iter_mut().find(|(x, n)| *n > 0 && *x == v) {
            slot.1 = slot.1.saturating_add(1);
            return;
        }
        let rarest = self
            .values
            .iter_mut()
            .min_by_key(|(_, n)| *n)
            .expect("eight slots");
        *rarest = (v, 1);
    }

    /// The most common value, if seen [`MODE_MIN`] times and at least twice as often
    /// as any other.
    fn dominant(&self) -> Option<u32> {
        let min = MODE_MIN;
        let mut sorted = self.values;
        sorted.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let (top, runner_up) = (sorted[0], sorted[1]);
        (top.1 >= min && top.1 >= 2 * runner_up.1.max(1)).then_some(top.0)
    }
}

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
    /// Shadow-feed losses so far ([`RepairTable::feed_lost`]).
    epoch: AtomicU32,
}

/// What learning from one packet concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// Not yet exact: more packets needed (or boundaries not seen).
    Unknown,
    /// The offset is exact, and this packet's blocks land on seen boundaries with it:
    /// safe to repair.
    Exact(u32),
    /// The offset is exact and this packet's blocks, moved back by it, lie within the
    /// window, but not (yet) on boundaries the feed showed: the displacement agrees
    /// with the flow's, but the blocks are not repaired.
    Plausible(u32),
    /// The offset is exact, but this packet's blocks moved back by it are not where
    /// the data sender's data could be (outside the window, or older than the ring):
    /// report it, do not repair.
    Unverified(u32),
}

impl RepairTable {
    /// A table for at most `max` flows.
    pub fn new(max: usize) -> RepairTable {
        RepairTable {
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            len: AtomicUsize::new(0),
            max,
            epoch: AtomicU32::new(0),
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

    /// The learner of `key`, without touching the map while it is empty: most flows
    /// pass here on every segment, and almost none is being learned.
    fn learner_mut(
        &self,
        key: &FlowKey,
    ) -> Option<dashmap::mapref::one::RefMut<'_, FlowKey, Learner>> {
        if self.is_empty() {
            return None;
        }
        self.map.get_mut(key)
    }

    /// Records a data segment of a flow that is being learned (no-op otherwise);
    /// `lagging`: it came from the shadow feed, which delivers a batch late.
    ///
    /// `unit`, when known, is the data sender's wire segment size (its GSO size): the
    /// feed shows GSO packets of several segments each.
    pub fn note_data(
        &self,
        key: &FlowKey,
        side: usize,
        (start, len, unit): (SeqNumber, u32, Option<u32>),
        lagging: bool,
        now_s: u32,
    ) {
        if len == 0 {
            return;
        }
        if let Some(mut l) = self.learner_mut(key) {
            if usize::from(l.data_side) == side {
                if l.boundaries.push(start, start + len) {
                    l.top_epoch = self.epoch.load(Ordering::Relaxed);
                }
                if unit.is_some() {
                    l.boundaries.unit = unit;
                }
                l.lagging |= lagging;
                l.last_s = now_s;
                if l.pending.iter().any(Option::is_some) {
                    l.vote_pending();
                }
            }
        }
    }

    /// Records an ACK without SACK blocks from `side`, the side that sends the
    /// displaced blocks of a flow being learned (no-op otherwise), given the tracker's
    /// offset range.
    pub fn note_ack(&self, key: &FlowKey, side: usize, ack: SeqNumber, (low, high): (u32, u32)) {
        if let Some(mut l) = self.learner_mut(key) {
            if usize::from(l.data_side) != side {
                l.note_fill(ack, low, high);
            }
        }
    }

    /// The shadow feed lost messages: a ring's top recorded before now may be stale,
    /// so no ceiling bound uses it (see [`Learner::note_ceiling`]).
    pub fn feed_lost(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a SACK-bearing ACK from `side` (the side that sends the displaced
    /// blocks of a flow being learned; no-op otherwise) as the shadow feed showed it,
    /// in order with the data sender's segments, given the tracker's offset range.
    pub fn note_fed_sack(
        &self,
        key: &FlowKey,
        side: usize,
        ack: SeqNumber,
        blocks: &[SackBlock],
        range: (u32, u32),
    ) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        if let Some(mut l) = self.learner_mut(key) {
            if usize::from(l.data_side) != side {
                l.note_ceiling(ack, blocks, range, epoch);
            }
        }
    }

    /// The exact offset of a flow, if learned.
    pub fn exact(&self, key: &FlowKey) -> Option<u32> {
        if self.is_empty() {
            return None;
        }
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
        let watched_other_side = self
            .map
            .get(key)
            .is_some_and(|l| usize::from(l.data_side) != data_side);
        if watched_other_side {
            // Watched from its SYN for the responder's data, but the blocks describe
            // the initiator's: start again on the right side.
            self.map.insert(*key, self.learner(data_side, now_s));
        }
        if !self.map.contains_key(key) {
            if self.len() >= self.max {
                return Learned::Unknown;
            }
            self.map.entry(*key).or_insert_with(|| {
                self.len.fetch_add(1, Ordering::Relaxed);
                self.learner(data_side, now_s)
            });
        }
        let Some(mut l) = self.map.get_mut(key) else {
            return Learned::Unknown;
        };
        l.last_s = now_s;
        l.displaced = true;
        l.learn_from_episode(ack, blocks, low, high);
        // A ring that lags may lack the segments at a block's edges while a wrong
        // offset a whole number of segments lower finds older ones: a lone candidate
        // proves nothing there.
        if l.exact.is_none() && !l.lagging {
            if let Some(off) = l.learn_from_boundaries(ack, blocks, low, high) {
                l.exact = Some(off);
                l.by_boundaries = true;
            }
        }
        let seen = l.exact.is_some_and(|off| fits(&l.boundaries, blocks, off));
        match l.exact {
            None => Learned::Unknown,
            // With the data sender's segments fed, a block is repaired only when both
            // its edges land on data the feed showed sent, within the offered window.
            Some(off) if l.lagging => match (seen, plausible(ack, blocks, off, room)) {
                (true, true) => Learned::Exact(off),
                (false, true) => Learned::Plausible(off),
                _ => Learned::Unverified(off),
            },
            Some(off) if seen || plausible(ack, blocks, off, room) => Learned::Exact(off),
            Some(off) => Learned::Unverified(off),
        }
    }

    /// Starts recording the boundaries of `data_side`'s data of a flow that has just
    /// opened (its SYN judged for a repairing service), before any SACK: the first
    /// loss episode's hole and the last segment sent before it are then in the ring,
    /// and the episode can prove the offset before the server's retransmission
    /// timeout. Watching takes at most half the table, and a watched flow that shows
    /// no displaced SACK is forgotten after [`WATCH_IDLE_S`] idle (a SYN flood fills
    /// only the watched half, for that long).
    /// Returns true if and only if the flow has a learner now.
    pub fn watch(&self, key: &FlowKey, data_side: usize, now_s: u32) -> bool {
        if self.map.contains_key(key) {
            return true;
        }
        if self.len() >= self.max / 2 {
            return false;
        }
        self.map.entry(*key).or_insert_with(|| {
            self.len.fetch_add(1, Ordering::Relaxed);
            self.learner(data_side, now_s)
        });
        true
    }

    fn learner(&self, data_side: usize, now_s: u32) -> Learner {
        Learner {
            data_side: data_side as u8,
            boundaries: Boundaries::default(),
            candidate: None,
            episode_ack: None,
            episode_left: None,
            episode_counted: false,
            last_right: None,
            growths: Tally::default(),
            gaps: Tally::default(),
            episode_hole: None,
            episode_fill: None,
            lagging: false,
            pending: [None; PENDING],
            top_epoch: self.epoch.load(Ordering::Relaxed),
            ceiling: None,
            displaced: false,
            by_boundaries: false,
            exact: None,
            last_s: now_s,
        }
    }

    /// Forgets flows idle for more than `idle_s` seconds, and watched flows that
    /// never showed displaced SACK idle for more than [`WATCH_IDLE_S`].
    pub fn expire(&self, now_s: u32, idle_s: u32) -> usize {
        let mut removed = 0;
        self.map.retain(|_, l| {
            let idle = if l.displaced {
                idle_s
            } else {
                idle_s.min(WATCH_IDLE_S)
            };
            let keep = now_s.saturating_sub(l.last_s) <= idle;
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
        .all(|blk| b.wire_segment_at(blk.left - off).is_some() && b.has_end(blk.right - off))
}

/// The one offset that maps every block onto seen boundaries within `[low, high]`.
///
/// The first block is taken to lie above the cumulative ACK (a D-SACK below it fits
/// no candidate and teaches nothing): its start must be a segment start after `ack`.
/// That excludes the offsets a whole number of segments too large; the right edge on
/// a segment end seen, within `low`, excludes those too small.
fn single_candidate(
    b: &Boundaries,
    ack: SeqNumber,
    blocks: &[SackBlock],
    low: u32,
    high: u32,
) -> Option<u32> {
    let first = blocks.first()?;
    let mut found = None;
    // Starts s with left - s in [low, high], i.e. s in [left - high, left - low].
    for start in b.starts_between(first.left - high, first.left - low) {
        if start <= ack {
            continue;
        }
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
    rewrite_located(packet, tcp_at, sack_at, offset)
}

/// [`rewrite_sack_blocks`] for a packet whose TCP header and SACK option were already
/// located (at `tcp_at` and `sack_at`, by the engine's one parse). Returns 0 and
/// leaves the packet alone if the positions do not hold a SACK option.
pub fn rewrite_located(packet: &mut [u8], tcp_at: usize, sack_at: usize, offset: u32) -> usize {
    if packet.len() < tcp_at + 20 || packet.len() < sack_at + 2 || packet[sack_at] != 5 {
        return 0;
    }
    let len = usize::from(packet[sack_at + 1]);
    if sack_at + len > packet.len() {
        return 0;
    }
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
pub fn find_sack_option(opts: &[u8]) -> Option<usize> {
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
            single_candidate(&b, SeqNumber(1000 + 6 * 1448), &[blk], off - 10, off + 1447),
            Some(off)
        );
        // A right edge in the middle of a segment fits no offset: no answer.
        let ragged = block(blk.left.0, (blk.right + 5).0);
        assert_eq!(
            single_candidate(
                &b,
                SeqNumber(1000 + 6 * 1448),
                &[ragged],
                off - 10,
                off + 1447
            ),
            None
        );
    }

    #[test]
    fn uniform_segments_leave_several_candidates_in_a_wide_range() {
        let starts: Vec<u32> = (0..50).map(|i| 1000 + i * 1448).collect();
        let b = ring(&starts, 1448);
        let off = 777_777u32;
        let blk = block(1000 + 7 * 1448 + off, 1000 + 10 * 1448 + off);
        // A range three segments wide admits three offsets: no answer.
        assert_eq!(
            single_candidate(&b, SeqNumber(1000), &[blk], off - 2 * 1448, off + 10),
            None
        );
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
            t.note_data(&key, 1, (SeqNumber(1000 + i * 1000), 1000, None), false, 0);
        }
        // Data from the SACK sender's side is not the data the blocks describe.
        t.note_data(&key, 0, (SeqNumber(5), 99_999, None), false, 0);
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

    /// One loss episode: the hole at `hole` (server space) of `lost` bytes, then
    /// `acks` dupacks whose SACK block grows by `step` bytes each (client space).
    fn episode(
        t: &RepairTable,
        key: &FlowKey,
        off: u32,
        hole: u32,
        lost: u32,
        step: u32,
        acks: u32,
    ) -> Learned {
        let range = (off - 50_000, off + 50_000);
        let mut last = Learned::Unknown;
        for n in 1..=acks {
            let left = hole + lost + off;
            let blk = [block(left, left + n * step)];
            last = t.learn(key, 1, SeqNumber(hole), &blk, range, 1 << 20, 0);
        }
        last
    }

    #[test]
    fn common_one_segment_holes_pin_the_offset_without_seeing_data() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 0xdead_0000u32;
        // Three episodes, each a lost 1448-byte segment and segments arriving after.
        assert_eq!(
            episode(&t, &key, off, 10_000, 1448, 1448, 4),
            Learned::Unknown
        );
        assert_eq!(
            episode(&t, &key, off, 90_000, 1448, 1448, 3),
            Learned::Unknown
        );
        assert_eq!(
            episode(&t, &key, off, 190_000, 1448, 1448, 3),
            Learned::Exact(off)
        );
        // A block far outside the offered window is never repaired.
        let far = [block(
            off.wrapping_add(900_000_000),
            off.wrapping_add(900_001_000),
        )];
        let range = (off - 50_000, off + 50_000);
        assert_eq!(
            t.learn(&key, 1, SeqNumber(195_000), &far, range, 1 << 20, 0),
            Learned::Unverified(off)
        );
    }

    #[test]
    fn short_segments_and_double_losses_do_not_mislead() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 77_000u32;
        // A short lost segment (336 bytes), a double loss, then common episodes; the
        // short segments also show up as short growths.
        episode(&t, &key, off, 10_000, 336, 336, 3);
        episode(&t, &key, off, 50_000, 2896, 1448, 3);
        assert_eq!(
            episode(&t, &key, off, 90_000, 1448, 1448, 3),
            Learned::Unknown
        );
        assert_eq!(
            episode(&t, &key, off, 130_000, 1448, 1448, 3),
            Learned::Unknown
        );
        assert_eq!(
            episode(&t, &key, off, 170_000, 1448, 1448, 3),
            Learned::Exact(off)
        );
    }

    /// Feeds the server's segments `[from, to)` of 1448 bytes (server space) to the
    /// ring, as the shadow feed does.
    fn feed(t: &RepairTable, key: &FlowKey, from: u32, to: u32) {
        for start in (from..to).step_by(1448) {
            t.note_data(key, 1, (SeqNumber(start), 1448, None), true, 0);
        }
    }

    /// One loss episode as the live daemon sees it: the segment at `hole` lost (and
    /// `lost - 1` more after it), then `acks` dupacks each acknowledging `per_ack`
    /// newly arrived segments at once (GRO, delayed ACKs).
    fn fed_episode(
        t: &RepairTable,
        key: &FlowKey,
        off: u32,
        (hole, lost): (u32, u32),
        per_ack: u32,
        acks: u32,
    ) -> Learned {
        episode(t, key, off, hole, lost * 1448, per_ack * 1448, acks)
    }

    /// One loss episode with a one-segment hole at `hole`, the blocks growing by
    /// `per_ack` segments per ACK, then the ACK without SACK once it is filled: the
    /// two bounds meet, and the offset is proven.
    fn proven_episode(t: &RepairTable, key: &FlowKey, off: u32, hole: u32, per_ack: u32) {
        fed_episode(t, key, off, (hole, 1), per_ack, 3);
        let range = (off.wrapping_sub(1_000_000), off.wrapping_add(1_000_000));
        t.note_ack(key, 0, SeqNumber(hole + (1 + 3 * per_ack) * 1448), range);
    }

    #[test]
    fn acks_covering_many_segments_do_not_matter_to_the_proof() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 819_725_076u32;
        let base = 1_000_000u32;
        fed_episode(&t, &key, off, (base, 1), 16, 1);
        feed(&t, &key, base, base + 400 * 1448);
        // Growths of 16 segments (where the growth-based guess was 15 segments low).
        proven_episode(&t, &key, off, base + 10 * 1448, 16);
        assert_eq!(t.exact(&key), Some(off));
    }

    #[test]
    fn an_episode_judged_before_the_feed_shows_its_hole_is_proven_when_it_does() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 819_725_076u32;
        let base = 1_000_000u32;
        fed_episode(&t, &key, off, (base, 1), 1, 1);
        feed(&t, &key, base, base + 10 * 1448);
        // On a fast path the ACKs of an episode, even the one after the hole is
        // filled, are judged before the feed's batch with the lost segment arrives.
        proven_episode(&t, &key, off, base + 20 * 1448, 1);
        assert_eq!(t.exact(&key), None);
        feed(&t, &key, base + 10 * 1448, base + 100 * 1448);
        assert_eq!(t.exact(&key), Some(off));
    }

    #[test]
    fn a_hole_of_several_segments_is_proven_at_its_last_segment() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 3_000_000u32;
        let base = 50_000u32;
        let range = (off - 2_000_000, off + 2_000_000);
        fed_episode(&t, &key, off, (base, 1), 1, 1);
        feed(&t, &key, base, base + 400 * 1448);
        // Three segments lost in a burst: the hole vote is two segments high.
        let hole = base + 10 * 1448;
        fed_episode(&t, &key, off, (hole, 3), 1, 3);
        assert_eq!(t.exact(&key), None);
        // The retransmissions fill the hole one segment at a time: the ACK moves,
        // the block stays. At the last segment the vote is the offset.
        let blk = [block(hole + 3 * 1448 + off, hole + 6 * 1448 + off)];
        for filled in 1..=2u32 {
            t.learn(
                &key,
                1,
                SeqNumber(hole + filled * 1448),
                &blk,
                range,
                1 << 20,
                0,
            );
        }
        assert_eq!(t.exact(&key), None);
        t.note_ack(&key, 0, SeqNumber(hole + 6 * 1448), range);
        assert_eq!(t.exact(&key), Some(off));
    }

    /// Feeds GSO packets of `per` wire segments of 1448 bytes, told `unit`.
    fn feed_gso(t: &RepairTable, key: &FlowKey, (from, to): (u32, u32), per: u32, unit: u32) {
        for start in (from..to).step_by((per * 1448) as usize) {
            let len = (per * 1448).min(to - start);
            t.note_data(key, 1, (SeqNumber(start), len, Some(unit)), true, 0);
        }
    }

    #[test]
    fn gso_packets_hold_the_wire_segments_the_blocks_name() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 819_725_076u32;
        let base = 2_981_031_694u32;
        fed_episode(&t, &key, off, (base, 1), 1, 1);
        // The server's stack hands its hooks 36 segments at a time.
        feed_gso(&t, &key, (base, base + 720 * 1448), 36, 1448);
        proven_episode(&t, &key, off, base + 40 * 1448, 2);
        assert_eq!(t.exact(&key), Some(off));
        // A block inside a GSO packet, on its grid, is verified; one off the grid is not.
        let range = (off - 50_000, off + 50_000);
        let ack = SeqNumber(base + 500 * 1448);
        let on = [block(base + 503 * 1448 + off, base + 505 * 1448 + off)];
        assert_eq!(
            t.learn(&key, 1, ack, &on, range, 1 << 20, 0),
            Learned::Exact(off)
        );
        // Within the window, so the displacement agrees; but not repaired.
        let ragged = [block(base + 503 * 1448 + off + 7, base + 505 * 1448 + off)];
        assert_eq!(
            t.learn(&key, 1, ack, &ragged, range, 1 << 20, 0),
            Learned::Plausible(off)
        );
        // Far outside the window: not even that.
        let far = [block(
            (base + off).wrapping_add(900_000_000),
            (base + off).wrapping_add(900_001_448),
        )];
        assert_eq!(
            t.learn(&key, 1, ack, &far, range, 1 << 20, 0),
            Learned::Unverified(off)
        );
    }

    #[test]
    fn a_wrong_segment_unit_proves_nothing() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 1_000_000u32;
        let base = 5_000u32;
        fed_episode(&t, &key, off, (base, 1), 1, 1);
        // Told 1460 (an MSS with no room for the timestamps the segments carry).
        feed_gso(&t, &key, (base, base + 720 * 1448), 36, 1460);
        for hole in [40, 120, 200, 280, 360] {
            fed_episode(&t, &key, off, (base + hole * 1448, 1), 1, 3);
        }
        assert_eq!(t.exact(&key), None);
    }

    /// The live daemon's view of a flow watched from its SYN: the server sends
    /// `[base, base + sent * 1448)` in GSO packets of 4 segments (fed), the segment
    /// at `hole` (and `lost - 1` after it) is lost, and the client SACKs every later
    /// segment as it arrives, each dupack fed in order after the data and then judged.
    /// Returns the exact offset after each dupack.
    fn stalled_episode(
        t: &RepairTable,
        key: &FlowKey,
        off: u32,
        (base, sent): (u32, u32),
        (hole, lost): (u32, u32),
    ) -> Vec<Option<u32>> {
        let range = (off.wrapping_sub(5_000_000), off.wrapping_add(5_000_000));
        t.watch(key, 1, 0);
        feed_gso(t, key, (base, base + sent * 1448), 4, 1448);
        let left = base + (hole + lost) * 1448 + off;
        (1..=sent - hole - lost)
            .map(|n| {
                let blk = [block(left, left + n * 1448)];
                let ack = SeqNumber(base + hole * 1448);
                t.note_fed_sack(key, 0, ack, &blk, range);
                t.learn(key, 1, ack, &blk, range, 1 << 20, 0);
                t.exact(key)
            })
            .collect()
    }

    #[test]
    fn the_last_dupack_of_a_stalled_episode_proves_the_offset_before_the_hole_is_filled() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 819_725_076u32;
        // 200 segments in flight, the 50th lost: the server's window is full and it
        // sends nothing more, so the client's last dupack SACKs the last segment sent.
        let after = stalled_episode(&t, &key, off, (2_981_031_694, 200), (50, 1));
        assert_eq!(after.len(), 149);
        assert!(after[..148].iter().all(Option::is_none));
        assert_eq!(after.last(), Some(&Some(off)));
    }

    #[test]
    fn a_hole_of_two_segments_is_not_proven_by_what_was_sent() {
        let t = RepairTable::new(8);
        let key = key();
        // The hole vote is one segment high; the ceiling is the offset: no proof.
        let after = stalled_episode(&t, &key, 1_000_000, (10_000, 100), (20, 2));
        assert!(after.iter().all(Option::is_none));
    }

    #[test]
    fn a_feed_loss_before_the_dupacks_proves_nothing_by_what_was_sent() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 1_000_000u32;
        let range = (off.wrapping_sub(5_000_000), off.wrapping_add(5_000_000));
        t.watch(&key, 1, 0);
        feed_gso(&t, &key, (10_000, 10_000 + 100 * 1448), 4, 1448);
        // Messages lost: the newest segments sent may be among them, so the ring's
        // top is no ceiling.
        t.feed_lost();
        let left = 10_000 + 21 * 1448 + off;
        for n in 1..=79 {
            let blk = [block(left, left + n * 1448)];
            let ack = SeqNumber(10_000 + 20 * 1448);
            t.note_fed_sack(&key, 0, ack, &blk, range);
            t.learn(&key, 1, ack, &blk, range, 1 << 20, 0);
        }
        assert_eq!(t.exact(&key), None);
    }

    #[test]
    fn a_block_past_what_was_sent_bounds_nothing_wrongly() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 1_000_000u32;
        // A forged or stale dupack naming data beyond the top: its ceiling is above
        // the offset, equals no honest hole vote, and proves nothing.
        let mut after = stalled_episode(&t, &key, off, (10_000, 100), (20, 1));
        assert_eq!(after.pop(), Some(Some(off)));
        let t = RepairTable::new(8);
        let range = (off.wrapping_sub(5_000_000), off.wrapping_add(5_000_000));
        t.watch(&key, 1, 0);
        feed_gso(&t, &key, (10_000, 10_000 + 100 * 1448), 4, 1448);
        let left = 10_000 + 21 * 1448 + off;
        let ack = SeqNumber(10_000 + 20 * 1448);
        for n in [1, 2, 120] {
            let blk = [block(left, left + n * 1448)];
            t.note_fed_sack(&key, 0, ack, &blk, range);
            t.learn(&key, 1, ack, &blk, range, 1 << 20, 0);
        }
        assert_eq!(t.exact(&key), None);
    }

    #[test]
    fn watching_takes_half_the_table_and_ends_soon_without_displaced_sack() {
        let t = RepairTable::new(8);
        let keys: Vec<FlowKey> = (0..8u16)
            .map(|p| {
                let a = "192.0.2.1".parse().unwrap();
                FlowKey::new(a, 1000 + p, "192.0.2.2".parse().unwrap(), 80, 6).0
            })
            .collect();
        for k in &keys {
            t.watch(k, 1, 0);
        }
        assert_eq!(t.len(), 4);
        // A flow with displaced SACK still gets its learner.
        let range = (0, 5_000_000);
        t.learn(
            &keys[7],
            1,
            SeqNumber(5),
            &[block(9_000, 10_000)],
            range,
            1 << 20,
            0,
        );
        assert_eq!(t.len(), 5);
        assert_eq!(t.expire(WATCH_IDLE_S + 1, 600), 4);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_flow_watched_for_the_other_side_starts_again_on_the_right_one() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 1_000_000u32;
        t.watch(&key, 0, 0);
        let after = stalled_episode(&t, &key, off, (10_000, 100), (20, 1));
        // Watched for side 0's data, the blocks name side 1's: nothing recorded for
        // side 1 in this episode, so nothing is proven from it.
        assert!(after.iter().all(Option::is_none));
        // Learning now records side 1's data: the next stalled episode proves.
        let after = stalled_episode(&t, &key, off, (10_000 + 100 * 1448, 100), (20, 1));
        assert_eq!(after.last(), Some(&Some(off)));
    }

    #[test]
    fn one_episode_proves_the_offset_when_its_bounds_meet() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 819_725_076u32;
        let base = 2_981_031_694u32;
        let range = (off.wrapping_sub(5_000_000), off.wrapping_add(5_000_000));
        // Segment `base` is lost; the client SACKs the next ones as they arrive. The
        // learner starts with the first SACK: the lost segment's first sending is
        // older than its ring, but its fast retransmission is fed.
        let left = base + 1448 + off;
        for n in 1..=3u32 {
            let blk = [block(left, left + n * 1448)];
            t.learn(&key, 1, SeqNumber(base), &blk, range, 1 << 20, 0);
        }
        feed_gso(&t, &key, (base + 1448, base + 40 * 1448), 36, 1448);
        t.note_data(&key, 1, (SeqNumber(base), 1448, Some(1448)), true, 0);
        assert_eq!(t.exact(&key), None);
        // The retransmission fills the hole: the next ACK, without SACK, is at the
        // block's right edge. Both bounds are the offset.
        t.note_ack(&key, 0, SeqNumber(base + 4 * 1448), range);
        assert_eq!(t.exact(&key), Some(off));
    }

    #[test]
    fn an_episode_whose_bounds_do_not_meet_proves_nothing() {
        for (lost, arrived_after) in [(2u32, 0u32), (1, 2)] {
            let t = RepairTable::new(8);
            let key = key();
            let off = 4_000_000u32;
            let base = 700_000u32;
            let range = (off - 500_000, off + 500_000);
            feed_gso(&t, &key, (base - 1448, base), 1, 1448);
            let left = base + lost * 1448 + off;
            t.learn(
                &key,
                1,
                SeqNumber(base),
                &[block(left, left + 1448)],
                range,
                0,
                0,
            );
            feed_gso(&t, &key, (base, base + 40 * 1448), 36, 1448);
            let blk = [block(left, left + 2 * 1448)];
            t.learn(&key, 1, SeqNumber(base), &blk, range, 0, 0);
            // A double loss: the hole vote is a segment high. Segments that arrived
            // with the retransmission: the fill vote is low. Either way, no proof.
            let filled = base + (lost + 2 + arrived_after) * 1448;
            t.note_ack(&key, 0, SeqNumber(filled), range);
            assert_eq!(t.exact(&key), None, "lost {lost}, after {arrived_after}");
        }
    }

    #[test]
    fn fed_blocks_beyond_what_the_feed_showed_pass_unchanged() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 42_000_000u32;
        let base = 10_000u32;
        fed_episode(&t, &key, off, (base, 1), 1, 1);
        feed(&t, &key, base, base + 200 * 1448);
        proven_episode(&t, &key, off, base + 10 * 1448, 1);
        assert_eq!(t.exact(&key), Some(off));
        // The feed lags: the server sent segment 250, the feed has shown up to 199.
        // The block cannot be checked against data seen sent, so it is not repaired
        // (though it lies in the window: its displacement agrees with the flow's).
        let ack = SeqNumber(base + 240 * 1448);
        let ahead = [block(base + 250 * 1448 + off, base + 251 * 1448 + off)];
        assert_eq!(
            t.learn(
                &key,
                1,
                ack,
                &ahead,
                (off - 50_000, off + 50_000),
                1 << 20,
                0
            ),
            Learned::Plausible(off)
        );
        // Once the feed catches up, the same block is verified.
        feed(&t, &key, base + 200 * 1448, base + 300 * 1448);
        assert_eq!(
            t.learn(
                &key,
                1,
                ack,
                &ahead,
                (off - 50_000, off + 50_000),
                1 << 20,
                0
            ),
            Learned::Exact(off)
        );
    }

    #[test]
    fn a_lone_dsack_is_not_an_episode() {
        let t = RepairTable::new(8);
        let key = key();
        let off = 5_000_000u32;
        // Single packets with new ACKs (D-SACKs below the ACK): nothing counts.
        for i in 0..10u32 {
            let blk = [block(off + i * 10_000, off + i * 10_000 + 1448)];
            t.learn(
                &key,
                1,
                SeqNumber(i * 10_000 + 5_000),
                &blk,
                (0, u32::MAX - 1),
                1 << 20,
                0,
            );
        }
        assert_eq!(t.exact(&key), None);
    }

    #[test]
    fn retransmissions_do_not_disturb_the_ring_order() {
        let mut b = ring(&[100, 200, 300], 100);
        b.push(SeqNumber(200), SeqNumber(300));
        assert_eq!(
            b.wire_segment_at(SeqNumber(300)),
            Some((SeqNumber(300), SeqNumber(400)))
        );
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
