//! `apply -c FILE`: parsing (unknown fields named by path) and the combined plan.

mod common;

use common::{steps, Fixture, Nic};
use nic_config::apply_file::{self, DeviceEntry};
use nic_config::bind::Driver;
use nic_config::hugepages::{PageSize, Request};

const GOOD: &str = "\
hugepages: {size: 2M, count: 1024, node: 0}
devices:
  - {device: 0000:00:04.0, driver: vfio-pci}
  - device: ens5
    driver: vfio-pci
force: false
";

#[test]
fn parses_a_good_file() {
    let file = apply_file::parse(GOOD).unwrap();
    assert_eq!(
        file.hugepages,
        Some(Request { size: PageSize::Size2M, count: 1024, node: Some(0) })
    );
    assert_eq!(
        file.devices,
        [
            DeviceEntry { device: "0000:00:04.0".into(), driver: Driver::VfioPci },
            DeviceEntry { device: "ens5".into(), driver: Driver::VfioPci },
        ]
    );
    assert!(!file.force);
    // Everything is optional.
    assert!(apply_file::parse("devices: []\n").unwrap().hugepages.is_none());
}

#[test]
fn a_good_file_plans_hugepages_then_devices() {
    let f = Fixture::new();
    f.vfio_loaded();
    f.nic(Nic::default());
    f.nic(Nic {
        addr: "0000:00:05.0",
        iface: Some("ens5"),
        iommu_group: Some(13),
        ..Nic::default()
    });
    let file = apply_file::parse(GOOD).unwrap();
    let plan = apply_file::plan(&f.host, &file).unwrap();
    let s = steps(&f, &plan);
    assert_eq!(
        s[0],
        "write \"1024\" to /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"
    );
    assert!(s[1].starts_with("mkdir -p ") && s[2].starts_with("mount -t hugetlbfs"), "{s:#?}");
    let overrides: Vec<&String> = s.iter().filter(|s| s.ends_with("driver_override")).collect();
    assert_eq!(
        overrides,
        [
            "write \"vfio-pci\" to /sys/bus/pci/devices/0000:00:04.0/driver_override",
            "write \"vfio-pci\" to /sys/bus/pci/devices/0000:00:05.0/driver_override",
        ]
    );
    assert_eq!(s.len(), 3 + 2 * 4, "{s:#?}");
}

#[test]
fn force_in_the_file_overrides_the_refusal() {
    let f = Fixture::new();
    f.nic(Nic::default());
    f.ipv4("ens4", "198.18.0.2", 24);
    let text = "devices: [{device: ens4, driver: uio_pci_generic}]\n";
    let err = apply_file::plan(&f.host, &apply_file::parse(text).unwrap()).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    let forced = apply_file::parse(&format!("{text}force: true\n")).unwrap();
    assert!(apply_file::plan(&f.host, &forced).is_ok());
}

#[test]
fn unknown_fields_are_named_by_path() {
    let err = apply_file::parse("devices:\n  - {device: 00:04.0, drvier: vfio-pci}\n").unwrap_err();
    assert_eq!(err.path, "devices[0].drvier");
    assert!(
        err.message.starts_with("unknown field `drvier`, expected one of device, driver"),
        "{err}"
    );
    assert!(err.to_string().starts_with("devices[0].drvier: unknown field `drvier`"), "{err}");
    assert!(err.message.contains("line 2"), "{err}");

    let err = apply_file::parse("hugepages: {size: 2M, count: 8, nodes: 1}\n").unwrap_err();
    assert_eq!(err.path, "hugepages.nodes");
    assert!(err.message.contains("unknown field `nodes`"), "{err}");

    let err = apply_file::parse("hugepage: {size: 2M, count: 8}\n").unwrap_err();
    assert!(err.to_string().starts_with("hugepage: unknown field `hugepage`"), "{err}");
}

#[test]
fn bad_values_are_named_by_path() {
    let err = apply_file::parse("devices: [{device: ens4, driver: e1000}]\n").unwrap_err();
    assert_eq!(err.path, "devices[0].driver");
    assert!(err.message.contains("unknown variant `e1000`"), "{err}");
    let err = apply_file::parse("hugepages: {size: 4M, count: 8}\n").unwrap_err();
    assert_eq!(err.path, "hugepages.size");
    let err = apply_file::parse("hugepages: {size: 2M, count: -1}\n").unwrap_err();
    assert_eq!(err.path, "hugepages.count");
}
