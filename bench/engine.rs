//! Engine throughput: packets from memory through `Engine::decide`, no I/O.
//!
//! `cargo bench --bench engine` reports packets per second on one core:
//! - `mixed`: every frame of every shared capture (TCP with retransmissions, SACK,
//!   zero windows, UDP, ICMP, other link types), replayed over and over through one
//!   engine, as a live engine sees a mix of flows;
//! - `handshake_and_data`: a synthetic stream of new connections (SYN, SYN/ACK, ACK,
//!   data, FIN) on distinct ports, the NEW-heavy load a busy server queues.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use etherparse::PacketBuilder;
use nfqwall::config::Config;
use nfqwall::engine::{Engine, LinkType};

#[path = "frames.rs"]
mod frames;

use frames::{load_captures, run, Packet};

fn synthetic_connections(n: u16) -> Vec<Packet> {
    synthetic_connections_to(n, 2)
}

/// [`synthetic_connections`] to server 198.51.100.`server`.
fn synthetic_connections_to(n: u16, server: u8) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut ts = 1_700_000_000_000_000_000u64;
    let mut push = |b: etherparse::PacketBuilderStep<etherparse::TcpHeader>, len: usize| {
        let payload = vec![0u8; len];
        let mut bytes = Vec::new();
        b.write(&mut bytes, &payload).unwrap();
        ts += 10_000;
        out.push(Packet {
            ts,
            link: LinkType::RawIp,
            wire_len: 0,
            bytes,
        });
    };
    for port in 0..n {
        let (c, s) = ([192, 0, 2, (port % 250) as u8 + 1], [198, 51, 100, server]);
        let sp = 10_000 + port;
        let (ci, si) = (u32::from(port) * 7919, u32::from(port) * 104_729);
        push(
            PacketBuilder::ipv4(c, s, 64).tcp(sp, 80, ci, 64240).syn(),
            0,
        );
        push(
            PacketBuilder::ipv4(s, c, 64)
                .tcp(80, sp, si, 65160)
                .syn()
                .ack(ci + 1),
            0,
        );
        push(
            PacketBuilder::ipv4(c, s, 64)
                .tcp(sp, 80, ci + 1, 502)
                .ack(si + 1),
            0,
        );
        push(
            PacketBuilder::ipv4(c, s, 64)
                .tcp(sp, 80, ci + 1, 502)
                .ack(si + 1)
                .psh(),
            200,
        );
        push(
            PacketBuilder::ipv4(s, c, 64)
                .tcp(80, sp, si + 1, 509)
                .ack(ci + 201),
            1400,
        );
        push(
            PacketBuilder::ipv4(c, s, 64)
                .tcp(sp, 80, ci + 201, 502)
                .ack(si + 1401)
                .fin(),
            0,
        );
    }
    out
}

fn bench(c: &mut Criterion) {
    let mixed = load_captures();
    let synthetic = synthetic_connections(4000);
    let engine = Engine::new(&Config::builtin_default());
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(mixed.len() as u64));
    g.bench_function("mixed", |b| b.iter(|| run(&engine, &mixed)));
    g.throughput(Throughput::Elements(synthetic.len() as u64));
    let engine = Engine::new(&Config::builtin_default());
    g.bench_function("handshake_and_data", |b| {
        b.iter(|| run(&engine, &synthetic))
    });
    // Two threads judging at once, each its own connections (two queues' threads):
    // what they share is the engine, its tables and its counters.
    let halves = [
        synthetic_connections_to(4000, 3),
        synthetic_connections_to(4000, 4),
    ];
    g.throughput(Throughput::Elements(
        halves.iter().map(|h| h.len() as u64).sum(),
    ));
    let engine = Engine::new(&Config::builtin_default());
    g.bench_function("two_threads", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for h in &halves {
                    let engine = &engine;
                    s.spawn(move || run(engine, h));
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
