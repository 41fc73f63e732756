//! The code the fuzz targets run, shared with `tests/fuzz_corpus.rs` so that the stable
//! corpus replay goes through exactly the same paths as libFuzzer does.
//!
//! Included with `#[path]` from both crates; it depends only on `nfqwall` and
//! `serde_json`, and uses only nfqwall's public API.

#![allow(dead_code)]

use nfqwall::config::{Config, Mode};
use nfqwall::engine::{CtHint, CtState, Engine, LinkType, PacketMeta, Verdict};
use nfqwall::replay::capture::CaptureReader;
use nfqwall::replay::output::{packet_json, write_summary};
use nfqwall::replay::{replay, FrameOutcome, Visibility};
use std::io::Cursor;

/// The engine configuration the packet target judges with: small tables so that the
/// full-table paths are reached, short timeouts so that expiry is, one log-only
/// service (log-only must never drop), SACK repair, rate, length and flag rules.
pub const PACKET_CONFIG: &str = r#"
[daemon]
mode = "enforce"
log_rate_per_reason = 5

[engine]
max_flows = 64
max_peers = 16
max_rate_sources = 16
timeouts = { syn = 5, established = 60, closing = 5, closed = 2, udp = 3, other = 3 }

[[service]]
name = "web-logonly"
protocol = "tcp"
ports = [80, 443, "8000-8080"]
mode = "log-only"
sack_repair = true

[[service.rule]]
name = "new-needs-syn"
action = "drop"
ct_state = ["new"]
tcp_flags = "!syn"

[[service]]
name = "dns-udp"
protocol = "udp"
ports = [53]
stateless = true
queue = ["untracked"]

[[service.rule]]
name = "low-source-port"
action = "drop"
source_ports = ["0-1023"]

[[service.rule]]
name = "per-source-rate"
action = "drop"
rate = "20/s"
burst = 5

[[service]]
name = "tcp-enforce"
protocol = "tcp"
sack_repair = true

[[service.rule]]
name = "via-net"
action = "log"
source = ["10.0.0.0/8", "fd00::/8"]
ct_state = ["invalid"]

[[service.rule]]
name = "scanner"
action = "drop"
source = ["203.0.113.0/24", "2001:db8:bad::/48"]

[[service.rule]]
name = "syn-flood"
action = "drop"
ct_state = ["new"]
tcp_flags = "syn,!ack"
rate = "20/s"
burst = 5

[[service.rule]]
name = "oversized"
action = "drop"
length = "1400-65535"
mark = 7

[[service]]
name = "icmp"
protocol = "icmp"
default = "drop"

[[service.rule]]
name = "small-icmp"
action = "accept"
length = "0-128"

[[service]]
name = "rest"
protocol = "any"
"#;

/// Parses [`PACKET_CONFIG`] (a bug in it is a bug in the harness, not a finding).
pub fn packet_config() -> Config {
    Config::from_toml_str(PACKET_CONFIG, "fuzz/harness.rs").expect("PACKET_CONFIG parses")
}

/// Clock steps selected by the top five bits of a packet input's first byte.
const STEPS_NS: [u64; 32] = [
    0,
    0,
    0,
    0,
    1_000,
    10_000,
    100_000,
    1_000_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    1_000_000_000,
    2_000_000_000,
    3_000_000_000,
    5_000_000_000,
    6_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    61_000_000_000,
    120_000_000_000,
    300_000_000_000,
    3_600_000_000_000,
    7_200_000_000_000,
    86_400_000_000_000,
    // Steps that go backwards: timestamps are not monotonic in captures.
    u64::MAX - 999_999_999,
    u64::MAX - 59_999_999_999,
];

/// The packet target's state: one engine whose flow, peer, rate and repair tables
/// carry over from one input to the next, and the capture-time clock.
pub struct PacketHarness {
    engine: Engine,
    now_ns: u64,
    next_expire: u64,
    frame: u64,
    out: String,
    buf: Vec<u8>,
}

impl Default for PacketHarness {
    fn default() -> Self {
        PacketHarness::new()
    }
}

/// Decodes a packet input's first byte into the metadata the engine gets and a clock
/// step: bit 0 the link type (RawIp, Ethernet), bits 1-2 the conntrack hint (Auto,
/// Given(New), Given(Invalid), Given(Untracked)), bits 3-7 an index into the clock steps.
pub fn packet_meta(control: u8, wire_len: u32) -> (PacketMeta<'static>, u64) {
    let link = if control & 1 == 0 {
        LinkType::RawIp
    } else {
        LinkType::Ethernet
    };
    let ct = match (control >> 1) & 3 {
        0 => CtHint::Auto,
        1 => CtHint::Given(CtState::New),
        2 => CtHint::Given(CtState::Invalid),
        _ => CtHint::Given(CtState::Untracked),
    };
    let meta = PacketMeta {
        link,
        ct,
        in_iface: None,
        out_iface: None,
        mark: 0,
        wire_len,
    };
    (meta, STEPS_NS[usize::from(control >> 3)])
}

