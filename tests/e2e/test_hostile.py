"""Hostile local clients (docs/operations.md, "Limits"): while they flood, drip, never read
or hold every descriptor, a canary on its own connection keeps verifying, never fails and
never waits 200 ms; the daemon's memory stays within buffers-max (plus 64 MiB for the rest
of the daemon) and comes back once they go. Only bounds that do not depend on the machine's
speed are asserted; bench/hostile measures the canary's p50 and p99 under the same attacks."""
import socket
import time

from conftest import free_port, v2_key, wait_for
from hostile import (Attackers, Canary, cpu_seconds, reset_peak_rss, settle_rss,
                     status_kib)

MIB = 1024  # in KiB, as /proc reports
BUFFERS_MAX_KIB = 256 * MIB  # the default buffers-max
CANARY_MAX_S = 0.2
GET_HEALTH = b'{"method":"io.heare.Auth.GetHealth"}\0'
HTTP_HEALTH = b"GET /health HTTP/1.1\r\nHost: heare\r\n\r\n"


def keyed_daemon(make_daemon, extra_args=()):
    key, secret = v2_key("canary")
    d = make_daemon(store_doc={"version": 2, "keys": [key]}, extra_args=list(extra_args))
    d.watch(secret)
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
            assert peak <= BUFFERS_MAX_KIB + 64 * MIB, \
                f"round {r}: RSS peaked at {peak // MIB} MiB (idle {idle // MIB} MiB)"
            after = settle_rss(pid, 2 * idle, timeout=5)
            assert after <= 2 * idle, \
                f"round {r}: RSS {after // MIB} MiB 5 s after the attackers left " \
                f"(idle {idle // MIB} MiB, peak {peak // MIB} MiB)"
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
