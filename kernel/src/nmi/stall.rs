//! A CPU that does not answer a cross-CPU call in time: when to show it.
//! Pure logic (host-tested); `smp/xcall.rs` applies it and
//! `cpu_backtrace.rs` makes the stuck CPU print its state.
//!
//! As Linux's CSD-lock debugging does (`kernel/smp.c`,
//! `csd_lock_wait_toolong`): the waiting CPU notices a target that has not
//! answered within the call's timeout, says so, and has the target print its
//! registers and call trace from an NMI (`trigger_single_cpu_backtrace`,
//! `lib/nmi_backtrace.c`). A stall is one episode: it starts with the first
//! timed-out round a CPU misses and ends with the first round it answers.
//! It is counted once and shown on its first timed-out round, then with a
//! back-off (rounds 2, 4, 8, ...), so a CPU stuck for good is shown again
//! and again without flooding the log.

/// A CPU missed a timed-out round: `rounds` is how many consecutive rounds
/// of this stall it has now missed (1 for the first). Is this one shown?
pub fn report_due(rounds: u64) -> bool {
    rounds.is_power_of_two()
}

/// What a missed round does to a CPU's stall bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missed {
    /// The stall's timed-out rounds so far, this one included.
    pub rounds: u64,
    /// This round starts a new stall (count it).
    pub new_stall: bool,
    /// Show it (NMI backtrace and a console line).
    pub report: bool,
}

/// A round timed out on a CPU that had missed `rounds_before` consecutive rounds.
pub fn missed(rounds_before: u64) -> Missed {
    let rounds = rounds_before.saturating_add(1);
    Missed { rounds, new_stall: rounds_before == 0, report: report_due(rounds) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_counted_once_and_shown_with_back_off() {
        let mut rounds = 0;
        let mut shown = Vec::new();
        let mut stalls = 0;
        for _ in 0..20 {
            let m = missed(rounds);
            rounds = m.rounds;
            stalls += m.new_stall as u32;
            if m.report {
                shown.push(rounds);
            }
        }
        assert_eq!(stalls, 1);
        assert_eq!(shown, [1, 2, 4, 8, 16]);
    }

    #[test]
    fn an_answer_ends_the_stall_and_the_next_one_is_new() {
        let m = missed(5);
        assert!(!m.new_stall);
        // The CPU answered: its rounds went back to 0.
        let m = missed(0);
        assert!(m.new_stall && m.report && m.rounds == 1);
    }

    #[test]
    fn rounds_saturate() {
        assert_eq!(missed(u64::MAX).rounds, u64::MAX);
    }
}
