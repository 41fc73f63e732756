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
//! module is. No allocation per message.
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

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

const NLMSG_HDRLEN: usize = 16;
const NFGEN_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;

/// The largest batch buffer the kernel accepts (`NFULNL_NLBUFSIZ` limit).
pub const MAX_NLBUFSIZ: u32 = 131_072;
/// The smallest (`NFULNL_NLBUFSIZ_DEFAULT`).
pub const MIN_NLBUFSIZ: u32 = 4096;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A logged packet.
    Packet(LoggedPacket<'a>),
    /// An acknowledgement (`errno` 0) or error answer to request `seq`.
    Ack {
        /// The request's sequence number.
        seq: u32,
        /// 0, or the positive errno.
        errno: i32,
    },
    /// End of a multi-part batch, or any other message: nothing to do.
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

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
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
                let code = i32::from_ne_bytes(body[..4].try_into().expect("4 bytes"));
                Ok(Item::Ack {
                    seq: u32_ne(body, 4 + 8),
                    errno: -code,
                })
            }
            NLMSG_DONE | NLMSG_OVERRUN => Ok(Item::Other),
            k if k == (NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET) => parse_packet(body),
            _ => Ok(Item::Other),
        })
    }
}

/// The attributes of one `NFULNL_MSG_PACKET` (after the netlink header).
fn parse_packet(body: &[u8]) -> Result<Item<'_>, Malformed> {
    let mut attrs = body
        .get(NFGEN_HDRLEN..)
        .ok_or(Malformed("packet message shorter than its nfgenmsg"))?;
    let mut p = LoggedPacket::default();
    while attrs.len() >= NLA_HDRLEN {
        let len = usize::from(u16_ne(attrs, 0));
        if len < NLA_HDRLEN || len > attrs.len() {
            return Err(Malformed("attribute length out of bounds"));
        }
        let value = &attrs[NLA_HDRLEN..len];
        match u16_ne(attrs, 2) & NLA_TYPE_MASK {
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
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    Ok(Item::Packet(p))
}

/// Writes one nfnetlink_log configuration request for `group` with `attrs`
/// (type, value) into `out`; returns its length.
pub fn config_request(out: &mut [u8; 128], seq: u32, group: u16, attrs: &[(u16, &[u8])]) -> usize {
    let mut at = NLMSG_HDRLEN;
    // nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id = group (big endian).
    out[at] = 0;
    out[at + 1] = 0;
    out[at + 2..at + 4].copy_from_slice(&group.to_be_bytes());
    at += NFGEN_HDRLEN;
    for (kind, value) in attrs {
        let len = NLA_HDRLEN + value.len();
        out[at..at + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        out[at + 2..at + 4].copy_from_slice(&kind.to_ne_bytes());
        out[at + 4..at + len].copy_from_slice(value);
        out[at + len..at + align4(len)].fill(0);
        at += align4(len);
    }
    out[0..4].copy_from_slice(&(at as u32).to_ne_bytes());
    out[4..6].copy_from_slice(&(NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG).to_ne_bytes());
    out[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    out[8..12].copy_from_slice(&seq.to_ne_bytes());
    out[12..16].copy_from_slice(&0u32.to_ne_bytes());
    at
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
    fd: OwnedFd,
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
        // SAFETY: plain socket(2); the fd is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
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
            return Err(io::Error::last_os_error());
        }
        let mut s = NflogSocket {
            fd,
            group: opts.group,
            seq: 0,
            rcvbuf: 0,
        };
        s.rcvbuf = s.set_rcvbuf(opts.rcvbuf).unwrap_or(0);
        s.set_timeout_ms(200)?;
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
        // SAFETY: msg[..len] is initialised; the kernel is the destination (pid 0).
        let r = unsafe {
            let mut to: libc::sockaddr_nl = std::mem::zeroed();
            to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                len,
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 1 << 17];
        for _ in 0..64 {
            let n = self.recv(&mut buf)?;
            for item in Messages::new(&buf[..n]) {
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
            "no acknowledgement from nfnetlink_log",
        ))
    }

    /// Receives one datagram (one kernel batch) into `buf`; returns its length.
    /// `WouldBlock`/`TimedOut` after the receive timeout, `ENOBUFS` when the kernel
    /// dropped messages because the receive buffer was full.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn set_timeout_ms(&self, ms: u32) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: (ms / 1000) as libc::time_t,
            tv_usec: ((ms % 1000) * 1000) as libc::suseconds_t,
        };
        // SAFETY: tv lives for the call.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn set_rcvbuf(&self, bytes: usize) -> io::Result<usize> {
        let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        let fd = self.fd.as_raw_fd();
        // SAFETY: v lives for the call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut got: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: got and len are valid for the call.
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut got as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        Ok(got.max(0) as usize)
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
        // SAFETY: as in `request`.
        unsafe {
            let mut to: libc::sockaddr_nl = std::mem::zeroed();
            to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                len,
                libc::MSG_DONTWAIT,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            );
        }
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
