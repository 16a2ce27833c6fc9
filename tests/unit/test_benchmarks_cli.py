"""The benchmarks' command lines and the latency statistics, without running any benchmark.

`make bench` once called three benchmarks without their required arguments; these tests keep every
entry point parseable with its defaults, the runner's plan complete, and the percentile arithmetic
that the serving figures rest on exact on known data.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.latency import Target, latency_stats, measure, percentile

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["bench_simulate", "bench_pipeline", "bench_engines", "bench_ingest", "bench_train", "bench_score", "bench_round",
           "bench_reasons", "bench_explain", "bench_serve", "bench_action_training"]


@pytest.mark.parametrize("name", ["run", "bench_load", "bench_list_bytes", "link_quality", "additivity", "bench_past",
                                  "bench_population", "logistic_margin", "booster_variants"])
def test_entry_points_answer_help_with_exit_code_0_as_commands(name: str) -> None:
    # bench_load belongs to the load test; bench_list_bytes, link_quality, additivity, bench_past, bench_population
    # and logistic_margin read a given home
    # (no --plan): their --help is checked here, as a command
    out = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


@pytest.mark.parametrize("name", [*MODULES, "run"])
def test_every_benchmark_answers_help_with_exit_code_0(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("name", MODULES)
def test_every_benchmark_parses_its_defaults_and_plans_without_measuring(
        name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.parser().parse_args([]) is not None  # no required argument: defaults suffice
    module.main(["--plan"])
    plan = json.loads(capsys.readouterr().out)
    assert plan["plan"] is True and plan["benchmark"] == name.removeprefix("bench_")


def test_the_runner_plans_every_benchmark_with_the_home_passed_on(capsys: pytest.CaptureFixture[str]) -> None:
    run.main(["--plan", "--size", "3000", "--quick"])
    lines = capsys.readouterr().out.splitlines()
    names = [line.split(":")[0] for line in lines]
    assert names == ["simulate", "pipeline_3000", "engines_3000", "home", "labels", "ingest", "train", "score", "round",
                     "past", "population", "reasons", "explain", "serve", "load", "actionaware"]
    home = "bench-out/work/pipeline_3000/home"
    # the label errors are measured on the home's world, against the truth its simulation wrote
    assert "--truth bench-out/work/pipeline_3000/sim/truth" in next(x for x in lines if x.startswith("labels"))
    for line in lines:
        if line.startswith(("engines", "labels", "train", "score", "round", "reasons", "explain", "serve", "load")):
            assert f"--home {home}" in line
    assert "--seconds 3.0" in next(x for x in lines if x.startswith("serve"))
    # every step whose command waits for the home's round is one the runner gives the round to
    waiting = [line.split(":")[0] for line in lines if "ROUND" in line.split(":", 1)[1]]
    assert waiting and set(waiting) <= set(run.NEEDS_ROUND), waiting
    # the past step reads the round's tiled home, which bench_round leaves in its work folder
    assert "--home bench-out/work/round_20000/home" in next(x for x in lines if x.startswith("past"))
    assert "--home bench-out/work/round_20000/home" in next(x for x in lines if x.startswith("population"))


def test_the_runner_takes_sizes_from_the_environment_and_builds_the_home_at_the_smallest() -> None:
    a = run.resolve([], environ={"EWS_BENCH_SIZES": "1000000 100000"})
    assert a.sizes == [100_000, 1_000_000] and a.home_size == 100_000
    assert (a.ingest_rows, a.train_rows, a.score_rows) == (1_000_000, 2_000_000, 1_000_000)
    quick = run.resolve(["--quick", "--size", "3000", "--serve-seconds", "7"], environ={})
    assert quick.sizes == [3000] and quick.serve_seconds == 7.0 and quick.ingest_rows == run.QUICK["ingest_rows"]


def test_percentiles_are_nearest_rank_on_known_data() -> None:
    values = [float(x) for x in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 51) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_latency_stats_report_milliseconds_of_successes_and_count_errors_apart() -> None:
    # 1..1000 ms in a shuffled order, plus 5 errors, over 10 seconds
    seconds = [((i * 7919) % 1000 + 1) / 1000.0 for i in range(1000)]
    s = latency_stats(seconds, errors=5, seconds=10.0)
    assert (s.requests, s.errors) == (1005, 5)
    assert (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms) == (500.0, 900.0, 990.0, 1000.0)
    assert s.mean_ms == 500.5
    assert s.rps == 100.5
    assert latency_stats(seconds, errors=5, seconds=10.0, completed_in_window=1000).rps == 100.0  # the tail left out
    empty = latency_stats([], errors=3, seconds=1.0)
    assert empty.p99_ms is None and empty.errors == 3


@contextmanager
def _stub_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A stub HTTP server in this process (not the service), its base URL while the block runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_measure_times_every_request_per_route_and_counts_failures_apart() -> None:
    # A stub server in this process (not the service): one route answers 200, one 500.
    class Stub(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the service's clients use it

        def do_GET(self) -> None:
            ok = self.path == "/ok" and self.headers.get("Authorization") == "Bearer t"
            self.send_response(200 if ok else 429 if self.path == "/limited" else 500)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    with _stub_server(Stub) as url:
        result = measure([Target("ok", url + "/ok", 3.0), ("bad", url + "/bad", 1.0)], clients=3, seconds=0.5, token="t")
        # tokens dealt one per client: client 0 holds the good one, client 1 a wrong one
        dealt = measure([Target("ok", url + "/ok", token=("t", "u")), ("limited", url + "/limited", 1.0)],
                        clients=2, seconds=0.5).routes
    ok, bad = result.routes["ok"], result.routes["bad"]
    assert ok.requests > 0 and ok.errors == 0 and ok.p50_ms is not None and ok.p50_ms <= ok.p99_ms <= ok.max_ms
    assert bad.requests == bad.errors > 0 and bad.p99_ms is None
    assert result.overall.requests == ok.requests + bad.requests
    assert result.clients == 3 and result.error_examples[0] == "bad: HTTP 500"
    assert dealt["ok"].requests > dealt["ok"].errors > 0 and dealt["ok"].rate_limited == 0
    assert dealt["limited"].errors == dealt["limited"].rate_limited > 0


_AB_REPORT = """Concurrency Level:      10
Time taken for tests:   15.000 seconds
Complete requests:      5522
Failed requests:        3
Non-2xx responses:      4
Keep-Alive requests:    0
Requests per second:    368.13 [#/sec] (mean)
Time per request:       27.164 [ms] (mean)
Time per request:       2.716 [ms] (mean, across all concurrent requests)
"""


def test_an_ab_report_gives_its_counts_and_the_percentiles_of_its_table() -> None:
    from benchmarks.latency import parse_ab

    table = "Percentage served,Time in ms\n" + "\n".join(f"{q},{q * 0.5 + 1:.3f}" for q in range(101))
    r = parse_ab(_AB_REPORT, table)
    assert (r.requests, r.errors, r.keep_alive_requests, r.rps) == (5522, 7, 0, 368.1)  # failed + non-2xx
    assert (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.mean_ms) == (26.0, 46.0, 50.5, 51.0, 27.164)
    empty = parse_ab("Complete requests:      0\nFailed requests:        0\n", "")
    assert empty.requests == 0 and empty.p99_ms is None and empty.mean_ms is None


def test_ab_sends_the_token_and_gzip_and_times_every_request() -> None:
    import shutil

    from benchmarks.latency import measure_ab

    if shutil.which("ab") is None:
        pytest.skip("ab (Debian apache2-utils) is not installed: `make test` and `make bench` install it")
    seen: list[tuple[str | None, str | None]] = []

    class Stub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.headers.get("Authorization"), self.headers.get("Accept-Encoding")))
            self.send_response(200 if self.path == "/ok" else 500)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    with _stub_server(Stub) as url:
        ok = measure_ab(url + "/ok", clients=2, seconds=1, token="t")
        bad = measure_ab(url + "/bad", clients=1, seconds=1, token="t", gzip=False)
    assert ok.requests > 0 and ok.errors == 0 and ok.p50_ms is not None
    assert ok.p50_ms <= ok.p90_ms <= ok.p99_ms <= ok.max_ms  # type: ignore[operator]
    assert bad.requests == bad.errors > 0
    assert len(seen) >= ok.requests + bad.requests
    assert seen[0] == ("Bearer t", "gzip") and seen[-1] == ("Bearer t", None)


@pytest.mark.parametrize("setting", ['{"lambda_l3": 30}', '[30]', '{"lambda_l2": -1}'])
def test_the_training_benchmark_refuses_a_model_setting_before_growing_any_rows(
        setting: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_train

    with pytest.raises(SystemExit) as stop:
        bench_train.main(["--home", str(tmp_path), "--model", setting, "--out-dir", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert "--model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing measured, nothing written
