//! A short run of every strategy on this machine's CPUs: int3 must never
//! tear, counters must move, naive must at least report (real CPUs may not
//! tear in a short run, so its tears are not asserted).

use std::time::Duration;

use silicon::{Options, Strategy, run};

fn opts(strategy: Strategy) -> Options {
    Options { strategy, duration: Duration::from_secs(2), sites: 2000, batch: 128, batch_sizes: vec![1, 100] }
}

// One test function: runs must not overlap within the process.
#[test]
fn strategies_on_this_cpu() {
    let r = run(&opts(Strategy::Int3)).expect("int3 run");
    assert_eq!(r.torn, 0, "torn executions under int3: {:?}", r.torn_samples);
    assert!(r.cycles > 0 && r.calls > 0, "{r:?}");
    assert_eq!(r.sync_rounds, 3 * r.batches, "three sync rounds per batch");
    assert!(r.traced > 0, "no call went through the trampoline");
    assert_eq!(r.batch_timings.len(), 2);
    for t in &r.batch_timings {
        assert!(t.repetitions == silicon::BATCH_REPETITIONS && t.min_ns <= t.median_ns && t.median_ns <= t.max_ns && t.min_ns > 0, "{t:?}");
    }

    let r = run(&opts(Strategy::StopMachine)).expect("stop_machine run");
    assert_eq!(r.torn, 0, "torn executions with every worker parked: {:?}", r.torn_samples);
    assert!(r.cycles > 0 && r.calls > 0);

    let r = run(&opts(Strategy::Naive)).expect("naive run");
    assert!(r.cycles > 0 && r.calls > 0);
    assert_eq!(r.sync_rounds, 0);
    println!("naive on this CPU: {} torn executions in {:.1} s", r.torn, r.seconds);
}
