"""Re-identification risk of a published round: the share of pupils unique on what each role sees.

    .venv/bin/python -m benchmarks.bench_disclosure --home PATH --round R

For every pupil, the explanation each role gets (`serving.views`, as the service answers it; a
school token for the pupil's own school, the other roles with every area in scope), reduced to
what someone who knows a child could match on (tests/integration/test_disclosure.py: QUASI), then
`serving.disclosure.unique_share`. Prints counts, shares and a 95% upper bound (Clopper-Pearson)
per role; docs/PRIVACY.md quotes it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

QUASI = ("school_code", "grade", "sex", "age", "over_age_years", "non_thai_id", "disability", "school_students",
         "school_distance_km", "school_size_class", "school_remote", "region", "grade_level")


def _seen(e: dict[str, Any]) -> dict[str, Any]:
    values = e.get("values") or {x["feature"]: x["value"] for x in e["features"]}
    return {"school_code": e["school_code"], "grade": e["grade"], **{q: values.get(q) for q in QUASI[2:]}}


def _upper(k: int, n: int) -> float:
    """95% one-sided Clopper-Pearson upper bound of a share k/n."""
    from scipy.stats import beta

    return 1.0 if k == n else float(beta.ppf(0.95, k + 1, n - k))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--round", dest="round_id", required=True)
    a = ap.parse_args()

    from features.home import EwsHome
    from serving import views
    from serving.access import Principal
    from serving.disclosure import K_ANONYMITY, unique_share
    from serving.snapshot import published
    from serving.store import load_round

    ref = published(EwsHome(root=a.home.resolve()), a.round_id)
    assert ref is not None, f"round {a.round_id} is not published in {a.home}"
    rnd = load_round(ref)
    keys, schools = rnd.rows["student_key"].tolist(), rnd.rows["school_code"].tolist()
    provinces = tuple(sorted({str(t)[:2] for t in rnd.rows["tambon_code"].dropna()}))
    out: dict[str, Any] = {"round": a.round_id, "pupils": len(keys), "k_anonymity": K_ANONYMITY, "roles": {}}
    for role in ("school", "area", "analyst", "auditor", "admin"):
        if role == "school":
            seen = [_seen(views.explanation(rnd, Principal("b", "school", s, ()), k)) for k, s in zip(keys, schools, strict=True)]
        else:
            who = Principal("b", role, None, provinces if role == "area" else ())
            seen = [_seen(views.explanation(rnd, who, k)) for k in keys]
        share = unique_share(seen, QUASI)
        unique = round(share * len(seen))
        out["roles"][role] = {"unique": unique, "share": round(share, 4), "upper95": round(_upper(unique, len(seen)), 4)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
