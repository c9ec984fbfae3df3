//! This machine's screen: the framebuffer from the boot information, drawn
//! row by row through [`render::Layout`], keeping a shadow of every row so a
//! refresh writes only the rows that changed (framebuffer writes are slow,
//! uncached or write-combined).
//!
//! Three modes, in order: the boot log (every console line mirrored, from
//! the moment the screen is known: [`log_line`]), the status screen once the
//! application draws it ([`draw`]), and the crash report ([`crash_begin`],
//! [`crash_write`]: boot failures, panics and fatal exceptions, which then
//! own the screen - no status frame overwrites them). So a machine without a
//! serial port shows what COM1 would have said when it matters.
//!
//! Not for NMI context: drawing takes the screen's lock (callers that must
//! not wait use [`draw`], which gives up when another CPU is drawing; the
//! crash path waits a bounded time, then draws regardless).

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};

use super::render::{Layout, Tone, Unsupported};
use crate::boot::info::{BootInfo, FbKind};

struct Screen {
    layout: Layout,
    mem: &'static mut [u8],
    shadow: Vec<(String, Tone)>,
    /// The row the next log or crash line goes to (they wrap around, the
    /// row after the newest one blank: scrolling would redraw every row).
    cursor: u32,
    /// The crash report's unfinished line (no allocation on that path).
    partial: heapless::String<256>,
}

static SCREEN: spin::Mutex<Option<Screen>> = spin::Mutex::new(None);

const MODE_LOG: u8 = 0;
const MODE_STATUS: u8 = 1;
const MODE_CRASH: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(MODE_LOG);

/// What came of looking for a screen, for the boot log.
#[derive(Debug)]
pub enum Found {
    /// (description, columns, rows)
    Screen(Layout),
    None(&'static str),
    Unusable(Unsupported),
}

/// Take the screen the loader described (call once the page tables map it),
/// and blank it.
pub fn init(info: &BootInfo) -> Found {
    let Some(fb) = info.framebuffer else {
        return Found::None(info.framebuffer_unusable.unwrap_or("the loader reported no framebuffer"));
    };
    let layout = match Layout::new(fb) {
        Ok(l) => l,
        Err(e) => return Found::Unusable(e),
    };
    let writable = |a: u64| crate::mem::paging::query(a).is_some_and(|(w, _)| w);
    if fb.byte_len() == 0 || !writable(fb.addr) || !writable(fb.addr + fb.byte_len() - 1) {
        return Found::None("the framebuffer is not mapped writable");
    }
    // A pixel framebuffer write-combining (the MTRRs make it uncached: every
    // redraw would be a stream of single uncached stores on the CPU that
    // draws). VGA text is 4000 bytes in legacy space: left as it is.
    if let FbKind::Rgb { .. } = fb.kind
        && crate::mem::paging::map_write_combining(fb.addr, fb.byte_len()).is_err()
    {
        log::warn!("screen: the framebuffer could not be mapped write-combining");
    }
    // SAFETY: the loader hands the framebuffer to the kernel: `fb.byte_len()`
    // bytes at `fb.addr`, identity-mapped writable (checked above), outside
    // usable RAM so the frame allocator never hands them out, and only this
    // module touches them (once: `SCREEN` is set here only).
    let mem = unsafe { core::slice::from_raw_parts_mut(fb.addr as *mut u8, fb.byte_len() as usize) };
    let mut guard = SCREEN.lock();
    if guard.is_some() {
        return Found::None("already initialised");
    }
    let shadow = (0..layout.rows()).map(|_| (String::from("\u{0}"), Tone::Normal)).collect();
    let mut s = Screen { layout, mem, shadow, cursor: 0, partial: heapless::String::new() };
    for row in 0..layout.rows() {
        s.set(row, "", Tone::Normal);
    }
    *guard = Some(s);
    Found::Screen(layout)
}

impl Screen {
    /// Draw without touching the shadow's text (no allocation: the crash
    /// path); the shadow row is marked unknown so a later `set` redraws it.
    fn set_raw(&mut self, row: u32, text: &str, tone: Tone) {
        let cols = self.layout.cols() as usize;
        let end = text.char_indices().nth(cols).map_or(text.len(), |(i, _)| i);
        self.layout.draw_row(self.mem, row, &text[..end], tone);
        let slot = &mut self.shadow[row as usize];
        slot.0.clear();
        slot.0.push('\u{0}');
    }

    /// The next line of the log or the crash report.
    fn put_line(&mut self, text: &str, tone: Tone) {
        let rows = self.layout.rows();
        self.set_raw(self.cursor, text, tone);
        self.cursor = (self.cursor + 1) % rows;
        self.set_raw(self.cursor, "", Tone::Normal);
    }

