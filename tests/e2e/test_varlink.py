"""The Varlink wire protocol of heare-authd (SPEC §5): framing, pipelining, more,
oneway, the service interface, errors, permissions and connection limits."""
import json
import os
import subprocess
import time

import pytest

from conftest import ROOT, Varlink, ok

VERIFY = "io.heare.Auth.Verify"
HEALTH = "io.heare.Auth.GetHealth"
CREATE = "io.heare.AuthAdmin.CreateKey"
LIST = "io.heare.AuthAdmin.ListKeys"
INVALID_PARAMETER = "org.varlink.service.InvalidParameter"


def test_verify_nul_framing(daemon):
    key, secret = daemon.create("nul")
    with daemon.connect("verify") as c:
        assert c.send(VERIFY, {"key": secret})
        raw = c.recv_raw()
        assert raw is not None
        reply = json.loads(raw)
        p = ok(reply)
        assert p["valid"] is True
        assert p["code"] == "VALID"
        assert p["key_id"] == key["id"]
        # the connection stays open for another call
        p2 = ok(c.call(VERIFY, {"key": "sec_1" + "0" * 38}))
        assert p2["valid"] is False


def test_line_mode(daemon):
    key, secret = daemon.create("line")
    s = Varlink(daemon.verify_sock, line=False)
    with s:
        s.send_raw(json.dumps({"method": VERIFY, "parameters": {"key": secret}}).encode() + b"\n")
        data = b""
        deadline = time.monotonic() + 10
        while not data.endswith(b"\n") and time.monotonic() < deadline:
            s.sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = s.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.endswith(b"\n"), f"line-mode reply does not end with newline: {data!r}"
        assert b"\0" not in data
        p = ok(json.loads(data))
        assert p["code"] == "VALID" and p["key_id"] == key["id"]
    # a second call on a line-mode connection is framed with "\n" too
    with daemon.connect("verify", line=True) as c:
        ok(c.call(HEALTH, {}))
        p = ok(c.call(VERIFY, {"key": secret}))
        assert p["code"] == "VALID"
        assert c.buf == b""


def test_pipelined_calls_reply_in_order(daemon):
    key, secret = daemon.create("pipe")
    msgs = [
        {"method": VERIFY, "parameters": {"key": secret}},
        {"method": HEALTH, "parameters": {}},
        {"method": VERIFY, "parameters": {"key": "sec_1" + "0" * 38}},
    ]
    with daemon.connect("verify") as c:
        assert c.send_raw(b"".join(json.dumps(m).encode() + b"\0" for m in msgs))
        r1, r2, r3 = c.recv(), c.recv(), c.recv()
    assert ok(r1)["code"] == "VALID"
    assert "status" in ok(r2) and "keys_loaded" in ok(r2)
    assert ok(r3)["valid"] is False


def test_list_keys_more(daemon):
    ids = {daemon.create(f"more-{i}")[0]["id"] for i in range(3)}
    with daemon.connect("admin") as c:
        assert c.send(LIST, {}, more=True)
        replies = [c.recv() for _ in range(3)]
        # nothing more may follow the last reply
        c.sock.settimeout(0.5)
        try:
            extra = c.sock.recv(65536)
        except TimeoutError:
            extra = b""
        assert extra == b"" and c.buf == b"", f"data after the last 'more' reply: {extra!r}"
    seen = set()
    for i, r in enumerate(replies):
        assert r is not None
        p = ok(r)
        assert isinstance(p["keys"], list) and len(p["keys"]) == 1, r
        seen.add(p["keys"][0]["id"])
        if i < 2:
            assert r.get("continues") is True, r
        else:
            assert not r.get("continues"), r
    assert seen == ids


def test_list_keys_more_empty(daemon):
    with daemon.connect("admin") as c:
        c.send(LIST, {}, more=True)
        r = c.recv()
        assert ok(r) == {"keys": []} or ok(r).get("keys") == []
        assert not r.get("continues")
        # and the connection still answers, with no stray reply before it
        assert "status" in ok(c.call(HEALTH, {}))


