//! The L4 mesh's demo and test topology: the demo topology (client, weir, server side) with the
//! server side made a switch (a bridge in the server namespace) and backend namespaces behind
//! it, each running nginx on port 80 of its own address.
//!
//! ```text
//!  client 198.18.1.2 -- weir -- [server ns: br0] -- b0 198.18.2.10, b1 198.18.2.11, ...
//! ```
//! Services use VIPs in 198.19.0.0/24, routed to weir by the client's default route.
//!
//! Every process started here is the direct child (`ip netns exec` execs its command) and a
//! single process (nginx without a master), so dropping the rig kills all of them.

use crate::demo::{DemoBackend, Topology};
use crate::netns::{configure_host, have, veth, Netns};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's python3 (the DSR decapsulator's interpreter).
const PY: &str = "/usr/bin/python3";

/// A backend: its namespace, address and nginx.
pub struct Backend {
    /// Its namespace.
    pub ns: Netns,
    /// Its IPv4 address.
    pub addr: String,
    nginx: Option<Child>,
    decap: Option<Child>,
    dir: PathBuf,
}

impl Backend {
    /// Stops its nginx: connections to port 80 are refused from then on.
    pub fn stop_nginx(&mut self) {
        if let Some(mut c) = self.nginx.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for c in [self.nginx.take(), self.decap.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The topology with `n` nginx backends.
pub struct MeshRig {
    /// Client, weir and the switch.
    pub t: Topology,
    /// The backends, by index.
    pub backends: Vec<Backend>,
}

/// The address of backend `i`.
pub fn backend_addr(i: usize) -> String {
    format!("198.18.2.{}", 10 + i)
}

impl MeshRig {
    /// The topology with `n` backends, weir on af_packet ports.
    pub fn build(n: usize) -> Result<MeshRig> {
        MeshRig::build_on(DemoBackend::AfPacket, n)
    }

    /// The topology with `n` backends, weir's ports on `backend` (one whose ports are veth
    /// ends: af_packet, natively or as DPDK's `net_af_packet`).
    pub fn build_on(backend: DemoBackend, n: usize) -> Result<MeshRig> {
        if !backend.veth() {
            bail!("the mesh rig's server side is a switch behind a veth: not for TAP ports");
        }
        let t = Topology::build(backend)?;
        // The server namespace becomes a switch: its port to weir joins a bridge.
        for cmd in [
            vec!["ip", "addr", "flush", "dev", "s0"],
            vec!["ip", "route", "flush", "table", "main"],
            vec!["ip", "link", "add", "br0", "type", "bridge"],
            vec!["ip", "link", "set", "s0", "master", "br0"],
            vec!["ip", "link", "set", "br0", "up"],
        ] {
            t.server.exec(&cmd).context("making the server side a switch")?;
        }
        let mut rig = MeshRig { t, backends: Vec::new() };
        for i in 0..n {
            rig.add_backend(i)?;
        }
        Ok(rig)
    }

    /// Adds backend `i` (its namespace, its port on the switch, nginx).
    pub fn add_backend(&mut self, i: usize) -> Result<()> {
        let ns = Netns::new(&format!("b{i}"))?;
        let port = format!("p{i}");
        veth(&self.t.server, &port, &ns, "e0")?;
        if self.t.backend() == DemoBackend::DpdkAfPacket {
            // As the topology's hosts: DPDK's af_packet driver needs finished checksums.
            ns.no_tx_checksum_offload("e0");
        }
        self.t.server.exec(&["ip", "link", "set", &port, "master", "br0"])?;
        let addr = backend_addr(i);
        configure_host(
            &ns,
            "e0",
            &format!("{addr}/24"),
            "198.18.2.1",
            &format!("2001:db8:2::{}/64", 10 + i),
            "2001:db8:2::1",
        )?;
        let dir = std::env::temp_dir().join(format!("{}-nginx", ns.name()));
        std::fs::create_dir_all(dir.join("tmp"))?;
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  keepalive_timeout 65;
  server {{ listen 80; listen [::]:80; location / {{ return 200 \"b{i}\\n\"; }} }}
}}
"
        );
        std::fs::write(dir.join("nginx.conf"), conf)?;
        let nginx = Command::new("ip")
            .args(["netns", "exec", ns.name(), "nginx", "-c"])
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let mut b = Backend { ns, addr, nginx: Some(nginx), decap: None, dir };
        // Ready when it answers locally.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out =
                b.ns.run(&["curl", "-s", "--max-time", "1", &format!("http://{}/", b.addr)])?;
            if String::from_utf8_lossy(&out.stdout).trim() == format!("b{i}") {
                break;
            }
            if Instant::now() > deadline {
                bail!("nginx in backend {i} did not start");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(c) = b.nginx.as_mut() {
            if c.try_wait()?.is_some() {
                bail!("nginx in backend {i} exited");
            }
        }
        self.backends.push(b);
        Ok(())
    }

    /// Makes every backend a DSR endpoint for `vip`: the VIP on its loopback, and a
    /// decapsulator for `decap`. The kernels this runs on may lack the ipip and fou modules,
    /// so decapsulation is a socket (raw, for IP protocol 4; UDP, for GUE) writing each inner
    /// packet into a TUN device: the kernel then receives the client's packet to the VIP as it
    /// would from a tunnel. The GUE decapsulator takes only version 0 headers announcing an
    /// IPv4 inner packet.
    pub fn dsr_endpoints(&mut self, vip: &str, decap: Decap) -> Result<()> {
        const TUN: &str = "import fcntl, os, socket, struct
tun = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(tun, 0x400454ca, struct.pack('16sH', b'dsr0', 0x0001 | 0x1000))
";
        let decap = match decap {
            Decap::IpIp => format!(
                "{TUN}raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
print('ready', flush=True)
while True:
    p = raw.recv(65535)
    os.write(tun, p[(p[0] & 15) * 4:])
"
            ),
            Decap::Gue(port) => format!(
                "{TUN}udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(('0.0.0.0', {port}))
print('ready', flush=True)
while True:
    p = udp.recv(65535)
    if len(p) >= 4 and p[0] >> 6 == 0 and p[1] == 4:
        os.write(tun, p[4 + (p[0] & 31) * 4:])
"
            ),
        };
        for b in &mut self.backends {
            let mut child = Command::new("ip")
                .args(["netns", "exec", b.ns.name(), PY, "-c", &decap])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting the decapsulator")?;
            let mut line = String::new();
            let stdout = child.stdout.take().context("decapsulator output")?;
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
            b.decap = Some(child);
            if line.trim() != "ready" {
                bail!("the decapsulator in {} did not start", b.ns.name());
            }
            for cmd in [
                vec!["ip", "link", "set", "dsr0", "up"],
                vec!["ip", "addr", "add", &format!("{vip}/32"), "dev", "lo"],
                vec!["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"],
                vec!["sysctl", "-qw", "net.ipv4.conf.dsr0.rp_filter=0"],
                vec!["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"],
            ] {
                b.ns.exec(&cmd)?;
            }
        }
        Ok(())
    }

    /// `n` sequential HTTP requests from the client to `url`, each on a new connection; returns
    /// how many each backend answered (by index) and how many failed.
    pub fn curl_loop(&self, url: &str, n: usize) -> Result<(Vec<usize>, usize)> {
        let script = format!(
            "for i in $(seq {n}); do curl -s --max-time 2 -H 'Connection: close' {url} || echo FAIL; done"
        );
        let out = self.t.client.run(&["timeout", "120", "sh", "-c", &script])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut per = vec![0usize; self.backends.len().max(8)];
        let mut failed = 0;
        for line in text.lines() {
            match line.strip_prefix('b').and_then(|x| x.parse::<usize>().ok()) {
                Some(i) if i < per.len() => per[i] += 1,
                _ => failed += 1,
            }
        }
        failed += n.saturating_sub(text.lines().count());
        per.truncate(self.backends.len());
        Ok((per, failed))
    }
}

/// How DSR endpoints take the encapsulated packets off.
#[derive(Clone, Copy, Debug)]
pub enum Decap {
    /// IP in IP.
    IpIp,
    /// GUE (variant 0) on this UDP port.
    Gue(u16),
}

/// The VIP of the demo's service (and of the mesh tests').
pub const VIP: &str = "198.19.0.1";

/// The `services` and `clusters` sections for one TCP service on [`VIP`] port 80 in `mode`
/// (`nat`, `dnat`, or `dsr` with its options, say `dsr, encap: gue`), balanced by `policy`
/// over the backends with these weights.
pub fn services_config(mode: &str, policy: &str, weights: &[u32]) -> String {
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

fn show_spread(rig: &MeshRig, n: usize) -> Result<usize> {
    let (per, failed) = rig.curl_loop(&format!("http://{VIP}/"), n)?;
    for (i, c) in per.iter().enumerate() {
        println!("  backend b{i} ({}): {c:>3} {}", backend_addr(i), "#".repeat(*c / 2));
    }
    if failed > 0 {
        println!("  failed: {failed}");
    }
    Ok(failed)
}

/// `weir demo --mesh`: three nginx backends behind weir and an L4 service on a VIP; curl
/// through it, a reload that makes one backend a 10 % canary, weir's counters; then removes
/// everything. An error if any request failed.
pub fn run_mesh_demo() -> Result<()> {
    let exe = std::env::current_exe()?;
    for tool in ["ip", "curl", "nginx"] {
        if !have(tool) {
            bail!("the mesh demo needs `{tool}` (apt-get install iproute2 curl nginx)");
        }
    }
    println!("\n== building namespaces: a client, weir, three nginx backends behind a switch");
    let mut rig = MeshRig::build(3)?;
    let mut cfg = rig.t.config(1, &services_config("nat", "round_robin", &[1, 1, 1]));
    println!("client {}  weir {}", rig.t.client.name(), rig.t.weir.name());
    rig.t.start(&exe, &cfg)?;
    let mut failed = 0;
    println!("\n== 60 curl requests to the service http://{VIP}/ (NAT, round-robin 1:1:1)");
    failed += show_spread(&rig, 60)?;
    println!("\n== reload: Maglev, weights 9:0:1 (b1 drained of new connections, b2 a canary)");
    cfg = rig.t.config(1, &services_config("nat", "maglev", &[9, 0, 1]));
    let path = rig.t.dir().join("weir.yaml");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &cfg)?;
    std::fs::rename(&tmp, &path)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rig.t.log().contains("reloaded") {
        if Instant::now() > deadline {
            bail!("weir did not reload: {}", rig.t.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("\n== 100 more requests");
    failed += show_spread(&rig, 100)?;
    println!("\n== weir's counters");
    rig.t.stop()?;
    for line in rig.t.log().lines().filter(|l| !l.contains(" INFO ")) {
        println!("{line}");
    }
    println!("\n== removing namespaces");
    drop(rig);
    if failed > 0 {
        bail!("mesh demo: {failed} requests failed");
    }
    println!("mesh demo: every request was served through the VIP");
    Ok(())
}
