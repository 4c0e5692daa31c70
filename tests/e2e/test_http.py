"""The HTTP listener (SPEC §6): every row of the table, the Python service's compat bodies,
forward auth, keep-alive, pipelining, timeouts, malformed HTTP, the connection cap and the
drain, against a real heare-authd."""
import http.client as httpclient
import json
import os
import re
import resource
import signal
import socket
import subprocess
import time

import pytest

from conftest import (HEARE_AUTHD, http_daemon_args, http_request, raw_http, rfc3339,
                      sanitizer_setenv_args, v2_key, wait_for)

INVALID_401 = {"detail": {"valid": False, "error": "Invalid API key", "code": None}}
MISSING_422 = {"detail": [{"loc": ["body", "api_key"], "msg": "field required",
                           "type": "value_error.missing"}]}


class Http:
    """A daemon with an HTTP listener, and requests to it."""

    def __init__(self, make_daemon, host="127.0.0.1", extra=(), **kw):
        args, (self.host, self.port) = http_daemon_args(host)
        self.d = make_daemon(extra_args=args + list(extra), **kw)

    def req(self, method, path, body=None, headers=None, timeout=10.0):
        for v in (headers or {}).values():
            if isinstance(v, str) and "sec_" in v:
                self.d.watch(v.split()[-1])
        if isinstance(body, dict) and isinstance(body.get("api_key"), str):
            self.d.watch(body["api_key"])
        return http_request(self.host, self.port, method, path, body, headers, timeout)

    def verify(self, key, scope=None, headers=None):
        body = {"api_key": key}
        if scope is not None:
            body["scope"] = scope
        return self.req("POST", "/verify", body, headers)

    def raw(self, data, timeout=5.0):
        return raw_http(self.host, self.port, data, timeout)


@pytest.fixture
def http(make_daemon):
    return Http(make_daemon, extra=["--idle-timeout", "2s"])


def deleted_secret(d):
    """A well-formed secret that no key has (any more): verifies as NOT_FOUND."""
    key, secret = d.create("short-lived")
    d.call("io.heare.AuthAdmin.DeleteKey", {"id": key["id"]})
    return secret


def invalid(code):
    return {"detail": {"valid": False, "error": "Invalid API key", "code": code}}


# -- POST /verify ----------------------------------------------------------------------------

def test_verify_valid_answers_the_python_body(http):
    key, secret = http.d.create("svc", scopes=["docs.read"], metadata={"team": "a"})
    r = http.verify(secret)
    assert r.status == 200, r.body
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body == {"valid": True, "key_id": key["id"], "name": "svc",
                    "metadata": {"team": "a"}, "scopes": ["docs.read"], "expires_at": None,
                    "code": "VALID"}
    # with a scope the key has
    assert http.verify(secret, scope="docs.read").status == 200


def test_verify_invalid_keys_get_the_compat_401(http):
    _, expired = http.d.create("old", expires_at=rfc3339(time.time() + 2))
    key, disabled = http.d.create("off")
    http.d.call("io.heare.AuthAdmin.UpdateKey", {"id": key["id"], "disabled": True})
    r = http.verify(deleted_secret(http.d))
    assert (r.status, r.json()) == (401, invalid("NOT_FOUND"))
    r = http.verify("sec_1" + "A" * 38)  # the shape of a secret, a wrong checksum
    assert (r.status, r.json()) == (401, invalid("MALFORMED"))
    r = http.verify("not-a-key")
    assert (r.status, r.json()) == (401, invalid("NOT_FOUND"))
    r = http.verify(disabled)
    assert (r.status, r.json()) == (401, invalid("DISABLED"))
    time.sleep(3)
    r = http.verify(expired)
    assert (r.status, r.json()) == (401, invalid("EXPIRED"))


def test_verify_missing_scope_is_403(http):
    _, secret = http.d.create("svc", scopes=["docs.read"])
    r = http.verify(secret, scope="docs.write")
    assert r.status == 403
    assert r.json()["detail"]["code"] == "FORBIDDEN"
    assert r.json()["detail"]["valid"] is False


