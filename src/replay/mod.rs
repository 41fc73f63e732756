//! The offline front end: feed a capture's frames through the engine, and say what
//! nfqwall would have done to that traffic.

pub mod capture;
pub mod output;
mod read_ahead;

use crate::engine::flow::FlowKey;
use crate::engine::meta::{CtHint, PacketMeta};
use crate::engine::patterns::Pattern;
use crate::engine::reason::Class;
use crate::engine::{Decision, Engine, Reason, Tuple};
use capture::{CaptureError, CaptureReader};
use std::collections::HashMap;
use std::io::Read;

/// Capture-time interval between flow-table sweeps.
const EXPIRE_EVERY_NS: u64 = 1_000_000_000;

/// Which packets of a capture the engine is shown.
#[derive(Clone, Copy)]
pub enum Visibility<'a> {
    /// Every frame, with this conntrack hint (`Auto`: the engine derives the state
    /// from the whole flow, as a strict conntrack would). The default, for analysis.
    Full(CtHint),
    /// Only what the rendered ruleset of the engine's config would queue, with the
    /// state it would be queued with: what the live daemon really sees. `model`, an
    /// engine of its own, watches every frame as strict conntrack would and says
    /// which state each packet has (NEW, ESTABLISHED, INVALID).
    Deployed {
        /// The conntrack model: sees every frame, derives each one's state.
        model: &'a Engine,
    },
}

impl Visibility<'_> {
    /// `full` or `deployed`, as the per-packet output names it.
    pub fn name(&self) -> &'static str {
        match self {
            Visibility::Full(_) => "full",
            Visibility::Deployed { .. } => "deployed",
        }
    }
}

/// One frame's outcome, as the per-packet output prints it.
#[derive(Clone, Copy, Debug)]
pub struct FrameOutcome {
    /// 1-based frame number.
    pub frame: u64,
    /// Capture timestamp, ns since the epoch.
    pub ts_ns: u64,
    /// The engine's decision.
    pub decision: Decision,
    /// `full` or `deployed`.
    pub visibility: &'static str,
}

/// A flow where SACK blocks were displaced by a constant offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MiddleboxSuspect {
    /// The flow's initiator (the peer).
    pub peer: Option<std::net::IpAddr>,
    /// Source of the first displaced SACK seen (the SACK sender).
    pub sack_sender: (std::net::IpAddr, u16),
    /// The other end.
    pub data_sender: (std::net::IpAddr, u16),
    /// Lowest consistent offset.
    pub offset_low: u32,
    /// Highest consistent offset.
    pub offset_high: u32,
    /// Packets that showed it.
    pub packets: u64,
    /// First frame that showed it.
    pub first_frame: u64,
}

/// What one flow showed, for the flows that showed anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTrouble {
    /// Sender of the flow's first packet (address, port).
    pub first: Option<(std::net::IpAddr, u16)>,
    /// The other end.
    pub second: Option<(std::net::IpAddr, u16)>,
    /// Flagged packets per contract pattern, indexed like `Pattern::CONTRACT`.
    pub patterns: [u32; 12],
    /// Doubtful packets accepted as benign.
    pub benign: u32,
    /// Hostile packets.
    pub hostile: u32,
    /// First and last time anything was flagged, ns.
    pub first_ns: u64,
    /// Last time anything was flagged, ns.
    pub last_ns: u64,
}

impl FlowTrouble {
    /// Flagged or doubtful packets in all.
    pub fn total(&self) -> u64 {
        self.patterns.iter().map(|n| u64::from(*n)).sum::<u64>()
            + u64::from(self.benign)
            + u64::from(self.hostile)
    }
}

/// What a whole replay found.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// Frames read.
    pub frames: u64,
    /// Accept verdicts.
    pub accepted: u64,
    /// Drop verdicts.
    pub dropped: u64,
    /// Log-only accepts that enforce would have dropped.
    pub would_drop: u64,
    /// Count per reason name, with the verdict it got.
    pub reasons: HashMap<(&'static str, &'static str), u64>,
    /// Flows where a SACK-displacing middlebox is suspected.
    pub middleboxes: Vec<MiddleboxSuspect>,
    /// Distinct flows seen (TCP and UDP).
    pub flows: u64,
    /// Flows that showed patterns or doubtful packets, most trouble first.
    pub troubled_flows: Vec<FlowTrouble>,
    /// The error that ended the capture early (a truncated last record), if any.
    pub truncated: Option<String>,
    /// `full` or `deployed`.
    pub visibility: &'static str,
    /// With `deployed`: frames the rendered ruleset would not have queued (not shown
    /// to the engine, not counted in `frames`).
    pub not_queued: u64,
}

