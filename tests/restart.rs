//! Hot restart: a new weir takes over from the running one, with real clients and servers
//! through it all along. Nothing a client had open may notice.

mod common;

use common::{exe, ready, worker_sum};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use weir::meshdemo::{backend_addr, services_config, Decap, MeshRig, VIP};

/// The rig's configuration with `services`, the handover socket and a Unix admin socket in
/// the rig's directory.
fn config(rig: &MeshRig, workers: usize, services: &str) -> String {
    rig.t.config(
        workers,
        &format!(
            "handover: {{ socket: {}, timeout_ms: 5000 }}\nadmin: {{ listen: 'unix:{}' }}\n{services}",
            rig.t.dir().join("handover.sock").display(),
            rig.t.dir().join("admin.sock").display()
        ),
    )
}

/// Restarts weir with `cfg`: a successor takes over, the running one exits.
fn restart(rig: &mut MeshRig, cfg: &str) -> Duration {
    let next = rig.t.start_successor(&exe(), cfg).unwrap();
    rig.t.took_over(next).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `n` requests through the VIP one after another in the client namespace, each on a new
/// connection (bounded: at most 3 s each, 200 s in all); see [`answered`].
fn curl_load(rig: &MeshRig, n: usize) -> std::process::Child {
    let script = format!(
        "for i in $(seq {n}); do curl -s --max-time 3 -H 'Connection: close' http://{VIP}/ \
         || echo FAIL; done"
    );
    rig.t.client.spawn(&["timeout", "200", "sh", "-c", &script]).unwrap()
}

/// How many of a [`curl_load`]'s requests a backend answered, and what it printed.
fn answered(load: std::process::Child) -> (usize, String) {
    let out = load.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (text.lines().filter(|l| l.starts_with('b')).count(), text)
}

/// The running weir's counters, through its admin API.
fn live_stats(rig: &MeshRig) -> serde_json::Value {
    ctl_json(rig, "stats")
}

/// What the running weir's admin API answers `weir ctl --json <what>`.
fn ctl_json(rig: &MeshRig, what: &str) -> serde_json::Value {
    let admin = rig.t.dir().join("admin.sock");
    let out = std::process::Command::new(exe())
        .args(["ctl", "--admin", &format!("unix:{}", admin.display()), "--json", what])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// How many takeovers the log reports.
fn takeovers(rig: &MeshRig) -> usize {
    rig.t.log().matches("took over: the old weir's flows").count()
}

#[test]
fn a_curl_loop_across_ten_restarts_loses_no_request() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build(2).unwrap();
    let cfg = config(&rig, 2, &services_config("nat", "maglev", &[1, 1]));
    rig.t.start(&exe(), &cfg).unwrap();
    let load = curl_load(&rig, 600);
    for i in 0..10 {
        // The last four back to back: a successor takes over from one that just took over.
        if i < 6 {
            std::thread::sleep(Duration::from_millis(400));
        }
        restart(&mut rig, &cfg);
    }
    let (answered, text) = answered(load);
    let log = rig.t.log();
    assert_eq!(answered, 600, "requests lost across restarts\n{text}\n{log}");
    assert_eq!(takeovers(&rig), 10, "{log}");
    // The admin API moved with each: the last weir answers on the same socket.
    let admin = rig.t.dir().join("admin.sock");
    let out = std::process::Command::new(exe())
        .args(["ctl", "--admin", &format!("unix:{}", admin.display()), "stats"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats = rig.t.stop().unwrap();
    // The counters went on from each predecessor's: every request's flow counted once.
    assert_eq!(worker_sum(&stats, "flows_opened"), 600, "{stats}");
}

/// iperf3's JSON report: each interval's bytes, and the error if the test failed.
fn iperf_intervals(json: &str) -> (Vec<u64>, Option<String>) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let bytes = v["intervals"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["sum"]["bytes"].as_u64()).collect())
        .unwrap_or_default();
    (bytes, v["error"].as_str().map(str::to_owned))
}

fn check_iperf_across_restarts(mode: &str, dsr: bool) {
    if !ready(&["ip", "nginx", "iperf3"]) {
        return;
    }
    let mut rig = MeshRig::build(1).unwrap();
    if dsr {
        rig.dsr_endpoints(VIP, Decap::IpIp).unwrap();
    }
    let services = format!(
        "services:
  - {{ name: bulk, vip: {VIP}, port: 5201, protocol: tcp, cluster: bulk, mode: {mode} }}
clusters:
  - name: bulk
    endpoints:
      - {{ address: {}, port: 5201 }}
",
        backend_addr(0)
    );
    let cfg = config(&rig, 1, &services);
    rig.t.start(&exe(), &cfg).unwrap();
    let mut server = rig.backends[0].ns.spawn(&["iperf3", "-s", "-1"]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let client =
        rig.t.client.spawn(&["timeout", "40", "iperf3", "-c", VIP, "-t", "20", "-J"]).unwrap();
    // Two restarts in the middle of the transfer.
    for at in [5, 12] {
        std::thread::sleep(Duration::from_secs(if at == 5 { 5 } else { 7 }));
        restart(&mut rig, &cfg);
    }
    let out = client.wait_with_output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let json = String::from_utf8_lossy(&out.stdout);
    let (bytes, error) = iperf_intervals(&json);
    let log = rig.t.log();
    assert_eq!(error, None, "{mode}: iperf3 failed\n{log}");
    assert!(bytes.len() >= 20, "{mode}: {} intervals\n{json}", bytes.len());
    assert!(bytes.iter().all(|b| *b > 0), "{mode}: an interval without a byte: {bytes:?}\n{log}");
    assert_eq!(takeovers(&rig), 2, "{log}");
    let stats = rig.t.stop().unwrap();
    // The successors carried the connection on without opening it again (the counters go on
    // from their predecessors').
    assert!(worker_sum(&stats, "mesh_forward") > 1000, "{stats}");
    // iperf3's control and data connections, opened once each.
    assert_eq!(worker_sum(&stats, "flows_opened"), 2, "{mode}: a flow was opened again: {stats}");
    // Nothing waited for a next hop the old weir had resolved already.
    assert_eq!(common::drop_count(&stats, "neighbor_queue_full"), 0, "{stats}");
}

#[test]
fn iperf3_through_a_nat_service_runs_on_across_restarts() {
    check_iperf_across_restarts("nat", false);
}

#[test]
fn iperf3_through_a_dsr_service_runs_on_across_restarts() {
    check_iperf_across_restarts("dsr", true);
}

/// A Python client holding `n` keep-alive HTTP sessions to the VIP: a request on each, then,
/// once the file `go` exists, another on the same connection. Prints `1 i backend` and
/// `2 i backend` (or `2 i ERR kind`).
fn sessions_script(n: usize, go: &std::path::Path) -> String {
    format!(
        "import http.client, os, time
cs = [http.client.HTTPConnection('{VIP}', 80, timeout=5) for _ in range({n})]
for i, c in enumerate(cs):
    c.request('GET', '/'); print('1', i, c.getresponse().read().decode().strip(), flush=True)
t = time.time()
while not os.path.exists('{}') and time.time() - t < 60: time.sleep(0.05)
for i, c in enumerate(cs):
    try:
        c.request('GET', '/'); print('2', i, c.getresponse().read().decode().strip(), flush=True)
    except Exception as e:
        print('2', i, 'ERR', type(e).__name__, flush=True)
",
        go.display()
    )
}

/// The backends the sessions were on before and after (`ERR …` for a session that failed).
fn sessions(text: &str) -> (Vec<String>, Vec<String>) {
    let of = |round: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(round))
            .map(|l| l.splitn(3, ' ').nth(2).unwrap_or("").to_owned())
            .collect()
    };
    (of("1 "), of("2 "))
}

