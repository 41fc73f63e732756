//! `nfqwall rules install|remove` against real netfilter, in namespaces the tests create:
//! install then remove restores the ruleset exactly, install is idempotent, the
//! installed chains are what `print` shows, for the nf_tables and the legacy backend;
//! and a stateless UDP/53 service really creates no conntrack entries.

mod support;

use std::path::PathBuf;
use std::process::Output;

use support::{require_root, Netns, Pair};

const BIN: &str = env!("CARGO_BIN_EXE_nfqwall");

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("rules/examples")
        .join(name)
        .display()
        .to_string()
}

/// Runs `nfqwall ARGS` inside `ns`, returning the output whatever the status.
fn nfqwall(ns: &Netns, args: &[&str]) -> Output {
    ns.cmd(BIN).args(args).output().expect("cannot run nfqwall")
}

/// Runs `nfqwall ARGS` inside `ns` and requires success.
fn nfqwall_ok(ns: &Netns, args: &[&str]) -> String {
    let out = nfqwall(ns, args);
    assert!(
        out.status.success(),
        "nfqwall {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `iptables-save` (or ip6tables) of `backend` in `ns`, without comment lines and with
/// chain counters removed.
fn save(ns: &Netns, v6: bool, backend: &str) -> String {
    let tool = format!(
        "{}-{backend}-save",
        if v6 { "ip6tables" } else { "iptables" }
    );
    ns.sh_out(&tool)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(i)) => l[..i].to_string(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn save_both(ns: &Netns, backend: &str) -> (String, String) {
    (save(ns, false, backend), save(ns, true, backend))
}

/// The `-A NFQWALL-*` lines of `text`, in order.
fn own_rules(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("-A NFQWALL-"))
        .map(str::to_string)
        .collect();
    // iptables-save prints the chains of a table in name order; compare per chain.
    v.sort_by(|a, b| a.split(' ').nth(1).cmp(&b.split(' ').nth(1)));
    v
}

/// Adds an unrelated rule to INPUT and to raw PREROUTING, in both families.
fn add_unrelated_rules(ns: &Netns, backend: &str) {
    ns.sh(&format!(
        "iptables-{backend} -A INPUT -s 203.0.113.9/32 -j DROP && \
         iptables-{backend} -t raw -A PREROUTING -p udp --dport 9999 -j CT --notrack && \
         ip6tables-{backend} -A INPUT -s 2001:db8:bad::/48 -j DROP && \
         ip6tables-{backend} -t raw -A PREROUTING -p udp --dport 9999 -j CT --notrack"
    ));
}

fn roundtrip(backend: &str) {
    let ns = Netns::new(&format!("rt{}", &backend[..3]));
    add_unrelated_rules(&ns, backend);
    let before = save_both(&ns, backend);
    let dns = example("busy-dns.toml");
    let b = ["--backend", backend];

    // Install: the own chains hold exactly what `print` shows, jumps at the top.
    let err = nfqwall_ok(
        &ns,
        &[&["rules", "install", "--config", &dns][..], &b].concat(),
    );
    assert!(
        err.contains("IPv4 changed") && err.contains("IPv6 changed"),
        "{err}"
    );
    let once = save_both(&ns, backend);
    for (saved, fam) in [(&once.0, "ipv4"), (&once.1, "ipv6")] {
        let printed = nfqwall(&ns, &["rules", "print", "--config", &dns, "--family", fam]);
        let printed = String::from_utf8(printed.stdout).unwrap();
        assert_eq!(own_rules(saved), own_rules(&printed), "{backend} {fam}");
        // Two NOTRACK rules, the pass-mark return, the two simple drop rules rendered
        // for the kernel, and the two NFQUEUE rules (udp and tcp).
        assert_eq!(own_rules(saved).len(), 7, "{backend} {fam}: {saved}");
        for jump in [
            "-A PREROUTING -j NFQWALL-RAW-PRE\n-A PREROUTING -p udp",
            "-A OUTPUT -j NFQWALL-RAW-OUT",
            "-A INPUT -j NFQWALL-IN\n-A INPUT -s ",
        ] {
            assert_eq!(saved.matches(jump).count(), 1, "{backend} {fam}: {jump}");
        }
        assert!(saved.contains("--dport 9999 -j CT --notrack"));
    }

    // Install again: nothing changes.
    let err = nfqwall_ok(
        &ns,
        &[&["rules", "install", "--config", &dns][..], &b].concat(),
    );
    assert!(
        err.contains("IPv4 unchanged") && err.contains("IPv6 unchanged"),
        "{err}"
    );
    assert_eq!(
        save_both(&ns, backend),
        once,
        "{backend}: second install changed"
    );

    // A dry run says so, and prints what remove would do without doing it.
    let dry = nfqwall(
        &ns,
        &[&["rules", "install", "--dry-run", "--config", &dns][..], &b].concat(),
    );
    let dry = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(
        dry,
        "# IPv4: nothing to change\n# IPv6: nothing to change\n"
    );
    let dry = nfqwall(&ns, &[&["rules", "remove", "--dry-run"][..], &b].concat());
    let dry = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(dry.matches("-X NFQWALL-").count(), 6, "{dry}");
    assert_eq!(save_both(&ns, backend), once, "{backend}: dry run changed");

    // Install another config over it: the stale raw chains go, INPUT is refilled.
    nfqwall_ok(&ns, &["rules", "install", "--backend", backend]);
    let default = save_both(&ns, backend);
    assert!(!default.0.contains("NFQWALL-RAW") && !default.1.contains("NFQWALL-RAW"));
    assert_eq!(
        own_rules(&default.0),
        [
            "-A NFQWALL-IN -m mark --mark 0x100000/0x100000 -j RETURN",
            "-A NFQWALL-IN -p tcp -m conntrack --ctstate INVALID,NEW -m comment --comment all-tcp -j NFQUEUE --queue-num 0 --queue-bypass"
        ]
    );
    assert_eq!(default.0.matches("-j NFQWALL-IN").count(), 1);

    // Remove: exactly as before; removing again is a no-op success.
    nfqwall_ok(
        &ns,
        &[&["rules", "remove", "--config", &dns][..], &b].concat(),
    );
    assert_eq!(
        save_both(&ns, backend),
        before,
        "{backend}: remove left a trace"
    );
    let err = nfqwall_ok(&ns, &[&["rules", "remove"][..], &b].concat());
    assert!(
        err.contains("IPv4 unchanged") && err.contains("IPv6 unchanged"),
        "{err}"
    );
    assert_eq!(save_both(&ns, backend), before);
}

#[test]
fn install_remove_roundtrip_nft_backend() {
    if require_root("install_remove_roundtrip_nft_backend") {
        roundtrip("nft");
    }
}

#[test]
fn install_remove_roundtrip_legacy_backend() {
    if require_root("install_remove_roundtrip_legacy_backend") {
        roundtrip("legacy");
    }
}

/// `save` with tables dropped that hold nothing: no rules, no user chains, every
/// built-in chain with policy ACCEPT (such a table has no effect on any packet).
fn without_empty_tables(text: &str) -> String {
    let mut out = Vec::new();
    let mut table: Vec<&str> = Vec::new();
    for l in text.lines() {
        table.push(l);
        if l == "COMMIT" {
            let empty = table.iter().all(|l| {
                l.starts_with('*')
                    || *l == "COMMIT"
                    || (l.starts_with(':') && l.ends_with(" ACCEPT"))
            });
            if !empty {
                out.append(&mut table);
            }
            table.clear();
        }
    }
    out.append(&mut table);
    out.join("\n")
}

#[test]
fn remove_on_a_pristine_namespace_leaves_no_rule_or_chain() {
    if !require_root("remove_on_a_pristine_namespace_leaves_no_rule_or_chain") {
        return;
    }
    // Tables that did not exist before install exist, empty, after remove: the kernel
    // creates them on first use and nfqwall does not delete tables. Nothing else stays.
    for backend in ["nft", "legacy"] {
        let ns = Netns::new(&format!("pr{}", &backend[..3]));
        let before = save_both(&ns, backend);
        let dns = example("busy-dns.toml");
        nfqwall_ok(
            &ns,
            &["rules", "install", "--config", &dns, "--backend", backend],
        );
        nfqwall_ok(&ns, &["rules", "remove", "--backend", backend]);
        let after = save_both(&ns, backend);
        assert_eq!(
            without_empty_tables(&after.0),
            without_empty_tables(&before.0)
        );
        assert_eq!(
            without_empty_tables(&after.1),
            without_empty_tables(&before.1)
        );
        assert!(!after.0.contains("NFQWALL") && !after.1.contains("NFQWALL"));
    }
}

#[test]
fn errors_name_the_command_and_its_stderr() {
    if !require_root("errors_name_the_command_and_its_stderr") {
        return;
    }
    for backend in ["nft", "legacy"] {
        let ns = Netns::new(&format!("err{}", &backend[..3]));
        // An operator rule jumping to nfqwall's chain keeps it referenced: -X must fail,
        // and the whole remove transaction with it.
        ns.sh(&format!(
            "iptables-{backend} -N NFQWALL-IN && iptables-{backend} -A INPUT -i lo -j NFQWALL-IN && \
             iptables-{backend} -A INPUT -j NFQWALL-IN"
        ));
        let out = nfqwall(&ns, &["rules", "remove", "--backend", backend]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        // legacy catches it in the --test pass, nft (which checks in the kernel) on commit.
        assert!(
            err.contains(&format!("`iptables-{backend}-restore --noflush --wait"))
                && err.contains("` failed (exit status: "),
            "{err}"
        );
        assert!(err.contains("NFQWALL-IN"), "{err}");
        // Nothing was committed: the failed transaction left both jumps in place.
        let input = ns.sh_out(&format!("iptables-{backend} -S INPUT"));
        assert_eq!(input.matches("-j NFQWALL-IN").count(), 2, "{input}");
    }
}

/// Sends `n` UDP datagrams to port 53 of `addr`, each from a fresh source port, and
/// returns how many answers came back.
fn query(client: &Netns, addr: &str, v6: bool, n: usize) -> usize {
    let sock = if v6 {
        format!("UDP6:[{addr}]:53")
    } else {
        format!("UDP4:{addr}:53")
    };
    let out = client.sh_out(&format!(
        "for i in $(seq {n}); do echo answer | socat -t0.2 - {sock} || true; done"
    ));
    out.lines().filter(|l| *l == "answer").count()
}

/// Conntrack entries for UDP port 53 in `ns`, both families.
fn udp53_entries(ns: &Netns) -> usize {
    ["ipv4", "ipv6"]
        .iter()
        .map(|f| {
            ns.sh_out(&format!(
                "conntrack -L -f {f} -p udp --dport 53 2>/dev/null || true"
            ))
            .lines()
            .filter(|l| l.contains("dport=53"))
            .count()
        })
        .sum()
}

#[test]
fn stateless_udp53_creates_no_conntrack_entries() {
    if !require_root("stateless_udp53_creates_no_conntrack_entries") {
        return;
    }
    let pair = Pair::new("ct");
    let server = &pair.server;
    let dir = std::env::temp_dir().join(format!("nfqwall-ct-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("dns.toml");
    std::fs::write(
        &config,
        "[daemon]\nqueues = \"0-1\"\n\n[[service]]\nname = \"dns-udp\"\nprotocol = \"udp\"\n\
         ports = [53]\naddresses = [\"192.0.2.2/32\", \"2001:db8::2/128\"]\nstateless = true\n",
    )
    .unwrap();
    let config = config.display().to_string();
    // A hardened ruleset's usual first rule; it also makes conntrack track in this
    // namespace, so the baseline counts are real.
    server.sh(
        "iptables -A INPUT -m conntrack --ctstate INVALID -j DROP && \
         ip6tables -A INPUT -m conntrack --ctstate INVALID -j DROP",
    );
    let _v4 = server.spawn("socat UDP4-RECVFROM:53,fork,reuseaddr EXEC:cat");
    let _v6 = server.spawn("socat UDP6-RECVFROM:53,fork,reuseaddr EXEC:cat");
    assert!(support::wait_until(5, || server
        .sh_out("ss -uln")
        .matches(":53 ")
        .count()
        >= 2));
    const N: usize = 10;

    // Without nfqwall's rules every query is a conntrack entry.
    assert_eq!(query(&pair.client, "192.0.2.2", false, N), N);
    assert_eq!(query(&pair.client, "2001:db8::2", true, N), N);
    let tracked = udp53_entries(server);
    assert!(tracked >= 2 * N - 2, "baseline: only {tracked} entries");

    // With them (auto backend), none: queries and answers are untracked, and the
    // NFQUEUE rule's --queue-bypass accepts while no nfqwall listens.
    server.sh("conntrack -F 2>/dev/null");
    assert_eq!(udp53_entries(server), 0);
    nfqwall_ok(server, &["rules", "install", "--config", &config]);
    assert_eq!(query(&pair.client, "192.0.2.2", false, N), N);
    assert_eq!(query(&pair.client, "2001:db8::2", true, N), N);
    assert_eq!(
        udp53_entries(server),
        0,
        "stateless service created entries"
    );
    // The packets really went through nfqwall's chains.
    let counters = server.sh_out("iptables -t raw -L NFQWALL-RAW-PRE -v -n -x");
    let pkts: u64 = counters
        .lines()
        .find(|l| l.contains("CT notrack"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    assert!(pkts >= N as u64, "{counters}");

    // Removed again, conntrack counts them again.
    nfqwall_ok(server, &["rules", "remove", "--config", &config]);
    assert_eq!(query(&pair.client, "192.0.2.2", false, N), N);
    let tracked = udp53_entries(server);
    assert!(tracked >= N - 1, "after remove: only {tracked} entries");
    let _ = std::fs::remove_dir_all(&dir);
}
