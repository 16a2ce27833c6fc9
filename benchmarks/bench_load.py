"""Benchmark: the service under N clients x T minutes of mixed routes, and the guard's refusals.

    .venv/bin/python -m benchmarks.bench_load --home PATH --round R [--clients 100] [--minutes 5]
                                              [--workers 1] [--paths 20000] [--warmup-seconds 90] [--url URL]

Not run in CI. Starts `ews serve` on a free port (or uses --url, a service on the same home),
creates benchmark tokens (revoked at the end; each client has its own, so the per-token rate
limits shape the mix as they would with real callers), then:
  1. load: every client loops over a weighted mix (school list, CSV export, explanation by the
     school and, disclosure-controlled, by an area token, area summary and list, rounds, /score
     with one row) with httpx; per-request latency -> requests, errors (5xx and transport), 429s,
     p50/p99, and worker RSS before and after (growth in percent), and after --warmup-seconds of
     load to its end (`rss_growth_after_warmup_pct`; both are reported: see that field's comment);
  2. a 50 MB /score body (declared length) from an analyst token: ms until refused, RSS change;
  3. 20,000 random paths (with and without a token): RSS change and /metrics size before/after.
Writes bench-out/bench_load.json and prints it. Worker RSS is read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
MIX: tuple[tuple[str, int], ...] = (
    ("school_list", 25), ("explanation", 20), ("area_explanation", 10), ("area_summary", 15), ("area_list", 10),
    ("rounds", 10), ("csv", 5), ("score", 5),
)


def growth_pct(before: dict[int, float], after: dict[int, float]) -> float | None:
    """Worker RSS growth in percent, summed over the workers alive at both reads."""
    common = set(before) & set(after)
    b = sum(before[p] for p in common)
    return round(100 * (sum(after[p] for p in common) - b) / b, 1) if b else None


def warm_growth_pct(timeline: list[tuple[float, int, float]], warmup_seconds: float, after_mb: float) -> float | None:
    """RSS growth in percent from the first sample at or after `warmup_seconds` into the load to
    `after_mb` (None when the load was shorter than the warm-up)."""
    warm = [mb for sec, _n, mb in timeline if sec >= warmup_seconds]
    return round(100 * (after_mb - warm[0]) / warm[0], 1) if warm and warm[0] else None


def worker_rss_mb(home: Path) -> dict[int, float]:
    from benchmarks.latency import worker_pids

    out = {}
    for pid in worker_pids(home):
        try:
            line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS"))
            out[int(pid)] = round(int(line.split()[1]) / 1024, 1)
        except (OSError, StopIteration):
            continue
    return out


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _client(i: int, base: str, plan: dict[str, Any], until: float, out: dict[str, Any]) -> None:
    rng = random.Random(i)
    names, weights = zip(*MIX, strict=True)
    tok = plan["tokens"][i]
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        while time.monotonic() < until:
            kind = rng.choices(names, weights)[0]
            r, school, area = plan["round"], plan["school"], plan["area"]
            t = time.perf_counter()
            try:
                if kind == "score":
                    resp = await c.post("/score", json={"rows": [plan["row"]]}, headers=tok["analyst"])
                else:
                    path, h = {
                        "school_list": (f"/ews/api/rounds/{r}/schools/{school}/students", tok["school"]),
                        "csv": (f"/ews/api/rounds/{r}/schools/{school}/students?format=csv", tok["school"]),
                        "explanation": (f"/ews/api/rounds/{r}/students/{rng.choice(plan['keys'])}/explanation", tok["school"]),
                        # the same pupils through the disclosure-controlled view of an area token
                        "area_explanation": (f"/ews/api/rounds/{r}/students/{rng.choice(plan['keys'])}/explanation",
                                             tok["area"]),
                        "area_summary": (f"/ews/api/rounds/{r}/areas/{area}/summary", tok["area"]),
                        "area_list": (f"/ews/api/rounds/{r}/areas/{area}/students?limit=200", tok["area"]),
                        "rounds": ("/ews/api/rounds", tok["area"]),
                    }[kind]
                    resp = await c.get(path, headers=h)
                status = resp.status_code
            except httpx.HTTPError:
                status = -1
            out["lat"].append(time.perf_counter() - t)
            out["status"][status] = out["status"].get(status, 0) + 1


async def _sample_rss(home: Path, until: float, every: float, out: dict[str, Any]) -> None:
    """(seconds, requests so far, worker RSS MB) every `every` seconds while the load runs."""
    t0 = time.monotonic()
    while time.monotonic() < until:
        await asyncio.sleep(min(every, max(0.0, until - time.monotonic())))
        out["rss"].append((round(time.monotonic() - t0, 1), len(out["lat"]), round(sum(worker_rss_mb(home).values()), 1)))


def _refuse_50mb(base: str, token: str) -> float:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        t = time.perf_counter()
        s.sendall((f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {50 * 1024 * 1024}\r\n\r\n").encode() + b'{"rows": [' + b" " * 65536)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        ms = (time.perf_counter() - t) * 1000
    assert data.startswith(b"HTTP/1.1 413"), data[:60]
    return round(ms, 2)


def _save(res: dict[str, Any]) -> None:
    Path("bench-out").mkdir(exist_ok=True)
    Path("bench-out/bench_load.json").write_text(json.dumps(res, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--round", dest="round_id", required=True)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--paths", type=int, default=20_000)
    ap.add_argument("--sample-seconds", type=float, default=15.0, help="worker RSS sampled this often during the load")
    ap.add_argument("--warmup-seconds", type=float, default=90.0,
                    help="also report RSS growth from this far into the load (after warm-up) to its end")
    ap.add_argument("--url", default=None, help="a running service on --home (else one is started)")
    a = ap.parse_args()

    import pyarrow.parquet as pq

    from features.home import EwsHome
    from features.pointintime.spec import FEATURES
    from serving.access import create_token, revoke_token
    from serving.snapshot import published

    home = EwsHome(root=a.home.resolve())
    ref = published(home, a.round_id)
    assert ref is not None, f"round {a.round_id} is not published in {home.root}"
    df = pq.read_table(ref.folder / "students.parquet", columns=["student_key", "school_code", "amphoe_code"]).to_pandas()
    school = str(df["school_code"].value_counts().index[0])
    area = str(df.loc[df["school_code"] == school, "amphoe_code"].iloc[0])
    keys = df.loc[df["school_code"] == school, "student_key"].tolist()
    made: list[str] = []

    def tok(role: str, **kw: Any) -> dict[str, str]:
        token, info = create_token(home, role, label="bench_load", **kw)
        made.append(info.token_id)
        return {"Authorization": f"Bearer {token}"}

    row: dict[str, Any] = {f.name: None for f in FEATURES}
    row.update({"grade": "M3", "grade_level": 12, "term": 1, "att_rate_12m": 0.7, "sex": "M", "age": 15.0})
    plan = {"round": a.round_id, "school": school, "area": area, "keys": keys, "row": row,
            "tokens": [{"school": tok("school", school=school), "area": tok("area", areas=[area]), "analyst": tok("analyst")}
                       for _ in range(a.clients)]}
    admin = tok("admin")

    proc = None
    base = a.url
    if base is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, EWS_HOME=str(home.root))
        Path("bench-out").mkdir(exist_ok=True)
        serve_log = open("bench-out/bench_load_serve.log", "wb")  # noqa: SIM115 - open for the service's life
        proc = subprocess.Popen([sys.executable, "-m", "ews", "serve", "--port", str(port), "--workers", str(a.workers)],
                                cwd=ROOT, env=env, stdout=serve_log, stderr=serve_log, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(base + "/ews/api/rounds", headers=admin, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit("service not ready in 180 s")
            time.sleep(1)
        # warm-up: every route once, so the RSS baseline includes loaded code paths
        for _ in range(3):
            asyncio.run(_client(0, base, plan, time.monotonic() + 2, {"lat": [], "status": {}}))
        res: dict[str, Any] = {"clients": a.clients, "minutes": a.minutes, "workers": a.workers,
                               "mix": dict(MIX), "rss_before_mb": worker_rss_mb(home.root)}

        async def load() -> dict[str, Any]:
            out: dict[str, Any] = {"lat": [], "status": {}, "rss": []}
            until = time.monotonic() + a.minutes * 60
            await asyncio.gather(_sample_rss(home.root, until, a.sample_seconds, out),
                                 *(_client(i, base, plan, until, out) for i in range(a.clients)))
            return out

        t0 = time.monotonic()
        out = asyncio.run(load())
        lat = out["lat"]
        res["load"] = {
            "requests": len(lat), "seconds": round(time.monotonic() - t0, 1),
            "errors": sum(n for s, n in out["status"].items() if s == -1 or s >= 500),
            "rate_limited_429": out["status"].get(429, 0), "statuses": {str(k): v for k, v in sorted(out["status"].items())},
            "p50_ms": round(_pct(lat, 0.50) * 1000, 1), "p99_ms": round(_pct(lat, 0.99) * 1000, 1),
            "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
            # (seconds into the load, requests answered so far, worker RSS in MB summed over workers):
            # warm-up levels off, a leak keeps climbing with the requests.
            "rss_timeline": out["rss"],
        }
        res["rss_after_load_mb"] = worker_rss_mb(home.root)
        res["load"]["rss_growth_pct"] = growth_pct(res["rss_before_mb"], res["rss_after_load_mb"])
        # Both figures, honestly: growth from before the load (includes the worker filling its caches,
        # allocator arenas and pools under the first concurrent requests: it levels off), and growth
        # after a stated warm-up of the load (a leak keeps climbing there; warm-up does not).
        res["load"]["warmup_seconds"] = a.warmup_seconds
        res["load"]["rss_growth_after_warmup_pct"] = warm_growth_pct(out["rss"], a.warmup_seconds,
                                                                     sum(res["rss_after_load_mb"].values()))
        _save(res)  # each phase as soon as it is measured: a later failure keeps the earlier figures

        fresh = [tok("analyst")["Authorization"].split()[1] for _ in range(5)]  # full rate buckets
        before = worker_rss_mb(home.root)
        res["body_50mb"] = {"refused_ms": [_refuse_50mb(base, t) for t in fresh],
                            "rss_before_mb": before, "rss_after_mb": worker_rss_mb(home.root)}
        res["body_50mb"]["rss_growth_pct"] = growth_pct(before, res["body_50mb"]["rss_after_mb"])
        _save(res)

        rng = random.Random(20000)
        school_h = plan["tokens"][0]["school"]
        m0 = httpx.get(base + "/metrics", headers=admin, timeout=30)
        before = worker_rss_mb(home.root)
        t = time.perf_counter()
        transport_errors = 0
        path_rss: list[tuple[int, float]] = []  # (paths sent, worker RSS MB): a plateau or a climb
        with httpx.Client(base_url=base, timeout=30) as c:
            for i in range(a.paths):
                if i % 2000 == 0:
                    path_rss.append((i, round(sum(worker_rss_mb(home.root).values()), 1)))
                p = "/" + "/".join("".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(1, 24)))
                                   for _ in range(rng.randint(1, 5)))
                try:
                    c.get(p, headers=school_h if i % 2 else {})
                except httpx.HTTPError:  # counted, not fatal: the figures so far still get written
                    transport_errors += 1
        m1 = httpx.get(base + "/metrics", headers=admin, timeout=30)
        res["random_paths"] = {"paths": a.paths, "seconds": round(time.perf_counter() - t, 1),
                               "rss_before_mb": before, "rss_after_mb": worker_rss_mb(home.root),
                               "metrics_bytes_before": len(m0.content), "metrics_bytes_after": len(m1.content),
                               "transport_errors": transport_errors, "rss_timeline": path_rss}
        res["random_paths"]["rss_growth_pct"] = growth_pct(before, res["random_paths"]["rss_after_mb"])
        _save(res)
        print(json.dumps(res, indent=2))
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        for token_id in made:
            revoke_token(home, token_id)


if __name__ == "__main__":
    main()
