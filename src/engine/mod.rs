//! The decision engine: bytes, metadata and time in; a verdict and events out. No I/O.
//!
//! [`Engine::decide`] is the whole contract. Parsing ([`crate::wire`]) feeds the
//! flow table ([`flow`]), where each TCP flow carries the liberal tracker
//! ([`tracker`]) that classifies doubtful segments and the Wireshark-compatible
//! analysis ([`analysis`]) that names retransmission patterns; then the stateless
//! rules ([`policy`]) and the mode decide the verdict, with a named [`reason`].

pub mod analysis;
pub mod counters;
pub mod decide;
pub mod flow;
pub mod meta;
pub mod patterns;
pub mod peers;
pub mod policy;
pub mod policy_slot;
pub mod rate;
pub mod reason;
pub mod sack_repair;
pub mod seq;
pub mod spec;
pub mod tracker;

pub use counters::Counters;
pub use decide::{Decision, Disposition, Engine, SackRewrite, Tuple, Verdict};
pub use meta::{CtHint, CtState, LinkType, PacketMeta};
pub use reason::Reason;
