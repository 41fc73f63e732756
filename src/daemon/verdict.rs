//! One packet's way from the engine to a kernel verdict: load shedding, the panic
//! guard, and [`map`], the one small pure function that turns a disposition into an
//! NFQUEUE verdict and a mark. Kept apart from the socket so it is unit-tested.

use crate::engine::policy::Mode;
use crate::engine::{Decision, Disposition, Engine, Reason};
use crate::rules::Marks;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// How a packet was handled.
#[derive(Debug)]
pub enum Judged {
    /// The engine decided.
    Decided(Decision),
    /// Not judged: the thread is shedding load.
    Shed,
    /// Judging panicked; not judged. Holds the panic message.
    Panicked(String),
}

/// The NFQUEUE verdict for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelVerdict {
    /// `NF_ACCEPT`: from `mangle INPUT` the packet goes on to `filter`, where the
    /// host's rules (and, with the vouch bit, nfqwall's one accept) decide.
    Accept,
    /// `NF_DROP`.
    Drop,
}

/// What to send the kernel for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The verdict.
    pub verdict: KernelVerdict,
    /// The new packet mark, or `None` to leave the mark as it came.
    pub mark: Option<u32>,
}

/// Maps how a packet was handled to its kernel verdict and mark. `mark` is the mark
/// the packet was queued with.
///
/// | handled                         | verdict | mark                                    |
/// |---------------------------------|---------|-----------------------------------------|
/// | drop (enforce)                  | drop    | -                                       |
/// | pass on to the host's rules     | accept  | nfqwall's bits cleared (judged)         |
/// | vouch (enforce, INVALID)        | accept  | bits cleared, vouch bit set             |
/// | shed, panicked                  | accept  | unchanged: the state bits say "not judged" |
///
/// A rule's `mark` replaces the packet's other bits, never nfqwall's. Log-only never
/// drops and never vouches, whatever the decision says.
pub fn map(judged: &Judged, mark: u32, marks: Marks) -> Mapped {
    let owned = marks.owned();
    let d = match judged {
        Judged::Decided(d) => d,
        Judged::Shed | Judged::Panicked(_) => {
            return Mapped {
                verdict: KernelVerdict::Accept,
                mark: None,
            }
        }
    };
    let disposition = match (d.mode, d.disposition) {
        (Mode::LogOnly, _) => Disposition::PassOn,
        (Mode::Enforce, x) => x,
    };
    let others = match d.mark {
        Some(rule_mark) => rule_mark & !owned,
        None => mark & !owned,
    };
    match disposition {
        Disposition::Drop => Mapped {
            verdict: KernelVerdict::Drop,
            mark: None,
        },
        Disposition::PassOn => Mapped {
            verdict: KernelVerdict::Accept,
            mark: Some(others),
        },
        Disposition::Vouch => Mapped {
            verdict: KernelVerdict::Accept,
            mark: Some(others | marks.vouch),
        },
    }
}

/// Judges one packet with `decide`, unless `shedding`; a panic inside `decide` is
/// caught. Shed and panicked packets are counted in the engine's counters
/// ([`Reason::Shed`], [`Reason::InternalError`]).
pub fn judge(engine: &Engine, shedding: bool, decide: impl FnOnce() -> Decision) -> Judged {
    if shedding {
        engine.count_unjudged(Reason::Shed);
        return Judged::Shed;
    }
    match catch_unwind(AssertUnwindSafe(decide)) {
        Ok(d) => Judged::Decided(d),
        Err(payload) => {
            engine.count_unjudged(Reason::InternalError);
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

    fn marks() -> Marks {
        Marks::of(&Config::builtin_default().daemon)
    }

    /// A decision of `mode` with `disposition` (the rest from a real decision).
    fn decided(mode: Mode, disposition: Disposition, rule_mark: Option<u32>) -> Judged {
        let engine = Engine::new(&Config::builtin_default());
        let d = engine.decide(1, &meta(), &[0x45, 0]);
        Judged::Decided(Decision {
            mode,
            disposition,
            mark: rule_mark,
            ..d
        })
    }

    #[test]
    fn a_panic_is_counted_and_left_to_the_host_with_its_state_bits() {
        let engine = Engine::new(&Config::builtin_default());
        // Keep the test output quiet: the default hook would print the panic.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let j = judge(&engine, false, || panic!("boom"));
        std::panic::set_hook(hook);
        assert!(matches!(j, Judged::Panicked(ref m) if m == "boom"), "{j:?}");
        let queued = marks().state_value(CtState::Invalid) | 0x4000;
        assert_eq!(
            map(&j, queued, marks()),
            Mapped {
                verdict: KernelVerdict::Accept,
                mark: None
            }
        );
        let c = engine.counters();
        assert_eq!(c.by_reason[Reason::InternalError.index()], 1);
    }

    #[test]
    fn shedding_does_not_judge_and_keeps_the_state_bits() {
        let engine = Engine::new(&Config::builtin_default());
        let j = judge(&engine, true, || {
            unreachable!("must not judge while shedding")
        });
        assert!(matches!(j, Judged::Shed));
        assert_eq!(map(&j, 0x0200_0000, marks()).mark, None);
        assert_eq!(engine.counters().by_reason[Reason::Shed.index()], 1);
    }

    #[test]
    fn pass_on_clears_nfqwalls_bits_and_keeps_the_operators() {
        let m = marks();
        let queued = m.state_value(CtState::New) | 0x4000;
        let j = decided(Mode::Enforce, Disposition::PassOn, None);
        assert_eq!(
            map(&j, queued, m),
            Mapped {
                verdict: KernelVerdict::Accept,
                mark: Some(0x4000)
            }
        );
    }

    #[test]
    fn only_an_enforce_vouch_sets_the_vouch_bit() {
        let m = marks();
        let queued = m.state_value(CtState::Invalid);
        let vouch = decided(Mode::Enforce, Disposition::Vouch, None);
        assert_eq!(map(&vouch, queued, m).mark, Some(m.vouch));
        let log_only = decided(Mode::LogOnly, Disposition::Vouch, None);
        assert_eq!(
            map(&log_only, queued, m),
            Mapped {
                verdict: KernelVerdict::Accept,
                mark: Some(0)
            },
            "log-only is passive: no vouch, whatever the decision says"
        );
    }

    #[test]
    fn log_only_never_drops() {
        let m = marks();
        let drop = decided(Mode::LogOnly, Disposition::Drop, None);
        assert_eq!(map(&drop, 0, m).verdict, KernelVerdict::Accept);
        let enforce = decided(Mode::Enforce, Disposition::Drop, None);
        assert_eq!(map(&enforce, 0, m).verdict, KernelVerdict::Drop);
    }

    #[test]
    fn a_rule_mark_never_touches_nfqwalls_bits() {
        let m = marks();
        let queued = m.state_value(CtState::Invalid) | 0x4000;
        let j = decided(Mode::Enforce, Disposition::Vouch, Some(0xffff_ffff));
        assert_eq!(map(&j, queued, m).mark, Some(!m.owned() | m.vouch));
    }

    #[test]
    fn log_only_decisions_say_what_enforce_would_do() {
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
        let Judged::Decided(d) = &j else { panic!() };
        assert!(d.would_drop);
        assert_eq!(d.disposition, Disposition::PassOn);
        assert_eq!(map(&j, 0, marks()).verdict, KernelVerdict::Accept);
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
