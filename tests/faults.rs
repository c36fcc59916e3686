//! Faults around a running weir: a second instance, signals, a closed standard output, an
//! unwritable counters file, interfaces that go away and come back or go down.

mod common;

use common::{exe, ready};
use std::time::{Duration, Instant};
use weir::demo::{DemoBackend, Topology, SERVER_V4};
use weir::netns::{configure_host, sh, veth};

fn ping(t: &Topology) -> bool {
    let out = t.client.run(&["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER_V4]).unwrap();
    out.status.success()
}

fn running(extra: &str) -> Topology {
    running_on(DemoBackend::AfPacket, extra)
}

fn running_on(backend: DemoBackend, extra: &str) -> Topology {
    let mut t = Topology::build(backend).unwrap();
    let cfg = t.config(1, extra);
    t.start(&exe(), &cfg).unwrap();
    assert!(ping(&t), "no traffic through weir at the start\n{}", t.log());
    t
}

fn kill(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill").args([sig, &pid.to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill {sig} {pid}");
}

/// Waits up to `secs` for `cond`.
fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// CPU time (user + system) of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// The share of one core `pid` used over `window`, percent.
fn cpu_percent(pid: u32, window: Duration) -> u64 {
    let hz = 100; // USER_HZ on Linux
    let before = cpu_ticks(pid);
    std::thread::sleep(window);
    let used = cpu_ticks(pid) - before;
    used * 100 * 1000 / (hz * u64::try_from(window.as_millis()).unwrap())
}

#[test]
fn a_second_weir_on_the_same_interfaces_is_refused_naming_the_first() {
    if !ready(&["ip", "ping"]) {
        return;
    }
    let mut t = running("");
    let first = t.pid().unwrap();
    let cfg = t.dir().join("weir.yaml");
    let out = t
        .weir
        .run(&[exe().to_str().unwrap(), "run", "-c", cfg.to_str().unwrap()])
        .expect("the second weir runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the second weir started: {err}");
    assert!(err.contains("interface `w0` is in use by weir"), "{err}");
    assert!(err.contains(&format!("pid {first}")), "{err}");
    assert!(ping(&t), "the first weir stopped forwarding");
    t.stop().unwrap();
}

#[test]
fn a_stop_wakes_workers_asleep_in_poll_at_once() {
    if !ready(&["ip", "ping"]) {
        return;
    }
    // Workers sleep up to a second when idle, after ten empty polls.
    let mut t = running("idle: { policy: adaptive, empty_polls: 10, sleep_ms: 1000 }\n");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    t.stop().unwrap();
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(700), "stopping took {took:?}: it waited out the sleep");
}

#[test]
fn every_signal_has_its_behaviour() {
    if !ready(&["ip", "ping"]) {
        return;
    }
    let t = running("");
    let pid = t.pid().unwrap();
    // USR1: the counters to the log (standard error), and weir goes on.
    kill(pid, "-USR1");
    assert!(eventually(5, || t.log().contains("drops by reason")), "{}", t.log());
    // USR2: the counters file written now.
    let _ = std::fs::remove_file(t.stats_path());
    kill(pid, "-USR2");
    assert!(eventually(5, || t.stats_path().exists()), "{}", t.log());
    let now: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.stats_path()).unwrap()).unwrap();
    assert!(now["ports"]["client_side"]["rx_packets"].as_u64().unwrap_or(0) > 0, "{now}");
    // ALRM: ignored, said so.
    kill(pid, "-ALRM");
    assert!(eventually(5, || t.log().contains("SIGALRM ignored")), "{}", t.log());
    assert!(ping(&t), "weir stopped forwarding after the signals\n{}", t.log());
    // QUIT: stops like TERM, with its report.
    let _ = std::fs::remove_file(t.stats_path());
    kill(pid, "-QUIT");
    assert!(eventually(10, || t.stats_path().exists()), "no report on SIGQUIT: {}", t.log());
    assert!(eventually(5, || !std::path::Path::new(&format!("/proc/{pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")));
}

