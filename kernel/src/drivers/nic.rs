//! The NICs we drive, as one smoltcp device: virtio-net or the Intel
//! gigabit family (e1000, e1000e, igb), found on PCI, or a USB CDC-ECM
//! adapter on an xHCI controller's root port.

use smoltcp::phy::{self, DeviceCapabilities};
use smoltcp::time::Instant;
use virtio_drivers::transport::pci::bus::DeviceFunction;

use alloc::string::String;
use alloc::vec::Vec;

use super::intel_gbe::e1000::{self, E1000};
use super::usb_net::{self, UsbNet};
use super::xhci::controller as xhci;
use super::pci::Found;
use super::virtio::legacy::LegacyPciTransport;
use super::virtio::net::{self as virtio_net, LEGACY_QUEUE_SIZE, LegacyVirtioNet, VirtioNet};


pub enum Nic {
    Virtio(VirtioNet),
    VirtioLegacy(LegacyVirtioNet),
    E1000(E1000),
    Usb(UsbNet),
}

/// A NIC brought up: the device, its model name, where it sits.
pub type Up = (Nic, &'static str, DeviceFunction);
/// Why the NIC at this function could not be brought up.
pub type Failed = (&'static str, DeviceFunction);

impl Nic {
    /// Every NIC `choice` admits among `devs`, brought up, in the documented
    /// order for `auto`: virtio-net, then the Intel family, each in PCI
    /// address order, then USB CDC-ECM adapters on xHCI controllers (in
    /// the controllers' PCI order, then root port order). Which one serves
    /// is the caller's choice. Also returns one line per USB device found,
    /// with its driver or why it has none.
    pub fn find_all(devs: &[Found], choice: crate::boot::cmdline::NicChoice) -> (Vec<Result<Up, Failed>>, Vec<String>) {
        use crate::boot::cmdline::NicChoice;
        let is_virtio = |f: &Found| virtio_drivers::transport::pci::virtio_device_type(&f.info) == Some(virtio_drivers::transport::DeviceType::Network);
        let is_intel = |f: &Found| f.info.vendor_id == e1000::INTEL && e1000::lookup(f.info.device_id).is_some();
        let is_xhci = |f: &Found| xhci::is_xhci(&f.info);
        let mut order: Vec<&Found> = devs
            .iter()
            .filter(|f| is_virtio(f) || is_intel(f) || is_xhci(f))
            .filter(|f| match choice {
                NicChoice::Auto => true,
                NicChoice::Virtio => is_virtio(f),
                NicChoice::E1000 => is_intel(f),
                NicChoice::Usb => is_xhci(f),
                NicChoice::At(b, d, fun) => (f.df.bus, f.df.device, f.df.function) == (b, d, fun),
            })
            .collect();
        order.sort_by_key(|f| (if is_virtio(f) { 0 } else if is_intel(f) { 1 } else { 2 }, f.df.bus, f.df.device, f.df.function));
        let mut found = Vec::new();
        let mut usb = Vec::new();
        for f in order {
            if is_virtio(f) {
                // Modern capabilities when the device has them, else the legacy I/O BAR.
                found.push(match VirtioNet::new(f.df) {
                    Ok(n) => Ok((Nic::Virtio(n), "virtio-net", f.df)),
                    Err(_) => LegacyVirtioNet::new_legacy(f.df).map(|n| (Nic::VirtioLegacy(n), "virtio-net (legacy)", f.df)).map_err(|e| (e, f.df)),
                });
            } else if let Some((model, family)) = e1000::lookup(f.info.device_id).filter(|_| is_intel(f)) {
                found.push(E1000::new(f.df, model, family).map(|n| (Nic::E1000(n), model, f.df)).map_err(|e| (e, f.df)));
            } else if let Some(r) = usb_nic(f, &mut usb) {
                found.push(r);
            }
        }
        (found, usb)
    }

    /// Is the link up? None where the device does not say.
    pub fn link_up(&self) -> Option<bool> {
        match self {
            Nic::Virtio(n) => n.link_up(),
            Nic::VirtioLegacy(n) => n.link_up(),
            Nic::E1000(n) => Some(n.link_up()),
            Nic::Usb(n) => Some(n.link_up()),
        }
    }

    pub fn mac(&self) -> [u8; 6] {
        match self {
            Nic::Virtio(n) => n.mac,
            Nic::VirtioLegacy(n) => n.mac,
            Nic::E1000(n) => n.mac,
            Nic::Usb(n) => n.mac,
        }
    }
}

type LegacyRx = virtio_net::RxToken<LegacyPciTransport, LEGACY_QUEUE_SIZE>;
type LegacyTx = virtio_net::TxToken<LegacyPciTransport, LEGACY_QUEUE_SIZE>;

pub enum Rx {
    Virtio(virtio_net::RxToken),
    VirtioLegacy(LegacyRx),
    E1000(e1000::RxToken),
    Usb(usb_net::RxToken),
}

pub enum Tx {
    Virtio(virtio_net::TxToken),
    VirtioLegacy(LegacyTx),
    E1000(e1000::TxToken),
    Usb(usb_net::TxToken),
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self {
            Rx::Virtio(t) => t.consume(f),
            Rx::VirtioLegacy(t) => t.consume(f),
            Rx::E1000(t) => t.consume(f),
            Rx::Usb(t) => t.consume(f),
        }
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self {
            Tx::Virtio(t) => t.consume(len, f),
            Tx::VirtioLegacy(t) => t.consume(len, f),
            Tx::E1000(t) => t.consume(len, f),
            Tx::Usb(t) => t.consume(len, f),
        }
    }
}

impl phy::Device for Nic {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, ts: Instant) -> Option<(Rx, Tx)> {
        match self {
            Nic::Virtio(n) => n.receive(ts).map(|(r, t)| (Rx::Virtio(r), Tx::Virtio(t))),
            Nic::VirtioLegacy(n) => n.receive(ts).map(|(r, t)| (Rx::VirtioLegacy(r), Tx::VirtioLegacy(t))),
            Nic::E1000(n) => n.receive(ts).map(|(r, t)| (Rx::E1000(r), Tx::E1000(t))),
            Nic::Usb(n) => n.receive(ts).map(|(r, t)| (Rx::Usb(r), Tx::Usb(t))),
        }
    }

    fn transmit(&mut self, ts: Instant) -> Option<Tx> {
        match self {
            Nic::Virtio(n) => n.transmit(ts).map(Tx::Virtio),
            Nic::VirtioLegacy(n) => n.transmit(ts).map(Tx::VirtioLegacy),
            Nic::E1000(n) => n.transmit(ts).map(Tx::E1000),
            Nic::Usb(n) => n.transmit(ts).map(Tx::Usb),
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        match self {
            Nic::Virtio(n) => n.capabilities(),
            Nic::VirtioLegacy(n) => n.capabilities(),
            Nic::E1000(n) => n.capabilities(),
            Nic::Usb(n) => n.capabilities(),
        }
    }
}

/// The xHCI controller at `f`: start it, list its devices into `listing`,
/// and bring up the first CDC-ECM adapter (None: no adapter on it).
fn usb_nic(f: &Found, listing: &mut Vec<String>) -> Option<Result<Up, Failed>> {
    let mut ctrl = match xhci::Controller::start(f.df, f.info.vendor_id, f.info.device_id) {
        Ok(c) => c,
        Err(e) => {
            listing.push(alloc::format!("xHCI {} {:04x}:{:04x}: controller failed: {e}", f.df, f.info.vendor_id, f.info.device_id));
            return None;
        }
    };
    let attached = ctrl.attach_all();
    if attached.is_empty() {
        listing.push(alloc::format!("xHCI {}: no USB device connected", f.df));
    }
    let mut chosen = None;
    for a in attached {
        match a {
            Err(e) => listing.push(alloc::format!("usb {} port {}: device failed: {}", f.df, e.port, e.why)),
            Ok(dev) => {
                let what = alloc::format!("usb {} port {} {} {} ({})", f.df, dev.port, dev.id(), crate::drivers::xhci::desc::describe(&dev.device, &dev.configs), crate::drivers::xhci::spec::speed_name(dev.speed));
                match (crate::drivers::xhci::desc::ecm_of(&dev.configs), &chosen) {
                    (Ok(ecm), None) => chosen = Some((dev, ecm, what)),
                    (Ok(_), Some(_)) => listing.push(alloc::format!("{what}: CDC-ECM, not used (one USB adapter is driven)")),
                    (Err(why), _) => listing.push(alloc::format!("{what}: no driver ({why})")),
                }
            }
        }
    }
    let (dev, ecm, what) = chosen?;
    Some(match UsbNet::start(ctrl, dev, ecm) {
        Ok(n) => {
            listing.push(alloc::format!("{what}: driver usb-net (CDC-ECM), MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", n.mac[0], n.mac[1], n.mac[2], n.mac[3], n.mac[4], n.mac[5]));
            Ok((Nic::Usb(n), "usb-net (CDC-ECM)", f.df))
        }
        Err(e) => {
            listing.push(alloc::format!("{what}: driver failed: {e}"));
            Err((e, f.df))
        }
    })
}
