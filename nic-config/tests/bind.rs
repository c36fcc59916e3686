//! `bind`, `unbind` and `restore`: plans against fixture hosts, and plans applied to them.

mod common;

use common::{infos, steps, warnings, Fixture, Nic};
use nic_config::bind::{plan_bind, plan_restore, plan_unbind, Driver};
use nic_config::plan::{apply, Plan, RecordingRunner, Step};
use nic_config::state::State;
use nic_config::Error;

const ADDR: &str = "0000:00:04.0";

fn bind(f: &Fixture, dev: &str, driver: Driver, force: bool) -> nic_config::Result<Plan> {
    plan_bind(&f.host, &[(dev.to_owned(), driver)], force)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn run(plan: &Plan) -> RecordingRunner {
    let mut runner = RecordingRunner::default();
    apply(plan, &mut runner, |_, _, _| {}).unwrap();
    runner
}

#[test]
fn vfio_pci_with_an_iommu() {
    let f = Fixture::new();
    f.nic(Nic::default());
    let plan = bind(&f, ADDR, Driver::VfioPci, false).unwrap();
    assert_eq!(
        steps(&f, &plan),
        [
            "modprobe vfio-pci",
            "record 0000:00:04.0's original driver (i40e) in /run/nic-config/state.json",
            "write \"0000:00:04.0\" to /sys/bus/pci/devices/0000:00:04.0/driver/unbind",
            "write \"vfio-pci\" to /sys/bus/pci/devices/0000:00:04.0/driver_override",
            "write \"0000:00:04.0\" to /sys/bus/pci/drivers_probe",
        ]
    );
    assert!(warnings(&plan).is_empty(), "{:?}", plan.notes);
}

#[test]
fn loaded_modules_are_not_loaded_again() {
    let f = Fixture::new();
    f.vfio_loaded();
    f.nic(Nic::default());
    f.nic(Nic {
        addr: "0000:00:05.0",
        iface: Some("ens5"),
        iommu_group: Some(13),
        ..Nic::default()
    });
    let plan = plan_bind(
        &f.host,
        &[(ADDR.into(), Driver::VfioPci), ("ens5".into(), Driver::VfioPci)],
        false,
    )
    .unwrap();
    let s = steps(&f, &plan);
    assert!(!s.iter().any(|s| s.starts_with("modprobe")), "{s:#?}");
    assert_eq!(s.iter().filter(|s| s.ends_with("driver_override")).count(), 2);
}

#[test]
fn one_modprobe_for_several_devices() {
    let f = Fixture::new();
    f.nic(Nic::default());
    f.nic(Nic {
        addr: "0000:00:05.0",
        iface: Some("ens5"),
        iommu_group: Some(13),
        ..Nic::default()
    });
    let plan = plan_bind(
        &f.host,
        &[(ADDR.into(), Driver::UioPciGeneric), ("00:05.0".into(), Driver::UioPciGeneric)],
        false,
    )
    .unwrap();
    let s = steps(&f, &plan);
    assert_eq!(s.iter().filter(|s| s.starts_with("modprobe")).count(), 1, "{s:#?}");
    assert_eq!(s[0], "modprobe uio_pci_generic");
}

#[test]
fn vfio_pci_without_an_iommu_enables_no_iommu_mode_loudly() {
    let f = Fixture::new();
    f.nic(Nic { iommu_group: None, ..Nic::default() });
    let plan = bind(&f, ADDR, Driver::VfioPci, false).unwrap();
    let s = steps(&f, &plan);
    assert_eq!(s[0], "modprobe vfio-pci");
    // After the modprobe (the parameter exists once vfio is loaded), before the probe.
    assert_eq!(s[1], "write \"Y\" to /sys/module/vfio/parameters/enable_unsafe_noiommu_mode");
    assert!(s[4].ends_with("driver_override"), "{s:#?}");
    let w = warnings(&plan);
    assert!(w.iter().any(|w| w.contains("UNSAFE no-IOMMU mode")), "{w:#?}");
    assert!(w.iter().any(|w| w.contains("0000:00:04.0 has no IOMMU group")), "{w:#?}");
}

#[test]
fn no_iommu_mode_already_on_is_not_written_again() {
    let f = Fixture::new();
    f.vfio_loaded();
    f.write("sys/module/vfio/parameters/enable_unsafe_noiommu_mode", "Y\n");
    f.nic(Nic { iommu_group: None, ..Nic::default() });
    let plan = bind(&f, ADDR, Driver::VfioPci, false).unwrap();
    assert!(!steps(&f, &plan).iter().any(|s| s.contains("noiommu")));
    assert!(warnings(&plan).iter().any(|w| w.contains("UNSAFE")));
}

#[test]
fn vfio_without_no_iommu_support_is_an_error() {
    let f = Fixture::new();
    f.vfio_loaded();
    std::fs::remove_file(f.path("sys/module/vfio/parameters/enable_unsafe_noiommu_mode")).unwrap();
    f.nic(Nic { iommu_group: None, ..Nic::default() });
    let err = bind(&f, ADDR, Driver::VfioPci, false).unwrap_err();
    assert!(matches!(err, Error::NoIommuUnsupported { .. }), "{err}");
    assert!(err.to_string().contains("uio_pci_generic"), "{err}");
}

#[test]
fn uio_pci_generic_needs_no_iommu() {
    let f = Fixture::new();
    f.nic(Nic { iommu_group: None, ..Nic::default() });
    let plan = bind(&f, "ens4", Driver::UioPciGeneric, false).unwrap();
    assert_eq!(
        steps(&f, &plan),
        [
            "modprobe uio_pci_generic",
            "record 0000:00:04.0's original driver (i40e) in /run/nic-config/state.json",
            "write \"0000:00:04.0\" to /sys/bus/pci/devices/0000:00:04.0/driver/unbind",
            "write \"uio_pci_generic\" to /sys/bus/pci/devices/0000:00:04.0/driver_override",
            "write \"0000:00:04.0\" to /sys/bus/pci/drivers_probe",
        ]
    );
    assert!(warnings(&plan).is_empty());
}

#[test]
fn igb_uio_says_where_the_module_comes_from() {
    let f = Fixture::new();
    f.nic(Nic::default());
    let plan = bind(&f, ADDR, Driver::IgbUio, false).unwrap();
    assert_eq!(steps(&f, &plan)[0], "modprobe igb_uio");
    assert!(infos(&plan).iter().any(|i| i.contains("dpdk-kmods")));
}

#[test]
fn refuses_the_interface_with_the_default_route() {
    let f = Fixture::new();
    f.nic(Nic::default());
    f.ipv4("ens4", "198.18.0.2", 24);
    f.default_v4("ens4", "198.18.0.1");
    let err = bind(&f, "ens4", Driver::VfioPci, false).unwrap_err();
    let Error::InUse { ref iface, ref what, .. } = err else { panic!("{err}") };
    assert_eq!(iface, "ens4");
    assert!(what.contains("default route via 198.18.0.1"), "{what}");
    let msg = err.to_string();
    assert!(msg.contains("0000:00:04.0 (ens4)") && msg.contains("--force"), "{msg}");
}

#[test]
fn refuses_an_interface_with_an_address() {
    let f = Fixture::new();
    f.nic(Nic::default());
    f.ipv6("ens4", "2001:db8:1::2", 64);
    let err = bind(&f, ADDR, Driver::VfioPci, false).unwrap_err();
    assert!(err.to_string().contains("addresses 2001:db8:1::2/64"), "{err}");
}

#[test]
fn refuses_an_interface_with_a_route() {
    let f = Fixture::new();
    f.nic(Nic::default());
    f.route_v4("ens4", "198.19.0.0", 16, "198.18.0.1");
    let err = bind(&f, ADDR, Driver::VfioPci, false).unwrap_err();
    assert!(err.to_string().contains("routes 198.19.0.0/16 via 198.18.0.1"), "{err}");
}

#[test]
fn a_link_local_address_alone_is_not_use() {
    let f = Fixture::new();
    f.nic(Nic::default());
    f.ipv6("ens4", "fe80::1", 64);
    assert!(bind(&f, ADDR, Driver::VfioPci, false).is_ok());
}

#[test]
fn force_overrides_the_refusal_with_a_warning() {
    let f = Fixture::new();
    f.nic(Nic::default());
    f.ipv4("ens4", "198.18.0.2", 24);
    f.default_v4("ens4", "198.18.0.1");
    let plan = bind(&f, "ens4", Driver::VfioPci, true).unwrap();
    assert!(steps(&f, &plan).iter().any(|s| s.ends_with("driver_override")));
    let w = warnings(&plan);
    assert!(w[0].starts_with("--force: rebinding 0000:00:04.0 (ens4)"), "{w:#?}");
    assert!(w[0].contains("default route via 198.18.0.1"), "{w:#?}");
}

#[test]
fn already_bound_is_nothing_to_do() {
    let f = Fixture::new();
    f.nic(Nic { driver: Some("vfio-pci"), iface: None, ..Nic::default() });
    let plan = bind(&f, "00:04.0", Driver::VfioPci, false).unwrap();
    assert!(plan.steps.is_empty());
    assert_eq!(plan.render(), "nothing to do\n");
    assert_eq!(infos(&plan), ["0000:00:04.0 is already bound to vfio-pci: nothing to do"]);
}

#[test]
fn unknown_devices_are_named() {
    let f = Fixture::new();
    f.nic(Nic::default());
    let err = bind(&f, "eth9", Driver::VfioPci, false).unwrap_err();
    assert!(err.to_string().starts_with("`eth9` is neither a PCI address"), "{err}");
    let err = bind(&f, "0000:00:09.0", Driver::VfioPci, false).unwrap_err();
    assert!(err.to_string().starts_with("no PCI device 0000:00:09.0"), "{err}");
}

#[test]
fn warns_about_iommu_group_members_on_other_drivers() {
    let f = Fixture::new();
    f.nic(Nic::default());
    f.nic(Nic { addr: "0000:00:04.1", iface: Some("ens4f1"), ..Nic::default() });
    let plan = bind(&f, ADDR, Driver::VfioPci, false).unwrap();
    let w = warnings(&plan);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(w[0].starts_with("IOMMU group 12 also holds 0000:00:04.1 (bound to i40e)"), "{w:#?}");
    // Binding both clears it.
    let plan = plan_bind(
        &f.host,
        &[(ADDR.into(), Driver::VfioPci), ("0000:00:04.1".into(), Driver::VfioPci)],
        false,
    )
    .unwrap();
    assert!(warnings(&plan).is_empty(), "{:?}", plan.notes);
}

#[test]
fn applying_a_bind_writes_the_attributes_and_records_the_original_driver() {
    let f = Fixture::new();
    f.nic(Nic::default());
    let plan = bind(&f, ADDR, Driver::VfioPci, false).unwrap();
    let runner = run(&plan);
    assert_eq!(runner.commands, ["modprobe vfio-pci"]);
    // The unbind goes through the `driver` link to the driver's own attribute.
    assert_eq!(f.read("sys/bus/pci/drivers/i40e/unbind"), ADDR);
    assert_eq!(f.override_of(ADDR), "vfio-pci");
    assert_eq!(f.read("sys/bus/pci/drivers_probe"), ADDR);
    let state = State::load(&f.host.state_file).unwrap();
    assert_eq!(state.original_driver(&ADDR.parse().unwrap()), Some(Some("i40e")));
    let json = f.read("run/nic-config/state.json");
    assert!(json.contains("\"0000:00:04.0\"") && json.contains("\"original_driver\": \"i40e\""));
}

#[test]
fn rebinding_keeps_the_first_original_driver() {
    let f = Fixture::new();
    f.nic(Nic::default());
    run(&bind(&f, ADDR, Driver::VfioPci, false).unwrap());
    // What the kernel would have done on drivers_probe.
    f.bind_link(ADDR, "vfio-pci");
    f.set_override(ADDR, "vfio-pci");

    let plan = bind(&f, ADDR, Driver::UioPciGeneric, false).unwrap();
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::Remember { .. })), "{plan:#?}");
    run(&plan);
    assert_eq!(f.read("sys/bus/pci/drivers/vfio-pci/unbind"), ADDR);
    assert_eq!(f.override_of(ADDR), "uio_pci_generic");
    let state = State::load(&f.host.state_file).unwrap();
    assert_eq!(state.original_driver(&ADDR.parse().unwrap()), Some(Some("i40e")));
}

