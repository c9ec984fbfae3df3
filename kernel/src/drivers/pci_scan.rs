//! PCI enumeration as Linux does it (`drivers/pci/probe.c`,
//! `pci_scan_child_bus` and `pci_scan_slot`): from the root bus, each
//! device's function 0, its other functions only when function 0's header
//! says the device is multi-function (bit 7 of the header type; PCI Local Bus
//! Specification 3.0 §6.2.1: a single-function device may answer for every
//! function number, aliasing function 0), and the buses behind PCI-to-PCI
//! and CardBus bridges (header types 1 and 2) through their secondary bus
//! numbers, as firmware assigned them.
//!
//! Walking every bus of an ECAM window instead (256 buses, 8 functions
//! each) costs 65,536 configuration reads, each an exit to the hypervisor
//! when the appliance runs under one (issue 29), and can list an aliased
//! single-function device eight times. Pure logic over a configuration-read
//! function, host-tested on model topologies.

use alloc::vec::Vec;

use virtio_drivers::transport::pci::bus::{DeviceFunction, DeviceFunctionInfo, HeaderType};

/// Configuration-space offsets and fields (PCI Local Bus Specification 3.0
/// §6.1, PCI-to-PCI Bridge Architecture Specification 1.2 §3.2).
const VENDOR_DEVICE: u8 = 0x00;
const CLASS_REVISION: u8 = 0x08;
const HEADER_TYPE_WORD: u8 = 0x0C;
const BRIDGE_BUS_NUMBERS: u8 = 0x18;
const HEADER_MULTI_FUNCTION: u32 = 1 << 23;
const HEADER_TYPE_MASK: u8 = 0x7F;
const HEADER_PCI_BRIDGE: u8 = 1;
const HEADER_CARDBUS_BRIDGE: u8 = 2;
/// What a read of an absent function gives.
const ABSENT: u32 = 0xFFFF_FFFF;

/// What a scan found, and what it cost.
#[derive(Debug, Default)]
pub struct Scan {
    pub functions: Vec<(DeviceFunction, DeviceFunctionInfo)>,
    /// Buses walked (the root and those behind bridges).
    pub buses: usize,
    /// Configuration reads made.
    pub reads: usize,
}

/// Walk from `root` through bridges, never past `last_bus` (the end of the
/// ECAM window). `read(df, offset)` reads a configuration dword.
pub fn scan(root: u8, last_bus: u8, mut read: impl FnMut(DeviceFunction, u8) -> u32) -> Scan {
    let mut s = Scan::default();
    let mut visited = [false; 256];
    let mut pending: Vec<u8> = alloc::vec![root];
    let mut rd = |df: DeviceFunction, off: u8, s: &mut Scan| {
        s.reads += 1;
        read(df, off)
    };
    while let Some(bus) = pending.pop() {
        if core::mem::replace(&mut visited[bus as usize], true) {
            continue;
        }
        s.buses += 1;
        for device in 0..32u8 {
            let f0 = DeviceFunction { bus, device, function: 0 };
            let id = rd(f0, VENDOR_DEVICE, &mut s);
            if absent(id) {
                continue;
            }
            let header0 = rd(f0, HEADER_TYPE_WORD, &mut s);
            let functions = if header0 & HEADER_MULTI_FUNCTION != 0 { 8 } else { 1 };
            for function in 0..functions {
                let df = DeviceFunction { bus, device, function };
                let (id, header) = if function == 0 { (id, header0) } else { (rd(df, VENDOR_DEVICE, &mut s), 0) };
                if absent(id) {
                    continue;
                }
                let header = if function == 0 { header } else { rd(df, HEADER_TYPE_WORD, &mut s) };
                let class = rd(df, CLASS_REVISION, &mut s);
                let kind = (header >> 16) as u8 & HEADER_TYPE_MASK;
                s.functions.push((
                    df,
                    DeviceFunctionInfo {
                        vendor_id: id as u16,
                        device_id: (id >> 16) as u16,
                        class: (class >> 24) as u8,
                        subclass: (class >> 16) as u8,
                        prog_if: (class >> 8) as u8,
                        revision: class as u8,
                        header_type: HeaderType::from(kind),
                    },
                ));
                if kind == HEADER_PCI_BRIDGE || kind == HEADER_CARDBUS_BRIDGE {
                    let secondary = (rd(df, BRIDGE_BUS_NUMBERS, &mut s) >> 8) as u8;
                    // 0 or a bus at or before this one: not assigned (firmware's job).
                    if secondary > bus && secondary <= last_bus {
                        pending.push(secondary);
                    }
                }
            }
        }
    }
    s.functions.sort_by_key(|(df, _)| *df);
    s
}

