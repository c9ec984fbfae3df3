//! IO-APICs (Intel 82093AA datasheet, §3.2; the same register interface on
//! every chipset since): every redirection entry is masked at boot, before
//! interrupts are enabled, so an entry firmware left enabled cannot deliver
//! to a vector nobody handles. The kernel routes nothing through them except
//! what a selftest programs on purpose.

/// Indirect access: the index at offset 0 (IOREGSEL), the data at 0x10 (IOWIN).
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
/// Register 1 (IOAPICVER): bits 16-23 are the highest redirection entry.
const IOAPICVER: u32 = 0x01;
/// Redirection entry n: registers 0x10 + 2n (low) and 0x11 + 2n (high).
const REDTBL: u32 = 0x10;
/// Low dword: bit 16 mask; bits 0-7 the vector; bit 15 level-triggered.
pub const RTE_MASKED: u32 = 1 << 16;

/// One IO-APIC's register window.
#[derive(Clone, Copy, Debug)]
pub struct IoApic {
    base: u64,
}

impl IoApic {
    /// The IO-APIC at `address` (from the MADT), its window mapped.
    pub fn at(address: u64) -> Result<IoApic, crate::mem::paging::Error> {
        crate::mem::paging::map_mmio(address, 0x20)?;
        Ok(IoApic { base: address })
    }

    fn read(&self, reg: u32) -> u32 {
        // SAFETY: the MADT names this IO-APIC's register window, mapped
        // uncacheable-or-MTRR-UC; IOREGSEL then IOWIN is its access protocol.
        // Callers run on the boot CPU before the others start, or on one
        // CPU in a selftest: the index/data pair is never interleaved.
        unsafe {
            ((self.base + IOREGSEL) as *mut u32).write_volatile(reg);
            ((self.base + IOWIN) as *const u32).read_volatile()
        }
    }

    fn write(&self, reg: u32, v: u32) {
        // SAFETY: as in `read`.
        unsafe {
            ((self.base + IOREGSEL) as *mut u32).write_volatile(reg);
            ((self.base + IOWIN) as *mut u32).write_volatile(v);
        }
    }

    /// Redirection entries (pins).
    pub fn pins(&self) -> u32 {
        ((self.read(IOAPICVER) >> 16) & 0xFF) + 1
    }

    /// Mask every entry. Returns how many were unmasked before.
    pub fn mask_all(&self) -> u32 {
        let mut were_on = 0;
        for pin in 0..self.pins() {
            let lo = self.read(REDTBL + 2 * pin);
            if lo & RTE_MASKED == 0 {
                were_on += 1;
                self.write(REDTBL + 2 * pin, lo | RTE_MASKED);
            }
        }
        were_on
    }

    /// Route `pin` to `vector` on the CPU with this APIC id (physical
    /// destination, fixed delivery, edge-triggered, active high), unmasked.
    /// The destination field is 8 bits (bits 56-63): ids above 255 need
    /// interrupt remapping, which the kernel does not set up.
    pub fn route(&self, pin: u32, vector: u8, apic_id: u8) {
        self.write(REDTBL + 2 * pin, RTE_MASKED);
        self.write(REDTBL + 2 * pin + 1, (apic_id as u32) << 24);
        self.write(REDTBL + 2 * pin, vector as u32);
    }

    pub fn mask(&self, pin: u32) {
        let lo = self.read(REDTBL + 2 * pin);
        self.write(REDTBL + 2 * pin, lo | RTE_MASKED);
    }
}
