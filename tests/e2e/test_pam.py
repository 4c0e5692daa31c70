"""pam_heare_auth.so and `heare-auth verify` under real PAM: Debian's pamtester (and a
small ctypes PAM application, pam_host.py) run under libpam-wrapper, so no root and no
/etc change: the service files name the built module by its absolute path, and the key is
piped on stdin to pamtester's conversation."""
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import HEARE_AUTH, HEARE_PAM_MODULE, SANITIZER_PRELOAD, rfc3339, v2_key

HERE = os.path.dirname(os.path.abspath(__file__))
PAM_HOST = os.path.join(HERE, "pam_host.py")


def _find(pattern, what):
    hits = sorted(glob.glob(pattern))
    if not hits:
        pytest.fail(f"{what} not found ({pattern}); tests/run installs it (packaging/build-deps)")
    return hits[0]


PAM_WRAPPER_LIB = _find("/usr/lib/*/libpam_wrapper.so", "libpam_wrapper.so (libpam-wrapper)")
PAM_SET_ITEMS = _find("/usr/lib/*/pam_wrapper/pam_set_items.so", "pam_set_items.so")
PAMTESTER = shutil.which("pamtester") or _find("/usr/bin/pamtester", "pamtester")

# pam_strerror() texts of Linux-PAM, as pamtester prints them.
AUTH_ERR = "Authentication failure"
AUTHINFO_UNAVAIL = "Authentication service cannot retrieve authentication info"
SERVICE_ERR = "Error in service module"
ACCT_EXPIRED = "User account has expired"
SYSTEM_ERR = "System error"

# Return codes of Linux-PAM's <security/_pam_types.h>, for the ctypes host.
PAM_SUCCESS = 0
PAM_SERVICE_ERR = 3
PAM_AUTH_ERR = 7
PAM_AUTHINFO_UNAVAIL = 9
PAM_ACCT_EXPIRED = 13

RUN_TIMEOUT = 30


class Run:
    def __init__(self, proc, elapsed):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.elapsed = elapsed
        # pam_wrapper shows what modules log with pam_syslog as "SYSLOG(<prio>): text".
        self.logs = re.findall(r"SYSLOG\(\d\): (.*)", proc.stderr)

    @property
    def failure(self):
        """pamtester's "pamtester: <pam_strerror>" on failure, else None."""
        if self.rc == 0:
            return None
        m = re.findall(r"^pamtester: (.*)$", self.stderr, re.M)
        return m[-1] if m else f"(no pamtester message; rc {self.rc}) {self.stderr}"

    def log_text(self):
        return "\n".join(self.logs)


