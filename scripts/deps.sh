#!/bin/bash
# Installs what weir's build, demo and tests need, when it is missing. Debian 12, as root.
set -euo pipefail
need=()
want() { dpkg -s "$1" >/dev/null 2>&1 || need+=("$1"); }
# libdpdk-dev and libclang-dev build the DPDK backend (dpdk-sys: pkg-config, bindgen).
# nginx, curl, hping3 and socat are the mesh tests' real servers and clients.
# prometheus brings promtool, which checks the admin API's metrics; tshark reads its captures.
# dpkg-dev (dpkg-shlibdeps) lets cargo-deb find the Debian package's library dependencies.
for p in iproute2 iputils-ping iperf3 ethtool python3 python3-venv python3-scapy tcpdump procps pkg-config gcc \
  libdpdk-dev libclang-dev nginx curl hping3 socat prometheus tshark dpkg-dev; do
  want "$p"
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Packages must not start services (nginx would listen on the host): the tests start their
  # own, inside namespaces.
  added_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    added_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ -z "$added_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
if ! command -v cargo >/dev/null; then
  echo "weir needs a Rust toolchain (cargo, rustc >= 1.85); install it with rustup" >&2
  exit 1
fi
# The xDS tests' second ADS server runs on grpcio and xds-protos (PyPI), in a venv of Debian's
# python3 under target/.
venv="$(cd "$(dirname "$0")/.." && pwd)/target/xds-python"
if ! "$venv/bin/python" -c "import grpc, envoy.service.discovery.v3.ads_pb2_grpc" 2>/dev/null; then
  echo "setting up $venv (grpcio, xds-protos)"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check grpcio==1.85.3 xds-protos==1.85.0
fi
