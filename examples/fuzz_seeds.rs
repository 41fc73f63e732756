//! `fuzz_seeds`: writes the fuzz targets' seed corpora (`fuzz/corpus/<target>/`) from
//! the shared captures and the shipped configs. Deterministic: the same inputs give the
//! same files. Run from the repository root:
//!
//! ```text
//! cargo run --example fuzz_seeds            # writes fuzz/corpus/{packet,capture,config}
//! cargo run --example fuzz_seeds -- DIR     # writes DIR/{packet,capture,config}
//! ```
//!
//! - `packet`: one file per selected frame, `[control byte][frame]` (the control byte
//!   is decoded by `fuzz/harness.rs`: link type, conntrack hint, clock step). Frames are
//!   picked per capture by shape (IP version, protocol, TCP flags, options, VLAN/PPPoE
//!   framing), at most two per shape and 8 per capture (the first 3 also with
//!   their Ethernet header when they have one), so the set stays small but
//!   covers what the captures hold; plus a synthetic download through a
//!   sequence-randomizing middlebox (displaced SACK blocks, the repair path).
//! - `capture`: every capture cut to its first whole records within 4 KiB, one cut
//!   inside a record, and the synthetic middlebox capture.
//! - `config`: `rules/*.toml` and `rules/examples/*.toml`.

#[path = "../tests/captures/middlebox.rs"]
mod middlebox;

use nfqwall::engine::LinkType;
use nfqwall::replay::capture::CaptureReader;
use nfqwall::wire::link::{strip, LinkPayload};
use nfqwall::wire::{parse, Transport};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

const PCAPS: &str = "tests/fixtures/pcaps";
const PER_SHAPE: usize = 2;
const PER_CAPTURE: usize = 8;
const ETH_PER_CAPTURE: usize = 3;
const CAPTURE_BYTES: usize = 4096;

