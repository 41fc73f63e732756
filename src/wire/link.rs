//! Link-layer framings down to the IP header: Ethernet II with 802.1Q/802.1ad tags
//! and PPPoE sessions, Linux cooked captures (SLL and SLL2), BSD null, raw IP,
//! netfilter's NFLOG, and 802.11 data frames (bare or behind radiotap) with LLC/SNAP.

use crate::engine::meta::LinkType;

/// EtherType values this module follows.
mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
    pub const QINQ_OLD: u16 = 0x9100;
    pub const PPPOE_SESSION: u16 = 0x8864;
}

/// PPP protocol numbers carried in a PPPoE session (RFC 1661, RFC 5072).
mod ppp {
    pub const IPV4: u16 = 0x0021;
    pub const IPV6: u16 = 0x0057;
}

/// More tags than this is not a real network; it bounds the work on hostile input.
const MAX_TAGS: usize = 4;

/// What sits under the link layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPayload<'a> {
    /// An IP packet (version still to be checked by the IP parser), and the length
    /// the link layer declares for it, when it declares one (PPPoE does).
    Ip(&'a [u8], Option<usize>),
    /// Something other than IP (ARP, LLDP, PPPoE discovery, ...), by EtherType or PPP number.
    NotIp(u16),
}

/// Why the link layer could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// The frame ends inside a link-layer header.
    Truncated {
        /// Which framing was being read.
        layer: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// More VLAN tags than any real network stacks.
    TooManyTags,
}

impl core::fmt::Display for LinkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            LinkError::Truncated { layer, need, have } => {
                write!(
                    f,
                    "{layer} header needs {need} bytes, frame has {have} (truncated frame)"
                )
            }
            LinkError::TooManyTags => {
                write!(
                    f,
                    "more than {MAX_TAGS} VLAN tags (malformed or crafted frame)"
                )
            }
        }
    }
}

fn take<'a>(
    bytes: &'a [u8],
    need: usize,
    layer: &'static str,
) -> Result<(&'a [u8], &'a [u8]), LinkError> {
    if bytes.len() < need {
        return Err(LinkError::Truncated {
            layer,
            need,
            have: bytes.len(),
        });
    }
    Ok(bytes.split_at(need))
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Strips the link layer and returns what it carries.
pub fn strip(link: LinkType, frame: &[u8]) -> Result<LinkPayload<'_>, LinkError> {
    match link {
        LinkType::RawIp => Ok(LinkPayload::Ip(frame, None)),
        LinkType::Ethernet => strip_ethernet(frame),
        LinkType::Ieee80211 => strip_ieee80211(frame),
        LinkType::Ieee80211Radiotap => {
            // Version 0, padding, then the header length (little endian) that
            // covers the present bitmaps and fields.
            let (hdr, _) = take(frame, 8, "radiotap")?;
            let len = usize::from(u16::from_le_bytes([hdr[2], hdr[3]]));
            let (radiotap, rest) = take(frame, len.max(8), "radiotap")?;
            let data_pad = radiotap_flags(radiotap).is_some_and(|f| f & 0x20 != 0);
            ieee80211(rest, data_pad)
        }
        LinkType::Nflog => strip_nflog(frame),
        LinkType::LinuxSll => {
            // 16 bytes: packet type, ARPHRD, address length, 8 address bytes, protocol.
            let (hdr, rest) = take(frame, 16, "Linux cooked (SLL)")?;
            after_ethertype(be16(&hdr[14..16]), rest)
        }
        LinkType::LinuxSll2 => {
            // 20 bytes: protocol first, then reserved, ifindex, ARPHRD, type, address.
            let (hdr, rest) = take(frame, 20, "Linux cooked (SLL2)")?;
            after_ethertype(be16(&hdr[0..2]), rest)
        }
        LinkType::Null => {
            // The address family is in the capturing host's byte order: try both.
            let (hdr, rest) = take(frame, 4, "BSD loopback")?;
            let le = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let be = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            // AF_INET is 2 everywhere; AF_INET6 is 10, 24, 28 or 30 depending on the OS.
            let is_ip = |af: u32| matches!(af, 2 | 10 | 24 | 28 | 30);
            if is_ip(le) || is_ip(be) {
                Ok(LinkPayload::Ip(rest, None))
            } else {
                Ok(LinkPayload::NotIp(le as u16))
            }
        }
    }
}

