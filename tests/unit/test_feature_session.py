"""The feature session refuses a warehouse it cannot read correctly, and says what to run."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from features.home import EwsHome
from features.pointintime.pipeline import connect_warehouse


def _warehouse(root: Path, view_sql: str | None) -> EwsHome:
    home = EwsHome(root=root)
    root.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(home.warehouse))
    con.execute("CREATE TABLE src_dmc_census (id_token VARCHAR, census_date DATE)")
    if view_sql:
        con.execute(view_sql)
    con.close()
    return home


def test_a_warehouse_never_linked_asks_for_ews_link(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="run `ews link` first"):
        connect_warehouse(_warehouse(tmp_path / "h", None))


def test_a_warehouse_linked_by_an_older_version_asks_to_link_again(tmp_path: Path) -> None:
    old = "CREATE VIEW linked_dmc_census AS SELECT 'S0' AS student_key, * FROM src_dmc_census"
    with pytest.raises(RuntimeError, match="older version: run `ews link` again"):
        connect_warehouse(_warehouse(tmp_path / "h", old))


def test_a_warehouse_linked_by_this_version_opens(tmp_path: Path) -> None:
    new = "CREATE VIEW linked_dmc_census AS SELECT 'S0' AS student_key, 0::BIGINT AS sid, * FROM src_dmc_census"
    con = connect_warehouse(_warehouse(tmp_path / "h", new))
    assert con.execute("SELECT count(*) FROM wh.linked_dmc_census").fetchone() == (0,)
    con.close()
