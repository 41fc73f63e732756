//! TCP options (RFC 9293 section 3.1, RFC 7323, RFC 2018), read without allocation.
//!
//! Only the options the tracker needs are kept: MSS, window scale, SACK-permitted,
//! SACK blocks and timestamps. Anything else is skipped by its length byte. A length
//! that is impossible (shorter than 2, past the header's end, or wrong for a known
//! kind) makes the whole option list malformed: the receiver's TCP may read it
//! differently from us, which is exactly the ambiguity an evasion relies on.

use crate::engine::seq::SeqNumber;
use core::fmt;

/// Option kinds (IANA "TCP Option Kind Numbers").
mod kind {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
}

/// RFC 7323 section 2.3: a shift above 14 is treated as 14.
pub const MAX_WINDOW_SCALE: u8 = 14;

/// At most four SACK blocks fit in 40 bytes of options (2 + 4 * 8 = 34).
pub const MAX_SACK_BLOCKS: usize = 4;

/// One SACK block: the half-open sequence range `[left, right)` the receiver holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SackBlock {
    /// First sequence number of the block.
    pub left: SeqNumber,
    /// Sequence number just past the block.
    pub right: SeqNumber,
}

/// The SACK blocks of one segment, in the order they were sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SackBlocks {
    len: u8,
    blocks: [SackBlock; MAX_SACK_BLOCKS],
}

impl SackBlocks {
    /// The blocks as a slice.
    pub fn as_slice(&self) -> &[SackBlock] {
        &self.blocks[..self.len as usize]
    }

    /// Returns true if and only if the segment carried no SACK block.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, block: SackBlock) {
        if (self.len as usize) < MAX_SACK_BLOCKS {
            self.blocks[self.len as usize] = block;
            self.len += 1;
        }
    }
}

/// The options of one TCP segment that matter to the tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpOptions {
    /// Maximum segment size (SYN only).
    pub mss: Option<u16>,
    /// Window scale shift, clamped to 14 (SYN only).
    pub window_scale: Option<u8>,
    /// The sender can receive SACK blocks (SYN only).
    pub sack_permitted: bool,
    /// Selective acknowledgement blocks.
    pub sack: SackBlocks,
    /// Timestamp value and echo reply.
    pub timestamps: Option<(u32, u32)>,
}

/// Why a TCP option list could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError {
    /// An option's kind byte is the last byte: its length byte is missing.
    MissingLength {
        /// The option kind.
        kind: u8,
    },
    /// An option's length is below 2 or runs past the end of the header.
    BadLength {
        /// The option kind.
        kind: u8,
        /// The length byte as sent.
        len: u8,
    },
    /// A known option with a length its RFC does not allow.
    WrongLengthForKind {
        /// The option kind.
        kind: u8,
        /// The length byte as sent.
        len: u8,
    },
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OptionError::MissingLength { kind } => {
                write!(
                    f,
                    "TCP option {kind} has no length byte (truncated option list)"
                )
            }
            OptionError::BadLength { kind, len } => write!(
                f,
                "TCP option {kind} has length {len}, outside the option space (malformed options)"
            ),
            OptionError::WrongLengthForKind { kind, len } => write!(
                f,
                "TCP option {kind} has length {len}, which its RFC forbids (malformed options)"
            ),
        }
    }
}

impl std::error::Error for OptionError {}

/// Reads a TCP option list (the bytes between the fixed header and the payload).
#[inline]
pub fn parse_options(bytes: &[u8]) -> Result<TcpOptions, OptionError> {
    // What Linux, BSD and Windows put on every segment after the handshake when
    // timestamps are on (RFC 7323, appendix A's layout): two NOPs, then timestamps.
    if let [kind::NOP, kind::NOP, kind::TIMESTAMPS, 10, ts @ ..] = bytes {
        if ts.len() == 8 {
            return Ok(TcpOptions {
                timestamps: Some((be32(&ts[..4]), be32(&ts[4..]))),
                ..TcpOptions::default()
            });
        }
    }
    parse_options_in_order(bytes)
}

