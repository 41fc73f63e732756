//! The engine proper: [`Engine::decide`] turns one packet into one [`Decision`].

use crate::engine::analysis::{SegmentInfo, Side};
use crate::engine::counters::{CounterShard, CounterShards, Counters};
use crate::engine::flow::{secs, Flow, FlowKey, FlowTable, Lookup};
use crate::engine::meta::{CtHint, CtState, PacketMeta};
use crate::engine::patterns::{Pattern, Patterns};
use crate::engine::peers::PeerTable;
use crate::engine::policy::{Action, Mode, Policy, PolicyOutcome, RuleId, RuleInput, ServiceId};
use crate::engine::policy_slot::PolicySlot;
use crate::engine::reason::{Class, Reason};
use crate::engine::sack_repair::{self, Learned, RepairTable};
use crate::engine::spec::Setup;
use crate::engine::tracker::{self, Segment, TcpTracker};
use crate::wire::tcp_options::TcpOptions;
use crate::wire::{self, ParseError, Transport};
use core::net::IpAddr;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// What the engine decided for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the packet back to the kernel.
    Accept,
    /// Discard it.
    Drop,
}

impl Verdict {
    /// `accept` or `drop`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
        }
    }
}

/// What the engine wants done with one packet: the one answer a front end maps to
/// its own verdict (NFQUEUE verdict and marks live, per-packet output in replay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Discard it: hostile, or dropped by the policy (enforce mode only).
    Drop,
    /// Let it past the host's INVALID drop: conntrack called it INVALID, and nfqwall
    /// showed it benign on evidence (enforce mode only). Nothing else is vouched for.
    Vouch,
    /// Hand it on to the host's own rules, exactly as if nfqwall were absent.
    PassOn,
}

impl Disposition {
    /// `drop`, `accept` (past the host's INVALID drop) or `pass` (to the host's rules).
    pub fn name(self) -> &'static str {
        match self {
            Disposition::Drop => "drop",
            Disposition::Vouch => "accept",
            Disposition::PassOn => "pass",
        }
    }
}

/// A SACK rewrite computed from the packet's one parse: where the option is and
/// what to subtract, so the front end applies it without reading the packet again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SackRewrite {
    /// The exact middlebox offset to subtract from each SACK edge.
    pub offset: u32,
    /// Byte offset of the TCP header in the packet.
    pub tcp_at: u16,
    /// Byte offset of the SACK option (its kind byte) in the packet.
    pub sack_at: u16,
    /// SACK blocks in the option.
    pub blocks: u8,
}

/// The addresses and ports of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 without ports).
    pub sport: u16,
    /// Destination port (0 without ports).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
}

/// The engine's answer for one packet. Copy, no heap: the verdict path never allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to do with the packet, in the mode that applied.
    pub disposition: Disposition,
    /// `Drop` if and only if the disposition is [`Disposition::Drop`].
    pub verdict: Verdict,
    /// Why, when it is not a plain accept.
    pub reason: Option<Reason>,
    /// True in log-only mode when enforce mode would have dropped the packet.
    pub would_drop: bool,
    /// True in log-only mode when enforce mode would have let the packet past the
    /// host's INVALID drop ([`Disposition::Vouch`]).
    pub would_accept: bool,
    /// The mode that applied.
    pub mode: Mode,
    /// Retransmission patterns (Wireshark's names).
    pub patterns: Patterns,
    /// The conntrack state used for the rules (given, or derived).
    pub ct_state: CtState,
    /// Addresses and ports, when the packet was IP (the innermost packet's, when
    /// it travelled in a tunnel).
    pub tuple: Option<Tuple>,
    /// The encapsulations peeled to reach the packet that was judged.
    pub tunnel: wire::tunnel::Tunnels,
    /// The service the packet belongs to.
    pub service: Option<ServiceId>,
    /// The rule that decided, if one did.
    pub rule: Option<RuleId>,
    /// A `log` rule that matched on the way.
    pub logged_rule: Option<RuleId>,
    /// Mark to set on the packet, if a rule asks for one.
    pub mark: Option<u32>,
    /// The flow's initiator: the peer the patterns are counted against.
    pub peer: Option<IpAddr>,
    /// The exact middlebox offset to subtract from this packet's SACK blocks, when
    /// its service asks for `sack_repair`, the offset is known and verified, and the
    /// mode is enforce (log-only changes no packet).
    pub repair_offset: Option<u32>,
    /// The rewrite that `repair_offset` calls for, located in the packet.
    pub rewrite: Option<SackRewrite>,
    /// True when [`Engine::decide_mut`] rewrote the packet (the verdict must carry
    /// the modified bytes).
    pub rewritten: bool,
    /// True, once per flow, when the flow is proven to be behind a
    /// sequence-randomizing middlebox (its displaced SACK blocks are evidence), its
    /// service asks for `handback`, and the mode is enforce: the front end should set
    /// conntrack's per-connection liberal flag on it (the offset is in `reason`).
    pub handback_due: bool,
}

impl Decision {
    /// A decision before judging: pass on, nothing found, enforce mode, NEW.
    pub const EMPTY: Decision = Decision {
        disposition: Disposition::PassOn,
        verdict: Verdict::Accept,
        reason: None,
        would_drop: false,
        would_accept: false,
        mode: Mode::Enforce,
        patterns: Patterns::EMPTY,
        ct_state: CtState::New,
        tuple: None,
        tunnel: wire::tunnel::Tunnels::NONE,
        service: None,
        rule: None,
        logged_rule: None,
        mark: None,
        peer: None,
        repair_offset: None,
        rewrite: None,
        rewritten: false,
        handback_due: false,
    };

    /// Returns true if and only if the decision deserves an event: any reason, a
    /// would-drop, or a matching `log` rule.
    pub fn is_notable(&self) -> bool {
        self.reason.is_some() || self.would_drop || self.would_accept || self.logged_rule.is_some()
    }
}

