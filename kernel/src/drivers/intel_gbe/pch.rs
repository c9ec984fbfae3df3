//! The Intel Ethernet Connection I217, I218 and I219: the MAC in the PCH,
//! its PHY outside it, joined by a link that runs as PCI-Express-like K1
//! or as SMBus. Firmware and the Management Engine may leave the PHY in
//! Ultra Low Power (ULP) mode with the link in SMBus mode, where MDIC cannot
//! reach it; this module brings it back, as Linux's e1000e does
//! (`drivers/net/ethernet/intel/e1000e/ich8lan.c`:
//! `e1000_init_phy_workarounds_pchlan`, `e1000_disable_ulp_lpt_lp`,
//! `e1000_toggle_lanphypc_pch_lpt`, `e1000_acquire_swflag_ich8lan`, the HV
//! PHY page access of `phy.c`), before the common e1000e reset and rings.
//!
//! Pure logic over the `Mac` trait, tested on the host against a model of
//! the MAC, the ME and the PHY written from those sources (`tests` below).
//! No emulator has these parts: on hardware this is datasheet-only.

/// MAC registers (Linux `regs.h`, `ich8lan.h`).
pub mod reg {
    pub const CTRL: usize = 0x00000;
    pub const STATUS: usize = 0x00008;
    pub const CTRL_EXT: usize = 0x00018;
    pub const FEXTNVM3: usize = 0x0003C;
    pub const FEXTNVM7: usize = 0x000E4;
    pub const EXTCNF_CTRL: usize = 0x00F00;
    pub const H2ME: usize = 0x05B50;
    pub const FWSM: usize = 0x05B54;
}

/// CTRL: LANPHYPC override and value (software drives the PHY's power
/// control pin), PHY reset.
pub const CTRL_LANPHYPC_OVERRIDE: u32 = 0x0001_0000;
pub const CTRL_LANPHYPC_VALUE: u32 = 0x0002_0000;
pub const CTRL_PHY_RST: u32 = 0x8000_0000;
/// CTRL_EXT: LANPHYPC cycle done; force the MAC-PHY link to SMBus.
pub const CTRL_EXT_LPCD: u32 = 0x0000_0004;
pub const CTRL_EXT_FORCE_SMBUS: u32 = 0x0000_0800;
/// STATUS: LAN init done (the NVM's configuration is loaded after reset).
pub const STATUS_LAN_INIT_DONE: u32 = 0x0000_0200;
/// FEXTNVM3: PHY configuration counter, set to 50 ms for the toggle.
pub const FEXTNVM3_PHY_CFG_COUNTER_MASK: u32 = 0x0C00_0000;
pub const FEXTNVM3_PHY_CFG_COUNTER_50MSEC: u32 = 0x0800_0000;
/// FEXTNVM7: do not release SMBus on PERST#.
pub const FEXTNVM7_DISABLE_SMB_PERST: u32 = 0x0000_0020;
/// EXTCNF_CTRL: the software semaphore shared with firmware.
pub const EXTCNF_CTRL_SWFLAG: u32 = 0x0000_0020;
/// H2ME (host to ME): ULP indication, enforce settings.
pub const H2ME_ULP: u32 = 0x0000_0800;
pub const H2ME_ENFORCE_SETTINGS: u32 = 0x0000_1000;
/// FWSM: PHY reset allowed (RSPCIPHY), ME firmware valid, ME's ULP
/// configuration done.
pub const FWSM_RSPCIPHY: u32 = 0x0000_0040;
pub const FWSM_FW_VALID: u32 = 0x0000_8000;
pub const FWSM_ULP_CFG_DONE: u32 = 0x0000_0400;

