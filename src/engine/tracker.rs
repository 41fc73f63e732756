//! Liberal TCP tracking: per-direction sequence edges learned from what the engine
//! sees, and a class for every segment strict conntrack would doubt.
//!
//! The edges follow Linux conntrack's `td_end`, `td_maxend` and `td_maxwin`
//! (Guido van Rooij, "Real Stateful TCP Packet Filtering in IP Filter"), but where
//! conntrack answers INVALID, this module says which benign or hostile pattern the
//! segment matches. Only hostile classes are ever dropped.

use crate::engine::analysis::tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
use crate::engine::reason::Reason;
use crate::engine::seq::SeqNumber;
use crate::wire::tcp_options::{SackBlocks, TcpOptions};

/// Slack, in bytes, beyond the receiver's largest window before data counts as far
/// outside it rather than slightly beyond (a window update we did not see, or a
/// sender overshooting by one window, is common; more is not).
const MIN_SLACK: u32 = 65_535;

/// conntrack's MAXACKWINDOW: how far below the receiver's edge an ACK may lag.
const MAX_ACK_LAG: u32 = 66_000;

/// The connection state, one per flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TcpState {
    /// Nothing tracked yet.
    #[default]
    None,
    /// The initiator's SYN seen.
    SynSent,
    /// The responder's SYN/ACK seen.
    SynRecv,
    /// Data may flow both ways.
    Established,
    /// One side has sent FIN.
    FinWait,
    /// Both sides have sent FIN.
    Closing,
    /// Both FINs acknowledged, or a valid RST seen.
    Closed,
}

impl TcpState {
    /// The name used in output.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "none",
            TcpState::SynSent => "syn_sent",
            TcpState::SynRecv => "syn_recv",
            TcpState::Established => "established",
            TcpState::FinWait => "fin_wait",
            TcpState::Closing => "closing",
            TcpState::Closed => "closed",
        }
    }
}

/// What one endpoint has shown.
#[derive(Clone, Copy, Debug, Default)]
struct Endpoint {
    /// Highest sequence number sent plus one (`td_end`).
    end: SeqNumber,
    /// Highest right edge the other side allowed this endpoint (`td_maxend`).
    maxend: SeqNumber,
    /// Largest (scaled) window this endpoint advertised (`td_maxwin`).
    maxwin: u32,
    /// Highest cumulative ACK this endpoint sent.
    last_ack: SeqNumber,
    /// The raw window field of this endpoint's latest segment.
    win: u16,
    /// Initial sequence number, when its SYN was seen.
    isn: SeqNumber,
    /// Window scale shift this endpoint's SYN announced.
    scale: u8,
    /// Maximum segment size its SYN announced (0: unknown).
    mss: u16,
    /// `seen::*` bits.
    seen: u8,
}

/// Bits of [`Endpoint::seen`].
mod seen {
    /// Any segment from this endpoint: `end` is meaningful.
    pub const ANY: u8 = 1;
    /// Its SYN: `isn` is meaningful.
    pub const SYN: u8 = 2;
    /// Its FIN.
    pub const FIN: u8 = 4;
    /// Any ACK from it: `last_ack` is meaningful.
    pub const ACK: u8 = 8;
    /// Its SYN carried a window scale option.
    pub const WSCALE: u8 = 16;
    /// Window scaling is known for the flow (both SYNs seen, or given up on).
    pub const SCALE_KNOWN: u8 = 32;
    /// A segment *from* this endpoint was seen: `end` is what it sent, not merely
    /// what the other side acknowledged (live, the server's segments are not queued,
    /// so its edges come from the client's ACKs and an ACK beyond them proves nothing).
    pub const OWN: u8 = 64;
    /// Its edges come (also) from the shadow feed, which may lag behind the packets
    /// judged at once.
    pub const LAGS: u8 = 128;
}

impl Endpoint {
    fn has(&self, bit: u8) -> bool {
        self.seen & bit != 0
    }
}

/// The displacement of SACK blocks from the ACK, narrowed over a flow's packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SackOffset {
    /// Lowest consistent offset.
    pub low: u32,
    /// Highest consistent offset.
    pub high: u32,
    /// Packets that agreed with the range.
    pub hits: u16,
}

/// Liberal tracking state for one TCP flow. Index 0 is the flow's first sender.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpTracker {
    ends: [Endpoint; 2],
    state: TcpState,
    /// `hits == 0` means no displacement seen.
    sack_offset: SackOffset,
}