#[test]
fn fifty_idle_keepalive_connections_answer_after_a_restart() {
    if !ready(&["ip", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build(3).unwrap();
    let cfg = config(&rig, 2, &services_config("nat", "round_robin", &[1, 1, 1]));
    rig.t.start(&exe(), &cfg).unwrap();
    let go = rig.t.dir().join("go");
    let session = rig.t.client.spawn(&[common::PY, "-c", &sessions_script(50, &go)]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while worker_sum(&live_stats(&rig), "flows_opened") < 50 {
        assert!(Instant::now() < deadline, "the sessions did not open\n{}", rig.t.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Idle while weir restarts.
    std::thread::sleep(Duration::from_millis(500));
    restart(&mut rig, &cfg);
    std::fs::write(&go, "").unwrap();
    let out = session.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (before, after) = sessions(&text);
    assert_eq!((before.len(), after.len()), (50, 50), "{text}\n{}", rig.t.log());
    assert_eq!(before, after, "a session failed or moved across the restart\n{}", rig.t.log());
    let stats = rig.t.stop().unwrap();
    assert_eq!(worker_sum(&stats, "resets_sent"), 0, "{stats}");
}

#[test]
fn a_new_configuration_comes_with_the_restart() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    for gone in ["drain", "reset"] {
        let mut rig = MeshRig::build(3).unwrap();
        let services = |weights: &[u32]| {
            services_config("nat", "maglev", weights)
                .replace("policy: maglev", &format!("policy: maglev\n    on_endpoint_gone: {gone}"))
        };
        let first = config(&rig, 1, &services(&[1, 1, 1]));
        // Backend 1 removed, backend 2 reweighted.
        let second = config(&rig, 1, &services(&[1, 1, 3])).replace(
            &format!("      - {{ address: {}, port: 80, weight: 1 }}\n", backend_addr(1)),
            "",
        );
        rig.t.start(&exe(), &first).unwrap();
        let go = rig.t.dir().join("go");
        let session = rig.t.client.spawn(&[common::PY, "-c", &sessions_script(30, &go)]).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        restart(&mut rig, &second);
        std::fs::write(&go, "").unwrap();
        let out = session.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (before, after) = sessions(&text);
        assert_eq!((before.len(), after.len()), (30, 30), "{text}");
        assert!(before.iter().any(|b| b == "b1"), "no session on the endpoint that goes");
        for (a, b) in before.iter().zip(&after) {
            if a == "b1" && gone == "reset" {
                assert!(b.starts_with("ERR"), "{gone}: a session on the removed endpoint went on");
            } else {
                assert_eq!(a, b, "{gone}: a session changed endpoint or failed\n{}", rig.t.log());
            }
        }
        // New connections follow the new configuration: none to the removed endpoint.
        let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), 40).unwrap();
        assert_eq!((per[1], failed), (0, 0), "{gone}: {per:?}");
        rig.t.stop().unwrap();
    }
}

/// The endpoint at `address` in the admin API's endpoint table.
fn endpoint_row(rig: &MeshRig, address: &str) -> serde_json::Value {
    let clusters = ctl_json(rig, "clusters");
    clusters["clusters"][0]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["address"] == address)
        .cloned()
        .unwrap_or_else(|| panic!("no endpoint {address}: {clusters}"))
}

#[test]
fn an_ejected_endpoint_stays_ejected_across_a_restart() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build(3).unwrap();
    let services = format!(
        "{}mesh: {{ outlier_consecutive_failures: 3, outlier_base_ejection_ms: 60000 }}\n",
        services_config("nat", "round_robin", &[1, 1, 1])
    );
    let cfg = config(&rig, 1, &services);
    rig.t.start(&exe(), &cfg).unwrap();
    let url = format!("http://{VIP}/");
    rig.backends[1].stop_nginx();
    let (_, failed) = rig.curl_loop(&url, 60).unwrap();
    assert!(failed >= 3, "{failed} failures\n{}", rig.t.log());
    let before = endpoint_row(&rig, &backend_addr(1));
    assert_eq!(before["ejected"].as_bool(), Some(true), "{before}\n{}", rig.t.log());
    let failed_before = before["connects_failed"].as_u64().unwrap_or(0);
    let ok_other = endpoint_row(&rig, &backend_addr(0))["connects_ok"].as_u64().unwrap_or(0);
    let packets = worker_sum(&live_stats(&rig), "packets");
    restart(&mut rig, &cfg);
    // The successor holds it ejected for what was left of its minute, not a new one, and its
    // counts went on.
    let after = endpoint_row(&rig, &backend_addr(1));
    assert_eq!(
        (
            after["ejected"].as_bool(),
            after["takes_new_flows"].as_bool(),
            after["ejections"].as_u64()
        ),
        (Some(true), Some(false), Some(1)),
        "{after}\n{}",
        rig.t.log()
    );
    let left = |e: &serde_json::Value| e["returns_in_ms"].as_u64().expect("returns_in_ms");
    assert!(left(&after) <= left(&before) && left(&after) > 0, "{before} then {after}");
    // The loop's counters went on too: the successor starts from its predecessor's.
    let now = worker_sum(&live_stats(&rig), "packets");
    assert!(now >= packets, "{packets} packets before the restart, {now} after");
    assert_eq!(after["connects_failed"].as_u64(), Some(failed_before), "{after}");
    assert_eq!(
        endpoint_row(&rig, &backend_addr(0))["connects_ok"].as_u64(),
        Some(ok_other),
        "the other endpoints' counts went on too"
    );
    // No new connection is sent to it: none fails.
    let (per, failed) = rig.curl_loop(&url, 30).unwrap();
    assert_eq!((per[1], failed), (0, 0), "{per:?}\n{}", rig.t.log());
    assert!(rig.t.log().contains("endpoints ejected by the running weir stay ejected"));
    rig.t.stop().unwrap();
}

