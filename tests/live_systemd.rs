//! The systemd side: readiness and watchdog notifications over `NOTIFY_SOCKET`, the
//! install script, and the unit's hardening (`systemd-analyze security` exposure).

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_nfqwall");

/// Reads notification datagrams until one equals-or-contains `want`, up to 10 s.
fn expect(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return true;
            }
        }
    }
    false
}

#[test]
fn live_sd_notify_ready_watchdog_reload_stopping() {
    if !support::require_root("live_sd_notify_ready_watchdog_reload_stopping") {
        return;
    }
    let ns = support::Netns::new("sdn");
    ns.sh("iptables -A INPUT -p tcp -m conntrack --ctstate NEW,INVALID -j NFQUEUE --queue-num 0 --queue-bypass");
    let dir = std::env::temp_dir().join(format!("{}-files", ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    let notify = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let daemon = ns.spawn(&format!(
        "env NOTIFY_SOCKET={} WATCHDOG_USEC=1000000 {BIN} run --no-rules --socket {}",
        notify.display(),
        dir.join("stats.sock").display()
    ));
    let mut seen = Vec::new();
    assert!(expect(&sock, "READY=1", &mut seen), "{seen:?}");
    // Pings at half the watchdog interval.
    assert!(expect(&sock, "WATCHDOG=1", &mut seen), "{seen:?}");
    assert!(expect(&sock, "WATCHDOG=1", &mut seen), "{seen:?}");
    daemon.signal("HUP");
    assert!(expect(&sock, "RELOADING=1", &mut seen), "{seen:?}");
    assert!(expect(&sock, "READY=1", &mut seen), "{seen:?}");
    daemon.signal("TERM");
    assert!(expect(&sock, "STOPPING=1", &mut seen), "{seen:?}");
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn install_script_stages_binary_unit_and_default_config() {
    let root = std::env::temp_dir().join(format!("nfqwall-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/install.sh");
    support::run(
        Command::new("sh")
            .arg(script)
            .env("DESTDIR", &root)
            .env("PREFIX", "/opt/nfqwall")
            .env("NFQWALL_BIN", BIN),
    );
    assert!(root.join("opt/nfqwall/sbin/nfqwall").exists());
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/nfqwall.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/nfqwall/sbin/nfqwall run"),
        "{unit}"
    );
    let config = std::fs::read_to_string(root.join("etc/nfqwall/nfqwall.toml")).unwrap();
    assert_eq!(config, nfqwall::config::Config::default_toml());
    let _ = std::fs::remove_dir_all(&root);
}

/// The unit's exposure as `systemd-analyze security --offline=yes` scores it stays at
/// most 2.0 (skipped where systemd-analyze is missing).
#[test]
fn unit_exposure_is_at_most_2() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/nfqwall.service");
    let out = match Command::new("systemd-analyze")
        .args(["security", "--offline=yes", unit])
        .output()
    {
        Ok(o) => o,
        Err(_) => {
            eprintln!("skipping unit_exposure_is_at_most_2: no systemd-analyze");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line: {text}"));
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("unreadable: {line}"));
    assert!(score <= 2.0, "{line}");
}

/// The unit keeps the system's xtables lock (no `XTABLES_LOCKFILE` of its own: legacy
/// iptables then serializes with every other tool), creates it before the sandboxed
/// commands run and keeps it writable under `ProtectSystem=strict`; and
/// `systemd-analyze verify` accepts it (with the binary path pointed at this build, and
/// MANPATH at the generated man pages: verify also checks that the pages named by
/// `Documentation=` exist).
#[test]
fn unit_keeps_the_system_xtables_lock_and_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/nfqwall.service"
    ))
    .unwrap();
    assert!(!unit.contains("XTABLES_LOCKFILE"), "{unit}");
    let pre: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ExecStartPre="))
        .collect();
    assert_eq!(pre[0], "ExecStartPre=+/usr/bin/touch /run/xtables.lock");
    assert!(unit
        .lines()
        .any(|l| l == "ReadWritePaths=-/run/xtables.lock"));
    assert!(unit.lines().any(|l| l == "ProtectSystem=strict"));
    let dir = std::env::temp_dir().join(format!("nfqwall-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let staged = dir.join("nfqwall.service");
    std::fs::write(&staged, unit.replace("/usr/sbin/nfqwall", BIN)).unwrap();
    let man8 = dir.join("man/man8");
    std::fs::create_dir_all(&man8).unwrap();
    for page in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/doc/man")).unwrap() {
        let page = page.unwrap().path();
        std::fs::copy(&page, man8.join(page.file_name().unwrap())).unwrap();
    }
    match Command::new("systemd-analyze")
        .env("MANPATH", dir.join("man"))
        .arg("verify")
        .arg(&staged)
        .output()
    {
        Err(_) => eprintln!("skipping systemd-analyze verify: no systemd-analyze"),
        Ok(out) => assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
