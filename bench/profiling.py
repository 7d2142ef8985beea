"""`--profile`: sample a server process with py-spy during a phase and summarise where
its CPU went (collapsed stacks are kept beside the results for a flame graph).

Only samples holding the GIL are kept (`--gil`): Python's CPU, which is what limits a
process, not the time its threads spend waiting for PostgreSQL or Redis."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_LINE = re.compile(r":\d+\)$")


def _py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def _frame(raw: str) -> str:
    """'handle (messaging/consumers.py:42)' -> 'handle (messaging/consumers.py)'."""
    name = _LINE.sub(")", raw.strip())
    return name.replace(str(Path(sys.prefix)) + "/lib/", "")


def summarise(collapsed: str, top: int = 25) -> dict:
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        for name in set(frames):
            inclusive[name] += samples

    def share(counter: Counter) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)] if total else []

    return {"samples": total, "self_percent": share(own), "inclusive_percent": share(inclusive)}


class Profiler:
    def __init__(self, pid: int, name: str) -> None:
        self.pid = pid
        self.path = RESULTS_DIR / f"{name}.collapsed.txt"
        self.proc: subprocess.Popen | None = None
        self.error = ""

    def start(self) -> None:
        binary = _py_spy()
        if binary is None:
            self.error = "py-spy is not installed (pip install -r requirements-dev.txt)"
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(self.pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--gil",
                "--output",
                str(self.path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1)  # attaching takes a moment
        if self.proc.poll() is not None:
            self.error = self.proc.stderr.read().decode(errors="replace")[-500:]
            self.proc = None

    def stop(self) -> dict:
        if self.proc is None:
            return {"error": self.error}
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return {"error": "py-spy did not stop"}
        if not self.path.exists():
            return {"error": self.proc.stderr.read().decode(errors="replace")[-500:]}
        return {"file": str(self.path), **summarise(self.path.read_text())}
