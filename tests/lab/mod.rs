//! The field labs' shared machinery (issue 4): a routed client — middlebox — server
//! topology in three network namespaces, the sequence-randomizing middlebox
//! (`examples/seqrand_middlebox.rs`) on the middle namespace's FORWARD path, a real HTTP
//! server with a large file, a curl download, and the server's counters.
//!
//! A test crate that uses it declares `mod support; mod lab;`.
//!
//! ## Adding a scenario
//! Everything that differs between scenarios is data in [`LabSpec`]: the middlebox's
//! arguments and the server side ([`ServerSide`]): its ruleset (shell lines run in the
//! server namespace, in order, e.g. `iptables -A INPUT ...` or `nfqwall rules install
//! ...`), `be_liberal`, files to write into the lab's directory and processes to start
//! in the server namespace (with a readiness check). So "server ruleset = X, plus a
//! process Y in the server namespace" is one [`ServerSide`] value, and
//! `Lab::new(prefix, &spec)` followed by `lab.download(..)` runs it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::support::{run, wait_until, Guarded, Netns};

/// Size of the file the server serves.
pub const FILE_BYTES: u64 = 20 * 1024 * 1024;
/// The HTTP server's port.
pub const HTTP_PORT: u16 = 8080;
/// The middlebox's queue number (queues are per namespace).
pub const MB_QUEUE: u16 = 0;
/// The server namespace's queue for a userspace judge (nfqwall or the baseline).
pub const SERVER_QUEUE: u16 = 3;

/// Client side: 192.0.2.0/24 and 2001:db8:1::/64; server side: 198.51.100.0/24 and
/// 2001:db8:2::/64; the middlebox is .254 / ::254 on both.
pub const CLIENT_V4: &str = "192.0.2.1";
pub const CLIENT_V6: &str = "2001:db8:1::1";
pub const SERVER_V4: &str = "198.51.100.1";
pub const SERVER_V6: &str = "2001:db8:2::1";

/// The hardened server ruleset of the field notes: conntrack's doubts are dropped.
pub const HARDENED: &[&str] = &[
    "iptables -w -A INPUT -m conntrack --ctstate INVALID -j DROP",
    "ip6tables -w -A INPUT -m conntrack --ctstate INVALID -j DROP",
];

/// The server ruleset for a userspace judge of conntrack's doubts (nfqwall, or the
/// accept-everything baseline): the HTTP service's INVALID packets, and with `sack`
/// also its SACK-bearing packets (TCP option 5: in the "below" half they are not
/// INVALID, yet the server's TCP cannot use their blocks), go to NFQUEUE `queue` with
/// `--queue-bypass` (no listener: accept), before the hardened INVALID DROP rule, for
/// IPv4 and IPv6. An accept verdict resumes at the next hook, so it skips the DROP.
pub fn queue_doubts_rules(queue: u16, sack: bool) -> Vec<String> {
    let mut rules = Vec::new();
    for tool in ["iptables", "ip6tables"] {
        rules.push(format!(
            "{tool} -w -A INPUT -p tcp --dport {HTTP_PORT} -m conntrack --ctstate INVALID \
             -j NFQUEUE --queue-num {queue} --queue-bypass"
        ));
        if sack {
            rules.push(format!(
                "{tool} -w -A INPUT -p tcp --dport {HTTP_PORT} -m tcp --tcp-option 5 \
                 -j NFQUEUE --queue-num {queue} --queue-bypass"
            ));
        }
    }
    rules.extend(HARDENED.iter().map(|s| s.to_string()));
    rules
}

/// A process to run in the server namespace for the whole lab.
#[derive(Clone, Debug)]
pub struct ServerProc {
    /// Shell command (exec'd); `{dir}` is replaced by the lab's directory. Its stdout
    /// and stderr go to `{dir}/<name>.log`.
    pub cmd: String,
    /// Name of the log file (and of the process in messages).
    pub name: String,
    /// Shell check run in the server namespace until it succeeds (10 s at most);
    /// `{dir}` is replaced too. `None`: no wait.
    pub ready: Option<String>,
}

