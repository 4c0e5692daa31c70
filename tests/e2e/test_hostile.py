"""Hostile local clients (docs/operations.md, "Limits"): while they flood, drip, never read
or hold every descriptor, a canary on its own connection keeps verifying, never fails and
never waits 200 ms; the daemon's memory stays within buffers-max (plus 64 MiB for the rest
of the daemon) and comes back once they go. Only bounds that do not depend on the machine's
speed are asserted; bench/hostile measures the canary's p50 and p99 under the same attacks.
The daemon and the canary run at nice -10, the attackers at 19 (hostile.py says why)."""
import os
import resource
import socket
import time

from conftest import SANITIZED, VALGRIND, HEARE_AUTHD, free_port, v2_key, wait_for
from hostile import (Attackers, Canary, cpu_seconds, prioritize, reset_peak_rss,
                     settle_rss, status_kib)

MIB = 1024  # in KiB, as /proc reports
BUFFERS_MAX_KIB = 256 * MIB  # the default buffers-max
CANARY_MAX_S = 0.2
if SANITIZED:
    # 200 ms is a bound for the release build's speed. Under the sanitizers every call the
    # daemon serves costs several times as much (ASan checks each access, UBSan each
    # operation) while the floods are as large: on the shared 2-core machine the canary
    # waited 530 ms (340 ms with ASan's quarantine off) and once 1010 ms, its thread
    # starved of CPU as often as the daemon's loops. A canary left behind a flood would wait
    # for the whole flood, which takes 3 to 9 s there: 2 s still tells fair turns from
    # starvation.
    CANARY_MAX_S = 2.0
if VALGRIND:
    # By hand only (HEARE_E2E_VALGRIND=1): valgrind runs the daemon's threads one at a time,
    # tens of times slower, and a flood takes far longer to serve than under ASan; the
    # canary waited up to 2.4 s. There no call may reach the canary's own 5 s timeout.
    CANARY_MAX_S = 5.0
GET_HEALTH = b'{"method":"io.heare.Auth.GetHealth"}\0'
HTTP_HEALTH = b"GET /health HTTP/1.1\r\nHost: heare\r\n\r\n"
# The RSS bounds hold for the daemon on glibc's allocator, whose behaviour daemon/buffers.c
# sets (the mmap threshold, malloc_trim). Built with AddressSanitizer (tests/run's
# build-asan) the daemon runs on ASan's allocator instead, and its RSS says how that one
# works: freed memory waits in a quarantine of 256 MiB before it is reused, every block
# has redzones and shadow memory, malloc_trim does nothing. So there the RSS is printed,
# not bounded; everything else (the attacks, the canary, the descriptors) is asserted in
# both builds, and ASan checks every access the attacks cause. The same holds under
# valgrind (HEARE_E2E_VALGRIND=1, by hand), whose allocator replaces glibc's too.
RSS_BOUNDS = not SANITIZED and not VALGRIND


def keyed_daemon(make_daemon, extra_args=()):
    key, secret = v2_key("canary")
    d = make_daemon(store_doc={"version": 2, "keys": [key]}, extra_args=list(extra_args))
    d.watch(secret)
    prioritize(d.proc.pid)
    return d, secret


def warm_up(canary, n=200):
    for _ in range(n):
        canary.call()


def idle_rss(d, canary):
    warm_up(canary)
    time.sleep(0.5)
    return status_kib(d.proc.pid, "VmRSS")


def assert_canary(canary):
    assert not canary.failures, canary.summary()
    assert canary.latencies, "the canary made no call"
    worst = max(canary.latencies)
    assert worst < CANARY_MAX_S, f"the canary waited {worst * 1e3:.0f} ms: {canary.summary()}"


