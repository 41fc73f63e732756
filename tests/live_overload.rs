//! Load through the live daemon on the hardened host of `tests/hardened` (issue 10,
//! "Reliability"): established traffic at about twice the rate nfqwall can judge,
//! and an event storm (a `log` rule that matches every packet of a bulk transfer).
//!
//! The overload is made real on a 2-core machine by holding the daemon to a share of
//! one core (cgroup v1 `cpu` controller, `cpu.cfs_quota_us`) while iperf3 sends as
//! fast as the link takes: the sender is not the limit, nfqwall is, whatever else
//! loads the machine. The queue then fills, the kernel's fail-open (`queue_maxlen`
//! reached) passes the excess on unjudged, which must meet the host's rules exactly
//! as if nfqwall were absent, and the queue thread judges every packet it takes
//! (`shedding = "auto"`: no shedding where the queue fails open).
//!
//! Its own test binary, and its tests run one at a time: each loads both cores.
//! Run: `sudo cargo test --release --test live_overload -- --nocapture`.

mod hardened;
mod support;

use hardened::{config, Family, Host, CLOSED};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::{cpu_seconds, peak_rss};

/// One test at a time: both load the machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// The bulk transfer's port (the host's rules accept it: INPUT's policy).
const BULK: u16 = 5201;
/// The overload's rate: 64-byte datagrams at 60 Mbit/s are about 117,000 a second,
/// against about 50,000 that nfqwall judges in a tenth of a core.
const OVERLOAD_MBIT: u32 = 60;
/// Seconds of the control stream, nfqwall not held back.
const CONTROL_SECS: u64 = 4;
/// Seconds of overload.
const LOAD_SECS: u64 = 8;
/// The daemon's share of one core while overloaded, in percent.
const CPU_PERCENT: u32 = 10;
/// Peak resident memory allowed (the default `max_flows` is preallocated lazily; a
/// few flows, the event channel, buffers).
const RSS_BOUND: u64 = 64 << 20;

/// The daemon's processes held to a share of a core: a cgroup v1 `cpu` group.
/// Lifted (the tasks moved back, the group removed) on drop.
struct CpuLimit {
    dir: PathBuf,
    pid: u32,
}

impl CpuLimit {
    const ROOT: &'static str = "/sys/fs/cgroup/cpu";

