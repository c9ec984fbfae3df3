//! The console log: `[  secs.micros] LEVEL cpuN: message`, on COM1.
//!
//! Implements the `log` crate's `Log`. Writers serialize on a console lock that
//! records its owner CPU: a CPU re-entering (an exception while it held the
//! lock) writes without waiting, and the emergency path (fatal exceptions,
//! panics) waits only a bounded time. NMI context must not log here (it would
//! spin on a lock); it records into its own lock-free buffers instead.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};

use crate::arch::percpu;
use crate::drivers::serial;

const NO_OWNER: u32 = u32::MAX;
static OWNER: AtomicU32 = AtomicU32::new(NO_OWNER);

fn my_id() -> u32 {
    if percpu::installed() { percpu::this_cpu().index() as u32 } else { 0 }
}

/// Holds the console; writes go to the serial port.
pub struct Console {
    release: bool,
}

impl Console {
    fn acquire(max_spins: Option<u64>) -> Console {
        let me = my_id();
        if OWNER.load(Ordering::Relaxed) == me {
            return Console { release: false };
        }
        let mut spins = 0u64;
        loop {
            if OWNER.compare_exchange_weak(NO_OWNER, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return Console { release: true };
            }
            spins += 1;
            if max_spins.is_some_and(|m| spins > m) {
                // The owner is stuck (halted mid-write): write anyway.
                return Console { release: false };
            }
            core::hint::spin_loop();
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if self.release {
            OWNER.store(NO_OWNER, Ordering::Release);
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        serial::write_str(s);
        Ok(())
    }
}

/// The console for a normal writer (waits for the lock).
pub fn console() -> Console {
    Console::acquire(None)
}

/// The console for a dying CPU: waits a bounded time, then writes regardless.
pub fn emergency_console() -> Console {
    Console::acquire(Some(50_000_000))
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ns = crate::time::clock::now_ns();
        let mut c = console();
        let _ = writeln!(
            c,
            "[{:5}.{:06}] {:<5} cpu{}: {}",
            ns / 1_000_000_000,
            (ns / 1000) % 1_000_000,
            record.level(),
            my_id(),
            record.args()
        );
    }

    fn flush(&self) {}
}

pub fn init(level: crate::boot::cmdline::LogLevel) {
    use crate::boot::cmdline::LogLevel as L;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(match level {
        L::Error => log::LevelFilter::Error,
        L::Warn => log::LevelFilter::Warn,
        L::Info => log::LevelFilter::Info,
        L::Debug => log::LevelFilter::Debug,
        L::Trace => log::LevelFilter::Trace,
    });
}
