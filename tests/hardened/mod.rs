//! A hardened host for `tests/host_rules.rs`: a client and a server namespace, the
//! server running the host ruleset of `shared/HOST-RULES-TESTING.md` (INVALID dropped
//! first, NEW to the service accepted, ESTABLISHED accepted, a closed port dropped,
//! `be_liberal = 0`), a real service on it, a listener behind the closed port, and
//! observers that say how far each forged packet got.
//!
//! Observers are nftables base chains in the server, independent of the iptables
//! ruleset (iptables-nft's filter INPUT is at priority 0):
//! - `netdev` ingress on the veth at priority -500: the packet arrived (a probe that
//!   never arrives is a broken test and fails loudly, never passes);
//! - `inet` input at priority 1000: past every filter table, it reached the server's TCP;
//! - `inet` prerouting at priority -150 (after conntrack): conntrack called it
//!   INVALID (what the host's `--ctstate INVALID -j DROP` will see);
//! - `inet` output: the server answered it (for probes to a port, not on a live
//!   connection, where the server sends anyway).
//!
//! Each probe is keyed on what only it carries: its source port and its TTL (hop
//! limit), a value from 33 up that the client's own stack never uses (it sends 64).
//! Packets come from scapy in the client (`probe.py`, Debian's `/usr/bin/python3`),
//! sent through a raw socket, so source addresses and ports can be spoofed.
//!
//! Everything is torn down on drop, also when an assertion fails: a frozen thread is
//! thawed first, then the daemon and the servers are killed, then the namespaces go.

#![allow(dead_code)]

use crate::support::{self, wait_until, Guarded, Pair};
use serde_json::{json, Value};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_nfqwall");
/// Debian's python3, which has python3-scapy (another python3 may be first on PATH).
pub const PYTHON: &str = "/usr/bin/python3";
/// The service port: the host accepts NEW connections to it.
pub const SERVICE: u16 = 8080;
/// The closed port: the host drops everything to it; a listener waits behind it.
pub const CLOSED: u16 = 9999;
/// Size of `/file` on the service (server.py's FILE_SIZE).
pub const FILE_SIZE: u64 = 20000;

const SERVER_PY: &str = include_str!("server.py");
const PROBE_PY: &str = include_str!("probe.py");

/// The host's own ruleset, applied with `iptables` and `ip6tables` alike.
const HOST_RULES: [&str; 4] = [
    "-A INPUT -m conntrack --ctstate INVALID -j DROP",
    "-A INPUT -p tcp --dport 8080 -m conntrack --ctstate NEW -j ACCEPT",
    "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    "-A INPUT -p tcp --dport 9999 -j DROP",
];

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn server(self) -> &'static str {
        match self {
            Family::V4 => "192.0.2.2",
            Family::V6 => "2001:db8::2",
        }
    }

    pub fn client(self) -> &'static str {
        match self {
            Family::V4 => "192.0.2.1",
            Family::V6 => "2001:db8::1",
        }
    }

    /// Prefix of the spoofed flood sources (routed back to the client veth).
    pub fn flood_net(self) -> &'static str {
        match self {
            Family::V4 => "198.51.100.",
            Family::V6 => "2001:db8:100::",
        }
    }

    pub fn url(self, port: u16, path: &str) -> String {
        match self {
            Family::V4 => format!("http://{}:{port}{path}", self.server()),
            Family::V6 => format!("http://[{}]:{port}{path}", self.server()),
        }
    }

    /// IP + TCP header length of a forged segment without options.
    pub fn header_len(self) -> u64 {
        match self {
            Family::V4 => 40,
            Family::V6 => 60,
        }
    }

    fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// One forged packet's identity: what the observers count it by.
#[derive(Clone, Debug)]
pub struct Probe {
    /// What it is, for messages ("ACK+data to 9999").
    pub name: String,
    pub family: Family,
    /// Its source address (the client's, unless spoofed).
    pub src: String,
    pub sport: u16,
    pub dport: u16,
    /// Its TTL / hop limit: unique per probe within a host.
    pub ttl: u8,
}

impl Probe {
    fn label(&self) -> String {
        format!("probe-{}-{}", self.sport, self.ttl)
    }

