"""bench/journal: the daemon logging to a real systemd-journald (run by bench/journal).

journald runs outside PID 1, in a private mount namespace with its own sockets and a
runtime journal on tmpfs, with its default rate limit (10 000 lines per 30 s per unit).
For each log-verify mode (all, summary) and each rate (10 k/s, 100 k/s, as fast as one
pipelining client goes), the release daemon verifies for --duration seconds while an
operator creates keys now and then; then the journal is read back. Prints per run: the
verifications made, the verification lines the journal kept and the number journald says
it suppressed, the audit events kept of those made, and the CPU of journald and of the
daemon."""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "e2e"))

from hostile import cpu_seconds  # noqa: E402
from run import NO_THROTTLE, Bench, log  # noqa: E402

JOURNAL_DIR = "/run/log/journal"
CREATES = 20
# journald rate-limits by unit, which it reads from the sender's cgroup: the daemon runs in
# the one systemd would give it (the "name=systemd" hierarchy on a hybrid host like this
# one, else the unified one), or journald would see no unit and limit nothing.
CGROUPS = ("/sys/fs/cgroup/systemd/system.slice/heare-authd.service",
           "/sys/fs/cgroup/unified/system.slice/heare-authd.service",
           "/sys/fs/cgroup/system.slice/heare-authd.service")


def unit_cgroup():
    """The cgroup.procs files to join before exec, as the daemon's unit would be."""
    procs = []
    for d in CGROUPS:
        if os.path.isdir(os.path.dirname(os.path.dirname(d))):
            try:
                os.makedirs(d, exist_ok=True)
                procs.append(os.path.join(d, "cgroup.procs"))
            except OSError:
                pass
    if not procs:
        raise RuntimeError("no cgroup hierarchy to put the daemon in a unit's cgroup")
    return procs


def join_cgroups(procs):
    def join():
        for path in procs:
            with open(path, "w") as f:
                f.write(str(os.getpid()))
    return join


