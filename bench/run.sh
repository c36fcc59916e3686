#!/bin/bash
# Runs weir's headline benchmarks beside their references, in one go, and prints medians.
#   bash bench/run.sh [ROUNDS]      (default 5 rounds of each rig run; needs root)
# 1. Pipeline cost on null ports (cargo bench) beside testpmd io/mac/5tswap on net_null.
# 2. weir on DPDK net_null vdevs (cargo bench --features dpdk: IPv4 forwarding and L4 DNAT)
#    beside the same testpmd runs, the L4 mesh on null ports at 1 to 1 000 000 flows, and
#    testpmd mac with net_null copy=1 (a 64-byte copy per packet, like weir's stamp).
# 3. The forwarding rig (../shared/bench/fwd-rig.sh): weir (its own af_packet ports with
#    sendmmsg and ring tx, and DPDK net_af_packet vdevs) beside testpmd (net_af_packet) and the
#    kernel, alternating, ROUNDS times each.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SHARED=${SHARED:-../shared/bench}
command -v dpdk-testpmd >/dev/null || { apt-get install -y -qq dpdk-dev >/dev/null; }
command -v ethtool >/dev/null || apt-get install -y -qq ethtool >/dev/null
cargo build --release --bin weir
out=$(mktemp -d)
echo "== pipeline on null ports (TSC cycles/packet, median of 5)"
cargo bench -p dataplane --bench pipeline -- --warm-up-time 1 --measurement-time 3 pipeline 2>/dev/null |
  grep -E "cycles/packet|time:" | tee "$out/pipeline"
echo "== testpmd on net_null"
bash "$SHARED/null-anchor.sh" -s 5 io mac 5tswap | tee "$out/null"
echo "== weir on DPDK net_null"
cargo bench -p dataplane --features dpdk --bench dpdk_null 2>/dev/null | grep "^weir" | tee "$out/dpdk-null"
echo "== L4 mesh on null ports (DNAT; 1 to 1 000 000 flows; TSC cycles/packet)"
cargo bench -p dataplane --bench mesh 2>/dev/null | grep "^mesh" | tee "$out/mesh"
echo "== the memory floor under it (table lookups alone, 1 and 1 000 000 entries)"
cargo bench -p dataplane --bench memory_floor 2>/dev/null | grep "^memory" | tee "$out/floor"
echo "== testpmd mac on net_null with copy=1"
(echo "set fwd mac"; echo start; sleep 5; echo stop; echo quit) |
  timeout 65 dpdk-testpmd --lcores=0@0,1@1 --no-pci --no-huge -m 512 --file-prefix=nullcopy$$ \
    --vdev=net_null0,size=64,copy=1 --vdev=net_null1,size=64,copy=1 -- -i \
    --total-num-mbufs=16384 --no-lsc-interrupt --record-core-cycles 2>&1 |
  sed -n 's/.*CPU cycles\/packet=\([0-9.]*\).*/testpmd mode=mac copy=1 cycles_per_packet=\1/p' | tee -a "$out/null"
rm -rf "/var/run/dpdk/nullcopy$$"
echo "== forwarding rig, $ROUNDS rounds"
for i in $(seq "$ROUNDS"); do
  for dut in weir-sendmmsg weir-ring weir-dpdk testpmd kernel; do
    case $dut in
      weir-dpdk) cmd="cmd:BACKEND=dpdk WEIR=$PWD/target/release/weir $PWD/bench/weir-dut.sh" ;;
      weir-*) cmd="cmd:TX_MODE=${dut#weir-} WEIR=$PWD/target/release/weir $PWD/bench/weir-dut.sh" ;;
      *) cmd=$dut ;;
    esac
    line=$(FWD_RIG_LOG="$out/$dut" bash "$SHARED/fwd-rig.sh" -s 5 "$cmd" | tail -1)
    case $dut in
      weir-*) cyc=$(awk '$1=="0"{print $5}' "$out/$dut/dut") ;;
      testpmd) cyc=$(sed -n 's/.*CPU cycles\/packet=\([0-9.]*\).*/\1/p' "$out/$dut/dut") ;;
      *) cyc=n/a ;;
    esac
    echo "$dut $line cycles_per_packet=$cyc" | tee -a "$out/rig"
  done
done
echo "== medians"
python3 - "$out/rig" <<'PY'
import re, sys, statistics
rows = {}
for l in open(sys.argv[1]):
    name = l.split()[0]
    f = dict(re.findall(r"(\w+)=([\d.]+|n/a)", l))
    rows.setdefault(name, []).append(f)
for name, rs in rows.items():
    med = lambda k: statistics.median(float(r[k]) for r in rs if r.get(k, "n/a") != "n/a") if any(r.get(k, "n/a") != "n/a" for r in rs) else float("nan")
    print(f"{name:14} offered_mpps={med('offered_mpps'):.3f} forwarded_mpps={med('forwarded_mpps'):.3f} "
          f"ratio={med('ratio'):.3f} cycles_per_packet={med('cycles_per_packet'):.0f} (n={len(rs)})")
PY
rm -rf "$out"
