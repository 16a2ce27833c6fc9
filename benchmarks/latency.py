"""Per-request latency under load: N closed-loop HTTP clients for T seconds, every request timed.

Used by bench_serve (and meant for any load test): `measure(targets, clients, seconds, token)`
returns, per route, how many requests completed, how many failed, and the p50/p90/p99/max of the
successful ones, computed from every recorded latency (no histogram buckets, no correction).

Why not `wrk`: Debian's wrk reported latency percentiles on this machine that contradicted its own
throughput (with c closed-loop clients, throughput must be about c / mean latency, Little's law).
Here each client is a thread with its own keep-alive `httpx.Client`; it sends a request, reads the
whole body, records `perf_counter()` before and after, and sends the next one. The result also
carries `littles_law_rps` (clients / mean latency) beside the measured `rps`, so a reader can see
that the two agree. The latency includes the client's own parsing time (a few hundred microseconds
in Python), so it is an upper bound on what the server spends.

A percentile is the nearest-rank value: the smallest recorded latency such that at least q% of
the recorded latencies are at or below it (p50 of 1..100 ms is 50 ms, p99 is 99 ms).
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx


@dataclass(frozen=True)
class Target:
    """One route of the load: a name for the report, its URL, its share of requests, and optionally
    its own bearer token (a school's list is read with the school's token, not an auditor's)."""

    name: str
    url: str
    weight: float = 1.0
    token: str | Sequence[str] | None = None  # a sequence: client i uses token[i % len] (one user each)


@dataclass(frozen=True)
class LatencyStats:
    """One route's figures; latencies in milliseconds, over successful (2xx) responses only."""

    requests: int  # completed requests, successful or not
    errors: int  # non-2xx responses plus transport failures (timeouts, refused connections)
    rate_limited: int  # of the errors, 429 answers (the guard's per-token limits, not slowness)
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    rps: float  # requests completed inside the window, per second of the window

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class LoadResult:
    clients: int
    seconds: float  # the window plus the time the requests in flight at its end took to finish
    routes: dict[str, LatencyStats]
    overall: LatencyStats
    littles_law_rps: float | None  # clients / mean latency: should be close to overall.rps
    error_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"clients": self.clients, "seconds": self.seconds, "overall": self.overall.as_dict(),
                "littles_law_rps": self.littles_law_rps,
                "routes": {k: v.as_dict() for k, v in self.routes.items()}, "error_examples": self.error_examples}


