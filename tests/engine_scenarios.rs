//! The liberal TCP tracker as RFC scenarios: a fixture per state, segments built
//! from a template, exact verdicts, reasons and patterns asserted per packet.
//!
//! The client is 192.0.2.1:40000, the server 198.51.100.2:80. Both announce window
//! scale 7, SACK-permitted and MSS 1460 in their SYNs.

use etherparse::{PacketBuilder, TcpOptionElement};
use nfqwall::config::Config;
use nfqwall::engine::patterns::Pattern;
use nfqwall::engine::policy::Mode;
use nfqwall::engine::{CtHint, CtState, Decision, Engine, LinkType, PacketMeta, Reason, Verdict};

const CLIENT: [u8; 4] = [192, 0, 2, 1];
const SERVER: [u8; 4] = [198, 51, 100, 2];
const MS: u64 = 1_000_000;

/// One segment, described from the point of view of who sends it.
#[derive(Clone)]
struct Seg {
    from_client: bool,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    psh: bool,
    window: u16,
    len: usize,
    options: Vec<TcpOptionElement>,
}

fn templ() -> Seg {
    Seg {
        from_client: true,
        seq: 0,
        ack: None,
        syn: false,
        fin: false,
        rst: false,
        psh: false,
        window: 512,
        len: 0,
        options: Vec::new(),
    }
}

fn bytes(s: &Seg) -> Vec<u8> {
    let (src, dst, sport, dport) = if s.from_client {
        (CLIENT, SERVER, 40000, 80)
    } else {
        (SERVER, CLIENT, 80, 40000)
    };
    let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, s.seq, s.window);
    if s.syn {
        b = b.syn();
    }
    if let Some(a) = s.ack {
        b = b.ack(a);
    }
    if s.fin {
        b = b.fin();
    }
    if s.rst {
        b = b.rst();
    }
    if s.psh {
        b = b.psh();
    }
    let b = b.options(&s.options).expect("options fit");
    let payload = vec![0x61u8; s.len];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

fn syn_options() -> Vec<TcpOptionElement> {
    vec![
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::WindowScale(7),
    ]
}

/// A connection under test: the engine, the two ISNs and the clock.
struct Conn {
    engine: Engine,
    ct: CtHint,
    now: u64,
    client_isn: u32,
    server_isn: u32,
}

impl Conn {
    fn send(&mut self, s: Seg) -> Decision {
        self.now += MS;
        let meta = PacketMeta {
            link: LinkType::RawIp,
            ct: self.ct,
            in_iface: None,
            out_iface: None,
            mark: 0,
            wire_len: 0,
        };
        self.engine.decide(self.now, &meta, &bytes(&s))
    }

    /// Next client sequence number after `n` bytes of client data.
    fn c(&self, n: u32) -> u32 {
        self.client_isn.wrapping_add(1).wrapping_add(n)
    }

    /// Next server sequence number after `n` bytes of server data.
    fn s(&self, n: u32) -> u32 {
        self.server_isn.wrapping_add(1).wrapping_add(n)
    }
}

fn engine(mode: Mode) -> Engine {
    let mut config = Config::builtin_default();
    config.daemon.mode = mode;
    for s in &mut config.services {
        s.mode = Some(mode);
    }
    Engine::new(&config)
}

/// Sends one segment and asserts verdict, reason name and patterns exactly.
macro_rules! send {
    ($conn:expr, $seg:expr => $verdict:ident, $reason:expr, [$($pat:ident),*]) => {{
        let d = $conn.send($seg);
        assert_eq!(d.verdict, Verdict::$verdict, "verdict of {:?}", d);
        assert_eq!(d.reason.map(|r| r.name()), $reason, "reason of {:?}", d);
        let want: Vec<Pattern> = vec![$(Pattern::$pat),*];
        let got: Vec<Pattern> = d.patterns.contract_iter().collect();
        assert_eq!(got, want, "patterns of {:?}", d);
        d
    }};
}

/// A connection after the three-way handshake, in enforce mode.
fn established_with(mode: Mode, client_isn: u32, server_isn: u32) -> Conn {
    let mut c = Conn {
        engine: engine(mode),
        ct: CtHint::Auto,
        now: 1_700_000_000_000_000_000,
        client_isn,
        server_isn,
    };
    let d = send!(c, Seg { syn: true, seq: client_isn, options: syn_options(), window: 64240, ..templ() }
        => Accept, None, []);
    assert_eq!(d.ct_state, CtState::New);
    let d = send!(c, Seg { from_client: false, syn: true, seq: server_isn, ack: Some(client_isn.wrapping_add(1)), options: syn_options(), window: 65160, ..templ() }
        => Accept, None, []);
    assert_eq!(d.ct_state, CtState::Established);
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), ..templ() } => Accept, None, []);
    c
}

fn established() -> Conn {
    established_with(Mode::Enforce, 1_000_000, 3_000_000_000)
}

#[test]
fn handshake_then_data_both_ways_is_plain() {
    let mut c = established();
    let d = send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), psh: true, len: 100, ..templ() } => Accept, None, []);
    assert_eq!(d.ct_state, CtState::Established);
    send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c(100)), len: 1448, ..templ() } => Accept, None, []);
    send!(c, Seg { from_client: false, seq: c.s(1448), ack: Some(c.c(100)), len: 1448, ..templ() } => Accept, None, []);
    send!(c, Seg { seq: c.c(100), ack: Some(c.s(2896)), ..templ() } => Accept, None, []);
}

#[test]
fn rto_retransmission_is_named_and_accepted() {
    let mut c = established();
    send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c(0)), len: 1000, ..templ() } => Accept, None, []);
    c.now += 300 * MS;
    send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c(0)), len: 1000, ..templ() } => Accept, None, [Retransmission]);
}