    /// The probe as a packet for `probe.py send`.
    pub fn packet(&self, flags: &str, seq: u64, ack: u64, data: u32) -> Value {
        json!({
            "src": self.src, "dst": self.family.server(), "sport": self.sport,
            "dport": self.dport, "flags": flags, "seq": seq, "ack": ack,
            "ttl": self.ttl, "data": data,
        })
    }
}

/// How far a probe got, from the observers.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// Counted at the veth's ingress: it arrived.
    pub arrived: u64,
    /// Counted at input priority 1000: it reached the server's TCP.
    pub reached_tcp: u64,
    /// Counted after conntrack with `ct state invalid`.
    pub ct_invalid: u64,
    /// Packets the server sent back to the probe's source port from its destination
    /// port (meaningful only for probes outside a live connection).
    pub answered: u64,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "arrived {}, conntrack INVALID {}, reached TCP {}, answered {}",
            self.arrived, self.ct_invalid, self.reached_tcp, self.answered
        )
    }
}

impl Seen {
    /// The counts that mean something on a live connection (where the server sends
    /// to the probe's port anyway).
    pub fn on_connection(&self) -> String {
        format!(
            "arrived {}, conntrack INVALID {}, reached TCP {}",
            self.arrived, self.ct_invalid, self.reached_tcp
        )
    }
}

/// The nfqwall config: `[daemon]` with `mode` and `daemon_extra` lines, `[engine]` with
/// `engine_extra` lines, and one service for all TCP.
pub fn config(mode: &str, daemon_extra: &str, engine_extra: &str) -> String {
    format!(
        "[daemon]\nmode = \"{mode}\"\nqueues = \"0\"\nlog = \"@LOG@\"\n\
         log_rate_per_reason = 10000\n{daemon_extra}\n\
         [engine]\n{engine_extra}\n\
         [[service]]\nname = \"web\"\nprotocol = \"tcp\"\n"
    )
}

/// A thread frozen through the cgroup v1 freezer (one thread only: the rest of the
/// process goes on). Thawed and put back on drop.
struct Freezer {
    dir: PathBuf,
    tid: u32,
}

impl Freezer {
    const ROOT: &'static str = "/sys/fs/cgroup/freezer";

