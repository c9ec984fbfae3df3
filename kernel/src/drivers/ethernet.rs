//! What every NIC driver here offers smoltcp, in one place that the
//! drivers and the NIC enumeration (`nic.rs`) both use.

use smoltcp::phy::{DeviceCapabilities, Medium};

/// What every driver here offers smoltcp: Ethernet frames of up to 1514
/// bytes, one packet per poll round (the drivers are polled, not interrupt-driven).
pub fn ethernet_capabilities() -> DeviceCapabilities {
    let mut c = DeviceCapabilities::default();
    c.medium = Medium::Ethernet;
    c.max_transmission_unit = 1514;
    c.max_burst_size = Some(1);
    c
}