def test_list_keys_without_more(daemon):
    ids = {daemon.create(f"plain-{i}")[0]["id"] for i in range(3)}
    with daemon.connect("admin") as c:
        r = c.call(LIST, {})
    assert not r.get("continues")
    assert {k["id"] for k in ok(r)["keys"]} == ids


def test_oneway(daemon):
    with daemon.connect("admin") as c:
        assert c.send(CREATE, {"name": "oneway-key"}, oneway=True)
        assert c.send(HEALTH, {})
        first = c.recv()
        assert "error" not in first and "status" in first["parameters"], \
            f"first reply after a oneway call is not GetHealth's: {first}"
        keys = ok(c.call(LIST, {}))["keys"]
    assert [k["name"] for k in keys] == ["oneway-key"]


# Every method, with the socket it is served on: "parameters" null or absent must be
# answered exactly as {} is (the reference Varlink implementations send null for a call
# without parameters).
EVERY_METHOD = [
    ("verify", VERIFY), ("verify", HEALTH),
    ("verify", "org.varlink.service.GetInfo"),
    ("verify", "org.varlink.service.GetInterfaceDescription"),
    ("admin", CREATE), ("admin", LIST), ("admin", "io.heare.AuthAdmin.GetKey"),
    ("admin", "io.heare.AuthAdmin.UpdateKey"), ("admin", "io.heare.AuthAdmin.RotateKey"),
    ("admin", "io.heare.AuthAdmin.DeleteKey"), ("admin", "io.heare.AuthAdmin.Refresh"),
    ("admin", "io.heare.AuthAdmin.GetMetrics"),
]


def answer_shape(reply):
    """An error whole; a reply by its parameter names (values such as uptime move)."""
    assert reply is not None
    if "error" in reply:
        return ("error", reply["error"], reply.get("parameters"))
    return ("reply", sorted(reply["parameters"]), reply.get("continues"))


@pytest.mark.parametrize("sock,method", EVERY_METHOD, ids=[m for _, m in EVERY_METHOD])
def test_null_or_absent_parameters_are_empty(daemon, sock, method):
    daemon.create("present")
    with daemon.connect(sock) as c:
        answers = []
        for params in (',"parameters":{}', ',"parameters":null', "", ', "parameters" : null '):
            assert c.send_raw(('{"method":"%s"%s}' % (method, params)).encode() + b"\0")
            answers.append(answer_shape(c.recv()))
    with daemon.connect(sock, line=True) as c:
        assert c.send_raw(('{"method":"%s","parameters":null}\n' % method).encode())
        answers.append(answer_shape(c.recv()))
    assert all(a == answers[0] for a in answers), answers
    assert answers[0][:2] != ("error", "io.heare.Auth.InvalidMessage"), answers


def test_null_parameters_where_parameters_are_required(daemon):
    for sock, method, parameter in (
            ("verify", VERIFY, "key"),
            ("verify", "org.varlink.service.GetInterfaceDescription", "interface"),
            ("admin", CREATE, "name"), ("admin", "io.heare.AuthAdmin.GetKey", "id")):
        with daemon.connect(sock) as c:
            assert c.send_raw(('{"method":"%s","parameters":null}' % method).encode() + b"\0")
            r = c.recv()
            assert r == {"error": INVALID_PARAMETER, "parameters": {"parameter": parameter}}, r
            assert "status" in ok(c.call(HEALTH, None))  # the connection goes on


def test_unknown_call_members_are_ignored(daemon):
    key, secret = daemon.create("extensions")
    msg = {"method": VERIFY, "parameters": {"key": secret},
           "org.example.tracing": {"id": [1, 2, {"x": None}]}, "x": None, "n": 1.5,
           "continues": True, "error": "org.example.Nope"}
    with daemon.connect("verify") as c:
        assert c.send_raw(json.dumps(msg).encode() + b"\0")
        p = ok(c.recv())
        assert p["code"] == "VALID" and p["key_id"] == key["id"], p


