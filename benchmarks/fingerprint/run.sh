#!/usr/bin/env bash
# Usage: benchmarks/fingerprint/run.sh REPO OUTDIR
# Runs a fixed small world (1500 x 3, seed 11, a fixed pseudonym key) through the CLI with REPO's
# .venv, then writes OUTDIR/fingerprint.json: content hashes of every feature table, the training
# set, and every scored round's keys, scores, groups and reasons, with the sums of its SHAP columns.
# Two checkouts behave the same when `python benchmarks/fingerprint/compare.py A/fingerprint.json
# B/fingerprint.json` prints ALL SCORES IDENTICAL (this is how a refactor shows it changed nothing).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO=$1; OUT=$2
rm -rf "$OUT"; mkdir -p "$OUT"
EWS="$REPO/.venv/bin/ews"
export EWS_HOME="$OUT/home" MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false PYTHONDONTWRITEBYTECODE=1
# A fixed pseudonym key: with a random key per home, student_key (and so row order and the last
# bit of float sums) differs between any two runs, and hashes cannot be compared.
printf "0123456789abcdef0123456789abcdef" > "$OUT/fixed.key"; chmod 600 "$OUT/fixed.key"
export EWS_PSEUDONYM_KEY_FILE="$OUT/fixed.key"
cd "$OUT"
$EWS simulate --students 1500 --years 3 --seed 11 --out "$OUT/sim" > log.txt 2>&1
$EWS ingest "$OUT/sim/deliveries" >> log.txt 2>&1
$EWS link >> log.txt 2>&1
$EWS trainset >> log.txt 2>&1
$EWS train --json > train.json 2>>log.txt
# The first registered version is the champion without a gate; nothing to promote.
for r in 2564-T1-early 2564-T1-mid 2564-T2-early 2564-T2-mid 2565-T1-early 2565-T1-mid 2565-T2-early 2565-T2-mid 2566-T1-early 2566-T1-mid; do
  $EWS features --round $r >> log.txt 2>&1 || echo "features $r failed" >> log.txt
  $EWS score --round $r >> log.txt 2>&1 || echo "score $r failed" >> log.txt
done
"$REPO/.venv/bin/python" "$HERE/summarise.py" "$OUT" > "$OUT/fingerprint.json"
echo "fingerprint written: $OUT/fingerprint.json"
