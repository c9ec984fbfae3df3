//! The screen console: VGA text and the UEFI framebuffer, read back through QMP; crash reports without a serial port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::harness::*;
use crate::qemu::{self, Boot, Spec};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ScreenBoot {
    /// `qemu -kernel` (multiboot1): the BIOS's VGA text buffer.
    Kernel,
    /// GRUB on SeaBIOS: the kernel asks for no framebuffer, so GRUB leaves VGA text and reports it.
    GrubBios,
    /// GRUB on OVMF: multiboot2 reports the GOP framebuffer.
    GrubUefi,
}

/// Rows of the screen console that do not change once the network is up:
/// (row, text, tone), as `appliance::status_screen` lays them out, for the
/// APIC mode the guest's console reported (`apic: X2Apic mode` or `XApic`).
pub(super) fn screen_rows(log: &str) -> std::result::Result<[(u32, String, kernel::screen::render::Tone); 3], String> {
    let apic = if log.contains("apic: X2Apic mode") {
        "x2APIC"
    } else if log.contains("apic: XApic mode") {
        "xAPIC"
    } else {
        return Err("no `apic: ... mode` line on the console".into());
    };
    Ok([
        (2, format!("CPUs: 4 online, {apic}"), kernel::screen::render::Tone::Normal),
        (3, "watchdog: ipi-broadcast, 1000 Hz".into(), kernel::screen::render::Tone::Normal),
        (4, "URL: http://10.0.2.15/status".into(), kernel::screen::render::Tone::Good),
    ])
}

/// Compare the VGA text buffer's rows with `rows`.
pub(super) fn screen_text_matches(mem: &[u8], rows: &[(u32, String, kernel::screen::render::Tone)]) -> std::result::Result<(), String> {
    for (row, text, tone) in rows {
        let (row, tone) = (*row, *tone);
        let line = &mem[row as usize * 160..][..160];
        let chars: String = line.chunks(2).map(|c| c[0] as char).collect();
        if chars.trim_end() != text || line.chunks(2).any(|c| c[1] != tone.vga_attr()) {
            return Err(format!("row {row} shows {:?}, expected {text:?}", chars.trim_end()));
        }
    }
    Ok(())
}

/// Compare a screendump with `rows` drawn by our own renderer: every pixel
/// of those rows must match.
pub(super) fn screen_pixels_match(w: usize, h: usize, rgb: &[u8], rows: &[(u32, String, kernel::screen::render::Tone)]) -> std::result::Result<(), String> {
    use kernel::boot::info::{FbKind, Framebuffer};
    let fb = Framebuffer {
        addr: 0,
        pitch: w as u32 * 4,
        width: w as u32,
        height: h as u32,
        bpp: 32,
        kind: FbKind::Rgb { red: (16, 8), green: (8, 8), blue: (0, 8) },
    };
    let layout = kernel::screen::render::Layout::new(fb).map_err(|e| format!("{w}x{h}: {e:?}"))?;
    let cell = (kernel::screen::render::GLYPH * layout.scale) as usize;
    let mut mem = vec![0u8; fb.byte_len() as usize];
    for (row, text, tone) in rows {
        let row = *row;
        if (row as usize + 1) * cell > h {
            return Err(format!("row {row} is below the {w}x{h} screen"));
        }
        layout.draw_row(&mut mem, row, text, *tone);
        let mut wrong = 0;
        for y in row as usize * cell..(row as usize + 1) * cell {
            for x in 0..w {
                let m = &mem[(y * w + x) * 4..][..3];
                let want = [m[2], m[1], m[0]];
                if rgb[(y * w + x) * 3..][..3] != want {
                    wrong += 1;
                }
            }
        }
        if wrong > 0 {
            return Err(format!("row {row} ({text:?}): {wrong} pixels differ from our rendering"));
        }
    }
    Ok(())
}

