//! The rendered rulesets shipped in `rules/` are exactly what `nfqwall rules print`
//! prints, and the nftables files pass `nft -c` as far as this kernel allows.
//!
//! Regenerate after a rendering change with `NFQWALL_BLESS=1 cargo test --test rules_files`.

mod support;

use std::path::Path;
use std::process::Command;

/// Each shipped file and the `nfqwall rules print` arguments that produce it.
const SHIPPED: &[(&str, &[&str])] = &[
    ("rules/default.v4.rules", &["--family", "ipv4"]),
    ("rules/default.v6.rules", &["--family", "ipv6"]),
    (
        "rules/examples/busy-dns.v4.rules",
        &[
            "--config",
            "rules/examples/busy-dns.toml",
            "--family",
            "ipv4",
        ],
    ),
    (
        "rules/examples/busy-dns.v6.rules",
        &[
            "--config",
            "rules/examples/busy-dns.toml",
            "--family",
            "ipv6",
        ],
    ),
    (
        "rules/examples/legacy-http-behind-cisco.v4.rules",
        &[
            "--config",
            "rules/examples/legacy-http-behind-cisco.toml",
            "--family",
            "ipv4",
        ],
    ),
    (
        "rules/examples/legacy-http-behind-cisco.v6.rules",
        &[
            "--config",
            "rules/examples/legacy-http-behind-cisco.toml",
            "--family",
            "ipv6",
        ],
    ),
    ("rules/nftables/default.nft", &["--format", "nft"]),
    (
        "rules/nftables/busy-dns.nft",
        &[
            "--config",
            "rules/examples/busy-dns.toml",
            "--format",
            "nft",
        ],
    ),
    (
        "rules/nftables/legacy-http-behind-cisco.nft",
        &[
            "--config",
            "rules/examples/legacy-http-behind-cisco.toml",
            "--format",
            "nft",
        ],
    ),
];

/// A config with every form the nft rendering has (kernel drops by source, flags,
/// interface, length and source port; the SACK rule; the vouch and fail-open
/// accepts; a stateless service; marks other than the defaults), checked by `nft -c`
/// like the shipped files.
const EVERY_FORM: &str = r#"
[daemon]
mode = "enforce"
queues = "2-5"
vouch_mark = 0x100
state_mask = 0x7000
fail_open_invalid = "accept"

[[service]]
name = "web"
protocol = "tcp"
ports = [80, "8000-8080"]
default = "accept"
queue = ["invalid", "new"]
sack_repair = true

[[service.rule]]
name = "scanners"
action = "drop"
source = ["198.51.100.0/24", "2001:db8:bad::/48"]

[[service.rule]]
name = "synfin"
action = "drop"
tcp_flags = "syn,fin"
interface = "eth+"

[[service.rule]]
name = "null"
action = "drop"
tcp_flags = "!syn,!ack,!fin,!rst"
ct_state = ["invalid"]
length = "40"

[[service.rule]]
name = "lowport"
action = "drop"
source_ports = ["0-1023"]
interface = "lo"

[[service]]
name = "ping"
protocol = "icmp"
default = "accept"
queue = ["new", "established", "related", "invalid", "untracked"]

[[service.rule]]
name = "v6-only"
action = "drop"
source = ["2001:db8:1::/64"]

[[service]]
name = "dns"
protocol = "udp"
ports = [53]
addresses = ["192.0.2.53/32", "2001:db8::53/128"]
default = "accept"
stateless = true
queue = ["untracked"]

[[service.rule]]
name = "big"
action = "drop"
length = "1500-65535"
"#;

