//! What the running dataplane says about itself: counters as JSON and tables, the endpoint
//! and service views, and the log lines that explain the mesh at start and on reload.

use super::{Buffers, Running};
use crate::config::Config;
use dataplane::io::PortStats;
use dataplane::pipeline::DropReason;
use std::net::IpAddr;

/// The path of the first field where `a` and `b` differ (`ports[1].mtu_bytes`), if any.
pub fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                first_difference(va, vb).map(|p| {
                    if p.is_empty() {
                        k.clone()
                    } else if p.starts_with('[') {
                        format!("{k}{p}")
                    } else {
                        format!("{k}.{p}")
                    }
                })
            })
        }
        (Value::Array(x), Value::Array(y)) => (0..x.len().max(y.len())).find_map(|i| {
            let (va, vb) = (x.get(i).unwrap_or(&Value::Null), y.get(i).unwrap_or(&Value::Null));
            first_difference(va, vb).map(|p| {
                if p.is_empty() || p.starts_with('[') {
                    format!("[{i}]{p}")
                } else {
                    format!("[{i}].{p}")
                }
            })
        }),
        _ => (a != b).then(String::new),
    }
}

/// What a reload from `old` to `new` changes in the mesh, for the log: services added, removed
/// or changed; endpoints added, removed, reweighted or their health changed, by cluster.
pub fn mesh_changes(old: &Config, new: &Config) -> Vec<String> {
    use std::collections::HashMap;
    let mut out = Vec::new();
    let svc = |s: &crate::config::ServiceConfig| {
        format!(
            "{} {}:{}/{} -> {} ({})",
            s.name,
            s.vip,
            s.port,
            lower(&s.protocol),
            s.cluster,
            lower(&s.mode)
        )
    };
    // By name: a control plane's push may hold tens of thousands of each.
    let old_services: HashMap<&str, &crate::config::ServiceConfig> =
        old.services.iter().map(|s| (s.name.as_str(), s)).collect();
    let new_services: HashMap<&str, &crate::config::ServiceConfig> =
        new.services.iter().map(|s| (s.name.as_str(), s)).collect();
    for s in &new.services {
        match old_services.get(s.name.as_str()) {
            None => out.push(format!("service added: {}", svc(s))),
            Some(o) if *o != s => out.push(format!("service changed: {} (was {})", svc(s), svc(o))),
            Some(_) => {}
        }
    }
    for o in old.services.iter().filter(|o| !new_services.contains_key(o.name.as_str())) {
        out.push(format!("service removed: {}", svc(o)));
    }
    let old_clusters: HashMap<&str, &crate::config::ClusterConfig> =
        old.clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    let new_clusters: HashMap<&str, &crate::config::ClusterConfig> =
        new.clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    for c in &new.clusters {
        cluster_changes(old_clusters.get(c.name.as_str()).copied(), c, &mut out);
    }
    for o in old.clusters.iter().filter(|o| !new_clusters.contains_key(o.name.as_str())) {
        out.push(format!("cluster removed: {}", o.name));
    }
    out
}

/// What changed in a cluster (`before`: its last form, if it had one), for the log.
pub fn cluster_changes(
    before: Option<&crate::config::ClusterConfig>,
    c: &crate::config::ClusterConfig,
    out: &mut Vec<String>,
) {
    use std::collections::HashMap;
    if before == Some(c) {
        return;
    }
    if before.is_none() {
        out.push(format!("cluster added: {} ({} endpoints)", c.name, c.endpoints.len()));
    }
    let old_eps: HashMap<(std::net::IpAddr, u16), &crate::config::EndpointConfig> = before
        .map(|b| b.endpoints.iter().map(|e| ((e.address, e.port), e)).collect())
        .unwrap_or_default();
    for e in &c.endpoints {
        let addr = std::net::SocketAddr::new(e.address, e.port);
        match old_eps.get(&(e.address, e.port)) {
            None if before.is_some() => {
                out.push(format!("{}: endpoint added: {addr} weight {}", c.name, e.weight));
            }
            Some(o) if o.weight != e.weight => out.push(format!(
                "{}: endpoint {addr} reweighted {} -> {}",
                c.name, o.weight, e.weight
            )),
            Some(o) if o.healthy != e.healthy => out.push(format!(
                "{}: endpoint {addr} {}",
                c.name,
                if e.healthy { "healthy" } else { "unhealthy (out of service)" }
            )),
            _ => {}
        }
    }
    if let Some(b) = before {
        let now: std::collections::HashSet<(std::net::IpAddr, u16)> =
            c.endpoints.iter().map(|e| (e.address, e.port)).collect();
        for o in b.endpoints.iter().filter(|o| !now.contains(&(o.address, o.port))) {
            let addr = std::net::SocketAddr::new(o.address, o.port);
            out.push(format!("{}: endpoint removed: {addr}", c.name));
        }
    }
}