/// Flows whose SACK offset is being learned at once (each keeps a ring of segment
/// boundaries; only flows behind a sequence-randomizing middlebox get one).
const MAX_REPAIRED_FLOWS: usize = 4096;
/// Seconds without a displaced SACK or data after which a flow's learning is dropped.
const REPAIR_IDLE_S: u32 = 600;

/// Repeated agreeing displacements on one flow before its displaced SACKs count as
/// proof of a middlebox (an exact offset, or a peer already proven, proves at once).
const SACK_PROOF_HITS: u16 = 3;

/// The decision engine. Shared by reference between the threads of a front end.
pub struct Engine {
    /// Swapped whole on reload; readers never wait.
    policy: PolicySlot,
    flows: FlowTable,
    peers: PeerTable,
    repairs: RepairTable,
    counters: CounterShards,
    /// Bumped each time the shadow feed loses messages; a flow is whole only while
    /// its `fed_epoch` equals it.
    feed_epoch: AtomicU32,
    /// Whether packets are judged at their innermost tunnelled packet (replay, as
    /// Wireshark analyses them) or as queued (live: see [`Engine::set_follow_tunnels`]).
    follow_tunnels: core::sync::atomic::AtomicBool,
}

/// What tracking concluded for one packet.
struct Tracked {
    ct: CtState,
    reason: Option<Reason>,
    patterns: Patterns,
    peer: Option<IpAddr>,
    /// A verified exact SACK offset for this packet (used only if the service repairs).
    repair: Option<u32>,
    /// Evidence that this packet, if conntrack calls it INVALID, is benign: trusted
    /// state shows it, or its SACK blocks carry a proven middlebox offset.
    evidence: bool,
    /// The evidence is displaced SACK: the flow is proven to be behind a
    /// sequence-randomizing middlebox.
    middlebox: bool,
}

impl Tracked {
    /// Nothing learned: the given state, an optional reason.
    fn stateless(ct: CtState, reason: Option<Reason>, peer: Option<IpAddr>) -> Tracked {
        Tracked {
            ct,
            reason,
            patterns: Patterns::EMPTY,
            peer,
            repair: None,
            evidence: false,
            middlebox: false,
        }
    }
}

impl Engine {
    /// An engine for this setup (a loaded [`crate::config::Config`]).
    pub fn new<S: Setup + ?Sized>(setup: &S) -> Engine {
        let limits = setup.limits();
        Engine {
            policy: PolicySlot::new(Policy::compile(setup)),
            flows: FlowTable::new(limits.max_flows as usize, limits.timeouts),
            peers: PeerTable::new(limits.max_peers as usize),
            repairs: RepairTable::new(MAX_REPAIRED_FLOWS),
            counters: CounterShards::new(),
            follow_tunnels: core::sync::atomic::AtomicBool::new(true),
            feed_epoch: AtomicU32::new(0),
        }
    }

    /// Whether to judge tunnelled packets at their innermost packet (the default,
    /// for replay) or as they arrived. The live daemon turns it off: the kernel's
    /// conntrack state and rules belong to the packet it queued, the outer one.
    pub fn set_follow_tunnels(&self, follow: bool) {
        self.follow_tunnels.store(follow, Ordering::Relaxed);
    }

    /// The compiled rules in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Replaces the rules (services, modes, rate limits) atomically: a packet is
    /// judged wholly by the old rules or wholly by the new. Flow state, peers and
    /// counters are kept; table bounds and timeouts stay as they were at start.
    pub fn reload<S: Setup + ?Sized>(&self, setup: &S) {
        self.policy.store(Arc::new(Policy::compile(setup)));
    }

    /// The flow table.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// The per-peer aggregates.
    pub fn peers(&self) -> &PeerTable {
        &self.peers
    }

    /// The counters now, summed over the threads that judged.
    pub fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    /// Adds `n` to one of this thread's counters.
    #[inline]
    fn bump(&self, field: impl FnOnce(&CounterShard) -> &AtomicU64, n: u64) {
        let l = self.counters.local();
        l.add(field(l.shard), n);
    }

    /// Counts a packet a front end left unjudged (load shedding, internal error):
    /// accepted by nfqwall, so that the host's own rules decide.
    pub fn count_unjudged(&self, reason: Reason) {
        self.counters.count_unjudged(reason);
    }

    /// Expires idle flows as of `now_ns`; front ends call this about once a second.
    pub fn expire(&self, now_ns: u64) -> usize {
        self.repairs.expire(secs(now_ns), REPAIR_IDLE_S);
        self.policy.with(|p| p.sweep_rates(now_ns));
        self.flows.expire(now_ns)
    }

    /// Judges one packet. `now_ns` is the packet's time (capture timestamp in replay,
    /// arrival time live); the engine never reads a clock.
    #[inline]
    pub fn decide(&self, now_ns: u64, meta: &PacketMeta<'_>, bytes: &[u8]) -> Decision {
        let mut d = Decision::EMPTY;
        self.policy
            .with(|policy| self.judge(policy, &mut d, now_ns, meta, bytes));
        self.count(&d, now_ns);
        d
    }

    /// Learns from one packet of the shadow feed: a packet conntrack accepted as
    /// ESTABLISHED (either direction), copied by NFLOG, never queued and never given
    /// a verdict. It moves the flow's edges and retransmission analysis exactly as a
    /// queued ESTABLISHED packet would, picks up a flow the engine did not know
    /// (older than the daemon, or expired), and marks the flow seen whole (no longer
    /// `partial`) unless the feed lost messages since the flow started. Nothing is
    /// counted as a verdict. Returns the tracker's reason, if any (for tests).
    ///
    /// Non-TCP and unparsable packets are ignored: the feed renders TCP only.
    pub fn observe(&self, now_ns: u64, meta: &PacketMeta<'_>, bytes: &[u8]) -> Option<Reason> {
        let pkt = self.parse_copy(meta, bytes)?;
        let Transport::Tcp(ref seg) = pkt.transport else {
            return None;
        };
        if !tracker::flags_are_valid(seg.flags) {
            return None;
        }
        let Ok(ref options) = seg.options else {
            return None;
        };
        self.bump(|c| &c.fed, 1);
        self.track_trusted(now_ns, &pkt, seg, options, true).reason
    }

