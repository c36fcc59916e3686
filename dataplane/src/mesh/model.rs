//! The mesh model as the workers see it: an immutable snapshot of services, clusters and
//! endpoints, built on the control thread and swapped whole when the configuration changes.
//!
//! Endpoints carry ids that stay the same across snapshots for as long as an endpoint (its
//! address and port) exists, so per-endpoint state kept outside a snapshot (active flows,
//! health) survives a reload. Ids are below [`MeshCapacity::endpoints`], which sizes that state
//! once at start-up.

use super::maglev::{default_size, MaglevEndpoint, MaglevTable};
use super::schedule::Schedule;
use rustc_hash::{FxHashMap, FxHashSet};
use std::net::IpAddr;
use std::sync::Arc;

/// IP protocol numbers of the services weir balances.
pub mod proto {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// How a service's packets reach the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Destination and source rewritten (the source to weir's address on the way to the
    /// endpoint, with a port weir picks), so replies come back through weir.
    Nat,
    /// Destination rewritten only; weir must be the endpoints' gateway back to the clients.
    Dnat,
    /// Encapsulated to the endpoint, which answers the client directly.
    Dsr(Encap),
}

/// DSR encapsulation.
pub use stack::encap::Encapsulation as Encap;

/// How a cluster picks an endpoint for a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Consistent hashing of the flow (weighted).
    Maglev,
    /// Weighted round-robin.
    RoundRobin,
    /// Weighted random.
    Random,
    /// Fewer active flows, of two weighted random choices.
    LeastRequest,
}

/// What to do with a flow whose endpoint left the cluster or became unhealthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnEndpointGone {
    /// Keep it on its endpoint until it ends.
    Drain,
    /// End it: TCP is reset, UDP dropped.
    Reset,
}

/// An endpoint as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
    /// Relative weight (0: no new flows).
    pub weight: u32,
    /// Configured healthy.
    pub healthy: bool,
    /// Priority, 0 the highest (see [`Balance`]).
    pub priority: u32,
    /// Its group (locality, or cluster of a split): an index into [`Balance::groups`].
    pub group: u32,
}

/// How a cluster shares new flows out beyond endpoint weights: between priorities as they
/// lose health, and between weighted groups of endpoints (localities, or the clusters of a
/// weighted split). With one priority and no groups, an endpoint's share is its weight's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Balance {
    /// A priority (or locality) whose healthy fraction times this percentage reaches 100
    /// counts as fully healthy (Envoy's overprovisioning factor).
    pub overprovisioning_percent: u32,
    /// Group weights; empty: no groups.
    pub groups: Vec<u32>,
    /// Whether a group's share shrinks with its healthy fraction (localities) or holds while
    /// it has any healthy endpoint (a weighted split).
    pub groups_follow_health: bool,
}

impl Default for Balance {
    fn default() -> Self {
        Balance { overprovisioning_percent: 140, groups: Vec::new(), groups_follow_health: true }
    }
}

/// A cluster as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Name services refer to.
    pub name: String,
    /// Pick policy.
    pub policy: Policy,
    /// Maglev table size (a prime); the default when `None`.
    pub maglev_table_size: Option<u32>,
    /// Its endpoints.
    pub endpoints: Vec<EndpointSpec>,
    /// What happens to flows of an endpoint that goes away.
    pub on_endpoint_gone: OnEndpointGone,
    /// Priorities and groups.
    pub balance: Balance,
    /// How long a TCP handshake may take, ns; `None`: the mesh's `syn` timeout.
    pub connect_timeout_ns: Option<u64>,
}

/// A service as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Name, for reports.
    pub name: String,
    /// Virtual address.
    pub vip: IpAddr,
    /// Port.
    pub port: u16,
    /// [`proto::TCP`] or [`proto::UDP`].
    pub proto: u8,
    /// Cluster name.
    pub cluster: String,
    /// Forwarding mode.
    pub mode: Mode,
}

/// Sizes fixed at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeshCapacity {
    /// Services, at most.
    pub services: usize,
    /// Clusters, at most.
    pub clusters: usize,
    /// Distinct endpoints (address and port) over all clusters, at most.
    pub endpoints: usize,
}

impl Default for MeshCapacity {
    fn default() -> Self {
        MeshCapacity { services: 1 << 17, clusters: 1 << 17, endpoints: 1 << 16 }
    }
}

/// A service in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Stable id, below [`MeshCapacity::services`]: the same across snapshots for as long as
    /// the service (its VIP, port and protocol) exists, so per-service counters survive a
    /// reload.
    pub id: u32,
    /// The generation of the snapshot that gave it its id: a worker taking up a snapshot
    /// newer than its last zeroes the counters of services born since (their id may have
    /// been another service's).
    pub born: u64,
    /// Name (shared: a snapshot made from another copies its services).
    pub name: Arc<str>,
    /// Virtual address.
    pub vip: IpAddr,
    /// Port.
    pub port: u16,
    /// Protocol.
    pub proto: u8,
    /// Index of its cluster in the snapshot.
    pub cluster: u32,
    /// Forwarding mode.
    pub mode: Mode,
}

/// An endpoint in a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Stable id (see the module docs).
    pub id: u32,
    /// Address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
    /// Weight.
    pub weight: u32,
}

/// A cluster in a snapshot: its endpoints that take new flows, and the tables to pick one.
#[derive(Debug)]
pub struct Cluster {
    /// Name.
    pub name: String,
    /// Pick policy.
    pub policy: Policy,
    /// Flows of departed endpoints.
    pub on_endpoint_gone: OnEndpointGone,
    /// Handshake timeout of its flows, ns, where the cluster sets one.
    pub connect_timeout_ns: Option<u64>,
    /// Endpoints that take new flows (healthy, weight above 0), in configuration order.
    pub eligible: Vec<Endpoint>,
    /// Ids of every endpoint configured in the cluster (eligible or not).
    members: FxHashSet<u32>,
    /// Ids of its endpoints that are healthy (whatever their weight): flows on any other
    /// endpoint have lost it.
    serving: FxHashSet<u32>,
    /// Address and port of each member, by id.
    identities: FxHashMap<u32, (IpAddr, u16)>,
    maglev: Option<MaglevTable>,
    schedule: Option<Schedule>,
}