#[test]
fn fast_retransmission_after_three_duplicate_acks() {
    let mut c = established();
    for i in 0..4 {
        send!(c, Seg { from_client: false, seq: c.s(i * 1000), ack: Some(c.c(0)), len: 1000, ..templ() } => Accept, None, []);
    }
    // The first segment was lost: the client keeps acknowledging its start (the
    // handshake's ACK already did, so each of these repeats it).
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), ..templ() } => Accept, None, [DuplicateAck]);
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), ..templ() } => Accept, None, [DuplicateAck]);
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), ..templ() } => Accept, None, [DuplicateAck]);
    send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c(0)), len: 1000, ..templ() }
        => Accept, None, [Retransmission, FastRetransmission]);
}

#[test]
fn retransmission_of_acknowledged_data() {
    // Strict conntrack would still accept a copy inside the window; given INVALID by
    // the kernel, the engine names the benign pattern that explains it.
    let mut c = established();
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), len: 500, ..templ() } => Accept, None, []);
    send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c(500)), ..templ() } => Accept, None, []);
    c.ct = CtHint::Given(CtState::Invalid);
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), len: 500, ..templ() }
        => Accept, Some("retransmitted_acked_data"), [Retransmission, SpuriousRetransmission]);
}

#[test]
fn very_old_acknowledged_data_fails_the_lower_bound_but_is_benign() {
    let mut c = established();
    // The client sends 300 KB; the server acknowledges it all in steps.
    for i in 0..200u32 {
        send!(c, Seg { seq: c.c(i * 1500), ack: Some(c.s(0)), len: 1500, ..templ() } => Accept, None, []);
        send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c((i + 1) * 1500)), ..templ() } => Accept, None, []);
    }
    // A copy of the very first segment arrives late: older than a whole window.
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), len: 1500, ..templ() }
        => Accept, Some("retransmitted_acked_data"), [Retransmission, SpuriousRetransmission]);
}

#[test]
fn zero_window_probe() {
    let mut c = established();
    send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c(0)), window: 0, ..templ() } => Accept, None, [ZeroWindow]);
    // Conntrack never shrinks the right edge, so it accepts the probe: no reason.
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), len: 1, ..templ() } => Accept, None, [ZeroWindowProbe]);
    // Given INVALID by the kernel, the engine names the probe.
    c.ct = CtHint::Given(CtState::Invalid);
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), len: 1, ..templ() }
        => Accept, Some("zero_window_probe"), [ZeroWindowProbe]);
}

#[test]
fn keep_alive_given_invalid_is_named() {
    let mut c = established();
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), len: 10, ..templ() } => Accept, None, []);
    send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c(10)), ..templ() } => Accept, None, []);
    c.ct = CtHint::Given(CtState::Invalid);
    send!(c, Seg { seq: c.c(9), ack: Some(c.s(0)), ..templ() } => Accept, Some("keep_alive"), [KeepAlive]);
}

#[test]
fn sequence_numbers_wrap_past_two_to_the_32() {
    let mut c = established_with(Mode::Enforce, u32::MAX - 1000, u32::MAX - 10);
    for i in 0..4u32 {
        send!(c, Seg { seq: c.c(i * 1000), ack: Some(c.s(0)), len: 1000, ..templ() } => Accept, None, []);
        send!(c, Seg { from_client: false, seq: c.s(i * 100), ack: Some(c.c((i + 1) * 1000)), len: 100, ..templ() } => Accept, None, []);
    }
    assert!(c.c(4000) < 10_000, "the client's sequence space wrapped");
    // An old segment from before the wrap is still a retransmission, not "far ahead".
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(400)), len: 1000, ..templ() }
        => Accept, None, [Retransmission, SpuriousRetransmission]);
}

#[test]
fn data_slightly_beyond_the_window() {
    let mut c = established();
    // The client offered 512 << 7 = 65536 bytes; the server overshoots by 100.
    send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c(0)), len: 65536 - 1400, ..templ() } => Accept, None, []);
    send!(c, Seg { from_client: false, seq: c.s(65536 - 1400), ack: Some(c.c(0)), len: 1500, ..templ() }
        => Accept, Some("slightly_beyond_window"), []);
}

/// The sequence-randomizing middlebox: the client sees the server's sequence space
/// shifted by OFFSET; the middlebox shifts the client's ACKs back but leaves SACK
/// blocks in the client's space.
#[test]
fn sack_blocks_displaced_by_a_constant_offset() {
    const OFFSET: u32 = 0x6b2f_1d00;
    let mut c = established();
    for i in 0..10u32 {
        send!(c, Seg { from_client: false, seq: c.s(i * 1448), ack: Some(c.c(0)), len: 1448, ..templ() } => Accept, None, []);
    }
    // Segment 2 was lost. The client ACKs segment 1 and SACKs 3.. in its own space.
    let mut offsets = Vec::new();
    for held in 3..6u32 {
        let sack = TcpOptionElement::SelectiveAcknowledgement(
            (
                c.s(2 * 1448).wrapping_add(OFFSET),
                c.s(held * 1448).wrapping_add(OFFSET),
            ),
            [None, None, None],
        );
        let d = c.send(Seg {
            seq: c.c(0),
            ack: Some(c.s(1448)),
            options: vec![TcpOptionElement::Noop, TcpOptionElement::Noop, sack],
            ..templ()
        });
        assert_eq!(d.verdict, Verdict::Accept);
        let Some(Reason::SackDisplaced {
            offset_low,
            offset_high,
        }) = d.reason
        else {
            panic!("expected sack_displaced, got {:?}", d.reason)
        };
        assert!(
            OFFSET.wrapping_sub(offset_low) <= offset_high.wrapping_sub(offset_low),
            "true offset {OFFSET} outside {offset_low}..={offset_high}"
        );
        offsets.push(offset_high.wrapping_sub(offset_low));
        // 10 segments sent, `held` SACKed at the right edge: the rest is in flight.
        assert_eq!(OFFSET.wrapping_sub(offset_low), (10 - held) * 1448);
        let estimate = d.reason.unwrap().offset_estimate().unwrap();
        assert_eq!(estimate, offset_low);
        assert!(d
            .reason
            .unwrap()
            .to_string()
            .contains("sequence-randomizing middlebox"));
    }
    // The range only narrows, and its lower bound (`right - highest sent`) climbs
    // to within the data in flight; the upper bound stays loose, since a first
    // block may be a D-SACK (RFC 2883).
    assert!(offsets.windows(2).all(|w| w[1] <= w[0]), "{offsets:?}");
    let peers = c.engine.peers().snapshot();
    assert_eq!(peers[0].0.to_string(), "192.0.2.1");
    assert_eq!(peers[0].1.sack_displaced, 3);
}