/// A configuration enum as the file spells it.
fn lower(v: &impl std::fmt::Debug) -> String {
    format!("{v:?}").to_lowercase()
}

/// The services of `cfg` and their endpoints, one line each, for the log at start.
pub fn mesh_lines(cfg: &Config) -> Vec<String> {
    cfg.services
        .iter()
        .map(|s| {
            let eps: Vec<String> = cfg
                .clusters
                .iter()
                .find(|c| c.name == s.cluster)
                .map(|c| {
                    c.endpoints
                        .iter()
                        .map(|e| {
                            let mut t = format!(
                                "{} w{}",
                                std::net::SocketAddr::new(e.address, e.port),
                                e.weight
                            );
                            if !e.healthy {
                                t.push_str(" (out of service)");
                            }
                            t
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "service {} {}:{}/{} {} -> cluster {}: {}",
                s.name,
                s.vip,
                s.port,
                lower(&s.protocol),
                lower(&s.mode),
                s.cluster,
                eps.join(", ")
            )
        })
        .collect()
}

/// A worker's loop counters at one moment (see [`Running::runtime_counters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeCounters {
    /// Loop iterations.
    pub polls: u64,
    /// Iterations that received frames.
    pub bursts: u64,
    /// Frames received.
    pub packets: u64,
    /// Cycles in iterations that received or sent frames.
    pub busy_cycles: u64,
    /// Cycles in empty iterations and asleep.
    pub idle_cycles: u64,
    /// Sleeps in `poll(2)`.
    pub sleeps: u64,
}

impl RuntimeCounters {
    /// What happened between `since` and `self`, as JSON.
    pub fn window_json(&self, since: &RuntimeCounters, worker: usize) -> serde_json::Value {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let (polls, bursts, packets) = (
            d(self.polls, since.polls),
            d(self.bursts, since.bursts),
            d(self.packets, since.packets),
        );
        let (busy, idle) =
            (d(self.busy_cycles, since.busy_cycles), d(self.idle_cycles, since.idle_cycles));
        let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
        serde_json::json!({
            "worker": worker, "polls": polls, "bursts": bursts, "packets": packets,
            "packets_per_burst": ratio(packets, bursts),
            "cycles_per_packet": ratio(busy, packets),
            "busy_cycles": busy, "idle_cycles": idle,
            "busy_share": ratio(busy, busy + idle),
            "sleeps": d(self.sleeps, since.sleeps),
        })
    }
}

/// A DPDK port's own view: driver, link, `rte_eth_stats`, and the extended counters that are
/// not zero.
#[cfg(feature = "dpdk")]
fn device_json(port: &dataplane::dpdk::Port) -> serde_json::Value {
    use serde_json::json;
    let st = port.stats().unwrap_or_default();
    let xstats: serde_json::Map<String, serde_json::Value> = port
        .xstats()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| (k, json!(v)))
        .collect();
    json!({
        "driver": port.driver(),
        "link": port.link().to_string(),
        "queues": port.queues(),
        "rss": port.rss(),
        "ipackets": st.ipackets, "opackets": st.opackets, "ibytes": st.ibytes,
        "obytes": st.obytes, "imissed": st.imissed, "ierrors": st.ierrors,
        "oerrors": st.oerrors, "rx_nombuf": st.rx_nombuf,
        "xstats": xstats,
    })
}

impl Running {
    /// Per-endpoint health and load, for the report.
    fn endpoints_json(&self) -> serde_json::Value {
        use serde_json::json;
        let snap = self.mesh.load();
        let outliers = self.outliers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let list: Vec<_> = snap
            .endpoints_by_id()
            .into_iter()
            .map(|e| {
                let (failures, successes) = self.mesh.health.totals(e.id);
                json!({
                    "address": e.addr.to_string(), "port": e.port, "weight": e.weight,
                    "ejected": outliers.is_ejected(e.id), "ejections": outliers.ejections(e.id),
                    "connects_failed": failures, "connects_ok": successes,
                    "active_flows": self.mesh.active_flows(e.id),
                })
            })
            .collect();
        json!(list)
    }

    /// Per cluster of `cfg` (the running configuration), its endpoints: configured weight and
    /// health, whether they take new flows, outlier state, and their handshake counters.
    pub fn clusters_json(&self, cfg: &Config) -> serde_json::Value {
        use serde_json::json;
        let snap = self.mesh.load();
        let outliers = self.outliers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        // Looked up by name and address, once: a large mesh must not make this quadratic.
        let ids: std::collections::HashMap<(IpAddr, u16), u32> =
            snap.endpoints().map(|x| ((x.addr, x.port), x.id)).collect();
        let live: std::collections::HashMap<&str, &dataplane::mesh::model::Cluster> =
            snap.clusters.iter().map(|l| (l.name.as_str(), &**l)).collect();
        let clusters: Vec<_> = cfg
            .clusters
            .iter()
            .map(|c| {
                let taking: std::collections::HashSet<u32> = live
                    .get(c.name.as_str())
                    .map(|l| l.eligible.iter().map(|x| x.id).collect())
                    .unwrap_or_default();
                let endpoints: Vec<_> = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        let id = ids.get(&(e.address, e.port)).copied();
                        let eligible = id.is_some_and(|id| taking.contains(&id));
                        let (failed, ok) = id.map_or((0, 0), |id| self.mesh.health.totals(id));
                        let returns_in_ms = id
                            .and_then(|id| outliers.ejected_until(id))
                            .map(|t| t.saturating_duration_since(now).as_millis());
                        json!({
                            "address": e.address.to_string(), "port": e.port,
                            "weight": e.weight, "healthy": e.healthy,
                            "takes_new_flows": eligible,
                            "ejected": id.is_some_and(|id| outliers.is_ejected(id)),
                            "ejections": id.map_or(0, |id| outliers.ejections(id)),
                            "returns_in_ms": returns_in_ms,
                            "connects_ok": ok, "connects_failed": failed,
                            "active_flows": id.map_or(0, |id| self.mesh.active_flows(id)),
                        })
                    })
                    .collect();
                json!({"name": c.name, "policy": c.policy, "endpoints": endpoints})
            })
            .collect();
        json!({"generation": snap.generation, "clusters": clusters})
    }

    /// The services of `cfg` as the workers have them.
    pub fn services_json(&self, cfg: &Config) -> serde_json::Value {
        use serde_json::json;
        let snap = self.mesh.load();
        let live: std::collections::HashMap<&str, &dataplane::mesh::model::Service> =
            snap.service_list.iter().map(|x| (&*x.name, x)).collect();
        let services: Vec<_> = cfg
            .services
            .iter()
            .map(|s| {
                let live = live.get(s.name.as_str()).copied();
                let mut j = json!({
                    "name": s.name, "vip": s.vip.to_string(), "port": s.port,
                    "protocol": s.protocol, "cluster": s.cluster, "mode": s.mode,
                    "active": live.is_some(),
                });
                if let Some(live) = live {
                    service_counters(&mut j, &self.mesh.service_totals(live.id));
                }
                j
            })
            .collect();
        json!({"generation": snap.generation, "services": services})
    }

    /// Per worker, its loop counters now (VPP's `show runtime`): the admin API keeps windows
    /// of them.
    pub fn runtime_counters(&self) -> Vec<RuntimeCounters> {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats
            .iter()
            .map(|w| RuntimeCounters {
                polls: w.counters.polls.load(Relaxed),
                bursts: w.counters.bursts.load(Relaxed),
                packets: w.counters.packets.load(Relaxed),
                busy_cycles: w.counters.busy_cycles.load(Relaxed),
                idle_cycles: w.counters.idle_cycles.load(Relaxed),
                sleeps: w.counters.sleeps.load(Relaxed),
            })
            .collect()
    }

    /// Counters as JSON: per port (summed over workers), per worker, drops by reason.
    pub fn report_json(&self) -> serde_json::Value {
        use serde_json::json;
        use std::sync::atomic::Ordering::Relaxed;
        let mut ports = serde_json::Map::new();
        for (i, name) in self.port_names.iter().enumerate() {
            let mut t = PortStats::default();
            for w in &self.stats {
                if let Some(p) = w.ports.get(i) {
                    t.add(&p.snapshot());
                }
            }
            let p: serde_json::Map<_, _> =
                t.values().map(|(info, v)| (info.name.to_owned(), json!(v))).collect();
            ports.insert(name.clone(), serde_json::Value::Object(p));
        }
        let mut drops = serde_json::Map::new();
        // Frames a port dropped for their size never reach a worker's pipeline: they are
        // counted under the pipeline's reason here.
        let oversize: u64 = self
            .stats
            .iter()
            .flat_map(|w| w.ports.iter())
            .map(|p| p.rx_oversize.load(Relaxed))
            .sum();
        // Frames a DPDK device refused never reach weir at all: its count.
        #[cfg(feature = "dpdk")]
        let dpdk = self.dpdk_ports.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        #[cfg(feature = "dpdk")]
        let rx_errors: u64 = dpdk
            .iter()
            .flat_map(|d| d.open_ports().flatten())
            .filter_map(|p| p.stats().ok())
            .map(|s| s.ierrors)
            .sum();
        #[cfg(not(feature = "dpdk"))]
        let rx_errors = 0u64;
        for &r in DropReason::ALL {
            let mut n: u64 = self.stats.iter().map(|w| w.drops[r as usize].load(Relaxed)).sum();
            match r {
                DropReason::Oversize => n += oversize,
                DropReason::RxErrors => n += rx_errors,
                _ => {}
            }
            if n > 0 {
                drops.insert(r.as_str().to_owned(), json!(n));
            }
        }
        let workers: Vec<_> = self
            .stats
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut j = serde_json::Map::new();
                j.insert("worker".into(), json!(i));
                for (info, v) in w.counters.values() {
                    j.insert(info.name.into(), json!(v));
                }
                let c = &w.counters;
                let (packets, bursts) = (c.packets.load(Relaxed), c.bursts.load(Relaxed));
                let busy = c.busy_cycles.load(Relaxed);
                let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
                j.insert("avg_burst".into(), json!(ratio(packets, bursts)));
                j.insert("cycles_per_packet".into(), json!(ratio(busy, packets)));
                j.insert(
                    "drops".into(),
                    json!(w.drops.iter().map(|d| d.load(Relaxed)).sum::<u64>()),
                );
                serde_json::Value::Object(j)
            })
            .collect();
        #[cfg(feature = "dpdk")]
        for (name, port) in self.port_names.iter().zip(dpdk.iter().flat_map(|d| d.open_ports())) {
            let Some(port) = port else { continue };
            if let Some(p) = ports.get_mut(name) {
                let dev = device_json(port);
                // DPDK queues count frames; the device counts bytes.
                p["rx_bytes"] = dev["ibytes"].clone();
                p["tx_bytes"] = dev["obytes"].clone();
                p["device"] = dev;
            }
        }
        let mempool = match self.buffers {
            Buffers::Native(pool) => json!({
                "kind": "native", "buffers": pool.capacity(), "hugepages": pool.hugepages(),
                "exhausted": pool.exhausted(), "available": pool.available(),
            }),
            #[cfg(feature = "dpdk")]
            Buffers::Dpdk(pool) => json!({
                "kind": "dpdk", "buffers": pool.capacity(), "exhausted": pool.exhausted(),
                "available": pool.available(), "in_use": pool.in_use(),
            }),
        };
        let snap = self.mesh.load();
        let services: Vec<_> = snap
            .service_list
            .iter()
            .map(|s| {
                let mut j = json!({
                    "name": &*s.name, "vip": s.vip.to_string(), "port": s.port,
                    "protocol": dataplane::mesh::model::proto_name(s.proto),
                });
                service_counters(&mut j, &self.mesh.service_totals(s.id));
                j
            })
            .collect();
        json!({
            "ports": ports, "workers": workers, "drops": drops, "mempool": mempool,
            "services": services, "endpoints": self.endpoints_json(),
        })
    }

    /// Counters as a human-readable table.
    pub fn report_text(&self) -> String {
        report_text(&self.report_json())
    }
}

