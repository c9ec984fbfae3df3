//! Where the TSC frequency comes from, decided without touching hardware:
//! CPUID leaves 0x15/0x16, the counters' arithmetic (HPET period, ACPI PM
//! timer width), the FADT's PM timer block, and the choice among the
//! references measured at boot. Host-tested, including over the CPUID dumps
//! of real processors in `../shared/cpuid-real` (`tests/cpuid_real.rs`).
//!
//! The order follows Linux (`arch/x86/kernel/tsc.c`): the frequency CPUID
//! enumerates (`native_calibrate_tsc`), else a measurement against the HPET
//! or the ACPI PM timer, else the PIT (`pit_hpet_ptimer_calibrate_cpu`). The
//! PIT comes last here because chipsets can gate it off
//! (`drivers/clocksource/i8253.c`: "Modern chipsets can disable the PIT
//! clock"), and QEMU's `pit=off` does the same.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// A time reference the TSC can be calibrated against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    /// The frequency CPUID leaf 0x15 (with 0x16 or the model) enumerates.
    Cpuid,
    /// The HPET main counter (IA-PC HPET spec 1.0a).
    Hpet,
    /// The ACPI power-management timer, 3.579545 MHz (ACPI 6.5 §4.8.3.3).
    PmTimer,
    /// The 8254 PIT, channel 2.
    Pit,
}

impl Reference {
    /// In the order they are preferred.
    pub const PREFERENCE: [Reference; 4] = [Reference::Cpuid, Reference::Hpet, Reference::PmTimer, Reference::Pit];

    pub fn name(self) -> &'static str {
        match self {
            Reference::Cpuid => "cpuid",
            Reference::Hpet => "hpet",
            Reference::PmTimer => "pm-timer",
            Reference::Pit => "pit",
        }
    }

    pub fn parse(s: &str) -> Option<Reference> {
        Reference::PREFERENCE.into_iter().find(|r| r.name() == s)
    }
}

/// The ACPI PM timer's rate (ACPI 6.5 §4.8.3.3, "Power Management Timer").
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// The HPET's counter period is at most 100 ns, in femtoseconds (IA-PC HPET
/// spec 1.0a §2.3.4, COUNTER_CLK_PERIOD "less than or equal to 0x05F5E100").
pub const HPET_MAX_PERIOD_FS: u64 = 0x05F5_E100;
/// TSC frequencies taken as plausible; anything outside is a broken reference.
pub const TSC_HZ_MIN: u64 = 50_000_000;
pub const TSC_HZ_MAX: u64 = 20_000_000_000;
/// Two references agree when they are within this many parts per million.
pub const AGREE_PPM: u64 = 20_000;
/// CPUID 0x16's base frequency is a nominal figure: only a gross difference
/// from the chosen frequency is worth a warning.
pub const LEAF16_WARN_PPM: u64 = 100_000;

/// The CPUID values the enumeration needs (leaf 0's maximum, the vendor, the
/// display family/model, leaves 0x15 and 0x16 as EAX, EBX, ECX).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidLeaves {
    pub intel: bool,
    pub max_basic: u32,
    pub family: u32,
    pub model: u32,
    pub leaf15: [u32; 3],
    pub leaf16: [u32; 3],
}

