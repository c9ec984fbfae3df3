//! Text rows on a framebuffer, as bytes: VGA text cells (character,
//! attribute) or pixels of 8x8 glyphs scaled up. Pure: `mem` is the
//! framebuffer in the kernel and a buffer in tests.

use crate::boot::info::{FbKind, Framebuffer};

/// Glyph cell of `font8x8` (pixels), before scaling.
pub const GLYPH: u32 = 8;

/// How a row is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Normal,
    Title,
    Good,
    Bad,
}

impl Tone {
    /// VGA text attribute: background << 4 | foreground (IBM VGA palette:
    /// 0 black, 1 blue, 2 green, 4 red, 7 light grey, 15 white).
    pub const fn vga_attr(self) -> u8 {
        match self {
            Tone::Normal => 0x07,
            Tone::Title => 0x1F,
            Tone::Good => 0x0A,
            Tone::Bad => 0x4F,
        }
    }

    /// (foreground, background) as RGB.
    pub const fn rgb(self) -> ((u8, u8, u8), (u8, u8, u8)) {
        match self {
            Tone::Normal => ((0xC0, 0xC0, 0xC0), (0, 0, 0)),
            Tone::Title => ((0xFF, 0xFF, 0xFF), (0x00, 0x00, 0xAA)),
            Tone::Good => ((0x55, 0xFF, 0x55), (0, 0, 0)),
            Tone::Bad => ((0xFF, 0xFF, 0xFF), (0xAA, 0x00, 0x00)),
        }
    }
}

/// Why a framebuffer cannot carry text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// Pixels of this many bits (we draw 15/16/24/32).
    Depth(u8),
    /// Lines shorter than the width says, or a zero-sized screen.
    Geometry,
}

/// A framebuffer laid out as text rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub fb: Framebuffer,
    /// Screen pixels per glyph pixel (1 for text mode).
    pub scale: u32,
}

impl Layout {
    pub fn new(fb: Framebuffer) -> Result<Layout, Unsupported> {
        if fb.width == 0 || fb.height == 0 {
            return Err(Unsupported::Geometry);
        }
        let scale = match fb.kind {
            FbKind::Text => {
                if fb.pitch < fb.width * 2 {
                    return Err(Unsupported::Geometry);
                }
                1
            }
            FbKind::Rgb { .. } => {
                if !matches!(fb.bpp, 15 | 16 | 24 | 32) {
                    return Err(Unsupported::Depth(fb.bpp));
                }
                if (fb.pitch as u64) < fb.width as u64 * fb.bpp.div_ceil(8) as u64 || fb.width < GLYPH || fb.height < GLYPH {
                    return Err(Unsupported::Geometry);
                }
                // About 60 columns and 30 rows at least, glyphs 1x to 4x.
                (fb.width / 480).min(fb.height / 240).clamp(1, 4)
            }
        };
        Ok(Layout { fb, scale })
    }

    pub fn cols(&self) -> u32 {
        match self.fb.kind {
            FbKind::Text => self.fb.width,
            FbKind::Rgb { .. } => self.fb.width / (GLYPH * self.scale),
        }
    }

    pub fn rows(&self) -> u32 {
        match self.fb.kind {
            FbKind::Text => self.fb.height,
            FbKind::Rgb { .. } => self.fb.height / (GLYPH * self.scale),
        }
    }

    fn bytes_per_pixel(&self) -> usize {
        self.fb.bpp.div_ceil(8) as usize
    }

    /// A colour as this framebuffer's pixel value.
    pub fn pixel(&self, (r, g, b): (u8, u8, u8)) -> u32 {
        match self.fb.kind {
            FbKind::Text => 0,
            FbKind::Rgb { red, green, blue } => {
                let field = |v: u8, (pos, size): (u8, u8)| -> u32 {
                    if size == 0 || size > 8 || pos >= 32 {
                        return 0;
                    }
                    (u32::from(v) >> (8 - size)) << pos
                };
                field(r, red) | field(g, green) | field(b, blue)
            }
        }
    }

