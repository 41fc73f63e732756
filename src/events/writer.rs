//! The one thread that writes events: JSON lines to stdout, stderr or a file.

use super::eve::{notice_eve, packet_eve};
use super::journal::{self, Journal, Meta};
use super::json::{internal_error_json, packet_json};
use super::{format_ts, key_name, wall_ns, Event, EventCounters, RateGate};
use crate::config::{Journald, LogFormat, LogTarget};
use crate::daemon::iface::IfaceNames;
use crate::engine::patterns::Pattern;
use crate::engine::peers::PeerStats;
use crate::engine::Engine;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most peers in one summary round; the rest are counted in a `peer_summary_omitted` field.
const MAX_PEERS_PER_SUMMARY: usize = 100;

/// What the writer needs besides the channel.
pub struct WriterConfig {
    /// Where lines go.
    pub target: LogTarget,
    /// Seconds between per-peer summaries (0: none); changed on reload.
    pub summary_interval: Arc<AtomicU32>,
    /// The rate gate whose suppressed counts it reports.
    pub gate: Arc<RateGate>,
    /// Counters it updates.
    pub counters: Arc<EventCounters>,
    /// The engine, for rule names and peer aggregates.
    pub engine: Arc<Engine>,
    /// The form of the lines.
    pub format: LogFormat,
    /// Whether lines for stdout go to the journal's native socket instead.
    pub journald: Journald,
}

/// The writer thread's handle.
pub struct Writer;

impl Writer {
    /// Opens the target and starts the writer. It runs until every sender is dropped,
    /// then reports what is left and flushes.
    pub fn spawn(cfg: WriterConfig, rx: Receiver<Event>) -> io::Result<JoinHandle<()>> {
        let journal = match (&cfg.target, cfg.journald) {
            (LogTarget::Stdout, Journald::On) => true,
            (LogTarget::Stdout, Journald::Auto) => journal::stdout_is_journal(),
            _ => false,
        };
        let journal = if journal {
            match Journal::connect(std::path::Path::new(journal::SOCKET)) {
                Ok(j) => Some(j),
                Err(e) => {
                    eprintln!(
                        "nfqwall: journal socket {} unavailable ({e}): events go to stdout",
                        journal::SOCKET
                    );
                    None
                }
            }
        } else {
            None
        };
        let out: Box<dyn Write + Send> = match &cfg.target {
            LogTarget::Stdout => Box::new(io::stdout()),
            LogTarget::Stderr => Box::new(io::stderr()),
            LogTarget::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        std::thread::Builder::new()
            .name("nfqwall-events".into())
            .spawn(move || run(cfg, rx, BufWriter::with_capacity(64 * 1024, out), journal))
    }
}

struct State {
    cfg: WriterConfig,
    out: BufWriter<Box<dyn Write + Send>>,
    /// Set: lines go to the journal, not `out`.
    journal: Option<Journal>,
    ifaces: IfaceNames,
    last_peers: HashMap<IpAddr, PeerStats>,
}

impl State {
    /// Writes one line of either form (a `nfqwall`-form object, converted for EVE).
    fn line(&mut self, v: &Value) {
        let kind = v["event"].as_str().unwrap_or("other").to_string();
        let text = match self.cfg.format {
            LogFormat::Nfqwall => serde_json::to_string(v),
            LogFormat::Eve => serde_json::to_string(&notice_eve(v)),
        }
        .unwrap_or_default();
        self.emit(
            &text,
            &Meta {
                kind: &kind,
                class: None,
                reason: None,
            },
        );
    }

