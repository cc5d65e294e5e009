#!/usr/bin/env bash
# Benchmark of the gRPC data plane with a national-size registry loaded: `suppressd loadgen`
# against a release daemon on loopback, both on this machine. Not run by CI (minutes of full
# load): figures go to BENCHMARKS.md ("Daemon: gRPC checks with a 50 M-number registry").
#
#   tests/system/bench_daemon.sh                       # builds the release binary first
#   SUPPRESSD_BIN=target/release/suppressd REGISTRY_KEYS=5000000 tests/system/bench_daemon.sh
#   SECONDS_EACH=10 RUN_RELOAD=0 PAIRS=3 DAEMON_CPUS=1 LOADGEN_CPUS=0 ...
#
# What it runs, each for SECONDS_EACH seconds after a warm-up:
#   1. empty   (Ping: the same unary request with no lookup: the baseline) and unary (Check),
#      closed loop at the same concurrency, PAIRS times alternating (this shared 2-vCPU machine
#      moves by +-15 % between runs), so unary/empty over all pairs is the cost of the check;
#   2. open loop (--rate) at half of the closed-loop unary rate, on OPEN_CONNECTIONS connections
#      (default 1: fewer wake-ups per request), twice: empty (Ping) then unary (Check) each time,
#      so the check's latency percentiles stand beside those of an RPC that does no lookup at the
#      same rate, in the same run;
#   3. batch (CheckBatch, 1000 packed numbers per call) and stream (CheckStream, 1000 per
#      message), 1 % of numbers present in the registry (`--present`);
#   4. reload under load: unary (and batch) runs in which a new version of the 50 M registry is
#      dropped into the data directory mid-run; the figure is failed calls (must be 0) and the
#      p99 beside the run without a reload.
# The registry is REGISTRY_KEYS valid US numbers from `gen-sample`, built once into
# BENCH_CACHE and reused.
set -euo pipefail
cd "$(dirname "$0")/../.."

REGISTRY_KEYS="${REGISTRY_KEYS:-50000000}"
SECONDS_EACH="${SECONDS_EACH:-10}"
BENCH_CACHE="${BENCH_CACHE:-/var/tmp/suppressd-bench}"
CONNECTIONS="${CONNECTIONS:-2}"
CONCURRENCY="${CONCURRENCY:-64}"
RUN_RELOAD="${RUN_RELOAD:-1}"
PAIRS="${PAIRS:-3}"
OPEN_CONNECTIONS="${OPEN_CONNECTIONS:-1}"
# CPU lists (taskset -c) for the daemon and the load generator, e.g. DAEMON_CPUS=1
# LOADGEN_CPUS=0 to give each its own core; unset, the scheduler places both freely. The
# daemon's runtime sizes itself to the CPUs it may use.
daemon_pin=()
loadgen_pin=()
if [[ -n "${DAEMON_CPUS:-}" ]]; then daemon_pin=(taskset -c "$DAEMON_CPUS"); fi
if [[ -n "${LOADGEN_CPUS:-}" ]]; then loadgen_pin=(taskset -c "$LOADGEN_CPUS"); fi

source tests/system/bench_common.sh
bench_binary

mkdir -p "$BENCH_CACHE"
# Version 1: the reload step below builds versions 2, 3 on it and names files by version.
registry="$BENCH_CACHE/us-dnc-$REGISTRY_KEYS.v1.snap"
if [[ ! -f "$registry" ]]; then
    echo "=== building a $REGISTRY_KEYS-number registry into $registry (once)"
    "$B" gen-sample --count "$REGISTRY_KEYS" --region US --seed 2026 --out "$BENCH_CACHE/us-$REGISTRY_KEYS.txt"
    "$B" build --input "$BENCH_CACHE/us-$REGISTRY_KEYS.txt" --format lines --name us-dnc --kind block \
        --region US --set-version 1 --source-date "$(date -u +%Y-%m-%d)" --out "$registry.tmp"
    mv "$registry.tmp" "$registry"
    rm -f "$BENCH_CACHE/us-$REGISTRY_KEYS.txt"
fi

bench_workdir /var/tmp

base=$((20000 + RANDOM % 20000))
mkdir -p "$work/data"
# Registry copies are renamed into place, as a real deployment drops them (a copy of the file
# would be seen half-written by the poller). The source date is the registry's own.
bench_place_registry "$B" "$registry" "$work/data"
bench_registry_config "$base" "reload_poll_seconds = 1" >"$work/suppressd.toml"
(cd "$work" && exec "${daemon_pin[@]}" "$B" serve --config suppressd.toml >"$work/suppressd.log" 2>&1) &
daemon_pid=$!
target="http://127.0.0.1:$base"
up=no
for _ in $(seq 1 300); do
    if "$B" check --server "$target" +12015550100 >/dev/null 2>&1; then
        up=yes
        break
    fi
    sleep 0.1
done
if [[ "$up" != yes ]]; then
    echo "suppressd did not start:" >&2
    cat "$work/suppressd.log" >&2
    exit 1
fi

cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

echo "=== machine"
lscpu | grep -E "Model name|^CPU\(s\)|Thread|Hypervisor|L1d|L2|L3"
free -g | head -2
echo "transparent huge pages: $(cat /sys/kernel/mm/transparent_hugepage/enabled)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
date -u +%Y-%m-%dT%H:%M:%SZ
"$B" inspect "$work"/data/us-dnc.*.snap | grep -E "keys|bytes" | head -4
echo "daemon RSS after load: $(awk '/VmRSS/ { print $2, $3 }' "/proc/$daemon_pid/status")"