/// PHY registers by (page, register) (Linux `ich8lan.h`), and the bits used.
pub const CV_SMB_CTRL: (u16, u32) = (769, 23);
pub const CV_SMB_CTRL_FORCE_SMBUS: u16 = 0x0001;
pub const HV_PM_CTRL: (u16, u32) = (770, 17);
pub const HV_PM_CTRL_K1_ENABLE: u16 = 0x4000;
pub const I218_ULP_CONFIG1: (u16, u32) = (779, 16);
pub const ULP_CONFIG1_START: u16 = 0x0001;
/// The ULP configuration Linux clears on exit: indication, sticky ULP,
/// reset to SMBus, WoL host, in-band exit, ULP on LANPHYPC, no sticky clear
/// on PERST, SMBus disable on PERST.
pub const ULP_CONFIG1_CLEAR: u16 = 0x0004 | 0x0010 | 0x0100 | 0x0040 | 0x0020 | 0x0400 | 0x0800 | 0x1000;
/// PHY identifier (IEEE 802.3 clause 22 register 2), on page 0.
pub const PHY_ID1: (u16, u32) = (0, 2);
/// Page select register and shift of the HV PHY (Linux `IGP01E1000_PHY_PAGE_SELECT`, `IGP_PAGE_SHIFT`).
pub const PHY_PAGE_SELECT: u32 = 0x1F;
pub const PHY_PAGE_SHIFT: u32 = 5;
/// Pages from 768 on live at PHY address 1, the rest (the standard
/// registers' page 0 among them) at 2 (`e1000_get_phy_addr_for_hv_page`).
pub const HV_INTC_FC_PAGE_START: u16 = 768;
pub const PHY_ADDR_HIGH_PAGES: u32 = 1;
pub const PHY_ADDR_LOW_PAGES: u32 = 2;

/// Waits (Linux's): the semaphore (1 s to take, PHY_CFG_TIMEOUT 100 ms for
/// the previous holder), the ME's ULP exit (2.5 s), LANPHYPC's cycle done
/// (20 x 5 ms, then 30 ms), forcing SMBus (50 ms), LAN init (1500 x 20 us).
const SWFLAG_WAIT_MS: u64 = 1000;
const SWFLAG_FREE_WAIT_MS: u64 = 100;
const ME_ULP_WAIT_MS: u64 = 2500;
const LPCD_POLLS: u32 = 20;
const SMBUS_SETTLE_MS: u64 = 50;
const LAN_INIT_POLLS: u32 = 1500;

/// What the sequences need from the hardware.
pub trait Mac {
    fn r(&mut self, off: usize) -> u32;
    fn w(&mut self, off: usize, v: u32);
    /// One MDIC access to `reg` (0..=31) of the PHY at `addr`; None on an
    /// MDIC error or no answer.
    fn mdic_read(&mut self, addr: u32, reg: u32) -> Option<u16>;
    fn mdic_write(&mut self, addr: u32, reg: u32, v: u16) -> bool;
    fn delay_us(&mut self, us: u64);
}

fn delay_ms(m: &mut impl Mac, ms: u64) {
    m.delay_us(ms * 1000);
}

/// Where a (page, register) of the HV PHY is: its address, and whether
/// the page must be selected first (registers above 15 are paged).
fn hv_target(page: u16, reg: u32) -> (u32, bool) {
    (if page >= HV_INTC_FC_PAGE_START { PHY_ADDR_HIGH_PAGES } else { PHY_ADDR_LOW_PAGES }, reg > 0xF)
}

pub fn hv_read(m: &mut impl Mac, (page, reg): (u16, u32)) -> Option<u16> {
    let (addr, paged) = hv_target(page, reg);
    if paged && !m.mdic_write(addr, PHY_PAGE_SELECT, page << PHY_PAGE_SHIFT) {
        return None;
    }
    m.mdic_read(addr, reg & 0x1F)
}

pub fn hv_write(m: &mut impl Mac, (page, reg): (u16, u32), v: u16) -> bool {
    let (addr, paged) = hv_target(page, reg);
    if paged && !m.mdic_write(addr, PHY_PAGE_SELECT, page << PHY_PAGE_SHIFT) {
        return false;
    }
    m.mdic_write(addr, reg & 0x1F, v)
}

