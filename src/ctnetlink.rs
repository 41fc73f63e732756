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
//! with its errors named below, in about as many lines as the glue would take. The
//! socket, framing and attributes are [`crate::netlink`]'s, shared with NFLOG and
//! NFQUEUE.

use crate::netlink::{
    self, Attrs, Frames, Socket, Writer, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST,
};
use core::fmt;
use core::net::IpAddr;
use std::io;
use std::time::Duration;

/// `IP_CT_TCP_FLAG_BE_LIBERAL`: conntrack accepts out-of-window packets from this
/// direction (`include/uapi/linux/netfilter/nf_conntrack_tcp.h`).
pub const IP_CT_TCP_FLAG_BE_LIBERAL: u8 = 0x08;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;

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
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl CtSocket {
    /// Opens the socket, asks for extended ACKs (the kernel's error text) without the
    /// request echoed back, and bounds each wait by `timeout`.
    pub fn open(timeout: Duration) -> Result<CtSocket, CtError> {
        let sock = Socket::open().map_err(CtError::Socket)?;
        // Both options are best effort: without them errors carry no text, or the
        // ACK echoes the request (the receive buffer holds it either way).
        let _ = sock.set_int(libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1);
        let _ = sock.set_int(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        sock.set_recv_timeout(timeout).map_err(CtError::Socket)?;
        Ok(CtSocket {
            sock,
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
            for m in Frames::new(&self.buf[..len]) {
                let m = m.map_err(|_| CtError::BadReply("truncated message"))?;
                if m.seq == self.seq {
                    match m.kind {
                        NLMSG_ERROR => {
                            parse_error(m.body, m.flags)?;
                            return info.ok_or(CtError::BadReply("ACK without the entry"));
                        }
                        NLMSG_DONE => {
                            return info.ok_or(CtError::BadReply("no entry in the answer"))
                        }
                        _ => info = Some(parse_tcp_info(m.body)),
                    }
                }
            }
        }
    }

    fn send(&self, msg: &[u8]) -> Result<(), CtError> {
        self.sock.send(msg, 0).map_err(CtError::Send)
    }

    fn recv(&mut self) -> Result<usize, CtError> {
        loop {
            let e = match self.sock.recv(&mut self.buf, 0) {
                Ok(n) => return Ok(n),
                Err(e) => e,
            };
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
            for m in Frames::new(&self.buf[..len]) {
                let m = m.map_err(|_| CtError::BadReply("truncated message"))?;
                if m.kind == NLMSG_ERROR && m.seq == self.seq {
                    return parse_error(m.body, m.flags);
                }
            }
        }
    }
}

/// An `NLMSG_ERROR` body: `Ok` for an ACK (error 0), else the kernel's errno and its
/// extended-ACK text.
fn parse_error(body: &[u8], flags: u16) -> Result<(), CtError> {
    let errno = netlink::error_errno(body).ok_or(CtError::BadReply("short error message"))?;
    if errno == 0 {
        return Ok(());
    }
    Err(CtError::Kernel {
        errno,
        message: netlink::ext_ack_message(body, flags)
            .map(|text| String::from_utf8_lossy(text).into_owned()),
    })
}

/// The attributes of `b` up to the first malformed one: an answer is read for what it
/// holds, a cut attribute is not an error.
fn attrs(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    Attrs::new(b).map_while(Result::ok)
}

/// The TCP protoinfo of a conntrack message's payload (after its header).
fn parse_tcp_info(payload: &[u8]) -> TcpInfo {
    let mut info = TcpInfo::default();
    // nfgenmsg (4 bytes), then the entry's attributes.
    for (ty, p) in attrs(payload.get(4..).unwrap_or(&[])) {
        if ty != CTA_PROTOINFO {
            continue;
        }
        for (ty, p) in attrs(p) {
            if ty != CTA_PROTOINFO_TCP {
                continue;
            }
            for (ty, p) in attrs(p) {
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
    let mut w = Writer::new(
        buf,
        (NFNL_SUBSYS_CTNETLINK << 8) | msg,
        flags,
        seq,
        family,
        0,
    );
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
    Ok(w.finish())
}

fn encode_get(buf: &mut [u8; REQUEST_MAX], seq: u32, t: &TcpTuple) -> Result<usize, CtError> {
    let w = encode_head(buf, IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_ACK, seq, t)?;
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::build::message;
    use crate::netlink::{NLMSGERR_ATTR_MSG, NLM_F_ACK_TLVS, NLM_F_CAPPED};

    /// The attributes of `b`, each one well formed.
    fn all(b: &[u8]) -> Vec<(u16, &[u8])> {
        Attrs::new(b).map(Result::unwrap).collect()
    }

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
        let f = Frames::new(m).next().unwrap().unwrap();
        assert_eq!(
            (f.body.len() + 16, f.kind, f.flags, f.seq),
            (n, 0x0100, 0x05, 7)
        );
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 0, 0, 0]);
        // Walk the attributes back: tuple, then protoinfo with both flag pairs.
        let top = all(&m[20..]);
        assert_eq!(top.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [1, 4]);
        let tuple = all(top[0].1);
        let ip = all(tuple[0].1);
        assert_eq!(ip, [(1, &[192, 0, 2, 1][..]), (2, &[198, 51, 100, 1][..])]);
        let proto = all(tuple[1].1);
        assert_eq!(
            proto,
            [
                (1, &[6u8][..]),
                (2, &40000u16.to_be_bytes()[..]),
                (3, &8080u16.to_be_bytes()[..])
            ]
        );
        let info = all(top[1].1);
        let tcp = all(info[0].1);
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
        let flags = NLM_F_CAPPED | NLM_F_ACK_TLVS;
        let mut body = (-libc::ENOENT).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0; 16]);
        body.extend_from_slice(&12u16.to_ne_bytes());
        body.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        body.extend_from_slice(b"gone\0\0\0\0");
        let mut m = message(NLMSG_ERROR, flags, 0, &body);
        let e = parse_error(&m[16..], flags).unwrap_err();
        assert_eq!(e.name(), "no_entry");
        let text = e.to_string();
        assert!(text.contains("no conntrack entry") && text.contains("(kernel: gone)"));
        // error 0 is the ACK.
        m[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert!(parse_error(&m[16..], 0).is_ok());
    }
}