/// RFC 2883: a D-SACK reports a duplicate below the cumulative ACK. On a bulk
/// upload the duplicate of a spurious retransmission can lie far below it: as far as
/// the data the receiver's (the SACK sender's) window let be in flight, however
/// small the data sender's own window is. As conntrack bounds it
/// (`receiver->td_end - MAXACKWINDOW(sender)`), that is not a displaced block.
#[test]
fn dsack_far_below_the_ack_within_the_sack_senders_window_is_plain() {
    let mut c = established();
    // The server offers 8 MiB (0xffff << 7); the client's own window stays at 64 KiB.
    send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c(0)), window: 0xffff, ..templ() }
        => Accept, None, []);
    for i in 0..100u32 {
        send!(c, Seg { seq: c.c(i * 1448), ack: Some(c.s(0)), len: 1448, ..templ() } => Accept, None, []);
    }
    send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c(100 * 1448)), window: 0xffff, ..templ() }
        => Accept, None, []);
    // The first segment again, spuriously: 143,352 bytes below the ACK.
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), len: 1448, ..templ() }
        => Accept, None, [Retransmission, SpuriousRetransmission]);
    let dsack = TcpOptionElement::SelectiveAcknowledgement((c.c(0), c.c(1448)), [None, None, None]);
    let d = c.send(Seg {
        from_client: false,
        seq: c.s(0),
        ack: Some(c.c(100 * 1448)),
        window: 0xffff,
        options: vec![TcpOptionElement::Noop, TcpOptionElement::Noop, dsack],
        ..templ()
    });
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(d.reason, None, "{d:?}");
    assert!(c
        .engine
        .peers()
        .snapshot()
        .iter()
        .all(|(_, p)| p.sack_displaced == 0));
}

#[test]
fn honest_sack_blocks_are_plain() {
    let mut c = established();
    for i in 0..4u32 {
        send!(c, Seg { from_client: false, seq: c.s(i * 1448), ack: Some(c.c(0)), len: 1448, ..templ() } => Accept, None, []);
    }
    let sack = TcpOptionElement::SelectiveAcknowledgement(
        (c.s(2 * 1448), c.s(4 * 1448)),
        [None, None, None],
    );
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(1448)), options: vec![TcpOptionElement::Noop, TcpOptionElement::Noop, sack], ..templ() }
        => Accept, None, []);
}

#[test]
fn rst_far_outside_the_window_is_dropped_in_enforce() {
    for distance in [1u32 << 31, 1 << 30] {
        let mut c = established();
        send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c(0)), len: 1000, ..templ() } => Accept, None, []);
        send!(c, Seg { rst: true, seq: c.c(0).wrapping_add(distance), ..templ() }
            => Drop, Some("rst_out_of_window"), []);
        // The tracker learned nothing from it: data keeps flowing with no reason.
        // (The Wireshark patterns describe the wire, forged RST included, so they
        // may call the next segment out of order, as tshark would.)
        let d = c.send(Seg {
            seq: c.c(0),
            ack: Some(c.s(1000)),
            len: 10,
            ..templ()
        });
        assert_eq!((d.verdict, d.reason), (Verdict::Accept, None), "{d:?}");
    }
}

#[test]
fn rst_far_outside_the_window_in_log_only_is_accepted_with_would_drop() {
    let mut c = established_with(Mode::LogOnly, 1_000_000, 3_000_000_000);
    let d = send!(c, Seg { rst: true, seq: c.c(0).wrapping_add(1 << 31), ..templ() }
        => Accept, Some("rst_out_of_window"), []);
    assert!(d.would_drop);
    assert_eq!(c.engine.counters().would_drop, 1);
    assert_eq!(c.engine.counters().dropped, 0);
}

#[test]
fn rst_in_window_closes_then_late_segments_are_benign() {
    let mut c = established();
    send!(c, Seg { rst: true, ack: Some(c.s(0)), seq: c.c(0), ..templ() } => Accept, None, []);
    send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c(0)), len: 100, ..templ() }
        => Accept, Some("late_after_close"), []);
}

#[test]
fn rst_answering_a_syn_must_acknowledge_it() {
    let mut c = Conn {
        engine: engine(Mode::Enforce),
        ct: CtHint::Auto,
        now: 1,
        client_isn: 500,
        server_isn: 9000,
    };
    send!(c, Seg { syn: true, seq: 500, options: syn_options(), ..templ() } => Accept, None, []);
    // Wireshark also notes that this ACK covers data it never saw.
    send!(c, Seg { from_client: false, rst: true, seq: 0, ack: Some(12345), ..templ() } => Drop, Some("rst_bad_ack"), [AckLostSegment]);
    send!(c, Seg { from_client: false, rst: true, seq: 0, ack: Some(501), ..templ() } => Accept, None, []);
}

