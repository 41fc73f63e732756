//! The metrics thread: a minimal HTTP/1.1 server for `GET /metrics`.

use crate::stats::Snapshot;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest request head read (request line and headers); more is refused with 431.
const MAX_REQUEST: usize = 8 * 1024;
/// Longest a client may take to send its request, and to read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A thread answering `GET /metrics`; stopped (and joined) when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `snapshot()` rendered as OpenMetrics on `/metrics`.
    pub fn start(
        addr: SocketAddr,
        snapshot: impl Fn() -> Snapshot + Send + 'static,
    ) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("nfqwall-metrics".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let _ = serve(conn, &snapshot);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address bound (the port chosen when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `GET /metrics` (`head`: HEAD, no body; `openmetrics`: the client's Accept
    /// names OpenMetrics, else the Prometheus text format 0.0.4 is sent).
    Metrics {
        head: bool,
        openmetrics: bool,
    },
    NotFound,
    MethodNotAllowed,
    TooLarge,
    Bad,
}

/// Parses a request head (everything up to the blank line).
fn parse(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else {
        return Request::Bad;
    };
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Bad;
    }
    let path = target.split('?').next().unwrap_or("");
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::MethodNotAllowed,
    };
    let openmetrics = text.lines().skip(1).any(|h| {
        h.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
    });
    if path == "/metrics" {
        Request::Metrics { head, openmetrics }
    } else {
        Request::NotFound
    }
}

/// Reads the request head: up to the blank line, at most [`MAX_REQUEST`] bytes,
/// within [`IO_TIMEOUT`] overall.
fn read_head(conn: &mut TcpStream) -> io::Result<Request> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        conn.set_read_timeout(Some(left))?;
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(Request::Bad);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(parse(&buf[..end]));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(Request::TooLarge);
        }
    }
}

fn serve(mut conn: TcpStream, snapshot: &impl Fn() -> Snapshot) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let req = read_head(&mut conn)?;
    let (status, ctype, body, head) = match req {
        Request::Metrics { head, openmetrics } => {
            let text = super::render(&snapshot());
            if openmetrics {
                ("200 OK", super::CONTENT_TYPE, text, head)
            } else {
                let text = super::to_prometheus_text(&text);
                ("200 OK", super::CONTENT_TYPE_TEXT, text, head)
            }
        }
        Request::NotFound => (
            "404 Not Found",
            "text/plain",
            "only /metrics is served\n".into(),
            false,
        ),
        Request::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics\n".into(),
            false,
        ),
        Request::TooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n".into(),
            false,
        ),
        Request::Bad => (
            "400 Bad Request",
            "text/plain",
            "bad request\n".into(),
            false,
        ),
    };
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(reply.as_bytes())?;
    if !head {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()?;
    let _ = conn.shutdown(std::net::Shutdown::Write);
    // Read what the client still sends (a refused large request), briefly, so that
    // closing does not reset the connection before the client reads the answer.
    conn.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 64 * 1024 {
        match conn.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, req: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(req).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn parses_requests() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x"),
            Request::Metrics {
                head: false,
                openmetrics: false
            }
        );
        assert_eq!(
            parse(b"HEAD /metrics?x=1 HTTP/1.0\r\nAccept: application/openmetrics-text"),
            Request::Metrics {
                head: true,
                openmetrics: true
            }
        );
        assert_eq!(parse(b"GET / HTTP/1.1"), Request::NotFound);
        assert_eq!(parse(b"POST /metrics HTTP/1.1"), Request::MethodNotAllowed);
        assert_eq!(parse(b"GET /metrics"), Request::Bad);
        assert_eq!(parse(b"\xff\xfe"), Request::Bad);
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let s = MetricsServer::start("127.0.0.1:0".parse().unwrap(), || Snapshot {
            packets: 7,
            ..Snapshot::default()
        })
        .unwrap();
        let a = s.local_addr();
        let r = get(a, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(r.contains("\nnfqwall_packets_total 7\n"), "{r}");
        let r = get(
            a,
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
        );
        assert!(r.contains("Content-Type: application/openmetrics-text"));
        assert!(r.ends_with("# EOF\n"));
        assert!(r.contains("\nnfqwall_packets_total 7\n"), "{r}");
        let r = get(a, b"GET /other HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = get(a, b"DELETE /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 405") && r.contains("Allow: GET"),
            "{r}"
        );
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 10_000));
        let r = get(a, &big);
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        // A client that sends nothing is dropped after the timeout, and the next is served.
        let _idle = TcpStream::connect(a).unwrap();
        let t = Instant::now();
        let r = get(a, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
