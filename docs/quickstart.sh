#!/usr/bin/env bash
# Quickstart: builds heare-auth, starts heare-authd on the embedded default (a local file
# store; sockets, store and cache in a temporary directory), and walks through
# create -> verify -> delete -> verify with the real CLI. Run as root on Debian 12.
#
# Usage: docs/quickstart.sh [--keep]
#   --keep  after the walk-through, keep the daemon running in the foreground with its
#           sockets printed, to try the CLI, socat and curl against it; Ctrl-C stops it
#           and removes the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
case "${1:-}" in
"") ;;
--keep) keep=1 ;;
-h | --help) sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 0 ;;
*) echo "docs/quickstart.sh: unknown argument: $1 (usage: docs/quickstart.sh [--keep])" >&2; exit 2 ;;
esac

run=$(mktemp -d /tmp/heare-auth.XXXXXX)
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    fi
    rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Installing and building print hundreds of lines on a new machine: they go to a log,
# shown only if a step fails.
setup_log="$run/setup.log"
quietly() {
    local what=$1
    shift
    printf '==> %s ...' "$what"
    if ! "$@" >>"$setup_log" 2>&1; then
        printf ' failed; the last lines of its log:\n\n' >&2
        tail -n 40 "$setup_log" >&2
        exit 1
    fi
    printf ' done\n'
}
if ((keep)); then
    quietly "build dependencies, socat and curl (apt-get installs what is missing)" packaging/build-deps --try
else
    quietly "build dependencies (apt-get installs what is missing)" packaging/build-deps
fi
if [ ! -d build ]; then
    quietly "configuring the build (meson setup build)" meson setup build
fi
quietly "building (ninja -C build)" ninja -C build

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

daemon=(build/daemon/heare-authd --store "file://$run/keys.json" --cache "$run/cache.json"
    --verify-socket "$run/verify.sock" --admin-socket "$run/admin.sock" --log-verify none)
http_port=
if ((keep)); then
    # HTTP too, for curl: the first free port from 8080 on, on loopback only.
    http_port=$(python3 -c 'import socket
for port in range(8080, 8180):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port)); print(port); break
    except OSError:
        pass
    finally:
        s.close()')
    daemon+=(--http-listen "127.0.0.1:$http_port")
fi
# The command as it runs, one option a line.
shown=$(printf '%q' "${daemon[0]}"; printf ' %q' "${daemon[@]:1}" | sed 's/ --/ \\\n    --/g')
step "$shown 2>$run/daemon.log &"
"${daemon[@]}" 2>"$run/daemon.log" &
daemon_pid=$!
for _ in $(seq 50); do [ -S "$run/admin.sock" ] && break; sleep 0.1; done
if ! [ -S "$run/admin.sock" ]; then
    echo "heare-authd did not start; its log:" >&2
    cat "$run/daemon.log" >&2
    exit 1
fi

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

if ((!keep)); then
    printf '\nThe daemon ran from %s; the daemon log is below. Stopping it now.\n\n' "$run"
    cat "$run/daemon.log"
    exit 0
fi

cat <<EOF

heare-authd keeps running (pid $daemon_pid), from $run:
  verify socket  $run/verify.sock
  admin socket   $run/admin.sock
  HTTP           http://127.0.0.1:$http_port
  store          $run/keys.json

In another shell, from $PWD:
  export HEARE_AUTH_SOCKET=$run/admin.sock HEARE_AUTH_VERIFY_SOCKET=$run/verify.sock
  $cli create --name mine --scope documents.read
  $cli list
  printf '%s\\n' '{"method":"io.heare.Auth.GetHealth"}' | socat - UNIX-CONNECT:$run/verify.sock
  curl -s -X POST http://127.0.0.1:$http_port/verify -d '{"api_key": "sec_..."}'
  curl -s http://127.0.0.1:$http_port/health

Press Ctrl-C to stop the daemon and remove $run. Its log follows.

EOF
tail -n +1 -f --pid="$daemon_pid" "$run/daemon.log" &
wait "$daemon_pid" || true
daemon_pid=
echo "heare-authd exited" >&2
