//! Ethdev ports: configuration (one rx/tx queue pair per worker, RSS with a symmetric key where
//! the device has it), start and stop, link state, counters, and [`DpdkQueue`], the burst I/O
//! of one queue pair.

use super::{check, DpdkError, Eal, Mbuf, MbufPool, PortId, QueueId, SocketId};
use crate::buf::Batch;
use crate::io::{LinkEvent, PacketIo, PortStats};
use dpdk_sys::rte_mbuf;
use std::ffi::{CStr, CString};
use std::ptr::NonNull;

/// How weir wants a port set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSettings {
    /// Receive/transmit queue pairs: one per worker.
    pub queues: u16,
    /// Receive descriptors per queue (adjusted to the device's limits).
    pub rx_descriptors: u16,
    /// Transmit descriptors per queue (adjusted to the device's limits).
    pub tx_descriptors: u16,
    /// Spread flows over the queues with RSS when the device can (and there is more than one
    /// queue).
    pub rss: bool,
    /// Receive every frame, whatever its destination MAC.
    pub promiscuous: bool,
    /// Largest IP packet the port must carry, bytes; the device MTU is raised to it if lower.
    pub mtu: u16,
    /// MAC address to give the device; its own when `None`.
    pub mac: Option<[u8; 6]>,
}

/// The Toeplitz key 0x6d5a repeated: with it the RSS hash of a flow is the same in both
/// directions (Woo and Park, "Scalable TCP Session Monitoring with Symmetric Receive-side
/// Scaling", 2012), so both directions of a connection land on one worker. Sized for the
/// longest key a NIC takes (52 bytes); it must outlive the port, as PMDs read it again on
/// restart.
static SYMMETRIC_RSS_KEY: [u8; 52] = {
    let mut k = [0u8; 52];
    let mut i = 0;
    while i < k.len() {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// Link state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Up or down.
    pub up: bool,
    /// Speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.up {
            return write!(f, "down");
        }
        write!(
            f,
            "up {} Mbit/s {}",
            self.speed_mbps,
            if self.full_duplex { "full" } else { "half" }
        )
    }
}

/// The device's own counters (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames received.
    pub ipackets: u64,
    /// Frames sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Frames dropped by the device because the receive queues were full.
    pub imissed: u64,
    /// Erroneous frames received.
    pub ierrors: u64,
    /// Frames that failed to send.
    pub oerrors: u64,
    /// Receive failures for want of an mbuf.
    pub rx_nombuf: u64,
}

/// Probes `device` (a vdev with its arguments, such as `net_af_packet0,iface=eth1`, or a PCI
/// address with its devargs) on the running EAL, as `--vdev` or `-a` would have at start-up:
/// how a process whose EAL left its ports alone ([`super::EalConfig::probe_later`]) gets them
/// once another process has let them go ([`Port::detach`]). A device already probed is left as
/// it is.
pub fn attach(_eal: &Eal, device: &str) -> Result<(), DpdkError> {
    if port_by_name(device).is_ok() {
        return Ok(());
    }
    let args = CString::new(device).map_err(|_| DpdkError {
        what: format!("device `{device}` contains a NUL byte"),
        errno: libc::EINVAL,
    })?;
    // SAFETY: the EAL is initialised (`_eal`); args is a valid C string, copied by DPDK.
    let ret = unsafe { dpdk_sys::rte_dev_probe(args.as_ptr()) };
    check(ret, || format!("probing device `{device}`"))?;
    Ok(())
}

/// A configured, started ethdev port. Stopped and closed on drop; drop it only after every
/// worker polling its queues has stopped.
#[derive(Debug)]
pub struct Port {
    id: PortId,
    name: String,
    driver: String,
    mac: [u8; 6],
    queues: u16,
    rss: bool,
    socket: SocketId,
    /// The kernel interface whose flags are the link (`net_af_packet`'s `iface`).
    kernel_iface: Option<String>,
    /// Closed already ([`Port::detach`]).
    closed: bool,
}

