"""The heare-auth CLI (SPEC §8) against a real daemon, and directly on a store file."""
import json
import os
import pty
import re
import select
import subprocess
import time

import pytest

from conftest import (HEARE_AUTH, KEY_ID_RE, NEW_SECRET_RE, base62_decode, legacy_id,
                      note_output, parse_rfc3339, run_cli, wait_for)

CREATE_RE = re.compile(
    r"\ACreated API key:\n"
    r"  ID:     (key_0[0-9A-Za-z]{18})\n"
    r"  Secret: (sec_1[0-9A-Za-z]{38})\n"
    r"  Name:   (.*)\n"
    r"  Created: (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\n"
    r"\n"
    r"⚠️  Save the SECRET securely - it will not be shown again!\n\Z")


def create(d, name, *extra, **kw):
    res = d.cli("create", "--name", name, *extra, **kw)
    assert res.returncode == 0, res.stderr
    m = CREATE_RE.match(res.stdout)
    assert m, f"create output does not match the SPEC text:\n{res.stdout}"
    return m.group(1), m.group(2)


def test_create_verify_delete(daemon):
    key_id, secret = create(daemon, "MyService")
    # key on stdin
    res = daemon.cli("verify", input=secret + "\n", socket="verify")
    assert res.returncode == 0, res
    assert res.stdout == f"✓ Valid key: {key_id} (MyService)\n"
    # key on stdin with '-'
    res = daemon.cli("verify", "-", input=secret, socket="verify")
    assert res.returncode == 0, res
    assert key_id in res.stdout
    # key as argument, no --socket: HEARE_AUTH_VERIFY_SOCKET from the environment
    res = daemon.cli("verify", secret, socket=None)
    assert res.returncode == 0, res
    assert res.stdout == f"✓ Valid key: {key_id} (MyService)\n"

    res = daemon.cli("delete", key_id, "--yes")
    assert res.returncode == 0, res
    assert "✓ Deleted successfully." in res.stdout

    res = daemon.cli("verify", secret, socket="verify")
    assert res.returncode == 1, res
    assert res.stdout.startswith("✗ Invalid key: NOT_FOUND"), res.stdout
    assert daemon.verify(secret)["code"] == "NOT_FOUND"


def test_create_output_and_ids(daemon):
    now = time.time()
    key_id, secret = create(daemon, "MyService")
    assert KEY_ID_RE.fullmatch(key_id) and NEW_SECRET_RE.fullmatch(secret)
    # the 8-char timestamp after the generation digit is the creation time
    assert abs(base62_decode(key_id[5:13]) - now) < 120
    assert abs(base62_decode(secret[5:13]) - now) < 120
    key = daemon.get_key(key_id)
    assert key["name"] == "MyService"
    assert abs(parse_rfc3339(key["created_at"]) - now) < 120
    # two creates never share an id or a secret
    key_id2, secret2 = create(daemon, "MyService")
    assert key_id2 != key_id and secret2 != secret


def test_create_with_options(daemon):
    key_id, secret = create(daemon, "opts", "--metadata", "team=payments", "--metadata",
                            "env=prod", "--scope", "documents.read", "--scope", "billing.*",
                            "--expires", "90d", "--rate-limit", "50/s:100")
    key = daemon.get_key(key_id)
    assert key["metadata"] == {"team": "payments", "env": "prod"}
    assert sorted(key["scopes"]) == ["billing.*", "documents.read"]
    assert abs(parse_rfc3339(key["expires_at"]) - (time.time() + 90 * 86400)) < 120
    assert key["rate_limit"] == {"per_second": 50, "burst": 100}
    assert daemon.verify(secret, scope="billing.pay")["code"] == "VALID"


def test_list_table(daemon):
    res = daemon.cli("list")
    assert res.returncode == 0, res
    key_id, _ = create(daemon, "ListMe")
    create(daemon, "Other")
    res = daemon.cli("list")
    assert res.returncode == 0, res
    lines = res.stdout.splitlines()
    assert re.fullmatch(r"ID\s+NAME\s+CREATED\s+EXPIRES\s+STATUS", lines[0]), lines[0]
    row = [line for line in lines if line.startswith(key_id)]
    assert len(row) == 1, res.stdout
    assert re.fullmatch(re.escape(key_id) + r"\s+ListMe\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
                        r"\s+never\s+active", row[0]), row[0]
    # columns are aligned: NAME starts at the same offset in the header and every row
    col = lines[0].index("NAME")
    for line in lines[1:]:
        assert line[col - 2:col] == "  " and line[col] != " ", res.stdout
    assert len(lines) == 3


