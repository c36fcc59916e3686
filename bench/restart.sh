#!/bin/bash
# Hot restart beside a cold restart, with FLOWS UDP flows through a DNAT service:
#   bash bench/restart.sh [ROUNDS] [FLOWS...]      (root; default 3 rounds of 1000 100000 1000000)
#   BACKEND=dpdk bash bench/restart.sh ...         (weir's ports on DPDK net_af_packet vdevs)
#
#   client ns: restart_load send --c0==w0-- weir (1 worker) --w1==s0-- server ns: restart_load count
#
# Each run opens FLOWS flows (one datagram each), then streams PPS datagrams a second over them
# in turn for 14 s; 4 s into the stream weir is restarted: `hot` starts a successor on the same
# configuration (it takes over through handover.socket), `cold` stops weir (SIGTERM) and starts
# a new one. Prints a line per run: the stream's datagrams lost (sent - distinct received, the
# stream's datagrams being numbered) and received twice, the longest silence at the sink (the
# cut-over, to the 1 ms of the sink's block timeout), the flows the new
# weir holds afterwards without having opened them again (hot: taken over; cold: none, every
# one is opened again by its next datagram), and for hot the cut-over weir itself logs. Then
# the medians. Everything runs in namespaces made here and removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
shift || true
FLOWS=("${@:-1000 100000 1000000}")
read -r -a FLOWS <<<"${FLOWS[*]}"
PPS=${PPS:-50000}
BACKEND=${BACKEND:-af_packet}
case $BACKEND in
  af_packet)
    PORT0="backend: af_packet, interface: w0"
    PORT1="backend: af_packet, interface: w1"
    ;;
  dpdk)
    PORT0="backend: dpdk, device: 'net_af_packet0,iface=w0'"
    PORT1="backend: dpdk, device: 'net_af_packet1,iface=w1'"
    ;;
  *) echo "BACKEND is af_packet or dpdk" >&2; exit 2 ;;
esac
FILL_PPS=${FILL_PPS:-150000}
cargo build --release --bin weir --example restart_load -q
WEIR=$PWD/target/release/weir
LOAD=$PWD/target/release/examples/restart_load
tag=rs$$
C=$tag-c W=$tag-w S=$tag-s
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for n in $C $W $S; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
for n in $C $W $S; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add c0 netns $C type veth peer name w0 netns $W
ip link add w1 netns $W type veth peer name s0 netns $S
ip -n $C addr add 198.18.1.2/24 dev c0
ip -n $S addr add 198.18.2.2/24 dev s0
for l in "$C c0" "$W w0" "$W w1" "$S s0"; do
  set -- $l
  ip -n "$1" link set "$2" up
  ip netns exec "$1" ethtool -K "$2" tx off rx off gro off gso off tso off >/dev/null 2>&1 || true
done
ip netns exec $W sysctl -qw net.ipv6.conf.all.disable_ipv6=1
ip -n $S route add default via 198.18.2.1
W0_MAC=$(ip -n $W -br link show w0 | awk '{print $3}')

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

config() {
  cat >"$dir/weir.yaml" <<EOF
workers: [{ core: 1 }]
ports:
  - { name: client_side, $PORT0, addresses: [198.18.1.1/24] }
  - { name: server_side, $PORT1, addresses: [198.18.2.1/24] }
routes:
  - { prefix: 198.18.128.0/17, port: client_side, via: 198.18.1.2 }
mesh: { flows_per_worker: $1, udp_timeout_ms: 120000 }
services:
  - { name: sink, vip: 198.19.0.1, port: 9, protocol: udp, cluster: sink, mode: dnat }
clusters:
  - { name: sink, endpoints: [{ address: 198.18.2.2, port: 9 }] }
handover: { socket: $dir/handover.sock }
EOF
}

