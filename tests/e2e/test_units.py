"""The systemd units: what they say (SPEC §5, §10), that systemd accepts them
(systemd-analyze verify, offline, with this build's daemon), how well the service is
sandboxed (systemd-analyze security, exposure <= 2.0), and that the daemon serves on the
units' sockets under socket activation (systemd-socket-activate with the units' own
socket names, paths and modes, read from the unit files so the test cannot drift)."""
import glob
import grp
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from conftest import (ADMIN_IF, ROOT, HEARE_AUTHD, HEARE_AUTHD_BINARY, Daemon, ok,
                      sanitizer_setenv_args, wait_for)

UNIT_DIR = os.path.join(ROOT, "systemd")
BUILD_ROOT = os.environ.get("HEARE_BUILD_ROOT") or os.path.dirname(os.path.dirname(HEARE_AUTHD_BINARY))
SERVICE_TEST = os.path.join(BUILD_ROOT, "systemd", "heare-authd.service.test")
SOCKETS = ["heare-authd.socket", "heare-authd-admin.socket", "heare-authd-http.socket"]
MAX_EXPOSURE = 2.0


def parse_unit(path):
    """{section: {key: [values...]}} with systemd's rules for comments and continuation
    lines; an empty assignment resets the list, as in systemd."""
    sections = {}
    cur = None
    pending = ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if pending:
                line = pending + " " + line.strip()
                pending = ""
            s = line.strip()
            if not s or s.startswith(("#", ";")):
                continue
            if s.endswith("\\"):
                pending = s[:-1].rstrip()
                continue
            if s.startswith("[") and s.endswith("]"):
                cur = sections.setdefault(s[1:-1], {})
                continue
            assert cur is not None, f"{path}: assignment outside a section: {s}"
            key, _, value = s.partition("=")
            key, value = key.strip(), value.strip()
            if value == "":
                cur[key] = []
            else:
                cur.setdefault(key, []).append(value)
    return sections


def one(unit, section, key):
    vals = unit.get(section, {}).get(key, [])
    assert len(vals) == 1, f"[{section}] {key}= should be set once, is {vals}"
    return vals[0]


def service_unit():
    return parse_unit(os.path.join(UNIT_DIR, "heare-authd.service.in"))


def socket_unit(name):
    return parse_unit(os.path.join(UNIT_DIR, name))


# -- what the units say ------------------------------------------------------------------

def test_socket_units_match_the_spec():
    v = socket_unit("heare-authd.socket")
    assert one(v, "Socket", "ListenStream") == "/run/heare-auth/verify.sock"
    assert one(v, "Socket", "FileDescriptorName") == "verify"
    assert one(v, "Socket", "SocketMode") == "0660"
    assert one(v, "Socket", "SocketGroup") == "heare-auth"
    assert one(v, "Socket", "Service") == "heare-authd.service"
    assert one(v, "Install", "WantedBy") == "sockets.target"

    a = socket_unit("heare-authd-admin.socket")
    assert one(a, "Socket", "ListenStream") == "/run/heare-auth/admin.sock"
    assert one(a, "Socket", "FileDescriptorName") == "admin"
    assert one(a, "Socket", "SocketMode") == "0600"
    assert one(a, "Socket", "SocketUser") == "root"
    assert one(a, "Socket", "Service") == "heare-authd.service"

    h = socket_unit("heare-authd-http.socket")
    assert one(h, "Socket", "FileDescriptorName") == "http"
    assert one(h, "Socket", "Service") == "heare-authd.service"


def test_http_socket_is_not_pulled_in_by_anything():
    """Enabled only by an explicit `systemctl enable heare-authd-http.socket`."""
    units = {n: socket_unit(n) for n in SOCKETS}
    units["heare-authd.service"] = service_unit()
    for name, u in units.items():
        for section in u.values():
            for key in ("Wants", "Requires", "Also", "BindsTo", "Sockets"):
                for v in section.get(key, []):
                    assert "heare-authd-http.socket" not in v.split(), f"{name}: {key}={v}"


def test_enabling_the_verify_socket_brings_the_admin_socket():
    v = socket_unit("heare-authd.socket")
    assert "heare-authd-admin.socket" in one(v, "Unit", "Wants").split()
    assert "heare-authd-admin.socket" in one(v, "Install", "Also").split()


