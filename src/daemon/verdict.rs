//! One packet's way from the engine to a kernel verdict: load shedding, the panic
//! guard, and the log-only guarantee. Kept apart from the socket so it is unit-tested.

use crate::engine::policy::Mode;
use crate::engine::{Decision, Engine, Reason, Verdict};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// How a packet was handled.
#[derive(Debug)]
pub enum Judged {
    /// The engine decided.
    Decided(Decision),
    /// Accepted uninspected: the thread is shedding load.
    Shed,
    /// Judging panicked; accepted uninspected. Holds the panic message.
    Panicked(String),
}

impl Judged {
    /// The verdict to give the kernel. A drop is returned if and only if the engine
    /// decided to drop *and* the mode that applied is enforce: log-only never drops,
    /// even if a bug elsewhere set the verdict.
    pub fn verdict(&self) -> Verdict {
        match self {
            Judged::Decided(d) if d.verdict == Verdict::Drop && d.mode == Mode::Enforce => {
                Verdict::Drop
            }
            _ => Verdict::Accept,
        }
    }
}

/// Judges one packet with `decide`, unless `shedding`; a panic inside `decide` is
/// caught. Shed and panicked packets are counted in the engine's counters
/// ([`Reason::Shed`], [`Reason::InternalError`]).
pub fn judge(engine: &Engine, shedding: bool, decide: impl FnOnce() -> Decision) -> Judged {
    if shedding {
        engine
            .counters()
            .count_external(Verdict::Accept, Reason::Shed);
        return Judged::Shed;
    }
    match catch_unwind(AssertUnwindSafe(decide)) {
        Ok(d) => Judged::Decided(d),
        Err(payload) => {
            engine
                .counters()
                .count_external(Verdict::Accept, Reason::InternalError);
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_string());
            Judged::Panicked(message)
        }
    }
}

/// Load-shedding hysteresis on the kernel queue's backlog: start when the backlog
/// reaches half the queue, stop when it is down to an eighth.
#[derive(Clone, Copy, Debug)]
pub struct Shedding {
    high: u32,
    low: u32,
}

impl Shedding {
    /// Thresholds for a kernel queue of `maxlen` packets.
    pub fn for_maxlen(maxlen: u32) -> Shedding {
        Shedding {
            high: (maxlen / 2).max(1),
            low: maxlen / 8,
        }
    }

    /// Whether to shed given whether we are shedding now and the current backlog.
    pub fn next(&self, shedding: bool, backlog: u32) -> bool {
        if shedding {
            backlog > self.low
        } else {
            backlog >= self.high
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::{CtHint, CtState, LinkType, PacketMeta};
    use std::sync::atomic::Ordering;

    fn meta() -> PacketMeta<'static> {
        PacketMeta {
            link: LinkType::RawIp,
            ct: CtHint::Given(CtState::New),
            in_iface: None,
            out_iface: None,
            mark: 0,
            wire_len: 0,
        }
    }

    #[test]
    fn a_panic_accepts_and_counts_internal_error() {
        let engine = Engine::new(&Config::builtin_default());
        // Keep the test output quiet: the default hook would print the panic.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let j = judge(&engine, false, || panic!("boom"));
        std::panic::set_hook(hook);
        assert!(matches!(j, Judged::Panicked(ref m) if m == "boom"), "{j:?}");
        assert_eq!(j.verdict(), Verdict::Accept);
        let c = engine.counters();
        assert_eq!(
            c.by_reason[Reason::InternalError.index()].load(Ordering::Relaxed),
            1
        );
        assert_eq!(c.accepted.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn shedding_accepts_without_deciding() {
        let engine = Engine::new(&Config::builtin_default());
        let j = judge(&engine, true, || {
            unreachable!("must not judge while shedding")
        });
        assert!(matches!(j, Judged::Shed));
        assert_eq!(j.verdict(), Verdict::Accept);
        assert_eq!(
            engine.counters().by_reason[Reason::Shed.index()].load(Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn log_only_never_drops() {
        let cfg = Config::from_toml_str(
            "[daemon]\nmode = \"log-only\"\n[[service]]\nname = \"x\"\nprotocol = \"any\"\ndefault = \"drop\"\n",
            "t",
        )
        .unwrap();
        let engine = Engine::new(&cfg);
        let pkt = [
            0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2, 0, 1, 0, 2, 0,
            8, 0, 0,
        ];
        let j = judge(&engine, false, || engine.decide(1, &meta(), &pkt));
        let Judged::Decided(d) = j else { panic!() };
        assert!(d.would_drop);
        assert_eq!(j.verdict(), Verdict::Accept);
        // Even a decision that says drop under log-only is accepted.
        let forged = Judged::Decided(Decision {
            verdict: Verdict::Drop,
            ..d
        });
        assert_eq!(forged.verdict(), Verdict::Accept);
        let enforce = Judged::Decided(Decision {
            verdict: Verdict::Drop,
            mode: Mode::Enforce,
            ..d
        });
        assert_eq!(enforce.verdict(), Verdict::Drop);
    }

    #[test]
    fn shedding_hysteresis() {
        let s = Shedding::for_maxlen(64);
        assert!(!s.next(false, 31));
        assert!(s.next(false, 32));
        assert!(s.next(true, 9));
        assert!(!s.next(true, 8));
        let tiny = Shedding::for_maxlen(1);
        assert!(tiny.next(false, 1));
        assert!(!tiny.next(true, 0));
    }
}
