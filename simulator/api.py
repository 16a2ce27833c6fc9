"""`simulate()`: run every province in turn, then write the truth summaries and summary.json."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from simulator.calibration import calibration_report, ceiling_report
from simulator.config import SimulationConfig
from simulator.faults import FAULT_BITS, NameBook
from simulator.interventions import write_actions_delivery
from simulator.population import STATUS
from simulator.process import CLASSES, Calib
from simulator.province import ProvinceSim
from simulator.schedule import Schedule
from simulator.truth import TruthWriter
from simulator.world import provinces_for
from simulator.writers import DeliveryWriter

Progress = Callable[[str, int, int], None]  # (phase description, completed, total)


class SimulationSummary(BaseModel):
    """What a run produced: counts, the ceiling and the calibration (also OUT/summary.json)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    out: str = Field(description="Output folder.")
    seed: int
    students: int = Field(description="OBEC students at the first census.")
    years: int
    first_year: int
    provinces: list[str]
    persons: int = Field(description="Children who appear in the run (first census + later entrants).")
    deliveries: int
    malformed_deliveries: list[str]
    late_deliveries: int
    rows_by_source: dict[str, int]
    gcode_to_13_digit: int = Field(description="G-code children who received a 13-digit ID during the run.")
    tzd_cases: int
    returned_to_school: int
    ceiling: dict
    calibration: dict
    seconds: float


def simulate(config: SimulationConfig, out: Path, progress: Progress | None = None) -> SimulationSummary:
    """Simulate the world in `config` into `out` (emptied first if it holds an earlier run)."""
    t0 = time.perf_counter()
    out = Path(out)
    for sub in ("deliveries", "truth", "actions"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)
    w = config.world
    provs = provinces_for(w.students, w.students_per_province, np.random.default_rng([w.seed, 0]),
                          config.process.province_effect_sd)
    schedule = Schedule(config)
    writer = DeliveryWriter(out, schedule)
    truth = TruthWriter(out)
    names = NameBook()
    calib = Calib()
    total = len(provs) * w.years
    done = 0
    persons = 0
    assignment: list[tuple[str, ...]] = []
    actions: list[tuple[str, ...]] = []
    for prov in provs:
        label = f"{prov.name_en} ({prov.students:,} pupils)"

        def tick(k: int, label: str = label) -> None:
            nonlocal done
            done += k
            if progress:
                progress(f"Simulating {label}", done, total)

        if progress:
            progress(f"Simulating {label}", done, total)
        sim = ProvinceSim(config, prov, schedule, writer, truth, names, calib)
        sim.run(tick)
        persons += int((sim.status != 0).sum())
        if sim.interventions is not None:
            assignment += sim.interventions.assignment
            actions += sim.interventions.actions
        del sim
    if progress:
        progress("Writing malformed files and delivery.json", total, total)
    listing = writer.finalize()
    if config.interventions is not None:
        write_actions_delivery(out, assignment, actions)
    truth.close()
    tdir = out / "truth"
    process = {
        "config": config.model_dump(mode="json", exclude={k for k in ("scenario", "interventions")
                                                             if getattr(config, k) is None} or None),
        "fault_bits": FAULT_BITS,
        "census_status_values": list(STATUS),
        "term_end_outcomes": list(CLASSES),
        "provinces": [p.__dict__ for p in provs],
    }
    (tdir / "process.json").write_text(json.dumps(process, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (tdir / "deliveries.json").write_text(json.dumps(listing, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    calibration = calibration_report(calib)
    (tdir / "calibration.json").write_text(json.dumps(calibration, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    ceiling = ceiling_report(calib)
    summary = SimulationSummary(
        out=str(out), seed=w.seed, students=w.students, years=w.years, first_year=w.first_year,
        provinces=[p.name_en for p in provs], persons=persons, deliveries=len(listing),
        malformed_deliveries=[d["delivery_id"] for d in listing if d["malformed"]],
        late_deliveries=sum(1 for d in listing if d["late_days"]),
        rows_by_source=dict(sorted(writer.rows_written.items())), gcode_to_13_digit=calib.gcode_changes,
        tzd_cases=calib.tzd_cases, returned_to_school=calib.returns, ceiling=ceiling, calibration=calibration,
        seconds=0.0,
    )
    # summary.json holds neither wall time nor the folder, so two runs with one seed are byte-identical
    (out / "summary.json").write_text(summary.model_dump_json(indent=1, exclude={"out", "seconds"}) + "\n",
                                      encoding="utf-8")
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary
