//! The kernel symbol table: encoded at build time by xtask into the image's
//! reserved `.ksyms` section, read at run time to print `func+0xoff/0xlen`.
//!
//! Layout (little-endian), all offsets from the start of the blob:
//! ```text
//! 0   magic  b"KSYM"
//! 4   version u32 (= 1)
//! 8   count   u32            number of symbols
//! 12  strtab_len u32         bytes of names
//! 16  entries [count] { addr: u64, len: u32, name_off: u32 }   sorted by addr
//! ..  strtab  UTF-8 names, not NUL-terminated (the next name_off ends one)
//! ```
//! Names are stored demangled without the hash suffix.
//!
//! Pure logic, no allocation on the lookup path (safe to use from an
//! exception or NMI handler).

use core::fmt;

pub const MAGIC: [u8; 4] = *b"KSYM";
pub const VERSION: u32 = 1;
const HEADER: usize = 16;
const ENTRY: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The blob does not start with the magic (the image was not post-processed).
    NoTable,
    BadVersion(u32),
    /// Sizes in the header do not fit the blob.
    Truncated,
    /// A name offset is out of range or not on a UTF-8 boundary.
    BadName(u32),
    /// Entries are not sorted by address.
    Unsorted(u32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoTable => write!(f, "no symbol table in the image (not built by `cargo xtask image`?)"),
            Error::BadVersion(v) => write!(f, "symbol table version {v}, expected {VERSION}"),
            Error::Truncated => write!(f, "symbol table truncated"),
            Error::BadName(i) => write!(f, "symbol {i} has a bad name offset"),
            Error::Unsorted(i) => write!(f, "symbol {i} is out of address order"),
        }
    }
}

/// A validated view of an encoded table.
#[derive(Clone, Copy)]
pub struct SymbolTable<'a> {
    entries: &'a [u8],
    strtab: &'a [u8],
    count: u32,
    /// Added to every stored (link-time) address: where the image runs
    /// minus where it was linked.
    offset: u64,
}

/// One symbol, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol<'a> {
    pub name: &'a str,
    pub addr: u64,
    pub len: u32,
}

/// An address expressed as `name+0xoff/0xlen`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location<'a> {
    pub symbol: Symbol<'a>,
    pub offset: u64,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{:#x}/{:#x}", self.symbol.name, self.offset, self.symbol.len)
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    (u32_at(b, off) as u64) | ((u32_at(b, off + 4) as u64) << 32)
}

impl<'a> SymbolTable<'a> {
    /// Validate a blob (it may be followed by zero padding).
    pub fn parse(blob: &'a [u8]) -> Result<Self, Error> {
        if blob.len() < HEADER || blob[0..4] != MAGIC {
            return Err(Error::NoTable);
        }
        let version = u32_at(blob, 4);
        if version != VERSION {
            return Err(Error::BadVersion(version));
        }
        let count = u32_at(blob, 8);
        let strtab_len = u32_at(blob, 12) as usize;
        let entries_len = (count as usize).checked_mul(ENTRY).ok_or(Error::Truncated)?;
        let end = HEADER
            .checked_add(entries_len)
            .and_then(|e| e.checked_add(strtab_len))
            .ok_or(Error::Truncated)?;
        if end > blob.len() {
            return Err(Error::Truncated);
        }
        let t = SymbolTable {
            entries: &blob[HEADER..HEADER + entries_len],
            strtab: &blob[HEADER + entries_len..end],
            count,
            offset: 0,
        };
        let mut last = 0;
        for i in 0..count {
            let (addr, _, off) = t.raw(i);
            if addr < last {
                return Err(Error::Unsorted(i));
            }
            last = addr;
            let next = if i + 1 < count { t.raw(i + 1).2 } else { strtab_len as u32 };
            if off > next || next as usize > strtab_len || core::str::from_utf8(&t.strtab[off as usize..next as usize]).is_err() {
                return Err(Error::BadName(i));
            }
        }
        Ok(t)
    }

