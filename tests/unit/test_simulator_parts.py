"""Unit tests of the simulator's parts: config, IDs, names, faults, schedule."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from features.contract import SOURCES
from features.ids import id_kind, is_valid_citizen_id
from simulator.config import FaultConfig, SimulationConfig, WorldConfig
from simulator.faults import FAULT_BITS, NameBook, _typo, decode_faults, inject
from simulator.names import given_names, spelling_variants, surnames
from simulator.schedule import Schedule
from simulator.world import citizen_ids, gcodes


def test_the_config_rejects_unknown_fields_and_carries_a_schema_version() -> None:
    with pytest.raises(ValidationError):
        SimulationConfig(world={"students": 1000, "pupils": 3})
    cfg = SimulationConfig()
    assert cfg.schema_version == 1
    assert SimulationConfig.model_validate_json(cfg.model_dump_json()) == cfg
    for model in (WorldConfig, FaultConfig):
        assert all(f.description for f in model.model_fields.values())


def test_generated_citizen_ids_are_distinct_and_carry_valid_check_digits() -> None:
    ids = citizen_ids(np.random.default_rng(1), 20000, 1, "58")
    assert len(set(ids.tolist())) == 20000
    assert all(is_valid_citizen_id(x.decode()) for x in ids[:3000])
    non_thai = citizen_ids(np.random.default_rng(2), 500, np.array([6] * 500, dtype=np.uint8), "63")
    assert {id_kind(x.decode()) for x in non_thai} == {"non_thai"}
    assert {id_kind(x.decode()) for x in gcodes(np.random.default_rng(3), 500, "63")} == {"gcode"}


def test_a_mistyped_id_differs_from_the_original_by_one_digit_or_one_swap() -> None:
    ids = citizen_ids(np.random.default_rng(4), 2000, 1, "50")
    bad = _typo(ids, np.random.default_rng(5))
    for a, b in zip(ids.tolist(), bad.tolist()):
        assert a != b and len(b) == 13
        diff = [i for i in range(13) if a[i] != b[i]]
        assert len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]])
    assert np.mean([is_valid_citizen_id(x.decode()) for x in bad.tolist()]) < 0.2


def test_thai_name_lists_are_large_enough_and_variants_differ_from_the_canonical_spelling() -> None:
    assert len(given_names("M")) >= 300 and len(given_names("F")) >= 300
    assert len(surnames()) >= 3000
    assert spelling_variants("ศักดิ์ชัย")[0] in ("ศักดิชัย", "ศกดิ์ชัย", "ศักดิ์ชย")
    for name in given_names("F")[:100] + surnames()[:100]:
        assert all(v != name for v in spelling_variants(name))


def test_injected_faults_are_flagged_in_the_mask_and_switch_off_cleanly() -> None:
    names = NameBook()
    n = 5000
    rng = np.random.default_rng(0)
    cols = {
        "record_date": np.full(n, np.datetime64("2021-03-31")), "student_id": citizen_ids(rng, n, 1, "58"),
        "first_name": np.resize(names.male, n), "last_name": np.resize(names.surname, n),
        "sex": np.full(n, "M"), "birth_date": np.full(n, np.datetime64("2008-01-02")),
        "programme_code": np.full(n, "TPQI-AGR-01"), "status": np.full(n, "in_training"),
    }
    f = FaultConfig(id_typo=0.05, id_missing=0.05, name_variant=0.1, be_birth_year=0.05, duplicate_row=0.02)
    table, pid, mask = inject("ewe_training", cols, np.zeros(n, np.int32), np.arange(n), rng, f, names)
    assert table.column_names == list(SOURCES["ewe_training"].column_names)
    assert table.num_rows == len(pid) == len(mask) > n
    bd = table.column("birth_date").to_pylist()
    be = (mask & FAULT_BITS["be_birth_year"]) > 0
    assert all(str(x).startswith("2551") for x, b in zip(bd, be) if b)
    assert all(str(x).startswith("2008") for x, b in zip(bd, be) if not b)
    assert "id_typo" in decode_faults(int(mask[(mask & 1) > 0][0]))
    clean, _, m0 = inject("ewe_training", cols, np.zeros(n, np.int32), np.arange(n), rng,
                          FaultConfig(**{k: 0.0 for k in FaultConfig.model_fields}), names)
    assert clean.num_rows == n and not m0.any()


def test_the_schedule_puts_the_registry_first_and_gives_unique_delivery_ids() -> None:
    s = Schedule(SimulationConfig(world=WorldConfig(students=1000, years=2)))
    ids = [d.delivery_id for d in s.deliveries]
    assert len(ids) == len(set(ids))
    assert s.deliveries[0].key == ("registry",)
    assert s.deliveries[0].delivered_on < s.start_date
    assert all(d.delivered_on >= d.nominal_on for d in s.deliveries)
    off = Schedule(SimulationConfig(world=WorldConfig(students=1000, years=2), faults=FaultConfig(malformed_delivery=0)))
    assert not any(d.malformed for d in off.deliveries)
