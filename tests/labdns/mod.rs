//! Lab 2 infrastructure: a busy DNS server in a network namespace, clients that make
//! every query a new flow, and one call that runs a scenario and collects its counts.
//!
//! Topology (all namespaces created by the test, names unique per process):
//!
//! ```text
//!   client A (192.0.2.2)  --veth ca/sa--  server (192.0.2.1 | 192.0.2.53 on lo)
//!   client B (203.0.113.2) --veth cb/sb--  server (203.0.113.1)
//! ```
//!
//! The server runs dnsmasq on 192.0.2.53:53, answering `*.example.test` from its own
//! config (no upstream, no cache). Each client runs dnsperf from one socket, bound to
//! port [`DNSPERF_PORT`].
//!
//! One flow per query: dnsperf reuses its socket, so by itself it makes one conntrack
//! entry. Each client namespace therefore rewrites every query statelessly in
//! nftables postrouting (payload mangling, checksums updated by the kernel):
//! client A's source address becomes a random one of 198.51.100.1-254 (`numgen
//! random` through a map) and every client's source port becomes the query's DNS ID
//! with the top bit set (`@ih,0,16 | 0x8000`; dnsperf numbers its queries
//! sequentially, so consecutive queries get distinct ports). Prerouting rewrites
//! the answers back (destination address and port 20000). A map and the DNS ID
//! rather than `udp sport set numgen ...`: nft 1.0.6 converts the 32-bit numgen
//! value to network order and then writes its first two bytes, which are 0.
//! Both client namespaces `notrack` everything, so only the server's conntrack
//! counts. The server routes 198.51.100.0/24 back to client A, rp_filter is off.
//!
//! Offloads: checksum offload is off on every veth end (tx and rx), so checksums
//! are computed and verified in software and a wrong checksum update by the rewrite
//! would show as `Udp InCsumErrors` (checked by the test).
//!
//! Every scenario starts from the same *base* server ruleset, an operator's ordinary
//! stateful host firewall ([`BASE_RULESET`]). It matters beyond realism: conntrack
//! runs in a namespace only once a rule needs it, and `CT --notrack` alone does not,
//! so without a conntrack-using base ruleset "NOTRACK on one direction only" would
//! show zero entries for the wrong reason.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::{run, wait_until, Guarded, Netns};

/// The nfqwall binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_nfqwall");

/// The DNS service address (on the server's loopback).
pub const SERVICE: &str = "192.0.2.53";

/// The local port of dnsperf's one socket in each client namespace.
pub const DNSPERF_PORT: u16 = 20000;

/// Queries each dnsperf keeps outstanding. With one socket per client and 100
/// outstanding, dnsmasq's receive buffer cannot overflow (more outstanding, e.g. 500,
/// loses some queries to `UdpRcvbufErrors` and measures the buffer, not the firewall).
pub const OUTSTANDING: u32 = 100;

/// The server's base ruleset (`iptables-restore`, replaces filter and raw): a
/// plain stateful host firewall that accepts DNS queries whether conntrack calls them
/// NEW (tracked) or UNTRACKED (stateless service).
pub const BASE_RULESET: &str = "\
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A INPUT -p udp -m udp --dport 53 -m conntrack --ctstate NEW,UNTRACKED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
COMMIT
";

/// One client namespace running dnsperf.
pub struct Client {
    /// "A", "B": how the results table names it.
    pub label: &'static str,
    /// Its namespace.
    pub ns: Netns,
    /// Its real address (dnsperf's socket).
    pub addr: &'static str,
    /// The /24 its queries' source addresses are drawn from (first three octets);
    /// `None`: the source address is left alone, only the port is rewritten.
    pub pool: Option<&'static str>,
}

/// A directory for the lab's files, removed on drop.
pub struct LabDir(pub PathBuf);

impl Drop for LabDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lab: server, clients, dnsmasq running.
pub struct Lab {
    /// dnsmasq in the server namespace (declared first: dropped first).
    pub _dnsmasq: Guarded,
    /// The server namespace.
    pub server: Netns,
    /// The client namespaces.
    pub clients: Vec<Client>,
    /// Files: query list, configs, logs.
    pub dir: LabDir,
}