/// Boot with the patching loop and the network, then read the screen through
/// QMP until it shows [`screen_rows`] (or a minute passes).
pub(super) fn screen_case(elf: &Path, boot: ScreenBoot, log_path: &Path) -> std::result::Result<String, String> {
    let scratch = qemu::TempDir::new("screen").map_err(|e| e.to_string())?;
    let append = "patch=on patch_interval_us=1000";
    let mut spec = match boot {
        ScreenBoot::Kernel => kernel_boot(elf, append, "4"),
        ScreenBoot::GrubBios | ScreenBoot::GrubUefi => {
            // One image serves both firmwares.
            static ISO: std::sync::OnceLock<std::result::Result<PathBuf, String>> = std::sync::OnceLock::new();
            let iso = ISO
                .get_or_init(|| {
                    let iso = crate::build::out_dir().join("screen-test.iso");
                    crate::image::make_iso(elf, append, &iso).map(|()| iso).map_err(|e| e.to_string())
                })
                .clone()?;
            let mut s = Spec::new(Boot::Cdrom(iso));
            if boot == ScreenBoot::GrubUefi {
                s.firmware = qemu::Firmware::Uefi;
            }
            s
        }
    };
    let port = qemu::free_port().map_err(|e| e.to_string())?;
    spec.net = Some((port, "virtio-net-pci".into()));
    let qmp_path = scratch.0.join("qmp.sock");
    spec.qmp = Some(qmp_path.clone());
    let mut run = qemu::spawn(&spec, log_path, false).map_err(|e| e.to_string())?;
    let mut log = String::new();
    let found = run.wait_line(Duration::from_secs(120), &mut log, |l| l.contains("screen: ")).ok_or("no `screen:` line on the console")?;
    let how = found.split("screen: ").nth(1).unwrap_or("").to_string();
    let want = if boot == ScreenBoot::GrubUefi { "framebuffer " } else { "VGA text 80x25 at 0xb8000" };
    if !how.starts_with(want) {
        return Err(format!("the kernel found `{how}`, expected `{want}...`"));
    }
    if boot == ScreenBoot::GrubUefi && !how.ends_with("write-combining (PAT entry 1)") {
        return Err(format!("the framebuffer is not mapped write-combining: `{how}`"));
    }
    if !log.contains(" mode, BSP APIC id") {
        run.wait_line(Duration::from_secs(60), &mut log, |l| l.contains(" mode, BSP APIC id")).ok_or("no `apic: ... mode` line on the console")?;
    }
    let rows = screen_rows(&log)?;
    let mut qmp = qemu::Qmp::connect(&qmp_path, Duration::from_secs(10))?;
    let deadline = run.started.elapsed() + Duration::from_secs(60);
    loop {
        let shown = if boot == ScreenBoot::GrubUefi {
            let (w, h, rgb) = qmp.screendump(&scratch.0)?;
            screen_pixels_match(w, h, &rgb, &rows)
        } else {
            screen_text_matches(&qmp.read_phys(0xB8000, 4000)?, &rows)
        };
        match shown {
            Ok(()) => return Ok(how),
            Err(e) if run.started.elapsed() >= deadline => return Err(e),
            Err(_) => {
                // Let the guest run on for a second (reading its console) before looking again.
                let until = run.started.elapsed() + Duration::from_secs(1);
                if run.wait_line(until, &mut log, |l| l.contains("Kernel panic") || l.starts_with("FATAL")).is_some() {
                    return Err("the guest crashed".into());
                }
            }
        }
    }
}

/// Without a serial port, a crash is read off the screen: (test, firmware
/// and screen, command line, a line the screen must show exactly).
pub(super) const NO_SERIAL_CASES: [(&str, ScreenBoot, &str, &str); 3] = [
    ("screen_no_serial_panic_vga", ScreenBoot::Kernel, "selftest=panic", "Kernel panic on CPU 0: panicked at kernel/src/boot/main.rs:"),
    ("screen_no_serial_fatal_vga", ScreenBoot::Kernel, "selftest=exception", "FATAL: unhandled exception: #UD invalid opcode (vector 6) on CPU 0"),
    ("screen_no_serial_fatal_uefi_framebuffer", ScreenBoot::GrubUefi, "selftest=exception", "FATAL: unhandled exception: #UD invalid opcode (vector 6) on CPU 0"),
];

/// Boot with `-serial none`, crash on purpose, and find `want` on the screen
/// through QMP: in the VGA text buffer (any row starting with it), or in a
/// framebuffer screendump (a row whose pixels are exactly our renderer's
/// drawing of `want`, in the crash report's colour).
pub(super) fn no_serial_case(elf: &Path, boot: ScreenBoot, append: &str, want: &str, log_path: &Path) -> std::result::Result<String, String> {
    let scratch = qemu::TempDir::new("noserial").map_err(|e| e.to_string())?;
    let mut spec = match boot {
        ScreenBoot::Kernel => Spec::new(Boot::Kernel { elf: elf.to_path_buf(), append: format!("patch=off {append}") }),
        _ => {
            let iso = crate::build::out_dir().join(format!("noserial-{}.iso", append.replace(['=', ' '], "_")));
            crate::image::make_iso(elf, &format!("patch=off {append}"), &iso).map_err(|e| e.to_string())?;
            let mut s = Spec::new(Boot::Cdrom(iso));
            s.firmware = qemu::Firmware::Uefi;
            s
        }
    };
    spec.smp = "2".into();
    spec.serial = false;
    let qmp_path = scratch.0.join("qmp.sock");
    spec.qmp = Some(qmp_path.clone());
    let mut run = qemu::spawn(&spec, log_path, false).map_err(|e| e.to_string())?;
    let mut qmp = qemu::Qmp::connect(&qmp_path, Duration::from_secs(10))?;
    let mut log = String::new();
    let deadline = Duration::from_secs(if boot == ScreenBoot::GrubUefi { 150 } else { 60 });
    loop {
        let found = if boot == ScreenBoot::GrubUefi {
            let (w, h, rgb) = qmp.screendump(&scratch.0)?;
            (0..64).find(|row| screen_pixels_match(w, h, &rgb, &[(*row, want.to_string(), kernel::screen::render::Tone::Bad)]).is_ok()).map(|r| format!("row {r}"))
        } else {
            let mem = qmp.read_phys(0xB8000, 4000)?;
            (0..25u32).find(|row| {
                let line: String = mem[*row as usize * 160..][..160].chunks(2).map(|c| c[0] as char).collect();
                line.starts_with(want)
            }).map(|r| format!("row {r}"))
        };
        if let Some(r) = found {
            return Ok(format!("`{want}` on {r}"));
        }
        if run.started.elapsed() >= deadline {
            return Err(format!("the screen never showed `{want}` within {} s", deadline.as_secs()));
        }
        // Nothing to read on a serial port: look again in a second.
        let _ = run.wait_line(run.started.elapsed() + Duration::from_secs(1), &mut log, |_| false);
    }
}
