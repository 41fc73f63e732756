//! Per-segment TCP sequence analysis, reproducing Wireshark's `tcp.analysis.*` flags.
//!
//! Operators read Wireshark's verdicts ("TCP Retransmission", "TCP Dup ACK", ...) every
//! day, so the engine labels segments the same way rather than inventing its own
//! taxonomy. The reference is `tcp_analyze_sequence_number()` in Wireshark 4.0's
//! `epan/dissectors/packet-tcp.c` plus the bits of `dissect_tcp()` around it
//! (reused-port detection before the analysis; window-scale, first-RTT and
//! `is_first_ack` bookkeeping after it). The checks run in Wireshark's order, because
//! the order decides the outcome: an early `goto` skips later checks, and each check
//! reads state that the previous segment left behind.
//!
//! Deliberate differences, all invisible in the flags of ordinary traffic:
//! - No list of unacknowledged segments. Wireshark keeps one for RTT and bytes in
//!   flight; the flags need it only in one corner (after 10 000 unacknowledged
//!   segments Wireshark stops adding SYN/FIN's phantom byte to `nextseq`).
//! - Sequence numbers are always compared in serial (wrapping) order through
//!   [`SeqNumber`]; Wireshark compares a few (the ACKed-unseen test's contiguous end
//!   against the highest seq) as plain integers, which differs only across 2^32.
//! - Like Wireshark, a `nextseq`/`maxseqtobeacked`/`lastack` of raw 0 means "not seen
//!   yet"; a stream that really sits at sequence 0 is misread exactly as tshark does.
//!
//! The state is fixed-size (no heap) and every operation wraps, so no input panics.

use crate::engine::patterns::{Pattern, Patterns};
use crate::engine::seq::SeqNumber;

/// TCP flag bits as in the header's 13th byte.
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

use tcp_flags::{ACK, FIN, RST, SYN};

/// What the analysis needs to know about one TCP segment.
#[derive(Clone, Copy, Debug)]
pub struct SegmentInfo {
    /// Capture/packet timestamp, nanoseconds since the epoch.
    pub ts_ns: u64,
    /// The sequence number field.
    pub seq: SeqNumber,
    /// The acknowledgement number field. Meaningful only if `flags` has ACK, but pass
    /// the raw header field regardless: Wireshark remembers it either way.
    pub ack: SeqNumber,
    /// TCP payload length from the IP header lengths (not the captured bytes).
    pub payload_len: u32,
    /// `tcp_flags` bits.
    pub flags: u8,
    /// Raw header window value.
    pub window: u16,
    /// The Window Scale option's shift, if this segment carries it (SYN segments).
    pub window_scale: Option<u8>,
}

/// Which end of the connection sent a segment: index 0 = the endpoint that sent the
/// first segment the flow table saw, 1 = the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The endpoint that sent the first segment the flow table saw.
    First = 0,
    /// The other endpoint.
    Second = 1,
}

/// Wireshark's window-scale knowledge for one direction (`win_scale`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WinScale {
    /// No SYN seen yet: the shift is unknown (Wireshark's -1).
    Unknown,
    /// The handshake showed that scaling is not in use (Wireshark's -2).
    NotUsed,
    /// The handshake announced this shift (0..=14).
    Shift(u8),
}

/// What one direction (one sender) has shown so far. Wireshark's `tcp_flow_t` plus its
/// `tcp_analyze_seq_flow_info_t`, minus the unacked-segment list.
#[derive(Clone, Copy, Debug)]
struct Flow {
    /// The initial sequence number (or a guess at it); only used to spot reused ports.
    base_seq: SeqNumber,
    /// The highest sequence number sent so far plus one; raw 0 = nothing seen.
    nextseq: SeqNumber,
    /// When `nextseq` last advanced.
    nextseq_time: u64,
    /// The end of the contiguous data seen from this sender; raw 0 = nothing seen.
    maxseqtobeacked: SeqNumber,
    /// The acknowledgement number of this sender's last segment.
    lastack: SeqNumber,
    /// When this sender's last segment was seen.
    lastack_time: u64,
    /// The raw window of this sender's last segment; `u32::MAX` = none yet, so that no
    /// 16-bit window ever equals it.
    window: u32,
    /// Duplicate ACKs in a row, or [`AFTER_ACK_LOST`] (see there).
    dupacknum: u16,
    /// The analysis flags of this sender's last segment (keep-alive and zero-window
    /// probe ACKs look at them).
    last_flags: Patterns,
    /// Whether a segment from this sender set `base_seq`.
    base_seq_set: bool,
    /// True from this sender's SYN until its first pure ACK: until then its window is
    /// not scaled (RFC 7323 section 2.2), Wireshark issue 14690.
    is_first_ack: bool,
    /// What this sender's SYN said about window scaling.
    win_scale: WinScale,
}