/// Replays a capture through `engine`, calling `each` for every frame it is shown.
pub fn replay<R: Read + Send>(
    engine: &Engine,
    input: R,
    visibility: Visibility<'_>,
    mut each: impl FnMut(&FrameOutcome),
) -> Result<ReplaySummary, CaptureError> {
    let reader = CaptureReader::new(input)?;
    let mut summary = ReplaySummary {
        visibility: visibility.name(),
        ..ReplaySummary::default()
    };
    let mut middleboxes: HashMap<FlowKey, MiddleboxSuspect> = HashMap::new();
    // Flows in order of first sight; a capture's frames come in runs of one flow, so
    // the last flow's index is checked before the map.
    let mut flow_index: foldhash::HashMap<FlowKey, usize> = foldhash::HashMap::default();
    let mut flows_seen: Vec<FlowTrouble> = Vec::new();
    let mut last_flow: Option<(Tuple, usize)> = None;
    let mut next_expire = 0u64;
    let ended = read_ahead::for_each_frame(reader, |frame| {
        if frame.ts_ns >= next_expire {
            engine.expire(frame.ts_ns);
            if let Visibility::Deployed { model } = visibility {
                model.expire(frame.ts_ns);
            }
            next_expire = frame.ts_ns.saturating_add(EXPIRE_EVERY_NS);
        }
        let ct = match (visibility, frame.link) {
            (Visibility::Full(ct), _) => ct,
            (Visibility::Deployed { model }, Ok(link)) => {
                match queued_state(engine, model, link, frame.ts_ns, frame.wire_len, frame.data) {
                    Some(state) => CtHint::Given(state),
                    None => {
                        summary.not_queued += 1;
                        return;
                    }
                }
            }
            (Visibility::Deployed { .. }, Err(_)) => {
                summary.not_queued += 1;
                return;
            }
        };
        let decision = match frame.link {
            Ok(link) => {
                let meta = PacketMeta {
                    link,
                    ct,
                    in_iface: None,
                    out_iface: None,
                    mark: 0,
                    wire_len: frame.wire_len,
                };
                engine.decide(frame.ts_ns, &meta, frame.data)
            }
            Err(_) => engine.decide(
                frame.ts_ns,
                &PacketMeta {
                    link: crate::engine::LinkType::Ethernet,
                    ct,
                    in_iface: None,
                    out_iface: None,
                    mark: 0,
                    wire_len: 0,
                },
                &[],
            ),
        };
        summary.frames += 1;
        match decision.verdict {
            crate::engine::Verdict::Accept => summary.accepted += 1,
            crate::engine::Verdict::Drop => summary.dropped += 1,
        }
        summary.would_drop += u64::from(decision.would_drop);
        if let Some(r) = decision.reason {
            let verdict = if decision.would_drop {
                "would-drop"
            } else {
                decision.verdict.name()
            };
            *summary.reasons.entry((r.name(), verdict)).or_default() += 1;
        }
        if let Some(t) = decision.tuple {
            if matches!(t.proto, 6 | 17) {
                let same = |l: &Tuple| {
                    *l == t
                        || (l.src, l.sport, l.dst, l.dport, l.proto)
                            == (t.dst, t.dport, t.src, t.sport, t.proto)
                };
                let i = match last_flow {
                    Some((ref l, i)) if same(l) => i,
                    _ => {
                        let key = FlowKey::new(t.src, t.sport, t.dst, t.dport, t.proto).0;
                        let i = *flow_index.entry(key).or_insert_with(|| {
                            flows_seen.push(FlowTrouble {
                                first: Some((t.src, t.sport)),
                                second: Some((t.dst, t.dport)),
                                ..FlowTrouble::default()
                            });
                            flows_seen.len() - 1
                        });
                        last_flow = Some((t, i));
                        i
                    }
                };
                let f = &mut flows_seen[i];
                let class = decision.reason.map(|r| r.class());
                if !decision.patterns.is_empty()
                    || matches!(class, Some(Class::Benign | Class::Hostile))
                {
                    if f.first_ns == 0 {
                        f.first_ns = frame.ts_ns;
                    }
                    f.last_ns = frame.ts_ns;
                    for (i, p) in Pattern::CONTRACT.iter().enumerate() {
                        if decision.patterns.contains(*p) {
                            f.patterns[i] += 1;
                        }
                    }
                    match class {
                        Some(Class::Benign) => f.benign += 1,
                        Some(Class::Hostile) => f.hostile += 1,
                        _ => {}
                    }
                }
            }
            if let Some(Reason::SackDisplaced {
                offset_low,
                offset_high,
            }) = decision.reason
            {
                let key = FlowKey::new(t.src, t.sport, t.dst, t.dport, t.proto).0;
                let m = middleboxes.entry(key).or_insert(MiddleboxSuspect {
                    peer: decision.peer,
                    sack_sender: (t.src, t.sport),
                    data_sender: (t.dst, t.dport),
                    offset_low,
                    offset_high,
                    packets: 0,
                    first_frame: frame.number,
                });
                m.offset_low = offset_low;
                m.offset_high = offset_high;
                m.packets += 1;
            }
        }
        each(&FrameOutcome {
            frame: frame.number,
            ts_ns: frame.ts_ns,
            decision,
            visibility: visibility.name(),
        });
    });
    match ended {
        Ok(()) => {}
        Err(e @ (CaptureError::Truncated { .. } | CaptureError::Malformed { .. })) => {
            summary.truncated = Some(e.to_string());
        }
        Err(e) => return Err(e),
    }
    summary.flows = flows_seen.len() as u64;
    summary.troubled_flows = flows_seen.into_iter().filter(|f| f.total() > 0).collect();
    summary
        .troubled_flows
        .sort_by(|a, b| b.total().cmp(&a.total()).then(a.first.cmp(&b.first)));
    summary.middleboxes = middleboxes.into_values().collect();
    summary.middleboxes.sort_by_key(|m| m.first_frame);
    Ok(summary)
}