/// Ethernet II (possibly tagged) from its destination address.
pub fn strip_ethernet(frame: &[u8]) -> Result<LinkPayload<'_>, LinkError> {
    let (hdr, rest) = take(frame, 14, "Ethernet")?;
    after_ethertype(be16(&hdr[12..14]), rest)
}

/// What [`LinkPayload::NotIp`] carries for 802.11 and NFLOG frames that hold no
/// readable packet (management and control frames, null data, encrypted or
/// fragmented payloads, NFLOG records without a payload).
pub const NO_PAYLOAD: u16 = 0;

/// An IEEE 802.11 frame without FCS, from its frame control field: data frames
/// only, the header sized by the DS bits, QoS and HT control; the payload must be
/// LLC/SNAP. Of an A-MSDU only the first subframe is read.
pub fn strip_ieee80211(frame: &[u8]) -> Result<LinkPayload<'_>, LinkError> {
    ieee80211(frame, false)
}

/// The radiotap Flags field (present bit 1), if present: it follows the present
/// bitmaps and, when present (bit 0), the 8-byte-aligned TSFT.
fn radiotap_flags(h: &[u8]) -> Option<u8> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(h.get(at..at + 4)?.try_into().ok()?))
    };
    let first = word(4)?;
    if first & 0x02 == 0 {
        return None;
    }
    let mut at = 4;
    let mut w = first;
    // Extended bitmaps: bit 31 says another word follows (bounded by the header).
    while w & 0x8000_0000 != 0 {
        at += 4;
        w = word(at)?;
    }
    at += 4;
    if first & 0x01 != 0 {
        at = (at + 7) & !7;
        at += 8;
    }
    h.get(at).copied()
}

/// 802.11 as [`strip_ieee80211`]; `data_pad` (radiotap's flag) says the header is
/// padded to a multiple of 4 bytes before the payload.
fn ieee80211(frame: &[u8], data_pad: bool) -> Result<LinkPayload<'_>, LinkError> {
    let (fc, _) = take(frame, 2, "802.11")?;
    let (version, kind, subtype, flags) = (fc[0] & 0x03, (fc[0] >> 2) & 0x03, fc[0] >> 4, fc[1]);
    // Data frames (type 2) that carry data (not the null subtypes), unprotected
    // and not a fragment.
    if version != 0 || kind != 2 || subtype & 0x04 != 0 || flags & 0x44 != 0 {
        return Ok(LinkPayload::NotIp(NO_PAYLOAD));
    }
    let four_addresses = flags & 0x03 == 0x03;
    let qos = subtype & 0x08 != 0;
    let qos_at = if four_addresses { 30 } else { 24 };
    let mut len = qos_at;
    if qos {
        len += 2;
        if flags & 0x80 != 0 {
            len += 4; // HT control
        }
    }
    let (hdr, _) = take(frame, len, "802.11 data")?;
    let (_, body) = take(
        frame,
        if data_pad { (len + 3) & !3 } else { len },
        "802.11 data",
    )?;
    // A non-first fragment has no LLC header either.
    if hdr[22] & 0x0f != 0 {
        return Ok(LinkPayload::NotIp(NO_PAYLOAD));
    }
    if qos && hdr[qos_at] & 0x80 != 0 {
        // A-MSDU: subframes of destination, source, length, then LLC/SNAP.
        let (sub, rest) = take(body, 14, "A-MSDU subframe")?;
        let n = usize::from(be16(&sub[12..14]));
        return llc_snap(&rest[..n.min(rest.len())]);
    }
    llc_snap(body)
}

/// LLC with a SNAP header (AA AA 03, an encapsulation OUI, the EtherType).
fn llc_snap(b: &[u8]) -> Result<LinkPayload<'_>, LinkError> {
    let (llc, rest) = take(b, 8, "LLC/SNAP")?;
    if llc[..3] != [0xaa, 0xaa, 0x03] || !matches!(llc[3..6], [0, 0, 0] | [0, 0, 0xf8]) {
        return Ok(LinkPayload::NotIp(NO_PAYLOAD));
    }
    after_ethertype(be16(&llc[6..8]), rest)
}

