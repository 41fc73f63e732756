//! `nfqwall stats`: the running daemon's counters, served over a Unix socket.
//!
//! The daemon listens on a Unix stream socket (default `/run/nfqwall/stats.sock`,
//! mode 0600, so only root reads it). Each connection gets one JSON [`Snapshot`] and
//! is closed; nothing is read from the client. The snapshot includes the kernel's
//! per-queue counters from `/proc/net/netfilter/nfnetlink_queue`, read by the daemon
//! in its own network namespace, so `nfqwall stats` can run anywhere the socket is.

mod server;

pub use server::StatsServer;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Default path of the stats socket.
pub const DEFAULT_SOCKET: &str = "/run/nfqwall/stats.sock";

/// Where the kernel lists NFQUEUE instances.
pub const PROC_QUEUES: &str = "/proc/net/netfilter/nfnetlink_queue";

/// One kernel queue's counters, as `/proc/net/netfilter/nfnetlink_queue` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelQueue {
    /// Queue number.
    pub queue: u16,
    /// Netlink port id of the listener.
    pub peer_portid: u32,
    /// Packets waiting for a verdict now.
    pub queue_total: u32,
    /// Packets the kernel dropped (or, with fail-open, accepted) because the queue was full.
    pub queue_dropped: u64,
    /// Packets the kernel could not deliver to nfqwall's socket (receive buffer full).
    pub user_dropped: u64,
    /// Last packet id handed out (packets queued since bind).
    pub id_sequence: u64,
}

/// Parses the text of `/proc/net/netfilter/nfnetlink_queue`; lines that do not parse
/// are skipped.
pub fn parse_kernel_queues(text: &str) -> Vec<KernelQueue> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            Some(KernelQueue {
                queue: f[0].parse().ok()?,
                peer_portid: f[1].parse::<i64>().ok()? as u32,
                queue_total: f[2].parse().ok()?,
                queue_dropped: f[5].parse().ok()?,
                user_dropped: f[6].parse().ok()?,
                id_sequence: f[7].parse().ok()?,
            })
        })
        .collect()
}

/// Reads the kernel's queue counters in the caller's network namespace.
pub fn read_kernel_queues() -> Vec<KernelQueue> {
    std::fs::read_to_string(PROC_QUEUES)
        .map(|t| parse_kernel_queues(&t))
        .unwrap_or_default()
}

/// Resident set size of this process in bytes (from `/proc/self/statm`).
pub fn rss_bytes() -> u64 {
    let pages: u64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

/// Per-queue counters kept by the daemon's queue threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Queue number.
    pub queue: u16,
    /// Packets received from this queue.
    pub packets: u64,
    /// Packets not judged here because the thread fell behind (left to the host's rules).
    pub shed: u64,
    /// Whether the thread is shedding now.
    pub shedding: bool,
    /// recv or verdict errors on the socket (`ENOBUFS` included).
    pub socket_errors: u64,
    /// Of those, recv's `ENOBUFS`: the receive buffer overran and the kernel could
    /// not deliver queued packets (their ids count in `socket_lost`).
    #[serde(default)]
    pub socket_enobufs: u64,
    /// Receive system calls that returned datagrams (each takes up to 32).
    #[serde(default)]
    pub recv_calls: u64,
    /// SACK repairs not sent because the packet was not copied whole (cut at the
    /// copy range, or a GSO packet).
    #[serde(default)]
    pub repair_skipped: u64,
    /// Packets the kernel numbered for this queue but never delivered (gaps in the
    /// packet ids): let past unjudged by the kernel's fail-open when the socket's
    /// receive buffer was full (dropped instead when `fail_open = false`).
    #[serde(default)]
    pub socket_lost: u64,
    /// Packets whose conntrack state the kernel attached.
    #[serde(default)]
    pub ct_kernel: u64,
    /// Packets whose conntrack state the queuing rule wrote into the mark.
    #[serde(default)]
    pub ct_ruleset: u64,
    /// Packets with no conntrack state from either source.
    #[serde(default)]
    pub ct_none: u64,
    /// Packets judged here and dropped.
    #[serde(default)]
    pub dropped: u64,
    /// Packets judged here and let past the host's INVALID drop (vouched for).
    #[serde(default)]
    pub vouched: u64,
    /// Packets judged here and handed on to the host's rules.
    #[serde(default)]
    pub passed_on: u64,
}