impl PacketHarness {
    /// A fresh engine on [`PACKET_CONFIG`], its clock at 2023-11-14.
    pub fn new() -> PacketHarness {
        PacketHarness {
            engine: Engine::new(&packet_config()),
            now_ns: 1_700_000_000_000_000_000,
            next_expire: 0,
            frame: 0,
            out: String::new(),
            buf: Vec::new(),
        }
    }

    /// The engine (for assertions on its counters).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// One input: `[control byte][frame bytes]` (see [`packet_meta`]). The frame is
    /// parsed by `nfqwall::wire`, judged (RawIp through the live path, `decide_mut`,
    /// which may rewrite SACK blocks; Ethernet through `decide`, as replay does) and
    /// rendered as the replay's per-packet JSON. Returns the decision's verdict.
    pub fn run(&mut self, data: &[u8]) -> Option<Verdict> {
        let (&control, frame) = data.split_first()?;
        let (meta, step) = packet_meta(control, 0);
        self.now_ns = self.now_ns.wrapping_add(step);
        if self.now_ns >= self.next_expire || self.next_expire - self.now_ns > 10_000_000_000 {
            self.engine.expire(self.now_ns);
            self.next_expire = self.now_ns.saturating_add(1_000_000_000);
        }
        self.frame += 1;

        let _ = nfqwall::wire::parse(meta.link, frame, 0);
        // A snap length: the same bytes, claimed to be longer on the wire.
        let _ = nfqwall::wire::parse(meta.link, frame, frame.len() as u32 + 1460);

        let decision = if meta.link == LinkType::RawIp {
            self.buf.clear();
            self.buf.extend_from_slice(frame);
            let tcp_sum_ok = tcp_checksum_ok(&self.buf);
            let d = self.engine.decide_mut(self.now_ns, &meta, &mut self.buf);
            if d.rewritten {
                assert!(
                    nfqwall::wire::parse_ip(&self.buf, self.buf.len()).is_ok(),
                    "a SACK rewrite left a packet that no longer parses"
                );
                if tcp_sum_ok == Some(true) {
                    assert_eq!(
                        tcp_checksum_ok(&self.buf),
                        Some(true),
                        "a SACK rewrite broke a valid TCP checksum"
                    );
                }
            } else {
                assert_eq!(&self.buf[..], frame, "bytes changed without a rewrite");
            }
            d
        } else {
            self.engine.decide(self.now_ns, &meta, frame)
        };
        if decision.mode == Mode::LogOnly {
            assert_eq!(decision.verdict, Verdict::Accept, "log-only dropped");
        }
        let policy = self.engine.policy();
        self.out.clear();
        let outcome = FrameOutcome {
            frame: self.frame,
            ts_ns: self.now_ns,
            decision,
            visibility: "full",
        };
        packet_json(&mut self.out, &outcome, &policy);
        check_json_line(&self.out);
        Some(decision.verdict)
    }
}

/// Checks that `line` is one JSON object followed by a newline.
pub fn check_json_line(line: &str) {
    let body = line
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("no newline: {line:?}"));
    assert!(!body.contains('\n'), "more than one line: {line:?}");
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert!(v.is_object(), "not an object: {body}");
}

/// Whether a raw IP packet's TCP checksum verifies: `None` unless it is an
/// unfragmented TCP segment (IPv4, or IPv6 without extension headers) whose IP length
/// matches the buffer.
pub fn tcp_checksum_ok(p: &[u8]) -> Option<bool> {
    let (tcp_at, mut sum) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if ihl < 20 || p.len() < ihl || p[9] != 6 {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            let frag = u16::from_be_bytes([p[6], p[7]]) & 0x3fff;
            if total != p.len() || frag != 0 {
                return None;
            }
            (ihl, ones_sum(&p[12..20]))
        }
        6 => {
            if p.len() < 40 || p[6] != 6 {
                return None;
            }
            let payload = usize::from(u16::from_be_bytes([p[4], p[5]]));
            if 40 + payload != p.len() {
                return None;
            }
            (40, ones_sum(&p[8..40]))
        }
        _ => return None,
    };
    let tcp = &p[tcp_at..];
    if tcp.len() < 20 {
        return None;
    }
    sum += 6 + tcp.len() as u64 + ones_sum(tcp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    Some(sum == 0xffff)
}

