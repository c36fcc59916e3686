//! Network namespaces and veth pairs for the demo and the integration tests.
//!
//! Every namespace is created with a name unique to this process and removed when its guard is
//! dropped, also on failure. Addresses used with them come from 198.18.0.0/15 and 2001:db8::/32.

use anyhow::{bail, Context, Result};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command, failing with its stderr if it fails.
pub fn sh(args: &[&str]) -> Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// A network namespace that is deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `weir-<pid>-<n>-<tag>` with loopback up.
    pub fn new(tag: &str) -> Result<Netns> {
        static SWEPT: Once = Once::new();
        SWEPT.call_once(remove_stale);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("weir-{}-{n}-{tag}", std::process::id());
        sh(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside, failing on a non-zero exit.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Runs a command inside and returns its output whatever its exit status.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", args[0]))
    }

    /// Starts a command inside, in the background.
    pub fn spawn(&self, args: &[&str]) -> Result<Child> {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", args[0]))
    }

    /// Turns off the offloads that make a veth or TAP hand over frames larger than the MTU.
    pub fn no_offloads(&self, dev: &str) {
        let _ = self.run(&["ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"]);
    }

    /// Makes the kernel compute transmit checksums itself instead of leaving them to the device.
    pub fn no_tx_checksum_offload(&self, dev: &str) {
        let _ = self.run(&["ethtool", "-K", dev, "tx", "off"]);
    }

    /// Keeps the kernel of this namespace off an interface weir owns: no IPv6 autoconfiguration,
    /// no addresses, no answers of its own.
    pub fn quiet_kernel(&self, dev: &str) -> Result<()> {
        self.exec(&["sysctl", "-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")])?;
        Ok(())
    }
}

/// Removes the namespaces of this module's naming (`weir-<pid>-<n>-<tag>`) whose process is
/// gone and which are older than any run: a run killed before its guards dropped leaves them
/// behind. A namespace whose pid is alive is left alone, whoever holds that pid now, and so is
/// a young one (another container's run may share `/run/netns` but not this PID namespace).
fn remove_stale() {
    const OLDER_THAN: std::time::Duration = std::time::Duration::from_secs(3 * 3600);
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = stale_owner(name) else { continue };
        let old = std::fs::metadata(format!("/run/netns/{name}"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > OLDER_THAN);
        if old && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// The pid in a name of the form `weir-<pid>-<n>-<tag>`.
fn stale_owner(name: &str) -> Option<u32> {
    let mut parts = name.strip_prefix("weir-")?.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u32>().ok()?;
    parts.next().filter(|tag| !tag.is_empty())?;
    Some(pid)
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Creates a veth pair with `a` in `ns_a` and `b` in `ns_b`, both up.
pub fn veth(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str) -> Result<()> {
    sh(&[
        "ip",
        "link",
        "add",
        a,
        "netns",
        ns_a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b,
        "netns",
        ns_b.name(),
    ])?;
    ns_a.exec(&["ip", "link", "set", a, "up"])?;
    ns_b.exec(&["ip", "link", "set", b, "up"])?;
    ns_a.no_offloads(a);
    ns_b.no_offloads(b);
    Ok(())
}

/// A host namespace on one side of weir: one interface with an IPv4 and an IPv6 address and
/// default routes through weir.
pub fn configure_host(
    ns: &Netns,
    dev: &str,
    v4: &str,
    gw4: &str,
    v6: &str,
    gw6: &str,
) -> Result<()> {
    ns.exec(&["ip", "link", "set", dev, "up"])?;
    ns.exec(&["ip", "addr", "add", v4, "dev", dev])?;
    ns.exec(&["ip", "-6", "addr", "add", v6, "dev", dev, "nodad"])?;
    ns.exec(&["ip", "route", "add", "default", "via", gw4])?;
    ns.exec(&["ip", "-6", "route", "add", "default", "via", gw6])?;
    ns.no_offloads(dev);
    Ok(())
}

/// Whether a command is on the PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::stale_owner;

    #[test]
    fn only_this_modules_names_have_an_owner() {
        assert_eq!(stale_owner("weir-4034-18-c"), Some(4034));
        assert_eq!(stale_owner("weir-12-0-backend-2"), Some(12));
        for other in ["weir-4326", "weir-x-1-c", "weir-1-x-c", "weir-1-2-", "other-1-2-c", "weir-"]
        {
            assert_eq!(stale_owner(other), None, "{other}");
        }
    }
}
