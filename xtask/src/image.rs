//! image
pub fn build_image(_cmdline: Option<&str>) -> crate::Result<std::path::PathBuf> { todo!() }
