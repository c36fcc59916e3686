//! The demo topology: clients on one side, servers on the other, weir between.
//!
//! ```text
//!  client ns                 weir ns                      server ns
//!  c0 198.18.1.2/24  <-->  w0 [weir 198.18.1.1]  w1 [weir 198.18.2.1]  <-->  s0 198.18.2.2/24
//!     2001:db8:1::2/64         2001:db8:1::1          2001:db8:2::1            2001:db8:2::2/64
//! ```
//! With af_packet ports, w0/w1 are veth ends in the weir namespace. With TAP ports weir creates
//! the TAP devices in its namespace and the topology moves their kernel side into the client and
//! server namespaces. The same struct drives the integration tests.

use crate::netns::{configure_host, have, sh, veth, Netns};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// Which backend the weir ports use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoBackend {
    /// veth pairs, af_packet rings.
    AfPacket,
    /// TAP devices created by weir.
    Tap,
    /// veth pairs, DPDK's `net_af_packet` virtual devices.
    DpdkAfPacket,
    /// TAP devices created by DPDK's `net_tap` virtual devices.
    DpdkTap,
}

impl DemoBackend {
    /// Whether weir's ports are veth ends in its namespace (else TAP devices it creates).
    /// Whether weir's ports are veth ends in its namespace (else TAP devices moved out to
    /// the hosts' namespaces once weir runs).
    pub fn veth(self) -> bool {
        matches!(self, DemoBackend::AfPacket | DemoBackend::DpdkAfPacket)
    }
}

/// Client IPv4 address.
pub const CLIENT_V4: &str = "198.18.1.2";
/// Server IPv4 address.
pub const SERVER_V4: &str = "198.18.2.2";
/// Client IPv6 address.
pub const CLIENT_V6: &str = "2001:db8:1::2";
/// Server IPv6 address.
pub const SERVER_V6: &str = "2001:db8:2::2";
/// weir's address facing the client.
pub const WEIR_CLIENT_SIDE_V4: &str = "198.18.1.1";
/// weir's IPv6 address facing the client.
pub const WEIR_CLIENT_SIDE_V6: &str = "2001:db8:1::1";

/// Three namespaces and, once started, weir between them.
pub struct Topology {
    /// Client side.
    pub client: Netns,
    /// weir's namespace.
    pub weir: Netns,
    /// Server side.
    pub server: Netns,
    backend: DemoBackend,
    dir: PathBuf,
    child: Option<Child>,
}

impl Topology {
    /// Builds the namespaces (and, for af_packet, the veth pairs).
    pub fn build(backend: DemoBackend) -> Result<Topology> {
        let client = Netns::new("c")?;
        let weir = Netns::new("w")?;
        let server = Netns::new("s")?;
        let dir = std::env::temp_dir().join(weir.name());
        std::fs::create_dir_all(&dir)?;
        let t = Topology { client, weir, server, backend, dir, child: None };
        if backend.veth() {
            veth(&t.client, "c0", &t.weir, "w0")?;
            veth(&t.weir, "w1", &t.server, "s0")?;
            t.weir.quiet_kernel("w0")?;
            t.weir.quiet_kernel("w1")?;
            t.hosts()?;
        }
        Ok(t)
    }

    fn hosts(&self) -> Result<()> {
        if self.backend == DemoBackend::DpdkAfPacket {
            // DPDK's af_packet driver does not pass on the kernel's "checksum not yet computed"
            // mark (weir's own af_packet ports do, and complete the checksum), so the hosts
            // must send finished checksums.
            self.client.no_tx_checksum_offload("c0");
            self.server.no_tx_checksum_offload("s0");
        }
        configure_host(
            &self.client,
            "c0",
            "198.18.1.2/24",
            WEIR_CLIENT_SIDE_V4,
            "2001:db8:1::2/64",
            WEIR_CLIENT_SIDE_V6,
        )?;
        configure_host(
            &self.server,
            "s0",
            "198.18.2.2/24",
            "198.18.2.1",
            "2001:db8:2::2/64",
            "2001:db8:2::1",
        )?;
        Ok(())
    }