loadgen() {
    local label="$1"
    shift
    echo
    echo "--- $label: loadgen --target $target $*"
    local before
    before=$(cpu_seconds "$daemon_pid")
    "${loadgen_pin[@]}" "$B" loadgen --target "$target" --connections "${connections:-$CONNECTIONS}" --duration "${SECONDS_EACH}s" \
        --warmup 2s "$@" | tee "$work/last.out"
    awk -v a="$before" -v b="$(cpu_seconds "$daemon_pid")" 'BEGIN { printf "daemon CPU in this run: %.2f s\n", b - a }'
}
# Requests per second of the last run, from loadgen's "requests ... ok, 0 failed: 25.6 kreq/s".
rate_of() {
    awk '/^requests/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /req\/s$/) {
        scale = ($(i + 1) ~ /^k/) ? 1e3 : (($(i + 1) ~ /^M/) ? 1e6 : 1); printf "%d", $i * scale; exit } }' "$work/last.out"
}

echo
echo "=== 1. unary against its empty-RPC baseline (closed loop, concurrency $CONCURRENCY, $PAIRS alternating pairs)"
empty_sum=0
unary_sum=0
for pair in $(seq 1 "$PAIRS"); do
    loadgen "pair $pair: empty (Ping, no lookup)" --mode empty --concurrency "$CONCURRENCY"
    empty_rate="$(rate_of)"
    loadgen "pair $pair: unary (Check)" --mode unary --concurrency "$CONCURRENCY" --present "$registry"
    unary_rate="$(rate_of)"
    awk -v u="$unary_rate" -v e="$empty_rate" -v p="$pair" 'BEGIN { printf "pair %d: unary/empty %.3f\n", p, u / e }'
    empty_sum=$((empty_sum + empty_rate))
    unary_sum=$((unary_sum + unary_rate))
done
awk -v u="$unary_sum" -v e="$empty_sum" -v n="$PAIRS" \
    'BEGIN { printf "over %d pairs: unary %d/s, empty %d/s, unary/empty %.3f\n", n, u / n, e / n, u / e }'
unary_rate=$((unary_sum / PAIRS))

if [[ -n "$unary_rate" ]]; then
    half=$(awk -v r="$unary_rate" 'BEGIN { printf "%d", r / 2 }')
    echo
    echo "=== 2. open loop at half the closed-loop unary rate ($half calls/s, $OPEN_CONNECTIONS connection(s))"
    for run in 1 2; do
        connections="$OPEN_CONNECTIONS" loadgen "empty (Ping) at $half/s, run $run" --mode empty \
            --concurrency 256 --rate "$half"
        connections="$OPEN_CONNECTIONS" loadgen "unary at $half/s, run $run" --mode unary \
            --concurrency 256 --rate "$half" --present "$registry"
    done
fi

echo
echo "=== 3. batches of 1000 packed numbers, 1 % present"
loadgen "batch" --mode batch --batch-size 1000 --concurrency 8 --present "$registry"
loadgen "stream" --mode stream --batch-size 1000 --concurrency 8 --pipeline 4 --present "$registry"

if [[ "$RUN_RELOAD" == 1 ]]; then
    echo
    echo "=== 4. reload of the whole registry under load"
    version=2
    for mode in unary batch; do
        args=(--mode "$mode" --present "$registry")
        if [[ "$mode" == batch ]]; then
            args+=(--batch-size 1000 --concurrency 8)
        else
            args+=(--concurrency "$CONCURRENCY")
        fi
        loadgen "$mode, no reload (the baseline)" "${args[@]}"
        # A new version appears mid-run: the poller (1 s) validates it off the request path and
        # swaps it in; SIGHUP as well, as an operator would.
        # The next version of the whole registry (base version + 1, one number added, as a
        # daily change list would), prepared before the run so only the swap happens under load.
        printf '+1503555%04d,A\n' "$version" >"$work/changes.txt"
        "$B" build --base "$work/data/us-dnc.$((version - 1)).snap" --changes "$work/changes.txt" \
            --format lines --out "$work/us-dnc.next.snap" >/dev/null
        (
            sleep $((2 + SECONDS_EACH / 2))
            mv "$work/us-dnc.next.snap" "$work/data/us-dnc.$version.snap"
            kill -HUP "$daemon_pid"
        ) &
        swap_pid=$!
        loadgen "$mode, registry version $version dropped in mid-run" "${args[@]}"
        wait "$swap_pid"
        want=$("$B" inspect --json "$work/data/us-dnc.$version.snap" | sed -E 's/.*"version":([0-9]+).*/\1/')
        if ! "$B" check --server "$target" --json +12015550100 | grep -q "\"us-dnc\":$want"; then
            echo "FAIL: us-dnc version $want is not in force after the run" >&2
            exit 1
        fi
        echo "ok: us-dnc version $want (file us-dnc.$version.snap) in force after the run"
        rm -f "$work/data/us-dnc.$((version - 1)).snap"
        version=$((version + 1))
    done
    grep -iE "reload|refused" "$work/suppressd.log" | tail -5 || true
fi
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