/// One segment as the tracker sees it.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// Sending endpoint: 0 = the flow's first sender.
    pub from: usize,
    /// Sequence number.
    pub seq: SeqNumber,
    /// Acknowledgement number (with ACK only).
    pub ack: SeqNumber,
    /// Flag byte.
    pub flags: u8,
    /// Raw window.
    pub window: u16,
    /// Payload length.
    pub payload_len: u32,
    /// Parsed options.
    pub options: &'a TcpOptions,
}

impl Segment<'_> {
    /// Sequence space the segment occupies: payload plus one each for SYN and FIN.
    fn seq_len(&self) -> u32 {
        self.payload_len
            .wrapping_add(u32::from(self.flags & SYN != 0))
            .wrapping_add(u32::from(self.flags & FIN != 0))
    }
}

/// The tracker's judgement of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Why the segment is doubtful; `None` when strict conntrack would accept it too.
    pub reason: Option<Reason>,
    /// True when this segment started a new connection on the flow's ports.
    pub reopened: bool,
}

impl Verdict {
    const FINE: Verdict = Verdict {
        reason: None,
        reopened: false,
    };

    fn because(reason: Reason) -> Verdict {
        Verdict {
            reason: Some(reason),
            reopened: false,
        }
    }
}

/// Returns true if and only if a correct TCP stack can send this flag combination.
///
/// The table is Linux conntrack's `tcp_valid_flags`, with PSH, ECE and CWR ignored
/// (they combine with anything):
///
/// | flags          | why valid                                   |
/// |----------------|---------------------------------------------|
/// | SYN            | opening                                     |
/// | SYN+URG        | opening (some stacks keep URG)              |
/// | SYN+ACK        | answering an opening                        |
/// | RST, RST+ACK   | resetting, with or without acknowledging    |
/// | FIN+ACK (+URG) | closing                                     |
/// | ACK (+URG)     | everything else                             |
///
/// Everything else (SYN+FIN, SYN+RST, FIN without ACK, no flags at all, ...) is how
/// scanners fingerprint stacks and how evasions confuse firewalls.
pub fn flags_are_valid(flags: u8) -> bool {
    let f = flags & !(PSH | ECE | CWR);
    matches!(
        f,
        x if x == SYN
            || x == SYN | URG
            || x == SYN | ACK
            || x == RST
            || x == RST | ACK
            || x == FIN | ACK
            || x == FIN | ACK | URG
            || x == ACK
            || x == ACK | URG
    )
}

impl TcpTracker {
    /// The connection state.
    pub fn state(&self) -> TcpState {
        self.state
    }

    /// The SACK displacement learned so far, if any.
    pub fn sack_offset(&self) -> Option<SackOffset> {
        (self.sack_offset.hits > 0).then_some(self.sack_offset)
    }

    /// How far past its ACK endpoint `s` lets the other side send: the largest
    /// window it advertised (at least 64 KiB), bounding what SACK blocks may cover.
    pub fn window_room(&self, s: usize) -> u32 {
        self.ends[s & 1].maxwin.max(MIN_SLACK)
    }

    /// The size of the wire segments endpoint `s` sends in a segment whose TCP header
    /// is `header_len` bytes: the smaller of the two SYNs' MSS (each side's own MTU
    /// and what it lets the other send) less the options every segment carries. What
    /// Linux uses as its GSO size when the path MTU is the interface's; `None` when
    /// either SYN was missed or carried no MSS.
    pub fn segment_unit(&self, header_len: u16) -> Option<u32> {
        let (a, b) = (self.ends[0].mss, self.ends[1].mss);
        let options = u32::from(header_len.saturating_sub(20));
        (a > 0 && b > 0)
            .then(|| u32::from(a.min(b)).saturating_sub(options))
            .filter(|&u| u > 0)
    }

    /// Pins the SACK displacement to an offset known exactly (by
    /// [`crate::engine::sack_repair`]).
    pub fn pin_sack_offset(&mut self, offset: u32) {
        self.sack_offset.low = offset;
        self.sack_offset.high = offset;
        self.sack_offset.hits = self.sack_offset.hits.max(1);
    }

