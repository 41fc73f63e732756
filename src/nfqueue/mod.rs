//! A small nfnetlink_queue (NFQUEUE) client: the live verdict path's transport.
//!
//! The rendered ruleset queues the packets nfqwall judges (`-j NFQUEUE --queue-num N
//! --queue-bypass`). The kernel holds each queued packet until a verdict names its
//! id, and sends a copy of it to whoever bound the queue, one netlink message per
//! packet. This module is that socket: one bind, a few configuration messages, a
//! parser that borrows from the receive buffer ([`Messages`]), and the two verdict
//! messages. No allocation per packet.
//!
//! Own code rather than the `nfq` crate: the crate hid its socket (nfqwall found it in
//! `/proc/self/fd` to size its receive buffer), copied no less than the whole packet,
//! gave one verdict message per packet and could not set `NFQA_CFG_F_GSO`.
//!
//! Kernel behaviour relied on (include/uapi/linux/netfilter/nfnetlink_queue.h,
//! net/netfilter/nfnetlink_queue.c):
//! - `NFQNL_CFG_CMD_BIND` with the queue in `nfgenmsg.res_id` binds it; a queue bound
//!   by another socket answers `EBUSY`. Closing the socket unbinds.
//!   `NFQNL_CFG_CMD_PF_BIND`/`PF_UNBIND` are not sent: they do nothing since Linux 3.8.
//! - `NFQA_CFG_FLAGS` needs `NFQA_CFG_MASK`; only the masked bits change. A flag the
//!   kernel cannot honour answers `EOPNOTSUPP` (`NFQA_CFG_F_CONNTRACK` without
//!   conntrack's netlink glue), and then no flag of that message changes: each flag
//!   is therefore sent in its own message.
//! - `NFQA_CT`/`NFQA_CT_INFO` are attached only when the packet has a conntrack
//!   entry (`nf_ct_get` is not NULL): INVALID and UNTRACKED packets carry neither.
//! - `NFQA_CAP_LEN` (the packet's full length) is attached only when the copy was cut
//!   at the copy range.
//! - A verdict's `NFQA_PAYLOAD` replaces the packet: a shorter one trims the packet
//!   to it (`nfqnl_mangle` calls `pskb_trim`), and the checksum state becomes
//!   `CHECKSUM_NONE`. A payload is therefore only sent back when the whole packet was
//!   copied and is not a GSO packet (whose TCP checksum covers the first segment
//!   only); see [`QueuedPacket::whole`].
//! - `NFQNL_MSG_VERDICT_BATCH` with id N gives its verdict to every packet of the
//!   queue still waiting with an id up to N (ids are given in queueing order).
//! - With `NFQA_CFG_F_GSO` the kernel queues GSO packets whole, without segmenting
//!   them or completing their checksum (`NFQA_SKB_INFO` says so).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `NFNL_SUBSYS_QUEUE`: the nfnetlink subsystem of nfnetlink_queue.
pub const NFNL_SUBSYS_QUEUE: u16 = 3;
/// `NFQNL_MSG_PACKET`: a queued packet.
pub const NFQNL_MSG_PACKET: u16 = 0;
/// `NFQNL_MSG_VERDICT`: a verdict on one packet.
pub const NFQNL_MSG_VERDICT: u16 = 1;
/// `NFQNL_MSG_CONFIG`: a configuration request.
pub const NFQNL_MSG_CONFIG: u16 = 2;
/// `NFQNL_MSG_VERDICT_BATCH`: a verdict on every waiting packet up to an id.
pub const NFQNL_MSG_VERDICT_BATCH: u16 = 3;

