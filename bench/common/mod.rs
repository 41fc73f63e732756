//! What the live benches share: the verdict process's CPU time and the kernel's
//! counters of one queue.

// Each bench uses a part of it.
#![allow(dead_code)]

/// utime + stime of process `pid`, in seconds (0 for pid 0: no verdict process).
pub fn cpu_seconds(pid: u32) -> f64 {
    if pid == 0 {
        return 0.0;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after it start at state (field 3).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// One line of `/proc/net/netfilter/nfnetlink_queue`.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueCounters {
    /// Netlink port id of the bound program (0: nobody bound).
    pub peer_portid: u64,
    /// Ids handed out: packets queued since the queue was bound.
    pub id_sequence: u64,
    /// Packets lost because the program's socket was full.
    pub user_dropped: u64,
    /// Packets lost because the queue was full.
    pub queue_dropped: u64,
}

/// Queue `num`'s counters in `ns`, `None` while no program has bound it.
pub fn queue_counters(ns: &super::support::Netns, num: u16) -> Option<QueueCounters> {
    let text = ns.sh_out("cat /proc/net/netfilter/nfnetlink_queue");
    text.lines().find_map(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        (f.len() >= 8 && f[0] == u64::from(num)).then(|| QueueCounters {
            peer_portid: f[1],
            queue_dropped: f[5],
            user_dropped: f[6],
            id_sequence: f[7],
        })
    })
}

/// The median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