fn print(args: &[&str]) -> String {
    let out = support::run(
        Command::new(env!("CARGO_BIN_EXE_nfqwall"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["rules", "print"])
            .args(args),
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn shipped_rulesets_match_rules_print() {
    let bless = std::env::var_os("NFQWALL_BLESS").is_some();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut drifted = Vec::new();
    for (file, args) in SHIPPED {
        let want = print(args);
        let path = root.join(file);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            if bless {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &want).unwrap();
            } else {
                drifted.push(format!("{file} (nfqwall rules print {})", args.join(" ")));
            }
        }
    }
    assert!(
        drifted.is_empty(),
        "shipped rulesets differ from `nfqwall rules print`; regenerate with \
         `NFQWALL_BLESS=1 cargo test --test rules_files`:\n  {}",
        drifted.join("\n  ")
    );
}

/// Returns Ok if `nft -c -f` accepted the file, or rejected nothing but `queue`
/// statements for want of the kernel's nft_queue ("Could not process rule: No such
/// file or directory" with the caret under `queue`): parsing and evaluation, which
/// nft does in userspace before asking the kernel, passed. Any other error is Err.
fn nft_check(ns: &support::Netns, path: &Path) -> Result<(), String> {
    let out = ns
        .cmd("nft")
        .args(["-c", "-f"])
        .arg(path)
        .output()
        .expect("cannot run nft");
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    let mut queue_only = !lines.is_empty();
    for (i, l) in lines.iter().enumerate() {
        if !l.contains("Error:") {
            continue;
        }
        let caret_on_queue = match (lines.get(i + 1), lines.get(i + 2)) {
            (Some(src), Some(caret)) => caret
                .find('^')
                .is_some_and(|c| src.get(c..).is_some_and(|s| s.starts_with("queue"))),
            _ => false,
        };
        if !(l.contains("Could not process rule: No such file or directory") && caret_on_queue) {
            queue_only = false;
        }
    }
    if queue_only {
        Ok(())
    } else {
        Err(stderr)
    }
}

#[test]
fn nftables_files_pass_nft_check() {
    if !support::require_root("nftables_files_pass_nft_check") {
        return;
    }
    let ns = support::Netns::new("nftc");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("nfqwall-nftc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let every_form = dir.join("every-form.toml");
    std::fs::write(&every_form, EVERY_FORM).unwrap();
    let every_form_nft = dir.join("every-form.nft");
    std::fs::write(
        &every_form_nft,
        print(&["--config", every_form.to_str().unwrap(), "--format", "nft"]),
    )
    .unwrap();
    let files: Vec<(String, std::path::PathBuf)> = SHIPPED
        .iter()
        .filter(|(f, _)| f.ends_with(".nft"))
        .map(|(f, _)| (f.to_string(), root.join(f)))
        .chain([("every-form.nft".to_string(), every_form_nft)])
        .collect();
    for (file, path) in &files {
        nft_check(&ns, path).unwrap_or_else(|e| panic!("nft -c -f {file}:\n{e}"));
        // Without the queue statement, the whole file must pass the kernel's checks too.
        let text = std::fs::read_to_string(path).unwrap();
        let mut queues = 0;
        let no_queue: String = text
            .lines()
            .map(|l| match l.find("queue num ") {
                Some(i) => {
                    queues += 1;
                    let rest = &l[i..];
                    let end = rest.find(" bypass").map(|e| e + " bypass".len()).unwrap();
                    format!("{}accept{}\n", &l[..i], &rest[end..])
                }
                None => format!("{l}\n"),
            })
            .collect();
        assert_eq!(queues, 1, "{file}: one queue statement, in chain to-queue");
        let tmp = dir.join(format!(
            "no-queue-{}",
            Path::new(file).file_name().unwrap().to_str().unwrap()
        ));
        std::fs::write(&tmp, &no_queue).unwrap();
        let out = ns.cmd("nft").args(["-c", "-f"]).arg(&tmp).output().unwrap();
        assert!(
            out.status.success(),
            "nft -c -f {file} with queue replaced by accept:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The check is not vacuous: a syntax error fails it.
    let broken = dir.join("broken.nft");
    std::fs::write(
        &broken,
        "table inet nfqwall {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tmeta l4proto tcp ct state bogus queue num 0 bypass\n\t}\n}\n",
    )
    .unwrap();
    assert!(nft_check(&ns, &broken).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
