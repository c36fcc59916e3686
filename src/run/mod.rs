//! The running dataplane: started from a configuration ([`start`]: the mempool, the ports'
//! queues, the FIB and one pinned worker per configured core), controlled while it runs
//! (reload, passive health, drain, stop: here), and reporting on itself ([`report`]: counters,
//! the endpoint and service views, the log lines that explain the mesh).

#[cfg(feature = "dpdk")]
mod dpdk;
pub mod report;
mod start;

pub use report::{first_difference, mesh_changes, mesh_lines, report_text, RuntimeCounters};
pub use start::{start, start_taking_over, start_within, NativeQueue};

use crate::config::Config;
use crate::translate::{mesh_snapshot_with, outlier_settings};
use anyhow::{bail, Result};
use dataplane::mempool::Mempool;
use dataplane::mesh::engine::SharedMesh;
use dataplane::mesh::health::OutlierDetector;
use dataplane::mesh::model::MeshSnapshot;
use dataplane::worker::{StopSignal, WorkerStats};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Whether two configurations differ in their services and clusters only. (Compared in place:
/// a control plane's mesh is too large to copy for this at every update.)
fn same_apart_from_mesh(a: &Config, b: &Config) -> bool {
    let Config {
        workers,
        idle,
        mempool,
        ports,
        routes,
        neighbors,
        neighbor,
        icmp,
        eal,
        services: _,
        clusters: _,
        mesh,
        admin,
        drain_timeout_ms,
        xds,
        handover,
    } = a;
    *workers == b.workers
        && *idle == b.idle
        && *mempool == b.mempool
        && *ports == b.ports
        && *routes == b.routes
        && *neighbors == b.neighbors
        && *neighbor == b.neighbor
        && *icmp == b.icmp
        && *eal == b.eal
        && *mesh == b.mesh
        && *admin == b.admin
        && *drain_timeout_ms == b.drain_timeout_ms
        && *xds == b.xds
        && *handover == b.handover
}

/// One endpoint's passive health as a hot restart carries it: by address and port (endpoint
/// ids are each process's own).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CarriedHealth {
    /// The endpoint's address.
    pub address: std::net::IpAddr,
    /// Its port.
    pub port: u16,
    /// What is left of its ejection, ms, if it is ejected.
    pub ejected_ms: Option<u64>,
    /// Its ejections so far (the next lasts one base ejection longer).
    pub ejections: u32,
    /// Its current run of failed connects.
    pub run: u32,
    /// Failed and successful connects so far.
    pub connects: (u64, u64),
}

/// Puts `carried` into `outliers` and `health` for the endpoints `snap` has (those it does not
/// have are gone with the new configuration). Returns how many are ejected.
pub(crate) fn restore_health(
    carried: &[CarriedHealth],
    snap: &MeshSnapshot,
    outliers: &mut OutlierDetector,
    health: &dataplane::mesh::health::HealthTable,
) -> usize {
    let now = std::time::Instant::now();
    let mut ejected = 0;
    for c in carried {
        let Some(id) = snap.endpoint_id(c.address, c.port) else { continue };
        let left = c.ejected_ms.map(std::time::Duration::from_millis);
        if outliers.restore(id, left, c.ejections, now) && left.is_some() {
            ejected += 1;
        }
        health.restore(id, c.run, c.connects);
    }
    ejected
}

/// Changes a reload's summary names one by one; more are counted.
const MAX_CHANGES_LOGGED: usize = 20;

