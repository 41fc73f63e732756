//! The conntrack state of a queued packet, as the kernel gave it or as inferred.
//!
//! The kernel attaches conntrack info to queued packets (`NFQA_CT`, `NFQA_CT_INFO`)
//! only when it is built with `CONFIG_NETFILTER_NETLINK_GLUE_CT`; then binding with
//! `NFQA_CFG_F_CONNTRACK` succeeds and every tracked packet carries its `ctinfo`. Even
//! then INVALID and UNTRACKED packets carry nothing (they have no conntrack entry), so
//! the two are told apart by the service: a `stateless` service is exempted from
//! tracking by the ruleset, so its packets are UNTRACKED; any other is INVALID.
//!
//! Without that kernel option (the flag is refused with `EOPNOTSUPP`) nfqwall infers
//! the state from what the ruleset queues: rules queue only the states a service lists
//! (by default INVALID and NEW), never ESTABLISHED traffic. So a queued TCP segment
//! that could open a connection (SYN without ACK, RST or FIN) is NEW, and any other
//! queued TCP segment of a tracked service is INVALID (conntrack would not have queued
//! it as ESTABLISHED). A queued UDP or other datagram of a tracked service is NEW:
//! conntrack marks those INVALID only for broken headers, which the engine reports as
//! malformed anyway. The inference is wrong in one known case: with
//! `nf_conntrack_tcp_loose=1` conntrack also picks up a mid-stream segment as NEW
//! (after a conntrack flush); nfqwall calls it INVALID and the liberal tracker accepts
//! it as `conntrack_only_invalid` or a pickup.

use crate::engine::policy::Policy;
use crate::engine::{CtHint, CtState};
use crate::wire::{self, Transport};

/// Where the conntrack state of queued packets comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtSource {
    /// The kernel attaches it (`NFQA_CT_INFO`).
    Kernel,
    /// The kernel cannot attach it; nfqwall infers it from the packet and the service.
    Inferred,
}

impl CtSource {
    /// `kernel` or `inferred`, as written in events and stats.
    pub fn name(self) -> &'static str {
        match self {
            CtSource::Kernel => "kernel",
            CtSource::Inferred => "inferred",
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

/// The conntrack hint to hand the engine for one queued IP packet.
///
/// The kernel's state wins when it attached one. Without one, on a kernel that does
/// attach states (`CtSource::Kernel`), the packet had no conntrack entry: UNTRACKED
/// for a `stateless` service, else INVALID. On a kernel that never attaches them
/// (`CtSource::Inferred`), the engine infers the state from what the ruleset queues
/// ([`CtHint::Queued`]), reading the headers once for both.
pub fn hint_for(source: CtSource, kernel: KernelCt, policy: &Policy, ip: &[u8]) -> CtHint {
    match (kernel, source) {
        (KernelCt::Given(s), _) => CtHint::Given(s),
        (KernelCt::Absent, CtSource::Inferred) => CtHint::Queued,
        (KernelCt::Absent, CtSource::Kernel) => {
            let stateless = wire::parse_ip(ip, ip.len()).ok().is_some_and(|pkt| {
                let dport = match pkt.transport {
                    Transport::Tcp(ref t) => Some(t.dport),
                    Transport::Udp { dport, .. } => Some(dport),
                    _ => None,
                };
                policy
                    .find_service(pkt.proto, pkt.dst, dport)
                    .is_some_and(|s| s.stateless())
            });
            CtHint::Given(if stateless {
                CtState::Untracked
            } else {
                CtState::Invalid
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// IPv4 + TCP header, 192.0.2.1:40000 -> 192.0.2.2:`dport`, given flags.
    fn tcp(dport: u16, flags: u8) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
        ];
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p
    }

    /// IPv4 + UDP header to 192.0.2.2:`dport`.
    fn udp(dport: u16) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
        ];
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 8, 0, 0]);
        p
    }

    fn dns_policy() -> Policy {
        let cfg = Config::from_toml_str(
            "[[service]]\nname = \"dns\"\nprotocol = \"udp\"\nports = [53]\nstateless = true\n\
             [[service]]\nname = \"web\"\nprotocol = \"tcp\"\n",
            "t",
        )
        .unwrap();
        Policy::compile(&cfg)
    }

    #[test]
    fn kernel_state_wins() {
        let p = dns_policy();
        let h = hint_for(
            CtSource::Kernel,
            KernelCt::Given(CtState::Established),
            &p,
            &tcp(80, 0x10),
        );
        assert_eq!(h, CtHint::Given(CtState::Established));
    }

    #[test]
    fn absent_with_kernel_source_is_invalid_or_untracked() {
        let p = dns_policy();
        let f = |b: &[u8]| hint_for(CtSource::Kernel, KernelCt::Absent, &p, b);
        assert_eq!(f(&tcp(80, 0x02)), CtHint::Given(CtState::Invalid));
        assert_eq!(f(&udp(53)), CtHint::Given(CtState::Untracked));
        assert_eq!(f(&[0x45, 0]), CtHint::Given(CtState::Invalid), "truncated");
    }

    #[test]
    fn absent_on_an_inferring_kernel_lets_the_engine_infer() {
        let p = dns_policy();
        let h = hint_for(CtSource::Inferred, KernelCt::Absent, &p, &udp(53));
        assert_eq!(h, CtHint::Queued);
    }
}
