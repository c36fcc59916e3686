//! The Environment Abstraction Layer: initialised once per process from weir's configuration.

use super::{DpdkError, LcoreId};
use std::ffi::{c_char, CString};
use std::marker::PhantomData;
use std::sync::{Mutex, OnceLock};

/// What weir asks of the EAL. [`EalConfig::args`] turns it into EAL command-line arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EalConfig {
    /// CPUs the main (control) lcore may run on; the workers pin themselves. Empty: all CPUs
    /// this process may use.
    pub control_cpus: Vec<usize>,
    /// PCI devices to probe (`-a`), each an address with optional `,devargs`. When empty, the
    /// PCI bus is not scanned at all (`--no-pci`).
    pub pci: Vec<String>,
    /// Virtual devices (`--vdev`), each `driverN[,devargs]`, e.g. `net_af_packet0,iface=eth1`.
    pub vdevs: Vec<String>,
    /// Back memory with hugepages; without them `--no-huge` (normal pages, fine for vdevs).
    pub hugepages: bool,
    /// Memory to reserve, MiB (`-m`); DPDK's default when `None`.
    pub memory_mb: Option<u32>,
    /// Runtime file prefix (`--file-prefix`), which lets secondary processes (dpdk-proc-info,
    /// dpdk-pdump) attach. `None`: no shared runtime files at all (`--in-memory` with
    /// hugepages; without them, where DPDK 22.11 refuses `--in-memory`, `--no-shconf` and a
    /// prefix unique to the process).
    pub file_prefix: Option<String>,
    /// Extra driver libraries or directories to load (`-d`), besides DPDK's own driver
    /// directory, which a shared-library DPDK loads by itself.
    pub driver_paths: Vec<String>,
    /// EAL log level (`--log-level`), e.g. `notice`.
    pub log_level: Option<String>,
    /// Further arguments, appended as they are.
    pub extra: Vec<String>,
    /// Probe none of `pci` and `vdevs` at start-up: another process holds them until it lets
    /// them go (a hot restart), and [`super::attach`] probes each then. The PCI bus is still
    /// scanned, with an allow list of the one address no PMD drives (the host bridge's, as
    /// DPDK's grout starts): no other device on it is taken.
    pub probe_later: bool,
}

/// The PCI address of the host bridge, which no PMD drives: allowed alone, the EAL probes
/// nothing on the PCI bus at start-up yet can probe a device later.
const NO_PCI_DEVICE: &str = "0000:00:00.0";

