//! `nfqwall run` on the wire: real clients and servers in network namespaces, the
//! daemon bound to NFQUEUE in the server's namespace, iptables rules installed by the
//! test (`--no-rules`). Root only; each test has its own namespaces, files and socket.

mod live;
mod support;

use live::*;
use serde_json::Value;
use support::wait_until;

#[test]
fn live_log_only_traffic_flows_and_events_and_stats_match() {
    if !support::require_root("live_log_only_traffic_flows_and_events_and_stats_match") {
        return;
    }
    let mut w = Live::new("lo", &queue_tcp(80));
    let rules = format!(
        "[[service.rule]]\nname = \"watch-1\"\naction = \"log\"\nsource = [\"192.0.2.1/32\"]\n{}",
        block_rule("block-3", 3)
    );
    w.write_config(&web_config("log-only", "", &rules));
    w.http_server();
    w.start_daemon();
    for _ in 0..10 {
        assert!(w.curl("192.0.2.1", &url(false, 80), 5));
    }
    for _ in 0..5 {
        assert!(
            w.curl("192.0.2.3", &url(false, 80), 5),
            "log-only must not drop"
        );
    }
    // One SYN per connection is queued (NEW); the rest of each flow is ESTABLISHED
    // and never leaves the kernel.
    assert!(
        wait_until(5, || w.stats()["packets"] == 15),
        "{}",
        w.stats()
    );
    let s = w.stats();
    assert_eq!(s["accepted"], 15, "{s}");
    assert_eq!(s["dropped"], 0, "{s}");
    assert_eq!(s["would_drop"], 5, "{s}");
    assert_eq!(s["by_reason"]["rule_drop"], 5, "{s}");
    assert_eq!(s["kernel"][0]["id_sequence"], 15, "{s}");
    assert_eq!(s["queues"][0]["packets"], 15, "{s}");
    assert_eq!(s["flows"], 15, "{s}");

    let ok = wait_until(5, || w.events_where(|e| e["event"] == "packet").len() == 15);
    assert!(ok, "{:#?}", w.events());
    let watched = w.events_where(|e| e["log_rule"] == "watch-1");
    assert_eq!(watched.len(), 10);
    for e in &watched {
        assert_eq!(e["verdict"], "accept");
        assert_eq!(e["src"], "192.0.2.1");
        assert_eq!(e["dport"], 80);
        assert_eq!(e["ct_state"], "new");
        assert_eq!(e["in_iface"], "veth-s");
        assert_eq!(e["service"], "web");
    }
    let would = w.events_where(|e| e["would_drop"] == true);
    assert_eq!(would.len(), 5);
    for e in &would {
        assert_eq!(e["verdict"], "accept");
        assert_eq!(e["reason"], "rule_drop");
        assert_eq!(e["rule"], "block-3");
        assert_eq!(e["mode"], "log-only");
        assert_eq!(e["src"], "192.0.2.3");
    }
    // The table form shows the same numbers.
    let table = support::run(std::process::Command::new(BIN).args([
        "stats",
        "--socket",
        &w.path("stats.sock"),
    ]));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["would_drop", "5"]),
        "{table}"
    );

    // SIGTERM: clean exit, final `stop` event with the totals, socket removed.
    w.daemon().signal("TERM");
    let out = w.daemon.as_mut().unwrap().wait_output();
    assert!(out.status.success(), "{out:?}");
    let stop = w.events_where(|e| e["event"] == "stop");
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0]["packets"], 15);
    assert!(!std::path::Path::new(&w.path("stats.sock")).exists());
    // Unbound: with --queue-bypass traffic still flows.
    assert!(w.curl("192.0.2.1", &url(false, 80), 5));
}