#[test]
fn syn_with_new_isn_outside_the_window_of_an_open_flow() {
    let mut c = established();
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), len: 100, ..templ() } => Accept, None, []);
    // Wireshark sees a new connection on the same ports; the tracker sees a blind SYN.
    send!(c, Seg { syn: true, seq: c.c(0).wrapping_add(1 << 31), options: syn_options(), ..templ() }
        => Drop, Some("syn_out_of_window"), [ReusedPorts]);
}

#[test]
fn new_syn_after_close_reuses_the_ports() {
    let mut c = established();
    send!(c, Seg { fin: true, seq: c.c(0), ack: Some(c.s(0)), ..templ() } => Accept, None, []);
    send!(c, Seg { from_client: false, fin: true, seq: c.s(0), ack: Some(c.c(1)), ..templ() } => Accept, None, []);
    send!(c, Seg { seq: c.c(1), ack: Some(c.s(1)), ..templ() } => Accept, None, []);
    let d = send!(c, Seg { syn: true, seq: 77_000_000, options: syn_options(), ..templ() } => Accept, None, [ReusedPorts]);
    assert_eq!(d.ct_state, CtState::New);
}

#[test]
fn impossible_flag_combinations_are_dropped() {
    // SYN+FIN, SYN+RST, no flags at all, FIN without ACK, FIN+PSH+URG (xmas) without ACK.
    let cases: [(bool, bool, bool, Option<u32>); 4] = [
        (true, true, false, None),
        (true, false, true, None),
        (false, false, false, None),
        (false, true, false, None),
    ];
    for (syn, fin, rst, ack) in cases {
        let mut c = established();
        let d = c.send(Seg {
            syn,
            fin,
            rst,
            ack,
            seq: c.c(0),
            ..templ()
        });
        assert_eq!(d.verdict, Verdict::Drop, "syn={syn} fin={fin} rst={rst}");
        assert_eq!(d.reason.map(|r| r.name()), Some("impossible_tcp_flags"));
    }
}

#[test]
fn malformed_options_are_dropped_and_named() {
    let mut c = established();
    let mut pkt = bytes(&Seg {
        seq: c.c(0),
        ack: Some(c.s(0)),
        options: vec![TcpOptionElement::Noop; 4],
        ..templ()
    });
    // Replace the four NOPs (bytes 40..44) with an MSS option whose length runs past
    // the header: kind 2, length 8.
    pkt[40..44].copy_from_slice(&[2, 8, 0, 0]);
    c.now += MS;
    let d = c.engine.decide(c.now, &PacketMeta::raw_ip(), &pkt);
    assert_eq!(d.verdict, Verdict::Drop);
    assert_eq!(d.reason.map(|r| r.name()), Some("malformed_tcp_options"));
    assert!(d.reason.unwrap().to_string().contains("malformed options"));
}

#[test]
fn midstream_pickup_is_tolerated() {
    // The engine starts after the handshake (a restart): no reasons for normal traffic.
    let mut c = Conn {
        engine: engine(Mode::Enforce),
        ct: CtHint::Auto,
        now: 1,
        client_isn: 10_000,
        server_isn: 90_000,
    };
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), len: 100, ..templ() } => Accept, None, []);
    send!(c, Seg { from_client: false, seq: c.s(0), ack: Some(c.c(100)), len: 1448, ..templ() } => Accept, None, []);
    send!(c, Seg { seq: c.c(100), ack: Some(c.s(1448)), ..templ() } => Accept, None, []);
}

