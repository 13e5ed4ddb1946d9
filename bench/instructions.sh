#!/bin/bash
# Instructions per transaction of jitgate, counted by valgrind (callgrind), for a change
# to the per-statement path whose cost is below the noise of CPU time on a shared
# 2-core machine. The counts are exact and repeat to within a few instructions.
#
#   jitgate-bench --keep --variant-bin OLD_JITGATE --only="-S prepared c1" \
#       --rounds 1 --seconds 2 --sessions 0 --skip-memory --first-logins 0
#   bench/instructions.sh WORKDIR [MODE [TXNS [PV_BINARY]]]
#
# WORKDIR is the directory the harness kept (its PostgreSQL cluster, and the configs,
# grants and upstream password of P and Pv). MODE is pgbench's -M (simple, extended,
# prepared; default prepared), TXNS the transactions counted (default 3000, one client,
# after 20 uncounted). P runs target/release/jitgate (or $P_BINARY); Pv runs PV_BINARY
# with Pv's config, when given (the binary itself: valgrind does not follow a wrapper
# script's exec). Prints, per target, all instructions of the process per
# transaction and those of the session task alone (the relay, the tracker, the audit
# events; the rest is the audit writer and the runtime). Under valgrind the sha2 crate
# runs its portable SHA-256 (the CPU's SHA extensions are hidden), so the audit
# writer's share is several times what it is natively: compare the session column.
#
# CLIENTS=16 runs pgbench with 16 clients (TXNS each; per transaction = over all of
# them). CACHE=1 adds valgrind's cache simulation (first-level instruction and data
# caches of this machine) and prints the misses per transaction too: with many sessions
# on few cores, what a transaction touches costs as much as what it executes.
# Needs valgrind (apt-get install valgrind); runs as root (PostgreSQL as `postgres`).
set -euo pipefail
W=${1:?usage: instructions.sh WORKDIR [MODE [TXNS [PV_BINARY]]]}
MODE=${2:-prepared}
TXNS=${3:-3000}
PV_BIN=${4:-}
P_BIN=${P_BINARY:-$(dirname "$0")/../target/release/jitgate}
CLIENTS=${CLIENTS:-1}
VG_CACHE=
[ "${CACHE:-0}" = 1 ] && VG_CACHE=--cache-sim=yes
N=$((TXNS * CLIENTS))
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install valgrind" >&2; exit 1; }
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGPORT=$(sed -n '/^targets:/,/^[a-z]/s/^ *port: *//p' "$W/p/jitgate.yaml" | head -1)
export PGSSLMODE=disable PGPASSWORD
PGPASSWORD=$(cat "$W/p/upstream.password")
OUT=$(mktemp -d)
chmod 755 "$OUT"
STARTED=
cleanup() {
  kill $(cat "$OUT"/*.pid 2>/dev/null) 2>/dev/null || true
  if [ -n "$STARTED" ]; then
    su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $W/pgdata stop -m fast" >/dev/null 2>&1 || true
  fi
  rm -rf "$OUT"
}
trap cleanup EXIT
if ! pg_isready -q -h 127.0.0.1 -p "$PGPORT"; then
  su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $W/pgdata -o '-c port=$PGPORT -c ssl=off' -l $W/pgdata/instructions.log start -w" >/dev/null
  STARTED=1
fi

count() { # NAME BINARY CONFIG
  local name=$1 bin=$2 cfg=$3 dir=$W/$1
  local port; port=$(sed -n 's/^listen: .*:\([0-9]*\)$/\1/p' "$dir/jitgate.yaml")
  (cd "$dir" && exec valgrind --tool=callgrind --instr-atstart=no $VG_CACHE \
      --callgrind-out-file="$OUT/$name.cg" "$bin" --config "$cfg" serve >"$OUT/$name.log" 2>&1) &
  echo $! >"$OUT/$name.pid"
  local pid; pid=$(cat "$OUT/$name.pid")
  for _ in $(seq 1 120); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.5; done
  local pgb="pgbench -n -S -M $MODE -h 127.0.0.1 -p $port -U bench -c $CLIENTS -j 1 bench"
  $pgb -t 20 >/dev/null 2>&1
  callgrind_control -z "$pid" >/dev/null 2>&1; callgrind_control -i on "$pid" >/dev/null 2>&1
  $pgb -t "$TXNS" >"$OUT/$name.pgbench" 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1; callgrind_control -i off "$pid" >/dev/null 2>&1
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$OUT/$name.pid"
  local file; file=$(ls -t "$OUT/$name.cg"* | grep -v "\.cg$" | head -1 || true)
  [ -n "$file" ] || file=$OUT/$name.cg
  local totals all session misses=
  totals=$(sed -n 's/^\(summary\|totals\): *//p' "$file" | head -1)
  all=${totals%% *}
  if [ -n "$VG_CACHE" ]; then # Ir Dr Dw I1mr D1mr D1mw ...
    misses=$(echo "$totals" | awk -v n="$N" '{printf "  I1 misses %.0f  D1 misses %.0f (read %.0f, write %.0f)", $4/n, ($5+$6)/n, $5/n, $6/n}')
  fi
  session=$(callgrind_annotate --inclusive=yes "$file" 2>/dev/null |
    sed -n 's/^ *\([0-9,]*\) .*jitgate_proxy::session::run::{{closure}} \[.*/\1/p' | head -1 | tr -d ,)
  printf '%-3s %-9s c%-2s all %6d  session %6d instructions/transaction%s\n' \
    "$name" "$MODE" "$CLIENTS" $((all / N)) $((session / N)) "$misses"
}

if [ -n "$PV_BIN" ]; then
  if [ -f "$W/pv/jitgate.yaml.pv.yaml" ]; then PV_CFG=jitgate.yaml.pv.yaml; else PV_CFG=jitgate.yaml; fi
  count pv "$PV_BIN" "$PV_CFG"
fi
count p "$(realpath "$P_BIN")" jitgate.yaml
