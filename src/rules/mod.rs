//! The kernel side of nfqwall: which packets netfilter hands to it, and which it
//! exempts from conntrack.
//!
//! Rendering is pure: [`render`] turns a [`Config`] into a [`Ruleset`] per address
//! family, and [`Ruleset::to_restore_text`] prints it in `iptables-restore` format
//! ([`nft::render`] prints the nftables equivalent). [`save`] parses `iptables-save`
//! output and plans the install and remove transactions from it, also without I/O.
//! Only [`apply`] runs commands (`iptables-restore --noflush` and friends).
//!
//! # What is rendered
//!
//! nfqwall owns three chains and adds exactly one jump to each, at the top of its
//! built-in chain:
//!
//! | table    | own chain          | jumped to from | what it does                          |
//! |----------|--------------------|----------------|---------------------------------------|
//! | `raw`    | `NFQWALL-RAW-PRE`  | `PREROUTING`   | `CT --notrack` the queries of stateless services (destination port) |
//! | `raw`    | `NFQWALL-RAW-OUT`  | `OUTPUT`       | `CT --notrack` their answers (source port) |
//! | `filter` | `NFQWALL-IN`       | `INPUT`        | `NFQUEUE` the configured conntrack states of each service |
//!
//! A chain with no rules for a family is not rendered at all (the default config has
//! no stateless service, so no `raw` chains and no per-packet jump in `raw`).
//!
//! Why `raw` then `filter`: netfilter runs the `raw` table (priority -300) before
//! conntrack (-200) and conntrack before `filter` (0). A packet marked NOTRACK in raw
//! therefore reaches `filter` with ctstate UNTRACKED, so the NFQUEUE rule that matches
//! `--ctstate UNTRACKED` sees it. Both directions are untracked: if only the queries
//! were, the answers would create the conntrack entries the service is trying to avoid.
//!
//! Why `filter` and not `mangle` for the NFQUEUE rules: an accept verdict from
//! userspace resumes the packet at the *next hook* (the next table), not at the next
//! rule. Queued from `filter INPUT`, an accepted packet therefore skips the rest of
//! `filter INPUT`, including a hardened ruleset's `--ctstate INVALID -j DROP`: nfqwall's
//! verdict is final for the packets it judges, which is the point (field problem 2).
//! Queued from `mangle`, the accepted benign INVALID packet would still meet that DROP
//! in `filter` afterwards. Packets nfqwall's chain does not queue return to `INPUT` and
//! meet the operator's rules as before.
//!
//! Only `INPUT` is covered: a host firewall protects local services. Forwarded traffic
//! is out of scope for now.

pub mod apply;
pub mod command;
pub mod lifecycle;
pub mod nft;
pub mod save;

use std::fmt::Write as _;

use ipnet::IpNet;

use crate::config::{Config, PortRange, Protocol, QueueRange, Service};
use crate::engine::meta::CtState;

/// An IP address family; iptables and ip6tables are separate rulesets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (`iptables`).
    V4,
    /// IPv6 (`ip6tables`).
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// "IPv4" or "IPv6".
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// Returns true if and only if `net` belongs to this family.
    pub fn contains(self, net: &IpNet) -> bool {
        matches!(
            (self, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    }
}

/// One of the chains nfqwall owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OwnChain {
    /// `raw` table, jumped to from `PREROUTING`: NOTRACK for incoming queries.
    RawPre,
    /// `raw` table, jumped to from `OUTPUT`: NOTRACK for outgoing answers.
    RawOut,
    /// `filter` table, jumped to from `INPUT`: NFQUEUE.
    In,
}

impl OwnChain {
    /// Every own chain, in rendering order (raw before filter).
    pub const ALL: [OwnChain; 3] = [OwnChain::RawPre, OwnChain::RawOut, OwnChain::In];

