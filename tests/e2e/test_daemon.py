"""heare-authd as a process (SPEC §5, §9, §10): socket activation, binding, signals,
readiness, configuration and logs."""
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import HEARE_AUTHD, Daemon, Varlink, ok, sanitizer_setenv_args, wait_for

SPEC_KEYS = [
    "store", "s3-region", "s3-endpoint", "s3-addressing", "s3-sse", "poll-interval", "cache",
    "verify-socket", "admin-socket", "http-listen", "admin-users", "admin-groups",
    "log-format", "log-level", "log-verify", "metrics-url", "metrics-secret",
    "metrics-prefix", "metrics-interval", "max-failures-per-minute", "idle-timeout",
    "message-timeout", "threads",
]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HEARE_", "S3_", "AWS_", "NOTIFY_", "LISTEN_", "JOURNAL_"))
           and k not in ("HTTP_LISTEN", "PROTOCOL", "DEST_HOST", "DEST_PORT", "SECRET")}
    env.update(extra)
    return env


def authd(*args, env=None, timeout=20):
    return subprocess.run([HEARE_AUTHD, *args], capture_output=True, text=True,
                          timeout=timeout, env=env or clean_env(), stdin=subprocess.DEVNULL)


def test_socket_activation(make_daemon):
    d = make_daemon(start=False)
    argv = ["systemd-socket-activate", "-l", d.verify_sock, "-l", d.admin_sock,
            "--fdname=verify:admin", "-E", None, *sanitizer_setenv_args(),
            HEARE_AUTHD, "--store", d.store_url, "--cache", d.cache_path,
            "--poll-interval", "1s", "--threads", "2"]
    notify = os.path.join(d.dir, "notify.sock")
    argv[argv.index(None)] = "NOTIFY_SOCKET=" + notify
    d.spawn(argv, wait_ready=False)
    wait_for(lambda: os.path.exists(d.verify_sock) and os.path.exists(d.admin_sock), 10,
             what="systemd-socket-activate's sockets")
    # the first connection starts the daemon; it must answer that very connection
    with d.connect("verify", timeout=15) as c:
        p = ok(c.call("io.heare.Auth.GetHealth", {}))
    assert p["status"] == "healthy"
    d.wait_ready()

    key, secret = d.create("activated")
    assert d.verify(secret, socket_="verify")["code"] == "VALID"
    assert d.verify(secret, socket_="admin")["code"] == "VALID"
    r = d.call("io.heare.AuthAdmin.CreateKey", {"name": "via-verify"}, "verify")
    assert r.get("error") == "io.heare.AuthAdmin.PermissionDenied", r
    r = d.call("io.heare.AuthAdmin.ListKeys", {}, "admin")
    assert [k["id"] for k in ok(r)["keys"]] == [key["id"]]
    # the admin fd serves the admin interface
    info = ok(d.call("org.varlink.service.GetInfo", {}, "admin"))
    assert "io.heare.AuthAdmin" in info["interfaces"]

    assert d.stop() == 0
    assert d.notified("STOPPING=1")


def test_sigterm_exits_zero_with_stopping(daemon):
    assert any("STATUS=" in n for n in daemon.notifications), daemon.notifications
    key, secret = daemon.create("x")
    assert daemon.verify(secret)["code"] == "VALID"
    t0 = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - t0 < 6
    assert daemon.notified("STOPPING=1"), daemon.notifications
    assert daemon.events("shutdown") or "stop" in daemon.raw_log().lower()


def test_sigterm_with_open_idle_connection(daemon):
    with daemon.connect("verify") as c:
        ok(c.call("io.heare.Auth.GetHealth", {}))
        t0 = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - t0 < 7


