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

/// Tries per kept window: a window during which this (virtual) CPU was
/// descheduled is measured again.
const TRIES: usize = 4 * WINDOWS;

/// The median of the windows `one` measures that `reference::window_ok`
/// keeps (all of them if too few are clean: a busy host).
fn median_of_clean(mut one: impl FnMut() -> Result<(u64, u64, u64), String>) -> Result<u64, String> {
    let (mut clean, mut all) = (heapless::Vec::<u64, TRIES>::new(), heapless::Vec::<u64, TRIES>::new());
    for _ in 0..TRIES {
        let (hz, total, max_gap) = one()?;
        let _ = all.push(hz);
        if reference::window_ok(total, max_gap) {
            let _ = clean.push(hz);
            if clean.len() == WINDOWS {
                break;
            }
        }
    }
    let pick = if clean.len() >= 3 { &mut clean } else { &mut all };
    Ok(median(pick).unwrap_or(0))
}

/// TSC frequency against a free-running counter `read` of `bits` at `hz`.
fn against_counter(read: &dyn Fn() -> u64, bits: u32, hz: u64) -> Result<u64, String> {
    let want = hz * WINDOW_NS / 1_000_000_000;
    median_of_clean(|| {
        let before = rdtsc();
        let r0 = read();
        let t0 = rdtsc();
        let (mut last, mut max_gap) = (t0, t0 - before);
        loop {
            let r = read();
            let t = rdtsc();
            max_gap = max_gap.max(t - last);
            last = t;
            let d = counter_delta(r0, r, bits);
            if d >= want {
                return Ok((tsc_hz_from(t - t0, d, hz).unwrap_or(0), t - t0, max_gap));
            }
            if t - t0 > TSC_BUDGET {
                return Err(format!("its counter did not advance ({d} of {want} ticks)"));
            }
        }
    })
}

fn pit() -> Result<u64, String> {
    let ms = WINDOW_NS / 1_000_000;
    let latch = super::pit::PIT_HZ * ms / 1000;
    median_of_clean(|| {
        let (ticks, max_gap) = super::pit::tsc_ticks_over(ms, TSC_BUDGET).map_err(String::from)?;
        Ok((tsc_hz_from(ticks, latch, super::pit::PIT_HZ).unwrap_or(0), ticks, max_gap))
    })
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