/// [`parse_options`] for any layout: each option in turn, by its length.
fn parse_options_in_order(bytes: &[u8]) -> Result<TcpOptions, OptionError> {
    let mut opts = TcpOptions::default();
    let mut at = 0;
    while at < bytes.len() {
        let k = bytes[at];
        match k {
            kind::END => break,
            kind::NOP => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = bytes.get(at + 1) else {
            return Err(OptionError::MissingLength { kind: k });
        };
        let end = at + len as usize;
        if len < 2 || end > bytes.len() {
            return Err(OptionError::BadLength { kind: k, len });
        }
        let body = &bytes[at + 2..end];
        let wrong = OptionError::WrongLengthForKind { kind: k, len };
        match k {
            kind::MSS => {
                let v: [u8; 2] = body.try_into().map_err(|_| wrong)?;
                opts.mss = Some(u16::from_be_bytes(v));
            }
            kind::WINDOW_SCALE => {
                let [shift]: [u8; 1] = body.try_into().map_err(|_| wrong)?;
                opts.window_scale = Some(shift.min(MAX_WINDOW_SCALE));
            }
            kind::SACK_PERMITTED => {
                if !body.is_empty() {
                    return Err(wrong);
                }
                opts.sack_permitted = true;
            }
            kind::SACK => {
                if body.is_empty() || body.len() % 8 != 0 {
                    return Err(wrong);
                }
                for edge in body.chunks_exact(8) {
                    opts.sack.push(SackBlock {
                        left: SeqNumber(be32(&edge[..4])),
                        right: SeqNumber(be32(&edge[4..])),
                    });
                }
            }
            kind::TIMESTAMPS => {
                if body.len() != 8 {
                    return Err(wrong);
                }
                opts.timestamps = Some((be32(&body[..4]), be32(&body[4..])));
            }
            _ => {}
        }
        at = end;
    }
    Ok(opts)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn the_timestamp_only_layout_reads_as_any_layout_does(
            ts: [u8; 8], tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4),
        ) {
            let mut bytes = vec![kind::NOP, kind::NOP, kind::TIMESTAMPS, 10];
            bytes.extend_from_slice(&ts);
            bytes.extend_from_slice(&tail);
            proptest::prop_assert_eq!(parse_options(&bytes), parse_options_in_order(&bytes));
        }
    }

    #[test]
    fn linux_syn_options() {
        // MSS 1460, SACK-permitted, timestamps, NOP, window scale 7: a Linux SYN.
        let bytes = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let opts = parse_options(&bytes).unwrap();
        assert_eq!(opts.mss, Some(1460));
        assert!(opts.sack_permitted);
        assert_eq!(opts.timestamps, Some((1, 0)));
        assert_eq!(opts.window_scale, Some(7));
        assert!(opts.sack.is_empty());
    }

    #[test]
    fn sack_blocks_in_order() {
        let bytes = [
            1, 1, 5, 18, 0, 0, 0, 10, 0, 0, 0, 20, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 5,
        ];
        let opts = parse_options(&bytes).unwrap();
        let blocks = opts.sack.as_slice();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].left, SeqNumber(10));
        assert_eq!(blocks[0].right, SeqNumber(20));
        assert_eq!(blocks[1].left, SeqNumber(0xffff_fff0));
        assert_eq!(blocks[1].right, SeqNumber(5));
    }

    #[test]
    fn window_scale_above_14_is_clamped() {
        assert_eq!(parse_options(&[3, 3, 15]).unwrap().window_scale, Some(14));
    }

    #[test]
    fn end_of_list_stops_reading() {
        assert_eq!(
            parse_options(&[0, 0xff, 0xff]).unwrap(),
            TcpOptions::default()
        );
    }

    #[test]
    fn truncated_and_impossible_lengths() {
        assert_eq!(
            parse_options(&[2]),
            Err(OptionError::MissingLength { kind: 2 })
        );
        assert_eq!(
            parse_options(&[2, 4, 5]),
            Err(OptionError::BadLength { kind: 2, len: 4 })
        );
        assert_eq!(
            parse_options(&[30, 1]),
            Err(OptionError::BadLength { kind: 30, len: 1 })
        );
        assert_eq!(
            parse_options(&[30, 0, 1, 1]),
            Err(OptionError::BadLength { kind: 30, len: 0 })
        );
        assert_eq!(
            parse_options(&[2, 3, 5]),
            Err(OptionError::WrongLengthForKind { kind: 2, len: 3 })
        );
        assert_eq!(
            parse_options(&[5, 6, 0, 0, 0, 1]),
            Err(OptionError::WrongLengthForKind { kind: 5, len: 6 })
        );
        assert_eq!(
            parse_options(&[5, 2]),
            Err(OptionError::WrongLengthForKind { kind: 5, len: 2 })
        );
        assert_eq!(
            parse_options(&[8, 6, 0, 0, 0, 0]),
            Err(OptionError::WrongLengthForKind { kind: 8, len: 6 })
        );
        assert_eq!(
            parse_options(&[4, 3, 0]),
            Err(OptionError::WrongLengthForKind { kind: 4, len: 3 })
        );
    }

    #[test]
    fn unknown_options_are_skipped_by_length() {
        let opts = parse_options(&[254, 4, 0xab, 0xcd, 2, 4, 0x02, 0x18]).unwrap();
        assert_eq!(opts.mss, Some(536));
    }
}