    /// The weir configuration for this topology with `workers` workers (`extra` is appended).
    pub fn config(&self, workers: usize, extra: &str) -> String {
        let (backend, i0, i1) = match self.backend {
            DemoBackend::AfPacket => ("af_packet", "interface: w0".into(), "interface: w1".into()),
            DemoBackend::Tap => ("tap", "interface: c0".into(), "interface: s0".into()),
            DemoBackend::DpdkAfPacket => (
                "dpdk",
                format!("device: net_af_packet0,iface=w0,qpairs={workers}"),
                format!("device: net_af_packet1,iface=w1,qpairs={workers}"),
            ),
            DemoBackend::DpdkTap => {
                ("dpdk", "device: net_tap0,iface=c0".into(), "device: net_tap1,iface=s0".into())
            }
        };
        let mut s = String::from("workers:\n");
        for _ in 0..workers {
            s.push_str("  - {}\n");
        }
        s.push_str(&format!(
            "ports:
  - name: client_side
    backend: {backend}
    {i0}
    addresses: [198.18.1.1/24, 2001:db8:1::1/64]
  - name: server_side
    backend: {backend}
    {i1}
    addresses: [198.18.2.1/24, 2001:db8:2::1/64]
{extra}"
        ));
        s
    }

    /// The backend weir's ports are on.
    pub fn backend(&self) -> DemoBackend {
        self.backend
    }

    /// Directory for this topology's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of weir's final counters (JSON), written when it stops.
    pub fn stats_path(&self) -> PathBuf {
        self.dir.join("stats.json")
    }

    /// Writes `config`, starts `exe run` inside the weir namespace and waits until its ports
    /// are up (for TAP: until the devices exist, then moves them to the host namespaces).
    pub fn start(&mut self, exe: &Path, config: &str) -> Result<()> {
        self.start_with_env(exe, config, &[])
    }

    /// [`start`](Self::start), with these variables in weir's environment.
    pub fn start_with_env(&mut self, exe: &Path, config: &str, env: &[(&str, &str)]) -> Result<()> {
        let cfg = self.dir.join("weir.yaml");
        std::fs::write(&cfg, config)?;
        let stats = self.stats_path();
        let _ = std::fs::remove_file(&stats);
        // Appended to, not written at an offset: a successor (a hot restart) writes to it too.
        let path = self.dir.join("weir.log");
        std::fs::File::create(&path)?;
        let log = std::fs::OpenOptions::new().append(true).open(&path)?;
        let child = self.spawn(exe, &cfg, log, env)?;
        self.child = Some(child);
        // Ready when weir says so: every port open and every worker polling. (A TAP device
        // exists a little earlier, but DPDK's net_tap opens its queues on it afterwards, so it
        // must stay in weir's namespace until then.)
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains("weir running") {
            if Instant::now() > deadline {
                bail!("weir did not start within 30 s: {}", self.log());
            }
            self.check_alive()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        if !self.backend.veth() {
            sh(&["ip", "-n", self.weir.name(), "link", "set", "c0", "netns", self.client.name()])?;
            sh(&["ip", "-n", self.weir.name(), "link", "set", "s0", "netns", self.server.name()])?;
            self.hosts()?;
        }
        self.check_alive()
    }

    /// `exe run -c cfg` in weir's namespace, its output appended to `log`.
    fn spawn(
        &self,
        exe: &Path,
        cfg: &Path,
        log: std::fs::File,
        env: &[(&str, &str)],
    ) -> Result<Child> {
        let stats = self.stats_path();
        std::process::Command::new("ip")
            .args(["netns", "exec", self.weir.name()])
            .arg(exe)
            .args(["run", "-c"])
            .arg(cfg)
            .arg("--stats-json")
            .arg(&stats)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting weir")
    }

    /// Starts a new weir with `config` (which names the handover socket of the one running)
    /// beside the running one, without waiting: it takes over, and the running one exits.
    /// Its output goes to the same log. Returns the new process; [`took_over`] waits for it.
    ///
    /// [`took_over`]: Self::took_over
    pub fn start_successor(&mut self, exe: &Path, config: &str) -> Result<Child> {
        let cfg = self.dir.join("weir.yaml");
        // Written whole, then renamed: the running weir never reads half a file.
        let tmp = self.dir.join("weir.yaml.tmp");
        std::fs::write(&tmp, config)?;
        std::fs::rename(&tmp, &cfg)?;
        let log = std::fs::OpenOptions::new().append(true).open(self.dir.join("weir.log"))?;
        self.spawn(exe, &cfg, log, &[])
    }

    /// Waits until `successor` has taken over from the running weir and that one has exited;
    /// `successor` is then the running weir. Returns how long the takeover took.
    pub fn took_over(&mut self, mut successor: Child) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        let Some(mut old) = self.child.take() else { bail!("no weir running to take over from") };
        loop {
            if let Some(status) = successor.try_wait()? {
                self.child = Some(old);
                bail!("the new weir exited ({status}): {}", self.log());
            }
            if old.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = successor.kill();
                let _ = successor.wait();
                self.child = Some(old);
                bail!("no takeover within 60 s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(successor);
        self.check_alive()?;
        Ok(started.elapsed())
    }

    /// Makes `child` (a successor whose predecessor is gone) the running weir.
    pub fn adopt(&mut self, child: Child) -> Result<()> {
        if self.child.is_some() {
            bail!("a weir is running already");
        }
        self.child = Some(child);
        Ok(())
    }

    /// Kills the running weir at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut c) = self.child.take() else { bail!("weir is not running") };
        c.kill()?;
        c.wait()?;
        Ok(())
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait()? {
                bail!("weir exited ({status}): {}", self.log());
            }
        }
        Ok(())
    }