    /// Learns from a SACK-bearing segment the shadow feed copied from the peer of a
    /// repairing service (NFLOG prefix [`crate::rules::SACK_FEED_PREFIX`]) before it
    /// was queued: in the feed's order, after every segment the service sent before
    /// it arrived. Only the offset learner hears of it (its blocks bound the offset
    /// from below, see `sack_repair`); whatever conntrack thought of it, it moves no
    /// edge and counts no verdict: its queued copy is judged as usual. Returns true
    /// if and only if it went to a flow being learned.
    pub fn observe_sack(&self, now_ns: u64, meta: &PacketMeta<'_>, bytes: &[u8]) -> bool {
        let Some(pkt) = self.parse_copy(meta, bytes) else {
            return false;
        };
        let Transport::Tcp(ref seg) = pkt.transport else {
            return false;
        };
        let Ok(ref options) = seg.options else {
            return false;
        };
        let blocks = options.sack.as_slice();
        if blocks.is_empty() || seg.flags & crate::engine::analysis::tcp_flags::ACK == 0 {
            return false;
        }
        let (key, sender_is_low) = FlowKey::new(pkt.src, seg.sport, pkt.dst, seg.dport, pkt.proto);
        let Some((side, Some(range))) = self.flows.with_existing_flow(key, now_ns, |flow| {
            let range = flow.tcp.sack_offset().map(|o| (o.low, o.high));
            (flow.side(sender_is_low), range)
        }) else {
            return false;
        };
        self.bump(|c| &c.fed_sack, 1);
        self.repairs
            .note_fed_sack(&key, side, seg.ack, blocks, range);
        true
    }

    /// Parses a copy the feed delivered (its length from the IP header when the copy
    /// is cut, as for a queued packet); `None` if it does not parse.
    fn parse_copy<'a>(&self, meta: &PacketMeta<'_>, bytes: &'a [u8]) -> Option<wire::Packet<'a>> {
        let wire_len = if meta.wire_len == 0 {
            bytes.len() as u32
        } else {
            meta.wire_len
        };
        wire::parse_following(
            meta.link,
            bytes,
            wire_len,
            self.follow_tunnels.load(Ordering::Relaxed),
        )
        .ok()
    }

    /// The shadow feed lost messages (a gap in their sequence numbers, or the socket
    /// overran): whatever they said is unknown, so every flow started before now is
    /// partial from here on (its tracker's judgement is no longer evidence) until a
    /// fresh SYN starts it again. Flows picked up after the loss are whole.
    pub fn feed_lost(&self) {
        self.repairs.feed_lost();
        self.feed_epoch.fetch_add(1, Ordering::Relaxed);
        self.bump(|c| &c.feed_losses, 1);
    }

    /// The number of feed losses so far (flows remember it when they start).
    pub fn feed_epoch(&self) -> u32 {
        self.feed_epoch.load(Ordering::Relaxed)
    }

    /// Returns true if and only if the engine saw `flow` whole: not partial, and no
    /// feed loss since it started. Its tracker's benign classes are then evidence.
    fn whole(&self, flow: &Flow) -> bool {
        !flow.partial && flow.fed_epoch == self.feed_epoch()
    }

    /// Judges one packet into `d` (which holds [`Decision::EMPTY`]): filled in place
    /// and the parse borrowed, because copying either struct per packet cost more
    /// than a rule.
    fn judge(
        &self,
        policy: &Policy,
        d: &mut Decision,
        now_ns: u64,
        meta: &PacketMeta<'_>,
        bytes: &[u8],
    ) {
        let given_ct = match meta.ct {
            CtHint::Given(s) => s,
            CtHint::Auto => CtState::New,
        };
        d.mode = policy.default_mode();
        d.ct_state = given_ct;
        let wire_len = if meta.wire_len == 0 {
            bytes.len() as u32
        } else {
            meta.wire_len
        };
        let parsed = wire::parse_following(
            meta.link,
            bytes,
            wire_len,
            self.follow_tunnels.load(Ordering::Relaxed),
        );
        let pkt = match parsed {
            Ok(ref p) => p,
            Err(ParseError::NotIp(_)) => {
                d.reason = Some(Reason::NotIp);
                return;
            }
            Err(e) => {
                if meta.ct == CtHint::Auto {
                    d.ct_state = CtState::Invalid;
                }
                let tracked = Tracked::stateless(d.ct_state, Some(Reason::Malformed(e)), None);
                self.finish(d, &tracked, None);
                return;
            }
        };
        let (sport, dport, tcp_flags) = match pkt.transport {
            Transport::Tcp(ref t) => (Some(t.sport), Some(t.dport), Some(t.flags)),
            Transport::Udp { sport, dport } => (Some(sport), Some(dport), None),
            _ => (None, None, None),
        };
        d.tunnel = pkt.tunnel;
        d.tuple = Some(Tuple {
            src: pkt.src,
            dst: pkt.dst,
            sport: sport.unwrap_or(0),
            dport: dport.unwrap_or(0),
            proto: pkt.proto,
        });

        let tracked = match pkt.transport {
            Transport::Tcp(ref seg) => match meta.ct {
                CtHint::Auto => self.track_tcp_whole(now_ns, pkt, seg),
                CtHint::Given(ct) => self.track_tcp_seen(now_ns, ct, pkt, seg),
            },
            Transport::Udp { sport, dport } => self.track_udp(now_ns, meta.ct, pkt, sport, dport),
            Transport::Fragment => Tracked::stateless(given_ct, Some(Reason::Fragment), None),
            _ => Tracked::stateless(given_ct, None, None),
        };
        d.ct_state = tracked.ct;
        d.patterns = tracked.patterns;
        d.peer = tracked.peer;

        let input = RuleInput {
            proto: pkt.proto,
            src: pkt.src,
            dst: pkt.dst,
            sport,
            dport,
            tcp_flags,
            ct_state: tracked.ct,
            in_iface: meta.in_iface,
            ip_len: pkt.ip_len,
        };
        let outcome = policy.evaluate(now_ns, &input);
        self.finish(d, &tracked, Some(outcome));
        let repairs = outcome
            .service
            .and_then(|s| policy.get_service(s))
            .is_some_and(|s| s.sack_repair());
        if let (true, Transport::Tcp(seg)) = (repairs, &pkt.transport) {
            use crate::engine::analysis::tcp_flags::{ACK, SYN};
            if seg.flags & (SYN | ACK) == SYN
                && tracked.ct == CtState::New
                && d.disposition != Disposition::Drop
            {
                // A repairing service's flow opens: its responder's data is recorded
                // from the start, so the first loss episode can prove the offset.
                let (key, _) = FlowKey::new(pkt.src, seg.sport, pkt.dst, seg.dport, pkt.proto);
                if self.repairs.watch(&key, 1, secs(now_ns)) {
                    self.flows
                        .with_existing_flow(key, now_ns, |f| f.repair_watched = true);
                }
            }
            if tracked.repair.is_none() || d.mode != Mode::Enforce {
                let blocks = seg.options.as_ref().map_or(0, |o| o.sack.as_slice().len());
                self.bump(|c| &c.sack_blocks_unchanged, blocks as u64);
            }
        }
        if let (Some(offset), true, Mode::Enforce, Transport::Tcp(seg)) =
            (tracked.repair, repairs, d.mode, &pkt.transport)
        {
            if d.disposition != Disposition::Drop {
                d.rewrite = locate_sack(bytes, seg, offset);
                d.repair_offset = d.rewrite.map(|r| r.offset);
                if d.rewrite.is_some() && d.ct_state == CtState::Invalid {
                    // The exact offset is the evidence: the repaired blocks are valid.
                    d.disposition = Disposition::Vouch;
                }
            }
        }
        if tracked.middlebox && d.disposition == Disposition::Vouch {
            let hands_back = outcome
                .service
                .and_then(|s| policy.get_service(s))
                .is_some_and(|s| s.handback());
            if hands_back {
                d.handback_due = self.claim_handback(pkt, sport, dport, now_ns);
            }
        }
    }