def test_upgrade_is_refused_and_the_connection_stays(daemon):
    key, secret = daemon.create("no-upgrade")
    with daemon.connect("verify") as c:
        for method, params in ((VERIFY, {"key": secret}), (HEALTH, {}),
                               ("org.varlink.service.GetInfo", None)):
            msg = {"method": method, "upgrade": True}
            if params is not None:
                msg["parameters"] = params
            assert c.send_raw(json.dumps(msg).encode() + b"\0")
            r = c.recv()
            assert r == {"error": INVALID_PARAMETER, "parameters": {"parameter": "upgrade"}}, r
        # refused, so not run: the Verify above did not count
        assert ok(c.call(VERIFY, {"key": secret}))["code"] == "VALID"
        # "upgrade": false is no request; with oneway the refusal is not sent either
        assert c.send_raw(json.dumps({"method": HEALTH, "upgrade": False}).encode() + b"\0")
        assert "status" in ok(c.recv())
        assert c.send_raw(json.dumps({"method": HEALTH, "upgrade": True, "oneway": True})
                          .encode() + b"\0")
        assert "status" in ok(c.call(HEALTH, {}))
        # an unknown method is still that
        assert c.send_raw(json.dumps({"method": "io.heare.Auth.Nope", "upgrade": True})
                          .encode() + b"\0")
        assert c.recv()["error"] == "org.varlink.service.MethodNotFound"
    assert daemon.get_key(key["id"])["verifications"] == 1
    # a value that is no boolean is refused as oneway's and more's are
    with daemon.connect("verify") as c:
        assert c.send_raw(b'{"method":"io.heare.Auth.GetHealth","upgrade":"yes"}\0')
        r = c.recv()
        assert r["error"] == "io.heare.Auth.InvalidMessage", r
        assert c.at_eof(5)


def test_get_info(daemon):
    for which in ("verify", "admin"):
        with daemon.connect(which) as c:
            p = ok(c.call("org.varlink.service.GetInfo", {}))
        assert p["vendor"] == "heare"
        assert p["product"] == "heare-auth"
        assert isinstance(p["version"], str) and p["version"]
        assert isinstance(p["url"], str) and p["url"]
        assert "io.heare.Auth" in p["interfaces"]
        assert "org.varlink.service" in p["interfaces"]
        if which == "admin":
            assert "io.heare.AuthAdmin" in p["interfaces"]
    out = subprocess.run([daemon_bin(), "--version"], capture_output=True, text=True,
                         timeout=10)
    assert p["version"] in out.stdout


def daemon_bin():
    from conftest import HEARE_AUTHD
    return HEARE_AUTHD


def test_get_interface_description(daemon):
    for name in ("io.heare.Auth", "io.heare.AuthAdmin"):
        with open(os.path.join(ROOT, "libheare", name + ".varlink")) as f:
            text = f.read()
        p = ok(daemon.call("org.varlink.service.GetInterfaceDescription",
                           {"interface": name}, "admin"))
        assert p["description"] == text, name
    p = ok(daemon.call("org.varlink.service.GetInterfaceDescription",
                       {"interface": "io.heare.Auth"}, "verify"))
    assert "method Verify(" in p["description"]


def test_unknown_method_and_interface(daemon):
    r = daemon.call("io.heare.Auth.NoSuchMethod", {}, "verify")
    assert r.get("error") == "org.varlink.service.MethodNotFound", r
    r = daemon.call("org.example.Nope.Method", {}, "verify")
    assert r.get("error") == "org.varlink.service.InterfaceNotFound", r
    r = daemon.call("io.heare.AuthAdmin.NoSuchMethod", {}, "admin")
    assert r.get("error") == "org.varlink.service.MethodNotFound", r


