//! The YAML configuration: ports, routes, static neighbors, workers, and every capacity with its
//! unit. Unknown fields are errors; every error names the field by path and, where the YAML
//! parser knows it, the line.
//!
//! [`schema`] says what the file may hold; this module reads it ([`load`], [`parse`]) and checks
//! what a schema cannot: ranges, references, addresses, memory, and that the mesh builds.

pub mod schema;
pub use schema::*;

use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Largest configuration file weir reads, bytes (a mesh of 100 000 services takes about 20).
pub const MAX_CONFIG_BYTES: usize = 64 << 20;

/// Most scalar bytes a file may amount to with every alias expanded: what a parse can hold at
/// once before it refuses an alias bomb (a mesh of 100 000 services holds about 8 MB).
pub const MAX_SCALAR_BYTES: usize = 32 << 20;

/// Deepest nesting of YAML collections accepted (weir's own schema needs 4).
pub const MAX_CONFIG_DEPTH: usize = 16;

/// The YAML parser's limits: nesting, document count, anchors and aliases, nodes, and the
/// scalar bytes the document amounts to with every alias expanded. A file past any of them
/// is refused as soon as the parser gets there, so neither an alias bomb nor deep nesting
/// can make a parse grow or last.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_CONFIG_DEPTH,
            flow_nesting_limit: MAX_CONFIG_DEPTH,
            max_documents: 1,
            max_anchors: 4096,
            max_aliases: 16_384,
            max_nodes: 8_000_000,
            max_events: 16_000_000,
            max_total_scalar_bytes: MAX_SCALAR_BYTES,
            enforce_alias_anchor_ratio: false,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 1_000_000,
            max_alias_expansions_per_anchor: 16_384,
        },
        with_snippet: false,
    }
}

fn deserialize(text: &str) -> Result<Config, ConfigError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(err("", format!("the file is larger than {MAX_CONFIG_BYTES} bytes")));
    }
    let mut path = String::new();
    serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(), |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| ConfigError { path, message: e.to_string() })
}

/// Reads and checks the configuration file at `path`, refusing a file larger than
/// [`MAX_CONFIG_BYTES`] before reading it whole.
pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    use anyhow::Context;
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Parses and validates a configuration.
///
/// Two passes: the first learns the port names, the second rejects references to unknown ones
/// at the place they occur, so that error carries its line like any other.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let first = deserialize(text)?;
    let names: BTreeSet<String> = first.ports.iter().map(|p| p.name.clone()).collect();
    PORT_NAMES.with(|p| *p.borrow_mut() = Some(names));
    let second = deserialize(text);
    PORT_NAMES.with(|p| *p.borrow_mut() = None);
    let cfg = second?;
    validate(&cfg).map_err(|mut e| {
        // A value that parsed but does not make sense: where it is in the file.
        if let Some((line, column)) = location_of(text, &e.path) {
            e.message = format!("{} at line {line}, column {column}", e.message);
        }
        e
    })?;
    Ok(cfg)
}

/// One step of a field's path: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `services[2].endpoints[0].port` as steps.
fn steps(path: &str) -> Vec<Step> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
            out.push(Step::Key(key.to_owned()));
        }
        for index in pieces {
            match index.trim_end_matches(']').parse() {
                Ok(i) => out.push(Step::Index(i)),
                Err(_) => return Vec::new(),
            }
        }
    }
    out
}

/// Where the field at `path` is in the YAML `text`: the line and column (both from 1) of its
/// key, or of the item for an index. `None` if the path is not in the file (a default) or the
/// text does not parse.
fn location_of(text: &str, path: &str) -> Option<(usize, usize)> {
    use granit_parser::{Event, Parser};
    let target = steps(path);
    if target.is_empty() {
        return None;
    }
    /// An open collection: its path, and where it is in its children.
    struct Open {
        path: Vec<Step>,
        mapping: bool,
        next_index: usize,
        key: Option<String>,
    }
    let mut open: Vec<Open> = Vec::new();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.ok()?;
        let at = (span.start.line(), span.start.col() + 1);
        let starts = match &event {
            Event::Scalar(..) | Event::Alias(_) => None,
            Event::MappingStart(..) => Some(true),
            Event::SequenceStart(..) => Some(false),
            Event::MappingEnd | Event::SequenceEnd => {
                open.pop();
                continue;
            }
            _ => continue,
        };
        let mut node = Vec::new();
        if let Some(top) = open.last_mut() {
            node.clone_from(&top.path);
            if top.mapping {
                match top.key.take() {
                    None => {
                        // A key: weir's keys are scalars; anything else is no field of its.
                        let Event::Scalar(key, ..) = &event else { return None };
                        node.push(Step::Key(key.to_string()));
                        if node == target {
                            return Some(at);
                        }
                        top.key = Some(key.to_string());
                        continue;
                    }
                    Some(key) => node.push(Step::Key(key)),
                }
            } else {
                node.push(Step::Index(top.next_index));
                top.next_index += 1;
                if node == target {
                    return Some(at);
                }
            }
        }
        if let Some(mapping) = starts {
            open.push(Open { path: node, mapping, next_index: 0, key: None });
        }
    }
    None
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { path: path.into(), message: message.into() }
}

