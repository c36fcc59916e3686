//! Envoy resources to weir's configuration: a Listener to a service, a Cluster to a cluster, a
//! ClusterLoadAssignment to a cluster's endpoints. Each is audited field by field first
//! ([`super::audit`]): a field weir does not implement that would change where traffic goes
//! refuses the resource, naming the field; the README's xDS table lists what is read and what
//! is ignored (the test `readme_lists_every_rule` keeps it true).

use super::audit::{Refusal, Rules};
use crate::config::{
    ClusterConfig, EncapName, EndpointConfig, GoneName, LocalityConfig, ModeName, OutlierConfig,
    PolicyName, ProtocolName, ServiceConfig, SplitConfig,
};
use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp_proxy;
use envoy_types::pb::envoy::extensions::filters::udp::udp_proxy::v3 as udp_proxy;
use envoy_types::pb::google::protobuf::{value::Kind, Any, Duration};
use prost::{Message, Name};
use std::net::IpAddr;
use std::time::Duration as StdDuration;

/// Type URL of a Listener.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Type URL of a Cluster.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Type URL of a ClusterLoadAssignment.
pub const LOAD_ASSIGNMENT: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// What weir reads of a Listener.
pub static LISTENER_RULES: Rules = Rules {
    message: "envoy.config.listener.v3.Listener",
    read: &[
        "name",
        "address.socket_address.address",
        "address.socket_address.port_value",
        "address.socket_address.protocol",
        "filter_chains.filters.name",
        "filter_chains.filters.typed_config",
        "listener_filters",
        "metadata.filter_metadata",
        "bind_to_port",
    ],
    ignored: &[
        ("stat_prefix", "statistics naming"),
        ("filter_chains.name", "a label"),
        ("filter_chains.metadata", "not read by the filters weir runs"),
        ("per_connection_buffer_limit_bytes", "weir forwards packets, it buffers no stream"),
        ("drain_type", "weir drains with `weir ctl drain`"),
        ("listener_filters_timeout", "the inspecting listener filters weir accepts do nothing"),
        ("continue_on_listener_filters_timeout", "as listener_filters_timeout"),
        ("traffic_direction", "a label"),
        ("access_log", "weir writes no access log at L4"),
        ("socket_options", "weir opens no socket for a service"),
        ("tcp_backlog_size", "weir opens no socket for a service"),
        ("enable_reuse_port", "weir opens no socket for a service"),
        ("connection_balance_config", "flows go to the worker whose queue RSS chose"),
        ("udp_listener_config", "socket settings; weir opens no socket for a service"),
        ("tcp_fast_open_queue_length", "weir forwards the client's SYN as it is"),
        ("freebind", "weir opens no socket for a service"),
        ("transparent", "weir opens no socket for a service"),
        ("ignore_global_conn_limit", "weir has no global connection limit"),
        ("max_connections_to_accept_per_socket_event", "weir opens no socket for a service"),
        ("enable_mptcp", "weir forwards the client's segments as they are"),
    ],
};

/// What weir reads of a TcpProxy filter.
pub static TCP_PROXY_RULES: Rules = Rules {
    message: "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    read: &["cluster", "weighted_clusters.clusters.name", "weighted_clusters.clusters.weight"],
    ignored: &[
        ("stat_prefix", "statistics naming"),
        ("access_log", "weir writes no access log at L4"),
        ("access_log_options", "weir writes no access log at L4"),
        ("idle_timeout", "weir forgets idle flows after `mesh.tcp_established_timeout_ms`"),
        ("max_connect_attempts", "weir forwards the client's SYN; the client retries"),
    ],
};

/// What weir reads of a UdpProxyConfig listener filter.
pub static UDP_PROXY_RULES: Rules = Rules {
    message: "envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig",
    read: &["cluster"],
    ignored: &[
        ("stat_prefix", "statistics naming"),
        ("idle_timeout", "weir forgets idle flows after `mesh.udp_timeout_ms`"),
        ("access_log", "weir writes no access log at L4"),
        ("proxy_access_log", "weir writes no access log at L4"),
        ("upstream_socket_config", "weir opens no socket for a service"),
    ],
};

