#!/usr/bin/env bash
# Benchmark of acknowledged mutations end to end: admin `Suppress` calls of one fresh number
# each (journalled and fsynced before the ack, every 10th verified by data-plane Checks: ALLOW
# before, BLOCK INTERNAL_DNC right after the ack), each run beside the empty RPC (Ping) at the
# same concurrency, alternating. Not run by CI (a minute or more of full load): figures go to
# BENCHMARKS.md ("Journal and live mutations").
#
#   tests/system/bench_mutations.sh                        # builds the release binary first
#   SUPPRESSD_BIN=target/release/suppressd ROUNDS=3 CONCURRENCIES="64 256" SECONDS_EACH=10 ...
#
# The daemon runs the embedded example config (deploy/example-config.toml) with its ports moved
# to a free range, in a fresh directory under /var/tmp (the same disk as a real data directory).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS="${ROUNDS:-3}"
CONCURRENCIES="${CONCURRENCIES:-64 256}"
SECONDS_EACH="${SECONDS_EACH:-10}"

source tests/system/bench_common.sh
bench_binary

bench_workdir /var/tmp

# Below the ephemeral port range, so a loadgen never connects to itself.
base=$((20000 + RANDOM % 10000))
grpc=$base
admin=$((base + 1))
sed -e "s/127.0.0.1:50151/127.0.0.1:$grpc/; s/127.0.0.1:50152/127.0.0.1:$admin/" \
    -e "s/127.0.0.1:8080/127.0.0.1:$((base + 2))/; s/127.0.0.1:5070/127.0.0.1:$((base + 3))/g" \
    -e 's/^filter = "info"/filter = "warn"/' \
    -e 's/^# admin_max_in_flight = 64/admin_max_in_flight = 1024/' \
    deploy/example-config.toml >"$work/config.toml"
# The admin plane's in-flight limit (default 64) is raised above the largest concurrency run.
grep -q '^admin_max_in_flight = 1024' "$work/config.toml" || { echo "admin_max_in_flight not raised"; exit 1; }
mkdir -p "$work/data/keys"
"$B" keygen --id acme-erased --out "$work/data/keys/acme-erased.key" >/dev/null
(cd "$work" && exec "$B" serve --config config.toml >"$work/suppressd.log" 2>&1) &
daemon_pid=$!
for _ in $(seq 1 300); do
    if "$B" check --server "http://127.0.0.1:$grpc" +12015550100 >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done

cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
metric() {
    curl -s "http://127.0.0.1:$((base + 2))/metrics" | awk -v name="$1" '$1 == name && !found { print $2; found = 1 }'
}

echo "=== machine"
lscpu | grep -E "Model name|^CPU\(s\)|Hypervisor"
df -T "$work" | tail -1
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
date -u +%Y-%m-%dT%H:%M:%SZ

npa=(503 303 206 512 602 208 307 406 505 605 701 802)
run=0
for round in $(seq 1 "$ROUNDS"); do
    for concurrency in $CONCURRENCIES; do
        echo
        echo "--- round $round, concurrency $concurrency: Ping (the baseline)"
        "$B" loadgen --target "http://127.0.0.1:$grpc" --mode empty --concurrency "$concurrency" \
            --connections 2 --duration "${SECONDS_EACH}s" --warmup 2s | grep -E '^(requests|latency)'
        first="+1${npa[$((run % ${#npa[@]}))]}2000000"
        run=$((run + 1))
        echo "--- round $round, concurrency $concurrency: Suppress of fresh numbers from $first"
        cpu_before=$(cpu_seconds "$daemon_pid")
        mutations_before=$(metric suppressd_mutations_total)
        fsyncs_before=$(metric suppressd_journal_fsync_seconds_count)
        "$B" loadgen --target "http://127.0.0.1:$grpc" --admin "http://127.0.0.1:$admin" \
            --mode suppress --concurrency "$concurrency" --connections 2 \
            --duration "${SECONDS_EACH}s" --warmup 2s --first-number "$first" |
            grep -E '^(requests|latency|ack|enforced|errors)'
        awk -v c0="$cpu_before" -v c1="$(cpu_seconds "$daemon_pid")" \
            -v m0="$mutations_before" -v m1="$(metric suppressd_mutations_total)" \
            -v f0="$fsyncs_before" -v f1="$(metric suppressd_journal_fsync_seconds_count)" \
            'BEGIN { m = m1 - m0; printf "daemon CPU per mutation %.1f us, mutations per fsync %.1f\n", (c1 - c0) * 1e6 / m, m / (f1 - f0) }'
    done
done
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
