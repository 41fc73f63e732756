//! The nftables equivalent of the rendered ruleset: one `table inet nfqwall` for both
//! families, for operators who run nftables natively.
//!
//! The design is the iptables one (see [`super`]), chain for chain, at the hook
//! priorities the iptables tables run at:
//!
//! | chain       | hook, priority               | iptables counterpart | what it does |
//! |-------------|------------------------------|----------------------|--------------|
//! | `raw-pre`   | prerouting, `raw` (-300)     | `NFQWALL-RAW-PRE`    | `notrack` the queries of stateless services |
//! | `raw-out`   | output, `raw` (-300)         | `NFQWALL-RAW-OUT`    | `notrack` their answers |
//! | `mangle-in` | input, `mangle` (-150)       | `NFQWALL-MANGLE-IN`  | clear nfqwall's mark bits; kernel drops (enforce); `jump to-queue` per service |
//! | `to-queue`  | (regular chain)              | `NFQWALL-QUEUE`      | the conntrack state into the state bits, then `queue num N bypass` |
//! | `filter-in` | input, `filter - 1` (-1)     | `NFQWALL-IN`         | count unjudged packets; the vouch accept; `fail_open_invalid = "accept"` |
//!
//! `filter-in` runs at `filter - 1` so that, like the first rule of iptables'
//! `filter INPUT`, it sees every packet before any chain at priority `filter` (which
//! may drop it first and hide it from the counter when both sit at the same priority).
//! A range of queues is `queue num A-B bypass`, balanced by flow hash like
//! `--queue-balance` (no `fanout`: that balances by CPU, like `--queue-cpu-fanout`,
//! and could split one flow over two queues).
//!
//! One thing cannot be mirrored: an nftables `accept` ends only the base chain it is
//! in. Every other base chain on the hook (an operator's `table inet filter`, the
//! `ip filter` table of iptables-nft) still runs, so the vouch accept and the
//! fail-open accepts in `filter-in` do not skip an operator's `ct state invalid drop`
//! elsewhere. The operator has to put [`vouch_line`] before their own INVALID drop.
//!
//! Shipped in `rules/nftables/` and syntax-checked only: nft's own `queue` statement
//! needs the kernel's `nft_queue`, which the machines nfqwall is tested on lack, so
//! `nfqwall rules install` drives iptables. The file replaces the table atomically
//! (`table` + `delete table` + definition in one `nft -f` transaction).

use std::fmt::Write as _;

use ipnet::IpNet;

use super::{
    kernel_plan, Family, KernelAction, KernelStep, Marks, Queueing, UNJUDGED_COMMENT, VOUCH_COMMENT,
};
use crate::config::{Config, FailOpenInvalid, PortRange, Protocol, QueueRange, Service};
use crate::engine::meta::CtState;
use crate::engine::policy::Mode;

/// The chain `mangle-in` sends queued packets to.
const TO_QUEUE: &str = "to-queue";

