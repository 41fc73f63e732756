//! Link-layer framings down to the IP header: Ethernet II with 802.1Q/802.1ad tags
//! and PPPoE sessions, Linux cooked captures (SLL and SLL2), BSD null, and raw IP.

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
        LinkType::Ethernet => {
            let (hdr, rest) = take(frame, 14, "Ethernet")?;
            after_ethertype(be16(&hdr[12..14]), rest)
        }
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
}