impl Port {
    /// Finds the port DPDK created for `device` (a vdev name such as `net_ring0`, or a PCI
    /// address), configures `settings.queues` queue pairs whose receive side fills from `pool`,
    /// starts it, and returns it with one [`DpdkQueue`] per queue pair.
    pub fn open(
        _eal: &Eal,
        device: &str,
        settings: &PortSettings,
        pool: &'static MbufPool,
    ) -> Result<(Port, Vec<DpdkQueue>), DpdkError> {
        let id = port_by_name(device)?;
        let ctx = |what: &str| format!("port {device}: {what}");
        let info = dev_info(id, device)?;
        let driver = if info.driver_name.is_null() {
            String::from("?")
        } else {
            // SAFETY: driver_name points to the driver's static NUL-terminated name.
            unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
        };
        let q = settings.queues.max(1);
        if q > info.max_rx_queues || q > info.max_tx_queues {
            let hint = if driver.contains("af_packet") {
                format!(" (net_af_packet: add qpairs={q} to the device's arguments)")
            } else {
                String::new()
            };
            return Err(DpdkError {
                what: ctx(&format!(
                    "{q} queue pairs wanted (one per worker), the device has {} rx and {} tx \
                     queues{hint}",
                    info.max_rx_queues, info.max_tx_queues
                )),
                errno: libc::EINVAL,
            });
        }

        let mut conf = dpdk_sys::rte_eth_conf::default();
        // SAFETY: the shim returns a constant.
        let wanted_hf = unsafe { dpdk_sys::weir_rte_eth_rss_hf_l3_l4() };
        let rss_hf = wanted_hf & info.flow_type_rss_offloads;
        let rss = settings.rss && q > 1 && rss_hf != 0;
        if rss {
            conf.rxmode.mq_mode = dpdk_sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            let key_len = match info.hash_key_size {
                0 => 40,
                n => n.min(u8::try_from(SYMMETRIC_RSS_KEY.len()).unwrap_or(u8::MAX)),
            };
            // PMDs only read the key through this pointer; the static outlives the port.
            conf.rx_adv_conf.rss_conf.rss_key = SYMMETRIC_RSS_KEY.as_ptr().cast_mut();
            conf.rx_adv_conf.rss_conf.rss_key_len = key_len;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        } else if q > 1 {
            tracing::info!(
                port = device,
                driver = %driver,
                "no RSS on this device: its driver spreads flows over the queues by itself \
                 (net_af_packet and net_tap: the kernel's symmetric flow hash)"
            );
        }
        // SAFETY: the shim returns a constant.
        let fast_free = unsafe { dpdk_sys::weir_rte_eth_tx_offload_mbuf_fast_free() };
        // weir's mbufs all come from one pool and are never shared (refcount 1): the condition
        // for fast free.
        conf.txmode.offloads |= fast_free & info.tx_offload_capa;

        // SAFETY: id is a valid port; conf is a fully initialised rte_eth_conf whose RSS key
        // pointer is 'static.
        check(unsafe { dpdk_sys::rte_eth_dev_configure(id.0, q, q, &conf) }, || {
            ctx(&format!("configuring {q} queue pairs"))
        })?;

        let mut rxd = settings.rx_descriptors;
        let mut txd = settings.tx_descriptors;
        // SAFETY: id is a configured port; the two counts are valid for writing.
        let ret = unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id.0, &mut rxd, &mut txd) };
        check(ret, || ctx("adjusting descriptor counts"))?;
        // SAFETY: id is a valid port.
        let socket = SocketId(unsafe { dpdk_sys::rte_eth_dev_socket_id(id.0) });
        for queue in 0..q {
            // SAFETY: id is configured with q rx queues; a NULL rxconf takes the device's
            // defaults; `pool` is a live pktmbuf pool that outlives the port.
            let ret = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    id.0,
                    queue,
                    rxd,
                    socket_for_setup(socket),
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            check(ret, || ctx(&format!("setting up rx queue {queue} ({rxd} descriptors)")))?;
            let mut txconf = info.default_txconf;
            txconf.offloads = conf.txmode.offloads;
            // SAFETY: id is configured with q tx queues; txconf is initialised.
            let ret = unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(
                    id.0,
                    queue,
                    txd,
                    socket_for_setup(socket),
                    &txconf,
                )
            };
            check(ret, || ctx(&format!("setting up tx queue {queue} ({txd} descriptors)")))?;
        }

        let mut dev_mtu = 0u16;
        // SAFETY: id is valid; dev_mtu is valid for writing.
        let have_mtu = unsafe { dpdk_sys::rte_eth_dev_get_mtu(id.0, &mut dev_mtu) } == 0;
        if have_mtu && dev_mtu < settings.mtu {
            // SAFETY: id is a valid, configured port.
            check(unsafe { dpdk_sys::rte_eth_dev_set_mtu(id.0, settings.mtu) }, || {
                ctx(&format!("raising the device MTU from {dev_mtu} to {}", settings.mtu))
            })?;
        }

        if let Some(mac) = settings.mac {
            let mut addr = dpdk_sys::rte_ether_addr { addr_bytes: mac };
            // SAFETY: id is valid; addr is an initialised rte_ether_addr.
            let ret = unsafe { dpdk_sys::rte_eth_dev_default_mac_addr_set(id.0, &mut addr) };
            if ret < 0 {
                tracing::warn!(
                    port = device,
                    error = %DpdkError::from_ret(ret, "setting the MAC"),
                    "the device keeps its own MAC; weir answers for the configured one (the \
                     port is promiscuous)"
                );
            }
        }

        // SAFETY: id is configured with all its queues set up.
        check(unsafe { dpdk_sys::rte_eth_dev_start(id.0) }, || ctx("starting"))?;
        let port = Port {
            id,
            name: device.to_owned(),
            driver,
            mac: [0; 6],
            queues: q,
            rss,
            socket,
            kernel_iface: None,
            closed: false,
        };
        // From here on `port` stops and closes the device if anything fails.
        let mut port = port;
        if settings.promiscuous || settings.mac.is_some() {
            // SAFETY: id is a started port.
            let ret = unsafe { dpdk_sys::rte_eth_promiscuous_enable(id.0) };
            if ret < 0 {
                tracing::warn!(port = device, error = %DpdkError::from_ret(ret, "promiscuous mode"), "not promiscuous");
            }
        }
        let mut addr = dpdk_sys::rte_ether_addr::default();
        // SAFETY: id is valid; addr is valid for writing.
        check(unsafe { dpdk_sys::rte_eth_macaddr_get(id.0, &mut addr) }, || {
            ctx("reading the MAC")
        })?;
        port.mac = settings.mac.unwrap_or(addr.addr_bytes);
        // net_tap reads its link by the TAP's name in weir's network namespace, which is wrong
        // once the TAP has been moved to another: its link is not watched.
        let watch_link = driver_watches_link(&port.driver);
        let kernel_iface =
            if port.driver == "net_af_packet" { devarg(device, "iface") } else { None };
        port.kernel_iface.clone_from(&kernel_iface);
        let queues = (0..q)
            .map(|queue| DpdkQueue {
                port: id,
                queue: QueueId(queue),
                stats: PortStats::default(),
                name: device.to_owned(),
                watch_link,
                kernel_iface: kernel_iface.clone(),
                down: false,
            })
            .collect();
        tracing::info!(
            port = device,
            driver = %port.driver,
            queues = q,
            rss = port.rss,
            rx_descriptors = rxd,
            tx_descriptors = txd,
            link = %port.link(),
            "DPDK port started"
        );
        Ok((port, queues))
    }

    /// The port id.
    pub fn id(&self) -> PortId {
        self.id
    }

    /// The device name it was opened by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The driver (PMD) name, e.g. `net_af_packet`.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The MAC weir uses on this port.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Queue pairs configured.
    pub fn queues(&self) -> u16 {
        self.queues
    }

    /// Whether RSS spreads flows over the queues.
    pub fn rss(&self) -> bool {
        self.rss
    }

    /// The NUMA socket of the device.
    pub fn socket(&self) -> SocketId {
        self.socket
    }

    /// The link state, without waiting (for `net_af_packet`, whose driver always says up,
    /// its interface's `IFF_RUNNING`).
    pub fn link(&self) -> Link {
        let mut link =
            link_of(self.id).unwrap_or(Link { up: false, speed_mbps: 0, full_duplex: false });
        if let Some(iface) = &self.kernel_iface {
            link.up = crate::io::sys::if_flags(iface)
                .is_ok_and(|f| f & libc::IFF_RUNNING.unsigned_abs() != 0);
        }
        link
    }

    /// The device's counters.
    pub fn stats(&self) -> Result<DeviceStats, DpdkError> {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: id is valid; s is valid for writing.
        check(unsafe { dpdk_sys::rte_eth_stats_get(self.id.0, &mut s) }, || {
            format!("port {}: reading stats", self.name)
        })?;
        Ok(DeviceStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// The device's extended counters, by name (control path: allocates).
    pub fn xstats(&self) -> Result<Vec<(String, u64)>, DpdkError> {
        let what = || format!("port {}: reading extended stats", self.name);
        // SAFETY: id is valid; a NULL array of size 0 asks for the count.
        let n = check(
            unsafe { dpdk_sys::rte_eth_xstats_get_names(self.id.0, std::ptr::null_mut(), 0) },
            what,
        )?;
        let n = usize::try_from(n).unwrap_or(0);
        let mut names = vec![dpdk_sys::rte_eth_xstat_name { name: [0; 64] }; n];
        let mut values = vec![dpdk_sys::rte_eth_xstat::default(); n];
        let cap = u32::try_from(n).unwrap_or(u32::MAX);
        // SAFETY: both arrays hold `cap` elements.
        let got_names = check(
            unsafe { dpdk_sys::rte_eth_xstats_get_names(self.id.0, names.as_mut_ptr(), cap) },
            what,
        )?;
        // SAFETY: as above.
        let got_values = check(
            unsafe { dpdk_sys::rte_eth_xstats_get(self.id.0, values.as_mut_ptr(), cap) },
            what,
        )?;
        let m = usize::try_from(got_names.min(got_values)).unwrap_or(0).min(n);
        Ok(values[..m]
            .iter()
            .filter_map(|v| {
                let name = names.get(usize::try_from(v.id).ok()?)?;
                // SAFETY: DPDK NUL-terminates names within their 64 bytes; the array is zeroed
                // beforehand, so the last byte is NUL in any case.
                let s = unsafe { CStr::from_ptr(name.name.as_ptr()) };
                Some((s.to_string_lossy().into_owned(), v.value))
            })
            .collect())
    }
}

impl Port {
    /// Stops and closes the port and removes its device from this process's EAL, so that
    /// another process may probe it (a hot restart's cut-over), or this one again with
    /// [`attach`]. No worker may poll its queues from now on (the caller's to ensure: the
    /// workers are paused). Closing drops the frames waiting in its receive queues.
    pub fn detach(mut self) -> Result<(), DpdkError> {
        let this = &mut self;
        let info = dev_info(this.id, &this.name)?;
        this.closed = true;
        // SAFETY: id is a started port that no worker polls (the caller's contract). Stop,
        // close, then remove the device that was probed for it (still registered with its bus
        // after the close): the order DPDK requires, and testpmd's `port detach`.
        let closed = unsafe {
            let _ = dpdk_sys::rte_eth_dev_stop(this.id.0);
            dpdk_sys::rte_eth_dev_close(this.id.0)
        };
        check(closed, || format!("port {}: closing", this.name))?;
        if info.device.is_null() {
            return Ok(());
        }
        // SAFETY: info.device is the rte_device of the port just closed, which its bus keeps
        // until it is removed here (once).
        let ret = unsafe { dpdk_sys::rte_dev_remove(info.device) };
        check(ret, || format!("port {}: removing its device", this.name))?;
        Ok(())
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // SAFETY: id is a started port; the workers polling it have stopped (the type's
        // contract). Stop then close is the order DPDK requires.
        unsafe {
            let _ = dpdk_sys::rte_eth_dev_stop(self.id.0);
            let _ = dpdk_sys::rte_eth_dev_close(self.id.0);
        }
    }
}

/// The link state of port `id`, without waiting, or why it could not be read.
fn link_of(id: PortId) -> Result<Link, DpdkError> {
    let mut l = dpdk_sys::rte_eth_link::default();
    // SAFETY: id is a valid port; l is valid for writing.
    let ret = unsafe { dpdk_sys::rte_eth_link_get_nowait(id.0, &mut l) };
    if ret < 0 {
        return Err(DpdkError::from_ret(ret, "reading the link"));
    }
    Ok(Link {
        up: u32::from(l.link_status()) == dpdk_sys::RTE_ETH_LINK_UP,
        speed_mbps: l.link_speed,
        full_duplex: u32::from(l.link_duplex()) == dpdk_sys::RTE_ETH_LINK_FULL_DUPLEX,
    })
}

fn socket_for_setup(s: SocketId) -> u32 {
    // rte_eth_*_queue_setup takes the socket as unsigned; SOCKET_ID_ANY (-1) passes as its
    // two's complement, as in C.
    u32::from_ne_bytes(s.0.to_ne_bytes())
}

fn port_by_name(device: &str) -> Result<PortId, DpdkError> {
    let name = device.split(',').next().unwrap_or(device);
    let cname = CString::new(name).map_err(|_| DpdkError {
        what: format!("device name `{name}` contains a NUL byte"),
        errno: libc::EINVAL,
    })?;
    let mut id = 0u16;
    // SAFETY: cname is a valid C string; id is valid for writing.
    let ret = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
    if ret < 0 {
        let why = if name.contains(':') {
            "is the NIC bound to vfio-pci, uio_pci_generic or igb_uio? (nic-config status)".into()
        } else {
            format!(
                "is its driver loaded? DPDK's driver directory is {}",
                super::driver_dir().unwrap_or_else(|| "not set (static build)".into())
            )
        };
        return Err(DpdkError {
            what: format!("no DPDK port named `{name}`: the EAL did not create it ({why})"),
            errno: ret.saturating_neg(),
        });
    }
    Ok(PortId(id))
}

fn dev_info(id: PortId, device: &str) -> Result<dpdk_sys::rte_eth_dev_info, DpdkError> {
    let mut info = dpdk_sys::rte_eth_dev_info::default();
    // SAFETY: id is valid; info is valid for writing.
    check(unsafe { dpdk_sys::rte_eth_dev_info_get(id.0, &mut info) }, || {
        format!("port {device}: reading device info")
    })?;
    Ok(info)
}

/// The value of argument `key` in a device string (`net_af_packet0,iface=eth1,qpairs=2`).
fn devarg(device: &str, key: &str) -> Option<String> {
    device.split(',').skip(1).find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

/// Whether the link state driver `driver` reports can be trusted (see [`DpdkQueue`]).
fn driver_watches_link(driver: &str) -> bool {
    driver != "net_tap"
}

/// One queue pair of a started port, polled by one worker. It counts frames; bytes are in the
/// device's own counters ([`Port::stats`]), which cost nothing per packet.
///
/// Its worker looks at the port's link once a second ([`PacketIo::check_link`]): a link that
/// goes down or comes back is logged, and weir's neighbours on it are learned anew. The port
/// keeps being polled meanwhile (a receive burst on a down port costs next to nothing, and a
/// driver may be wrong about its link). Not for `net_tap`, whose link reads false once its
/// TAP has moved to another namespace. `net_af_packet` (DPDK 22.11) reports its link up for
/// as long as it runs: its interface's flags are read instead (`IFF_RUNNING`, as later
/// releases of the driver do).
#[derive(Debug)]
pub struct DpdkQueue {
    port: PortId,
    queue: QueueId,
    stats: PortStats,
    /// The device, for the log.
    name: String,
    /// Whether [`PacketIo::check_link`] looks at the link.
    watch_link: bool,
    /// The kernel interface whose flags are the link (`net_af_packet`'s `iface`).
    kernel_iface: Option<String>,
    /// The link was down at the last look.
    down: bool,
}

impl DpdkQueue {
    /// The port this queue belongs to.
    pub fn port(&self) -> PortId {
        self.port
    }

    /// The queue number.
    pub fn queue(&self) -> QueueId {
        self.queue
    }

    /// Starts its counters from `stats` (a hot restart goes on from its predecessor's).
    pub fn carry_stats(&mut self, stats: PortStats) {
        self.stats = stats;
    }
}

impl PacketIo for DpdkQueue {
    type Buf = Mbuf;

    #[inline]
    fn rx_burst(&mut self, batch: &mut Batch<Mbuf>) -> usize {
        let start = batch.len();
        let room = u16::try_from(batch.remaining_capacity()).unwrap_or(u16::MAX);
        if room == 0 {
            return 0;
        }
        // SAFETY: the batch has `room` free slots after `start`; Mbuf is a transparent
        // NonNull<rte_mbuf>, so they can receive the mbuf pointers the PMD writes. The port
        // and queue were set up by `Port::open` and the port is running.
        let n = unsafe {
            let spare = batch.as_mut_ptr().add(start).cast::<*mut rte_mbuf>();
            dpdk_sys::weir_rte_eth_rx_burst(self.port.0, self.queue.0, spare, room)
        };
        // SAFETY: the PMD wrote `n` <= room valid, non-null mbufs, now ours. They are what an
        // Mbuf may hold: a PMD hands out mbufs it allocated (reference count 1), and ports are
        // configured without scatter, so a frame too long for one mbuf is dropped by the
        // device, never chained.
        unsafe { batch.set_len(start + usize::from(n)) };
        debug_assert!(batch[start..].iter().all(|m| Mbuf::is_simple(m.raw())));
        self.stats.rx_packets += u64::from(n);
        usize::from(n)
    }

    #[inline]
    fn tx_burst(&mut self, batch: &mut Batch<Mbuf>) -> usize {
        let len = batch.len();
        if len == 0 {
            return 0;
        }
        let pkts = batch.as_mut_ptr().cast::<*mut rte_mbuf>();
        // A batch holds at most BURST (32) frames.
        let n = u16::try_from(len).unwrap_or(u16::MAX);
        // SAFETY: the batch holds `len` owned mbufs, laid out as *mut rte_mbuf (transparent).
        // The PMD takes ownership of the first `sent` of them.
        let sent = usize::from(unsafe {
            dpdk_sys::weir_rte_eth_tx_burst(self.port.0, self.queue.0, pkts, n)
        });
        // SAFETY: the batch gives up all `len` elements without dropping them: the first `sent`
        // now belong to the PMD, and the rest are taken back just below.
        unsafe { batch.set_len(0) };
        for i in sent..len {
            // SAFETY: element i (i >= sent) was not taken by the PMD and is still ours, read
            // once. The transmit queue is full: it is dropped (freed) and counted.
            drop(unsafe { Mbuf::from_raw(NonNull::new_unchecked(*pkts.add(i))) });
        }
        self.stats.tx_packets += sent as u64;
        self.stats.tx_dropped += (len - sent) as u64;
        sent
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    /// Nothing to hand over: the port cannot be open in two processes, so the next weir
    /// probes and opens it again once this one let it go ([`Port::detach`]).
    fn handover(&self) -> Option<crate::io::QueueHandover> {
        Some(crate::io::QueueHandover {
            fd: None,
            position: crate::io::QueuePosition::Reopened,
            stats: self.stats,
        })
    }

    fn link_up(&self) -> bool {
        !self.down
    }

    fn check_link(&mut self) -> Option<LinkEvent> {
        if !self.watch_link {
            return None;
        }
        let link: Result<bool, String> = match &self.kernel_iface {
            Some(iface) => crate::io::sys::if_flags(iface)
                .map(|f| f & libc::IFF_RUNNING.unsigned_abs() != 0)
                .map_err(|e| format!("{iface}: {e}")),
            None => link_of(self.port).map(|l| l.up).map_err(|e| e.to_string()),
        };
        let down = link != Ok(true);
        let iface = self.name.clone();
        match (std::mem::replace(&mut self.down, down), down) {
            (false, true) => Some(LinkEvent::Down {
                iface,
                reason: link.err().unwrap_or_else(|| "down".to_owned()),
            }),
            (true, false) => Some(LinkEvent::Up { iface, reopened: false }),
            _ => None,
        }
    }
}
