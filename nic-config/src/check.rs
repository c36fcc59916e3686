//! `check`: is this host ready for DPDK? IOMMU, vfio, hugepages, hugetlbfs, CPU flags, each
//! with a level, and one verdict.

use crate::error::Result;
use crate::hugepages;
use crate::pci;
use crate::sysfs::{dir_names, read_attr, Host};
use serde::Serialize;
use std::fmt;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Worth knowing; no effect on the verdict.
    Info,
    /// Works, with a caveat.
    Warn,
    /// Not ready.
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        })
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Its level.
    pub level: Level,
    /// What was checked (`iommu`, `hugepages`, …).
    pub name: &'static str,
    /// What was found, and what to do about it.
    pub detail: String,
}

/// The overall answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// vfio-pci with the IOMMU.
    Ready,
    /// vfio-pci only in unsafe no-IOMMU mode (or uio).
    NoIommuOnly,
    /// Something DPDK needs is missing.
    NotReady,
}

/// Every check and the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The checks, in the order run.
    pub items: Vec<Item>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why not ready, briefly, one entry per failed check.
    pub reasons: Vec<String>,
}

impl Report {
    /// The one-line verdict, with the reasons.
    pub fn verdict_line(&self) -> String {
        match self.verdict {
            Verdict::Ready => "ready for vfio-pci".to_owned(),
            Verdict::NoIommuOnly => {
                "ready for vfio-pci in no-IOMMU mode only (no IOMMU: no DMA protection)".to_owned()
            }
            Verdict::NotReady => format!("not ready: {}", self.reasons.join("; ")),
        }
    }

    /// The report as `status`-style text: one line per check, then the verdict.
    pub fn render(&self) -> String {
        let width = self.items.iter().map(|i| i.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for i in &self.items {
            out.push_str(&format!(
                "[{:>4}] {:<width$}  {}\n",
                i.level.to_string(),
                i.name,
                i.detail
            ));
        }
        out.push_str(&format!("verdict: {}\n", self.verdict_line()));
        out
    }
}

struct Checks {
    items: Vec<Item>,
    reasons: Vec<String>,
}

impl Checks {
    fn add(&mut self, level: Level, name: &'static str, detail: impl Into<String>) {
        self.items.push(Item { level, name, detail: detail.into() });
    }

    fn fail(&mut self, name: &'static str, detail: impl Into<String>, reason: &str) {
        self.add(Level::Fail, name, detail);
        self.reasons.push(reason.to_owned());
    }
}

/// The CPU's flags and vendor from /proc/cpuinfo (the first processor's; they agree).
fn cpu_flags(cpuinfo: &str) -> (Option<Vec<String>>, Option<String>) {
    let field = |key: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
    };
    let flags = field("flags").map(|f| f.split_whitespace().map(str::to_owned).collect());
    (flags, field("vendor_id"))
}

/// The IOMMU groups that are real (not vfio's no-IOMMU stand-ins).
fn real_iommu_groups(host: &Host) -> usize {
    let base = host.sys("kernel/iommu_groups");
    dir_names(&base)
        .iter()
        .filter(|g| read_attr(&base.join(g).join("name")).is_none_or(|n| n != "vfio-noiommu"))
        .count()
}