    /// The same table for an image that runs `offset` bytes above its link
    /// address: every address it gives and takes is a run-time one.
    pub fn with_offset(self, offset: u64) -> Self {
        SymbolTable { offset, ..self }
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Entry `i`: (run-time address, length, name offset).
    fn raw(&self, i: u32) -> (u64, u32, u32) {
        let o = i as usize * ENTRY;
        (u64_at(self.entries, o).wrapping_add(self.offset), u32_at(self.entries, o + 8), u32_at(self.entries, o + 12))
    }

    /// Symbol `i` (in address order).
    pub fn get(&self, i: usize) -> Option<Symbol<'a>> {
        if i >= self.len() {
            return None;
        }
        let (addr, len, off) = self.raw(i as u32);
        let end = if i + 1 < self.len() { self.raw(i as u32 + 1).2 } else { self.strtab.len() as u32 };
        // Validated in `parse`: offsets are in range, ordered and on UTF-8 boundaries.
        let name = core::str::from_utf8(&self.strtab[off as usize..end as usize]).unwrap_or("?");
        Some(Symbol { name, addr, len })
    }

    /// The symbol containing `addr` (within `[addr, addr+len)`, or the closest
    /// one below for zero-length symbols).
    pub fn lookup(&self, addr: u64) -> Option<Location<'a>> {
        // Index of the first symbol with start > addr.
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.raw(mid as u32).0 <= addr {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return None;
        }
        // The group of symbols sharing the nearest start address at or below
        // `addr` is `first..lo`. A sized symbol that covers `addr` wins; else a
        // zero-length one (a label) covers everything up to the next symbol.
        let start = self.raw(lo as u32 - 1).0;
        let mut first = lo - 1;
        while first > 0 && self.raw(first as u32 - 1).0 == start {
            first -= 1;
        }
        let offset = addr - start;
        let group = || (first..lo).filter_map(|i| self.get(i));
        group()
            .find(|s| offset < s.len as u64)
            .or_else(|| group().find(|s| s.len == 0))
            .map(|symbol| Location { symbol, offset })
    }

    /// The function containing `addr`: a sized symbol only, never a label
    /// (`__kernel_end` and the like cover every address up to the next
    /// symbol, which names no code).
    pub fn function(&self, addr: u64) -> Option<Location<'a>> {
        self.lookup(addr).filter(|l| l.symbol.len > 0)
    }

    /// Exact lookup by name (linear; for boot-time use, not hot paths).
    pub fn find(&self, name: &str) -> Option<Symbol<'a>> {
        (0..self.len()).filter_map(|i| self.get(i)).find(|s| s.name == name)
    }
}

