//! The configuration's schema: every section and field, its default and unit, and how it reads
//! from and writes to YAML (references to ports are checked against the file's port names).

use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Worker threads: one per entry, each pinned to its core.
    #[serde(default = "default_workers")]
    pub workers: Vec<WorkerConfig>,
    /// What workers do when idle.
    #[serde(default)]
    pub idle: IdleConfig,
    /// The packet buffer pool.
    #[serde(default)]
    pub mempool: MempoolConfig,
    /// Ports, in order: routes and neighbors refer to them by name.
    pub ports: Vec<PortConfig>,
    /// Static routes (connected routes come from port addresses).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Static neighbors (never aged, never overwritten by ARP/NDP).
    #[serde(default)]
    pub neighbors: Vec<NeighborConfig>,
    /// Neighbor resolution sizing and timing.
    #[serde(default)]
    pub neighbor: NeighborSettings,
    /// ICMP error rate limit.
    #[serde(default)]
    pub icmp: IcmpConfig,
    /// DPDK's EAL; read only when the ports are `backend: dpdk`.
    #[serde(default)]
    pub eal: EalSettings,
    /// L4 services: a VIP, port and protocol balanced over a cluster's endpoints.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Clusters of endpoints.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// Flow tables, SNAT ports and the mesh's capacities.
    #[serde(default)]
    pub mesh: MeshConfig,
    /// The admin API (HTTP on a kernel socket, served by the control thread); off when absent.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// On SIGTERM (or `POST /drain`), how long existing flows keep being served while new ones
    /// are refused, ms; weir exits sooner once no flow is left. 0: SIGTERM stops at once.
    #[serde(default)]
    pub drain_timeout_ms: u64,
    /// A control plane to take services, clusters and endpoints from over xDS (ADS), besides
    /// those in this file; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xds: Option<XdsConfig>,
    /// Hot restart: the Unix socket where this weir waits for the next one to take over its
    /// ports, flows and admin listener, and where a new weir looks for one to take over
    /// from; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<HandoverConfig>,
}

/// Hot restart (see [`Config::handover`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HandoverConfig {
    /// The Unix socket's path.
    pub socket: std::path::PathBuf,
    /// The longest a takeover may take, from the first message to the new weir forwarding,
    /// ms; past it, the old weir goes on forwarding and the new one stops.
    #[serde(default = "default_handover_timeout")]
    pub timeout_ms: u64,
}

fn default_handover_timeout() -> u64 {
    30_000
}

/// The xDS client's bootstrap, as Envoy's: the management server, this node, the protocol.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XdsConfig {
    /// The ADS server: `ADDRESS:PORT` or `unix:PATH` (gRPC over HTTP/2, no TLS).
    pub server: String,
    /// This node, as the server knows it.
    pub node: XdsNode,
    /// `delta` (incremental, Istio's default) or `sotw` (state of the world).
    #[serde(default = "default_xds_protocol")]
    pub protocol: XdsProtocol,
    /// How long an EDS cluster waits for its endpoints before it serves without, ms (Envoy's
    /// `initial_fetch_timeout`; a cluster's own `eds_config.initial_fetch_timeout` wins).
    #[serde(default = "default_initial_fetch_timeout")]
    pub initial_fetch_timeout_ms: u64,
    /// First wait before connecting again after the stream broke, ms; doubled each failed
    /// try up to `reconnect_max_ms`, with ±50 % jitter.
    #[serde(default = "default_reconnect_base")]
    pub reconnect_base_ms: u64,
    /// Longest wait between tries, ms.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// Largest response accepted, bytes; a larger one breaks the stream (and is logged).
    #[serde(default = "default_xds_max_message")]
    pub max_message_bytes: usize,
}

/// The node's identity.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XdsNode {
    /// Node id.
    pub id: String,
    /// Node cluster.
    #[serde(default)]
    pub cluster: String,
    /// Metadata (strings), sent as the node's metadata struct.
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// The xDS protocol variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XdsProtocol {
    /// Incremental: only what changed, with removals named.
    Delta,
    /// State of the world: every listener and cluster in each response.
    Sotw,
}

fn default_xds_protocol() -> XdsProtocol {
    XdsProtocol::Delta
}
fn default_initial_fetch_timeout() -> u64 {
    15_000
}
fn default_reconnect_base() -> u64 {
    500
}
fn default_reconnect_max() -> u64 {
    30_000
}
fn default_xds_max_message() -> usize {
    64 << 20
}

