"""Real peers of the HTTP listener: Debian's nginx doing auth_request against /auth in front
of an upstream that echoes the headers it gets, and a client in another network namespace
(over a veth pair) that /refresh must refuse because it is not loopback."""
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid

import pytest

from conftest import free_port, http_daemon_args, http_request, raw_http, wait_for

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

NGINX_CONF = """
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

    upstream heare_auth {{ server 127.0.0.1:{auth_port}; keepalive 8; }}

    server {{
        listen 127.0.0.1:{port};

        # The tested snippet of docs/http.md.
        location = /_heare_auth {{
            internal;
            proxy_pass http://heare_auth/auth;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Auth-Scope $heare_scope;
        }}

        location /docs/ {{
            set $heare_scope "docs.read";
            auth_request /_heare_auth;
            auth_request_set $heare_key_id $upstream_http_x_auth_key_id;
            auth_request_set $heare_key_name $upstream_http_x_auth_key_name;
            proxy_set_header X-Auth-Key-Id $heare_key_id;
            proxy_set_header X-Auth-Key-Name $heare_key_name;
            proxy_pass http://127.0.0.1:{upstream_port};
        }}

        # POST /verify passed through, on kept-alive upstream connections: where a
        # request hidden in another's body would land if the two framed it differently.
        location = /verify {{
            proxy_pass http://heare_auth/verify;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}

        location /admin/ {{
            set $heare_scope "admin.write";
            auth_request /_heare_auth;
            auth_request_set $heare_key_id $upstream_http_x_auth_key_id;
            proxy_set_header X-Auth-Key-Id $heare_key_id;
            proxy_pass http://127.0.0.1:{upstream_port};
        }}
    }}
}}
"""


class Echo(http.server.BaseHTTPRequestHandler):
    """The protected service: answers with the request headers it received, as JSON."""

    def do_GET(self):
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def upstream():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def nginx(make_daemon, upstream, tmpdir_e2e):
    assert os.access(NGINX, os.X_OK), "nginx is missing: tests/run installs it"
    args, (_, auth_port) = http_daemon_args()
    d = make_daemon(extra_args=args)
    port = free_port()
    conf = os.path.join(tmpdir_e2e, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=tmpdir_e2e, port=port, auth_port=auth_port,
                                  upstream_port=upstream))
    # nginx's workers run as nobody: they need to reach the temp dirs
    os.chmod(tmpdir_e2e, 0o755)
    log = open(os.path.join(tmpdir_e2e, "nginx.out"), "wb")
    proc = subprocess.Popen([NGINX, "-c", conf, "-p", tmpdir_e2e], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)

    def up():
        if proc.poll() is not None:
            pytest.fail("nginx exited: " + open(os.path.join(tmpdir_e2e, "nginx.out")).read()
                        + open(os.path.join(tmpdir_e2e, "error.log")).read())
        try:
            http_request("127.0.0.1", port, "GET", "/", timeout=1)
            return True
        except OSError:
            return False

    wait_for(up, 10, what="nginx listening")
    yield d, port
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    log.close()


def via_nginx(port, path, headers=None):
    return http_request("127.0.0.1", port, "GET", path, headers=headers)


def test_nginx_auth_request(nginx):
    d, port = nginx
    key, secret = d.create("nginx-client", scopes=["docs.read"])
    d.watch(secret)
    gone, gone_secret = d.create("deleted")
    d.call("io.heare.AuthAdmin.DeleteKey", {"id": gone["id"]})
    d.watch(gone_secret)

    # no key
    r = via_nginx(port, "/docs/a")
    assert r.status == 401
    assert r.headers.get("www-authenticate") == 'Bearer realm="heare-auth"'
    # bad keys
    assert via_nginx(port, "/docs/a", {"Authorization": f"Bearer {gone_secret}"}).status == 401
    assert via_nginx(port, "/docs/a", {"X-API-Key": "sec_1" + "Z" * 38}).status == 401
    # good key, both ways of passing it: the upstream sees who it was
    for headers in ({"Authorization": f"Bearer {secret}"}, {"X-API-Key": secret}):
        r = via_nginx(port, "/docs/a", headers)
        assert r.status == 200, r.body
        seen = r.json()
        assert seen["x-auth-key-id"] == key["id"]
        assert seen["x-auth-key-name"] == "nginx-client"
    # a scope the key lacks
    assert via_nginx(port, "/admin/x", {"Authorization": f"Bearer {secret}"}).status == 403
    # the verifications went through the daemon, with nginx as the peer
    assert d.verify(secret)["code"] == "VALID"
    ev = [e for e in d.events("verification_success") if e.get("peer_addr") == "127.0.0.1"]
    assert len(ev) >= 2


def nginx_raw(port, data, timeout=3.0):
    """Sends raw bytes to nginx; returns what it answers until it closes (or timeout)."""
    return raw_http("127.0.0.1", port, data, timeout)


