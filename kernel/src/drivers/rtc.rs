//! The MC146818 real-time clock's CMOS registers, as far as the interrupt
//! selftest uses them (its periodic interrupt, routed through the IO-APIC).

/// The MC146818 RTC (PC/AT CMOS): index port, data port, registers A
/// (rate select, bits 0-3), B (bit 6: periodic interrupt enable) and C
/// (interrupt flags; reading clears them and re-arms the IRQ line).
pub const CMOS_INDEX: u16 = 0x70;
pub const CMOS_DATA: u16 = 0x71;
pub const RTC_REG_A: u8 = 0x0A;
pub const RTC_REG_B: u8 = 0x0B;
pub const RTC_REG_C: u8 = 0x0C;
pub const RTC_PIE: u8 = 1 << 6;
/// ISA IRQ of the RTC.
pub const RTC_ISA_IRQ: u8 = 8;

pub fn cmos(reg: u8, write: Option<u8>) -> u8 {
    use x86_64::instructions::port::Port;
    // SAFETY: the PC/AT CMOS index/data pair; bit 7 of the index (NMI
    // disable) stays clear. Only `selftest=irq_hygiene`, on one CPU, touches it.
    unsafe {
        Port::<u8>::new(CMOS_INDEX).write(reg);
        match write {
            Some(v) => {
                Port::<u8>::new(CMOS_DATA).write(v);
                v
            }
            None => Port::<u8>::new(CMOS_DATA).read(),
        }
    }
}

