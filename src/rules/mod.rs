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
//! nfqwall owns these chains and adds exactly one jump to each hooked one, at the top
//! of its built-in chain:
//!
//! | table    | own chain            | jumped to from    | what it does                          |
//! |----------|----------------------|-------------------|---------------------------------------|
//! | `raw`    | `NFQWALL-RAW-PRE`    | `PREROUTING`      | `CT --notrack` the queries of stateless services (destination port) |
//! | `raw`    | `NFQWALL-RAW-OUT`    | `OUTPUT`          | `CT --notrack` their answers (source port) |
//! | `mangle` | `NFQWALL-MANGLE-IN`  | `INPUT`           | clear nfqwall's mark bits; kernel rules ([`kernel_plan`]); send each judged service's queued states to `NFQWALL-QUEUE` |
//! | `mangle` | `NFQWALL-QUEUE`      | `NFQWALL-MANGLE-IN` | write the conntrack state into the state bits ([`marks`]), then `NFQUEUE --queue-bypass` |
//! | `mangle` | `NFQWALL-FEED-IN`    | `NFQWALL-MANGLE-IN` | the shadow feed of incoming ESTABLISHED packets: per service in order, `NFLOG` (no verdict) if `track = "shadow"`, then `RETURN` (first match wins) |
//! | `mangle` | `NFQWALL-MANGLE-OUT` | `OUTPUT`          | the same for outgoing ESTABLISHED packets, by source address and port |
//! | `filter` | `NFQWALL-IN`         | `INPUT`           | count queued packets nobody judged; accept the INVALID packets nfqwall vouched for |
//!
//! A chain with no rules for a family is not rendered at all.
//!
//! Why `raw`, then `mangle`, then `filter`: netfilter runs `raw` (priority -300)
//! before conntrack (-200), `mangle` (-150) and `filter` (0). A packet marked
//! NOTRACK in `raw` reaches the later tables as UNTRACKED.
//!
//! Why queue from `mangle`: a verdict from userspace, `--queue-bypass` with nobody
//! listening, and the kernel's fail-open all end the *chain* the packet was queued
//! from and resume it at the next table. From `mangle INPUT` that next table is
//! `filter INPUT`, where the host's own rules then judge the packet exactly as if
//! nfqwall were absent (queued from `filter`, they would have skipped the host's
//! rules). The only packet that skips a host rule is one nfqwall vouched for: an
//! INVALID packet it showed benign in enforce mode, which carries the vouch bit and
//! meets the accept at the top of `filter INPUT`, skipping the host's INVALID drop.
//!
//! Only `INPUT` is covered: a host firewall protects local services. Forwarded traffic
//! is out of scope for now.

pub mod apply;
pub mod command;
pub mod lifecycle;
pub mod marks;
pub mod nft;
pub mod save;

use std::fmt::Write as _;

use ipnet::IpNet;

use crate::config::{Config, FailOpenInvalid, PortRange, Protocol, QueueRange, Service};
use crate::engine::meta::CtState;
pub use marks::Marks;

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
    /// `mangle` table, jumped to from `INPUT`: what to queue (and kernel drops).
    MangleIn,
    /// `mangle` table, jumped to from `NFQWALL-MANGLE-IN` with the ESTABLISHED
    /// packets: the shadow feed of incoming packets (NFLOG, no verdict), first match
    /// wins per service.
    FeedIn,
    /// `mangle` table, jumped to from `NFQWALL-MANGLE-IN`: state bits, then NFQUEUE.
    Queue,
    /// `mangle` table, jumped to from `OUTPUT`: the shadow feed of the services'
    /// outgoing ESTABLISHED packets (NFLOG, no verdict).
    MangleOut,
    /// `filter` table, jumped to from `INPUT`: the vouch accept and the counter of
    /// packets queued and not judged.
    In,
}

