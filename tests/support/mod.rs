//! Test support: root detection and network namespaces that clean up after
//! themselves, for the tests that need real packets through the kernel.
//!
//! Every namespace name carries the test's prefix, the process id and a counter, so
//! tests run in parallel (and CI runs concurrent jobs) without colliding. `Drop`
//! deletes namespaces and kills children, also when an assertion fails.

#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Returns true if the process runs as root; otherwise prints why `test` is skipped.
/// CI runs as root, so there these tests always run.
pub fn require_root(test: &str) -> bool {
    // SAFETY-free: read the effective uid from /proc rather than calling libc.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("1");
    if euid == "0" {
        true
    } else {
        eprintln!("skipping {test}: needs root to create network namespaces (CI runs it as root)");
        false
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command to completion, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// The namespace's name (`ip netns` name).
    pub name: String,
}

impl Netns {
    /// Creates a namespace named after `prefix`, with loopback up.
    pub fn new(prefix: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("nfqw-{prefix}-{}-{n}", std::process::id());
        assert!(name.len() <= 40, "namespace name too long: {name}");
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.sh("ip link set lo up");
        ns
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a shell script inside the namespace; panics on failure.
    pub fn sh(&self, script: &str) -> Output {
        run(self.cmd("sh").args(["-c", script]))
    }

    /// Runs a shell script inside the namespace and returns its output, success or not.
    pub fn try_sh(&self, script: &str) -> Output {
        self.cmd("sh")
            .args(["-c", script])
            .output()
            .expect("cannot start ip netns exec")
    }

    /// Runs a shell script inside the namespace; returns stdout as a string.
    pub fn sh_out(&self, script: &str) -> String {
        String::from_utf8_lossy(&self.sh(script).stdout).into_owned()
    }

    /// Starts a long-running program inside the namespace; killed on drop.
    pub fn spawn(&self, script: &str) -> Guarded {
        let child = self
            .cmd("sh")
            .args(["-c", &format!("exec {script}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
        Guarded { child: Some(child) }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill whatever still runs inside, then delete the namespace.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Guarded {
    /// The child; `None` once waited for.
    pub child: Option<Child>,
}

impl Guarded {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal by name (`TERM`, `HUP`, `STOP`, `CONT`, `KILL`).
    pub fn signal(&self, sig: &str) {
        run(Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]));
    }

    /// Waits for exit and returns the output (stdout and stderr collected).
    pub fn wait_output(&mut self) -> Output {
        self.child
            .take()
            .expect("already waited")
            .wait_with_output()
            .expect("wait failed")
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Two namespaces joined by a veth pair: `client` (192.0.2.1, 2001:db8::1) and
/// `server` (192.0.2.2, 2001:db8::2), with offloads off so segments are real segments.
pub struct Pair {
    /// The client side.
    pub client: Netns,
    /// The server side.
    pub server: Netns,
}

impl Pair {
    /// Creates and wires the two namespaces.
    pub fn new(prefix: &str) -> Pair {
        let client = Netns::new(&format!("{prefix}c"));
        let server = Netns::new(&format!("{prefix}s"));
        run(Command::new("ip").args([
            "link",
            "add",
            "veth-c",
            "netns",
            &client.name,
            "type",
            "veth",
            "peer",
            "name",
            "veth-s",
            "netns",
            &server.name,
        ]));
        for (ns, dev, v4, v6) in [
            (&client, "veth-c", "192.0.2.1/24", "2001:db8::1/64"),
            (&server, "veth-s", "192.0.2.2/24", "2001:db8::2/64"),
        ] {
            ns.sh(&format!(
                "ip addr add {v4} dev {dev} && ip -6 addr add {v6} dev {dev} nodad && \
                 ip link set {dev} up && \
                 (ethtool -K {dev} tso off gso off gro off >/dev/null 2>&1 || true)"
            ));
        }
        // A veth end reports carrier only once both ends are up; wait for it, so the
        // first packet of a test is not lost to a link still coming up.
        for (ns, dev) in [(&client, "veth-c"), (&server, "veth-s")] {
            let up = wait_until(5, || {
                ns.try_sh(&format!("ip link show dev {dev} | grep -q LOWER_UP"))
                    .status
                    .success()
            });
            assert!(up, "{dev} in {} never came up", ns.name);
        }
        Pair { client, server }
    }
}

/// The path of the example program `name`, built with the test's profile; built now
/// if `cargo test` did not build it (a test binary run on its own).
pub fn example_bin(name: &str) -> std::path::PathBuf {
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("examples").join(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--example", name]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        run(&mut cmd);
    }
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

/// Waits until `check` returns true, polling every 50 ms, up to `secs` seconds.
pub fn wait_until(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    check()
}

/// utime + stime of process `pid`, in seconds (0 for pid 0: no verdict process).
pub fn cpu_seconds(pid: u32) -> f64 {
    if pid == 0 {
        return 0.0;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after it start at state (field 3).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Peak resident set (`VmHWM`) of process `pid`, bytes (0 if unknown).
pub fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