/// Renders `config` as an `nft -f` file; `origin` names the config in the header.
pub fn render(config: &Config, origin: &str) -> String {
    let marks = Marks::of(&config.daemon);
    let mut pre = Vec::new();
    let mut out = Vec::new();
    let mut mangle = Vec::new();
    let mut fail_open_accepts = Vec::new();
    let mut queues_anything = false;
    let mut vouches = false;
    for s in &config.services {
        let enforce = s.mode.unwrap_or(config.daemon.mode) == Mode::Enforce;
        let plan = kernel_plan(config, s);
        let judged = plan.queueing == Queueing::Judged;
        let queues_invalid = judged && s.queue.contains(&CtState::Invalid);
        let repairs = judged && s.sack_repair && s.protocol == Protocol::Tcp;
        vouches |= enforce && (queues_invalid || repairs);
        for (family, addrs) in address_groups(s) {
            let g = Group {
                family,
                daddr: addr_match(family, "daddr", &addrs),
                dport: port_match(s, "dport"),
                comment: format!("comment {}", quote(&s.name)),
            };
            let l4 = l4_match(s, family);
            if s.stateless {
                let saddr = addr_match(family, "saddr", &addrs);
                let sport = port_match(s, "sport");
                pre.push(join(&[&g.daddr, &l4, &g.dport, "notrack", &g.comment]));
                out.push(join(&[&saddr, &l4, &sport, "notrack", &g.comment]));
            }
            for step in &plan.steps {
                mangle.extend(kernel_rule(&g, s, step));
            }
            match plan.queueing {
                Queueing::Judged if !s.queue.is_empty() => {
                    let ct = format!("ct state {}", ct_states(&s.queue));
                    let jump = format!("jump {TO_QUEUE}");
                    mangle.push(join(&[&g.daddr, &l4, &g.dport, &ct, &jump, &g.comment]));
                    queues_anything = true;
                }
                Queueing::Judged => {}
                Queueing::KernelOnly { sample } => {
                    if let (Some(n), Some((_, states))) = (sample, &plan.terminal) {
                        // As nft lists `numgen inc mod N == 0`.
                        let ct = format!("ct state {}", ct_states(states));
                        let jump = format!("numgen inc mod {n} 0 jump {TO_QUEUE}");
                        mangle.push(join(&[&g.daddr, &l4, &g.dport, &ct, &jump, &g.comment]));
                        queues_anything = true;
                    }
                    if let Some((action, states)) = &plan.terminal {
                        let ct = format!("ct state {}", ct_states(states));
                        mangle.push(join(&[
                            &g.daddr,
                            &l4,
                            &g.dport,
                            &ct,
                            verdict(*action),
                            &g.comment,
                        ]));
                    }
                }
            }
            if repairs {
                // SACK repair needs the client's SACK-bearing segments whatever their
                // state (option kind 5; `tcp option` implies TCP).
                let jump = format!("tcp option sack exists jump {TO_QUEUE}");
                mangle.push(join(&[&g.daddr, &g.dport, &jump, &g.comment]));
                queues_anything = true;
            }
            if enforce
                && queues_invalid
                && config.daemon.fail_open_invalid == FailOpenInvalid::Accept
            {
                let code = format!(
                    "meta mark & {} == {} accept",
                    hex(marks.state_mask),
                    hex(marks.state_value(CtState::Invalid))
                );
                fail_open_accepts.push(join(&[&g.daddr, &l4, &g.dport, &code, &g.comment]));
            }
        }
    }
    if !mangle.is_empty() {
        mangle.insert(
            0,
            format!("meta mark set meta mark & {}", hex(!marks.owned())),
        );
    }
    let mut queue = Vec::new();
    let mut filter = Vec::new();
    let mut fail_open_accepts_rendered = false;
    if queues_anything {
        // nft reads `A & B | C` as `(A & B) | C`: clear the state bits, then set the code.
        for &state in Marks::states() {
            queue.push(format!(
                "ct state {} meta mark set meta mark & {} | {}",
                state.name(),
                hex(!marks.state_mask),
                hex(marks.state_value(state))
            ));
        }
        queue.push(queue_statement(config.daemon.queues));
        filter.push(format!(
            "meta mark & {} != 0 counter comment {}",
            hex(marks.state_mask),
            quote(UNJUDGED_COMMENT)
        ));
        if vouches {
            filter.push(vouch_line(marks, VOUCH_COMMENT));
        }
        fail_open_accepts_rendered = !fail_open_accepts.is_empty();
        filter.extend(fail_open_accepts);
    }

    let mut t = String::new();
    let _ = writeln!(t, "#!/usr/sbin/nft -f");
    let _ = writeln!(
        t,
        "# nfqwall nftables ruleset (IPv4 and IPv6), rendered from {origin}."
    );
    t.push_str(
        "# Generated by `nfqwall rules print --format nft`; do not edit. Needs nft_queue.\n\
         # The design of the iptables ruleset (rules/README.md), at the same priorities:\n\
         # raw (-300) untracks stateless services, mangle (-150) queues, filter - 1 counts\n\
         # and vouches. Queued from mangle, nfqwall's verdicts, the queue bypass and the\n\
         # kernel's fail-open all go on to the chains at priority filter: the host's rules.\n",
    );
    if vouches {
        let _ = writeln!(
            t,
            "#\n\
             # An nftables accept ends only its own chain: nfqwall's accepts below do not skip\n\
             # an INVALID drop in another table. For vouched packets to get past yours, put\n\
             # this rule just before your own `ct state invalid drop`:\n\
             #     {}",
            vouch_line(marks, "")
        );
    }
    if fail_open_accepts_rendered {
        let _ = writeln!(
            t,
            "# and, for fail_open_invalid = \"accept\", the service's matches followed by\n\
             #     meta mark & {} == {} accept",
            hex(marks.state_mask),
            hex(marks.state_value(CtState::Invalid))
        );
    }
    t.push_str(
        "\n\
         # Replace the table atomically: create it if absent, delete it, define it anew.\n\
         table inet nfqwall\n\
         delete table inet nfqwall\n\n\
         table inet nfqwall {\n",
    );
    let mangle_note = format!(
        "# Every packet first: clear nfqwall's mark bits ({} vouch, {} state),\n\
         # so nothing upstream hands one in pre-vouched. Then per service: its rules\n\
         # that can be kernel rules (enforce only), and what goes to nfqwall.\n",
        hex(marks.vouch),
        hex(marks.state_mask)
    );
    let codes = Marks::states()
        .iter()
        .map(|&s| {
            let code = marks.state_value(s) >> marks.state_mask.trailing_zeros();
            format!("{} {code}", s.name())
        })
        .collect::<Vec<_>>()
        .join(", ");
    let queue_note = format!(
        "# Write the conntrack state into the state bits, then queue to nfqwall; with\n\
         # nobody listening, bypass accepts it here and it goes on to the host's rules.\n\
         # Codes: {codes}.\n"
    );
    let filter_note = if filter.iter().any(|r| r.contains(" accept")) {
        "# Packets still carrying state bits were queued and never judged: counted.\n\
         # The accepts end this table's input only; see the header.\n"
    } else {
        "# Packets still carrying state bits were queued and never judged: counted.\n"
    };
    let chains: [(&str, &str, Option<&str>, Vec<String>); 5] = [
        (
            "# Stateless services: no conntrack entry for the queries (by destination)...\n",
            "raw-pre",
            Some("prerouting priority raw"),
            pre,
        ),
        (
            "# ...nor for their answers (by source). Priority raw runs before conntrack.\n",
            "raw-out",
            Some("output priority raw"),
            out,
        ),
        (
            &mangle_note,
            "mangle-in",
            Some("input priority mangle"),
            mangle,
        ),
        (&queue_note, TO_QUEUE, None, queue),
        (
            filter_note,
            "filter-in",
            Some("input priority filter - 1"),
            filter,
        ),
    ];
    let mut first = true;
    for (note, name, hook, rules) in chains {
        if rules.is_empty() {
            continue;
        }
        if !first {
            t.push('\n');
        }
        first = false;
        for l in note.lines() {
            let _ = writeln!(t, "\t{l}");
        }
        let _ = writeln!(t, "\tchain {name} {{");
        if let Some(hook) = hook {
            let _ = writeln!(t, "\t\ttype filter hook {hook}; policy accept;");
        }
        for r in rules {
            let _ = writeln!(t, "\t\t{r}");
        }
        t.push_str("\t}\n");
    }
    t.push_str("}\n");
    t
}

