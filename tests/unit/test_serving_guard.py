"""The guard's parts without a server: route table, rate buckets, /score value checks, bounded
metrics, the client-error log filter, and the middleware itself on an in-process ASGI stub (a
refused body is refused before it is read to the end)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from features.home import EwsHome
from features.pointintime.spec import FEATURES
from serving.access import Principal, create_token, is_ascii_digits, validate_scope
from serving.guard import (
    ROUTES,
    UNMATCHED,
    ClientErrorLogFilter,
    GuardMiddleware,
    RateLimiter,
    Bucket,
    match,
)
from serving.metrics import RequestMetrics
from serving.score_input import ScoreInputError, check_categories, check_score_body
from serving.views import RequestError, check_area_code, check_school_code


def _row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {f.name: None for f in FEATURES}
    row.update({"grade": "M3", "grade_level": 12, "term": 1, "att_rate_12m": 0.7, "sex": "M", "age": 15.0})
    row.update(over)
    return row


def test_routes_match_templates_and_methods() -> None:
    spec, ok = match("GET", "/ews/api/rounds/2567-T1-early/students/S00045f1b95e073296835/explanation")
    assert spec is not None and ok and spec.template.endswith("{student_key}/explanation") and spec.action == "explain"
    spec, ok = match("GET", "/score")
    assert spec is not None and spec.template == "/score" and not ok
    assert match("GET", "/ews/api/rounds/x/y/z") == (None, False)
    assert match("GET", "/metrics")[0].action == "metrics"  # type: ignore[union-attr]
    # every template is distinct and every route that returns data documents 401
    assert len({r.template for r in ROUTES}) == len(ROUTES)
    assert all(401 in r.statuses for r in ROUTES)


def test_a_rate_bucket_allows_its_burst_then_says_when_to_retry() -> None:
    limiter = RateLimiter({"score": Bucket(per_second=2.0, burst=3)})
    assert [limiter.take("t1", "score", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("t1", "score", now=100.0)
    assert 0.4 < wait <= 0.5
    assert limiter.take("t2", "score", now=100.0) == 0.0  # another token has its own bucket
    assert limiter.take("t1", "score", now=100.6) == 0.0  # refilled
    assert limiter.take("t1", "unlimited", now=100.0) == 0.0


@pytest.mark.parametrize("value,field,words", [
    (float("nan"), "age", "finite"),
    (float("inf"), "age", "finite"),
    (1e308, "income_per_person", "from"),
    (1.7, "att_rate_12m", "from 0 to 1"),
    (-1, "marks_0_last", "from 0"),
    (2.5, "marks_0_last", "whole number"),
    ("lots", "att_rate_12m", "number"),
    ("x" * 50_000, "caretaker", "longer than"),
    (3, "sex", "string"),
    ("yes", "disability", "true, false"),
])
def test_bad_values_are_refused_naming_row_and_field(value: Any, field: str, words: str) -> None:
    rows = [_row(), _row(**{field: value})]
    with pytest.raises(ScoreInputError) as err:
        check_score_body({"rows": rows})
    assert err.value.status == 422
    assert f"row 1, field {field!r}" in err.value.problems[0] and words in err.value.problems[0]
    assert len(err.value.problems[0]) < 300  # a 50 KB string is not echoed back


def test_unknown_missing_and_shape_problems_are_named() -> None:
    with pytest.raises(ScoreInputError, match="row 0, field 'shoe_size': not a feature"):
        check_score_body({"rows": [_row(shoe_size=42)]})
    missing = _row()
    del missing["age"]
    with pytest.raises(ScoreInputError, match="row 0, field 'age': missing"):
        check_score_body({"rows": [missing]})
    for body in ([], {"rows": 1}, {"rows": [], "extra": 1}, {"rows": [1]}):
        with pytest.raises(ScoreInputError):
            check_score_body(body)
    with pytest.raises(ScoreInputError) as err:
        check_score_body({"rows": [{}] * 30_000})
    assert err.value.status == 413
    with pytest.raises(ScoreInputError) as err:
        check_score_body({"rows": [{}] * 5_000})
    assert len(err.value.problems) <= 10  # bounded answer, not one error per row


def test_valid_rows_pass_including_numbers_written_as_strings() -> None:
    assert check_score_body({"rows": [_row(), _row(failing_marks_12m="0", disability=True, caretaker="mother")]}) == 2
    assert check_score_body({"rows": []}) == 0


def test_categories_must_be_the_models() -> None:
    cats = {"sex": ["F", "M"], "grade": ["M3", "P6"]}
    check_categories([_row()], cats)
    with pytest.raises(ScoreInputError, match="row 1, field 'sex': 'X' is not one of F, M"):
        check_categories([_row(), _row(sex="X")], cats)


def test_codes_take_ascii_digits_only() -> None:
    thai = "๕๘๐๑๐๒๐๓๐๔"
    assert thai.isdigit() and not is_ascii_digits(thai)
    with pytest.raises(RequestError):
        check_school_code(thai)
    with pytest.raises(RequestError):
        check_area_code("๕๘")
    assert check_area_code("58") == "58" and check_school_code("1058941005") == "1058941005"
    with pytest.raises(ValueError):
        validate_scope("area", None, ["๕๘"])


def test_a_monitoring_token_reads_metrics_and_nothing_else() -> None:
    mon = Principal("m", "monitoring", None, ())
    assert mon.may("metrics") and not any(mon.may(a) for a in ("list", "summary", "explain", "replay", "score", "monitoring"))
    assert not mon.covers_school("1058941005", "580101") and not mon.covers_area("58")
    assert Principal("a", "admin", None, ()).may("metrics")
    assert not any(Principal("x", r, None, ()).may("metrics") for r in ("school", "area", "analyst", "auditor"))


def test_metrics_never_carry_a_raw_path() -> None:
    m = RequestMetrics()
    for i in range(2000):
        m.observe(UNMATCHED, "GET", 404, 0.001)
        m.observe("/ews/api/rounds/{round_id}/students/{student_key}/explanation", "GET", 200, 0.002)
        m.observe("/score", f"M{i}", 405, 0.001)  # odd methods fold into one label
        m.denied(UNMATCHED, 401)
    text = m.render()
    assert len(text.splitlines()) < 60
    assert "S000" not in text and 'method="OTHER"' in text


def test_client_errors_lose_their_traceback() -> None:
    from pydantic import BaseModel, ValidationError

    class M(BaseModel):
        x: int

    try:
        M(x="no")  # type: ignore[arg-type]
    except ValidationError:
        import sys

        rec = logging.LogRecord("bentoml", logging.ERROR, __file__, 1, "Exception on %s [%s]", ("/score", "POST"), sys.exc_info())
    assert ClientErrorLogFilter().filter(rec)
    assert rec.levelno == logging.WARNING and rec.exc_info is None and "\n" not in rec.getMessage()
    try:
        raise RuntimeError("server bug")
    except RuntimeError:
        import sys

        rec = logging.LogRecord("bentoml", logging.ERROR, __file__, 1, "Exception", (), sys.exc_info())
    assert ClientErrorLogFilter().filter(rec) and rec.levelno == logging.ERROR and rec.exc_info is not None


# -- the middleware on a stub app ------------------------------------------------------------------


class _Stub:
    def __init__(self) -> None:
        self.calls = 0
        self.body = b""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        while True:
            m = await receive()
            self.body += m.get("body", b"")
            if not m.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})


def _call(mw: GuardMiddleware, method: str, path: str, token: str | None, chunks: list[bytes],
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, int]:
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        if pulled > len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}

    out: dict[str, Any] = {"body": b""}

    async def send(m: dict[str, Any]) -> None:
        if m["type"] == "http.response.start":
            out["status"], out["headers"] = m["status"], {k.decode(): v.decode() for k, v in m["headers"]}
        else:
            out["body"] += m.get("body", b"")

    hdrs = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if token:
        hdrs.append((b"authorization", f"Bearer {token}".encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": hdrs, "query_string": b""}
    asyncio.run(mw(scope, receive, send))
    return out["status"], out["headers"], out["body"], pulled


@pytest.fixture()
def guarded(tmp_path: Path) -> tuple[GuardMiddleware, _Stub, dict[str, str], Path]:
    home = EwsHome.from_env(tmp_path, environ={"EWS_GUARD": json.dumps(
        {"max_body_bytes": 4096, "max_rows": 5, "rates": {"score": {"per_second": 0.01, "burst": 3}}})})
    tokens = {r: create_token(home, r, "1058941005" if r == "school" else None)[0] for r in ("school", "analyst", "monitoring")}
    stub = _Stub()
    return GuardMiddleware(stub, home=home), stub, tokens, tmp_path


def test_the_guard_refuses_before_the_body_and_logs_one_line(guarded: tuple[GuardMiddleware, _Stub, dict[str, str], Path]) -> None:
    mw, stub, tok, home = guarded
    big = [b'{"rows": ['] + [b" " * 1024] * 100
    json_ct = {"content-type": "application/json"}
    status, headers, _, pulled = _call(mw, "POST", "/score", None, big, json_ct)
    assert status == 401 and pulled == 0 and headers["cache-control"] == "no-store"
    status, _, _, pulled = _call(mw, "POST", "/score", tok["school"], big, json_ct)
    assert status == 403 and pulled == 0  # role before body
    status, _, _, pulled = _call(mw, "POST", "/score", tok["analyst"], big, {"content-type": "multipart/form-data; boundary=x"})
    assert status == 415 and pulled == 0
    status, headers, _, pulled = _call(mw, "POST", "/score", tok["analyst"], big, json_ct)
    assert status == 413 and pulled <= 6 and headers["connection"] == "close"  # stopped at the limit, not at the end
    many_rows = [b'{"rows": [' + b"{}," * 10 + b"{}]}"]
    status, _, body, _ = _call(mw, "POST", "/score", tok["analyst"], many_rows, json_ct)
    assert status == 413 and "at most 5 rows" in json.loads(body)["error"]
    status, headers, body, _ = _call(mw, "POST", "/score", tok["analyst"], many_rows, json_ct)  # burst of 3 spent
    assert status == 429 and int(headers["retry-after"]) >= 1 and "rate limit" in json.loads(body)["error"]
    assert stub.calls == 0
    lines = (home / "serving" / "security.log").read_text().splitlines()
    assert [line.split()[2] for line in lines] == ["status=401", "status=403", "status=415", "status=413", "status=413", "status=429"]
    assert all("route=/score" in line for line in lines)
    assert not any(t in line for t in tok.values() for line in lines)
    assert f"token_id={tok['school'].split('_')[1]}" in lines[1]


def test_the_guard_checks_values_then_replays_the_body(guarded: tuple[GuardMiddleware, _Stub, dict[str, str], Path]) -> None:
    mw, stub, tok, _ = guarded
    json_ct = {"content-type": "application/json"}
    body = json.dumps({"rows": [_row()]}).encode()
    status, _, _, _ = _call(mw, "POST", "/score", tok["analyst"], [body[:100], body[100:]], json_ct)
    assert status == 200 and stub.body == body
    status, _, out, _ = _call(mw, "POST", "/score", tok["analyst"], [body.replace(b'"age": 15.0', b'"age": NaN')], json_ct)
    assert status == 422 and "row 0, field 'age'" in json.loads(out)["error"]
    status, _, out, _ = _call(mw, "POST", "/score", tok["monitoring"], [b"{}"], json_ct)
    assert status == 403
    status, headers, out, _ = _call(mw, "GET", "/metrics", tok["monitoring"], [b""])
    assert status == 200 and 'route="/score"' in out.decode() and headers["cache-control"] == "no-store"
    status, _, _, _ = _call(mw, "GET", "/metrics", tok["analyst"], [b""])
    assert status == 403
    status, _, _, _ = _call(mw, "GET", "/ews/api/rounds/R/students/S00045f1b95e073296835/nope", tok["analyst"], [b""])
    assert status == 404
    _, _, out, _ = _call(mw, "GET", "/metrics", tok["monitoring"], [b""])
    assert "S00045f1b95e073296835" not in out.decode() and "/nope" not in out.decode()


def test_the_guard_hands_the_route_the_principal_it_authenticated_and_nothing_to_a_refused_request(
        guarded: tuple[GuardMiddleware, _Stub, dict[str, str], Path]) -> None:
    from serving.guard import PRINCIPAL_SCOPE_KEY, guarded_principal

    mw, _, tok, _ = guarded
    seen: list[Any] = []

    class Route:  # records what a route would read from the scope
        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            seen.append(guarded_principal(scope))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

    mw.app = Route()
    status, _, _, _ = _call(mw, "GET", "/ews/api/rounds/R/schools/1058941005/students", tok["school"], [b""])
    assert status == 200 and len(seen) == 1
    assert seen[0] is not None and (seen[0].token_id, seen[0].role, seen[0].school_code) == (
        tok["school"].split("_")[1], "school", "1058941005")
    assert _call(mw, "GET", "/ews/api/rounds/R/schools/1058941005/students", None, [b""])[0] == 401
    assert _call(mw, "GET", "/ews/api/rounds/R/schools/1058941005/students", tok["monitoring"], [b""])[0] == 403
    assert len(seen) == 1  # refused requests never reach a route
    # Only the guard's own principal counts: another value under the key is not one.
    assert guarded_principal({PRINCIPAL_SCOPE_KEY: {"role": "admin"}}) is None and guarded_principal({}) is None
