"""The admin port: ``/metrics`` (Prometheus text), ``/ready`` and ``/live``."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from meshsim.proxy.httpcore import Limits, simple_response
from meshsim.proxy.httpserver import HttpServerProtocol, Request


class AdminProtocol(HttpServerProtocol):
    def __init__(self, registry: CollectorRegistry, ready: Callable[[], bool]) -> None:
        super().__init__(Limits(idle_timeout_s=30.0))
        self.registry = registry
        self.ready = ready

    def handle(self, req: Request) -> None:
        path = req.url.split(b"?", 1)[0]
        if path == b"/metrics":
            body = generate_latest(self.registry)
            response = simple_response(
                200, body, content_type=CONTENT_TYPE_LATEST.encode(), keep_alive=req.keep_alive
            )
        elif path == b"/live":
            response = simple_response(200, b"live\n", keep_alive=req.keep_alive)
        elif path == b"/ready":
            ok = self.ready()
            response = simple_response(
                200 if ok else 503,
                b"ready\n" if ok else b"not ready\n",
                keep_alive=req.keep_alive,
            )
        else:
            response = simple_response(
                404, b"try /metrics, /ready or /live\n", keep_alive=req.keep_alive
            )
        self.reply(response, req.keep_alive)
