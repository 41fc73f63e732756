//! One NFQUEUE queue: bind it, then recv -> decide -> verdict inline on one thread.

use super::ct::{self, CtSource};
use super::iface::IfaceNames;
use super::verdict::{judge, map, Judged, KernelVerdict};
use super::{DaemonError, Shared};
use crate::engine::{Disposition, LinkType, PacketMeta};
use crate::events::{wall_ns, Event, EventSink, PacketEvent};
use nfq::Queue;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Counters and flags of one queue thread, shared with the main thread.
#[derive(Debug, Default)]
pub struct QueueShared {
    /// Queue number.
    pub number: u16,
    /// Packets received.
    pub packets: AtomicU64,
    /// Packets not judged because of shedding (left to the host's rules).
    pub shed: AtomicU64,
    /// Set by the main thread from the kernel backlog.
    pub shedding: AtomicBool,
    /// recv/verdict errors.
    pub socket_errors: AtomicU64,
    /// Packets the kernel numbered for this queue but never delivered (gaps in the
    /// packet ids): with fail-open on, the kernel accepted them unjudged because the
    /// socket's receive buffer was full; with it off, it dropped them.
    pub socket_lost: AtomicU64,
    /// The packet id last received (0 before the first).
    pub last_id: AtomicU64,
    /// Packets whose conntrack state the kernel attached.
    pub ct_kernel: AtomicU64,
    /// Packets whose conntrack state the queuing rule wrote into the mark.
    pub ct_ruleset: AtomicU64,
    /// Packets with no conntrack state from either (judged as INVALID, no state).
    pub ct_none: AtomicU64,
    /// Monotonic ns when the packet in hand arrived; 0 while waiting in recv. The
    /// watchdog is withheld when a packet is in hand for too long (a stuck thread).
    pub busy_since: AtomicU64,
    /// Packets judged and dropped.
    pub dropped: AtomicU64,
    /// Packets judged and let past the host's INVALID drop.
    pub vouched: AtomicU64,
    /// Packets judged and handed on to the host's rules.
    pub passed_on: AtomicU64,
}

/// Bytes of socket receive buffer per queued packet: the kernel charges a queued
/// packet's message at its true size (a full-sized Ethernet frame's copy plus
/// attributes and skb overhead is about 2.3 to 4.5 KiB), so this many times
/// `queue_maxlen` lets the kernel queue, not the socket, fill first.
const RCVBUF_PER_PACKET: usize = 4608;

/// Opens a netlink socket, binds queue `n` and configures it: kernel queue length,
/// fail-open, a receive buffer sized to the queue, and conntrack info if the kernel
/// can attach it. Returns the socket's receive buffer size as set (0 if unknown).
pub fn bind(n: u16, maxlen: u32, fail_open: bool) -> Result<(Queue, CtSource, usize), DaemonError> {
    let err = |what: &'static str| {
        move |source| DaemonError::Queue {
            queue: n,
            what,
            source,
        }
    };
    let before = netfilter_sockets();
    let mut q = Queue::open().map_err(err("open a netfilter netlink socket"))?;
    let after = netfilter_sockets();
    q.bind(n)
        .map_err(err("bind the queue (is another nfqwall bound to it?)"))?;
    q.set_queue_max_len(n, maxlen)
        .map_err(err("set the kernel queue length"))?;
    q.set_fail_open(n, fail_open)
        .map_err(err("set the fail-open flag"))?;
    // The nfq crate does not expose its socket: it is the one netfilter netlink
    // socket that appeared while it opened (queues are bound one at a time, and
    // nothing else in nfqwall opens such sockets).
    let new: Vec<i32> = after
        .into_iter()
        .filter(|fd| !before.contains(fd))
        .collect();
    let rcvbuf = match new[..] {
        [fd] => set_rcvbuf(fd, (maxlen as usize).saturating_mul(RCVBUF_PER_PACKET))
            .map_err(err("size the socket's receive buffer"))?,
        _ => 0,
    };
    // Refused (EOPNOTSUPP) by kernels without CONFIG_NETFILTER_NETLINK_GLUE_CT.
    let source = match q.set_recv_conntrack(n, true) {
        Ok(()) => CtSource::Kernel,
        Err(_) => CtSource::Ruleset,
    };
    Ok((q, source, rcvbuf))
}

/// The process's open `AF_NETLINK`/`NETLINK_NETFILTER` sockets.
fn netfilter_sockets() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&fd| {
            let opt = |name| {
                let mut v: libc::c_int = -1;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: v and len are valid for the call; a non-socket fd fails.
                let r = unsafe {
                    libc::getsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        name,
                        (&mut v as *mut libc::c_int).cast(),
                        &mut len,
                    )
                };
                (r == 0).then_some(v)
            };
            opt(libc::SO_DOMAIN) == Some(libc::AF_NETLINK)
                && opt(libc::SO_PROTOCOL) == Some(libc::NETLINK_NETFILTER)
        })
        .collect()
}

/// Sets the socket's receive buffer to `bytes` (beyond `rmem_max`: the daemon has
/// CAP_NET_ADMIN) and returns what the kernel reports.
fn set_rcvbuf(fd: i32, bytes: usize) -> std::io::Result<usize> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: fd is an open socket; v lives for the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as above.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    Ok(got.max(0) as usize)
}

