"""docs/clients.md, run: every code block of the page (socat, C, Python, Go, nginx and
curl) is taken from the page as written and run against a real daemon, and the page may
hold no other block. The addresses the page uses (127.0.0.1:8000, :8080, :9000) are
replaced by free ports. Also the fuller Go example, client/go/heare-auth-verify."""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import ROOT, free_port, http_daemon_args, http_request, legacy_id, wait_for
from test_client_c import compile_c, lib_env
from test_go_varlink import GOCODE, go_env
from test_http_peers import NGINX, upstream  # noqa: F401 (a fixture)

DOC = os.path.join(ROOT, "docs", "clients.md")
GO_EXAMPLE = os.path.join(ROOT, "client", "go", "heare-auth-verify")
PYTHON_CLIENT = os.path.join(ROOT, "client", "python")
# The languages of the page's blocks, in order: each is run below.
LANGUAGES = ["sh", "", "c", "python", "go", "nginx", "sh"]


def blocks():
    with open(DOC) as f:
        text = f.read()
    found = re.findall(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)
    assert [lang for lang, _ in found] == LANGUAGES, \
        "a block was added to docs/clients.md: run it in this test"
    return found


def block(lang, nth=0):
    return [code for l, code in blocks() if l == lang][nth]


@pytest.fixture
def doc_daemon(make_daemon):
    """A daemon with an HTTP listener and the page's key, MyService with documents.read."""
    args, (_, http_port) = http_daemon_args()
    d = make_daemon(extra_args=args)
    key, secret = d.create("MyService", scopes=["documents.read"])
    d.watch(secret)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARE_AUTH_")}
    env.update(SECRET=secret, HEARE_AUTH_VERIFY_SOCKET=d.verify_sock)
    return d, key, secret, env, http_port


def run(argv, env, input=None, timeout=60):
    return subprocess.run(argv, input=input, env=env, capture_output=True, text=True,
                          timeout=timeout)


