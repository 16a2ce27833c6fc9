"""The guard in front of every route: who, what, how much, how often — decided before any work.

One ASGI middleware (`GuardMiddleware`, registered on the BentoML service) answers, in order:
  1. open paths (probes, the web page) pass;
  2. authenticate the bearer token (401), match the route against the fixed table below (404, 405)
     and check that the token's role may use it (403) — all before a byte of the body is read;
  3. per-token rate limits on the expensive routes (/score, exports, explanations, replay): 429
     with Retry-After;
  4. for POST /score: JSON content type (415), the body read in chunks up to `max_body_bytes` and
     `max_rows` rows (413 as soon as either is passed, never buffered whole), then every value
     checked (`serving.score_input`: 422 naming row and field) before BentoML parses it;
  5. `/metrics` is answered here (monitoring and admin tokens) from `serving.metrics`, labelled by
     route template only; `/docs.json` gets every status the guard and the routes can return.
Every refusal is one line in EWS_HOME/serving/security.log (time, status, route template, token
id when known — never the token, the raw path or a student key). Every response gets security
headers, and `Cache-Control: no-store` on anything that can carry student data.

Scope (this school, that area) is still checked by `serving.views`, which knows the round's rows.

Limits the guard cannot set: a request line or header over 16 KB is refused by uvicorn's h11
parser before any ASGI code runs, with `400 Invalid HTTP request received.` and a closed
connection (not 414/431: BentoML 1.4.39 passes no h11 options to uvicorn). Rate buckets and
metrics are per worker. A body streamed without Content-Length is held up to `max_body_bytes`
before the 413; the allocator may keep that much (once, not per request).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import bentoml
from pydantic import BaseModel, ConfigDict, Field

from features.home import EwsHome
from serving.access import Principal, TokenStore
from serving.metrics import CONTENT_TYPE, RequestMetrics
from serving.score_input import MAX_SCORE_ROWS, ScoreInputError, check_score_body

OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/ews/", "/ews"})


class Bucket(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    per_second: float = Field(gt=0, description="Sustained requests per second per token.")
    burst: int = Field(ge=1, description="Requests a token may make at once before the rate applies.")


class GuardConfig(BaseModel):
    """Limits of the guard. Defaults suit a school office and an analyst's scripts; `EWS_GUARD`
    (a JSON object of these fields, read by the deployment into `home.serve.guard`) overrides them, e.g. for tests or a larger deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # A full-precision feature row is about 2 KB of JSON: 10,000 rows fit in 24 MiB.
    max_body_bytes: int = Field(24 * 1024 * 1024, ge=1024, description="Largest /score body accepted.")
    max_rows: int = Field(MAX_SCORE_ROWS, ge=1, description="Most rows per /score request.")
    rates: dict[str, Bucket] = Field(default_factory=lambda: {
        "score": Bucket(per_second=1.0, burst=5),
        "export": Bucket(per_second=1.0, burst=10),
        "explain": Bucket(per_second=20.0, burst=100),
    }, description="Per-token token buckets by route class.")



@dataclass(frozen=True)
class RouteSpec:
    """One route: its template (metrics and logs use this, never the raw path), methods, the
    permission a role needs (None: any valid token), its rate bucket and the statuses it returns."""

    template: str
    methods: tuple[str, ...]
    action: str | None
    bucket: str | None
    statuses: tuple[int, ...]

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{[a-z_]+\}", "[^/]+", self.template) + "$")


