//! The xHCI USB host controller: its data structures and register bits
//! (`spec.rs`) and USB descriptors and requests (`desc.rs`), pure logic
//! tested on the host, and the controller itself on the machine
//! (`controller.rs`: reset, rings, device enumeration). USB class drivers
//! (`../usb_net/`) use all three.

pub mod desc;
pub mod spec;
#[cfg(kernel_target)]
pub mod controller;
