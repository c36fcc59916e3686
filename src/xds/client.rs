//! The ADS client: one gRPC stream to the management server carrying listeners (LDS), clusters
//! (CDS) and their endpoints (EDS), in the state-of-the-world or the incremental (delta)
//! protocol, on the control thread's runtime.
//!
//! Every response is taken whole or not at all: each resource is translated
//! ([`super::resources`]), the result put together with what is held and the file's own
//! services and clusters, validated as a configuration and built into a mesh snapshot; any
//! refusal on the way NACKs the response (naming the resource and field) and the running
//! configuration stays. An accepted one is in force at each worker's next poll, as a reload
//! is; workers never wait for the client. An EDS cluster waits for its endpoints up to its
//! initial fetch timeout; a listener waits for its clusters. When the stream breaks, the last
//! accepted configuration keeps serving while the client connects again, backing off with
//! jitter, and resumes from the versions it holds.

use super::audit::Refusal;
use super::resources::{self, XdsAssignment, CLUSTER, LISTENER, LOAD_ASSIGNMENT};
use super::{Assembled, Resources, Waiting};
use crate::config::{ClusterConfig, ServiceConfig, XdsConfig, XdsProtocol, XdsServer};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DeltaDiscoveryRequest,
    DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Any, Struct, Value};
use envoy_types::pb::google::rpc::Status;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The resource types weir subscribes to, in the order it asks for them.
pub const TYPES: [&str; 3] = [CLUSTER, LISTENER, LOAD_ASSIGNMENT];

/// gRPC's INVALID_ARGUMENT, the code of a NACK's error detail.
const INVALID_ARGUMENT: i32 = 3;

/// Refusals named in one NACK, at most (the count says how many more).
const NACK_REFUSALS: usize = 16;

/// Most clusters an endpoint update changes for it to be applied in place (cluster by
/// cluster); beyond, the whole configuration is put together again, which costs about the same.
const MOST_IN_PLACE: usize = 64;

/// Puts the services and clusters from xDS in force beside the file's own.
pub trait Apply: Send + Sync {
    /// Validates and applies them: the summary for the log, or why not (the NACK's reason).
    fn apply(
        &self,
        services: Vec<ServiceConfig>,
        clusters: Vec<ClusterConfig>,
    ) -> anyhow::Result<String>;

    /// Applies new forms of clusters in force (the same names; their endpoints changed),
    /// everything else as it is: only they are built again.
    fn apply_clusters(&self, clusters: Vec<ClusterConfig>) -> anyhow::Result<String>;
}

/// What the client shows: `/config_dump` and the metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct XdsStatus {
    /// The management server.
    pub server: String,
    /// `delta` or `sotw`.
    pub protocol: String,
    /// Whether a stream is open.
    pub connected: bool,
    /// Streams opened so far.
    pub streams: u64,
    /// Per resource type (short names: `listeners`, `clusters`, `load_assignments`).
    pub types: BTreeMap<String, TypeStatus>,
    /// Resources held back and what for.
    pub waiting: Vec<WaitingStatus>,
    /// Responses accepted.
    pub updates_accepted: u64,
    /// Responses refused (NACKed).
    pub updates_rejected: u64,
    /// From a response's receipt to its configuration in force, the last one, µs.
    pub last_apply_us: u64,
    /// The same, added over every accepted response, µs.
    pub apply_us_total: u64,
    /// Why the last stream ended or could not open, if one did.
    pub last_stream_error: Option<String>,
}

/// One resource type's state.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TypeStatus {
    /// Version accepted last (state of the world: the response's; delta: the server's system
    /// version).
    pub version: String,
    /// Nonce of the last response.
    pub nonce: String,
    /// Resources held, with their versions (delta) or the response's (state of the world).
    pub resources: BTreeMap<String, String>,
    /// Responses accepted and refused.
    pub accepted: u64,
    /// Responses refused.
    pub rejected: u64,
    /// The last refusal.
    pub last_nack: Option<Nack>,
}

/// A refused response.
#[derive(Clone, Debug, Serialize)]
pub struct Nack {
    /// Its version (state of the world) or the server's system version (delta).
    pub version: String,
    /// Its nonce.
    pub nonce: String,
    /// Why: the resources and fields refused.
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub at_unix_ms: u64,
}

/// A resource held back.
#[derive(Clone, Debug, Serialize)]
pub struct WaitingStatus {
    /// `listener` or `cluster`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// What for.
    pub reason: String,
}

/// Short name of a type URL, for reports.
pub fn short_name(type_url: &str) -> &'static str {
    match type_url {
        LISTENER => "listeners",
        CLUSTER => "clusters",
        LOAD_ASSIGNMENT => "load_assignments",
        _ => "other",
    }
}

/// A request for the stream, of the protocol in use.
#[derive(Clone, Debug, PartialEq)]
pub enum Outgoing {
    /// State of the world.
    Sotw(DiscoveryRequest),
    /// Incremental.
    Delta(DeltaDiscoveryRequest),
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
struct TypeState {
    /// Version accepted last.
    version: String,
    /// Nonce of the last response.
    nonce: String,
    /// Per resource: its version.
    versions: BTreeMap<String, String>,
    /// EDS: the names asked for (as last sent).
    subscribed: BTreeSet<String>,
}

/// The versions a response leaves held.
enum Versions {
    /// These and no others.
    All(BTreeMap<String, String>),
    /// These added or changed, and those removed.
    Changes { set: BTreeMap<String, String>, removed: Vec<String> },
}

/// The protocol's state, apart from the stream: what is held, what was asked for, what is
/// waiting. Each method returns the requests to send.
pub struct Session {
    protocol: XdsProtocol,
    node: Node,
    default_fetch_timeout: Option<Duration>,
    held: Resources,
    types: BTreeMap<&'static str, TypeState>,
    /// EDS clusters waiting for their endpoints, and since when.
    warming: BTreeMap<String, Instant>,
    /// EDS clusters that waited past their initial fetch timeout: they serve without
    /// endpoints until theirs come.
    timed_out: BTreeSet<String>,
    /// Whether the node went out on this stream yet (it goes in the first request only).
    node_sent: bool,
    /// What was put in force last.
    applied: Option<Assembled>,
    /// Changes to what is held or in force so far (a hot restart hands over again what
    /// changed while it copied).
    changes: u64,
    status: Arc<Mutex<XdsStatus>>,
}

/// A session as a hot restart hands it to the next weir: what is held and in force, and the
/// versions its stream resumes from, so that the successor serves the same mesh from its
/// first packet and the server need not send it all again.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct CarriedSession {
    /// The bootstrap it was held under: a successor with another starts afresh.
    pub bootstrap: XdsConfig,
    held: Resources,
    types: BTreeMap<String, TypeState>,
    /// EDS clusters waiting for their endpoints, and how long they have waited, ms.
    warming_ms: BTreeMap<String, u64>,
    timed_out: BTreeSet<String>,
    applied: Option<Assembled>,
    /// The status's counters, which go on from here.
    streams: u64,
    updates_accepted: u64,
    updates_rejected: u64,
    apply_us_total: u64,
}

