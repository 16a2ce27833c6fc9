"""What the service holds in memory: published rounds, indexed for the questions endpoints ask,
and the champion (`ChampionWatch`, which notices a promotion or rollback without a restart).

A `LoadedRound` is read once from its snapshot: the list columns as a DataFrame, contributions
and feature values as arrays, and indexes (school -> rows ranked by risk, student_key -> row), so a
school's list is a slice and an explanation is one row: no scan per request. Columns are taken by
their role in the snapshot's column schema, so a round keeps loading with the roles it was written
with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.calendar import ScoringRound
from serving.snapshot import SnapshotManifest, SnapshotRef

log = logging.getLogger(__name__)

LIST_COLUMNS: tuple[str, ...] = (
    "student_key", "school_code", "school_name", "grade", "room", "tambon_code", "tambon_name", "amphoe_code",
    "amphoe_name", "province_code", "province_name", "scored", "no_score_reason", "risk_score", "risk_group",
    "raw_margin", "base_value", "reasons_th", "reasons_en",
)
_GROUP_RANK = {"problem": 0, "at_risk": 1, "normal": 2}


@dataclass
class LoadedRound:
    ref: SnapshotRef
    manifest: SnapshotManifest
    rows: pd.DataFrame
    contrib: np.ndarray  # (n, features)
    group_contrib: np.ndarray  # (n, groups)
    values: pd.DataFrame  # the model inputs as stored (categories as text)
    by_school: dict[str, np.ndarray] = field(default_factory=dict)
    by_key: dict[str, int] = field(default_factory=dict)
    by_area: dict[str, np.ndarray] = field(default_factory=dict)  # province / amphoe / tambon code -> ranked rows
    # Area summaries, computed on first request: a round never changes once published, and a
    # province summary groups every student of the province (~1 s for a 100k-student province).
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    # One computation per area: concurrent first requests wait for it instead of all computing it
    # (50 clients asking for one province at once kept both workers busy for 20 s).
    summary_lock: threading.Lock = field(default_factory=threading.Lock)
    # What non-school tokens may see of each row (serving.disclosure), planned on first request.
    _disclosure: Any = None

    def disclosure(self) -> Any:  # -> serving.disclosure.DisclosurePlan
        if self._disclosure is None:
            from serving.disclosure import plan

            with self.summary_lock:
                if self._disclosure is None:
                    self._disclosure = plan(self.rows, self.values)
        return self._disclosure

    @property
    def round(self) -> ScoringRound:
        return self.ref.round

    @property
    def round_id(self) -> str:
        return self.ref.round_id

    @property
    def model_version(self) -> str:
        """The registered model version that scored every row of the round."""
        return self.manifest.model_version


def load_round(ref: SnapshotRef) -> LoadedRound:
    manifest = ref.manifest
    schema = manifest.columns
    df = ref.students().to_pandas()
    rows = df[list(LIST_COLUMNS)].copy()
    rows["room"] = pd.to_numeric(rows["room"], errors="coerce").astype("Int64")
    contrib = df[schema.columns("contribution")].to_numpy(dtype=np.float64)
    gcontrib = df[schema.columns("group_contribution")].to_numpy(dtype=np.float64)
    values = df[schema.columns("model_input")]
    values.columns = list(schema.model_inputs)
    # Ranked once: scored students by score (highest first), then those without a score.
    order = np.lexsort((rows["student_key"].to_numpy(), -rows["risk_score"].fillna(-1.0).to_numpy()))
    ranked_school = rows["school_code"].to_numpy()[order]
    by_school: dict[str, list[int]] = {}
    for pos, s in zip(order, ranked_school, strict=True):
        by_school.setdefault(s, []).append(int(pos))
    # Areas by code prefix (2 province, 4 amphoe, 6 tambon digits), ranked the same way: an area's
    # list is a slice, not a string scan of every student per request (~0.5 s at 1M students).
    ranked_tambon = pd.Series(rows["tambon_code"].to_numpy()[order], dtype="string").fillna("")
    ranked_pos = pd.Series(order)
    by_area: dict[str, np.ndarray] = {}
    for width in (2, 4, 6):
        prefix = ranked_tambon.str.slice(0, width)
        for code, positions in ranked_pos.groupby(prefix.to_numpy(), sort=False):
            if len(code) == width:
                by_area[code] = positions.to_numpy(dtype=np.int64)
    return LoadedRound(
        ref=ref, manifest=manifest, rows=rows, contrib=contrib, group_contrib=gcontrib, values=values,
        by_school={k: np.asarray(v, dtype=np.int64) for k, v in by_school.items()},
        by_key={k: i for i, k in enumerate(rows["student_key"].to_numpy())},
        by_area=by_area,
    )


# A promotion made with `ews promote` in this home touches the release journal's done record: the
# service sees it on the next request (one stat). A promotion made elsewhere (a shared MLflow
# server) is noticed by asking the registry at most this often.
CHAMPION_POLL_SECONDS = 30.0


class ChampionWatch:
    """The champion a worker scores with, swapped when the registry names another one.

    `current()` is called per request: a stat of the release marker, and the registry's alias at
    most every `poll_seconds`; a new champion is loaded once (by the first request that notices it,
    the others keep the old one meanwhile) and kept, so a rollback swaps back without reloading."""

    def __init__(self, loaded: Any, version_now: Callable[[], Any], load: Callable[[Any], Any],
                 marker: Callable[[], float | None], poll_seconds: float = CHAMPION_POLL_SECONDS) -> None:
        self._loaded = loaded  # a training.registry.VersionedModel
        self._models: dict[Any, Any] = {loaded.lineage.version: loaded}
        self._version_now, self._load, self._marker = version_now, load, marker
        self._poll = poll_seconds
        self._seen_marker = marker()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def current(self) -> Any:
        marker = self._marker()
        if marker == self._seen_marker and time.monotonic() - self._checked < self._poll:
            return self._loaded
        if not self._lock.acquire(blocking=False):
            return self._loaded  # another request is already looking (or loading): answer with what we have
        try:
            self._seen_marker, self._checked = marker, time.monotonic()
            try:
                version = self._version_now()
            except Exception:  # noqa: BLE001 - registry unreachable: keep serving the champion we have
                log.warning("could not read the champion alias; keeping version %s", self._loaded.lineage.version)
                return self._loaded
            if version is not None and version != self._loaded.lineage.version:
                if version not in self._models:
                    self._models[version] = self._load(version)
                log.info("champion changed: version %s -> %s", self._loaded.lineage.version, version)
                self._loaded = self._models[version]
            return self._loaded
        finally:
            self._lock.release()

    def model_for(self, version: Any) -> Any:
        """A version loaded once and kept (replays of older rounds; champions past and present)."""
        if version not in self._models:
            self._models[version] = self._load(version)
        return self._models[version]
