//! The admin API of a running weir, with curl from inside weir's namespace: every endpoint,
//! counters that match the traffic the test sent, Prometheus text that promtool accepts, the
//! endpoint table through a reload, the token, and requests a hostile client would send.

mod common;

use common::{exe, ready, worker_sum};
use weir::demo::{DemoBackend, Topology, SERVER_V4};

const TOKEN: &str = "test-token-0123456789abcdef";
const ADMIN: &str = "http://127.0.0.1:9901";

/// `curl` in weir's namespace: (HTTP status, body).
fn curl(t: &Topology, args: &[&str]) -> (u16, String) {
    let mut all = vec!["curl", "-sS", "-m", "5", "-o", "-", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = t.weir.run(&all).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn get_json(t: &Topology, path: &str) -> serde_json::Value {
    let (code, body) = curl(t, &[&format!("{ADMIN}{path}")]);
    assert_eq!(code, 200, "GET {path}: {body}\n{}", t.log());
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn services(weight: u32) -> String {
    format!(
        "services:
  - {{ name: web, vip: 198.19.0.1, port: 80, protocol: tcp, cluster: web }}
clusters:
  - name: web
    endpoints:
      - {{ address: 198.18.2.2, port: 80, weight: {weight} }}
"
    )
}

fn running() -> Topology {
    let mut t = Topology::build(DemoBackend::AfPacket).unwrap();
    let token = t.dir().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let extra = format!(
        "admin:\n  listen: 127.0.0.1:9901\n  token_file: {}\n{}",
        token.display(),
        services(1)
    );
    let cfg = t.config(1, &extra);
    t.start(&exe(), &cfg).unwrap();
    t
}

#[test]
fn every_endpoint_answers_and_the_counters_match_the_traffic() {
    if !ready(&["ip", "ping", "curl"]) {
        return;
    }
    let mut t = running();
    let ping = t.client.run(&["ping", "-c", "5", "-i", "0.2", "-W", "2", SERVER_V4]).unwrap();
    assert!(ping.status.success(), "{}", t.log());

    // Five echo requests out and five replies back, forwarded while weir runs.
    let stats = get_json(&t, "/stats");
    assert!(worker_sum(&stats, "forwarded") >= 10, "{stats:#}");
    assert!(stats["ports"]["client_side"]["rx_packets"].as_u64().unwrap() >= 5, "{stats:#}");
    assert!(stats["generation"].as_u64().is_some(), "{stats:#}");

    // The same counter in Prometheus' text, labelled by worker.
    let (code, metrics) = curl(&t, &[&format!("{ADMIN}/metrics")]);
    assert_eq!(code, 200);
    let forwarded = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weir_worker_forwarded_total{worker=\"0\"} "))
        .unwrap_or_else(|| panic!("no forwarded counter:\n{metrics}"));
    assert!(forwarded.trim().parse::<u64>().unwrap() >= 10, "{metrics}");
    assert!(
        metrics.contains("weir_endpoint_weight{cluster=\"web\",endpoint=\"198.18.2.2:80\"} 1"),
        "{metrics}"
    );
    // OpenMetrics for a scraper that asks for it.
    let accept = "Accept: application/openmetrics-text; version=1.0.0";
    let (code, open) = curl(&t, &["-H", accept, &format!("{ADMIN}/metrics")]);
    assert_eq!(code, 200);
    assert!(open.contains("# TYPE weir_worker_forwarded counter"), "{open}");
    assert!(open.trim_end().ends_with("# EOF"), "{open}");

    // A window opened by clear=1 holds only what came after.
    get_json(&t, "/runtime?clear=1");
    let rt = get_json(&t, "/runtime");
    let w = &rt["workers"][0];
    assert!(w["packets"].as_u64().unwrap() < 5, "{rt:#}");
    assert!(w["polls"].as_u64().unwrap() > 0, "{rt:#}");
    assert!((0.0..=1.0).contains(&w["busy_share"].as_f64().unwrap()), "{rt:#}");

    let clusters = get_json(&t, "/clusters");
    let e = &clusters["clusters"][0]["endpoints"][0];
    assert_eq!((e["address"].as_str(), e["weight"].as_u64()), (Some("198.18.2.2"), Some(1)));
    assert_eq!(e["takes_new_flows"], true, "{clusters:#}");
    let services = get_json(&t, "/services");
    assert_eq!(services["services"][0]["vip"], "198.19.0.1", "{services:#}");

    // Defaults filled in: the file sets no idle policy.
    let dump = get_json(&t, "/config_dump");
    assert_eq!(dump["config"]["ports"][0]["name"], "client_side", "{dump:#}");
    assert_eq!(dump["config"]["idle"]["sleep_ms"], 10, "{dump:#}");

    assert_eq!(curl(&t, &[&format!("{ADMIN}/ready")]).0, 200);
    assert_eq!(curl(&t, &[&format!("{ADMIN}/healthz")]).0, 200);

    // A reload through the API, with the token, and the endpoint table follows it.
    let cfg = std::fs::read_to_string(t.dir().join("weir.yaml")).unwrap();
    std::fs::write(t.dir().join("weir.yaml"), cfg.replace("weight: 1", "weight: 7")).unwrap();
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (code, body) = curl(&t, &["-X", "POST", "-H", &bearer, &format!("{ADMIN}/reload")]);
    assert_eq!(code, 200, "{body}");
    let clusters = get_json(&t, "/clusters");
    assert_eq!(clusters["clusters"][0]["endpoints"][0]["weight"], 7, "{clusters:#}");
    // The log says what the services were at start, and what the reload changed.
    let log = t.log();
    assert!(
        log.contains("service web 198.19.0.1:80/tcp nat -> cluster web: 198.18.2.2:80 w1"),
        "{log}"
    );
    assert!(log.contains("web: endpoint 198.18.2.2:80 reweighted 1 -> 7"), "{log}");
    // A reload that changes more than the mesh is refused, naming the field.
    let cfg = std::fs::read_to_string(t.dir().join("weir.yaml")).unwrap();
    std::fs::write(t.dir().join("weir.yaml"), cfg.replace("198.18.2.1/24", "198.18.2.1/25"))
        .unwrap();
    let (code, body) = curl(&t, &["-X", "POST", "-H", &bearer, &format!("{ADMIN}/reload")]);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("ports[1].addresses[0]"), "{body}");
    std::fs::write(t.dir().join("weir.yaml"), cfg).unwrap();
    let (code, body) =
        curl(&t, &["-X", "POST", "-H", &bearer, &format!("{ADMIN}/logging?level=debug")]);
    assert_eq!(code, 200, "{body}");
    t.stop().unwrap();
}

#[test]
fn prometheus_accepts_the_metrics() {
    if !ready(&["ip", "ping", "curl", "promtool"]) {
        return;
    }
    let mut t = running();
    let ping = t.client.run(&["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER_V4]).unwrap();
    assert!(ping.status.success(), "{}", t.log());
    let (code, metrics) = curl(&t, &[&format!("{ADMIN}/metrics")]);
    assert_eq!(code, 200);
    let file = t.dir().join("metrics.txt");
    std::fs::write(&file, &metrics).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    t.stop().unwrap();
}

#[test]
fn hostile_requests_get_a_4xx_and_the_server_stays_up() {
    if !ready(&["ip", "ping", "curl", "socat"]) {
        return;
    }
    let mut t = running();
    let url = |p: &str| format!("{ADMIN}{p}");
    // State changes without the token, or with a wrong one.
    assert_eq!(curl(&t, &["-X", "POST", &url("/reload")]).0, 401);
    let wrong = "Authorization: Bearer test-token-0123456789abcdeX";
    assert_eq!(curl(&t, &["-X", "POST", "-H", wrong, &url("/reload")]).0, 401);
    assert_eq!(curl(&t, &["-X", "POST", "-H", wrong, &url("/logging?level=trace")]).0, 401);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    // Unknown paths, wrong methods, bad query values, a missing parameter, a bad filter.
    assert_eq!(curl(&t, &[&url("/nope")]).0, 404);
    assert_eq!(curl(&t, &[&url("/../../etc/passwd")]).0, 404);
    assert_eq!(curl(&t, &["-X", "DELETE", &url("/stats")]).0, 405);
    assert_eq!(curl(&t, &[&url("/reload")]).0, 405);
    assert_eq!(curl(&t, &[&url("/runtime?clear=yes")]).0, 400);
    assert_eq!(curl(&t, &["-X", "POST", "-H", &bearer, &url("/logging")]).0, 400);
    assert_eq!(curl(&t, &["-X", "POST", "-H", &bearer, &url("/logging?level=%5B%5B")]).0, 400);
    // A body far larger than anything takes.
    let big = t.dir().join("big");
    std::fs::write(&big, vec![b'x'; 1 << 20]).unwrap();
    let data = format!("@{}", big.display());
    let (code, _) =
        curl(&t, &["-X", "POST", "-H", &bearer, "--data-binary", &data, &url("/reload")]);
    assert_eq!(code, 413);
    // A reload of a broken file is refused, and says why; the running one stays.
    let cfg_path = t.dir().join("weir.yaml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, cfg.replace("weight: 1", "weight: [")).unwrap();
    let (code, body) = curl(&t, &["-X", "POST", "-H", &bearer, &url("/reload")]);
    assert_eq!(code, 409, "{body}");
    std::fs::write(&cfg_path, &cfg).unwrap();
    // A client that sends part of its headers and stops is cut off after the header timeout.
    let slow = format!(
        "import socket, time
s = socket.create_connection(('127.0.0.1', 9901))
s.sendall(b'GET /stats HTTP/1.1\\r\\nHost: x\\r\\n')
s.settimeout({})
t = time.time()
try:
    d = s.recv(4096)
except socket.timeout:
    d = b'still open'
print(round(time.time() - t), d[:12])",
        weir::admin::HEADER_READ_TIMEOUT.as_secs() + 5
    );
    let out = t.weir.run(&[common::PY, "-c", &slow]).unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    // Closed (nothing read), at the timeout: not before it, not held on past it.
    let secs: u64 = said.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let timeout = weir::admin::HEADER_READ_TIMEOUT.as_secs();
    assert!(said.trim().ends_with("b''"), "{said}");
    assert!((timeout - 1..=timeout + 2).contains(&secs), "closed after {secs} s: {said}");
    // Many connections left idle: the server still answers while it has room; past its cap
    // the excess is closed and counted, forwarding goes on, and the server answers again once
    // they are gone.
    let mut idle = Vec::new();
    let open_idle = |idle: &mut Vec<std::process::Child>, n: usize| {
        for _ in 0..n {
            idle.push(
                std::process::Command::new("ip")
                    .args(["netns", "exec", t.weir.name(), "socat", "-u", "-T", "3"])
                    .args(["TCP:127.0.0.1:9901", "/dev/null"])
                    .spawn()
                    .unwrap(),
            );
        }
    };
    open_idle(&mut idle, 50);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(curl(&t, &[&url("/healthz")]).0, 200);
    open_idle(&mut idle, weir::admin::MAX_CONNECTIONS + 16 - 50);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let ping = t.client.run(&["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER_V4]).unwrap();
    assert!(ping.status.success(), "{}", t.log());
    for mut c in idle {
        let _ = c.kill();
        let _ = c.wait();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while curl(&t, &[&url("/healthz")]).0 != 200 {
        assert!(std::time::Instant::now() < deadline, "the admin server does not answer again");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let stats = get_json(&t, "/stats");
    assert!(stats["admin"]["connections_refused"].as_u64().unwrap() >= 16, "{stats:#}");
    t.stop().unwrap();
}

#[test]
fn a_non_loopback_listener_without_a_token_is_refused() {
    let dir = std::env::temp_dir().join(format!("weir-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("weir.yaml");
    std::fs::write(
        &cfg,
        "ports:\n  - { name: a, backend: tap, addresses: [198.18.1.1/24] }\n\
         admin:\n  listen: 198.18.1.1:9901\n",
    )
    .unwrap();
    let out = std::process::Command::new(exe()).args(["check", "-c"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted");
    assert!(err.contains("admin.token_file") && err.contains("loopback"), "{err}");
    std::fs::write(
        &cfg,
        "ports:\n  - { name: a, backend: tap, addresses: [198.18.1.1/24] }\n\
         admin:\n  listen: localhost-ish\n",
    )
    .unwrap();
    let out = std::process::Command::new(exe()).args(["check", "-c"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin.listen"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctl_asks_over_a_unix_socket_with_tables_json_and_the_token() {
    if !ready(&["ip", "ping", "tshark"]) {
        return;
    }
    let mut t = Topology::build(DemoBackend::AfPacket).unwrap();
    let token = t.dir().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let sock = t.dir().join("admin.sock");
    let extra = format!(
        "admin:\n  listen: unix:{}\n  token_file: {}\n{}",
        sock.display(),
        token.display(),
        services(3)
    );
    let cfg_text = t.config(1, &extra);
    t.start(&exe(), &cfg_text).unwrap();
    let ping = t.client.run(&["ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER_V4]).unwrap();
    assert!(ping.status.success(), "{}", t.log());
    let cfg = t.dir().join("weir.yaml");
    let exe = exe();
    let ctl = |args: &[&str]| {
        let mut all = vec![exe.to_str().unwrap(), "ctl", "-c", cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = t.weir.run(&all).unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stats, err) = ctl(&["stats"]);
    assert!(ok && stats.contains("client_side") && stats.contains("rx_packets"), "{stats}{err}");
    let (ok, clusters, err) = ctl(&["clusters"]);
    assert!(
        ok && clusters.contains("198.18.2.2:80") && clusters.contains("web"),
        "{clusters}{err}"
    );
    let (ok, services, _) = ctl(&["services"]);
    assert!(ok && services.contains("198.19.0.1"), "{services}");
    let (ok, runtime, _) = ctl(&["runtime", "--clear"]);
    assert!(ok && runtime.contains("cycles/pkt"), "{runtime}");
    let (ok, json, _) = ctl(&["--json", "stats"]);
    let j: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(ok && worker_sum(&j, "forwarded") >= 6, "{json}");
    let (ok, out, err) = ctl(&["reload"]);
    assert!(ok && out.starts_with("reloaded:"), "{out}{err}");
    let (ok, out, _) = ctl(&["ready"]);
    assert!(ok && out.trim() == "ready", "{out}");
    // The operator fails readiness, forwarding goes on, and restores it.
    let (ok, out, err) = ctl(&["health", "fail"]);
    assert!(ok && out.contains("readiness failed"), "{out}{err}");
    let (ok, _, err) = ctl(&["ready"]);
    assert!(!ok && err.contains("503"), "{err}");
    let ping = t.client.run(&["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER_V4]).unwrap();
    assert!(ping.status.success(), "{}", t.log());
    let (ok, out, _) = ctl(&["health", "ok"]);
    assert!(ok && out.contains("restored"), "{out}");
    assert!(ctl(&["ready"]).0);
    // A capture written to a file while the client pings: tshark reads the echo requests.
    let file = t.dir().join("ctl.pcapng");
    let mut pinging =
        t.client.spawn(&["ping", "-c", "20", "-i", "0.2", "-W", "1", SERVER_V4]).unwrap();
    let (ok, out, err) = ctl(&[
        "capture",
        "--port",
        "client_side",
        "--protocol",
        "icmp",
        "--count",
        "3",
        "--duration-ms",
        "10000",
        "-w",
        file.to_str().unwrap(),
    ]);
    let _ = pinging.kill();
    let _ = pinging.wait();
    assert!(ok && out.contains("written to"), "{out}{err}");
    let read = std::process::Command::new("tshark")
        .args(["-r", file.to_str().unwrap(), "-T", "fields", "-e", "ip.src", "-e", "icmp.type"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&read.stdout);
    assert_eq!(text.lines().collect::<Vec<_>>(), ["198.18.1.2\t8"; 3], "{text}");
    // A capture refused says why, leaves no file and does not clobber one already there.
    let bad = t.dir().join("bad.pcapng");
    let (ok, _, err) = ctl(&["capture", "--port", "nope", "-w", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("404") && err.contains("nope"), "{err}");
    assert!(!bad.exists());
    let (ok, _, _) = ctl(&["capture", "--port", "nope", "-w", file.to_str().unwrap()]);
    assert!(!ok);
    let kept = std::process::Command::new("tshark")
        .args(["-r", file.to_str().unwrap(), "-T", "fields", "-e", "icmp.type"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&kept.stdout).lines().count(), 3, "the file was clobbered");
    assert_eq!(
        std::fs::read_dir(t.dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .count(),
        0
    );
    // Drain: new flows refused, readiness fails.
    let (ok, out, err) = ctl(&["drain"]);
    assert!(ok && out.starts_with("draining:"), "{out}{err}");
    let (ok, _, err) = ctl(&["ready"]);
    assert!(!ok && err.contains("503"), "{err}");
    // Without the token (another listener given, no token file): refused, and it says so.
    let admin = format!("unix:{}", sock.display());
    let out = t.weir.run(&[exe.to_str().unwrap(), "ctl", "--admin", &admin, "reload"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("401"), "{err}");
    t.stop().unwrap();
    assert!(!sock.exists(), "the socket is left behind");
}

/// `/flows` pages through the flows of 20 connections the test holds open, while weir
/// forwards: every one listed once, with its client port, its endpoint, established.
#[test]
fn the_flow_listing_matches_the_connections_held_open() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    use weir::meshdemo::{services_config, MeshRig, VIP};
    let mut rig = MeshRig::build(2).unwrap();
    let extra = format!(
        "admin:\n  listen: 127.0.0.1:9901\n{}",
        services_config("nat", "round_robin", &[1, 1])
    );
    let cfg = rig.t.config(1, &extra);
    rig.t.start(&exe(), &cfg).unwrap();
    let go = rig.t.dir().join("go");
    let script = format!(
        "import http.client, os, time
cs = [http.client.HTTPConnection('{VIP}', 80, timeout=5) for _ in range(20)]
for c in cs:
    c.request('GET', '/'); b = c.getresponse().read().decode().strip()
    print(c.sock.getsockname()[1], b, flush=True)
print('held', flush=True)
t = time.time()
while not os.path.exists('{}') and time.time() - t < 30: time.sleep(0.05)
",
        go.display()
    );
    let mut session = rig.t.client.spawn(&[common::PY, "-c", &script]).unwrap();
    let stdout = session.stdout.take().unwrap();
    let mut held: Vec<(String, String)> = Vec::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.unwrap();
        if line == "held" {
            break;
        }
        let (port, backend) = line.split_once(' ').unwrap();
        held.push((port.to_owned(), backend.to_owned()));
    }
    assert_eq!(held.len(), 20);
    // Pages of 8: 8, 8, 4.
    let mut listed: Vec<serde_json::Value> = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let q = if cursor.is_empty() { String::new() } else { format!("&cursor={cursor}") };
        let page = get_json(&rig.t, &format!("/flows?service=web&limit=8{q}"));
        let flows = page["flows"].as_array().unwrap();
        assert!(flows.len() <= 8, "{page:#}");
        listed.extend(flows.iter().cloned());
        pages += 1;
        match page["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(listed.len(), 20, "{listed:#?}");
    for (port, backend) in &held {
        let f = listed
            .iter()
            .find(|f| f["client"].as_str().unwrap().ends_with(&format!(":{port}")))
            .unwrap_or_else(|| panic!("client port {port} not listed"));
        assert_eq!(f["state"], "established", "{f}");
        assert_eq!(f["vip"], format!("{VIP}:80"), "{f}");
        // Backend bN is 198.18.2.(10 + N).
        let n: u8 = backend.trim_start_matches('b').parse().unwrap();
        assert_eq!(f["endpoint"], format!("198.18.2.{}:80", 10 + n), "{f}");
    }
    // The service's counters and each endpoint's active flows match the connections held.
    let on_b0 = held.iter().filter(|(_, b)| b == "b0").count();
    let services = get_json(&rig.t, "/services");
    let web = &services["services"][0];
    assert_eq!(web["flows_active"], 20, "{services:#}");
    assert_eq!(web["flows_opened"], 20, "{services:#}");
    assert_eq!(web["flows_failed"], 0, "{services:#}");
    // Each connection: SYN, SYN-ACK, ACK, request, response (and their ACKs), at least.
    let packets = web["packets"].as_u64().unwrap();
    assert!(packets >= 20 * 5, "{services:#}");
    assert!(web["bytes"].as_u64().unwrap() >= packets * 54, "{services:#}");
    let clusters = get_json(&rig.t, "/clusters");
    let active = |addr: &str| {
        clusters["clusters"][0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["address"] == addr)
            .map(|e| e["active_flows"].as_u64().unwrap())
    };
    assert_eq!(active("198.18.2.10"), Some(on_b0 as u64), "{clusters:#}");
    assert_eq!(active("198.18.2.11"), Some((20 - on_b0) as u64), "{clusters:#}");
    let (_, metrics) = curl(&rig.t, &[&format!("{ADMIN}/metrics")]);
    assert!(metrics.contains("weir_service_flows_active{service=\"web\"} 20"), "{metrics}");
    assert!(metrics.contains("weir_service_flows_opened_total{service=\"web\"} 20"), "{metrics}");
    // The endpoint filter: exactly the connections on backend 0.
    let page = get_json(&rig.t, "/flows?endpoint=198.18.2.10:80&limit=1000");
    assert_eq!(page["flows"].as_array().unwrap().len(), on_b0, "{page:#}");
    // The same through weir ctl, as a table.
    let out = rig
        .t
        .weir
        .run(&[
            exe().to_str().unwrap(),
            "ctl",
            "--admin",
            "127.0.0.1:9901",
            "flows",
            "--limit",
            "5",
        ])
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().filter(|l| l.contains("established")).count(), 5, "{table}");
    assert!(table.contains("more: --cursor"), "{table}");
    // Bad queries.
    assert_eq!(curl(&rig.t, &[&format!("{ADMIN}/flows?limit=0")]).0, 400);
    assert_eq!(curl(&rig.t, &[&format!("{ADMIN}/flows?cursor=x")]).0, 400);
    assert_eq!(curl(&rig.t, &[&format!("{ADMIN}/flows?service=nope")]).0, 404);
    std::fs::write(&go, "").unwrap();
    let _ = session.wait();
    rig.t.stop().unwrap();
}

/// `POST /capture`: the frames the test sent, read back with tshark, in order and with their
/// bytes; a capture of dropped frames carries each drop's reason as a packet comment.
#[test]
fn captures_read_back_with_tshark() {
    if !ready(&["ip", "ping", "curl", "tshark"]) {
        return;
    }
    let mut t = running();
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let rx = t.dir().join("rx.pcapng");
    let url = format!(
        "{ADMIN}/capture?port=client_side&direction=rx&protocol=icmp&prefix=198.18.2.2/32&count=6&duration_ms=8000"
    );
    let mut cap = std::process::Command::new("ip")
        .args(["netns", "exec", t.weir.name(), "curl", "-sS", "-X", "POST", "-H", &bearer])
        .arg("-o")
        .arg(&rx)
        .arg(&url)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Six echo requests with payloads the test can recognise: 0x01.., 0x02.., 0x03...
    for (i, pattern) in ["01", "02", "03", "04", "05", "06"].iter().enumerate() {
        let seq = (i + 1).to_string();
        let out = t
            .client
            .run(&["ping", "-c", "1", "-W", "2", "-p", pattern, "-s", "32", SERVER_V4])
            .unwrap();
        assert!(out.status.success(), "ping {seq}: {}", t.log());
    }
    assert!(cap.wait().unwrap().success());
    let out = std::process::Command::new("tshark")
        .args([
            "-r",
            rx.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "icmp.type",
            "-e",
            "data.data",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "tshark: {text}{}", String::from_utf8_lossy(&out.stderr));
    for (i, l) in lines.iter().enumerate() {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(&f[..3], &["198.18.1.2", SERVER_V4, "8"], "{l}");
        // ping -p fills the payload (after its 16-byte timestamp) with the pattern.
        let byte = format!("{:02x}", i + 1);
        assert!(f[3].ends_with(&byte.repeat(8)), "frame {i}: {l}");
    }
    // Dropped frames, each with its reason.
    let dropped = t.dir().join("dropped.pcapng");
    let url =
        format!("{ADMIN}/capture?port=client_side&direction=dropped&protocol=icmp&prefix=198.18.1.2/32&count=2&duration_ms=8000");
    let mut cap = std::process::Command::new("ip")
        .args(["netns", "exec", t.weir.name(), "curl", "-sS", "-X", "POST", "-H", &bearer])
        .arg("-o")
        .arg(&dropped)
        .arg(&url)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // A TTL that runs out at weir, and a destination no route leads to.
    let _ = t.client.run(&["ping", "-c", "1", "-W", "1", "-t", "1", SERVER_V4]);
    let _ = t.client.run(&["ping", "-c", "1", "-W", "1", "192.0.2.77"]);
    assert!(cap.wait().unwrap().success());
    let out = std::process::Command::new("tshark")
        .args([
            "-r",
            dropped.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "ip.dst",
            "-e",
            "frame.comment",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{SERVER_V4}\tdropped: ttl_exceeded")), "{text}");
    assert!(text.contains("192.0.2.77\tdropped: no_route"), "{text}");
    // Hostile captures: no token, an unknown port, a bad direction.
    assert_eq!(curl(&t, &["-X", "POST", &format!("{ADMIN}/capture?port=client_side")]).0, 401);
    assert_eq!(
        curl(&t, &["-X", "POST", "-H", &bearer, &format!("{ADMIN}/capture?port=nope")]).0,
        404
    );
    assert_eq!(
        curl(
            &t,
            &[
                "-X",
                "POST",
                "-H",
                &bearer,
                &format!("{ADMIN}/capture?port=client_side&direction=up")
            ]
        )
        .0,
        400
    );
    t.stop().unwrap();
}