def test_second_daemon_refuses_live_sockets(make_daemon):
    d1 = make_daemon()
    key, secret = d1.create("first")
    d2 = make_daemon(start=False)
    d2.verify_sock, d2.admin_sock = d1.verify_sock, d1.admin_sock
    d2.start(wait_ready=False)
    try:
        rc = d2.proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail("a second daemon on live sockets did not exit within 10s")
    assert rc != 0
    log = d2.raw_log()
    assert d1.verify_sock in log or d1.admin_sock in log, log
    assert not d2.notified("READY=1")
    # the first one keeps serving on both sockets
    assert d1.verify(secret)["code"] == "VALID"
    assert d1.health("admin")["status"] == "healthy"
    assert d1.proc.poll() is None


def make_stale(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens
    assert os.path.exists(path)


def test_stale_socket_is_replaced(make_daemon):
    d = make_daemon(start=False)
    make_stale(d.verify_sock)
    make_stale(d.admin_sock)
    d.start()
    assert d.health()["status"] == "healthy"
    assert d.health("admin")["status"] == "healthy"
    assert oct(os.stat(d.verify_sock).st_mode & 0o777) == oct(0o660)
    assert oct(os.stat(d.admin_sock).st_mode & 0o777) == oct(0o600)


def test_socket_directory_is_created(make_daemon):
    d = make_daemon(start=False)
    d.verify_sock = os.path.join(d.dir, "run", "sub", "verify.sock")
    d.admin_sock = os.path.join(d.dir, "run", "sub", "admin.sock")
    d.start()
    assert d.health()["status"] == "healthy"
    assert d.health("admin")["status"] == "healthy"


def test_regular_file_at_socket_path_is_not_replaced(make_daemon):
    d = make_daemon(start=False)
    with open(d.verify_sock, "w") as f:
        f.write("precious\n")
    d.start(wait_ready=False)
    try:
        rc = d.proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail("daemon started over a regular file at its socket path")
    assert rc != 0
    with open(d.verify_sock) as f:
        assert f.read() == "precious\n"


def test_failed_start_leaves_no_socket_behind(make_daemon):
    # The verify socket is bound, then the admin path is refused: the daemon that does not
    # start removes the socket it had bound (and, under the sanitizers, frees its path).
    d = make_daemon(start=False)
    with open(d.admin_sock, "w") as f:
        f.write("precious\n")
    d.start(wait_ready=False)
    try:
        rc = d.proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail("daemon started over a regular file at its admin socket path")
    assert rc != 0
    assert "listening on " + d.verify_sock in d.raw_log()
    assert not os.path.exists(d.verify_sock)
    with open(d.admin_sock) as f:
        assert f.read() == "precious\n"


def write_conf(d, text):
    path = os.path.join(d, "heare-authd.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def test_check_config_ok(tmpdir_e2e):
    store = "file://" + os.path.join(tmpdir_e2e, "keys.json")
    conf = write_conf(tmpdir_e2e, f"# a comment\n\nstore = {store}\npoll-interval = 5s\n"
                                  "log-verify = failures\n")
    res = authd("--config", conf, "--check-config")
    assert res.returncode == 0, res
    assert re.search(r"^store = " + re.escape(store) + r"$", res.stdout, re.M), res.stdout
    assert re.search(r"^log-verify = failures$", res.stdout, re.M), res.stdout
    assert re.search(r"^poll-interval = ", res.stdout, re.M), res.stdout
    # every key is printed
    for key in SPEC_KEYS:
        assert re.search(r"^" + re.escape(key) + r" =( |$)", res.stdout, re.M), (key, res.stdout)
    # the environment overrides the file, a flag overrides both
    env_store = "file://" + os.path.join(tmpdir_e2e, "env.json")
    flag_store = "file://" + os.path.join(tmpdir_e2e, "flag.json")
    res = authd("--config", conf, "--check-config", env=clean_env(HEARE_AUTH_STORE=env_store))
    assert res.returncode == 0, res
    assert re.search(r"^store = " + re.escape(env_store) + r"$", res.stdout, re.M), res.stdout
    res = authd("--config", conf, "--store", flag_store, "--check-config",
                env=clean_env(HEARE_AUTH_STORE=env_store))
    assert res.returncode == 0, res
    assert re.search(r"^store = " + re.escape(flag_store) + r"$", res.stdout, re.M), res.stdout
    # S3_BUCKET + S3_KEY (compat) mean s3://BUCKET/KEY
    res = authd("--config", conf, "--check-config",
                env=clean_env(S3_BUCKET="my-bucket", S3_KEY="prod/keys.json"))
    if res.returncode == 0:
        assert re.search(r"^store = s3://my-bucket/prod/keys\.json$", res.stdout, re.M), \
            res.stdout


def test_check_config_errors(tmpdir_e2e):
    conf = write_conf(tmpdir_e2e, "# header\nstore = file:///tmp/x.json\nbogus-key = 1\n")
    res = authd("--config", conf, "--check-config")
    assert res.returncode == 2, res
    assert f"{conf}:3" in res.stderr, res.stderr
    assert "bogus-key" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr

    conf = write_conf(tmpdir_e2e, "store = file:///tmp/x.json\npoll-interval = banana\n")
    res = authd("--config", conf, "--check-config")
    assert res.returncode == 2, res
    assert f"{conf}:2" in res.stderr and "poll-interval" in res.stderr, res.stderr

    conf = write_conf(tmpdir_e2e, "this line has no equals sign\n")
    res = authd("--config", conf, "--check-config")
    assert res.returncode == 2, res
    assert f"{conf}:1" in res.stderr, res.stderr

    # the daemon does not start half-configured either
    res = authd("--config", conf, timeout=20)
    assert res.returncode == 2, res

    res = authd("--poll-interval", "banana", "--check-config")
    assert res.returncode == 2, res
    assert "poll-interval" in res.stderr, res.stderr
    res = authd("--idle-timeout", "-5s", "--check-config")
    assert res.returncode == 2, res
    res = authd("--log-verify", "sometimes", "--check-config")
    assert res.returncode == 2, res
    assert "log-verify" in res.stderr
    res = authd("--threads", "zero", "--check-config")
    assert res.returncode == 2, res
    res = authd("--no-such-flag", "--check-config")
    assert res.returncode == 2, res

    missing = os.path.join(tmpdir_e2e, "missing.conf")
    res = authd("--config", missing, "--check-config")
    assert res.returncode == 2, res
    assert missing in res.stderr, res.stderr


def test_default_config_may_be_missing(tmpdir_e2e):
    assert not os.path.exists("/etc/heare-auth/heare-authd.conf"), "test needs no real config"
    res = authd("--store", "file://" + os.path.join(tmpdir_e2e, "k.json"), "--check-config")
    assert res.returncode == 0, res


def test_help_lists_every_key():
    res = authd("--help")
    assert res.returncode == 0, res
    for key in SPEC_KEYS:
        assert f"--{key}" in res.stdout, key
    for flag in ("--config", "--check-config", "--foreground", "--verbose", "--version"):
        assert flag in res.stdout, flag
    res = authd("--version")
    assert res.returncode == 0 and re.search(r"\d+\.\d+", res.stdout), res


def test_logs(daemon):
    key, secret = daemon.create("logged", metadata={"team": "x"})
    daemon.verify(secret, user_agent="e2e-agent/1.0")
    daemon.verify("sec_1" + "Z" * 38)
    ok(daemon.call("io.heare.AuthAdmin.UpdateKey", {"id": key["id"], "name": "logged2"}))
    rot = ok(daemon.call("io.heare.AuthAdmin.RotateKey", {"id": key["id"]}))
    ok(daemon.call("io.heare.AuthAdmin.DeleteKey", {"id": key["id"]}))
    wait_for(lambda: daemon.events("key_deleted"), 5, what="the key_deleted log line")

    succ = daemon.events("verification_success")
    assert len(succ) == 1, succ
    e = succ[0]
    assert e["key_id"] == key["id"] and e["key_name"] == "logged"
    assert e["user_agent"] == "e2e-agent/1.0"
    assert e["level"] == "info"
    assert isinstance(e["timestamp"], str) and e["timestamp"]

    fail = daemon.events("verification_failed")
    assert len(fail) == 1, fail
    assert fail[0]["key_prefix"] == "sec_1ZZZ"
    assert fail[0]["code"] in ("MALFORMED", "NOT_FOUND")

    for name in ("key_created", "key_updated", "key_rotated", "key_deleted"):
        ev = daemon.events(name)
        assert len(ev) == 1, (name, daemon.raw_log())
        assert ev[0]["key_id"] == key["id"], ev
        assert ev[0]["peer_uid"] == os.getuid(), ev
        assert ev[0]["peer_pid"] == os.getpid(), ev
    log = daemon.raw_log()
    assert secret not in log and rot["secret"] not in log
    # every stderr line is one JSON object
    for line in log.splitlines():
        if line.strip():
            assert line.startswith("{") and line.rstrip().endswith("}"), line


@pytest.mark.parametrize("mode", ["failures", "none"])
def test_log_verify_modes(make_daemon, mode):
    d = make_daemon(extra_args=["--log-verify", mode])
    key, secret = d.create("quiet")
    d.verify(secret)
    d.verify("sec_1" + "Y" * 38)
    d.create("marker")  # audit lines still come, and mark that the verifies are done
    wait_for(lambda: len(d.events("key_created")) == 2, 5, what="audit lines")
    time.sleep(0.2)
    assert d.events("verification_success") == []
    assert len(d.events("verification_failed")) == (1 if mode == "failures" else 0)


def test_failed_attempt_throttle(make_daemon):
    d = make_daemon(extra_args=["--max-failures-per-minute", "5"])
    key, secret = d.create("victim")
    codes = [d.verify("sec_1" + str(i) * 38)["code"] for i in range(8)]
    assert "RATE_LIMITED" in codes[5:], codes
    assert d.verify(secret)["code"] == "RATE_LIMITED"


def test_verbose_and_foreground_flags(make_daemon):
    d = make_daemon(extra_args=["-f", "-v"])
    assert d.health()["status"] == "healthy"
    assert d.proc.poll() is None  # never forks: the process we started is the daemon


def test_config_file_drives_the_daemon(make_daemon):
    d = make_daemon(start=False)
    conf = write_conf(d.dir, f"store = {d.store_url}\ncache = {d.cache_path}\n"
                             f"verify-socket = {d.verify_sock}\n"
                             f"admin-socket = {d.admin_sock}\n"
                             "poll-interval = 1s\nthreads = 2\nlog-verify = none\n")
    d.spawn([HEARE_AUTHD, "--config", conf])
    key, secret = d.create("from-conf")
    assert d.verify(secret)["code"] == "VALID"
    assert d.health()["store"] == d.store_url
    assert d.events("verification_success") == []  # log-verify = none from the file
    assert d.stop() == 0


def test_sighup_with_corrupt_store_keeps_serving(make_daemon):
    d = make_daemon(poll_interval="1h")
    key, secret = d.create("survivor")
    with open(d.store_path, "w") as f:
        f.write("{garbage")
    d.signal(signal.SIGHUP)
    wait_for(lambda: d.health()["status"] == "degraded", 5, what="degraded after SIGHUP")
    assert d.verify(secret)["code"] == "VALID"
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_admin_writes_under_load_on_many_loops(make_daemon):
    """Every admin write wakes every serving loop; with many loops busy verifying at the
    same time this once corrupted the heap (the loops' queues were built on the main
    thread and shared its h2o allocator). The daemon must survive and exit cleanly."""
    d = make_daemon(extra_args=["--threads", "6"])
    _, secret = d.create("steady")
    stop = threading.Event()
    errors = []

    def verifier():
        try:
            while not stop.is_set():
                assert d.verify(secret)["code"] == "VALID"
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def writer(n):
        try:
            for i in range(50):
                d.create(f"burst-{n}-{i}")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    readers = [threading.Thread(target=verifier) for _ in range(4)]
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    for t in readers:
        t.join(10)
    assert not errors, errors
    keys = d.call("io.heare.AuthAdmin.ListKeys", {})["parameters"]["keys"]
    assert len(keys) == 1 + 6 * 50
    assert d.stop() == 0
