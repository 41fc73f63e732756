//! The stateless rule policy, compiled from a validated [`Config`] and evaluated per packet.
//!
//! Evaluation is a linear scan over precomputed matchers: find the first service whose
//! protocol, destination port and destination address match; then walk its rules in
//! order. `log` rules record themselves and continue; the first `accept` or `drop` rule
//! decides; otherwise the service default applies. Nothing here allocates per packet
//! except the first packet of a new source in a rate rule (one map entry), and time is
//! only ever the `now_ns` argument, so capture replay is deterministic.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{
    Config, InterfaceMatch, LengthRange, PortRange, Protocol, Rule, RuleAction, Service,
    TcpFlagMatch,
};
use crate::engine::meta::CtState;
use crate::engine::rate::{BucketParams, RateLimiter, RateStats};

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
    queue: Vec<CtState>,
    ports: Vec<PortRange>,
    addresses: AddrSet,
    rules: Vec<CompiledRule>,
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
    /// Compiles a validated config. Cannot fail: [`Config`] loading already checked
    /// everything, including that ids fit in `u16`.
    pub fn compile(config: &Config) -> Policy {
        let mut params = Vec::new();
        let services = config
            .services
            .iter()
            .map(|s| compile_service(s, config.daemon.mode, &mut params))
            .collect();
        Policy {
            services,
            default_mode: config.daemon.mode,
            limiter: RateLimiter::new(params, config.engine.max_rate_sources as usize),
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
        for (rid, rule) in svc.rules.iter().enumerate() {
            if !rule.matches_stateless(input) {
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
}

fn compile_service(
    s: &Service,
    default_mode: Mode,
    params: &mut Vec<BucketParams>,
) -> ServicePolicy {
    let rules = s
        .rules
        .iter()
        .map(|r| {
            let slot = r.rate.map(|rate| {
                params.push(BucketParams::from_limit(rate));
                (params.len() - 1) as u32
            });
            CompiledRule::new(r, slot)
        })
        .collect();
    ServicePolicy {
        name: s.name.as_str().into(),
        protocol: s.protocol,
        mode: s.mode.unwrap_or(default_mode),
        default: s.default,
        stateless: s.stateless,
        sack_repair: s.sack_repair,
        queue: s.queue.clone(),
        ports: s.ports.clone(),
        addresses: AddrSet::new(&s.addresses),
        rules,
    }
}
