//! The engine's counters: one shard per thread that judges, each on cache lines of
//! its own, summed when they are read.
//!
//! Every judged packet bumps several counters. Shared by all queue threads, each
//! increment would pull the counter's cache line away from the core that bumped it
//! last; with a shard per thread the lines stay where they are written, and only a
//! snapshot (stats, metrics, the stop event) reads them all.
//!
//! A thread that counts claims a shard of its own for its life (the daemon's queue
//! and feed threads), and gives it back when it ends: only that thread writes it, so
//! an increment is a plain load and store, no locked read-modify-write. A returned
//! shard keeps its counts; its next owner adds to them. While all 16 are claimed,
//! further threads share one overflow shard with atomic increments.

use crate::engine::patterns::Pattern;
use crate::engine::reason::{Reason, REASON_KINDS};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Shards that a thread can own; threads beyond them share the overflow shard.
const SHARDS: usize = 16;
const _: () = assert!(SHARDS <= 32);
/// The overflow shard's index.
const SHARED: usize = SHARDS;

/// Declares the counters once: [`CounterShard`] (atomics, one per shard),
/// [`Counters`] (the sums) and the summing. Every counter is a `u64`; the two
/// indexed families (`by_reason`, `by_pattern`) are added by hand.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// One shard's counters. Atomics so that a snapshot may read them while they
        /// are written; how they are incremented is [`Local::add`]'s business.
        #[derive(Debug)]
        pub struct CounterShard {
            $(pub $name: AtomicU64,)*
            pub by_reason: [AtomicU64; REASON_KINDS],
            pub by_pattern: [AtomicU64; Pattern::ALL.len()],
        }

        impl CounterShard {
            fn new() -> CounterShard {
                CounterShard {
                    $($name: AtomicU64::new(0),)*
                    by_reason: core::array::from_fn(|_| AtomicU64::new(0)),
                    by_pattern: core::array::from_fn(|_| AtomicU64::new(0)),
                }
            }
        }

        /// The engine's counters since start, summed over its threads.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Counters {
            $($(#[$doc])* pub $name: u64,)*
            /// Verdicts by reason, indexed by [`Reason::index`].
            pub by_reason: [u64; REASON_KINDS],
            /// Packets by pattern, indexed like [`Pattern::ALL`].
            pub by_pattern: [u64; Pattern::ALL.len()],
        }

        impl Counters {
            fn zero() -> Counters {
                Counters {
                    $($name: 0,)*
                    by_reason: [0; REASON_KINDS],
                    by_pattern: [0; Pattern::ALL.len()],
                }
            }

            /// Adds one shard's counts (each read once).
            fn add(&mut self, c: &CounterShard) {
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                $(self.$name += get(&c.$name);)*
                for (sum, a) in self.by_reason.iter_mut().zip(&c.by_reason) {
                    *sum += get(a);
                }
                for (sum, a) in self.by_pattern.iter_mut().zip(&c.by_pattern) {
                    *sum += get(a);
                }
            }
        }
    };
}

counters! {
    /// Packets judged.
    packets,
    /// Accept verdicts.
    accepted,
    /// Drop verdicts.
    dropped,
    /// Log-only accepts that enforce mode would have dropped.
    would_drop,
    /// INVALID packets let past the host's INVALID drop on evidence.
    vouched,
    /// Log-only passes that enforce mode would have let past the INVALID drop.
    would_accept,
    /// Packets handed on to the host's rules.
    passed_on,
    /// Packets whose displaced SACK blocks were rewritten.
    sack_repaired,
    /// SACK blocks rewritten into the data sender's space.
    sack_blocks_rewritten,
    /// SACK blocks of a repairing service passed on unchanged: the offset not yet
    /// proven, the blocks not verified against data the feed showed sent, or not
    /// displaced at all.
    sack_blocks_unchanged,
    /// Packets of the shadow feed the engine learned from
    /// ([`crate::engine::Engine::observe`]): never judged, never counted as verdicts.
    fed,
    /// Fed packets that started a flow the engine did not know (picked up).
    fed_pickups,
    /// SACK-bearing packets the feed copied for the offset learner
    /// ([`crate::engine::Engine::observe_sack`]) that reached a flow it knows.
    fed_sack,
    /// Times the feed reported a loss ([`crate::engine::Engine::feed_lost`]).
    feed_losses,
}

/// The calling thread's shard, and whether it is the thread's own.
#[derive(Clone, Copy)]
pub struct Local<'a> {
    pub shard: &'a CounterShard,
    own: bool,
}

