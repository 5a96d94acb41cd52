"""Load-test the reward server (``rbr serve``) on 127.0.0.1.

Usage::

    python benchmarks/bench_serve.py --duration 60 --clients 64 \
        --out benchmarks/results/serve_bench.json

Two runs, each against a fresh server process on 127.0.0.1:

1. ``offline``: ``rbr serve`` with the offline grader, as shipped.
2. ``delayed``: the same pipeline, with a grader that sleeps ``--delay-ms``
   before each grade call, standing in for an LLM grader whose batch latency
   dominates. Every request of this run has the same response type, so each
   batch makes exactly one grade call.

Weights are fitted first with the offline grader on the example
conversations shipped with rbr. Each of ``--clients`` clients sends one
``POST /get_reward`` request (``--items`` completions, ChatML-formatted as
OpenRLHF sends them), waits for the response and sends the next, until
``--duration`` seconds have passed (at most ``--max-requests`` requests per
client). The report counts errors (any status but 200, and transport
failures), requests and completions per second, latency percentiles, the
mean batch size from the server's ``/metrics``, and the CPU time the server
process and the clients spent per request (from /proc, so Linux only).

The clients run in this process, on keep-alive connections, and the server
in another, on the same machine, so both compete for its cores. CPU time per
request depends less on other load on the machine than requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from rbr.data import Record, read_records
from rbr.data.types import Sample
from rbr.examples import example_path
from rbr.fitting.grading import grade_records
from rbr.fitting.rbr_fit import FitSettings, fit_rbr
from rbr.graders.base import Grader, GradeResult
from rbr.graders.offline import OfflineGrader
from rbr.policy import load_default_policy
from rbr.policy.spec import Proposition

logger = logging.getLogger("bench_serve")

HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 60.0
PORT_LINE = re.compile(r"running on http://127\.0\.0\.1:(\d+)")


class DelayedGrader(Grader):
    """The wrapped grader, after sleeping ``delay_s`` in every grade call."""

    def __init__(self, inner: Grader, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    @property
    def identity(self) -> str:
        return self.inner.identity

    def grade(
        self, samples: Sequence[Sample], propositions: Sequence[Proposition]
    ) -> GradeResult:
        time.sleep(self.delay_s)
        return self.inner.grade(samples, propositions)


@dataclass
class RunResult:
    """Measurements of one load run."""

    name: str
    clients: int
    items_per_request: int
    duration_s: float
    requests: int
    errors: int
    error_kinds: dict[str, int]
    requests_per_s: float
    items_per_s: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    batches: int
    mean_batch_size: float
    mean_batch_ms: float
    server_cpu_ms_per_request: float
    client_cpu_ms_per_request: float
    load_average_before: list[float]
    load_average_after: list[float]


def fit_weights(folder: Path) -> Path:
    """Fit weights with the offline grader on the example data; return the file."""
    policy = load_default_policy()
    grader = OfflineGrader.load()
    graded = grade_records(read_records(example_path()), policy, grader)
    weights = fit_rbr(
        graded, policy, grader.identity, FitSettings(validation_fraction=0)
    )
    path = folder / "weights.json"
    weights.save(path)
    return path


def chatml_bodies(records: Sequence[Record], items: int) -> list[bytes]:
    """Encode /get_reward bodies of ``items`` rows each, cycling over ``records``."""
    bodies = []
    for start in range(0, len(records)):
        rows = [records[(start + k) % len(records)] for k in range(items)]
        prompts = [_chatml_prompt(r) for r in rows]
        queries = [
            p + r.sample.completion + "<|im_end|>" for p, r in zip(prompts, rows)
        ]
        labels = [r.sample.response_type for r in rows]
        body = {"query": queries, "prompts": prompts, "labels": labels}
        bodies.append(json.dumps(body).encode("utf-8"))
    return bodies


def _chatml_prompt(record: Record) -> str:
    turns = [
        f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in record.sample.prompt
    ]
    return "".join(turns) + "<|im_start|>assistant\n"


@contextlib.contextmanager
def server_process(command: list[str]) -> Iterator[tuple[int, int]]:
    """Start a server process, yield its port and process id, stop it with SIGINT."""
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    ) as process:
        reader = threading.Thread(
            target=lambda: [lines.put(line) for line in process.stderr or ()],
            daemon=True,
        )
        reader.start()
        try:
            yield _wait_for_port(lines, process), process.pid
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                logger.warning("server did not stop within 60 s of SIGINT; killing it")
                process.kill()
                process.wait()


def _wait_for_port(lines: queue.Queue[str], process: subprocess.Popen) -> int:
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append(line)
        found = PORT_LINE.search(line)
        if found:
            return int(found.group(1))
    raise RuntimeError("the server did not report its port:\n" + "".join(seen))


class KeepAliveConnection:
    """A minimal HTTP/1.1 client on one keep-alive connection.

    An httpx client used more CPU per request than the server in trial runs,
    so the clients use plain asyncio streams instead. It handles exactly what
    uvicorn sends here: a status line, headers with Content-Length, and a
    body.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """Send one POST and return the status code and the response body."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port
            )
        assert self._reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode("ascii") + body)
        await self._writer.drain()
        status = int((await self._reader.readline()).split()[1])
        length = 0
        keep_alive = True
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                keep_alive = False
        content = await self._reader.readexactly(length)
        if not keep_alive:
            await self.close()
        return status, content

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


async def load(
    port: int,
    bodies: Sequence[bytes],
    *,
    clients: int,
    duration_s: float,
    max_requests: int,
) -> tuple[list[float], dict[str, int], float]:
    """Run closed-loop clients; return latencies (s), error counts and wall time."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    started = time.perf_counter()
    deadline = started + duration_s

    async def run_client(index: int) -> None:
        connection = KeepAliveConnection(HOST, port)
        try:
            for n in range(max_requests):
                if time.perf_counter() >= deadline:
                    return
                body = bodies[(index * 7 + n) % len(bodies)]
                sent = time.perf_counter()
                try:
                    status, _ = await asyncio.wait_for(
                        connection.post("/get_reward", body), REQUEST_TIMEOUT_S
                    )
                except (OSError, ValueError, IndexError, asyncio.TimeoutError) as error:
                    kind = type(error).__name__
                    await connection.close()
                else:
                    if status == 200:
                        latencies.append(time.perf_counter() - sent)
                        continue
                    kind = f"status {status}"
                errors[kind] = errors.get(kind, 0) + 1
        finally:
            await connection.close()

    await asyncio.gather(*(run_client(i) for i in range(clients)))
    return latencies, errors, time.perf_counter() - started