impl CarriedSession {
    /// The services and clusters in force, as xDS gave them.
    pub fn in_force(&self) -> (&[ServiceConfig], &[ClusterConfig]) {
        self.applied.as_ref().map_or((&[], &[]), |a| (a.services.as_slice(), a.clusters.as_slice()))
    }
}

impl Session {
    /// A session for `cfg`, reporting into `status`.
    pub fn new(cfg: &XdsConfig, status: Arc<Mutex<XdsStatus>>) -> Session {
        let metadata = Struct {
            fields: cfg
                .node
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value { kind: Some(Kind::StringValue(v.clone())) }))
                .collect(),
        };
        let node = Node {
            id: cfg.node.id.clone(),
            cluster: cfg.node.cluster.clone(),
            metadata: Some(metadata),
            user_agent_name: "weir".into(),
            ..Node::default()
        };
        {
            let mut s = lock(&status);
            s.server.clone_from(&cfg.server);
            s.protocol = match cfg.protocol {
                XdsProtocol::Delta => "delta".into(),
                XdsProtocol::Sotw => "sotw".into(),
            };
        }
        Session {
            protocol: cfg.protocol,
            node,
            default_fetch_timeout: (cfg.initial_fetch_timeout_ms > 0)
                .then(|| Duration::from_millis(cfg.initial_fetch_timeout_ms)),
            held: Resources::default(),
            types: TYPES.iter().map(|t| (*t, TypeState::default())).collect(),
            warming: BTreeMap::new(),
            timed_out: BTreeSet::new(),
            node_sent: false,
            applied: None,
            changes: 0,
            status,
        }
    }

    /// A session for `cfg` that goes on from `carried`, a predecessor's (a hot restart): the
    /// same resources held and in force, the same versions; a new stream.
    pub fn resume(
        cfg: &XdsConfig,
        status: Arc<Mutex<XdsStatus>>,
        carried: CarriedSession,
    ) -> Session {
        let mut s = Session::new(cfg, status);
        let now = Instant::now();
        s.held = carried.held;
        for (t, state) in carried.types {
            if let Some(t) = known_type(&t) {
                s.types.insert(t, state);
            }
        }
        s.warming = carried
            .warming_ms
            .into_iter()
            .map(|(name, ms)| (name, now.checked_sub(Duration::from_millis(ms)).unwrap_or(now)))
            .collect();
        s.timed_out = carried.timed_out;
        s.applied = carried.applied;
        {
            let mut st = lock(&s.status);
            st.streams = carried.streams;
            st.updates_accepted = carried.updates_accepted;
            st.updates_rejected = carried.updates_rejected;
            st.apply_us_total = carried.apply_us_total;
            for (t, state) in &s.types {
                let ts = st.types.entry(short_name(t).to_owned()).or_default();
                ts.version.clone_from(&state.version);
                ts.resources.clone_from(&state.versions);
            }
        }
        if let Some(a) = s.applied.take() {
            s.publish_waiting(&a.waiting);
            s.applied = Some(a);
        }
        s
    }

    /// What a hot restart hands to the next weir (see [`CarriedSession`]).
    pub fn carry(&self, bootstrap: &XdsConfig) -> CarriedSession {
        let st = lock(&self.status);
        CarriedSession {
            bootstrap: bootstrap.clone(),
            held: self.held.clone(),
            types: self.types.iter().map(|(t, s)| ((*t).to_owned(), s.clone())).collect(),
            warming_ms: self
                .warming
                .iter()
                .map(|(n, since)| {
                    (n.clone(), u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX))
                })
                .collect(),
            timed_out: self.timed_out.clone(),
            applied: self.applied.clone(),
            streams: st.streams,
            updates_accepted: st.updates_accepted,
            updates_rejected: st.updates_rejected,
            apply_us_total: st.apply_us_total,
        }
    }

    /// Changes to what is held or in force so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The requests that open a stream: clusters and listeners (every one the server has),
    /// and the endpoints of the EDS clusters held; versions held are sent along, so a
    /// server that still has them need not send them again.
    pub fn start(&mut self) -> Vec<Outgoing> {
        self.node_sent = false;
        let mut out = Vec::new();
        for t in TYPES {
            // A fresh stream: nonces of the last one mean nothing to the server.
            self.types.get_mut(t).expect("every type has a state").nonce.clear();
            let names = if t == LOAD_ASSIGNMENT {
                let names = self.eds_names();
                self.types
                    .get_mut(t)
                    .expect("every type has a state")
                    .subscribed
                    .clone_from(&names);
                if names.is_empty() {
                    continue;
                }
                names
            } else {
                BTreeSet::new()
            };
            let state = self.types.get_mut(t).expect("every type has a state");
            state.subscribed.clone_from(&names);
            out.push(match self.protocol {
                XdsProtocol::Sotw => Outgoing::Sotw(DiscoveryRequest {
                    version_info: state.version.clone(),
                    resource_names: names.into_iter().collect(),
                    type_url: t.to_owned(),
                    ..DiscoveryRequest::default()
                }),
                XdsProtocol::Delta => Outgoing::Delta(DeltaDiscoveryRequest {
                    type_url: t.to_owned(),
                    resource_names_subscribe: names.into_iter().collect(),
                    initial_resource_versions: state
                        .versions
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    ..DeltaDiscoveryRequest::default()
                }),
            });
        }
        for o in &mut out {
            self.stamp(o);
        }
        out
    }

    /// Puts the node in the stream's first request.
    fn stamp(&mut self, o: &mut Outgoing) {
        if self.node_sent {
            return;
        }
        self.node_sent = true;
        match o {
            Outgoing::Sotw(r) => r.node = Some(self.node.clone()),
            Outgoing::Delta(r) => r.node = Some(self.node.clone()),
        }
    }

    /// A state-of-the-world response: ACK or NACK, and the EDS request when the clusters'
    /// endpoints to ask for changed.
    pub fn on_sotw(&mut self, r: DiscoveryResponse, apply: &dyn Apply) -> Vec<Outgoing> {
        let received = Instant::now();
        let type_url = known_type(&r.type_url);
        let outcome = match type_url {
            None => Err(vec![format!(
                "type URL `{}`: weir subscribes to listeners, clusters and load assignments",
                r.type_url
            )]),
            Some(t) => self.take_sotw(t, &r.resources, &r.version_info, apply),
        };
        let t = type_url.unwrap_or("");
        let mut out = Vec::new();
        match outcome {
            Ok(()) => {
                self.accepted(t, &r.version_info, &r.nonce, received);
                out.push(self.sotw_request(t, &r.version_info, &r.nonce, None));
            }
            Err(why) => {
                let reason = nack_text(&why);
                let version = self.types.get(t).map(|s| s.version.clone()).unwrap_or_default();
                self.rejected(t, &r.version_info, &r.nonce, &reason);
                out.push(Outgoing::Sotw(DiscoveryRequest {
                    version_info: version,
                    resource_names: self
                        .types
                        .get(t)
                        .map(|s| s.subscribed.iter().cloned().collect())
                        .unwrap_or_default(),
                    type_url: r.type_url.clone(),
                    response_nonce: r.nonce.clone(),
                    error_detail: Some(Status {
                        code: INVALID_ARGUMENT,
                        message: reason,
                        details: Vec::new(),
                    }),
                    ..DiscoveryRequest::default()
                }));
            }
        }
        // The endpoints to ask for follow the clusters held.
        if t == CLUSTER {
            out.extend(self.resubscribe());
        }
        for o in &mut out {
            self.stamp(o);
        }
        out
    }

    fn sotw_request(&self, t: &str, version: &str, nonce: &str, error: Option<Status>) -> Outgoing {
        Outgoing::Sotw(DiscoveryRequest {
            version_info: version.to_owned(),
            resource_names: self
                .types
                .get(t)
                .map(|s| s.subscribed.iter().cloned().collect())
                .unwrap_or_default(),
            type_url: t.to_owned(),
            response_nonce: nonce.to_owned(),
            error_detail: error,
            ..DiscoveryRequest::default()
        })
    }

    /// Translates a whole state-of-the-world response and applies it.
    fn take_sotw(
        &mut self,
        t: &'static str,
        resources: &[Any],
        version: &str,
        apply: &dyn Apply,
    ) -> Result<(), Vec<String>> {
        // Endpoints are taken on their own (see `take_endpoints`); anything else with a copy
        // of what is held.
        let endpoints = t == LOAD_ASSIGNMENT;
        let mut next = if endpoints { Resources::default() } else { self.held.clone() };
        let mut refusals = Vec::new();
        let mut versions = BTreeMap::new();
        match t {
            // Listeners and clusters: the response is all there is.
            LISTENER => next.listeners.clear(),
            CLUSTER => next.clusters.clear(),
            // Endpoints: those not in the response stay as they were.
            _ => {}
        }
        for (i, any) in resources.iter().enumerate() {
            match translate(t, any, &mut next) {
                Ok(name) if versions.contains_key(&name) => {
                    refusals.push(format!("resource {i} `{name}`: a second resource of that name"));
                }
                Ok(name) => {
                    versions.insert(name, version.to_owned());
                }
                Err(why) => refusals.push(format!("resource {i} {why}")),
            }
        }
        if !refusals.is_empty() {
            return Err(refusals);
        }
        // State of the world: the listeners and clusters are these; endpoints not in the
        // response stay as they were.
        let versions = if endpoints {
            Versions::Changes { set: versions, removed: Vec::new() }
        } else {
            Versions::All(versions)
        };
        if endpoints {
            return self.take_endpoints(next.assignments, versions, apply);
        }
        self.commit(t, next, versions, apply)
    }

    /// A delta response: ACK or NACK, and EDS subscription changes.
    pub fn on_delta(&mut self, r: DeltaDiscoveryResponse, apply: &dyn Apply) -> Vec<Outgoing> {
        let received = Instant::now();
        let type_url = known_type(&r.type_url);
        let outcome = match type_url {
            None => Err(vec![format!(
                "type URL `{}`: weir subscribes to listeners, clusters and load assignments",
                r.type_url
            )]),
            Some(t) => self.take_delta(t, &r, apply),
        };
        let t = type_url.unwrap_or("");
        let mut out = Vec::new();
        let error_detail = match outcome {
            Ok(()) => {
                self.accepted(t, &r.system_version_info, &r.nonce, received);
                None
            }
            Err(why) => {
                let reason = nack_text(&why);
                self.rejected(t, &r.system_version_info, &r.nonce, &reason);
                Some(Status { code: INVALID_ARGUMENT, message: reason, details: Vec::new() })
            }
        };
        out.push(Outgoing::Delta(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            error_detail,
            ..DeltaDiscoveryRequest::default()
        }));
        // The endpoints to ask for follow the clusters held.
        if t == CLUSTER {
            out.extend(self.resubscribe());
        }
        for o in &mut out {
            self.stamp(o);
        }
        out
    }

    fn take_delta(
        &mut self,
        t: &'static str,
        r: &DeltaDiscoveryResponse,
        apply: &dyn Apply,
    ) -> Result<(), Vec<String>> {
        let endpoints = t == LOAD_ASSIGNMENT;
        let mut next = if endpoints { Resources::default() } else { self.held.clone() };
        let mut refusals = Vec::new();
        let mut versions = BTreeMap::new();
        let mut removed = Vec::new();
        for name in &r.removed_resources {
            match t {
                LISTENER => drop(next.listeners.remove(name)),
                CLUSTER => drop(next.clusters.remove(name)),
                // As Envoy: a cluster's endpoints go with the cluster, not on their own (a
                // cluster left without them would stop serving until they came back).
                _ => continue,
            }
            removed.push(name.clone());
        }
        for (i, res) in r.resources.iter().enumerate() {
            let Some(any) = &res.resource else {
                refusals.push(format!("resource {i} `{}`: no resource in it", res.name));
                continue;
            };
            match translate(t, any, &mut next) {
                Ok(name) if name == res.name => {
                    versions.insert(name, res.version.clone());
                }
                Ok(name) => refusals.push(format!(
                    "resource {i} `{}`: the resource inside is named `{name}`",
                    res.name
                )),
                Err(why) => refusals.push(format!("resource {i} {why}")),
            }
        }
        if !refusals.is_empty() {
            return Err(refusals);
        }
        let versions = Versions::Changes { set: versions, removed };
        if endpoints {
            return self.take_endpoints(next.assignments, versions, apply);
        }
        self.commit(t, next, versions, apply)
    }

    /// Load assignments taken in: when they change only the endpoints of clusters in force
    /// (and of no more than [`MOST_IN_PLACE`] clusters), only those clusters are applied and
    /// what is held is updated in place, at a cost that follows the change; otherwise (a
    /// cluster that waited for them starts serving, or many change) the whole way.
    fn take_endpoints(
        &mut self,
        incoming: BTreeMap<String, XdsAssignment>,
        versions: Versions,
        apply: &dyn Apply,
    ) -> Result<(), Vec<String>> {
        // What the server sent again as it was changes nothing.
        let incoming: BTreeMap<String, XdsAssignment> =
            incoming.into_iter().filter(|(n, a)| self.held.assignments.get(n) != Some(a)).collect();
        let Some(changed) = self.clusters_changed_by(&incoming) else {
            let mut next = self.held.clone();
            next.assignments.extend(incoming);
            return self.commit(LOAD_ASSIGNMENT, next, versions, apply);
        };
        if !changed.is_empty() {
            if let Err(e) = apply.apply_clusters(changed.iter().map(|(_, c)| c.clone()).collect()) {
                // The whole way decides: a difference between the two costs time, never a
                // refusal the whole configuration would not make.
                tracing::debug!("xDS: endpoints not applied in place ({e:#}): the whole way");
                let mut next = self.held.clone();
                next.assignments.extend(incoming);
                return self.commit(LOAD_ASSIGNMENT, next, versions, apply);
            }
            if let Some(applied) = &mut self.applied {
                for (at, c) in changed {
                    applied.clusters[at] = c;
                }
            }
        }
        self.held.assignments.extend(incoming);
        self.keep_versions(LOAD_ASSIGNMENT, versions);
        Ok(())
    }

    /// The clusters in force that these load assignments change, with their place in what
    /// was applied last and their new form; `None` when the assignments do more than that.
    fn clusters_changed_by(
        &self,
        incoming: &BTreeMap<String, XdsAssignment>,
    ) -> Option<Vec<(usize, ClusterConfig)>> {
        let applied = self.applied.as_ref()?;
        let mut changed = Vec::new();
        if incoming.is_empty() {
            return Some(changed);
        }
        for (name, c) in &self.held.clusters {
            let Some(eds) = &c.eds else { continue };
            let Some(a) = incoming.get(eds) else { continue };
            // A cluster without its endpoints waits, or serves without them or as it was: its
            // getting them changes more than endpoints.
            if !self.held.assignments.contains_key(eds) || changed.len() == MOST_IN_PLACE {
                return None;
            }
            let at = applied.clusters.iter().position(|x| &x.name == name)?;
            let mut config = c.config.clone();
            resources::apply_assignment(&mut config, a, c.locality_weighted);
            if config != applied.clusters[at] {
                changed.push((at, config));
            }
        }
        Some(changed)
    }

    /// Applies `next` (the held resources with a response taken in) and keeps it if that
    /// worked.
    fn commit(
        &mut self,
        t: &'static str,
        mut next: Resources,
        versions: Versions,
        apply: &dyn Apply,
    ) -> Result<(), Vec<String>> {
        // Endpoints of clusters no longer held go with them.
        if t == CLUSTER {
            let wanted = eds_names_of(&next);
            next.assignments.retain(|k, _| wanted.contains(k));
        }
        let now = Instant::now();
        let (warming, timed_out) = self.warming_after(&next, now);
        let assembled = self.assemble(&next, &timed_out);
        if self.applied.as_ref() != Some(&assembled) {
            apply
                .apply(assembled.services.clone(), assembled.clusters.clone())
                .map_err(|e| vec![format!("the configuration it makes: {e:#}")])?;
        }
        self.held = next;
        self.warming = warming;
        self.timed_out = timed_out;
        self.keep_versions(t, versions);
        self.publish_waiting(&assembled.waiting);
        self.applied = Some(assembled);
        Ok(())
    }

    /// Keeps the versions of the resources of type `t` once a response is taken, and shows
    /// them in the status; changes are made in place, so that a small update costs little.
    fn keep_versions(&mut self, t: &'static str, versions: Versions) {
        self.changes += 1;
        let state = self.types.get_mut(t).expect("every type has a state");
        let mut status = lock(&self.status);
        let shown = &mut status.types.entry(short_name(t).to_owned()).or_default().resources;
        match versions {
            Versions::All(all) => {
                shown.clone_from(&all);
                state.versions = all;
            }
            Versions::Changes { set, removed } => {
                for name in &removed {
                    state.versions.remove(name);
                    shown.remove(name);
                }
                shown.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
                state.versions.extend(set);
            }
        }
        if t == CLUSTER {
            // Their endpoints' versions went with them.
            let held = &self.held.assignments;
            if let Some(eds) = self.types.get_mut(LOAD_ASSIGNMENT) {
                eds.versions.retain(|k, _| held.contains_key(k));
            }
            if let Some(eds) = status.types.get_mut(short_name(LOAD_ASSIGNMENT)) {
                eds.resources.retain(|k, _| held.contains_key(k));
            }
        }
    }

    /// EDS clusters without their endpoints once `next` is taken: those waiting (since when)
    /// and those whose wait is over (they serve without).
    fn warming_after(
        &self,
        next: &Resources,
        now: Instant,
    ) -> (BTreeMap<String, Instant>, BTreeSet<String>) {
        let mut warming = BTreeMap::new();
        let mut timed_out = BTreeSet::new();
        for (name, c) in &next.clusters {
            let Some(eds) = &c.eds else { continue };
            if next.assignments.contains_key(eds) {
                continue;
            }
            let since = self.warming.get(name).copied().unwrap_or(now);
            let over = fetch_timeout(next, name, self.default_fetch_timeout)
                .is_some_and(|t| now >= since + t);
            if self.timed_out.contains(name) || over {
                timed_out.insert(name.clone());
            } else {
                warming.insert(name.clone(), since);
            }
        }
        (warming, timed_out)
    }

    /// When the next waiting cluster's initial fetch times out, if one will.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.warming
            .iter()
            .filter_map(|(name, since)| Some(*since + self.fetch_timeout(name)?))
            .min()
    }

    fn fetch_timeout(&self, cluster: &str) -> Option<Duration> {
        fetch_timeout(&self.held, cluster, self.default_fetch_timeout)
    }

    /// Waiting clusters whose initial fetch timed out serve without endpoints.
    pub fn on_timer(&mut self, apply: &dyn Apply) {
        let (warming, timed_out) = self.warming_after(&self.held, Instant::now());
        let newly: Vec<String> = timed_out.difference(&self.timed_out).cloned().collect();
        if newly.is_empty() {
            self.warming = warming;
            return;
        }
        let assembled = self.assemble(&self.held, &timed_out);
        match apply.apply(assembled.services.clone(), assembled.clusters.clone()) {
            Ok(summary) => {
                tracing::warn!(
                    clusters = ?newly,
                    "xDS: no endpoints within the initial fetch timeout: serving without \
                     ({summary})"
                );
                self.warming = warming;
                self.timed_out = timed_out;
                self.publish_waiting(&assembled.waiting);
                self.applied = Some(assembled);
                self.changes += 1;
            }
            Err(e) => {
                // They keep waiting (for their endpoints, or for the next response to make a
                // configuration that holds); the deadline is not tried again.
                for c in &newly {
                    self.warming.remove(c);
                }
                tracing::error!(
                    clusters = ?newly,
                    "xDS: serving after an initial fetch timeout refused: {e:#}"
                );
            }
        }
    }

    /// Puts `held` together: clusters whose wait is over serve without endpoints; a cluster
    /// in force that waits again (its EDS name changed) keeps serving as it was meanwhile.
    fn assemble(&self, held: &Resources, timed_out: &BTreeSet<String>) -> Assembled {
        let previous: BTreeMap<&str, &ClusterConfig> = self
            .applied
            .iter()
            .flat_map(|a| a.clusters.iter())
            .map(|c| (c.name.as_str(), c))
            .collect();
        held.assemble_with(|c| timed_out.contains(c), |c| previous.get(c).map(|x| (*x).clone()))
    }

    /// EDS names of the clusters held.
    fn eds_names(&self) -> BTreeSet<String> {
        eds_names_of(&self.held)
    }

    /// The EDS request when the names to ask for changed.
    fn resubscribe(&mut self) -> Vec<Outgoing> {
        let names = self.eds_names();
        let state = self.types.get_mut(LOAD_ASSIGNMENT).expect("every type has a state");
        if state.subscribed == names {
            return Vec::new();
        }
        let added: Vec<String> = names.difference(&state.subscribed).cloned().collect();
        let removed: Vec<String> = state.subscribed.difference(&names).cloned().collect();
        state.subscribed.clone_from(&names);
        vec![match self.protocol {
            XdsProtocol::Sotw => Outgoing::Sotw(DiscoveryRequest {
                version_info: state.version.clone(),
                resource_names: names.into_iter().collect(),
                type_url: LOAD_ASSIGNMENT.to_owned(),
                response_nonce: state.nonce.clone(),
                ..DiscoveryRequest::default()
            }),
            XdsProtocol::Delta => Outgoing::Delta(DeltaDiscoveryRequest {
                type_url: LOAD_ASSIGNMENT.to_owned(),
                resource_names_subscribe: added,
                resource_names_unsubscribe: removed,
                ..DeltaDiscoveryRequest::default()
            }),
        }]
    }

    fn accepted(&mut self, t: &str, version: &str, nonce: &str, received: Instant) {
        if let Some(state) = self.types.get_mut(t) {
            state.version = version.to_owned();
            state.nonce = nonce.to_owned();
        }
        let took = u64::try_from(received.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut s = lock(&self.status);
        s.updates_accepted += 1;
        s.last_apply_us = took;
        s.apply_us_total = s.apply_us_total.saturating_add(took);
        let ts = s.types.entry(short_name(t).to_owned()).or_default();
        ts.version = version.to_owned();
        ts.nonce = nonce.to_owned();
        ts.accepted += 1;
        tracing::info!(resource = short_name(t), version, apply_us = took, "xDS: update accepted");
    }

    fn rejected(&mut self, t: &str, version: &str, nonce: &str, reason: &str) {
        if let Some(state) = self.types.get_mut(t) {
            state.nonce = nonce.to_owned();
        }
        let mut s = lock(&self.status);
        s.updates_rejected += 1;
        let ts = s.types.entry(short_name(t).to_owned()).or_default();
        ts.nonce = nonce.to_owned();
        ts.rejected += 1;
        ts.last_nack = Some(Nack {
            version: version.to_owned(),
            nonce: nonce.to_owned(),
            reason: reason.to_owned(),
            at_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        });
        tracing::warn!(
            resource = short_name(t),
            version,
            "xDS: update refused, the running configuration stays: {reason}"
        );
    }

    fn publish_waiting(&self, waiting: &[Waiting]) {
        lock(&self.status).waiting = waiting
            .iter()
            .map(|w| WaitingStatus { kind: w.kind, name: w.name.clone(), reason: w.reason.clone() })
            .collect();
    }
}