/// What weir reads of a Cluster.
pub static CLUSTER_RULES: Rules = Rules {
    message: "envoy.config.cluster.v3.Cluster",
    read: &[
        "name",
        "type",
        "eds_cluster_config.service_name",
        "eds_cluster_config.eds_config.ads",
        "eds_cluster_config.eds_config.self",
        "eds_cluster_config.eds_config.initial_fetch_timeout",
        "connect_timeout",
        "lb_policy",
        "load_assignment",
        "maglev_lb_config.table_size",
        "least_request_lb_config.choice_count",
        "common_lb_config.healthy_panic_threshold",
        "common_lb_config.locality_weighted_lb_config",
        "outlier_detection.consecutive_5xx",
        "outlier_detection.base_ejection_time",
        "outlier_detection.max_ejection_percent",
        "outlier_detection.max_ejection_time",
        "outlier_detection.enforcing_consecutive_5xx",
        "outlier_detection.enforcing_success_rate",
        "outlier_detection.enforcing_failure_percentage",
        "circuit_breakers.thresholds.max_connections",
        "circuit_breakers.thresholds.max_pending_requests",
        "circuit_breakers.thresholds.max_requests",
        "circuit_breakers.thresholds.max_retries",
        "transport_socket",
    ],
    ignored: &[
        ("eds_cluster_config.eds_config.resource_api_version", "weir speaks v3 only"),
        ("alt_stat_name", "statistics naming"),
        ("metadata", "not read by anything weir runs"),
        ("per_connection_buffer_limit_bytes", "weir forwards packets, it buffers no stream"),
        ("typed_extension_protocol_options", "HTTP upstream settings; weir proxies L4"),
        ("http2_protocol_options", "HTTP upstream settings; weir proxies L4"),
        ("http_protocol_options", "HTTP upstream settings; weir proxies L4"),
        ("common_http_protocol_options", "HTTP upstream settings; weir proxies L4"),
        ("upstream_http_protocol_options", "HTTP upstream settings; weir proxies L4"),
        ("protocol_selection", "HTTP upstream settings; weir proxies L4"),
        ("max_requests_per_connection", "HTTP upstream settings; weir proxies L4"),
        ("dns_lookup_family", "for DNS clusters, which weir refuses"),
        ("dns_refresh_rate", "for DNS clusters, which weir refuses"),
        ("respect_dns_ttl", "for DNS clusters, which weir refuses"),
        ("cleanup_interval", "for ORIGINAL_DST clusters, which weir refuses"),
        ("upstream_connection_options", "TCP keepalive of Envoy's own upstream sockets"),
        ("track_timeout_budgets", "statistics"),
        ("track_cluster_stats", "statistics"),
        ("lrs_server", "load reports; weir sends none"),
        ("common_lb_config.update_merge_window", "weir applies each update at once"),
        ("circuit_breakers.thresholds.priority", "weir's thresholds limit nothing at any priority"),
        ("circuit_breakers.thresholds.track_remaining", "statistics"),
        ("outlier_detection.interval", "weir checks outliers every 100 ms"),
        (
            "outlier_detection.success_rate_minimum_hosts",
            "success-rate ejection is off in weir (enforcing_success_rate 0)",
        ),
        (
            "outlier_detection.success_rate_request_volume",
            "success-rate ejection is off in weir (enforcing_success_rate 0)",
        ),
        (
            "outlier_detection.success_rate_stdev_factor",
            "success-rate ejection is off in weir (enforcing_success_rate 0)",
        ),
        (
            "outlier_detection.failure_percentage_threshold",
            "failure-percentage ejection is off in weir (enforcing_failure_percentage 0)",
        ),
        (
            "outlier_detection.failure_percentage_minimum_hosts",
            "failure-percentage ejection is off in weir (enforcing_failure_percentage 0)",
        ),
        (
            "outlier_detection.failure_percentage_request_volume",
            "failure-percentage ejection is off in weir (enforcing_failure_percentage 0)",
        ),
        ("outlier_detection.consecutive_gateway_failure", "HTTP 502/503/504; weir proxies L4"),
        (
            "outlier_detection.enforcing_consecutive_gateway_failure",
            "HTTP 502/503/504; weir proxies L4",
        ),
    ],
};

/// What weir reads of a ClusterLoadAssignment (alone from EDS, or a cluster's
/// `load_assignment`).
pub static LOAD_ASSIGNMENT_RULES: Rules = Rules {
    message: "envoy.config.endpoint.v3.ClusterLoadAssignment",
    read: &[
        "cluster_name",
        "endpoints.locality",
        "endpoints.load_balancing_weight",
        "endpoints.priority",
        "endpoints.lb_endpoints.endpoint.address.socket_address.address",
        "endpoints.lb_endpoints.endpoint.address.socket_address.port_value",
        "endpoints.lb_endpoints.endpoint.address.socket_address.protocol",
        "endpoints.lb_endpoints.health_status",
        "endpoints.lb_endpoints.load_balancing_weight",
        "policy.overprovisioning_factor",
    ],
    ignored: &[
        ("endpoints.metadata", "not read by anything weir runs"),
        ("endpoints.proximity", "not used by Envoy's load balancers either"),
        ("endpoints.lb_endpoints.metadata", "not read by anything weir runs"),
        ("endpoints.lb_endpoints.endpoint.hostname", "a label"),
        ("endpoints.lb_endpoints.endpoint.health_check_config", "weir runs no active checks"),
    ],
};