impl OwnChain {
    /// Every own chain, in rendering order (raw, mangle, filter; a chain before the
    /// chain it jumps to, so a removal unhooks before it deletes).
    pub const ALL: [OwnChain; 7] = [
        OwnChain::RawPre,
        OwnChain::RawOut,
        OwnChain::MangleIn,
        OwnChain::FeedIn,
        OwnChain::Queue,
        OwnChain::MangleOut,
        OwnChain::In,
    ];

    /// The chain's name.
    pub fn name(self) -> &'static str {
        match self {
            OwnChain::RawPre => "NFQWALL-RAW-PRE",
            OwnChain::RawOut => "NFQWALL-RAW-OUT",
            OwnChain::MangleIn => "NFQWALL-MANGLE-IN",
            OwnChain::FeedIn => "NFQWALL-FEED-IN",
            OwnChain::Queue => "NFQWALL-QUEUE",
            OwnChain::MangleOut => "NFQWALL-MANGLE-OUT",
            OwnChain::In => "NFQWALL-IN",
        }
    }

    /// The table the chain lives in.
    pub fn table(self) -> &'static str {
        match self {
            OwnChain::RawPre | OwnChain::RawOut => "raw",
            OwnChain::MangleIn | OwnChain::FeedIn | OwnChain::Queue | OwnChain::MangleOut => {
                "mangle"
            }
            OwnChain::In => "filter",
        }
    }

    /// The built-in chain that holds the one jump to it; `None` for a chain only
    /// nfqwall's own chains jump to.
    pub fn hook(self) -> Option<&'static str> {
        match self {
            OwnChain::RawPre => Some("PREROUTING"),
            OwnChain::RawOut | OwnChain::MangleOut => Some("OUTPUT"),
            OwnChain::MangleIn | OwnChain::In => Some("INPUT"),
            OwnChain::Queue | OwnChain::FeedIn => None,
        }
    }

    /// The jump rule as `iptables-save` prints it (`-A INPUT -j NFQWALL-IN`), for a
    /// hooked chain.
    pub fn jump_rule(self) -> Option<String> {
        self.hook().map(|h| format!("-A {h} -j {}", self.name()))
    }
}

