//! The tracing layer on the machine: per-CPU rings (`appliance::trace::ring`)
//! fed by the trace hook's event sink, from any context including NMI.

use kernel::arch::percpu::{self, Context, this_cpu};
use kernel::boot::cmdline::TraceConfig;
use kernel::events::EventKind;
use log::info;

use appliance::trace::ring::{Account, CpuRings, Event, Kind, Overflow, capacity_for_kb};

/// One `CpuRings` per CPU slot (allocated once, at boot, before tracing starts).
pub static RINGS: spin::Once<alloc::vec::Vec<CpuRings>> = spin::Once::new();

/// Append an event to this CPU's ring for `ctx`: lock-free, no allocation (NMI-safe).
fn push(kind: Kind, ip: u64, parent: u64, ctx: Context, arg: u64, dur_ns: u64) {
    let Some(rings) = RINGS.get() else { return };
    let cpu = this_cpu();
    let Some(r) = rings.get(cpu.index()) else { return };
    let tsc = kernel::arch::cpu::rdtsc();
    let ev = Event {
        ts_ns: kernel::time::clock::ns_at(tsc),
        tsc,
        ip,
        parent,
        kind,
        ctx: ctx as u8,
        cpu: cpu.index() as u16,
        arg,
        dur_ns,
    };
    r.rings[ctx as usize].push(&ev);
}

/// The trace hook's sink: a traced function ran. On the event fast path,
/// which runs with XMM0-XMM15 unsaved: it and all it calls must not touch a
/// vector register (the unmangled name lets `elf_vector_state_is_xmm_only`
/// find it and check that).
#[unsafe(no_mangle)]
#[inline(never)]
// With the trampoline and the hook, in the event path's page (kernel.ld).
#[unsafe(link_section = ".text.trace_hot")]
fn appliance_record_function(site: u64, parent: u64, ctx: Context) {
    push(Kind::Function, site, parent, ctx, 0, 0);
}

/// The sink of the other event kinds (patch batches, sync rounds, NMI ticks, warnings).
fn record_kind(kind: EventKind, arg: u64, dur_ns: u64) {
    let k = match kind {
        EventKind::PatchBatch => Kind::PatchBatch,
        EventKind::SyncRound => Kind::SyncRound,
        EventKind::NmiTick => Kind::NmiTick,
        EventKind::Warning => Kind::Warning,
    };
    push(k, 0, 0, this_cpu().context(), arg, dur_ns);
}

/// Allocate every CPU's rings and install the sink.
pub fn init(cfg: &TraceConfig) {
    let cap = capacity_for_kb(cfg.buf_kb);
    let mode = if cfg.overwrite { Overflow::Overwrite } else { Overflow::Drop };
    let n = percpu::all().len();
    RINGS.call_once(|| (0..n).map(|_| CpuRings::new(cap, mode)).collect());
    kernel::events::set_function_sink(appliance_record_function);
    kernel::events::set_kind_sink(record_kind);
    info!(
        "trace: {} KiB per CPU ({}/{}/{} events for task/irq/nmi), full buffers {}",
        cfg.buf_kb,
        cap[0],
        cap[1],
        cap[2],
        if cfg.overwrite { "overwrite the oldest" } else { "drop the newest" }
    );
}

/// The books of CPU `i`'s rings now, per context (task, irq, nmi).
pub fn cpu_accounts(i: usize) -> [Account; 3] {
    RINGS.get().and_then(|r| r.get(i)).map_or([Account::default(); 3], |r| r.accounts())
}