/// Every rule table, for documentation and checks.
pub fn all_rules() -> [&'static Rules; 5] {
    [&LISTENER_RULES, &TCP_PROXY_RULES, &UDP_PROXY_RULES, &CLUSTER_RULES, &LOAD_ASSIGNMENT_RULES]
}

/// The README's tables of what weir reads and ignores, one per message type (a test checks
/// that the README holds exactly this).
pub fn rules_markdown() -> String {
    let mut s = String::new();
    for rules in all_rules() {
        s.push_str(&format!("`{}`\n\n| field | weir |\n|---|---|\n", rules.message));
        for p in rules.read {
            s.push_str(&format!("| `{p}` | read |\n"));
        }
        for (p, why) in rules.ignored {
            s.push_str(&format!("| `{p}` | ignored: {why} |\n"));
        }
        s.push('\n');
    }
    s
}

/// A listener as weir takes it: a service, with the clusters it splits between when its
/// tcp_proxy names weighted clusters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct XdsListener {
    /// The service; its `cluster` is the single cluster, or the split's name.
    pub service: ServiceConfig,
    /// Weighted clusters (empty for a single cluster).
    pub split: Vec<SplitConfig>,
}

/// A cluster as weir takes it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct XdsCluster {
    /// The cluster; a STATIC cluster's endpoints are in it, an EDS cluster's come apart.
    pub config: ClusterConfig,
    /// EDS: the name of the ClusterLoadAssignment it waits for.
    pub eds: Option<String>,
    /// How long an EDS cluster waits for its endpoints before it serves without, as its
    /// `eds_config` sets it (zero: as long as it takes); `None`: the bootstrap's.
    pub initial_fetch_timeout: Option<StdDuration>,
    /// Locality weights apply (`common_lb_config.locality_weighted_lb_config`).
    pub locality_weighted: bool,
}

/// A ClusterLoadAssignment as weir takes it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct XdsAssignment {
    /// Its name (the cluster's, or the EDS service name).
    pub name: String,
    /// Endpoints, with priority and locality.
    pub endpoints: Vec<EndpointConfig>,
    /// Locality weights, where set.
    pub localities: Vec<LocalityConfig>,
    /// Overprovisioning factor, percent.
    pub overprovisioning_percent: u32,
}

/// The name the split of listener `listener` is known by.
pub fn split_name(listener: &str) -> String {
    format!("{listener}/weighted")
}

/// Decodes and translates a Listener.
pub fn listener(bytes: &[u8]) -> Result<XdsListener, Refusal> {
    LISTENER_RULES.audit_bytes(bytes)?;
    let l =
        listener::Listener::decode(bytes).map_err(|e| decode_refusal::<listener::Listener>(&e))?;
    if l.bind_to_port.as_ref().is_some_and(|b| !b.value) {
        return Err(Refusal::new(
            "bind_to_port",
            "false: reached only through another listener's original_dst, which weir does not run",
        ));
    }
    let (vip, port, socket_proto) =
        socket_address(l.address.as_ref()).map_err(|r| r.under("address"))?;
    // Envoy names an unnamed (static) listener itself; Istio's convention is ADDRESS_PORT.
    let name = if l.name.is_empty() { format!("{vip}_{port}") } else { l.name.clone() };
    // What the listener runs first: that it is not L4 says more than anything else.
    let (protocol, clusters) = if socket_proto == core::socket_address::Protocol::Udp {
        if !l.filter_chains.is_empty() {
            return Err(Refusal::new(
                "filter_chains",
                "a UDP listener's proxy is a listener filter",
            ));
        }
        (ProtocolName::Udp, udp_listener_filters(&l.listener_filters)?)
    } else {
        let clusters = tcp_filter_chains(&l.filter_chains)?;
        tcp_listener_filters(&l.listener_filters)?;
        (ProtocolName::Tcp, clusters)
    };
    if vip.is_unspecified() {
        return Err(Refusal::new(
            "address.socket_address.address",
            format!(
                "{vip}: weir serves a service on its own address (a VIP), not on every address"
            ),
        ));
    }
    let (mode, encap, gue_port) =
        weir_metadata(l.metadata.as_ref()).map_err(|r| r.under("metadata"))?;
    let (cluster, split) = match clusters.as_slice() {
        [one] if one.weight == 0 => (one.cluster.clone(), Vec::new()),
        _ => (split_name(&name), clusters),
    };
    Ok(XdsListener {
        service: ServiceConfig { name, vip, port, protocol, cluster, mode, encap, gue_port },
        split,
    })
}

