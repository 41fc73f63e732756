//! The ctnetlink layer alone (`nfqwall::ctnetlink`), against the kernel: a TCP
//! connection through a hardened server ruleset (`ct state invalid counter drop`,
//! `be_liberal = 0`), then the per-connection liberal flag set on that one entry.
//!
//! The client is scapy (`tests/handback/client.py`). Before the flag, data far beyond
//! the receiver's window and an ACK for data never sent are INVALID; after it, they
//! are not. The same run measures what
//! the kernel does with out-of-window RSTs under the flag: a RST 2^31 from the next
//! sequence number is still INVALID (conntrack's RST check, before the window check,
//! does not look at the flag), one 2^30 away is not (the window check lets it
//! through as `be_liberal=1` does; the server's TCP ignores it, the connection lives).
//! Also: the update keeps the entry's state and its other flags, and an entry that
//! does not exist is `ENOENT`, named.
//!
//! Root only; `cargo test --release --test handback_netns -- --nocapture`.

mod support;

use nfqwall::ctnetlink::{CtError, CtSocket, TcpTuple, IP_CT_TCP_FLAG_BE_LIBERAL};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::Duration;
use support::{require_root, Guarded, Pair};

const PYTHON: &str = "/usr/bin/python3";
const CLIENT_PY: &str = include_str!("handback/client.py");
const PORT: u16 = 9000;
/// `TCP_CONNTRACK_ESTABLISHED`.
const ESTABLISHED: u8 = 3;

/// Runs `f` on a thread that has entered the network namespace `ns` (setns applies
/// to the calling thread only, so the test's other threads stay where they are).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the netns file");
        // SAFETY: a valid namespace fd; only this thread changes namespace.
        let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

