//! Checked, zero-copy views of untrusted packet bytes.
//!
//! [`parse`] is the one entry point: every packet, from NFQUEUE or from a capture,
//! goes through it. It never panics and never allocates; anything it cannot read is a
//! typed [`ParseError`] that the engine turns into a counted, named verdict.

pub mod link;
pub mod tcp_options;
pub mod tunnel;

use crate::engine::meta::LinkType;
use crate::engine::seq::SeqNumber;
use core::fmt;
use core::net::IpAddr;
use etherparse::{IpNumber, Ipv6ExtensionSlice, LaxIpSlice, LenSource, TcpSlice};
use link::{LinkError, LinkPayload};
use tcp_options::{OptionError, TcpOptions};
use tunnel::Tunnels;

/// IP protocol numbers used across the crate.
pub mod proto {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;

    /// The lower-case name used in output, or `None` for other numbers.
    pub fn name(p: u8) -> Option<&'static str> {
        Some(match p {
            ICMP => "icmp",
            TCP => "tcp",
            UDP => "udp",
            ICMPV6 => "icmpv6",
            _ => return None,
        })
    }
}

/// One IP packet, read: the innermost one when the packet travels in a tunnel.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// The encapsulations peeled to reach this packet, outermost first (none for a
    /// packet read at its outer IP header).
    pub tunnel: Tunnels,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP packet length as the header declares it (what the wire carried).
    pub ip_len: u32,
    /// The transport protocol number after any IPv6 extension headers.
    pub proto: u8,
    /// Set when the packet is an IP fragment.
    pub fragment: Option<Fragment>,
    /// The transport layer, as far as it could be read.
    pub transport: Transport<'a>,
}

/// Fragment facts (IPv4 flags/offset or the IPv6 fragment header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Offset of this fragment's data, in 8-byte units.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
}

impl Fragment {
    /// Returns true if and only if this fragment carries the transport header.
    pub fn is_first(self) -> bool {
        self.offset == 0
    }
}

/// The transport layer of a packet.
#[derive(Clone, Copy, Debug)]
pub enum Transport<'a> {
    /// A TCP segment.
    Tcp(TcpSegment<'a>),
    /// A UDP datagram.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// An ICMP or ICMPv6 message.
    Icmp {
        /// ICMP type.
        kind: u8,
        /// ICMP code.
        code: u8,
    },
    /// A non-first fragment: no transport header to read.
    Fragment,
    /// A protocol nfqwall does not inspect.
    Other,
}

/// A TCP segment, read.
#[derive(Clone, Copy, Debug)]
pub struct TcpSegment<'a> {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: SeqNumber,
    /// Acknowledgement number (meaningful only with ACK).
    pub ack: SeqNumber,
    /// Flag byte (FIN 0x01 ... CWR 0x80).
    pub flags: u8,
    /// Raw (unscaled) window field.
    pub window: u16,
    /// TCP header length in bytes.
    pub header_len: u16,
    /// Payload length from the IP lengths (a capture may hold fewer bytes).
    pub payload_len: u32,
    /// The payload bytes present in the buffer.
    pub payload: &'a [u8],
    /// The options, or why they could not be read.
    pub options: Result<TcpOptions, OptionError>,
}