/// Everything about the server side that a scenario chooses.
#[derive(Clone, Debug, Default)]
pub struct ServerSide {
    /// `net.netfilter.nf_conntrack_tcp_be_liberal` in the server namespace.
    pub liberal: bool,
    /// Ruleset and other setup: shell lines run in order in the server namespace before
    /// anything listens (`{dir}` is replaced by the lab's directory).
    pub rules: Vec<String>,
    /// Files written into the lab's directory first: (name, contents).
    pub files: Vec<(String, String)>,
    /// Processes started after the rules and before the HTTP server.
    pub procs: Vec<ServerProc>,
}

impl ServerSide {
    /// The hardened ruleset with `be_liberal` as given, nothing else.
    pub fn hardened(liberal: bool) -> ServerSide {
        ServerSide {
            liberal,
            rules: HARDENED.iter().map(|s| s.to_string()).collect(),
            ..ServerSide::default()
        }
    }
}

/// nfqwall's config for the lab: the web service in `mode`, with or without repair
/// or handback.
pub fn nfqwall_config(mode: &str, sack_repair: bool, handback: bool) -> String {
    format!(
        "[daemon]\nmode = \"{mode}\"\nqueues = \"{SERVER_QUEUE}\"\nlog = \"stdout\"\n\
         log_rate_per_reason = 100000\n\n\
         [[service]]\nname = \"web\"\nprotocol = \"tcp\"\nports = [{HTTP_PORT}]\n\
         sack_repair = {sack_repair}\nhandback = {handback}\n"
    )
}

/// nfqwall on the server with `config`, in front of the hardened ruleset, installing
/// its own rules (`nfqwall run` without --no-rules): INVALID and NEW packets of the web
/// service, and with sack_repair also its SACK-bearing segments, go to nfqwall before
/// the INVALID DROP rule. Its stats socket is `{dir}/stats.sock`.
pub fn nfqwall_side(config: String) -> ServerSide {
    ServerSide {
        liberal: false,
        rules: ServerSide::hardened(false).rules,
        files: vec![("nfqwall.toml".into(), config)],
        procs: vec![ServerProc {
            name: "nfqwall".into(),
            cmd: format!(
                "{} run --config {{dir}}/nfqwall.toml --socket {{dir}}/stats.sock",
                env!("CARGO_BIN_EXE_nfqwall")
            ),
            ready: Some("grep -q '\"event\":\"start\"' {dir}/nfqwall.log".into()),
        }],
    }
}

/// nfqwall's events: the JSON lines of its log (stdout and stderr).
pub fn nfqwall_events(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// One lab run's choices.
#[derive(Clone, Debug)]
pub struct LabSpec {
    /// Download over IPv6 instead of IPv4.
    pub v6: bool,
    /// Arguments to `seqrand_middlebox` (the queue number is added).
    pub middlebox: Vec<String>,
    /// The server side.
    pub server: ServerSide,
}

/// Path of the middlebox helper, built with the same profile as this test if missing.
pub fn middlebox_bin() -> PathBuf {
    crate::support::example_bin("seqrand_middlebox")
}

/// Python from Debian's package where it is installed (CI), else from PATH.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

static DIRS: AtomicU32 = AtomicU32::new(0);

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("nfqw-{prefix}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create lab dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One curl download.
#[derive(Clone, Copy, Debug, Default)]
pub struct Download {
    /// Bytes of the body received.
    pub bytes: u64,
    /// curl's `time_total`.
    pub secs: f64,
    /// curl's exit status (0: complete; 28: the time limit hit).
    pub exit: i32,
    /// curl's `time_starttransfer`: until the first byte of the response.
    pub first_byte_secs: f64,
}

impl Download {
    pub fn complete(&self) -> bool {
        self.exit == 0 && self.bytes == FILE_BYTES
    }

    pub fn mbit_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 * 8.0 / self.secs / 1e6
        } else {
            0.0
        }
    }
}

