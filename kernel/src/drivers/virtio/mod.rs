//! virtio-net over PCI: the modern transport through the `virtio-drivers`
//! crate and our own legacy (0.9.5) transport for old hypervisors
//! (`legacy.rs`), both behind one device (`net.rs`).

#[cfg(kernel_target)]
pub mod legacy;
#[cfg(kernel_target)]
pub mod net;
