"""heare-authd driven by the reference Go implementation of Varlink (Debian's
golang-github-varlink-go-dev, github.com/varlink/go/varlink), built in GOPATH mode against
/usr/share/gocode: the service interface and every interface description through its IDL
parser, Verify in every code, errors as its typed errors, "more", "oneway", "upgrade", and
the admin socket as a uid that is not an admin. The Go program (go/varlink-conformance)
only reports what it saw; the expectations are here."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import HEARE_AUTHD, ROOT, legacy_id, ok, rfc3339

GOCODE = "/usr/share/gocode"
GO_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "go", "varlink-conformance")
NOBODY = 65534
UPDATE = "io.heare.AuthAdmin.UpdateKey"
INVALID_PARAMETER = {"type": "InvalidParameter"}


def go_env(tmp):
    """GOPATH mode: the library from Debian's tree, the program from a temp dir; nothing
    fetched, nothing written outside tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GO111MODULE="off", GOPATH=f"{tmp}:{GOCODE}", GOCACHE=os.path.join(tmp, "cache"),
               GOPROXY="off", GOFLAGS="", CGO_ENABLED="0", HOME=tmp)
    return env


@pytest.fixture(scope="module")
def go_client():
    """The Go program, compiled once for this module into a temp dir uid nobody can read."""
    assert shutil.which("go"), "go not found: packaging/build-deps --test installs golang-go"
    assert os.path.isdir(os.path.join(GOCODE, "src/github.com/varlink/go/varlink/idl")), \
        "the Go varlink package is missing: packaging/build-deps --test installs " \
        "golang-github-varlink-go-dev"
    tmp = tempfile.mkdtemp(prefix="heare-go-")
    os.chmod(tmp, 0o755)
    try:
        src = os.path.join(tmp, "src", "heare-varlink-conformance")
        shutil.copytree(GO_SOURCE, src)
        binary = os.path.join(tmp, "bin", "varlink-conformance")
        res = subprocess.run(["go", "build", "-o", binary, "heare-varlink-conformance"],
                             cwd=tmp, env=go_env(tmp), capture_output=True, text=True,
                             timeout=240)
        assert res.returncode == 0, f"go build failed:\n{res.stdout}{res.stderr}"
        os.chmod(os.path.dirname(binary), 0o755)
        os.chmod(binary, 0o755)
        yield binary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_go(binary, command, daemon, as_uid=None, **plan):
    """Runs one command of the Go program against daemon; returns its report."""
    plan.update(verify_socket="unix:" + daemon.verify_sock,
                admin_socket="unix:" + daemon.admin_sock)
    argv = [binary, command]
    if as_uid is not None:
        argv = ["setpriv", f"--reuid={as_uid}", f"--regid={as_uid}", "--clear-groups"] + argv
    res = subprocess.run(argv, input=json.dumps(plan), capture_output=True, text=True,
                         timeout=90, cwd="/")
    assert res.returncode == 0, f"{command}: exit {res.returncode}: {res.stderr}"
    return json.loads(res.stdout)


def reply(entry):
    assert "error" not in entry or entry["error"] is None, f"error where a reply was due: {entry}"
    return entry["reply"]


def test_get_info_and_health(daemon, go_client):
    """The library sends "parameters": null for a call without parameters."""
    r = run_go(go_client, "info", daemon)
    version = subprocess.run([HEARE_AUTHD, "--version"], capture_output=True, text=True,
                             timeout=10).stdout.split()[-1]
    for sock in ("verify", "admin"):
        info = reply(r[sock])
        assert (info["vendor"], info["product"], info["version"]) == \
            ("heare", "heare-auth", version), info
        assert info["url"], info
        want = {"org.varlink.service", "io.heare.Auth"}
        if sock == "admin":
            want.add("io.heare.AuthAdmin")
        assert set(info["interfaces"]) == want, info
        health = reply(r[sock + "_health"])
        assert health["status"] == "healthy" and health["keys_loaded"] == 0, health