/// A single cluster is returned with weight 0; weighted clusters with their weights.
fn tcp_filter_chains(chains: &[listener::FilterChain]) -> Result<Vec<SplitConfig>, Refusal> {
    let [chain] = chains else {
        return Err(Refusal::new(
            "filter_chains",
            format!("{} filter chains: weir runs exactly one per listener", chains.len()),
        ));
    };
    let mut found = None;
    for (i, f) in chain.filters.iter().enumerate() {
        let at = format!("filter_chains[0].filters[{i}]");
        let type_url = f.config_type.as_ref().map(|c| match c {
            listener::filter::ConfigType::TypedConfig(any) => any.type_url.as_str(),
            listener::filter::ConfigType::ConfigDiscovery(_) => "",
        });
        match type_url {
            Some(t) if t == tcp_proxy::TcpProxy::type_url() => {
                if found.is_some() {
                    return Err(Refusal::new(at, "a second tcp_proxy"));
                }
                let Some(listener::filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    unreachable!("matched a typed config")
                };
                found = Some(tcp_proxy(any).map_err(|r| r.under(&format!("{at}.typed_config")))?);
            }
            _ if STATS_ONLY_FILTERS.contains(&f.name.as_str()) => {}
            Some(t) => {
                return Err(Refusal::new(
                    at,
                    format!(
                        "network filter `{}` ({t}): weir runs tcp_proxy only (and ignores {})",
                        f.name,
                        STATS_ONLY_FILTERS.join(", ")
                    ),
                ))
            }
            None => {
                return Err(Refusal::new(
                    at,
                    format!("network filter `{}` without a typed_config", f.name),
                ))
            }
        }
    }
    found.ok_or_else(|| Refusal::new("filter_chains[0].filters", "no tcp_proxy filter"))
}

/// Network filters that only count or label: weir ignores them.
pub const STATS_ONLY_FILTERS: &[&str] = &["istio.stats", "istio.metadata_exchange"];

/// Listener filters that only inspect a connection's first bytes for filter chain matching
/// (which weir does not do): ignored.
pub const INSPECTING_LISTENER_FILTERS: &[&str] = &[
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
    "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
];

fn tcp_listener_filters(filters: &[listener::ListenerFilter]) -> Result<(), Refusal> {
    for (i, f) in filters.iter().enumerate() {
        let type_url = match &f.config_type {
            Some(listener::listener_filter::ConfigType::TypedConfig(any)) => any.type_url.as_str(),
            _ => "",
        };
        if !INSPECTING_LISTENER_FILTERS.contains(&type_url) {
            return Err(Refusal::new(
                format!("listener_filters[{i}]"),
                format!(
                    "listener filter `{}` ({type_url}) changes what the listener takes",
                    f.name
                ),
            ));
        }
    }
    Ok(())
}

fn udp_listener_filters(filters: &[listener::ListenerFilter]) -> Result<Vec<SplitConfig>, Refusal> {
    let [f] = filters else {
        return Err(Refusal::new(
            "listener_filters",
            format!(
                "{} listener filters: a UDP service takes exactly one, udp_proxy",
                filters.len()
            ),
        ));
    };
    match &f.config_type {
        Some(listener::listener_filter::ConfigType::TypedConfig(any))
            if any.type_url == udp_proxy::UdpProxyConfig::type_url() =>
        {
            let at = "listener_filters[0].typed_config";
            UDP_PROXY_RULES.audit_bytes(&any.value).map_err(|r| r.under(at))?;
            let u = udp_proxy::UdpProxyConfig::decode(any.value.as_slice())
                .map_err(|e| decode_refusal::<udp_proxy::UdpProxyConfig>(&e).under(at))?;
            match u.route_specifier {
                #[allow(deprecated)]
                Some(udp_proxy::udp_proxy_config::RouteSpecifier::Cluster(c)) if !c.is_empty() => {
                    Ok(vec![SplitConfig { cluster: c, weight: 0 }])
                }
                _ => Err(Refusal::new(format!("{at}.cluster"), "udp_proxy needs a cluster")),
            }
        }
        _ => Err(Refusal::new(
            "listener_filters[0]",
            format!("listener filter `{}`: a UDP service's filter is udp_proxy", f.name),
        )),
    }
}

