//! Kernel page tables (x86_64 crate's `OffsetPageTable`, offset 0: the kernel
//! runs identity-mapped).
//!
//! - kernel text (with the boot code): read-only, executable;
//! - rodata (symbol table included): read-only, no-execute;
//! - data, bss and all other memory: read-write, no-execute;
//! - page 0 unmapped (null dereferences fault);
//! - the AP trampoline page: executable only while APs start.
//!
//! W^X holds in this mapping: nothing is both writable and executable, except
//! the trampoline page during SMP bring-up.

use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::{
    FrameAllocator as X86FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as F, PhysFrame,
    Size2MiB, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use super::frame::{FRAME_SIZE, FrameAllocator};

pub const HUGE: u64 = 2 * 1024 * 1024;
/// Page tables are allocated below 4 GiB (the AP trampoline loads CR3 in 32-bit mode).
const TABLE_LIMIT: u64 = 1 << 32;

unsafe extern "C" {
    static __kernel_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __kernel_end: u8;
}

/// The kernel image's boundaries, from the linker script.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    pub start: u64,
    pub text_end: u64,
    pub rodata_end: u64,
    pub end: u64,
}

pub fn image_layout() -> ImageLayout {
    ImageLayout {
        start: &raw const __kernel_start as u64,
        text_end: &raw const __text_end as u64,
        rodata_end: &raw const __rodata_end as u64,
        end: &raw const __kernel_end as u64,
    }
}

struct Frames<'a>(&'a mut FrameAllocator);

// SAFETY: frames come from the kernel frame allocator, which never hands one out twice.
unsafe impl X86FrameAllocator<Size4KiB> for Frames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let a = self.0.alloc_run(1, FRAME_SIZE, TABLE_LIMIT).ok()?;
        Some(PhysFrame::containing_address(PhysAddr::new(a)))
    }
}

static PML4: spin::Mutex<u64> = spin::Mutex::new(0);
static NX: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn nx() -> F {
    if NX.load(core::sync::atomic::Ordering::Relaxed) { F::NO_EXECUTE } else { F::empty() }
}

/// Flags for a 4 KiB page of the identity map.
fn small_page_flags(addr: u64, l: &ImageLayout, trampoline: u64) -> Option<F> {
    let rw = F::PRESENT | F::WRITABLE | F::GLOBAL;
    if addr == 0 {
        None
    } else if addr == trampoline {
        Some(F::PRESENT | F::WRITABLE)
    } else if addr >= l.start && addr < l.text_end {
        Some(F::PRESENT | F::GLOBAL)
    } else if addr >= l.text_end && addr < l.rodata_end {
        Some(F::PRESENT | F::GLOBAL | nx())
    } else {
        Some(rw | nx())
    }
}

/// Errors while building page tables.
#[derive(Debug)]
pub enum Error {
    OutOfMemory,
    Map(u64),
}

/// Build the kernel page tables covering `[0, max(4 GiB, max_phys))` and
/// switch to them. `trampoline` is the AP start-up page (left executable).
///
/// # Safety
/// Boot CPU only, before other CPUs run; the current (boot) tables must
/// identity-map every frame the allocator returns below 4 GiB.
pub unsafe fn init(frames: &mut FrameAllocator, max_phys: u64, trampoline: u64, nx_supported: bool) -> Result<(), Error> {
    NX.store(nx_supported, core::sync::atomic::Ordering::Relaxed);
    let layout = image_layout();
    let pml4_phys = frames.alloc_run(1, FRAME_SIZE, TABLE_LIMIT).map_err(|_| Error::OutOfMemory)?;
    // SAFETY: the frame is fresh, identity-mapped by the boot tables, and 4 KiB aligned.
    let pml4 = unsafe { &mut *(pml4_phys as *mut PageTable) };
    pml4.zero();
    // SAFETY: physical memory is identity-mapped (offset 0) for every table frame.
    let mut mapper = unsafe { OffsetPageTable::new(pml4, VirtAddr::new(0)) };
    let mut alloc = Frames(frames);
    let table_flags = F::PRESENT | F::WRITABLE;
    let top = max_phys.max(1 << 32).next_multiple_of(HUGE);
    let small_end = layout.end.next_multiple_of(HUGE);
    let mut addr = 0;
    while addr < top {
        if addr < small_end {
            for a in (addr..addr + HUGE).step_by(FRAME_SIZE as usize) {
                if let Some(flags) = small_page_flags(a, &layout, trampoline) {
                    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(a));
                    let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(a));
                    // SAFETY: identity mapping of physical memory; no other mapping aliases it.
                    unsafe { mapper.map_to_with_table_flags(page, frame, flags, table_flags, &mut alloc) }
                        .map_err(|_| Error::Map(a))?
                        .ignore();
                }
            }
        } else {
            let page = Page::<Size2MiB>::containing_address(VirtAddr::new(addr));
            let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(addr));
            let flags = F::PRESENT | F::WRITABLE | F::GLOBAL | nx();
            // SAFETY: identity mapping of physical memory (RAM or MMIO; memory types come from the MTRRs).
            unsafe { mapper.map_to_with_table_flags(page, frame, flags, table_flags, &mut alloc) }
                .map_err(|_| Error::Map(addr))?
                .ignore();
        }
        addr += HUGE;
    }
    *PML4.lock() = pml4_phys;
    // SAFETY: the new tables map the kernel image, its stacks and all memory
    // at the same addresses as the boot tables, so execution continues.
    unsafe { Cr3::write(PhysFrame::containing_address(PhysAddr::new(pml4_phys)), Cr3Flags::empty()) };
    Ok(())
}