def test_show(daemon):
    key_id, _ = create(daemon, "ShowMe", "--metadata", "team=payments", "--scope", "a.b")
    res = daemon.cli("show", key_id)
    assert res.returncode == 0, res
    assert key_id in res.stdout
    assert "ShowMe" in res.stdout
    assert "payments" in res.stdout
    assert "a.b" in res.stdout
    assert "sec_" not in res.stdout


def test_update(daemon):
    key_id, secret = create(daemon, "before")
    res = daemon.cli("update", key_id, "--name", "after")
    assert res.returncode == 0, res
    assert daemon.get_key(key_id)["name"] == "after"

    res = daemon.cli("update", key_id, "--metadata", "team=ops", "--metadata", "tier=1")
    assert res.returncode == 0, res
    assert daemon.get_key(key_id)["metadata"] == {"team": "ops", "tier": "1"}

    res = daemon.cli("update", key_id, "--scope", "documents.read", "--scope", "x.*")
    assert res.returncode == 0, res
    assert sorted(daemon.get_key(key_id)["scopes"]) == ["documents.read", "x.*"]

    res = daemon.cli("update", key_id, "--expires", "1h")
    assert res.returncode == 0, res
    exp = daemon.get_key(key_id)["expires_at"]
    assert exp and abs(parse_rfc3339(exp) - (time.time() + 3600)) < 120

    res = daemon.cli("update", key_id, "--no-expiry")
    assert res.returncode == 0, res
    assert daemon.get_key(key_id).get("expires_at") is None

    key = daemon.get_key(key_id)
    assert key["name"] == "after"  # unrelated fields kept
    assert daemon.verify(secret)["code"] == "VALID"


def test_disable_enable(daemon):
    key_id, secret = create(daemon, "toggle")
    assert daemon.cli("disable", key_id).returncode == 0
    assert daemon.verify(secret)["code"] == "DISABLED"
    assert daemon.cli("verify", secret, socket="verify").returncode == 1
    assert "disabled" in daemon.cli("list").stdout
    assert daemon.cli("enable", key_id).returncode == 0
    assert daemon.verify(secret)["code"] == "VALID"


def test_rotate(daemon):
    key_id, old = create(daemon, "rot")
    res = daemon.cli("rotate", key_id, "--grace", "0")
    assert res.returncode == 0, res
    new = NEW_SECRET_RE.findall(res.stdout)
    assert len(new) == 1 and new[0] != old, res.stdout
    assert daemon.verify(new[0])["code"] == "VALID"
    assert daemon.verify(new[0])["key_id"] == key_id
    assert daemon.verify(old)["code"] == "EXPIRED"


def test_refresh_and_health(daemon):
    create(daemon, "one")
    res = daemon.cli("refresh")
    assert res.returncode == 0, res
    assert res.stdout == "✓ Refresh successful - loaded 1 keys\n"
    res = daemon.cli("health", socket="verify")
    assert res.returncode == 0, res
    assert "healthy" in res.stdout


def test_json_outputs(daemon):
    res = daemon.cli("--json", "create", "--name", "J", "--metadata", "a=b")
    assert res.returncode == 0, res
    doc = json.loads(res.stdout)
    key_id, secret = doc["key"]["id"], doc["secret"]
    assert KEY_ID_RE.fullmatch(key_id) and NEW_SECRET_RE.fullmatch(secret)
    assert doc["key"]["name"] == "J" and doc["key"]["metadata"] == {"a": "b"}

    doc = json.loads(daemon.cli("--json", "list").stdout)
    assert [k["id"] for k in doc["keys"]] == [key_id]

    res = daemon.cli("--json", "show", key_id)
    assert res.returncode == 0, res
    doc = json.loads(res.stdout)
    shown = doc.get("key", doc)
    assert shown["id"] == key_id and shown["name"] == "J"

    res = daemon.cli("--json", "verify", secret, socket="verify")
    assert res.returncode == 0, res
    doc = json.loads(res.stdout)
    assert doc["valid"] is True and doc["code"] == "VALID" and doc["key_id"] == key_id

    res = daemon.cli("--json", "verify", "sec_1" + "0" * 38, socket="verify")
    assert res.returncode == 1, res
    doc = json.loads(res.stdout)
    assert doc["valid"] is False and doc["code"] in ("MALFORMED", "NOT_FOUND")

    res = daemon.cli("--json", "refresh")
    assert res.returncode == 0, res
    assert json.loads(res.stdout)["keys_loaded"] == 1

    res = daemon.cli("--json", "health", socket="verify")
    assert res.returncode == 0, res
    assert json.loads(res.stdout)["status"] == "healthy"

    res = daemon.cli("--json", "delete", key_id, "--yes")
    assert res.returncode == 0, res
    json.loads(res.stdout)


def test_call_raw(daemon):
    res = daemon.cli("call", "io.heare.Auth.GetHealth")
    assert res.returncode == 0, res
    assert json.loads(res.stdout)["status"] == "healthy"
    res = daemon.cli("call", "io.heare.AuthAdmin.CreateKey", '{"name": "raw"}')
    assert res.returncode == 0, res
    assert json.loads(res.stdout)["key"]["name"] == "raw"


