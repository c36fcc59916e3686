//! `weir import --envoy-config-dump`: real Istio output (tests/data/xds-samples) and an L4
//! dump written for weir (tests/data/xds/l4.config_dump.json) through the xDS translation.

use std::process::Command;
use weir::xds::import::{config_dump, Import};

fn data(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The verdict on one resource: (status, reason).
fn verdict<'a>(i: &'a Import, kind: &str, name: &str) -> (&'a str, &'a str) {
    let v = i
        .verdicts
        .iter()
        .find(|v| v.kind == kind && v.name == name)
        .unwrap_or_else(|| panic!("no verdict on {kind} {name}:\n{}", i.report()));
    (v.status, v.reason.as_str())
}

#[test]
fn an_istio_sidecar_dump_is_reported_resource_by_resource() {
    let i = config_dump(&data("xds-samples/istio-sidecar.config_dump.json")).unwrap();
    let report = i.report();
    // Static clusters with a STATIC load assignment translate.
    assert_eq!(verdict(&i, "cluster", "agent"), ("accepted", ""), "{report}");
    assert_eq!(verdict(&i, "cluster", "prometheus_stats"), ("accepted", ""), "{report}");
    // Istio's inbound cluster goes through an internal listener: refused by that field.
    let (status, why) =
        verdict(&i, "cluster", "inbound-vip|8000|http|httpbin.default.svc.cluster.local");
    assert_eq!(status, "refused");
    assert!(why.starts_with("`transport_socket`: `internal_upstream`"), "{why}");
    let (status, why) =
        verdict(&i, "load_assignment", "inbound-vip|8100|http|httpbin.default.svc.cluster.local");
    assert_eq!(status, "refused");
    assert!(
        why.starts_with("`endpoints[0].lb_endpoints[0].endpoint.address.envoy_internal_address`"),
        "{why}"
    );
    // Its listeners are HTTP connection managers and an internal listener.
    let (status, why) = verdict(&i, "listener", "0.0.0.0_15021");
    assert_eq!(status, "refused");
    assert!(
        why.contains("`filter_chains[0].filters[0]`")
            && why.contains("envoy.filters.network.http_connection_manager"),
        "{why}"
    );
    assert_eq!(
        verdict(&i, "listener", "main_internal"),
        ("refused", "`internal_listener`: weir does not implement this field")
    );
    // What weir does not read is said so, not dropped.
    assert_eq!(verdict(&i, "secret", "default").0, "not_read");
    assert_eq!(verdict(&i, "secret", "ROOTCA").0, "not_read");
    assert_eq!(verdict(&i, "bootstrap", "").0, "not_read");
    assert_eq!(
        verdict(
            &i,
            "route_configuration",
            "inbound-vip|8000|http|httpbin.default.svc.cluster.local"
        )
        .0,
        "not_read"
    );
    assert_eq!(
        (i.count("accepted"), i.count("waiting"), i.count("refused"), i.count("not_read")),
        (3, 0, 4, 5),
        "{report}"
    );
    assert!(i.yaml.contains("- name: agent") && i.yaml.contains("services: []"), "{}", i.yaml);
}

