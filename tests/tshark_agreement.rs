//! Agreement with tshark: replay every shared capture through the engine and compare
//! each TCP frame's `analysis` with tshark 4.0.17's `tcp.analysis.*` flags
//! (`tests/fixtures/pcaps/*.tshark.csv`, see MANIFEST.md there).
//!
//! Run with `cargo test --release --test tshark_agreement -- --nocapture` to see the
//! per-category table that the README publishes.

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

fn captures() -> Vec<String> {
    let text = fs::read_to_string(Path::new(DIR).join("summary.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

/// Our flags per frame number, as bits over `Pattern::CONTRACT`.
fn ours(name: &str) -> HashMap<u64, u16> {
    let engine = Engine::new(&Config::builtin_default());
    let file = fs::File::open(Path::new(DIR).join(name)).unwrap();
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
            out.insert(o.frame, bits);
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

/// tshark's flags per TCP frame number.
fn theirs(name: &str) -> Vec<(u64, u16)> {
    let text = fs::read_to_string(Path::new(DIR).join(format!("{name}.tshark.csv"))).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let idx: Vec<usize> = Pattern::CONTRACT.iter().map(|p| col(p.name())).collect();
    lines
        .map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            let mut bits = 0u16;
            for (i, c) in idx.iter().enumerate() {
                if cols[*c] == "1" {
                    bits |= 1 << i;
                }
            }
            (cols[0].parse().unwrap(), bits)
        })
        .collect()
}

#[test]
fn analysis_agrees_with_tshark() {
    let mut tallies = [Tally::default(); 12];
    let mut frames = 0u64;
    let mut identical = 0u64;
    let mut per_capture = Vec::new();
    for name in captures() {
        let ours = ours(&name);
        let mut cap_diff = 0;
        for (frame, want) in theirs(&name) {
            let got = *ours
                .get(&frame)
                .unwrap_or_else(|| panic!("{name}: frame {frame} not replayed"));
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