wait_log() { # PATTERN COUNT FILE
  for _ in $(seq 600); do
    [ "$(grep -c "$1" "$3" || true)" -ge "$2" ] && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$1' in $3" >&2; tail -20 "$3" >&2; exit 1
}

run() { # FLOWS MODE
  local flows=$1 mode=$2 cap=$(( $1 * 2 > 4096 ? $1 * 2 : 4096 ))
  config "$cap"
  : >"$dir/log"
  ip netns exec $W taskset -c 1 "$WEIR" run -c "$dir/weir.yaml" --stats-json "$dir/stats.json" \
    >>"$dir/log" 2>&1 &
  local old=$!; pids+=("$old")
  wait_log "weir running" 1 "$dir/log"
  local fill_s=$(( flows / FILL_PPS + 2 ))
  ip netns exec $S taskset -c 0 "$LOAD" count s0 9 $(( fill_s + 30 )) >"$dir/sink" &
  local sink=$!; pids+=("$sink")
  sleep 0.3
  ip netns exec $C taskset -c 0 "$LOAD" send c0 "$W0_MAC" 198.19.0.1 9 "$flows" "$FILL_PPS" "$PPS" 14 \
    >"$dir/sender" &
  local sender=$!; pids+=("$sender")
  sleep $(( fill_s + 4 ))
  if [ "$mode" = hot ]; then
    ip netns exec $W taskset -c 1 "$WEIR" run -c "$dir/weir.yaml" --stats-json "$dir/stats.json" \
      >>"$dir/log" 2>&1 &
    local new=$!; pids+=("$new")
    wait "$old" || true
  else
    kill -TERM "$old"; wait "$old" || true
    ip netns exec $W taskset -c 1 "$WEIR" run -c "$dir/weir.yaml" --stats-json "$dir/stats.json" \
      >>"$dir/log" 2>&1 &
    local new=$!; pids+=("$new")
  fi
  wait_log "weir running" 2 "$dir/log"
  wait "$sender"
  sleep 0.5
  kill -TERM "$sink"; wait "$sink" || true
  kill -TERM "$new"; wait "$new" || true
  local sent received gap carried cut opened
  sent=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' "$dir/sender")
  received=$(sed -n 's/.* received=\([0-9]*\).*/\1/p' "$dir/sink")
  unique=$(sed -n 's/.* unique=\([0-9]*\).*/\1/p' "$dir/sink")
  gap=$(sed -n 's/.*longest_gap_ms=\([0-9.]*\).*/\1/p' "$dir/sink")
  carried=$(grep -o 'took over: .*' "$dir/log" | grep -o ' flows=[0-9]*' | head -1 | cut -d= -f2 || true)
  cut=$(grep -o 'cut_over_ms="[0-9.]*"' "$dir/log" | head -1 | grep -o '[0-9.]*' || true)
  opened=$(python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(sum(w['flows_opened'] for w in s['workers']))" "$dir/stats.json")
  echo "$mode backend=$BACKEND flows=$flows sent=$sent received=$received lost=$(( sent - unique )) twice=$(( received - unique )) longest_gap_ms=$gap carried=${carried:-0} cut_over_ms=${cut:-none} flows_opened_total=$opened" |
    tee -a "$dir/runs"
}

for _ in $(seq "$ROUNDS"); do
  for f in "${FLOWS[@]}"; do
    run "$f" hot
    run "$f" cold
  done
done
echo "== medians"
for f in "${FLOWS[@]}"; do
  for m in hot cold; do
    rows=$(grep "^$m backend=$BACKEND flows=$f " "$dir/runs")
    get() { grep -o " $1=-\?[0-9.]*" <<<"$rows" | cut -d= -f2 | median; }
    echo "$m backend=$BACKEND flows=$f lost=$(get lost) twice=$(get twice) longest_gap_ms=$(get longest_gap_ms) carried=$(get carried) cut_over_ms=$(get cut_over_ms) runs=$(wc -l <<<"$rows")"
  done
done
