"""`mycelium-rt serve`: an HTTP API over one Solver, batching problems across requests.

Needs the `serve` extra (starlette, uvicorn, prometheus-client). Starlette rather than
FastAPI: the request body is validated problem by problem with the CLI's own rules
(`records.record_from_object`), so a bad problem becomes its error record instead of
failing the request, and a schema layer would only sit in the way.

Problems of concurrent requests wait in one bounded queue; a batcher takes requests
until ``max_batch`` problems or ``max_wait_ms`` after the first, solves them in one
`Solver` call on a worker thread (the event loop never runs a model), and answers each
request with its own records, in order. A full queue answers 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .answers import abstain_below, info_payload, solve_records
from .records import InputRecord, record_from_object


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of the server."""

    max_batch: int = 32  # problems per Solver call (a larger request is solved whole)
    max_wait_ms: float = 10.0  # how long the first queued request waits for company
    max_queue: int = 512  # problems waiting at most; beyond, 503
    max_problems: int = 256  # problems per request
    max_body_bytes: int = 1 << 20  # request body size
    batching: bool = True  # False: each request is its own Solver call


class Overloaded(Exception):
    """The queue cannot take a request's problems now."""


@dataclass
class _Pending:
    records: list[InputRecord]
    future: asyncio.Future
    queued_at: float = field(default_factory=time.monotonic)


