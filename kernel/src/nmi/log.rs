//! The NMI warning log: a bounded, lock-free buffer of text records that NMI
//! handlers write and ordinary contexts read (the console printer, the
//! network service). A writer claims a slot with one atomic increment and
//! publishes it with a release store; when the slots are used up, records
//! are dropped and counted, never blocking the NMI. No allocation.
//!
//! Pure logic (host-tested), plus the formatter of the "ftraced code called
//! from NMI context" warning.

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// Bytes of one record (a warning with its call trace).
pub const RECORD_BYTES: usize = 2048;

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

/// A fixed-size text record (truncated at `RECORD_BYTES`, on a char boundary).
pub struct Record {
    buf: [u8; RECORD_BYTES],
    len: usize,
    pub truncated: bool,
}

impl Record {
    pub const fn new() -> Self {
        Record { buf: [0; RECORD_BYTES], len: 0, truncated: false }
    }

    pub fn as_str(&self) -> &str {
        // Only whole `str`s are appended, cut on char boundaries.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Default for Record {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Record {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = RECORD_BYTES - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            self.truncated = true;
        }
        Ok(())
    }
}

/// `N` records, written once each (a log of the first N warnings; later ones
/// are counted in `dropped`).
pub struct NmiLog<const N: usize> {
    slots: [UnsafeCell<Record>; N],
    state: [AtomicU8; N],
    next: AtomicUsize,
    dropped: AtomicUsize,
}

// SAFETY: slot i is written only by the one writer that claimed it (a unique
// value of `next`) while its state is WRITING, and read only after READY is
// published with release ordering; it is never written again.
unsafe impl<const N: usize> Sync for NmiLog<N> {}

impl<const N: usize> NmiLog<N> {
    pub const fn new() -> Self {
        NmiLog {
            slots: [const { UnsafeCell::new(Record::new()) }; N],
            state: [const { AtomicU8::new(EMPTY) }; N],
            next: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        }
    }

    /// Write one record with `f`. Returns its index, or None when the log is
    /// full (the record is dropped and counted). Lock-free; NMI-safe.
    pub fn push(&self, f: impl FnOnce(&mut Record)) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::AcqRel);
        if i >= N {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.state[i].store(WRITING, Ordering::Relaxed);
        // SAFETY: index i was handed out once (fetch_add above); no reader
        // touches a slot before it is READY.
        let r = unsafe { &mut *self.slots[i].get() };
        f(r);
        self.state[i].store(READY, Ordering::Release);
        Some(i)
    }

    /// Record `i`, if it is complete.
    pub fn get(&self, i: usize) -> Option<&str> {
        if i >= N || self.state[i].load(Ordering::Acquire) != READY {
            return None;
        }
        // SAFETY: READY slots are never written again.
        Some(unsafe { (*self.slots[i].get()).as_str() })
    }

    /// Complete records in order (stops at the first one still being written).
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map_while(|i| self.get(i))
    }

    /// Records claimed so far (complete or not).
    pub fn len(&self) -> usize {
        self.next.load(Ordering::Acquire).min(N)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records that did not fit.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl<const N: usize> Default for NmiLog<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// One frame of a call trace: address and, when known, `name+0xoff/0xlen`.
pub struct TraceFrame<'a> {
    pub addr: u64,
    pub symbol: Option<&'a dyn fmt::Display>,
}

