//! The packet-mark contract between nfqwall's rendered ruleset and its verdicts.
//!
//! Two parts of the mark are nfqwall's (both configurable, `[daemon]`):
//!
//! - the **state bits** (`state_mask`, three adjacent bits): the rule that queues a
//!   packet writes its conntrack state there ([`Marks::state_value`]), so nfqwall
//!   knows the state exactly even on kernels that attach none to queued packets.
//!   nfqwall clears them when it judges the packet; a packet that reaches `filter`
//!   with them still set was queued and never judged (queue bypass, the kernel's
//!   fail-open, shedding, a panic), which a counter rule there counts.
//! - the **vouch bit** (`vouch_mark`): set by nfqwall's verdict on an INVALID packet
//!   it showed benign in enforce mode, and nowhere else. The one rule at the top of
//!   `filter INPUT` that lets a packet skip a host rule accepts only INVALID packets
//!   carrying it.
//!
//! The first rule of nfqwall's `mangle INPUT` chain clears both on every packet, so
//! no earlier rule or tool can hand a packet in pre-vouched.

use crate::config::DaemonConfig;
use crate::engine::meta::CtState;

/// nfqwall's mark bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marks {
    /// The vouch bit.
    pub vouch: u32,
    /// The three state bits.
    pub state_mask: u32,
}

/// State codes in the state bits, in this order from 1; 0 means "no state written"
/// (not queued, or judged already).
const CODES: [CtState; 5] = [
    CtState::Invalid,
    CtState::New,
    CtState::Established,
    CtState::Related,
    CtState::Untracked,
];

impl Marks {
    /// The marks of a daemon config.
    pub fn of(d: &DaemonConfig) -> Marks {
        Marks {
            vouch: d.vouch_mark,
            state_mask: d.state_mask,
        }
    }

    /// Every bit nfqwall owns.
    pub fn owned(self) -> u32 {
        self.vouch | self.state_mask
    }

    /// The state bits' value for `state`.
    pub fn state_value(self, state: CtState) -> u32 {
        let code = CODES.iter().position(|s| *s == state).unwrap_or(0) as u32 + 1;
        (code << self.state_mask.trailing_zeros()) & self.state_mask
    }

    /// The state the queuing rule wrote into `mark`, if any.
    pub fn state_of(self, mark: u32) -> Option<CtState> {
        let code = (mark & self.state_mask) >> self.state_mask.trailing_zeros();
        CODES.get((code as usize).checked_sub(1)?).copied()
    }

    /// Every state in code order (for rendering the state-writing rules).
    pub fn states() -> &'static [CtState] {
        &CODES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn states_round_trip_through_the_mark_and_leave_other_bits_alone() {
        let m = Marks::of(&Config::builtin_default().daemon);
        assert_eq!(m.owned(), 0x1e00_0000);
        for &s in Marks::states() {
            let v = m.state_value(s);
            assert_eq!(v & !m.state_mask, 0);
            assert_eq!(m.state_of(v | 0x4000 | 0xff_0000), Some(s), "{s}");
        }
        assert_eq!(m.state_value(CtState::Invalid), 0x0200_0000);
        assert_eq!(m.state_of(0), None);
        assert_eq!(m.state_of(0x0e00_0000), None, "code 7 is no state");
        assert_eq!(m.state_of(m.vouch), None);
    }
}
