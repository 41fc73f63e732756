//! The shadow feed's cost: `sudo cargo bench --bench feed`.
//!
//! 1. **Per core** (no root needed): kernel-format NFLOG batches (64 packets of
//!    IPv4 + TCP with timestamps, as `--nflog-size 128` copies them, over 1,000
//!    established flows, both directions) parsed and fed to one engine by one thread
//!    ([`nfqwall::daemon::feed::handle_batch`], exactly what the feed thread does
//!    after its `recv`): packets per second per core.
//! 2. **Live** (root): two namespaces joined by veth (offloads off, so a packet is a
//!    segment), iperf3 TCP at a fixed rate from client to server, the server running
//!    `nfqwall run` with the service shadowed (`track = "shadow"`) or not
//!    (`track = "none"`), and no nfqwall at all. For each: packets per second through
//!    the server (its veth, both directions), the daemon's CPU (utime + stime of the
//!    process over the run) and the whole machine's busy CPU, in % of one core.
//!
//! `FEED_RATE` (iperf3 `-b`, default `600M`) and `FEED_SECONDS` (default 5) change
//! the live run; `FEED_DAEMON` adds `[daemon]` lines (`"feed_threshold = 256"`);
//! `FEED_LIVE=0` skips it.

#[path = "../tests/support/mod.rs"]
mod support;

use nfqwall::config::Config;
use nfqwall::daemon::feed::{handle_batch, FeedShared};
use nfqwall::engine::{CtHint, CtState, Engine, LinkType, PacketMeta};
use nfqwall::nflog::SeqGaps;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nfqwall");

/// One NFULNL_MSG_PACKET as nfnetlink_log lays it out, carrying `payload`.
fn message(seq: u32, payload: &[u8]) -> Vec<u8> {
    fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    let mut body = vec![2, 0];
    body.extend_from_slice(&7300u16.to_be_bytes());
    attr(&mut body, 1, &[0x08, 0x00, 1, 0]); // PACKET_HDR: IPv4, LOCAL_IN
    attr(&mut body, 2, &0u32.to_be_bytes()); // MARK
    attr(&mut body, 4, &3u32.to_be_bytes()); // IFINDEX_INDEV
    attr(&mut body, 8, &[0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0]); // HWADDR
    attr(&mut body, 12, &seq.to_be_bytes()); // SEQ
    attr(&mut body, 9, payload); // PAYLOAD
    let mut m = Vec::new();
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&0x0400u16.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&body);
    m
}

/// The first 128 bytes (or less) of a TCP segment with timestamps, `len` bytes of
/// data, on flow `flow`, from the client if `up`.
fn segment(flow: u16, up: bool, seq: u32, ack: u32, len: usize) -> Vec<u8> {
    use etherparse::{PacketBuilder, TcpOptionElement};
    let (c, s) = ([192, 0, 2, 1], [192, 0, 2, 2]);
    let (src, dst, sp, dp) = if up {
        (c, s, 10_000 + flow, 80)
    } else {
        (s, c, 80, 10_000 + flow)
    };
    let b = PacketBuilder::ipv4(src, dst, 64)
        .tcp(sp, dp, seq, 502)
        .ack(ack)
        .options(&[
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::Timestamp(seq, ack),
        ])
        .unwrap();
    let payload = vec![0u8; len];
    let mut out = Vec::new();
    b.write(&mut out, &payload).unwrap();
    out.truncate(128);
    out
}

fn per_core() {
    const FLOWS: u16 = 1000;
    const BATCH: usize = 64;
    const ROUNDS: usize = 400;
    let engine = Engine::new(&Config::builtin_default());
    // Per flow: client data segments of 1448 bytes, each answered by an ACK.
    let mut batches = Vec::new();
    let mut seq = 0u32;
    let mut current = Vec::new();
    let mut in_batch = 0;
    let mut total = 0usize;
    for round in 0..ROUNDS as u32 {
        for f in 0..FLOWS {
            let c = 1_000_000u32.wrapping_add(round * 1448);
            let s = 5_000_000u32;
            for (up, a, b, len) in [(true, c, s, 1448), (false, s, c + 1448, 0)] {
                current.extend(message(seq, &segment(f, up, a, b, len)));
                seq += 1;
                in_batch += 1;
                total += 1;
                if in_batch == BATCH {
                    batches.push(std::mem::take(&mut current));
                    in_batch = 0;
                }
            }
        }
    }
    let meta = PacketMeta {
        link: LinkType::RawIp,
        ct: CtHint::Given(CtState::Established),
        in_iface: None,
        out_iface: None,
        mark: 0,
        wire_len: 65_575,
    };
    let fs = FeedShared::default();
    let mut gaps = SeqGaps::default();
    let start = Instant::now();
    for (i, b) in batches.iter().enumerate() {
        handle_batch(&engine, b, i as u64 * 1_000_000, &meta, &mut gaps, &fs);
    }
    let el = start.elapsed().as_secs_f64();
    let n = fs.packets.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(n as usize, total - total % BATCH);
    println!(
        "feed thread, one core: {n} packets in {} batches of {BATCH} over {FLOWS} flows: \
         {:.2} Mpps ({:.0} ns/packet), {} lost, {} flows",
        batches.len(),
        n as f64 / el / 1e6,
        el * 1e9 / n as f64,
        fs.lost.load(std::sync::atomic::Ordering::Relaxed),
        engine.flows().len()
    );
}