/// Why a packet could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The link layer was unreadable.
    Link(LinkError),
    /// Not an IP packet (EtherType or PPP protocol given).
    NotIp(u16),
    /// The IP header was unreadable.
    Ip(&'static str),
    /// The TCP header was unreadable.
    Tcp(&'static str),
    /// The UDP header was unreadable.
    Udp(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Link(e) => e.fmt(f),
            ParseError::NotIp(t) => write!(f, "not IP (protocol 0x{t:04x})"),
            ParseError::Ip(why) => write!(f, "IP header unreadable: {why}"),
            ParseError::Tcp(why) => write!(f, "TCP header unreadable: {why}"),
            ParseError::Udp(why) => write!(f, "UDP header unreadable: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Reads a packet: link layer, IP (with extension headers and fragments), transport.
///
/// `wire_len` is the frame's length on the wire; a capture with a snap length holds
/// fewer bytes, and lengths are then taken from the headers up to `wire_len`.
pub fn parse(link: LinkType, frame: &[u8], wire_len: u32) -> Result<Packet<'_>, ParseError> {
    parse_following(link, frame, wire_len, true)
}

/// [`parse`], following tunnels to the innermost packet only if `follow_tunnels`.
/// The live daemon does not: the kernel's conntrack state and rules apply to the
/// packet it queued, the outer one, and so must nfqwall's judgement.
pub fn parse_following(
    link: LinkType,
    frame: &[u8],
    wire_len: u32,
    follow_tunnels: bool,
) -> Result<Packet<'_>, ParseError> {
    let (ip_bytes, max_len) = match link::strip(link, frame).map_err(ParseError::Link)? {
        LinkPayload::Ip(b, Some(declared)) => (b, declared),
        LinkPayload::Ip(b, None) => {
            let missing = (wire_len as usize).saturating_sub(frame.len());
            (b, b.len() + missing)
        }
        LinkPayload::NotIp(t) => return Err(ParseError::NotIp(t)),
    };
    parse_ip_following(ip_bytes, max_len, follow_tunnels)
}

/// Reads a packet that starts at its IP header. The packet is at most `max_len`
/// bytes long on the wire, whatever its header claims (the frame ends there).
///
/// Tunnels ([`tunnel::peel`]) are followed to the innermost IP packet, which is
/// the one returned; an outer packet that is a fragment is not followed, and a
/// tunnel whose content is not a readable IP header leaves the packet as it is.
pub fn parse_ip(bytes: &[u8], max_len: usize) -> Result<Packet<'_>, ParseError> {
    parse_ip_following(bytes, max_len, true)
}

/// [`parse_ip`], following tunnels only if `follow_tunnels`.
pub fn parse_ip_following(
    bytes: &[u8],
    max_len: usize,
    follow_tunnels: bool,
) -> Result<Packet<'_>, ParseError> {
    let mut layer = ip_layer(bytes, max_len)?;
    let mut tunnel = Tunnels::NONE;
    while follow_tunnels && layer.fragment.is_none() {
        let Some(inner) = tunnel::peel(layer.proto, layer.payload, layer.wire_payload_len as usize)
        else {
            break;
        };
        let inner_max = inner.declared.unwrap_or(inner.max_len).min(inner.max_len);
        let Ok(next) = ip_layer(inner.ip, inner_max) else {
            break;
        };
        if !tunnel.push_all(&inner.layers) {
            break;
        }
        layer = next;
    }
    let transport = if layer.fragment.is_some_and(|f| !f.is_first()) {
        Transport::Fragment
    } else {
        parse_transport(IpNumber(layer.proto), layer.payload, layer.wire_payload_len)?
    };
    Ok(Packet {
        tunnel,
        src: layer.src,
        dst: layer.dst,
        ip_len: layer.ip_len,
        proto: layer.proto,
        fragment: layer.fragment,
        transport,
    })
}

/// One IP header, read, and the payload after it.
#[cfg_attr(test, derive(Debug, PartialEq))]
struct IpLayer<'a> {
    src: IpAddr,
    dst: IpAddr,
    ip_len: u32,
    proto: u8,
    fragment: Option<Fragment>,
    payload: &'a [u8],
    /// The payload's length on the wire.
    wire_payload_len: u32,
}

fn ip_layer(bytes: &[u8], max_len: usize) -> Result<IpLayer<'_>, ParseError> {
    match ipv4_layer(bytes, max_len) {
        Some(layer) => Ok(layer),
        None => any_ip_layer(bytes, max_len),
    }
}

