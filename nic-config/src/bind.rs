//! Plans for `bind`, `unbind` and `restore`: moving PCI devices between kernel drivers and the
//! drivers DPDK uses, the way dpdk-devbind does it (unbind, `driver_override`, `drivers_probe`).

use crate::error::{Error, Result};
use crate::kernel_use::NetTables;
use crate::pci::{self, PciAddr, PciDevice};
use crate::plan::{Plan, Step};
use crate::state::State;
use crate::sysfs::{read_attr, Host};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A driver user-space packet I/O can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
pub enum Driver {
    /// DMA confined by the IOMMU (or unconfined, in no-IOMMU mode).
    #[value(name = "vfio-pci")]
    #[serde(rename = "vfio-pci")]
    VfioPci,
    /// In the kernel tree; no DMA protection, legacy interrupts only.
    #[value(name = "uio_pci_generic")]
    #[serde(rename = "uio_pci_generic")]
    UioPciGeneric,
    /// Out of tree (dpdk-kmods); no DMA protection.
    #[value(name = "igb_uio")]
    #[serde(rename = "igb_uio")]
    IgbUio,
}

impl Driver {
    /// The driver's name in sysfs, which is also a name modprobe accepts.
    pub fn name(self) -> &'static str {
        match self {
            Self::VfioPci => "vfio-pci",
            Self::UioPciGeneric => "uio_pci_generic",
            Self::IgbUio => "igb_uio",
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Drivers whose devices vfio accepts beside a vfio-pci device in one IOMMU group.
const VFIO_GROUP_FRIENDLY: &[&str] = &["vfio-pci", "pci-stub", "pcieport"];

/// The module parameter that lets vfio run without an IOMMU.
const NOIOMMU_PARAM: &str = "module/vfio/parameters/enable_unsafe_noiommu_mode";

/// Builds one plan for several devices, so a module is loaded once and the no-IOMMU switch is
/// written once.
struct Planner<'a> {
    host: &'a Host,
    state: State,
    tables: NetTables,
    plan: Plan,
    modules: BTreeSet<String>,
    remembered: BTreeSet<PciAddr>,
    noiommu_planned: bool,
}

impl<'a> Planner<'a> {
    fn new(host: &'a Host) -> Result<Self> {
        Ok(Self {
            host,
            state: State::load(&host.state_file)?,
            tables: NetTables::read(host)?,
            plan: Plan::default(),
            modules: BTreeSet::new(),
            remembered: BTreeSet::new(),
            noiommu_planned: false,
        })
    }

    fn modprobe(&mut self, module: &str) {
        if !self.modules.contains(module) && !self.host.module_loaded(module) {
            self.plan.push(Step::Modprobe { module: module.to_owned() });
        }
        self.modules.insert(module.to_owned());
    }

    /// Refuses (or, with `force`, warns) when the kernel uses one of the device's interfaces.
    fn check_kernel_use(
        &mut self,
        dev: &PciDevice,
        force: bool,
        action: &'static str,
    ) -> Result<()> {
        for iface in &dev.interfaces {
            let usage = self.tables.usage(iface);
            if !usage.in_use() {
                continue;
            }
            let what = usage.describe();
            if !force {
                return Err(Error::InUse { action, addr: dev.address, iface: iface.clone(), what });
            }
            self.plan.warn(format!(
                "--force: {action}ing {} ({iface}) although the kernel uses it ({what}); \
                 this host loses that connectivity",
                dev.address
            ));
        }
        Ok(())
    }

    /// Records the device's current driver unless the state file (or this plan) already has
    /// its original one.
    fn remember(&mut self, dev: &PciDevice) {
        let addr = dev.address;
        if self.state.original_driver(&addr).is_some() || !self.remembered.insert(addr) {
            return;
        }
        self.plan.push(Step::Remember {
            state_file: self.host.state_file.clone(),
            device: addr,
            original_driver: dev.driver.clone(),
        });
    }

    fn unbind_steps(&mut self, dev: &PciDevice) {
        if dev.driver.is_some() {
            let dir = pci::device_dir(self.host, &dev.address);
            self.plan.push(Step::Write {
                path: dir.join("driver/unbind"),
                value: dev.address.to_string(),
            });
        }
    }

    fn clear_override(&mut self, dev: &PciDevice) {
        if dev.driver_override.is_some() {
            // The kernel clears the override on an empty line; an empty write would not reach
            // it at all.
            let dir = pci::device_dir(self.host, &dev.address);
            self.plan.push(Step::Write { path: dir.join("driver_override"), value: "\n".into() });
        }
    }

