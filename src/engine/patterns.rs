//! Retransmission patterns, named as Wireshark's TCP analysis names them.
//!
//! Operators already read these names in Wireshark; the per-packet JSON `analysis`
//! array and the per-peer aggregates use exactly these strings.

use core::fmt;

/// One of Wireshark's `tcp.analysis.*` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Pattern {
    /// Data (or SYN/FIN) that does not advance the sequence number.
    Retransmission = 0,
    /// A retransmission after two or more duplicate ACKs, within 20 ms of the last.
    FastRetransmission = 1,
    /// A retransmission of data the receiver had already acknowledged.
    SpuriousRetransmission = 2,
    /// A segment older than the highest seen, arriving shortly after it.
    OutOfOrder = 3,
    /// The segment starts beyond the next expected sequence number (a gap).
    LostSegment = 4,
    /// The ACK covers data that was never seen in the capture.
    AckLostSegment = 5,
    /// An ACK repeating the previous ACK, window and sequence number, with no data.
    DuplicateAck = 6,
    /// The sender advertises a zero receive window.
    ZeroWindow = 7,
    /// One byte sent at the next sequence number into a zero window.
    ZeroWindowProbe = 8,
    /// Zero or one byte one below the next sequence number.
    KeepAlive = 9,
    /// The segment fills the receiver's advertised window exactly.
    WindowFull = 10,
    /// A SYN reusing the ports of an earlier connection with a new sequence number.
    ReusedPorts = 11,
    /// A zero-length segment that only changes the window.
    WindowUpdate = 12,
    /// The answer to a keep-alive.
    KeepAliveAck = 13,
    /// The answer to a zero-window probe.
    ZeroWindowProbeAck = 14,
}

impl Pattern {
    /// Every pattern, in output order.
    pub const ALL: [Pattern; 15] = [
        Pattern::Retransmission,
        Pattern::FastRetransmission,
        Pattern::SpuriousRetransmission,
        Pattern::OutOfOrder,
        Pattern::LostSegment,
        Pattern::AckLostSegment,
        Pattern::DuplicateAck,
        Pattern::ZeroWindow,
        Pattern::ZeroWindowProbe,
        Pattern::KeepAlive,
        Pattern::WindowFull,
        Pattern::ReusedPorts,
        Pattern::WindowUpdate,
        Pattern::KeepAliveAck,
        Pattern::ZeroWindowProbeAck,
    ];

    /// The twelve patterns of the per-packet `analysis` contract.
    pub const CONTRACT: [Pattern; 12] = [
        Pattern::Retransmission,
        Pattern::FastRetransmission,
        Pattern::SpuriousRetransmission,
        Pattern::OutOfOrder,
        Pattern::LostSegment,
        Pattern::AckLostSegment,
        Pattern::DuplicateAck,
        Pattern::ZeroWindow,
        Pattern::ZeroWindowProbe,
        Pattern::KeepAlive,
        Pattern::WindowFull,
        Pattern::ReusedPorts,
    ];

    /// The snake_case name, as in Wireshark's `tcp.analysis.<name>` field.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Retransmission => "retransmission",
            Pattern::FastRetransmission => "fast_retransmission",
            Pattern::SpuriousRetransmission => "spurious_retransmission",
            Pattern::OutOfOrder => "out_of_order",
            Pattern::LostSegment => "lost_segment",
            Pattern::AckLostSegment => "ack_lost_segment",
            Pattern::DuplicateAck => "duplicate_ack",
            Pattern::ZeroWindow => "zero_window",
            Pattern::ZeroWindowProbe => "zero_window_probe",
            Pattern::KeepAlive => "keep_alive",
            Pattern::WindowFull => "window_full",
            Pattern::ReusedPorts => "reused_ports",
            Pattern::WindowUpdate => "window_update",
            Pattern::KeepAliveAck => "keep_alive_ack",
            Pattern::ZeroWindowProbeAck => "zero_window_probe_ack",
        }
    }

    /// Parses a snake_case pattern name.
    pub fn from_name(name: &str) -> Option<Pattern> {
        Pattern::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Pattern`]s, one bit each. Copy, no allocation.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Patterns(u16);

impl Patterns {
    /// The empty set.
    pub const EMPTY: Patterns = Patterns(0);

    /// Adds a pattern.
    pub fn insert(&mut self, p: Pattern) {
        self.0 |= 1 << p as u8;
    }

    /// Removes a pattern.
    pub fn remove(&mut self, p: Pattern) {
        self.0 &= !(1 << p as u8);
    }

    /// Returns true if and only if the set holds `p`.
    pub fn contains(self, p: Pattern) -> bool {
        self.0 & (1 << p as u8) != 0
    }

    /// Returns true if and only if the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A set from raw bits (bit i is `Pattern::ALL[i]`); unknown bits are dropped.
    pub fn from_bits(bits: u16) -> Patterns {
        Patterns(bits & ((1 << Pattern::ALL.len()) - 1))
    }

    /// The raw bits (bit i is `Pattern::ALL[i]`).
    pub fn bits(self) -> u16 {
        self.0
    }

    /// Iterates the patterns in the set, in output order.
    pub fn iter(self) -> impl Iterator<Item = Pattern> {
        // Set bits only, lowest first (the order of `Pattern::ALL`): most sets hold
        // one pattern, and every judged packet walks its set twice.
        let mut bits = self.0;
        core::iter::from_fn(move || {
            let i = bits.trailing_zeros() as usize;
            bits &= bits.wrapping_sub(1);
            Pattern::ALL.get(i).copied()
        })
    }

    /// Iterates only the patterns of the per-packet `analysis` contract.
    pub fn contract_iter(self) -> impl Iterator<Item = Pattern> {
        Pattern::CONTRACT
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Pattern> for Patterns {
    fn from_iter<I: IntoIterator<Item = Pattern>>(iter: I) -> Self {
        let mut set = Patterns::EMPTY;
        for p in iter {
            set.insert(p);
        }
        set
    }
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Pattern::name))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Pattern::ALL {
            assert_eq!(Pattern::from_name(p.name()), Some(p));
        }
        assert_eq!(Pattern::from_name("bogus"), None);
    }

    #[test]
    fn set_keeps_output_order() {
        let set: Patterns = [Pattern::DuplicateAck, Pattern::Retransmission]
            .into_iter()
            .collect();
        let names: Vec<_> = set.iter().map(Pattern::name).collect();
        assert_eq!(names, ["retransmission", "duplicate_ack"]);
        assert!(!set.contains(Pattern::KeepAlive));
    }

    #[test]
    fn every_set_iterates_exactly_its_members_in_output_order() {
        for bits in 0..1u16 << Pattern::ALL.len() {
            let set = Patterns::from_bits(bits);
            let expected: Vec<Pattern> = Pattern::ALL
                .into_iter()
                .filter(|p| bits & (1 << *p as u8) != 0)
                .collect();
            assert_eq!(set.iter().collect::<Vec<_>>(), expected, "bits {bits:#06x}");
        }
    }
}
