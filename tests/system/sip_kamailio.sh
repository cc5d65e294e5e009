#!/usr/bin/env bash
# System test: suppressd behind Kamailio 5.6, both deploy/kamailio/ configurations, driven by
# SIPp on loopback.
#
#   1. SIPp straight against suppressd's SIP dip (UDP and TCP): 302 for an allowed number, 603
#      for a blocked one.
#   2. Kamailio with kamailio-http.cfg (http_client + jansson) and with kamailio-dip.cfg
#      (uac_redirect), a SIPp UAS as the callee (sip/uas_callee.xml): a blocked number gets 603 naming the reason at
#      the caller and never reaches the callee; an allowed number is answered 200 by the callee.
#   3. suppressd stopped: calls through either configuration get 503 (fail closed) and never
#      reach the callee.
#
# Needs: kamailio, kamailio-utils-modules, kamailio-extra-modules, sip-tester (SIPp); .ci/run
# installs them. Builds the release binary unless SUPPRESSD_BIN names one. Every wait is
# bounded; after the build the run takes well under a minute. Exits non-zero, listing every
# failed expectation, if any fails. KEEP_SIP_TEST_DIR=1 keeps the logs.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"
scenarios="$root/tests/system/sip"

for tool in kamailio sipp; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "sip_kamailio: '$tool' not found (apt-get install kamailio kamailio-utils-modules kamailio-extra-modules sip-tester)" >&2
        exit 1
    fi
done

if [[ -z "${SUPPRESSD_BIN:-}" ]]; then
    echo "--- building the release binary"
    cargo build --release --locked --quiet
    export SUPPRESSD_BIN="${CARGO_TARGET_DIR:-$root/target}/release/suppressd"
fi

# From here on the test is bounded: the whole run gets 170 s, then everything is stopped.
if [[ -z "${SIP_TEST_BOUNDED:-}" ]]; then
    export SIP_TEST_BOUNDED=1
    exec timeout -k 5 170 "$0" "$@"
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "${KEEP_SIP_TEST_DIR:-}" ]]; then
        echo "logs kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'echo "sip_kamailio: stopped (time limit or signal)" >&2; exit 143' TERM INT

# Ports: a random block of ten, all on 127.0.0.1.
base=$((20000 + RANDOM % 20000))
grpc_port=$base
http_port=$((base + 1))
dip_port=$((base + 2))
kam_http_port=$((base + 3))
kam_dip_port=$((base + 4))
uas_port=$((base + 5))
uac_port=$((base + 6))