/// Take the software semaphore the MAC shares with firmware.
pub fn acquire_swflag(m: &mut impl Mac) -> Result<(), &'static str> {
    for _ in 0..SWFLAG_FREE_WAIT_MS {
        if m.r(reg::EXTCNF_CTRL) & EXTCNF_CTRL_SWFLAG == 0 {
            break;
        }
        delay_ms(m, 1);
    }
    let v = m.r(reg::EXTCNF_CTRL);
    m.w(reg::EXTCNF_CTRL, v | EXTCNF_CTRL_SWFLAG);
    for _ in 0..SWFLAG_WAIT_MS {
        if m.r(reg::EXTCNF_CTRL) & EXTCNF_CTRL_SWFLAG != 0 {
            return Ok(());
        }
        delay_ms(m, 1);
    }
    let v = m.r(reg::EXTCNF_CTRL);
    m.w(reg::EXTCNF_CTRL, v & !EXTCNF_CTRL_SWFLAG);
    Err("the MAC's software semaphore stays with the firmware")
}

pub fn release_swflag(m: &mut impl Mac) {
    let v = m.r(reg::EXTCNF_CTRL);
    m.w(reg::EXTCNF_CTRL, v & !EXTCNF_CTRL_SWFLAG);
}

/// Power-cycle the PHY through its LANPHYPC pin: it comes back with the
/// MAC-PHY link in PCIe (K1) mode.
pub fn toggle_lanphypc(m: &mut impl Mac) {
    let v = m.r(reg::FEXTNVM3);
    m.w(reg::FEXTNVM3, (v & !FEXTNVM3_PHY_CFG_COUNTER_MASK) | FEXTNVM3_PHY_CFG_COUNTER_50MSEC);
    let ctrl = (m.r(reg::CTRL) | CTRL_LANPHYPC_OVERRIDE) & !CTRL_LANPHYPC_VALUE;
    m.w(reg::CTRL, ctrl);
    m.delay_us(10);
    m.w(reg::CTRL, ctrl & !CTRL_LANPHYPC_OVERRIDE);
    for _ in 0..=LPCD_POLLS {
        delay_ms(m, 5);
        if m.r(reg::CTRL_EXT) & CTRL_EXT_LPCD != 0 {
            break;
        }
    }
    delay_ms(m, 30);
}

/// Does the PHY answer on MDIC? When it does, SMBus mode is unforced in
/// the PHY and in the MAC (`e1000_phy_is_accessible_pchlan`).
pub fn phy_accessible(m: &mut impl Mac) -> bool {
    let ok = (0..2).any(|_| hv_read(m, PHY_ID1).is_some_and(|id| id != 0 && id != 0xFFFF));
    if ok {
        if let Some(v) = hv_read(m, CV_SMB_CTRL) {
            hv_write(m, CV_SMB_CTRL, v & !CV_SMB_CTRL_FORCE_SMBUS);
        }
        let v = m.r(reg::CTRL_EXT);
        m.w(reg::CTRL_EXT, v & !CTRL_EXT_FORCE_SMBUS);
    }
    ok
}

/// How the PHY left ULP mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UlpExit {
    /// The Management Engine did it on request.
    ByMe,
    /// Software did it, toggling LANPHYPC first.
    BySoftware,
}

/// Leave ULP mode, forced (the state is unknown at boot):
/// `e1000_disable_ulp_lpt_lp(hw, true)`.
pub fn disable_ulp(m: &mut impl Mac) -> Result<UlpExit, &'static str> {
    if m.r(reg::FWSM) & FWSM_FW_VALID != 0 {
        let v = m.r(reg::H2ME);
        m.w(reg::H2ME, (v & !H2ME_ULP) | H2ME_ENFORCE_SETTINGS);
        let mut waited = 0;
        while m.r(reg::FWSM) & FWSM_ULP_CFG_DONE != 0 {
            if waited >= ME_ULP_WAIT_MS {
                return Err("the Management Engine did not take the PHY out of ULP mode within 2.5 s");
            }
            delay_ms(m, 10);
            waited += 10;
        }
        let v = m.r(reg::H2ME);
        m.w(reg::H2ME, v & !H2ME_ENFORCE_SETTINGS);
        return Ok(UlpExit::ByMe);
    }
    acquire_swflag(m)?;
    toggle_lanphypc(m);
    let r = ulp_exit_phy(m);
    release_swflag(m);
    r?;
    phy_reset(m)?;
    Ok(UlpExit::BySoftware)
}

