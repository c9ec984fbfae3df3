//! test
pub fn main(_a: &[String]) -> crate::Result<()> { todo!() }
