//! Where the host's kernel interfaces are: the sysfs, procfs and /dev roots and the state file.
//!
//! Every path nic-config reads or writes is built from a [`Host`], so tests point it at a
//! fixture tree and nothing reads `/sys` or `/proc` directly.

use crate::error::{Error, Result};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the state file lives by default. `/run` is emptied at boot, as are the bindings it
/// records (driver_override does not survive a reboot), so the two never disagree.
pub const DEFAULT_STATE_FILE: &str = "/run/nic-config/state.json";

/// The roots of one host's kernel interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// sysfs, normally `/sys`.
    pub sysfs: PathBuf,
    /// procfs, normally `/proc`.
    pub procfs: PathBuf,
    /// devtmpfs, normally `/dev` (hugetlbfs is mounted below it).
    pub dev: PathBuf,
    /// nic-config's record of the drivers devices had before it rebound them.
    pub state_file: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            sysfs: PathBuf::from("/sys"),
            procfs: PathBuf::from("/proc"),
            dev: PathBuf::from("/dev"),
            state_file: PathBuf::from(DEFAULT_STATE_FILE),
        }
    }
}

impl Host {
    /// A host whose sysfs, procfs, /dev and state file are all below `root` (`root/sys`,
    /// `root/proc`, `root/dev`, `root/run/nic-config/state.json`), as fixtures lay them out.
    pub fn under(root: &Path) -> Self {
        Self {
            sysfs: root.join("sys"),
            procfs: root.join("proc"),
            dev: root.join("dev"),
            state_file: root.join("run/nic-config/state.json"),
        }
    }

    /// A path below the sysfs root.
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sysfs.join(rel)
    }

    /// A path below the procfs root.
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.procfs.join(rel)
    }

    /// Whether a kernel module is loaded (or built in): listed in /proc/modules, present under
    /// /sys/module (built-in modules with parameters are), or, for a driver, registered under
    /// /sys/bus/pci/drivers. Dashes and underscores are the same in module names.
    pub fn module_loaded(&self, module: &str) -> bool {
        let name = module.replace('-', "_");
        if self.sys("module").join(&name).is_dir() {
            return true;
        }
        if self.sys("bus/pci/drivers").join(module).is_dir() {
            return true;
        }
        read_optional(&self.proc("modules"))
            .ok()
            .flatten()
            .is_some_and(|text| text.lines().any(|l| l.split_whitespace().next() == Some(&name)))
    }

    /// Reads a procfs file that may be absent (e.g. no IPv6): `None` when it does not exist.
    pub fn read_proc(&self, rel: &str) -> Result<Option<String>> {
        let path = self.proc(rel);
        read_optional(&path).map_err(|e| Error::io(path, e))
    }
}

/// A file's contents, `None` when it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A sysfs attribute's value without its trailing newline; `None` when absent or unreadable
/// (attributes come and go with drivers, and some are root-only).
pub fn read_attr(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim_end().to_owned())
}

/// The last component of a symlink's target: sysfs links such as `driver` and `iommu_group`
/// name their object by file name, whatever the relative path before it (this is how udev and
/// dpdk-devbind read them, and why fixture trees need no exact link depth).
pub fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// The names in a directory, sorted; empty when it does not exist.
pub fn dir_names(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}
