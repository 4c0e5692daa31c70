"""packaging/rpm/heare-auth.spec builds with `rpmbuild -bb` (Debian's rpm package; build
dependencies are Fedora names, so --nodeps) from a tarball of the tree, and the package
holds the files the Debian one does."""
import os
import re
import shutil
import subprocess
import tarfile
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(ROOT, "packaging", "rpm", "heare-auth.spec")
# The PAM subpackage is built once pam/ is in the tree (until then: --without pam).
HAVE_PAM = os.path.exists(os.path.join(ROOT, "pam", "meson.build"))


def project_version():
    with open(os.path.join(ROOT, "meson.build")) as f:
        return re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)


def run(argv, timeout=600):
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{argv}:\n{res.stdout[-6000:]}\n{res.stderr[-6000:]}"
    return res.stdout


def tree_filter(info):
    parts = info.name.split("/")
    if len(parts) > 1 and (parts[1] in (".git", "__pycache__", ".pytest_cache")
                           or parts[1].startswith("build")):
        return None
    return info


@pytest.fixture(scope="module")
def rpms():
    version = project_version()
    top = tempfile.mkdtemp(prefix="heare-rpm-")
    for d in ("SOURCES", "BUILD", "RPMS", "SRPMS", "SPECS"):
        os.makedirs(os.path.join(top, d))
    with tarfile.open(os.path.join(top, "SOURCES", f"heare-auth-{version}.tar.gz"), "w:gz") as t:
        t.add(ROOT, arcname=f"heare-auth-{version}", filter=tree_filter)
    argv = ["rpmbuild", "-bb", "--nodeps", "--define", f"_topdir {top}",
            "--define", "debug_package %{nil}", SPEC]
    if not HAVE_PAM:
        argv[2:2] = ["--without", "pam"]
    run(argv, timeout=900)
    out = {}
    for dirpath, _, files in os.walk(os.path.join(top, "RPMS")):
        for f in files:
            out[re.match(r"(.+)-[^-]+-[^-]+\.[^.]+\.rpm$", f).group(1)] = os.path.join(dirpath, f)
    yield out
    shutil.rmtree(top, ignore_errors=True)


def test_spec_parses_and_matches_the_project_version():
    out = run(["rpmspec", "-q", "--qf", "%{NAME} %{VERSION}\n", SPEC])
    assert f"heare-auth {project_version()}" in out.splitlines()


def test_packages(rpms):
    assert set(rpms) == {"heare-auth", "heare-auth-libs", "heare-auth-devel",
                         "python3-heare-auth"} | ({"pam_heare_auth"} if HAVE_PAM else set())


def test_contents(rpms):
    files = set(run(["rpm", "-qlp", rpms["heare-auth"]]).split())
    unitdir = run(["pkg-config", "--variable=systemdsystemunitdir", "systemd"]).strip()
    for f in ["/usr/sbin/heare-authd", "/usr/bin/heare-auth", "/etc/heare-auth/heare-authd.conf",
              "/usr/lib/sysusers.d/heare-auth.conf", "/usr/lib/tmpfiles.d/heare-auth.conf"] + \
             [f"{unitdir}/{u}" for u in ("heare-authd.service", "heare-authd.socket",
                                         "heare-authd-admin.socket", "heare-authd-http.socket")]:
        assert f in files, f
    for page in ("man1/heare-auth.1", "man5/heare-authd.conf.5", "man8/heare-authd.8"):
        assert any(f.startswith(f"/usr/share/man/{page}") for f in files), page
    assert run(["rpm", "-qcp", rpms["heare-auth"]]).split() == ["/etc/heare-auth/heare-authd.conf"]
    scripts = run(["rpm", "-qp", "--scripts", rpms["heare-auth"]])
    assert scripts.index("systemd-sysusers") < scripts.index("systemd-tmpfiles")
    if HAVE_PAM:
        pam = run(["rpm", "-qlp", rpms["pam_heare_auth"]]).split()
        assert any(f.endswith("/security/pam_heare_auth.so") for f in pam), pam
        assert any("pam_heare_auth.8" in f for f in pam), pam


def test_client_packages(rpms):
    libs = run(["rpm", "-qlp", rpms["heare-auth-libs"]]).split()
    assert any(re.search(r"/libheare-auth\.so\.0$", f) for f in libs), libs
    assert any(re.search(r"/libheare-auth\.so\.0\.\d", f) for f in libs), libs
    devel = run(["rpm", "-qlp", rpms["heare-auth-devel"]]).split()
    for want in (r"^/usr/include/heare-auth\.h$", r"/libheare-auth\.so$",
                 r"/pkgconfig/heare-auth\.pc$", r"/man3/heare-auth\.3", r"/clients\.md$"):
        assert any(re.search(want, f) for f in devel), (want, devel)
    assert "heare-auth-libs" in run(["rpm", "-qRp", rpms["heare-auth-devel"]])
    py = run(["rpm", "-qlp", rpms["python3-heare-auth"]]).split()
    assert any(f.endswith("-packages/heare_auth.py") for f in py), py
    provides = run(["rpm", "-qp", "--provides", rpms["heare-auth-libs"]])
    assert "libheare-auth.so.0" in provides, provides
