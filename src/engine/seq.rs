//! TCP sequence numbers: one wrapping type, so no code compares raw `u32`s.
//!
//! RFC 793 section 3.3: sequence space is finite (0..2^32-1) and all arithmetic is
//! modulo 2^32. Ordering is defined by the sign of the wrapping difference, which is
//! meaningful only for numbers less than 2^31 apart (RFC 1982 serial arithmetic).

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, Sub};

/// A TCP sequence (or acknowledgement) number, ordered by wrapping subtraction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// Returns the signed distance `self - other`, in bytes, modulo 2^32.
    pub fn diff(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// Returns the unsigned forward distance from `other` to `self`, modulo 2^32.
    pub fn distance_from(self, other: SeqNumber) -> u32 {
        self.0.wrapping_sub(other.0)
    }

    /// Returns the later of two sequence numbers.
    pub fn max(self, other: SeqNumber) -> SeqNumber {
        if self > other {
            self
        } else {
            other
        }
    }

    /// Returns the earlier of two sequence numbers.
    pub fn min(self, other: SeqNumber) -> SeqNumber {
        if self < other {
            self
        } else {
            other
        }
    }

    /// Returns true if and only if `self` lies in the half-open range `[start, end)`.
    pub fn in_range(self, start: SeqNumber, end: SeqNumber) -> bool {
        self.distance_from(start) < end.distance_from(start)
    }
}

/// Serial-number order (RFC 1982): `a < b` when `b - a` is positive as a signed 32-bit
/// distance. It is only a partial order, and deliberately not `Ord`: two numbers exactly
/// 2^31 apart are unordered, and the relation is not transitive around the circle, so
/// sequence numbers cannot be sorted or used as ordered-map keys, and are compared only
/// when known to be near each other.
impl PartialOrd for SeqNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.diff(*other) {
            i32::MIN => None,
            d => Some(d.cmp(&0)),
        }
    }
}

impl Add<u32> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, rhs: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(rhs))
    }
}

impl Sub<u32> for SeqNumber {
    type Output = SeqNumber;
    fn sub(self, rhs: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_sub(rhs))
    }
}

impl Sub<SeqNumber> for SeqNumber {
    type Output = i32;
    fn sub(self, rhs: SeqNumber) -> i32 {
        self.diff(rhs)
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq({})", self.0)
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_wraps_around_zero() {
        let near_end = SeqNumber(u32::MAX - 10);
        let after_wrap = near_end + 20;
        assert_eq!(after_wrap.0, 9);
        assert!(after_wrap > near_end);
        assert!(near_end < after_wrap);
        assert_eq!(after_wrap - near_end, 20);
        assert_eq!(near_end - after_wrap, -20);
    }

    #[test]
    fn numbers_half_the_space_apart_are_unordered() {
        let a = SeqNumber(5);
        let b = SeqNumber(5u32.wrapping_add(1 << 31));
        assert_eq!(a.partial_cmp(&b), None);
        assert_eq!(b.partial_cmp(&a), None);
        assert!(a < SeqNumber(5u32.wrapping_add((1 << 31) - 1)));
    }

    #[test]
    fn in_range_is_half_open_and_wraps() {
        let start = SeqNumber(u32::MAX - 1);
        let end = start + 4;
        assert!(start.in_range(start, end));
        assert!((start + 3).in_range(start, end));
        assert!(!end.in_range(start, end));
        assert!(!(start - 1).in_range(start, end));
    }

    #[test]
    fn max_and_min_follow_serial_order() {
        let a = SeqNumber(u32::MAX);
        let b = SeqNumber(5);
        assert_eq!(a.max(b), b);
        assert_eq!(a.min(b), a);
    }
}
