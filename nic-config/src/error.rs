//! Errors of planning: what the host looks like does not allow the request.
//!
//! Applying a plan has its own error, [`crate::plan::ApplyError`], which names the step.

use crate::pci::PciAddr;
use std::io;
use std::path::PathBuf;

/// Why a plan could not be built (or the host could not be read).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the plan depends on could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The argument is neither a PCI address nor a known interface.
    #[error(
        "`{0}` is neither a PCI address (0000:00:04.0 or 00:04.0) \
         nor the interface of a PCI network device"
    )]
    UnknownDevice(String),
    /// A well-formed PCI address that the host does not have.
    #[error("no PCI device {addr} ({} does not exist)", path.display())]
    NoSuchDevice {
        /// The address asked for.
        addr: PciAddr,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The kernel uses the interface: rebinding it would cut the host off.
    #[error(
        "refusing to {action} {addr} ({iface}): the kernel is using it: {what}; \
         that would cut this host's traffic through it (use --force to {action} anyway)"
    )]
    InUse {
        /// `rebind` or `unbind`.
        action: &'static str,
        /// The device.
        addr: PciAddr,
        /// Its interface.
        iface: String,
        /// What it carries: the default route, addresses, routes.
        what: String,
    },
    /// `restore` for a device nic-config never rebound.
    #[error(
        "{addr} is not in the state file {}: nic-config did not rebind it, \
         so its original driver is unknown",
        state_file.display()
    )]
    NotRemembered {
        /// The device.
        addr: PciAddr,
        /// The state file read.
        state_file: PathBuf,
    },
    /// The state file exists but cannot be understood.
    #[error("state file {}: {message}", path.display())]
    BadState {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The kernel offers no hugepages of that size (or not on that node).
    #[error("this host offers no {size} hugepages here: {} does not exist", path.display())]
    NoHugepageSize {
        /// `2M` or `1G`.
        size: String,
        /// The sysfs directory looked for.
        path: PathBuf,
    },
    /// The NUMA node does not exist.
    #[error("no NUMA node {node} ({} does not exist; nodes: {available})", path.display())]
    NoNumaNode {
        /// The node asked for.
        node: u32,
        /// Where it was looked for.
        path: PathBuf,
        /// The nodes that do exist, comma separated.
        available: String,
    },
    /// No IOMMU, and vfio was built without no-IOMMU mode.
    #[error(
        "{addr} has no IOMMU group and this kernel's vfio has no no-IOMMU mode \
         ({} does not exist): enable the IOMMU or bind uio_pci_generic",
        path.display()
    )]
    NoIommuUnsupported {
        /// The device.
        addr: PciAddr,
        /// The missing module parameter.
        path: PathBuf,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Results of planning.
pub type Result<T, E = Error> = std::result::Result<T, E>;