/// Where the xDS server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XdsServer {
    /// TCP.
    Tcp(std::net::SocketAddr),
    /// A Unix socket.
    Unix(std::path::PathBuf),
}

impl XdsConfig {
    /// The server's address.
    pub fn server(&self) -> Result<XdsServer, String> {
        if let Some(path) = self.server.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path".into());
            }
            return Ok(XdsServer::Unix(path.into()));
        }
        self.server
            .parse()
            .map(XdsServer::Tcp)
            .map_err(|_| format!("`{}` is neither ADDRESS:PORT nor unix:PATH", self.server))
    }
}

/// The admin API's listener and the token that guards what changes state.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ADDRESS:PORT` (e.g. `127.0.0.1:9901`, `[::1]:9901`) or `unix:PATH`.
    pub listen: String,
    /// A file holding the token that state-changing requests must carry
    /// (`Authorization: Bearer TOKEN`). Without it nothing that changes state is served, and a
    /// listener on a non-loopback address is refused.
    pub token_file: Option<std::path::PathBuf>,
}

/// Where the admin API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    /// A TCP address.
    Tcp(std::net::SocketAddr),
    /// A Unix socket path.
    Unix(std::path::PathBuf),
}

impl AdminConfig {
    /// The listener, parsed.
    pub fn listen(&self) -> Result<AdminListen, String> {
        if let Some(path) = self.listen.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path".into());
            }
            return Ok(AdminListen::Unix(path.into()));
        }
        self.listen
            .parse()
            .map(AdminListen::Tcp)
            .map_err(|_| format!("`{}` is neither ADDRESS:PORT nor unix:PATH", self.listen))
    }
}

/// An L4 service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Name, for reports.
    pub name: String,
    /// Virtual address clients connect to.
    pub vip: IpAddr,
    /// Port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: ProtocolName,
    /// The cluster that serves it.
    pub cluster: String,
    /// `nat` (replies return through weir by SNAT), `dnat` (weir is the endpoints' gateway) or
    /// `dsr` (encapsulated to the endpoint, which answers the client directly).
    #[serde(default = "default_mode")]
    pub mode: ModeName,
    /// DSR encapsulation: `ipip` (IP in IP) or `gue` (IP in UDP with a GUE header).
    #[serde(default = "default_encap")]
    pub encap: EncapName,
    /// DSR with GUE: the endpoints' UDP port.
    #[serde(default = "default_gue_port")]
    pub gue_port: u16,
}

/// DSR encapsulations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EncapName {
    /// IP in IP.
    Ipip,
    /// Generic UDP Encapsulation.
    Gue,
}

fn default_encap() -> EncapName {
    EncapName::Ipip
}
fn default_gue_port() -> u16 {
    6080
}

/// Service protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolName {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Forwarding modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    /// Full L4 proxy: DNAT to the endpoint, SNAT to weir's address facing it.
    Nat,
    /// Destination rewrite only.
    Dnat,
    /// Encapsulation to the endpoint, which answers directly.
    Dsr,
}

fn default_mode() -> ModeName {
    ModeName::Nat
}

/// A cluster.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Name services refer to.
    pub name: String,
    /// `maglev`, `round_robin`, `random` or `least_request`.
    #[serde(default = "default_policy_name")]
    pub policy: PolicyName,
    /// Maglev table size, slots (a prime); default the smallest prime at least 100 per
    /// endpoint and at least 1009.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev_table_size: Option<u32>,
    /// What happens to flows of an endpoint that is removed or unhealthy: `drain` (kept until
    /// they end) or `reset`.
    #[serde(default = "default_gone")]
    pub on_endpoint_gone: GoneName,
    /// Endpoints (none when the cluster is a `split`).
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// How long a flow's TCP handshake may take, milliseconds, before it counts as a failed
    /// connect and is forgotten; default `mesh.tcp_syn_timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Passive outlier detection for this cluster; default the `mesh.outlier_*` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierConfig>,
    /// Priorities: a priority takes the share of new flows its healthy endpoints can carry
    /// (healthy fraction × this percentage, capped at 100%), the next priority the rest.
    #[serde(
        default = "default_overprovisioning",
        skip_serializing_if = "is_default_overprovisioning"
    )]
    pub overprovisioning_percent: u32,
    /// Locality weights: when listed, new flows are split between localities by weight
    /// (scaled by each locality's healthy fraction), then between a locality's endpoints by
    /// theirs. Every endpoint names one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub localities: Vec<LocalityConfig>,
    /// A weighted split over other clusters (instead of endpoints): each takes its weight's
    /// share of new flows, whatever its health, and picks among its endpoints as it would.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<SplitConfig>,
}

