#!/usr/bin/env bash
# suppressd against Redis on the same question and the same set: is this number in a 5 M-number
# do-not-call list? Both on this machine, on loopback, each driven by its own load generator:
#   - Redis (Debian's redis-server, installed with apt-get when missing): the numbers in one
#     Redis set, asked with pipelined SISMEMBER by redis-benchmark at several pipeline depths
#     (the best depth is Redis' figure);
#   - suppressd: the same numbers as a registry snapshot, asked with CheckBatch (1000 numbers
#     a message) and CheckStream (1000 or 4000, several streams in flight) by `suppressd
#     loadgen`, 1 % present like dialer traffic.
# Each side is swept (Redis: pipeline depth up to 4000 and clients; suppressd: message size
# and streams in flight) and the best of each is compared.
# Not run by CI (a minute or two of full load); figures go to BENCHMARKS.md ("suppressd against
# Redis"). Bounded: every run lasts SECONDS_EACH seconds or REDIS_REQUESTS requests.
#
#   tests/system/bench_redis.sh                          # builds the release binary first
#   SUPPRESSD_BIN=target/release/suppressd SET_KEYS=5000000 SECONDS_EACH=10 tests/system/bench_redis.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

SET_KEYS="${SET_KEYS:-5000000}"
SECONDS_EACH="${SECONDS_EACH:-10}"
REDIS_REQUESTS="${REDIS_REQUESTS:-20000000}"
REDIS_PIPELINES="${REDIS_PIPELINES:-16 64 256 1000 4000}"
# Both sides are swept and each gets its best: Redis over pipeline depths and client counts,
# suppressd over streams in flight (CheckStream: concurrency / pipeline = connections).
REDIS_CLIENTS="${REDIS_CLIENTS:-8 32}"
STREAM_SHAPES="${STREAM_SHAPES:-8/4 16/4 32/8 64/8}"
# Numbers per CheckStream message; the largest matches Redis' deepest pipeline.
BATCH_SIZES="${BATCH_SIZES:-1000 4000}"
BENCH_CACHE="${BENCH_CACHE:-/var/tmp/suppressd-bench}"
# Snapshot layout of the suppressd side: slots (the default), filter or lines (`build --layout`).
LAYOUT="${LAYOUT:-slots}"

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "=== installing redis-server from Debian"
    apt-get install -y redis-server >/dev/null
fi

source tests/system/bench_common.sh
bench_binary
# Absolute: the daemon is started from inside its work directory.
B="$(realpath "$B")"

mkdir -p "$BENCH_CACHE"
numbers="$BENCH_CACHE/us-$SET_KEYS.txt"
registry="$BENCH_CACHE/us-dnc-$SET_KEYS.lines.snap"
if [[ ! -f "$numbers" ]]; then
    "$B" gen-sample --count "$SET_KEYS" --region US --seed 2026 --out "$numbers"
fi
# Rebuilt by every binary under test, so the snapshot has that binary's layout; version 1,
# as the file is named below (the daemon refuses a file whose name and header disagree).
"$B" build --input "$numbers" --format lines --name us-dnc --kind block --region US --layout "$LAYOUT" --set-version 1 \
    --source-date "$(date -u +%Y-%m-%d)" --out "$registry" >/dev/null

bench_workdir /var/tmp
redis_pid=""
cleanup_all() {
    if [[ -n "$redis_pid" ]]; then
        kill -TERM "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    bench_cleanup
}
trap cleanup_all EXIT

base=$((20000 + RANDOM % 20000))
redis_port=$((base + 1))

echo "=== machine"
lscpu | grep -E "Model name|^CPU\(s\)|Hypervisor|L2|L3"
echo "redis: $(redis-server --version)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
date -u +%Y-%m-%dT%H:%M:%SZ