    /// Returns true if and only if endpoint `s` opened with a SYN whose initial
    /// sequence number is `isn` (a retransmitted SYN, not a new connection).
    pub fn syn_repeats(&self, s: usize, isn: SeqNumber) -> bool {
        let e = &self.ends[s & 1];
        e.has(seen::SYN) && e.isn == isn
    }

    /// Judges a segment nfqwall cannot trust (conntrack called it INVALID) without
    /// learning from it: the judgement runs on a copy, returned for the caller to
    /// adopt only if the segment is let through on evidence. When nothing has been
    /// seen from the receiver (live, the server's segments are not queued), the copy
    /// takes the receiver's edges from this segment's ACK first, so that the SACK
    /// blocks can be compared with the ACK that carries them.
    pub fn judge_untrusted(&self, seg: &Segment<'_>) -> (Verdict, TcpTracker) {
        let mut trial = *self;
        let s = seg.from & 1;
        let r = s ^ 1;
        if seg.flags & (ACK | SYN | RST) == ACK && !trial.ends[r].has(seen::ANY) {
            let window = u32::from(seg.window) << trial.ends[s].scale.min(14);
            let rcv = &mut trial.ends[r];
            rcv.seen |= seen::ANY | seen::SCALE_KNOWN;
            rcv.scale = 14;
            rcv.end = seg.ack;
            rcv.maxend = seg.ack + window;
            rcv.maxwin = 1;
        }
        let v = trial.on_segment(seg);
        (v, trial)
    }

    /// Takes the SACK displacement evidence of `trial` (a copy made by
    /// [`TcpTracker::judge_untrusted`]): what untrusted segments show about a
    /// middlebox accumulates, their edges do not, with one exception. When nfqwall has
    /// never seen the receiver (`from`'s peer) send anything, all it knows of the
    /// receiver is the highest ACK the sender gave; a segment whose displaced SACK
    /// agreed with the flow's offset (`displaced`) raises that, so the next one is
    /// judged against it as conntrack's `td_end` of a picked-up side would be. It
    /// never makes a segment *of* the receiver look valid; it only narrows the offset.
    pub fn adopt_sack_evidence(&mut self, trial: &TcpTracker, from: usize, displaced: bool) {
        self.sack_offset = trial.sack_offset;
        let r = (from & 1) ^ 1;
        let (mine, theirs) = (self.ends[r], trial.ends[r]);
        if displaced
            && !mine.has(seen::OWN)
            && theirs.has(seen::ANY)
            && (!mine.has(seen::ANY) || theirs.end > mine.end)
        {
            self.ends[r] = theirs;
        }
    }

    /// Marks endpoint `s`'s edges as learned from the shadow feed, which may lag.
    pub fn mark_fed(&mut self, s: usize) {
        self.ends[s & 1].seen |= seen::LAGS;
    }

    /// Returns true if and only if a segment from `from` was the flow's first and the
    /// tracker has not seen the other side yet.
    pub fn is_one_sided(&self) -> bool {
        !self.ends[1].has(seen::ANY)
    }

    /// Judges one segment and learns from it. Hostile segments teach nothing.
    pub fn on_segment(&mut self, seg: &Segment<'_>) -> Verdict {
        self.judge_and_learn(seg, false)
    }

    /// [`TcpTracker::on_segment`] for a segment conntrack accepted as ESTABLISHED. It
    /// checked the segment against both directions' windows; where nfqwall never saw
    /// the receiver send (live, the server's segments are neither queued nor fed), or
    /// knows its window only from the shadow feed (which lags), it has no current
    /// window to check the sequence against and does not pretend to: only the ACK
    /// checks apply, and the segment teaches its edges.
    pub fn on_accepted_segment(&mut self, seg: &Segment<'_>) -> Verdict {
        self.judge_and_learn(seg, true)
    }

