//! The boot sequence on the bootstrap processor, from the 64-bit entry to the
//! application, as phases the application composes ([`Boot`]), and the short
//! path every application processor runs.
//!
//! Order matters: console, per-CPU data, boot information and command line,
//! memory (frames, page tables, heap), symbols, descriptor tables, ACPI,
//! local APIC and clocks, then the other CPUs.

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use log::{error, info, warn};

use super::cmdline::{self, Options, Selftest};
use super::entry::{MB1_BOOT_MAGIC, MB2_BOOT_MAGIC};
use super::info::{BootInfo, RegionKind};
use super::mb1::{self, PhysMemory};
use crate::acpi::machine::MachineInfo;
use crate::apic::lapic;
use crate::arch::idt::vector;
use crate::arch::percpu::{self, PerCpu, Stack};
use crate::arch::trap::{self, Disposition, TrapFrame};
use crate::drivers::{qemu, serial};
use crate::mem::FRAMES;
use crate::mem::frame::Range;
use crate::smp::{self, trampoline};

/// What the framework hands the application once every CPU is up.
pub struct Kernel {
    pub options: Options,
    pub boot_info: BootInfo,
    pub machine: MachineInfo,
    pub smp: smp::boot::Report,
    pub features: crate::arch::cpu::Features,
    pub tsc_hz: u64,
    /// Local-APIC timer ticks per second at divide-by-16.
    pub apic_timer_hz: u64,
    /// Nanoseconds from kernel entry to all CPUs online.
    pub boot_ns: u64,
}


static TIMER_HZ: AtomicU32 = AtomicU32::new(100);
static APIC_TIMER_HZ: AtomicU64 = AtomicU64::new(0);

/// The local-APIC timer's rate at divide-by-16, as calibrated at boot.
pub fn apic_timer_hz() -> u64 {
    APIC_TIMER_HZ.load(Ordering::Relaxed)
}

unsafe extern "C" {
    static boot_stack_bottom: u8;
    static boot_stack_top: u8;
}

struct Identity;

impl PhysMemory for Identity {
    fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
        // Multiboot1 data lies in RAM below 4 GiB, identity-mapped by the boot tables.
        // SAFETY: the range is in the boot identity map (first 4 GiB); reads have no side effects.
        (addr != 0 && addr.checked_add(len as u64)? <= 1 << 32).then(|| unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
    }
}

#[inline(never)]
fn timer_handler(_f: &mut TrapFrame) -> Disposition {
    crate::trace_site!();
    let cpu = percpu::this_cpu();
    cpu.timer_ticks.fetch_add(1, Ordering::Relaxed);
    crate::nmi::watchdog::timer_tick(cpu);
    lapic::eoi();
    Disposition::Resume
}

fn spurious_handler(_f: &mut TrapFrame) -> Disposition {
    // No EOI for the spurious vector (SDM Vol. 3A §11.9).
    percpu::this_cpu().spurious.fetch_add(1, Ordering::Relaxed);
    Disposition::Resume
}

fn apic_error_handler(_f: &mut TrapFrame) -> Disposition {
    // Writing ESR latches the errors so far (SDM Vol. 3A §11.5.3); count them as spurious events.
    lapic::write(lapic::reg::ESR, 0);
    percpu::this_cpu().spurious.fetch_add(1, Ordering::Relaxed);
    lapic::eoi();
    Disposition::Resume
}

fn fatal_hook() {
    if TEST_EXIT.load(Ordering::Relaxed) {
        qemu::exit(qemu::ExitCode::Failure);
    }
}