impl CpuidLeaves {
    /// Read them with `cpuid(leaf, subleaf) -> [eax, ebx, ecx, edx]` (the CPU,
    /// or a recorded dump). Display family as SDM Vol. 2A, CPUID, "Feature
    /// Information" computes it; the extended model added from family 6 on,
    /// as Linux does (`x86_model()`, which covers Zhaoxin's family 7).
    pub fn read(cpuid: impl Fn(u32, u32) -> [u32; 4]) -> CpuidLeaves {
        let l0 = cpuid(0, 0);
        let max_basic = l0[0];
        let mut vendor = [0u8; 12];
        for (i, r) in [l0[1], l0[3], l0[2]].iter().enumerate() {
            vendor[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
        }
        let eax1 = if max_basic >= 1 { cpuid(1, 0)[0] } else { 0 };
        let base_family = (eax1 >> 8) & 0xF;
        let family = if base_family == 0xF { base_family + ((eax1 >> 20) & 0xFF) } else { base_family };
        let model = if base_family >= 6 { ((eax1 >> 4) & 0xF) | (((eax1 >> 16) & 0xF) << 4) } else { (eax1 >> 4) & 0xF };
        let take = |leaf: u32| {
            if max_basic >= leaf {
                let r = cpuid(leaf, 0);
                [r[0], r[1], r[2]]
            } else {
                [0; 3]
            }
        };
        CpuidLeaves { intel: &vendor == b"GenuineIntel", max_basic, family, model, leaf15: take(0x15), leaf16: take(0x16) }
    }
}

/// How the crystal frequency was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrystalFrom {
    /// CPUID 0x15 ECX.
    Leaf15,
    /// ECX was 0: the crystal from 0x16's base frequency and 0x15's ratio.
    Leaf16,
    /// ECX was 0 and there is no 0x16: the crystal Linux knows for the model.
    Model(&'static str),
}

/// The TSC frequency CPUID enumerates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidTsc {
    pub tsc_hz: u64,
    pub crystal_hz: u64,
    pub from: CrystalFrom,
}

/// Intel family 6 models whose 0x15 leaves the crystal at 0, with the
/// crystal Linux uses for them (`native_calibrate_tsc`: Goldmont-D 25 MHz in
/// every version; before Linux 5.x also Skylake/Kaby Lake client 24 MHz and
/// Goldmont 19.2 MHz, which 0x16 now covers where it exists).
const MODEL_CRYSTALS: [(u32, u64, &str); 6] = [
    (0x5F, 25_000_000, "Atom Goldmont-D (Denverton): 25 MHz crystal"),
    (0x5C, 19_200_000, "Atom Goldmont: 19.2 MHz crystal"),
    (0x4E, 24_000_000, "Skylake client: 24 MHz crystal"),
    (0x5E, 24_000_000, "Skylake client: 24 MHz crystal"),
    (0x8E, 24_000_000, "Kaby Lake client: 24 MHz crystal"),
    (0x9E, 24_000_000, "Kaby Lake client: 24 MHz crystal"),
];

/// The TSC frequency from CPUID leaf 0x15 (SDM Vol. 2A, CPUID, "Time Stamp
/// Counter and Nominal Core Crystal Clock Information Leaf": TSC = crystal x
/// EBX / EAX), on Intel only, as Linux does. `Err` says why not.
pub fn tsc_from_cpuid(l: &CpuidLeaves) -> Result<CpuidTsc, &'static str> {
    if !l.intel {
        return Err("not an Intel CPU (leaf 0x15 is Intel's)");
    }
    if l.max_basic < 0x15 {
        return Err("no CPUID leaf 0x15");
    }
    let [den, num, ecx] = l.leaf15;
    if den == 0 || num == 0 {
        return Err("CPUID 0x15 gives no TSC/crystal ratio");
    }
    let (crystal_hz, from) = if ecx != 0 {
        (ecx as u64, CrystalFrom::Leaf15)
    } else if l.family == 6 && l.model == 0x5F {
        // Denverton enumerates neither the crystal nor 0x16 (Linux special-cases it first).
        (MODEL_CRYSTALS[0].1, CrystalFrom::Model(MODEL_CRYSTALS[0].2))
    } else if l.max_basic >= 0x16 && l.leaf16[0] != 0 {
        // crystal = base x denominator / numerator (Linux: "we can easily
        // calculate it to a high degree of accuracy by considering the crystal
        // ratio and the CPU speed").
        (l.leaf16[0] as u64 * 1_000_000 * den as u64 / num as u64, CrystalFrom::Leaf16)
    } else if let Some((_, hz, why)) = MODEL_CRYSTALS.iter().find(|(m, _, _)| l.family == 6 && *m == l.model) {
        (*hz, CrystalFrom::Model(why))
    } else {
        return Err("CPUID 0x15 gives no crystal frequency and nothing else does");
    };
    let tsc_hz = crystal_hz * num as u64 / den as u64;
    Ok(CpuidTsc { tsc_hz, crystal_hz, from })
}