/// Packet attributes (`enum nfqnl_attr_type`):
/// `struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; }`.
pub const NFQA_PACKET_HDR: u16 = 1;
/// `struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }`.
pub const NFQA_VERDICT_HDR: u16 = 2;
/// `__be32` packet mark.
pub const NFQA_MARK: u16 = 3;
/// `__be32` input interface index.
pub const NFQA_IFINDEX_INDEV: u16 = 5;
/// `__be32` output interface index.
pub const NFQA_IFINDEX_OUTDEV: u16 = 6;
/// The packet from its network header, cut at the copy range.
pub const NFQA_PAYLOAD: u16 = 10;
/// Nested conntrack attributes (`CTA_*`).
pub const NFQA_CT: u16 = 11;
/// `__be32` `enum ip_conntrack_info`.
pub const NFQA_CT_INFO: u16 = 12;
/// `__be32` the packet's full length, when the copy was cut.
pub const NFQA_CAP_LEN: u16 = 13;
/// `__be32` `NFQA_SKB_*` flags.
pub const NFQA_SKB_INFO: u16 = 14;
/// `CTA_STATUS` inside [`NFQA_CT`]: `__be32` `IPS_*` bits.
pub const CTA_STATUS: u16 = 3;

/// `NFQA_SKB_CSUMNOTREADY`: the checksum is not computed yet.
pub const NFQA_SKB_CSUMNOTREADY: u32 = 1;
/// `NFQA_SKB_GSO`: a GSO packet, queued whole.
pub const NFQA_SKB_GSO: u32 = 2;

/// Configuration attributes (`enum nfqnl_attr_config`):
/// `struct nfqnl_msg_config_cmd { __u8 command; __u8 _pad; __be16 pf; }`.
pub const NFQA_CFG_CMD: u16 = 1;
/// `struct nfqnl_msg_config_params { __be32 copy_range; __u8 copy_mode; }` (packed).
pub const NFQA_CFG_PARAMS: u16 = 2;
/// `__be32` kernel queue length.
pub const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
/// `__be32` which flags [`NFQA_CFG_FLAGS`] changes.
pub const NFQA_CFG_MASK: u16 = 4;
/// `__be32` flags.
pub const NFQA_CFG_FLAGS: u16 = 5;
/// `NFQNL_CFG_CMD_BIND`.
pub const NFQNL_CFG_CMD_BIND: u8 = 1;
/// `NFQNL_CFG_CMD_UNBIND`.
pub const NFQNL_CFG_CMD_UNBIND: u8 = 2;
/// `NFQNL_COPY_PACKET`: copy the packet, up to the copy range.
pub const NFQNL_COPY_PACKET: u8 = 2;
/// `NFQA_CFG_F_FAIL_OPEN`: accept, not drop, what cannot be queued.
pub const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
/// `NFQA_CFG_F_CONNTRACK`: attach conntrack info.
pub const NFQA_CFG_F_CONNTRACK: u32 = 2;
/// `NFQA_CFG_F_GSO`: queue GSO packets whole.
pub const NFQA_CFG_F_GSO: u32 = 4;

/// `NF_DROP`.
pub const NF_DROP: u32 = 0;
/// `NF_ACCEPT`.
pub const NF_ACCEPT: u32 = 1;

const NLMSG_HDRLEN: usize = 16;
const NFGEN_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;

/// The length of a batch verdict message: netlink header, nfgenmsg, verdict header.
pub const BATCH_VERDICT_LEN: usize = NLMSG_HDRLEN + NFGEN_HDRLEN + NLA_HDRLEN + 8;
/// Room in a verdict message besides the payload.
pub const VERDICT_OVERHEAD: usize = NLMSG_HDRLEN + NFGEN_HDRLEN + (NLA_HDRLEN + 8) * 2 + 4;
/// The largest payload a verdict carries (the kernel refuses more than 64 KiB).
pub const MAX_PAYLOAD: usize = 0xffff;
/// A receive buffer that holds any one queued packet's message: the largest copy
/// plus the headers and attributes (conntrack's nest is the largest, under 1 KiB).
pub const RECV_BUF: usize = MAX_PAYLOAD + 4096;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One queued packet, borrowed from the receive buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueuedPacket<'a> {
    /// `nfgenmsg.res_id`: the queue.
    pub queue: u16,
    /// `NFQA_PACKET_HDR`: the packet id the verdict names.
    pub id: u32,
    /// `NFQA_PACKET_HDR`: the link-layer protocol (`0x0800` IPv4, `0x86dd` IPv6).
    pub hw_protocol: u16,
    /// `NFQA_PACKET_HDR`: the netfilter hook (1 `LOCAL_IN`, 3 `LOCAL_OUT`).
    pub hook: u8,
    /// `NFQA_MARK` (0 when absent: the kernel omits a zero mark).
    pub mark: u32,
    /// `NFQA_IFINDEX_INDEV` (0 when absent).
    pub indev: u32,
    /// `NFQA_CAP_LEN`: the packet's full length, when the copy was cut.
    pub cap_len: Option<u32>,
    /// `NFQA_SKB_INFO` (0 when absent).
    pub skb_info: u32,
    /// Conntrack info: `Some` when the kernel attached `NFQA_CT` or `NFQA_CT_INFO`,
    /// holding `NFQA_CT_INFO` (`enum ip_conntrack_info`; 0 if only the nest came).
    pub ct_info: Option<u32>,
    /// `CTA_STATUS` from the `NFQA_CT` nest.
    pub ct_status: Option<u32>,
    /// `NFQA_PAYLOAD`: the packet from its IP header, cut at the copy range.
    pub payload: &'a [u8],
}

