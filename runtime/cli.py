"""`mycelium-rt`: solve math word problems from JSONL with the exported specialists."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click

from .answers import abstain_below, info_payload, solve_records
from .errors import MyceliumError
from .records import InputRecord, dump_record, id_key, read_records, written_ids

CONTEXT = {"help_option_names": ["-h", "--help"]}


def _load_solver(
    artifacts: str | None, provider: str, threads: int | None, verify: bool,
    search: tuple[str, ...] = (),
):
    from .solver import Solver

    try:
        return Solver.load(artifacts, provider, threads=threads, verify=verify, search=search)
    except MyceliumError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings=CONTEXT)
def main() -> None:
    """Mycelium runtime: exact answers to math word problems, no chain of thought."""


def artifact_options(func):
    """Options shared by every command that loads specialists."""
    func = click.option(
        "--search", "search", multiple=True, metavar="KEY=VALUE",
        help="Override a search setting of the artifacts' mycelium.json (repeatable), "
             "e.g. --search permute_chunks=1.",
    )(func)
    func = click.option(
        "--no-verify", is_flag=True, help="Skip the sha256 check of the artifact files."
    )(func)
    func = click.option("--threads", type=click.IntRange(1, 256), default=None,
                        help="onnxruntime intra-op threads (default: all cores).")(func)
    func = click.option(
        "--provider", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), default="auto",
        show_default=True, help="Execution provider.",
    )(func)
    func = click.option(
        "--artifacts", type=click.Path(file_okay=False), envvar="MYCELIUM_ARTIFACTS",
        default=None, help="Artifacts folder (default: $MYCELIUM_ARTIFACTS, else the embedded "
        "default specialists).",
    )(func)
    return func


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so both stop between whole records."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Progress:
    """A one-line progress indicator on stderr, shown only on a TTY for a file input."""

    def __init__(self, stream: IO[bytes], enabled: bool):
        self.stream = stream
        self.total = 0
        if enabled:
            try:
                self.total = os.fstat(stream.fileno()).st_size
            except (OSError, AttributeError, ValueError):
                self.total = 0
        self.start = time.perf_counter()

    def update(self, done: int) -> None:
        if not self.total:
            return
        try:
            fraction = min(1.0, self.stream.tell() / self.total)
        except (OSError, ValueError):
            return
        bar = "#" * int(fraction * 30)
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        click.echo(f"\r[{bar:<30}] {fraction:6.1%} {done} problems {rate:.1f}/s", err=True,
                   nl=False)

    def close(self) -> None:
        if self.total:
            click.echo("", err=True)


def _batches(records: Iterator[InputRecord], size: int) -> Iterator[list[InputRecord]]:
    batch: list[InputRecord] = []
    for record in records:
        batch.append(record)
        if sum(r.question is not None for r in batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@main.command(context_settings=CONTEXT)
@click.argument("input_path", metavar="[INPUT]", required=False, default="-")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write JSONL results here (default: stdout).")
@click.option("--text", default=None, help="Solve this one problem and print it readably.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=16, show_default=True,
              help="Problems per batch.")
@click.option("--resume", is_flag=True,
              help="Append to an existing OUTPUT, skipping ids already written there.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary line.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Withhold answers whose confidence is below this (an 'abstained' error "
                   "record that keeps the program).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="local: this process; ray: Ray Data actors, one "
              "Solver each, on the cluster `ray.init()` finds (the `ray` extra).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="With --engine ray: actors (each loads one Solver).")
@artifact_options
def solve(input_path: str, output: str | None, text: str | None, batch_size: int, resume: bool,
          quiet: bool, min_confidence: float, engine: str, workers: int,
          artifacts: str | None, provider: str, threads: int | None, no_verify: bool,
          search: tuple[str, ...]) -> None:
    """Solve the problems of a JSONL file (or stdin): one result record per input line.

    Each line is an object with "question" and an optional "id"; other fields are
    ignored. Empty lines are skipped. A bad line gets an error record; the run goes on.
    With calibrated artifacts (the embedded default) the confidence is the probability
    that the answer is right, so --min-confidence trades answered share for accuracy
    (`mycelium-rt diagnose` reports both per threshold).
    """
    if engine == "ray":
        _solve_with_ray(input_path, output, text, resume, quiet, min_confidence, workers,
                        batch_size, artifacts, provider, threads, search)
        return
    solver = _load_solver(artifacts, provider, threads, not no_verify, search)
    if text is not None:
        from .solver import describe

        if not text.strip():
            raise click.ClickException("--text is empty")
        (result,) = solver.solve([text])
        click.echo(describe(result))
        return
    if resume and not output:
        raise click.ClickException("--resume needs -o OUTPUT")
    try:
        source = sys.stdin.buffer if input_path == "-" else open(input_path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise click.ClickException(f"cannot read input {input_path!r}: {exc.strerror}") from None
    done = written_ids(output) if resume and output and os.path.exists(output) else set()
    try:
        sink = open(output, "a" if resume else "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    except OSError as exc:
        raise click.ClickException(f"cannot write output {output!r}: {exc.strerror}") from None
    progress = _Progress(source, enabled=not quiet and input_path != "-" and sys.stderr.isatty())
    count = errors = 0
    start = time.perf_counter()
    records = (r for r in read_records(source) if id_key(r.id) not in done)
    try:
        with _terminate_as_interrupt():
            for batch in _batches(records, batch_size):
                for record in solve_records(solver, batch):
                    record = abstain_below(record, min_confidence)
                    sink.write(dump_record(record))
                    sink.flush()
                    count += 1
                    errors += record["error"] is not None
                progress.update(count)
    except KeyboardInterrupt:
        progress.close()
        click.echo(f"interrupted after {count} records; rerun with --resume to finish", err=True)
        sys.exit(130)
    finally:
        if output:
            sink.close()
        if source is not sys.stdin.buffer:
            source.close()
    progress.close()
    if not quiet:
        elapsed = time.perf_counter() - start
        click.echo(
            f"{count} problems in {elapsed:.1f} s ({count / max(elapsed, 1e-9):.1f} problems/s), "
            f"{errors} errors", err=True,
        )


def _solve_with_ray(input_path: str, output: str | None, text: str | None, resume: bool,
                    quiet: bool, min_confidence: float, workers: int, batch_size: int,
                    artifacts: str | None, provider: str, threads: int | None,
                    search: tuple[str, ...]) -> None:
    if text is not None or resume or input_path == "-":
        raise click.ClickException("--engine ray reads a file or URL: no stdin, --text or "
                                   "--resume")
    try:
        import ray

        from .ray import solve_jsonl
    except ImportError as exc:
        raise click.ClickException(f"--engine ray needs the ray extra (pip install "
                                   f"'mycelium[ray]'): {exc}") from None
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", configure_logging=False)
    start = time.perf_counter()
    try:
        sink = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    except OSError as exc:
        raise click.ClickException(f"cannot write output {output!r}: {exc.strerror}") from None
    try:
        count = solve_jsonl(input_path, sink, artifacts, batch_size=batch_size,
                            concurrency=workers, provider=provider, threads=threads,
                            search=search, min_confidence=min_confidence)
    except (FileNotFoundError, OSError) as exc:
        raise click.ClickException(f"cannot read input {input_path!r}: {exc}") from None
    finally:
        if output:
            sink.close()
    if not quiet:
        elapsed = time.perf_counter() - start
        click.echo(f"{count} problems in {elapsed:.1f} s ({count / max(elapsed, 1e-9):.1f} "
                   f"problems/s) on {workers} Ray actor(s)", err=True)


@main.command(context_settings=CONTEXT)
@artifact_options
def info(artifacts: str | None, provider: str, threads: int | None, no_verify: bool,
         search: tuple[str, ...]) -> None:
    """Print the artifacts in use, their manifest summary, versions and providers as JSON."""
    solver = _load_solver(artifacts, provider, threads, not no_verify, search)
    payload = info_payload(solver)
    click.echo(json.dumps(payload, indent=2))


@main.command(context_settings=CONTEXT)
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output", "report", type=click.Path(dir_okay=False), required=True,
              help="Write the JSON report here.")
@click.option("--limit", type=click.IntRange(1), default=None, help="First N records only.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=16, show_default=True)
@click.option("--baseline", "baseline", type=click.Path(dir_okay=False), default=None,
              help="An earlier diagnose report of the same problems: add a paired "
                   "comparison (gained, lost, exact McNemar p).")
@click.option("--no-oracle", is_flag=True,
              help="Skip the gold-span ORACLE pass (it solves the expressible problems a "
                   "second time); its figures stay empty.")
@artifact_options
def diagnose(input_path: str, report: str, limit: int | None, batch_size: int,
             baseline: str | None, no_oracle: bool, artifacts: str | None, provider: str,
             threads: int | None, no_verify: bool, search: tuple[str, ...]) -> None:
    """Attribute each lost problem to a stage (records must carry a gold answer).

    Gold is read only after solving, to attribute errors; the solver never sees it.
    """
    from .diagnose import run_diagnosis

    before = _read_report(baseline) if baseline else None
    solver = _load_solver(artifacts, provider, threads, not no_verify, search)
    try:
        summary = run_diagnosis(solver, input_path, report, limit=limit, batch_size=batch_size,
                                baseline=before, baseline_name=baseline,
                                oracle=not no_oracle)
    except MyceliumError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(summary, indent=2))


def _read_report(path: str) -> dict:
    """A diagnose report, or a one-line error naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise click.ClickException(
            f"--baseline {path}: not a readable JSON report ({exc})") from None


