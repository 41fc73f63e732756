//! Bytes per tracked flow: `cargo bench --bench flow_memory`.
//!
//! Counts heap bytes with a counting global allocator while the engine opens N TCP
//! flows (one SYN each, distinct source ports and addresses), and prints the heap
//! growth divided by N, plus the in-table entry size (key + value).

use etherparse::PacketBuilder;
use nfqwall::config::Config;
use nfqwall::engine::flow::{Flow, FlowKey};
use nfqwall::engine::{Engine, PacketMeta};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    println!(
        "entry: key {} + flow {} = {} bytes (StreamAnalysis {}, TcpTracker {})",
        std::mem::size_of::<FlowKey>(),
        std::mem::size_of::<Flow>(),
        std::mem::size_of::<(FlowKey, Flow)>(),
        std::mem::size_of::<nfqwall::engine::analysis::StreamAnalysis>(),
        std::mem::size_of::<nfqwall::engine::tracker::TcpTracker>(),
    );
    println!(
        "{:>10}  {:>14}  {:>14}",
        "flows", "heap bytes", "bytes/flow"
    );
    let mut packet = Vec::with_capacity(64);
    for n in [10_000u32, 100_000, 500_000, 1_000_000] {
        let engine = Engine::new(&Config::builtin_default());
        let before = LIVE.load(Ordering::Relaxed);
        for i in 0..n {
            let src = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            packet.clear();
            PacketBuilder::ipv4(src, [192, 0, 2, 1], 64)
                .tcp(40000 + (i % 1000) as u16, 80, i, 64240)
                .syn()
                .write(&mut packet, &[])
                .unwrap();
            engine.decide(u64::from(i) * 1000, &PacketMeta::raw_ip(), &packet);
        }
        assert_eq!(engine.flows().len(), n as usize);
        let grown = LIVE.load(Ordering::Relaxed) - before;
        println!(
            "{n:>10}  {grown:>14}  {:>14.1}",
            grown as f64 / f64::from(n)
        );
    }
}
