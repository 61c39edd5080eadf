"""What serving and scale-out buy: `mycelium-rt serve` under concurrent clients (batching
on and off), and the Ray Data engine with 1 and 2 actors against the local engine.

    python -m benchmarks.scale_out serve --data DEV.jsonl --problems 192 --out serve.json
    python -m benchmarks.scale_out ray --data DEV.jsonl --problems 2000 --out ray.json

Gold answers are never sent. Each figure is wall time of the timed stage after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

START = "from mycelium.runtime.cli import main; main()"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `mycelium-rt serve` process with the embedded default, ready when constructed."""

    def __init__(self, *options: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MYCELIUM_")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", START, "serve", "--port", str(self.port), "--provider",
             "cpu", *options], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stderr.read().decode())
            try:
                if _httpx().get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except _httpx().TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become healthy in 90 s")

    def solve(self, problems, **extra):
        return _httpx().post(f"{self.url}/v1/solve", json={"problems": problems, **extra},
                             timeout=60)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def _httpx():
    import httpx

    return httpx


def _questions(path: Path, count: int) -> list[str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [row["question"] for row in rows][:count]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def serve_load(questions: list[str], clients: int, batching: bool) -> dict:
    """Start a server, let ``clients`` threads send one-problem requests until every
    question is answered once, and report problems/s and latency."""
    import httpx

    options = ["--max-batch", "32", "--max-wait-ms", "10", "--max-queue", "4096"]
    server = Server(*options, *([] if batching else ["--no-batching"]))
    try:
        for question in questions[:4]:  # warm-up
            server.solve([{"question": question}])
        pending = list(enumerate(questions))
        lock = threading.Lock()
        latencies: list[float] = []

        def client() -> None:
            with httpx.Client(timeout=300) as http:
                while True:
                    with lock:
                        if not pending:
                            return
                        number, question = pending.pop()
                    started = time.perf_counter()
                    response = http.post(f"{server.url}/v1/solve",
                                         json={"problems": [{"id": number,
                                                             "question": question}]})
                    response.raise_for_status()
                    with lock:
                        latencies.append(time.perf_counter() - started)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    finally:
        server.stop()
    return {"clients": clients, "batching": batching, "problems": len(latencies),
            "problems_per_second": round(len(latencies) / wall, 2),
            "latency_ms_p50": round(1000 * statistics.median(latencies), 1),
            "latency_ms_p95": round(1000 * _percentile(latencies, 0.95), 1)}


def ray_scale(questions: list[str], workers: list[int]) -> list[dict]:
    """Problems/s of `mycelium-rt solve` with the local engine and with the Ray engine at
    each actor count, on the same file."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "problems.jsonl"
        source.write_text("".join(json.dumps({"id": n, "question": q}) + "\n"
                                  for n, q in enumerate(questions)), encoding="utf-8")
        runs = [("local", [])] + [(f"ray x{w}", ["--engine", "ray", "--workers", str(w)])
                                   for w in workers]
        for name, extra in runs:
            out = Path(scratch) / "out.jsonl"
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", START, "solve", str(source), "-o", str(out),
                            "--quiet", "--provider", "cpu", *extra], check=True,
                           env={**os.environ, "RAY_DEDUP_LOGS": "0"})
            wall = time.perf_counter() - started
            lines = out.read_text(encoding="utf-8").splitlines()
            rows.append({"engine": name, "problems": len(lines),
                         "problems_per_second": round(len(lines) / wall, 2),
                         "wall_s_with_startup": round(wall, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["serve", "ray"])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--problems", type=int, default=192)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    questions = _questions(args.data, args.problems)
    if args.what == "serve":
        result = [serve_load(questions, clients, batching)
                  for batching in (True, False) for clients in (1, 8, 32)]
    else:
        result = ray_scale(questions, [1, 2])
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for row in result:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
