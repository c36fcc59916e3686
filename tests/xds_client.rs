//! weir driven over xDS: a scripted ADS server (weir::xds::test_server) on a Unix socket,
//! weir between a client and nginx backends in namespaces, curl through the VIP the server
//! pushed. Both protocols: push, update, NACKs (a field weir refuses, a wrong type URL,
//! garbage), the server going away and coming back, withdrawal.

mod common;

use common::{exe, ready};
use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use envoy_types::pb::google::protobuf::Any;
use std::net::IpAddr;
use std::time::Duration;
use weir::meshdemo::{backend_addr, MeshRig, VIP};
use weir::xds::resources::{CLUSTER, LISTENER, LOAD_ASSIGNMENT};
use weir::xds::test_server::{build, Received, TestServer};

const ADMIN: &str = "http://127.0.0.1:9901";

struct Rig {
    rig: MeshRig,
    server: TestServer,
    delta: bool,
    version: std::sync::atomic::AtomicU32,
}

fn backend(i: usize) -> IpAddr {
    backend_addr(i).parse().unwrap()
}

impl Rig {
    fn start(protocol: &str, backends: usize) -> Rig {
        Rig::start_with(protocol, backends, "")
    }

    /// [`Rig::start`], with more lines for the `xds` section.
    fn start_with(protocol: &str, backends: usize, more_xds: &str) -> Rig {
        let mut rig = MeshRig::build(backends).unwrap();
        let socket = rig.t.dir().join("xds.sock");
        let server = TestServer::start_unix(&socket).unwrap();
        let extra = format!(
            "admin:\n  listen: 127.0.0.1:9901\nxds:\n  server: unix:{}\n  node: {{ id: weir-test, \
             cluster: gateways, metadata: {{ role: test }} }}\n  protocol: {protocol}\n  \
             reconnect_base_ms: 100\n  reconnect_max_ms: 400\n{more_xds}",
            socket.display()
        );
        let cfg = rig.t.config(1, &extra);
        rig.t.start(&exe(), &cfg).unwrap();
        Rig { rig, server, delta: protocol == "delta", version: Default::default() }
    }

    /// Pushes `resources` (named) of `type_url`, and `removed` (delta; state of the world
    /// sends the whole set instead); returns the reply (ACK or NACK).
    fn push(&self, type_url: &str, resources: Vec<(&str, Any)>, removed: &[&str]) -> Received {
        let v = (self.version.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1).to_string();
        let nonce = if self.delta {
            self.server.push_delta(
                type_url,
                &v,
                resources.into_iter().map(|(n, a)| (n.to_owned(), v.clone(), a)).collect(),
                removed.iter().map(|s| (*s).to_owned()).collect(),
            )
        } else {
            self.server.push_sotw(type_url, &v, resources.into_iter().map(|(_, a)| a).collect())
        };
        self.server
            .reply_to(&nonce)
            .unwrap_or_else(|| panic!("no reply to {nonce} ({type_url})\n{}", self.rig.t.log()))
    }