/// The tables nfqwall touches, in the order they are written.
pub const TABLES: [&str; 3] = ["raw", "mangle", "filter"];

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
    let marks = Marks::of(&config.daemon);
    let mut pre = Vec::new();
    let mut out = Vec::new();
    let mut mangle = Vec::new();
    let mut mangle_out = Vec::new();
    let mut feed_in = Vec::new();
    let mut shadowed = false;
    let mut fail_open_accepts = Vec::new();
    let mut queues_anything = false;
    let mut vouches = false;
    for service in &config.services {
        let Some(addresses) = addresses_in(service, family) else {
            continue;
        };
        let proto = proto_arg(service.protocol, family);
        let enforce = kernel_rules_apply(config, service);
        let plan = kernel_plan(config, service);
        let judged = plan.queueing == Queueing::Judged;
        let queues_invalid = judged && service.queue.contains(&CtState::Invalid);
        let repairs = judged && service.sack_repair && service.protocol == Protocol::Tcp;
        // Services whose TCP packets conntrack tracks take part in the feed's
        // first-match order, fed (`track = "shadow"`) or not.
        let feeds_tcp =
            matches!(service.protocol, Protocol::Tcp | Protocol::Any) && !service.stateless;
        vouches |= enforce && (queues_invalid || repairs);
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
                for step in &plan.steps {
                    mangle.extend(kernel_rule(&m, service, step, family));
                }
                if feeds_tcp {
                    // The shadow feed, first match wins as for the services: a packet
                    // of this service is fed by this service's rule or not at all
                    // (RETURN), never by a later, wider service's. NFLOG copies the
                    // headers and gives no verdict, so nothing waits for it.
                    let feed = Match {
                        proto: Some("tcp"),
                        ..m
                    };
                    let nflog = nflog_target(&config.daemon);
                    if service.shadowed() {
                        // SACK-bearing segments of a repairing service are queued
                        // (below) and judged there, and a service that queues
                        // ESTABLISHED judges all its incoming ones: not fed twice.
                        if !service.queue.contains(&CtState::Established) {
                            let inbound = if repairs {
                                format!("-m tcp ! --tcp-option 5 {nflog}")
                            } else {
                                nflog.clone()
                            };
                            feed_in.push(feed.rule(OwnChain::FeedIn, Dir::Destination, &inbound));
                        }
                        // A repairing service's own segments prove the SACK offset and
                        // verify each block to be rewritten, so they must not wait for
                        // a batch: the ACKs naming them are judged at once.
                        let outbound = if repairs {
                            nflog_target_with(&config.daemon, 1)
                        } else {
                            nflog.clone()
                        };
                        mangle_out.push(feed.rule(OwnChain::MangleOut, Dir::Source, &outbound));
                        shadowed = true;
                    }
                    feed_in.push(feed.rule(OwnChain::FeedIn, Dir::Destination, "-j RETURN"));
                    mangle_out.push(feed.rule(OwnChain::MangleOut, Dir::Source, "-j RETURN"));
                }
                if repairs && service.shadowed() {
                    // A copy of each SACK-bearing segment into the feed, before it is
                    // queued: in the one NFLOG group, after every segment the service
                    // sent before it arrived, so the learner can bound the offset by
                    // what was sent (`sack_repair`). Unbatched: it proves the offset
                    // at the end of the first loss episode, before its timeout.
                    let copy = format!(
                        "-m tcp --tcp-option 5 -j NFLOG --nflog-prefix {SACK_FEED_PREFIX} {}",
                        nflog_target_with(&config.daemon, 1).trim_start_matches("-j NFLOG ")
                    );
                    mangle.push(m.rule(OwnChain::MangleIn, Dir::Destination, &copy));
                }
                match plan.queueing {
                    Queueing::Judged if !service.queue.is_empty() => {
                        let target = format!(
                            "-m conntrack --ctstate {} -j {}",
                            ctstates(&service.queue),
                            OwnChain::Queue.name()
                        );
                        mangle.push(m.rule(OwnChain::MangleIn, Dir::Destination, &target));
                        queues_anything = true;
                    }
                    Queueing::Judged => {}
                    Queueing::KernelOnly { sample } => {
                        if let (Some(n), Some((_, states))) = (sample, &plan.terminal) {
                            // One packet in n of those the rules let through goes to
                            // nfqwall for the peer summaries (`-m statistic` keeps
                            // one counter per rule, shared by every CPU).
                            let target = format!(
                                "-m conntrack --ctstate {} -m statistic --mode nth --every {n} --packet 0 -j {}",
                                ctstates(states),
                                OwnChain::Queue.name()
                            );
                            mangle.push(m.rule(OwnChain::MangleIn, Dir::Destination, &target));
                            queues_anything = true;
                        }
                        if let Some((action, states)) = &plan.terminal {
                            // Where the queue rule stood: the service's default, so
                            // its packets never reach a later service's rules (in
                            // nfqwall the first matching service decides).
                            let target = format!(
                                "-m conntrack --ctstate {} -j {}",
                                ctstates(states),
                                match action {
                                    KernelAction::Drop => "DROP",
                                    KernelAction::Return => "RETURN",
                                }
                            );
                            mangle.push(m.rule(OwnChain::MangleIn, Dir::Destination, &target));
                        }
                    }
                }
                if repairs {
                    // SACK repair needs the client's SACK-bearing segments, including
                    // those conntrack finds valid (a displaced edge below the highest
                    // sequence sent is not INVALID, and still useless to the server).
                    // Only segments carrying the SACK option (kind 5) are queued.
                    let target = format!("-m tcp --tcp-option 5 -j {}", OwnChain::Queue.name());
                    mangle.push(m.rule(OwnChain::MangleIn, Dir::Destination, &target));
                    queues_anything = true;
                }
                if enforce
                    && queues_invalid
                    && config.daemon.fail_open_invalid == FailOpenInvalid::Accept
                {
                    // INVALID packets queued and never judged still carry their state
                    // bits: the operator chose to accept them rather than stall.
                    let target = format!(
                        "-m mark --mark {:#x}/{:#x} -j ACCEPT",
                        marks.state_value(CtState::Invalid),
                        marks.state_mask
                    );
                    fail_open_accepts.push(m.rule(OwnChain::In, Dir::Destination, &target));
                }
            }
        }
    }
    if shadowed {
        mangle.insert(
            0,
            format!(
                "-A {} -m conntrack --ctstate ESTABLISHED -j {}",
                OwnChain::MangleIn.name(),
                OwnChain::FeedIn.name()
            ),
        );
        // The service's own segments are fed even when conntrack doubts them: they
        // come from this host's TCP, and conntrack's view of the peer's window lags
        // when the peer's ACKs were INVALID (a middlebox flow), so its "over the
        // window" on the server's data says nothing about the data. Unfed, they would
        // leave nfqwall blind to what the client then acknowledges.
        mangle_out.insert(
            0,
            format!(
                "-A {} -m conntrack ! --ctstate INVALID,ESTABLISHED -j RETURN",
                OwnChain::MangleOut.name()
            ),
        );
    } else {
        feed_in.clear();
        mangle_out.clear();
    }
    let mut queue = Vec::new();
    let mut filter = Vec::new();
    if !mangle.is_empty() {
        // Nothing upstream can hand a packet in pre-vouched or with a state of its own.
        mangle.insert(
            0,
            format!(
                "-A {} -j MARK --set-xmark 0x0/{:#x}",
                OwnChain::MangleIn.name(),
                marks.owned()
            ),
        );
    }
    if queues_anything {
        for &state in Marks::states() {
            queue.push(format!(
                "-A {} -m conntrack --ctstate {} -j MARK --set-xmark {:#x}/{:#x}",
                OwnChain::Queue.name(),
                ctstates(&[state]),
                marks.state_value(state),
                marks.state_mask
            ));
        }
        queue.push(format!(
            "-A {} -j NFQUEUE {}",
            OwnChain::Queue.name(),
            queue_target(config.daemon.queues)
        ));
        filter.push(format!(
            "-A {} -m mark ! --mark 0x0/{:#x} -m comment --comment {}",
            OwnChain::In.name(),
            marks.state_mask,
            save_string(UNJUDGED_COMMENT)
        ));
        if vouches {
            filter.push(format!(
                "-A {} -m mark --mark {:#x}/{:#x} -m conntrack --ctstate INVALID -m comment --comment {} -j ACCEPT",
                OwnChain::In.name(),
                marks.vouch,
                marks.vouch,
                save_string(VOUCH_COMMENT)
            ));
        }
        filter.extend(fail_open_accepts);
    }
    let chains = [
        (OwnChain::RawPre, pre),
        (OwnChain::RawOut, out),
        (OwnChain::MangleIn, mangle),
        (OwnChain::FeedIn, feed_in),
        (OwnChain::Queue, queue),
        (OwnChain::MangleOut, mangle_out),
        (OwnChain::In, filter),
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

/// `-j NFLOG ...`: the shadow feed's target, as `iptables-save` prints it (the
/// feed's chains see only ESTABLISHED packets).
fn nflog_target(d: &crate::config::DaemonConfig) -> String {
    nflog_target_with(d, d.feed_threshold)
}

/// [`nflog_target`] with another batch threshold.
fn nflog_target_with(d: &crate::config::DaemonConfig, threshold: u16) -> String {
    format!(
        "-j NFLOG --nflog-group {} --nflog-size {} --nflog-threshold {threshold}",
        d.feed_group, d.feed_size
    )
}

/// The NFLOG prefix of the feed's copies of a repairing service's SACK-bearing
/// segments (they are queued as well; the feed's copy only teaches the offset learner).
pub const SACK_FEED_PREFIX: &str = "nfqwall-sack";

/// The comment of the counter rule in `filter` that counts packets queued and never
/// judged; `nfqwall run` reads its counter.
pub const UNJUDGED_COMMENT: &str = "queued, not judged";
/// The comment of the one rule that lets a packet skip a host rule.
pub const VOUCH_COMMENT: &str = "vouched by nfqwall";

/// Returns true if and only if the service's simple drop rules may be rendered as
/// kernel rules: in enforce mode only (log-only must never drop, and nfqwall logs
/// what it would have dropped).
fn kernel_rules_apply(config: &Config, service: &Service) -> bool {
    service.mode.unwrap_or(config.daemon.mode) == crate::engine::policy::Mode::Enforce
}

/// What a rendered rule does in `NFQWALL-MANGLE-IN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KernelAction {
    /// `-j DROP` / `drop`: a `drop` rule, or the service's default drop.
    Drop,
    /// `-j RETURN` / `return`: an `accept` rule or the default accept of a service
    /// nfqwall does not judge; "no objection", the host's rules decide.
    Return,
}