/// What to put on top of the base ruleset, in order.
pub enum Step {
    /// `nfqwall rules install --config @DIR@/FILE` after writing `config` there
    /// (`@DIR@` in it replaced by the lab directory).
    Nfqwall {
        /// File name in the lab directory (a server process can name it too).
        file: &'static str,
        /// The config text.
        config: String,
    },
    /// A shell script run in the server namespace (hand-written rules).
    Sh(String),
}

/// A long-running process started in the server namespace after the rules and
/// stopped (SIGTERM, then SIGKILL after 5 s) after the load: `nfqwall run`.
pub struct ServerProcess {
    /// The command line (`@DIR@` replaced by the lab directory).
    pub script: String,
    /// A shell check, run in the server namespace, that succeeds once the process is
    /// ready (`@DIR@` replaced); waited for up to 10 s.
    pub ready: String,
    /// A shell script run in the server namespace after the load, while the process
    /// still runs (`@DIR@` replaced), e.g. `nfqwall stats --json`; its stdout is
    /// [`Outcome::collected`].
    pub collect: Option<String>,
}

/// One measured situation: install ruleset R, start process P in the server
/// namespace, run the load, collect counts. See [`Lab::run`].
pub struct Scenario {
    /// Row name in the results table.
    pub name: String,
    /// Rules on top of [`BASE_RULESET`].
    pub steps: Vec<Step>,
    /// A process to run in the server namespace during the load.
    pub process: Option<ServerProcess>,
    /// Labels of the clients that send load, concurrently.
    pub clients: Vec<&'static str>,
    /// dnsperf's time limit (`-l`), seconds.
    pub secs: u32,
    /// dnsperf's rate limit per client (`-Q`), queries/s; `None`: as fast as it can.
    pub rate: Option<u32>,
}

/// dnsperf's statistics for one client.
#[derive(Clone, Debug, Default)]
pub struct Perf {
    /// "Queries sent".
    pub sent: u64,
    /// "Queries completed" (answered).
    pub completed: u64,
    /// "Queries lost" (timed out).
    pub lost: u64,
    /// "Queries per second" (completed / run time).
    pub qps: f64,
}

/// What one scenario measured.
pub struct Outcome {
    /// The scenario's name.
    pub name: String,
    /// dnsperf's statistics per client label.
    pub perf: Vec<(&'static str, Perf)>,
    /// `nf_conntrack_count` in the server namespace right after the load.
    pub ct_count: u64,
    /// Conntrack statistics (`conntrack -S`, summed over CPUs) gained during the
    /// scenario: `early_drop`, `drop`, `insert_failed`, ...
    pub ct_stats: BTreeMap<String, u64>,
    /// Udp InCsumErrors gained in the server namespace.
    pub csum_errors: u64,
    /// The stdout of the server process's `collect` script, if any.
    pub collected: Option<String>,
    /// The server process's output, if one ran.
    pub process_output: Option<Output>,
}

impl Outcome {
    /// dnsperf's statistics of client `label`.
    pub fn client(&self, label: &str) -> &Perf {
        &self
            .perf
            .iter()
            .find(|(l, _)| *l == label)
            .unwrap_or_else(|| panic!("{}: client {label} sent no load", self.name))
            .1
    }

