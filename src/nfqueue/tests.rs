//! The parser and the message builders on hand-built netlink bytes, as the kernel
//! lays them out.

use super::*;
use crate::netlink::build::{answer, attr, message};
use crate::netlink::{Attrs, NLMSG_DONE, NLM_F_ACK, NLM_F_REQUEST};

fn packet_hdr(id: u32, proto: u16, hook: u8) -> Vec<u8> {
    let mut h = id.to_be_bytes().to_vec();
    h.extend_from_slice(&proto.to_be_bytes());
    h.push(hook);
    h
}

/// An NFQNL_MSG_PACKET as nfnetlink_queue builds it for queue 3: nfgenmsg (AF_INET,
/// v0, queue), PACKET_HDR, MARK, IFINDEX_INDEV, CT (nested, with CTA_STATUS) and
/// CT_INFO, then PAYLOAD (odd length: padded) and `extra`.
fn packet_message(id: u32, payload: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut body = vec![libc::AF_INET as u8, 0];
    body.extend_from_slice(&3u16.to_be_bytes());
    body.extend(attr(NFQA_PACKET_HDR, &packet_hdr(id, 0x0800, 1)));
    body.extend(attr(NFQA_MARK, &0x0600_0000u32.to_be_bytes()));
    body.extend(attr(NFQA_IFINDEX_INDEV, &2u32.to_be_bytes()));
    let mut ct = attr(CTA_STATUS, &0x18au32.to_be_bytes());
    ct.extend(attr(7, &30u32.to_be_bytes())); // CTA_TIMEOUT: skipped
    body.extend(attr(NFQA_CT | 0x8000, &ct));
    // NLA_F_NET_BYTEORDER set: still CT_INFO.
    body.extend(attr(NFQA_CT_INFO | 0x4000, &3u32.to_be_bytes()));
    body.extend(attr(NFQA_PAYLOAD, payload));
    body.extend_from_slice(extra);
    message(NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET, 0, 0, &body)
}

#[test]
fn two_packets_in_one_datagram_then_done() {
    let mut dgram = packet_message(41, &[0x45, 1, 2, 3, 4], &[]);
    dgram.extend(packet_message(
        42,
        &[0x60; 60],
        &[
            attr(NFQA_CAP_LEN, &1500u32.to_be_bytes()),
            attr(NFQA_SKB_INFO, &NFQA_SKB_GSO.to_be_bytes()),
        ]
        .concat(),
    ));
    dgram.extend(message(NLMSG_DONE, 2, 0, &[0; 4]));
    let items: Vec<_> = Messages::new(&dgram).collect();
    assert_eq!(items.len(), 3);
    let Ok(Item::Packet(p)) = items[0] else {
        panic!("{:?}", items[0]);
    };
    assert_eq!(
        p,
        QueuedPacket {
            queue: 3,
            id: 41,
            hw_protocol: 0x0800,
            hook: 1,
            mark: 0x0600_0000,
            indev: 2,
            cap_len: None,
            skb_info: 0,
            ct_info: Some(3),
            ct_status: Some(0x18a),
            payload: &[0x45, 1, 2, 3, 4],
        }
    );
    assert!(p.whole());
    assert_eq!(p.wire_len(), 5);
    let Ok(Item::Packet(q)) = items[1] else {
        panic!("{:?}", items[1]);
    };
    assert_eq!((q.id, q.payload.len(), q.cap_len), (42, 60, Some(1500)));
    assert_eq!(q.wire_len(), 1500);
    assert!(!q.whole(), "cut at the copy range: never sent back");
    assert_eq!(items[2], Ok(Item::Other));
}

#[test]
fn a_packet_without_conntrack_has_no_ct_info() {
    // INVALID and UNTRACKED packets: the kernel attaches neither NFQA_CT nor CT_INFO.
    let mut body = vec![libc::AF_INET6 as u8, 0, 0, 0];
    body.extend(attr(NFQA_PACKET_HDR, &packet_hdr(7, 0x86dd, 1)));
    body.extend(attr(NFQA_PAYLOAD, &[0x60; 40]));
    let m = message(NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET, 0, 0, &body);
    let Some(Ok(Item::Packet(p))) = Messages::new(&m).next() else {
        panic!()
    };
    assert_eq!(
        (p.ct_info, p.mark, p.indev, p.hw_protocol),
        (None, 0, 0, 0x86dd)
    );
    // A nest alone (no CT_INFO) reads as ctinfo 0, as the nfq crate read it.
    let mut body2 = body.clone();
    body2.extend(attr(
        NFQA_CT | 0x8000,
        &attr(CTA_STATUS, &8u32.to_be_bytes()),
    ));
    let m = message(NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET, 0, 0, &body2);
    let Some(Ok(Item::Packet(p))) = Messages::new(&m).next() else {
        panic!()
    };
    assert_eq!((p.ct_info, p.ct_status), (Some(0), Some(8)));
}

