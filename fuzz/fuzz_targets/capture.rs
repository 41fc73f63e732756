//! Capture reader: bytes as a pcap/pcapng file, read frame by frame and replayed
//! through a fresh engine (see `harness.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nfqwall::config::Config;
use std::sync::OnceLock;

#[path = "../harness.rs"]
mod harness;

static CONFIG: OnceLock<Config> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    harness::capture(data, CONFIG.get_or_init(harness::packet_config));
});
