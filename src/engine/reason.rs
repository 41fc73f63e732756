//! Named reasons: why a packet got a verdict other than a plain accept.
//!
//! Every reason reads "condition (likely cause)", as Linux conntrack's log messages
//! do, and has a stable snake_case name used in JSON, counters and configs.

use crate::wire::tcp_options::OptionError;
use crate::wire::ParseError;
use core::fmt;

/// How the engine treats a class of packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Doubtful but harmless: accepted, logged.
    Benign,
    /// An attack or a broken stack: dropped in enforce mode.
    Hostile,
    /// Decided by the configured stateless rules.
    Policy,
    /// Accepted without judgement (load shedding, internal failure): fail open.
    FailOpen,
}

/// Why a packet was not simply accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not an IP packet (replay only: the kernel queues IP).
    NotIp,
    /// The link, IP or transport header could not be read.
    Malformed(ParseError),
    /// The TCP option list is unreadable.
    MalformedOptions(OptionError),
    /// A TCP flag combination no correct stack sends.
    ImpossibleFlags(u8),
    /// An IP fragment after the first: no transport header to judge.
    Fragment,
    /// A RST whose sequence number is outside the receiver's window.
    RstOutOfWindow {
        /// Distance from the nearest window edge, in bytes.
        distance: u32,
    },
    /// A RST answering a SYN whose ACK does not acknowledge that SYN.
    RstBadAck,
    /// A SYN with a new sequence number on an open flow, outside its window.
    SynOutOfWindow {
        /// Distance from the nearest window edge, in bytes.
        distance: u32,
    },
    /// A segment whose data was all acknowledged already.
    RetransmittedAckedData,
    /// One byte sent into a zero window.
    ZeroWindowProbe,
    /// A keep-alive: zero or one byte one below the next sequence number.
    KeepAlive,
    /// Data that ends beyond the receiver's advertised window by less than a window.
    SlightlyBeyondWindow {
        /// Bytes beyond the right edge.
        over: u32,
    },
    /// Data far outside the window the engine has seen.
    SeqFarOutsideWindow {
        /// Distance from the nearest window edge, in bytes.
        distance: u32,
    },
    /// An ACK for data the engine never saw sent.
    AckOfUnseenData {
        /// Bytes acknowledged beyond what was seen.
        over: u32,
    },
    /// A segment arriving after the flow was closed by FIN or RST.
    LateAfterClose,
    /// SACK blocks displaced from the ACK by a constant offset.
    SackDisplaced {
        /// Lowest offset consistent with everything seen on this flow.
        offset_low: u32,
        /// Highest offset consistent with everything seen on this flow.
        offset_high: u32,
    },
    /// A SACK block outside the window that no single offset explains.
    SackOutsideWindow,
    /// The flow table is full: the packet was judged without flow state.
    FlowTableFull,
    /// A configured rule dropped the packet.
    RuleDrop,
    /// A configured rule accepted the packet.
    /// No rule matched and the service's default is drop.
    ServiceDefaultDrop,
    /// Conntrack called it INVALID, but it fits the window nfqwall tracked.
    ConntrackOnlyInvalid,
    /// Accepted uninspected because nfqwall fell behind (load shedding).
    Shed,
    /// Accepted because judging the packet failed internally.
    InternalError,
}

/// Number of distinct reason names (for counter arrays).
pub const REASON_KINDS: usize = 23;

impl Reason {
    /// Every reason name, indexed by [`Reason::index`].
    pub const NAMES: [&'static str; REASON_KINDS] = [
        "not_ip",
        "malformed_packet",
        "malformed_tcp_options",
        "impossible_tcp_flags",
        "ip_fragment",
        "rst_out_of_window",
        "rst_bad_ack",
        "syn_out_of_window",
        "retransmitted_acked_data",
        "zero_window_probe",
        "keep_alive",
        "slightly_beyond_window",
        "seq_far_outside_window",
        "ack_of_unseen_data",
        "late_after_close",
        "sack_displaced",
        "sack_outside_window",
        "flow_table_full",
        "rule_drop",
        "service_default_drop",
        "conntrack_only_invalid",
        "shed",
        "internal_error",
    ];