/// In enforce, a rule blocking one client address stops its connections while the
/// other client succeeds.
fn enforce_blocks_one_client(v6: bool, prefix: &str) {
    let mut w = Live::new(prefix, &queue_tcp(80));
    w.write_config(&web_config("enforce", "", &block_rule("block-3", 3)));
    w.http_server();
    w.start_daemon();
    let u = url(v6, 80);
    assert!(w.curl(&client(v6, 1), &u, 5));
    assert!(!w.curl(&client(v6, 3), &u, 2), "blocked client connected");
    assert!(w.curl(&client(v6, 4), &u, 5));
    assert!(w.curl(&client(v6, 1), &u, 5));
    let drops = w.events_where(|e| e["event"] == "packet" && e["verdict"] == "drop");
    assert!(!drops.is_empty());
    for e in &drops {
        assert_eq!(e["src"], client(v6, 3).as_str());
        assert_eq!(e["dst"], server(v6));
        assert_eq!(e["reason"], "rule_drop");
        assert_eq!(e["rule"], "block-3");
        assert_eq!(e["mode"], "enforce");
        assert_eq!(e["would_drop"], false);
    }
    let s = w.stats();
    // Every SYN the blocked client sent (first try plus retransmissions) was dropped.
    assert_eq!(s["dropped"].as_u64().unwrap(), drops.len() as u64, "{s}");
    assert_eq!(s["accepted"], 3, "{s}");
}

#[test]
fn live_enforce_blocks_one_client_v4() {
    if support::require_root("live_enforce_blocks_one_client_v4") {
        enforce_blocks_one_client(false, "e4");
    }
}

#[test]
fn live_enforce_blocks_one_client_v6() {
    if support::require_root("live_enforce_blocks_one_client_v6") {
        enforce_blocks_one_client(true, "e6");
    }
}

/// SIGKILL during a load loop: the kernel bypasses the queue once nobody listens;
/// no connection fails.
#[test]
fn live_sigkill_during_load_no_failed_connection() {
    if !support::require_root("live_sigkill_during_load_no_failed_connection") {
        return;
    }
    let mut w = Live::new("kill", &queue_tcp(80));
    w.write_config(&web_config("enforce", "", &block_rule("block-3", 3)));
    w.http_server();
    w.start_daemon();
    let load = w.load_loop("192.0.2.1", &url(false, 80), 150);
    assert!(wait_until(10, || w.stats()["packets"].as_u64().unwrap() >= 20));
    w.daemon().signal("KILL");
    let (ok, failed) = loop_result(load);
    assert_eq!((ok, failed), (150, 0));
    // After the kill the loop kept going uninspected: the kernel counted more
    // packets than the daemon saw.
    assert!(
        w.curl("192.0.2.3", &url(false, 80), 5),
        "bypass accepts all"
    );
}

/// SIGSTOP until the kernel queue is full: traffic keeps flowing (fail-open); after
/// SIGCONT the daemon inspects again.
#[test]
fn live_sigstop_fails_open_then_resumes_on_sigcont() {
    if !support::require_root("live_sigstop_fails_open_then_resumes_on_sigcont") {
        return;
    }
    let rules = format!(
        "{} && iptables -t mangle -A INPUT -p udp --dport 9 -j NFQ-T",
        queue_tcp(80)
    );
    let mut w = Live::new("stop", &rules);
    w.write_config(&web_config(
        "log-only",
        "queue_maxlen = 8",
        "[[service.rule]]\nname = \"watch\"\naction = \"log\"\n",
    ));
    w.http_server();
    w.start_daemon();
    assert!(w.curl("192.0.2.1", &url(false, 80), 5));
    w.daemon().signal("STOP");
    // Fill the queue with datagrams nobody will judge while stopped.
    w.pair
        .client
        .sh("bash -c 'for i in $(seq 1 20); do echo x > /dev/udp/192.0.2.2/9; done'");
    assert!(
        wait_until(5, || w.kernel_queue().map(|k| k.0) == Some(8)),
        "queue did not fill: {:?}",
        w.kernel_queue()
    );
    // Full queue + fail-open: new connections are accepted by the kernel itself.
    for _ in 0..5 {
        assert!(w.curl("192.0.2.1", &url(false, 80), 5), "fail-open");
    }
    let (_, seq_stopped) = w.kernel_queue().unwrap();
    w.daemon().signal("CONT");
    assert!(wait_until(5, || w.kernel_queue().map(|k| k.0) == Some(0)));
    let before = w.stats()["packets"].as_u64().unwrap();
    for _ in 0..3 {
        assert!(w.curl("192.0.2.1", &url(false, 80), 5));
    }
    // Inspecting again: the three new SYNs went through the daemon.
    assert!(wait_until(5, || w.stats()["packets"].as_u64().unwrap() == before + 3));
    let (_, seq_after) = w.kernel_queue().unwrap();
    assert_eq!(seq_after, seq_stopped + 3);
    // The 8 datagrams held while stopped got their verdict too.
    let s = w.stats();
    assert_eq!(s["packets"].as_u64().unwrap(), 1 + 8 + 3, "{s}");
}

