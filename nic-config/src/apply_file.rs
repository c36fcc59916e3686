//! `apply -c FILE`: the whole host setup in one YAML file, planned as one plan.
//!
//! ```yaml
//! hugepages: { size: 2M, count: 1024, node: 0 }
//! devices:
//!   - { device: 0000:00:04.0, driver: vfio-pci }
//!   - { device: ens5, driver: vfio-pci }
//! force: false
//! ```
//!
//! Unknown fields are errors, named by path.

use crate::bind::{self, Driver};
use crate::error::Result;
use crate::hugepages;
use crate::plan::Plan;
use crate::sysfs::Host;
use serde::Deserialize;
use std::fmt;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupFile {
    /// Hugepages to reserve (and mount).
    #[serde(default)]
    pub hugepages: Option<hugepages::Request>,
    /// Devices to bind.
    #[serde(default)]
    pub devices: Vec<DeviceEntry>,
    /// Rebind devices even when the kernel uses them.
    #[serde(default)]
    pub force: bool,
}

/// One device to bind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// PCI address (full or short) or interface name.
    pub device: String,
    /// Driver to bind it to.
    pub driver: Driver,
}

/// A file that does not parse: the field's path and what is wrong (with the line where the
/// YAML parser knows it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileError {
    /// Path to the field, e.g. `devices[1].driver`; `.` for the top level.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Parses the file's text.
pub fn parse(text: &str) -> Result<SetupFile, FileError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let mut message = e.into_inner().to_string();
        // serde_yaml starts with the innermost mapping's path; ours names the field itself.
        if let Some((prefix, rest)) = message.split_once(": ") {
            if path.starts_with(prefix) {
                message = rest.to_owned();
            }
        }
        FileError { path, message }
    })
}

/// The combined plan: hugepages, then the devices (neither depends on the other).
pub fn plan(host: &Host, file: &SetupFile) -> Result<Plan> {
    let mut plan = Plan::default();
    if let Some(req) = &file.hugepages {
        plan.extend(hugepages::plan(host, req)?);
    }
    if !file.devices.is_empty() {
        let requests: Vec<(String, Driver)> =
            file.devices.iter().map(|d| (d.device.clone(), d.driver)).collect();
        plan.extend(bind::plan_bind(host, &requests, file.force)?);
    }
    Ok(plan)
}