/// Runs every check.
pub fn run(host: &Host) -> Result<Report> {
    let mut c = Checks { items: Vec::new(), reasons: Vec::new() };
    let cpuinfo = host.read_proc("cpuinfo")?.unwrap_or_default();
    let (flags, vendor) = cpu_flags(&cpuinfo);
    let amd = vendor.as_deref() == Some("AuthenticAMD");

    // IOMMU: groups exist only when the IOMMU is on; the command line says why not.
    let cmdline = host.read_proc("cmdline")?.unwrap_or_default();
    let args: Vec<&str> = cmdline.split_whitespace().collect();
    let iommu_args: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| {
            a.starts_with("intel_iommu=") || a.starts_with("amd_iommu=") || a.starts_with("iommu=")
        })
        .collect();
    let groups = real_iommu_groups(host);
    let has_iommu = groups > 0;
    if has_iommu {
        c.add(Level::Ok, "iommu", format!("{groups} IOMMU groups"));
    } else {
        let hint = if amd {
            "enable AMD-Vi/IOMMU in firmware (amd_iommu is on by default)"
        } else if !args.contains(&"intel_iommu=on") {
            "enable VT-d in firmware and add intel_iommu=on iommu=pt to the kernel command line"
        } else {
            "intel_iommu=on is set: enable VT-d in firmware"
        };
        c.add(Level::Warn, "iommu", format!("no IOMMU groups: {hint}"));
    }
    let cmd_detail = if iommu_args.is_empty() {
        "kernel command line has no IOMMU option".to_owned()
    } else {
        format!("kernel command line: {}", iommu_args.join(" "))
    };
    let passthrough = args.contains(&"iommu=pt");
    if has_iommu && !passthrough {
        c.add(
            Level::Info,
            "iommu cmdline",
            format!(
                "{cmd_detail}; iommu=pt is usual on DPDK hosts (kernel drivers skip \
                 translation)"
            ),
        );
    } else {
        c.add(Level::Info, "iommu cmdline", cmd_detail);
    }

    // vfio: bind loads it, so absence is a warning, not a failure.
    let vfio_pci = host.module_loaded("vfio-pci");
    if vfio_pci {
        c.add(Level::Ok, "vfio-pci", "module loaded");
    } else {
        c.add(Level::Warn, "vfio-pci", "module not loaded (nic-config bind loads it)");
    }
    let noiommu_param = host.sys("module/vfio/parameters/enable_unsafe_noiommu_mode");
    let noiommu_on = read_attr(&noiommu_param).is_some_and(|v| v == "Y" || v == "1");
    let noiommu_unsupported = !noiommu_param.exists() && host.module_loaded("vfio");
    if !has_iommu {
        if noiommu_on {
            c.add(Level::Warn, "vfio no-IOMMU", "enable_unsafe_noiommu_mode=Y");
        } else if noiommu_unsupported {
            c.fail(
                "vfio no-IOMMU",
                "no IOMMU and this kernel's vfio has no no-IOMMU mode: vfio-pci cannot be used",
                "no IOMMU and no vfio no-IOMMU mode",
            );
        } else {
            c.add(Level::Info, "vfio no-IOMMU", "off (nic-config bind enables it when needed)");
        }
    }

    // Hugepages: DPDK needs some reserved and a hugetlbfs mount to map them.
    let sizes = hugepages::reserved(host);
    let with_pages: Vec<String> = sizes
        .iter()
        .filter(|(_, total, _)| *total > 0)
        .map(|(kib, total, free)| {
            format!("{total} x {} ({free} free)", hugepages::size_label(*kib))
        })
        .collect();
    if with_pages.is_empty() {
        c.fail(
            "hugepages",
            "none reserved (nic-config hugepages --size 2M --count 1024)",
            "no hugepages reserved",
        );
    } else {
        c.add(Level::Ok, "hugepages", with_pages.join(", "));
    }
    let mounts = hugepages::hugetlbfs_mounts(host)?;
    if mounts.is_empty() {
        c.fail(
            "hugetlbfs",
            "not mounted (nic-config hugepages mounts it at /dev/hugepages)",
            "hugetlbfs not mounted",
        );
    } else {
        let default = hugepages::default_size_kib(host);
        let list: Vec<String> = mounts
            .iter()
            .map(|m| {
                let kib = m.pagesize_kib.unwrap_or(default);
                format!("{} ({})", m.target.display(), hugepages::size_label(kib))
            })
            .collect();
        c.add(Level::Ok, "hugetlbfs", list.join(", "));
    }

    // CPU: Debian's DPDK is built for -march=corei7, so SSE4.2 is the floor.
    match flags {
        Some(flags) => {
            let has = |f: &str| flags.iter().any(|x| x == f);
            if has("sse4_2") {
                c.add(Level::Ok, "cpu sse4_2", "present");
            } else {
                c.fail(
                    "cpu sse4_2",
                    "missing: DPDK's packages are built for -march=corei7 and need it",
                    "CPU lacks SSE4.2",
                );
            }
            let extra: Vec<String> = ["avx2", "avx512f", "pdpe1gb"]
                .iter()
                .map(|f| format!("{f} {}", if has(f) { "yes" } else { "no" }))
                .collect();
            c.add(Level::Info, "cpu extras", extra.join(", "));
        }
        None => c.add(Level::Info, "cpu sse4_2", "no x86 flags in /proc/cpuinfo: not checked"),
    }

    // Where devices are bound now: for the operator, no effect on the verdict.
    if let Ok(devices) = pci::network_devices(host) {
        let dpdk: Vec<String> = devices
            .iter()
            .filter_map(|d| {
                let drv = d.driver.as_deref()?;
                matches!(drv, "vfio-pci" | "uio_pci_generic" | "igb_uio")
                    .then(|| format!("{} ({drv})", d.address))
            })
            .collect();
        let detail = if dpdk.is_empty() {
            format!("{} network devices, none bound to a DPDK driver", devices.len())
        } else {
            format!("bound to DPDK drivers: {}", dpdk.join(", "))
        };
        c.add(Level::Info, "nics", detail);
    }

    let verdict = if c.items.iter().any(|i| i.level == Level::Fail) {
        Verdict::NotReady
    } else if has_iommu {
        Verdict::Ready
    } else {
        Verdict::NoIommuOnly
    };
    Ok(Report { items: c.items, verdict, reasons: c.reasons })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_processors_flags() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse4_2 avx2\n\n\
                    processor\t: 1\nflags\t\t: fpu\n";
        let (flags, vendor) = cpu_flags(text);
        assert_eq!(flags.unwrap(), ["fpu", "sse4_2", "avx2"]);
        assert_eq!(vendor.as_deref(), Some("GenuineIntel"));
    }
}
