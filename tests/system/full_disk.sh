#!/usr/bin/env bash
# System test: a full disk is survived without a restart and never makes the next start fail.
# A release daemon runs with its data directory (journal, audit log, ledger, snapshots) on a
# 20 MB tmpfs. Opt-outs are pushed with `suppressd admin suppress` while a filler file takes the
# free space, until one is refused with UNAVAILABLE (No space left on device); the filler is
# deleted; opt-outs must be accepted again by the same process, the status must heal, a
# compaction must succeed; then SIGTERM and a restart WITHOUT --repair-journal, and every
# acknowledged number must answer BLOCK. Needs permission to mount a tmpfs (CI runs as root):
# prints "skipped: ..." and exits 0 where that is not permitted.
#
#   tests/system/full_disk.sh                  # builds the release binary first
#   SUPPRESSD_BIN=target/release/suppressd tests/system/full_disk.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

source tests/system/bench_common.sh

work="$(mktemp -d)"
daemon_pid=""
mounted=""
cleanup() {
    if [[ -n "$daemon_pid" ]]; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    if [[ -n "$mounted" ]]; then
        umount "$mounted" 2>/dev/null || umount -l "$mounted" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/data"
if ! mount -t tmpfs -o size=20m tmpfs "$work/data" 2>"$work/mount.err"; then
    echo "skipped: cannot mount a tmpfs here ($(tr '\n' ' ' <"$work/mount.err"))"
    exit 0
fi
mounted="$work/data"
bench_binary

fail() {
    echo "FAIL: $*"
    echo "--- daemon log (last 40 lines)"
    tail -n 40 "$work/suppressd.log" || true
    exit 1
}

base=$((20000 + RANDOM % 10000))
grpc=$base
admin=$((base + 1))
http=$((base + 2))
sed -e "s/127.0.0.1:50151/127.0.0.1:$grpc/; s/127.0.0.1:50152/127.0.0.1:$admin/" \
    -e "s/127.0.0.1:8080/127.0.0.1:$http/; s/127.0.0.1:5070/127.0.0.1:$((base + 3))/g" \
    deploy/example-config.toml >"$work/config.toml"
mkdir -p "$work/data/keys"
"$B" keygen --id acme-erased --out "$work/data/keys/acme-erased.key" >/dev/null

start_daemon() {
    (cd "$work" && exec "$B" serve --config config.toml >>"$work/suppressd.log" 2>&1) &
    daemon_pid=$!
    for _ in $(seq 1 300); do
        if "$B" check --server "http://127.0.0.1:$grpc" +12015550100 >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon exited at start"
        sleep 0.1
    done
    fail "the daemon did not answer within 30 s"
}

stop_daemon() {
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" || fail "the daemon exited with $? on SIGTERM"
    daemon_pid=""
}

status_field() {
    "$B" admin --server "http://127.0.0.1:$admin" status |
        python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"
}

metric() {
    curl -s "http://127.0.0.1:$http/metrics" | awk -v name="$1" '$1 == name && !found { print $2; found = 1 }'
}

start_daemon
echo "daemon up: data directory on $(df -h "$work/data" | tail -1)"

# Opt-outs of 50 fresh numbers per request; the acknowledged ones are appended to acked.txt.
: >"$work/acked.txt"
request=0
refused=0
push() {
    request=$((request + 1))
    local first=$((12015600000 + request * 50)) i
    for i in $(seq 0 49); do echo "+$((first + i))"; done >"$work/batch.txt"
    if "$B" admin --server "http://127.0.0.1:$admin" suppress --tenant acme \
        --request-id "full-disk-$request" --input "$work/batch.txt" >"$work/push.out" 2>&1; then
        cat "$work/batch.txt" >>"$work/acked.txt"
        return 0
    fi
    return 1
}

for _ in $(seq 1 20); do push || fail "an opt-out was refused before the disk was full"; done

# Fill the filesystem: the filler takes all free space (dd stops with ENOSPC).
dd if=/dev/zero of="$work/data/filler" bs=64k status=none 2>/dev/null || true
echo "filled: $(df -h "$work/data" | tail -1)"
for _ in $(seq 1 500); do
    if ! push; then
        refused=1
        break
    fi
done
((refused)) || fail "500 opt-outs acknowledged on a full disk: the filler did not fill it"
grep -q "No space left on device" "$work/push.out" || fail "refusal without the cause: $(cat "$work/push.out")"
grep -qi "unavailable" "$work/push.out" || fail "refusal is not UNAVAILABLE: $(cat "$work/push.out")"
echo "refused as expected: $(head -c 300 "$work/push.out")"
# Still failing, and shown as failing.
push && fail "an opt-out was acknowledged on a full disk after a refusal (the filler left room?)"
[[ -n "$(status_field journal_error)" ]] || fail "admin status shows no journal_error while the disk is full"
[[ "$(curl -s "http://127.0.0.1:$http/readyz")" == *"journal failed"* ]] || fail "/readyz does not show the failed journal"
errors=$(metric 'suppressd_journal_errors_total{kind="no_space"}')
[[ "${errors:-0}" != 0 ]] || fail "suppressd_journal_errors_total{kind=\"no_space\"} is ${errors:-missing}"
echo "journal errors counted: no_space=$errors"
# A compaction while full fails (or not): either way it must not break the next start.
"$B" admin --server "http://127.0.0.1:$admin" compact >/dev/null 2>&1 || true

# Free the space: the same process accepts mutations again.
rm -f "$work/data/filler"
push || fail "opt-outs still refused after space was freed: $(cat "$work/push.out")"
for _ in $(seq 1 10); do push || fail "an opt-out was refused after space was freed"; done
healed=""
for _ in $(seq 1 100); do
    if [[ -z "$(status_field journal_error)" ]]; then
        healed=1
        break
    fi
    sleep 0.1
done
[[ -n "$healed" ]] || fail "journal_error still set after space was freed: $(status_field journal_error)"
[[ "$(curl -s "http://127.0.0.1:$http/readyz")" == "ready" ]] || fail "/readyz did not recover"
"$B" admin --server "http://127.0.0.1:$admin" compact >"$work/compact.out" 2>&1 ||
    fail "compaction after the disk was freed: $(cat "$work/compact.out")"
push || fail "an opt-out was refused after the compaction"

# SIGTERM and a restart without --repair-journal: every acknowledged opt-out answers BLOCK.
stop_daemon
start_daemon
acked=$(wc -l <"$work/acked.txt")
"$B" check --server "http://127.0.0.1:$grpc" --tenant acme --json --input "$work/acked.txt" \
    >"$work/checks.json" || fail "checks after the restart"
lost=$(python3 -c '
import json, sys
answers = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(sum(1 for a in answers if a.get("verdict") != "BLOCK") + max(0, int(sys.argv[2]) - len(answers)))
' "$work/checks.json" "$acked")
# A number never pushed still answers ALLOW (the sets are loaded, BLOCK above means something).
"$B" check --server "http://127.0.0.1:$grpc" --tenant acme --json +12015699999 | grep -q '"ALLOW"' ||
    fail "a number never suppressed does not answer ALLOW: the check above proves nothing"
[[ "$lost" == 0 ]] || fail "$lost of $acked acknowledged opt-outs answer other than BLOCK after the restart"
grep -q "repair-journal" "$work/suppressd.log" && fail "the journal asked for --repair-journal"
stop_daemon
echo "ok: $acked acknowledged opt-outs (${request} requests, the ones on the full disk refused), 0 lost; healed without restart; restarted without --repair-journal"