    /// A dense index for counters.
    pub fn index(&self) -> usize {
        match self {
            Reason::NotIp => 0,
            Reason::Malformed(_) => 1,
            Reason::MalformedOptions(_) => 2,
            Reason::ImpossibleFlags(_) => 3,
            Reason::Fragment => 4,
            Reason::RstOutOfWindow { .. } => 5,
            Reason::RstBadAck => 6,
            Reason::SynOutOfWindow { .. } => 7,
            Reason::RetransmittedAckedData => 8,
            Reason::ZeroWindowProbe => 9,
            Reason::KeepAlive => 10,
            Reason::SlightlyBeyondWindow { .. } => 11,
            Reason::SeqFarOutsideWindow { .. } => 12,
            Reason::AckOfUnseenData { .. } => 13,
            Reason::LateAfterClose => 14,
            Reason::SackDisplaced { .. } => 15,
            Reason::SackOutsideWindow => 16,
            Reason::FlowTableFull => 17,
            Reason::RuleDrop => 18,
            Reason::ServiceDefaultDrop => 19,
            Reason::ConntrackOnlyInvalid => 20,
            Reason::Shed => 21,
            Reason::InternalError => 22,
        }
    }

    /// The stable snake_case name.
    pub fn name(&self) -> &'static str {
        Reason::NAMES[self.index()]
    }

    /// How the engine treats this reason.
    pub fn class(&self) -> Class {
        match self {
            Reason::Malformed(ParseError::NotIp(_)) | Reason::NotIp => Class::Benign,
            Reason::Malformed(_)
            | Reason::MalformedOptions(_)
            | Reason::ImpossibleFlags(_)
            | Reason::RstOutOfWindow { .. }
            | Reason::RstBadAck
            | Reason::SynOutOfWindow { .. } => Class::Hostile,
            Reason::Fragment
            | Reason::RetransmittedAckedData
            | Reason::ZeroWindowProbe
            | Reason::KeepAlive
            | Reason::SlightlyBeyondWindow { .. }
            | Reason::SeqFarOutsideWindow { .. }
            | Reason::AckOfUnseenData { .. }
            | Reason::LateAfterClose
            | Reason::SackDisplaced { .. }
            | Reason::SackOutsideWindow
            | Reason::FlowTableFull
            | Reason::ConntrackOnlyInvalid => Class::Benign,
            Reason::RuleDrop | Reason::ServiceDefaultDrop => Class::Policy,
            Reason::Shed | Reason::InternalError => Class::FailOpen,
        }
    }

    /// The estimated middlebox offset, for reasons that have one: exact when the range
    /// has narrowed to one value; the midpoint of a narrow range; else the lower
    /// bound, which is off by at most the data not yet acknowledged, where the upper
    /// bound of a wide range says little.
    pub fn offset_estimate(&self) -> Option<u32> {
        match *self {
            Reason::SackDisplaced {
                offset_low,
                offset_high,
            } => {
                let width = offset_high.wrapping_sub(offset_low);
                Some(if width < 1 << 20 {
                    offset_low.wrapping_add(width / 2)
                } else {
                    offset_low
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotIp => f.write_str("not an IP packet (other link-layer traffic in the capture)"),
            Reason::Malformed(e) => write!(f, "{e}"),
            Reason::MalformedOptions(e) => write!(f, "{e}"),
            Reason::ImpossibleFlags(flags) => write!(
                f,
                "TCP flags {} form no valid combination (scan or crafted packet)",
                flag_names(*flags)
            ),
            Reason::Fragment => f.write_str("IP fragment without a transport header (fragmented datagram; judged by its first fragment)"),
            Reason::RstOutOfWindow { distance } => write!(
                f,
                "RST is {distance} bytes outside the receiver's window (forged or blind reset, RFC 5961)"
            ),
            Reason::RstBadAck => f.write_str("RST does not acknowledge the SYN it answers (forged reset)"),
            Reason::SynOutOfWindow { distance } => write!(
                f,
                "SYN with a new sequence number {distance} bytes outside the window of an open flow (blind SYN injection, RFC 5961)"
            ),
            Reason::RetransmittedAckedData => f.write_str("data was already acknowledged (retransmission after a lost or late ACK)"),
            Reason::ZeroWindowProbe => f.write_str("one byte into a zero window (zero-window probe)"),
            Reason::KeepAlive => f.write_str("segment one below the next sequence number (keep-alive)"),
            Reason::SlightlyBeyondWindow { over } => write!(
                f,
                "data ends {over} bytes beyond the receiver's window (window update not yet seen, or a sender overshooting)"
            ),
            Reason::SeqFarOutsideWindow { distance } => write!(
                f,
                "SEQ is {distance} bytes outside the window seen (flow picked up mid-stream, or data the receiver will discard)"
            ),
            Reason::AckOfUnseenData { over } => write!(
                f,
                "ACK is {over} bytes over the highest sequence seen (segments not seen by nfqwall)"
            ),
            Reason::LateAfterClose => f.write_str("segment after the flow closed (late retransmission or delayed packet after FIN/RST)"),
            Reason::SackDisplaced { offset_low, offset_high } => {
                if offset_low == offset_high {
                    write!(f, "SACK blocks displaced from the ACK by a constant offset {offset_low} (sequence-randomizing middlebox that does not rewrite SACK)")
                } else {
                    write!(f, "SACK blocks displaced from the ACK by a constant offset in {offset_low}..={offset_high} (sequence-randomizing middlebox that does not rewrite SACK)")
                }
            }
            Reason::SackOutsideWindow => f.write_str("SACK block outside the window with no consistent offset (broken SACK generation)"),
            Reason::FlowTableFull => f.write_str("flow table full (judged without flow state; raise engine.max_flows)"),
            Reason::RuleDrop => f.write_str("dropped by a configured rule (policy)"),
            Reason::ServiceDefaultDrop => f.write_str("no rule matched and the service default is drop (policy)"),
            Reason::ConntrackOnlyInvalid => f.write_str("conntrack marked it INVALID but it fits the window nfqwall tracked (conntrack's stricter window or state checks)"),
            Reason::Shed => f.write_str("accepted uninspected (nfqwall fell behind: load shedding)"),
            Reason::InternalError => f.write_str("accepted uninspected (internal error while judging; fail open)"),
        }
    }
}

/// Formats TCP flags as `SYN|FIN`, or `none`.
pub fn flag_names(flags: u8) -> FlagNames {
    FlagNames(flags)
}

/// Display adapter for TCP flags.
pub struct FlagNames(u8);

impl fmt::Display for FlagNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        if self.0 == 0 {
            return f.write_str("none");
        }
        let mut first = true;
        for (bit, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexed() {
        let mut seen = std::collections::HashSet::new();
        for name in &Reason::NAMES {
            assert!(seen.insert(*name), "duplicate {name}");
        }
        assert_eq!(Reason::Shed.name(), "shed");
        assert_eq!(Reason::SackOutsideWindow.name(), "sack_outside_window");
    }

    #[test]
    fn display_reads_condition_then_cause() {
        let r = Reason::RstOutOfWindow { distance: 1 << 31 };
        assert_eq!(
            r.to_string(),
            "RST is 2147483648 bytes outside the receiver's window (forged or blind reset, RFC 5961)"
        );
        assert_eq!(
            Reason::ImpossibleFlags(0x03).to_string(),
            "TCP flags FIN|SYN form no valid combination (scan or crafted packet)"
        );
    }

    #[test]
    fn offset_estimate_is_the_midpoint() {
        let r = Reason::SackDisplaced {
            offset_low: 100,
            offset_high: 200,
        };
        assert_eq!(r.offset_estimate(), Some(150));
        let wrapped = Reason::SackDisplaced {
            offset_low: u32::MAX - 9,
            offset_high: 10,
        };
        assert_eq!(wrapped.offset_estimate(), Some(0));
    }
}