    /// Marks the packet's flow as handed back; true only the first time.
    fn claim_handback(
        &self,
        pkt: &wire::Packet<'_>,
        sport: Option<u16>,
        dport: Option<u16>,
        now_ns: u64,
    ) -> bool {
        let (key, _) = FlowKey::new(
            pkt.src,
            sport.unwrap_or(0),
            pkt.dst,
            dport.unwrap_or(0),
            pkt.proto,
        );
        self.flows
            .with_existing_flow(key, now_ns, |f| !core::mem::replace(&mut f.handback, true))
            .unwrap_or(false)
    }

    /// Lets a later packet of the flow of `t` ask for its handback again (the front
    /// end could not take the request: its queue was full).
    pub fn rearm_handback(&self, t: &Tuple, now_ns: u64) {
        let (key, _) = FlowKey::new(t.src, t.sport, t.dst, t.dport, t.proto);
        self.flows
            .with_existing_flow(key, now_ns, |f| f.handback = false);
    }

    /// Judges one packet and, when the decision carries a SACK rewrite, applies it
    /// to `packet` in place and sets `rewritten` (the verdict must then carry the
    /// modified bytes).
    pub fn decide_mut(&self, now_ns: u64, meta: &PacketMeta<'_>, packet: &mut [u8]) -> Decision {
        let mut d = self.decide(now_ns, meta, packet);
        self.apply_repair(&mut d, packet);
        d
    }

    /// Applies a decision's precomputed [`SackRewrite`] to the packet it was made
    /// for (no second parse) and sets `rewritten`. Front ends that must not touch the
    /// buffer until they know a rewrite is due (NFQUEUE sends back whatever was
    /// borrowed mutably) call `decide`, then this.
    pub fn apply_repair(&self, d: &mut Decision, packet: &mut [u8]) {
        let Some(rw) = d.rewrite else {
            return;
        };
        let blocks = sack_repair::rewrite_located(
            packet,
            usize::from(rw.tcp_at),
            usize::from(rw.sack_at),
            rw.offset,
        );
        d.rewritten = blocks > 0;
        if d.rewritten {
            self.bump(|c| &c.sack_repaired, 1);
            self.bump(|c| &c.sack_blocks_rewritten, blocks as u64);
        }
        let left = usize::from(rw.blocks).saturating_sub(blocks);
        self.bump(|c| &c.sack_blocks_unchanged, left as u64);
    }

    /// A front end could not send a decision's SACK rewrite back (the packet was not
    /// copied whole): its blocks went on unchanged.
    pub fn repair_not_applied(&self, d: &Decision) {
        if let Some(rw) = d.rewrite {
            self.bump(|c| &c.sack_blocks_unchanged, u64::from(rw.blocks));
        }
    }

