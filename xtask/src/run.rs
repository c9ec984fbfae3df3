//! run
pub fn main(_a: &[String]) -> crate::Result<()> { todo!() }
pub fn acpi_dump(_a: &[String]) -> crate::Result<()> { todo!() }
