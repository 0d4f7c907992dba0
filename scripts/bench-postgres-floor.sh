#!/usr/bin/env bash
# What PostgreSQL alone does on this machine, without berth: pgbench runs
# the bare two-statement acquire+release (scripts/pgbench/bare.sql) and the
# statements berth's store sends for one (scripts/pgbench/berth.sql), on a
# fresh schema of 10,000 free resources migrated by berth, alternating the
# two, vacuumed before each run. One pgbench "transaction" is one cycle
# (two for berth-2per-commit). FLOOR_SCRIPTS picks the scripts (default
# "bare berth"; also "berth-2per-commit", made below).
# Usage: scripts/bench-postgres-floor.sh [path/to/berth] [seconds] [rounds] [clients]
# Needs pgbench and psql; the database is $BERTH_BENCH_POSTGRES (default
# the local test database), reached over TCP without TLS.
set -euo pipefail
berth=${1:-bin/berth}
secs=${2:-10}
rounds=${3:-3}
clients=${4:-8}
db=${BERTH_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
schema="berth_floor_$$"
psql -q "$db" -c "CREATE SCHEMA $schema"
trap 'psql -q "$db" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
sep='?'; [[ "$db" == *\?* ]] && sep='&'
"$berth" migrate --store "$db${sep}search_path=$schema" >/dev/null
export PGOPTIONS="-c search_path=$schema"
psql -q "$db" -c "INSERT INTO pools (type, lease_ttl) VALUES ('p', 600000000000)" \
  -c "INSERT INTO resources (name, type, state, state_changed_at) SELECT 'r-' || g, 'p', 'free', g FROM generate_series(1, 10000) g"
# berth-2per-commit: berth's statements for two cycles, the two acquires in
# one transaction and the two releases in another: one commit per cycle
# instead of two, what committing concurrent calls together would give.
awk '
  /^\\set rq / { print; print "\\set rq2 random(1, 9000000000000000)"; next }
  /^\\startpipeline/ { inblock = 1; block = ""; next }
  /^\\endpipeline/ {
    two = block; gsub(/:rq/, ":rq2", two)
    printf "\\startpipeline\nBEGIN;\n%s%sCOMMIT;\n\\endpipeline\n", block, two
    inblock = 0; next
  }
  inblock { block = block $0 "\n"; next }
  { print }
' "$here/pgbench/berth.sql" > "$work/berth-2per-commit.sql"
for i in $(seq "$rounds"); do
  for s in ${FLOOR_SCRIPTS:-bare berth}; do
    psql -q "$db" -c "TRUNCATE leases, events" -c "UPDATE resources SET state = 'free', owner = '', lease_id = NULL" \
      -c "VACUUM ANALYZE resources" -c "VACUUM ANALYZE leases"
    printf '%-6s ' "$s"
    f="$here/pgbench/$s.sql"; [ -f "$f" ] || f="$work/$s.sql"
    PGSSLMODE=disable pgbench -n -c "$clients" -j 2 -T "$secs" -M prepared -f "$f" "$db" 2>&1 | grep -E '^tps|error' | head -3
  done
done
