//! The 8254 PIT, channel 2 (gated through port 0x61), as a calibration
//! reference of last resort: chipsets can gate it off, and then its ports
//! read as all ones.

use x86_64::instructions::port::Port;

/// PIT input clock (8254 datasheet; PC/AT: 14.31818 MHz / 12).
pub const PIT_HZ: u64 = 1_193_182;
/// Mode/command register.
const PIT_COMMAND: u16 = 0x43;
/// Channel 2 data port.
const PIT_CH2: u16 = 0x42;
/// NMI status and control register (PC/AT): bit 0 gate of channel 2, bit 1
/// speaker data, bit 5 channel 2 output.
const PORT_61: u16 = 0x61;
const GATE2: u8 = 1 << 0;
const SPEAKER: u8 = 1 << 1;
const OUT2: u8 = 1 << 5;
/// Command: channel 2, access lobyte/hibyte, mode 0 (interrupt on terminal count), binary.
const CH2_MODE0: u8 = 0b1011_0000;

/// Count TSC ticks while the PIT counts `ms` milliseconds (at most 54),
/// with the longest gap between two polls (a descheduled virtual CPU shows
/// as one). Gives up when the TSC has advanced `tsc_budget` ticks: the PIT is
/// gated off, or absent.
pub fn tsc_ticks_over(ms: u64, tsc_budget: u64) -> Result<(u64, u64), &'static str> {
    let latch = (PIT_HZ * ms.min(54) / 1000) as u16;
    let rdtsc = crate::arch::cpu::rdtsc;
    // SAFETY: PC/AT PIT and port 0x61; only the speaker/timer-2 bits change.
    unsafe {
        let mut p61 = Port::<u8>::new(PORT_61);
        let v = p61.read();
        p61.write((v & !SPEAKER) | GATE2);
        Port::<u8>::new(PIT_COMMAND).write(CH2_MODE0);
        let mut ch2 = Port::<u8>::new(PIT_CH2);
        ch2.write(latch as u8);
        ch2.write((latch >> 8) as u8);
        let t0 = rdtsc();
        // Mode 0 drives OUT low once programmed: high now means nothing answers.
        if p61.read() & OUT2 != 0 {
            return Err("absent (channel 2's output is high right after programming)");
        }
        let (mut last, mut max_gap) = (t0, 0);
        loop {
            let out = p61.read() & OUT2 != 0;
            let t = rdtsc();
            max_gap = max_gap.max(t - last);
            last = t;
            if out {
                return Ok((t - t0, max_gap));
            }
            if t - t0 > tsc_budget {
                return Err("channel 2 never reached its terminal count (gated off?)");
            }
        }
    }
}