/// One config rule rendered into the kernel.
#[derive(Clone, Debug)]
pub(crate) struct KernelStep<'a> {
    /// The rule.
    pub rule: &'a crate::config::Rule,
    /// What the kernel does with the packets it matches.
    pub action: KernelAction,
    /// The conntrack states it matches: the rule's own, else the service's queued
    /// states (UNTRACKED for a stateless service that queues nothing).
    pub states: Vec<CtState>,
}

/// How the packets of one service reach nfqwall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Queueing {
    /// nfqwall judges the service's queued states (and, for `sack_repair`, its
    /// SACK-bearing segments): some rule, check or log needs it.
    Judged,
    /// Every rule and the default are in the kernel; nothing is queued except one
    /// packet in `sample` of those the kernel rules let through, when set.
    KernelOnly {
        /// `sample = "1/N"`: the N.
        sample: Option<u32>,
    },
}

/// The kernel side of one service, decided once for both renderings (iptables
/// here, nftables in [`nft`]): which rules go into the kernel and whether the
/// service's packets still go to nfqwall.
#[derive(Clone, Debug)]
pub(crate) struct KernelPlan<'a> {
    /// The rules rendered into the kernel, in config order, before anything queued.
    pub steps: Vec<KernelStep<'a>>,
    /// Whether nfqwall still judges the service.
    pub queueing: Queueing,
    /// For [`Queueing::KernelOnly`]: the service's default and the states it
    /// applies to (where the queue rule would have stood); `None` when the service
    /// matches no state at all (`queue = []`, tracked).
    pub terminal: Option<(KernelAction, Vec<CtState>)>,
}

