//! The live front end: `nfqwall run`.
//!
//! One NFQUEUE binding and one thread per queue number; each thread does recv ->
//! [`Engine::decide`] -> verdict inline ([`queue`]). The main thread owns everything
//! slow: signals (SIGTERM/SIGINT stop, SIGHUP reloads), load-shedding decisions from
//! the kernel's queue backlog, flow expiry, the systemd watchdog and the stats socket
//! ([`crate::stats`]). The ruleset ([`Ruleset`]) lives on a rules worker thread
//! ([`RulesWorker`]): the main thread hands it install, replace and remove jobs and
//! polls for the outcome, so shedding and the watchdog go on while iptables runs
//! (every command it runs has a bounded wait, [`crate::rules::command`]). Events go to
//! one writer thread ([`crate::events`]).
//!
//! A reload swaps kernel rules and engine policy together or not at all: the worker
//! replaces the rules (a partial replace is rolled back to the previous rules) and only
//! on success, at once, reloads the engine's policy.
//!
//! Fail-open layers, outermost first: `--queue-bypass` on the NFQUEUE rules (no
//! listener); the queue's fail-open flag (kernel queue or socket full); load shedding
//! here (backlog above half the queue, counted as `shed`); a panic while judging one
//! packet (`internal_error`). Each leaves the packet unjudged: it goes on from `mangle`
//! to `filter`, where the host's rules decide (rules/README.md).

pub mod ct;
pub mod feed;
pub mod handback;
pub mod iface;
pub mod queue;
pub mod services;
pub mod test_hook;
pub mod verdict;

use crate::config::{BusyPoll, Config, QueueRange};
use crate::engine::patterns::Pattern;
use crate::engine::reason::REASON_KINDS;
use crate::engine::{Engine, Reason};
use crate::events::{self, wall_ns, EventCounters, EventSink, RateGate, Writer, WriterConfig};
use crate::stats::{self, Snapshot, StatsServer};
use ct::CtSource;
use queue::QueueShared;
use serde_json::json;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::fmt;
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use verdict::Shedding;

/// The iptables/ip6tables ruleset that sends packets to the queues. `run` installs it
/// after binding the queues, replaces it on SIGHUP, and removes it on exit, all on the
/// rules worker thread (hence `Send`).
pub trait Ruleset: Send {
    /// Installs the ruleset for `config`; a partial install is rolled back.
    fn install(&mut self, config: &Config) -> Result<(), String>;
    /// Replaces the installed ruleset with the one for `config`, atomically: on failure
    /// the previous rules stay (or are put back), unless the failure says otherwise.
    fn replace(&mut self, config: &Config) -> Result<(), RulesFailure>;
    /// Removes exactly what `install`/`replace` added (tables they created included).
    fn remove(&mut self) -> Result<(), String>;
    /// A short description for events (`"none"` when rules are managed elsewhere).
    fn describe(&self) -> String;
    /// What the last operations did besides their transactions (tables deleted or
    /// kept, state file trouble), one sentence each; the daemon logs them.
    fn take_notes(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// Returns true if and only if the installed ruleset writes each queued packet's
    /// conntrack state into the mark (nfqwall's own rules do; `--no-rules` cannot
    /// promise it).
    fn writes_state(&self) -> bool {
        false
    }
    /// A reader of the counter of queued packets that reached `filter` unjudged
    /// (see [`crate::rules::UNJUDGED_COMMENT`]), to run off the main thread; `None`
    /// when the ruleset has no such counter.
    fn unjudged_reader(&self) -> Option<UnjudgedReader> {
        None
    }
}

/// Reads the installed counter of queued packets nobody judged (`None`: unreadable).
pub type UnjudgedReader = Box<dyn Fn() -> Option<u64> + Send>;

/// Why [`Ruleset::replace`] failed, and where that left the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesFailure {
    /// What went wrong (names the command, and any rollback).
    pub error: String,
    /// True if the kernel holds the previous rules: nothing was committed, or what was
    /// committed has been rolled back. False: the rollback failed too.
    pub previous_in_force: bool,
}

/// `--no-rules`: the operator (or a test) manages the NFQUEUE rules.
pub struct NoRules;

impl Ruleset for NoRules {
    fn install(&mut self, _: &Config) -> Result<(), String> {
        Ok(())
    }
    fn replace(&mut self, _: &Config) -> Result<(), RulesFailure> {
        Ok(())
    }
    fn remove(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn describe(&self) -> String {
        "none (--no-rules)".into()
    }
}

/// Loads the configuration (at start and on every SIGHUP), with command-line
/// overrides applied; the error is the message to log.
pub type Loader = Box<dyn Fn() -> Result<Config, String>>;

/// What `nfqwall run` was asked to do.
pub struct RunOptions {
    /// Loads the config.
    pub load: Loader,
    /// The config file, for events and stats (`None`: built-in default).
    pub config_path: Option<PathBuf>,
    /// Path of the stats socket.
    pub stats_socket: PathBuf,
}

/// Why the daemon could not start or had to stop.
#[derive(Debug)]
pub enum DaemonError {
    /// The config did not load.
    Config(String),
    /// A queue could not be set up.
    Queue {
        /// The queue number.
        queue: u16,
        /// What was being done.
        what: &'static str,
        /// The system error.
        source: std::io::Error,
    },
    /// Other system set-up (signals, threads, the event log).
    Io(&'static str, std::io::Error),
    /// Installing the ruleset failed.
    Rules(String),
    /// A queue thread ended by itself.
    QueueThreadDied(u16),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Config(e) => write!(f, "config: {e}"),
            DaemonError::Queue {
                queue,
                what,
                source,
            } => {
                write!(f, "NFQUEUE {queue}: cannot {what}: {source}")
            }
            DaemonError::Io(what, e) => write!(f, "cannot {what}: {e}"),
            DaemonError::Rules(e) => write!(f, "rules: {e}"),
            DaemonError::QueueThreadDied(q) => {
                write!(f, "the thread of NFQUEUE {q} ended unexpectedly (bug; exiting so the supervisor restarts nfqwall)")
            }
        }
    }
}

