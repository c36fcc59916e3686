//! `nic-config`: prepares a host for weir's DPDK ports. It binds NICs to vfio-pci or uio,
//! reserves hugepages and checks the IOMMU.
//!
//! Every command first builds a [`plan::Plan`] (sysfs writes, modprobes, mounts) from what the
//! host shows, then either prints it (`--dry-run`) or applies it step by step. All paths come
//! from a [`sysfs::Host`], so the whole library runs against fixture trees.
#![forbid(unsafe_code)]

pub mod apply_file;
pub mod bind;
pub mod check;
pub mod error;
pub mod hugepages;
pub mod kernel_use;
pub mod pci;
pub mod plan;
pub mod state;
pub mod status;
pub mod sysfs;

pub use error::{Error, Result};
pub use sysfs::Host;
