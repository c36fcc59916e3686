//! From the configuration to the dataplane's terms: the mesh snapshot, the workers' mesh
//! settings and the outlier detector.

use crate::config::Config;
use anyhow::Result;
use dataplane::mesh::engine::{MeshEngine, MeshSettings, SharedMesh};
use dataplane::mesh::health::{OutlierDetector, OutlierSettings};
use dataplane::mesh::model::MeshSnapshot;
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
    use crate::config::{GoneName, ModeName, PolicyName, ProtocolName};
    use dataplane::mesh::model::{
        proto, ClusterSpec, Encap, EndpointSpec, MeshCapacity, Mode, OnEndpointGone, Policy,
        ServiceSpec,
    };
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
    let clusters: Vec<ClusterSpec> = cfg
        .clusters
        .iter()
        .map(|c| ClusterSpec {
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
            endpoints: c
                .endpoints
                .iter()
                .map(|e| EndpointSpec {
                    addr: e.address,
                    port: e.port,
                    weight: e.weight,
                    healthy: e.healthy,
                })
                .collect(),
        })
        .collect();
    let cap = MeshCapacity {
        services: cfg.mesh.max_services,
        clusters: cfg.mesh.max_clusters,
        endpoints: cfg.mesh.max_endpoints,
    };
    MeshSnapshot::build(&services, &clusters, cap, previous, healthy)
}

pub(crate) fn outlier_detector(cfg: &Config) -> OutlierDetector {
    let m = &cfg.mesh;
    OutlierDetector::new(
        OutlierSettings {
            consecutive_failures: m.outlier_consecutive_failures,
            base_ejection: std::time::Duration::from_millis(m.outlier_base_ejection_ms),
            max_ejection: std::time::Duration::from_millis(m.outlier_max_ejection_ms),
            max_ejection_percent: m.outlier_max_ejection_percent,
        },
        m.max_endpoints,
    )
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
    };
    let workers = u16::try_from(cfg.workers.len()).unwrap_or(u16::MAX);
    MeshEngine::new(u16::try_from(worker).unwrap_or(0), workers, &settings, Arc::clone(shared))
}
