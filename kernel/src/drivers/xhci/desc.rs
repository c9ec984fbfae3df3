//! USB descriptors and requests as a host needs them to find and start a
//! CDC Ethernet function: the device descriptor, configuration walking, the
//! CDC functional descriptors, the MAC address string; and what the network
//! check prints for a device without a driver. Pure logic, host-tested.
//!
//! Sources: Universal Serial Bus Specification 2.0, §9.3 (setup data), §9.4
//! (standard requests), §9.6 (standard descriptors); USB Class Definitions for
//! Communications Devices 1.2 (CDC), §4 (class codes) and §5.2.3 (functional
//! descriptors); USB CDC Subclass Specification for Ethernet Control Model
//! Devices 1.2 (ECM), §5.4 (Ethernet Networking Functional Descriptor) and
//! §6.2.4 (SetEthernetPacketFilter).

use alloc::string::String;
use alloc::vec::Vec;

/// bmRequestType (USB 2.0 §9.3.1): direction, type, recipient.
pub const DIR_IN: u8 = 0x80;
pub const TYPE_CLASS: u8 = 0x20;
pub const RECIP_INTERFACE: u8 = 0x01;

/// Standard request codes (USB 2.0 Table 9-4).
pub const GET_DESCRIPTOR: u8 = 6;
pub const SET_CONFIGURATION: u8 = 9;
pub const SET_INTERFACE: u8 = 11;

/// Descriptor types (USB 2.0 Table 9-5; CDC 1.2 Table 12 for CS_INTERFACE).
pub const DT_DEVICE: u8 = 1;
pub const DT_CONFIG: u8 = 2;
pub const DT_STRING: u8 = 3;
pub const DT_INTERFACE: u8 = 4;
pub const DT_ENDPOINT: u8 = 5;
pub const DT_CS_INTERFACE: u8 = 0x24;

/// Class codes (CDC 1.2 Tables 3, 4 and 6): Communications, its Ethernet
/// Networking Control Model and Network Control Model subclasses, CDC Data;
/// the hub class (USB 2.0 §11.23.1).
pub const CLASS_COMM: u8 = 0x02;
pub const SUBCLASS_ECM: u8 = 0x06;
pub const SUBCLASS_NCM: u8 = 0x0D;
pub const CLASS_CDC_DATA: u8 = 0x0A;
pub const CLASS_HUB: u8 = 0x09;

/// CDC functional descriptor subtypes (CDC 1.2 Table 13).
pub const CDC_UNION: u8 = 0x06;
pub const CDC_ETHERNET: u8 = 0x0F;

/// SetEthernetPacketFilter (ECM 1.2 §6.2.4): the request and the filter
/// bits a host that serves unicast, broadcast and ARP needs: directed and
/// broadcast (multicast is not used here).
pub const SET_ETHERNET_PACKET_FILTER: u8 = 0x43;
pub const PACKET_TYPE_DIRECTED: u16 = 1 << 2;
pub const PACKET_TYPE_BROADCAST: u16 = 1 << 3;

/// Endpoint transfer types (bmAttributes bits 1:0, USB 2.0 Table 9-13).
pub const XFER_BULK: u8 = 2;
pub const XFER_INTERRUPT: u8 = 3;

/// Language id for string requests: US English (USB LANGIDs 0x0409), which
/// every device we meet offers.
pub const LANG_EN_US: u16 = 0x0409;

/// A SETUP packet (USB 2.0 §9.3), as the 8 bytes on the wire, little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    pub request_type: u8,
    pub request: u8,
    pub value: u16,
    pub index: u16,
    pub length: u16,
}

impl Setup {
    pub fn get_descriptor(kind: u8, index: u8, length: u16) -> Setup {
        Setup { request_type: DIR_IN, request: GET_DESCRIPTOR, value: (kind as u16) << 8 | index as u16, index: if kind == DT_STRING && index != 0 { LANG_EN_US } else { 0 }, length }
    }

    pub fn set_configuration(value: u8) -> Setup {
        Setup { request_type: 0, request: SET_CONFIGURATION, value: value as u16, index: 0, length: 0 }
    }

