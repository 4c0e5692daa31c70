"""The Python client (client/python/heare_auth.py) against the real daemon and fake
peers: every code, the Client and its health, the request fields, errors as Error and
Unavailable (missing, refused, silent), bad replies, and reconnecting after the daemon
restarts."""
import os
import socket
import sys
import tempfile
import time

import pytest

from conftest import ROOT, legacy_id, ok, rfc3339
from test_client_c import FakePeer, answering, VALID_REPLY, restart

sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import heare_auth  # noqa: E402

UPDATE = "io.heare.AuthAdmin.UpdateKey"


@pytest.fixture
def fakedir():
    d = tempfile.mkdtemp(prefix="heare-fake-")
    yield d
    import shutil
    shutil.rmtree(d, ignore_errors=True)


def test_every_code(daemon):
    valid, s_valid = daemon.create("py-valid", scopes=["documents.read"],
                                   metadata={"team": "payments"},
                                   expires_at=rfc3339(time.time() + 86400))
    disabled, s_disabled = daemon.create("py-disabled")
    ok(daemon.call(UPDATE, {"id": disabled["id"], "disabled": True}))
    expired, s_expired = daemon.create("py-expired", expires_at=rfc3339(time.time() + 3600))
    ok(daemon.call(UPDATE, {"id": expired["id"], "expires_at": rfc3339(time.time() - 60)}))
    limited, s_limited = daemon.create("py-limited", rate_limit={"per_second": 1, "burst": 1})
    for s in (s_valid, s_disabled, s_expired, s_limited):
        daemon.watch(s)

    r = heare_auth.verify(s_valid, socket=daemon.verify_sock)
    assert r == heare_auth.Result(valid=True, code="VALID", key_id=valid["id"], name="py-valid",
                                  metadata={"team": "payments"}, scopes=["documents.read"],
                                  expires_at=valid["expires_at"], retry_after_ms=None)
    assert r and r.raw["code"] == "VALID"
    cases = [
        (s_valid, "documents.read", "VALID", valid),
        (s_valid, "billing.write", "FORBIDDEN", valid),
        ("not a key", None, "MALFORMED", None),
        ("sec_\u00e9\"\\", None, "MALFORMED", None),
        (legacy_id("sec"), None, "NOT_FOUND", None),
        (s_disabled, None, "DISABLED", disabled),
        (s_expired, None, "EXPIRED", expired),
        (s_limited, None, "VALID", limited),
        (s_limited, None, "RATE_LIMITED", limited),
    ]
    with heare_auth.Client(socket=daemon.verify_sock, timeout=2) as c:
        for key, scope, code, k in cases:
            r = c.verify(key, scope, user_agent="pytest")
            assert (r.code, r.valid, bool(r)) == (code, code == "VALID", code == "VALID"), r
            if k is None:
                assert r.key_id is None and r.name is None and r.scopes is None, r
            else:
                assert (r.key_id, r.name, r.scopes, r.metadata) == \
                    (k["id"], k["name"], k["scopes"], k["metadata"]), r
            if code == "RATE_LIMITED":
                assert 0 < r.retry_after_ms <= 1000, r
            else:
                assert r.retry_after_ms is None, r
        h = c.health()
        assert h["status"] == "healthy" and h["keys_loaded"] == 4, h


def test_default_socket_from_the_environment(daemon, monkeypatch):
    key, secret = daemon.create("py-env")
    daemon.watch(secret)
    monkeypatch.setenv("HEARE_AUTH_VERIFY_SOCKET", daemon.verify_sock)
    assert heare_auth.verify(secret).code == "VALID"
    monkeypatch.delenv("HEARE_AUTH_VERIFY_SOCKET")
    assert heare_auth.Client().path == "/run/heare-auth/verify.sock"


