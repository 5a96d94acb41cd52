"""``rbr serve``: option checks, and a real server process stopped by a signal."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from rbr.cli.main import cli
from tests.serve.serve_support import openrlhf_body


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "pass --weights FILE"),
        (["--grader", "labels", "--weights", "{w}"], "labels grader"),
        (["--config", "{w}", "--weights", "{w}"], "--config cannot be combined"),
        (["--config", "{w}", "--grader", "openai"], "--grader"),
        (
            ["--weights", "{w}", "--batch-size", "8", "--max-batch-size", "16"],
            "disagree",
        ),
    ],
)
def test_serve_rejects_bad_options(weights_file, extra, message):
    args = ["serve", *(a.replace("{w}", str(weights_file)) for a in extra)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.output


def test_serve_bad_config_reports_key(tmp_path):
    config = tmp_path / "reward.yaml"
    config.write_text("weights: w.json\ngrade: {kind: offline}\n")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "'grade'" in result.output


def read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def wait_for_port(lines: queue.Queue, log: list[str], timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        log.append(line)
        found = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
        if found:
            return int(found.group(1))
    raise TimeoutError("rbr serve did not report its port:\n" + "".join(log))


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"]
)
def test_serve_process_stops_cleanly(weights_file: Path, tmp_path: Path, stop_signal):
    config = tmp_path / "reward.yaml"
    config.write_text(f"weights: {weights_file}\ngrader: {{kind: offline}}\n")
    command = [sys.executable, "-m", "rbr.cli.main", "-v", "serve", "--config"]

    lines: queue.Queue = queue.Queue()
    log: list[str] = []
    with subprocess.Popen(
        [*command, str(config), "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    ) as process:
        reader = threading.Thread(target=read_lines, args=(process.stderr, lines))
        reader.start()
        try:
            port = wait_for_port(lines, log)
            url = f"http://127.0.0.1:{port}"
            health = httpx.get(f"{url}/health", timeout=10)
            body = openrlhf_body(["Hi"], ["Hello! How can I help?"], ["None"])
            reward = httpx.post(f"{url}/get_reward", json=body, timeout=10)
            process.send_signal(stop_signal)
            code = process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            reader.join(timeout=5)
    while not lines.empty():
        log.append(lines.get())

    output = "".join(log)
    assert health.json()["ready"] is True
    assert reward.status_code == 200
    assert len(reward.json()["rewards"]) == 1
    assert code == 0
    assert "reward server stopped" in output
    assert "rbr serve: stopped" in output
