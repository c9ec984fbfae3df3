//! This machine's screen: the framebuffer from the boot information, drawn
//! row by row through [`render::Layout`], keeping a shadow of every row so a
//! refresh writes only the rows that changed (framebuffer writes are slow,
//! uncached or write-combined).
//!
//! Not for NMI context: drawing takes the screen's lock (callers that must
//! not wait use [`draw`], which gives up when another CPU is drawing).

use alloc::string::String;
use alloc::vec::Vec;

use super::render::{Layout, Tone, Unsupported};
use crate::boot::info::{BootInfo, FbKind};

struct Screen {
    layout: Layout,
    mem: &'static mut [u8],
    shadow: Vec<(String, Tone)>,
}

static SCREEN: spin::Mutex<Option<Screen>> = spin::Mutex::new(None);

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
    let mut s = Screen { layout, mem, shadow };
    for row in 0..layout.rows() {
        s.set(row, "", Tone::Normal);
    }
    *guard = Some(s);
    Found::Screen(layout)
}

impl Screen {
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
    let Some(mut guard) = SCREEN.try_lock() else { return false };
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

/// One line for the boot log.
pub fn describe(f: &Found, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
    match f {
        Found::Screen(l) => match l.fb.kind {
            FbKind::Text => write!(out, "VGA text {}x{} at {:#x}", l.cols(), l.rows(), l.fb.addr),
            FbKind::Rgb { .. } => write!(
                out,
                "framebuffer {}x{}x{} at {:#x}, {}x{} text cells (glyphs x{})",
                l.fb.width,
                l.fb.height,
                l.fb.bpp,
                l.fb.addr,
                l.cols(),
                l.rows(),
                l.scale
            ),
        },
        Found::None(why) => write!(out, "none ({why})"),
        Found::Unusable(e) => write!(out, "none (unusable framebuffer: {e:?})"),
    }
}
