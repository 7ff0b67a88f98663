"""`janitor serve`: the HTTP API, health endpoints, /metrics and the storage dashboard.

FastAPI on uvicorn, sitting on the same library functions the CLI calls (load_config,
build_plan, run_policies, build_report, query_history, select_trash). Nothing a request says
becomes a filesystem path: runs take configured policy names only, and the history's `path`
is a glob over the catalog's rows, never opened.

Authentication: a bearer token read once at start from a file that we own and nobody else
can read (0600); every endpoint except /healthz and the dashboard's empty shell wants it.
Without a token the server only starts on loopback or a Unix socket and only when told
`--no-auth`. Acting calls (POST) must also come with `Content-Type: application/json` and,
when a browser sends one, an `Origin` equal to the server's own: a page on another site can
neither send the header-borne token nor a JSON body without a CORS preflight, which this
server never answers. Every acting call and every refused credential is logged as a JSON
event with the client address and the token's id (a hash prefix), never the token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import socket
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

# FastAPI reads the endpoints' annotations by name from this module's globals: import here.
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from .errors import JanitorError, LockHeld, UsageError
from .events import EventLog

if TYPE_CHECKING:
    from .catalog import Catalog
    from .config import Config
    from .watch import ThresholdCheck

DEFAULT_PORT = 8427
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
MAX_BODY = 64 * 1024
RUN_ID_RE = re.compile(r"[A-Za-z0-9TZ-]{1,64}")
KEEP_RUNS = 100  # finished runs remembered in memory (older ones are in the catalog)


@dataclass(frozen=True)
class Listen:
    kind: str  # "tcp" | "unix"
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def loopback(self) -> bool:
        if self.kind == "unix":
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False


def parse_listen(addr: str) -> Listen:
    """`HOST:PORT`, `[V6]:PORT`, `:PORT` (127.0.0.1) or `unix:/abs/path`."""
    if addr.startswith("unix:"):
        path = addr[5:]
        if not os.path.isabs(path):
            raise UsageError(f"--listen {addr!r}: a Unix socket needs an absolute path (unix:/run/janitor/api.sock)")
        return Listen("unix", path=path)
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {addr!r} is not HOST:PORT or unix:/path (e.g. {DEFAULT_LISTEN})")
    return Listen("tcp", host=(host or "127.0.0.1").strip("[]"), port=int(port))


def read_token(path: str) -> str:
    """The token from a regular file we own, mode 0600 or stricter, not a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"--token-file {path}: cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"--token-file {path}: not a regular file")
        if st.st_uid != os.geteuid():
            raise UsageError(f"--token-file {path}: owned by uid {st.st_uid}, not by us (uid {os.geteuid()}); refusing it")
        if st.st_mode & 0o077:
            raise UsageError(f"--token-file {path}: mode {stat.S_IMODE(st.st_mode):o} lets others read it; "
                             "chmod 600 it")
        data = os.read(fd, 4097)
    finally:
        os.close(fd)
    token = data.decode("utf-8", "replace").strip()
    if len(data) > 4096 or not token or any(c.isspace() for c in token):
        raise UsageError(f"--token-file {path}: expected one token of up to 4096 characters on one line")
    if len(token) < 16:
        raise UsageError(f"--token-file {path}: the token is shorter than 16 characters; use e.g. "
                         "`openssl rand -hex 32`")
    return token