    pub fn set_interface(interface: u8, alt: u8) -> Setup {
        Setup { request_type: RECIP_INTERFACE, request: SET_INTERFACE, value: alt as u16, index: interface as u16, length: 0 }
    }

    pub fn set_packet_filter(interface: u8, filter: u16) -> Setup {
        Setup { request_type: TYPE_CLASS | RECIP_INTERFACE, request: SET_ETHERNET_PACKET_FILTER, value: filter, index: interface as u16, length: 0 }
    }

    /// Device to host?
    pub fn is_in(&self) -> bool {
        self.request_type & DIR_IN != 0
    }

    /// The 8 bytes as one little-endian word (an xHCI Setup Stage TRB's
    /// immediate data, xHCI 1.2 §6.4.1.2.1).
    pub fn to_u64(self) -> u64 {
        self.request_type as u64 | (self.request as u64) << 8 | (self.value as u64) << 16 | (self.index as u64) << 32 | (self.length as u64) << 48
    }
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(o)?, *b.get(o + 1)?]))
}

/// The device descriptor (USB 2.0 Table 9-8), the fields used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Device {
    pub usb: u16,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
    pub max_packet0: u8,
    pub vendor: u16,
    pub product: u16,
    pub configurations: u8,
}

impl Device {
    /// The first 8 bytes are enough for `max_packet0` (what a host reads
    /// first); the ids need all 18.
    pub fn parse(b: &[u8]) -> Result<Device, &'static str> {
        if b.len() < 8 || b[1] != DT_DEVICE || (b[0] as usize) < 18 {
            return Err("not a device descriptor");
        }
        let full = b.len() >= 18;
        Ok(Device {
            usb: u16_at(b, 2).unwrap_or(0),
            class: b[4],
            subclass: b[5],
            protocol: b[6],
            max_packet0: b[7],
            vendor: if full { u16_at(b, 8).unwrap_or(0) } else { 0 },
            product: if full { u16_at(b, 10).unwrap_or(0) } else { 0 },
            configurations: if full { b[17] } else { 0 },
        })
    }
}

/// wTotalLength of a configuration descriptor's first 9 bytes (USB 2.0 Table 9-10).
pub fn config_total_length(b: &[u8]) -> Result<u16, &'static str> {
    if b.len() < 4 || b[1] != DT_CONFIG || b[0] < 9 {
        return Err("not a configuration descriptor");
    }
    Ok(u16_at(b, 2).unwrap_or(0))
}

/// An endpoint: address (bit 7: IN), max packet size, interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub address: u8,
    pub attributes: u8,
    pub max_packet: u16,
    pub interval: u8,
}

impl Endpoint {
    pub fn is_in(&self) -> bool {
        self.address & 0x80 != 0
    }

    pub fn number(&self) -> u8 {
        self.address & 0x0F
    }

    pub fn transfer_type(&self) -> u8 {
        self.attributes & 3
    }
}

/// One interface alternate setting of a configuration, with what followed
/// it up to the next interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub number: u8,
    pub alt: u8,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
    pub endpoints: Vec<Endpoint>,
    /// Class-specific descriptors (CS_INTERFACE), whole.
    pub functional: Vec<Vec<u8>>,
}

/// A configuration descriptor set: its value and its interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub value: u8,
    pub interfaces: Vec<Interface>,
}