    fn curl_admin(&self, path: &str) -> serde_json::Value {
        let out =
            self.rig.t.weir.run(&["curl", "-sS", "-m", "5", &format!("{ADMIN}{path}")]).unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn spread(&self, n: usize) -> (Vec<usize>, usize) {
        self.rig.curl_loop(&format!("http://{VIP}/"), n).unwrap()
    }
}

fn web_listener() -> (&'static str, Any) {
    ("web", build::any(&build::listener("web", VIP.parse().unwrap(), 80, "web")))
}

fn web_cluster(policy: LbPolicy) -> (&'static str, Any) {
    ("web", build::any(&build::eds_cluster("web", policy)))
}

fn web_endpoints(weights: &[u32]) -> (&'static str, Any) {
    let eps: Vec<(IpAddr, u16, u32)> =
        weights.iter().enumerate().map(|(i, &w)| (backend(i), 80, w)).collect();
    ("web", build::any(&build::load_assignment("web", &eps)))
}

fn ack(r: &Received) {
    assert_eq!(r.error(), None, "expected an ACK: {r:?}");
}

fn nack(r: &Received) -> String {
    r.error().unwrap_or_else(|| panic!("expected a NACK: {r:?}")).to_owned()
}

fn scenario(protocol: &str) {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut r = Rig::start(protocol, 2);
    let t = Duration::from_secs(15);
    // The client opens with clusters and listeners, the node in its first request.
    let first = r.server.wait_for(t, |q| q.type_url() == CLUSTER).expect("a CDS request");
    let node = match &first {
        Received::Sotw(q) => q.node.clone(),
        Received::Delta(q) => q.node.clone(),
    };
    assert_eq!(node.map(|n| (n.id, n.cluster)), Some(("weir-test".into(), "gateways".into())));
    r.server.wait_for(t, |q| q.type_url() == LISTENER).expect("an LDS request");

    // Push: a cluster (EDS), its listener, its endpoints; then traffic.
    ack(&r.push(CLUSTER, vec![web_cluster(LbPolicy::RoundRobin)], &[]));
    let eds = r
        .server
        .wait_for(t, |q| match q {
            Received::Sotw(q) => q.type_url == LOAD_ASSIGNMENT && q.resource_names == ["web"],
            Received::Delta(q) => {
                q.type_url == LOAD_ASSIGNMENT && q.resource_names_subscribe == ["web"]
            }
        })
        .expect("the client asks for the cluster's endpoints");
    assert_eq!(eds.error(), None);
    ack(&r.push(LISTENER, vec![web_listener()], &[]));
    let dump = r.curl_admin("/config_dump");
    let waiting = &dump["xds"]["waiting"];
    assert!(
        waiting.to_string().contains("its endpoints (EDS `web`)"),
        "the cluster warms until its endpoints come: {dump:#}"
    );
    ack(&r.push(LOAD_ASSIGNMENT, vec![web_endpoints(&[1, 1])], &[]));
    let (per, failed) = r.spread(40);
    assert_eq!((per.as_slice(), failed), ([20, 20].as_slice(), 0), "{}", r.rig.t.log());

    // Update: reweight.
    ack(&r.push(LOAD_ASSIGNMENT, vec![web_endpoints(&[3, 1])], &[]));
    let (per, failed) = r.spread(40);
    assert_eq!((per.as_slice(), failed), ([30, 10].as_slice(), 0));

    // A field weir refuses: NACKed naming resource and field; the old configuration serves.
    let why = nack(&r.push(CLUSTER, vec![web_cluster(LbPolicy::RingHash)], &[]));
    assert!(why.contains("`web`") && why.contains("`lb_policy`: RING_HASH"), "{why}");
    // A type weir does not subscribe to, and garbage.
    let route = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    let why = nack(&r.push(route, vec![], &[]));
    assert!(why.contains(route), "{why}");
    let garbage = Any { type_url: CLUSTER.into(), value: vec![0xff; 64] };
    let why = nack(&r.push(CLUSTER, vec![("web", garbage)], &[]));
    assert!(why.contains("not a valid envoy.config.cluster.v3.Cluster"), "{why}");
    // Resources of one type inside a response of another.
    let why = nack(&r.push(CLUSTER, vec![web_listener()], &[]));
    assert!(why.contains("in a response of"), "{why}");
    let dump = r.curl_admin("/config_dump");
    let last = &dump["xds"]["types"]["clusters"]["last_nack"]["reason"];
    assert!(last.as_str().unwrap_or("").contains("in a response of"), "{dump:#}");
    assert_eq!(dump["xds"]["types"]["clusters"]["rejected"], 3, "{dump:#}");
    let (per, failed) = r.spread(40);
    assert_eq!((per.as_slice(), failed), ([30, 10].as_slice(), 0), "the old configuration serves");

    // The server goes away: forwarding goes on; the client comes back with what it holds.
    r.server.disconnect();
    let (per, failed) = r.spread(20);
    assert_eq!((per.iter().sum::<usize>(), failed), (20, 0));
    let resumed = r
        .server
        .wait_for(t, |q| match q {
            Received::Sotw(q) => {
                q.type_url == CLUSTER && q.response_nonce.is_empty() && !q.version_info.is_empty()
            }
            Received::Delta(q) => {
                q.type_url == CLUSTER && q.initial_resource_versions.contains_key("web")
            }
        })
        .unwrap_or_else(|| panic!("no resumed CDS request\n{:?}", r.server.received()));
    assert!(r.server.streams() >= 2);
    assert_eq!(resumed.error(), None);
    // The server sends its state again; the client takes it as no change.
    ack(&r.push(CLUSTER, vec![web_cluster(LbPolicy::RoundRobin)], &[]));
    ack(&r.push(LISTENER, vec![web_listener()], &[]));
    ack(&r.push(LOAD_ASSIGNMENT, vec![web_endpoints(&[1, 3])], &[]));
    let (per, failed) = r.spread(40);
    assert_eq!((per.as_slice(), failed), ([10, 30].as_slice(), 0));

    // Withdrawal: the cluster goes; its listener waits for it; the VIP is no longer served.
    ack(&r.push(CLUSTER, vec![], &["web"]));
    let dump = r.curl_admin("/config_dump");
    assert_eq!(dump["config"]["services"], serde_json::json!([]), "{dump:#}");
    assert!(dump["xds"]["waiting"].to_string().contains("cluster `web`"), "{dump:#}");
    let metrics = {
        let out =
            r.rig.t.weir.run(&["curl", "-sS", "-m", "5", &format!("{ADMIN}/metrics")]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(metrics.contains("weir_xds_connected 1"), "{metrics}");
    assert!(metrics.contains("weir_xds_updates_rejected_total{type=\"clusters\"} 3"), "{metrics}");
    let stats = r.rig.t.stop().unwrap();
    assert!(stats.is_object());
}

#[test]
fn state_of_the_world_push_update_nack_reconnect_withdraw() {
    scenario("sotw");
}

#[test]
fn delta_push_update_nack_reconnect_withdraw() {
    scenario("delta");
}

/// Endpoints of `cluster` on these backends, weight 1 each.
fn endpoints_of(cluster: &'static str, backends: &[usize]) -> (&'static str, Any) {
    let eps: Vec<(IpAddr, u16, u32)> = backends.iter().map(|&i| (backend(i), 80, 1)).collect();
    (cluster, build::any(&build::load_assignment(cluster, &eps)))
}

/// Brings up `web` (EDS, round robin) on `backends` behind the VIP.
fn serve_web(r: &Rig, backends: &[usize]) {
    let t = Duration::from_secs(15);
    r.server.wait_for(t, |q| q.type_url() == LISTENER).expect("an LDS request");
    ack(&r.push(CLUSTER, vec![web_cluster(LbPolicy::RoundRobin)], &[]));
    ack(&r.push(LISTENER, vec![web_listener()], &[]));
    ack(&r.push(LOAD_ASSIGNMENT, vec![endpoints_of("web", backends)], &[]));
}

#[test]
fn endpoints_and_clusters_change_under_traffic_without_a_failed_request() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let r = Rig::start("delta", 3);
    serve_web(&r, &[0, 1]);
    let (per, failed) = r.spread(10);
    assert_eq!((per.iter().sum::<usize>(), failed), (10, 0), "{}", r.rig.t.log());
    let other_vip: IpAddr = "198.19.0.2".parse().unwrap();
    std::thread::scope(|s| {
        let traffic = s.spawn(|| r.spread(300));
        // Endpoints added, removed, reweighted; a second cluster and listener come and go.
        let steps: [&[usize]; 6] = [&[0, 1, 2], &[1, 2], &[2], &[0, 2], &[0, 1, 2], &[1]];
        for (i, backends) in steps.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(150));
            ack(&r.push(LOAD_ASSIGNMENT, vec![endpoints_of("web", backends)], &[]));
            if i == 1 {
                let other = ("other", build::any(&build::eds_cluster("other", LbPolicy::Random)));
                ack(&r.push(CLUSTER, vec![other], &[]));
                ack(&r.push(LOAD_ASSIGNMENT, vec![endpoints_of("other", &[0])], &[]));
                let l = build::listener("other", other_vip, 80, "other");
                ack(&r.push(LISTENER, vec![("other", build::any(&l))], &[]));
            }
            if i == 4 {
                ack(&r.push(LISTENER, vec![], &["other"]));
                ack(&r.push(CLUSTER, vec![], &["other"]));
            }
        }
        let (per, failed) = traffic.join().unwrap();
        assert_eq!((per.iter().sum::<usize>(), failed), (300, 0), "{per:?}\n{}", r.rig.t.log());
    });
    let dump = r.curl_admin("/config_dump");
    let services: Vec<&str> = dump["config"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["web"], "{dump:#}");
}

