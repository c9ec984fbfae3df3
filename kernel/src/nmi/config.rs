//! The NMI watchdog's boot configuration (`nmi_watchdog=`, `nmi_watchdog_hz=`,
//! `nmi_source=`, `watchdog_thresh=`). Pure data.

/// Which NMI source the watchdog uses (`nmi_source=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NmiSourceChoice {
    /// The performance counter where one counts, else the IPI broadcast.
    Auto,
    /// Always the IPI broadcast (to compare, or where a PMU misbehaves).
    Ipi,
}

/// The watchdog's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// NMI watchdog on (`nmi_watchdog=0` turns it off).
    pub enabled: bool,
    /// Watchdog NMIs per second on every CPU.
    pub hz: u32,
    pub source: NmiSourceChoice,
    /// Seconds without timer interrupts before a CPU is reported as locked up.
    pub thresh_secs: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { enabled: true, hz: 1000, source: NmiSourceChoice::Auto, thresh_secs: 10 }
    }
}