/// Walk a whole configuration descriptor set (the configuration, then its
/// interfaces, class descriptors and endpoints, USB 2.0 §9.4.3). A
/// descriptor that runs past the end, or a zero length, ends it with an error.
pub fn parse_config(b: &[u8]) -> Result<Config, &'static str> {
    let total = config_total_length(b)? as usize;
    if b.len() < 9 || total < 9 {
        return Err("configuration descriptor too short");
    }
    let b = &b[..total.min(b.len())];
    let mut cfg = Config { value: b[5], interfaces: Vec::new() };
    let mut o = b[0] as usize;
    while o + 2 <= b.len() {
        let (len, kind) = (b[o] as usize, b[o + 1]);
        if len < 2 || o + len > b.len() {
            return Err("a descriptor runs past the configuration's end");
        }
        let d = &b[o..o + len];
        match kind {
            DT_INTERFACE if len >= 9 => cfg.interfaces.push(Interface { number: d[2], alt: d[3], class: d[5], subclass: d[6], protocol: d[7], ..Default::default() }),
            DT_ENDPOINT if len >= 7 => {
                if let Some(i) = cfg.interfaces.last_mut() {
                    i.endpoints.push(Endpoint { address: d[2], attributes: d[3], max_packet: u16_at(d, 4).unwrap_or(0) & 0x7FF, interval: d[6] });
                }
            }
            DT_CS_INTERFACE => {
                if let Some(i) = cfg.interfaces.last_mut() {
                    i.functional.push(d.to_vec());
                }
            }
            _ => {}
        }
        o += len;
    }
    Ok(cfg)
}

/// A CDC Ethernet (ECM) function found in a configuration: what a host
/// needs to start it (ECM 1.2 §3.1: a communication interface with the
/// Ethernet functional descriptor, and a data interface whose alternate
/// setting with two bulk endpoints carries the frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ecm {
    pub config: u8,
    pub control: u8,
    pub data: u8,
    pub data_alt: u8,
    pub bulk_in: Endpoint,
    pub bulk_out: Endpoint,
    /// String index of the MAC address (iMACAddress).
    pub mac_string: u8,
    pub max_segment: u16,
}

/// Find the ECM function of a configuration. Err says what was missing, for
/// the device listing.
pub fn find_ecm(cfg: &Config) -> Result<Ecm, &'static str> {
    let control = cfg
        .interfaces
        .iter()
        .find(|i| i.class == CLASS_COMM && i.subclass == SUBCLASS_ECM)
        .ok_or(if cfg.interfaces.iter().any(|i| i.class == CLASS_COMM && i.subclass == SUBCLASS_NCM) { "CDC-NCM only (no CDC-ECM configuration)" } else { "no CDC-ECM interface" })?;
    let ether = control.functional.iter().find(|f| f.len() >= 13 && f[2] == CDC_ETHERNET).ok_or("CDC-ECM interface without its Ethernet functional descriptor")?;
    // The union names the data interface; without one, the next interface
    // number (as Linux's cdc_ether falls back to for broken descriptors).
    let data = control.functional.iter().find(|f| f.len() >= 5 && f[2] == CDC_UNION).map_or(control.number + 1, |u| u[4]);
    let alt = cfg
        .interfaces
        .iter()
        .filter(|i| i.number == data && i.class == CLASS_CDC_DATA)
        .find(|i| i.endpoints.iter().filter(|e| e.transfer_type() == XFER_BULK).count() >= 2)
        .ok_or("CDC-ECM data interface without two bulk endpoints")?;
    let bulk = |dir_in: bool| alt.endpoints.iter().copied().find(|e| e.transfer_type() == XFER_BULK && e.is_in() == dir_in);
    let (Some(bulk_in), Some(bulk_out)) = (bulk(true), bulk(false)) else { return Err("CDC-ECM data interface without a bulk IN and a bulk OUT endpoint") };
    if bulk_in.max_packet == 0 || bulk_out.max_packet == 0 {
        return Err("CDC-ECM bulk endpoint with a max packet size of 0");
    }
    Ok(Ecm {
        config: cfg.value,
        control: control.number,
        data,
        data_alt: alt.alt,
        bulk_in,
        bulk_out,
        mac_string: ether[3],
        max_segment: u16_at(ether, 8).unwrap_or(1514),
    })
}

/// The first ECM function among a device's configurations; without one,
/// why the first configuration has none (for the device listing).
pub fn ecm_of(configs: &[Config]) -> Result<Ecm, &'static str> {
    let mut why = "no configuration";
    for (i, c) in configs.iter().enumerate() {
        match find_ecm(c) {
            Ok(e) => return Ok(e),
            Err(e) if i == 0 => why = e,
            Err(_) => {}
        }
    }
    Err(why)
}

