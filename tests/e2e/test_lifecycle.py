"""Key lifecycle rules (SPEC §7) and the Verify reply's shape (SPEC §5), over Varlink."""
import time

import pytest

from conftest import ok, rfc3339

UPDATE = "io.heare.AuthAdmin.UpdateKey"
ROTATE = "io.heare.AuthAdmin.RotateKey"
DELETE = "io.heare.AuthAdmin.DeleteKey"

DETAIL_FIELDS = ("key_id", "name", "metadata", "scopes", "expires_at")


def assert_details(p, key, code):
    assert p["code"] == code, p
    assert p["valid"] is (code == "VALID"), p
    assert p["key_id"] == key["id"], p
    assert p["name"] == key["name"], p
    assert p["metadata"] == key["metadata"], p
    assert p["scopes"] == key["scopes"], p
    assert isinstance(p["expires_at"], str) and p["expires_at"] == key["expires_at"], p


def assert_no_details(p, code):
    assert p["code"] == code, p
    assert p["valid"] is False, p
    for f in DETAIL_FIELDS:
        assert p.get(f) is None, (f, p)


def test_expiry(daemon):
    exp = int(time.time()) + 3
    key, secret = daemon.create("soon", expires_at=rfc3339(exp))
    assert key["expires_at"] == rfc3339(exp)
    p = daemon.verify(secret)
    assert_details(p, key, "VALID")
    while time.time() < exp + 1.2:
        time.sleep(0.2)
    p = daemon.verify(secret)
    assert_details(p, key, "EXPIRED")


def test_expiry_in_the_past(daemon):
    key, secret = daemon.create("past", expires_at=rfc3339(time.time() + 3600))
    assert daemon.verify(secret)["code"] == "VALID"
    past = rfc3339(time.time() - 3600)
    key = ok(daemon.call(UPDATE, {"id": key["id"], "expires_at": past}))["key"]
    assert key["expires_at"] == past
    assert_details(daemon.verify(secret), key, "EXPIRED")
    # clearing the expiry makes it valid again
    key = ok(daemon.call(UPDATE, {"id": key["id"], "clear_expiry": True}))["key"]
    assert key.get("expires_at") is None
    assert daemon.verify(secret)["code"] == "VALID"


def test_create_with_past_expiry_is_expired(daemon):
    r = daemon.call("io.heare.AuthAdmin.CreateKey",
                    {"name": "born-expired", "expires_at": rfc3339(time.time() - 10)})
    if "error" in r:
        # refusing is a defensible answer, but then it must name the field
        assert r["error"] == "org.varlink.service.InvalidParameter", r
        assert r["parameters"]["parameter"] == "expires_at", r
        return
    assert daemon.verify(r["parameters"]["secret"])["code"] == "EXPIRED"


def test_disabled_enabled(daemon):
    key, secret = daemon.create("toggle", metadata={"team": "a"},
                                expires_at=rfc3339(time.time() + 86400))
    key = ok(daemon.call(UPDATE, {"id": key["id"], "disabled": True}))["key"]
    assert key["disabled"] is True
    assert_details(daemon.verify(secret), key, "DISABLED")
    key = ok(daemon.call(UPDATE, {"id": key["id"], "disabled": False}))["key"]
    assert key["disabled"] is False
    assert_details(daemon.verify(secret), key, "VALID")


def test_scopes(daemon):
    key, secret = daemon.create("scoped", scopes=["documents.*", "billing.read"],
                                expires_at=rfc3339(time.time() + 86400))
    assert sorted(key["scopes"]) == ["billing.read", "documents.*"]
    for scope in ("billing.read", "documents.read", "documents.write", "documents.a.b"):
        assert_details(daemon.verify(secret, scope=scope), key, "VALID")
    for scope in ("billing.write", "billing", "other", "billing.read.x", "documentsx.read"):
        p = daemon.verify(secret, scope=scope)
        assert_details(p, key, "FORBIDDEN")
    assert_details(daemon.verify(secret), key, "VALID")

    plain, plain_secret = daemon.create("unscoped")
    assert plain["scopes"] == []
    assert daemon.verify(plain_secret)["code"] == "VALID"
    assert daemon.verify(plain_secret, scope="documents.read")["code"] == "FORBIDDEN"


def test_rotation_with_grace(daemon):
    key, old = daemon.create("rot")
    p = ok(daemon.call(ROTATE, {"id": key["id"], "grace_seconds": 3600}))
    new = p["secret"]
    assert new != old
    assert p["key"]["id"] == key["id"]
    assert p["key"]["secrets"] == 2
    for s in (old, new):
        v = daemon.verify(s)
        assert v["code"] == "VALID" and v["key_id"] == key["id"], v


def test_rotation_default_grace_keeps_old(daemon):
    key, old = daemon.create("rot-default")
    p = ok(daemon.call(ROTATE, {"id": key["id"]}))
    assert daemon.verify(old)["code"] == "VALID"
    assert daemon.verify(p["secret"])["code"] == "VALID"


def test_rotation_without_grace(daemon):
    key, old = daemon.create("rot0")
    p = ok(daemon.call(ROTATE, {"id": key["id"], "grace_seconds": 0}))
    new = p["secret"]
    v = daemon.verify(old)
    assert v["code"] == "EXPIRED" and v["key_id"] == key["id"], v
    v = daemon.verify(new)
    assert v["code"] == "VALID" and v["key_id"] == key["id"], v
    # a second rotation leaves exactly the newest secret valid
    p2 = ok(daemon.call(ROTATE, {"id": key["id"], "grace_seconds": 0}))
    assert daemon.verify(new)["code"] == "EXPIRED"
    assert daemon.verify(p2["secret"])["code"] == "VALID"


