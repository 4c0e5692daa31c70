"""The man pages: generated from docs/man/*.scd, `mandoc -T lint` clean, and complete:
every option that `heare-authd --help` and `heare-auth [COMMAND] --help` print, every
configuration key and environment name, and every flag and key of SPEC §8 and §10 is in
the corresponding page. Also: the example configuration names every key, and with its
defaults uncommented it passes --check-config."""
import glob
import os
import re
import subprocess
import tempfile

import pytest

from conftest import HEARE_AUTH, HEARE_AUTHD, HEARE_AUTHD_BINARY, ROOT

BUILD_ROOT = os.environ.get("HEARE_BUILD_ROOT") or os.path.dirname(os.path.dirname(HEARE_AUTHD_BINARY))
MAN_SRC = os.path.join(ROOT, "docs", "man")
EXAMPLE_CONF = os.path.join(ROOT, "docs", "heare-authd.conf")
HAVE_PAM = os.path.exists(os.path.join(ROOT, "pam", "meson.build"))

# SPEC §8 (CLI) and §10 (configuration), independently of what the binaries print.
SPEC_CLI_FLAGS = ["--socket", "--store", "--json", "--no-refresh", "--name", "--metadata",
                  "--scope", "--expires", "--rate-limit", "--no-expiry", "--no-rate-limit",
                  "--grace", "--yes"]
SPEC_CLI_COMMANDS = ["create", "list", "show", "update", "disable", "enable", "rotate",
                     "delete", "refresh", "verify", "health", "call"]
SPEC_CLI_ENV = ["HEARE_AUTH_SOCKET", "HEARE_AUTH_VERIFY_SOCKET", "HEARE_AUTH_STORE"]
SPEC_DAEMON_FLAGS = ["--config", "--store", "--verify-socket", "--admin-socket",
                     "--http-listen", "--foreground", "-v", "--check-config"]
SPEC_CONF_KEYS = ["store", "s3-region", "s3-endpoint", "s3-addressing", "s3-sse",
                  "poll-interval", "cache", "verify-socket", "admin-socket", "http-listen",
                  "admin-users", "admin-groups", "log-format", "log-level", "log-verify",
                  "metrics-url", "metrics-secret", "metrics-prefix", "metrics-interval",
                  "max-failures-per-minute", "idle-timeout", "message-timeout",
                  "threads"]
SPEC_CONF_ENV = ["HEARE_AUTH_STORE", "S3_BUCKET", "S3_KEY", "S3_REGION", "AWS_REGION",
                 "S3_ENDPOINT", "HTTP_LISTEN", "PROTOCOL", "DEST_HOST", "DEST_PORT", "SECRET"]
PAM_OPTIONS = ["socket=", "scope=", "user_match=", "timeout_ms=", "debug", "use_first_pass",
               "try_first_pass", "metadata:unix_user", "PAM_SUCCESS", "PAM_AUTH_ERR",
               "PAM_AUTHINFO_UNAVAIL", "PAM_ACCT_EXPIRED"]


def expected_pages():
    pages = ["heare-authd.8", "heare-auth.1", "heare-authd.conf.5", "heare-auth.3"]
    # pam_heare_auth(8) is built with the module: unconditional once pam/ is in the tree.
    if HAVE_PAM:
        pages.append("pam_heare_auth.8")
    return pages


def page_path(page):
    return os.path.join(BUILD_ROOT, "docs", page)


def page_text(page):
    """The page's words: roff requests, font and escape sequences removed, one line."""
    with open(page_path(page)) as f:
        roff = f.read()
    lines = [l for l in roff.split("\n") if not l.startswith('.\\"')]
    text = " ".join(re.sub(r"^\.[A-Za-z]+\s?", "", l) for l in lines)
    text = re.sub(r"\\f[BIRP]", "", text)
    text = text.replace("\\&", "").replace("\\-", "-").replace("\\(aq", "'").replace("\\e", "\\")
    return text


def has_token(text, token):
    return re.search(r"(?<![\w-])" + re.escape(token) + r"(?![\w-])", text) is not None


def help_options(text):
    return sorted(set(re.findall(r"(?<![\w/-])(--?[A-Za-z][\w-]*)", text)))


def run(argv):
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{argv}: {res.stderr}"
    return res.stdout


def test_every_source_is_built():
    sources = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(MAN_SRC, "*.scd")))
    assert sources == sorted(["heare-authd.8", "heare-auth.1", "heare-authd.conf.5",
                              "heare-auth.3", "pam_heare_auth.8"])
    for page in expected_pages():
        assert os.path.getsize(page_path(page)) > 1000, page


@pytest.mark.parametrize("page", expected_pages())
def test_mandoc_lint_clean(page):
    res = subprocess.run(["mandoc", "-T", "lint", page_path(page)], capture_output=True,
                         text=True, timeout=60)
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 0 and out == "", out


