//! The decision engine: bytes, metadata and time in; a verdict and events out. No I/O.

pub mod analysis;
pub mod meta;
pub mod patterns;
pub mod policy;
pub mod rate;
pub mod seq;
pub mod reason;
pub mod tracker;
pub mod flow;
