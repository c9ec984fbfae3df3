//! x86_64 CPU: control registers, MSRs, descriptor tables, traps, per-CPU data.
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod msr;
pub mod msr_probe;
pub mod percpu;
pub mod trap;