/// The conntrack states the service's packets reach nfqwall's rules with: its
/// `queue`, or UNTRACKED for a stateless service that queues nothing (`queue = []`:
/// kernel only, its rules still applied to its UNTRACKED packets).
fn service_states(service: &Service) -> Vec<CtState> {
    if service.queue.is_empty() && service.stateless {
        vec![CtState::Untracked]
    } else {
        service.queue.clone()
    }
}

/// The states a rendered rule matches: its own `ct_state`, else the service's.
fn rule_states(service: &Service, rule: &crate::config::Rule) -> Vec<CtState> {
    if rule.ct_state.is_empty() {
        service_states(service)
    } else {
        rule.ct_state.clone()
    }
}

/// Returns true if and only if iptables and nftables can express every condition
/// of `rule` (`source`, one `source_ports` range, `tcp_flags` without ECE/CWR,
/// `interface`, `length`, `ct_state`; no `destination` of its own, no
/// `destination_ports`, no `rate`, no `mark`) and it matches some state.
fn expressible(service: &Service, rule: &crate::config::Rule) -> bool {
    rule.rate.is_none()
        && rule.mark.is_none()
        && rule.destination.is_empty()
        && rule.destination_ports.is_empty()
        && rule.source_ports.len() <= 1
        && rule.source.len() <= 16
        && rule.tcp_flags.is_none_or(|f| f.mask & 0xc0 == 0)
        && !(service.protocol == Protocol::Any
            && (!rule.source_ports.is_empty() || rule.tcp_flags.is_some()))
        && !rule_states(service, rule).is_empty()
}