/// The buffers the ports receive into.
enum Buffers {
    /// weir's own pool (af_packet, TAP).
    Native(&'static Mempool),
    /// A DPDK mbuf pool.
    #[cfg(feature = "dpdk")]
    Dpdk(&'static dataplane::dpdk::MbufPool),
}

/// A reload's line for the log: what the mesh holds now, and what changed.
fn summary(snap: &MeshSnapshot, changes: &[String]) -> String {
    format!(
        "{} services, {} clusters, {} endpoints (generation {}){}",
        snap.service_list.len(),
        snap.clusters.len(),
        snap.endpoint_count(),
        snap.generation,
        if changes.is_empty() {
            "; no change".to_owned()
        } else if changes.len() > MAX_CHANGES_LOGGED {
            format!(
                "; {}; and {} more changes",
                changes[..MAX_CHANGES_LOGGED].join("; "),
                changes.len() - MAX_CHANGES_LOGGED
            )
        } else {
            format!("; {}", changes.join("; "))
        }
    )
}

/// A running dataplane.
pub struct Running {
    stop: Arc<StopSignal>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Per-worker counters.
    pub stats: Vec<Arc<WorkerStats>>,
    /// Port names, by port number.
    pub port_names: Vec<String>,
    buffers: Buffers,
    /// The mesh configuration the workers share.
    mesh: Arc<SharedMesh>,
    /// Passive outlier detection (control thread only).
    outliers: std::sync::Mutex<OutlierDetector>,
    /// The locks on the interfaces, held while running.
    claims: Option<crate::claim::InterfaceClaims>,
    /// DPDK ports, by port number: stopped and closed when `Running` drops, after the workers;
    /// let go for a hot restart's successor.
    #[cfg(feature = "dpdk")]
    dpdk_ports: std::sync::Mutex<Option<dpdk::DpdkPorts>>,
    /// The MAC of each port, by port number.
    pub port_macs: Vec<[u8; 6]>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Ports (DPDK's) close after this, with no worker left polling them.
        self.stop();
    }
}

impl Running {
    /// Applies the mesh part of a new configuration (services, clusters, endpoints): validated
    /// first, in effect at each worker's next poll; flows keep their endpoints. Anything else
    /// that differs from the running configuration is refused: it needs a restart.
    pub fn reload(&self, running: &Config, new: &Config) -> Result<String> {
        if !same_apart_from_mesh(running, new) {
            let mut a = running.clone();
            let mut b = new.clone();
            for c in [&mut a, &mut b] {
                c.services.clear();
                c.clusters.clear();
            }
            let field = first_difference(
                &serde_json::to_value(&a).unwrap_or_default(),
                &serde_json::to_value(&b).unwrap_or_default(),
            )
            .unwrap_or_default();
            bail!(
                "`{field}` differs from the running configuration: only services and clusters \
                 change without a restart"
            );
        }
        let previous = self.mesh.load();
        let mut outliers = self.outliers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let snap = mesh_snapshot_with(new, Some(&previous), |id| !outliers.is_ejected(id))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        outliers.configure(outlier_settings(new, &snap));
        let summary = summary(&snap, &mesh_changes(running, new));
        self.mesh.store(snap);
        Ok(summary)
    }

    /// Applies new forms of some of `running`'s clusters, each with its index in
    /// `running.clusters` (names unchanged, and validated by
    /// [`crate::config::validate_cluster_updates`]): only they, and the splits made of them,
    /// are built again; the rest of the mesh is shared with the snapshot in use. This is how a
    /// control plane's endpoint updates are applied, at a cost that follows what they change.
    pub fn reload_clusters(
        &self,
        running: &Config,
        changed: &[(usize, crate::config::ClusterConfig)],
    ) -> Result<String> {
        use crate::translate::{cluster_spec, mesh_capacity};
        let find = |name: &str| {
            changed
                .iter()
                .map(|(_, c)| c)
                .find(|c| c.name == name)
                .or_else(|| running.clusters.iter().find(|m| m.name == name))
        };
        let mut specs = Vec::with_capacity(changed.len());
        for (i, c) in changed {
            let at = u32::try_from(*i).map_err(|_| anyhow::anyhow!("clusters[{i}]: too many"))?;
            specs.push((at, cluster_spec(c, find)));
        }
        for (i, c) in running.clusters.iter().enumerate() {
            if c.split.iter().any(|p| changed.iter().any(|(_, x)| x.name == p.cluster)) {
                let at =
                    u32::try_from(i).map_err(|_| anyhow::anyhow!("clusters[{i}]: too many"))?;
                specs.push((at, cluster_spec(c, find)));
            }
        }
        let previous = self.mesh.load();
        let mut outliers = self.outliers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let snap = previous
            .with_clusters(&specs, mesh_capacity(running), |id| !outliers.is_ejected(id))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut changes = Vec::new();
        for (i, c) in changed {
            report::cluster_changes(running.clusters.get(*i), c, &mut changes);
        }
        // The changed clusters' endpoints take their settings, those of other clusters keep
        // theirs; an endpoint also in another cluster takes the first's, as in a whole build,
        // which is then what this costs.
        let shared = changed
            .iter()
            .filter_map(|(i, _)| snap.clusters.get(*i))
            .any(|c| c.member_ids().any(|id| snap.holders(id) > 1));
        if shared {
            let now =
                running.clusters.iter().enumerate().map(|(i, c)| {
                    changed.iter().find(|(at, _)| *at == i).map_or(c, |(_, new)| new)
                });
            let built = snap.clusters.iter().map(|c| &**c);
            outliers.configure(crate::translate::cluster_outlier_settings(running, now.zip(built)));
        } else {
            outliers.configure_some(crate::translate::cluster_outlier_settings(
                running,
                changed.iter().filter_map(|(i, c)| Some((c, &**snap.clusters.get(*i)?))),
            ));
        }
        let summary = summary(&snap, &changes);
        self.mesh.store(snap);
        Ok(summary)
    }

    /// Passive health: ejects endpoints whose connects keep failing and brings back those whose
    /// ejection is over, rebuilding the mesh from `cfg` when that changes who takes new flows.
    /// Logs each ejection (cluster, endpoint, failures in a row, for how long) and each return.
    /// Returns whether anything changed.
    pub fn check_health(&self, cfg: &Config) -> bool {
        let mut outliers = self.outliers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = self.mesh.load();
        let clusters = || -> Vec<Vec<u32>> {
            previous.clusters.iter().map(|c| c.member_ids().collect()).collect()
        };
        let before: Vec<(u32, bool, u32)> = previous
            .endpoints()
            .map(|e| (e.id, outliers.is_ejected(e.id), self.mesh.health.run(e.id)))
            .collect();
        let now = std::time::Instant::now();
        if !outliers.check(&self.mesh.health, now, clusters) {
            return false;
        }
        let Ok(snap) = mesh_snapshot_with(cfg, Some(&previous), |id| !outliers.is_ejected(id))
        else {
            return false;
        };
        for (id, was, failures) in before {
            let Some(e) = previous.endpoint(id) else { continue };
            let endpoint = format!("{}:{}", e.addr, e.port);
            let cluster = cfg
                .clusters
                .iter()
                .find(|c| c.endpoints.iter().any(|x| x.address == e.addr && x.port == e.port))
                .map_or("?", |c| c.name.as_str());
            match (was, outliers.is_ejected(id)) {
                (false, true) => tracing::warn!(
                    cluster,
                    %endpoint,
                    consecutive_failures = failures,
                    ejected_for_ms = outliers
                        .ejected_until(id)
                        .map_or(0, |t| t.saturating_duration_since(now).as_millis()),
                    ejections = outliers.ejections(id),
                    "endpoint ejected: its connects keep failing"
                ),
                (true, false) => tracing::info!(
                    cluster,
                    %endpoint,
                    "endpoint back from ejection: it takes new flows again"
                ),
                _ => {}
            }
        }
        self.mesh.store(snap);
        true
    }

    /// Stops the workers and waits for them; their final counters are then in `stats`.
    pub fn stop(&self) {
        self.stop.stop();
        let mut threads = self.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for h in threads.drain(..) {
            let _ = h.join();
        }
    }

    /// Starts (or ends) draining: new flows are refused, existing ones carry on.
    pub fn set_draining(&self, on: bool) {
        self.mesh.draining.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether weir drains.
    pub fn draining(&self) -> bool {
        self.mesh.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Flows in the workers' tables, as last published.
    pub fn flows(&self) -> u64 {
        self.stats.iter().map(|w| w.counters.flows.load(std::sync::atomic::Ordering::Relaxed)).sum()
    }

    /// The mesh the workers use.
    pub fn mesh_snapshot(&self) -> Arc<MeshSnapshot> {
        self.mesh.load()
    }

    /// Worker `w`'s counters of each service: its VIP, port, protocol and counters.
    pub fn service_counters(
        &self,
        w: usize,
    ) -> Vec<(std::net::IpAddr, u16, u8, dataplane::mesh::engine::ServiceTotals)> {
        let Some(share) = self.mesh.workers.get(w) else { return Vec::new() };
        let snap = self.mesh.load();
        snap.service_list
            .iter()
            .filter_map(|s| {
                let c = share.services.get(usize::try_from(s.id).ok()?)?;
                Some((s.vip, s.port, s.proto, c.snapshot()))
            })
            .collect()
    }

    /// Every endpoint's passive health that is not blank, for the weir that takes over.
    pub fn carried_health(&self) -> Vec<CarriedHealth> {
        let outliers = self.outliers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let snap = self.mesh.load();
        let health = &self.mesh.health;
        let now = std::time::Instant::now();
        snap.endpoints()
            .map(|e| CarriedHealth {
                address: e.addr,
                port: e.port,
                ejected_ms: outliers.ejected_until(e.id).map(|t| {
                    u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
                }),
                ejections: outliers.ejections(e.id),
                run: health.run(e.id),
                connects: health.totals(e.id),
            })
            .filter(|c| {
                c.ejected_ms.is_some() || c.ejections > 0 || c.run > 0 || c.connects != (0, 0)
            })
            .collect()
    }

    /// Lets the DPDK ports go that the weir taking over cannot open beside this one's
    /// (stopped, closed, their devices removed), for it to open them again; returns how many,
    /// and how long it took. The workers must be paused.
    pub fn let_ports_go(&self) -> Result<(usize, std::time::Duration)> {
        #[cfg(feature = "dpdk")]
        if let Some(p) =
            self.dpdk_ports.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut()
        {
            return p.let_go();
        }
        Ok((0, std::time::Duration::ZERO))
    }

    /// Whether DPDK ports were let go (and not taken back).
    pub fn ports_let_go(&self) -> bool {
        #[cfg(feature = "dpdk")]
        if let Some(p) =
            self.dpdk_ports.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref()
        {
            return p.any_let_go();
        }
        false
    }

    /// The runtime file prefix of this process's EAL, when the configuration sets one.
    pub fn eal_file_prefix(&self) -> Option<String> {
        #[cfg(feature = "dpdk")]
        if let Some(p) =
            self.dpdk_ports.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref()
        {
            return p.file_prefix();
        }
        None
    }

    /// Opens again the DPDK ports let go, under the port ids the workers poll (a takeover
    /// failed). An error means the workers must stay paused: their ports are gone.
    pub fn take_ports_back(&self) -> Result<()> {
        #[cfg(feature = "dpdk")]
        if let Some(p) =
            self.dpdk_ports.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut()
        {
            return p.take_back();
        }
        Ok(())
    }

    /// The interface locks this weir holds, to hand to the one that takes over.
    pub fn claim_fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        self.claims.as_ref().map(crate::claim::InterfaceClaims::fds).unwrap_or_default()
    }

    /// The generation of the mesh the workers use (each reload and ejection makes one).
    pub fn generation(&self) -> u64 {
        self.mesh.load().generation
    }
}
