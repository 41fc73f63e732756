//! The engine bench's `mixed` loop as a plain program, for instruction counts.
//!
//! Every frame of every capture in `tests/fixtures/pcaps` goes through one engine's
//! `decide`, `PASSES` times per round, `ROUNDS` rounds; it prints the best round's
//! packets per second. Wall-clock figures on a shared machine move by a tenth from
//! run to run; instructions do not:
//!
//! ```text
//! cargo build --release --example decide_loop
//! valgrind --tool=callgrind --toggle-collect='decide_loop::frames::run' \
//!     target/release/examples/decide_loop 5 1
//! ```
//!
//! then divide the collected instructions by 22,332 frames x 5 passes.

#[path = "../bench/frames.rs"]
mod frames;

use frames::{load_captures, run};
use nfqwall::config::Config;
use nfqwall::engine::Engine;

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .map_or(default, |s| s.parse().expect("a number"))
    };
    let (passes, rounds) = (arg(1, 30), arg(2, 10));
    let packets = load_captures();
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
