//! Measure the TSC against every time reference the machine has, then let
//! `reference::choose` pick one: CPUID's enumeration first, then the HPET,
//! the ACPI PM timer, the PIT. Every loop is bounded by TSC ticks (at the
//! highest plausible TSC rate, four windows), so a reference that is gated
//! off or absent costs a fraction of a second, never a hang.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::reference::{self, Candidate, Choice, CpuidLeaves, PmTimer, Reference, counter_delta, median, tsc_hz_from};
use crate::arch::cpu::rdtsc;

/// One measurement window, and how many (the median is taken: a window
/// stretched by a preempted virtual CPU does not skew it).
const WINDOW_NS: u64 = 10_000_000;
const WINDOWS: usize = 5;
/// TSC ticks after which a window gives up: four windows at `TSC_HZ_MAX`.
const TSC_BUDGET: u64 = (reference::TSC_HZ_MAX / 1_000_000) * (WINDOW_NS / 1000) * 4;

/// What the machine offers, from ACPI, and what the command line forces.
pub struct Sources {
    pub hpet_address: Option<u64>,
    /// The FADT's PM timer, or why there is none.
    pub pm_timer: Result<PmTimer, &'static str>,
    pub forced: Option<Reference>,
}

/// TSC frequency against a free-running counter `read` of `bits` at `hz`.
fn against_counter(read: &dyn Fn() -> u64, bits: u32, hz: u64) -> Result<u64, String> {
    let want = hz * WINDOW_NS / 1_000_000_000;
    let mut samples = [0u64; WINDOWS];
    for s in samples.iter_mut() {
        let r0 = read();
        let t0 = rdtsc();
        *s = loop {
            let r = read();
            let t = rdtsc();
            let d = counter_delta(r0, r, bits);
            if d >= want {
                break tsc_hz_from(t - t0, d, hz).unwrap_or(0);
            }
            if t - t0 > TSC_BUDGET {
                return Err(format!("its counter did not advance ({d} of {want} ticks)"));
            }
        };
    }
    Ok(median(&mut samples).unwrap_or(0))
}

fn pit() -> Result<u64, String> {
    let ms = WINDOW_NS / 1_000_000;
    let latch = super::pit::PIT_HZ * ms / 1000;
    let mut samples = [0u64; WINDOWS];
    for s in samples.iter_mut() {
        let ticks = super::pit::tsc_ticks_over(ms, TSC_BUDGET).map_err(String::from)?;
        *s = tsc_hz_from(ticks, latch, super::pit::PIT_HZ).unwrap_or(0);
    }
    Ok(median(&mut samples).unwrap_or(0))
}

/// Measure against every reference and choose. `Err` when none is usable.
pub fn run(src: &Sources) -> Result<(Choice, CpuidLeaves), String> {
    let leaves = CpuidLeaves::read(|l, s| {
        let r = raw_cpuid::cpuid!(l, s);
        [r.eax, r.ebx, r.ecx, r.edx]
    });
    let mut cands: Vec<Candidate> = Vec::new();
    let cpuid = reference::tsc_from_cpuid(&leaves);
    cands.push(Candidate { reference: Reference::Cpuid, result: cpuid.map(|t| t.tsc_hz).map_err(String::from) });
    let hpet = match src.hpet_address {
        None => Err(String::from("no HPET table")),
        Some(a) => super::hpet::Hpet::start(a).map_err(String::from).and_then(|h| against_counter(&|| h.now(), h.bits, h.hz)),
    };
    cands.push(Candidate { reference: Reference::Hpet, result: hpet });
    let pm = match src.pm_timer {
        Err(e) => Err(String::from(e)),
        Ok(t) => against_counter(&|| super::pm_timer::now(t), t.bits, reference::PM_TIMER_HZ),
    };
    cands.push(Candidate { reference: Reference::PmTimer, result: pm });
    cands.push(Candidate { reference: Reference::Pit, result: pit() });
    let choice = reference::choose(&cands, src.forced, reference::leaf16_base_hz(&leaves))?;
    Ok((choice, leaves))
}