# Numbers: on the sample national registry (deploy/samples/us-dnc.txt), and on no list.
blocked="+12015550123"
allowed="+12015550771"
# Dialled only while suppressd is stopped: the callee must never see it.
unchecked="+12015550772"
for number in "$allowed" "$unchecked"; do
    if grep -qxF -- "$number" deploy/samples/*.txt; then
        echo "sip_kamailio: $number is on a sample list; pick another allowed number" >&2
        exit 1
    fi
done
grep -qxF -- "$blocked" deploy/samples/us-dnc.txt

failures=()
pass() { echo "ok   $1"; }
fail() {
    echo "FAIL $1"
    failures+=("$1")
}

# Ask suppressd's HTTP plane with bash's /dev/tcp (no curl needed): prints the status code.
http_status() {
    local path=$1 status=000
    if { exec 3<>"/dev/tcp/127.0.0.1/$http_port"; } 2>/dev/null; then
        printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
        status=$(timeout 2 head -n 1 <&3 | cut -d' ' -f2) || status=000
        exec 3<&- 3>&-
    fi
    echo "${status:-000}"
}

# One SIPp client run: name, scenario, target port, dialled number, calls, extra sipp flags.
run_sipp() {
    local name=$1 scenario=$2 port=$3 number=$4 calls=$5
    shift 5
    timeout 30 sipp -sf "$scenarios/$scenario" -s "$number" -m "$calls" -r 20 -l 5 \
        -i 127.0.0.1 -p "$uac_port" -nostdin -timeout 20s -timeout_error -recv_timeout 5000 \
        -trace_err -error_file "$work/$name.errors" -trace_screen -screen_file "$work/$name.screen" \
        "$@" "127.0.0.1:$port" >"$work/$name.out" 2>&1
}

# Expect a SIPp run to complete every call; on failure show why.
expect_calls() {
    local description=$1
    shift
    local name=$1
    if run_sipp "$@"; then
        pass "$description"
    else
        fail "$description"
        tail -n 25 "$work/$name.errors" "$work/$name.screen" 2>/dev/null | sed 's/^/     /' || true
    fi
}

# Waits until a SIP listener answers OPTIONS with 200 (bounded by `attempts` tries).
wait_sip() {
    local port=$1 what=$2 attempt
    for attempt in $(seq 1 40); do
        if timeout 5 sipp -sf "$scenarios/options.xml" -m 1 -i 127.0.0.1 -p "$uac_port" -nostdin \
            -timeout 2s -timeout_error -recv_timeout 1000 "127.0.0.1:$port" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.25
    done
    echo "sip_kamailio: $what never answered OPTIONS on port $port" >&2
    return 1
}

# --- suppressd with the sample lists, HTTP plane and SIP dip on loopback.
mkdir -p "$work/daemon"
cat >"$work/daemon/suppressd.toml" <<EOF
[server]
grpc_listen = "127.0.0.1:$grpc_port"
http_listen = "127.0.0.1:$http_port"
data_dir = "data"
# Builds the shipped sample lists (deploy/samples/) into the data directory.
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
listen_tcp = "127.0.0.1:$dip_port"
EOF
"$SUPPRESSD_BIN" serve --config "$work/daemon/suppressd.toml" >"$work/suppressd.log" 2>&1 &
suppressd_pid=$!
pids+=("$suppressd_pid")
ready=no
for _ in $(seq 1 100); do
    if [[ "$(http_status /readyz)" == 200 ]]; then
        ready=yes
        break
    fi
    if ! kill -0 "$suppressd_pid" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [[ "$ready" != yes ]]; then
    echo "sip_kamailio: suppressd did not become ready" >&2
    tail -n 30 "$work/suppressd.log" >&2
    exit 1
fi
pass "suppressd ready (HTTP $http_port, SIP dip udp+tcp $dip_port)"

# --- 1. SIPp straight against the dip.
wait_sip "$dip_port" "suppressd's dip"
expect_calls "dip over UDP: allowed number gets 302 back to the target" \
    dip-udp-allowed dip_redirect.xml "$dip_port" "$allowed" 5
expect_calls "dip over UDP: blocked number gets 603 NATIONAL_REGISTRY" \
    dip-udp-blocked uac_blocked.xml "$dip_port" "$blocked" 5
expect_calls "dip over TCP: allowed number gets 302" \
    dip-tcp-allowed dip_redirect.xml "$dip_port" "$allowed" 3 -t t1
expect_calls "dip over TCP: blocked number gets 603" \
    dip-tcp-blocked uac_blocked.xml "$dip_port" "$blocked" 3 -t t1

# --- 2. The callee, and Kamailio with each configuration.
sipp -sf "$scenarios/uas_callee.xml" -i 127.0.0.1 -p "$uas_port" -nostdin -trace_msg -message_file "$work/uas.messages" \
    >"$work/uas.out" 2>&1 &
pids+=($!)

start_kamailio() {
    local name=$1 port=$2
    shift 2
    mkdir -p "$work/kamailio-$name"
    kamailio -DD -E -m 64 -M 8 -f "$root/deploy/kamailio/kamailio-$name.cfg" -Y "$work/kamailio-$name" \
        -A "LISTEN=udp:127.0.0.1:$port" -A "CALLEE_PORT=$uas_port" "$@" \
        >"$work/kamailio-$name.log" 2>&1 &
    pids+=($!)
}
start_kamailio http "$kam_http_port" -A "SUPPRESSD_HTTPCON=\"suppressd=>http://127.0.0.1:$http_port/v1\""
start_kamailio dip "$kam_dip_port" -A "SUPPRESSD_DIP=\"sip:127.0.0.1:$dip_port\""
wait_sip "$kam_http_port" "kamailio (http)" || { tail -n 30 "$work/kamailio-http.log" >&2; exit 1; }
wait_sip "$kam_dip_port" "kamailio (dip)" || { tail -n 30 "$work/kamailio-dip.log" >&2; exit 1; }
pass "kamailio running with kamailio-http.cfg ($kam_http_port) and kamailio-dip.cfg ($kam_dip_port)"

calls=3
for config in http dip; do
    port=$kam_http_port
    if [[ "$config" == dip ]]; then
        port=$kam_dip_port
    fi
    expect_calls "kamailio-$config: blocked number gets 603 NATIONAL_REGISTRY at the caller" \
        "kam-$config-blocked" uac_blocked.xml "$port" "$blocked" "$calls"
    expect_calls "kamailio-$config: allowed number is answered 200 by the callee" \
        "kam-$config-allowed" uac_allowed.xml "$port" "$allowed" "$calls"
done

# --- 3. suppressd stopped: fail closed.
kill -TERM "$suppressd_pid"
for _ in $(seq 1 50); do
    kill -0 "$suppressd_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$suppressd_pid" 2>/dev/null; then
    fail "suppressd did not stop within 5 s of SIGTERM"
else
    pass "suppressd stopped"
fi
for config in http dip; do
    port=$kam_http_port
    if [[ "$config" == dip ]]; then
        port=$kam_dip_port
    fi
    expect_calls "kamailio-$config: with suppressd stopped, calls get 503" \
        "kam-$config-down" uac_unavailable.xml "$port" "$unchecked" 2
done

# --- What the callee saw. SIPp writes its message log as it goes; give it a moment.
sleep 0.5
invites_for() { grep -cF "INVITE sip:$1@" "$work/uas.messages" 2>/dev/null || true; }
seen_blocked=$(invites_for "$blocked")
seen_allowed=$(invites_for "$allowed")
seen_unchecked=$(invites_for "$unchecked")
if [[ "$seen_blocked" == 0 ]]; then
    pass "the callee never saw an INVITE for the blocked number"
else
    fail "the callee saw $seen_blocked INVITE(s) for the blocked number"
fi
if [[ "$seen_unchecked" == 0 ]]; then
    pass "the callee never saw a call placed while suppressd was stopped"
else
    fail "the callee saw $seen_unchecked INVITE(s) placed while suppressd was stopped"
fi
if [[ "$seen_allowed" == $((2 * calls)) ]]; then
    pass "the callee saw each allowed call once ($seen_allowed INVITEs)"
else
    fail "the callee saw $seen_allowed INVITEs for the allowed number, expected $((2 * calls))"
fi
if grep -qi "^X-Tenant:\|^X-Campaign:" "$work/uas.messages" 2>/dev/null; then
    fail "tenant/campaign headers leaked to the callee"
else
    pass "tenant/campaign headers stay inside (removed before relaying)"
fi

echo
if ((${#failures[@]} > 0)); then
    echo "sip_kamailio: ${#failures[@]} expectation(s) failed:"
    printf '  - %s\n' "${failures[@]}"
    KEEP_SIP_TEST_DIR=${KEEP_SIP_TEST_DIR:-1}
    exit 1
fi
echo "sip_kamailio: all expectations met"
