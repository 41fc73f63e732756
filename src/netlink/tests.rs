//! Framing, attributes and answers on hand-built netlink bytes, as the kernel lays
//! them out.

use super::build::{answer as answer_msg, attr, message};
use super::*;

#[test]
fn frames_walk_a_datagram_and_stop_at_a_bad_length() {
    let mut d = message(0x0300, 2, 7, &[1, 2, 3]);
    d.extend(message(NLMSG_DONE, 2, 8, &[0; 4]));
    let frames: Vec<_> = Frames::new(&d).map(Result::unwrap).collect();
    assert_eq!(
        frames,
        [
            Frame {
                kind: 0x0300,
                flags: 2,
                seq: 7,
                body: &[1, 2, 3],
            },
            Frame {
                kind: NLMSG_DONE,
                flags: 2,
                seq: 8,
                body: &[0; 4],
            },
        ]
    );
    // A short tail is no message; a length past the buffer ends the walk.
    d.extend_from_slice(&[9; 15]);
    assert_eq!(Frames::new(&d).count(), 2);
    let mut bad = message(0, 0, 0, &[]);
    bad[0..4].copy_from_slice(&40u32.to_ne_bytes());
    bad.extend(message(0, 0, 0, &[]));
    assert_eq!(
        Frames::new(&bad).collect::<Vec<_>>(),
        [Err(Malformed("netlink message length out of bounds"))]
    );
    for cut in 0..d.len() {
        for _ in Frames::new(&d[..cut]) {}
    }
}

#[test]
fn attributes_drop_their_flags_and_a_cut_one_is_an_error() {
    let mut b = attr(1 | NLA_F_NESTED, &attr(3, &[7]));
    b.extend(attr(2 | 0x4000, &[1, 2, 3, 4, 5]));
    let all: Vec<_> = Attrs::new(&b).map(Result::unwrap).collect();
    assert_eq!(all, [(1, &attr(3, &[7])[..]), (2, &[1, 2, 3, 4, 5][..])]);
    b[12..14].copy_from_slice(&200u16.to_ne_bytes());
    let mut it = Attrs::new(&b);
    assert!(it.next().unwrap().is_ok());
    assert_eq!(
        it.next(),
        Some(Err(Malformed("attribute length out of bounds")))
    );
    assert_eq!(it.next(), None);
}

#[test]
fn byte_helpers_read_host_and_network_order() {
    let b = [1u8, 2, 3, 4, 5];
    assert_eq!(u16_ne(&b, 1), u16::from_ne_bytes([2, 3]));
    assert_eq!(u32_ne(&b, 1), u32::from_ne_bytes([2, 3, 4, 5]));
    assert_eq!(be32(&b), Some(0x0102_0304));
    assert_eq!(be32(&b[2..]), None);
    assert_eq!((align4(0), align4(1), align4(4), align4(5)), (0, 4, 4, 8));
}

#[test]
fn answers_are_found_by_their_request() {
    let mut d = message(0x0300, 0, 0, &[0; 8]);
    d.extend(answer_msg(libc::EBUSY, 0x0401, 3));
    d.extend(answer_msg(0, 0x0401, 4));
    assert!(answer(&d, 2).is_none());
    let e = answer(&d, 3).unwrap().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
    assert!(answer(&d, 4).unwrap().is_ok());
    // An error message too short for the request's header.
    let short = message(NLMSG_ERROR, 0, 5, &0i32.to_ne_bytes());
    assert_eq!(
        ack(&short[16..]),
        Err(Malformed("short netlink error message"))
    );
    assert_eq!(error_errno(&short[16..]), Some(0));
    assert!(answer(&short, 5).is_none());
}