def idl_names(text, keyword):
    return sorted(re.findall(r"^%s (\w+)" % keyword, text, re.M))


def test_every_interface_description_parses(daemon, go_client):
    r = run_go(go_client, "idl", daemon)
    served = {"org.varlink.service", "io.heare.Auth", "io.heare.AuthAdmin"}
    assert set(r) == served | {"org.example.Nope"}, r.keys()
    for name in served:
        entry = r[name]
        assert "error" not in entry and "parse_error" not in entry, (name, entry)
        with open(os.path.join(ROOT, "libheare", name + ".varlink")) as f:
            text = f.read()
        assert entry["name"] == name.lower()
        assert sorted(entry["methods"]) == idl_names(text, "method"), (name, entry)
        assert sorted(entry["errors"]) == idl_names(text, "error"), (name, entry)
        assert sorted(entry["aliases"]) == idl_names(text, "type"), (name, entry)
    verify = r["io.heare.Auth"]["methods"]["Verify"]
    assert verify["in"][:2] == ["key", "scope"], verify
    assert {"valid", "code", "key_id", "retry_after_ms"} <= set(verify["out"]), verify
    assert r["io.heare.AuthAdmin"]["methods"]["ListKeys"]["out"] == ["keys"]
    assert r["org.varlink.service"]["methods"]["GetInterfaceDescription"] == \
        {"in": ["interface"], "out": ["description"]}
    assert r["org.example.Nope"]["error"] == {"type": "InterfaceNotFound",
                                              "interface": "org.example.Nope"}


def test_verify_in_every_code(daemon, go_client):
    valid, s_valid = daemon.create("go-valid", scopes=["documents.read"],
                                   metadata={"team": "payments"})
    disabled, s_disabled = daemon.create("go-disabled")
    ok(daemon.call(UPDATE, {"id": disabled["id"], "disabled": True}))
    expired, s_expired = daemon.create("go-expired", expires_at=rfc3339(time.time() + 3600))
    ok(daemon.call(UPDATE, {"id": expired["id"], "expires_at": rfc3339(time.time() - 60)}))
    limited, s_limited = daemon.create("go-limited", rate_limit={"per_second": 1, "burst": 1})
    for s in (s_valid, s_disabled, s_expired, s_limited):
        daemon.watch(s)
    cases = [  # (key, scope, code, key)
        (s_valid, None, "VALID", valid),
        (s_valid, "documents.read", "VALID", valid),
        (s_valid, "billing.write", "FORBIDDEN", valid),
        ("not a key", None, "MALFORMED", None),
        ("", None, "MALFORMED", None),
        (legacy_id("sec"), None, "NOT_FOUND", None),  # well formed, nobody's
        (s_disabled, None, "DISABLED", disabled),
        (s_expired, None, "EXPIRED", expired),
        (s_limited, None, "VALID", limited),
        (s_limited, None, "RATE_LIMITED", limited),
    ]
    verifies = [{"key": k} if s is None else {"key": k, "scope": s} for k, s, _, _ in cases]
    r = run_go(go_client, "verify", daemon, verifies=verifies)
    assert len(r) == len(cases)
    for (key, scope, code, k), entry in zip(cases, r):
        p = reply(entry)
        assert p["code"] == code and p["valid"] is (code == "VALID"), (key, scope, p)
        if k is None:
            assert p["key_id"] is None and p["name"] is None, p
        else:
            assert p["key_id"] == k["id"] and p["name"] == k["name"], p
            assert p["scopes"] == k["scopes"] and p["metadata"] == k["metadata"], p
        if code == "RATE_LIMITED":
            assert isinstance(p["retry_after_ms"], int) and 0 < p["retry_after_ms"] <= 1000, p
        else:
            assert p["retry_after_ms"] is None, p
    assert reply(r[7])["expires_at"] == daemon.get_key(expired["id"])["expires_at"]


