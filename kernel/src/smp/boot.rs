//! Starting application processors: INIT-SIPI-SIPI (SDM Vol. 3A §9.4.4.1 and
//! the MultiProcessor Specification 1.4, Appendix B.4), one AP at a time,
//! each with its own stacks and per-CPU data. An AP that does not come up in
//! time is reported by APIC id and boot goes on without it.

use core::sync::atomic::{AtomicU64, Ordering};

use heapless::Vec;

use super::trampoline::{self, PARAMS_OFFSET, Params};
use crate::apic::lapic::{self, Dest, icr};
use crate::arch::percpu::{self, PerCpu, Stack, Stacks, ist};
use crate::time::clock;

/// Bytes of each CPU's kernel stack.
pub const KERNEL_STACK: usize = 64 * 1024;
/// Bytes of each IST stack.
pub const IST_STACK: usize = 32 * 1024;

/// INIT to first SIPI (MP spec B.4: 10 ms).
const INIT_DELAY_NS: u64 = 10_000_000;
/// SIPI to second SIPI (MP spec B.4: 200 us).
const SIPI_DELAY_NS: u64 = 200_000;

/// Result of starting the APs.
#[derive(Debug, Default)]
pub struct Report {
    /// APIC ids online, BSP first.
    pub online: Vec<u32, { percpu::MAX_CPUS }>,
    /// APIC ids that did not answer within the timeout.
    pub failed: Vec<u32, { percpu::MAX_CPUS }>,
    /// Enabled processors beyond `max_cpus` or `MAX_CPUS`, not started.
    pub skipped: usize,
}

fn alloc_stack(bytes: usize) -> Stack {
    let layout = core::alloc::Layout::from_size_align(bytes, 4096).expect("stack layout");
    // SAFETY: non-zero size; the memory is never freed (a CPU's stacks live forever).
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    assert!(!p.is_null(), "out of memory for a CPU stack");
    Stack { bottom: p as u64, top: p as u64 + bytes as u64 }
}

/// Allocate every stack one CPU needs.
pub fn alloc_stacks(kernel: Option<Stack>) -> Stacks {
    let mut s = Stacks { kernel: kernel.unwrap_or_else(|| alloc_stack(KERNEL_STACK)), ..Default::default() };
    for i in 0..ist::COUNT {
        s.ist[i] = alloc_stack(IST_STACK);
    }
    s.nmi_breakpoint = alloc_stack(IST_STACK);
    s.nmi_exception = alloc_stack(IST_STACK);
    s
}

/// The per-CPU bring-up every CPU runs on itself (BSP included): GS base,
/// GDT/TSS with IST stacks, IDT.
///
/// # Safety
/// `c` must be reserved for the calling CPU, with its stacks recorded, and
/// this must run once per CPU.
pub unsafe fn init_this_cpu(c: &'static PerCpu) {
    // SAFETY: forwarded to the caller.
    unsafe {
        percpu::install(c);
        crate::arch::gdt::load(c, &c.stacks());
    }
    crate::arch::idt::load();
    crate::mem::paging::load_pat();
}

/// What an AP runs once it is in long mode on its own stack.
static AP_MAIN: AtomicU64 = AtomicU64::new(0);

extern "C" fn ap_entry(cpu: u64) -> ! {
    // SAFETY: `cpu` is the PerCpu the BSP reserved for this AP (start_all).
    let c: &'static PerCpu = unsafe { &*(cpu as *const PerCpu) };
    // SAFETY: first code on this AP; its PerCpu and stacks are ready.
    unsafe { init_this_cpu(c) };
    let main = AP_MAIN.load(Ordering::Acquire);
    // SAFETY: only `start_all` stores here, from an `fn(&'static PerCpu) -> !`.
    let main: fn(&'static PerCpu) -> ! = unsafe { core::mem::transmute::<u64, fn(&'static PerCpu) -> !>(main) };
    main(c)
}

fn params(page: u64) -> *mut Params {
    (page + PARAMS_OFFSET) as *mut Params
}