fn absent(vendor_device: u32) -> bool {
    matches!(vendor_device & 0xFFFF, 0xFFFF | 0x0000) || vendor_device == ABSENT
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A function's registers: vendor:device, class, header word, bridge bus numbers.
    type Regs = (u32, u32, u32, u32);
    /// A model bus: (bus, device, function) -> its registers.
    struct Model(HashMap<(u8, u8, u8), Regs>);

    impl Model {
        fn read(&self, df: DeviceFunction, off: u8) -> u32 {
            // A single-function device answers for every function number
            // with function 0's registers (aliasing), as some hardware does.
            let key = (df.bus, df.device, df.function);
            let regs = self.0.get(&key).or_else(|| self.0.get(&(df.bus, df.device, 0)).filter(|r| r.2 & HEADER_MULTI_FUNCTION == 0));
            match (regs, off) {
                (None, _) => ABSENT,
                (Some(r), VENDOR_DEVICE) => r.0,
                (Some(r), CLASS_REVISION) => r.1,
                (Some(r), HEADER_TYPE_WORD) => r.2,
                (Some(r), BRIDGE_BUS_NUMBERS) => r.3,
                _ => 0,
            }
        }
    }

    fn q35_like() -> Model {
        let mut m = HashMap::new();
        let dev = |id: u32, class: u32| (id, class, 0, 0);
        m.insert((0, 0, 0), dev(0x29c0_8086, 0x0600_0000)); // host bridge
        // A root port to bus 1 (secondary 1, subordinate 2).
        m.insert((0, 1, 0), (0x000c_1b36, 0x0604_0000, 1 << 16, 0x0002_0100));
        // A multi-function device: functions 0 and 3.
        m.insert((0, 0x1f, 0), (0x2918_8086, 0x0601_0000, HEADER_MULTI_FUNCTION, 0));
        m.insert((0, 0x1f, 3), dev(0x2930_8086, 0x0c05_0000));
        // A single-function NIC (aliased on functions 1-7 by the model).
        m.insert((0, 2, 0), dev(0x100e_8086, 0x0200_0000));
        // Bus 1: a bridge to bus 2; bus 2: a NIC.
        m.insert((1, 0, 0), (0x000e_1b36, 0x0604_0000, 1 << 16, 0x0002_0201));
        m.insert((2, 5, 0), dev(0x10d3_8086, 0x0200_0000));
        // Bus 7: nothing leads there.
        m.insert((7, 0, 0), dev(0x1234_1234, 0x0200_0000));
        Model(m)
    }

    #[test]
    fn bridges_are_followed_and_aliases_are_not_listed() {
        let m = q35_like();
        let s = scan(0, 255, |df, off| m.read(df, off));
        let found: Vec<(u8, u8, u8, u16)> = s.functions.iter().map(|(df, i)| (df.bus, df.device, df.function, i.device_id)).collect();
        assert_eq!(found, [(0, 0, 0, 0x29c0), (0, 1, 0, 0x000c), (0, 2, 0, 0x100e), (0, 0x1f, 0, 0x2918), (0, 0x1f, 3, 0x2930), (1, 0, 0, 0x000e), (2, 5, 0, 0x10d3)]);
        assert_eq!(s.buses, 3);
        assert!(matches!(s.functions[1].1.header_type, HeaderType::PciPciBridge));
        // 32 probes per bus walked, and a few reads per function: far from
        // the 256 x 8 probes of every bus and function.
        assert!(s.reads < 3 * 32 + 7 * 3 + 2 + 7 + 8, "{} reads", s.reads);
    }

    #[test]
    fn a_bridge_is_not_followed_outside_the_window_or_backwards() {
        let mut m = q35_like();
        m.0.insert((2, 6, 0), (0x000e_1b36, 0x0604_0000, 1 << 16, 0x0000_0000)); // secondary 0: unassigned
        m.0.insert((2, 7, 0), (0x000e_1b36, 0x0604_0000, 1 << 16, 0x0000_0102)); // secondary 1: backwards
        let s = scan(0, 1, |df, off| m.read(df, off));
        // Bus 2 lies past the window's last bus: not walked.
        assert_eq!(s.buses, 2);
        assert!(s.functions.iter().all(|(df, _)| df.bus <= 1));
        let s = scan(0, 255, |df, off| m.read(df, off));
        assert_eq!(s.buses, 3, "no loop back to bus 1, nothing at bus 0 again");
    }
}
