#!/usr/bin/env bash
# A/B of two berth binaries: berth bench --concurrency 16 --duration 10s on
# a fresh server with 10,000 resources, alternating the binaries, ROUNDS
# times. With STORE=postgres://…, each run is on a fresh schema there;
# otherwise on a fresh SQLite data directory. The machine's speed drifts
# (BENCHMARKS.md), so only figures of one alternating run compare.
# Usage: [STORE=postgres://…] scripts/bench-ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
set -euo pipefail
. "$(dirname "$0")/listen-addr.sh"
old=$1 new=$2 rounds=${3:-3}
store=${STORE:-}
for round in $(seq "$rounds"); do
  for bin in "$old" "$new"; do
    d=$(mktemp -d)
    printf 'pools:\n  - type: p\n    generate: {prefix: r-, count: 10000}\n' > "$d/c.yaml"
    schema=""
    if [ -n "$store" ]; then
      schema=ab_$(date +%s%N | tail -c 8)
      psql -q "$store" -c "CREATE SCHEMA $schema" >/dev/null
      sep='?'; case $store in *\?*) sep='&';; esac
      "$bin" serve --config "$d/c.yaml" --store "$store${sep}search_path=$schema" --listen 127.0.0.1:0 --log-format json 2> "$d/log" &
    else
      "$bin" serve --config "$d/c.yaml" --data "$d" --listen 127.0.0.1:0 --log-format json 2> "$d/log" &
    fi
    pid=$!
    addr=$(listen_addr "$d/log" "$pid")
    until curl -sf "http://$addr/readyz" >/dev/null; do sleep 0.05; done
    echo "$round $bin: $("$new" bench --server "http://$addr" --type p --concurrency 16 --duration 10s 2>&1 | grep '^  cycles' || true)"
    kill "$pid"; wait "$pid" || true
    if [ -n "$schema" ]; then psql -q "$store" -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1; fi
    rm -rf "$d"
  done
done
