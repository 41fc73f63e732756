//! The stateless rule policy, compiled from validated services ([`Setup`]) and evaluated per packet.
//!
//! Evaluation is a linear scan over precomputed matchers: find the first service whose
//! protocol, destination port and destination address match; then walk its rules in
//! order. `log` rules record themselves and continue; the first `accept` or `drop` rule
//! decides; otherwise the service default applies. Nothing here allocates per packet
//! except the first packet of a new source in a rate rule (one map entry), and time is
//! only ever the `now_ns` argument, so capture replay is deterministic.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::engine::meta::CtState;
use crate::engine::rate::{BucketParams, RateLimiter, RateStats};
use crate::engine::spec::{
    InterfaceMatch, LengthRange, PortRange, Protocol, Rule, RuleAction, Service, Setup,
    TcpFlagMatch,
};

/// Whether a verdict is applied or only reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Drop what the policy drops.
    Enforce,
    /// Accept everything; log what would have been dropped.
    LogOnly,
}

impl Mode {
    /// The name used in configs and events.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::LogOnly => "log-only",
        }
    }
}

/// A terminating decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let the packet through.
    Accept,
    /// Discard the packet (in enforce mode).
    Drop,
}

impl Action {
    /// The name used in configs and events.
    pub fn name(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Drop => "drop",
        }
    }
}

/// Index of a service in config order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceId(pub u16);

/// Index of a rule within its service, in config order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleId(pub u16);

/// What the rules look at in one packet.
#[derive(Clone, Copy, Debug)]
pub struct RuleInput<'a> {
    /// IP protocol number (6 tcp, 17 udp, 1/58 icmp).
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port; `None` for protocols without ports or non-first fragments.
    pub sport: Option<u16>,
    /// Destination port; `None` for protocols without ports or non-first fragments.
    pub dport: Option<u16>,
    /// TCP header flag byte (FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40 CWR=0x80).
    pub tcp_flags: Option<u8>,
    /// Conntrack state.
    pub ct_state: CtState,
    /// Input interface name, when known.
    pub in_iface: Option<&'a str>,
    /// IP packet length in bytes (header included).
    pub ip_len: u32,
}

/// The policy's answer for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// First service whose protocol/ports/addresses match; `None` = no service.
    pub service: Option<ServiceId>,
    /// The service's mode, or the default mode.
    pub mode: Mode,
    /// Terminating rule's action, else the service default; `Accept` when no service.
    pub action: Action,
    /// The terminating rule; `None` when the service default applied.
    pub rule: Option<RuleId>,
    /// First `log` rule that matched on the way, if any.
    pub logged: Option<RuleId>,
    /// Mark set by the terminating rule, if it has one.
    pub mark: Option<u32>,
}

/// Ids are `u16`; compile never builds more entries than they can number.
const MAX_IDS: usize = u16::MAX as usize;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

/// A set of networks split by family, as (network, mask) integer pairs.
#[derive(Clone, Debug, Default)]
struct AddrSet {
    /// True when the config listed nothing: every address matches.
    any: bool,
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl AddrSet {
    fn new(nets: &[IpNet]) -> AddrSet {
        let mut set = AddrSet {
            any: nets.is_empty(),
            ..AddrSet::default()
        };
        for net in nets {
            match net {
                IpNet::V4(n) => set
                    .v4
                    .push((u32::from(n.network()), u32::from(n.netmask()))),
                IpNet::V6(n) => set
                    .v6
                    .push((u128::from(n.network()), u128::from(n.netmask()))),
            }
        }
        set
    }

    #[inline]
    fn contains(&self, addr: IpAddr) -> bool {
        if self.any {
            return true;
        }
        match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(net, mask)| a & mask == net)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|&(net, mask)| a & mask == net)
            }
        }
    }
}

/// An IPv4 prefix test `addr & mask == net` that a rule's address set implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct V4Test {
    net: u32,
    mask: u32,
}

impl V4Test {
    /// Every IPv4 address passes.
    const ANY: V4Test = V4Test { net: 0, mask: 0 };
    /// No IPv4 address passes (`a & 0` is never 1).
    const NONE: V4Test = V4Test { net: 1, mask: 0 };

