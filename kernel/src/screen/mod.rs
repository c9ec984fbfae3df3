//! The screen console for machines without a serial port: text rows drawn on
//! the framebuffer the loader left (multiboot2 GOP framebuffer under UEFI) or
//! the VGA text buffer (BIOS).
//!
//! - `render.rs`: pure layout and drawing into framebuffer bytes (8x8 glyphs
//!   from `font8x8`, scaled), host-tested;
//! - `device.rs`: the one screen of this machine, its shadow rows, drawing only
//!   what changed.

pub mod render;

#[cfg(kernel_target)]
pub mod device;