/// The PHY side of leaving ULP (semaphore held).
fn ulp_exit_phy(m: &mut impl Mac) -> Result<(), &'static str> {
    // Unforce SMBus in the PHY; reaching it may take forcing SMBus in the MAC first.
    let smb = match hv_read(m, CV_SMB_CTRL) {
        Some(v) => v,
        None => {
            let v = m.r(reg::CTRL_EXT);
            m.w(reg::CTRL_EXT, v | CTRL_EXT_FORCE_SMBUS);
            delay_ms(m, SMBUS_SETTLE_MS);
            hv_read(m, CV_SMB_CTRL).ok_or("the PHY does not answer, in PCIe or SMBus mode")?
        }
    };
    let fail = "a PHY write failed while leaving ULP mode";
    if !hv_write(m, CV_SMB_CTRL, smb & !CV_SMB_CTRL_FORCE_SMBUS) {
        return Err(fail);
    }
    let v = m.r(reg::CTRL_EXT);
    m.w(reg::CTRL_EXT, v & !CTRL_EXT_FORCE_SMBUS);
    // ULP entry turned K1 off: turn it back on.
    let pm = hv_read(m, HV_PM_CTRL).ok_or(fail)?;
    if !hv_write(m, HV_PM_CTRL, pm | HV_PM_CTRL_K1_ENABLE) {
        return Err(fail);
    }
    // Clear the ULP configuration, then commit it with START.
    let ulp = hv_read(m, I218_ULP_CONFIG1).ok_or(fail)? & !ULP_CONFIG1_CLEAR;
    if !hv_write(m, I218_ULP_CONFIG1, ulp) || !hv_write(m, I218_ULP_CONFIG1, ulp | ULP_CONFIG1_START) {
        return Err(fail);
    }
    let v = m.r(reg::FEXTNVM7);
    m.w(reg::FEXTNVM7, v & !FEXTNVM7_DISABLE_SMB_PERST);
    Ok(())
}

/// May software reset the PHY (the ME has not blocked it)?
pub fn phy_reset_allowed(m: &mut impl Mac) -> bool {
    m.r(reg::FWSM) & FWSM_RSPCIPHY != 0
}

/// Reset the PHY through CTRL.PHY_RST (`e1000e_phy_hw_reset_generic`:
/// 100 us asserted, 150 us after), then give it 10 ms to load its
/// configuration.
pub fn phy_reset(m: &mut impl Mac) -> Result<(), &'static str> {
    if !phy_reset_allowed(m) {
        return Err("the Management Engine blocks the PHY reset");
    }
    acquire_swflag(m)?;
    let ctrl = m.r(reg::CTRL);
    m.w(reg::CTRL, ctrl | CTRL_PHY_RST);
    m.delay_us(100);
    m.w(reg::CTRL, ctrl & !CTRL_PHY_RST);
    m.delay_us(150);
    release_swflag(m);
    delay_ms(m, 10);
    Ok(())
}

/// Before the MAC reset: leave ULP, make sure the PHY answers on MDIC
/// (forcing SMBus, then toggling LANPHYPC, as `e1000_init_phy_workarounds_pchlan`
/// does for LPT and later), and reset it.
pub fn init_phy(m: &mut impl Mac) -> Result<UlpExit, &'static str> {
    let how = disable_ulp(m)?;
    acquire_swflag(m)?;
    let r = reach_phy(m);
    release_swflag(m);
    r?;
    phy_reset(m)?;
    Ok(how)
}

