//! Per (rule, source address) token buckets for `rate` rules, in integer arithmetic.
//!
//! A bucket holds at most `burst` tokens and gains `count` tokens per `period`. To stay
//! exact in integers, the level is kept in units of 1/`period_ns` token: one token is
//! `period_ns` units, and each elapsed nanosecond adds `count` units. So a refill after
//! exactly `period / count` is exactly one token whenever that is a whole number of
//! nanoseconds (and otherwise the first whole nanosecond past it).
//!
//! Time is only the `now_ns` argument. When it goes backwards the bucket neither
//! refills nor forgets its last time, so a clock step back can never mint tokens.
//!
//! The table is bounded by `max_sources` entries over all rules. [`RateLimiter::sweep`]
//! evicts buckets that have refilled to `burst` (a full bucket is indistinguishable
//! from no bucket, so this loses nothing), at most once per second of packet time; it
//! is called with the flow table's expiry ([`crate::engine::Engine::expire`]: the
//! daemon's main loop, the replay's clock), never on the verdict path, whose cost per
//! packet stays one lookup however large the table. When a new source arrives and the
//! table is full, the new source is treated as **under the rate**: the rate rule does
//! not match it. Rate rules are almost always `drop` rules, so this fails
//! open: memory pressure inside nfqwall never turns into dropped traffic. The cost is
//! that a flood from more sources than the table holds escapes rate limits for the
//! sources it could not track; `RateStats::untracked` counts those packets.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::engine::spec::RateLimit;

/// Minimum packet time between two sweeps for refilled buckets.
const SWEEP_INTERVAL_NS: u64 = 1_000_000_000;

/// The constants of one rule's buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketParams {
    /// Tokens added per period.
    pub count: u64,
    /// The period in nanoseconds; also the number of units in one token.
    pub period_ns: u64,
    /// Most tokens a bucket holds.
    pub burst: u64,
}

impl BucketParams {
    /// Parameters for a configured rate.
    pub fn from_limit(limit: RateLimit) -> BucketParams {
        BucketParams {
            count: u64::from(limit.count.max(1)),
            period_ns: limit.period.nanos(),
            burst: u64::from(limit.burst.max(1)),
        }
    }

    fn capacity(&self) -> u128 {
        u128::from(self.burst) * u128::from(self.period_ns)
    }

    /// Level after refilling from `last_ns` to `now_ns` (no refill if time went back).
    fn refilled(&self, level: u128, last_ns: u64, now_ns: u64) -> u128 {
        let elapsed = now_ns.saturating_sub(last_ns);
        // elapsed < 2^64 and count < 2^33, so the product fits in u128 with room.
        let added = u128::from(elapsed) * u128::from(self.count);
        level.saturating_add(added).min(self.capacity())
    }
}

/// One token bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Tokens times `period_ns`.
    level: u128,
    /// Latest time seen; never moves backwards.
    last_ns: u64,
}

/// Counters of a [`RateLimiter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateStats {
    /// Buckets held now.
    pub tracked: usize,
    /// Packets from new sources not tracked because the table was full (treated as under the rate).
    pub untracked: u64,
    /// Buckets evicted because they had refilled.
    pub evicted: u64,
}

/// The token buckets of every `rate` rule of a policy.
#[derive(Debug)]
pub struct RateLimiter {
    params: Vec<BucketParams>,
    buckets: DashMap<(u32, IpAddr), Bucket>,
    max_sources: usize,
    /// Entries reserved or present; kept exact so that the bound is strict.
    len: AtomicUsize,
    last_sweep_ns: AtomicU64,
    untracked: AtomicU64,
    evicted: AtomicU64,
}