/// CPUID 0x16's base frequency in Hz, where the CPU enumerates one.
pub fn leaf16_base_hz(l: &CpuidLeaves) -> Option<u64> {
    (l.intel && l.max_basic >= 0x16 && l.leaf16[0] != 0).then(|| l.leaf16[0] as u64 * 1_000_000)
}

/// The HPET counter's frequency from its period, if the period is legal.
pub fn hpet_hz(period_fs: u64) -> Option<u64> {
    (period_fs != 0 && period_fs <= HPET_MAX_PERIOD_FS).then(|| 1_000_000_000_000_000 / period_fs)
}

/// Ticks from `a` to `b` of a counter `bits` wide that may have wrapped once.
pub fn counter_delta(a: u64, b: u64, bits: u32) -> u64 {
    let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    b.wrapping_sub(a) & mask
}

/// The ACPI PM timer as the FADT describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmTimer {
    pub port: u16,
    /// 32 bits wide (TMR_VAL_EXT), else 24.
    pub bits: u32,
}

/// FADT offsets and flags (ACPI 6.5 §5.2.9, Table 5.9 and 5.10).
mod fadt {
    pub const PM_TMR_BLK: usize = 76;
    pub const PM_TMR_LEN: usize = 91;
    pub const FLAGS: usize = 112;
    pub const X_PM_TMR_BLK: usize = 208;
    /// Flags bit 8: the PM timer is 32 bits wide.
    pub const TMR_VAL_EXT: u32 = 1 << 8;
    /// Flags bit 20: hardware-reduced ACPI, which has no PM timer.
    pub const HW_REDUCED_ACPI: u32 = 1 << 20;
    /// Generic Address Structure address space: system I/O (ACPI 6.5 Table 5.1).
    pub const GAS_SYSTEM_IO: u8 = 1;
}

/// The PM timer of a FADT (its whole bytes, header included). The 64-bit
/// X_PM_TMR_BLK wins where it is present and nonzero; only I/O space is
/// supported (as in Linux, `drivers/clocksource/acpi_pm.c`).
pub fn pm_timer_from_fadt(t: &[u8]) -> Result<PmTimer, &'static str> {
    let u32_at = |o: usize| t.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if t.get(..4) != Some(b"FACP") {
        return Err("not a FADT");
    }
    let flags = u32_at(fadt::FLAGS).unwrap_or(0);
    if flags & fadt::HW_REDUCED_ACPI != 0 {
        return Err("hardware-reduced ACPI: no PM timer");
    }
    let bits = if flags & fadt::TMR_VAL_EXT != 0 { 32 } else { 24 };
    if let Some(g) = t.get(fadt::X_PM_TMR_BLK..fadt::X_PM_TMR_BLK + 12) {
        let addr = u64::from_le_bytes(g[4..12].try_into().unwrap_or([0; 8]));
        if addr != 0 {
            if g[0] != fadt::GAS_SYSTEM_IO {
                return Err("X_PM_TMR_BLK is not in I/O space");
            }
            return u16::try_from(addr).map(|port| PmTimer { port, bits }).map_err(|_| "X_PM_TMR_BLK port above 0xFFFF");
        }
    }
    let port = u32_at(fadt::PM_TMR_BLK).ok_or("FADT too short for PM_TMR_BLK")?;
    if port == 0 || t.get(fadt::PM_TMR_LEN).copied().unwrap_or(0) < 4 {
        return Err("the FADT lists no PM timer");
    }
    u16::try_from(port).map(|port| PmTimer { port, bits }).map_err(|_| "PM_TMR_BLK port above 0xFFFF")
}