fn tcp_proxy(any: &Any) -> Result<Vec<SplitConfig>, Refusal> {
    TCP_PROXY_RULES.audit_bytes(&any.value)?;
    let t = tcp_proxy::TcpProxy::decode(any.value.as_slice())
        .map_err(|e| decode_refusal::<tcp_proxy::TcpProxy>(&e))?;
    match t.cluster_specifier {
        Some(tcp_proxy::tcp_proxy::ClusterSpecifier::Cluster(c)) if !c.is_empty() => {
            Ok(vec![SplitConfig { cluster: c, weight: 0 }])
        }
        Some(tcp_proxy::tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
            if w.clusters.is_empty() {
                return Err(Refusal::new("weighted_clusters.clusters", "empty"));
            }
            let mut out: Vec<SplitConfig> = Vec::with_capacity(w.clusters.len());
            for (i, c) in w.clusters.iter().enumerate() {
                if c.name.is_empty() || out.iter().any(|o| o.cluster == c.name) {
                    return Err(Refusal::new(
                        format!("weighted_clusters.clusters[{i}].name"),
                        format!("`{}`: empty or listed twice", c.name),
                    ));
                }
                if c.weight == 0 {
                    continue; // takes no traffic, as in Envoy
                }
                out.push(SplitConfig { cluster: c.name.clone(), weight: c.weight });
            }
            if out.is_empty() {
                return Err(Refusal::new("weighted_clusters.clusters", "every weight is 0"));
            }
            Ok(out)
        }
        _ => Err(Refusal::new("cluster", "tcp_proxy needs a cluster or weighted_clusters")),
    }
}

/// weir's own settings of a listener: `metadata.filter_metadata.weir` with `mode` (nat, dnat,
/// dsr), `encap` (ipip, gue) and `gue_port`.
fn weir_metadata(m: Option<&core::Metadata>) -> Result<(ModeName, EncapName, u16), Refusal> {
    let mut out = (ModeName::Nat, EncapName::Ipip, 6080u16);
    let Some(weir) = m.and_then(|m| m.filter_metadata.get("weir")) else { return Ok(out) };
    for (key, value) in &weir.fields {
        let at = format!("filter_metadata.weir.{key}");
        let text = match &value.kind {
            Some(Kind::StringValue(s)) => Some(s.as_str()),
            _ => None,
        };
        match (key.as_str(), text) {
            ("mode", Some("nat")) => out.0 = ModeName::Nat,
            ("mode", Some("dnat")) => out.0 = ModeName::Dnat,
            ("mode", Some("dsr")) => out.0 = ModeName::Dsr,
            ("mode", _) => return Err(Refusal::new(at, "nat, dnat or dsr")),
            ("encap", Some("ipip")) => out.1 = EncapName::Ipip,
            ("encap", Some("gue")) => out.1 = EncapName::Gue,
            ("encap", _) => return Err(Refusal::new(at, "ipip or gue")),
            ("gue_port", _) => {
                out.2 = match &value.kind {
                    Some(Kind::NumberValue(n))
                        if n.fract() == 0.0 && (1.0..=65535.0).contains(n) =>
                    {
                        // In range and whole: checked above.
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let p = *n as u16;
                        p
                    }
                    _ => return Err(Refusal::new(at, "a port number, 1 to 65535")),
                }
            }
            _ => return Err(Refusal::new(at, "weir knows mode, encap and gue_port")),
        }
    }
    Ok(out)
}

fn socket_address(
    a: Option<&core::Address>,
) -> Result<(IpAddr, u16, core::socket_address::Protocol), Refusal> {
    let Some(core::Address { address: Some(core::address::Address::SocketAddress(s)) }) = a else {
        return Err(Refusal::new("socket_address", "an IP address and port are needed"));
    };
    let ip: IpAddr = s.address.parse().map_err(|_| {
        Refusal::new(
            "socket_address.address",
            format!("`{}` is not an IP address (weir resolves no names)", s.address),
        )
    })?;
    let port = match s.port_specifier {
        Some(core::socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| Refusal::new("socket_address.port_value", format!("{p}: not a port")))?,
        _ => return Err(Refusal::new("socket_address.port_value", "a port is needed")),
    };
    let proto = core::socket_address::Protocol::try_from(s.protocol)
        .map_err(|_| Refusal::new("socket_address.protocol", format!("{}: unknown", s.protocol)))?;
    Ok((ip, port, proto))
}