/// Returns false only if no packet can match both `earlier` (as nfqwall evaluates
/// it) and `later` (as rendered, with `later_states`): some condition both set
/// is provably disjoint. Conservative: anything not shown disjoint overlaps. The
/// rate of a rate rule is ignored (it only narrows what the rule matches).
fn may_overlap(
    earlier: &crate::config::Rule,
    later: &crate::config::Rule,
    later_states: &[CtState],
) -> bool {
    fn nets_disjoint(a: &[IpNet], b: &[IpNet]) -> bool {
        !a.is_empty()
            && !b.is_empty()
            && a.iter()
                .all(|x| b.iter().all(|y| !x.contains(y) && !y.contains(x)))
    }
    fn ports_disjoint(a: &[PortRange], b: &[PortRange]) -> bool {
        !a.is_empty()
            && !b.is_empty()
            && a.iter()
                .all(|x| b.iter().all(|y| x.last < y.first || y.last < x.first))
    }
    let ct_disjoint = !earlier.ct_state.is_empty()
        && !later_states.is_empty()
        && earlier.ct_state.iter().all(|s| !later_states.contains(s));
    let flags_disjoint = match (earlier.tcp_flags, later.tcp_flags) {
        (Some(a), Some(b)) => (a.mask & b.mask) & (a.value ^ b.value) != 0,
        _ => false,
    };
    let length_disjoint = match (earlier.length, later.length) {
        (Some(a), Some(b)) => a.max < b.min || b.max < a.min,
        _ => false,
    };
    let iface_disjoint = match (&earlier.interface, &later.interface) {
        (Some(a), Some(b)) => match (a.prefix, b.prefix) {
            (false, false) => a.name != b.name,
            (true, false) => !b.name.starts_with(a.name.as_str()),
            (false, true) => !a.name.starts_with(b.name.as_str()),
            (true, true) => {
                !a.name.starts_with(b.name.as_str()) && !b.name.starts_with(a.name.as_str())
            }
        },
        _ => false,
    };
    !(nets_disjoint(&earlier.source, &later.source)
        || nets_disjoint(&earlier.destination, &later.destination)
        || ports_disjoint(&earlier.source_ports, &later.source_ports)
        || ports_disjoint(&earlier.destination_ports, &later.destination_ports)
        || ct_disjoint
        || flags_disjoint
        || length_disjoint
        || iface_disjoint)
}

/// Decides the kernel side of `service` (see [`KernelPlan`]).
///
/// nfqwall's rules are first-match-wins. In enforce mode:
///
/// - A service nfqwall has nothing to judge for goes into the kernel whole: UDP or
///   ICMP (the live engine's only checks beyond the rules are TCP's), every rule
///   expressible and an `accept` or a `drop` (no `log`, no `rate`, no `mark`), no
///   `sack_repair`. Its rules render in order (`drop` as DROP, `accept` as RETURN),
///   then its default where the queue rule stood; nothing is queued but the
///   `sample`.
/// - Otherwise nfqwall judges the service, and each expressible `drop` rule that no
///   earlier `accept` or `log` rule may overlap ([`may_overlap`]) is rendered as a
///   kernel DROP before the queue rule, wherever it stands in the list: an earlier
///   `accept` would have let some of its packets past, an earlier `log` would not see
///   them. An earlier (judged) `drop` does not matter: the packet is dropped either
///   way.
///
/// In log-only mode nothing is rendered: nfqwall judges everything and logs what it
/// would have dropped.
pub(crate) fn kernel_plan<'a>(config: &Config, service: &'a Service) -> KernelPlan<'a> {
    use crate::config::RuleAction;
    let judged = KernelPlan {
        steps: Vec::new(),
        queueing: Queueing::Judged,
        terminal: None,
    };
    if !kernel_rules_apply(config, service) {
        return judged;
    }
    let kernel_only = matches!(service.protocol, Protocol::Udp | Protocol::Icmp)
        && !service.sack_repair
        && service
            .rules
            .iter()
            .all(|r| r.action != RuleAction::Log && expressible(service, r));
    if kernel_only {
        let steps = service
            .rules
            .iter()
            .map(|rule| KernelStep {
                rule,
                action: match rule.action {
                    RuleAction::Drop => KernelAction::Drop,
                    _ => KernelAction::Return,
                },
                states: rule_states(service, rule),
            })
            .collect();
        let states = service_states(service);
        let default = match service.default {
            crate::config::Action::Drop => KernelAction::Drop,
            crate::config::Action::Accept => KernelAction::Return,
        };
        return KernelPlan {
            steps,
            queueing: Queueing::KernelOnly {
                sample: service.sample,
            },
            terminal: (!states.is_empty()).then_some((default, states)),
        };
    }
    let mut steps = Vec::new();
    for (i, rule) in service.rules.iter().enumerate() {
        if rule.action != RuleAction::Drop || !expressible(service, rule) {
            continue;
        }
        let states = rule_states(service, rule);
        let shadowed = service.rules[..i]
            .iter()
            .filter(|e| e.action != RuleAction::Drop)
            .any(|e| may_overlap(e, rule, &states));
        if !shadowed {
            steps.push(KernelStep {
                rule,
                action: KernelAction::Drop,
                states,
            });
        }
    }
    KernelPlan { steps, ..judged }
}

