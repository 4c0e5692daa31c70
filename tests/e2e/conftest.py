"""Shared fixtures for the end-to-end tests: a real heare-authd on temporary sockets,
a raw Varlink client, and the heare-auth CLI, all with timeouts so nothing can hang."""
import datetime
import hashlib
import json
import os
import re
import secrets as pysecrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _binary(env_name, rel):
    path = os.environ.get(env_name)
    if path:
        return path
    for build in ("build-test", "build-h5", "build"):
        cand = os.path.join(ROOT, build, rel)
        if os.access(cand, os.X_OK):
            return cand
    return os.path.join(ROOT, "build", rel)


HEARE_AUTHD = _binary("HEARE_AUTHD", "daemon/heare-authd")
HEARE_AUTH = _binary("HEARE_AUTH", "cli/heare-auth")
HEARE_PAM_MODULE = _binary("HEARE_PAM_MODULE", "pam/pam_heare_auth.so")

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_RE = re.compile(r"key_0[0-9A-Za-z]{18}")
NEW_SECRET_RE = re.compile(r"sec_1[0-9A-Za-z]{38}")
ANY_SECRET_RE = re.compile(r"sec_[0-9A-Za-z]{19,}")
ADMIN_IF = "io.heare.AuthAdmin"
AUTH_IF = "io.heare.Auth"

CALL_TIMEOUT = 10.0
CLI_TIMEOUT = 30.0


def rfc3339(t):
    """Unix seconds -> RFC 3339 UTC with Z, second precision."""
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def base62_decode(s):
    n = 0
    for ch in s:
        n = n * 62 + BASE62.index(ch)
    return n


def random_base62(n):
    return "".join(pysecrets.choice(BASE62) for _ in range(n))


def legacy_id(prefix):
    """A generation-0 id in the Python service's shape: prefix_0 + 8 ts + 10 random."""
    t = int(time.time())
    ts = ""
    for _ in range(8):
        ts = BASE62[t % 62] + ts
        t //= 62
    return f"{prefix}_0{ts}{random_base62(10)}"


def sha256_hex(s):
    return hashlib.sha256(s.encode()).hexdigest()


def v2_key(name, secret=None, key_id=None, **extra):
    """A version-2 store entry with one legacy secret; returns (entry, secret)."""
    secret = secret or legacy_id("sec")
    entry = {
        "id": key_id or legacy_id("key"),
        "name": name,
        "created_at": rfc3339(time.time() - 60),
        "metadata": {},
        "scopes": [],
        "expires_at": None,
        "disabled": False,
        "rate_limit": None,
        "secrets": [{"sha256": sha256_hex(secret), "created_at": rfc3339(time.time() - 60),
                     "expires_at": None}],
    }
    entry.update(extra)
    return entry, secret


def write_json_atomic(path, doc):
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.new"
    with open(tmp, "w") as f:
        if isinstance(doc, str):
            f.write(doc)
        else:
            json.dump(doc, f, indent=2)
    os.replace(tmp, path)