static TEST_EXIT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Exit QEMU with success when `test_exit` is on (tests' verdict); no-op otherwise.
pub fn test_exit_success() {
    if TEST_EXIT.load(Ordering::Relaxed) {
        qemu::exit(qemu::ExitCode::Success);
    }
}

/// Exit QEMU with failure when `test_exit` is on; no-op otherwise.
pub fn test_exit_failure() {
    if TEST_EXIT.load(Ordering::Relaxed) {
        qemu::exit(qemu::ExitCode::Failure);
    }
}

fn halt_boot(why: core::fmt::Arguments<'_>) -> ! {
    let mut c = crate::debug::log::emergency_console();
    let _ = writeln!(c, "BOOT FAILED: {why}");
    drop(c);
    fatal_hook();
    crate::arch::cpu::halt_forever()
}

/// Per-CPU local-APIC setup (BSP and APs): mode, LVTs, timer.
fn lapic_this_cpu(nmi_lint: Option<u8>) {
    lapic::init_cpu(vector::SPURIOUS, vector::APIC_ERROR, nmi_lint);
    let hz = APIC_TIMER_HZ.load(Ordering::Relaxed);
    if hz != 0 {
        let rate = crate::nmi::watchdog::timer_hz_for(percpu::this_cpu().index(), TIMER_HZ.load(Ordering::Relaxed));
        lapic::timer_start_periodic(vector::TIMER, hz, rate);
    }
    crate::nmi::watchdog::init_cpu();
}

static MACHINE_NMI_LINTS: spin::Once<MachineInfo> = spin::Once::new();

fn nmi_lint_for_apic(apic_id: u32) -> Option<u8> {
    let m = MACHINE_NMI_LINTS.get()?;
    let cpu = m.cpus.iter().find(|c| c.apic_id == apic_id)?;
    m.nmi_lint_for(cpu.uid).map(|n| n.lint)
}

static AP_APP: AtomicU64 = AtomicU64::new(0);

fn ap_main(c: &'static PerCpu) -> ! {
    // LINT0/LINT1 stay masked on application processors: an external NMI
    // (or ExtINT) wired to every CPU's LINT pin is taken by the boot CPU
    // only, as Linux does (`setup_local_APIC`: "only the BP should see the
    // LINT1 NMI signal"), so one SERR# is not counted once per CPU.
    lapic_this_cpu(None);
    let seen = lapic::id();
    if seen != c.apic_id() {
        warn!("cpu{}: local APIC reports id {seen}, MADT said {}", c.index(), c.apic_id());
    }
    c.online.store(true, Ordering::Release);
    let f = AP_APP.load(Ordering::Acquire);
    if f != 0 {
        // SAFETY: only `start` stores here, from an `fn(&'static PerCpu) -> !`.
        let f = unsafe { core::mem::transmute::<u64, fn(&'static PerCpu) -> !>(f) };
        f(c)
    }
    idle()
}

/// The idle loop: wait for interrupts forever.
pub fn idle() -> ! {
    loop {
        crate::arch::cpu::idle_wait();
    }
}

/// Stall the last CPU for good inside a cross-CPU call (interrupts stay off
/// in the IPI handler). Returns its index and the call's outcome, or `None`
/// with a warning when there is only one CPU.
fn stall_last_cpu(selftest: &str, timeout_ns: u64) -> Option<(usize, Result<(), smp::xcall::Timeout>)> {
    fn stall(target: usize) {
        if percpu::this_cpu().index() == target {
            loop {
                core::hint::spin_loop();
            }
        }
    }
    let last = percpu::all().len() - 1;
    if last == 0 {
        warn!("selftest: {selftest} needs at least 2 CPUs");
        return None;
    }
    Some((last, smp::xcall::call_others(stall, last, timeout_ns)))
}

/// Vectors nothing registers, for `selftest=irq_hygiene` (above the timer's
/// priority class: left in service they would block it).
const STRAY_IPI_VECTOR: u8 = 0x90;
const STRAY_IOAPIC_VECTOR: u8 = 0x91;
fn irq_hygiene_selftest() {
    use crate::drivers::rtc;
    let ticks = || -> heapless::Vec<u64, { percpu::MAX_CPUS }> { percpu::all().iter().filter(|c| c.online.load(Ordering::Relaxed)).map(|c| c.timer_ticks.load(Ordering::Relaxed)).collect() };
    let count = |v: u8| trap::unexpected_counts().find(|(x, _)| *x == v).map_or(0, |(_, n)| n);
    // 1. A stray fixed IPI on an unregistered vector, to every CPU.
    lapic::send_ipi(lapic::Dest::AllIncludingSelf, STRAY_IPI_VECTOR as u64);
    // 2. The RTC's periodic interrupt through the IO-APIC, to this CPU.
    let routed = MACHINE_NMI_LINTS.get().and_then(|m| {
        let gsi = m.overrides.iter().find(|o| o.bus == 0 && o.irq == rtc::RTC_ISA_IRQ).map_or(rtc::RTC_ISA_IRQ as u32, |o| o.gsi);
        let io = m.ioapics.iter().find(|io| io.gsi_base <= gsi)?;
        let a = crate::apic::ioapic::IoApic::at(io.address as u64).ok()?;
        (gsi - io.gsi_base < a.pins()).then_some((a, gsi - io.gsi_base))
    });
    let Some((ioapic, pin)) = routed else {
        warn!("selftest: irq_hygiene: no IO-APIC pin for the RTC");
        return;
    };
    ioapic.route(pin, STRAY_IOAPIC_VECTOR, lapic::id() as u8);
    let (a, b) = (rtc::cmos(rtc::RTC_REG_A, None), rtc::cmos(rtc::RTC_REG_B, None));
    rtc::cmos(rtc::RTC_REG_C, None);
    rtc::cmos(rtc::RTC_REG_A, Some((a & 0xF0) | 0x06)); // 1024 Hz
    rtc::cmos(rtc::RTC_REG_B, Some(b | rtc::RTC_PIE));
    let before = ticks();
    let deadline = crate::time::clock::deadline_after_ns(1_000_000_000);
    while crate::arch::cpu::rdtsc() < deadline {
        // Re-arm the RTC's line now and then, as a driver would: each read of
        // C lets it raise a new edge.
        rtc::cmos(rtc::RTC_REG_C, None);
        crate::time::clock::delay_ns(50_000_000);
    }
    ioapic.mask(pin);
    rtc::cmos(rtc::RTC_REG_B, Some(b & !rtc::RTC_PIE));
    rtc::cmos(rtc::RTC_REG_A, Some(a));
    rtc::cmos(rtc::RTC_REG_C, None);
    let after = ticks();
    let slowest = before.iter().zip(&after).map(|(b, a)| a - b).min().unwrap_or(0);
    info!(
        "selftest: irq_hygiene: vector {STRAY_IPI_VECTOR:#04x} x{}, vector {STRAY_IOAPIC_VECTOR:#04x} (IO-APIC pin {pin}, RTC) x{}; every CPU took >= {slowest} timer interrupts in the second after",
        count(STRAY_IPI_VECTOR),
        count(STRAY_IOAPIC_VECTOR)
    );
}

/// Run `selftest=` (after boot). Each one must end in the fatal path.
#[inline(never)]
fn run_selftest(t: Selftest) {
    info!("selftest: {t:?}");
    match t {
        Selftest::Exception => {
            // SAFETY: ud2 raises #UD on purpose; the handler reports and stops this CPU.
            unsafe { core::arch::asm!("ud2") }
        }
        Selftest::PageFault => {
            // SAFETY: deliberately reads the unmapped page 0 to raise #PF.
            let v = unsafe { core::ptr::read_volatile(core::ptr::without_provenance::<u64>(0x10)) };
            info!("read {v}");
        }
        Selftest::WriteText => {
            let p = run_selftest as *const () as *mut u8;
            // SAFETY: deliberately writes read-only text to raise #PF (W^X check).
            unsafe { core::ptr::write_volatile(p, 0xCC) };
            error!("selftest: kernel text is writable!");
        }
        Selftest::Panic => panic!("selftest panic"),
        Selftest::Lockup { .. } => {
            // Armed by the application once every CPU has its role
            // (`nmi::lockup_selftest`): the stall must meet a running system.
        }
        Selftest::Breakpoint => {
            // SAFETY: int3 raises #BP on purpose; it is no trace site, so the
            // handler reports it as a real breakpoint and stops this CPU.
            unsafe { core::arch::asm!("int3") }
        }
        Selftest::NmiRace => {
            let hz = crate::nmi::watchdog::hz().max(1) as u64;
            if percpu::all().len() < 2 || !matches!(crate::nmi::watchdog::source(), crate::nmi::pmu::Source::IpiBroadcast(_)) {
                warn!("selftest: nmi_race needs 2 CPUs and the IPI watchdog source");
                return;
            }
            let before = crate::nmi::watchdog::totals();
            let period_ns = 1_000_000_000 / hz;
            crate::nmi::watchdog::selftest_delay_handler(1, 20, 10 * period_ns);
            // Twenty held NMIs, each followed by its latched duplicate, then a margin.
            let deadline = crate::time::clock::deadline_after_ns(400 * period_ns + 2_000_000_000);
            while crate::nmi::watchdog::selftest_delays_left() > 0 && crate::arch::cpu::rdtsc() < deadline {
                core::hint::spin_loop();
            }
            crate::time::clock::delay_ns(10 * period_ns);
            let after = crate::nmi::watchdog::totals();
            info!(
                "selftest: nmi_race: {} delayed handlers left, swallowed={} unknown={}",
                crate::nmi::watchdog::selftest_delays_left(),
                after.swallowed - before.swallowed,
                after.unknown - before.unknown
            );
        }
        Selftest::IrqHygiene => irq_hygiene_selftest(),
        Selftest::XcallTimeout => match stall_last_cpu("xcall_timeout", 200_000_000) {
            Some((_, Err(e))) => info!("selftest: xcall: {e}"),
            Some((last, Ok(()))) => error!("selftest: xcall returned although CPU {last} never answers"),
            None => {}
        },
    }
}

/// The boot of the bootstrap processor as phases the application composes,
/// in this order:
/// [`early`](Boot::early) (console, this CPU's per-CPU data, boot information,
/// command line), [`memory`](Boot::memory) (frames, page tables, heap, screen,
/// symbols), [`cpu_tables`](Boot::cpu_tables) (GDT, TSS, IDT),
/// [`acpi_apic_clocks`](Boot::acpi_apic_clocks) (ACPI tables, local APIC, TSC
/// and APIC timer), then the application installs what must be in place before
/// other CPUs run (the NMI watchdog, the patching engine), and
/// [`start_cpus`](Boot::start_cpus) starts every CPU and returns the [`Kernel`].
pub struct Boot {
    t0: u64,
    bsp: &'static PerCpu,
    pub options: Options,
    pub boot_info: BootInfo,
    pub features: crate::arch::cpu::Features,
    /// Known after `acpi_apic_clocks`.
    pub machine: MachineInfo,
    pub tsc_hz: u64,
    pub apic_timer_hz: u64,
}

impl Boot {
    /// Console, this CPU's per-CPU data, boot information and command line.
    pub fn early(magic: u32, info_addr: u32) -> Boot {
        let t0 = crate::arch::cpu::rdtsc();
        serial::init();
        let _ = writeln!(crate::debug::log::console(), "\nkernel: entered 64-bit mode (boot magic {magic:#x})");

        // Per-CPU data of the boot CPU first: logging and traps read it.
        let bsp = percpu::reserve(crate::arch::cpu::cpuid_apic_id()).expect("per-CPU slot for the BSP");
        // SAFETY: first per-CPU install on the BSP; nothing else uses this slot.
        unsafe { percpu::install(bsp) };
        trap::set_fatal_hook(fatal_hook);

        let boot_info = match magic {
            // SAFETY: EBX as the loader left it; the boot tables identity-map the first 4 GiB.
            MB2_BOOT_MAGIC => unsafe { super::info::from_mb2(info_addr as u64) }.unwrap_or_else(|e| halt_boot(format_args!("bad multiboot2 information: {e:?}"))),
            MB1_BOOT_MAGIC => mb1::parse(&Identity, info_addr as u64).unwrap_or_else(|e| halt_boot(format_args!("bad multiboot1 information: {e:?}"))),
            m => halt_boot(format_args!("unknown boot magic {m:#x}: not started by a multiboot loader")),
        };
        let parsed = cmdline::parse(&boot_info.cmdline);
        let options = parsed.options.clone();
        TEST_EXIT.store(options.test_exit, Ordering::Relaxed);
        TIMER_HZ.store(options.timer_hz, Ordering::Relaxed);
        crate::debug::log::init(options.loglevel);
        info!("boot: {:?} loader `{}`, command line `{}`", boot_info.loader, boot_info.loader_name, boot_info.cmdline);
        for d in &parsed.diagnostics {
            warn!("cmdline: {d}");
        }
        if parsed.dropped_diagnostics > 0 || boot_info.cmdline_truncated {
            warn!("cmdline: {} more problems not shown; truncated: {}", parsed.dropped_diagnostics, boot_info.cmdline_truncated);
        }
        let features = crate::arch::cpu::features();
        info!("cpu: {}; {features:?}", crate::arch::cpu::brand());
        Boot { t0, bsp, options, boot_info, features, machine: MachineInfo::default(), tsc_hz: 0, apic_timer_hz: 0 }
    }

    /// Frames from the memory map, page tables (W^X), the heap, the screen, symbols.
    pub fn memory(&mut self) {
        // Memory. Page 0 is about to be unmapped: keep what the RSDP search needs from it.
        crate::acpi::tables::save_low_page();
        let layout = crate::mem::paging::image_layout();
        let kernel = (layout.start, layout.end);
        {
            let mut frames = FRAMES.lock();
            for r in self.boot_info.regions.iter().filter(|r| r.kind == RegionKind::Usable) {
                frames.add(Range::new(r.start, r.end));
            }
            // Real-mode area (IVT, BDA, EBDA, trampoline, BIOS), the image, the boot information.
            frames.reserve(Range::new(0, 0x10_0000));
            frames.reserve(Range::new(kernel.0, kernel.1));
            frames.reserve(Range::new(self.boot_info.info_range.0, self.boot_info.info_range.1));
            info!(
                "mem: {} MiB usable in {} regions, top {:#x}; kernel image {:#x}-{:#x}, linked at {:#x} (moved {:+#x} by the loader)",
                self.boot_info.usable_bytes() >> 20,
                self.boot_info.regions.len(),
                self.boot_info.max_usable(),
                kernel.0,
                kernel.1,
                super::entry::LINK_BASE,
                super::entry::load_delta(),
            );
            // The AP trampoline: a usable page below 640 KiB, the highest free one.
            let tramp = match crate::mem::low::trampoline_page(&self.boot_info.regions, &[self.boot_info.info_range, kernel]) {
                Ok(p) => {
                    info!("mem: AP trampoline page at {p:#x} (SIPI vector {:#04x})", trampoline::sipi_vector(p));
                    trampoline::set_addr(p);
                    p
                }
                Err(e) => {
                    error!("mem: no page for the AP trampoline: {e}");
                    0
                }
            };
            // The map also covers a framebuffer above the top of RAM (the screen console draws there).
            let top = self.boot_info.max_usable().max(self.boot_info.framebuffer.map_or(0, |f| f.addr + f.byte_len()));
            // SAFETY: boot CPU only, before other CPUs run; the boot tables
            // identity-map every frame below 4 GiB.
            if let Err(e) = unsafe { crate::mem::paging::init(&mut frames, top, tramp, self.features.nx) } {
                halt_boot(format_args!("page tables: {e:?}"));
            }
            let heap_mb = crate::mem::heap_mib(self.boot_info.usable_bytes(), self.options.heap_mb);
            let heap_bytes = heap_mb * 1024 * 1024;
            let heap = frames
                .alloc_run(heap_bytes / 4096, 2 * 1024 * 1024, u64::MAX)
                .unwrap_or_else(|e| halt_boot(format_args!("no {heap_mb} MiB for the heap: {e:?}")));
            // SAFETY: the run is fresh from the allocator, identity-mapped RW, and never handed out again.
            unsafe { crate::mem::heap::init(heap, heap_bytes as usize) };
            info!("mem: page tables on (text RX, rodata R, data RW+NX), heap {heap_mb} MiB at {heap:#x}");
        }
        crate::mem::paging::load_pat();
        {
            let found = crate::screen::device::init(&self.boot_info);
            let mut line = heapless::String::<160>::new();
            let _ = crate::screen::device::describe(&found, &mut line);
            info!("screen: {line}");
        }
        match crate::debug::backtrace::init() {
            Ok(n) => info!("symbols: {n} symbols"),
            Err(e) => warn!("symbols: {e}"),
        }
    }

    /// The BSP's descriptor tables (GDT, TSS with its IST stacks, IDT).
    pub fn cpu_tables(&mut self) {
        // Descriptor tables of the BSP (its kernel stack is the boot stack).
        crate::arch::idt::init();
        let boot_stack = Stack { bottom: &raw const boot_stack_bottom as u64, top: &raw const boot_stack_top as u64 };
        let stacks = smp::boot::alloc_stacks(Some(boot_stack));
        // SAFETY: the BSP's own PerCpu; no interrupt uses its TSS yet.
        unsafe {
            percpu::set_stacks(self.bsp, stacks);
            smp::boot::init_this_cpu(self.bsp);
        }
        info!("cpu0: GDT, TSS (IST: NMI, #DF, #MC, #BP, exceptions, IRQs) and IDT loaded");
    }

    /// ACPI (the MADT, IO-APICs, HPET, MCFG), the local APIC of this CPU,
    /// and the clocks (TSC and APIC timer calibrated).
    pub fn acpi_apic_clocks(&mut self) {
        // ACPI.
        let acpi = crate::acpi::tables::discover(self.boot_info.rsdp).unwrap_or_else(|e| halt_boot(format_args!("ACPI: {e:?}")));
        let m = &acpi.info;
        info!("acpi: RSDP at {:#x} ({:?}); local APIC at {:#x}, PC-AT PICs: {}", acpi.rsdp, acpi.source, m.lapic_address, m.pcat_compat);
        for c in &m.cpus {
            info!(
                "acpi: processor uid {} APIC id {} ({}{}{})",
                c.uid,
                c.apic_id,
                if c.x2apic_entry { "x2APIC entry" } else { "xAPIC entry" },
                if c.enabled { ", enabled" } else { "" },
                if c.online_capable { ", online-capable" } else { "" }
            );
        }
        for io in &m.ioapics {
            info!("acpi: IO-APIC id {} at {:#x}, GSI base {}", io.id, io.address, io.gsi_base);
        }
        for o in &m.overrides {
            info!("acpi: override bus {} IRQ {} -> GSI {} flags {:#x}", o.bus, o.irq, o.gsi, o.flags);
        }
        for n in &m.lapic_nmis {
            info!("acpi: local-APIC NMI on LINT{} for {:?} flags {:#x}", n.lint, n.target, n.flags);
        }
        match m.hpet {
            Some(h) => info!("acpi: HPET at {:#x}", h.address),
            None => info!("acpi: no HPET"),
        }
        for e in &m.ecam {
            info!("acpi: MCFG ECAM at {:#x} segment {} buses {}-{}", e.base, e.segment, e.bus_start, e.bus_end);
        }
        for w in &m.madt_warnings {
            warn!("acpi: MADT (revision {}): {w:?}", m.madt_revision);
        }
        if self.options.acpi_dump {
            let mut c = crate::debug::log::console();
            let _ = writeln!(c, "ACPI-DUMP-BEGIN");
            let _ = crate::acpi::tables::dump(&mut c, acpi.rsdp);
            let _ = writeln!(c, "ACPI-DUMP-END");
        }
        MACHINE_NMI_LINTS.call_once(|| acpi.info.clone());

        // Interrupt controllers and clocks: nothing routed through the PIC or
        // the IO-APICs may reach a CPU (entries firmware left enabled included).
        crate::apic::pic::disable();
        for io in &m.ioapics {
            match crate::apic::ioapic::IoApic::at(io.address as u64) {
                Ok(a) => {
                    let (pins, were_on) = (a.pins(), a.mask_all());
                    info!("apic: IO-APIC id {}: {pins} entries masked ({were_on} were enabled)", io.id);
                }
                Err(e) => warn!("apic: IO-APIC id {} at {:#x} cannot be mapped: {e:?}", io.id, io.address),
            }
        }
        if self.options.x2apic_fw && self.features.x2apic {
            lapic::simulate_firmware_x2apic();
        }
        let (mode, choice) = lapic::init_mode(self.features.x2apic && self.options.x2apic);
        if choice == lapic::ModeChoice::FirmwareX2Apic {
            warn!("apic: the firmware left x2APIC enabled; staying in x2APIC mode although x2apic=off (leaving it takes disabling the APIC)");
        }
        trap::register(vector::TIMER, timer_handler);
        trap::register(vector::SPURIOUS, spurious_handler);
        trap::register(vector::APIC_ERROR, apic_error_handler);
        smp::xcall::init();
        lapic::init_cpu(vector::SPURIOUS, vector::APIC_ERROR, nmi_lint_for_apic(self.bsp.apic_id()));
        let id = lapic::id();
        if id != self.bsp.apic_id() {
            warn!("cpu0: local APIC id {id} differs from CPUID's {}", self.bsp.apic_id());
            self.bsp.apic_id.store(id, Ordering::Relaxed);
        }
        info!("apic: {mode:?} mode, BSP APIC id {id}");
        let sources = crate::time::calibrate::Sources {
            hpet_address: m.hpet.map(|h| h.address),
            pm_timer: m.pm_timer.unwrap_or(Err("no FADT")),
            forced: self.options.clock,
        };
        let (choice, leaves) = crate::time::calibrate::run(&sources).unwrap_or_else(|e| halt_boot(format_args!("TSC calibration: {e}")));
        let tsc_hz = choice.tsc_hz;
        crate::time::clock::set(
            self.t0,
            crate::time::clock::Calibration { reference: choice.reference, tsc_hz, checks: choice.checks.clone() },
        );
        for w in &choice.warnings {
            warn!("time: {w}");
        }
        let apic_timer_hz = lapic::timer_calibrate();
        APIC_TIMER_HZ.store(apic_timer_hz, Ordering::Relaxed);
        info!(
            "time: TSC {}.{:03} MHz from {} (invariant: {}; CPUID 0x15 {:?}, 0x16 {:?}); APIC timer {} kHz at /16; timer {} Hz",
            tsc_hz / 1_000_000,
            (tsc_hz / 1000) % 1000,
            choice.reference.name(),
            self.features.invariant_tsc,
            leaves.leaf15,
            leaves.leaf16,
            apic_timer_hz / 1000,
            self.options.timer_hz
        );
        info!("time: other references: {}", choice.checks.join("; "));
        self.machine = acpi.info;
        self.tsc_hz = tsc_hz;
        self.apic_timer_hz = apic_timer_hz;
    }

    /// This CPU's local-APIC timer and watchdog, interrupts on, then every
    /// other enabled CPU (each runs `ap_app` once online, or idles), the
    /// cross-CPU call check and `selftest=`. Install what must be in place
    /// before other CPUs run (the NMI watchdog, the patching engine) first.
    pub fn start_cpus(self, ap_app: Option<fn(&'static PerCpu) -> !>) -> Kernel {
        lapic_this_cpu(nmi_lint_for_apic(self.bsp.apic_id()));
        self.bsp.online.store(true, Ordering::Release);
        x86_64::instructions::interrupts::enable();

        // The other CPUs.
        if let Some(f) = ap_app {
            AP_APP.store(f as usize as u64, Ordering::Release);
        }
        let ids: heapless::Vec<u32, { percpu::MAX_CPUS }> = self.machine.enabled_cpus().map(|c| c.apic_id).collect();
        let max = self.options.max_cpus.map_or(percpu::MAX_CPUS, |m| m as usize).min(percpu::MAX_CPUS);
        let report = smp::boot::start_all(&ids, max, self.options.smp_timeout_ms, ap_main);
        if let Some(p) = trampoline::addr() {
            crate::mem::paging::seal_trampoline(p);
        }
        let boot_ns = crate::time::clock::ticks_to_ns(crate::arch::cpu::rdtsc() - self.t0);
        {
            let mut line: heapless::String<512> = heapless::String::new();
            for id in &report.online {
                let _ = write!(line, " {id}");
            }
            info!("smp: {} CPUs online (APIC ids:{line})", report.online.len());
        }
        if !report.failed.is_empty() {
            error!("smp: {} CPUs failed to start: APIC ids {:?}", report.failed.len(), report.failed.as_slice());
        }
        if report.skipped > 0 {
            warn!("smp: {} enabled CPUs not started (max_cpus or MAX_CPUS)", report.skipped);
        }

        // Prove the cross-CPU call path: every other CPU must answer.
        static HITS: AtomicU32 = AtomicU32::new(0);
        fn hit(_: usize) {
            HITS.fetch_add(1, Ordering::Relaxed);
        }
        let t = crate::arch::cpu::rdtsc();
        match smp::xcall::call_others(hit, 0, 100_000_000) {
            Ok(()) => info!(
                "xcall: {} CPUs answered in {} us",
                HITS.load(Ordering::Relaxed),
                crate::time::clock::ticks_to_ns(crate::arch::cpu::rdtsc() - t) / 1000
            ),
            Err(e) => error!("xcall: {e}"),
        }

        if let Some(t) = self.options.selftest {
            run_selftest(t);
        }

        Kernel {
            options: self.options,
            boot_info: self.boot_info,
            machine: self.machine,
            smp: report,
            features: self.features,
            tsc_hz: self.tsc_hz,
            apic_timer_hz: self.apic_timer_hz,
            boot_ns,
        }
    }
}