/// NFULA_PAYLOAD: the TLV of an NFLOG record that holds the packet.
const NFULA_PAYLOAD: u16 = 9;

/// NFLOG records bigger than this many TLVs are not followed.
const MAX_NFLOG_TLVS: usize = 64;

/// An NFLOG record (LINKTYPE_NFLOG): address family, version, resource id, then
/// TLVs whose length (header included) and type are in the capturing host's byte
/// order, each padded to 4 bytes. The packet is the value of NFULA_PAYLOAD.
fn strip_nflog(frame: &[u8]) -> Result<LinkPayload<'_>, LinkError> {
    let (hdr, mut tlvs) = take(frame, 4, "NFLOG")?;
    let family = hdr[0];
    for _ in 0..MAX_NFLOG_TLVS {
        if tlvs.len() < 4 {
            break;
        }
        let fits = |len: usize| (4..=tlvs.len()).contains(&len);
        let le = usize::from(u16::from_le_bytes([tlvs[0], tlvs[1]]));
        let be = usize::from(be16(&tlvs[0..2]));
        let (len, kind) = if fits(le) {
            (le, u16::from_le_bytes([tlvs[2], tlvs[3]]))
        } else if fits(be) {
            (be, be16(&tlvs[2..4]))
        } else {
            return Err(LinkError::Truncated {
                layer: "NFLOG TLV",
                need: le.min(be).max(4),
                have: tlvs.len(),
            });
        };
        // The top bits of the type are netlink's nested and byte-order flags.
        if kind & 0x3fff == NFULA_PAYLOAD {
            return match family {
                // AF_INET, AF_INET6.
                2 | 10 => Ok(LinkPayload::Ip(&tlvs[4..len], None)),
                other => Ok(LinkPayload::NotIp(u16::from(other))),
            };
        }
        tlvs = tlvs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Ok(LinkPayload::NotIp(NO_PAYLOAD))
}

