//! Network namespaces and veth pairs for the demo and the integration tests.
//!
//! Every namespace is created with a name unique to this process and removed when its guard is
//! dropped, also on failure. Addresses used with them come from 198.18.0.0/15 and 2001:db8::/32.

use anyhow::{bail, Context, Result};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

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