    fn judge_and_learn(&mut self, seg: &Segment<'_>, accepted: bool) -> Verdict {
        if !flags_are_valid(seg.flags) {
            return Verdict::because(Reason::ImpossibleFlags(seg.flags));
        }
        let s = seg.from & 1;
        let r = s ^ 1;
        let is_syn = seg.flags & SYN != 0;
        let is_ack = seg.flags & ACK != 0;
        let is_rst = seg.flags & RST != 0;

        // The state grid. One line per transition says why.
        match (self.state, is_syn, is_ack, is_rst) {
            // A first SYN opens the flow; a first SYN/ACK or other segment picks it up
            // mid-handshake or mid-stream (conntrack's loose pickup).
            (TcpState::None, _, _, _) => return self.pick_up(seg),
            // A SYN without ACK on a closed flow is a new connection reusing the ports.
            (TcpState::Closed, true, false, _) => {
                *self = TcpTracker::default();
                let mut v = self.pick_up(seg);
                v.reopened = true;
                return v;
            }
            // The responder answers the SYN: learn its ISN and the window scaling.
            (TcpState::SynSent, true, true, _) if s == 1 => return self.syn_ack(seg),
            // A SYN/ACK retransmission (same ISN) or a simultaneous-open SYN/ACK.
            (TcpState::SynRecv, true, true, _) if s == 1 => return self.syn_ack(seg),
            // A SYN from an endpoint that already sent one: retransmission if the ISN
            // repeats; otherwise new connection (closing flow) or injection (open flow).
            (_, true, false, _) => return self.repeated_syn(seg),
            // A SYN/ACK anywhere else (late duplicate after the handshake).
            (_, true, true, _) => return self.late_syn_ack(seg),
            // A reset: window-checked per RFC 5961 before it may close anything.
            (_, false, _, true) => return self.reset(seg),
            _ => {}
        }

        let fine_state = self.state;
        let verdict = self.check_window(seg, accepted);
        if matches!(verdict.reason, Some(r) if r.class() == crate::engine::reason::Class::Hostile) {
            return verdict;
        }
        let far = matches!(
            verdict.reason,
            Some(Reason::SeqFarOutsideWindow { .. } | Reason::AckOutsideWindow { .. })
        );
        if !far {
            self.learn(seg, s, r);
        }
        self.advance_close(seg, s, r, fine_state);
        verdict
    }

    fn pick_up(&mut self, seg: &Segment<'_>) -> Verdict {
        let s = seg.from & 1;
        let e = &mut self.ends[s];
        e.seen = seen::ANY | seen::OWN;
        e.end = seg.seq + seg.seq_len();
        if seg.flags & SYN != 0 {
            e.isn = seg.seq;
            e.seen |= seen::SYN;
            if let Some(shift) = seg.options.window_scale {
                e.seen |= seen::WSCALE;
                e.scale = shift;
            }
            e.mss = seg.options.mss.unwrap_or(0);
        } else {
            // Mid-stream: the scale was announced in a SYN we missed. Assume the largest
            // so the window never looks smaller than it is (liberal, like conntrack's
            // pickup with `td_scale` unknown).
            e.seen |= seen::SCALE_KNOWN;
            e.scale = 14;
        }
        e.maxwin = u32::from(seg.window).max(1);
        e.win = seg.window;
        e.maxend = e.end;
        if seg.flags & ACK != 0 {
            e.seen |= seen::ACK;
            e.last_ack = seg.ack;
        }
        if seg.flags & (SYN | ACK) == ACK {
            // Mid-stream: this ACK and window are all we know of the other side.
            self.learn(seg, s, s ^ 1);
        }
        self.state = match seg.flags & (SYN | ACK | RST) {
            SYN => TcpState::SynSent,
            x if x == SYN | ACK => TcpState::SynRecv,
            x if x & RST != 0 => TcpState::Closed,
            _ => TcpState::Established,
        };
        Verdict::FINE
    }