/// A cluster's passive outlier detection.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Failed connects in a row that eject an endpoint; 0 turns detection off.
    pub consecutive_failures: u32,
    /// First ejection, milliseconds (doubling with each ejection).
    pub base_ejection_ms: u64,
    /// Longest ejection, milliseconds.
    pub max_ejection_ms: u64,
    /// At most this percentage of the cluster's endpoints ejected at once.
    pub max_ejection_percent: u32,
}

/// A locality's weight at a priority.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalityConfig {
    /// Name (Envoy's region/zone/sub_zone).
    pub name: String,
    /// The priority its weight is for (a locality may have endpoints at several).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
    /// Relative weight.
    pub weight: u32,
}

/// One cluster of a split.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// The cluster (one with endpoints).
    pub cluster: String,
    /// Relative weight.
    pub weight: u32,
}

fn default_overprovisioning() -> u32 {
    140
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_default_overprovisioning(v: &u32) -> bool {
    *v == default_overprovisioning()
}

/// Pick policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    /// Consistent hashing.
    Maglev,
    /// Weighted round-robin.
    RoundRobin,
    /// Weighted random.
    Random,
    /// Fewest active flows of two random choices.
    LeastRequest,
}

fn default_policy_name() -> PolicyName {
    PolicyName::Maglev
}

/// Flows of a departed endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GoneName {
    /// Keep until they end.
    Drain,
    /// End them.
    Reset,
}

fn default_gone() -> GoneName {
    GoneName::Drain
}

/// An endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Relative weight; 0 takes no new flows.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// `false` takes it out of service (its flows drain or reset as the cluster says).
    #[serde(default = "default_true")]
    pub healthy: bool,
    /// Priority, 0 the highest: lower ones take flows only as higher ones lose health.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
    /// Its locality, one of the cluster's `localities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn default_weight() -> u32 {
    1
}

/// The mesh's sizes and timeouts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// Flow table entries per worker.
    #[serde(default = "default_flows")]
    pub flows_per_worker: usize,
    /// A new flow in a full table: `drop_new`, or `evict_embryonic` (the oldest flow still in
    /// its TCP handshake makes room).
    #[serde(default = "default_when_full")]
    pub when_full: WhenFullName,
    /// First SNAT port.
    #[serde(default = "default_snat_first")]
    pub snat_port_first: u16,
    /// Last SNAT port.
    #[serde(default = "default_snat_last")]
    pub snat_port_last: u16,
    /// TCP handshake not answered, milliseconds.
    #[serde(default = "default_syn_ms")]
    pub tcp_syn_timeout_ms: u64,
    /// TCP established and idle, milliseconds.
    #[serde(default = "default_est_ms")]
    pub tcp_established_timeout_ms: u64,
    /// TCP after FIN or RST, milliseconds.
    #[serde(default = "default_closing_ms")]
    pub tcp_closing_timeout_ms: u64,
    /// UDP idle, milliseconds.
    #[serde(default = "default_udp_ms")]
    pub udp_timeout_ms: u64,
    /// Services the mesh can hold (reloads included).
    #[serde(default = "default_cap_services")]
    pub max_services: usize,
    /// Clusters the mesh can hold.
    #[serde(default = "default_cap_clusters")]
    pub max_clusters: usize,
    /// Distinct endpoints the mesh can hold.
    #[serde(default = "default_cap_endpoints")]
    pub max_endpoints: usize,
    /// Packets a worker's handoff ring holds.
    #[serde(default = "default_handoff")]
    pub handoff_ring_packets: usize,
    /// Passive outlier detection: failed connects in a row (refused, or handshake unanswered)
    /// that eject an endpoint from new flows; 0 turns it off.
    #[serde(default = "default_outlier_failures")]
    pub outlier_consecutive_failures: u32,
    /// The first ejection's length, milliseconds; the n-th lasts n times as long.
    #[serde(default = "default_outlier_base")]
    pub outlier_base_ejection_ms: u64,
    /// The longest ejection, milliseconds.
    #[serde(default = "default_outlier_max")]
    pub outlier_max_ejection_ms: u64,
    /// The most of a cluster's endpoints, percent, ejected at once (one always may be, in a
    /// cluster of two or more; never the last).
    #[serde(default = "default_outlier_percent")]
    pub outlier_max_ejection_percent: u32,
    /// A TCP segment (not a SYN) for a NAT service that belongs to no flow (weir restarted, or
    /// forgot it): `reset` answers it with a reset from the VIP, so the client fails at once
    /// instead of waiting out its timeouts; `drop` drops it (`no_flow`).
    #[serde(default = "default_unknown_segment")]
    pub unknown_segment: UnknownSegmentName,
}

