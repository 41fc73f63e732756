//! A small ctnetlink client: set conntrack's per-connection liberal flag on one TCP
//! entry, and read an entry's TCP flags back.
//!
//! One message does the work: `IPCTNL_MSG_CT_NEW` with `NLM_F_REQUEST | NLM_F_ACK`
//! and no `NLM_F_CREATE`, so it only updates an entry that exists (the kernel answers
//! `ENOENT` otherwise, and never creates one). Its attributes:
//!
//! ```text
//! CTA_TUPLE_ORIG                      the entry, in its original direction
//!   CTA_TUPLE_IP    CTA_IP_V4_SRC/DST or CTA_IP_V6_SRC/DST
//!   CTA_TUPLE_PROTO CTA_PROTO_NUM (6), CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT
//! CTA_PROTOINFO
//!   CTA_PROTOINFO_TCP
//!     CTA_PROTOINFO_TCP_FLAGS_ORIGINAL  struct nf_ct_tcp_flags { flags, mask }
//!     CTA_PROTOINFO_TCP_FLAGS_REPLY     = { IP_CT_TCP_FLAG_BE_LIBERAL, same }
//! ```
//!
//! What the kernel requires (`nlattr_to_tcp` in `nf_conntrack_proto_tcp.c`): since
//! Linux 2.6.3x `CTA_PROTOINFO_TCP_STATE` is optional (the oldest versions returned
//! `EINVAL` without it), and each flags attribute is applied as
//! `seen[dir].flags = (seen[dir].flags & ~mask) | (flags & mask)`, so a partial update
//! with a one-bit mask leaves every other flag and the state alone. Measured on
//! 6.18 by `tests/handback_netns.rs`: flags alone are accepted, the other flags are
//! kept, and the entry's state stays ESTABLISHED.
//!
//! The liberal flag is per direction: `tcp_in_window` accepts an out-of-window packet
//! when its *sender's* direction has it (exactly as the `nf_conntrack_tcp_be_liberal`
//! sysctl does for every flow), so both directions are set. The RST check that comes
//! before the window check (`seq` before the peer's highest ACK: "invalid rst") does
//! not look at the flag, so such RSTs stay INVALID.
//!
//! Written here rather than taken from a crate: `netlink-packet-netfilter` (rust-netlink,
//! 0.4) is well kept and models these attributes, but it only builds and parses
//! messages (it needs `netlink-sys` for the socket) and allocates a `Vec` per
//! attribute; the one update nfqwall sends is about 100 bytes built in a stack buffer,
//! with its errors named below, in about as many lines as the glue would take.

use core::fmt;
use core::net::IpAddr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `IP_CT_TCP_FLAG_BE_LIBERAL`: conntrack accepts out-of-window packets from this
/// direction (`include/uapi/linux/netfilter/nf_conntrack_tcp.h`).
pub const IP_CT_TCP_FLAG_BE_LIBERAL: u8 = 0x08;

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NFNETLINK_V0: u8 = 0;

const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLMSG_ERROR: u16 = 0x02;
const NLMSG_DONE: u16 = 0x03;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSGERR_ATTR_MSG: u16 = 1;

const SOL_NETLINK: i32 = 270;
const NETLINK_CAP_ACK: i32 = 10;
const NETLINK_EXT_ACK: i32 = 11;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_PROTOINFO: u16 = 4;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: u16 = 4;
const CTA_PROTOINFO_TCP_FLAGS_REPLY: u16 = 5;

const IPPROTO_TCP: u8 = 6;

/// Bytes of the largest request (IPv6 update: 120); the buffer is on the stack.
const REQUEST_MAX: usize = 160;

/// A TCP conntrack entry's original-direction tuple: the connection's initiator
/// first. Both addresses must be of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpTuple {
    /// The initiator's address.
    pub src: IpAddr,
    /// The initiator's port.
    pub sport: u16,
    /// The responder's address.
    pub dst: IpAddr,
    /// The responder's port.
    pub dport: u16,
}

/// The TCP part of a conntrack entry, as `IPCTNL_MSG_CT_GET` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// `enum tcp_conntrack` (3: ESTABLISHED).
    pub state: u8,
    /// `seen[0].flags`: the original direction's flags.
    pub flags_original: u8,
    /// `seen[1].flags`: the reply direction's flags.
    pub flags_reply: u8,
}

