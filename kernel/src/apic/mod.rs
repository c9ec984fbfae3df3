//! Interrupt controllers: the local APIC (`lapic.rs`), the IO-APICs (every
//! entry masked, `ioapic.rs`) and the legacy PIC (masked, `pic.rs`).
pub mod ioapic;
pub mod lapic;
pub mod pic;