#[test]
fn a_udp_flow_keeps_its_endpoint_across_a_restart() {
    if !ready(&["ip", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build(2).unwrap();
    let services = format!(
        "services:
  - {{ name: dns, vip: {VIP}, port: 53, protocol: udp, cluster: dns }}
clusters:
  - name: dns
    policy: round_robin
    endpoints:
      - {{ address: {}, port: 5353 }}
      - {{ address: {}, port: 5353 }}
",
        backend_addr(0),
        backend_addr(1)
    );
    let cfg = config(&rig, 1, &services);
    rig.t.start(&exe(), &cfg).unwrap();
    let mut servers = Vec::new();
    for (i, b) in rig.backends.iter().enumerate() {
        let server = format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('{}', 5353))\nwhile True:\n    d, a = s.recvfrom(2048)\n    s.sendto(b'b{i}', a)\n",
            b.addr
        );
        servers.push(b.ns.spawn(&[common::PY, "-c", &server]).unwrap());
    }
    std::thread::sleep(Duration::from_millis(300));
    // One socket (one flow): a datagram, then ten more once the file `go` exists. Round-robin
    // would send a new flow to the other endpoint.
    let go = rig.t.dir().join("go");
    let script = format!(
        "import socket, os, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
def ask():
    try:
        s.sendto(b'q', ('{VIP}', 53)); return s.recv(64).decode()
    except Exception as e:
        return 'ERR'
print(ask(), flush=True)
t = time.time()
while not os.path.exists('{}') and time.time() - t < 30: time.sleep(0.05)
for _ in range(10): print(ask(), flush=True)
",
        go.display()
    );
    let client = rig.t.client.spawn(&[common::PY, "-c", &script]).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    restart(&mut rig, &cfg);
    std::fs::write(&go, "").unwrap();
    let out = client.wait_with_output().unwrap();
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<&str> = text.lines().collect();
    assert_eq!(answers.len(), 11, "{text}");
    assert!(answers[0].starts_with('b'), "{text}");
    assert!(answers.iter().all(|a| *a == answers[0]), "the flow changed endpoint: {answers:?}");
    rig.t.stop().unwrap();
}