def wait_for(pred, timeout, interval=0.1, what="condition"):
    """Polls pred() until it returns a truthy value; returns it, or fails after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


class VarlinkError(Exception):
    pass


class Varlink:
    """A small raw Varlink client: NUL framing by default, "\\n" framing in line mode."""

    def __init__(self, path, line=False, timeout=CALL_TIMEOUT):
        self.path = path
        self.sep = b"\n" if line else b"\0"
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send_raw(self, data):
        """Sends bytes; returns False if the daemon already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def send(self, method, parameters=None, more=False, oneway=False):
        msg = {"method": method}
        if parameters is not None:
            msg["parameters"] = parameters
        if more:
            msg["more"] = True
        if oneway:
            msg["oneway"] = True
        return self.send_raw(json.dumps(msg).encode() + self.sep)

    def recv_raw(self, timeout=None):
        """One framed message without its separator, or None at EOF."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while self.sep not in self.buf:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply on {self.path} (buffered {self.buf[:200]!r})")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except socket.timeout:
                raise TimeoutError(f"no reply on {self.path} (buffered {self.buf[:200]!r})")
            if not chunk:
                self.eof = True
                if self.sep not in self.buf:
                    return None
            self.buf += chunk
        msg, _, self.buf = self.buf.partition(self.sep)
        return msg

    def recv(self, timeout=None):
        raw = self.recv_raw(timeout)
        if raw is None:
            return None
        return json.loads(raw)

    def at_eof(self, timeout=5.0):
        """True if the daemon closes the connection (with no further message) in time."""
        try:
            return self.recv_raw(timeout) is None
        except TimeoutError:
            return False

    def call(self, method, parameters=None):
        """Full reply message (dict with "parameters" or "error")."""
        self.send(method, parameters)
        reply = self.recv()
        if reply is None:
            raise VarlinkError(f"{method}: connection closed without a reply")
        return reply


def ok(reply):
    """The parameters of a successful reply; fails the test on an error reply."""
    assert "error" not in reply, f"unexpected error reply: {reply}"
    return reply.get("parameters", {})


class Daemon:
    """One heare-authd on a private temp dir."""

    def __init__(self, extra_args=(), poll_interval="1s", store_doc=None, cache_doc=None,
                 start=True, tmpdir=None):
        self.dir = tmpdir or tempfile.mkdtemp(prefix="heare-e2e-")
        os.chmod(self.dir, 0o755)  # so uid nobody can reach the sockets
        self.verify_sock = os.path.join(self.dir, "verify.sock")
        self.admin_sock = os.path.join(self.dir, "admin.sock")
        self.store_path = os.path.join(self.dir, "keys.json")
        self.cache_path = os.path.join(self.dir, "cache.json")
        self.store_url = "file://" + self.store_path
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.poll_interval = poll_interval
        self.extra_args = list(extra_args)
        self.proc = None
        self.notifications = []
        self._notify_sock = None
        self._notify_thread = None
        self._stop_notify = threading.Event()
        self.watched_secrets = set()
        if store_doc is not None:
            write_json_atomic(self.store_path, store_doc)
        if cache_doc is not None:
            write_json_atomic(self.cache_path, cache_doc)
            os.chmod(self.cache_path, 0o600)
        if start:
            self.start()

    # -- process ---------------------------------------------------------------------------

    def base_args(self):
        return ["--store", self.store_url, "--cache", self.cache_path,
                "--verify-socket", self.verify_sock, "--admin-socket", self.admin_sock,
                "--poll-interval", self.poll_interval, "--threads", "2"]

    def _open_notify(self):
        self._close_notify()
        path = os.path.join(self.dir, "notify.sock")
        if os.path.exists(path):
            os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        os.chmod(path, 0o777)
        s.settimeout(0.2)
        self._notify_sock = s
        self._stop_notify.clear()

        def reader():
            while not self._stop_notify.is_set():
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                self.notifications.append(data.decode(errors="replace"))

        self._notify_thread = threading.Thread(target=reader, daemon=True)
        self._notify_thread.start()
        return path

    def notified(self, needle):
        return any(needle in n.split("\n") or needle in n for n in self.notifications)

    def env(self, notify_path):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HEARE_", "S3_", "AWS_", "JOURNAL_", "LISTEN_",
                                    "NOTIFY_", "HTTP_LISTEN", "PROTOCOL", "DEST_"))}
        env["NOTIFY_SOCKET"] = notify_path
        return env

    def spawn(self, argv, wait_ready=True):
        """Starts argv (the daemon, or a wrapper around it) with stderr to the log."""
        notify = self._open_notify()
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=self._log_file, env=self.env(notify),
                                     cwd=self.dir)
        if wait_ready:
            self.wait_ready()
        return self.proc

    def start(self, wait_ready=True):
        return self.spawn([HEARE_AUTHD] + self.base_args() + self.extra_args, wait_ready)

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.notified("READY=1"):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"heare-authd exited with {self.proc.returncode} before READY=1;"
                            f" log:\n{self.raw_log()}")
            time.sleep(0.02)
        pytest.fail(f"no READY=1 from heare-authd within {timeout}s; log:\n{self.raw_log()}")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10.0):
        """SIGTERM; returns the exit code (fails the test if it does not exit in time)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            pytest.fail(f"heare-authd did not exit within {timeout}s of SIGTERM")

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._close_notify()

    def _close_notify(self):
        self._stop_notify.set()
        if self._notify_thread:
            self._notify_thread.join(2)
            self._notify_thread = None
        if self._notify_sock:
            self._notify_sock.close()
            self._notify_sock = None

    def cleanup(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- logs ------------------------------------------------------------------------------

    def raw_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def logs(self):
        """Every stderr line that is a JSON object, parsed."""
        out = []
        for line in self.raw_log().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def events(self, name):
        return [e for e in self.logs() if e.get("event") == name]

    def watch(self, text):
        """Remembers a secret (or presented key) that must never reach the log."""
        if isinstance(text, str) and len(text) > 8:
            self.watched_secrets.add(text)

    def watch_output(self, text):
        for m in ANY_SECRET_RE.findall(text or ""):
            self.watch(m)

    def leaked_secrets(self):
        log = self.raw_log()
        return sorted(s for s in self.watched_secrets if s in log)

    # -- varlink ---------------------------------------------------------------------------

    def sock(self, which):
        return self.admin_sock if which == "admin" else self.verify_sock

    def connect(self, which="admin", line=False, timeout=CALL_TIMEOUT):
        return Varlink(self.sock(which), line=line, timeout=timeout)

    def call(self, method, parameters=None, socket_="admin"):
        with self.connect(socket_) as c:
            reply = c.call(method, parameters)
        if isinstance(reply.get("parameters"), dict):
            self.watch(reply["parameters"].get("secret"))
        return reply

    def verify(self, key, scope=None, socket_="verify", **extra):
        params = {"key": key}
        if scope is not None:
            params["scope"] = scope
        params.update(extra)
        if isinstance(key, str) and key.startswith("sec_"):
            self.watch(key)
        return ok(self.call("io.heare.Auth.Verify", params, socket_))

    def create(self, name="test-key", **params):
        """CreateKey over Varlink; returns (key, secret)."""
        params = dict(params, name=name)
        p = ok(self.call("io.heare.AuthAdmin.CreateKey", params))
        return p["key"], p["secret"]

    def health(self, socket_="verify"):
        return ok(self.call("io.heare.Auth.GetHealth", {}, socket_))

    def list_keys(self):
        return ok(self.call("io.heare.AuthAdmin.ListKeys", {}))["keys"]

    def get_key(self, key_id):
        return ok(self.call("io.heare.AuthAdmin.GetKey", {"id": key_id}))["key"]

    # -- CLI -------------------------------------------------------------------------------

    def cli(self, *args, input=None, socket="admin", env=None, timeout=CLI_TIMEOUT):
        """Runs heare-auth against this daemon. socket: "admin", "verify" (passed as
        --socket) or None (only the environment names the sockets)."""
        e = {k: v for k, v in os.environ.items() if not k.startswith("HEARE_AUTH_")}
        e["HEARE_AUTH_SOCKET"] = self.admin_sock
        e["HEARE_AUTH_VERIFY_SOCKET"] = self.verify_sock
        if env:
            e.update(env)
        argv = [HEARE_AUTH]
        if socket is not None:
            argv += ["--socket", self.sock(socket)]
        argv += list(args)
        for a in args:
            if isinstance(a, str) and a.startswith("sec_"):
                self.watch(a)
        if isinstance(input, str) and input.strip().startswith("sec_"):
            self.watch(input.strip())
        res = run_cli(argv, input=input, env=e, timeout=timeout)
        self.watch_output(res.stdout)
        return res


def run_cli(argv, input=None, env=None, timeout=CLI_TIMEOUT):
    if argv[0] != HEARE_AUTH:
        argv = [HEARE_AUTH] + list(argv)
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEARE_AUTH_")}
    return subprocess.run(argv, input=input, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)


@pytest.fixture
def make_daemon():
    """Factory: make_daemon(**kw) -> running Daemon; all are killed and removed at the end,
    and none may have logged a secret it handed out or was shown."""
    made = []

    def factory(**kw):
        d = Daemon(**kw)
        made.append(d)
        return d

    yield factory
    leaks = []
    for d in made:
        d.kill()
        leaked = d.leaked_secrets()
        if leaked:
            leaks.append((d.log_path, leaked))
    for d in made:
        if not leaks:
            shutil.rmtree(d.dir, ignore_errors=True)
    assert not leaks, f"secrets found in the daemon log: {leaks}"


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()


@pytest.fixture
def tmpdir_e2e():
    d = tempfile.mkdtemp(prefix="heare-e2e-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# -- HTTP --------------------------------------------------------------------------------

def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now (bound and released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class HttpReply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case name -> value
        self.body = body

    def json(self):
        return json.loads(self.body)


def http_request(host, port, method, path, body=None, headers=None, timeout=CALL_TIMEOUT):
    """One request on a new connection with http.client; returns an HttpReply."""
    import http.client
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return HttpReply(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def raw_http(host, port, data, timeout=5.0):
    """Sends raw bytes, returns every byte the daemon sends until it closes (or timeout)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out


def http_daemon_args(host="127.0.0.1"):
    """extra_args for a daemon with an HTTP listener, and the (host, port) it listens on."""
    port = free_port(host)
    spec = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ["--http-listen", spec], (host, port)