/// TSC ticks over reference ticks, as a frequency: `tsc * ref_hz / ref_ticks`.
pub fn tsc_hz_from(tsc_ticks: u64, ref_ticks: u64, ref_hz: u64) -> Option<u64> {
    (ref_ticks != 0).then(|| (tsc_ticks as u128 * ref_hz as u128 / ref_ticks as u128) as u64)
}

/// A calibration window of `total` TSC ticks is kept when no gap between two
/// of its polls exceeded 1% of it: a longer one means this (virtual) CPU was
/// descheduled between reading the reference and the TSC, which skews the
/// ratio by up to the gap.
pub fn window_ok(total: u64, max_gap: u64) -> bool {
    total > 0 && max_gap.saturating_mul(100) <= total
}

/// The median of a few measurements (sorted in place); `None` if empty.
pub fn median(v: &mut [u64]) -> Option<u64> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// Signed difference of `b` from `a` in parts per million.
pub fn ppm(a: u64, b: u64) -> i64 {
    if a == 0 {
        return i64::MAX;
    }
    ((b as i128 - a as i128) * 1_000_000 / a as i128) as i64
}

/// What one reference gave: a TSC frequency, or why it has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub reference: Reference,
    pub result: Result<u64, String>,
}

/// The reference in force, its frequency, and what the others said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub reference: Reference,
    pub tsc_hz: u64,
    /// One line per other reference: its frequency and distance, or why not.
    pub checks: Vec<String>,
    /// What the user should hear about (a reference out of range or out of
    /// line with the others, 0x16 far off, a forced reference unavailable).
    pub warnings: Vec<String>,
}

fn mhz(hz: u64) -> String {
    format!("{}.{:03} MHz", hz / 1_000_000, (hz / 1000) % 1000)
}