/// Map `[start, end)` (page-aligned, identity-mapped) a second time at
/// `alias`, writable and no-execute: the patching engine writes kernel text
/// through it, so the main mapping of the text never becomes writable.
/// Boot CPU, before other CPUs run.
pub fn map_alias(start: u64, end: u64, alias: u64) -> Result<(), Error> {
    let pml4_phys = *PML4.lock();
    let mut frames = crate::mem::FRAMES.lock();
    let mut alloc = Frames(&mut frames);
    // SAFETY: PML4 is the live kernel table, identity-mapped; page-table edits
    // happen on the boot CPU before the APs start.
    let mut mapper = unsafe { OffsetPageTable::new(&mut *(pml4_phys as *mut PageTable), VirtAddr::new(0)) };
    let mut a = start;
    while a < end {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(alias + (a - start)));
        let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(a));
        // SAFETY: a new mapping in an unused range; the frame is kernel text,
        // which is never freed.
        unsafe { mapper.map_to_with_table_flags(page, frame, F::PRESENT | F::WRITABLE | nx(), F::PRESENT | F::WRITABLE, &mut alloc) }
            .map_err(|_| Error::Map(a))?
            .flush();
        a += FRAME_SIZE;
    }
    Ok(())
}

/// Identity-map device memory `[start, start + len)` that lies above the
/// initial map (64-bit PCI BARs, which UEFI firmware often places far above
/// RAM): 2 MiB pages, writable, no-execute, uncached. Pages already mapped
/// are left alone. New mappings need no TLB shootdown (nothing can cache a
/// translation for an address that was never mapped).
pub fn map_mmio(start: u64, len: u64) -> Result<(), Error> {
    let pml4_phys = PML4.lock();
    let mut frames = crate::mem::FRAMES.lock();
    let mut alloc = Frames(&mut frames);
    // SAFETY: PML4 is the live kernel table, identity-mapped; its lock (held)
    // serializes page-table edits.
    let mut mapper = unsafe { OffsetPageTable::new(&mut *(*pml4_phys as *mut PageTable), VirtAddr::new(0)) };
    let mut a = start & !(HUGE - 1);
    while a < start.saturating_add(len) {
        if mapper.translate_addr(VirtAddr::new(a)).is_none() {
            let page = Page::<Size2MiB>::containing_address(VirtAddr::new(a));
            let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(a));
            let flags = F::PRESENT | F::WRITABLE | F::NO_CACHE | F::WRITE_THROUGH | nx();
            // SAFETY: an identity mapping of device memory no other mapping covers.
            unsafe { mapper.map_to_with_table_flags(page, frame, flags, F::PRESENT | F::WRITABLE, &mut alloc) }
                .map_err(|_| Error::Map(a))?
                .flush();
        }
        a += HUGE;
    }
    Ok(())
}

/// Load our PAT on this CPU (every CPU, identically, before it touches a
/// write-combining mapping: SDM Vol. 3A §12.12.4). Caches are written back
/// around the change, as the SDM's procedure asks.
pub fn load_pat() {
    // SAFETY: IA32_PAT exists on every x86-64 CPU (CPUID.1:EDX.PAT is
    // architectural in long mode); wbinvd only writes caches back. No mapping
    // uses the entries whose type changes (1, 5, 7) before this returns.
    unsafe {
        core::arch::asm!("wbinvd", options(nostack));
        crate::arch::msr::wrmsr(crate::arch::msr::IA32_PAT, crate::arch::msr::PAT_LINUX);
        core::arch::asm!("wbinvd", options(nostack));
    }
}

