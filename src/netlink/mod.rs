//! Netfilter netlink, the part every nfnetlink subsystem shares: the
//! `AF_NETLINK`/`NETLINK_NETFILTER` socket, message framing (headers, `NLMSG_ERROR`
//! answers, 4-byte alignment), attributes, and the `nfgenmsg` header.
//!
//! [`crate::nflog`], [`crate::nfqueue`] and [`crate::ctnetlink`] all speak it, so the
//! syscalls, the length checks and the alignment are written and tested once, here;
//! each of them keeps only its own message types, attributes and payload parsing.
//! What holds for all of them:
//! - Parsing borrows from the receive buffer ([`Frames`], [`Attrs`], [`Messages`]) and
//!   building writes into a caller's buffer ([`Writer`]): the shadow feed and the
//!   verdict path call these per packet, and nothing here allocates.
//! - The kernel lays headers and attribute headers out in host byte order, and
//!   attribute values of netfilter in network byte order ([`be32`]); both are read
//!   byte by byte, so no alignment of the buffer is assumed.
//! - A length that runs past its buffer ends the walk with [`Malformed`] rather than a
//!   panic: the buffer comes from the kernel, but a parser bug must not take the
//!   verdict path down.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `NLMSG_HDRLEN`: `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// `struct nfgenmsg { __u8 nfgen_family; __u8 version; __be16 res_id; }`.
pub const NFGEN_HDRLEN: usize = 4;
/// `NLA_HDRLEN`: `struct nlattr`.
pub const NLA_HDRLEN: usize = 4;
/// The attribute type without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
pub const NLA_TYPE_MASK: u16 = 0x3fff;
/// `NLA_F_NESTED`: the attribute holds attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// `NLMSG_ERROR`: an error answer, or with error 0 an acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a multi-part answer.
pub const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x01;
/// `NLM_F_ACK`: answer with an acknowledgement.
pub const NLM_F_ACK: u16 = 0x04;
/// `NLM_F_CAPPED` (on `NLMSG_ERROR`): the echoed request is its header only.
pub const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS` (on `NLMSG_ERROR`): extended-ACK attributes follow the request.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's error text, NUL-terminated.
pub const NLMSGERR_ATTR_MSG: u16 = 1;
/// `NFNETLINK_V0`: the only `nfgenmsg.version`.
pub const NFNETLINK_V0: u8 = 0;

/// `NLMSG_ALIGN`/`NLA_ALIGN`: messages and attributes start on 4 bytes.
#[inline]
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The host-order `u16` at `at` (netlink and attribute headers).
#[inline]
pub fn u16_ne(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

/// The host-order `u32` at `at` (netlink headers).
#[inline]
pub fn u32_ne(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The `__be32` at the start of an attribute's value, `None` when it is shorter.
#[inline]
pub fn be32(b: &[u8]) -> Option<u32> {
    b.get(..4)
        .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

/// A message that does not parse: the rest of the buffer is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// One netlink message, borrowed from the datagram it came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// `nlmsg_type`: for nfnetlink, the subsystem `<< 8 |` its message type.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// What follows the header, without the padding to the next message.
    pub body: &'a [u8],
}

/// The messages of one received datagram, in order. A length out of bounds ends the
/// walk with an error (the next header cannot be found); a short tail is ignored.
pub struct Frames<'a> {
    buf: &'a [u8],
}

impl<'a> Frames<'a> {
    /// The messages in `buf` (what one `recv` returned).
    #[inline]
    pub fn new(buf: &'a [u8]) -> Frames<'a> {
        Frames { buf }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, Malformed>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32_ne(self.buf, 0) as usize;
        if len < NLMSG_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return Some(Err(Malformed("netlink message length out of bounds")));
        }
        let frame = Frame {
            kind: u16_ne(self.buf, 4),
            flags: u16_ne(self.buf, 6),
            seq: u32_ne(self.buf, 8),
            body: &self.buf[NLMSG_HDRLEN..len],
        };
        self.buf = &self.buf[align4(len).min(self.buf.len())..];
        Some(Ok(frame))
    }
}

/// The error code of an `NLMSG_ERROR` body as a positive errno (0: an
/// acknowledgement); `None` when the body is shorter than the code.
#[inline]
pub fn error_errno(body: &[u8]) -> Option<i32> {
    let code = i32::from_ne_bytes(body.get(..4)?.try_into().ok()?);
    Some(code.saturating_neg())
}

/// An `NLMSG_ERROR` body as (the request's `seq`, positive errno or 0). The request's
/// number is read from its echoed header, so the body must hold that header.
#[inline]
pub fn ack(body: &[u8]) -> Result<(u32, i32), Malformed> {
    if body.len() < 4 + NLMSG_HDRLEN {
        return Err(Malformed("short netlink error message"));
    }
    let errno = error_errno(body).expect("4 bytes");
    Ok((u32_ne(body, 4 + 8), errno))
}

/// The answer to request `seq` in `datagram`, if it is there: `Ok` for an
/// acknowledgement, the kernel's errno otherwise. Other messages (packets that came
/// in before the answer) are passed over.
pub fn answer(datagram: &[u8], seq: u32) -> Option<io::Result<()>> {
    for frame in Frames::new(datagram).flatten() {
        if frame.kind != NLMSG_ERROR {
            continue;
        }
        match ack(frame.body) {
            Ok((s, 0)) if s == seq => return Some(Ok(())),
            Ok((s, errno)) if s == seq => return Some(Err(io::Error::from_raw_os_error(errno))),
            _ => {}
        }
    }
    None
}

/// The kernel's error text of an `NLMSG_ERROR` body with `flags`
/// (`NETLINK_EXT_ACK`), up to its NUL; the last one if it sent several.
pub fn ext_ack_message(body: &[u8], flags: u16) -> Option<&[u8]> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    // After the error code: the request's header, and its payload too unless capped;
    // then the TLVs.
    let mut at = 4 + NLMSG_HDRLEN;
    if flags & NLM_F_CAPPED == 0 && body.len() >= 4 + NLMSG_HDRLEN {
        at = 4 + align4(u32_ne(body, 4) as usize);
    }
    let mut message = None;
    for (kind, value) in Attrs::new(body.get(at..).unwrap_or(&[])).map_while(Result::ok) {
        if kind == NLMSGERR_ATTR_MSG {
            message = Some(value.split(|&c| c == 0).next().unwrap_or(&[]));
        }
    }
    message
}

/// The attributes in `b`, as (type without flags, value); an attribute whose length
/// runs out of `b` (or is below its header) ends the walk with an error.
pub struct Attrs<'a> {
    b: &'a [u8],
}

impl<'a> Attrs<'a> {
    /// The attributes in `b` (a message body after its fixed header, or a nest).
    #[inline]
    pub fn new(b: &'a [u8]) -> Attrs<'a> {
        Attrs { b }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), Malformed>;

    #[inline]
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

/// One message of an nfnetlink subsystem's datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item<P> {
    /// The subsystem's packet message.
    Packet(P),
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

/// A subsystem's packet message, parsed in place: what [`Messages`] yields as
/// [`Item::Packet`].
pub trait Packet<'a>: Sized {
    /// Its `nlmsg_type` (subsystem `<< 8 |` message type).
    const KIND: u16;
    /// Parses a message body (from its `nfgenmsg` on).
    fn parse(body: &'a [u8]) -> Result<Self, Malformed>;
}

/// The messages of one received datagram, in order, borrowing from it: the packets
/// of one subsystem, and the answers to requests.
pub struct Messages<'a, P> {
    frames: Frames<'a>,
    packet: PhantomData<P>,
}

impl<'a, P> Messages<'a, P> {
    /// The messages in `buf` (what one `recv` returned).
    #[inline]
    pub fn new(buf: &'a [u8]) -> Messages<'a, P> {
        Messages {
            frames: Frames::new(buf),
            packet: PhantomData,
        }
    }
}

impl<'a, P: Packet<'a>> Iterator for Messages<'a, P> {
    type Item = Result<Item<P>, Malformed>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let frame = match self.frames.next()? {
            Ok(f) => f,
            Err(e) => return Some(Err(e)),
        };
        Some(match frame.kind {
            NLMSG_ERROR => ack(frame.body).map(|(seq, errno)| Item::Ack { seq, errno }),
            k if k == P::KIND => P::parse(frame.body).map(Item::Packet),
            _ => Ok(Item::Other),
        })
    }
}

/// Builds one message in a caller's buffer (on the stack, or kept for the socket's
/// life): no allocation per message. Writing past the buffer panics, so callers size
/// it for their largest message.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    /// Starts an nfnetlink message: the netlink header (its length is written by
    /// [`Writer::finish`]; the port id is 0, the kernel fills it in) and the
    /// `nfgenmsg` with `family` and `res_id` (the group or queue, big endian).
    #[inline]
    pub fn new(
        buf: &'a mut [u8],
        kind: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> Writer<'a> {
        let mut w = Writer { buf, len: 0 };
        w.put(&[0; 4]);
        w.put(&kind.to_ne_bytes());
        w.put(&flags.to_ne_bytes());
        w.put(&seq.to_ne_bytes());
        w.put(&0u32.to_ne_bytes());
        let [r0, r1] = res_id.to_be_bytes();
        w.put(&[family, NFNETLINK_V0, r0, r1]);
        w
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends one attribute, padded to 4.
    #[inline]
    pub fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = NLA_HDRLEN + value.len();
        self.put(&(len as u16).to_ne_bytes());
        self.put(&kind.to_ne_bytes());
        self.put(value);
        self.put(&[0u8; 3][..align4(len) - len]);
    }

    /// Opens a nested attribute; [`Writer::end`] with the returned mark closes it.
    pub fn begin(&mut self, kind: u16) -> usize {
        let at = self.len;
        self.put(&[0, 0]);
        self.put(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    /// Closes the nest opened at `at` by writing its length.
    pub fn end(&mut self, at: usize) {
        let len = (self.len - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// Writes the message's length into its header; returns it.
    #[inline]
    pub fn finish(self) -> usize {
        let len = self.len;
        self.buf[..4].copy_from_slice(&(len as u32).to_ne_bytes());
        len
    }
}

/// Writes a configuration request of `kind` (acknowledgement asked for) for `res_id`,
/// `nfgenmsg` family `AF_UNSPEC`, with `attrs` (type, value) into `out`; returns its
/// length.
pub fn config_request(
    out: &mut [u8],
    kind: u16,
    seq: u32,
    res_id: u16,
    attrs: &[(u16, &[u8])],
) -> usize {
    let mut w = Writer::new(out, kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0, res_id);
    for (kind, value) in attrs {
        w.attr(*kind, value);
    }
    w.finish()
}

/// Slots for [`Socket::recv_many`]: `n` datagrams of up to `slot` bytes each, with the
/// `recvmmsg` headers pointing at them set up once, so a receive costs the system
/// call alone.
pub struct RecvMany {
    buf: Box<[u8]>,
    /// Never read: `msgs` point into it, so it lives as long as they do.
    #[allow(dead_code)]
    iov: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    slot: usize,
    received: usize,
}

impl RecvMany {
    /// `n` slots of `slot` bytes.
    pub fn new(n: usize, slot: usize) -> RecvMany {
        let n = n.max(1);
        let mut buf = vec![0u8; n * slot].into_boxed_slice();
        // SAFETY: all-zero iovec and mmsghdr values are valid (null pointers, zero
        // lengths); every entry is pointed at its own slot just below.
        let mut iov: Box<[libc::iovec]> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut msgs: Box<[libc::mmsghdr]> =
            (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (i, (v, m)) in iov.iter_mut().zip(msgs.iter_mut()).enumerate() {
            v.iov_base = buf[i * slot..].as_mut_ptr().cast();
            v.iov_len = slot;
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        RecvMany {
            buf,
            iov,
            msgs,
            slot,
            received: 0,
        }
    }

    /// Datagrams one receive can take.
    pub fn capacity(&self) -> usize {
        self.msgs.len()
    }

    /// The datagrams of the latest receive: each slot's bytes and the datagram's
    /// length (larger than the slot when it was cut).
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], usize)> + '_ {
        self.buf
            .chunks_exact(self.slot)
            .zip(self.msgs.iter())
            .take(self.received)
            .map(|(b, m)| (b, m.msg_len as usize))
    }
}

/// An `AF_NETLINK`/`NETLINK_NETFILTER` socket, in the network namespace of the thread
/// that opened it. Dropping it closes it, which unbinds whatever it had bound.
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// Opens the socket (close-on-exec), not yet bound: the first send binds it to a
    /// port id the kernel chooses, or [`Socket::bind`] does so before.
    pub fn open() -> io::Result<Socket> {
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
        Ok(Socket { fd })
    }

    /// Binds the socket to a port id the kernel chooses (pid 0).
    pub fn bind(&self) -> io::Result<()> {
        // SAFETY: a zeroed sockaddr_nl is valid (pid 0: the kernel assigns one).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a valid sockaddr_nl for the call.
        let r = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sets an `int` socket option.
    pub fn set_int(&self, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
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

    /// Sets the receive buffer past `net.core.rmem_max` (`SO_RCVBUFFORCE`, which
    /// needs CAP_NET_ADMIN): a full buffer is where the kernel drops messages. Returns
    /// the size the kernel reports (0 if it does not say).
    pub fn force_rcvbuf(&self, bytes: usize) -> io::Result<usize> {
        let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        self.set_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v)?;
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

    /// Bounds each blocking receive by `timeout` (`SO_RCVTIMEO`), so a thread reading
    /// the socket can notice a stop or give up on an answer.
    pub fn set_recv_timeout(&self, timeout: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
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

    /// Sends `msg` to the kernel (pid 0) with `flags` (`MSG_DONTWAIT` where a send
    /// must never wait).
    #[inline]
    pub fn send(&self, msg: &[u8], flags: libc::c_int) -> io::Result<()> {
        // SAFETY: a zeroed sockaddr_nl addresses the kernel (pid 0, no groups).
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg and to live for the call.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                flags,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives up to [`RecvMany::capacity`] datagrams with one `recvmmsg(2)` into
    /// `into`'s slots (with `MSG_TRUNC` in `flags`, each length is the datagram's
    /// even when its slot was shorter). Returns how many were received; an error only
    /// when none was (an error after the first is reported by the next call, as
    /// `recvmmsg` does).
    #[inline]
    pub fn recv_many(&self, into: &mut RecvMany, flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: `into.msgs` point into `into.iov`, which point into disjoint slots
        // of `into.buf`; all three are heap allocations owned by `into` and never
        // reallocated, and `&mut` keeps anyone else from touching them for the call.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                into.msgs.as_mut_ptr(),
                into.msgs.len() as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            into.received = 0;
            return Err(io::Error::last_os_error());
        }
        into.received = r as usize;
        Ok(into.received)
    }

    /// Receives one datagram into `buf` with `flags`; returns what `recv(2)` does
    /// (with `MSG_TRUNC`, the datagram's length even when `buf` was shorter).
    #[inline]
    pub fn recv(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
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
}

/// Netlink messages as the kernel lays them out, for the subsystems' tests.
#[cfg(test)]
pub(crate) mod build {
    /// One attribute: header (native endian), value, padding to 4.
    pub(crate) fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    /// One netlink message of `kind` with `body` (after the netlink header).
    pub(crate) fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    /// The `NLMSG_ERROR` answer (`errno` 0: the acknowledgement) to a request of
    /// `kind` numbered `seq`, echoing the request's header.
    pub(crate) fn answer(errno: i32, kind: u16, seq: u32) -> Vec<u8> {
        let mut body = (-errno).to_ne_bytes().to_vec();
        body.extend(&message(kind, 5, seq, &[])[..16]);
        message(super::NLMSG_ERROR, 0, seq, &body)
    }
}

#[cfg(test)]
mod tests;
