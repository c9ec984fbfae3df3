//! Interrupt controllers: the local APIC and the legacy PIC (masked).
pub mod lapic;
pub mod pic;