def batch_stats(port: int) -> tuple[int, float, float]:
    """Read the batch count, mean batch size and mean batch time (ms) from /metrics."""
    text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=10).text

    def value(name: str) -> float:
        return float(re.search(rf"^{name} (\S+)$", text, re.M)[1])

    count = value("rbr_serve_batch_size_items_count")
    if not count:
        return 0, 0.0, 0.0
    items = value("rbr_serve_batch_size_items_sum")
    seconds = value("rbr_serve_batch_latency_seconds_sum")
    return int(count), items / count, seconds * 1000 / count


def process_cpu_s(pid: int) -> float:
    """Return the user plus system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(
    name: str, command: list[str], bodies: Sequence[bytes], args: Any
) -> RunResult:
    """Start a server with ``command``, load it, and summarize the run."""
    before = list(os.getloadavg())
    with server_process(command) as (port, pid):
        logger.info(
            "%s: server on port %d; %d clients for %.0f s",
            name,
            port,
            args.clients,
            args.duration,
        )
        server_cpu = process_cpu_s(pid)
        client_cpu = time.process_time()
        latencies, errors, wall = asyncio.run(
            load(
                port,
                bodies,
                clients=args.clients,
                duration_s=args.duration,
                max_requests=args.max_requests,
            )
        )
        client_cpu = time.process_time() - client_cpu
        server_cpu = process_cpu_s(pid) - server_cpu
        batches, mean_batch, mean_batch_ms = batch_stats(port)
    after = list(os.getloadavg())
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    n_errors = sum(errors.values())
    succeeded = max(len(latencies), 1)
    return RunResult(
        name=name,
        clients=args.clients,
        items_per_request=args.items,
        duration_s=round(wall, 2),
        requests=len(latencies) + n_errors,
        errors=n_errors,
        error_kinds=errors,
        requests_per_s=round(len(latencies) / wall, 1),
        items_per_s=round(len(latencies) * args.items / wall, 1),
        latency_p50_ms=round(float(np.percentile(ms, 50)), 1),
        latency_p90_ms=round(float(np.percentile(ms, 90)), 1),
        latency_p99_ms=round(float(np.percentile(ms, 99)), 1),
        latency_max_ms=round(float(ms.max()), 1),
        batches=batches,
        mean_batch_size=round(mean_batch, 1),
        mean_batch_ms=round(mean_batch_ms, 1),
        server_cpu_ms_per_request=round(server_cpu * 1000 / succeeded, 2),
        client_cpu_ms_per_request=round(client_cpu * 1000 / succeeded, 2),
        load_average_before=[round(x, 2) for x in before],
        load_average_after=[round(x, 2) for x in after],
    )


def serve_delayed(args: argparse.Namespace) -> None:
    """Run the delayed-grader server in this process until SIGINT."""
    import uvicorn

    from rbr.fitting.weights import RBRWeights
    from rbr.reward.pipeline import RewardPipeline
    from rbr.reward.rule_based import RuleBasedReward
    from rbr.serve import ServeSettings, create_app

    policy = load_default_policy()
    grader = DelayedGrader(OfflineGrader.load(), args.delay_ms / 1000)
    reward = RuleBasedReward(policy, RBRWeights.load(args.weights), grader)
    settings = ServeSettings(
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms
    )
    app = create_app(RewardPipeline(reward), settings)
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(app, host=HOST, port=0, log_level="info", access_log=False)


def report(results: Sequence[RunResult], args: argparse.Namespace) -> str:
    """Format the runs as a Markdown table with the delayed run's expectation."""
    lines = [
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        "",
        "| run | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms "
        "| mean batch | batch ms | server CPU ms/req | client CPU ms/req "
        "| load avg before/after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.requests} | {r.errors} | {r.requests_per_s} | "
            f"{r.latency_p50_ms} | {r.latency_p90_ms} | {r.latency_p99_ms} | "
            f"{r.latency_max_ms} | {r.mean_batch_size} | {r.mean_batch_ms} | "
            f"{r.server_cpu_ms_per_request} | {r.client_cpu_ms_per_request} | "
            f"{r.load_average_before[0]} / {r.load_average_after[0]} |"
        )
    if not args.skip_delayed:
        in_batch = min(args.max_batch_size, args.clients * args.items)
        expected = in_batch / (args.delay_ms / 1000)
        lines += [
            "",
            f"delayed: at most {in_batch} completions per batch of one "
            f"{args.delay_ms:.0f} ms grade call -> expected at most {expected:.0f} "
            f"completions/s ({expected / args.items:.0f} req/s); one grade call "
            f"per request would give {1000 / args.delay_ms:.0f} req/s",
        ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds per run.")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--items", type=int, default=1, help="Completions per request.")
    parser.add_argument(
        "--max-requests", type=int, default=1_000_000, help="Per client."
    )
    parser.add_argument("--delay-ms", type=float, default=200.0)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="For the offline run."
    )
    parser.add_argument(
        "--delayed-max-wait-ms",
        type=float,
        nargs="+",
        default=[5.0, 50.0],
        help="One delayed run per value.",
    )
    parser.add_argument("--skip-delayed", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="Write results as JSON.")
    parser.add_argument("--serve-delayed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.serve_delayed:
        serve_delayed(args)
        return
    records = read_records(example_path())
    batch = ["--max-batch-size", str(args.max_batch_size)]
    with tempfile.TemporaryDirectory() as folder:
        weights = str(fit_weights(Path(folder)))
        serve = [sys.executable, "-m", "rbr.cli.main", "serve", "--weights", weights]
        serve += [*batch, "--port", "0", "--max-wait-ms", str(args.max_wait_ms)]
        results = [run_load("offline", serve, chatml_bodies(records, args.items), args)]
        hard = [r for r in records if r.sample.response_type == "Hard Refuse"]
        for wait_ms in [] if args.skip_delayed else args.delayed_max_wait_ms:
            delayed = [
                sys.executable,
                __file__,
                "--serve-delayed",
                "--weights",
                weights,
            ]
            delayed += [*batch, "--delay-ms", str(args.delay_ms)]
            delayed += ["--max-wait-ms", str(wait_ms)]
            name = f"delayed, max wait {wait_ms:g} ms"
            bodies = chatml_bodies(hard, args.items)
            results.append(run_load(name, delayed, bodies, args))
    text = report(results, args)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "settings": vars(args) | {"out": str(args.out)},
            "runs": [asdict(r) for r in results],
        }
        args.out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(text)


if __name__ == "__main__":
    main()