impl Cluster {
    /// Whether the endpoint with this id is still a member.
    #[inline]
    pub fn has_member(&self, id: u32) -> bool {
        self.members.contains(&id)
    }

    /// Whether the endpoint with this id is a healthy member: its flows may go on.
    #[inline]
    pub fn is_serving(&self, id: u32) -> bool {
        self.serving.contains(&id)
    }

    /// Whether `addr:port`, with this id, is a healthy member. (An id can only be reused after
    /// the whole id space went round, but a flow remembers its endpoint's address too.)
    pub fn is_serving_at(&self, id: u32, addr: IpAddr, port: u16) -> bool {
        self.serving.contains(&id) && self.eligible_or_serving(id, addr, port)
    }

    fn eligible_or_serving(&self, id: u32, addr: IpAddr, port: u16) -> bool {
        self.identities.get(&id) == Some(&(addr, port))
    }

    /// The ids of every endpoint configured in the cluster.
    pub fn member_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.members.iter().copied()
    }

    /// Whether the endpoint with this id takes new flows.
    pub fn is_eligible(&self, id: u32) -> bool {
        self.eligible.iter().any(|e| e.id == id)
    }

    /// The Maglev table (built for a Maglev cluster with an eligible endpoint).
    #[inline]
    pub fn maglev(&self) -> Option<&MaglevTable> {
        self.maglev.as_ref()
    }

    /// The weighted schedule (built for any other cluster with an eligible endpoint).
    #[inline]
    pub fn schedule(&self) -> Option<&Schedule> {
        self.schedule.as_ref()
    }
}

/// What [`effective_weights`] needs of an endpoint.
#[derive(Clone, Copy, Debug)]
struct ShareInput {
    weight: u32,
    healthy: bool,
    priority: u32,
    group: u32,
}

/// Total of the weights [`effective_weights`] hands out when priorities or groups are in play:
/// shares are exact to a millionth.
const SHARE_SCALE: f64 = 1_000_000.0;

/// Each endpoint's weight for new flows (0: takes none), as Envoy shares load out:
/// - priorities: a priority's health is its healthy fraction of endpoints times the
///   overprovisioning factor, capped at 100%; priority 0 takes its health's share of flows,
///   the next the rest up to its health, and so on; when the healths add up to under 100%
///   they are scaled up to it;
/// - groups, within a priority: each group's weight (times its health, for localities; for a
///   split, whole while any of its endpoints is healthy) shares the priority out, and the
///   endpoints' weights share their group's out.
///
/// With one priority and no groups this is the healthy endpoints' own weights.
fn effective_weights(eps: &[ShareInput], balance: &Balance) -> Vec<u32> {
    let plain = balance.groups.is_empty() && eps.iter().all(|e| e.priority == 0);
    if plain {
        return eps.iter().map(|e| if e.healthy { e.weight } else { 0 }).collect();
    }
    let over = f64::from(balance.overprovisioning_percent) / 100.0;
    let health_of = |healthy: usize, total: usize| {
        if total == 0 {
            0.0
        } else {
            (over * healthy as f64 / total as f64).min(1.0)
        }
    };
    let mut priorities: Vec<u32> = eps.iter().map(|e| e.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let health: Vec<f64> = priorities
        .iter()
        .map(|&p| {
            let total = eps.iter().filter(|e| e.priority == p).count();
            let healthy =
                eps.iter().filter(|e| e.priority == p && e.healthy && e.weight > 0).count();
            health_of(healthy, total)
        })
        .collect();
    let total_health: f64 = health.iter().sum::<f64>().min(1.0);
    let mut out = vec![0u32; eps.len()];
    if total_health <= 0.0 {
        return out;
    }
    let mut remaining = 1.0f64;
    for (pi, &p) in priorities.iter().enumerate() {
        let load = (health[pi] / total_health).min(remaining);
        remaining -= load;
        if load <= 0.0 {
            continue;
        }
        let in_p = |e: &ShareInput| e.priority == p;
        // Group shares within the priority (one implicit group when there are none).
        let groups = balance.groups.len().max(1);
        let mut group_weight = vec![0.0f64; groups];
        let mut group_sum = vec![0u64; groups];
        for g in 0..groups {
            let members = eps.iter().filter(|e| in_p(e) && e.group as usize == g);
            let (mut total, mut healthy) = (0usize, 0usize);
            for e in members {
                total += 1;
                if e.healthy && e.weight > 0 {
                    healthy += 1;
                    group_sum[g] += u64::from(e.weight);
                }
            }
            let weight = balance.groups.get(g).map_or(1.0, |&w| f64::from(w));
            group_weight[g] = if healthy == 0 {
                0.0
            } else if balance.groups_follow_health && !balance.groups.is_empty() {
                weight * health_of(healthy, total)
            } else {
                weight
            };
        }
        let all_groups: f64 = group_weight.iter().sum();
        if all_groups <= 0.0 {
            continue;
        }
        for (i, e) in eps.iter().enumerate() {
            let g = e.group as usize;
            if !in_p(e) || !e.healthy || e.weight == 0 || g >= groups || group_sum[g] == 0 {
                continue;
            }
            let share =
                load * group_weight[g] / all_groups * f64::from(e.weight) / group_sum[g] as f64;
            // At most SHARE_SCALE, and a positive share keeps at least 1.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let w = (share * SHARE_SCALE).round().max(1.0) as u32;
            out[i] = w;
        }
    }
    out
}

/// Key of the service map.
type ServiceKey = (IpAddr, u16, u8);

/// Bits of the address filters: a 64 Ki-bit map per filter, 8 KiB.
const FILTER_BITS: usize = 1 << 16;

/// A set of addresses that answers "certainly not" in one load and bit test.
#[derive(Clone, Debug)]
struct AddrFilter {
    bits: Box<[u64]>,
}

impl AddrFilter {
    fn new() -> Self {
        AddrFilter { bits: vec![0; FILTER_BITS / 64].into_boxed_slice() }
    }

    /// Fibonacci hashing: the top 16 bits of the address times 2^64/phi. One multiply for
    /// IPv4, which every packet to a possible VIP pays.
    #[inline(always)]
    fn bit(a: &IpAddr) -> usize {
        const PHI: u64 = 0x9e37_79b9_7f4a_7c15;
        let x = match a {
            IpAddr::V4(v4) => u64::from(u32::from(*v4)),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                let (hi, lo) = o.split_at(8);
                let word = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
                word(hi).wrapping_mul(PHI) ^ word(lo)
            }
        };
        usize::try_from(x.wrapping_mul(PHI) >> 48).unwrap_or(0) & (FILTER_BITS - 1)
    }

    fn insert(&mut self, a: &IpAddr) {
        let b = Self::bit(a);
        self.bits[b / 64] |= 1 << (b % 64);
    }

    #[inline(always)]
    fn may_contain(&self, a: &IpAddr) -> bool {
        let b = Self::bit(a);
        self.bits[b / 64] & (1 << (b % 64)) != 0
    }
}

