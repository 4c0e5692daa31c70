"""The store and the cache (SPEC §3, §4): v1 compatibility, rewrites, polling, SIGHUP,
corrupt documents, last-known-good cache."""
import copy
import json
import os
import signal
import stat
import time

from conftest import ROOT, legacy_id, ok, sha256_hex, v2_key, wait_for, write_json_atomic

SEED_ID = "key_0001vDmowdgLBqEcDYe"
SEED_SECRET = "sec_0001vDmowg2tzwvpaFL"
V1_SAMPLE = {"keys": [{"id": SEED_ID, "secret": SEED_SECRET, "name": "MyService",
                       "created_at": "2025-10-28T16:45:18.123456",
                       "metadata": {"team": "payments"}}]}


def v1_sample():
    path = os.path.join(ROOT, "tests", "data", "v1-sample.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return copy.deepcopy(V1_SAMPLE)


def read_store(d):
    with open(d.store_path) as f:
        return f.read()


def test_v1_file_loads_and_is_rewritten_as_v2(make_daemon):
    doc = v1_sample()
    seed = doc["keys"][0]
    d = make_daemon(store_doc=doc)
    d.watch(seed["secret"])
    p = d.verify(seed["secret"])
    assert p["code"] == "VALID", p
    assert p["key_id"] == seed["id"]
    assert p["name"] == seed["name"]
    assert p["metadata"] == seed["metadata"]
    assert d.health()["keys_loaded"] == len(doc["keys"])

    key, secret = d.create("after-v1")
    text = read_store(d)
    assert "sec_" not in text, "plaintext secret left in the store after a write"
    new = json.loads(text)
    assert new["version"] == 2
    ids = {k["id"] for k in new["keys"]}
    assert ids == {seed["id"], key["id"]}
    stored_seed = next(k for k in new["keys"] if k["id"] == seed["id"])
    assert stored_seed["name"] == seed["name"]
    assert stored_seed["metadata"] == seed["metadata"]
    assert len(stored_seed["secrets"]) == 1
    assert len(stored_seed["secrets"][0]["sha256"]) == 64
    assert "secret" not in stored_seed

    assert d.verify(seed["secret"])["code"] == "VALID"
    assert d.verify(secret)["code"] == "VALID"
    # and after a re-read of the rewritten file
    d.signal(signal.SIGHUP)
    wait_for(lambda: "sec_" not in open(d.cache_path).read(), 5,
             what="a cache without plaintext after the v2 re-read")
    assert d.verify(seed["secret"])["code"] == "VALID"


def test_unknown_fields_survive_a_write(make_daemon):
    entry, secret = v2_key("extras", x_key_field={"nested": [1, 2, {"k": "v"}]})
    entry["secrets"][0]["x_secret_field"] = "kept"
    doc = {"version": 2, "x_top": {"a": 1, "b": [True, None]}, "keys": [entry]}
    d = make_daemon(store_doc=doc)
    d.watch(secret)
    assert d.verify(secret)["code"] == "VALID"
    d.create("writer")
    new = json.loads(read_store(d))
    assert new["x_top"] == {"a": 1, "b": [True, None]}
    stored = next(k for k in new["keys"] if k["id"] == entry["id"])
    assert stored["x_key_field"] == {"nested": [1, 2, {"k": "v"}]}
    assert stored["secrets"][0]["x_secret_field"] == "kept"
    assert stored["secrets"][0]["sha256"] == entry["secrets"][0]["sha256"]
    # an update of that very key keeps them too
    ok(d.call("io.heare.AuthAdmin.UpdateKey", {"id": entry["id"], "name": "renamed"}))
    new = json.loads(read_store(d))
    stored = next(k for k in new["keys"] if k["id"] == entry["id"])
    assert stored["name"] == "renamed"
    assert stored["x_key_field"] == {"nested": [1, 2, {"k": "v"}]}
    assert new["x_top"] == {"a": 1, "b": [True, None]}


def test_edit_behind_the_back_is_polled(make_daemon):
    first, s1 = v2_key("first")
    d = make_daemon(store_doc={"version": 2, "keys": [first]})
    d.watch(s1)
    assert d.verify(s1)["code"] == "VALID"
    second, s2 = v2_key("second")
    d.watch(s2)
    assert d.verify(s2)["code"] == "NOT_FOUND"
    t0 = time.monotonic()
    write_json_atomic(d.store_path, {"version": 2, "keys": [first, second]})
    wait_for(lambda: d.verify(s2)["code"] == "VALID", 5, what="the polled edit")
    assert time.monotonic() - t0 < 5
    # a deletion behind the back propagates too
    write_json_atomic(d.store_path, {"version": 2, "keys": [second]})
    wait_for(lambda: d.verify(s1)["code"] == "NOT_FOUND", 5, what="the polled delete")
    assert d.verify(s2)["code"] == "VALID"
    assert d.health()["keys_loaded"] == 1


def test_in_place_edit_is_polled(make_daemon):
    first, s1 = v2_key("first")
    d = make_daemon(store_doc={"version": 2, "keys": [first]})
    d.watch(s1)
    first["disabled"] = True
    time.sleep(1.1)  # a later mtime even on coarse-grained file systems
    with open(d.store_path, "w") as f:  # same inode, rewritten in place
        json.dump({"version": 2, "keys": [first]}, f)
    wait_for(lambda: d.verify(s1)["code"] == "DISABLED", 5, what="the in-place edit")


def test_corrupt_file_keeps_old_keys(make_daemon):
    first, s1 = v2_key("first")
    good = {"version": 2, "keys": [first]}
    d = make_daemon(store_doc=good)
    d.watch(s1)
    h = d.health()
    assert h["status"] == "healthy" and h["keys_loaded"] == 1
    gen = h["generation"]

    write_json_atomic(d.store_path, '{"version": 2, "keys": [ {"id": ')
    h = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(d.health()), 5,
                 what="degraded health after a corrupt store")
    assert isinstance(h.get("last_error"), str) and h["last_error"], h
    assert h["keys_loaded"] == 1
    assert d.verify(s1)["code"] == "VALID"
    res = d.cli("refresh")
    assert res.returncode != 0, res  # an explicit refresh of a corrupt store fails
    assert d.verify(s1)["code"] == "VALID"

    # schema errors (duplicate ids) are rejected as a whole, naming the key
    dup, s_dup = v2_key("dup", key_id=first["id"])
    d.watch(s_dup)
    write_json_atomic(d.store_path, {"version": 2, "keys": [first, dup]})
    h = wait_for(lambda: (lambda h: h if first["id"] in (h.get("last_error") or "") else None)(
        d.health()), 5, what="last_error naming the duplicate id")
    assert h["status"] == "degraded"
    assert d.verify(s_dup)["code"] == "NOT_FOUND"
    assert d.verify(s1)["code"] == "VALID"

    second, s2 = v2_key("second")
    d.watch(s2)
    write_json_atomic(d.store_path, {"version": 2, "keys": [first, second]})
    h = wait_for(lambda: (lambda h: h if h["status"] == "healthy" else None)(d.health()), 5,
                 what="healthy again after fixing the store")
    assert not h.get("last_error"), h
    assert h["keys_loaded"] == 2
    assert h["generation"] > gen
    assert d.verify(s2)["code"] == "VALID"