fn run_family(family: &str, prefix: &str) {
    let pair = Pair::new(prefix);
    let (client_addr, server_addr) = match family {
        "v4" => ("192.0.2.1", "192.0.2.2"),
        _ => ("2001:db8::1", "2001:db8::2"),
    };
    pair.server.sh(
        "sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal=0 2>/dev/null; \
         nft add table inet hb && nft add counter inet hb inv && \
         nft 'add chain inet hb in { type filter hook input priority 0; }' && \
         nft add rule inet hb in ct state invalid counter name inv drop && \
         sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal=0 net.netfilter.nf_conntrack_log_invalid=6",
    );
    // scapy owns the client's end: the client kernel's RSTs (no socket) never leave.
    pair.client.sh("nft add table inet c && \
         nft 'add chain inet c out { type filter hook output priority 0; }' && \
         nft add rule inet c out tcp flags rst drop");
    let _server: Guarded = pair.server.spawn(&format!(
        "{PYTHON} -c 'import socket,time\n\
s=socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n\
s.bind((\"::\", {PORT})); s.listen(8)\n\
c=[s.accept() for _ in range(1)]; time.sleep(60)'"
    ));
    let ready = support::wait_until(5, || {
        pair.server
            .try_sh(&format!("ss -Htln | grep -q ':{PORT} '"))
            .status
            .success()
    });
    assert!(ready, "server did not listen");

    let dir = std::env::temp_dir().join(format!("nfqw-hb-{family}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("client.py");
    std::fs::write(&script, CLIENT_PY).unwrap();
    let args = json!({
        "dir": dir, "family": family, "src": client_addr, "dst": server_addr,
        "dport": PORT, "server_ns": pair.server.name,
    });
    let mut client = pair
        .client
        .spawn(&format!("{PYTHON} {} '{}'", script.display(), args));

    // Phase 1 runs; then the tuple appears and the flag is set from the server's side.
    let tuple_file = dir.join("tuple");
    let got = support::wait_until(30, || tuple_file.exists());
    if !got {
        let out = client.wait_output();
        panic!(
            "client never reached the handback: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    let t: Value = serde_json::from_str(&std::fs::read_to_string(&tuple_file).unwrap()).unwrap();
    let tuple = TcpTuple {
        src: t["src"].as_str().unwrap().parse::<IpAddr>().unwrap(),
        sport: t["sport"].as_u64().unwrap() as u16,
        dst: t["dst"].as_str().unwrap().parse::<IpAddr>().unwrap(),
        dport: PORT,
    };
    let missing = TcpTuple {
        sport: tuple.sport.wrapping_add(1),
        ..tuple
    };
    let (before, set, after, absent, elapsed) = in_netns(&pair.server.name, move || {
        let mut s = CtSocket::open(Duration::from_secs(2)).expect("ctnetlink socket");
        let before = s.tcp_info(&tuple).expect("read the entry before");
        let t0 = std::time::Instant::now();
        let set = s.set_tcp_liberal(&tuple);
        let elapsed = t0.elapsed();
        let after = s.tcp_info(&tuple).expect("read the entry after");
        let absent = s.set_tcp_liberal(&missing);
        (
            before,
            set.map_err(|e| e.to_string()),
            after,
            absent,
            elapsed,
        )
    });
    std::fs::write(dir.join("go"), b"").unwrap();
    let out = client.wait_output();
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "client output unreadable ({e}): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let _ = std::fs::remove_dir_all(&dir);

    eprintln!(
        "{family}: before {before:?}\n{family}: set {set:?} in {elapsed:?}\n{family}: after {after:?}\n\
         {family}: absent tuple -> {}\n{family}: client {r}",
        absent
            .as_ref()
            .err()
            .map(|e| format!("{} ({e})", e.name()))
            .unwrap_or("ok?".into())
    );
    assert!(r["error"].is_null(), "{family}: client: {r}");
    assert_eq!(set, Ok(()), "{family}: the update failed");
    assert!(!before.liberal(), "{family}: liberal before the update");
    assert!(after.liberal(), "{family}: not liberal after: {after:?}");
    // A partial update: the state and the other flags are untouched.
    assert_eq!(before.state, ESTABLISHED, "{family}: {before:?}");
    assert_eq!(after.state, before.state, "{family}: state changed");
    assert_eq!(
        after.flags_original,
        before.flags_original | IP_CT_TCP_FLAG_BE_LIBERAL,
        "{family}"
    );
    assert_eq!(
        after.flags_reply,
        before.flags_reply | IP_CT_TCP_FLAG_BE_LIBERAL,
        "{family}"
    );
    assert!(
        matches!(&absent, Err(e @ CtError::Kernel { errno, .. }) if *errno == libc::ENOENT && e.name() == "no_entry"),
        "{family}: updating a missing entry: {absent:?}"
    );

    let invalid = |phase: &str, probe: &str| -> u64 {
        r[phase]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["probe"] == probe)
            .unwrap_or_else(|| panic!("{family}: no {probe} in {phase}: {r}"))["invalid"]
            .as_u64()
            .unwrap()
    };
    // Strict conntrack: the probes are INVALID. (Data only 1,000 bytes past the window
    // is not, on Linux 6.x: "N bytes more than expected", ignored and passed; it is
    // printed above, not asserted.)
    for p in [
        "data far beyond window",
        "ack beyond sent data",
        "rst +2^31",
        "rst +2^30",
    ] {
        assert_eq!(invalid("phase1", p), 1, "{family}: strict, {p}: {r}");
    }
    // The flag: what be_liberal would pass passes; the RST 2^31 away stays INVALID.
    for (p, want) in [
        ("data far beyond window", 0),
        ("ack beyond sent data", 0),
        ("rst +2^31", 1),
        ("rst +2^30", 0),
    ] {
        assert_eq!(
            invalid("phase2", p),
            want,
            "{family}: liberal flag, {p}: {r}"
        );
    }
    assert_eq!(
        r["alive_after"], true,
        "{family}: the connection did not survive the RSTs: {r}"
    );
}

#[test]
fn liberal_flag_set_by_ctnetlink_v4() {
    if require_root("liberal_flag_set_by_ctnetlink_v4") {
        run_family("v4", "hb4");
    }
}

#[test]
fn liberal_flag_set_by_ctnetlink_v6() {
    if require_root("liberal_flag_set_by_ctnetlink_v6") {
        run_family("v6", "hb6");
    }
}