impl QueuedPacket<'_> {
    /// The packet's length on the wire: `NFQA_CAP_LEN` when the copy was cut.
    pub fn wire_len(&self) -> u32 {
        self.cap_len
            .unwrap_or(self.payload.len() as u32)
            .max(self.payload.len() as u32)
    }

    /// Whether the copy is the whole packet and not a GSO packet: only then may a
    /// verdict send a rewritten payload back (a shorter one would trim the packet; a
    /// GSO packet's TCP checksum is not one the rewrite can fix).
    pub fn whole(&self) -> bool {
        self.cap_len
            .is_none_or(|l| l as usize <= self.payload.len())
            && self.skb_info & NFQA_SKB_GSO == 0
    }
}

/// Writes the full TCP checksum of `packet` (an IPv4 or IPv6 packet copied whole,
/// TCP at `tcp_at`) into its checksum field. Needed before a payload is sent back for
/// a packet queued with [`NFQA_SKB_CSUMNOTREADY`] (`CHECKSUM_PARTIAL`, as from a local
/// sender or a veth peer): with `NFQA_CFG_F_GSO` the kernel does not complete such a
/// checksum before queueing, the field holds only the pseudo-header's sum, and a
/// verdict's payload makes the packet `CHECKSUM_NONE`, to be verified as it stands.
/// Only for TCP right after the IP header (no IPv6 extension headers, no tunnel):
/// returns `false`, leaving the packet as it was, for anything else.
pub fn complete_tcp_checksum(packet: &mut [u8], tcp_at: usize) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let mut sum: u64 = 0;
    let add = |sum: &mut u64, b: &[u8]| {
        let mut chunks = b.chunks_exact(2);
        for c in &mut chunks {
            *sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            *sum += u64::from(u16::from_be_bytes([*last, 0]));
        }
    };
    if tcp_at + 20 > packet.len() {
        return false;
    }
    let tcp_len = packet.len() - tcp_at;
    match first >> 4 {
        4 if tcp_at == usize::from(first & 0x0f) * 4 && packet.get(9) == Some(&6) => {
            add(&mut sum, &packet[12..20]);
            sum += 6 + tcp_len as u64;
        }
        6 if tcp_at == 40 && packet.get(6) == Some(&6) => {
            add(&mut sum, &packet[8..40]);
            sum += tcp_len as u64 + 6;
        }
        _ => return false,
    }
    packet[tcp_at + 16] = 0;
    packet[tcp_at + 17] = 0;
    add(&mut sum, &packet[tcp_at..]);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    packet[tcp_at + 16..tcp_at + 18].copy_from_slice(&c.to_be_bytes());
    true
}

/// One netlink message of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A queued packet.
    Packet(QueuedPacket<'a>),
    /// An acknowledgement (`errno` 0) or error answer to request `seq`.
    Ack {
        /// The request's sequence number.
        seq: u32,
        /// 0, or the positive errno.
        errno: i32,
    },
    /// End of a multi-part message, or any other message: nothing to do.
    Other,
}

