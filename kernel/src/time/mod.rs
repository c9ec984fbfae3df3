//! Time: the PIT as a reference, the TSC as the clock.
pub mod clock;
pub mod pit;