def go_build(source_dir, name, tmp):
    assert shutil.which("go") and os.path.isdir(os.path.join(GOCODE, "src/github.com/varlink"))
    src = os.path.join(tmp, "src", name)
    shutil.copytree(source_dir, src)
    binary = os.path.join(tmp, "bin", name)
    res = subprocess.run(["go", "build", "-o", binary, name], cwd=tmp, env=go_env(tmp),
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, f"go build {name}:\n{res.stdout}{res.stderr}"
    return binary


def test_shell_socat(doc_daemon):
    d, key, secret, env, _ = doc_daemon
    res = run(["bash", "-euo", "pipefail", "-c", block("sh")], env)
    assert res.returncode == 0, res
    reply = json.loads(res.stdout)
    p = reply["parameters"]
    assert (p["valid"], p["code"], p["key_id"], p["name"]) == (True, "VALID", key["id"],
                                                               "MyService"), reply
    # The page's sample of the reply is its start, as printed.
    sample = block("").strip()
    head = sample.split("key_…")[0]
    assert res.stdout.startswith(head) and res.stdout.startswith(head + key["id"]), res.stdout
    assert '"name":"MyService"' in res.stdout


def test_c(doc_daemon, tmp_path):
    d, key, secret, env, _ = doc_daemon
    src = tmp_path / "verify.c"
    src.write_text(block("c"))
    binary = compile_c(str(src), str(tmp_path / "verify"))
    env = lib_env({"HEARE_AUTH_VERIFY_SOCKET": d.verify_sock})
    res = run([binary], env, input=secret + "\n")
    assert res.returncode == 0, res
    assert res.stdout == f"VALID {key['id']} (MyService)\n  scope documents.read\n", res.stdout
    res = run([binary], env, input=legacy_id("sec") + "\n")
    assert res.returncode == 1 and res.stdout == "NOT_FOUND - (-)\n", res
    d.stop()
    res = run([binary], env, input=secret + "\n")
    assert res.returncode == 2 and res.stderr.startswith("cannot verify: "), res


def test_python(doc_daemon):
    d, key, secret, env, _ = doc_daemon
    env = dict(env, PYTHONPATH=PYTHON_CLIENT)
    res = run(["/usr/bin/python3", "-c", block("python")], env, input=secret + "\n")
    assert res.returncode == 0, res
    assert res.stdout == f"VALID {key['id']} (MyService) ['documents.read']\nTrue healthy\n", \
        res.stdout
    d.stop()
    res = run(["/usr/bin/python3", "-c", block("python")], env, input=secret + "\n")
    assert res.returncode == 1 and res.stderr.startswith("cannot verify: "), res


def test_go(doc_daemon, tmp_path):
    d, key, secret, env, _ = doc_daemon
    (tmp_path / "doc").mkdir()
    (tmp_path / "doc" / "main.go").write_text(block("go"))
    binary = go_build(str(tmp_path / "doc"), "heare-doc-verify", str(tmp_path / "gopath"))
    res = run([binary], env, input=secret + "\n")
    assert res.returncode == 0, res
    assert res.stdout == f"VALID {key['id']} (MyService) [documents.read]\n", res.stdout
    res = run([binary], env, input="not a key\n")
    assert res.returncode == 1 and res.stdout == "MALFORMED\n", res


def test_go_example_program(doc_daemon, tmp_path):
    d, key, secret, env, _ = doc_daemon
    binary = go_build(GO_EXAMPLE, "heare-auth-verify", str(tmp_path / "gopath"))
    other = legacy_id("sec")
    res = run([binary], env, input=f"{secret}\n{other}\n")
    assert res.returncode == 1, res
    assert res.stdout == f"VALID {key['id']} (MyService)\nNOT_FOUND - (-)\n", res.stdout
    res = run([binary, "-socket", d.verify_sock, "-scope", "documents.read", "-repeat", "20"],
              {k: v for k, v in env.items() if k != "HEARE_AUTH_VERIFY_SOCKET"},
              input=secret + "\n")
    assert res.returncode == 0 and res.stdout == f"VALID {key['id']} (MyService)\n", res
    assert re.fullmatch(r"calls=20 p50_us=[\d.]+ p99_us=[\d.]+\n", res.stderr), res.stderr
    res = run([binary, "-scope", "billing.write"], env, input=secret + "\n")
    assert res.returncode == 1 and res.stdout.startswith("FORBIDDEN "), res
    d.stop()
    res = run([binary], env, input=secret + "\n")
    assert res.returncode == 2 and "heare-auth-verify: " in res.stderr, res


NGINX_WRAPPER = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{server}
}}
"""


def test_nginx_and_http(doc_daemon, upstream, tmp_path):  # noqa: F811
    d, key, secret, env, http_port = doc_daemon
    assert os.access(NGINX, os.X_OK), "nginx is missing: tests/run installs it"
    port = free_port()

    def ports(text):
        return (text.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
                .replace("127.0.0.1:8080", f"127.0.0.1:{http_port}")
                .replace("127.0.0.1:9000", f"127.0.0.1:{upstream}"))

    tmp = str(tmp_path)
    os.chmod(tmp, 0o755)  # nginx's workers run as nobody
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_WRAPPER.format(dir=tmp, server=ports(block("nginx"))))
    log = open(os.path.join(tmp, "nginx.out"), "wb")
    proc = subprocess.Popen([NGINX, "-c", conf, "-p", tmp], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        def up():
            assert proc.poll() is None, open(os.path.join(tmp, "error.log")).read()
            try:
                http_request("127.0.0.1", port, "GET", "/", timeout=1)
                return True
            except OSError:
                return False
        wait_for(up, 10, what="nginx listening")

        curl_through_nginx, curl_verify = ports(block("sh", 1)).strip().split("\n")
        res = run(["bash", "-euo", "pipefail", "-c", curl_through_nginx], env)
        assert res.returncode == 0, res
        seen = json.loads(res.stdout)  # the protected service echoes its headers
        assert (seen["x-auth-key-id"], seen["x-auth-key-name"]) == (key["id"], "MyService")
        res = run(["bash", "-euo", "pipefail", "-c", curl_verify], env)
        assert res.returncode == 0, res
        v = json.loads(res.stdout)
        assert (v["valid"], v["code"], v["key_id"]) == (True, "VALID", key["id"]), v
        # Without a key, nginx passes the daemon's 401 on.
        assert http_request("127.0.0.1", port, "GET", "/documents/report").status == 401
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
