"""The benchmark's smoke run: `python -m bench --quick` against the real stack (its own
database, real daphne processes, Redis) finishes, writes its JSON, and the project
lost, duplicated and reordered nothing. No timing is asserted."""

import json
import os
import subprocess
import sys

import pytest

from tests.procs import ROOT, require_stack

pytestmark = [pytest.mark.stack, pytest.mark.e2e]


@pytest.mark.timeout(600)
def test_quick_benchmark_delivers_every_message_once_in_order_and_writes_json(tmp_path):
    require_stack()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--database",
            f"bench_smoke_{os.getpid()}",
            "--output-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    [written] = tmp_path.glob("*.json")
    results = json.loads(written.read_text())
    runs = {(run["system"], run["processes"]): run for run in results["runs"]}
    assert set(runs) == {(system, n) for system in ("project", "channels-relay", "ws-relay") for n in (1, 2)}
    for processes in (1, 2):
        correctness = runs["project", processes]["correctness"]
        assert correctness["sent"] > 0
        assert correctness["acked"] == correctness["sent"]
        assert (correctness["lost"], correctness["duplicated"], correctness["out_of_order"]) == (0, 0, 0)
        assert correctness["detail"]["database_checked"]
    project = runs["project", 1]["phases"]
    assert project["burst"]["complete"]
    assert project["history"]["pages"] > 0
    assert project["idle"]["connections"] > 0
    assert "lost" in result.stdout and str(written) in result.stdout
    speed = results["machine"]["python_loop_ms"]
    assert speed["start"] > 0 and speed["end"] > 0
    assert f"took {speed['start']} ms before the run" in result.stdout
