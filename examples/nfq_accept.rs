//! The `nfq` crate's minimal accept loop, a baseline for `bench/compare.rs`: binds one
//! queue, configured as nfqwall configures its own (copy range 512, queue length 4096,
//! fail-open), and accepts every packet with its own verdict, judging nothing.
//!
//! Usage: `nfq_accept QUEUE` (root). Runs until killed.

fn main() -> std::io::Result<()> {
    let queue_num: u16 = std::env::args()
        .nth(1)
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    let mut queue = nfq::Queue::open()?;
    queue.bind(queue_num)?;
    queue.set_copy_range(queue_num, 512)?;
    queue.set_queue_max_len(queue_num, 4096)?;
    queue.set_fail_open(queue_num, true)?;
    loop {
        let mut msg = queue.recv()?;
        msg.set_verdict(nfq::Verdict::Accept);
        queue.verdict(msg)?;
    }
}