def test_invalid_parameter(daemon):
    r = daemon.call(VERIFY, {"key": 5}, "verify")
    assert r.get("error") == "org.varlink.service.InvalidParameter", r
    assert r["parameters"]["parameter"] == "key"
    r = daemon.call(VERIFY, {}, "verify")
    assert r.get("error") == "org.varlink.service.InvalidParameter", r
    assert r["parameters"]["parameter"] == "key"
    r = daemon.call(CREATE, {"name": "x", "bogus": 1})
    assert r.get("error") == "org.varlink.service.InvalidParameter", r
    assert r["parameters"]["parameter"] == "bogus"
    r = daemon.call(CREATE, {"name": ""})
    assert r.get("error") == "org.varlink.service.InvalidParameter", r
    assert r["parameters"]["parameter"] == "name"
    r = daemon.call(CREATE, {"name": "x", "expires_at": "tomorrow"})
    assert r.get("error") == "org.varlink.service.InvalidParameter", r
    assert r["parameters"]["parameter"] == "expires_at"
    assert daemon.list_keys() == []


def test_admin_on_verify_socket_denied(daemon):
    for method, params in ((CREATE, {"name": "nope"}), (LIST, {}),
                           ("io.heare.AuthAdmin.Refresh", {})):
        r = daemon.call(method, params, "verify")
        assert r.get("error") == "io.heare.AuthAdmin.PermissionDenied", r
    assert daemon.list_keys() == []


NOBODY_CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(json.dumps({"method": sys.argv[2], "parameters": json.loads(sys.argv[3])}).encode() + b"\0")
buf = b""
while b"\0" not in buf:
    c = s.recv(65536)
    if not c:
        break
    buf += c
