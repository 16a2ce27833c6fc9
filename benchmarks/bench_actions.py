"""Recording actions under concurrency: latency of one record, and nothing lost or duplicated.

    .venv/bin/python -m benchmarks.bench_actions [--writers 100] [--processes 4] [--seconds 120] [--pause 0.05] [--out FILE]

Issue 15's figure: "recording an action: p99 <= 50 ms for one, 100 concurrent writers x 2 minutes
without a lost or duplicated record". `--writers` threads spread over `--processes` processes (as
the service's workers: one `ActionStore`, one sqlite connection each) call `ActionStore.record`
on a fresh home for `--seconds`, each pausing `--pause` seconds between its records (0: back to back,
which measures queueing at saturation rather than the time of one record); this is the store's path behind POST actions, without
HTTP. Afterwards: every acknowledged entry is in the store exactly once, and `verify` walks one
intact chain. Prints JSON (latency percentiles in ms, records/s, lost, duplicated, chain ok).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _worker(root: str, proc: int, threads: int, seconds: float, pause: float, out: Any) -> None:
    from features.home import EwsHome
    from serving.access import Principal
    from serving.actions import ActionStore, Pupil, parse_input

    home = EwsHome(root=Path(root))
    store = ActionStore(home)
    who = Principal(token_id="bench000", role="school", school_code="1234567890", areas=())
    inp = parse_input({"action": "home_visit", "status": "done", "follow_up_due": dt.date.today().isoformat()})
    lat: list[float] = []
    ids: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(t: int) -> None:
        mine_lat, mine_ids, n = [], [], 0
        while time.monotonic() < stop:
            p = Pupil(f"S{proc:03d}{t:03d}{n:08d}", "1234567890", "580101", "2566-T1-mid", "bench", 0.5, "problem")
            t0 = time.perf_counter()
            e = store.record(who, p, inp)
            mine_lat.append(time.perf_counter() - t0)
            mine_ids.append(e["entry_id"])
            n += 1
            if pause:
                time.sleep(pause)
        with lock:
            lat.extend(mine_lat)
            ids.extend(mine_ids)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put((lat, ids))


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=100)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--pause", type=float, default=0.05)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    from features.home import EwsHome
    from serving.actions import verify

    with tempfile.TemporaryDirectory() as root:
        home = EwsHome(root=Path(root))
        from serving.actions import ActionStore

        ActionStore(home).close()  # the schema, once, before the writers race
        q: Any = mp.get_context("spawn").Queue()
        per = [a.writers // a.processes + (1 if i < a.writers % a.processes else 0) for i in range(a.processes)]
        procs = [mp.get_context("spawn").Process(target=_worker, args=(root, i, n, a.seconds, a.pause, q)) for i, n in enumerate(per)]
        t0 = time.monotonic()
        for p in procs:
            p.start()
        results = [q.get() for _ in procs]
        for p in procs:
            p.join()
        wall = time.monotonic() - t0
        lat = np.array([x for r in results for x in r[0]]) * 1000
        acked = [x for r in results for x in r[1]]
        with sqlite3.connect(home.actions_db) as con:
            stored = [r[0] for r in con.execute("SELECT entry_id FROM entries")]
        v = verify(home)
    out = {
        "writers": a.writers, "processes": a.processes, "seconds": a.seconds, "pause": a.pause, "records": len(acked),
        "records_per_second": len(acked) / wall,
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                       "p99": float(np.percentile(lat, 99)), "max": float(lat.max())},
        "lost": len(set(acked) - set(stored)), "duplicated": len(stored) - len(set(stored)),
        "unacknowledged_in_store": len(set(stored) - set(acked)), "chain_ok": v.ok, "chain_entries": v.entries,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
