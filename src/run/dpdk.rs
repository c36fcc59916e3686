//! DPDK ports as a running weir holds them: opened at start-up, let go in a hot restart's
//! cut-over (a PCI device, say, cannot be open in two processes) and taken back if the
//! restart fails.
//!
//! A `net_af_packet` port is the exception: its sockets are each process's own, and two
//! processes' sockets on one interface each receive every frame. A weir taking over opens
//! such ports while the old one still forwards, drops what they received just before the old
//! workers are asked to pause (the old weir forwarded it), and the old weir keeps its own
//! until it exits: the cut-over
//! then has no port to close or open, which takes some 45 ms per socket (the kernel waits for
//! an RCU grace period on each).

use crate::config::{Config, PortConfig};
use anyhow::{bail, Context, Result};
use dataplane::buf::Batch;
use dataplane::dpdk::{attach, DpdkQueue, Eal, Mbuf, MbufPool, Port, PortId, PortSettings};
use dataplane::io::PacketIo;
use std::time::{Duration, Instant};

/// How long taking a port back waits for a failed successor to let it go (it closes what it
/// opened before it goes, but its exit may still be under way).
const TAKE_BACK_PATIENCE: Duration = Duration::from_secs(3);

/// The most frames dropped from one queue when a successor drains what its ports received
/// before the cut-over (a ring holds far fewer; the bound keeps a flood from holding it).
const DRAIN_MAX: usize = 1 << 16;

/// Whether `device` can be open in this process and another at once: a `net_af_packet` vdev,
/// whose sockets are each process's own.
pub(crate) fn shared_between_processes(device: &str) -> bool {
    device.starts_with("net_af_packet")
}

/// One configured port.
struct Held {
    /// The device, as configured (`net_af_packet0,iface=eth1`, a PCI address).
    device: String,
    settings: PortSettings,
    /// The port id the workers' queues poll, once it was opened.
    id: Option<PortId>,
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

/// Each port's queues (one per worker) as they are opened, by port number.
pub(crate) type PortQueues = Vec<Option<Vec<DpdkQueue>>>;

impl DpdkPorts {
    /// `cfg`'s DPDK ports, none of them open yet.
    pub(crate) fn new(
        eal: &'static Eal,
        pool: &'static MbufPool,
        cfg: &Config,
        prefix: Option<String>,
    ) -> Result<DpdkPorts> {
        let mut held = Vec::new();
        for p in &cfg.ports {
            held.push(Held {
                device: p.device.clone().unwrap_or_default(),
                settings: port_settings(p, cfg.workers.len())?,
                id: None,
                port: None,
            });
        }
        Ok(DpdkPorts { eal, pool, held, prefix })
    }

    /// Opens the ports not open yet whose device `which` takes (probing it first when the EAL
    /// left it alone), one queue pair per worker; their queues go into `queues` by port
    /// number. On an error, the ports opened by this call are let go again.
    pub(crate) fn open(
        &mut self,
        queues: &mut PortQueues,
        which: impl Fn(&str) -> bool,
    ) -> Result<()> {
        queues.resize_with(self.held.len(), || None);
        let mut opened_now = Vec::new();
        for (i, h) in self.held.iter_mut().enumerate() {
            if h.port.is_some() || !which(&h.device) {
                continue;
            }
            let opened = attach(self.eal, &h.device)
                .and_then(|()| Port::open(self.eal, &h.device, &h.settings, self.pool))
                .with_context(|| format!("port {i} (`{}`)", h.device));
            match opened {
                Ok((port, qs)) => {
                    h.id = Some(port.id());
                    h.port = Some(port);
                    queues[i] = Some(qs);
                    opened_now.push(i);
                }
                Err(e) => {
                    for j in opened_now {
                        queues[j] = None;
                        if let Some(port) = self.held[j].port.take() {
                            let _ = port.detach();
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The EAL's runtime file prefix, if the configuration set one.
    pub(crate) fn file_prefix(&self) -> Option<String> {
        self.prefix.clone()
    }

    /// The ports this weir has open, by port number.
    pub(crate) fn open_ports(&self) -> impl Iterator<Item = Option<&Port>> {
        self.held.iter().map(|h| h.port.as_ref())
    }

    /// The MAC of each port, by port number (`None` for one not open).
    pub(crate) fn macs(&self) -> Vec<Option<[u8; 6]>> {
        self.held.iter().map(|h| h.port.as_ref().map(Port::mac)).collect()
    }

    /// Stops and closes the ports the next weir cannot open beside this one's (all but
    /// `net_af_packet`'s) and removes their devices from this process's EAL, so that it can
    /// probe them; returns how long that took. No worker may poll them until they are taken
    /// back (the workers are paused). Returns how many, and how long that took; an error
    /// when a device would not go (the takeover then fails, and what was let go is taken
    /// back).
    pub(crate) fn let_go(&mut self) -> Result<(usize, Duration)> {
        let began = Instant::now();
        let mut n = 0;
        for h in &mut self.held {
            if shared_between_processes(&h.device) {
                continue;
            }
            if let Some(port) = h.port.take() {
                n += 1;
                port.detach().with_context(|| format!("letting `{}` go", h.device))?;
            }
        }
        Ok((n, began.elapsed()))
    }

    /// Whether a port was let go and not taken back.
    pub(crate) fn any_let_go(&self) -> bool {
        self.held.iter().any(|h| h.id.is_some() && h.port.is_none())
    }

    /// Lets every port go (a successor that could not finish its takeover gives them back).
    pub(crate) fn let_all_go(&mut self) {
        for h in &mut self.held {
            if let Some(port) = h.port.take() {
                let _ = port.detach();
            }
        }
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
            let (got, want) = (port.id(), h.id);
            h.port = Some(port);
            if Some(got) != want {
                bail!(
                    "`{}` came back as port {} instead of {:?}: its workers cannot poll it",
                    h.device,
                    got.0,
                    want.map(|p| p.0)
                );
            }
        }
        Ok(())
    }
}

/// Drops what `queues` received so far: frames a weir taking over received on ports it opened
/// beside the old one's, which the old one forwarded. Returns how many.
pub(crate) fn drain(queues: &mut PortQueues) -> u64 {
    let mut batch: Batch<Mbuf> = Batch::new();
    let mut dropped = 0u64;
    for q in queues.iter_mut().flatten().flatten() {
        let mut n = 0;
        while n < DRAIN_MAX {
            let got = q.rx_burst(&mut batch);
            if got == 0 {
                break;
            }
            n += got;
            batch.clear();
        }
        dropped += n as u64;
    }
    dropped
}
