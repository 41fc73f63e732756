//! The OpenMetrics (Prometheus) endpoint: `daemon.metrics = "127.0.0.1:9477"`.
//!
//! Off unless configured. One thread ([`MetricsServer`]) answers `GET /metrics` over
//! HTTP/1.1 on a std `TcpListener`, one connection at a time, with bounded request
//! size and time; the queue threads never see it. Each scrape renders one
//! [`Snapshot`], built by the same closure that feeds the stats socket, so
//! `nfqwall stats --json` and the metrics agree. The text is OpenMetrics 1.0, encoded
//! by the `prometheus-client` crate; every name is prefixed `nfqwall_`.

mod server;

pub use server::MetricsServer;

use crate::stats::Snapshot;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`render`]'s text (OpenMetrics).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of [`to_prometheus_text`]'s text.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text (as [`render`] writes it) in the Prometheus text format 0.0.4,
/// for clients that do not ask for OpenMetrics (curl, `promtool check metrics`):
/// a counter family's `HELP` and `TYPE` name its `_total` samples, `UNIT` and `EOF`
/// lines go. Samples are unchanged.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

type Labels = Vec<(&'static str, String)>;

/// A registry being filled from a snapshot.
struct Out(Registry);

impl Out {
    fn counter(&mut self, name: &str, help: &str, v: u64) {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        self.0.register(name, help, c);
    }

    fn gauge(&mut self, name: &str, help: &str, v: u64) {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        self.0.register(name, help, g);
    }

    fn gauge_unit(&mut self, name: &str, help: &str, unit: Unit, v: u64) {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        self.0.register_with_unit(name, help, unit, g);
    }

    fn counters(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, u64)>) {
        let f = Family::<Labels, Counter<u64>>::default();
        for (l, v) in rows {
            f.get_or_create(&l).inc_by(v);
        }
        self.0.register(name, help, f);
    }

    fn gauges(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, u64)>) {
        let f = Family::<Labels, Gauge<i64>>::default();
        for (l, v) in rows {
            f.get_or_create(&l)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        self.0.register(name, help, f);
    }
}

fn l1(k: &'static str, v: impl ToString) -> Labels {
    vec![(k, v.to_string())]
}

fn l2(k1: &'static str, v1: impl ToString, k2: &'static str, v2: impl ToString) -> Labels {
    vec![(k1, v1.to_string()), (k2, v2.to_string())]
}

