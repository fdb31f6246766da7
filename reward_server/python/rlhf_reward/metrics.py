"""The reward server's Prometheus endpoint, as rlhf.c's daemons serve it
(common/net/metrics.h): GET /metrics in text exposition format 0.0.4 with
the counters rlhf-reward exports (rlhf_reward_*), and GET /healthz, 200 "ok"
while the server's loop ticks, 503 once it has not ticked for stale_s.
Other paths are 404, other methods 405. Served by a daemon thread."""

from __future__ import annotations

import http.server
import threading
import time
from typing import Callable

from .log import log
from .wire import REASONS

# (name, help) of the counters; values come from the server's stats.
COUNTERS = (
    ("rlhf_reward_groups_received_total", "frames taken from the samples socket"),
    ("rlhf_reward_groups_scored_total", "groups scored and handed to the learner"),
    ("rlhf_reward_completions_scored_total", "completions in the groups scored"),
    ("rlhf_reward_groups_unsent_total", "groups scored but dropped at shutdown"),
    (
        "rlhf_reward_score_seconds_total",
        "time spent scoring groups (divide by groups scored for the mean)",
    ),
)
REJECTS = ("rlhf_reward_rejects_total", "frames and groups refused, by reason")


def parse_addr(addr: str) -> tuple[str, int]:
    """ "HOST:PORT" ("[::1]:PORT" for IPv6) -> (host, port). Raises ValueError."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address '{addr[:100]}', expected HOST:PORT with PORT in 0..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def render(values: dict[str, float], rejects: dict[str, int]) -> str:
    out = []
    for name, help_text in COUNTERS:
        out += [
            f"# HELP {name} {help_text}",
            f"# TYPE {name} counter",
            f"{name} {values[name]:.17g}",
        ]
    name, help_text = REJECTS
    out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    out += [f'{name}{{reason="{r}"}} {rejects.get(r, 0)}' for r in REASONS]
    return "\n".join(out) + "\n"


class MetricsServer:
    """Serves /metrics and /healthz on addr. snapshot() returns (counter
    values by name, rejects by reason) and is called from the HTTP thread."""

    def __init__(
        self,
        addr: str,
        stale_s: float,
        snapshot: Callable[[], tuple[dict[str, float], dict[str, int]]],
    ) -> None:
        host, port = parse_addr(addr)
        self.stale_s = stale_s
        self._snapshot = snapshot
        self._tick = time.monotonic()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(
                self, code: int, body: str, ctype: str = "text/plain; charset=utf-8"
            ) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/metrics":
                    values, rejects = outer._snapshot()
                    self._reply(
                        200, render(values, rejects), "text/plain; version=0.0.4; charset=utf-8"
                    )
                elif self.path == "/healthz":
                    silent = time.monotonic() - outer._tick
                    if silent <= outer.stale_s:
                        self._reply(200, "ok\n")
                    else:
                        self._reply(503, f"stale: the loop has not ticked for {silent:.1f} s\n")
                else:
                    self._reply(404, "not found\n")

            do_HEAD = do_GET

            def _not_allowed(self) -> None:
                if self.path in ("/metrics", "/healthz"):
                    self._reply(405, "method not allowed\n")
                else:
                    self._reply(404, "not found\n")

            do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per scrape would drown the log

        server_class = http.server.ThreadingHTTPServer
        if ":" in host:
            import socket

            class V6(http.server.ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_class = V6
        try:
            self._httpd = server_class((host, port), Handler)
        except OSError as e:
            raise OSError(f"metrics: cannot serve HTTP on '{addr}': {e.strerror}") from None
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        shown = f"[{host}]" if ":" in host else (host or "0.0.0.0")
        log.info("metrics: serving http://%s:%d/metrics and /healthz", shown, self.port)

    def tick(self) -> None:
        """The server's loop is alive: /healthz answers 200 for stale_s from now."""
        self._tick = time.monotonic()

    def close(self) -> None:
        if self._thread:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._thread = None