/// Decodes and translates a Cluster.
pub fn cluster(bytes: &[u8]) -> Result<XdsCluster, Refusal> {
    CLUSTER_RULES.audit_bytes(bytes)?;
    let c = cluster::Cluster::decode(bytes).map_err(|e| decode_refusal::<cluster::Cluster>(&e))?;
    if c.name.is_empty() {
        return Err(Refusal::new("name", "a cluster needs a name"));
    }
    use cluster::cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy};
    let kind = match c.cluster_discovery_type {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => {
            DiscoveryType::try_from(t).map_err(|_| Refusal::new("type", format!("{t}: unknown")))?
        }
        Some(ClusterDiscoveryType::ClusterType(ref t)) => {
            return Err(Refusal::new(
                "cluster_type",
                format!("custom cluster type `{}`: weir takes STATIC and EDS", t.name),
            ))
        }
    };
    let policy = match LbPolicy::try_from(c.lb_policy) {
        Ok(LbPolicy::RoundRobin) => PolicyName::RoundRobin,
        Ok(LbPolicy::LeastRequest) => PolicyName::LeastRequest,
        Ok(LbPolicy::Random) => PolicyName::Random,
        Ok(LbPolicy::Maglev) => PolicyName::Maglev,
        other => {
            return Err(Refusal::new(
                "lb_policy",
                format!(
                    "{}: weir picks by ROUND_ROBIN, LEAST_REQUEST, RANDOM or MAGLEV",
                    other.map_or_else(|_| c.lb_policy.to_string(), |p| p.as_str_name().to_owned())
                ),
            ))
        }
    };
    let mut maglev_table_size = None;
    match &c.lb_config {
        None => {}
        Some(cluster::cluster::LbConfig::LeastRequestLbConfig(lr))
            if lr.choice_count.as_ref().is_some_and(|n| n.value != 2) =>
        {
            return Err(Refusal::new(
                "least_request_lb_config.choice_count",
                "weir's least request compares two random choices",
            ));
        }
        Some(cluster::cluster::LbConfig::LeastRequestLbConfig(_)) => {}
        Some(cluster::cluster::LbConfig::MaglevLbConfig(m)) => {
            maglev_table_size =
                m.table_size.as_ref().map(|n| u32::try_from(n.value).unwrap_or(u32::MAX));
        }
        // The audit refused every other lb_config.
        Some(_) => return Err(Refusal::new("lb_config", "not one weir reads")),
    }
    let mut locality_weighted = false;
    if let Some(common) = &c.common_lb_config {
        if common.healthy_panic_threshold.as_ref().is_some_and(|p| p.value != 0.0) {
            return Err(Refusal::new(
                "common_lb_config.healthy_panic_threshold",
                "weir has no panic mode (it never sends new flows to unhealthy endpoints): only 0",
            ));
        }
        locality_weighted = matches!(
            common.locality_config_specifier,
            Some(cluster::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
        );
    }
    if let Some(ts) = &c.transport_socket {
        let raw = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
        let t = match &ts.config_type {
            Some(core::transport_socket::ConfigType::TypedConfig(any)) => any.type_url.as_str(),
            None => "",
        };
        if t != raw && !(t.is_empty() && ts.name == "envoy.transport_sockets.raw_buffer") {
            return Err(Refusal::new(
                "transport_socket",
                format!("`{}` {t}: weir forwards the client's bytes as they are", ts.name),
            ));
        }
    }
    if let Some(cb) = &c.circuit_breakers {
        circuit_breakers(cb).map_err(|r| r.under("circuit_breakers"))?;
    }
    let outlier = match &c.outlier_detection {
        Some(o) => Some(outlier(o).map_err(|r| r.under("outlier_detection"))?),
        // No outlier_detection: Envoy ejects nothing.
        None => Some(OutlierConfig {
            consecutive_failures: 0,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 10,
        }),
    };
    let connect_timeout_ms = Some(c.connect_timeout.as_ref().map_or(5000, millis));
    let mut config = ClusterConfig {
        name: c.name.clone(),
        policy,
        maglev_table_size,
        on_endpoint_gone: GoneName::Drain,
        endpoints: Vec::new(),
        connect_timeout_ms,
        outlier,
        overprovisioning_percent: 140,
        localities: Vec::new(),
        split: Vec::new(),
    };
    let mut eds = None;
    let mut initial_fetch_timeout = None;
    match kind {
        DiscoveryType::Static => {
            let Some(la) = &c.load_assignment else {
                return Err(Refusal::new(
                    "load_assignment",
                    "a STATIC cluster lists its endpoints",
                ));
            };
            let a = translate_assignment(la, &c.name).map_err(|r| r.under("load_assignment"))?;
            apply_assignment(&mut config, &a, locality_weighted);
        }
        DiscoveryType::Eds => {
            if c.load_assignment.is_some() {
                return Err(Refusal::new(
                    "load_assignment",
                    "an EDS cluster's endpoints come from EDS",
                ));
            }
            let e = c.eds_cluster_config.clone().unwrap_or_default();
            if let Some(src) = &e.eds_config {
                use core::config_source::ConfigSourceSpecifier as S;
                match src.config_source_specifier {
                    None | Some(S::Ads(_) | S::Self_(_)) => {}
                    Some(_) => {
                        return Err(Refusal::new(
                            "eds_cluster_config.eds_config",
                            "weir takes endpoints over ADS only",
                        ))
                    }
                }
                if let Some(t) = &src.initial_fetch_timeout {
                    // 0 waits as long as it takes, as in Envoy.
                    initial_fetch_timeout = Some(StdDuration::from_millis(millis(t)));
                }
            }
            eds = Some(if e.service_name.is_empty() { c.name.clone() } else { e.service_name });
        }
        other => {
            return Err(Refusal::new(
                "type",
                format!("{}: weir takes STATIC and EDS clusters", other.as_str_name()),
            ))
        }
    }
    Ok(XdsCluster { config, eds, initial_fetch_timeout, locality_weighted })
}

