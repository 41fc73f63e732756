//! The live daemon's test world, shared by the `live_*` tests: a client/server pair
//! of network namespaces, a scratch directory, servers, and `nfqwall run` bound to
//! NFQUEUE in the server's namespace with iptables rules the test installs.

#![allow(dead_code)]

use crate::support::{self, wait_until, Guarded, Pair};
use serde_json::Value;
use std::path::PathBuf;

pub const BIN: &str = env!("CARGO_BIN_EXE_nfqwall");

/// The server's address by family.
pub fn server(v6: bool) -> &'static str {
    if v6 {
        "2001:db8::2"
    } else {
        "192.0.2.2"
    }
}

/// A client address by family and host number (1, 3 or 4).
pub fn client(v6: bool, host: u8) -> String {
    if v6 {
        format!("2001:db8::{host}")
    } else {
        format!("192.0.2.{host}")
    }
}

pub fn url(v6: bool, port: u16) -> String {
    if v6 {
        format!("http://[{}]:{port}/", server(v6))
    } else {
        format!("http://{}:{port}/", server(v6))
    }
}

/// One test's world: a client/server pair, a scratch directory, servers and the daemon.
pub struct Live {
    pub pair: Pair,
    pub dir: PathBuf,
    pub daemon: Option<Guarded>,
    pub servers: Vec<Guarded>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.daemon = None;
        self.servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Live {
    /// A pair whose client also has .3/.4 (v4) and ::3/::4 (v6), with the NFQUEUE
    /// rules of `iptables` (one `iptables`/`ip6tables` command per line) in the server.
    pub fn new(prefix: &str, iptables: &str) -> Live {
        let pair = Pair::new(prefix);
        pair.client.sh(
            "ip addr add 192.0.2.3/24 dev veth-c && ip addr add 192.0.2.4/24 dev veth-c && \
             ip -6 addr add 2001:db8::3/64 dev veth-c nodad && \
             ip -6 addr add 2001:db8::4/64 dev veth-c nodad",
        );
        pair.server.sh(iptables);
        let dir = std::env::temp_dir().join(format!("{}-files", pair.server.name));
        std::fs::create_dir_all(&dir).unwrap();
        Live {
            pair,
            dir,
            daemon: None,
            servers: Vec::new(),
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Writes the config: `body` with `@LOG@` replaced by the event log's path.
    pub fn write_config(&self, body: &str) {
        let text = body.replace("@LOG@", &self.path("events.jsonl"));
        std::fs::write(self.path("nfqwall.toml"), text).unwrap();
    }

    /// Starts a python HTTP server on port 80 (IPv4 and IPv6) and waits for it.
    pub fn http_server(&mut self) {
        let root = self.path("www");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(format!("{root}/index.html"), "hello\n").unwrap();
        let s = self.pair.server.spawn(&format!(
            "/usr/bin/python3 -m http.server 80 --bind :: --directory {root}"
        ));
        self.servers.push(s);
        let ns = &self.pair.server;
        assert!(
            wait_until(10, || ns.sh_out("ss -ltnH 'sport = :80'").contains(":80")),
            "http server did not start"
        );
    }

    /// Starts the daemon with the config file and waits for its `start` event.
    pub fn start_daemon(&mut self) {
        self.start_daemon_args("");
    }

    pub fn start_daemon_args(&mut self, extra: &str) {
        self.start_daemon_cmd(&format!("--no-rules {extra}"));
    }

    /// Starts the daemon with `args` (no `--no-rules` unless given) and waits for it.
    pub fn start_daemon_cmd(&mut self, args: &str) {
        let cmd = format!(
            "{BIN} run --config {} --socket {} {args}",
            self.path("nfqwall.toml"),
            self.path("stats.sock")
        );
        self.daemon = Some(self.pair.server.spawn(&cmd));
        let ok = wait_until(10, || self.events().iter().any(|e| e["event"] == "start"));
        if !ok {
            let out = self.daemon.as_mut().unwrap().wait_output();
            panic!(
                "daemon did not start: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }

    pub fn daemon(&self) -> &Guarded {
        self.daemon.as_ref().expect("daemon running")
    }

    /// Every event line written so far.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
            .collect()
    }

    pub fn events_where(&self, f: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.events().into_iter().filter(|e| f(e)).collect()
    }

    /// `nfqwall stats --json`, run outside the namespace like an operator would.
    pub fn stats(&self) -> Value {
        let out = support::run(std::process::Command::new(BIN).args([
            "stats",
            "--json",
            "--socket",
            &self.path("stats.sock"),
        ]));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Returns true if and only if an HTTP GET from `src` succeeds within `secs`.
    pub fn curl(&self, src: &str, url: &str, secs: u32) -> bool {
        self.pair
            .client
            .try_sh(&format!(
                "curl -sf -o /dev/null -g --interface {src} -m {secs} {url}"
            ))
            .status
            .success()
    }

    /// Starts a load loop of `n` sequential GETs from `src` in the client; its output
    /// is "OK FAILED".
    pub fn load_loop(&self, src: &str, url: &str, n: u32) -> Guarded {
        self.pair.client.spawn(&format!(
            "sh -c 'ok=0; fail=0; i=0; while [ $i -lt {n} ]; do i=$((i+1)); \
             if curl -sf -o /dev/null -g --interface {src} -m 8 {url}; then ok=$((ok+1)); \
             else fail=$((fail+1)); fi; done; echo \"$ok $fail\"'"
        ))
    }

    /// The kernel's line for queue 0 in the server: (queue_total, id_sequence).
    pub fn kernel_queue(&self) -> Option<(u32, u64)> {
        let text = self
            .pair
            .server
            .sh_out("cat /proc/net/netfilter/nfnetlink_queue");
        nfqwall::stats::parse_kernel_queues(&text)
            .into_iter()
            .find(|k| k.queue == 0)
            .map(|k| (k.queue_total, k.id_sequence))
    }
}

/// Waits for a load loop and returns (ok, failed).
pub fn loop_result(mut g: Guarded) -> (u32, u32) {
    let out = g.wait_output();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|t| t.parse::<u32>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// The chain `NFQ-T` in the mangle table of `tool` (`iptables` or `ip6tables`):
/// writes the packet's conntrack state into nfqwall's default state bits, as
/// `nfqwall rules print` renders it, then queues it on queue 0.
pub fn state_chain(tool: &str) -> String {
    let mark = |state: &str, code: u32| {
        format!(
            "{tool} -t mangle -A NFQ-T -m conntrack --ctstate {state} \
             -j MARK --set-xmark {:#x}/0xe000000",
            code << 25
        )
    };
    format!(
        "{tool} -t mangle -N NFQ-T && {} && {} && {} && {} && \
         {tool} -t mangle -A NFQ-T -j NFQUEUE --queue-num 0 --queue-bypass",
        mark("INVALID", 1),
        mark("NEW", 2),
        mark("ESTABLISHED", 3),
        mark("UNTRACKED", 5)
    )
}

/// iptables lines queueing NEW and INVALID TCP to `port` on queue 0 from mangle
/// INPUT, both families, with the state written into the mark.
pub fn queue_tcp(port: u16) -> String {
    format!(
        "{} && {} && \
         iptables -t mangle -A INPUT -p tcp --dport {port} -m conntrack --ctstate NEW,INVALID -j NFQ-T && \
         ip6tables -t mangle -A INPUT -p tcp --dport {port} -m conntrack --ctstate NEW,INVALID -j NFQ-T",
        state_chain("iptables"),
        state_chain("ip6tables")
    )
}

/// A config: `mode`, web service on port 80 with `rules` (TOML `[[service.rule]]`s).
pub fn web_config(mode: &str, extra_daemon: &str, rules: &str) -> String {
    format!(
        "[daemon]\nmode = \"{mode}\"\nqueues = \"0\"\nlog = \"@LOG@\"\n\
         log_rate_per_reason = 1000\nsummary_interval = 1\n{extra_daemon}\n\
         [[service]]\nname = \"web\"\nprotocol = \"tcp\"\nports = [80]\ndefault = \"accept\"\n\
         {rules}"
    )
}

pub fn block_rule(name: &str, host: u8) -> String {
    format!(
        "[[service.rule]]\nname = \"{name}\"\naction = \"drop\"\n\
         source = [\"192.0.2.{host}/32\", \"2001:db8::{host}/128\"]\n"
    )
}
