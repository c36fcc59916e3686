//! The state file: the driver each device had before nic-config first rebound it, so that
//! `restore` can give it back.
//!
//! ```json
//! { "devices": { "0000:00:04.0": { "original_driver": "ixgbe" } } }
//! ```
//!
//! Only the first rebinding is recorded: binding vfio-pci, then uio_pci_generic, still restores
//! the kernel driver the device started on.

use crate::error::{Error, Result};
use crate::pci::PciAddr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Rebound devices, by address.
    #[serde(default)]
    pub devices: BTreeMap<PciAddr, Entry>,
}

/// One rebound device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The driver it was bound to; `null` when it had none.
    pub original_driver: Option<String>,
}

impl State {
    /// Reads the state file; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(path, e)),
        };
        serde_json::from_str(&text)
            .map_err(|e| Error::BadState { path: path.to_owned(), message: e.to_string() })
    }

    /// Writes the state file whole: a temporary file beside it, renamed over it, so a crash
    /// leaves the old state or the new one, never half of either.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut text = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        text.push('\n');
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        fs::write(&tmp, text)?;
        fs::rename(&tmp, path)
    }

    /// The recorded original driver of a device: `None` when not recorded, `Some(None)` when
    /// it had no driver.
    pub fn original_driver(&self, addr: &PciAddr) -> Option<Option<&str>> {
        self.devices.get(addr).map(|e| e.original_driver.as_deref())
    }
}