def test_sighup_rereads_at_once(make_daemon):
    first, s1 = v2_key("first")
    d = make_daemon(store_doc={"version": 2, "keys": [first]}, poll_interval="1h")
    d.watch(s1)
    second, s2 = v2_key("second")
    d.watch(s2)
    write_json_atomic(d.store_path, {"version": 2, "keys": [first, second]})
    time.sleep(1.5)
    assert d.verify(s2)["code"] == "NOT_FOUND", "store re-read without SIGHUP (poll 1h)"
    n_before = len(d.notifications)
    d.signal(signal.SIGHUP)
    wait_for(lambda: d.verify(s2)["code"] == "VALID", 2, what="the SIGHUP re-read")
    wait_for(lambda: any("RELOADING=1" in n for n in d.notifications[n_before:]), 3,
             what="RELOADING=1 after SIGHUP")
    assert d.proc.poll() is None
    assert d.health()["keys_loaded"] == 2


def test_refresh_method(make_daemon):
    d = make_daemon(store_doc={"version": 2, "keys": []}, poll_interval="1h")
    k, s = v2_key("r")
    d.watch(s)
    write_json_atomic(d.store_path, {"version": 2, "keys": [k]})
    p = ok(d.call("io.heare.AuthAdmin.Refresh", {}))
    assert p["keys_loaded"] == 1 and p["changed"] is True
    assert d.verify(s)["code"] == "VALID"
    p = ok(d.call("io.heare.AuthAdmin.Refresh", {}))
    assert p["keys_loaded"] == 1 and p["changed"] is False


