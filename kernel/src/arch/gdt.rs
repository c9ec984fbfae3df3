//! Per-CPU GDT and TSS (with the IST stacks) through the x86_64 crate.
//! Selectors match the boot GDT: code 0x08, data 0x10, TSS 0x18.

use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::Descriptor;
use x86_64::VirtAddr;

use super::percpu::{PerCpu, Stacks};

/// Fill `c`'s TSS with its IST stacks and build its GDT, then load both on
/// the calling CPU.
///
/// # Safety
/// Must run on the CPU that owns `c`, once, before it takes any interrupt
/// that uses an IST.
pub unsafe fn load(c: &'static PerCpu, stacks: &Stacks) {
    // SAFETY: only this CPU touches its TSS and GDT, and neither is loaded yet
    // (caller's contract), so no hardware reads them while we write.
    let (tss, gdt) = unsafe { (&mut *c.tss.get(), &mut *c.gdt.get()) };
    for (i, s) in stacks.ist.iter().enumerate() {
        tss.interrupt_stack_table[i] = VirtAddr::new(s.top);
    }
    tss.privilege_stack_table[0] = VirtAddr::new(stacks.kernel.top);
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    // SAFETY: the TSS lives in a 'static PerCpu and is never moved.
    let tss_sel = gdt.append(Descriptor::tss_segment(unsafe { &*c.tss.get() }));
    // SAFETY: the GDT is 'static and complete; the selectors below index it;
    // loading the TSS marks its descriptor busy, which happens once.
    unsafe {
        gdt.load_unsafe();
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        load_tss(tss_sel);
    }
}