def test_exit_codes(daemon, tmpdir_e2e):
    missing = os.path.join(tmpdir_e2e, "nothing-here.sock")
    res = run_cli([HEARE_AUTH, "--socket", missing, "list"])
    assert res.returncode == 3, res
    assert res.stderr.strip() and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert missing in res.stderr
    res = run_cli([HEARE_AUTH, "--socket", missing, "verify", "sec_1" + "0" * 38])
    assert res.returncode == 3, res

    assert daemon.cli("no-such-command").returncode == 2
    assert daemon.cli("list", "--bogus-flag").returncode == 2
    assert daemon.cli("--bogus-flag", "list").returncode == 2
    assert daemon.cli("create").returncode == 2  # --name is required
    assert daemon.cli("show").returncode == 2

    res = daemon.cli("show", legacy_id("key"))
    assert res.returncode == 1, res
    assert res.stderr.strip()

    key_id, _ = create(daemon, "exits")
    res = daemon.cli("update", key_id, "--expires", "1h", "--no-expiry")
    assert res.returncode == 2, res
    res = daemon.cli("update", key_id, "--expires", "not-a-time")
    assert res.returncode == 2, res
    assert daemon.get_key(key_id).get("expires_at") is None
    res = daemon.cli("delete", legacy_id("key"), "--yes")
    assert res.returncode == 1, res


def test_delete_without_tty_refuses(daemon):
    key_id, secret = create(daemon, "keep")
    res = daemon.cli("delete", key_id)  # stdin is /dev/null
    assert res.returncode == 2, res
    assert daemon.verify(secret)["code"] == "VALID"


