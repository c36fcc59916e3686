//! `hugepages`: plans for both sizes, globally and per node, with and without a mount, and the
//! read-back after applying.

mod common;

use common::{steps, Fixture};
use nic_config::hugepages::{self, PageSize, Request};
use nic_config::plan::{apply, RecordingRunner};
use nic_config::Error;

fn req(size: PageSize, count: u64, node: Option<u32>) -> Request {
    Request { size, count, node }
}

#[test]
fn global_2m_mounts_hugetlbfs_when_nothing_is_mounted() {
    let f = Fixture::new();
    let plan = hugepages::plan(&f.host, &req(PageSize::Size2M, 1024, None)).unwrap();
    let dev = f.host.dev.display().to_string();
    let root = f.root().display().to_string();
    let dev = dev.replace(&root, "");
    assert_eq!(
        steps(&f, &plan),
        [
            "write \"1024\" to /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages".to_owned(),
            format!("mkdir -p {dev}/hugepages"),
            format!("mount -t hugetlbfs -o pagesize=2M nodev {dev}/hugepages"),
        ]
    );
}

#[test]
fn per_node_1g() {
    let f = Fixture::new();
    f.mount_hugetlbfs("hugepages", "1G");
    let plan = hugepages::plan(&f.host, &req(PageSize::Size1G, 4, Some(0))).unwrap();
    assert_eq!(
        steps(&f, &plan),
        ["write \"4\" to /sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages"]
    );
}

#[test]
fn per_node_2m_and_global_1g() {
    let f = Fixture::new();
    f.mount_hugetlbfs("hugepages", "2M");
    let plan = hugepages::plan(&f.host, &req(PageSize::Size2M, 512, Some(0))).unwrap();
    assert_eq!(
        steps(&f, &plan),
        ["write \"512\" to /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"]
    );
    // /dev/hugepages serves 2M pages: 1G pages get a mount of their own beside it.
    let plan = hugepages::plan(&f.host, &req(PageSize::Size1G, 2, None)).unwrap();
    let s = steps(&f, &plan);
    assert_eq!(s[0], "write \"2\" to /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages");
    assert!(s[1].starts_with("mkdir -p ") && s[1].ends_with("/dev/hugepages-1G"), "{s:#?}");
    assert!(s[2].starts_with("mount -t hugetlbfs -o pagesize=1G nodev "), "{s:#?}");
    assert!(s[2].ends_with("/dev/hugepages-1G"), "{s:#?}");
}

#[test]
fn no_mount_when_one_serves_the_size() {
    let f = Fixture::new();
    f.mount_hugetlbfs("hugepages", "2M");
    let plan = hugepages::plan(&f.host, &req(PageSize::Size2M, 1024, None)).unwrap();
    assert_eq!(plan.steps.len(), 1);
    // A mount without pagesize= serves the default size (2M here).
    let g = Fixture::new();
    std::fs::create_dir_all(g.host.dev.join("hugepages")).unwrap();
    g.append(
        "proc/mounts",
        &format!("nodev {}/hugepages hugetlbfs rw,relatime 0 0\n", g.host.dev.display()),
    );
    let plan = hugepages::plan(&g.host, &req(PageSize::Size2M, 1024, None)).unwrap();
    assert_eq!(plan.steps.len(), 1, "{:#?}", plan.steps);
}

#[test]
fn an_existing_mount_point_is_not_created_again() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.host.dev.join("hugepages")).unwrap();
    let plan = hugepages::plan(&f.host, &req(PageSize::Size2M, 8, None)).unwrap();
    let s = steps(&f, &plan);
    assert_eq!(s.len(), 2, "{s:#?}");
    assert!(s[1].starts_with("mount "));
}

#[test]
fn the_same_count_is_nothing_to_write() {
    let f = Fixture::new();
    f.reserve(2048, 1024);
    f.mount_hugetlbfs("hugepages", "2M");
    let plan = hugepages::plan(&f.host, &req(PageSize::Size2M, 1024, None)).unwrap();
    assert!(plan.steps.is_empty());
    // Zero frees the pages and needs no mount.
    let plan = hugepages::plan(&f.host, &req(PageSize::Size2M, 0, None)).unwrap();
    assert_eq!(
        steps(&f, &plan),
        ["write \"0\" to /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"]
    );
}

#[test]
fn unknown_node_and_size_are_errors() {
    let f = Fixture::new();
    let err = hugepages::plan(&f.host, &req(PageSize::Size2M, 8, Some(3))).unwrap_err();
    assert!(matches!(err, Error::NoNumaNode { node: 3, .. }), "{err}");
    assert!(err.to_string().contains("nodes: 0"), "{err}");
    std::fs::remove_dir_all(f.path("sys/kernel/mm/hugepages/hugepages-1048576kB")).unwrap();
    let err = hugepages::plan(&f.host, &req(PageSize::Size1G, 2, None)).unwrap_err();
    assert!(err.to_string().starts_with("this host offers no 1G hugepages"), "{err}");
}

#[test]
fn applying_writes_the_count_and_mounts_through_the_runner() {
    let f = Fixture::new();
    let r = req(PageSize::Size2M, 1024, Some(0));
    let plan = hugepages::plan(&f.host, &r).unwrap();
    let mut runner = RecordingRunner::default();
    apply(&plan, &mut runner, |_, _, _| {}).unwrap();
    assert_eq!(
        f.read("sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"),
        "1024"
    );
    assert!(f.host.dev.join("hugepages").is_dir());
    assert_eq!(
        runner.commands,
        [format!("mount -t hugetlbfs -o pagesize=2M nodev {}/hugepages", f.host.dev.display())]
    );
    let rb = hugepages::readback(&f.host, &r).unwrap();
    assert!(!rb.is_short());
}

#[test]
fn read_back_reports_a_shortfall() {
    let f = Fixture::new();
    let r = req(PageSize::Size1G, 16, None);
    // What a fragmented host does: the kernel keeps what it could find.
    f.reserve(1024 * 1024, 3);
    let rb = hugepages::readback(&f.host, &r).unwrap();
    assert!(rb.is_short());
    assert_eq!((rb.requested, rb.reserved), (16, 3));
    let msg = hugepages::shortfall_message(&r, &rb);
    assert!(msg.starts_with("the kernel reserved only 3 of 16 1G hugepages"), "{msg}");
    assert!(msg.contains("hugepagesz=1G hugepages=16"), "{msg}");
}
