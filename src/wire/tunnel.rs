//! Encapsulations peeled to reach the inner packet, as Wireshark does: GRE (IPv4,
//! IPv6, transparent Ethernet, ERSPAN types I, II and III, 802.11 from Aruba access
//! points, WCCP redirects), VXLAN (UDP 4789), Geneve (UDP 6081), GTP-U (UDP 2152,
//! with extension headers), IPv4 in IP (protocol 4) and IPv6 in IP (protocol 41).
//!
//! [`peel`] reads one tunnel header and returns the bytes of the IP packet inside,
//! or `None` when the payload is not a tunnel it knows or not IP inside; the caller
//! then judges the packet at the layer it has. Nothing here allocates, and the
//! number of nested tunnels is bounded by [`MAX_TUNNELS`].

use super::link::{self, LinkPayload};

/// Nested tunnels beyond this are not followed (the packet is judged at the layer
/// reached): bounds the work on crafted input.
pub const MAX_TUNNELS: usize = 6;

/// One encapsulation layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encap {
    /// GRE (RFC 2784/2890), version 0.
    Gre,
    /// Cisco ERSPAN type I, II or III, carried in GRE.
    Erspan,
    /// VXLAN (RFC 7348), UDP port 4789.
    Vxlan,
    /// Geneve (RFC 8926), UDP port 6081.
    Geneve,
    /// GTP-U (3GPP TS 29.281) T-PDU, UDP port 2152.
    GtpU,
    /// IPv4 in IPv4 or IPv6 (IP protocol 4).
    IpInIp,
    /// IPv6 in IPv4 (6in4) or IPv6 (IP protocol 41).
    Ipv6InIp,
}

impl Encap {
    /// The lower-case name used in output.
    pub fn name(self) -> &'static str {
        match self {
            Encap::Gre => "gre",
            Encap::Erspan => "erspan",
            Encap::Vxlan => "vxlan",
            Encap::Geneve => "geneve",
            Encap::GtpU => "gtp-u",
            Encap::IpInIp => "ip-in-ip",
            Encap::Ipv6InIp => "ipv6-in-ip",
        }
    }
}

/// The encapsulations peeled from a packet, outermost first. Copy, no heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tunnels {
    layers: [Encap; MAX_TUNNELS],
    len: u8,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels::NONE
    }
}

impl Tunnels {
    /// No tunnel: the packet was analysed at its outer IP header.
    pub const NONE: Tunnels = Tunnels {
        layers: [Encap::Gre; MAX_TUNNELS],
        len: 0,
    };

    /// Returns true if and only if no encapsulation was peeled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of layers peeled.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// The layers, outermost first.
    pub fn iter(&self) -> impl Iterator<Item = Encap> + '_ {
        self.layers[..self.len()].iter().copied()
    }

    /// Appends the layers of `more` after these; returns false (and changes
    /// nothing) when that would exceed [`MAX_TUNNELS`].
    pub fn push_all(&mut self, more: &Tunnels) -> bool {
        if self.len() + more.len() > MAX_TUNNELS {
            return false;
        }
        for e in more.iter() {
            self.layers[self.len()] = e;
            self.len += 1;
        }
        true
    }

    fn of(layers: &[Encap]) -> Tunnels {
        let mut t = Tunnels::NONE;
        for (i, e) in layers.iter().enumerate().take(MAX_TUNNELS) {
            t.layers[i] = *e;
            t.len = i as u8 + 1;
        }
        t
    }
}

/// What [`peel`] found inside a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inner<'a> {
    /// The layers peeled to get here (GRE then ERSPAN, for example).
    pub layers: Tunnels,
    /// The inner packet, from its IP header.
    pub ip: &'a [u8],
    /// Its length on the wire at most (the outer payload's wire length, less the
    /// tunnel headers), whatever its own header claims.
    pub max_len: usize,
    /// A length the inner link layer declares for the packet (PPPoE does).
    pub declared: Option<usize>,
}

/// IP protocol numbers that carry tunnels.
mod ipproto {
    pub const IPIP: u8 = 4;
    pub const IPV6: u8 = 41;
    pub const GRE: u8 = 47;
    pub const UDP: u8 = 17;
}

/// UDP ports of the UDP tunnels (IANA).
mod port {
    pub const VXLAN: u16 = 4789;
    pub const GENEVE: u16 = 6081;
    pub const GTP_U: u16 = 2152;
}