def test_cache_written(make_daemon):
    k1, s1 = v2_key("cached-1", metadata={"team": "a"})
    k2, s2 = v2_key("cached-2", scopes=["x.*"])
    doc = {"version": 2, "keys": [k1, k2]}
    d = make_daemon(store_doc=doc)
    d.watch(s1)
    d.watch(s2)
    wait_for(lambda: os.path.exists(d.cache_path), 5, what="the cache file")
    st = os.stat(d.cache_path)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    with open(d.cache_path) as f:
        cache = json.load(f)
    assert cache["keys"] == doc["keys"]

    key, secret = d.create("written")
    d.signal(signal.SIGHUP)

    def cache_has_new():
        with open(d.cache_path) as f:
            c = json.load(f)
        return key["id"] in {k["id"] for k in c["keys"]}

    wait_for(cache_has_new, 5, what="the cache after a write")
    with open(d.cache_path) as f:
        cache = json.load(f)
    with open(d.store_path) as f:
        assert cache["keys"] == json.load(f)["keys"]
    assert stat.S_IMODE(os.stat(d.cache_path).st_mode) == 0o600


def test_unreadable_store_serves_cache(make_daemon, tmpdir_e2e):
    k, s = v2_key("from-cache")
    cache = {"version": 2, "keys": [k]}
    # the store path is a directory: it cannot be read
    os.mkdir(os.path.join(tmpdir_e2e, "keys.json"))
    d = make_daemon(tmpdir=tmpdir_e2e, cache_doc=cache)
    d.watch(s)
    p = d.verify(s)
    assert p["code"] == "VALID" and p["key_id"] == k["id"]
    h = d.health()
    assert h["status"] == "degraded", h
    assert h["keys_loaded"] == 1
    assert d.proc.poll() is None


def test_corrupt_store_at_start_serves_cache(make_daemon, tmpdir_e2e):
    k, s = v2_key("from-cache")
    with open(os.path.join(tmpdir_e2e, "keys.json"), "w") as f:
        f.write("this is not json")
    d = make_daemon(tmpdir=tmpdir_e2e, cache_doc={"version": 2, "keys": [k]})
    d.watch(s)
    assert d.verify(s)["code"] == "VALID"
    h = d.health()
    assert h["status"] == "degraded" and h.get("last_error"), h
    # the corrupt store must not overwrite the good cache
    with open(d.cache_path) as f:
        assert [x["id"] for x in json.load(f)["keys"]] == [k["id"]]
    # fixing the store: healthy, serving the store's keys
    k2, s2 = v2_key("from-store")
    d.watch(s2)
    write_json_atomic(d.store_path, {"version": 2, "keys": [k2]})
    wait_for(lambda: d.health()["status"] == "healthy", 5, what="healthy after the fix")
    assert d.verify(s2)["code"] == "VALID"
    assert d.verify(s)["code"] == "NOT_FOUND"


def test_unreadable_store_without_cache_is_unhealthy(make_daemon, tmpdir_e2e):
    os.mkdir(os.path.join(tmpdir_e2e, "keys.json"))
    d = make_daemon(tmpdir=tmpdir_e2e, start=False)
    d.start(wait_ready=False)

    def answered():
        if d.proc.poll() is not None:
            return "exited"
        try:
            return d.health()
        except OSError:
            return None

    h = wait_for(answered, 10, what="GetHealth with an unreadable store and no cache")
    assert h != "exited", d.raw_log()
    assert h["status"] == "unhealthy", h
    assert h["keys_loaded"] == 0


def test_missing_store_is_empty_and_healthy(make_daemon):
    d = make_daemon()
    assert not os.path.exists(d.store_path)
    h = d.health()
    assert h["status"] == "healthy", h
    assert h["keys_loaded"] == 0
    assert h["store"] == d.store_url
    assert isinstance(h["uptime_seconds"], int) and isinstance(h["version"], str)
    assert d.list_keys() == []
    # the first write creates the file
    key, secret = d.create("first")
    doc = json.loads(read_store(d))
    assert doc["version"] == 2 and [k["id"] for k in doc["keys"]] == [key["id"]]
    assert d.verify(secret)["code"] == "VALID"


def test_write_keeps_concurrent_cli_key(make_daemon):
    """A key written by the CLI straight to the store is not lost by a later daemon write,
    even before the daemon polled it (the daemon's write is read-modify-write)."""
    d = make_daemon(poll_interval="1h")
    res = d.cli("--store", d.store_url, "--no-refresh", "create", "--name", "by-cli")
    assert res.returncode == 0, res
    key, _ = d.create("by-daemon")
    names = sorted(k["name"] for k in json.loads(read_store(d))["keys"])
    assert names == ["by-cli", "by-daemon"]


