#!/usr/bin/env bash
# Runs the berth bench matrix that BENCHMARKS.md records: start-up time and
# RSS with 100,000 resources; then, on a fresh `berth serve` for each pool
# size (100, 10,000, 100,000), acquire+release at concurrency 1, 16 and 64;
# then the handoff latency with 50 waiters.
# Usage: scripts/bench-matrix.sh [path/to/berth] [seconds per run]
set -euo pipefail
. "$(dirname "$0")/listen-addr.sh"
berth=${1:-bin/berth}
secs=${2:-10}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cat > "$dir/startup.yaml" <<YAML
pools:
  - type: p100k
    generate: {prefix: c-, count: 100000}
YAML

# start CONFIG DATA: runs berth serve on a port of its own choosing (no
# clash with anything else on the machine) and sets pid and url.
start() {
  : > "$dir/log"
  "$berth" serve --config "$1" --data "$2" --listen 127.0.0.1:0 --log-format json --log-level info 2> "$dir/log" &
  pid=$!
  local addr
  addr=$(listen_addr "$dir/log" "$pid")
  url="http://$addr"
}

# ready START: waits (at most 60 s) until this server is ready and prints
# the seconds since START.
ready() {
  local start=$1 i
  for i in $(seq 6000); do
    if curl -sf "$url/readyz" >/dev/null; then
      echo "$(date +%s.%N) - $start" | bc
      return
    fi
    sleep 0.01
  done
  echo "berth serve at $url not ready within 60 s" >&2
  exit 1
}

# Start-up with 100,000 resources: a first start creates them, a restart
# reconciles them with the config.
start=$(date +%s.%N)
start "$dir/startup.yaml" "$dir/startup"
printf 'first start with 100,000 resources: %.2fs to ready\n' "$(ready "$start")"
kill "$pid"; wait "$pid" || true
start=$(date +%s.%N)
start "$dir/startup.yaml" "$dir/startup"
printf 'restart with 100,000 resources: %.2fs to ready\n' "$(ready "$start")"
echo "server RSS with 100,000 resources: $(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 )) MiB"
kill "$pid"; wait "$pid" || true

# Throughput: a fresh server per pool size, so that no run inherits the
# tables another one grew.
for n in 100 10000 100000; do
  printf 'pools:\n  - type: p%s\n    generate: {prefix: r-, count: %s}\n' "$n" "$n" > "$dir/p$n.yaml"
  start "$dir/p$n.yaml" "$dir/p$n"
  ready 0 >/dev/null
  for c in 1 16 64; do
    "$berth" bench --server "$url" --type "p$n" --concurrency "$c" --duration "${secs}s"
  done
  echo "server RSS after the p$n runs: $(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 )) MiB (peak $(( $(awk '/VmHWM/ {print $2}' /proc/$pid/status) / 1024 )) MiB)"
  kill "$pid"; wait "$pid" || true
done

printf 'pools:\n  - type: handoff\n    generate: {prefix: h-, count: 4}\n' > "$dir/handoff.yaml"
start "$dir/handoff.yaml" "$dir/handoff"
ready 0 >/dev/null
"$berth" bench --server "$url" --type handoff --concurrency 0 --waiters 50 --rounds 1000