/// One immutable mesh configuration.
#[derive(Debug)]
pub struct MeshSnapshot {
    services: FxHashMap<ServiceKey, u32>,
    /// Services, by index.
    pub service_list: Vec<Service>,
    /// Clusters, by index; shared with the snapshot this one was made from where unchanged
    /// (see [`MeshSnapshot::with_clusters`]).
    pub clusters: Vec<Arc<Cluster>>,
    /// Every endpoint, by stable id, with the number of clusters that list it.
    endpoints: FxHashMap<u32, Slot>,
    vips: AddrFilter,
    vip_set: FxHashSet<IpAddr>,
    /// Addresses of endpoints of DNAT services: their replies pass weir as transit traffic.
    dnat_endpoints: AddrFilter,
    /// Counts up with every snapshot built from another.
    pub generation: u64,
    /// Where the search for a free id starts in the next build: ids go round the whole id
    /// space before one is reused, so a draining flow's endpoint id is not soon given to another
    /// endpoint.
    next_id: usize,
    /// The same for service ids.
    next_service_id: usize,
    /// The service ids this snapshot handed out (to services new in it).
    pub born_services: Vec<u32>,
    /// Every endpoint's id, by address and port.
    ids: FxHashMap<(IpAddr, u16), u32>,
}

/// An endpoint in the table of a snapshot.
#[derive(Clone, Copy, Debug)]
struct Slot {
    endpoint: Endpoint,
    /// How many clusters list it.
    holders: u32,
}

/// A configuration the mesh cannot take, with the field it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshError {
    /// Where, e.g. `services[2].cluster`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for MeshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for MeshError {}

fn err(path: impl Into<String>, message: impl Into<String>) -> MeshError {
    MeshError { path: path.into(), message: message.into() }
}

impl MeshSnapshot {
    /// An empty mesh.
    pub fn empty() -> MeshSnapshot {
        MeshSnapshot {
            services: FxHashMap::default(),
            service_list: Vec::new(),
            clusters: Vec::new(),
            endpoints: FxHashMap::default(),
            vips: AddrFilter::new(),
            vip_set: FxHashSet::default(),
            dnat_endpoints: AddrFilter::new(),
            generation: 0,
            next_id: 0,
            next_service_id: 0,
            born_services: Vec::new(),
            ids: FxHashMap::default(),
        }
    }

    /// Builds a snapshot. Endpoints keep the ids they had in `previous`; `health(id)` says
    /// whether an endpoint is currently healthy by passive checks (besides its configured
    /// health).
    pub fn build(
        services: &[ServiceSpec],
        clusters: &[ClusterSpec],
        cap: MeshCapacity,
        previous: Option<&MeshSnapshot>,
        health: impl Fn(u32) -> bool,
    ) -> Result<MeshSnapshot, MeshError> {
        if services.len() > cap.services {
            return Err(err(
                "services",
                format!("{} services, capacity {}", services.len(), cap.services),
            ));
        }
        if clusters.len() > cap.clusters {
            return Err(err(
                "clusters",
                format!("{} clusters, capacity {}", clusters.len(), cap.clusters),
            ));
        }
        // Stable ids: keep the previous snapshot's, give new endpoints the lowest free ones.
        let mut ids: FxHashMap<(IpAddr, u16), u32> = FxHashMap::default();
        if let Some(p) = previous {
            ids.clone_from(&p.ids);
        }
        let mut wanted: FxHashSet<(IpAddr, u16)> = FxHashSet::default();
        for c in clusters {
            for e in &c.endpoints {
                wanted.insert((e.addr, e.port));
            }
        }
        ids.retain(|k, _| wanted.contains(k));
        if wanted.len() > cap.endpoints {
            return Err(err(
                "clusters",
                format!("{} distinct endpoints, capacity {}", wanted.len(), cap.endpoints),
            ));
        }
        // Those kept hold their ids from the start; each is in a cluster again (wanted).
        let mut by_id: FxHashMap<u32, Slot> = FxHashMap::default();
        if let Some(p) = previous {
            for &id in ids.values() {
                if let Some(slot) = p.endpoints.get(&id) {
                    by_id.insert(id, Slot { holders: 0, ..*slot });
                }
            }
        }
        let mut space = IdSpace {
            ids,
            by_id,
            cap: cap.endpoints,
            next_free: previous.map_or(0, |p| p.next_id) % cap.endpoints.max(1),
        };
        let mut cluster_index: FxHashMap<&str, u32> = FxHashMap::default();
        let mut built = Vec::with_capacity(clusters.len());
        for (ci, c) in clusters.iter().enumerate() {
            let path = format!("clusters[{ci}]");
            let idx = u32::try_from(ci).map_err(|_| err(&path, "too many clusters"))?;
            if cluster_index.insert(c.name.as_str(), idx).is_some() {
                return Err(err(format!("{path}.name"), format!("duplicate cluster `{}`", c.name)));
            }
            built.push(Arc::new(build_cluster(c, &path, &mut space, &health)?));
        }
        // Stable service ids, as for endpoints.
        let generation = previous.map_or(1, |p| p.generation + 1);
        let mut service_ids: FxHashMap<ServiceKey, (u32, u64)> = FxHashMap::default();
        if let Some(p) = previous {
            for s in &p.service_list {
                service_ids.insert((s.vip, s.port, s.proto), (s.id, s.born));
            }
        }
        let wanted: FxHashSet<ServiceKey> =
            services.iter().map(|s| (s.vip, s.port, s.proto)).collect();
        service_ids.retain(|k, _| wanted.contains(k));
        let mut service_used = vec![false; cap.services];
        for &(id, _) in service_ids.values() {
            if let Some(u) = service_used.get_mut(usize::try_from(id).unwrap_or(usize::MAX)) {
                *u = true;
            }
        }
        let mut next_service = previous.map_or(0, |p| p.next_service_id) % cap.services.max(1);
        let mut born = Vec::new();
        let mut map = FxHashMap::default();
        let mut list = Vec::with_capacity(services.len());
        let mut vips = AddrFilter::new();
        let mut vip_set = FxHashSet::default();
        let mut dnat_endpoints = AddrFilter::new();
        for (si, s) in services.iter().enumerate() {
            let path = format!("services[{si}]");
            let Some(&cluster) = cluster_index.get(s.cluster.as_str()) else {
                return Err(err(
                    format!("{path}.cluster"),
                    format!("no cluster named `{}`", s.cluster),
                ));
            };
            if s.proto != proto::TCP && s.proto != proto::UDP {
                return Err(err(format!("{path}.protocol"), "tcp or udp"));
            }
            let c = &clusters[usize::try_from(cluster).unwrap_or(0)];
            check_families(&path, s.vip, s.mode, c.endpoints.iter().map(|e| e.addr))?;
            let idx = u32::try_from(si).map_err(|_| err(&path, "too many services"))?;
            if map.insert((s.vip, s.port, s.proto), idx).is_some() {
                return Err(err(
                    &path,
                    format!("{}:{} {} is defined twice", s.vip, s.port, proto_name(s.proto)),
                ));
            }
            vips.insert(&s.vip);
            vip_set.insert(s.vip);
            if s.mode == Mode::Dnat {
                for e in &c.endpoints {
                    dnat_endpoints.insert(&e.addr);
                }
            }
            let (id, born) = match service_ids.get(&(s.vip, s.port, s.proto)) {
                Some(&kept) => kept,
                None => {
                    // A free id exists: at most cap.services services (checked), each key
                    // once (checked above).
                    let mut tries = 0usize;
                    while service_used[next_service] {
                        next_service = (next_service + 1) % cap.services;
                        tries += 1;
                        if tries > cap.services {
                            return Err(err(&path, "service ids exhausted"));
                        }
                    }
                    service_used[next_service] = true;
                    let id = u32::try_from(next_service)
                        .map_err(|_| err(&path, "service ids exhausted"))?;
                    // The search goes on past it: a service removed next time does not give
                    // its id straight to the next new one.
                    next_service = (next_service + 1) % cap.services;
                    born.push(id);
                    (id, generation)
                }
            };
            list.push(Service {
                id,
                born,
                name: Arc::from(s.name.as_str()),
                vip: s.vip,
                port: s.port,
                proto: s.proto,
                cluster,
                mode: s.mode,
            });
        }
        Ok(MeshSnapshot {
            services: map,
            service_list: list,
            clusters: built,
            endpoints: space.by_id,
            vips,
            vip_set,
            dnat_endpoints,
            generation,
            next_id: space.next_free,
            next_service_id: next_service,
            born_services: born,
            ids: space.ids,
        })
    }

