//! nfqwall: a userspace inspection firewall for packets that Linux conntrack doubts.
//!
//! The crate is a sans-IO library. [`engine`] takes a packet's bytes, its metadata and
//! its timestamp, and returns a verdict with a named reason and the retransmission
//! patterns it saw; it never reads a clock, a socket or a file. Two thin front ends
//! move bytes into it: the live NFQUEUE loop and the offline capture replay.

pub mod config;
pub mod ctnetlink;
pub mod daemon;
pub mod engine;
pub mod events;
pub mod metrics;
pub mod netlink;
pub mod nflog;
pub mod nfqueue;
pub mod render;
pub mod replay;
pub mod report;
pub mod rules;
pub mod stats;
pub mod wire;
