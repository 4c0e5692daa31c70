"""heare_auth: verify API keys with heare-authd from Python, over its verify socket
(io.heare.Auth.Verify, Varlink). Standard library only.

    import heare_auth
    r = heare_auth.verify(key, scope="documents.read")
    if r.valid: ...

    with heare_auth.Client(timeout=0.5) as c:      # one connection for many calls
        r = c.verify(key, require="documents.read and not billing.*")
        status = c.health()["status"]

The socket defaults to $HEARE_AUTH_VERIFY_SOCKET, else /run/heare-auth/verify.sock; the
caller must be allowed to connect to it (root, or a member of group heare-auth). Each
call has one deadline, `timeout` seconds from its start, for connecting, sending and
reading the answer. A connection that an earlier call used and that turns out broken (the
daemon restarted) is connected again once, within the same deadline.

A client is used by one thread at a time. Errors are `Error`; `Unavailable` (a subclass)
when the socket is missing, refuses, or does not answer in time.
"""
import json
import os
import socket as _socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["verify", "Client", "Result", "Error", "Unavailable", "DEFAULT_SOCKET"]

DEFAULT_SOCKET = "/run/heare-auth/verify.sock"
# The daemon refuses a call over 64 KiB; a reply is bounded the same way.
MESSAGE_MAX = 64 * 1024
VERIFY = "io.heare.Auth.Verify"
HEALTH = "io.heare.Auth.GetHealth"


class Error(Exception):
    """A call failed. For an error reply from the daemon, `name` is the Varlink error
    name (such as org.varlink.service.InvalidParameter) and `parameters` its
    parameters; otherwise both are None."""

    def __init__(self, message, name=None, parameters=None):
        super().__init__(message)
        self.name = name
        self.parameters = parameters


class Unavailable(Error):
    """The daemon could not be asked: no socket, nothing listening, permission denied on
    the socket, or no answer within the timeout."""


@dataclass(frozen=True)
class Result:
    """The answer to one Verify. `valid` is True only for code "VALID"; the key's fields
    are None for NOT_FOUND and MALFORMED; `retry_after_ms` is set for RATE_LIMITED."""
    valid: bool
    code: str
    key_id: Optional[str] = None
    name: Optional[str] = None
    metadata: Optional[Dict[str, Any]] = None
    scopes: Optional[List[str]] = None
    expires_at: Optional[str] = None
    retry_after_ms: Optional[int] = None
    # Everything the daemon answered, newer fields included.
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __bool__(self):
        return self.valid


def _optional(params, name, kind):
    v = params.get(name)
    if v is not None and not isinstance(v, kind):
        raise Error(f"heare-authd sent a Verify answer with a bad {name}")
    return v


def _result(params):
    if not isinstance(params, dict) or not isinstance(params.get("valid"), bool) \
            or not isinstance(params.get("code"), str):
        raise Error("heare-authd sent a reply that is not a Verify answer")
    scopes = _optional(params, "scopes", list)
    if scopes is not None and not all(isinstance(s, str) for s in scopes):
        raise Error("heare-authd sent a Verify answer with a bad scopes")
    retry = _optional(params, "retry_after_ms", int)
    if isinstance(retry, bool):
        raise Error("heare-authd sent a Verify answer with a bad retry_after_ms")
    return Result(valid=params["valid"], code=params["code"],
                  key_id=_optional(params, "key_id", str), name=_optional(params, "name", str),
                  metadata=_optional(params, "metadata", dict), scopes=scopes,
                  expires_at=_optional(params, "expires_at", str), retry_after_ms=retry,
                  raw=params)


class Client:
    """One connection to the verify socket, made by the first call."""

    def __init__(self, socket=None, timeout=1.0):
        self.path = socket or os.environ.get("HEARE_AUTH_VERIFY_SOCKET") or DEFAULT_SOCKET
        if not timeout or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.timeout = float(timeout)
        self._sock = None
        self._used = False
        self._buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._used = False
        self._buf = b""

    def verify(self, key, scope=None, *, require=None, user_agent=None, client_address=None):
        """Verifies key (str); returns a Result for whatever code the daemon answered."""
        if not isinstance(key, str):
            raise TypeError("key must be a str")
        params = {"key": key}
        for name, value in (("scope", scope), ("require", require),
                            ("user_agent", user_agent), ("client_address", client_address)):
            if value is not None:
                params[name] = value
        return _result(self._call(VERIFY, params))

    def health(self):
        """The daemon's GetHealth answer as a dict (status, keys_loaded, ...)."""
        return self._call(HEALTH, {})

    # -- the connection ------------------------------------------------------------------

    def _left(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise _socket.timeout()
        return left

    def _connect(self, deadline):
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)  # close-on-exec
        try:
            s.settimeout(self._left(deadline))
            s.connect(self.path)
        except BaseException:
            s.close()
            raise
        self._sock, self._used, self._buf = s, False, b""

    def _exchange(self, message, deadline):
        if self._sock is None:
            self._connect(deadline)
        self._sock.settimeout(self._left(deadline))
        # MSG_NOSIGNAL: a host that set SIGPIPE back to its default is not killed by a
        # daemon that went away.
        self._sock.sendall(message, _socket.MSG_NOSIGNAL)
        while b"\0" not in self._buf:
            if len(self._buf) > MESSAGE_MAX:
                raise Error("heare-authd sent a reply over 64 KiB")
            self._sock.settimeout(self._left(deadline))
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionResetError("heare-authd closed the connection")
            self._buf += data
        reply, self._buf = self._buf.split(b"\0", 1)
        self._used = True
        return reply

    def _call(self, method, params):
        message = json.dumps({"method": method, "parameters": params},
                             ensure_ascii=False).encode("utf-8", "surrogatepass")
        if len(message) > MESSAGE_MAX:
            raise Error("request over 64 KiB")
        message += b"\0"
        deadline = time.monotonic() + self.timeout
        for attempt in (0, 1):
            reused = self._sock is not None and self._used
            try:
                reply = self._exchange(message, deadline)
                break
            except (BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if reused and attempt == 0:
                    continue
                raise Unavailable(f"{self.path}: {e}") from e
            except _socket.timeout as e:
                self.close()
                raise Unavailable(f"{self.path}: no answer within {self.timeout:g} s") from e
            except Error:
                self.close()
                raise
            except OSError as e:  # missing, refused, permission denied
                self.close()
                raise Unavailable(f"{self.path}: {e.strerror or e}") from e
        try:
            doc = json.loads(reply)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            self.close()
            raise Error("heare-authd sent a reply that is not JSON")
        if "error" in doc:
            p = doc.get("parameters") if isinstance(doc.get("parameters"), dict) else {}
            raise Error(f"heare-authd answered {doc['error']}"
                        + (f" ({json.dumps(p)})" if p else ""), doc["error"], p)
        p = doc.get("parameters")
        if p is None:
            p = {}
        if not isinstance(p, dict):
            self.close()
            raise Error("heare-authd sent a reply without parameters")
        return p


def verify(key, scope=None, socket=None, timeout=1.0):
    """One Verify on a connection of its own; see Client.verify."""
    with Client(socket=socket, timeout=timeout) as c:
        return c.verify(key, scope)