    /// This snapshot with the clusters at these indices built again from their specs (the
    /// same names; services unchanged): every other cluster is shared with it, so what an
    /// endpoint update costs follows what it changes, not the size of the mesh. Endpoint ids
    /// carry over as in [`MeshSnapshot::build`]; the services on a changed cluster are checked
    /// again.
    pub fn with_clusters(
        &self,
        changed: &[(u32, ClusterSpec)],
        cap: MeshCapacity,
        health: impl Fn(u32) -> bool,
    ) -> Result<MeshSnapshot, MeshError> {
        // Ids of endpoints about to leave stay taken until the end: not handed out again at
        // once.
        let mut space = IdSpace {
            ids: self.ids.clone(),
            by_id: self.endpoints.clone(),
            cap: cap.endpoints,
            next_free: self.next_id % cap.endpoints.max(1),
        };
        let mut clusters = self.clusters.clone();
        let mut touched: FxHashSet<u32> = FxHashSet::default();
        let mut leaving: Vec<((IpAddr, u16), u32)> = Vec::new();
        for (i, spec) in changed {
            let path = format!("clusters[{i}]");
            let Some(old) = usize::try_from(*i).ok().and_then(|i| self.clusters.get(i)) else {
                return Err(err(path, "no such cluster"));
            };
            if old.name != spec.name {
                return Err(err(format!("{path}.name"), format!("is `{}`", old.name)));
            }
            if !touched.insert(*i) {
                return Err(err(path, "changed twice"));
            }
            for (&id, &identity) in &old.identities {
                if let Some(slot) = space.by_id.get_mut(&id) {
                    slot.holders = slot.holders.saturating_sub(1);
                }
                leaving.push((identity, id));
            }
        }
        // Endpoints no cluster lists any more give their ids up before new ones are handed out
        // (as a whole build does), so that an update near capacity fits as it would there.
        let staying: FxHashSet<(IpAddr, u16)> = changed
            .iter()
            .flat_map(|(_, c)| c.endpoints.iter().map(|e| (e.addr, e.port)))
            .collect();
        for (identity, id) in &leaving {
            if !staying.contains(identity) && space.by_id.get(id).is_some_and(|s| s.holders == 0) {
                space.ids.remove(identity);
                space.by_id.remove(id);
            }
        }
        for (i, spec) in changed {
            let path = format!("clusters[{i}]");
            let c = build_cluster(spec, &path, &mut space, &health)?;
            clusters[usize::try_from(*i).unwrap_or(0)] = Arc::new(c);
        }
        for (identity, id) in leaving {
            if space.by_id.get(&id).is_some_and(|s| s.holders == 0) {
                space.ids.remove(&identity);
                space.by_id.remove(&id);
            }
        }
        let mut dnat_touched = false;
        for (si, s) in self.service_list.iter().enumerate() {
            if !touched.contains(&s.cluster) {
                continue;
            }
            let c = &clusters[usize::try_from(s.cluster).unwrap_or(0)];
            let addrs = c.identities.values().map(|&(a, _)| a);
            check_families(&format!("services[{si}]"), s.vip, s.mode, addrs)?;
            dnat_touched |= s.mode == Mode::Dnat;
        }
        // Built again from every DNAT service's endpoints (a cost that follows those alone):
        // addresses that left must not linger and send transit traffic the slow way.
        let dnat_endpoints = if dnat_touched {
            let mut f = AddrFilter::new();
            for s in self.service_list.iter().filter(|s| s.mode == Mode::Dnat) {
                if let Some(c) = clusters.get(usize::try_from(s.cluster).unwrap_or(usize::MAX)) {
                    c.identities.values().for_each(|(a, _)| f.insert(a));
                }
            }
            f
        } else {
            self.dnat_endpoints.clone()
        };
        Ok(MeshSnapshot {
            services: self.services.clone(),
            service_list: self.service_list.clone(),
            clusters,
            endpoints: space.by_id,
            vips: self.vips.clone(),
            vip_set: self.vip_set.clone(),
            dnat_endpoints,
            generation: self.generation + 1,
            next_id: space.next_free,
            next_service_id: self.next_service_id,
            born_services: Vec::new(),
            ids: space.ids,
        })
    }