_R = "/ews/api/rounds/{round_id}"
_NF = "/ews/api/notfound/{census}"
_AUTH = (401,)
ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("/ews/api/whoami", ("GET",), None, None, (200, 401)),
    RouteSpec("/ews/api/rounds", ("GET",), None, None, (200, 401)),
    RouteSpec(_R + "/schools/{school_code}/students", ("GET",), "list", "export", (200, 400, 401, 403, 404, 422, 429)),
    RouteSpec(_R + "/areas/{area_code}/summary", ("GET",), "summary", None, (200, 400, 401, 403, 404, 422)),
    RouteSpec(_R + "/areas/{area_code}/students", ("GET",), "list", None, (200, 400, 401, 403, 404, 422)),
    RouteSpec(_R + "/students/{student_key}/explanation", ("GET",), "explain", "explain", (200, 400, 401, 403, 404, 429)),
    RouteSpec(_R + "/students/{student_key}/replay", ("GET",), "replay", "explain", (200, 400, 401, 403, 404, 429)),
    RouteSpec(_R + "/monitoring", ("GET",), "monitoring", None, (200, 400, 401, 403, 404, 422)),
    RouteSpec(_R + "/uplift", ("GET",), "uplift", None, (200, 400, 401, 403, 404, 409)),
    # issue 15: the action record (serving.actions) and the printable pupil sheet (serving.sheet)
    RouteSpec("/ews/api/actions/catalogue", ("GET",), None, None, (200, 401)),
    RouteSpec(_R + "/students/{student_key}/actions", ("GET", "POST"), "actions", None,
              (200, 400, 401, 403, 404, 413, 415, 422)),  # POST answers 201 (documented by its route)
    RouteSpec(_R + "/schools/{school_code}/actions", ("GET",), "actions", None, (200, 400, 401, 403, 404, 422)),
    RouteSpec(_R + "/students/{student_key}/sheet", ("GET",), "sheet", "explain", (200, 400, 401, 403, 404, 429)),
    # The not-found lists of Thailand Zero Dropout (serving/notfound.py), one per census.
    RouteSpec("/ews/api/notfound", ("GET",), "list", None, (200, 401, 403)),
    RouteSpec(_NF + "/schools/{school_code}/cases", ("GET",), "list", None, (200, 400, 401, 403, 404, 409)),
    RouteSpec(_NF + "/areas/{area_code}/summary", ("GET",), "summary", None, (200, 400, 401, 403, 404, 409)),
    RouteSpec(_NF + "/areas/{area_code}/cases", ("GET",), "list", None, (200, 400, 401, 403, 404, 409)),
    RouteSpec(_NF + "/students/{student_key}/actions", ("GET", "POST"), "actions", None,
              (200, 400, 401, 403, 404, 409, 413, 415, 422)),  # POST answers 201 (documented by its route)
    RouteSpec("/score", ("POST",), "score", "score", (200, 400, 401, 403, 413, 415, 422, 429)),
    RouteSpec("/metrics", ("GET",), "metrics", None, (200, 401, 403)),
    # BentoML's own pages: the API description and its viewer.
    RouteSpec("/docs.json", ("GET",), None, None, (200, 401)),
    RouteSpec("/", ("GET",), None, None, (200, 401)),
)
_COMPILED = tuple((r, r.regex) for r in ROUTES)
UNMATCHED = "unmatched"
STATUS_TEXT = {
    400: "Bad request: a parameter the caller can fix (the message names it)",
    401: "Missing, invalid or revoked token",
    403: "The token's role or scope does not cover this",
    404: "No such route, round or student",
    409: "The not-found list is being rewritten or is damaged: retry later",
    413: "Body larger than the limit, or more rows than the row cap",
    415: "Content type is not application/json",
    422: "A value is invalid (the message names row and field)",
    429: "Rate limit of this token on this route class passed (see Retry-After)",
}


def match(method: str, path: str) -> tuple[RouteSpec | None, bool]:
    """(the route of `path`, whether `method` is allowed on it)."""
    for spec, rx in _COMPILED:
        if rx.match(path):
            return spec, method in spec.methods or (method == "HEAD" and "GET" in spec.methods)
    return None, False


