#!/usr/bin/env bash
# Benchmark of the SIP dip (SIPp) and the HTTP check endpoint (wrk), on loopback, against a
# release build with the sample lists. Not run by CI: figures go to BENCHMARKS.md ("SIP dip and
# HTTP"). Needs sipp (sip-tester) and wrk.
#
#   tests/system/bench_sip_http.sh                 # builds the release binary first
#   SUPPRESSD_BIN=target/release/suppressd SIP_RATE=25000 tests/system/bench_sip_http.sh
#   RUN_HTTP=0 ... (SIP only), RUN_SIP=0 ... (HTTP only)
#
# SIP: SIPp sends INVITEs to the dip at SIP_RATE calls/s (each call: INVITE, 302, ACK) for
# SIP_CALLS calls; the figure is answered INVITEs per second over the run, with failed calls
# and retransmissions (a retransmission means an answer came later than 500 ms or was lost).
# HTTP: wrk keep-alive GET /v1/check (one lookup per request) and GET /healthz (no lookup: the
# baseline for the HTTP stack itself), WRK_SECONDS each, WRK_CONNECTIONS connections.
set -euo pipefail
cd "$(dirname "$0")/../.."

SIP_RATE="${SIP_RATE:-20000}"
SIP_CALLS="${SIP_CALLS:-300000}"
WRK_SECONDS="${WRK_SECONDS:-15}"
WRK_CONNECTIONS="${WRK_CONNECTIONS:-32}"
WRK_THREADS="${WRK_THREADS:-1}"

source tests/system/bench_common.sh
bench_binary

bench_workdir

base=$((20000 + RANDOM % 20000))
http_port=$((base + 1))
dip_port=$((base + 2))
cat >"$work/suppressd.toml" <<EOF
[server]
grpc_listen = "127.0.0.1:$base"
http_listen = "127.0.0.1:$http_port"
data_dir = "data"
generate_samples = true
shutdown_grace_seconds = 1

[defaults]
tenant = "acme"
campaign = "outbound"

[sets.us-dnc]
kind = "block"
reason = "national_registry"
files = "us-dnc.*.snap"

[tenants.acme]
region = "US"

[tenants.acme.sets.dnc]
kind = "block"
reason = "internal_dnc"
files = "acme-dnc.*.snap"

[tenants.acme.campaigns.outbound]
block_sets = ["us-dnc", "dnc"]

[sip]
listen_udp = "127.0.0.1:$dip_port"
EOF
RUST_LOG=warn "$SUPPRESSD_BIN" serve --config "$work/suppressd.toml" >"$work/suppressd.log" 2>&1 &
daemon_pid=$!
up=no
for _ in $(seq 1 100); do
    if { exec 3<>"/dev/tcp/127.0.0.1/$http_port"; } 2>/dev/null; then
        exec 3<&- 3>&-
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

# CPU seconds (user + system) a process has used, from /proc (clock ticks of 1/100 s).
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

echo "=== machine"
lscpu | head -20
free -g
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
date -u +%Y-%m-%dT%H:%M:%SZ

if [[ "${RUN_SIP:-1}" == 1 ]]; then
echo
echo "=== SIP dip: sipp at $SIP_RATE INVITE/s, $SIP_CALLS calls (INVITE -> 302 -> ACK)"
sip_command=(sipp -sf tests/system/sip/dip_redirect.xml -s +12015550771 -r "$SIP_RATE" -rp 1000
    -m "$SIP_CALLS" -l 20000 -i 127.0.0.1 -nostdin -timeout 120s -buff_size 4194304
    -trace_screen -screen_file "$work/sipp.screen" "127.0.0.1:$dip_port")
echo "${sip_command[*]}"
daemon_cpu_before=$(cpu_seconds "$daemon_pid")
start=$(date +%s.%N)
"${sip_command[@]}" >/dev/null 2>&1 &
sipp_pid=$!
sipp_cpu=0
while kill -0 "$sipp_pid" 2>/dev/null; do
    sipp_cpu=$(cpu_seconds "$sipp_pid" 2>/dev/null || echo "$sipp_cpu")
    sleep 0.2
done
wait "$sipp_pid" || true
end=$(date +%s.%N)
daemon_cpu=$(awk -v a="$daemon_cpu_before" -v b="$(cpu_seconds "$daemon_pid")" 'BEGIN { printf "%.2f", b - a }')
successful=$(grep -m1 "Successful call" "$work/sipp.screen" | awk -F'|' '{gsub(/ /,"",$3); print $3}')
failed=$(grep -m1 "Failed call" "$work/sipp.screen" | awk -F'|' '{gsub(/ /,"",$3); print $3}')
# The INVITE row: Messages, Retrans, Timeout.
read -r invites retrans timeouts < <(awk '/INVITE ---------->/ { print $3, $4, $5; exit }' "$work/sipp.screen")
echo "INVITEs sent: $invites, retransmissions: $retrans, timeouts: $timeouts"
echo "successful calls: $successful, failed: $failed"
awk -v s="$start" -v e="$end" -v n="$successful" -v d="$daemon_cpu" -v p="$sipp_cpu" 'BEGIN {
    printf "wall time %.2f s -> %.0f answered INVITEs/s\n", e - s, n / (e - s)
    printf "suppressd CPU %.2f s = %.1f us per answered INVITE (%.0f INVITEs/s per core)\n", d, d * 1e6 / n, n / d
    printf "sipp CPU %.2f s = %.1f us per call\n", p, p * 1e6 / n
}'
grep -E "Call Rate|Elapsed Time|Response Time" "$work/sipp.screen" | head -4
echo "load after SIP: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "busiest processes at the end:"
ps -eo pcpu,ni,comm --sort=-pcpu | head -6
fi

[[ "${RUN_HTTP:-1}" == 1 ]] || exit 0
echo
echo "=== HTTP: wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${WRK_SECONDS}s --latency"
check_url="http://127.0.0.1:$http_port/v1/check?number=%2B12015550771&tenant=acme&campaign=outbound"
for url in "http://127.0.0.1:$http_port/healthz" "$check_url"; do
    echo "--- $url"
    before=$(cpu_seconds "$daemon_pid")
    wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${WRK_SECONDS}s" --latency "$url" >"$work/wrk.out"
    after=$(cpu_seconds "$daemon_pid")
    grep -E "Requests/sec|Latency|50%|90%|99%|Non-2xx|Socket errors|requests in" "$work/wrk.out"
    requests=$(awk '/requests in/ { print $1 }' "$work/wrk.out")
    awk -v a="$before" -v b="$after" -v n="$requests" 'BEGIN {
        printf "suppressd CPU %.2f s = %.1f us per request (%.0f requests/s per core)\n", b - a, (b - a) * 1e6 / n, n / (b - a)
    }'
done
echo "busiest processes at the end:"
ps -eo pcpu,ni,comm --sort=-pcpu | head -6
echo "load after HTTP: $(cut -d' ' -f1-3 /proc/loadavg)"