    /// Combines the tracker's reason and the policy's outcome under the mode.
    ///
    /// Hostile packets are dropped whatever the rules say (a rule that accepts a
    /// service does not accept forged resets into it); then a rule's drop; then an
    /// INVALID packet is vouched for only on evidence, and everything else goes on to
    /// the host's rules. A rule's `accept` never vouches: it means nfqwall has no
    /// objection, and the host's rules still decide. Log-only changes no packet's
    /// fate and says what enforce would have done.
    fn finish(&self, d: &mut Decision, t: &Tracked, outcome: Option<PolicyOutcome>) {
        if let Some(o) = outcome {
            d.service = o.service;
            d.mode = o.mode;
            d.rule = o.rule;
            d.logged_rule = o.logged;
            d.mark = o.mark;
        }
        let mut reason = t.reason;
        let enforce = match (t.reason, outcome) {
            (Some(r), _) if r.class() == Class::Hostile => Disposition::Drop,
            (r, Some(o)) if o.action == Action::Drop => {
                reason = if o.rule.is_some() {
                    Some(Reason::RuleDrop)
                } else {
                    Some(Reason::ServiceDefaultDrop)
                }
                .or(r);
                Disposition::Drop
            }
            _ if t.ct == CtState::Invalid && t.evidence => Disposition::Vouch,
            _ => Disposition::PassOn,
        };
        d.reason = reason;
        d.disposition = match d.mode {
            Mode::Enforce => enforce,
            Mode::LogOnly => {
                d.would_drop = enforce == Disposition::Drop;
                d.would_accept = enforce == Disposition::Vouch;
                Disposition::PassOn
            }
        };
        d.verdict = if d.disposition == Disposition::Drop {
            Verdict::Drop
        } else {
            Verdict::Accept
        };
    }

    /// TCP with the whole flow in view (replay with `--visibility full`): the engine
    /// is its own conntrack, derives the state, and trusts what it tracked.
    fn track_tcp_whole(
        &self,
        now_ns: u64,
        pkt: &wire::Packet<'_>,
        seg: &wire::TcpSegment<'_>,
    ) -> Tracked {
        let no_options = TcpOptions::default();
        let options = seg.options.as_ref().unwrap_or(&no_options);
        let (key, sender_is_low) = FlowKey::new(pkt.src, seg.sport, pkt.dst, seg.dport, pkt.proto);
        let info = segment_info(now_ns, seg, options);
        let options_error = seg.options.err().map(Reason::MalformedOptions);
        let result = self
            .flows
            .with_flow(key, sender_is_low, now_ns, |flow, lookup| {
                let side = flow.side(sender_is_low);
                let patterns = flow
                    .analysis
                    .on_segment(if side == 0 { Side::First } else { Side::Second }, &info);
                let verdict = match options_error {
                    Some(r) => tracker::Verdict {
                        reason: Some(r),
                        reopened: false,
                    },
                    None => flow.tcp.on_segment(&tracker_segment(side, seg, options)),
                };
                if verdict.reopened {
                    flow.first_is_low = sender_is_low;
                    flow.first_s = secs(now_ns);
                }
                let mut verdict = verdict;
                let repair = self.learn_middlebox(
                    (&key, side, now_ns, false),
                    (seg, options),
                    flow.repair_watched,
                    &mut flow.tcp,
                    &mut verdict.reason,
                );
                let initiator =
                    note_flow(flow, sender_is_low, pkt, now_ns, patterns, verdict.reason);
                let new = lookup == Lookup::Created || verdict.reopened;
                (verdict.reason, patterns, new, initiator, repair)
            });
        let Some((reason, patterns, new, initiator, repair)) = result else {
            // No room for the flow: judge what can be judged without state.
            let reason = if !tracker::flags_are_valid(seg.flags) {
                Some(Reason::ImpossibleFlags(seg.flags))
            } else {
                options_error.or(Some(Reason::FlowTableFull))
            };
            let ct = if reason.is_some() {
                CtState::Invalid
            } else {
                CtState::New
            };
            return Tracked::stateless(ct, reason, Some(pkt.src));
        };
        let ct = if reason.is_some() {
            CtState::Invalid
        } else if new {
            CtState::New
        } else {
            CtState::Established
        };
        Tracked {
            ct,
            reason,
            patterns,
            peer: Some(initiator),
            repair,
            // The engine saw the flow whole: its benign classes are evidence.
            evidence: reason.is_some_and(|r| r.class() == Class::Benign),
            middlebox: false,
        }
    }

