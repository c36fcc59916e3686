//! xDS: weir driven by a control plane that speaks Envoy's v3 API.
//!
//! - [`audit`]: Envoy's descriptors, and the field-by-field check of a resource against what
//!   weir reads and ignores.
//! - [`resources`]: a Listener, Cluster or ClusterLoadAssignment to weir's configuration.
//! - [`Resources`]: the resources held, put together into services and clusters, with what
//!   waits for what (a listener for its cluster, an EDS cluster for its endpoints).
//! - [`import`]: an Envoy `/config_dump` through the same translation, to weir's YAML.
//! - [`client`]: the ADS client (state of the world and delta) that keeps them in force.

pub mod audit;
pub mod client;
pub mod import;
pub mod resources;
pub mod test_server;

use crate::config::{ClusterConfig, Config, ServiceConfig};
use resources::{XdsAssignment, XdsCluster, XdsListener};
use std::collections::BTreeMap;

/// Accepted resources by name.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Listeners.
    pub listeners: BTreeMap<String, XdsListener>,
    /// Clusters.
    pub clusters: BTreeMap<String, XdsCluster>,
    /// Load assignments, by cluster (or EDS service) name.
    pub assignments: BTreeMap<String, XdsAssignment>,
}

/// Services and clusters put together from [`Resources`].
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Assembled {
    /// Services (listeners whose clusters are ready).
    pub services: Vec<ServiceConfig>,
    /// Clusters (with their endpoints), including the splits of weighted listeners.
    pub clusters: Vec<ClusterConfig>,
    /// Resources held back, and what they wait for.
    pub waiting: Vec<Waiting>,
}

/// A resource held back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Waiting {
    /// `listener` or `cluster`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// What it waits for.
    pub reason: String,
}

impl<'de> serde::Deserialize<'de> for Waiting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Read {
            kind: String,
            name: String,
            reason: String,
        }
        let r = Read::deserialize(d)?;
        let kind = ["listener", "cluster"]
            .into_iter()
            .find(|k| *k == r.kind)
            .ok_or_else(|| serde::de::Error::custom(format!("a resource kind `{}`", r.kind)))?;
        Ok(Waiting { kind, name: r.name, reason: r.reason })
    }
}

impl Resources {
    /// Puts the resources together. An EDS cluster without its load assignment waits for it
    /// unless `serve_without_endpoints(cluster)` (its initial fetch timed out; it then serves
    /// with none); a listener waits for its clusters.
    pub fn assemble(&self, serve_without_endpoints: impl Fn(&str) -> bool) -> Assembled {
        self.assemble_with(serve_without_endpoints, |_| None)
    }

    /// [`Resources::assemble`], with `in_force(cluster)` giving what an EDS cluster without its
    /// load assignment served as before, if it did: it serves so until its endpoints come.
    pub fn assemble_with(
        &self,
        serve_without_endpoints: impl Fn(&str) -> bool,
        in_force: impl Fn(&str) -> Option<ClusterConfig>,
    ) -> Assembled {
        let mut out = Assembled::default();
        let mut ready: BTreeMap<&str, &ClusterConfig> = BTreeMap::new();
        let mut built: Vec<ClusterConfig> = Vec::with_capacity(self.clusters.len());
        for (name, c) in &self.clusters {
            let mut config = c.config.clone();
            if let Some(eds) = &c.eds {
                match self.assignments.get(eds) {
                    Some(a) => resources::apply_assignment(&mut config, a, c.locality_weighted),
                    None if serve_without_endpoints(name) => {}
                    None if in_force(name).is_some() => {
                        if let Some(before) = in_force(name) {
                            config = before;
                        }
                    }
                    None => {
                        out.waiting.push(Waiting {
                            kind: "cluster",
                            name: name.clone(),
                            reason: format!("its endpoints (EDS `{eds}`)"),
                        });
                        continue;
                    }
                }
            }
            built.push(config);
        }
        for c in &built {
            ready.insert(c.name.as_str(), c);
        }
        let mut splits = Vec::new();
        for (name, l) in &self.listeners {
            let wanted: Vec<&str> = if l.split.is_empty() {
                vec![l.service.cluster.as_str()]
            } else {
                l.split.iter().map(|s| s.cluster.as_str()).collect()
            };
            if let Some(missing) = wanted.iter().find(|c| !ready.contains_key(**c)) {
                let why = if self.clusters.contains_key(*missing) {
                    format!("cluster `{missing}`, which waits for its endpoints")
                } else {
                    format!("cluster `{missing}`")
                };
                out.waiting.push(Waiting { kind: "listener", name: name.clone(), reason: why });
                continue;
            }
            if !l.split.is_empty() {
                let first = ready[wanted[0]];
                if let Some(other) =
                    wanted.iter().map(|c| ready[*c]).find(|c| c.policy != first.policy)
                {
                    out.waiting.push(Waiting {
                        kind: "listener",
                        name: name.clone(),
                        reason: format!(
                            "its weighted clusters to pick alike: `{}` and `{}` differ in lb_policy",
                            first.name, other.name
                        ),
                    });
                    continue;
                }
                splits.push(ClusterConfig {
                    name: l.service.cluster.clone(),
                    policy: first.policy,
                    maglev_table_size: None,
                    on_endpoint_gone: first.on_endpoint_gone,
                    endpoints: Vec::new(),
                    connect_timeout_ms: None,
                    outlier: None,
                    overprovisioning_percent: 140,
                    localities: Vec::new(),
                    split: l.split.clone(),
                });
            }
            out.services.push(l.service.clone());
        }
        out.clusters = built;
        out.clusters.extend(splits);
        out
    }
}

/// The file's configuration with xDS's services and clusters added to its own.
pub fn merged(file: &Config, services: &[ServiceConfig], clusters: &[ClusterConfig]) -> Config {
    let mut cfg = file.clone();
    cfg.services.extend_from_slice(services);
    cfg.clusters.extend_from_slice(clusters);
    cfg
}
