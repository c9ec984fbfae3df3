//! Which NMIs are the IPI watchdog's own: counts, not a flag.
//!
//! CPU 0 sends watchdog NMI IPIs; each target counts what it was sent
//! (`sent`, written by the sender before the IPI) and what it has accounted
//! for (`seen`, written only by the target in its NMI handler). A bool
//! "pending" flag cannot count: a target that takes NMI k late can find the
//! flag set for both k and k+1, consume it once, and then meet NMI k+1
//! (latched while the handler ran) with the flag clear - an "unknown" NMI
//! that was ours. Seen under TCG as `unknown=8` after a minute.
//!
//! The hardware facts this follows (SDM Vol. 3A §6.7.1 "Handling Multiple
//! NMIs"): while an NMI handler runs, one further NMI is latched and
//! delivered right after its IRET; more than one collapses into that one.
//! So one handler that accounts for `n > 1` new IPIs may be followed by one
//! latched NMI with nothing new to account for. Linux handles the same case
//! with its "swallow" flag and back-to-back detection (`arch/x86/kernel/nmi.c`,
//! `swallow_nmi`, `last_nmi_rip`): an NMI that finds nothing is swallowed only
//! if an earlier one handled more than one event and it arrived back to back
//! (it interrupted the same instruction as the previous NMI). We do the same
//! with the counts.
//!
//! Pure logic over plain numbers, tested on the host; the handler keeps the
//! state in per-CPU atomics.

/// What one NMI was, as far as the watchdog IPIs go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It accounts for `new` IPIs not seen before (1 normally; more when
    /// several were sent before this CPU took the NMI).
    Ipi { new: u64 },
    /// Nothing new was sent, but an earlier NMI accounted for more than one
    /// IPI and this one came back to back: the latched duplicate.
    Swallowed,
    /// Not ours (the caller checks the other sources).
    NotOurs,
}

/// Per-CPU state kept between NMIs (all written by the CPU itself in its NMI
/// handler, except `sent`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// IPIs accounted for.
    pub seen: u64,
    /// Latched duplicates that may still arrive (IPIs accounted for by an
    /// earlier NMI beyond the one that raised it, at most 1: the CPU latches
    /// at most one NMI).
    pub may_swallow: u64,
    /// The instruction the previous NMI interrupted.
    pub last_rip: u64,
}

