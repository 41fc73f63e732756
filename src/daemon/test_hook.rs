//! A test-only fault injector, compiled in only with the cargo feature `test-hooks`
//! (never in a default build, so never in the shipped binary).
//!
//! `NFQWALL_TEST_PANIC_SPORT=N`, read once when `nfqwall run` starts: judging any
//! queued TCP or UDP packet with source port `N` panics inside the panic guard, so
//! the live tests (`tests/host_failopen.rs`) can check that a packet whose judging
//! panics is left to the host's rules and counted as `internal_error`. When the hook
//! is armed the daemon says so in its `start` event (`test_panic_sport`) and on
//! stderr. Without the feature [`arm`] returns `None` and [`check`] does nothing.

#[cfg(feature = "test-hooks")]
static PANIC_SPORT: std::sync::OnceLock<Option<u16>> = std::sync::OnceLock::new();

/// Reads the environment once; returns the armed source port, if any.
#[cfg(feature = "test-hooks")]
pub fn arm() -> Option<u16> {
    *PANIC_SPORT.get_or_init(|| {
        let port = std::env::var("NFQWALL_TEST_PANIC_SPORT")
            .ok()?
            .trim()
            .parse()
            .ok()?;
        eprintln!("nfqwall: TEST HOOK ARMED: judging packets from source port {port} panics");
        Some(port)
    })
}

/// Without the `test-hooks` feature: never armed.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn arm() -> Option<u16> {
    None
}

/// Panics if the hook is armed and `payload` (an IPv4 or IPv6 packet) is TCP or UDP
/// from the armed source port. Called inside the panic guard, before the engine.
#[cfg(feature = "test-hooks")]
pub fn check(payload: &[u8]) {
    let Some(port) = PANIC_SPORT.get().copied().flatten() else {
        return;
    };
    let (proto, l4) = match payload.first().map(|b| b >> 4) {
        Some(4) => (payload.get(9).copied(), usize::from(payload[0] & 0x0f) * 4),
        Some(6) => (payload.get(6).copied(), 40),
        _ => return,
    };
    if !matches!(proto, Some(6 | 17)) {
        return;
    }
    if let Some(sp) = payload.get(l4..l4 + 2) {
        if u16::from_be_bytes([sp[0], sp[1]]) == port {
            panic!("test hook: NFQWALL_TEST_PANIC_SPORT={port}");
        }
    }
}

/// Without the `test-hooks` feature: nothing.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn check(_payload: &[u8]) {}