/// A message that does not parse: the rest of the buffer is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The messages of one received datagram, in order, borrowing from it.
pub struct Messages<'a> {
    buf: &'a [u8],
}

impl<'a> Messages<'a> {
    /// The messages in `buf` (what one `recv` returned).
    pub fn new(buf: &'a [u8]) -> Messages<'a> {
        Messages { buf }
    }
}

fn u16_ne(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_ne(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be32(b: &[u8], what: &'static str) -> Result<u32, Malformed> {
    match b.get(..4) {
        Some(v) => Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
        None => Err(Malformed(what)),
    }
}

/// The attributes in `b`, as (type without flags, value); an attribute whose length
/// runs out of `b` (or is below its header) ends the walk with an error.
struct Attrs<'a> {
    b: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.b.len() < NLA_HDRLEN {
            return None;
        }
        let len = usize::from(u16_ne(self.b, 0));
        if len < NLA_HDRLEN || len > self.b.len() {
            self.b = &[];
            return Some(Err(Malformed("attribute length out of bounds")));
        }
        let kind = u16_ne(self.b, 2) & NLA_TYPE_MASK;
        let value = &self.b[NLA_HDRLEN..len];
        self.b = &self.b[align4(len).min(self.b.len())..];
        Some(Ok((kind, value)))
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Item<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32_ne(self.buf, 0) as usize;
        if len < NLMSG_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return Some(Err(Malformed("netlink message length out of bounds")));
        }
        let kind = u16_ne(self.buf, 4);
        let body = &self.buf[NLMSG_HDRLEN..len];
        self.buf = &self.buf[align4(len).min(self.buf.len())..];
        Some(match kind {
            NLMSG_ERROR => {
                if body.len() < 4 + NLMSG_HDRLEN {
                    return Some(Err(Malformed("short netlink error message")));
                }
                let code = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                Ok(Item::Ack {
                    seq: u32_ne(body, 4 + 8),
                    errno: code.saturating_neg(),
                })
            }
            NLMSG_DONE | NLMSG_OVERRUN => Ok(Item::Other),
            k if k == (NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET) => parse_packet(body),
            _ => Ok(Item::Other),
        })
    }
}

/// The attributes of one `NFQNL_MSG_PACKET` (after the netlink header).
fn parse_packet(body: &[u8]) -> Result<Item<'_>, Malformed> {
    if body.len() < NFGEN_HDRLEN {
        return Err(Malformed("packet message shorter than its nfgenmsg"));
    }
    let mut p = QueuedPacket {
        queue: u16::from_be_bytes([body[2], body[3]]),
        ..QueuedPacket::default()
    };
    let mut have_hdr = false;
    for attr in (Attrs {
        b: &body[NFGEN_HDRLEN..],
    }) {
        let (kind, value) = attr?;
        match kind {
            NFQA_PACKET_HDR => {
                if value.len() < 7 {
                    return Err(Malformed("short NFQA_PACKET_HDR"));
                }
                p.id = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                p.hw_protocol = u16::from_be_bytes([value[4], value[5]]);
                p.hook = value[6];
                have_hdr = true;
            }
            NFQA_MARK => p.mark = be32(value, "short NFQA_MARK")?,
            NFQA_IFINDEX_INDEV => p.indev = be32(value, "short NFQA_IFINDEX_INDEV")?,
            NFQA_CAP_LEN => p.cap_len = Some(be32(value, "short NFQA_CAP_LEN")?),
            NFQA_SKB_INFO => p.skb_info = be32(value, "short NFQA_SKB_INFO")?,
            NFQA_PAYLOAD => p.payload = value,
            NFQA_CT => {
                p.ct_info.get_or_insert(0);
                for inner in (Attrs { b: value }) {
                    if let (CTA_STATUS, v) = inner? {
                        p.ct_status = Some(be32(v, "short CTA_STATUS")?);
                    }
                }
            }
            NFQA_CT_INFO => p.ct_info = Some(be32(value, "short NFQA_CT_INFO")?),
            _ => {}
        }
    }
    if !have_hdr {
        return Err(Malformed("packet message without NFQA_PACKET_HDR"));
    }
    Ok(Item::Packet(p))
}