fn ones_sum(b: &[u8]) -> u64 {
    b.chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// The capture target: reads `data` as a pcap/pcapng file frame by frame, then
/// replays it through a fresh engine on [`PACKET_CONFIG`], rendering every frame's
/// JSON line and the summary. Returns the number of frames read.
pub fn capture(data: &[u8], config: &Config) -> u64 {
    let mut frames = 0u64;
    if let Ok(mut reader) = CaptureReader::new(Cursor::new(data)) {
        let _ = reader.pcap_linktype();
        let mut bytes = 0usize;
        while let Some(frame) = reader.next_frame() {
            match frame {
                Ok(f) => {
                    frames += 1;
                    assert_eq!(f.number, frames, "frame numbers are 1, 2, 3...");
                    bytes += f.data.len();
                    if let Ok(link) = f.link {
                        let _ = nfqwall::wire::parse(link, f.data, f.wire_len);
                    }
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        assert!(reader.next_frame().is_none(), "a frame after the end");
        assert!(bytes <= data.len(), "frames hold more bytes than the file");
    }

    let engine = Engine::new(config);
    let policy = engine.policy();
    let mut line = String::new();
    let mut seen = 0u64;
    let result = replay(
        &engine,
        Cursor::new(data),
        Visibility::Full(CtHint::Auto),
        |o| {
            seen += 1;
            line.clear();
            packet_json(&mut line, o, &policy);
            check_json_line(&line);
        },
    );
    match result {
        Ok(summary) => {
            assert_eq!(summary.frames, frames, "replay and the reader disagree");
            assert_eq!(seen, frames);
            assert_eq!(
                summary.accepted + summary.dropped,
                summary.frames,
                "every frame gets one verdict"
            );
            let mut out = Vec::new();
            write_summary(&mut out, &summary, &engine).expect("writing to a Vec");
            assert!(String::from_utf8(out).is_ok());
        }
        Err(e) => {
            assert_eq!(frames, 0, "replay failed after frames were read: {e}");
            let _ = e.to_string();
        }
    }
    frames
}

/// A few fixed packets to judge with a fuzzed config: an IPv4 TCP SYN to port 80, an
/// IPv4 TCP RST+ACK back, an IPv6 UDP datagram to port 53, an ICMP echo request.
pub fn probe_packets() -> Vec<Vec<u8>> {
    let v4 = |proto: u8, l4: &[u8]| {
        let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
        p.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 80]);
        p.extend_from_slice(l4);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    };
    let syn = [
        0x9c, 0x40, 0, 80, 0, 0, 0, 100, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0, 2, 4, 5,
        0xb4,
    ];
    let mut rst = syn;
    rst[12] = 0x50;
    rst[13] = 0x14;
    let mut udp6 = vec![0x60, 0, 0, 0, 0, 12, 17, 64];
    udp6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    udp6.extend_from_slice(&[
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53,
    ]);
    udp6.extend_from_slice(&[0x04, 0x00, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
    vec![
        v4(6, &syn),
        v4(6, &rst[..20]),
        udp6,
        v4(1, &[8, 0, 0, 0, 0, 1, 0, 1]),
    ]
}

/// The config target: parses `data` (as UTF-8, lossily) with `Config::from_toml_str`;
/// an error must render and point at a line of the text; a config that parses must
/// compile into an engine that judges the probe packets under every conntrack hint.
pub fn config(data: &[u8]) -> Result<Config, String> {
    let text = String::from_utf8_lossy(data);
    match Config::from_toml_str(&text, "fuzz.toml") {
        Ok(cfg) => {
            let engine = Engine::new(&cfg);
            let mut now = 1_700_000_000_000_000_000u64;
            for p in probe_packets() {
                for control in [0u8, 2, 4, 6] {
                    let (meta, _) = packet_meta(control, 0);
                    let d = engine.decide(now, &meta, &p);
                    if d.mode == Mode::LogOnly {
                        assert_eq!(d.verdict, Verdict::Accept, "log-only dropped");
                    }
                    now += 1_000_000;
                }
            }
            engine.reload(&cfg);
            Ok(cfg)
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz.toml"), "error without origin: {msg}");
            if let Some(line) = e.line() {
                let lines = text.split('\n').count();
                assert!(
                    line >= 1 && line <= lines,
                    "error at line {line} of a {lines}-line text: {msg}"
                );
            }
            Err(msg)
        }
    }
}