if __name__ == "__main__":  # pragma: no cover
    main()


@main.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-batch", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="Problems gathered from concurrent requests into one Solver call.")
@click.option("--max-wait-ms", type=click.FloatRange(0), default=10.0, show_default=True,
              help="How long the first waiting request waits for others to join its batch.")
@click.option("--max-queue", type=click.IntRange(1), default=512, show_default=True,
              help="Problems that may wait; beyond, requests get 503 with Retry-After.")
@click.option("--max-problems", type=click.IntRange(1), default=256, show_default=True,
              help="Problems per request.")
@click.option("--no-batching", is_flag=True,
              help="Solve each request on its own (no gathering across requests).")
@artifact_options
def serve(host: str, port: int, max_batch: int, max_wait_ms: float, max_queue: int,
          max_problems: int, no_batching: bool, artifacts: str | None, provider: str,
          threads: int | None, no_verify: bool, search: tuple[str, ...]) -> None:
    """Serve POST /v1/solve, /health, /v1/info and /metrics over HTTP (the `serve` extra).
    SIGTERM stops taking requests, finishes those in flight and exits 0."""
    try:
        from .serve import ServeConfig, run_server
    except ImportError as exc:
        raise click.ClickException(
            f"mycelium-rt serve needs the serve extra (pip install 'mycelium[serve]'): "
            f"{exc}") from None
    config = ServeConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                         max_problems=max_problems, batching=not no_batching)

    def load():
        return _load_solver(artifacts, provider, threads, not no_verify, search)

    try:
        sys.exit(run_server(load, host, port, config))
    except (RuntimeError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        raise click.ClickException(message) from None
