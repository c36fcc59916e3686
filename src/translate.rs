//! From the configuration to the dataplane's terms: the mesh snapshot, the workers' mesh
//! settings and the outlier detector.

use crate::config::{ClusterConfig, Config};
use anyhow::Result;
use dataplane::mesh::engine::{MeshEngine, MeshSettings, SharedMesh};
use dataplane::mesh::health::{OutlierDetector, OutlierSettings};
use dataplane::mesh::model::{ClusterSpec, MeshCapacity, MeshSnapshot};
use std::sync::Arc;

/// The mesh snapshot a configuration describes; endpoint ids carry over from `previous`.
pub fn mesh_snapshot(
    cfg: &Config,
    previous: Option<&MeshSnapshot>,
) -> Result<MeshSnapshot, dataplane::mesh::model::MeshError> {
    mesh_snapshot_with(cfg, previous, |_| true)
}

/// [`mesh_snapshot`], with `healthy(id)` saying which endpoints passive checks keep in service.
pub(crate) fn mesh_snapshot_with(
    cfg: &Config,
    previous: Option<&MeshSnapshot>,
    healthy: impl Fn(u32) -> bool,
) -> Result<MeshSnapshot, dataplane::mesh::model::MeshError> {
    use crate::config::{ModeName, ProtocolName};
    use dataplane::mesh::model::{proto, Encap, Mode, ServiceSpec};
    let services: Vec<ServiceSpec> = cfg
        .services
        .iter()
        .map(|s| ServiceSpec {
            name: s.name.clone(),
            vip: s.vip,
            port: s.port,
            proto: match s.protocol {
                ProtocolName::Tcp => proto::TCP,
                ProtocolName::Udp => proto::UDP,
            },
            cluster: s.cluster.clone(),
            mode: match s.mode {
                ModeName::Nat => Mode::Nat,
                ModeName::Dnat => Mode::Dnat,
                ModeName::Dsr => Mode::Dsr(match s.encap {
                    crate::config::EncapName::Ipip => Encap::IpIp,
                    crate::config::EncapName::Gue => Encap::Gue { port: s.gue_port },
                }),
            },
        })
        .collect();
    let find = |name: &str| cfg.clusters.iter().find(|m| m.name == name);
    let clusters: Vec<ClusterSpec> = cfg.clusters.iter().map(|c| cluster_spec(c, find)).collect();
    MeshSnapshot::build(&services, &clusters, mesh_capacity(cfg), previous, healthy)
}

/// The mesh's fixed sizes.
pub(crate) fn mesh_capacity(cfg: &Config) -> MeshCapacity {
    MeshCapacity {
        services: cfg.mesh.max_services,
        clusters: cfg.mesh.max_clusters,
        endpoints: cfg.mesh.max_endpoints,
    }
}

/// A cluster in the mesh's terms; `find(name)` gives the clusters a split is made of.
pub(crate) fn cluster_spec<'a>(
    c: &ClusterConfig,
    find: impl Fn(&str) -> Option<&'a ClusterConfig>,
) -> ClusterSpec {
    use crate::config::{GoneName, PolicyName};
    use dataplane::mesh::model::{Balance, EndpointSpec, OnEndpointGone, Policy};
    let endpoint_of = |e: &crate::config::EndpointConfig, group: u32| EndpointSpec {
        addr: e.address,
        port: e.port,
        weight: e.weight,
        healthy: e.healthy,
        priority: e.priority,
        group,
    };
    let (endpoints, balance) = if c.split.is_empty() {
        // Localities are groups; validation saw that every endpoint names one.
        let group = |e: &crate::config::EndpointConfig| {
            e.locality
                .as_ref()
                .and_then(|l| {
                    c.localities.iter().position(|x| &x.name == l && x.priority == e.priority)
                })
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(0)
        };
        (
            c.endpoints.iter().map(|e| endpoint_of(e, group(e))).collect(),
            Balance {
                overprovisioning_percent: c.overprovisioning_percent,
                groups: c.localities.iter().map(|l| l.weight).collect(),
                groups_follow_health: true,
            },
        )
    } else {
        // A split: its clusters' endpoints, a group per cluster.
        let mut eps = Vec::new();
        for (g, part) in c.split.iter().enumerate() {
            let group = u32::try_from(g).unwrap_or(u32::MAX);
            if let Some(member) = find(&part.cluster) {
                eps.extend(member.endpoints.iter().map(|e| endpoint_of(e, group)));
            }
        }
        (
            eps,
            Balance {
                overprovisioning_percent: c.overprovisioning_percent,
                groups: c.split.iter().map(|p| p.weight).collect(),
                groups_follow_health: false,
            },
        )
    };
    ClusterSpec {
        name: c.name.clone(),
        policy: match c.policy {
            PolicyName::Maglev => Policy::Maglev,
            PolicyName::RoundRobin => Policy::RoundRobin,
            PolicyName::Random => Policy::Random,
            PolicyName::LeastRequest => Policy::LeastRequest,
        },
        maglev_table_size: c.maglev_table_size,
        on_endpoint_gone: match c.on_endpoint_gone {
            GoneName::Drain => OnEndpointGone::Drain,
            GoneName::Reset => OnEndpointGone::Reset,
        },
        endpoints,
        balance,
        connect_timeout_ns: c.connect_timeout_ms.map(|t| t.saturating_mul(1_000_000)),
    }
}