/// Puts an assignment's endpoints (and, for a locality-weighted cluster, the locality
/// weights) into a cluster.
pub fn apply_assignment(c: &mut ClusterConfig, a: &XdsAssignment, locality_weighted: bool) {
    c.endpoints.clone_from(&a.endpoints);
    c.overprovisioning_percent = a.overprovisioning_percent;
    if locality_weighted {
        c.localities.clone_from(&a.localities);
    } else {
        c.localities.clear();
        for e in &mut c.endpoints {
            e.locality = None;
        }
    }
}

fn circuit_breakers(cb: &cluster::CircuitBreakers) -> Result<(), Refusal> {
    // Thresholds at their maximum limit nothing (Istio sends them so by default).
    for (i, t) in cb.thresholds.iter().enumerate() {
        for (name, v) in [
            ("max_connections", &t.max_connections),
            ("max_pending_requests", &t.max_pending_requests),
            ("max_requests", &t.max_requests),
            ("max_retries", &t.max_retries),
        ] {
            if v.as_ref().is_some_and(|v| v.value != u32::MAX) {
                return Err(Refusal::new(
                    format!("thresholds[{i}].{name}"),
                    "weir does not break circuits at L4: only 4294967295 (no limit)",
                ));
            }
        }
    }
    Ok(())
}

fn outlier(o: &cluster::OutlierDetection) -> Result<OutlierConfig, Refusal> {
    for (name, v) in [
        ("enforcing_success_rate", &o.enforcing_success_rate),
        ("enforcing_failure_percentage", &o.enforcing_failure_percentage),
    ] {
        if v.as_ref().is_some_and(|v| v.value != 0) {
            return Err(Refusal::new(name, "weir ejects on failed connects in a row only: only 0"));
        }
    }
    let enforcing = o.enforcing_consecutive_5xx.as_ref().map_or(100, |v| v.value);
    if enforcing != 100 && enforcing != 0 {
        return Err(Refusal::new(
            "enforcing_consecutive_5xx",
            "weir ejects every endpoint that qualifies or none: 100 or 0",
        ));
    }
    let consecutive = o.consecutive_5xx.as_ref().map_or(5, |v| v.value);
    Ok(OutlierConfig {
        consecutive_failures: if enforcing == 0 { 0 } else { consecutive },
        base_ejection_ms: o.base_ejection_time.as_ref().map_or(30_000, millis),
        max_ejection_ms: o.max_ejection_time.as_ref().map_or(300_000, millis),
        max_ejection_percent: o.max_ejection_percent.as_ref().map_or(10, |v| v.value.min(100)),
    })
}

/// Decodes and translates a ClusterLoadAssignment.
pub fn load_assignment(bytes: &[u8]) -> Result<XdsAssignment, Refusal> {
    LOAD_ASSIGNMENT_RULES.audit_bytes(bytes)?;
    let a = endpoint::ClusterLoadAssignment::decode(bytes)
        .map_err(|e| decode_refusal::<endpoint::ClusterLoadAssignment>(&e))?;
    if a.cluster_name.is_empty() {
        return Err(Refusal::new("cluster_name", "a load assignment names its cluster"));
    }
    let name = a.cluster_name.clone();
    translate_assignment(&a, &name)
}