/// Start every enabled processor in `apic_ids` (the BSP's own id is skipped).
/// Each AP runs `ap_main` after its per-CPU setup; `ap_main` must set
/// `online` on its PerCpu. `timeout_ms` bounds the wait for each AP.
pub fn start_all(apic_ids: &[u32], max_cpus: usize, timeout_ms: u32, ap_main: fn(&'static PerCpu) -> !) -> Report {
    let mut report = Report::default();
    let bsp = percpu::this_cpu();
    let _ = report.online.push(bsp.apic_id());
    AP_MAIN.store(ap_main as usize as u64, Ordering::Release);
    let Some(page) = trampoline::addr() else {
        log::error!("smp: no page for the AP trampoline (see the mem: line): only the boot CPU runs");
        report.skipped = apic_ids.len().saturating_sub(1);
        return report;
    };

    let code = trampoline::code();
    assert!(code.len() as u64 <= PARAMS_OFFSET, "trampoline overlaps its parameters");
    // SAFETY: the trampoline page is reserved in the frame allocator, mapped
    // writable (and executable) by `mem::paging`, and no AP runs from it yet.
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), page as *mut u8, code.len()) };

    use x86_64::registers::control::{Cr3, Cr4};
    // SAFETY: reading EFER has no side effects.
    let efer = unsafe { crate::arch::msr::rdmsr(crate::arch::msr::IA32_EFER) } as u32;
    let base = Params {
        cr3: Cr3::read_raw().0.start_address().as_u64() as u32,
        cr4: Cr4::read_raw() as u32,
        efer,
        ..Default::default()
    };

    for &apic_id in apic_ids.iter().filter(|&&id| id != bsp.apic_id()) {
        if report.online.len() + report.failed.len() >= max_cpus {
            report.skipped += 1;
            continue;
        }
        if !lapic::addressable(apic_id) {
            // An 8-bit destination cannot name it: truncating would send INIT
            // to another CPU (id 256 is the BSP's 0).
            log::error!("smp: CPU with APIC id {apic_id} cannot be addressed in xAPIC mode (ids above {}): not started", lapic::XAPIC_MAX_ID);
            let _ = report.failed.push(apic_id);
            continue;
        }
        let Some(c) = percpu::reserve(apic_id) else {
            report.skipped += 1;
            continue;
        };
        let stacks = alloc_stacks(None);
        // SAFETY: the CPU that will own `c` is not running yet.
        unsafe { percpu::set_stacks(c, stacks) };
        let p = Params { stack_top: stacks.kernel.top, entry: ap_entry as *const () as u64, arg: c as *const PerCpu as u64, ..base };
        // SAFETY: the parameter block lies in the trampoline page, which only the
        // AP being started reads, and only after the SIPI below.
        unsafe { params(page).write_volatile(p) };
        core::sync::atomic::fence(Ordering::SeqCst);

        lapic::send_ipi(Dest::Apic(apic_id), icr::DELIVERY_INIT | icr::LEVEL_ASSERT);
        clock::delay_ns(INIT_DELAY_NS);
        for _ in 0..2 {
            if alive(page) {
                break;
            }
            lapic::send_ipi(Dest::Apic(apic_id), icr::DELIVERY_STARTUP | trampoline::sipi_vector(page) as u64);
            clock::delay_ns(SIPI_DELAY_NS);
        }
        let deadline = clock::deadline_after_ns(timeout_ms as u64 * 1_000_000);
        while !c.online.load(Ordering::Acquire) && crate::arch::cpu::rdtsc() < deadline {
            core::hint::spin_loop();
        }
        if c.online.load(Ordering::Acquire) {
            let _ = report.online.push(apic_id);
        } else {
            log::error!(
                "smp: CPU with APIC id {apic_id} did not come up within {timeout_ms} ms (reached long mode: {})",
                if alive(page) { "yes" } else { "no" }
            );
            // Park it again (INIT puts it back into wait-for-SIPI) so a late AP
            // cannot pick up the next AP's parameters. Its PerCpu stays
            // reserved and offline.
            lapic::send_ipi(Dest::Apic(apic_id), icr::DELIVERY_INIT | icr::LEVEL_ASSERT);
            let _ = report.failed.push(apic_id);
        }
    }
    report
}

fn alive(page: u64) -> bool {
    // SAFETY: `alive` is a u32 in the parameter block that the AP writes once.
    unsafe { core::ptr::addr_of!((*params(page)).alive).read_volatile() != 0 }
}
