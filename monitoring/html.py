"""The HTML page of a monitoring report: verdict first, then plots and tables (one self-contained file).

Plots are drawn with matplotlib's Agg backend into PNGs embedded as data URIs, so the file opens
anywhere and the service can send it as it is.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import jinja2

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Monitoring {{ r.round_id }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:left}
.drift{background:#fbd5d5}.watch{background:#fff2c4}.ok{}
.verdict{padding:1em;border-radius:6px;margin-bottom:1em}.alert{background:#fbd5d5}.calm{background:#d9f2dd}
img{max-width:100%}
</style></head><body>
<h1>Monitoring report — round {{ r.round_id }}</h1>
<p>As of {{ r.as_of }} · snapshot {{ r.snapshot_hash }} · model v{{ r.model_version }} · training set {{ r.trainset }}
 · reference rounds {{ r.reference_rounds|join(', ') }} ({{ r.reference_rows }} rows) · round rows {{ r.current_rows }}
 ({{ r.scored_rows }} scored) · generated {{ r.generated_at }}</p>
<div class="verdict {{ 'alert' if r.verdict.alert else 'calm' }}">
<h2>{{ r.verdict.summary }}</h2>
<ul>{% for x in r.verdict.reasons %}<li>{{ x }}</li>{% endfor %}</ul></div>

<h2>Drift against the training reference</h2>
<p>PSI: &lt; 0.1 stable · 0.1–0.25 watch · ≥ 0.25 drift. Missing share: watch at +{{ r.config.drift.missing_thresholds.watch }},
drift at +{{ r.config.drift.missing_thresholds.drift }}.</p>
{% if plots.features %}<img src="{{ plots.features }}" alt="feature drift">{% endif %}
{% if plots.scores %}<img src="{{ plots.scores }}" alt="score distribution">{% endif %}
{% if plots.attribution %}<img src="{{ plots.attribution }}" alt="attribution by feature group">{% endif %}
<table><tr><th>what</th><th>column</th><th>group</th><th>statistic</th><th>value</th><th>watch</th><th>drift</th><th>details</th></tr>
{% for d in drift %}<tr class="{{ d.level }}"><td>{{ d.what }}</td><td>{{ d.column }}</td><td>{{ d.feature_group or '' }}</td>
<td>{{ d.statistic }}</td><td>{{ '%.4f'|format(d.score) if d.score is not none else '–' }}</td><td>{{ d.watch }}</td><td>{{ d.drift }}</td>
<td>{{ d.details }}</td></tr>{% endfor %}</table>

<h2>Outcomes (labels matured)</h2>
{% if r.outcomes.matured %}
<p>{{ r.outcomes.rows }} students with a known outcome, {{ r.outcomes.positives }} dropouts. {{ r.outcomes.note }}</p>
{% if plots.reliability %}<img src="{{ plots.reliability }}" alt="calibration">{% endif %}
<table><tr><th>check</th><th>realised</th><th>model card</th><th>watch</th><th>drift</th><th>level</th><th>note</th></tr>
{% for c in r.outcomes.checks %}<tr class="{{ c.level }}"><td>{{ c.check }}</td><td>{{ c.value }}</td><td>{{ c.card }}</td>
<td>{{ c.watch }}</td><td>{{ c.drift }}</td><td>{{ c.level }}</td><td>{{ c.note }}</td></tr>{% endfor %}</table>
<table><tr><th>metric</th><th>realised</th><th>model card</th></tr>
{% for k, v in r.outcomes.metrics.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td><td>{{ r.outcomes.card.get(k) }}</td></tr>{% endfor %}</table>
<h3>Fairness on realised outcomes (flag = at-risk or problem)</h3>
<p>A breach is one-sided and needs evidence, as at the release gate: a miss-rate (or false-alarm) ratio whose whole interval lies above the band, or a group O/E interval wholly outside its band. Ratios outside the band without that evidence are reported only.</p>
<table><tr><th>attribute</th><th>group</th><th>count</th><th>dropouts</th><th>selection</th><th>precision</th><th>FNR</th><th>FNR ratio (interval)</th><th>O/E (interval)</th><th>outside band</th><th>breach</th></tr>
{% for f in r.outcomes.fairness %}<tr class="{{ 'drift' if f.breaches and f.judged is not false else '' }}"><td>{{ f.attribute }}</td><td>{{ f.group }}</td>
<td>{{ f.count }}</td><td>{{ f.positives }}</td><td>{{ f.selection_rate }}</td><td>{{ f.precision }}</td><td>{{ f.fnr }}</td>
<td>{{ f.fnr_ratio }} ({{ f.fnr_ratio_low }}-{{ f.fnr_ratio_high }})</td><td>{{ f.oe }} ({{ f.oe_low }}-{{ f.oe_high }})</td>
<td>{{ f.outside_band|join(', ') }}{{ ' (too small to judge)' if f.too_small else '' }}</td>
<td>{{ f.breaches|join(', ') }}{{ ' (reported, not judged: not a release-gate attribute)' if f.judged is false and f.breaches else '' }}</td></tr>{% endfor %}</table>
{% if r.outcomes.effects %}{% set e = r.outcomes.effects %}
<h3>Effect of acting on the list ({{ e.design }})</h3>
<p>The model above is judged on the {{ e.judged_rows }} untreated pupils; {{ e.left_out_rows }} served or acted on are left out, because their outcome is the actions' doing. {{ e.note }}</p>
<table><tr><th>arm</th><th>pupils</th><th>dropout rate</th></tr>
<tr><td>served</td><td>{{ e.served }}</td><td>{{ e.dropout_rate_served }}</td></tr>
<tr><td>held out</td><td>{{ e.holdout }}</td><td>{{ e.dropout_rate_holdout }}</td></tr></table>
{% for name, x in (("served minus held out", e.effect_of_serving), ("per pupil acted on", e.effect_per_treated)) %}{% if x and x.estimate is not none %}
<p>{{ name }}: {{ '%+.2f'|format(x.estimate * 100) }} points ({{ '%.0f'|format(x.confidence * 100) }}% interval {{ '%+.2f'|format(x.low * 100) }} to {{ '%+.2f'|format(x.high * 100) }}, bootstrap by {{ x.resampled }})</p>{% endif %}{% endfor %}
{% endif %}
{% if r.uplift %}{% set u = r.uplift %}
<h3>Who is expected to benefit (uplift per cell; also uplift.json, GET /ews/api/rounds/{{ r.round_id }}/uplift)</h3>
<table><tr><th>cell</th><th>served</th><th>held out</th><th>uplift, points ({{ '%.0f'|format(u.confidence * 100) }}% interval)</th></tr>
{% for c in u.cells %}<tr><td>{% for k, v in c.cell.items() %}{{ k }}: {{ v }}{{ ' · ' if not loop.last }}{% endfor %}</td>
{% if c.suppressed %}<td colspan="3">suppressed: fewer than {{ u.config.min_cell_students }} pupils in an arm</td>
{% else %}<td>{{ c.served }}</td><td>{{ c.holdout }}</td><td>{{ '%+.2f'|format(c.uplift * 100) }} ({{ '%+.2f'|format(c.low * 100) }} to {{ '%+.2f'|format(c.high * 100) }})</td>{% endif %}</tr>{% endfor %}</table>
{% if u.capacity %}{% set k = u.capacity %}<p>Each school serving {{ '%.0f'|format(k.capacity_share * 100) }}% of its eligible list: by risk {{ '%.1f'|format(k.by_risk.averted) }} dropouts averted ({{ '%.1f'|format(k.by_risk.low) }} to {{ '%.1f'|format(k.by_risk.high) }}), by estimated benefit {{ '%.1f'|format(k.by_benefit.averted) }} ({{ '%.1f'|format(k.by_benefit.low) }} to {{ '%.1f'|format(k.by_benefit.high) }}); difference {{ '%+.1f'|format(k.benefit_minus_risk) }} ({{ '%+.1f'|format(k.low) }} to {{ '%+.1f'|format(k.high) }}), bootstrap by {{ u.resampled }}.</p>{% endif %}
<p>{{ u.note }}</p>
{% endif %}
{% else %}<p>{{ r.outcomes.note }}</p>{% endif %}

<h2>Data quality of the deliveries behind the round</h2>
<table><tr><th>check</th><th>source</th><th>scope</th><th>column</th><th>value</th><th>watch</th><th>drift</th><th>note</th></tr>
{% for q in quality %}<tr class="{{ q.level }}"><td>{{ q.check }}</td><td>{{ q.source }}</td><td>{{ q.scope }}</td>
<td>{{ q.column or '' }}</td><td>{{ '%.4g'|format(q.value) }}</td><td>{{ q.watch }}</td><td>{{ q.drift }}</td><td>{{ q.note }}</td></tr>{% endfor %}
</table>
<p>Quality rows shown: every row at watch or drift, and the rest up to {{ quality_limit }}.</p>
</body></html>
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def plots(report: Any) -> dict[str, str]:
    """PNG data URIs: feature PSI, score shift, attribution shares, calibration by risk group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    feats = sorted((d for d in report.drift if d.what == "feature" and d.score is not None), key=lambda d: -d.score)[:15]
    if feats:
        fig, ax = plt.subplots(figsize=(8, 4))
        colors = ["#d9534f" if d.level == "drift" else "#f0ad4e" if d.level == "watch" else "#5cb85c" for d in feats]
        ax.barh([d.column for d in feats][::-1], [d.score for d in feats][::-1], color=colors[::-1])
        ax.axvline(feats[0].watch, ls="--", c="#f0ad4e")
        ax.axvline(feats[0].drift, ls="--", c="#d9534f")
        ax.set_xlabel("PSI (reference → round)")
        ax.set_title("Features with the largest drift")
        out["features"] = _png(fig)
    groups = [d for d in report.drift if d.what == "risk_groups"]
    score = [d for d in report.drift if d.what == "score"]
    if groups and score:
        shares = groups[0].details.get("shares", {})
        fig, ax = plt.subplots(figsize=(6, 3))
        names = list(shares)
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], [shares[n]["reference"] for n in names], 0.4, label="reference")
        ax.bar([i + 0.2 for i in x], [shares[n]["current"] for n in names], 0.4, label="round")
        ax.set_xticks(list(x), names)
        ax.set_ylabel("share of scored students")
        ax.set_title(f"Risk groups (score PSI {score[0].score:.3f}; mean {score[0].details.get('reference_mean')} → "
                     f"{score[0].details.get('current_mean')})")
        ax.legend()
        out["scores"] = _png(fig)
    attr = [d for d in report.drift if d.what == "attribution"]
    if attr:
        fig, ax = plt.subplots(figsize=(7, 3))
        x = range(len(attr))
        ax.bar([i - 0.2 for i in x], [d.details["reference_share"] for d in attr], 0.4, label="reference")
        ax.bar([i + 0.2 for i in x], [d.details["current_share"] for d in attr], 0.4, label="round")
        ax.set_xticks(list(x), [d.column for d in attr], rotation=30)
        ax.set_ylabel("share of mean |SHAP|")
        ax.set_title("Attribution by feature group")
        ax.legend()
        out["attribution"] = _png(fig)
    m = report.outcomes.metrics
    if report.outcomes.matured and m.get("mean_score") is not None:
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.bar(["expected (mean score)", "observed (dropout rate)"], [m["mean_score"], m["label_rate"]], color=["#5bc0de", "#d9534f"])
        ax.set_title(f"Calibration in the large (O/E {m.get('observed_to_expected')})")
        out["reliability"] = _png(fig)
    return out


QUALITY_LIMIT = 60


def render_html(report: Any) -> str:
    env = jinja2.Environment(autoescape=True)
    drift = sorted(report.drift, key=lambda d: ({"drift": 0, "watch": 1, "ok": 2}[d.level], -(d.score or 0)))
    flagged = [q for q in report.quality if q.level != "ok"]
    rest = [q for q in report.quality if q.level == "ok"][: max(0, QUALITY_LIMIT - len(flagged))]
    return env.from_string(TEMPLATE).render(r=report, drift=drift, quality=flagged + rest, plots=plots(report),
                                            quality_limit=QUALITY_LIMIT)