#[test]
fn a_syn_flood_during_a_restart_leaves_established_sessions_and_new_ones_served() {
    if !ready(&["ip", "curl", "nginx", "hping3"]) {
        return;
    }
    let mut rig = MeshRig::build(1).unwrap();
    let services = format!(
        "{}mesh: {{ flows_per_worker: 1024, when_full: evict_embryonic }}
routes:
  - {{ prefix: 198.18.128.0/17, port: client_side, via: 198.18.1.2 }}
",
        services_config("nat", "maglev", &[1])
    );
    let cfg = config(&rig, 1, &services);
    rig.t.start(&exe(), &cfg).unwrap();
    let go = rig.t.dir().join("go");
    let session = rig.t.client.spawn(&[common::PY, "-c", &sessions_script(5, &go)]).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // Spoofed SYNs from inside the test's range, bounded in count and time, while weir
    // restarts twice.
    let flood = rig
        .t
        .client
        .spawn(&[
            "timeout",
            "20",
            "hping3",
            "-q",
            "-S",
            "-p",
            "80",
            "-a",
            "198.18.200.1",
            "-c",
            "8000",
            "-i",
            "u400",
            VIP,
        ])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    restart(&mut rig, &cfg);
    std::thread::sleep(Duration::from_millis(500));
    restart(&mut rig, &cfg);
    let out = flood.wait_with_output().unwrap();
    assert!(out.status.success(), "hping3: {}", String::from_utf8_lossy(&out.stderr));
    // The flood filled the successors' tables too: they evicted its handshakes.
    let stats = live_stats(&rig);
    assert!(worker_sum(&stats, "flows_evicted") > 1000, "{stats}");
    let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), 20).unwrap();
    std::fs::write(&go, "").unwrap();
    let out = session.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (before, after) = sessions(&text);
    assert_eq!(before.len(), 5, "{text}");
    assert_eq!(before, after, "an established session broke: {text}\n{}", rig.t.log());
    assert_eq!((per[0], failed), (20, 0), "new connections after the flood");
    rig.t.stop().unwrap();
}

/// One protocol frame: a kind byte, a 32-bit length, the body.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// Reads frames until a JSON one; returns it.
fn next_message(s: &mut std::os::unix::net::UnixStream) -> serde_json::Value {
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        if head[0] == 0 {
            return serde_json::from_slice(&body).unwrap();
        }
    }
}

/// A hello as a successor with `cfg_text`'s ports would send it, at protocol `version`.
fn hello(cfg_text: &str, version: u32) -> Vec<u8> {
    let cfg = weir::config::parse(cfg_text).unwrap();
    let body = serde_json::json!({
        "message": "hello",
        "version": version,
        "pid": std::process::id(),
        "workers": cfg.workers.len(),
        "ports": serde_json::to_value(&cfg.ports).unwrap(),
        "snat_ports": [cfg.mesh.snat_port_first, cfg.mesh.snat_port_last],
    });
    frame(0, &serde_json::to_vec(&body).unwrap())
}