    /// TCP as the live daemon sees it: the state conntrack gave, and only the packets
    /// the ruleset queues (a flow's SYN, the packets conntrack doubts, SACK-bearing
    /// segments of `sack_repair` services).
    ///
    /// The trust model: state is learned only from packets conntrack accepted (a NEW
    /// SYN, which always gives the flow a fresh start; ESTABLISHED segments) and from
    /// packets let through on evidence. An INVALID packet never creates a flow, and
    /// is judged on a copy of the flow's state that is kept only if it is vouched for.
    fn track_tcp_seen(
        &self,
        now_ns: u64,
        ct: CtState,
        pkt: &wire::Packet<'_>,
        seg: &wire::TcpSegment<'_>,
    ) -> Tracked {
        use crate::engine::analysis::tcp_flags::{ACK, FIN, RST, SYN};
        let peer = Some(pkt.src);
        if !tracker::flags_are_valid(seg.flags) {
            return Tracked::stateless(ct, Some(Reason::ImpossibleFlags(seg.flags)), peer);
        }
        let options = match seg.options {
            Ok(ref o) => o,
            Err(e) => return Tracked::stateless(ct, Some(Reason::MalformedOptions(e)), peer),
        };
        let (key, sender_is_low) = FlowKey::new(pkt.src, seg.sport, pkt.dst, seg.dport, pkt.proto);
        let info = segment_info(now_ns, seg, options);
        let is_syn = seg.flags & (SYN | ACK | RST | FIN) == SYN;
        match ct {
            CtState::New if is_syn => {
                let r = self
                    .flows
                    .with_flow(key, sender_is_low, now_ns, |flow, lookup| {
                        let retry = lookup == Lookup::Existing
                            && flow.first_is_low == sender_is_low
                            && flow.tcp.syn_repeats(0, seg.seq);
                        if !retry {
                            // Whatever was picked up on these ports before, this SYN
                            // passed conntrack: a fresh start.
                            *flow = Flow::new(now_ns, sender_is_low);
                            flow.fed_epoch = self.feed_epoch();
                        }
                        // Until the feed shows the rest of it (its SYN/ACK).
                        flow.partial = true;
                        let patterns = flow.analysis.on_segment(Side::First, &info);
                        let v = flow.tcp.on_segment(&tracker_segment(0, seg, options));
                        note_flow(flow, sender_is_low, pkt, now_ns, patterns, v.reason);
                        (patterns, v.reason)
                    });
                match r {
                    Some((patterns, reason)) => Tracked {
                        patterns,
                        ..Tracked::stateless(ct, reason, peer)
                    },
                    None => Tracked::stateless(ct, Some(Reason::FlowTableFull), peer),
                }
            }
            // A loose pick-up (a NEW segment that is no SYN) or RELATED: conntrack
            // has no entry either; nothing to learn, the host's rules decide.
            CtState::New | CtState::Related | CtState::Untracked => {
                Tracked::stateless(ct, None, peer)
            }
            CtState::Established => {
                let mut t = self.track_trusted(now_ns, pkt, seg, options, false);
                t.ct = ct;
                t
            }
            CtState::Invalid => {
                let r = self.flows.with_existing_flow(key, now_ns, |flow| {
                    let side = flow.side(sender_is_low);
                    let patterns = flow
                        .analysis
                        .on_segment(if side == 0 { Side::First } else { Side::Second }, &info);
                    let (mut v, mut trial) = flow
                        .tcp
                        .judge_untrusted(&tracker_segment(side, seg, options));
                    let initiator = if flow.first_is_low == sender_is_low {
                        pkt.src
                    } else {
                        pkt.dst
                    };
                    let mut repair = None;
                    let mut evidence = false;
                    let mut middlebox = false;
                    if self.sack_in_question(&key, v.reason, options) {
                        self.repairs.note_data(
                            &key,
                            side,
                            (seg.seq, seg.payload_len, None),
                            false,
                            secs(now_ns),
                        );
                        let (reason, exact, agrees) = self.learn_offset(
                            &key,
                            side,
                            (seg, options, v.reason),
                            &mut trial,
                            now_ns,
                        );
                        v.reason = reason;
                        repair = exact;
                        let hits = trial.sack_offset().map_or(0, |o| o.hits);
                        evidence = matches!(v.reason, Some(Reason::SackDisplaced { .. }))
                            && (agrees
                                || hits >= SACK_PROOF_HITS
                                || self.peers.middlebox_proven(initiator));
                        // The middlebox itself is proven only so (agreeing
                        // displacements, an exact offset, or the peer proven before),
                        // not by a whole flow's benign judgement of one displaced SACK.
                        middlebox = evidence;
                    }
                    v.reason = match v.reason {
                        Some(r) if r.class() == Class::Hostile => Some(r),
                        Some(r @ Reason::SackDisplaced { .. }) if evidence => Some(r),
                        // A flow the engine saw whole (replay, or every packet fed to
                        // it): its tracker's judgement is evidence, as in full view.
                        r if self.whole(flow) => {
                            let named = r.unwrap_or_else(|| benign_name(patterns));
                            evidence = named.class() == Class::Benign;
                            Some(named)
                        }
                        _ if seg.flags & RST != 0 => Some(Reason::RstNoState),
                        _ if seg.flags & SYN != 0 => Some(Reason::SynNoState),
                        _ => Some(Reason::NotProvenBenign),
                    };
                    if evidence {
                        flow.tcp = trial;
                    } else {
                        flow.tcp.adopt_sack_evidence(
                            &trial,
                            side,
                            matches!(v.reason, Some(Reason::SackDisplaced { .. })),
                        );
                    }
                    note_flow(flow, sender_is_low, pkt, now_ns, patterns, v.reason);
                    (patterns, v.reason, initiator, repair, evidence, middlebox)
                });
                match r {
                    Some((patterns, reason, initiator, repair, evidence, middlebox)) => Tracked {
                        ct,
                        reason,
                        patterns,
                        peer: Some(initiator),
                        repair,
                        evidence,
                        middlebox: middlebox
                            && evidence
                            && matches!(reason, Some(Reason::SackDisplaced { .. })),
                    },
                    None => {
                        let reason = if seg.flags & RST != 0 {
                            Reason::RstNoState
                        } else if seg.flags & SYN != 0 {
                            Reason::SynNoState
                        } else if self.flows.is_full() {
                            Reason::FlowTableFull
                        } else {
                            Reason::NoState
                        };
                        Tracked::stateless(ct, Some(reason), peer)
                    }
                }
            }
        }
    }

    /// A packet conntrack accepted as ESTABLISHED: queued (`fed` false: a SACK-bearing
    /// segment of a repairing service, or a service that queues ESTABLISHED) or from
    /// the shadow feed (`fed` true). Trusted: the flow learns from it, and a flow the
    /// engine did not know is picked up mid-stream. A queued one leaves the flow
    /// partial; a fed one shows the flow whole, unless the feed lost messages since
    /// the flow started.
    fn track_trusted(
        &self,
        now_ns: u64,
        pkt: &wire::Packet<'_>,
        seg: &wire::TcpSegment<'_>,
        options: &TcpOptions,
        fed: bool,
    ) -> Tracked {
        let peer = Some(pkt.src);
        let (key, sender_is_low) = FlowKey::new(pkt.src, seg.sport, pkt.dst, seg.dport, pkt.proto);
        let info = segment_info(now_ns, seg, options);
        let epoch = self.feed_epoch();
        let r = self
            .flows
            .with_flow(key, sender_is_low, now_ns, |flow, lookup| {
                if lookup == Lookup::Created {
                    flow.partial = !fed;
                    flow.fed_epoch = epoch;
                    if fed {
                        self.bump(|c| &c.fed_pickups, 1);
                    }
                } else if fed && flow.fed_epoch == epoch {
                    // Everything since the flow started was seen (queued or fed).
                    flow.partial = false;
                }
                let side = flow.side(sender_is_low);
                let patterns = flow
                    .analysis
                    .on_segment(if side == 0 { Side::First } else { Side::Second }, &info);
                let mut v = flow
                    .tcp
                    .on_accepted_segment(&tracker_segment(side, seg, options));
                if fed {
                    flow.tcp.mark_fed(side);
                }
                let repair = self.learn_middlebox(
                    (&key, side, now_ns, fed),
                    (seg, options),
                    flow.repair_watched,
                    &mut flow.tcp,
                    &mut v.reason,
                );
                let initiator = note_flow(flow, sender_is_low, pkt, now_ns, patterns, v.reason);
                (patterns, v.reason, initiator, repair)
            });
        match r {
            Some((patterns, reason, initiator, repair)) => Tracked {
                ct: CtState::Established,
                reason,
                patterns,
                peer: Some(initiator),
                repair,
                evidence: false,
                middlebox: false,
            },
            None => Tracked::stateless(CtState::Established, Some(Reason::FlowTableFull), peer),
        }
    }

