"""Benchmark: the running service, every request's latency measured (benchmarks.latency).

    .venv/bin/python -m benchmarks.bench_serve --home PATH --round R [--clients 10] [--seconds 20] [--workers 2]

Starts `ews serve` on a free port with the home's published round, creates benchmark tokens (one
per client and role, as distinct users hold them; revoked at the end) and lifts the guard's
per-token rate limits for the run (EWS_GUARD; --keep-rate-limits measures as deployed instead:
a 429 is a fast refusal, not a latency), then measures with closed-loop HTTP clients, each
recording every request:
  1. each route alone at --clients clients for --seconds: the largest school's list (JSON, with the
     school's token), the same list as an Excel export, one student's explanation, and a 2,000-row
     area list (auditor) -> requests, errors, p50/p90/p99/max per route
  2. a mix of those routes plus an area summary at --mix-clients clients -> errors under load
The issue's figures: school list p99 <= 20 ms and Excel p99 <= 200 ms at 10 clients.
Writes bench-out/serve_<round>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.latency import Target, measure

ROOT = Path(__file__).resolve().parents[1]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="EWS_HOME with a champion and a published round (`make bench` builds one).")
    ap.add_argument("--round", dest="round_id", help="A published round of that home.")
    ap.add_argument("--clients", type=int, default=10, help="Concurrent clients per route (phase 1).")
    ap.add_argument("--mix-clients", type=int, default=50, help="Concurrent clients on the mixed load (phase 2).")
    ap.add_argument("--seconds", type=float, default=20.0, help="Duration of each measurement.")
    ap.add_argument("--workers", type=int, default=2, help="Service worker processes.")
    ap.add_argument("--keep-rate-limits", action="store_true", help="Keep the deployment's per-token rate limits.")
    ap.add_argument("--out-dir", "--out", dest="out_dir", type=Path, default=Path("bench-out"))
    ap.add_argument("--plan", action="store_true", help="Print the resolved arguments and exit without measuring.")
    return ap


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], base: str, token: str, log: Path, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while True:
        if proc.poll() is not None:
            sys.exit(f"ews serve exited {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(base + "/ews/api/rounds", headers={"Authorization": f"Bearer {token}"}, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"service not ready in {limit:.0f} s")
        time.sleep(1)


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    a = ap.parse_args(argv)
    if a.plan:
        print(json.dumps({"benchmark": "serve", **vars(a)}, default=str))
        return
    if a.home is None or a.round_id is None:
        ap.error("--home and --round are required (`make bench` builds a home and passes them)")

    import pyarrow.parquet as pq

    from features.home import EwsHome
    from serving.access import create_token, revoke_token
    from serving.snapshot import published

    home = EwsHome(root=a.home.resolve())
    ref = published(home, a.round_id)
    if ref is None:
        sys.exit(f"round {a.round_id} is not published in {home.root}: run `ews score --round {a.round_id}` first")
    df = pq.read_table(ref.folder / "students.parquet", columns=["student_key", "school_code", "province_code"]).to_pandas()
    school = str(df["school_code"].value_counts().index[0])
    province = str(df["province_code"].value_counts().index[0])
    key = str(df.loc[df["school_code"] == school, "student_key"].iloc[0])
    made: list[str] = []

    def tokens(role: str, n: int, **scope: str) -> list[str]:
        out = []
        for _ in range(n):
            token, info = create_token(home, role, label="bench_serve", **scope)  # type: ignore[arg-type]
            made.append(info.token_id)
            out.append(token)
        return out

    n_clients = max(a.clients, a.mix_clients)
    school_tokens, auditor_tokens = tokens("school", n_clients, school=school), tokens("auditor", n_clients)
    t_school, t_aud = school_tokens[0], auditor_tokens[0]

    port = _free_port()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    log = a.out_dir / "serve.log"
    env = dict(os.environ, EWS_HOME=str(home.root))
    lifted = {"per_second": 1e6, "burst": 1_000_000}
    if not a.keep_rate_limits:
        env["EWS_GUARD"] = json.dumps({"rates": dict.fromkeys(("score", "export", "explain"), lifted)})
    with open(log, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "ews", "serve", "--port", str(port), "--workers", str(a.workers)],
                                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/ews/api/rounds/{a.round_id}"
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}", t_aud, log)
        time.sleep(3 * a.workers)  # the first worker answered; let every other one finish loading too
        school_url = f"{base}/schools/{school}/students"
        routes = [
            Target("school_list_json", school_url, token=school_tokens),
            Target("school_list_xlsx", school_url + "?format=xlsx", token=school_tokens),
            Target("explanation", f"{base}/students/{key}/explanation", token=school_tokens),
            Target("area_list_2000", f"{base}/areas/{province}/students?limit=2000", token=auditor_tokens),
        ]
        rows = {
            "school_list": len(httpx.get(school_url, headers={"Authorization": f"Bearer {t_school}"}).json()["students"]),
            "area_list_2000": len(httpx.get(routes[3].url, headers={"Authorization": f"Bearer {t_aud}"}).json()["students"]),
        }
        per_route = {}
        for t in routes:
            per_route[t.name] = measure([t], a.clients, a.seconds).as_dict()["routes"][t.name]  # type: ignore[index]
            print(json.dumps({t.name: per_route[t.name]}), flush=True)
        mix = measure([
            Target("school_list_json", school_url, 4, school_tokens), Target("school_list_xlsx", routes[1].url, 1, school_tokens),
            Target("explanation", routes[2].url, 4, school_tokens),
            Target("area_summary", f"{base}/areas/{province}/summary", 1, auditor_tokens),
        ], a.mix_clients, a.seconds)
        res = {
            "round": a.round_id, "students_in_round": len(df), "rows": rows, "workers": a.workers,
            "rate_limits": "as deployed" if a.keep_rate_limits else "lifted for the benchmark (EWS_GUARD)",
            "clients": a.clients, "seconds": a.seconds, "per_route": per_route,
            f"mix_{a.mix_clients}_clients": mix.as_dict(),
            "generator": "benchmarks.latency (httpx, closed-loop clients, every request timed)",
            "targets": "school list p99 <= 20 ms and Excel p99 <= 200 ms at 10 clients",
        }
        path = a.out_dir / f"serve_{a.round_id}.json"
        path.write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps(res, indent=2))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        for token_id in made:
            revoke_token(home, token_id)


if __name__ == "__main__":
    main()
