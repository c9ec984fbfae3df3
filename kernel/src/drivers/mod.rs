//! Device drivers.
pub mod pci;
pub mod qemu;
pub mod serial;
pub mod virtio_net;