#[test]
fn a_closed_stdout_loses_only_the_printed_report() {
    if !ready(&["ip", "sh"]) {
        return;
    }
    let t = Topology::build(DemoBackend::AfPacket).unwrap();
    let cfg = t.dir().join("closed.yaml");
    std::fs::write(&cfg, t.config(1, "")).unwrap();
    let stats = t.dir().join("closed.json");
    let log = t.dir().join("closed.log");
    let script = format!(
        "exec {} run -c {} --stats-json {} 2>{} >&-",
        exe().display(),
        cfg.display(),
        stats.display(),
        log.display()
    );
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", t.weir.name(), "sh", "-c", &script])
        .spawn()
        .unwrap();
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(eventually(30, || logged().contains("weir running")), "{}", logged());
    kill(child.id(), "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}: {}", logged());
    assert!(!logged().contains("panicked"), "{}", logged());
    let written = std::fs::read_to_string(&stats).unwrap_or_default();
    assert!(written.contains("\"ports\""), "no counters file: {}", logged());
}

#[test]
fn an_unwritable_counters_file_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("weir-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("tap.yaml");
    std::fs::write(&cfg, "ports:\n  - { name: a, backend: tap, addresses: [198.18.1.1/24] }\n")
        .unwrap();
    let t0 = Instant::now();
    let out = std::process::Command::new(exe())
        .args(["run", "-c", cfg.to_str().unwrap(), "--stats-json", "/proc/weir/nowhere.json"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--stats-json /proc/weir/nowhere.json cannot be written"), "{err}");
    assert!(!err.contains("weir running"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// weir's side of the server link (w1, and its peer s0) removed: weir logs it and does not
/// spin; created again (a new device under the same name), weir takes it back.
#[test]
fn an_interface_removed_and_returned_is_taken_back() {
    if !ready(&["ip", "ping"]) {
        return;
    }
    let mut t = running("");
    let pid = t.pid().unwrap();
    let mac = || {
        let out = t.weir.run(&["cat", "/sys/class/net/w1/address"]).unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let before = mac();
    sh(&["ip", "-n", t.weir.name(), "link", "del", "w1"]).unwrap();
    assert!(eventually(5, || t.log().contains("link down")), "{}", t.log());
    let busy = cpu_percent(pid, Duration::from_secs(2));
    assert!(busy < 40, "weir used {busy}% of a core with its interface gone\n{}", t.log());
    veth(&t.weir, "w1", &t.server, "s0").unwrap();
    t.weir.quiet_kernel("w1").unwrap();
    configure_host(
        &t.server,
        "s0",
        "198.18.2.2/24",
        "198.18.2.1",
        "2001:db8:2::2/64",
        "2001:db8:2::1",
    )
    .unwrap();
    assert!(eventually(5, || t.log().contains("reopened=true")), "{}", t.log());
    // The server still knows weir by the old MAC: the new device has it.
    assert_eq!(mac(), before, "the returned device did not get weir's MAC");
    if !eventually(10, || ping(&t)) {
        let stats = t.stop().unwrap();
        panic!("no traffic after the interface returned\n{}\n{stats:#}", t.log());
    }
    t.stop().unwrap();
}

/// The server link set down and up again: logged, no spinning, traffic resumes.
#[test]
fn a_link_down_and_up_again_is_followed() {
    if !ready(&["ip", "ping"]) {
        return;
    }
    let mut t = running("");
    let pid = t.pid().unwrap();
    t.weir.exec(&["ip", "link", "set", "w1", "down"]).unwrap();
    assert!(eventually(5, || t.log().contains("link down")), "{}", t.log());
    let busy = cpu_percent(pid, Duration::from_secs(2));
    assert!(busy < 40, "weir used {busy}% of a core with its link down\n{}", t.log());
    t.weir.exec(&["ip", "link", "set", "w1", "up"]).unwrap();
    assert!(eventually(5, || t.log().contains("link up")), "{}", t.log());
    assert!(eventually(10, || ping(&t)), "no traffic after the link came back\n{}", t.log());
    t.stop().unwrap();
}

/// The client's TAP device deleted under weir: logged, no spinning; a TAP device of the same
/// name created again in weir's namespace is attached to, and traffic resumes.
#[test]
fn a_tap_device_deleted_and_created_again_is_taken_back() {
    if !ready(&["ip", "ping"]) {
        return;
    }
    let mut t = running_on(DemoBackend::Tap, "");
    let pid = t.pid().unwrap();
    sh(&["ip", "-n", t.client.name(), "link", "del", "c0"]).unwrap();
    assert!(eventually(5, || t.log().contains("device deleted")), "{}", t.log());
    let busy = cpu_percent(pid, Duration::from_secs(2));
    assert!(busy < 40, "weir used {busy}% of a core with its TAP device gone\n{}", t.log());
    sh(&["ip", "-n", t.weir.name(), "tuntap", "add", "dev", "c0", "mode", "tap"]).unwrap();
    assert!(eventually(5, || t.log().contains("reopened=true")), "{}", t.log());
    sh(&["ip", "-n", t.weir.name(), "link", "set", "c0", "netns", t.client.name()]).unwrap();
    configure_host(
        &t.client,
        "c0",
        "198.18.1.2/24",
        "198.18.1.1",
        "2001:db8:1::2/64",
        "2001:db8:1::1",
    )
    .unwrap();
    if !eventually(10, || ping(&t)) {
        let stats = t.stop().unwrap();
        panic!("no traffic after the TAP device returned\n{}\n{stats:#}", t.log());
    }
    t.stop().unwrap();
}

/// A DPDK port's link (`net_af_packet` on a veth) set down and up again: logged, and traffic
/// resumes.
#[test]
fn a_dpdk_link_down_and_up_again_is_followed() {
    if !ready(&["ip", "ping"]) {
        return;
    }
    let mut t = running_on(DemoBackend::DpdkAfPacket, "");
    t.weir.exec(&["ip", "link", "set", "w1", "down"]).unwrap();
    assert!(eventually(5, || t.log().contains("link down")), "{}", t.log());
    t.weir.exec(&["ip", "link", "set", "w1", "up"]).unwrap();
    assert!(eventually(5, || t.log().contains("link up")), "{}", t.log());
    assert!(eventually(10, || ping(&t)), "no traffic after the link came back\n{}", t.log());
    t.stop().unwrap();
}

/// `weir run` refuses what `weir check` refuses, before it opens anything, naming the field.
#[test]
fn run_refuses_an_absurd_configuration_without_starting() {
    let dir = std::env::temp_dir().join(format!("weir-absurd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = "ports:\n  - { name: a, backend: tap, addresses: [198.18.1.1/24] }\n";
    for (extra, field) in [
        ("neighbor: { capacity_entries: 1099511627776 }\n", "neighbor.capacity_entries"),
        ("mempool: { buffers: 16777216, buffer_bytes: 65535 }\n", "mempool.buffers"),
        ("idle: { sleep_ms: 4294967295 }\n", "idle.sleep_ms"),
        (
            "workers:\n  - {}\n  - {}\nmesh: { handoff_ring_packets: 0 }\n",
            "mesh.handoff_ring_packets",
        ),
    ] {
        let cfg = dir.join("absurd.yaml");
        std::fs::write(&cfg, format!("{extra}{base}")).unwrap();
        let out = std::process::Command::new(exe())
            .args(["run", "-c", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra}: {err}");
        assert!(err.contains(field), "{extra}: {err}");
        assert!(!err.contains("weir running"), "{extra}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Resident memory of `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Malicious and absurd files written over the running configuration, while traffic flows:
/// each reload is refused and logged, memory stays flat, traffic goes on; a stop that comes
/// during the parse of a large file is honoured at once.
#[test]
fn bad_files_written_over_the_running_configuration_leave_it_running() {
    if !ready(&["ip", "ping"]) {
        return;
    }
    let mut t = running("");
    let pid = t.pid().unwrap();
    let path = t.dir().join("weir.yaml");
    let good = std::fs::read_to_string(&path).unwrap();
    let rss_before = rss_kib(pid);
    let mut bomb = format!("eal:\n  file_prefix: &a \"{}\"\n  args:\n", "x".repeat(1 << 20));
    for _ in 0..20_000 {
        bomb.push_str("    - *a\n");
    }
    bomb.push_str(&good);
    let bad = [
        bomb,
        format!("{good}eal:\n  args: {}", "[".repeat(100_000)),
        format!("neighbor: {{ capacity_entries: 1099511627776 }}\n{good}"),
        good.replace("198.18.2.1/24", "198.18.2.7/24"),
    ];
    for (i, text) in bad.iter().enumerate() {
        let rejected = t.log().matches("rejected").count();
        std::fs::write(&path, text).unwrap();
        kill(pid, "-HUP");
        assert!(
            eventually(10, || t.log().matches("rejected").count() > rejected),
            "file {i} was not rejected\n{}",
            t.log()
        );
        assert!(ping(&t), "traffic stopped after bad file {i}\n{}", t.log());
    }
    let rss_after = rss_kib(pid);
    assert!(rss_after < rss_before + 64 * 1024, "RSS {rss_before} KiB -> {rss_after} KiB");
    // A large, valid-looking file: 60 MB of comments, then the configuration. TERM while it
    // parses stops weir at once.
    let mut large =
        "# padding padding padding padding padding padding padding padding\n".repeat(900_000);
    large.push_str(&good);
    std::fs::write(&path, &large).unwrap();
    kill(pid, "-HUP");
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    t.stop().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3), "stopping took {:?}", t0.elapsed());
}

/// `weir check --host` names what the host lacks: kernel addresses and offloads on an
/// interface, an endpoint no port reaches, a missing interface, and interfaces another weir
/// holds; and it passes a host that is ready.
#[test]
fn host_checks_name_what_the_host_lacks() {
    if !ready(&["ip", "ping", "ethtool"]) {
        return;
    }
    let mut t = Topology::build(DemoBackend::AfPacket).unwrap();
    let services = "services:
  - { name: web, vip: 198.19.0.1, port: 80, protocol: tcp, cluster: web }
clusters:
  - name: web
    endpoints:
      - { address: 198.18.2.2, port: 80 }
";
    let cfg = t.config(1, services);
    let path = t.dir().join("host.yaml");
    let check = |t: &Topology, text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = t
            .weir
            .run(&[exe().to_str().unwrap(), "check", "--host", "-c", path.to_str().unwrap()])
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, out) = check(&t, &cfg);
    assert!(ok, "a ready host failed: {out}");
    assert!(!out.contains("warning") && out.contains("reachable through a port"), "{out}");
    t.weir.exec(&["ip", "addr", "add", "198.18.1.9/24", "dev", "w0"]).unwrap();
    t.weir.exec(&["ethtool", "-K", "w0", "tso", "on"]).unwrap();
    let (ok, out) = check(&t, &cfg.replace("198.18.2.2, port", "198.18.77.2, port"));
    assert!(!ok, "{out}");
    assert!(
        out.contains("warning ports[0] (w0): the kernel has addresses on it (198.18.1.9)"),
        "{out}"
    );
    assert!(out.contains("tso on"), "{out}");
    assert!(out.contains("error   clusters[0].endpoints[0]: 198.18.77.2"), "{out}");
    let (ok, out) = check(&t, &cfg.replace("interface: w1", "interface: nope0"));
    assert!(!ok && out.contains("(nope0): no such interface"), "{out}");
    t.weir.exec(&["ip", "addr", "flush", "dev", "w0"]).unwrap();
    t.weir.exec(&["ethtool", "-K", "w0", "tso", "off"]).unwrap();
    t.start(&exe(), &cfg).unwrap();
    let (ok, out) = check(&t, &cfg);
    assert!(!ok && out.contains("in use by weir"), "{out}");
    t.stop().unwrap();
}
