"""Benchmark: the running service, every request's latency measured (benchmarks.latency).

    .venv/bin/python -m benchmarks.bench_serve --home PATH --round R [--clients 10] [--seconds 20] [--workers 2]
    .venv/bin/python -m benchmarks.bench_serve --tile-from HOME --times 80 --home NEW --round R   (national size)

Starts `ews serve` on a free port with the home's published round, creates benchmark tokens (one
per client and role, as distinct users hold them; revoked at the end) and lifts the guard's
per-token rate limits for the run (EWS_GUARD; --keep-rate-limits measures as deployed instead:
a 429 is a fast refusal, not a latency), then measures with closed-loop HTTP clients, each
recording every request:
  1. each route alone at --clients clients for --seconds: the largest school's list (JSON, with the
     school's token), the same list as an Excel export, one student's explanation, and a 2,000-row
     area list (auditor) -> requests, errors, p50/p90/p99/max per route
  2. a mix of those routes plus an area summary at --mix-clients clients -> errors under load
The issue's figures: school list p99 <= 20 ms and Excel p99 <= 200 ms at 10 clients, for a round
of 8M rows. `--tile-from HOME --times N` first builds that round: a copy of HOME (registry, tokens,
vault, warehouse; not its rounds) at --home whose round R is HOME's snapshot tiled N times (tile t
gets its own student keys, school codes and province, so a school's list keeps its real size), then
measures it as above. Each worker's load time and memory (private and anonymous pages from
/proc/PID/smaps_rollup, i.e. beyond the shared memory-mapped snapshot) go into the result.
With `ab` installed (Debian apache2-utils; `make bench` installs it) the school list's JSON and
Excel routes are measured a second time by `ab -k` (one C process, so the client takes almost none
of the cores the service needs; see benchmarks/latency.py), with the workers' CPU per request and
the load average before each run.
Writes bench-out/serve_<round>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.latency import Target, measure, measure_ab

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
    ap.add_argument("--tile-from", type=Path, help="Build --home from this home's round --round tiled --times times.")
    ap.add_argument("--times", type=int, default=80, help="Tiles of the round (80 x 101k students = 8.1M rows).")
    ap.add_argument("--ab", action=argparse.BooleanOptionalAction, default=None,
                    help="Also measure the school list (JSON and Excel) with Apache's ab, a C client (default: when ab is installed).")
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


_HOME_PARTS = ("keys", "mlflow", "serving", "vault", "warehouse.duckdb", "model_cards", "ews.toml")


def tile_home(src: Path, dst: Path, round_id: str, times: int) -> Path:
    """A new home at `dst` whose published round `round_id` is `src`'s snapshot repeated `times` times.

    Tile 0 is the real round; tile t >= 1 appends `Tt` to every student key, gives each school the
    code prefix 19+t (codes stay 10 digits and distinct from the real '10...' ones) and moves the
    tile to its own two-digit province, so schools keep their size and a province its shape. The
    Parquet file is written row group by row group (memory is one tile, not the country)."""
    import shutil

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from features.home import EwsHome
    from serving.snapshot import MANIFEST, POINTER, STUDENTS, published

    ref = published(EwsHome(root=src.resolve()), round_id)
    if ref is None:
        sys.exit(f"round {round_id} is not published in {src}")
    dst.mkdir(parents=True, exist_ok=True)
    for part in _HOME_PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, dst / part, dirs_exist_ok=True)
        elif (src / part).exists():
            shutil.copy2(src / part, dst / part)
    base = ref.students()
    digest = f"{ref.hash[:8]}tile{times:04d}"
    folder = dst / "rounds" / round_id / digest
    folder.mkdir(parents=True, exist_ok=True)
    orig_prov = str(base.column("province_code")[0])

    def prefixed(col: str, prefix: str, keep: int) -> pa.Array:
        c = base.column(col)
        joined = pc.binary_join_element_wise(pa.scalar(prefix, c.type), pc.utf8_slice_codeunits(c, keep),
                                             pa.scalar("", c.type))
        return pc.if_else(pc.is_null(c), c, joined)

    tmp = folder / (STUDENTS + ".tmp")
    with pq.ParquetWriter(tmp, base.schema) as w:
        for t in range(times):
            if t == 0:
                w.write_table(base)
                continue
            prov = orig_prov if t == 0 else f"{10 + (int(orig_prov) - 10 + t) % 90:02d}"
            tile, key = base, base.column("student_key")
            for col, new in (("student_key", pc.binary_join_element_wise(
                                 key, pa.scalar(f"T{t}", key.type), pa.scalar("", key.type))),
                             ("school_code", prefixed("school_code", f"{19 + t:02d}", 2)),
                             ("province_code", prefixed("province_code", prov, 2)),
                             ("amphoe_code", prefixed("amphoe_code", prov, 2)),
                             ("tambon_code", prefixed("tambon_code", prov, 2))):
                tile = tile.set_column(tile.schema.get_field_index(col), col, new.cast(base.schema.field(col).type))
            w.write_table(tile)
    os.replace(tmp, folder / STUDENTS)
    manifest = json.loads((ref.folder / MANIFEST).read_text(encoding="utf-8"))
    manifest.update(rows=base.num_rows * times, snapshot_hash=digest)
    if "scored_rows" in manifest:
        manifest["scored_rows"] = int(manifest["scored_rows"]) * times
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    (folder.parent / POINTER).write_text(digest + "\n", encoding="utf-8")
    return dst


def worker_memory(home: Path) -> dict[int, dict[str, float]]:
    """Per bentoml worker of `home`: RSS and its parts from /proc/PID/smaps_rollup, in MB. What a
    worker holds beyond the shared memory-mapped snapshot is its anonymous memory (`Anonymous`;
    `Private_Dirty` is the same pages bar a few written file pages). `Private_Clean` counts file
    pages only this process has touched: pages of the mapped snapshot read by one worker only."""
    from benchmarks.latency import worker_pids

    out: dict[int, dict[str, float]] = {}
    for pid in worker_pids(home):
        try:
            fields = {}
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
                name, value = line.split(":", 1)
                if name in ("Rss", "Pss", "Shared_Clean", "Private_Clean", "Private_Dirty", "Anonymous", "Pss_Anon", "Pss_File"):
                    fields[name] = round(int(value.split()[0]) / 1024, 1)
            out[int(pid)] = fields
        except (OSError, StopIteration, ValueError):
            continue
    return out


_LOAD_ONE = """
import json, sys, time
from pathlib import Path
from features.home import EwsHome
from serving.snapshot import published
from serving.store import ensure_mapped, load_round
ref = published(EwsHome(root=Path(sys.argv[1])), sys.argv[2])
t0 = time.monotonic(); ensure_mapped(ref); t1 = time.monotonic()
rnd = load_round(ref); t2 = time.monotonic()
school = max(rnd.by_school, key=lambda s: len(rnd.by_school[s]))
rnd.values_at("reasons_th", rnd.by_school[school]); t3 = time.monotonic()
mem = {}
for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
    k, v = line.split(":", 1)
    mem[k] = round(int(v.split()[0]) / 1024, 1)
