#!/usr/bin/env bash
# The limiter's own CPU per job, without the worker, the adapter or the
# simulator: pgbench plays jobs that each make three Xero calls through
# ledgerflow.limiter_acquire / limiter_finish (a reservation of three, as
# the Xero adapter asks) and give the reservation back, for 100
# organisations at a fixed rate, and the machine's busy core-seconds over
# the run are read from /proc/stat. Each git revision given gets its own
# database built from that revision's migrations, and the revisions take
# turns, so they are compared within one run.
#
#   docs/bench/limiter-pgbench.sh [--rate JOBS_PER_SEC] [--secs N] [--rounds N] REV...
#   docs/bench/limiter-pgbench.sh 1996d49 HEAD
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) and its
# pgbench; run it alone on the machine. Drops the databases it made.
set -euo pipefail
rate=80 secs=30 rounds=2
revs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) rate=$2; shift 2 ;;
        --secs) secs=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) revs+=("$1"); shift ;;
    esac
done
[ ${#revs[@]} -gt 0 ] || revs=(HEAD)
pgbench=$(ls /usr/lib/postgresql/*/bin/pgbench | sort -V | tail -n 1)
psql_() { PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -U postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
root=$(git rev-parse --show-toplevel)
script=$(mktemp)
trap 'rm -f "$script"; for r in "${revs[@]}"; do psql_ -d postgres -c "DROP DATABASE IF EXISTS \"limbench_$r\"" >/dev/null; done' EXIT

for r in "${revs[@]}"; do
    db="limbench_$r"
    psql_ -d postgres -c "DROP DATABASE IF EXISTS \"$db\"" -c "CREATE DATABASE \"$db\"" >/dev/null
    for f in $(git -C "$root" ls-tree --name-only "$r" migrations/ | sort); do
        git -C "$root" show "$r:$f" | psql_ -d "$db" >/dev/null
    done
    psql_ -d "$db" -c "INSERT INTO ledgerflow.tenants (id, name) SELECT 't' || g, 't' || g FROM generate_series(1, 100) g" \
        -c "INSERT INTO ledgerflow.connections (tenant_id, provider, settings) SELECT 't' || g, 'xero', '{}' FROM generate_series(1, 100) g" >/dev/null
done

# One job: three calls (Xero's limits x3.4, as the default `bench sync`
# run), each answered with the remaining counts a quiet organisation gets.
call='SELECT granted, call_ids, slot_ids FROM ledgerflow.limiter_acquire(ARRAY['"'"'app:xero'"'"', '"'"'xero:'"'"' || :org], ARRAY[NULL, :org]::bigint[], ARRAY[33666, 202], ARRAY[NULL, 17000]::int[], ARRAY[NULL, 5]::int[], interval '"'"'2 minutes'"'"', 3, nullif(:res, 0), :job) \gset'
answer='SELECT ledgerflow.limiter_finish('"'"':slot_ids'"'"'::bigint[], '"'"'xero:'"'"' || :org, :org, 202, 17000, '"'"'app:xero'"'"', true, 33666, 202, 17000, 33666, NULL, NULL, '"'"':call_ids'"'"'::bigint[]);'
{
    echo '\set org random(1, 100)'
    echo '\set job random(1, 1000000000)'
    echo '\set res 0'
    echo "${call/granted, call_ids/granted, coalesce(reservation_id, 0) AS res, call_ids}"
    echo "$answer"
    for _ in 2 3; do echo "$call"; echo "$answer"; done
    echo 'SELECT ledgerflow.limiter_release_reservation(nullif(:res, 0));'
} > "$script"

busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
for round in $(seq 1 "$rounds"); do
    for r in "${revs[@]}"; do
        before=$(busy)
        jobs=$("$pgbench" -h 127.0.0.1 -U postgres -n -f "$script" -c 16 -j 2 -R "$rate" -T "$secs" "limbench_$r" 2>&1 \
            | awk '/number of transactions actually processed/{split($NF, a, "/"); print a[1]}')
        after=$(busy)
        awk -v r="$r" -v n="$round" -v j="$jobs" -v t=$((after - before)) \
            'BEGIN { printf "round %d  %-12s jobs %6d  busy core-s %6.1f  CPU per job %.2f ms\n", n, r, j, t / 100, j ? t * 10 / j : 0 }'
    done
done