    /// Draw `text` on `row`, padded with blanks to the full width (characters
    /// outside printable ASCII show as `?`). `mem` is the whole framebuffer
    /// (`fb.byte_len()` bytes); rows past the screen are ignored.
    pub fn draw_row(&self, mem: &mut [u8], row: u32, text: &str, tone: Tone) {
        if row >= self.rows() || (mem.len() as u64) < self.fb.byte_len() {
            return;
        }
        let mut chars = text.chars().map(|c| if c == ' ' || c.is_ascii_graphic() { c as u8 } else { b'?' });
        match self.fb.kind {
            FbKind::Text => {
                let line = &mut mem[(row * self.fb.pitch) as usize..];
                for col in 0..self.fb.width as usize {
                    line[2 * col] = chars.next().unwrap_or(b' ');
                    line[2 * col + 1] = tone.vga_attr();
                }
            }
            FbKind::Rgb { .. } => {
                let (fg, bg) = tone.rgb();
                let (fg, bg) = (self.pixel(fg).to_le_bytes(), self.pixel(bg).to_le_bytes());
                let bpp = self.bytes_per_pixel();
                let cell = (GLYPH * self.scale) as usize;
                let top = row as usize * cell;
                for col in 0..self.cols() as usize {
                    let glyph = font8x8::legacy::BASIC_LEGACY[chars.next().unwrap_or(b' ') as usize];
                    for y in 0..cell {
                        let bits = glyph[y / self.scale as usize];
                        let line = (top + y) * self.fb.pitch as usize;
                        for x in 0..cell {
                            // font8x8: bit 0 is the leftmost pixel.
                            let on = bits >> (x / self.scale as usize) & 1 != 0;
                            let at = line + (col * cell + x) * bpp;
                            mem[at..at + bpp].copy_from_slice(&(if on { fg } else { bg })[..bpp]);
                        }
                    }
                }
                // The strip right of the last full cell.
                let used = self.cols() as usize * cell;
                for y in 0..cell {
                    let line = (top + y) * self.fb.pitch as usize;
                    for x in used..self.fb.width as usize {
                        let at = line + x * bpp;
                        mem[at..at + bpp].copy_from_slice(&bg[..bpp]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    const RGB32: FbKind = FbKind::Rgb { red: (16, 8), green: (8, 8), blue: (0, 8) };

    fn fb(width: u32, height: u32, bpp: u8, kind: FbKind) -> Framebuffer {
        let pitch = if kind == FbKind::Text { width * 2 } else { width * bpp.div_ceil(8) as u32 + 64 };
        Framebuffer { addr: 0, pitch, width, height, bpp, kind }
    }

    #[test]
    fn vga_text_rows_are_character_attribute_pairs_padded_to_the_width() {
        let l = Layout::new(Framebuffer::VGA_TEXT).unwrap();
        assert_eq!((l.cols(), l.rows()), (80, 25));
        let mut mem = vec![0xEEu8; Framebuffer::VGA_TEXT.byte_len() as usize];
        l.draw_row(&mut mem, 2, "CPUs 4\u{e9}", Tone::Bad);
        let row = &mem[320..480];
        assert_eq!(&row[..14], &[b'C', 0x4F, b'P', 0x4F, b'U', 0x4F, b's', 0x4F, b' ', 0x4F, b'4', 0x4F, b'?', 0x4F]);
        assert!(row[14..].chunks(2).all(|c| c == [b' ', 0x4F]));
        assert!(mem[..320].iter().chain(&mem[480..]).all(|b| *b == 0xEE), "other rows untouched");
        l.draw_row(&mut mem, 25, "past the end", Tone::Normal);
        assert!(mem[480..].iter().all(|b| *b == 0xEE));
    }

    #[test]
    fn scale_and_cells_follow_the_resolution() {
        for (w, h, scale, cols, rows) in [(640, 480, 1, 80, 60), (800, 600, 1, 100, 75), (1024, 768, 2, 64, 48), (1280, 800, 2, 80, 50), (1920, 1080, 4, 60, 33)] {
            let l = Layout::new(fb(w, h, 32, RGB32)).unwrap();
            assert_eq!((l.scale, l.cols(), l.rows()), (scale, cols, rows), "{w}x{h}");
        }
        assert_eq!(Layout::new(fb(640, 480, 8, RGB32)), Err(Unsupported::Depth(8)));
        let mut short = fb(640, 480, 32, RGB32);
        short.pitch = 640;
        assert_eq!(Layout::new(short), Err(Unsupported::Geometry));
    }

    #[test]
    fn pixels_pack_into_the_reported_fields() {
        let l = Layout::new(fb(640, 480, 32, RGB32)).unwrap();
        assert_eq!(l.pixel((0x12, 0x34, 0x56)), 0x123456);
        let bgr = Layout::new(fb(640, 480, 32, FbKind::Rgb { red: (0, 8), green: (8, 8), blue: (16, 8) })).unwrap();
        assert_eq!(bgr.pixel((0x12, 0x34, 0x56)), 0x563412);
        let rgb565 = Layout::new(fb(640, 480, 16, FbKind::Rgb { red: (11, 5), green: (5, 6), blue: (0, 5) })).unwrap();
        assert_eq!(rgb565.pixel((0xFF, 0xFF, 0xFF)), 0xFFFF);
        assert_eq!(rgb565.pixel((0xFF, 0, 0)), 0xF800);
    }

    #[test]
    fn glyphs_are_drawn_left_bit_first_and_scaled() {
        let f = fb(1024, 768, 24, RGB32);
        let l = Layout::new(f).unwrap();
        assert_eq!(l.scale, 2);
        let mut mem = vec![0u8; f.byte_len() as usize];
        l.draw_row(&mut mem, 1, "L", Tone::Normal);
        let px = |x: usize, y: usize| {
            let at = y * f.pitch as usize + x * 3;
            [mem[at], mem[at + 1], mem[at + 2]]
        };
        let (fg, bg) = ([0xC0, 0xC0, 0xC0], [0, 0, 0]);
        // 'L' in font8x8: row 0 is 0x0F (the four leftmost pixels lit).
        assert_eq!(font8x8::legacy::BASIC_LEGACY[b'L' as usize][0], 0x0F);
        let top = 16;
        for x in 0..8 {
            for y in 0..2 {
                assert_eq!(px(x, top + y), fg, "pixel {x},{y}");
            }
        }
        for x in 8..16 {
            assert_eq!(px(x, top), bg, "pixel {x},0");
        }
        // The rest of the row is blank cells, and the row above untouched.
        assert!((16..1024).all(|x| px(x, top) == bg || x < 8));
        assert!(mem[..16 * f.pitch as usize].iter().all(|b| *b == 0));
    }
}
