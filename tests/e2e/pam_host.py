"""A minimal PAM application for the tests, run under libpam-wrapper: it calls pam_start,
pam_authenticate and pam_acct_mgmt through ctypes (CDLL(None): the preloaded wrapper's
pam_* entry points), answers the "API key: " prompt with the key it was given, and records
the return codes and what the process looked like before and after, as JSON.

usage: pam_host.py RESULT_FILE SERVICE USER [--key KEY] [--ops authenticate,acct_mgmt]
                   [--close-stdio] [--sigpipe-default] [--repeat N]

The key comes from the environment variable PAM_HOST_KEY when --key is absent, so it
never sits in the argument list."""
import argparse
import ctypes
import json
import os
import signal

PAM_PROMPT_ECHO_OFF = 1
PAM_PROMPT_ECHO_ON = 2
PAM_SUCCESS = 0
PAM_BUF_ERR = 5
PAM_CONV_ERR = 19


class PamMessage(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class PamResponse(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


CONV_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int,
                             ctypes.POINTER(ctypes.POINTER(PamMessage)),
                             ctypes.POINTER(ctypes.POINTER(PamResponse)), ctypes.c_void_p)


class PamConv(ctypes.Structure):
    _fields_ = [("conv", CONV_FUNC), ("appdata_ptr", ctypes.c_void_p)]


def snapshot():
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the directory fd listdir itself used
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("SigBlk", "SigIgn", "SigCgt", "Threads"):
                status[k] = v.strip()
    return {"fds": fds, "status": status}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("result")
    ap.add_argument("service")
    ap.add_argument("user")
    ap.add_argument("--key")
    ap.add_argument("--ops", default="authenticate,acct_mgmt")
    ap.add_argument("--close-stdio", action="store_true")
    ap.add_argument("--sigpipe-default", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    key = (args.key if args.key is not None else os.environ.get("PAM_HOST_KEY", "")).encode()

    libc = ctypes.CDLL(None)
    libc.calloc.restype = ctypes.c_void_p
    libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    libc.strdup.restype = ctypes.c_void_p
    libc.strdup.argtypes = [ctypes.c_char_p]
    pam = libc  # pam_* come from the preloaded libpam_wrapper.so
    pam.pam_start.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(PamConv),
                              ctypes.POINTER(ctypes.c_void_p)]
    for name in ("pam_authenticate", "pam_acct_mgmt", "pam_end"):
        getattr(pam, name).argtypes = [ctypes.c_void_p, ctypes.c_int]

    prompts = []

    def conv(n, msgs, resp, _appdata):
        arr = libc.calloc(n, ctypes.sizeof(PamResponse))
        if not arr:
            return PAM_BUF_ERR
        out = ctypes.cast(arr, ctypes.POINTER(PamResponse))
        for i in range(n):
            m = msgs[i].contents
            prompts.append(m.msg.decode(errors="replace") if m.msg else "")
            if m.msg_style in (PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON):
                out[i].resp = libc.strdup(key)
        resp[0] = out
        return PAM_SUCCESS

    conv_cb = CONV_FUNC(conv)
    conv_struct = PamConv(conv_cb, None)

    if args.sigpipe_default:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # Opened before stdio is closed, so the result has somewhere to go.
    out_fd = os.open(args.result, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    if args.close_stdio:
        for fd in (0, 1, 2):
            os.close(fd)

    before = snapshot()
    results = []
    for _ in range(args.repeat):
        pamh = ctypes.c_void_p()
        rc = pam.pam_start(args.service.encode(), args.user.encode(), ctypes.byref(conv_struct),
                           ctypes.byref(pamh))
        res = {"pam_start": rc}
        last = rc
        if rc == PAM_SUCCESS:
            for op in args.ops.split(","):
                last = getattr(pam, "pam_" + op)(pamh, 0)
                res[op] = last
            pam.pam_end(pamh, last)
        results.append(res)
    after = snapshot()

    # Under the sanitizers (the tests preload them for a sanitized module, with
    # PYTHONMALLOC=malloc so that every Python object is a block LeakSanitizer sees): the
    # leak check runs here, after pam_end, while every object of Python's own is still
    # reachable. At exit it would report the interpreter's memory, left to the exit by
    # design, which no suppression could tell from the module's: every call into the
    # module comes through Python frames.
    leak_check = getattr(libc, "__lsan_do_recoverable_leak_check", None)
    leaked = bool(leak_check()) if leak_check is not None else False

    doc = {"results": results, "prompts": prompts, "before": before, "after": after,
           "leaked": leaked}
    os.write(out_fd, json.dumps(doc).encode())
    os.close(out_fd)


if __name__ == "__main__":
    main()