def test_verify_rate_limited_is_429_with_retry_after(http):
    _, secret = http.d.create("slow", rate_limit={"per_second": 1, "burst": 1})
    assert http.verify(secret).status == 200
    r = http.verify(secret)
    assert r.status == 429
    assert r.json()["detail"]["code"] == "RATE_LIMITED"
    assert r.json()["detail"]["retry_after_ms"] >= 1
    assert int(r.headers["retry-after"]) >= 1


def body_forms(secret):
    """The same request written the ways clients write it: the plain forms the daemon reads
    in place, and forms only the full JSON parser reads (an escape, null, other members, a
    repeated member: the last one counts, as in Python's json)."""
    escaped = "\\u%04x%s" % (ord(secret[0]), secret[1:])
    return [
        '{"api_key":"%s"}' % secret,
        '{"api_key": "%s", "scope": "docs.read"}' % secret,
        ' {\r\n\t"scope" : "docs.read" ,\n "api_key" : "%s" }\n' % secret,
        '{"api_key":"%s","scope":null}' % secret,
        '{"api_key":"%s"}' % escaped,
        '{"api_key":"%s","client":{"name":"x"}}' % secret,
        '{"api_key":"sec_wrong","api_key":"%s"}' % secret,
    ]


@pytest.mark.parametrize("form", range(len(body_forms("s"))))
def test_verify_reads_the_body_however_it_is_written(http, form):
    key, secret = http.d.create("svc", scopes=["docs.read"])
    http.d.watch(secret)
    body = body_forms(secret)[form]
    r = http.req("POST", "/verify", body, headers={"Content-Type": "application/json"})
    assert r.status == 200, (body, r.body)
    assert r.json()["key_id"] == key["id"]
    # and the same body with a scope the key lacks is refused, whichever reader took it
    wrong = body.replace("docs.read", "docs.write")
    if wrong != body:
        r = http.req("POST", "/verify", wrong, headers={"Content-Type": "application/json"})
        assert (r.status, r.json()["detail"]["code"]) == (403, "FORBIDDEN")


@pytest.mark.parametrize("body", [{}, {"key": "sec_x"}, {"api_key": 123}, {"api_key": None},
                                  {"api_key": ["sec_x"]}, [], "a string", 5])
def test_verify_missing_or_non_string_key_is_422(http, body):
    r = http.req("POST", "/verify", json.dumps(body),
                 headers={"Content-Type": "application/json"})
    assert r.status == 422, r.body
    assert r.json() == MISSING_422


def test_verify_non_string_scope_is_422(http):
    r = http.req("POST", "/verify", {"api_key": "sec_x", "scope": 7})
    assert r.status == 422
    assert r.json()["detail"][0]["loc"] == ["body", "scope"]


@pytest.mark.parametrize("body", ["", "{", "not json", '{"api_key": "sec_x"', "\xff"])
def test_verify_body_not_json_is_400(http, body):
    r = http.req("POST", "/verify", body.encode("latin-1"))
    assert r.status == 400, r.body
    assert "detail" in r.json()


@pytest.mark.parametrize("body,status,code", [
    (r'{"api_key":"sec_\u0000"}', 401, "MALFORMED"),
    (r'{"api_key":"\u0000"}', 401, "MALFORMED"),
    (r'{"api_key":"\ud800"}', 401, "MALFORMED"),
    (r'{"api_key":"sec_\udc00x"}', 401, "MALFORMED"),
    (r'{"api_key":"SECRET\u0000"}', 401, "MALFORMED"),  # not cut short to the good key
    (r'{"api_key":"SECRET","x":1e999999}', 200, "VALID"),  # other members are ignored
    ('{"api_key":1e999999}', 422, "api_key"),
    ('{"api_key":-1e999999}', 422, "api_key"),
    ('{"api_key":123456789012345678901234567890}', 422, "api_key"),
    (r'{"api_key\u0000":"SECRET"}', 422, "api_key"),
    ('{"api_key":"SECRET","scope":1e999999}', 422, "scope"),
    (r'{"api_key":"SECRET","scope":"docs.read\u0000x"}', 422, "scope"),
], ids=["nul", "only-nul", "high-surrogate", "low-surrogate", "good-key-nul", "huge-other",
        "huge", "huge-negative", "30-digits", "nul-in-name", "huge-scope", "nul-scope"])
