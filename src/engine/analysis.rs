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
//!   [`SeqNumber`]; Wireshark compares `maxseqtobeacked > nextseq` as plain integers.
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
            // Nothing else about the segment is judged.
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
                // The peer asked for exactly this seq with two or more duplicate ACKs,
                // and this came within 20 ms of the last one.
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

    #[test]
    fn state_fits_the_flow_entry_budget() {
        assert!(core::mem::size_of::<StreamAnalysis>() <= 128);
    }
}