fn known_type(type_url: &str) -> Option<&'static str> {
    TYPES.iter().copied().find(|t| *t == type_url)
}

/// Translates one resource into `next`; its name, or why not (naming it).
fn translate(t: &'static str, any: &Any, next: &mut Resources) -> Result<String, String> {
    if any.type_url != t {
        return Err(format!("has type `{}` in a response of `{t}`", any.type_url));
    }
    let named = |r: Refusal| format!("`{}`: {r}", resource_name(t, &any.value));
    match t {
        LISTENER => {
            let l = resources::listener(&any.value).map_err(named)?;
            let name = l.service.name.clone();
            next.listeners.insert(name.clone(), l);
            Ok(name)
        }
        CLUSTER => {
            let c = resources::cluster(&any.value).map_err(named)?;
            let name = c.config.name.clone();
            next.clusters.insert(name.clone(), c);
            Ok(name)
        }
        _ => {
            let a = resources::load_assignment(&any.value).map_err(named)?;
            let name = a.name.clone();
            next.assignments.insert(name.clone(), a);
            Ok(name)
        }
    }
}

/// The name a resource gives itself, for a refusal (`?` when it does not decode).
fn resource_name(t: &str, bytes: &[u8]) -> String {
    use envoy_types::pb::envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
    };
    use prost::Message;
    let name = match t {
        LISTENER => Listener::decode(bytes).map(|l| l.name),
        CLUSTER => Cluster::decode(bytes).map(|c| c.name),
        _ => ClusterLoadAssignment::decode(bytes).map(|a| a.cluster_name),
    };
    name.ok().filter(|n| !n.is_empty()).unwrap_or_else(|| "?".to_owned())
}