def test_v2_entry_without_optional_fields_loads(make_daemon):
    """rate_limit and expires_at are nullable (?) members: absent means null."""
    entry, secret = v2_key("minimal")
    for optional in ("rate_limit", "expires_at"):
        del entry[optional]
    d = make_daemon(store_doc={"version": 2, "keys": [entry]})
    d.watch(secret)
    h = d.health()
    assert h["status"] == "healthy", h
    p = d.verify(secret)
    assert p["code"] == "VALID" and p["key_id"] == entry["id"], p


def test_store_holds_sha256_of_new_secret(make_daemon):
    import hashlib
    d = make_daemon()
    key, secret = d.create("hashed")
    doc = json.loads(read_store(d))
    entry = next(k for k in doc["keys"] if k["id"] == key["id"])
    assert [s["sha256"] for s in entry["secrets"]] == [hashlib.sha256(secret.encode()).hexdigest()]
    assert entry["created_at"] == key["created_at"]
    assert secret not in read_store(d)
    assert not os.path.exists(d.store_path + ".tmp")


def test_daemon_and_cli_writers_do_not_lose_keys(make_daemon):
    import subprocess
    import threading
    from conftest import HEARE_AUTH
    d = make_daemon(poll_interval="1h")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARE_AUTH_")}
    procs = [subprocess.Popen([HEARE_AUTH, "--store", d.store_url, "--no-refresh", "create",
                               "--name", f"cli-{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
                              text=True) for i in range(10)]
    errors = []

    def varlink_writer(i):
        try:
            d.create(f"daemon-{i}")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=varlink_writer, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        d.watch_output(out)
    for t in threads:
        t.join(60)
    assert errors == []
    names = sorted(k["name"] for k in json.loads(read_store(d))["keys"])
    assert names == sorted([f"cli-{i}" for i in range(10)] + [f"daemon-{i}" for i in range(10)])
    ok(d.call("io.heare.AuthAdmin.Refresh", {}))
    assert len(d.list_keys()) == 20


# ---- the streaming load (libheare/keyload.c) and its fallback to the tree path ----------

def cache_settled(d):
    """The cache file exists and no temporary file of it is left."""
    return os.path.exists(d.cache_path) and not os.path.exists(d.cache_path + ".tmp")


def test_streamed_store_is_cached_byte_for_byte(make_daemon, tmpdir_e2e):
    k1, s1 = v2_key("streamed-1", metadata={"team": "a", "n": [1, 2.5, None]},
                    x_unknown={"kept": True})
    k2, s2 = v2_key("streamed-2", scopes=["a.*", "b"],
                    rate_limit={"per_second": 5, "burst": 9})
    # odd spacing and member order: the cache is the store's bytes, not a re-rendering
    text = '{ "version" : 2 ,\n"x_top": [ {"a": "\\u00e9"} ],\n "keys": [ %s,%s ] }\n' % (
        json.dumps(k1, indent=3), json.dumps(k2, separators=(",", ":")))
    write_json_atomic(os.path.join(tmpdir_e2e, "keys.json"), text)
    d = make_daemon(tmpdir=tmpdir_e2e)
    d.watch(s1)
    d.watch(s2)
    assert d.verify(s1)["code"] == "VALID"
    p = d.verify(s2, scope="a.read")
    assert p["code"] == "VALID" and p["scopes"] == ["a.*", "b"], p
    wait_for(lambda: cache_settled(d), 5, what="the cache file")
    with open(d.cache_path) as f:
        assert f.read() == text
    assert stat.S_IMODE(os.stat(d.cache_path).st_mode) == 0o600
    got = ok(d.call("io.heare.AuthAdmin.GetKey", {"id": k2["id"]}))["key"]
    assert got["rate_limit"] == {"per_second": 5, "burst": 9}, got
    assert got["scopes"] == ["a.*", "b"] and got["created_at"] == k2["created_at"], got


def test_v1_store_never_puts_plaintext_in_the_cache(make_daemon):
    doc = v1_sample()
    seed = doc["keys"][0]
    d = make_daemon(store_doc=doc)
    d.watch(seed["secret"])
    assert d.verify(seed["secret"])["code"] == "VALID"
    wait_for(lambda: cache_settled(d), 5, what="the cache file")
    with open(d.cache_path) as f:
        text = f.read()
    assert seed["secret"] not in text and "sec_" not in text
    assert json.loads(text)["version"] == 2


def test_keys_before_version_load_through_the_tree_path(make_daemon, tmpdir_e2e):
    k, s = v2_key("keys-first")
    text = json.dumps({"keys": [k], "version": 2})
    write_json_atomic(os.path.join(tmpdir_e2e, "keys.json"), text)
    d = make_daemon(tmpdir=tmpdir_e2e)
    d.watch(s)
    assert d.verify(s)["code"] == "VALID"
    assert d.health()["status"] == "healthy"
    wait_for(lambda: cache_settled(d), 5, what="the cache file")
    with open(d.cache_path) as f:
        assert json.load(f)["keys"] == [k]


def test_many_keys_and_a_bad_one_deep_inside(make_daemon):
    keys, secrets = [], []
    for i in range(3000):
        k, s = v2_key(f"bulk-{i}", metadata={"i": i})
        keys.append(k)
        secrets.append(s)
    d = make_daemon(store_doc={"version": 2, "keys": keys})
    for s in secrets[::500]:
        d.watch(s)
    assert d.health()["keys_loaded"] == 3000
    for i in range(0, 3000, 500):
        p = d.verify(secrets[i])
        assert p["code"] == "VALID" and p["metadata"] == {"i": i}, p

    # one bad digest near the end: the whole document is refused, naming that key
    bad = copy.deepcopy(keys)
    bad[2700]["secrets"][0]["sha256"] = "ABC"
    write_json_atomic(d.store_path, {"version": 2, "keys": bad})
    h = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(d.health()), 10,
                 what="degraded after a bad key")
    assert f"keys[2700] ({keys[2700]['id']})" in h["last_error"], h
    assert "sha256" in h["last_error"], h
    assert h["keys_loaded"] == 3000
    assert d.verify(secrets[0])["code"] == "VALID"


