"""libheare-auth.so.0 against the real daemon and against fake peers: a probe program
(client/probe.c) compiled with `cc $(pkg-config --cflags --libs heare-auth)` against the
build tree, every code, the request fields, timeouts (a peer that accepts and never
answers), bad replies, reconnecting after the daemon restarts, no SIGPIPE, close-on-exec;
the exported symbols and the soname; and the example program of heare-auth(3)."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import ROOT, SANITIZED, legacy_id, ok, rfc3339

UPDATE = "io.heare.AuthAdmin.UpdateKey"
PROBE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "client", "probe.c")
MAN_PAGE = os.path.join(ROOT, "docs", "man", "heare-auth.3.scd")


def build_root():
    b = os.environ.get("HEARE_BUILD_ROOT")
    if b:
        return b
    for name in ("build-test", "build"):
        if os.path.exists(os.path.join(ROOT, name, "client")):
            return os.path.join(ROOT, name)
    pytest.fail("no build tree with client/")


def lib_env(extra=None):
    """pkg-config finds the build tree's heare-auth-uninstalled.pc; the loader its .so."""
    b = build_root()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARE_AUTH_")}
    env["PKG_CONFIG_PATH"] = os.path.join(b, "meson-uninstalled")
    env["LD_LIBRARY_PATH"] = os.path.join(b, "client")
    env.update(extra or {})
    return env


def compile_c(source_path, out, pkgs="heare-auth"):
    flags = subprocess.run(["pkg-config", "--cflags", "--libs"] + pkgs.split(),
                           env=lib_env(), capture_output=True, text=True, timeout=30)
    assert flags.returncode == 0, flags.stderr
    argv = ["cc", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-o", out,
            source_path] + flags.stdout.split()
    if SANITIZED:
        # The library of the sanitizer build needs ASan's runtime loaded first: a program
        # that uses it is built with the same sanitizers (and checked by them too).
        argv.append("-fsanitize=address,undefined")
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"{' '.join(argv)}:\n{res.stderr}"
    return out