fn eds_names_of(r: &Resources) -> BTreeSet<String> {
    r.clusters.values().filter_map(|c| c.eds.clone()).collect()
}

/// A cluster's initial fetch timeout: its own, or the bootstrap's; `None`: it waits for good.
fn fetch_timeout(r: &Resources, cluster: &str, default: Option<Duration>) -> Option<Duration> {
    match r.clusters.get(cluster).and_then(|c| c.initial_fetch_timeout) {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None => default,
    }
}

fn nack_text(refusals: &[String]) -> String {
    let mut s = refusals.iter().take(NACK_REFUSALS).cloned().collect::<Vec<_>>().join("; ");
    if refusals.len() > NACK_REFUSALS {
        s.push_str(&format!("; and {} more", refusals.len() - NACK_REFUSALS));
    }
    s
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the client until `stopped` resolves: connects, streams, and after a broken stream
/// connects again, waiting `reconnect_base_ms` doubled each failed try up to
/// `reconnect_max_ms`, ±50 % jitter; a stream that got a response accepted starts the wait
/// again from the base.
///
/// The session is shared (locked only between awaits, never across one) so that a hot
/// restart can hand it over while the client runs.
pub async fn run(
    cfg: XdsConfig,
    apply: Arc<dyn Apply>,
    session: Arc<Mutex<Session>>,
    stopped: impl std::future::Future<Output = ()>,
) {
    let status = Arc::clone(&lock(&session).status);
    let session = &*session;
    let mut backoff = Backoff::new(
        Duration::from_millis(cfg.reconnect_base_ms),
        Duration::from_millis(cfg.reconnect_max_ms),
    );
    tokio::pin!(stopped);
    loop {
        let accepted_before = lock(&status).updates_accepted;
        let outcome = tokio::select! {
            r = stream(&cfg, session, &*apply, &status) => r,
            () = &mut stopped => return,
        };
        lock(&status).connected = false;
        if lock(&status).updates_accepted > accepted_before {
            backoff.reset();
        }
        let wait = backoff.next();
        lock(&status).last_stream_error = Some(match &outcome {
            Ok(()) => "the server ended the stream".to_owned(),
            Err(e) => format!("{e:#}"),
        });
        match outcome {
            Ok(()) => tracing::warn!(
                server = %cfg.server,
                retry_in_ms = wait.as_millis(),
                "xDS: the server ended the stream; the last accepted configuration keeps serving"
            ),
            Err(e) => tracing::warn!(
                server = %cfg.server,
                retry_in_ms = wait.as_millis(),
                "xDS: {e:#}; the last accepted configuration keeps serving"
            ),
        }
        let backing_off = tokio::time::sleep(wait);
        tokio::select! {
            () = with_timers(backing_off, session, &*apply) => {}
            () = &mut stopped => return,
        }
    }
}

/// Runs `fut` to its end, acting on initial fetch timeouts that fall due meanwhile (while
/// connecting, opening the stream, or waiting to connect again).
async fn with_timers<F: std::future::Future>(
    fut: F,
    session: &Mutex<Session>,
    apply: &dyn Apply,
) -> F::Output {
    tokio::pin!(fut);
    loop {
        let deadline = lock(session).next_deadline();
        tokio::select! {
            out = &mut fut => return out,
            () = sleep_until(deadline) => lock(session).on_timer(apply),
        }
    }
}

/// Waits between connection attempts.
struct Backoff {
    base: Duration,
    max: Duration,
    tries: u32,
    seed: u64,
}

impl Backoff {
    fn new(base: Duration, max: Duration) -> Backoff {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        Backoff { base: base.max(Duration::from_millis(1)), max: max.max(base), tries: 0, seed }
    }

    fn reset(&mut self) {
        self.tries = 0;
    }

    /// The next wait: base × 2^tries, capped, then scaled by a factor in [0.5, 1.5).
    fn next(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.tries.min(20)).min(self.max);
        self.tries = self.tries.saturating_add(1);
        // splitmix64: jitter needs no more than this.
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let permille = 500 + z % 1000;
        exp.saturating_mul(u32::try_from(permille).unwrap_or(1000)) / 1000
    }
}