fn reach_phy(m: &mut impl Mac) -> Result<(), &'static str> {
    if phy_accessible(m) {
        return Ok(());
    }
    let v = m.r(reg::CTRL_EXT);
    m.w(reg::CTRL_EXT, v | CTRL_EXT_FORCE_SMBUS);
    delay_ms(m, SMBUS_SETTLE_MS);
    if phy_accessible(m) {
        return Ok(());
    }
    if !phy_reset_allowed(m) {
        return Err("the PHY does not answer and the Management Engine blocks the LANPHYPC toggle");
    }
    toggle_lanphypc(m);
    if phy_accessible(m) {
        return Ok(());
    }
    let v = m.r(reg::CTRL_EXT);
    m.w(reg::CTRL_EXT, v & !CTRL_EXT_FORCE_SMBUS);
    if phy_accessible(m) { Ok(()) } else { Err("the PHY does not answer on MDIC, even after a LANPHYPC power cycle") }
}

/// After the MAC reset: wait for the LAN init (the NVM's configuration
/// loaded) and acknowledge it (`e1000_lan_init_done_ich8lan`); whether it came.
pub fn lan_init_done(m: &mut impl Mac) -> bool {
    for _ in 0..LAN_INIT_POLLS {
        let s = m.r(reg::STATUS);
        if s & STATUS_LAN_INIT_DONE != 0 {
            m.w(reg::STATUS, s & !STATUS_LAN_INIT_DONE);
            return true;
        }
        m.delay_us(20);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A model of an I219 (MAC registers, the ME, the PHY on its two MDIC
    /// addresses with paging) as `ich8lan.c` describes their behaviour:
    /// - in ULP the MAC-PHY link is in SMBus mode: MDIC reaches the PHY only
    ///   while the MAC forces SMBus too; a LANPHYPC power cycle (override on,
    ///   value low, override off) brings it back in PCIe mode and sets LPCD
    ///   a few polls later;
    /// - with ME firmware, ULP_CFG_DONE clears `me_after` reads after the
    ///   host writes H2ME with ENFORCE_SETTINGS (never, with None);
    /// - the semaphore reads back set unless firmware holds it.
    struct Model {
        regs: HashMap<usize, u32>,
        phy: HashMap<(u32, u16, u32), u16>,
        page: [u16; 3],
        smbus: bool,
        me_after: Option<u32>,
        me_countdown: Option<u32>,
        firmware_holds_flag: bool,
        lpcd_in: u32,
        now_us: u64,
        toggles: u32,
        phy_resets: u32,
        flag_held_at_phy_reset: bool,
    }

    impl Model {
        fn new(ulp: bool) -> Model {
            let mut m = Model {
                regs: HashMap::new(),
                phy: HashMap::new(),
                page: [0; 3],
                smbus: ulp,
                me_after: None,
                me_countdown: None,
                firmware_holds_flag: false,
                lpcd_in: 0,
                now_us: 0,
                toggles: 0,
                phy_resets: 0,
                flag_held_at_phy_reset: false,
            };
            m.regs.insert(reg::FWSM, FWSM_RSPCIPHY);
            m.regs.insert(reg::FEXTNVM7, FEXTNVM7_DISABLE_SMB_PERST);
            m.phy.insert((2, 0, 2), 0x0154);
            m.phy.insert((1, 769, 23), if ulp { CV_SMB_CTRL_FORCE_SMBUS } else { 0 });
            m.phy.insert((1, 770, 17), 0);
            m.phy.insert((1, 779, 16), if ulp { 0x0004 | 0x0010 | 0x0400 } else { 0 });
            m
        }

        fn reachable(&self) -> bool {
            !self.smbus || self.regs.get(&reg::CTRL_EXT).copied().unwrap_or(0) & CTRL_EXT_FORCE_SMBUS != 0
        }

        fn key(&self, addr: u32, reg: u32) -> (u32, u16, u32) {
            (addr, if reg > 0xF && reg != PHY_PAGE_SELECT { self.page[addr as usize] } else { 0 }, reg)
        }
    }

    impl Mac for Model {
        fn r(&mut self, off: usize) -> u32 {
            let mut v = self.regs.get(&off).copied().unwrap_or(0);
            match off {
                reg::FWSM => {
                    if let Some(n) = self.me_countdown.as_mut() {
                        if *n == 0 {
                            v &= !FWSM_ULP_CFG_DONE;
                            self.regs.insert(reg::FWSM, v);
                        } else {
                            *n -= 1;
                        }
                    }
                }
                reg::CTRL_EXT if self.lpcd_in > 0 => {
                    self.lpcd_in -= 1;
                    if self.lpcd_in == 0 {
                        v |= CTRL_EXT_LPCD;
                        self.regs.insert(off, v);
                    }
                }
                reg::EXTCNF_CTRL if self.firmware_holds_flag => v &= !EXTCNF_CTRL_SWFLAG,
                _ => {}
            }
            v
        }

        fn w(&mut self, off: usize, v: u32) {
            let old = self.regs.get(&off).copied().unwrap_or(0);
            match off {
                reg::H2ME if v & H2ME_ENFORCE_SETTINGS != 0 => self.me_countdown = self.me_after,
                reg::CTRL => {
                    // Override released after driving the value low: a power cycle.
                    if old & CTRL_LANPHYPC_OVERRIDE != 0 && old & CTRL_LANPHYPC_VALUE == 0 && v & CTRL_LANPHYPC_OVERRIDE == 0 {
                        self.toggles += 1;
                        self.smbus = false;
                        self.lpcd_in = 3;
                    }
                    if v & CTRL_PHY_RST != 0 {
                        self.phy_resets += 1;
                        self.flag_held_at_phy_reset = self.regs.get(&reg::EXTCNF_CTRL).copied().unwrap_or(0) & EXTCNF_CTRL_SWFLAG != 0;
                    }
                }
                _ => {}
            }
            self.regs.insert(off, v);
        }

        fn mdic_read(&mut self, addr: u32, reg: u32) -> Option<u16> {
            self.now_us += 10;
            if !self.reachable() {
                return None;
            }
            let k = self.key(addr, reg);
            Some(self.phy.get(&k).copied().unwrap_or(0))
        }

        fn mdic_write(&mut self, addr: u32, reg: u32, v: u16) -> bool {
            self.now_us += 10;
            if !self.reachable() {
                return false;
            }
            if reg == PHY_PAGE_SELECT {
                self.page[addr as usize] = v >> PHY_PAGE_SHIFT;
                return true;
            }
            let k = self.key(addr, reg);
            self.phy.insert(k, v);
            true
        }

        fn delay_us(&mut self, us: u64) {
            self.now_us += us;
        }
    }

    fn ulp_cleared(m: &Model) {
        assert_eq!(m.phy[&(1, 779, 16)] & ULP_CONFIG1_CLEAR, 0, "ULP configuration left set");
        assert_ne!(m.phy[&(1, 779, 16)] & ULP_CONFIG1_START, 0, "ULP change not committed");
        assert_eq!(m.phy[&(1, 769, 23)] & CV_SMB_CTRL_FORCE_SMBUS, 0, "PHY still forced to SMBus");
        assert_ne!(m.phy[&(1, 770, 17)] & HV_PM_CTRL_K1_ENABLE, 0, "K1 left off");
        assert_eq!(m.regs[&reg::FEXTNVM7] & FEXTNVM7_DISABLE_SMB_PERST, 0);
        assert_eq!(m.regs[&reg::CTRL_EXT] & CTRL_EXT_FORCE_SMBUS, 0, "MAC still forced to SMBus");
    }

    #[test]
    fn software_leaves_ulp_and_the_phy_answers() {
        let mut m = Model::new(true);
        assert_eq!(init_phy(&mut m), Ok(UlpExit::BySoftware));
        ulp_cleared(&m);
        assert!(m.toggles >= 1, "LANPHYPC never cycled");
        assert!(m.phy_resets >= 1 && m.flag_held_at_phy_reset, "PHY reset without the semaphore");
        assert_eq!(m.regs[&reg::EXTCNF_CTRL] & EXTCNF_CTRL_SWFLAG, 0, "semaphore kept");
        assert_eq!(m.regs[&reg::CTRL] & (CTRL_LANPHYPC_OVERRIDE | CTRL_PHY_RST), 0);
        assert!(m.reachable() && !m.smbus);
    }

    #[test]
    fn the_me_leaves_ulp_when_asked() {
        let mut m = Model::new(true);
        m.regs.insert(reg::FWSM, FWSM_RSPCIPHY | FWSM_FW_VALID | FWSM_ULP_CFG_DONE);
        m.regs.insert(reg::H2ME, H2ME_ULP);
        m.me_after = Some(5);
        assert_eq!(disable_ulp(&mut m), Ok(UlpExit::ByMe));
        assert_eq!(m.regs[&reg::H2ME] & (H2ME_ULP | H2ME_ENFORCE_SETTINGS), 0);
        assert_eq!(m.regs[&reg::FWSM] & FWSM_ULP_CFG_DONE, 0);
        assert_eq!(m.toggles, 0, "software must not touch LANPHYPC when the ME does it");
    }

    #[test]
    fn a_silent_me_is_an_error_after_2_5_s() {
        let mut m = Model::new(true);
        m.regs.insert(reg::FWSM, FWSM_RSPCIPHY | FWSM_FW_VALID | FWSM_ULP_CFG_DONE);
        let e = disable_ulp(&mut m).unwrap_err();
        assert!(e.contains("2.5 s"), "{e}");
        assert!((2_500_000..2_700_000).contains(&m.now_us), "waited {} us", m.now_us);
    }

    #[test]
    fn a_semaphore_firmware_keeps_is_an_error_after_about_1_s() {
        let mut m = Model::new(true);
        m.firmware_holds_flag = true;
        let e = init_phy(&mut m).unwrap_err();
        assert!(e.contains("semaphore"), "{e}");
        assert!(m.now_us >= 1_000_000 && m.now_us < 1_300_000, "waited {} us", m.now_us);
    }

    #[test]
    fn a_phy_already_out_of_ulp_is_left_answering() {
        let mut m = Model::new(false);
        assert!(phy_accessible(&mut m));
        assert_eq!(init_phy(&mut m), Ok(UlpExit::BySoftware));
        ulp_cleared(&m);
    }

    #[test]
    fn a_blocked_phy_reset_is_named() {
        let mut m = Model::new(false);
        m.regs.insert(reg::FWSM, 0);
        assert_eq!(phy_reset(&mut m), Err("the Management Engine blocks the PHY reset"));
        assert_eq!(m.phy_resets, 0);
    }

    #[test]
    fn paged_registers_select_their_page_at_the_right_address() {
        let mut m = Model::new(false);
        assert!(hv_write(&mut m, I218_ULP_CONFIG1, 0x1234));
        assert_eq!(m.page[1], 779);
        assert_eq!(m.phy[&(1, 779, 16)], 0x1234);
        assert_eq!(hv_read(&mut m, PHY_ID1), Some(0x0154));
        assert_eq!(m.page[2], 0, "page 0's low registers need no page select");
    }

    #[test]
    fn lan_init_done_is_acknowledged() {
        let mut m = Model::new(false);
        assert!(!lan_init_done(&mut m));
        assert_eq!(m.now_us, 1500 * 20);
        m.regs.insert(reg::STATUS, STATUS_LAN_INIT_DONE | 2);
        assert!(lan_init_done(&mut m));
        assert_eq!(m.regs[&reg::STATUS], 2);
    }
}