/// SACK repair: once two packets agree on one offset that puts every block edge on a
/// segment boundary the server sent, the blocks are rewritten into the server's space
/// (checksum fixed); before that, and for blocks that cannot be verified, the packet
/// is left alone.
#[test]
fn sack_repair_rewrites_blocks_once_the_offset_is_exact() {
    const OFFSET: u32 = 0x9e37_79b9;
    let mut config = Config::builtin_default();
    config.daemon.mode = Mode::Enforce;
    config.services[0].mode = Some(Mode::Enforce);
    config.services[0].sack_repair = true;
    let mut c = established();
    c.engine = Engine::new(&config);
    // Re-run the handshake on the new engine.
    let (ci, si) = (c.client_isn, c.server_isn);
    send!(c, Seg { syn: true, seq: ci, options: syn_options(), window: 64240, ..templ() } => Accept, None, []);
    send!(c, Seg { from_client: false, syn: true, seq: si, ack: Some(ci + 1), options: syn_options(), window: 65160, ..templ() } => Accept, None, []);
    send!(c, Seg { seq: c.c(0), ack: Some(c.s(0)), ..templ() } => Accept, None, []);

    let mut repaired = Vec::new();
    // Two loss episodes: segment 5 lost, then segment 25 lost.
    for (first, lost) in [(0u32, 5u32), (20, 25)] {
        for i in first..first + 20 {
            if i != lost {
                c.send(Seg {
                    from_client: false,
                    seq: c.s(i * 1400),
                    ack: Some(c.c(0)),
                    len: 1400,
                    ..templ()
                });
            }
            if i > lost {
                let sack = TcpOptionElement::SelectiveAcknowledgement(
                    (
                        c.s((lost + 1) * 1400).wrapping_add(OFFSET),
                        c.s((i + 1) * 1400).wrapping_add(OFFSET),
                    ),
                    [None, None, None],
                );
                let mut pkt = bytes(&Seg {
                    seq: c.c(0),
                    ack: Some(c.s(lost * 1400)),
                    options: vec![TcpOptionElement::Noop, TcpOptionElement::Noop, sack],
                    ..templ()
                });
                c.now += MS;
                let d = c.engine.decide_mut(c.now, &PacketMeta::raw_ip(), &mut pkt);
                assert_eq!(d.verdict, Verdict::Accept);
                assert_eq!(d.reason.map(|r| r.name()), Some("sack_displaced"));
                if d.rewritten {
                    assert_eq!(d.repair_offset, Some(OFFSET));
                    let p = nfqwall::wire::parse_ip(&pkt, pkt.len()).unwrap();
                    let nfqwall::wire::Transport::Tcp(t) = p.transport else {
                        panic!()
                    };
                    let b = t.options.unwrap().sack.as_slice()[0];
                    assert_eq!(
                        (b.left.0, b.right.0),
                        (c.s((lost + 1) * 1400), c.s((i + 1) * 1400))
                    );
                    let tcp = etherparse::TcpSlice::from_slice(&pkt[20..]).unwrap();
                    assert_eq!(
                        tcp.checksum(),
                        tcp.calc_checksum_ipv4(CLIENT, SERVER).unwrap()
                    );
                    repaired.push(i);
                } else {
                    assert_eq!(
                        pkt,
                        bytes(&Seg {
                            seq: c.c(0),
                            ack: Some(c.s(lost * 1400)),
                            options: vec![
                                TcpOptionElement::Noop,
                                TcpOptionElement::Noop,
                                TcpOptionElement::SelectiveAcknowledgement(
                                    (
                                        c.s((lost + 1) * 1400).wrapping_add(OFFSET),
                                        c.s((i + 1) * 1400).wrapping_add(OFFSET)
                                    ),
                                    [None, None, None],
                                )
                            ],
                            ..templ()
                        }),
                        "unrepaired packets pass unchanged"
                    );
                }
            }
        }
        // The retransmission fills the hole; the client acknowledges everything.
        c.send(Seg {
            from_client: false,
            seq: c.s(lost * 1400),
            ack: Some(c.c(0)),
            len: 1400,
            ..templ()
        });
        c.send(Seg {
            seq: c.c(0),
            ack: Some(c.s((first + 20) * 1400)),
            ..templ()
        });
    }
    // The flow is watched from its SYN, so every segment's boundaries are known:
    // episode 1's first two dupacks agree on the one offset that puts both edges on
    // segment boundaries, and its later dupacks are repaired; episode 2 from its first.
    let expected: Vec<u32> = (7..20).chain(26..40).collect();
    assert_eq!(repaired, expected);
    assert_eq!(c.engine.counters().sack_repaired, expected.len() as u64);
}

/// A busy stateless UDP service: with the conntrack state given (live, UNTRACKED),
/// the engine keeps no per-query state, so its own table cannot fill the way
/// conntrack's did.
#[test]
fn given_state_udp_queries_leave_no_flow_state() {
    let engine = engine(Mode::Enforce);
    let meta = PacketMeta {
        ct: CtHint::Given(CtState::Untracked),
        ..PacketMeta::raw_ip()
    };
    for port in 0..1000u16 {
        let mut pkt = Vec::new();
        PacketBuilder::ipv4(CLIENT, SERVER, 64)
            .udp(10_000 + port, 53)
            .write(&mut pkt, &[0u8; 30])
            .unwrap();
        let d = engine.decide(u64::from(port), &meta, &pkt);
        assert_eq!(
            (d.verdict, d.reason, d.ct_state),
            (Verdict::Accept, None, CtState::Untracked)
        );
    }
    assert_eq!(engine.flows().len(), 0);
    // Replay (state derived) still tracks UDP to tell NEW from ESTABLISHED.
    let mut pkt = Vec::new();
    PacketBuilder::ipv4(CLIENT, SERVER, 64)
        .udp(9999, 53)
        .write(&mut pkt, &[0u8; 30])
        .unwrap();
    assert_eq!(
        engine.decide(1, &PacketMeta::raw_ip(), &pkt).ct_state,
        CtState::New
    );
    assert_eq!(engine.flows().len(), 1);
}

/// What the live daemon sees: the state conntrack gave, and only the packets the
/// rendered ruleset queues (a flow's SYN as NEW, the packets conntrack doubts as
/// INVALID). The packet at `seq`/`ack` from the client, with `flags`.
fn seen(engine: &Engine, now: u64, ct: CtState, s: Seg) -> Decision {
    let meta = PacketMeta {
        ct: CtHint::Given(ct),
        ..PacketMeta::raw_ip()
    };
    engine.decide(now, &meta, &bytes(&s))
}

const ISN: u32 = 1_000_000;

fn syn() -> Seg {
    Seg {
        syn: true,
        seq: ISN,
        window: 64240,
        options: syn_options(),
        ..templ()
    }
}

/// "No state" is not "benign": an INVALID segment of a flow nfqwall never saw is left
/// to conntrack's verdict, and a RST or SYN of that kind is dropped in enforce.
#[test]
fn invalid_without_state_stands_and_hostile_shapes_are_dropped() {
    use nfqwall::engine::Disposition;
    let engine = engine(Mode::Enforce);
    let ack = seen(
        &engine,
        MS,
        CtState::Invalid,
        Seg {
            seq: 5,
            ack: Some(7),
            ..templ()
        },
    );
    assert_eq!(
        (ack.disposition, ack.reason),
        (Disposition::PassOn, Some(Reason::NoState))
    );
    let rst = seen(
        &engine,
        2 * MS,
        CtState::Invalid,
        Seg {
            seq: 5,
            rst: true,
            ..templ()
        },
    );
    assert_eq!(
        (rst.disposition, rst.reason),
        (Disposition::Drop, Some(Reason::RstNoState))
    );
    assert_eq!(
        engine.flows().len(),
        0,
        "an INVALID packet never creates a flow"
    );
    let log = self::engine(Mode::LogOnly);
    let rst = seen(
        &log,
        MS,
        CtState::Invalid,
        Seg {
            seq: 5,
            rst: true,
            ..templ()
        },
    );
    assert_eq!(
        (rst.disposition, rst.would_drop, rst.would_accept),
        (Disposition::PassOn, true, false),
        "log-only leaves it to the host's INVALID drop"
    );
}