/// Checks a configuration (as [`parse`] does after reading it).
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.ports.is_empty() {
        return Err(err("ports", "at least one port is required"));
    }
    if cfg.ports.len() > 64 {
        return Err(err("ports", "at most 64 ports"));
    }
    if cfg.workers.is_empty() {
        return Err(err("workers", "at least one worker is required"));
    }
    // The cores this process may run on (its affinity mask), not all the machine's.
    let allowed: Option<Vec<usize>> =
        core_affinity::get_core_ids().map(|ids| ids.into_iter().map(|c| c.id).collect());
    for (i, w) in cfg.workers.iter().enumerate() {
        if let (Some(c), Some(allowed)) = (w.core, allowed.as_ref()) {
            if !allowed.contains(&c) {
                return Err(err(
                    format!("workers[{i}].core"),
                    format!("core {c} is not available to weir (allowed: {allowed:?})"),
                ));
            }
        }
    }
    if let Some(admin) = &cfg.admin {
        match admin.listen() {
            Err(e) => return Err(err("admin.listen", e)),
            Ok(AdminListen::Tcp(a)) if !a.ip().is_loopback() && admin.token_file.is_none() => {
                return Err(err(
                    "admin.token_file",
                    format!(
                        "required when admin.listen ({a}) is not a loopback address: anyone who \
                         reaches it could reload or drain weir"
                    ),
                ))
            }
            Ok(_) => {}
        }
    }
    let dpdk = cfg.ports[0].backend == Backend::Dpdk;
    let mut seen = BTreeSet::new();
    let mut devices = BTreeSet::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        if (p.backend == Backend::Dpdk) != dpdk {
            return Err(err(
                format!("ports[{i}].backend"),
                "DPDK ports and native ports (af_packet, tap) cannot be mixed: their packet \
                 buffers differ",
            ));
        }
        match (p.backend, &p.device, &p.interface) {
            (Backend::Dpdk, None, _) => {
                return Err(err(
                    format!("ports[{i}].device"),
                    "required for backend dpdk: a PCI address (0000:03:00.0) or a virtual device \
                     (net_af_packet0,iface=eth1)",
                ))
            }
            (Backend::Dpdk, _, Some(_)) => {
                return Err(err(
                    format!("ports[{i}].interface"),
                    "backend dpdk takes `device` (with `iface=` in a vdev's arguments)",
                ))
            }
            (Backend::Dpdk, Some(d), None) => {
                let name = d.split(',').next().unwrap_or(d);
                if name.is_empty() || !devices.insert(name.to_owned()) {
                    return Err(err(
                        format!("ports[{i}].device"),
                        format!("`{name}` is empty or used by another port"),
                    ));
                }
            }
            (_, Some(_), _) => {
                return Err(err(format!("ports[{i}].device"), "only for backend dpdk"));
            }
            _ => {}
        }
        if p.backend == Backend::Dpdk && (p.dpdk.rx_descriptors == 0 || p.dpdk.tx_descriptors == 0)
        {
            return Err(err(format!("ports[{i}].dpdk"), "descriptor counts must be positive"));
        }
        if !seen.insert(&p.name) {
            return Err(err(
                format!("ports[{i}].name"),
                format!("duplicate port name `{}`", p.name),
            ));
        }
        if !(576..=9000).contains(&p.mtu_bytes) {
            return Err(err(format!("ports[{i}].mtu_bytes"), "must be between 576 and 9000"));
        }
        if usize::from(p.mtu_bytes) + 18 > usize::from(cfg.mempool.buffer_bytes) {
            return Err(err(
                format!("ports[{i}].mtu_bytes"),
                format!(
                    "a frame of this MTU does not fit mempool.buffer_bytes ({})",
                    cfg.mempool.buffer_bytes
                ),
            ));
        }
        let a = &p.af_packet;
        if p.backend == Backend::AfPacket
            && (!a.block_bytes.is_power_of_two() || a.block_bytes < 4096)
        {
            return Err(err(
                format!("ports[{i}].af_packet.block_bytes"),
                "must be a power of two of at least 4096",
            ));
        }
        if let Some(mac) = p.mac {
            if mac[0] & 1 != 0 {
                return Err(err(format!("ports[{i}].mac"), "must be a unicast address"));
            }
        }
    }
    if dpdk {
        // RTE_MEMPOOL_CACHE_MAX_SIZE, and DPDK's rule that a cache is at most 1/1.5 of the pool.
        if cfg.mempool.cache_buffers > 512
            || u64::from(cfg.mempool.cache_buffers) * 3 > u64::from(cfg.mempool.buffers) * 2
        {
            return Err(err(
                "mempool.cache_buffers",
                "at most 512, and at most two thirds of mempool.buffers",
            ));
        }
        // Every descriptor of every queue may hold an mbuf, and every worker's cache some more:
        // a pool smaller than that runs dry with nothing wrong.
        let workers = cfg.workers.len() as u64;
        let rings: u64 = cfg
            .ports
            .iter()
            .map(|p| u64::from(p.dpdk.rx_descriptors) + u64::from(p.dpdk.tx_descriptors))
            .sum::<u64>()
            * workers;
        let need = rings + workers * (u64::from(cfg.mempool.cache_buffers) + 256);
        if u64::from(cfg.mempool.buffers) < need {
            return Err(err(
                "mempool.buffers",
                format!(
                    "{} is too few for these DPDK ports: their queues' descriptors and the \
                     workers' caches hold up to {need} mbufs",
                    cfg.mempool.buffers
                ),
            ));
        }
    }
    let m = &cfg.mesh;
    if m.flows_per_worker == 0 || m.flows_per_worker > 1 << 29 {
        return Err(err("mesh.flows_per_worker", "between 1 and 536870912"));
    }
    if m.snat_port_first == 0 || m.snat_port_first > m.snat_port_last {
        return Err(err("mesh.snat_port_first", "a port range first..=last, first above 0"));
    }
    if m.max_endpoints == 0 || m.max_endpoints > 1 << 20 || m.max_clusters == 0 {
        return Err(err("mesh", "max_endpoints (1..=1048576) and max_clusters must be positive"));
    }
    check_ranges(cfg)?;
    validate_mesh_fields(cfg)?;
    if let Err(e) = crate::translate::mesh_snapshot(cfg, None) {
        return Err(err(e.path, e.message));
    }
    check_memory(cfg, crate::footprint::available())
}

/// The services and clusters of a configuration whose other parts were validated: every check
/// of [`validate`] on them but building the mesh, which applying them does anyway.
pub fn validate_mesh_fields(cfg: &Config) -> Result<(), ConfigError> {
    check_addresses(cfg)?;
    // Services are known by name in the logs, `/services` and `/metrics`.
    let mut names = BTreeSet::new();
    for (i, s) in cfg.services.iter().enumerate() {
        if !names.insert(s.name.as_str()) {
            return Err(err(
                format!("services[{i}].name"),
                format!("another service is named `{}`", s.name),
            ));
        }
    }
    Ok(())
}

