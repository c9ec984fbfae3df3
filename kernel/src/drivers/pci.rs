//! PCI: configuration space through the legacy ports (0xCF8/0xCFC, PCI Local
//! Bus Specification 3.0 §3.2.2.3.2) or ECAM from the ACPI MCFG, and bus
//! enumeration, through the `virtio-drivers` crate's PCI root.

use virtio_drivers::transport::pci::bus::{BarInfo, Cam, Command, ConfigurationAccess, DeviceFunction, DeviceFunctionInfo, MmioCam, PciRoot};
use x86_64::instructions::port::Port;

/// CONFIG_ADDRESS and CONFIG_DATA.
const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;
/// CONFIG_ADDRESS bit 31: enable.
const CONFIG_ENABLE: u32 = 1 << 31;

/// Configuration access through the legacy I/O ports (serialized by the
/// caller: PCI setup runs on one CPU at boot).
pub struct PortCam;

impl PortCam {
    fn address(df: DeviceFunction, off: u8) -> u32 {
        CONFIG_ENABLE | (df.bus as u32) << 16 | (df.device as u32) << 11 | (df.function as u32) << 8 | (off as u32 & 0xFC)
    }
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, off: u8) -> u32 {
        // SAFETY: the PC's PCI configuration ports; address then data.
        unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(Self::address(df, off));
            Port::<u32>::new(CONFIG_DATA).read()
        }
    }

    fn write_word(&mut self, df: DeviceFunction, off: u8, data: u32) {
        // SAFETY: as above; the caller owns the device's configuration.
        unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(Self::address(df, off));
            Port::<u32>::new(CONFIG_DATA).write(data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// One function found on the bus.
#[derive(Clone, Debug)]
pub struct Found {
    pub df: DeviceFunction,
    pub info: DeviceFunctionInfo,
}

/// Enumerate segment 0 from its first bus, following bridges
/// (`pci_scan.rs`): through ECAM when the MCFG gives a window for it (only
/// its buses: reading past the window's end reads whatever lies there),
/// else with legacy port access (the machines we boot on decode it).
/// Returns the functions, how they were read, and the scan's cost.
pub fn enumerate(ecam: Option<&crate::acpi::machine::EcamRegion>) -> (alloc::vec::Vec<Found>, &'static str, super::pci_scan::Scan) {
    let (scan, how) = match ecam {
        Some(e) => {
            // The MCFG base is where bus 0 would be; the window covers bus_start..=bus_end
            // (PCI Firmware Spec 3.0, Table 4-3; Linux `PCI_MMCFG_BUS_OFFSET`).
            let _ = crate::mem::paging::map_mmio(e.base + ((e.bus_start as u64) << 20), ((e.bus_end as u64 - e.bus_start as u64) + 1) << 20);
            // SAFETY: the MCFG's ECAM window, identity-mapped MMIO; only its buses are read.
            let cam = unsafe { MmioCam::new(e.base as *mut u8, Cam::Ecam) };
            (super::pci_scan::scan(e.bus_start, e.bus_end, |df, off| cam.read_word(df, off)), "ECAM")
        }
        None => (super::pci_scan::scan(0, 255, |df, off| PortCam.read_word(df, off)), "ports 0xCF8/0xCFC"),
    };
    let found = scan.functions.iter().map(|(df, info)| Found { df: *df, info: info.clone() }).collect();
    (found, how, scan)
}

/// A device's registers: BAR0 as an assigned memory BAR, mapped (the
/// identity map may not reach a BAR placed high), with memory decoding and
/// bus mastering on. Its (address, size).
pub fn map_bar0(df: DeviceFunction) -> Result<(u64, u64), &'static str> {
    let mut root = PciRoot::new(PortCam);
    let (mmio, size) = match root.bar_info(df, 0).map_err(|_| "cannot read BAR0")? {
        Some(BarInfo::Memory { address, size, .. }) if address != 0 => (address, size),
        _ => return Err("BAR0 is not an assigned memory BAR"),
    };
    crate::mem::paging::map_mmio(mmio, size).map_err(|_| "cannot map BAR0")?;
    root.set_command(df, Command::MEMORY_SPACE | Command::BUS_MASTER);
    Ok((mmio, size))
}
