#!/bin/bash
# Provisions the "peer" VM: its two private NICs (found by MAC) go into the namespaces "client"
# (198.18.1.2/24, 2001:db8:1::2/64) and "server" (198.18.2.2/24, 2001:db8:2::2/64), each with
# weir's address on its network as default gateway; then the hardware-class traffic test: ping
# both ways in both families and an iperf3 transfer, through weir on the other VM.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends build-essential pkg-config libdpdk-dev \
  libclang-dev curl ca-certificates iproute2 iputils-ping iperf3 ethtool >/dev/null
if [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
. "$HOME/.cargo/env"

iface_of_mac() {
  for d in /sys/class/net/*; do
    if [ "$(cat "$d/address")" = "$1" ]; then basename "$d"; return; fi
  done
  echo "no NIC with MAC $1" >&2
  exit 1
}
host() {   # namespace mac address4 gateway4 address6 gateway6
  local ns=$1 dev
  ip netns list | grep -qw "$ns" && return 0
  dev=$(iface_of_mac "$2")
  ip netns add "$ns"
  ip link set "$dev" netns "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link set "$dev" up
  ip -n "$ns" addr add "$3" dev "$dev"
  ip -n "$ns" -6 addr add "$5" dev "$dev" nodad
  ip -n "$ns" route add default via "$4"
  ip -n "$ns" -6 route add default via "$6"
}
host client "$PEER_MAC_A" 198.18.1.2/24 198.18.1.1 2001:db8:1::2/64 2001:db8:1::1
host server "$PEER_MAC_B" 198.18.2.2/24 198.18.2.1 2001:db8:2::2/64 2001:db8:2::1

cd /weir
echo "== hardware-class test: traffic through weir on the other VM"
WEIR_HW_PEER=1 cargo test --release --test hardware -- --ignored --test-threads 1 peer_