    /// The chain's name.
    pub fn name(self) -> &'static str {
        match self {
            OwnChain::RawPre => "NFQWALL-RAW-PRE",
            OwnChain::RawOut => "NFQWALL-RAW-OUT",
            OwnChain::In => "NFQWALL-IN",
        }
    }

    /// The table the chain lives in.
    pub fn table(self) -> &'static str {
        match self {
            OwnChain::RawPre | OwnChain::RawOut => "raw",
            OwnChain::In => "filter",
        }
    }

    /// The built-in chain that holds the one jump to it.
    pub fn hook(self) -> &'static str {
        match self {
            OwnChain::RawPre => "PREROUTING",
            OwnChain::RawOut => "OUTPUT",
            OwnChain::In => "INPUT",
        }
    }

    /// The jump rule as `iptables-save` prints it (`-A INPUT -j NFQWALL-IN`).
    pub fn jump_rule(self) -> String {
        format!("-A {} -j {}", self.hook(), self.name())
    }
}

/// The tables nfqwall touches, in the order they are written.
pub const TABLES: [&str; 2] = ["raw", "filter"];

/// The rendered ruleset of one family: the rules of each own chain that has any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    /// The family.
    pub family: Family,
    /// What the ruleset was rendered from, for the header comment.
    pub origin: String,
    /// `daemon.queues`, for the header comment.
    pub queues: QueueRange,
    /// `daemon.fail_open`, for the header comment.
    pub fail_open: bool,
    /// `daemon.queue_maxlen`, for the header comment.
    pub queue_maxlen: u32,
    /// Own chains with at least one rule, in [`OwnChain::ALL`] order, each with its
    /// rules exactly as `iptables-save` prints them (`-A CHAIN ...`).
    pub chains: Vec<(OwnChain, Vec<String>)>,
}

/// The origin named in headers when no config file was given.
pub const BUILTIN_ORIGIN: &str = "the built-in default config (rules/default.toml)";

/// Renders the ruleset of `family` from `config`; `origin` names the config file.
///
/// One rule per service x address x port range; addresses of the other family are
/// skipped, and a service whose addresses are all of the other family renders nothing.
pub fn render(config: &Config, origin: &str, family: Family) -> Ruleset {
    let mut pre = Vec::new();
    let mut out = Vec::new();
    let mut input = Vec::new();
    for service in &config.services {
        let Some(addresses) = addresses_in(service, family) else {
            continue;
        };
        let proto = proto_arg(service.protocol, family);
        for addr in &addresses {
            for ports in port_ranges(service) {
                let m = Match {
                    addr: addr.as_ref(),
                    proto,
                    ports,
                    name: &service.name,
                };
                if service.stateless {
                    pre.push(m.rule(OwnChain::RawPre, Dir::Destination, "-j CT --notrack"));
                    out.push(m.rule(OwnChain::RawOut, Dir::Source, "-j CT --notrack"));
                }
                if kernel_rules_apply(config, service) {
                    input.extend(kernel_drop_rules(&m, service, family));
                }
                if !service.queue.is_empty() {
                    let target = format!(
                        "-m conntrack --ctstate {} -j NFQUEUE {}",
                        ctstates(&service.queue),
                        queue_target(config.daemon.queues)
                    );
                    input.push(m.rule(OwnChain::In, Dir::Destination, &target));
                }
                if service.sack_repair && service.protocol == Protocol::Tcp {
                    // SACK repair needs the client's SACK-bearing segments, including
                    // those conntrack finds valid (a displaced edge below the highest
                    // sequence sent is not INVALID, and still useless to the server).
                    // Only segments carrying the SACK option (kind 5) are queued.
                    let target = format!(
                        "-m tcp --tcp-option 5 -j NFQUEUE {}",
                        queue_target(config.daemon.queues)
                    );
                    input.push(m.rule(OwnChain::In, Dir::Destination, &target));
                }
            }
        }
    }
    if !input.is_empty() {
        // A packet nfqwall passed comes back through INPUT with the pass mark: it
        // leaves nfqwall's chain at once and meets the operator's rules.
        input.insert(
            0,
            format!(
                "-A {} -m mark --mark {PASS_MARK:#x}/{PASS_MARK:#x} -j RETURN",
                OwnChain::In.name()
            ),
        );
    }
    let chains = [
        (OwnChain::RawPre, pre),
        (OwnChain::RawOut, out),
        (OwnChain::In, input),
    ]
    .into_iter()
    .filter(|(_, rules)| !rules.is_empty())
    .collect();
    Ruleset {
        family,
        origin: origin.to_string(),
        queues: config.daemon.queues,
        fail_open: config.daemon.fail_open,
        queue_maxlen: config.daemon.queue_maxlen,
        chains,
    }
}

