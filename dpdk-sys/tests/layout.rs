//! The `rte_mbuf` layout bindgen derived matches what the C compiler uses with DPDK's own
//! headers and flags: the dataplane reads these fields directly on every packet.

use dpdk_sys::{rte_mbuf, weir_mbuf_layout, weir_rte_mbuf_layout};
use std::mem::{offset_of, size_of};

#[test]
fn rte_mbuf_fields_the_dataplane_reads_are_where_c_puts_them() {
    let mut c = weir_mbuf_layout::default();
    // SAFETY: the shim only writes the fields of the struct it is given.
    unsafe { weir_rte_mbuf_layout(&mut c) };
    assert_eq!(size_of::<rte_mbuf>(), c.size, "sizeof(struct rte_mbuf)");
    let rust = [
        ("buf_addr", offset_of!(rte_mbuf, buf_addr), c.buf_addr),
        ("data_off", offset_of!(rte_mbuf, data_off), c.data_off),
        ("refcnt", offset_of!(rte_mbuf, refcnt), c.refcnt),
        ("nb_segs", offset_of!(rte_mbuf, nb_segs), c.nb_segs),
        ("port", offset_of!(rte_mbuf, port), c.port),
        ("ol_flags", offset_of!(rte_mbuf, ol_flags), c.ol_flags),
        ("pkt_len", offset_of!(rte_mbuf, pkt_len), c.pkt_len),
        ("data_len", offset_of!(rte_mbuf, data_len), c.data_len),
        ("buf_len", offset_of!(rte_mbuf, buf_len), c.buf_len),
        ("pool", offset_of!(rte_mbuf, pool), c.pool),
        ("next", offset_of!(rte_mbuf, next), c.next),
    ];
    for (field, r, c) in rust {
        assert_eq!(r, c, "offset of rte_mbuf.{field}: bindgen says {r}, the C compiler {c}");
    }
    // The fields read per packet share the first cache line.
    for (field, r, _) in rust {
        if field != "pool" && field != "next" {
            assert!(r < 64, "rte_mbuf.{field} is off the first cache line");
        }
    }
}

#[test]
fn the_shim_reports_the_driver_directory_and_headroom() {
    // SAFETY: both return constants compiled into the shim.
    let (dir, headroom) = unsafe {
        (
            std::ffi::CStr::from_ptr(dpdk_sys::weir_rte_eal_pmd_path()),
            dpdk_sys::weir_rte_pktmbuf_headroom_default(),
        )
    };
    assert!(headroom >= 64, "RTE_PKTMBUF_HEADROOM = {headroom}");
    // Debian's shared-library DPDK loads its PMDs from a directory; a static build has none.
    let dir = dir.to_string_lossy();
    if !dir.is_empty() {
        assert!(std::path::Path::new(&*dir).is_dir(), "RTE_EAL_PMD_PATH {dir} is not a directory");
    }
}
