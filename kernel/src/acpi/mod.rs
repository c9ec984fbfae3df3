//! ACPI: table discovery and what the kernel takes from it.
pub mod machine;
pub mod madt;
pub mod recorded;
#[cfg(kernel_target)]
pub mod tables;