#[test]
fn a_90_10_split_from_xds_holds_over_10000_connections() {
    if !ready(&["ip", "curl", "nginx", "python3"]) {
        return;
    }
    let r = Rig::start("sotw", 3);
    let t = Duration::from_secs(15);
    r.server.wait_for(t, |q| q.type_url() == LISTENER).expect("an LDS request");
    let stable = ("stable", build::any(&build::eds_cluster("stable", LbPolicy::RoundRobin)));
    let next = ("next", build::any(&build::eds_cluster("next", LbPolicy::RoundRobin)));
    ack(&r.push(CLUSTER, vec![stable, next], &[]));
    ack(&r.push(
        LOAD_ASSIGNMENT,
        vec![endpoints_of("stable", &[0, 1]), endpoints_of("next", &[2])],
        &[],
    ));
    let canary =
        build::weighted_listener("web", VIP.parse().unwrap(), 80, &[("stable", 90), ("next", 10)]);
    ack(&r.push(LISTENER, vec![("web", build::any(&canary))], &[]));
    // 10 000 connections, one request each, from a small client (curl would take minutes).
    let client = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/xds/connect_many.py");
    let out = r
        .rig
        .t
        .client
        .run(&["timeout", "300", "python3", client.to_str().unwrap(), VIP, "80", "10000"])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["failed"], 0, "{report}");
    let n = |b: &str| report["per"][b].as_u64().unwrap_or(0);
    let (stable, next) = (n("b0") + n("b1"), n("b2"));
    assert_eq!(stable + next, 10_000, "{report}");
    let share = next as f64 / 100.0;
    assert!((9.0..=11.0).contains(&share), "next took {share} % (10 % ± 1 point): {report}");
}