    fn syn_ack(&mut self, seg: &Segment<'_>) -> Verdict {
        let s = seg.from & 1;
        let r = s ^ 1;
        let init = self.ends[r];
        let e = &mut self.ends[s];
        let first = !e.has(seen::SYN);
        if !first && e.isn != seg.seq {
            // A second SYN/ACK with a different ISN: the responder restarted, or
            // somebody guesses. Treat it as a new answer if it acknowledges the SYN.
            if !(init.has(seen::SYN) && seg.ack == init.isn + 1) {
                return Verdict::because(Reason::SynOutOfWindow {
                    distance: seq_distance(seg.seq, e.isn, e.end),
                });
            }
        }
        e.seen |= seen::ANY | seen::OWN | seen::SYN | seen::ACK;
        e.isn = seg.seq;
        e.end = seg.seq + seg.seq_len();
        e.last_ack = seg.ack;
        e.mss = seg.options.mss.unwrap_or(0);
        if let Some(shift) = seg.options.window_scale {
            e.seen |= seen::WSCALE;
            e.scale = shift;
        }
        // RFC 7323 section 2.2: scaling is in force only if both SYNs carried the option.
        let both = e.has(seen::WSCALE) && init.has(seen::WSCALE);
        if !both {
            e.scale = 0;
            self.ends[r].scale = 0;
        }
        self.ends[s].seen |= seen::SCALE_KNOWN;
        self.ends[r].seen |= seen::SCALE_KNOWN;
        let e = &mut self.ends[s];
        e.maxwin = e.maxwin.max(u32::from(seg.window)).max(1);
        e.win = seg.window;
        // Edges are compared in serial order, so a never-set edge must not be
        // compared: the first SYN/ACK sets it outright.
        e.maxend = if first { e.end } else { e.maxend.max(e.end) };
        // The SYN/ACK's window is unscaled; it still bounds what the initiator may send.
        let right = seg.ack + u32::from(seg.window);
        let init = &mut self.ends[r];
        if init.maxend < right || !init.has(seen::ANY) {
            init.maxend = right;
        }
        self.state = TcpState::SynRecv;
        Verdict::FINE
    }

    fn repeated_syn(&mut self, seg: &Segment<'_>) -> Verdict {
        let s = seg.from & 1;
        let e = self.ends[s];
        if e.has(seen::SYN) && e.isn == seg.seq {
            return Verdict::FINE;
        }
        if matches!(
            self.state,
            TcpState::SynSent | TcpState::FinWait | TcpState::Closing
        ) || !e.has(seen::SYN) && !self.ends[s ^ 1].has(seen::ANY)
        {
            // The old attempt or connection is over: this SYN starts a new one.
            *self = TcpTracker::default();
            let mut v = self.pick_up(seg);
            v.reopened = true;
            return v;
        }
        self.syn_in_window(seg)
    }

    /// A SYN/ACK after the handshake: a late duplicate if the ISN repeats.
    fn late_syn_ack(&mut self, seg: &Segment<'_>) -> Verdict {
        let e = self.ends[seg.from & 1];
        if e.has(seen::SYN) && e.isn == seg.seq {
            return Verdict::FINE;
        }
        self.syn_in_window(seg)
    }

    /// RFC 5961 section 4: a SYN on a synchronized connection is answered with a
    /// challenge ACK whatever its sequence number, so a SYN within the window does no
    /// harm; one far outside is a blind injection attempt.
    fn syn_in_window(&self, seg: &Segment<'_>) -> Verdict {
        let (low, high) = self.acceptable_range(seg.from & 1);
        if seg.seq.in_range(low, high + 1) {
            Verdict::FINE
        } else {
            Verdict::because(Reason::SynOutOfWindow {
                distance: seq_distance(seg.seq, low, high),
            })
        }
    }

    /// RFC 5961 section 3 and RFC 9293 section 3.10.7: a RST is acceptable only within
    /// the receiver's window; in SYN-SENT only if it acknowledges the SYN.
    fn reset(&mut self, seg: &Segment<'_>) -> Verdict {
        let s = seg.from & 1;
        let r = s ^ 1;
        if self.state == TcpState::SynSent && s == 1 {
            let syn = self.ends[r];
            return if seg.flags & ACK != 0 && seg.ack == syn.end {
                self.state = TcpState::Closed;
                Verdict::FINE
            } else {
                Verdict::because(Reason::RstBadAck)
            };
        }
        if !self.ends[s].has(seen::ANY) {
            // Nothing seen from this sender: judge it against what the receiver
            // acknowledged, the only picture of the sender's sequence space we have.
            let recv = self.ends[r];
            if recv.has(seen::ACK) {
                let low = recv.last_ack - recv.maxwin.max(MIN_SLACK);
                let high = recv.last_ack + window_of(&recv).max(MIN_SLACK);
                if !seg.seq.in_range(low, high + 1) {
                    return Verdict::because(Reason::RstOutOfWindow {
                        distance: seq_distance(seg.seq, low, high),
                    });
                }
            }
            self.state = TcpState::Closed;
            return Verdict::FINE;
        }
        let (low, high) = self.acceptable_range(s);
        if !seg.seq.in_range(low, high + 1) {
            return Verdict::because(Reason::RstOutOfWindow {
                distance: seq_distance(seg.seq, low, high),
            });
        }
        let was_closed = self.state == TcpState::Closed;
        self.state = TcpState::Closed;
        if was_closed {
            Verdict::because(Reason::LateAfterClose)
        } else {
            Verdict::FINE
        }
    }