impl Flow {
    const NEW: Flow = Flow {
        base_seq: SeqNumber(0),
        nextseq: SeqNumber(0),
        nextseq_time: 0,
        maxseqtobeacked: SeqNumber(0),
        lastack: SeqNumber(0),
        lastack_time: 0,
        window: u32::MAX,
        dupacknum: 0,
        last_flags: Patterns::EMPTY,
        base_seq_set: false,
        is_first_ack: false,
        win_scale: WinScale::Unknown,
    };

    /// Returns true if and only if this sender has sent anything with a sequence number.
    fn has_nextseq(&self) -> bool {
        self.nextseq.0 != 0
    }
}

/// `dupacknum` of a sender whose peer just ACKed data that was never captured and
/// that has not changed its own ACK since. Wireshark stores -1 in its unsigned counter
/// here: it keeps the next "ACKed unseen segment" quiet while the hole persists, and, as
/// a side effect tshark shows, it also counts as "two or more duplicate ACKs" for the
/// fast-retransmission test.
const AFTER_ACK_LOST: u16 = u16::MAX;

/// Out-of-order threshold used until the handshake gives a first RTT (Wireshark: 3 ms).
const DEFAULT_OOO_THRESHOLD_NS: u64 = 3_000_000;
/// A retransmission this soon after the peer's last duplicate ACK is "fast" (20 ms).
const FAST_RETRANSMISSION_WINDOW_NS: u64 = 20_000_000;

/// Per-connection analysis state (both directions). Fixed size, no heap.
#[derive(Clone, Debug)]
pub struct StreamAnalysis {
    /// Indexed by [`Side`]. Both directions are symmetric, so when a reused-port SYN
    /// restarts the connection from the other endpoint nothing needs renumbering.
    flows: [Flow; 2],
    /// Time of the most recent SYN (without ACK); 0 = none.
    last_syn_time: u64,
    /// Handshake RTT: last SYN to the first pure ACK after it, in ns (may be negative
    /// if the capture's clock stepped back); 0 = not measured.
    first_rtt: i64,
}

impl Default for StreamAnalysis {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamAnalysis {
    /// A connection nothing has been seen of.
    pub fn new() -> Self {
        StreamAnalysis {
            flows: [Flow::NEW; 2],
            last_syn_time: 0,
            first_rtt: 0,
        }
    }

    /// Analyse one segment sent by `side`; returns the Wireshark flags for it
    /// (including WindowUpdate, KeepAliveAck, ZeroWindowProbeAck, ReusedPorts).
    pub fn on_segment(&mut self, side: Side, seg: &SegmentInfo) -> Patterns {
        let mut found = Patterns::EMPTY;
        let fwd = side as usize;

        let fl = seg.flags & (SYN | ACK);
        if fl == SYN && self.flows[fwd].base_seq_set {
            if seg.seq != self.flows[fwd].base_seq {
                // A SYN with a new ISN opens a new connection on the same ports: start
                // from scratch (both directions, so which side opened it is moot).
                *self = StreamAnalysis::new();
                found.insert(Pattern::ReusedPorts);
            } else {
                // The same ISN: a retransmitted SYN, analysed as such. A RST in between
                // may have carried the seq the peer ACKed rather than ours (RFC 793
                // section 3.4) and moved `nextseq` far ahead; fall back to the end of
                // the contiguous data (Wireshark issue 17616).
                let flow = &mut self.flows[fwd];
                flow.nextseq = flow.maxseqtobeacked;
            }
        }
        // A SYN/ACK with a new ISN: Wireshark looks for the conversation of the SYN it
        // answers (the same 4-tuple here), adopts the new ISN and flags the reuse.
        if fl == SYN | ACK && self.flows[fwd].base_seq_set && seg.seq != self.flows[fwd].base_seq {
            self.flows[fwd].base_seq = seg.seq;
            found.insert(Pattern::ReusedPorts);
        }

        self.analyze_sequence_number(fwd, seg, &mut found);
        self.after_analysis(fwd, seg);

        // tshark shows `tcp.analysis.retransmission` on fast and spurious ones too.
        if found.contains(Pattern::FastRetransmission)
            || found.contains(Pattern::SpuriousRetransmission)
        {
            found.insert(Pattern::Retransmission);
        }
        found
    }

