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

/// Holds the console; writes go to the serial port (and, for the
/// emergency console, to the screen's crash report too).
pub struct Console {
    release: bool,
    screen: bool,
}

impl Console {
    fn acquire(max_spins: Option<u64>) -> Console {
        let me = my_id();
        if OWNER.load(Ordering::Relaxed) == me {
            return Console { release: false, screen: false };
        }
        let mut spins = 0u64;
        loop {
            if OWNER.compare_exchange_weak(NO_OWNER, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return Console { release: true, screen: false };
            }
            spins += 1;
            if max_spins.is_some_and(|m| spins > m) {
                // The owner is stuck (halted mid-write): write anyway.
                return Console { release: false, screen: false };
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
        if self.screen {
            crate::screen::device::crash_write(s);
        }
        Ok(())
    }
}

/// The console for a normal writer (waits for the lock).
pub fn console() -> Console {
    Console::acquire(None)
}

/// The console for a dying CPU: waits a bounded time, then writes
/// regardless; what it writes is also the screen's crash report (a machine
/// without a serial port shows it there).
pub fn emergency_console() -> Console {
    let mut c = Console::acquire(Some(50_000_000));
    crate::screen::device::crash_begin();
    c.screen = true;
    c
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
        drop(c);
        // The boot log on the screen too, until the status screen takes it.
        let mut line: heapless::String<160> = heapless::String::new();
        let _ = write!(line, "{:<5} {}", record.level(), record.args());
        let tone = match record.level() {
            log::Level::Error => crate::screen::render::Tone::Bad,
            log::Level::Warn => crate::screen::render::Tone::Title,
            _ => crate::screen::render::Tone::Normal,
        };
        crate::screen::device::log_line(&line, tone);
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
