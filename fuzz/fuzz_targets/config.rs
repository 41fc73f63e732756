//! Config parser: bytes as TOML through `Config::from_toml_str`; a config that parses
//! is compiled into an engine and judges a few probe packets (see `harness.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| {
    let _ = harness::config(data);
});
