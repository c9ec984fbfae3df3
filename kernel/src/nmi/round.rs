//! Who sends a round of watchdog NMI IPIs, so that no single CPU is a
//! point of failure. Pure logic (host-tested); `watchdog.rs` applies it.
//!
//! Rounds are due at the watchdog rate. The primary sender (CPU 0, whose
//! local-APIC timer runs at that rate) sends one on every tick. Every other
//! CPU's timer tick looks at when the last round went out: when none has for
//! [`takeover_ns`], the primary is not ticking (stuck with interrupts off,
//! waiting somewhere with them off, or dead), and this CPU sends the round
//! itself, claiming it with a compare-and-swap so that one CPU sends it. The
//! sending role thus moves to any CPU whose timer still ticks, and comes
//! back to the primary as soon as it ticks again. The stuck CPU keeps
//! receiving NMIs, so its own hard lockup is reported.
//!
//! Linux has no such broadcast (each CPU's perf counter raises its own NMI,
//! `kernel/watchdog_perf.c`); its buddy detector (`kernel/watchdog_buddy.c`,
//! 6.5 and later) has each CPU's timer check its neighbour's for the same
//! reason: the check must not depend on the CPU being checked.

/// Rounds missed before another CPU sends them.
pub const TAKEOVER_PERIODS: u64 = 4;
/// ...and at least this long: under single-threaded TCG a CPU's turn on the
/// host thread can leave its timer a few periods late without it being stuck.
pub const TAKEOVER_MIN_NS: u64 = 100_000_000;

/// How long no round may go out before a secondary CPU sends one.
pub const fn takeover_ns(hz: u32) -> u64 {
    let period = 1_000_000_000 / if hz == 0 { 1 } else { hz as u64 };
    let n = TAKEOVER_PERIODS * period;
    if n > TAKEOVER_MIN_NS { n } else { TAKEOVER_MIN_NS }
}

/// Should a timer tick at `now_ns` send a round? `last_ns` is when the last
/// round went out (from any CPU).
pub fn due(primary: bool, now_ns: u64, last_ns: u64, hz: u32) -> bool {
    primary || now_ns.saturating_sub(last_ns) >= takeover_ns(hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_sends_every_tick() {
        assert!(due(true, 5, 5, 1000));
        assert!(due(true, 0, u64::MAX, 1000));
    }

    #[test]
    fn a_secondary_sends_only_when_rounds_stopped() {
        // 1000 Hz: 4 periods are 4 ms, below the 100 ms floor.
        assert_eq!(takeover_ns(1000), 100_000_000);
        assert!(!due(false, 1_099_999_999, 1_000_000_000, 1000));
        assert!(due(false, 1_100_000_000, 1_000_000_000, 1000));
        // 1 Hz: four periods.
        assert_eq!(takeover_ns(1), 4_000_000_000);
        assert!(!due(false, 3_999_999_999, 0, 1));
        // A round stamped after this tick read the clock is never "stopped".
        assert!(!due(false, 10, 20, 1000));
    }

    #[test]
    fn zero_hz_does_not_divide_by_zero() {
        assert_eq!(takeover_ns(0), 4_000_000_000);
    }
}