/// A forged RST 2^31 past the client's SYN is out of the window nfqwall learned from
/// that SYN: dropped, with the distance.
#[test]
fn forged_rst_soon_after_the_syn_is_out_of_window() {
    use nfqwall::engine::Disposition;
    let engine = engine(Mode::Enforce);
    assert_eq!(
        seen(&engine, MS, CtState::New, syn()).disposition,
        Disposition::PassOn
    );
    let rst = seen(
        &engine,
        2 * MS,
        CtState::Invalid,
        Seg {
            seq: ISN.wrapping_add(1 << 31),
            rst: true,
            ..templ()
        },
    );
    assert_eq!(rst.disposition, Disposition::Drop);
    assert!(
        matches!(rst.reason, Some(Reason::RstOutOfWindow { .. })),
        "{:?}",
        rst.reason
    );
}

/// Poisoning: a forged data segment far ahead is not proven benign, so it teaches
/// nothing, and a RST just past it is still out of window.
#[test]
fn a_forged_segment_teaches_nothing() {
    use nfqwall::engine::Disposition;
    let engine = engine(Mode::Enforce);
    seen(&engine, MS, CtState::New, syn());
    let far = ISN.wrapping_add(1 << 30);
    let data = seen(
        &engine,
        2 * MS,
        CtState::Invalid,
        Seg {
            seq: far,
            ack: Some(5),
            len: 100,
            ..templ()
        },
    );
    assert_eq!(
        (data.disposition, data.reason),
        (Disposition::PassOn, Some(Reason::NotProvenBenign))
    );
    let rst = seen(
        &engine,
        3 * MS,
        CtState::Invalid,
        Seg {
            seq: far.wrapping_add(100),
            rst: true,
            ..templ()
        },
    );
    assert_eq!(rst.disposition, Disposition::Drop);
    assert!(
        matches!(rst.reason, Some(Reason::RstOutOfWindow { .. })),
        "{:?}",
        rst.reason
    );
}

/// Blind denial of service: a spoofed ACK from the client's address and port must not
/// make nfqwall drop the client's real SYN; a SYN conntrack accepted starts afresh.
#[test]
fn a_real_syn_gets_a_fresh_start_after_a_spoofed_ack() {
    use nfqwall::engine::Disposition;
    let engine = engine(Mode::Enforce);
    // conntrack's loose pick-up calls a lone ACK NEW; no state is learned from it.
    let spoof = seen(
        &engine,
        MS,
        CtState::New,
        Seg {
            seq: 77,
            ack: Some(99),
            ..templ()
        },
    );
    assert_eq!(spoof.disposition, Disposition::PassOn);
    let d = seen(&engine, 2 * MS, CtState::New, syn());
    assert_eq!((d.disposition, d.reason), (Disposition::PassOn, None));
    // Even after a SYN with another ISN was tracked, a new SYN conntrack let through
    // replaces it.
    let d = seen(&engine, 3 * MS, CtState::New, Seg { seq: 5, ..syn() });
    assert_eq!((d.disposition, d.reason), (Disposition::PassOn, None));
}

/// A SYN the engine let through presumably opened the connection: it lives for the
/// established timeout, not the SYN timeout, so a RST much later is still judged
/// against the SYN's window.
#[test]
fn a_passed_syn_lives_for_the_established_timeout() {
    use nfqwall::engine::Disposition;
    let engine = engine(Mode::Enforce);
    seen(&engine, MS, CtState::New, syn());
    let later = 600 * 1_000_000_000; // past the default syn timeout (120 s)
    let rst = seen(
        &engine,
        later,
        CtState::Invalid,
        Seg {
            seq: ISN.wrapping_add(1 << 31),
            rst: true,
            ..templ()
        },
    );
    assert_eq!(rst.disposition, Disposition::Drop);
    assert!(
        matches!(rst.reason, Some(Reason::RstOutOfWindow { .. })),
        "{:?}",
        rst.reason
    );
    assert_eq!(engine.flows().len(), 1);
}

// ---- the shadow feed (Engine::observe) ----

/// Feeds `s` as the shadow feed does: an ESTABLISHED packet NFLOG copied, no verdict.
fn fed(engine: &Engine, now: u64, s: Seg) {
    engine.observe(now, &PacketMeta::raw_ip(), &bytes(&s));
}

/// The SYN queued as NEW, the SYN/ACK fed (window 4096, no scaling) at 2 ms;
/// returns the server's ISN.
fn fed_handshake(engine: &Engine) -> u32 {
    let server_isn = 5_000_000u32;
    seen(engine, MS, CtState::New, syn());
    fed(
        engine,
        2 * MS,
        Seg {
            from_client: false,
            syn: true,
            seq: server_isn,
            ack: Some(ISN + 1),
            window: 4096,
            options: vec![TcpOptionElement::MaximumSegmentSize(1460)],
            ..templ()
        },
    );
    server_isn
}

/// A connection as the live daemon with the feed sees it: the SYN queued as NEW, the
/// SYN/ACK and everything established fed; the client sends `upload` bytes in
/// 1000-byte segments, each acknowledged. Returns the time of the last packet.
fn fed_connection(engine: &Engine, upload: u32) -> u64 {
    let server_isn = fed_handshake(engine);
    let mut now = 3 * MS;
    fed(
        engine,
        now,
        Seg {
            seq: ISN + 1,
            ack: Some(server_isn + 1),
            window: 64240,
            ..templ()
        },
    );
    for i in 0..upload / 1000 {
        now += MS;
        fed(
            engine,
            now,
            Seg {
                seq: ISN + 1 + i * 1000,
                ack: Some(server_isn + 1),
                window: 64240,
                len: 1000,
                ..templ()
            },
        );
        now += MS;
        fed(
            engine,
            now,
            Seg {
                from_client: false,
                seq: server_isn + 1,
                ack: Some(ISN + 1 + (i + 1) * 1000),
                window: 4096,
                ..templ()
            },
        );
    }
    now
}

