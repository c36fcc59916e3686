//! Raw FFI to the system's DPDK (>= 22.11), found with pkg-config and bound with bindgen.
//!
//! No logic lives here: the safe wrappers are in `dataplane::dpdk`. Functions DPDK defines
//! `static inline` (the burst calls, mbuf alloc/free, `rte_errno`, `rte_lcore_id`, prefetch)
//! are exported by a small C shim as `weir_<name>`. The shim also reports facts only the C
//! compiler knows: the driver directory a shared-library DPDK loads its PMDs from
//! ([`weir_rte_eal_pmd_path`]) and the `rte_mbuf` layout ([`weir_rte_mbuf_layout`]), which the
//! tests compare with these bindings.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code)]
#![allow(clippy::all, clippy::pedantic, unsafe_op_in_unsafe_fn)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
