//! COM1 (16550 UART at I/O port 0x3F8), 115200 8N1, polled.

use x86_64::instructions::port::Port;

/// COM1 base I/O port (PC/AT convention).
const COM1: u16 = 0x3F8;
// 16550 register offsets (PC16550D datasheet, Table II).
const DATA: u16 = 0;
const INT_ENABLE: u16 = 1;
const FIFO_CTRL: u16 = 2;
const LINE_CTRL: u16 = 3;
const MODEM_CTRL: u16 = 4;
const LINE_STATUS: u16 = 5;
/// LSR bit 5: transmit holding register empty.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// LCR bit 7: divisor latch access.
const LCR_DLAB: u8 = 1 << 7;
/// 115200 baud = 1.8432 MHz / 16 / divisor 1.
const DIVISOR: u16 = 1;

fn out(reg: u16, v: u8) {
    // SAFETY: COM1 registers; writing them only affects the UART.
    unsafe { Port::new(COM1 + reg).write(v) };
}

fn inp(reg: u16) -> u8 {
    // SAFETY: reading COM1 registers has no side effects besides the UART's own.
    unsafe { Port::new(COM1 + reg).read() }
}

pub fn init() {
    out(INT_ENABLE, 0);
    out(LINE_CTRL, LCR_DLAB);
    out(DATA, DIVISOR as u8);
    out(INT_ENABLE, (DIVISOR >> 8) as u8);
    out(LINE_CTRL, 0x03); // 8 data bits, no parity, 1 stop bit
    out(FIFO_CTRL, 0xC7); // enable and clear FIFOs, 14-byte threshold
    out(MODEM_CTRL, 0x03); // DTR, RTS
}

fn write_byte(b: u8) {
    // Bounded wait: a missing UART must not hang the kernel.
    for _ in 0..100_000 {
        if inp(LINE_STATUS) & LSR_THR_EMPTY != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    out(DATA, b);
}

pub fn write_str(s: &str) {
    for b in s.bytes() {
        if b == b'\n' {
            write_byte(b'\r');
        }
        write_byte(b);
    }
}
