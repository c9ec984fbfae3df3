//! `cargo xtask usb --device /dev/sdX`: write the hybrid image to a USB stick,
//! after a confirmation that names the device and its size; anything that is
//! not a removable whole disk is refused.

use std::io::{BufRead, Read, Write};
use std::path::Path;

use crate::Result;

/// What sysfs says about a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub name: String,
    pub removable: bool,
    pub bytes: u64,
    pub model: String,
    /// A partition (has `/sys/block/<disk>/<part>`), not a whole disk.
    pub partition: bool,
    pub mounted: bool,
}

/// Refuse what must not be overwritten; `Ok` carries the confirmation text.
pub fn check(d: &Disk, image_bytes: u64) -> std::result::Result<String, String> {
    if d.partition {
        return Err(format!("/dev/{} is a partition: name the whole disk", d.name));
    }
    if !d.removable {
        return Err(format!("/dev/{} is not a removable disk (sysfs removable=0): refused", d.name));
    }
    if d.mounted {
        return Err(format!("/dev/{} (or a partition of it) is mounted: unmount it first", d.name));
    }
    if d.bytes < image_bytes {
        return Err(format!("/dev/{} holds {} bytes, the image needs {image_bytes}", d.name, d.bytes));
    }
    Ok(format!(
        "This erases /dev/{} ({}, {:.1} GB). Type the device name ({}) to write the image: ",
        d.name,
        if d.model.is_empty() { "unknown model" } else { d.model.as_str() },
        d.bytes as f64 / 1e9,
        d.name
    ))
}

fn read_sysfs(device: &str) -> Result<Disk> {
    let name = device.strip_prefix("/dev/").ok_or("--device takes a /dev/ path")?.to_string();
    let sys = Path::new("/sys/class/block").join(&name);
    if !sys.exists() {
        return Err(format!("{device}: no such block device").into());
    }
    let partition = sys.join("partition").exists();
    let read = |f: &str| std::fs::read_to_string(sys.join(f)).unwrap_or_default().trim().to_string();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    Ok(Disk {
        removable: read("removable") == "1",
        bytes: read("size").parse::<u64>().unwrap_or(0) * 512,
        model: read("device/model"),
        partition,
        mounted: mounts.lines().any(|l| l.split_whitespace().next().is_some_and(|d| d.starts_with(device))),
        name,
    })
}

pub fn main(device: &str) -> Result<()> {
    let iso = crate::image::build_image(None)?;
    let image = std::fs::read(&iso)?;
    let disk = read_sysfs(device)?;
    let prompt = check(&disk, image.len() as u64)?;
    print!("{prompt}");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != disk.name {
        return Err("not confirmed: nothing written".into());
    }
    let mut out = std::fs::OpenOptions::new().write(true).open(device)?;
    out.write_all(&image)?;
    out.sync_all()?;
    // Read back what was written.
    let mut back = vec![0u8; image.len()];
    std::fs::File::open(device)?.read_exact(&mut back)?;
    if back != image {
        return Err(format!("{device}: the bytes read back differ from the image").into());
    }
    println!("wrote and verified {} bytes on {device}", image.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stick() -> Disk {
        Disk { name: "sdb".into(), removable: true, bytes: 16_000_000_000, model: "Flash Disk".into(), partition: false, mounted: false }
    }

    #[test]
    fn only_removable_unmounted_whole_disks_large_enough() {
        let p = check(&stick(), 10_000_000).unwrap();
        assert!(p.contains("/dev/sdb (Flash Disk, 16.0 GB)") && p.contains("Type the device name (sdb)"));
        assert!(check(&Disk { removable: false, ..stick() }, 1).unwrap_err().contains("not a removable disk"));
        assert!(check(&Disk { partition: true, name: "sdb1".into(), ..stick() }, 1).unwrap_err().contains("partition"));
        assert!(check(&Disk { mounted: true, ..stick() }, 1).unwrap_err().contains("mounted"));
        assert!(check(&Disk { bytes: 100, ..stick() }, 1000).unwrap_err().contains("needs 1000"));
    }
}
