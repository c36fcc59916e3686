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

/// Largest setup file read, bytes: a few devices and a hugepage count need far less.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Parses the file's text: at most [`MAX_FILE_BYTES`], nested at most 8 deep, with few
/// anchors and aliases, so a malicious file cannot make the parse grow or take long.
pub fn parse(text: &str) -> Result<SetupFile, FileError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(FileError {
            path: String::new(),
            message: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 8,
            flow_nesting_limit: 8,
            max_documents: 1,
            max_anchors: 64,
            max_aliases: 256,
            max_nodes: 100_000,
            max_total_scalar_bytes: MAX_FILE_BYTES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 10_000,
            max_alias_expansions_per_anchor: 256,
        },
        with_snippet: false,
    };
    let mut path = String::new();
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| FileError { path, message: e.to_string() })
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