def test_rotate_unknown_key(daemon):
    r = daemon.call(ROTATE, {"id": "key_0000000000000000000"})
    assert r.get("error") == "io.heare.AuthAdmin.KeyNotFound", r
    assert r["parameters"]["id"] == "key_0000000000000000000"


def test_delete(daemon):
    key, secret = daemon.create("gone")
    other, other_secret = daemon.create("stays")
    ok(daemon.call(ROTATE, {"id": key["id"], "grace_seconds": 3600}))
    assert ok(daemon.call(DELETE, {"id": key["id"]})) == {}
    assert_no_details(daemon.verify(secret), "NOT_FOUND")
    assert daemon.verify(other_secret)["code"] == "VALID"
    r = daemon.call("io.heare.AuthAdmin.GetKey", {"id": key["id"]})
    assert r.get("error") == "io.heare.AuthAdmin.KeyNotFound", r
    r = daemon.call(DELETE, {"id": key["id"]})
    assert r.get("error") == "io.heare.AuthAdmin.KeyNotFound", r
    assert [k["id"] for k in daemon.list_keys()] == [other["id"]]


def test_malformed_keys(daemon):
    key, secret = daemon.create("real")
    last = secret[-1]
    bad_checksum = secret[:-1] + ("A" if last != "A" else "B")
    cases = [
        bad_checksum,
        "",
        "sec_1" + "a" * 595,
        "a" * 513,
        "sec_1é" + "a" * 37,
        "sec_1\x01" + "a" * 37,
        "sec_1 abc",
    ]
    for k in cases:
        assert_no_details(daemon.verify(k), "MALFORMED")
    # a 512-byte key is not malformed for its length alone
    p = daemon.verify("x" * 512)
    assert p["code"] in ("NOT_FOUND", "MALFORMED")
    assert daemon.verify(secret)["code"] == "VALID"


def test_unknown_key_not_found(daemon):
    daemon.create("someone")
    assert_no_details(daemon.verify("sec_0001vDmowg2tzwvpaFL"), "NOT_FOUND")
    assert_no_details(daemon.verify("not-a-sec-prefix-at-all"), "NOT_FOUND")


def test_details_present_for_every_keyed_code(daemon):
    exp = rfc3339(time.time() + 86400)
    key, secret = daemon.create("shape", metadata={"team": "payments", "n": 1},
                                scopes=["documents.read"], expires_at=exp)
    assert_details(daemon.verify(secret), key, "VALID")
    assert_details(daemon.verify(secret, scope="billing.read"), key, "FORBIDDEN")
    key = ok(daemon.call(UPDATE, {"id": key["id"], "disabled": True}))["key"]
    assert_details(daemon.verify(secret), key, "DISABLED")
    key = ok(daemon.call(UPDATE, {"id": key["id"], "disabled": False,
                                  "expires_at": rfc3339(time.time() - 5)}))["key"]
    assert_details(daemon.verify(secret), key, "EXPIRED")


def test_rate_limit(daemon):
    key, secret = daemon.create("limited", rate_limit={"per_second": 1, "burst": 3})
    codes = [daemon.verify(secret)["code"] for _ in range(6)]
    assert codes[:3] == ["VALID"] * 3, codes
    assert "RATE_LIMITED" in codes[3:], codes
    p = daemon.verify(secret)
    if p["code"] == "RATE_LIMITED":
        assert p["key_id"] == key["id"]
        assert isinstance(p["retry_after_ms"], int) and 0 < p["retry_after_ms"] <= 1000, p
    time.sleep(1.2)
    assert daemon.verify(secret)["code"] == "VALID"


def test_update_fields(daemon):
    key, secret = daemon.create("upd", metadata={"a": "1"}, scopes=["x"])
    p = ok(daemon.call(UPDATE, {"id": key["id"], "name": "renamed",
                                "metadata": {"b": "2"}, "scopes": ["y", "z.*"]}))
    k = p["key"]
    assert (k["name"], k["metadata"], sorted(k["scopes"])) == ("renamed", {"b": "2"},
                                                             ["y", "z.*"])
    assert daemon.get_key(key["id"])["name"] == "renamed"
    v = daemon.verify(secret, scope="z.q")
    assert v["code"] == "VALID" and v["name"] == "renamed" and v["metadata"] == {"b": "2"}
    r = daemon.call(UPDATE, {"id": key["id"], "name": ""})
    assert r.get("error") == "org.varlink.service.InvalidParameter", r
    assert r["parameters"]["parameter"] == "name"
    r = daemon.call(UPDATE, {"id": "key_0000000000000000000", "name": "x"})
    assert r.get("error") == "io.heare.AuthAdmin.KeyNotFound", r


def test_usage_counters_and_health(daemon):
    h0 = daemon.health()
    key, secret = daemon.create("counted", metadata={"n": 1, "nested": {"a": [1, 2]}})
    h1 = daemon.health()
    assert h1["generation"] > h0["generation"]
    assert h1["keys_loaded"] == 1
    assert isinstance(h1["loaded_at"], str) and h1["loaded_at"].endswith("Z")
    k = daemon.get_key(key["id"])
    assert k["verifications"] == 0 and k.get("last_used_at") is None
    assert k["secrets"] == 1 and k["metadata"] == {"n": 1, "nested": {"a": [1, 2]}}
    for _ in range(3):
        assert daemon.verify(secret)["code"] == "VALID"
    k = daemon.get_key(key["id"])
    assert k["verifications"] == 3
    assert isinstance(k["last_used_at"], str) and k["last_used_at"].endswith("Z")
    assert daemon.verify(secret)["metadata"] == {"n": 1, "nested": {"a": [1, 2]}}
