//! Device drivers, one folder per device where a device has both pure
//! (host-tested) and hardware parts: the xHCI USB host controller
//! (`xhci/`), USB CDC Ethernet on it (`usb_net/`), the Intel gigabit family
//! (`intel_gbe/`), virtio-net (`virtio/`); and the small ones, one file
//! each: COM1 (`serial.rs`), QEMU's debug exit (`qemu.rs`), the RTC's CMOS
//! registers (`rtc.rs`), PCI (`pci.rs`; enumeration through bridges in `pci_scan.rs`, pure), DMA memory (`dma.rs`), the NIC as
//! one smoltcp device (`nic.rs`, `ethernet.rs`).

pub mod intel_gbe;
pub mod pci_scan;
pub mod xhci;
pub mod virtio;
#[cfg(kernel_target)]
pub mod dma;
#[cfg(kernel_target)]
pub mod ethernet;
#[cfg(kernel_target)]
pub mod nic;
#[cfg(kernel_target)]
pub mod pci;
#[cfg(kernel_target)]
pub mod qemu;
#[cfg(kernel_target)]
pub mod rtc;
#[cfg(kernel_target)]
pub mod serial;
#[cfg(kernel_target)]
pub mod usb_net;
