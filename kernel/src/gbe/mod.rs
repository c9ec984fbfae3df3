//! Intel gigabit Ethernet, pure logic (host-tested): the PCH-attached parts'
//! PHY bring-up (`pch.rs`: leaving ULP mode, LANPHYPC, the firmware
//! semaphore). The driver that uses it is `drivers/e1000.rs`.

pub mod pch;
