//! Benchmarks on the machine (`bench` on the command line, `cargo xtask bench`):
//! each figure is printed as `bench: KEY VALUE UNIT`, measured in this boot,
//! and reported, never asserted.

use core::sync::atomic::Ordering;

use kernel::arch::cpu::rdtsc;
use kernel::arch::percpu;
use kernel::boot::cmdline::{Strategy, SyncMode};
use kernel::boot::main::Kernel;
use kernel::patch::bench;
use kernel::patch::site::Registry;
use kernel::time::clock::ticks_to_ns;
use log::{info, warn};

const ROUNDS: u64 = 200;

fn report(key: &str, value: u64, unit: &str) {
    info!("{}", appliance::contract::BenchFigure { key, value, unit });
}

/// Mean of `ROUNDS` sync rounds (None: raw IPI round trip), in ns.
fn sync_mean(mode: Option<SyncMode>) -> Option<u64> {
    let mut total = 0;
    for _ in 0..ROUNDS {
        total += bench::sync_round(mode).ok()?;
    }
    Some(ticks_to_ns(total) / ROUNDS)
}

/// The min, median and max of some repetitions (None: there were none).
fn spread(mut v: alloc::vec::Vec<u64>) -> Option<[u64; 3]> {
    v.sort_unstable();
    Some([*v.first()?, v[v.len() / 2], *v.last()?])
}

/// ns per call of `f` over `n` calls.
fn per_call(f: fn(u64) -> u64, n: u64) -> u64 {
    let mut acc = 1u64;
    let t = rdtsc();
    for _ in 0..n {
        acc = f(core::hint::black_box(acc));
    }
    core::hint::black_box(acc);
    ticks_to_ns(rdtsc() - t) * 1000 / n
}

pub fn run(k: &Kernel, reg: &'static Registry) {
    let cpus = percpu::online_count() as u64;
    report("cpus", cpus, "");
    report("boot_to_all_cpus_online", k.boot_ns / 1000, "us");
    // The physical limit of a sync round, and the rounds themselves.
    let raw = sync_mean(None).unwrap_or(0).max(1);
    report("ipi_round_trip_all_cpus", raw, "ns");
    // The same rounds seen per CPU: from sending the IPIs to each one's acknowledgement.
    let n = percpu::all().len();
    let (mut sum, mut got, mut each) = (alloc::vec![0u64; n], alloc::vec![0u64; n], alloc::vec![0u64; n]);
    for _ in 0..ROUNDS {
        if bench::ipi_each(&mut each).is_ok() {
            for i in 0..n {
                if each[i] != 0 {
                    sum[i] += each[i];
                    got[i] += 1;
                }
            }
        }
    }
    for (i, c) in percpu::all().iter().enumerate() {
        if let Some(mean) = sum[i].checked_div(got[i]) {
            report(&alloc::format!("ipi_round_trip_cpu{}_apic{}", c.index(), c.apic_id()), ticks_to_ns(mean), "ns");
        }
    }
    for (name, m) in [("cpuid", SyncMode::Cpuid), ("iret", SyncMode::Iret), ("serialize", SyncMode::Serialize)] {
        if m == SyncMode::Serialize && !k.features.serialize {
            warn!("bench: sync_round_serialize skipped: no SERIALIZE on this CPU");
            continue;
        }
        if let Some(ns) = sync_mean(Some(m)) {
            report(&alloc::format!("sync_round_{name}"), ns, "ns");
            report(&alloc::format!("sync_round_{name}_per_raw_ipi_x1000"), ns * 1000 / raw, "");
        }
    }
    // Batches: time of one batch (turning sites on), sync rounds, per site;
    // int3 vs stop_machine. BATCH_REPS batches of each (each followed by
    // the batch turning them off again, not timed): the median, with the
    // min and max.
    const BATCH_REPS: usize = 5;
    let n = reg.sites.len();
    for size in [1usize, 10, 100, 1000, 10_000].into_iter().filter(|&s| s <= n) {
        let mut per = [0u64; 2];
        for (i, s) in [Strategy::Int3, Strategy::StopMachine].into_iter().enumerate() {
            let (mut ns, mut rounds) = (alloc::vec::Vec::new(), 0);
            for _ in 0..BATCH_REPS {
                match (bench::flip_batch(reg, 0..size, true, s), bench::flip_batch(reg, 0..size, false, s)) {
                    (Ok((a, r)), Ok(_)) => {
                        ns.push(ticks_to_ns(a));
                        rounds = r;
                    }
                    _ => warn!("bench: batch of {size} with {} failed", s.name()),
                }
            }
            let reps = ns.len() as u64;
            let Some([min, median, max]) = spread(ns) else { continue };
            per[i] = median;
            let name = s.name();
            report(&alloc::format!("batch_{size}_{name}"), median, "ns");
            report(&alloc::format!("batch_{size}_{name}_min"), min, "ns");
            report(&alloc::format!("batch_{size}_{name}_max"), max, "ns");
            report(&alloc::format!("batch_{size}_{name}_repetitions"), reps, "");
            report(&alloc::format!("batch_{size}_{name}_sync_rounds"), rounds, "");
            report(&alloc::format!("batch_{size}_{name}_per_site"), per[i] / size as u64, "ns");
        }
        report(&alloc::format!("batch_{size}_stop_machine_per_int3_x1000"), per[1] * 1000 / per[0].max(1), "");
    }
    // A traced function with its site off, the same body without a site, and with the site on.
    let calls = 200_000;
    let off = per_call(crate::traced::traced_00000, calls);
    let plain = per_call(crate::traced::untraced_00000, calls);
    report("call_site_off_ps", off, "ps");
    report("call_no_site_ps", plain, "ps");
    if let Some(i) = reg.site_in(crate::traced::traced_00000 as *const () as u64, 64) {
        // The event: site on minus site off, measured back to back in each
        // of EVENT_REPS repetitions (TCG's timing moves between runs): the
        // median, with the min and max.
        const EVENT_REPS: usize = 7;
        let mut ons = alloc::vec::Vec::new();
        let mut events = alloc::vec::Vec::new();
        for _ in 0..EVENT_REPS {
            let off = per_call(crate::traced::traced_00000, calls);
            let _ = bench::flip_batch(reg, i..i + 1, true, Strategy::Int3);
            let on = per_call(crate::traced::traced_00000, calls);
            let _ = bench::flip_batch(reg, i..i + 1, false, Strategy::Int3);
            ons.push(on);
            events.push(on.saturating_sub(off));
        }
        if let (Some([_, on, _]), Some([min, median, max])) = (spread(ons), spread(events)) {
            report("call_site_on_ps", on, "ps");
            report("event_cost_ps", median, "ps");
            report("event_cost_min_ps", min, "ps");
            report("event_cost_max_ps", max, "ps");
            report("event_cost_repetitions", EVENT_REPS as u64, "");
        }
    }
    // NMI handler cost (the watchdog's handler, all NMIs so far).
    let (mut nmis, mut cycles) = (0u64, 0u64);
    for c in percpu::all() {
        nmis += c.nmi_ipi.load(Ordering::Relaxed) + c.nmi_pmu.load(Ordering::Relaxed);
        cycles += c.nmi_cycles.load(Ordering::Relaxed);
    }
    if let Some(ns) = ticks_to_ns(cycles).checked_div(nmis) {
        report("nmi_handler", ns, "ns");
    }
    report("nmi_watchdog_hz", kernel::nmi::watchdog::hz() as u64, "Hz");
    info!("bench: done");
}