/// Returns true if and only if the service's leading simple drop rules may be
/// rendered as kernel rules: in enforce mode only (log-only must never drop, and
/// nfqwall logs what it would have dropped).
fn kernel_rules_apply(config: &Config, service: &Service) -> bool {
    service.mode.unwrap_or(config.daemon.mode) == crate::engine::policy::Mode::Enforce
}

/// Kernel `-j DROP` rules for the service's leading run of simple drop rules.
///
/// nfqwall's rules are first-match-wins, so only a leading run can move into the
/// kernel without changing the outcome; the run ends at the first rule that is not
/// a simple drop (an accept, a log, a rate, a mark, a destination of its own, TCP
/// flags iptables cannot name). Each kernel rule also matches the conntrack states
/// the rule would have seen in nfqwall (its own `ct_state`, else the service's
/// queued states), so it drops exactly the packets nfqwall would have dropped,
/// without the trip to userspace.
fn kernel_drop_rules(m: &Match<'_>, service: &Service, family: Family) -> Vec<String> {
    let mut out = Vec::new();
    for rule in &service.rules {
        let Some(lines) = kernel_drop(m, service, rule, family) else {
            break;
        };
        out.extend(lines);
    }
    out
}

/// The kernel rules for one simple drop rule (none when its sources are all of the
/// other family), or `None` if the rule is not simple.
fn kernel_drop(
    m: &Match<'_>,
    service: &Service,
    rule: &crate::config::Rule,
    family: Family,
) -> Option<Vec<String>> {
    use crate::config::RuleAction;
    const TCP_FLAG_NAMES: [(u8, &str); 6] = [
        (0x01, "FIN"),
        (0x02, "SYN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x10, "ACK"),
        (0x20, "URG"),
    ];
    let simple = rule.action == RuleAction::Drop
        && rule.rate.is_none()
        && rule.mark.is_none()
        && rule.destination.is_empty()
        && rule.destination_ports.is_empty()
        && rule.source_ports.len() <= 1
        && rule.source.len() <= 16
        && rule.tcp_flags.is_none_or(|f| f.mask & 0xc0 == 0);
    if !simple {
        return None;
    }
    // A stateless service that queues nothing to nfqwall (`queue = []`: kernel
    // only) still has its rules applied to its UNTRACKED packets.
    let untracked = [CtState::Untracked];
    let states: &[CtState] = match (&rule.ct_state[..], &service.queue[..]) {
        ([], []) if service.stateless => &untracked,
        ([], queued) => queued,
        (own, _) => own,
    };
    if states.is_empty() {
        return None;
    }
    let sources: Vec<Option<&IpNet>> = if rule.source.is_empty() {
        vec![None]
    } else {
        let mine: Vec<_> = rule
            .source
            .iter()
            .filter(|n| family.contains(n))
            .map(Some)
            .collect();
        if mine.is_empty() {
            return Some(Vec::new());
        }
        mine
    };
    let flag_list = |bits: u8| -> String {
        let names: Vec<&str> = TCP_FLAG_NAMES
            .iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, n)| *n)
            .collect();
        if names.is_empty() {
            "NONE".to_string()
        } else {
            names.join(",")
        }
    };
    let mut lines = Vec::new();
    for src in sources {
        // The order iptables-save prints: addresses, interface, protocol and its
        // match, then the other matches in the order given, the comment, the target.
        let mut r = format!("-A {}", OwnChain::In.name());
        if let Some(s) = src {
            let _ = write!(r, " -s {s}");
        }
        if let Some(a) = m.addr {
            let _ = write!(r, " -d {a}");
        }
        if let Some(i) = &rule.interface {
            let _ = write!(r, " -i {}{}", i.name, if i.prefix { "+" } else { "" });
        }
        if let Some(p) = m.proto {
            let _ = write!(r, " -p {p}");
            let sport = rule.source_ports.first().copied();
            let flags = rule.tcp_flags.filter(|_| p == "tcp");
            if sport.is_some() || m.ports.is_some() || flags.is_some() {
                let _ = write!(r, " -m {p}");
                if let Some(sp) = sport {
                    let _ = write!(r, " --sport {}", port_text(sp));
                }
                if let Some(dp) = m.ports {
                    let _ = write!(r, " --dport {}", port_text(dp));
                }
                if let Some(f) = flags {
                    let _ = write!(
                        r,
                        " --tcp-flags {} {}",
                        flag_list(f.mask),
                        flag_list(f.value)
                    );
                }
            }
        } else if !rule.source_ports.is_empty() || rule.tcp_flags.is_some() {
            return None;
        }
        let _ = write!(r, " -m conntrack --ctstate {}", ctstates(states));
        if let Some(l) = rule.length {
            if l.min == l.max {
                let _ = write!(r, " -m length --length {}", l.min);
            } else {
                let _ = write!(r, " -m length --length {}:{}", l.min, l.max);
            }
        }
        let comment = format!("{}/{}", service.name, rule.name);
        let _ = write!(r, " -m comment --comment {} -j DROP", save_string(&comment));
        lines.push(r);
    }
    Some(lines)
}