/// Connects to the server (TCP or a Unix socket).
async fn connect(cfg: &XdsConfig) -> anyhow::Result<tonic::transport::Channel> {
    use tonic::transport::Endpoint;
    let server = cfg.server().map_err(|e| anyhow::anyhow!("xds.server: {e}"))?;
    let timeout = Duration::from_secs(5);
    match server {
        XdsServer::Tcp(addr) => Ok(Endpoint::try_from(format!("http://{addr}"))?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .connect()
            .await?),
        XdsServer::Unix(path) => {
            // The URI is not used: the connector opens the socket.
            Ok(Endpoint::try_from("http://xds.invalid")?
                .connect_timeout(timeout)
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                }))
                .await?)
        }
    }
}

/// One stream: open, send what the session starts with, then answer each response.
async fn stream(
    cfg: &XdsConfig,
    session: &Mutex<Session>,
    apply: &dyn Apply,
    status: &Mutex<XdsStatus>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let channel = with_timers(connect(cfg), session, apply)
        .await
        .with_context(|| format!("connecting to {}", cfg.server))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(cfg.max_message_bytes);
    let first = lock(session).start();
    let sotw = cfg.protocol == XdsProtocol::Sotw;
    // One channel of the session's requests, split by protocol for tonic's typed streams.
    let (sotw_tx, sotw_rx) = tokio::sync::mpsc::unbounded_channel::<DiscoveryRequest>();
    let (delta_tx, delta_rx) = tokio::sync::mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
    let send = move |o: Outgoing| match o {
        Outgoing::Sotw(r) => sotw_tx.send(r).is_ok(),
        Outgoing::Delta(r) => delta_tx.send(r).is_ok(),
    };
    for o in first {
        send(o);
    }
    if sotw {
        let open = client.stream_aggregated_resources(
            tokio_stream::wrappers::UnboundedReceiverStream::new(sotw_rx),
        );
        let inbound =
            with_timers(open, session, apply).await.context("opening the ADS stream")?.into_inner();
        opened(status);
        answer(inbound, session, apply, Session::on_sotw, send).await
    } else {
        let open = client.delta_aggregated_resources(
            tokio_stream::wrappers::UnboundedReceiverStream::new(delta_rx),
        );
        let inbound = with_timers(open, session, apply)
            .await
            .context("opening the delta ADS stream")?
            .into_inner();
        opened(status);
        answer(inbound, session, apply, Session::on_delta, send).await
    }
}