impl Local<'_> {
    /// Adds `n` to `counter`, a field of this shard.
    #[inline]
    pub fn add(&self, counter: &AtomicU64, n: u64) {
        if self.own {
            // The only writer: no other thread's increment can fall between the two.
            counter.store(
                counter.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// A shard alone on its cache lines (128 bytes: the adjacent-line prefetcher pairs
/// 64-byte lines).
#[repr(align(128))]
struct Padded(CounterShard);

/// All shards.
pub struct CounterShards {
    shards: Box<[Padded; SHARDS + 1]>,
}

/// The shards no thread owns now, one bit each.
static FREE: AtomicU32 = AtomicU32::new(u32::MAX >> (32 - SHARDS));

/// A thread's claim on a shard, given back when the thread ends.
struct Claim(usize);

impl Claim {
    fn take() -> Claim {
        let mut free = FREE.load(Ordering::Acquire);
        loop {
            if free == 0 {
                return Claim(SHARED);
            }
            let i = free.trailing_zeros() as usize;
            // Acquire: the counts the previous owner stored are seen before adding.
            match FREE.compare_exchange_weak(
                free,
                free & !(1 << i),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Claim(i),
                Err(now) => free = now,
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.0 < SHARDS {
            // Release: this thread's last counts are stored before another owns it.
            FREE.fetch_or(1 << self.0, Ordering::Release);
        }
    }
}

thread_local! {
    static SHARD: Claim = Claim::take();
}

impl CounterShards {
    pub fn new() -> CounterShards {
        CounterShards {
            shards: Box::new(core::array::from_fn(|_| Padded(CounterShard::new()))),
        }
    }

    /// The calling thread's shard (the overflow shard while the thread ends).
    #[inline]
    pub fn local(&self) -> Local<'_> {
        let i = SHARD.try_with(|c| c.0).unwrap_or(SHARED);
        Local {
            shard: &self.shards[i].0,
            own: i < SHARDS,
        }
    }

    /// Counts a packet left unjudged outside the engine (load shedding, internal
    /// error): accepted by nfqwall, so that the host's own rules decide.
    pub fn count_unjudged(&self, reason: Reason) {
        let l = self.local();
        l.add(&l.shard.packets, 1);
        l.add(&l.shard.accepted, 1);
        l.add(&l.shard.by_reason[reason.index()], 1);
    }

    /// The sums over all shards now (each counter read once; counts taken while the
    /// snapshot runs may land in it or in the next).
    pub fn snapshot(&self) -> Counters {
        let mut s = Counters::zero();
        for Padded(c) in self.shards.iter() {
            s.add(c);
        }
        s
    }
}

impl Default for CounterShards {
    fn default() -> Self {
        CounterShards::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The shards are the process's: tests that claim many at once run one at a time.
    static CLAIMS: Mutex<()> = Mutex::new(());

    #[test]
    fn counts_from_several_threads_sum_in_the_snapshot() {
        let _one = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
        let shards = CounterShards::new();
        std::thread::scope(|s| {
            // More threads at once than shards: some share the overflow shard.
            for _ in 0..(SHARDS + 3) {
                s.spawn(|| {
                    for _ in 0..1000 {
                        let l = shards.local();
                        l.add(&l.shard.packets, 1);
                    }
                    shards.count_unjudged(Reason::Shed);
                });
            }
        });
        let c = shards.snapshot();
        let threads = (SHARDS + 3) as u64;
        assert_eq!(c.packets, threads * 1001);
        assert_eq!(c.accepted, threads);
        assert_eq!(c.by_reason[Reason::Shed.index()], threads);
    }

    #[test]
    fn a_shard_given_back_keeps_its_counts_for_the_next_owner() {
        let _one = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
        let shards = CounterShards::new();
        for _ in 0..(3 * SHARDS) {
            // One thread at a time: each claims a freed shard, never the overflow.
            std::thread::scope(|s| {
                s.spawn(|| {
                    let l = shards.local();
                    assert!(l.own, "a thread alone got the overflow shard");
                    l.add(&l.shard.packets, 2);
                });
            });
        }
        assert_eq!(shards.snapshot().packets, 6 * SHARDS as u64);
    }

    #[test]
    fn shards_do_not_share_cache_lines() {
        assert_eq!(core::mem::align_of::<Padded>(), 128);
        assert_eq!(core::mem::size_of::<Padded>() % 128, 0);
    }
}
