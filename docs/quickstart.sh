#!/usr/bin/env bash
# Quickstart: builds heare-auth, starts heare-authd on the embedded default (a local file
# store; sockets, store and cache in a temporary directory), and walks through
# create -> verify -> delete -> verify with the real CLI. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

packaging/build-deps
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null

run=$(mktemp -d /tmp/heare-auth.XXXXXX)
daemon_pid=
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    rm -rf "$run"
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step build/daemon/heare-authd --store "file://$run/keys.json" --cache "$run/cache.json" \
    --verify-socket "$run/verify.sock" --admin-socket "$run/admin.sock" '&'
build/daemon/heare-authd --store "file://$run/keys.json" --cache "$run/cache.json" \
    --verify-socket "$run/verify.sock" --admin-socket "$run/admin.sock" \
    --log-verify none 2>"$run/daemon.log" &
daemon_pid=$!
for _ in $(seq 50); do [ -S "$run/admin.sock" ] && break; sleep 0.1; done

export HEARE_AUTH_SOCKET="$run/admin.sock" HEARE_AUTH_VERIFY_SOCKET="$run/verify.sock"
cli=build/cli/heare-auth

step heare-auth create --name demo --scope documents.read
out=$($cli create --name demo --scope documents.read)
echo "$out"
id=$(sed -n 's/^  ID: *//p' <<<"$out")
secret=$(sed -n 's/^  Secret: *//p' <<<"$out")

step "echo \$SECRET | heare-auth verify --scope documents.read"
echo "$secret" | $cli verify --scope documents.read

step heare-auth list
$cli list

step heare-auth delete "$id" --yes
$cli delete "$id" --yes

step "echo \$SECRET | heare-auth verify"
echo "$secret" | $cli verify || echo "(exit $?: the key is gone)"

step heare-auth health
$cli health

printf '\nThe daemon ran from %s; the daemon log is below. Stopping it now.\n\n' "$run"
cat "$run/daemon.log"