fn connect(rig: &MeshRig) -> std::os::unix::net::UnixStream {
    let s = std::os::unix::net::UnixStream::connect(rig.t.dir().join("handover.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn a_successor_that_dies_mid_handover_leaves_the_old_weir_forwarding() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build(2).unwrap();
    let cfg = config(&rig, 2, &services_config("nat", "maglev", &[1, 1]));
    rig.t.start(&exe(), &cfg).unwrap();
    let load = curl_load(&rig, 300);
    std::thread::sleep(Duration::from_millis(500));
    // A successor that goes away during the copy, then one that goes away with the old
    // workers paused (after the queues were handed out): each time the old weir forwards on.
    for stop_after in ["copied", "queues"] {
        let mut s = connect(&rig);
        s.write_all(&hello(&cfg, weir::handover::VERSION)).unwrap();
        assert_eq!(next_message(&mut s)["message"], "welcome");
        assert_eq!(next_message(&mut s)["message"], "copied");
        if stop_after == "queues" {
            s.write_all(&frame(0, br#"{"message":"cut_over"}"#)).unwrap();
            assert_eq!(next_message(&mut s)["message"], "queues");
            // The old workers wait, paused, with frames arriving in their rings.
            std::thread::sleep(Duration::from_millis(300));
        }
        drop(s);
        let deadline = Instant::now() + Duration::from_secs(10);
        while rig.t.log().matches("takeover failed, forwarding again").count()
            < usize::from(stop_after == "queues") + 1
        {
            assert!(Instant::now() < deadline, "{}", rig.t.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // And a real successor still takes over after that.
    restart(&mut rig, &cfg);
    let (answered, text) = answered(load);
    assert_eq!(answered, 300, "requests lost\n{text}\n{}", rig.t.log());
    rig.t.stop().unwrap();
}

#[test]
fn an_incompatible_successor_is_refused_and_changes_nothing() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build(1).unwrap();
    let cfg = config(&rig, 2, &services_config("nat", "maglev", &[1]));
    rig.t.start(&exe(), &cfg).unwrap();
    // Another protocol version: refused by its version alone, and the old weir goes on.
    let mut s = connect(&rig);
    s.write_all(&hello(&cfg, 999)).unwrap();
    let answer = next_message(&mut s);
    assert_eq!(answer["message"], "refuse", "{answer}");
    assert!(answer["reason"].as_str().unwrap().contains("version 999"), "{answer}");
    // Another user, were the socket's mode widened: refused before anything is read.
    use std::os::unix::fs::PermissionsExt;
    let sock = rig.t.dir().join("handover.sock");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let other = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", common::PY, "-c"])
        .arg(
            "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.settimeout(5)\n\
             s.connect(sys.argv[1])\nprint(s.recv(65536)[5:].decode())",
        )
        .arg(&sock)
        .output()
        .unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let said = String::from_utf8_lossy(&other.stdout);
    assert!(said.contains("refuse") && said.contains("uid 65534"), "{said} {other:?}");
    // A successor with one worker instead of two: it says why and exits; nothing changed.
    let other = config(&rig, 1, &services_config("nat", "maglev", &[1]));
    let next = rig.t.start_successor(&exe(), &other).unwrap();
    let out = next.wait_with_output().unwrap();
    assert!(!out.status.success());
    let log = rig.t.log();
    assert!(log.contains("refused the takeover") && log.contains("1 workers against 2"), "{log}");
    let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), 20).unwrap();
    assert_eq!((per[0], failed), (20, 0), "{log}");
    assert_eq!(takeovers(&rig), 0);
    rig.t.stop().unwrap();
}

#[test]
fn a_successor_whose_predecessor_dies_starts_cold_and_says_so() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build(1).unwrap();
    let cfg = config(&rig, 1, &services_config("nat", "maglev", &[1]));
    rig.t.start(&exe(), &cfg).unwrap();
    // The old weir hangs (stopped) when its successor asks, and is then killed.
    let old = rig.t.pid().unwrap();
    std::process::Command::new("kill").args(["-STOP", &old.to_string()]).status().unwrap();
    let next = rig.t.start_successor(&exe(), &cfg).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    rig.t.kill().unwrap();
    let took = rig.t.adopt(next);
    let deadline = Instant::now() + Duration::from_secs(20);
    while rig.t.log().matches("weir running").count() < 2 {
        assert!(Instant::now() < deadline, "{}", rig.t.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    took.unwrap();
    let log = rig.t.log();
    assert!(log.contains("starting cold"), "{log}");
    let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), 20).unwrap();
    assert_eq!((per[0], failed), (20, 0), "{log}");
    rig.t.stop().unwrap();
}

/// Ends a process this test started through `weir ctl restart` (not the test's child) if the
/// test fails before it did.
struct EndOnDrop(u32);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn weir_ctl_restart_starts_a_successor_and_waits_until_it_took_over() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build(1).unwrap();
    let cfg = config(&rig, 1, &services_config("nat", "maglev", &[1]));
    rig.t.start(&exe(), &cfg).unwrap();
    let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), 10).unwrap();
    assert_eq!((per[0], failed), (10, 0));
    let old = rig.t.pid().unwrap();
    let dir = rig.t.dir().to_path_buf();
    let stats = dir.join("after.json");
    let (exe, yaml, log) = (exe(), dir.join("weir.yaml"), dir.join("weir.log"));
    let args = [
        exe.to_str().unwrap(),
        "ctl",
        "-c",
        yaml.to_str().unwrap(),
        "restart",
        "--log",
        log.to_str().unwrap(),
        "--stats-json",
        stats.to_str().unwrap(),
    ];
    let out = rig.t.weir.run(&args).unwrap();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "{said} {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        rig.t.log()
    );
    let pid: u32 = said
        .strip_prefix("weir pid ")
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    let _end = EndOnDrop(pid);
    assert!(said.ends_with(&format!("took over from pid {old}")), "{said}");
    // The old weir is gone (reaped here: it was this test's child).
    rig.t.kill().unwrap();
    let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), 10).unwrap();
    assert_eq!((per[0], failed), (10, 0), "{}", rig.t.log());
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the new weir did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(worker_sum(&after, "flows_opened"), 20, "{after}");
    // Without a weir to take over from, it says so.
    let out = rig.t.weir.run(&args).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to take over from"));
}

