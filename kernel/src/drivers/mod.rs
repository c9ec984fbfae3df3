//! Device drivers.
pub mod e1000;
pub mod pci;
pub mod nic;
pub mod qemu;
pub mod serial;
pub mod virtio_legacy;
pub mod virtio_net;