fn after_ethertype(mut ty: u16, mut rest: &[u8]) -> Result<LinkPayload<'_>, LinkError> {
    let mut tags = 0;
    while matches!(ty, ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_OLD) {
        tags += 1;
        if tags > MAX_TAGS {
            return Err(LinkError::TooManyTags);
        }
        let (tag, inner) = take(rest, 4, "802.1Q tag")?;
        ty = be16(&tag[2..4]);
        rest = inner;
    }
    match ty {
        ethertype::IPV4 | ethertype::IPV6 => Ok(LinkPayload::Ip(rest, None)),
        ethertype::PPPOE_SESSION => {
            // RFC 2516: ver/type, code, session id, length; then the PPP protocol field.
            let (hdr, inner) = take(rest, 8, "PPPoE session")?;
            // The PPPoE length covers the PPP protocol field and the packet; bytes past
            // it are Ethernet padding, whatever the IP header claims.
            let declared = usize::from(be16(&hdr[4..6])).saturating_sub(2);
            match be16(&hdr[6..8]) {
                ppp::IPV4 | ppp::IPV6 => Ok(LinkPayload::Ip(
                    &inner[..declared.min(inner.len())],
                    Some(declared),
                )),
                other => Ok(LinkPayload::NotIp(other)),
            }
        }
        other => Ok(LinkPayload::NotIp(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACS: [u8; 12] = [0; 12];

    fn eth(rest: &[u8]) -> Vec<u8> {
        let mut v = MACS.to_vec();
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn ethernet_ipv4() {
        let f = eth(&[0x08, 0x00, 0x45]);
        assert_eq!(
            strip(LinkType::Ethernet, &f),
            Ok(LinkPayload::Ip(&[0x45][..], None))
        );
    }

    #[test]
    fn qinq_then_pppoe_then_ipv4() {
        let f = eth(&[
            0x88, 0xa8, 0x00, 0x64, // outer tag, VLAN 100
            0x81, 0x00, 0x00, 0xc8, // inner tag, VLAN 200
            0x88, 0x64, // PPPoE session
            0x11, 0x00, 0x00, 0x01, 0x00, 0x03, // ver/type, code, session 1, length 3
            0x00, 0x21, // PPP: IPv4
            0x45, 0x00, 0x00, // one byte of packet, then Ethernet padding
        ]);
        assert_eq!(
            strip(LinkType::Ethernet, &f),
            Ok(LinkPayload::Ip(&[0x45][..], Some(1)))
        );
    }

    #[test]
    fn arp_is_not_ip() {
        let f = eth(&[0x08, 0x06, 0, 1]);
        assert_eq!(
            strip(LinkType::Ethernet, &f),
            Ok(LinkPayload::NotIp(0x0806))
        );
    }

    #[test]
    fn sll_and_sll2() {
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x86, 0xdd, 0x60]);
        assert_eq!(
            strip(LinkType::LinuxSll, &sll),
            Ok(LinkPayload::Ip(&[0x60][..], None))
        );
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.push(0x45);
        assert_eq!(
            strip(LinkType::LinuxSll2, &sll2),
            Ok(LinkPayload::Ip(&[0x45][..], None))
        );
    }

    #[test]
    fn truncated_headers_are_errors() {
        assert_eq!(
            strip(LinkType::Ethernet, &MACS),
            Err(LinkError::Truncated {
                layer: "Ethernet",
                need: 14,
                have: 12
            })
        );
        let f = eth(&[0x81, 0x00, 0x00]);
        assert!(matches!(
            strip(LinkType::Ethernet, &f),
            Err(LinkError::Truncated {
                layer: "802.1Q tag",
                ..
            })
        ));
        let f = eth(&[0x88, 0x64, 0x11, 0x00]);
        assert!(matches!(
            strip(LinkType::Ethernet, &f),
            Err(LinkError::Truncated {
                layer: "PPPoE session",
                ..
            })
        ));
    }

    #[test]
    fn endless_tags_are_refused() {
        let mut f = MACS.to_vec();
        for _ in 0..8 {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        assert_eq!(strip(LinkType::Ethernet, &f), Err(LinkError::TooManyTags));
    }

    /// An 802.11 data frame header (3 addresses), `fc` the frame control bytes.
    fn dot11(fc: [u8; 2], qos: bool) -> Vec<u8> {
        let mut v = fc.to_vec();
        v.extend_from_slice(&[0; 22]); // duration, 3 addresses, sequence control
        if qos {
            v.extend_from_slice(&[0, 0]);
        }
        v
    }

    const SNAP_IPV4: [u8; 9] = [0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00, 0x45];

    #[test]
    fn ieee80211_data_and_qos_data() {
        let mut f = dot11([0x08, 0x01], false); // data, to DS
        f.extend_from_slice(&SNAP_IPV4);
        assert_eq!(
            strip(LinkType::Ieee80211, &f),
            Ok(LinkPayload::Ip(&[0x45][..], None))
        );
        let mut f = dot11([0x88, 0x03], false); // QoS data, WDS: 4 addresses
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&SNAP_IPV4);
        assert_eq!(
            strip(LinkType::Ieee80211, &f),
            Ok(LinkPayload::Ip(&[0x45][..], None))
        );
        let mut f = dot11([0x88, 0x82], true); // QoS data with HT control (order)
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(&SNAP_IPV4);
        assert_eq!(
            strip(LinkType::Ieee80211, &f),
            Ok(LinkPayload::Ip(&[0x45][..], None))
        );
    }

    #[test]
    fn ieee80211_frames_without_a_readable_packet() {
        for fc in [
            [0x80, 0x00], // beacon
            [0xd4, 0x00], // ACK
            [0x48, 0x01], // null data
            [0x08, 0x41], // protected
            [0x08, 0x05], // more fragments
        ] {
            let mut f = dot11(fc, false);
            f.extend_from_slice(&SNAP_IPV4);
            assert_eq!(
                strip(LinkType::Ieee80211, &f),
                Ok(LinkPayload::NotIp(NO_PAYLOAD)),
                "{fc:02x?}"
            );
        }
        let mut f = dot11([0x08, 0x00], false);
        f.extend_from_slice(&[0xf0, 0xf0, 0x03, 0x00]); // not SNAP
        f.extend_from_slice(&[0; 8]);
        assert_eq!(
            strip(LinkType::Ieee80211, &f),
            Ok(LinkPayload::NotIp(NO_PAYLOAD))
        );
        assert!(matches!(
            strip(LinkType::Ieee80211, &[0x08, 0x00, 0, 0]),
            Err(LinkError::Truncated { .. })
        ));
    }

    #[test]
    fn ieee80211_amsdu_first_subframe() {
        let mut f = dot11([0x88, 0x00], false);
        f.extend_from_slice(&[0x80, 0x00]); // QoS control: A-MSDU present
        f.extend_from_slice(&[0; 12]);
        f.extend_from_slice(&9u16.to_be_bytes());
        f.extend_from_slice(&SNAP_IPV4);
        f.extend_from_slice(&[0, 0, 0]); // padding to 4 bytes
        assert_eq!(
            strip(LinkType::Ieee80211, &f),
            Ok(LinkPayload::Ip(&[0x45][..], None))
        );
    }

    #[test]
    fn radiotap_then_80211_with_and_without_data_padding() {
        // Radiotap: version, pad, length 9, present = Flags only, flags = 0.
        let mut f = vec![0, 0, 9, 0, 0x02, 0, 0, 0, 0x00];
        let mut qos = dot11([0x88, 0x01], true);
        qos.extend_from_slice(&SNAP_IPV4);
        f.extend_from_slice(&qos);
        assert_eq!(
            strip(LinkType::Ieee80211Radiotap, &f),
            Ok(LinkPayload::Ip(&[0x45][..], None))
        );
        // TSFT and Flags with the data-pad flag: the 26-byte QoS header is padded to 28.
        let mut f = vec![0, 0, 17, 0, 0x03, 0, 0, 0];
        f.extend_from_slice(&[0; 8]); // TSFT, already 8-aligned
        f.push(0x20); // flags: data pad
        let mut qos = dot11([0x88, 0x01], true);
        qos.extend_from_slice(&[0, 0]);
        qos.extend_from_slice(&SNAP_IPV4);
        f.extend_from_slice(&qos);
        assert_eq!(
            strip(LinkType::Ieee80211Radiotap, &f),
            Ok(LinkPayload::Ip(&[0x45][..], None))
        );
        // A header length past the frame.
        assert!(matches!(
            strip(LinkType::Ieee80211Radiotap, &[0, 0, 64, 0, 0, 0, 0, 0]),
            Err(LinkError::Truncated { .. })
        ));
    }

    fn tlv_le(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((value.len() + 4) as u16).to_le_bytes().to_vec();
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn nflog_payload_tlv() {
        // AF_INET, version 0, resource id 5; a prefix TLV, then the payload.
        let mut f = vec![2, 0, 0, 5];
        f.extend_from_slice(&tlv_le(10, b"nfqwall\0"));
        f.extend_from_slice(&tlv_le(1, &[0x08, 0x00, 3, 0]));
        f.extend_from_slice(&tlv_le(9, &[0x45, 0x00, 0x00]));
        assert_eq!(
            strip(LinkType::Nflog, &f),
            Ok(LinkPayload::Ip(&[0x45, 0x00, 0x00][..], None))
        );
        // Big-endian TLVs (a big-endian capturing host).
        let mut f = vec![10, 0, 0, 5];
        f.extend_from_slice(&[0, 5, 0, 9, 0x60, 0, 0, 0]);
        assert_eq!(
            strip(LinkType::Nflog, &f),
            Ok(LinkPayload::Ip(&[0x60][..], None))
        );
        // No payload TLV; a family other than IP.
        let mut f = vec![2, 0, 0, 5];
        f.extend_from_slice(&tlv_le(10, b"x"));
        assert_eq!(
            strip(LinkType::Nflog, &f),
            Ok(LinkPayload::NotIp(NO_PAYLOAD))
        );
        let mut f = vec![7, 0, 0, 5];
        f.extend_from_slice(&tlv_le(9, &[0x45]));
        assert_eq!(strip(LinkType::Nflog, &f), Ok(LinkPayload::NotIp(7)));
        // A TLV longer than the record.
        let f = [2, 0, 0, 5, 0x40, 0, 9, 0, 0x45];
        assert!(matches!(
            strip(LinkType::Nflog, &f),
            Err(LinkError::Truncated {
                layer: "NFLOG TLV",
                ..
            })
        ));
    }
}