class Metrics:
    """Prometheus metrics of one server (own registry, so servers never share)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mycelium_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.problems = Counter("mycelium_problems", "Problems answered",
                                registry=self.registry)
        self.batch_size = Histogram("mycelium_batch_problems", "Problems per Solver call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                                    registry=self.registry)
        self.queue_depth = Gauge("mycelium_queue_problems", "Problems waiting",
                                 registry=self.registry)
        self.latency = Histogram("mycelium_request_seconds", "Latency of /v1/solve",
                                 registry=self.registry)


class Batcher:
    """Gathers queued requests into Solver calls run on one worker thread."""

    def __init__(self, solve: Callable[[list[InputRecord]], list[dict[str, Any]]],
                 config: ServeConfig, metrics: Metrics):
        self.solve = solve
        self.config = config
        self.metrics = metrics
        self.queue: deque[_Pending] = deque()
        self.queued = 0  # problems in the queue
        self.wake = asyncio.Event()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mycelium-solve")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, records: list[InputRecord]) -> list[dict[str, Any]]:
        """The result records of ``records``, in order; raises Overloaded if the queue is
        full."""
        if self.queued + len(records) > self.config.max_queue:
            raise Overloaded
        pending = _Pending(records, asyncio.get_running_loop().create_future())
        self.queue.append(pending)
        self.queued += len(records)
        self.metrics.queue_depth.set(self.queued)
        self.wake.set()
        return await asyncio.shield(pending.future)

    def _take(self) -> list[_Pending]:
        taken = [self.queue.popleft()]
        size = len(taken[0].records)
        while self.config.batching and self.queue and (
                size + len(self.queue[0].records) <= self.config.max_batch):
            size += len(self.queue[0].records)
            taken.append(self.queue.popleft())
        self.queued -= size
        self.metrics.queue_depth.set(self.queued)
        return taken

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            if self.config.batching:
                deadline = self.queue[0].queued_at + self.config.max_wait_ms / 1000
                while (sum(len(p.records) for p in self.queue) < self.config.max_batch
                       and (left := deadline - time.monotonic()) > 0):
                    self.wake.clear()
                    try:
                        await asyncio.wait_for(self.wake.wait(), left)
                    except TimeoutError:
                        break
            taken = self._take()
            records = [r for p in taken for r in p.records]
            self.metrics.batch_size.observe(sum(r.question is not None for r in records))
            try:
                results = await loop.run_in_executor(self.worker, self.solve, records)
            except Exception as exc:  # a broken solver fails its requests, not the server
                for pending in taken:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            at = 0
            for pending in taken:
                part = results[at:at + len(pending.records)]
                at += len(pending.records)
                if not pending.future.done():  # a client that left: its answers are dropped
                    pending.future.set_result(part)

    async def drain(self) -> None:
        """Wait until every queued request is answered, then stop."""
        while self.queue:
            await asyncio.sleep(0.01)
        if self.task is not None:
            self.task.cancel()
        self.worker.shutdown(wait=True)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BadRequest(413, f"body of {declared} bytes is over the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _BadRequest(413, f"body is over the limit of {limit} bytes")
    return bytes(body)


def _parse_request(body: bytes, config: ServeConfig) -> tuple[list[InputRecord], float]:
    """The request's problems as input records (bad ones carry their error) and its
    min_confidence; raises _BadRequest for a body that is not a request at all."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise _BadRequest(400, f"invalid JSON ({reason})") from None
    if not isinstance(data, dict) or not isinstance(data.get("problems"), list):
        raise _BadRequest(400, "expected an object with a 'problems' list")
    problems = data["problems"]
    if len(problems) > config.max_problems:
        raise _BadRequest(413, f"{len(problems)} problems is over the limit of "
                               f"{config.max_problems} per request")
    threshold = data.get("min_confidence", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (
            0 <= threshold <= 1):
        raise _BadRequest(400, f"min_confidence must be a number in [0, 1], got {threshold!r}")
    records = [record_from_object(item, n, f"problem {n}")
               for n, item in enumerate(problems, start=1)]
    return records, float(threshold)


def create_app(load_solver: Callable[[], Any], config: ServeConfig | None = None,
               on_load_error: Callable[[str], None] | None = None) -> Starlette:
    """The ASGI app. ``load_solver`` runs on a thread at startup; until it returns,
    /health and /v1/solve answer 503."""
    config = config or ServeConfig()
    metrics = Metrics()
    state: dict[str, Any] = {"solver": None, "batcher": None}

    def solve(records: list[InputRecord]) -> list[dict[str, Any]]:
        return solve_records(state["solver"], records)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        batcher = Batcher(solve, config, metrics)
        batcher.start()
        state["batcher"] = batcher
        loop = asyncio.get_running_loop()

        def load() -> None:
            try:
                solver = load_solver()
            except Exception as exc:  # reported in one line by the caller
                if on_load_error is not None:
                    loop.call_soon_threadsafe(on_load_error, str(exc))
                return
            state["solver"] = solver

        threading.Thread(target=load, name="mycelium-load", daemon=True).start()
        yield
        await batcher.drain()

    def answer(route: str, status: int, payload: Any, headers: dict | None = None):
        metrics.requests.labels(route, str(status)).inc()
        return JSONResponse(payload, status_code=status, headers=headers)

    async def solve_route(request: Request) -> Response:
        started = time.monotonic()
        if state["solver"] is None:
            return answer("/v1/solve", 503, {"error": "models are loading"},
                          {"Retry-After": "1"})
        try:
            records, threshold = _parse_request(
                await _read_body(request, config.max_body_bytes), config)
        except _BadRequest as exc:
            return answer("/v1/solve", exc.status, {"error": str(exc)})
        except ClientDisconnect:
            return Response(status_code=499)
        if not records:
            return answer("/v1/solve", 200, {"results": []})
        try:
            results = await state["batcher"].submit(records)
        except Overloaded:
            return answer("/v1/solve", 503, {"error": f"queue full ({config.max_queue} "
                                                      "problems waiting); retry later"},
                          {"Retry-After": "1"})
        except Exception as exc:
            return answer("/v1/solve", 500, {"error": f"solver failed: {exc}"})
        if threshold > 0:
            results = [abstain_below(r, threshold) for r in results]
        metrics.problems.inc(len(results))
        metrics.latency.observe(time.monotonic() - started)
        return answer("/v1/solve", 200, {"results": results})

    async def health(request: Request) -> Response:
        if state["solver"] is None:
            return answer("/health", 503, {"status": "loading"})
        return answer("/health", 200, {"status": "ok"})

    async def info(request: Request) -> Response:
        if state["solver"] is None:
            return answer("/v1/info", 503, {"error": "models are loading"})
        return answer("/v1/info", 200, info_payload(state["solver"]))

    async def metrics_route(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[
        Route("/v1/solve", solve_route, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/info", info, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
    ], lifespan=lifespan)


def run_server(load_solver: Callable[[], Any], host: str, port: int,
               config: ServeConfig) -> int:
    """Serve until SIGTERM or SIGINT (requests in flight are finished); the exit status."""
    import uvicorn

    failure: list[str] = []
    server: uvicorn.Server | None = None

    def failed(message: str) -> None:
        failure.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(load_solver, config, failed)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           lifespan="on", access_log=False))
    # uvicorn handles SIGTERM/SIGINT (stop taking requests, finish those in flight) and
    # then re-raises the signal to the handler it found: let that one return, so a drained
    # shutdown exits 0 rather than dying of the signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    server.run()
    if failure:
        raise RuntimeError(failure[0])
    return 0