def test_verify_valid_json_jansson_refuses_is_not_400(http, body, status, code):
    """Valid JSON is never "not JSON": a key with a NUL or a lone surrogate is an invalid
    key (401 MALFORMED); a number jansson cannot hold is a non-string api_key (422)."""
    key, secret = http.d.create("lenient-http", scopes=["docs.read"])
    http.d.watch(secret)
    body = body.replace("SECRET", secret)
    json.loads(body)  # valid JSON, as Python reads it
    conn = httpclient.HTTPConnection(http.host, http.port, timeout=10)
    try:
        conn.request("POST", "/verify", body=body)
        r = conn.getresponse()
        got = json.loads(r.read())
        assert r.status == status, (body, got)
        if status == 401:
            assert got == {"detail": {"valid": False, "error": "Invalid API key", "code": code}}
        elif status == 422:
            assert got["detail"][0]["loc"] == ["body", code], got
        else:
            assert got["code"] == code, got
        # the connection is kept alive and serves the next request
        conn.request("POST", "/verify", body=json.dumps({"api_key": secret}))
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["code"] == "VALID"
    finally:
        conn.close()
    assert not http.d.leaked_secrets()


def test_verify_invalid_json_beside_those_is_still_400(http):
    for body in (r'{"api_key":"\u0000\x"}', r'{"api_key":1e999999,}',
                 b'{"api_key":"\xed\xa0\x80"}', r'{"api_key":"\u0000"} {}',
                 # a NUL after a number or a literal, which jansson alone drops
                 b'{"api_key":"sec_x","n":1\x00}', b'{"api_key":"sec_x","ok":true\x00}'):
        r = http.req("POST", "/verify", body)
        assert r.status == 400, (body, r.body)


def test_verify_body_over_64k_is_413_and_the_daemon_goes_on(http):
    big = json.dumps({"api_key": "sec_x", "pad": "x" * (64 * 1024)})
    r = http.req("POST", "/verify", big)
    assert r.status == 413
    # chunked, without a length up front
    data = (b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
            b"".join(b"%x\r\n%s\r\n" % (8192, b"y" * 8192) for _ in range(9)) + b"0\r\n\r\n")
    assert http.raw(data).startswith(b"HTTP/1.1 413 ")
    # exactly at the limit is fine (and not JSON here)
    r = http.req("POST", "/verify", b"x" * (64 * 1024))
    assert r.status == 400
    assert http.req("GET", "/health").status == 200


def test_verify_user_agent_reaches_the_log(http):
    key, secret = http.d.create("svc")
    http.verify(secret, headers={"User-Agent": "probe/1.0"})
    http.verify("sec_1" + "B" * 38, headers={"User-Agent": "badprobe/2.0"})
    ok_ev = wait_for(lambda: [e for e in http.d.events("verification_success")
                              if e.get("user_agent") == "probe/1.0"], 5, what="success log")
    assert ok_ev[0]["key_id"] == key["id"]
    assert ok_ev[0]["peer_addr"] == "127.0.0.1"
    bad = wait_for(lambda: [e for e in http.d.events("verification_failed")
                            if e.get("user_agent") == "badprobe/2.0"], 5, what="failure log")
    assert bad[0]["key_prefix"] == "sec_1BBB"
    assert secret not in http.d.raw_log()


def test_verify_failed_attempts_are_throttled_per_address(make_daemon):
    h = Http(make_daemon, extra=["--max-failures-per-minute", "3"])
    _, secret = h.d.create("svc")
    # a minute boundary between the failures would reset the count: keep clear of it
    if time.time() % 60 > 55:
        time.sleep(61 - time.time() % 60)
    for _ in range(4):
        assert h.verify("sec_1" + "C" * 38).status == 401
    r = h.verify(secret)
    assert r.status == 429
    assert r.json()["detail"]["code"] == "RATE_LIMITED"
    # the Unix socket peer (another peer) is not affected
    assert h.d.verify(secret)["code"] == "VALID"


# -- /auth -----------------------------------------------------------------------------------

def test_auth_without_a_key_is_401_with_a_challenge(http):
    for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer "},
                    {"X-API-Key": ""}):
        r = http.req("GET", "/auth", headers=headers)
        assert r.status == 401, headers
        assert r.headers["www-authenticate"] == 'Bearer realm="heare-auth"'


