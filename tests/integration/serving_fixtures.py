"""A small real home for serving tests: simulate -> ingest -> link -> trainset -> train -> score.

Built once per test session with the project's own commands (small N, fixed seed), then shared by
the serving test modules, which import these fixtures. An imported fixture is a separate fixture in
each module, so the home and the server are memoised here: one build and one server per session. `bentoml serve` runs as a subprocess on a
free localhost port, with bounded waits, and is killed in teardown.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
STUDENTS = int(os.environ.get("EWS_TEST_STUDENTS", "1000"))


@dataclass(frozen=True)
class ServingHome:
    root: Path
    round_id: str
    school: str  # the school with most students in the round
    other_school: str
    area: str  # amphoe of `school`
    other_area: str | None
    tokens: dict[str, str]
    token_ids: dict[str, str]


def _ews(home: Path, *args: str, timeout: float = 600) -> str:
    env = dict(os.environ, EWS_HOME=str(home), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    out = subprocess.run([sys.executable, "-m", "ews", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"ews {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return out.stdout


_CACHE: dict[str, object] = {}


@pytest.fixture(scope="session")
def serving_home(tmp_path_factory: pytest.TempPathFactory) -> ServingHome:
    if "home" not in _CACHE:
        _CACHE["home"] = _build_home(tmp_path_factory)
    return _CACHE["home"]  # type: ignore[return-value]


def _build_home(tmp_path_factory: pytest.TempPathFactory) -> ServingHome:
    base = tmp_path_factory.mktemp("serving")
    home = base / "home"
    _ews(home, "simulate", "--students", str(STUDENTS), "--years", "3", "--seed", "11", "--out", str(base / "sim"))
    _ews(home, "ingest", str(base / "sim" / "deliveries"))
    _ews(home, "link")
    _ews(home, "trainset")
    _ews(home, "train")
    first_year = json.loads((base / "sim" / "summary.json").read_text())["first_year"]
    round_id = f"{first_year + 2}-T2-early"
    _ews(home, "score", "--round", round_id)

    import pyarrow.parquet as pq

    from features.home import EwsHome
    from serving.snapshot import published

    ref = published(EwsHome(root=home), round_id)
    assert ref is not None
    df = pq.read_table(ref.folder / "students.parquet", columns=["school_code", "amphoe_code"]).to_pandas()
    counts = df["school_code"].value_counts()
    school, other = str(counts.index[0]), str(counts.index[1])
    area = str(df.loc[df["school_code"] == school, "amphoe_code"].iloc[0])
    others = sorted(set(df["amphoe_code"].dropna()) - {area})
    tokens, ids = {}, {}
    for name, args in {
        "school": ["--role", "school", "--school", school], "other_school": ["--role", "school", "--school", other],
        "area": ["--role", "area", "--area", area], "analyst": ["--role", "analyst"],
        "auditor": ["--role", "auditor"], "admin": ["--role", "admin"],
    }.items():
        info = json.loads(_ews(home, "tokens", "create", *args, "--json"))
        tokens[name], ids[name] = info["token"], info["token_id"]
    return ServingHome(root=home, round_id=round_id, school=school, other_school=other, area=area,
                       other_area=others[0] if others else None, tokens=tokens, token_ids=ids)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def service_url(serving_home: ServingHome) -> Iterator[str]:
    if "url" in _CACHE:  # already started by another module's copy of this fixture
        yield _CACHE["url"]  # type: ignore[misc]
        return
    port = free_port()
    env = dict(os.environ, EWS_HOME=str(serving_home.root))
    log = open(serving_home.root / "serve.log", "w")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen([sys.executable, "-m", "ews", "serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("ews serve exited:\n" + (serving_home.root / "serve.log").read_text()[-3000:])
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200 and \
                        httpx.get(url + "/ews/api/rounds", timeout=5,
                                  headers={"Authorization": "Bearer " + serving_home.tokens["auditor"]}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the service did not become ready within 120 s")
            time.sleep(0.5)
        _CACHE["url"] = url
        yield url
    finally:
        _CACHE.pop("url", None)
        # The whole process group: `ews serve` became bentoml, which has worker children.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