    /// The sequence range in which endpoint `s` may place a RST or SYN: from a window
    /// below what it sent (the receiver may have acknowledged less) to a window above
    /// the right edge the receiver allowed.
    fn acceptable_range(&self, s: usize) -> (SeqNumber, SeqNumber) {
        let snd = self.ends[s];
        let rcv = self.ends[s ^ 1];
        let win = rcv.maxwin.max(1);
        let low_base = if rcv.has(seen::ACK) {
            rcv.last_ack.min(snd.end)
        } else {
            snd.end
        };
        let high_base = snd.maxend.max(snd.end);
        (low_base - win, high_base + win)
    }

    /// Checks a data/ACK segment against the four inequalities, in this order:
    ///
    /// - I.   `seq + len <= sender.maxend` (SEQ is under the upper bound: inside the
    ///   receiver's window)
    /// - II.  `seq + len >= sender.end - receiver.maxwin` (SEQ is over the lower
    ///   bound: not older than a window)
    /// - III. `ack <= receiver.end` (ACK is under the upper bound: acknowledges
    ///   only data that was sent)
    /// - IV.  `ack >= receiver.end - MAX_ACK_LAG` (ACK is over the lower bound)
    ///
    /// then the SACK blocks. Where conntrack stops at the first failure with
    /// INVALID, each failure here is matched to the benign pattern that explains it.
    ///
    /// `accepted`: conntrack accepted the segment; then I and II need a window the
    /// receiver was seen to offer.
    fn check_window(&mut self, seg: &Segment<'_>, accepted: bool) -> Verdict {
        let s = seg.from & 1;
        let r = s ^ 1;
        let snd = self.ends[s];
        let rcv = self.ends[r];
        if self.state == TcpState::Closed {
            return Verdict::because(Reason::LateAfterClose);
        }
        let seq_end = seg.seq + seg.seq_len();
        let slack = rcv.maxwin.max(MIN_SLACK);

        // Conntrack checked an accepted segment against the window as it is now; when
        // nfqwall never saw the receiver send, or learned its edges from the feed,
        // which delivers in batches and so lags, nfqwall's window is older than
        // conntrack's and no ground for a doubt.
        let window_unseen = accepted && (!rcv.has(seen::OWN) || rcv.has(seen::LAGS));
        if snd.has(seen::ANY) && rcv.has(seen::ANY) && !window_unseen {
            // I: over the upper bound.
            if seq_end > snd.maxend && seg.seq_len() > 0 {
                if seg.payload_len == 1 && seg.seq == snd.end && window_of(&rcv) == 0 {
                    return Verdict::because(Reason::ZeroWindowProbe);
                }
                let over = seq_end.distance_from(snd.maxend);
                if over <= slack {
                    return Verdict::because(Reason::SlightlyBeyondWindow { over });
                }
                return Verdict::because(Reason::SeqFarOutsideWindow { distance: over });
            }
            // II: under the lower bound.
            let lower = snd.end - rcv.maxwin.max(1) - 1;
            if seq_end < lower && !(seg.seq_len() == 0 && seg.seq == snd.end) {
                if rcv.has(seen::ACK) && seq_end <= rcv.last_ack && lower.diff(seq_end) < 1 << 30 {
                    return Verdict::because(Reason::RetransmittedAckedData);
                }
                return Verdict::because(Reason::SeqFarOutsideWindow {
                    distance: lower.distance_from(seq_end),
                });
            }
        }
        if seg.flags & ACK != 0 && rcv.has(seen::ANY) {
            // III: ACK over the upper bound (of what the receiver was seen sending).
            // An edge the shadow feed taught may lag (the feed delivers a batch late):
            // an ACK beyond it is then no proof of anything either way, so the SACK
            // blocks still get their say before the ACK is reported.
            let unseen =
                (seg.ack > rcv.end && rcv.has(seen::OWN)).then(|| Reason::AckOfUnseenData {
                    over: seg.ack.distance_from(rcv.end),
                });
            if let Some(r) = unseen.filter(|_| !rcv.has(seen::LAGS)) {
                return Verdict::because(r);
            }
            // IV: ACK far under the lower bound: nothing the receiver could still
            // expect (a merely old ACK is harmless and the retransmission patterns
            // describe it).
            if seg.ack < rcv.end - MAX_ACK_LAG.max(rcv.maxwin) && seg.ack.diff(rcv.end) < -(1 << 30)
            {
                return Verdict::because(Reason::AckOutsideWindow {
                    distance: rcv.end.distance_from(seg.ack),
                });
            }
            if let Some(reason) = self.check_sack(seg, &seg.options.sack, rcv, snd) {
                return Verdict::because(reason);
            }
            if let Some(r) = unseen {
                return Verdict::because(r);
            }
        }
        Verdict::FINE
    }

