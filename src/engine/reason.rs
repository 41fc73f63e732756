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
    /// Doubtful but shown harmless: an INVALID packet of this class may be let past
    /// the host's INVALID drop (enforce), when the state behind it is trusted.
    Benign,
    /// An attack or a broken stack: dropped in enforce mode.
    Hostile,
    /// Decided by the configured stateless rules.
    Policy,
    /// Nothing shows the packet benign: conntrack's verdict stands (the packet goes
    /// on to the host's rules, which drop an INVALID packet).
    Unproven,
    /// Not judged (load shedding, internal failure): left to the host's rules.
    FailOpen,
}

impl Class {
    /// The lower-case name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Class::Benign => "benign",
            Class::Hostile => "hostile",
            Class::Policy => "policy",
            Class::Unproven => "unproven",
            Class::FailOpen => "fail_open",
        }
    }
}

/// Defines [`Reason`]'s table once: each variant with its stable name and class, in
/// index order. `NAMES`, `index`, `name` and `class` all come from this one list.
macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident $({ $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? })? $(( $tuple:ty ))? => $name:literal, $class:ident; )*) => {
        /// Why a packet was not simply passed on.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $( $(#[$doc])* $variant $({ $($(#[$fdoc])* $field: $ty),* })? $(($tuple))?, )*
        }

        /// The variants' positions in the table.
        #[allow(dead_code)]
        enum ReasonIndex {
            $( $variant, )*
        }

        /// Number of distinct reason names (for counter arrays).
        pub const REASON_KINDS: usize = [$($name),*].len();

        impl Reason {
            /// Every reason name, indexed by [`Reason::index`].
            pub const NAMES: [&'static str; REASON_KINDS] = [$($name),*];

            /// A dense index for counters.
            pub fn index(&self) -> usize {
                match self {
                    $( Reason::$variant { .. } => ReasonIndex::$variant as usize, )*
                }
            }

            /// How the engine treats this reason (before the parse-error refinement
            /// in [`Reason::class`]).
            fn table_class(&self) -> Class {
                match self {
                    $( Reason::$variant { .. } => Class::$class, )*
                }
            }
        }
    };
}