/// SIGHUP with a changed rule during a load loop changes the rule's effect with no
/// failed connection; SIGHUP with a broken config keeps the old rules.
#[test]
fn live_sighup_reloads_rules_without_failed_connection() {
    if !support::require_root("live_sighup_reloads_rules_without_failed_connection") {
        return;
    }
    let mut w = Live::new("hup", &queue_tcp(80));
    w.write_config(&web_config("enforce", "", &block_rule("block", 3)));
    w.http_server();
    w.start_daemon();
    let u = url(false, 80);
    assert!(!w.curl("192.0.2.3", &u, 2));
    assert!(w.curl("192.0.2.4", &u, 5));

    let load = w.load_loop("192.0.2.1", &u, 120);
    assert!(wait_until(10, || w.stats()["packets"].as_u64().unwrap() >= 20));
    w.write_config(&web_config("enforce", "", &block_rule("block", 4)));
    w.daemon().signal("HUP");
    assert!(wait_until(5, || !w
        .events_where(|e| e["event"] == "reload")
        .is_empty()));
    assert!(
        w.curl("192.0.2.3", &u, 5),
        "rule change did not take effect"
    );
    assert!(!w.curl("192.0.2.4", &u, 2), "new rule not applied");
    let (ok, failed) = loop_result(load);
    assert_eq!((ok, failed), (120, 0));

    // A broken config: refused, logged, the running rules stay.
    std::fs::write(w.path("nfqwall.toml"), "[daemon]\nmode = \"sometimes\"\n").unwrap();
    w.daemon().signal("HUP");
    assert!(wait_until(5, || !w
        .events_where(|e| e["event"] == "reload_failed")
        .is_empty()));
    let failed = w.events_where(|e| e["event"] == "reload_failed");
    let why = failed[0]["error"].as_str().unwrap();
    assert!(
        why.contains("nfqwall.toml") && why.contains("mode"),
        "{why}"
    );
    assert!(
        !w.curl("192.0.2.4", &u, 2),
        "old rule must stay after a bad reload"
    );
    assert!(w.curl("192.0.2.3", &u, 5));
    let s = w.stats();
    assert_eq!(
        (s["reloads"].as_u64(), s["reload_failures"].as_u64()),
        (Some(1), Some(1))
    );
}

/// A stateless DNS service (CT --notrack both ways): queries reach nfqwall UNTRACKED,
/// dnsmasq answers through it, and a rule on the untracked state blocks one client.
#[test]
fn live_dns_untracked_service_with_dnsmasq_and_dig() {
    if !support::require_root("live_dns_untracked_service_with_dnsmasq_and_dig") {
        return;
    }
    let rules = format!(
        "iptables -t raw -A PREROUTING -p udp --dport 53 -j CT --notrack && \
         iptables -t raw -A OUTPUT -p udp --sport 53 -j CT --notrack && {} && \
         iptables -t mangle -A INPUT -p udp --dport 53 -m conntrack --ctstate UNTRACKED -j NFQ-T",
        state_chain("iptables")
    );
    let mut w = Live::new("dns", &rules);
    w.write_config(
        "[daemon]\nmode = \"enforce\"\nlog = \"@LOG@\"\nlog_rate_per_reason = 1000\n\
         [[service]]\nname = \"dns\"\nprotocol = \"udp\"\nports = [53]\nstateless = true\n\
         [[service.rule]]\nname = \"block-3\"\naction = \"drop\"\nsource = [\"192.0.2.3/32\"]\n\
         ct_state = [\"untracked\"]\n",
    );
    let dns = w.pair.server.spawn(
        "dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
         --listen-address=192.0.2.2 --address=/example.test/192.0.2.53 --pid-file= \
         --user=root --log-facility=-",
    );
    w.servers.push(dns);
    let ns = &w.pair.server;
    assert!(wait_until(10, || ns
        .sh_out("ss -lunH 'sport = :53'")
        .contains(":53")));
    w.start_daemon();
    let dig = |src: &str| {
        w.pair
            .client
            .try_sh(&format!(
                "dig +short +tries=1 +time=2 -b {src} @192.0.2.2 www.example.test A"
            ))
            .stdout
    };
    for _ in 0..10 {
        assert_eq!(
            String::from_utf8_lossy(&dig("192.0.2.1")).trim(),
            "192.0.2.53"
        );
    }
    let blocked = String::from_utf8_lossy(&dig("192.0.2.3")).into_owned();
    assert!(
        !blocked.contains("192.0.2.53") && blocked.contains("timed out"),
        "{blocked}"
    );
    let s = w.stats();
    assert_eq!(s["packets"], 11, "{s}");
    assert_eq!(s["dropped"], 1, "{s}");
    let drops = w.events_where(|e| e["verdict"] == "drop");
    assert_eq!(drops.len(), 1);
    assert_eq!(drops[0]["ct_state"], "untracked");
    assert_eq!(drops[0]["proto"], "udp");
    assert_eq!(drops[0]["service"], "dns");
    assert_eq!(drops[0]["rule"], "block-3");
}

