//! DPDK ports as a running weir holds them: opened at start-up, let go in a hot restart's
//! cut-over (a port cannot be open in two processes) and taken back if the restart fails.

use crate::config::{Config, PortConfig};
use anyhow::{bail, Context, Result};
use dataplane::dpdk::{attach, DpdkQueue, Eal, MbufPool, Port, PortId, PortSettings};
use std::time::{Duration, Instant};

/// How long taking a port back waits for a failed successor to let it go (it closes what it
/// opened before it goes, but its exit may still be under way).
const TAKE_BACK_PATIENCE: Duration = Duration::from_secs(3);

/// One configured port.
struct Held {
    /// The device, as configured (`net_af_packet0,iface=eth1`, a PCI address).
    device: String,
    settings: PortSettings,
    /// The port id the workers' queues poll.
    id: PortId,
    /// While this weir has it open.
    port: Option<Port>,
}

/// The DPDK ports of a running weir, by port number.
pub(crate) struct DpdkPorts {
    eal: &'static Eal,
    pool: &'static MbufPool,
    held: Vec<Held>,
    /// The EAL's runtime file prefix, as configured (or its alternate, see
    /// [`successor_prefix`]).
    prefix: Option<String>,
}

/// The runtime file prefix a weir taking over uses: its EAL runs beside the old one's until
/// the cut-over, and two primary processes cannot share one, so it takes the configured
/// prefix if the old weir has the alternate, and the alternate (`PREFIX.alt`) otherwise.
pub(crate) fn successor_prefix(configured: &str, old: Option<&str>) -> String {
    let alternate = format!("{configured}.alt");
    if old == Some(configured) {
        alternate
    } else {
        configured.to_owned()
    }
}

/// How weir sets port `p` up for `workers` workers.
pub(crate) fn port_settings(p: &PortConfig, workers: usize) -> Result<PortSettings> {
    Ok(PortSettings {
        queues: u16::try_from(workers).context("too many workers")?,
        rx_descriptors: p.dpdk.rx_descriptors,
        tx_descriptors: p.dpdk.tx_descriptors,
        rss: p.dpdk.rss,
        promiscuous: p.dpdk.promiscuous,
        mtu: p.mtu_bytes,
        mac: p.mac,
    })
}

impl DpdkPorts {
    /// Opens every port of `cfg` (probing its device first when the EAL left it alone), one
    /// queue pair per worker: the ports, and their queues by port, then worker. On an error,
    /// what was opened is let go again.
    pub(crate) fn open(
        eal: &'static Eal,
        pool: &'static MbufPool,
        cfg: &Config,
        prefix: Option<String>,
    ) -> Result<(DpdkPorts, Vec<Vec<DpdkQueue>>)> {
        let mut ports = DpdkPorts { eal, pool, held: Vec::new(), prefix };
        let mut queues = Vec::new();
        for p in &cfg.ports {
            let device = p.device.clone().unwrap_or_default();
            let settings = port_settings(p, cfg.workers.len())?;
            let opened = attach(eal, &device)
                .and_then(|()| Port::open(eal, &device, &settings, pool))
                .with_context(|| format!("port `{}`", p.name));
            let (port, qs) = match opened {
                Ok(o) => o,
                Err(e) => {
                    ports.let_go();
                    return Err(e);
                }
            };
            ports.held.push(Held { device, settings, id: port.id(), port: Some(port) });
            queues.push(qs);
        }
        Ok((ports, queues))
    }

    /// The EAL's runtime file prefix, if the configuration set one.
    pub(crate) fn file_prefix(&self) -> Option<String> {
        self.prefix.clone()
    }

    /// The ports this weir has open, by port number.
    pub(crate) fn open_ports(&self) -> impl Iterator<Item = Option<&Port>> {
        self.held.iter().map(|h| h.port.as_ref())
    }

    /// The MAC of each port, by port number (`None` for one let go).
    pub(crate) fn macs(&self) -> Vec<Option<[u8; 6]>> {
        self.held.iter().map(|h| h.port.as_ref().map(Port::mac)).collect()
    }

    /// Stops and closes every port and removes its device from this process's EAL, so that
    /// the next weir can probe it; returns how long that took. No worker may poll them until
    /// they are taken back (the workers are paused). Errors are logged: a port that would not
    /// close is not one the next weir can open, which it will say.
    pub(crate) fn let_go(&mut self) -> Duration {
        let began = Instant::now();
        for h in &mut self.held {
            if let Some(port) = h.port.take() {
                if let Err(e) = port.detach() {
                    tracing::warn!(device = %h.device, "letting the port go: {e}");
                }
            }
        }
        began.elapsed()
    }

    /// Probes and opens again every port let go, in the order of their port ids, so that each
    /// comes back under the id the workers' queues poll (DPDK hands out the lowest free id).
    /// A port that a failed successor still holds is tried again for a few seconds. An error
    /// means the workers must not poll again.
    pub(crate) fn take_back(&mut self) -> Result<()> {
        let mut order: Vec<usize> = (0..self.held.len()).collect();
        order.sort_by_key(|&i| self.held[i].id);
        let until = Instant::now() + TAKE_BACK_PATIENCE;
        for i in order {
            let h = &mut self.held[i];
            if h.port.is_some() {
                continue;
            }
            let (port, _queues) = loop {
                let opened = attach(self.eal, &h.device)
                    .and_then(|()| Port::open(self.eal, &h.device, &h.settings, self.pool));
                match opened {
                    Ok(o) => break o,
                    Err(e) if Instant::now() < until => {
                        tracing::debug!(device = %h.device, "taking the port back: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => return Err(e).with_context(|| format!("taking back `{}`", h.device)),
                }
            };
            if port.id() != h.id {
                let got = port.id();
                h.port = Some(port);
                bail!(
                    "`{}` came back as port {} instead of {}: its workers cannot poll it",
                    h.device,
                    got.0,
                    h.id.0
                );
            }
            h.port = Some(port);
        }
        Ok(())
    }
}
