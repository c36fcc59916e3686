#!/bin/bash
# weir's demo: namespaces, weir between a client and a server on its own af_packet ports, on TAP
# ports, and on DPDK ports (net_af_packet vdevs), ping (IPv4, IPv6) and an iperf3 TCP transfer
# through it, counters, clean-up; then the L4 mesh: nginx backends behind a service VIP, curl
# through it, a live reload.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the demo needs root (network namespaces)" >&2; exit 1; }
bash scripts/deps.sh
cargo build --release --bin weir
./target/release/weir demo --backend af-packet
./target/release/weir demo --backend tap
./target/release/weir demo --backend dpdk
./target/release/weir demo --mesh