reasons! {
    /// Not an IP packet (replay only: the kernel queues IP).
    NotIp => "not_ip", Benign;
    /// The link, IP or transport header could not be read.
    Malformed(ParseError) => "malformed_packet", Hostile;
    /// The TCP option list is unreadable.
    MalformedOptions(OptionError) => "malformed_tcp_options", Hostile;
    /// A TCP flag combination no correct stack sends.
    ImpossibleFlags(u8) => "impossible_tcp_flags", Hostile;
    /// An IP fragment after the first: no transport header to judge.
    Fragment => "ip_fragment", Unproven;
    /// A RST whose sequence number is outside the receiver's window.
    RstOutOfWindow {
        /// Distance from the nearest window edge, in bytes.
        distance: u32,
    } => "rst_out_of_window", Hostile;
    /// A RST answering a SYN whose ACK does not acknowledge that SYN.
    RstBadAck => "rst_bad_ack", Hostile;
    /// A SYN with a new sequence number on an open flow, outside its window.
    SynOutOfWindow {
        /// Distance from the nearest window edge, in bytes.
        distance: u32,
    } => "syn_out_of_window", Hostile;
    /// A segment whose data was all acknowledged already.
    RetransmittedAckedData => "retransmitted_acked_data", Benign;
    /// One byte sent into a zero window.
    ZeroWindowProbe => "zero_window_probe", Benign;
    /// A keep-alive: zero or one byte one below the next sequence number.
    KeepAlive => "keep_alive", Benign;
    /// Data that ends beyond the receiver's advertised window by less than a window.
    SlightlyBeyondWindow {
        /// Bytes beyond the right edge.
        over: u32,
    } => "slightly_beyond_window", Benign;
    /// Data far outside the window the engine has seen.
    SeqFarOutsideWindow {
        /// Distance from the nearest window edge, in bytes.
        distance: u32,
    } => "seq_far_outside_window", Unproven;
    /// An ACK for data the engine never saw sent.
    AckOfUnseenData {
        /// Bytes acknowledged beyond what was seen.
        over: u32,
    } => "ack_of_unseen_data", Unproven;
    /// A segment arriving after the flow was closed by FIN or RST.
    LateAfterClose => "late_after_close", Benign;
    /// SACK blocks displaced from the ACK by a constant offset.
    SackDisplaced {
        /// Lowest offset consistent with everything seen on this flow.
        offset_low: u32,
        /// Highest offset consistent with everything seen on this flow.
        offset_high: u32,
    } => "sack_displaced", Benign;
    /// A SACK block outside the window that no single offset explains.
    SackOutsideWindow => "sack_outside_window", Unproven;
    /// The flow table is full: no state for the packet.
    FlowTableFull => "flow_table_full", Unproven;
    /// A configured rule dropped the packet.
    RuleDrop => "rule_drop", Policy;
    /// No rule matched and the service's default is drop.
    ServiceDefaultDrop => "service_default_drop", Policy;
    /// Conntrack called it INVALID, but it fits the window of a flow nfqwall saw whole.
    ConntrackOnlyInvalid => "conntrack_only_invalid", Benign;
    /// Not judged: nfqwall fell behind (load shedding).
    Shed => "shed", FailOpen;
    /// Not judged: judging the packet failed internally.
    InternalError => "internal_error", FailOpen;
    /// An INVALID packet of a flow nfqwall holds no state for.
    NoState => "no_state", Unproven;
    /// An INVALID packet of a flow nfqwall knows only in part, with nothing that
    /// shows it benign.
    NotProvenBenign => "not_proven_benign", Unproven;
    /// An INVALID RST with no trusted window to prove it in window.
    RstNoState => "rst_no_state", Hostile;
    /// An INVALID SYN with no trusted window to prove it harmless.
    SynNoState => "syn_no_state", Hostile;
    /// An ACK that acknowledges nothing the receiver could still expect.
    AckOutsideWindow {
        /// Distance below the lowest acceptable acknowledgement, in bytes.
        distance: u32,
    } => "ack_outside_window", Unproven;
}

impl Reason {
    /// The stable snake_case name.
    pub fn name(&self) -> &'static str {
        Reason::NAMES[self.index()]
    }

    /// How the engine treats this reason. A frame that is not IP is only noted.
    pub fn class(&self) -> Class {
        match self {
            Reason::Malformed(ParseError::NotIp(_)) => Class::Benign,
            r => r.table_class(),
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
            Reason::FlowTableFull => f.write_str("flow table full: no state for this flow, conntrack's verdict stands (raise engine.max_flows)"),
            Reason::RuleDrop => f.write_str("dropped by a configured rule (policy)"),
            Reason::ServiceDefaultDrop => f.write_str("no rule matched and the service default is drop (policy)"),
            Reason::ConntrackOnlyInvalid => f.write_str("conntrack marked it INVALID but it fits the window of a flow nfqwall saw whole (conntrack's stricter window or state checks)"),
            Reason::Shed => f.write_str("not judged (nfqwall fell behind: load shedding); left to the host's rules"),
            Reason::InternalError => f.write_str("not judged (internal error while judging); left to the host's rules"),
            Reason::NoState => f.write_str("no state for this flow: conntrack's verdict stands"),
            Reason::NotProvenBenign => f.write_str("nfqwall sees only part of this flow and nothing shows this packet benign: conntrack's verdict stands"),
            Reason::RstNoState => f.write_str("RST that conntrack calls INVALID, with no trusted window to prove it in window (blind or forged reset)"),
            Reason::SynNoState => f.write_str("SYN that conntrack calls INVALID, with no trusted window to prove it harmless (blind SYN injection)"),
            Reason::AckOutsideWindow { distance } => write!(
                f,
                "ACK is {distance} bytes below anything the receiver could still expect (stale, corrupted or forged ACK)"
            ),
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