/// Choose among the candidates: the first in preference order (or the one
/// `forced`) that is in range and not an outlier. An outlier disagrees with
/// every other in-range reference while at least two of those agree with
/// each other: one broken reference is outvoted, two that disagree are not.
pub fn choose(cands: &[Candidate], forced: Option<Reference>, leaf16_hz: Option<u64>) -> Result<Choice, String> {
    let mut warnings = Vec::new();
    let in_range: Vec<(Reference, u64)> = cands
        .iter()
        .filter_map(|c| match c.result {
            Ok(hz) if (TSC_HZ_MIN..=TSC_HZ_MAX).contains(&hz) => Some((c.reference, hz)),
            Ok(hz) => {
                warnings.push(format!("{}: {} is not a plausible TSC frequency (ignored)", c.reference.name(), mhz(hz)));
                None
            }
            Err(_) => None,
        })
        .collect();
    let agree = |a: u64, b: u64| ppm(a, b).unsigned_abs() <= AGREE_PPM;
    let outlier = |r: Reference, hz: u64| {
        let others: Vec<u64> = in_range.iter().filter(|(o, _)| *o != r).map(|(_, h)| *h).collect();
        let others_agree = others.iter().enumerate().any(|(i, a)| others.iter().skip(i + 1).any(|b| agree(*a, *b)));
        others_agree && !others.iter().any(|o| agree(hz, *o))
    };
    let pick = match forced {
        Some(f) => match in_range.iter().find(|(r, _)| *r == f) {
            Some(p) => Some(*p),
            None => {
                let why = cands.iter().find(|c| c.reference == f).map_or(String::from("not measured"), |c| match &c.result {
                    Err(e) => e.clone(),
                    Ok(_) => String::from("out of range"),
                });
                warnings.push(format!("clock={} asked for, but {}: {why}; choosing as usual", f.name(), f.name()));
                None
            }
        },
        None => None,
    };
    let pick = pick.or_else(|| {
        Reference::PREFERENCE.into_iter().find_map(|r| {
            let (_, hz) = *in_range.iter().find(|(c, _)| *c == r)?;
            if outlier(r, hz) {
                warnings.push(format!("{}: {} disagrees with every other reference, which agree among themselves (ignored)", r.name(), mhz(hz)));
                return None;
            }
            Some((r, hz))
        })
    });
    let Some((reference, tsc_hz)) = pick else {
        let why: Vec<String> = cands
            .iter()
            .map(|c| match &c.result {
                Ok(hz) => format!("{} {}", c.reference.name(), mhz(*hz)),
                Err(e) => format!("{}: {e}", c.reference.name()),
            })
            .collect();
        return Err(format!("no usable time reference ({})", why.join("; ")));
    };
    let checks = cands
        .iter()
        .filter(|c| c.reference != reference)
        .map(|c| match &c.result {
            Ok(hz) => {
                let d = ppm(tsc_hz, *hz);
                let sign = if d < 0 { '-' } else { '+' };
                format!("{} {} ({sign}{}.{:03}%)", c.reference.name(), mhz(*hz), d.unsigned_abs() / 10_000, (d.unsigned_abs() / 10) % 1000)
            }
            Err(e) => format!("{}: {e}", c.reference.name()),
        })
        .collect();
    for (r, hz) in &in_range {
        if *r != reference && !agree(tsc_hz, *hz) {
            warnings.push(format!("{} says {}, {} from {} by {} ppm", r.name(), mhz(*hz), reference.name(), mhz(tsc_hz), ppm(tsc_hz, *hz)));
        }
    }
    if let Some(b) = leaf16_hz
        && ppm(tsc_hz, b).unsigned_abs() > LEAF16_WARN_PPM
    {
        warnings.push(format!("CPUID 0x16 base frequency {} is far from the TSC's {}", mhz(b), mhz(tsc_hz)));
    }
    Ok(Choice { reference, tsc_hz, checks, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intel(model: u32, max_basic: u32, leaf15: [u32; 3], leaf16: [u32; 3]) -> CpuidLeaves {
        CpuidLeaves { intel: true, max_basic, family: 6, model, leaf15, leaf16 }
    }

    #[test]
    fn crystal_from_leaf_15() {
        // SDM example form: 24 MHz crystal, ratio 216/2 -> 2.592 GHz.
        let t = tsc_from_cpuid(&intel(0x8F, 0x20, [2, 216, 24_000_000], [2600, 4800, 100])).unwrap();
        assert_eq!((t.tsc_hz, t.crystal_hz, t.from), (2_592_000_000, 24_000_000, CrystalFrom::Leaf15));
    }

    #[test]
    fn crystal_from_leaf_16_when_ecx_is_zero() {
        let t = tsc_from_cpuid(&intel(0x55, 0x16, [2, 292, 0], [3500, 4000, 100])).unwrap();
        assert_eq!(t.from, CrystalFrom::Leaf16);
        // crystal = 3500 MHz x 2 / 292 = 23.972602 MHz; TSC = crystal x 146.
        assert_eq!(t.crystal_hz, 23_972_602);
        assert_eq!(t.tsc_hz, 23_972_602 * 292 / 2);
        assert!(ppm(3_500_000_000, t.tsc_hz).abs() < 10);
    }

    #[test]
    fn denverton_and_the_model_table() {
        let t = tsc_from_cpuid(&intel(0x5F, 0x15, [3, 240, 0], [0; 3])).unwrap();
        assert_eq!(t.tsc_hz, 2_000_000_000);
        assert!(matches!(t.from, CrystalFrom::Model(w) if w.contains("Denverton")));
        // Kaby Lake without 0x16 in reach (a hypervisor that caps the leaves).
        let t = tsc_from_cpuid(&intel(0x9E, 0x15, [2, 300, 0], [0; 3])).unwrap();
        assert_eq!(t.tsc_hz, 3_600_000_000);
        assert!(tsc_from_cpuid(&intel(0x55, 0x15, [2, 300, 0], [0; 3])).is_err(), "no crystal, no 0x16, no model entry");
    }

    #[test]
    fn not_intel_or_no_ratio() {
        let mut amd = intel(0, 0x10, [2, 100, 25_000_000], [0; 3]);
        amd.intel = false;
        assert!(tsc_from_cpuid(&amd).unwrap_err().contains("Intel"));
        assert!(tsc_from_cpuid(&intel(0x3C, 0xD, [0; 3], [0; 3])).unwrap_err().contains("no CPUID leaf 0x15"));
        assert!(tsc_from_cpuid(&intel(0x6A, 0x1B, [0, 0, 0], [2400, 3600, 100])).unwrap_err().contains("ratio"));
    }

    #[test]
    fn descheduled_windows_are_dropped() {
        // 10 ms at 2.6 GHz, polls every ~1 us: kept.
        assert!(window_ok(26_000_000, 2_600));
        // A 3 ms hole (the vCPU ran elsewhere): dropped.
        assert!(!window_ok(26_000_000, 7_800_000));
        assert!(!window_ok(0, 0));
    }

    #[test]
    fn hpet_periods() {
        // QEMU's HPET: 10 ns period, 100 MHz.
        assert_eq!(hpet_hz(10_000_000), Some(100_000_000));
        // ICH: 69.841279 ns, 14.31818 MHz (rounded down).
        assert_eq!(hpet_hz(69_841_279), Some(14_318_179));
        assert_eq!(hpet_hz(0), None);
        assert_eq!(hpet_hz(HPET_MAX_PERIOD_FS + 1), None);
        assert_eq!(hpet_hz(u32::MAX as u64), None, "all ones: no HPET behind the address");
    }

    #[test]
    fn wrapping_counters() {
        assert_eq!(counter_delta(0xFF_FFF0, 0x10, 24), 0x20);
        assert_eq!(counter_delta(0xFFFF_FFF0, 0x10, 32), 0x20);
        assert_eq!(counter_delta(5, 7, 64), 2);
        assert_eq!(tsc_hz_from(2_400_000, PM_TIMER_HZ / 1000, PM_TIMER_HZ), Some(2_400_365_465));
        assert_eq!(tsc_hz_from(1, 0, PM_TIMER_HZ), None);
    }

    fn fadt(len: usize, pm_blk: u32, pm_len: u8, flags: u32, x_blk: Option<(u8, u64)>) -> Vec<u8> {
        let mut t = alloc::vec![0u8; len];
        t[..4].copy_from_slice(b"FACP");
        t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        t[76..80].copy_from_slice(&pm_blk.to_le_bytes());
        t[91] = pm_len;
        t[112..116].copy_from_slice(&flags.to_le_bytes());
        if let Some((space, addr)) = x_blk {
            t[208] = space;
            t[209] = 32;
            t[211] = 3;
            t[212..220].copy_from_slice(&addr.to_le_bytes());
        }
        t
    }

    #[test]
    fn fadt_pm_timer() {
        assert_eq!(pm_timer_from_fadt(&fadt(116, 0x608, 4, 0, None)), Ok(PmTimer { port: 0x608, bits: 24 }));
        assert_eq!(pm_timer_from_fadt(&fadt(244, 0x608, 4, 1 << 8, Some((1, 0x1808)))), Ok(PmTimer { port: 0x1808, bits: 32 }));
        assert_eq!(pm_timer_from_fadt(&fadt(244, 0x608, 4, 0, Some((1, 0)))), Ok(PmTimer { port: 0x608, bits: 24 }), "X block zero: the legacy one");
        assert!(pm_timer_from_fadt(&fadt(244, 0x608, 4, 0, Some((0, 0xFED0_0000)))).unwrap_err().contains("I/O space"));
        assert!(pm_timer_from_fadt(&fadt(244, 0, 0, 0, None)).unwrap_err().contains("no PM timer"));
        assert!(pm_timer_from_fadt(&fadt(244, 0x608, 4, 1 << 20, None)).unwrap_err().contains("hardware-reduced"));
        assert!(pm_timer_from_fadt(&fadt(244, 0x608, 4, 0, None)[..60]).is_err(), "truncated");
        assert!(pm_timer_from_fadt(b"APIC").is_err());
    }

    fn c(r: Reference, v: Result<u64, &str>) -> Candidate {
        Candidate { reference: r, result: v.map_err(String::from) }
    }

    #[test]
    fn choice_in_preference_order_with_checks() {
        let cands = [
            c(Reference::Cpuid, Err("not an Intel CPU")),
            c(Reference::Hpet, Ok(2_400_000_000)),
            c(Reference::PmTimer, Ok(2_400_100_000)),
            c(Reference::Pit, Err("absent")),
        ];
        let ch = choose(&cands, None, None).unwrap();
        assert_eq!((ch.reference, ch.tsc_hz), (Reference::Hpet, 2_400_000_000));
        assert_eq!(ch.checks, ["cpuid: not an Intel CPU", "pm-timer 2400.100 MHz (+0.004%)", "pit: absent"]);
        assert!(ch.warnings.is_empty(), "{:?}", ch.warnings);
        let slow = [c(Reference::Hpet, Ok(2_000_000_000)), c(Reference::Pit, Ok(1_999_640_000))];
        assert_eq!(choose(&slow, None, None).unwrap().checks, ["pit 1999.640 MHz (-0.018%)"]);
    }

    #[test]
    fn a_broken_reference_is_outvoted() {
        // The PIT port reads all ones (pit=off): OUT2 "high" at once -> tiny count.
        let cands = [c(Reference::Hpet, Ok(3_100_000_000)), c(Reference::PmTimer, Ok(2_000_000_000)), c(Reference::Pit, Ok(2_000_500_000))];
        let ch = choose(&cands, None, None).unwrap();
        assert_eq!(ch.reference, Reference::PmTimer);
        assert!(ch.warnings[0].contains("hpet") && ch.warnings[0].contains("disagrees"), "{:?}", ch.warnings);
        // Two that disagree: no majority, preference decides, and the
        // disagreement is a warning.
        let ch = choose(&cands[..2], None, None).unwrap();
        assert_eq!(ch.reference, Reference::Hpet);
        assert!(ch.warnings.iter().any(|w| w.contains("pm-timer says")), "{:?}", ch.warnings);
    }

    #[test]
    fn out_of_range_forced_and_none() {
        let cands = [c(Reference::Hpet, Ok(1_000)), c(Reference::Pit, Ok(2_000_000_000))];
        let ch = choose(&cands, None, None).unwrap();
        assert_eq!(ch.reference, Reference::Pit);
        assert!(ch.warnings[0].contains("not a plausible"));
        let cands = [c(Reference::Hpet, Ok(2_000_000_000)), c(Reference::Pit, Ok(2_000_000_000))];
        assert_eq!(choose(&cands, Some(Reference::Pit), None).unwrap().reference, Reference::Pit);
        let ch = choose(&cands, Some(Reference::PmTimer), None).unwrap();
        assert_eq!(ch.reference, Reference::Hpet);
        assert!(ch.warnings[0].starts_with("clock=pm-timer asked for"));
        let e = choose(&[c(Reference::Pit, Err("absent")), c(Reference::Hpet, Err("no HPET"))], None, None).unwrap_err();
        assert_eq!(e, "no usable time reference (pit: absent; hpet: no HPET)");
    }

    #[test]
    fn leaf_16_far_off_is_a_warning() {
        let cands = [c(Reference::Hpet, Ok(2_000_000_000))];
        assert!(choose(&cands, None, Some(2_050_000_000)).unwrap().warnings.is_empty());
        assert!(choose(&cands, None, Some(3_000_000_000)).unwrap().warnings[0].contains("0x16"));
    }

    #[test]
    fn names_round_trip() {
        for r in Reference::PREFERENCE {
            assert_eq!(Reference::parse(r.name()), Some(r));
        }
        assert_eq!(Reference::parse("tsc"), None);
    }
}