/// Encode symbols (any order) into a blob. Used by xtask on the host.
pub fn encode(symbols: &[(u64, u32, &str)]) -> alloc::vec::Vec<u8> {
    let mut sorted: alloc::vec::Vec<_> = symbols.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
    let strtab_len: usize = sorted.iter().map(|s| s.2.len()).sum();
    let mut out = alloc::vec::Vec::with_capacity(HEADER + sorted.len() * ENTRY + strtab_len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    out.extend_from_slice(&(strtab_len as u32).to_le_bytes());
    let mut off = 0u32;
    for (addr, len, name) in &sorted {
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
        off += name.len() as u32;
    }
    for (_, _, name) in &sorted {
        out.extend_from_slice(name.as_bytes());
    }
    out
}

/// Strip the `::h0123456789abcdef` hash suffix that legacy Rust mangling leaves
/// after demangling.
pub fn strip_hash(name: &str) -> &str {
    match name.rfind("::h") {
        Some(i) if name.len() - i == 19 && name[i + 3..].bytes().all(|b| b.is_ascii_hexdigit()) => &name[..i],
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> alloc::vec::Vec<u8> {
        encode(&[
            (0x20_3000, 0x40, "kernel::c"),
            (0x20_1000, 0x65, "lapic_wd_event"),
            (0x20_2000, 0x10, "kernel::b"),
            (0x20_2000, 0, "kernel::b_alias"),
            (0x20_4000, 0, "__text_end"),
        ])
    }

    #[test]
    fn lookup_inside_sized_symbols() {
        let blob = table();
        let t = SymbolTable::parse(&blob).unwrap();
        assert_eq!(t.len(), 5);
        let l = t.lookup(0x20_100d).unwrap();
        assert_eq!(std::format!("{l}"), "lapic_wd_event+0xd/0x65");
        assert_eq!(t.lookup(0x20_2000).unwrap().symbol.name, "kernel::b");
        assert_eq!(std::format!("{}", t.lookup(0x20_303f).unwrap()), "kernel::c+0x3f/0x40");
    }

    #[test]
    fn a_relocated_image_looks_up_run_time_addresses() {
        let blob = table();
        let t = SymbolTable::parse(&blob).unwrap().with_offset(0x7e40_0000);
        assert_eq!(std::format!("{}", t.lookup(0x7e40_0000 + 0x20_100d).unwrap()), "lapic_wd_event+0xd/0x65");
        assert_eq!(t.lookup(0x20_100d), None, "the link address is below every symbol now");
        assert_eq!(t.find("kernel::c").unwrap().addr, 0x7e40_0000 + 0x20_3000);
        assert_eq!(t.get(0).unwrap().addr, 0x7e40_0000 + 0x20_1000);
    }

    #[test]
    fn gaps_and_edges() {
        let blob = table();
        let t = SymbolTable::parse(&blob).unwrap();
        assert_eq!(t.lookup(0x1000), None, "below every symbol");
        assert_eq!(t.lookup(0x20_1065), None, "one past the end of a sized symbol");
        assert_eq!(t.lookup(0x20_3040), None, "gap after kernel::c");
        // A zero-length symbol covers what follows it up to the next symbol.
        assert_eq!(t.lookup(0x20_4010).unwrap().symbol.name, "__text_end");
        assert_eq!(t.function(0x20_4010), None, "a label is no function");
        assert_eq!(t.function(0x20_303f).unwrap().symbol.name, "kernel::c");
    }

    #[test]
    fn trailing_padding_is_fine_and_garbage_is_rejected() {
        let mut blob = table();
        blob.resize(blob.len() + 4096, 0);
        assert!(SymbolTable::parse(&blob).is_ok());
        assert_eq!(SymbolTable::parse(&[0u8; 64]).err(), Some(Error::NoTable));
        let mut bad = table();
        bad[4] = 9;
        assert_eq!(SymbolTable::parse(&bad).err(), Some(Error::BadVersion(9)));
        let short = table();
        assert_eq!(SymbolTable::parse(&short[..short.len() - 1]).err(), Some(Error::Truncated));
        let mut huge = table();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(SymbolTable::parse(&huge).err(), Some(Error::Truncated));
    }

    #[test]
    fn unsorted_entries_are_rejected() {
        let mut blob = table();
        // Swap the addresses of the first two entries.
        let (a, b) = (HEADER, HEADER + ENTRY);
        let first: [u8; 8] = blob[a..a + 8].try_into().unwrap();
        let second: [u8; 8] = blob[b..b + 8].try_into().unwrap();
        blob[a..a + 8].copy_from_slice(&second);
        blob[b..b + 8].copy_from_slice(&first);
        assert_eq!(SymbolTable::parse(&blob).err(), Some(Error::Unsorted(1)));
    }

    #[test]
    fn find_and_strip_hash() {
        let blob = table();
        let t = SymbolTable::parse(&blob).unwrap();
        assert_eq!(t.find("kernel::c").unwrap().addr, 0x20_3000);
        assert_eq!(strip_hash("kernel::arch::foo::h0123456789abcdef"), "kernel::arch::foo");
        assert_eq!(strip_hash("kernel::arch::hello"), "kernel::arch::hello");
    }
}