/// Classify an NMI that interrupted `rip`, given `sent` (the sender's count,
/// read in the handler). Returns the verdict and the new state.
pub fn classify(sent: u64, rip: u64, s: State) -> (Verdict, State) {
    let back_to_back = rip == s.last_rip;
    if sent > s.seen {
        let new = sent - s.seen;
        let next = State { seen: sent, may_swallow: (new - 1).min(1), last_rip: rip };
        return (Verdict::Ipi { new }, next);
    }
    if s.may_swallow > 0 && back_to_back {
        return (Verdict::Swallowed, State { may_swallow: s.may_swallow - 1, last_rip: rip, ..s });
    }
    // Anything else ends the back-to-back window.
    (Verdict::NotOurs, State { may_swallow: 0, last_rip: rip, ..s })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model of one target CPU (SDM §6.7.1): NMIs raised while the handler
    /// runs latch into one pending NMI, delivered right after IRET at the
    /// same RIP; NMIs raised while none is running or pending are taken at
    /// whatever RIP the CPU is at.
    struct Cpu {
        sent: u64,
        state: State,
        in_handler: bool,
        latched: bool,
        verdicts: Vec<Verdict>,
    }

    impl Cpu {
        fn new() -> Self {
            Cpu { sent: 0, state: State::default(), in_handler: false, latched: false, verdicts: vec![] }
        }
        /// The sender: count, then raise.
        fn send(&mut self) {
            self.sent += 1;
            self.raise();
        }
        /// An NMI from elsewhere (a real unknown one).
        /// Pending or arriving mid-handler, it is latched the same way.
        fn raise(&mut self) {
            self.latched = true;
        }
        /// The CPU enters the handler for a pending NMI at `rip` and reads
        /// `sent` there; `during` runs while the handler is inside (before it
        /// reads the count, the window of the race).
        fn take(&mut self, rip: u64, during: impl FnOnce(&mut Self)) {
            assert!(self.latched, "nothing pending");
            self.latched = false;
            self.in_handler = true;
            during(self);
            let (v, s) = classify(self.sent, rip, self.state);
            self.state = s;
            self.verdicts.push(v);
            self.in_handler = false;
        }
        /// After IRET a latched NMI is delivered at once, at the same RIP.
        fn iret(&mut self, rip: u64) {
            while self.latched {
                self.take(rip, |_| {});
            }
        }
    }

    #[test]
    fn one_ipi_one_nmi() {
        let mut c = Cpu::new();
        for i in 0..100 {
            c.send();
            c.take(0x1000 + i, |_| {});
            c.iret(0x1000 + i);
        }
        assert!(c.verdicts.iter().all(|v| *v == Verdict::Ipi { new: 1 }));
    }

    /// The race the bool flag lost: IPI k+1 sent while the handler for k runs
    /// but before it reads the count. The latched NMI finds nothing new and
    /// is swallowed, not unknown.
    #[test]
    fn ipi_sent_during_handler_before_the_read_is_swallowed() {
        let mut c = Cpu::new();
        c.send();
        c.take(0x2000, |c| c.send());
        c.iret(0x2000);
        assert_eq!(c.verdicts, vec![Verdict::Ipi { new: 2 }, Verdict::Swallowed]);
        // The next IPI is counted normally.
        c.send();
        c.take(0x3000, |_| {});
        assert_eq!(c.verdicts[2], Verdict::Ipi { new: 1 });
    }

    /// Two IPIs before the CPU takes any: the NMIs collapse into one, which
    /// accounts for both; nothing latched follows. A real unknown NMI later,
    /// at another RIP, is still reported as not ours.
    #[test]
    fn collapsed_ipis_leave_no_credit_for_a_later_unknown_nmi() {
        let mut c = Cpu::new();
        c.send();
        c.send();
        c.take(0x4000, |_| {});
        c.iret(0x4000);
        assert_eq!(c.verdicts, vec![Verdict::Ipi { new: 2 }]);
        c.raise();
        c.take(0x5000, |_| {});
        assert_eq!(c.verdicts[1], Verdict::NotOurs);
    }

    /// Even at the same RIP, a non-watchdog NMI is swallowed at most once per
    /// surplus, and only right after the handler that had the surplus.
    #[test]
    fn at_most_one_swallow_per_surplus() {
        let mut c = Cpu::new();
        c.send();
        c.take(0x6000, |c| {
            c.send();
            c.send();
        });
        c.iret(0x6000);
        assert_eq!(c.verdicts, vec![Verdict::Ipi { new: 3 }, Verdict::Swallowed]);
        c.raise();
        c.take(0x6000, |_| {});
        assert_eq!(c.verdicts[2], Verdict::NotOurs);
    }

    /// A surplus not followed back to back (the latched NMI collapsed into the
    /// one being handled) expires at the next NMI elsewhere.
    #[test]
    fn surplus_expires_when_not_back_to_back() {
        let (_, s) = classify(3, 0x7000, State::default());
        assert_eq!(s.may_swallow, 1);
        let (v, s) = classify(3, 0x7100, s);
        assert_eq!(v, Verdict::NotOurs);
        assert_eq!(s.may_swallow, 0);
        let (v, _) = classify(3, 0x7100, s);
        assert_eq!(v, Verdict::NotOurs);
    }

    /// The old flag, for contrast: the same sequence as the race test counts
    /// one unknown NMI. This is the failure the ledger removes.
    #[test]
    fn the_flag_this_replaces_loses_the_race() {
        // send k, then (handler for k entered, flag not consumed yet) send k+1.
        let sets = [true, true];
        let mut pending = sets.iter().any(|s| *s);
        let mut unknown = 0;
        for _nmi in 0..2 {
            if !core::mem::take(&mut pending) {
                unknown += 1;
            }
        }
        assert_eq!(unknown, 1);
    }
}
