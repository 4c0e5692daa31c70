#!/usr/bin/python3
"""One verify at a time on one connection, through each client for services, against the
raw load generator on the same socket (bench/clients builds first, then runs this).

bench/loadgen -c 1 -d 1 is the floor: a pre-rendered message written and its reply read,
nothing else. Then the same daemon, the same valid secrets, one call in flight:
libheare-auth (bench/client-bench), the Python client (heare_auth.Client, in this
process) and the Go example on the reference Varlink package (client/go/heare-auth-verify
-repeat). The goal of issue 20: the C library within 1.2x of loadgen at p50. loadgen and
client-bench share bench/hist.h (upper bucket edges, <= 3 % high); Python and Go report
exact percentiles of their samples."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Bench, log  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import heare_auth  # noqa: E402

GOCODE = "/usr/share/gocode"


def kv(out):
    return {k: float(v) for k, v in (p.split("=", 1) for p in out.split())}


def percentile(sorted_ns, p):
    return sorted_ns[min(len(sorted_ns) - 1, int(p / 100.0 * len(sorted_ns)))] / 1000.0


def python_client(sock, secrets, seconds, warmup):
    samples = []
    with heare_auth.Client(socket=sock, timeout=1.0) as c:
        start = time.perf_counter_ns()
        measure = start + int(warmup * 1e9)
        end = measure + int(seconds * 1e9)
        t0 = start
        i = 0
        while t0 < end:
            r = c.verify(secrets[i % len(secrets)])
            t1 = time.perf_counter_ns()
            assert r.valid, r
            if t0 >= measure:
                samples.append(t1 - t0)
            t0 = t1
            i += 1
    samples.sort()
    return {"requests": len(samples), "p50_us": percentile(samples, 50),
            "p99_us": percentile(samples, 99)}


def go_example(work, sock, secrets, calls):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GO111MODULE="off", GOPATH=f"{work}/go:{GOCODE}", GOCACHE=f"{work}/go/cache",
               GOPROXY="off", GOFLAGS="", CGO_ENABLED="0", HOME=work)
    src = os.path.join(work, "go", "src", "heare-auth-verify")
    shutil.copytree(os.path.join(ROOT, "client", "go", "heare-auth-verify"), src)
    binary = os.path.join(work, "heare-auth-verify")
    subprocess.run(["go", "build", "-o", binary, "heare-auth-verify"], cwd=work, env=env,
                   check=True, timeout=600)
    keys = secrets[:200]
    repeat = max(1, calls // len(keys))
    res = subprocess.run([binary, "-socket", sock, "-repeat", str(repeat)],
                         input="".join(k + "\n" for k in keys), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    r = kv(res.stderr)
    return {"requests": r["calls"], "p50_us": r["p50_us"], "p99_us": r["p99_us"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    args = ap.parse_args()

    B = Bench(args)
    try:
        B.secrets_1k = os.path.join(B.w, "secrets-1k.txt")
        store = B.keygen(1000, 2, "keys-1k.json", B.secrets_1k)
        with open(B.secrets_1k) as f:
            secrets = [l.strip() for l in f if l.strip()]
        _, ready = B.daemon(store)
        sock = B.vsock
        log(f"heare-authd ready in {ready:.2f} s on {sock}")

        rows = []
        log("loadgen -c 1 -d 1 (raw Varlink, the floor)")
        r = B.loadgen(sock, 1, 1, args.duration, mix="100:0:0", warmup=args.warmup)
        rows.append(("loadgen -c 1 -d 1 (raw)", r))
        log("libheare-auth (bench/client-bench)")
        out = subprocess.run([B.bin("bench/client-bench"), "-s", sock, "-k", B.secrets_1k,
                              "-t", str(args.duration), "-w", str(args.warmup)],
                             check=True, capture_output=True, text=True,
                             env=dict(os.environ, LD_LIBRARY_PATH=B.bin("client")),
                             timeout=args.duration + 120).stdout
        c = kv(out)
        assert c["invalid"] == 0, out
        rows.append(("C: libheare-auth", c))
        log("Python: heare_auth.Client")
        rows.append(("Python: heare_auth.Client", python_client(sock, secrets, args.duration,
                                                                args.warmup)))
        log("Go: client/go/heare-auth-verify (reference Varlink package)")
        calls = int(max(c["requests"], 1000) * 0.5)
        rows.append(("Go: heare-auth-verify -repeat", go_example(B.w, sock, secrets, calls)))

        base = rows[0][1]["p50_us"]
        print(f"one Verify at a time on one connection, {os.cpu_count()} CPUs, "
              f"{args.duration:g} s each (Go: a fixed number of calls)")
        print(f"{'client':34} {'calls':>9} {'p50 us':>9} {'p99 us':>9} {'p50 / raw':>10}")
        for name, r in rows:
            print(f"{name:34} {int(r['requests']):>9} {r['p50_us']:>9.1f} {r['p99_us']:>9.1f} "
                  f"{r['p50_us'] / base:>10.2f}")
        ratio = rows[1][1]["p50_us"] / base
        print(f"goal: C library p50 within 1.2x of raw loadgen: {ratio:.2f}x "
              f"{'met' if ratio <= 1.2 else 'NOT met'}")
    finally:
        B.cleanup()
        shutil.rmtree(B.w, ignore_errors=True)


if __name__ == "__main__":
    main()