#[test]
fn extended_ack_text_follows_the_echoed_request() {
    let text = attr(NLMSGERR_ATTR_MSG, b"no such entry\0");
    // Capped: the request's header only.
    let mut body = (-libc::ENOENT).to_ne_bytes().to_vec();
    body.extend(&message(0x0100, 5, 1, &[])[..16]);
    body.extend(&text);
    let capped = NLM_F_CAPPED | NLM_F_ACK_TLVS;
    assert_eq!(ext_ack_message(&body, capped), Some(&b"no such entry"[..]));
    assert_eq!(ext_ack_message(&body, NLM_F_CAPPED), None);
    // Not capped: the whole request, padded.
    let mut body = (-libc::ENOENT).to_ne_bytes().to_vec();
    body.extend(message(0x0100, 5, 1, &[1, 2, 3, 4, 5]));
    body.extend(&text);
    assert_eq!(
        ext_ack_message(&body, NLM_F_ACK_TLVS),
        Some(&b"no such entry"[..])
    );
}

#[test]
fn the_writer_lays_out_headers_attributes_and_nests() {
    let mut buf = [0u8; 64];
    let mut w = Writer::new(&mut buf, 0x0102, NLM_F_REQUEST, 9, 2, 0x0304);
    let nest = w.begin(1);
    w.attr(2, &[7, 7, 7]);
    w.end(nest);
    w.attr(3, &[]);
    let len = w.finish();
    let m = &buf[..len];
    let want = message(
        0x0102,
        NLM_F_REQUEST,
        9,
        &[
            &[2, NFNETLINK_V0, 3, 4][..],
            &attr(1 | NLA_F_NESTED, &attr(2, &[7, 7, 7])),
            &attr(3, &[]),
        ]
        .concat(),
    );
    assert_eq!(m, &want[..]);
    let mut out = [0u8; 128];
    let len = config_request(&mut out, 0x0401, 5, 7300, &[(1, &[1][..])]);
    let f = Frames::new(&out[..len]).next().unwrap().unwrap();
    assert_eq!(
        (f.kind, f.flags, f.seq),
        (0x0401, NLM_F_REQUEST | NLM_F_ACK, 5)
    );
    assert_eq!(&f.body[..4], &[0, 0, 0x1c, 0x84]);
    assert_eq!(len, 16 + 4 + 8);
}

/// Three requests the kernel refuses (an unknown nfnetlink_queue message), each
/// answered in its own datagram: one `recv_many` takes all three, each into its slot;
/// a slot too short gets the datagram's full length, so the caller sees it was cut.
/// Needs no privilege: without CAP_NET_ADMIN the answers are `EPERM`.
#[test]
fn one_receive_takes_several_datagrams_each_in_its_slot() {
    let sock = Socket::open().expect("netlink socket");
    sock.bind().expect("bind");
    for seq in 1..=3u32 {
        let req = message(0x0300 | 0x7f, NLM_F_REQUEST | NLM_F_ACK, seq, &[0u8; 4]);
        sock.send(&req, 0).expect("send");
    }
    let mut slots = RecvMany::new(4, 512);
    let got = sock
        .recv_many(&mut slots, libc::MSG_TRUNC | libc::MSG_DONTWAIT)
        .expect("three answers waiting");
    assert_eq!(got, 3);
    let got: Vec<(&[u8], usize)> = slots.datagrams().collect();
    assert_eq!(got.len(), 3);
    for (i, seq) in (1..=3u32).enumerate() {
        let (slot, len) = got[i];
        let e = answer(&slot[..len], seq)
            .unwrap_or_else(|| panic!("slot {i} holds no answer to request {seq}"))
            .unwrap_err();
        assert!(e.raw_os_error().is_some_and(|n| n > 0), "{e}");
    }
    // Nothing more: would block.
    let e = sock.recv_many(&mut slots, libc::MSG_DONTWAIT).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(slots.datagrams().count(), 0);
    // A slot shorter than the answer: cut, and its length says so.
    let mut short = RecvMany::new(2, 16);
    let req = message(0x0300 | 0x7f, NLM_F_REQUEST | NLM_F_ACK, 9, &[0u8; 4]);
    sock.send(&req, 0).expect("send");
    let got = sock
        .recv_many(&mut short, libc::MSG_TRUNC | libc::MSG_DONTWAIT)
        .expect("one answer");
    assert_eq!(got, 1);
    let (_, len) = short.datagrams().next().unwrap();
    assert!(len > 16, "a cut datagram reports its length: {len}");
}