print(json.dumps({"rows": rnd.num_rows, "convert_s": round(t1 - t0, 2), "load_s": round(t2 - t1, 2),
                  "first_school_list_columns_s": round(t3 - t2, 3), "smaps_mb": mem}))
"""


def measure_load(home: Path, round_id: str) -> dict[str, object]:
    """One fresh process maps the round as a worker does: seconds to load (and to convert, when no
    mapped copy existed yet) and its memory by kind (smaps_rollup: Anonymous is what it holds beyond
    the shared file; Private_Clean are file pages only it has read)."""
    out = subprocess.run([sys.executable, "-c", _LOAD_ONE, str(home), round_id], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def workers_cpu_seconds(home: Path) -> float:
    """User + system CPU seconds the service's workers have used so far (/proc/PID/stat)."""
    from benchmarks.latency import worker_pids

    total = 0
    for pid in worker_pids(home):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the line)
    return total / os.sysconf("SC_CLK_TCK")


def ab_route(home: Path, url: str, token: str, clients: int, seconds: float) -> dict[str, object]:
    """One route measured with ab (benchmarks.latency.measure_ab), with the workers' CPU per request
    and the 1-minute load average before the run (the machine is shared: say how busy it was)."""
    load_avg = round(os.getloadavg()[0], 2)
    cpu0 = workers_cpu_seconds(home)
    res = measure_ab(url, clients, seconds, token=token).as_dict()
    cpu = workers_cpu_seconds(home) - cpu0
    res["workers_cpu_ms_per_request"] = round(1000 * cpu / res["requests"], 3) if res["requests"] else None  # type: ignore[operator]
    res["load_average_1min_before"] = load_avg
    return res


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    a = ap.parse_args(argv)
    if a.plan:
        print(json.dumps({"benchmark": "serve", **vars(a)}, default=str))
        return
    if a.home is None or a.round_id is None:
        ap.error("--home and --round are required (`make bench` builds a home and passes them)")
    if a.tile_from is not None:
        t0 = time.monotonic()
        tile_home(a.tile_from, a.home, a.round_id, a.times)
        print(json.dumps({"tiled": str(a.home), "times": a.times, "seconds": round(time.monotonic() - t0, 1)}), flush=True)

    import pyarrow.parquet as pq

    from features.home import EwsHome
    from serving.access import create_token, revoke_token
    from serving.snapshot import published

    home = EwsHome(root=a.home.resolve())
    load = measure_load(home.root, a.round_id)
    print(json.dumps({"load_one_worker": load}), flush=True)
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
        t_start = time.monotonic()
        _wait_ready(proc, f"http://127.0.0.1:{port}", t_aud, log)
        ready_s = time.monotonic() - t_start
        time.sleep(3 * a.workers)  # the first worker answered; let every other one finish loading too
        memory_ready = worker_memory(home.root)
        school_url = f"{base}/schools/{school}/students"
        routes = [
            Target("school_list_json", school_url, token=school_tokens),
            Target("school_list_xlsx", school_url + "?format=xlsx", token=school_tokens),
            Target("explanation", f"{base}/students/{key}/explanation", token=school_tokens),
            Target("area_list_2000", f"{base}/areas/{province}/students?limit=2000", token=auditor_tokens),
        ]
        # The first request of each route also warms what a worker builds once (an area token's
        # disclosure plan covers the whole round: minutes at national size), timed here apart.
        first: dict[str, float] = {}

        def first_get(name: str, url: str, token: str) -> httpx.Response:
            # Until it answers: past the service's 60 s request timeout a worker goes on building
            # (the plan is kept once built), so the time to the first answer is what is recorded.
            t0 = time.perf_counter()
            while True:
                r = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=900)
                if r.status_code == 200 or time.perf_counter() - t0 > 900:
                    break
                print(json.dumps({"first_request": name, "status": r.status_code, "body": r.text[:200]}), flush=True)
                time.sleep(5)
            first[name] = round(time.perf_counter() - t0, 3)
            return r

        rows = {
            "school_list": len(first_get("school_list", school_url, t_school).json()["students"]),
            "area_list_2000": len(first_get("area_list_2000", routes[3].url, t_aud).json()["students"]),
        }
        for _ in range(2 * a.workers):  # the other worker(s) too
            first_get("area_list_2000_again", routes[3].url, t_aud)
        per_route = {}
        for t in routes:
            load_avg = round(os.getloadavg()[0], 2)
            per_route[t.name] = measure([t], a.clients, a.seconds).as_dict()["routes"][t.name]  # type: ignore[index]
            per_route[t.name]["load_average_1min_before"] = load_avg  # type: ignore[index]
            print(json.dumps({t.name: per_route[t.name]}), flush=True)
        per_route_ab = {}
        if a.ab or (a.ab is None and shutil.which("ab")):
            for t in routes[:2]:
                per_route_ab[t.name] = ab_route(home.root, t.url, school_tokens[0], a.clients, a.seconds)
                print(json.dumps({f"{t.name} (ab)": per_route_ab[t.name]}), flush=True)
        mix = measure([
            Target("school_list_json", school_url, 4, school_tokens), Target("school_list_xlsx", routes[1].url, 1, school_tokens),
            Target("explanation", routes[2].url, 4, school_tokens),
            Target("area_summary", f"{base}/areas/{province}/summary", 1, auditor_tokens),
        ], a.mix_clients, a.seconds)
        res = {
            "round": a.round_id, "students_in_round": len(df), "rows": rows, "workers": a.workers,
            "load_one_worker": load, "service_ready_s": round(ready_s, 1), "first_request_s": first,
            "worker_memory_mb": {"ready": memory_ready, "after": worker_memory(home.root)},
            "rate_limits": "as deployed" if a.keep_rate_limits else "lifted for the benchmark (EWS_GUARD)",
            "clients": a.clients, "seconds": a.seconds, "per_route": per_route,
            "per_route_ab": per_route_ab or "not measured (ab not installed or --no-ab)",
            f"mix_{a.mix_clients}_clients": mix.as_dict(),
            "generator": "benchmarks.latency (httpx, closed-loop clients, every request timed); per_route_ab: "
                         "Apache ab -k with the same clients (C, one process; HTTP/1.0, so one connection per request)",
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
