"""CURVE security of a reward server, with the key files rlhf.c uses
(README "Keys"; common/net/curve.h and auth.h):

  DIR/<name>.key      this server's key pair (default name "reward"), mode 0600
  DIR/learner.pub     the learner's public key: the results socket is its CURVE client
  DIR/authorized/     NAME.pub of every client (actor) the samples socket lets in

A certificate is ZeroMQ's text format (CZMQ's zcert), read as strictly as
rlhf.c reads it: only the sections metadata and curve at the left margin,
indented `name = "value"` lines under them, public-key and secret-key each
once, 40 characters of Z85 that decode; a secret file holds both keys, the
public one derived from the secret one, and is not readable by group or
others. Every refusal names "<path>:<line>: <what is wrong>".

The ZAP handler (RFC 27) is a thread on inproc://zeromq.zap.01 in the
server's ZeroMQ context: it lets a CURVE client in only when its key is on
the allow-list, and a monitor of the watched socket reports handshakes that
failed before ZAP was asked (a plaintext client, a wrong server key). Every
refusal is counted as the reject reason "unauthorized" and logged."""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from .log import log
from .wire import Reject, Rejects

Z85_LEN = 40
KEY_BYTES = 32
CERT_MAX_BYTES = 64 * 1024
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_POLL_MS = 50
# Handshakes that failed before ZAP was asked; ZAP refusals are counted by the handler.
MONITOR_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789$-_@.&+/")


class CertError(Exception):
    """A key file that cannot be used; the message names path and line."""


@dataclass(frozen=True)
class Cert:
    public_z85: str
    secret_z85: str = ""  # "" when only the public key is known


def _decode_key(path: str, lineno: int, name: str, value: str) -> str:
    ok = len(value) == Z85_LEN
    if ok:
        try:
            ok = len(z85.decode(value.encode("ascii"))) == KEY_BYTES
        except (ValueError, UnicodeEncodeError, KeyError):
            ok = False
    if not ok:
        raise CertError(
            f"{path}:{lineno}: '{name}': expected {Z85_LEN} characters of Z85, found "
            f"{len(value)} characters '{value[:48]}'"
        )
    return value


def _bad(path: str, lineno: int, what: str) -> CertError:
    return CertError(f"{path}:{lineno}: {what}")


def parse_cert(path: str, text: str, need_secret: bool) -> Cert:
    """Parses certificate text (path names it in errors). Raises CertError."""
    section = ""
    seen = set()
    keys: dict[str, str] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        if "\r" in line:
            raise _bad(path, lineno, "carriage return in the line (expected Unix line ends)")
        body = line.lstrip(" ")
        if body.startswith("\t"):
            raise _bad(path, lineno, "tab in the indentation (ZPL indents with spaces)")
        if body == "" or body.startswith("#"):
            continue
        if body == line:  # a section at the left margin
            if body not in ("metadata", "curve"):
                raise _bad(path, lineno, f"section '{body[:40]}', expected metadata or curve")
            if body in seen:
                raise _bad(path, lineno, f"section '{body}' given twice")
            seen.add(body)
            section = body
            continue
        if not section:
            raise _bad(path, lineno, f"'{body[:40]}' outside a section (metadata or curve)")
        n = 0
        while n < len(body) and body[n] in _NAME_CHARS:
            n += 1
        if n == 0:
            raise _bad(path, lineno, f"expected a name, found '{body[:40]}'")
        name, rest = body[:n], body[n:].lstrip(" ")
        if not rest.startswith("="):
            raise _bad(path, lineno, f"'{name}': expected '=' after the name, found '{rest[:20]}'")
        rest = rest[1:].lstrip(" ")
        if not rest or rest[0] not in "\"'":
            raise _bad(path, lineno, f"'{name}': expected a quoted value, found '{rest[:40]}'")
        end = rest.find(rest[0], 1)
        if end < 0:
            raise _bad(path, lineno, f"'{name}': value has no closing quote")
        value, tail = rest[1:end], rest[end + 1 :]
        if tail.strip(" "):
            raise _bad(
                path, lineno, f"'{name}': unexpected '{tail.strip(' ')[:20]}' after the value"
            )
        if section == "metadata":
            continue
        if name not in ("public-key", "secret-key"):
            raise _bad(
                path, lineno, f"'{name}' in section curve, expected public-key or secret-key"
            )
        if name in keys:
            raise _bad(path, lineno, f"'{name}' given twice")
        keys[name] = _decode_key(path, lineno, name, value)
    last = text.count("\n") + 1
    public, secret = keys.get("public-key", ""), keys.get("secret-key", "")
    if not public:
        raise CertError(f"{path}:{last}: no public-key in section curve")
    if need_secret and not secret:
        raise CertError(f"{path}:{last}: no secret-key in section curve")
    if not need_secret and secret:
        raise CertError(
            f"{path}:{last}: a secret-key in a public certificate (share NAME.pub, never NAME.key)"
        )
    if secret and zmq.curve_public(secret.encode("ascii")).decode("ascii") != public:
        raise CertError(f"{path}:{last}: public-key is not the one secret-key derives")
    return Cert(public, secret)


