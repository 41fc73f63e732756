//! End-to-end packets per second through `nfqwall run`: `sudo cargo bench --bench live_pps`.
//!
//! Two network namespaces joined by veth; the server exempts UDP port 5201 from
//! conntrack in both directions and queues every UNTRACKED datagram to NFQUEUE 0 (the
//! stateless-service path, where nfqwall judges every packet). iperf3 sends 64-byte
//! datagrams as fast as it can for a few seconds; the bench reads the daemon's and the
//! kernel's counters and prints datagrams offered, judged by nfqwall, accepted by the
//! kernel's fail-open, shed, and dropped. Root only (it needs namespaces).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_nfqwall");
const SECONDS: u32 = 5;

fn stats(sock: &str) -> serde_json::Value {
    let out = support::run(Command::new(BIN).args(["stats", "--json", "--socket", sock]));
    serde_json::from_slice(&out.stdout).unwrap()
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
    let _server = pair.server.spawn("iperf3 -s -B 192.0.2.2 -p 5201");
    let _daemon = pair.server.spawn(&format!(
        "{BIN} run --no-rules --config {} --socket {sock}",
        config.display()
    ));
    assert!(
        support::wait_until(10, || std::path::Path::new(&sock).exists()),
        "daemon did not start"
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = stats(&sock);
    let out = pair.client.sh_out(&format!(
        "iperf3 -u -l 64 -b 0 -t {SECONDS} -c 192.0.2.2 -p 5201 -J"
    ));
    std::thread::sleep(Duration::from_millis(500));
    let after = stats(&sock);
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
    std::fs::remove_dir_all(&dir).ok();
}