/// Adds a service's counters to its JSON: each declared counter, and its active flows.
fn service_counters(j: &mut serde_json::Value, t: &dataplane::mesh::engine::ServiceTotals) {
    for (info, v) in t.values() {
        j[info.name] = serde_json::json!(v);
    }
    j["flows_active"] = serde_json::json!(t.flows_opened.saturating_sub(t.flows_closed));
}

/// Counters as a human-readable table, from their JSON ([`Running::report_json`], or `/stats`
/// of the admin API).
pub fn report_text(j: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<12} {:>12} {:>10} {:>12} {:>10}",
        "port", "rx_packets", "rx_drop", "tx_packets", "tx_drop"
    );
    if let Some(ports) = j["ports"].as_object() {
        for (name, p) in ports {
            let n = |k: &str| p[k].as_u64().unwrap_or(0);
            let _ = writeln!(
                s,
                "{:<12} {:>12} {:>10} {:>12} {:>10}",
                name,
                n("rx_packets"),
                n("rx_dropped"),
                n("tx_packets"),
                n("tx_dropped")
            );
        }
    }
    let _ = writeln!(
        s,
        "\n{:<7} {:>10} {:>8} {:>10} {:>9} {:>10} {:>8} {:>8}",
        "worker", "packets", "bursts", "avg_burst", "cyc/pkt", "forwarded", "replies", "drops"
    );
    if let Some(ws) = j["workers"].as_array() {
        for w in ws {
            let n = |k: &str| w[k].as_u64().unwrap_or(0);
            let f = |k: &str| w[k].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                s,
                "{:<7} {:>10} {:>8} {:>10.1} {:>9.0} {:>10} {:>8} {:>8}",
                n("worker"),
                n("packets"),
                n("bursts"),
                f("avg_burst"),
                f("cycles_per_packet"),
                n("forwarded"),
                n("replies"),
                n("drops")
            );
        }
    }
    let _ = writeln!(s, "\ndrops by reason:");
    match j["drops"].as_object() {
        Some(d) if !d.is_empty() => {
            for (k, v) in d {
                let _ = writeln!(s, "  {k:<26} {v}");
            }
        }
        _ => {
            let _ = writeln!(s, "  (none)");
        }
    }
    if let Some(ports) = j["ports"].as_object() {
        let devices: Vec<_> =
            ports.iter().filter_map(|(n, p)| Some((n, p.get("device")?))).collect();
        if !devices.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<12} {:<14} {:<20} {:>11} {:>11} {:>8} {:>8} {:>8} {:>9}",
                "device",
                "driver",
                "link",
                "ipackets",
                "opackets",
                "imissed",
                "ierrors",
                "oerrors",
                "rx_nombuf"
            );
            for (name, d) in devices {
                let n = |k: &str| d[k].as_u64().unwrap_or(0);
                let _ = writeln!(
                    s,
                    "{:<12} {:<14} {:<20} {:>11} {:>11} {:>8} {:>8} {:>8} {:>9}",
                    name,
                    d["driver"].as_str().unwrap_or("?"),
                    d["link"].as_str().unwrap_or("?"),
                    n("ipackets"),
                    n("opackets"),
                    n("imissed"),
                    n("ierrors"),
                    n("oerrors"),
                    n("rx_nombuf")
                );
            }
        }
    }
    if let Some(ws) = j["workers"].as_array() {
        let sum = |k: &str| ws.iter().map(|w| w[k].as_u64().unwrap_or(0)).sum::<u64>();
        if sum("flows_opened") > 0 {
            let _ = writeln!(
                    s,
                    "\nmesh: {} flows live, {} opened, {} expired, {} evicted; {} packets translated to \
                     endpoints, {} back; {} handed to their flow's worker",
                    sum("flows"),
                    sum("flows_opened"),
                    sum("flows_expired"),
                    sum("flows_evicted"),
                    sum("mesh_forward"),
                    sum("mesh_reverse"),
                    sum("handed_off")
                );
        }
    }
    if let Some(eps) = j["endpoints"].as_array().filter(|e| !e.is_empty()) {
        let _ = writeln!(
            s,
            "\n{:<28} {:>6} {:>8} {:>11} {:>11} {:>9}",
            "endpoint", "weight", "ejected", "connects_ok", "failed", "ejections"
        );
        for e in eps {
            let n = |k: &str| e[k].as_u64().unwrap_or(0);
            let _ = writeln!(
                s,
                "{:<28} {:>6} {:>8} {:>11} {:>11} {:>9}",
                format!("{}:{}", e["address"].as_str().unwrap_or("?"), n("port")),
                n("weight"),
                if e["ejected"].as_bool().unwrap_or(false) { "yes" } else { "no" },
                n("connects_ok"),
                n("connects_failed"),
                n("ejections")
            );
        }
    }
    let m = &j["mempool"];
    let n = |k: &str| m[k].as_u64().unwrap_or(0);
    let _ = match m["kind"].as_str() {
        Some("dpdk") => writeln!(
            s,
            "\nmbuf pool: {} mbufs, {} free, {} allocation failures",
            n("buffers"),
            n("available"),
            n("exhausted")
        ),
        _ => writeln!(
            s,
            "\nmempool: {} buffers on {} pages, {} allocation failures",
            n("buffers"),
            if m["hugepages"].as_bool().unwrap_or(false) { "2 MiB huge" } else { "normal" },
            n("exhausted")
        ),
    };
    s
}
