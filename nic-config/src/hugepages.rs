//! Plans for `hugepages`: reserve N pages of one size, on the host or on one NUMA node, and
//! mount hugetlbfs for that size when no mount serves it yet.

use crate::error::{Error, Result};
use crate::plan::{Plan, Step};
use crate::sysfs::{dir_names, read_attr, Host};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// A hugepage size DPDK uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum PageSize {
    /// 2 MiB.
    #[value(name = "2M", alias = "2MB")]
    #[serde(rename = "2M", alias = "2MB")]
    Size2M,
    /// 1 GiB.
    #[value(name = "1G", alias = "1GB")]
    #[serde(rename = "1G", alias = "1GB")]
    Size1G,
}

impl PageSize {
    /// The size in KiB, as sysfs names it (`hugepages-2048kB`).
    pub fn kib(self) -> u64 {
        match self {
            Self::Size2M => 2048,
            Self::Size1G => 1024 * 1024,
        }
    }

    /// The short name (`2M`), also the hugetlbfs `pagesize=` option.
    pub fn label(self) -> &'static str {
        match self {
            Self::Size2M => "2M",
            Self::Size1G => "1G",
        }
    }

    /// The sysfs directory name for this size.
    pub fn dir_name(self) -> String {
        format!("hugepages-{}kB", self.kib())
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What to reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Page size.
    pub size: PageSize,
    /// Pages to reserve (the total, not an addition; 0 frees them).
    pub count: u64,
    /// NUMA node; the whole host (the kernel spreads the pages) when absent.
    #[serde(default)]
    pub node: Option<u32>,
}

impl Request {
    fn place(&self) -> String {
        match self.node {
            Some(n) => format!("node {n}"),
            None => "this host".to_owned(),
        }
    }
}

/// The sysfs directory for the request's size (and node), checked to exist.
fn size_dir(host: &Host, req: &Request) -> Result<PathBuf> {
    let base = match req.node {
        None => host.sys("kernel/mm/hugepages"),
        Some(node) => {
            let node_dir = host.sys("devices/system/node").join(format!("node{node}"));
            if !node_dir.is_dir() {
                let available: Vec<String> = dir_names(&host.sys("devices/system/node"))
                    .into_iter()
                    .filter_map(|n| n.strip_prefix("node").map(str::to_owned))
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                    .collect();
                return Err(Error::NoNumaNode {
                    node,
                    path: node_dir,
                    available: if available.is_empty() {
                        "none listed".to_owned()
                    } else {
                        available.join(", ")
                    },
                });
            }
            node_dir.join("hugepages")
        }
    };
    let dir = base.join(req.size.dir_name());
    if !dir.is_dir() {
        return Err(Error::NoHugepageSize { size: req.size.label().to_owned(), path: dir });
    }
    Ok(dir)
}

/// The `nr_hugepages` file the request writes.
pub fn nr_path(host: &Host, req: &Request) -> Result<PathBuf> {
    Ok(size_dir(host, req)?.join("nr_hugepages"))
}

fn read_count(path: &Path) -> Option<u64> {
    read_attr(path).and_then(|s| s.parse().ok())
}

/// A hugetlbfs mount from /proc/mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugetlbMount {
    /// Mount point.
    pub target: PathBuf,
    /// Its `pagesize=` option in KiB; `None` when absent (the default size).
    pub pagesize_kib: Option<u64>,
}

/// `2M`, `1024M`, `1G`, `2048k`: a size with a binary suffix, in KiB.
pub fn parse_size_kib(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "k" | "kb" => 1,
        "m" | "mb" => 1024,
        "g" | "gb" => 1024 * 1024,
        // A bare number is bytes.
        "" => return n.is_multiple_of(1024).then_some(n / 1024),
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Undoes /proc/mounts' octal escapes (`\040` for a space).
fn unescape_mount_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The hugetlbfs mounts in a /proc/mounts text.
pub fn parse_mounts(text: &str) -> Vec<HugetlbMount> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[2] != "hugetlbfs" {
                return None;
            }
            let pagesize_kib =
                f[3].split(',').find_map(|o| o.strip_prefix("pagesize=")).and_then(parse_size_kib);
            Some(HugetlbMount { target: PathBuf::from(unescape_mount_path(f[1])), pagesize_kib })
        })
        .collect()
}

/// The host's hugetlbfs mounts.
pub fn hugetlbfs_mounts(host: &Host) -> Result<Vec<HugetlbMount>> {
    Ok(parse_mounts(&host.read_proc("mounts")?.unwrap_or_default()))
}

/// The default hugepage size in KiB (`Hugepagesize:` in /proc/meminfo; 2048 when absent).
pub fn default_size_kib(host: &Host) -> u64 {
    host.read_proc("meminfo")
        .ok()
        .flatten()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let v = l.strip_prefix("Hugepagesize:")?;
                v.trim().trim_end_matches("kB").trim().parse().ok()
            })
        })
        .unwrap_or(2048)
}