def test_auth_bad_key_is_401(http):
    r = http.req("GET", "/auth", headers={"Authorization": "Bearer sec_1" + "D" * 38})
    assert r.status == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="heare-auth"'
    r = http.req("GET", "/auth", headers={"X-API-Key": "garbage"})
    assert r.status == 401


def test_auth_good_key_passes_identity_headers(http):
    key, secret = http.d.create("Web Front", scopes=["docs.read", "docs.write"])
    for method in ("GET", "POST", "HEAD", "DELETE", "PUT", "OPTIONS"):
        for headers in ({"Authorization": f"Bearer {secret}"},
                        {"authorization": f"bearer {secret}"},
                        {"X-API-Key": secret}):
            r = http.req(method, "/auth", headers=headers)
            assert r.status == 200, (method, headers)
            assert r.headers["x-auth-key-id"] == key["id"]
            assert r.headers["x-auth-key-name"] == "Web Front"
            assert r.headers["x-auth-scopes"] == "docs.read,docs.write"
            assert r.body == b""


def test_auth_scope_from_header_or_query(http):
    _, secret = http.d.create("svc", scopes=["docs.read", "admin.*"])
    bearer = {"Authorization": f"Bearer {secret}"}
    assert http.req("GET", "/auth", headers=dict(bearer, **{"X-Auth-Scope": "docs.read"})
                    ).status == 200
    assert http.req("GET", "/auth", headers=dict(bearer, **{"X-Auth-Scope": "docs.write"})
                    ).status == 403
    assert http.req("GET", "/auth?scope=docs.read", headers=bearer).status == 200
    assert http.req("GET", "/auth?x=1&scope=docs.write", headers=bearer).status == 403
    assert http.req("GET", "/auth?scope=admin.users%2Eread", headers=bearer).status == 200
    # under /auth/ too: Envoy's ext_authz appends the original path to its path_prefix
    assert http.req("GET", "/auth/docs/a?b=c", headers=bearer).status == 200
    assert http.req("GET", "/auth/docs/a", headers={"X-API-Key": "x"}).status == 401
    # an empty scope asks for none
    assert http.req("GET", "/auth?scope=", headers=dict(bearer, **{"X-Auth-Scope": ""})
                    ).status == 200
    # the header wins over the query
    assert http.req("GET", "/auth?scope=docs.write",
                    headers=dict(bearer, **{"X-Auth-Scope": "docs.read"})).status == 200


def test_auth_rate_limited_is_429(http):
    _, secret = http.d.create("slow", rate_limit={"per_second": 1, "burst": 1})
    assert http.req("GET", "/auth", headers={"X-API-Key": secret}).status == 200
    r = http.req("GET", "/auth", headers={"X-API-Key": secret})
    assert r.status == 429
    assert int(r.headers["retry-after"]) >= 1


def test_auth_key_name_cannot_inject_headers(http):
    key, secret = http.d.create("evil\r\nX-Injected: 1")
    r = http.req("GET", "/auth", headers={"X-API-Key": secret})
    assert r.status == 200
    assert "x-injected" not in r.headers
    assert r.headers["x-auth-key-name"] == "evil  X-Injected: 1"


# -- /health, /refresh, /metrics, 404 ---------------------------------------------------------

def test_health_answers_get_health(http):
    http.d.create("one")
    r = http.req("GET", "/health")
    assert r.status == 200
    body = r.json()
    assert body["status"] == "healthy"
    assert body["keys_loaded"] == 1
    for field in ("generation", "loaded_at", "store", "last_error", "uptime_seconds",
                  "version"):
        assert field in body
    assert http.req("HEAD", "/health").status == 200


def test_health_is_503_when_unhealthy(make_daemon):
    args, (host, port) = http_daemon_args()
    d = make_daemon(extra_args=args, start=False)
    # a store that cannot be read and no cache: nothing to serve
    with open(d.store_path, "w") as f:
        f.write("{ this is not json")
    d.start()
    r = http_request(host, port, "GET", "/health")
    assert r.status == 503
    assert r.json()["status"] == "unhealthy"
    assert r.json()["last_error"]
    # and back once the store is fixed
    with open(d.store_path + ".new", "w") as f:
        json.dump({"version": 2, "keys": []}, f)
    os.replace(d.store_path + ".new", d.store_path)
    wait_for(lambda: http_request(host, port, "GET", "/health").status == 200, 10,
             what="healthy again")


