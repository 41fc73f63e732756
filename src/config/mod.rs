//! The TOML configuration: what the operator wrote, checked and typed.
//!
//! [`Config::from_toml_str`] walks a span-preserving TOML document by hand rather than
//! through `serde` so that every error, syntactic or semantic, names the file, the line
//! and column, the field path (`service[1].rule[0].source[0]`) and what was expected.
//! A `Config` that loaded is valid: [`crate::engine::policy::Policy::compile`] cannot
//! fail on it.

mod error;
mod parse;

use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::engine::meta::CtState;
pub use crate::engine::policy::{Action, Mode};
pub use error::{ConfigError, Problem};

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `[daemon]`: settings of the live front end.
    pub daemon: DaemonConfig,
    /// `[engine]`: table sizes and timeouts of the decision engine.
    pub engine: EngineConfig,
    /// `[[service]]`: the services in the order written; the first match wins.
    pub services: Vec<Service>,
}

/// `[daemon]`: settings of the live NFQUEUE front end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Default mode for every service that does not set its own.
    pub mode: Mode,
    /// NFQUEUE numbers to bind, one thread each.
    pub queues: QueueRange,
    /// Kernel queue length (`NFQA_CFG_QUEUE_MAXLEN`).
    pub queue_maxlen: u32,
    /// Whether the kernel accepts packets when the queue is full (`NFQA_CFG_F_FAIL_OPEN`).
    pub fail_open: bool,
    /// Where events go, as JSON lines.
    pub log: LogTarget,
    /// Events per second per reason before further ones are counted, not written.
    pub log_rate_per_reason: u32,
    /// Seconds between per-peer pattern summaries.
    pub summary_interval: u32,
    /// The mark bit with which nfqwall vouches for an INVALID packet it showed
    /// benign (enforce): the one rule that lets a packet skip a host rule (the
    /// INVALID drop) accepts only packets carrying it.
    pub vouch_mark: u32,
    /// Three adjacent mark bits into which the queuing rule writes the packet's
    /// conntrack state ([`crate::rules::StateCode`]); nfqwall clears them when it
    /// judges a packet, so a packet still carrying them was queued and not judged.
    pub state_mask: u32,
    /// What becomes of an INVALID packet nfqwall could not judge (shed, panic, the
    /// kernel's fail-open, no listener).
    pub fail_open_invalid: FailOpenInvalid,
    /// The NFLOG group of the shadow feed (`track = "shadow"` services' established
    /// packets, both directions, in kernel order).
    pub feed_group: u16,
    /// Bytes of each fed packet copied to nfqwall (`--nflog-size`): enough for the
    /// IPv6 and TCP headers with options.
    pub feed_size: u32,
    /// Packets the kernel batches into one feed message (`--nflog-threshold`).
    pub feed_threshold: u16,
}

/// Default `daemon.feed_group`.
pub const DEFAULT_FEED_GROUP: u16 = 7300;
/// Default `daemon.feed_size`: IPv6 (40) + TCP with the longest options (60), rounded up.
pub const DEFAULT_FEED_SIZE: u32 = 128;
/// Default `daemon.feed_threshold`.
pub const DEFAULT_FEED_THRESHOLD: u16 = 64;

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

/// `daemon.fail_open_invalid`: the fate of INVALID packets nfqwall did not judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOpenInvalid {
    /// The host's rules decide, exactly as if nfqwall were absent (the default).
    Host,
    /// Accept them uninspected in enforce services, so a service behind a sloppy
    /// middlebox never stalls while nfqwall is overloaded or down.
    Accept,
}

impl FailOpenInvalid {
    /// `host` or `accept`.
    pub fn name(self) -> &'static str {
        match self {
            FailOpenInvalid::Host => "host",
            FailOpenInvalid::Accept => "accept",
        }
    }
}

/// Default `daemon.vouch_mark`: bit 28, clear of the marks of kube-proxy (0xc000),
/// Cilium (0xf00), Tailscale (0xff0000), Weave (0x60000) and Istio (0x539).
pub const DEFAULT_VOUCH_MARK: u32 = 0x1000_0000;
/// Default `daemon.state_mask`: bits 25 to 27.
pub const DEFAULT_STATE_MASK: u32 = 0x0e00_0000;

/// `[engine]`: bounds and timeouts of the decision engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
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

/// An inclusive range of NFQUEUE numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueRange {
    /// First queue number.
    pub first: u16,
    /// Last queue number (equal to `first` for a single queue).
    pub last: u16,
}

/// Where the daemon writes its JSON-lines events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output (`log = "stdout"`), for journald.
    Stdout,
    /// Standard error (`log = "stderr"`).
    Stderr,
    /// A file, appended to.
    File(PathBuf),
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
    /// Whether the engine is fed the service's established packets.
    pub track: Track,
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
            track: Track::Shadow,
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

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors (usually the path).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        parse::parse(text, origin)
    }

    /// The configuration used when none is given: log-only on queue 0, one service
    /// "all-tcp" covering every TCP port, queueing INVALID and NEW, accepting by default.
    pub fn builtin_default() -> Config {
        Config {
            daemon: DaemonConfig {
                mode: Mode::LogOnly,
                queues: QueueRange { first: 0, last: 0 },
                queue_maxlen: 4096,
                fail_open: true,
                log: LogTarget::Stdout,
                log_rate_per_reason: 20,
                summary_interval: 60,
                vouch_mark: DEFAULT_VOUCH_MARK,
                state_mask: DEFAULT_STATE_MASK,
                fail_open_invalid: FailOpenInvalid::Host,
                feed_group: DEFAULT_FEED_GROUP,
                feed_size: DEFAULT_FEED_SIZE,
                feed_threshold: DEFAULT_FEED_THRESHOLD,
            },
            engine: EngineConfig {
                max_flows: 1_000_000,
                max_peers: 65_536,
                max_rate_sources: 65_536,
                timeouts: Timeouts {
                    syn: 120,
                    established: 7200,
                    closing: 60,
                    closed: 10,
                    udp: 30,
                    other: 30,
                },
            },
            services: vec![Service::with_defaults("all-tcp".to_string(), Protocol::Tcp)],
        }
    }

    /// [`Config::builtin_default`] as a commented TOML file; `rules/default.toml` is this text.
    pub fn default_toml() -> &'static str {
        // One source of truth: the shipped file is compiled in, and a test checks that it
        // parses to `builtin_default()`.
        include_str!("../../rules/default.toml")
    }
}

/// Returns the network of `net` if it has no host bits set, else `None`.
fn without_host_bits(net: IpNet) -> Option<IpNet> {
    let trunc = net.trunc();
    (trunc == net).then_some(trunc)
}

/// A host address as a full-length network (/32 or /128).
fn host_net(addr: std::net::IpAddr) -> IpNet {
    IpNet::from(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_parses_to_builtin_default() {
        let parsed = Config::from_toml_str(Config::default_toml(), "default.toml");
        assert_eq!(parsed.unwrap(), Config::builtin_default());
    }
}
