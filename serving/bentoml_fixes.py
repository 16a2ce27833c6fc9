"""A fix to BentoML 1.4.39 that the service applies in each worker (`EwsService.__init__`).

BentoML's `TimeoutMiddleware` arms a `loop.call_later(timeout, ...)` timer for every request and
never cancels it. The timer holds the request's context (the OpenTelemetry span with the raw path,
BentoML's request context) until it fires, `traffic.timeout` seconds later (60 s here): memory grows
with the request rate times the timeout. 20,000 refused random paths grew a worker ~3.3 KB per
request (issue 13; `benchmarks/bench_load.py`, random paths). The replacement below is the same
middleware with the timer armed in an empty context and cancelled once the request is done (the
timer only matters until the response starts, so nothing else changes). Measured after it, one
worker on the fingerprint world (benchmarks/fingerprint/run.sh . OUT, then `python -m
benchmarks.bench_load --home OUT/home --round 2564-T1-early --clients 20 --minutes 1`): 20,000
random paths 441.8 -> 441.8 MB; in-process (the service's ASGI app, 6,000 refused paths) 1.1 KB of
Python objects kept per request before, 24 B after.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any


def cancel_request_timers() -> None:
    """Make BentoML's per-request timeout timer cancel itself when its request ends (idempotent)."""
    from bentoml._internal.server.http import traffic
    from starlette.responses import JSONResponse

    mw = traffic.TimeoutMiddleware
    if getattr(mw, "_ews_cancels_timer", False):
        return

    async def __call__(self: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        # An empty context: the timer needs none, and must not keep the request's alive.
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter, context=contextvars.Context())

        async def _send(message: dict[str, Any]) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except asyncio.TimeoutError:
            if fut.cancel():
                resp = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                    status_code=504)
                await resp(scope, receive, send)
        else:
            await fut
        finally:
            timer.cancel()

    mw._ews_original_call = mw.__call__  # type: ignore[attr-defined]  # kept: a test shows what it fixes
    mw.__call__ = __call__  # type: ignore[method-assign]
    mw._ews_cancels_timer = True  # type: ignore[attr-defined]
