//! The engine proper: [`Engine::decide`] turns one packet into one [`Decision`].

use crate::config::Config;
use crate::engine::analysis::{SegmentInfo, Side};
use crate::engine::flow::{secs, FlowKey, FlowTable, Lookup};
use crate::engine::meta::{CtHint, CtState, PacketMeta};
use crate::engine::patterns::{Pattern, Patterns};
use crate::engine::peers::PeerTable;
use crate::engine::policy::{Action, Mode, Policy, PolicyOutcome, RuleId, RuleInput, ServiceId};
use crate::engine::reason::{Class, Reason, REASON_KINDS};
use crate::engine::sack_repair::{self, Learned, RepairTable};
use crate::engine::tracker::{self, Segment};
use crate::engine::LinkType;
use crate::wire::tcp_options::TcpOptions;
use crate::wire::{self, ParseError, Transport};
use arc_swap::ArcSwap;
use core::net::IpAddr;
use core::sync::atomic::{AtomicU64, Ordering};
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
    /// The verdict to give the kernel.
    pub verdict: Verdict,
    /// Why, when it is not a plain accept.
    pub reason: Option<Reason>,
    /// True in log-only mode when enforce mode would have dropped the packet.
    pub would_drop: bool,
    /// The mode that applied.
    pub mode: Mode,
    /// Retransmission patterns (Wireshark's names).
    pub patterns: Patterns,
    /// The conntrack state used for the rules (given, or derived).
    pub ct_state: CtState,
    /// Addresses and ports, when the packet was IP.
    pub tuple: Option<Tuple>,
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
    /// its service asks for `sack_repair` and the offset is known and verified.
    pub repair_offset: Option<u32>,
    /// True when [`Engine::decide_mut`] rewrote the packet (the verdict must carry
    /// the modified bytes).
    pub rewritten: bool,
}

impl Decision {
    /// Returns true if and only if the decision deserves an event: any reason, a
    /// would-drop, or a matching `log` rule.
    pub fn is_notable(&self) -> bool {
        self.reason.is_some() || self.would_drop || self.logged_rule.is_some()
    }
}

