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
