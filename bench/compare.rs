//! One interleaved run that compares nfqwall's live verdict path with the kernel alone
//! and with other NFQUEUE programs: `sudo cargo bench --bench compare`.
//!
//! Each trial builds two fresh network namespaces joined by veth (offloads off), loads
//! one workload's queue rules into the server, starts one program on queue 0, checks
//! that it bound the queue (`/proc/net/netfilter/nfnetlink_queue` shows a peer), runs
//! the load from the client, and reads the kernel's queue counters and the verdict
//! process's CPU time (utime + stime) around it. Rounds are interleaved (every
//! program of every workload once, then again), and the tables print medians.
//!
//! Programs:
//! - `kernel`: nothing queued (the workload's rules without the NFQUEUE target);
//! - `nfq`: the `nfq` crate's minimal accept loop (`examples/nfq_accept.rs`), one
//!   verdict per packet, judging nothing;
//! - `c`: a C libnetfilter_queue loop with batch verdicts (`bench/c/nfq_batch.c`,
//!   built here with `cc`), judging nothing;
//! - `nfqwall`: the daemon with the default daemon settings (log-only, events to a
//!   file) and one service for the workload;
//! - `nfqwall100`: the same service with 100 stateless source rules before its
//!   default, in enforce mode (no packet matches them: every packet is checked
//!   against all 100);
//! - `suricata`: Suricata as an NFQ IPS (`nfq.mode: accept`, workers run mode, no
//!   rules, no outputs), when `suricata` is installed (Debian bookworm has it in
//!   bookworm-backports: see the README); skipped with a note otherwise.
//!
//! Workloads:
//! - `udp`: iperf3, 64-byte datagrams as fast as it sends, exempt from conntrack,
//!   every datagram queued (a stateless service);
//! - `tcp`: one iperf3 TCP flow (1448-byte segments); every segment of the client's
//!   direction queued with its conntrack state in the mark, as rendered;
//! - `conns`: short TCP connections (`examples/loadgen.rs`: connect, one request,
//!   the answer, close; 4 client threads), queued as deployed: NEW and INVALID only.
//!   nfqwall installs its own rendered ruleset here (with the shadow feed of the
//!   service's established packets); the other programs get the same queue rule;
//! - `latency`: UDP request/response, one at a time (20,000 exchanges), every request
//!   queued; p50 and p99 of the exchange, and what each program adds to the kernel's.
//!
//! After the trials, a replay step: a capture of a few seconds of iperf3 TCP made here
//! (`tcpdump -s 128` on the server's veth, both directions) replayed by `nfqwall
//! replay` and analysed by `tshark -Y tcp.analysis.flags`.
//!
//! Run by `cargo test --all-targets` (without `--bench`), it makes one short smoke
//! round instead (the C loop and nfqwall, 1 s per workload, no replay).
//!
//! Environment: `COMPARE_ROUNDS` (default 3), `COMPARE_SECONDS` per trial (default
//! 4), `COMPARE_WORKLOADS` and `COMPARE_PROGRAMS` (comma-separated names from the
//! lists above), `COMPARE_SERVICE` (lines added to nfqwall's service, `\n` between
//! them, e.g. `track = "none"`), `COMPARE_DAEMON` (lines added to its `[daemon]`, e.g.
//! `busy_poll_us = 50`), `COMPARE_REPLAY=0` to skip the replay step,
//! `COMPARE_CAPTURE=PATH` to keep its capture there, `NFQWALL_BIN` for another
//! nfqwall binary. Root only.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{median, queue_counters};
use support::cpu_seconds;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Program {
    Kernel,
    NfqCrate,
    CBatch,
    Nfqwall,
    Nfqwall100,
    Suricata,
}

impl Program {
    const ALL: [Program; 6] = [
        Program::Kernel,
        Program::NfqCrate,
        Program::CBatch,
        Program::Nfqwall,
        Program::Nfqwall100,
        Program::Suricata,
    ];