impl RateLimiter {
    /// A limiter for rules whose slots index `params`, holding at most `max_sources` buckets.
    pub fn new(params: Vec<BucketParams>, max_sources: usize) -> RateLimiter {
        // Preallocate so that steady state does not allocate; only when rates exist.
        let capacity = if params.is_empty() { 0 } else { max_sources };
        RateLimiter {
            params,
            buckets: DashMap::with_capacity(capacity),
            max_sources,
            len: AtomicUsize::new(0),
            // "Never swept": any packet time is due for the first sweep.
            last_sweep_ns: AtomicU64::new(u64::MAX),
            untracked: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// Takes one token from the bucket of (`slot`, `src`). Returns true if and only if
    /// the bucket was empty, that is the packet is over the rate. An unknown slot, or a
    /// new source when the table is full, counts as under the rate (fail open).
    pub fn over_rate(&self, slot: u32, src: IpAddr, now_ns: u64) -> bool {
        let Some(p) = self.params.get(slot as usize).copied() else {
            return false;
        };
        let key = (slot, src);
        if let Some(mut b) = self.buckets.get_mut(&key) {
            return !take(&p, &mut b, now_ns);
        }
        if !self.reserve() {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.buckets.entry(key) {
            Entry::Occupied(mut e) => {
                // Another thread inserted this source meanwhile; give back our slot.
                self.len.fetch_sub(1, Ordering::Relaxed);
                !take(&p, e.get_mut(), now_ns)
            }
            Entry::Vacant(e) => {
                let mut b = Bucket {
                    level: p.capacity(),
                    last_ns: now_ns,
                };
                let under = take(&p, &mut b, now_ns);
                e.insert(b);
                !under
            }
        }
    }

    /// Counters for monitoring.
    pub fn stats(&self) -> RateStats {
        RateStats {
            tracked: self.len.load(Ordering::Relaxed),
            untracked: self.untracked.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    /// Claims room for one bucket; false if the table is full.
    fn reserve(&self) -> bool {
        self.len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_sources).then_some(n + 1)
            })
            .is_ok()
    }

    /// Evicts refilled buckets, at most once per [`SWEEP_INTERVAL_NS`] of packet time.
    /// A clock that went backwards past the last sweep also allows one, so a replay
    /// that restarts its clock is not locked out.
    pub fn sweep(&self, now_ns: u64) {
        let last = self.last_sweep_ns.load(Ordering::Acquire);
        let due = now_ns < last || now_ns - last >= SWEEP_INTERVAL_NS;
        if !due
            || self
                .last_sweep_ns
                .compare_exchange(last, now_ns, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let mut removed = 0usize;
        self.buckets.retain(|(slot, _), b| {
            let Some(p) = self.params.get(*slot as usize) else {
                removed += 1;
                return false;
            };
            let full = p.refilled(b.level, b.last_ns, now_ns) >= p.capacity();
            if full {
                removed += 1;
            }
            !full
        });
        self.len.fetch_sub(removed, Ordering::AcqRel);
        self.evicted.fetch_add(removed as u64, Ordering::Relaxed);
    }
}

/// Refills `b` to `now_ns` and takes one token; true if and only if there was one.
fn take(p: &BucketParams, b: &mut Bucket, now_ns: u64) -> bool {
    b.level = p.refilled(b.level, b.last_ns, now_ns);
    b.last_ns = b.last_ns.max(now_ns);
    let token = u128::from(p.period_ns);
    if b.level >= token {
        b.level -= token;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::spec::RatePeriod;
    use std::net::Ipv4Addr;

    const SEC: u64 = 1_000_000_000;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
    }

    fn limiter(count: u32, period: RatePeriod, burst: u32, max: usize) -> RateLimiter {
        RateLimiter::new(
            vec![BucketParams::from_limit(RateLimit {
                count,
                period,
                burst,
            })],
            max,
        )
    }

    #[test]
    fn burst_then_over_rate() {
        let l = limiter(50, RatePeriod::Second, 3, 16);
        let t = 5 * SEC;
        assert!(!l.over_rate(0, ip(1), t));
        assert!(!l.over_rate(0, ip(1), t));
        assert!(!l.over_rate(0, ip(1), t));
        assert!(l.over_rate(0, ip(1), t), "burst of 3 exhausted");
        assert!(
            !l.over_rate(0, ip(2), t),
            "another source has its own bucket"
        );
    }

    #[test]
    fn refill_after_exactly_one_interval() {
        // 50/s: one token every 20 ms exactly.
        let l = limiter(50, RatePeriod::Second, 1, 16);
        let t = 7 * SEC;
        assert!(!l.over_rate(0, ip(1), t));
        assert!(l.over_rate(0, ip(1), t));
        assert!(l.over_rate(0, ip(1), t + 20_000_000 - 1), "1 ns early");
        assert!(
            !l.over_rate(0, ip(1), t + 20_000_000),
            "exactly 1/rate later"
        );
        assert!(l.over_rate(0, ip(1), t + 20_000_000));
    }

    #[test]
    fn per_minute_rate_refills_every_period_over_count() {
        // 30/min = one token every 2 s.
        let l = limiter(30, RatePeriod::Minute, 1, 16);
        assert!(!l.over_rate(0, ip(1), 0));
        assert!(l.over_rate(0, ip(1), 2 * SEC - 1));
        assert!(!l.over_rate(0, ip(1), 2 * SEC));
    }

    #[test]
    fn refill_caps_at_burst() {
        let l = limiter(10, RatePeriod::Second, 2, 16);
        assert!(!l.over_rate(0, ip(1), 0));
        assert!(!l.over_rate(0, ip(1), 0));
        assert!(l.over_rate(0, ip(1), 0));
        // An hour idle refills to 2, not 36000.
        let t = 3600 * SEC;
        assert!(!l.over_rate(0, ip(1), t));
        assert!(!l.over_rate(0, ip(1), t));
        assert!(l.over_rate(0, ip(1), t));
    }

    #[test]
    fn clock_going_backwards_mints_nothing() {
        let l = limiter(1, RatePeriod::Second, 1, 16);
        let t = 100 * SEC;
        assert!(!l.over_rate(0, ip(1), t));
        assert!(
            l.over_rate(0, ip(1), t - 50 * SEC),
            "back in time: no refill"
        );
        assert!(l.over_rate(0, ip(1), 0));
        // Time is measured from the latest time seen, not from the step back.
        assert!(l.over_rate(0, ip(1), t + SEC - 1));
        assert!(!l.over_rate(0, ip(1), t + SEC));
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let l = limiter(u32::MAX, RatePeriod::Hour, u32::MAX, 16);
        assert!(!l.over_rate(0, ip(1), 0));
        assert!(!l.over_rate(0, ip(1), u64::MAX));
        assert!(!l.over_rate(0, ip(1), 1));
    }

    #[test]
    fn unknown_slot_is_under_rate() {
        let l = limiter(1, RatePeriod::Second, 1, 16);
        assert!(!l.over_rate(9, ip(1), 0));
        assert_eq!(l.stats().tracked, 0);
    }

    #[test]
    fn a_sweep_evicts_refilled_buckets() {
        let l = limiter(1, RatePeriod::Second, 1, 2);
        assert!(!l.over_rate(0, ip(1), 0));
        assert!(!l.over_rate(0, ip(2), 0));
        // Two seconds later both buckets are full again, so the sweep takes both.
        l.sweep(2 * SEC);
        assert!(!l.over_rate(0, ip(3), 2 * SEC));
        assert_eq!(
            l.stats(),
            RateStats {
                tracked: 1,
                untracked: 0,
                evicted: 2
            }
        );
        assert!(l.over_rate(0, ip(3), 2 * SEC), "the new source is tracked");
    }

    #[test]
    fn full_table_of_active_sources_treats_new_source_as_under_rate() {
        let l = limiter(1, RatePeriod::Second, 1, 2);
        assert!(!l.over_rate(0, ip(1), 0));
        assert!(!l.over_rate(0, ip(2), 0));
        // Nothing has refilled: the newcomer cannot be tracked and is let through,
        // however fast it sends.
        for _ in 0..5 {
            assert!(!l.over_rate(0, ip(3), 0));
        }
        let s = l.stats();
        assert_eq!((s.tracked, s.untracked, s.evicted), (2, 5, 0));
        // Tracked sources keep their limits.
        assert!(l.over_rate(0, ip(1), 0));
    }

    #[test]
    fn sweeps_are_rate_limited_by_packet_time() {
        let l = limiter(1, RatePeriod::Second, 1, 1);
        assert!(!l.over_rate(0, ip(1), 0));
        // At t=0 the first sweep runs, but ip(1) has not refilled.
        l.sweep(0);
        assert!(!l.over_rate(0, ip(2), 0));
        // At 0.5 s the last sweep is less than a second old: no sweep.
        l.sweep(SEC / 2);
        assert!(!l.over_rate(0, ip(2), SEC / 2));
        assert_eq!(l.stats().evicted, 0);
        // At 1 s a sweep is due and ip(1) is full: evicted, ip(2) tracked.
        l.sweep(SEC);
        assert!(!l.over_rate(0, ip(2), SEC));
        assert!(l.over_rate(0, ip(2), SEC));
        assert_eq!(l.stats().evicted, 1);
    }

    #[test]
    fn the_verdict_path_never_sweeps() {
        let l = limiter(1, RatePeriod::Second, 1, 1);
        assert!(!l.over_rate(0, ip(1), 0));
        // Long after ip(1) refilled, a newcomer is still untracked: only a sweep
        // (the engine's expiry, off the verdict path) makes room.
        for t in 1..5 {
            assert!(!l.over_rate(0, ip(2), t * SEC));
        }
        assert_eq!((l.stats().untracked, l.stats().evicted), (4, 0));
        l.sweep(5 * SEC);
        assert!(!l.over_rate(0, ip(2), 5 * SEC));
        assert!(l.over_rate(0, ip(2), 5 * SEC));
        assert_eq!(l.stats().evicted, 1);
    }

    #[test]
    fn zero_capacity_tracks_nothing_and_never_limits() {
        let l = limiter(1, RatePeriod::Second, 1, 0);
        for _ in 0..3 {
            assert!(!l.over_rate(0, ip(1), 0));
        }
        assert_eq!(l.stats().untracked, 3);
    }

    #[test]
    fn bound_is_strict_under_concurrent_inserts() {
        let l = limiter(1, RatePeriod::Second, 1, 100);
        std::thread::scope(|scope| {
            for t in 0..8u8 {
                let l = &l;
                scope.spawn(move || {
                    for i in 0..=255u8 {
                        let src = IpAddr::V4(Ipv4Addr::new(10, t, i, 1));
                        l.over_rate(0, src, 0);
                    }
                });
            }
        });
        let s = l.stats();
        assert_eq!(s.tracked, 100);
        assert_eq!(l.buckets.len(), 100);
        assert_eq!(s.untracked, 8 * 256 - 100);
    }
}