/// Per-service counters of the packets a `[[service]]` judged (queue threads count
/// them; a service removed by a reload keeps its totals until restart).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// The service's name.
    pub service: String,
    /// Packets it judged.
    pub packets: u64,
    /// Of those, dropped.
    pub dropped: u64,
    /// Let past the host's INVALID drop.
    pub vouched: u64,
    /// Handed on to the host's rules.
    pub passed_on: u64,
    /// Log-only accepts that enforce would have dropped.
    pub would_drop: u64,
}

/// Packets that nfqwall's rules queued and that reached `filter` without a verdict
/// from nfqwall, from the counter rule in `NFQWALL-IN` (all queues together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unjudged {
    /// Every queued packet nobody judged: the kernel's fail-open (queue or socket
    /// full), `--queue-bypass` with no listener, and nfqwall's own shedding and
    /// panics, since the rules were installed.
    pub total: u64,
    /// Of those, the ones the kernel let past without asking nfqwall (`total` minus
    /// nfqwall's own shed and panicked packets).
    pub kernel: u64,
    /// Whether the counter could be read (false with `--no-rules`, or if iptables
    /// failed: the numbers are then 0 and unknown).
    pub known: bool,
}

/// Per-flow liberal handbacks (`handback = true` services; `crate::daemon::handback`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandbackStats {
    /// Flows found due for a handback.
    pub requested: u64,
    /// Flows handed back (liberal flag set).
    pub done: u64,
    /// Handbacks that failed.
    pub failed: u64,
    /// Requests lost to a full channel.
    pub dropped: u64,
}

/// Event-path counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventStats {
    /// Lines written.
    pub written: u64,
    /// Events over `log_rate_per_reason`, counted and not written.
    pub suppressed: u64,
    /// Events lost because the channel to the writer was full.
    pub channel_full: u64,
    /// Lines that failed to write.
    pub write_errors: u64,
}

/// Everything `nfqwall stats` shows. Field names are the JSON contract.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Daemon process id.
    pub pid: u32,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Config file in use (`null`: the built-in default).
    pub config: Option<String>,
    /// Default mode.
    pub mode: String,
    /// Where conntrack states come from: `kernel`, `ruleset` (the queuing rule
    /// writes them into the mark) or `none`.
    pub ct_source: String,
    /// Packets judged or left unjudged (shed, panicked), over all queues.
    pub packets: u64,
    /// Accept verdicts.
    pub accepted: u64,
    /// Drop verdicts.
    pub dropped: u64,
    /// Log-only accepts that enforce would have dropped.
    pub would_drop: u64,
    /// INVALID packets let past the host's INVALID drop on evidence (enforce).
    #[serde(default)]
    pub vouched: u64,
    /// Log-only passes that enforce would have let past the host's INVALID drop.
    #[serde(default)]
    pub would_accept: u64,
    /// Packets handed on to the host's rules.
    #[serde(default)]
    pub passed_on: u64,
    /// Queued packets that reached the host's rules without nfqwall's verdict.
    #[serde(default)]
    pub unjudged: Unjudged,
    /// Verdicts by reason name (every reason listed, zeros included).
    pub by_reason: BTreeMap<String, u64>,
    /// Packets by retransmission pattern (every pattern listed).
    pub by_pattern: BTreeMap<String, u64>,
    /// Packets not judged because of load shedding (= `by_reason.shed`).
    pub shed: u64,
    /// Packets accepted because judging panicked (= `by_reason.internal_error`).
    pub internal_errors: u64,
    /// Event-path counters.
    pub events: EventStats,
    /// Flows tracked now.
    pub flows: u64,
    /// Peers with pattern counters now.
    pub peers: u64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Packets whose displaced SACK blocks were rewritten (`sack_repair`).
    #[serde(default)]
    pub sack_repaired: u64,
    /// SACK blocks rewritten into the server's space.
    #[serde(default)]
    pub sack_blocks_rewritten: u64,
    /// SACK blocks of repairing services passed on unchanged (offset not proven,
    /// blocks not verified against data the feed showed sent, or not displaced).
    #[serde(default)]
    pub sack_blocks_unchanged: u64,
    /// Token buckets held now by `rate` rules.
    #[serde(default)]
    pub rate_buckets: u64,
    /// Packets from sources the full rate table could not track (treated as under the rate).
    #[serde(default)]
    pub rate_untracked: u64,
    /// Per-service counters, in config order (then services a reload removed).
    #[serde(default)]
    pub by_service: Vec<ServiceStats>,
    /// Successful reloads.
    pub reloads: u64,
    /// Reloads refused (bad config; the old one stayed).
    pub reload_failures: u64,
    /// Flows handed back to conntrack with the per-connection liberal flag.
    #[serde(default)]
    pub handback: HandbackStats,
    /// Per-queue counters of the daemon's threads.
    pub queues: Vec<QueueStats>,
    /// The kernel's counters for the daemon's queues.
    pub kernel: Vec<KernelQueue>,
    /// Packets of the shadow feed received (ESTABLISHED packets of `track = "shadow"`
    /// services, both directions, learned from and never judged).
    #[serde(default)]
    pub feed_packets: u64,
    /// Feed packets the kernel numbered and never delivered (nfqwall fell behind and
    /// the socket was full): after a loss the engine trusts the flows less.
    #[serde(default)]
    pub feed_lost: u64,
    /// The feed in detail; `null` when no service is shadowed (or it could not bind).
    #[serde(default)]
    pub feed: Option<FeedStats>,
}

