//! What the engine is built from: services and their rules, already validated, and
//! the bounds of its tables. [`crate::config`] parses a TOML file into these types;
//! the engine compiles them ([`crate::engine::policy::Policy::compile`]) and never
//! reads a config file or imports the config module.

use ipnet::IpNet;

use crate::engine::meta::CtState;
use crate::engine::policy::{Action, Mode};

/// What an engine is built from. [`crate::config::Config`] is one.
pub trait Setup {
    /// The services, in the order written; the first match wins.
    fn services(&self) -> &[Service];
    /// The mode of every service that sets none.
    fn default_mode(&self) -> Mode;
    /// Table bounds and timeouts.
    fn limits(&self) -> Limits;
}

/// Table bounds and timeouts of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most flows tracked at once.
    pub max_flows: u32,
    /// Most peers with pattern counters at once.
    pub max_peers: u32,
    /// Most (rule, source address) token buckets at once, over all rate rules.
    pub max_rate_sources: u32,
    /// Idle timeouts used for flow eviction.
    pub timeouts: Timeouts,
}

/// Idle timeouts in seconds, by flow state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP handshake in progress.
    pub syn: u32,
    /// TCP established.
    pub established: u32,
    /// TCP after the first FIN.
    pub closing: u32,
    /// TCP after both FINs or a RST.
    pub closed: u32,
    /// UDP pseudo-flows.
    pub udp: u32,
    /// Any other protocol.
    pub other: u32,
}

/// `service.track`: whether nfqwall sees the service's established traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Track {
    /// The rendered ruleset copies the headers of the service's ESTABLISHED packets,
    /// both directions, to nfqwall over NFLOG (no verdict, never delayed): the engine
    /// learns the flows' real windows and sees them whole.
    Shadow,
    /// Only the queued packets are seen (a flow's SYN, what conntrack doubts).
    None,
}

impl Track {
    /// `shadow` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            Track::Shadow => "shadow",
            Track::None => "none",
        }
    }
}

/// The IP protocol a service covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TCP (protocol 6).
    Tcp,
    /// UDP (protocol 17).
    Udp,
    /// ICMP for IPv4 (1) and ICMPv6 for IPv6 (58).
    Icmp,
    /// Every protocol.
    Any,
}

impl Protocol {
    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Any => "any",
        }
    }

    /// Returns true if and only if packets of this protocol carry port numbers.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest port.
    pub first: u16,
    /// Highest port.
    pub last: u16,
}

impl PortRange {
    /// Returns true if and only if `port` lies within the range.
    #[inline]
    pub fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// One `[[service]]`: a set of destinations, its mode, its default and its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Unique name, used in events.
    pub name: String,
    /// Protocol matched.
    pub protocol: Protocol,
    /// Destination ports; empty means all.
    pub ports: Vec<PortRange>,
    /// Destination addresses; empty means all.
    pub addresses: Vec<IpNet>,
    /// Mode override; `None` inherits `daemon.mode`.
    pub mode: Option<Mode>,
    /// Action when no rule decides.
    pub default: Action,
    /// Whether the rendered ruleset exempts the service from conntrack.
    pub stateless: bool,
    /// Conntrack states the rendered ruleset sends to nfqwall.
    pub queue: Vec<CtState>,
    /// Whether to rewrite displaced SACK blocks (and queue SACK-bearing segments).
    pub sack_repair: bool,
    /// Whether a flow proven to be behind a sequence-randomizing middlebox is handed
    /// back to conntrack with its per-connection liberal flag (tcp, no `sack_repair`).
    pub handback: bool,
    /// Whether the engine is fed the service's established packets.
    pub track: Track,
    /// `sample = "1/N"`: when every rule of the service is rendered into the kernel
    /// (nothing queued), still queue one packet in `N` to nfqwall for the peer
    /// summaries. `None` (the default): queue nothing.
    pub sample: Option<u32>,
    /// Rules in order; the first terminating match wins.
    pub rules: Vec<Rule>,
}

impl Service {
    /// A service with every optional key at its documented default: all ports and
    /// addresses, the daemon's mode, default accept, tracked, INVALID and NEW queued.
    pub fn with_defaults(name: String, protocol: Protocol) -> Service {
        Service {
            name,
            protocol,
            ports: Vec::new(),
            addresses: Vec::new(),
            mode: None,
            default: Action::Accept,
            stateless: false,
            queue: vec![CtState::Invalid, CtState::New],
            sack_repair: false,
            handback: false,
            track: Track::Shadow,
            sample: None,
            rules: Vec::new(),
        }
    }

    /// The `track` a service gets when its config sets none: `shadow` where it queues
    /// INVALID packets (their judgement needs the windows) and has TCP under
    /// conntrack; `none` for stateless services and the rest.
    pub fn default_track(&self) -> Track {
        let tcp = matches!(self.protocol, Protocol::Tcp | Protocol::Any);
        if tcp && !self.stateless && self.queue.contains(&CtState::Invalid) {
            Track::Shadow
        } else {
            Track::None
        }
    }

    /// Returns true if and only if the service's established packets are fed.
    pub fn shadowed(&self) -> bool {
        self.track == Track::Shadow
    }
}

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// Accept and stop.
    Accept,
    /// Drop (in enforce mode) and stop.
    Drop,
    /// Emit an event and continue with the next rule.
    Log,
}

/// A TCP flag test: `flags & mask == value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFlagMatch {
    /// Flags that are examined.
    pub mask: u8,
    /// Required values of the examined flags (set = must be set, clear = must be clear).
    pub value: u8,
}

/// An input interface test, as in iptables `-i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceMatch {
    /// The name, without a trailing `+`.
    pub name: String,
    /// Whether the config ended the name in `+`: any interface starting with `name`.
    pub prefix: bool,
}

/// An inclusive range of IP packet lengths in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthRange {
    /// Shortest length.
    pub min: u32,
    /// Longest length.
    pub max: u32,
}

/// The period of a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RatePeriod {
    /// Per second (`/s`).
    Second,
    /// Per minute (`/min`).
    Minute,
    /// Per hour (`/hour`).
    Hour,
}

impl RatePeriod {
    /// The period in nanoseconds.
    pub fn nanos(self) -> u64 {
        match self {
            RatePeriod::Second => 1_000_000_000,
            RatePeriod::Minute => 60_000_000_000,
            RatePeriod::Hour => 3_600_000_000_000,
        }
    }
}

/// A per-source token bucket: `count` tokens per `period`, holding at most `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per period (at least 1).
    pub count: u32,
    /// The period.
    pub period: RatePeriod,
    /// Bucket size (at least 1).
    pub burst: u32,
}

/// One `[[service.rule]]`. Every condition that is set must hold; unset ones match all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Name, unique within the service, used in events.
    pub name: String,
    /// What to do on a match.
    pub action: RuleAction,
    /// Source networks; empty means any.
    pub source: Vec<IpNet>,
    /// Destination networks; empty means any.
    pub destination: Vec<IpNet>,
    /// Source ports; empty means any.
    pub source_ports: Vec<PortRange>,
    /// Destination ports; empty means any.
    pub destination_ports: Vec<PortRange>,
    /// TCP flag test.
    pub tcp_flags: Option<TcpFlagMatch>,
    /// Conntrack states; empty means any.
    pub ct_state: Vec<CtState>,
    /// Input interface test.
    pub interface: Option<InterfaceMatch>,
    /// IP packet length range.
    pub length: Option<LengthRange>,
    /// Per-source rate: the rule matches only packets over it.
    pub rate: Option<RateLimit>,
    /// Packet mark to set when this rule decides.
    pub mark: Option<u32>,
}
