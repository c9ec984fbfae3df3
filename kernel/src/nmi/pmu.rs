//! The performance-monitoring unit as an NMI source: what the CPU offers
//! (from CPUID through raw-cpuid, generic over the reader so host tests feed
//! CPUID dumps), which counter to use, and the period that makes it overflow
//! `hz` times a second. Pure logic; the MSR programming is in `watchdog.rs`.
//!
//! Intel: architectural performance monitoring (SDM Vol. 3B §20.2, CPUID leaf
//! 0xA), general-purpose counter 0 counting UnHalted Core Cycles (event 0x3C,
//! umask 0). AMD: the legacy counters (PERF_CTL0/PERF_CTR0) or, when CPUID
//! `Fn8000_0001_ECX[23]` (PerfCtrExtCore) says so, the extended core counters
//! (AMD APM Vol. 2 §13.2), counting CPU Clocks not Halted (event 0x76).

use raw_cpuid::{CpuId, CpuIdReader};

/// MSRs and event-select bits (Intel SDM Vol. 4 Table 2-2 and Vol. 3B §20.2;
/// AMD APM Vol. 2 §13.2.1).
pub mod msr {
    pub const IA32_PERFEVTSEL0: u32 = 0x186;
    pub const IA32_PMC0: u32 = 0xC1;
    /// Architectural perfmon v2+: global enable, status and overflow reset.
    pub const IA32_PERF_GLOBAL_STATUS: u32 = 0x38E;
    pub const IA32_PERF_GLOBAL_CTRL: u32 = 0x38F;
    pub const IA32_PERF_GLOBAL_OVF_CTRL: u32 = 0x390;
    /// AMD legacy counter 0.
    pub const AMD_PERF_CTL0: u32 = 0xC001_0000;
    pub const AMD_PERF_CTR0: u32 = 0xC001_0004;
    /// AMD extended core counter 0 (PerfCtrExtCore); counter n at +2n.
    pub const AMD_PERF_CTL_EXT0: u32 = 0xC001_0200;
    pub const AMD_PERF_CTR_EXT0: u32 = 0xC001_0201;
    /// AMD PerfMonV2 global registers (APM Vol. 2 §13.2.2; Linux
    /// `MSR_AMD64_PERF_CNTR_GLOBAL_*`): overflow status, enable, status clear.
    pub const AMD_PERF_CNTR_GLOBAL_STATUS: u32 = 0xC000_0300;
    pub const AMD_PERF_CNTR_GLOBAL_CTL: u32 = 0xC000_0301;
    pub const AMD_PERF_CNTR_GLOBAL_STATUS_CLR: u32 = 0xC000_0302;
    /// Event select: count in user mode, in kernel mode, interrupt on
    /// overflow (through the LVT performance-counter entry), enable.
    pub const EVTSEL_USR: u64 = 1 << 16;
    pub const EVTSEL_OS: u64 = 1 << 17;
    pub const EVTSEL_INT: u64 = 1 << 20;
    pub const EVTSEL_EN: u64 = 1 << 22;
    /// Intel UnHalted Core Cycles (architectural event, umask 0).
    pub const INTEL_EVENT_CORE_CYCLES: u64 = 0x3C;
    /// AMD CPU Clocks not Halted.
    pub const AMD_EVENT_CPU_CLOCKS: u64 = 0x76;
}

/// Which counter the watchdog programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Intel architectural perfmon of this version (v2+ has global controls).
    IntelArch { version: u8 },
    AmdLegacy,
    AmdExtCore,
    /// The core-extension counters with PerfMonV2's global enable and
    /// overflow status (Zen 4 on: CPUID `Fn8000_0022_EAX[0]`).
    AmdPerfMonV2,
}

/// Global enable / overflow status / overflow clear registers, where the
/// counter set has them (Intel perfmon v2+, AMD PerfMonV2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Global {
    pub ctrl: u32,
    pub status: u32,
    /// Write 1s to clear status bits (IA32_PERF_GLOBAL_OVF_CTRL, called
    /// STATUS_RESET from v4 at the same address; AMD's STATUS_CLR).
    pub clear: u32,
}

