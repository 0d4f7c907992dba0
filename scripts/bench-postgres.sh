#!/usr/bin/env bash
# Runs the PostgreSQL figures BENCHMARKS.md records: acquire+release with 1
# and 3 replicas at concurrency 16 and 64 on 10,000 resources, the
# cross-replica handoff latency with 50 waiters, and a sustained run (30 s
# slices, to show whether throughput declines).
# Usage: scripts/bench-postgres.sh [path/to/berth] [seconds per run] [sustained slices]
# The database: $BERTH_BENCH_POSTGRES (default the local test database);
# each part runs in a fresh schema, dropped afterwards. Needs psql.
set -euo pipefail
. "$(dirname "$0")/listen-addr.sh"
berth=${1:-bin/berth}
secs=${2:-10}
slices=${3:-10}
db=${BERTH_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
dir=$(mktemp -d)
pids=()
schema=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  [ -n "$schema" ] && psql -q "$db" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
printf 'pools:\n  - type: p\n    generate: {prefix: r-, count: 10000}\n' > "$dir/p.yaml"
printf 'pools:\n  - type: handoff\n    generate: {prefix: h-, count: 4}\n' > "$dir/h.yaml"

# fresh: a new schema for the next part (the last one dropped).
fresh() {
  stop_all
  [ -n "$schema" ] && psql -q "$db" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null
  schema="berth_bench_$$_$RANDOM"
  psql -q "$db" -c "CREATE SCHEMA $schema" >/dev/null
}

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
}

# start CONFIG: one more replica on the current schema; appends its URL to urls.
start() {
  local log="$dir/log.${#pids[@]}"
  : > "$log"
  local sep='?'; [[ "$db" == *\?* ]] && sep='&'
  "$berth" serve --config "$1" --store "$db${sep}search_path=$schema" --listen 127.0.0.1:0 --log-format json --log-level info 2> "$log" &
  pids+=($!)
  local addr
  addr=$(listen_addr "$log" "${pids[-1]}")
  urls="${urls:+$urls,}http://$addr"
}

for replicas in 1 3; do
  fresh
  urls=""
  for _ in $(seq "$replicas"); do start "$dir/p.yaml"; done
  for c in 16 64; do
    echo "replicas=$replicas"
    "$berth" bench --server "$urls" --type p --concurrency "$c" --duration "${secs}s"
  done
done

fresh
urls=""
start "$dir/h.yaml"; start "$dir/h.yaml"; start "$dir/h.yaml"
echo "replicas=3 (releases on the first, waiters on the other two)"
"$berth" bench --server "$urls" --type handoff --concurrency 0 --waiters 50 --rounds 1000

fresh
urls=""
start "$dir/p.yaml"
echo "sustained: replicas=1, concurrency 16, $slices slices of 30 s"
for i in $(seq "$slices"); do
  "$berth" bench --server "$urls" --type p --concurrency 16 --duration 30s | grep cycles | sed "s/^/  slice $i: /"
done
