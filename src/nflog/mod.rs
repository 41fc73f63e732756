//! A small nfnetlink_log (NFLOG) client: the shadow feed's transport.
//!
//! The rendered ruleset sends the headers of `track = "shadow"` services' ESTABLISHED
//! packets to one NFLOG group (`-j NFLOG --nflog-group G --nflog-size S
//! --nflog-threshold T`). NFLOG gives no verdict: the packet goes on at once, and the
//! kernel batches copies of its first `S` bytes into netlink messages of up to `T`
//! packets, sent to whoever bound the group. When the socket is full the kernel drops
//! the whole batch; with [`NFULNL_CFG_F_SEQ`] every packet message carries its number
//! in the group ([`NFULA_SEQ`]), so a gap counts exactly what was lost.
//!
//! Own code rather than a crate: `netlink-packet-netfilter` (the rust-netlink
//! project's) parses each message into a `Vec` of attributes and copies the payload
//! into another `Vec`, two allocations per packet on a path meant to take 100,000
//! packets a second; `nflog` binds the C libnetfilter_log (a C dependency and a
//! callback API). What is needed is small: one socket, two configuration messages,
//! and a parser that borrows from the receive buffer ([`Messages`]), which this
//! module is. No allocation per message. The socket, the framing and the attribute
//! walk are [`crate::netlink`]'s, shared with NFQUEUE and ctnetlink; what is here is
//! nfnetlink_log's own: its messages, attributes and configuration.
//!
//! Kernel behaviour relied on (include/uapi/linux/netfilter/nfnetlink_log.h,
//! net/netfilter/nfnetlink_log.c):
//! - `NFULNL_CFG_CMD_BIND` with the group in `nfgenmsg.res_id` binds it; a group
//!   bound by another socket answers `EBUSY`. Closing the socket unbinds.
//! - `NFULNL_CFG_CMD_PF_BIND`/`PF_UNBIND` are not sent: they make nfnetlink_log the
//!   *default* logger of an address family (the one `/proc/net/netfilter/nf_log`
//!   shows), which changes where the host's other logging goes. The NFLOG target
//!   names its logger type itself and needs no such binding (since Linux 3.17).
//! - The rule's `--nflog-threshold` overrides the instance's queue threshold; the
//!   instance's flush timeout ([`NFULA_CFG_TIMEOUT`], 1/100 s) bounds how long a
//!   partial batch waits; the instance's buffer size ([`NFULA_CFG_NLBUFSIZ`], at most
//!   128 KiB) is what each batch is allocated with, so it is sized to the batch.

use crate::netlink::{self, be32, Attrs, Socket};
use std::io;
use std::time::Duration;

pub use crate::netlink::Malformed;

/// `NFNL_SUBSYS_ULOG`: the nfnetlink subsystem of nfnetlink_log.
pub const NFNL_SUBSYS_ULOG: u16 = 4;
/// `NFULNL_MSG_PACKET`: a logged packet.
pub const NFULNL_MSG_PACKET: u16 = 0;
/// `NFULNL_MSG_CONFIG`: a configuration request.
pub const NFULNL_MSG_CONFIG: u16 = 1;

/// Packet attributes (`enum nfulnl_attr_type`).
pub const NFULA_PACKET_HDR: u16 = 1;
/// `__be32` packet mark.
pub const NFULA_MARK: u16 = 2;
/// `__be32` input interface index.
pub const NFULA_IFINDEX_INDEV: u16 = 4;
/// `__be32` output interface index.
pub const NFULA_IFINDEX_OUTDEV: u16 = 5;
/// The packet's first bytes from its network header.
pub const NFULA_PAYLOAD: u16 = 9;
/// The rule's `--nflog-prefix`, NUL-terminated.
pub const NFULA_PREFIX: u16 = 10;
/// `__be32` number of the message within the group (with [`NFULNL_CFG_F_SEQ`]).
pub const NFULA_SEQ: u16 = 12;