def test_service_settings():
    s = service_unit()
    assert one(s, "Service", "Type") == "notify"
    assert one(s, "Service", "ExecStart") == "@sbindir@/heare-authd"
    assert one(s, "Service", "ExecReload") == "kill -HUP $MAINPID"
    assert one(s, "Service", "User") == "heare-auth"
    assert one(s, "Service", "StateDirectory") == "heare-auth"
    assert one(s, "Service", "CacheDirectory") == "heare-auth"
    assert one(s, "Service", "ConfigurationDirectory") == "heare-auth"
    assert one(s, "Service", "ProtectSystem") == "strict"
    assert s["Service"]["CapabilityBoundingSet"] == [], "no capabilities at all"
    # The credential names the daemon reads from $CREDENTIALS_DIRECTORY (SPEC §4); the
    # sources are relative names, so a missing one is skipped rather than fatal.
    creds = dict(v.split(":", 1) for v in s["Service"]["LoadCredential"])
    assert set(creds) == {"aws-access-key-id", "aws-secret-access-key", "aws-session-token"}
    for source in creds.values():
        assert not source.startswith("/"), "an absolute source fails the unit when missing"


def test_watchdog_only_with_pings():
    """WatchdogSec= without the daemon sending WATCHDOG=1 would kill it; with the pings,
    it must be on."""
    sources = "".join(open(p).read() for p in glob.glob(os.path.join(ROOT, "daemon", "*.c")))
    pings = "WATCHDOG=1" in sources
    watchdog = service_unit()["Service"].get("WatchdogSec", [])
    if pings:
        assert watchdog == ["30s"], "the daemon pings the watchdog: set WatchdogSec=30s"
    else:
        assert watchdog == [], "the daemon does not ping the watchdog: WatchdogSec= must stay off"


def test_sysusers_and_tmpfiles():
    with open(os.path.join(UNIT_DIR, "sysusers.conf")) as f:
        lines = [l.split() for l in f if l.strip() and not l.startswith("#")]
    assert lines[0][:2] == ["u", "heare-auth"]
    with open(os.path.join(UNIT_DIR, "tmpfiles.conf")) as f:
        paths = {l.split()[1]: l.split() for l in f if l.strip() and not l.startswith("#")}
    assert paths["/var/lib/heare-auth"][2:5] == ["0700", "heare-auth", "heare-auth"]
    assert paths["/var/cache/heare-auth"][2:5] == ["0700", "heare-auth", "heare-auth"]


# -- systemd's own checks ----------------------------------------------------------------

@pytest.fixture
def unit_tree():
    """The four units in one directory, the service pointing at this build's daemon, and
    a MANPATH with this build's man pages (verify checks Documentation=man:...)."""
    d = tempfile.mkdtemp(prefix="heare-units-")
    shutil.copy(SERVICE_TEST, os.path.join(d, "heare-authd.service"))
    for s in SOCKETS:
        shutil.copy(os.path.join(UNIT_DIR, s), d)
    man = os.path.join(d, "man")
    for page in glob.glob(os.path.join(BUILD_ROOT, "docs", "*.[158]")):
        sect = os.path.join(man, "man" + page.rsplit(".", 1)[1])
        os.makedirs(sect, exist_ok=True)
        os.symlink(page, os.path.join(sect, os.path.basename(page)))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_service_under_test_runs_this_build(unit_tree):
    u = parse_unit(os.path.join(unit_tree, "heare-authd.service"))
    assert one(u, "Service", "ExecStart") == HEARE_AUTHD_BINARY


@pytest.mark.parametrize("unit", ["heare-authd.service"] + SOCKETS)
def test_systemd_analyze_verify(unit_tree, unit):
    env = dict(os.environ, MANPATH=os.path.join(unit_tree, "man"), SYSTEMD_LOG_LEVEL="notice")
    res = subprocess.run(["systemd-analyze", "verify", os.path.join(unit_tree, unit)],
                         capture_output=True, text=True, timeout=120, env=env, cwd=unit_tree)
    out = (res.stdout + res.stderr).strip()
    # Any message at all (an unknown key is only a warning with exit 0) is a failure.
    assert res.returncode == 0 and out == "", f"systemd-analyze verify {unit}:\n{out}"


def test_security_exposure(unit_tree):
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                          os.path.join(unit_tree, "heare-authd.service")],
                         capture_output=True, text=True, timeout=120, cwd=unit_tree)
    print(res.stdout)
    print(res.stderr, file=sys.stderr)
    m = re.search(r"Overall exposure level for heare-authd\.service: (\d+\.\d+)", res.stdout)
    assert m, f"no exposure level in:\n{res.stdout}\n{res.stderr}"
    exposure = float(m.group(1))
    print(f"exposure: {exposure} (limit {MAX_EXPOSURE})")
    assert exposure <= MAX_EXPOSURE


# -- the sockets, under socket activation --------------------------------------------------

def socket_spec(name):
    u = socket_unit(name)
    return {
        "path": one(u, "Socket", "ListenStream"),
        "name": one(u, "Socket", "FileDescriptorName"),
        "mode": int(one(u, "Socket", "SocketMode"), 8),
        "group": (u["Socket"].get("SocketGroup") or ["root"])[0],
    }