/// GRE protocol types (EtherTypes) followed.
mod gre_proto {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    pub const TEB: u16 = 0x6558;
    pub const ERSPAN_I_II: u16 = 0x88be;
    pub const ERSPAN_III: u16 = 0x22eb;
    pub const WCCP: u16 = 0x883e;
    /// Aruba access points send 802.11 frames (no FCS) in GRE with 0x8200..0x8370.
    pub const ARUBA_FIRST: u16 = 0x8200;
    pub const ARUBA_LAST: u16 = 0x8370;
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Reads one tunnel under an IP header whose transport protocol is `proto` and
/// whose payload is `payload` (`wire_len` bytes on the wire). Returns the inner IP
/// packet, or `None` when this is not a tunnel nfqwall follows, or when what the
/// tunnel carries is not IP or cannot be read.
pub fn peel(proto: u8, payload: &[u8], wire_len: usize) -> Option<Inner<'_>> {
    let (layers, inner) = match proto {
        ipproto::IPIP => (
            Tunnels::of(&[Encap::IpInIp]),
            LinkPayload::Ip(payload, None),
        ),
        ipproto::IPV6 => (
            Tunnels::of(&[Encap::Ipv6InIp]),
            LinkPayload::Ip(payload, None),
        ),
        ipproto::GRE => gre(payload)?,
        ipproto::UDP => udp(payload)?,
        _ => return None,
    };
    let LinkPayload::Ip(ip, declared) = inner else {
        return None;
    };
    // `ip` lies inside `payload`; how far in tells the wire bytes left for it.
    let offset = (ip.as_ptr() as usize).checked_sub(payload.as_ptr() as usize)?;
    Some(Inner {
        layers,
        ip,
        max_len: wire_len.saturating_sub(offset),
        declared,
    })
}

/// GRE version 0: flags, protocol type, then checksum/offset, key and sequence
/// number when their flags say so; source routing (R) is not followed.
fn gre(b: &[u8]) -> Option<(Tunnels, LinkPayload<'_>)> {
    let flags = *b.first()?;
    let version = b.get(1)? & 0x07;
    if version != 0 || flags & 0x40 != 0 {
        return None;
    }
    let proto = be16(b, 2)?;
    let mut at = 4;
    if flags & 0x80 != 0 {
        at += 4; // checksum and reserved
    }
    if flags & 0x20 != 0 {
        at += 4; // key
    }
    let sequenced = flags & 0x10 != 0;
    if sequenced {
        at += 4; // sequence number
    }
    let rest = b.get(at..)?;
    let gre_only = Tunnels::of(&[Encap::Gre]);
    let with_erspan = Tunnels::of(&[Encap::Gre, Encap::Erspan]);
    Some(match proto {
        gre_proto::IPV4 | gre_proto::IPV6 => (gre_only, LinkPayload::Ip(rest, None)),
        gre_proto::TEB => (gre_only, link::strip_ethernet(rest).ok()?),
        gre_proto::ERSPAN_I_II => {
            // Type I has no ERSPAN header and no GRE sequence number; type II has both.
            let frame = if sequenced { erspan_ii(rest)? } else { rest };
            (with_erspan, link::strip_ethernet(frame).ok()?)
        }
        gre_proto::ERSPAN_III => (with_erspan, erspan_iii(rest)?),
        gre_proto::WCCP => {
            // A WCCP v2 redirect header (4 bytes) may precede the IP packet; as in
            // Wireshark, a first nibble of 4 means it is absent.
            let ip = if rest.first()? >> 4 == 4 {
                rest
            } else {
                rest.get(4..)?
            };
            (gre_only, LinkPayload::Ip(ip, None))
        }
        p if (gre_proto::ARUBA_FIRST..=gre_proto::ARUBA_LAST).contains(&p) && p & 0x0f == 0 => {
            (gre_only, link::strip_ieee80211(rest).ok()?)
        }
        _ => return None,
    })
}

/// ERSPAN type II: an 8-byte header whose version field is 1, then Ethernet.
fn erspan_ii(b: &[u8]) -> Option<&[u8]> {
    if b.first()? >> 4 != 1 {
        return None;
    }
    b.get(8..)
}

