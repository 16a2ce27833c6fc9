"""A request's context (its trace span, its request objects) is released when the request ends.

BentoML's timeout middleware kept it for `traffic.timeout` seconds in a timer it never cancelled:
20,000 refused random paths grew a worker ~3.3 KB per request (issue 13). `serving.bentoml_fixes`
is the fix the service applies; this checks it on the middleware itself, in one event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from typing import Any

PROBE: contextvars.ContextVar[Any] = contextvars.ContextVar("probe")


class _Probe:
    """Stands for what a request puts in its context (an OpenTelemetry span holds the raw path)."""


async def _refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 401, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _contexts_alive_after(requests: int, shipped: bool) -> int:
    """Requests through the timeout middleware, each in its own context as a server runs them;
    how many of their contexts are still alive afterwards (counted with the loop still open: a
    closed loop drops its timers, hiding what a long-running worker keeps)."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    from serving.bentoml_fixes import cancel_request_timers

    cancel_request_timers()
    mw = TimeoutMiddleware(_refuse, timeout=60)
    call = TimeoutMiddleware._ews_original_call if shipped else TimeoutMiddleware.__call__  # type: ignore[attr-defined]
    refs: list[weakref.ref[_Probe]] = []

    async def one() -> None:
        probe = _Probe()
        PROBE.set(probe)
        refs.append(weakref.ref(probe))
        del probe

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(_m: dict[str, Any]) -> None:
            return None

        await call(mw, {"type": "http", "method": "GET", "path": "/x", "headers": []}, receive, send)

    async def main() -> int:
        for _ in range(requests):
            await asyncio.create_task(one())
        for _ in range(3):  # let the loop finish the last request's callbacks
            await asyncio.sleep(0)
        gc.collect()
        return sum(r() is not None for r in refs)

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_no_request_context_outlives_its_request_under_the_fixed_timeout_middleware() -> None:
    assert _contexts_alive_after(50, shipped=False) == 0


def test_the_middleware_as_shipped_keeps_every_request_context_until_its_timer_fires() -> None:
    # the measure can fail: BentoML's own middleware keeps all of them
    assert _contexts_alive_after(50, shipped=True) == 50