def connect_as(path, uid, gid, groups, method, params):
    """Connects to path as uid/gid/groups in a child process and makes one call.
    Returns "EACCES" when the connection is refused by the file's permissions, else the
    reply (the parsed JSON)."""
    code = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.settimeout(10)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except PermissionError:\n"
        "    print('EACCES'); sys.exit(0)\n"
        "s.sendall(json.dumps({'method': sys.argv[2], 'parameters': json.loads(sys.argv[3])}).encode() + b'\\0')\n"
        "buf = b''\n"
        "while not buf.endswith(b'\\0'):\n"
        "    c = s.recv(65536)\n"
        "    if not c: break\n"
        "    buf += c\n"
        "print(buf.rstrip(b'\\0').decode())\n")
    res = subprocess.run([sys.executable, "-c", code, path, method, __import__("json").dumps(params)],
                         user=uid, group=gid, extra_groups=groups, capture_output=True,
                         text=True, timeout=30, cwd="/")
    assert res.returncode == 0, res.stderr
    out = res.stdout.strip()
    return out if out == "EACCES" else __import__("json").loads(out)


def test_daemon_under_socket_activation_with_the_units_sockets():
    activate = shutil.which("systemd-socket-activate")
    assert activate, "systemd-socket-activate (package systemd) is required"
    specs = [socket_spec("heare-authd.socket"), socket_spec("heare-authd-admin.socket")]
    assert [s["name"] for s in specs] == ["verify", "admin"]

    d = Daemon(start=False)
    try:
        # The units' socket file names, under a private directory instead of /run.
        paths = {s["name"]: os.path.join(d.dir, os.path.basename(s["path"])) for s in specs}
        d.verify_sock, d.admin_sock = paths["verify"], paths["admin"]
        # Paths the daemon would bind if it ignored the passed sockets: must stay unused.
        own = [os.path.join(d.dir, "own-verify.sock"), os.path.join(d.dir, "own-admin.sock")]
        argv = [activate]
        for s in specs:
            argv += ["-l", paths[s["name"]]]
        argv += ["--fdname=" + ":".join(s["name"] for s in specs),
                 "-E", "NOTIFY_SOCKET=" + os.path.join(d.dir, "notify.sock"),
                 *sanitizer_setenv_args(),
                 HEARE_AUTHD, "--store", d.store_url, "--cache", d.cache_path,
                 "--verify-socket", own[0], "--admin-socket", own[1], "--threads", "2"]
        d.spawn(argv, wait_ready=False)
        wait_for(lambda: all(os.path.exists(p) for p in paths.values()), 10,
                 what="systemd-socket-activate to listen")

        # What systemd does with SocketMode=/SocketGroup=. The verify socket's group is
        # heare-auth; where this machine has no such group, another stands in for it.
        try:
            verify_gid = grp.getgrnam(specs[0]["group"]).gr_gid
        except KeyError:
            verify_gid = grp.getgrnam("nogroup").gr_gid
        for s in specs:
            gid = verify_gid if s["name"] == "verify" else grp.getgrnam(s["group"]).gr_gid
            os.chown(paths[s["name"]], 0, gid)
            os.chmod(paths[s["name"]], s["mode"])

        # The first connection starts the daemon, which must answer it.
        health = ok(d.call("io.heare.Auth.GetHealth", {}, "verify"))
        d.wait_ready()
        assert health["status"] == "healthy"
        assert not any(os.path.exists(p) for p in own), "the daemon bound sockets itself"
        log = d.raw_log()
        assert "socket-activated 'verify'" in log and "socket-activated 'admin'" in log, log

        # Interfaces by socket: admin calls only on the admin socket.
        denied = d.call(ADMIN_IF + ".ListKeys", {}, "verify")
        assert denied.get("error") == ADMIN_IF + ".PermissionDenied"
        key, secret = d.create("activated")
        assert d.verify(secret)["valid"] is True

        # The modes at work: a member of the verify socket's group may verify and may not
        # reach the admin socket; a user outside the group reaches neither.
        nobody = 65534
        member = connect_as(paths["verify"], nobody, verify_gid, [verify_gid],
                            "io.heare.Auth.Verify", {"key": secret})
        assert member != "EACCES" and member["parameters"]["valid"] is True
        d.watch(secret)
        assert connect_as(paths["admin"], nobody, verify_gid, [verify_gid],
                          ADMIN_IF + ".ListKeys", {}) == "EACCES"
        outsider_gid = 54321 if verify_gid != 54321 else 54322
        assert connect_as(paths["verify"], nobody, outsider_gid, [],
                          "io.heare.Auth.GetHealth", {}) == "EACCES"

        assert d.stop() == 0
        # systemd owns activated sockets: the daemon must not remove them.
        assert all(os.path.exists(p) for p in paths.values())
        assert not d.leaked_secrets(), d.leaked_secrets()
    finally:
        d.cleanup()