/// The iptables rules for one rendered rule (none when its sources are all of the
/// other family).
fn kernel_rule(
    m: &Match<'_>,
    service: &Service,
    step: &KernelStep<'_>,
    family: Family,
) -> Vec<String> {
    const TCP_FLAG_NAMES: [(u8, &str); 6] = [
        (0x01, "FIN"),
        (0x02, "SYN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x10, "ACK"),
        (0x20, "URG"),
    ];
    let rule = step.rule;
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
            return Vec::new();
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
    let target = match step.action {
        KernelAction::Drop => "DROP",
        KernelAction::Return => "RETURN",
    };
    let mut lines = Vec::new();
    for src in sources {
        // The order iptables-save prints: addresses, interface, protocol and its
        // match, then the other matches in the order given, the comment, the target.
        let mut r = format!("-A {}", OwnChain::MangleIn.name());
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
        }
        let _ = write!(r, " -m conntrack --ctstate {}", ctstates(&step.states));
        if let Some(l) = rule.length {
            if l.min == l.max {
                let _ = write!(r, " -m length --length {}", l.min);
            } else {
                let _ = write!(r, " -m length --length {}:{}", l.min, l.max);
            }
        }
        let comment = format!("{}/{}", service.name, rule.name);
        let _ = write!(
            r,
            " -m comment --comment {} -j {target}",
            save_string(&comment)
        );
        lines.push(r);
    }
    lines
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
                "mangle" => {
                    "# What each service sends to nfqwall, with its conntrack state written into\n\
                     # the mark. Queued from mangle: nfqwall's verdicts, --queue-bypass and the\n\
                     # kernel's fail-open all go on to filter, where the host's rules decide.\n\
                     # NFLOG rules (track = \"shadow\") copy the headers of ESTABLISHED packets,\n\
                     # both directions, to nfqwall without a verdict: nothing waits for them.\n"
                }
                _ => {
                    "# The one rule that lets a packet skip a host rule: an INVALID packet nfqwall\n\
                     # vouched for (enforce). Queued packets nobody judged are counted here.\n"
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
                if let Some(hook) = c.hook() {
                    let _ = writeln!(t, "-I {hook} -j {}", c.name());
                }
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

impl crate::daemon::Ruleset for KernelRuleset {
    fn writes_state(&self) -> bool {
        true
    }

    fn unjudged_reader(&self) -> Option<crate::daemon::UnjudgedReader> {
        let backend = self.life.backend();
        Some(Box::new(move || apply::read_unjudged(backend)))
    }

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
}
