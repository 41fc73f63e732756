//! Agreement with tshark: replay every shared capture through the engine and compare
//! each TCP frame's `analysis` with tshark 4.0.17's `tcp.analysis.*` flags
//! (`tests/fixtures/pcaps/*.tshark.csv`, see MANIFEST.md there).
//!
//! Run with `cargo test --release --test tshark_agreement -- --nocapture` to see the
//! per-category tables that the README publishes.
//!
//! `tests/fixtures/pcaps/tunnels` holds captures of tunnels (GRE, ERSPAN, VXLAN,
//! Geneve, GTP-U, IP in IP), NFLOG and 802.11; [`tunnels_agree_with_tshark`] holds
//! them to the same thresholds and also checks that every TCP frame was analysed at
//! the layer tshark analysed: the innermost addresses and ports.

use nfqwall::config::Config;
use nfqwall::engine::patterns::Pattern;
use nfqwall::engine::{CtHint, Engine};
use std::collections::HashMap;
use std::fs;
use std::path::Path;

const DIR: &str = "tests/fixtures/pcaps";

/// Thresholds: raise them as the analysis improves, never lower them.
const MIN_PRECISION: f64 = 1.0;
const MIN_RECALL: f64 = 1.0;
const MIN_IDENTICAL: f64 = 1.0;
/// Categories with fewer flagged frames than this are reported but not asserted.
const MIN_FLAGGED: u64 = 1;

#[derive(Default, Clone, Copy)]
struct Tally {
    tp: u64,
    fp: u64,
    fn_: u64,
}

impl Tally {
    fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }
    fn recall(&self) -> f64 {
        if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        }
    }
}

const TUNNEL_DIR: &str = "tests/fixtures/pcaps/tunnels";

fn captures(dir: &str) -> Vec<String> {
    let text = fs::read_to_string(Path::new(dir).join("summary.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

/// Addresses and ports as the CSV writes them.
type Tuple = (String, String, u16, u16);

/// Our flags per frame number, as bits over `Pattern::CONTRACT`, and the tuple the
/// engine analysed.
fn ours(dir: &str, name: &str, config: &Config) -> HashMap<u64, (u16, Option<Tuple>)> {
    let engine = Engine::new(config);
    let file = fs::File::open(Path::new(dir).join(name)).unwrap();
    let mut out = HashMap::new();
    let summary = nfqwall::replay::replay(
        &engine,
        std::io::BufReader::new(file),
        nfqwall::replay::Visibility::Full(CtHint::Auto),
        |o| {
            let mut bits = 0u16;
            for (i, p) in Pattern::CONTRACT.iter().enumerate() {
                if o.decision.patterns.contains(*p) {
                    bits |= 1 << i;
                }
            }
            let tuple = o
                .decision
                .tuple
                .map(|t| (t.src.to_string(), t.dst.to_string(), t.sport, t.dport));
            out.insert(o.frame, (bits, tuple));
        },
    )
    .unwrap();
    assert!(
        summary.truncated.is_none(),
        "{name}: {:?}",
        summary.truncated
    );
    out
}

/// tshark's flags per TCP frame number, and its innermost tuple (None for TCP
/// quoted in an ICMP error, which nfqwall judges as the ICMP packet).
fn theirs(dir: &str, name: &str) -> Vec<(u64, u16, Option<Tuple>)> {
    let text = fs::read_to_string(Path::new(dir).join(format!("{name}.tshark.csv"))).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let idx: Vec<usize> = Pattern::CONTRACT.iter().map(|p| col(p.name())).collect();
    let (src, dst, sport, dport, icmp) = (
        col("ip_src"),
        col("ip_dst"),
        col("tcp_srcport"),
        col("tcp_dstport"),
        col("in_icmp_error"),
    );
    lines
        .map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            let mut bits = 0u16;
            for (i, c) in idx.iter().enumerate() {
                if cols[*c] == "1" {
                    bits |= 1 << i;
                }
            }
            let tuple = (cols[icmp] == "0").then(|| {
                (
                    cols[src].to_string(),
                    cols[dst].to_string(),
                    cols[sport].parse().unwrap(),
                    cols[dport].parse().unwrap(),
                )
            });
            (cols[0].parse().unwrap(), bits, tuple)
        })
        .collect()
}

#[test]
fn analysis_agrees_with_tshark() {
    agreement(DIR, &Config::builtin_default());
}

#[test]
fn tunnels_agree_with_tshark() {
    // `arkime__gtp-iphone` reopens one connection (5060 to 5060) 26 to 38 s after
    // it closed, which tshark flags as reused ports: the engine remembers a closed
    // flow for `closed` seconds (10 by default, like conntrack), tshark forever.
    // A replay that wants tshark's answer there keeps closed flows longer.
    let mut config = Config::builtin_default();
    config.engine.timeouts.closed = 60;
    agreement(TUNNEL_DIR, &config);
}

/// Compares every capture of `dir` (listed in its summary.tsv) with tshark and
/// asserts the thresholds.
fn agreement(dir: &str, config: &Config) {
    let mut tallies = [Tally::default(); 12];
    let mut frames = 0u64;
    let mut identical = 0u64;
    let mut per_capture = Vec::new();
    for name in captures(dir) {
        let ours = ours(dir, &name, config);
        let mut cap_diff = 0;
        for (frame, want, want_tuple) in theirs(dir, &name) {
            let (got, got_tuple) = ours
                .get(&frame)
                .cloned()
                .unwrap_or_else(|| panic!("{name}: frame {frame} not replayed"));
            if want_tuple.is_some() {
                assert_eq!(
                    got_tuple, want_tuple,
                    "{name}: frame {frame} analysed at another layer than tshark's"
                );
            }
            frames += 1;
            if got == want {
                identical += 1;
            } else {
                cap_diff += 1;
            }
            for (i, t) in tallies.iter_mut().enumerate() {
                let (g, w) = (got & (1 << i) != 0, want & (1 << i) != 0);
                match (g, w) {
                    (true, true) => t.tp += 1,
                    (true, false) => t.fp += 1,
                    (false, true) => t.fn_ += 1,
                    _ => {}
                }
            }
        }
        per_capture.push((name, cap_diff));
    }
    println!("{dir}:\n");
    println!("| category | tshark frames | nfqwall frames | both | precision | recall |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (p, t) in Pattern::CONTRACT.iter().zip(&tallies) {
        println!(
            "| {} | {} | {} | {} | {:.4} | {:.4} |",
            p.name(),
            t.tp + t.fn_,
            t.tp + t.fp,
            t.tp,
            t.precision(),
            t.recall()
        );
    }
    let share = identical as f64 / frames as f64;
    println!(
        "\nTCP frames: {frames}, identical flag sets: {identical} ({:.4})",
        share
    );
    for (name, diff) in &per_capture {
        if *diff > 0 {
            println!("  {name}: {diff} frames differ");
        }
    }
    for (p, t) in Pattern::CONTRACT.iter().zip(&tallies) {
        if t.tp + t.fn_ >= MIN_FLAGGED {
            assert!(
                t.precision() >= MIN_PRECISION,
                "{}: precision {:.4}",
                p.name(),
                t.precision()
            );
            assert!(
                t.recall() >= MIN_RECALL,
                "{}: recall {:.4}",
                p.name(),
                t.recall()
            );
        }
    }
    assert!(share >= MIN_IDENTICAL, "identical share {share:.4}");
}