    fn freeze(name: &str, tid: u32) -> Freezer {
        let dir = Path::new(Freezer::ROOT).join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
            panic!(
                "harness: cannot create {} ({e}): forced shedding needs the cgroup v1 freezer",
                dir.display()
            )
        });
        let f = Freezer { dir, tid };
        std::fs::write(f.dir.join("tasks"), tid.to_string()).expect("move thread to freezer");
        std::fs::write(f.dir.join("freezer.state"), "FROZEN").expect("freeze");
        let frozen = wait_until(5, || {
            std::fs::read_to_string(f.dir.join("freezer.state")).unwrap_or_default() == "FROZEN\n"
        });
        assert!(frozen, "harness: thread {tid} did not freeze");
        f
    }

    fn thaw(&self) {
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        self.thaw();
        let _ = std::fs::write(Path::new(Freezer::ROOT).join("tasks"), self.tid.to_string());
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A victim connection: a server-paced slow download by curl from a known local port.
pub struct Victim {
    pub family: Family,
    pub lport: u16,
    /// Bytes the server sends in all.
    pub expected: u64,
    curl: Guarded,
}

impl Victim {
    /// Waits for the download to end; returns (curl succeeded, bytes received, stderr).
    pub fn finish(mut self) -> (bool, u64, String) {
        let out = self.curl.wait_output();
        let bytes = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (
            out.status.success(),
            bytes,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Waits for the download; returns a complaint unless it ended well with every
    /// byte (the victim survived).
    pub fn survived(self) -> Option<String> {
        let expected = self.expected;
        let lport = self.lport;
        let (ok, bytes, err) = self.finish();
        (!(ok && bytes == expected)).then(|| {
            format!(
                "the victim connection from port {lport} did not survive: curl ok={ok}, \
                 {bytes} of {expected} bytes ({})",
                err.trim()
            )
        })
    }
}

/// One test's world.
pub struct Host {
    pub pair: Pair,
    pub dir: PathBuf,
    pub servers: Vec<Guarded>,
    daemon: Option<Guarded>,
    freezer: Option<Freezer>,
    /// Where the daemon's events go (its log file, or its stdout on the default).
    events_path: PathBuf,
    next_ttl: Cell<u8>,
}

impl Drop for Host {
    fn drop(&mut self) {
        // A frozen thread would keep SIGKILL from ending the daemon: thaw first.
        self.freezer = None;
        self.daemon = None;
        self.servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Host {
    /// The client and the hardened server, with the service on 8080, a listener on
    /// 9999 and the observers in place; nfqwall not started.
    pub fn new(prefix: &str) -> Host {
        let scapy = Command::new(PYTHON)
            .args(["-c", "import scapy.layers.inet6"])
            .output();
        assert!(
            scapy.map(|o| o.status.success()).unwrap_or(false),
            "harness: {PYTHON} cannot import scapy: apt-get install python3-scapy"
        );
        let pair = Pair::new(prefix);
        let dir = std::env::temp_dir().join(format!("{}-files", pair.server.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server.py"), SERVER_PY).unwrap();
        std::fs::write(dir.join("probe.py"), PROBE_PY).unwrap();
        let mut h = Host {
            pair,
            events_path: dir.join("events.jsonl"),
            dir,
            servers: Vec::new(),
            daemon: None,
            freezer: None,
            next_ttl: Cell::new(33),
        };
        let s = &h.pair.server;
        let mut script = String::from(
            "set -e; sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal=0 \
             net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.veth-s.rp_filter=0; \
             ip route add 198.51.100.0/24 via 192.0.2.1; \
             ip -6 route add 2001:db8:100::/64 via 2001:db8::1;",
        );
        for fam in [Family::V4, Family::V6] {
            for rule in HOST_RULES {
                script.push_str(&format!(" {} {rule};", fam.iptables()));
            }
        }
        s.sh(&script);
        let be_liberal = s.sh_out("sysctl -n net.netfilter.nf_conntrack_tcp_be_liberal");
        assert_eq!(be_liberal.trim(), "0", "harness: be_liberal");
        s.sh(
            "nft -f - <<'EOF'\n\
             table netdev nfqwtest {\n\
               chain arrived { type filter hook ingress device \"veth-s\" priority -500; policy accept; }\n\
             }\n\
             table inet nfqwtest {\n\
               chain classified { type filter hook prerouting priority -150; policy accept; }\n\
               chain reached { type filter hook input priority 1000; policy accept; }\n\
               chain answered { type filter hook output priority 1000; policy accept; }\n\
             }\n\
             EOF",
        );
        let py = h.path("server.py");
        let web = s.spawn(&format!("{PYTHON} {py} {SERVICE}"));
        let closed = s.spawn(&format!(
            "socat TCP6-LISTEN:{CLOSED},fork,reuseaddr,ipv6only=0 SYSTEM:'echo open'"
        ));
        h.servers.push(web);
        h.servers.push(closed);
        let ok = wait_until(15, || {
            let l = s.sh_out("ss -ltnH");
            l.contains(&format!(":{SERVICE} ")) && l.contains(&format!(":{CLOSED} "))
        });
        assert!(
            ok,
            "harness: the service or the closed-port listener did not start"
        );
        h
    }

    /// A file in the test's scratch directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    // ---- probes and observers ----

    /// A new probe from the client's address, with its observer counters installed.
    pub fn probe(&self, name: &str, family: Family, sport: u16, dport: u16) -> Probe {
        self.probe_from(name, family, family.client(), sport, dport)
    }

    /// A new probe from `src`, with its observer counters installed.
    pub fn probe_from(
        &self,
        name: &str,
        family: Family,
        src: &str,
        sport: u16,
        dport: u16,
    ) -> Probe {
        let ttl = self.next_ttl.get();
        assert!(ttl < 64, "harness: out of probe TTLs");
        self.next_ttl.set(ttl + 1);
        let p = Probe {
            name: name.to_string(),
            family,
            src: src.to_string(),
            sport,
            dport,
            ttl,
        };
        let (l3, ttl_match) = match family {
            Family::V4 => ("ip", format!("ip ttl {ttl}")),
            Family::V6 => ("ip6", format!("ip6 hoplimit {ttl}")),
        };
        let key = format!("{l3} saddr {src} {ttl_match} tcp sport {sport} tcp dport {dport}");
        let answer = format!("{l3} daddr {src} tcp sport {dport} tcp dport {sport}");
        let c = format!("counter comment \"{}\"", p.label());
        self.pair.server.sh(&format!(
            "nft add rule netdev nfqwtest arrived {key} {c} && \
             nft add rule inet nfqwtest classified {key} ct state invalid {c} && \
             nft add rule inet nfqwtest reached {key} {c} && \
             nft add rule inet nfqwtest answered {answer} {c}"
        ));
        p
    }

    /// The observers' counts for `p`.
    pub fn seen(&self, p: &Probe) -> Seen {
        let label = p.label();
        let mut s = Seen::default();
        for table in ["netdev nfqwtest", "inet nfqwtest"] {
            let text = self
                .pair
                .server
                .sh_out(&format!("nft -j list table {table}"));
            let v: Value = serde_json::from_str(&text).expect("nft -j output");
            for item in v["nftables"].as_array().unwrap() {
                let rule = &item["rule"];
                if rule["comment"] != label.as_str() {
                    continue;
                }
                let n: u64 = rule["expr"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|e| e["counter"]["packets"].as_u64())
                    .sum();
                match rule["chain"].as_str().unwrap() {
                    "arrived" => s.arrived += n,
                    "classified" => s.ct_invalid += n,
                    "reached" => s.reached_tcp += n,
                    "answered" => s.answered += n,
                    other => panic!("unknown observer chain {other}"),
                }
            }
        }
        s
    }

    /// Waits until `p` was seen arriving; panics (a broken test, not a pass) if not.
    pub fn assert_arrived(&self, p: &Probe) -> Seen {
        let ok = wait_until(5, || self.seen(p).arrived >= 1);
        assert!(
            ok,
            "harness: probe {} (sport {}, ttl {}) never arrived at the server's ingress: \
             the test is broken, not passed",
            p.name, p.sport, p.ttl
        );
        self.seen(p)
    }

    /// Runs `probe.py COMMAND ARGS` in the client; returns its JSON answer.
    pub fn py(&self, command: &str, args: &Value) -> Value {
        let out = self
            .pair
            .client
            .cmd(PYTHON)
            .args([&self.path("probe.py"), command, &args.to_string()])
            .output()
            .expect("start probe.py");
        assert!(
            out.status.success(),
            "harness: probe.py {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap_or("");
        serde_json::from_str(last).unwrap_or_else(|e| panic!("probe.py said {text:?}: {e}"))
    }

    /// Sends packets built by [`Probe::packet`].
    pub fn send(&self, packets: &[Value]) {
        self.py("send", &json!({ "packets": packets, "gap_ms": 20 }));
    }

    /// Sniffs one segment of `v` from the client, then sends `p` on that connection:
    /// `flags`, seq = the client's seq + `seq_off`, the client's ack, `data` bytes.
    pub fn forge(&self, v: &Victim, p: &Probe, flags: &str, seq_off: u64, data: u32) -> Value {
        assert_eq!(
            (p.sport, p.dport),
            (v.lport, SERVICE),
            "probe not on the victim"
        );
        let r = self.py(
            "forge",
            &json!({
                "iface": "veth-c", "src": p.src, "dst": v.family.server(),
                "sport": v.lport, "dport": SERVICE, "timeout": 5,
                "packets": [{"flags": flags, "seq_off": seq_off, "ttl": p.ttl, "data": data}],
            }),
        );
        assert!(
            r["error"].is_null(),
            "harness: forging {} failed: {r}",
            p.name
        );
        r
    }

    /// Sends `count` spoofed SYNs to `dport` from many sources, at most `rate` per second.
    pub fn flood(&self, family: Family, dport: u16, count: u32, rate: u32) {
        self.py(
            "flood",
            &json!({
                "dst": family.server(), "dport": dport, "count": count, "rate": rate,
                "net": family.flood_net(),
            }),
        );
    }

    /// A real TCP connection from the client; true if the handshake completed.
    pub fn connect(&self, family: Family, port: u16, sport: Option<u16>, secs: u32) -> bool {
        let mut a = json!({"dst": family.server(), "port": port, "timeout": secs});
        if let Some(sp) = sport {
            a["src"] = json!(family.client());
            a["sport"] = json!(sp);
        }
        self.py("connect", &a)["ok"] == true
    }

    /// `n` sequential downloads of `/file`; returns how many got every byte.
    pub fn downloads(&self, family: Family, n: u32, local_port: Option<u16>) -> u32 {
        let url = family.url(SERVICE, "/file");
        let lp = local_port
            .map(|p| format!("--local-port {p}"))
            .unwrap_or_default();
        let out = self.pair.client.sh_out(&format!(
            "for i in $(seq 1 {n}); do \
               curl -s -g {lp} -m 6 -o /dev/null -w '%{{size_download}} %{{http_code}}\\n' {url} \
               || echo fail; done"
        ));
        out.lines()
            .filter(|l| *l == format!("{FILE_SIZE} 200"))
            .count() as u32
    }

    /// Starts a victim: a download of `chunks` x 100 bytes, one every 100 ms, from
    /// local port `lport`; returns once the connection is established.
    pub fn victim(&self, family: Family, lport: u16, chunks: u32) -> Victim {
        let url = family.url(SERVICE, &format!("/slow/{chunks}/100"));
        let secs = chunks / 10 + 30;
        let curl = self.pair.client.spawn(&format!(
            "curl -sS -g --local-port {lport} -m {secs} -o /dev/null -w '%{{size_download}}' {url}"
        ));
        let c = &self.pair.client;
        let up = wait_until(10, || {
            !c.sh_out(&format!("ss -tnH state established '( sport = :{lport} )'"))
                .trim()
                .is_empty()
        });
        assert!(
            up,
            "harness: victim connection from port {lport} not established"
        );
        Victim {
            family,
            lport,
            expected: u64::from(chunks) * 100,
            curl,
        }
    }

    // ---- the host's own counters ----

    /// Packets the host's `--ctstate INVALID -j DROP` rule dropped so far.
    pub fn invalid_drops(&self, family: Family) -> u64 {
        let out = self
            .pair
            .server
            .sh_out(&format!("{} -w -vnxL INPUT", family.iptables()));
        out.lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(2) == Some(&"DROP") && l.contains("ctstate INVALID")
            })
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("harness: no INVALID DROP rule in INPUT:\n{out}"))
    }

    /// The kernel's counters of queue 0 (`None`: no queue bound).
    pub fn kernel_queue(&self) -> Option<nfqwall::stats::KernelQueue> {
        let text = self
            .pair
            .server
            .sh_out("cat /proc/net/netfilter/nfnetlink_queue 2>/dev/null || true");
        nfqwall::stats::parse_kernel_queues(&text)
            .into_iter()
            .find(|k| k.queue == 0)
    }

    /// The kernel's backlog on queue 0 (`None`: no queue bound).
    pub fn queue_total(&self) -> Option<u32> {
        self.kernel_queue().map(|k| k.queue_total)
    }

    /// Waits until nothing is held in queue 0 (or it is unbound), then a moment for
    /// the last verdicts' packets to go their way.
    pub fn settle(&self) {
        wait_until(5, || self.queue_total().unwrap_or(0) == 0);
        std::thread::sleep(Duration::from_millis(300));
    }

    // ---- the daemon ----

    /// Starts `nfqwall run` in the server with `config` (`None`: the built-in default,
    /// no `--config`) and waits for its `start` event.
    pub fn start_daemon(&mut self, config: Option<&str>) {
        self.start_daemon_env(config, "");
    }

    /// [`Host::start_daemon`] with `env` (`NAME=VALUE ...`, may be empty) in the
    /// daemon's environment.
    pub fn start_daemon_env(&mut self, config: Option<&str>, env: &str) {
        let conf = match config {
            Some(body) => {
                let text = body.replace("@LOG@", &self.path("events.jsonl"));
                std::fs::write(self.path("nfqwall.toml"), text).unwrap();
                self.events_path = self.dir.join("events.jsonl");
                format!("--config {}", self.path("nfqwall.toml"))
            }
            None => {
                // The default logs to stdout.
                self.events_path = self.dir.join("stdout.jsonl");
                String::new()
            }
        };
        let cmd = format!(
            "env {env} {BIN} run {conf} --socket {} >>{} 2>>{}",
            self.path("stats.sock"),
            self.path("stdout.jsonl"),
            self.path("stderr.txt")
        );
        self.daemon = Some(self.pair.server.spawn(&cmd));
        let ok = wait_until(20, || self.events().iter().any(|e| e["event"] == "start"));
        if !ok {
            let err = std::fs::read_to_string(self.path("stderr.txt")).unwrap_or_default();
            panic!("nfqwall did not start: {err}");
        }
        let rules = self.pair.server.sh_out("iptables-save");
        assert!(
            rules.contains("NFQUEUE"),
            "harness: nfqwall installed no NFQUEUE rule:\n{rules}"
        );
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").pid()
    }

    pub fn signal(&self, sig: &str) {
        self.daemon.as_ref().expect("daemon running").signal(sig);
    }

    /// SIGKILL: the daemon dies without removing its rules.
    pub fn kill_daemon(&mut self) {
        self.signal("KILL");
        let mut d = self.daemon.take().unwrap();
        let _ = d.wait_output();
        assert!(
            wait_until(5, || self.queue_total().is_none()),
            "queue 0 still bound after SIGKILL"
        );
    }

    /// Freezes the daemon's queue thread (`nfqwall-q0`) only: the main loop, which
    /// decides shedding from the kernel backlog, goes on.
    pub fn freeze_queue_thread(&mut self) {
        let pid = self.daemon_pid();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("daemon tasks");
        let tid = tasks
            .filter_map(|t| t.ok())
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .map(|c| c.starts_with("nfqwall-q"))
                    .unwrap_or(false)
            })
            .and_then(|t| t.file_name().to_str()?.parse::<u32>().ok())
            .expect("harness: no nfqwall-q* thread in the daemon");
        let name = format!("{}-q", self.pair.server.name);
        self.freezer = Some(Freezer::freeze(&name, tid));
    }

    /// Thaws the frozen queue thread.
    pub fn thaw_queue_thread(&mut self) {
        self.freezer.as_ref().expect("frozen").thaw();
    }

    /// Every event written so far (non-JSON lines are skipped).
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `packet` events about `p` (same addresses and ports) after the first `skip`
    /// events, with IP length `len` if given.
    pub fn events_for(&self, p: &Probe, skip: usize, len: Option<u64>) -> Vec<Value> {
        self.events()
            .into_iter()
            .skip(skip)
            .filter(|e| {
                e["event"] == "packet"
                    && e["src"] == p.src.as_str()
                    && e["sport"] == p.sport
                    && e["dport"] == p.dport
                    && len.is_none_or(|l| e["len"] == l)
            })
            .collect()
    }

    /// Waits (up to 5 s) for the `packet` event about `p` after `skip` events.
    pub fn wait_event(&self, p: &Probe, skip: usize, len: u64) -> Option<Value> {
        wait_until(5, || !self.events_for(p, skip, Some(len)).is_empty());
        self.events_for(p, skip, Some(len)).into_iter().next()
    }

    /// `nfqwall stats --json` of the running daemon.
    pub fn stats(&self) -> Value {
        let out = support::run(Command::new(BIN).args([
            "stats",
            "--json",
            "--socket",
            &self.path("stats.sock"),
        ]));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Checks that `event` (about forged packet `p`) names one of `allowed` reasons and,
/// in enforce mode, did not vouch for it: dropped, or passed on to the host's rules.
/// Returns a complaint, or `None` if it is right.
pub fn check_reason(
    p: &Probe,
    event: Option<&Value>,
    allowed: &[&str],
    enforce: bool,
) -> Option<String> {
    let Some(e) = event else {
        return Some(format!(
            "{}: no packet event (expected one of {allowed:?})",
            p.name
        ));
    };
    let reason = e["reason"].as_str().unwrap_or("null");
    if !allowed.contains(&reason) {
        return Some(format!(
            "{}: reason {reason:?} is not true here (expected one of {allowed:?}): {e}",
            p.name
        ));
    }
    if enforce && e["verdict"] != "drop" && e["disposition"] != "pass" {
        return Some(format!(
            "{}: enforce neither dropped it nor passed it on to the host's rules: {e}",
            p.name
        ));
    }
    None
}