SMUGGLED_KEY = "smuggled-" + "x" * 30


@pytest.mark.parametrize("case", ["content-length-twice", "cl-te", "te-cl", "folded"])
def test_nginx_does_not_pass_a_smuggled_request(nginx, case):
    """Requests that frame ambiguously, sent to nginx in front of the daemon, with a
    second request hidden where one reading of the framing puts it. nginx refuses some
    itself and reframes what it passes on; whichever way, the daemon must never answer
    the hidden request, and the proxy keeps working."""
    d, port = nginx
    key, secret = d.create("nginx-framing")
    d.watch(secret)
    hidden_body = json.dumps({"api_key": SMUGGLED_KEY}).encode()
    hidden = (b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(hidden_body)
              + hidden_body)
    body = json.dumps({"api_key": secret}).encode()
    head = b"POST /verify HTTP/1.1\r\nHost: x\r\n"
    data = {
        "content-length-twice": head + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
        % (len(body), len(body) + len(hidden)) + body + hidden,
        "cl-te": head + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
        % (5 + len(hidden)) + b"0\r\n\r\n" + hidden,
        "te-cl": head + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
        + b"%x\r\n" % len(hidden) + hidden + b"\r\n0\r\n\r\n",
        "folded": head + b"X-Note: a\r\n Content-Length: 0\r\nContent-Length: %d\r\n\r\n"
        % len(body) + body,
    }[case]
    out = nginx_raw(port, data)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", out)
    assert statuses and statuses[0] in (b"200", b"400", b"401"), out
    # kept-alive upstream connections are reused: a hidden request left on one would be
    # read now, before or with these
    for _ in range(3):
        r = http_request("127.0.0.1", port, "POST", "/verify", body=json.dumps({"api_key": secret}))
        assert r.status == 200, r.body
    time.sleep(0.2)
    seen = [e for e in d.logs() if e.get("event", "").startswith("verification")
            and (e.get("key_prefix") or "").startswith("smuggled")]
    assert not seen, seen
    assert not d.leaked_secrets()


# -- /refresh from a peer that is not loopback ------------------------------------------------

def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20,
                          check=check)


@pytest.fixture
def netns():
    """A network namespace joined to this one by a veth pair: host side 10.213.N.1, namespace
    side 10.213.N.2, for a random N, so two runs on one machine (tests/run beside
    tests/fresh-machine, which shares this network namespace) do not take the same
    address. Yields (namespace, host address, namespace address); removed afterwards."""
    assert os.geteuid() == 0, "this test makes a network namespace: it runs as root in CI"
    tag = uuid.uuid4().hex[:6]
    net = f"10.213.{int(tag[:2], 16)}"
    ns, host_if, ns_if = f"heare-t-{tag}", f"vh{tag}", f"vn{tag}"
    try:
        ip("netns", "add", ns)
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", f"{net}.1/24", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{net}.2/24", "dev", ns_if)
        ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, f"{net}.1", f"{net}.2"
    finally:
        ip("link", "del", host_if, check=False)
        ip("netns", "del", ns, check=False)


def curl_in(ns, *args):
    res = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "--max-time", "10",
                          "-o", "/dev/stdout", "-w", "\n%{http_code}", *args],
                         capture_output=True, text=True, timeout=30)
    body, _, code = res.stdout.rpartition("\n")
    return int(code or 0), body


def test_refresh_refused_from_a_non_loopback_peer(make_daemon, netns):
    ns, host_addr, ns_addr = netns
    port = free_port(host_addr)
    d = make_daemon(extra_args=["--http-listen", f"{host_addr}:{port}"])
    key, secret = d.create("remote")
    d.watch(secret)
    url = f"http://{host_addr}:{port}"

    # the other host is served...
    code, body = curl_in(ns, "-X", "POST", "-d", json.dumps({"api_key": secret}),
                         url + "/verify")
    assert code == 200 and json.loads(body)["key_id"] == key["id"]
    # ...but may not refresh, whatever headers it sends
    for extra in ([], ["-H", "X-Forwarded-For: 127.0.0.1"], ["-H", "X-Real-IP: 127.0.0.1"],
                  ["-H", "Forwarded: for=127.0.0.1"], ["-H", "Host: localhost"]):
        code, body = curl_in(ns, "-X", "POST", *extra, url + "/refresh")
        assert code == 403, (extra, body)
        assert "loopback" in json.loads(body)["detail"]
    refused = wait_for(lambda: d.events("refresh_refused"), 5, what="refusal logged")
    assert refused[0]["peer_addr"] == ns_addr
    # this host, through the non-loopback address, is not loopback either
    r = http_request(host_addr, port, "POST", "/refresh")
    assert r.status == 403
    # health from the other host is fine
    code, body = curl_in(ns, url + "/health")
    assert code == 200 and json.loads(body)["status"] == "healthy"
