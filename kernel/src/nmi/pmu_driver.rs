//! The performance-counter watchdog's logic over a small register
//! interface ([`Regs`]: MSRs and the LVT performance-counter entry), so the
//! same code runs on the CPU (`watchdog.rs`) and, in the tests below,
//! against a PMU simulated from the manuals.
//!
//! What it does, and where the rule comes from:
//! - Arming takes the first general-purpose counter firmware is not using:
//!   an event select with its enable bit already set belongs to someone else
//!   (Linux `check_hw_exists`, "BIOS has corrupted hw-PMU resources"). The
//!   counter is loaded with `-period`; Intel's legacy counter writes keep 32
//!   bits and sign-extend bit 31 to the counter's width (SDM Vol. 3B
//!   §21.2.2), which `-period` with a period below 2^31 survives.
//! - With global controls (Intel perfmon v2+: IA32_PERF_GLOBAL_CTRL/STATUS/
//!   OVF_CTRL, SDM Vol. 3B §21.2.2; AMD PerfMonV2: PerfCntrGlobalCtl/Status/
//!   StatusClr, APM Vol. 2 §13.2.2) a counter counts only with its global
//!   enable bit set, and its overflow is read and acknowledged there. Without
//!   them (Intel v1, AMD legacy and core-extension counters) an overflow is a
//!   counter that wrapped through zero: its top bit clear.
//! - The LVT performance-counter entry is re-armed on every NMI the handler
//!   sees, whoever raised it: Intel masks it on every PMI delivery (SDM Vol.
//!   3A §11.5.1), so a PMI from another counter would otherwise silence the
//!   watchdog (Linux rewrites APIC_LVTPC on every PMU NMI, "late ack").
//! - An NMI no counter claims shortly after one that did is a late PMI (AMD
//!   delivers some after the status was cleared: Linux `perf_nmi_window`),
//!   counted apart from unknown NMIs.
//! - A counter that counts but whose overflow never raises an NMI is found
//!   at arming (no NMI within [`FIRST_NMI_WITHIN_NS`]) and the IPI source used.

use super::pmu::{Counter, amd_overflowed, msr};

/// MSR and LVT access; `None`/`false` when the access faults (#GP).
pub trait Regs {
    fn rdmsr(&mut self, msr: u32) -> Option<u64>;
    fn wrmsr(&mut self, msr: u32, value: u64) -> bool;
    /// Write the LVT performance-counter entry: delivery mode NMI, unmasked.
    fn arm_lvtpc(&mut self);
}

/// The first watchdog NMI must come this soon after arming.
pub const FIRST_NMI_WITHIN_NS: u64 = 100_000_000;
/// An unclaimed NMI this soon after a counter's is a late PMI (Linux
/// `perf_nmi_window`: 100 ms in `arch/x86/events/amd/core.c`).
pub const LATE_PMI_WINDOW_NS: u64 = 100_000_000;

/// A counter programmed for the watchdog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Armed {
    pub counter: Counter,
    /// The general-purpose counter used.
    pub index: u8,
    pub width: u8,
    /// The value loaded after each overflow (`-period` in `width` bits).
    pub initial: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArmError {
    /// Every general-purpose counter is enabled already (firmware uses them).
    AllTaken(u8),
    /// An access faulted.
    Fault(u32),
}

impl ArmError {
    pub fn text(self) -> &'static str {
        match self {
            ArmError::AllTaken(_) => "every performance counter is already in use (enabled by firmware)",
            ArmError::Fault(_) => "a performance-counter MSR faults (#GP)",
        }
    }
}

/// The first general-purpose counter of `counter`'s set (`counters` of
/// them) whose event select is not enabled: the others are firmware's.
pub fn free_counter(r: &mut impl Regs, counter: Counter, counters: u8) -> Result<u8, ArmError> {
    for n in 0..counters.max(1) {
        let (sel, _) = counter.msrs_n(n);
        if r.rdmsr(sel).ok_or(ArmError::Fault(sel))? & msr::EVTSEL_EN == 0 {
            return Ok(n);
        }
    }
    Err(ArmError::AllTaken(counters))
}