class RateLimiter:
    """Token buckets per (token id, route class). Keys are authenticated token ids only, so the
    table is bounded by the tokens issued, not by what callers send."""

    def __init__(self, rates: dict[str, Bucket]) -> None:
        self.rates = rates
        self._state: dict[tuple[str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, token_id: str, bucket: str, now: float | None = None) -> float:
        """0 when allowed (one unit taken), else seconds until the next unit."""
        rate = self.rates.get(bucket)
        if rate is None:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            level, last = self._state.get((token_id, bucket), (float(rate.burst), now))
            level = min(float(rate.burst), level + (now - last) * rate.per_second)
            if level >= 1.0:
                self._state[(token_id, bucket)] = (level - 1.0, now)
                return 0.0
            self._state[(token_id, bucket)] = (level, now)
            return (1.0 - level) / rate.per_second


class SecurityLog:
    """One line per refused request (every 4xx), appended to EWS_HOME/serving/security.log (owner-only
    folder). Requests without a token are logged too, so the file is capped: past `max_bytes` it
    moves to security.log.1 (one generation kept) and a new file starts."""

    def __init__(self, path: Path, max_bytes: int = 50 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._lines = 0

    def denied(self, status: int, method: str, route: str, token_id: str | None, reason: str) -> None:
        at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        # `reason` is one of the guard's own fixed messages, never echoing the request.
        line = f"{at} denied status={status} method={method[:8]} route={route} token_id={token_id or '-'} reason={reason}\n"
        with self._lock:
            self._lines += 1
            if self._lines % 1000 == 0 and self.path.exists() and self.path.stat().st_size > self.max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)


class ClientErrorLogFilter(logging.Filter):
    """BentoML logs a caller's bad input (a pydantic ValidationError, a 4xx BentoMLException) at
    ERROR with a full traceback: one run wrote a 573 MB log. Such a record becomes one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        status = getattr(getattr(exc, "error_code", None), "value", None)
        client = type(exc).__name__ == "ValidationError" or (isinstance(status, int) and 400 <= status < 500)
        if client:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            record.msg = f"{record.getMessage()}: client error ({type(exc).__name__}: {first})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install_log_filter() -> None:
    lg = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, ClientErrorLogFilter) for f in lg.filters):
        lg.addFilter(ClientErrorLogFilter())


def restrict_prometheus_dir(p: Path) -> None:
    """BentoML creates its Prometheus folder under BENTOML_HOME world-readable; owner-only it is."""
    if p.is_dir():
        os.chmod(p, 0o700)
        for f in p.iterdir():
            if f.is_file():
                os.chmod(f, 0o600)


def bearer_token(headers: Any) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (any mapping with .get), else None."""
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


# The scope key under which the guard leaves the request's authenticated principal for the routes.
# A scope is built by the server for each request: a caller cannot set it.
PRINCIPAL_SCOPE_KEY = "ews.principal"


def guarded_principal(scope: dict[str, Any]) -> Principal | None:
    """The principal the guard authenticated for this request (None outside the guard, e.g. when a
    test calls a route directly: the route then authenticates itself)."""
    who = scope.get(PRINCIPAL_SCOPE_KEY)
    return who if isinstance(who, Principal) else None


def _no_store(path: str) -> bool:
    return path.startswith(("/ews/api", "/score", "/metrics", "/docs.json"))


def _with_headers(message: dict[str, Any], path: str) -> dict[str, Any]:
    drop = {b"cache-control", b"x-content-type-options", b"referrer-policy", b"x-frame-options"}
    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in drop]
    headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                (b"x-frame-options", b"DENY")]
    if _no_store(path):
        headers.append((b"cache-control", b"no-store"))
    return {**message, "headers": headers}


class _Refused(Exception):
    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None,
                 detail: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason
        self.headers = headers or {}
        self.detail = detail