class Pam:
    """A PAM service directory for libpam-wrapper, and ways to run PAM applications on it."""

    def __init__(self, root):
        self.dir = os.path.join(root, "pam.d")
        os.makedirs(self.dir)
        # Without "other", libpam logs an error on every pam_start.
        self.service("other", "auth required pam_deny.so", "account required pam_deny.so")

    def service(self, name, *lines):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write("\n".join(lines) + "\n")
        return name

    def module(self, name, *args, account=True):
        """A service whose auth (and account) stack is the module alone, with args."""
        line = f"{HEARE_PAM_MODULE} {' '.join(args)}".strip()
        lines = [f"auth required {line}"]
        if account:
            lines.append(f"account required {line}")
        return self.service(name, *lines)

    def env(self, extra=None):
        e = {k: v for k, v in os.environ.items()
             if not k.startswith(("PAM_", "LD_PRELOAD", "HEARE_AUTH_"))}
        # A sanitized module needs its runtimes in the host, loaded before anything else.
        e.update(LD_PRELOAD=":".join(SANITIZER_PRELOAD + [PAM_WRAPPER_LIB]), PAM_WRAPPER="1",
                 PAM_WRAPPER_SERVICE_DIR=self.dir, PAM_WRAPPER_DEBUGLEVEL="2")
        if extra:
            e.update(extra)
        return e

    def pamtester(self, service, user, *ops, input=None, env=None, timeout=RUN_TIMEOUT):
        ops = ops or ("authenticate",)
        t0 = time.monotonic()
        proc = subprocess.run([PAMTESTER, "-v", service, user] + list(ops), input=input,
                              env=self.env(env), capture_output=True, text=True,
                              timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
        return Run(proc, time.monotonic() - t0)

    def host(self, service, user, key, *flags, env=None, timeout=RUN_TIMEOUT):
        """pam_host.py (ctypes) on the service; returns its JSON result."""
        result = os.path.join(os.path.dirname(self.dir), f"host-{time.monotonic_ns()}.json")
        e = self.env(env)
        e["PAM_HOST_KEY"] = key
        if SANITIZER_PRELOAD:
            # pam_host.py checks for leaks itself, before Python's exit (see there).
            e["PYTHONMALLOC"] = "malloc"
            e["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":leak_check_at_exit=0"
        proc = subprocess.run([sys.executable, PAM_HOST, result, service, user] + list(flags),
                              env=e, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"pam_host.py failed ({proc.returncode}): {proc.stderr}"
        with open(result) as f:
            doc = json.load(f)
        os.unlink(result)
        assert not doc.pop("leaked"), "LeakSanitizer found leaks in pam_host.py (its report " \
                                      "is under conftest's REPORT_DIR)"
        doc["stderr"] = proc.stderr
        return doc


@pytest.fixture
def pam(tmpdir_e2e):
    return Pam(tmpdir_e2e)


def keyed(daemon, name="alice-key", user="alice", **params):
    """A key for unix user `user` (metadata.unix_user); returns (key, secret)."""
    meta = dict(params.pop("metadata", {}))
    if user is not None:
        meta["unix_user"] = user
    key, secret = daemon.create(name, metadata=meta, **params)
    daemon.watch(secret)
    return key, secret


def assert_no_secret(run, *secrets):
    for s in secrets:
        assert s not in run.stdout and s not in run.stderr, "the key reached the output or log"


# --- authenticate ---------------------------------------------------------------------------

def test_right_key_and_user(daemon, pam):
    key, secret = keyed(daemon)
    svc = pam.module("heare", f"socket={daemon.verify_sock}")
    r = pam.pamtester(svc, "alice", "authenticate", "acct_mgmt", input=secret + "\n")
    assert r.rc == 0, r.stderr
    assert "successfully authenticated" in r.stdout
    assert "account management done" in r.stdout
    assert "API key: " in r.stdout + r.stderr  # the conversation's prompt
    assert f"accepted key {key['id']} for user alice" in r.log_text()
    assert_no_secret(r, secret)


def test_wrong_key(daemon, pam):
    keyed(daemon)
    svc = pam.module("heare", f"socket={daemon.verify_sock}")
    wrong = "sec_1" + "0" * 38  # well formed, checksum aside: MALFORMED or NOT_FOUND
    r = pam.pamtester(svc, "alice", input=wrong + "\n")
    assert r.failure == AUTH_ERR
    legacy = "sec_0001vDmowg2tzwvpaFL"  # a legacy-shaped key nobody holds
    r = pam.pamtester(svc, "alice", input=legacy + "\n")
    assert r.failure == AUTH_ERR
    assert "NOT_FOUND" in r.log_text()
    assert_no_secret(r, legacy)


def test_key_of_another_user(daemon, pam):
    key, secret = keyed(daemon, user="alice")
    svc = pam.module("heare", f"socket={daemon.verify_sock}")
    r = pam.pamtester(svc, "bob", input=secret + "\n")
    assert r.failure == AUTH_ERR
    assert f"key {key['id']} belongs to another user" in r.log_text()
    # A key with no unix_user at all is nobody's under the default user_match.
    _, nobodys = keyed(daemon, name="service-key", user=None)
    r = pam.pamtester(svc, "alice", input=nobodys + "\n")
    assert r.failure == AUTH_ERR
    assert_no_secret(r, secret, nobodys)


def test_user_match_modes(daemon, pam):
    _, by_name = daemon.create("carol", metadata={"login": "dave"})
    daemon.watch(by_name)
    name = pam.module("by-name", f"socket={daemon.verify_sock}", "user_match=name")
    assert pam.pamtester(name, "carol", input=by_name + "\n").rc == 0
    assert pam.pamtester(name, "dave", input=by_name + "\n").failure == AUTH_ERR

    field = pam.module("by-field", f"socket={daemon.verify_sock}", "user_match=metadata:login")
    assert pam.pamtester(field, "dave", input=by_name + "\n").rc == 0
    assert pam.pamtester(field, "carol", input=by_name + "\n").failure == AUTH_ERR

    anyone = pam.module("anyone", f"socket={daemon.verify_sock}", "user_match=none")
    assert pam.pamtester(anyone, "whoever", input=by_name + "\n").rc == 0


def test_not_a_key_is_never_sent(daemon, pam):
    """A password typed at the prompt is refused without reaching the daemon (whose failure
    log keeps the first 8 characters of a rejected key)."""
    svc = pam.module("heare", f"socket={daemon.verify_sock}")
    password = "correct-horse-battery-staple"
    r = pam.pamtester(svc, "alice", input=password + "\n")
    assert r.failure == AUTH_ERR
    assert "not an API key" in r.log_text()
    assert_no_secret(r, password)
    assert password[:8] not in daemon.raw_log()
    assert not [e for e in daemon.logs() if e.get("event") == "verification_failed"]


def test_scope(daemon, pam):
    _, secret = keyed(daemon, scopes=["ssh.login"])
    need_other = pam.module("need-other", f"socket={daemon.verify_sock}", "scope=ssh.admin")
    r = pam.pamtester(need_other, "alice", input=secret + "\n")
    assert r.failure == AUTH_ERR
    assert "FORBIDDEN" in r.log_text()
    need_login = pam.module("need-login", f"socket={daemon.verify_sock}", "scope=ssh.login")
    assert pam.pamtester(need_login, "alice", input=secret + "\n").rc == 0
    # A key without scopes does not pass a module that asks for one.
    _, unscoped = keyed(daemon, name="unscoped")
    assert pam.pamtester(need_login, "alice", input=unscoped + "\n").failure == AUTH_ERR


def test_use_first_pass(daemon, pam):
    key, secret = keyed(daemon)
    svc = pam.service("first", f"auth required {PAM_SET_ITEMS}",
                      f"auth required {HEARE_PAM_MODULE} socket={daemon.verify_sock} "
                      "use_first_pass")
    # stdin is /dev/null: a prompt would fail the conversation.
    r = pam.pamtester(svc, "alice", env={"PAM_AUTHTOK": secret})
    assert r.rc == 0, r.stderr
    assert "API key: " not in r.stdout + r.stderr
    assert f"accepted key {key['id']}" in r.log_text()

    # Nothing from an earlier module: refused, and no prompt either.
    alone = pam.module("alone", f"socket={daemon.verify_sock}", "use_first_pass")
    r = pam.pamtester(alone, "alice", input=secret + "\n")
    assert r.failure == AUTH_ERR
    assert "API key: " not in r.stdout + r.stderr
    assert "use_first_pass" in r.log_text()


def test_try_first_pass(daemon, pam):
    key, secret = keyed(daemon)
    svc = pam.service("try", f"auth required {PAM_SET_ITEMS}",
                      f"auth required {HEARE_PAM_MODULE} socket={daemon.verify_sock} "
                      "try_first_pass")
    # The earlier module's token is the key: no prompt.
    r = pam.pamtester(svc, "alice", env={"PAM_AUTHTOK": secret})
    assert r.rc == 0, r.stderr
    assert "API key: " not in r.stdout + r.stderr
    # The earlier module's token is a Unix password: it is not sent; the module asks.
    password = "hunter2-unix-password"
    r = pam.pamtester(svc, "alice", input=secret + "\n", env={"PAM_AUTHTOK": password})
    assert r.rc == 0, r.stderr
    assert "API key: " in r.stdout + r.stderr
    assert password[:8] not in daemon.raw_log()


def test_prompted_key_is_left_for_the_next_module(daemon, pam):
    """What the prompt got becomes PAM_AUTHTOK, so a second instance (another scope) can
    use_first_pass."""
    _, secret = keyed(daemon, scopes=["a", "b"])
    svc = pam.service("two", f"auth required {HEARE_PAM_MODULE} socket={daemon.verify_sock} "
                      "scope=a",
                      f"auth required {HEARE_PAM_MODULE} socket={daemon.verify_sock} "
                      "scope=b use_first_pass")
    r = pam.pamtester(svc, "alice", input=secret + "\n")
    assert r.rc == 0, r.stderr
    assert len([l for l in r.logs if "accepted key" in l]) == 2


# --- the daemon is down or stuck -------------------------------------------------------------

def test_daemon_down(make_daemon, pam, tmpdir_e2e):
    d = make_daemon()
    _, secret = keyed(d)
    svc = pam.module("heare", f"socket={d.verify_sock}", "timeout_ms=2000")
    assert pam.pamtester(svc, "alice", input=secret + "\n").rc == 0

    d.kill()  # SIGKILL: the socket file stays, nobody listens (ECONNREFUSED)
    r = pam.pamtester(svc, "alice", input=secret + "\n")
    assert r.failure == AUTHINFO_UNAVAIL
    assert r.elapsed < 2.0, f"took {r.elapsed:.2f}s"
    assert "cannot verify the key of user alice" in r.log_text()
    assert_no_secret(r, secret)

    missing = pam.module("missing", f"socket={tmpdir_e2e}/nothing-here.sock")
    r = pam.pamtester(missing, "alice", input=secret + "\n")
    assert r.failure == AUTHINFO_UNAVAIL
    assert "No such file or directory" in r.log_text()
    assert r.elapsed < 2.0


class SilentServer:
    """Accepts connections and never answers. On each accept it looks at the client (by
    SO_PEERCRED) while the client waits: its sockets' fd flags and its thread count."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.conns = []
        self.peers = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def inspect(self, pid):
        socks = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if not link.startswith("socket:"):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    flags = int(re.search(r"^flags:\s*(\d+)", f.read(), re.M).group(1), 8)
                socks[int(fd)] = flags
            except (OSError, AttributeError):
                pass
        threads = len(os.listdir(f"/proc/{pid}/task"))
        return {"pid": pid, "sockets": socks, "threads": threads}

    def run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            cred = c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            pid = int.from_bytes(cred[:4], sys.byteorder)
            try:
                self.peers.append(self.inspect(pid))
            except OSError as e:
                self.peers.append({"pid": pid, "error": str(e)})

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def silent_server(tmpdir_e2e):
    s = SilentServer(os.path.join(tmpdir_e2e, "silent.sock"))
    yield s
    s.close()


def test_daemon_that_never_answers(pam, silent_server):
    timeout_ms = 700
    svc = pam.module("stuck", f"socket={silent_server.path}", f"timeout_ms={timeout_ms}")
    key = "sec_0001vDmowg2tzwvpaFL"
    r = pam.pamtester(svc, "alice", input=key + "\n")
    assert r.failure == AUTHINFO_UNAVAIL
    m = re.search(r"Connection timed out \(after (\d+) ms\)", r.log_text())
    assert m, r.log_text()
    took = int(m.group(1))
    print(f"module gave up after {took} ms (timeout_ms={timeout_ms}); pamtester ran "
          f"{r.elapsed:.3f}s")
    assert timeout_ms - 2 <= took <= timeout_ms + 250
    assert r.elapsed < timeout_ms / 1000 + 3.0
    assert_no_secret(r, key)

    # While pamtester waited: its socket to us was close-on-exec, and it ran one thread.
    assert len(silent_server.peers) == 1, silent_server.peers
    peer = silent_server.peers[0]
    assert peer.get("threads") == 1, peer
    assert peer["sockets"], peer
    for fd, flags in peer["sockets"].items():
        assert flags & 0o2000000, f"fd {fd} of the PAM host lacks O_CLOEXEC: {oct(flags)}"


def test_timeout_covers_connect_write_and_read(pam, tmpdir_e2e):
    """One deadline for the whole call: a listener whose backlog is full makes connect wait;
    after 300 ms it accepts everything and never answers. With timeout_ms=500 the module
    must give up at 500 ms in all, not 300 ms + another 500 for the reply."""
    path = os.path.join(tmpdir_e2e, "full.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(0)
    fillers, accepted, stop = [], [], threading.Event()
    # Fill the backlog: a further connect would block (non-blocking: EAGAIN).
    for _ in range(8):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(path)
        except BlockingIOError:
            c.close()
            break
        fillers.append(c)
    assert fillers, "could not fill the listen backlog"

    def late_acceptor():
        time.sleep(0.3)
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            cred = c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            accepted.append((c, int.from_bytes(cred[:4], sys.byteorder)))

    t = threading.Thread(target=late_acceptor, daemon=True)
    t.start()
    try:
        timeout_ms = 500
        svc = pam.module("full", f"socket={path}", f"timeout_ms={timeout_ms}")
        r = pam.pamtester(svc, "alice", input="sec_0001vDmowg2tzwvpaFL\n")
        assert r.failure == AUTHINFO_UNAVAIL
        m = re.search(r"Connection timed out \(after (\d+) ms\)", r.log_text())
        assert m, r.log_text()
        print(f"gave up after {m.group(1)} ms of timeout_ms={timeout_ms}")
        assert timeout_ms - 2 <= int(m.group(1)) <= timeout_ms + 200
        # The module did get through connect: the late acceptor saw it.
        assert any(pid != os.getpid() for _, pid in accepted), accepted
    finally:
        stop.set()
        t.join(5)
        for c in fillers:
            c.close()
        for c, _ in accepted:
            c.close()
        srv.close()


# --- expired and disabled keys, acct_mgmt ----------------------------------------------------

def test_expired_key_and_acct_mgmt(make_daemon, pam):
    entry, secret = v2_key("old", metadata={"unix_user": "alice"},
                           expires_at=rfc3339(time.time() - 3600))
    d = make_daemon(store_doc={"version": 2, "keys": [entry]})
    d.watch(secret)
    svc = pam.module("heare", f"socket={d.verify_sock}")

    r = pam.pamtester(svc, "alice", "authenticate", "acct_mgmt", input=secret + "\n")
    assert r.failure == AUTH_ERR  # an expired key never authenticates
    assert f"EXPIRED key {entry['id']}" in r.log_text()

    # pamtester stops at the first failure: a ctypes application calls acct_mgmt anyway.
    doc = pam.host(svc, "alice", secret)
    res = doc["results"][0]
    assert res["authenticate"] == PAM_AUTH_ERR
    assert res["acct_mgmt"] == PAM_ACCT_EXPIRED
    assert doc["prompts"] == ["API key: "]
    assert secret not in doc["stderr"]


def test_disabled_key_and_acct_mgmt(daemon, pam):
    key, secret = keyed(daemon)
    svc = pam.module("heare", f"socket={daemon.verify_sock}")
    doc = pam.host(svc, "alice", secret)
    assert doc["results"][0] == {"pam_start": 0, "authenticate": PAM_SUCCESS,
                                 "acct_mgmt": PAM_SUCCESS}

    assert daemon.cli("disable", key["id"]).returncode == 0
    doc = pam.host(svc, "alice", secret)
    assert doc["results"][0]["authenticate"] == PAM_AUTH_ERR
    assert doc["results"][0]["acct_mgmt"] == PAM_ACCT_EXPIRED

    # A wrong key is an authentication failure, not an expired account.
    doc = pam.host(svc, "alice", "sec_0001vDmowg2tzwvpaFL")
    assert doc["results"][0]["authenticate"] == PAM_AUTH_ERR
    assert doc["results"][0]["acct_mgmt"] == PAM_SUCCESS


# --- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["no_such_option", "timeout_ms=0", "timeout_ms=abc",
                                 "user_match=uid", "socket=relative.sock", "scope="])
def test_bad_option_is_refused(daemon, pam, bad):
    _, secret = keyed(daemon)
    svc = pam.module("bad", f"socket={daemon.verify_sock}", bad)
    r = pam.pamtester(svc, "alice", input=secret + "\n")
    assert r.failure == SERVICE_ERR
    assert f'option "{bad}"' in r.log_text()
    assert "API key: " not in r.stdout + r.stderr  # refused before asking anything
    doc = pam.host(svc, "alice", secret, "--ops", "acct_mgmt")
    assert doc["results"][0]["acct_mgmt"] == PAM_SERVICE_ERR


# --- safe in any host process ----------------------------------------------------------------

def test_host_with_closed_stdio(daemon, pam):
    """stdin, stdout and stderr closed: the module's socket lands on fd 0, 1 or 2, and it
    still works, leaves no fd, thread or signal handler behind."""
    key, secret = keyed(daemon)
    svc = pam.module("heare", f"socket={daemon.verify_sock}")
    doc = pam.host(svc, "alice", secret, "--close-stdio", "--repeat", "3")
    for res in doc["results"]:
        assert res == {"pam_start": 0, "authenticate": PAM_SUCCESS, "acct_mgmt": PAM_SUCCESS}
    assert doc["before"]["fds"].keys() == doc["after"]["fds"].keys(), doc
    for k in ("SigBlk", "SigIgn", "SigCgt", "Threads"):
        assert doc["before"]["status"][k] == doc["after"]["status"][k], k
    assert doc["after"]["status"]["Threads"] == "1"


def test_peer_hangs_up_with_sigpipe_default(pam, tmpdir_e2e):
    """A daemon that closes the connection at once, with SIGPIPE at its default action in
    the host: each call is 'unavailable' and the host lives on. (Whether the send itself
    races the close is up to the scheduler; test-varlink-client's test_sigpipe makes the
    send fail with EPIPE every time.)"""
    path = os.path.join(tmpdir_e2e, "rude.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    stop = threading.Event()

    def run():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        svc = pam.module("rude", f"socket={path}", "timeout_ms=2000")
        doc = pam.host(svc, "alice", "sec_0001vDmowg2tzwvpaFL", "--sigpipe-default",
                       "--repeat", "20", "--ops", "authenticate")
        assert [r["authenticate"] for r in doc["results"]] == [PAM_AUTHINFO_UNAVAIL] * 20
    finally:
        stop.set()
        t.join(5)
        srv.close()


# --- heare-auth verify under pam_exec --------------------------------------------------------

def test_verify_helper_under_pam_exec(daemon, pam, tmpdir_e2e):
    """`heare-auth verify` reads the key pam_exec's expose_authtok writes to its stdin; its
    exit status (0 valid, 1 invalid, 3 unreachable) decides, and pam_exec logs it."""
    key, secret = keyed(daemon)
    svc = pam.service("exec", f"auth required pam_exec.so expose_authtok quiet "
                      f"{HEARE_AUTH} --socket {daemon.verify_sock} verify")
    r = pam.pamtester(svc, "alice", input=secret + "\n")
    assert r.rc == 0, r.stderr
    assert_no_secret(r, secret)

    r = pam.pamtester(svc, "alice", input="sec_0001vDmowg2tzwvpaFL\n")
    assert r.rc != 0
    assert "exit code 1" in r.log_text()

    down = pam.service("exec-down", f"auth required pam_exec.so expose_authtok quiet "
                       f"{HEARE_AUTH} --socket {tmpdir_e2e}/none.sock verify")
    r = pam.pamtester(down, "alice", input=secret + "\n")
    assert r.rc != 0
    assert "exit code 3" in r.log_text()


def test_verify_helper_exit_codes(daemon, tmpdir_e2e):
    """The documented exit codes of `heare-auth verify` for scripts (docs/pam.md)."""
    key, secret = keyed(daemon)
    assert daemon.cli("verify", input=secret + "\n", socket="verify").returncode == 0
    assert daemon.cli("verify", input=secret, socket="verify").returncode == 0  # no newline
    assert daemon.cli("verify", input="sec_0001vDmowg2tzwvpaFL\n",
                      socket="verify").returncode == 1
    assert daemon.cli("verify", "--scope", "nope", input=secret + "\n",
                      socket="verify").returncode == 1
    assert daemon.cli("verify", input="", socket="verify").returncode == 2
    res = subprocess.run([HEARE_AUTH, "--socket", f"{tmpdir_e2e}/none.sock", "verify"],
                         input=secret + "\n", capture_output=True, text=True, timeout=30)
    assert res.returncode == 3
    assert secret not in res.stdout + res.stderr


def test_mod_authnz_external_wrapper(daemon, tmpdir_e2e):
    """The pipe-method wrapper of docs/pam.md: user on the first line, key on the second."""
    with open(os.path.join(os.path.dirname(HERE), "..", "docs", "pam.md")) as f:
        doc = f.read()
    m = re.search(r"```sh\n(#!/bin/sh\n# heare-auth-external.*?)```", doc, re.S)
    assert m, "docs/pam.md lacks the mod_authnz_external wrapper"
    script = os.path.join(tmpdir_e2e, "heare-auth-external")
    with open(script, "w") as f:
        f.write(m.group(1))
    os.chmod(script, 0o755)

    _, secret = keyed(daemon, user="alice")
    daemon.watch(secret)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARE_AUTH_")}
    env["HEARE_AUTH_VERIFY_SOCKET"] = daemon.verify_sock
    env["PATH"] = os.path.dirname(HEARE_AUTH) + ":" + env.get("PATH", "")

    def run(stdin):
        return subprocess.run([script], input=stdin, capture_output=True, text=True,
                              env=env, timeout=30).returncode

    assert run(f"alice\n{secret}\n") == 0
    assert run(f"bob\n{secret}\n") == 1
    assert run("alice\nsec_0001vDmowg2tzwvpaFL\n") == 1