sys.stdout.write(buf.split(b"\0")[0].decode())
"""


def call_as_nobody(path, method, params):
    res = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
         "-c", NOBODY_CLIENT, path, method, json.dumps(params)],
        capture_output=True, text=True, timeout=20, cwd="/")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_admin_from_non_admin_uid_denied(daemon):
    os.chmod(daemon.admin_sock, 0o666)
    r = call_as_nobody(daemon.admin_sock, CREATE, {"name": "from-nobody"})
    assert r.get("error") == "io.heare.AuthAdmin.PermissionDenied", r
    r = call_as_nobody(daemon.admin_sock, LIST, {})
    assert r.get("error") == "io.heare.AuthAdmin.PermissionDenied", r
    # io.heare.Auth stays open to everyone who can connect
    r = call_as_nobody(daemon.admin_sock, HEALTH, {})
    assert "error" not in r and "status" in r["parameters"], r
    assert daemon.list_keys() == []


def test_admin_users_lets_a_listed_uid_in(make_daemon):
    d = make_daemon(extra_args=["--admin-users", "nobody"])
    os.chmod(d.admin_sock, 0o666)
    r = call_as_nobody(d.admin_sock, LIST, {})
    assert "error" not in r, r


def test_message_too_large(daemon):
    key, secret = daemon.create("big")
    with daemon.connect("verify") as big, daemon.connect("verify") as other:
        msg = json.dumps({"method": VERIFY, "parameters": {"key": "x" * (70 * 1024)}}).encode()
        big.send_raw(msg + b"\0")
        r = big.recv()
        assert r is not None and r.get("error") == "io.heare.Auth.MessageTooLarge", r
        assert big.at_eof(5), "connection not closed after MessageTooLarge"
        assert ok(other.call(VERIFY, {"key": secret}))["code"] == "VALID"


def test_message_just_under_limit_is_served(daemon):
    with daemon.connect("verify") as c:
        msg = json.dumps({"method": VERIFY, "parameters": {"key": "x" * (60 * 1024)}}).encode()
        c.send_raw(msg + b"\0")
        r = c.recv()
    assert ok(r)["code"] == "MALFORMED"


def test_garbage_gets_invalid_message(daemon):
    key, secret = daemon.create("garbage")
    for junk in (b"not json\0", b"[1,2]\0", b'"a string"\0', b"{\"method\": 5}\0"):
        with daemon.connect("verify") as c:
            c.send_raw(junk)
            r = c.recv()
            assert r is not None, f"no reply to {junk!r}"
            if junk.startswith(b"{"):
                # an object that is not a valid call: any Varlink error, then it may go on
                assert "error" in r, r
                continue
            assert r.get("error") == "io.heare.Auth.InvalidMessage", (junk, r)
            assert isinstance(r.get("parameters", {}).get("reason"), str)
            assert c.at_eof(5), f"connection not closed after {junk!r}"
    assert ok(daemon.call(VERIFY, {"key": secret}, "verify"))["code"] == "VALID"


# Valid JSON that jansson refuses whatever its flags: the answer the protocol gives, on a
# connection that stays open (it used to be InvalidMessage and a closed connection).
HUGE = ["1e999999", "-1e999999", "123456789012345678901234567890"]
VALID_JSON_JANSSON_REFUSES = (
    # a key with an escaped NUL, a lone surrogate, or a byte outside printable ASCII
    [("verify", VERIFY, '{"key":"%s"}' % k, "MALFORMED", None)
     for k in (r"sec_\u0000", r"\u0000", r"sec_1\u0000" + "0" * 37, r"\ud800",
               r"sec_\udc00", r"sec\uDBFF\u0041x", r"\u00e9t\u00e9", r"sec\u0001", "sec ab",
               r"sec\u007f")]
    # numbers beyond int64 and double where a string is expected, or unknown
    + [("verify", VERIFY, '{"key":%s}' % n, INVALID_PARAMETER, "key") for n in HUGE]
    + [("verify", VERIFY, '{"key":"sec_1","scope":%s}' % n, INVALID_PARAMETER, "scope")
       for n in HUGE]
    + [("verify", VERIFY, '{"key":"sec_1","bogus":%s}' % n, INVALID_PARAMETER, "bogus")
       for n in HUGE]
    + [("verify", HEALTH, '{"bogus":%s}' % n, INVALID_PARAMETER, "bogus") for n in HUGE[:1]]
    # where an int is expected
    + [("admin", CREATE, '{"name":"n","rate_limit":{"per_second":%s,"burst":1}}' % n,
        INVALID_PARAMETER, "rate_limit") for n in HUGE]
    + [("admin", "io.heare.AuthAdmin.RotateKey",
        '{"id":"key_0000000000000000000000","grace_seconds":%s}' % n, INVALID_PARAMETER,
        "grace_seconds") for n in HUGE]
    # strings with a NUL where a C string is needed: refused, never cut short
    + [("verify", VERIFY, r'{"key":"sec_1","scope":"docs.read\u0000x"}', INVALID_PARAMETER,
        "scope"),
       ("admin", CREATE, r'{"name":"n\u0000"}', INVALID_PARAMETER, "name"),
       ("admin", CREATE, r'{"name":"n","metadata":{"a":"\u0000"}}', INVALID_PARAMETER,
        "metadata"),
       ("admin", CREATE, r'{"name":"n","metadata":{"a":1e999999}}', INVALID_PARAMETER,
        "metadata"),
       ("admin", CREATE, r'{"name":"n","scopes":["docs\ud800"]}', INVALID_PARAMETER, "scopes"),
       ("verify", VERIFY, r'{"key\u0000":"sec_1"}', INVALID_PARAMETER, r"key\u0000")]
    # a method name with an escaped NUL
    + [("verify", VERIFY + r"\u0000", '{"key":"sec_1"}', "org.varlink.service.MethodNotFound",
        None),
       ("verify", r"\u0000", None, "org.varlink.service.MethodNotFound", None),
       ("verify", r"io.heare.Auth\u0000.Verify", None, "org.varlink.service.MethodNotFound",
        None)]
)


@pytest.mark.parametrize("sock,method,params,want,parameter", VALID_JSON_JANSSON_REFUSES,
                         ids=[f"{m}({p})" for _, m, p, _, _ in VALID_JSON_JANSSON_REFUSES])
def test_valid_json_is_never_invalid_message(daemon, sock, method, params, want, parameter):
    key, secret = daemon.create("valid-json")
    daemon.watch(secret)
    text = '{"method":"%s"%s}' % (method, "" if params is None else ',"parameters":' + params)
    json.loads(text)  # valid JSON, as Python reads it
    with daemon.connect(sock) as c:
        assert c.send_raw(text.encode() + b"\0")
        r = c.recv()
        assert r is not None, f"connection closed after {text}"
        if want in ("MALFORMED",):
            assert ok(r) == {"valid": False, "code": want}, (text, r)
        else:
            assert r.get("error") == want, (text, r)
            if parameter is not None:
                assert r["parameters"] == {"parameter": parameter}, (text, r)
        if method.endswith(r"\u0000"):
            assert r["parameters"]["method"] == json.loads('"%s"' % method), r
        # the same connection goes on
        assert ok(c.call(VERIFY, {"key": secret}))["code"] == "VALID"
    assert not daemon.leaked_secrets()


def test_a_good_key_with_an_escaped_nul_is_malformed_not_cut_short(daemon):
    """A C string would stop at the NUL and find the key: the key is taken whole."""
    key, secret = daemon.create("nul-tail")
    daemon.watch(secret)
    with daemon.connect("verify") as c:
        for k in (secret + r"\u0000", secret + r"\u0000junk", secret + r"\ud800"):
            assert c.send_raw(('{"method":"%s","parameters":{"key":"%s"}}' % (VERIFY, k))
                              .encode() + b"\0")
            assert ok(c.recv()) == {"valid": False, "code": "MALFORMED"}, k
        # a scope with a NUL is not cut short to one the key has either
        key2, secret2 = daemon.create("nul-scope", scopes=["docs.read"])
        daemon.watch(secret2)
        assert c.send_raw(('{"method":"%s","parameters":{"key":"%s","scope":"docs.read\\u0000x"}}'
                           % (VERIFY, secret2)).encode() + b"\0")
        r = c.recv()
        assert r["error"] == INVALID_PARAMETER and r["parameters"] == {"parameter": "scope"}
        assert ok(c.call(VERIFY, {"key": secret}))["code"] == "VALID"
    assert not daemon.leaked_secrets()


def test_json_jansson_refuses_is_read_in_line_mode_and_pipelined(daemon):
    key, secret = daemon.create("valid-json-pipelined")
    daemon.watch(secret)
    msgs = [r'{"method":"%s","parameters":{"key":"sec_\u0000"}}' % VERIFY,
            '{"method":"%s","parameters":{"key":"%s"}}' % (VERIFY, secret),
            r'{"method":"%s","parameters":{"key":1e999999}}' % VERIFY,
            '{"method":"%s","parameters":{"key":"%s"}}' % (VERIFY, secret)]
    with daemon.connect("verify", line=True) as c:
        assert c.send_raw(b"".join(m.encode() + b"\n" for m in msgs))
        r = [c.recv() for _ in msgs]
    assert ok(r[0])["code"] == "MALFORMED"
    assert ok(r[1])["code"] == "VALID"
    assert r[2]["error"] == INVALID_PARAMETER and r[2]["parameters"] == {"parameter": "key"}
    assert ok(r[3])["code"] == "VALID"


@pytest.mark.parametrize("junk", [
    rb'{"method":"io.heare.Auth.Verify","parameters":{"key":"\u0000\x"}}',
    rb'{"method":"io.heare.Auth.Verify","parameters":{"key":1e999999,}}',
    rb'{"method":"io.heare.Auth.Verify","parameters":{"key":"\u0000"}} {}',
    b'{"method":"io.heare.Auth.Verify","parameters":{"key":"\xed\xa0\x80"}}',
    rb'{"method":"io.heare.Auth.Verify","parameters":{"key":1e999999},"x":1,"x":2}',
], ids=["bad-escape", "trailing-comma", "two-values", "utf8-surrogate", "duplicate"])
def test_invalid_json_beside_the_lenient_classes_is_still_invalid_message(daemon, junk):
    with daemon.connect("verify") as c:
        assert c.send_raw(junk + b"\0")
        r = c.recv()
        assert r is not None and r.get("error") == "io.heare.Auth.InvalidMessage", r
        assert c.at_eof(5), f"connection not closed after {junk!r}"


def test_idle_timeout(make_daemon):
    d = make_daemon(extra_args=["--idle-timeout", "1s"])
    with d.connect("verify") as idle:
        t0 = time.monotonic()
        assert idle.at_eof(6), "idle connection not closed within 6s (idle-timeout 1s)"
        elapsed = time.monotonic() - t0
    assert 0.5 <= elapsed <= 4.0, elapsed
    # an active connection is not closed while it keeps talking
    with d.connect("verify") as busy:
        for _ in range(4):
            ok(busy.call(HEALTH, {}))
            time.sleep(0.5)
        ok(busy.call(HEALTH, {}))


def test_message_timeout_closes_a_dripping_connection(make_daemon):
    """A message must be whole within message-timeout of its first byte: bytes dripped one
    at a time do not keep the connection open (each byte used to restart the idle clock),
    while a connection idle between messages for less than idle-timeout stays, and a
    well-behaved client is served all along."""
    d = make_daemon(extra_args=["--message-timeout", "1s", "--idle-timeout", "4s"])
    key, secret = d.create("drip")
    d.watch(secret)
    msg = json.dumps({"method": VERIFY, "parameters": {"key": secret}}).encode() + b"\0"
    with d.connect("verify") as drip, d.connect("verify") as idle, \
            d.connect("verify") as busy:
        ok(idle.call(HEALTH, {}))
        t0 = time.monotonic()
        closed_at = None
        for i in range(len(msg) - 1):  # never the terminator
            if not drip.send_raw(msg[i:i + 1]):
                closed_at = time.monotonic() - t0
                break
            assert ok(busy.call(VERIFY, {"key": secret}))["code"] == "VALID"
            if drip.at_eof(0.25):
                closed_at = time.monotonic() - t0
                break
        assert closed_at is not None, "dripping connection still open after the whole message"
        assert 0.7 <= closed_at <= 3.0, closed_at
        # idle (between messages) for about as long as the dripper lived: still served
        time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))
        assert ok(idle.call(VERIFY, {"key": secret}))["code"] == "VALID"
        # and a message cut in two writes, 0.5 s apart, is well within message-timeout
        assert busy.send_raw(msg[:10])
        time.sleep(0.5)
        assert busy.send_raw(msg[10:])
        assert ok(busy.recv())["code"] == "VALID"
    events = d.events("connection_timeout")
    assert len(events) == 1, events
    assert events[0].get("peer_uid") == os.getuid(), events
    assert not d.leaked_secrets()


def test_message_split_across_writes(daemon):
    key, secret = daemon.create("split")
    msg = json.dumps({"method": VERIFY, "parameters": {"key": secret}}).encode() + b"\0"
    msg2 = json.dumps({"method": HEALTH, "parameters": {}}).encode() + b"\0"
    with daemon.connect("verify") as c:
        for i in range(len(msg)):
            c.send_raw(msg[i:i + 1])
            if i % 16 == 0:
                time.sleep(0.001)
        assert ok(c.recv())["code"] == "VALID"
        # the end of one message and the start of the next in one write
        both = msg + msg2
        cut = len(msg) + 7
        c.send_raw(both[:cut])
        time.sleep(0.05)
        c.send_raw(both[cut:])
        assert ok(c.recv())["code"] == "VALID"
        assert "status" in ok(c.recv())


def test_socat_line_mode(daemon):
    key, secret = daemon.create("socat")
    line = json.dumps({"method": VERIFY, "parameters": {"key": secret}}) + "\n"
    res = subprocess.run(["socat", "-t", "2", "-", "UNIX-CONNECT:" + daemon.verify_sock],
                         input=line, capture_output=True, text=True, timeout=15)
    assert res.returncode == 0, res.stderr
    assert res.stdout.endswith("\n") and "\0" not in res.stdout
    p = ok(json.loads(res.stdout))
    assert p["code"] == "VALID" and p["key_id"] == key["id"]


def test_many_connections_and_concurrent_verifies(daemon):
    import threading
    keys = [daemon.create(f"conc-{i}") for i in range(5)]
    conns = [daemon.connect("verify") for _ in range(150)]
    try:
        for i, c in enumerate(conns):
            c.send(VERIFY, {"key": keys[i % 5][1]})
        for i, c in enumerate(conns):
            p = ok(c.recv())
            assert p["code"] == "VALID" and p["key_id"] == keys[i % 5][0]["id"]
    finally:
        for c in conns:
            c.close()

    errors = []

    def worker(n):
        try:
            with daemon.connect("verify") as c:
                batch = b"".join(json.dumps({"method": VERIFY, "parameters": {
                    "key": keys[(n + j) % 5][1]}}).encode() + b"\0" for j in range(50))
                for _ in range(4):
                    c.send_raw(batch)
                    for j in range(50):
                        p = ok(c.recv())
                        if p["key_id"] != keys[(n + j) % 5][0]["id"] or p["code"] != "VALID":
                            errors.append(p)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    def writer():
        try:
            for i in range(10):
                daemon.create(f"while-verifying-{i}")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "verify workers hung"
    assert errors == []
    assert len(daemon.list_keys()) == 15
    assert daemon.proc.poll() is None


def test_client_gone_mid_stream(daemon):
    for i in range(20):
        daemon.create(f"gone-{i}")
    for _ in range(5):
        c = daemon.connect("admin")
        c.send(LIST, {}, more=True)
        c.send_raw(b"".join(json.dumps({"method": LIST, "more": True}).encode() + b"\0"
                            for _ in range(20)))
        c.close()  # without reading a single reply
    assert len(daemon.list_keys()) == 20
    assert daemon.proc.poll() is None


def loop_runtimes(pid):
    """Nanoseconds on CPU of each serving loop thread (heare-loop-N) of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            name = f.read().strip()
        if name.startswith("heare-loop-"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[name] = int(f.read().split()[0])
    return out


def test_connections_spread_over_the_loops(daemon):
    """A burst of connections wakes one loop, which accepts them all: each must still be
    served by the loop with the fewest, so that both loops (--threads 2) share the work."""
    _, secret = daemon.create("spread")
    conns = [daemon.connect("verify") for _ in range(8)]
    try:
        before = loop_runtimes(daemon.proc.pid)
        assert len(before) == 2, before
        batch = (json.dumps({"method": VERIFY, "parameters": {"key": secret}}).encode()
                 + b"\0") * 250
        for _ in range(6):
            for c in conns:
                c.send_raw(batch)
            for c in conns:
                for _ in range(250):
                    assert ok(c.recv())["code"] == "VALID"
        after = loop_runtimes(daemon.proc.pid)
    finally:
        for c in conns:
            c.close()
    used = {k: after[k] - before[k] for k in before}
    total = sum(used.values())
    assert total > 0
    for name, ns in used.items():
        assert ns >= 0.2 * total, f"{name} served {ns / total:.0%} of the work: {used}"