/// The common case read directly: an IPv4 header without an authentication header.
/// Gives exactly what [`any_ip_layer`] gives (etherparse's lax reading: a total
/// length below the header, or above the bytes, falls back to the bytes), which
/// `ipv4_fast_path_agrees_with_etherparse` checks; `None` for anything else.
fn ipv4_layer(bytes: &[u8], max_len: usize) -> Option<IpLayer<'_>> {
    const AUTH: u8 = 51;
    let first = *bytes.first()?;
    let header_len = usize::from(first & 0xf) * 4;
    if first >> 4 != 4 || header_len < 20 || bytes.len() < header_len || bytes[9] == AUTH {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    let on_wire = |len: usize| (total.min(max_len) as u32).saturating_sub(len as u32);
    let (payload, wire_payload_len) = if total < header_len {
        let p = &bytes[header_len..];
        (p, p.len() as u32)
    } else if bytes.len() < total {
        (&bytes[header_len..], on_wire(header_len))
    } else {
        (&bytes[header_len..total], on_wire(header_len))
    };
    let frag = u16::from_be_bytes([bytes[6], bytes[7]]);
    let (offset, more) = (frag & 0x1fff, frag & 0x2000 != 0);
    let addr = |at: usize| IpAddr::from([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some(IpLayer {
        src: addr(12),
        dst: addr(16),
        ip_len: header_len as u32 + wire_payload_len,
        proto: bytes[9],
        fragment: (more || offset != 0).then_some(Fragment { offset, more }),
        payload,
        wire_payload_len,
    })
}

fn any_ip_layer(bytes: &[u8], max_len: usize) -> Result<IpLayer<'_>, ParseError> {
    use etherparse::err::ip::LaxHeaderSliceError as E;
    let (ip, _ext_err) = LaxIpSlice::from_slice(bytes).map_err(|e| {
        ParseError::Ip(match e {
            E::Len(_) => "shorter than its header (truncated packet)",
            E::Content(c) => match c {
                etherparse::err::ip::HeaderError::UnsupportedIpVersion { .. } => {
                    "version is neither 4 nor 6 (not an IP packet)"
                }
                _ => "header length field below the minimum (malformed header)",
            },
        })
    })?;
    let payload = ip.payload();
    let header_overhead = payload.payload.as_ptr() as usize - bytes.as_ptr() as usize;
    let (declared_len, fragment) = match &ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            let frag = h.is_fragmenting_payload().then(|| Fragment {
                offset: h.fragments_offset().value(),
                more: h.more_fragments(),
            });
            (u32::from(h.total_len()), frag)
        }
        LaxIpSlice::Ipv6(v6) => {
            let mut frag = None;
            // Walk only the bytes of the headers etherparse validated: when the chain
            // ends in an invalid header, its iterator would go on past them (out of
            // bounds, in unsafe code) to read the header the last valid one names.
            let exts = v6.extensions();
            let mut left = exts.slice().len();
            let mut iter = exts.clone().into_iter();
            while left > 0 {
                let Some(ext) = iter.next() else { break };
                left = left.saturating_sub(match &ext {
                    Ipv6ExtensionSlice::HopByHop(h)
                    | Ipv6ExtensionSlice::Routing(h)
                    | Ipv6ExtensionSlice::DestinationOptions(h) => h.slice().len(),
                    Ipv6ExtensionSlice::Fragment(h) => h.slice().len(),
                    Ipv6ExtensionSlice::Authentication(h) => h.slice().len(),
                });
                if let Ipv6ExtensionSlice::Fragment(fh) = ext {
                    if fh.is_fragmenting_payload() {
                        frag = Some(Fragment {
                            offset: fh.fragment_offset().value(),
                            more: fh.more_fragments(),
                        });
                    }
                }
            }
            (40 + u32::from(v6.header().payload_length()), frag)
        }
    };
    // A capture's snap length can cut the payload; the header's length is what was
    // on the wire. Offloaded (TSO) captures carry a zero length: then trust the bytes.
    let wire_payload_len = if payload.len_source == LenSource::Slice && !payload.incomplete {
        payload.payload.len() as u32
    } else {
        declared_len
            .min(max_len as u32)
            .saturating_sub(header_overhead as u32)
    };
    Ok(IpLayer {
        src: ip.source_addr(),
        dst: ip.destination_addr(),
        ip_len: header_overhead as u32 + wire_payload_len,
        proto: payload.ip_number.0,
        fragment,
        payload: payload.payload,
        wire_payload_len,
    })
}

