//! USB as a host sees it, pure logic (host-tested): descriptors and requests
//! (`desc.rs`), the xHCI controller's data structures and register bits
//! (`xhci.rs`). The controller and the CDC Ethernet class driver that use
//! them are `drivers/xhci.rs` and `drivers/usb_net.rs`.

pub mod desc;
pub mod xhci;