/// What a TCP segment of no known flow gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSegmentName {
    /// A reset from the VIP.
    Reset,
    /// Nothing.
    Drop,
}

fn default_unknown_segment() -> UnknownSegmentName {
    UnknownSegmentName::Reset
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            flows_per_worker: default_flows(),
            when_full: default_when_full(),
            snat_port_first: default_snat_first(),
            snat_port_last: default_snat_last(),
            tcp_syn_timeout_ms: default_syn_ms(),
            tcp_established_timeout_ms: default_est_ms(),
            tcp_closing_timeout_ms: default_closing_ms(),
            udp_timeout_ms: default_udp_ms(),
            max_services: default_cap_services(),
            max_clusters: default_cap_clusters(),
            max_endpoints: default_cap_endpoints(),
            handoff_ring_packets: default_handoff(),
            outlier_consecutive_failures: default_outlier_failures(),
            outlier_base_ejection_ms: default_outlier_base(),
            outlier_max_ejection_ms: default_outlier_max(),
            outlier_max_ejection_percent: default_outlier_percent(),
            unknown_segment: default_unknown_segment(),
        }
    }
}

/// Full-table policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFullName {
    /// Refuse the new flow.
    DropNew,
    /// Evict the oldest handshake.
    EvictEmbryonic,
}

fn default_flows() -> usize {
    65536
}
fn default_when_full() -> WhenFullName {
    WhenFullName::DropNew
}
fn default_snat_first() -> u16 {
    20000
}
fn default_snat_last() -> u16 {
    59999
}
fn default_syn_ms() -> u64 {
    5_000
}
fn default_est_ms() -> u64 {
    3_600_000
}
fn default_closing_ms() -> u64 {
    10_000
}
fn default_udp_ms() -> u64 {
    30_000
}
fn default_cap_services() -> usize {
    131_072
}
fn default_cap_clusters() -> usize {
    131_072
}
fn default_cap_endpoints() -> usize {
    65_536
}
fn default_handoff() -> usize {
    4096
}
fn default_outlier_failures() -> u32 {
    5
}
fn default_outlier_base() -> u64 {
    30_000
}
fn default_outlier_max() -> u64 {
    300_000
}
fn default_outlier_percent() -> u32 {
    10
}

/// How weir starts DPDK's Environment Abstraction Layer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EalSettings {
    /// Back DPDK's memory with hugepages (`true`) or normal pages (`false`, `--no-huge`).
    /// Absent: hugepages if the system has free ones reserved, otherwise normal pages.
    pub hugepages: Option<bool>,
    /// Memory the EAL reserves, MiB (`-m`). Absent: with hugepages DPDK grows as needed;
    /// without, enough for the mempool plus 128 MiB.
    pub memory_mb: Option<u32>,
    /// Runtime file prefix, for DPDK's secondary-process tools (dpdk-proc-info, dpdk-pdump).
    /// Absent: no shared runtime files.
    pub file_prefix: Option<String>,
    /// Extra driver libraries or directories to load (`-d`), besides DPDK's own driver
    /// directory.
    #[serde(default)]
    pub driver_paths: Vec<String>,
    /// EAL log level (`--log-level`), e.g. `info` or `lib.eal:debug`. Absent: `notice`.
    pub log_level: Option<String>,
    /// Further EAL arguments, passed as they are.
    #[serde(default)]
    pub args: Vec<String>,
}