def private_journald():
    """Mounts tmpfs over journald's paths (this process is in a private mount namespace)
    and starts journald; returns its process."""
    for d in ("/run/systemd", JOURNAL_DIR, "/var/log/journal"):
        os.makedirs(d, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", d], check=True)
    os.makedirs("/run/systemd/journal", exist_ok=True)
    p = subprocess.Popen(["/lib/systemd/systemd-journald"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists("/run/systemd/journal/socket"):
        if time.monotonic() > deadline or p.poll() is not None:
            raise RuntimeError("systemd-journald did not start")
        time.sleep(0.05)
    return p


def pace(sock_path, secret, rate, seconds):
    """Verifies at `rate` calls a second (0: as fast as 64 in flight go) on one connection;
    returns the calls answered."""
    msg = json.dumps({"method": "io.heare.Auth.Verify",
                      "parameters": {"key": secret}}).encode() + b"\0"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    done = 0
    tick = 0.01
    batch = max(1, int(rate * tick)) if rate else 64
    t0 = time.monotonic()
    next_t = t0
    while time.monotonic() - t0 < seconds:
        s.sendall(msg * batch)
        want = batch
        while want:
            want -= s.recv(1 << 20).count(b"\0")
        done += batch
        if rate:
            next_t += tick
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    s.close()
    return done


def admin(admin_sock, method, params):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(admin_sock)
    s.sendall(json.dumps({"method": method, "parameters": params}).encode() + b"\0")
    buf = b""
    while not buf.endswith(b"\0"):
        buf += s.recv(65536)
    s.close()
    return json.loads(buf[:-1])


def journal_counts(since_usec):
    out = subprocess.run(["journalctl", "-D", JOURNAL_DIR, "-o", "json", "--no-pager",
                          "--since", f"@{since_usec / 1e6:.6f}"],
                         capture_output=True, text=True, check=True).stdout
    counts, suppressed = {}, 0
    for line in out.splitlines():
        e = json.loads(line)
        ev = e.get("HEARE_EVENT")
        if ev:
            counts[ev] = counts.get(ev, 0) + 1
            if ev == "verification_summary":
                c = json.loads(e.get("HEARE_COUNTS", "{}"))
                counts["summarised"] = counts.get("summarised", 0) + sum(c.values())
        m = re.search(r"Suppressed (\d+) messages", str(e.get("MESSAGE", "")))
        if m:
            suppressed += int(m.group(1))
    return counts, suppressed


def run_one(B, a, store, secret, jpid, mode, rate):
    w = tempfile.mkdtemp(prefix="heare-journal.", dir=B.w)
    vsock, asock = os.path.join(w, "verify.sock"), os.path.join(w, "admin.sock")
    since = time.time_ns() // 1000
    p = subprocess.Popen([B.bin("daemon/heare-authd"), "--store", "file://" + store,
                          "--cache", "", "--verify-socket", vsock, "--admin-socket", asock,
                          "--log-format", "journal", "--log-verify", mode,
                          "--metrics-interval", "10s", "--max-failures-per-minute",
                          NO_THROTTLE], stdin=subprocess.DEVNULL,
                         preexec_fn=join_cgroups(unit_cgroup()))
    deadline = time.monotonic() + 60
    while not os.path.exists(vsock):
        if time.monotonic() > deadline or p.poll() is not None:
            raise RuntimeError("heare-authd did not start")
        time.sleep(0.05)
    time.sleep(0.3)
    j0, d0, t0 = cpu_seconds(jpid), cpu_seconds(p.pid), time.monotonic()

    made = []

    def operator():
        for i in range(CREATES):
            time.sleep(a.duration / (CREATES + 1))
            r = admin(asock, "io.heare.AuthAdmin.CreateKey", {"name": f"audit-{mode}-{i}"})
            if "error" not in r:
                made.append(r)
    t = threading.Thread(target=operator)
    t.start()
    calls = pace(vsock, secret, rate, a.duration)
    t.join()
    elapsed = time.monotonic() - t0
    jcpu, dcpu = cpu_seconds(jpid) - j0, cpu_seconds(p.pid) - d0
    p.terminate()
    p.wait(30)
    time.sleep(1.0)  # let journald write what it has
    counts, suppressed = journal_counts(since)
    lines = counts.get("verification_success", 0) + counts.get("verification_failed", 0)
    return {"mode": mode, "rate": rate or "max", "calls": calls, "rps": calls / elapsed,
            "lines": lines, "summaries": counts.get("verification_summary", 0),
            "summarised": counts.get("summarised", 0), "suppressed": suppressed,
            "audit": counts.get("key_created", 0), "audit_made": len(made),
            "journald_cpu": jcpu / elapsed, "daemon_cpu": dcpu / elapsed}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--duration", type=float, default=30.0)
    a = ap.parse_args()
    if os.environ.get("HEARE_JOURNAL_NS") != "1":
        # A private mount namespace, so journald's sockets and journal are this run's only.
        os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private",
                               sys.executable] + sys.argv,
                   dict(os.environ, HEARE_JOURNAL_NS="1"))
    B = Bench(a)
    rows = []
    j = private_journald()
    try:
        secrets = os.path.join(B.w, "secrets.txt")
        store = B.keygen(1000, 2, "keys.json", secrets)
        with open(secrets) as f:
            secret = f.readline().strip()
        for mode in ("all", "summary"):
            for rate in (10000, 100000, 0):
                log(f"log-verify={mode}, {rate or 'max'} verifications/s, {a.duration:.0f} s")
                rows.append(run_one(B, a, store, secret, j.pid, mode, rate))
    finally:
        j.terminate()
        j.wait(10)
        B.cleanup()
    print(f"{'log-verify':10} {'rate/s':>7} {'verify/s':>9} {'lines kept':>10} "
          f"{'summaries':>9} {'summed':>9} {'suppressed':>10} {'audit kept':>10} "
          f"{'journald':>8} {'daemon':>7}")
    for r in rows:
        print(f"{r['mode']:10} {str(r['rate']):>7} {r['rps']:9.0f} {r['lines']:10d} "
              f"{r['summaries']:9d} {r['summarised']:9d} {r['suppressed']:10d} "
              f"{r['audit']:>4d} of {r['audit_made']:<3d} {r['journald_cpu']:8.0%} "
              f"{r['daemon_cpu']:7.0%}")


if __name__ == "__main__":
    main()
