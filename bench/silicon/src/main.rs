//! `silicon`: run the patching protocol's strategies on this machine's CPUs
//! from Linux user space and report what happened (see README, "Real silicon").

use std::time::Duration;

use silicon::{Options, Strategy, cpu_model, run};

/// Flips trace sites NOP <-> CALL in batches on one CPU while every other CPU
/// calls them, for a number of seconds per strategy, and reports what happened.
#[derive(clap::Parser)]
#[command(name = "silicon")]
struct Args {
    /// Seconds per strategy
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Strategy to run
    #[arg(long, value_parser = ["int3", "stop_machine", "naive", "all"], default_value = "all")]
    strategy: String,
    /// Trace sites
    #[arg(long, default_value_t = 10_000)]
    sites: usize,
    /// Sites per batch
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Write the report as JSON here
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Instead of the protocol: the cost of one trace event (the kernel's
    /// trampoline and ring, a disabled site, a plain call) beside an
    /// LTTng-UST tracepoint recording to a local session
    #[arg(long)]
    events: bool,
    /// With --events: calls per repetition, and repetitions
    #[arg(long, default_value_t = 2_000_000)]
    calls: u64,
    #[arg(long, default_value_t = 9)]
    reps: usize,
    /// With --events: where the LTTng helper and its trace go
    #[arg(long, default_value = "target/silicon-events")]
    dir: std::path::PathBuf,
}

/// `--events`: one event on this CPU, the appliance's path and LTTng-UST's.
fn events(args: &Args, cpu: &str) {
    let core = 0;
    let a = silicon::events::appliance(core, args.calls, args.reps);
    let f = |s: &silicon::events::Spread| format!("{:.2} / {:.2} / {:.2} ns", s.min, s.median, s.max);
    println!("events on cpu {core}, {} calls x {} repetitions (min / median / max per call):", a.calls_per_rep, a.reps);
    println!("  plain call (no site)                      {}", f(&a.no_site));
    println!("  disabled site (5-byte NOP)                {}  (+{} over no site)", f(&a.site_off), f(&a.disabled));
    println!("  appliance event (trampoline + ring)       {}  (+{} over no site)", f(&a.site_on), f(&a.event));
    println!("  floor: RDTSC + the same ring store        {}  (the event is {:.2}x it, medians)", f(&a.floor), a.event_over_floor);
    let mut doc = serde_json::json!({
        "cpu": cpu,
        "calls_per_rep": a.calls_per_rep,
        "reps": a.reps,
        "appliance": {"no_site_ns": a.no_site.json(), "site_off_ns": a.site_off.json(), "site_on_ns": a.site_on.json(), "event_ns": a.event.json(), "disabled_site_ns": a.disabled.json(), "floor_ns": a.floor.json(), "event_over_floor": a.event_over_floor, "events_recorded": a.recorded},
    });
    match silicon::events::lttng_run(&args.dir, core, args.calls, args.reps) {
        Ok(l) => {
            println!("  LTTng-UST ({}): plain call            {}", l.version, f(&l.plain));
            println!("  LTTng-UST tracepoint, session recording   {}  (+{} over the plain call)", f(&l.tracepoint), f(&l.event));
            if let Some(n) = l.recorded {
                let issued = args.calls / 10 + args.calls * args.reps as u64;
                println!("  LTTng-UST events the session kept: {n} of {issued} (the rest discarded by its ring buffer)");
            }
            println!("  appliance event / LTTng-UST event (medians): {:.2}", a.event.median / l.event.median);
            doc["lttng_ust"] = serde_json::json!({"version": l.version, "plain_ns": l.plain.json(), "tracepoint_ns": l.tracepoint.json(), "event_ns": l.event.json(), "events_recorded": l.recorded});
            doc["appliance_per_lttng_event"] = serde_json::json!(a.event.median / l.event.median);
        }
        Err(e) => {
            println!("  LTTng-UST: not measured: {e}");
            doc["lttng_ust"] = serde_json::json!({"error": e});
        }
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&doc).expect("a JSON value serializes") + "\n";
        std::fs::write(path, text).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
        println!("wrote {}", path.display());
    }
}

fn main() {
    use clap::Parser;
    let args = Args::parse();
    let strategies = match Strategy::parse(&args.strategy) {
        Some(s) => vec![s],
        None => Strategy::ALL.to_vec(),
    };
    let (seconds, sites, batch) = (args.seconds, args.sites, args.batch);
    let cpu = cpu_model();
    println!("cpu: {cpu}");
    if args.events {
        events(&args, &cpu);
        return;
    }
    let mut out = Vec::new();
    for s in strategies {
        let opts = Options { strategy: s, duration: Duration::from_secs(seconds), sites, batch, batch_sizes: vec![1, 10, 100, 1000, 10_000] };
        match run(&opts) {
            Ok(r) => {
                println!(
                    "{:<12} {:.0} s, {} CPUs: cycles={} sites={} batches={} sync_rounds={} ({} ns each) int3_emulations={} late_traps={} torn={} calls={} traced={}",
                    r.strategy, r.seconds, r.cpus, r.cycles, r.sites, r.batches, r.sync_rounds, r.sync_round_ns, r.int3_emulations, r.late_traps, r.torn, r.calls, r.traced
                );
                for t in &r.batch_timings {
                    println!(
                        "{:<12}   batch of {:>5} sites: {:>9} / {:>9} / {:>9} ns, min / median / max of {} ({} ns/site at the median)",
                        "", t.sites, t.min_ns, t.median_ns, t.max_ns, t.repetitions, t.median_ns / t.sites as u64
                    );
                }
                for t in &r.torn_samples {
                    println!("{:<12}   torn: site {} signal {} bytes {:02x?}", "", t.site_index, t.signal, t.bytes);
                }
                out.push(r.to_json());
            }
            Err(e) => fail(&format!("{}: {e}", s.name())),
        }
    }
    if let Some(path) = args.json {
        let doc = serde_json::json!({"cpu": cpu, "runs": out});
        let text = serde_json::to_string_pretty(&doc).expect("a JSON value serializes") + "\n";
        std::fs::write(&path, text).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
        println!("wrote {}", path.display());
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("silicon: {msg}");
    std::process::exit(2);
}