def test_refresh_from_loopback(make_daemon):
    h = Http(make_daemon, poll_interval="1h")
    h.d.create("one")
    entry, secret = v2_key("written-elsewhere")
    doc = json.load(open(h.d.store_path))
    doc["keys"].append(entry)
    with open(h.d.store_path + ".new", "w") as f:
        json.dump(doc, f)
    os.replace(h.d.store_path + ".new", h.d.store_path)
    assert h.verify(secret).status == 401
    r = h.req("POST", "/refresh", headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status == 200
    assert r.json() == {"success": True, "keys_loaded": 2}
    assert h.verify(secret).status == 200
    # only POST
    assert h.req("GET", "/refresh").status == 404


def test_metrics_in_prometheus_text(http):
    _, secret = http.d.create("svc")
    for _ in range(3):
        http.verify(secret)
    unknown = deleted_secret(http.d)
    http.verify(unknown)
    r = http.req("GET", "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.body.decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP ", "# TYPE ")), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples['heare_auth_verify_total{code="VALID"}'] == 3
    assert samples['heare_auth_verify_total{code="NOT_FOUND"}'] == 1
    assert samples["heare_auth_keys"] == 1
    assert samples['heare_auth_store_writes_total{result="ok"}'] == 3
    assert samples['heare_auth_store_reads_total{result="changed"}'] >= 1
    assert any(k.startswith("heare_auth_build_info{version=") for k in samples)
    for name in ("heare_auth_verify_total", "heare_auth_keys", "heare_auth_store_reads_total",
                 "heare_auth_store_writes_total", "heare_auth_build_info"):
        assert f"# TYPE {name} " in text


@pytest.mark.parametrize("method,path", [("GET", "/"), ("GET", "/verify"), ("PUT", "/health"),
                                         ("GET", "/nope"), ("POST", "/metrics"),
                                         ("GET", "/verify/x"), ("GET", "/authx")])
def test_anything_else_is_404_json(http, method, path):
    r = http.req(method, path)
    assert r.status == 404
    assert r.json() == {"detail": "Not Found"}


# -- connections ----------------------------------------------------------------------------

def test_keep_alive_serves_many_requests_on_one_connection(http):
    _, secret = http.d.create("svc")
    http.d.watch(secret)
    unknown = deleted_secret(http.d)
    conn = httpclient.HTTPConnection(http.host, http.port, timeout=5)
    try:
        conn.connect()
        sock = conn.sock
        for i in range(20):
            body = {"api_key": secret} if i % 2 else {"api_key": unknown}
            conn.request("POST", "/verify", json.dumps(body))
            r = conn.getresponse()
            r.read()
            assert r.status == (200 if i % 2 else 401)
            assert r.getheader("connection") == "keep-alive"
            assert conn.sock is sock
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(http):
    _, secret = http.d.create("svc")
    http.d.watch(secret)
    body = json.dumps({"api_key": secret}).encode()
    reqs = (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" +
            b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body) +
            b"GET /auth HTTP/1.1\r\nHost: x\r\n\r\n" +
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = http.raw(reqs)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", out)
    assert statuses == [b"404", b"200", b"401", b"200"], out


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 600000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n",
    b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: banana\r\n\r\n",
    b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
], ids=["request-line", "header-line", "huge-header", "too-many-headers", "bad-chunked",
        "bad-length", "unknown-coding"])
def test_malformed_http_gets_4xx_and_the_daemon_goes_on(http, data):
    out = http.raw(data)
    assert out.startswith(b"HTTP/1.1 4"), out[:200]
    assert http.req("GET", "/health").status == 200