/// Upper bounds of what a configuration may ask for. Each is far beyond any real deployment
/// and below what would make the arithmetic overflow or a start-up allocation absurd; what the
/// machine can actually hold is checked against its memory as a whole ([`check_memory`]).
pub mod limits {
    /// Worker threads (DPDK's default `RTE_MAX_LCORE` is 128).
    pub const WORKERS: usize = 128;
    /// Packet buffers in the pool.
    pub const BUFFERS: u32 = 1 << 24;
    /// Headroom bytes per buffer.
    pub const HEADROOM_BYTES: u16 = 4096;
    /// Neighbor entries per worker.
    pub const NEIGHBOR_ENTRIES: usize = 1 << 20;
    /// Frames per worker waiting for neighbor resolution, and inbox updates per worker.
    pub const NEIGHBOR_QUEUE: usize = 1 << 16;
    /// Packets in a worker's handoff ring.
    pub const HANDOFF_PACKETS: usize = 1 << 20;
    /// Services and clusters the mesh can hold.
    pub const MESH_OBJECTS: usize = 1 << 20;
    /// af_packet receive block size, bytes.
    pub const BLOCK_BYTES: u32 = 1 << 30;
    /// af_packet receive blocks and transmit slots per queue.
    pub const RING_ENTRIES: u32 = 1 << 16;
    /// DPDK descriptors per queue.
    pub const DESCRIPTORS: u16 = 1 << 15;
    /// ICMP errors per second, and the bucket's depth.
    pub const ICMP_RATE: u32 = 1_000_000;
    /// Longest drain, ms (an hour).
    pub const DRAIN_MS: u64 = 3_600_000;
    /// Longest idle sleep, ms: a stop request or housekeeping waits at most this long.
    pub const SLEEP_MS: u32 = 1000;
    /// Longest af_packet block timeout, ms.
    pub const BLOCK_TIMEOUT_MS: u32 = 1000;
    /// Longest neighbor lifetime, ms (a day).
    pub const NEIGHBOR_EXPIRE_MS: u64 = 86_400_000;
    /// Longest neighbor reachable time, ms (an hour).
    pub const NEIGHBOR_REACHABLE_MS: u64 = 3_600_000;
    /// Longest resolution timeout and retry interval, ms.
    pub const RESOLVE_MS: u64 = 60_000;
    /// Longest TCP handshake and closing timeouts, ms (ten minutes).
    pub const TCP_SHORT_MS: u64 = 600_000;
    /// Longest idle timeout of an established TCP flow, ms (a week).
    pub const TCP_ESTABLISHED_MS: u64 = 604_800_000;
    /// Longest UDP idle timeout and outlier ejection, ms (a day).
    pub const LONG_MS: u64 = 86_400_000;
}

/// `value` within `lo..=hi`, or an error naming `path` and the bounds with `unit`.
fn within<T: PartialOrd + std::fmt::Display>(
    path: &str,
    value: T,
    lo: T,
    hi: T,
    unit: &str,
) -> Result<(), ConfigError> {
    if value < lo || value > hi {
        return Err(err(path, format!("{value} is out of range: {lo} to {hi} {unit}")));
    }
    Ok(())
}

fn check_ranges(cfg: &Config) -> Result<(), ConfigError> {
    use limits as l;
    within("workers", cfg.workers.len(), 1, l::WORKERS, "workers")?;
    let m = &cfg.mempool;
    within("mempool.buffers", m.buffers, 64, l::BUFFERS, "buffers")?;
    within("mempool.headroom_bytes", m.headroom_bytes, 0, l::HEADROOM_BYTES, "bytes")?;
    within("drain_timeout_ms", cfg.drain_timeout_ms, 0, l::DRAIN_MS, "ms")?;
    if let Some(h) = &cfg.handover {
        within("handover.timeout_ms", h.timeout_ms, 100, l::RESOLVE_MS * 10, "ms")?;
        if h.socket.as_os_str().is_empty() {
            return Err(err("handover.socket", "a Unix socket path: must not be empty"));
        }
    }
    let idle = &cfg.idle;
    within("idle.sleep_ms", idle.sleep_ms, 1, l::SLEEP_MS, "ms")?;
    let n = &cfg.neighbor;
    within("neighbor.capacity_entries", n.capacity_entries, 1, l::NEIGHBOR_ENTRIES, "entries")?;
    within("neighbor.pending_packets", n.pending_packets, 1, l::NEIGHBOR_QUEUE, "packets")?;
    within("neighbor.inbox_updates", n.inbox_updates, 1, l::NEIGHBOR_QUEUE, "updates")?;
    within("neighbor.reachable_ms", n.reachable_ms, 1000, l::NEIGHBOR_REACHABLE_MS, "ms")?;
    within("neighbor.expire_ms", n.expire_ms, n.reachable_ms, l::NEIGHBOR_EXPIRE_MS, "ms")?;
    within("neighbor.resolve_timeout_ms", n.resolve_timeout_ms, 1, l::RESOLVE_MS, "ms")?;
    within("neighbor.retry_ms", n.retry_ms, 1, l::RESOLVE_MS, "ms")?;
    within("icmp.errors_per_sec", cfg.icmp.errors_per_sec, 0, l::ICMP_RATE, "per second")?;
    within("icmp.burst", cfg.icmp.burst, 0, l::ICMP_RATE, "errors")?;
    for (i, p) in cfg.ports.iter().enumerate() {
        let a = &p.af_packet;
        if p.backend == Backend::AfPacket {
            let at = |f: &str| format!("ports[{i}].af_packet.{f}");
            within(&at("block_bytes"), a.block_bytes, 4096, l::BLOCK_BYTES, "bytes")?;
            within(&at("blocks"), a.blocks, 1, l::RING_ENTRIES, "blocks")?;
            within(&at("tx_frames"), a.tx_frames, 1, l::RING_ENTRIES, "frames")?;
            within(&at("block_timeout_ms"), a.block_timeout_ms, 1, l::BLOCK_TIMEOUT_MS, "ms")?;
        }
        if p.backend == Backend::Dpdk {
            let d = &p.dpdk;
            let at = |f: &str| format!("ports[{i}].dpdk.{f}");
            within(&at("rx_descriptors"), d.rx_descriptors, 1, l::DESCRIPTORS, "descriptors")?;
            within(&at("tx_descriptors"), d.tx_descriptors, 1, l::DESCRIPTORS, "descriptors")?;
        }
    }
    let mesh = &cfg.mesh;
    let at = |f: &str| format!("mesh.{f}");
    within(
        &at("handoff_ring_packets"),
        mesh.handoff_ring_packets,
        1,
        l::HANDOFF_PACKETS,
        "packets",
    )?;
    within(&at("max_services"), mesh.max_services, 1, l::MESH_OBJECTS, "services")?;
    within(&at("max_clusters"), mesh.max_clusters, 1, l::MESH_OBJECTS, "clusters")?;
    within(&at("tcp_syn_timeout_ms"), mesh.tcp_syn_timeout_ms, 1, l::TCP_SHORT_MS, "ms")?;
    within(&at("tcp_closing_timeout_ms"), mesh.tcp_closing_timeout_ms, 1, l::TCP_SHORT_MS, "ms")?;
    within(
        &at("tcp_established_timeout_ms"),
        mesh.tcp_established_timeout_ms,
        1,
        l::TCP_ESTABLISHED_MS,
        "ms",
    )?;
    within(&at("udp_timeout_ms"), mesh.udp_timeout_ms, 1, l::LONG_MS, "ms")?;
    within(&at("outlier_max_ejection_percent"), mesh.outlier_max_ejection_percent, 0, 100, "%")?;
    within(&at("outlier_base_ejection_ms"), mesh.outlier_base_ejection_ms, 1, l::LONG_MS, "ms")?;
    within(
        &at("outlier_max_ejection_ms"),
        mesh.outlier_max_ejection_ms,
        mesh.outlier_base_ejection_ms,
        l::LONG_MS,
        "ms",
    )?;
    Ok(())
}