/// Writes the netlink and nfgenmsg headers of a message of `kind` for `queue` at the
/// start of `out`; the message length is filled in by [`finish`].
fn header(out: &mut [u8], kind: u16, flags: u16, seq: u32, queue: u16) -> usize {
    out[4..6].copy_from_slice(&(NFNL_SUBSYS_QUEUE << 8 | kind).to_ne_bytes());
    out[6..8].copy_from_slice(&flags.to_ne_bytes());
    out[8..12].copy_from_slice(&seq.to_ne_bytes());
    out[12..16].copy_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id = queue (big endian).
    out[16] = 0;
    out[17] = 0;
    out[18..20].copy_from_slice(&queue.to_be_bytes());
    NLMSG_HDRLEN + NFGEN_HDRLEN
}

/// Appends one attribute at `at`; returns the new end (4-aligned).
fn put(out: &mut [u8], at: usize, kind: u16, value: &[u8]) -> usize {
    let len = NLA_HDRLEN + value.len();
    out[at..at + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    out[at + 2..at + 4].copy_from_slice(&kind.to_ne_bytes());
    out[at + 4..at + len].copy_from_slice(value);
    out[at + len..at + align4(len)].fill(0);
    at + align4(len)
}

fn finish(out: &mut [u8], len: usize) -> usize {
    out[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    len
}

fn verdict_hdr(verdict: u32, id: u32) -> [u8; 8] {
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&verdict.to_be_bytes());
    v[4..].copy_from_slice(&id.to_be_bytes());
    v
}

/// Writes one nfnetlink_queue configuration request for `queue` with `attrs`
/// (type, value) into `out`; returns its length.
pub fn config_request(out: &mut [u8; 128], seq: u32, queue: u16, attrs: &[(u16, &[u8])]) -> usize {
    let mut at = header(out, NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, queue);
    for (kind, value) in attrs {
        at = put(out, at, *kind, value);
    }
    finish(out, at)
}

/// Writes an `NFQNL_MSG_VERDICT_BATCH`: `verdict` for every packet of `queue` still
/// waiting with an id up to `id`. No acknowledgement is asked for (an error still
/// comes back as an `NLMSG_ERROR`).
pub fn batch_verdict(
    out: &mut [u8; BATCH_VERDICT_LEN],
    queue: u16,
    id: u32,
    verdict: u32,
) -> usize {
    let at = header(out, NFQNL_MSG_VERDICT_BATCH, NLM_F_REQUEST, 0, queue);
    let at = put(out, at, NFQA_VERDICT_HDR, &verdict_hdr(verdict, id));
    finish(out, at)
}

/// Writes an `NFQNL_MSG_VERDICT` for packet `id` of `queue`, with a new mark and a
/// replacement payload if given, into `out` (at least [`VERDICT_OVERHEAD`] plus the
/// payload long). Returns its length, or `None` when the payload does not fit.
pub fn verdict(
    out: &mut [u8],
    queue: u16,
    id: u32,
    verdict: u32,
    mark: Option<u32>,
    payload: Option<&[u8]>,
) -> Option<usize> {
    let need = VERDICT_OVERHEAD + payload.map_or(0, |p| align4(p.len()));
    if out.len() < need || payload.is_some_and(|p| p.len() > MAX_PAYLOAD) {
        return None;
    }
    let at = header(out, NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0, queue);
    let mut at = put(out, at, NFQA_VERDICT_HDR, &verdict_hdr(verdict, id));
    if let Some(m) = mark {
        at = put(out, at, NFQA_MARK, &m.to_be_bytes());
    }
    if let Some(p) = payload {
        at = put(out, at, NFQA_PAYLOAD, p);
    }
    Some(finish(out, at))
}

/// How the queue is set up.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The queue number.
    pub queue: u16,
    /// Bytes of each packet copied.
    pub copy_range: u32,
    /// Kernel queue length (`NFQA_CFG_QUEUE_MAXLEN`).
    pub maxlen: u32,
    /// `NFQA_CFG_F_FAIL_OPEN`.
    pub fail_open: bool,
    /// Socket receive buffer (`SO_RCVBUFFORCE`; needs CAP_NET_ADMIN).
    pub rcvbuf: usize,
}