    /// Whether a packet from `src` to `dst` may concern the mesh: to a VIP, or from an
    /// endpoint of a DNAT service. `false` is certain; `true` means look further.
    #[inline(always)]
    pub fn may_concern(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        !self.service_list.is_empty()
            && (self.vips.may_contain(dst) || self.dnat_endpoints.may_contain(src))
    }

    /// Whether an address is a VIP (of any port and protocol).
    #[inline]
    pub fn is_vip(&self, a: &IpAddr) -> bool {
        self.vips.may_contain(a) && self.vip_set.contains(a)
    }

    /// The service at a VIP, port and protocol.
    #[inline]
    pub fn service(&self, vip: IpAddr, port: u16, proto: u8) -> Option<(u32, &Service)> {
        let &i = self.services.get(&(vip, port, proto))?;
        Some((i, self.service_list.get(usize::try_from(i).ok()?)?))
    }

    /// The endpoint with a stable id, if it is in this snapshot.
    #[inline]
    pub fn endpoint(&self, id: u32) -> Option<&Endpoint> {
        self.endpoints.get(&id).map(|s| &s.endpoint)
    }

    /// The stable id of the endpoint at this address and port, if it is in this snapshot.
    pub fn endpoint_id(&self, addr: IpAddr, port: u16) -> Option<u32> {
        self.ids.get(&(addr, port)).copied()
    }

    /// The cluster at an index.
    #[inline]
    pub fn cluster(&self, i: u32) -> Option<&Cluster> {
        self.clusters.get(usize::try_from(i).ok()?).map(|c| &**c)
    }

    /// How many clusters list the endpoint with this id.
    pub fn holders(&self, id: u32) -> u32 {
        self.endpoints.get(&id).map_or(0, |s| s.holders)
    }

    /// How many endpoints the snapshot has.
    pub fn endpoint_count(&self) -> usize {
        self.ids.len()
    }

    /// Every endpoint in the snapshot, in no particular order.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values().map(|s| &s.endpoint)
    }

    /// Every endpoint in the snapshot, by id (for reports).
    pub fn endpoints_by_id(&self) -> Vec<&Endpoint> {
        let mut all: Vec<&Endpoint> = self.endpoints().collect();
        all.sort_unstable_by_key(|e| e.id);
        all
    }
}

/// Endpoint ids as a build hands them out: kept for endpoints that stay, the lowest free one
/// from where the last search ended for new ones, so ids go round the whole id space before
/// one is reused (a draining flow's endpoint id is not soon another endpoint's).
struct IdSpace {
    ids: FxHashMap<(IpAddr, u16), u32>,
    /// The endpoints by id; an id here is taken.
    by_id: FxHashMap<u32, Slot>,
    /// Ids are below this.
    cap: usize,
    next_free: usize,
}

impl IdSpace {
    /// The endpoint's id (new ones get theirs), counted as listed once more.
    fn take(&mut self, e: Endpoint, path: &str) -> Result<u32, MeshError> {
        let id = match self.ids.get(&(e.addr, e.port)) {
            Some(&id) => id,
            None => {
                let exhausted = || err(path, "endpoint ids exhausted");
                let mut tries = 0usize;
                loop {
                    let id = u32::try_from(self.next_free).map_err(|_| exhausted())?;
                    if tries >= self.cap {
                        return Err(exhausted());
                    }
                    tries += 1;
                    // On past it whether taken or not, as for services.
                    self.next_free = (self.next_free + 1) % self.cap;
                    if !self.by_id.contains_key(&id) {
                        break id;
                    }
                }
            }
        };
        self.ids.insert((e.addr, e.port), id);
        let slot = self.by_id.entry(id).or_insert(Slot { endpoint: e, holders: 0 });
        slot.endpoint = Endpoint { id, ..e };
        slot.holders += 1;
        Ok(id)
    }
}

