//! What the network service tells the user about its own configuration:
//! a static address whose gateway is off its subnet, and the ARP probe that
//! finds out whether the gateway answers at all, and the network devices no
//! driver took. Pure logic, host-tested.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Ipv4Address};

/// Bytes of an Ethernet frame carrying an ARP packet for IPv4.
pub const ARP_FRAME_LEN: usize = 14 + 28;

/// The problem with a static `ip=A/P gw=G`, if any.
pub fn static_config_warning(ip: [u8; 4], prefix: u8, gw: Option<[u8; 4]>) -> Option<String> {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix.min(32) as u32) };
    let (a, net) = (u32::from_be_bytes(ip), u32::from_be_bytes(ip) & mask);
    let mut w = String::new();
    if prefix < 31 && (a == net || a == net | !mask) {
        let _ = write!(w, "{} is the {} address of {}/{prefix}", Ipv4Address::from(ip), if a == net { "network" } else { "broadcast" }, Ipv4Address::from(net.to_be_bytes()));
    } else if let Some(g) = gw
        && u32::from_be_bytes(g) & mask != net
    {
        let _ = write!(
            w,
            "gateway {} is not in the subnet of {}/{prefix}: clients outside the subnet cannot be answered",
            Ipv4Address::from(g),
            Ipv4Address::from(ip)
        );
    }
    (!w.is_empty()).then_some(w)
}

/// A broadcast ARP request from `(mac, ip)` asking who has `target`.
pub fn arp_request(mac: [u8; 6], ip: [u8; 4], target: [u8; 4]) -> [u8; ARP_FRAME_LEN] {
    let mut buf = [0u8; ARP_FRAME_LEN];
    let eth = EthernetRepr { src_addr: EthernetAddress(mac), dst_addr: EthernetAddress::BROADCAST, ethertype: EthernetProtocol::Arp };
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(mac),
        source_protocol_addr: Ipv4Address::from(ip),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: Ipv4Address::from(target),
    };
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    buf
}

/// Is `frame` an ARP packet (reply or request) sent by `ip`? Either shows
/// that `ip` is on the link and answers.
pub fn arp_from(frame: &[u8], ip: [u8; 4]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return false };
    if eth.ethertype() != EthernetProtocol::Arp {
        return false;
    }
    let Ok(p) = ArpPacket::new_checked(eth.payload()) else { return false };
    matches!(ArpRepr::parse(&p), Ok(ArpRepr::EthernetIpv4 { source_protocol_addr, .. }) if source_protocol_addr == Ipv4Address::from(ip))
}

/// A PCI function as the PCI scan found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciFunction {
    /// `bus:device.function`.
    pub address: String,
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
}

/// PCI class 02h (network controller) subclasses (PCI Code and ID
/// Assignment Specification 1.12, §1.3).
fn network_subclass(sub: u8) -> &'static str {
    match sub {
        0x00 => "Ethernet controller",
        0x01 => "Token Ring controller",
        0x02 => "FDDI controller",
        0x03 => "ATM controller",
        0x04 => "ISDN controller",
        0x07 => "InfiniBand controller",
        0x08 => "host fabric controller",
        _ => "network controller",
    }
}

/// The PCI class of network controllers.
pub const PCI_CLASS_NETWORK: u8 = 0x02;

/// One line per network-class function no driver took, for the console,
/// `/status` and the screen: `00:02.0 8086:10c9 Ethernet controller (class
/// 02.00): no driver` (or the driver's failure).
pub fn unsupported_nics(functions: &[PciFunction], failed: Option<(&str, &str)>) -> Vec<String> {
    functions
        .iter()
        .filter(|f| f.class == PCI_CLASS_NETWORK)
        .map(|f| {
            let why = match failed {
                Some((addr, why)) if addr == f.address => alloc::format!("driver failed: {why}"),
                _ => String::from("no driver"),
            };
            alloc::format!("{} {:04x}:{:04x} {} (class {:02x}.{:02x}): {why}", f.address, f.vendor, f.device, network_subclass(f.subclass), f.class, f.subclass)
        })
        .collect()
}