fn default_workers() -> Vec<WorkerConfig> {
    vec![WorkerConfig { core: None, idle: None }]
}

/// One worker.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// CPU core to pin to; unpinned when absent.
    pub core: Option<usize>,
    /// This worker's idle policy, overriding `idle.policy` (e.g. busy-poll the worker on the
    /// busiest queue, let the others sleep).
    pub idle: Option<IdlePolicyName>,
}

/// Idle policy.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct IdleConfig {
    /// `busy_poll` or `adaptive`.
    #[serde(default = "default_policy")]
    pub policy: IdlePolicyName,
    /// Adaptive: empty polls in a row before sleeping.
    #[serde(default = "default_empty_polls")]
    pub empty_polls: u32,
    /// Adaptive: longest sleep in `poll(2)`, milliseconds.
    #[serde(default = "default_sleep_ms")]
    pub sleep_ms: u32,
}

impl Default for IdleConfig {
    fn default() -> Self {
        IdleConfig {
            policy: default_policy(),
            empty_polls: default_empty_polls(),
            sleep_ms: default_sleep_ms(),
        }
    }
}

fn default_policy() -> IdlePolicyName {
    IdlePolicyName::Adaptive
}
fn default_empty_polls() -> u32 {
    1000
}
fn default_sleep_ms() -> u32 {
    10
}

/// Idle policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdlePolicyName {
    /// Poll without pause.
    BusyPoll,
    /// Sleep on the queue descriptors after a run of empty polls.
    Adaptive,
}

/// Buffer pool sizing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolConfig {
    /// Number of buffers, shared by all workers.
    #[serde(default = "default_buffers")]
    pub buffers: u32,
    /// Frame bytes per buffer.
    #[serde(default = "default_buffer_bytes")]
    pub buffer_bytes: u16,
    /// Headroom bytes in front of each frame (native ports; DPDK ports have DPDK's build-time
    /// `RTE_PKTMBUF_HEADROOM`, 128 bytes in Debian's build).
    #[serde(default = "default_headroom")]
    pub headroom_bytes: u16,
    /// DPDK ports: mbufs each worker keeps in its per-lcore cache.
    #[serde(default = "default_cache_buffers")]
    pub cache_buffers: u32,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            buffers: default_buffers(),
            buffer_bytes: default_buffer_bytes(),
            headroom_bytes: default_headroom(),
            cache_buffers: default_cache_buffers(),
        }
    }
}

fn default_buffers() -> u32 {
    16384
}
fn default_buffer_bytes() -> u16 {
    2048
}
fn default_headroom() -> u16 {
    128
}
fn default_cache_buffers() -> u32 {
    256
}

/// Port backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// A Linux interface through TPACKET_V3 rings.
    AfPacket,
    /// A TAP device weir creates.
    Tap,
    /// A DPDK port: a PCI NIC bound to vfio-pci/uio, or a virtual device.
    Dpdk,
}

/// One port.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Name routes and neighbors use.
    pub name: String,
    /// Backend.
    pub backend: Backend,
    /// af_packet: the interface to bind; tap: the device to create (default: the port name).
    pub interface: Option<String>,
    /// dpdk: the device, a PCI address (`0000:03:00.0`) or a virtual device
    /// (`net_af_packet0,iface=eth1,qpairs=2`), with the driver's arguments after a comma.
    pub device: Option<String>,
    /// MAC address weir uses on this port. af_packet default: the interface's; tap default: a
    /// locally administered address derived from the port index.
    #[serde(default, deserialize_with = "de_mac", serialize_with = "ser_mac_opt")]
    pub mac: Option<[u8; 6]>,
    /// Addresses with prefix length, IPv4 and IPv6.
    #[serde(default, deserialize_with = "de_nets")]
    pub addresses: Vec<IpNet>,
    /// Largest IP packet sent, bytes.
    #[serde(default = "default_mtu")]
    pub mtu_bytes: u16,
    /// af_packet ring settings.
    #[serde(default)]
    pub af_packet: AfPacketSettings,
    /// DPDK queue settings.
    #[serde(default)]
    pub dpdk: DpdkPortSettings,
}

