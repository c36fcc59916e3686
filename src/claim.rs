//! One weir per interface: before it opens its ports, weir takes an exclusive lock per host
//! interface (or DPDK device) it will use, so that a second weir started on the same
//! interfaces is refused, naming the process that holds them, instead of both forwarding and
//! every frame being answered twice.
//!
//! The locks are `flock(2)` locks on files under `/run/weir` (or the temporary directory when
//! that cannot be written), one directory per network namespace: interface names are only
//! unique within one. The kernel drops a lock when its process ends, however it ends, so a
//! crashed weir leaves nothing that stops the next one; the file that stays behind is reused.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Locks held for the life of the process (or until dropped).
#[derive(Debug)]
pub struct InterfaceClaims {
    _files: Vec<File>,
}

/// The directory for the locks of this network namespace (by the inode of its namespace
/// file), created if needed; PCI devices are the machine's, not a namespace's.
fn lock_dir(global: bool) -> Result<PathBuf> {
    let scope = if global {
        "pci".to_owned()
    } else {
        let ns = std::fs::metadata("/proc/thread-self/ns/net")
            .context("reading /proc/thread-self/ns/net")?;
        format!("netns-{}-{}", ns.dev(), ns.ino())
    };
    for base in [PathBuf::from("/run/weir"), std::env::temp_dir().join("weir-locks")] {
        let dir = base.join(&scope);
        if std::fs::create_dir_all(&dir).is_ok() {
            return Ok(dir);
        }
    }
    anyhow::bail!("cannot create a lock directory under /run/weir or the temporary directory")
}

/// A file name for `name`: interface names and PCI addresses hold no `/`, but a
/// configuration could; anything outside a safe set is replaced.
fn file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.:@".contains(c) { c } else { '_' })
        .collect();
    format!("{safe}.lock")
}

/// Takes the lock of every interface in `names` (`(name, is_pci_device)`), or fails naming
/// the first one another process holds, and that process.
pub fn claim(names: &[(String, bool)]) -> Result<InterfaceClaims> {
    let mut files = Vec::new();
    for (name, global) in names {
        let path = lock_dir(*global)?.join(file_name(name));
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match f.try_lock() {
            Ok(()) => {
                f.set_len(0)?;
                f.rewind()?;
                writeln!(f, "{}", std::process::id())?;
                files.push(f);
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another weir".to_owned()
                } else {
                    format!("weir (pid {holder})")
                };
                anyhow::bail!(
                    "interface `{name}` is in use by {who}: two dataplanes on one interface would \
                     both answer every frame (lock {})",
                    path.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
    Ok(InterfaceClaims { _files: files })
}

/// The pid the lock of interface `name` names (the weir that holds it, or held it last), if
/// its file says one.
pub fn holder(name: &str, global: bool) -> Option<u32> {
    let path = lock_dir(global).ok()?.join(file_name(name));
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl InterfaceClaims {
    /// The lock files, to hand to the weir that takes over (a lock belongs to the open file,
    /// so it stays held while either process has it open).
    pub fn fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        self._files.iter().map(std::os::fd::AsFd::as_fd).collect()
    }

    /// The locks a weir that is going away handed over: held from now on by this process,
    /// whose pid they then name.
    pub fn adopt(fds: Vec<std::os::fd::OwnedFd>) -> InterfaceClaims {
        let mut files: Vec<File> = fds.into_iter().map(File::from).collect();
        for f in &mut files {
            let pid = std::process::id();
            let _ = f.set_len(0).and_then(|()| f.rewind()).and_then(|()| writeln!(f, "{pid}"));
        }
        InterfaceClaims { _files: files }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_naming_the_holder_and_freed_with_the_first() {
        let name = format!("weir-test-{}-x", std::process::id());
        let first = claim(&[(name.clone(), false)]).unwrap();
        let e = claim(&[(name.clone(), false)]).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains(&format!("`{name}`")), "{e}");
        drop(first);
        let again = claim(&[(name.clone(), false)]).unwrap();
        drop(again);
        let dir = lock_dir(false).unwrap();
        let _ = std::fs::remove_file(dir.join(file_name(&name)));
    }

    #[test]
    fn names_are_kept_inside_the_lock_directory() {
        assert_eq!(file_name("../../etc/passwd"), ".._.._etc_passwd.lock");
        assert_eq!(file_name("0000:03:00.0"), "0000:03:00.0.lock");
    }
}
