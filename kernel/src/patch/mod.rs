//! Live text patching. `protocol.rs` is the platform-independent core (batch
//! planning, the three write phases, the int3 emulation, torn-state
//! classification); a platform supplies writes through its own alias of the
//! text and "sync every CPU".
pub mod protocol;