    /// The test an IPv4 address must pass to be in `set`: exact for one IPv4 prefix
    /// or none, else the prefix the set's networks share (never stricter than the set).
    fn implied_by(set: &AddrSet) -> V4Test {
        if set.any {
            return V4Test::ANY;
        }
        let Some(&(first, first_mask)) = set.v4.first() else {
            return V4Test::NONE;
        };
        let mut mask = set.v4.iter().fold(first_mask, |m, &(_, k)| m & k);
        for &(net, _) in &set.v4 {
            // Keep only the leading bits on which every network agrees.
            mask &= !(u32::MAX
                .checked_shr((net ^ first).leading_zeros())
                .unwrap_or(0));
        }
        V4Test {
            net: first & mask,
            mask,
        }
    }

    #[inline]
    fn admits(self, addr: u32) -> bool {
        addr & self.mask == self.net
    }
}

/// What a rule asks of a packet that is cheapest to test, kept beside the other
/// rules' screens in one small array: a packet it rejects cannot match the rule, so
/// most packets pass a long list of address rules without reading the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Screen {
    /// Bit set of accepted conntrack states; 0 = any.
    ct: u8,
    /// Implied by the rule's source networks, for IPv4 packets.
    src: V4Test,
    /// Implied by the rule's destination networks, for IPv4 packets.
    dst: V4Test,
}

impl Screen {
    fn of(rule: &CompiledRule) -> Screen {
        Screen {
            ct: rule.ct,
            src: V4Test::implied_by(&rule.src),
            dst: V4Test::implied_by(&rule.dst),
        }
    }

    #[inline]
    fn admits(self, p: &Screened) -> bool {
        if self.ct != 0 && self.ct & p.ct == 0 {
            return false;
        }
        match p.v4 {
            Some((src, dst)) => self.src.admits(src) && self.dst.admits(dst),
            None => true,
        }
    }
}

/// A packet's fields as the screens read them, worked out once per packet.
struct Screened {
    ct: u8,
    /// Source and destination, when both are IPv4.
    v4: Option<(u32, u32)>,
}

impl Screened {
    fn of(p: &RuleInput) -> Screened {
        Screened {
            ct: ct_bit(p.ct_state),
            v4: match (p.src, p.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => Some((u32::from(s), u32::from(d))),
                _ => None,
            },
        }
    }
}

/// Returns true if and only if `ranges` is empty (any port) or `port` is in one of them.
/// A packet without a port (ICMP, later fragment) fails a non-empty port test.
#[inline]
fn ports_match(ranges: &[PortRange], port: Option<u16>) -> bool {
    if ranges.is_empty() {
        return true;
    }
    match port {
        Some(p) => ranges.iter().any(|r| r.contains(p)),
        None => false,
    }
}

/// Bit of a conntrack state in a state set.
#[inline]
fn ct_bit(state: CtState) -> u8 {
    match state {
        CtState::New => 1,
        CtState::Invalid => 2,
        CtState::Untracked => 4,
        CtState::Established => 8,
        CtState::Related => 16,
    }
}

/// A rule with its matchers precomputed.
#[derive(Debug)]
struct CompiledRule {
    name: Box<str>,
    action: RuleAction,
    src: AddrSet,
    dst: AddrSet,
    sports: Vec<PortRange>,
    dports: Vec<PortRange>,
    flags: Option<TcpFlagMatch>,
    /// Bit set of accepted states; 0 = any.
    ct: u8,
    iface: Option<InterfaceMatch>,
    length: Option<LengthRange>,
    /// Index into the rate limiter's buckets.
    rate_slot: Option<u32>,
    mark: Option<u32>,
}

impl CompiledRule {
    fn new(rule: &Rule, rate_slot: Option<u32>) -> CompiledRule {
        CompiledRule {
            name: rule.name.as_str().into(),
            action: rule.action,
            src: AddrSet::new(&rule.source),
            dst: AddrSet::new(&rule.destination),
            sports: rule.source_ports.clone(),
            dports: rule.destination_ports.clone(),
            flags: rule.tcp_flags,
            ct: rule.ct_state.iter().fold(0, |acc, s| acc | ct_bit(*s)),
            iface: rule.interface.clone(),
            length: rule.length,
            rate_slot,
            mark: rule.mark,
        }
    }

    /// Every condition except the rate; cheap tests first.
    #[inline]
    fn matches_stateless(&self, p: &RuleInput) -> bool {
        if self.ct != 0 && self.ct & ct_bit(p.ct_state) == 0 {
            return false;
        }
        if let Some(f) = self.flags {
            match p.tcp_flags {
                Some(b) if b & f.mask == f.value => {}
                _ => return false,
            }
        }
        if let Some(l) = self.length {
            if p.ip_len < l.min || p.ip_len > l.max {
                return false;
            }
        }
        if !ports_match(&self.dports, p.dport) || !ports_match(&self.sports, p.sport) {
            return false;
        }
        if !self.src.contains(p.src) || !self.dst.contains(p.dst) {
            return false;
        }
        if let Some(i) = &self.iface {
            // Without an interface name (replay) an interface test cannot hold, as in
            // iptables where `-i` never matches a packet with no input device.
            match p.in_iface {
                Some(name) if i.prefix && name.starts_with(i.name.as_str()) => {}
                Some(name) if !i.prefix && name == i.name => {}
                _ => return false,
            }
        }
        true
    }
}

