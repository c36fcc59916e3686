#!/bin/bash
# weir with N L4 services beside the kernel with N iptables DNAT rules, on the forwarding rig
# with many flows (../shared/bench/fwd-rig.sh -m), for N in 1 100 1000 10000, ROUNDS times each:
#   bash bench/mesh-rig.sh [ROUNDS]        (root; default 3)
# Prints a line per run and the medians, and writes bench/mesh-rig.svg: forwarded/offered for
# both, and weir's cycles per packet, against N.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SHARED=${SHARED:-../shared/bench}
command -v iptables-restore >/dev/null || apt-get install -y -qq iptables >/dev/null
cargo build --release --bin weir
out=$(mktemp -d)
for i in $(seq "$ROUNDS"); do
  for n in 1 100 1000 10000; do
    line=$(FWD_RIG_LOG="$out/w" bash "$SHARED/fwd-rig.sh" -s 5 -m \
      "cmd:SERVICES=$n WEIR=$PWD/target/release/weir $PWD/bench/weir-dut.sh" | tail -1)
    cyc=$(awk '$1=="0"{print $5}' "$out/w/dut")
    echo "weir n=$n $line cycles_per_packet=$cyc" | tee -a "$out/runs"
    line=$(bash "$SHARED/fwd-rig.sh" -s 5 -m -r "$n" kernel | tail -1)
    echo "kernel n=$n $line" | tee -a "$out/runs"
  done
done
python3 - "$out/runs" bench/mesh-rig.svg <<'PY'
import re, statistics, sys
rows = {}
for l in open(sys.argv[1]):
    dut, n = l.split()[0], int(re.search(r"n=(\d+)", l).group(1))
    f = dict(re.findall(r"(\w+)=([\d.]+)", l))
    rows.setdefault((dut, n), []).append(f)
med = lambda rs, k: statistics.median(float(r[k]) for r in rs if k in r) if any(k in r for r in rs) else float("nan")
print("== medians")
ns = sorted({n for _, n in rows})
for dut in ("weir", "kernel"):
    for n in ns:
        rs = rows[(dut, n)]
        print(f"{dut:6} n={n:<6} offered_mpps={med(rs,'offered_mpps'):.3f} forwarded_mpps={med(rs,'forwarded_mpps'):.3f} "
              f"ratio={med(rs,'ratio'):.3f} cycles_per_packet={med(rs,'cycles_per_packet'):.0f}")
# A small SVG: x = log10(N); left axis forwarded/offered (both DUTs), right axis weir cycles/packet.
W, H, L, R, T, B = 640, 360, 70, 70, 30, 50
import math
xs = [math.log10(n) for n in ns]
x = lambda v: L + (v - min(xs)) / (max(xs) - min(xs) or 1) * (W - L - R)
yr = lambda v: T + (1.05 - v) / 0.15 * (H - T - B)          # ratio 0.90 .. 1.05
cyc = [med(rows[("weir", n)], "cycles_per_packet") for n in ns]
cmax = max(c for c in cyc if c == c) * 1.2
yc = lambda v: T + (cmax - v) / cmax * (H - T - B)
def line(pts, color, dash=""):
    d = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
    return f'<polyline fill="none" stroke="{color}" stroke-width="2" {dash} points="{d}"/>' + "".join(
        f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}"/>' for px, py in pts)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="18" text-anchor="middle">fwd-rig -m: weir L4 services vs kernel iptables DNAT rules</text>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{W-R}" y1="{T}" x2="{W-R}" y2="{H-B}" stroke="black"/>']
for n in ns:
    svg.append(f'<text x="{x(math.log10(n)):.1f}" y="{H-B+16}" text-anchor="middle">{n}</text>')
svg.append(f'<text x="{W/2}" y="{H-12}" text-anchor="middle">services (weir) / DNAT rules (kernel)</text>')
for v in (0.90, 0.95, 1.00, 1.05):
    svg.append(f'<text x="{L-6}" y="{yr(v)+4:.1f}" text-anchor="end">{v:.2f}</text>')
for v in (0, cmax / 2, cmax):
    svg.append(f'<text x="{W-R+6}" y="{yc(v)+4:.1f}">{v:.0f}</text>')
svg.append(f'<text x="14" y="{T+(H-T-B)/2}" transform="rotate(-90 14 {T+(H-T-B)/2})" text-anchor="middle">forwarded / offered</text>')
svg.append(f'<text x="{W-12}" y="{T+(H-T-B)/2}" transform="rotate(90 {W-12} {T+(H-T-B)/2})" text-anchor="middle">weir cycles / packet</text>')
svg.append(line([(x(math.log10(n)), yr(med(rows[("weir", n)], "ratio"))) for n in ns], "#1f77b4"))
svg.append(line([(x(math.log10(n)), yr(med(rows[("kernel", n)], "ratio"))) for n in ns], "#d62728"))
svg.append(line([(x(math.log10(n)), yc(c)) for n, c in zip(ns, cyc)], "#1f77b4", 'stroke-dasharray="5,4"'))
svg.append(f'<text x="{L+10}" y="{T+14}" fill="#1f77b4">weir forwarded/offered (solid), cycles/packet (dashed)</text>')
svg.append(f'<text x="{L+10}" y="{T+30}" fill="#d62728">kernel forwarded/offered</text>')
svg.append("</svg>")
open(sys.argv[2], "w").write("\n".join(svg))
print("wrote", sys.argv[2])
PY
rm -rf "$out"