#[test]
fn a_device_without_a_driver_is_recorded_as_such() {
    let f = Fixture::new();
    f.nic(Nic { driver: None, iface: None, ..Nic::default() });
    let plan = bind(&f, ADDR, Driver::VfioPci, false).unwrap();
    let s = steps(&f, &plan);
    assert!(s.contains(
        &"record 0000:00:04.0's original driver (none) in /run/nic-config/state.json".to_owned()
    ));
    assert!(!s.iter().any(|s| s.ends_with("unbind")), "{s:#?}");
    run(&plan);
    let state = State::load(&f.host.state_file).unwrap();
    assert_eq!(state.original_driver(&ADDR.parse().unwrap()), Some(None));
}

#[test]
fn unbind_plans_unbind_and_clears_the_override() {
    let f = Fixture::new();
    f.nic(Nic { driver: Some("vfio-pci"), iface: None, ..Nic::default() });
    f.set_override(ADDR, "vfio-pci");
    let plan = plan_unbind(&f.host, &args(&[ADDR]), false).unwrap();
    assert_eq!(
        steps(&f, &plan),
        [
            "record 0000:00:04.0's original driver (vfio-pci) in /run/nic-config/state.json",
            "write \"0000:00:04.0\" to /sys/bus/pci/devices/0000:00:04.0/driver/unbind",
            "write \"\\n\" to /sys/bus/pci/devices/0000:00:04.0/driver_override",
        ]
    );
    run(&plan);
    assert_eq!(f.read("sys/bus/pci/drivers/vfio-pci/unbind"), ADDR);
    assert_eq!(f.override_of(ADDR), "\n");
}

