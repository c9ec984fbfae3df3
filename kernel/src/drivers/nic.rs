//! The NICs we drive, as one smoltcp device: virtio-net or e1000, found on PCI.

use smoltcp::phy::{self, DeviceCapabilities};
use smoltcp::time::Instant;
use virtio_drivers::transport::pci::bus::DeviceFunction;

use super::e1000::{self, E1000};
use super::pci::Found;
use super::virtio_net::{self, VirtioNet};

pub enum Nic {
    Virtio(VirtioNet),
    E1000(E1000),
}

/// A NIC brought up: the device, its model name, where it sits.
pub type Up = (Nic, &'static str, DeviceFunction);
/// Why the NIC at this function could not be brought up.
pub type Failed = (&'static str, DeviceFunction);

impl Nic {
    /// The first supported NIC among `devs`, brought up.
    pub fn find(devs: &[Found]) -> Option<Result<Up, Failed>> {
        for f in devs {
            if virtio_drivers::transport::pci::virtio_device_type(&f.info) == Some(virtio_drivers::transport::DeviceType::Network) {
                return Some(VirtioNet::new(f.df).map(|n| (Nic::Virtio(n), "virtio-net", f.df)).map_err(|e| (e, f.df)));
            }
            if f.info.vendor_id == e1000::INTEL
                && let Some((_, model)) = e1000::DEVICES.iter().find(|(d, _)| *d == f.info.device_id)
            {
                return Some(E1000::new(f.df, model).map(|n| (Nic::E1000(n), *model, f.df)).map_err(|e| (e, f.df)));
            }
        }
        None
    }

    pub fn mac(&self) -> [u8; 6] {
        match self {
            Nic::Virtio(n) => n.mac,
            Nic::E1000(n) => n.mac,
        }
    }
}

pub enum Rx {
    Virtio(virtio_net::RxToken),
    E1000(e1000::RxToken),
}

pub enum Tx {
    Virtio(virtio_net::TxToken),
    E1000(e1000::TxToken),
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self {
            Rx::Virtio(t) => t.consume(f),
            Rx::E1000(t) => t.consume(f),
        }
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self {
            Tx::Virtio(t) => t.consume(len, f),
            Tx::E1000(t) => t.consume(len, f),
        }
    }
}

impl phy::Device for Nic {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, ts: Instant) -> Option<(Rx, Tx)> {
        match self {
            Nic::Virtio(n) => n.receive(ts).map(|(r, t)| (Rx::Virtio(r), Tx::Virtio(t))),
            Nic::E1000(n) => n.receive(ts).map(|(r, t)| (Rx::E1000(r), Tx::E1000(t))),
        }
    }

    fn transmit(&mut self, ts: Instant) -> Option<Tx> {
        match self {
            Nic::Virtio(n) => n.transmit(ts).map(Tx::Virtio),
            Nic::E1000(n) => n.transmit(ts).map(Tx::E1000),
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        match self {
            Nic::Virtio(n) => n.capabilities(),
            Nic::E1000(n) => n.capabilities(),
        }
    }
}
