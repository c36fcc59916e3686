//! Fixture host trees: sysfs, procfs and /dev laid out as the kernel shows them, in a temporary
//! directory, with PCI NICs, drivers, IOMMU groups, addresses, routes and mounts added on
//! demand.
// Each test crate uses a different part of the builder.
#![allow(dead_code)]

use nic_config::kernel_use::proc_ipv4_hex;
use nic_config::Host;
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A fixture host.
pub struct Fixture {
    dir: TempDir,
    /// Roots under the temporary directory.
    pub host: Host,
}

/// A PCI NIC to add.
#[derive(Debug, Clone)]
pub struct Nic {
    pub addr: &'static str,
    pub vendor: u16,
    pub device: u16,
    pub class: u32,
    pub driver: Option<&'static str>,
    pub iface: Option<&'static str>,
    pub iommu_group: Option<u32>,
    /// -1 as on single-node hosts.
    pub numa_node: i32,
    pub operstate: &'static str,
    /// Put the interface under `virtio0/net/` as virtio-pci does.
    pub virtio: bool,
}

impl Default for Nic {
    fn default() -> Self {
        Self {
            addr: "0000:00:04.0",
            vendor: 0x8086,
            device: 0x1572,
            class: 0x020000,
            driver: Some("i40e"),
            iface: Some("ens4"),
            iommu_group: Some(12),
            numa_node: 0,
            operstate: "up",
            virtio: false,
        }
    }
}

const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\n\
flags\t\t: fpu vme pae sse sse2 ssse3 sse4_1 sse4_2 avx avx2 pdpe1gb\n\n";

