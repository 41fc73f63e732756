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

pub use crate::engine::policy::{Action, Mode};
pub use crate::engine::spec::{
    InterfaceMatch, LengthRange, Limits, PortRange, Protocol, RateLimit, RatePeriod, Rule,
    RuleAction, Service, Setup, TcpFlagMatch, Timeouts, Track,
};
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
    /// Events per second per reason, per queue thread, before further ones are
    /// counted, not written.
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
    /// When a queue thread stops judging to drain a backlog.
    pub shedding: SheddingPolicy,
    /// The NFLOG group of the shadow feed (`track = "shadow"` services' established
    /// packets, both directions, in kernel order).
    pub feed_group: u16,
    /// Bytes of each fed packet copied to nfqwall (`--nflog-size`): enough for the
    /// IPv6 and TCP headers with options.
    pub feed_size: u32,
    /// Packets the kernel batches into one feed message (`--nflog-threshold`).
    pub feed_threshold: u16,
    /// Microseconds a queue thread that has just answered keeps asking its socket
    /// for more (without sleeping) before it waits; 0: it waits at once.
    pub busy_poll_us: u32,
    /// Whether the thread polls after every answer or only while packets come
    /// closer together than `busy_poll_us`.
    pub busy_poll: BusyPoll,
    /// Where the OpenMetrics endpoint listens (`None`: no endpoint, the default).
    pub metrics: Option<std::net::SocketAddr>,
    /// The form of event lines.
    pub log_format: LogFormat,
    /// Whether events go to the journal's native socket with journald fields.
    pub journald: Journald,
}

/// `daemon.log_format`: the form of event lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// nfqwall's own JSON lines (`src/events/SCHEMA.md`).
    Nfqwall,
    /// Suricata's EVE JSON field names, nfqwall's own fields in an `nfqwall` object.
    Eve,
}

impl LogFormat {
    /// `nfqwall` or `eve`.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Nfqwall => "nfqwall",
            LogFormat::Eve => "eve",
        }
    }
}

/// `daemon.busy_poll`: when a queue thread that has just answered polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusyPoll {
    /// Only while the last wait ended within `busy_poll_us` of its start: packets
    /// come close enough together that polling would have caught them. A thread
    /// whose poll runs out sleeps after every answer until they do again, so an
    /// idle or lightly loaded queue costs no polling.
    Adaptive,
    /// After every answer.
    Always,
}

impl BusyPoll {
    /// `adaptive` or `always`.
    pub fn name(self) -> &'static str {
        match self {
            BusyPoll::Adaptive => "adaptive",
            BusyPoll::Always => "always",
        }
    }
}

/// `daemon.journald`: whether events go to the journal natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Journald {
    /// When `log = "stdout"` and stdout is the journal (`JOURNAL_STREAM` names it).
    Auto,
    /// Always, when `log = "stdout"` (falls back to stdout if the socket is absent).
    On,
    /// Never: plain lines on `log`.
    Off,
}

impl Journald {
    /// `auto`, `true` or `false`.
    pub fn name(self) -> &'static str {
        match self {
            Journald::Auto => "auto",
            Journald::On => "true",
            Journald::Off => "false",
        }
    }
}

/// Default `daemon.feed_group`.
pub const DEFAULT_FEED_GROUP: u16 = 7300;
/// Default `daemon.feed_size`: IPv6 (40) + TCP with the longest options (60), rounded up.
pub const DEFAULT_FEED_SIZE: u32 = 128;
/// Default `daemon.feed_threshold`.
pub const DEFAULT_FEED_THRESHOLD: u16 = 64;

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

/// `daemon.shedding`: when a queue thread passes packets on unjudged to drain the
/// kernel's backlog (from half the queue down to an eighth).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SheddingPolicy {
    /// Only where the kernel would drop what does not fit (`fail_open = false`); with
    /// fail-open the kernel passes the excess on unjudged at no cost to nfqwall, and
    /// the thread judges every packet it takes (the default).
    Auto,
    /// Also with fail-open: a burst's queued packets wait less, at the cost of
    /// judging almost nothing while an overload lasts.
    Always,
    /// Never: every packet taken off the queue is judged.
    Never,
}

impl SheddingPolicy {
    /// `auto`, `always` or `never`.
    pub fn name(self) -> &'static str {
        match self {
            SheddingPolicy::Auto => "auto",
            SheddingPolicy::Always => "always",
            SheddingPolicy::Never => "never",
        }
    }

    /// Whether queue threads shed, given the queue's fail-open setting.
    pub fn sheds(self, fail_open: bool) -> bool {
        match self {
            SheddingPolicy::Auto => !fail_open,
            SheddingPolicy::Always => true,
            SheddingPolicy::Never => false,
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

impl Setup for Config {
    fn services(&self) -> &[Service] {
        &self.services
    }

    fn default_mode(&self) -> Mode {
        self.daemon.mode
    }

    fn limits(&self) -> Limits {
        Limits {
            max_flows: self.engine.max_flows,
            max_peers: self.engine.max_peers,
            max_rate_sources: self.engine.max_rate_sources,
            timeouts: self.engine.timeouts,
        }
    }
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
                shedding: SheddingPolicy::Auto,
                metrics: None,
                log_format: LogFormat::Nfqwall,
                journald: Journald::Auto,
                feed_group: DEFAULT_FEED_GROUP,
                feed_size: DEFAULT_FEED_SIZE,
                feed_threshold: DEFAULT_FEED_THRESHOLD,
                busy_poll_us: 50,
                busy_poll: BusyPoll::Adaptive,
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