    fn noiommu(&mut self, dev: &PciDevice) -> Result<()> {
        let param = self.host.sys(NOIOMMU_PARAM);
        let enabled = read_attr(&param).is_some_and(|v| v == "Y" || v == "1");
        if !enabled && !param.exists() && self.host.module_loaded("vfio") {
            return Err(Error::NoIommuUnsupported { addr: dev.address, path: param });
        }
        if !enabled && !self.noiommu_planned {
            self.plan.push(Step::Write { path: param, value: "Y".into() });
        }
        if !self.noiommu_planned {
            self.plan.warn(
                "NO IOMMU: vfio-pci will run in UNSAFE no-IOMMU mode. The device can DMA to \
                 any host memory and nothing stops a faulty or hostile program driving it; the \
                 kernel taints itself. Use it only where the dataplane is trusted, or enable \
                 the IOMMU (VT-d / AMD-Vi in firmware, intel_iommu=on iommu=pt on the kernel \
                 command line) and rebind."
                    .to_owned(),
            );
        }
        self.plan.warn(format!("{} has no IOMMU group: it is bound in no-IOMMU mode", dev.address));
        self.noiommu_planned = true;
        Ok(())
    }

    /// Warns about devices sharing the IOMMU group that would keep vfio from opening it.
    fn check_group(&mut self, dev: &PciDevice, group: u32, targets: &BTreeMap<PciAddr, Driver>) {
        for member in pci::iommu_group_members(self.host, group) {
            if member == dev.address || targets.get(&member) == Some(&Driver::VfioPci) {
                continue;
            }
            let Ok(other) = pci::read_device(self.host, &member) else { continue };
            if let Some(drv) = other.driver.filter(|d| !VFIO_GROUP_FRIENDLY.contains(&d.as_str())) {
                self.plan.warn(format!(
                    "IOMMU group {group} also holds {member} (bound to {drv}): vfio can only \
                     use the group when every device in it is bound to vfio-pci or to no driver"
                ));
            }
        }
    }