def flood_and_check(d, secret, rounds, **attack):
    """Floods `rounds` times with a canary running; asserts the canary, the RSS peak during
    each flood and the RSS 5 s after the attackers closed."""
    pid = d.proc.pid
    canary = Canary(d.verify_sock, secret)
    idle = idle_rss(d, canary)
    canary.start()
    try:
        for r in range(rounds):
            reset_peak_rss(pid)
            attackers = Attackers(**attack)
            try:
                flooded = attackers.wait_flooded()
                peak = status_kib(pid, "VmHWM")
            finally:
                attackers.close()
            assert flooded["written"] > 0, flooded
            if not RSS_BOUNDS:
                print(f"round {r}: RSS idle {idle // MIB} MiB, peak {peak // MIB} MiB "
                      "(not bounded under the sanitizers)")
                continue
            assert peak <= BUFFERS_MAX_KIB + 64 * MIB, \
                f"round {r}: RSS peaked at {peak // MIB} MiB (idle {idle // MIB} MiB)"
            after = settle_rss(pid, 2 * idle, timeout=5)
            assert after <= 2 * idle, \
                f"round {r}: RSS {after // MIB} MiB 5 s after the attackers left " \
                f"(idle {idle // MIB} MiB, peak {peak // MIB} MiB)"
            print(f"round {r}: RSS idle {idle // MIB} MiB, peak {peak // MIB} MiB, "
                  f"after {after // MIB} MiB")
    finally:
        canary.stop()
    assert_canary(canary)
    return canary


def test_varlink_clients_that_pipeline_and_never_read(make_daemon):
    """300 connections each write 2 MiB of calls and read nothing, three rounds."""
    d, secret = keyed_daemon(make_daemon)
    canary = flood_and_check(d, secret, rounds=3, n=300, payload=GET_HEALTH,
                             total=2 << 20, path=d.verify_sock)
    print("canary:", canary.summary())


def test_buffers_max_bounds_all_connections_together(make_daemon):
    """With buffers-max at 32 MiB, 150 connections that never read (1 MiB each would be
    150 MiB) hold at most buffers-max between them: those holding the most wait, none is
    closed, and the canary, which holds nothing, is served throughout."""
    d, secret = keyed_daemon(make_daemon, ["--buffers-max", "32MiB"])
    pid = d.proc.pid
    canary = Canary(d.verify_sock, secret)
    idle = idle_rss(d, canary)
    canary.start()
    try:
        reset_peak_rss(pid)
        attackers = Attackers(n=150, payload=GET_HEALTH, total=2 << 20, path=d.verify_sock)
        try:
            flooded = attackers.wait_flooded()
            peak = status_kib(pid, "VmHWM")
            # Held back, not closed: every attacker's connection is still open.
            open_conns = len(os.listdir(f"/proc/{pid}/fd"))
        finally:
            attackers.close()
        assert flooded["written"] > 0, flooded
        assert open_conns >= 150, f"only {open_conns} descriptors open during the flood"
        print(f"RSS idle {idle // MIB} MiB, peak {peak // MIB} MiB")
        if RSS_BOUNDS:
            assert peak <= idle + 32 * MIB + 64 * MIB, \
                f"RSS peaked at {peak // MIB} MiB with buffers-max 32 MiB " \
                f"(idle {idle // MIB} MiB)"
            after = settle_rss(pid, 2 * idle, timeout=5)
            assert after <= 2 * idle, f"RSS {after // MIB} MiB after (idle {idle // MIB} MiB)"
    finally:
        canary.stop()
    assert_canary(canary)
    # Those held back were answered once the total fell: a new client is served at once.
    assert d.health()["status"] == "healthy"


def http_daemon(make_daemon):
    port = free_port()
    d, secret = keyed_daemon(make_daemon, ["--http-listen", f"127.0.0.1:{port}"])
    return d, secret, port