/// The admin API's `/config_dump`, over its Unix socket.
fn config_dump(rig: &MeshRig) -> serde_json::Value {
    let admin = rig.t.dir().join("admin.sock");
    let admin = admin.to_str().unwrap();
    let out = rig.t.weir.run(&[
        "curl",
        "-sS",
        "-m",
        "5",
        "--unix-socket",
        admin,
        "http://weir/config_dump",
    ]);
    serde_json::from_slice(&out.unwrap().stdout).unwrap_or_default()
}

/// Pushes `resources` of `type_url` at `version` on the server's open stream and waits for
/// the client's answer, which must be an ACK.
fn push(
    server: &weir::xds::test_server::TestServer,
    delta: bool,
    type_url: &str,
    version: &str,
    resources: Vec<(&str, envoy_types::pb::google::protobuf::Any)>,
) {
    let nonce = if delta {
        let named = resources.into_iter().map(|(n, a)| (n.to_owned(), version.to_owned(), a));
        server.push_delta(type_url, version, named.collect(), Vec::new())
    } else {
        server.push_sotw(type_url, version, resources.into_iter().map(|(_, a)| a).collect())
    };
    let reply = server.reply_to(&nonce).unwrap_or_else(|| panic!("no reply to {type_url}"));
    assert_eq!(reply.error(), None, "{type_url} {version}: {reply:?}");
}

#[test]
fn services_held_from_xds_serve_from_the_successors_first_packet() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
    use weir::xds::resources::{CLUSTER, LISTENER, LOAD_ASSIGNMENT};
    use weir::xds::test_server::{build, Received, TestServer};
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    for protocol in ["delta", "sotw"] {
        let delta = protocol == "delta";
        let mut rig = MeshRig::build(2).unwrap();
        let socket = rig.t.dir().join("xds.sock");
        let server = TestServer::start_unix(&socket).unwrap();
        let xds = format!(
            "xds:\n  server: unix:{}\n  node: {{ id: weir-test }}\n  protocol: {protocol}\n  \
             reconnect_base_ms: 100\n  reconnect_max_ms: 400\n",
            socket.display()
        );
        // The file has no service: the VIP is xDS's alone.
        let cfg = config(&rig, 1, &xds);
        rig.t.start(&exe(), &cfg).unwrap();
        let t = Duration::from_secs(15);
        server.wait_for(t, |q| q.type_url() == LISTENER).expect("an LDS request");
        let endpoints = |backends: &[usize]| {
            let eps: Vec<(std::net::IpAddr, u16, u32)> =
                backends.iter().map(|&i| (backend_addr(i).parse().unwrap(), 80, 1)).collect();
            ("web", build::any(&build::load_assignment("web", &eps)))
        };
        let cluster = ("web", build::any(&build::eds_cluster("web", LbPolicy::RoundRobin)));
        push(&server, delta, CLUSTER, "c1", vec![cluster]);
        let listener =
            ("web", build::any(&build::listener("web", VIP.parse().unwrap(), 80, "web")));
        push(&server, delta, LISTENER, "l1", vec![listener]);
        push(&server, delta, LOAD_ASSIGNMENT, "e1", vec![endpoints(&[0, 1])]);
        let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), 20).unwrap();
        assert_eq!((per.iter().sum::<usize>(), failed), (20, 0), "{protocol}\n{}", rig.t.log());
        let accepted = config_dump(&rig)["xds"]["updates_accepted"].as_u64();
        // New connections all along, across the restart; the server sends the successor
        // nothing: what it serves, it took over.
        let load = curl_load(&rig, 150);
        std::thread::sleep(Duration::from_millis(500));
        restart(&mut rig, &cfg);
        let (answered, text) = answered(load);
        assert_eq!(answered, 150, "{protocol}: requests lost\n{text}\n{}", rig.t.log());
        assert_eq!(server.streams(), 2, "{protocol}");
        let dump = config_dump(&rig);
        assert_eq!(dump["config"]["services"][0]["name"], "web", "{protocol}: {dump:#}");
        assert_eq!(dump["xds"]["updates_accepted"].as_u64(), accepted, "{protocol}: {dump:#}");
        for (kind, version) in [("clusters", "c1"), ("listeners", "l1"), ("load_assignments", "e1")]
        {
            let shown = &dump["xds"]["types"][kind];
            let v = if delta { &shown["resources"]["web"] } else { &shown["version"] };
            assert_eq!(v, version, "{protocol}: {kind}: {dump:#}");
        }
        // Its stream resumed from the versions held, as after a reconnect.
        let resumed = server
            .wait_for(t, |q| match q {
                Received::Sotw(q) => {
                    q.type_url == CLUSTER && q.response_nonce.is_empty() && q.version_info == "c1"
                }
                Received::Delta(q) => {
                    q.type_url == CLUSTER
                        && q.initial_resource_versions.get("web").map(String::as_str) == Some("c1")
                }
            })
            .unwrap_or_else(|| panic!("{protocol}: no resumed CDS request"));
        assert_eq!(resumed.error(), None);
        // And it takes updates on its own stream.
        push(&server, delta, LOAD_ASSIGNMENT, "e2", vec![endpoints(&[1])]);
        let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), 20).unwrap();
        assert_eq!((per.as_slice(), failed), ([0, 20].as_slice(), 0), "{protocol}");
        rig.t.stop().unwrap();
    }
}