/// The mount serving pages of `size`, if any.
pub fn mount_for(host: &Host, size: PageSize) -> Result<Option<HugetlbMount>> {
    let default = default_size_kib(host);
    Ok(hugetlbfs_mounts(host)?
        .into_iter()
        .find(|m| m.pagesize_kib.unwrap_or(default) == size.kib()))
}

/// Plans reserving pages and mounting hugetlbfs.
pub fn plan(host: &Host, req: &Request) -> Result<Plan> {
    let mut plan = Plan::default();
    let nr = nr_path(host, req)?;
    let current = read_count(&nr);
    if current == Some(req.count) {
        plan.info(format!(
            "{} already has {} {} hugepages reserved",
            req.place(),
            req.count,
            req.size
        ));
    } else {
        plan.push(Step::Write { path: nr, value: req.count.to_string() });
    }
    if req.count == 0 {
        return Ok(plan);
    }
    if let Some(m) = mount_for(host, req.size)? {
        plan.info(format!("hugetlbfs for {} pages is mounted at {}", req.size, m.target.display()));
        return Ok(plan);
    }
    let primary = host.dev.join("hugepages");
    let taken = hugetlbfs_mounts(host)?.iter().any(|m| m.target == primary);
    // /dev/hugepages serving the other size stays as it is: something may be using it.
    let target = if taken { host.dev.join(format!("hugepages-{}", req.size)) } else { primary };
    if !target.is_dir() {
        plan.push(Step::CreateDir { path: target.clone() });
    }
    plan.push(Step::Mount {
        fstype: "hugetlbfs".into(),
        source: "nodev".into(),
        target,
        options: format!("pagesize={}", req.size),
    });
    Ok(plan)
}

/// What the kernel reserved, read back after applying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readback {
    /// Pages asked for.
    pub requested: u64,
    /// Pages the kernel reports.
    pub reserved: u64,
}

impl Readback {
    /// Whether the kernel gave fewer pages than asked (memory short or fragmented).
    pub fn is_short(&self) -> bool {
        self.reserved < self.requested
    }
}

/// Reads the reserved count back.
pub fn readback(host: &Host, req: &Request) -> Result<Readback> {
    let nr = nr_path(host, req)?;
    let reserved = read_count(&nr).ok_or_else(|| {
        Error::io(&nr, std::io::Error::new(std::io::ErrorKind::InvalidData, "not a number"))
    })?;
    Ok(Readback { requested: req.count, reserved })
}

/// The advice when the kernel gave fewer pages than asked.
pub fn shortfall_message(req: &Request, rb: &Readback) -> String {
    format!(
        "the kernel reserved only {} of {} {} hugepages on {} (free memory is short or \
         fragmented); reserve them at boot instead: default_hugepagesz={} hugepagesz={} \
         hugepages={} on the kernel command line",
        rb.reserved,
        rb.requested,
        req.size,
        req.place(),
        req.size,
        req.size,
        req.count
    )
}

/// Reserved pages per size on the whole host: (size in KiB, total, free).
pub fn reserved(host: &Host) -> Vec<(u64, u64, u64)> {
    let base = host.sys("kernel/mm/hugepages");
    dir_names(&base)
        .into_iter()
        .filter_map(|name| {
            let kib = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
            let dir = base.join(&name);
            let total = read_count(&dir.join("nr_hugepages")).unwrap_or(0);
            let free = read_count(&dir.join("free_hugepages")).unwrap_or(0);
            Some((kib, total, free))
        })
        .collect()
}

/// A size in KiB as people write it (`2M`, `1G`).
pub fn size_label(kib: u64) -> String {
    if kib.is_multiple_of(1024 * 1024) {
        format!("{}G", kib / (1024 * 1024))
    } else if kib.is_multiple_of(1024) {
        format!("{}M", kib / 1024)
    } else {
        format!("{kib}k")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hugetlbfs_mounts() {
        let text = "\
sysfs /sys sysfs rw,nosuid 0 0
hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0
none /mnt/huge\\0401g hugetlbfs rw,pagesize=1024M 0 0
nodev /mnt/plain hugetlbfs rw 0 0
";
        let m = parse_mounts(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].pagesize_kib, Some(2048));
        assert_eq!(m[1].target, PathBuf::from("/mnt/huge 1g"));
        assert_eq!(m[1].pagesize_kib, Some(1024 * 1024));
        assert_eq!(m[2].pagesize_kib, None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_kib("2M"), Some(2048));
        assert_eq!(parse_size_kib("1G"), Some(1 << 20));
        assert_eq!(parse_size_kib("2048k"), Some(2048));
        assert_eq!(parse_size_kib("2097152"), Some(2048));
        assert_eq!(parse_size_kib("2X"), None);
        assert_eq!(size_label(2048), "2M");
        assert_eq!(size_label(1 << 20), "1G");
        assert_eq!(PageSize::Size1G.dir_name(), "hugepages-1048576kB");
    }
}