/// iperf3 through a log-only nfqwall: bulk data never leaves the kernel (only the
/// connections' SYNs are queued) and the transfer completes.
#[test]
fn live_iperf3_bulk_stays_in_kernel() {
    if !support::require_root("live_iperf3_bulk_stays_in_kernel") {
        return;
    }
    let mut w = Live::new("perf", &queue_tcp(5201));
    w.write_config(&web_config("log-only", "", "").replace("ports = [80]", "ports = [5201]"));
    let srv = w.pair.server.spawn("iperf3 -s -1 -B 192.0.2.2 -p 5201");
    w.servers.push(srv);
    let ns = &w.pair.server;
    assert!(wait_until(10, || ns
        .sh_out("ss -ltnH 'sport = :5201'")
        .contains("5201")));
    w.start_daemon();
    let out = w.pair.client.sh_out("iperf3 -c 192.0.2.2 -p 5201 -t 2 -J");
    let j: Value = serde_json::from_str(&out).unwrap();
    let bytes = j["end"]["sum_received"]["bytes"].as_u64().unwrap();
    assert!(bytes > 1_000_000, "{bytes}");
    let s = w.stats();
    let packets = s["packets"].as_u64().unwrap();
    // Control and data connection: two SYNs (a retransmitted one at most doubles it).
    assert!((2..=4).contains(&packets), "{s}");
    assert_eq!(s["dropped"], 0);
}

/// Events over `log_rate_per_reason` are suppressed and counted: written plus
/// suppressed equals what happened.
#[test]
fn live_event_rate_limit_counts_suppressed() {
    if !support::require_root("live_event_rate_limit_counts_suppressed") {
        return;
    }
    let mut w = Live::new("rate", &queue_tcp(80));
    w.write_config(
        &web_config(
            "log-only",
            "",
            "[[service.rule]]\nname = \"watch\"\naction = \"log\"\n",
        )
        .replace("log_rate_per_reason = 1000", "log_rate_per_reason = 2"),
    );
    w.http_server();
    w.start_daemon();
    for _ in 0..20 {
        assert!(w.curl("192.0.2.1", &url(false, 80), 5));
    }
    let total = || {
        let written = w.events_where(|e| e["log_rule"] == "watch").len() as u64;
        let suppressed: u64 = w
            .events_where(|e| e["event"] == "suppressed" && e["reason"] == "rule_log")
            .iter()
            .map(|e| e["count"].as_u64().unwrap())
            .sum();
        (written, suppressed)
    };
    assert!(
        wait_until(5, || {
            let (a, b) = total();
            a + b == 20
        }),
        "{:?}",
        total()
    );
    let (written, suppressed) = total();
    assert!(suppressed > 0 && written >= 2, "{written} {suppressed}");
    assert_eq!(w.stats()["events"]["suppressed"], suppressed);
}

