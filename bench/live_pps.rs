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
//! ceiling of the same workload.

#[path = "../tests/support/mod.rs"]
mod support;

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

/// utime + stime of process `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) : state is field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Queue 0's kernel counters in the server namespace: (id_sequence, user_dropped,
/// queue_dropped).
fn kernel_queue(ns: &support::Netns) -> (u64, u64, u64) {
    let text = ns.sh_out("cat /proc/net/netfilter/nfnetlink_queue");
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 8 && f[0] == "0" {
            let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
            return (n(7), n(6), n(5));
        }
    }
    (0, 0, 0)
}

fn main() {
    if !support::require_root("live_pps") {
        return;
    }
    let pair = support::Pair::new("pps");
    pair.server.sh(
        "iptables -t raw -A PREROUTING -p udp --dport 5201 -j CT --notrack && \
         iptables -t raw -A OUTPUT -p udp --sport 5201 -j CT --notrack && \
         iptables -A INPUT -p udp --dport 5201 -m conntrack --ctstate UNTRACKED \
           -j NFQUEUE --queue-num 0 --queue-bypass",
    );
    let dir = std::env::temp_dir().join(format!("nfqwall-pps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pps.toml");
    std::fs::write(
        &config,
        "[daemon]\nmode = \"enforce\"\nqueues = \"0\"\nlog = \"/dev/null\"\n\
         [[service]]\nname = \"bulk-udp\"\nprotocol = \"udp\"\nports = [5201]\n\
         stateless = true\ndefault = \"accept\"\n\
         [[service.rule]]\nname = \"block-doc\"\naction = \"drop\"\nsource = [\"203.0.113.0/24\"]\n",
    )
    .unwrap();
    let sock = dir.join("stats.sock").display().to_string();
    let c_loop = std::env::var("LIVE_PPS_TARGET").is_ok_and(|t| t == "c");
    let _server = pair.server.spawn("iperf3 -s -B 192.0.2.2 -p 5201");
    let daemon = if c_loop {
        let exe = dir.join("nfq_batch");
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/c/nfq_batch.c");
        support::run(Command::new("cc").args([
            "-O2",
            "-o",
            &exe.display().to_string(),
            src,
            "-lnetfilter_queue",
        ]));
        let d = pair.server.spawn(&format!("{} 0", exe.display()));
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
        let d = pair.server.spawn(&format!(
            "{} run --no-rules --config {} --socket {sock}",
            bin(),
            config.display()
        ));
        assert!(
            support::wait_until(10, || std::path::Path::new(&sock).exists()),
            "daemon did not start"
        );
        d
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = if c_loop {
        serde_json::Value::Null
    } else {
        stats(&sock)
    };
    let k0 = kernel_queue(&pair.server);
    let cpu0 = cpu_seconds(daemon.pid());
    let out = pair.client.sh_out(&format!(
        "iperf3 -u -l 64 -b 0 -t {SECONDS} -c 192.0.2.2 -p 5201 -J"
    ));
    std::thread::sleep(Duration::from_millis(500));
    let cpu = cpu_seconds(daemon.pid()) - cpu0;
    let k1 = kernel_queue(&pair.server);
    let (queued, user_dropped, queue_dropped) = (k1.0 - k0.0, k1.1 - k0.1, k1.2 - k0.2);
    let after = if c_loop {
        serde_json::Value::Null
    } else {
        stats(&sock)
    };
    let j: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
    let sent = j["end"]["sum"]["packets"].as_u64().unwrap_or(0);
    let lost = j["end"]["sum"]["lost_packets"].as_u64().unwrap_or(0);
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
    println!(
        "RESULT target={} sent={sent} queued={queued} judged={judged} cpu_s={cpu:.2} \
         per_cpu_s={:.0} user_dropped={user_dropped} queue_dropped={queue_dropped} lost={lost}",
        if c_loop { "c".to_string() } else { bin() },
        queued as f64 / cpu.max(0.01)
    );
    std::fs::remove_dir_all(&dir).ok();
}