/// A cluster from its spec: ids for its endpoints (entered in `endpoints`), who takes new
/// flows, and the table to pick them from.
fn build_cluster(
    c: &ClusterSpec,
    path: &str,
    space: &mut IdSpace,
    health: impl Fn(u32) -> bool,
) -> Result<Cluster, MeshError> {
    let mut members = FxHashSet::default();
    let mut serving = FxHashSet::default();
    let mut identities = FxHashMap::default();
    let mut eligible = Vec::new();
    let mut shares: Vec<ShareInput> = Vec::with_capacity(c.endpoints.len());
    let mut ids_in_order: Vec<u32> = Vec::with_capacity(c.endpoints.len());
    if let Some(ei) = c.endpoints.iter().position(|e| {
        !c.balance.groups.is_empty()
            && usize::try_from(e.group).map_or(true, |g| g >= c.balance.groups.len())
    }) {
        return Err(err(format!("{path}.endpoints[{ei}]"), "its group is not listed"));
    }
    for (ei, e) in c.endpoints.iter().enumerate() {
        let id =
            space.take(Endpoint { id: 0, addr: e.addr, port: e.port, weight: e.weight }, path)?;
        if identities.insert(id, (e.addr, e.port)).is_some() {
            return Err(err(
                format!("{path}.endpoints[{ei}]"),
                format!("{}:{} is listed twice", e.addr, e.port),
            ));
        }
        members.insert(id);
        let healthy = e.healthy && health(id);
        if healthy {
            serving.insert(id);
        }
        shares.push(ShareInput { weight: e.weight, healthy, priority: e.priority, group: e.group });
        ids_in_order.push(id);
    }
    for ((e, &id), w) in
        c.endpoints.iter().zip(&ids_in_order).zip(effective_weights(&shares, &c.balance))
    {
        if w > 0 {
            eligible.push(Endpoint { id, addr: e.addr, port: e.port, weight: w });
        }
    }
    // Only the table the policy picks from: a Maglev table is a thousand slots or more, and a
    // control plane's mesh may have tens of thousands of clusters.
    let mut maglev = None;
    let mut schedule = None;
    if !eligible.is_empty() && c.policy == Policy::Maglev {
        let maglev_ids: Vec<Vec<u8>> = eligible.iter().map(identity).collect();
        let eps: Vec<MaglevEndpoint> = maglev_ids
            .iter()
            .zip(&eligible)
            .map(|(id, e)| MaglevEndpoint { identity: id, weight: e.weight })
            .collect();
        let size = c.maglev_table_size.unwrap_or_else(|| default_size(eligible.len()));
        maglev = Some(
            MaglevTable::build(&eps, size)
                .map_err(|e| err(format!("{path}.maglev_table_size"), e.to_string()))?,
        );
    } else if !eligible.is_empty() {
        let weights: Vec<u32> = eligible.iter().map(|e| e.weight).collect();
        schedule = Schedule::build(&weights);
    }
    Ok(Cluster {
        name: c.name.clone(),
        policy: c.policy,
        on_endpoint_gone: c.on_endpoint_gone,
        connect_timeout_ns: c.connect_timeout_ns,
        eligible,
        members,
        serving,
        identities,
        maglev,
        schedule,
    })
}

/// Refuses a service whose endpoints are of another family than its VIP, unless DSR.
fn check_families(
    path: &str,
    vip: IpAddr,
    mode: Mode,
    mut addrs: impl Iterator<Item = IpAddr>,
) -> Result<(), MeshError> {
    if matches!(mode, Mode::Dsr(_)) {
        return Ok(());
    }
    match addrs.find(|a| a.is_ipv4() != vip.is_ipv4()) {
        Some(a) => Err(err(
            format!("{path}.vip"),
            format!("{vip} and endpoint {a} are of different families (only DSR mixes them)"),
        )),
        None => Ok(()),
    }
}

/// The bytes Maglev derives an endpoint's permutation from: its address and port.
fn identity(e: &Endpoint) -> Vec<u8> {
    let mut v = match e.addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    v.extend_from_slice(&e.port.to_be_bytes());
    v
}