def load_cert(path: str, need_secret: bool) -> Cert:
    """Reads a certificate file (need_secret: a NAME.key). Raises CertError."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise CertError(f"{path}: {e.strerror}") from None
    if need_secret and st.st_mode & 0o077:
        raise CertError(
            f"{path}:0: mode {stat.S_IMODE(st.st_mode):04o}, expected 0600 (a secret key "
            "readable by others; chmod 600 it)"
        )
    if st.st_size > CERT_MAX_BYTES:
        raise CertError(f"{path}:0: {st.st_size} bytes, expected at most {CERT_MAX_BYTES}")
    with open(path, "rb") as f:
        data = f.read(CERT_MAX_BYTES + 1)
    if b"\0" in data:
        raise CertError(f"{path}:0: a NUL byte in a text file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise CertError(f"{path}:0: byte {e.start} is not ASCII") from None
    return parse_cert(path, text, need_secret)


def load_allow_list(directory: str, who: str) -> dict[bytes, str]:
    """Every NAME.pub in directory: binary key -> NAME. A missing or empty
    directory refuses everyone (with a warning). Raises CertError."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        log.warning("%s: allow-list %s: cannot open it, so every client is refused", who, directory)
        return {}
    keys: dict[bytes, str] = {}
    for name in names:
        if name.startswith(".") or not name.endswith(".pub") or len(name) <= 4:
            continue
        cert = load_cert(os.path.join(directory, name), need_secret=False)
        keys[z85.decode(cert.public_z85.encode("ascii"))] = name[:-4]
    if not keys:
        log.warning("%s: allow-list %s holds no *.pub, so every client is refused", who, directory)
    return keys


