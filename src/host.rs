//! Host checks (`weir check --host`, and `weir run` at start): what the machine must offer a
//! configuration that the file alone cannot tell. Interfaces exist, are up, carry no kernel
//! addresses (the kernel would answer beside weir) and, for af_packet, have GRO, GSO and TSO
//! off (else the kernel hands weir frames larger than the MTU); PCI devices are bound to a
//! driver DPDK can use; endpoints are reachable through a port; hugepages are reserved where
//! the configuration asks for them; no other weir holds the interfaces.

use crate::config::{Backend, Config, PortConfig};
use dataplane::io::sys;
use ipnet::IpNet;
use std::fmt;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// As it should be.
    Ok,
    /// weir runs, but not as well or not as alone as it should.
    Warning,
    /// weir cannot run this configuration here.
    Error,
}

/// One thing found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// What it is about (`ports[0] (w0)`, `clusters[1].endpoints[2]`, `hugepages`).
    pub subject: String,
    /// What was found, and what to do.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.severity {
            Severity::Ok => "ok     ",
            Severity::Warning => "warning",
            Severity::Error => "error  ",
        };
        write!(f, "{tag} {}: {}", self.subject, self.message)
    }
}

fn finding(severity: Severity, subject: &str, message: impl Into<String>) -> Finding {
    Finding { severity, subject: subject.to_owned(), message: message.into() }
}

/// Checks `cfg` against this host (in the calling thread's network namespace).
pub fn check(cfg: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        check_port(i, p, &mut out);
    }
    check_endpoints(cfg, &mut out);
    check_hugepages(cfg, &mut out);
    match crate::claim::claim(&crate::config::host_interfaces(cfg)) {
        Ok(_released) => out.push(finding(Severity::Ok, "interfaces", "no other weir holds them")),
        Err(e) => out.push(finding(Severity::Error, "interfaces", format!("{e:#}"))),
    }
    out
}

fn check_port(i: usize, p: &PortConfig, out: &mut Vec<Finding>) {
    let iface = match p.backend {
        Backend::AfPacket => p.interface.clone().unwrap_or_else(|| p.name.clone()),
        Backend::Tap => {
            let name = p.interface.clone().unwrap_or_else(|| p.name.clone());
            let subject = format!("ports[{i}] ({name})");
            out.push(finding(Severity::Ok, &subject, "a TAP device weir creates (or attaches to)"));
            return;
        }
        Backend::Dpdk => {
            let device = p.device.clone().unwrap_or_default();
            check_dpdk(i, &device, out);
            return;
        }
    };
    let subject = format!("ports[{i}] ({iface})");
    if let Err(e) = sys::if_index(&iface) {
        out.push(finding(Severity::Error, &subject, format!("no such interface here: {e}")));
        return;
    }
    let mut good = true;
    match sys::if_flags(&iface) {
        Ok(f) if f & libc::IFF_UP.unsigned_abs() == 0 => {
            good = false;
            out.push(finding(Severity::Warning, &subject, "down: `ip link set dev IF up`"));
        }
        _ => {}
    }
    if let Ok(addrs) = sys::if_addresses(&iface) {
        let kernel: Vec<String> = addrs
            .iter()
            .filter(
                |a| !matches!(a, std::net::IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80),
            )
            .map(ToString::to_string)
            .collect();
        if !kernel.is_empty() {
            good = false;
            out.push(finding(
                Severity::Warning,
                &subject,
                format!(
                    "the kernel has addresses on it ({}): it answers ARP, ping and TCP beside \
                     weir; `ip addr flush dev IF`",
                    kernel.join(", ")
                ),
            ));
        }
    }
    if let Ok(on) = sys::if_offloads(&iface) {
        let names: Vec<&str> =
            ["gro", "gso", "tso"].iter().zip(on).filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        if !names.is_empty() {
            good = false;
            out.push(finding(
                Severity::Warning,
                &subject,
                format!(
                    "{} on: the kernel hands weir frames larger than the MTU; `ethtool -K IF {}`",
                    names.join(", "),
                    names.iter().map(|n| format!("{n} off")).collect::<Vec<_>>().join(" ")
                ),
            ));
        }
    }
    if good {
        out.push(finding(Severity::Ok, &subject, "up, no kernel addresses, offloads off"));
    }
}

/// A PCI address must be bound to a driver DPDK can drive; `net_af_packet` needs its
/// interface.
fn check_dpdk(i: usize, device: &str, out: &mut Vec<Finding>) {
    let name = device.split(',').next().unwrap_or(device);
    let subject = format!("ports[{i}] ({name})");
    if name.contains(':') {
        let link = std::path::Path::new("/sys/bus/pci/devices").join(name).join("driver");
        let driver = std::fs::read_link(&link)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
        match driver.as_deref() {
            Some("vfio-pci" | "uio_pci_generic" | "igb_uio") => out.push(finding(
                Severity::Ok,
                &subject,
                format!("bound to {}", driver.unwrap_or_default()),
            )),
            Some(d) => out.push(finding(
                Severity::Error,
                &subject,
                format!("bound to {d}, not to vfio-pci or uio: `nic-config bind {name}`"),
            )),
            None => out.push(finding(
                Severity::Error,
                &subject,
                "no such PCI device, or bound to no driver: `nic-config status`",
            )),
        }
        return;
    }
    // net_af_packet opens an existing interface; net_tap creates its own.
    let iface = device
        .split(',')
        .skip(1)
        .find_map(|kv| kv.strip_prefix("iface="))
        .filter(|_| name.starts_with("net_af_packet"));
    match iface {
        Some(iface) if sys::if_index(iface).is_err() => out.push(finding(
            Severity::Error,
            &subject,
            format!("its interface {iface} does not exist here"),
        )),
        _ => out.push(finding(Severity::Ok, &subject, "a virtual device")),
    }
}

/// Every endpoint must be inside a port's prefix or behind a route.
fn check_endpoints(cfg: &Config, out: &mut Vec<Finding>) {
    let mut prefixes: Vec<IpNet> =
        cfg.ports.iter().flat_map(|p| p.addresses.iter().copied()).collect();
    prefixes.extend(cfg.routes.iter().map(|r| r.prefix));
    let mut unreachable = 0;
    for (ci, c) in cfg.clusters.iter().enumerate() {
        for (ei, e) in c.endpoints.iter().enumerate() {
            if !prefixes.iter().any(|n| n.contains(&e.address)) {
                unreachable += 1;
                out.push(finding(
                    Severity::Error,
                    &format!("clusters[{ci}].endpoints[{ei}]"),
                    format!(
                        "{} is in no port's prefix and behind no route: weir cannot reach it",
                        e.address
                    ),
                ));
            }
        }
    }
    if unreachable == 0 && !cfg.clusters.is_empty() {
        out.push(finding(Severity::Ok, "endpoints", "each is reachable through a port"));
    }
}

/// `eal.hugepages: true` needs free hugepages.
fn check_hugepages(cfg: &Config, out: &mut Vec<Finding>) {
    let dpdk = cfg.ports.iter().any(|p| p.backend == Backend::Dpdk);
    if !dpdk || cfg.eal.hugepages != Some(true) {
        return;
    }
    let free = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("HugePages_Free:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    match free {
        Some(0) | None => out.push(finding(
            Severity::Error,
            "eal.hugepages",
            "true, but no hugepage is free: `nic-config hugepages` or /proc/sys/vm/nr_hugepages",
        )),
        Some(n) => out.push(finding(Severity::Ok, "eal.hugepages", format!("{n} hugepages free"))),
    }
}