#[test]
fn acknowledgements_and_errors() {
    let m = answer(
        libc::EOPNOTSUPP,
        NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_CONFIG,
        9,
    );
    assert_eq!(
        Messages::new(&m).collect::<Vec<_>>(),
        vec![Ok(Item::Ack {
            seq: 9,
            errno: libc::EOPNOTSUPP
        })]
    );
    let m = answer(0, 0, 10);
    assert_eq!(
        Messages::new(&m).next(),
        Some(Ok(Item::Ack { seq: 10, errno: 0 }))
    );
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let good = packet_message(1, &[0x45; 20], &[]);
    // Message length beyond the buffer.
    let mut long = good.clone();
    long[0..4].copy_from_slice(&999u32.to_ne_bytes());
    assert!(matches!(Messages::new(&long).next(), Some(Err(_))));
    // An attribute whose length runs past the message: cut the datagram inside the
    // payload attribute and fix the message length to the cut.
    let cut = good.len() - 8;
    let mut trunc = good[..cut].to_vec();
    trunc[0..4].copy_from_slice(&(cut as u32).to_ne_bytes());
    assert_eq!(
        Messages::new(&trunc).next(),
        Some(Err(Malformed("attribute length out of bounds")))
    );
    // A short fixed-size attribute.
    let mut body = vec![2, 0, 0, 0];
    body.extend(attr(NFQA_PACKET_HDR, &packet_hdr(1, 0x0800, 1)));
    body.extend(attr(NFQA_MARK, &[1, 2]));
    let m = message(NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET, 0, 0, &body);
    assert_eq!(
        Messages::new(&m).next(),
        Some(Err(Malformed("short NFQA_MARK")))
    );
    // A short packet header, and no packet header at all.
    let mut body = vec![2, 0, 0, 0];
    body.extend(attr(NFQA_PACKET_HDR, &[0, 0, 0, 1]));
    let m = message(NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET, 0, 0, &body);
    assert!(matches!(Messages::new(&m).next(), Some(Err(_))));
    let mut body = vec![2, 0, 0, 0];
    body.extend(attr(NFQA_PAYLOAD, &[0x45; 20]));
    let m = message(NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET, 0, 0, &body);
    assert_eq!(
        Messages::new(&m).next(),
        Some(Err(Malformed("packet message without NFQA_PACKET_HDR")))
    );
    // A malformed nest.
    let mut body = vec![2, 0, 0, 0];
    body.extend(attr(NFQA_PACKET_HDR, &packet_hdr(1, 0x0800, 1)));
    body.extend(attr(NFQA_CT | 0x8000, &[200, 0, 3, 0, 0, 0, 0, 0]));
    let m = message(NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET, 0, 0, &body);
    assert!(matches!(Messages::new(&m).next(), Some(Err(_))));
    // Every prefix of a good datagram parses or errs, never panics.
    for n in 0..good.len() {
        for _ in Messages::new(&good[..n]) {}
        let mut fixed = good[..n].to_vec();
        if n >= 4 {
            fixed[0..4].copy_from_slice(&(n as u32).to_ne_bytes());
        }
        for _ in Messages::new(&fixed) {}
    }
}

#[test]
fn a_batch_verdict_is_these_bytes() {
    let mut out = [0u8; BATCH_VERDICT_MARK_LEN];
    let len = batch_verdict(&mut out, 3, 0x0102_0304, NF_ACCEPT, None);
    assert_eq!(len, BATCH_VERDICT_LEN);
    assert_eq!(len, 32);
    let mut expected = Vec::new();
    expected.extend_from_slice(&32u32.to_ne_bytes());
    expected.extend_from_slice(&(0x0300u16 | NFQNL_MSG_VERDICT_BATCH).to_ne_bytes());
    expected.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    expected.extend_from_slice(&0u32.to_ne_bytes()); // seq
    expected.extend_from_slice(&0u32.to_ne_bytes()); // pid
    expected.extend_from_slice(&[0, 0, 0, 3]); // nfgenmsg: AF_UNSPEC, v0, queue 3
    expected.extend_from_slice(&12u16.to_ne_bytes());
    expected.extend_from_slice(&NFQA_VERDICT_HDR.to_ne_bytes());
    expected.extend_from_slice(&[0, 0, 0, 1]); // NF_ACCEPT, big endian
    expected.extend_from_slice(&[1, 2, 3, 4]); // the id, big endian
    assert_eq!(&out[..len], &expected[..]);
}