/// The MAC address from its string descriptor (ECM 1.2 §5.4: 12 hex digits,
/// most significant first, UTF-16LE after the 2-byte header). It must be a
/// unicast address.
pub fn parse_mac_string(b: &[u8]) -> Result<[u8; 6], &'static str> {
    if b.len() < 2 || b[1] != DT_STRING || (b[0] as usize) < 2 + 24 || b.len() < 2 + 24 {
        return Err("the MAC address string is not 12 characters");
    }
    let mut mac = [0u8; 6];
    for i in 0..12 {
        let c = u16_at(b, 2 + 2 * i).unwrap_or(0);
        let v = char::from_u32(c as u32).and_then(|c| c.to_digit(16)).ok_or("the MAC address string holds a non-hex character")?;
        mac[i / 2] = mac[i / 2] << 4 | v as u8;
    }
    if mac[0] & 1 != 0 || mac == [0; 6] {
        return Err("the MAC address string is not a unicast address");
    }
    Ok(mac)
}

/// A name for a device or interface class (USB-IF "Defined Class Codes"),
/// for the device listing.
pub fn class_name(class: u8, subclass: u8) -> &'static str {
    match (class, subclass) {
        (0x00, _) => "per interface",
        (0x01, _) => "audio",
        (CLASS_COMM, SUBCLASS_ECM) => "CDC Ethernet (ECM)",
        (CLASS_COMM, SUBCLASS_NCM) => "CDC Ethernet (NCM)",
        (CLASS_COMM, 0x02) => "CDC ACM (serial or RNDIS)",
        (CLASS_COMM, _) => "communications",
        (0x03, _) => "HID",
        (0x07, _) => "printer",
        (0x08, _) => "mass storage",
        (CLASS_HUB, _) => "hub",
        (CLASS_CDC_DATA, _) => "CDC data",
        (0x0E, _) => "video",
        (0xE0, _) => "wireless controller",
        (0xEF, _) => "miscellaneous (composite)",
        (0xFF, _) => "vendor specific",
        _ => "other",
    }
}

/// The class a listing shows for a device: the device's own, else (class 0
/// or the composite/miscellaneous class) the first interface's of the first
/// configuration, CDC Ethernet preferred wherever it appears.
pub fn describe(dev: &Device, configs: &[Config]) -> String {
    let ifaces = || configs.iter().flat_map(|c| c.interfaces.iter());
    let pick = ifaces()
        .find(|i| i.class == CLASS_COMM && matches!(i.subclass, SUBCLASS_ECM | SUBCLASS_NCM))
        .or_else(|| ifaces().next())
        .filter(|_| matches!(dev.class, 0x00 | 0xEF | CLASS_COMM));
    match pick {
        Some(i) => alloc::format!("class {:02x}.{:02x} {}", i.class, i.subclass, class_name(i.class, i.subclass)),
        None => alloc::format!("class {:02x}.{:02x} {}", dev.class, dev.subclass, class_name(dev.class, dev.subclass)),
    }
}

