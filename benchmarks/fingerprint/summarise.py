"""Content fingerprint of a fingerprint.sh run: independent of file layout and column naming."""
import hashlib, json, sys
from pathlib import Path
import pyarrow.parquet as pq
import pandas as pd, numpy as np

out = Path(sys.argv[1]); home = out / "home"
res = {"features": {}, "trainset": {}, "scores": {}}

def frame_hash(df: pd.DataFrame) -> str:
    df = df.sort_values(list(df.columns[:1])).reset_index(drop=True)
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).values.tobytes()).hexdigest()[:16]

for p in sorted((home / "features").glob("*.parquet")):
    df = pq.read_table(p).to_pandas()
    res["features"][p.stem] = {"rows": len(df), "hash": frame_hash(df[sorted(df.columns)])}
for p in sorted((home / "trainsets").glob("*/data.parquet")):
    df = pq.read_table(p).to_pandas()
    res["trainset"][p.parent.name] = {"rows": len(df), "hash": frame_hash(df[sorted(df.columns)]),
                                      "label_sum": int(df["label"].sum())}
for p in sorted((home / "rounds").rglob("*.parquet")):
    df = pq.read_table(p).to_pandas()
    cols = [c for c in df.columns if c in ("student_key", "risk_score", "risk_group", "raw_margin", "no_score_reason")]
    phi = sorted(c for c in df.columns if "phi" in c or c.startswith("contrib"))
    key = str(p.relative_to(home / "rounds"))
    d = df[cols + phi].sort_values("student_key").reset_index(drop=True)
    res["scores"][key] = {
        "rows": len(df), "columns": cols, "n_phi": len(phi),
        "hash_scores": frame_hash(d[cols]),
        "score_sum": float(np.nansum(d["risk_score"])) if "risk_score" in d else None,
        "phi_sum": float(np.nansum(d[phi].to_numpy(dtype=float))) if phi else None,
    }
print(json.dumps(res, indent=1, sort_keys=True))
