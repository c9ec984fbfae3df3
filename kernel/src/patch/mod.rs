//! Live text patching, one file per room:
//! - `protocol.rs`: the platform-independent core (batch planning, the three
//!   write phases, the int3 emulation, the oracle's decision), host-tested;
//! - `config.rs`: strategies, sync modes (pure, host-tested);
//! - `index.rs`: a site's registry index from its address in O(1) (pure);
//! - `site.rs`: the trace sites, their registry and the trampoline they call
//!   (whose instructions are `trampoline.rs`, shared with the silicon harness);
//! - `machine.rs`: the machine platform (text alias writes, serializing
//!   instructions, sync rounds);
//! - `trap_context.rs`: all that runs in trap/NMI context (#BP emulation, the
//!   torn-execution oracle and its log, the fatal note);
//! - `nmi_policy.rs`: traced code that ran in NMI context (the 2008 warning);
//! - `strategy.rs`: int3, stop_machine and naive batches;
//! - `control.rs`: run-time control and what is in force (typed, lock-free);
//! - `stats.rs`: counters; `run.rs`: the patching loop; `poll_hook.rs`: the services it polls; `setup.rs`: boot-time
//!   set-up; `bench.rs`: what the benchmarks measure.
pub mod config;
pub mod index;
pub mod protocol;
pub mod trampoline;
#[cfg(kernel_target)]
pub mod bench;
#[cfg(kernel_target)]
pub mod control;
#[cfg(kernel_target)]
pub mod machine;
#[cfg(kernel_target)]
pub mod nmi_policy;
#[cfg(kernel_target)]
pub mod poll_hook;
#[cfg(kernel_target)]
pub mod run;
#[cfg(kernel_target)]
pub mod setup;
#[cfg(kernel_target)]
pub mod site;
#[cfg(kernel_target)]
pub mod stats;
#[cfg(kernel_target)]
pub mod strategy;
#[cfg(kernel_target)]
pub mod trap_context;