fn mesh_outlier_settings(cfg: &Config) -> OutlierSettings {
    let m = &cfg.mesh;
    OutlierSettings {
        consecutive_failures: m.outlier_consecutive_failures,
        base_ejection: std::time::Duration::from_millis(m.outlier_base_ejection_ms),
        max_ejection: std::time::Duration::from_millis(m.outlier_max_ejection_ms),
        max_ejection_percent: m.outlier_max_ejection_percent,
    }
}

/// The outlier detector for `cfg`, its clusters' settings taken from `snap` (built from it).
pub(crate) fn outlier_detector(cfg: &Config, snap: &MeshSnapshot) -> OutlierDetector {
    let mut d = OutlierDetector::new(mesh_outlier_settings(cfg), cfg.mesh.max_endpoints);
    d.configure(outlier_settings(cfg, snap));
    d
}

/// The outlier settings of each endpoint of `snap` (built from `cfg`): its cluster's, or the
/// mesh's. An endpoint in two clusters takes the first's; a split's endpoints their own
/// cluster's.
pub(crate) fn outlier_settings(cfg: &Config, snap: &MeshSnapshot) -> Vec<(u32, OutlierSettings)> {
    cluster_outlier_settings(cfg, cfg.clusters.iter().zip(snap.clusters.iter().map(|c| &**c)))
}

/// The outlier settings of the endpoints of these clusters (as configured, and as built), as
/// [`outlier_settings`] gives them.
pub(crate) fn cluster_outlier_settings<'a>(
    cfg: &Config,
    clusters: impl Iterator<Item = (&'a ClusterConfig, &'a dataplane::mesh::model::Cluster)>,
) -> Vec<(u32, OutlierSettings)> {
    let mesh = mesh_outlier_settings(cfg);
    let mut out: Vec<(u32, OutlierSettings)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (c, built) in clusters {
        if !c.split.is_empty() {
            continue;
        }
        let settings = c.outlier.as_ref().map_or(mesh, |o| OutlierSettings {
            consecutive_failures: o.consecutive_failures,
            base_ejection: std::time::Duration::from_millis(o.base_ejection_ms),
            max_ejection: std::time::Duration::from_millis(o.max_ejection_ms),
            max_ejection_percent: o.max_ejection_percent,
        });
        for id in built.member_ids() {
            if seen.insert(id) {
                out.push((id, settings));
            }
        }
    }
    out
}

/// A worker's mesh engine for `cfg`.
pub(crate) fn mesh_engine(cfg: &Config, worker: usize, shared: &Arc<SharedMesh>) -> MeshEngine {
    use dataplane::mesh::flow::{FlowTimeouts, WhenFull};
    let m = &cfg.mesh;
    let ms = 1_000_000u64;
    let settings = MeshSettings {
        flow_capacity: m.flows_per_worker,
        timeouts: FlowTimeouts {
            syn_ns: m.tcp_syn_timeout_ms.saturating_mul(ms),
            established_ns: m.tcp_established_timeout_ms.saturating_mul(ms),
            closing_ns: m.tcp_closing_timeout_ms.saturating_mul(ms),
            datagram_ns: m.udp_timeout_ms.saturating_mul(ms),
        },
        when_full: match m.when_full {
            crate::config::WhenFullName::DropNew => WhenFull::DropNew,
            crate::config::WhenFullName::EvictEmbryonic => WhenFull::EvictEmbryonic,
        },
        snat_ports: (m.snat_port_first, m.snat_port_last),
        endpoints: m.max_endpoints,
        clusters: m.max_clusters,
        reset_unknown: m.unknown_segment == crate::config::UnknownSegmentName::Reset,
        // DPDK's net_af_packet rolls a flow's frames over to another queue when one's ring is
        // full: with more than one worker, a connection's segments may reach any of them.
        seek_unknown: cfg.workers.len() > 1
            && cfg.ports.iter().any(|p| {
                p.backend == crate::config::Backend::Dpdk
                    && p.device.as_deref().is_some_and(|d| d.starts_with("net_af_packet"))
            }),
    };
    let workers = u16::try_from(cfg.workers.len()).unwrap_or(u16::MAX);
    MeshEngine::new(u16::try_from(worker).unwrap_or(0), workers, &settings, Arc::clone(shared))
}