    /// Writes one line already rendered as JSON text, to the journal or the stream.
    fn emit(&mut self, text: &str, meta: &Meta<'_>) {
        let ok = match &self.journal {
            Some(j) => j.send(text, meta).is_ok(),
            None => {
                self.out.write_all(text.as_bytes()).is_ok() && self.out.write_all(b"\n").is_ok()
            }
        };
        let c = if ok {
            &self.cfg.counters.written
        } else {
            &self.cfg.counters.write_errors
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn event(&mut self, ev: Event) {
        let v = match ev {
            Event::Packet(p) => {
                let policy = self.cfg.engine.policy();
                let name = self.ifaces.name(p.in_ifindex).map(str::to_owned);
                let text = match self.cfg.format {
                    LogFormat::Nfqwall => packet_json(&p, &policy, name.as_deref()),
                    LogFormat::Eve => packet_eve(&p, &policy, name.as_deref()),
                };
                let reason = p.decision.reason;
                self.emit(
                    &text,
                    &Meta {
                        kind: "packet",
                        class: reason.map(|r| r.class()),
                        reason: reason.map(|r| r.name()),
                    },
                );
                return;
            }
            Event::InternalError {
                wall_ns,
                queue,
                message,
            } => internal_error_json(wall_ns, queue, &message),
            Event::Notice(m) => Value::Object(m),
        };
        self.line(&v);
    }

    fn report_suppressed(&mut self) {
        let taken = self.cfg.gate.take_all_suppressed();
        self.cfg
            .counters
            .suppressed
            .fetch_add(taken.iter().sum(), Ordering::Relaxed);
        for (key, &n) in taken.iter().enumerate() {
            if n > 0 {
                let v = json!({
                    "ts": format_ts(wall_ns()),
                    "event": "suppressed",
                    "reason": key_name(key),
                    "count": n,
                });
                self.line(&v);
            }
        }
    }

    fn summarize_peers(&mut self, interval_s: u32) {
        let now = wall_ns();
        let snapshot = self.cfg.engine.peers().snapshot();
        let mut rows: Vec<(u64, IpAddr, PeerStats, PeerStats)> = Vec::new();
        for (peer, s) in snapshot {
            let prev = self.last_peers.insert(peer, s).unwrap_or_default();
            let delta = diff(&s, &prev);
            let trouble = delta.trouble();
            if trouble > 0 {
                rows.push((trouble, peer, delta, s));
            }
        }
        rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let omitted = rows.len().saturating_sub(MAX_PEERS_PER_SUMMARY);
        for (_, peer, delta, total) in rows.into_iter().take(MAX_PEERS_PER_SUMMARY) {
            let v = json!({
                "ts": format_ts(now),
                "event": "peer_summary",
                "interval_s": interval_s,
                "peer": peer.to_string(),
                "patterns": pattern_map(&delta),
                "benign": delta.benign,
                "hostile": delta.hostile,
                "sack_displaced": delta.sack_displaced,
                "total": {
                    "patterns": pattern_map(&total),
                    "benign": total.benign,
                    "hostile": total.hostile,
                    "sack_displaced": total.sack_displaced,
                },
            });
            self.line(&v);
        }
        if omitted > 0 {
            let v = json!({
                "ts": format_ts(now),
                "event": "peer_summary_omitted",
                "interval_s": interval_s,
                "peers": omitted,
            });
            self.line(&v);
        }
    }
}

/// Counts in `now` beyond `before` (saturating: a peer evicted and re-added restarts).
fn diff(now: &PeerStats, before: &PeerStats) -> PeerStats {
    let mut d = PeerStats {
        first_ns: now.first_ns,
        last_ns: now.last_ns,
        ..PeerStats::default()
    };
    for i in 0..d.patterns.len() {
        d.patterns[i] = now.patterns[i].saturating_sub(before.patterns[i]);
    }
    d.benign = now.benign.saturating_sub(before.benign);
    d.hostile = now.hostile.saturating_sub(before.hostile);
    d.sack_displaced = now.sack_displaced.saturating_sub(before.sack_displaced);
    d
}

/// `{"retransmission": 3, ...}` with the nonzero contract patterns.
fn pattern_map(s: &PeerStats) -> Value {
    let mut m = Map::new();
    for p in Pattern::CONTRACT.iter() {
        let n = s.patterns[*p as usize];
        if n > 0 {
            m.insert(p.name().into(), n.into());
        }
    }
    Value::Object(m)
}

fn run(
    cfg: WriterConfig,
    rx: Receiver<Event>,
    out: BufWriter<Box<dyn Write + Send>>,
    journal: Option<Journal>,
) {
    let mut st = State {
        cfg,
        out,
        journal,
        ifaces: IfaceNames::new(),
        last_peers: HashMap::new(),
    };
    let mut next_second = Instant::now() + Duration::from_secs(1);
    let mut last_summary = Instant::now();
    loop {
        let timeout = next_second.saturating_duration_since(Instant::now());
        match rx.recv_timeout(timeout) {
            Ok(ev) => {
                st.event(ev);
                // Write what is waiting, then flush once: a tail -f sees it promptly.
                while let Ok(ev) = rx.try_recv() {
                    st.event(ev);
                }
                let _ = st.out.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_second {
            next_second = Instant::now() + Duration::from_secs(1);
            st.ifaces.forget();
            st.report_suppressed();
            let interval = st.cfg.summary_interval.load(Ordering::Relaxed);
            if interval > 0 && last_summary.elapsed() >= Duration::from_secs(interval.into()) {
                last_summary = Instant::now();
                st.summarize_peers(interval);
            }
            let _ = st.out.flush();
        }
    }
    st.report_suppressed();
    let _ = st.out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::CtHint;
    use std::sync::Mutex;

    /// A `Write` into a shared buffer, so the test can read what the writer wrote.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(buf: &Shared) -> Vec<Value> {
        String::from_utf8(buf.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn peer_summary_reports_interval_deltas_then_nothing_new() {
        let engine = Arc::new(Engine::new(&Config::builtin_default()));
        let pcap = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/pcaps/chrissanders__tcp_retransmissions.pcap"
        );
        let file = std::fs::File::open(pcap).unwrap();
        crate::replay::replay(
            &engine,
            file,
            crate::replay::Visibility::Full(CtHint::Auto),
            |_| {},
        )
        .unwrap();
        assert!(!engine.peers().is_empty(), "fixture shows retransmissions");

        let buf = Shared::default();
        let mut st = State {
            cfg: WriterConfig {
                target: LogTarget::Stdout,
                summary_interval: Arc::new(AtomicU32::new(60)),
                gate: Arc::new(RateGate::new(1)),
                counters: Arc::default(),
                engine: Arc::clone(&engine),
                format: LogFormat::Nfqwall,
                journald: Journald::Off,
            },
            out: BufWriter::new(Box::new(buf.clone())),
            journal: None,
            ifaces: IfaceNames::new(),
            last_peers: HashMap::new(),
        };
        st.summarize_peers(60);
        st.out.flush().unwrap();
        let first = lines(&buf);
        assert!(!first.is_empty());
        let retrans: u64 = first
            .iter()
            .map(|e| {
                assert_eq!(e["event"], "peer_summary");
                assert_eq!(
                    e["patterns"], e["total"]["patterns"],
                    "first interval = total"
                );
                e["patterns"]["retransmission"].as_u64().unwrap_or(0)
            })
            .sum();
        assert!(retrans > 0, "{first:?}");
        // Nothing happened since: the next round writes nothing.
        st.summarize_peers(60);
        st.out.flush().unwrap();
        assert_eq!(lines(&buf).len(), first.len());
    }

    #[test]
    fn suppressed_counts_are_reported_once() {
        let buf = Shared::default();
        let gate = Arc::new(RateGate::new(1));
        for _ in 0..5 {
            gate.admit(crate::engine::Reason::KeepAlive.index(), 7);
        }
        let mut st = State {
            cfg: WriterConfig {
                target: LogTarget::Stdout,
                summary_interval: Arc::new(AtomicU32::new(0)),
                gate,
                counters: Arc::default(),
                engine: Arc::new(Engine::new(&Config::builtin_default())),
                format: LogFormat::Nfqwall,
                journald: Journald::Off,
            },
            out: BufWriter::new(Box::new(buf.clone())),
            journal: None,
            ifaces: IfaceNames::new(),
            last_peers: HashMap::new(),
        };
        st.report_suppressed();
        st.report_suppressed();
        st.out.flush().unwrap();
        let l = lines(&buf);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0]["event"], "suppressed");
        assert_eq!(l[0]["reason"], "keep_alive");
        assert_eq!(l[0]["count"], 4);
    }
}