    /// The pid of the running weir (its resident memory is in /proc/PID/status).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// weir's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("weir.log")).unwrap_or_default()
    }

    /// Stops weir with SIGTERM and returns its final counters.
    pub fn stop(&mut self) -> Result<serde_json::Value> {
        let Some(mut child) = self.child.take() else { bail!("weir is not running") };
        // The child is weir itself: `ip netns exec` execs it in place.
        let _ =
            std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("weir did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(self.stats_path())
            .with_context(|| format!("weir wrote no final counters: {}", self.log()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn show(out: &std::process::Output) {
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

/// `weir demo`: builds the topology, runs weir, sends ping and a TCP transfer through it and
/// prints what happened. Returns an error if any traffic failed.
pub fn run_demo(backend: DemoBackend, workers: usize) -> Result<()> {
    let exe = std::env::current_exe()?;
    for tool in ["ip", "ping"] {
        if !have(tool) {
            bail!("the demo needs `{tool}` (apt-get install iproute2 iputils-ping)");
        }
    }
    step(&format!("building namespaces (backend {backend:?}, {workers} worker(s))"));
    let mut t = Topology::build(backend)?;
    println!("client {}  weir {}  server {}", t.client.name(), t.weir.name(), t.server.name());
    let cfg = t.config(workers, "");
    t.start(&exe, &cfg)?;
    let mut failed = Vec::new();
    step("ping client -> server (IPv4, ARP-resolved through weir)");
    let out = t.client.run(&["ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER_V4])?;
    show(&out);
    if !out.status.success() {
        failed.push("ping IPv4");
    }
    step("ping client -> server (IPv6, NDP-resolved through weir)");
    let out = t.client.run(&["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", SERVER_V6])?;
    show(&out);
    if !out.status.success() {
        failed.push("ping IPv6");
    }
    step("ping weir itself from the server side");
    let out = t.server.run(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.18.2.1"])?;
    show(&out);
    if !out.status.success() {
        failed.push("ping weir");
    }
    if have("iperf3") {
        step("iperf3 TCP client -> server, 3 s");
        let mut server = t.server.spawn(&["iperf3", "-s", "-1", "-B", SERVER_V4])?;
        std::thread::sleep(Duration::from_millis(500));
        let out =
            t.client.run(&["timeout", "20", "iperf3", "-c", SERVER_V4, "-t", "3", "-f", "m"])?;
        show(&out);
        if !out.status.success() {
            failed.push("iperf3");
        }
        let _ = server.kill();
        let _ = server.wait();
    } else {
        println!("\n== iperf3 not installed: TCP transfer skipped (apt-get install iperf3)");
    }
    step("weir's counters");
    let stats = t.stop()?;
    // The log ends with weir's own report: per port, per worker, drops by reason.
    for line in t.log().lines().filter(|l| !l.contains(" INFO ")) {
        println!("{line}");
    }
    let forwarded: u64 = stats["workers"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w["forwarded"].as_u64()).sum())
        .unwrap_or(0);
    if forwarded == 0 {
        failed.push("nothing forwarded");
    }
    step("removing namespaces");
    drop(t);
    if failed.is_empty() {
        println!("demo: all traffic crossed weir");
        Ok(())
    } else {
        bail!("demo: failed: {}", failed.join(", "))
    }
}