#[test]
fn a_restarted_server_finds_weir_serving_and_weir_resyncs() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let mut r = Rig::start("sotw", 2);
    serve_web(&r, &[0, 1]);
    let socket = r.rig.t.dir().join("xds.sock");
    // The server goes away altogether: weir's connects fail, it backs off and keeps serving.
    r.server = TestServer::start_unix(&r.rig.t.dir().join("elsewhere.sock")).unwrap();
    let _ = std::fs::remove_file(&socket);
    std::thread::sleep(Duration::from_millis(1500));
    let (per, failed) = r.spread(20);
    assert_eq!((per.as_slice(), failed), ([10, 10].as_slice(), 0), "{}", r.rig.t.log());
    let dump = r.curl_admin("/config_dump");
    assert_eq!(dump["xds"]["connected"], false, "{dump:#}");
    // A new server on the same socket, knowing nothing: weir tells it what it holds.
    r.server = TestServer::start_unix(&socket).unwrap();
    let t = Duration::from_secs(15);
    let resumed = r
        .server
        .wait_for(t, |q| matches!(q, Received::Sotw(q) if q.type_url == CLUSTER))
        .unwrap_or_else(|| panic!("weir did not come back\n{}", r.rig.t.log()));
    match resumed {
        Received::Sotw(q) => assert_eq!(q.version_info, "1", "the version weir holds"),
        Received::Delta(_) => unreachable!(),
    }
    r.server
        .wait_for(t, |q| matches!(q, Received::Sotw(q) if q.type_url == LOAD_ASSIGNMENT && q.resource_names == ["web"]))
        .expect("weir asks again for the endpoints it holds");
    // The new server sends its state: the same, taken as no change; then an update.
    ack(&r.push(CLUSTER, vec![web_cluster(LbPolicy::RoundRobin)], &[]));
    ack(&r.push(LISTENER, vec![web_listener()], &[]));
    ack(&r.push(LOAD_ASSIGNMENT, vec![endpoints_of("web", &[1])], &[]));
    let (per, failed) = r.spread(10);
    assert_eq!((per.as_slice(), failed), ([0, 10].as_slice(), 0));
    assert_eq!(r.curl_admin("/config_dump")["xds"]["connected"], true);
}

