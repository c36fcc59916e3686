/* Exported wrappers for the DPDK functions that are `static inline` in its headers (and so have
 * no symbol to link against), plus a few facts only the C compiler knows: the PMD directory and
 * the rte_mbuf layout, so Rust can check its bindings against them. */
#ifndef WEIR_DPDK_SHIM_H
#define WEIR_DPDK_SHIM_H

#include <stddef.h>
#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

uint16_t weir_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
			       uint16_t nb_pkts);
uint16_t weir_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
			       uint16_t nb_pkts);
struct rte_mbuf *weir_rte_pktmbuf_alloc(struct rte_mempool *mp);
int weir_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int count);
void weir_rte_pktmbuf_free(struct rte_mbuf *m);
void *weir_rte_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t weir_rte_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t weir_rte_pktmbuf_tailroom(const struct rte_mbuf *m);
uint16_t weir_rte_pktmbuf_data_room_size(struct rte_mempool *mp);
uint16_t weir_rte_mbuf_refcnt_read(const struct rte_mbuf *m);
uint16_t weir_rte_mbuf_refcnt_update(struct rte_mbuf *m, int16_t value);
int weir_rte_errno(void);
unsigned int weir_rte_lcore_id(void);
void weir_rte_prefetch0(const volatile void *p);
uint64_t weir_rte_rdtsc(void);

/* RTE_EAL_PMD_PATH: where a shared-library DPDK loads its drivers from ("" if none). */
const char *weir_rte_eal_pmd_path(void);
/* RTE_PKTMBUF_HEADROOM: bytes reserved in front of every received frame. */
uint16_t weir_rte_pktmbuf_headroom_default(void);

/* Flag sets that DPDK defines with RTE_BIT64(), which bindgen cannot evaluate. */
uint64_t weir_rte_eth_rss_hf_l3_l4(void);          /* RTE_ETH_RSS_IP | _TCP | _UDP */
uint64_t weir_rte_eth_tx_offload_mbuf_fast_free(void); /* RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE */

/* offsetof() of the rte_mbuf fields the dataplane reads directly, and sizeof(struct rte_mbuf). */
struct weir_mbuf_layout {
	size_t size;
	size_t buf_addr;
	size_t data_off;
	size_t refcnt;
	size_t nb_segs;
	size_t port;
	size_t ol_flags;
	size_t pkt_len;
	size_t data_len;
	size_t buf_len;
	size_t pool;
	size_t next;
};
void weir_rte_mbuf_layout(struct weir_mbuf_layout *out);

#endif