/// Which of several NICs (in the documented order) serves, given their link
/// states: the first whose link is up; None while none is (a NIC that does
/// not report its link counts as down here: the caller falls back to the
/// first NIC when its wait ends).
pub fn first_linked(links: &[Option<bool>]) -> Option<usize> {
    links.iter().position(|l| *l == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_nic_with_a_link_serves() {
        assert_eq!(first_linked(&[Some(false), Some(true), Some(true)]), Some(1), "cable in the second wins over the first");
        assert_eq!(first_linked(&[Some(true), Some(true)]), Some(0), "order decides between linked NICs");
        assert_eq!(first_linked(&[None, Some(false)]), None, "no link yet: keep waiting");
        assert_eq!(first_linked(&[None, Some(true)]), Some(1), "a NIC that does not say is not taken for linked");
        assert_eq!(first_linked(&[]), None);
    }

    #[test]
    fn network_functions_without_a_driver_are_named() {
        let f = |address: &str, vendor, device, class, subclass| PciFunction { address: address.into(), vendor, device, class, subclass };
        let devs = [f("00:00.0", 0x8086, 0x29c0, 0x06, 0x00), f("00:02.0", 0x8086, 0x10c9, 0x02, 0x00), f("03:00.0", 0x15b3, 0x1017, 0x02, 0x07)];
        assert_eq!(
            unsupported_nics(&devs, None),
            ["00:02.0 8086:10c9 Ethernet controller (class 02.00): no driver", "03:00.0 15b3:1017 InfiniBand controller (class 02.07): no driver"]
        );
        assert_eq!(unsupported_nics(&devs, Some(("00:02.0", "no MAC address")))[0], "00:02.0 8086:10c9 Ethernet controller (class 02.00): driver failed: no MAC address");
        assert!(unsupported_nics(&devs[..1], None).is_empty());
    }

    #[test]
    fn static_configurations() {
        assert_eq!(static_config_warning([10, 0, 2, 15], 24, Some([10, 0, 2, 2])), None);
        assert_eq!(static_config_warning([10, 0, 2, 15], 24, None), None);
        let w = static_config_warning([192, 168, 50, 10], 24, Some([10, 0, 2, 2])).unwrap();
        assert!(w.contains("gateway 10.0.2.2 is not in the subnet of 192.168.50.10/24"), "{w}");
        assert!(static_config_warning([10, 0, 2, 15], 16, Some([10, 0, 9, 1])).is_none());
        assert!(static_config_warning([10, 0, 2, 15], 30, Some([10, 0, 2, 17])).is_some());
        assert!(static_config_warning([10, 0, 2, 0], 24, None).unwrap().contains("network address of 10.0.2.0/24"));
        assert!(static_config_warning([10, 0, 2, 255], 24, None).unwrap().contains("broadcast"));
        assert_eq!(static_config_warning([10, 0, 0, 1], 32, Some([10, 0, 0, 2])).map(|w| w.contains("not in the subnet")), Some(true));
        assert!(static_config_warning([1, 2, 3, 4], 0, Some([9, 9, 9, 9])).is_none(), "/0 holds every address");
    }

    #[test]
    fn arp_probe_and_answer() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let req = arp_request(mac, [10, 0, 2, 15], [10, 0, 2, 2]);
        assert_eq!(&req[..6], &[0xff; 6], "broadcast");
        assert_eq!(&req[12..14], &[0x08, 0x06], "ARP");
        assert!(arp_from(&req, [10, 0, 2, 15]), "our own request is from us");
        assert!(!arp_from(&req, [10, 0, 2, 2]));
        // The gateway's reply.
        let mut reply = arp_request([2, 0, 0, 0, 0, 2], [10, 0, 2, 2], [10, 0, 2, 15]);
        reply[21] = 2; // operation: reply
        assert!(arp_from(&reply, [10, 0, 2, 2]));
        assert!(!arp_from(&reply[..20], [10, 0, 2, 2]), "truncated");
        assert!(!arp_from(&[0u8; 60], [0, 0, 0, 0]), "not ARP");
    }
}