#[test]
fn unbind_refuses_a_used_interface_and_skips_an_unbound_device() {
    let f = Fixture::new();
    f.nic(Nic::default());
    f.ipv4("ens4", "198.18.0.2", 24);
    let err = plan_unbind(&f.host, &args(&["ens4"]), false).unwrap_err();
    assert!(err.to_string().starts_with("refusing to unbind 0000:00:04.0 (ens4)"), "{err}");
    assert!(plan_unbind(&f.host, &args(&["ens4"]), true).is_ok());

    let g = Fixture::new();
    g.nic(Nic { driver: None, iface: None, ..Nic::default() });
    let plan = plan_unbind(&g.host, &args(&[ADDR]), false).unwrap();
    assert!(plan.steps.is_empty());
    assert_eq!(infos(&plan), ["0000:00:04.0 is bound to no driver: nothing to do"]);
}

/// A device nic-config moved from i40e to vfio-pci, as the kernel leaves it.
fn rebound_fixture() -> Fixture {
    let f = Fixture::new();
    f.nic(Nic::default());
    run(&bind(&f, ADDR, Driver::VfioPci, false).unwrap());
    f.bind_link(ADDR, "vfio-pci");
    f.set_override(ADDR, "vfio-pci");
    f
}

#[test]
fn restore_binds_the_recorded_driver_and_forgets_the_device() {
    let f = rebound_fixture();
    let plan = plan_restore(&f.host, &args(&[ADDR])).unwrap();
    assert_eq!(
        steps(&f, &plan),
        [
            "write \"0000:00:04.0\" to /sys/bus/pci/devices/0000:00:04.0/driver/unbind",
            "write \"\\n\" to /sys/bus/pci/devices/0000:00:04.0/driver_override",
            "write \"0000:00:04.0\" to /sys/bus/pci/drivers/i40e/bind",
            "remove 0000:00:04.0 from /run/nic-config/state.json",
        ]
    );
    run(&plan);
    assert_eq!(f.read("sys/bus/pci/drivers/vfio-pci/unbind"), ADDR);
    assert_eq!(f.override_of(ADDR), "\n");
    assert_eq!(f.read("sys/bus/pci/drivers/i40e/bind"), ADDR);
    assert!(State::load(&f.host.state_file).unwrap().devices.is_empty());
}