/// The snapshot as OpenMetrics text (ends with `# EOF`).
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(Registry::with_prefix("nfqwall"));
    o.gauges(
        "build_info",
        "Version, default mode and conntrack state source (value 1)",
        [(
            vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("mode", s.mode.clone()),
                ("ct_source", s.ct_source.clone()),
            ],
            1,
        )],
    );
    o.gauge_unit("uptime", "Time since start", Unit::Seconds, s.uptime_s);
    o.gauge_unit(
        "resident_memory",
        "Resident memory",
        Unit::Bytes,
        s.rss_bytes,
    );
    o.counter(
        "packets",
        "Packets judged or accepted uninspected, over all queues",
        s.packets,
    );
    o.counters(
        "verdicts",
        "Verdicts given to the kernel",
        [
            (l1("verdict", "accept"), s.accepted),
            (l1("verdict", "drop"), s.dropped),
        ],
    );
    o.counters(
        "dispositions",
        "Judged packets by disposition: drop, accept (let past the host's INVALID drop), pass (to the host's rules)",
        [
            (l1("disposition", "drop"), s.dropped),
            (l1("disposition", "accept"), s.vouched),
            (l1("disposition", "pass"), s.passed_on),
        ],
    );
    o.counter(
        "would_drop",
        "Log-only accepts that enforce would have dropped",
        s.would_drop,
    );
    o.counter(
        "would_accept",
        "Log-only passes that enforce would have let past the host's INVALID drop",
        s.would_accept,
    );
    o.counters(
        "reason_packets",
        "Verdicts by reason (every reason listed)",
        s.by_reason.iter().map(|(k, v)| (l1("reason", k), *v)),
    );
    o.counters(
        "pattern_packets",
        "Packets by retransmission pattern (every pattern listed)",
        s.by_pattern.iter().map(|(k, v)| (l1("pattern", k), *v)),
    );
    o.counters(
        "service_packets",
        "Packets judged by each service",
        s.by_service
            .iter()
            .map(|v| (l1("service", &v.service), v.packets)),
    );
    o.counters(
        "service_dispositions",
        "Packets judged by each service, by disposition",
        s.by_service.iter().flat_map(|v| {
            [
                (l2("service", &v.service, "disposition", "drop"), v.dropped),
                (
                    l2("service", &v.service, "disposition", "accept"),
                    v.vouched,
                ),
                (
                    l2("service", &v.service, "disposition", "pass"),
                    v.passed_on,
                ),
            ]
        }),
    );
    o.counters(
        "service_would_drop",
        "Log-only accepts of each service that enforce would have dropped",
        s.by_service
            .iter()
            .map(|v| (l1("service", &v.service), v.would_drop)),
    );
    o.counters(
        "queue_packets",
        "Packets received from each NFQUEUE",
        s.queues.iter().map(|q| (l1("queue", q.queue), q.packets)),
    );
    o.counters(
        "queue_dispositions",
        "Packets judged on each queue, by disposition",
        s.queues.iter().flat_map(|q| {
            [
                (l2("queue", q.queue, "disposition", "drop"), q.dropped),
                (l2("queue", q.queue, "disposition", "accept"), q.vouched),
                (l2("queue", q.queue, "disposition", "pass"), q.passed_on),
            ]
        }),
    );
    o.counters(
        "queue_shed",
        "Packets accepted uninspected on each queue by load shedding",
        s.queues.iter().map(|q| (l1("queue", q.queue), q.shed)),
    );
    o.gauges(
        "queue_shedding",
        "1 while the queue's thread is shedding load",
        s.queues
            .iter()
            .map(|q| (l1("queue", q.queue), u64::from(q.shedding))),
    );
    o.counters(
        "queue_socket_errors",
        "recv or verdict errors on each queue's socket",
        s.queues
            .iter()
            .map(|q| (l1("queue", q.queue), q.socket_errors)),
    );
    o.counters(
        "queue_socket_lost",
        "Packets numbered for the queue but never delivered (socket buffer full): let past unjudged by the kernel's fail-open",
        s.queues.iter().map(|q| (l1("queue", q.queue), q.socket_lost)),
    );
    o.counters(
        "queue_socket_enobufs",
        "Times each queue's socket reported ENOBUFS (the kernel dropped messages to it)",
        s.queues
            .iter()
            .map(|q| (l1("queue", q.queue), q.socket_enobufs)),
    );
    o.counters(
        "queue_recv_calls",
        "Receive system calls of each queue thread that returned packets (each takes up to 32)",
        s.queues
            .iter()
            .map(|q| (l1("queue", q.queue), q.recv_calls)),
    );
    o.counters(
        "queue_repair_skipped",
        "SACK repairs not sent back because the queued copy was partial or a GSO packet",
        s.queues
            .iter()
            .map(|q| (l1("queue", q.queue), q.repair_skipped)),
    );
    o.counters(
        "queue_ct_source",
        "Packets on each queue by where their conntrack state came from",
        s.queues.iter().flat_map(|q| {
            [
                (l2("queue", q.queue, "source", "kernel"), q.ct_kernel),
                (l2("queue", q.queue, "source", "ruleset"), q.ct_ruleset),
                (l2("queue", q.queue, "source", "none"), q.ct_none),
            ]
        }),
    );
    o.gauges(
        "kernel_queue_backlog",
        "Packets waiting in the kernel queue for a verdict (queue_total)",
        s.kernel
            .iter()
            .map(|k| (l1("queue", k.queue), u64::from(k.queue_total))),
    );
    o.counters(
        "kernel_queue_dropped",
        "Packets the kernel dropped, or with fail-open accepted, because the queue was full",
        s.kernel
            .iter()
            .map(|k| (l1("queue", k.queue), k.queue_dropped)),
    );
    o.counters(
        "kernel_user_dropped",
        "Packets the kernel could not deliver to the socket (receive buffer full)",
        s.kernel
            .iter()
            .map(|k| (l1("queue", k.queue), k.user_dropped)),
    );
    o.counters(
        "kernel_queued",
        "Packets the kernel queued since the queue was bound (last packet id)",
        s.kernel
            .iter()
            .map(|k| (l1("queue", k.queue), k.id_sequence)),
    );
    o.counter(
        "shed",
        "Packets accepted uninspected by load shedding",
        s.shed,
    );
    o.counter(
        "internal_errors",
        "Packets accepted because judging panicked",
        s.internal_errors,
    );
    o.counter(
        "unjudged",
        "Queued packets that reached the host's rules without nfqwall's verdict (all causes)",
        s.unjudged.total,
    );
    o.counter(
        "unjudged_kernel",
        "Of those, the ones the kernel let past without asking nfqwall (fail-open, no listener)",
        s.unjudged.kernel,
    );
    o.gauge(
        "unjudged_known",
        "1 if the unjudged counter rule could be read (0 with --no-rules)",
        u64::from(s.unjudged.known),
    );
    o.gauge("flows", "Flows tracked now", s.flows);
    o.gauge("peers", "Peers with pattern counters now", s.peers);
    o.gauge(
        "rate_buckets",
        "Token buckets held now by rate rules",
        s.rate_buckets,
    );
    o.counter(
        "rate_untracked",
        "Packets from sources the full rate table could not track (treated as under the rate)",
        s.rate_untracked,
    );
    o.counter("events_written", "Event lines written", s.events.written);
    o.counter(
        "events_suppressed",
        "Events over log_rate_per_reason, counted and not written",
        s.events.suppressed,
    );
    o.counter(
        "events_channel_full",
        "Events lost because the writer fell behind",
        s.events.channel_full,
    );
    o.counter(
        "events_write_errors",
        "Event lines that failed to write",
        s.events.write_errors,
    );
    o.counter(
        "sack_repaired",
        "Packets whose displaced SACK blocks were rewritten",
        s.sack_repaired,
    );
    o.counter(
        "sack_blocks_rewritten",
        "SACK blocks rewritten into the server's sequence space",
        s.sack_blocks_rewritten,
    );
    o.counter(
        "sack_blocks_unchanged",
        "SACK blocks of repairing services passed on unchanged",
        s.sack_blocks_unchanged,
    );
    o.counter("reloads", "Successful reloads", s.reloads);
    o.counter(
        "reload_failures",
        "Reloads refused (the old config stayed)",
        s.reload_failures,
    );
    let mut text = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &o.0);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_snapshot_values() {
        let mut s = Snapshot {
            packets: 42,
            dropped: 2,
            accepted: 40,
            mode: "log-only".into(),
            ct_source: "kernel".into(),
            ..Snapshot::default()
        };
        s.by_reason.insert("keep_alive".into(), 3);
        s.by_service.push(crate::stats::ServiceStats {
            service: "web \"x\"".into(),
            packets: 5,
            ..Default::default()
        });
        s.queues.push(crate::stats::QueueStats {
            queue: 3,
            packets: 42,
            ..Default::default()
        });
        let t = render(&s);
        assert!(t.ends_with("# EOF\n"), "{t}");
        assert!(t.contains("\nnfqwall_packets_total 42\n"), "{t}");
        assert!(
            t.contains("nfqwall_verdicts_total{verdict=\"drop\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("nfqwall_reason_packets_total{reason=\"keep_alive\"} 3\n"));
        assert!(t.contains("nfqwall_service_packets_total{service=\"web \\\"x\\\"\"} 5\n"));
        assert!(t.contains("nfqwall_queue_packets_total{queue=\"3\"} 42\n"));
        assert!(t.contains("# UNIT nfqwall_uptime_seconds seconds\n"), "{t}");
        let p = to_prometheus_text(&t);
        assert!(p.contains(
            "# HELP nfqwall_packets_total Packets judged or accepted uninspected, over all queues.\n\
             # TYPE nfqwall_packets_total counter\nnfqwall_packets_total 42\n"
        ), "{p}");
        assert!(
            p.contains("# TYPE nfqwall_flows gauge\nnfqwall_flows 0\n"),
            "{p}"
        );
        assert!(!p.contains("# UNIT") && !p.contains("# EOF"));
    }
}