#[test]
fn a_dpdk_takeover_carries_every_flow_across_two_restarts() {
    use weir::demo::DemoBackend;
    if !ready(&["ip", "curl", "nginx", "iperf3"]) {
        return;
    }
    let mut rig = MeshRig::build_on(DemoBackend::DpdkAfPacket, 2).unwrap();
    let services = services_with_bulk(&services_config("nat", "maglev", &[1, 1]));
    let cfg = config(&rig, 2, &services);
    rig.t.start(&exe(), &cfg).unwrap();
    let go = rig.t.dir().join("go");
    let session = rig.t.client.spawn(&[common::PY, "-c", &sessions_script(20, &go)]).unwrap();
    let mut server = rig.backends[0].ns.spawn(&["iperf3", "-s", "-1"]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let iperf =
        rig.t.client.spawn(&["timeout", "30", "iperf3", "-c", VIP, "-t", "12", "-J"]).unwrap();
    let load = curl_load(&rig, 200);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(4));
        restart(&mut rig, &cfg);
    }
    std::fs::write(&go, "").unwrap();
    let out = iperf.wait_with_output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let log = rig.t.log();
    let (bytes, error) = iperf_intervals(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(error, None, "iperf3 failed\n{log}");
    assert!(bytes.len() >= 12 && bytes.iter().all(|b| *b > 0), "{bytes:?}\n{log}");
    let (answered, text) = answered(load);
    assert_eq!(answered, 200, "requests lost\n{text}\n{log}");
    let text = String::from_utf8_lossy(&session.wait_with_output().unwrap().stdout).into_owned();
    let (before, after) = sessions(&text);
    assert_eq!(before.len(), 20, "{text}");
    assert_eq!(before, after, "a keep-alive session failed or moved\n{text}\n{log}");
    assert_eq!(takeovers(&rig), 2, "{log}");
    // Each successor opened the net_af_packet ports beside its predecessor's, which kept
    // them (nothing to close or open in the cut-over).
    assert_eq!(log.matches("DPDK ports opened beside the running weir's").count(), 2, "{log}");
    assert_eq!(log.matches("dpdk_ports_reopened_ms=").count(), 2, "{log}");
    assert!(!log.contains("DPDK ports let go"), "{log}");
    let stats = rig.t.stop().unwrap();
    assert_eq!(stats["ports"]["client_side"]["device"]["driver"], "net_af_packet", "{stats}");
    // The iperf3 connections were carried, not opened again.
    assert_eq!(worker_sum(&stats, "resets_sent"), 0, "{stats}");
}

/// `services` (one service, one cluster, as [`services_config`] writes them) with a second
/// service and cluster, `bulk`: iperf3 on backend 0.
fn services_with_bulk(services: &str) -> String {
    let (head, clusters) = services.split_once("clusters:\n").expect("a clusters section");
    format!(
        "{head}  - {{ name: bulk, vip: {VIP}, port: 5201, protocol: tcp, cluster: bulk }}
clusters:
{clusters}  - name: bulk
    endpoints:
      - {{ address: {}, port: 5201 }}
",
        backend_addr(0)
    )
}

