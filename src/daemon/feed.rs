//! The shadow feed's thread: NFLOG batches in, [`Engine::observe`] on each packet.
//!
//! One NFLOG group for both directions, read by one thread: the kernel logs the
//! incoming (`mangle INPUT`) and outgoing (`mangle OUTPUT`) packets into the same
//! instance under one lock, so they arrive in the order netfilter saw them and the
//! engine learns each flow's two edges in order (a thread per direction would let a
//! client's ACK overtake the server data it acknowledges).
//!
//! The feed never holds a packet: NFLOG has no verdict. If this thread falls behind,
//! the socket fills and the kernel drops whole batches; the gap in the messages'
//! numbers counts them (`feed_lost`) and [`Engine::feed_lost`] makes every older flow
//! partial, so a loss costs trust, never safety. Per batch: one `recv` into a buffer
//! owned by the thread; per packet: no allocation.

use super::Shared;
use crate::engine::{CtHint, CtState, Engine, LinkType, PacketMeta};
use crate::nflog::{Item, Messages, NflogSocket, SeqGaps};
use std::sync::atomic::{AtomicU64, Ordering};

/// The feed thread's counters, shared with the stats socket.
#[derive(Debug, Default)]
pub struct FeedShared {
    /// The NFLOG group.
    pub group: u16,
    /// Datagrams (kernel batches) received.
    pub batches: AtomicU64,
    /// Packet messages received.
    pub packets: AtomicU64,
    /// Packet messages lost (gaps in their numbers).
    pub lost: AtomicU64,
    /// `ENOBUFS` from the socket: the kernel could not deliver a batch.
    pub overruns: AtomicU64,
    /// Other receive errors and malformed messages.
    pub errors: AtomicU64,
    /// The socket's receive buffer in bytes.
    pub rcvbuf: AtomicU64,
}

/// Size of the receive buffer: a kernel batch is at most 128 KiB, except a single
/// message larger than that (a copy range near 64 KiB).
const BUF: usize = 256 * 1024;

/// The largest IP packet's length: the feed copies only the first bytes, so lengths
/// come from the IP header ([`crate::wire::parse`] takes the header's length when the
/// wire length exceeds the bytes present).
const WIRE_LEN: u32 = 65_535 + 40;

/// Runs until `shared.stop` (the socket's receive timeout wakes it to look).
pub fn run(sock: NflogSocket, shared: &Shared, fs: &FeedShared) {
    let engine: &Engine = &shared.engine;
    let mut buf = vec![0u8; BUF];
    let mut gaps = SeqGaps::default();
    let meta = PacketMeta {
        link: LinkType::RawIp,
        ct: CtHint::Given(CtState::Established),
        in_iface: None,
        out_iface: None,
        mark: 0,
        wire_len: WIRE_LEN,
    };
    fs.rcvbuf.store(sock.rcvbuf() as u64, Ordering::Relaxed);
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                match e.raw_os_error() {
                    Some(libc::EAGAIN | libc::EINTR) => {}
                    Some(libc::ENOBUFS) => {
                        // Batches were dropped: the gap in the numbers will say how
                        // many packets; trust less at once.
                        fs.overruns.fetch_add(1, Ordering::Relaxed);
                        engine.feed_lost();
                    }
                    _ => {
                        fs.errors.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                continue;
            }
        };
        fs.batches.fetch_add(1, Ordering::Relaxed);
        let now = shared.mono_ns();
        handle_batch(engine, &buf[..n], now, &meta, &mut gaps, fs);
    }
}

/// Feeds every packet of one datagram to the engine, counting gaps in the numbers.
pub fn handle_batch(
    engine: &Engine,
    batch: &[u8],
    now: u64,
    meta: &PacketMeta<'_>,
    gaps: &mut SeqGaps,
    fs: &FeedShared,
) {
    for item in Messages::new(batch) {
        match item {
            Ok(Item::Packet(p)) => {
                fs.packets.fetch_add(1, Ordering::Relaxed);
                if let Some(seq) = p.seq {
                    let lost = gaps.next(seq);
                    if lost > 0 {
                        fs.lost.fetch_add(u64::from(lost), Ordering::Relaxed);
                        engine.feed_lost();
                    }
                }
                if p.prefix == Some(crate::rules::SACK_FEED_PREFIX.as_bytes()) {
                    engine.observe_sack(now, meta, p.payload);
                } else {
                    engine.observe(now, meta, p.payload);
                }
            }
            Ok(_) => {}
            Err(_) => {
                fs.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
