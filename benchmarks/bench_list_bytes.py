"""Benchmark: what a school downloads, plain and gzip-compressed, per school of a published round.

    .venv/bin/python -m benchmarks.bench_list_bytes --home PATH --round R [--schools 20]

For the --schools largest schools of round R (a school token's own view, as the service renders it:
`serving.views.school_list_rendered`), the JSON and CSV list's size as rendered and as sent to a
client that takes gzip (the service caches the compressed bytes), the ratio, and the time one
decompression takes. Names are left out (the vault is not opened), so sizes are a little below what
a school with names receives. Prints a table; writes bench-out/list_bytes_<round>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True, help="EWS_HOME with a published round.")
    ap.add_argument("--round", dest="round_id", required=True, help="A published round of that home.")
    ap.add_argument("--schools", type=int, default=20, help="How many of the largest schools to measure.")
    ap.add_argument("--out-dir", type=Path, default=Path("bench-out"))
    return ap


def measure(home: Path, round_id: str, schools: int) -> dict[str, Any]:
    from features.home import EwsHome
    from serving import views
    from serving.access import Principal
    from serving.snapshot import published_rounds
    from serving.store import load_round

    refs = [r for r in published_rounds(EwsHome(root=home)) if r.round_id == round_id]
    if not refs:
        raise SystemExit(f"round {round_id} is not published in {home}")
    rnd = load_round(refs[0])
    largest = sorted(rnd.by_school, key=lambda s: len(rnd.by_school[s]), reverse=True)[:schools]
    rows: list[dict[str, Any]] = []
    for school in largest:
        who = Principal("bench", "school", school, ())
        for fmt in ("json", "csv"):
            out = views.school_list_rendered(rnd, who, school, {}, fmt)
            t = time.perf_counter()
            plain = out.body
            rows.append({"school_rank": len(rows) // 2 + 1, "format": fmt, "pupils": out.students,
                         "plain_bytes": len(plain), "gzip_bytes": len(out.encoded),
                         "ratio": len(plain) / len(out.encoded), "decompress_ms": (time.perf_counter() - t) * 1e3})
    summary = {fmt: {"median_ratio": statistics.median(r["ratio"] for r in rows if r["format"] == fmt),
                     "min_ratio": min(r["ratio"] for r in rows if r["format"] == fmt),
                     "largest_plain_bytes": max(r["plain_bytes"] for r in rows if r["format"] == fmt)}
               for fmt in ("json", "csv")}
    return {"home": str(home), "round": round_id, "schools": len(largest), "rows": rows, "summary": summary}


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    result = measure(a.home, a.round_id, a.schools)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    (a.out_dir / f"list_bytes_{a.round_id}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"{'rank':>4} {'fmt':>4} {'pupils':>6} {'plain':>10} {'gzip':>9} {'ratio':>6} {'unzip ms':>8}")
    for r in result["rows"]:
        print(f"{r['school_rank']:>4} {r['format']:>4} {r['pupils']:>6} {r['plain_bytes']:>10,} {r['gzip_bytes']:>9,} "
              f"{r['ratio']:>6.1f} {r['decompress_ms']:>8.2f}")
    for fmt, s in result["summary"].items():
        print(f"{fmt}: median ratio {s['median_ratio']:.1f}, smallest {s['min_ratio']:.1f}, "
              f"largest list {s['largest_plain_bytes']:,} bytes")


if __name__ == "__main__":
    main()