#[test]
fn a_slow_server_and_an_oversized_response_leave_weir_serving() {
    if !ready(&["ip", "curl", "nginx"]) {
        return;
    }
    let r = Rig::start_with(
        "delta",
        2,
        "  initial_fetch_timeout_ms: 1000\n  max_message_bytes: 65536\n",
    );
    let t = Duration::from_secs(15);
    r.server.wait_for(t, |q| q.type_url() == LISTENER).expect("an LDS request");
    ack(&r.push(CLUSTER, vec![web_cluster(LbPolicy::RoundRobin)], &[]));
    ack(&r.push(LISTENER, vec![web_listener()], &[]));
    // The server is slow with the endpoints: the cluster warms, and the listener with it...
    let waiting = r.curl_admin("/config_dump")["xds"]["waiting"].to_string();
    assert!(waiting.contains("its endpoints (EDS `web`)"), "{waiting}");
    // ...until the initial fetch timeout: then both serve, the cluster with no endpoint yet.
    let started = std::time::Instant::now();
    let dump = loop {
        let dump = r.curl_admin("/config_dump");
        if dump["xds"]["waiting"] == serde_json::json!([]) {
            break dump;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still warming: {dump:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(dump["config"]["services"][0]["name"], "web", "{dump:#}");
    // Late endpoints are taken all the same, on the same stream: slowness is not a failure.
    ack(&r.push(LOAD_ASSIGNMENT, vec![endpoints_of("web", &[0, 1])], &[]));
    let (per, failed) = r.spread(20);
    assert_eq!((per.as_slice(), failed), ([10, 10].as_slice(), 0), "{}", r.rig.t.log());
    assert_eq!(r.server.streams(), 1, "a slow server kept its stream");

    // A response over max_message_bytes (64 KiB here): the stream breaks, weir keeps serving
    // what it holds, reconnects and resumes with its versions.
    let huge = Any { type_url: CLUSTER.into(), value: vec![0; 100 * 1024] };
    r.server.push_delta(CLUSTER, "huge", vec![("web".into(), "huge".into(), huge)], vec![]);
    let (per, failed) = r.spread(20);
    assert_eq!((per.as_slice(), failed), ([10, 10].as_slice(), 0), "{}", r.rig.t.log());
    let resumed = r
        .server
        .wait_for(t, |q| {
            matches!(q, Received::Delta(q) if q.type_url == CLUSTER
                && q.initial_resource_versions.get("web").map(String::as_str) == Some("1"))
        })
        .unwrap_or_else(|| panic!("weir did not resume\n{}", r.rig.t.log()));
    assert_eq!(resumed.error(), None);
    assert!(r.server.streams() >= 2);
    let dump = r.curl_admin("/config_dump");
    let why = dump["xds"]["last_stream_error"].as_str().unwrap_or_default();
    assert!(why.contains("message length too large"), "{dump:#}");
    // The new stream takes updates.
    ack(&r.push(LOAD_ASSIGNMENT, vec![endpoints_of("web", &[1])], &[]));
    let (per, failed) = r.spread(10);
    assert_eq!((per.as_slice(), failed), ([0, 10].as_slice(), 0), "{}", r.rig.t.log());
}
