//! End-to-end packets per second through `nfqwall run`: `sudo cargo bench --bench live_pps`.
//!
//! Two network namespaces joined by veth; the server exempts UDP port 5201 from
//! conntrack in both directions and queues every UNTRACKED datagram to NFQUEUE 0 (the
//! stateless-service path, where nfqwall judges every packet). iperf3 sends 64-byte
//! datagrams as fast as it can for a few seconds; the bench reads the daemon's and the
//! kernel's counters and prints datagrams offered, judged by nfqwall, accepted by the
//! kernel's fail-open, shed, and dropped. Root only (it needs namespaces).
//!
//! It also prints the CPU time the verdict process spent during the run (utime +
//! stime from `/proc/PID/stat`), packets per CPU-second, and the kernel's queue
//! counters over the run (queued = id_sequence, socket drops = user_dropped, queue
//! full = queue_dropped), and one `RESULT` line with those for scripts.
//!
//! Environment: `NFQWALL_BIN` runs another nfqwall binary (an older build, for A/B
//! runs); `LIVE_PPS_TARGET=c` runs instead the minimal C libnetfilter_queue batch
//! loop of bench/c/nfq_batch.c (built here with `cc`), which judges nothing: the
//! ceiling of the same workload; `LIVE_PPS_TARGET=kernel` queues nothing (the
//! kernel alone: offered and delivered rates only).
//!
//! `LIVE_PPS_WORKLOAD=tcp` replaces the UDP datagrams by one iperf3 TCP bulk flow
//! (1448-byte segments, offloads off): conntrack tracks it, and every packet of the
//! client's direction (SYN, data, FIN) is queued from `mangle INPUT`, the server's
//! answers are not; nfqwall judges it as a stateful TCP service (`default =
//! "accept"`, conntrack state from the kernel). `TOP` prints the reasons nfqwall gave
//! most.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/mod.rs"]
mod common;

use support::cpu_seconds;

use std::process::Command;
use std::time::Duration;

const SECONDS: u32 = 5;

fn bin() -> String {
    std::env::var("NFQWALL_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_nfqwall").to_string())
}

