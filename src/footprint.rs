//! What a configuration will take of the machine's memory, worked out before anything is
//! allocated, so that `weir check` can print it and `weir run` can refuse, naming the field,
//! a configuration the machine cannot hold instead of aborting on a failed allocation.

use crate::config::{Backend, Config};

/// Bytes of memory, by the configuration field that decides them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// `(field, bytes)`, largest first.
    pub parts: Vec<(String, u64)>,
}

/// A flow-table entry: a 64-byte hot line, an 80-byte record, index slots and free lists
/// (dataplane's `FlowTable`; README: about 192 bytes a flow).
const FLOW_BYTES: u64 = 192;
/// A neighbor entry in the per-worker hash map, sized for twice the capacity.
const NEIGHBOR_BYTES: u64 = 2 * 48;
/// A frame waiting for its neighbor (the frame itself is a pool buffer).
const PENDING_BYTES: u64 = 48;
/// A slot of a handoff ring or a neighbor inbox.
const RING_SLOT_BYTES: u64 = 48;
/// Per endpoint id: the shared health counters, each worker's active-flow count, the model's
/// endpoint slot and the outlier state.
const ENDPOINT_BYTES: u64 = 20 + 48 + 32;
/// Per endpoint id and worker.
const ENDPOINT_WORKER_BYTES: u64 = 4;
/// Per service id and worker: its counters (`ServiceCounters`, five 8-byte counters).
const SERVICE_WORKER_BYTES: u64 = 40;
/// What a DPDK mbuf costs beyond its data room and headroom (struct rte_mbuf, private area,
/// mempool header).
const MBUF_OVERHEAD_BYTES: u64 = 256;
/// DPDK's build-time headroom (RTE_PKTMBUF_HEADROOM).
const DPDK_HEADROOM_BYTES: u64 = 128;
/// An af_packet transmit ring slot.
const TX_SLOT_BYTES: u64 = 2048;

impl Footprint {
    /// The memory `cfg` asks for, by field.
    pub fn of(cfg: &Config) -> Footprint {
        let workers = cfg.workers.len() as u64;
        let mut parts: Vec<(String, u64)> = Vec::new();
        let mut add = |field: &str, bytes: u64| parts.push((field.to_owned(), bytes));
        let m = &cfg.mempool;
        let dpdk = cfg.ports.first().is_some_and(|p| p.backend == Backend::Dpdk);
        let buffer = if dpdk {
            u64::from(m.buffer_bytes) + DPDK_HEADROOM_BYTES + MBUF_OVERHEAD_BYTES
        } else {
            (u64::from(m.buffer_bytes) + u64::from(m.headroom_bytes)).div_ceil(64) * 64
        };
        add("mempool.buffers", u64::from(m.buffers).saturating_mul(buffer));
        for (i, p) in cfg.ports.iter().enumerate() {
            if p.backend == Backend::AfPacket {
                let a = &p.af_packet;
                let rx = u64::from(a.block_bytes).saturating_mul(u64::from(a.blocks));
                let tx = u64::from(a.tx_frames).saturating_mul(TX_SLOT_BYTES);
                add(
                    &format!("ports[{i}].af_packet"),
                    rx.saturating_add(tx).saturating_mul(workers),
                );
            }
        }
        let n = &cfg.neighbor;
        add(
            "neighbor.capacity_entries",
            (n.capacity_entries as u64).saturating_mul(NEIGHBOR_BYTES).saturating_mul(workers),
        );
        add(
            "neighbor.pending_packets",
            (n.pending_packets as u64).saturating_mul(PENDING_BYTES).saturating_mul(workers),
        );
        add(
            "neighbor.inbox_updates",
            (n.inbox_updates as u64).saturating_mul(RING_SLOT_BYTES).saturating_mul(workers),
        );
        let mesh = &cfg.mesh;
        add(
            "mesh.flows_per_worker",
            (mesh.flows_per_worker as u64).saturating_mul(FLOW_BYTES).saturating_mul(workers),
        );
        add(
            "mesh.handoff_ring_packets",
            (mesh.handoff_ring_packets as u64)
                .saturating_mul(RING_SLOT_BYTES)
                .saturating_mul(workers),
        );
        add(
            "mesh.max_endpoints",
            (mesh.max_endpoints as u64)
                .saturating_mul(ENDPOINT_BYTES + ENDPOINT_WORKER_BYTES.saturating_mul(workers)),
        );
        add(
            "mesh.max_services",
            (mesh.max_services as u64).saturating_mul(SERVICE_WORKER_BYTES).saturating_mul(workers),
        );
        add(
            "mesh.max_clusters",
            (mesh.max_clusters as u64).saturating_mul(4).saturating_mul(workers),
        );
        parts.sort_by_key(|p| std::cmp::Reverse(p.1));
        Footprint { parts }
    }

    /// The whole, bytes.
    pub fn total(&self) -> u64 {
        self.parts.iter().fold(0u64, |t, (_, b)| t.saturating_add(*b))
    }

    /// The field that takes the most.
    pub fn largest(&self) -> Option<&(String, u64)> {
        self.parts.first()
    }

    /// "123 MiB (mempool.buffers 34 MiB, ports[0].af_packet 64 MiB, ...)": the total and the
    /// parts of at least 1 MiB.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .filter(|(_, b)| *b >= 1 << 20)
            .map(|(f, b)| format!("{f} {}", mib(*b)))
            .collect();
        format!("{} ({})", mib(self.total()), parts.join(", "))
    }
}

/// `bytes` in MiB, rounded up.
pub fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(1 << 20))
}

/// The memory the machine can give a new process now: `MemAvailable` of /proc/meminfo, plus
/// the free hugepages (the mempool maps them first). `None` where it cannot be read.
pub fn available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let avail_kb = field("MemAvailable:")?;
    let huge = field("HugePages_Free:").unwrap_or(0) * field("Hugepagesize:").unwrap_or(0);
    Some((avail_kb + huge) * 1024)
}