/// What failed while opening, and why.
#[derive(Debug)]
pub struct OpenError {
    /// What was being done.
    pub what: &'static str,
    /// The system error.
    pub source: io::Error,
}

/// A netlink socket bound to one NFQUEUE queue. Dropping it unbinds the queue.
pub struct NfqSocket {
    fd: OwnedFd,
    queue: u16,
    seq: u32,
    rcvbuf: usize,
    conntrack: bool,
    gso: bool,
    out: Box<[u8]>,
}

impl NfqSocket {
    /// Opens an `AF_NETLINK`/`NETLINK_NETFILTER` socket, sizes its receive buffer,
    /// binds `opts.queue` and configures it: copy mode packet with the copy range, the
    /// queue length, fail-open as asked, conntrack info and whole GSO packets if the
    /// kernel accepts them (see [`NfqSocket::conntrack`], [`NfqSocket::gso`]).
    /// `ENOBUFS` stays on: a receive buffer overrun is reported, not hidden.
    pub fn open(opts: &Options) -> Result<NfqSocket, OpenError> {
        let err = |what| move |source| OpenError { what, source };
        // SAFETY: plain socket(2); the fd is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(err("open a netfilter netlink socket")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: raw is a fresh, open fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed sockaddr_nl is valid (pid 0: the kernel assigns one).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a valid sockaddr_nl for the call.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(err("bind the netlink socket")(io::Error::last_os_error()));
        }
        let mut s = NfqSocket {
            fd,
            queue: opts.queue,
            seq: 0,
            rcvbuf: 0,
            conntrack: false,
            gso: false,
            out: vec![0u8; VERDICT_OVERHEAD + align4(MAX_PAYLOAD)].into_boxed_slice(),
        };
        s.rcvbuf = s
            .set_rcvbuf(opts.rcvbuf)
            .map_err(err("size the socket's receive buffer"))?;
        s.setsockopt(libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 0)
            .map_err(err("keep ENOBUFS reported"))?;
        s.request(&[(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0][..])])
            .map_err(err("bind the queue (is another nfqwall bound to it?)"))?;
        let mut params = [0u8; 5];
        params[..4].copy_from_slice(&opts.copy_range.to_be_bytes());
        params[4] = NFQNL_COPY_PACKET;
        s.request(&[
            (NFQA_CFG_PARAMS, &params[..]),
            (NFQA_CFG_QUEUE_MAXLEN, &opts.maxlen.to_be_bytes()[..]),
        ])
        .map_err(err("set the copy range and the kernel queue length"))?;
        s.set_flag(NFQA_CFG_F_FAIL_OPEN, opts.fail_open)
            .map_err(err("set the fail-open flag"))?;
        // Refused (EOPNOTSUPP) by kernels without conntrack's netlink glue.
        s.conntrack = s.set_flag(NFQA_CFG_F_CONNTRACK, true).is_ok();
        s.gso = s.set_flag(NFQA_CFG_F_GSO, true).is_ok();
        Ok(s)
    }

    /// The queue bound.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// The receive buffer as the kernel reports it.
    pub fn rcvbuf(&self) -> usize {
        self.rcvbuf
    }

    /// Whether the kernel attaches conntrack info.
    pub fn conntrack(&self) -> bool {
        self.conntrack
    }

    /// Whether the kernel queues GSO packets whole.
    pub fn gso(&self) -> bool {
        self.gso
    }

    fn set_flag(&mut self, flag: u32, on: bool) -> io::Result<()> {
        let value = if on { flag } else { 0 };
        self.request(&[
            (NFQA_CFG_FLAGS, &value.to_be_bytes()[..]),
            (NFQA_CFG_MASK, &flag.to_be_bytes()[..]),
        ])
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: msg is initialised; the kernel is the destination (pid 0). Sends to
        // the kernel are handled inline; MSG_DONTWAIT keeps a failing one from waiting.
        let r = unsafe {
            let mut to: libc::sockaddr_nl = std::mem::zeroed();
            to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_DONTWAIT,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends one configuration request and waits (at most 2 s) for its
    /// acknowledgement. Packet messages that arrive meanwhile (after the bind, when
    /// queuing rules are already in) are read past, as are `ENOBUFS` answers: those
    /// packets wait in the kernel and the first batch verdict accepts them unjudged,
    /// their marks' state bits saying so.
    fn request(&mut self, attrs: &[(u16, &[u8])]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = [0u8; 128];
        let len = config_request(&mut msg, self.seq, self.queue, attrs);
        self.send(&msg[..len])?;
        let mut buf = vec![0u8; RECV_BUF];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            let n = match self.recv(&mut buf, true) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for item in Messages::new(&buf[..n.min(buf.len())]) {
                if let Ok(Item::Ack { seq, errno }) = item {
                    if seq == self.seq {
                        return if errno == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(errno))
                        };
                    }
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no acknowledgement from nfnetlink_queue",
        ))
    }

    /// Receives one datagram into `buf`; returns its length, which is larger than
    /// `buf` when the datagram was cut (`MSG_TRUNC`). `dontwait`: `WouldBlock` when
    /// nothing is waiting. `ENOBUFS` when the kernel could not deliver messages
    /// because the receive buffer was full; `EINTR` when a signal interrupted a wait.
    pub fn recv(&self, buf: &mut [u8], dontwait: bool) -> io::Result<usize> {
        let flags = libc::MSG_TRUNC | if dontwait { libc::MSG_DONTWAIT } else { 0 };
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends a batch verdict: `verdict` for every waiting packet with an id up to
    /// `id`. Never waits.
    pub fn batch_verdict(&self, id: u32, verdict: u32) -> io::Result<()> {
        let mut msg = [0u8; BATCH_VERDICT_LEN];
        let len = batch_verdict(&mut msg, self.queue, id, verdict);
        self.send(&msg[..len])
    }

    /// Sends a verdict on packet `id`, with a new mark and a replacement payload if
    /// given. Never waits.
    pub fn verdict(
        &mut self,
        id: u32,
        v: u32,
        mark: Option<u32>,
        payload: Option<&[u8]>,
    ) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.out);
        let r = match verdict(&mut out, self.queue, id, v, mark, payload) {
            Some(len) => self.send(&out[..len]),
            None => Err(io::Error::from_raw_os_error(libc::EMSGSIZE)),
        };
        self.out = out;
        r
    }

    fn setsockopt(&self, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
        // SAFETY: v lives for the call.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn set_rcvbuf(&self, bytes: usize) -> io::Result<usize> {
        let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        self.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v)?;
        let mut got: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: got and len are valid for the call.
        unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut got as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        Ok(got.max(0) as usize)
    }
}

