//! DPDK: the EAL, ethdev ports and their queues, mbuf pools and an owning [`Mbuf`] that is the
//! pipeline's buffer on DPDK ports. This module is the only place weir calls DPDK; every
//! `unsafe` block in it says which DPDK contract makes it sound.
//!
//! Life cycle: [`Eal::init`] once per process (it cannot be undone), then [`MbufPool::create`]
//! and [`Port::open`] from the control thread; each worker thread registers itself with
//! [`Eal::register_thread`] (so it gets an lcore id and mempool caches) and polls the
//! [`DpdkQueue`]s it was given. Ports stop and close when dropped, after the workers are done.
//! Pools live until the process exits, like the native [`crate::mempool::Mempool`].

mod eal;
mod mbuf;
mod port;

pub use eal::{Eal, EalConfig, LcoreGuard};
pub use mbuf::{Mbuf, MbufPool};
pub use port::{attach, DeviceStats, DpdkQueue, Link, Port, PortSettings};

use std::ffi::CStr;
use std::fmt;

/// An ethdev port number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

/// A queue number on one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u16);

/// An EAL logical core id (a registered thread has one too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LcoreId(pub u32);

/// A NUMA socket; [`SocketId::ANY`] when it does not matter or is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketId(pub i32);

impl SocketId {
    /// No preference (`SOCKET_ID_ANY`).
    pub const ANY: SocketId = SocketId(dpdk_sys::SOCKET_ID_ANY);
}

/// A failed DPDK call: what was being done and the errno DPDK reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpdkError {
    /// What weir was doing, e.g. "configuring port net_ring0".
    pub what: String,
    /// The (positive) errno.
    pub errno: i32,
}

impl DpdkError {
    /// From `rte_errno`, for calls documented to set it (those returning -1 or NULL).
    pub fn from_rte_errno(what: impl Into<String>) -> Self {
        DpdkError { what: what.into(), errno: rte_errno() }
    }

    /// From a negative errno return value.
    pub fn from_ret(ret: i32, what: impl Into<String>) -> Self {
        DpdkError { what: what.into(), errno: ret.saturating_neg() }
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (errno {})", self.what, strerror(self.errno), self.errno)
    }
}

impl std::error::Error for DpdkError {}

/// Turns a DPDK return value (negative errno on failure) into a `Result`.
fn check(ret: i32, what: impl FnOnce() -> String) -> Result<i32, DpdkError> {
    if ret < 0 {
        Err(DpdkError::from_ret(ret, what()))
    } else {
        Ok(ret)
    }
}

/// The calling thread's `rte_errno`.
pub fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local integer; no preconditions.
    unsafe { dpdk_sys::weir_rte_errno() }
}

/// DPDK's message for an errno (its own codes included).
pub fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror accepts any value and returns a pointer to a NUL-terminated string
    // that stays valid at least until the next call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(errno)) }.to_string_lossy().into_owned()
}

/// The DPDK version string, e.g. "DPDK 22.11.4".
pub fn version() -> String {
    // SAFETY: rte_version returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(dpdk_sys::rte_version()) }.to_string_lossy().into_owned()
}

/// Bytes every mbuf keeps in front of a received frame (`RTE_PKTMBUF_HEADROOM`, fixed when
/// DPDK was built).
pub fn mbuf_headroom() -> u16 {
    // SAFETY: the shim returns a constant.
    unsafe { dpdk_sys::weir_rte_pktmbuf_headroom_default() }
}

/// The directory a shared-library DPDK loads its drivers (PMDs) from, if it has one.
pub fn driver_dir() -> Option<String> {
    // SAFETY: the shim returns a pointer to a static NUL-terminated string.
    let dir = unsafe { CStr::from_ptr(dpdk_sys::weir_rte_eal_pmd_path()) };
    let dir = dir.to_string_lossy();
    (!dir.is_empty()).then(|| dir.into_owned())
}