    fn set(&mut self, row: u32, text: &str, tone: Tone) {
        let cols = self.layout.cols() as usize;
        let text = text.get(..cols).unwrap_or(text);
        let slot = &mut self.shadow[row as usize];
        if slot.0 != text || slot.1 != tone {
            self.layout.draw_row(self.mem, row, text, tone);
            slot.0.clear();
            slot.0.push_str(text);
            slot.1 = tone;
        }
    }
}

/// (columns, rows) of the screen, if there is one.
pub fn size() -> Option<(u32, u32)> {
    SCREEN.lock().as_ref().map(|s| (s.layout.cols(), s.layout.rows()))
}

/// Show `rows` from the top (rows past them are blanked). Returns false when
/// there is no screen or another CPU is drawing (nothing is waited for).
pub fn draw<'a>(rows: impl IntoIterator<Item = (&'a str, Tone)>) -> bool {
    if MODE.load(Ordering::Acquire) == MODE_CRASH {
        return false;
    }
    let Some(mut guard) = SCREEN.try_lock() else { return false };
    if MODE.compare_exchange(MODE_LOG, MODE_STATUS, Ordering::AcqRel, Ordering::Acquire) == Err(MODE_CRASH) {
        return false;
    }
    let Some(s) = guard.as_mut() else { return false };
    let mut n = 0;
    for (text, tone) in rows.into_iter().take(s.layout.rows() as usize) {
        s.set(n, text, tone);
        n += 1;
    }
    for row in n..s.layout.rows() {
        s.set(row, "", Tone::Normal);
    }
    true
}

/// Mirror one console line while the boot log owns the screen (before the
/// first status frame). Skipped when another CPU is drawing.
pub fn log_line(text: &str, tone: Tone) {
    if MODE.load(Ordering::Acquire) != MODE_LOG {
        return;
    }
    let Some(mut guard) = SCREEN.try_lock() else { return };
    if let Some(s) = guard.as_mut() {
        s.put_line(text, tone);
    }
}

/// The screen lock for the crash path: wait a bounded time, then take it
/// regardless (its holder is this CPU, which crashed while drawing, or a
/// CPU that stopped).
fn crash_lock() -> spin::MutexGuard<'static, Option<Screen>> {
    for _ in 0..50_000_000u64 {
        if let Some(g) = SCREEN.try_lock() {
            return g;
        }
        core::hint::spin_loop();
    }
    // SAFETY: the holder cannot be waited for (see above); at worst a row
    // drawn at the same time comes out garbled.
    unsafe { SCREEN.force_unlock() };
    SCREEN.lock()
}

/// A crash report begins: it owns the screen from now on. The first one
/// clears the screen; a later one (another CPU) goes on below.
pub fn crash_begin() {
    if MODE.swap(MODE_CRASH, Ordering::AcqRel) == MODE_CRASH {
        return;
    }
    let mut g = crash_lock();
    if let Some(s) = g.as_mut() {
        for row in 0..s.layout.rows() {
            s.set_raw(row, "", Tone::Normal);
        }
        s.cursor = 0;
        s.partial.clear();
    }
}

/// Text of the crash report (lines end with `\n`).
pub fn crash_write(text: &str) {
    if MODE.load(Ordering::Acquire) != MODE_CRASH {
        return;
    }
    let mut g = crash_lock();
    let Some(s) = g.as_mut() else { return };
    for ch in text.chars() {
        if ch == '\n' {
            let line = core::mem::take(&mut s.partial);
            if !line.is_empty() {
                s.put_line(&line, Tone::Bad);
            }
        } else {
            let _ = s.partial.push(ch);
        }
    }
}

/// One line for the boot log.
pub fn describe(f: &Found, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
    match f {
        Found::Screen(l) => match l.fb.kind {
            FbKind::Text => write!(out, "VGA text {}x{} at {:#x}", l.cols(), l.rows(), l.fb.addr),
            FbKind::Rgb { .. } => write!(
                out,
                "framebuffer {}x{}x{} at {:#x}, {}x{} text cells (glyphs x{}), {}",
                l.fb.width,
                l.fb.height,
                l.fb.bpp,
                l.fb.addr,
                l.cols(),
                l.rows(),
                l.scale,
                match crate::mem::paging::pat_index(l.fb.addr) {
                    Some(1) => "write-combining (PAT entry 1)",
                    Some(_) => "not write-combining",
                    None => "not mapped",
                }
            ),
        },
        Found::None(why) => write!(out, "none ({why})"),
        Found::Unusable(e) => write!(out, "none (unusable framebuffer: {e:?})"),
    }
}