    /// A SACK block names data the receiver holds from the other side: it must lie
    /// between (a window below) the ACK and the highest sequence that side sent. A
    /// block outside that range by an amount that stays constant across packets is
    /// the mark of a middlebox that shifted the sequence space but not the SACK
    /// option (RFC 2018 blocks are absolute sequence numbers).
    ///
    /// For a block `[left, right)` displaced by `offset`: `left - offset > ack` (except
    /// for a D-SACK) and `right - offset <= data_end`, so
    /// `right - data_end <= offset < left - ack`,
    /// where `data_end` is the higher of what the data sender sent and the window
    /// the SACK sender offered.
    /// Intersecting these ranges over a flow narrows the offset.
    fn check_sack(
        &mut self,
        seg: &Segment<'_>,
        sack: &SackBlocks,
        data_side: Endpoint,
        sack_side: Endpoint,
    ) -> Option<Reason> {
        let ack = seg.ack;
        // The highest sequence the data sender sent, when nfqwall saw its data; when it
        // did not (live, only doubtful packets are queued), the window the SACK sender
        // offered bounds what can be in flight.
        // Live, an edge learned from the shadow feed may lag: the feed delivers the
        // data sender's segments a batch late, while the ACK naming them is judged at
        // once. What the SACK sender offered bounds what can be in flight whatever
        // the lag, so such an edge only raises that bound (a lagging edge must never
        // narrow the offset range past the true offset).
        let offered = ack + sack_side.maxwin;
        let exact = data_side.end > ack && !data_side.has(seen::LAGS);
        let data_end = if exact || data_side.end > offered {
            data_side.end
        } else {
            offered
        };
        // As conntrack's `receiver->td_end - MAXACKWINDOW(sender)`: what may lie below
        // the ACK (a D-SACK's duplicate) is bounded by the window the SACK sender
        // offered, not by the data sender's own.
        let below = sack_side.maxwin.max(data_side.maxwin).max(MIN_SLACK);
        let mut outside = false;
        let mut range: Option<(u32, u32)> = None;
        for (i, b) in sack.as_slice().iter().enumerate() {
            let plausible = b.left.in_range(ack - below, data_end + 1)
                && b.right.in_range(b.left + 1, data_end + 1);
            if plausible {
                continue;
            }
            outside = true;
            let low = b.right.distance_from(data_end);
            // RFC 2883: the first block may be a D-SACK, reporting a duplicate *below*
            // the cumulative ACK, so only the other blocks bound the offset from above.
            // (A D-SACK's data was sent too, so its right edge still bounds it below.)
            let high = if i == 0 {
                low.wrapping_add((1 << 30) - 1)
            } else {
                b.left.distance_from(ack).wrapping_sub(1)
            };
            range = match range {
                None => Some((low, high)),
                Some(prev) => intersect(prev, (low, high)),
            };
            if range.is_none() {
                break;
            }
        }
        if !outside {
            return None;
        }
        let Some(this) = range.filter(|&(lo, hi)| hi.wrapping_sub(lo) < 1 << 30) else {
            return Some(Reason::SackOutsideWindow);
        };
        let merged = match self.sack_offset() {
            None => Some(SackOffset {
                low: this.0,
                high: this.1,
                hits: 1,
            }),
            Some(prev) => intersect((prev.low, prev.high), this).map(|(low, high)| SackOffset {
                low,
                high,
                hits: prev.hits.saturating_add(1),
            }),
        };
        match merged {
            Some(m) => {
                self.sack_offset = m;
                Some(Reason::SackDisplaced {
                    offset_low: m.low,
                    offset_high: m.high,
                })
            }
            // The offset moved: a new middlebox mapping, or not a middlebox. Start over
            // from this packet's range, but name it honestly.
            None => {
                self.sack_offset = SackOffset {
                    low: this.0,
                    high: this.1,
                    hits: 1,
                };
                Some(Reason::SackOutsideWindow)
            }
        }
    }

