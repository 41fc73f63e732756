//! `nfqwall rules install|remove` against real netfilter, in namespaces the tests create:
//! install then remove restores the ruleset exactly, install is idempotent, the
//! installed chains are what `print` shows, for the nf_tables and the legacy backend;
//! and a stateless UDP/53 service really creates no conntrack entries. The life cycle:
//! with nf_tables, install and removal (and `nfqwall run` until SIGTERM) leave
//! `iptables-save`, `ip6tables-save` and `nft list tables` exactly as found (tables
//! nfqwall created are deleted, the operator's stay); a partial install or reload is
//! rolled back; hung commands are killed (fake commands first on PATH).

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
        // Two NOTRACK rules; in mangle the mark clearing, the two simple drop rules
        // rendered for the kernel and the two queue rules (udp and tcp), and the five
        // state marks and the NFQUEUE rule; the shadow feed of the tcp service (the
        // jump, NFLOG and RETURN in; the ESTABLISHED test, NFLOG and RETURN out); in
        // filter the counter and the vouch accept.
        assert_eq!(own_rules(saved).len(), 21, "{backend} {fam}: {saved}");
        for jump in [
            "-A PREROUTING -j NFQWALL-RAW-PRE\n-A PREROUTING -p udp",
            "-A OUTPUT -j NFQWALL-RAW-OUT",
            "-A OUTPUT -j NFQWALL-MANGLE-OUT",
            "-A INPUT -j NFQWALL-MANGLE-IN\n",
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
    // Per family: two raw chains, four mangle chains, one filter chain.
    assert_eq!(dry.matches("-X NFQWALL-").count(), 14, "{dry}");
    assert_eq!(save_both(&ns, backend), once, "{backend}: dry run changed");

    // Install another config over it: the stale raw chains go, INPUT is refilled.
    nfqwall_ok(&ns, &["rules", "install", "--backend", backend]);
    let default = save_both(&ns, backend);
    assert!(!default.0.contains("NFQWALL-RAW") && !default.1.contains("NFQWALL-RAW"));
    let printed = nfqwall(&ns, &["rules", "print", "--family", "ipv4"]);
    assert_eq!(
        own_rules(&default.0),
        own_rules(&String::from_utf8(printed.stdout).unwrap())
    );
    assert!(own_rules(&default.0).contains(
        &"-A NFQWALL-MANGLE-IN -p tcp -m conntrack --ctstate INVALID,NEW -m comment --comment all-tcp -j NFQWALL-QUEUE".to_string()
    ));
    assert_eq!(default.0.matches("-A INPUT -j NFQWALL-IN\n").count(), 1);
    assert_eq!(
        default.0.matches("-A INPUT -j NFQWALL-MANGLE-IN\n").count(),
        1
    );

    // Remove: exactly as before; removing again is a no-op success.
    nfqwall_ok(
        &ns,
        &[&["rules", "remove", "--config", &dns][..], &b].concat(),
    );
    // iptables-legacy cannot delete a table: once the install used `mangle`, the
    // namespace keeps it (its built-in chains empty, policies ACCEPT; documented in
    // rules/README.md). Such a table changes no packet's fate; with nft it is deleted.
    let now = || {
        let after = save_both(&ns, backend);
        if backend == "legacy" {
            (
                without_empty_tables(&after.0),
                without_empty_tables(&after.1),
            )
        } else {
            after
        }
    };
    assert_eq!(now(), before, "{backend}: remove left a trace");
    let err = nfqwall_ok(&ns, &[&["rules", "remove"][..], &b].concat());
    assert!(
        err.contains("IPv4 unchanged") && err.contains("IPv6 unchanged"),
        "{err}"
    );
    assert_eq!(now(), before);
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
    // nf_tables: the tables the install created are deleted again, so everything is
    // exactly as before. x_tables: a table, once instantiated in a namespace, cannot be
    // unloaded from it; it stays listed, empty (documented in rules/README.md).
    for backend in ["nft", "legacy"] {
        let ns = Netns::new(&format!("pr{}", &backend[..3]));
        let s = Scratch::new(&format!("pr{backend}"));
        let before = save_both(&ns, backend);
        let dns = example("busy-dns.toml");
        ok(
            nfqwall_in(
                &ns,
                &s,
                &["rules", "install", "--config", &dns, "--backend", backend],
            ),
            "install",
        );
        ok(
            nfqwall_in(&ns, &s, &["rules", "remove", "--backend", backend]),
            "remove",
        );
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
        if backend == "nft" {
            assert_eq!(after, before);
        } else {
            assert_eq!(before.0, "", "legacy: a new namespace lists no table");
            assert!(after.0.contains("*raw") && after.0.contains("*filter"));
            assert_eq!(
                ns.sh_out("cat /proc/net/ip_tables_names | sort"),
                "filter\nmangle\nraw\n"
            );
        }
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

// ---- A clean lifecycle: exactly as found, rollback, bounded commands ----

/// A scratch directory for one test: the state file, fake commands, configs.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("nfqwall-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("bin")).unwrap();
        Scratch(d)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// Puts an executable script `bin/NAME` on the fake PATH.
    fn fake(&self, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.0.join("bin").join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real path of `tool` (before any fake on PATH).
fn real(tool: &str) -> String {
    let out =
        support::run(std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `nfqwall ARGS` in `ns` with the state file in `s` and `s/bin` first on PATH.
fn nfqwall_in(ns: &Netns, s: &Scratch, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        s.path("bin"),
        std::env::var("PATH").unwrap_or_default()
    );
    ns.cmd("env")
        .arg(format!("PATH={path}"))
        .arg(format!("NFQWALL_STATE_DIR={}", s.path("state")))
        .arg(BIN)
        .args(args)
        .output()
        .expect("cannot run nfqwall")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What "exactly as found" compares: iptables-save and ip6tables-save of the nft
/// backend (counters stripped), and `nft list tables`.
fn kernel_view(ns: &Netns) -> (String, String, String) {
    let (v4, v6) = save_both(ns, "nft");
    (v4, v6, ns.sh_out("nft list tables"))
}

#[test]
fn nft_install_remove_on_a_namespace_without_tables_leaves_none() {
    if !require_root("nft_install_remove_on_a_namespace_without_tables_leaves_none") {
        return;
    }
    let ns = Netns::new("clean");
    let s = Scratch::new("clean");
    let before = kernel_view(&ns);
    assert_eq!(before.2, "", "a new namespace has no tables");
    for config in [
        example("busy-dns.toml"),
        example("legacy-http-behind-cisco.toml"),
    ] {
        let args = ["rules", "install", "--backend", "nft", "--config", &config];
        ok(nfqwall_in(&ns, &s, &args), "install");
        let installed = kernel_view(&ns);
        assert!(
            installed.2.contains("table ip filter") && installed.2.contains("table ip6 filter")
        );
        let err = ok(
            nfqwall_in(&ns, &s, &["rules", "remove", "--backend", "nft"]),
            "remove",
        );
        assert!(err.contains("deleted table ip filter"), "{err}");
        assert_eq!(kernel_view(&ns), before, "{config}: remove left a trace");
        assert!(std::fs::read_dir(s.path("state")).map_or(true, |mut d| d.next().is_none()));
    }
    // Install, replace with a config that needs raw too, remove: still nothing left.
    ok(
        nfqwall_in(&ns, &s, &["rules", "install", "--backend", "nft"]),
        "install",
    );
    let dns = example("busy-dns.toml");
    ok(
        nfqwall_in(
            &ns,
            &s,
            &["rules", "install", "--backend", "nft", "--config", &dns],
        ),
        "replace",
    );
    assert!(ns.sh_out("nft list tables").contains("table ip raw"));
    ok(
        nfqwall_in(&ns, &s, &["rules", "remove", "--backend", "nft"]),
        "remove",
    );
    assert_eq!(kernel_view(&ns), before);
}

#[test]
fn nft_remove_keeps_the_operators_tables_and_rules() {
    if !require_root("nft_remove_keeps_the_operators_tables_and_rules") {
        return;
    }
    let ns = Netns::new("oper");
    let s = Scratch::new("oper");
    // The operator's filter table (v4 only), with a rule: it must stay exactly so.
    ns.sh("iptables-nft -A INPUT -s 203.0.113.9/32 -j DROP");
    let before = kernel_view(&ns);
    let dns = example("busy-dns.toml");
    ok(
        nfqwall_in(
            &ns,
            &s,
            &["rules", "install", "--backend", "nft", "--config", &dns],
        ),
        "install",
    );
    // While nfqwall runs the operator starts using a table nfqwall created (ip6 raw).
    ns.sh("ip6tables-nft -t raw -A PREROUTING -p udp --dport 9999 -j CT --notrack");
    let err = ok(
        nfqwall_in(&ns, &s, &["rules", "remove", "--backend", "nft"]),
        "remove",
    );
    assert!(err.contains("kept table ip6 raw"), "{err}");
    let after = kernel_view(&ns);
    assert_eq!(
        after.0, before.0,
        "IPv4: the operator's filter table changed"
    );
    assert!(after
        .1
        .contains("-A PREROUTING -p udp -m udp --dport 9999 -j CT --notrack"));
    assert!(
        !after.1.contains("NFQWALL") && !after.1.contains("*filter"),
        "{}",
        after.1
    );
    assert_eq!(after.2, "table ip filter\ntable ip6 raw\n");
}

/// A fake `ip6tables-nft-restore`: checks (`--test`) pass through to the real one,
/// commits fail, as a commit the kernel rejects would.
fn failing_v6_commit(s: &Scratch) {
    s.fake(
        "ip6tables-nft-restore",
        &format!(
            "for a in \"$@\"; do [ \"$a\" = --test ] && exec {} \"$@\"; done\n\
             cat >/dev/null; echo 'ip6tables-nft-restore: line 2 failed (fake: commit refused)' >&2; exit 1",
            real("ip6tables-nft-restore")
        ),
    );
}

#[test]
fn nft_partial_install_is_rolled_back() {
    if !require_root("nft_partial_install_is_rolled_back") {
        return;
    }
    let ns = Netns::new("part");
    let s = Scratch::new("part");
    failing_v6_commit(&s);
    let before = kernel_view(&ns);
    let dns = example("busy-dns.toml");
    let out = nfqwall_in(
        &ns,
        &s,
        &["rules", "install", "--backend", "nft", "--config", &dns],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the IPv6 transaction failed")
            && err.contains("fake: commit refused")
            && err.contains("the IPv4 transaction had already been committed and was rolled back"),
        "{err}"
    );
    assert_eq!(kernel_view(&ns), before, "the IPv4 half stayed: {err}");

    // A replace that fails half-way puts the previous IPv4 rules back.
    let good = Scratch::new("part-good");
    ok(
        nfqwall_in(&ns, &good, &["rules", "install", "--backend", "nft"]),
        "install",
    );
    let installed = kernel_view(&ns);
    let out = nfqwall_in(
        &ns,
        &s,
        &["rules", "install", "--backend", "nft", "--config", &dns],
    );
    assert!(!out.status.success());
    assert_eq!(
        kernel_view(&ns),
        installed,
        "replace: previous rules not restored"
    );
    ok(
        nfqwall_in(&ns, &good, &["rules", "remove", "--backend", "nft"]),
        "remove",
    );
    assert_eq!(kernel_view(&ns), before);
}

#[test]
fn commands_that_hang_are_killed_and_named() {
    if !require_root("commands_that_hang_are_killed_and_named") {
        return;
    }
    let ns = Netns::new("hang");
    let s = Scratch::new("hang");
    s.fake("iptables-nft-save", "sleep 30");
    let started = std::time::Instant::now();
    let out = nfqwall_in(
        &ns,
        &s,
        &[
            "rules",
            "install",
            "--backend",
            "nft",
            "--command-timeout",
            "1",
        ],
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`iptables-nft-save` did not finish within 1 s and was killed"),
        "{err}"
    );
    // The environment variable sets the same limit (the daemon reads it), and a commit
    // that hangs is killed and checked: nothing of it stays.
    let s = Scratch::new("hang2");
    s.fake(
        "iptables-nft-restore",
        &format!(
            "for a in \"$@\"; do [ \"$a\" = --test ] && exec {} \"$@\"; done\nsleep 30",
            real("iptables-nft-restore")
        ),
    );
    let before = kernel_view(&ns);
    let out = ns
        .cmd("env")
        .arg(format!(
            "PATH={}:{}",
            s.path("bin"),
            std::env::var("PATH").unwrap()
        ))
        .arg(format!("NFQWALL_STATE_DIR={}", s.path("state")))
        .arg("NFQWALL_COMMAND_TIMEOUT=1.5")
        .args([BIN, "rules", "install", "--backend", "nft"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("iptables-nft-restore --noflush --wait=1` did not finish within 1.5 s")
            && err.contains("undone"),
        "{err}"
    );
    assert_eq!(kernel_view(&ns), before);
}

#[test]
fn nft_daemon_exit_and_failed_reload_leave_the_kernel_as_found() {
    if !require_root("nft_daemon_exit_and_failed_reload_leave_the_kernel_as_found") {
        return;
    }
    let ns = Netns::new("life");
    let s = Scratch::new("life");
    // IPv6 commits fail while the flag file exists.
    s.fake(
        "ip6tables-nft-restore",
        &format!(
            "if [ -e {flag} ]; then for a in \"$@\"; do [ \"$a\" = --test ] && exec {real} \"$@\"; done; \
             cat >/dev/null; echo 'line 2 failed (fake)' >&2; exit 1; fi\nexec {real} \"$@\"",
            flag = s.path("fail-v6"),
            real = real("ip6tables-nft-restore")
        ),
    );
    let before = kernel_view(&ns);
    let config = s.path("nfqwall.toml");
    let log = s.path("events.jsonl");
    let with_log = |file: &str| {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains("log = \"stdout\""));
        text.replace("log = \"stdout\"", &format!("log = \"{log}\""))
    };
    let default = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/default.toml");
    std::fs::write(&config, with_log(default)).unwrap();
    let path = format!("{}:{}", s.path("bin"), std::env::var("PATH").unwrap());
    let mut daemon = ns.spawn(&format!(
        "env PATH={path} NFQWALL_STATE_DIR={} {BIN} run --backend nft --config {config} --socket {}",
        s.path("state"),
        s.path("stats.sock")
    ));
    let events = |kind: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == kind)
            .collect()
    };
    assert!(
        support::wait_until(10, || !events("start").is_empty()),
        "daemon did not start"
    );
    let running = kernel_view(&ns);
    assert!(running.0.contains("NFQWALL-IN"));

    // A reload whose IPv6 half fails: the IPv4 rules go back, the engine keeps its
    // policy, and the event says so.
    std::fs::write(s.path("fail-v6"), "").unwrap();
    std::fs::write(&config, with_log(&example("busy-dns.toml"))).unwrap();
    daemon.signal("HUP");
    assert!(support::wait_until(15, || !events("reload_failed").is_empty()));
    let failed = &events("reload_failed")[0];
    assert_eq!(failed["rules_in_force"], "previous", "{failed}");
    assert_eq!(failed["policy_in_force"], "previous", "{failed}");
    let why = failed["error"].as_str().unwrap();
    assert!(why.contains("rolled back"), "{why}");
    assert_eq!(
        kernel_view(&ns),
        running,
        "a failed reload changed the kernel"
    );

    // Then a reload that works, and exit: exactly as found.
    std::fs::remove_file(s.path("fail-v6")).unwrap();
    daemon.signal("HUP");
    assert!(support::wait_until(15, || !events("reload").is_empty()));
    assert!(ns.sh_out("nft list tables").contains("table ip raw"));
    daemon.signal("TERM");
    let out = daemon.wait_output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(kernel_view(&ns), before, "exit left a trace");
    let rules = events("rules");
    assert!(
        rules.iter().any(|e| e["detail"]
            .as_str()
            .unwrap()
            .contains("deleted table ip6 raw")),
        "{rules:?}"
    );
}