    fn bind(
        &mut self,
        dev: &PciDevice,
        driver: Driver,
        force: bool,
        targets: &BTreeMap<PciAddr, Driver>,
    ) -> Result<()> {
        let addr = dev.address;
        let target = driver.name();
        if dev.driver.as_deref() == Some(target) {
            self.plan.info(format!("{addr} is already bound to {target}: nothing to do"));
            return Ok(());
        }
        self.check_kernel_use(dev, force, "rebind")?;
        let loaded_before = self.modules.contains(target) || self.host.module_loaded(target);
        self.modprobe(target);
        if driver == Driver::IgbUio && !loaded_before {
            self.plan.info(
                "igb_uio is not part of the kernel: modprobe finds it only when dpdk-kmods is \
                 built and installed",
            );
        }
        if driver == Driver::VfioPci {
            match dev.real_iommu_group() {
                Some(group) => self.check_group(dev, group, targets),
                None => self.noiommu(dev)?,
            }
        }
        // Recorded before the unbind: if a later step fails, restore still knows the driver.
        self.remember(dev);
        self.unbind_steps(dev);
        let dir = pci::device_dir(self.host, &addr);
        self.plan.push(Step::Write { path: dir.join("driver_override"), value: target.into() });
        self.plan.push(Step::Write {
            path: self.host.sys("bus/pci/drivers_probe"),
            value: addr.to_string(),
        });
        Ok(())
    }
}

/// Resolves the arguments; a device named twice (by address and by interface) counts once.
fn resolve_all(host: &Host, args: &[String]) -> Result<Vec<PciDevice>> {
    let mut seen = BTreeSet::new();
    let mut devices = Vec::new();
    for arg in args {
        let dev = pci::resolve(host, arg)?;
        if seen.insert(dev.address) {
            devices.push(dev);
        }
    }
    Ok(devices)
}

/// Plans binding devices (PCI addresses or interface names) to drivers.
///
/// Per device: load the module, enable no-IOMMU mode if vfio-pci has no IOMMU to use, record
/// the original driver, unbind, set `driver_override`, and ask the kernel to probe. Refuses a
/// device whose interface the kernel uses (an address, a route) unless `force`.
pub fn plan_bind(host: &Host, requests: &[(String, Driver)], force: bool) -> Result<Plan> {
    let mut planner = Planner::new(host)?;
    let mut targets = BTreeMap::new();
    let mut devices = Vec::new();
    for (arg, driver) in requests {
        let dev = pci::resolve(host, arg)?;
        // Named twice: the first request stands.
        if let std::collections::btree_map::Entry::Vacant(slot) = targets.entry(dev.address) {
            slot.insert(*driver);
            devices.push((dev, *driver));
        }
    }
    for (dev, driver) in &devices {
        planner.bind(dev, *driver, force, &targets)?;
    }
    Ok(planner.plan)
}

/// Plans unbinding devices from their drivers and clearing `driver_override`. The original
/// driver is recorded, so `restore` can bring it back.
pub fn plan_unbind(host: &Host, args: &[String], force: bool) -> Result<Plan> {
    let mut planner = Planner::new(host)?;
    for dev in resolve_all(host, args)? {
        if dev.driver.is_none() && dev.driver_override.is_none() {
            planner.plan.info(format!("{} is bound to no driver: nothing to do", dev.address));
            continue;
        }
        planner.check_kernel_use(&dev, force, "unbind")?;
        if dev.driver.is_some() {
            planner.remember(&dev);
        }
        planner.unbind_steps(&dev);
        planner.clear_override(&dev);
    }
    Ok(planner.plan)
}

/// Plans giving devices back the drivers the state file records (every recorded device when
/// `args` is empty), then forgetting them.
pub fn plan_restore(host: &Host, args: &[String]) -> Result<Plan> {
    let mut planner = Planner::new(host)?;
    let targets: Vec<(PciAddr, Option<String>)> = if args.is_empty() {
        planner.state.devices.iter().map(|(a, e)| (*a, e.original_driver.clone())).collect()
    } else {
        let mut targets = Vec::new();
        for dev in resolve_all(host, args)? {
            let original = planner.state.original_driver(&dev.address).ok_or_else(|| {
                Error::NotRemembered { addr: dev.address, state_file: host.state_file.clone() }
            })?;
            targets.push((dev.address, original.map(str::to_owned)));
        }
        targets
    };
    if targets.is_empty() {
        planner.plan.info(format!(
            "{} records no rebound device: nothing to restore",
            host.state_file.display()
        ));
    }
    for (addr, original) in targets {
        match pci::read_device(host, &addr) {
            Ok(dev) => planner.restore_one(&dev, original.as_deref()),
            // A removed device (a VF, a hot-unplugged card) has nothing to restore, and its
            // record must not block the others.
            Err(Error::NoSuchDevice { .. }) => {
                planner.plan.warn(format!("{addr} no longer exists: its record is dropped"));
            }
            Err(e) => return Err(e),
        }
        planner.plan.push(Step::Forget { state_file: host.state_file.clone(), device: addr });
    }
    Ok(planner.plan)
}

impl Planner<'_> {
    /// Plans one device's way back to its original driver (`None`: to no driver).
    fn restore_one(&mut self, dev: &PciDevice, original: Option<&str>) {
        let addr = dev.address;
        if dev.driver.as_deref() == original {
            let on = original.unwrap_or("no driver");
            self.plan.info(format!("{addr} is already on {on}: only its record is dropped"));
            self.clear_override(dev);
            return;
        }
        self.unbind_steps(dev);
        self.clear_override(dev);
        let Some(original) = original else {
            self.plan.info(format!("{addr} had no driver before: it is left unbound"));
            return;
        };
        let driver_dir = self.host.sys("bus/pci/drivers").join(original);
        if driver_dir.is_dir() {
            // Bind by name: probing could hand the device to another driver that matches it.
            self.plan.push(Step::Write { path: driver_dir.join("bind"), value: addr.to_string() });
        } else {
            // The driver is gone (module unloaded): loading it probes unclaimed devices, and
            // drivers_probe covers a module that was loaded meanwhile.
            self.modprobe(original);
            self.plan.push(Step::Write {
                path: self.host.sys("bus/pci/drivers_probe"),
                value: addr.to_string(),
            });
        }
    }
}

/// After applying: the devices that did not end up on their target driver, in words (the
/// kernel refuses a probe silently; its log says why).
pub fn verify(host: &Host, targets: &[(PciAddr, Driver)]) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (addr, driver) in targets {
        let dev = pci::read_device(host, addr)?;
        if dev.driver.as_deref() != Some(driver.name()) {
            problems.push(format!(
                "{addr} is bound to {}, not {driver}: the kernel log (dmesg) says why",
                dev.driver.as_deref().unwrap_or("no driver")
            ));
        }
    }
    Ok(problems)
}
