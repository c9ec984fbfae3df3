//! Physical frame allocator: free ranges from the firmware memory map minus
//! reserved ranges (kernel image, low memory, boot data), handed out in 4 KiB
//! frames or contiguous runs. Freed runs go back to the free list.
//!
//! Pure logic (host-tested); the kernel wraps it in a lock.

use heapless::Vec;

pub const FRAME_SIZE: u64 = 4096;
/// Most disjoint free ranges tracked; firmware maps have a few dozen at most.
pub const MAX_RANGES: usize = 128;

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub const fn new(start: u64, end: u64) -> Self {
        Range { start, end }
    }
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No free run of the requested size (and alignment).
    OutOfMemory { frames: u64 },
    /// More disjoint ranges than `MAX_RANGES`; the range was not recorded.
    TooFragmented,
}

#[derive(Debug, Default)]
pub struct FrameAllocator {
    free: Vec<Range, MAX_RANGES>,
    /// Bytes dropped because the free list was full (reported, never silent).
    pub lost_bytes: u64,
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

fn align_down(x: u64, a: u64) -> u64 {
    x / a * a
}

impl FrameAllocator {
    pub const fn new() -> Self {
        FrameAllocator { free: Vec::new(), lost_bytes: 0 }
    }

    /// Add usable memory (shrunk to whole frames).
    pub fn add(&mut self, r: Range) {
        let r = Range::new(align_up(r.start, FRAME_SIZE), align_down(r.end, FRAME_SIZE));
        if !r.is_empty() {
            self.insert(r);
        }
    }

    /// Remove `r` (grown to whole frames) from the free ranges.
    pub fn reserve(&mut self, r: Range) {
        let r = Range::new(align_down(r.start, FRAME_SIZE), align_up(r.end, FRAME_SIZE));
        let mut out: Vec<Range, MAX_RANGES> = Vec::new();
        let mut lost = 0;
        for f in self.free.iter() {
            for piece in [Range::new(f.start, f.end.min(r.start)), Range::new(f.start.max(r.end), f.end)] {
                if !piece.is_empty() && out.push(piece).is_err() {
                    lost += piece.len();
                }
            }
        }
        self.free = out;
        self.lost_bytes += lost;
    }

    fn insert(&mut self, r: Range) {
        // Keep the list sorted and merged, so `reserve` and `free` stay simple.
        let mut merged = r;
        let mut out: Vec<Range, MAX_RANGES> = Vec::new();
        let mut lost = 0;
        let mut placed = false;
        for f in self.free.iter().copied() {
            if f.end < merged.start {
                if out.push(f).is_err() {
                    lost += f.len();
                }
            } else if f.start > merged.end {
                if !placed {
                    if out.push(merged).is_err() {
                        lost += merged.len();
                    }
                    placed = true;
                }
                if out.push(f).is_err() {
                    lost += f.len();
                }
            } else {
                merged = Range::new(merged.start.min(f.start), merged.end.max(f.end));
            }
        }
        if !placed && out.push(merged).is_err() {
            lost += merged.len();
        }
        self.free = out;
        self.lost_bytes += lost;
    }

    /// Allocate `frames` contiguous frames aligned to `align` bytes (a power of
    /// two, at least a frame), from the lowest address that fits below `limit`.
    pub fn alloc_run(&mut self, frames: u64, align: u64, limit: u64) -> Result<u64, Error> {
        let bytes = frames * FRAME_SIZE;
        let align = align.max(FRAME_SIZE);
        for i in 0..self.free.len() {
            let f = self.free[i];
            let start = align_up(f.start, align);
            if start.checked_add(bytes).is_some_and(|end| end <= f.end && end <= limit) {
                self.reserve(Range::new(start, start + bytes));
                return Ok(start);
            }
        }
        Err(Error::OutOfMemory { frames })
    }

    /// One frame anywhere.
    pub fn alloc(&mut self) -> Result<u64, Error> {
        self.alloc_run(1, FRAME_SIZE, u64::MAX)
    }

    /// Return a run allocated earlier.
    pub fn free(&mut self, start: u64, frames: u64) {
        self.insert(Range::new(start, start + frames * FRAME_SIZE));
    }

    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|r| r.len()).sum()
    }

    pub fn ranges(&self) -> &[Range] {
        &self.free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_like() -> FrameAllocator {
        let mut a = FrameAllocator::new();
        a.add(Range::new(0, 0x9_fc00)); // low memory, ragged end
        a.add(Range::new(0x10_0000, 0x1ffe_0000)); // 511 MiB
        a.reserve(Range::new(0, 0x10_0000)); // real-mode area, trampoline
        a.reserve(Range::new(0x20_0000, 0x34_5678)); // kernel image
        a
    }

    #[test]
    fn reserved_ranges_are_never_handed_out() {
        let mut a = qemu_like();
        assert_eq!(a.ranges(), &[Range::new(0x10_0000, 0x20_0000), Range::new(0x34_6000, 0x1ffe_0000)]);
        let mut seen = std::vec::Vec::new();
        while let Ok(f) = a.alloc() {
            assert!(f >= 0x10_0000 && !(0x20_0000..0x34_6000).contains(&f), "{f:#x}");
            assert_eq!(f % FRAME_SIZE, 0);
            seen.push(f);
            if seen.len() > 300 {
                break;
            }
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 301, "no frame handed out twice");
    }

    #[test]
    fn aligned_runs_limits_and_exhaustion() {
        let mut a = qemu_like();
        let big = a.alloc_run(512, 0x20_0000, u64::MAX).unwrap();
        assert_eq!(big % 0x20_0000, 0);
        assert!(big >= 0x40_0000);
        assert_eq!(a.alloc_run(1, FRAME_SIZE, 0x10_0000), Err(Error::OutOfMemory { frames: 1 }));
        let low = a.alloc_run(1, FRAME_SIZE, 0x20_0000).unwrap();
        assert_eq!(low, 0x10_0000);
        let total = a.free_bytes() / FRAME_SIZE;
        assert_eq!(a.alloc_run(total + 1, FRAME_SIZE, u64::MAX), Err(Error::OutOfMemory { frames: total + 1 }));
    }

    #[test]
    fn free_merges_back() {
        let mut a = qemu_like();
        let before = a.ranges().to_vec();
        let x = a.alloc_run(16, FRAME_SIZE, u64::MAX).unwrap();
        let y = a.alloc_run(16, FRAME_SIZE, u64::MAX).unwrap();
        a.free(x, 16);
        a.free(y, 16);
        assert_eq!(a.ranges(), &before[..]);
    }

    #[test]
    fn overflow_of_the_range_list_is_counted() {
        let mut a = FrameAllocator::new();
        for i in 0..(MAX_RANGES as u64 + 3) {
            a.add(Range::new(i * 0x10000, i * 0x10000 + 0x1000));
        }
        assert_eq!(a.ranges().len(), MAX_RANGES);
        assert_eq!(a.lost_bytes, 3 * 0x1000);
    }
}
