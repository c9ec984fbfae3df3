//! Run-time control of the engine, from any context: what the control
//! endpoint changes (strategy, sync mode, batch size, tracing on/off), the
//! disable request the NMI-context policy raises, and what is in force.
//! Lock-free; each value is a typed enum kept in an atomic.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use super::config::{Code, Strategy, SyncMode};

/// Why tracing is (to be) turned off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisableReason {
    /// Traced code ran in NMI context (the 2008 bug), without `ftrace_keep_on_nmi`.
    NmiContext,
    /// `POST /control/tracing off`.
    Control,
}

impl DisableReason {
    pub fn text(self) -> &'static str {
        match self {
            DisableReason::NmiContext => "ftraced code called from NMI context",
            DisableReason::Control => "turned off through the control endpoint",
        }
    }

    fn code(r: Option<DisableReason>) -> u8 {
        match r {
            None => 0,
            Some(DisableReason::NmiContext) => 1,
            Some(DisableReason::Control) => 2,
        }
    }

    fn from_code(c: u8) -> Option<DisableReason> {
        match c {
            1 => Some(DisableReason::NmiContext),
            2 => Some(DisableReason::Control),
            _ => None,
        }
    }
}

/// A pending request to turn tracing off (`DisableReason::code`); the loop acts on it.
static DISABLE_REQ: AtomicU8 = AtomicU8::new(0);
/// Tracing is off, and why (`DisableReason::code`; 0: on).
static DISABLED: AtomicU8 = AtomicU8::new(0);
/// NMI-path sites are patched (`trace_nmi_path`).
pub(super) static TRACE_NMI_PATH: AtomicBool = AtomicBool::new(false);
/// A strategy to take effect at the next cycle (0: none; else its code + 1).
static PENDING_STRATEGY: AtomicU8 = AtomicU8::new(0);
/// Sites per batch from the next pass on (0: keep).
static PENDING_BATCH: AtomicUsize = AtomicUsize::new(0);
/// The CPU reports SERIALIZE (for `sync=serialize` at run time).
pub(super) static SERIALIZE_OK: AtomicBool = AtomicBool::new(false);
/// The strategy and sync mode in force (their codes).
static STRATEGY: AtomicU8 = AtomicU8::new(0);
static SYNC: AtomicU8 = AtomicU8::new(0);

/// Ask the patching loop to turn every site off, from a safe context.
/// Lock-free: callable from NMI context. The first request wins.
pub fn request_disable(why: DisableReason) {
    let _ = DISABLE_REQ.compare_exchange(0, DisableReason::code(Some(why)), Ordering::AcqRel, Ordering::Relaxed);
}

/// The pending disable request, if any.
pub(super) fn disable_requested() -> Option<DisableReason> {
    DisableReason::from_code(DISABLE_REQ.load(Ordering::Acquire))
}

/// The loop turned tracing off for `why`.
pub(super) fn set_disabled(why: DisableReason) {
    DISABLED.store(DisableReason::code(Some(why)), Ordering::Release);
}

/// Turn tracing off (control endpoint): the loop turns every site off and waits.
pub fn control_disable() {
    request_disable(DisableReason::Control);
}

/// Turn tracing back on after either kind of disable.
pub fn control_enable() {
    DISABLE_REQ.store(0, Ordering::Release);
    DISABLED.store(0, Ordering::Release);
}

/// Change the strategy (from the next on/off cycle, when every site is off).
pub fn control_strategy(s: Strategy) {
    PENDING_STRATEGY.store(s.code() + 1, Ordering::Release);
}

/// The strategy asked for since the last call, if any.
pub(super) fn take_pending_strategy() -> Option<Strategy> {
    match PENDING_STRATEGY.swap(0, Ordering::AcqRel) {
        0 => None,
        c => Some(Strategy::from_code(c - 1)),
    }
}

/// Can sync rounds use `m` on this CPU?
pub fn check_sync(m: SyncMode) -> Result<(), &'static str> {
    if m == SyncMode::Serialize && !SERIALIZE_OK.load(Ordering::Relaxed) {
        return Err("sync=serialize refused: this CPU does not report SERIALIZE");
    }
    Ok(())
}

/// Change the serializing instruction of sync rounds now.
pub fn control_sync(m: SyncMode) -> Result<(), &'static str> {
    check_sync(m)?;
    set_sync_mode(m);
    Ok(())
}

/// Change the batch size from the next pass on.
pub fn control_batch(n: usize) {
    PENDING_BATCH.store(n.max(1), Ordering::Release);
}

/// The batch size asked for since the last call, if any.
pub(super) fn take_pending_batch() -> Option<usize> {
    match PENDING_BATCH.swap(0, Ordering::AcqRel) {
        0 => None,
        n => Some(n),
    }
}

/// Why tracing is off, or `None` while it is on.
pub fn disabled_reason() -> Option<DisableReason> {
    DisableReason::from_code(DISABLED.load(Ordering::Acquire))
}

pub fn strategy() -> Strategy {
    Strategy::from_code(STRATEGY.load(Ordering::Relaxed))
}

pub(super) fn set_strategy(s: Strategy) {
    STRATEGY.store(s.code(), Ordering::Relaxed);
}

pub fn sync_mode() -> SyncMode {
    SyncMode::from_code(SYNC.load(Ordering::Relaxed))
}

pub(super) fn set_sync_mode(m: SyncMode) {
    SYNC.store(m.code(), Ordering::Relaxed);
}