def token_id(token: str) -> str:
    """What logs say instead of the token: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass
class RunState:
    """One run started over the API, as GET /api/v1/runs/{id} shows it."""

    id: str
    policies: list[str]
    dry_run: bool
    requested_by: str
    status: str = "starting"  # starting | running | ok | partial | failed | conflict
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    files_done: int = 0
    bytes_done: int = 0
    errors: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    started_event: threading.Event = field(default_factory=threading.Event)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.id, "status": self.status, "dry_run": self.dry_run, "policies": self.policies,
                "requested_by": self.requested_by, "created": self.created, "started": self.started,
                "finished": self.finished, "progress": {"files": self.files_done, "bytes": self.bytes_done,
                                                        "errors": self.errors},
                "result": self.result, "error": self.error}


_EMIT_LOCK = threading.Lock()
# what a run emits for each file it is done with (docs/events.md)
DONE_EVENTS = frozenset({"file_deleted", "file_soft_deleted", "file_archived", "log_truncated"})


class LockedEvents(EventLog):
    """An EventLog whose lines never interleave: the sampler, request handlers and runs
    emit from different threads onto one stderr and one log file."""

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        with _EMIT_LOCK:
            super().emit(event, level, **fields)


class RunEvents(LockedEvents):
    """A run's events as usual (JSON on stderr, the log file), and its progress for the API."""

    def __init__(self, fmt: str, log_file: str | None, state: RunState, server: ServerState) -> None:
        super().__init__(fmt, log_file=log_file)
        self.state = state
        self.server = server

    def bind(self, run_id: str) -> None:
        super().bind(run_id)
        self.state.id = run_id

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        super().emit(event, level, **fields)
        state = self.state
        if event == "run_started":
            state.status, state.started = "running", time.time()
            state.started_event.set()
        elif event in DONE_EVENTS:
            state.files_done += 1
            state.bytes_done += int(fields.get("bytes") or 0)
        elif event in ("file_failed", "policy_failed"):
            state.errors += 1
        elif event == "threshold_exceeded":
            self.server.count_exceeded(str(fields.get("policy")), str(fields.get("kind")))


class ServerState:
    """What the app holds between requests."""

    def __init__(self, config: Config, config_path: str | None, token: str | None, *, metrics_no_auth: bool,
                 sample_interval: float, listen: Listen | None = None, log_format: str = "json") -> None:
        from .fleet import label_host

        self.config = config
        self.config_path = config_path
        self.token = token
        self.token_id = token_id(token) if token else None
        self.metrics_no_auth = metrics_no_auth
        self.sample_interval = sample_interval
        self.listen = listen
        self.host = label_host()
        self.log_format = log_format
        self.events = LockedEvents(log_format, log_file=config.settings.log_file)
        self.runs: dict[str, RunState] = {}
        self.lock = threading.Lock()
        self.exceeded_total: dict[tuple[str, str], int] = {}
        self.last_checks: list[ThresholdCheck] = []
        self.stop = threading.Event()
        self.sampler: threading.Thread | None = None
        self.started = time.time()
        # the dashboard's rendered data, shared by every viewer for a few seconds (janitor/web.py)
        self.content_lock = threading.Lock()
        self.content_cache: tuple[float, str] | None = None
        # every warn threshold starts at 0, so `increase()` counts the first event too
        for policy in config.select(None):
            if policy.action == "warn":
                for kind, limit in (("disk", policy.when_disk_above), ("size", policy.when_size_above)):
                    if limit is not None:
                        self.exceeded_total[(policy.name, kind)] = 0

    # -- thresholds and samples ---------------------------------------------------------

    def count_exceeded(self, policy: str, kind: str) -> None:
        with self.lock:
            self.exceeded_total[(policy, kind)] = self.exceeded_total.get((policy, kind), 0) + 1

    def sample_once(self) -> None:
        """One tick: record a trend sample, check the warn thresholds (events, counters)."""
        import sqlite3

        from .samples import record
        from .watch import check_all, emit_exceeded

        try:
            record(self.config)
        except (OSError, sqlite3.Error, JanitorError) as exc:
            self.events.emit("samples_failed", "warning", code="E_IO", message=f"cannot record a trend sample: {exc}")
        checks = check_all(self.config)
        self.last_checks = checks
        emit_exceeded(checks, self.events)
        for c in checks:
            if c.exceeded:
                self.count_exceeded(c.policy, c.kind)

    def start_sampler(self) -> None:
        def loop() -> None:
            while not self.stop.is_set():
                try:
                    self.sample_once()
                except Exception as exc:  # the sampler must outlive one bad tick
                    self.events.emit("sampler_failed", "error", message=f"{type(exc).__name__}: {exc}")
                self.stop.wait(self.sample_interval)

        if self.sample_interval > 0:
            self.sampler = threading.Thread(target=loop, name="janitor-sampler", daemon=True)
            self.sampler.start()

    # -- runs -----------------------------------------------------------------------------

    def start_run(self, policies: list[str], dry_run: bool, who: str) -> RunState:
        """Start a run (or a dry run) in the background; returns once it holds the lock (or
        could not get it: status `conflict`)."""
        from .runner import new_run_id

        state = RunState("pending-" + new_run_id(), policies, dry_run, who)
        selected = self.config.select(policies or None)
        if dry_run:
            state.id = "dry-" + new_run_id()
            target = self._dry_run
        else:
            target = self._run
        threading.Thread(target=target, args=(state, selected), name=f"janitor-run-{state.id}", daemon=True).start()
        state.started_event.wait(60)
        if state.status != "conflict":
            with self.lock:
                self.runs[state.id] = state
                finished = [r for r in self.runs.values() if r.finished is not None]
                for old in sorted(finished, key=lambda r: r.created)[:-KEEP_RUNS]:
                    del self.runs[old.id]
        return state

    def _run(self, state: RunState, selected: tuple[Any, ...]) -> None:
        from .render import run_to_dict
        from .runner import run_policies

        events = RunEvents(self.log_format, self.config.settings.log_file, state, self)
        try:
            report = run_policies(self.config, selected, events, command="serve")
            state.result = run_to_dict(report)
            state.status = "ok" if report.result.exit_code == 0 else "partial"
        except LockHeld as exc:
            state.status, state.error = "conflict", str(exc)
        except BaseException as exc:
            state.status, state.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            state.finished = time.time()
            self.content_cache = None  # the next dashboard refresh shows the run's effect
            events.close()
            state.started_event.set()

    def _dry_run(self, state: RunState, selected: tuple[Any, ...]) -> None:
        from .planner import build_plan

        state.status, state.started = "running", time.time()
        state.started_event.set()
        try:
            plan = build_plan(self.config, selected)
            data = plan.to_dict()
            state.result = {k: v for k, v in data.items() if k != "policies"} | {
                "policies": [{k: v for k, v in p.items() if k not in ("actions", "skips")}
                             | {"skipped": len(p["skips"])} for p in data["policies"]]}
            state.files_done, state.bytes_done = plan.total_files, plan.total_bytes
            state.status = "ok"
        except BaseException as exc:
            state.status, state.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            state.finished = time.time()