/// DPDK port settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkPortSettings {
    /// Receive descriptors per queue (adjusted to the device's limits).
    #[serde(default = "default_descriptors")]
    pub rx_descriptors: u16,
    /// Transmit descriptors per queue (adjusted to the device's limits).
    #[serde(default = "default_descriptors")]
    pub tx_descriptors: u16,
    /// Spread flows over the workers' queues with RSS (symmetric key) when the device has it.
    #[serde(default = "default_true")]
    pub rss: bool,
    /// Receive frames for any destination MAC.
    #[serde(default = "default_true")]
    pub promiscuous: bool,
}

impl Default for DpdkPortSettings {
    fn default() -> Self {
        DpdkPortSettings {
            rx_descriptors: default_descriptors(),
            tx_descriptors: default_descriptors(),
            rss: true,
            promiscuous: true,
        }
    }
}

fn default_descriptors() -> u16 {
    1024
}

impl PortConfig {
    /// For a DPDK port: whether its device is a PCI address (else a virtual device).
    pub fn is_pci(&self) -> bool {
        self.device.as_deref().is_some_and(|d| is_pci_address(d.split(',').next().unwrap_or(d)))
    }
}

/// `DDDD:BB:DD.F` or `BB:DD.F`, hexadecimal.
pub fn is_pci_address(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit());
    let parts: Vec<&str> = s.split(':').collect();
    let (bus, devfn) = match parts.as_slice() {
        [dom, bus, devfn] if hex(dom, 4) => (*bus, *devfn),
        [bus, devfn] => (*bus, *devfn),
        _ => return false,
    };
    match devfn.split_once('.') {
        Some((dev, func)) => hex(bus, 2) && hex(dev, 2) && func.len() == 1 && hex(func, 1),
        None => false,
    }
}

fn default_mtu() -> u16 {
    1500
}

/// af_packet ring sizing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AfPacketSettings {
    /// Bytes per receive block (a multiple of the page size, power of two).
    #[serde(default = "default_block_bytes")]
    pub block_bytes: u32,
    /// Receive blocks per queue.
    #[serde(default = "default_blocks")]
    pub blocks: u32,
    /// Longest a partly filled block waits before weir sees it, milliseconds.
    #[serde(default = "default_block_timeout")]
    pub block_timeout_ms: u32,
    /// Transmit ring slots per queue.
    #[serde(default = "default_tx_frames")]
    pub tx_frames: u32,
    /// `sendmmsg` (default: one call per burst) or `ring` (mmap TX ring, one `sendto` per burst).
    #[serde(default = "default_tx_mode")]
    pub tx_mode: TxModeName,
    /// Send past the qdisc layer.
    #[serde(default = "default_true")]
    pub qdisc_bypass: bool,
    /// Put the interface in promiscuous mode.
    #[serde(default = "default_true")]
    pub promiscuous: bool,
}

impl Default for AfPacketSettings {
    fn default() -> Self {
        AfPacketSettings {
            block_bytes: default_block_bytes(),
            blocks: default_blocks(),
            block_timeout_ms: default_block_timeout(),
            tx_frames: default_tx_frames(),
            tx_mode: default_tx_mode(),
            qdisc_bypass: true,
            promiscuous: true,
        }
    }
}

fn default_block_bytes() -> u32 {
    1 << 18
}
fn default_blocks() -> u32 {
    64
}
fn default_block_timeout() -> u32 {
    1
}
fn default_tx_frames() -> u32 {
    1024
}
fn default_tx_mode() -> TxModeName {
    // Measured on the forwarding rig (BENCHMARKS.md): on veth the TX ring's zero-copy frames
    // are copied again when they cross namespaces, so one sendmmsg per burst costs less.
    TxModeName::Sendmmsg
}
fn default_true() -> bool {
    true
}

/// af_packet transmit modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxModeName {
    /// mmap TX ring, one `sendto` per burst.
    Ring,
    /// One `sendmmsg` per burst.
    Sendmmsg,
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination prefix.
    #[serde(deserialize_with = "de_net")]
    pub prefix: IpNet,
    /// Output port name.
    #[serde(deserialize_with = "de_port_ref")]
    pub port: String,
    /// Gateway address; absent for on-link.
    pub via: Option<IpAddr>,
}

/// A static neighbor.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NeighborConfig {
    /// Its address.
    pub ip: IpAddr,
    /// Port it is on.
    #[serde(deserialize_with = "de_port_ref")]
    pub port: String,
    /// Its MAC.
    #[serde(deserialize_with = "de_mac_required", serialize_with = "ser_mac")]
    pub mac: [u8; 6],
}

