//! The conntrack state of a queued packet: as the kernel attached it, or as the
//! rule that queued it wrote it into the mark.
//!
//! The kernel attaches conntrack info to queued packets (`NFQA_CT`, `NFQA_CT_INFO`)
//! only when it is built with `CONFIG_NETFILTER_NETLINK_GLUE_CT`, and even then
//! INVALID and UNTRACKED packets carry nothing (they have no conntrack entry). So
//! nfqwall's rendered ruleset tells it the state itself: the rule that queues a packet
//! first writes its `--ctstate` into the state bits of the mark
//! ([`crate::rules::marks`]). Nothing is guessed from the packet's shape: a loose
//! pick-up ACK is NEW because conntrack said so, and a SACK-bearing segment queued
//! for repair is ESTABLISHED because conntrack said so.
//!
//! Where the kernel attached a state, it wins. Where neither source says anything
//! (`--no-rules` with rules that do not write the state bits), the packet is judged
//! as INVALID with no state: never vouched for, hostile classes dropped in enforce.

use crate::engine::{CtHint, CtState};
use crate::rules::Marks;

/// Where the conntrack state of queued packets comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtSource {
    /// The kernel attaches it (`NFQA_CT_INFO`).
    Kernel,
    /// The queuing rule writes it into the mark's state bits.
    Ruleset,
    /// Neither: packets are judged as INVALID with no state.
    None,
}

impl CtSource {
    /// `kernel`, `ruleset` or `none`, as written in events and stats.
    pub fn name(self) -> &'static str {
        match self {
            CtSource::Kernel => "kernel",
            CtSource::Ruleset => "ruleset",
            CtSource::None => "none",
        }
    }
}

/// What the kernel attached to one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelCt {
    /// `ctinfo` was attached: the packet has a conntrack entry in this state.
    Given(CtState),
    /// Nothing attached.
    Absent,
}

/// Maps the nfq crate's conntrack info to a state (reply directions fold into theirs).
pub fn from_nfq(info: Option<&nfq::Conntrack>) -> KernelCt {
    use nfq::conntrack::State;
    match info.map(|c| c.get_state()) {
        None => KernelCt::Absent,
        Some(State::New | State::NewReply) => KernelCt::Given(CtState::New),
        Some(State::Established | State::EstablishedReply) => KernelCt::Given(CtState::Established),
        Some(State::Related | State::RelatedReply) => KernelCt::Given(CtState::Related),
        Some(State::Invalid) => KernelCt::Given(CtState::Invalid),
    }
}

/// The conntrack state to hand the engine for one queued packet, and where it came
/// from: the kernel's if attached, else the state bits of its mark, else INVALID
/// with no source.
pub fn state_for(kernel: KernelCt, mark: u32, marks: Marks) -> (CtHint, CtSource) {
    match (kernel, marks.state_of(mark)) {
        (KernelCt::Given(s), _) => (CtHint::Given(s), CtSource::Kernel),
        (KernelCt::Absent, Some(s)) => (CtHint::Given(s), CtSource::Ruleset),
        (KernelCt::Absent, None) => (CtHint::Given(CtState::Invalid), CtSource::None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn marks() -> Marks {
        Marks::of(&Config::builtin_default().daemon)
    }

    #[test]
    fn kernel_state_wins_over_the_mark() {
        let m = marks();
        let mark = m.state_value(CtState::Invalid);
        assert_eq!(
            state_for(KernelCt::Given(CtState::Established), mark, m),
            (CtHint::Given(CtState::Established), CtSource::Kernel)
        );
    }

    #[test]
    fn the_mark_names_the_state_exactly() {
        let m = marks();
        for &s in Marks::states() {
            let mark = m.state_value(s) | 0x4000;
            assert_eq!(
                state_for(KernelCt::Absent, mark, m),
                (CtHint::Given(s), CtSource::Ruleset)
            );
        }
    }

    #[test]
    fn no_source_is_invalid_with_no_state() {
        assert_eq!(
            state_for(KernelCt::Absent, 0x4000, marks()),
            (CtHint::Given(CtState::Invalid), CtSource::None)
        );
    }
}
