//! Replays the tshark oracle CSVs through `StreamAnalysis` and scores the flags.
//!
//! Every `tests/fixtures/pcaps/*.tshark.csv` holds, per TCP frame, the header fields
//! and the `tcp.analysis.*` flags tshark 4.0.17 computed (see MANIFEST.md there). This
//! test rebuilds a `SegmentInfo` from each row, feeds it to one `StreamAnalysis` per
//! connection and compares the flags it returns with tshark's.
//!
//! This harness is an approximation of the pcap-driven test that will replace it:
//! - The CSV has no TCP options. The Window Scale shift of a SYN is inferred from a
//!   later segment of the same direction (`win_scaled / win_value`; `-2` = no scaling).
//! - Connections are keyed by the unordered address/port 4-tuple, as the engine's
//!   flow table does; tshark's `tcp_stream` column is ignored, so reused ports must be
//!   found by the analysis itself.
//! - Frames quoted inside ICMP errors (`in_icmp_error=1`) are skipped, as the engine's
//!   caller skips them.
//! - Where a capture exists both as pcapng and as converted pcap, the two oracle CSVs
//!   are byte-identical; only the pcapng's is counted, so each capture counts once.
//!
//! Run with `cargo test --test analysis_csv -- --nocapture` to see the table; set
//! `ANALYSIS_CSV_DUMP=1` to also list every disagreeing frame.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use nfqwall::engine::analysis::{tcp_flags, SegmentInfo, Side, StreamAnalysis};
use nfqwall::engine::patterns::{Pattern, Patterns};
use nfqwall::engine::seq::SeqNumber;

/// Precision and recall required of every category (all 15, the three extras too) with
/// at least `MIN_FLAGGED` frames flagged by tshark. The brief asked for 0.97 on
/// categories with 20 or more; the replay reaches 1.0 on every category, so that is
/// the bar.
const MIN_PRECISION: f64 = 1.0;
const MIN_RECALL: f64 = 1.0;
const MIN_FLAGGED: u64 = 1;
/// Share of frames whose twelve contract flags all match tshark's (brief: 0.99).
const MIN_IDENTICAL: f64 = 1.0;

/// One CSV row, reduced to what the replay needs.
struct Row {
    frame: u64,
    ts_ns: u64,
    src: (String, u16),
    dst: (String, u16),
    seq: u32,
    ack: u32,
    len: u32,
    flags: u8,
    win_value: u16,
    win_scaled: i64,
    expected: Patterns,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pcaps")
}

/// The oracle CSVs, one per distinct capture (pcapng preferred over its pcap twin).
fn oracle_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(fixtures_dir())
        .expect("fixtures directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".tshark.csv"))
        .collect();
    files.sort();
    files
        .iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            match name.strip_suffix(".pcap.tshark.csv") {
                Some(stem) => !Path::new(&format!("{stem}.pcapng.tshark.csv")).exists(),
                None => true,
            }
        })
        .cloned()
        .collect()
}

/// Parses "1236095711.960416000" into nanoseconds.
fn parse_epoch_ns(s: &str) -> u64 {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    secs.parse::<u64>().expect("seconds") * 1_000_000_000 + frac.parse::<u64>().expect("ns")
}

fn parse_rows(path: &Path) -> Vec<Row> {
    let text = fs::read_to_string(path).expect("read csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("column {name}"))
    };
    let (c_frame, c_time, c_src, c_dst) = (
        col("frame_number"),
        col("epoch_time"),
        col("ip_src"),
        col("ip_dst"),
    );
    let (c_sport, c_dport, c_seq, c_ack) = (
        col("tcp_srcport"),
        col("tcp_dstport"),
        col("tcp_seq_raw"),
        col("tcp_ack_raw"),
    );
    let (c_len, c_flags, c_win, c_scaled, c_icmp) = (
        col("tcp_len"),
        col("tcp_flags"),
        col("win_value"),
        col("win_scaled"),
        col("in_icmp_error"),
    );
    let pattern_cols: Vec<(usize, Pattern)> =
        Pattern::ALL.iter().map(|p| (col(p.name()), *p)).collect();

    let mut rows = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f[c_icmp] == "1" || f[c_flags].is_empty() || f[c_seq].is_empty() {
            continue;
        }
        let expected = pattern_cols
            .iter()
            .filter(|(c, _)| f[*c] == "1")
            .map(|(_, p)| *p)
            .collect();
        rows.push(Row {
            frame: f[c_frame].parse().expect("frame"),
            ts_ns: parse_epoch_ns(f[c_time]),
            src: (f[c_src].to_string(), f[c_sport].parse().expect("sport")),
            dst: (f[c_dst].to_string(), f[c_dport].parse().expect("dport")),
            seq: f[c_seq].parse().expect("seq"),
            ack: f[c_ack].parse().unwrap_or(0),
            len: f[c_len].parse().expect("len"),
            // tshark prints all 12 flag bits ("0x0012"); the contract wants the low 8.
            flags: (u16::from_str_radix(f[c_flags].trim_start_matches("0x"), 16).expect("flags")
                & 0xff) as u8,
            win_value: f[c_win].parse().unwrap_or(0),
            win_scaled: f[c_scaled].parse().unwrap_or(-1),
            expected,
        });
    }
    rows
}

