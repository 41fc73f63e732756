//! End to end through `nfqwall replay`: a capture of a download through a
//! sequence-randomizing middlebox that leaves SACK blocks in the client's space. The
//! summary must name the flow and estimate the offset; enforce mode drops nothing.

use etherparse::{PacketBuilder, TcpOptionElement};
use std::process::Command;

const OFFSET: u32 = 0x3d09_0000;

/// Writes a classic pcap (LINKTYPE_RAW) of the given packets, 1 ms apart.
fn pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&101u32.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        f.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        f.extend_from_slice(&(i as u32 * 1000).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(p);
    }
    f
}

fn seg(
    from_client: bool,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    len: usize,
    opts: &[TcpOptionElement],
) -> Vec<u8> {
    let (src, dst, sp, dp) = if from_client {
        ([192, 0, 2, 10], [198, 51, 100, 80], 51000, 80)
    } else {
        ([198, 51, 100, 80], [192, 0, 2, 10], 80, 51000)
    };
    let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, seq, 1024);
    if syn {
        b = b.syn();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    let b = b.options(opts).unwrap();
    let mut out = Vec::new();
    b.write(&mut out, &vec![0u8; len]).unwrap();
    out
}

#[test]
fn replay_summary_names_the_middlebox_and_its_offset() {
    let (c, s) = (7_000u32, 2_000_000_000u32);
    let syn_opts = [
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::WindowScale(7),
    ];
    let mut p = vec![
        seg(true, c, None, true, 0, &syn_opts),
        seg(false, s, Some(c + 1), true, 0, &syn_opts),
        seg(true, c + 1, Some(s + 1), false, 0, &[]),
    ];
    // The server sends 20 segments; segment 5 is lost on the way. After each later
    // one, the client SACKs what it holds beyond the hole, in its own (shifted) space.
    for i in 0..20u32 {
        p.push(seg(false, s + 1 + i * 1400, Some(c + 1), false, 1400, &[]));
        if i >= 6 {
            let sack = TcpOptionElement::SelectiveAcknowledgement(
                (
                    (s + 1 + 6 * 1400).wrapping_add(OFFSET),
                    (s + 1 + (i + 1) * 1400).wrapping_add(OFFSET),
                ),
                [None, None, None],
            );
            p.push(seg(
                true,
                c + 1,
                Some(s + 1 + 5 * 1400),
                false,
                0,
                &[TcpOptionElement::Noop, TcpOptionElement::Noop, sack],
            ));
        }
    }
    let dir = std::env::temp_dir().join(format!("nfqwall-mbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("middlebox.pcap");
    std::fs::write(&file, pcap(&p)).unwrap();

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