    /// Behind a middlebox (the flow showed displaced SACK), a trusted segment teaches
    /// the offset learner: its data's boundaries, an ACK without SACK, and displaced
    /// blocks. Returns the offset to repair this packet with, and rewrites `reason`
    /// to what the learner concluded. `fed`: from the shadow feed, a batch late, and
    /// seen at the server's hooks, where its segments are GSO packets. `watched`: the
    /// learner watches the flow from its SYN, so its data is recorded before any SACK.
    fn learn_middlebox(
        &self,
        (key, side, now_ns, fed): (&FlowKey, usize, u64, bool),
        (seg, options): (&wire::TcpSegment<'_>, &TcpOptions),
        watched: bool,
        tcp: &mut TcpTracker,
        reason: &mut Option<Reason>,
    ) -> Option<u32> {
        if watched || tcp.sack_offset().is_some() {
            // Flows watched from their SYN record data before any SACK.
            let unit = fed.then(|| tcp.segment_unit(seg.header_len)).flatten();
            let data = (seg.seq, seg.payload_len, unit);
            self.repairs.note_data(key, side, data, fed, secs(now_ns));
        }
        tcp.sack_offset()?;
        self.note_plain_ack(key, side, seg, options, tcp);
        if !self.sack_in_question(key, *reason, options) {
            return None;
        }
        let (learned, exact, _) =
            self.learn_offset(key, side, (seg, options, *reason), tcp, now_ns);
        *reason = learned;
        exact
    }

    /// Tells the offset learner of an ACK that carries no SACK block: the end of a
    /// loss episode bounds the offset from below (see `sack_repair`).
    fn note_plain_ack(
        &self,
        key: &FlowKey,
        side: usize,
        seg: &wire::TcpSegment<'_>,
        options: &TcpOptions,
        tcp: &TcpTracker,
    ) {
        use crate::engine::analysis::tcp_flags::{ACK, RST, SYN};
        if seg.flags & (ACK | SYN | RST) != ACK || !options.sack.as_slice().is_empty() {
            return;
        }
        if let Some(o) = tcp.sack_offset() {
            self.repairs.note_ack(key, side, seg.ack, (o.low, o.high));
        }
    }

    /// Returns true if and only if the packet's SACK blocks go to the offset learner:
    /// the tracker found them displaced, or the flow's offset is proven and the
    /// tracker's doubt is one a displaced block explains (once the middlebox is
    /// proven, every block the client sends is in its space, including the ones that
    /// look like D-SACKs or lie past an edge the feed has not caught up with).
    fn sack_in_question(&self, key: &FlowKey, reason: Option<Reason>, o: &TcpOptions) -> bool {
        match reason {
            Some(Reason::SackDisplaced { .. }) => true,
            None | Some(Reason::SackOutsideWindow | Reason::AckOfUnseenData { .. }) => {
                !o.sack.as_slice().is_empty() && self.repairs.exact(key).is_some()
            }
            _ => false,
        }
    }

    /// Feeds a displaced SACK to the offset learner ([`RepairTable`]) and returns the
    /// reason to report (pinned to the exact offset once known; the tracker's own
    /// when the proven offset does not explain the blocks), the offset to repair
    /// with, when it is exact and this packet's blocks were verified, and whether the
    /// blocks agree with a proven offset (evidence, repaired or not).
    fn learn_offset(
        &self,
        key: &FlowKey,
        side: usize,
        (seg, options, tracked): (&wire::TcpSegment<'_>, &TcpOptions, Option<Reason>),
        tcp: &mut TcpTracker,
        now_ns: u64,
    ) -> (Option<Reason>, Option<u32>, bool) {
        let Some(o) = tcp.sack_offset() else {
            return (Some(Reason::SackOutsideWindow), None, false);
        };
        let learned = self.repairs.learn(
            key,
            side ^ 1,
            seg.ack,
            options.sack.as_slice(),
            (o.low, o.high),
            tcp.window_room(side),
            secs(now_ns),
        );
        let pinned = |off| {
            Some(Reason::SackDisplaced {
                offset_low: off,
                offset_high: off,
            })
        };
        match learned {
            Learned::Unknown => (
                Some(Reason::SackDisplaced {
                    offset_low: o.low,
                    offset_high: o.high,
                }),
                None,
                false,
            ),
            Learned::Exact(off) => {
                tcp.pin_sack_offset(off);
                (pinned(off), Some(off), true)
            }
            Learned::Plausible(off) => {
                tcp.pin_sack_offset(off);
                (pinned(off), None, true)
            }
            Learned::Unverified(off) => {
                tcp.pin_sack_offset(off);
                match tracked {
                    Some(Reason::SackDisplaced { .. }) => (pinned(off), None, false),
                    other => (other, None, false),
                }
            }
        }
    }

    fn track_udp(
        &self,
        now_ns: u64,
        hint: CtHint,
        pkt: &wire::Packet<'_>,
        sport: u16,
        dport: u16,
    ) -> Tracked {
        // UDP has nothing for the liberal checks to judge: its flow state only serves
        // to derive conntrack's NEW/ESTABLISHED. When the state is given (live), keep
        // none: a busy stateless service would otherwise fill nfqwall's table the way
        // it filled conntrack's, one entry per query.
        if let CtHint::Given(ct) = hint {
            return Tracked::stateless(ct, None, None);
        }
        let (key, sender_is_low) = FlowKey::new(pkt.src, sport, pkt.dst, dport, pkt.proto);
        let seen = self
            .flows
            .with_flow(key, sender_is_low, now_ns, |flow, lookup| {
                flow.last_s = secs(now_ns);
                flow.packets = flow.packets.saturating_add(1);
                if flow.side(sender_is_low) == 1 {
                    flow.replied = true;
                }
                lookup == Lookup::Created || !flow.replied
            });
        // Conntrack calls UDP NEW until it sees a reply.
        let ct = match seen {
            Some(true) | None => CtState::New,
            Some(false) => CtState::Established,
        };
        Tracked::stateless(ct, seen.is_none().then_some(Reason::FlowTableFull), None)
    }

    fn count(&self, d: &Decision, now_ns: u64) {
        let l = self.counters.local();
        let c = l.shard;
        l.add(&c.packets, 1);
        match d.disposition {
            Disposition::Drop => l.add(&c.dropped, 1),
            Disposition::Vouch => {
                l.add(&c.vouched, 1);
                l.add(&c.accepted, 1)
            }
            Disposition::PassOn => {
                l.add(&c.passed_on, 1);
                l.add(&c.accepted, 1)
            }
        };
        if d.would_drop {
            l.add(&c.would_drop, 1);
        }
        if d.would_accept {
            l.add(&c.would_accept, 1);
        }
        if let Some(r) = d.reason {
            l.add(&c.by_reason[r.index()], 1);
        }
        if d.patterns.is_empty() && d.reason.is_none() {
            return;
        }
        for p in d.patterns.iter() {
            l.add(&c.by_pattern[p as usize], 1);
        }
        if let Some(peer) = d.peer {
            let class = d.reason.map(|r| r.class());
            let displaced = matches!(d.reason, Some(Reason::SackDisplaced { .. }));
            let proven = d.repair_offset.is_some()
                || matches!(d.reason, Some(Reason::SackDisplaced { offset_low, offset_high }) if offset_low == offset_high);
            self.peers.update(peer, now_ns, |s| {
                for p in d.patterns.iter() {
                    s.patterns[p as usize] = s.patterns[p as usize].saturating_add(1);
                }
                match class {
                    Some(Class::Hostile) => s.hostile = s.hostile.saturating_add(1),
                    Some(Class::Benign) => s.benign = s.benign.saturating_add(1),
                    _ => {}
                }
                if displaced {
                    s.sack_displaced = s.sack_displaced.saturating_add(1);
                }
                if proven {
                    s.offsets_proven = s.offsets_proven.saturating_add(1);
                }
            });
        }
    }
}

/// The analysis's view of a segment.
fn segment_info(now_ns: u64, seg: &wire::TcpSegment<'_>, options: &TcpOptions) -> SegmentInfo {
    SegmentInfo {
        ts_ns: now_ns,
        seq: seg.seq,
        ack: seg.ack,
        payload_len: seg.payload_len,
        flags: seg.flags,
        window: seg.window,
        window_scale: options.window_scale,
    }
}

/// The tracker's view of a segment from endpoint `side`.
fn tracker_segment<'a>(
    side: usize,
    seg: &wire::TcpSegment<'_>,
    options: &'a TcpOptions,
) -> Segment<'a> {
    Segment {
        from: side,
        seq: seg.seq,
        ack: seg.ack,
        flags: seg.flags,
        window: seg.window,
        payload_len: seg.payload_len,
        options,
    }
}