    /// The checks of `tcp_analyze_sequence_number()`, in its order.
    fn analyze_sequence_number(&mut self, fwd: usize, seg: &SegmentInfo, found: &mut Patterns) {
        let rev = 1 - fwd;
        let seq = seg.seq;
        let ack = seg.ack;
        let seglen = seg.payload_len;
        let window = u32::from(seg.window);
        let flags = seg.flags;
        let now = seg.ts_ns;
        let syn_fin_rst = flags & (SYN | FIN | RST) != 0;

        // The first segment of a direction fixes its base; a SYN's own seq, otherwise
        // one before (as if the SYN had been missed). An ACK fixes the peer's base.
        if !self.flows[fwd].base_seq_set {
            self.flows[fwd].base_seq = if flags & SYN != 0 { seq } else { seq - 1 };
            self.flows[fwd].base_seq_set = true;
        }
        if !self.flows[rev].base_seq_set && flags & ACK != 0 {
            self.flows[rev].base_seq = ack - 1;
            self.flows[rev].base_seq_set = true;
        }

        let f = self.flows[fwd];
        let r = self.flows[rev];

        'fwd: {
            // Zero window probe: one byte at the next expected seq into a zero window.
            // The other sender-side checks are skipped; the ACK and retransmission
            // checks below still run.
            if seglen == 1 && seq == f.nextseq && r.window == 0 {
                found.insert(Pattern::ZeroWindowProbe);
                break 'fwd;
            }

            // Zero window: the sender advertises no room (SYN/FIN/RST excepted).
            if window == 0 && !syn_fin_rst {
                found.insert(Pattern::ZeroWindow);
            }

            // Lost segment: the segment starts beyond what this sender sent so far.
            if f.has_nextseq() && seq > f.nextseq && flags & RST == 0 {
                found.insert(Pattern::LostSegment);
            }

            // Keep-alive: 0 or 1 byte starting one before the next expected seq.
            if seglen <= 1 && seq == f.nextseq - 1 && !syn_fin_rst {
                found.insert(Pattern::KeepAlive);
            }

            // Window update: no data, same seq and ack as before, new nonzero window.
            if seglen == 0
                && window != 0
                && window != f.window
                && seq == f.nextseq
                && ack == f.lastack
                && !syn_fin_rst
            {
                found.insert(Pattern::WindowUpdate);
            }

            // Window full: the data ends exactly at the right edge of the peer's
            // advertised window, when the peer's scaling is known.
            if seglen > 0 && r.win_scale != WinScale::Unknown && !syn_fin_rst {
                let shift = match (r.is_first_ack, r.win_scale) {
                    (false, WinScale::Shift(s)) => u32::from(s),
                    _ => 0,
                };
                let right_edge = r.lastack + r.window.wrapping_shl(shift);
                if seq + seglen == right_edge {
                    found.insert(Pattern::WindowFull);
                }
            }

            // A pure ACK repeating seq, ack and window is a keep-alive ACK if the peer
            // just sent a keep-alive, a zero-window-probe ACK if it just probed, and a
            // duplicate ACK otherwise.
            let repeats = seglen == 0
                && window == f.window
                && seq == f.nextseq
                && ack == f.lastack
                && !syn_fin_rst;
            if repeats && window != 0 && r.last_flags.contains(Pattern::KeepAlive) {
                found.insert(Pattern::KeepAliveAck);
                break 'fwd;
            }
            if repeats && window == 0 && r.last_flags.contains(Pattern::ZeroWindowProbe) {
                found.insert(Pattern::ZeroWindowProbeAck);
                break 'fwd;
            }
            if repeats && window != 0 {
                let flow = &mut self.flows[fwd];
                // After an "ACKed unseen segment" this duplicate is the first of its
                // series.
                flow.dupacknum = match flow.dupacknum {
                    AFTER_ACK_LOST => 1,
                    n => n.saturating_add(1).min(AFTER_ACK_LOST - 1),
                };
                found.insert(Pattern::DuplicateAck);
            }
        }

        // A new acknowledgement number ends any series of duplicate ACKs.
        if ack != self.flows[fwd].lastack {
            self.flows[fwd].dupacknum = 0;
        }

        // ACKed unseen segment: the ACK covers more than the peer's contiguous data.
        let r = self.flows[rev];
        if r.maxseqtobeacked.0 != 0 && ack > r.maxseqtobeacked && flags & ACK != 0 {
            if r.maxseqtobeacked < r.nextseq {
                // The peer's data has a hole that this ACK covers: report it once, by
                // moving the contiguous end past it.
                self.flows[rev].maxseqtobeacked = r.nextseq;
                found.insert(Pattern::AckLostSegment);
            } else {
                // The ACK runs past everything the peer sent. Report it once per run
                // of the peer's ACK number, however many ACKs repeat it.
                if r.dupacknum == 0 {
                    found.insert(Pattern::AckLostSegment);
                }
                self.flows[rev].dupacknum = AFTER_ACK_LOST;
            }
        }