def worker_pids(home: Path) -> list[int]:
    """The bentoml worker processes serving `home` (their command line and EWS_HOME)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"_bentoml_impl.worker.service" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            if f"EWS_HOME={home}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                out.append(int(pid))
        except OSError:
            continue
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values: the value at rank ceil(q/100 * n), 1-based.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.0
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile q must be in (0, 100], got {q}")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def latency_stats(latencies_s: Sequence[float], errors: int = 0, seconds: float | None = None,
                  completed_in_window: int | None = None, rate_limited: int = 0) -> LatencyStats:
    """Figures of one route from its successful requests' latencies (seconds) and its error count.

    `rps` counts `completed_in_window` (default: every request) over `seconds`."""
    ms = sorted(x * 1000.0 for x in latencies_s)
    n = len(ms) + errors
    done = n if completed_in_window is None else completed_in_window
    rps = done / seconds if seconds else 0.0

    def pct(q: float) -> float | None:
        return round(percentile(ms, q), 3) if ms else None

    return LatencyStats(requests=n, errors=errors, rate_limited=rate_limited, p50_ms=pct(50), p90_ms=pct(90), p99_ms=pct(99),
                        max_ms=round(ms[-1], 3) if ms else None, mean_ms=round(sum(ms) / len(ms), 3) if ms else None,
                        rps=round(rps, 1))


def measure(targets: Sequence[Target | tuple[str, str, float]] | Mapping[str, str], clients: int, seconds: float,
            token: str | Sequence[str] | None = None, timeout: float = 10.0, seed: int = 0) -> LoadResult:
    """Run `clients` closed-loop clients for `seconds`; each request goes to a target drawn by weight.

    `targets` are `Target`s, (name, url, weight) tuples, or a mapping name -> URL (equal weights).
    `token` is the bearer token of targets that carry none; a token given as a sequence is dealt
    one per client (client i uses token[i % len]), as distinct users would hold them. Each client first makes one unrecorded request (opening its connection), then
    all start together, so connection set-up is not counted as latency.
    """
    if isinstance(targets, Mapping):
        targets = [Target(name, url) for name, url in targets.items()]
    targets = [t if isinstance(t, Target) else Target(*t) for t in targets]
    if not targets or clients < 1 or seconds <= 0:
        raise ValueError("measure needs at least one target, one client and a positive duration")
    names = [t.name for t in targets]
    weights = [t.weight for t in targets]
    lat: list[dict[str, list[float]]] = [{n: [] for n in names} for _ in range(clients)]
    err: list[dict[str, int]] = [dict.fromkeys(names, 0) for _ in range(clients)]
    # Requests started near the end finish after it; rates count only those done inside the window,
    # so that with every client busy throughout, rps matches clients / mean latency.
    in_window: list[dict[str, int]] = [dict.fromkeys(names, 0) for _ in range(clients)]
    limited: list[dict[str, int]] = [dict.fromkeys(names, 0) for _ in range(clients)]
    examples: list[str] = []
    window: dict[str, float] = {}

    def open_window() -> None:  # run once, when the last client is connected, before any is released
        window["start"] = time.perf_counter()
        window["end"] = window["start"] + seconds

    start = threading.Barrier(clients + 1, action=open_window)

    def headers(t: Target, i: int) -> dict[str, str]:
        tok = t.token or token
        if tok is not None and not isinstance(tok, str):
            tok = tok[i % len(tok)]
        return {"Authorization": f"Bearer {tok}"} if tok else {}

    def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        with httpx.Client(timeout=timeout) as http:
            try:
                http.get(targets[0].url, headers=headers(targets[0], i))
            except httpx.HTTPError:
                pass  # counted when it happens again inside the window
            try:
                start.wait(timeout + 30)
            except threading.BrokenBarrierError:
                return  # another client could not start: the main thread reports it
            end = window["end"]
            while True:
                t = rng.choices(targets, weights)[0]
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                try:
                    r = http.get(t.url, headers=headers(t, i))
                    ok = 200 <= r.status_code < 300
                    limited[i][t.name] += r.status_code == 429
                    why = f"{t.name}: HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    ok, why = False, f"{t.name}: {type(e).__name__}"
                t1 = time.perf_counter()
                elapsed = t1 - t0
                if t1 <= end:
                    in_window[i][t.name] += 1
                if ok:
                    lat[i][t.name].append(elapsed)
                else:
                    err[i][t.name] += 1
                    if len(examples) < 5:
                        examples.append(why)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for th in threads:
        th.start()
    try:  # bounded: a client that dies before connecting must not hang the benchmark
        start.wait(timeout + 30)
    except threading.BrokenBarrierError:
        raise RuntimeError(f"not every client could open a connection to {targets[0].url}") from None
    for th in threads:
        th.join(seconds + timeout + 30)
    elapsed = time.perf_counter() - window["start"]  # includes the requests in flight at the end
    routes = {n: latency_stats([x for c in lat for x in c[n]], sum(e[n] for e in err), seconds,
                               sum(w[n] for w in in_window), sum(q[n] for q in limited)) for n in names}
    every = [x for c in lat for n in names for x in c[n]]
    overall = latency_stats(every, sum(sum(e.values()) for e in err), seconds, sum(sum(w.values()) for w in in_window),
                            sum(sum(q.values()) for q in limited))
    little = round(clients / (overall.mean_ms / 1000.0), 1) if overall.mean_ms else None
    return LoadResult(clients=clients, seconds=round(elapsed, 2), routes=routes, overall=overall,
                      littles_law_rps=little, error_examples=examples)


# -- a second opinion from a client written in C -----------------------------------------------------
#
# The httpx clients above are Python threads on the same 2 cores as the service: at ~1 ms of server
# CPU per cached list, their own parsing and gunzipping takes a share of the cores the service needs,
# and their latencies include it. Apache's `ab` (Debian apache2-utils) is one C process with an event
# loop: it spends ~0.1 ms of CPU per request and does not decompress. Its latency per request is the
# whole exchange (connect, send, wait, read). It speaks HTTP/1.0: with `-k` it asks for keep-alive,
# but uvicorn's h11 parser keeps only HTTP/1.1 connections open, so every ab request also opens and
# closes a loopback connection (`keep_alive_requests` says how many were kept alive).

AB = "ab"


@dataclass(frozen=True)
class AbResult:
    """One `ab` run: counts, and percentiles (ms) that ab computed over every completed request
    (its `-e` table: the value at index round(q/100 * n) of the sorted request times)."""

    requests: int
    errors: int  # failed requests (connect, receive, length, exceptions) plus non-2xx answers
    keep_alive_requests: int
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None  # ab's "Time per request (mean)": clients x run time / requests

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_ab(report: str, percentiles_csv: str) -> AbResult:
    """The figures of an `ab` run from its report (stdout) and its `-e` percentile table."""
    import re

    def number(label: str, default: float | None = None) -> float | None:
        m = re.search(rf"^{re.escape(label)}:\s+([0-9.]+)", report, flags=re.M)
        return float(m.group(1)) if m else default

    table: dict[int, float] = {}
    for line in percentiles_csv.splitlines()[1:]:
        q, _, ms = line.partition(",")
        if q.strip().isdigit() and ms.strip():
            table[int(q)] = float(ms)
    done = int(number("Complete requests", 0) or 0)
    failed = int(number("Failed requests", 0) or 0) + int(number("Non-2xx responses", 0) or 0)
    return AbResult(requests=done, errors=failed, keep_alive_requests=int(number("Keep-Alive requests", 0) or 0),
                    rps=round(number("Requests per second", 0.0) or 0.0, 1),
                    p50_ms=table.get(50) if done else None, p90_ms=table.get(90) if done else None,
                    p99_ms=table.get(99) if done else None, max_ms=table.get(100) if done else None,
                    mean_ms=number("Time per request") if done else None)


def measure_ab(url: str, clients: int, seconds: float, token: str | None = None, gzip: bool = True,
               timeout: float = 30.0) -> AbResult:
    """`ab -c clients -k -t seconds` (whole seconds, at least 1) on one URL, with the bearer token and `Accept-Encoding: gzip`
    (what a browser sends), every request timed by ab. Needs `ab` on PATH (`make bench` installs it)."""
    import shutil
    import subprocess
    import tempfile

    if shutil.which(AB) is None:
        raise RuntimeError("ab is not installed: apt-get install apache2-utils (`make bench` does)")
    if clients < 1 or seconds <= 0:
        raise ValueError("measure_ab needs at least one client and a positive duration")
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "percentiles.csv"
        # -t first: it sets a 50,000-request cap that the -n after it lifts. -s: ab's per-request
        # timeout. -r: a failed receive is counted, not the end of the run.
        # ab reads -t as whole seconds (0 would mean no limit at all).
        cmd = [AB, "-t", str(max(1, math.ceil(seconds))), "-n", "100000000", "-c", str(clients), "-k", "-r", "-s", f"{timeout:g}",
               "-e", str(table)]
        if token:
            cmd += ["-H", f"Authorization: Bearer {token}"]
        if gzip:
            cmd += ["-H", "Accept-Encoding: gzip"]
        try:
            out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + timeout + 60)
        except subprocess.TimeoutExpired:  # its message would print the command line, token included
            raise RuntimeError(f"ab did not finish within {seconds + timeout + 60:.0f} s") from None
        if out.returncode != 0:
            raise RuntimeError(f"ab failed ({out.returncode}): {out.stderr.strip()[-500:]}")
        return parse_ab(out.stdout, table.read_text() if table.exists() else "")
