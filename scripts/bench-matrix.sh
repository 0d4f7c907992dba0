#!/usr/bin/env bash
# Runs the berth bench matrix that BENCHMARKS.md records: start-up time and
# RSS with 100,000 resources; then, on a fresh `berth serve` for each pool
# size (100, 10,000, 100,000), acquire+release at concurrency 1, 16 and 64;
# then the handoff latency with 50 waiters.
# Usage: scripts/bench-matrix.sh [path/to/berth] [seconds per run]
set -euo pipefail
berth=${1:-bin/berth}
secs=${2:-10}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
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

# Throughput: a fresh server per pool size, so that no run inherits the
# tables another one grew.
for n in 100 10000 100000; do
  printf 'pools:\n  - type: p%s\n    generate: {prefix: r-, count: %s}\n' "$n" "$n" > "$dir/p$n.yaml"
  "$berth" serve --config "$dir/p$n.yaml" --data "$dir/p$n" --listen "127.0.0.1:$port" --log-level warn &
  pid=$!
  ready 0 >/dev/null
  for c in 1 16 64; do
    "$berth" bench --server "$url" --type "p$n" --concurrency "$c" --duration "${secs}s"
  done
  echo "server RSS after the p$n runs: $(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 )) MiB (peak $(( $(awk '/VmHWM/ {print $2}' /proc/$pid/status) / 1024 )) MiB)"
  kill "$pid"; wait "$pid" || true
done

printf 'pools:\n  - type: handoff\n    generate: {prefix: h-, count: 4}\n' > "$dir/handoff.yaml"
"$berth" serve --config "$dir/handoff.yaml" --data "$dir/handoff" --listen "127.0.0.1:$port" --log-level warn &
pid=$!
ready 0 >/dev/null
"$berth" bench --server "$url" --type handoff --concurrency 0 --waiters 50 --rounds 1000
