//! Every shared capture reads completely, with tshark's frame count and timestamps.

use nfqwall::replay::capture::CaptureReader;
use std::collections::HashMap;
use std::fs;
use std::path::Path;

const DIR: &str = "tests/fixtures/pcaps";

fn summary_frames() -> HashMap<String, u64> {
    let text = fs::read_to_string(Path::new(DIR).join("summary.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let mut cols = l.split('\t');
            let name = cols.next().unwrap().to_string();
            (name, cols.next().unwrap().parse().unwrap())
        })
        .collect()
}

fn read_all(name: &str) -> Vec<(u64, u64)> {
    let file = fs::File::open(Path::new(DIR).join(name)).unwrap();
    let mut r = CaptureReader::new(std::io::BufReader::new(file)).unwrap();
    let mut out = Vec::new();
    while let Some(f) = r.next_frame() {
        let f = f.unwrap_or_else(|e| panic!("{name}: {e}"));
        out.push((f.number, f.ts_ns));
    }
    out
}

#[test]
fn frame_counts_match_tshark() {
    let expected = summary_frames();
    assert!(
        expected.len() >= 40,
        "summary.tsv lists {} captures",
        expected.len()
    );
    for (name, frames) in &expected {
        assert_eq!(read_all(name).len() as u64, *frames, "{name}");
    }
}

#[test]
fn timestamps_match_tshark_epoch_time() {
    for (name, _) in summary_frames() {
        let ours: HashMap<u64, u64> = read_all(&name).into_iter().collect();
        let csv = fs::read_to_string(Path::new(DIR).join(format!("{name}.tshark.csv"))).unwrap();
        for line in csv.lines().skip(1) {
            let mut cols = line.split(',');
            let frame: u64 = cols.next().unwrap().parse().unwrap();
            let (secs, nanos) = cols.next().unwrap().split_once('.').unwrap();
            let ts: u64 =
                secs.parse::<u64>().unwrap() * 1_000_000_000 + nanos.parse::<u64>().unwrap();
            assert_eq!(ours[&frame], ts, "{name} frame {frame}");
        }
    }
}

#[test]
fn pcapng_and_its_pcap_conversion_agree() {
    for (name, _) in summary_frames() {
        let Some(stem) = name.strip_suffix(".pcapng") else {
            continue;
        };
        assert_eq!(read_all(&name), read_all(&format!("{stem}.pcap")), "{stem}");
    }
}