/// Program the first free counter of `counter`'s set (`counters` of them,
/// `width` bits) to overflow after `period` events, interrupting through the
/// LVT entry as NMI. Returns what was armed, and how many counters were
/// skipped because firmware had them.
pub fn arm(r: &mut impl Regs, counter: Counter, width: u8, counters: u8, initial: u64) -> Result<(Armed, u8), ArmError> {
    let n = free_counter(r, counter, counters)?;
    let (sel, ctr) = counter.msrs_n(n);
    let mut w = |m: u32, v: u64| if r.wrmsr(m, v) { Ok(()) } else { Err(ArmError::Fault(m)) };
    w(sel, 0)?;
    w(ctr, initial)?;
    if let Some(g) = counter.global() {
        w(g.clear, 1 << n)?;
    }
    r.arm_lvtpc();
    if let Some(g) = counter.global() {
        let ctl = r.rdmsr(g.ctrl).ok_or(ArmError::Fault(g.ctrl))?;
        if !r.wrmsr(g.ctrl, ctl | 1 << n) {
            return Err(ArmError::Fault(g.ctrl));
        }
    }
    if !r.wrmsr(sel, counter.evtsel(true)) {
        return Err(ArmError::Fault(sel));
    }
    Ok((Armed { counter, index: n, width, initial }, n))
}

/// The NMI handler's PMU step: did our counter overflow? If so reload it
/// and acknowledge its overflow. In every case the LVT entry is re-armed.
pub fn on_nmi(r: &mut impl Regs, a: &Armed) -> bool {
    let (_, ctr) = a.counter.msrs_n(a.index);
    let bit = 1u64 << a.index;
    let over = match a.counter.global() {
        Some(g) => r.rdmsr(g.status).is_some_and(|st| st & bit != 0),
        None => r.rdmsr(ctr).is_some_and(|v| amd_overflowed(v, a.width)),
    };
    if over {
        r.wrmsr(ctr, a.initial);
        if let Some(g) = a.counter.global() {
            r.wrmsr(g.clear, bit);
        }
    }
    r.arm_lvtpc();
    over
}

/// The counter counts core cycles, but its period was computed from the
/// TSC's frequency: with turbo (or a throttled clock) the NMI rate drifts
/// from the configured one. Given the counter NMIs `nmis` measured over
/// `window_ns` (the median CPU), the period that brings the rate back to
/// `hz`, when it is off by more than 10%; clamped to `max` (what one counter
/// write can load). `None`: leave it.
pub fn corrected_period(period: u64, nmis: u64, window_ns: u64, hz: u32, max: u64) -> Option<u64> {
    if nmis == 0 || window_ns == 0 || hz == 0 {
        return None;
    }
    // measured = nmis / window; events per second = period x measured.
    let measured_mhz = nmis as u128 * 1_000_000_000_000 / window_ns as u128; // milli-Hz
    let want_mhz = hz as u128 * 1000;
    let off = measured_mhz.abs_diff(want_mhz) * 100 / want_mhz;
    if off <= 10 {
        return None;
    }
    let p = (period as u128 * measured_mhz / want_mhz).clamp(1, max as u128) as u64;
    (p != period).then_some(p)
}

/// What an NMI no source claimed was, given the time since this CPU's last
/// counter NMI (`None`: never).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unclaimed {
    LatePmi,
    Unknown,
}

pub fn unclaimed(since_last_pmi_ns: Option<u64>) -> Unclaimed {
    match since_last_pmi_ns {
        Some(d) if d <= LATE_PMI_WINDOW_NS => Unclaimed::LatePmi,
        _ => Unclaimed::Unknown,
    }
}

