//! Hardware-class tests: weir on NICs bound to vfio-pci, driven by a real PMD (virtio in the
//! VMs of `vagrant/`). They need that setup, so they are `#[ignore]` everywhere; the vagrant
//! provisioning runs them with `cargo test --release --test hardware -- --ignored`:
//! - on the `weir` VM, before weir starts there: `WEIR_HW_PCI=ADDR_A,ADDR_B` (the NICs nic-config
//!   bound) and `WEIR_HW_MACS=MAC_A,MAC_B`;
//! - on the `peer` VM, once weir runs: `WEIR_HW_PEER=1`, with the namespaces `client`
//!   (198.18.1.2, 2001:db8:1::2) and `server` (198.18.2.2, 2001:db8:2::2) on the two networks.

use std::process::Command;
use std::time::{Duration, Instant};

#[cfg(feature = "dpdk")]
fn env_list(name: &str) -> Option<Vec<String>> {
    let v = std::env::var(name).ok()?;
    Some(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
}

#[cfg(feature = "dpdk")]
fn mac_string(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs NICs bound to vfio-pci and hugepages: run by vagrant/provision-weir.sh"]
fn dpdk_ports_on_vfio_nics_come_up() {
    use dataplane::dpdk::{Eal, EalConfig, MbufPool, Port, PortSettings, SocketId};
    let pci = env_list("WEIR_HW_PCI").expect("WEIR_HW_PCI=ADDR_A,ADDR_B");
    let macs = env_list("WEIR_HW_MACS").unwrap_or_default();
    let eal = Eal::init(&EalConfig {
        pci: pci.clone(),
        hugepages: true,
        log_level: Some("notice".into()),
        ..EalConfig::default()
    })
    .expect("EAL on hugepages with the vfio-bound NICs");
    assert_eq!(usize::from(eal.ports_available()), pci.len(), "one port per allowed NIC");
    let pool = MbufPool::create(eal, "hw", 8192, 256, 2048 + 128, SocketId::ANY).unwrap();
    let settings = PortSettings {
        queues: 1,
        rx_descriptors: 512,
        tx_descriptors: 512,
        rss: true,
        promiscuous: true,
        mtu: 1500,
        mac: None,
    };
    for (i, addr) in pci.iter().enumerate() {
        let (port, queues) = Port::open(eal, addr, &settings, pool).expect("port");
        assert!(port.driver().contains("virtio"), "{addr}: driver {}", port.driver());
        assert_eq!(queues.len(), 1);
        if let Some(mac) = macs.get(i) {
            assert_eq!(mac_string(port.mac()), mac.to_lowercase(), "{addr}: MAC");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port.link().up && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(port.link().up, "{addr}: link down");
        port.stats().expect("device counters");
    }
}

fn in_ns(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip").args(["netns", "exec", ns]).args(args).output().expect("ip netns exec")
}

/// Pings until weir answers (it may still be starting on the other VM), up to a minute.
fn ping_through(ns: &str, six: bool, dst: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut args = vec!["ping", "-c", "3", "-i", "0.2", "-W", "2"];
        if six {
            args.push("-6");
        }
        args.push(dst);
        let out = in_ns(ns, &args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return text;
        }
        assert!(Instant::now() < deadline, "{ns} -> {dst} through weir: {text}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
#[ignore = "needs the vagrant peer VM and weir running on the other VM: vagrant/provision-peer.sh"]
fn peer_traffic_crosses_weir_on_real_nics() {
    assert!(std::env::var_os("WEIR_HW_PEER").is_some(), "run on the vagrant peer VM");
    for (ns, six, dst) in [
        ("client", false, "198.18.2.2"),
        ("client", true, "2001:db8:2::2"),
        ("server", false, "198.18.1.2"),
        ("server", true, "2001:db8:1::2"),
    ] {
        let out = ping_through(ns, six, dst);
        // One router between the namespaces: the TTL / hop limit arrives decremented once.
        assert!(out.contains("ttl=63"), "{ns} -> {dst}: not routed by weir? {out}");
    }
    let mut server = Command::new("ip")
        .args(["netns", "exec", "server", "iperf3", "-s", "-1", "-B", "198.18.2.2"])
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(500));
    let out = in_ns("client", &["timeout", "30", "iperf3", "-c", "198.18.2.2", "-t", "5", "-J"]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "iperf3: {}", String::from_utf8_lossy(&out.stdout));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(bytes > 10_000_000, "only {bytes} bytes crossed weir in 5 s");
    for iv in report["intervals"].as_array().unwrap() {
        assert!(iv["sum"]["bytes"].as_u64().unwrap_or(0) > 0, "a stalled second: {iv}");
    }
    let bps = report["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
    eprintln!("iperf3 through weir on virtio/vfio: {:.0} Mbit/s", bps / 1e6);
}