/// A service with its matchers precomputed.
#[derive(Debug)]
pub struct ServicePolicy {
    name: Box<str>,
    protocol: Protocol,
    mode: Mode,
    default: Action,
    stateless: bool,
    sack_repair: bool,
    handback: bool,
    queue: Vec<CtState>,
    ports: Vec<PortRange>,
    addresses: AddrSet,
    rules: Vec<CompiledRule>,
    /// One per rule, in rule order.
    screens: Vec<Screen>,
}

impl ServicePolicy {
    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The protocol the service covers.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The effective mode (the service's own, else the daemon default).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The action when no rule decides.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// Whether the rendered ruleset exempts the service from conntrack.
    pub fn stateless(&self) -> bool {
        self.stateless
    }

    /// Whether displaced SACK blocks should be rewritten.
    pub fn sack_repair(&self) -> bool {
        self.sack_repair
    }

    /// Whether a flow proven to be behind a sequence-randomizing middlebox is handed
    /// back to conntrack (liberal flag); never for a repairing or stateless service.
    pub fn handback(&self) -> bool {
        self.handback
    }

    /// The conntrack states the rendered ruleset sends to nfqwall.
    pub fn queue_states(&self) -> &[CtState] {
        &self.queue
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The name of a rule, or `None` if the id is out of range.
    pub fn rule_name(&self, rule: RuleId) -> Option<&str> {
        self.rules.get(usize::from(rule.0)).map(|r| &*r.name)
    }

    #[inline]
    fn matches(&self, p: &RuleInput) -> bool {
        let proto_ok = match self.protocol {
            Protocol::Tcp => p.proto == PROTO_TCP,
            Protocol::Udp => p.proto == PROTO_UDP,
            Protocol::Icmp => p.proto == PROTO_ICMP || p.proto == PROTO_ICMPV6,
            Protocol::Any => true,
        };
        proto_ok && ports_match(&self.ports, p.dport) && self.addresses.contains(p.dst)
    }
}

/// The compiled policy. Shared by all queue threads: `evaluate` takes `&self`.
#[derive(Debug)]
pub struct Policy {
    services: Vec<ServicePolicy>,
    default_mode: Mode,
    limiter: RateLimiter,
}

impl Policy {
    /// Compiles a validated setup. Cannot fail: config loading already checked
    /// everything, including that ids fit in `u16`. (A hand-built `Config` with more
    /// than 65535 services, or rules in one service, has the excess ignored, so that
    /// ids never wrap.)
    pub fn compile<S: Setup + ?Sized>(setup: &S) -> Policy {
        let mut params = Vec::new();
        let mode = setup.default_mode();
        let services = setup
            .services()
            .iter()
            .take(MAX_IDS)
            .map(|s| compile_service(s, mode, &mut params))
            .collect();
        Policy {
            services,
            default_mode: mode,
            limiter: RateLimiter::new(params, setup.limits().max_rate_sources as usize),
        }
    }

    /// Judges one packet at time `now_ns` (packet timestamp, any epoch, monotonic-ish).
    pub fn evaluate(&self, now_ns: u64, input: &RuleInput) -> PolicyOutcome {
        let Some((sid, svc)) = self
            .services
            .iter()
            .enumerate()
            .find(|(_, s)| s.matches(input))
        else {
            return PolicyOutcome {
                service: None,
                mode: self.default_mode,
                action: Action::Accept,
                rule: None,
                logged: None,
                mark: None,
            };
        };
        // Ids fit in u16: validation rejects more services or rules than that.
        let service = Some(ServiceId(sid as u16));
        let mut logged = None;
        let screened = Screened::of(input);
        for (rid, (screen, rule)) in svc.screens.iter().zip(&svc.rules).enumerate() {
            if !screen.admits(&screened) || !rule.matches_stateless(input) {
                continue;
            }
            // The rate is tested last so that only packets meeting every other
            // condition spend tokens.
            if let Some(slot) = rule.rate_slot {
                if !self.limiter.over_rate(slot, input.src, now_ns) {
                    continue;
                }
            }
            let id = RuleId(rid as u16);
            let action = match rule.action {
                RuleAction::Log => {
                    logged.get_or_insert(id);
                    continue;
                }
                RuleAction::Accept => Action::Accept,
                RuleAction::Drop => Action::Drop,
            };
            return PolicyOutcome {
                service,
                mode: svc.mode,
                action,
                rule: Some(id),
                logged,
                mark: rule.mark,
            };
        }
        PolicyOutcome {
            service,
            mode: svc.mode,
            action: svc.default,
            rule: None,
            logged,
            mark: None,
        }
    }

    /// The service with this id.
    ///
    /// # Panics
    /// If `id` did not come from this policy (a programming error, not bad input);
    /// use [`Policy::get_service`] when unsure.
    pub fn service(&self, id: ServiceId) -> &ServicePolicy {
        &self.services[usize::from(id.0)]
    }

    /// The service with this id, or `None` if out of range.
    pub fn get_service(&self, id: ServiceId) -> Option<&ServicePolicy> {
        self.services.get(usize::from(id.0))
    }

    /// The first service whose protocol, destination port and destination address
    /// match, without judging anything (no rule runs, no rate token is spent). The live
    /// front end uses it to tell an untracked packet from an INVALID one.
    pub fn find_service(
        &self,
        proto: u8,
        dst: IpAddr,
        dport: Option<u16>,
    ) -> Option<&ServicePolicy> {
        let input = RuleInput {
            proto,
            src: dst,
            dst,
            sport: None,
            dport,
            tcp_flags: None,
            ct_state: CtState::New,
            in_iface: None,
            ip_len: 0,
        };
        self.services.iter().find(|s| s.matches(&input))
    }

    /// All services in config order.
    pub fn services(&self) -> &[ServicePolicy] {
        &self.services
    }

    /// The name of a rule; `"?"` if the ids are out of range, so event writers never panic.
    pub fn rule_name(&self, service: ServiceId, rule: RuleId) -> &str {
        self.get_service(service)
            .and_then(|s| s.rule_name(rule))
            .unwrap_or("?")
    }

    /// The mode for packets that match no service.
    pub fn default_mode(&self) -> Mode {
        self.default_mode
    }

    /// Counters of the rate limiter.
    pub fn rate_stats(&self) -> RateStats {
        self.limiter.stats()
    }

    /// Evicts the rate limiter's refilled buckets ([`RateLimiter::sweep`]).
    pub fn sweep_rates(&self, now_ns: u64) {
        self.limiter.sweep(now_ns);
    }
}

fn compile_service(
    s: &Service,
    default_mode: Mode,
    params: &mut Vec<BucketParams>,
) -> ServicePolicy {
    let rules = s
        .rules
        .iter()
        .take(MAX_IDS)
        .map(|r| {
            let slot = r.rate.map(|rate| {
                params.push(BucketParams::from_limit(rate));
                (params.len() - 1) as u32
            });
            CompiledRule::new(r, slot)
        })
        .collect::<Vec<_>>();
    let screens = rules.iter().map(Screen::of).collect();
    ServicePolicy {
        name: s.name.as_str().into(),
        protocol: s.protocol,
        mode: s.mode.unwrap_or(default_mode),
        default: s.default,
        stateless: s.stateless,
        sack_repair: s.sack_repair,
        handback: s.handback && s.protocol == Protocol::Tcp && !s.sack_repair && !s.stateless,
        queue: s.queue.clone(),
        ports: s.ports.clone(),
        addresses: AddrSet::new(&s.addresses),
        rules,
        screens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const SEC: u64 = 1_000_000_000;

    fn policy(toml: &str) -> Policy {
        match Config::from_toml_str(toml, "test.toml") {
            Ok(c) => Policy::compile(&c),
            Err(e) => panic!("{e}"),
        }
    }

    /// A TCP SYN from 198.51.100.1:40000 to 192.0.2.10:80 on eth0, ctstate NEW.
    const TEMPL: RuleInput<'static> = RuleInput {
        proto: 6,
        src: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        sport: Some(40000),
        dport: Some(80),
        tcp_flags: Some(SYN),
        ct_state: CtState::New,
        in_iface: Some("eth0"),
        ip_len: 60,
    };

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
    }

    /// One enforce-mode tcp service "web" with default `default` and the given rules.
    fn web(default: &str, rules: &str) -> Policy {
        policy(&format!(
            "[daemon]\nmode = \"enforce\"\n[[service]]\nname = \"web\"\nprotocol = \"tcp\"\n\
             default = \"{default}\"\n{rules}"
        ))
    }

    const STATES: [CtState; 5] = [
        CtState::New,
        CtState::Invalid,
        CtState::Untracked,
        CtState::Established,
        CtState::Related,
    ];

    fn any_net() -> impl proptest::strategy::Strategy<Value = IpNet> {
        use proptest::prelude::*;
        prop_oneof![
            // IPv4 prefixes near one another, so that several share leading bits.
            (0u32..4, any::<u16>(), 8u8..=32).prop_map(|(hi, lo, len)| {
                let a = Ipv4Addr::from(0x0a00_0000 | hi << 20 | u32::from(lo) << 4);
                IpNet::V4(ipnet::Ipv4Net::new(a, len).unwrap().trunc())
            }),
            (any::<u128>(), 0u8..=128).prop_map(|(a, len)| {
                IpNet::V6(ipnet::Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc())
            }),
        ]
    }

    fn any_addr() -> impl proptest::strategy::Strategy<Value = IpAddr> {
        use proptest::prelude::*;
        prop_oneof![
            (0u32..4, any::<u32>())
                .prop_map(|(hi, lo)| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | hi << 20 | lo >> 12))),
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    proptest::proptest! {
        /// The screen only ever skips a rule that cannot match.
        #[test]
        fn a_packet_the_screen_rejects_never_matches_the_rule(
            source in proptest::collection::vec(any_net(), 0..4),
            destination in proptest::collection::vec(any_net(), 0..3),
            states in proptest::collection::vec(0usize..5, 0..3),
            src in any_addr(),
            dst in any_addr(),
            state in 0usize..5,
        ) {
            let rule = Rule {
                name: "r".into(),
                action: RuleAction::Drop,
                source,
                destination,
                source_ports: Vec::new(),
                destination_ports: Vec::new(),
                tcp_flags: None,
                ct_state: states.iter().map(|&i| STATES[i]).collect(),
                interface: None,
                length: None,
                rate: None,
                mark: None,
            };
            let compiled = CompiledRule::new(&rule, None);
            let input = RuleInput { src, dst, ct_state: STATES[state], ..TEMPL };
            if compiled.matches_stateless(&input) {
                proptest::prop_assert!(Screen::of(&compiled).admits(&Screened::of(&input)));
            }
        }
    }

    #[test]
    fn one_prefix_screens_exactly_and_several_by_what_they_share() {
        let set = |nets: &[&str]| {
            AddrSet::new(&nets.iter().map(|n| n.parse().unwrap()).collect::<Vec<_>>())
        };
        let test = |nets: &[&str]| V4Test::implied_by(&set(nets));
        let a = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
        assert_eq!(test(&[]), V4Test::ANY);
        assert_eq!(test(&["2001:db8::/32"]), V4Test::NONE);
        assert!(!V4Test::NONE.admits(a("10.0.0.1")));
        let one = test(&["10.7.0.0/16"]);
        assert!(one.admits(a("10.7.200.1")) && !one.admits(a("10.8.0.1")));
        // 10.4.0.0/16 and 10.6.0.0/16 share 10.4.0.0/15's first 14 bits: 10.4.0.0/14.
        let two = test(&["10.4.0.0/16", "10.6.0.0/16"]);
        assert_eq!(
            two,
            V4Test {
                net: a("10.4.0.0"),
                mask: a("255.252.0.0")
            }
        );
        assert!(two.admits(a("10.5.0.1")) && !two.admits(a("10.8.0.1")));
    }

    /// The terminating rule's name, or "default".
    fn decided_by(p: &Policy, input: &RuleInput) -> String {
        let o = p.evaluate(0, input);
        match o.rule {
            Some(r) => p.rule_name(o.service.unwrap(), r).to_string(),
            None => "default".to_string(),
        }
    }

    fn rule(name: &str, action: &str, cond: &str) -> String {
        format!("[[service.rule]]\nname = \"{name}\"\naction = \"{action}\"\n{cond}\n")
    }

    #[test]
    fn no_service_accepts_in_default_mode() {
        let p = policy("[[service]]\nname = \"dns\"\nprotocol = \"udp\"\ndefault = \"drop\"\n");
        let o = p.evaluate(0, &TEMPL);
        assert_eq!(
            o,
            PolicyOutcome {
                service: None,
                mode: Mode::LogOnly,
                action: Action::Accept,
                rule: None,
                logged: None,
                mark: None
            }
        );
    }

    #[test]
    fn service_default_applies_when_no_rule_matches() {
        let p = web("drop", &rule("other", "accept", "destination_ports = [22]"));
        let o = p.evaluate(0, &TEMPL);
        assert_eq!(o.service, Some(ServiceId(0)));
        assert_eq!(
            (o.action, o.rule, o.mode),
            (Action::Drop, None, Mode::Enforce)
        );
    }

    #[test]
    fn first_service_match_wins_by_protocol_port_and_address() {
        let p = policy(
            "[[service]]\nname = \"dns\"\nprotocol = \"udp\"\n\
             [[service]]\nname = \"ssh\"\nprotocol = \"tcp\"\nports = [22]\n\
             [[service]]\nname = \"other-host\"\nprotocol = \"tcp\"\naddresses = [\"192.0.2.99/32\"]\n\
             [[service]]\nname = \"web\"\nprotocol = \"tcp\"\nports = [80, \"8000-8080\"]\n\
             [[service]]\nname = \"web-too\"\nprotocol = \"tcp\"\n\
             [[service]]\nname = \"icmp\"\nprotocol = \"icmp\"\n\
             [[service]]\nname = \"rest\"\nprotocol = \"any\"\n",
        );
        let svc = |i: &RuleInput| {
            p.evaluate(0, i)
                .service
                .map(|s| p.service(s).name().to_string())
        };
        assert_eq!(svc(&TEMPL).as_deref(), Some("web"));
        assert_eq!(
            svc(&RuleInput {
                dport: Some(8080),
                ..TEMPL
            })
            .as_deref(),
            Some("web")
        );
        assert_eq!(
            svc(&RuleInput {
                dport: Some(8081),
                ..TEMPL
            })
            .as_deref(),
            Some("web-too")
        );
        assert_eq!(
            svc(&RuleInput {
                dport: Some(22),
                ..TEMPL
            })
            .as_deref(),
            Some("ssh")
        );
        assert_eq!(
            svc(&RuleInput { proto: 17, ..TEMPL }).as_deref(),
            Some("dns")
        );
        let icmp = RuleInput {
            proto: 1,
            sport: None,
            dport: None,
            tcp_flags: None,
            ..TEMPL
        };
        assert_eq!(svc(&icmp).as_deref(), Some("icmp"));
        let icmp6 = RuleInput {
            proto: 58,
            src: v6("2001:db8::1"),
            dst: v6("2001:db8::2"),
            ..icmp
        };
        assert_eq!(svc(&icmp6).as_deref(), Some("icmp"));
        assert_eq!(
            svc(&RuleInput { proto: 47, ..icmp }).as_deref(),
            Some("rest")
        );
        // A TCP packet without a port (later fragment) cannot match a port list.
        assert_eq!(
            svc(&RuleInput {
                dport: None,
                ..TEMPL
            })
            .as_deref(),
            Some("web-too")
        );
    }

    #[test]
    fn first_rule_match_wins() {
        let p = web(
            "accept",
            &(rule("a", "drop", "destination_ports = [80]")
                + &rule("b", "accept", "destination_ports = [80]")),
        );
        let o = p.evaluate(0, &TEMPL);
        assert_eq!((o.action, o.rule), (Action::Drop, Some(RuleId(0))));
        assert_eq!(p.rule_name(ServiceId(0), RuleId(0)), "a");
    }

    #[test]
    fn log_rules_record_the_first_and_continue() {
        let p = web(
            "drop",
            &(rule("l1", "log", "")
                + &rule("l2", "log", "")
                + &rule("ok", "accept", "ct_state = [\"new\"]")),
        );
        let o = p.evaluate(0, &TEMPL);
        assert_eq!(
            (o.action, o.rule, o.logged),
            (Action::Accept, Some(RuleId(2)), Some(RuleId(0)))
        );
        // A log rule still shows when the default decides.
        let o = p.evaluate(
            0,
            &RuleInput {
                ct_state: CtState::Invalid,
                ..TEMPL
            },
        );
        assert_eq!(
            (o.action, o.rule, o.logged),
            (Action::Drop, None, Some(RuleId(0)))
        );
    }

    #[test]
    fn mode_override_and_inheritance() {
        let p = policy(
            "[daemon]\nmode = \"enforce\"\n\
             [[service]]\nname = \"a\"\nprotocol = \"tcp\"\nports = [80]\nmode = \"log-only\"\n\
             [[service]]\nname = \"b\"\nprotocol = \"tcp\"\n",
        );
        assert_eq!(p.default_mode(), Mode::Enforce);
        assert_eq!(p.evaluate(0, &TEMPL).mode, Mode::LogOnly);
        assert_eq!(
            p.evaluate(
                0,
                &RuleInput {
                    dport: Some(81),
                    ..TEMPL
                }
            )
            .mode,
            Mode::Enforce
        );
        assert_eq!(p.service(ServiceId(0)).mode(), Mode::LogOnly);
        assert_eq!(p.service(ServiceId(1)).mode(), Mode::Enforce);
    }

    #[test]
    fn source_and_destination_cidrs_v4_and_v6() {
        let p = web(
            "accept",
            &rule(
                "r",
                "drop",
                "source = [\"198.51.100.0/25\", \"2001:db8:bad::/48\"]\n\
                 destination = [\"192.0.2.0/24\", \"2001:db8::/64\"]",
            ),
        );
        assert_eq!(decided_by(&p, &TEMPL), "r");
        let outside = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 128));
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    src: outside,
                    ..TEMPL
                }
            ),
            "default"
        );
        let other_dst = IpAddr::V4(Ipv4Addr::new(192, 0, 3, 10));
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    dst: other_dst,
                    ..TEMPL
                }
            ),
            "default"
        );
        let six = RuleInput {
            src: v6("2001:db8:bad:ffff::1"),
            dst: v6("2001:db8::10"),
            ..TEMPL
        };
        assert_eq!(decided_by(&p, &six), "r");
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    src: v6("2001:db8:bae::1"),
                    ..six
                }
            ),
            "default"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    dst: v6("2001:db8:0:1::10"),
                    ..six
                }
            ),
            "default"
        );
        // A v4 source never matches a v6 network, and the other way round.
        let p6 = web("accept", &rule("r", "drop", "source = [\"::/0\"]"));
        assert_eq!(decided_by(&p6, &TEMPL), "default");
        assert_eq!(decided_by(&p6, &six), "r");
    }

    #[test]
    fn bare_address_is_a_host() {
        let p = web("accept", &rule("r", "drop", "source = \"198.51.100.1\""));
        assert_eq!(decided_by(&p, &TEMPL), "r");
        let next = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
        assert_eq!(decided_by(&p, &RuleInput { src: next, ..TEMPL }), "default");
    }

    #[test]
    fn ports_single_and_ranges() {
        let p = web(
            "accept",
            &rule(
                "r",
                "drop",
                "source_ports = [\"1024-65535\"]\ndestination_ports = [80, \"443\"]",
            ),
        );
        assert_eq!(decided_by(&p, &TEMPL), "r");
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    sport: Some(1024),
                    ..TEMPL
                }
            ),
            "r"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    sport: Some(1023),
                    ..TEMPL
                }
            ),
            "default"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    dport: Some(8080),
                    ..TEMPL
                }
            ),
            "default"
        );
        let p = web(
            "accept",
            &rule("r", "drop", "destination_ports = [80, \"443\"]"),
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    dport: Some(443),
                    ..TEMPL
                }
            ),
            "r"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    dport: Some(444),
                    ..TEMPL
                }
            ),
            "default"
        );
    }

    #[test]
    fn tcp_flags_set_and_clear() {
        let p = web(
            "accept",
            &rule("syn-only", "drop", "tcp_flags = \"syn,!ack\""),
        );
        assert_eq!(decided_by(&p, &TEMPL), "syn-only");
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    tcp_flags: Some(SYN | 0x08),
                    ..TEMPL
                }
            ),
            "syn-only"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    tcp_flags: Some(SYN | ACK),
                    ..TEMPL
                }
            ),
            "default"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    tcp_flags: Some(ACK),
                    ..TEMPL
                }
            ),
            "default"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    tcp_flags: None,
                    ..TEMPL
                }
            ),
            "default"
        );
        let p = web("accept", &rule("no-ack", "drop", "tcp_flags = \"!ack\""));
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    tcp_flags: Some(0),
                    ..TEMPL
                }
            ),
            "no-ack"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    tcp_flags: Some(!ACK),
                    ..TEMPL
                }
            ),
            "no-ack"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    tcp_flags: Some(ACK),
                    ..TEMPL
                }
            ),
            "default"
        );
    }

    #[test]
    fn ct_state_set() {
        let p = web(
            "accept",
            &rule("r", "drop", "ct_state = [\"invalid\", \"untracked\"]"),
        );
        assert_eq!(decided_by(&p, &TEMPL), "default");
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    ct_state: CtState::Invalid,
                    ..TEMPL
                }
            ),
            "r"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    ct_state: CtState::Untracked,
                    ..TEMPL
                }
            ),
            "r"
        );
    }

    #[test]
    fn interface_exact_and_prefix() {
        let p = web("accept", &rule("r", "drop", "interface = \"eth0\""));
        assert_eq!(decided_by(&p, &TEMPL), "r");
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    in_iface: Some("eth01"),
                    ..TEMPL
                }
            ),
            "default"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    in_iface: Some("eth"),
                    ..TEMPL
                }
            ),
            "default"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    in_iface: None,
                    ..TEMPL
                }
            ),
            "default"
        );
        let p = web("accept", &rule("r", "drop", "interface = \"veth+\""));
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    in_iface: Some("veth"),
                    ..TEMPL
                }
            ),
            "r"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    in_iface: Some("veth1a"),
                    ..TEMPL
                }
            ),
            "r"
        );
        assert_eq!(decided_by(&p, &TEMPL), "default");
        let p = web("accept", &rule("r", "drop", "interface = \"+\""));
        assert_eq!(decided_by(&p, &TEMPL), "r");
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    in_iface: None,
                    ..TEMPL
                }
            ),
            "default"
        );
    }

    #[test]
    fn length_range_inclusive() {
        let p = web("accept", &rule("r", "drop", "length = \"40-60\""));
        assert_eq!(decided_by(&p, &TEMPL), "r");
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    ip_len: 40,
                    ..TEMPL
                }
            ),
            "r"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    ip_len: 39,
                    ..TEMPL
                }
            ),
            "default"
        );
        assert_eq!(
            decided_by(
                &p,
                &RuleInput {
                    ip_len: 61,
                    ..TEMPL
                }
            ),
            "default"
        );
    }

    #[test]
    fn rate_rule_matches_only_over_the_rate_per_source() {
        let p = web(
            "accept",
            &rule("flood", "drop", "rate = \"2/s\"\nburst = 2"),
        );
        let at = |t: u64, i: &RuleInput| p.evaluate(t, i).action;
        assert_eq!(at(0, &TEMPL), Action::Accept);
        assert_eq!(at(0, &TEMPL), Action::Accept);
        assert_eq!(
            at(0, &TEMPL),
            Action::Drop,
            "third packet in the same instant"
        );
        let other = RuleInput {
            src: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
            ..TEMPL
        };
        assert_eq!(
            at(0, &other),
            Action::Accept,
            "other sources have their own bucket"
        );
        assert_eq!(
            at(SEC / 2, &TEMPL),
            Action::Accept,
            "one token back after 1/rate"
        );
        assert_eq!(at(SEC / 2, &TEMPL), Action::Drop);
    }

    #[test]
    fn rate_spends_tokens_only_when_other_conditions_hold() {
        let p = web(
            "accept",
            &rule("flood", "drop", "rate = \"1/s\"\nct_state = [\"invalid\"]"),
        );
        for _ in 0..10 {
            assert_eq!(p.evaluate(0, &TEMPL).action, Action::Accept);
        }
        let inv = RuleInput {
            ct_state: CtState::Invalid,
            ..TEMPL
        };
        assert_eq!(
            p.evaluate(0, &inv).action,
            Action::Accept,
            "bucket still full"
        );
        assert_eq!(p.evaluate(0, &inv).action, Action::Drop);
    }

    #[test]
    fn mark_comes_from_the_terminating_rule_only() {
        let p = web(
            "accept",
            &(rule("l", "log", "mark = 7") + &rule("a", "accept", "mark = 16")),
        );
        let o = p.evaluate(0, &TEMPL);
        assert_eq!(
            (o.mark, o.logged, o.rule),
            (Some(16), Some(RuleId(0)), Some(RuleId(1)))
        );
        let p = web("drop", &rule("l", "log", "mark = 7"));
        assert_eq!(p.evaluate(0, &TEMPL).mark, None);
    }

    #[test]
    fn builtin_default_policy() {
        let p = Policy::compile(&Config::builtin_default());
        let o = p.evaluate(0, &TEMPL);
        assert_eq!(o.service, Some(ServiceId(0)));
        assert_eq!(
            (o.mode, o.action, o.rule),
            (Mode::LogOnly, Action::Accept, None)
        );
        let s = p.service(ServiceId(0));
        assert_eq!(s.name(), "all-tcp");
        assert_eq!(s.queue_states(), &[CtState::Invalid, CtState::New]);
        assert!(!s.sack_repair() && !s.stateless());
        assert_eq!(p.rule_name(ServiceId(0), RuleId(0)), "?");
        assert!(p.get_service(ServiceId(1)).is_none());
    }

    #[test]
    fn policy_is_shareable_across_threads() {
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<Policy>();
    }
}
