//! Traffic for `bench/compare.rs`: short TCP connections and UDP request/response,
//! each with its server, timed per exchange. Prints one JSON line per client run.
//!
//! ```text
//! loadgen tcp-server ADDR:PORT            # answers "ok\n" to each line, then closes
//! loadgen tcp-conns ADDR:PORT SECS THREADS # connect, request, read to EOF, close; repeat
//! loadgen udp-echo ADDR:PORT              # sends each datagram back
//! loadgen udp-rr ADDR:PORT COUNT          # one datagram out, wait for it back; repeat
//! ```
//!
//! Client output: `{"done":N,"failed":F,"secs":S,"per_s":R,"p50_us":..,"p99_us":..}`,
//! where the latency is of one whole exchange (for TCP: connect to close).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(1);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        args.get(i).map(String::as_str).unwrap_or_else(|| {
            eprintln!("usage: loadgen tcp-server|tcp-conns|udp-echo|udp-rr ADDR:PORT [..]");
            std::process::exit(2)
        })
    };
    let addr: SocketAddr = arg(1).parse().unwrap_or_else(|e| {
        eprintln!("loadgen: address {:?}: {e}", arg(1));
        std::process::exit(2)
    });
    let number = |i: usize| -> u64 {
        arg(i).parse().unwrap_or_else(|e| {
            eprintln!("loadgen: argument {} ({:?}): {e}", i + 1, arg(i));
            std::process::exit(2)
        })
    };
    match arg(0) {
        "tcp-server" => tcp_server(addr),
        "tcp-conns" => tcp_conns(addr, number(2), number(3)),
        "udp-echo" => udp_echo(addr),
        "udp-rr" => udp_rr(addr, number(2)),
        other => {
            eprintln!("loadgen: unknown mode {other:?}");
            std::process::exit(2)
        }
    }
}

fn tcp_server(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).expect("bind");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let l = listener.try_clone().expect("clone listener");
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                for stream in l.incoming() {
                    let Ok(mut s) = stream else { continue };
                    s.set_read_timeout(Some(TIMEOUT)).ok();
                    // One request line, one answer; the server closes first.
                    if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                        s.write_all(b"ok\n").ok();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().ok();
    }
}

fn tcp_exchange(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, TIMEOUT) else {
        return false;
    };
    s.set_read_timeout(Some(TIMEOUT)).ok();
    s.set_nodelay(true).ok();
    if s.write_all(b"GET\n").is_err() {
        return false;
    }
    let mut answer = Vec::with_capacity(8);
    s.read_to_end(&mut answer).is_ok() && answer == b"ok\n"
}

fn tcp_conns(addr: SocketAddr, secs: u64, threads: u64) {
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut times, mut failed) = (Vec::new(), 0u64);
                while Instant::now() < until {
                    let t = Instant::now();
                    if tcp_exchange(addr) {
                        times.push(t.elapsed().as_micros() as u64);
                    } else {
                        failed += 1;
                    }
                }
                (times, failed)
            })
        })
        .collect();
    let (mut times, mut failed) = (Vec::new(), 0);
    for w in workers {
        let (t, f) = w.join().expect("worker");
        times.extend(t);
        failed += f;
    }
    report(times, failed, start.elapsed());
}

fn udp_echo(addr: SocketAddr) {
    let sock = UdpSocket::bind(addr).expect("bind");
    let mut buf = [0u8; 2048];
    loop {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            sock.send_to(&buf[..n], from).ok();
        }
    }
}

fn udp_rr(addr: SocketAddr, count: u64) {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(local).expect("bind");
    sock.connect(addr).expect("connect");
    sock.set_read_timeout(Some(TIMEOUT)).ok();
    let start = Instant::now();
    let (mut times, mut failed) = (Vec::with_capacity(count as usize), 0);
    let mut buf = [0u8; 64];
    for i in 0..count {
        let request = i.to_be_bytes();
        let t = Instant::now();
        sock.send(&request).ok();
        // A late answer to an earlier request is skipped, not counted twice.
        let answered = loop {
            match sock.recv(&mut buf) {
                Ok(8) if buf[..8] == request => break true,
                Ok(_) => continue,
                Err(_) => break false,
            }
        };
        if answered {
            times.push(t.elapsed().as_micros() as u64);
        } else {
            failed += 1;
        }
    }
    report(times, failed, start.elapsed());
}

fn report(mut times: Vec<u64>, failed: u64, elapsed: Duration) {
    times.sort_unstable();
    let pct = |p: f64| -> u64 {
        if times.is_empty() {
            return 0;
        }
        times[((times.len() - 1) as f64 * p).round() as usize]
    };
    let secs = elapsed.as_secs_f64();
    println!(
        "{{\"done\":{},\"failed\":{failed},\"secs\":{secs:.3},\"per_s\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
        times.len(),
        times.len() as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
}