/// The service's destinations of `family`: `Some(vec![None])` for "all", `None` when
/// the service only names addresses of the other family.
fn addresses_in(service: &Service, family: Family) -> Option<Vec<Option<IpNet>>> {
    if service.addresses.is_empty() {
        return Some(vec![None]);
    }
    let mine: Vec<_> = service
        .addresses
        .iter()
        .filter(|n| family.contains(n))
        .map(|n| Some(*n))
        .collect();
    (!mine.is_empty()).then_some(mine)
}

/// The service's port ranges, or one `None` for "all ports".
fn port_ranges(service: &Service) -> Vec<Option<PortRange>> {
    if service.ports.is_empty() || !service.protocol.has_ports() {
        vec![None]
    } else {
        service.ports.iter().copied().map(Some).collect()
    }
}

/// The `-p` value, as `iptables-save` prints it; `None` for every protocol.
fn proto_arg(protocol: Protocol, family: Family) -> Option<&'static str> {
    match (protocol, family) {
        (Protocol::Tcp, _) => Some("tcp"),
        (Protocol::Udp, _) => Some("udp"),
        (Protocol::Icmp, Family::V4) => Some("icmp"),
        (Protocol::Icmp, Family::V6) => Some("ipv6-icmp"),
        (Protocol::Any, _) => None,
    }
}

/// Which end of the packet an address and port match applies to.
#[derive(Clone, Copy)]
enum Dir {
    /// `-d` and `--dport`: the packet goes to the service.
    Destination,
    /// `-s` and `--sport`: the packet comes from the service.
    Source,
}

/// The matches one rendered rule is made of.
struct Match<'a> {
    addr: Option<&'a IpNet>,
    proto: Option<&'static str>,
    ports: Option<PortRange>,
    name: &'a str,
}

impl Match<'_> {
    /// `-A CHAIN [-s|-d ADDR] [-p P [-m P --sport|--dport N[:M]]] ... -m comment ... TARGET`
    /// in the order `iptables-save` prints, so the installed chain reads back identically.
    fn rule(&self, chain: OwnChain, dir: Dir, target: &str) -> String {
        let mut r = format!("-A {}", chain.name());
        if let Some(a) = self.addr {
            let flag = match dir {
                Dir::Destination => "-d",
                Dir::Source => "-s",
            };
            let _ = write!(r, " {flag} {a}");
        }
        if let Some(p) = self.proto {
            let _ = write!(r, " -p {p}");
            if let Some(range) = self.ports {
                let flag = match dir {
                    Dir::Destination => "--dport",
                    Dir::Source => "--sport",
                };
                let _ = write!(r, " -m {p} {flag} {}", port_text(range));
            }
        }
        // Split the target so the comment sits before `-j`, where iptables-save puts it.
        let (matches, jump) = match target.find("-j ") {
            Some(i) => (target[..i].trim_end(), &target[i..]),
            None => ("", target),
        };
        if !matches.is_empty() {
            let _ = write!(r, " {matches}");
        }
        let _ = write!(r, " -m comment --comment {} {jump}", save_string(self.name));
        r
    }
}

