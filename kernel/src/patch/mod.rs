//! Live text patching. `protocol.rs` is the platform-independent core (batch
//! planning, the three write phases, the int3 emulation, torn-state
//! classification); `site.rs` the trace sites, their registry and trampoline;
//! `engine.rs` the machine platform (text alias writes, sync rounds, the #BP
//! handler) and the strategies.
pub mod protocol;
#[cfg(kernel_target)]
pub mod engine;
#[cfg(kernel_target)]
pub mod site;