def run_on_pty(argv, env, answer, timeout=20):
    """Runs argv with a pty as its terminal; answers the first '[y/N]' prompt."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    out = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                out += chunk
                if not answered and b"[y/N]" in out:
                    os.write(master, answer.encode() + b"\n")
                    answered = True
            elif proc.poll() is not None:
                break
        rc = proc.wait(max(0.1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)
    note_output(out, f"terminal of {argv!r}")  # read here, not through communicate()
    return rc, out.decode(errors="replace"), answered


def test_delete_on_terminal(daemon):
    key_id, secret = create(daemon, "ptykey")
    env = dict(os.environ, HEARE_AUTH_SOCKET=daemon.admin_sock)
    rc, out, answered = run_on_pty([HEARE_AUTH, "delete", key_id], env, "n")
    assert answered, f"no [y/N] prompt on the terminal: {out!r}"
    assert rc == 1, out
    assert daemon.verify(secret)["code"] == "VALID"

    rc, out, answered = run_on_pty([HEARE_AUTH, "delete", key_id], env, "y")
    assert answered, out
    assert rc == 0, out
    assert "Deleted successfully" in out
    assert daemon.verify(secret)["code"] == "NOT_FOUND"


def test_store_direct_without_daemon(tmpdir_e2e):
    store = "file://" + os.path.join(tmpdir_e2e, "keys.json")
    base = [HEARE_AUTH, "--store", store, "--no-refresh"]
    res = run_cli(base + ["create", "--name", "direct", "--metadata", "team=x"])
    assert res.returncode == 0, res
    m = CREATE_RE.match(res.stdout)
    assert m, res.stdout
    key_id, secret = m.group(1), m.group(2)

    with open(os.path.join(tmpdir_e2e, "keys.json")) as f:
        doc = json.load(f)
    assert doc["version"] == 2
    assert [k["id"] for k in doc["keys"]] == [key_id]
    assert secret not in json.dumps(doc)

    res = run_cli(base + ["list"])
    assert res.returncode == 0 and key_id in res.stdout, res
    res = run_cli(base + ["show", key_id])
    assert res.returncode == 0 and "direct" in res.stdout, res
    res = run_cli(base + ["--json", "list"])
    assert [k["id"] for k in json.loads(res.stdout)["keys"]] == [key_id]
    res = run_cli(base + ["delete", key_id, "--yes"])
    assert res.returncode == 0, res
    with open(os.path.join(tmpdir_e2e, "keys.json")) as f:
        assert json.load(f)["keys"] == []
    res = run_cli(base + ["show", key_id])
    assert res.returncode == 1, res

    # the environment names the store too
    env = dict(os.environ, HEARE_AUTH_STORE=store)
    res = run_cli([HEARE_AUTH, "--no-refresh", "create", "--name", "via-env"], env=env)
    assert res.returncode == 0, res
    with open(os.path.join(tmpdir_e2e, "keys.json")) as f:
        assert [k["name"] for k in json.load(f)["keys"]] == ["via-env"]


def test_store_direct_warns_when_daemon_missing(tmpdir_e2e):
    store = "file://" + os.path.join(tmpdir_e2e, "keys.json")
    res = run_cli([HEARE_AUTH, "--store", store, "--socket",
                   os.path.join(tmpdir_e2e, "no-daemon.sock"), "create", "--name", "w"])
    assert res.returncode == 0, res
    assert CREATE_RE.match(res.stdout), res.stdout
    assert res.stderr.strip(), "no warning about the unreachable daemon"


def test_store_direct_unreachable_store(tmpdir_e2e):
    blocker = os.path.join(tmpdir_e2e, "a-file")
    with open(blocker, "w") as f:
        f.write("not a directory\n")
    store = "file://" + os.path.join(blocker, "keys.json")
    res = run_cli([HEARE_AUTH, "--store", store, "--no-refresh", "create", "--name", "x"])
    assert res.returncode == 3, res


def test_store_direct_with_daemon_refreshes(make_daemon):
    d = make_daemon(poll_interval="1h")
    res = d.cli("--store", d.store_url, "create", "--name", "direct-live")
    assert res.returncode == 0, res
    m = CREATE_RE.match(res.stdout)
    assert m, res.stdout
    # poll interval is an hour: only the CLI's refresh request can make this work
    p = d.verify(m.group(2))
    assert p["code"] == "VALID" and p["key_id"] == m.group(1)


def test_parallel_store_creates(make_daemon):
    d = make_daemon(poll_interval="1h")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARE_AUTH_")}
    procs = [subprocess.Popen([HEARE_AUTH, "--store", d.store_url, "--no-refresh", "create",
                               "--name", f"par-{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
                              text=True) for i in range(20)]
    secrets = {}
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        m = CREATE_RE.match(out)
        assert m, out
        secrets[m.group(1)] = m.group(2)
        d.watch(m.group(2))
    assert len(secrets) == 20
    with open(d.store_path) as f:
        doc = json.load(f)
    assert sorted(k["id"] for k in doc["keys"]) == sorted(secrets)
    assert sorted(k["name"] for k in doc["keys"]) == sorted(f"par-{i}" for i in range(20))

    res = d.cli("refresh")
    assert res.returncode == 0, res
    assert "loaded 20 keys" in res.stdout
    for key_id, secret in secrets.items():
        p = d.verify(secret)
        assert p["code"] == "VALID" and p["key_id"] == key_id


def test_no_secret_in_daemon_log(daemon):
    made = [create(daemon, f"s{i}", "--scope", "a.b") for i in range(3)]
    rotated = daemon.cli("rotate", made[0][0], "--grace", "60")
    assert rotated.returncode == 0, rotated
    new = NEW_SECRET_RE.findall(rotated.stdout)
    assert new
    for key_id, secret in made:
        daemon.cli("verify", secret, socket="verify")
        daemon.cli("verify", secret, "--scope", "other", socket="verify")
        daemon.cli("update", key_id, "--name", "renamed")
    daemon.cli("verify", new[0], socket="verify")
    daemon.cli("delete", made[1][0], "--yes")
    daemon.cli("verify", made[1][1], socket="verify")  # now NOT_FOUND
    daemon.cli("verify", made[2][1][:-1] + "x", socket="verify")  # bad checksum
    wait_for(lambda: len(daemon.events("verification_success")) >= 4, 5,
             what="verification_success log lines")
    assert daemon.events("key_created") and daemon.events("key_rotated")
    log = daemon.raw_log()
    for _, secret in made:
        assert secret not in log
        assert secret[8:] not in log
    assert new[0] not in log
    for e in daemon.events("verification_failed"):
        assert len(e.get("key_prefix", "")) <= 8, e


def test_timeout_on_silent_daemon(tmpdir_e2e):
    import socket as so
    path = os.path.join(tmpdir_e2e, "silent.sock")
    srv = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    try:
        t0 = time.monotonic()
        res = run_cli([HEARE_AUTH, "--socket", path, "--timeout", "500", "list"], timeout=20)
        elapsed = time.monotonic() - t0
        assert res.returncode == 3, res
        assert elapsed < 5, elapsed
        assert res.stderr.strip()
    finally:
        srv.close()


def test_verify_output_never_echoes_the_key(daemon):
    key_id, secret = create(daemon, "echo")
    daemon.cli("delete", key_id, "--yes")
    for args in (["verify", secret], ["--json", "verify", secret]):
        res = daemon.cli(*args, socket="verify")
        assert res.returncode == 1, res
        assert secret not in res.stdout and secret not in res.stderr, res
    res = daemon.cli("verify", input=secret[:-1] + "!", socket="verify")
    assert res.returncode == 1
    assert secret[:-1] not in res.stdout + res.stderr
