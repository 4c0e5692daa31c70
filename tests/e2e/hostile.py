"""Hostile local clients and the canary that watches them (test_hostile.py, bench/hostile).

Attackers run in a child process of their own, as a hostile client would, so that their work
never stalls the canary's thread in this one. The canary verifies a key on its own
connection, one call at a time, and records every answer's latency."""
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time

PYTHON = "/usr/bin/python3"

# The daemon's threads and the canary's run at this nice level, the attackers at 19: the
# bounds are about how the daemon shares itself between its clients, not about whatever
# else a shared test machine runs meanwhile (a parallel build took the canary past 300 ms
# with every thread of the daemon idle).
WATCHED_NICE = -10


def prioritize(pid):
    """Sets every thread of process pid to WATCHED_NICE."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.setpriority(os.PRIO_PROCESS, int(tid), WATCHED_NICE)

# The attackers' process: opens its connections, writes its bytes to each without reading
# a reply (non-blocking, round robin, so one full socket does not stop the others), says
# "flooded" with the bytes written and holds the connections until stdin closes.
ATTACKER = r"""
import json, os, select, socket, sys, time
spec = json.loads(sys.argv[1])
os.nice(spec["nice"])
socks = []
for _ in range(spec["n"]):
    if spec["kind"] == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(spec["path"])
    else:
        s = socket.create_connection((spec["host"], spec["port"]))
    s.setblocking(False)
    socks.append(s)
payload = spec["payload"].encode("latin-1")
chunk = payload * max(1, 65536 // len(payload))
left = {s: spec["bytes"] for s in socks}
written = 0
stall = time.monotonic() + spec["stall"]
while left and time.monotonic() < stall:
    _, ready, _ = select.select([], list(left), [], 0.2)
    for s in ready:
        try:
            n = s.send(chunk[: min(len(chunk), left[s])])
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            del left[s]
            continue
        written += n
        left[s] -= n
        if left[s] <= 0:
            del left[s]
        stall = time.monotonic() + spec["stall"]
print(json.dumps({"written": written, "unfinished": len(left)}), flush=True)
sys.stdin.read()
for s in socks:
    s.close()
"""


class Attackers:
    """n connections that each write `total` bytes of payload and never read; the flood ends
    once every connection is done or none took a byte for `stall` seconds.

    They run at nice 19: on a machine of two cores, a process that writes hundreds of
    megabytes as fast as it can takes a core, and the kernel's scheduling of it would be
    what the canary measures. What the daemon does on their behalf runs at its own priority:
    that work, and how the daemon shares it out, is what is tested."""

    def __init__(self, n, payload, total, path=None, host=None, port=None, stall=3.0, nice=19):
        spec = {"n": n, "payload": payload.decode("latin-1"), "bytes": total, "stall": stall,
                "nice": nice,
                "kind": "unix" if path else "tcp", "path": path, "host": host, "port": port}
        self.proc = subprocess.Popen([PYTHON, "-c", ATTACKER, json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.result = None

    def wait_flooded(self, timeout=120):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the attackers did not finish their flood in time"
        line = self.proc.stdout.readline()
        assert line, "the attackers' process died"
        self.result = json.loads(line)
        return self.result

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


class Canary(threading.Thread):
    """Verifies `secret` on its own Varlink connection, one call at a time, until stopped:
    latencies in seconds, and every failure (wrong code, error, timeout, closed)."""

    def __init__(self, path, secret, timeout=5.0, pause=0.001):
        super().__init__(daemon=True)
        self.path = path
        self.secret = secret
        self.timeout = timeout
        self.pause = pause
        self.latencies = []
        self.failures = []
        self._stop_event = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.msg = json.dumps({"method": "io.heare.Auth.Verify",
                               "parameters": {"key": secret}}).encode() + b"\0"

    def call(self):
        t0 = time.perf_counter()
        self.sock.sendall(self.msg)
        buf = b""
        while not buf.endswith(b"\0"):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the daemon closed the canary's connection")
            buf += chunk
        dt = time.perf_counter() - t0
        reply = json.loads(buf[:-1])
        if reply.get("parameters", {}).get("code") != "VALID":
            raise AssertionError(f"canary got {reply}")
        return dt

    def run(self):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WATCHED_NICE)
        while not self._stop_event.is_set():
            try:
                self.latencies.append(self.call())
            except Exception as e:  # every failure is the test's to report
                self.failures.append(repr(e))
                return
            if self.pause:
                time.sleep(self.pause)

    def stop(self):
        self._stop_event.set()
        self.join(self.timeout + 5)
        self.sock.close()

    def percentile(self, p):
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")

    def summary(self):
        return (f"{len(self.latencies)} calls, p50 {self.percentile(0.5) * 1e3:.3f} ms, "
                f"p99 {self.percentile(0.99) * 1e3:.3f} ms, "
                f"max {max(self.latencies, default=0) * 1e3:.1f} ms, "
                f"failures {self.failures}")


def status_kib(pid, field):
    """A /proc/PID/status field in KiB: VmRSS now, VmHWM the peak."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak_rss(pid):
    """Starts VmHWM again from the current RSS (Linux: write 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the line, 12 and 13 after "(comm)".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle_rss(pid, limit_kib, timeout):
    """Waits up to timeout for RSS to fall to limit_kib; returns the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        rss = status_kib(pid, "VmRSS")
        if rss <= limit_kib or time.monotonic() >= deadline:
            return rss
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit("hostile.py is a module of the end-to-end tests and bench/hostile")