/// `tcp` or `udp`.
pub fn proto_name(p: u8) -> &'static str {
    match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: u8, weight: u32) -> EndpointSpec {
        EndpointSpec {
            addr: IpAddr::from([198, 18, 2, last]),
            port: 80,
            weight,
            healthy: true,
            priority: 0,
            group: 0,
        }
    }

    fn share(weight: u32, healthy: bool, priority: u32, group: u32) -> ShareInput {
        ShareInput { weight, healthy, priority, group }
    }

    #[test]
    fn one_priority_without_groups_keeps_the_weights() {
        let eps = [share(3, true, 0, 0), share(0, true, 0, 0), share(5, false, 0, 0)];
        assert_eq!(effective_weights(&eps, &Balance::default()), vec![3, 0, 0]);
    }

    #[test]
    fn a_priority_hands_over_as_it_loses_health() {
        // Four endpoints at priority 0, two at 1; overprovisioning 1.4.
        let mut eps: Vec<ShareInput> = (0..4).map(|_| share(1, true, 0, 0)).collect();
        eps.extend((0..2).map(|_| share(1, true, 1, 0)));
        let p1 = |w: &[u32]| w[4] + w[5];
        let all = effective_weights(&eps, &Balance::default());
        assert_eq!(p1(&all), 0, "priority 0 healthy: priority 1 idle");
        eps[0].healthy = false; // 3/4 × 1.4 = 105%: still all on priority 0
        assert_eq!(p1(&effective_weights(&eps, &Balance::default())), 0);
        eps[1].healthy = false; // 2/4 × 1.4 = 70%: 30% spills over
        let w = effective_weights(&eps, &Balance::default());
        let total: u32 = w.iter().sum();
        assert_eq!(total, 1_000_000);
        assert_eq!(p1(&w), 300_000, "{w:?}");
        for e in &mut eps[..4] {
            e.healthy = false;
        }
        let w = effective_weights(&eps, &Balance::default());
        assert_eq!(p1(&w), 1_000_000, "priority 0 gone: all on priority 1");
    }

    #[test]
    fn healths_under_100_percent_are_scaled_up() {
        // Priority 0: 1 of 10 healthy (14%); priority 1: 1 of 10 (14%): half each.
        let mut eps: Vec<ShareInput> = (0..10).map(|i| share(1, i == 0, 0, 0)).collect();
        eps.extend((0..10).map(|i| share(1, i == 0, 1, 0)));
        let w = effective_weights(&eps, &Balance::default());
        assert_eq!((w[0], w[10]), (500_000, 500_000));
    }

    #[test]
    fn localities_share_by_weight_and_health() {
        // Locality 0 (weight 3): two endpoints; locality 1 (weight 1): two.
        let eps = [
            share(1, true, 0, 0),
            share(1, true, 0, 0),
            share(1, true, 0, 1),
            share(1, true, 0, 1),
        ];
        let b = Balance { groups: vec![3, 1], ..Balance::default() };
        assert_eq!(effective_weights(&eps, &b), vec![375_000, 375_000, 125_000, 125_000]);
        // Half of locality 0 down: its weight × 0.7 (1/2 × 1.4) = 2.1 against 1.
        let mut down = eps;
        down[0].healthy = false;
        let w = effective_weights(&down, &b);
        assert_eq!(w[0], 0);
        assert_eq!(w[1], 677_419, "2.1 / 3.1 of a million");
    }

    #[test]
    fn a_split_holds_its_weights_while_a_cluster_has_any_health() {
        let eps = [
            share(1, true, 0, 0),
            share(1, false, 0, 0),
            share(2, true, 0, 1),
            share(2, true, 0, 1),
        ];
        let b = Balance { groups: vec![90, 10], groups_follow_health: false, ..Balance::default() };
        assert_eq!(effective_weights(&eps, &b), vec![900_000, 0, 50_000, 50_000]);
        let mut none = eps;
        none[0].healthy = false;
        assert_eq!(effective_weights(&none, &b), vec![0, 0, 500_000, 500_000]);
    }

    fn cluster(name: &str, eps: Vec<EndpointSpec>) -> ClusterSpec {
        ClusterSpec {
            name: name.into(),
            policy: Policy::Maglev,
            maglev_table_size: None,
            endpoints: eps,
            on_endpoint_gone: OnEndpointGone::Drain,
            balance: Balance::default(),
            connect_timeout_ns: None,
        }
    }

    fn service(vip_last: u8, cluster: &str, mode: Mode) -> ServiceSpec {
        ServiceSpec {
            name: format!("s{vip_last}"),
            vip: IpAddr::from([198, 19, 0, vip_last]),
            port: 80,
            proto: proto::TCP,
            cluster: cluster.into(),
            mode,
        }
    }

    #[test]
    fn services_are_found_by_vip_port_and_protocol() {
        let s = MeshSnapshot::build(
            &[service(1, "web", Mode::Nat), service(2, "web", Mode::Dnat)],
            &[cluster("web", vec![ep(10, 1), ep(11, 1), ep(12, 0)])],
            MeshCapacity::default(),
            None,
            |_| true,
        )
        .unwrap();
        let vip = IpAddr::from([198, 19, 0, 1]);
        let (_, svc) = s.service(vip, 80, proto::TCP).unwrap();
        assert_eq!(svc.mode, Mode::Nat);
        assert!(s.service(vip, 81, proto::TCP).is_none());
        assert!(s.service(vip, 80, proto::UDP).is_none());
        let c = s.cluster(svc.cluster).unwrap();
        assert_eq!(c.eligible.len(), 2, "weight 0 takes no new flows");
        assert!(c.has_member(c.eligible[0].id));
        // The filters: VIPs as destinations, DNAT endpoints as sources.
        let client = IpAddr::from([198, 18, 1, 2]);
        assert!(s.may_concern(&client, &vip));
        assert!(s.may_concern(&IpAddr::from([198, 18, 2, 10]), &client));
    }

    #[test]
    fn service_ids_survive_a_rebuild_and_go_round_before_reuse() {
        let cap = MeshCapacity { services: 3, ..MeshCapacity::default() };
        let c = [cluster("web", vec![ep(10, 1)])];
        let ids = |s: &MeshSnapshot| -> Vec<(u8, u32, u64)> {
            s.service_list
                .iter()
                .map(|x| match x.vip {
                    IpAddr::V4(v) => (v.octets()[3], x.id, x.born),
                    IpAddr::V6(_) => unreachable!(),
                })
                .collect()
        };
        let svc = |n| service(n, "web", Mode::Nat);
        let a = MeshSnapshot::build(&[svc(1), svc(2)], &c, cap, None, |_| true).unwrap();
        assert_eq!(ids(&a), [(1, 0, 1), (2, 1, 1)]);
        // s1 goes, s3 comes: s2 keeps its id and birth, s3 takes the next id, not s1's.
        let b = MeshSnapshot::build(&[svc(2), svc(3)], &c, cap, Some(&a), |_| true).unwrap();
        assert_eq!(ids(&b), [(2, 1, 1), (3, 2, 2)]);
        assert_eq!(b.born_services, [2]);
        // s3, the last given an id, goes and s4 comes: s4 does not get s3's id straight away
        // but the next free one on (s1's old 0); 2 comes round only after that.
        let d = MeshSnapshot::build(&[svc(2), svc(4)], &c, cap, Some(&b), |_| true).unwrap();
        assert_eq!(ids(&d), [(2, 1, 1), (4, 0, 3)]);
        let e =
            MeshSnapshot::build(&[svc(2), svc(4), svc(5)], &c, cap, Some(&d), |_| true).unwrap();
        assert_eq!(ids(&e), [(2, 1, 1), (4, 0, 3), (5, 2, 4)]);
        assert_eq!(e.born_services, [2]);
        assert!(MeshSnapshot::build(&[svc(1), svc(2), svc(3), svc(4)], &c, cap, Some(&e), |_| {
            true
        })
        .is_err());
    }

    #[test]
    fn endpoint_ids_survive_a_rebuild() {
        let cap = MeshCapacity::default();
        let a = MeshSnapshot::build(
            &[],
            &[cluster("c", vec![ep(10, 1), ep(11, 1)])],
            cap,
            None,
            |_| true,
        )
        .unwrap();
        let id11 = a.endpoints().find(|e| e.addr == ep(11, 1).addr).unwrap().id;
        let b = MeshSnapshot::build(
            &[],
            &[cluster("c", vec![ep(11, 1), ep(12, 1)])],
            cap,
            Some(&a),
            |_| true,
        )
        .unwrap();
        assert_eq!(b.endpoints().find(|e| e.addr == ep(11, 1).addr).unwrap().id, id11);
        let id12 = b.endpoints().find(|e| e.addr == ep(12, 1).addr).unwrap().id;
        assert_ne!(id12, id11);
        assert_eq!(b.generation, a.generation + 1);
    }

    #[test]
    fn unhealthy_endpoints_take_no_new_flows() {
        let mut eps = vec![ep(10, 1), ep(11, 1)];
        eps[0].healthy = false;
        let s =
            MeshSnapshot::build(&[], &[cluster("c", eps)], MeshCapacity::default(), None, |_| true)
                .unwrap();
        assert_eq!(s.clusters[0].eligible.len(), 1);
        let s = MeshSnapshot::build(
            &[],
            &[cluster("c", vec![ep(10, 1)])],
            MeshCapacity::default(),
            None,
            |_| false,
        )
        .unwrap();
        assert!(s.clusters[0].eligible.is_empty());
        assert!(s.clusters[0].maglev().is_none());
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let cap = MeshCapacity::default();
        let e = MeshSnapshot::build(&[service(1, "nope", Mode::Nat)], &[], cap, None, |_| true)
            .unwrap_err();
        assert_eq!(e.path, "services[0].cluster");
        let e = MeshSnapshot::build(
            &[service(1, "c", Mode::Nat), service(1, "c", Mode::Dnat)],
            &[cluster("c", vec![ep(10, 1)])],
            cap,
            None,
            |_| true,
        )
        .unwrap_err();
        assert_eq!(e.path, "services[1]");
        let e = MeshSnapshot::build(
            &[],
            &[cluster("c", vec![ep(10, 1), ep(10, 1)])],
            cap,
            None,
            |_| true,
        )
        .unwrap_err();
        assert_eq!(e.path, "clusters[0].endpoints[1]");
        let mut v6 = ep(10, 1);
        v6.addr = "2001:db8:2::10".parse().unwrap();
        let e = MeshSnapshot::build(
            &[service(1, "c", Mode::Nat)],
            &[cluster("c", vec![v6])],
            cap,
            None,
            |_| true,
        )
        .unwrap_err();
        assert_eq!(e.path, "services[0].vip");
        let small = MeshCapacity { endpoints: 1, ..cap };
        assert!(MeshSnapshot::build(
            &[],
            &[cluster("c", vec![ep(10, 1), ep(11, 1)])],
            small,
            None,
            |_| true
        )
        .is_err());
    }

    /// What a worker sees of a snapshot: each cluster's eligible endpoints (id, address,
    /// weight), members and the endpoint table.
    fn view(s: &MeshSnapshot) -> Vec<(String, Vec<Endpoint>, Vec<u32>)> {
        s.clusters
            .iter()
            .map(|c| {
                let mut m: Vec<u32> = c.member_ids().collect();
                m.sort_unstable();
                (c.name.clone(), c.eligible.clone(), m)
            })
            .collect()
    }

    #[test]
    fn changing_some_clusters_in_place_is_a_whole_build_that_shares_the_rest() {
        let cap = MeshCapacity { services: 16, clusters: 16, endpoints: 16 };
        let services = [service(1, "a", Mode::Nat), service(2, "b", Mode::Dnat)];
        let mut clusters = vec![
            cluster("a", vec![ep(10, 1), ep(11, 2)]),
            cluster("b", vec![ep(11, 1), ep(12, 1)]),
            cluster("c", vec![ep(13, 1)]),
        ];
        let first = MeshSnapshot::build(&services, &clusters, cap, None, |_| true).unwrap();
        // `a` loses .10 and reweights .11 (which `b` keeps); `b` gains .14.
        clusters[0].endpoints = vec![ep(11, 5)];
        clusters[1].endpoints.push(ep(14, 1));
        let changed = [(0, clusters[0].clone()), (1, clusters[1].clone())];
        let patched = first.with_clusters(&changed, cap, |_| true).unwrap();
        let whole = MeshSnapshot::build(&services, &clusters, cap, Some(&first), |_| true).unwrap();
        assert_eq!(view(&patched), view(&whole));
        let table = |s: &MeshSnapshot| {
            let mut e: Vec<(u32, IpAddr)> = s.endpoints().map(|e| (e.id, e.addr)).collect();
            e.sort_unstable();
            e
        };
        assert_eq!(table(&patched), table(&whole));
        assert!(patched.endpoint(first.ids[&(ep(10, 1).addr, 80)]).is_none(), "gone with `a`");
        assert!(Arc::ptr_eq(&first.clusters[2], &patched.clusters[2]), "`c` is shared");
        assert_eq!(patched.generation, first.generation + 1);
        // The DNAT service's new endpoint is known as one.
        assert!(patched.may_concern(&ep(14, 1).addr, &IpAddr::from([198, 18, 9, 9])));
        // A new endpoint takes an id not just given up.
        let mut again = clusters.clone();
        again[2].endpoints.push(ep(15, 1));
        let next = patched.with_clusters(&[(2, again[2].clone())], cap, |_| true).unwrap();
        let gone = first.ids[&(ep(10, 1).addr, 80)];
        assert_ne!(next.ids[&(ep(15, 1).addr, 80)], gone);
        // Refused: a family mix on a NAT service, a rename, an index out of range.
        let mut v6 = ep(10, 1);
        v6.addr = "2001:db8:2::10".parse().unwrap();
        let e = next.with_clusters(&[(0, cluster("a", vec![v6]))], cap, |_| true).unwrap_err();
        assert_eq!(e.path, "services[0].vip");
        let e = next.with_clusters(&[(0, cluster("z", vec![]))], cap, |_| true).unwrap_err();
        assert_eq!(e.path, "clusters[0].name");
        assert!(next.with_clusters(&[(7, cluster("a", vec![]))], cap, |_| true).is_err());
        // Near capacity, an endpoint replaced by another fits as in a whole build.
        let tight = MeshCapacity { endpoints: 4, ..cap };
        let two =
            [cluster("a", vec![ep(10, 1), ep(11, 1)]), cluster("b", vec![ep(12, 1), ep(13, 1)])];
        let full = MeshSnapshot::build(&services, &two, tight, None, |_| true).unwrap();
        let swapped = cluster("a", vec![ep(10, 1), ep(14, 1)]);
        let s = full.with_clusters(&[(0, swapped)], tight, |_| true).unwrap();
        assert_eq!(s.endpoint_count(), 4);
        assert_eq!(
            s.endpoints().find(|e| e.addr == ep(10, 1).addr).map(|e| e.id),
            full.ids.get(&(ep(10, 1).addr, 80)).copied(),
            "a staying endpoint keeps its id"
        );
        // An address that left a DNAT service's cluster is no longer taken for one.
        assert!(full.may_concern(&ep(12, 1).addr, &IpAddr::from([198, 18, 9, 9])));
        let s = full.with_clusters(&[(1, cluster("b", vec![ep(13, 1)]))], tight, |_| true).unwrap();
        assert!(
            !s.dnat_endpoints.may_contain(&ep(12, 1).addr)
                || AddrFilter::bit(&ep(12, 1).addr) == AddrFilter::bit(&ep(13, 1).addr)
        );
        // Out of ids.
        let many: Vec<EndpointSpec> = (20..40).map(|i| ep(i, 1)).collect();
        assert!(next.with_clusters(&[(2, cluster("c", many))], cap, |_| true).is_err());
    }
}
