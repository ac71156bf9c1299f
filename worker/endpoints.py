"""The HTTP endpoints of a worker process, on its metrics port.

- ``/metrics``: Prometheus metrics (docs/metrics.md).
- ``/livez``: 200 while the process is alive and its threads make progress; Redis may be
  down (a liveness probe that failed on a Redis outage would restart every worker).
- ``/readyz``: 200 when its models are loaded and warm, Redis answers, and it runs where
  it was asked to (no unallowed CPU fallback); 503 otherwise.

Each answers JSON: ``{"status": "ok" | "failing", "checks": {name: true | "why not"}}``.
A supervisor of several worker processes (worker/supervisor.py) serves the same paths
for the whole container, from its children's.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

# A check's result per name: True, or the reason it fails.
Checks = dict[str, "bool | str"]
Probe = Callable[[], Checks]


def passed(checks: Checks) -> bool:
    return all(value is True for value in checks.values())


class Endpoints:
    """``/metrics``, ``/livez`` and ``/readyz`` on one port, served by a daemon thread."""

    def __init__(self, registry: CollectorRegistry, live: Probe, ready: Probe) -> None:
        self.registry = registry
        self.probes = {"/livez": live, "/readyz": ready}
        self._server: ThreadingHTTPServer | None = None

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        endpoints = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoints.answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would flood the log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, name="aimass-endpoints", daemon=True
        ).start()
        log.info("metrics and health on :%d (/metrics, /livez, /readyz)", port)

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(request, 200, CONTENT_TYPE_LATEST, generate_latest(self.registry))
            return
        probe = self.probes.get(path)
        if probe is None:
            self._send(request, 404, "text/plain", b"/metrics, /livez or /readyz\n")
            return
        try:
            checks = probe()
        except Exception as exc:  # a probe that breaks says so, and fails
            checks = {"probe": f"{type(exc).__name__}: {exc}"}
        ok = passed(checks)
        body = json.dumps({"status": "ok" if ok else "failing", "checks": checks}).encode()
        self._send(request, 200 if ok else 503, "application/json", body)

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, code: int, content_type: str, body: bytes) -> None:
        request.send_response(code)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def probe(url: str, timeout: float = 2.0) -> bool | str:
    """True when ``url`` answers 200; else why not (a failing probe's own reasons)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status == 200 or f"answered {answer.status}"
    except urllib.error.HTTPError as error:
        return _failing(error.read()) or f"answered {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return f"does not answer ({getattr(error, 'reason', error)})"


def _failing(body: bytes) -> str:
    """The failing checks of a /readyz answer, as one line."""
    try:
        checks = json.loads(body).get("checks", {})
    except (ValueError, AttributeError):
        return ""
    return "; ".join(f"{name}: {why}" for name, why in checks.items() if why is not True)