#[test]
fn a_dpdk_successor_that_dies_after_the_ports_were_let_go_gives_them_back() {
    use weir::demo::DemoBackend;
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build_on(DemoBackend::DpdkAfPacket, 1).unwrap();
    // A third port, which weir does not open beside another process's (as it does
    // net_af_packet's): the old weir lets it go in the cut-over, and must take it back.
    let cfg = config(&rig, 1, &services_config("nat", "maglev", &[1])).replacen(
        "    addresses: [198.18.2.1/24, 2001:db8:2::1/64]\n",
        "    addresses: [198.18.2.1/24, 2001:db8:2::1/64]
  - name: spare
    backend: dpdk
    device: net_null0
    addresses: [198.18.9.1/24]
",
        1,
    );
    assert!(cfg.contains("net_null0"), "{cfg}");
    rig.t.start(&exe(), &cfg).unwrap();
    let load = curl_load(&rig, 100);
    std::thread::sleep(Duration::from_millis(500));
    let mut s = connect(&rig);
    s.write_all(&hello(&cfg, weir::handover::VERSION)).unwrap();
    assert_eq!(next_message(&mut s)["message"], "welcome");
    assert_eq!(next_message(&mut s)["message"], "copied");
    s.write_all(&frame(0, br#"{"message":"cut_over"}"#)).unwrap();
    assert_eq!(next_message(&mut s)["message"], "queues");
    // The descriptors (interface locks, the listener) come as one byte with them: read, and
    // so closed. The old weir closed its ports for us, then: we go away.
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte).unwrap();
    assert_eq!(next_message(&mut s)["message"], "paused");
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rig.t.log().contains("takeover failed, forwarding again") {
        assert!(Instant::now() < deadline, "{}", rig.t.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rig.t.log().contains("DPDK ports let go ports=1"), "{}", rig.t.log());
    // It is open again (its device counters are there only for an open port).
    let stats = live_stats(&rig);
    assert_eq!(stats["ports"]["spare"]["device"]["driver"], "net_null", "{stats}");
    let (answered, text) = answered(load);
    assert_eq!(answered, 100, "requests lost\n{text}\n{}", rig.t.log());
    // And a real successor takes over after that.
    restart(&mut rig, &cfg);
    let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), 20).unwrap();
    assert_eq!((per[0], failed), (20, 0), "{}", rig.t.log());
    rig.t.stop().unwrap();
}

#[test]
fn a_dpdk_net_tap_port_is_not_handed_over_and_says_why() {
    use weir::demo::{DemoBackend, Topology, SERVER_V4};
    if !ready(&["ip", "ping"]) {
        return;
    }
    let mut t = Topology::build(DemoBackend::DpdkTap).unwrap();
    let cfg = t.config(
        1,
        &format!("handover: {{ socket: {} }}\n", t.dir().join("handover.sock").display()),
    );
    t.start(&exe(), &cfg).unwrap();
    let next = t.start_successor(&exe(), &cfg).unwrap();
    let out = next.wait_with_output().unwrap();
    assert!(!out.status.success());
    let log = t.log();
    assert!(log.contains("refused the takeover") && log.contains("is not handed over"), "{log}");
    assert!(log.contains("net_tap0"), "{log}");
    // The running weir goes on forwarding.
    let out = t.client.run(&["ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER_V4]).unwrap();
    assert!(out.status.success(), "{}\n{log}", String::from_utf8_lossy(&out.stdout));
    t.stop().unwrap();
}

#[test]
fn a_dpdk_successor_whose_predecessor_dies_after_its_welcome_starts_cold() {
    use weir::demo::DemoBackend;
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build_on(DemoBackend::DpdkAfPacket, 1).unwrap();
    let cfg = config(&rig, 1, &services_config("nat", "maglev", &[1]));
    rig.t.start(&exe(), &cfg).unwrap();
    let next = rig.t.start_successor(&exe(), &cfg).unwrap();
    // The old weir dies once it welcomed the successor, whose EAL is then coming up: the
    // successor has its EAL and its net_af_packet ports open when it finds the old one gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rig.t.log().contains("a new weir takes over: copying the flows") {
        assert!(Instant::now() < deadline, "{}", rig.t.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    rig.t.kill().unwrap();
    let took = rig.t.adopt(next);
    while rig.t.log().matches("weir running").count() < 2 {
        assert!(Instant::now() < deadline, "{}", rig.t.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    took.unwrap();
    let log = rig.t.log();
    assert!(log.contains("starting cold"), "{log}");
    // It started cold on the EAL it had brought up, its ports let go and probed again.
    assert!(log.contains("DPDK ports opened beside the running weir's"), "{log}");
    let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), 20).unwrap();
    assert_eq!((per[0], failed), (20, 0), "{log}");
    rig.t.stop().unwrap();
}
