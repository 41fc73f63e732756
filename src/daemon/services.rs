//! Per-service counters, counted by the queue threads and read by the stats socket
//! and the metrics endpoint.
//!
//! The table is indexed by [`ServiceId`] (the service's position in the config) and
//! swapped whole on reload; a name that survives a reload keeps its counters, so the
//! totals stay monotonic. Counting is one lock-free load and a few relaxed adds.

use crate::config::Config;
use crate::engine::{Decision, Disposition};
use crate::stats::ServiceStats;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One service's counters.
#[derive(Debug, Default)]
pub struct ServiceCount {
    name: String,
    packets: AtomicU64,
    dropped: AtomicU64,
    vouched: AtomicU64,
    passed_on: AtomicU64,
    would_drop: AtomicU64,
}

/// Counters of every service, by id and by name.
#[derive(Debug)]
pub struct ServiceTable {
    by_id: ArcSwap<Vec<Arc<ServiceCount>>>,
    /// Every service ever configured since start, in order of first appearance.
    all: Mutex<Vec<Arc<ServiceCount>>>,
}

impl ServiceTable {
    /// A table for the services of `config`.
    pub fn new(config: &Config) -> ServiceTable {
        let t = ServiceTable {
            by_id: ArcSwap::from_pointee(Vec::new()),
            all: Mutex::new(Vec::new()),
        };
        t.reload(config);
        t
    }

    /// Re-indexes by the services of `config`, keeping the counters of names seen
    /// before. Called right after the engine's policy is swapped: a packet judged by
    /// the old policy and counted after this may land on the new service of its id.
    pub fn reload(&self, config: &Config) {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        let by_id: Vec<Arc<ServiceCount>> = config
            .services
            .iter()
            .map(|s| {
                if let Some(c) = all.iter().find(|c| c.name == s.name) {
                    return Arc::clone(c);
                }
                let c = Arc::new(ServiceCount {
                    name: s.name.clone(),
                    ..ServiceCount::default()
                });
                all.push(Arc::clone(&c));
                c
            })
            .collect();
        self.by_id.store(Arc::new(by_id));
    }

    /// Counts one judged packet against its service (none: no service matched).
    #[inline]
    pub fn count(&self, d: &Decision) {
        let Some(sid) = d.service else { return };
        let t = self.by_id.load();
        let Some(c) = t.get(usize::from(sid.0)) else {
            return;
        };
        c.packets.fetch_add(1, Ordering::Relaxed);
        match d.disposition {
            Disposition::Drop => &c.dropped,
            Disposition::Vouch => &c.vouched,
            Disposition::PassOn => &c.passed_on,
        }
        .fetch_add(1, Ordering::Relaxed);
        if d.would_drop {
            c.would_drop.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters: the services in force in config order, then the ones a reload
    /// removed.
    pub fn snapshot(&self) -> Vec<ServiceStats> {
        let current = self.by_id.load_full();
        let all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        let removed = all
            .iter()
            .filter(|c| !current.iter().any(|k| Arc::ptr_eq(k, c)));
        current
            .iter()
            .chain(removed)
            .map(|c| ServiceStats {
                service: c.name.clone(),
                packets: c.packets.load(Ordering::Relaxed),
                dropped: c.dropped.load(Ordering::Relaxed),
                vouched: c.vouched.load(Ordering::Relaxed),
                passed_on: c.passed_on.load(Ordering::Relaxed),
                would_drop: c.would_drop.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_names_across_reloads() {
        let two = Config::from_toml_str(
            "[[service]]\nname = \"a\"\nprotocol = \"tcp\"\n[[service]]\nname = \"b\"\nprotocol = \"udp\"\n",
            "x",
        )
        .unwrap();
        let t = ServiceTable::new(&two);
        let mut d = decision();
        d.service = Some(crate::engine::policy::ServiceId(1));
        t.count(&d);
        d.disposition = Disposition::Drop;
        t.count(&d);
        // b moves to id 0, a is removed.
        let one =
            Config::from_toml_str("[[service]]\nname = \"b\"\nprotocol = \"udp\"\n", "x").unwrap();
        t.reload(&one);
        d.service = Some(crate::engine::policy::ServiceId(0));
        t.count(&d);
        let s = t.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].service.as_str(), s[0].packets, s[0].dropped),
            ("b", 3, 2)
        );
        assert_eq!((s[1].service.as_str(), s[1].packets), ("a", 0));
    }

    /// A plain pass-on decision of no service.
    pub(crate) fn decision() -> Decision {
        Decision {
            mode: crate::engine::policy::Mode::LogOnly,
            ..Decision::EMPTY
        }
    }
}