def test_refused_parameters_are_errors_with_their_name(daemon):
    key, secret = daemon.create("py-params")
    daemon.watch(secret)
    with heare_auth.Client(socket=daemon.verify_sock) as c:
        with pytest.raises(heare_auth.Error) as e:
            c.verify(secret, client_address="not an address")
        assert not isinstance(e.value, heare_auth.Unavailable)
        assert e.value.name == "org.varlink.service.InvalidParameter"
        assert e.value.parameters["parameter"] == "client_address"
        assert c.verify(secret).valid  # the connection is still good
    with pytest.raises(TypeError):
        heare_auth.verify(None, socket=daemon.verify_sock)
    with pytest.raises(ValueError):
        heare_auth.Client(timeout=0)


def test_unavailable(fakedir):
    missing = os.path.join(fakedir, "missing.sock")
    with pytest.raises(heare_auth.Unavailable, match="missing.sock"):
        heare_auth.verify("sec_x", socket=missing)
    dead = os.path.join(fakedir, "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(dead)
    with pytest.raises(heare_auth.Unavailable):
        heare_auth.verify("sec_x", socket=dead)
    s.close()
    silent = os.path.join(fakedir, "silent.sock")
    peer = FakePeer(silent, lambda conn, msg: None)
    try:
        t0 = time.monotonic()
        with pytest.raises(heare_auth.Unavailable, match="no answer within 0.3 s"):
            heare_auth.verify("sec_x", socket=silent, timeout=0.3)
        assert 0.3 <= time.monotonic() - t0 < 0.7
    finally:
        peer.close()


def test_bad_replies_are_errors(fakedir):
    for i, reply in enumerate([b"garbage\0", b'{"parameters": {"valid": true}}\0',
                               b'{"parameters": {"valid": true, "code": "VALID", '
                               b'"scopes": "x"}}\0', b"x" * 70000]):
        path = os.path.join(fakedir, f"bad{i}.sock")
        peer = FakePeer(path, answering(reply))
        try:
            with pytest.raises(heare_auth.Error) as e:
                heare_auth.verify("sec_x", socket=path)
            assert not isinstance(e.value, heare_auth.Unavailable), reply[:40]
        finally:
            peer.close()


def test_reconnects_once(daemon, fakedir):
    path = os.path.join(fakedir, "once.sock")
    peer = FakePeer(path, answering(VALID_REPLY, then=lambda n: "close"))
    try:
        with heare_auth.Client(socket=path) as c:
            for _ in range(3):
                assert c.verify("sec_x").code == "VALID"
        assert peer.accepted == 3
    finally:
        peer.close()

    key, secret = daemon.create("py-restart")
    daemon.watch(secret)
    with heare_auth.Client(socket=daemon.verify_sock, timeout=3) as c:
        assert c.verify(secret).valid
        daemon.stop()
        with pytest.raises(heare_auth.Unavailable):
            c.verify(secret)
        restart(daemon)
        assert c.verify(secret).valid
        daemon.stop()
        restart(daemon)
        assert c.verify(secret).valid  # the old connection died: one reconnect


def test_no_sigpipe_with_its_default_action(fakedir):
    """A host that restored SIGPIPE's default action is not killed when the daemon went
    away: each connection answers once and closes, and the next call writes into the
    closed socket (EPIPE) before it reconnects."""
    path = os.path.join(fakedir, "once.sock")
    peer = FakePeer(path, answering(VALID_REPLY, then=lambda n: "close"))
    code = ("import signal, sys, time, heare_auth\n"
            "signal.signal(signal.SIGPIPE, signal.SIG_DFL)\n"
            "with heare_auth.Client(socket=sys.argv[1]) as c:\n"
            "    for _ in range(3):\n"
            "        assert c.verify('sec_x').valid\n"
            "        time.sleep(0.2)\n"
            "print('alive')\n")
    try:
        import subprocess
        res = subprocess.run(["/usr/bin/python3", "-c", code, path], capture_output=True,
                             text=True, timeout=30,
                             env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "client",
                                                                          "python")))
        assert res.returncode == 0 and res.stdout == "alive\n", res
        assert peer.accepted == 3
    finally:
        peer.close()
