//! Hot restart: a new weir takes over from the running one, with real clients and servers
//! through it all along. Nothing a client had open may notice.

mod common;

use common::{exe, ready, worker_sum};
use std::time::Duration;
use weir::meshdemo::{services_config, MeshRig, VIP};

/// The rig's configuration with `services` and the handover socket in the rig's directory.
fn config(rig: &MeshRig, workers: usize, services: &str) -> String {
    let socket = rig.t.dir().join("handover.sock");
    rig.t.config(
        workers,
        &format!(
            "handover: {{ socket: {} }}\nadmin: {{ listen: 'unix:{}' }}\n{services}",
            socket.display(),
            rig.t.dir().join("admin.sock").display()
        ),
    )
}

/// Restarts weir with `cfg`: a successor takes over, the running one exits.
fn restart(rig: &mut MeshRig, cfg: &str) -> Duration {
    let next = rig.t.start_successor(&exe(), cfg).unwrap();
    rig.t.took_over(next).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn a_curl_loop_across_ten_restarts_loses_no_request() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build(2).unwrap();
    let cfg = config(&rig, 2, &services_config("nat", "maglev", &[1, 1]));
    rig.t.start(&exe(), &cfg).unwrap();
    let script = format!(
        "for i in $(seq 600); do curl -s --max-time 3 -H 'Connection: close' http://{VIP}/ \
         || echo FAIL; done"
    );
    let load = rig.t.client.spawn(&["timeout", "200", "sh", "-c", &script]).unwrap();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        restart(&mut rig, &cfg);
    }
    let out = load.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let answered = text.lines().filter(|l| l.starts_with('b')).count();
    let log = rig.t.log();
    assert_eq!(answered, 600, "requests lost across restarts\n{text}\n{log}");
    assert_eq!(log.matches("took over: the old weir's flows").count(), 10, "{log}");
    let stats = rig.t.stop().unwrap();
    assert!(worker_sum(&stats, "mesh_forward") > 0, "{stats}");
}
