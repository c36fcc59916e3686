#!/bin/bash
# weir as the device under test of ../shared/bench/fwd-rig.sh:
#   fwd-rig.sh cmd:"WEIR=target/release/weir bench/weir-dut.sh"
# Reads the rig's variables (DUT_IN, DUT_OUT, SINK_MAC, SRC_IP, DST_IP), writes a config that
# routes DST_IP out of DUT_OUT to the sink, and runs weir with one busy-polling worker on the
# core the rig gives it. TX_MODE=sendmmsg|ring picks the af_packet transmit path;
# BACKEND=dpdk runs weir on DPDK's net_af_packet vdevs instead (the ports testpmd uses in
# `fwd-rig.sh testpmd`, with the same default vdev arguments). SERVICES=N makes DST_IP:9/udp an
# L4 service (DNAT to 198.19.0.2:9, the sink) among N services, as `fwd-rig.sh -r N kernel`
# puts its DNAT rule behind N-1 others.
set -euo pipefail
WEIR=${WEIR:-target/release/weir}
CFG=$(mktemp --suffix=.yaml)
trap 'rm -f "$CFG"' EXIT
cat >"$CFG" <<YAML
workers:
  - core: ${DUT_CORE:-1}
idle:
  policy: busy_poll
$(if [ "${BACKEND:-af_packet}" = dpdk ]; then cat <<PORTS
ports:
  - name: in
    backend: dpdk
    device: net_af_packet0,iface=$DUT_IN
    addresses: [198.18.0.254/24]
  - name: out
    backend: dpdk
    device: net_af_packet1,iface=$DUT_OUT
    addresses: [198.19.0.1/24]
PORTS
else cat <<PORTS
ports:
  - name: in
    backend: af_packet
    interface: $DUT_IN
    addresses: [198.18.0.254/24]
    af_packet: { tx_mode: ${TX_MODE:-sendmmsg} }
  - name: out
    backend: af_packet
    interface: $DUT_OUT
    addresses: [198.19.0.1/24]
    af_packet: { tx_mode: ${TX_MODE:-sendmmsg} }
PORTS
fi)
$(if [ "${SERVICES:-0}" -gt 0 ]; then
  echo "mesh: { flows_per_worker: 262144, udp_timeout_ms: 30000 }"
  echo "clusters:"
  echo "  - { name: sink, policy: maglev, endpoints: [ { address: 198.19.0.2, port: 9 } ] }"
  echo "services:"
  echo "  - { name: rig, vip: $DST_IP, port: 9, protocol: udp, cluster: sink, mode: dnat }"
  # The other services, on VIPs no packet goes to (198.19.16.0/20 and up).
  for i in $(seq 2 "$SERVICES"); do
    echo "  - { name: s$i, vip: 198.19.$((16 + i / 256 % 240)).$((i % 256)), port: $((1000 + i / 61440)), protocol: udp, cluster: sink, mode: dnat }"
  done
else
  echo "routes:"
  echo "  - { prefix: $DST_IP/32, port: out, via: 198.19.0.2 }"
fi)
neighbors:
  - { ip: 198.19.0.2, port: out, mac: "$SINK_MAC" }
  - { ip: $SRC_IP, port: in, mac: "$GEN_MAC" }
YAML
# Keep this namespace's kernel off the DUT's ports.
for d in "$DUT_IN" "$DUT_OUT"; do sysctl -qw "net.ipv6.conf.$d.disable_ipv6=1" || true; done
# Not exec: bash forwards SIGTERM to weir and waits, so the rig sees the final counters.
"$WEIR" run -c "$CFG" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid; rm -f "$CFG"' TERM INT
wait $pid