fn fnv(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

struct Out {
    dir: PathBuf,
    seen: HashSet<Vec<u8>>,
    files: usize,
    bytes: usize,
}

impl Out {
    fn new(root: &Path, target: &str) -> Out {
        let dir = root.join(target);
        fs::create_dir_all(&dir).unwrap();
        Out {
            dir,
            seen: HashSet::new(),
            files: 0,
            bytes: 0,
        }
    }

    fn put(&mut self, prefix: &str, data: &[u8]) {
        if data.is_empty() || !self.seen.insert(data.to_vec()) {
            return;
        }
        let name = format!("{prefix}-{}", fnv(data));
        fs::write(self.dir.join(name), data).unwrap();
        self.files += 1;
        self.bytes += data.len();
    }

    fn report(&self) {
        println!(
            "{}: {} files, {} bytes",
            self.dir.display(),
            self.files,
            self.bytes
        );
    }
}

fn captures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(PCAPS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    v.sort();
    v
}

/// The clock-step index (bits 3-7 of the control byte) nearest above `delta_ns`.
fn step_index(delta_ns: u64) -> u8 {
    const STEPS: [(u64, u8); 8] = [
        (0, 0),
        (1_000, 4),
        (1_000_000, 7),
        (10_000_000, 10),
        (100_000_000, 12),
        (1_000_000_000, 15),
        (10_000_000_000, 21),
        (60_000_000_000, 23),
    ];
    STEPS
        .iter()
        .find(|(ns, _)| delta_ns <= *ns)
        .map_or(25, |(_, i)| *i)
}

/// A frame's shape: what makes it a different input for the parser and engine.
fn shape(link: LinkType, frame: &[u8]) -> Option<(String, Vec<u8>)> {
    let LinkPayload::Ip(ip, _) = strip(link, frame).ok()? else {
        return None;
    };
    let framing = frame.len() - ip.len();
    let p = parse(link, frame, 0);
    let shape = match p {
        Ok(p) => {
            let t = match p.transport {
                Transport::Tcp(t) => {
                    let o = match t.options {
                        Ok(o) => format!(
                            "mss{} ws{} sp{} sack{} ts{}",
                            o.mss.is_some(),
                            o.window_scale.is_some(),
                            o.sack_permitted,
                            o.sack.as_slice().len(),
                            o.timestamps.is_some()
                        ),
                        Err(e) => format!("{e:?}"),
                    };
                    format!("tcp {:02x} {o} data{}", t.flags, t.payload_len > 0)
                }
                Transport::Udp { dport, sport } => format!("udp {}", dport.min(sport) < 1024),
                Transport::Icmp { kind, .. } => format!("icmp {kind}"),
                Transport::Fragment => "fragment".to_string(),
                Transport::Other => format!("proto {}", p.proto),
            };
            format!(
                "{:?} v4{} frag{} {t}",
                framing,
                p.src.is_ipv4(),
                p.fragment.is_some()
            )
        }
        Err(e) => format!("{framing} {e:?}"),
    };
    Some((shape, ip.to_vec()))
}

fn packet_seeds(out: &mut Out) {
    for path in captures() {
        let data = fs::read(&path).unwrap();
        let mut reader = CaptureReader::new(&data[..]).unwrap();
        let mut shapes: BTreeMap<String, usize> = BTreeMap::new();
        let mut taken = 0;
        let mut last_ts = None;
        let mut n = 0u32;
        while let Some(Ok(f)) = reader.next_frame() {
            n += 1;
            let Ok(link) = f.link else { continue };
            let delta = last_ts.map_or(0, |t| f.ts_ns.saturating_sub(t));
            last_ts = Some(f.ts_ns);
            let Some((shape, ip)) = shape(link, f.data) else {
                continue;
            };
            let count = shapes.entry(shape).or_default();
            if *count >= PER_SHAPE || taken >= PER_CAPTURE {
                continue;
            }
            *count += 1;
            taken += 1;
            // Conntrack hints in turn: Auto, Given(New), Given(Invalid), Given(Untracked).
            let ct = ((n % 4) as u8) << 1;
            let control = (step_index(delta) << 3) | ct;
            let mut seed = vec![control];
            seed.extend_from_slice(&ip);
            out.put("ip", &seed);
            if link == LinkType::Ethernet && taken <= ETH_PER_CAPTURE {
                let mut seed = vec![control | 1];
                seed.extend_from_slice(f.data);
                out.put("eth", &seed);
            }
        }
    }
    // The middlebox download: SYN (NEW), SYN/ACK, then data and displaced SACKs as
    // conntrack would mark them (the SACKed ACKs INVALID), 1 ms apart.
    for (i, p) in middlebox_packets().iter().enumerate() {
        let ct: u8 = match i {
            0 => 1,
            1 | 2 => 0,
            _ if p.len() < 100 => 2,
            _ => 0,
        };
        let mut seed = vec![(7 << 3) | (ct << 1)];
        seed.extend_from_slice(p);
        out.put(&format!("mbox{i:02}"), &seed);
    }
}

/// Offsets of the record boundaries of a capture (after the file header, after
/// each record), or `None` when it cannot be walked.
fn boundaries(data: &[u8]) -> Option<Vec<usize>> {
    let u32_at = |at: usize, be: bool| -> Option<u32> {
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let mut cuts = Vec::new();
    match data.get(..4)? {
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0xa1, 0xb2, 0x3c, 0x4d] => {
            let be = data[0] == 0xa1;
            let mut at = 24;
            while at + 16 <= data.len() {
                cuts.push(at);
                at += 16 + u32_at(at + 8, be)? as usize;
            }
            if at <= data.len() {
                cuts.push(at);
            }
        }
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            let mut at = 0;
            let mut be = false;
            while at + 12 <= data.len() {
                if data[at..at + 4] == [0x0a, 0x0d, 0x0d, 0x0a] {
                    be = data[at + 8] == 0x1a;
                }
                let len = u32_at(at + 4, be)? as usize;
                if len < 12 {
                    return None;
                }
                at += len;
                if at <= data.len() {
                    cuts.push(at);
                }
            }
        }
        _ => return None,
    }
    Some(cuts)
}

fn capture_seeds(out: &mut Out) {
    for path in captures() {
        let data = fs::read(&path).unwrap();
        let cuts = boundaries(&data).expect("a capture that can be walked");
        let end = cuts
            .iter()
            .copied()
            .filter(|&c| c <= CAPTURE_BYTES)
            .max()
            .unwrap_or(cuts[0]);
        out.put("cap", &data[..end]);
        // One cut inside a record: the reader must report the truncation.
        if path.file_name().unwrap() == "chrissanders__tcp_dupack.pcapng"
            || path.file_name().unwrap() == "chrissanders__tcp_dupack.pcap"
        {
            out.put("cut", &data[..end.min(data.len()) - 7]);
        }
    }
    out.put("mbox", &middlebox::pcap_raw(&middlebox_packets()));
}

fn config_seeds(out: &mut Out) {
    for dir in ["rules", "rules/examples"] {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        for f in files {
            out.put("toml", &fs::read(f).unwrap());
        }
    }
}

/// A download through a middlebox that shifts the server's sequence space by a
/// constant and leaves the client's SACK blocks unshifted (as `tests/replay_middlebox.rs`).
fn middlebox_packets() -> Vec<Vec<u8>> {
    middlebox::download(12, 100)
}

fn main() {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".to_string()),
    );
    let mut packet = Out::new(&root, "packet");
    packet_seeds(&mut packet);
    packet.report();
    let mut capture = Out::new(&root, "capture");
    capture_seeds(&mut capture);
    capture.report();
    let mut config = Out::new(&root, "config");
    config_seeds(&mut config);
    config.report();
}