impl Counter {
    pub fn name(self) -> &'static str {
        match self {
            Counter::IntelArch { .. } => "intel-arch-perfmon",
            Counter::AmdLegacy => "amd-perfctr",
            Counter::AmdExtCore => "amd-perfctr-core",
            Counter::AmdPerfMonV2 => "amd-perfmon-v2",
        }
    }

    /// (event-select MSR, counter MSR) of counter 0.
    pub fn msrs(self) -> (u32, u32) {
        self.msrs_n(0)
    }

    /// (event-select MSR, counter MSR) of general-purpose counter `n`.
    pub fn msrs_n(self, n: u8) -> (u32, u32) {
        let n = n as u32;
        match self {
            Counter::IntelArch { .. } => (msr::IA32_PERFEVTSEL0 + n, msr::IA32_PMC0 + n),
            Counter::AmdLegacy => (msr::AMD_PERF_CTL0 + n, msr::AMD_PERF_CTR0 + n),
            Counter::AmdExtCore | Counter::AmdPerfMonV2 => (msr::AMD_PERF_CTL_EXT0 + 2 * n, msr::AMD_PERF_CTR_EXT0 + 2 * n),
        }
    }

    /// The global registers, where this counter set has them.
    pub fn global(self) -> Option<Global> {
        match self {
            Counter::IntelArch { version } if version >= 2 => {
                Some(Global { ctrl: msr::IA32_PERF_GLOBAL_CTRL, status: msr::IA32_PERF_GLOBAL_STATUS, clear: msr::IA32_PERF_GLOBAL_OVF_CTRL })
            }
            Counter::AmdPerfMonV2 => Some(Global {
                ctrl: msr::AMD_PERF_CNTR_GLOBAL_CTL,
                status: msr::AMD_PERF_CNTR_GLOBAL_STATUS,
                clear: msr::AMD_PERF_CNTR_GLOBAL_STATUS_CLR,
            }),
            _ => None,
        }
    }

    /// The event-select value: core cycles, user+kernel, interrupt, enabled.
    pub fn evtsel(self, interrupt: bool) -> u64 {
        let event = match self {
            Counter::IntelArch { .. } => msr::INTEL_EVENT_CORE_CYCLES,
            Counter::AmdLegacy | Counter::AmdExtCore | Counter::AmdPerfMonV2 => msr::AMD_EVENT_CPU_CLOCKS,
        };
        event | msr::EVTSEL_USR | msr::EVTSEL_OS | msr::EVTSEL_EN | if interrupt { msr::EVTSEL_INT } else { 0 }
    }
}

/// What CPUID says about the PMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// A counter set to try: counters of this width in bits, and how many
    /// general-purpose ones there are.
    Counter { counter: Counter, width: u8, counters: u8 },
    /// No usable counter, and why.
    None(&'static str),
}

/// Vendor strings of CPUID leaf 0 beyond Intel's and AMD's.
pub const ZHAOXIN: &str = "  Shanghai  ";
pub const CENTAUR: &str = "CentaurHauls";
pub const HYGON: &str = "HygonGenuine";

/// Read the PMU facts from CPUID.
pub fn offer<R: CpuIdReader>(cpuid: &CpuId<R>) -> Offer {
    let vendor = cpuid.get_vendor_info();
    match vendor.as_ref().map(|v| v.as_str()) {
        // Zhaoxin (and Centaur, its predecessor's name) implement Intel's
        // architectural performance monitoring, described by leaf 0xA (Linux
        // `arch/x86/events/zhaoxin/core.c` reads the same leaf).
        Some("GenuineIntel") | Some(ZHAOXIN) | Some(CENTAUR) => {
            let Some(pm) = cpuid.get_performance_monitoring_info() else {
                return Offer::None("CPUID leaf 0xA (architectural performance monitoring) is absent");
            };
            if pm.version_id() == 0 {
                return Offer::None("CPUID leaf 0xA reports architectural perfmon version 0 (no PMU, e.g. QEMU TCG or a VM without vPMU)");
            }
            if pm.number_of_counters() == 0 {
                return Offer::None("CPUID leaf 0xA reports no general-purpose counter");
            }
            if pm.is_core_cyc_ev_unavailable() {
                return Offer::None("CPUID leaf 0xA says the core-cycles event is unavailable");
            }
            Offer::Counter { counter: Counter::IntelArch { version: pm.version_id() }, width: pm.counter_bit_width(), counters: pm.number_of_counters() }
        }
        Some("AuthenticAMD") | Some(HYGON) => {
            let ext = cpuid.get_extended_processor_and_feature_identifiers();
            let v2 = cpuid.get_extended_performance_monitoring_and_debug().filter(|p| p.has_perf_mon_v2());
            // AMD counters are 48 bits wide (APM Vol. 2 §13.2.1): 4 legacy
            // ones, 6 with the core extension, Fn8000_0022_EBX[3:0] with PerfMonV2.
            let (counter, counters) = match v2 {
                Some(p) => (Counter::AmdPerfMonV2, p.num_perf_ctr_core().max(1)),
                None if ext.is_some_and(|e| e.has_perf_cntr_extensions()) => (Counter::AmdExtCore, 6),
                None => (Counter::AmdLegacy, 4),
            };
            Offer::Counter { counter, width: 48, counters }
        }
        _ => Offer::None("unknown CPU vendor: no known performance counters"),
    }
}