/// Map `[start, start + len)` write-combining (PAT entry 1: PWT set, PCD
/// clear): the framebuffer, which the MTRRs make uncached (a PAT WC entry
/// over an MTRR UC range is WC: SDM Table 12-7). A 2 MiB page the range only
/// partly covers is split into 4 KiB pages first, so nothing outside the
/// range (another device's registers) becomes write-combining. Boot CPU,
/// before other CPUs run. Returns the 4 KiB pages now write-combining.
pub fn map_write_combining(start: u64, len: u64) -> Result<u64, Error> {
    use x86_64::structures::paging::mapper::{MappedFrame, TranslateResult};
    let (start, end) = (start & !(FRAME_SIZE - 1), start.saturating_add(len).next_multiple_of(FRAME_SIZE));
    let pml4_phys = PML4.lock();
    let mut frames = crate::mem::FRAMES.lock();
    let mut alloc = Frames(&mut frames);
    // SAFETY: PML4 is the live kernel table, identity-mapped; its lock (held)
    // serializes page-table edits; only identity mappings of device memory
    // change (their cache bits, or their page size with the same flags).
    let mut mapper = unsafe { OffsetPageTable::new(&mut *(*pml4_phys as *mut PageTable), VirtAddr::new(0)) };
    let mut a = start;
    let mut changed = 0;
    while a < end {
        let TranslateResult::Mapped { flags, frame, .. } = mapper.translate(VirtAddr::new(a)) else { return Err(Error::Map(a)) };
        let wc = (flags | F::WRITE_THROUGH) & !F::NO_CACHE;
        if let MappedFrame::Size2MiB(_) = frame {
            let base = a & !(HUGE - 1);
            if base >= start && base + HUGE <= end {
                // SAFETY: see above.
                unsafe { mapper.update_flags(Page::<Size2MiB>::containing_address(VirtAddr::new(base)), wc) }.map_err(|_| Error::Map(a))?.flush();
                changed += HUGE / FRAME_SIZE;
                a = base + HUGE;
                continue;
            }
            // Split: the same flags on 512 small pages (the PAT bit moves
            // from bit 12 to bit 7; ours is clear in both).
            let small = flags & !F::HUGE_PAGE;
            // SAFETY: see above; the 2 MiB mapping is replaced at once by 4 KiB
            // mappings of the same frames, nothing runs from or caches them.
            unsafe {
                mapper.unmap(Page::<Size2MiB>::containing_address(VirtAddr::new(base))).map_err(|_| Error::Map(base))?.1.flush();
                for p in (base..base + HUGE).step_by(FRAME_SIZE as usize) {
                    let f = if p >= start && p < end { (small | F::WRITE_THROUGH) & !F::NO_CACHE } else { small };
                    mapper
                        .map_to_with_table_flags(
                            Page::<Size4KiB>::containing_address(VirtAddr::new(p)),
                            PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(p)),
                            f,
                            F::PRESENT | F::WRITABLE,
                            &mut alloc,
                        )
                        .map_err(|_| Error::Map(p))?
                        .flush();
                }
            }
            let upto = (base + HUGE).min(end);
            changed += (upto - a) / FRAME_SIZE;
            a = upto;
        } else {
            // SAFETY: see above.
            unsafe { mapper.update_flags(Page::<Size4KiB>::containing_address(VirtAddr::new(a)), wc) }.map_err(|_| Error::Map(a))?.flush();
            changed += 1;
            a += FRAME_SIZE;
        }
    }
    Ok(changed)
}

/// The PAT index (0-7) of the page mapping `addr` (PWT, PCD, and the PAT bit).
pub fn pat_index(addr: u64) -> Option<u8> {
    let pml4_phys = *PML4.lock();
    // SAFETY: as in `seal_trampoline`; read-only walk.
    let mapper = unsafe { OffsetPageTable::new(&mut *(pml4_phys as *mut PageTable), VirtAddr::new(0)) };
    match mapper.translate(VirtAddr::new(addr)) {
        x86_64::structures::paging::mapper::TranslateResult::Mapped { flags, frame, .. } => {
            // The PAT bit is bit 7 in a 4 KiB entry, bit 12 in a 2 MiB one.
            let pat = match frame {
                x86_64::structures::paging::mapper::MappedFrame::Size4KiB(_) => flags.contains(F::HUGE_PAGE),
                _ => flags.bits() & (1 << 12) != 0,
            };
            Some((pat as u8) << 2 | (flags.contains(F::NO_CACHE) as u8) << 1 | flags.contains(F::WRITE_THROUGH) as u8)
        }
        _ => None,
    }
}

/// Physical address of the kernel PML4 (for APs' CR3).
pub fn pml4() -> u64 {
    *PML4.lock()
}

/// Remove execute permission from the trampoline page (after SMP bring-up).
/// The caller flushes other CPUs' TLBs.
pub fn seal_trampoline(trampoline: u64) {
    let pml4_phys = *PML4.lock();
    // SAFETY: PML4 is the live kernel table, identity-mapped; we hold the lock
    // that serializes page-table edits.
    let mut mapper = unsafe { OffsetPageTable::new(&mut *(pml4_phys as *mut PageTable), VirtAddr::new(0)) };
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(trampoline));
    // SAFETY: only the flags of an existing identity mapping change (RW, NX).
    if let Ok(flush) = unsafe { mapper.update_flags(page, F::PRESENT | F::WRITABLE | nx()) } {
        flush.flush();
    }
}

/// Whether `addr` is mapped, and writable / executable.
pub fn query(addr: u64) -> Option<(bool, bool)> {
    let pml4_phys = *PML4.lock();
    // SAFETY: as in `seal_trampoline`; read-only walk.
    let mapper = unsafe { OffsetPageTable::new(&mut *(pml4_phys as *mut PageTable), VirtAddr::new(0)) };
    match mapper.translate(VirtAddr::new(addr)) {
        x86_64::structures::paging::mapper::TranslateResult::Mapped { flags, .. } => {
            Some((flags.contains(F::WRITABLE), !flags.contains(F::NO_EXECUTE)))
        }
        _ => None,
    }
}