/// The interface a port takes on the host: `af_packet` and `tap` by name, `dpdk` virtual
/// devices by their `iface=` argument (PCI devices are told apart by address already).
fn host_interface(p: &PortConfig) -> Option<String> {
    match p.backend {
        Backend::AfPacket | Backend::Tap => {
            Some(p.interface.clone().unwrap_or_else(|| p.name.clone()))
        }
        Backend::Dpdk => p
            .device
            .as_deref()?
            .split(',')
            .find_map(|a| a.strip_prefix("iface=").map(str::to_owned)),
    }
}

/// What the ports take of the host, for the one-weir-per-interface lock: each port's
/// interface (`(name, false)`) or PCI device (`(address, true)`).
pub fn host_interfaces(cfg: &Config) -> Vec<(String, bool)> {
    cfg.ports
        .iter()
        .filter_map(|p| {
            if p.is_pci() {
                let d = p.device.as_deref()?;
                Some((d.split(',').next().unwrap_or(d).to_owned(), true))
            } else {
                host_interface(p).map(|i| (i, false))
            }
        })
        .collect()
}

/// Why `a` cannot be an address of weir's or a service's: `None` if it can.
fn unusable_address(a: IpAddr) -> Option<&'static str> {
    match a {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() {
                Some("unspecified")
            } else if v4.is_broadcast() {
                Some("the limited broadcast address")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if stack::ipv4::is_martian_source(v4) {
                Some("not a unicast host address (0/8, 127/8 or 240/4)")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if stack::ipv6::is_martian_source(&v6) || stack::ipv6::is_link_local(&v6) {
                Some("not a global unicast address (loopback, IPv4-mapped or link-local)")
            } else {
                None
            }
        }
    }
}

fn check_addresses(cfg: &Config) -> Result<(), ConfigError> {
    // Interfaces: one port each.
    let mut interfaces: std::collections::BTreeMap<String, usize> = Default::default();
    for (i, p) in cfg.ports.iter().enumerate() {
        if let Some(iface) = host_interface(p) {
            if let Some(other) = interfaces.insert(iface.clone(), i) {
                let field = if p.backend == Backend::Dpdk { "device" } else { "interface" };
                return Err(err(
                    format!("ports[{i}].{field}"),
                    format!("interface `{iface}` is already ports[{other}]'s"),
                ));
            }
        }
    }
    // Port addresses: host addresses, each once, on prefixes no other port has.
    let mut own: std::collections::BTreeMap<IpAddr, usize> = Default::default();
    for (i, p) in cfg.ports.iter().enumerate() {
        for (j, net) in p.addresses.iter().enumerate() {
            let path = format!("ports[{i}].addresses[{j}]");
            let a = net.addr();
            if let Some(why) = unusable_address(a) {
                return Err(err(path, format!("{a} is {why}")));
            }
            let short = matches!(net, IpNet::V4(n) if n.prefix_len() <= 30);
            if short && (a == net.network() || a == net.broadcast()) {
                return Err(err(path, format!("{a} is the network or broadcast address of {net}")));
            }
            if let Some(other) = own.insert(a, i) {
                return Err(err(path, format!("{a} is already an address of ports[{other}]")));
            }
            for (k, q) in cfg.ports.iter().enumerate().take(i) {
                if let Some(o) = q.addresses.iter().find(|o| o.contains(net) || net.contains(*o)) {
                    return Err(err(
                        path,
                        format!("{net} overlaps {o} of ports[{k}]: a prefix belongs to one port"),
                    ));
                }
            }
        }
    }
    let port_of = |name: &str| cfg.ports.iter().position(|p| p.name == name);
    let on_link = |port: usize, a: IpAddr| {
        cfg.ports.get(port).is_some_and(|p| p.addresses.iter().any(|n| n.contains(&a)))
    };
    let broadcast = |a: IpAddr| {
        cfg.ports.iter().flat_map(|p| &p.addresses).any(|n| match (n, a) {
            (IpNet::V4(n), IpAddr::V4(a)) => n.prefix_len() <= 30 && n.broadcast() == a,
            _ => false,
        })
    };
    for (i, r) in cfg.routes.iter().enumerate() {
        let Some(via) = r.via else { continue };
        let path = format!("routes[{i}].via");
        if via.is_ipv4() != matches!(r.prefix, IpNet::V4(_)) {
            return Err(err(path, "gateway and prefix are of different families"));
        }
        if own.contains_key(&via) {
            return Err(err(path, format!("{via} is weir's own address")));
        }
        let port = port_of(&r.port).unwrap_or(usize::MAX);
        if !on_link(port, via) || broadcast(via) || unusable_address(via).is_some() {
            return Err(err(
                path,
                format!("{via} is not a host on a prefix of port `{}`: unreachable", r.port),
            ));
        }
    }
    for (i, n) in cfg.neighbors.iter().enumerate() {
        let path = format!("neighbors[{i}]");
        let port = port_of(&n.port).unwrap_or(usize::MAX);
        if own.contains_key(&n.ip) || broadcast(n.ip) || unusable_address(n.ip).is_some() {
            return Err(err(format!("{path}.ip"), format!("{} cannot be a neighbor", n.ip)));
        }
        if !on_link(port, n.ip) {
            return Err(err(
                format!("{path}.ip"),
                format!("{} is not on a prefix of port `{}`", n.ip, n.port),
            ));
        }
        if n.mac[0] & 1 != 0 || n.mac == [0; 6] {
            return Err(err(format!("{path}.mac"), "must be a unicast address"));
        }
    }
    if let Some(x) = &cfg.xds {
        x.server().map_err(|e| err("xds.server", e))?;
        if x.node.id.is_empty() {
            return Err(err("xds.node.id", "the server knows this node by it: must not be empty"));
        }
        if x.reconnect_base_ms == 0 || x.reconnect_max_ms < x.reconnect_base_ms {
            return Err(err(
                "xds.reconnect_base_ms",
                "must be above 0 and at most reconnect_max_ms",
            ));
        }
        if x.max_message_bytes < 4096 {
            return Err(err("xds.max_message_bytes", "at least 4096"));
        }
    }
    // Services and endpoints: addresses of their own, ports above 0.
    let mut endpoints: std::collections::BTreeMap<IpAddr, String> = Default::default();
    for (ci, c) in cfg.clusters.iter().enumerate() {
        check_balance(cfg, ci)?;
        check_endpoints(c, ci, |a| own.contains_key(&a) || broadcast(a))?;
        for (ei, e) in c.endpoints.iter().enumerate() {
            endpoints.entry(e.address).or_insert_with(|| format!("clusters[{ci}].endpoints[{ei}]"));
        }
    }
    for (si, s) in cfg.services.iter().enumerate() {
        let path = format!("services[{si}]");
        if let Some(why) = unusable_address(s.vip) {
            return Err(err(format!("{path}.vip"), format!("{} is {why}", s.vip)));
        }
        if own.contains_key(&s.vip) || broadcast(s.vip) {
            return Err(err(
                format!("{path}.vip"),
                format!("{} is a port's address or a broadcast address", s.vip),
            ));
        }
        if let Some(at) = endpoints.get(&s.vip) {
            return Err(err(format!("{path}.vip"), format!("{} is also the endpoint {at}", s.vip)));
        }
        if s.port == 0 {
            return Err(err(format!("{path}.port"), "must be above 0"));
        }
        if s.mode == ModeName::Dsr && s.encap == EncapName::Gue && s.gue_port == 0 {
            return Err(err(format!("{path}.gue_port"), "must be above 0"));
        }
    }
    Ok(())
}