def test_library_page_names_the_whole_header():
    """heare-auth(3) names every function, type, field and error the header declares."""
    text = page_text("heare-auth.3")
    with open(os.path.join(ROOT, "client", "heare-auth.h")) as f:
        header = f.read()
    names = set(re.findall(r"\b(heare_auth\w*)\b", header))
    fields = re.findall(r"\b(\w+)\s*;", re.sub(r"/\*.*?\*/", "", header, flags=re.S))
    fields += re.findall(r"\*(\w+), \*", header) + re.findall(r", \*(\w+),", header)
    errors = re.findall(r"(-E[A-Z]+)", header)
    assert {"heare_auth_open", "heare_auth_verify_request", "heare_auth_result"} <= names
    missing = [n for n in sorted(names | set(fields) | set(errors))
               if n != "heare_auth" and not has_token(text, n)]
    assert not missing, f"not in heare-auth(3): {missing}"


def test_daemon_help_options_in_man():
    text = page_text("heare-authd.8")
    opts = help_options(run([HEARE_AUTHD, "--help"]))
    assert "--check-config" in opts and "--store" in opts and "-c" in opts
    missing = [o for o in opts + SPEC_DAEMON_FLAGS if not has_token(text, o)]
    assert not missing, f"heare-authd(8) lacks {missing}"


def cli_helps():
    main = run([HEARE_AUTH, "--help"])
    synopsis = main.split("\nOptions", 1)[0]
    commands = sorted(set(re.findall(r"(?:^  |\| )([a-z]+)\b", synopsis, re.M)))
    assert set(SPEC_CLI_COMMANDS) <= set(commands), commands
    return main, {c: run([HEARE_AUTH, c, "--help"]) for c in commands}


def test_cli_help_options_in_man():
    text = page_text("heare-auth.1")
    main, per_command = cli_helps()
    opts = set(help_options(main))
    for h in per_command.values():
        opts |= set(help_options(h))
    assert {"--timeout", "--user-agent", "--grace"} <= opts
    missing = [o for o in sorted(opts) + SPEC_CLI_FLAGS if not has_token(text, o)]
    assert not missing, f"heare-auth(1) lacks {missing}"
    missing = [c for c in per_command if not has_token(text, c)]
    assert not missing, f"heare-auth(1) lacks the commands {missing}"
    missing = [e for e in SPEC_CLI_ENV if not has_token(text, e)]
    assert not missing, f"heare-auth(1) lacks {missing}"


def conf_keys_from_help():
    """(key, [env names]) for every configuration key heare-authd --help lists."""
    out = run([HEARE_AUTHD, "--help"]).split("Every configuration key", 1)[1]
    keys = []
    for m in re.finditer(r"^\s+--([a-z0-9-]+)\s+(.*)$", out, re.M):
        env = re.search(r"; env: ([^\[]*)", m.group(2))
        names = re.findall(r"[A-Z][A-Z0-9_]+", env.group(1)) if env else []
        keys.append((m.group(1), names))
    return keys


def test_config_keys_and_environment_in_man():
    text = page_text("heare-authd.conf.5")
    keys = conf_keys_from_help()
    assert len(keys) >= len(SPEC_CONF_KEYS)
    names = {k for k, _ in keys} | set(SPEC_CONF_KEYS)
    env = {e for _, es in keys for e in es} | set(SPEC_CONF_ENV)
    missing = [k for k in sorted(names) if not re.search(r"(?<![\w-])" + re.escape(k) + r" =", text)]
    assert not missing, f"heare-authd.conf(5) has no 'KEY =' entry for {missing}"
    missing = [e for e in sorted(env) if not has_token(text, e)]
    assert not missing, f"heare-authd.conf(5) lacks {missing}"
    # heare-authd(8) names every key as a flag and the environment too.
    daemon = page_text("heare-authd.8")
    missing = [e for e in sorted(env) if not has_token(daemon, e)]
    assert not missing, f"heare-authd(8) lacks {missing}"


def test_example_configuration_names_every_key():
    with open(EXAMPLE_CONF) as f:
        conf = f.read()
    listed = re.findall(r"^#([a-z0-9-]+) =", conf, re.M)
    assert sorted(listed) == sorted(k for k, _ in conf_keys_from_help())
    assert not re.search(r"^[a-z]", conf, re.M), "the example must change nothing"


def test_example_defaults_pass_check_config():
    """Every value the example shows, uncommented, is accepted."""
    with open(EXAMPLE_CONF) as f:
        lines = [l[1:] for l in f if re.match(r"^#[a-z0-9-]+ = \S", l)]
    assert len(lines) >= 10
    # Not pytest's tmp_path: it keeps its directories in /tmp after the run.
    with tempfile.TemporaryDirectory(prefix="heare-man-") as d:
        p = os.path.join(d, "heare-authd.conf")
        with open(p, "w") as f:
            f.write("".join(lines))
        res = subprocess.run([HEARE_AUTHD, "--config", p, "--check-config"],
                             capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "# configuration OK" in res.stdout


def test_pam_page_documents_the_module_options():
    """Checked on the source while pam/ is not in the tree, on the built page once it is."""
    if HAVE_PAM:
        text = page_text("pam_heare_auth.8")
    else:
        with open(os.path.join(MAN_SRC, "pam_heare_auth.8.scd")) as f:
            text = f.read().replace("*", "")
    missing = [o for o in PAM_OPTIONS if o not in text]
    assert not missing, f"pam_heare_auth(8) lacks {missing}"
