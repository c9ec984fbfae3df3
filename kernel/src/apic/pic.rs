//! The legacy 8259A PIC pair: remapped away from the exception vectors and
//! fully masked (the kernel uses the local APIC only).

use x86_64::instructions::port::Port;

const PIC1_CMD: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_CMD: u16 = 0xA0;
const PIC2_DATA: u16 = 0xA1;
/// ICW1: initialization, ICW4 needed (8259A datasheet).
const ICW1_INIT_ICW4: u8 = 0x11;
/// ICW4: 8086 mode.
const ICW4_8086: u8 = 0x01;

pub fn disable() {
    // SAFETY: the standard 8259A initialization sequence on its PC/AT ports;
    // afterwards every line is masked, so the PIC raises nothing.
    unsafe {
        Port::<u8>::new(PIC1_CMD).write(ICW1_INIT_ICW4);
        Port::<u8>::new(PIC2_CMD).write(ICW1_INIT_ICW4);
        Port::<u8>::new(PIC1_DATA).write(0xE0); // vectors 0xE0..0xE7 (never used)
        Port::<u8>::new(PIC2_DATA).write(0xE8);
        Port::<u8>::new(PIC1_DATA).write(4); // slave on IR2
        Port::<u8>::new(PIC2_DATA).write(2);
        Port::<u8>::new(PIC1_DATA).write(ICW4_8086);
        Port::<u8>::new(PIC2_DATA).write(ICW4_8086);
        Port::<u8>::new(PIC1_DATA).write(0xFF);
        Port::<u8>::new(PIC2_DATA).write(0xFF);
    }
}
