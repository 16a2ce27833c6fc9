"""Two `bentoml serve` workers share one memory-mapped copy of each published round (issue 14 part 2),
and a cached list answers as the list built afresh does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from features.home import EwsHome
from serving import views
from serving.access import Principal
from serving.snapshot import published
from serving.store import MAPPED_DIR, ROWS_FILE, load_round
from tests.support.worlds import ROOT, ServingHome, free_port

pytestmark = pytest.mark.integration


def _workers(home: Path) -> list[int]:
    """The bentoml worker processes serving `home`."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"_bentoml_impl.worker.service" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            if f"EWS_HOME={home}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                out.append(int(pid))
        except OSError:
            continue
    return out


@pytest.fixture(scope="module")
def two_workers(serving_home: ServingHome) -> Iterator[str]:
    port = free_port()
    env = dict(os.environ, EWS_HOME=str(serving_home.root))
    log = open(serving_home.root / "serve-2-workers.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "ews", "serve", "--port", str(port), "--workers", "2"], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while len(_workers(serving_home.root)) < 2 or not _answers(url, serving_home):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ews serve --workers 2 did not start:\n"
                                   + (serving_home.root / "serve-2-workers.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _answers(url: str, h: ServingHome) -> bool:
    try:
        return httpx.get(url + "/ews/api/rounds", timeout=5,
                         headers={"Authorization": "Bearer " + h.tokens["auditor"]}).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_service_workers_map_the_same_arrow_file_of_a_round(two_workers: str, serving_home: ServingHome) -> None:
    mapped = published(EwsHome(root=serving_home.root), serving_home.round_id).folder / MAPPED_DIR / ROWS_FILE
    # Every worker loads the published rounds when it starts; wait until both have.
    deadline = time.monotonic() + 120
    while True:
        pids = _workers(serving_home.root)
        holding = [p for p in pids if str(mapped) in Path(f"/proc/{p}/maps").read_text()]
        if len(holding) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert mapped.is_file() and len(pids) == 2 and holding == pids
    # One file, mapped by both: the same device and inode in each worker's maps.
    inodes = {line.split()[4] for p in pids for line in Path(f"/proc/{p}/maps").read_text().splitlines()
              if line.endswith(str(mapped))}
    assert inodes == {str(mapped.stat().st_ino)}


def test_a_school_list_served_twice_by_either_worker_is_the_list_built_afresh(
        two_workers: str, serving_home: ServingHome) -> None:
    h = serving_home
    url = f"{two_workers}/ews/api/rounds/{h.round_id}/schools/{h.school}/students"
    auth = {"Authorization": "Bearer " + h.tokens["auditor"]}
    bodies = {httpx.get(url, headers=auth, timeout=30).content for _ in range(6)}  # misses, then hits, on both
    rnd = load_round(published(EwsHome(root=h.root), h.round_id))  # type: ignore[arg-type]
    fresh = views.render_json(views.school_list(rnd, Principal("x", "auditor", None, ()), h.school, {}))
    assert bodies == {fresh}