/// A string as `iptables-save` prints it: bare if it is only letters, digits, `_` and
/// `-`, else in double quotes (names are checked by the config, so nothing needs
/// escaping). Rendering it the same way makes installed chains read back identically.
fn save_string(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        s.to_string()
    } else {
        format!("\"{s}\"")
    }
}

/// `53` or `8000:8080`.
fn port_text(r: PortRange) -> String {
    if r.first == r.last {
        r.first.to_string()
    } else {
        format!("{}:{}", r.first, r.last)
    }
}

/// The conntrack match's state list in the order iptables-save prints it.
fn ctstates(states: &[CtState]) -> String {
    const ORDER: [(CtState, &str); 5] = [
        (CtState::Invalid, "INVALID"),
        (CtState::New, "NEW"),
        (CtState::Related, "RELATED"),
        (CtState::Established, "ESTABLISHED"),
        (CtState::Untracked, "UNTRACKED"),
    ];
    ORDER
        .iter()
        .filter(|(s, _)| states.contains(s))
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

/// `--queue-num N --queue-bypass` or `--queue-balance A:B --queue-bypass`.
///
/// `--queue-bypass` is fail-open layer (a): with no nfqwall bound to the queue the
/// kernel accepts instead of dropping.
fn queue_target(q: QueueRange) -> String {
    if q.first == q.last {
        format!("--queue-num {} --queue-bypass", q.first)
    } else {
        format!("--queue-balance {}:{} --queue-bypass", q.first, q.last)
    }
}

impl Ruleset {
    /// Returns true if and only if the ruleset has no rules (nothing to install).
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// The rules of `chain`, empty if it is not rendered.
    pub fn rules(&self, chain: OwnChain) -> &[String] {
        self.chains
            .iter()
            .find(|(c, _)| *c == chain)
            .map(|(_, r)| r.as_slice())
            .unwrap_or(&[])
    }

    /// Returns true if and only if `chain` is rendered.
    pub fn has(&self, chain: OwnChain) -> bool {
        self.chains.iter().any(|(c, _)| *c == chain)
    }

    /// The header comment block (every line starts with `#`).
    pub fn header(&self) -> String {
        let mut h = String::new();
        let tool = match self.family {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        };
        let _ = writeln!(
            h,
            "# nfqwall {} ruleset, rendered from {}.",
            self.family.name(),
            self.origin
        );
        let _ = writeln!(
            h,
            "# Generated by `nfqwall rules print`; do not edit. Format: {tool} --noflush."
        );
        h.push_str(
            "# `nfqwall rules install` applies it atomically and adds each jump only if absent;\n\
             # `nfqwall rules remove` deletes the jumps and the NFQWALL-* chains, nothing else.\n",
        );
        let _ = writeln!(
            h,
            "# Queue length {} and fail-open {} are set by the daemon on its queue{}, not here.",
            self.queue_maxlen,
            if self.fail_open { "on" } else { "off" },
            if self.queues.first == self.queues.last {
                ""
            } else {
                "s"
            }
        );
        h
    }

    /// The ruleset in `iptables-restore` format: header, then per table the chain
    /// declarations, the rules and the jumps (`-I`, at the top of the built-in chain).
    ///
    /// Deterministic: the same config gives the same bytes.
    pub fn to_restore_text(&self) -> String {
        let mut t = self.header();
        if self.is_empty() {
            let _ = writeln!(
                t,
                "# No service applies to {}: nothing to install.",
                self.family.name()
            );
            return t;
        }
        for table in TABLES {
            let chains: Vec<_> = self
                .chains
                .iter()
                .filter(|(c, _)| c.table() == table)
                .collect();
            if chains.is_empty() {
                continue;
            }
            let _ = writeln!(t, "*{table}");
            t.push_str(match table {
                "raw" => {
                    "# Stateless services: no conntrack entry for the queries (PREROUTING, by\n\
                     # destination) nor for the answers (OUTPUT, by source). raw runs before\n\
                     # conntrack, so their packets reach filter as UNTRACKED.\n"
                }
                _ => {
                    "# The conntrack states each service sends to nfqwall; --queue-bypass accepts\n\
                     # when nfqwall is not listening. Queued from filter: an accept verdict skips\n\
                     # the rest of filter INPUT (the verdict is final); mangle would not.\n"
                }
            });
            for (c, _) in &chains {
                let _ = writeln!(t, ":{} - [0:0]", c.name());
            }
            for (_, rules) in &chains {
                for r in rules {
                    t.push_str(r);
                    t.push('\n');
                }
            }
            for (c, _) in &chains {
                let _ = writeln!(t, "-I {} -j {}", c.hook(), c.name());
            }
            t.push_str("COMMIT\n");
        }
        t
    }
}

#[cfg(test)]
mod tests;

/// The kernel ruleset the live daemon manages: installed at start, replaced on
/// SIGHUP, removed at exit, through `iptables-restore --noflush` transactions, by a
/// [`lifecycle::Lifecycle`]: a partial install or replace is rolled back, and the
/// tables the install created are deleted at removal if empty.
pub struct KernelRuleset {
    life: lifecycle::Lifecycle,
    origin: String,
    attempted: bool,
}

impl KernelRuleset {
    /// A ruleset applied with `backend`, naming `origin` (the config path) in headers,
    /// with its state file in [`lifecycle::default_state_dir`].
    pub fn new(backend: apply::Backend, origin: String) -> KernelRuleset {
        KernelRuleset::with_state_dir(backend, origin, &lifecycle::default_state_dir())
    }

    /// [`KernelRuleset::new`] with the state file in `dir`.
    pub fn with_state_dir(
        backend: apply::Backend,
        origin: String,
        dir: &std::path::Path,
    ) -> KernelRuleset {
        KernelRuleset {
            life: lifecycle::Lifecycle::new(backend, dir),
            origin,
            attempted: false,
        }
    }

    fn apply(&mut self, config: &Config) -> Result<(), apply::RulesError> {
        let rulesets: Vec<Ruleset> = Family::ALL
            .iter()
            .map(|&f| render(config, &self.origin, f))
            .collect();
        // Even a failed install may leave something (a rollback that failed): exit
        // removes whatever is there.
        self.attempted = true;
        self.life.install(&rulesets)
    }
}

/// The packet mark bit (bit 20) with which `nfqwall run` hands a packet it passed back
/// to the kernel (`NF_REPEAT`): nfqwall's chain returns marked packets at once, so the
/// packet goes on through the operator's own INPUT rules instead of skipping them.
/// Accepted INVALID packets are not marked: their accept is final, so the operator's
/// `--ctstate INVALID -j DROP` does not undo nfqwall's judgement.
pub const PASS_MARK: u32 = 0x0010_0000;

impl crate::daemon::Ruleset for KernelRuleset {
    fn install(&mut self, config: &Config) -> Result<(), String> {
        self.apply(config).map_err(|e| e.to_string())
    }

    /// Install is idempotent and prunes chains the new config no longer needs, in
    /// one transaction per family: the same call replaces.
    fn replace(&mut self, config: &Config) -> Result<(), crate::daemon::RulesFailure> {
        self.apply(config).map_err(|e| crate::daemon::RulesFailure {
            previous_in_force: e.kernel_unchanged(),
            error: e.to_string(),
        })
    }

    fn remove(&mut self) -> Result<(), String> {
        if !self.attempted {
            return Ok(());
        }
        self.life.remove().map_err(|e| e.to_string())?;
        self.attempted = false;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("iptables ({})", self.life.backend().name())
    }

    fn take_notes(&mut self) -> Vec<String> {
        self.life.take_notes()
    }

    fn pass_mark(&self) -> Option<u32> {
        Some(PASS_MARK)
    }
}
