//! The offline front end: feed a capture's frames through the engine, and say what
//! nfqwall would have done to that traffic.

pub mod capture;
pub mod output;

use crate::engine::flow::FlowKey;
use crate::engine::meta::{CtHint, PacketMeta};
use crate::engine::patterns::Pattern;
use crate::engine::reason::Class;
use crate::engine::{Decision, Engine, Reason};
use capture::{CaptureError, CaptureReader};
use std::collections::HashMap;
use std::io::Read;

/// Capture-time interval between flow-table sweeps.
const EXPIRE_EVERY_NS: u64 = 1_000_000_000;

/// One frame's outcome, as the per-packet output prints it.
#[derive(Clone, Copy, Debug)]
pub struct FrameOutcome {
    /// 1-based frame number.
    pub frame: u64,
    /// Capture timestamp, ns since the epoch.
    pub ts_ns: u64,
    /// The engine's decision.
    pub decision: Decision,
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
}

/// Replays a capture through `engine`, calling `each` for every frame.
pub fn replay<R: Read>(
    engine: &Engine,
    input: R,
    ct: CtHint,
    mut each: impl FnMut(&FrameOutcome),
) -> Result<ReplaySummary, CaptureError> {
    let mut reader = CaptureReader::new(input)?;
    let mut summary = ReplaySummary::default();
    let mut middleboxes: HashMap<FlowKey, MiddleboxSuspect> = HashMap::new();
    let mut flows_seen: HashMap<FlowKey, FlowTrouble> = HashMap::new();
    let mut next_expire = 0u64;
    while let Some(frame) = reader.next_frame() {
        let frame = match frame {
            Ok(f) => f,
            Err(e @ CaptureError::Truncated { .. }) | Err(e @ CaptureError::Malformed { .. }) => {
                summary.truncated = Some(e.to_string());
                break;
            }
            Err(e) => return Err(e),
        };
        if frame.ts_ns >= next_expire {
            engine.expire(frame.ts_ns);
            next_expire = frame.ts_ns.saturating_add(EXPIRE_EVERY_NS);
        }
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
                let key = FlowKey::new(t.src, t.sport, t.dst, t.dport, t.proto).0;
                let f = flows_seen.entry(key).or_insert_with(|| FlowTrouble {
                    first: Some((t.src, t.sport)),
                    second: Some((t.dst, t.dport)),
                    ..FlowTrouble::default()
                });
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
        });
    }
    summary.flows = flows_seen.len() as u64;
    summary.troubled_flows = flows_seen.into_values().filter(|f| f.total() > 0).collect();
    summary
        .troubled_flows
        .sort_by(|a, b| b.total().cmp(&a.total()).then(a.first.cmp(&b.first)));
    summary.middleboxes = middleboxes.into_values().collect();
    summary.middleboxes.sort_by_key(|m| m.first_frame);
    Ok(summary)
}