/// Answers each response of an open stream (and acts on initial fetch timeouts) until the
/// server ends it (`Ok`) or it breaks.
async fn answer<R>(
    mut inbound: tonic::Streaming<R>,
    session: &Mutex<Session>,
    apply: &dyn Apply,
    on_response: fn(&mut Session, R, &dyn Apply) -> Vec<Outgoing>,
    send: impl Fn(Outgoing) -> bool,
) -> anyhow::Result<()> {
    use anyhow::Context;
    loop {
        let deadline = lock(session).next_deadline();
        tokio::select! {
            m = inbound.message() => match m.context("the ADS stream")? {
                Some(r) => {
                    let out = on_response(&mut lock(session), r, apply);
                    out.into_iter().for_each(|o| { send(o); });
                }
                None => return Ok(()),
            },
            () = sleep_until(deadline) => lock(session).on_timer(apply),
        }
    }
}

fn opened(status: &Mutex<XdsStatus>) {
    let mut s = lock(status);
    s.connected = true;
    s.streams += 1;
    tracing::info!(server = %s.server, protocol = %s.protocol, "xDS: stream open");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::test_server::build;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;

    /// Records what it is asked to apply; refuses while `refuse` is set.
    #[derive(Default)]
    struct Recorder {
        applied: Mutex<Vec<(Vec<ServiceConfig>, Vec<ClusterConfig>)>>,
        refuse: std::sync::atomic::AtomicBool,
        /// Updates applied cluster by cluster.
        in_place: std::sync::atomic::AtomicUsize,
    }

    impl Apply for Recorder {
        fn apply(
            &self,
            services: Vec<ServiceConfig>,
            clusters: Vec<ClusterConfig>,
        ) -> anyhow::Result<String> {
            if self.refuse.load(std::sync::atomic::Ordering::Relaxed) {
                anyhow::bail!("refused");
            }
            lock(&self.applied).push((services, clusters));
            Ok(String::new())
        }

        fn apply_clusters(&self, clusters: Vec<ClusterConfig>) -> anyhow::Result<String> {
            if self.refuse.load(std::sync::atomic::Ordering::Relaxed) {
                anyhow::bail!("refused");
            }
            let mut applied = lock(&self.applied);
            let (services, mut all) = applied.last().cloned().unwrap_or_default();
            for c in clusters {
                match all.iter_mut().find(|x| x.name == c.name) {
                    Some(x) => *x = c,
                    None => anyhow::bail!("`{}` is not in force", c.name),
                }
            }
            applied.push((services, all));
            self.in_place.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(String::new())
        }
    }

    fn session(protocol: XdsProtocol, fetch_ms: u64) -> Session {
        let cfg = XdsConfig {
            server: "unix:/nonexistent".into(),
            node: crate::config::XdsNode {
                id: "n".into(),
                cluster: String::new(),
                metadata: BTreeMap::new(),
            },
            protocol,
            initial_fetch_timeout_ms: fetch_ms,
            reconnect_base_ms: 100,
            reconnect_max_ms: 1000,
            max_message_bytes: 1 << 20,
        };
        Session::new(&cfg, Arc::default())
    }

    fn sotw(t: &str, version: &str, resources: Vec<Any>) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            resources,
            type_url: t.into(),
            nonce: format!("nonce-{version}"),
            ..DiscoveryResponse::default()
        }
    }

    fn error_of(out: &[Outgoing]) -> Option<String> {
        match out.first()? {
            Outgoing::Sotw(r) => r.error_detail.as_ref().map(|e| e.message.clone()),
            Outgoing::Delta(r) => r.error_detail.as_ref().map(|e| e.message.clone()),
        }
    }

    #[test]
    fn two_resources_of_one_name_in_a_response_are_refused() {
        let mut s = session(XdsProtocol::Sotw, 15_000);
        let apply = Recorder::default();
        let c = build::any(&build::eds_cluster("web", LbPolicy::RoundRobin));
        let out = s.on_sotw(sotw(CLUSTER, "1", vec![c.clone(), c]), &apply);
        assert!(error_of(&out).is_some_and(|e| e.contains("a second resource")), "{out:?}");
        assert!(lock(&apply.applied).is_empty());
    }

    #[test]
    fn the_bootstrap_timeout_applies_unless_the_cluster_sets_its_own() {
        let mut s = session(XdsProtocol::Sotw, 15_000);
        let apply = Recorder::default();
        let c = build::any(&build::eds_cluster("web", LbPolicy::RoundRobin));
        let out = s.on_sotw(sotw(CLUSTER, "1", vec![c]), &apply);
        assert_eq!(error_of(&out), None);
        assert_eq!(s.fetch_timeout("web"), Some(Duration::from_secs(15)));
        // `initial_fetch_timeout: 0s` waits as long as it takes.
        let mut forever = build::eds_cluster("web", LbPolicy::RoundRobin);
        if let Some(e) = forever.eds_cluster_config.as_mut().and_then(|e| e.eds_config.as_mut()) {
            e.initial_fetch_timeout = Some(envoy_types::pb::google::protobuf::Duration::default());
        }
        let out = s.on_sotw(sotw(CLUSTER, "2", vec![build::any(&forever)]), &apply);
        assert_eq!(error_of(&out), None);
        assert_eq!(s.fetch_timeout("web"), None);
        assert_eq!(s.next_deadline(), None, "nothing to time out");
    }

    #[test]
    fn a_refused_timeout_apply_leaves_the_cluster_waiting_and_does_not_spin() {
        let mut s = session(XdsProtocol::Sotw, 1);
        let apply = Recorder::default();
        let c = build::any(&build::eds_cluster("web", LbPolicy::RoundRobin));
        assert_eq!(error_of(&s.on_sotw(sotw(CLUSTER, "1", vec![c]), &apply)), None);
        std::thread::sleep(Duration::from_millis(5));
        apply.refuse.store(true, std::sync::atomic::Ordering::Relaxed);
        s.on_timer(&apply);
        assert!(s.timed_out.is_empty(), "not serving: the apply was refused");
        assert_eq!(s.next_deadline(), None, "the deadline is not tried again at once");
    }

    #[test]
    fn a_delta_removal_of_endpoints_alone_changes_nothing() {
        let mut s = session(XdsProtocol::Delta, 15_000);
        let apply = Recorder::default();
        let delta =
            |t: &str, items: Vec<(&str, Any)>, removed: Vec<String>| DeltaDiscoveryResponse {
                type_url: t.into(),
                nonce: "n".into(),
                resources: items
                    .into_iter()
                    .map(|(n, a)| envoy_types::pb::envoy::service::discovery::v3::Resource {
                        name: n.into(),
                        version: "1".into(),
                        resource: Some(a),
                        ..Default::default()
                    })
                    .collect(),
                removed_resources: removed,
                ..DeltaDiscoveryResponse::default()
            };
        let c = build::any(&build::eds_cluster("web", LbPolicy::RoundRobin));
        let ip: std::net::IpAddr = "198.18.2.2".parse().unwrap();
        let a = build::any(&build::load_assignment("web", &[(ip, 80, 1)]));
        assert_eq!(error_of(&s.on_delta(delta(CLUSTER, vec![("web", c)], vec![]), &apply)), None);
        assert_eq!(
            error_of(&s.on_delta(delta(LOAD_ASSIGNMENT, vec![("web", a)], vec![]), &apply)),
            None
        );
        let before = lock(&apply.applied).len();
        let out = s.on_delta(delta(LOAD_ASSIGNMENT, vec![], vec!["web".into()]), &apply);
        assert_eq!(error_of(&out), None);
        assert_eq!(lock(&apply.applied).len(), before, "nothing to apply");
        assert!(s.held.assignments.contains_key("web"));
    }

    #[test]
    fn endpoints_of_clusters_in_force_are_applied_cluster_by_cluster() {
        let mut s = session(XdsProtocol::Sotw, 15_000);
        let apply = Recorder::default();
        let ip = |last: u8| std::net::IpAddr::from([198, 18, 2, last]);
        let clusters: Vec<Any> = ["a", "b", "c"]
            .iter()
            .map(|n| build::any(&build::eds_cluster(n, LbPolicy::RoundRobin)))
            .collect();
        assert_eq!(error_of(&s.on_sotw(sotw(CLUSTER, "1", clusters), &apply)), None);
        let cla = |n: &str, last: u8, w: u32| {
            build::any(&build::load_assignment(n, &[(ip(last), 80, w)]))
        };
        // `c` gets no endpoints: it waits.
        let out =
            s.on_sotw(sotw(LOAD_ASSIGNMENT, "1", vec![cla("a", 1, 1), cla("b", 2, 1)]), &apply);
        assert_eq!(error_of(&out), None);
        assert_eq!(apply.in_place.load(std::sync::atomic::Ordering::Relaxed), 0);
        let names = || -> Vec<String> {
            let applied = lock(&apply.applied);
            applied.last().map(|a| a.1.iter().map(|c| c.name.clone()).collect()).unwrap_or_default()
        };
        assert_eq!(names(), ["a", "b"]);
        // `b` reweighted, `a` sent again as it was: `b` alone is applied.
        let out =
            s.on_sotw(sotw(LOAD_ASSIGNMENT, "2", vec![cla("a", 1, 1), cla("b", 2, 5)]), &apply);
        assert_eq!(error_of(&out), None);
        assert_eq!(apply.in_place.load(std::sync::atomic::Ordering::Relaxed), 1);
        let last = lock(&apply.applied).last().cloned().unwrap();
        assert_eq!(last.1[1].endpoints[0].weight, 5);
        assert_eq!(s.types[LOAD_ASSIGNMENT].version, "2");
        // What is held and applied is what the whole way would make.
        assert_eq!(s.applied, Some(s.assemble(&s.held, &s.timed_out)));
        // `c`'s endpoints make it serve: the whole way.
        let out = s.on_sotw(sotw(LOAD_ASSIGNMENT, "3", vec![cla("c", 3, 1)]), &apply);
        assert_eq!(error_of(&out), None);
        assert_eq!(apply.in_place.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(names(), ["a", "b", "c"]);
        // Refused in place: NACKed, nothing held changes.
        apply.refuse.store(true, std::sync::atomic::Ordering::Relaxed);
        let out = s.on_sotw(sotw(LOAD_ASSIGNMENT, "4", vec![cla("a", 9, 1)]), &apply);
        assert!(error_of(&out).is_some_and(|e| e.contains("refused")), "{out:?}");
        assert_eq!(s.held.assignments["a"].endpoints[0].address, ip(1));
        assert_eq!(s.types[LOAD_ASSIGNMENT].version, "3");
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let waits: Vec<u128> = (0..8).map(|_| b.next().as_millis()).collect();
        for (i, w) in waits.iter().enumerate() {
            let exp = (100u128 << i.min(20)).min(1000);
            assert!(*w >= exp / 2 && *w < exp * 3 / 2, "try {i}: {w} ms against {exp}");
        }
        b.reset();
        assert!(b.next() < Duration::from_millis(150));
    }
}