def http_get_health(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: heare\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_http_clients_that_pipeline_and_never_read(make_daemon):
    """300 HTTP/1.1 connections each pipeline 2 MiB of requests and read nothing."""
    d, secret, port = http_daemon(make_daemon)
    canary = flood_and_check(d, secret, rounds=2, n=300, payload=HTTP_HEALTH, total=2 << 20,
                             host="127.0.0.1", port=port)
    print("canary:", canary.summary())
    assert http_get_health(port).startswith(b"HTTP/1.1 200")


def test_many_half_open_http_connections(make_daemon):
    """1000 connections that send half a request head and wait: the canary is served, so is
    a new HTTP client, and they are closed by the request timeout."""
    d, secret, port = http_daemon(make_daemon)
    canary = Canary(d.verify_sock, secret)
    idle = idle_rss(d, canary)
    canary.start()
    half = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: he")
            half.append(s)
        assert http_get_health(port).startswith(b"HTTP/1.1 200")
        rss = status_kib(d.proc.pid, "VmRSS")
        print(f"RSS idle {idle // MIB} MiB, with 1000 half-open connections {rss // MIB} MiB")
        assert not RSS_BOUNDS or rss <= idle + 64 * MIB
        # h2o's request timeout (min(idle-timeout, 10 s)) closes them.
        wait_for(lambda: len(os.listdir(f"/proc/{d.proc.pid}/fd")) < 500, 15,
                 what="the half-open connections to be closed")
    finally:
        for s in half:
            s.close()
        canary.stop()
    assert_canary(canary)


def test_clients_that_drip_bytes_are_closed_by_the_message_timeout(make_daemon):
    """50 connections each send an unfinished message a byte at a time: each is closed
    message-timeout after its first byte, however often the bytes come, and the canary is
    served meanwhile."""
    d, secret = keyed_daemon(make_daemon, ["--message-timeout", "2s"])
    canary = Canary(d.verify_sock, secret)
    canary.start()
    drippers = []
    try:
        msg = b'{"method":"io.heare.Auth.GetHealth"'
        for _ in range(50):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(d.verify_sock)
            drippers.append(s)
        t0 = time.monotonic()
        closed = set()
        i = 0
        while len(closed) < len(drippers) and time.monotonic() - t0 < 10:
            for s in drippers:
                if s in closed:
                    continue
                try:
                    s.send(msg[i % len(msg):i % len(msg) + 1])
                except (BrokenPipeError, ConnectionResetError):
                    closed.add(s)
            i += 1
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        assert len(closed) == len(drippers), f"{len(drippers) - len(closed)} drippers still open"
        assert 1.5 <= elapsed < 6, f"the drippers were closed after {elapsed:.1f} s"
    finally:
        for s in drippers:
            s.close()
        canary.stop()
    assert_canary(canary)
    assert d.logs() and any("not complete within 2000 ms" in str(e.get("message", ""))
                            for e in d.logs())


def test_at_the_descriptor_limit_the_daemon_rests_and_serves_the_canary(make_daemon):
    """Idle connections take every descriptor a 256-descriptor daemon has: it stays under a
    fifth of a CPU, the canary (connected before) keeps verifying, and a new client is
    served once a descriptor is free."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    key, secret = v2_key("canary")
    d = make_daemon(start=False, store_doc={"version": 2, "keys": [key]})
    d.watch(secret)
    d.spawn(["prlimit", "--nofile=256:256", "--", HEARE_AUTHD] + d.base_args() + d.extra_args)
    prioritize(d.proc.pid)
    canary = Canary(d.verify_sock, secret, pause=0.01)
    canary.start()
    idle = []
    try:
        for _ in range(320):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(d.verify_sock)
            idle.append(s)
        time.sleep(0.5)
        t0, c0 = time.monotonic(), cpu_seconds(d.proc.pid)
        time.sleep(2.0)
        share = (cpu_seconds(d.proc.pid) - c0) / (time.monotonic() - t0)
        assert share < 0.2, f"the daemon used {share:.0%} of a CPU at the descriptor limit"
        late = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        late.settimeout(15)
        late.connect(d.verify_sock)
        late.sendall(GET_HEALTH)
        for s in idle:  # the ones in the backlog ahead of it as well
            s.close()
        idle = []
        assert b"healthy" in late.recv(65536)
        late.close()
    finally:
        for s in idle:
            s.close()
        canary.stop()
    assert_canary(canary)