# --- Redis: loopback only, no persistence, the set loaded with SADD through redis-cli --pipe.
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --logfile "$work/redis.log" --daemonize no &
redis_pid=$!
for _ in $(seq 1 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
# Members are the numbers' digits zero-padded to 12 characters: redis-benchmark's
# __rand_int__ writes 12-digit numbers, so its random probes fall in the same value range
# (0 .. 2*10^10: the US numbers +1 NPA NXX XXXX lie in 1.2-2.0*10^10) and are almost all absent,
# as in the suppressd runs (1 % present there; a hit costs Redis no more than a miss).
awk -v batch=1000 '
    function flush() {
        if (n == 0) return
        printf "*%d\r\n$4\r\nSADD\r\n$2\r\nus\r\n", n + 2
        for (i = 1; i <= n; i++) printf "$12\r\n%s\r\n", m[i]
        n = 0
    }
    # Padded as text: the %d of mawk cannot hold 11-digit numbers.
    { sub(/^\+/, ""); v = $1; while (length(v) < 12) v = "0" v; m[++n] = v; if (n == batch) flush() }
    END { flush() }' "$numbers" | redis-cli -p "$redis_port" --pipe >/dev/null
echo "redis set size: $(redis-cli -p "$redis_port" scard us); memory: $(redis-cli -p "$redis_port" info memory | awk -F: '/^used_memory_human/ { print $2 }' | tr -d '\r')"
sample="0$(head -1 "$numbers" | sed 's/^+//')"
echo "redis check of a member ($(echo "$sample" | sed 's/[0-9]\{6\}$/******/')): $(redis-cli -p "$redis_port" sismember us "$sample")"
if [[ "$(redis-cli -p "$redis_port" scard us)" != "$SET_KEYS" ]]; then
    echo "redis holds $(redis-cli -p "$redis_port" scard us) members, expected $SET_KEYS" >&2
    exit 1
fi

best_redis=0
for clients in $REDIS_CLIENTS; do
for pipeline in $REDIS_PIPELINES; do
    echo
    echo "--- redis-benchmark -P $pipeline -c $clients --threads 2 -r 20000000000 -n $REDIS_REQUESTS SISMEMBER us __rand_int__"
    out="$(timeout $((SECONDS_EACH * 6)) redis-benchmark -p "$redis_port" -q -P "$pipeline" -c "$clients" \
        --threads 2 -r 20000000000 -n "$REDIS_REQUESTS" SISMEMBER us __rand_int__ 2>&1 | tr '\r' '\n' | grep -v '^$' | tail -1)"
    echo "$out"
    rate="$(echo "$out" | awk '{ for (i = 1; i <= NF; i++) if ($i == "requests") { gsub(/[^0-9.]/, "", $(i - 1)); printf "%d", $(i - 1) } }')"
    if [[ -n "$rate" ]] && ((rate > best_redis)); then best_redis=$rate; fi
done
done
echo "redis best pipelined SISMEMBER: $best_redis/s"
kill -TERM "$redis_pid" && wait "$redis_pid" 2>/dev/null || true
redis_pid=""

# --- suppressd: the same numbers as its national registry.
mkdir -p "$work/data"
cp "$registry" "$work/data/.us-dnc.tmp" && mv "$work/data/.us-dnc.tmp" "$work/data/us-dnc.1.snap"
cat >"$work/suppressd.toml" <<EOF
[server]
grpc_listen = "127.0.0.1:$base"
data_dir = "data"
max_batch = 10000
shutdown_grace_seconds = 1

[log]
filter = "warn"

[defaults]
tenant = "acme"
campaign = "outbound"

[sets.us-dnc]
kind = "block"
reason = "national_registry"
files = "us-dnc.*.snap"

[tenants.acme]
region = "US"

[tenants.acme.campaigns.outbound]
block_sets = ["us-dnc"]
EOF
(cd "$work" && exec "$B" serve --config suppressd.toml >"$work/suppressd.log" 2>&1) &
daemon_pid=$!
target="http://127.0.0.1:$base"
for _ in $(seq 1 300); do
    "$B" check --server "$target" +12015550100 >/dev/null 2>&1 && break
    sleep 0.1
done
"$B" inspect "$work/data/us-dnc.1.snap" | grep -E "keys|bytes|layout" | head -5 || true

best_daemon=0
run() {
    local label="$1"
    shift
    echo
    echo "--- $label: loadgen --target $target $*"
    "$B" loadgen --target "$target" --duration "${SECONDS_EACH}s" --warmup 2s "$@" | tee "$work/last.out"
    local rate
    # Checks per second from loadgen's "numbers ... M/s" line, or requests x batch size.
    rate="$(awk '/^numbers|^checks/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /\/s$/) {
        s = ($(i + 1) ~ /^M/) ? 1e6 : (($(i + 1) ~ /^k/) ? 1e3 : 1); printf "%d", $i * s; exit } }' "$work/last.out")"
    if [[ -n "$rate" ]] && ((rate > best_daemon)); then best_daemon=$rate; fi
}
run "batch" --mode batch --batch-size 1000 --concurrency 8 --present "$registry"
for size in $BATCH_SIZES; do
    for shape in $STREAM_SHAPES; do
        run "stream" --mode stream --batch-size "$size" --concurrency "${shape%/*}" --pipeline "${shape#*/}" --present "$registry"
    done
done

echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "suppressd best: $best_daemon checks/s; redis best: $best_redis SISMEMBER/s"
awk -v d="$best_daemon" -v r="$best_redis" 'BEGIN { if (r > 0) printf "ratio suppressd/redis: %.1fx\n", d / r }'