@pytest.fixture(scope="module")
def probe():
    tmp = tempfile.mkdtemp(prefix="heare-probe-")
    try:
        yield compile_c(PROBE_SOURCE, os.path.join(tmp, "probe"), "heare-auth jansson")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Probe:
    """One probe process: one client, one call a line."""

    def __init__(self, binary, sock, timeout_ms, env=None):
        self.p = subprocess.Popen([binary, sock, str(timeout_ms)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=lib_env(env))
        self.opened = json.loads(self.p.stdout.readline())

    def call(self, **req):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, f"probe died: exit {self.p.wait(5)}"
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        rc = self.p.wait(10)
        assert rc == 0, f"probe exit {rc}"

    def __enter__(self):
        return self

    def __exit__(self, *a):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


class FakePeer:
    """A Unix socket server that answers every call with behaviour(conn, request bytes)."""

    def __init__(self, path, behaviour):
        self.path = path
        self.behaviour = behaviour
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.bind(path)
        self.s.listen(16)
        self.accepted = 0
        self.stop = False
        self.conns = []
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        while not self.stop:
            try:
                conn, _ = self.s.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        buf = b""
        try:
            while True:
                if self.behaviour(conn, None) == "close-at-once":
                    conn.close()
                    return
                while b"\0" not in buf:
                    d = conn.recv(65536)
                    if not d:
                        return
                    buf += d
                msg, buf = buf.split(b"\0", 1)
                if self.behaviour(conn, msg) == "close":
                    conn.close()
                    return
        except OSError:
            return

    def close(self):
        self.stop = True
        self.s.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def answering(reply_bytes, then=None):
    state = {"n": 0}

    def behaviour(conn, msg):
        if msg is None:
            return None
        state["n"] += 1
        conn.sendall(reply_bytes)
        return then(state["n"]) if then else None
    return behaviour


VALID_REPLY = (json.dumps({"parameters": {"valid": True, "code": "VALID", "key_id": "key_x",
                                          "name": "n"}}) + "\0").encode()


@pytest.fixture
def fakedir():
    d = tempfile.mkdtemp(prefix="heare-fake-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_every_code(daemon, probe):
    valid, s_valid = daemon.create("c-valid", scopes=["documents.read", "billing.*"],
                                   metadata={"team": "payments", "tier": 2},
                                   expires_at=rfc3339(time.time() + 86400))
    disabled, s_disabled = daemon.create("c-disabled")
    ok(daemon.call(UPDATE, {"id": disabled["id"], "disabled": True}))
    expired, s_expired = daemon.create("c-expired", expires_at=rfc3339(time.time() + 3600))
    ok(daemon.call(UPDATE, {"id": expired["id"], "expires_at": rfc3339(time.time() - 60)}))
    limited, s_limited = daemon.create("c-limited", rate_limit={"per_second": 1, "burst": 1})
    for s in (s_valid, s_disabled, s_expired, s_limited):
        daemon.watch(s)
    cases = [
        (dict(key=s_valid, plain=True), "VALID", valid),
        (dict(key=s_valid, scope="documents.read", plain=True), "VALID", valid),
        (dict(key=s_valid, scope="billing.refund"), "VALID", valid),
        (dict(key=s_valid, scope="admin.write"), "FORBIDDEN", valid),
        (dict(key="not a key"), "MALFORMED", None),
        (dict(key=""), "MALFORMED", None),
        (dict(key="sec_\u00e9\u0001\"\\"), "MALFORMED", None),  # escaped, sent, refused
        (dict(key=legacy_id("sec")), "NOT_FOUND", None),
        (dict(key=s_disabled), "DISABLED", disabled),
        (dict(key=s_expired), "EXPIRED", expired),
        (dict(key=s_limited, user_agent="probe/1.0 (\"quoted\")"), "VALID", limited),
        (dict(key=s_limited), "RATE_LIMITED", limited),
    ]
    with Probe(probe, daemon.verify_sock, 2000) as p:
        assert p.opened["open"] == 0
        for req, code, k in cases:
            r = p.call(**req)
            assert r["rc"] == 0, (req, r)
            assert r["code"] == code and r["valid"] == (code == "VALID"), (req, r)
            if k is None:
                assert r["key_id"] is None and r["name"] is None and r["scopes"] is None, r
                assert r["metadata_json"] is None and r["expires_at"] is None, r
            else:
                assert (r["key_id"], r["name"]) == (k["id"], k["name"]), r
                assert r["scopes"] == k["scopes"], r
                assert json.loads(r["metadata_json"]) == k["metadata"], r
            if code == "RATE_LIMITED":
                assert 0 < r["retry_after_ms"] <= 1000, r
            else:
                assert r["retry_after_ms"] == -1, r
        r = p.call(key=s_expired)
        assert r["expires_at"] == daemon.get_key(expired["id"])["expires_at"]
        assert p.call(key=s_valid)["expires_at"] == valid["expires_at"]
        # One connection carried every call.
        assert p.call(cloexec=True) == {"cloexec": True, "sockets": 1}
        p.close()
    # The metadata keeps the daemon's order.
    assert daemon.verify(s_valid)["metadata"] == {"team": "payments", "tier": 2}


def test_bad_arguments_are_einval(daemon, probe):
    key, secret = daemon.create("c-args")
    daemon.watch(secret)
    with Probe(probe, daemon.verify_sock, 2000) as p:
        assert p.call(null_key=True)["errno"] == "EINVAL"
        assert p.call(key="sec_" + "x" * 66000)["errno"] == "EINVAL"  # over 64 KiB
        # A parameter the daemon refuses (InvalidParameter) is -EINVAL too: a bad address
        # or expression, or, from a daemon that predates them, the parameter itself.
        r = p.call(key=secret, client_address="not an address")
        assert r["errno"] == "EINVAL", r
        r = p.call(key=secret, require="documents.read or")
        assert r["errno"] == "EINVAL", r
        # None of it broke the client.
        assert p.call(key=secret)["code"] == "VALID"
        p.close()


def test_socket_default_missing_and_refused(probe, fakedir):
    missing = os.path.join(fakedir, "missing.sock")
    with Probe(probe, "-", 500, env={"HEARE_AUTH_VERIFY_SOCKET": missing}) as p:
        assert p.opened["open"] == 0  # open does not connect
        r = p.call(key="sec_x")
        assert r["errno"] == "ENOENT" and "no heare-authd socket" in r["strerror"], r
        p.close()
    dead = os.path.join(fakedir, "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(dead)  # bound, never listening
    with Probe(probe, dead, 500) as p:
        assert p.call(key="sec_x")["errno"] == "ECONNREFUSED"
        p.close()
    s.close()
    with Probe(probe, "/x" * 100, 500) as p:
        assert p.opened["open"] < 0 and "too long" in p.opened["strerror"]


def test_default_socket_from_the_environment(daemon, probe):
    key, secret = daemon.create("c-env")
    daemon.watch(secret)
    with Probe(probe, "-", 0, env={"HEARE_AUTH_VERIFY_SOCKET": daemon.verify_sock}) as p:
        assert p.call(key=secret)["code"] == "VALID"
        p.close()


@pytest.mark.parametrize("timeout_ms,want", [(300, 300), (0, 1000), (-5, 1000)])
def test_one_deadline_a_call_against_a_silent_peer(probe, fakedir, timeout_ms, want):
    path = os.path.join(fakedir, "silent.sock")
    peer = FakePeer(path, lambda conn, msg: None)  # reads, never answers
    try:
        with Probe(probe, path, timeout_ms) as p:
            r = p.call(key="sec_x")
            assert r["errno"] == "ETIMEDOUT" and "in time" in r["strerror"], r
            assert want <= r["ms"] < want + 400, r
            p.close()
    finally:
        peer.close()


def test_bad_replies_are_eproto(probe, fakedir):
    replies = [
        b"not json\0",
        b"[1,2]\0",
        b'{"parameters": {"valid": true}}\0',  # no code
        b'{"parameters": {"valid": "yes", "code": "VALID"}}\0',
        b'{"parameters": {"valid": true, "code": "VALID", "scopes": "a"}}\0',
        b'{"parameters": {"valid": true, "code": "VALID", "retry_after_ms": "1"}}\0',
        b'{"parameters": {"valid": true, "code": "VALID"}, "continues": true}\0',
        b'{"error": "io.heare.Auth.InternalError", "parameters": {"reason": "x"}}\0',
        b'{"error": "org.varlink.service.MethodNotFound", "parameters": {}}\0',
        b"x" * 70000,  # no terminator within the limit
        b'{"parameters": {"valid": true, "code": "VALID", "code": "VALID"}}\0',  # twice
        b'{"parameters": {"valid": true, "code": "VALID", "retry_after_ms": 1.5}}\0',
        b'{"parameters": {"valid": true, "code": "VALID", "retry_after_ms": 1e3}}\0',
        b'{"parameters": {"valid": true, "code": "VALID", '
        b'"retry_after_ms": 99999999999999999999}}\0',
        b'{"parameters": {"valid": true, "code": "VALID", "name": "a\\u0000b"}}\0',
        b'{"parameters": {"valid": true, "code": "VALID", "name": "\\ud800"}}\0',
        b'{"parameters": {"valid": true, "code": "VALID", "metadata": [1]}}\0',
        b'{"parameters": {"valid": true, "code": "VALID", "x": [1,}}\0',
        b'{"parameters": {"valid": true, "code": "VALID"}} trailing\0',
        b'{"parameters": {"valid": true, "code": "VALID"}, "parameters": {}}\0',
        b'{"parameters": {"valid": true, "code": "VALID", "x": ' + b"[" * 100 + b"]" * 100
        + b'}}\0',  # nested past the depth limit
        b'{"parameters": {"valid": true, "code": "VALID", "name": "\x01"}}\0',
        b'{"parameters": {"reason": "x"}, "error": "io.heare.Auth.InternalError"}\0',
    ]
    for i, reply in enumerate(replies):
        path = os.path.join(fakedir, f"bad{i}.sock")
        peer = FakePeer(path, answering(reply))
        try:
            with Probe(probe, path, 1000) as p:
                r = p.call(key="sec_x")
                assert r["errno"] == "EPROTO", (reply[:80], r)
                p.close()
        finally:
            peer.close()
    path = os.path.join(fakedir, "invalid.sock")
    peer = FakePeer(path, answering(
        b'{"error": "org.varlink.service.InvalidParameter", "parameters": {"parameter": "k"}}\0'))
    try:
        with Probe(probe, path, 1000) as p:
            assert p.call(key="sec_x")["errno"] == "EINVAL"
            p.close()
    finally:
        peer.close()


def test_replies_read_as_json_reads_them(probe, fakedir):
    """Escapes decoded, members in any order, unknown members of any shape skipped (a
    later daemon may add fields), the metadata kept as the daemon wrote it."""
    reply = (b'{"continues": false, "extra": {"a": [1, -2.5e3, true, null, "\\""]}, '
             b'"parameters": { "future": [{"x": {}}], "scopes": ["a\\/b", "\\u00e9t\\u00e9",'
             b' "\\ud83d\\ude00"], "name": "caf\xc3\xa9 \\"q\\" \\\\ \\t", '
             b'"metadata": {"k": {"n": [1, 2]}, "s": "\\u0041"}, "retry_after_ms": 0, '
             b'"code": "RATE_LIMITED", "valid": false, "key_id": null, "expires_at": '
             b'"2030-01-01T00:00:00Z"} }\0')
    path = os.path.join(fakedir, "odd.sock")
    peer = FakePeer(path, answering(reply))
    try:
        with Probe(probe, path, 1000) as p:
            r = p.call(key="sec_x")
            assert r["rc"] == 0, r
            assert (r["valid"], r["code"], r["key_id"], r["retry_after_ms"]) == \
                (0, "RATE_LIMITED", None, 0), r
            assert r["name"] == 'caf\u00e9 "q" \\ \t', r
            assert r["scopes"] == ["a/b", "\u00e9t\u00e9", "\U0001f600"], r
            assert r["metadata_json"] == '{"k": {"n": [1, 2]}, "s": "\\u0041"}', r
            assert r["expires_at"] == "2030-01-01T00:00:00Z"
            for _ in range(3):  # the same connection, again
                assert p.call(key="sec_x")["code"] == "RATE_LIMITED"
            p.close()
        assert peer.accepted == 1
    finally:
        peer.close()


def test_no_sigpipe_when_the_peer_is_gone(probe, fakedir):
    """A peer that closes every connection at once: the write hits a closed socket; the
    probe, with SIGPIPE at its default action, must live to report it."""
    path = os.path.join(fakedir, "closing.sock")
    peer = FakePeer(path, lambda conn, msg: "close-at-once")
    try:
        with Probe(probe, path, 1000) as p:
            for _ in range(5):
                r = p.call(key="sec_" + "y" * 4000)
                assert r["errno"] in ("EPIPE", "ECONNRESET"), r
            p.close()  # exit status 0: no signal
    finally:
        peer.close()


def test_reconnects_once_when_a_used_connection_broke(probe, fakedir):
    path = os.path.join(fakedir, "once.sock")
    # Each connection answers one call and closes.
    peer = FakePeer(path, answering(VALID_REPLY, then=lambda n: "close"))
    try:
        with Probe(probe, path, 1000) as p:
            for _ in range(3):
                r = p.call(key="sec_x")
                assert r["rc"] == 0 and r["code"] == "VALID", r
                # Time for the close to land: the next call writes into a closed socket
                # (EPIPE, and SIGPIPE without MSG_NOSIGNAL: the probe keeps the default).
                p.call(sleep_ms=200)
            p.close()
        assert peer.accepted == 3
    finally:
        peer.close()


def restart(daemon):
    daemon.notifications.clear()  # READY=1 of the last start does not count
    daemon.start()


def test_reconnects_after_the_daemon_restarts(daemon, probe):
    key, secret = daemon.create("c-restart")
    daemon.watch(secret)
    with Probe(probe, daemon.verify_sock, 3000) as p:
        assert p.call(key=secret)["code"] == "VALID"
        daemon.stop()
        r = p.call(key=secret)  # nobody there: reported, not hidden
        assert r["errno"] in ("ENOENT", "ECONNREFUSED"), r
        restart(daemon)
        r = p.call(key=secret)
        assert r["rc"] == 0 and r["code"] == "VALID", r
        daemon.stop()
        restart(daemon)
        # The connection the client holds is dead: one call, one transparent reconnect.
        r = p.call(key=secret)
        assert r["rc"] == 0 and r["code"] == "VALID", r
        p.close()


def test_exports_only_the_api_with_its_soname():
    lib = os.path.join(build_root(), "client", "libheare-auth.so.0")
    assert os.path.exists(lib)
    nm = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True,
                        timeout=30, check=True).stdout
    names = sorted(l.split()[-1] for l in nm.splitlines())
    assert names == ["HEARE_AUTH_0", "heare_auth_close@@HEARE_AUTH_0",
                     "heare_auth_open@@HEARE_AUTH_0", "heare_auth_strerror@@HEARE_AUTH_0",
                     "heare_auth_verify@@HEARE_AUTH_0",
                     "heare_auth_verify_request@@HEARE_AUTH_0"], names
    dyn = subprocess.run(["readelf", "-d", lib], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    assert "Library soname: [libheare-auth.so.0]" in dyn
    with open(os.path.join(ROOT, "client", "heare-auth.h")) as f:
        header = f.read()
    assert "#include" not in header, "the public header needs nothing else"


def man_example():
    with open(MAN_PAGE) as f:
        text = f.read()
    m = re.search(r"# EXAMPLE\n.*?```\n(.*?)```", text, re.S)
    assert m, "heare-auth(3) has an EXAMPLE with a code block"
    # scdoc takes a backslash as an escape even in literal blocks: the page doubles them.
    return m.group(1).replace("\\\\", "\\")


def test_the_man_page_example_compiles_and_runs(daemon, tmp_path):
    src = tmp_path / "example.c"
    src.write_text(man_example())
    binary = compile_c(str(src), str(tmp_path / "example"))
    key, secret = daemon.create("c-example", scopes=["documents.read"])
    daemon.watch(secret)
    env = lib_env({"HEARE_AUTH_VERIFY_SOCKET": daemon.verify_sock})
    res = subprocess.run([binary, "documents.read"], input=secret + "\n", env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res
    assert res.stdout == f"VALID {key['id']} (c-example)\n", res.stdout
    res = subprocess.run([binary, "billing.write"], input=secret + "\n", env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and res.stdout == f"FORBIDDEN {key['id']} (c-example)\n", res
    daemon.stop()
    res = subprocess.run([binary], input=secret + "\n", env=env, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 2 and res.stderr.startswith("verify: "), res
