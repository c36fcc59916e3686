//! `status`: every PCI network device, its drivers, interfaces, IOMMU group, NUMA node, link
//! and what the kernel does with it.

use crate::error::Result;
use crate::kernel_use::{KernelUse, NetTables};
use crate::pci::{self, PciAddr, PciDevice};
use crate::state::State;
use crate::sysfs::{read_attr, Host};
use serde::Serialize;

/// One interface of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceStatus {
    /// Its name.
    pub name: String,
    /// `operstate` (`up`, `down`, …).
    pub link: Option<String>,
    /// Addresses and routes.
    pub kernel_use: KernelUse,
    /// Whether the host depends on it (an address or a route).
    pub in_use: bool,
}

/// One device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceStatus {
    /// PCI address.
    pub address: PciAddr,
    /// `vendor:device`, hex.
    pub ids: String,
    /// A name for well-known ids.
    pub name: Option<String>,
    /// Driver bound now.
    pub driver: Option<String>,
    /// driver_override, when set.
    pub driver_override: Option<String>,
    /// Whether the state file records the device (nic-config rebound it).
    pub recorded: bool,
    /// The driver it had before nic-config rebound it.
    pub original_driver: Option<String>,
    /// IOMMU group.
    pub iommu_group: Option<u32>,
    /// Whether that group is vfio's no-IOMMU stand-in.
    pub noiommu: bool,
    /// NUMA node.
    pub numa_node: Option<u32>,
    /// Its network interfaces (none while a DPDK driver holds it).
    pub interfaces: Vec<InterfaceStatus>,
}

impl DeviceStatus {
    /// Whether the kernel uses any of its interfaces.
    pub fn in_use(&self) -> bool {
        self.interfaces.iter().any(|i| i.in_use)
    }

    /// Whether one of its interfaces carries a default route.
    pub fn default_route(&self) -> bool {
        self.interfaces.iter().any(|i| i.kernel_use.default_route)
    }
}

fn device_status(host: &Host, dev: PciDevice, state: &State, tables: &NetTables) -> DeviceStatus {
    let interfaces = dev
        .interfaces
        .iter()
        .map(|name| {
            let link = pci::interface_dir(host, &dev.address, name)
                .and_then(|d| read_attr(&d.join("operstate")));
            let kernel_use = tables.usage(name);
            InterfaceStatus { name: name.clone(), link, in_use: kernel_use.in_use(), kernel_use }
        })
        .collect();
    let recorded = state.original_driver(&dev.address);
    DeviceStatus {
        address: dev.address,
        ids: format!("{:04x}:{:04x}", dev.vendor, dev.device),
        name: dev.name,
        driver: dev.driver,
        driver_override: dev.driver_override,
        recorded: recorded.is_some(),
        original_driver: recorded.flatten().map(str::to_owned),
        iommu_group: dev.iommu_group,
        noiommu: dev.noiommu_group,
        numa_node: dev.numa_node,
        interfaces,
    }
}

/// The status of every PCI network device.
pub fn collect(host: &Host) -> Result<Vec<DeviceStatus>> {
    let state = State::load(&host.state_file)?;
    let tables = NetTables::read(host)?;
    Ok(pci::network_devices(host)?
        .into_iter()
        .map(|d| device_status(host, d, &state, &tables))
        .collect())
}

fn or_dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_owned()
}

/// A plain table, one row per device.
pub fn render_table(devices: &[DeviceStatus]) -> String {
    if devices.is_empty() {
        return "no PCI network devices\n".to_owned();
    }
    let header = [
        "ADDRESS",
        "IDS",
        "NAME",
        "DRIVER",
        "ORIGINAL",
        "IFACE",
        "LINK",
        "IOMMU",
        "NUMA",
        "KERNEL USE",
    ];
    let mut rows: Vec<[String; 10]> = vec![header.map(str::to_owned)];
    for d in devices {
        let ifaces: Vec<&str> = d.interfaces.iter().map(|i| i.name.as_str()).collect();
        let links: Vec<&str> =
            d.interfaces.iter().map(|i| i.link.as_deref().unwrap_or("?")).collect();
        let used: Vec<String> = d
            .interfaces
            .iter()
            .filter(|i| i.in_use)
            .map(|i| {
                let what = i.kernel_use.describe();
                if d.interfaces.len() > 1 {
                    format!("{}: {what}", i.name)
                } else {
                    what
                }
            })
            .collect();
        let original = if d.recorded {
            d.original_driver.clone().unwrap_or_else(|| "none".to_owned())
        } else {
            "-".to_owned()
        };
        let iommu = match (d.iommu_group, d.noiommu) {
            (Some(g), false) => g.to_string(),
            (Some(g), true) => format!("{g} (no-IOMMU)"),
            (None, _) => "-".to_owned(),
        };
        let join = |v: &[&str]| if v.is_empty() { "-".to_owned() } else { v.join(",") };
        rows.push([
            d.address.to_string(),
            d.ids.clone(),
            or_dash(d.name.as_deref()),
            or_dash(d.driver.as_deref()),
            original,
            join(&ifaces),
            join(&links),
            iommu,
            d.numa_node.map_or_else(|| "-".to_owned(), |n| n.to_string()),
            if used.is_empty() { "-".to_owned() } else { used.join(" | ") },
        ]);
    }
    let mut widths = [0usize; 10];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