impl std::error::Error for DaemonError {}

/// State shared by the main thread and the queue threads.
pub struct Shared {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Set once to stop.
    pub stop: AtomicBool,
    /// One entry per queue, in queue order.
    pub queues: Vec<QueueShared>,
    /// nfqwall's mark bits (`daemon.vouch_mark`, `daemon.state_mask`).
    pub marks: crate::rules::Marks,
    /// The counter of queued packets that reached `filter` unjudged, summed over
    /// rule replacements (which reset it); read by the monitor thread.
    pub unjudged_total: AtomicU64,
    /// Whether that counter could be read at least once.
    pub unjudged_known: AtomicBool,
    /// Per-service counters, re-indexed on reload.
    pub services: services::ServiceTable,
    /// The shadow feed's counters; `None` when no service is shadowed.
    pub feed: Option<feed::FeedShared>,
    /// Whether the feed's group is bound and its thread runs.
    pub feed_bound: AtomicBool,
    /// The queue threads' end of the handback channel ([`handback`]).
    pub handback: handback::Handback,
    /// `daemon.busy_poll_us` in nanoseconds (a reload changes it at once).
    pub busy_poll_ns: AtomicU64,
    /// `daemon.busy_poll` is `always` (a reload changes it at once).
    pub busy_poll_always: AtomicBool,
    start: Instant,
}

impl Shared {
    /// Queued packets the kernel let past without nfqwall's verdict: the counter's
    /// total less what nfqwall itself shed or gave up on (those carry the state bits
    /// too).
    pub fn unjudged_kernel(&self) -> u64 {
        let c = self.engine.counters();
        let own = c.by_reason[Reason::Shed.index()] + c.by_reason[Reason::InternalError.index()];
        self.unjudged_total
            .load(Ordering::Relaxed)
            .saturating_sub(own)
    }

    /// Monotonic ns since start: the engine's clock.
    #[inline]
    pub fn mono_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// Counters the main thread keeps.
#[derive(Default)]
struct MainCounters {
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

/// A no-op handler: its only job is to interrupt a queue thread's blocking `recv`.
extern "C" fn wake(_: libc::c_int) {}

/// Installs [`wake`] for SIGUSR1 without `SA_RESTART`, so `recv` returns `EINTR`.
fn install_wake_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe (empty).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = wake as *const () as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A job for the rules worker.
enum Job {
    Install(Box<Config>),
    /// Replace the rules, then (only if that worked) reload the engine's policy.
    Replace(Box<Config>),
    Remove,
}

/// A finished job, with the ruleset's notes.
enum Done {
    Install(Result<(), String>),
    Replace(Box<Config>, Result<(), RulesFailure>),
    Remove(Result<(), String>),
}

/// The thread that owns the [`Ruleset`] and runs its (slow, external) commands, one
/// job at a time, so the main loop never waits on iptables.
pub struct RulesWorker {
    jobs: Option<crossbeam_channel::Sender<Job>>,
    done: crossbeam_channel::Receiver<(Done, Vec<String>)>,
    handle: Option<JoinHandle<()>>,
    busy: bool,
}

impl RulesWorker {
    fn spawn(mut rules: Box<dyn Ruleset>, shared: Arc<Shared>) -> std::io::Result<RulesWorker> {
        let (jobs, job_rx) = crossbeam_channel::unbounded::<Job>();
        let (done_tx, done) = crossbeam_channel::unbounded();
        let handle = std::thread::Builder::new()
            .name("nfqwall-rules".into())
            .spawn(move || {
                for job in job_rx {
                    let done = match job {
                        Job::Install(cfg) => Done::Install(rules.install(&cfg)),
                        Job::Replace(cfg) => {
                            let r = rules.replace(&cfg);
                            if r.is_ok() {
                                // At once, on this thread: the kernel's new rules and the
                                // engine's new policy take effect together.
                                shared.engine.reload(&*cfg);
                                shared.services.reload(&cfg);
                            }
                            Done::Replace(cfg, r)
                        }
                        Job::Remove => Done::Remove(rules.remove()),
                    };
                    if done_tx.send((done, rules.take_notes())).is_err() {
                        break;
                    }
                }
            })?;
        Ok(RulesWorker {
            jobs: Some(jobs),
            done,
            handle: Some(handle),
            busy: false,
        })
    }

