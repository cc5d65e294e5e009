#!/usr/bin/env bash
# A/B of two daemon binaries on the gRPC check path, alternated closely so a shared machine's
# drift falls on both: ROUNDS rounds of (A, B), each a fresh daemon with the same config and
# registry, then batch, stream and unary loadgen runs of SECONDS_EACH seconds. Not run by CI.
#
#   A_BIN=/path/base/suppressd B_BIN=target/release/suppressd REGISTRY=/var/tmp/r.snap \
#       [LOADGEN=a|own] [ROUNDS=3] [SECONDS_EACH=5] tests/system/bench_daemon_ab.sh
#
# REGISTRY: a snapshot of set us-dnc (bench_daemon.sh builds one into its BENCH_CACHE).
# LOADGEN=a (default) drives both daemons with A's load generator, so only the daemon differs;
# LOADGEN=own lets each binary drive its own daemon.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${A_BIN:?A_BIN names the baseline binary}" "${B_BIN:?B_BIN names the binary under test}"
: "${REGISTRY:?REGISTRY names an us-dnc snapshot}"
ROUNDS="${ROUNDS:-3}"
SECONDS_EACH="${SECONDS_EACH:-5}"
LOADGEN="${LOADGEN:-a}"
source tests/system/bench_common.sh
bench_workdir /var/tmp

run_daemon() {
    local bin="$1" port="$2"
    rm -rf "$work/data" && mkdir -p "$work/data"
    bench_place_registry "$bin" "$REGISTRY" "$work/data"
    bench_registry_config "$port" >"$work/suppressd.toml"
    (cd "$work" && exec "$bin" serve --config suppressd.toml >"$work/suppressd.log" 2>&1) &
    daemon_pid=$!
    for _ in $(seq 1 200); do
        "$bin" check --server "http://127.0.0.1:$port" +12015550100 >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "daemon $bin did not start" >&2
    cat "$work/suppressd.log" >&2
    exit 1
}

echo "machine: $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(nproc) CPUs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
    for side in A B; do
        bin="$A_BIN"
        [[ "$side" == B ]] && bin="$B_BIN"
        driver="$A_BIN"
        [[ "$LOADGEN" == own ]] && driver="$bin"
        port=$((30000 + RANDOM % 20000))
        run_daemon "$bin" "$port"
        for mode in batch stream unary; do
            args=(--mode "$mode" --present "$REGISTRY")
            case "$mode" in
                batch) args+=(--batch-size 1000 --concurrency 8) ;;
                stream) args+=(--batch-size 1000 --concurrency 8 --pipeline 4) ;;
                unary) args+=(--concurrency 64) ;;
            esac
            rate=$("$driver" loadgen --target "http://127.0.0.1:$port" --connections 2 \
                --duration "${SECONDS_EACH}s" --warmup 1s "${args[@]}" | awk '/^checks/ { print $3, $4 }')
            echo "round $round $side $mode: $rate (load $(cut -d' ' -f1 /proc/loadavg))"
        done
        kill -TERM "$daemon_pid"
        wait "$daemon_pid" || true
        daemon_pid=""
    done
done