/// ERSPAN type III: a 12-byte header (version 2), an 8-byte platform-specific
/// subheader when its O flag is set, then the frame, which must be Ethernet
/// (frame type 0).
fn erspan_iii(b: &[u8]) -> Option<LinkPayload<'_>> {
    if b.get(..12)?.first()? >> 4 != 2 {
        return None;
    }
    let frame_type = (be16(b, 10)? >> 10) & 0x1f;
    let platform = b[11] & 0x01 != 0;
    let at = if platform { 20 } else { 12 };
    if frame_type != 0 {
        return None;
    }
    link::strip_ethernet(b.get(at..)?).ok()
}

/// UDP tunnels by port, the lower port tried first as Wireshark does.
fn udp(b: &[u8]) -> Option<(Tunnels, LinkPayload<'_>)> {
    let (sport, dport) = (be16(b, 0)?, be16(b, 2)?);
    let body = b.get(8..)?;
    let (lo, hi) = if sport <= dport {
        (sport, dport)
    } else {
        (dport, sport)
    };
    for p in [lo, hi] {
        let found = match p {
            port::VXLAN => vxlan(body),
            port::GENEVE => geneve(body),
            port::GTP_U => gtp_u(body),
            _ => continue,
        };
        return found;
    }
    None
}

/// VXLAN: 8 bytes (flags, reserved, VNI, reserved), then Ethernet. Like Wireshark,
/// the flags and reserved fields are not checked.
fn vxlan(b: &[u8]) -> Option<(Tunnels, LinkPayload<'_>)> {
    Some((
        Tunnels::of(&[Encap::Vxlan]),
        link::strip_ethernet(b.get(8..)?).ok()?,
    ))
}

/// Geneve: version 0, options length in 4-byte words, protocol type, VNI; then
/// the options, then Ethernet (0x6558) or IP.
fn geneve(b: &[u8]) -> Option<(Tunnels, LinkPayload<'_>)> {
    let first = *b.first()?;
    if first >> 6 != 0 {
        return None;
    }
    let opt_len = usize::from(first & 0x3f) * 4;
    let proto = be16(b, 2)?;
    let rest = b.get(8 + opt_len..)?;
    let inner = match proto {
        gre_proto::TEB => link::strip_ethernet(rest).ok()?,
        gre_proto::IPV4 | gre_proto::IPV6 => LinkPayload::Ip(rest, None),
        _ => return None,
    };
    Some((Tunnels::of(&[Encap::Geneve]), inner))
}

/// Extension headers followed in a GTP-U packet before giving up.
const MAX_GTP_EXTENSIONS: usize = 16;

