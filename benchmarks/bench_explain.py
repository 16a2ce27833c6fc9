"""Benchmark: one pupil's explanation and printable sheet, in process, for every pupil of a
published round, per role.

    .venv/bin/python -m benchmarks.bench_explain --home PATH --round R [--roles school auditor] [--no-sheet]

What the service's explanation route (`GET /explanation`) computes for one request, without HTTP:
`serving.views.explanation` on the round the service maps (`serving.store.load_round`), once for
every pupil of the round, as the pupil's own school (every value shown) and as a role that sees
the disclosed view (`auditor`, `analyst` or `area`: values coarsened or withheld). The first call of
each role is made before timing (the disclosure plan is built once per round). Each call is timed
alone; the report gives the median, p90, p99 and maximum in milliseconds (nearest rank,
benchmarks/latency.py), per role. Latency over HTTP adds the service's own cost: bench_serve.
The sheet (`GET /students/<key>/sheet`, the school's only) is `serving.sheet.sheet_for` over every
published round of the home, as the service holds them, timed alone per pupil the same way (no
recorded actions, no name: the service adds those from its own stores).

Writes bench-out/explain_<round>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

ROLES = ("school", "auditor", "analyst", "area")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="EWS_HOME with a published round.")
    ap.add_argument("--round", dest="round_id", help="The published round whose pupils are explained.")
    ap.add_argument("--roles", nargs="+", choices=ROLES, default=["school", "auditor"],
                    help="Who asks: the pupil's own school, or a role that sees the disclosed view.")
    ap.add_argument("--limit", type=int, default=None, help="Explain only the first N pupils of the round.")
    ap.add_argument("--no-sheet", dest="sheet", action="store_false", help="Do not time the pupils' sheets.")
    ap.add_argument("--out-dir", "--out", dest="out_dir", type=Path, default=Path("bench-out"))
    ap.add_argument("--plan", action="store_true", help="Print the resolved arguments and exit without measuring.")
    return ap


def _timings(ms: list[float]) -> dict[str, Any]:
    from benchmarks.latency import percentile

    ms = sorted(ms)
    return {"calls": len(ms), "median_ms": round(percentile(ms, 50), 3), "p90_ms": round(percentile(ms, 90), 3),
            "p99_ms": round(percentile(ms, 99), 3), "max_ms": round(ms[-1], 3)}


def measure(home: Path, round_id: str, roles: list[str], limit: int | None = None,
            sheet: bool = True) -> dict[str, Any]:
    """Per role: every pupil's explanation timed alone, in milliseconds; with `sheet`, every
    pupil's sheet over the home's published rounds."""
    from features.home import EwsHome
    from serving import views
    from serving.access import Principal
    from serving.snapshot import published, published_rounds
    from serving.store import load_round

    ref = published(EwsHome(root=home), round_id)
    if ref is None:
        raise SystemExit(f"{home}: round {round_id} is not published (ews score --round {round_id}, then publish)")
    rnd = load_round(ref)
    keys = rnd.student_keys()[:limit]
    if not keys:
        raise SystemExit(f"{home}: round {round_id} has no pupils to explain")
    schools = rnd.table.column("school_code").to_pylist()[:len(keys)]
    provinces = tuple(sorted({str(t)[:2] for t in rnd.table.column("tambon_code").to_pylist() if t}))
    out: dict[str, Any] = {}
    for role in roles:
        def who(school: str, role: str = role) -> Principal:
            if role == "school":
                return Principal("bench", "school", school, ())
            return Principal("bench", role, None, provinces if role == "area" else ())

        views.explanation(rnd, who(schools[0]), keys[0])  # the round's disclosure plan, built once
        ms = []
        for key, school in zip(keys, schools, strict=True):
            t = time.perf_counter()
            views.explanation(rnd, who(school), key)
            ms.append((time.perf_counter() - t) * 1000)
        out[role] = _timings(ms)
    result: dict[str, Any] = {"pupils": len(keys), "roles": out}
    if sheet:
        from serving.sheet import sheet_for

        h = EwsHome(root=home)
        rounds = [rnd if ref.round.round_id == round_id else load_round(ref) for ref in published_rounds(h)]
        sheet_for(rnd, rounds, keys[0], None, [])
        ms = []
        for key in keys:
            t = time.perf_counter()
            sheet_for(rnd, rounds, key, None, [])
            ms.append((time.perf_counter() - t) * 1000)
        result["sheet"] = {"rounds_held": len(rounds), **_timings(ms)}
    return result


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    if args.plan:
        print(json.dumps({"benchmark": "explain", "plan": True, **{k: v for k, v in vars(args).items() if k != "plan"}},
                         default=str))
        return
    if args.home is None or args.round_id is None:
        ap.error("--home and --round (`make bench` passes the home's published round)")
    load = os.getloadavg()[0]
    result = {"benchmark": "explain", "round": args.round_id, "home": str(args.home), "load_average_at_start": load,
              **measure(args.home, args.round_id, args.roles, args.limit, args.sheet),
              "load_average_at_end": os.getloadavg()[0]}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"explain_{args.round_id}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
