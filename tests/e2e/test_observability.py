"""Observability (SPEC §9): the metrics push to real peers (Etsy's statsd over UDP, an HTTP
receiver), /metrics accepted by promtool, GetMetrics and health --verbose, the watchdog fed
only while every serving loop progresses, the native journal protocol, and no secret in any
log line, metric or error of a whole run."""
import ctypes
import glob
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import (HEARE_AUTHD, ROOT, http_daemon_args, http_request, ok, run_cli,
                      v2_key, wait_for)

STATSD_DIR = os.path.join(ROOT, "tests", "statsd")


def start_with_env(d, **extra):
    """Starts d's daemon with extra environment variables."""
    env = d.env(d._open_notify())
    env.update(extra)
    d._log_file = open(d.log_path, "ab")
    d.proc = subprocess.Popen([HEARE_AUTHD] + d.base_args(), env=env, stdout=d._log_file,
                              stderr=d._log_file, stdin=subprocess.DEVNULL)
    d.wait_ready()


def metric_lines(payload):
    return [l for l in payload.split("\n") if l]


# -- StatsD over UDP, to Etsy's statsd --------------------------------------------------------

class Statsd:
    """Etsy's statsd (npm, pinned by tests/statsd/package-lock.json) on loopback; its
    management port answers "counters" and "gauges"."""

    def __init__(self, tmpdir):
        main = os.path.join(STATSD_DIR, "node_modules", "statsd", "stats.js")
        assert os.path.exists(main), "statsd is missing: tests/run installs it (tests/npm-peers)"
        self.port = _free_udp_port()
        self.mgmt = _free_tcp_port()
        conf = os.path.join(tmpdir, "statsd.js")
        with open(conf, "w") as f:
            f.write("{ port: %d, mgmt_port: %d, address: '127.0.0.1', mgmt_address: '127.0.0.1',"
                    " flushInterval: 3600000, backends: [], deleteCounters: false }"
                    % (self.port, self.mgmt))
        self.log = open(os.path.join(tmpdir, "statsd.out"), "wb")
        self.proc = subprocess.Popen(["node", main, conf], cwd=os.path.dirname(main),
                                     stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        wait_for(self._up, 15, what="statsd's management port")

    def _up(self):
        assert self.proc.poll() is None, "statsd exited"
        try:
            with socket.create_connection(("127.0.0.1", self.mgmt), timeout=0.5):
                return True
        except OSError:
            return False

    def admin(self, command):
        with socket.create_connection(("127.0.0.1", self.mgmt), timeout=5) as s:
            s.sendall(command.encode() + b"\n")
            data = b""
            while not data.rstrip().endswith(b"END"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data.decode()

    def value(self, command, name):
        """A counter's or gauge's value from statsd's dump ({ 'name': 3, ... })."""
        m = re.search(r"'%s': ([0-9.e+-]+)" % re.escape(name), self.admin(command))
        return float(m.group(1)) if m else None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def statsd(tmpdir_e2e):
    s = Statsd(tmpdir_e2e)
    yield s
    s.stop()


def test_udp_push_reaches_statsd(make_daemon, statsd):
    d = make_daemon(extra_args=["--metrics-url", f"udp://127.0.0.1:{statsd.port}",
                                "--metrics-interval", "1s", "--metrics-prefix", "ha"])
    wait_for(lambda: statsd.value("counters", "ha.startup") == 1, 10, what="startup counter")
    _, secret = d.create("pushed")
    for _ in range(3):
        assert d.verify(secret)["code"] == "VALID"
    d.verify("sec_1" + "Q" * 38)
    d.health()
    wait_for(lambda: statsd.value("counters", "ha.verify.requests") == 4, 10,
             what="verify.requests == 4 at statsd")
    assert statsd.value("counters", "ha.verify.success") == 3
    assert statsd.value("counters", "ha.verify.failure") == 1
    assert statsd.value("counters", "ha.health.requests") >= 1
    assert statsd.value("counters", "ha.refresh.success") >= 1
    assert statsd.value("gauges", "ha.keys.count") == 1
    assert "ha.verify.duration" in statsd.admin("timers")
    assert d.stop() == 0
    wait_for(lambda: statsd.value("counters", "ha.shutdown") == 1, 5, what="shutdown counter")


def test_compat_environment_configures_the_push(make_daemon, statsd):
    d = make_daemon(start=False)
    start_with_env(d, PROTOCOL="udp", DEST_HOST="127.0.0.1", DEST_PORT=str(statsd.port))
    wait_for(lambda: statsd.value("counters", "heare-auth.startup") == 1, 10,
             what="startup pushed with the Python service's PROTOCOL/DEST_HOST/DEST_PORT")


# -- StatsD over HTTP ------------------------------------------------------------------------

class Receiver(http.server.BaseHTTPRequestHandler):
    posts = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        type(self).posts.append((self.headers.get("Authorization"),
                                 self.headers.get("Content-Type"), body))
        status = 503 if self.server.fail else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def receiver():
    Receiver.posts = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    srv.fail = False
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_http_push_batches_with_the_bearer_token(make_daemon, receiver):
    token = "push-token-" + os.urandom(8).hex()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/ingest"
    d = make_daemon(extra_args=["--metrics-url", url, "--metrics-secret", token,
                                "--metrics-interval", "1s"])
    d.watch(token)
    wait_for(lambda: Receiver.posts, 10, what="the first push")
    auth, ctype, body = Receiver.posts[0]
    assert auth == f"Bearer {token}"
    assert ctype == "text/plain"
    lines = metric_lines(body)
    assert "heare-auth.startup:1|c" in lines
    assert "heare-auth.keys.count:0|g" in lines
    # one POST carries every line of an interval
    _, secret = d.create("k")
    for _ in range(5):
        d.verify(secret)
    def batch():
        for _, _, b in Receiver.posts:
            if "heare-auth.verify.requests:5|c" in metric_lines(b):
                return metric_lines(b)
    lines = wait_for(batch, 10, what="a batch with 5 verifications")
    assert "heare-auth.verify.success:5|c" in lines
    assert any(l.startswith("heare-auth.verify.duration:") and l.endswith("|ms") for l in lines)
    assert "heare-auth.keys.count:1|g" in lines
    # failures are counted and dropped, and the daemon goes on
    receiver.fail = True
    n = len(Receiver.posts)
    wait_for(lambda: len(Receiver.posts) >= n + 2, 10, what="pushes while failing")
    samples = {(m["name"], m["labels"].get("result")): m["value"] for m in
               ok(d.call("io.heare.AuthAdmin.GetMetrics", {}))["metrics"]}
    assert samples[("heare_auth_metrics_pushes_total", "error")] >= 1
    assert d.verify(secret)["code"] == "VALID"
    assert len([e for e in d.logs() if "metrics push" in e.get("event", "")]) == 1
    receiver.fail = False
    # the last batch, with "shutdown", is sent before the daemon exits
    assert d.stop() == 0
    assert "heare-auth.shutdown:1|c" in metric_lines(Receiver.posts[-1][2])
    assert token not in d.raw_log()


def test_push_target_down_never_blocks_verify(make_daemon):
    # nothing listens there: UDP sends fail or vanish, HTTP connects are refused
    port = _free_tcp_port()
    d = make_daemon(extra_args=["--metrics-url", f"http://127.0.0.1:{port}/x",
                                "--metrics-interval", "1s"])
    _, secret = d.create("k")
    started = time.monotonic()
    for _ in range(50):
        assert d.verify(secret)["code"] == "VALID"
    assert time.monotonic() - started < 5
    wait_for(lambda: [e for e in d.logs() if "metrics push" in e.get("event", "")], 10,
             what="the push failure logged once")
    assert d.stop() == 0


def test_unresolvable_push_host_costs_pushes_not_the_daemon(make_daemon):
    d = make_daemon(extra_args=["--metrics-url", "udp://no-such-host.invalid:8125",
                                "--metrics-interval", "1s"])
    _, secret = d.create("k")
    assert d.verify(secret)["code"] == "VALID"

    def failures():
        for m in ok(d.call("io.heare.AuthAdmin.GetMetrics", {}))["metrics"]:
            if m["name"] == "heare_auth_metrics_pushes_total" and \
                    m["labels"].get("result") == "error":
                return m["value"] >= 2
    wait_for(failures, 10, what="failed pushes counted")
    logged = [e for e in d.logs() if "metrics push" in e.get("event", "")]
    assert len(logged) == 1 and "no-such-host.invalid" in logged[0]["event"]
    assert d.stop() == 0


# -- /metrics, GetMetrics, health --verbose ----------------------------------------------------

def test_prometheus_exposition_passes_promtool(make_daemon):
    args, (host, port) = http_daemon_args()
    d = make_daemon(extra_args=args)
    _, secret = d.create("k")
    d.verify(secret)
    d.verify("sec_1" + "R" * 38)
    text = http_request(host, port, "GET", "/metrics").body
    res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr.decode() + res.stdout.decode()
    assert not res.stdout.strip() and not res.stderr.strip(), res
    t = text.decode()
    for name in ("heare_auth_verify_total", "heare_auth_verify_duration_seconds",
                 "heare_auth_keys", "heare_auth_store_reads_total",
                 "heare_auth_store_writes_total", "heare_auth_build_info"):
        assert f"# TYPE {name} " in t and f"# HELP {name} " in t
    buckets = re.findall(r'heare_auth_verify_duration_seconds_bucket\{le="([^"]+)"\} (\d+)', t)
    assert buckets[0][0] == "1e-06" and buckets[-1] == ("+Inf", "2")
    assert re.search(r"^heare_auth_verify_duration_seconds_count 2$", t, re.M)
    assert re.search(r'^heare_auth_status\{status="healthy"\} 1$', t, re.M)
    assert re.search(r'^heare_auth_status\{status="degraded"\} 0$', t, re.M)


def test_documented_alert_rules_are_valid():
    res = subprocess.run(["promtool", "check", "rules",
                          os.path.join(ROOT, "docs", "heare-auth.rules.yml")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 2 rules found" in res.stdout


def test_get_metrics_and_health_verbose_match_prometheus(make_daemon):
    args, (host, port) = http_daemon_args()
    d = make_daemon(extra_args=args)
    _, secret = d.create("k")
    for _ in range(2):
        d.verify(secret)
    samples = ok(d.call("io.heare.AuthAdmin.GetMetrics", {}))["metrics"]
    by = {(m["name"], tuple(sorted(m["labels"].items()))): m["value"] for m in samples}
    assert by[("heare_auth_verify_total", (("code", "VALID"),))] == 2
    assert by[("heare_auth_keys", ())] == 1
    # the verify socket does not offer it
    err = d.call("io.heare.AuthAdmin.GetMetrics", {}, "verify")
    assert err["error"] == "io.heare.AuthAdmin.PermissionDenied"
    # health --verbose: the same samples, on a host without HTTP too
    res = d.cli("health", "--verbose", socket=None)
    assert res.returncode == 0, res.stderr
    assert 'heare_auth_verify_total{code="VALID"} 2' in res.stdout
    assert "heare_auth_verify_duration_seconds_bucket{le=\"+Inf\"} 2" in res.stdout
    res = d.cli("--json", "health", "--verbose", socket=None)
    doc = json.loads(res.stdout)
    assert doc["status"] == "healthy" and len(doc["metrics"]) == len(samples)
    res = d.cli("--store", d.store_url, "health", "--verbose", socket=None)
    assert res.returncode == 2 and "--verbose" in res.stderr


# -- the watchdog ----------------------------------------------------------------------------

libc = ctypes.CDLL(None, use_errno=True)
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH = 0x4206, 0x4207, 17


def thread_ids(pid, name):
    out = []
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            with open(os.path.join(task, "comm")) as f:
                if f.read().strip() == name:
                    out.append(int(os.path.basename(task)))
        except OSError:
            pass
    return out


def test_watchdog_pings_stop_when_a_loop_is_stuck(make_daemon):
    d = make_daemon(start=False)
    start_with_env(d, WATCHDOG_USEC="1000000")

    def pings():
        return sum(n.split("\n").count("WATCHDOG=1") for n in list(d.notifications))

    # fed at about half the interval
    start = pings()
    time.sleep(2.2)
    fed = pings() - start
    assert 3 <= fed <= 6, fed

    # freeze one serving loop (the thread alone: ptrace seize + interrupt)
    tids = thread_ids(d.proc.pid, "heare-loop-0")
    assert len(tids) == 1, "the serving loops name their threads heare-loop-N"
    tid = tids[0]
    assert libc.ptrace(PTRACE_SEIZE, tid, None, None) == 0, os.strerror(ctypes.get_errno())
    try:
        assert libc.ptrace(PTRACE_INTERRUPT, tid, None, None) == 0
        os.waitpid(tid, 0x40000000)  # __WALL: the stop
        time.sleep(1.2)  # the heartbeat goes stale
        before = pings()
        time.sleep(2.0)
        assert pings() == before, "the watchdog was fed while a loop was stuck"
        assert wait_for(lambda: [e for e in d.logs() if "no progress" in e.get("event", "")],
                        5, what="the stuck loop logged")
        # the other loop still answers
        assert d.health()["status"] == "healthy"
    finally:
        libc.ptrace(PTRACE_DETACH, tid, None, None)
    # unstuck: pings resume
    before = pings()
    wait_for(lambda: pings() > before, 5, what="pings after the loop resumed")
    assert d.stop() == 0


# -- journald's native protocol ----------------------------------------------------------------

JOURNAL_SOCKET = "/run/systemd/journal/socket"


@pytest.fixture
def fake_journal():
    """Stands in for journald where none runs (no systemd as PID 1): a datagram socket at
    its path that collects the entries. With a real journald, the test uses journalctl."""
    if os.path.exists(JOURNAL_SOCKET):
        pytest.fail("a journald runs here: this test expects to own its socket (CI has none)")
    os.makedirs(os.path.dirname(JOURNAL_SOCKET), exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(JOURNAL_SOCKET)
    s.settimeout(0.2)
    entries = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                data = s.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = {}
            for line in data.split(b"\n"):
                if b"=" in line:
                    k, _, v = line.partition(b"=")
                    fields[k.decode()] = v.decode(errors="replace")
            entries.append(fields)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    yield entries
    stop.set()
    t.join(2)
    s.close()
    os.unlink(JOURNAL_SOCKET)


def test_journal_fields(make_daemon, fake_journal):
    # One entry per verification: log-verify=all, not the journal's default (summary).
    d = make_daemon(extra_args=["--log-format", "journal", "--log-verify", "all"])
    key, secret = d.create("journaled")
    d.verify(secret, user_agent="jprobe/1")
    d.verify("sec_1" + "J" * 38)

    def find(event):
        return [e for e in fake_journal if e.get("HEARE_EVENT") == event]

    ok_e = wait_for(lambda: find("verification_success"), 5, what="success entry")[0]
    assert ok_e["HEARE_KEY_ID"] == key["id"]
    assert ok_e["HEARE_KEY_NAME"] == "journaled"
    assert ok_e["HEARE_USER_AGENT"] == "jprobe/1"
    assert ok_e["HEARE_PEER_UID"] == str(os.getuid())
    assert ok_e["HEARE_PEER_PID"] == str(os.getpid())
    assert ok_e["PRIORITY"] == "6" and ok_e["MESSAGE"]
    bad = wait_for(lambda: find("verification_failed"), 5, what="failure entry")[0]
    assert bad["HEARE_KEY_PREFIX"] == "sec_1JJJ"
    audit = wait_for(lambda: find("key_created"), 5, what="audit entry")[0]
    assert audit["HEARE_KEY_ID"] == key["id"] and audit["HEARE_PEER_UID"] == str(os.getuid())
    d.call("io.heare.AuthAdmin.UpdateKey", {"id": key["id"], "name": "renamed",
                                            "scopes": ["x.y"]})
    upd = wait_for(lambda: find("key_updated"), 5, what="update audit entry")[0]
    assert set(upd["HEARE_CHANGED"].split(",")) == {"name", "scopes"}
    assert upd["HEARE_PEER_PID"] == str(os.getpid())
    for e in fake_journal:
        assert secret not in json.dumps(e)


UNKNOWN_CODES = {"NOT_FOUND", "MALFORMED", "RATE_LIMITED"}


def test_journal_default_is_a_summary_per_key_and_peer(make_daemon, fake_journal):
    """Logging to the journal, verifications are summed (log-verify=auto): one entry per key
    and peer an interval with the counts by code; failures also one by one, at most 10 a
    second; audit events as ever."""
    # A long interval: the lines are written when the daemon stops, all in one interval.
    d = make_daemon(extra_args=["--log-format", "journal", "--metrics-interval", "1h"])
    key, secret = d.create("summed")
    for _ in range(5):
        assert d.verify(secret)["code"] == "VALID"
    assert d.verify(secret, scope="not.granted")["code"] == "FORBIDDEN"
    for _ in range(40):
        assert d.verify("sec_1" + "Q" * 38)["code"] in UNKNOWN_CODES

    def find(event):
        return [e for e in fake_journal if e.get("HEARE_EVENT") == event]

    def summaries():
        return [e for e in find("verification_summary") if e.get("HEARE_COUNTS")]

    assert not summaries()
    d.stop()
    wait_for(lambda: len(summaries()) >= 2, 5, what="summary entries")
    time.sleep(0.5)
    assert len(summaries()) == 2, summaries()
    by_key = {e.get("HEARE_KEY_ID"): json.loads(e["HEARE_COUNTS"]) for e in summaries()}
    assert by_key[key["id"]] == {"VALID": 5, "FORBIDDEN": 1}, by_key
    unknown = by_key[None]  # no key_id: the unknown keys of this peer
    assert sum(unknown.values()) == 40 and set(unknown) <= UNKNOWN_CODES
    for e in summaries():
        assert e["HEARE_PEER_UID"] == str(os.getuid()) and e["PRIORITY"] == "6"
    assert not find("verification_success")
    # 41 failures in well under two seconds: at most 10 a second on lines of their own.
    assert 1 <= len(find("verification_failed")) <= 20
    assert find("key_created")
    for e in fake_journal:
        assert secret not in json.dumps(e)


def test_summary_keeps_to_500_lines_an_interval(make_daemon):
    """600 keys verified once each: 499 lines for the busiest pairs and one, key_id "*",
    summing the rest."""
    keys = [v2_key(f"k{i}") for i in range(600)]
    d = make_daemon(store_doc={"version": 2, "keys": [k for k, _ in keys]},
                    extra_args=["--log-verify", "summary", "--metrics-interval", "1h"])
    busy_key, busy_secret = keys[0]
    with d.connect("verify") as c:
        for _ in range(3):
            c.send("io.heare.Auth.Verify", {"key": busy_secret})
            assert ok(c.recv())["code"] == "VALID"
        for _, secret in keys[1:]:
            c.send("io.heare.Auth.Verify", {"key": secret})
            assert ok(c.recv())["code"] == "VALID"

    d.stop()  # writes the interval's lines
    got = d.events("verification_summary")
    assert len(got) == 500, len(got)
    rest = [e for e in got if e.get("key_id") == "*"]
    assert len(rest) == 1 and rest[0]["counts"] == {"VALID": 602 - 499 - 2}, rest
    busiest = [e for e in got if e.get("key_id") == busy_key["id"]]
    assert busiest and busiest[0]["counts"] == {"VALID": 3}
    assert sum(sum(e["counts"].values()) for e in got) == 602
    assert not d.events("verification_success")


# -- no secret anywhere ------------------------------------------------------------------------

def test_no_secret_in_any_output_of_a_full_run(make_daemon, receiver, tmpdir_e2e):
    """Creates, rotates, verifies (Varlink, HTTP, CLI), fails, pushes metrics and reads them
    back, then greps everything captured for every secret the run saw."""
    token = "metrics-secret-" + os.urandom(8).hex()
    args, (host, port) = http_daemon_args()
    d = make_daemon(extra_args=args + [
        "--metrics-url", f"http://127.0.0.1:{receiver.server_address[1]}/m",
        "--metrics-secret", token, "--metrics-interval", "1s", "--log-level", "debug"])
    secrets = {token}
    captured = []

    key, s1 = d.create("full-run", scopes=["a.b"], rate_limit={"per_second": 1, "burst": 1})
    secrets.add(s1)
    rot = ok(d.call("io.heare.AuthAdmin.RotateKey", {"id": key["id"], "grace_seconds": 0}))
    s2 = rot["secret"]
    secrets.add(s2)
    res = d.cli("create", "--name", "cli-made")
    captured.append(res.stderr)  # stdout is where create shows the new secret, once
    s3 = re.search(r"sec_[0-9A-Za-z]+", res.stdout).group(0)
    secrets.add(s3)
    for s in (s1, s2, s3, s2 + "x", s2[:-1]):
        captured.append(json.dumps(d.verify(s, scope="a.b")))
        r = http_request(host, port, "POST", "/verify", {"api_key": s, "scope": "a.b"})
        captured.append(r.body.decode() + json.dumps(r.headers))
        r = http_request(host, port, "GET", "/auth", headers={"Authorization": f"Bearer {s}"})
        captured.append(json.dumps(r.headers))
        res = d.cli("verify", "-", input=s + "\n", socket="verify")
        captured += [res.stdout, res.stderr]
        res = d.cli("verify", s, "--scope", "nope", socket="verify")
        captured += [res.stdout, res.stderr]
    secrets.update({s2 + "x", s2[:-1]})
    res = d.cli("call", "io.heare.Auth.Verify", json.dumps({"key": s1, "bogus": 1}))
    captured += [res.stdout, res.stderr]
    captured.append(http_request(host, port, "GET", "/metrics").body.decode())
    captured.append(json.dumps(ok(d.call("io.heare.AuthAdmin.GetMetrics", {}))))
    res = d.cli("health", "--verbose", socket=None)
    captured += [res.stdout, res.stderr]
    res = d.cli("show", key["id"])
    captured += [res.stdout, res.stderr]
    res = d.cli("list")
    captured += [res.stdout, res.stderr]
    res = run_cli(["--socket", d.admin_sock, "--store", "s3://x", "verify", s1])
    captured += [res.stdout, res.stderr]
    wait_for(lambda: len(Receiver.posts) >= 2, 10, what="pushes")
    assert d.stop() == 0
    captured += [b for _, _, b in Receiver.posts]
    captured.append(d.raw_log())
    with open(d.store_path) as f:
        captured.append(f.read())
    with open(d.cache_path) as f:
        captured.append(f.read())

    everything = "\n".join(captured)
    assert len(everything) > 5000
    leaked = [s[:12] + "…" for s in secrets if s in everything]
    assert not leaked, f"secrets found in captured output: {leaked}"