/// The rule that lets an INVALID packet nfqwall vouched for past an INVALID drop in
/// the same chain: `meta mark & 0x10000000 == 0x10000000 ct state invalid accept`,
/// with `comment` if not empty.
pub fn vouch_line(marks: Marks, comment: &str) -> String {
    let mut r = format!(
        "meta mark & {} == {} ct state invalid accept",
        hex(marks.vouch),
        hex(marks.vouch)
    );
    if !comment.is_empty() {
        let _ = write!(r, " comment {}", quote(comment));
    }
    r
}

/// The matches every rule of one service x family group starts from.
struct Group {
    /// The group's family; `None` when the service names no address (both).
    family: Option<Family>,
    /// `ip daddr ...`, or empty.
    daddr: String,
    /// `tcp dport ...`, or empty.
    dport: String,
    /// `comment "NAME"`.
    comment: String,
}

/// `drop` or `return`.
fn verdict(action: KernelAction) -> &'static str {
    match action {
        KernelAction::Drop => "drop",
        KernelAction::Return => "return",
    }
}

/// The rules for one rule rendered into the kernel (none when its sources are all
/// of the other family): the rules the iptables rendering has
/// (`super::kernel_rule`), from the same [`kernel_plan`], in nft syntax; a parity
/// test checks both render the same rules.
fn kernel_rule(g: &Group, s: &Service, step: &KernelStep<'_>) -> Vec<String> {
    let rule = step.rule;
    let states = &step.states[..];
    // `super::expressible` ruled out ports and flags on an `any` service.
    let has_ports = s.protocol.has_ports();
    // Sources per family: one rule for each family that has some.
    let sources: Vec<(Option<Family>, String)> = if rule.source.is_empty() {
        vec![(g.family, String::new())]
    } else {
        let families = match g.family {
            Some(f) => vec![f],
            None => Family::ALL.to_vec(),
        };
        families
            .into_iter()
            .filter_map(|f| {
                let nets: Vec<IpNet> = rule
                    .source
                    .iter()
                    .filter(|n| f.contains(n))
                    .copied()
                    .collect();
                (!nets.is_empty()).then(|| (Some(f), addr_match(Some(f), "saddr", &nets)))
            })
            .collect()
    };
    let sport = match rule.source_ports.first() {
        Some(&p) if has_ports => format!("{} sport {}", s.protocol.name(), port_text(p)),
        _ => String::new(),
    };
    let flags = match rule.tcp_flags {
        Some(f) if s.protocol == Protocol::Tcp => {
            format!(
                "tcp flags & {} == {}",
                flag_set(f.mask, true),
                flag_set(f.value, false)
            )
        }
        _ => String::new(),
    };
    let iif = rule
        .interface
        .as_ref()
        .map(|i| {
            format!(
                "iifname {}",
                quote(&format!("{}{}", i.name, if i.prefix { "*" } else { "" }))
            )
        })
        .unwrap_or_default();
    let ct = format!("ct state {}", ct_states(states));
    let length = match rule.length {
        Some(l) if l.min == l.max => format!("meta length {}", l.min),
        Some(l) => format!("meta length {}-{}", l.min, l.max),
        None => String::new(),
    };
    let comment = format!("comment {}", quote(&format!("{}/{}", s.name, rule.name)));
    sources
        .into_iter()
        .map(|(family, saddr)| {
            // The protocol match only where no port or flag match implies it.
            let l4 = if g.dport.is_empty() && sport.is_empty() && flags.is_empty() {
                l4_match_any_ports(s, family)
            } else {
                String::new()
            };
            join(&[
                &saddr,
                &g.daddr,
                &iif,
                &l4,
                &sport,
                &g.dport,
                &flags,
                &ct,
                &length,
                verdict(step.action),
                &comment,
            ])
        })
        .collect()
}