/// The client's retransmission of its first, long acknowledged, segment: below the
/// window's lower bound, so strict conntrack calls it INVALID.
fn old_retransmission() -> Seg {
    Seg {
        seq: ISN + 1,
        ack: Some(5_000_001),
        window: 64240,
        len: 1000,
        ..templ()
    }
}

/// A flow the feed showed whole: a benign INVALID packet (a retransmission of data
/// acknowledged long ago, which conntrack's lower bound rejects) is vouched for on the
/// tracker's evidence. Without the feed the same packet is not proven benign.
#[test]
fn a_fed_flow_is_whole_and_its_benign_invalid_packets_are_vouched() {
    use nfqwall::engine::Disposition;
    let engine = engine(Mode::Enforce);
    let now = fed_connection(&engine, 20_000);
    let before = engine.counters().packets;
    assert_eq!(
        before, 1,
        "fed packets are not verdicts: only the SYN was judged"
    );
    let d = seen(&engine, now + MS, CtState::Invalid, old_retransmission());
    assert_eq!(
        (d.disposition, d.reason),
        (Disposition::Vouch, Some(Reason::RetransmittedAckedData)),
        "{d:?}"
    );

    let blind = self::engine(Mode::Enforce);
    seen(&blind, MS, CtState::New, syn());
    let d = seen(&blind, 50 * MS, CtState::Invalid, old_retransmission());
    assert_eq!(
        (d.disposition, d.reason),
        (Disposition::PassOn, Some(Reason::NotProvenBenign))
    );
}

/// When the feed loses messages the engine trusts less, never more: every flow that
/// started before the loss is partial again (its benign judgement is no evidence),
/// until a fresh SYN; a flow picked up after the loss is whole.
#[test]
fn a_feed_loss_makes_older_flows_partial() {
    use nfqwall::engine::Disposition;
    let engine = engine(Mode::Enforce);
    let now = fed_connection(&engine, 20_000);
    engine.feed_lost();
    // More feed after the loss does not restore trust.
    fed(
        &engine,
        now + MS,
        Seg {
            seq: ISN + 20_001,
            ack: Some(5_000_001),
            window: 64240,
            ..templ()
        },
    );
    let d = seen(
        &engine,
        now + 2 * MS,
        CtState::Invalid,
        old_retransmission(),
    );
    assert_eq!(
        (d.disposition, d.reason),
        (Disposition::PassOn, Some(Reason::NotProvenBenign))
    );
    assert_eq!(engine.feed_epoch(), 1);
    // Once that flow is gone, a connection started after the loss is whole.
    engine.expire(8_000_000 * MS);
    assert_eq!(engine.flows().len(), 0);
    let engine_now = fed_connection(&engine, 20_000);
    let d = seen(
        &engine,
        engine_now + MS,
        CtState::Invalid,
        old_retransmission(),
    );
    assert_eq!(d.disposition, Disposition::Vouch, "{d:?}");
}

/// A connection older than the daemon: its first fed packets pick it up mid-stream,
/// it outlives the `syn` timeout while idle, and a forged RST 2^31 away is judged
/// against the window the feed showed: dropped as out of window (without the feed,
/// only `rst_no_state`).
#[test]
fn a_flow_older_than_the_daemon_is_picked_up_from_the_feed() {
    use nfqwall::engine::Disposition;
    let mut config = Config::builtin_default();
    config.daemon.mode = Mode::Enforce;
    config.engine.timeouts.syn = 2;
    let engine = Engine::new(&config);
    let (c, s) = (77_000_000u32, 9_000_000u32);
    fed(
        &engine,
        MS,
        Seg {
            seq: c,
            ack: Some(s),
            window: 502,
            len: 10,
            ..templ()
        },
    );
    fed(
        &engine,
        2 * MS,
        Seg {
            from_client: false,
            seq: s,
            ack: Some(c + 10),
            window: 509,
            ..templ()
        },
    );
    assert_eq!(engine.flows().len(), 1);
    let later = 10_000 * MS;
    engine.expire(later);
    assert_eq!(
        engine.flows().len(),
        1,
        "an idle fed flow outlives the syn timeout"
    );
    let rst = seen(
        &engine,
        later,
        CtState::Invalid,
        Seg {
            seq: (c + 10).wrapping_add(1 << 31),
            rst: true,
            ..templ()
        },
    );
    assert_eq!(rst.disposition, Disposition::Drop);
    assert!(
        matches!(rst.reason, Some(Reason::RstOutOfWindow { .. })),
        "{:?}",
        rst.reason
    );
}