/// A cluster's endpoints: usable addresses not weir's own (`own_or_broadcast`), ports above 0.
fn check_endpoints(
    c: &ClusterConfig,
    ci: usize,
    own_or_broadcast: impl Fn(IpAddr) -> bool,
) -> Result<(), ConfigError> {
    for (ei, e) in c.endpoints.iter().enumerate() {
        let path = format!("clusters[{ci}].endpoints[{ei}]");
        if let Some(why) = unusable_address(e.address) {
            return Err(err(format!("{path}.address"), format!("{} is {why}", e.address)));
        }
        if own_or_broadcast(e.address) {
            return Err(err(
                format!("{path}.address"),
                format!("{} is weir's own or a broadcast address", e.address),
            ));
        }
        if e.port == 0 {
            return Err(err(format!("{path}.port"), "must be above 0"));
        }
    }
    Ok(())
}

/// Checks new forms of some of `cfg`'s clusters (by index; names unchanged, `cfg` otherwise
/// valid) as [`validate`] would check the configuration with them in place: their balance
/// (and that of the splits made of them), their endpoints' addresses and ports, and that no
/// endpoint is a service's VIP. The cost follows the clusters changed and the services.
pub fn validate_cluster_updates(
    cfg: &Config,
    changed: &[(usize, ClusterConfig)],
) -> Result<(), ConfigError> {
    let find = |name: &str| {
        changed
            .iter()
            .map(|(_, c)| c)
            .find(|c| c.name == name)
            .or_else(|| cfg.clusters.iter().find(|m| m.name == name))
    };
    let own_or_broadcast = |a: IpAddr| {
        cfg.ports.iter().flat_map(|p| &p.addresses).any(|n| {
            n.addr() == a
                || match (n, a) {
                    (IpNet::V4(n), IpAddr::V4(a)) => n.prefix_len() <= 30 && n.broadcast() == a,
                    _ => false,
                }
        })
    };
    let mut addresses = std::collections::BTreeMap::new();
    for (ci, c) in changed {
        if cfg.clusters.get(*ci).map(|x| &x.name) != Some(&c.name) {
            return Err(err(format!("clusters[{ci}].name"), "an update does not rename"));
        }
        check_balance_of(c, *ci, find)?;
        check_endpoints(c, *ci, own_or_broadcast)?;
        for (ei, e) in c.endpoints.iter().enumerate() {
            addresses.entry(e.address).or_insert_with(|| format!("clusters[{ci}].endpoints[{ei}]"));
        }
    }
    for (si, s) in cfg.services.iter().enumerate() {
        if let Some(at) = addresses.get(&s.vip) {
            return Err(err(
                format!("services[{si}].vip"),
                format!("{} is also the endpoint {at}", s.vip),
            ));
        }
    }
    for (ci, c) in cfg.clusters.iter().enumerate() {
        if c.split.iter().any(|p| changed.iter().any(|(_, x)| x.name == p.cluster)) {
            check_balance_of(c, ci, find)?;
        }
    }
    Ok(())
}

/// A cluster's split, localities, priorities and timeouts.
fn check_balance(cfg: &Config, ci: usize) -> Result<(), ConfigError> {
    check_balance_of(&cfg.clusters[ci], ci, |name| cfg.clusters.iter().find(|m| m.name == name))
}

