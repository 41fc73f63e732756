//! Config loading: the shipped files parse, and bad inputs fail with exact messages.

use std::path::Path;

use nfqwall::config::{
    Config, ConfigError, LogTarget, PortRange, Problem, Protocol, RateLimit, RatePeriod, RuleAction,
};
use nfqwall::engine::meta::CtState;
use nfqwall::engine::policy::{Action, Mode, Policy};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The error message for `text`, which must fail.
fn error(text: &str) -> String {
    match Config::from_toml_str(text, "rules/x.toml") {
        Ok(c) => panic!("expected an error, parsed {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// A tcp service "web" followed by `rest`.
fn web(rest: &str) -> String {
    format!("[[service]]\nname = \"web\"\nprotocol = \"tcp\"\n{rest}")
}

#[test]
fn default_file_is_the_builtin_default() {
    let on_disk = std::fs::read_to_string(repo("rules/default.toml")).unwrap();
    assert_eq!(on_disk, Config::default_toml());
    let loaded = Config::load(&repo("rules/default.toml")).unwrap();
    assert_eq!(loaded, Config::builtin_default());
}

#[test]
fn builtin_default_is_as_documented() {
    let c = Config::builtin_default();
    assert_eq!(c.daemon.mode, Mode::LogOnly);
    assert_eq!((c.daemon.queues.first, c.daemon.queues.last), (0, 0));
    assert_eq!(c.services.len(), 1);
    let s = &c.services[0];
    assert_eq!((s.name.as_str(), s.protocol), ("all-tcp", Protocol::Tcp));
    assert!(s.ports.is_empty() && s.addresses.is_empty() && s.rules.is_empty());
    assert_eq!(s.queue, vec![CtState::Invalid, CtState::New]);
    assert_eq!((s.mode, s.default), (None, Action::Accept));
}

#[test]
fn empty_file_means_defaults_with_no_services() {
    let c = Config::from_toml_str("", "empty.toml").unwrap();
    assert_eq!(c.daemon, Config::builtin_default().daemon);
    assert!(c.services.is_empty());
}

#[test]
fn legacy_http_example_parses() {
    let c = Config::load(&repo("rules/examples/legacy-http-behind-cisco.toml")).unwrap();
    let s = &c.services[0];
    assert_eq!(s.name, "legacy-http");
    assert!(s.sack_repair);
    assert_eq!(
        s.ports,
        vec![
            PortRange {
                first: 80,
                last: 80
            },
            PortRange {
                first: 443,
                last: 443
            },
            PortRange {
                first: 8000,
                last: 8080
            }
        ]
    );
    assert_eq!(s.rules.len(), 4);
    assert_eq!(s.rules[0].action, RuleAction::Log);
    assert_eq!(
        s.rules[3].rate,
        Some(RateLimit {
            count: 50,
            period: RatePeriod::Second,
            burst: 100
        })
    );
    assert_eq!(
        c.daemon.log,
        LogTarget::File("/var/log/nfqwall/events.jsonl".into())
    );
    Policy::compile(&c);
}

#[test]
fn busy_dns_example_parses() {
    let c = Config::load(&repo("rules/examples/busy-dns.toml")).unwrap();
    assert_eq!(c.daemon.mode, Mode::Enforce);
    assert_eq!(c.services.len(), 2);
    assert!(c.services[0].stateless);
    assert_eq!(c.services[0].queue, vec![CtState::Untracked]);
    // 600/min has a per-second rate of 10: the default burst.
    assert_eq!(
        c.services[1].rules[0].rate,
        Some(RateLimit {
            count: 600,
            period: RatePeriod::Minute,
            burst: 10
        })
    );
    Policy::compile(&c);
}

#[test]
fn stateless_service_queues_untracked_by_default() {
    let c = Config::from_toml_str(
        "[[service]]\nname = \"dns\"\nprotocol = \"udp\"\nstateless = true\n",
        "x",
    )
    .unwrap();
    assert_eq!(c.services[0].queue, vec![CtState::Untracked]);
}

#[test]
fn missing_file() {
    let e = Config::load(Path::new("/nonexistent/nfqwall.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert_eq!(
        e.to_string(),
        "/nonexistent/nfqwall.toml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn bad_cidr() {
    let text = web(
        "[[service]]\nname = \"x\"\nprotocol = \"tcp\"\n[[service.rule]]\nname = \"r\"\n\
         action = \"drop\"\nsource = [\"198.51.100.1/32\", \"192.0.2.300/24\"]\n",
    );
    assert_eq!(
        error(&text),
        "rules/x.toml:10:30: service[1].rule[0].source[1]: expected an IPv4 or IPv6 CIDR \
         such as 192.0.2.0/24, found \"192.0.2.300/24\""
    );
}

#[test]
fn cidr_with_host_bits() {
    assert_eq!(
        error(&web("addresses = [\"2001:db8::10/64\"]\n")),
        "rules/x.toml:4:14: service[0].addresses[0]: \"2001:db8::10/64\" has host bits set \
         after the prefix; write 2001:db8::/64 for the network or a /32 or /128 for one host"
    );
}

#[test]
fn unknown_key() {
    assert_eq!(
        error("[daemon]\nmode = \"enforce\"\nqueus = \"0-3\"\n"),
        "rules/x.toml:3:1: daemon.queus: unknown key \"queus\"; expected one of: mode, \
         queues, queue_maxlen, fail_open, log, log_rate_per_reason, summary_interval, \
         vouch_mark, state_mask, fail_open_invalid, shedding, metrics, log_format, journald, \
         feed_group, feed_size, feed_threshold, busy_poll_us, busy_poll"
    );
}

#[test]
fn metrics_log_format_and_journald() {
    use nfqwall::config::{Journald, LogFormat};
    let c = Config::from_toml_str(
        "[daemon]\nmetrics = \"127.0.0.1:9477\"\nlog_format = \"eve\"\njournald = true\n",
        "x",
    )
    .unwrap();
    assert_eq!(c.daemon.metrics, Some("127.0.0.1:9477".parse().unwrap()));
    assert_eq!(c.daemon.log_format, LogFormat::Eve);
    assert_eq!(c.daemon.journald, Journald::On);
    // Any address the operator writes is taken, all interfaces included.
    let c = Config::from_toml_str("[daemon]\nmetrics = \"[::]:9477\"\njournald = false\n", "x")
        .unwrap();
    assert_eq!(c.daemon.metrics, Some("[::]:9477".parse().unwrap()));
    assert_eq!(c.daemon.journald, Journald::Off);
    assert_eq!(Config::builtin_default().daemon.metrics, None);
    assert_eq!(
        error("[daemon]\nmetrics = \"9477\"\n"),
        "rules/x.toml:2:11: daemon.metrics: expected an address and port such as \
         \"127.0.0.1:9477\" or \"[::1]:9477\" (port 1 to 65535), found \"9477\""
    );
    assert_eq!(
        error("[daemon]\nmetrics = \"127.0.0.1:0\"\n"),
        "rules/x.toml:2:11: daemon.metrics: expected an address and port such as \
         \"127.0.0.1:9477\" or \"[::1]:9477\" (port 1 to 65535), found \"127.0.0.1:0\""
    );
    assert_eq!(
        error("[daemon]\nlog_format = \"json\"\n"),
        "rules/x.toml:2:14: daemon.log_format: expected \"nfqwall\" or \"eve\", found \"json\""
    );
    assert_eq!(
        error("[daemon]\njournald = \"yes\"\n"),
        "rules/x.toml:2:12: daemon.journald: expected true, false or \"auto\", found \"yes\""
    );
}

#[test]
fn unknown_key_in_rule_and_inline_table() {
    assert_eq!(
        error(&web(
            "[[service.rule]]\nname = \"r\"\naction = \"drop\"\n  src = [\"::/0\"]\n"
        )),
        "rules/x.toml:7:3: service[0].rule[0].src: unknown key \"src\"; expected one of: \
         name, action, source, destination, source_ports, destination_ports, tcp_flags, \
         ct_state, interface, length, rate, burst, mark"
    );
    assert_eq!(
        error("[engine]\ntimeouts = { syn = 30, establshed = 7200 }\n"),
        "rules/x.toml:2:24: engine.timeouts.establshed: unknown key \"establshed\"; expected \
         one of: syn, established, closing, closed, udp, other"
    );
}

#[test]
fn bad_port_range() {
    assert_eq!(
        error(&web("ports = [80, \"9000-8000\"]\n")),
        "rules/x.toml:4:14: service[0].ports[1]: range start 9000 is greater than its end \
         8000 (write the lower bound first)"
    );
    assert_eq!(
        error(&web("ports = [80, 70000]\n")),
        "rules/x.toml:4:14: service[0].ports[1]: expected a port from 0 to 65535 or a range \
         such as \"8000-8080\", found 70000"
    );
    assert_eq!(
        error(&web("ports = \"80-\"\n")),
        "rules/x.toml:4:9: service[0].ports: expected a port from 0 to 65535 or a range such \
         as \"8000-8080\", found \"80-\""
    );
    assert_eq!(
        error("[daemon]\nqueues = \"3-1\"\n"),
        "rules/x.toml:2:10: daemon.queues: range start 3 is greater than its end 1 (write \
         the lower bound first)"
    );
}

#[test]
fn bad_tcp_flag() {
    let rule = "[[service.rule]]\nname = \"r\"\naction = \"drop\"\n";
    assert_eq!(
        error(&web(&format!("{rule}tcp_flags = \"syn,!ackk\"\n"))),
        "rules/x.toml:7:13: service[0].rule[0].tcp_flags: unknown TCP flag \"ackk\"; \
         expected fin, syn, rst, psh, ack, urg, ece or cwr, optionally prefixed with \"!\" \
         (must be clear)"
    );
    assert_eq!(
        error(&web(&format!("{rule}tcp_flags = \"syn,!syn\"\n"))),
        "rules/x.toml:7:13: service[0].rule[0].tcp_flags: TCP flag \"syn\" is named more \
         than once"
    );
    assert_eq!(
        error(&web(&format!("{rule}tcp_flags = \"syn,,ack\"\n"))),
        "rules/x.toml:7:13: service[0].rule[0].tcp_flags: expected a comma list of TCP \
         flags such as \"syn,!ack\", found \"syn,,ack\""
    );
}

#[test]
fn wrong_type() {
    assert_eq!(
        error("[daemon]\nqueue_maxlen = \"big\"\n"),
        "rules/x.toml:2:16: daemon.queue_maxlen: expected an integer from 1 to 4294967295, \
         found \"big\""
    );
    assert_eq!(
        error("[daemon]\nfail_open = \"yes\"\n"),
        "rules/x.toml:2:13: daemon.fail_open: expected true or false, found \"yes\""
    );
    assert_eq!(
        error("daemon = 3\n"),
        "rules/x.toml:1:10: daemon: expected a table, found 3"
    );
    assert_eq!(
        error("[service]\nname = \"web\"\n"),
        "rules/x.toml:1:1: service: expected an array of tables such as [[service]], found \
         a table"
    );
    assert_eq!(
        error(&web("[service.rule]\nname = \"a\"\n")),
        "rules/x.toml:4:1: service[0].rule: expected an array of tables such as \
         [[service.rule]], found a table"
    );
    assert_eq!(
        error(&web("mode = \"enforcing\"\n")),
        "rules/x.toml:4:8: service[0].mode: expected \"enforce\" or \"log-only\", found \
         \"enforcing\""
    );
}

#[test]
fn duplicate_names() {
    assert_eq!(
        error(&(web("") + "\n[[service]]\nname = \"web\"\nprotocol = \"udp\"\n")),
        "rules/x.toml:6:8: service[1].name: duplicate service name \"web\" (first used on \
         line 2)"
    );
    assert_eq!(
        error(&web(
            "rule = [{ name = \"a\", action = \"drop\" },\n        { name = \"a\", action = \"log\" }]\n"
        )),
        "rules/x.toml:5:18: service[0].rule[1].name: duplicate rule name \"a\" (first used \
         on line 4)"
    );
    // The same rule name in two services is fine.
    let ok = web("[[service.rule]]\nname = \"a\"\naction = \"drop\"\n")
        + "[[service]]\nname = \"b\"\nprotocol = \"udp\"\n[[service.rule]]\nname = \"a\"\naction = \"drop\"\n";
    assert!(Config::from_toml_str(&ok, "x").is_ok());
}

#[test]
fn missing_required_key() {
    assert_eq!(
        error("[daemon]\n\n[[service]]\nprotocol = \"icmp\"\n"),
        "rules/x.toml:3:1: service[0]: missing required key \"name\""
    );
    assert_eq!(
        error(&web("[[service.rule]]\nname = \"r\"\n")),
        "rules/x.toml:4:1: service[0].rule[0]: missing required key \"action\""
    );
}

#[test]
fn ports_on_a_protocol_without_ports() {
    let text = "[[service]]\nname = \"ping\"\nprotocol = \"icmp\"\n[[service.rule]]\n\
                name = \"a\"\naction = \"drop\"\ndestination_ports = [80]\n";
    assert_eq!(
        error(text),
        "rules/x.toml:7:21: service[0].rule[0].destination_ports: destination_ports needs a \
         service with protocol \"tcp\" or \"udp\", but this service's protocol is \"icmp\""
    );
    assert_eq!(
        error("[[service]]\nname = \"all\"\nprotocol = \"any\"\nports = [53]\n"),
        "rules/x.toml:4:9: service[0].ports: ports needs a service with protocol \"tcp\" or \
         \"udp\", but this service's protocol is \"any\""
    );
    let text = "[[service]]\nname = \"dns\"\nprotocol = \"udp\"\n[[service.rule]]\n\
                name = \"a\"\naction = \"drop\"\ntcp_flags = \"syn\"\n";
    assert_eq!(
        error(text),
        "rules/x.toml:7:13: service[0].rule[0].tcp_flags: tcp_flags needs a service with \
         protocol \"tcp\", but this service's protocol is \"udp\""
    );
}

#[test]
fn rate_checks() {
    let rule = "[[service.rule]]\nname = \"r\"\naction = \"drop\"\n";
    assert_eq!(
        error(&web(&format!("{rule}rate = \"0/s\"\n"))),
        "rules/x.toml:7:8: service[0].rule[0].rate: expected a rate such as \"50/s\" or \
         \"600/min\" (at least 1 per s, min or hour), found \"0/s\""
    );
    assert_eq!(
        error(&web(&format!("{rule}rate = \"50/day\"\n"))),
        "rules/x.toml:7:8: service[0].rule[0].rate: expected a rate such as \"50/s\" or \
         \"600/min\" (at least 1 per s, min or hour), found \"50/day\""
    );
    assert_eq!(
        error(&web(&format!("{rule}burst = 10\n"))),
        "rules/x.toml:7:9: service[0].rule[0].burst: has no effect without \"rate\" in the \
         same table"
    );
    assert_eq!(
        error(&web(&format!("{rule}rate = \"5/s\"\nburst = 0\n"))),
        "rules/x.toml:8:9: service[0].rule[0].burst: expected an integer from 1 to \
         4294967295, found 0"
    );
}

#[test]
fn track_defaults_and_errors() {
    use nfqwall::config::Track;
    let c = Config::from_toml_str(
        &(web("")
            + "[[service]]\nname = \"dns\"\nprotocol = \"udp\"\nstateless = true\n\
               [[service]]\nname = \"ssh\"\nprotocol = \"tcp\"\nqueue = [\"new\"]\n\
               [[service]]\nname = \"x\"\nprotocol = \"any\"\ntrack = \"none\"\n"),
        "t.toml",
    )
    .unwrap();
    let tracks: Vec<Track> = c.services.iter().map(|s| s.track).collect();
    assert_eq!(
        tracks,
        [Track::Shadow, Track::None, Track::None, Track::None]
    );
    assert_eq!(
        error(&web("track = \"full\"\n")),
        "rules/x.toml:4:9: service[0].track: expected \"shadow\" or \"none\", found \"full\""
    );
    assert_eq!(
        error("[[service]]\nname = \"dns\"\nprotocol = \"udp\"\nstateless = true\ntrack = \"shadow\"\n"),
        "rules/x.toml:5:9: service[0].track: expected \"none\" (a stateless service has no \
         conntrack state: nothing is ESTABLISHED to feed), found \"shadow\""
    );
    assert_eq!(
        error("[[service]]\nname = \"dns\"\nprotocol = \"udp\"\ntrack = \"shadow\"\n"),
        "rules/x.toml:4:9: service[0].track: track = \"shadow\" needs a service with protocol \
         \"tcp\" or \"any\", but this service's protocol is \"udp\""
    );
    assert_eq!(
        error("[daemon]\nfeed_size = 20\n"),
        "rules/x.toml:2:13: daemon.feed_size: expected a copy range in bytes from 64 to 65535, \
         found 20"
    );
    assert_eq!(
        error("[daemon]\nfeed_threshold = 0\n"),
        "rules/x.toml:2:18: daemon.feed_threshold: expected a batch size in packets from 1 \
         to 1024, found 0"
    );
    assert_eq!(
        error("[daemon]\nbusy_poll_us = 5000\n"),
        "rules/x.toml:2:16: daemon.busy_poll_us: expected microseconds from 0 to 1000, found 5000"
    );
    assert_eq!(
        error("[daemon]\nbusy_poll = \"sometimes\"\n"),
        "rules/x.toml:2:13: daemon.busy_poll: expected \"adaptive\" or \"always\", found \"sometimes\""
    );
}

#[test]
fn stateless_service_cannot_queue_tracked_states() {
    let text = "[[service]]\nname = \"dns\"\nprotocol = \"udp\"\nstateless = true\n\
                queue = [\"untracked\", \"new\"]\n";
    assert_eq!(
        error(text),
        "rules/x.toml:5:23: service[0].queue[1]: a stateless service's packets are all \
         untracked, so queueing \"new\" would send nothing to nfqwall; use [\"untracked\"]"
    );
}

#[test]
fn bad_interface_and_length_and_state() {
    let rule = "[[service.rule]]\nname = \"r\"\naction = \"drop\"\n";
    assert_eq!(
        error(&web(&format!("{rule}interface = \"a-very-long-name0\"\n"))),
        "rules/x.toml:7:13: service[0].rule[0].interface: expected an interface name of 1 to \
         15 characters, with a trailing \"+\" for a prefix, such as \"eth0\" or \"veth+\", \
         found \"a-very-long-name0\""
    );
    assert_eq!(
        error(&web(&format!("{rule}length = \"1500-0\"\n"))),
        "rules/x.toml:7:10: service[0].rule[0].length: range start 1500 is greater than its \
         end 0 (write the lower bound first)"
    );
    assert_eq!(
        error(&web(&format!("{rule}ct_state = [\"new\", \"NEW\"]\n"))),
        "rules/x.toml:7:20: service[0].rule[0].ct_state[1]: expected a conntrack state: \
         \"new\", \"invalid\", \"untracked\", \"established\" or \"related\", found \"NEW\""
    );
}

#[test]
fn bad_names() {
    assert_eq!(
        error("[[service]]\nname = \"my web\"\nprotocol = \"tcp\"\n"),
        "rules/x.toml:2:8: service[0].name: expected a name of 1 to 32 letters, digits, \
         \"-\", \"_\" or \".\", found \"my web\""
    );
}

#[test]
fn syntax_errors() {
    assert_eq!(
        error("[daemon\nmode = \"enforce\"\n"),
        "rules/x.toml:1:8: invalid TOML: invalid table header; expected `.`, `]`"
    );
    assert_eq!(
        error("[daemon]\nmode = \"enforce\"\nmode = \"log-only\"\n"),
        "rules/x.toml:3:1: invalid TOML: duplicate key `mode` in table `daemon`"
    );
}

#[test]
fn errors_are_typed() {
    let e = Config::from_toml_str("[daemon]\nqueus = 1\n", "x").unwrap_err();
    assert_eq!(e.line(), Some(2));
    assert!(matches!(
        e.problem(),
        Some(Problem::UnknownKey { key, .. }) if key == "queus"
    ));
}

#[test]
fn columns_count_characters_not_bytes() {
    // "é" is two bytes in UTF-8 but one column.
    assert_eq!(
        error("# é\n[daemon] # é\nmode = 1\n"),
        "rules/x.toml:3:8: daemon.mode: expected \"enforce\" or \"log-only\", found 1"
    );
    assert_eq!(
        error("[daemon]\nlog = \"é\" ; \n"),
        "rules/x.toml:2:11: invalid TOML: expected newline, `#`"
    );
}

#[test]
fn marks_must_be_nfqwalls_own_bits() {
    assert_eq!(
        error("[daemon]\nvouch_mark = 0x3\n"),
        "rules/x.toml:2:14: daemon.vouch_mark: expected a mark with exactly one bit set, \
         outside daemon.state_mask, such as 0x10000000, found 3"
    );
    assert_eq!(
        error("[daemon]\nstate_mask = 0x0b000000\n"),
        "rules/x.toml:2:14: daemon.state_mask: expected a mask of exactly three adjacent \
         bits, outside daemon.vouch_mark, such as 0x0e000000, found 184549376"
    );
    assert_eq!(
        error(&web(
            "[[service.rule]]\nname = \"m\"\naction = \"accept\"\nmark = 0x10000000\n"
        )),
        "rules/x.toml:7:8: service[0].rule[0].mark: expected a mark with none of the bits of \
         daemon.vouch_mark and daemon.state_mask (nfqwall's own), found 268435456"
    );
    assert_eq!(
        error("[daemon]\nfail_open_invalid = \"drop\"\n"),
        "rules/x.toml:2:21: daemon.fail_open_invalid: expected \"host\" or \"accept\", \
         found \"drop\""
    );
    assert_eq!(
        error("[daemon]\nshedding = \"sometimes\"\n"),
        "rules/x.toml:2:12: daemon.shedding: expected \"auto\", \"always\" or \"never\", \
         found \"sometimes\""
    );
}

/// Shedding follows fail-open by default: only where the kernel would drop.
#[test]
fn shedding_is_auto_by_default_and_follows_fail_open() {
    use nfqwall::config::SheddingPolicy;
    let d = Config::builtin_default().daemon;
    assert_eq!(d.shedding, SheddingPolicy::Auto);
    assert!(!d.shedding.sheds(true));
    assert!(d.shedding.sheds(false));
    for (text, policy, with_fail_open) in [
        ("always", SheddingPolicy::Always, true),
        ("never", SheddingPolicy::Never, false),
    ] {
        let c = Config::from_toml_str(&format!("[daemon]\nshedding = \"{text}\"\n"), "x").unwrap();
        assert_eq!(c.daemon.shedding, policy);
        assert_eq!(c.daemon.shedding.sheds(true), with_fail_open);
    }
}

#[test]
fn handback_is_a_tcp_service_option_without_repair() {
    let c = Config::from_toml_str(&web("handback = true\n"), "x").unwrap();
    assert!(c.services[0].handback && !c.services[0].sack_repair);
    assert!(!Config::from_toml_str(&web(""), "x").unwrap().services[0].handback);
    assert_eq!(
        error(&web("handback = \"yes\"\n")),
        "rules/x.toml:4:12: service[0].handback: expected true or false, found \"yes\""
    );
    assert_eq!(
        error("[[service]]\nname = \"dns\"\nprotocol = \"udp\"\nhandback = true\n"),
        "rules/x.toml:4:12: service[0].handback: handback needs a service with protocol \
         \"tcp\", but this service's protocol is \"udp\""
    );
    assert_eq!(
        error(&web("sack_repair = true\nhandback = true\n")),
        "rules/x.toml:5:12: service[0].handback: cannot be true together with \
         \"sack_repair\" = true: a repaired flow must stay with nfqwall, which rewrites its \
         SACK blocks; handback is for services that do not repair"
    );
    assert_eq!(
        error(&web("stateless = true\nhandback = true\n")),
        "rules/x.toml:5:12: service[0].handback: cannot be true together with \
         \"stateless\" = true: a stateless service has no conntrack entry to hand back"
    );
    // Off is always fine.
    assert!(Config::from_toml_str(&web("sack_repair = true\nhandback = false\n"), "x").is_ok());
}

#[test]
fn busy_poll_is_adaptive_unless_told_always() {
    use nfqwall::config::BusyPoll;
    let c = Config::builtin_default();
    assert_eq!(c.daemon.busy_poll, BusyPoll::Adaptive);
    let c = Config::from_toml_str("[daemon]\nbusy_poll_us = 50\nbusy_poll = \"always\"\n", "x")
        .unwrap();
    assert_eq!(
        (c.daemon.busy_poll_us, c.daemon.busy_poll),
        (50, BusyPoll::Always)
    );
}
