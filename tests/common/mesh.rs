//! The mesh test rig: the demo topology (client, weir, server side) with the server side made a
//! switch (a bridge in the server namespace) and backend namespaces behind it, each running
//! nginx on port 80 of its own address.
//!
//! ```text
//!  client 198.18.1.2 -- weir -- [server ns: br0] -- b0 198.18.2.10, b1 198.18.2.11, ...
//! ```
//! Services use VIPs in 198.19.0.0/24, routed to weir by the client's default route.
//!
//! Every process started here is the direct child (`ip netns exec` execs its command) and a
//! single process (nginx without a master), so dropping the rig kills all of them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir::demo::{DemoBackend, Topology};
use weir::netns::{configure_host, veth, Netns};

/// A backend: its namespace, address and nginx.
pub struct Backend {
    pub ns: Netns,
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
    pub t: Topology,
    pub backends: Vec<Backend>,
}

/// The address of backend `i`.
pub fn backend_addr(i: usize) -> String {
    format!("198.18.2.{}", 10 + i)
}

impl MeshRig {
    pub fn build(n: usize) -> MeshRig {
        let t = Topology::build(DemoBackend::AfPacket).expect("topology");
        // The server namespace becomes a switch: its port to weir joins a bridge.
        for cmd in [
            vec!["ip", "addr", "flush", "dev", "s0"],
            vec!["ip", "route", "flush", "table", "main"],
            vec!["ip", "link", "add", "br0", "type", "bridge"],
            vec!["ip", "link", "set", "s0", "master", "br0"],
            vec!["ip", "link", "set", "br0", "up"],
        ] {
            t.server.exec(&cmd).expect("switch");
        }
        let mut rig = MeshRig { t, backends: Vec::new() };
        for i in 0..n {
            rig.add_backend(i);
        }
        rig
    }

    /// Adds backend `i` (its namespace, its port on the switch, nginx).
    pub fn add_backend(&mut self, i: usize) {
        let ns = Netns::new(&format!("b{i}")).expect("backend namespace");
        let port = format!("p{i}");
        veth(&self.t.server, &port, &ns, "e0").expect("veth");
        self.t.server.exec(&["ip", "link", "set", &port, "master", "br0"]).expect("bridge port");
        let addr = backend_addr(i);
        configure_host(
            &ns,
            "e0",
            &format!("{addr}/24"),
            "198.18.2.1",
            &format!("2001:db8:2::{}/64", 10 + i),
            "2001:db8:2::1",
        )
        .expect("backend addresses");
        let dir = std::env::temp_dir().join(format!("{}-nginx", ns.name()));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
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
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let nginx = Command::new("ip")
            .args(["netns", "exec", ns.name(), "nginx", "-c"])
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx");
        let mut b = Backend { ns, addr, nginx: Some(nginx), decap: None, dir };
        // Ready when it answers locally.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out =
                b.ns.run(&["curl", "-s", "--max-time", "1", &format!("http://{}/", b.addr)])
                    .unwrap();
            if String::from_utf8_lossy(&out.stdout).trim() == format!("b{i}") {
                break;
            }
            assert!(Instant::now() < deadline, "nginx in backend {i} did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(c) = b.nginx.as_mut() {
            assert!(c.try_wait().unwrap().is_none(), "nginx exited");
        }
        self.backends.push(b);
    }

    /// Makes every backend a DSR endpoint for `vip`: the VIP on its loopback, and IP-in-IP
    /// decapsulation. The kernels this runs on may lack the ipip module, so decapsulation is a
    /// raw socket for IP protocol 4 writing each inner packet into a TUN device: the kernel
    /// then receives the client's packet to the VIP as it would from an ipip tunnel.
    pub fn dsr_endpoints(&mut self, vip: &str) {
        const DECAP: &str = "import fcntl, os, socket, struct
tun = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(tun, 0x400454ca, struct.pack('16sH', b'dsr0', 0x0001 | 0x1000))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
print('ready', flush=True)
while True:
    p = raw.recv(65535)
    os.write(tun, p[(p[0] & 15) * 4:])
";
        for b in &mut self.backends {
            let mut child = Command::new("ip")
                .args(["netns", "exec", b.ns.name(), super::PY, "-c", DECAP])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("decapsulator");
            let mut line = String::new();
            let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
            std::io::BufRead::read_line(&mut out, &mut line).unwrap();
            assert_eq!(line.trim(), "ready", "decapsulator in {}", b.ns.name());
            b.decap = Some(child);
            for cmd in [
                vec!["ip", "link", "set", "dsr0", "up"],
                vec!["ip", "addr", "add", &format!("{vip}/32"), "dev", "lo"],
                vec!["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"],
                vec!["sysctl", "-qw", "net.ipv4.conf.dsr0.rp_filter=0"],
                vec!["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"],
            ] {
                b.ns.exec(&cmd).expect("DSR endpoint setup");
            }
        }
    }

    /// `n` sequential HTTP requests from the client to `url`, each on a new connection; returns
    /// how many each backend answered (by index) and how many failed.
    pub fn curl_loop(&self, url: &str, n: usize) -> (Vec<usize>, usize) {
        let script = format!(
            "for i in $(seq {n}); do curl -s --max-time 2 -H 'Connection: close' {url} || echo FAIL; done"
        );
        let out = self.t.client.run(&["timeout", "120", "sh", "-c", &script]).unwrap();
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
        (per, failed)
    }
}