/// One bulk OUT frame as the two transfers a host queues: a first of whole
/// max-size packets, then the rest, which is shorter than one packet (zero
/// bytes when the frame is a multiple of it: the zero-length packet that ends
/// such a transfer, USB 2.0 §5.8.3). On the wire this is one transfer of
/// `len` bytes; a device that ends a frame at each short transfer (QEMU's
/// usb-net sees each xHCI TD whole) sees it end where it should.
pub fn split_out(len: usize, max_packet: u16) -> (usize, usize) {
    let mp = max_packet.max(1) as usize;
    let rest = len % mp;
    (len - rest, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration descriptor set of an RTL8153-based adapter's CDC
    /// configuration (its second; `lsusb -v` of a 0bda:8153 as published in
    /// many bug reports: control interface 0 with header, union and Ethernet
    /// descriptors and an interrupt endpoint, data interface 1 alternate 0
    /// empty and alternate 1 with bulk 0x81 IN and 0x02 OUT of 512 bytes).
    fn rtl8153_ecm() -> Vec<u8> {
        let mut d = alloc::vec![9, DT_CONFIG, 0, 0, 2, 2, 0, 0xA0, 0x32];
        d.extend([9, DT_INTERFACE, 0, 0, 1, CLASS_COMM, SUBCLASS_ECM, 0, 5]);
        d.extend([5, DT_CS_INTERFACE, 0x00, 0x10, 0x01]);
        d.extend([5, DT_CS_INTERFACE, CDC_UNION, 0, 1]);
        d.extend([13, DT_CS_INTERFACE, CDC_ETHERNET, 3, 0, 0, 0, 0, 0xEA, 0x05, 0, 0, 0]);
        d.extend([7, DT_ENDPOINT, 0x83, XFER_INTERRUPT, 16, 0, 8]);
        d.extend([9, DT_INTERFACE, 1, 0, 0, CLASS_CDC_DATA, 0, 0, 0]);
        d.extend([9, DT_INTERFACE, 1, 1, 2, CLASS_CDC_DATA, 0, 0, 0]);
        d.extend([7, DT_ENDPOINT, 0x81, XFER_BULK, 0, 2, 0]);
        d.extend([7, DT_ENDPOINT, 0x02, XFER_BULK, 0, 2, 0]);
        let n = d.len() as u16;
        d[2..4].copy_from_slice(&n.to_le_bytes());
        d
    }

    #[test]
    fn setup_bytes_are_little_endian_in_wire_order() {
        // GET_DESCRIPTOR(device, 18): 80 06 00 01 00 00 12 00 (USB 2.0 §9.4.3).
        assert_eq!(Setup::get_descriptor(DT_DEVICE, 0, 18).to_u64().to_le_bytes(), [0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00]);
        // A string other than the language table asks in US English.
        assert_eq!(Setup::get_descriptor(DT_STRING, 3, 26).to_u64().to_le_bytes(), [0x80, 0x06, 0x03, 0x03, 0x09, 0x04, 26, 0]);
        assert_eq!(Setup::set_interface(1, 1).to_u64().to_le_bytes(), [0x01, 0x0B, 1, 0, 1, 0, 0, 0]);
        assert_eq!(Setup::set_packet_filter(0, PACKET_TYPE_DIRECTED | PACKET_TYPE_BROADCAST).to_u64().to_le_bytes(), [0x21, 0x43, 0x0C, 0, 0, 0, 0, 0]);
        assert!(!Setup::set_configuration(1).is_in());
    }

    #[test]
    fn device_descriptor_fields() {
        let b = [18, 1, 0x00, 0x02, 0x02, 0, 0, 64, 0x25, 0x05, 0xA2, 0xA4, 0, 0, 1, 2, 10, 2];
        let d = Device::parse(&b).unwrap();
        assert_eq!((d.usb, d.class, d.max_packet0, d.vendor, d.product, d.configurations), (0x200, 2, 64, 0x0525, 0xA4A2, 2));
        // The first 8 bytes give the packet size only.
        assert_eq!(Device::parse(&b[..8]).unwrap().max_packet0, 64);
        assert!(Device::parse(&[9, 2, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn ecm_function_of_an_rtl8153() {
        let cfg = parse_config(&rtl8153_ecm()).unwrap();
        assert_eq!(cfg.value, 2);
        assert_eq!(cfg.interfaces.len(), 3);
        let e = find_ecm(&cfg).unwrap();
        assert_eq!((e.config, e.control, e.data, e.data_alt, e.mac_string, e.max_segment), (2, 0, 1, 1, 3, 1514));
        assert_eq!((e.bulk_in.address, e.bulk_in.max_packet, e.bulk_out.address, e.bulk_out.max_packet), (0x81, 512, 0x02, 512));
    }

    #[test]
    fn ecm_errors_name_what_is_missing() {
        // RNDIS (communications, ACM subclass, vendor protocol): no ECM.
        let mut d = rtl8153_ecm();
        d[9 + 6] = 0x02;
        assert_eq!(find_ecm(&parse_config(&d).unwrap()), Err("no CDC-ECM interface"));
        let mut d = rtl8153_ecm();
        d[9 + 6] = SUBCLASS_NCM;
        assert_eq!(find_ecm(&parse_config(&d).unwrap()), Err("CDC-NCM only (no CDC-ECM configuration)"));
        // Alternate 1 with its bulk OUT turned into a second IN.
        let mut d = rtl8153_ecm();
        let n = d.len();
        d[n - 5] = 0x82;
        assert!(find_ecm(&parse_config(&d).unwrap()).unwrap_err().contains("bulk IN and a bulk OUT"));
        // A descriptor claiming more bytes than the set holds.
        let mut d = rtl8153_ecm();
        d[9] = 200;
        assert!(parse_config(&d).is_err());
        // Zero-length descriptors end the walk with an error, not a loop.
        let mut d = rtl8153_ecm();
        d[9] = 0;
        assert!(parse_config(&d).is_err());
    }

    #[test]
    fn ecm_is_found_in_any_configuration() {
        let vendor = Config { value: 1, interfaces: alloc::vec![Interface { class: 0xFF, ..Default::default() }] };
        let ecm = parse_config(&rtl8153_ecm()).unwrap();
        assert_eq!(ecm_of(&[vendor.clone(), ecm.clone()]).map(|e| e.config), Ok(2));
        assert_eq!(ecm_of(&[vendor]), Err("no CDC-ECM interface"));
        assert_eq!(ecm_of(&[]), Err("no configuration"));
    }

    #[test]
    fn mac_string() {
        let s: Vec<u8> = [26u8, DT_STRING].into_iter().chain("400102030405".encode_utf16().flat_map(u16::to_le_bytes)).collect();
        assert_eq!(parse_mac_string(&s), Ok([0x40, 0x01, 0x02, 0x03, 0x04, 0x05]));
        let s: Vec<u8> = [26u8, DT_STRING].into_iter().chain("00E04C68aBcD".encode_utf16().flat_map(u16::to_le_bytes)).collect();
        assert_eq!(parse_mac_string(&s), Ok([0x00, 0xE0, 0x4C, 0x68, 0xAB, 0xCD]));
        let s: Vec<u8> = [26u8, DT_STRING].into_iter().chain("0100000000g0".encode_utf16().flat_map(u16::to_le_bytes)).collect();
        assert!(parse_mac_string(&s).is_err());
        let s: Vec<u8> = [26u8, DT_STRING].into_iter().chain("010000000000".encode_utf16().flat_map(u16::to_le_bytes)).collect();
        assert_eq!(parse_mac_string(&s), Err("the MAC address string is not a unicast address"));
        assert!(parse_mac_string(&[4, DT_STRING, b'4', 0]).is_err());
    }

    #[test]
    fn out_frames_split_at_the_last_whole_packet() {
        assert_eq!(split_out(1514, 64), (1472, 42));
        assert_eq!(split_out(1514, 512), (1024, 490));
        assert_eq!(split_out(128, 64), (128, 0));
        assert_eq!(split_out(42, 64), (0, 42));
    }

    #[test]
    fn listing_prefers_the_cdc_interface_of_a_composite_device() {
        let dev = Device { usb: 0x210, class: 0, subclass: 0, protocol: 0, max_packet0: 9, vendor: 0x0bda, product: 0x8153, configurations: 2 };
        let vendor = Config { value: 1, interfaces: alloc::vec![Interface { class: 0xFF, ..Default::default() }] };
        let ecm = parse_config(&rtl8153_ecm()).unwrap();
        assert_eq!(describe(&dev, &[vendor.clone(), ecm]), "class 02.06 CDC Ethernet (ECM)");
        assert_eq!(describe(&dev, &[vendor]), "class ff.00 vendor specific");
        let hub = Device { class: CLASS_HUB, ..dev };
        assert_eq!(describe(&hub, &[]), "class 09.00 hub");
    }
}
