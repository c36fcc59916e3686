//! The L4 mesh with real servers and clients: nginx backends behind weir, curl through a VIP.

mod common;

use common::mesh::{backend_addr, MeshRig};
use common::{exe, ready, worker_sum};

const VIP: &str = "198.19.0.1";

fn services(mode: &str, policy: &str, weights: &[u32]) -> String {
    let mut s = format!(
        "services:
  - {{ name: web, vip: {VIP}, port: 80, protocol: tcp, cluster: web, mode: {mode} }}
clusters:
  - name: web
    policy: {policy}
    endpoints:
"
    );
    for (i, w) in weights.iter().enumerate() {
        s.push_str(&format!("      - {{ address: {}, port: 80, weight: {w} }}\n", backend_addr(i)));
    }
    s
}

fn rig_with(n: usize, extra: &str) -> MeshRig {
    let mut rig = MeshRig::build(n);
    let cfg = rig.t.config(1, extra);
    rig.t.start(&exe(), &cfg).unwrap();
    rig
}

fn check_spread(mode: &str) {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    // Round-robin with weights 2:1:1 gives exactly that split per cycle of four.
    let mut rig = rig_with(3, &services(mode, "round_robin", &[2, 1, 1]));
    let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), 200);
    let log = rig.t.log();
    assert_eq!(failed, 0, "{mode}: {failed} requests failed; {per:?}\n{log}");
    assert_eq!(per, [100, 50, 50], "{mode}: spread over the backends");
    let stats = rig.t.stop().unwrap();
    assert_eq!(worker_sum(&stats, "flows_opened"), 200, "{stats}");
    assert!(worker_sum(&stats, "mesh_reverse") > 0, "{stats}");
}

#[test]
fn nat_spreads_curl_over_nginx_backends_by_weight() {
    check_spread("nat");
}

#[test]
fn dnat_spreads_curl_over_nginx_backends_by_weight() {
    check_spread("dnat");
}

#[test]
fn maglev_serves_every_request_from_every_backend() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut rig = rig_with(3, &services("nat", "maglev", &[1, 1, 1]));
    let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), 150);
    assert_eq!(failed, 0, "{per:?}\n{}", rig.t.log());
    // Ephemeral client ports hash all over the table: every backend gets a fair part.
    for (i, n) in per.iter().enumerate() {
        assert!(*n >= 20, "backend {i} got {n} of 150: {per:?}");
    }
    // A port no service has is dropped and counted, not routed.
    let out =
        rig.t.client.run(&["curl", "-s", "--max-time", "1", &format!("http://{VIP}:81/")]).unwrap();
    assert!(!out.status.success());
    let stats = rig.t.stop().unwrap();
    assert!(common::drop_count(&stats, "no_service") >= 1, "{stats}");
}

#[test]
fn reload_under_load_loses_no_request() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build(4);
    // Start with two endpoints; then add one, reweight, remove one.
    let plans: [&[u32]; 4] = [&[1, 1, 0, 0], &[1, 1, 1, 0], &[3, 1, 1, 0], &[3, 0, 1, 1]];
    let cfgs: Vec<String> =
        plans.iter().map(|w| rig.t.config(1, &services("nat", "maglev", w))).collect();
    rig.t.start(&exe(), &cfgs[0]).unwrap();
    let path = rig.t.dir().join("weir.yaml");
    let script = format!(
        "for i in $(seq 400); do curl -s --max-time 2 -H 'Connection: close' http://{VIP}/ || echo FAIL; done"
    );
    let load = rig.t.client.spawn(&["timeout", "120", "sh", "-c", &script]).unwrap();
    for cfg in &cfgs[1..] {
        std::thread::sleep(std::time::Duration::from_millis(700));
        // Written whole, then renamed: weir never reads half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, cfg).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    let out = load.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let fails = text.lines().filter(|l| !l.starts_with('b')).count();
    let answered = text.lines().filter(|l| l.starts_with('b')).count();
    let log = rig.t.log();
    assert_eq!((answered, fails), (400, 0), "requests lost during reloads\n{log}");
    assert!(log.matches("reloaded").count() >= 3, "not every change was applied:\n{log}");
    // The last configuration is in force: backend 3 serves, backend 1 (weight 0) takes no new
    // requests.
    let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), 60);
    assert_eq!(failed, 0);
    assert_eq!(per[1], 0, "{per:?}");
    assert!(per[3] > 0, "{per:?}");
    // A bad file is refused and the running configuration stays.
    std::fs::write(&path, "services: [ { name: x } ]\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (per2, failed) = rig.curl_loop(&format!("http://{VIP}/"), 20);
    assert_eq!(failed, 0, "{per2:?}");
    assert!(rig.t.log().contains("reload of"), "{}", rig.t.log());
    rig.t.stop().unwrap();
}
