//! The engine bench's `mixed` loop as a plain program, for instruction counts.
//!
//! Every frame of every capture in `tests/fixtures/pcaps` goes through one engine's
//! `decide`, `PASSES` times per round, `ROUNDS` rounds; it prints the best round's
//! packets per second. Wall-clock figures on a shared machine move by a tenth from
//! run to run; instructions do not:
//!
//! ```text
//! cargo build --release --example decide_loop
//! valgrind --tool=callgrind --toggle-collect='decide_loop::run' \
//!     target/release/examples/decide_loop 5 1
//! ```
//!
//! divides the collected instructions by 22,332 frames x 5 passes.

use nfqwall::config::Config;
use nfqwall::engine::{CtHint, Engine, LinkType, PacketMeta};
use nfqwall::replay::capture::CaptureReader;
use std::hint::black_box;

struct Packet {
    ts: u64,
    link: LinkType,
    wire_len: u32,
    bytes: Vec<u8>,
}

fn load() -> Vec<Packet> {
    let mut names: Vec<_> = std::fs::read_dir("tests/fixtures/pcaps")
        .expect("run from the repository's top level")
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

#[inline(never)]
fn run(engine: &Engine, packets: &[Packet]) {
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

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .map_or(default, |s| s.parse().expect("a number"))
    };
    let (passes, rounds) = (arg(1, 30), arg(2, 10));
    let packets = load();
    let engine = Engine::new(&Config::builtin_default());
    let mut best = 0f64;
    for _ in 0..rounds {
        let start = std::time::Instant::now();
        for _ in 0..passes {
            run(&engine, &packets);
        }
        let pps = (packets.len() * passes) as f64 / start.elapsed().as_secs_f64();
        best = best.max(pps);
    }
    println!(
        "{} frames, {passes} passes, best of {rounds} rounds: {:.2} Mpps",
        packets.len(),
        best / 1e6
    );
}
