//! A small nfnetlink_queue (NFQUEUE) client: the live verdict path's transport.
//!
//! The rendered ruleset queues the packets nfqwall judges (`-j NFQUEUE --queue-num N
//! --queue-bypass`). The kernel holds each queued packet until a verdict names its
//! id, and sends a copy of it to whoever bound the queue, one netlink message per
//! packet. This module is that socket: one bind, a few configuration messages, a
//! parser that borrows from the receive buffer ([`Messages`]), and the two verdict
//! messages. No allocation per packet. The socket, the framing and the attribute
//! walk are [`crate::netlink`]'s, shared with NFLOG and ctnetlink; what is here is
//! nfnetlink_queue's own: its messages, attributes, configuration and verdicts.
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

use crate::netlink::{
    self, align4, be32, Attrs, Socket, Writer, NFGEN_HDRLEN, NLA_HDRLEN, NLMSG_HDRLEN,
    NLM_F_REQUEST,
};
use std::io;

pub use crate::netlink::{Malformed, RecvMany};

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

/// The length of a batch verdict message: netlink header, nfgenmsg, verdict header.
pub const BATCH_VERDICT_LEN: usize = NLMSG_HDRLEN + NFGEN_HDRLEN + NLA_HDRLEN + 8;
/// The length of a batch verdict message that also sets every packet's mark.
pub const BATCH_VERDICT_MARK_LEN: usize = BATCH_VERDICT_LEN + NLA_HDRLEN + 4;
/// Room in a verdict message besides the payload.
pub const VERDICT_OVERHEAD: usize = NLMSG_HDRLEN + NFGEN_HDRLEN + (NLA_HDRLEN + 8) * 2 + 4;
/// The largest payload a verdict carries (the kernel refuses more than 64 KiB).
pub const MAX_PAYLOAD: usize = 0xffff;
/// A receive buffer that holds any one queued packet's message: the largest copy
/// plus the headers and attributes (conntrack's nest is the largest, under 1 KiB).
pub const RECV_BUF: usize = MAX_PAYLOAD + 4096;

/// A receive slot of the queue threads' multi-datagram receive: one packet message
/// with the daemon's copy range (512 bytes) and every attribute the kernel adds, with
/// room to spare (a longer datagram is cut and counted).
pub const RECV_SLOT: usize = 4096;
/// Datagrams a queue thread takes per receive call.
pub const RECV_MANY: usize = 32;

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
pub type Item<'a> = netlink::Item<QueuedPacket<'a>>;

/// The messages of one received datagram, in order, borrowing from it.
pub type Messages<'a> = netlink::Messages<'a, QueuedPacket<'a>>;

impl<'a> netlink::Packet<'a> for QueuedPacket<'a> {
    const KIND: u16 = NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET;

    /// The attributes of one `NFQNL_MSG_PACKET`.
    fn parse(body: &'a [u8]) -> Result<QueuedPacket<'a>, Malformed> {
        if body.len() < NFGEN_HDRLEN {
            return Err(Malformed("packet message shorter than its nfgenmsg"));
        }
        let mut p = QueuedPacket {
            queue: u16::from_be_bytes([body[2], body[3]]),
            ..QueuedPacket::default()
        };
        let mut have_hdr = false;
        for attr in Attrs::new(&body[NFGEN_HDRLEN..]) {
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
                NFQA_MARK => p.mark = be32(value).ok_or(Malformed("short NFQA_MARK"))?,
                NFQA_IFINDEX_INDEV => {
                    p.indev = be32(value).ok_or(Malformed("short NFQA_IFINDEX_INDEV"))?
                }
                NFQA_CAP_LEN => {
                    p.cap_len = Some(be32(value).ok_or(Malformed("short NFQA_CAP_LEN"))?)
                }
                NFQA_SKB_INFO => {
                    p.skb_info = be32(value).ok_or(Malformed("short NFQA_SKB_INFO"))?
                }
                NFQA_PAYLOAD => p.payload = value,
                NFQA_CT => {
                    p.ct_info.get_or_insert(0);
                    for inner in Attrs::new(value) {
                        if let (CTA_STATUS, v) = inner? {
                            p.ct_status = Some(be32(v).ok_or(Malformed("short CTA_STATUS"))?);
                        }
                    }
                }
                NFQA_CT_INFO => {
                    p.ct_info = Some(be32(value).ok_or(Malformed("short NFQA_CT_INFO"))?)
                }
                _ => {}
            }
        }
        if !have_hdr {
            return Err(Malformed("packet message without NFQA_PACKET_HDR"));
        }
        Ok(p)
    }
}