/// Format the 2008-style warning for a trace site that ran in NMI context:
/// ```text
/// WARNING: ftraced code called from NMI context lapic_wd_event+0x4/0x65
/// Disabling ftraced. Boot with ftrace_keep_on_nmi to not disable.
/// CPU: 2 APIC: 2
/// Call Trace:
///  <NMI> [<0000000000213a44>] ? lapic_wd_event+0x4/0x65
///  [<...>] ? caller+0x.../0x...
/// ```
pub fn format_ftrace_nmi_warning(
    out: &mut impl Write,
    site: &dyn fmt::Display,
    keep_on: bool,
    cpu: usize,
    apic: u32,
    trace: &mut dyn Iterator<Item = TraceFrame<'_>>,
) -> fmt::Result {
    writeln!(out, "WARNING: ftraced code called from NMI context {site}")?;
    if keep_on {
        writeln!(out, "ftrace_keep_on_nmi is set: tracing stays on.")?;
    } else {
        writeln!(out, "Disabling ftraced. Boot with ftrace_keep_on_nmi to not disable.")?;
    }
    writeln!(out, "CPU: {cpu} APIC: {apic}")?;
    writeln!(out, "Call Trace:")?;
    for (i, f) in trace.enumerate() {
        let marker = if i == 0 { " <NMI>" } else { "" };
        match f.symbol {
            Some(s) => writeln!(out, "{marker} [<{:016x}>] ? {s}", f.addr)?,
            None => writeln!(out, "{marker} [<{:016x}>] ?", f.addr)?,
        }
    }
    Ok(())
}

/// The NMI warning log: lockup reports, NMI backtraces and ftrace
/// NMI-context warnings, from every CPU.
pub static NMI_LOG: NmiLog<32> = NmiLog::new();

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    #[test]
    fn records_are_kept_in_order_and_overflow_is_counted() {
        let log: NmiLog<3> = NmiLog::new();
        for i in 0..5 {
            let r = log.push(|r| {
                let _ = write!(r, "warning {i}");
            });
            assert_eq!(r.is_some(), i < 3);
        }
        let got: std::vec::Vec<&str> = log.iter().collect();
        assert_eq!(got, ["warning 0", "warning 1", "warning 2"]);
        assert_eq!(log.dropped(), 2);
        assert_eq!(log.len(), 3);
    }

    #[test]
    fn long_records_are_cut_on_a_char_boundary() {
        let mut r = Record::new();
        let s: String = "é".repeat(RECORD_BYTES);
        let _ = r.write_str(&s);
        assert!(r.truncated);
        assert!(r.as_str().len() <= RECORD_BYTES);
        assert!(r.as_str().chars().all(|c| c == 'é'));
    }

    #[test]
    fn concurrent_writers_never_share_a_slot() {
        let log: std::sync::Arc<NmiLog<64>> = std::sync::Arc::new(NmiLog::new());
        let threads: std::vec::Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        log.push(|r| {
                            let _ = write!(r, "t{t}-{i}");
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut all: std::vec::Vec<String> = log.iter().map(String::from).collect();
        assert_eq!(all.len(), 64);
        assert_eq!(log.dropped(), 16);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 64, "every record written by exactly one writer");
    }

    #[test]
    fn the_warning_reads_like_linux_2008() {
        struct Sym(&'static str);
        impl fmt::Display for Sym {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        let (site, caller) = (Sym("lapic_wd_event+0x4/0x65"), Sym("kernel::nmi::nmi_handler+0x55/0x180"));
        let frames = [TraceFrame { addr: 0x21c6d0, symbol: Some(&site) }, TraceFrame { addr: 0x21c800, symbol: Some(&caller) }, TraceFrame { addr: 0x99, symbol: None }];
        let mut out = String::new();
        format_ftrace_nmi_warning(&mut out, &site, false, 2, 2, &mut frames.into_iter()).unwrap();
        assert_eq!(
            out,
            "WARNING: ftraced code called from NMI context lapic_wd_event+0x4/0x65\n\
             Disabling ftraced. Boot with ftrace_keep_on_nmi to not disable.\n\
             CPU: 2 APIC: 2\n\
             Call Trace:\n \
             <NMI> [<000000000021c6d0>] ? lapic_wd_event+0x4/0x65\n \
             [<000000000021c800>] ? kernel::nmi::nmi_handler+0x55/0x180\n \
             [<0000000000000099>] ?\n"
        );
        let mut keep = String::new();
        format_ftrace_nmi_warning(&mut keep, &site, true, 0, 0, &mut core::iter::empty()).unwrap();
        assert!(keep.contains("ftrace_keep_on_nmi is set: tracing stays on."));
    }
}