/// The conntrack state with which the rendered ruleset of `engine`'s config would
/// queue this frame to the daemon, or `None` if it would not queue it.
///
/// The model sees every frame and derives its state as strict conntrack would (a
/// packet its liberal tracker doubts is INVALID). The ruleset queues only packets *to*
/// a service (the host's INPUT): for TCP the flow's initiator sends them; for other
/// protocols, without a handshake, the packet to the lower port. A stateless service's
/// packets are UNTRACKED. A `sack_repair` service also gets its SACK-bearing segments
/// whatever their state.
fn queued_state(
    engine: &Engine,
    model: &Engine,
    link: crate::engine::LinkType,
    ts_ns: u64,
    wire_len: u32,
    data: &[u8],
) -> Option<crate::engine::CtState> {
    use crate::engine::CtState;
    use crate::wire::{self, Transport};
    let meta = PacketMeta {
        link,
        ct: CtHint::Auto,
        in_iface: None,
        out_iface: None,
        mark: 0,
        wire_len,
    };
    let m = model.decide(ts_ns, &meta, data);
    let t = m.tuple?;
    let pkt = wire::parse(
        link,
        data,
        if wire_len == 0 {
            data.len() as u32
        } else {
            wire_len
        },
    )
    .ok()?;
    let (dport, has_sack) = match pkt.transport {
        Transport::Tcp(ref seg) => (
            Some(seg.dport),
            seg.options
                .as_ref()
                .is_ok_and(|o| !o.sack.as_slice().is_empty()),
        ),
        Transport::Udp { dport, .. } => (Some(dport), false),
        _ => (None, false),
    };
    let inbound = match (t.proto, m.peer) {
        (crate::wire::proto::TCP, Some(initiator)) => initiator == t.src,
        _ => t.dport <= t.sport,
    };
    if !inbound {
        return None;
    }
    let policy = engine.policy();
    let service = policy.find_service(t.proto, t.dst, dport)?;
    let state = if service.stateless() {
        CtState::Untracked
    } else {
        m.ct_state
    };
    (service.queue_states().contains(&state) || (service.sack_repair() && has_sack))
        .then_some(state)
}