    fn new(name: &str, pid: u32, percent: u32) -> CpuLimit {
        let dir = Path::new(CpuLimit::ROOT).join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
            panic!(
                "harness: cannot create {} ({e}): the overload test needs the cgroup v1 \
                 cpu controller",
                dir.display()
            )
        });
        let limit = CpuLimit { dir, pid };
        std::fs::write(limit.dir.join("cpu.cfs_period_us"), "100000").expect("cfs period");
        std::fs::write(
            limit.dir.join("cpu.cfs_quota_us"),
            (percent * 1000).to_string(),
        )
        .expect("cfs quota");
        std::fs::write(limit.dir.join("cgroup.procs"), pid.to_string()).expect("move daemon");
        limit
    }

    /// Periods in which the group was throttled: proof that the limit bit.
    fn throttled(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("cpu.stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn lift(&self) {
        let _ = std::fs::write(
            Path::new(CpuLimit::ROOT).join("cgroup.procs"),
            self.pid.to_string(),
        );
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        self.lift();
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn n(v: &Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

/// Packets of the bulk port that arrived at the server (the harness's ingress
/// observer, before any rule).
fn bulk_arrived(h: &Host) -> u64 {
    let text = h
        .pair
        .server
        .sh_out("nft -j list chain netdev nfqwtest arrived");
    let v: Value = serde_json::from_str(&text).expect("nft -j");
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["rule"]["comment"] == "bulk")
        .flat_map(|e| e["rule"]["expr"].as_array().cloned().unwrap_or_default())
        .filter_map(|x| x["counter"]["packets"].as_u64())
        .sum()
}

/// Starts iperf3's server in the server namespace and counts the bulk port's
/// arriving packets.
fn bulk_server(h: &mut Host) {
    h.pair.server.sh(&format!(
        "nft add rule netdev nfqwtest arrived th dport {BULK} counter comment bulk"
    ));
    let s = h
        .pair
        .server
        .spawn(&format!("iperf3 -s -B 192.0.2.2 -p {BULK}"));
    h.servers.push(s);
    let ns = &h.pair.server;
    assert!(
        support::wait_until(10, || ns
            .sh_out(&format!("ss -ltnH 'sport = :{BULK}'"))
            .contains(&BULK.to_string())),
        "harness: iperf3 server did not start"
    );
}

/// An iperf3 upload from the client for `secs`, at `rate` (`0`: as fast as it goes);
/// returns the receiver's bytes.
fn upload(h: &Host, secs: u64, rate: &str) -> u64 {
    let out = h.pair.client.sh_out(&format!(
        "iperf3 -M 1448 -t {secs} -b {rate} -c 192.0.2.2 -p {BULK} -J"
    ));
    let j: Value = serde_json::from_str(&out).expect("iperf3 JSON");
    j["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0)
}

#[test]
fn overload_at_twice_the_judged_rate_keeps_the_service_and_the_host_rules() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !support::require_root("overload_at_twice_the_judged_rate") {
        return;
    }
    let mut h = Host::new("ovl");
    bulk_server(&mut h);
    // Every state of the services queued: established traffic is judged too. The
    // overload is UDP at a fixed rate: TCP would slow itself to what nfqwall judges
    // (measured: a bulk upload settled at the judged rate, nothing shed, no fail-open).
    // Its rate rule is judged by nfqwall (a rate has no kernel rendering), so every
    // datagram is queued; no source reaches the rate.
    h.start_daemon(Some(&format!(
        "{}queue = [\"invalid\", \"new\", \"established\"]\n\
         [[service]]\nname = \"bulk\"\nprotocol = \"udp\"\nports = [{BULK}]\n\
         queue = [\"new\", \"established\"]\n\
         [[service.rule]]\nname = \"flood-guard\"\naction = \"drop\"\nrate = \"10000000/s\"\n",
        config("enforce", "", "")
    )));
    let pid = h.daemon_pid();
    let rss_start = n(&h.stats(), &["rss_bytes"]);
    let probes: Vec<_> = (0..4)
        .map(|i| {
            h.probe(
                &format!("SYN to {CLOSED} #{i}"),
                Family::V4,
                21001 + i,
                CLOSED,
            )
        })
        .collect();
    let packets: Vec<_> = probes
        .iter()
        .map(|p| p.packet("S", 1_000_000, 0, 0))
        .collect();

    let percent = std::env::var("OVERLOAD_CPU_PERCENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CPU_PERCENT);
    // The control: the same stream, nfqwall not held back (what this machine loses
    // at this rate anyway: sender, receiver and daemon share two cores).
    let udp = format!(
        "iperf3 -u -l 64 -w 4M -b {OVERLOAD_MBIT}M -t {CONTROL_SECS} -c 192.0.2.2 -p {BULK} -J"
    );
    let control: Value = serde_json::from_str(&h.pair.client.sh_out(&udp)).expect("iperf3 JSON");
    let control_loss = n(&control, &["end", "sum", "lost_packets"]) as f64
        / n(&control, &["end", "sum", "packets"]).max(1) as f64;
    let limit = CpuLimit::new(&format!("{}-cpu", h.pair.server.name), pid, percent);
    let kq = || {
        h.kernel_queue()
            .map_or((0, 0), |k| (k.queue_dropped, k.user_dropped))
    };
    let kq0 = kq();
    let before = h.stats();
    let arrived0 = bulk_arrived(&h);
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let mut bulk = h.pair.client.spawn(&format!(
        "iperf3 -u -l 64 -w 4M -b {OVERLOAD_MBIT}M -t {LOAD_SECS} -c 192.0.2.2 -p {BULK} -J"
    ));
    std::thread::sleep(Duration::from_secs(2));
    // During the overload: the web service answers, the closed port stays closed.
    let downloads = h.downloads(Family::V4, 10, None);
    h.send(&packets);
    let closed_connect = h.connect(Family::V4, CLOSED, None, 2);
    let report: Value = serde_json::from_slice(&bulk.wait_output().stdout).expect("iperf3 JSON");
    let (sent, lost) = (
        n(&report, &["end", "sum", "packets"]),
        n(&report, &["end", "sum", "lost_packets"]),
    );
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let throttled = limit.throttled();
    let kq1 = kq();
    let rcvbuf = h.pair.server.sh_out("nstat -az UdpRcvbufErrors | tail -1");
    limit.lift();
    h.settle();
    // The ruleset's "queued, not judged" counter is read once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let arrived = bulk_arrived(&h) - arrived0;
    let after_load = h.stats();

    // When the load drops, judging resumes: a paced transfer is judged whole.
    let quiet0 = h.stats();
    let quiet_bytes = upload(&h, 2, "20M");
    h.settle();
    std::thread::sleep(Duration::from_millis(1500));
    let quiet = h.stats();
    let rss = peak_rss(pid);

    let d = |a: &Value, b: &Value, k: &[&str]| n(a, k).saturating_sub(n(b, k));
    // After the backlog drained: the packets still queued when the load ended count.
    let judged = d(&after_load, &before, &["packets"]) - d(&after_load, &before, &["shed"]);
    let shed = d(&after_load, &before, &["shed"]);
    let kernel = d(&after_load, &before, &["unjudged", "kernel"]);
    let judged_rate = judged as f64 / secs;
    let offered_rate = arrived as f64 / secs;
    eprintln!(
        "overload: {arrived} bulk packets arrived in {secs:.1} s ({offered_rate:.0}/s), \
         judged {judged} ({judged_rate:.0}/s), shed {shed}, {:.2}x offered/taken, \
         kernel fail-open {kernel}; UDP {sent} sent, {lost} lost ({:.1}%, control {:.1}%); \
         {downloads}/10 downloads; \
         daemon CPU {cpu:.2} s at a {percent}% limit (throttled {throttled} periods); \
         kernel queue_dropped {} user_dropped {}; server {}; \
         RSS {:.1} -> peak {:.1} MiB; quiet phase: {} judged, {} shed, {} kernel, {:.1} MiB",
        offered_rate * secs / (judged + shed).max(1) as f64,
        lost as f64 * 100.0 / sent.max(1) as f64,
        control_loss * 100.0,
        kq1.0 - kq0.0,
        kq1.1 - kq0.1,
        rcvbuf.trim(),
        rss_start as f64 / f64::from(1 << 20),
        rss as f64 / f64::from(1 << 20),
        d(&quiet, &quiet0, &["packets"]),
        d(&quiet, &quiet0, &["shed"]),
        d(&quiet, &quiet0, &["unjudged", "kernel"]),
        quiet_bytes as f64 / f64::from(1 << 20),
    );

    let mut failures = Vec::new();
    // The harness made a real overload: the limit bit, and more arrived than was judged.
    if throttled == 0 {
        failures.push("harness: the CPU limit never throttled the daemon".to_string());
    }
    // What the queue thread took off the queue (judged or shed) against what came.
    let handled_rate = (judged + shed) as f64 / secs;
    if offered_rate < 1.5 * handled_rate {
        failures.push(format!(
            "harness: not an overload: {offered_rate:.0}/s offered, {handled_rate:.0}/s \
             taken off the queue"
        ));
    }
    // Every packet is accounted for: judged, shed, or failed open by the kernel (the
    // web downloads and probes add a few hundred of their own to the first two).
    let accounted = judged + shed + kernel;
    if accounted < arrived || accounted > arrived + arrived / 100 {
        failures.push(format!(
            "{arrived} arrived, but {judged} judged + {shed} shed + {kernel} failed open \
             = {accounted}"
        ));
    }
    // The service kept flowing.
    let loss = lost as f64 / sent.max(1) as f64;
    if sent == 0 || loss > control_loss + 0.10 {
        failures.push(format!(
            "the UDP stream did not flow: {sent} sent, {lost} lost ({:.1}%, control {:.1}%)",
            loss * 100.0,
            control_loss * 100.0
        ));
    }
    if downloads != 10 {
        failures.push(format!("{downloads} of 10 downloads during the overload"));
    }
    // What did not fit the queue the kernel passed on, counted (the ruleset's
    // "queued, not judged" counter); with fail-open, the default `shedding = "auto"`
    // leaves the excess to it, and the thread judges all it takes.
    if kernel == 0 {
        failures.push("an overload with nothing failed open".into());
    }
    if shed != 0 {
        failures.push(format!("{shed} shed although the queue fails open"));
    }
    if judged * 10 < arrived {
        failures.push(format!("only {judged} of {arrived} judged"));
    }
    // The host's rules held for what went past unjudged.
    for p in &probes {
        let s = h.seen(p);
        if s.arrived == 0 {
            failures.push(format!("harness: {} never arrived", p.name));
        }
        if s.reached_tcp != 0 || s.answered != 0 {
            failures.push(format!("{}: got past the host's rules: {s:?}", p.name));
        }
    }
    if closed_connect {
        failures.push(format!("a connection to {CLOSED} succeeded"));
    }
    // Memory stayed bounded.
    if rss == 0 || rss > RSS_BOUND {
        failures.push(format!("peak RSS {rss} bytes (bound {RSS_BOUND})"));
    }
    // Judging resumed: the paced transfer was judged, none of it shed or failed open.
    if quiet_bytes == 0 || d(&quiet, &quiet0, &["packets"]) == 0 {
        failures.push("nothing judged after the overload".into());
    }
    if d(&quiet, &quiet0, &["shed"]) != 0 || d(&quiet, &quiet0, &["unjudged", "kernel"]) != 0 {
        failures.push(format!(
            "still shedding after the overload: {} shed, {} kernel",
            d(&quiet, &quiet0, &["shed"]),
            d(&quiet, &quiet0, &["unjudged", "kernel"])
        ));
    }
    assert!(
        failures.is_empty(),
        "overload:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn event_storm_stays_rate_limited_and_costs_no_verdicts() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !support::require_root("event_storm_stays_rate_limited") {
        return;
    }
    let mut h = Host::new("evs");
    bulk_server(&mut h);
    let service = |log_rule: bool| {
        let mut c = format!(
            "{}queue = [\"invalid\", \"new\", \"established\"]\n",
            config("enforce", "", "")
        );
        if log_rule {
            // Matches every packet of the bulk transfer: one event each, were it not
            // for the rate limit.
            c.push_str(&format!(
                "[[service.rule]]\nname = \"storm\"\naction = \"log\"\n\
                 destination_ports = [{BULK}]\n"
            ));
        }
        c
    };
    h.start_daemon(Some(&service(false)));
    let pid = h.daemon_pid();
    let rss_start = n(&h.stats(), &["rss_bytes"]);
    // The same transfer without and with the storm, twice each, interleaved.
    let mut rates = [Vec::new(), Vec::new()];
    let mut storm = (0u64, 0u64, 0.0f64, 0u64);
    // Gate keys in use during a storm phase: its reasons, and the log rule's.
    let mut keys = 1u64;
    for round in 0..4 {
        let log_rule = round % 2 == 1;
        let text = service(log_rule).replace("@LOG@", &h.path("events.jsonl"));
        std::fs::write(h.path("nfqwall.toml"), text).unwrap();
        let reloads = h.events().iter().filter(|e| e["event"] == "reload").count();
        h.signal("HUP");
        assert!(
            support::wait_until(10, || h
                .events()
                .iter()
                .filter(|e| e["event"] == "reload")
                .count()
                > reloads),
            "no reload event"
        );
        let before = h.stats();
        let cpu0 = cpu_seconds(pid);
        let started = Instant::now();
        let bytes = upload(&h, 4, "0");
        h.settle();
        let secs = started.elapsed().as_secs_f64();
        let after = h.stats();
        let cpu = cpu_seconds(pid) - cpu0;
        let d = |k: &[&str]| n(&after, k).saturating_sub(n(&before, k));
        let judged = d(&["packets"]);
        rates[usize::from(log_rule)].push(judged as f64 / cpu.max(0.01));
        eprintln!(
            "{}: {judged} judged in {secs:.1} s ({:.0}/s), {:.0} per CPU-second, \
             {:.1} MiB; events written {}, suppressed {}, channel full {}",
            if log_rule { "storm" } else { "quiet" },
            judged as f64 / secs,
            judged as f64 / cpu.max(0.01),
            bytes as f64 / f64::from(1 << 20),
            d(&["events", "written"]),
            d(&["events", "suppressed"]),
            d(&["events", "channel_full"]),
        );
        assert!(bytes > 0, "the transfer moved nothing");
        if log_rule {
            // The writer sums the threads' suppressed counts once a second.
            std::thread::sleep(Duration::from_millis(1500));
            let later = h.stats();
            storm.0 += judged;
            storm.1 += d(&["events", "written"]);
            storm.2 += secs;
            storm.3 += n(&later, &["events", "suppressed"]) - n(&before, &["events", "suppressed"]);
            let reasons = after["by_reason"].as_object().map_or(0, |m| {
                m.iter()
                    .filter(|(k, v)| v.as_u64() > before["by_reason"][k.as_str()].as_u64())
                    .count()
            });
            keys = keys.max(reasons as u64 + 1);
            let given: Vec<_> = after["by_reason"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| v.as_u64() > before["by_reason"][k.as_str()].as_u64())
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_u64().unwrap_or(0)
                            - before["by_reason"][k.as_str()].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            eprintln!("storm reasons: {given:?}");
        }
    }
    let rss = peak_rss(pid);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (quiet, stormy) = (mean(&rates[0]), mean(&rates[1]));
    let (judged, written, secs, suppressed) = storm;
    eprintln!(
        "event storm: {judged} packets would each have logged ({:.0}/s), {written} written, \
         {suppressed} suppressed; verdicts per CPU-second {stormy:.0} with the storm, \
         {quiet:.0} without ({:.2}x); RSS {:.1} -> peak {:.1} MiB",
        judged as f64 / secs,
        stormy / quiet,
        rss_start as f64 / f64::from(1 << 20),
        rss as f64 / f64::from(1 << 20),
    );
    // config() sets `log_rate_per_reason = 10000`, per gate key (the log rule's, and
    // each reason's), with a second of slack at each phase's edges.
    let limit = 10_000.0 * (secs + 4.0) * keys as f64;
    assert!(
        (written as f64) <= limit,
        "events not rate-limited: {written} written in {secs:.1} s over {keys} keys"
    );
    assert!(
        judged > written * 2 && suppressed > 0,
        "the storm was not a storm: {judged} packets, {written} written, {suppressed} suppressed"
    );
    assert!(
        rss > 0 && rss <= RSS_BOUND,
        "peak RSS {rss} bytes (bound {RSS_BOUND})"
    );
    // The verdict rate is not paid for the storm (ratio of the same process's own
    // rates, interleaved; a floor that holds on a loaded machine).
    assert!(
        stormy >= 0.7 * quiet,
        "verdicts per CPU-second fell from {quiet:.0} to {stormy:.0} in the storm"
    );
}
