//! Frames in memory and the loop that judges them: what the engine bench and
//! `examples/decide_loop.rs` (the same loop under callgrind) share.

// Each user takes a part of it.
#![allow(dead_code)]

use nfqwall::engine::{CtHint, Engine, LinkType, PacketMeta};
use nfqwall::replay::capture::CaptureReader;
use std::hint::black_box;

/// One frame to judge.
pub struct Packet {
    pub ts: u64,
    pub link: LinkType,
    pub wire_len: u32,
    pub bytes: Vec<u8>,
}

/// Every frame of every capture in `tests/fixtures/pcaps`, in file-name order: the
/// `mixed` workload (run from the repository's top level).
pub fn load_captures() -> Vec<Packet> {
    let mut names: Vec<_> = std::fs::read_dir("tests/fixtures/pcaps")
        .expect("tests/fixtures/pcaps (run from the repository's top level)")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "pcap").then_some(p)
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    for path in names {
        let file = std::fs::File::open(&path).expect("capture opens");
        let mut r = CaptureReader::new(file).expect("capture header");
        while let Some(Ok(f)) = r.next_frame() {
            if let Ok(link) = f.link {
                out.push(Packet {
                    ts: f.ts_ns,
                    link,
                    wire_len: f.wire_len,
                    bytes: f.data.to_vec(),
                });
            }
        }
    }
    out
}

/// Judges every packet once, as a whole capture (conntrack state derived).
/// Never inlined, so that callgrind can count exactly this (`--toggle-collect`).
#[inline(never)]
pub fn run(engine: &Engine, packets: &[Packet]) {
    for p in packets {
        let meta = PacketMeta {
            link: p.link,
            ct: CtHint::Auto,
            in_iface: None,
            out_iface: None,
            mark: 0,
            wire_len: p.wire_len,
        };
        black_box(engine.decide(p.ts, &meta, black_box(&p.bytes)));
    }
}
