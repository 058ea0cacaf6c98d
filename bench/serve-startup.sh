#!/usr/bin/env bash
# Measures the time from starting `serve` to /readyz answering 200
# (migrations excluded: the database is migrated once beforehand and serve
# runs with --no-migrate), and the resident memory (VmRSS) of the idle
# process 5 s after it became ready. Loopback only.
#
#   bench/serve-startup.sh [runs]     (default 5 runs)
#
# Environment: DATABASE_URL (default a scratch database cmcm_bench_startup
# on the local Postgres, dropped at the end), plus any serve variable, e.g.
# CLOUD=aws to leave the in-process simulator out.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-5}
addr=127.0.0.1:18181
db_default="postgres://postgres@127.0.0.1:5432/cmcm_bench_startup?sslmode=disable"
export DATABASE_URL=${DATABASE_URL:-$db_default}
export HTTP_ADDR=$addr PUBLIC_URL=http://$addr LOG_LEVEL=${LOG_LEVEL:-warn}
export SIMULATOR_SEED_WORKERS=${SIMULATOR_SEED_WORKERS:-0}

make -s build >/dev/null
bin/cml-cloud-manager migrate >/dev/null 2>&1

ms() { date +%s%N | awk '{printf "%d", $1/1000000}'; }
for ((i = 1; i <= runs; i++)); do
	start=$(ms)
	bin/cml-cloud-manager serve --no-migrate >/tmp/serve-startup.log 2>&1 &
	pid=$!
	until curl -fs -o /dev/null "http://$addr/readyz"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			cat /tmp/serve-startup.log >&2
			exit 1
		fi
		sleep 0.005
	done
	ready=$(ms)
	sleep 5
	rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
	kill -TERM "$pid"
	wait "$pid" || true
	printf 'run %d: start->ready %d ms, idle RSS %.1f MB\n' "$i" $((ready - start)) "$(echo "$rss / 1024" | bc -l)"
done

if [ "$DATABASE_URL" = "$db_default" ]; then
	psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS cmcm_bench_startup" >/dev/null
fi