/// The shadow feed's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedStats {
    /// The NFLOG group.
    pub group: u16,
    /// Kernel batches (datagrams) received.
    pub batches: u64,
    /// Packets received.
    pub packets: u64,
    /// Packets lost (gaps in the kernel's numbering).
    pub lost: u64,
    /// Times the socket overran (`ENOBUFS`).
    pub overruns: u64,
    /// Receive errors other than timeouts and overruns; malformed messages.
    pub errors: u64,
    /// Packets the engine learned from (TCP that parsed).
    pub learned: u64,
    /// Flows the feed picked up that the engine did not know (older than the daemon,
    /// or expired meanwhile).
    pub pickups: u64,
    /// SACK-bearing packets of repairing services copied for the offset learner
    /// (they bound the offset from below in the feed's order with the server's data).
    #[serde(default)]
    pub sack_copies: u64,
    /// Losses reported to the engine (each made every older flow partial).
    pub loss_events: u64,
    /// The socket's receive buffer, bytes.
    pub rcvbuf: u64,
}

/// Why `nfqwall stats` could not get a snapshot.
#[derive(Debug)]
pub enum StatsError {
    /// Connecting or reading failed (daemon not running, wrong path, not root).
    Io(String, std::io::Error),
    /// The daemon answered something that is not a snapshot.
    Parse(serde_json::Error),
}

impl std::fmt::Display for StatsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatsError::Io(path, e) => write!(
                f,
                "cannot read stats from {path}: {e} (is `nfqwall run` running, and are you root?)"
            ),
            StatsError::Parse(e) => write!(f, "stats socket sent an unreadable snapshot: {e}"),
        }
    }
}

impl std::error::Error for StatsError {}

/// Connects to the stats socket and reads one snapshot.
pub fn fetch(path: &Path) -> Result<(Snapshot, String), StatsError> {
    let io = |e| StatsError::Io(path.display().to_string(), e);
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(io)?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(io)?;
    let snap = serde_json::from_str(&text).map_err(StatsError::Parse)?;
    Ok((snap, text))
}

