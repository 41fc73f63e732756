//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/*`, seeds and crash
//! regressions) through the same code the cargo-fuzz targets run (`fuzz/harness.rs`),
//! on the stable toolchain: no input may panic. See `fuzz/README.md`.

#[path = "../fuzz/harness.rs"]
mod harness;

use nfqwall::config::Config;
use nfqwall::engine::Verdict;
use std::fs;
use std::path::Path;

/// The corpus files of one target, in name order (the packet target's engine state
/// carries over from file to file, so the order is part of the test).
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Runs `f` on every file, naming the file that panicked.
fn each(target: &str, files: &[(String, Vec<u8>)], mut f: impl FnMut(&[u8])) {
    for (name, data) in files {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(data)));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("?");
            panic!("fuzz/corpus/{target}/{name} panicked: {msg}");
        }
    }
}

#[test]
fn packet_corpus_replays_through_one_engine() {
    let files = corpus("packet");
    assert!(files.len() >= 100, "{} packet seeds", files.len());
    let mut h = harness::PacketHarness::new();
    each("packet", &files, |d| {
        h.run(d);
    });
    let judged = files.iter().filter(|(_, d)| d.len() > 1).count() as u64;
    let packets = h.engine().counters().packets;
    assert_eq!(packets, judged, "every input with a frame is judged once");
}

#[test]
fn packet_harness_accepts_a_plain_syn() {
    // Control byte 0x02: RawIp, Given(New), no clock step; an IPv4 SYN to port 80.
    let mut input = vec![0x02];
    input.extend_from_slice(&harness::probe_packets()[0]);
    let mut h = harness::PacketHarness::new();
    assert_eq!(h.run(&input), Some(Verdict::Accept));
    assert_eq!(h.run(&[]), None);
}

#[test]
fn capture_corpus_replays() {
    let files = corpus("capture");
    assert!(files.len() >= 20, "{} capture seeds", files.len());
    let config = harness::packet_config();
    each("capture", &files, |d| {
        harness::capture(d, &config);
    });
    // A known seed: the whole two-frame capture of a refused connection.
    let known = fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pcaps/chrissanders__tcp_refuseconnection.pcap"),
    )
    .unwrap();
    assert!(files.iter().any(|(_, d)| *d == known), "seed missing");
    assert_eq!(harness::capture(&known, &config), 2);
    // The cut seed ends inside a record: the frames before it are still read.
    let cut = files.iter().find(|(n, _)| n.starts_with("cut-")).unwrap();
    assert!(harness::capture(&cut.1, &config) > 0);
}

#[test]
fn config_corpus_replays() {
    let files = corpus("config");
    assert!(files.len() >= 3, "{} config seeds", files.len());
    each("config", &files, |d| {
        let _ = harness::config(d);
    });
    // The shipped default (a seed when `cargo run --example fuzz_seeds` last ran; it
    // changes with every new key, so it is checked here, not looked up) parses to the
    // built-in default through the same harness.
    let default = Config::default_toml().as_bytes();
    assert_eq!(harness::config(default), Ok(Config::builtin_default()));
    assert!(harness::config(b"[daemon]\nmode = 3\n").is_err());
}