/// The server namespace's counters after a download.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerCounters {
    /// Packets counted by the `--ctstate INVALID -j DROP` rules (IPv4 + IPv6).
    pub invalid_dropped: u64,
    /// conntrack's own `invalid` statistic (`conntrack -S`, all CPUs).
    pub ct_invalid: u64,
    /// TCP segments the server retransmitted.
    pub retrans: u64,
    /// Retransmission timeouts (TcpExtTCPTimeouts).
    pub rto: u64,
    /// SACK blocks the server's TCP discarded as invalid (TcpExtTCPSACKDiscard).
    pub sack_discard: u64,
    /// Loss recoveries driven by SACK (TcpExtTCPSackRecovery).
    pub sack_recovery: u64,
    /// Packets the middlebox's kernel queue dropped because it was full, or because
    /// the netlink socket overran (`/proc/net/netfilter/nfnetlink_queue`): the lab's
    /// own loss, which should stay 0 (it is not the loss the scenario asks for).
    pub mb_queue_dropped: u64,
    /// Packets the server namespace's NFQUEUE queues received (all queues): what a
    /// userspace judge on the server side was asked about.
    pub server_queued: u64,
}

/// A running lab: three namespaces, the middlebox, the HTTP server, and whatever the
/// scenario's server side started. Dropping it kills everything and deletes the
/// namespaces and the directory.
pub struct Lab {
    // Field order is drop order: processes first, then namespaces, then files.
    pub procs: Vec<Guarded>,
    pub middlebox: Guarded,
    pub http: Guarded,
    pub client: Netns,
    pub mb: Netns,
    pub server: Netns,
    pub dir: TempDir,
    pub spec: LabSpec,
}

/// Replaces `{dir}` in `s`.
fn subst(s: &str, dir: &Path) -> String {
    s.replace("{dir}", &dir.display().to_string())
}