impl Fixture {
    /// An empty host: no PCI devices, no IOMMU groups, no hugepages, an x86 CPU with SSE4.2,
    /// one NUMA node, nothing mounted but the usual file systems.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = Host::under(dir.path());
        let f = Self { dir, host };
        for d in [
            "sys/bus/pci/devices",
            "sys/bus/pci/drivers",
            "sys/devices/pci0000:00",
            "sys/kernel/iommu_groups",
            "sys/module",
            "proc/net",
            "dev",
        ] {
            fs::create_dir_all(f.path(d)).unwrap();
        }
        f.write("sys/bus/pci/drivers_probe", "");
        for size in ["hugepages-2048kB", "hugepages-1048576kB"] {
            for base in ["sys/kernel/mm/hugepages", "sys/devices/system/node/node0/hugepages"] {
                f.write(&format!("{base}/{size}/nr_hugepages"), "0\n");
                f.write(&format!("{base}/{size}/free_hugepages"), "0\n");
            }
        }
        f.write("proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n");
        f.write("proc/cpuinfo", CPUINFO);
        f.write("proc/meminfo", "MemTotal:       16384000 kB\nHugepagesize:       2048 kB\n");
        f.write("proc/modules", "");
        f.write(
            "proc/mounts",
            "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n\
             proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n",
        );
        f.write(
            "proc/net/route",
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
        );
        f.write("proc/net/fib_trie", "Main:\n  +-- 0.0.0.0/0 3 0 5\n");
        f.write("proc/net/if_inet6", "");
        f.write("proc/net/ipv6_route", "");
        f
    }

    /// The fixture's root directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path below the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file, creating its directories.
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// Appends to a file.
    pub fn append(&self, rel: &str, content: &str) {
        let mut text = fs::read_to_string(self.path(rel)).unwrap_or_default();
        text.push_str(content);
        self.write(rel, &text);
    }

    /// A file's contents.
    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// A registered PCI driver with its bind/unbind attributes.
    pub fn driver(&self, name: &str) {
        for attr in ["bind", "unbind", "new_id", "remove_id"] {
            let rel = format!("sys/bus/pci/drivers/{name}/{attr}");
            if !self.path(&rel).exists() {
                self.write(&rel, "");
            }
        }
    }

    /// A loaded module: listed in /proc/modules and present under /sys/module.
    pub fn module(&self, name: &str) {
        self.append("proc/modules", &format!("{name} 16384 0 - Live 0x0000000000000000\n"));
        fs::create_dir_all(self.path(&format!("sys/module/{name}"))).unwrap();
    }

    /// vfio and vfio-pci loaded, with the no-IOMMU parameter (off).
    pub fn vfio_loaded(&self) {
        self.module("vfio");
        self.module("vfio_pci");
        self.driver("vfio-pci");
        self.write("sys/module/vfio/parameters/enable_unsafe_noiommu_mode", "N\n");
    }

    fn device_rel(addr: &str) -> String {
        format!("sys/devices/pci{}/{addr}", &addr[..7])
    }

    /// Adds a PCI device the way sysfs lays it out: the device directory under
    /// /sys/devices, a /sys/bus/pci/devices link to it, and `driver` and `iommu_group` links
    /// with the kernel's relative targets.
    pub fn nic(&self, nic: Nic) {
        let dev = Self::device_rel(nic.addr);
        self.write(&format!("{dev}/vendor"), &format!("0x{:04x}\n", nic.vendor));
        self.write(&format!("{dev}/device"), &format!("0x{:04x}\n", nic.device));
        self.write(&format!("{dev}/class"), &format!("0x{:06x}\n", nic.class));
        self.write(&format!("{dev}/numa_node"), &format!("{}\n", nic.numa_node));
        self.write(&format!("{dev}/driver_override"), "(null)\n");
        symlink(
            format!("../../../devices/pci{}/{}", &nic.addr[..7], nic.addr),
            self.path(&format!("sys/bus/pci/devices/{}", nic.addr)),
        )
        .unwrap();
        if let Some(driver) = nic.driver {
            self.bind_link(nic.addr, driver);
        }
        if let Some(group) = nic.iommu_group {
            fs::create_dir_all(self.path(&format!("sys/kernel/iommu_groups/{group}/devices")))
                .unwrap();
            symlink(
                format!("../../../../devices/pci{}/{}", &nic.addr[..7], nic.addr),
                self.path(&format!("sys/kernel/iommu_groups/{group}/devices/{}", nic.addr)),
            )
            .unwrap();
            symlink(
                format!("../../../kernel/iommu_groups/{group}"),
                self.path(&format!("{dev}/iommu_group")),
            )
            .unwrap();
        }
        if let Some(iface) = nic.iface {
            let parent = if nic.virtio { format!("{dev}/virtio0") } else { dev.clone() };
            self.write(&format!("{parent}/net/{iface}/operstate"), &format!("{}\n", nic.operstate));
        }
    }

    /// Points a device's `driver` link at a driver (as a successful probe would).
    pub fn bind_link(&self, addr: &str, driver: &str) {
        self.driver(driver);
        let link = self.path(&format!("{}/driver", Self::device_rel(addr)));
        let _ = fs::remove_file(&link);
        symlink(format!("../../../bus/pci/drivers/{driver}"), link).unwrap();
    }

    /// Sets a device's driver_override attribute as the kernel shows it.
    pub fn set_override(&self, addr: &str, value: &str) {
        self.write(&format!("{}/driver_override", Self::device_rel(addr)), &format!("{value}\n"));
    }

    /// The device's driver_override file, as written.
    pub fn override_of(&self, addr: &str) -> String {
        self.read(&format!("{}/driver_override", Self::device_rel(addr)))
    }

    /// An IPv4 address with its connected route, as fib_trie and /proc/net/route show them.
    pub fn ipv4(&self, iface: &str, addr: &str, prefix_len: u8) {
        let a: Ipv4Addr = addr.parse().unwrap();
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
        let net = Ipv4Addr::from(u32::from(a) & mask);
        self.append(
            "proc/net/route",
            &format!(
                "{iface}\t{}\t00000000\t0001\t0\t0\t0\t{}\t0\t0\t0\n",
                proc_ipv4_hex(net),
                proc_ipv4_hex(Ipv4Addr::from(mask))
            ),
        );
        self.append(
            "proc/net/fib_trie",
            &format!(
                "     +-- {net}/{prefix_len} 2 0 2\n        |-- {net}\n           \
                 /{prefix_len} link UNICAST\n        |-- {a}\n           /32 host LOCAL\n"
            ),
        );
    }

    /// An IPv4 default route.
    pub fn default_v4(&self, iface: &str, gateway: &str) {
        let gw: Ipv4Addr = gateway.parse().unwrap();
        self.append(
            "proc/net/route",
            &format!(
                "{iface}\t00000000\t{}\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
                proc_ipv4_hex(gw)
            ),
        );
    }

    /// An IPv4 route through a gateway.
    pub fn route_v4(&self, iface: &str, dest: &str, prefix_len: u8, gateway: &str) {
        let d: Ipv4Addr = dest.parse().unwrap();
        let gw: Ipv4Addr = gateway.parse().unwrap();
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
        self.append(
            "proc/net/route",
            &format!(
                "{iface}\t{}\t{}\t0003\t0\t0\t0\t{}\t0\t0\t0\n",
                proc_ipv4_hex(d),
                proc_ipv4_hex(gw),
                proc_ipv4_hex(Ipv4Addr::from(mask))
            ),
        );
    }

    /// An IPv6 address (scope from the address: link-local or global), with the routes the
    /// kernel adds for it (its local /128 entry, and the prefix route for global ones).
    pub fn ipv6(&self, iface: &str, addr: &str, prefix_len: u8) {
        let a: Ipv6Addr = addr.parse().unwrap();
        let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
        let scope = if link_local { 0x20 } else { 0 };
        self.append(
            "proc/net/if_inet6",
            &format!("{:032x} 02 {prefix_len:02x} {scope:02x} 80 {iface:>8}\n", u128::from(a)),
        );
        let zero = format!("{:032x}", 0u128);
        self.append(
            "proc/net/ipv6_route",
            &format!(
                "{:032x} 80 {zero} 00 {zero} 00000000 00000002 00000000 80200001 {iface:>8}\n",
                u128::from(a)
            ),
        );
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix_len)).unwrap_or(0);
        let net = if link_local { 0xfe80u128 << 112 } else { u128::from(a) & mask };
        let plen = if link_local { 64 } else { prefix_len };
        self.append(
            "proc/net/ipv6_route",
            &format!("{net:032x} {plen:02x} {zero} 00 {zero} 00000100 00000001 00000000 00000001 {iface:>8}\n"),
        );
    }

    /// An IPv6 default route through a gateway.
    pub fn default_v6(&self, iface: &str, gateway: &str) {
        let gw: Ipv6Addr = gateway.parse().unwrap();
        let zero = format!("{:032x}", 0u128);
        self.append(
            "proc/net/ipv6_route",
            &format!(
                "{zero} 00 {zero} 00 {:032x} 00000400 00000002 00000000 00000003 {iface:>8}\n",
                u128::from(gw)
            ),
        );
    }

    /// A hugetlbfs mount at `target` (below the fixture's /dev) for pages of `pagesize`.
    pub fn mount_hugetlbfs(&self, target: &str, pagesize: &str) {
        let path = self.host.dev.join(target);
        fs::create_dir_all(&path).unwrap();
        self.append(
            "proc/mounts",
            &format!(
                "hugetlbfs {} hugetlbfs rw,relatime,pagesize={pagesize} 0 0\n",
                path.display()
            ),
        );
    }

    /// Reserved (and free) hugepages on the whole host.
    pub fn reserve(&self, size_kib: u64, count: u64) {
        let base = format!("sys/kernel/mm/hugepages/hugepages-{size_kib}kB");
        self.write(&format!("{base}/nr_hugepages"), &format!("{count}\n"));
        self.write(&format!("{base}/free_hugepages"), &format!("{count}\n"));
    }

    /// The CPU's flags.
    pub fn cpu_flags(&self, flags: &str) {
        self.write(
            "proc/cpuinfo",
            &format!("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: {flags}\n\n"),
        );
    }

    /// The kernel command line.
    pub fn cmdline(&self, line: &str) {
        self.write("proc/cmdline", &format!("{line}\n"));
    }

    /// A host ready for vfio-pci: IOMMU on, vfio loaded, 1024 2M pages, hugetlbfs mounted.
    pub fn ready_host(&self) {
        self.cmdline("BOOT_IMAGE=/vmlinuz ro intel_iommu=on iommu=pt");
        fs::create_dir_all(self.path("sys/kernel/iommu_groups/0/devices")).unwrap();
        self.vfio_loaded();
        self.reserve(2048, 1024);
        self.mount_hugetlbfs("hugepages", "2M");
    }
}

/// A sysfs path of the fixture's device, as plans name it.
pub fn dev_attr(f: &Fixture, addr: &str, attr: &str) -> PathBuf {
    f.host.sys("bus/pci/devices").join(addr).join(attr)
}

/// The plan's steps as text, with the fixture root cut off the paths so they read as on a
/// real host (`write "vfio-pci" to /sys/bus/pci/devices/0000:00:04.0/driver_override`).
pub fn steps(f: &Fixture, plan: &nic_config::plan::Plan) -> Vec<String> {
    let root = f.root().display().to_string();
    plan.steps.iter().map(|s| s.to_string().replace(&root, "")).collect()
}

/// The plan's warnings.
pub fn warnings(plan: &nic_config::plan::Plan) -> Vec<String> {
    plan.warnings().map(str::to_owned).collect()
}

/// The plan's informational notes.
pub fn infos(plan: &nic_config::plan::Plan) -> Vec<String> {
    plan.notes
        .iter()
        .filter_map(|n| match n {
            nic_config::plan::Note::Info(s) => Some(s.clone()),
            nic_config::plan::Note::Warning(_) => None,
        })
        .collect()
}
