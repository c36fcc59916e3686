//! `status` against fixture hosts: every field, and kernel use.

mod common;

use common::{Fixture, Nic};
use nic_config::state::{Entry, State};
use nic_config::status;

#[test]
fn lists_network_devices_with_every_field() {
    let f = Fixture::new();
    f.nic(Nic { numa_node: 1, ..Nic::default() });
    f.nic(Nic {
        addr: "0000:00:05.0",
        vendor: 0x1af4,
        device: 0x1041,
        driver: Some("virtio-pci"),
        iface: Some("eth1"),
        iommu_group: None,
        numa_node: -1,
        operstate: "down",
        virtio: true,
        ..Nic::default()
    });
    // Not a network controller (an NVMe drive): left out.
    f.nic(Nic {
        addr: "0000:00:06.0",
        class: 0x010802,
        driver: Some("nvme"),
        iface: None,
        ..Nic::default()
    });

    let devices = status::collect(&f.host).unwrap();
    assert_eq!(devices.len(), 2);
    let intel = &devices[0];
    assert_eq!(intel.address.to_string(), "0000:00:04.0");
    assert_eq!(intel.ids, "8086:1572");
    assert_eq!(intel.name.as_deref(), Some("Intel"));
    assert_eq!(intel.driver.as_deref(), Some("i40e"));
    assert_eq!(intel.iommu_group, Some(12));
    assert_eq!(intel.numa_node, Some(1));
    assert_eq!(intel.interfaces.len(), 1);
    assert_eq!(intel.interfaces[0].name, "ens4");
    assert_eq!(intel.interfaces[0].link.as_deref(), Some("up"));
    assert!(!intel.recorded);
    assert!(!intel.in_use());

    let virtio = &devices[1];
    assert_eq!(virtio.name.as_deref(), Some("virtio-net"));
    assert_eq!(virtio.driver.as_deref(), Some("virtio-pci"));
    assert_eq!(virtio.iommu_group, None);
    assert_eq!(virtio.numa_node, None);
    assert_eq!(virtio.interfaces[0].name, "eth1");
    assert_eq!(virtio.interfaces[0].link.as_deref(), Some("down"));

    let table = status::render_table(&devices);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ADDRESS"), "{table}");
    assert!(lines[1].contains("0000:00:04.0") && lines[1].contains("ens4"), "{table}");
    assert!(lines[2].contains("virtio-pci") && lines[2].contains("down"), "{table}");
}

#[test]
fn detects_addresses_and_the_default_route() {
    let f = Fixture::new();
    f.nic(Nic::default());
    f.nic(Nic {
        addr: "0000:00:05.0",
        iface: Some("ens5"),
        iommu_group: Some(13),
        ..Nic::default()
    });
    f.ipv4("ens4", "198.18.0.2", 24);
    f.default_v4("ens4", "198.18.0.1");
    f.ipv6("ens4", "fe80::1", 64);
    // ens5: only a link-local address, which every interface that is up has.
    f.ipv6("ens5", "fe80::2", 64);

    let devices = status::collect(&f.host).unwrap();
    let used = &devices[0].interfaces[0];
    assert!(used.in_use);
    assert!(used.kernel_use.default_route);
    let addrs: Vec<String> = used.kernel_use.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(addrs, ["198.18.0.2/24"]);
    assert_eq!(used.kernel_use.link_local.len(), 1);
    assert!(devices[0].default_route());

    let free = &devices[1].interfaces[0];
    assert!(!free.in_use, "{free:?}");
    assert_eq!(free.kernel_use.link_local.len(), 1);

    let table = status::render_table(&devices);
    assert!(table.contains("default route via 198.18.0.1; addresses 198.18.0.2/24"), "{table}");
}

#[test]
fn ipv6_address_and_default_route_count_as_use() {
    let f = Fixture::new();
    f.nic(Nic::default());
    f.ipv6("ens4", "2001:db8::2", 64);
    f.default_v6("ens4", "2001:db8::1");
    let devices = status::collect(&f.host).unwrap();
    let u = &devices[0].interfaces[0].kernel_use;
    assert!(u.default_route);
    assert_eq!(u.describe(), "default route via 2001:db8::1; addresses 2001:db8::2/64");
}

#[test]
fn shows_the_original_driver_from_the_state_file() {
    let f = Fixture::new();
    f.nic(Nic { driver: Some("vfio-pci"), iface: None, ..Nic::default() });
    let mut state = State::default();
    state
        .devices
        .insert("0000:00:04.0".parse().unwrap(), Entry { original_driver: Some("i40e".into()) });
    state.save(&f.host.state_file).unwrap();

    let devices = status::collect(&f.host).unwrap();
    assert!(devices[0].recorded);
    assert_eq!(devices[0].original_driver.as_deref(), Some("i40e"));
    assert_eq!(devices[0].driver.as_deref(), Some("vfio-pci"));
    let json = serde_json::to_value(&devices).unwrap();
    assert_eq!(json[0]["original_driver"], "i40e");
    assert_eq!(json[0]["address"], "0000:00:04.0");
    assert_eq!(json[0]["iommu_group"], 12);
}

#[test]
fn an_empty_host_has_no_devices() {
    let f = Fixture::new();
    let devices = status::collect(&f.host).unwrap();
    assert!(devices.is_empty());
    assert_eq!(status::render_table(&devices), "no PCI network devices\n");
}
