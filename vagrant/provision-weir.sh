#!/bin/bash
# Provisions the "weir" VM: build dependencies and a Rust toolchain, weir and nic-config built
# from /weir, 2 MiB hugepages, the two private NICs (found by MAC) bound to vfio-pci in no-IOMMU
# mode, the hardware-class DPDK test, then weir as a systemd unit on the virtio PMD.
# Re-running it is safe: the NICs it bound are remembered in /etc/weir/nics.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends build-essential pkg-config libdpdk-dev \
  libclang-dev curl ca-certificates iproute2 ethtool kmod >/dev/null
if [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
. "$HOME/.cargo/env"
cd /weir
cargo build --release --bins
NIC=/weir/target/release/nic-config
WEIR=/weir/target/release/weir

echo "== host check before"
$NIC check || true
$NIC hugepages --size 2M --count 1024

mkdir -p /etc/weir
if [ ! -s /etc/weir/nics ]; then
  pci_of_mac() {
    for d in /sys/class/net/*; do
      if [ "$(cat "$d/address")" = "$1" ]; then basename "$(readlink -f "$d/device")"; return; fi
    done
    echo "no NIC with MAC $1" >&2
    exit 1
  }
  A=$(pci_of_mac "$WEIR_MAC_A")
  B=$(pci_of_mac "$WEIR_MAC_B")
  echo "$A $B" >/etc/weir/nics
fi
read -r A B </etc/weir/nics
systemctl stop weir 2>/dev/null || true
$NIC bind "$A" "$B" --driver vfio-pci
echo "== devices and host check after"
$NIC status
$NIC check || true

echo "== hardware-class test: DPDK ports on the vfio-bound NICs"
WEIR_HW_PCI="$A,$B" WEIR_HW_MACS="$WEIR_MAC_A,$WEIR_MAC_B" \
  cargo test --release --test hardware -- --ignored --test-threads 1 dpdk_

cat >/etc/weir/weir.yaml <<YAML
workers:
  - core: 1
  - core: 2
idle:
  policy: adaptive
eal:
  hugepages: true
ports:
  - name: client_side
    backend: dpdk
    device: "$A"
    addresses: [198.18.1.1/24, 2001:db8:1::1/64]
  - name: server_side
    backend: dpdk
    device: "$B"
    addresses: [198.18.2.1/24, 2001:db8:2::1/64]
YAML
$WEIR check -c /etc/weir/weir.yaml
systemctl reset-failed weir 2>/dev/null || true
systemd-run --unit weir --description "weir dataplane" \
  "$WEIR" run -c /etc/weir/weir.yaml --stats-json /run/weir-stats.json
sleep 3
systemctl --no-pager status weir | head -5
echo "weir runs on $A and $B; the peer VM sends traffic through it (vagrant provision peer)"
