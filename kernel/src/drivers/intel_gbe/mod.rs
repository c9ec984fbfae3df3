//! The Intel gigabit Ethernet family: the e1000-style driver for the
//! 82540EM/82545EM (e1000), 82574L (e1000e), 82576/I350/I210/I211 (igb) and
//! the PCH-attached I217-I219 (`e1000.rs`), and the PCH parts' PHY bring-up
//! (`pch.rs`: leaving ULP mode, LANPHYPC, the firmware semaphore), pure logic
//! tested on the host against a register model.

pub mod pch;
#[cfg(kernel_target)]
pub mod e1000;