/// GTP-U version 1 T-PDU (message type 255): 8 bytes, 4 more when any of the E, S
/// or PN flags is set, then the chain of extension headers; the payload is IPv4 or
/// IPv6 by its version nibble.
fn gtp_u(b: &[u8]) -> Option<(Tunnels, LinkPayload<'_>)> {
    let flags = *b.first()?;
    // Version 1, protocol type GTP (not GTP').
    if flags >> 5 != 1 || flags & 0x10 == 0 || *b.get(1)? != 0xff {
        return None;
    }
    let mut at = 8;
    if flags & 0x07 != 0 {
        let mut next = *b.get(11)?;
        at = 12;
        let mut n = 0;
        while flags & 0x04 != 0 && next != 0 {
            n += 1;
            if n > MAX_GTP_EXTENSIONS {
                return None;
            }
            let len = usize::from(*b.get(at)?) * 4;
            if len == 0 {
                return None;
            }
            next = *b.get(at + len - 1)?;
            at += len;
        }
    }
    let rest = b.get(at..)?;
    if !matches!(rest.first()? >> 4, 4 | 6) {
        return None;
    }
    Some((Tunnels::of(&[Encap::GtpU]), LinkPayload::Ip(rest, None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: [u8; 2] = [0x45, 0x00];
    const IP6: [u8; 2] = [0x60, 0x00];

    fn eth_ipv4() -> Vec<u8> {
        let mut v = vec![0u8; 12];
        v.extend_from_slice(&[0x08, 0x00]);
        v.extend_from_slice(&IP);
        v
    }

    fn names(t: &Tunnels) -> Vec<&'static str> {
        t.iter().map(Encap::name).collect()
    }

    fn peeled(proto: u8, b: &[u8]) -> Option<(Vec<&'static str>, &[u8])> {
        peel(proto, b, b.len()).map(|i| (names(&i.layers), i.ip))
    }

    #[test]
    fn ip_in_ip_and_ipv6_in_ip() {
        assert_eq!(peeled(4, &IP), Some((vec!["ip-in-ip"], &IP[..])));
        assert_eq!(peeled(41, &IP6), Some((vec!["ipv6-in-ip"], &IP6[..])));
        assert_eq!(peeled(6, &IP), None);
    }

    #[test]
    fn gre_with_checksum_key_and_sequence() {
        let mut b = vec![0xb0, 0x00, 0x08, 0x00]; // C, K, S; IPv4
        b.extend_from_slice(&[0; 12]);
        b.extend_from_slice(&IP);
        let inner = peel(47, &b, b.len() + 100).unwrap();
        assert_eq!(names(&inner.layers), ["gre"]);
        assert_eq!(inner.ip, &IP);
        assert_eq!(inner.max_len, 102);
    }

    #[test]
    fn gre_versions_and_routing_not_followed() {
        let mut b = vec![0x00, 0x01, 0x88, 0x0b]; // version 1 (PPTP)
        b.extend_from_slice(&IP);
        assert_eq!(peeled(47, &b), None);
        let mut b = vec![0x40, 0x00, 0x08, 0x00]; // routing present
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&IP);
        assert_eq!(peeled(47, &b), None);
        assert_eq!(peeled(47, &[0x00, 0x00, 0x08]), None);
    }

    #[test]
    fn gre_transparent_ethernet() {
        let mut b = vec![0x20, 0x00, 0x65, 0x58, 0, 0, 0, 7]; // key 7
        b.extend_from_slice(&eth_ipv4());
        assert_eq!(peeled(47, &b), Some((vec!["gre"], &IP[..])));
        // ARP inside: not IP, judged at the outer layer.
        let mut b = vec![0x00, 0x00, 0x65, 0x58];
        b.extend_from_slice(&[0u8; 12]);
        b.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert_eq!(peeled(47, &b), None);
    }

    #[test]
    fn erspan_types() {
        // Type I: no sequence number, no ERSPAN header.
        let mut b = vec![0x00, 0x00, 0x88, 0xbe];
        b.extend_from_slice(&eth_ipv4());
        assert_eq!(peeled(47, &b), Some((vec!["gre", "erspan"], &IP[..])));
        // Type II: sequence number, 8-byte header with version 1.
        let mut b = vec![0x10, 0x00, 0x88, 0xbe, 0, 0, 0, 1];
        b.extend_from_slice(&[0x10, 0x01, 0, 0x64, 0, 0, 0, 0]);
        b.extend_from_slice(&eth_ipv4());
        assert_eq!(peeled(47, &b), Some((vec!["gre", "erspan"], &IP[..])));
        // Type III with the platform subheader (O flag).
        let mut b = vec![0x10, 0x00, 0x22, 0xeb, 0, 0, 0, 1];
        b.extend_from_slice(&[0x20, 0x01, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0x01]);
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&eth_ipv4());
        assert_eq!(peeled(47, &b), Some((vec!["gre", "erspan"], &IP[..])));
        // Type III without it, but a frame type other than Ethernet.
        let mut b = vec![0x10, 0x00, 0x22, 0xeb, 0, 0, 0, 1];
        b.extend_from_slice(&[0x20, 0x01, 0, 0x64, 0, 0, 0, 0, 0, 0, 0x08, 0x00]);
        b.extend_from_slice(&eth_ipv4());
        assert_eq!(peeled(47, &b), None);
        // Type II with a wrong version.
        let mut b = vec![0x10, 0x00, 0x88, 0xbe, 0, 0, 0, 1];
        b.extend_from_slice(&[0x20, 0x01, 0, 0x64, 0, 0, 0, 0]);
        b.extend_from_slice(&eth_ipv4());
        assert_eq!(peeled(47, &b), None);
    }

    #[test]
    fn gre_wccp_with_and_without_redirect_header() {
        let mut b = vec![0x00, 0x00, 0x88, 0x3e, 0x02, 0, 0, 0];
        b.extend_from_slice(&IP);
        assert_eq!(peeled(47, &b), Some((vec!["gre"], &IP[..])));
        let mut b = vec![0x00, 0x00, 0x88, 0x3e];
        b.extend_from_slice(&IP);
        assert_eq!(peeled(47, &b), Some((vec!["gre"], &IP[..])));
    }

    #[test]
    fn gre_aruba_80211() {
        let mut b = vec![0x00, 0x00, 0x82, 0x00];
        // QoS data, from DS: FC, duration, 3 addresses, sequence, QoS control.
        b.extend_from_slice(&[0x88, 0x02, 0, 0]);
        b.extend_from_slice(&[0; 18]);
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
        b.extend_from_slice(&IP);
        assert_eq!(peeled(47, &b), Some((vec!["gre"], &IP[..])));
        b[3] = 0x05; // not an Aruba type
        assert_eq!(peeled(47, &b), None);
    }

    fn udp(sport: u16, dport: u16, body: &[u8]) -> Vec<u8> {
        let mut v = sport.to_be_bytes().to_vec();
        v.extend_from_slice(&dport.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn vxlan_to_ethernet() {
        let mut body = vec![0x08, 0, 0, 0, 0, 0, 0x2a, 0];
        body.extend_from_slice(&eth_ipv4());
        let b = udp(50000, 4789, &body);
        let inner = peel(17, &b, b.len()).unwrap();
        assert_eq!(names(&inner.layers), ["vxlan"]);
        assert_eq!(inner.ip, &IP);
        assert_eq!(inner.max_len, 2);
        // Not on the port: not a tunnel.
        assert_eq!(peeled(17, &udp(50000, 4790, &body)), None);
    }

    #[test]
    fn geneve_with_options() {
        let mut body = vec![0x02, 0, 0x65, 0x58, 0, 0, 1, 0]; // 2 words of options
        body.extend_from_slice(&[0xff; 8]);
        body.extend_from_slice(&eth_ipv4());
        assert_eq!(
            peeled(17, &udp(6081, 40000, &body)),
            Some((vec!["geneve"], &IP[..]))
        );
        let mut body = vec![0x00, 0, 0x86, 0xdd, 0, 0, 1, 0];
        body.extend_from_slice(&IP6);
        assert_eq!(
            peeled(17, &udp(40000, 6081, &body)),
            Some((vec!["geneve"], &IP6[..]))
        );
        // Version 1 is not Geneve as we know it; options running past the end.
        let mut bad = body.clone();
        bad[0] = 0x40;
        assert_eq!(peeled(17, &udp(40000, 6081, &bad)), None);
        let mut bad = body.clone();
        bad[0] = 0x3f;
        assert_eq!(peeled(17, &udp(40000, 6081, &bad)), None);
    }

    #[test]
    fn gtp_u_plain_sequenced_and_with_extensions() {
        let mut body = vec![0x30, 0xff, 0, 2, 0, 0, 0, 1];
        body.extend_from_slice(&IP);
        assert_eq!(
            peeled(17, &udp(2152, 2152, &body)),
            Some((vec!["gtp-u"], &IP[..]))
        );
        // S flag: 4 more bytes, next extension 0.
        let mut body = vec![0x32, 0xff, 0, 6, 0, 0, 0, 1, 0, 7, 0, 0];
        body.extend_from_slice(&IP6);
        assert_eq!(
            peeled(17, &udp(9000, 2152, &body)),
            Some((vec!["gtp-u"], &IP6[..]))
        );
        // E flag: a PDU session container (0x85), one word, then none.
        let mut body = vec![0x34, 0xff, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0x85];
        body.extend_from_slice(&[1, 0x10, 0x09, 0x00]);
        body.extend_from_slice(&IP);
        assert_eq!(
            peeled(17, &udp(2152, 2152, &body)),
            Some((vec!["gtp-u"], &IP[..]))
        );
        // A zero-length extension is malformed.
        let mut bad = body.clone();
        bad[12] = 0;
        assert_eq!(peeled(17, &udp(2152, 2152, &bad)), None);
        // An echo request (type 1) carries no user packet.
        let mut echo = vec![0x32, 0x01, 0, 4, 0, 0, 0, 0, 0, 1, 0, 0];
        echo.extend_from_slice(&IP);
        assert_eq!(peeled(17, &udp(2152, 2152, &echo)), None);
    }

    #[test]
    fn tunnels_are_bounded() {
        let mut t = Tunnels::NONE;
        let one = Tunnels::of(&[Encap::Gre]);
        for _ in 0..MAX_TUNNELS {
            assert!(t.push_all(&one));
        }
        assert!(!t.push_all(&one));
        assert_eq!(t.len(), MAX_TUNNELS);
    }
}
