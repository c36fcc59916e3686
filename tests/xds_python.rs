//! A second implementation of the protocol: an ADS server written in Python on grpcio and the
//! xds-protos package (tests/xds/ads_server.py) drives weir through the basic scenario, in both
//! protocols: push, traffic, an update, a NACK that leaves the old configuration serving.

mod common;

use common::{exe, ready};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use weir::meshdemo::{backend_addr, MeshRig, VIP};

/// The Python with grpcio and xds-protos that scripts/deps.sh sets up.
fn python() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/xds-python/bin/python");
    let ok = Command::new(&p)
        .args(["-c", "import grpc, envoy.service.discovery.v3.ads_pb2_grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(p)
}

/// The Python server, ended when dropped.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the Python ADS server said nothing for 30 s"))
    }

    fn say(&mut self, command: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        self.line()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scenario(protocol: &str) {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let Some(py) = python() else {
        let why = "needs grpcio and xds-protos in target/xds-python (scripts/deps.sh sets it up)";
        assert!(std::env::var_os("CI").is_none(), "{why}: in CI this is a failure");
        eprintln!("SKIPPED: {why}");
        return;
    };
    let mut rig = MeshRig::build(2).unwrap();
    let socket = rig.t.dir().join("xds-py.sock");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/xds/ads_server.py");
    let mut child = Command::new(py)
        .arg(&script)
        .arg(&socket)
        .arg(protocol)
        .arg(VIP)
        .args([backend_addr(0), backend_addr(1)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut server = Server { child, lines };
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let extra = format!(
        "xds:\n  server: unix:{}\n  node: {{ id: weir-test }}\n  protocol: {protocol}\n",
        socket.display()
    );
    let cfg = rig.t.config(1, &extra);
    rig.t.start(&exe(), &cfg).unwrap();
    assert_eq!(server.line(), "READY", "{}", rig.t.log());
    let url = format!("http://{VIP}/");
    let (per, failed) = rig.curl_loop(&url, 40).unwrap();
    assert_eq!((per.as_slice(), failed), ([20, 20].as_slice(), 0), "{}", rig.t.log());
    assert_eq!(server.say("weights 3 1"), "OK");
    let (per, failed) = rig.curl_loop(&url, 40).unwrap();
    assert_eq!((per.as_slice(), failed), ([30, 10].as_slice(), 0));
    let nack = server.say("ring_hash");
    assert!(nack.starts_with("NACK ") && nack.contains("`lb_policy`: RING_HASH"), "{nack}");
    let (per, failed) = rig.curl_loop(&url, 40).unwrap();
    assert_eq!((per.as_slice(), failed), ([30, 10].as_slice(), 0), "the old configuration serves");
    let stdin = server.child.stdin.as_mut().unwrap();
    writeln!(stdin, "quit").unwrap();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "the Python server failed: {status}");
    rig.t.stop().unwrap();
}

#[test]
fn a_python_grpc_server_drives_weir_in_state_of_the_world() {
    scenario("sotw");
}

#[test]
fn a_python_grpc_server_drives_weir_in_delta() {
    scenario("delta");
}
