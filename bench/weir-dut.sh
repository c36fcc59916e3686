#!/bin/bash
# weir as the device under test of ../shared/bench/fwd-rig.sh:
#   fwd-rig.sh cmd:"WEIR=target/release/weir bench/weir-dut.sh"
# Reads the rig's variables (DUT_IN, DUT_OUT, SINK_MAC, SRC_IP, DST_IP), writes a config that
# routes DST_IP out of DUT_OUT to the sink, and runs weir with one busy-polling worker on the
# core the rig gives it. TX_MODE=sendmmsg|ring picks the af_packet transmit path;
# BACKEND=dpdk runs weir on DPDK's net_af_packet vdevs instead (the ports testpmd uses in
# `fwd-rig.sh testpmd`, with the same default vdev arguments). SERVICES=N makes DST_IP:9/udp an
# L4 service (DNAT to 198.19.0.2:9, the sink) among N services, as `fwd-rig.sh -r N kernel`
# puts its DNAT rule behind N-1 others. XDS_UPDATES_PER_S=R takes those N services from xDS
# instead: target/release/examples/xds_churn (XDS_CHURN) serves them over ADS and then sends R
# updates a second (see its header), its report at the end of the DUT's log. CONTROL_CORE: below.
set -euo pipefail
WEIR=${WEIR:-target/release/weir}
CFG=$(mktemp --suffix=.yaml)
SOCK=$(mktemp -u --suffix=.xds.sock)
churn=""
trap 'rm -f "$CFG" "$SOCK"; [ -z "$churn" ] || kill -TERM $churn 2>/dev/null' EXIT
RATE=${XDS_UPDATES_PER_S:-0}
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
$(if [ "$RATE" -gt 0 ]; then
  echo "mesh: { flows_per_worker: 262144, udp_timeout_ms: 30000 }"
  echo "xds: { server: \"unix:$SOCK\", node: { id: rig }, protocol: delta }"
elif [ "${SERVICES:-0}" -gt 0 ]; then
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
if [ "$RATE" -gt 0 ]; then
  # The control plane is not the DUT: it runs on the generator's core.
  taskset -c "${XDS_CORE:-0}" "${XDS_CHURN:-target/release/examples/xds_churn}" "$SOCK" "$DST_IP" 198.19.0.2 \
    "${SERVICES:-1}" "$RATE" "${XDS_SECONDS:-300}" &
  churn=$!
fi
"$WEIR" run -c "$CFG" &
pid=$!
# CONTROL_CORE=C moves weir's control thread (xDS, admin) off the worker's core, as a gateway
# keeps a housekeeping core; the workers pin themselves to theirs.
if [ -n "${CONTROL_CORE:-}" ]; then
  # Once the workers run (weir checks their cores against its own affinity first).
  for _ in $(seq 100); do grep -qs worker /proc/"$pid"/task/*/comm && break; sleep 0.05; done
  # (A reload would then see only that core; the bench does not reload.)
  taskset -p -c "$CONTROL_CORE" "$pid" >/dev/null || true
fi
trap 'kill -TERM $pid $churn 2>/dev/null; wait $pid; [ -z "$churn" ] || wait $churn; rm -f "$CFG" "$SOCK"' TERM INT
wait $pid