        // Retransmission, fast retransmission, spurious retransmission, out-of-order:
        // a segment carrying data (or SYN/FIN) that does not advance the sequence.
        let f = self.flows[fwd];
        let r = self.flows[rev];
        if (seglen > 0 || flags & (SYN | FIN) != 0) && !found.contains(Pattern::KeepAlive) {
            let mut not_advanced = f.has_nextseq() && seq < f.nextseq;
            // One byte below nextseq with more than one byte of data follows a zero
            // window probe: it carries new data.
            if seglen > 1 && f.nextseq - 1 == seq {
                not_advanced = false;
            }
            let end = seq + seglen;
            let phantom = u32::from(flags & (SYN | FIN) != 0);
            let since_peer_ack = now.wrapping_sub(r.lastack_time);
            let since_advance = now.wrapping_sub(f.nextseq_time);
            let ooo_threshold = if self.first_rtt == 0 {
                DEFAULT_OOO_THRESHOLD_NS
            } else {
                // A negative RTT wraps to a huge threshold, as in Wireshark.
                self.first_rtt as u64
            };

            if seglen > 0 && r.lastack.0 != 0 && end <= r.lastack {
                // Every byte was already acknowledged by the peer.
                found.insert(Pattern::SpuriousRetransmission);
            } else if not_advanced
                && r.dupacknum >= 2
                && r.lastack == seq
                && since_peer_ack < FAST_RETRANSMISSION_WINDOW_NS
            {
                // The peer asked for exactly this seq with two or more duplicate ACKs
                // (or is in the `AFTER_ACK_LOST` state, see there), and this came
                // within 20 ms of its last segment.
                found.insert(Pattern::FastRetransmission);
            } else if not_advanced && since_advance < ooo_threshold && f.nextseq != end + phantom {
                // Older than the highest seq but arriving within about one RTT of it,
                // and not just a resend of the last segment: reordered in flight.
                found.insert(Pattern::OutOfOrder);
            } else if not_advanced {
                found.insert(Pattern::Retransmission);
            }
        }

        // Remember the highest seq sent, except for zero window probes, which do not
        // really advance the stream.
        let probe = found.contains(Pattern::ZeroWindowProbe);
        let phantom = u32::from(flags & (SYN | FIN) != 0);
        let nextseq = seq + seglen + phantom;
        let flow = &mut self.flows[fwd];
        if (nextseq > flow.nextseq || !flow.has_nextseq()) && !probe {
            flow.nextseq = nextseq;
            flow.nextseq_time = now;
        }
        // Contiguous data extends the end of what the peer can rightfully ACK.
        if (seq == flow.maxseqtobeacked || flow.maxseqtobeacked.0 == 0) && !probe {
            flow.maxseqtobeacked = flow.nextseq;
        }
        flow.window = window;
        flow.lastack = ack;
        flow.lastack_time = now;
        flow.last_flags = *found;
    }

