#!/usr/bin/env bash
# Runs the berth bench matrix that BENCHMARKS.md records: a real `berth serve`
# on loopback with pools of 100, 10,000 and 100,000 resources; acquire+release
# at concurrency 1, 16 and 64 on each; the handoff latency with 50 waiters;
# and the server's start-up time and RSS with all three pools loaded.
# Usage: scripts/bench-matrix.sh [path/to/berth] [seconds per run]
set -euo pipefail
berth=${1:-bin/berth}
secs=${2:-10}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cat > "$dir/berth.yaml" <<YAML
pools:
  - type: p100
    generate: {prefix: a-, count: 100}
  - type: p10k
    generate: {prefix: b-, count: 10000}
  - type: p100k
    generate: {prefix: c-, count: 100000}
  - type: handoff
    generate: {prefix: h-, count: 4}
YAML
port=$(( 20000 + RANDOM % 20000 ))
url="http://127.0.0.1:$port"
cat > "$dir/startup.yaml" <<YAML
pools:
  - type: p100k
    generate: {prefix: c-, count: 100000}
YAML

ready() {
  local start=$1
  until curl -sf "$url/readyz" >/dev/null; do sleep 0.01; done
  echo "$(date +%s.%N) - $start" | bc
}

# Start-up with 100,000 resources: a first start creates them, a restart
# reconciles them with the config.
start=$(date +%s.%N)
"$berth" serve --config "$dir/startup.yaml" --data "$dir/startup" --listen "127.0.0.1:$port" --log-level warn &
pid=$!
printf 'first start with 100,000 resources: %.2fs to ready\n' "$(ready "$start")"
kill "$pid"; wait "$pid" || true
start=$(date +%s.%N)
"$berth" serve --config "$dir/startup.yaml" --data "$dir/startup" --listen "127.0.0.1:$port" --log-level warn &
pid=$!
printf 'restart with 100,000 resources: %.2fs to ready\n' "$(ready "$start")"
echo "server RSS with 100,000 resources: $(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 )) MiB"
kill "$pid"; wait "$pid" || true

# Throughput: one server with all the pools.
"$berth" serve --config "$dir/berth.yaml" --data "$dir/data" --listen "127.0.0.1:$port" --log-level warn &
pid=$!
ready 0 >/dev/null
echo "server RSS with 110,104 resources: $(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 )) MiB"

for pool in p100 p10k p100k; do
  for c in 1 16 64; do
    "$berth" bench --server "$url" --type "$pool" --concurrency "$c" --duration "${secs}s"
  done
done
"$berth" bench --server "$url" --type handoff --concurrency 0 --waiters 50 --rounds 1000
echo "server RSS after the runs: $(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 )) MiB (peak $(( $(awk '/VmHWM/ {print $2}' /proc/$pid/status) / 1024 )) MiB)"