def test_cache_in_an_odd_shape_is_served_through_the_tree_path(make_daemon, tmpdir_e2e):
    k, s = v2_key("odd-cache")
    os.mkdir(os.path.join(tmpdir_e2e, "keys.json"))  # the store cannot be read
    d = make_daemon(tmpdir=tmpdir_e2e, start=False,
                    cache_doc=json.dumps({"keys": [k], "version": 2}))
    d.start()
    d.watch(s)
    assert d.verify(s)["code"] == "VALID"
    h = d.health()
    assert h["status"] == "degraded" and h["keys_loaded"] == 1, h


def test_corrupt_cache_and_unreadable_store_is_unhealthy(make_daemon, tmpdir_e2e):
    os.mkdir(os.path.join(tmpdir_e2e, "keys.json"))
    d = make_daemon(tmpdir=tmpdir_e2e, start=False, cache_doc='{"version": 2, "keys": [')
    d.start()
    h = d.health()
    assert h["status"] == "unhealthy" and h["keys_loaded"] == 0, h
    assert "cache" in d.raw_log() and "rejected" in d.raw_log()


# ---- version 1, streamed: the same keys, a version-2 cache, no plaintext ----------------

V1_CREATED = "2025-10-28T16:45:18.123456"


def v1_keys(n):
    """n version-1 keys as the Python service writes them (metadata an object, null or
    absent in turn); returns (keys, secrets)."""
    keys, secrets = [], []
    for i in range(n):
        s = legacy_id("sec")
        k = {"id": legacy_id("key"), "secret": s, "name": f"v1-bulk-{i}",
             "created_at": V1_CREATED}
        if i % 3 == 1:
            k["metadata"] = {"i": i, "team": "payments"}
        elif i % 3 == 2:
            k["metadata"] = None
        keys.append(k)
        secrets.append(s)
    return keys, secrets


def converted(k):
    """The version-2 key keydoc_parse() makes of a version-1 key."""
    created = "2025-10-28T16:45:18Z"
    return {"id": k["id"], "name": k["name"], "created_at": created,
            "metadata": k.get("metadata") or {}, "scopes": [], "expires_at": None,
            "disabled": False, "rate_limit": None,
            "secrets": [{"sha256": sha256_hex(k["secret"]), "created_at": created,
                         "expires_at": None}]}