def raw_until_close(host, port, data, timeout=5.0):
    """Sends data; returns (every byte received, whether the daemon closed the connection
    within timeout)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return out, False
            except ConnectionResetError:
                return out, True
            if not chunk:
                return out, True
            out += chunk
        return out, False


def verify_head(body, *headers):
    return (b"POST /verify HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers)
            + b"\r\n" + body)


def chunked(body):
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize("case", [
    "content-length-twice-different", "content-length-twice-equal", "content-length-and-te",
    "te-and-content-length", "folded-header", "folded-header-tab", "folded-content-length",
])
def test_ambiguous_framing_is_400_and_closes(http, case):
    """RFC 9112: a proxy in front may frame these otherwise than h2o does (h2o takes the
    first Content-Length, and chunked over Content-Length), so they are refused and the
    connection closed, and nothing after them is read as a request."""
    key, secret = http.d.create("framing")
    http.d.watch(secret)
    body = json.dumps({"api_key": secret}).encode()
    n = len(body)
    data = {
        "content-length-twice-different":
            verify_head(body, b"Content-Length: %d" % n, b"Content-Length: 5"),
        "content-length-twice-equal":
            verify_head(body, b"Content-Length: %d" % n, b"Content-Length: %d" % n),
        "content-length-and-te":
            verify_head(chunked(body), b"Content-Length: 5", b"Transfer-Encoding: chunked"),
        "te-and-content-length":
            verify_head(chunked(body), b"Transfer-Encoding: chunked", b"Content-Length: 5"),
        "folded-header":
            verify_head(body, b"X-Note: a", b" b", b"Content-Length: %d" % n),
        "folded-header-tab":
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Note: a\r\n\tb\r\n\r\n",
        "folded-content-length":
            verify_head(body, b"Content-Length:", b" %d" % n),
    }[case]
    # a second request right behind it must not be answered
    out, closed = raw_until_close(http.host, http.port,
                                  data + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", out)
    assert statuses == [b"400"], out
    assert closed, f"connection left open after {case}: {out!r}"
    assert b"connection: close" in out.lower(), out
    # the key was never verified, and a new connection is served as usual
    assert not [e for e in http.d.logs() if e.get("event", "").startswith("verification")]
    assert http.verify(secret).status == 200
    assert not http.d.leaked_secrets()


def test_ambiguous_framing_after_a_good_request_on_the_same_connection(http):
    key, secret = http.d.create("framing-pipelined")
    http.d.watch(secret)
    body = json.dumps({"api_key": secret}).encode()
    good = verify_head(body, b"Content-Length: %d" % len(body))
    bad = verify_head(body, b"Content-Length: %d" % len(body), b"Content-Length: %d" % len(body))
    out, closed = raw_until_close(http.host, http.port, good + bad + good)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", out) == [b"200", b"400"], out
    assert closed


def test_one_content_length_or_chunked_alone_is_served(http):
    key, secret = http.d.create("framing-ok")
    http.d.watch(secret)
    body = json.dumps({"api_key": secret}).encode()
    for data in (verify_head(body, b"Content-Length: %d" % len(body)),
                 verify_head(chunked(body), b"Transfer-Encoding: chunked"),
                 b"\r\n" + verify_head(body, b"content-length: %d" % len(body))):
        out, _ = raw_until_close(http.host, http.port, data, timeout=1.0)
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", out) == [b"200"], (data, out)


def test_slow_client_is_cut_off(http):
    # idle-timeout is 2 s here: a request that has not arrived whole by then is dropped
    started = time.monotonic()
    with socket.create_connection((http.host, http.port), timeout=10) as s:
        s.sendall(b"POST /verify HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.5)
        s.sendall(b"Content-Length: 100\r\n\r\n{\"api_")  # body never completes
        # meanwhile others are served
        assert http.req("GET", "/health").status == 200
        assert s.recv(100) == b""
    assert 1.5 < time.monotonic() - started < 6
    # an idle keep-alive connection goes the same way
    with socket.create_connection((http.host, http.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        started = time.monotonic()
        while s.recv(65536):
            pass
        assert time.monotonic() - started < 6


def test_connection_cap(make_daemon):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4096 + 300
    assert hard >= need, f"RLIMIT_NOFILE hard limit {hard} is below the {need} this test needs"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    try:
        h = Http(make_daemon, extra=["--threads", "1"])
        socks = []
        try:
            for _ in range(4096):
                socks.append(socket.create_connection((h.host, h.port), timeout=10))
            # the cap is reached: a new connection is closed at once, unanswered
            extra = socket.create_connection((h.host, h.port), timeout=10)
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                assert extra.recv(100) == b""
            except ConnectionResetError:
                pass
            extra.close()
            # the ones inside are served
            socks[0].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert socks[0].recv(100).startswith(b"HTTP/1.1 200")
        finally:
            for s in socks:
                s.close()
        # and once they are gone, new ones are served again
        wait_for(lambda: h.req("GET", "/health").status == 200, 10, what="service after cap")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_sigterm_with_idle_keep_alive_connections_exits_promptly(http):
    conns = []
    for _ in range(5):
        s = socket.create_connection((http.host, http.port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        conns.append(s)
    # one more is half-way through a request
    half = socket.create_connection((http.host, http.port), timeout=10)
    half.sendall(b"GET /health HTTP/1.1\r\n")
    started = time.monotonic()
    assert http.d.stop() == 0
    assert time.monotonic() - started < 4
    for s in conns + [half]:
        s.close()


# -- listeners ------------------------------------------------------------------------------

def test_ipv6_listener(make_daemon):
    h = Http(make_daemon, host="::1")
    _, secret = h.d.create("v6")
    r = h.verify(secret)
    assert r.status == 200
    assert h.req("POST", "/refresh").status == 200  # ::1 is loopback


def test_unix_listener(make_daemon, tmpdir_e2e):
    path = os.path.join(tmpdir_e2e, "http.sock")
    d = make_daemon(extra_args=["--http-listen", "unix:" + path])
    _, secret = d.create("unix")
    d.watch(secret)
    st = os.stat(path)
    assert oct(st.st_mode & 0o777) == oct(0o660)
    out = subprocess.run(["curl", "-s", "--max-time", "10", "--unix-socket", path,
                          "-H", f"X-API-Key: {secret}", "-o", "/dev/null", "-w", "%{http_code}",
                          "http://localhost/auth"], capture_output=True, text=True, timeout=20)
    assert out.stdout == "200"
    out = subprocess.run(["curl", "-s", "--max-time", "10", "--unix-socket", path, "-X", "POST",
                          "http://localhost/refresh"], capture_output=True, text=True, timeout=20)
    assert json.loads(out.stdout)["success"] is True
    d.stop()
    assert not os.path.exists(path)


def test_socket_activated_http_fd(make_daemon):
    from conftest import Daemon, free_port
    port = free_port()
    d = make_daemon(start=False)
    argv = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=http",
            "-E", "NOTIFY_SOCKET=" + os.path.join(d.dir, "notify.sock"),
            *sanitizer_setenv_args(), HEARE_AUTHD] + d.base_args()
    d.spawn(argv, wait_ready=False)
    wait_for(lambda: _port_open(port), 10, what="systemd-socket-activate's listener")
    r = http_request("127.0.0.1", port, "GET", "/health", timeout=15)
    assert r.status == 200
    d.wait_ready()
    assert "listening on socket-activated 'http'" in d.raw_log()


def _port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_http_listen_bad_values_are_refused(tmpdir_e2e):
    for spec in ("8080", "127.0.0.1:99999", "unix:relative/path", "[::1]8080"):
        res = subprocess.run([HEARE_AUTHD, "--http-listen", spec, "--check-config"],
                             capture_output=True, text=True, timeout=10)
        assert res.returncode == 2, (spec, res)
        assert "http-listen" in res.stderr
    # a port someone else holds: a clear error at start, not a half-started daemon
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run([HEARE_AUTHD, "--http-listen", f"127.0.0.1:{port}",
                              "--store", "file://" + os.path.join(tmpdir_e2e, "k.json"),
                              "--cache", "", "--verify-socket",
                              os.path.join(tmpdir_e2e, "v.sock"), "--admin-socket",
                              os.path.join(tmpdir_e2e, "a.sock")],
                             capture_output=True, text=True, timeout=10)
        assert res.returncode != 0
        assert "cannot bind" in res.stderr and "Address already in use" in res.stderr
        # the Unix sockets it had bound before are gone again
        assert not os.listdir(tmpdir_e2e), os.listdir(tmpdir_e2e)