fn parse_transport(
    number: IpNumber,
    bytes: &[u8],
    wire_len: u32,
) -> Result<Transport<'_>, ParseError> {
    Ok(match number.0 {
        proto::TCP => {
            let tcp = TcpSlice::from_slice(bytes).map_err(|e| {
                ParseError::Tcp(match e {
                    etherparse::err::tcp::HeaderSliceError::Len(_) => {
                        "shorter than its data offset says (truncated segment)"
                    }
                    etherparse::err::tcp::HeaderSliceError::Content(_) => {
                        "data offset below 5 words (malformed header)"
                    }
                })
            })?;
            let header_len = u16::from(tcp.data_offset()) * 4;
            let flags = tcp.header_slice()[13];
            Transport::Tcp(TcpSegment {
                sport: tcp.source_port(),
                dport: tcp.destination_port(),
                seq: SeqNumber(tcp.sequence_number()),
                ack: SeqNumber(tcp.acknowledgment_number()),
                flags,
                window: tcp.window_size(),
                header_len,
                payload_len: wire_len.saturating_sub(u32::from(header_len)),
                payload: tcp.payload(),
                options: tcp_options::parse_options(tcp.options()),
            })
        }
        proto::UDP => {
            if bytes.len() < 8 {
                return Err(ParseError::Udp("shorter than 8 bytes (truncated datagram)"));
            }
            Transport::Udp {
                sport: u16::from_be_bytes([bytes[0], bytes[1]]),
                dport: u16::from_be_bytes([bytes[2], bytes[3]]),
            }
        }
        proto::ICMP | proto::ICMPV6 if bytes.len() >= 2 => Transport::Icmp {
            kind: bytes[0],
            code: bytes[1],
        },
        _ => Transport::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct IPv4 reading agrees with etherparse's wherever it applies: every
    /// field, and the payload as the same bytes of the same buffer.
    #[test]
    fn ipv4_fast_path_agrees_with_etherparse() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::new_with_rng(
            proptest::test_runner::Config::with_cases(4096),
            proptest::test_runner::TestRng::deterministic_rng(
                proptest::test_runner::RngAlgorithm::ChaCha,
            ),
        );
        let case = (
            proptest::collection::vec(any::<u8>(), 0..80),
            0x40u8..0x50,
            prop_oneof![0u16..100, any::<u16>()],
            any::<u16>(),
            prop_oneof![Just(6u8), Just(17), Just(51), Just(47), any::<u8>()],
            0usize..2000,
        );
        runner
            .run(&case, |(mut b, first, total, frag, proto, max_len)| {
                if b.len() >= 20 {
                    b[0] = first;
                    b[2..4].copy_from_slice(&total.to_be_bytes());
                    b[6..8].copy_from_slice(&frag.to_be_bytes());
                    b[9] = proto;
                }
                if let Some(fast) = ipv4_layer(&b, max_len) {
                    let slow = any_ip_layer(&b, max_len);
                    prop_assert!(slow.is_ok(), "{fast:?} but etherparse: {:?}", slow.err());
                    let slow = slow.unwrap();
                    prop_assert_eq!(fast.payload.as_ptr(), slow.payload.as_ptr());
                    prop_assert_eq!(fast, slow);
                } else if b.first().is_some_and(|f| f >> 4 == 4 && f & 0xf >= 5) {
                    let header_len = usize::from(b[0] & 0xf) * 4;
                    prop_assert!(b.len() < header_len || b[9] == 51);
                }
                Ok(())
            })
            .unwrap();
    }

    /// IPv4 + TCP SYN from 192.0.2.1:40000 to 198.51.100.2:80, MSS option.
    const SYN_V4: [u8; 44] = [
        0x45, 0, 0, 44, 0, 1, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 198, 51, 100, 2, // IPv4
        0x9c, 0x40, 0, 80, 0, 0, 0, 100, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0,
        0, // TCP, doff 6
        2, 4, 0x05, 0xb4, // MSS 1460
    ];

    #[test]
    fn tcp_syn_over_ipv4() {
        let p = parse(LinkType::RawIp, &SYN_V4, 44).unwrap();
        assert_eq!(p.src.to_string(), "192.0.2.1");
        assert_eq!(p.dst.to_string(), "198.51.100.2");
        assert_eq!(p.ip_len, 44);
        let Transport::Tcp(t) = p.transport else {
            panic!("not TCP")
        };
        assert_eq!((t.sport, t.dport), (40000, 80));
        assert_eq!(t.seq, SeqNumber(100));
        assert_eq!(t.flags, 0x02);
        assert_eq!(t.payload_len, 0);
        assert_eq!(t.options.unwrap().mss, Some(1460));
    }

    #[test]
    fn snapped_capture_keeps_wire_length() {
        let mut pkt = SYN_V4;
        pkt[3] = 144; // total length says 100 payload bytes that the capture cut off
        let p = parse(LinkType::RawIp, &pkt, 144).unwrap();
        let Transport::Tcp(t) = p.transport else {
            panic!("not TCP")
        };
        assert_eq!(t.payload_len, 100);
        assert_eq!(p.ip_len, 144);
    }

    #[test]
    fn frame_shorter_than_ip_total_length_on_the_wire() {
        // The frame itself ended early (not a snap length): the bytes are all there is.
        let mut pkt = SYN_V4.to_vec();
        pkt[3] = 144;
        let p = parse(LinkType::RawIp, &pkt, 44).unwrap();
        let Transport::Tcp(t) = p.transport else {
            panic!("not TCP")
        };
        assert_eq!(t.payload_len, 0);
    }

    #[test]
    fn truncated_tcp_header_is_an_error() {
        assert!(matches!(
            parse(LinkType::RawIp, &SYN_V4[..30], 30),
            Err(ParseError::Tcp(_))
        ));
        assert!(matches!(
            parse(LinkType::RawIp, &SYN_V4[..10], 10),
            Err(ParseError::Ip(_))
        ));
        assert!(matches!(
            parse(LinkType::RawIp, &[], 0),
            Err(ParseError::Ip(_))
        ));
    }

    #[test]
    fn data_offset_below_five_is_malformed() {
        let mut pkt = SYN_V4;
        pkt[32] = 0x40;
        assert!(matches!(
            parse(LinkType::RawIp, &pkt, 44),
            Err(ParseError::Tcp(_))
        ));
    }

    #[test]
    fn non_first_fragment_has_no_transport() {
        let mut pkt = SYN_V4;
        pkt[6] = 0x20; // MF
        pkt[7] = 0x10; // offset 16 * 8 bytes
        let p = parse(LinkType::RawIp, &pkt, 44).unwrap();
        assert_eq!(
            p.fragment,
            Some(Fragment {
                offset: 16,
                more: true
            })
        );
        assert!(matches!(p.transport, Transport::Fragment));
    }

    #[test]
    fn ipv6_with_hop_by_hop_then_udp() {
        let mut pkt = vec![0x60, 0, 0, 0, 0, 16, 0 /* hop-by-hop */, 64];
        pkt.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        pkt.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        pkt.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop: next UDP, PadN
        pkt.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 8, 0, 0]); // UDP 12345 -> 53
        let p = parse(LinkType::RawIp, &pkt, pkt.len() as u32).unwrap();
        assert_eq!(p.src.to_string(), "2001:db8::1");
        assert_eq!(p.proto, proto::UDP);
        assert!(matches!(
            p.transport,
            Transport::Udp {
                sport: 12345,
                dport: 53
            }
        ));
    }

    /// Found by `fuzz/` (target `packet`): etherparse's extension iterator over a lax
    /// slice walks on past the headers it validated when the last one names another
    /// extension header that failed (here a second hop-by-hop header, which may not
    /// follow the first), reading out of bounds (UB; a panic with debug assertions).
    #[test]
    fn ipv6_extension_chain_cut_by_an_invalid_header_is_read_in_bounds() {
        let mut pkt = vec![0x60, 0, 0, 0, 0, 16, 0 /* hop-by-hop */, 64];
        pkt.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        pkt.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        pkt.extend_from_slice(&[0, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop: next hop-by-hop
        pkt.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // ...which is not allowed here
        let p = parse(LinkType::RawIp, &pkt, pkt.len() as u32).unwrap();
        assert_eq!(p.fragment, None);
        assert!(matches!(p.transport, Transport::Other));
        // The same with a truncated destination-options header after a fragment header.
        let mut pkt = vec![0x60, 0, 0, 0, 0, 12, 44 /* fragment */, 64];
        pkt.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        pkt.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        pkt.extend_from_slice(&[60, 0, 0, 0x11, 0, 0, 0, 7]); // fragment 2, more; next dest-opts
        pkt.extend_from_slice(&[17, 0, 1, 4]); // dest-opts cut after 4 of its 8 bytes
        let p = parse(LinkType::RawIp, &pkt, pkt.len() as u32).unwrap();
        assert_eq!(
            p.fragment,
            Some(Fragment {
                offset: 2,
                more: true
            })
        );
        // The input the fuzzer found (after its control byte).
        let found = [
            0x60, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x1e, 0x11, 0x01, 0xfe, 0x80, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0xb9, 0xa3, 0xaa, 0x8f, 0x3e, 0x8e, 0xfe, 0x86, 0xff,
            0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
            0x03, 0xd5, 0x94, 0x14, 0xeb, 0x00, 0x1e, 0x1c, 0xbd, 0x80, 0x36, 0xff, 0xff, 0xff,
            0xfe, 0xff, 0xfb, 0x00, 0x00, 0x00, 0x00, 0x04, 0x77, 0x70, 0x61, 0x64, 0x00, 0x00,
            0x01, 0x00, 0x01,
        ];
        let _ = parse(LinkType::RawIp, &found, 0);
    }

    /// An IPv4 header of protocol `proto` around `payload` (checksum not set).
    fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
        let len = (20 + payload.len()) as u16;
        let mut v = vec![0x45, 0];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn tunnels_are_judged_at_the_innermost_packet() {
        // IPv4 / GRE / IPv4 / UDP 4789 / VXLAN / Ethernet / IPv4 / TCP.
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&SYN_V4);
        let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vxlan.extend_from_slice(&eth);
        let mut udp = vec![0xc3, 0x50, 0x12, 0xb5];
        udp.extend_from_slice(&((8 + vxlan.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&vxlan);
        let mut gre = vec![0, 0, 0x08, 0x00];
        gre.extend_from_slice(&ipv4(proto::UDP, &udp));
        let pkt = ipv4(47, &gre);
        let p = parse(LinkType::RawIp, &pkt, pkt.len() as u32).unwrap();
        let names: Vec<_> = p.tunnel.iter().map(tunnel::Encap::name).collect();
        assert_eq!(names, ["gre", "vxlan"]);
        assert_eq!(p.src.to_string(), "192.0.2.1");
        assert_eq!(p.ip_len, 44);
        let Transport::Tcp(t) = p.transport else {
            panic!("not TCP")
        };
        assert_eq!((t.sport, t.dport), (40000, 80));
        // The same packet in IPv6-in-IPv4 (protocol 41) around IP-in-IP (4).
        let mut v6 = vec![0x60, 0, 0, 0];
        v6.extend_from_slice(&(SYN_V4.len() as u16).to_be_bytes());
        v6.extend_from_slice(&[4, 64]);
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v6.extend_from_slice(&SYN_V4);
        let pkt = ipv4(41, &v6);
        let p = parse(LinkType::RawIp, &pkt, pkt.len() as u32).unwrap();
        let names: Vec<_> = p.tunnel.iter().map(tunnel::Encap::name).collect();
        assert_eq!(names, ["ipv6-in-ip", "ip-in-ip"]);
        assert!(matches!(p.transport, Transport::Tcp(_)));
    }

    #[test]
    fn a_tunnel_that_cannot_be_followed_leaves_the_outer_packet() {
        // GRE carrying IPv4, but what follows is not an IP header.
        let pkt = ipv4(47, &[0, 0, 0x08, 0x00, 0x00, 0x01, 0x02]);
        let p = parse(LinkType::RawIp, &pkt, pkt.len() as u32).unwrap();
        assert!(p.tunnel.is_empty());
        assert_eq!(p.proto, 47);
        // An outer fragment is not followed.
        let mut gre = vec![0, 0, 0x08, 0x00];
        gre.extend_from_slice(&SYN_V4);
        let mut pkt = ipv4(47, &gre);
        pkt[6] = 0x20; // MF, offset 0
        let p = parse(LinkType::RawIp, &pkt, pkt.len() as u32).unwrap();
        assert!(p.tunnel.is_empty());
        assert!(p.fragment.is_some());
        // Nesting is bounded: the packet is judged at the layer where it stopped.
        let mut pkt = SYN_V4.to_vec();
        for _ in 0..tunnel::MAX_TUNNELS + 2 {
            pkt = ipv4(4, &pkt);
        }
        let p = parse(LinkType::RawIp, &pkt, pkt.len() as u32).unwrap();
        assert_eq!(p.tunnel.len(), tunnel::MAX_TUNNELS);
        assert_eq!(p.proto, 4);
    }

    #[test]
    fn a_snapped_tunnel_keeps_the_inner_wire_length() {
        let mut inner = SYN_V4;
        inner[3] = 144; // 100 payload bytes the capture cut off
        let mut gre = vec![0, 0, 0x08, 0x00];
        gre.extend_from_slice(&inner);
        let mut pkt = ipv4(47, &gre);
        let outer_len = (pkt.len() + 100) as u16;
        pkt[2..4].copy_from_slice(&outer_len.to_be_bytes());
        let p = parse(LinkType::RawIp, &pkt, u32::from(outer_len)).unwrap();
        let Transport::Tcp(t) = p.transport else {
            panic!("not TCP")
        };
        assert_eq!(t.payload_len, 100);
        assert_eq!(p.ip_len, 144);
    }
}
