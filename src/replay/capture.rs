//! Reading capture files: classic pcap (microsecond and nanosecond, either byte
//! order) and pcapng (section header, interface description with `if_tsresol`,
//! enhanced, simple and obsolete packet blocks, either byte order per section).
//!
//! Records are read one at a time into a reused buffer, so a capture of any size is
//! replayed in constant memory. A file that ends inside a record is not fatal: the
//! frames before it are returned and the truncation is reported as the last item.

use crate::engine::meta::LinkType;
use std::fmt;
use std::io::{self, Read};

/// One captured frame.
#[derive(Debug)]
pub struct Frame<'a> {
    /// 1-based position in the capture, as tshark numbers frames.
    pub number: u64,
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The frame's link type, or `Err(linktype)` when nfqwall cannot read it.
    pub link: Result<LinkType, u32>,
    /// The captured bytes (possibly fewer than were on the wire).
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub wire_len: u32,
}

/// Why a capture could not be read (further).
#[derive(Debug)]
pub enum CaptureError {
    /// The underlying read failed.
    Io(io::Error),
    /// The file is a capture in a format nfqwall does not read (by its magic number).
    Unsupported {
        /// The format's name.
        format: &'static str,
        /// How to make a file nfqwall reads.
        convert: &'static str,
    },
    /// The file starts with neither a pcap nor a pcapng magic number.
    NotACapture {
        /// The first four bytes.
        magic: [u8; 4],
    },
    /// The file ends inside a record or block.
    Truncated {
        /// The frame number the record would have had.
        frame: u64,
        /// Byte offset where the record starts.
        offset: u64,
        /// Bytes the record needs.
        need: u64,
        /// Bytes that were left.
        have: u64,
    },
    /// A header field holds an impossible value.
    Malformed {
        /// Byte offset of the record or block.
        offset: u64,
        /// What is wrong.
        why: &'static str,
    },
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::Io(e) => write!(f, "read failed: {e}"),
            CaptureError::Unsupported { format, convert } => {
                write!(f, "format not supported: {format} ({convert})")
            }
            CaptureError::NotACapture { magic } => write!(
                f,
                "not a pcap or pcapng file (starts with {:02x}{:02x}{:02x}{:02x})",
                magic[0], magic[1], magic[2], magic[3]
            ),
            CaptureError::Truncated { frame, offset, need, have } => write!(
                f,
                "capture ends inside record {frame} at byte {offset}: it needs {need} bytes, {have} remain (truncated file)"
            ),
            CaptureError::Malformed { offset, why } => {
                write!(f, "malformed record at byte {offset}: {why}")
            }
        }
    }
}

impl std::error::Error for CaptureError {}

impl From<io::Error> for CaptureError {
    fn from(e: io::Error) -> Self {
        CaptureError::Io(e)
    }
}

/// Maps a pcap LINKTYPE_ value to the framings the parser reads.
pub fn link_type(linktype: u32) -> Result<LinkType, u32> {
    Ok(match linktype {
        0 | 108 => LinkType::Null,
        1 => LinkType::Ethernet,
        12 | 14 | 101 | 228 | 229 => LinkType::RawIp,
        105 => LinkType::Ieee80211,
        113 => LinkType::LinuxSll,
        127 => LinkType::Ieee80211Radiotap,
        239 => LinkType::Nflog,
        276 => LinkType::LinuxSll2,
        other => return Err(other),
    })
}

/// Capture formats that tshark reads and nfqwall does not, by their first bytes.
fn unsupported_format(magic: [u8; 4]) -> Option<(&'static str, &'static str)> {
    const EDITCAP: &str = "convert with editcap -F pcap";
    Some(match &magic {
        b"snoo" => ("snoop", EDITCAP),
        b"RTSS" => ("Microsoft Network Monitor 1.x", EDITCAP),
        b"GMBU" => ("Microsoft Network Monitor 2.x", EDITCAP),
        b"btsn" => ("btsnoop", EDITCAP),
        [0x1f, 0x8b, _, _] => ("gzip-compressed capture", "decompress it with gunzip first"),
        [0x28, 0xb5, 0x2f, 0xfd] => ("zstd-compressed capture", "decompress it with unzstd first"),
        [0x04, 0x22, 0x4d, 0x18] => ("lz4-compressed capture", "decompress it with unlz4 first"),
        _ => return None,
    })
}