/// utime + stime of `pid`, in seconds.
fn cpu_of(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Busy and total jiffies of the whole machine.
fn machine() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    (total - idle, total)
}

fn veth_packets(pair: &support::Pair) -> u64 {
    let out = pair.server.sh_out("cat /sys/class/net/veth-s/statistics/rx_packets /sys/class/net/veth-s/statistics/tx_packets");
    out.split_whitespace()
        .filter_map(|x| x.parse::<u64>().ok())
        .sum()
}

/// One live run: `track` is `Some("shadow" | "none")` or `None` (no nfqwall).
fn live(track: Option<&str>, rate: &str, secs: u32) {
    let pair = support::Pair::new("feed");
    let dir = std::env::temp_dir().join(format!("nfqwall-feed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("stats.sock").display().to_string();
    let _server = pair.server.spawn("iperf3 -s -B 192.0.2.2 -p 5201");
    // FEED_DAEMON: more [daemon] lines, such as "feed_threshold = 256".
    let extra = std::env::var("FEED_DAEMON").unwrap_or_default();
    let daemon = track.map(|t| {
        let config = dir.join("feed.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nmode = \"enforce\"\nqueues = \"0\"\nlog = \"/dev/null\"\n{extra}\n\
                 [[service]]\nname = \"bulk\"\nprotocol = \"tcp\"\nports = [5201]\n\
                 track = \"{t}\"\n"
            ),
        )
        .unwrap();
        let d = pair.server.spawn(&format!(
            "{BIN} run --config {} --socket {sock}",
            config.display()
        ));
        assert!(
            support::wait_until(20, || std::path::Path::new(&sock).exists()),
            "daemon did not start"
        );
        d
    });
    std::thread::sleep(Duration::from_millis(500));
    let pid = daemon.as_ref().map_or(0, |d| d.pid());
    let (cpu0, m0, p0, t0) = (cpu_of(pid), machine(), veth_packets(&pair), Instant::now());
    let out = pair.client.sh_out(&format!(
        "iperf3 -c 192.0.2.2 -p 5201 -t {secs} -b {rate} -M 1400 -J"
    ));
    let el = t0.elapsed().as_secs_f64();
    let (cpu1, m1, p1) = (cpu_of(pid), machine(), veth_packets(&pair));
    let j: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
    let bps = j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let pps = (p1 - p0) as f64 / el;
    let busy = (m1.0 - m0.0) as f64 / (m1.1 - m0.1).max(1) as f64 * 200.0;
    let feed = if track.is_some() {
        let s = support::run(Command::new(BIN).args(["stats", "--json", "--socket", &sock]));
        let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
        let batches = v["feed"]["batches"].as_u64().unwrap_or(0);
        format!(
            "feed packets {} lost {}, {:.1} packets per batch",
            v["feed_packets"],
            v["feed_lost"],
            v["feed_packets"].as_u64().unwrap_or(0) as f64 / batches.max(1) as f64
        )
    } else {
        String::new()
    };
    println!(
        "{:<22} {:>7.0} Mbit/s {:>8.0} packets/s  daemon CPU {:>5.1}% of a core  machine busy {:>5.1}% (of 200%)  {feed}",
        match track {
            Some("shadow") => "nfqwall, track=shadow",
            Some(_) => "nfqwall, track=none",
            None => "no nfqwall",
        },
        bps / 1e6,
        pps,
        (cpu1 - cpu0) / el * 100.0,
        busy
    );
    drop(daemon);
    std::fs::remove_dir_all(&dir).ok();
}

fn main() {
    per_core();
    if std::env::var("FEED_LIVE").as_deref() == Ok("0")
        || !support::require_root("feed (live part)")
    {
        return;
    }
    let rate = std::env::var("FEED_RATE").unwrap_or_else(|_| "600M".into());
    let secs: u32 = std::env::var("FEED_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!("live: iperf3 TCP at {rate} for {secs} s, client -> server over veth");
    for track in [None, Some("none"), Some("shadow")] {
        live(track, &rate, secs);
    }
}