class GuardMiddleware:
    """See the module docstring. One instance per worker."""

    def __init__(self, app: Any, home: EwsHome | None = None) -> None:
        self.app = app
        self._home = home  # None: the deployment the running BentoML service built
        self.config = GuardConfig()  # replaced by the deployment's settings in _setup
        self.metrics = RequestMetrics()
        self.limiter = RateLimiter(self.config.rates)
        self._store: TokenStore | None = None
        self._seclog: SecurityLog | None = None
        self._ready = False

    def _setup(self) -> None:
        # The deployment the service built in its __init__ (requests start after it).
        home: EwsHome = self._home or bentoml.get_current_service().home
        self.config = GuardConfig.model_validate(home.serve.guard)
        self.limiter = RateLimiter(self.config.rates)
        self._store = TokenStore(home)  # creates serving/ owner-only
        self._seclog = SecurityLog(home.security_log)
        install_log_filter()
        restrict_prometheus_dir(home.prometheus_dir)
        self._ready = True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._ready:
            self._setup()
        path: str = scope["path"]
        method: str = scope["method"]
        started = time.perf_counter()
        spec, method_ok = match(method, path)
        route = spec.template if spec is not None else (path if path in OPEN_PATHS else UNMATCHED)
        status_box = [0]

        who: Principal | None = None
        reason = "route"  # a 4xx the route itself answered (scope, unknown round or student, bad value)

        async def guarded_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = status = int(message["status"])
                message = _with_headers(message, path)
                # Logged before the answer leaves, so a caller that reads the log after its answer
                # always finds the line (`who` and `reason` are read as they stand at this moment).
                if 400 <= status < 500 and self._seclog is not None:
                    self._seclog.denied(status, method, route, who.token_id if who else None, reason)
            await send(message)
        try:
            if path in OPEN_PATHS:
                await self.app(scope, receive, guarded_send)
                return
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            token = bearer_token(headers)
            assert self._store is not None
            who = self._store.authenticate(token) if token else None
            if who is None:
                raise _Refused(401, "missing token: send Authorization: Bearer <token>" if not token
                               else "invalid or revoked token", "no token" if not token else "bad token",
                               {"WWW-Authenticate": "Bearer"})
            if spec is None:
                raise _Refused(404, "no such route", "no route")
            if not method_ok:
                raise _Refused(405, f"method {method[:8]} not allowed here", "method",
                               {"Allow": ", ".join(spec.methods)})
            if spec.action is not None and not who.may(spec.action):
                raise _Refused(403, f"the {who.role} role may not use {spec.template}", "role")
            scope[PRINCIPAL_SCOPE_KEY] = who
            bucket = spec.bucket
            if bucket == "export":
                fmt = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("format", ["json"])[-1]
                bucket = "export" if fmt in ("csv", "xlsx") else None
            if bucket is not None:
                wait = self.limiter.take(who.token_id, bucket)
                if wait > 0:
                    raise _Refused(429, f"rate limit for {bucket} requests passed: retry in {math.ceil(wait)} s",
                                   "rate", {"Retry-After": str(math.ceil(wait))})
            if spec.template == "/metrics":
                await self._respond(guarded_send, 200, self.metrics.render().encode(), CONTENT_TYPE)
                return
            if spec.template == "/score":
                receive = await self._score_body(headers, receive)
            if spec.template == "/docs.json":
                await self._openapi(scope, receive, guarded_send)
                return
            await self.app(scope, receive, guarded_send)
        except _Refused as r:
            reason = r.reason  # read by guarded_send when the refusal's answer starts
            self.metrics.denied(route, r.status)
            body: dict[str, Any] = {"error": r.message}
            if r.detail:
                body["detail"] = r.detail
            extra = dict(r.headers)
            if r.status == 413:
                extra["Connection"] = "close"  # the rest of the body is not read
            await self._respond(guarded_send, r.status, json.dumps(body).encode(), "application/json", extra)
        finally:
            status = status_box[0]
            if status and status != 401:
                self.metrics.observe(route, method, status, time.perf_counter() - started)

    @staticmethod
    async def _respond(send: Any, status: int, body: bytes, media: str, extra: dict[str, str] | None = None) -> None:
        headers = [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _score_body(self, headers: dict[str, str], receive: Any) -> Any:
        """The /score body, read in chunks under the limits and checked; a `receive` replaying it."""
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise _Refused(415, "POST /score takes application/json: {\"rows\": [feature rows]}", "content type")
        limit, max_rows = self.config.max_body_bytes, self.config.max_rows
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise _Refused(413, f"body larger than {limit} bytes", "body size")
        # One growing buffer, not a list of chunks: a large buffer lives in its own mapping and is
        # given back to the system when freed, so a refused stream leaves the worker as it was.
        buf = bytearray()
        braces = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Refused(400, "client disconnected", "disconnect")
            chunk = message.get("body", b"")
            if len(buf) + len(chunk) > limit:
                raise _Refused(413, f"body larger than {limit} bytes", "body size")
            # Every row is a JSON object: counting "{" while reading refuses 30,000 empty rows at
            # the 10,001st, before anything is parsed (braces inside strings only over-count, and
            # no valid value contains one).
            braces += chunk.count(b"{")
            if braces > max_rows + 1:
                raise _Refused(413, f"at most {max_rows} rows per request", "rows")
            buf += chunk
            if not message.get("more_body", False):
                break
        body = bytes(buf)
        del buf
        try:
            parsed = json.loads(body, parse_constant=lambda c: float(c.replace("Infinity", "inf")))
        except (ValueError, RecursionError):
            raise _Refused(400, "the body is not valid JSON", "json") from None
        try:
            check_score_body(parsed, max_rows)
        except ScoreInputError as exc:
            raise _Refused(exc.status, exc.problems[0], "rows" if exc.status == 413 else "values",
                           detail=exc.problems) from None
        del parsed
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _openapi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """BentoML's API description, with the mounted /ews routes and every status they return."""
        start: dict[str, Any] = {}
        parts: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                parts.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        status = int(start.get("status", 500))
        if status != 200:
            await self._respond(send, status, b"".join(parts), "application/json")
            return
        doc = complete_openapi(json.loads(b"".join(parts)))
        await self._respond(send, 200, json.dumps(doc).encode(), "application/json")


def complete_openapi(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the /ews routes (a mounted app BentoML does not describe) and, on every route in the
    table, each status the guard or the route can return."""
    from serving.service import api  # the mounted FastAPI app; imported here, at request time

    paths: dict[str, Any] = doc.setdefault("paths", {})
    for p, item in api.openapi().get("paths", {}).items():
        paths.setdefault("/ews" + p if p != "/" else "/ews/", item)
    for spec in ROUTES:
        item = paths.get(spec.template)
        if item is None:
            continue
        for m in spec.methods:
            op = item.get(m.lower())
            if op is None:
                continue
            responses = op.setdefault("responses", {})
            for s in spec.statuses:
                if str(s) not in responses and s in STATUS_TEXT:
                    responses[str(s)] = {"description": STATUS_TEXT[s], "content": {"application/json": {
                        "schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}}
            if spec.action is not None or spec.template != "/":
                op.setdefault("security", [{"bearer": []}])
    doc.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
    return doc