/// Configuration attributes (`enum nfulnl_attr_config`).
pub const NFULA_CFG_CMD: u16 = 1;
/// `struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 pad; }`.
pub const NFULA_CFG_MODE: u16 = 2;
/// `__be32` batch buffer size in bytes.
pub const NFULA_CFG_NLBUFSIZ: u16 = 3;
/// `__be32` flush timeout in 1/100 s.
pub const NFULA_CFG_TIMEOUT: u16 = 4;
/// `__be16` flags.
pub const NFULA_CFG_FLAGS: u16 = 6;
/// `NFULNL_CFG_CMD_BIND`.
pub const NFULNL_CFG_CMD_BIND: u8 = 1;
/// `NFULNL_CFG_CMD_UNBIND`.
pub const NFULNL_CFG_CMD_UNBIND: u8 = 2;
/// `NFULNL_COPY_PACKET`: copy the packet, up to the copy range.
pub const NFULNL_COPY_PACKET: u8 = 2;
/// `NFULNL_CFG_F_SEQ`: number the messages of the group.
pub const NFULNL_CFG_F_SEQ: u16 = 1;

/// The largest batch buffer the kernel accepts (`NFULNL_NLBUFSIZ` limit).
pub const MAX_NLBUFSIZ: u32 = 131_072;
/// The smallest (`NFULNL_NLBUFSIZ_DEFAULT`).
pub const MIN_NLBUFSIZ: u32 = 4096;

/// One logged packet, borrowed from the receive buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoggedPacket<'a> {
    /// `NFULA_SEQ`: the message's number in the group, when numbering is on.
    pub seq: Option<u32>,
    /// `NFULA_PACKET_HDR`: the link-layer protocol (`0x0800` IPv4, `0x86dd` IPv6).
    pub hw_protocol: u16,
    /// `NFULA_PACKET_HDR`: the netfilter hook (1 `LOCAL_IN`, 3 `LOCAL_OUT`).
    pub hook: u8,
    /// `NFULA_MARK`.
    pub mark: Option<u32>,
    /// `NFULA_IFINDEX_INDEV`.
    pub indev: Option<u32>,
    /// `NFULA_IFINDEX_OUTDEV`.
    pub outdev: Option<u32>,
    /// `NFULA_PREFIX` without its NUL.
    pub prefix: Option<&'a [u8]>,
    /// `NFULA_PAYLOAD`: the packet from its IP header, cut at the copy range.
    pub payload: &'a [u8],
}

/// One netlink message of a batch.
pub type Item<'a> = netlink::Item<LoggedPacket<'a>>;

/// The messages of one received datagram (one kernel batch), in order, borrowing
/// from it.
pub type Messages<'a> = netlink::Messages<'a, LoggedPacket<'a>>;

