"""Descriptors and connections per uid (docs/operations.md, "Limits"): the daemon raises
its soft descriptor limit to the hard one; at the limit it stops accepting for a moment
instead of spinning on accept, keeps descriptors back for the store, the cache, the log and
an operator on the admin socket, and serves a waiting client once a descriptor is free;
max-connections-per-uid keeps one non-root uid from taking every connection."""
import json
import os
import resource
import socket
import subprocess
import time

import pytest

from conftest import VALGRIND, HEARE_AUTHD, Varlink, ok, v2_key, wait_for, write_json_atomic

NOBODY = 65534


def daemon_under_limit(make_daemon, soft, hard, store_doc, extra_args=()):
    """A daemon started with RLIMIT_NOFILE soft:hard (prlimit execs it: same pid)."""
    d = make_daemon(start=False, store_doc=store_doc, extra_args=list(extra_args))
    d.spawn(["prlimit", f"--nofile={soft}:{hard}", "--", HEARE_AUTHD] + d.base_args() +
            d.extra_args)
    return d


def logged(d, needle):
    return [e for e in d.logs() if needle in str(e.get("event", "")) + str(e.get("message", ""))]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the line, 12 and 13 after "(comm)".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_files_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return tuple(int(x) for x in line.split()[3:5])
    raise AssertionError("no Max open files line")


# Under valgrind (HEARE_E2E_VALGRIND=1, by hand only) the daemon cannot raise it: valgrind
# answers getrlimit/setrlimit(RLIMIT_NOFILE) itself and shows its client a hard limit
# equal to the soft one (256:256 here), keeping descriptors above it for its own use; the
# kernel's limits, which /proc shows, stay as prlimit set them.
@pytest.mark.xfail(VALGRIND, strict=True, reason="valgrind virtualizes RLIMIT_NOFILE")
def test_soft_descriptor_limit_is_raised_to_the_hard_one(make_daemon):
    d = daemon_under_limit(make_daemon, 256, 4096, {"version": 2, "keys": []})
    assert open_files_limit(d.proc.pid) == (4096, 4096)


def test_at_the_descriptor_limit_accept_waits_and_the_store_keeps_working(make_daemon):
    # This process needs room for its own side of the connections.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))

    first, first_secret = v2_key("first")
    d = daemon_under_limit(make_daemon, 256, 256, {"version": 2, "keys": [first]})
    d.watch(first_secret)
    canary = Varlink(d.verify_sock)  # connected before the flood: it keeps being served
    attackers = []
    try:
        # More idle connections than the daemon has descriptors.
        for _ in range(320):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(d.verify_sock)
            attackers.append(s)
        time.sleep(0.5)  # let the daemon take what it can

        # It does not spin: under a fifth of one CPU while clients wait in the backlog.
        t0, c0 = time.monotonic(), cpu_seconds(d.proc.pid)
        time.sleep(2.0)
        share = (cpu_seconds(d.proc.pid) - c0) / (time.monotonic() - t0)
        assert share < 0.2, f"the daemon used {share:.0%} of a CPU at the descriptor limit"
        assert logged(d, "descriptor limit"), d.raw_log()[-2000:]

        canary.send("io.heare.Auth.Verify", {"key": first_secret})
        assert ok(canary.recv())["code"] == "VALID"

        # The store still gets a descriptor: a key added behind the daemon's back is
        # picked up by the next poll.
        second, second_secret = v2_key("second")
        d.watch(second_secret)
        write_json_atomic(d.store_path, {"version": 2, "keys": [first, second]})

        def second_valid():
            canary.send("io.heare.Auth.Verify", {"key": second_secret})
            return ok(canary.recv())["code"] == "VALID"
        wait_for(second_valid, 10, what="the poll to pick up the second key at the limit")

        # An operator still gets in on the admin socket.
        res = d.cli("list")
        assert res.returncode == 0 and "second" in res.stdout, res.stderr

        # A new client waits in the backlog, and is served once descriptors are free.
        late = Varlink(d.verify_sock, timeout=15)
        late.send("io.heare.Auth.GetHealth")
        for s in attackers:
            s.close()
        attackers = []
        assert ok(late.recv())["status"] == "healthy"
        late.close()
    finally:
        for s in attackers:
            s.close()
        canary.close()


NOBODY_CLIENT = r"""
import json, os, socket, sys
os.setgroups([])
os.setgid(%(uid)d)
os.setuid(%(uid)d)
path, n = sys.argv[1], int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    socks.append(s)
served = []
for s in socks:
    try:
        s.sendall(b'{"method":"io.heare.Auth.GetHealth"}\0')
        served.append(b"healthy" in s.recv(65536))
    except OSError:
        served.append(False)
print(json.dumps(served), flush=True)
sys.stdin.read()  # hold the connections until told to go
"""


def test_max_connections_per_uid_on_the_verify_socket(make_daemon):
    d = make_daemon(extra_args=["--max-connections-per-uid", "4"])
    os.chmod(d.verify_sock, 0o666)  # for uid nobody; the daemon's own mode is 0660

    p = subprocess.Popen(["/usr/bin/python3", "-c", NOBODY_CLIENT % {"uid": NOBODY},
                          d.verify_sock, "6"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        served = json.loads(p.stdout.readline() or "null")
        assert served is not None, p.stderr.read() if p.poll() is not None else "no output"
        # Four are served; the rest were closed as soon as they were accepted.
        assert sorted(served) == [False, False, True, True, True, True], served
        assert logged(d, "max-connections-per-uid"), d.raw_log()[-2000:]

        # Root is exempt: more than four at once, all served.
        roots = [Varlink(d.verify_sock) for _ in range(6)]
        for c in roots:
            c.send("io.heare.Auth.GetHealth")
        assert all(ok(c.recv())["status"] == "healthy" for c in roots)
        for c in roots:
            c.close()
    finally:
        p.stdin.close()  # the client exits and its connections close
        p.wait(10)

    # Once nobody's connections are gone, nobody may connect again.
    def nobody_served():
        q = subprocess.run(["/usr/bin/python3", "-c", NOBODY_CLIENT % {"uid": NOBODY},
                            d.verify_sock, "4"], input="", capture_output=True, text=True,
                           timeout=30)
        return json.loads(q.stdout or "null") == [True] * 4
    wait_for(nobody_served, 10, what="uid nobody's connections to be counted free again")