/// Starts a message of `kind` for `queue` (nfgenmsg family `AF_UNSPEC`) in `out`.
#[inline]
fn writer(out: &mut [u8], kind: u16, flags: u16, queue: u16) -> Writer<'_> {
    Writer::new(out, NFNL_SUBSYS_QUEUE << 8 | kind, flags, 0, 0, queue)
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
    let kind = NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_CONFIG;
    netlink::config_request(out, kind, seq, queue, attrs)
}

/// Writes an `NFQNL_MSG_VERDICT_BATCH`: `verdict` for every packet of `queue` still
/// waiting with an id up to `id`. No acknowledgement is asked for (an error still
/// comes back as an `NLMSG_ERROR`).
///
/// With `mark`, every packet it covers gets that mark too (the kernel applies one
/// `NFQA_MARK` to the whole batch).
pub fn batch_verdict(
    out: &mut [u8; BATCH_VERDICT_MARK_LEN],
    queue: u16,
    id: u32,
    verdict: u32,
    mark: Option<u32>,
) -> usize {
    let mut w = writer(out, NFQNL_MSG_VERDICT_BATCH, NLM_F_REQUEST, queue);
    w.attr(NFQA_VERDICT_HDR, &verdict_hdr(verdict, id));
    if let Some(m) = mark {
        w.attr(NFQA_MARK, &m.to_be_bytes());
    }
    w.finish()
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
    let mut w = writer(out, NFQNL_MSG_VERDICT, NLM_F_REQUEST, queue);
    w.attr(NFQA_VERDICT_HDR, &verdict_hdr(verdict, id));
    if let Some(m) = mark {
        w.attr(NFQA_MARK, &m.to_be_bytes());
    }
    if let Some(p) = payload {
        w.attr(NFQA_PAYLOAD, p);
    }
    Some(w.finish())
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
    sock: Socket,
    queue: u16,
    seq: u32,
    rcvbuf: usize,
    conntrack: bool,
    gso: bool,
    out: Box<[u8]>,
    /// The highest id of the packets read past while the queue was set up: they wait
    /// for a verdict nobody judged them for.
    read_past: u32,
}

impl NfqSocket {
    /// Opens an `AF_NETLINK`/`NETLINK_NETFILTER` socket, sizes its receive buffer,
    /// binds `opts.queue` and configures it: copy mode packet with the copy range, the
    /// queue length, fail-open as asked, conntrack info and whole GSO packets if the
    /// kernel accepts them (see [`NfqSocket::conntrack`], [`NfqSocket::gso`]).
    /// `ENOBUFS` stays on: a receive buffer overrun is reported, not hidden.
    pub fn open(opts: &Options) -> Result<NfqSocket, OpenError> {
        let err = |what| move |source| OpenError { what, source };
        let sock = Socket::open().map_err(err("open a netfilter netlink socket"))?;
        sock.bind().map_err(err("bind the netlink socket"))?;
        let mut s = NfqSocket {
            sock,
            queue: opts.queue,
            seq: 0,
            rcvbuf: 0,
            conntrack: false,
            gso: false,
            out: vec![0u8; VERDICT_OVERHEAD + align4(MAX_PAYLOAD)].into_boxed_slice(),
            read_past: 0,
        };
        s.rcvbuf = s
            .sock
            .force_rcvbuf(opts.rcvbuf)
            .map_err(err("size the socket's receive buffer"))?;
        s.sock
            .set_int(libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 0)
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

    /// Sends to the kernel, which handles the message inline; `MSG_DONTWAIT` keeps a
    /// failing send from waiting.
    #[inline]
    fn send(&self, msg: &[u8]) -> io::Result<()> {
        self.sock.send(msg, libc::MSG_DONTWAIT)
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
            let got = &buf[..n.min(buf.len())];
            for item in Messages::new(got) {
                if let Ok(Item::Packet(p)) = item {
                    self.read_past = self.read_past.max(p.id);
                }
            }
            if let Some(r) = netlink::answer(got, self.seq) {
                return r;
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no acknowledgement from nfnetlink_queue",
        ))
    }

