//! `silicon`: run the patching protocol's strategies on this machine's CPUs
//! from Linux user space and report what happened (see README, "Real silicon").

use std::time::Duration;

use silicon::{Options, Strategy, cpu_model, run};

const USAGE: &str = "usage: silicon [--seconds N] [--strategy int3|stop_machine|naive|all] [--sites N] [--batch N] [--json PATH]
  Flips N trace sites (default 10000) NOP <-> CALL in batches (default 256) on one
  CPU while every other CPU calls them, for N seconds per strategy (default 10).";

fn main() {
    let mut seconds = 10u64;
    let mut strategies = vec![Strategy::Int3, Strategy::StopMachine, Strategy::Naive];
    let (mut sites, mut batch, mut json) = (10_000usize, 256usize, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| fail(&format!("{a} needs a value")));
        match a.as_str() {
            "--seconds" => seconds = val().parse().unwrap_or_else(|_| fail("--seconds takes an integer")),
            "--strategy" => {
                let v = val();
                strategies = if v == "all" { strategies } else { vec![Strategy::parse(&v).unwrap_or_else(|| fail("--strategy: int3, stop_machine, naive or all"))] };
            }
            "--sites" => sites = val().parse().unwrap_or_else(|_| fail("--sites takes an integer")),
            "--batch" => batch = val().parse().unwrap_or_else(|_| fail("--batch takes an integer")),
            "--json" => json = Some(val()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => fail(&format!("unknown option {other}")),
        }
    }
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
    if let Some(path) = json {
        let doc = format!("{{\"cpu\":\"{}\",\"runs\":[{}]}}\n", cpu.replace('"', "'"), out.join(","));
        std::fs::write(&path, doc).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
        println!("wrote {path}");
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("silicon: {msg}\n{USAGE}");
    std::process::exit(2);
}