/// Per-flow bookkeeping after a packet: times, counts, patterns, classes. Returns the
/// flow's initiator (the peer its patterns are counted against).
fn note_flow(
    flow: &mut Flow,
    sender_is_low: bool,
    pkt: &wire::Packet<'_>,
    now_ns: u64,
    patterns: Patterns,
    reason: Option<Reason>,
) -> IpAddr {
    flow.last_s = secs(now_ns);
    flow.packets = flow.packets.saturating_add(1);
    if !patterns.is_empty() {
        flow.patterns = Patterns::from_bits(flow.patterns.bits() | patterns.bits());
    }
    match reason.map(|r| r.class()) {
        Some(Class::Hostile) => flow.hostile = flow.hostile.saturating_add(1),
        Some(Class::Benign) => flow.benign = flow.benign.saturating_add(1),
        _ => {}
    }
    if flow.first_is_low == sender_is_low {
        pkt.src
    } else {
        pkt.dst
    }
}

/// The benign pattern that explains why conntrack doubted a packet the liberal
/// tracker finds fine, so the log says why it was let through.
fn benign_name(patterns: Patterns) -> Reason {
    if patterns.contains(Pattern::KeepAlive) {
        Reason::KeepAlive
    } else if patterns.contains(Pattern::ZeroWindowProbe) {
        Reason::ZeroWindowProbe
    } else if patterns.contains(Pattern::SpuriousRetransmission) {
        Reason::RetransmittedAckedData
    } else {
        Reason::ConntrackOnlyInvalid
    }
}

/// Where the SACK option of `seg` sits in `bytes` (the buffer it was parsed from).
fn locate_sack(bytes: &[u8], seg: &wire::TcpSegment<'_>, offset: u32) -> Option<SackRewrite> {
    let payload_at = (seg.payload.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
    let tcp_at = payload_at.checked_sub(usize::from(seg.header_len))?;
    let sack_at = sack_repair::find_sack_option(
        bytes.get(tcp_at + 20..tcp_at + usize::from(seg.header_len))?,
    )? + tcp_at
        + 20;
    Some(SackRewrite {
        offset,
        tcp_at: u16::try_from(tcp_at).ok()?,
        sack_at: u16::try_from(sack_at).ok()?,
        blocks: seg
            .options
            .as_ref()
            .map_or(0, |o| o.sack.as_slice().len() as u8),
    })
}