#[test]
fn restore_loads_a_driver_that_is_gone() {
    let f = rebound_fixture();
    std::fs::remove_dir_all(f.path("sys/bus/pci/drivers/i40e")).unwrap();
    let plan = plan_restore(&f.host, &[]).unwrap();
    let s = steps(&f, &plan);
    assert_eq!(s[2], "modprobe i40e");
    assert_eq!(s[3], "write \"0000:00:04.0\" to /sys/bus/pci/drivers_probe");
}

#[test]
fn restore_without_arguments_restores_every_recorded_device() {
    let f = Fixture::new();
    f.nic(Nic::default());
    f.nic(Nic {
        addr: "0000:00:05.0",
        driver: Some("ixgbe"),
        iface: Some("ens5"),
        iommu_group: Some(13),
        ..Nic::default()
    });
    run(&plan_bind(
        &f.host,
        &[(ADDR.into(), Driver::VfioPci), ("ens5".into(), Driver::VfioPci)],
        false,
    )
    .unwrap());
    f.bind_link(ADDR, "vfio-pci");
    f.bind_link("0000:00:05.0", "vfio-pci");
    let plan = plan_restore(&f.host, &[]).unwrap();
    let s = steps(&f, &plan);
    assert!(
        s.contains(&"write \"0000:00:04.0\" to /sys/bus/pci/drivers/i40e/bind".to_owned()),
        "{s:#?}"
    );
    assert!(
        s.contains(&"write \"0000:00:05.0\" to /sys/bus/pci/drivers/ixgbe/bind".to_owned()),
        "{s:#?}"
    );
    assert_eq!(s.iter().filter(|s| s.starts_with("remove")).count(), 2);
}

