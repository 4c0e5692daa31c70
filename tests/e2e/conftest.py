"""Shared fixtures for the end-to-end tests: a real heare-authd on temporary sockets,
a raw Varlink client, and the heare-auth CLI, all with timeouts so nothing can hang."""
import datetime
import hashlib
import itertools
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
# The daemon binary itself; HEARE_AUTHD may become a valgrind wrapper (below).
HEARE_AUTHD_BINARY = HEARE_AUTHD


# -- sanitizers and valgrind ---------------------------------------------------------------
#
# Built with -Db_sanitize=address,undefined (tests/run's second build), every binary of
# ours writes any AddressSanitizer or LeakSanitizer report to a file of its own under
# REPORT_DIR (log_path=), so that no report is lost in a stderr nobody reads, whoever
# started the process: a fixture, a test's subprocess.run, prlimit, pamtester.
# UndefinedBehaviorSanitizer's reports cannot go there: with GCC's two runtimes, libubsan
# hands its log_path to libasan (the first runtime loaded answers its
# __sanitizer_set_report_path) and keeps writing to stderr. So every output a test reads
# from a process (Popen.communicate, which subprocess.run uses too) and every daemon's log
# is searched for a report as well, and one found is filed under REPORT_DIR
# (note_output). pytest_runtest_makereport fails the test during which a report appeared.
# The same environment is harmless to a build without sanitizers.
# HEARE_E2E_LSAN_OPTIONS adds LeakSanitizer options (docs/testing.md).
#
# HEARE_E2E_VALGRIND=1 (by hand, on a build without sanitizers: docs/testing.md) runs every
# heare-authd of the tests under valgrind instead, its reports in the same directory.

LSAN_SUPPRESSIONS = os.path.join(ROOT, "tests", "lsan.supp")
VALGRIND_SUPPRESSIONS = os.path.join(ROOT, "tests", "valgrind.supp")
REPORT_DIR = tempfile.mkdtemp(prefix="heare-e2e-reports-")
os.chmod(REPORT_DIR, 0o1777)  # some tests run a client of ours as nobody

# halt_on_error: the first error ends the process, non-zero, as it would a test of it.
# One log_path for both: whichever runtime sets it last (see above) sets it for libasan.
# The same options as the unit tests' (tests/meson.build says why not strict_string_checks).
_log_path = f"log_path={REPORT_DIR}/sanitizer"
os.environ["ASAN_OPTIONS"] = ":".join([
    "halt_on_error=1", "detect_leaks=1", "detect_stack_use_after_return=1", _log_path])
os.environ["UBSAN_OPTIONS"] = ":".join(["print_stacktrace=1", "halt_on_error=1", _log_path])
# print_suppressions=0: a run whose only leaks are suppressed writes no file at all.
os.environ["LSAN_OPTIONS"] = ":".join(
    [f"suppressions={LSAN_SUPPRESSIONS}", "print_suppressions=0"] +
    [o for o in os.environ.get("HEARE_E2E_LSAN_OPTIONS", "").split(":") if o])
SANITIZER_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")


def _sanitizer_runtimes(path):
    """The sanitizer runtimes path is linked with, libasan first (the order LD_PRELOAD
    needs); [] for a build without sanitizers."""
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = dict(re.findall(r"lib(asan|ubsan)\.so\.\d+ => (\S+)", out))
    return [found[k] for k in ("asan", "ubsan") if k in found]


# A host program that is not built with the sanitizers (Debian's pamtester, python3 for
# pam_host.py) can only load our sanitized PAM module with their runtimes preloaded, first.
SANITIZER_PRELOAD = _sanitizer_runtimes(HEARE_PAM_MODULE)
# Whether the daemon under test is built with them.
SANITIZED = bool(_sanitizer_runtimes(HEARE_AUTHD_BINARY))

VALGRIND = os.environ.get("HEARE_E2E_VALGRIND", "") not in ("", "0")
# Under valgrind the daemon runs tens of times slower: the waits for it are stretched.
SLOW = 10.0 if VALGRIND else 1.0
if VALGRIND:
    if _sanitizer_runtimes(HEARE_AUTHD_BINARY):
        raise RuntimeError("HEARE_E2E_VALGRIND needs a build without sanitizers "
                           f"({HEARE_AUTHD_BINARY} has them)")
    _wrapper = os.path.join(REPORT_DIR, "heare-authd")
    with open(_wrapper, "w") as _f:
        # exec: the daemon's pid stays the one the tests signal and wait for.
        _f.write("#!/bin/sh\n"
                 "exec valgrind -q --error-exitcode=99 --leak-check=full"
                 " --show-leak-kinds=definite,indirect,possible"
                 " --errors-for-leak-kinds=definite,indirect,possible"
                 f" --suppressions={VALGRIND_SUPPRESSIONS} --num-callers=30"
                 f" --log-file={REPORT_DIR}/valgrind.%p"
                 f" {HEARE_AUTHD_BINARY} \"$@\"\n")
    os.chmod(_wrapper, 0o755)
    HEARE_AUTHD = _wrapper


def sanitizer_setenv_args():
    """systemd-socket-activate passes on only what -E names: these carry the settings
    above through it."""
    args = []
    for k in SANITIZER_ENV:
        args += ["-E", k]
    return args