impl<'a> netlink::Packet<'a> for LoggedPacket<'a> {
    const KIND: u16 = NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET;

    /// The attributes of one `NFULNL_MSG_PACKET`.
    fn parse(body: &'a [u8]) -> Result<LoggedPacket<'a>, Malformed> {
        let attrs = body
            .get(netlink::NFGEN_HDRLEN..)
            .ok_or(Malformed("packet message shorter than its nfgenmsg"))?;
        let mut p = LoggedPacket::default();
        for attr in Attrs::new(attrs) {
            let (kind, value) = attr?;
            match kind {
                NFULA_PACKET_HDR if value.len() >= 3 => {
                    p.hw_protocol = u16::from_be_bytes([value[0], value[1]]);
                    p.hook = value[2];
                }
                NFULA_SEQ => p.seq = be32(value),
                NFULA_MARK => p.mark = be32(value),
                NFULA_IFINDEX_INDEV => p.indev = be32(value),
                NFULA_IFINDEX_OUTDEV => p.outdev = be32(value),
                NFULA_PAYLOAD => p.payload = value,
                NFULA_PREFIX => {
                    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
                    p.prefix = Some(&value[..end]);
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

/// Writes one nfnetlink_log configuration request for `group` with `attrs`
/// (type, value) into `out`; returns its length.
pub fn config_request(out: &mut [u8; 128], seq: u32, group: u16, attrs: &[(u16, &[u8])]) -> usize {
    let kind = NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG;
    netlink::config_request(out, kind, seq, group, attrs)
}

/// How the group is set up.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The NFLOG group.
    pub group: u16,
    /// Bytes of each packet copied (the rule's `--nflog-size` caps it too).
    pub copy_range: u32,
    /// Batch buffer size, clamped to what the kernel accepts.
    pub nlbufsiz: u32,
    /// Flush timeout of a partial batch, in 1/100 s.
    pub timeout_cs: u32,
    /// Socket receive buffer (`SO_RCVBUFFORCE`; needs CAP_NET_ADMIN).
    pub rcvbuf: usize,
}

impl Options {
    /// Options for a feed of `copy_range` bytes in batches of `threshold` packets:
    /// a batch buffer that holds a whole batch (a message is the copy plus about
    /// 200 bytes of headers and attributes), a 20 ms flush timeout and a 32 MiB
    /// receive buffer.
    pub fn for_feed(group: u16, copy_range: u32, threshold: u16) -> Options {
        let per_packet = copy_range.saturating_add(256);
        Options {
            group,
            copy_range,
            nlbufsiz: (per_packet.saturating_mul(u32::from(threshold)))
                .clamp(MIN_NLBUFSIZ, MAX_NLBUFSIZ),
            timeout_cs: 2,
            rcvbuf: 32 << 20,
        }
    }
}

/// A netlink socket bound to one NFLOG group. Closing it (drop) unbinds the group.
pub struct NflogSocket {
    sock: Socket,
    group: u16,
    seq: u32,
    rcvbuf: usize,
}

impl NflogSocket {
    /// Opens an `AF_NETLINK`/`NETLINK_NETFILTER` socket, binds `opts.group` and
    /// configures it: copy mode packet with the copy range, batch buffer, flush
    /// timeout, message numbering; sets the receive buffer and a 200 ms receive
    /// timeout (so a thread reading it can notice a stop).
    pub fn open(opts: &Options) -> io::Result<NflogSocket> {
        let sock = Socket::open()?;
        sock.bind()?;
        let rcvbuf = sock.force_rcvbuf(opts.rcvbuf).unwrap_or(0);
        sock.set_recv_timeout(Duration::from_millis(200))?;
        let mut s = NflogSocket {
            sock,
            group: opts.group,
            seq: 0,
            rcvbuf,
        };
        s.request(&[(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND][..])])?;
        let mut mode = [0u8; 6];
        mode[..4].copy_from_slice(&opts.copy_range.to_be_bytes());
        mode[4] = NFULNL_COPY_PACKET;
        s.request(&[
            (NFULA_CFG_MODE, &mode[..]),
            (NFULA_CFG_NLBUFSIZ, &opts.nlbufsiz.to_be_bytes()[..]),
            (NFULA_CFG_TIMEOUT, &opts.timeout_cs.to_be_bytes()[..]),
            (NFULA_CFG_FLAGS, &NFULNL_CFG_F_SEQ.to_be_bytes()[..]),
        ])?;
        Ok(s)
    }

    /// The group bound.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// The receive buffer as the kernel reports it (0 if unknown).
    pub fn rcvbuf(&self) -> usize {
        self.rcvbuf
    }

    /// Sends one configuration request and waits for its acknowledgement; packet
    /// messages that arrive meanwhile are dropped (the feed has not started).
    fn request(&mut self, attrs: &[(u16, &[u8])]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = [0u8; 128];
        let len = config_request(&mut msg, self.seq, self.group, attrs);
        self.sock.send(&msg[..len], 0)?;
        let mut buf = vec![0u8; 1 << 17];
        for _ in 0..64 {
            let n = self.recv(&mut buf)?;
            if let Some(r) = netlink::answer(&buf[..n], self.seq) {
                return r;
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no acknowledgement from nfnetlink_log",
        ))
    }

    /// Receives one datagram (one kernel batch) into `buf`; returns its length.
    /// `WouldBlock`/`TimedOut` after the receive timeout, `ENOBUFS` when the kernel
    /// dropped messages because the receive buffer was full.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv(buf, 0)
    }
}

impl Drop for NflogSocket {
    fn drop(&mut self) {
        // Closing unbinds too; say it explicitly, without waiting for the answer.
        let mut msg = [0u8; 128];
        let len = config_request(
            &mut msg,
            self.seq.wrapping_add(1),
            self.group,
            &[(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_UNBIND][..])],
        );
        let _ = self.sock.send(&msg[..len], libc::MSG_DONTWAIT);
    }
}

/// Counts the messages lost between numbered messages: feed each [`LoggedPacket::seq`]
/// to [`SeqGaps::next`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqGaps {
    expected: Option<u32>,
}

impl SeqGaps {
    /// Returns how many messages were lost before the one numbered `seq` (0 when it
    /// is the next one, or the first). A number from the past (a reordering, or a
    /// group re-bound) restarts the count without claiming a loss.
    pub fn next(&mut self, seq: u32) -> u32 {
        let lost = match self.expected {
            Some(e) => {
                let gap = seq.wrapping_sub(e);
                if gap < 1 << 31 {
                    gap
                } else {
                    0
                }
            }
            None => 0,
        };
        self.expected = Some(seq.wrapping_add(1));
        lost
    }
}

#[cfg(test)]
mod tests;
