#!/usr/bin/env bash
# System test: Python's grpcio (reflection v1alpha, health, dynamic messages) against a real
# suppressd on loopback. Bounded: every wait has a timeout.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install -q grpcio grpcio-health-checking grpcio-reflection
cargo build --release --locked --quiet
work="$(mktemp -d)"
daemon_pid=""
cleanup() {
    [[ -n "$daemon_pid" ]] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc_port="$(port)"
# The example config with free ports and no SIP/HTTP/admin listeners: the data plane is under test.
sed -e "s/^grpc_listen = .*/grpc_listen = \"127.0.0.1:${grpc_port}\"/" \
    -e '/^admin_listen = /d' -e '/^http_listen = /d' -e '/^listen_udp = /d' -e '/^listen_tcp = /d' \
    deploy/example-config.toml > "$work/config.toml"
mkdir -p "$work/data/keys"
printf 'id = "acme-erased-demo"\nsecret = "%s"\n' "$(python3 -c 'import secrets; print(secrets.token_hex(16))')" \
    > "$work/data/keys/acme-erased.key"
target/release/suppressd serve --config "$work/config.toml" 2> "$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 1 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', ${grpc_port}), 0.2)" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
timeout 60 python3 tests/system/grpc_python.py "127.0.0.1:${grpc_port}" || {
    echo "daemon log:"; tail -20 "$work/daemon.log"; exit 1;
}