/// The NMI source in force on a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A cycles counter overflowing through the LVT performance-counter entry.
    PerfCounter(Counter),
    /// NMI IPIs broadcast from CPU 0's local-APIC timer, and why.
    IpiBroadcast(&'static str),
    /// The watchdog is off (`nmi_watchdog=0`).
    Off,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::PerfCounter(c) => c.name(),
            Source::IpiBroadcast(_) => "ipi-broadcast",
            Source::Off => "off",
        }
    }
}

/// Decide from the offer and the probe ("does the counter really count?").
pub fn select(offer: Offer, counts: Option<bool>) -> Source {
    match (offer, counts) {
        (Offer::None(why), _) => Source::IpiBroadcast(why),
        (Offer::Counter { counter, .. }, Some(true)) => Source::PerfCounter(counter),
        (Offer::Counter { .. }, Some(false)) => {
            Source::IpiBroadcast("the performance counter does not count (writes accepted, value unchanged: no virtual PMU)")
        }
        (Offer::Counter { .. }, None) => Source::IpiBroadcast("the performance counter MSRs fault (#GP)"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeriodError {
    ZeroRate,
    /// The counter is too narrow.
    Width(u8),
}

/// Cycles between two NMIs at `hz` with a `cpu_hz` core clock, limited to
/// what one write can load: Intel's legacy PMC writes sign-extend bit 31
/// (SDM Vol. 3B §20.2.2), so at most 2^31 - 1; AMD loads the full width.
pub fn period(cpu_hz: u64, hz: u32, counter: Counter, width: u8) -> Result<u64, PeriodError> {
    if hz == 0 {
        return Err(PeriodError::ZeroRate);
    }
    if !(32..=64).contains(&width) {
        return Err(PeriodError::Width(width));
    }
    let max = match counter {
        Counter::IntelArch { .. } => (1u64 << 31) - 1,
        _ => (1u64 << (width - 1)) - 1,
    };
    Ok((cpu_hz / hz as u64).clamp(1, max))
}

/// The value to load so that the counter overflows after `period` events.
pub fn initial_count(period: u64, width: u8) -> u64 {
    let mask = if width >= 64 { u64::MAX } else { (1u64 << width) - 1 };
    0u64.wrapping_sub(period) & mask
}

/// Whether an AMD counter (no global overflow status) has overflowed: it was
/// loaded with its top bit set and counts up through zero.
pub fn amd_overflowed(value: u64, width: u8) -> bool {
    value & (1u64 << (width - 1)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use raw_cpuid::CpuIdResult;

    /// CPUID as seen by a guest: (leaf, subleaf) -> registers; absent leaves are zero.
    fn dump(leaves: &'static [((u32, u32), [u32; 4])]) -> CpuId<impl CpuIdReader> {
        CpuId::with_cpuid_reader(move |eax: u32, ecx: u32| {
            let r = leaves.iter().find(|((l, s), _)| *l == eax && (*s == ecx || *l != 0xB && *l != 0x7 && *l != 0xD && *s == 0));
            let [a, b, c, d] = r.map(|(_, v)| *v).unwrap_or([0; 4]);
            CpuIdResult { eax: a, ebx: b, ecx: c, edx: d }
        })
    }

    // Vendor strings in EBX, EDX, ECX order.
    const INTEL: [u32; 3] = [0x756e_6547, 0x4965_6e69, 0x6c65_746e];
    const AMD: [u32; 3] = [0x6874_7541, 0x6974_6e65, 0x444d_4163];

    /// A KVM guest on an Intel host with a virtual PMU: QEMU `-cpu host`
    /// exposes leaf 0xA as version 2, 4 GP counters of 48 bits, all
    /// architectural events available, hypervisor bit set in leaf 1.
    /// Transcribed (no Intel KVM host was at hand to record one): the leaf
    /// values follow KVM's PMU CPUID for Skylake-class hosts.
    static KVM_INTEL_VPMU: &[((u32, u32), [u32; 4])] = &[
        ((0, 0), [0xd, INTEL[0], INTEL[2], INTEL[1]]),
        ((1, 0), [0x0005_0654, 0x0000_0800, 0xfffa_3223, 0x0f8b_fbff]),
        ((0xA, 0), [0x0730_0402, 0, 0, 0x0000_0603]),
        ((0x8000_0000, 0), [0x8000_0008, 0, 0, 0]),
    ];

    /// The same guest with `-cpu host,pmu=off`: leaf 0xA is all zeros.
    static KVM_INTEL_NO_PMU: &[((u32, u32), [u32; 4])] = &[
        ((0, 0), [0xd, INTEL[0], INTEL[2], INTEL[1]]),
        ((1, 0), [0x0005_0654, 0x0000_0800, 0xfffa_3223, 0x0f8b_fbff]),
        ((0x8000_0000, 0), [0x8000_0008, 0, 0, 0]),
    ];

    /// A KVM guest on an AMD EPYC host: Fn8000_0001_ECX has PerfCtrExtCore (bit 23).
    static KVM_AMD_EPYC: &[((u32, u32), [u32; 4])] = &[
        ((0, 0), [0x10, AMD[0], AMD[2], AMD[1]]),
        ((1, 0), [0x0083_0f10, 0x0000_0800, 0xfef8_3203, 0x178b_fbff]),
        ((0x8000_0000, 0), [0x8000_0023, AMD[0], AMD[2], AMD[1]]),
        ((0x8000_0001, 0), [0x0083_0f10, 0, 0x0080_01f3, 0x2fd3_fbff]),
    ];

    /// An older AMD model without PerfCtrExtCore (QEMU `-cpu Opteron_G3`).
    static AMD_OPTERON: &[((u32, u32), [u32; 4])] = &[
        ((0, 0), [0x5, AMD[0], AMD[2], AMD[1]]),
        ((1, 0), [0x0010_0f91, 0x0000_0800, 0x8080_2009, 0x078b_fbff]),
        ((0x8000_0000, 0), [0x8000_0008, AMD[0], AMD[2], AMD[1]]),
        ((0x8000_0001, 0), [0x0010_0f91, 0, 0x0000_0035, 0x2fd3_fbff]),
    ];

    /// A recorded dump (`cargo xtask cpuid-dump`): `leaf subleaf eax ebx ecx edx` in hex.
    fn recorded(text: &'static str) -> CpuId<impl CpuIdReader> {
        let rows: std::vec::Vec<(u32, u32, [u32; 4])> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let w: std::vec::Vec<u32> = l.split_whitespace().map(|x| u32::from_str_radix(x, 16).unwrap()).collect();
                (w[0], w[1], [w[2], w[3], w[4], w[5]])
            })
            .collect();
        CpuId::with_cpuid_reader(move |eax: u32, ecx: u32| {
            let r = rows.iter().find(|(l, s, _)| *l == eax && *s == ecx).or_else(|| rows.iter().find(|(l, s, _)| *l == eax && *s == 0));
            let [a, b, c, d] = r.map(|(_, _, v)| *v).unwrap_or([0; 4]);
            CpuIdResult { eax: a, ebx: b, ecx: c, edx: d }
        })
    }

    #[test]
    fn recorded_kvm_guest_on_amd_epyc() {
        // The development machine: a KVM guest ("KVMKVMKVM" at 0x40000000) on
        // an AMD EPYC (family 0x19, model 0x11), recorded with cargo xtask cpuid-dump.
        let c = recorded(include_str!("../../tests/data/cpuid/kvm-guest-amd-epyc-zen4.txt"));
        assert!(c.get_feature_info().unwrap().has_hypervisor());
        let hv = c.get_hypervisor_info().unwrap();
        assert_eq!(hv.identify(), raw_cpuid::Hypervisor::KVM);
        // No PerfCtrExtCore in Fn8000_0001_ECX here: the legacy counters are offered,
        // and the watchdog then probes whether the virtual PMU really counts.
        let o = offer(&c);
        assert_eq!(o, Offer::Counter { counter: Counter::AmdLegacy, width: 48, counters: 4 });
        assert!(matches!(select(o, Some(false)), Source::IpiBroadcast(w) if w.contains("does not count")));
    }

    #[test]
    fn intel_kvm_guests() {
        let o = offer(&dump(KVM_INTEL_VPMU));
        assert_eq!(o, Offer::Counter { counter: Counter::IntelArch { version: 2 }, width: 48, counters: 4 });
        assert_eq!(select(o, Some(true)), Source::PerfCounter(Counter::IntelArch { version: 2 }));
        // A vPMU that does not count (host without PMU passthrough) falls back.
        assert!(matches!(select(o, Some(false)), Source::IpiBroadcast(w) if w.contains("does not count")));
        let o = offer(&dump(KVM_INTEL_NO_PMU));
        assert!(matches!(o, Offer::None(w) if w.contains("version 0")));
        assert!(matches!(select(o, None), Source::IpiBroadcast(_)));
    }

    /// The vendor string as CPUID leaf 0 returns it (EBX, EDX, ECX).
    fn vendor_regs(v: &str) -> [u32; 3] {
        let b = v.as_bytes();
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        [w(0), w(4), w(8)]
    }

    #[test]
    fn zhaoxin_centaur_and_hygon_are_known_vendors() {
        for v in [ZHAOXIN, CENTAUR] {
            let r = vendor_regs(v);
            let leaves: &'static [((u32, u32), [u32; 4])] = Box::leak(Box::new([((0, 0), [0xd, r[0], r[2], r[1]]), ((0xA, 0), [0x0730_0402, 0, 0, 0x0000_0603])]));
            assert_eq!(offer(&dump(leaves)), Offer::Counter { counter: Counter::IntelArch { version: 2 }, width: 48, counters: 4 }, "{v:?}");
            let no_pmu: &'static [((u32, u32), [u32; 4])] = Box::leak(Box::new([((0, 0), [0xd, r[0], r[2], r[1]])]));
            assert!(matches!(offer(&dump(no_pmu)), Offer::None(w) if !w.contains("unknown CPU vendor")), "{v:?}");
        }
        let h = vendor_regs(HYGON);
        let leaves: &'static [((u32, u32), [u32; 4])] = Box::leak(Box::new([((0, 0), [0xd, h[0], h[2], h[1]]), ((0x8000_0000, 0), [0x8000_0008, 0, 0, 0])]));
        assert_eq!(offer(&dump(leaves)), Offer::Counter { counter: Counter::AmdLegacy, width: 48, counters: 4 });
    }

    #[test]
    fn amd_guests_pick_the_extended_counters_when_offered() {
        assert_eq!(offer(&dump(KVM_AMD_EPYC)), Offer::Counter { counter: Counter::AmdExtCore, width: 48, counters: 6 });
        assert_eq!(offer(&dump(AMD_OPTERON)), Offer::Counter { counter: Counter::AmdLegacy, width: 48, counters: 4 });
        assert_eq!(Counter::AmdExtCore.msrs(), (0xC001_0200, 0xC001_0201));
        assert!(matches!(select(offer(&dump(AMD_OPTERON)), None), Source::IpiBroadcast(w) if w.contains("#GP")));
    }

    #[test]
    fn event_selects() {
        // Intel: event 0x3C, USR|OS|INT|EN = 0x53003C.
        assert_eq!(Counter::IntelArch { version: 2 }.evtsel(true), 0x0053_003C);
        assert_eq!(Counter::IntelArch { version: 2 }.evtsel(false), 0x0043_003C);
        assert_eq!(Counter::AmdLegacy.evtsel(true), 0x0053_0076);
    }

    #[test]
    fn periods_and_initial_counts() {
        let intel = Counter::IntelArch { version: 2 };
        assert_eq!(period(3_000_000_000, 1000, intel, 48), Ok(3_000_000));
        // 1 Hz at 3 GHz does not fit a sign-extended 32-bit write.
        assert_eq!(period(3_000_000_000, 1, intel, 48), Ok((1 << 31) - 1));
        assert_eq!(period(3_000_000_000, 1, Counter::AmdLegacy, 48), Ok(3_000_000_000));
        assert_eq!(period(1000, 10_000, intel, 48), Ok(1), "never zero");
        assert_eq!(period(1, 0, intel, 48), Err(PeriodError::ZeroRate));
        assert_eq!(period(1, 1, intel, 8), Err(PeriodError::Width(8)));
        let c = initial_count(3_000_000, 48);
        assert_eq!(c, (1 << 48) - 3_000_000);
        assert!(!amd_overflowed(c, 48));
        assert!(amd_overflowed((c + 3_000_000) & ((1 << 48) - 1), 48), "wrapped through zero");
    }
}