impl TcpInfo {
    /// Returns true if and only if both directions carry the liberal flag.
    pub fn liberal(&self) -> bool {
        self.flags_original & self.flags_reply & IP_CT_TCP_FLAG_BE_LIBERAL != 0
    }
}

/// Why a ctnetlink request failed.
#[derive(Debug)]
pub enum CtError {
    /// The tuple mixes IPv4 and IPv6.
    MixedFamilies,
    /// The netlink socket could not be opened or configured.
    Socket(io::Error),
    /// Sending the request failed.
    Send(io::Error),
    /// Receiving the answer failed.
    Recv(io::Error),
    /// No answer within the socket's timeout.
    Timeout,
    /// The kernel refused the request: `errno`, with the extended ACK's message if
    /// it sent one.
    Kernel {
        /// The positive errno value.
        errno: i32,
        /// `NLMSGERR_ATTR_MSG`, when present.
        message: Option<String>,
    },
    /// The answer was not a netlink message this client understands.
    BadReply(&'static str),
}

impl CtError {
    /// A short stable name for events and counters.
    pub fn name(&self) -> &'static str {
        match self {
            CtError::MixedFamilies => "mixed_families",
            CtError::Socket(_) => "socket",
            CtError::Send(_) => "send",
            CtError::Recv(_) => "recv",
            CtError::Timeout => "timeout",
            CtError::Kernel { errno, .. } => match *errno {
                libc::ENOENT => "no_entry",
                libc::EINVAL => "invalid",
                libc::EPERM | libc::EACCES => "permission",
                libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT => "unsupported",
                libc::EBUSY => "busy",
                _ => "kernel",
            },
            CtError::BadReply(_) => "bad_reply",
        }
    }
}

impl fmt::Display for CtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtError::MixedFamilies => write!(f, "the tuple mixes IPv4 and IPv6 addresses"),
            CtError::Socket(e) => write!(f, "cannot open a ctnetlink socket: {e}"),
            CtError::Send(e) => write!(f, "cannot send to ctnetlink: {e}"),
            CtError::Recv(e) => write!(f, "cannot read ctnetlink's answer: {e}"),
            CtError::Timeout => write!(f, "ctnetlink did not answer in time"),
            CtError::Kernel { errno, message } => {
                let what = match *errno {
                    libc::ENOENT => "no conntrack entry for this tuple (it expired, was never \
                                     created, or lives in another conntrack zone)"
                        .to_string(),
                    libc::EINVAL => "the kernel refused the attributes (EINVAL; kernels before \
                                     2.6.3x also require CTA_PROTOINFO_TCP_STATE)"
                        .to_string(),
                    libc::EPERM | libc::EACCES => "not permitted: changing conntrack entries \
                                                   needs CAP_NET_ADMIN in their network namespace"
                        .to_string(),
                    libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT => {
                        "ctnetlink is not available (nf_conntrack_netlink not loaded or not \
                         built)"
                            .to_string()
                    }
                    e => format!(
                        "the kernel refused the request: {}",
                        io::Error::from_raw_os_error(e)
                    ),
                };
                write!(f, "{what}")?;
                if let Some(m) = message {
                    write!(f, " (kernel: {m})")?;
                }
                Ok(())
            }
            CtError::BadReply(why) => write!(f, "unreadable ctnetlink answer: {why}"),
        }
    }
}

impl std::error::Error for CtError {}