/// Counters since start. Relaxed atomics: they are statistics, not synchronisation.
pub struct Counters {
    /// Packets judged.
    pub packets: AtomicU64,
    /// Accept verdicts.
    pub accepted: AtomicU64,
    /// Drop verdicts.
    pub dropped: AtomicU64,
    /// Log-only accepts that enforce mode would have dropped.
    pub would_drop: AtomicU64,
    /// Verdicts by reason, indexed by [`Reason::index`].
    pub by_reason: [AtomicU64; REASON_KINDS],
    /// Packets by pattern, indexed like [`Pattern::ALL`].
    pub by_pattern: [AtomicU64; Pattern::ALL.len()],
    /// Packets whose displaced SACK blocks were rewritten.
    pub sack_repaired: AtomicU64,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            packets: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            would_drop: AtomicU64::new(0),
            by_reason: core::array::from_fn(|_| AtomicU64::new(0)),
            by_pattern: core::array::from_fn(|_| AtomicU64::new(0)),
            sack_repaired: AtomicU64::new(0),
        }
    }

    /// Counts a verdict given outside the engine (load shedding, internal error).
    pub fn count_external(&self, verdict: Verdict, reason: Reason) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        match verdict {
            Verdict::Accept => self.accepted.fetch_add(1, Ordering::Relaxed),
            Verdict::Drop => self.dropped.fetch_add(1, Ordering::Relaxed),
        };
        self.by_reason[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Flows whose SACK offset is being learned at once (each keeps a ring of segment
/// boundaries; only flows behind a sequence-randomizing middlebox get one).
const MAX_REPAIRED_FLOWS: usize = 4096;
/// Seconds without a displaced SACK or data after which a flow's learning is dropped.
const REPAIR_IDLE_S: u32 = 600;

/// The state a hint names (NEW for `Auto`, which derives it only for TCP and UDP).
fn hint_state(hint: CtHint) -> CtState {
    match hint {
        CtHint::Given(s) => s,
        CtHint::Auto | CtHint::Queued => CtState::New,
    }
}

/// [`CtHint::Queued`]: the state conntrack had when nfqwall's rendered ruleset queued
/// the packet, inferred from what that ruleset queues.
fn infer_queued_state(
    policy: &Policy,
    pkt: &wire::Packet<'_>,
    dport: Option<u16>,
    tcp_flags: Option<u8>,
) -> CtState {
    use crate::engine::analysis::tcp_flags::{ACK, FIN, RST, SYN};
    if policy
        .find_service(pkt.proto, pkt.dst, dport)
        .is_some_and(|s| s.stateless())
    {
        return CtState::Untracked;
    }
    match tcp_flags {
        Some(f) if f & SYN != 0 && f & (ACK | RST | FIN) == 0 => CtState::New,
        Some(_) => CtState::Invalid,
        None => CtState::New,
    }
}

/// The decision engine. Shared by reference between the threads of a front end.
pub struct Engine {
    /// Swapped whole on reload; readers never wait.
    policy: ArcSwap<Policy>,
    flows: FlowTable,
    peers: PeerTable,
    repairs: RepairTable,
    counters: Counters,
}

/// What tracking concluded for one packet.
struct Tracked {
    ct: CtState,
    reason: Option<Reason>,
    patterns: Patterns,
    peer: Option<IpAddr>,
    /// A verified exact SACK offset for this packet (used only if the service repairs).
    repair: Option<u32>,
}

impl Engine {
    /// An engine for this configuration.
    pub fn new(config: &Config) -> Engine {
        Engine {
            policy: ArcSwap::from_pointee(Policy::compile(config)),
            flows: FlowTable::new(config.engine.max_flows as usize, config.engine.timeouts),
            peers: PeerTable::new(config.engine.max_peers as usize),
            repairs: RepairTable::new(MAX_REPAIRED_FLOWS),
            counters: Counters::new(),
        }
    }

    /// The compiled rules in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Replaces the rules (services, modes, rate limits) atomically: a packet is
    /// judged wholly by the old rules or wholly by the new. Flow state, peers and
    /// counters are kept; table bounds and timeouts stay as they were at start.
    pub fn reload(&self, config: &Config) {
        self.policy.store(Arc::new(Policy::compile(config)));
    }

    /// The flow table.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// The per-peer aggregates.
    pub fn peers(&self) -> &PeerTable {
        &self.peers
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Expires idle flows as of `now_ns`; front ends call this about once a second.
    pub fn expire(&self, now_ns: u64) -> usize {
        self.repairs.expire(secs(now_ns), REPAIR_IDLE_S);
        self.flows.expire(now_ns)
    }

    /// Judges one packet. `now_ns` is the packet's time (capture timestamp in replay,
    /// arrival time live); the engine never reads a clock.
    pub fn decide(&self, now_ns: u64, meta: &PacketMeta<'_>, bytes: &[u8]) -> Decision {
        let d = self.judge(now_ns, meta, bytes);
        self.count(&d, now_ns);
        d
    }

    fn judge(&self, now_ns: u64, meta: &PacketMeta<'_>, bytes: &[u8]) -> Decision {
        let policy = self.policy.load();
        let default_mode = policy.default_mode();
        let given_ct = match meta.ct {
            CtHint::Given(s) => s,
            CtHint::Auto | CtHint::Queued => CtState::New,
        };
        let mut d = Decision {
            verdict: Verdict::Accept,
            reason: None,
            would_drop: false,
            mode: default_mode,
            patterns: Patterns::EMPTY,
            ct_state: given_ct,
            tuple: None,
            service: None,
            rule: None,
            logged_rule: None,
            mark: None,
            peer: None,
            repair_offset: None,
            rewritten: false,
        };
        let wire_len = if meta.wire_len == 0 {
            bytes.len() as u32
        } else {
            meta.wire_len
        };
        let pkt = match wire::parse(meta.link, bytes, wire_len) {
            Ok(p) => p,
            Err(ParseError::NotIp(_)) => {
                d.reason = Some(Reason::NotIp);
                return d;
            }
            Err(e) => {
                d.ct_state = CtState::Invalid;
                return self.finish(d, Some(Reason::Malformed(e)), None);
            }
        };
        let (sport, dport, tcp_flags) = match pkt.transport {
            Transport::Tcp(ref t) => (Some(t.sport), Some(t.dport), Some(t.flags)),
            Transport::Udp { sport, dport } => (Some(sport), Some(dport), None),
            _ => (None, None, None),
        };
        d.tuple = Some(Tuple {
            src: pkt.src,
            dst: pkt.dst,
            sport: sport.unwrap_or(0),
            dport: dport.unwrap_or(0),
            proto: pkt.proto,
        });

        let hint = match meta.ct {
            CtHint::Queued => CtHint::Given(infer_queued_state(&policy, &pkt, dport, tcp_flags)),
            given => given,
        };
        let tracked = match pkt.transport {
            Transport::Tcp(ref seg) => self.track_tcp(now_ns, hint, &pkt, seg),
            Transport::Udp { sport, dport } => self.track_udp(now_ns, hint, &pkt, sport, dport),
            Transport::Fragment => Tracked {
                ct: hint_state(hint),
                reason: Some(Reason::Fragment),
                patterns: Patterns::EMPTY,
                peer: None,
                repair: None,
            },
            _ => Tracked {
                ct: hint_state(hint),
                reason: None,
                patterns: Patterns::EMPTY,
                peer: None,
                repair: None,
            },
        };
        d.ct_state = tracked.ct;
        d.patterns = tracked.patterns;
        d.peer = tracked.peer;
        let repair = tracked.repair;

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
        let mut d = self.finish(d, tracked.reason, Some(outcome));
        if d.verdict == Verdict::Accept
            && outcome
                .service
                .and_then(|s| policy.get_service(s))
                .is_some_and(|s| s.sack_repair())
        {
            d.repair_offset = repair;
        }
        d
    }

    /// Judges one packet that starts at its IP header (the live path), and, when the
    /// decision carries a `repair_offset`, rewrites its SACK blocks in place and sets
    /// `rewritten` so the front end returns the modified bytes with the verdict.
    pub fn decide_mut(&self, now_ns: u64, meta: &PacketMeta<'_>, packet: &mut [u8]) -> Decision {
        let mut d = self.decide(now_ns, meta, packet);
        if meta.link == LinkType::RawIp {
            self.apply_repair(&mut d, packet);
        }
        d
    }

    /// Applies a decision's `repair_offset` to the packet it was made for (starting
    /// at its IP header): rewrites the SACK blocks in place and sets `rewritten`.
    /// Front ends that must not touch the buffer until they know a rewrite is due
    /// (NFQUEUE sends back whatever was borrowed mutably) call `decide`, then this.
    pub fn apply_repair(&self, d: &mut Decision, packet: &mut [u8]) {
        let Some(offset) = d.repair_offset else {
            return;
        };
        d.rewritten = sack_repair::rewrite_sack_blocks(packet, offset) > 0;
        if d.rewritten {
            self.counters.sack_repaired.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Combines the tracker's reason and the policy's outcome under the mode.
    ///
    /// Hostile packets are dropped whatever the rules say (a rule that accepts a
    /// service does not accept forged resets into it); then the rules decide; benign
    /// reasons ride along with an accept so the event explains the packet.
    fn finish(
        &self,
        mut d: Decision,
        tcp_reason: Option<Reason>,
        outcome: Option<PolicyOutcome>,
    ) -> Decision {
        if let Some(o) = outcome {
            d.service = o.service;
            d.mode = o.mode;
            d.rule = o.rule;
            d.logged_rule = o.logged;
            d.mark = o.mark;
        }
        let (verdict, reason) = match (tcp_reason, outcome) {
            (Some(r), _) if r.class() == Class::Hostile => (Verdict::Drop, Some(r)),
            (r, Some(o)) if o.action == Action::Drop => (
                Verdict::Drop,
                if o.rule.is_some() {
                    Some(Reason::RuleDrop)
                } else {
                    Some(Reason::ServiceDefaultDrop)
                }
                .or(r),
            ),
            (r, _) => (Verdict::Accept, r),
        };
        d.reason = reason;
        d.verdict = verdict;
        if verdict == Verdict::Drop && d.mode == Mode::LogOnly {
            d.verdict = Verdict::Accept;
            d.would_drop = true;
        }
        d
    }

    fn track_tcp(
        &self,
        now_ns: u64,
        hint: CtHint,
        pkt: &wire::Packet<'_>,
        seg: &wire::TcpSegment<'_>,
    ) -> Tracked {
        let no_options = TcpOptions::default();
        let options = seg.options.as_ref().unwrap_or(&no_options);
        let (key, sender_is_low) = FlowKey::new(pkt.src, seg.sport, pkt.dst, seg.dport, pkt.proto);
        let info = SegmentInfo {
            ts_ns: now_ns,
            seq: seg.seq,
            ack: seg.ack,
            payload_len: seg.payload_len,
            flags: seg.flags,
            window: seg.window,
            window_scale: options.window_scale,
        };
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
                    None => flow.tcp.on_segment(&Segment {
                        from: side,
                        seq: seg.seq,
                        ack: seg.ack,
                        flags: seg.flags,
                        window: seg.window,
                        payload_len: seg.payload_len,
                        options,
                    }),
                };
                if verdict.reopened {
                    flow.first_is_low = sender_is_low;
                    flow.first_s = secs(now_ns);
                }
                let mut verdict = verdict;
                let mut repair = None;
                if flow.tcp.sack_offset().is_some() {
                    // Behind a middlebox: learn the exact offset from segment boundaries.
                    self.repairs
                        .note_data(&key, side, seg.seq, seg.payload_len, secs(now_ns));
                    if let Some(Reason::SackDisplaced {
                        offset_low,
                        offset_high,
                    }) = verdict.reason
                    {
                        let learned = self.repairs.learn(
                            &key,
                            side ^ 1,
                            seg.ack,
                            options.sack.as_slice(),
                            (offset_low, offset_high),
                            flow.tcp.window_room(side),
                            secs(now_ns),
                        );
                        if let Learned::Exact(off) | Learned::Unverified(off) = learned {
                            flow.tcp.pin_sack_offset(off);
                            verdict.reason = Some(Reason::SackDisplaced {
                                offset_low: off,
                                offset_high: off,
                            });
                        }
                        if let Learned::Exact(off) = learned {
                            repair = Some(off);
                        }
                    }
                }
                flow.last_s = secs(now_ns);
                flow.packets = flow.packets.saturating_add(1);
                if !patterns.is_empty() {
                    flow.patterns = Patterns::from_bits(flow.patterns.bits() | patterns.bits());
                }
                match verdict.reason.map(|r| r.class()) {
                    Some(Class::Hostile) => flow.hostile = flow.hostile.saturating_add(1),
                    Some(_) => flow.benign = flow.benign.saturating_add(1),
                    None => {}
                }
                let initiator = if flow.first_is_low == sender_is_low {
                    pkt.src
                } else {
                    pkt.dst
                };
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
            return Tracked {
                ct: hint_state(hint),
                reason,
                patterns: Patterns::EMPTY,
                peer: Some(pkt.src),
                repair: None,
            };
        };
        // (`Queued` was resolved to a given state before tracking.)
        let ct = match hint {
            CtHint::Given(s) => s,
            _ if reason.is_some() => CtState::Invalid,
            _ if new => CtState::New,
            _ => CtState::Established,
        };
        // The kernel doubted a packet the liberal tracker finds fine: name the benign
        // pattern that explains the difference, so the log says why it was let through.
        let reason = match (reason, ct) {
            (None, CtState::Invalid) => Some(if patterns.contains(Pattern::KeepAlive) {
                Reason::KeepAlive
            } else if patterns.contains(Pattern::ZeroWindowProbe) {
                Reason::ZeroWindowProbe
            } else if patterns.contains(Pattern::SpuriousRetransmission) {
                Reason::RetransmittedAckedData
            } else {
                Reason::ConntrackOnlyInvalid
            }),
            (r, _) => r,
        };
        Tracked {
            ct,
            reason,
            patterns,
            peer: Some(initiator),
            repair,
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
            return Tracked {
                ct,
                reason: None,
                patterns: Patterns::EMPTY,
                peer: None,
                repair: None,
            };
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
        let ct = match (hint, seen) {
            (CtHint::Given(s), _) => s,
            // Conntrack calls UDP NEW until it sees a reply.
            (_, Some(true) | None) => CtState::New,
            (_, Some(false)) => CtState::Established,
        };
        Tracked {
            ct,
            reason: if seen.is_none() {
                Some(Reason::FlowTableFull)
            } else {
                None
            },
            patterns: Patterns::EMPTY,
            peer: None,
            repair: None,
        }
    }

    fn count(&self, d: &Decision, now_ns: u64) {
        let c = &self.counters;
        c.packets.fetch_add(1, Ordering::Relaxed);
        match d.verdict {
            Verdict::Accept => c.accepted.fetch_add(1, Ordering::Relaxed),
            Verdict::Drop => c.dropped.fetch_add(1, Ordering::Relaxed),
        };
        if d.would_drop {
            c.would_drop.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(r) = d.reason {
            c.by_reason[r.index()].fetch_add(1, Ordering::Relaxed);
        }
        if d.patterns.is_empty() && d.reason.is_none() {
            return;
        }
        for p in d.patterns.iter() {
            c.by_pattern[p as usize].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(peer) = d.peer {
            let class = d.reason.map(|r| r.class());
            let displaced = matches!(d.reason, Some(Reason::SackDisplaced { .. }));
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
            });
        }
    }
}