/// Neighbor resolution settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NeighborSettings {
    /// Neighbor entries per worker.
    #[serde(default = "default_neigh_cap")]
    pub capacity_entries: usize,
    /// Frames per worker waiting for resolution.
    #[serde(default = "default_pending")]
    pub pending_packets: usize,
    /// An entry is re-resolved after this long, milliseconds.
    #[serde(default = "default_reachable")]
    pub reachable_ms: u64,
    /// An entry is forgotten after this long, milliseconds.
    #[serde(default = "default_expire")]
    pub expire_ms: u64,
    /// A waiting frame is dropped after this long, milliseconds.
    #[serde(default = "default_resolve_timeout")]
    pub resolve_timeout_ms: u64,
    /// Interval between ARP/NS retries, milliseconds.
    #[serde(default = "default_retry")]
    pub retry_ms: u64,
    /// Inbox depth for neighbor updates from other workers, updates.
    #[serde(default = "default_inbox")]
    pub inbox_updates: usize,
}

impl Default for NeighborSettings {
    fn default() -> Self {
        NeighborSettings {
            capacity_entries: default_neigh_cap(),
            pending_packets: default_pending(),
            reachable_ms: default_reachable(),
            expire_ms: default_expire(),
            resolve_timeout_ms: default_resolve_timeout(),
            retry_ms: default_retry(),
            inbox_updates: default_inbox(),
        }
    }
}

fn default_neigh_cap() -> usize {
    4096
}
fn default_pending() -> usize {
    256
}
fn default_reachable() -> u64 {
    30_000
}
fn default_expire() -> u64 {
    300_000
}
fn default_resolve_timeout() -> u64 {
    3_000
}
fn default_retry() -> u64 {
    1_000
}
fn default_inbox() -> usize {
    256
}

/// ICMP error rate limit.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpConfig {
    /// ICMP errors per second per worker.
    #[serde(default = "default_icmp_rate")]
    pub errors_per_sec: u32,
    /// Token bucket depth, errors.
    #[serde(default = "default_icmp_burst")]
    pub burst: u32,
}

impl Default for IcmpConfig {
    fn default() -> Self {
        IcmpConfig { errors_per_sec: default_icmp_rate(), burst: default_icmp_burst() }
    }
}

fn default_icmp_rate() -> u32 {
    100
}
fn default_icmp_burst() -> u32 {
    50
}

thread_local! {
    /// Port names of the file being checked, during the second pass (see [`parse`]).
    pub(super) static PORT_NAMES: RefCell<Option<BTreeSet<String>>> = const { RefCell::new(None) };
}

fn de_port_ref<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    let known = PORT_NAMES.with(|p| p.borrow().as_ref().map(|s| s.contains(&name)));
    match known {
        Some(false) => Err(de::Error::custom(format!("no port named `{name}`"))),
        _ => Ok(name),
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn mac_text(m: &[u8; 6]) -> String {
    let hex: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}

fn ser_mac<S: Serializer>(m: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mac_text(m))
}

// serde's `serialize_with` hands the field by reference.
#[allow(clippy::ref_option)]
fn ser_mac_opt<S: Serializer>(m: &Option<[u8; 6]>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_some(&mac_text(m)),
        None => s.serialize_none(),
    }
}

fn de_mac_required<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
    let s = String::deserialize(d)?;
    parse_mac(&s)
        .ok_or_else(|| de::Error::custom(format!("`{s}` is not a MAC address (aa:bb:cc:dd:ee:ff)")))
}

fn de_mac<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 6]>, D::Error> {
    de_mac_required(d).map(Some)
}

fn de_net<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        de::Error::custom(format!(
            "`{s}` is not an address with a prefix length (198.18.0.1/24, 2001:db8::1/64)"
        ))
    })
}

fn de_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    #[derive(Deserialize, Serialize)]
    struct Net(#[serde(deserialize_with = "de_net")] IpNet);
    Ok(Vec::<Net>::deserialize(d)?.into_iter().map(|n| n.0).collect())
}

/// A configuration error: the field's path, and the message (with the line where known).
#[derive(Debug)]
pub struct ConfigError {
    /// Dotted path to the field, e.g. `routes[1].port`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}