    /// A conntrack statistic gained during the scenario (0 if absent).
    pub fn ct_stat(&self, key: &str) -> u64 {
        self.ct_stats.get(key).copied().unwrap_or(0)
    }
}

/// Creates a veth pair between `a` and `b` with the given addresses, checksum offload
/// off, and waits for carrier.
fn link(a: &Netns, a_dev: &str, a_addr: &str, b: &Netns, b_dev: &str, b_addr: &str) {
    run(Command::new("ip").args([
        "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev, "netns",
        &b.name,
    ]));
    for (ns, dev, addr) in [(a, a_dev, a_addr), (b, b_dev, b_addr)] {
        ns.sh(&format!(
            "ip addr add {addr} dev {dev} && ip link set {dev} up && \
             ethtool -K {dev} tx off rx off tso off gso off gro off >/dev/null 2>&1"
        ));
    }
    for (ns, dev) in [(a, a_dev), (b, b_dev)] {
        let up = wait_until(5, || {
            ns.try_sh(&format!("ip link show dev {dev} | grep -q LOWER_UP"))
                .status
                .success()
        });
        assert!(up, "{dev} in {} never came up", ns.name);
    }
}

/// The client namespace's nftables ruleset: notrack everything, rewrite each query's
/// source (address from the pool, port from the DNS ID), rewrite answers back.
pub fn client_nft(addr: &str, pool: Option<&str>) -> String {
    let (answer_match, addr_set, back) = match pool {
        Some(p) => {
            let map: Vec<String> = (0..254).map(|i| format!("{i} : {p}.{}", i + 1)).collect();
            (
                format!("ip daddr {p}.0/24"),
                format!(
                    "ip saddr set numgen random mod 254 map {{ {} }} ",
                    map.join(", ")
                ),
                format!("ip daddr set {addr} "),
            )
        }
        None => (
            format!("ip daddr {addr} udp dport >= 32768"),
            String::new(),
            String::new(),
        ),
    };
    format!(
        "table ip nfqwall_lab {{
  chain pre {{
    type filter hook prerouting priority raw; policy accept;
    notrack
    ip saddr {SERVICE} udp sport 53 {answer_match} {back}udp dport set {DNSPERF_PORT}
  }}
  chain out {{
    type filter hook output priority raw; policy accept;
    notrack
  }}
  chain post {{
    type filter hook postrouting priority filter; policy accept;
    ip saddr {addr} ip daddr {SERVICE} udp sport {DNSPERF_PORT} udp dport 53 {addr_set}udp sport set @ih,0,16 | 0x8000
  }}
}}
"
    )
}