# What a sanitizer report starts with, wherever it went (a process that was not given the
# settings above writes it to its stderr).
SANITIZER_MARKERS = re.compile(
    r"ERROR: (?:Address|Leak|Thread|Memory)Sanitizer|runtime error: |"
    r"SUMMARY: (?:Address|Leak|UndefinedBehavior)Sanitizer")


def sanitizer_report_in(text):
    """The first lines of a sanitizer report in text, or None."""
    m = SANITIZER_MARKERS.search(text or "")
    if not m:
        return None
    start = text.rfind("\n", 0, m.start()) + 1
    return text[start:start + 4000]


_output_reports = itertools.count()


def note_output(text, what):
    """Files a sanitizer report found in text (what a process wrote; what says which)
    under REPORT_DIR, where pytest_runtest_makereport finds it."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    report = sanitizer_report_in(text)
    if report:
        name = f"output.{os.getpid()}.{next(_output_reports)}"
        with open(os.path.join(REPORT_DIR, name), "w") as f:
            f.write(f"{what}:\n{report}")


_communicate = subprocess.Popen.communicate


def _communicate_and_check(self, *args, **kwargs):
    out, err = _communicate(self, *args, **kwargs)
    for text in (err, out):
        if text:
            note_output(text, f"output of {self.args!r}")
    return out, err


subprocess.Popen.communicate = _communicate_and_check


def new_reports(seen):
    """Reports under REPORT_DIR that are not in seen (a set of names, updated): a list of
    (name, text). Empty files (valgrind's, with -q, while it found nothing) do not count
    and are looked at again next time."""
    out = []
    for name in sorted(os.listdir(REPORT_DIR)):
        if name in seen or not name.startswith(("sanitizer.", "output.", "valgrind.")):
            continue
        path = os.path.join(REPORT_DIR, name)
        try:
            with open(path, "rb") as f:
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            continue
        if text.strip():
            seen.add(name)
            out.append((name, text))
    return out


_seen_reports = set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Fails the test during which (or since the test before it) a sanitizer or valgrind
    report was written: checked once its teardown is over, so after its daemons stopped
    and ran their exit-time checks, and shown even when it failed for another reason."""
    outcome = yield
    if call.when != "teardown":
        return
    found = new_reports(_seen_reports)
    if not found:
        return
    text = "sanitizer/valgrind reports (in %s):\n%s" % (REPORT_DIR, "\n".join(
        f"--- {name}\n{body[:8000]}" for name, body in found))
    rep = outcome.get_result()
    if rep.outcome == "failed":
        rep.sections.append(("sanitizer/valgrind reports", text))
    else:
        rep.outcome = "failed"
        rep.longrepr = text


def pytest_sessionfinish(session, exitstatus):
    """A report that appeared after the last test (a module's fixture stopping a process
    of ours) fails the run too; the directory stays only when it holds a report."""
    late = new_reports(_seen_reports)
    if late:
        print("\nsanitizer/valgrind reports after the last test (in %s):\n%s" % (
            REPORT_DIR, "\n".join(f"--- {name}\n{body[:8000]}" for name, body in late)))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if VALGRIND:
        runs = [n for n in os.listdir(REPORT_DIR) if n.startswith("valgrind.")]
        print(f"\nvalgrind: {len(runs)} heare-authd processes, "
              f"{sum(n in _seen_reports for n in runs)} with a report")
    if not _seen_reports:
        shutil.rmtree(REPORT_DIR, ignore_errors=True)


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
        deadline = time.monotonic() + timeout * SLOW
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
        rc = self.terminate(timeout)
        if rc is False:
            pytest.fail(f"heare-authd did not exit within {timeout * SLOW}s of SIGTERM")
        return rc

    def terminate(self, timeout=10.0):
        """SIGTERM and a wait for the exit, so that it exits as in production, running what
        runs at exit (LeakSanitizer's check, valgrind's). Returns the exit code (None if it
        never started), or False if it had to be killed after timeout."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return False

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
        self.terminate()
        self.kill()
        note_output(self.raw_log(), self.log_path)
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
    """Factory: make_daemon(**kw) -> running Daemon. At the end each one still running is
    stopped with SIGTERM and must exit 0 in time; none may have logged a secret it handed
    out or was shown, nor a sanitizer report."""
    made = []

    def factory(**kw):
        d = Daemon(**kw)
        made.append(d)
        return d

    yield factory
    problems = []
    for d in made:
        running = d.proc is not None and d.proc.poll() is None
        rc = d.terminate()
        d.kill()
        if running and rc is False:
            problems.append(f"{d.log_path}: did not exit within {10 * SLOW}s of SIGTERM")
        elif running and rc != 0:
            problems.append(f"{d.log_path}: exited {rc} on SIGTERM")
        leaked = d.leaked_secrets()
        if leaked:
            problems.append(f"{d.log_path}: secrets found in the daemon log: {leaked}")
        note_output(d.raw_log(), d.log_path)
    for d in made:
        if not problems:
            shutil.rmtree(d.dir, ignore_errors=True)
    assert not problems, "\n".join(problems)


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
