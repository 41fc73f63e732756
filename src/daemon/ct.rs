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

/// `enum ip_conntrack_info` values (include/uapi/linux/netfilter/nf_conntrack_common.h).
const IP_CT_ESTABLISHED: u32 = 0;
const IP_CT_RELATED: u32 = 1;
const IP_CT_NEW: u32 = 2;
const IP_CT_ESTABLISHED_REPLY: u32 = 3;
const IP_CT_RELATED_REPLY: u32 = 4;
const IP_CT_NEW_REPLY: u32 = 5;

/// Maps the kernel's conntrack info (`NFQA_CT_INFO`, an `enum ip_conntrack_info`;
/// `None` when the kernel attached no `NFQA_CT`/`NFQA_CT_INFO`) to a state: reply
/// directions fold into theirs, any other value is INVALID. The kernel attaches
/// nothing to INVALID and UNTRACKED packets (no conntrack entry): those are
/// [`KernelCt::Absent`], left to the mark's state bits.
pub fn from_kernel(info: Option<u32>) -> KernelCt {
    match info {
        None => KernelCt::Absent,
        Some(IP_CT_NEW | IP_CT_NEW_REPLY) => KernelCt::Given(CtState::New),
        Some(IP_CT_ESTABLISHED | IP_CT_ESTABLISHED_REPLY) => KernelCt::Given(CtState::Established),
        Some(IP_CT_RELATED | IP_CT_RELATED_REPLY) => KernelCt::Given(CtState::Related),
        Some(_) => KernelCt::Given(CtState::Invalid),
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
    fn kernel_ctinfo_maps_as_before() {
        use CtState::*;
        let given = |s| KernelCt::Given(s);
        assert_eq!(from_kernel(None), KernelCt::Absent);
        for (info, state) in [
            (0, given(Established)),
            (1, given(Related)),
            (2, given(New)),
            (3, given(Established)),
            (4, given(Related)),
            (5, given(New)),
            (7, given(Invalid)),
            (99, given(Invalid)),
        ] {
            assert_eq!(from_kernel(Some(info)), state, "ctinfo {info}");
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