/// A rule with `mark` sets the packet mark on its accept verdict; later rules see it.
#[test]
fn live_rule_mark_is_set_on_the_packet() {
    if !support::require_root("live_rule_mark_is_set_on_the_packet") {
        return;
    }
    // Queue in mangle PREROUTING so that filter INPUT, a later hook, sees the mark.
    let rules = format!(
        "{} && iptables -t mangle -A PREROUTING -p tcp --dport 80 -m conntrack \
         --ctstate NEW,INVALID -j NFQ-T && \
         iptables -A INPUT -p tcp --dport 80 -m mark --mark 0x10 -j ACCEPT",
        state_chain("iptables")
    );
    let mut w = Live::new("mark", &rules);
    w.write_config(&web_config(
        "enforce",
        "",
        "[[service.rule]]\nname = \"tag-4\"\naction = \"accept\"\nsource = [\"192.0.2.4/32\"]\nmark = 16\n",
    ));
    w.http_server();
    w.start_daemon();
    let marked = || {
        let out = w.pair.server.sh_out("iptables -L INPUT -v -x -n");
        out.lines()
            .find(|l| l.contains("mark match 0x10"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap()
    };
    assert!(w.curl("192.0.2.1", &url(false, 80), 5));
    assert_eq!(marked(), 0);
    assert!(w.curl("192.0.2.4", &url(false, 80), 5));
    assert_eq!(marked(), 1, "the SYN of .4 carries mark 16");
    let tagged = w.events_where(|e| e["rule"] == "tag-4");
    assert!(
        tagged.is_empty(),
        "a plain accept by rule is not notable: {tagged:?}"
    );
}

/// `run` without `--no-rules` installs the rendered ruleset at start, judges what it
/// queues, and on SIGTERM removes exactly what it installed.
#[test]
fn live_run_installs_and_removes_its_rules() {
    if !support::require_root("live_run_installs_and_removes_its_rules") {
        return;
    }
    // A host with a ruleset of its own (in a pristine namespace, iptables-nft leaves
    // the empty filter table it had to create; see rules/README.md).
    // Its own INPUT rule, after which nfqwall inserts its jump: nfqwall must not
    // override it (a NEW packet nfqwall passes goes on through the host's rules).
    let mut w = Live::new(
        "ri",
        "iptables -A OUTPUT -o lo -j ACCEPT && ip6tables -A OUTPUT -o lo -j ACCEPT && \
         iptables -A INPUT -s 192.0.2.4 -p tcp --dport 80 -j DROP && \
         ip6tables -A INPUT -s 2001:db8::4 -p tcp --dport 80 -j DROP",
    );
    w.write_config(&web_config("enforce", "", &block_rule("block-3", 3)));
    w.http_server();
    let save = |ns: &support::Netns| {
        ns.sh_out("iptables-save | sed '/^#/d'; ip6tables-save | sed '/^#/d'")
            .lines()
            .map(|l| l.split(" [").next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
    };
    let before = save(&w.pair.server);
    w.start_daemon_cmd("");
    let during = w.pair.server.sh_out("iptables-save; ip6tables-save");
    assert!(during.contains("-A INPUT -j NFQWALL-IN"), "{during}");
    assert!(during.contains("--queue-bypass"), "{during}");
    // In enforce mode the simple leading block rule is rendered as a kernel rule.
    assert!(
        during.contains("--comment \"web/block-3\" -j DROP"),
        "{during}"
    );
    for v6 in [false, true] {
        let u = url(v6, 80);
        assert!(w.curl(&client(v6, 1), &u, 5), "v6={v6}");
        assert!(
            !w.curl(&client(v6, 3), &u, 2),
            "blocked client connected (v6={v6})"
        );
        assert!(
            !w.curl(&client(v6, 4), &u, 2),
            "the host's own DROP rule was bypassed (v6={v6})"
        );
    }
    // nfqwall judged and passed the SYNs of .1 and .4 (the host's rule then dropped
    // .4's); the kernel rule dropped .3's before nfqwall.
    let s = w.stats();
    assert!(s["accepted"].as_u64().unwrap() >= 4, "{s}");
    assert_eq!(s["dropped"], 0, "{s}");
    w.daemon().signal("TERM");
    let out = w.daemon.as_mut().unwrap().wait_output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        save(&w.pair.server),
        before,
        "rules left behind after SIGTERM"
    );
    // With the rules gone, nothing is queued: the blocked client connects again.
    assert!(w.curl(&client(false, 3), &url(false, 80), 5));
}
