//! What the patching engine is told to do: the strategy, the serializing
//! instruction of sync rounds, and the loop's bounds. The command line
//! (`boot/cmdline.rs`) builds a [`Config`]; the control endpoint changes the
//! strategy, sync mode and batch size at run time (`control.rs`). Pure data,
//! host-tested.

/// How the patching engine changes a site (`strategy=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The breakpoint protocol: int3, sync, tail, sync, head, sync.
    Int3,
    /// The 2008 method: every other CPU held in an IPI handler while the bytes are written.
    StopMachine,
    /// Bytes written in place with no coordination (to show why the protocol exists).
    Naive,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::Int3, Strategy::StopMachine, Strategy::Naive];
    pub const NAMES: &'static str = "int3|stop_machine|naive";

    pub fn parse(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|x| x.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Int3 => "int3",
            Strategy::StopMachine => "stop_machine",
            Strategy::Naive => "naive",
        }
    }
}

/// The serializing instruction of a sync round (`sync=`), SDM Vol. 3A §9.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    Cpuid,
    /// IRET to self.
    Iret,
    /// SERIALIZE (only where CPUID reports it).
    Serialize,
}

impl SyncMode {
    pub const ALL: [SyncMode; 3] = [SyncMode::Cpuid, SyncMode::Iret, SyncMode::Serialize];
    pub const NAMES: &'static str = "cpuid|iret|serialize";

    pub fn parse(s: &str) -> Option<SyncMode> {
        SyncMode::ALL.into_iter().find(|x| x.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Cpuid => "cpuid",
            SyncMode::Iret => "iret",
            SyncMode::Serialize => "serialize",
        }
    }
}

/// The engine's boot configuration (`patch=`, `strategy=`, `sync=`,
/// `patch_*=`, `status_secs=`, `naive_gap_us=`, `trace_nmi_path`,
/// `ftrace_keep_on_nmi`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Run the patching loop (`patch=on|off`).
    pub run: bool,
    pub strategy: Strategy,
    pub sync: SyncMode,
    /// Sites per batch (0: all sites in one batch).
    pub batch: u32,
    /// Pause between batches.
    pub interval_us: u32,
    /// The CPU (dense index) that runs the patching loop.
    pub cpu: u32,
    /// How many of the other CPUs (not the network's) call the traced
    /// functions while the loop runs; the rest idle (`patch_workers=`;
    /// None: all of them).
    pub workers: Option<u32>,
    /// Stop after this many on/off cycles and report (0: run forever).
    pub cycles: u32,
    /// Stop after the cycle that ends past this many seconds and report (0: no limit).
    pub seconds: u32,
    /// Flip only the first N sites (by address; 0: all).
    pub sites: u32,
    /// Seconds between status lines.
    pub status_secs: u32,
    /// `strategy=naive` only: pause between a site's first byte and its tail
    /// (models the patching CPU being interrupted mid-write; widens the window
    /// a short test can see).
    pub naive_gap_us: u32,
    /// Put trace sites on the NMI path (the 2008 situation).
    pub trace_nmi_path: bool,
    /// Keep tracing after traced code ran in NMI context (the warning is still logged).
    pub ftrace_keep_on_nmi: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            run: true,
            strategy: Strategy::Int3,
            sync: SyncMode::Cpuid,
            batch: 256,
            interval_us: 1000,
            cpu: 0,
            workers: None,
            cycles: 0,
            seconds: 0,
            sites: 0,
            status_secs: 5,
            naive_gap_us: 0,
            trace_nmi_path: false,
            ftrace_keep_on_nmi: false,
        }
    }
}

/// A small enum stored in an atomic byte: its index in `ALL`.
pub trait Code: Copy + PartialEq + 'static {
    const ALL_CODES: &'static [Self];

    fn code(self) -> u8 {
        Self::ALL_CODES.iter().position(|&x| x == self).unwrap_or(0) as u8
    }

    /// The value of a code (the first value for one out of range).
    fn from_code(c: u8) -> Self {
        Self::ALL_CODES.get(c as usize).copied().unwrap_or(Self::ALL_CODES[0])
    }
}

impl Code for Strategy {
    const ALL_CODES: &'static [Strategy] = &Strategy::ALL;
}

impl Code for SyncMode {
    const ALL_CODES: &'static [SyncMode] = &SyncMode::ALL;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_codes_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(s.name()), Some(s));
            assert_eq!(Strategy::from_code(s.code()), s);
            assert!(Strategy::NAMES.split('|').any(|n| n == s.name()));
        }
        for m in SyncMode::ALL {
            assert_eq!(SyncMode::parse(m.name()), Some(m));
            assert_eq!(SyncMode::from_code(m.code()), m);
            assert!(SyncMode::NAMES.split('|').any(|n| n == m.name()));
        }
        assert_eq!(Strategy::parse("int4"), None);
        assert_eq!(SyncMode::from_code(200), SyncMode::Cpuid);
    }
}