fn translate_assignment(
    a: &endpoint::ClusterLoadAssignment,
    name: &str,
) -> Result<XdsAssignment, Refusal> {
    // A cluster's own load_assignment is audited here; from EDS it already was (twice is
    // cheap next to a wrong answer).
    LOAD_ASSIGNMENT_RULES.audit_bytes(&a.encode_to_vec())?;
    let mut endpoints = Vec::new();
    let mut localities: Vec<LocalityConfig> = Vec::new();
    for (li, group) in a.endpoints.iter().enumerate() {
        let at = format!("endpoints[{li}]");
        // region/zone/sub_zone, without empty parts at the end.
        let locality = group.locality.as_ref().map_or_else(String::new, |l| {
            let parts = [l.region.as_str(), l.zone.as_str(), l.sub_zone.as_str()];
            let used = parts.iter().rposition(|p| !p.is_empty()).map_or(0, |i| i + 1);
            parts[..used].join("/")
        });
        let weight = group.load_balancing_weight.as_ref().map_or(0, |w| w.value);
        // Envoy weighs a locality within its priority: the same one may come again at another.
        let same = |l: &&LocalityConfig| l.name == locality && l.priority == group.priority;
        match localities.iter().find(same) {
            Some(l) if l.weight != weight => {
                return Err(Refusal::new(
                    format!("{at}.load_balancing_weight"),
                    format!(
                        "locality `{locality}` is listed again at priority {} with another weight",
                        group.priority
                    ),
                ))
            }
            Some(_) => {}
            None => localities.push(LocalityConfig {
                name: locality.clone(),
                priority: group.priority,
                weight,
            }),
        }
        for (ei, lb) in group.lb_endpoints.iter().enumerate() {
            let at = format!("{at}.lb_endpoints[{ei}]");
            let Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(e)) = &lb.host_identifier
            else {
                return Err(Refusal::new(at, "an endpoint by name: weir takes addresses"));
            };
            let (address, port, _) = socket_address(e.address.as_ref())
                .map_err(|r| r.under(&format!("{at}.endpoint.address")))?;
            if endpoints.iter().any(|x: &EndpointConfig| x.address == address && x.port == port) {
                // Envoy keeps the first.
                continue;
            }
            use core::HealthStatus as H;
            // DEGRADED: Envoy sends new flows there only when healthy endpoints fall short;
            // weir never does.
            let healthy = match H::try_from(lb.health_status) {
                Ok(H::Unknown | H::Healthy) => true,
                Ok(H::Unhealthy | H::Draining | H::Timeout | H::Degraded) => false,
                Err(_) => {
                    return Err(Refusal::new(
                        format!("{at}.health_status"),
                        format!("{}: unknown", lb.health_status),
                    ))
                }
            };
            let weight = lb.load_balancing_weight.as_ref().map_or(1, |w| w.value);
            if weight == 0 {
                return Err(Refusal::new(
                    format!("{at}.load_balancing_weight"),
                    "0: Envoy's API takes 1 or more",
                ));
            }
            endpoints.push(EndpointConfig {
                address,
                port,
                weight,
                healthy,
                priority: group.priority,
                locality: Some(locality.clone()),
            });
        }
    }
    let overprovisioning_percent =
        a.policy.as_ref().and_then(|p| p.overprovisioning_factor.as_ref()).map_or(140, |v| v.value);
    Ok(XdsAssignment { name: name.to_owned(), endpoints, localities, overprovisioning_percent })
}

fn millis(d: &Duration) -> u64 {
    let secs = u64::try_from(d.seconds).unwrap_or(0);
    let nanos = u64::try_from(d.nanos).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

fn decode_refusal<T: Name>(e: &prost::DecodeError) -> Refusal {
    Refusal::new("", format!("not a valid {}: {e}", T::full_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_names_a_field_of_its_message() {
        for rules in all_rules() {
            let root = rules.descriptor();
            for path in rules.paths() {
                let mut msg = root.clone();
                let parts: Vec<&str> = path.split('.').collect();
                for (i, part) in parts.iter().enumerate() {
                    let field = msg.get_field_by_name(part).unwrap_or_else(|| {
                        panic!(
                            "{}: `{path}`: no field `{part}` in {}",
                            rules.message,
                            msg.full_name()
                        )
                    });
                    if i + 1 < parts.len() {
                        msg = field.kind().as_message().cloned().unwrap_or_else(|| {
                            panic!("{}: `{path}`: `{part}` is not a message", rules.message)
                        });
                    }
                }
            }
        }
    }
}
