//! Packet path: `[control byte][frame]` -> `nfqwall::wire::parse` and `Engine::decide`
//! (see `harness.rs`), one engine for the whole run so flow state carries over.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

#[path = "../harness.rs"]
mod harness;

thread_local! {
    static HARNESS: RefCell<harness::PacketHarness> = RefCell::new(harness::PacketHarness::new());
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        h.borrow_mut().run(data);
    });
});