/// How long to wait for the first watchdog NMI at `hz`: about 100 ms, or
/// three periods where the rate is slower.
pub fn first_nmi_deadline_ns(hz: u32) -> u64 {
    FIRST_NMI_WITHIN_NS.max(3_000_000_000 / hz.max(1) as u64)
}

/// Did the first watchdog NMI come in time? `None`: keep waiting.
pub fn first_nmi(nmis: u64, since_arm_ns: u64, deadline_ns: u64) -> Option<bool> {
    if nmis > 0 {
        Some(true)
    } else if since_arm_ns >= deadline_ns {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::pmu::{initial_count, msr, period};
    use super::*;

    /// A PMU simulated from the manuals: general-purpose counters of `width`
    /// bits with event selects, optional global registers, and the LVT
    /// performance-counter entry.
    ///
    /// - Counting: a counter counts when its event select has EN, and (with
    ///   global registers) its global enable bit is set (SDM Vol. 3B §21.2.2;
    ///   APM Vol. 2 §13.2.2).
    /// - Writes: Intel's legacy counter addresses keep bits 31:0 and
    ///   sign-extend bit 31 to the width (SDM Vol. 3B §21.2.2); AMD's take
    ///   the full width.
    /// - Overflow: the counter wraps through zero; with global registers its
    ///   status bit is set; with INT in its event select a PMI is raised.
    /// - PMI delivery: through the LVT entry when it is unmasked and set to
    ///   NMI; on Intel, delivery masks the entry (SDM Vol. 3A §11.5.1).
    struct Sim {
        intel: bool,
        counter: Counter,
        width: u8,
        sel: Vec<u64>,
        val: Vec<u64>,
        global_ctl: u64,
        global_status: u64,
        lvt_armed: bool,
        /// NMIs raised and not yet taken.
        pending: u32,
        /// Fault: the PMI line never reaches the local APIC.
        pmis_lost: bool,
    }

    impl Sim {
        fn new(counter: Counter, width: u8, counters: usize) -> Sim {
            let intel = matches!(counter, Counter::IntelArch { .. });
            Sim { intel, counter, width, sel: vec![0; counters], val: vec![0; counters], global_ctl: 0, global_status: 0, lvt_armed: false, pending: 0, pmis_lost: false }
        }
        fn mask(&self) -> u64 {
            (1u64 << self.width) - 1
        }
        fn counting(&self, n: usize) -> bool {
            self.sel[n] & msr::EVTSEL_EN != 0 && (self.counter.global().is_none() || self.global_ctl & (1 << n) != 0)
        }
        /// `events` events on every counting counter.
        fn run(&mut self, events: u64) {
            for n in 0..self.sel.len() {
                if !self.counting(n) {
                    continue;
                }
                let before = self.val[n];
                let after = (before + events) & self.mask();
                self.val[n] = after;
                if after < before {
                    self.overflow(n);
                }
            }
        }
        fn overflow(&mut self, n: usize) {
            if self.counter.global().is_some() {
                self.global_status |= 1 << n;
            }
            if self.sel[n] & msr::EVTSEL_INT != 0 && !self.pmis_lost && self.lvt_armed {
                self.pending += 1;
                if self.intel {
                    self.lvt_armed = false;
                }
            }
        }
        fn which(&self, m: u32) -> Option<(bool, usize)> {
            (0..self.sel.len() as u8).find_map(|n| {
                let (s, c) = self.counter.msrs_n(n);
                if m == s {
                    Some((true, n as usize))
                } else if m == c {
                    Some((false, n as usize))
                } else {
                    None
                }
            })
        }
        /// Take one pending NMI through the driver; true if it claimed it.
        fn take(&mut self, a: &Armed) -> bool {
            assert!(self.pending > 0, "no NMI pending");
            self.pending -= 1;
            on_nmi(self, a)
        }
    }

    impl Regs for Sim {
        fn rdmsr(&mut self, m: u32) -> Option<u64> {
            if let Some(g) = self.counter.global() {
                if m == g.ctrl {
                    return Some(self.global_ctl);
                }
                if m == g.status {
                    return Some(self.global_status);
                }
            }
            match self.which(m)? {
                (true, n) => Some(self.sel[n]),
                (false, n) => Some(self.val[n]),
            }
        }
        fn wrmsr(&mut self, m: u32, v: u64) -> bool {
            if let Some(g) = self.counter.global() {
                if m == g.ctrl {
                    self.global_ctl = v;
                    return true;
                }
                if m == g.clear {
                    self.global_status &= !v;
                    return true;
                }
                if m == g.status {
                    return false; // read-only
                }
            }
            match self.which(m) {
                Some((true, n)) => self.sel[n] = v,
                Some((false, n)) => {
                    self.val[n] = if self.intel { (v as u32 as i32 as i64 as u64) & self.mask() } else { v & self.mask() };
                }
                None => return false,
            }
            true
        }
        fn arm_lvtpc(&mut self) {
            self.lvt_armed = true;
        }
    }

    const P: u64 = 3_000_000; // 1 kHz at 3 GHz

    fn armed(sim: &mut Sim, counters: u8) -> Armed {
        let p = period(3_000_000_000, 1000, sim.counter, sim.width).unwrap();
        assert_eq!(p, P);
        arm(sim, sim.counter, sim.width, counters, initial_count(p, sim.width)).unwrap().0
    }

    /// A hundred periods: one NMI each, every one claimed.
    fn hundred_periods(sim: &mut Sim, a: &Armed) {
        for i in 0..100 {
            sim.run(P - 1);
            assert_eq!(sim.pending, 0, "early NMI in period {i}");
            sim.run(1);
            assert_eq!(sim.pending, 1, "no NMI at the end of period {i} ({:?})", sim.counter);
            assert!(sim.take(a), "NMI {i} not claimed");
        }
    }

    #[test]
    fn every_register_set_and_width() {
        for (counter, width, counters) in [
            (Counter::IntelArch { version: 1 }, 40, 2),
            (Counter::IntelArch { version: 2 }, 40, 4),
            (Counter::IntelArch { version: 4 }, 48, 8),
            (Counter::IntelArch { version: 5 }, 48, 8),
            (Counter::AmdLegacy, 48, 4),
            (Counter::AmdExtCore, 48, 6),
            (Counter::AmdPerfMonV2, 48, 6),
        ] {
            let mut sim = Sim::new(counter, width, counters);
            let a = armed(&mut sim, counters as u8);
            assert_eq!(a.index, 0);
            // The sign-extended write left exactly -period in the counter.
            assert_eq!(sim.val[0], (1u64 << width) - P, "{counter:?}");
            hundred_periods(&mut sim, &a);
        }
    }

    /// Issue 28: with the counter source no CPU depends on another for its
    /// NMIs. Three CPUs' PMUs: CPU 0 stops counting (halted: unhalted-cycle
    /// events stop), CPU 1 spins with interrupts off (it still counts
    /// cycles), CPU 2 runs on. CPUs 1 and 2 take one claimed NMI a period
    /// each, whatever CPU 0 does; CPU 0 resumes at its next period.
    #[test]
    fn each_cpus_counter_is_its_own_nmi_source() {
        for (counter, width) in [(Counter::IntelArch { version: 4 }, 48), (Counter::AmdPerfMonV2, 48)] {
            let mut cpus: Vec<Sim> = (0..3).map(|_| Sim::new(counter, width, 4)).collect();
            let armed: Vec<Armed> = cpus.iter_mut().map(|s| armed(s, 4)).collect();
            for period in 0..50 {
                for (i, (sim, a)) in cpus.iter_mut().zip(&armed).enumerate() {
                    if i == 0 && period >= 10 {
                        continue; // CPU 0 halted or gone: its counter stands still.
                    }
                    sim.run(P);
                    assert_eq!(sim.pending, 1, "{counter:?}: cpu{i} in period {period}");
                    assert!(sim.take(a));
                }
            }
            assert_eq!(cpus[0].pending, 0);
            cpus[0].run(P);
            assert!(cpus[0].pending == 1 && cpus[0].take(&armed[0]), "{counter:?}: CPU 0 counts again");
        }
    }

    /// PerfMonV2 counts only with the global enable: arming must set it.
    #[test]
    fn perfmon_v2_needs_its_global_enable() {
        let mut sim = Sim::new(Counter::AmdPerfMonV2, 48, 6);
        let a = armed(&mut sim, 6);
        assert_eq!(sim.global_ctl & 1, 1);
        sim.run(P);
        assert!(sim.take(&a));
        assert_eq!(sim.global_status, 0, "the overflow was acknowledged in PerfCntrGlobalStatusClr");
    }

    /// Firmware left counter 0 enabled (SMM uses it): counter 1 is armed and
    /// counter 0 is left as found.
    #[test]
    fn a_counter_firmware_owns_is_left_alone() {
        let mut sim = Sim::new(Counter::IntelArch { version: 2 }, 48, 4);
        let firmware = msr::INTEL_EVENT_CORE_CYCLES | msr::EVTSEL_OS | msr::EVTSEL_EN;
        sim.sel[0] = firmware;
        sim.global_ctl = 1;
        let a = armed(&mut sim, 4);
        assert_eq!(a.index, 1);
        assert_eq!(sim.sel[0], firmware);
        assert_eq!(sim.global_ctl, 0b11, "the firmware's enable kept, ours added");
        hundred_periods(&mut sim, &a);
        // Every counter taken: no watchdog counter, and why.
        let mut full = Sim::new(Counter::AmdLegacy, 48, 4);
        full.sel.iter_mut().for_each(|s| *s = msr::EVTSEL_EN);
        assert_eq!(arm(&mut full, Counter::AmdLegacy, 48, 4, 1), Err(ArmError::AllTaken(4)));
    }

    /// A second PMI source (firmware's counter with INT) masks the LVT entry
    /// on Intel; the handler does not claim that NMI but re-arms the entry,
    /// so the watchdog's own PMIs keep coming.
    #[test]
    fn another_pmi_source_does_not_silence_the_watchdog() {
        let mut sim = Sim::new(Counter::IntelArch { version: 2 }, 48, 4);
        let a = armed(&mut sim, 4);
        // Firmware's counter 2 with INT, about to overflow.
        sim.sel[2] = msr::INTEL_EVENT_CORE_CYCLES | msr::EVTSEL_INT | msr::EVTSEL_EN;
        sim.global_ctl |= 1 << 2;
        sim.val[2] = sim.mask() - 10;
        sim.run(20);
        assert_eq!(sim.pending, 1);
        assert!(!sim.take(&a), "not our counter");
        assert!(sim.lvt_armed, "re-armed although the NMI was not ours");
        sim.sel[2] = 0;
        sim.run(P - 20);
        assert_eq!(sim.pending, 1, "the watchdog's PMI still arrives");
        assert!(sim.take(&a));
    }

    /// The same NMI taken by a handler that re-arms only when it claims the
    /// overflow (what the watchdog did before): the watchdog goes silent.
    #[test]
    fn rearming_only_on_our_overflow_goes_silent() {
        let mut sim = Sim::new(Counter::IntelArch { version: 2 }, 48, 4);
        let _a = armed(&mut sim, 4);
        sim.sel[2] = msr::INTEL_EVENT_CORE_CYCLES | msr::EVTSEL_INT | msr::EVTSEL_EN;
        sim.global_ctl |= 1 << 2;
        sim.val[2] = sim.mask() - 10;
        sim.run(20);
        sim.pending = 0; // taken, not ours, nothing re-armed
        sim.sel[2] = 0;
        sim.run(P);
        assert_eq!(sim.pending, 0, "masked: no more watchdog NMIs");
    }

    /// A counter that counts but never interrupts: no NMI by the deadline.
    #[test]
    fn pmis_never_delivered_are_found_at_arming() {
        let mut sim = Sim::new(Counter::AmdExtCore, 48, 6);
        sim.pmis_lost = true;
        let _a = armed(&mut sim, 6);
        sim.run(10 * P);
        assert_eq!(sim.pending, 0);
        let d = first_nmi_deadline_ns(1000);
        assert_eq!(d, FIRST_NMI_WITHIN_NS);
        assert_eq!(first_nmi(0, d / 2, d), None);
        assert_eq!(first_nmi(0, d, d), Some(false));
        assert_eq!(first_nmi(1, 1_000_000, d), Some(true));
        assert_eq!(first_nmi_deadline_ns(10), 300_000_000, "three periods at 10 Hz");
    }

    /// A late PMI (raised after the overflow was acknowledged) is not
    /// claimed by the counter, and is counted as late, not unknown.
    #[test]
    fn late_pmis_are_not_unknown() {
        let mut sim = Sim::new(Counter::AmdLegacy, 48, 4);
        let a = armed(&mut sim, 4);
        sim.run(P);
        assert!(sim.take(&a));
        sim.pending += 1; // the late one
        assert!(!sim.take(&a));
        assert_eq!(unclaimed(Some(50_000)), Unclaimed::LatePmi);
        assert_eq!(unclaimed(Some(LATE_PMI_WINDOW_NS + 1)), Unclaimed::Unknown);
        assert_eq!(unclaimed(None), Unclaimed::Unknown);
    }

    /// A core clock 30% above the TSC's (turbo): the simulated counter counts
    /// 1.3 events per TSC cycle, so 1,300 NMIs a second for 1,000 configured;
    /// the corrected period brings the rate back within 10%.
    #[test]
    fn rate_corrected_when_the_core_clock_is_not_the_tscs() {
        let mut sim = Sim::new(Counter::IntelArch { version: 2 }, 48, 4);
        let mut a = armed(&mut sim, 4);
        let tsc_per_s = 3_000_000_000u64;
        let measure = |sim: &mut Sim, a: &Armed, period: u64| {
            let mut nmis = 0;
            let core_events = tsc_per_s * 13 / 10;
            let mut left = core_events;
            while left > 0 {
                let step = left.min(period / 4);
                sim.run(step);
                left -= step;
                while sim.pending > 0 {
                    nmis += sim.take(a) as u64;
                }
            }
            nmis
        };
        let n = measure(&mut sim, &a, P);
        assert!((1290..=1310).contains(&n), "{n} NMIs in one second");
        let p = corrected_period(P, n, 1_000_000_000, 1000, (1 << 31) - 1).expect("30% off: corrected");
        a.initial = initial_count(p, 48);
        let n = measure(&mut sim, &a, p);
        assert!((900..=1100).contains(&n), "{n} NMIs in one second after the correction");
        assert_eq!(corrected_period(p, n, 1_000_000_000, 1000, (1 << 31) - 1), None, "within 10%: left alone");
        assert_eq!(corrected_period(P, 0, 1_000_000_000, 1000, u64::MAX), None);
    }

    /// A fault on the event select is reported, not ignored.
    #[test]
    fn faulting_msrs() {
        struct Faulty;
        impl Regs for Faulty {
            fn rdmsr(&mut self, _: u32) -> Option<u64> {
                None
            }
            fn wrmsr(&mut self, _: u32, _: u64) -> bool {
                false
            }
            fn arm_lvtpc(&mut self) {}
        }
        assert_eq!(arm(&mut Faulty, Counter::AmdLegacy, 48, 4, 1), Err(ArmError::Fault(msr::AMD_PERF_CTL0)));
    }
}
