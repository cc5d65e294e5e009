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