# -- metrics ------------------------------------------------------------------------------


def _result_from_catalog(catalog: Catalog, config: Config) -> tuple[Any, float, float] | None:
    """The last finished run as a RunResult (from the runs table), for the run metrics."""
    from .execute import PolicyOutcome, RunResult

    row = catalog.db.execute(
        "SELECT run_id, started, finished, status, summary FROM runs WHERE finished IS NOT NULL "
        "ORDER BY finished DESC LIMIT 1").fetchone()
    if row is None:
        return None
    run_id, started, finished, status, summary = row
    from .samples import load_run

    stored = load_run(config, run_id)  # the full outcome, recorded by the runner
    if stored is not None:
        return stored
    actions = {p.name: p.action for p in config.policies}

    class CatalogRunResult(RunResult):
        @property
        def exit_code(self) -> int:
            return 0 if status == "ok" else 1

    result = CatalogRunResult(run_id)
    for m in re.finditer(r"([A-Za-z0-9._-]+): (\w+) (\d+) files (\d+) bytes", summary or ""):
        result.policies.append(PolicyOutcome(m.group(1), actions.get(m.group(1), "unknown"), status=m.group(2),
                                             files=int(m.group(3)), bytes=int(m.group(4))))
    return result, float(started), float(finished)


def metrics_text(state: ServerState) -> bytes:
    """The textfile's metrics (one registry, the same code) plus what only a server knows:
    filesystem usage, size and forecasts per policy path at scrape time, and how often each
    warn threshold was found passed."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest
    from prometheus_client.core import CounterMetricFamily

    from .catalog import existing_catalog
    from .disk import disk_usage
    from .fleet import HostLabelled
    from .metrics import add_run_metrics
    from .samples import forecast, load
    from .watch import add_threshold_metrics

    config = state.config
    registry = CollectorRegistry()
    with_run = False
    with existing_catalog(config.settings.state_dir) as catalog:
        if catalog is not None:
            last = _result_from_catalog(catalog, config)
            if last is not None:
                result, started, finished = last
                add_run_metrics(registry, config, result, catalog, started, finished)
                with_run = True
    if not with_run:
        used = Gauge("janitor_filesystem_used_ratio", "Used share (0..1) of the filesystem holding each policy path.",
                     ("policy", "path"), registry=registry)
        for policy in config.policies:
            try:
                used.labels(policy.name, policy.path).set(round(disk_usage(policy.path).used_pct / 100.0, 6))
            except OSError:
                continue
        add_threshold_metrics(registry, config)

    size = Gauge("janitor_filesystem_size_bytes", "Size of the filesystem holding each policy path (used + available).",
                 ("path",), registry=registry)
    used_b = Gauge("janitor_filesystem_used_bytes", "Used bytes of the filesystem holding each policy path.",
                   ("path",), registry=registry)
    limit = Gauge("janitor_filesystem_threshold_ratio", "The strictest threshold (0..1) on each policy path's "
                  "filesystem: settings.guard_max_used or a policy's when_disk_above.", ("path",), registry=registry)
    full_in = Gauge("janitor_filesystem_full_in_seconds", "At the last day's growth rate, seconds until the "
                    "filesystem is full (absent while it is not growing).", ("path",), registry=registry)
    thr_in = Gauge("janitor_filesystem_threshold_in_seconds", "At the last day's growth rate, seconds until the "
                   "filesystem passes its threshold (absent while not growing or without a threshold).",
                   ("path",), registry=registry)
    for path, threshold in path_thresholds(config).items():
        try:
            usage = disk_usage(path)
        except OSError:
            continue
        size.labels(path).set(usage.used + usage.free)
        used_b.labels(path).set(usage.used)
        if threshold is not None:
            limit.labels(path).set(threshold / 100.0)
        fc = forecast(load(config, path, since=time.time() - 86400), threshold)
        if fc is not None and fc.full_in_seconds is not None:
            full_in.labels(path).set(round(fc.full_in_seconds, 1))
            if fc.threshold_in_seconds is not None:
                thr_in.labels(path).set(round(fc.threshold_in_seconds, 1))
    Gauge("janitor_serve_start_time_seconds", "When this janitor serve started (unix time).",
          registry=registry).set(state.started)

    class Exceeded:
        def collect(self) -> Any:
            family = CounterMetricFamily("janitor_threshold_exceeded_events",
                                         "threshold_exceeded events since this server started (runs and samples).",
                                         labels=("policy", "kind"))
            with state.lock:
                for (policy, kind), n in sorted(state.exceeded_total.items()):
                    family.add_metric((policy, kind), n)
            yield family

    registry.register(Exceeded())
    return bytes(generate_latest(HostLabelled(registry)))


def path_thresholds(config: Config) -> dict[str, float | None]:
    """Each enabled policy path and the strictest threshold on it (guard_max_used, when_disk_above)."""
    out: dict[str, float | None] = {}
    for policy in config.select(None):
        candidates = [t for t in (policy.when_disk_above, config.settings.guard_max_used) if t is not None]
        current = out.get(policy.path)
        best = min(candidates) if candidates else None
        if policy.path not in out or (best is not None and (current is None or best < current)):
            out[policy.path] = best
    return out


# -- the app -------------------------------------------------------------------------------


class RunRequest(BaseModel):
    """POST /api/v1/runs: which configured policies, and whether only to plan."""

    model_config = ConfigDict(extra="forbid")
    policies: list[str] = Field(default_factory=list, max_length=256,
                                description="Configured policy names; empty: every enabled policy.")
    dry_run: bool = False


class RunAccepted(BaseModel):
    run_id: str
    status: str = Field(description="running (a run holds the lock) or ok/failed (a dry run that already ended)")
    href: str


class RunProgress(BaseModel):
    files: int
    bytes: int
    errors: int


class RunStatus(BaseModel):
    run_id: str
    status: str = Field(description="starting | running | ok | partial | failed")
    dry_run: bool
    policies: list[str] = []
    requested_by: str | None = None
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    progress: RunProgress | None = None
    result: dict[str, Any] | None = Field(None, description="`janitor run --json` (a dry run: the plan's totals)")
    error: str | None = None


class ReadyCheck(BaseModel):
    path: str
    used_pct: float
    problems: list[str] = []


class Ready(BaseModel):
    ready: bool
    over: list[ReadyCheck]
    checked: list[ReadyCheck]


class Problem(BaseModel):
    detail: str


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes, by Content-Length or as it streams."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await _send_json(send, 413, {"detail": f"request body over {self.limit} bytes"})
                return
        received = 0
        started = too_large = False

        async def limited_receive() -> Any:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if too_large:
                # the app turned the aborted read into its own error (FastAPI: a 400): say 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_json(send, 413, {"detail": f"request body over {self.limit} bytes"})
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            pass
        if too_large and not started:
            await _send_json(send, 413, {"detail": f"request body over {self.limit} bytes"})


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    import json

    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _clean(value: Any) -> Any:
    from .render import json_clean

    return json_clean(value)


def create_app(state: ServerState) -> FastAPI:
    from . import __version__
    from .history import recent_runs

    config = state.config
    app = FastAPI(title="janitor", version=__version__,
                  description="Storage-lifecycle janitor: plan, run, report, history, trash; health and metrics. "
                              "Send `Authorization: Bearer <token>` (the --token-file's content).",
                  docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY)

    def client_of(request: Request) -> str:
        if request.client is None:
            return "unix"
        return f"{request.client.host}:{request.client.port}"

    @app.middleware("http")
    async def request_guards(request: Request, call_next: Any) -> Response:
        # Without a token, a page on another site could reach us through DNS rebinding
        # (its own name resolving to 127.0.0.1): only loopback names are answered then.
        if state.token is None and state.listen is not None and state.listen.kind == "tcp":
            hostname = urlsplit("//" + request.headers.get("host", "")).hostname or ""
            if hostname not in ("127.0.0.1", "localhost", "::1") and not hostname.startswith("127."):
                return JSONResponse({"detail": "unauthenticated server: only loopback host names are answered"},
                                    status_code=421)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            # Before anything reads the body: a page on another site gets no further.
            origin = request.headers.get("origin")
            if origin is not None and (origin == "null" or urlsplit(origin).netloc != request.headers.get("host", "")):
                state.events.emit("api_forbidden", "warning", client=client_of(request), origin=origin,
                                  route=request.url.path, message="cross-origin request refused")
                return JSONResponse({"detail": "cross-origin requests are refused"}, status_code=403)
            if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
                return JSONResponse({"detail": "send the body as application/json"}, status_code=415)
        response: Response = await call_next(request)
        return response

    def check_token(request: Request) -> str:
        """The caller's token id ("none" without auth); 401 otherwise."""
        if state.token is None:
            return "none"
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), state.token.encode()):
            state.events.emit("api_unauthorized", "warning", client=client_of(request), method=request.method,
                              route=request.url.path, message="missing or wrong bearer token")
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        return state.token_id or "none"

    def check_monitoring_token(request: Request) -> str:
        return "none" if state.metrics_no_auth else check_token(request)

    def unknown_policy(names: list[str]) -> None:
        known = {p.name for p in config.policies}
        for name in names:
            if name not in known:
                raise HTTPException(404, f"no policy named {name!r}; known: {', '.join(sorted(known))}")

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, Any]:
        """Liveness: 200 while the process serves."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={200: {"model": Ready},
                                                    503: {"model": Ready, "description": "a filesystem is over its threshold"}})
    def readyz(_: str = Depends(check_monitoring_token)) -> Response:
        """The guard over HTTP: 200 while every threshold holds, 503 naming each filesystem over it."""
        from .guard import check, thresholds_from_config

        verdicts = check(thresholds_from_config(config, None))
        failing = [{"path": v.usage.path, "used_pct": round(v.usage.used_pct, 2), "problems": v.problems()}
                   for v in verdicts if v.problems()]
        body = {"ready": not failing, "over": failing,
                "checked": [{"path": v.usage.path, "used_pct": round(v.usage.used_pct, 2)} for v in verdicts]}
        return JSONResponse(body, status_code=503 if failing else 200)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics(_: str = Depends(check_monitoring_token)) -> Response:
        """Prometheus exposition format: the textfile's metrics, plus filesystem usage at scrape time."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics_text(state), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/plan", tags=["api"])
    def get_plan(policy: list[str] | None = Query(None, description="Policy name (repeatable); default: all enabled."),
                 _: str = Depends(check_token)) -> Response:
        """What `janitor run` would do now: `janitor plan --json`."""
        from .planner import build_plan

        unknown_policy(policy or [])
        plan = build_plan(config, config.select(policy or None))
        return JSONResponse(_clean(plan.to_dict()))

    @app.post("/api/v1/runs", tags=["api"], status_code=202,
              responses={202: {"model": RunAccepted}, 404: {"model": Problem, "description": "unknown policy"},
                         409: {"model": Problem, "description": "another run holds the lock"},
                         413: {"model": Problem, "description": "body too large"},
                         415: {"model": Problem, "description": "not JSON"}})
    def post_run(body: RunRequest, request: Request, token: str = Depends(check_token)) -> Response:
        """Start a run (or a dry run) of configured policies, by name, in the background."""
        # Origin and Content-Type were checked by the middleware, before the body was read
        unknown_policy(body.policies)
        run = state.start_run(body.policies, body.dry_run, f"{client_of(request)} token {token}")
        state.events.emit("api_run_requested", "warning" if run.status == "conflict" else "info",
                          client=client_of(request), token_id=token, policies=",".join(body.policies) or "*",
                          dry_run=body.dry_run, run=run.id, status=run.status)
        if run.status == "conflict":
            return JSONResponse({"detail": run.error or "another janitor run holds the lock"}, status_code=409)
        return JSONResponse({"run_id": run.id, "status": run.status, "href": f"/api/v1/runs/{run.id}"},
                            status_code=202)

    @app.get("/api/v1/runs", tags=["api"])
    def list_runs(limit: int = Query(20, ge=1, le=500), _: str = Depends(check_token)) -> Response:
        """The latest runs from the catalog (CLI and API alike), newest first."""
        return JSONResponse(_clean(recent_runs(config, limit)))

    @app.get("/api/v1/runs/{run_id}", tags=["api"],
             responses={200: {"model": RunStatus}, 404: {"model": Problem, "description": "no such run"}})
    def get_run(run_id: str, _: str = Depends(check_token)) -> Response:
        """A run's state and progress, then its result (`janitor run --json`)."""
        if not RUN_ID_RE.fullmatch(run_id):
            raise HTTPException(404, "no such run")
        run = state.runs.get(run_id)
        if run is not None:
            return JSONResponse(_clean(run.to_dict()))
        for row in recent_runs(config, 10_000):
            if row["run_id"] == run_id:
                return JSONResponse(_clean({"run_id": run_id, "status": row["status"], "dry_run": False,
                                            "started": row["started"], "finished": row["finished"],
                                            "requested_by": f"{row['command']} (pid {row['pid']})",
                                            "result": _stored_result(row)}))
        raise HTTPException(404, "no such run")

    @app.get("/api/v1/report", tags=["api"])
    def get_report(_: str = Depends(check_token)) -> Response:
        """Storage health per policy path: `janitor report --json`."""
        from .report import build_report

        return JSONResponse(_clean(build_report(config).to_dict()))

    @app.get("/api/v1/history", tags=["api"])
    def get_history(policy: list[str] | None = Query(None), since: str | None = Query(None, examples=["7d"]),
                    path: str | None = Query(None, description="Glob over the recorded paths (never opened)."),
                    run: str | None = Query(None), limit: int = Query(1000, ge=1, le=100_000),
                    _: str = Depends(check_token)) -> Response:
        """What happened to which file: `janitor history --json`."""
        from .catalog import existing_catalog
        from .history import query_history, where_now
        from .render import entry_to_dict
        from .units import parse_duration

        try:
            since_s = None if since is None else parse_duration(since)
        except ValueError as exc:
            raise HTTPException(422, f"since: {exc}") from None
        with existing_catalog(config.settings.state_dir) as catalog:
            entries = [] if catalog is None else query_history(
                catalog, policies=policy, since=since_s, path_glob=path, run_id=run, limit=limit)
        return JSONResponse(_clean([{**entry_to_dict(e), "where_now": where_now(e)} for e in entries]))

    @app.get("/api/v1/trash", tags=["api"])
    def get_trash(policy: list[str] | None = Query(None), run: str | None = Query(None),
                  _: str = Depends(check_token)) -> Response:
        """What is in the trash: `janitor trash list --json`."""
        from .catalog import existing_catalog
        from .render import entry_to_dict
        from .trashops import select_trash

        with existing_catalog(config.settings.state_dir) as catalog:
            entries = [] if catalog is None else select_trash(catalog, policies=policy, run_id=run)
        return JSONResponse(_clean([entry_to_dict(e) for e in entries]))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> Response:
        """The dashboard page. Without auth the data is in the page; with auth the page asks
        for the token and fetches /dashboard/content with it."""
        from .web import render_dashboard

        return HTMLResponse(render_dashboard(state, with_content=state.token is None),
                            headers=_PAGE_HEADERS)

    @app.get("/dashboard/content", response_class=HTMLResponse, include_in_schema=False)
    def dashboard_content(_: str = Depends(check_token)) -> Response:
        from .web import render_dashboard_content

        return HTMLResponse(render_dashboard_content(state), headers=_PAGE_HEADERS)

    @app.exception_handler(UsageError)
    def usage_error(request: Request, exc: UsageError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    return app


# the page loads nothing from elsewhere and may not be framed (clickjacking the run button)
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _stored_result(row: dict[str, Any]) -> dict[str, Any]:
    """A run someone else made, in `janitor run --json`'s shape when its outcome was recorded."""
    return {"run_id": row["run_id"], "files": row["files"], "bytes": row["bytes"], "failed": row["errors"],
            "exit_code": None if row["status"] == "running" else (0 if row["status"] == "ok" else 1),
            "summary": row["summary"]}


# -- serving --------------------------------------------------------------------------------


@dataclass
class ServeOptions:
    config_path: str | None
    listen: str = DEFAULT_LISTEN
    token_file: str | None = None
    no_auth: bool = False
    metrics_no_auth: bool = False
    sample_interval: float = 300.0
    log_format: str = "json"


def _bind(listen: Listen) -> socket.socket:
    if listen.kind == "unix":
        try:
            st = os.lstat(listen.path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise UsageError(f"--listen unix:{listen.path}: something that is not a socket is in the way")
            os.unlink(listen.path)  # a stale socket of an earlier serve
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is ours alone (0600): file permissions are its access control
        try:
            sock.bind(listen.path)
        finally:
            os.umask(old)
    else:
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((listen.host, listen.port))
        except OSError as exc:
            sock.close()
            raise UsageError(f"--listen {listen.host}:{listen.port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(opts: ServeOptions) -> int:
    """Load the policies, check the auth set-up, bind, and serve until SIGTERM/SIGINT."""
    import sys

    import uvicorn

    from . import plugins
    from .config import load_config

    plugins.load()  # the actions named in policy files
    listen = parse_listen(opts.listen)
    if opts.token_file and opts.no_auth:
        raise UsageError("--token-file and --no-auth contradict each other")
    token = read_token(opts.token_file) if opts.token_file else None
    if token is None:
        if not opts.no_auth:
            raise UsageError("no --token-file: give one (a 0600 file holding a token, e.g. `openssl rand -hex 32`), "
                             "or --no-auth to serve without authentication on loopback or a Unix socket")
        if not listen.loopback:
            raise UsageError(f"--no-auth is only allowed on loopback or a Unix socket, not {opts.listen}")
    config = load_config(opts.config_path)
    state = ServerState(config, opts.config_path, token, metrics_no_auth=opts.metrics_no_auth,
                        sample_interval=opts.sample_interval, listen=listen, log_format=opts.log_format)
    app = create_app(state)
    sock = _bind(listen)
    where = f"unix:{listen.path}" if listen.kind == "unix" else "http://{}:{}".format(*sock.getsockname()[:2])
    state.events.emit("serve_started", listen=where, auth="token" if token else "none", token_id=state.token_id,
                      metrics_auth="none" if opts.metrics_no_auth or not token else "token",
                      policies=",".join(p.name for p in config.policies), pid=os.getpid())
    if state.log_format != "json":
        print(f"janitor serve: listening on {where}", file=sys.stderr, flush=True)
    state.start_sampler()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           proxy_headers=False, server_header=False, timeout_graceful_shutdown=10))
    import signal

    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal to the handler
    # that was there before it: make that one a no-op so the clean-up below runs.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        state.stop.set()
        sock.close()
        if listen.kind == "unix":
            try:
                os.unlink(listen.path)
            except OSError:
                pass
        state.events.emit("serve_stopped", running_runs=sum(1 for r in state.runs.values() if r.finished is None))
        state.events.close()
    return 0
