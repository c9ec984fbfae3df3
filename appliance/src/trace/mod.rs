//! Trace events and their per-CPU ring buffers.
pub mod ctf;
pub mod dat;
pub mod encode;
pub mod ring;
pub mod stream;