    fn key(self) -> &'static str {
        match self {
            Program::Kernel => "kernel",
            Program::NfqCrate => "nfq",
            Program::CBatch => "c",
            Program::Nfqwall => "nfqwall",
            Program::Nfqwall100 => "nfqwall100",
            Program::Suricata => "suricata",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Program::Kernel => "kernel, nothing queued",
            Program::NfqCrate => "nfq crate, accept loop",
            Program::CBatch => "C libnetfilter_queue, batch",
            Program::Nfqwall => "nfqwall, default (log-only)",
            Program::Nfqwall100 => "nfqwall, 100 rules, enforce",
            Program::Suricata => "Suricata, NFQ IPS, no rules",
        }
    }

    fn is_nfqwall(self) -> bool {
        matches!(self, Program::Nfqwall | Program::Nfqwall100)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Workload {
    Udp,
    Tcp,
    Conns,
    Latency,
}

impl Workload {
    const ALL: [Workload; 4] = [
        Workload::Udp,
        Workload::Tcp,
        Workload::Conns,
        Workload::Latency,
    ];

    fn key(self) -> &'static str {
        match self {
            Workload::Udp => "udp",
            Workload::Tcp => "tcp",
            Workload::Conns => "conns",
            Workload::Latency => "latency",
        }
    }

    fn port(self) -> u16 {
        match self {
            Workload::Udp | Workload::Tcp => 5201,
            Workload::Conns => 5202,
            Workload::Latency => 5203,
        }
    }

    fn protocol(self) -> &'static str {
        match self {
            Workload::Udp | Workload::Latency => "udp",
            Workload::Tcp | Workload::Conns => "tcp",
        }
    }
}

/// What one trial measured.
#[derive(Clone, Debug, Default)]
struct Outcome {
    /// Packets (udp, tcp), connections (conns) or exchanges (latency) per second.
    rate: f64,
    /// Packets the kernel queued during the load.
    queued: u64,
    /// CPU seconds of the verdict process during the load.
    cpu_s: f64,
    /// Packets judged by nfqwall (its own counter), when the program is nfqwall.
    judged: Option<u64>,
    user_dropped: u64,
    queue_dropped: u64,
    /// Connections or exchanges that failed (conns, latency).
    failed: u64,
    p50_us: f64,
    p99_us: f64,
}

impl Outcome {
    fn per_cpu_s(&self) -> f64 {
        if self.cpu_s > 0.0 {
            self.queued as f64 / self.cpu_s
        } else {
            f64::NAN
        }
    }
}

struct Setup {
    nfqwall: String,
    nfq_accept: PathBuf,
    loadgen: PathBuf,
    c_loop: PathBuf,
    /// Suricata's configuration (written whether or not it is installed).
    suricata_yaml: PathBuf,
    dir: PathBuf,
    seconds: u32,
}

fn env_list<T: Copy>(name: &str, all: &[T], key: fn(T) -> &'static str) -> Vec<T> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => {
            let wanted: Vec<&str> = v.split(',').map(str::trim).collect();
            for w in &wanted {
                assert!(
                    all.iter().any(|&a| key(a) == *w),
                    "{name}: unknown name {w:?} (known: {:?})",
                    all.iter().map(|&a| key(a)).collect::<Vec<_>>()
                );
            }
            all.iter()
                .copied()
                .filter(|&a| wanted.contains(&key(a)))
                .collect()
        }
        _ => all.to_vec(),
    }
}

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|e| panic!("{name}={v:?}: not a number: {e}"))
        })
        .unwrap_or(default)
}