impl Lab {
    /// Builds the topology and starts everything; panics (cleaning up) on failure.
    /// `prefix` must be short (namespace names are limited): 6 characters at most.
    pub fn new(prefix: &str, spec: &LabSpec) -> Lab {
        let dir = TempDir::new(prefix);
        let client = Netns::new(&format!("{prefix}c"));
        let mb = Netns::new(&format!("{prefix}m"));
        let server = Netns::new(&format!("{prefix}s"));
        wire(&client, "c0", &mb, "m0");
        wire(&mb, "m1", &server, "s0");
        client.sh(
            "ip addr add 192.0.2.1/24 dev c0 && ip -6 addr add 2001:db8:1::1/64 dev c0 nodad && \
             ip route add default via 192.0.2.254 congctl cubic && \
             ip -6 route add default via 2001:db8:1::254 congctl cubic",
        );
        mb.sh(
            "ip addr add 192.0.2.254/24 dev m0 && ip -6 addr add 2001:db8:1::254/64 dev m0 nodad && \
             ip addr add 198.51.100.254/24 dev m1 && \
             ip -6 addr add 2001:db8:2::254/64 dev m1 nodad && \
             sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1",
        );
        server.sh(
            "ip addr add 198.51.100.1/24 dev s0 && ip -6 addr add 2001:db8:2::1/64 dev s0 nodad && \
             ip route add default via 198.51.100.254 congctl cubic && \
             ip -6 route add default via 2001:db8:2::254 congctl cubic",
        );
        for end in [&client, &server] {
            end.sh("sysctl -qw net.ipv4.tcp_sack=1 net.ipv4.tcp_timestamps=1");
        }
        for (ns, dev) in [(&client, "c0"), (&mb, "m0"), (&mb, "m1"), (&server, "s0")] {
            let up = wait_until(5, || {
                ns.try_sh(&format!("ip link show dev {dev} | grep -q LOWER_UP"))
                    .status
                    .success()
            });
            assert!(up, "{dev} in {} never came up", ns.name);
        }
        // End to end in both families before any measurement: right after link-up,
        // IPv6 neighbour discovery loses the first packets (a SYN lost there costs the
        // download a 1 s retransmission timeout). ICMP is not queued to the middlebox.
        for target in [SERVER_V4, SERVER_V6] {
            let ok = wait_until(10, || {
                client
                    .try_sh(&format!("ping -c1 -W1 {target} >/dev/null 2>&1"))
                    .status
                    .success()
            });
            assert!(ok, "{target} unreachable from the client");
        }

        // Server side: the scenario's files, ruleset and processes.
        for (name, contents) in &spec.server.files {
            std::fs::write(dir.0.join(name), contents).expect("write lab file");
        }
        for line in &spec.server.rules {
            server.sh(&subst(line, &dir.0));
        }
        // Per namespace; present once conntrack is loaded (the rules above load it).
        server.sh(&format!(
            "modprobe nf_conntrack 2>/dev/null; \
             sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal={}",
            u8::from(spec.server.liberal)
        ));
        let mut procs = Vec::new();
        for p in &spec.server.procs {
            let cmd = subst(&p.cmd, &dir.0);
            let log = dir.0.join(format!("{}.log", p.name));
            procs.push(server.spawn(&format!("{cmd} >{} 2>&1", log.display())));
            if let Some(ready) = &p.ready {
                let ready = subst(ready, &dir.0);
                let ok = wait_until(10, || server.try_sh(&ready).status.success());
                assert!(
                    ok,
                    "{} not ready ({ready}); log:\n{}",
                    p.name,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }

        // The HTTP server and its file.
        let www = dir.0.join("www");
        std::fs::create_dir_all(&www).expect("www dir");
        run(Command::new("head")
            .args(["-c", &FILE_BYTES.to_string(), "/dev/urandom"])
            .stdout(std::fs::File::create(www.join("big.bin")).expect("big.bin")));
        let http = server.spawn(&format!(
            "{} -m http.server --bind :: --directory {} {HTTP_PORT} >{} 2>&1",
            python(),
            www.display(),
            dir.0.join("http.log").display()
        ));
        let listening = wait_until(10, || {
            server
                .try_sh(&format!("ss -Htln | grep -q ':{HTTP_PORT} '"))
                .status
                .success()
        });
        assert!(listening, "HTTP server did not start");

        // The middlebox, on the middle namespace's FORWARD path.
        mb.sh(&format!(
            "iptables -w -A FORWARD -p tcp -j NFQUEUE --queue-num {MB_QUEUE} && \
             ip6tables -w -A FORWARD -p tcp -j NFQUEUE --queue-num {MB_QUEUE}"
        ));
        let mb_log = dir.0.join("middlebox.log");
        let middlebox = mb.spawn(&format!(
            "{} --queue {MB_QUEUE} {} 2>{}",
            middlebox_bin().display(),
            spec.middlebox.join(" "),
            mb_log.display()
        ));
        let ready = wait_until(10, || {
            std::fs::read_to_string(&mb_log).is_ok_and(|s| s.contains("ready queue="))
        });
        assert!(
            ready,
            "middlebox did not start: {}",
            std::fs::read_to_string(&mb_log).unwrap_or_default()
        );

        Lab {
            procs,
            middlebox,
            http,
            client,
            mb,
            server,
            dir,
            spec: spec.clone(),
        }
    }

    /// The server's address for this lab's family, as a URL host.
    pub fn server_host(&self) -> String {
        if self.spec.v6 {
            format!("[{SERVER_V6}]")
        } else {
            SERVER_V4.to_string()
        }
    }

    /// Downloads the file with curl from the client namespace, `max_secs` at most.
    pub fn download(&self, max_secs: u32) -> Download {
        self.download_at(max_secs, None)
    }

    /// Shapes the middlebox's link toward the client to `rate` (`tc` token bucket,
    /// e.g. `1200kbit`): a transfer then takes as long as its size says, whatever
    /// the client (curl's own `--limit-rate` overshot by 1.7x in one run).
    pub fn shape_to_client(&self, rate: &str) {
        self.mb.sh(&format!(
            "tc qdisc add dev m0 root tbf rate {rate} burst 16k latency 400ms"
        ));
    }

    /// [`Lab::download`] at most at `rate` (curl's `--limit-rate`, e.g. `150k`).
    pub fn download_at(&self, max_secs: u32, rate: Option<&str>) -> Download {
        let limit = rate.map_or(String::new(), |r| format!("--limit-rate {r}"));
        let out = self.client.try_sh(&format!(
            "curl -s -o /dev/null --max-time {max_secs} {limit} -w '%{{size_download}} %{{time_total}} %{{time_starttransfer}}' \
             http://{}:{HTTP_PORT}/big.bin",
            self.server_host()
        ));
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace();
        Download {
            bytes: it.next().and_then(|s| s.parse().ok()).unwrap_or(0),
            secs: it.next().and_then(|s| s.parse().ok()).unwrap_or(0.0),
            exit: out.status.code().unwrap_or(-1),
            first_byte_secs: it.next().and_then(|s| s.parse().ok()).unwrap_or(0.0),
        }
    }

    /// The server namespace's counters now.
    pub fn counters(&self) -> ServerCounters {
        let mut c = ServerCounters::default();
        for tool in ["iptables", "ip6tables"] {
            let out = self.server.sh_out(&format!("{tool} -w -L INPUT -v -x -n"));
            for line in out.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.get(2) == Some(&"DROP") && line.contains("ctstate INVALID") {
                    c.invalid_dropped += f[0].parse::<u64>().unwrap_or(0);
                }
            }
        }
        let stats = self.server.try_sh("conntrack -S 2>/dev/null");
        for word in String::from_utf8_lossy(&stats.stdout).split_whitespace() {
            if let Some(v) = word.strip_prefix("invalid=") {
                c.ct_invalid += v.parse::<u64>().unwrap_or(0);
            }
        }
        // -a absolute, -s do not touch the (host-wide) history file, -z zeros too.
        let nstat = self.server.sh_out("nstat -asz");
        for line in nstat.lines() {
            let mut f = line.split_whitespace();
            let (Some(name), Some(v)) = (f.next(), f.next()) else {
                continue;
            };
            let v = v.parse::<u64>().unwrap_or(0);
            match name {
                "TcpRetransSegs" => c.retrans = v,
                "TcpExtTCPTimeouts" => c.rto = v,
                "TcpExtTCPSACKDiscard" => c.sack_discard = v,
                "TcpExtTCPSackRecovery" => c.sack_recovery = v,
                _ => {}
            }
        }
        // queue_number peer_portid queue_total copy_mode copy_range queue_dropped
        // user_dropped id_sequence 1
        for (ns, server) in [(&self.mb, false), (&self.server, true)] {
            let q = ns.sh_out("cat /proc/net/netfilter/nfnetlink_queue 2>/dev/null || true");
            for line in q.lines() {
                let f: Vec<u64> = line
                    .split_whitespace()
                    .map(|w| w.parse().unwrap_or(0))
                    .collect();
                match (f.len() >= 8, server) {
                    (true, false) => c.mb_queue_dropped += f[5] + f[6],
                    (true, true) => c.server_queued += f[7],
                    _ => {}
                }
            }
        }
        c
    }

    /// The middlebox's log so far.
    pub fn middlebox_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("middlebox.log")).unwrap_or_default()
    }

    /// The log of a server process started from [`ServerSide::procs`].
    pub fn proc_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.0.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The offset the middlebox chose for the (first) connection, if it logged one.
    pub fn middlebox_offset(&self) -> Option<(u32, String)> {
        let log = self.middlebox_log();
        let line = log.lines().find(|l| l.starts_with("conn "))?;
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .map(str::to_string)
        };
        Some((field("offset=")?.parse().ok()?, field("half=")?))
    }

    /// Waits up to `secs` for the middlebox log to contain `needle`.
    pub fn wait_middlebox_log(&self, needle: &str, secs: u64) -> bool {
        wait_until(secs, || self.middlebox_log().contains(needle))
    }
}

/// A veth pair between two namespaces, offloads off so segments are real segments.
fn wire(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    run(Command::new("ip").args([
        "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev, "netns",
        &b.name,
    ]));
    for (ns, dev) in [(a, a_dev), (b, b_dev)] {
        ns.sh(&format!(
            "ip link set {dev} up && ethtool -K {dev} tso off gso off gro off >/dev/null"
        ));
    }
}

/// Sleeps a little (helper for tests that poll something other than a log).
pub fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}
