//! weir's life as a service: the systemd notify protocol in order, and a SIGTERM that drains
//! (new connections refused at once, existing ones served to their end) before it exits.

mod common;

use common::{exe, ready, worker_sum};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use weir::demo::{DemoBackend, Topology, SERVER_V4};
use weir::meshdemo::{services_config, MeshRig, VIP};

fn kill(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill").args([sig, &pid.to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill {sig} {pid}");
}

/// What arrived on the notify socket within `wait`, one message each.
fn messages(sock: &UnixDatagram, wait: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
        }
    }
    got
}

#[test]
fn systemd_hears_ready_reloading_watchdog_and_stopping_in_order() {
    if !ready(&["ip", "ping"]) {
        return;
    }
    let mut t = Topology::build(DemoBackend::AfPacket).unwrap();
    let path = t.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let cfg = t.config(1, "");
    let notify = path.to_str().unwrap().to_owned();
    t.start_with_env(&exe(), &cfg, &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "400000")])
        .unwrap();
    let pid = t.pid().unwrap();
    let first = messages(&sock, Duration::from_millis(600));
    assert_eq!(first.first().map(String::as_str), Some("READY=1"), "{first:?}");
    assert!(first.iter().any(|m| m == "WATCHDOG=1"), "no watchdog in 600 ms: {first:?}");
    kill(pid, "-HUP");
    let reload = messages(&sock, Duration::from_millis(800));
    let at = reload.iter().position(|m| m.starts_with("RELOADING=1")).expect("RELOADING");
    assert!(reload[at].contains("MONOTONIC_USEC="), "{reload:?}");
    assert!(reload[at..].iter().any(|m| m == "READY=1"), "no READY after the reload: {reload:?}");
    assert!(ping(&t), "{}", t.log());
    kill(pid, "-TERM");
    let end = messages(&sock, Duration::from_millis(800));
    assert!(end.iter().any(|m| m == "STOPPING=1"), "{end:?}");
    let _ = t.stop();
}

fn ping(t: &Topology) -> bool {
    let out = t.client.run(&["ping", "-c", "1", "-W", "2", SERVER_V4]).unwrap();
    out.status.success()
}

#[test]
fn sigterm_drains_then_exits_when_the_last_flow_ends() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build(2).unwrap();
    let token = rig.t.dir().join("token");
    std::fs::write(&token, "drain-token-0123456789").unwrap();
    let extra = format!(
        "drain_timeout_ms: 20000\nadmin:\n  listen: 127.0.0.1:9901\n  token_file: {}\n\
         {}mesh: {{ tcp_closing_timeout_ms: 300 }}\n",
        token.display(),
        services_config("nat", "round_robin", &[1, 1])
    );
    let cfg = rig.t.config(1, &extra);
    rig.t.start(&exe(), &cfg).unwrap();
    let pid = rig.t.pid().unwrap();
    let go = rig.t.dir().join("go");
    // A keep-alive session: a request every 100 ms until told to stop, then it closes.
    let script = format!(
        "import http.client, os, time
c = http.client.HTTPConnection('{VIP}', 80, timeout=5)
n = 0; t = time.time()
while not os.path.exists('{}') and time.time() - t < 30:
    c.request('GET', '/'); c.getresponse().read(); n += 1; time.sleep(0.1)
c.close(); print('served', n, flush=True)
",
        go.display()
    );
    let session = rig.t.client.spawn(&[common::PY, "-c", &script]).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    kill(pid, "-TERM");
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    // While draining: not ready, and a new connection is refused at once.
    let ready = rig
        .t
        .weir
        .run(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:9901/ready",
        ])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ready.stdout), "503", "{}", rig.t.log());
    let t0 = Instant::now();
    let fresh = rig.t.client.run(&["curl", "-s", "-m", "5", &format!("http://{VIP}/")]).unwrap();
    assert_eq!(fresh.status.code(), Some(7), "a new connection was not refused: {:?}", fresh);
    assert!(t0.elapsed() < Duration::from_secs(1), "refused slowly: {:?}", t0.elapsed());
    // The existing session goes on for a second more, then ends; weir follows it out.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(rig.t.pid().is_some());
    std::fs::write(&go, "").unwrap();
    let out = session.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let served: u32 = text.trim().strip_prefix("served ").and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(served >= 15, "the session was not served through the drain: {text}\n{}", rig.t.log());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rig.t.log().contains("drained: no flow left") {
        assert!(Instant::now() < deadline, "weir did not finish draining\n{}", rig.t.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(started.elapsed() < Duration::from_secs(15), "drained only at the timeout");
    let stats = rig.t.stop().unwrap();
    assert!(worker_sum(&stats, "resets_sent") >= 1, "{stats}");
}

/// A bulk TCP transfer (iperf3, 6 s) through a NAT service: SIGTERM comes in its second
/// second, the transfer runs to its end with bytes in every interval, and weir exits once it
/// has, well before the drain timeout.
#[test]
fn sigterm_drain_carries_a_long_transfer_to_its_end() {
    if !ready(&["ip", "iperf3", "nginx"]) {
        return;
    }
    let mut rig = MeshRig::build(1).unwrap();
    let extra = format!(
        "drain_timeout_ms: 30000\nmesh: {{ tcp_closing_timeout_ms: 300 }}\n\
         services:\n  - {{ name: bulk, vip: {VIP}, port: 5201, protocol: tcp, cluster: bulk }}\n\
         clusters:\n  - name: bulk\n    endpoints:\n      - {{ address: 198.18.2.10, port: 5201 }}\n"
    );
    let cfg = rig.t.config(1, &extra);
    rig.t.start(&exe(), &cfg).unwrap();
    let pid = rig.t.pid().unwrap();
    let mut server =
        rig.backends[0].ns.spawn(&["iperf3", "-s", "-1", "-B", "198.18.2.10"]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let client = rig.t.client.spawn(&["iperf3", "-c", VIP, "-t", "6", "-i", "1", "-J"]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    kill(pid, "-TERM");
    let started = Instant::now();
    let out = client.wait_with_output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("iperf3: {e}: {}\n{}", String::from_utf8_lossy(&out.stderr), rig.t.log())
    });
    assert!(out.status.success() && report["error"].is_null(), "{report:#}\n{}", rig.t.log());
    let intervals = report["intervals"].as_array().unwrap();
    assert!(intervals.len() >= 6, "{report:#}");
    for (i, iv) in intervals.iter().enumerate() {
        let bytes = iv["sum"]["bytes"].as_u64().unwrap_or(0);
        assert!(bytes > 0, "interval {i} moved nothing through the drain\n{}", rig.t.log());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rig.t.log().contains("drained: no flow left") {
        assert!(Instant::now() < deadline, "weir did not finish draining\n{}", rig.t.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(started.elapsed() < Duration::from_secs(20), "drained only at the timeout");
    // The service's counters saw the transfer: its two connections (control and data), and at
    // least the bytes iperf3 sent.
    let stats = rig.t.stop().unwrap();
    let bulk = &stats["services"][0];
    let sent = report["end"]["sum_sent"]["bytes"].as_u64().unwrap();
    assert_eq!(
        (bulk["name"].as_str(), bulk["flows_opened"].as_u64()),
        (Some("bulk"), Some(2)),
        "{bulk}"
    );
    assert!(bulk["bytes"].as_u64().unwrap() >= sent, "{bulk} below the {sent} bytes sent");
}
