//! What the live benches share: the kernel's counters of one queue, and medians.
//! (The verdict process's CPU time is `support::cpu_seconds`, shared with the tests.)

// Each bench uses a part of it.
#![allow(dead_code)]

/// Rules that queue every TCP packet to `port` on queue 0 from mangle INPUT, as
/// `nfqwall rules` renders a queued state: the conntrack state into the mark's state
/// bits first.
pub fn tcp_state_mark_queue(port: u16) -> Vec<String> {
    let mut r = vec!["iptables -t mangle -N NFQ-T".to_string()];
    for (state, code) in [
        ("INVALID", 1u32),
        ("NEW", 2),
        ("ESTABLISHED", 3),
        ("RELATED", 4),
    ] {
        r.push(format!(
            "iptables -t mangle -A NFQ-T -m conntrack --ctstate {state} \
             -j MARK --set-xmark {:#x}/0xe000000",
            code << 25
        ));
    }
    r.push("iptables -t mangle -A NFQ-T -j NFQUEUE --queue-num 0 --queue-bypass".into());
    r.push(format!(
        "iptables -t mangle -A INPUT -p tcp --dport {port} -j NFQ-T"
    ));
    r
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
