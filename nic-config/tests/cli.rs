//! The built binary against fixture hosts: output, exit status, and what --dry-run leaves
//! alone. Real (non dry-run) runs here only ever plan sysfs writes, never modprobe or mount:
//! each one checks its dry run first.

mod common;

use common::{Fixture, Nic};
use std::process::{Command, Output};

const ADDR: &str = "0000:00:04.0";

fn nic_config(f: &Fixture, args: &[&str]) -> Output {
    let h = &f.host;
    Command::new(env!("CARGO_BIN_EXE_nic-config"))
        .arg("--sysfs-root")
        .arg(&h.sysfs)
        .arg("--procfs-root")
        .arg(&h.procfs)
        .arg("--dev-root")
        .arg(&h.dev)
        .arg("--state-file")
        .arg(&h.state_file)
        .args(args)
        .output()
        .expect("run nic-config")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Output with the fixture root cut off the paths.
fn plain(f: &Fixture, text: &str) -> String {
    text.replace(&f.root().display().to_string(), "")
}

/// Runs a command with --dry-run first and checks its plan acts on files only.
fn run_for_real(f: &Fixture, args: &[&str]) -> Output {
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let plan = stdout(&nic_config(f, &dry));
    assert!(!plan.contains("modprobe") && !plan.contains("mount "), "{plan}");
    nic_config(f, args)
}

fn host_with_nic() -> Fixture {
    let f = Fixture::new();
    f.nic(Nic::default());
    f
}

#[test]
fn status_table_and_json() {
    let f = host_with_nic();
    f.ipv4("ens4", "198.18.0.2", 24);
    f.default_v4("ens4", "198.18.0.1");
    let out = nic_config(&f, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let row = text.lines().nth(1).unwrap();
    for field in
        [ADDR, "8086:1572", "Intel", "i40e", "ens4", "up", "12", "default route via 198.18.0.1"]
    {
        assert!(row.contains(field), "{field} missing in {text}");
    }

    let out = nic_config(&f, &["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["address"], ADDR);
    assert_eq!(json[0]["driver"], "i40e");
    assert_eq!(json[0]["numa_node"], 0);
    assert_eq!(json[0]["interfaces"][0]["in_use"], true);
    assert_eq!(json[0]["interfaces"][0]["kernel_use"]["default_route"], true);
}

#[test]
fn bind_dry_run_prints_the_plan_and_changes_nothing() {
    let f = host_with_nic();
    let out = nic_config(&f, &["bind", "00:04.0", "--driver", "vfio-pci", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        plain(&f, &stdout(&out)),
        "plan (dry run, nothing changed):
  1. modprobe vfio-pci
  2. record 0000:00:04.0's original driver (i40e) in /run/nic-config/state.json
  3. write \"0000:00:04.0\" to /sys/bus/pci/devices/0000:00:04.0/driver/unbind
  4. write \"vfio-pci\" to /sys/bus/pci/devices/0000:00:04.0/driver_override
  5. write \"0000:00:04.0\" to /sys/bus/pci/drivers_probe
"
    );
    assert_eq!(f.override_of(ADDR), "(null)\n");
    assert_eq!(f.read("sys/bus/pci/drivers/i40e/unbind"), "");
    assert!(!f.host.state_file.exists());
}

#[test]
fn bind_without_an_iommu_warns_loudly() {
    let f = Fixture::new();
    f.nic(Nic { iommu_group: None, ..Nic::default() });
    let out = nic_config(&f, &["bind", "ens4", "--driver", "vfio-pci", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("WARNING: NO IOMMU: vfio-pci will run in UNSAFE no-IOMMU mode"));
    assert!(plain(&f, &stdout(&out))
        .contains("2. write \"Y\" to /sys/module/vfio/parameters/enable_unsafe_noiommu_mode"));
}

#[test]
fn bind_refuses_a_used_interface() {
    let f = host_with_nic();
    f.ipv4("ens4", "198.18.0.2", 24);
    f.default_v4("ens4", "198.18.0.1");
    let out = nic_config(&f, &["bind", "ens4", "--driver", "uio_pci_generic", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("error: refusing to rebind 0000:00:04.0 (ens4)"), "{err}");
    assert!(err.contains("default route via 198.18.0.1; addresses 198.18.0.2/24"), "{err}");
    let out =
        nic_config(&f, &["bind", "ens4", "--driver", "uio_pci_generic", "--dry-run", "--force"]);
    assert!(out.status.success());
    assert!(stderr(&out).starts_with("WARNING: --force: rebinding"), "{}", stderr(&out));
}

#[test]
fn bind_already_bound_says_so() {
    let f = Fixture::new();
    f.nic(Nic { driver: Some("vfio-pci"), iface: None, ..Nic::default() });
    let out = nic_config(&f, &["bind", ADDR, "--driver", "vfio-pci"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "note: 0000:00:04.0 is already bound to vfio-pci: nothing to do\nnothing to do\n"
    );
}

#[test]
fn bind_applied_reports_each_step_and_checks_the_result() {
    let f = host_with_nic();
    f.vfio_loaded();
    let out = run_for_real(&f, &["bind", ADDR, "--driver", "vfio-pci"]);
    let text = plain(&f, &stdout(&out));
    assert!(text.starts_with("[1/4] record 0000:00:04.0's original driver (i40e)"), "{text}");
    assert!(text
        .contains("[3/4] write \"vfio-pci\" to /sys/bus/pci/devices/0000:00:04.0/driver_override"));
    assert_eq!(f.override_of(ADDR), "vfio-pci");
    assert!(f.host.state_file.exists());
    // A fixture has no kernel to probe the device: the binary notices it stayed on i40e.
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("applied, but 0000:00:04.0 is bound to i40e, not vfio-pci"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unbind_and_restore_for_real() {
    let f = host_with_nic();
    let out = run_for_real(&f, &["unbind", ADDR]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f.read("sys/bus/pci/drivers/i40e/unbind"), ADDR);
    assert!(stdout(&out).ends_with("applied 2 steps\n"), "{}", stdout(&out));

    // What the kernel would show after the unbind.
    std::fs::remove_file(f.path("sys/devices/pci0000:00/0000:00:04.0/driver")).unwrap();
    let out = run_for_real(&f, &["restore"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f.read("sys/bus/pci/drivers/i40e/bind"), ADDR);
    assert!(!f.read("run/nic-config/state.json").contains(ADDR));
}

#[test]
fn restore_dry_run_names_the_original_driver() {
    let f = Fixture::new();
    f.nic(Nic { driver: Some("vfio-pci"), iface: None, ..Nic::default() });
    f.write(
        "run/nic-config/state.json",
        "{\"devices\": {\"0000:00:04.0\": {\"original_driver\": \"i40e\"}}}",
    );
    f.driver("i40e");
    let out = nic_config(&f, &["restore", "00:04.0", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = plain(&f, &stdout(&out));
    assert!(text.contains("write \"0000:00:04.0\" to /sys/bus/pci/drivers/i40e/bind"), "{text}");
    let out = nic_config(&f, &["restore", "00:05.0", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn hugepages_dry_run() {
    let f = Fixture::new();
    let out =
        nic_config(&f, &["hugepages", "--size", "1G", "--count", "4", "--node", "0", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        plain(&f, &stdout(&out)),
        "plan (dry run, nothing changed):
  1. write \"4\" to /sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages
  2. mkdir -p /dev/hugepages
  3. mount -t hugetlbfs -o pagesize=1G nodev /dev/hugepages
"
    );
    let out = nic_config(&f, &["hugepages", "--size", "3M", "--count", "4", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
}

#[test]
fn hugepages_applied_reads_back() {
    let f = Fixture::new();
    f.mount_hugetlbfs("hugepages", "2M");
    let out = run_for_real(&f, &["hugepages", "--size", "2M", "--count", "64"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).ends_with("64 2M hugepages reserved\n"), "{}", stdout(&out));
}

#[test]
fn check_exit_status_follows_the_verdict() {
    let f = Fixture::new();
    let out = nic_config(&f, &["check"]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(text.contains("[FAIL] hugepages"), "{text}");
    assert!(text.ends_with("verdict: not ready: no hugepages reserved; hugetlbfs not mounted\n"));

    f.ready_host();
    let out = nic_config(&f, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).ends_with("verdict: ready for vfio-pci\n"));
    let out = nic_config(&f, &["check", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verdict"], "ready");
}

#[test]
fn apply_a_file() {
    let f = host_with_nic();
    let file = f.path("setup.yaml");
    std::fs::write(
        &file,
        "hugepages: {size: 2M, count: 256}\ndevices:\n  - {device: ens4, driver: vfio-pci}\n",
    )
    .unwrap();
    let out = nic_config(&f, &["apply", "-c", file.to_str().unwrap(), "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = plain(&f, &stdout(&out));
    assert!(
        text.contains("1. write \"256\" to /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
    );
    assert!(text.contains("modprobe vfio-pci"), "{text}");
    assert!(
        text.contains("write \"vfio-pci\" to /sys/bus/pci/devices/0000:00:04.0/driver_override")
    );

    std::fs::write(&file, "devices:\n  - {device: ens4, driver: vfio-pci, force: true}\n").unwrap();
    let out = nic_config(&f, &["apply", "-c", file.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("is not a valid setup file: devices[0].force: unknown field `force`"),
        "{err}"
    );
}

#[test]
fn help_lists_every_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_nic-config")).arg("--help").output().unwrap();
    let text = stdout(&out);
    for cmd in ["status", "bind", "unbind", "restore", "hugepages", "check", "apply"] {
        assert!(text.contains(cmd), "{cmd}: {text}");
    }
    let out =
        Command::new(env!("CARGO_BIN_EXE_nic-config")).args(["bind", "--help"]).output().unwrap();
    for driver in ["vfio-pci", "uio_pci_generic", "igb_uio"] {
        assert!(stdout(&out).contains(driver), "{}", stdout(&out));
    }
}