fn stats(sock: &str) -> serde_json::Value {
    let out = support::run(Command::new(bin()).args(["stats", "--json", "--socket", sock]));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn main() {
    if !support::require_root("live_pps") {
        return;
    }
    let pair = support::Pair::new("pps");
    let tcp = std::env::var("LIVE_PPS_WORKLOAD").is_ok_and(|w| w == "tcp");
    let target = std::env::var("LIVE_PPS_TARGET").unwrap_or_default();
    let kernel_only = target == "kernel";
    if tcp {
        if !kernel_only {
            let rules = common::tcp_state_mark_queue(5201);
            pair.server.sh(&rules.join(" && "));
        }
    } else {
        pair.server.sh(
            "iptables -t raw -A PREROUTING -p udp --dport 5201 -j CT --notrack && \
             iptables -t raw -A OUTPUT -p udp --sport 5201 -j CT --notrack",
        );
        if !kernel_only {
            pair.server.sh(
                "iptables -A INPUT -p udp --dport 5201 -m conntrack --ctstate UNTRACKED \
                   -j NFQUEUE --queue-num 0 --queue-bypass",
            );
        }
    }
    let dir = std::env::temp_dir().join(format!("nfqwall-pps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pps.toml");
    let service = if tcp {
        "[[service]]\nname = \"bulk-tcp\"\nprotocol = \"tcp\"\nports = [5201]\n\
         default = \"accept\"\n"
    } else {
        "[[service]]\nname = \"bulk-udp\"\nprotocol = \"udp\"\nports = [5201]\n\
         stateless = true\ndefault = \"accept\"\n"
    };
    std::fs::write(
        &config,
        format!(
            "[daemon]\nmode = \"enforce\"\nqueues = \"0\"\nlog = \"/dev/null\"\n{service}\
             [[service.rule]]\nname = \"block-doc\"\naction = \"drop\"\nsource = [\"203.0.113.0/24\"]\n"
        ),
    )
    .unwrap();
    let sock = dir.join("stats.sock").display().to_string();
    let c_loop = target == "c";
    let _server = pair.server.spawn("iperf3 -s -B 192.0.2.2 -p 5201");
    assert!(
        support::wait_until(10, || pair
            .server
            .sh_out("ss -ltnuH 'sport = :5201'")
            .contains("5201")),
        "iperf3 server did not start"
    );
    let daemon = if kernel_only {
        None
    } else if c_loop {
        let exe = dir.join("nfq_batch");
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/c/nfq_batch.c");
        support::run(Command::new("cc").args([
            "-O2",
            "-o",
            &exe.display().to_string(),
            src,
            "-lnetfilter_queue",
        ]));
        let d = Some(pair.server.spawn(&format!("{} 0", exe.display())));
        assert!(
            support::wait_until(10, || pair
                .server
                .sh_out("cat /proc/net/netfilter/nfnetlink_queue")
                .lines()
                .any(|l| l.split_whitespace().next() == Some("0"))),
            "C loop did not bind"
        );
        d
    } else {
        let d = Some(pair.server.spawn(&format!(
            "{} run --no-rules --config {} --socket {sock}",
            bin(),
            config.display()
        )));
        assert!(
            support::wait_until(10, || std::path::Path::new(&sock).exists()),
            "daemon did not start"
        );
        d
    };
    std::thread::sleep(Duration::from_millis(300));
    let nfqwall = daemon.is_some() && !c_loop;
    let pid = daemon.as_ref().map_or(0, support::Guarded::pid);
    let before = if !nfqwall {
        serde_json::Value::Null
    } else {
        stats(&sock)
    };
    let kernel_queue = |ns: &support::Netns| {
        common::queue_counters(ns, 0).map_or((0, 0, 0), |q| {
            (q.id_sequence, q.user_dropped, q.queue_dropped)
        })
    };
    let k0 = kernel_queue(&pair.server);
    let cpu0 = cpu_seconds(pid);
    let load = if tcp {
        format!("iperf3 -M 1448 -t {SECONDS} -c 192.0.2.2 -p 5201 -J")
    } else {
        format!("iperf3 -u -l 64 -b 0 -t {SECONDS} -c 192.0.2.2 -p 5201 -J")
    };
    let out = pair.client.sh_out(&load);
    std::thread::sleep(Duration::from_millis(500));
    let cpu = cpu_seconds(pid) - cpu0;
    let k1 = kernel_queue(&pair.server);
    let (queued, user_dropped, queue_dropped) = (k1.0 - k0.0, k1.1 - k0.1, k1.2 - k0.2);
    let after = if !nfqwall {
        serde_json::Value::Null
    } else {
        stats(&sock)
    };
    let j: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
    // TCP: segments of the client's direction seen at the server's veth stand in
    // for packets (iperf3 reports bytes); UDP: iperf3's datagrams.
    let (sent, lost) = if tcp {
        let bytes = j["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        (bytes / 1448, 0)
    } else {
        (
            j["end"]["sum"]["packets"].as_u64().unwrap_or(0),
            j["end"]["sum"]["lost_packets"].as_u64().unwrap_or(0),
        )
    };
    let mbit = if tcp {
        j["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e6
    } else {
        j["end"]["sum"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6
    };
    let d = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    let judged = d("packets");
    let secs = f64::from(SECONDS);
    println!(
        "datagrams offered by iperf3:      {sent:>10} ({:.0}/s)",
        sent as f64 / secs
    );
    println!(
        "judged by nfqwall:                {judged:>10} ({:.0}/s)",
        judged as f64 / secs
    );
    println!("accepted:                         {:>10}", d("accepted"));
    println!("dropped:                          {:>10}", d("dropped"));
    println!("lost on the way (iperf3 receiver): {lost:>9}");
    println!("kernel queue counters after: {}", after["kernel"]);
    println!("verdict process CPU:              {cpu:>10.2} s");
    println!(
        "queued by the kernel:             {queued:>10} ({:.0} per CPU-second)",
        queued as f64 / cpu.max(0.01)
    );
    println!("socket drops (user_dropped):      {user_dropped:>10}");
    println!("queue full (queue_dropped):       {queue_dropped:>10}");
    if std::env::var("TOP").is_ok() && nfqwall {
        let mut top: Vec<(String, u64)> = after["by_reason"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let was = before["by_reason"][k].as_u64().unwrap_or(0);
                        (k.clone(), v.as_u64().unwrap_or(0) - was)
                    })
                    .filter(|(_, n)| *n > 0)
                    .collect()
            })
            .unwrap_or_default();
        top.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        println!("reasons given most: {top:?}");
    }
    println!(
        "RESULT workload={} target={} sent={sent} mbit={mbit:.0} queued={queued} judged={judged} \
         cpu_s={cpu:.2} per_cpu_s={:.0} user_dropped={user_dropped} queue_dropped={queue_dropped} \
         lost={lost}",
        if tcp { "tcp" } else { "udp" },
        if kernel_only {
            "kernel".to_string()
        } else if c_loop {
            "c".to_string()
        } else {
            bin()
        },
        queued as f64 / cpu.max(0.01)
    );
    std::fs::remove_dir_all(&dir).ok();
}