fn main() {
    if !support::require_root("compare") {
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` (CI) runs this
    // without it: then one short round of the C loop and nfqwall on every workload,
    // so the harness itself is tested, and no replay step.
    let smoke = !std::env::args().any(|a| a == "--bench");
    if smoke {
        println!("compare: smoke run (cargo bench runs the full comparison)");
    }
    let dir = std::env::temp_dir().join(format!("nfqwall-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c_loop = dir.join("nfq_batch");
    support::run(Command::new("cc").args([
        "-O2",
        "-o",
        &c_loop.display().to_string(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/bench/c/nfq_batch.c"),
        "-lnetfilter_queue",
    ]));
    let suricata_yaml = dir.join("suricata.yaml");
    std::fs::write(&suricata_yaml, suricata_config(&dir)).unwrap();
    let setup = Setup {
        nfqwall: std::env::var("NFQWALL_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_nfqwall").to_string()),
        nfq_accept: support::example_bin("nfq_accept"),
        loadgen: support::example_bin("loadgen"),
        c_loop,
        suricata_yaml,
        dir: dir.clone(),
        seconds: env_number("COMPARE_SECONDS", if smoke { 1 } else { 4 }),
    };
    let rounds = env_number("COMPARE_ROUNDS", if smoke { 1 } else { 3 });
    let workloads = env_list("COMPARE_WORKLOADS", &Workload::ALL, Workload::key);
    let smoke_programs = [Program::CBatch, Program::Nfqwall];
    let asked = std::env::var("COMPARE_PROGRAMS").is_ok_and(|v| v.contains("suricata"));
    let mut programs = env_list(
        "COMPARE_PROGRAMS",
        if smoke {
            &smoke_programs
        } else {
            &Program::ALL
        },
        Program::key,
    );
    if programs.contains(&Program::Suricata) && !suricata_installed() {
        assert!(
            !asked,
            "COMPARE_PROGRAMS names suricata, but `suricata -V` does not run: install it \
             (README, One harness)"
        );
        println!("compare: suricata is not installed, so it is left out (README, One harness)");
        programs.retain(|&p| p != Program::Suricata);
    }

    let mut results: Vec<(Workload, Program, Outcome)> = Vec::new();
    for round in 1..=rounds {
        for &w in &workloads {
            for &p in &programs {
                let o = trial(&setup, w, p);
                println!(
                    "RESULT round={round} workload={} program={} rate={:.0} queued={} \
                     cpu_s={:.2} per_cpu_s={:.0} judged={} user_dropped={} queue_dropped={} \
                     failed={} p50_us={:.0} p99_us={:.0}",
                    w.key(),
                    p.key(),
                    o.rate,
                    o.queued,
                    o.cpu_s,
                    o.per_cpu_s(),
                    o.judged.map_or("-".into(), |j| j.to_string()),
                    o.user_dropped,
                    o.queue_dropped,
                    o.failed,
                    o.p50_us,
                    o.p99_us
                );
                results.push((w, p, o));
            }
        }
    }
    print_tables(&results, &workloads, &programs, rounds);
    if std::env::var("COMPARE_REPLAY").map_or(!smoke, |v| v != "0") {
        replay_step(&setup);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Returns true if and only if a `suricata` binary runs.
fn suricata_installed() -> bool {
    Command::new("suricata")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Suricata as an IPS on NFQUEUE that judges nothing: accept mode (its verdict is
/// the packet's fate), workers (the thread that reads a packet gives its verdict),
/// no rules (`-S /dev/null` at start), no outputs, fail-open like the others.
fn suricata_config(dir: &Path) -> String {
    format!(
        "%YAML 1.1\n---\ndefault-log-dir: {}\nrunmode: workers\n\
         nfq:\n  mode: accept\n  fail-open: yes\n\
         outputs:\n  - fast:\n      enabled: no\n  - eve-log:\n      enabled: no\n\
         \x20 - stats:\n      enabled: no\n\
         logging:\n  default-log-level: notice\n  outputs:\n    - console:\n        enabled: yes\n\
         classification-file: /etc/suricata/classification.config\n\
         reference-config-file: /etc/suricata/reference.config\n\
         threshold-file: /etc/suricata/threshold.config\n",
        dir.display()
    )
}

/// The server's rules for workload `w`; `queue` adds the NFQUEUE target.
fn server_rules(w: Workload, queue: bool) -> Vec<String> {
    let port = w.port();
    let target = "-j NFQUEUE --queue-num 0 --queue-bypass";
    match w {
        Workload::Udp | Workload::Latency => {
            let mut r = vec![
                format!("iptables -t raw -A PREROUTING -p udp --dport {port} -j CT --notrack"),
                format!("iptables -t raw -A OUTPUT -p udp --sport {port} -j CT --notrack"),
            ];
            if queue {
                r.push(format!(
                    "iptables -A INPUT -p udp --dport {port} -m conntrack --ctstate UNTRACKED {target}"
                ));
            }
            r
        }
        Workload::Tcp => {
            if !queue {
                return Vec::new();
            }
            common::tcp_state_mark_queue(port)
        }
        Workload::Conns => {
            if !queue {
                return Vec::new();
            }
            vec![format!(
                "iptables -t mangle -A INPUT -p tcp --dport {port} \
                 -m conntrack --ctstate INVALID,NEW {target}"
            )]
        }
    }
}

fn nfqwall_config(w: Workload, p: Program, log: &Path) -> String {
    let stateless = matches!(w, Workload::Udp | Workload::Latency);
    // Extra lines for the daemon (`busy_poll_us = 50`, say), for what-if trials.
    let daemon_extra = std::env::var("COMPARE_DAEMON")
        .map(|d| d.replace("\\n", "\n") + "\n")
        .unwrap_or_default();
    let mut c = format!(
        "[daemon]\nqueues = \"0\"\nlog = \"{}\"\n{daemon_extra}{}\n[[service]]\nname = \"bench\"\n\
         protocol = \"{}\"\nports = [{}]\ndefault = \"accept\"\n{}",
        log.display(),
        if p == Program::Nfqwall100 {
            "mode = \"enforce\""
        } else {
            "mode = \"log-only\""
        },
        w.protocol(),
        w.port(),
        if stateless { "stateless = true\n" } else { "" }
    );
    // Extra lines for the service (`track = "none"`, say), for what-if trials.
    if let Ok(extra) = std::env::var("COMPARE_SERVICE") {
        c.push_str(&extra.replace("\\n", "\n"));
        c.push('\n');
    }
    if p == Program::Nfqwall100 {
        for i in 0..100 {
            c.push_str(&format!(
                "[[service.rule]]\nname = \"block-{i}\"\naction = \"drop\"\n\
                 source = [\"10.{i}.0.0/16\"]\n"
            ));
        }
    }
    c
}

fn stats(setup: &Setup, sock: &str) -> serde_json::Value {
    let out =
        support::run(Command::new(&setup.nfqwall).args(["stats", "--json", "--socket", sock]));
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn trial(setup: &Setup, w: Workload, p: Program) -> Outcome {
    let pair = support::Pair::new("cmp");
    let queued = p != Program::Kernel;
    // nfqwall installs its own ruleset where the workload is queued as deployed.
    let own_rules = p.is_nfqwall() && w == Workload::Conns;
    let rules = server_rules(w, queued && !own_rules);
    if !rules.is_empty() {
        pair.server.sh(&rules.join(" && "));
    }
    let port = w.port();
    let server = format!("192.0.2.2:{port}");
    let _server = match w {
        Workload::Udp | Workload::Tcp => pair
            .server
            .spawn(&format!("iperf3 -s -B 192.0.2.2 -p {port}")),
        Workload::Conns => pair
            .server
            .spawn(&format!("{} tcp-server {server}", setup.loadgen.display())),
        Workload::Latency => pair
            .server
            .spawn(&format!("{} udp-echo {server}", setup.loadgen.display())),
    };
    assert!(
        support::wait_until(10, || pair
            .server
            .sh_out(&format!("ss -ltnuH 'sport = :{port}'"))
            .contains(&port.to_string())),
        "{}: the server did not start",
        w.key()
    );

    let sock = setup
        .dir
        .join(format!("stats-{}-{}.sock", w.key(), p.key()));
    let sock = sock.display().to_string();
    let daemon = match p {
        Program::Kernel => None,
        Program::NfqCrate => Some(
            pair.server
                .spawn(&format!("{} 0", setup.nfq_accept.display())),
        ),
        Program::CBatch => Some(pair.server.spawn(&format!("{} 0", setup.c_loop.display()))),
        Program::Suricata => Some(pair.server.spawn(&format!(
            "suricata -c {} -S /dev/null -q 0 -l {}",
            setup.suricata_yaml.display(),
            setup.dir.display()
        ))),
        Program::Nfqwall | Program::Nfqwall100 => {
            let config = setup.dir.join(format!("{}-{}.toml", w.key(), p.key()));
            let log = setup.dir.join(format!("{}-{}.log", w.key(), p.key()));
            std::fs::write(&config, nfqwall_config(w, p, &log)).unwrap();
            let d = pair.server.spawn(&format!(
                "{} run {}--config {} --socket {sock}",
                setup.nfqwall,
                if own_rules { "" } else { "--no-rules " },
                config.display()
            ));
            assert!(
                support::wait_until(10, || Path::new(&sock).exists()),
                "nfqwall did not start ({})",
                w.key()
            );
            Some(d)
        }
    };
    if queued {
        // Suricata takes seconds to start (its engine is built before it binds).
        let bind_s = if p == Program::Suricata { 60 } else { 10 };
        assert!(
            support::wait_until(bind_s, || queue_counters(&pair.server, 0)
                .is_some_and(|q| q.peer_portid != 0)),
            "{}: {} did not bind queue 0",
            w.key(),
            p.key()
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = daemon.as_ref().map_or(0, support::Guarded::pid);
    let before = p.is_nfqwall().then(|| stats(setup, &sock));
    let k0 = queue_counters(&pair.server, 0).unwrap_or_default();
    let cpu0 = cpu_seconds(pid);
    let secs = setup.seconds;
    let mut o = Outcome::default();
    match w {
        Workload::Udp | Workload::Tcp => {
            let load = if w == Workload::Tcp {
                format!("iperf3 -M 1448 -t {secs} -c 192.0.2.2 -p {port} -J")
            } else {
                format!("iperf3 -u -l 64 -b 0 -t {secs} -c 192.0.2.2 -p {port} -J")
            };
            let j: serde_json::Value =
                serde_json::from_str(&pair.client.sh_out(&load)).expect("iperf3 JSON");
            let sent = if w == Workload::Tcp {
                j["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0) / 1448
            } else {
                j["end"]["sum"]["packets"].as_u64().unwrap_or(0)
            };
            o.rate = sent as f64 / f64::from(secs);
        }
        Workload::Conns | Workload::Latency => {
            // Client ports for a few seconds of short connections.
            pair.client
                .sh("sysctl -qw net.ipv4.ip_local_port_range='1024 65000'");
            let load = if w == Workload::Conns {
                format!("{} tcp-conns {server} {secs} 4", setup.loadgen.display())
            } else {
                format!("{} udp-rr {server} 20000", setup.loadgen.display())
            };
            let j: serde_json::Value =
                serde_json::from_str(pair.client.sh_out(&load).trim()).expect("loadgen JSON");
            o.rate = j["per_s"].as_f64().unwrap_or(0.0);
            o.failed = j["failed"].as_u64().unwrap_or(0);
            o.p50_us = j["p50_us"].as_f64().unwrap_or(0.0);
            o.p99_us = j["p99_us"].as_f64().unwrap_or(0.0);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    o.cpu_s = cpu_seconds(pid) - cpu0;
    if queued {
        let k1 = queue_counters(&pair.server, 0).expect("queue 0 still bound");
        assert!(
            k1.peer_portid != 0,
            "{}: {} unbound queue 0 during the load",
            w.key(),
            p.key()
        );
        o.queued = k1.id_sequence - k0.id_sequence;
        o.user_dropped = k1.user_dropped - k0.user_dropped;
        o.queue_dropped = k1.queue_dropped - k0.queue_dropped;
        assert!(
            o.queued > 0,
            "{}: nothing was queued to {}",
            w.key(),
            p.key()
        );
    }
    if let Some(before) = before {
        let after = stats(setup, &sock);
        let n = |v: &serde_json::Value| v["packets"].as_u64().unwrap_or(0);
        o.judged = Some(n(&after).saturating_sub(n(&before)));
    }
    o
}

fn print_tables(
    results: &[(Workload, Program, Outcome)],
    workloads: &[Workload],
    programs: &[Program],
    rounds: u32,
) {
    let med = |w: Workload, p: Program, f: &dyn Fn(&Outcome) -> f64| -> f64 {
        let v: Vec<f64> = results
            .iter()
            .filter(|(rw, rp, _)| *rw == w && *rp == p)
            .map(|(_, _, o)| f(o))
            .collect();
        median(&v)
    };
    let sum = |w: Workload, p: Program, f: &dyn Fn(&Outcome) -> u64| -> u64 {
        results
            .iter()
            .filter(|(rw, rp, _)| *rw == w && *rp == p)
            .map(|(_, _, o)| f(o))
            .sum()
    };
    println!("\nmedians of {rounds} interleaved rounds");
    for &w in workloads {
        println!("\n== {} ==", w.key());
        match w {
            Workload::Udp | Workload::Tcp => {
                let c = med(w, Program::CBatch, &Outcome::per_cpu_s);
                println!(
                    "{:<30} {:>12} {:>9} {:>12} {:>10} {:>9}",
                    "program", "pkts/CPU-s", "vs C", "offered/s", "sockdrop", "qdrop"
                );
                for &p in programs {
                    let per = med(w, p, &Outcome::per_cpu_s);
                    println!(
                        "{:<30} {:>12} {:>9} {:>12.0} {:>10} {:>9}",
                        p.label(),
                        if per.is_nan() || per == 0.0 {
                            "-".into()
                        } else {
                            format!("{per:.0}")
                        },
                        if c > 0.0 && per > 0.0 {
                            format!("{:.2}x", per / c)
                        } else {
                            "-".into()
                        },
                        med(w, p, &|o| o.rate),
                        sum(w, p, &|o| o.user_dropped),
                        sum(w, p, &|o| o.queue_dropped)
                    );
                }
            }
            Workload::Conns | Workload::Latency => {
                let k_rate = med(w, Program::Kernel, &|o| o.rate);
                let k_p50 = med(w, Program::Kernel, &|o| o.p50_us);
                let k_p99 = med(w, Program::Kernel, &|o| o.p99_us);
                println!(
                    "{:<30} {:>10} {:>9} {:>8} {:>8} {:>10} {:>10} {:>7} {:>9}",
                    "program",
                    "per s",
                    "vs kernel",
                    "p50 us",
                    "p99 us",
                    "+p50 us",
                    "+p99 us",
                    "failed",
                    "CPU s"
                );
                for &p in programs {
                    let rate = med(w, p, &|o| o.rate);
                    let p50 = med(w, p, &|o| o.p50_us);
                    let p99 = med(w, p, &|o| o.p99_us);
                    // Added to the kernel's figures; unknown without a kernel trial.
                    let added = |v: f64, k: f64| {
                        if k_rate > 0.0 {
                            format!("{:.0}", v - k)
                        } else {
                            "-".into()
                        }
                    };
                    println!(
                        "{:<30} {:>10.0} {:>9} {:>8.0} {:>8.0} {:>10} {:>10} {:>7} {:>9.3}",
                        p.label(),
                        rate,
                        if k_rate > 0.0 {
                            format!("{:.2}x", rate / k_rate)
                        } else {
                            "-".into()
                        },
                        p50,
                        p99,
                        added(p50, k_p50),
                        added(p99, k_p99),
                        sum(w, p, &|o| o.failed),
                        med(w, p, &|o| o.cpu_s)
                    );
                }
            }
        }
    }
}

/// Replays a capture made here (a few seconds of iperf3 TCP, both directions) with
/// `nfqwall replay` and analyses it with tshark.
fn replay_step(setup: &Setup) {
    if Command::new("tshark").arg("-v").output().is_err() {
        println!("\nreplay: tshark is not installed; skipped");
        return;
    }
    let pair = support::Pair::new("cmpr");
    let pcap = std::env::var_os("COMPARE_CAPTURE")
        .map_or_else(|| setup.dir.join("bulk.pcap"), PathBuf::from);
    let _server = pair.server.spawn("iperf3 -s -B 192.0.2.2 -p 5201");
    assert!(support::wait_until(10, || pair
        .server
        .sh_out("ss -ltnH 'sport = :5201'")
        .contains("5201")));
    let mut dump = pair.server.spawn(&format!(
        "tcpdump -Z root -i veth-s -s 128 -B 65536 -w {} tcp port 5201",
        pcap.display()
    ));
    std::thread::sleep(Duration::from_millis(500));
    pair.client
        .sh_out("iperf3 -M 1448 -t 3 -c 192.0.2.2 -p 5201 -J >/dev/null");
    std::thread::sleep(Duration::from_millis(500));
    dump.signal("INT");
    let out = dump.wait_output();
    let note = String::from_utf8_lossy(&out.stderr);
    let captured = note
        .lines()
        .find(|l| l.contains("captured"))
        .unwrap_or("")
        .trim()
        .to_string();
    let time = |cmd: &mut Command| -> f64 {
        let t = Instant::now();
        let out = cmd
            .stdout(std::process::Stdio::null())
            .output()
            .expect("run");
        let secs = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        secs
    };
    let p = pcap.display().to_string();
    let best = |cmd: &dyn Fn() -> Command, n: usize| -> f64 {
        (0..n)
            .map(|_| time(&mut cmd()))
            .fold(f64::INFINITY, f64::min)
    };
    let replay = best(
        &|| {
            let mut c = Command::new(&setup.nfqwall);
            c.args(["replay", &p]);
            c
        },
        3,
    );
    let per_packet = best(
        &|| {
            let mut c = Command::new(&setup.nfqwall);
            c.args(["replay", "--per-packet", &p]);
            c
        },
        3,
    );
    let tshark = best(
        &|| {
            let mut c = Command::new("tshark");
            c.args(["-n", "-r", &p, "-Y", "tcp.analysis.flags"]);
            c
        },
        1,
    );
    let bytes = std::fs::metadata(&pcap).map_or(0, |m| m.len());
    assert!(bytes > 0, "tcpdump wrote no capture: {note}");
    println!("\n== replay of a capture made here ({captured}, {bytes} bytes) ==");
    println!("nfqwall replay:              {:>8.3} s (best of 3)", replay);
    println!(
        "nfqwall replay --per-packet: {:>8.3} s (best of 3)",
        per_packet
    );
    println!("tshark -Y tcp.analysis.flags: {:>7.3} s", tshark);
    println!(
        "RESULT replay bytes={bytes} replay_s={replay:.3} per_packet_s={per_packet:.3} \
         tshark_s={tshark:.3} ratio={:.1} ratio_per_packet={:.1}",
        tshark / replay,
        tshark / per_packet
    );
}