/// TCP flag bits in nft's names: `fin | syn` (in parentheses when `paren` and there
/// are several), `0x0` for none.
fn flag_set(bits: u8, paren: bool) -> String {
    const NAMES: [(u8, &str); 6] = [
        (0x01, "fin"),
        (0x02, "syn"),
        (0x04, "rst"),
        (0x08, "psh"),
        (0x10, "ack"),
        (0x20, "urg"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    match names.len() {
        0 => "0x0".to_string(),
        1 => names[0].to_string(),
        _ if paren => format!("({})", names.join(" | ")),
        _ => names.join(" | "),
    }
}

/// A mark value as 8 hex digits: `0x0e000000`.
fn hex(v: u32) -> String {
    format!("{v:#010x}")
}

/// A string in double quotes (names are checked by the config: nothing to escape).
fn quote(s: &str) -> String {
    format!("\"{s}\"")
}

/// Joins the non-empty parts with spaces.
fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The service's destinations grouped by family; one group with no family ("all
/// addresses", both families) when it names none.
fn address_groups(s: &Service) -> Vec<(Option<Family>, Vec<IpNet>)> {
    if s.addresses.is_empty() {
        return vec![(None, Vec::new())];
    }
    Family::ALL
        .iter()
        .map(|&f| {
            let nets: Vec<_> = s
                .addresses
                .iter()
                .filter(|n| f.contains(n))
                .copied()
                .collect();
            (Some(f), nets)
        })
        .filter(|(_, nets)| !nets.is_empty())
        .collect()
}

/// `ip daddr 192.0.2.53`, `ip6 saddr { a, b }`, or nothing.
fn addr_match(family: Option<Family>, field: &str, nets: &[IpNet]) -> String {
    let Some(family) = family else {
        return String::new();
    };
    let proto = match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    // nft prints a full-length prefix as a plain address.
    let text: Vec<String> = nets
        .iter()
        .map(|n| {
            if n.prefix_len() == n.max_prefix_len() {
                n.addr().to_string()
            } else {
                n.to_string()
            }
        })
        .collect();
    format!("{proto} {field} {}", set(&text))
}

/// `x` or `{ x, y }`.
fn set(items: &[String]) -> String {
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

/// The protocol match, when no port match implies it.
fn l4_match(s: &Service, family: Option<Family>) -> String {
    if s.protocol.has_ports() && !s.ports.is_empty() {
        return String::new();
    }
    l4_match_any_ports(s, family)
}

/// The protocol match on its own: `meta l4proto tcp`, or nothing for any protocol.
fn l4_match_any_ports(s: &Service, family: Option<Family>) -> String {
    match (s.protocol, family) {
        (Protocol::Tcp, _) => "meta l4proto tcp".into(),
        (Protocol::Udp, _) => "meta l4proto udp".into(),
        (Protocol::Icmp, Some(Family::V4)) => "meta l4proto icmp".into(),
        (Protocol::Icmp, Some(Family::V6)) => "meta l4proto ipv6-icmp".into(),
        (Protocol::Icmp, None) => "meta l4proto { icmp, ipv6-icmp }".into(),
        (Protocol::Any, _) => String::new(),
    }
}

/// `udp dport 53`, `tcp dport { 80, 443, 8000-8080 }`, or nothing.
fn port_match(s: &Service, field: &str) -> String {
    if !s.protocol.has_ports() || s.ports.is_empty() {
        return String::new();
    }
    let text: Vec<String> = s.ports.iter().map(|&r| port_text(r)).collect();
    format!("{} {field} {}", s.protocol.name(), set(&text))
}

/// `53` or `8000-8080`.
fn port_text(r: PortRange) -> String {
    if r.first == r.last {
        r.first.to_string()
    } else {
        format!("{}-{}", r.first, r.last)
    }
}

/// The states in the order `nft list` prints them (its bit order).
const NFT_ORDER: [CtState; 5] = [
    CtState::Invalid,
    CtState::Established,
    CtState::Related,
    CtState::New,
    CtState::Untracked,
];

/// `invalid,new` in the order `nft list` prints.
fn ct_states(states: &[CtState]) -> String {
    NFT_ORDER
        .iter()
        .filter(|s| states.contains(s))
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(",")
}

/// `queue num 0 bypass` or `queue num 0-3 bypass` (balanced by flow hash, as
/// `--queue-balance`).
fn queue_statement(q: QueueRange) -> String {
    if q.first == q.last {
        format!("queue num {} bypass", q.first)
    } else {
        format!("queue num {}-{} bypass", q.first, q.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{render as render_iptables, OwnChain};

    fn cfg(toml: &str) -> Config {
        Config::from_toml_str(toml, "test.toml").unwrap()
    }

    const DEFAULT: &str = "\
#!/usr/sbin/nft -f\n\
# nfqwall nftables ruleset (IPv4 and IPv6), rendered from d.toml.\n\
# Generated by `nfqwall rules print --format nft`; do not edit. Needs nft_queue.\n\
# The design of the iptables ruleset (rules/README.md), at the same priorities:\n\
# raw (-300) untracks stateless services, mangle (-150) queues, filter - 1 counts\n\
# and vouches. Queued from mangle, nfqwall's verdicts, the queue bypass and the\n\
# kernel's fail-open all go on to the chains at priority filter: the host's rules.\n\
\n\
# Replace the table atomically: create it if absent, delete it, define it anew.\n\
table inet nfqwall\n\
delete table inet nfqwall\n\
\n\
table inet nfqwall {\n\
\t# Every packet first: clear nfqwall's mark bits (0x10000000 vouch, 0x0e000000 state),\n\
\t# so nothing upstream hands one in pre-vouched. Then per service: its rules\n\
\t# that can be kernel rules (enforce only), and what goes to nfqwall.\n\
\tchain mangle-in {\n\
\t\ttype filter hook input priority mangle; policy accept;\n\
\t\tmeta mark set meta mark & 0xe1ffffff\n\
\t\tmeta l4proto tcp ct state invalid,new jump to-queue comment \"all-tcp\"\n\
\t}\n\
\n\
\t# Write the conntrack state into the state bits, then queue to nfqwall; with\n\
\t# nobody listening, bypass accepts it here and it goes on to the host's rules.\n\
\t# Codes: invalid 1, new 2, established 3, related 4, untracked 5.\n\
\tchain to-queue {\n\
\t\tct state invalid meta mark set meta mark & 0xf1ffffff | 0x02000000\n\
\t\tct state new meta mark set meta mark & 0xf1ffffff | 0x04000000\n\
\t\tct state established meta mark set meta mark & 0xf1ffffff | 0x06000000\n\
\t\tct state related meta mark set meta mark & 0xf1ffffff | 0x08000000\n\
\t\tct state untracked meta mark set meta mark & 0xf1ffffff | 0x0a000000\n\
\t\tqueue num 0 bypass\n\
\t}\n\
\n\
\t# Packets still carrying state bits were queued and never judged: counted.\n\
\tchain filter-in {\n\
\t\ttype filter hook input priority filter - 1; policy accept;\n\
\t\tmeta mark & 0x0e000000 != 0 counter comment \"queued, not judged\"\n\
\t}\n\
}\n";

    const BUSY_DNS: &str = "\
#!/usr/sbin/nft -f\n\
# nfqwall nftables ruleset (IPv4 and IPv6), rendered from b.toml.\n\
# Generated by `nfqwall rules print --format nft`; do not edit. Needs nft_queue.\n\
# The design of the iptables ruleset (rules/README.md), at the same priorities:\n\
# raw (-300) untracks stateless services, mangle (-150) queues, filter - 1 counts\n\
# and vouches. Queued from mangle, nfqwall's verdicts, the queue bypass and the\n\
# kernel's fail-open all go on to the chains at priority filter: the host's rules.\n\
#\n\
# An nftables accept ends only its own chain: nfqwall's accepts below do not skip\n\
# an INVALID drop in another table. For vouched packets to get past yours, put\n\
# this rule just before your own `ct state invalid drop`:\n\
#     meta mark & 0x10000000 == 0x10000000 ct state invalid accept\n\
\n\
# Replace the table atomically: create it if absent, delete it, define it anew.\n\
table inet nfqwall\n\
delete table inet nfqwall\n\
\n\
table inet nfqwall {\n\
\t# Stateless services: no conntrack entry for the queries (by destination)...\n\
\tchain raw-pre {\n\
\t\ttype filter hook prerouting priority raw; policy accept;\n\
\t\tip daddr 192.0.2.53 udp dport 53 notrack comment \"dns-udp\"\n\
\t\tip6 daddr 2001:db8::53 udp dport 53 notrack comment \"dns-udp\"\n\
\t}\n\
\n\
\t# ...nor for their answers (by source). Priority raw runs before conntrack.\n\
\tchain raw-out {\n\
\t\ttype filter hook output priority raw; policy accept;\n\
\t\tip saddr 192.0.2.53 udp sport 53 notrack comment \"dns-udp\"\n\
\t\tip6 saddr 2001:db8::53 udp sport 53 notrack comment \"dns-udp\"\n\
\t}\n\
\n\
\t# Every packet first: clear nfqwall's mark bits (0x10000000 vouch, 0x0e000000 state),\n\
\t# so nothing upstream hands one in pre-vouched. Then per service: its rules\n\
\t# that can be kernel rules (enforce only), and what goes to nfqwall.\n\
\tchain mangle-in {\n\
\t\ttype filter hook input priority mangle; policy accept;\n\
\t\tmeta mark set meta mark & 0xe1ffffff\n\
\t\tip daddr 192.0.2.53 udp sport 0-1023 udp dport 53 ct state untracked drop comment \"dns-udp/low-source-port\"\n\
\t\tip daddr 192.0.2.53 udp dport 53 ct state untracked meta length 4097-65535 drop comment \"dns-udp/oversized\"\n\
\t\tip daddr 192.0.2.53 udp dport 53 ct state untracked jump to-queue comment \"dns-udp\"\n\
\t\tip6 daddr 2001:db8::53 udp sport 0-1023 udp dport 53 ct state untracked drop comment \"dns-udp/low-source-port\"\n\
\t\tip6 daddr 2001:db8::53 udp dport 53 ct state untracked meta length 4097-65535 drop comment \"dns-udp/oversized\"\n\
\t\tip6 daddr 2001:db8::53 udp dport 53 ct state untracked jump to-queue comment \"dns-udp\"\n\
\t\tip daddr 192.0.2.53 tcp dport 53 ct state invalid,new jump to-queue comment \"dns-tcp\"\n\
\t\tip6 daddr 2001:db8::53 tcp dport 53 ct state invalid,new jump to-queue comment \"dns-tcp\"\n\
\t}\n\
\n\
\t# Write the conntrack state into the state bits, then queue to nfqwall; with\n\
\t# nobody listening, bypass accepts it here and it goes on to the host's rules.\n\
\t# Codes: invalid 1, new 2, established 3, related 4, untracked 5.\n\
\tchain to-queue {\n\
\t\tct state invalid meta mark set meta mark & 0xf1ffffff | 0x02000000\n\
\t\tct state new meta mark set meta mark & 0xf1ffffff | 0x04000000\n\
\t\tct state established meta mark set meta mark & 0xf1ffffff | 0x06000000\n\
\t\tct state related meta mark set meta mark & 0xf1ffffff | 0x08000000\n\
\t\tct state untracked meta mark set meta mark & 0xf1ffffff | 0x0a000000\n\
\t\tqueue num 0-3 bypass\n\
\t}\n\
\n\
\t# Packets still carrying state bits were queued and never judged: counted.\n\
\t# The accepts end this table's input only; see the header.\n\
\tchain filter-in {\n\
\t\ttype filter hook input priority filter - 1; policy accept;\n\
\t\tmeta mark & 0x0e000000 != 0 counter comment \"queued, not judged\"\n\
\t\tmeta mark & 0x10000000 == 0x10000000 ct state invalid accept comment \"vouched by nfqwall\"\n\
\t}\n\
}\n";

    #[test]
    fn the_default_rendering() {
        assert_eq!(render(&Config::builtin_default(), "d.toml"), DEFAULT);
    }

    #[test]
    fn the_busy_dns_rendering() {
        let c = cfg(include_str!("../../rules/examples/busy-dns.toml"));
        assert_eq!(render(&c, "b.toml"), BUSY_DNS);
    }

    /// A config with every form of kernel drop, fail-open accepts, SACK repair and
    /// marks other than the defaults.
    const EVERY_FORM: &str = r#"
[daemon]
mode = "enforce"
queues = "2-5"
vouch_mark = 0x100
state_mask = 0x7000
fail_open_invalid = "accept"

[[service]]
name = "web"
protocol = "tcp"
ports = [80, "8000-8080"]
default = "accept"
queue = ["invalid", "new"]
sack_repair = true

[[service.rule]]
name = "scanners"
action = "drop"
source = ["198.51.100.0/24", "2001:db8:bad::/48"]

[[service.rule]]
name = "synfin"
action = "drop"
tcp_flags = "syn,fin"
interface = "eth+"

[[service.rule]]
name = "null"
action = "drop"
tcp_flags = "!syn,!ack,!fin,!rst"
ct_state = ["invalid"]
length = "40"

[[service.rule]]
name = "lowport"
action = "drop"
source_ports = ["0-1023"]
interface = "lo"

[[service.rule]]
name = "rated"
action = "drop"
rate = "10/s"

[[service.rule]]
name = "after-the-rate"
action = "drop"
source = ["192.0.2.99/32"]

[[service.rule]]
name = "friends"
action = "accept"
source = ["192.0.2.0/28"]

[[service.rule]]
name = "not-friends"
action = "drop"
source = ["192.0.2.128/25"]

[[service.rule]]
name = "shadowed"
action = "drop"
source = ["192.0.2.8/32"]

[[service]]
name = "ping"
protocol = "icmp"
default = "accept"
queue = ["new", "established", "related", "invalid", "untracked"]
sample = "1/1000"

[[service.rule]]
name = "v6-only"
action = "drop"
source = ["2001:db8:1::/64"]

[[service]]
name = "dns"
protocol = "udp"
ports = [53]
addresses = ["192.0.2.53/32", "2001:db8::53/128"]
default = "accept"
stateless = true
queue = []

[[service.rule]]
name = "resolver"
action = "accept"
source = ["192.0.2.1/32"]

[[service.rule]]
name = "big"
action = "drop"
length = "1500-65535"

[[service]]
name = "watched"
protocol = "any"
addresses = ["192.0.2.1/32", "198.51.100.0/24"]
default = "accept"
queue = ["invalid"]
mode = "log-only"

[[service.rule]]
name = "not-in-log-only"
action = "drop"
source = ["192.0.2.7/32"]
"#;

    fn hex_of(token: &str) -> u32 {
        u32::from_str_radix(token.trim_start_matches("0x"), 16)
            .unwrap_or_else(|e| panic!("{token}: {e}"))
    }

    /// `V/M` of an iptables mark argument.
    fn value_mask(arg: &str) -> (u32, u32) {
        let (v, m) = arg.split_once('/').unwrap();
        (hex_of(v), hex_of(m))
    }

    /// What each mark rule of the iptables rulesets (both families) writes or tests:
    /// (purpose, value, mask).
    fn iptables_marks(c: &Config) -> std::collections::BTreeSet<(String, u32, u32)> {
        let mut out = std::collections::BTreeSet::new();
        for family in Family::ALL {
            let r = render_iptables(c, "x", family);
            for rule in OwnChain::ALL.iter().flat_map(|&ch| r.rules(ch)) {
                let t: Vec<&str> = rule.split(' ').collect();
                let after = |w: &str| t.iter().position(|x| *x == w).map(|i| t[i + 1]);
                let (purpose, arg) = if let Some(arg) = after("--set-xmark") {
                    match after("--ctstate") {
                        Some(s) => (format!("state {}", s.to_lowercase()), arg),
                        None => ("clear".to_string(), arg),
                    }
                } else if let Some(arg) = after("--mark") {
                    let purpose = if t.contains(&"!") {
                        "unjudged"
                    } else if rule.contains(VOUCH_COMMENT) {
                        "vouch"
                    } else {
                        "fail-open"
                    };
                    (purpose.to_string(), arg)
                } else {
                    continue;
                };
                let (v, m) = value_mask(arg);
                out.insert((purpose, v, m));
            }
        }
        out
    }

    /// The same from the nft text, with nft's `& M | V` (write) and `& M == V`
    /// (test) turned into iptables' value and mask.
    fn nft_marks(text: &str) -> std::collections::BTreeSet<(String, u32, u32)> {
        let mut out = std::collections::BTreeSet::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') || !line.contains("meta mark") {
                continue;
            }
            let t: Vec<&str> = line.split(' ').collect();
            let after = |w: &str| t.iter().position(|x| *x == w).map(|i| t[i + 1]);
            let and = hex_of(after("&").unwrap());
            let entry = if line.contains("meta mark set") {
                match (after("state"), after("|")) {
                    (Some(state), Some(v)) => (format!("state {state}"), hex_of(v), !and),
                    (None, None) => ("clear".to_string(), 0, !and),
                    other => panic!("{line}: {other:?}"),
                }
            } else if let Some(v) = after("!=") {
                assert_eq!(v, "0", "{line}");
                ("unjudged".to_string(), 0, and)
            } else {
                let v = hex_of(after("==").unwrap());
                let purpose = if line.contains(VOUCH_COMMENT) {
                    "vouch"
                } else {
                    "fail-open"
                };
                (purpose.to_string(), v, and)
            };
            out.insert(entry);
        }
        out
    }

    #[test]
    fn mark_values_equal_the_iptables_ones() {
        let configs = [
            Config::builtin_default(),
            cfg(include_str!("../../rules/examples/busy-dns.toml")),
            cfg(include_str!(
                "../../rules/examples/legacy-http-behind-cisco.toml"
            )),
            cfg(EVERY_FORM),
        ];
        for c in &configs {
            let want = iptables_marks(c);
            assert_eq!(nft_marks(&render(c, "x")), want);
            // Not vacuous: the clear, the five states and the counter at least.
            assert!(want.len() >= 7, "{want:?}");
        }
        let every = iptables_marks(&configs[3]);
        assert!(every.contains(&("vouch".to_string(), 0x100, 0x100)));
        assert!(every.contains(&("fail-open".to_string(), 0x1000, 0x7000)));
        assert!(every.contains(&("clear".to_string(), 0, 0x7100)));
        assert!(every.contains(&("state untracked".to_string(), 0x5000, 0x7000)));
    }

    /// The kernel rules of `mangle-in` (drops and returns, the rules' and the
    /// services' defaults) as (comment, verdict), whatever the family.
    fn nft_kernel_rules(text: &str) -> std::collections::BTreeSet<(String, String)> {
        text.lines()
            .map(str::trim)
            .filter_map(|l| {
                let (head, comment) = l.rsplit_once(" comment ")?;
                let verdict = ["drop", "return"]
                    .into_iter()
                    .find(|v| head.ends_with(&format!(" {v}")))?;
                Some((comment.trim_matches('"').to_string(), verdict.to_string()))
            })
            .collect()
    }

    /// Both renderings come from one [`kernel_plan`]: the same rules go into the
    /// kernel, with the same verdicts.
    #[test]
    fn kernel_rules_are_the_iptables_ones() {
        for c in [
            cfg(include_str!("../../rules/examples/busy-dns.toml")),
            cfg(EVERY_FORM),
        ] {
            let iptables: std::collections::BTreeSet<(String, String)> = Family::ALL
                .iter()
                .flat_map(|&f| {
                    render_iptables(&c, "x", f)
                        .rules(OwnChain::MangleIn)
                        .to_vec()
                })
                .filter_map(|r| {
                    let verdict = if r.ends_with(" -j DROP") {
                        "drop"
                    } else if r.ends_with(" -j RETURN") {
                        "return"
                    } else {
                        return None;
                    };
                    let c = r.split(" --comment ").nth(1).unwrap();
                    let c = c.rsplit_once(" -j ").unwrap().0.trim_matches('"');
                    Some((c.to_string(), verdict.to_string()))
                })
                .collect();
            assert!(iptables.iter().any(|(_, v)| v == "drop"));
            assert_eq!(nft_kernel_rules(&render(&c, "x")), iptables);
        }
        assert!(nft_kernel_rules(&render(&cfg(EVERY_FORM), "x"))
            .iter()
            .any(|(_, v)| v == "return"));
    }

    #[test]
    fn every_form_of_kernel_drop_in_nft_syntax() {
        let text = render(&cfg(EVERY_FORM), "x");
        let mangle: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("\tchain mangle-in"))
            .skip(2)
            .take_while(|l| *l != "\t}")
            .map(str::trim)
            .collect();
        assert_eq!(
            mangle,
            [
                "meta mark set meta mark & 0xffff8eff",
                "ip saddr 198.51.100.0/24 tcp dport { 80, 8000-8080 } ct state invalid,new drop comment \"web/scanners\"",
                "ip6 saddr 2001:db8:bad::/48 tcp dport { 80, 8000-8080 } ct state invalid,new drop comment \"web/scanners\"",
                "iifname \"eth*\" tcp dport { 80, 8000-8080 } tcp flags & (fin | syn) == fin | syn ct state invalid,new drop comment \"web/synfin\"",
                "tcp dport { 80, 8000-8080 } tcp flags & (fin | syn | rst | ack) == 0x0 ct state invalid meta length 40 drop comment \"web/null\"",
                "iifname \"lo\" tcp sport 0-1023 tcp dport { 80, 8000-8080 } ct state invalid,new drop comment \"web/lowport\"",
                // After a rate rule (a drop: it shadows nothing), and after an accept
                // whose sources are disjoint from its own; "shadowed" stays judged.
                "ip saddr 192.0.2.99 tcp dport { 80, 8000-8080 } ct state invalid,new drop comment \"web/after-the-rate\"",
                "ip saddr 192.0.2.128/25 tcp dport { 80, 8000-8080 } ct state invalid,new drop comment \"web/not-friends\"",
                "tcp dport { 80, 8000-8080 } ct state invalid,new jump to-queue comment \"web\"",
                "tcp dport { 80, 8000-8080 } tcp option sack exists jump to-queue comment \"web\"",
                // Kernel only: the drop, one packet in 1000 sampled, the default.
                "ip6 saddr 2001:db8:1::/64 meta l4proto ipv6-icmp ct state invalid,established,related,new,untracked drop comment \"ping/v6-only\"",
                "meta l4proto { icmp, ipv6-icmp } ct state invalid,established,related,new,untracked numgen inc mod 1000 0 jump to-queue comment \"ping\"",
                "meta l4proto { icmp, ipv6-icmp } ct state invalid,established,related,new,untracked return comment \"ping\"",
                // Kernel only, in rule order: an accept returns.
                "ip saddr 192.0.2.1 ip daddr 192.0.2.53 udp dport 53 ct state untracked return comment \"dns/resolver\"",
                "ip daddr 192.0.2.53 udp dport 53 ct state untracked meta length 1500-65535 drop comment \"dns/big\"",
                "ip daddr 192.0.2.53 udp dport 53 ct state untracked return comment \"dns\"",
                "ip6 daddr 2001:db8::53 udp dport 53 ct state untracked meta length 1500-65535 drop comment \"dns/big\"",
                "ip6 daddr 2001:db8::53 udp dport 53 ct state untracked return comment \"dns\"",
                "ip daddr { 192.0.2.1, 198.51.100.0/24 } ct state invalid jump to-queue comment \"watched\"",
            ]
        );
        assert!(text.contains("\t\tqueue num 2-5 bypass\n"));
        assert!(text.contains(
            "\t\tmeta mark & 0x00000100 == 0x00000100 ct state invalid accept comment \"vouched by nfqwall\"\n\
             \t\ttcp dport { 80, 8000-8080 } meta mark & 0x00007000 == 0x00001000 accept comment \"web\"\n\
             \t}\n"
        ));
        assert!(
            text.contains("#     meta mark & 0x00000100 == 0x00000100 ct state invalid accept\n")
        );
    }

    #[test]
    fn sets_for_several_ports_and_the_sack_rule() {
        let c = cfg(include_str!(
            "../../rules/examples/legacy-http-behind-cisco.toml"
        ));
        let text = render(&c, "x");
        assert!(text.contains(
            "\t\tip daddr 192.0.2.10 tcp dport { 80, 443, 8000-8080 } ct state invalid,new jump to-queue comment \"legacy-http\"\n\
             \t\tip daddr 192.0.2.10 tcp dport { 80, 443, 8000-8080 } tcp option sack exists jump to-queue comment \"legacy-http\"\n\
             \t\tip6 daddr 2001:db8::10 tcp dport { 80, 443, 8000-8080 } ct state invalid,new jump to-queue comment \"legacy-http\"\n\
             \t\tip6 daddr 2001:db8::10 tcp dport { 80, 443, 8000-8080 } tcp option sack exists jump to-queue comment \"legacy-http\"\n"
        ));
        // Log-only: no kernel drop, no vouch, no operator line in the header.
        assert!(!text.contains(" drop comment "));
        assert!(!text.contains("ct state invalid accept"));
        assert!(!text.contains("notrack"));
    }
}