    /// The highest id of the packets that arrived while the queue was being set up
    /// and were read past, once: they wait for a verdict.
    pub fn take_read_past(&mut self) -> Option<u32> {
        let id = std::mem::take(&mut self.read_past);
        (id > 0).then_some(id)
    }

    /// Receives one datagram into `buf`; returns its length, which is larger than
    /// `buf` when the datagram was cut (`MSG_TRUNC`). `dontwait`: `WouldBlock` when
    /// nothing is waiting. `ENOBUFS` when the kernel could not deliver messages
    /// because the receive buffer was full; `EINTR` when a signal interrupted a wait.
    pub fn recv(&self, buf: &mut [u8], dontwait: bool) -> io::Result<usize> {
        let flags = libc::MSG_TRUNC | if dontwait { libc::MSG_DONTWAIT } else { 0 };
        self.sock.recv(buf, flags)
    }

    /// Receives up to `into.capacity()` datagrams with one system call (see
    /// [`netlink::RecvMany::datagrams`]); returns how many. Without `dontwait` it waits
    /// for the first only (`MSG_WAITFORONE`) and returns what else is there; errors as
    /// [`Self::recv`].
    pub fn recv_many(&self, into: &mut netlink::RecvMany, dontwait: bool) -> io::Result<usize> {
        let wait = if dontwait {
            libc::MSG_DONTWAIT
        } else {
            libc::MSG_WAITFORONE
        };
        self.sock.recv_many(into, libc::MSG_TRUNC | wait)
    }

    /// Sends a batch verdict: `verdict` for every waiting packet with an id up to
    /// `id`, and with `mark` that mark too. Never waits.
    pub fn batch_verdict(&self, id: u32, verdict: u32, mark: Option<u32>) -> io::Result<()> {
        let mut msg = [0u8; BATCH_VERDICT_MARK_LEN];
        let len = batch_verdict(&mut msg, self.queue, id, verdict, mark);
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

/// Accepts waiting to go out as one batch verdict: plain ones (no mark), or ones
/// that all set the same new mark. A batch verdict with id N covers every packet
/// still waiting with an id up to N, so a packet whose verdict differs (a drop, a
/// vouch, a rewritten payload, another mark) must have had its own verdict sent, or
/// the batch before it flushed, before the batch that follows it: the queue thread
/// sends those at once, in id order, and pushes here only accepts with this batch's
/// mark.
#[derive(Clone, Copy, Debug, Default)]
pub struct Batch {
    last: u32,
    len: u32,
    mark: Option<u32>,
}

impl Batch {
    /// The most plain accepts held before the batch is sent.
    pub const MAX: u32 = 64;

    /// Adds a plain accept of packet `id`; returns whether the batch is full.
    pub fn push(&mut self, id: u32) -> bool {
        self.push_marked(id, None)
    }

    /// Adds an accept of packet `id` that sets `mark` (`None`: keeps the packet's);
    /// returns whether the batch is full. The caller flushes first when `mark`
    /// differs from [`Batch::mark`] of a batch that holds any.
    pub fn push_marked(&mut self, id: u32, mark: Option<u32>) -> bool {
        debug_assert!(self.len == 0 || self.mark == mark);
        self.last = id;
        self.len += 1;
        self.mark = mark;
        self.len >= Self::MAX
    }

    /// The mark the held accepts set (`None`: plain accepts).
    pub fn mark(&self) -> Option<u32> {
        self.mark
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
        self.take_marked().map(|(id, _)| id)
    }

    /// Takes the batch: the id to send it with and the mark it sets, if any was held.
    pub fn take_marked(&mut self) -> Option<(u32, Option<u32>)> {
        let taken = (self.len > 0).then_some((self.last, self.mark));
        self.len = 0;
        self.mark = None;
        taken
    }
}

#[cfg(test)]
mod tests;