/// Live view, behind a sequence-randomizing middlebox: the client's ACKs carry SACK
/// blocks displaced by the middlebox's offset, conntrack calls them INVALID. Once they
/// prove the middlebox (agreeing displacements), a `handback` service's flow is due
/// for its handback to conntrack: once, in enforce only, never without `handback`.
#[test]
fn a_proven_middlebox_flow_is_due_for_handback_once() {
    use nfqwall::engine::Disposition;
    const OFFSET: u32 = 0x6b2f_1d00;
    const SERVER_ISN: u32 = 3_000_000_000;
    let make = |mode: Mode, handback: bool| {
        let mut config = Config::builtin_default();
        for s in &mut config.services {
            s.mode = Some(mode);
            s.handback = handback;
        }
        Engine::new(&config)
    };
    // The n-th displaced ACK: segment 2 lost, 3..3+n held.
    let displaced = |n: u32| {
        let s = |k: u32| SERVER_ISN.wrapping_add(1 + k * 1448);
        Seg {
            seq: ISN + 1,
            ack: Some(s(2)),
            options: vec![
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::SelectiveAcknowledgement(
                    (s(3).wrapping_add(OFFSET), s(4 + n).wrapping_add(OFFSET)),
                    [None, None, None],
                ),
            ],
            ..templ()
        }
    };
    let run = |engine: &Engine| -> Vec<(Disposition, bool)> {
        let mut now = MS;
        seen(engine, now, CtState::New, syn());
        (0..8)
            .map(|n| {
                now += MS;
                let d = seen(engine, now, CtState::Invalid, displaced(n));
                (d.disposition, d.handback_due)
            })
            .collect()
    };
    let enforce = make(Mode::Enforce, true);
    let got = run(&enforce);
    let due: Vec<usize> = (0..got.len()).filter(|&i| got[i].1).collect();
    assert_eq!(due.len(), 1, "due exactly once: {got:?}");
    let first_vouched = got.iter().position(|(d, _)| *d == Disposition::Vouch);
    assert_eq!(
        Some(due[0]),
        first_vouched,
        "due with the first packet shown benign on the displaced SACK: {got:?}"
    );
    assert!(
        got[due[0]..].iter().all(|(d, _)| *d == Disposition::Vouch),
        "{got:?}"
    );
    // A front end that could not take the request re-arms it: the next proof asks again.
    let d = seen(&enforce, 20 * MS, CtState::Invalid, displaced(9));
    assert!(!d.handback_due);
    enforce.rearm_handback(&d.tuple.unwrap(), 21 * MS);
    assert!(seen(&enforce, 22 * MS, CtState::Invalid, displaced(10)).handback_due);
    assert!(!seen(&enforce, 23 * MS, CtState::Invalid, displaced(11)).handback_due);

    for (engine, what) in [
        (make(Mode::LogOnly, true), "log-only"),
        (make(Mode::Enforce, false), "without handback"),
    ] {
        let got = run(&engine);
        assert!(got.iter().all(|(_, due)| !due), "{what}: {got:?}");
    }
}

/// Only the client's direction queued (a service that queues ESTABLISHED, no feed):
/// conntrack accepted every segment against both windows, and nfqwall, which never
/// saw the server send, knows no window to hold them to. Bulk data beyond what the
/// SYN's ACK implied is then no doubt (before, every segment was
/// `seq_far_outside_window` or `slightly_beyond_window`). A segment far past them
/// given INVALID is still judged, and not vouched for.
#[test]
fn a_one_sided_view_of_accepted_data_raises_no_window_doubt() {
    let engine = engine(Mode::Enforce);
    let d = seen(&engine, 1, CtState::New, syn());
    assert_eq!(d.reason, None);
    let server_isn = 5_000_000u32;
    let mut reasons = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..2_000u32 {
        let d = seen(
            &engine,
            2 + u64::from(i),
            CtState::Established,
            Seg {
                seq: ISN + 1 + i * 1448,
                ack: Some(server_isn + 1),
                len: 1448,
                ..templ()
            },
        );
        if let Some(r) = d.reason {
            *reasons.entry(r.name().to_string()).or_default() += 1;
        }
    }
    assert!(reasons.is_empty(), "doubts on accepted data: {reasons:?}");
    let d = seen(
        &engine,
        5_000,
        CtState::Invalid,
        Seg {
            seq: ISN + 1 + 2_000 * 1448 + (1 << 28),
            ack: Some(server_isn + 1),
            len: 1448,
            ..templ()
        },
    );
    assert_eq!(d.reason.map(|r| r.name()), Some("not_proven_benign"));
    assert_ne!(d.disposition, nfqwall::engine::Disposition::Vouch);
}

/// Live with the shadow feed and every state queued: the client's data is judged at
/// once, the server's ACKs that open its window arrive in the feed's batches, later.
/// Conntrack saw the current window and accepted the data; nfqwall's lagging edge is
/// no ground for a window doubt. An INVALID segment is still held to the edges.
#[test]
fn accepted_data_ahead_of_a_lagging_feed_raises_no_window_doubt() {
    let engine = engine(Mode::Enforce);
    let server_isn = fed_handshake(&engine);
    let mut reasons = std::collections::BTreeMap::<String, u32>::new();
    let mut now = 3 * MS;
    for batch in 0..20u32 {
        // Ten segments judged, then the feed's batch with the ACK of all ten.
        for i in 0..10 {
            now += MS;
            let d = seen(
                &engine,
                now,
                CtState::Established,
                Seg {
                    seq: ISN + 1 + (batch * 10 + i) * 1000,
                    ack: Some(server_isn + 1),
                    len: 1000,
                    ..templ()
                },
            );
            if let Some(r) = d.reason {
                *reasons.entry(r.name().to_string()).or_default() += 1;
            }
        }
        now += MS;
        fed(
            &engine,
            now,
            Seg {
                from_client: false,
                seq: server_isn + 1,
                ack: Some(ISN + 1 + (batch + 1) * 10_000),
                window: 4096,
                ..templ()
            },
        );
    }
    assert!(reasons.is_empty(), "doubts on accepted data: {reasons:?}");
    let d = seen(
        &engine,
        now + MS,
        CtState::Invalid,
        Seg {
            seq: ISN + 1 + 200_000 + (1 << 28),
            ack: Some(server_isn + 1),
            len: 1000,
            ..templ()
        },
    );
    assert_eq!(
        d.reason.map(|r| r.name()),
        Some("seq_far_outside_window"),
        "{d:?}"
    );
    assert_ne!(d.disposition, nfqwall::engine::Disposition::Vouch);
}