/// The snapshot as a human-readable table.
pub fn render_table(s: &Snapshot) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "nfqwall pid {}  up {}s  mode {}  conntrack state: {}  config: {}",
        s.pid,
        s.uptime_s,
        s.mode,
        s.ct_source,
        s.config.as_deref().unwrap_or("(built-in default)")
    );
    let _ = writeln!(o);
    let rows: [(&str, u64); 22] = [
        ("packets", s.packets),
        ("accepted", s.accepted),
        ("dropped", s.dropped),
        ("would_drop", s.would_drop),
        ("vouched", s.vouched),
        ("would_accept", s.would_accept),
        ("passed_on", s.passed_on),
        ("kernel_unjudged", s.unjudged.kernel),
        ("shed", s.shed),
        ("internal_errors", s.internal_errors),
        ("events_written", s.events.written),
        ("events_suppressed", s.events.suppressed),
        ("events_channel_full", s.events.channel_full),
        ("feed_packets", s.feed_packets),
        ("feed_lost", s.feed_lost),
        ("flows", s.flows),
        ("peers", s.peers),
        ("rate_buckets", s.rate_buckets),
        ("sack_repaired", s.sack_repaired),
        ("sack_blocks_rewritten", s.sack_blocks_rewritten),
        ("sack_blocks_unchanged", s.sack_blocks_unchanged),
        ("rss_bytes", s.rss_bytes),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "  {k:<24}{v:>14}");
    }
    if s.handback != HandbackStats::default() {
        let h = &s.handback;
        let _ = writeln!(
            o,
            "  {:<24}{:>14}",
            "handbacks (failed)",
            format!("{} ({})", h.done, h.failed)
        );
        let _ = writeln!(
            o,
            "  {:<24}{:>14}",
            "handbacks due (dropped)",
            format!("{} ({})", h.requested, h.dropped)
        );
    }
    let _ = writeln!(
        o,
        "  {:<24}{:>14}",
        "reloads (failed)",
        format!("{} ({})", s.reloads, s.reload_failures)
    );
    let nonzero: Vec<_> = s.by_reason.iter().filter(|(_, v)| **v > 0).collect();
    if !nonzero.is_empty() {
        let _ = writeln!(o, "\nverdicts by reason");
        for (k, v) in nonzero {
            let _ = writeln!(o, "  {k:<24}{v:>14}");
        }
    }
    let nonzero: Vec<_> = s.by_pattern.iter().filter(|(_, v)| **v > 0).collect();
    if !nonzero.is_empty() {
        let _ = writeln!(o, "\npackets by pattern");
        for (k, v) in nonzero {
            let _ = writeln!(o, "  {k:<24}{v:>14}");
        }
    }
    if s.by_service.iter().any(|v| v.packets > 0) {
        let _ = writeln!(
            o,
            "\n  {:<24}{:>12}{:>10}{:>10}{:>10}{:>11}",
            "service", "packets", "dropped", "vouched", "passed_on", "would_drop"
        );
        for v in s.by_service.iter().filter(|v| v.packets > 0) {
            let _ = writeln!(
                o,
                "  {:<24}{:>12}{:>10}{:>10}{:>10}{:>11}",
                v.service, v.packets, v.dropped, v.vouched, v.passed_on, v.would_drop
            );
        }
    }
    let _ = writeln!(
        o,
        "\n  {:<6}{:>12}{:>10}{:>10}{:>14}{:>14}{:>14}{:>13}",
        "queue",
        "packets",
        "shed",
        "shedding",
        "queue_total",
        "queue_dropped",
        "user_dropped",
        "socket_lost"
    );
    for q in &s.queues {
        let k = s.kernel.iter().find(|k| k.queue == q.queue);
        let kf = |f: fn(&KernelQueue) -> u64| k.map(|k| f(k).to_string()).unwrap_or("-".into());
        let _ = writeln!(
            o,
            "  {:<6}{:>12}{:>10}{:>10}{:>14}{:>14}{:>14}{:>13}",
            q.queue,
            q.packets,
            q.shed,
            if q.shedding { "yes" } else { "no" },
            kf(|k| u64::from(k.queue_total)),
            kf(|k| k.queue_dropped),
            kf(|k| k.user_dropped),
            q.socket_lost
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_nfnetlink_queue() {
        let text = "    0  -4126     12 2 65535     3     7       44  1\n\
                    \x20   3  1234      0 2 65535     0     0        0  1\n\
                    garbage\n";
        let q = parse_kernel_queues(text);
        assert_eq!(q.len(), 2);
        assert_eq!(
            q[0],
            KernelQueue {
                queue: 0,
                peer_portid: (-4126i64) as u32,
                queue_total: 12,
                queue_dropped: 3,
                user_dropped: 7,
                id_sequence: 44
            }
        );
        assert_eq!(q[1].queue, 3);
    }

    #[test]
    fn rss_is_nonzero() {
        assert!(rss_bytes() > 0);
    }
}