impl Lab {
    /// Builds the topology and starts dnsmasq.
    pub fn new() -> Lab {
        let dir = std::env::temp_dir().join(format!("nfqwall-labdns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cannot create the lab directory");
        let dir = LabDir(dir);
        let server = Netns::new("dnss");
        let a = Netns::new("dnsa");
        let b = Netns::new("dnsb");
        link(&server, "sa", "192.0.2.1/24", &a, "ca", "192.0.2.2/24");
        link(&server, "sb", "203.0.113.1/24", &b, "cb", "203.0.113.2/24");
        server.sh(&format!(
            "ip addr add {SERVICE}/32 dev lo && \
             ip route add 198.51.100.0/24 via 192.0.2.2 dev sa && \
             for k in all default lo sa sb; do sysctl -qw net.ipv4.conf.$k.rp_filter=0; done"
        ));
        a.sh("ip route add default via 192.0.2.1");
        b.sh("ip route add default via 203.0.113.1");
        let clients = vec![
            Client {
                label: "A",
                ns: a,
                addr: "192.0.2.2",
                pool: Some("198.51.100"),
            },
            Client {
                label: "B",
                ns: b,
                addr: "203.0.113.2",
                pool: None,
            },
        ];
        for c in &clients {
            let file = dir.0.join(format!("client-{}.nft", c.label));
            std::fs::write(&file, client_nft(c.addr, c.pool)).unwrap();
            c.ns.sh(&format!("nft -f {}", file.display()));
        }
        let names: String = ["www", "mail", "ns1", "api", "cdn", "ftp", "example.test"]
            .iter()
            .map(|n| {
                if n.contains('.') {
                    format!("{n} A\n")
                } else {
                    format!("{n}.example.test A\n")
                }
            })
            .collect();
        std::fs::write(dir.0.join("queries.txt"), names).unwrap();
        // Foreground, no config file, no upstream, answers *.example.test itself; no
        // cache (nothing to cache), no query log.
        let dnsmasq = server.spawn(&format!(
            "dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --no-poll \
             --bind-interfaces --listen-address={SERVICE} --port=53 \
             --address=/example.test/{SERVICE} --cache-size=0 --pid-file= --user=root \
             --group=root --log-facility=-"
        ));
        let up = wait_until(10, || {
            server
                .sh_out("ss -lunH 'sport = :53'")
                .contains(&format!("{SERVICE}:53"))
        });
        assert!(up, "dnsmasq did not start listening on {SERVICE}:53");
        let lab = Lab {
            _dnsmasq: dnsmasq,
            server,
            clients,
            dir,
        };
        lab.reset();
        lab
    }

    /// `text` with `@DIR@` replaced by the lab directory.
    pub fn expand(&self, text: &str) -> String {
        text.replace("@DIR@", &self.dir.0.display().to_string())
    }

    /// A file in the lab directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    /// The client labelled `label`.
    pub fn client(&self, label: &str) -> &Client {
        self.clients
            .iter()
            .find(|c| c.label == label)
            .unwrap_or_else(|| panic!("no client {label}"))
    }

    /// Runs `nfqwall ARGS` in the server namespace; panics on failure.
    pub fn nfqwall(&self, args: &[&str]) -> String {
        let out = self
            .server
            .cmd(BIN)
            .args(args)
            .output()
            .expect("cannot run nfqwall");
        assert!(
            out.status.success(),
            "nfqwall {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `config` (after `@DIR@` expansion) to the lab directory as `name`.
    pub fn write_config(&self, name: &str, config: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, self.expand(config)).unwrap();
        p
    }

    /// Back to the base ruleset with an empty conntrack table.
    pub fn reset(&self) {
        self.nfqwall(&["rules", "remove"]);
        let file = self.path("base.rules");
        std::fs::write(&file, BASE_RULESET).unwrap();
        self.server
            .sh(&format!("iptables-restore < {}", file.display()));
        self.server.try_sh("conntrack -F 2>/dev/null");
    }

    /// Entries in the server namespace's conntrack table now.
    pub fn ct_count(&self) -> u64 {
        let s = self
            .server
            .sh_out("cat /proc/sys/net/netfilter/nf_conntrack_count");
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad nf_conntrack_count {s:?}"))
    }

    /// `conntrack -S` in the server namespace, summed over CPUs.
    pub fn ct_stats(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for w in self.server.sh_out("conntrack -S").split_whitespace() {
            if let Some((k, v)) = w.split_once('=') {
                if let Ok(v) = v.parse::<u64>() {
                    *m.entry(k.to_string()).or_insert(0) += v;
                }
            }
        }
        m
    }

    /// Udp InCsumErrors in `ns` (from /proc/net/snmp, which is per namespace).
    pub fn udp_csum_errors(ns: &Netns) -> u64 {
        let snmp = ns.sh_out("cat /proc/net/snmp");
        let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
        let (names, values) = (udp[0], udp[1]);
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "InCsumErrors")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    }

    /// Original-direction (source address, source port) of the server's UDP conntrack
    /// entries (`conntrack -L`).
    pub fn ct_sources(&self) -> Vec<(String, u16)> {
        let out = self.server.sh_out("conntrack -L -p udp 2>/dev/null");
        out.lines()
            .filter_map(|l| {
                let field = |k: &str| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix(k))
                        .map(str::to_string)
                };
                Some((field("src=")?, field("sport=")?.parse().ok()?))
            })
            .collect()
    }

    /// The dnsperf command line of one client.
    fn dnsperf(&self, secs: u32, rate: Option<u32>) -> String {
        let rate = rate.map(|r| format!(" -Q {r}")).unwrap_or_default();
        format!(
            "dnsperf -s {SERVICE} -d {} -l {secs} -c 1 -T 1 -x {DNSPERF_PORT} -q {OUTSTANDING} \
             -t 1{rate} 2>&1",
            self.path("queries.txt").display()
        )
    }

    /// Runs one scenario: back to the base ruleset and an empty conntrack table,
    /// install the scenario's rules, start its server process and wait until it is
    /// ready, run dnsperf on each of its clients at once, then collect dnsperf's
    /// statistics, the conntrack count and statistics, and the process's output.
    pub fn run(&self, sc: &Scenario) -> Outcome {
        self.reset();
        for step in &sc.steps {
            match step {
                Step::Nfqwall { file, config } => {
                    let p = self.write_config(file, config);
                    self.nfqwall(&["rules", "install", "--config", &p.display().to_string()]);
                }
                Step::Sh(script) => {
                    self.server.sh(&self.expand(script));
                }
            }
        }
        let mut process = sc.process.as_ref().map(|p| {
            let mut g = self.server.spawn(&self.expand(&p.script));
            let check = self.expand(&p.ready);
            if !wait_until(10, || self.server.try_sh(&check).status.success()) {
                g.signal("KILL");
                let out = g.wait_output();
                panic!(
                    "{}: server process not ready ({check}):\nstdout: {}\nstderr: {}",
                    sc.name,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            g
        });
        let stats_before = self.ct_stats();
        let csum_before = Lab::udp_csum_errors(&self.server);
        let mut loads: Vec<(&'static str, Guarded)> = sc
            .clients
            .iter()
            .map(|l| {
                let c = self.client(l);
                (c.label, c.ns.spawn(&self.dnsperf(sc.secs, sc.rate)))
            })
            .collect();
        let perf: Vec<(&'static str, Perf)> = loads
            .iter_mut()
            .map(|(l, g)| {
                let out = g.wait_output();
                let text = String::from_utf8_lossy(&out.stdout);
                (
                    *l,
                    parse_dnsperf(&text).unwrap_or_else(|| {
                        panic!(
                            "{}: client {l}: cannot read dnsperf's output:\n{text}",
                            sc.name
                        )
                    }),
                )
            })
            .collect();
        let ct_count = self.ct_count();
        let stats_after = self.ct_stats();
        let ct_stats = stats_after
            .iter()
            .map(|(k, v)| {
                let before = stats_before.get(k).copied().unwrap_or(0);
                (k.clone(), v.saturating_sub(before))
            })
            .collect();
        let csum_errors = Lab::udp_csum_errors(&self.server).saturating_sub(csum_before);
        let collected = sc
            .process
            .as_ref()
            .and_then(|p| p.collect.as_ref())
            .map(|c| self.server.sh_out(&self.expand(c)));
        let process_output = process.as_mut().map(stop);
        Outcome {
            name: sc.name.clone(),
            perf,
            ct_count,
            ct_stats,
            csum_errors,
            collected,
            process_output,
        }
    }
}

/// SIGTERM, up to 5 s to exit, then SIGKILL; returns the output.
fn stop(g: &mut Guarded) -> Output {
    let _ = Command::new("kill")
        .args(["-TERM", &g.pid().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(Ok(Some(_))) = g.child.as_mut().map(|c| c.try_wait()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(Ok(None)) = g.child.as_mut().map(|c| c.try_wait()) {
        let _ = g.child.as_mut().map(|c| c.kill());
    }
    g.wait_output()
}

/// Reads dnsperf's final statistics.
pub fn parse_dnsperf(text: &str) -> Option<Perf> {
    let num = |key: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
    };
    Some(Perf {
        sent: num("Queries sent:")?.parse().ok()?,
        completed: num("Queries completed:")?.parse().ok()?,
        lost: num("Queries lost:")?.parse().ok()?,
        qps: num("Queries per second:")?.parse().ok()?,
    })
}

/// Distinct values of `f` over `items`.
pub fn distinct<T, K: std::hash::Hash + Eq>(items: &[T], f: impl Fn(&T) -> K) -> usize {
    items.iter().map(f).collect::<HashSet<_>>().len()
}

/// The global conntrack table limit (readable, not settable, in a namespace).
pub fn ct_max(lab: &Lab) -> u64 {
    lab.server
        .sh_out("cat /proc/sys/net/netfilter/nf_conntrack_max")
        .trim()
        .parse()
        .unwrap_or(262_144)
}