    /// Updates the edges from a segment that was not hostile.
    fn learn(&mut self, seg: &Segment<'_>, s: usize, r: usize) {
        let seq_end = seg.seq + seg.seq_len();
        let rcv_known = self.ends[r].has(seen::ANY);
        let snd = &mut self.ends[s];
        if !snd.has(seen::ANY) {
            snd.seen |= seen::ANY | seen::OWN | seen::SCALE_KNOWN;
            snd.scale = 14;
            snd.end = seq_end;
            snd.maxend = seq_end;
            snd.maxwin = u32::from(seg.window).max(1);
        }
        snd.seen |= seen::OWN;
        if seq_end > snd.end {
            snd.end = seq_end;
        }
        if snd.maxend < snd.end {
            snd.maxend = snd.end;
        }
        if seg.flags & ACK != 0 {
            let window = u32::from(seg.window) << snd.scale.min(14);
            snd.maxwin = snd.maxwin.max(window).max(1);
            snd.win = seg.window;
            if !snd.has(seen::ACK) || seg.ack > snd.last_ack {
                snd.last_ack = seg.ack;
            }
            snd.seen |= seen::ACK;
            let right = seg.ack + window;
            let rcv = &mut self.ends[r];
            if !rcv_known {
                // Nothing seen from the other side yet: its edges start at this ACK.
                rcv.seen |= seen::ANY | seen::SCALE_KNOWN;
                rcv.scale = 14;
                rcv.end = seg.ack;
                rcv.maxend = right;
                rcv.maxwin = 1;
            } else {
                if seg.ack > rcv.end {
                    rcv.end = seg.ack;
                }
                if right > rcv.maxend {
                    rcv.maxend = right;
                }
            }
        }
    }

    /// FIN and close transitions, after the window check passed.
    fn advance_close(&mut self, seg: &Segment<'_>, s: usize, r: usize, before: TcpState) {
        if seg.flags & FIN != 0 {
            self.ends[s].seen |= seen::FIN;
        }
        let fins = self.ends[s].has(seen::FIN) as u8 + self.ends[r].has(seen::FIN) as u8;
        self.state = match (before, fins, seg.flags & ACK != 0) {
            // The handshake completes with the initiator's first ACK.
            (TcpState::SynRecv, 0, true) if s == 0 => TcpState::Established,
            // One FIN: half-closed.
            (TcpState::SynRecv | TcpState::Established, 1, _) => TcpState::FinWait,
            // Both FINs sent: closing until the last is acknowledged.
            (TcpState::SynRecv | TcpState::Established | TcpState::FinWait, 2, _) => {
                TcpState::Closing
            }
            // The last FIN acknowledged: the connection is over (TIME_WAIT).
            (TcpState::Closing, 2, true) if seg.flags & FIN == 0 && seg.ack == self.ends[r].end => {
                TcpState::Closed
            }
            (state, _, _) => state,
        };
    }
}

/// The endpoint's latest advertised receive window, scaled as the flow negotiated.
fn window_of(e: &Endpoint) -> u32 {
    u32::from(e.win) << e.scale.min(14)
}

/// Distance from `seq` to the nearest edge of `[low, high]`.
fn seq_distance(seq: SeqNumber, low: SeqNumber, high: SeqNumber) -> u32 {
    let below = low.distance_from(seq);
    let above = seq.distance_from(high);
    below.min(above)
}

/// Intersects two modular ranges `[lo, hi]` (each less than 2^31 wide).
fn intersect(a: (u32, u32), b: (u32, u32)) -> Option<(u32, u32)> {
    let base = a.0;
    let (a_hi, b_lo, b_hi) = (
        a.1.wrapping_sub(base),
        b.0.wrapping_sub(base),
        b.1.wrapping_sub(base),
    );
    // Shift into a's frame, where a = [0, a_hi]; b may straddle 0 (then b_lo > b_hi).
    let (lo, hi) = if b_lo <= b_hi {
        (b_lo, b_hi.min(a_hi))
    } else {
        (0, b_hi.min(a_hi))
    };
    (lo <= hi).then(|| (lo.wrapping_add(base), hi.wrapping_add(base)))
}
