//! The download through a sequence-randomizing middlebox that leaves the client's
//! SACK blocks in its own space, `OFFSET` away from the server's: one builder for
//! `tests/replay_middlebox.rs`, `tests/report_html.rs` and the fuzz seeds
//! (`examples/fuzz_seeds.rs`), each of which includes this file with `#[path]`.

#![allow(dead_code)]

use etherparse::{PacketBuilder, TcpOptionElement};

/// The middlebox's offset.
pub const OFFSET: u32 = 0x3d09_0000;

/// Writes a classic pcap (LINKTYPE_RAW) of the given packets, 1 ms apart.
pub fn pcap_raw(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&101u32.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        f.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        f.extend_from_slice(&(i as u32 * 1000).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(p);
    }
    f
}

/// One TCP segment of the download (client 192.0.2.10:51000, server 198.51.100.80:80).
pub fn seg(
    from_client: bool,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    len: usize,
    opts: &[TcpOptionElement],
) -> Vec<u8> {
    let (src, dst, sp, dp) = if from_client {
        ([192, 0, 2, 10], [198, 51, 100, 80], 51000, 80)
    } else {
        ([198, 51, 100, 80], [192, 0, 2, 10], 80, 51000)
    };
    let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, seq, 1024);
    if syn {
        b = b.syn();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    let b = b.options(opts).unwrap();
    let mut out = Vec::new();
    b.write(&mut out, &vec![0u8; len]).unwrap();
    out
}

/// The handshake, then `segments` server segments of `size` bytes with segment 5
/// lost; after each from the seventh on, the client SACKs what it holds beyond the
/// hole, in its own (shifted) space.
pub fn download(segments: u32, size: u32) -> Vec<Vec<u8>> {
    let (c, s) = (7_000u32, 2_000_000_000u32);
    let syn_opts = [
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::WindowScale(7),
    ];
    let mut p = vec![
        seg(true, c, None, true, 0, &syn_opts),
        seg(false, s, Some(c + 1), true, 0, &syn_opts),
        seg(true, c + 1, Some(s + 1), false, 0, &[]),
    ];
    for i in 0..segments {
        p.push(seg(
            false,
            s + 1 + i * size,
            Some(c + 1),
            false,
            size as usize,
            &[],
        ));
        if i >= 6 {
            let sack = TcpOptionElement::SelectiveAcknowledgement(
                (
                    (s + 1 + 6 * size).wrapping_add(OFFSET),
                    (s + 1 + (i + 1) * size).wrapping_add(OFFSET),
                ),
                [None, None, None],
            );
            p.push(seg(
                true,
                c + 1,
                Some(s + 1 + 5 * size),
                false,
                0,
                &[TcpOptionElement::Noop, TcpOptionElement::Noop, sack],
            ));
        }
    }
    p
}