/// The queue thread's loop. Returns after `shared.stop` is set and the thread was
/// woken (by a signal that interrupts `recv`): it then gives a verdict on every
/// packet already waiting, and unbinds.
pub fn run(mut queue: Queue, index: usize, shared: &Shared, sink: &EventSink) {
    let qs = &shared.queues[index];
    let ctx = Ctx { qs, shared, sink };
    let mut ifaces = IfaceNames::new();
    let mut forget_at = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        match queue.recv() {
            Ok(msg) => {
                let now = shared.mono_ns();
                if now >= forget_at {
                    ifaces.forget();
                    forget_at = now + 5_000_000_000;
                }
                handle(&mut queue, msg, now, &ctx, &mut ifaces);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(_) => {
                qs.socket_errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    // Verdict what is in hand: everything the kernel already queued to us.
    queue.set_nonblocking(true);
    while let Ok(msg) = queue.recv() {
        let now = shared.mono_ns();
        handle(&mut queue, msg, now, &ctx, &mut ifaces);
    }
    let _ = queue.unbind(qs.number);
}

/// What a queue thread's verdicts read but never change.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    qs: &'a QueueShared,
    shared: &'a Shared,
    sink: &'a EventSink,
}

/// Judges one message and gives its verdict. No allocation, no lock held across I/O,
/// no blocking send: events go through `try_send`.
#[inline]
fn handle(
    queue: &mut Queue,
    mut msg: nfq::Message,
    now: u64,
    ctx: &Ctx<'_>,
    ifaces: &mut IfaceNames,
) {
    let Ctx { qs, shared, sink } = *ctx;
    qs.busy_since.store(now.max(1), Ordering::Relaxed);
    qs.packets.fetch_add(1, Ordering::Relaxed);
    let id = u64::from(msg.get_packet_id());
    let last = qs.last_id.swap(id, Ordering::Relaxed);
    if last != 0 && id > last + 1 {
        qs.socket_lost.fetch_add(id - last - 1, Ordering::Relaxed);
    }
    let engine = &*shared.engine;
    let marks = shared.marks;
    let shedding = qs.shedding.load(Ordering::Relaxed);
    let indev = msg.get_indev();
    let mark = msg.get_nfmark();
    let judged = {
        let payload = msg.get_payload();
        let (ct, source) = ct::state_for(ct::from_nfq(msg.get_conntrack()), mark, marks);
        match source {
            CtSource::Kernel => &qs.ct_kernel,
            CtSource::Ruleset => &qs.ct_ruleset,
            CtSource::None => &qs.ct_none,
        }
        .fetch_add(1, Ordering::Relaxed);
        let in_iface = ifaces.name(indev);
        judge(engine, shedding, || {
            super::test_hook::check(payload);
            let meta = PacketMeta {
                link: LinkType::RawIp,
                ct,
                in_iface,
                out_iface: None,
                mark,
                wire_len: 0,
            };
            engine.decide(now, &meta, payload)
        })
    };
    let mapped = map(&judged, mark, marks);
    let mut judged = judged;
    if let (Judged::Decided(d), KernelVerdict::Accept) = (&mut judged, mapped.verdict) {
        if d.rewrite.is_some() {
            // Only now borrow the payload mutably: the crate then sends it back.
            engine.apply_repair(d, msg.get_payload_mut());
        }
    }
    match &judged {
        Judged::Decided(d) => {
            match d.disposition {
                Disposition::Drop => &qs.dropped,
                Disposition::Vouch => &qs.vouched,
                Disposition::PassOn => &qs.passed_on,
            }
            .fetch_add(1, Ordering::Relaxed);
            shared.services.count(d);
            if d.handback_due {
                shared.handback.request(d, qs.number, now, shared);
            }
            if d.is_notable() {
                // Gated on this thread's counters before anything is built or the
                // wall clock is read: a suppressed event costs a counter.
                let len = msg.get_payload().len() as u32;
                sink.packet_with(d, now / 1_000_000_000, || PacketEvent {
                    wall_ns: wall_ns(),
                    queue: qs.number,
                    verdict: d.verdict,
                    decision: *d,
                    in_ifindex: indev,
                    len,
                });
            }
        }
        Judged::Shed => {
            qs.shed.fetch_add(1, Ordering::Relaxed);
        }
        Judged::Panicked(message) => {
            sink.send(Event::InternalError {
                wall_ns: wall_ns(),
                queue: qs.number,
                message: message.clone(),
            });
        }
    }
    if let Some(m) = mapped.mark {
        if m != mark {
            msg.set_nfmark(m);
        }
    }
    msg.set_verdict(match mapped.verdict {
        KernelVerdict::Accept => nfq::Verdict::Accept,
        KernelVerdict::Drop => nfq::Verdict::Drop,
    });
    if queue.verdict(msg).is_err() {
        qs.socket_errors.fetch_add(1, Ordering::Relaxed);
    }
    qs.busy_since.store(0, Ordering::Relaxed);
}