    /// The bookkeeping `dissect_tcp()` does after the analysis: window scaling from
    /// the SYNs, handshake RTT, and the first-ACK marker.
    fn after_analysis(&mut self, fwd: usize, seg: &SegmentInfo) {
        let rev = 1 - fwd;
        let fl = seg.flags & (SYN | ACK);

        if let Some(shift) = seg.window_scale {
            // RFC 7323 section 2.3: a shift above 14 is treated as 14.
            self.flows[fwd].win_scale = WinScale::Shift(shift.min(14));
        }
        if seg.flags & SYN != 0 {
            // Scaling is in use only if both SYNs carry the option.
            if self.flows[fwd].win_scale == WinScale::Unknown {
                self.flows[fwd].win_scale = WinScale::NotUsed;
                self.flows[rev].win_scale = WinScale::NotUsed;
            } else if fl == SYN | ACK && self.flows[rev].win_scale == WinScale::NotUsed {
                self.flows[fwd].win_scale = WinScale::NotUsed;
            }
            self.flows[fwd].is_first_ack = true;
        }
        if fl == SYN {
            self.last_syn_time = seg.ts_ns;
        }
        // The first pure ACK after a SYN closes the handshake: its delay from the
        // last SYN is the connection's first RTT, the out-of-order threshold.
        if fl == ACK && self.last_syn_time != 0 && self.first_rtt == 0 {
            self.first_rtt = seg.ts_ns.wrapping_sub(self.last_syn_time) as i64;
        }
        if fl == ACK {
            self.flows[fwd].is_first_ack = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcp_flags::PSH;
    use Pattern::*;

    const C: Side = Side::First;
    const S: Side = Side::Second;
    /// Client and server initial sequence numbers of the default connection.
    const C_ISN: u32 = 1000;
    const S_ISN: u32 = 5000;
    /// An arbitrary capture start, in ns since the epoch.
    const T0: u64 = 1_700_000_000_000_000_000;
    const MS: u64 = 1_000_000;

    /// A pure ACK at T0; scenarios override what matters with `..TEMPL`.
    const TEMPL: SegmentInfo = SegmentInfo {
        ts_ns: T0,
        seq: SeqNumber(0),
        ack: SeqNumber(0),
        payload_len: 0,
        flags: ACK,
        window: 1000,
        window_scale: None,
    };

    fn at(ms: u64) -> u64 {
        T0 + ms * MS
    }

    /// `send!(analysis, side @ ms, { fields } => [flags])` sends one segment `ms`
    /// milliseconds after T0 and asserts the exact set of flags it gets.
    macro_rules! send {
        ($a:expr, $side:ident @ $ms:expr, { $($field:ident : $value:expr),* $(,)? } => [$($p:expr),* $(,)?]) => {{
            let seg = SegmentInfo { ts_ns: at($ms), $($field: $value,)* ..TEMPL };
            let got = $a.on_segment($side, &seg);
            let want: Patterns = [$($p),*].into_iter().collect();
            assert_eq!(got, want, "segment {:?}", seg);
        }};
    }

    /// A connection after a three-way handshake at 0, 10 and 20 ms (first RTT 20 ms),
    /// without window scaling. Client next seq is C_ISN + 1, server's S_ISN + 1.
    fn established_at(c_isn: u32, s_isn: u32) -> StreamAnalysis {
        let mut a = StreamAnalysis::new();
        let (c, s) = (SeqNumber(c_isn), SeqNumber(s_isn));
        send!(a, C @ 0, { seq: c, flags: SYN } => []);
        send!(a, S @ 10, { seq: s, ack: c + 1, flags: SYN | ACK } => []);
        send!(a, C @ 20, { seq: c + 1, ack: s + 1 } => []);
        a
    }

    fn established() -> StreamAnalysis {
        established_at(C_ISN, S_ISN)
    }

    fn c_seq(offset: u32) -> SeqNumber {
        SeqNumber(C_ISN) + 1 + offset
    }

    fn s_seq(offset: u32) -> SeqNumber {
        SeqNumber(S_ISN) + 1 + offset
    }

    #[test]
    fn state_fits_the_flow_entry_budget() {
        assert!(core::mem::size_of::<StreamAnalysis>() <= 128);
    }

    #[test]
    fn handshake_then_data_then_retransmission() {
        let mut a = established();
        send!(a, C @ 30, { seq: c_seq(0), ack: s_seq(0), payload_len: 100, flags: ACK | PSH } => []);
        send!(a, S @ 40, { seq: s_seq(0), ack: c_seq(100) } => []);
        send!(a, C @ 50, { seq: c_seq(100), ack: s_seq(0), payload_len: 100 } => []);
        // No ACK for it; resent after an RTO, far beyond the 20 ms reordering window.
        send!(a, C @ 300, { seq: c_seq(100), ack: s_seq(0), payload_len: 100 } => [Retransmission]);
        // The ACK for it is an ordinary ACK.
        send!(a, S @ 310, { seq: s_seq(0), ack: c_seq(200) } => []);
    }

    #[test]
    fn retransmitted_syn_is_a_retransmission_not_a_new_connection() {
        let mut a = StreamAnalysis::new();
        send!(a, C @ 0, { seq: SeqNumber(C_ISN), flags: SYN } => []);
        send!(a, C @ 1000, { seq: SeqNumber(C_ISN), flags: SYN } => [Retransmission]);
        send!(a, S @ 1010, { seq: SeqNumber(S_ISN), ack: c_seq(0), flags: SYN | ACK } => []);
        send!(a, S @ 2010, { seq: SeqNumber(S_ISN), ack: c_seq(0), flags: SYN | ACK } => [Retransmission]);
    }

    #[test]
    fn three_duplicate_acks_then_fast_retransmission() {
        let mut a = established();
        for i in 0..4 {
            send!(a, C @ 30 + u64::from(i), { seq: c_seq(100 * i), ack: s_seq(0), payload_len: 100 } => []);
        }
        // The receiver missed the second segment: one ACK, then a duplicate for each
        // later segment.
        send!(a, S @ 50, { seq: s_seq(0), ack: c_seq(100) } => []);
        send!(a, S @ 51, { seq: s_seq(0), ack: c_seq(100) } => [DuplicateAck]);
        send!(a, S @ 52, { seq: s_seq(0), ack: c_seq(100) } => [DuplicateAck]);
        send!(a, S @ 53, { seq: s_seq(0), ack: c_seq(100) } => [DuplicateAck]);
        // Within 20 ms of the last duplicate, the requested segment again.
        send!(a, C @ 55, { seq: c_seq(100), ack: s_seq(0), payload_len: 100 } => [Retransmission, FastRetransmission]);
    }

    #[test]
    fn one_duplicate_ack_is_not_enough_for_fast_retransmission() {
        let mut a = established();
        for i in 0..3 {
            send!(a, C @ 30 + u64::from(i), { seq: c_seq(100 * i), ack: s_seq(0), payload_len: 100 } => []);
        }
        send!(a, S @ 50, { seq: s_seq(0), ack: c_seq(100) } => []);
        send!(a, S @ 51, { seq: s_seq(0), ack: c_seq(100) } => [DuplicateAck]);
        send!(a, C @ 55, { seq: c_seq(100), ack: s_seq(0), payload_len: 100 } => [Retransmission]);
    }

    #[test]
    fn zero_window_then_probe_then_reopening() {
        let mut a = established();
        send!(a, C @ 30, { seq: c_seq(0), ack: s_seq(0), payload_len: 100 } => []);
        send!(a, S @ 40, { seq: s_seq(0), ack: c_seq(100), window: 0 } => [ZeroWindow]);
        // One byte at the next seq into the closed window; it does not advance nextseq.
        send!(a, C @ 240, { seq: c_seq(100), ack: s_seq(0), payload_len: 1 } => [ZeroWindowProbe]);
        send!(a, S @ 250, { seq: s_seq(0), ack: c_seq(100), window: 0 } => [ZeroWindow, ZeroWindowProbeAck]);
        send!(a, C @ 650, { seq: c_seq(100), ack: s_seq(0), payload_len: 1 } => [ZeroWindowProbe]);
        send!(a, S @ 700, { seq: s_seq(0), ack: c_seq(100), window: 1000 } => [WindowUpdate]);
        send!(a, C @ 710, { seq: c_seq(100), ack: s_seq(0), payload_len: 100 } => []);
    }

    #[test]
    fn keep_alive_and_its_ack() {
        let mut a = established();
        send!(a, C @ 30, { seq: c_seq(0), ack: s_seq(0), payload_len: 100 } => []);
        send!(a, S @ 40, { seq: s_seq(0), ack: c_seq(100) } => []);
        // Idle, then one byte below the next seq, without data (Linux) ...
        send!(a, C @ 60_000, { seq: c_seq(99), ack: s_seq(0) } => [KeepAlive]);
        send!(a, S @ 60_010, { seq: s_seq(0), ack: c_seq(100) } => [KeepAliveAck]);
        // ... or with one garbage byte (Windows): still not a retransmission.
        send!(a, C @ 120_000, { seq: c_seq(99), ack: s_seq(0), payload_len: 1 } => [KeepAlive]);
        send!(a, S @ 120_010, { seq: s_seq(0), ack: c_seq(100) } => [KeepAliveAck]);
    }

    #[test]
    fn spurious_retransmission_of_acknowledged_data() {
        let mut a = established();
        send!(a, C @ 30, { seq: c_seq(0), ack: s_seq(0), payload_len: 100 } => []);
        send!(a, S @ 40, { seq: s_seq(0), ack: c_seq(100) } => []);
        // The sender missed the ACK and resends what the receiver already has.
        send!(a, C @ 300, { seq: c_seq(0), ack: s_seq(0), payload_len: 100 } => [Retransmission, SpuriousRetransmission]);
    }

    #[test]
    fn out_of_order_within_the_first_rtt() {
        let mut a = established();
        send!(a, C @ 30, { seq: c_seq(0), ack: s_seq(0), payload_len: 100 } => []);
        send!(a, C @ 31, { seq: c_seq(200), ack: s_seq(0), payload_len: 100 } => [LostSegment]);
        // The gap arrives 1 ms later, well within the 20 ms handshake RTT.
        send!(a, C @ 32, { seq: c_seq(100), ack: s_seq(0), payload_len: 100 } => [OutOfOrder]);
        // The same gap-filler arriving later than one RTT is a retransmission instead.
        send!(a, C @ 100, { seq: c_seq(100), ack: s_seq(0), payload_len: 100 } => [Retransmission]);
    }

    #[test]
    fn lost_segment_then_ack_of_the_unseen_data() {
        let mut a = established();
        send!(a, C @ 30, { seq: c_seq(0), ack: s_seq(0), payload_len: 100 } => []);
        // c_seq(100)..c_seq(200) was not captured.
        send!(a, C @ 31, { seq: c_seq(200), ack: s_seq(0), payload_len: 100 } => [LostSegment]);
        // The receiver got it: its ACK covers the hole, reported once.
        send!(a, S @ 50, { seq: s_seq(0), ack: c_seq(300) } => [AckLostSegment]);
        send!(a, S @ 51, { seq: s_seq(0), ack: c_seq(300) } => [DuplicateAck]);
    }

    #[test]
    fn ack_beyond_all_data_sent_is_reported_once_per_ack_run() {
        let mut a = established();
        send!(a, C @ 30, { seq: c_seq(0), ack: s_seq(0), payload_len: 100 } => []);
        // c_seq(100)..c_seq(200) was sent but not captured, and nothing after it.
        send!(a, S @ 50, { seq: s_seq(0), ack: c_seq(200) } => [AckLostSegment]);
        send!(a, S @ 60, { seq: s_seq(0), ack: c_seq(300) } => []);
        // Until the client moves its own ACK, Wireshark's dupack counter for it sits
        // at -1 (unsigned), which qualifies the server's next retransmission as fast
        // (tshark 4.0.17 does this on zeek's reassembly.pcap, frames 8 to 12).
        send!(a, S @ 70, { seq: s_seq(0), ack: c_seq(300), payload_len: 50 } => []);
        // The client's own copy of the hole, already ACKed: spurious, though it
        // does not move the client's ACK.
        send!(a, C @ 72, { seq: c_seq(100), ack: s_seq(0), payload_len: 100 } => [Retransmission, SpuriousRetransmission]);
        send!(a, S @ 75, { seq: s_seq(0), ack: c_seq(300), payload_len: 50 } => [Retransmission, FastRetransmission]);
    }

    #[test]
    fn sequence_numbers_wrapping_past_2_pow_32() {
        let c_isn = u32::MAX - 150;
        let c = |offset: u32| SeqNumber(c_isn) + 1 + offset;
        let mut a = established_at(c_isn, S_ISN);
        send!(a, C @ 30, { seq: c(0), ack: s_seq(0), payload_len: 100 } => []);
        // This segment straddles 2^32: it starts at 2^32 - 50 and ends at 50.
        send!(a, C @ 31, { seq: c(100), ack: s_seq(0), payload_len: 100 } => []);
        assert_eq!(c(200), SeqNumber(50));
        send!(a, S @ 50, { seq: s_seq(0), ack: c(100) } => []);
        send!(a, C @ 300, { seq: c(100), ack: s_seq(0), payload_len: 100 } => [Retransmission]);
        send!(a, C @ 301, { seq: c(300), ack: s_seq(0), payload_len: 100 } => [LostSegment]);
        send!(a, S @ 310, { seq: s_seq(0), ack: c(400) } => [AckLostSegment]);
        send!(a, C @ 600, { seq: c(0), ack: s_seq(0), payload_len: 100 } => [Retransmission, SpuriousRetransmission]);
    }

    #[test]
    fn window_full_at_the_scaled_right_edge() {
        let mut a = StreamAnalysis::new();
        let (c, s) = (SeqNumber(C_ISN), SeqNumber(S_ISN));
        send!(a, C @ 0, { seq: c, flags: SYN, window: 64240, window_scale: Some(2) } => []);
        send!(a, S @ 10, { seq: s, ack: c + 1, flags: SYN | ACK, window: 300, window_scale: Some(2) } => []);
        // Until the server's first pure ACK its window is not scaled: 300 bytes.
        send!(a, C @ 20, { seq: c_seq(0), ack: s_seq(0), payload_len: 300 } => [WindowFull]);
        // 250 << 2 = 1000 bytes from the ACK.
        send!(a, S @ 30, { seq: s_seq(0), ack: c_seq(300), window: 250 } => []);
        send!(a, C @ 40, { seq: c_seq(300), ack: s_seq(0), payload_len: 500 } => []);
        send!(a, C @ 41, { seq: c_seq(800), ack: s_seq(0), payload_len: 500 } => [WindowFull]);
    }

    #[test]
    fn window_full_needs_known_scaling() {
        // Mid-stream pickup: no SYN seen, so the peer's scale is unknown.
        let mut a = StreamAnalysis::new();
        send!(a, S @ 0, { seq: s_seq(0), ack: c_seq(0), window: 100 } => []);
        send!(a, C @ 1, { seq: c_seq(0), ack: s_seq(0), payload_len: 100 } => []);
    }

    #[test]
    fn reused_port_syn_starts_a_new_connection() {
        let mut a = established();
        send!(a, C @ 30, { seq: c_seq(0), ack: s_seq(0), payload_len: 100 } => []);
        send!(a, C @ 40, { seq: c_seq(100), ack: s_seq(0), flags: FIN | ACK } => []);
        send!(a, S @ 50, { seq: s_seq(0), ack: c_seq(101), flags: FIN | ACK } => []);
        send!(a, C @ 60, { seq: c_seq(101), ack: s_seq(1) } => []);
        // Same ports, new ISN: a new connection whose state starts afresh, so its
        // sequence numbers far below the old ones are not retransmissions.
        let (c2, s2) = (SeqNumber(7), SeqNumber(90_000));
        send!(a, C @ 5000, { seq: c2, flags: SYN } => [ReusedPorts]);
        send!(a, S @ 5010, { seq: s2, ack: c2 + 1, flags: SYN | ACK } => []);
        send!(a, C @ 5020, { seq: c2 + 1, ack: s2 + 1 } => []);
        send!(a, C @ 5030, { seq: c2 + 1, ack: s2 + 1, payload_len: 10 } => []);
    }

    #[test]
    fn reused_port_syn_from_the_other_end() {
        let mut a = established();
        send!(a, C @ 30, { seq: c_seq(0), ack: s_seq(0), flags: RST } => []);
        // The former server now connects out from its port to the former client's.
        let (s2, c2) = (SeqNumber(123), SeqNumber(456));
        send!(a, S @ 100, { seq: s2, flags: SYN } => [ReusedPorts]);
        send!(a, C @ 110, { seq: c2, ack: s2 + 1, flags: SYN | ACK } => []);
        send!(a, S @ 120, { seq: s2 + 1, ack: c2 + 1 } => []);
        send!(a, S @ 130, { seq: s2 + 1, ack: c2 + 1, payload_len: 10 } => []);
        send!(a, S @ 500, { seq: s2 + 1, ack: c2 + 1, payload_len: 10 } => [Retransmission]);
    }

    #[test]
    fn syn_retransmission_after_rst_carrying_the_peers_ack() {
        // RFC 793 section 3.4: the RST answering an unacceptable ACK takes its seq
        // from that ACK, which says nothing about our own stream (Wireshark #17616).
        let mut a = StreamAnalysis::new();
        let c = SeqNumber(C_ISN);
        send!(a, C @ 0, { seq: c, flags: SYN } => []);
        send!(a, S @ 10, { seq: SeqNumber(S_ISN), ack: SeqNumber(900_000) } => [AckLostSegment]);
        send!(a, C @ 11, { seq: SeqNumber(900_000), flags: RST } => []);
        send!(a, C @ 3000, { seq: c, flags: SYN } => [Retransmission]);
        send!(a, S @ 3010, { seq: SeqNumber(S_ISN), ack: c + 1, flags: SYN | ACK } => [ReusedPorts]);
        send!(a, C @ 3020, { seq: c + 1, ack: SeqNumber(S_ISN) + 1 } => []);
        send!(a, C @ 3021, { seq: c + 1, ack: SeqNumber(S_ISN) + 1, payload_len: 10 } => []);
    }

    #[test]
    fn fast_and_spurious_imply_retransmission() {
        let mut a = established();
        send!(a, C @ 30, { seq: c_seq(0), ack: s_seq(0), payload_len: 100 } => []);
        let got = a.on_segment(
            S,
            &SegmentInfo {
                ts_ns: at(40),
                seq: s_seq(0),
                ack: c_seq(100),
                ..TEMPL
            },
        );
        assert!(got.is_empty());
        let got = a.on_segment(
            C,
            &SegmentInfo {
                ts_ns: at(400),
                seq: c_seq(0),
                ack: s_seq(0),
                payload_len: 100,
                ..TEMPL
            },
        );
        assert!(got.contains(SpuriousRetransmission) && got.contains(Retransmission));
    }

    proptest::proptest! {
        /// Arbitrary segments in arbitrary order from both ends never panic.
        #[test]
        fn never_panics_on_arbitrary_segments(
            segs in proptest::collection::vec(
                (proptest::bool::ANY, proptest::num::u64::ANY, proptest::num::u32::ANY,
                 proptest::num::u32::ANY, proptest::num::u32::ANY, proptest::num::u8::ANY,
                 proptest::num::u16::ANY, proptest::option::of(proptest::num::u8::ANY)),
                0..64,
            )
        ) {
            let mut a = StreamAnalysis::new();
            for (second, ts_ns, seq, ack, payload_len, flags, window, window_scale) in segs {
                let side = if second { S } else { C };
                let seg = SegmentInfo {
                    ts_ns,
                    seq: SeqNumber(seq),
                    ack: SeqNumber(ack),
                    payload_len,
                    flags,
                    window,
                    window_scale,
                };
                let _ = a.on_segment(side, &seg);
            }
        }
    }
}