def is_loopback(endpoint: str) -> bool:
    """True for endpoints only this machine reaches: inproc://, ipc://, and
    tcp:// on 127.x.x.x, [::1] or localhost (common/net/auth.h)."""
    if endpoint.startswith(("inproc://", "ipc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[6:]
    host = host.split(";", 1)[1] if ";" in host else host  # "source;destination"
    host = host.rsplit(":", 1)[0] if ":" in host else host
    return host in ("[::1]", "localhost") or host.startswith("127.")


class Zap:
    """The ZAP handler thread of one server's ZeroMQ context. Start it
    before binding a CURVE server socket; watch() each such socket (from
    the thread that owns it, before binding); close() before closing the
    sockets and terminating the context."""

    def __init__(self, ctx: zmq.Context[Any], allow_dir: str, who: str, rejects: Rejects) -> None:
        self.who = who
        self.allow_dir = allow_dir
        self.keys = load_allow_list(allow_dir, who)
        self._ctx = ctx
        self._rejects = rejects  # the watched socket's counters (one socket here)
        self._log_rejects = Rejects()  # rate limit of the refusal lines
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str, threading.Event]] = []  # (name, monitor endpoint)
        self.allowed = 0
        self.refused = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"{who}-zap", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error:
            raise self._error

    def watch(self, sock: zmq.Socket[Any], name: str) -> None:
        """Asks the handler about every CURVE client of sock (its ZAP domain
        is name) and monitors sock's failed handshakes. Returns once the
        handler listens to the monitor."""
        sock.setsockopt(zmq.ZAP_DOMAIN, name.encode())
        endpoint = f"inproc://rlhf-reward-zap-monitor-{id(sock):x}"
        sock.monitor(endpoint, MONITOR_EVENTS)
        done = threading.Event()
        with self._lock:
            self._pending.append((name, endpoint, done))
        if not done.wait(10.0) or not self._thread.is_alive():
            raise RuntimeError(f"{self.who}: zap: the handler did not take the monitor of '{name}'")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _refuse(self, what: str, why: str) -> None:
        self.refused += 1
        self._rejects.count("unauthorized")
        self._log_rejects.note("zap", what, Reject("unauthorized", why))

    def _on_request(self, rep: zmq.Socket[Any]) -> None:
        f = rep.recv_multipart()
        if len(f) < 6 or f[0] != b"1.0":
            self._refuse("ZAP request", "malformed (not ZAP 1.0)")
            rep.send_multipart(
                [b"1.0", f[1] if len(f) > 1 else b"", b"500", b"malformed request", b"", b""]
            )
            return
        domain, address = f[2].decode(errors="replace"), f[3].decode(errors="replace")
        what = f"connection on '{domain}' from {address}"
        if f[5] != b"CURVE" or len(f) != 7 or len(f[6]) != KEY_BYTES:
            self._refuse(what, "not a CURVE client")
            rep.send_multipart([b"1.0", f[1], b"400", b"CURVE required", b"", b""])
            return
        name = self.keys.get(f[6])
        if name is None:
            key_text = z85.encode(f[6]).decode("ascii")
            self._refuse(what, f"client key {key_text} is not in the allow-list {self.allow_dir}")
            rep.send_multipart([b"1.0", f[1], b"400", b"key not allowed", b"", b""])
            return
        self.allowed += 1
        log.debug("%s: %s: allowed key '%s'", self.who, what, name)
        rep.send_multipart([b"1.0", f[1], b"200", b"OK", name.encode(), b""])

    def _on_monitor(self, name: str, mon: zmq.Socket[Any]) -> None:
        ev = parse_monitor_message(mon.recv_multipart())
        raw = ev.get("endpoint", b"")
        where = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        what = f"connection on '{name}' ({where})"
        if ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            why = (
                f"handshake failed (protocol error 0x{ev['value']:x}: a plaintext client, or one "
                "holding a wrong server key)"
            )
        else:
            why = (
                f"handshake failed (errno {ev['value']}: the peer hung up, a plaintext client or "
                "a port probe)"
            )
        self._refuse(what, why)

    def _run(self) -> None:
        monitors: dict[zmq.Socket[Any], str] = {}
        try:
            rep = self._ctx.socket(zmq.REP)
            rep.linger = 0
            rep.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as e:
            self._error = RuntimeError(f"{self.who}: zap: bind {ZAP_ENDPOINT}: {e}")
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(rep, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                with self._lock:
                    pending, self._pending = self._pending, []
                for name, endpoint, done in pending:
                    mon = self._ctx.socket(zmq.PAIR)
                    mon.linger = 0
                    mon.connect(endpoint)
                    monitors[mon] = name
                    poller.register(mon, zmq.POLLIN)
                    done.set()
                for sock, _ in poller.poll(ZAP_POLL_MS):
                    if sock is rep:
                        self._on_request(rep)
                    else:
                        self._on_monitor(monitors[sock], sock)
        finally:
            for mon in monitors:
                mon.close(0)
            rep.close(0)
