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
    let mut out = Vec::new();
    for s in strategies {
        let opts = Options { strategy: s, duration: Duration::from_secs(seconds), sites, batch, batch_sizes: vec![1, 10, 100, 1000, 10_000] };
        match run(&opts) {
            Ok(r) => {
                println!(
                    "{:<12} {:.0} s, {} CPUs: cycles={} sites={} batches={} sync_rounds={} ({} ns each) int3_emulations={} late_traps={} torn={} calls={} traced={}",
                    r.strategy, r.seconds, r.cpus, r.cycles, r.sites, r.batches, r.sync_rounds, r.sync_round_ns, r.int3_emulations, r.late_traps, r.torn, r.calls, r.traced
                );
                for (size, ns) in &r.batch_timings {
                    println!("{:<12}   batch of {size:>5} sites: {ns:>10} ns ({} ns/site)", "", ns / *size as u64);
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
