"""Request metrics with bounded cardinality, served as Prometheus text at `/metrics`.

BentoML's own metrics label every series with the raw request path, which carries student keys
and school codes and grows one series per path anyone sends (issue 13). The guard
(`serving.guard`) turns BentoML's off and records here instead, labelled only by the route
*template* (from a fixed table), the method and the status, so the number of series is fixed by
the code, not by callers, and nothing identifying can appear. Counts are per worker (a scrape is
answered by whichever worker takes it, labelled with its pid).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict

# Upper bounds of the latency histogram (seconds): from a cached list read to a large export.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RequestMetrics:
    """Counters and a latency histogram keyed by (route template, method, status)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sum: dict[tuple[str, str], float] = defaultdict(float)
        self._denied: dict[tuple[str, int], int] = defaultdict(int)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        # `route` is always a template from the guard's table (or "unmatched"); `method` is
        # folded to a fixed set, so callers cannot mint new label values.
        method = method if method in ("GET", "POST", "HEAD") else "OTHER"
        with self._lock:
            self._count[(route, method, status)] += 1
            key = (route, method)
            b = self._buckets.setdefault(key, [0] * (len(BUCKETS) + 1))
            for i, le in enumerate(BUCKETS):
                if seconds <= le:
                    b[i] += 1
            b[-1] += 1
            self._sum[key] += seconds

    def denied(self, route: str, status: int) -> None:
        with self._lock:
            self._denied[(route, status)] += 1

    def render(self) -> str:
        pid = os.getpid()
        lines = ["# HELP ews_requests_total Requests answered, by route template, method and status.",
                 "# TYPE ews_requests_total counter"]
        with self._lock:
            for (route, method, status), n in sorted(self._count.items()):
                lines.append(f'ews_requests_total{{worker="{pid}",route="{route}",method="{method}",status="{status}"}} {n}')
            lines += ["# HELP ews_request_seconds Request latency, by route template and method.",
                      "# TYPE ews_request_seconds histogram"]
            for (route, method), b in sorted(self._buckets.items()):
                labels = f'worker="{pid}",route="{route}",method="{method}"'
                for le, n in zip(BUCKETS, b, strict=False):
                    lines.append(f'ews_request_seconds_bucket{{{labels},le="{le:g}"}} {n}')
                lines.append(f'ews_request_seconds_bucket{{{labels},le="+Inf"}} {b[-1]}')
                lines.append(f"ews_request_seconds_sum{{{labels}}} {self._sum[(route, method)]:.6f}")
                lines.append(f"ews_request_seconds_count{{{labels}}} {b[-1]}")
            lines += ["# HELP ews_denied_total Requests refused by the guard (401/403/404/405/413/415/429).",
                      "# TYPE ews_denied_total counter"]
            for (route, status), n in sorted(self._denied.items()):
                lines.append(f'ews_denied_total{{worker="{pid}",route="{route}",status="{status}"}} {n}')
        return "\n".join(lines) + "\n"