/// [`check_balance`] of cluster `c` at index `ci`, `find(name)` giving the clusters of a split.
fn check_balance_of<'a>(
    c: &ClusterConfig,
    ci: usize,
    find: impl Fn(&str) -> Option<&'a ClusterConfig>,
) -> Result<(), ConfigError> {
    let at = |f: &str| format!("clusters[{ci}].{f}");
    if c.overprovisioning_percent == 0 {
        return Err(err(at("overprovisioning_percent"), "must be above 0"));
    }
    if c.connect_timeout_ms == Some(0) {
        return Err(err(at("connect_timeout_ms"), "must be above 0"));
    }
    if let Some(o) = &c.outlier {
        if o.base_ejection_ms == 0 || o.max_ejection_ms < o.base_ejection_ms {
            return Err(err(
                at("outlier"),
                "base_ejection_ms must be above 0 and at most max_ejection_ms",
            ));
        }
        if o.max_ejection_percent > 100 {
            return Err(err(at("outlier.max_ejection_percent"), "at most 100"));
        }
    }
    if !c.split.is_empty() {
        if !c.endpoints.is_empty() || !c.localities.is_empty() {
            return Err(err(at("split"), "a split has no endpoints or localities of its own"));
        }
        for (i, part) in c.split.iter().enumerate() {
            let path = at(&format!("split[{i}]"));
            if part.weight == 0 {
                return Err(err(format!("{path}.weight"), "must be above 0"));
            }
            if c.split[..i].iter().any(|p| p.cluster == part.cluster) {
                return Err(err(format!("{path}.cluster"), "listed twice"));
            }
            let Some(member) = find(&part.cluster) else {
                return Err(err(
                    format!("{path}.cluster"),
                    format!("no cluster named `{}`", part.cluster),
                ));
            };
            if !member.split.is_empty() {
                return Err(err(format!("{path}.cluster"), "a split of splits"));
            }
            if !member.localities.is_empty() || member.endpoints.iter().any(|e| e.priority > 0) {
                return Err(err(
                    format!("{path}.cluster"),
                    format!(
                        "`{}` uses localities or priorities, which a split does not combine",
                        member.name
                    ),
                ));
            }
            if member.policy != c.policy {
                return Err(err(
                    format!("{path}.cluster"),
                    format!("`{}` picks by another policy than the split", member.name),
                ));
            }
        }
        return Ok(());
    }
    for (i, l) in c.localities.iter().enumerate() {
        if c.localities[..i].iter().any(|x| x.name == l.name && x.priority == l.priority) {
            return Err(err(at(&format!("localities[{i}].name")), "listed twice at its priority"));
        }
    }
    for (ei, e) in c.endpoints.iter().enumerate() {
        match &e.locality {
            Some(l)
                if !c.localities.is_empty()
                    && !c.localities.iter().any(|x| &x.name == l && x.priority == e.priority) =>
            {
                return Err(err(
                    at(&format!("endpoints[{ei}].locality")),
                    format!(
                        "`{l}` is not one of the cluster's localities at priority {}",
                        e.priority
                    ),
                ))
            }
            None if !c.localities.is_empty() => {
                return Err(err(
                    at(&format!("endpoints[{ei}].locality")),
                    "the cluster weighs localities: every endpoint names one",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses a configuration whose memory (see [`crate::footprint`]) is more than the machine
/// has available, naming the field that takes the most.
fn check_memory(cfg: &Config, available: Option<u64>) -> Result<(), ConfigError> {
    let fp = crate::footprint::Footprint::of(cfg);
    let Some(available) = available else { return Ok(()) };
    if fp.total() > available {
        let (field, bytes) = fp.largest().cloned().unwrap_or_default();
        return Err(err(
            field,
            format!(
                "the configuration needs {} of memory and this machine has {} available; \
                 this field takes {}",
                crate::footprint::mib(fp.total()),
                crate::footprint::mib(available),
                crate::footprint::mib(bytes)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
ports:
  - name: a
    backend: af_packet
    interface: veth0
    addresses: [198.18.1.1/24, 2001:db8:1::1/64]
  - name: b
    backend: tap
    mac: 02:00:00:00:00:02
    addresses: [198.18.2.1/24]
routes:
  - prefix: 198.19.0.0/16
    port: b
    via: 198.18.2.2
neighbors:
  - ip: 198.18.2.2
    port: b
    mac: 02:00:00:00:00:99
";

    #[test]
    fn two_services_of_one_name_are_refused_where_the_second_is() {
        let text = format!(
            "{GOOD}services:
  - {{ name: web, vip: 198.19.0.1, port: 80, protocol: tcp, cluster: web }}
  - {{ name: web, vip: 198.19.0.1, port: 443, protocol: tcp, cluster: web }}
clusters:
  - {{ name: web, endpoints: [ {{ address: 198.18.2.2, port: 80 }} ] }}
"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("services[1].name: another service is named `web`"), "{e}");
        assert!(e.contains("line 21, column 7"), "{e}");
    }

    #[test]
    fn good_config_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.routes[0].port, "b");
        assert_eq!(c.neighbors[0].mac, [2, 0, 0, 0, 0, 0x99]);
        assert_eq!(c.workers.len(), 1);
    }

    #[test]
    fn a_worker_may_override_the_idle_policy() {
        let text = format!("workers:\n  - {{}}\n  - {{ idle: busy_poll }}\n{GOOD}");
        let c = parse(&text).unwrap();
        assert_eq!(c.idle.policy, IdlePolicyName::Adaptive);
        assert_eq!(c.workers[0].idle, None);
        assert_eq!(c.workers[1].idle, Some(IdlePolicyName::BusyPoll));
    }

    #[test]
    fn unknown_field_names_path_and_line() {
        let text = GOOD
            .replace("    mtu_bytes: 1500\n", "")
            .replace("backend: tap\n", "backend: tap\n    colour: blue\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("ports[1]"), "{e}");
        assert!(e.contains("colour"), "{e}");
        assert!(e.contains("line 9"), "{e}");
    }

    #[test]
    fn unknown_port_reference_names_path_and_line() {
        let text = GOOD.replace("    port: b\n    via", "    port: c\n    via");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("routes[0].port"), "{e}");
        assert!(e.contains("no port named `c`"), "{e}");
        // The line and column of the value itself.
        assert!(e.contains("line 13, column 11"), "{e}");
    }

    #[test]
    fn a_value_that_parses_but_makes_no_sense_names_its_line() {
        // A mesh capacity out of range: the key's line and column.
        let text = format!("{GOOD}mesh:\n  max_clusters: 10\n  max_services: 0\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("mesh.max_services"), "{e}");
        assert!(e.contains("line 21, column 3"), "{e}");
        // An item of a list: the item's line.
        assert_eq!(location_of(GOOD, "ports[1]"), Some((7, 5)));
        assert_eq!(location_of(GOOD, "ports[1].addresses[0]"), Some((10, 17)));
        assert_eq!(location_of(GOOD, "routes[0].via"), Some((14, 5)));
        // Not in the file (a default), or no such place.
        assert_eq!(location_of(GOOD, "mesh.max_services"), None);
        assert_eq!(location_of(GOOD, "ports[5]"), None);
        assert_eq!(location_of("a: [", "b"), None);
    }

    #[test]
    fn bad_address_is_explained() {
        let text = GOOD.replace("198.18.1.1/24", "198.18.1.300/24");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("ports[0].addresses"), "{e}");
        assert!(e.contains("198.18.1.300/24"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let text = GOOD.replace(
            "    addresses: [198.18.2.1/24]",
            "    addresses: [198.18.2.1/24]\n    mtu_bytes: 100",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("ports[1].mtu_bytes"), "{e}");
    }

    const DPDK: &str = "
eal:
  hugepages: false
  args: [--no-telemetry]
ports:
  - name: a
    backend: dpdk
    device: net_af_packet0,iface=veth0,qpairs=1
    addresses: [198.18.1.1/24]
  - name: b
    backend: dpdk
    device: 0000:03:00.0
    dpdk: { rx_descriptors: 512, rss: false }
    addresses: [198.18.2.1/24]
";

    #[test]
    fn dpdk_ports_parse() {
        let c = parse(DPDK).unwrap();
        assert_eq!(c.ports[0].backend, Backend::Dpdk);
        assert!(!c.ports[0].is_pci());
        assert!(c.ports[1].is_pci());
        assert_eq!(c.ports[1].dpdk.rx_descriptors, 512);
        assert_eq!(c.ports[1].dpdk.tx_descriptors, 1024);
        assert!(!c.ports[1].dpdk.rss);
        assert_eq!(c.eal.hugepages, Some(false));
        assert_eq!(c.eal.args, ["--no-telemetry"]);
    }

    #[test]
    fn pci_addresses_are_recognised() {
        for a in ["0000:03:00.0", "03:00.1", "abcd:ef:1f.7"] {
            assert!(is_pci_address(a), "{a}");
        }
        for a in ["net_ring0", "0000:03:00", "3:00.0", "0000:03:00.10", "gg:00.0"] {
            assert!(!is_pci_address(a), "{a}");
        }
    }

    #[test]
    fn dpdk_and_native_ports_do_not_mix() {
        let text = DPDK.replace(
            "    backend: dpdk\n    device: 0000:03:00.0",
            "    backend: af_packet\n    interface: x",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("ports[1].backend"), "{e}");
    }

    #[test]
    fn a_dpdk_port_needs_a_device_and_no_interface() {
        let e = parse(&DPDK.replace("    device: 0000:03:00.0\n", "")).unwrap_err().to_string();
        assert!(e.starts_with("ports[1].device: required"), "{e}");
        let e =
            parse(&DPDK.replace("device: 0000:03:00.0", "device: 0000:03:00.0\n    interface: x"))
                .unwrap_err()
                .to_string();
        assert!(e.starts_with("ports[1].interface"), "{e}");
        let e = parse(&DPDK.replace("0000:03:00.0", "net_af_packet0,iface=other"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("used by another port"), "{e}");
        let e =
            parse(&GOOD.replace("interface: veth0", "device: net_ring0")).unwrap_err().to_string();
        assert!(e.starts_with("ports[0].device: only for backend dpdk"), "{e}");
    }

    #[test]
    fn a_mempool_too_small_for_the_dpdk_queues_is_refused() {
        let text = format!("mempool: {{ buffers: 2048 }}\n{DPDK}");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("mempool.buffers"), "{e}");
        assert!(e.contains("hold up to"), "{e}");
    }

    /// `GOOD` with `from` replaced by `to`, which must occur in it.
    fn good_with(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        GOOD.replace(from, to)
    }

    fn refused(text: &str) -> String {
        parse(text).expect_err("must be refused").to_string()
    }

    #[test]
    fn an_alias_bomb_is_refused_quickly_and_small() {
        // 1 MiB, referenced 20 000 times: 20 GiB if expanded.
        let mut text = format!("eal:\n  file_prefix: &a \"{}\"\n  args:\n", "x".repeat(1 << 20));
        for _ in 0..20_000 {
            text.push_str("    - *a\n");
        }
        text.push_str(GOOD);
        let t0 = std::time::Instant::now();
        let e = refused(&text);
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(e.contains("budget") || e.contains("alias"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_quickly() {
        // Where the schema wants a mapping, and where it takes a list of strings: refused at
        // the first level it does not expect, or at the depth limit, in either case at once.
        for deep in ["[".repeat(100_000), "- ".repeat(100_000), "{a: ".repeat(100_000)] {
            for text in [deep.clone(), format!("eal:\n  args: {deep}"), format!("ports: {deep}")] {
                let t0 = std::time::Instant::now();
                let e = refused(&text);
                assert!(t0.elapsed() < std::time::Duration::from_secs(1), "{:?}", t0.elapsed());
                assert!(e.contains("line 1") || e.contains("line 2"), "{e}");
            }
        }
        let nested = format!("eal:\n  args: {}", "[".repeat(MAX_CONFIG_DEPTH + 8));
        let e = refused(&nested);
        assert!(
            e.contains("depth")
                || e.contains("Depth")
                || e.contains("recursion")
                || e.contains("expected"),
            "{e}"
        );
    }

    #[test]
    fn an_oversized_file_is_refused_before_it_is_parsed() {
        let text = format!("# {}\n{GOOD}", "x".repeat(MAX_CONFIG_BYTES));
        let e = refused(&text);
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn a_second_document_is_refused() {
        let e = refused(&format!("{GOOD}\n---\n{GOOD}"));
        assert!(!e.is_empty());
    }

    #[test]
    fn one_interface_or_address_on_two_ports_is_refused() {
        let e =
            refused(&good_with("    backend: tap\n", "    backend: tap\n    interface: veth0\n"));
        assert!(
            e.starts_with("ports[1].interface: interface `veth0` is already ports[0]'s"),
            "{e}"
        );
        let e = refused(&good_with("[198.18.2.1/24]", "[198.18.1.1/24]"));
        assert!(e.starts_with("ports[1].addresses[0]: 198.18.1.1 is already"), "{e}");
        let e = refused(&good_with("[198.18.2.1/24]", "[198.18.1.9/24]"));
        assert!(e.contains("overlaps 198.18.1.1/24 of ports[0]"), "{e}");
        let e = refused(&good_with("[198.18.2.1/24]", "[198.18.2.255/24]"));
        assert!(e.contains("network or broadcast"), "{e}");
        for bad in ["0.0.0.0/8", "127.0.0.1/8", "224.0.0.1/24", "255.255.255.255/32"] {
            let e = refused(&good_with("[198.18.2.1/24]", &format!("[{bad}]")));
            assert!(e.starts_with("ports[1].addresses[0]"), "{bad}: {e}");
        }
    }

    #[test]
    fn routes_via_unreachable_or_own_gateways_are_refused() {
        let e = refused(&good_with("via: 198.18.2.2", "via: 198.18.1.7"));
        assert!(
            e.starts_with("routes[0].via: 198.18.1.7 is not a host on a prefix of port `b`"),
            "{e}"
        );
        let e = refused(&good_with("via: 198.18.2.2", "via: 198.18.2.1"));
        assert!(e.starts_with("routes[0].via: 198.18.2.1 is weir's own address"), "{e}");
        let e = refused(&good_with("via: 198.18.2.2", "via: 198.18.2.255"));
        assert!(e.starts_with("routes[0].via"), "{e}");
        let e = refused(&good_with("  - ip: 198.18.2.2", "  - ip: 198.18.1.2"));
        assert!(e.starts_with("neighbors[0].ip: 198.18.1.2 is not on a prefix of port `b`"), "{e}");
    }

    const MESH: &str = "
services:
  - { name: web, vip: 198.19.0.1, port: 80, protocol: tcp, cluster: web }
clusters:
  - name: web
    endpoints:
      - { address: 198.18.2.10, port: 80 }
";

    #[test]
    fn vips_and_endpoints_that_cannot_be_are_refused() {
        let with = |from: &str, to: &str| format!("{GOOD}{}", MESH.replace(from, to));
        assert!(parse(&with("", "")).is_ok());
        for vip in
            ["198.18.1.1", "198.18.2.10", "224.1.1.1", "255.255.255.255", "0.0.0.0", "198.18.2.255"]
        {
            let e = refused(&with("vip: 198.19.0.1", &format!("vip: {vip}")));
            assert!(e.starts_with("services[0].vip"), "{vip}: {e}");
        }
        for ep in ["198.18.2.1", "198.19.0.1", "127.0.0.1", "198.18.2.255"] {
            let e = refused(&with("address: 198.18.2.10", &format!("address: {ep}")));
            assert!(
                e.starts_with("clusters[0].endpoints[0].address")
                    || e.starts_with("services[0].vip"),
                "{ep}: {e}"
            );
        }
        let e = refused(&with("port: 80, protocol", "port: 0, protocol"));
        assert!(e.starts_with("services[0].port: must be above 0"), "{e}");
        let e = refused(&with("198.18.2.10, port: 80", "198.18.2.10, port: 0"));
        assert!(e.starts_with("clusters[0].endpoints[0].port: must be above 0"), "{e}");
        let e = refused(&format!("{}mesh: {{ handoff_ring_packets: 0 }}\n", with("", "")));
        assert!(e.starts_with("mesh.handoff_ring_packets: 0 is out of range"), "{e}");
    }

    #[test]
    fn capacities_and_durations_have_bounds() {
        for (yaml, field) in [
            ("neighbor: { capacity_entries: 1099511627776 }", "neighbor.capacity_entries"),
            ("neighbor: { pending_packets: 1099511627776 }", "neighbor.pending_packets"),
            ("mempool: { buffers: 4294967295 }", "mempool.buffers"),
            ("idle: { sleep_ms: 4294967295 }", "idle.sleep_ms"),
            ("neighbor: { retry_ms: 0 }", "neighbor.retry_ms"),
            ("mesh: { udp_timeout_ms: 18446744073709551615 }", "mesh.udp_timeout_ms"),
        ] {
            let e = refused(&format!("{yaml}\n{GOOD}"));
            assert!(e.starts_with(field), "{yaml}: {e}");
            assert!(e.contains("out of range"), "{yaml}: {e}");
        }
        let workers = format!("workers:\n{}{GOOD}", "  - {}\n".repeat(100_000));
        let e = refused(&workers);
        assert!(e.starts_with("workers: 100000 is out of range"), "{e}");
    }

    #[test]
    fn what_the_machine_cannot_hold_is_refused_naming_the_field() {
        let cfg = parse(GOOD).unwrap();
        let fp = crate::footprint::Footprint::of(&cfg);
        assert!(fp.total() > 16 << 20 && fp.total() < 1 << 30, "{}", fp.describe());
        // With 64 MiB available the defaults do not fit; the mempool takes the most.
        let e = check_memory(&cfg, Some(64 << 20)).unwrap_err().to_string();
        assert!(e.starts_with("mempool.buffers: the configuration needs"), "{e}");
        assert!(check_memory(&cfg, Some(1 << 30)).is_ok());
        let big =
            parse(&format!("mempool: {{ buffers: 16777216, buffer_bytes: 9216 }}\n{GOOD}")).err();
        let fp_big = format!("mempool: {{ buffers: 16777216, buffer_bytes: 9216 }}\n{GOOD}");
        let cfg_big = deserialize(&fp_big).unwrap();
        let e = check_memory(&cfg_big, Some(24 << 30)).unwrap_err().to_string();
        assert!(e.starts_with("mempool.buffers: the configuration needs 149547 MiB"), "{e}");
        // This machine has no 150 GiB either.
        assert!(big.is_some_and(|e| e.to_string().starts_with("mempool.buffers")));
    }
}
