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


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return False


def _workers(home: Path, server: int) -> list[int]:
    """The bentoml worker processes serving `home` under the `ews serve` process `server` (the
    ladder's own service may be serving the same home at the same time)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"_bentoml_impl.worker.service" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            if not _descends_from(int(pid), server):
                continue
            if f"EWS_HOME={home}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                out.append(int(pid))
        except (OSError, ProcessLookupError):
            continue
    return out


@pytest.fixture(scope="module")
def two_workers(serving_home: ServingHome) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = dict(os.environ, EWS_HOME=str(serving_home.root))
    log = open(serving_home.root / "serve-2-workers.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "ews", "serve", "--port", str(port), "--workers", "2"], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while len(_workers(serving_home.root, proc.pid)) < 2 or not _answers(url, serving_home):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ews serve --workers 2 did not start:\n"
                                   + (serving_home.root / "serve-2-workers.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url, proc.pid
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


def test_two_service_workers_map_the_same_arrow_file_of_a_round(two_workers: tuple[str, int],
                                                                serving_home: ServingHome) -> None:
    mapped = published(EwsHome(root=serving_home.root), serving_home.round_id).folder / MAPPED_DIR / ROWS_FILE
    # Every worker loads the published rounds when it starts; wait until both have.
    deadline = time.monotonic() + 120
    while True:
        pids = _workers(serving_home.root, two_workers[1])
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
        two_workers: tuple[str, int], serving_home: ServingHome) -> None:
    from serving.actions import ActionStore, annotate

    h = serving_home
    url = f"{two_workers[0]}/ews/api/rounds/{h.round_id}/schools/{h.school}/students"
    auth = {"Authorization": "Bearer " + h.tokens["auditor"]}
    bodies = {httpx.get(url, headers=auth, timeout=30).content for _ in range(6)}  # misses, then hits, on both
    rnd = load_round(published(EwsHome(root=h.root), h.round_id))  # type: ignore[arg-type]
    out = views.school_list(rnd, Principal("x", "auditor", None, ()), h.school, {})
    # The list carries each pupil's latest action (other tests may record some on this home).
    store = ActionStore(EwsHome(root=h.root))
    try:
        out["students"] = annotate(out["students"], store.latest_by_student(h.school))
    finally:
        store.close()
    assert bodies == {views.render_json(out)}
