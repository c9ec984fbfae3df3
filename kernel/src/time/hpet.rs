//! The HPET main counter as a calibration reference (IA-PC HPET
//! specification 1.0a, §2.3 "Register Descriptions"). Only the main counter
//! is used: every comparator's interrupt is switched off and legacy
//! replacement routing left off, so the HPET never interrupts.

use super::reference::hpet_hz;

/// Register offsets and bits (HPET spec 1.0a, §2.3.1 Table 2 and §2.3.4-2.3.8).
mod reg {
    /// General Capabilities and ID: [63:32] COUNTER_CLK_PERIOD (fs),
    /// [13] COUNT_SIZE_CAP (64-bit counter), [12:8] NUM_TIM_CAP (last timer).
    pub const GCAP_ID: u64 = 0x000;
    pub const COUNT_SIZE_CAP: u64 = 1 << 13;
    /// General Configuration: [0] ENABLE_CNF, [1] LEG_RT_CNF.
    pub const GEN_CONF: u64 = 0x010;
    pub const ENABLE_CNF: u64 = 1 << 0;
    pub const LEG_RT_CNF: u64 = 1 << 1;
    pub const MAIN_COUNTER: u64 = 0x0F0;
    /// Timer N Configuration and Capability at 0x100 + 0x20 N: [2] Tn_INT_ENB_CNF.
    pub const TIMER_CONF: u64 = 0x100;
    pub const TIMER_STRIDE: u64 = 0x20;
    pub const TN_INT_ENB_CNF: u64 = 1 << 2;
}

/// An HPET whose main counter runs.
#[derive(Clone, Copy, Debug)]
pub struct Hpet {
    base: u64,
    pub hz: u64,
    pub bits: u32,
}

fn read(base: u64, off: u64) -> u64 {
    // SAFETY: `base` is the HPET's register block from the ACPI HPET table,
    // identity-mapped below 4 GiB (or mapped by `map_mmio`); registers are
    // 64-bit aligned and reading them has no side effect.
    unsafe { ((base + off) as *const u64).read_volatile() }
}

fn write(base: u64, off: u64, v: u64) {
    // SAFETY: as in `read`; only configuration bits this module owns change.
    unsafe { ((base + off) as *mut u64).write_volatile(v) }
}

impl Hpet {
    /// Check the block at `address`, silence its comparators and start its
    /// main counter.
    pub fn start(address: u64) -> Result<Hpet, &'static str> {
        crate::mem::paging::map_mmio(address, 0x400).map_err(|_| "its registers cannot be mapped")?;
        let cap = read(address, reg::GCAP_ID);
        if cap == u64::MAX || cap == 0 {
            return Err("its registers read as all ones or zeros (no HPET there)");
        }
        let hz = hpet_hz(cap >> 32).ok_or("its COUNTER_CLK_PERIOD is illegal")?;
        let timers = ((cap >> 8) & 0x1F) + 1;
        for n in 0..timers {
            let off = reg::TIMER_CONF + n * reg::TIMER_STRIDE;
            let conf = read(address, off);
            if conf & reg::TN_INT_ENB_CNF != 0 {
                write(address, off, conf & !reg::TN_INT_ENB_CNF);
            }
        }
        let conf = read(address, reg::GEN_CONF);
        write(address, reg::GEN_CONF, (conf & !reg::LEG_RT_CNF) | reg::ENABLE_CNF);
        Ok(Hpet { base: address, hz, bits: if cap & reg::COUNT_SIZE_CAP != 0 { 64 } else { 32 } })
    }

    /// The main counter.
    pub fn now(&self) -> u64 {
        read(self.base, reg::MAIN_COUNTER)
    }
}
