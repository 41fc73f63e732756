//! Interface index to name, cached per thread: `if_indextoname` is a system call, and
//! the verdict path must not make one per packet nor allocate.

/// Room for names: `IFNAMSIZ` bytes, NUL included.
const IFNAMSIZ: usize = 16;
/// Entries per cache; more interfaces than this just cost a lookup each.
const SLOTS: usize = 64;

#[derive(Clone, Copy)]
struct Slot {
    index: u32,
    len: u8,
    name: [u8; IFNAMSIZ],
}

/// A fixed-size cache of interface names. Indexes can be reused after an interface
/// goes away, so owners call [`IfaceNames::forget`] every few seconds.
pub struct IfaceNames {
    slots: Box<[Slot; SLOTS]>,
    next: usize,
}

impl Default for IfaceNames {
    fn default() -> Self {
        Self::new()
    }
}

impl IfaceNames {
    /// An empty cache (the only allocation it makes).
    pub fn new() -> IfaceNames {
        IfaceNames {
            slots: Box::new(
                [Slot {
                    index: 0,
                    len: 0,
                    name: [0; IFNAMSIZ],
                }; SLOTS],
            ),
            next: 0,
        }
    }

    /// Empties the cache.
    pub fn forget(&mut self) {
        for s in self.slots.iter_mut() {
            s.index = 0;
        }
    }

    /// The name of interface `index`; `None` for 0 or an index the kernel does not know.
    pub fn name(&mut self, index: u32) -> Option<&str> {
        if index == 0 {
            return None;
        }
        let pos = match self.slots.iter().position(|s| s.index == index) {
            Some(p) => p,
            None => {
                let mut buf = [0 as libc::c_char; IFNAMSIZ];
                // SAFETY: `buf` has IFNAMSIZ bytes, as if_indextoname requires.
                let r = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
                if r.is_null() {
                    return None;
                }
                let p = self.next;
                self.next = (self.next + 1) % SLOTS;
                let slot = &mut self.slots[p];
                let len = buf.iter().position(|&c| c == 0).unwrap_or(IFNAMSIZ);
                for (d, s) in slot.name.iter_mut().zip(buf.iter()) {
                    *d = *s as u8;
                }
                slot.len = len as u8;
                slot.index = index;
                p
            }
        };
        let s = &self.slots[pos];
        std::str::from_utf8(&s.name[..usize::from(s.len)]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolves_and_zero_does_not() {
        let mut c = IfaceNames::new();
        assert_eq!(c.name(0), None);
        assert_eq!(c.name(1), Some("lo"));
        assert_eq!(c.name(1), Some("lo"), "cached");
        assert_eq!(c.name(u32::MAX - 7), None);
    }
}
