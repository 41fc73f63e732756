//! The parser on hand-built netlink bytes, as the kernel lays them out.

use super::*;
use crate::netlink::build::{answer, attr, message};
use crate::netlink::NLMSG_DONE;

/// An NFULNL_MSG_PACKET as nfnetlink_log builds it: nfgenmsg (AF_INET, v0, group 7300),
/// PACKET_HDR, MARK, IFINDEX_INDEV, PREFIX, SEQ and PAYLOAD (odd length: padded).
fn packet_message(seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![libc::AF_INET as u8, 0];
    body.extend_from_slice(&7300u16.to_be_bytes());
    body.extend(attr(NFULA_PACKET_HDR, &[0x08, 0x00, 1, 0]));
    body.extend(attr(NFULA_MARK, &0x0600_0000u32.to_be_bytes()));
    body.extend(attr(NFULA_IFINDEX_INDEV, &3u32.to_be_bytes()));
    body.extend(attr(NFULA_PREFIX, b"in\0"));
    // An attribute type with NLA_F_NET_BYTEORDER set still reads as SEQ.
    body.extend(attr(NFULA_SEQ | 0x4000, &seq.to_be_bytes()));
    body.extend(attr(NFULA_PAYLOAD, payload));
    message(NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET, 0, 0, &body)
}

#[test]
fn a_batch_of_packets_then_done() {
    let mut batch = packet_message(41, &[0x45, 1, 2, 3, 4]);
    batch.extend(packet_message(42, &[0x60; 60]));
    batch.extend(message(NLMSG_DONE, 2, 0, &[0; 4]));
    let items: Vec<_> = Messages::new(&batch).collect();
    assert_eq!(items.len(), 3);
    let Ok(Item::Packet(p)) = items[0] else {
        panic!("{:?}", items[0]);
    };
    assert_eq!(
        p,
        LoggedPacket {
            seq: Some(41),
            hw_protocol: 0x0800,
            hook: 1,
            mark: Some(0x0600_0000),
            indev: Some(3),
            outdev: None,
            prefix: Some(&b"in"[..]),
            payload: &[0x45, 1, 2, 3, 4],
        }
    );
    let Ok(Item::Packet(q)) = items[1] else {
        panic!("{:?}", items[1]);
    };
    assert_eq!((q.seq, q.payload.len()), (Some(42), 60));
    assert_eq!(items[2], Ok(Item::Other));
}

#[test]
fn acknowledgements_and_errors() {
    let config = NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG;
    let err = answer(libc::EBUSY, config, 9);
    assert_eq!(
        Messages::new(&err).collect::<Vec<_>>(),
        [Ok(Item::Ack {
            seq: 9,
            errno: libc::EBUSY
        })]
    );
    assert_eq!(
        Messages::new(&answer(0, config, 10)).collect::<Vec<_>>(),
        [Ok(Item::Ack { seq: 10, errno: 0 })]
    );
}

#[test]
fn malformed_messages_end_the_batch_without_panicking() {
    let good = packet_message(1, &[0x45; 20]);
    // A message length past the buffer.
    let mut bad = good.clone();
    bad[0..4].copy_from_slice(&((good.len() + 100) as u32).to_ne_bytes());
    assert_eq!(
        Messages::new(&bad).collect::<Vec<_>>(),
        [Err(Malformed("netlink message length out of bounds"))]
    );
    // An attribute length past its message.
    let mut bad = good.clone();
    bad[20..22].copy_from_slice(&500u16.to_ne_bytes());
    assert!(matches!(
        Messages::new(&bad).next(),
        Some(Err(Malformed("attribute length out of bounds")))
    ));
    // Truncated anywhere: never a panic, never more than the whole messages.
    for cut in 0..good.len() {
        for item in Messages::new(&good[..cut]) {
            let _ = item;
        }
    }
    // A short tail after a good message is ignored.
    let mut tail = good.clone();
    tail.extend_from_slice(&[1, 2, 3]);
    assert_eq!(Messages::new(&tail).count(), 1);
}

#[test]
fn config_requests_are_laid_out_as_the_kernel_reads_them() {
    let mut out = [0u8; 128];
    let len = config_request(
        &mut out,
        7,
        7300,
        &[
            (NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND][..]),
            (NFULA_CFG_TIMEOUT, &2u32.to_be_bytes()[..]),
        ],
    );
    // 16 header + 4 nfgenmsg + 8 (cmd, padded) + 8 (timeout).
    assert_eq!(len, 36);
    assert_eq!(u32::from_ne_bytes(out[0..4].try_into().unwrap()), 36);
    assert_eq!(u16::from_ne_bytes(out[4..6].try_into().unwrap()), 0x0401);
    assert_eq!(u16::from_ne_bytes(out[6..8].try_into().unwrap()), 5);
    assert_eq!(u32::from_ne_bytes(out[8..12].try_into().unwrap()), 7);
    assert_eq!(&out[16..20], &[0, 0, 0x1c, 0x84]);
    assert_eq!(&out[20..28], &[5, 0, 1, 0, 1, 0, 0, 0]);
    assert_eq!(&out[28..36], &[8, 0, 4, 0, 0, 0, 0, 2]);
}

#[test]
fn gaps_in_the_numbers_count_lost_messages() {
    let mut g = SeqGaps::default();
    assert_eq!(g.next(100), 0, "the first number sets the start");
    assert_eq!(g.next(101), 0);
    assert_eq!(g.next(105), 3);
    assert_eq!(g.next(1106), 1000);
    let mut g = SeqGaps::default();
    g.next(u32::MAX - 1);
    assert_eq!(g.next(u32::MAX), 0);
    assert_eq!(g.next(0), 0, "numbers wrap");
    assert_eq!(g.next(2), 1);
    assert_eq!(g.next(1), 0, "a number from the past is no loss");
    assert_eq!(g.next(2), 0);
}

#[test]
fn options_size_the_batch_buffer_to_the_batch() {
    let o = Options::for_feed(7300, 128, 64);
    assert_eq!(o.nlbufsiz, 384 * 64);
    assert_eq!(Options::for_feed(1, 128, 1).nlbufsiz, MIN_NLBUFSIZ);
    assert_eq!(Options::for_feed(1, 65535, 1024).nlbufsiz, MAX_NLBUFSIZ);
}