#[test]
fn a_single_verdict_with_mark_and_payload() {
    let mut out = vec![0u8; VERDICT_OVERHEAD + 8];
    let payload = [0x45u8, 0, 0, 5, 9];
    let len = verdict(&mut out, 0, 77, NF_ACCEPT, Some(0x10), Some(&payload)).unwrap();
    let m = &out[..len];
    assert_eq!(
        u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
        len
    );
    assert_eq!(
        u16::from_ne_bytes(m[4..6].try_into().unwrap()),
        NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_VERDICT
    );
    let attrs: Vec<_> = Attrs::new(&m[20..]).map(|a| a.unwrap()).collect();
    assert_eq!(
        attrs,
        vec![
            (NFQA_VERDICT_HDR, &[0, 0, 0, 1, 0, 0, 0, 77][..]),
            (NFQA_MARK, &[0, 0, 0, 0x10][..]),
            (NFQA_PAYLOAD, &payload[..]),
        ]
    );
    // A drop: the verdict header alone.
    let len = verdict(&mut out, 0, 78, NF_DROP, None, None).unwrap();
    assert_eq!(len, 32);
    // No room: refused, not a panic.
    assert_eq!(
        verdict(&mut out[..20], 0, 1, NF_ACCEPT, Some(1), None),
        None
    );
}

#[test]
fn a_config_request_binds_with_the_queue_in_res_id() {
    let mut out = [0u8; 128];
    let len = config_request(
        &mut out,
        5,
        0x0102,
        &[(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0][..])],
    );
    assert_eq!(len, 28);
    assert_eq!(
        u16::from_ne_bytes([out[6], out[7]]),
        NLM_F_REQUEST | NLM_F_ACK
    );
    assert_eq!(u32::from_ne_bytes(out[8..12].try_into().unwrap()), 5);
    assert_eq!(&out[16..20], &[0, 0, 1, 2]);
    assert_eq!(&out[20..28], &[8, 0, 1, 0, 1, 0, 0, 0][..]);
    // The packed 5-byte params attribute is padded to 8.
    let len = config_request(
        &mut out,
        6,
        0,
        &[(NFQA_CFG_PARAMS, &[0, 0, 2, 0, NFQNL_COPY_PACKET][..])],
    );
    assert_eq!(len, 20 + 12);
    assert_eq!(u16::from_ne_bytes([out[20], out[21]]), 9);
}

#[test]
fn a_marked_batch_verdict_adds_the_mark_attribute() {
    let mut out = [0u8; BATCH_VERDICT_MARK_LEN];
    let len = batch_verdict(&mut out, 3, 0x0102_0304, NF_ACCEPT, Some(0x0a0b_0c0d));
    assert_eq!(len, BATCH_VERDICT_MARK_LEN);
    assert_eq!(u32::from_ne_bytes([out[0], out[1], out[2], out[3]]), 40);
    // The plain batch verdict's bytes, then NFQA_MARK with the mark, big endian.
    let mut plain = [0u8; BATCH_VERDICT_MARK_LEN];
    let n = batch_verdict(&mut plain, 3, 0x0102_0304, NF_ACCEPT, None);
    assert_eq!(&out[4..n], &plain[4..n]);
    assert_eq!(&out[n..n + 2], &8u16.to_ne_bytes());
    assert_eq!(&out[n + 2..n + 4], &NFQA_MARK.to_ne_bytes());
    assert_eq!(&out[n + 4..len], &[0x0a, 0x0b, 0x0c, 0x0d]);
}

#[test]
fn a_batch_hands_back_the_mark_its_accepts_set() {
    let mut b = Batch::default();
    assert!(!b.push_marked(7, Some(0x40)));
    assert!(!b.push_marked(8, Some(0x40)));
    assert_eq!(b.mark(), Some(0x40));
    assert_eq!(b.take_marked(), Some((8, Some(0x40))));
    assert_eq!(b.mark(), None, "an empty batch sets no mark");
    assert!(!b.push(9));
    assert_eq!(b.take_marked(), Some((9, None)));
}

#[test]
fn a_batch_holds_at_most_max_and_hands_its_last_id() {
    let mut b = Batch::default();
    assert_eq!(b.take(), None);
    for id in 1..Batch::MAX {
        assert!(!b.push(id));
    }
    assert!(b.push(100), "full at MAX");
    assert_eq!(b.len(), Batch::MAX);
    assert_eq!(b.take(), Some(100));
    assert!(b.is_empty());
    assert_eq!(b.take(), None);
}

#[test]
fn a_partial_checksum_is_completed() {
    for v6 in [false, true] {
        let b = if v6 {
            etherparse::PacketBuilder::ipv6([0x20; 16], [0x21; 16], 64)
        } else {
            etherparse::PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
        };
        let mut pkt = Vec::new();
        b.tcp(40000, 80, 1, 100)
            .ack(4000)
            .write(&mut pkt, b"odd")
            .unwrap();
        let at = if v6 { 40 } else { 20 };
        let want = [pkt[at + 16], pkt[at + 17]];
        // As CHECKSUM_PARTIAL leaves it: the pseudo-header's sum only (any value).
        pkt[at + 16] = 0x12;
        pkt[at + 17] = 0x34;
        assert!(complete_tcp_checksum(&mut pkt, at));
        assert_eq!([pkt[at + 16], pkt[at + 17]], want, "v6 {v6}");
    }
    // Not TCP right after the header: left alone.
    let mut short = [0x45u8; 30];
    assert!(!complete_tcp_checksum(&mut short, 24));
    assert!(!complete_tcp_checksum(&mut [], 0));
}