/// The Window Scale shift a SYN at `i` must have carried, judged from the first later
/// segment of the same direction whose calculated window tshark reported.
fn inferred_window_scale(rows: &[Row], i: usize) -> Option<u8> {
    let syn = &rows[i];
    for later in &rows[i + 1..] {
        if later.src != syn.src || later.dst != syn.dst {
            continue;
        }
        if later.flags & tcp_flags::SYN != 0 {
            if later.seq != syn.seq {
                return None; // a new connection on the same ports
            }
            continue; // a retransmitted SYN: keep looking
        }
        match later.win_scaled {
            -2 => return None,
            -1 => continue,
            scaled if later.win_value > 0 => {
                let ratio = scaled as u64 / u64::from(later.win_value);
                if ratio.is_power_of_two() && ratio * u64::from(later.win_value) == scaled as u64 {
                    return Some(ratio.trailing_zeros() as u8);
                }
                return None;
            }
            _ => continue,
        }
    }
    None
}

#[derive(Default, Clone, Copy)]
struct Score {
    tp: u64,
    fp: u64,
    fn_: u64,
}

impl Score {
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

type Endpoint = (String, u16);

#[test]
fn flags_match_tshark_oracle() {
    let dump = std::env::var_os("ANALYSIS_CSV_DUMP").is_some();
    let mut scores = [Score::default(); 15];
    let (mut frames, mut identical) = (0u64, 0u64);

    for path in oracle_files() {
        let rows = parse_rows(&path);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let mut conns: HashMap<(Endpoint, Endpoint), (StreamAnalysis, Endpoint)> = HashMap::new();
        let (mut file_frames, mut file_identical) = (0u64, 0u64);

        for (i, row) in rows.iter().enumerate() {
            let key = if row.src <= row.dst {
                (row.src.clone(), row.dst.clone())
            } else {
                (row.dst.clone(), row.src.clone())
            };
            let (analysis, first) = conns
                .entry(key)
                .or_insert_with(|| (StreamAnalysis::new(), row.src.clone()));
            let side = if row.src == *first {
                Side::First
            } else {
                Side::Second
            };
            let seg = SegmentInfo {
                ts_ns: row.ts_ns,
                seq: SeqNumber(row.seq),
                ack: SeqNumber(row.ack),
                payload_len: row.len,
                flags: row.flags,
                window: row.win_value,
                window_scale: if row.flags & tcp_flags::SYN != 0 {
                    inferred_window_scale(&rows, i)
                } else {
                    None
                },
            };
            let got = analysis.on_segment(side, &seg);

            let mut same = true;
            for (k, p) in Pattern::ALL.iter().enumerate() {
                // Only the twelve contract flags decide whether a frame is identical.
                let counts = Pattern::CONTRACT.contains(p);
                match (got.contains(*p), row.expected.contains(*p)) {
                    (true, true) => scores[k].tp += 1,
                    (true, false) => {
                        scores[k].fp += 1;
                        same &= !counts;
                    }
                    (false, true) => {
                        scores[k].fn_ += 1;
                        same &= !counts;
                    }
                    (false, false) => {}
                }
            }
            file_frames += 1;
            if same {
                file_identical += 1;
            } else if dump {
                let contract =
                    |s: Patterns| s.iter().map(Pattern::name).collect::<Vec<_>>().join("+");
                println!(
                    "  {name} frame {}: tshark [{}] ours [{}]",
                    row.frame,
                    contract(row.expected),
                    contract(got)
                );
            }
        }
        println!("{name}: {file_identical}/{file_frames} frames identical",);
        frames += file_frames;
        identical += file_identical;
    }

    println!();
    println!(
        "{:<24} {:>7} {:>6} {:>6} {:>6} {:>9} {:>7}",
        "category", "flagged", "tp", "fp", "fn", "precision", "recall"
    );
    let mut failures = Vec::new();
    for (k, p) in Pattern::ALL.iter().enumerate() {
        let s = scores[k];
        if *p == Pattern::WindowUpdate {
            println!("(returned too, though not in the per-packet contract)");
        }
        let flagged = s.tp + s.fn_;
        println!(
            "{:<24} {:>7} {:>6} {:>6} {:>6} {:>9.4} {:>7.4}",
            p.name(),
            flagged,
            s.tp,
            s.fp,
            s.fn_,
            s.precision(),
            s.recall()
        );
        if flagged >= MIN_FLAGGED && (s.precision() < MIN_PRECISION || s.recall() < MIN_RECALL) {
            failures.push(p.name());
        }
    }
    let share = identical as f64 / frames.max(1) as f64;
    println!("identical frames: {identical}/{frames} = {share:.4}");

    assert!(
        failures.is_empty(),
        "precision/recall below threshold for {failures:?}"
    );
    assert!(
        share >= MIN_IDENTICAL,
        "identical share {share:.4} below {MIN_IDENTICAL}"
    );
}