/// An `AF_NETLINK`/`NETLINK_NETFILTER` socket for conntrack requests, in the network
/// namespace of the thread that opened it. One request at a time; each waits for its
/// ACK (or answer) for at most the timeout given to [`CtSocket::open`].
pub struct CtSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl CtSocket {
    /// Opens the socket, asks for extended ACKs (the kernel's error text) without the
    /// request echoed back, and bounds each wait by `timeout`.
    pub fn open(timeout: Duration) -> Result<CtSocket, CtError> {
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(CtError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: raw is a freshly opened descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Both options are best effort: without them errors carry no text, or the
        // ACK echoes the request (the receive buffer holds it either way).
        let _ = set_int(&fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
        let _ = set_int(&fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: tv lives for the call.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                core::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(CtError::Socket(io::Error::last_os_error()));
        }
        Ok(CtSocket {
            fd,
            seq: 0,
            buf: vec![0; 16384],
        })
    }

    /// Sets `IP_CT_TCP_FLAG_BE_LIBERAL` in both directions of the TCP entry `t`
    /// (update only: `ENOENT` if there is none), and waits for the kernel's ACK.
    pub fn set_tcp_liberal(&mut self, t: &TcpTuple) -> Result<(), CtError> {
        let mut req = [0u8; REQUEST_MAX];
        self.seq = self.seq.wrapping_add(1);
        let n = encode_set_liberal(&mut req, self.seq, t)?;
        self.send(&req[..n])?;
        self.wait_ack()
    }

    /// Reads the TCP state and flags of the entry `t` (`IPCTNL_MSG_CT_GET`).
    pub fn tcp_info(&mut self, t: &TcpTuple) -> Result<TcpInfo, CtError> {
        let mut req = [0u8; REQUEST_MAX];
        self.seq = self.seq.wrapping_add(1);
        let n = encode_get(&mut req, self.seq, t)?;
        self.send(&req[..n])?;
        let mut info = None;
        loop {
            let len = self.recv()?;
            let mut off = 0;
            while off + 16 <= len {
                let h = &self.buf[off..len];
                let (mlen, mtype, flags, seq) = header(h);
                if mlen < 16 || mlen > h.len() {
                    return Err(CtError::BadReply("truncated message"));
                }
                if seq == self.seq {
                    match mtype {
                        NLMSG_ERROR => {
                            parse_error(&h[..mlen], flags)?;
                            return info.ok_or(CtError::BadReply("ACK without the entry"));
                        }
                        NLMSG_DONE => {
                            return info.ok_or(CtError::BadReply("no entry in the answer"))
                        }
                        _ => info = Some(parse_tcp_info(&h[16..mlen])),
                    }
                }
                off += align4(mlen);
            }
        }
    }

    fn send(&self, msg: &[u8]) -> Result<(), CtError> {
        // SAFETY: a zeroed sockaddr_nl addresses the kernel (pid 0, no groups).
        let mut to: libc::sockaddr_nl = unsafe { core::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg and to live for the call.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                core::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(CtError::Send(io::Error::last_os_error()));
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<usize, CtError> {
        loop {
            // SAFETY: buf is valid for its length.
            let r = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Err(CtError::Timeout),
                _ => return Err(CtError::Recv(e)),
            }
        }
    }

    /// Reads until the ACK of the request just sent (earlier answers are skipped).
    fn wait_ack(&mut self) -> Result<(), CtError> {
        loop {
            let len = self.recv()?;
            let mut off = 0;
            while off + 16 <= len {
                let h = &self.buf[off..len];
                let (mlen, mtype, flags, seq) = header(h);
                if mlen < 16 || mlen > h.len() {
                    return Err(CtError::BadReply("truncated message"));
                }
                if mtype == NLMSG_ERROR && seq == self.seq {
                    return parse_error(&h[..mlen], flags);
                }
                off += align4(mlen);
            }
        }
    }
}

fn set_int(fd: &OwnedFd, level: i32, name: i32, v: libc::c_int) -> io::Result<()> {
    // SAFETY: v lives for the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            core::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// (length, type, flags, seq) of the netlink header at the start of `b` (16 bytes).
fn header(b: &[u8]) -> (usize, u16, u16, u32) {
    let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
    (u32_at(0) as usize, u16_at(4), u16_at(6), u32_at(8))
}

/// An `NLMSG_ERROR` message: `Ok` for an ACK (error 0), else the kernel's errno and
/// its extended-ACK text.
fn parse_error(m: &[u8], flags: u16) -> Result<(), CtError> {
    if m.len() < 20 {
        return Err(CtError::BadReply("short error message"));
    }
    let err = i32::from_ne_bytes([m[16], m[17], m[18], m[19]]);
    if err == 0 {
        return Ok(());
    }
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // After the error code: the request's header (16 bytes), and its payload too
        // unless capped; then the TLVs.
        let mut at = 20 + 16;
        if flags & NLM_F_CAPPED == 0 && m.len() >= 36 {
            let (orig_len, ..) = header(&m[20..]);
            at = 20 + align4(orig_len);
        }
        for (ty, payload) in Attrs(m.get(at..).unwrap_or(&[])) {
            if ty == NLMSGERR_ATTR_MSG {
                let text = payload.split(|&c| c == 0).next().unwrap_or(&[]);
                message = Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    Err(CtError::Kernel {
        errno: -err,
        message,
    })
}

/// Netlink attributes in a buffer: (type without the flag bits, payload).
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            self.0 = &[];
            return None;
        }
        self.0 = b.get(align4(len)..).unwrap_or(&[]);
        Some((ty, &b[4..len]))
    }
}

/// The TCP protoinfo of a conntrack message's payload (after its header).
fn parse_tcp_info(payload: &[u8]) -> TcpInfo {
    let mut info = TcpInfo::default();
    // nfgenmsg (4 bytes), then the entry's attributes.
    for (ty, p) in Attrs(payload.get(4..).unwrap_or(&[])) {
        if ty != CTA_PROTOINFO {
            continue;
        }
        for (ty, p) in Attrs(p) {
            if ty != CTA_PROTOINFO_TCP {
                continue;
            }
            for (ty, p) in Attrs(p) {
                match (ty, p) {
                    (CTA_PROTOINFO_TCP_STATE, [s, ..]) => info.state = *s,
                    (CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, [f, ..]) => info.flags_original = *f,
                    (CTA_PROTOINFO_TCP_FLAGS_REPLY, [f, ..]) => info.flags_reply = *f,
                    _ => {}
                }
            }
        }
    }
    info
}

/// Writes netlink messages into a fixed buffer; nests are closed by patching their
/// length.
struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.put(&(len as u16).to_ne_bytes());
        self.put(&ty.to_ne_bytes());
        self.put(payload);
        let pad = align4(len) - len;
        self.put(&[0u8; 3][..pad]);
    }

    fn begin(&mut self, ty: u16) -> usize {
        let at = self.len;
        self.put(&[0, 0]);
        self.put(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end(&mut self, at: usize) {
        let len = (self.len - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

/// The netlink header, nfgenmsg and `CTA_TUPLE_ORIG` of a request about `t`.
fn encode_head<'a>(
    buf: &'a mut [u8; REQUEST_MAX],
    msg: u16,
    flags: u16,
    seq: u32,
    t: &TcpTuple,
) -> Result<Writer<'a>, CtError> {
    let family = match (t.src, t.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET as u8,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6 as u8,
        _ => return Err(CtError::MixedFamilies),
    };
    let mut w = Writer { buf, len: 0 };
    w.put(&[0; 4]); // length, patched at the end
    w.put(&((NFNL_SUBSYS_CTNETLINK << 8) | msg).to_ne_bytes());
    w.put(&flags.to_ne_bytes());
    w.put(&seq.to_ne_bytes());
    w.put(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    w.put(&[family, NFNETLINK_V0, 0, 0]);
    let tuple = w.begin(CTA_TUPLE_ORIG);
    let ip = w.begin(CTA_TUPLE_IP);
    match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            w.attr(CTA_IP_V4_SRC, &s.octets());
            w.attr(CTA_IP_V4_DST, &d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            w.attr(CTA_IP_V6_SRC, &s.octets());
            w.attr(CTA_IP_V6_DST, &d.octets());
        }
        _ => unreachable!("families checked above"),
    }
    w.end(ip);
    let proto = w.begin(CTA_TUPLE_PROTO);
    w.attr(CTA_PROTO_NUM, &[IPPROTO_TCP]);
    w.attr(CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
    w.attr(CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
    w.end(proto);
    w.end(tuple);
    Ok(w)
}

fn finish(w: Writer<'_>) -> usize {
    let len = w.len;
    w.buf[..4].copy_from_slice(&(len as u32).to_ne_bytes());
    len
}

/// Encodes the update that sets the liberal flag on both directions of `t` into
/// `buf`; returns its length. No heap.
pub fn encode_set_liberal(
    buf: &mut [u8; REQUEST_MAX],
    seq: u32,
    t: &TcpTuple,
) -> Result<usize, CtError> {
    let mut w = encode_head(buf, IPCTNL_MSG_CT_NEW, NLM_F_REQUEST | NLM_F_ACK, seq, t)?;
    let info = w.begin(CTA_PROTOINFO);
    let tcp = w.begin(CTA_PROTOINFO_TCP);
    let flags = [IP_CT_TCP_FLAG_BE_LIBERAL, IP_CT_TCP_FLAG_BE_LIBERAL];
    w.attr(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, &flags);
    w.attr(CTA_PROTOINFO_TCP_FLAGS_REPLY, &flags);
    w.end(tcp);
    w.end(info);
    Ok(finish(w))
}

fn encode_get(buf: &mut [u8; REQUEST_MAX], seq: u32, t: &TcpTuple) -> Result<usize, CtError> {
    let w = encode_head(buf, IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_ACK, seq, t)?;
    Ok(finish(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4() -> TcpTuple {
        TcpTuple {
            src: "192.0.2.1".parse().unwrap(),
            sport: 40000,
            dst: "198.51.100.1".parse().unwrap(),
            dport: 8080,
        }
    }

    #[test]
    fn the_ipv4_update_is_laid_out_as_ctnetlink_expects() {
        let mut buf = [0u8; REQUEST_MAX];
        let n = encode_set_liberal(&mut buf, 7, &v4()).unwrap();
        let m = &buf[..n];
        let (len, ty, flags, seq) = header(m);
        assert_eq!((len, ty, flags, seq), (n, 0x0100, 0x05, 7));
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 0, 0, 0]);
        // Walk the attributes back: tuple, then protoinfo with both flag pairs.
        let top: Vec<_> = Attrs(&m[20..]).collect();
        assert_eq!(top.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [1, 4]);
        let tuple: Vec<_> = Attrs(top[0].1).collect();
        let ip: Vec<_> = Attrs(tuple[0].1).collect();
        assert_eq!(ip, [(1, &[192, 0, 2, 1][..]), (2, &[198, 51, 100, 1][..])]);
        let proto: Vec<_> = Attrs(tuple[1].1).collect();
        assert_eq!(
            proto,
            [
                (1, &[6u8][..]),
                (2, &40000u16.to_be_bytes()[..]),
                (3, &8080u16.to_be_bytes()[..])
            ]
        );
        let info: Vec<_> = Attrs(top[1].1).collect();
        let tcp: Vec<_> = Attrs(info[0].1).collect();
        assert_eq!(tcp, [(4, &[8u8, 8][..]), (5, &[8u8, 8][..])]);
        // No CTA_PROTOINFO_TCP_STATE: the entry's state is not touched.
        assert!(tcp.iter().all(|(t, _)| *t != CTA_PROTOINFO_TCP_STATE));
        assert_eq!(n % 4, 0);
    }

    #[test]
    fn the_ipv6_update_fits_the_stack_buffer() {
        let t = TcpTuple {
            src: "2001:db8:1::1".parse().unwrap(),
            sport: 1,
            dst: "2001:db8:2::1".parse().unwrap(),
            dport: 2,
        };
        let mut buf = [0u8; REQUEST_MAX];
        let n = encode_set_liberal(&mut buf, 1, &t).unwrap();
        assert_eq!(n, 120);
        assert_eq!(buf[16], libc::AF_INET6 as u8);
    }

    #[test]
    fn mixed_families_are_refused() {
        let mut t = v4();
        t.dst = "2001:db8::1".parse().unwrap();
        let mut buf = [0u8; REQUEST_MAX];
        assert!(matches!(
            encode_set_liberal(&mut buf, 1, &t),
            Err(CtError::MixedFamilies)
        ));
    }

    #[test]
    fn kernel_errors_are_named() {
        // An NLMSG_ERROR with ENOENT and an extended-ACK message, request capped.
        let mut m = Vec::new();
        let body_len = 16 + 4 + 16 + 12;
        m.extend_from_slice(&(body_len as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&(NLM_F_CAPPED | NLM_F_ACK_TLVS).to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        m.extend_from_slice(&[0; 16]);
        m.extend_from_slice(&12u16.to_ne_bytes());
        m.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        m.extend_from_slice(b"gone\0\0\0\0");
        let e = parse_error(&m, NLM_F_CAPPED | NLM_F_ACK_TLVS).unwrap_err();
        assert_eq!(e.name(), "no_entry");
        let text = e.to_string();
        assert!(text.contains("no conntrack entry") && text.contains("(kernel: gone)"));
        // error 0 is the ACK.
        m[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert!(parse_error(&m, 0).is_ok());
    }
}