impl EalConfig {
    /// The EAL arguments, program name first.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["weir".to_owned()];
        let cpus = if self.control_cpus.is_empty() {
            core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id).collect()
        } else {
            self.control_cpus.clone()
        };
        // One lcore (the main one, for the control thread), allowed on the listed CPUs; the
        // workers are registered threads and pin themselves.
        if !cpus.is_empty() {
            let list: Vec<String> = cpus.iter().map(ToString::to_string).collect();
            a.push(format!("--lcores=0@({})", list.join(",")));
        }
        if self.pci.is_empty() {
            a.push("--no-pci".into());
        } else if self.probe_later {
            a.push("-a".into());
            a.push(NO_PCI_DEVICE.into());
        }
        if !self.probe_later {
            for p in &self.pci {
                a.push("-a".into());
                a.push(p.clone());
            }
            for v in &self.vdevs {
                a.push("--vdev".into());
                a.push(v.clone());
            }
        }
        if !self.hugepages {
            a.push("--no-huge".into());
        }
        if let Some(m) = self.memory_mb {
            a.push("-m".into());
            a.push(m.to_string());
        }
        match (&self.file_prefix, self.hugepages) {
            (Some(p), _) => a.push(format!("--file-prefix={p}")),
            (None, true) => a.push("--in-memory".into()),
            (None, false) => {
                a.push("--no-shconf".into());
                a.push(format!("--file-prefix=weir-{}", std::process::id()));
            }
        }
        for d in &self.driver_paths {
            a.push("-d".into());
            a.push(d.clone());
        }
        if let Some(l) = &self.log_level {
            a.push(format!("--log-level={l}"));
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// The initialised EAL. There is at most one per process, for the rest of the process.
#[derive(Debug)]
pub struct Eal {
    args: Vec<String>,
}

/// The process's EAL, or why initialising it failed: the EAL cannot be initialised twice, so a
/// failure is remembered too.
static EAL: Mutex<Option<Result<&'static Eal, DpdkError>>> = Mutex::new(None);

impl Eal {
    /// Initialises the EAL with `cfg`, or returns the EAL this process already initialised
    /// with the same arguments. A second initialisation with other arguments is an error: the
    /// EAL cannot be initialised twice.
    pub fn init(cfg: &EalConfig) -> Result<&'static Eal, DpdkError> {
        let args = cfg.args();
        let mut slot = EAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(done) = &*slot {
            let eal = done.clone()?;
            if eal.args == args {
                return Ok(eal);
            }
            return Err(DpdkError {
                what: format!(
                    "the EAL is already initialised with `{}`; it cannot be initialised again \
                     with `{}`",
                    eal.args.join(" "),
                    args.join(" ")
                ),
                errno: libc::EALREADY,
            });
        }
        let mut cstrings = Vec::with_capacity(args.len());
        for a in &args {
            cstrings.push(CString::new(a.as_str()).map_err(|_| DpdkError {
                what: format!("EAL argument `{a}` contains a NUL byte"),
                errno: libc::EINVAL,
            })?);
        }
        // The EAL may keep pointers into argv (and reorders it): give it storage that lives for
        // the rest of the process. This happens once.
        let argv: &'static mut [*mut c_char] = Box::leak(
            cstrings.into_iter().map(CString::into_raw).collect::<Vec<_>>().into_boxed_slice(),
        );
        let argc = i32::try_from(argv.len()).unwrap_or(i32::MAX);
        // SAFETY: argv holds argc valid NUL-terminated strings that are never freed; this is
        // the process's only call (guarded by the EAL mutex, and `slot` records success).
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            let err = DpdkError::from_rte_errno(format!(
                "initialising the DPDK EAL with `{}` (its own message is above)",
                args.join(" ")
            ));
            *slot = Some(Err(err.clone()));
            return Err(err);
        }
        let eal: &'static Eal = Box::leak(Box::new(Eal { args }));
        *slot = Some(Ok(eal));
        if cfg.file_prefix.is_none() && !cfg.hugepages {
            remove_runtime_dir_at_exit();
        }
        tracing::info!(version = %super::version(), args = %eal.args.join(" "), "DPDK EAL up");
        Ok(eal)
    }

    /// The arguments the EAL was initialised with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Ethdev ports the EAL found (PCI devices probed and vdevs created).
    pub fn ports_available(&self) -> u16 {
        // SAFETY: the EAL is initialised; the call only counts ports.
        unsafe { dpdk_sys::rte_eth_dev_count_avail() }
    }

    /// Registers the calling thread with the EAL: it gets an lcore id, and with it per-lcore
    /// mempool caches. Unregistered when the guard drops (on the same thread).
    pub fn register_thread(&self) -> Result<LcoreGuard, DpdkError> {
        // SAFETY: the EAL is initialised; registering a non-EAL thread has no other
        // precondition.
        let ret = unsafe { dpdk_sys::rte_thread_register() };
        if ret < 0 {
            return Err(DpdkError::from_rte_errno("registering a worker thread with the EAL"));
        }
        // SAFETY: reads the calling thread's lcore id.
        let id = unsafe { dpdk_sys::weir_rte_lcore_id() };
        Ok(LcoreGuard { id: LcoreId(id), _thread: PhantomData })
    }

    /// The TSC frequency the EAL measured, Hz.
    pub fn tsc_hz(&self) -> u64 {
        // SAFETY: the EAL is initialised, which calibrates the TSC.
        unsafe { dpdk_sys::rte_get_tsc_hz() }
    }
}

/// The runtime directory of a process without shared files (`--no-shconf`, a prefix unique to
/// the process) holds nothing another process uses (only the telemetry socket): remove it when
/// the process exits so none pile up.
fn remove_runtime_dir_at_exit() {
    static DIR: OnceLock<String> = OnceLock::new();
    extern "C" fn remove() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    // SAFETY: returns a pointer to the EAL's static, NUL-terminated runtime directory path.
    let dir = unsafe { std::ffi::CStr::from_ptr(dpdk_sys::rte_eal_get_runtime_dir()) };
    if let Ok(dir) = dir.to_str() {
        if !dir.is_empty() && DIR.set(dir.to_owned()).is_ok() {
            // SAFETY: `remove` is a plain extern "C" fn that neither unwinds nor touches the EAL.
            unsafe { libc::atexit(remove) };
        }
    }
}

/// A thread's EAL registration; dropping it unregisters the thread.
#[derive(Debug)]
pub struct LcoreGuard {
    id: LcoreId,
    /// Registration belongs to the thread: the guard must not move to another.
    _thread: PhantomData<*const ()>,
}

impl LcoreGuard {
    /// The lcore id the thread got.
    pub fn lcore(&self) -> LcoreId {
        self.id
    }
}

impl Drop for LcoreGuard {
    fn drop(&mut self) {
        // SAFETY: called on the thread that registered (the guard is !Send), once.
        unsafe { dpdk_sys::rte_thread_unregister() };
    }
}