def test_big_v1_store_streams_and_caches_version_2(make_daemon, tmpdir_e2e):
    keys, secrets = v1_keys(3000)
    write_json_atomic(os.path.join(tmpdir_e2e, "keys.json"), {"keys": keys})
    d = make_daemon(tmpdir=tmpdir_e2e)
    for s in secrets:
        d.watch(s)
    assert d.health()["keys_loaded"] == 3000
    assert "loaded 3000 keys from" in d.raw_log() and "version 1 document" in d.raw_log()
    for i in range(0, 3000, 97):
        p = d.verify(secrets[i])
        assert p["code"] == "VALID" and p["key_id"] == keys[i]["id"], p
        assert p["name"] == keys[i]["name"] and p["metadata"] == (keys[i].get("metadata") or {}), p

    wait_for(lambda: cache_settled(d), 10, what="the cache file")
    with open(d.cache_path) as f:
        text = f.read()
    # keyload's own rendering (one key a line), not the tree's (indented): streamed
    assert text.startswith('{"version":2,"keys":[\n'), text[:200]
    assert "sec_" not in text and '"secret"' not in text
    assert not any(s in text for s in secrets)
    cache = json.loads(text)
    assert cache == {"version": 2, "keys": [converted(k) for k in keys]}
    assert stat.S_IMODE(os.stat(d.cache_path).st_mode) == 0o600
    d.stop()

    # the store unreadable: a new daemon serves the same keys from that cache
    os.replace(os.path.join(tmpdir_e2e, "keys.json"), os.path.join(tmpdir_e2e, "keys.v1"))
    os.mkdir(os.path.join(tmpdir_e2e, "keys.json"))
    d2 = make_daemon(tmpdir=tmpdir_e2e)
    h = d2.health()
    assert h["status"] == "degraded" and h["keys_loaded"] == 3000, h
    assert d2.events("cache_loaded") or "last-known-good cache" in d2.raw_log()
    for i in range(0, 3000, 97):
        p = d2.verify(secrets[i])
        assert p["code"] == "VALID" and p["key_id"] == keys[i]["id"], p


def test_v1_store_in_an_odd_shape_loads_through_the_tree_path(make_daemon, tmpdir_e2e):
    keys, secrets = v1_keys(5)
    keys[3]["x_extra"] = {"kept": [1, 2]}  # a member the streamed conversion would lose
    write_json_atomic(os.path.join(tmpdir_e2e, "keys.json"),
                      {"keys": keys, "x_top": "also kept"})
    d = make_daemon(tmpdir=tmpdir_e2e)
    for s in secrets:
        d.watch(s)
    assert d.health()["status"] == "healthy"
    assert "loaded 5 keys from" in d.raw_log() and "version 1 document" in d.raw_log()
    for k, s in zip(keys, secrets):
        assert d.verify(s)["code"] == "VALID"
    wait_for(lambda: cache_settled(d), 5, what="the cache file")
    with open(d.cache_path) as f:
        text = f.read()
    # the tree's rendering (keydoc_dump, indented), with what it keeps
    assert text.startswith('{\n  "version": 2,'), text[:200]
    assert "sec_" not in text and '"secret"' not in text
    cache = json.loads(text)
    assert cache["x_top"] == "also kept"
    assert cache["keys"][3]["x_extra"] == {"kept": [1, 2]}
    want = [converted(k) for k in keys]
    want[3]["x_extra"] = {"kept": [1, 2]}
    assert cache["keys"] == want


def test_v1_store_with_a_bad_key_deep_inside_is_refused_naming_it(make_daemon):
    keys, secrets = v1_keys(3000)
    d = make_daemon(store_doc={"keys": keys})
    for s in secrets:
        d.watch(s)
    assert d.health()["keys_loaded"] == 3000

    bad = copy.deepcopy(keys)
    bad[2700]["secret"] = ""
    bad[10]["name"] = "changed"  # so the document is not the one loaded
    write_json_atomic(d.store_path, {"keys": bad})
    h = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(d.health()), 10,
                 what="degraded after a bad version-1 key")
    assert (f"keys[2700] ({keys[2700]['id']}): secret: not a non-empty string (version 1 key)"
            in h["last_error"]), h
    assert h["keys_loaded"] == 3000
    assert d.verify(secrets[0])["code"] == "VALID"
    assert d.verify(secrets[2700])["code"] == "VALID"

    bad[2700]["secret"] = secrets[2700]
    bad[2700]["created_at"] = "yesterday"
    write_json_atomic(d.store_path, {"keys": bad})
    h = wait_for(lambda: (lambda h: h if "created_at" in (h.get("last_error") or "")
                          else None)(d.health()), 10, what="the created_at complaint")
    assert (f"keys[2700] ({keys[2700]['id']}): created_at: not an RFC 3339 time"
            in h["last_error"]), h
