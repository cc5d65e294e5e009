# Sourced by the tests/system/bench_*.sh scripts (from the repository root): the binary under
# test and a work directory whose daemon is stopped, and which is removed, when the script ends.

# Sets B to $SUPPRESSD_BIN, or builds the release binary and uses that.
bench_binary() {
    if [[ -z "${SUPPRESSD_BIN:-}" ]]; then
        cargo build --release --locked --quiet
        SUPPRESSD_BIN="${CARGO_TARGET_DIR:-$(pwd)/target}/release/suppressd"
    fi
    B="$SUPPRESSD_BIN"
}

# Sets work to a new directory (under $1 when given); a daemon whose pid the script stores in
# daemon_pid is sent SIGTERM and awaited on exit, then the directory is removed.
bench_workdir() {
    if [[ -n "${1:-}" ]]; then
        work="$(mktemp -d -p "$1")"
    else
        work="$(mktemp -d)"
    fi
    daemon_pid=""
    trap bench_cleanup EXIT
}

bench_cleanup() {
    if [[ -n "$daemon_pid" ]]; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}

# bench_start_daemon NAME PORT [FLEET_SECTION] [LOG_FILTER] [SERVER_LINES]: a daemon on the example
# config in $work/NAME (gRPC on PORT, admin on PORT+1, HTTP on PORT+2, no SIP), with the keys
# $work/erased.key and $work/fleet.key, logs at LOG_FILTER (default warn) in
# $work/NAME/suppressd.log, extra [server] lines; runs ${D:-$B}, appends its pid to the
# caller's pids array and waits until it answers a check.
bench_start_daemon() {
    local name=$1 port=$2 fleet=${3:-} filter=${4:-warn} server_lines=${5:-}
    mkdir -p "$work/$name/data/keys"
    cp "$work/erased.key" "$work/$name/data/keys/acme-erased.key"
    cp "$work/fleet.key" "$work/$name/fleet.key"
    sed -e "s/127.0.0.1:50151/127.0.0.1:$port/; s/127.0.0.1:50152/127.0.0.1:$((port + 1))/" \
        -e "s/127.0.0.1:8080/127.0.0.1:$((port + 2))/; s/^listen_udp.*//; s/^listen_tcp.*//" \
        -e "s/^filter = \"info\"/filter = \"$filter\"/" \
        -e 's/^# admin_max_in_flight = 64/admin_max_in_flight = 1024/' \
        deploy/example-config.toml >"$work/$name/config.toml"
    if [[ -n "$server_lines" ]]; then
        python3 - "$work/$name/config.toml" "$server_lines" <<'PY'
import sys
path, lines = sys.argv[1], sys.argv[2]
text = open(path).read()
for line in lines.splitlines():
    key = line.split("=")[0].strip()
    kept = [l for l in text.splitlines() if l.split("=")[0].strip() != key]
    text = "\n".join(kept) + "\n"
text = text.replace("[server]\n", "[server]\n" + lines + "\n", 1)
open(path, "w").write(text)
PY
    fi
    printf '%s\n' "$fleet" >>"$work/$name/config.toml"
    (cd "$work/$name" && exec "${D:-$B}" serve --config config.toml >"$work/$name/suppressd.log" 2>&1) &
    pids+=($!)
    for _ in $(seq 1 300); do
        if "$B" check --server "http://127.0.0.1:$port" +12015550100 >/dev/null 2>&1; then
            return
        fi
        sleep 0.1
    done
    echo "daemon $name did not start:"; cat "$work/$name/suppressd.log"; exit 1
}

# Prints the registry benchmark's daemon config: gRPC on 127.0.0.1:$1, a US registry and one
# tenant's internal list in ./data, warn-level logs; further [server] lines from $2.
bench_registry_config() {
    cat <<EOF
[server]
grpc_listen = "127.0.0.1:$1"
data_dir = "data"
generate_samples = true
max_batch = 10000
shutdown_grace_seconds = 1
${2:-}

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

[tenants.acme.sets.dnc]
kind = "block"
reason = "internal_dnc"
files = "acme-dnc.*.snap"

[tenants.acme.campaigns.outbound]
block_sets = ["us-dnc", "dnc"]
blocked_prefixes = ["+1900", "+1976"]
EOF
}

# bench_place_registry BIN SNAPSHOT DATA_DIR: copies a registry snapshot into DATA_DIR under the
# name its header's version gives (the daemon refuses a file whose name and header versions
# disagree), renamed into place as a deployment drops registry copies.
bench_place_registry() {
    local bin="$1" snapshot="$2" data="$3" version
    version="$("$bin" inspect "$snapshot" | awk '$1 == "version" { print $2 }')"
    [[ "$version" =~ ^[0-9]+$ ]] || { echo "no version in $snapshot" >&2; return 1; }
    cp "$snapshot" "$data/.us-dnc.tmp" && mv "$data/.us-dnc.tmp" "$data/us-dnc.$version.snap"
}
