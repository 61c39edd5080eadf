"""`mycelium-rt serve` as a user meets it: a real server process on a free local port, a
real HTTP client. Every load here is bounded in requests and time and stops by itself."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from benchmarks.scale_out import START, Server  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "problems.jsonl"


@pytest.fixture(scope="module")
def server():
    running = Server("--max-batch", "8", "--max-wait-ms", "20")
    yield running
    assert running.stop() == 0


def _examples() -> list[dict]:
    return [json.loads(line) for line in EXAMPLES.read_text(encoding="utf-8").splitlines()]


def test_answers_equal_the_cli_records(server: Server) -> None:
    cli = subprocess.run([sys.executable, "-c", START, "solve", str(EXAMPLES), "--quiet",
                          "--provider", "cpu"], capture_output=True, check=True)
    expected = [json.loads(line) for line in cli.stdout.decode().splitlines()]
    response = server.solve(_examples())
    assert response.status_code == 200
    # one request of five problems is one Solver call, as the CLI's one batch of five:
    # the records are identical (other batch compositions move int8 probabilities)
    assert response.json()["results"] == expected


def test_bad_problems_get_their_own_error_record(server: Server) -> None:
    problems = [{"id": "ok", "question": "Tom has 3 apples and buys 4 more. How many?"},
                {"id": "no-question"}, {"id": [1], "question": "x"},
                {"id": "number", "question": 7}, "not an object"]
    response = server.solve(problems)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["id"] for r in results] == ["ok", "no-question", 3, "number", 5]
    assert results[0]["error"] is None and results[0]["answer_exact"] is not None
    assert results[1]["error"] == "problem 2: no 'question' field"
    assert results[2]["error"] == "problem 3: id must be a JSON scalar"
    assert results[3]["error"] == "problem 4: 'question' must be a string, got int"
    assert results[4]["error"] == "problem 5: expected a JSON object, got str"


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "invalid JSON"),
    (b'{"problems": 3}', 400, "expected an object with a 'problems' list"),
    (b'{"problems": [], "min_confidence": 2}', 400, "min_confidence must be a number in "
                                                    "[0, 1], got 2"),
    (b'{"problems": [' + b'{"question": "a"},' * 300 + b'{"question": "a"}]}', 413,
     "301 problems is over the limit of 256 per request"),
    (b'{"problems": [{"question": "' + b"a" * (1 << 20) + b'"}]}', 413, "over the limit"),
])
def test_bad_requests_are_one_line_4xx(server: Server, body, status, message) -> None:
    response = httpx.post(f"{server.url}/v1/solve", content=body, timeout=30,
                          headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error


def test_min_confidence_withholds_low_answers(server: Server) -> None:
    problems = _examples()
    plain = server.solve(problems).json()["results"]
    strict = server.solve(problems, min_confidence=0.5).json()["results"]
    for was, now in zip(plain, strict, strict=True):
        if was["confidence"] < 0.5:
            assert now["answer"] is None and now["error"].startswith("abstained")
        else:
            assert now == was


def test_concurrent_clients_get_every_answer_once(server: Server) -> None:
    questions = [row["question"] for row in _examples()]
    answers: dict[str, list] = {}
    lock = threading.Lock()

    def client(number: int) -> None:
        for request in range(3):
            ids = [f"{number}-{request}-{k}" for k in range(2)]
            problems = [{"id": i, "question": questions[(number + k) % len(questions)]}
                        for k, i in enumerate(ids)]
            response = server.solve(problems)
            assert response.status_code == 200, response.text
            with lock:
                for result in response.json()["results"]:
                    answers.setdefault(result["id"], []).append(result)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == 8 * 3 * 2 and all(len(v) == 1 for v in answers.values())
    assert all(v[0]["error"] is None for v in answers.values())
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'mycelium_requests_total{route="/v1/solve",status="200"}' in metrics
    assert "mycelium_batch_problems_bucket" in metrics
    # problems of concurrent requests were solved together at least once
    counts = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line.startswith("mycelium_batch_problems_")}
    assert counts["mycelium_batch_problems_count"] < counts["mycelium_batch_problems_sum"] / 2


def test_health_and_info(server: Server) -> None:
    assert httpx.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}
    info = httpx.get(f"{server.url}/v1/info", timeout=10).json()
    cli = json.loads(subprocess.run([sys.executable, "-c", START, "info", "--provider", "cpu"],
                                    capture_output=True, check=True).stdout)
    assert info["manifest"] == cli["manifest"] and info["search"] == cli["search"]


def test_a_full_queue_answers_503_and_sigterm_drains() -> None:
    server = Server("--max-queue", "2", "--max-batch", "2", "--max-wait-ms", "0")
    statuses: list[int] = []
    retry: list[str | None] = []
    questions = [row["question"] for row in _examples()]

    def client() -> None:
        response = server.solve([{"question": q} for q in questions[:2]])
        statuses.append(response.status_code)
        retry.append(response.headers.get("retry-after"))

    threads = [threading.Thread(target=client) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert 503 in statuses and 200 in statuses
    assert all(r == "1" for s, r in zip(statuses, retry, strict=True) if s == 503)

    # SIGTERM while a request is in flight: it is answered in full, then the exit is clean
    big = [{"id": n, "question": questions[n % len(questions)]} for n in range(2)]
    outcome: dict = {}

    def slow_client() -> None:
        try:
            outcome["response"] = server.solve(big)
        except httpx.TransportError as exc:
            outcome["refused"] = exc

    thread = threading.Thread(target=slow_client)
    thread.start()
    time.sleep(0.05)
    server.process.send_signal(signal.SIGTERM)
    thread.join(timeout=60)
    assert server.process.wait(timeout=60) == 0
    response = outcome.get("response")
    # the request either was in flight (answered in full) or came after the listener
    # closed (refused): never a partial answer
    if response is not None:
        assert response.status_code == 200
        assert [r["id"] for r in response.json()["results"]] == [0, 1]


def test_health_is_503_until_the_models_load() -> None:
    from starlette.testclient import TestClient

    from mycelium.runtime.serve import create_app

    loaded = threading.Event()

    class Stub:
        def solve(self, questions, ids):
            raise AssertionError("not called")

    def load():
        loaded.wait(timeout=30)
        return Stub()

    with TestClient(create_app(load)) as client:
        assert client.get("/health").status_code == 503
        refused = client.post("/v1/solve", json={"problems": []})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        loaded.set()
        deadline = time.monotonic() + 10
        while client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get("/health").json() == {"status": "ok"}
        assert client.post("/v1/solve", json={"problems": []}).json() == {"results": []}


def test_a_client_that_leaves_does_not_stall_the_others(server: Server) -> None:
    questions = [row["question"] for row in _examples()]
    with pytest.raises(httpx.TimeoutException):  # gives up while its batch is being solved
        httpx.post(f"{server.url}/v1/solve", timeout=0.05,
                   json={"problems": [{"question": q} for q in questions * 3]})
    response = server.solve([{"id": "after", "question": questions[0]}])
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == ["after"]
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_artifacts_that_do_not_load_end_the_server_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    done = subprocess.run([sys.executable, "-c", START, "serve", "--port", "0",
                           "--artifacts", str(missing)], capture_output=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.decode().strip() == f"Error: artifacts: folder not found: {missing}"
