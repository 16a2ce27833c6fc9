"""Benchmark: the running service under a real HTTP load generator (Debian `wrk`).

    .venv/bin/python -m benchmarks.bench_serve --home PATH --round R [--duration 60] [--workers 2]

Starts `ews serve` on a free port, creates benchmark tokens (revoked at the end), then runs wrk:
  1. one school's list (the largest school), 1 connection -> p99
  2. a 2,000-row list (an area list with limit=2000: the same row path as a school list), 1 connection -> p99
  3. one student's explanation, 1 connection -> p99
  4. 50 connections for --duration seconds on a mix of lists and explanations -> errors (non-2xx + socket)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _wrk(url: str, token: str, conns: int, seconds: int, script: str | None = None) -> dict[str, object]:
    cmd = ["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d", f"{seconds}s", "--latency", "--timeout", "10s",
           "-H", f"Authorization: Bearer {token}"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    reqs = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    rps = re.search(r"Requests/sec:\s+(\S+)", out)
    return {"p50": pct.get("50"), "p99": pct.get("99"), "requests": int(reqs.group(1)) if reqs else 0,
            "rps": float(rps.group(1)) if rps else 0.0, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(map(int, sock.groups())) if sock else 0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--round", dest="round_id", required=True)
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    import pyarrow.parquet as pq

    from features.home import EwsHome
    from serving.access import create_token, revoke_token
    from serving.snapshot import published

    home = EwsHome(root=a.home.resolve())
    ref = published(home, a.round_id)
    assert ref is not None
    df = pq.read_table(ref.folder / "students.parquet", columns=["student_key", "school_code", "province_code"]).to_pandas()
    school = df["school_code"].value_counts().index[0]
    province = df["province_code"].value_counts().index[0]
    key = df.loc[df["school_code"] == school, "student_key"].iloc[0]
    t_school, i_school = create_token(home, "school", school=school, label="bench")
    t_aud, i_aud = create_token(home, "auditor", label="bench")

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, EWS_HOME=str(home.root))
    proc = subprocess.Popen([sys.executable, "-m", "ews", "serve", "--port", str(port), "--workers", str(a.workers)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(base + "/ews/api/rounds", headers={"Authorization": f"Bearer {t_aud}"}, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit("service not ready in 180 s")
            time.sleep(1)
        time.sleep(3 * a.workers)  # let every worker finish loading
        r = a.round_id
        school_url = f"{base}/ews/api/rounds/{r}/schools/{school}/students"
        big_url = f"{base}/ews/api/rounds/{r}/areas/{province}/students?limit=2000"
        expl_url = f"{base}/ews/api/rounds/{r}/students/{key}/explanation"
        n_school = len(httpx.get(school_url, headers={"Authorization": f"Bearer {t_school}"}).json()["students"])
        n_big = len(httpx.get(big_url, headers={"Authorization": f"Bearer {t_aud}"}).json()["students"])
        res = {
            "school_list": {"rows": n_school, **_wrk(school_url, t_school, 1, 15)},
            "list_2000": {"rows": n_big, **_wrk(big_url, t_aud, 1, 15)},
            "explanation": _wrk(expl_url, t_aud, 1, 15),
        }
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
            lua.write(f'''
local paths = {{"/ews/api/rounds/{r}/schools/{school}/students", "/ews/api/rounds/{r}/students/{key}/explanation",
                "/ews/api/rounds/{r}/areas/{province}/summary"}}
local i = 0
request = function() i = i + 1; return wrk.format("GET", paths[(i % #paths) + 1]) end
''')
        # The auditor token may read every path in the mix.
        res["concurrent_50"] = _wrk(base + "/", t_aud, 50, a.duration, lua.name)
        res["workers"] = a.workers
        res["generator"] = "wrk 4.1.0 (Debian)"
        print(json.dumps(res, indent=2))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        revoke_token(home, i_school.token_id)
        revoke_token(home, i_aud.token_id)


if __name__ == "__main__":
    main()