    fn submit(&mut self, job: Job) {
        debug_assert!(!self.busy);
        if let Some(j) = &self.jobs {
            if j.send(job).is_ok() {
                self.busy = true;
            }
        }
    }

    /// The finished job, if there is one; never blocks.
    fn poll(&mut self) -> Option<(Done, Vec<String>)> {
        let r = self.done.try_recv().ok();
        if r.is_some() {
            self.busy = false;
        }
        r
    }

    /// Waits for the job in flight, if any.
    fn wait(&mut self) -> Option<(Done, Vec<String>)> {
        if !self.busy {
            return None;
        }
        let r = self.done.recv().ok();
        self.busy = false;
        r
    }

    /// Runs `job` and waits for it (start-up and shutdown).
    fn call(&mut self, job: Job) -> Option<(Done, Vec<String>)> {
        self.submit(job);
        self.wait()
    }
}

impl Drop for RulesWorker {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn sd_notify(states: &[sd_notify::NotifyState]) {
    let _ = sd_notify::notify(states);
}

/// Runs the daemon until SIGTERM or SIGINT. Returns after a clean shutdown: every
/// packet in hand has a verdict, the queues are unbound, the ruleset is removed and
/// the event log is flushed.
pub fn run(opts: RunOptions, rules: Box<dyn Ruleset>) -> Result<(), DaemonError> {
    let config = (opts.load)().map_err(DaemonError::Config)?;
    // Before any queue is bound: the hook is armed for every packet or none.
    test_hook::arm();
    let engine = Arc::new(Engine::new(&config));
    // Judge what the kernel queued, as its conntrack and rules saw it: the outer packet.
    engine.set_follow_tunnels(false);
    let gate = Arc::new(RateGate::new(config.daemon.log_rate_per_reason));
    let counters = Arc::new(EventCounters::default());
    let summary_interval = Arc::new(AtomicU32::new(config.daemon.summary_interval));
    let (tx, rx) = crossbeam_channel::bounded(events::CHANNEL_CAPACITY);
    let writer = Writer::spawn(
        WriterConfig {
            target: config.daemon.log.clone(),
            summary_interval: Arc::clone(&summary_interval),
            gate: Arc::clone(&gate),
            counters: Arc::clone(&counters),
            engine: Arc::clone(&engine),
            format: config.daemon.log_format,
            journald: config.daemon.journald,
        },
        rx,
    )
    .map_err(|e| DaemonError::Io("open the event log", e))?;
    let sink = EventSink::new(tx, Arc::clone(&gate), Arc::clone(&counters));

    // Registered before anything is bound, so a TERM during start-up is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| DaemonError::Io("register signal handlers", e))?;
    install_wake_handler().map_err(|e| DaemonError::Io("install the SIGUSR1 handler", e))?;

    let QueueRange { first, last } = config.daemon.queues;
    let (handback, handback_rx) = handback::Handback::new();
    let shared = Arc::new(Shared {
        engine: Arc::clone(&engine),
        stop: AtomicBool::new(false),
        queues: (first..=last)
            .map(|n| QueueShared {
                number: n,
                ..QueueShared::default()
            })
            .collect(),
        marks: crate::rules::Marks::of(&config.daemon),
        unjudged_total: AtomicU64::new(0),
        unjudged_known: AtomicBool::new(false),
        services: services::ServiceTable::new(&config),
        feed: config
            .services
            .iter()
            .any(|s| s.shadowed())
            .then(|| feed::FeedShared {
                group: config.daemon.feed_group,
                ..feed::FeedShared::default()
            }),
        feed_bound: AtomicBool::new(false),
        handback,
        busy_poll_ns: AtomicU64::new(u64::from(config.daemon.busy_poll_us) * 1000),
        busy_poll_always: AtomicBool::new(config.daemon.busy_poll == BusyPoll::Always),
        start: Instant::now(),
    });
    let rules_description = rules.describe();
    let writes_state = rules.writes_state();
    let unjudged_reader = rules.unjudged_reader();
    let worker = RulesWorker::spawn(rules, Arc::clone(&shared))
        .map_err(|e| DaemonError::Io("start the rules thread", e))?;
    let mut daemon = Daemon {
        shared,
        worker,
        rules_description,
        writes_state,
        unjudged_reader,
        reload_pending: false,
        sink,
        workers: Vec::new(),
        feed_thread: None,
        monitor: None,
        handback_rx: Some(handback_rx),
        handback_thread: None,
        writer: Some(writer),
        rules_installed: false,
        stats: None,
        metrics: None,
        main_counters: Arc::new(MainCounters::default()),
        gate,
        summary_interval,
        config,
        opts,
        ct_source: CtSource::None,
    };
    let result = daemon.start().and_then(|()| daemon.serve(&mut signals));
    daemon.shutdown(result.as_ref().err());
    result
}

struct Daemon {
    shared: Arc<Shared>,
    worker: RulesWorker,
    rules_description: String,
    /// [`Ruleset::writes_state`] of the ruleset in force.
    writes_state: bool,
    /// [`Ruleset::unjudged_reader`], taken by the monitor thread at start.
    unjudged_reader: Option<UnjudgedReader>,
    /// A SIGHUP came while a reload was in flight: reload again when it is done.
    reload_pending: bool,
    sink: EventSink,
    workers: Vec<JoinHandle<()>>,
    feed_thread: Option<JoinHandle<()>>,
    monitor: Option<JoinHandle<()>>,
    /// The handback channel's receiver, until [`Daemon::start`] gives it its thread.
    handback_rx: Option<crossbeam_channel::Receiver<handback::Request>>,
    handback_thread: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
    rules_installed: bool,
    stats: Option<StatsServer>,
    metrics: Option<crate::metrics::MetricsServer>,
    main_counters: Arc<MainCounters>,
    gate: Arc<RateGate>,
    summary_interval: Arc<AtomicU32>,
    config: Config,
    opts: RunOptions,
    ct_source: CtSource,
}

impl Daemon {
    /// Binds the queues, starts their threads, installs the rules, opens the stats
    /// socket, and tells systemd it is ready.
    fn start(&mut self) -> Result<(), DaemonError> {
        let d = &self.config.daemon;
        let mut bound = Vec::new();
        for qs in &self.shared.queues {
            bound.push(queue::bind(qs.number, d.queue_maxlen, d.fail_open)?);
        }
        self.ct_source = if bound.iter().all(|(_, s, _)| *s == CtSource::Kernel) {
            CtSource::Kernel
        } else if self.writes_state {
            CtSource::Ruleset
        } else {
            CtSource::None
        };
        let rcvbuf = bound.first().map_or(0, |(_, _, r)| *r);
        if let Some(rx) = self.handback_rx.take() {
            let h = handback::spawn(rx, Arc::clone(&self.shared), self.sink.clone())
                .map_err(|e| DaemonError::Io("start the handback thread", e))?;
            self.handback_thread = Some(h);
        }
        // The feed before the rules: their first NFLOG copies find it listening.
        let feed_error = self.start_feed().err();
        for (index, (q, _, _)) in bound.into_iter().enumerate() {
            let shared = Arc::clone(&self.shared);
            let sink = self.sink.clone();
            let name = format!("nfqwall-q{}", shared.queues[index].number);
            let h = std::thread::Builder::new()
                .name(name)
                .spawn(move || queue::run(q, index, &shared, &sink))
                .map_err(|e| DaemonError::Io("start a queue thread", e))?;
            self.workers.push(h);
        }
        // Set before: a failed install may still have left something to remove.
        self.rules_installed = true;
        match self
            .worker
            .call(Job::Install(Box::new(self.config.clone())))
        {
            Some((Done::Install(r), notes)) => {
                self.log_notes(notes);
                r.map_err(DaemonError::Rules)?;
            }
            _ => return Err(DaemonError::Rules("the rules thread ended".into())),
        }

        let snapshot = self.snapshot_fn();
        match StatsServer::start(&self.opts.stats_socket, snapshot) {
            Ok(s) => self.stats = Some(s),
            Err(e) => {
                // Stats are for the operator; the firewall runs without them.
                self.notice(
                    "warning",
                    json!({"detail": format!("stats socket {} unavailable: {e} (nfqwall stats will not work)", self.opts.stats_socket.display())}),
                );
            }
        }
        if let Some(addr) = self.config.daemon.metrics {
            match crate::metrics::MetricsServer::start(addr, self.snapshot_fn()) {
                Ok(m) => {
                    if !addr.ip().is_loopback() {
                        self.notice(
                            "warning",
                            json!({"detail": format!("metrics endpoint on {addr}, not loopback: anyone who reaches it reads the counters (it has no authentication)")}),
                        );
                    }
                    self.metrics = Some(m);
                }
                Err(e) => self.notice(
                    "warning",
                    json!({"detail": format!("metrics endpoint {addr} unavailable: {e} (the firewall runs without it)")}),
                ),
            }
        }
        if let Some(e) = &feed_error {
            let d = &self.config.daemon;
            self.notice(
                "warning",
                json!({"detail": format!("shadow feed: cannot bind NFLOG group {}: {e}; the shadowed services' flows are seen only in part (their SYN and what conntrack doubts), as with track = \"none\"", d.feed_group)}),
            );
        }
        if self.ct_source == CtSource::None {
            self.notice(
                "warning",
                json!({"detail": "the kernel attaches no conntrack state to queued packets and the rules are not nfqwall's (--no-rules): unless the queuing rules write the state bits of daemon.state_mask as `nfqwall rules print` does, every packet is judged as INVALID with no state (never let past the host's INVALID drop)"}),
            );
        }
        if let Some(read) = self.unjudged_reader.take() {
            self.spawn_monitor(read)?;
        }
        let d = &self.config.daemon;
        let mut start = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "config": self.opts.config_path.as_ref().map(|p| p.display().to_string()),
            "mode": d.mode.name(),
            "queues": self.shared.queues.iter().map(|q| q.number).collect::<Vec<_>>(),
            "queue_maxlen": d.queue_maxlen,
            "fail_open": d.fail_open,
            "fail_open_invalid": d.fail_open_invalid.name(),
            "shedding": d.shedding.name(),
            "busy_poll_us": d.busy_poll_us,
            "busy_poll": d.busy_poll.name(),
            "vouch_mark": format!("{:#x}", d.vouch_mark),
            "state_mask": format!("{:#x}", d.state_mask),
            "socket_rcvbuf": rcvbuf,
            "feed": self.shared.feed.as_ref().map(|f| json!({
                "group": f.group,
                "bound": self.shared.feed_bound.load(Ordering::Relaxed),
                "size": d.feed_size,
                "threshold": d.feed_threshold,
                "rcvbuf": f.rcvbuf.load(Ordering::Relaxed),
            })),
            "ct_source": self.ct_source.name(),
            "rules": self.rules_description,
            "services": self.config.services.len(),
            "stats_socket": self.opts.stats_socket.display().to_string(),
            "metrics": self.metrics.as_ref().map(|m| m.local_addr().to_string()),
            "log_format": d.log_format.name(),
        });
        if let Some(port) = test_hook::arm() {
            start["test_panic_sport"] = json!(port);
        }
        self.notice("start", start);
        sd_notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("judging packets"),
        ]);
        Ok(())
    }

    /// Binds the shadow feed's NFLOG group and starts its thread, if some service is
    /// shadowed. An error leaves the daemon running without the feed.
    fn start_feed(&mut self) -> Result<(), std::io::Error> {
        if self.shared.feed.is_none() {
            return Ok(());
        }
        let d = &self.config.daemon;
        let opts = crate::nflog::Options::for_feed(d.feed_group, d.feed_size, d.feed_threshold);
        let sock = crate::nflog::NflogSocket::open(&opts)?;
        if let Some(f) = &self.shared.feed {
            f.rcvbuf.store(sock.rcvbuf() as u64, Ordering::Relaxed);
        }
        let shared = Arc::clone(&self.shared);
        let h = std::thread::Builder::new()
            .name("nfqwall-feed".into())
            .spawn(move || {
                if let Some(fs) = &shared.feed {
                    feed::run(sock, &shared, fs);
                }
            })?;
        self.shared.feed_bound.store(true, Ordering::Relaxed);
        self.feed_thread = Some(h);
        Ok(())
    }

    /// Starts the thread that reads the counter of queued packets nobody judged every
    /// two seconds (iptables runs there, never on the main or a queue thread), and
    /// writes a `fail_open` event (at most one per ten seconds) when the kernel let
    /// packets past unjudged.
    fn spawn_monitor(&mut self, read: UnjudgedReader) -> Result<(), DaemonError> {
        let shared = Arc::clone(&self.shared);
        let sink = self.sink.clone();
        let h = std::thread::Builder::new()
            .name("nfqwall-monitor".into())
            .spawn(move || {
                let mut last_raw = 0u64;
                let mut reported_kernel = 0u64;
                let mut next_event = Instant::now();
                while !shared.stop.load(Ordering::Relaxed) {
                    if let Some(raw) = read() {
                        // A rule replacement (reload) resets the counter.
                        let delta = if raw >= last_raw { raw - last_raw } else { raw };
                        last_raw = raw;
                        shared.unjudged_total.fetch_add(delta, Ordering::Relaxed);
                        shared.unjudged_known.store(true, Ordering::Relaxed);
                        let kernel = shared.unjudged_kernel();
                        if kernel > reported_kernel && Instant::now() >= next_event {
                            next_event = Instant::now() + Duration::from_secs(10);
                            sink.notice(
                                wall_ns(),
                                "fail_open",
                                json!({
                                    "unjudged_by_kernel": kernel,
                                    "new": kernel - reported_kernel,
                                    "unjudged_total": shared.unjudged_total.load(Ordering::Relaxed),
                                    "socket_lost": shared.queues.iter().map(|q| q.socket_lost.load(Ordering::Relaxed)).sum::<u64>(),
                                    "detail": "queued packets reached the host's rules without nfqwall's verdict (kernel fail-open: queue or socket full, or no listener)",
                                }),
                            );
                            reported_kernel = kernel;
                        }
                    }
                    for _ in 0..20 {
                        if shared.stop.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
            .map_err(|e| DaemonError::Io("start the monitor thread", e))?;
        self.monitor = Some(h);
        Ok(())
    }

    fn notice(&self, kind: &str, fields: serde_json::Value) {
        self.sink.notice(wall_ns(), kind, fields);
    }

    /// Logs the ruleset's notes (tables deleted or kept, state file trouble).
    fn log_notes(&self, notes: Vec<String>) {
        for n in notes {
            eprintln!("nfqwall: rules: {n}");
            self.notice("rules", json!({ "detail": n }));
        }
    }

    /// The main loop: signals, shedding, expiry, watchdog. Returns on SIGTERM/SIGINT.
    fn serve(&mut self, signals: &mut signal_hook::iterator::Signals) -> Result<(), DaemonError> {
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut next_ping = Instant::now();
        let mut next_expire = Instant::now() + Duration::from_secs(1);
        let shedding = Shedding::for_maxlen(self.config.daemon.queue_maxlen);
        // What the queues were bound with: a reload that changes it takes a restart.
        let fail_open = self.config.daemon.fail_open;
        loop {
            for sig in signals.pending() {
                match sig {
                    SIGHUP => self.reload_pending = true,
                    _ => {
                        self.notice(
                            "stopping",
                            json!({"signal": if sig == SIGINT { "SIGINT" } else { "SIGTERM" }}),
                        );
                        return Ok(());
                    }
                }
            }
            for (h, qs) in self.workers.iter().zip(&self.shared.queues) {
                if h.is_finished() {
                    return Err(DaemonError::QueueThreadDied(qs.number));
                }
            }
            if let Some((done, notes)) = self.worker.poll() {
                self.log_notes(notes);
                self.finish(done);
            }
            if self.reload_pending && !self.worker.busy {
                self.reload_pending = false;
                self.start_reload();
            }
            self.update_shedding(shedding, fail_open);
            let now = Instant::now();
            if now >= next_expire {
                next_expire = now + Duration::from_secs(1);
                self.shared.engine.expire(self.shared.mono_ns());
            }
            if let Some(every) = watchdog {
                if now >= next_ping && self.healthy() {
                    next_ping = now + every;
                    sd_notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Returns true if and only if no queue thread has held one packet for 10 s.
    fn healthy(&self) -> bool {
        let now = self.shared.mono_ns();
        self.shared.queues.iter().all(|q| {
            let b = q.busy_since.load(Ordering::Relaxed);
            b == 0 || now.saturating_sub(b) < 10_000_000_000
        })
    }

    /// Sets each queue's shedding flag from the kernel's backlog, where the config's
    /// `shedding` allows it for queues bound with `fail_open`.
    fn update_shedding(&self, s: Shedding, fail_open: bool) {
        let allowed = self.config.daemon.shedding.sheds(fail_open);
        if !allowed
            && !self
                .shared
                .queues
                .iter()
                .any(|q| q.shedding.load(Ordering::Relaxed))
        {
            // Nothing to start or to stop: no need to read the kernel's backlog.
            return;
        }
        let kernel = stats::read_kernel_queues();
        for qs in &self.shared.queues {
            let Some(k) = kernel.iter().find(|k| k.queue == qs.number) else {
                continue;
            };
            let was = qs.shedding.load(Ordering::Relaxed);
            let now = allowed && s.next(was, k.queue_total);
            if now != was {
                qs.shedding.store(now, Ordering::Relaxed);
                self.notice(
                    if now { "shedding_start" } else { "shedding_stop" },
                    json!({
                        "queue": qs.number,
                        "backlog": k.queue_total,
                        "queue_maxlen": self.config.daemon.queue_maxlen,
                        "shed_total": qs.shed.load(Ordering::Relaxed),
                        "detail": if now {
                            "kernel queue backlog at half its length: not judging, packets go on to the host's rules (load shedding)"
                        } else {
                            "backlog drained: inspecting again"
                        },
                    }),
                );
            }
        }
    }

    /// SIGHUP: load the config (here: a file read) and hand the rules worker the
    /// replace; [`Daemon::finish`] reports it. A config that does not load changes
    /// nothing.
    fn start_reload(&mut self) {
        sd_notify(&[sd_notify::NotifyState::Reloading]);
        match (self.opts.load)() {
            Ok(cfg) => self.worker.submit(Job::Replace(Box::new(cfg))),
            Err(e) => self.reload_failed(
                &format!("config: {e}"),
                "previous",
                "the new config was refused; the running config and rules stay in force",
            ),
        }
    }

    /// Handles a finished worker job (a reload's; start-up and shutdown wait for
    /// theirs themselves).
    fn finish(&mut self, done: Done) {
        match done {
            Done::Replace(cfg, Ok(())) => self.reloaded(*cfg),
            Done::Replace(_, Err(f)) => self.reload_failed(
                &format!("rules: {}", f.error),
                if f.previous_in_force {
                    "previous"
                } else {
                    "unknown"
                },
                if f.previous_in_force {
                    "the new rules did not install; the previous rules are in force and the engine keeps its policy"
                } else {
                    "the new rules did not install and the rollback failed: the kernel may hold a mix of old and new rules; the engine keeps its policy (fix the cause, then reload or restart)"
                },
            ),
            Done::Install(r) | Done::Remove(r) => {
                if let Err(e) = r {
                    self.notice("warning", json!({ "detail": format!("rules: {e}") }));
                }
            }
        }
    }

    /// The rules and the engine's policy are replaced (by the worker): the rest of
    /// the new config takes effect, and the reload is reported.
    fn reloaded(&mut self, cfg: Config) {
        let path = self
            .opts
            .config_path
            .as_ref()
            .map(|p| p.display().to_string());
        self.gate.set_limit(cfg.daemon.log_rate_per_reason);
        self.summary_interval
            .store(cfg.daemon.summary_interval, Ordering::Relaxed);
        self.shared
            .busy_poll_ns
            .store(u64::from(cfg.daemon.busy_poll_us) * 1000, Ordering::Relaxed);
        self.shared
            .busy_poll_always
            .store(cfg.daemon.busy_poll == BusyPoll::Always, Ordering::Relaxed);
        let old = &self.config.daemon;
        let new = &cfg.daemon;
        let mut needs_restart = Vec::new();
        if old.queues != new.queues {
            needs_restart.push("daemon.queues");
        }
        if old.queue_maxlen != new.queue_maxlen {
            needs_restart.push("daemon.queue_maxlen");
        }
        if old.fail_open != new.fail_open {
            needs_restart.push("daemon.fail_open");
        }
        if old.log != new.log {
            needs_restart.push("daemon.log");
        }
        if old.log_format != new.log_format {
            needs_restart.push("daemon.log_format");
        }
        if old.journald != new.journald {
            needs_restart.push("daemon.journald");
        }
        if old.metrics != new.metrics {
            needs_restart.push("daemon.metrics");
        }
        if (old.feed_group, old.feed_size, old.feed_threshold)
            != (new.feed_group, new.feed_size, new.feed_threshold)
        {
            // The rules take the new values at once; the socket keeps its group.
            needs_restart.push("daemon.feed_group/feed_size/feed_threshold");
        }
        if self.shared.feed.is_none() && cfg.services.iter().any(|s| s.shadowed()) {
            needs_restart.push("service.track (the feed starts at start-up)");
        }
        if self.config.engine != cfg.engine {
            needs_restart.push("engine");
        }
        self.main_counters.reloads.fetch_add(1, Ordering::Relaxed);
        self.notice(
            "reload",
            json!({
                "config": path,
                "mode": new.mode.name(),
                "services": cfg.services.len(),
                "rules": cfg.services.iter().map(|s| s.rules.len()).sum::<usize>(),
                "unchanged_until_restart": needs_restart,
            }),
        );
        self.config = cfg;
        sd_notify(&[sd_notify::NotifyState::Ready]);
    }

    /// Reports a refused reload; `rules_in_force` is `previous` or `unknown`.
    fn reload_failed(&mut self, error: &str, rules_in_force: &str, detail: &str) {
        let path = self
            .opts
            .config_path
            .as_ref()
            .map(|p| p.display().to_string());
        self.main_counters
            .reload_failures
            .fetch_add(1, Ordering::Relaxed);
        eprintln!("nfqwall: reload refused: {error} ({detail})");
        self.notice(
            "reload_failed",
            json!({
                "config": path,
                "error": error,
                "rules_in_force": rules_in_force,
                "policy_in_force": "previous",
                "detail": detail,
            }),
        );
        sd_notify(&[sd_notify::NotifyState::Ready]);
    }

    /// Builds the closure the stats socket calls for each snapshot.
    fn snapshot_fn(&self) -> impl Fn() -> Snapshot + Send + 'static {
        let shared = Arc::clone(&self.shared);
        let counters = self.sink.clone();
        let main = Arc::clone(&self.main_counters);
        let config_path = self
            .opts
            .config_path
            .as_ref()
            .map(|p| p.display().to_string());
        let mode = self.config.daemon.mode.name().to_string();
        let ct_source = self.ct_source.name().to_string();
        let started = Mutex::new(Instant::now());
        move || {
            let e = &shared.engine;
            let c = e.counters();
            let r = |i: usize| c.by_reason[i];
            let ec = counters.counters();
            let numbers: Vec<u16> = shared.queues.iter().map(|q| q.number).collect();
            Snapshot {
                pid: std::process::id(),
                uptime_s: started.lock().map(|s| s.elapsed().as_secs()).unwrap_or(0),
                config: config_path.clone(),
                mode: mode.clone(),
                ct_source: ct_source.clone(),
                packets: c.packets,
                accepted: c.accepted,
                dropped: c.dropped,
                would_drop: c.would_drop,
                vouched: c.vouched,
                would_accept: c.would_accept,
                passed_on: c.passed_on,
                unjudged: stats::Unjudged {
                    total: shared.unjudged_total.load(Ordering::Relaxed),
                    kernel: shared.unjudged_kernel(),
                    known: shared.unjudged_known.load(Ordering::Relaxed),
                },
                by_reason: (0..REASON_KINDS)
                    .map(|i| (Reason::NAMES[i].to_string(), r(i)))
                    .collect(),
                by_pattern: Pattern::ALL
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.name().to_string(), c.by_pattern[i]))
                    .collect(),
                shed: r(Reason::Shed.index()),
                internal_errors: r(Reason::InternalError.index()),
                events: stats::EventStats {
                    written: ec.written.load(Ordering::Relaxed),
                    suppressed: ec.suppressed.load(Ordering::Relaxed),
                    channel_full: ec.channel_full.load(Ordering::Relaxed),
                    write_errors: ec.write_errors.load(Ordering::Relaxed),
                },
                flows: e.flows().len() as u64,
                peers: e.peers().len() as u64,
                rss_bytes: stats::rss_bytes(),
                sack_repaired: c.sack_repaired,
                sack_blocks_rewritten: c.sack_blocks_rewritten,
                sack_blocks_unchanged: c.sack_blocks_unchanged,
                rate_buckets: e.policy().rate_stats().tracked as u64,
                rate_untracked: e.policy().rate_stats().untracked,
                by_service: shared.services.snapshot(),
                reloads: main.reloads.load(Ordering::Relaxed),
                reload_failures: main.reload_failures.load(Ordering::Relaxed),
                handback: shared.handback.counters.snapshot(),
                queues: shared
                    .queues
                    .iter()
                    .map(|q| stats::QueueStats {
                        queue: q.number,
                        packets: q.packets.load(Ordering::Relaxed),
                        shed: q.shed.load(Ordering::Relaxed),
                        shedding: q.shedding.load(Ordering::Relaxed),
                        socket_errors: q.socket_errors.load(Ordering::Relaxed),
                        socket_enobufs: q.socket_enobufs.load(Ordering::Relaxed),
                        recv_calls: q.recv_calls.load(Ordering::Relaxed),
                        repair_skipped: q.repair_skipped.load(Ordering::Relaxed),
                        socket_lost: q.socket_lost.load(Ordering::Relaxed),
                        ct_kernel: q.ct_kernel.load(Ordering::Relaxed),
                        ct_ruleset: q.ct_ruleset.load(Ordering::Relaxed),
                        ct_none: q.ct_none.load(Ordering::Relaxed),
                        dropped: q.dropped.load(Ordering::Relaxed),
                        vouched: q.vouched.load(Ordering::Relaxed),
                        passed_on: q.passed_on.load(Ordering::Relaxed),
                    })
                    .collect(),
                kernel: stats::read_kernel_queues()
                    .into_iter()
                    .filter(|k| numbers.contains(&k.queue))
                    .collect(),
                feed_packets: shared
                    .feed
                    .as_ref()
                    .map_or(0, |f| f.packets.load(Ordering::Relaxed)),
                feed_lost: shared
                    .feed
                    .as_ref()
                    .map_or(0, |f| f.lost.load(Ordering::Relaxed)),
                feed: shared
                    .feed
                    .as_ref()
                    .filter(|_| shared.feed_bound.load(Ordering::Relaxed))
                    .map(|f| stats::FeedStats {
                        group: f.group,
                        batches: f.batches.load(Ordering::Relaxed),
                        packets: f.packets.load(Ordering::Relaxed),
                        lost: f.lost.load(Ordering::Relaxed),
                        overruns: f.overruns.load(Ordering::Relaxed),
                        errors: f.errors.load(Ordering::Relaxed),
                        learned: c.fed,
                        pickups: c.fed_pickups,
                        sack_copies: c.fed_sack,
                        loss_events: c.feed_losses,
                        rcvbuf: f.rcvbuf.load(Ordering::Relaxed),
                    }),
            }
        }
    }

    /// Stops in order: rules out (no new packets queued), queue threads woken and
    /// joined (each gives a verdict on what is waiting, then unbinds), stats socket
    /// closed, last event written and the log flushed.
    fn shutdown(&mut self, error: Option<&DaemonError>) {
        sd_notify(&[sd_notify::NotifyState::Stopping]);
        // A reload in flight finishes first (its commands are bounded); then removal.
        if let Some((done, notes)) = self.worker.wait() {
            self.log_notes(notes);
            self.finish(done);
        }
        if self.rules_installed {
            let removed = match self.worker.call(Job::Remove) {
                Some((Done::Remove(r), notes)) => {
                    self.log_notes(notes);
                    r
                }
                _ => Err("the rules thread ended".into()),
            };
            if let Err(e) = removed {
                eprintln!("nfqwall: removing the rules failed: {e}");
                self.notice(
                    "warning",
                    json!({"detail": format!("removing the rules failed: {e}")}),
                );
            }
            self.rules_installed = false;
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        for h in self.workers.drain(..) {
            // A signal that lands between the stop check and recv is lost: repeat it.
            while !h.is_finished() {
                // SAFETY: the thread is alive (not finished and not joined), so its
                // pthread_t is valid.
                unsafe { libc::pthread_kill(h.as_pthread_t(), libc::SIGUSR1) };
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = h.join();
        }
        if let Some(h) = self.feed_thread.take() {
            // Its receive timeout (200 ms) lets it see the stop.
            let _ = h.join();
        }
        if let Some(m) = self.monitor.take() {
            let _ = m.join();
        }
        if let Some(h) = self.handback_thread.take() {
            let _ = h.join();
        }
        self.stats = None;
        self.metrics = None;
        let c = self.shared.engine.counters();
        self.notice(
            "stop",
            json!({
                "error": error.map(|e| e.to_string()),
                "packets": c.packets,
                "accepted": c.accepted,
                "dropped": c.dropped,
                "would_drop": c.would_drop,
                "vouched": c.vouched,
                "would_accept": c.would_accept,
                "unjudged_by_kernel": self.shared.unjudged_kernel(),
                "shed": c.by_reason[Reason::Shed.index()],
                "events_suppressed": self.sink.counters().suppressed.load(Ordering::Relaxed),
            }),
        );
        // Dropping the last sender ends the writer, which reports and flushes.
        let (dead_tx, _) = crossbeam_channel::bounded(1);
        self.sink = EventSink::new(
            dead_tx,
            Arc::clone(&self.gate),
            Arc::new(EventCounters::default()),
        );
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}