#[test]
fn restore_of_a_device_already_on_its_driver_only_forgets_it() {
    let f = Fixture::new();
    f.nic(Nic::default());
    run(&bind(&f, ADDR, Driver::VfioPci, false).unwrap());
    // The kernel refused the probe, or the host rebooted: still on i40e.
    let plan = plan_restore(&f.host, &[]).unwrap();
    assert_eq!(
        steps(&f, &plan),
        [
            "write \"\\n\" to /sys/bus/pci/devices/0000:00:04.0/driver_override",
            "remove 0000:00:04.0 from /run/nic-config/state.json",
        ]
    );
}

#[test]
fn restore_needs_a_record() {
    let f = Fixture::new();
    f.nic(Nic { driver: Some("vfio-pci"), iface: None, ..Nic::default() });
    let err = plan_restore(&f.host, &args(&[ADDR])).unwrap_err();
    assert!(matches!(err, Error::NotRemembered { .. }), "{err}");
    let plan = plan_restore(&f.host, &[]).unwrap();
    assert!(plan.steps.is_empty());
    assert!(infos(&plan)[0].ends_with("records no rebound device: nothing to restore"));
}

#[test]
fn a_corrupt_state_file_is_an_error_naming_it() {
    let f = Fixture::new();
    f.nic(Nic::default());
    f.write("run/nic-config/state.json", "{\"devices\": 3}");
    let err = plan_restore(&f.host, &[]).unwrap_err();
    assert!(err.to_string().starts_with("state file "), "{err}");
}

#[test]
fn applying_stops_at_the_first_failing_step_and_names_it() {
    let f = Fixture::new();
    f.nic(Nic::default());
    let mut plan = bind(&f, ADDR, Driver::VfioPci, false).unwrap();
    // The driver vanished between planning and applying.
    std::fs::remove_dir_all(f.path("sys/bus/pci/drivers/i40e")).unwrap();
    let mut runner = RecordingRunner::default();
    let mut seen = Vec::new();
    let err = apply(&plan, &mut runner, |n, _, _| seen.push(n)).unwrap_err();
    assert_eq!(err.number, 3);
    assert_eq!(err.total, 5);
    assert!(err.step.ends_with("/sys/bus/pci/devices/0000:00:04.0/driver/unbind"), "{err}");
    assert!(err.to_string().starts_with("step 3 of 5 failed (write \"0000:00:04.0\" to "), "{err}");
    assert_eq!(seen, [1, 2, 3]);
    // The override was not written.
    assert_eq!(f.override_of(ADDR), "(null)\n");
    plan.steps.clear();
    assert!(apply(&plan, &mut runner, |_, _, _| {}).is_ok());
}

#[test]
fn restore_drops_the_record_of_a_device_that_is_gone() {
    let f = rebound_fixture();
    f.write(
        "run/nic-config/state.json",
        "{\"devices\": {\"0000:00:04.0\": {\"original_driver\": \"i40e\"}, \
         \"0000:00:09.0\": {\"original_driver\": \"ixgbe\"}}}",
    );
    let plan = plan_restore(&f.host, &[]).unwrap();
    let s = steps(&f, &plan);
    assert!(s.contains(&"write \"0000:00:04.0\" to /sys/bus/pci/drivers/i40e/bind".to_owned()));
    assert_eq!(s.last().unwrap(), "remove 0000:00:09.0 from /run/nic-config/state.json");
    assert_eq!(warnings(&plan), ["0000:00:09.0 no longer exists: its record is dropped"]);
}