#[test]
fn a_routes_only_dump_has_nothing_to_serve() {
    let dump = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/xds-samples/istio-gateway-routes.config_dump.json");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["import", "--envoy-config-dump", dump.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "nothing accepted is a failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json_end = stderr.rfind(']').expect("a JSON report") + 1;
    let report: serde_json::Value = serde_json::from_str(&stderr[..json_end]).unwrap();
    let statuses: Vec<&str> =
        report.as_array().unwrap().iter().map(|v| v["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["not_read"; 3], "{stderr}");
    assert!(stderr.contains("no resource weir can serve"), "{stderr}");
}

/// Ports and routes for the L4 dump's services.
const PORTS: &str = "ports:
  - name: a
    backend: tap
    addresses: [198.18.1.1/24]
  - name: b
    backend: tap
    addresses: [198.18.2.1/24]
";

#[test]
fn an_l4_dump_translates_to_a_configuration_that_serves() {
    let i = config_dump(&data("xds/l4.config_dump.json")).unwrap();
    let report = i.report();
    for name in ["web", "web-stable", "web-next", "dns", "prio"] {
        assert_eq!(verdict(&i, "cluster", name), ("accepted", ""), "{report}");
    }
    for name in ["web", "canary", "dns", "direct", "prio"] {
        assert_eq!(verdict(&i, "listener", name), ("accepted", ""), "{report}");
    }
    let refused = [
        ("cluster", "hash", "`lb_policy`: RING_HASH"),
        ("cluster", "by-name", "`type`: STRICT_DNS"),
        ("cluster", "tls", "`transport_socket`: `envoy.transport_sockets.tls`"),
        ("cluster", "slow-start", "`round_robin_lb_config`"),
        ("load_assignment", "odd", "`endpoints[0].lb_endpoints[0].endpoint.address.pipe`"),
        ("listener", "matched", "`filter_chains[0].filter_chain_match`"),
        (
            "listener",
            "guarded",
            "`filter_chains[0].filters[0]`: network filter `envoy.filters.network.rbac`",
        ),
    ];
    for (kind, name, why) in refused {
        let (status, reason) = verdict(&i, kind, name);
        assert_eq!(status, "refused", "{kind} {name}");
        assert!(reason.starts_with(why), "{kind} {name}: {reason}");
    }
    assert_eq!(verdict(&i, "listener", "waits"), ("waiting", "waits for cluster `missing`"));

    // The YAML, with ports, is a configuration weir runs.
    let cfg = weir::config::parse(&format!("{PORTS}{}", i.yaml))
        .unwrap_or_else(|e| panic!("{e}\n{}", i.yaml));
    let by_name = |n: &str| cfg.clusters.iter().find(|c| c.name == n).unwrap();
    let web = by_name("web");
    assert_eq!(web.connect_timeout_ms, Some(2000));
    let o = web.outlier.as_ref().unwrap();
    assert_eq!(
        (o.consecutive_failures, o.base_ejection_ms, o.max_ejection_percent),
        (3, 10_000, 50)
    );
    let health: Vec<(u32, bool)> = web.endpoints.iter().map(|e| (e.weight, e.healthy)).collect();
    assert_eq!(health, [(1, true), (2, true), (1, false)], "DRAINING takes no new flows");
    let direct = cfg.services.iter().find(|s| s.name == "direct").unwrap();
    assert_eq!(direct.mode, weir::config::ModeName::Dsr);
    assert_eq!(direct.encap, weir::config::EncapName::Gue);
    let dns = cfg.services.iter().find(|s| s.name == "dns").unwrap();
    assert_eq!(dns.protocol, weir::config::ProtocolName::Udp);

    let snap = weir::translate::mesh_snapshot(&cfg, None).unwrap();
    let weights = |cluster: &str| -> Vec<(String, u32)> {
        let c = snap.clusters.iter().find(|c| c.name == cluster).unwrap();
        c.eligible.iter().map(|e| (format!("{}:{}", e.addr, e.port), e.weight)).collect()
    };
    // 90/10 between the clusters, then evenly within each.
    assert_eq!(
        weights("canary/weighted"),
        [
            ("198.18.2.5:8080".to_owned(), 450_000),
            ("198.18.2.6:8080".to_owned(), 450_000),
            ("198.18.2.7:8080".to_owned(), 100_000)
        ]
    );
    // Localities 3:1 at priority 0 (all healthy: priority 1 idle).
    assert_eq!(
        weights("prio"),
        [
            ("198.18.2.30:80".to_owned(), 375_000),
            ("198.18.2.31:80".to_owned(), 375_000),
            ("198.18.2.32:80".to_owned(), 250_000)
        ]
    );
}

#[test]
fn readme_lists_every_rule() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let want = weir::xds::resources::rules_markdown();
    assert!(
        readme.contains(&want),
        "the README's tables of fields differ from what weir reads and ignores; they read:\n{want}"
    );
}