/// Larger records than this are not frames (pcapng blocks are u32-sized; refuse junk).
const MAX_RECORD: u32 = 256 * 1024 * 1024;

#[derive(Clone, Copy)]
struct Interface {
    linktype: u32,
    /// Timestamp units per second.
    units_per_sec: u64,
}

enum Format {
    Pcap {
        big_endian: bool,
        units_per_sec: u64,
        linktype: u32,
    },
    PcapNg {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

/// A streaming reader over a pcap or pcapng file.
pub struct CaptureReader<R> {
    input: R,
    format: Format,
    buf: Vec<u8>,
    offset: u64,
    next_frame: u64,
    done: bool,
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header and prepares to return frames.
    pub fn new(mut input: R) -> Result<Self, CaptureError> {
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut input, &mut magic)?;
        if got < 4 {
            return Err(CaptureError::NotACapture { magic });
        }
        let mut reader = CaptureReader {
            input,
            format: Format::Pcap {
                big_endian: false,
                units_per_sec: 1_000_000,
                linktype: 1,
            },
            buf: Vec::with_capacity(65536),
            offset: 4,
            next_frame: 1,
            done: false,
        };
        match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => reader.read_pcap_header(false, 1_000_000)?,
            [0xa1, 0xb2, 0xc3, 0xd4] => reader.read_pcap_header(true, 1_000_000)?,
            [0x4d, 0x3c, 0xb2, 0xa1] => reader.read_pcap_header(false, 1_000_000_000)?,
            [0xa1, 0xb2, 0x3c, 0x4d] => reader.read_pcap_header(true, 1_000_000_000)?,
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                let mut len = [0u8; 4];
                reader.read_exact_or_truncated(&mut len, 0, 28)?;
                reader.begin_section(0, len)?;
            }
            _ => {
                return Err(match unsupported_format(magic) {
                    Some((format, convert)) => CaptureError::Unsupported { format, convert },
                    None => CaptureError::NotACapture { magic },
                })
            }
        }
        Ok(reader)
    }

    /// The link type of a classic pcap file (None for pcapng, where it is per interface).
    pub fn pcap_linktype(&self) -> Option<u32> {
        match self.format {
            Format::Pcap { linktype, .. } => Some(linktype),
            Format::PcapNg { .. } => None,
        }
    }

    fn read_pcap_header(&mut self, big_endian: bool, units: u64) -> Result<(), CaptureError> {
        let mut rest = [0u8; 20];
        self.read_exact_or_truncated(&mut rest, 0, 24)?;
        let linktype = u32_at(&rest, 16, big_endian) & 0x0fff_ffff;
        self.format = Format::Pcap {
            big_endian,
            units_per_sec: units,
            linktype,
        };
        Ok(())
    }

    /// Reads a section header block whose type and length were already consumed at
    /// `start`: the byte-order magic decides how the length reads, and the section's
    /// own byte order and (empty) interface list take effect.
    fn begin_section(&mut self, start: u64, len_bytes: [u8; 4]) -> Result<(), CaptureError> {
        let mut magic = [0u8; 4];
        self.read_exact_or_truncated(&mut magic, start, 28)?;
        let big_endian = match magic {
            [0x1a, 0x2b, 0x3c, 0x4d] => true,
            [0x4d, 0x3c, 0x2b, 0x1a] => false,
            _ => {
                return Err(CaptureError::Malformed {
                    offset: start,
                    why: "section header byte-order magic is neither 1a2b3c4d nor 4d3c2b1a",
                })
            }
        };
        let total = u32_at(&len_bytes, 0, big_endian);
        if total < 28 || total % 4 != 0 || total > MAX_RECORD {
            return Err(CaptureError::Malformed {
                offset: start,
                why: "section header block length is impossible",
            });
        }
        self.fill_buf(total as usize - 12, start, u64::from(total))?;
        self.format = Format::PcapNg {
            big_endian,
            interfaces: Vec::new(),
        };
        Ok(())
    }

    /// Returns the next frame, `None` at the end, or the error that ended reading.
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, CaptureError>> {
        if self.done {
            return None;
        }
        let r = match self.format {
            Format::Pcap { .. } => self.next_pcap(),
            Format::PcapNg { .. } => self.next_pcapng(),
        };
        match r {
            Ok(Some(meta)) => {
                let number = self.next_frame;
                self.next_frame += 1;
                Some(Ok(Frame {
                    number,
                    ts_ns: meta.ts_ns,
                    link: link_type(meta.linktype),
                    data: &self.buf[meta.data_start..meta.data_start + meta.caplen],
                    wire_len: meta.wire_len,
                }))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn next_pcap(&mut self) -> Result<Option<FrameMeta>, CaptureError> {
        let Format::Pcap {
            big_endian,
            units_per_sec,
            linktype,
        } = self.format
        else {
            unreachable!("next_pcap is only called for pcap files")
        };
        let start = self.offset;
        let mut head = [0u8; 16];
        if !self.read_record_head(&mut head)? {
            return Ok(None);
        }
        let secs = u64::from(u32_at(&head, 0, big_endian));
        let frac = u64::from(u32_at(&head, 4, big_endian));
        let caplen = u32_at(&head, 8, big_endian);
        let wire_len = u32_at(&head, 12, big_endian);
        if caplen > MAX_RECORD {
            return Err(CaptureError::Malformed {
                offset: start,
                why: "record length above 256 MiB",
            });
        }
        self.fill_buf(caplen as usize, start, 16 + u64::from(caplen))?;
        Ok(Some(FrameMeta {
            ts_ns: secs * 1_000_000_000 + frac * (1_000_000_000 / units_per_sec),
            linktype,
            data_start: 0,
            caplen: caplen as usize,
            wire_len,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<FrameMeta>, CaptureError> {
        loop {
            let Format::PcapNg { big_endian, .. } = self.format else {
                unreachable!("next_pcapng is only called for pcapng files")
            };
            let start = self.offset;
            let mut head = [0u8; 8];
            if !self.read_record_head(&mut head)? {
                return Ok(None);
            }
            if head[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
                // A new section: its own byte order, its own interfaces.
                self.begin_section(start, [head[4], head[5], head[6], head[7]])?;
                continue;
            }
            let block_type = u32_at(&head, 0, big_endian);
            let total = u32_at(&head, 4, big_endian);
            if total < 12 || total % 4 != 0 || total > MAX_RECORD {
                return Err(CaptureError::Malformed {
                    offset: start,
                    why: "block length is below 12, not a multiple of 4, or above 256 MiB",
                });
            }
            let body_len = total as usize - 12;
            self.fill_buf(body_len + 4, start, u64::from(total))?;
            let body = &self.buf[..body_len];
            let Format::PcapNg {
                ref mut interfaces, ..
            } = self.format
            else {
                unreachable!()
            };
            match block_type {
                // Interface Description Block.
                1 => {
                    if body.len() < 8 {
                        return Err(CaptureError::Malformed {
                            offset: start,
                            why: "interface description block shorter than 8 bytes",
                        });
                    }
                    let linktype = u32::from(u16_at(body, 0, big_endian));
                    let units_per_sec =
                        tsresol(&body[8..], big_endian).ok_or(CaptureError::Malformed {
                            offset: start,
                            why:
                                "if_tsresol gives a resolution finer than 1 ns or coarser than 1 s",
                        })?;
                    interfaces.push(Interface {
                        linktype,
                        units_per_sec,
                    });
                }
                // Enhanced Packet Block (6), and the obsolete Packet Block (2) with the
                // same layout but a 16-bit interface id (then a drop count).
                6 | 2 => {
                    if body.len() < 20 {
                        return Err(CaptureError::Malformed {
                            offset: start,
                            why: "packet block shorter than 20 bytes",
                        });
                    }
                    let iface = if block_type == 6 {
                        u32_at(body, 0, big_endian) as usize
                    } else {
                        usize::from(u16_at(body, 0, big_endian))
                    };
                    let ts = (u64::from(u32_at(body, 4, big_endian)) << 32)
                        | u64::from(u32_at(body, 8, big_endian));
                    let caplen = u32_at(body, 12, big_endian) as usize;
                    let wire_len = u32_at(body, 16, big_endian);
                    if 20 + caplen > body.len() {
                        return Err(CaptureError::Malformed {
                            offset: start,
                            why: "packet block captured length exceeds the block",
                        });
                    }
                    let Some(intf) = interfaces.get(iface).copied() else {
                        return Err(CaptureError::Malformed {
                            offset: start,
                            why: "packet names an interface that was never described",
                        });
                    };
                    return Ok(Some(FrameMeta {
                        ts_ns: units_to_ns(ts, intf.units_per_sec),
                        linktype: intf.linktype,
                        data_start: 20,
                        caplen,
                        wire_len,
                    }));
                }
                // Simple Packet Block: interface 0, no timestamp.
                3 => {
                    let Some(intf) = interfaces.first().copied() else {
                        return Err(CaptureError::Malformed {
                            offset: start,
                            why: "simple packet block before any interface description",
                        });
                    };
                    if body.len() < 4 {
                        return Err(CaptureError::Malformed {
                            offset: start,
                            why: "simple packet block shorter than 4 bytes",
                        });
                    }
                    let wire_len = u32_at(body, 0, big_endian);
                    let caplen = (wire_len as usize).min(body.len() - 4);
                    return Ok(Some(FrameMeta {
                        ts_ns: 0,
                        linktype: intf.linktype,
                        data_start: 4,
                        caplen,
                        wire_len,
                    }));
                }
                // Name resolution, statistics, custom blocks...: not frames.
                _ => continue,
            }
        }
    }

    /// Reads a record or block header. Returns false at a clean end of file (no byte
    /// left), and a truncation error when the file ends inside the header.
    fn read_record_head(&mut self, head: &mut [u8]) -> Result<bool, CaptureError> {
        let start = self.offset;
        let got = read_up_to(&mut self.input, head)?;
        if got == 0 {
            return Ok(false);
        }
        if got < head.len() {
            return Err(CaptureError::Truncated {
                frame: self.next_frame,
                offset: start,
                need: head.len() as u64,
                have: got as u64,
            });
        }
        self.offset += got as u64;
        Ok(true)
    }

    /// Reads `len` bytes into the reused buffer, reporting a truncated record otherwise.
    ///
    /// The buffer grows with the bytes that arrive, not with the length a header
    /// claims: a corrupt length must not cost up to 256 MiB of zeroed memory (and the
    /// time to zero it) for a file of a few bytes.
    fn fill_buf(&mut self, len: usize, start: u64, need: u64) -> Result<(), CaptureError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let read = (&mut self.input).take(len as u64).read_to_end(&mut buf);
        let got = buf.len();
        self.buf = buf;
        read?;
        self.check_read(got, len, start, need)
    }

    fn read_exact_or_truncated(
        &mut self,
        out: &mut [u8],
        start: u64,
        need: u64,
    ) -> Result<(), CaptureError> {
        let got = read_up_to(&mut self.input, out)?;
        self.check_read(got, out.len(), start, need)
    }

    /// Accounts for `got` bytes read of the `want` asked for, reporting a truncated
    /// record (starting at `start`, `need` bytes long) when some are missing.
    fn check_read(
        &mut self,
        got: usize,
        want: usize,
        start: u64,
        need: u64,
    ) -> Result<(), CaptureError> {
        self.offset += got as u64;
        if got < want {
            return Err(CaptureError::Truncated {
                frame: self.next_frame,
                offset: start,
                need,
                have: self.offset - start,
            });
        }
        Ok(())
    }
}

struct FrameMeta {
    ts_ns: u64,
    linktype: u32,
    data_start: usize,
    caplen: usize,
    wire_len: u32,
}

/// Reads until `out` is full or the input ends; returns the bytes read.
fn read_up_to<R: Read>(input: &mut R, out: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < out.len() {
        match input.read(&mut out[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn u16_at(b: &[u8], at: usize, big_endian: bool) -> u16 {
    let v = [b[at], b[at + 1]];
    if big_endian {
        u16::from_be_bytes(v)
    } else {
        u16::from_le_bytes(v)
    }
}

fn u32_at(b: &[u8], at: usize, big_endian: bool) -> u32 {
    let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if big_endian {
        u32::from_be_bytes(v)
    } else {
        u32::from_le_bytes(v)
    }
}

/// Finds `if_tsresol` (option 9) in an interface block's options; default microseconds.
/// Returns units per second, or `None` for resolutions outside 1 s .. 1 ns.
fn tsresol(mut opts: &[u8], big_endian: bool) -> Option<u64> {
    while opts.len() >= 4 {
        let code = u16_at(opts, 0, big_endian);
        let len = usize::from(u16_at(opts, 2, big_endian));
        let padded = (len + 3) & !3;
        if code == 0 || 4 + len > opts.len() {
            break;
        }
        if code == 9 && len >= 1 {
            let r = opts[4];
            return if r & 0x80 == 0 {
                (r <= 9).then(|| 10u64.pow(u32::from(r)))
            } else {
                (r & 0x7f <= 29).then(|| 1u64 << (r & 0x7f))
            };
        }
        opts = opts.get(4 + padded..).unwrap_or(&[]);
    }
    Some(1_000_000)
}

fn units_to_ns(ts: u64, units_per_sec: u64) -> u64 {
    let secs = ts / units_per_sec;
    let frac = ts % units_per_sec;
    secs.saturating_mul(1_000_000_000)
        .saturating_add((u128::from(frac) * 1_000_000_000 / u128::from(units_per_sec)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap_le(records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut v = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&101u32.to_le_bytes());
        for (s, us, data) in records {
            v.extend_from_slice(&s.to_le_bytes());
            v.extend_from_slice(&us.to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(data);
        }
        v
    }

    #[test]
    fn classic_pcap_frames_and_timestamps() {
        let file = pcap_le(&[(10, 5, b"abc"), (11, 999_999, b"de")]);
        let mut r = CaptureReader::new(&file[..]).unwrap();
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!(
            (f.number, f.ts_ns, f.data),
            (1, 10_000_005_000, &b"abc"[..])
        );
        assert_eq!(f.link, Ok(LinkType::RawIp));
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!((f.number, f.ts_ns, f.data), (2, 11_999_999_000, &b"de"[..]));
        assert!(r.next_frame().is_none());
    }

    #[test]
    fn truncated_last_record_is_reported_after_the_good_ones() {
        let mut file = pcap_le(&[(1, 0, b"abcd"), (2, 0, b"efgh")]);
        file.truncate(file.len() - 2);
        let mut r = CaptureReader::new(&file[..]).unwrap();
        assert!(r.next_frame().unwrap().is_ok());
        match r.next_frame().unwrap() {
            Err(CaptureError::Truncated {
                frame: 2,
                need: 20,
                have: 18,
                ..
            }) => {}
            other => panic!("expected truncation, got {other:?}"),
        }
        assert!(r.next_frame().is_none());
    }

    /// Found by `fuzz/` (target `capture`): a 3.6 KB file whose record header claims
    /// 230 MB made the reader allocate and zero 230 MB before finding it truncated.
    #[test]
    fn a_huge_claimed_record_length_costs_only_the_bytes_present() {
        let mut file = pcap_le(&[(1, 0, b"abcd")]);
        file.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        file.extend_from_slice(&230_943_052u32.to_le_bytes());
        file.extend_from_slice(&230_943_052u32.to_le_bytes());
        file.extend_from_slice(&[7; 1000]);
        let mut r = CaptureReader::new(&file[..]).unwrap();
        assert_eq!(r.next_frame().unwrap().unwrap().data, b"abcd");
        match r.next_frame().unwrap() {
            Err(CaptureError::Truncated {
                frame: 2,
                offset: 44,
                need: 230_943_068,
                have: 1016,
            }) => {}
            other => panic!("expected truncation, got {other:?}"),
        }
        assert!(r.buf.capacity() < 1 << 20, "{}", r.buf.capacity());
        assert!(r.next_frame().is_none());
    }

    #[test]
    fn snoop_and_netmon_are_named() {
        let snoop = b"snoop\0\0\0\0\0\0\x02\0\0\0\x04";
        let e = CaptureReader::new(&snoop[..]).err().unwrap();
        assert_eq!(
            e.to_string(),
            "format not supported: snoop (convert with editcap -F pcap)"
        );
        for magic in [&b"RTSS\x01\x01"[..], b"GMBU\x00\x02"] {
            let e = CaptureReader::new(magic).err().unwrap();
            assert!(
                e.to_string()
                    .starts_with("format not supported: Microsoft Network Monitor"),
                "{e}"
            );
        }
    }

    #[test]
    fn not_a_capture() {
        assert!(matches!(
            CaptureReader::new(&b"GIF89a"[..]),
            Err(CaptureError::NotACapture { .. })
        ));
        assert!(matches!(
            CaptureReader::new(&b"\xd4\xc3"[..]),
            Err(CaptureError::NotACapture { .. })
        ));
    }

    #[test]
    fn pcapng_big_endian_with_nanosecond_resolution() {
        let mut v = Vec::new();
        // SHB, big endian, no options: 28 bytes.
        v.extend_from_slice(&[0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 28, 0x1a, 0x2b, 0x3c, 0x4d]);
        v.extend_from_slice(&[0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        v.extend_from_slice(&[0, 0, 0, 28]);
        // IDB: linktype 1, snaplen, option if_tsresol=9, end of options.
        v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 32, 0, 1, 0, 0, 0, 0, 0xff, 0xff]);
        v.extend_from_slice(&[0, 9, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32]);
        // EPB: iface 0, ts = 1_500_000_000_123456789 ns, 3 bytes.
        let ts: u64 = 1_500_000_000_123_456_789;
        v.extend_from_slice(&[0, 0, 0, 6, 0, 0, 0, 36, 0, 0, 0, 0]);
        v.extend_from_slice(&((ts >> 32) as u32).to_be_bytes());
        v.extend_from_slice(&(ts as u32).to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 36]);
        let mut r = CaptureReader::new(&v[..]).unwrap();
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!(f.ts_ns, ts);
        assert_eq!(f.data, &[1, 2, 3]);
        assert_eq!(f.link, Ok(LinkType::Ethernet));
        assert!(r.next_frame().is_none());
    }

    #[test]
    fn tsresol_power_of_two() {
        assert_eq!(tsresol(&[9, 0, 1, 0, 0x8a, 0, 0, 0], false), Some(1024));
        assert_eq!(tsresol(&[9, 0, 1, 0, 0xff, 0, 0, 0], false), None);
        assert_eq!(tsresol(&[], false), Some(1_000_000));
    }
}