def test_errors_are_its_typed_errors(daemon, go_client):
    key, secret = daemon.create("go-errors")
    daemon.watch(secret)
    r = run_go(go_client, "errors", daemon, secret=secret)
    assert r["unknown_method"]["error"] == {"type": "MethodNotFound",
                                            "method": "io.heare.Auth.NoSuchMethod"}
    assert r["unknown_interface"]["error"] == {"type": "InterfaceNotFound",
                                               "interface": "org.example.Nope"}
    for name, parameter in (("verify_without_key", "key"), ("verify_unknown_parameter", "bogus"),
                            ("verify_key_not_a_string", "key"), ("create_without_name", "name")):
        assert r[name]["error"] == dict(INVALID_PARAMETER, parameter=parameter), (name, r[name])
    assert r["admin_on_verify_socket"]["error"] == {
        "type": "Error", "name": "io.heare.AuthAdmin.PermissionDenied", "parameters": {}}
    e = r["get_unknown_key"]["error"]
    assert (e["type"], e["name"]) == ("Error", "io.heare.AuthAdmin.KeyNotFound"), e
    assert e["parameters"]["id"] == "key_0000000000000000000", e
    p = reply(r["verify_after_errors"])
    assert p["code"] == "VALID" and p["key_id"] == key["id"], p


def test_list_keys_with_more(daemon, go_client):
    keys = [daemon.create(f"go-more-{i}")[0] for i in range(4)]
    key, secret = daemon.create("go-more-verify")
    daemon.watch(secret)
    keys.append(key)
    r = run_go(go_client, "more", daemon, secret=secret)
    more = r["more"]
    assert more["error"] is None, more
    replies = more["replies"]
    assert len(replies) == len(keys), replies
    assert [x["continues"] for x in replies] == [True] * (len(keys) - 1) + [False], replies
    assert all(len(x["keys"]) == 1 for x in replies), replies
    assert sorted(x["keys"][0]["id"] for x in replies) == sorted(k["id"] for k in keys)
    assert sorted(k["id"] for k in reply(r["plain"])["keys"]) == sorted(k["id"] for k in keys)
    # "more" on Verify: its one reply, without continues
    vm = r["verify_more"]
    assert vm["error"] is None and vm["continues"] is False, vm
    assert vm["reply"]["code"] == "VALID", vm
    assert reply(r["refresh"])["keys_loaded"] == len(keys), r["refresh"]


def test_oneway_gets_no_reply(daemon, go_client):
    key, secret = daemon.create("go-oneway")
    daemon.watch(secret)
    r = run_go(go_client, "oneway", daemon, secret=secret)
    # the reply read after two oneway calls is the next call's, not theirs
    assert reply(r["get_info_after"])["vendor"] == "heare", r
    p = reply(r["verify_after"])
    assert p["code"] == "VALID" and p["key_id"] == key["id"], p
    assert r["stray"]["timed_out"] is True, f"a reply to a oneway call arrived: {r['stray']}"
    # the oneway Verify was run all the same
    assert daemon.get_key(key["id"])["verifications"] == 2


def test_upgrade_is_refused(daemon, go_client):
    r = run_go(go_client, "upgrade", daemon)
    assert r["upgrade"]["error"] == dict(INVALID_PARAMETER, parameter="upgrade"), r
    assert reply(r["get_info_after"])["vendor"] == "heare", r


def test_admin_socket_as_a_uid_that_is_not_an_admin(daemon, go_client):
    daemon.create("go-existing")
    os.chmod(daemon.admin_sock, 0o666)
    r = run_go(go_client, "not-admin", daemon, as_uid=NOBODY)
    denied = {"type": "Error", "name": "io.heare.AuthAdmin.PermissionDenied", "parameters": {}}
    assert r["list_keys"]["error"] == denied, r
    assert r["create_key"]["error"] == denied, r
    assert r["list_keys_more"] == {"replies": [], "error": denied}, r
    # io.heare.Auth stays open to whoever can connect
    assert reply(r["health"])["keys_loaded"] == 1, r
    assert [k["name"] for k in daemon.list_keys()] == ["go-existing"]
