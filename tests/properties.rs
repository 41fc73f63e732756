//! Properties over arbitrary input: nothing panics, and replay is deterministic.

use etherparse::PacketBuilder;
use nfqwall::config::Config;
use nfqwall::engine::{CtHint, CtState, Engine, LinkType, PacketMeta};
use nfqwall::replay::capture::CaptureReader;
use nfqwall::replay::output::packet_json;
use nfqwall::wire;
use proptest::prelude::*;
use std::sync::OnceLock;

const LINKS: [LinkType; 8] = [
    LinkType::RawIp,
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Null,
    LinkType::Ieee80211,
    LinkType::Ieee80211Radiotap,
    LinkType::Nflog,
];

/// An IPv4 header (protocol `proto`) and, for UDP, a header to `port`, before
/// arbitrary bytes: the tunnel decoders behind it see hostile content.
fn outer(proto: u8, port: u16, rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    if proto == 17 {
        body.extend_from_slice(&[0x9c, 0x40]);
        body.extend_from_slice(&port.to_be_bytes());
        body.extend_from_slice(&((8 + rest.len()) as u16).to_be_bytes());
        body.extend_from_slice(&[0, 0]);
    }
    body.extend_from_slice(rest);
    let mut v = vec![0x45, 0];
    v.extend_from_slice(&((20 + body.len()) as u16).to_be_bytes());
    v.extend_from_slice(&[0, 1, 0, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    v.extend_from_slice(&body);
    v
}

fn shared_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut c = Config::builtin_default();
        c.engine.max_flows = 64;
        Engine::new(&c)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn tunnel_decoders_never_panic(rest in proptest::collection::vec(any::<u8>(), 0..200), which in 0usize..7, cut in 0usize..240) {
        let (proto, port) = [(4, 0), (41, 0), (47, 0), (17, 4789), (17, 6081), (17, 2152), (47, 0)][which];
        let mut rest = rest;
        if which == 6 {
            // GRE with a protocol type worth following.
            rest.splice(0..rest.len().min(4), [0x10, 0x00, 0x88, 0xbe]);
        }
        let pkt = outer(proto, port, &rest);
        let _ = wire::parse(LinkType::RawIp, &pkt[..cut.min(pkt.len())], pkt.len() as u32);
        let _ = wire::parse(LinkType::RawIp, &pkt, pkt.len() as u32);
    }

    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), link in 0usize..LINKS.len(), extra in 0u32..100) {
        let _ = wire::parse(LINKS[link], &bytes, bytes.len() as u32 + extra);
    }

    #[test]
    fn engine_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200), link in 0usize..LINKS.len(), now in any::<u64>()) {
        let meta = PacketMeta { link: LINKS[link], ..PacketMeta::raw_ip() };
        let _ = shared_engine().decide(now, &meta, &bytes);
    }

    /// Well-formed TCP headers with arbitrary numbers and flags between two hosts, so
    /// the tracker and the analysis see long random conversations on few flows.
    #[test]
    fn engine_never_panics_on_random_segments(
        segs in proptest::collection::vec(
            (any::<bool>(), any::<u32>(), any::<u32>(), any::<u8>(), any::<u16>(), 0usize..64, 0u16..4, any::<bool>(), 0u64..5_000_000_000),
            1..64),
        ct in 0usize..6,
    ) {
        let hints = [CtHint::Auto, CtHint::Given(CtState::New), CtHint::Given(CtState::Invalid),
            CtHint::Given(CtState::Untracked), CtHint::Given(CtState::Established), CtHint::Given(CtState::Related)];
        let engine = shared_engine();
        let mut now = 1u64;
        for (from_a, seq, ack, flags, window, len, port, sack, dt) in segs {
            now = now.wrapping_add(dt);
            let (src, dst, sp, dp) = if from_a { ([192, 0, 2, 1], [192, 0, 2, 2], 1000 + port, 80) } else { ([192, 0, 2, 2], [192, 0, 2, 1], 80, 1000 + port) };
            let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, seq, window);
            if flags & 0x02 != 0 { b = b.syn(); }
            if flags & 0x10 != 0 { b = b.ack(ack); }
            if flags & 0x01 != 0 { b = b.fin(); }
            if flags & 0x04 != 0 { b = b.rst(); }
            if flags & 0x08 != 0 { b = b.psh(); }
            if sack {
                b = b.options(&[etherparse::TcpOptionElement::SelectiveAcknowledgement((ack ^ seq, ack.wrapping_add(seq)), [Some((seq, ack)), None, None])]).unwrap();
            }
            let payload = vec![0u8; len];
            let mut out = Vec::new();
            b.write(&mut out, &payload).unwrap();
            let meta = PacketMeta { ct: hints[ct], ..PacketMeta::raw_ip() };
            let d = engine.decide(now, &meta, &out);
            prop_assert!(d.tuple.is_some());
        }
    }

    #[test]
    fn capture_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), magic in 0usize..5) {
        let magics: [&[u8]; 5] = [b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\x0a\x0d\x0d\x0a", b""];
        let mut file = magics[magic].to_vec();
        file.extend_from_slice(&bytes);
        if let Ok(mut r) = CaptureReader::new(&file[..]) {
            let mut n = 0;
            while let Some(f) = r.next_frame() {
                n += 1;
                if f.is_err() || n > 1000 { break; }
            }
        }
    }
}

fn replay_lines(name: &str) -> Vec<String> {
    let engine = Engine::new(&Config::builtin_default());
    let policy = engine.policy();
    let file = std::fs::File::open(format!("tests/fixtures/pcaps/{name}")).unwrap();
    let mut lines = Vec::new();
    nfqwall::replay::replay(
        &engine,
        std::io::BufReader::new(file),
        nfqwall::replay::Visibility::Full(CtHint::Auto),
        |o| {
            let mut s = String::new();
            packet_json(&mut s, o, &policy);
            lines.push(s);
        },
    )
    .unwrap();
    lines
}

#[test]
fn replaying_a_capture_twice_gives_identical_output() {
    for name in [
        "ndpi__alexa-app.pcapng",
        "ndpi__fix2.pcap",
        "zeek__http__206_example_b.pcap",
        "suricata-verify__bug-7657-01.pcap",
    ] {
        let first = replay_lines(name);
        let second = replay_lines(name);
        assert!(first.len() > 30, "{name}: {} lines", first.len());
        assert_eq!(first, second, "{name}");
    }
}