impl Drop for NfqSocket {
    fn drop(&mut self) {
        // Closing unbinds too; say it explicitly, without waiting for the answer.
        let mut msg = [0u8; 128];
        let len = config_request(
            &mut msg,
            self.seq.wrapping_add(1),
            self.queue,
            &[(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_UNBIND, 0, 0, 0][..])],
        );
        let _ = self.send(&msg[..len]);
    }
}

/// Plain accepts waiting to go out as one batch verdict. A batch verdict with id N
/// covers every packet still waiting with an id up to N, so a packet whose verdict
/// is not a plain accept must have had its own verdict sent before the batch that
/// follows it: the queue thread sends those at once, in id order, and only pushes
/// plain accepts here.
#[derive(Clone, Copy, Debug, Default)]
pub struct Batch {
    last: u32,
    len: u32,
}

impl Batch {
    /// The most plain accepts held before the batch is sent.
    pub const MAX: u32 = 64;

    /// Adds a plain accept of packet `id`; returns whether the batch is full.
    pub fn push(&mut self, id: u32) -> bool {
        self.last = id;
        self.len += 1;
        self.len >= Self::MAX
    }

    /// Accepts held.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the batch: the id to send it with, if any was held.
    pub fn take(&mut self) -> Option<u32> {
        let id = (self.len > 0).then_some(self.last);
        self.len = 0;
        id
    }
}

#[cfg(test)]
mod tests;
