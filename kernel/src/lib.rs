//! Our small x86_64 SMP unikernel framework.
//!
//! Design principles (read these before changing anything):
//! - Pure logic (parsers, tables, allocators, formats) lives in plain modules
//!   that build and are tested on the host with `cargo test`. Hardware code is
//!   compiled only for the bare-metal image (`cfg(kernel_target)`, set by
//!   xtask together with every other kernel-only flag).
//! - Every interrupt and exception enters on an IST stack of its own, so no
//!   entry can clobber the red zone of interrupted code.
//! - Code reachable from NMI context takes no lock and does not allocate.
//! - Every `unsafe` block states its contract in a `// SAFETY:` comment.
//!
//! Map of mechanisms (folder/file):
//! - `boot/`: multiboot headers and 32->64-bit entry (`entry.rs`), boot
//!   information (`info.rs`, multiboot1 in `mb1.rs`), kernel command line (`cmdline.rs`: it builds
//!   each subsystem's configuration), the boot phases the application composes (`main.rs`).
//! - `arch/`: CPU features and control registers (`cpu.rs`), MSR numbers
//!   (`msr.rs`), GDT/TSS (`gdt.rs`), IDT and entry stubs (`idt.rs`), trap
//!   dispatch and the register dump (`trap.rs`), per-CPU data (`percpu.rs`).
//! - `mem/`: frame allocator (`frame.rs`) and the machine's instance (`FRAMES`),
//!   page tables (`paging.rs`), heap (`heap.rs`).
//! - `acpi/`: MADT/HPET/MCFG walking (`machine.rs`), recorded tables (`recorded.rs`).
//! - `apic/`: local APIC in xAPIC and x2APIC modes (`lapic.rs`), legacy PIC (`pic.rs`).
//! - `time/`: the choice of time reference and its arithmetic (`reference.rs`, pure),
//!   the references (`hpet.rs`, `pm_timer.rs`, `pit.rs`), measuring them (`calibrate.rs`),
//!   the monotonic clock (`clock.rs`).
//! - `smp/`: AP start-up trampoline (`trampoline.rs`), INIT-SIPI-SIPI (`boot.rs`),
//!   cross-CPU calls (`xcall.rs`).
//! - `rt.rs`: what the prebuilt `core` needs from us (memcpy & co.) and the panic handler.
//! - `patch/`: live text patching, one file per room (see `patch/mod.rs`); its
//!   configuration (`config.rs`).
//! - `nmi/`: the NMI watchdog (`watchdog.rs`), who sends a round of watchdog IPIs
//!   (`round.rs`), which NMIs are the watchdog's own (`ledger.rs`), when a CPU that does
//!   not answer is shown (`stall.rs`) and its NMI backtrace (`cpu_backtrace.rs`), the
//!   lockup selftest (`lockup_selftest.rs`), PMU facts (`pmu.rs`), the NMI-safe log
//!   (`log.rs`), its configuration (`config.rs`).
//! - `events.rs`: the sinks trace events go to (the application installs them).
//! - `debug/`: symbol table (`symbols.rs`), call traces (`backtrace.rs`), logging (`log.rs`).
//! - `drivers/`: one folder per device with pure and hardware parts: the xHCI USB host
//!   controller (`xhci/`: `spec.rs` and `desc.rs` pure, `controller.rs`), USB CDC Ethernet
//!   on it (`usb_net/`), the Intel gigabit family (`intel_gbe/`: `e1000.rs`, and the PCH
//!   parts' PHY bring-up `pch.rs`, pure), virtio-net (`virtio/`: `net.rs`, `legacy.rs`); and
//!   COM1 (`serial.rs`), QEMU debug exit (`qemu.rs`), the RTC's CMOS registers (`rtc.rs`),
//!   PCI (`pci.rs`), DMA memory (`dma.rs`), the NIC as one smoltcp device (`nic.rs`,
//!   `ethernet.rs`).
//! - `screen/`: the screen console: text rows on the loader's framebuffer or
//!   VGA text (`render.rs`, pure), the machine's screen (`device.rs`).

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod acpi;
pub mod boot;
pub mod debug;
pub mod drivers;
pub mod mem;
pub mod nmi;
pub mod patch;
pub mod screen;
pub mod time;

#[cfg(kernel_target)]
pub mod apic;
#[cfg(kernel_target)]
pub mod arch;
#[cfg(kernel_target)]
pub mod events;
#[cfg(kernel_target)]
pub mod smp;
#[cfg(kernel_target)]
pub mod rt;
