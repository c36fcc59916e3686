//! PCI devices as sysfs shows them under `/sys/bus/pci/devices`: address, ids, driver,
//! interfaces, IOMMU group, NUMA node.

use crate::error::{Error, Result};
use crate::sysfs::{dir_names, link_name, read_attr, Host};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A PCI address, `domain:bus:device.function` (`0000:00:04.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddr {
    domain: u32,
    bus: u8,
    device: u8,
    function: u8,
}

/// A string that is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a PCI address (0000:00:04.0 or 00:04.0)")]
pub struct ParseAddrError(pub String);

impl PciAddr {
    /// Builds an address; `None` when device > 0x1f or function > 7.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Option<Self> {
        (device <= 0x1f && function <= 7).then_some(Self { domain, bus, device, function })
    }
}

fn hex_u32(s: &str, max_digits: usize) -> Option<u32> {
    // from_str_radix alone would accept a leading '+'.
    if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

fn hex_u8(s: &str, max_digits: usize) -> Option<u8> {
    hex_u32(s, max_digits).and_then(|v| u8::try_from(v).ok())
}

impl FromStr for PciAddr {
    type Err = ParseAddrError;

    /// Full (`0000:00:04.0`) or short (`00:04.0`, domain 0) form, hex digits in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseAddrError(s.to_owned());
        let (rest, function) = s.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, v] => (*d, *b, *v),
            [b, v] => ("0", *b, *v),
            _ => return Err(bad()),
        };
        // VMD domains have five hex digits; eight is the kernel's limit.
        let domain = hex_u32(domain, 8).ok_or_else(bad)?;
        let bus = hex_u8(bus, 2).ok_or_else(bad)?;
        let device = hex_u8(device, 2).ok_or_else(bad)?;
        let function = hex_u8(function, 1).ok_or_else(bad)?;
        Self::new(domain, bus, device, function).ok_or_else(bad)
    }
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

impl Serialize for PciAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// PCI base class of network controllers (`class` is `0x02xxxx`).
pub const CLASS_NETWORK: u32 = 0x02;

/// One PCI device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciDevice {
    /// Its address.
    pub address: PciAddr,
    /// Class code, 24 bits (`0x020000` for an Ethernet controller).
    #[serde(serialize_with = "hex6")]
    pub class: u32,
    /// Vendor id.
    #[serde(serialize_with = "hex4")]
    pub vendor: u16,
    /// Device id.
    #[serde(serialize_with = "hex4")]
    pub device: u16,
    /// A human name where the ids are well known (vendor, or the device for virtio).
    pub name: Option<String>,
    /// The driver bound now.
    pub driver: Option<String>,
    /// The driver_override attribute, when set.
    pub driver_override: Option<String>,
    /// Network interfaces the bound driver created.
    pub interfaces: Vec<String>,
    /// IOMMU group number; `None` without an IOMMU.
    pub iommu_group: Option<u32>,
    /// Whether that group is vfio's stand-in for a missing IOMMU (no-IOMMU mode).
    pub noiommu_group: bool,
    /// NUMA node; `None` on single-node hosts (sysfs says -1).
    pub numa_node: Option<u32>,
}

fn hex4<S: Serializer>(v: &u16, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:04x}"))
}

fn hex6<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:06x}"))
}

impl PciDevice {
    /// Whether it is a network controller.
    pub fn is_network(&self) -> bool {
        self.class >> 16 == CLASS_NETWORK
    }

    /// The IOMMU group, unless it is vfio's no-IOMMU stand-in.
    pub fn real_iommu_group(&self) -> Option<u32> {
        self.iommu_group.filter(|_| !self.noiommu_group)
    }
}

/// The sysfs directory of a device (`/sys/bus/pci/devices/ADDR`).
pub fn device_dir(host: &Host, addr: &PciAddr) -> PathBuf {
    host.sys("bus/pci/devices").join(addr.to_string())
}

fn parse_hex_attr(dir: &Path, name: &str) -> Option<u32> {
    let text = read_attr(&dir.join(name))?;
    u32::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

/// Reads one device.
pub fn read_device(host: &Host, addr: &PciAddr) -> Result<PciDevice> {
    let dir = device_dir(host, addr);
    if !dir.exists() {
        return Err(Error::NoSuchDevice { addr: *addr, path: dir });
    }
    let class = parse_hex_attr(&dir, "class").unwrap_or(0);
    let vendor = parse_hex_attr(&dir, "vendor").and_then(|v| u16::try_from(v).ok()).unwrap_or(0);
    let device = parse_hex_attr(&dir, "device").and_then(|v| u16::try_from(v).ok()).unwrap_or(0);
    let driver_override = read_attr(&dir.join("driver_override")).filter(|s| s != "(null)");
    let iommu_group = link_name(&dir.join("iommu_group")).and_then(|n| n.parse().ok());
    let noiommu_group = iommu_group.is_some_and(|g: u32| {
        let name = host.sys("kernel/iommu_groups").join(g.to_string()).join("name");
        read_attr(&name).is_some_and(|n| n == "vfio-noiommu")
    });
    let numa_node =
        read_attr(&dir.join("numa_node")).and_then(|s| s.parse::<i64>().ok()).and_then(|n| {
            // -1 means the platform gave no locality.
            u32::try_from(n).ok()
        });
    Ok(PciDevice {
        address: *addr,
        class,
        vendor,
        device,
        name: known_name(vendor, device, class),
        driver: link_name(&dir.join("driver")),
        driver_override,
        interfaces: interfaces(&dir),
        iommu_group,
        noiommu_group,
        numa_node,
    })
}

/// The network interfaces below a device directory: `net/IF`, or `virtioN/net/IF` where a
/// transport device sits between (virtio-pci). Only real directories are searched: the
/// symlinks (`driver`, `subsystem`, `firmware_node`) lead elsewhere in the tree.
fn interfaces(dir: &Path) -> Vec<String> {
    let mut found = dir_names(&dir.join("net"));
    for child in dir_names(dir) {
        let path = dir.join(&child);
        let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if is_dir && child != "net" {
            found.extend(dir_names(&path.join("net")));
        }
    }
    found
}

/// The directory holding an interface's attributes (`operstate`, …), under its device.
pub fn interface_dir(host: &Host, addr: &PciAddr, iface: &str) -> Option<PathBuf> {
    let dir = device_dir(host, addr);
    let direct = dir.join("net").join(iface);
    if direct.is_dir() {
        return Some(direct);
    }
    dir_names(&dir).into_iter().map(|c| dir.join(c).join("net").join(iface)).find(|p| p.is_dir())
}

/// Every PCI device, by address.
pub fn all_devices(host: &Host) -> Result<Vec<PciDevice>> {
    let root = host.sys("bus/pci/devices");
    if !root.is_dir() {
        return Err(Error::io(root, std::io::Error::from(std::io::ErrorKind::NotFound)));
    }
    let mut devices = Vec::new();
    for name in dir_names(&root) {
        // Anything that is not an address is not a device (a stray file in a fixture).
        if let Ok(addr) = name.parse::<PciAddr>() {
            devices.push(read_device(host, &addr)?);
        }
    }
    Ok(devices)
}

/// The PCI network controllers, by address.
pub fn network_devices(host: &Host) -> Result<Vec<PciDevice>> {
    Ok(all_devices(host)?.into_iter().filter(PciDevice::is_network).collect())
}

/// Resolves a command-line device: a PCI address (full or short) or an interface name.
pub fn resolve(host: &Host, arg: &str) -> Result<PciDevice> {
    if let Ok(addr) = arg.parse::<PciAddr>() {
        return read_device(host, &addr);
    }
    network_devices(host)?
        .into_iter()
        .find(|d| d.interfaces.iter().any(|i| i == arg))
        .ok_or_else(|| Error::UnknownDevice(arg.to_owned()))
}

/// The addresses in an IOMMU group.
pub fn iommu_group_members(host: &Host, group: u32) -> Vec<PciAddr> {
    let dir = host.sys("kernel/iommu_groups").join(group.to_string()).join("devices");
    dir_names(&dir).iter().filter_map(|n| n.parse().ok()).collect()
}

/// A name for well-known ids. Ids are what matter; the name only helps a reader of `status`.
fn known_name(vendor: u16, device: u16, class: u32) -> Option<String> {
    // virtio: the transitional (0x1000) and modern (0x1041) network device ids.
    if vendor == 0x1af4 && matches!(device, 0x1000 | 0x1041) && class >> 16 == CLASS_NETWORK {
        return Some("virtio-net".to_owned());
    }
    let vendor_name = match vendor {
        0x8086 => "Intel",
        0x15b3 => "Mellanox",
        0x14e4 => "Broadcom",
        0x1af4 => "Red Hat (virtio)",
        0x1d0f => "Amazon",
        0x1ae0 => "Google",
        0x15ad => "VMware",
        0x1077 => "QLogic",
        0x1924 => "Solarflare",
        0x19ee => "Netronome",
        0x177d => "Cavium",
        0x1425 => "Chelsio",
        0x1137 => "Cisco",
        0x10ec => "Realtek",
        _ => return None,
    };
    Some(vendor_name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_short_addresses() {
        let full: PciAddr = "0000:00:04.0".parse().unwrap();
        assert_eq!(full.to_string(), "0000:00:04.0");
        let short: PciAddr = "00:04.0".parse().unwrap();
        assert_eq!(short, full);
        let upper: PciAddr = "0000:AF:1F.7".parse().unwrap();
        assert_eq!(upper.to_string(), "0000:af:1f.7");
        let vmd: PciAddr = "10000:01:00.0".parse().unwrap();
        assert_eq!(vmd.to_string(), "10000:01:00.0");
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        for bad in
            ["eth0", "br0.100", "00:04", "0000:00:20.0", "0000:00:04.8", "0:+1:04.0", "00:04.0.1"]
        {
            assert!(bad.parse::<PciAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_virtio_and_vendors() {
        assert_eq!(known_name(0x1af4, 0x1041, 0x020000).as_deref(), Some("virtio-net"));
        assert_eq!(known_name(0x8086, 0x1572, 0x020000).as_deref(), Some("Intel"));
        assert_eq!(known_name(0xabcd, 0x0001, 0x020000), None);
    }
}
