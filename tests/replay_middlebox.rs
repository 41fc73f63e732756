//! End to end through `nfqwall replay`: a capture of a download through a
//! sequence-randomizing middlebox that leaves SACK blocks in the client's space. The
//! summary must name the flow and estimate the offset; enforce mode drops nothing.

#[path = "captures/middlebox.rs"]
mod middlebox;

use middlebox::{download, pcap_raw, OFFSET};
use std::process::Command;

#[test]
fn replay_summary_names_the_middlebox_and_its_offset() {
    // The server sends 20 segments; segment 5 is lost on the way. After each later
    // one, the client SACKs what it holds beyond the hole, in its own (shifted) space.
    let p = download(20, 1400);
    let dir = std::env::temp_dir().join(format!("nfqwall-mbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("middlebox.pcap");
    std::fs::write(&file, pcap_raw(&p)).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_nfqwall"))
        .args(["replay", "--mode", "enforce", file.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("verdicts:  37 accept, 0 drop"), "{text}");
    assert!(text.contains("14  sack_displaced (accept)"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("  192.0.2.10:51000 -> 198.51.100.80:80: offset ~"))
        .unwrap_or_else(|| panic!("no middlebox line in:\n{text}"));
    // "offset ~N (consistent range A..=B), 6 packets from frame 24"
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let (low, high) = (nums[nums.len() - 4], nums[nums.len() - 3]);
    assert!(
        u64::from(OFFSET) >= low && u64::from(OFFSET) <= high,
        "{line}"
    );
    // The client SACKs the latest segment each time, so the lower bound
    // (`right edge - highest sent`) is the offset exactly; the upper bound stays
    // loose (a first block may be a D-SACK), so the estimate is the lower bound.
    assert_eq!(low, u64::from(OFFSET), "{line}");
    assert!(line.contains(&format!("offset ~{OFFSET} ")), "{line}");
    assert!(high > low, "{line}");
    assert!(line.ends_with("14 packets from frame 11"), "{line}");

    let out = Command::new(env!("CARGO_BIN_EXE_nfqwall"))
        .args(["replay", "--per-packet", file.to_str().unwrap()])
        .output()
        .unwrap();
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["reason"], "sack_displaced");
    let est = v["offset"].as_u64().unwrap();
    assert!(
        est.abs_diff(u64::from(OFFSET)) < 1400,
        "estimate {est} vs {OFFSET}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
