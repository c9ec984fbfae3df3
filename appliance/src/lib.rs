//! The appliance's logic that touches no hardware, as a library so it is
//! tested on the host with `cargo test -p appliance --lib`: the per-CPU trace
//! ring buffers (`trace/ring.rs`), CTF and other encoders (`trace/`), HTTP
//! parsing (`http.rs`), the screen console's rows (`status_screen.rs`) and the
//! guest-host contract (`contract.rs`: `/status`, the verdict, bench lines).
//! The bare-metal binary (`main.rs`) uses it.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod contract;
pub mod control;
pub mod http;
pub mod live_page;
pub mod netcheck;
pub mod serve;
pub mod status_screen;
pub mod trace;
