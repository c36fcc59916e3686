//! `check`: each verdict, and the checks behind it.

mod common;

use common::{Fixture, Nic};
use nic_config::check::{self, Level, Verdict};

fn level_of(report: &check::Report, name: &str) -> Level {
    report.items.iter().find(|i| i.name == name).unwrap_or_else(|| panic!("no {name}")).level
}

#[test]
fn ready_for_vfio_pci() {
    let f = Fixture::new();
    f.ready_host();
    f.nic(Nic::default());
    let report = check::run(&f.host).unwrap();
    assert_eq!(report.verdict, Verdict::Ready, "{}", report.render());
    assert_eq!(level_of(&report, "iommu"), Level::Ok);
    assert_eq!(level_of(&report, "vfio-pci"), Level::Ok);
    assert_eq!(level_of(&report, "hugepages"), Level::Ok);
    assert_eq!(level_of(&report, "hugetlbfs"), Level::Ok);
    assert_eq!(level_of(&report, "cpu sse4_2"), Level::Ok);
    let text = report.render();
    assert!(text.ends_with("verdict: ready for vfio-pci\n"), "{text}");
    assert!(text.contains("kernel command line: intel_iommu=on iommu=pt"), "{text}");
    assert!(text.contains("1024 x 2M (1024 free)"), "{text}");
    assert!(text.contains("avx2 yes, avx512f no"), "{text}");
}

#[test]
fn no_iommu_only() {
    let f = Fixture::new();
    f.ready_host();
    std::fs::remove_dir_all(f.path("sys/kernel/iommu_groups/0")).unwrap();
    f.cmdline("BOOT_IMAGE=/vmlinuz ro");
    let report = check::run(&f.host).unwrap();
    assert_eq!(report.verdict, Verdict::NoIommuOnly, "{}", report.render());
    assert_eq!(level_of(&report, "iommu"), Level::Warn);
    let text = report.render();
    assert!(text.contains("add intel_iommu=on iommu=pt"), "{text}");
    assert!(text.contains("verdict: ready for vfio-pci in no-IOMMU mode only"), "{text}");
}

#[test]
fn no_iommu_groups_of_vfio_s_own_do_not_count() {
    let f = Fixture::new();
    f.ready_host();
    std::fs::remove_dir_all(f.path("sys/kernel/iommu_groups/0")).unwrap();
    // A device already bound in no-IOMMU mode gets a stand-in group.
    f.nic(Nic { driver: Some("vfio-pci"), iface: None, iommu_group: Some(0), ..Nic::default() });
    f.write("sys/kernel/iommu_groups/0/name", "vfio-noiommu\n");
    let report = check::run(&f.host).unwrap();
    assert_eq!(report.verdict, Verdict::NoIommuOnly, "{}", report.render());
    assert!(report.render().contains("bound to DPDK drivers: 0000:00:04.0 (vfio-pci)"));
}

#[test]
fn not_ready_without_sse4_2() {
    let f = Fixture::new();
    f.ready_host();
    f.cpu_flags("fpu sse sse2 ssse3");
    let report = check::run(&f.host).unwrap();
    assert_eq!(report.verdict, Verdict::NotReady);
    assert_eq!(level_of(&report, "cpu sse4_2"), Level::Fail);
    assert_eq!(report.verdict_line(), "not ready: CPU lacks SSE4.2");
}

#[test]
fn not_ready_without_hugepages() {
    let f = Fixture::new();
    f.cmdline("ro intel_iommu=on iommu=pt");
    f.vfio_loaded();
    f.nic(Nic::default());
    let report = check::run(&f.host).unwrap();
    assert_eq!(report.verdict, Verdict::NotReady);
    assert_eq!(level_of(&report, "hugepages"), Level::Fail);
    assert_eq!(level_of(&report, "hugetlbfs"), Level::Fail);
    assert_eq!(report.verdict_line(), "not ready: no hugepages reserved; hugetlbfs not mounted");
}

#[test]
fn vfio_not_loaded_is_only_a_warning() {
    let f = Fixture::new();
    f.ready_host();
    f.nic(Nic::default());
    std::fs::remove_dir_all(f.path("sys/module/vfio_pci")).unwrap();
    std::fs::remove_dir_all(f.path("sys/bus/pci/drivers/vfio-pci")).unwrap();
    f.write("proc/modules", "");
    let report = check::run(&f.host).unwrap();
    assert_eq!(level_of(&report, "vfio-pci"), Level::Warn);
    assert_eq!(report.verdict, Verdict::Ready);
}

#[test]
fn no_iommu_and_no_no_iommu_mode_is_not_ready() {
    let f = Fixture::new();
    f.ready_host();
    std::fs::remove_dir_all(f.path("sys/kernel/iommu_groups/0")).unwrap();
    std::fs::remove_file(f.path("sys/module/vfio/parameters/enable_unsafe_noiommu_mode")).unwrap();
    let report = check::run(&f.host).unwrap();
    assert_eq!(report.verdict, Verdict::NotReady, "{}", report.render());
    assert_eq!(report.verdict_line(), "not ready: no IOMMU and no vfio no-IOMMU mode");
}

#[test]
fn json_report() {
    let f = Fixture::new();
    f.ready_host();
    f.nic(Nic::default());
    let json = serde_json::to_value(check::run(&f.host).unwrap()).unwrap();
    assert_eq!(json["verdict"], "ready");
    assert_eq!(json["items"][0]["name"], "iommu");
    assert_eq!(json["items"][0]["level"], "ok");
}
